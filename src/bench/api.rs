//! `api`: C keep-alive HTTP connections, each keeping D `POST /api/publish`
//! requests in flight against roomcast's publish API: publishes per second
//! and request-to-answer latency, plus M `/ws` members of the room counting
//! what reaches them (so a publish that is answered but not delivered shows
//! up as lost).
//!
//! The requests go out through one `mio` loop like the other scenarios';
//! the members are blocking clients (`crate::client`) on threads of their
//! own. The request bytes are made once and written again for every
//! publish; answers are matched with the oldest request in flight (HTTP/1.1
//! answers in order).

use super::Common;
use super::histogram::Histogram;
use super::process::{CpuMeter, Pid};
use super::report::{self, Report};
use crate::client::{Client as WsClient, ClientConfig, Message};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub common: Common,
    pub connections: usize,
    /// Requests in flight per connection (pipelined beyond 1).
    pub in_flight: usize,
    pub room: String,
    /// Pad each message's `content` to this many bytes.
    pub size: usize,
    /// The API key itself (sent as `Authorization: Bearer`).
    pub key: String,
    /// `/ws` members of the room that receive every publish.
    pub members: usize,
    /// Longest wait for the members' last deliveries.
    pub drain: Duration,
}

struct Conn {
    stream: TcpStream,
    out: Vec<u8>,
    /// `out[written..]` is not written yet.
    written: usize,
    input: Vec<u8>,
    sent_at: VecDeque<Instant>,
}

impl Conn {
    fn queue(&mut self, request: &[u8], now: Instant) {
        if self.written == self.out.len() {
            self.out.clear();
            self.written = 0;
        }
        self.out.extend_from_slice(request);
        self.sent_at.push_back(now);
    }

    fn write(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next complete answer's status, if buffered.
    fn answer(&mut self) -> io::Result<Option<u16>> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(&self.input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(io::Error::other(format!("bad answer from the server: {e}"))),
        };
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if self.input.len() < head + length {
            return Ok(None);
        }
        let status = response.code.unwrap_or(0);
        self.input.drain(..head + length);
        Ok(Some(status))
    }
}

