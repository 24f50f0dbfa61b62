//! Hostile clients, each kind in a loop for the whole load phase, each
//! attempt checked for the answer the README documents ("Limits against
//! abuse"). A missing or different answer is a failure of the run.

use super::Shared;
use super::raw::{self, Ending};
use crate::protocol::Opcode;
use flate2::Compression;
use flate2::write::DeflateEncoder;
use serde::Serialize;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    StalledReader,
    Slowloris,
    PingFlood,
    OversizeFrame,
    InvalidUtf8,
    CompressionBomb,
    ByteAtATime,
    HandshakeStorm,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::StalledReader,
        Kind::Slowloris,
        Kind::PingFlood,
        Kind::OversizeFrame,
        Kind::InvalidUtf8,
        Kind::CompressionBomb,
        Kind::ByteAtATime,
        Kind::HandshakeStorm,
    ];

    /// The documented answer, for the report.
    pub fn answer(self) -> &'static str {
        match self {
            Kind::StalledReader => "close 1008 (slow consumer)",
            Kind::Slowloris => "dropped at --handshake-timeout",
            Kind::PingFlood => "close 1008 (ping flood)",
            Kind::OversizeFrame => "close 1009",
            Kind::InvalidUtf8 => "close 1007",
            Kind::CompressionBomb => "close 1009",
            Kind::ByteAtATime => "answered normally",
            Kind::HandshakeStorm => "HTTP 429 with Retry-After beyond the rate",
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    pub attempts: u64,
    pub answered: u64,
    pub wrong: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_wrong: Option<String>,
}

/// What the hostiles know of the server's settings.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub handshake_timeout: Duration,
}