/// A member of the room, reading on its own thread until told to stop.
fn member(url: String, room: String, received: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> io::Result<()> {
    let config = ClientConfig::default();
    let mut ws = WsClient::connect(&url, &config).map_err(|e| io::Error::other(e.to_string()))?;
    let join = json!({"type": "join", "room": room}).to_string();
    ws.send_text(&join).map_err(|e| io::Error::other(e.to_string()))?;
    // Joined before the first publish.
    loop {
        match ws.read_message().map_err(|e| io::Error::other(e.to_string()))? {
            Message::Text(text) if text.starts_with("{\"type\":\"joined\"") => break,
            Message::Close(_) => return Err(io::Error::other("a member was closed before joining")),
            _ => {}
        }
    }
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match ws.read_message_timeout(Duration::from_millis(100)) {
                Ok(Some(Message::Text(text))) if text.starts_with("{\"type\":\"message\"") => {
                    received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Ok(())
}

pub fn run(config: &ApiConfig) -> io::Result<Report> {
    let common = &config.common;
    let target = &common.target;
    let in_flight = config.in_flight.max(1);
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let ws_url = format!("ws://{}/ws?username=bench-member", target.host);
    for _ in 0..config.members {
        member(ws_url.clone(), config.room.clone(), received.clone(), stop.clone())?;
    }
    let body = json!({"room": config.room, "content": "x".repeat(config.size)}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        target.host,
        config.key,
        body.len()
    )
    .into_bytes();

    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(config.connections);
    let now = Instant::now();
    for i in 0..config.connections {
        let std_stream = std::net::TcpStream::connect(target.addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let mut conn = Conn {
            stream,
            out: Vec::new(),
            written: 0,
            input: Vec::new(),
            sent_at: VecDeque::with_capacity(in_flight),
        };
        for _ in 0..in_flight {
            conn.queue(&request, now);
        }
        conns.push(conn);
    }
    common.progress(&format!(
        "api: {} connections x {in_flight} in flight to {}, {} member(s); warming up for {:?}",
        config.connections,
        target.url(),
        config.members,
        common.warmup
    ));
    let mut events = Events::with_capacity(256);
    let mut latency = Histogram::new();
    let (mut answered, mut errors, mut published) = (0u64, 0u64, 0u64);
    let mut measuring = false;
    let started = Instant::now();
    let warm_end = started + common.warmup;
    let end = warm_end + common.duration;
    let (mut bench_cpu, mut server_cpu) = (None, None);
    let mut received_at_start = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if !measuring && now >= warm_end {
            bench_cpu = Some(CpuMeter::start(Pid::Myself));
            server_cpu = common.server_pid.map(|p| CpuMeter::start(Pid::Other(p)));
            received_at_start = received.load(Ordering::Relaxed);
            measuring = true;
        }
        if now >= end {
            break;
        }
        for conn in &mut conns {
            conn.write()?;
        }
        poll.poll(
            &mut events,
            Some(end.saturating_duration_since(now).min(Duration::from_millis(100))),
        )?;
        let now = Instant::now();
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            if !event.is_readable() {
                continue;
            }
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("the server closed a keep-alive connection")),
                    Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            while let Some(status) = conn.answer()? {
                let sent = conn.sent_at.pop_front().unwrap_or(now);
                if measuring && now < end {
                    answered += 1;
                    latency.record(now.duration_since(sent).as_nanos() as u64);
                    if status != 200 {
                        errors += 1;
                    }
                }
                if status == 200 {
                    published += 1;
                }
                conn.queue(&request, now);
            }
        }
    }
    let secs = common.duration.as_secs_f64();
    let bench_cpu = bench_cpu.and_then(|m| m.percent());
    let server_cpu = server_cpu.and_then(|m| m.percent());
    // Answers still in flight are published too: the members must get them.
    let mut in_flight_left: usize = conns.iter().map(|c| c.sent_at.len()).sum();
    let deadline = Instant::now() + config.drain;
    while in_flight_left > 0 && Instant::now() < deadline {
        // Requests queued by the last answers still go out.
        for conn in &mut conns {
            conn.write()?;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for event in events.iter() {
            let conn = &mut conns[event.token().0];
            loop {
                match conn.stream.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => conn.input.extend_from_slice(&buf[..n]),
                    Err(_) => break,
                }
            }
            while let Some(status) = conn.answer()? {
                conn.sent_at.pop_front();
                in_flight_left -= 1;
                if status == 200 {
                    published += 1;
                }
            }
        }
    }
    let expected = published * config.members as u64;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let delivered = received.load(Ordering::Relaxed);
    let delivered_in_window = delivered.saturating_sub(received_at_start);
    stop.store(true, Ordering::Relaxed);
    drop(conns);

    let rate = answered as f64 / secs;
    let mut r = Report::new("api", common);
    r.line(format!(
        "api {} connection(s) x {in_flight} in flight, {} B content, {} member(s), {:.1} s: {answered} publishes answered",
        config.connections, config.size, config.members, secs
    ));
    r.line(format!("  {rate:.0} publishes/s"));
    r.latency_line("request to answer", &latency);
    r.cpu_lines(bench_cpu, server_cpu);
    if errors > 0 {
        r.line(format!("  WARNING: {errors} answers were not 200"));
    }
    if config.members > 0 {
        r.line(format!(
            "  deliveries: {delivered} of {expected} ({} lost)",
            expected.saturating_sub(delivered)
        ));
    }
    r.json(json!({
        "connections": config.connections,
        "in_flight": in_flight,
        "size": config.size,
        "members": config.members,
        "duration_secs": secs,
        "publishes": answered,
        "publishes_per_sec": report::round(rate, 1),
        "latency_us": report::latency_json(&latency),
        "errors": errors,
        "deliveries": delivered,
        "deliveries_in_window": delivered_in_window,
        "lost": expected.saturating_sub(delivered),
        "bench_cpu_percent": bench_cpu.map(|v| report::round(v, 1)),
        "server_cpu_percent": server_cpu.map(|v| report::round(v, 1)),
    }));
    Ok(r)
}