fn open(server: SocketAddr, path: &str, extra: &str) -> Result<TcpStream, String> {
    let mut s = raw::connect(server, None, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let (status, head) = raw::upgrade(&mut s, path, extra).map_err(|e| e.to_string())?;
    if status != 101 {
        return Err(format!("upgrade got {status}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(s)
}

fn expect_close(s: &mut TcpStream, code: u16, within: Duration) -> Result<(), String> {
    match raw::ending(s, Instant::now() + within) {
        Ending::Close(c) if c == code => Ok(()),
        other => Err(format!("expected close {code}, got {other:?}")),
    }
}

/// Deflates `data` as one permessage-deflate message (RFC 7692 7.2.1: the
/// sync flush's trailing 00 00 ff ff removed).
fn deflate_message(data: &[u8]) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    let _ = enc.write_all(data);
    let _ = enc.flush();
    let mut out = enc.get_ref().clone();
    if out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    out
}

/// One attempt of `kind`.
pub fn attempt(kind: Kind, server: SocketAddr, expect: Expect, shared: &Shared) -> Result<(), String> {
    match kind {
        Kind::StalledReader => {
            // A tiny receive window: the server's queue for it fills fast
            // from the firehose room, and the policy closes it.
            let socket =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
            let _ = socket.set_recv_buffer_size(4096);
            socket
                .connect_timeout(&server.into(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            let mut s: TcpStream = socket.into();
            let (status, _) = raw::upgrade(&mut s, "/ws?username=stalled", "").map_err(|e| e.to_string())?;
            if status != 101 {
                return Err(format!("upgrade got {status}"));
            }
            let closes = || super::resources::stats(server).and_then(|s| s["slow_consumer_closes"].as_u64());
            let before = closes().unwrap_or(0);
            let join = raw::frame(Opcode::Text, true, false, br#"{"type":"join","room":"soak-firehose"}"#);
            s.write_all(&join).map_err(|e| e.to_string())?;
            // Not a byte read until the server gives up on it (it counts that
            // in /stats), then read: the close frame follows what was in flight.
            let until = Instant::now() + Duration::from_secs(30);
            while closes().unwrap_or(0) == before {
                if Instant::now() >= until || shared.stop_load.load(Ordering::SeqCst) {
                    return Err("the server never closed the stalled reader".into());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            expect_close(&mut s, 1008, Duration::from_secs(10))
        }
        Kind::Slowloris => {
            let mut s = raw::connect(server, None, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            let started = Instant::now();
            let head = b"GET /ws?username=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if s.write_all(std::slice::from_ref(b)).is_err() {
                    break;
                }
                if started.elapsed() > expect.handshake_timeout + Duration::from_secs(5) {
                    return Err("still open past the handshake timeout".into());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let took = started.elapsed();
            if took + Duration::from_millis(500) >= expect.handshake_timeout {
                Ok(())
            } else {
                Err(format!("dropped after {took:?}, before the handshake timeout"))
            }
        }
        Kind::PingFlood => {
            let mut s = open(server, "/ws?username=pinger", "")?;
            let ping = raw::frame(Opcode::Ping, true, false, b"");
            let mut burst = Vec::new();
            for _ in 0..300 {
                burst.extend_from_slice(&ping);
            }
            let _ = s.write_all(&burst);
            expect_close(&mut s, 1008, Duration::from_secs(5))
        }
        Kind::OversizeFrame => {
            let mut s = open(server, "/ws?username=big", "")?;
            // A header announcing 16 MiB, and a first slice of it.
            let mut f = vec![0x81, 0xFF];
            f.extend_from_slice(&(16u64 << 20).to_be_bytes());
            f.extend_from_slice(&[1, 2, 3, 4]);
            f.extend_from_slice(&[b'x'; 1024]);
            let _ = s.write_all(&f);
            expect_close(&mut s, 1009, Duration::from_secs(5))
        }
        Kind::InvalidUtf8 => {
            let mut s = open(server, "/ws?username=utf", "")?;
            let _ = s.write_all(&raw::frame(Opcode::Text, true, false, &[b'o', b'k', 0xFF, 0xFE]));
            expect_close(&mut s, 1007, Duration::from_secs(5))
        }
        Kind::CompressionBomb => {
            let mut s = raw::connect(server, None, Duration::from_secs(10)).map_err(|e| e.to_string())?;
            let (status, head) = raw::upgrade(
                &mut s,
                "/ws?username=bomb",
                "Sec-WebSocket-Extensions: permessage-deflate\r\n",
            )
            .map_err(|e| e.to_string())?;
            if status != 101 || !head.to_ascii_lowercase().contains("permessage-deflate") {
                return Err("permessage-deflate was not negotiated".into());
            }
            // 8 MiB of spaces in a few KiB.
            let bomb = deflate_message(&vec![b' '; 8 << 20]);
            let _ = s.write_all(&raw::frame(Opcode::Text, true, true, &bomb));
            expect_close(&mut s, 1009, Duration::from_secs(5))
        }
        Kind::ByteAtATime => {
            let mut s = open(server, "/ws?username=trickle", "")?;
            let f = raw::frame(
                Opcode::Text,
                true,
                false,
                br#"{"type":"presence","room":"nowhere","id":1}"#,
            );
            for b in &f {
                s.write_all(std::slice::from_ref(b)).map_err(|e| e.to_string())?;
                std::thread::sleep(Duration::from_millis(3));
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let _ = s.set_read_timeout(Some(
                    deadline
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                ));
                match raw::read_frame(&mut s) {
                    Ok((1, payload)) => {
                        let text = String::from_utf8_lossy(&payload);
                        if text.contains("not_member") {
                            return Ok(());
                        }
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(format!("no answer: {e}")),
                }
            }
        }
        Kind::HandshakeStorm => {
            // One address, as fast as it can: past the burst, 429s.
            let source = Ipv4Addr::new(127, 3, 0, 1);
            let (mut ok, mut limited) = (0u32, 0u32);
            for i in 0..400 {
                let mut s = raw::connect(server, Some(source), Duration::from_secs(10)).map_err(|e| e.to_string())?;
                match raw::upgrade(&mut s, &format!("/ws?username=storm{i}"), "") {
                    Ok((101, _)) => ok += 1,
                    Ok((429, head)) if head.to_ascii_lowercase().contains("retry-after") => limited += 1,
                    // A refusal at accept may race the request write.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                    Ok((status, _)) => return Err(format!("storm got {status}")),
                    Err(e) => return Err(format!("storm: {e}")),
                }
            }
            if limited > 0 && ok > 0 {
                Ok(())
            } else {
                Err(format!("{ok} accepted, {limited} refused with 429"))
            }
        }
    }
}

/// Keeps the firehose room busy for stalled readers: large messages as fast
/// as the per-connection rate limit lets a few publishers send them.
pub fn firehose(shared: &Shared, server: SocketAddr) -> Result<(), String> {
    let mut feeders: Vec<TcpStream> = (0..2)
        .map(|i| open(server, &format!("/ws?username=feeder{i}"), ""))
        .collect::<Result<_, _>>()?;
    let join = raw::frame(Opcode::Text, true, false, br#"{"type":"join","room":"soak-firehose"}"#);
    let content = "x".repeat(16 * 1024);
    let message = format!(r#"{{"type":"broadcast","room":"soak-firehose","content":"{content}"}}"#);
    for f in &mut feeders {
        f.write_all(&join).map_err(|e| e.to_string())?;
        // Their own copies and replies are not read: drop them cheaply.
        let _ = f.set_read_timeout(Some(Duration::from_millis(1)));
    }
    let mut sink = vec![0u8; 256 * 1024];
    while !shared.stop_load.load(Ordering::SeqCst) {
        for f in &mut feeders {
            let _ = f.write_all(&raw::frame(Opcode::Text, true, false, message.as_bytes()));
            while let Ok(n) = std::io::Read::read(f, &mut sink) {
                if n == 0 {
                    break;
                }
            }
        }
        // 40 a second each: under the default 50/s rate limit.
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}
