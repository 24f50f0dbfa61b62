//! Raw WebSocket clients for what no well-behaved client does: sockets
//! bound to chosen loopback source addresses, hand-made frames, and reads
//! that wait for the server's answer (a status, a close code, an EOF).

use crate::protocol::Opcode;
use crate::protocol::frame::write_frame;
use crate::protocol::mask::random_key;
use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A TCP connection to `addr`, from `source` when given.
pub fn connect(addr: SocketAddr, source: Option<Ipv4Addr>, timeout: Duration) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::from((ip, 0)).into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    let stream: TcpStream = socket.into();
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

/// The upgrade request for `path`, with extra header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends the upgrade request and reads the response head: its status and
/// text (anything after the head stays unread in the socket).
pub fn upgrade(stream: &mut TcpStream, path: &str, extra: &str) -> io::Result<(u16, String)> {
    stream.write_all(upgrade_request(path, extra).as_bytes())?;
    read_head(stream)
}

/// Reads an HTTP response head byte by byte (they are short).
pub fn read_head(stream: &mut TcpStream) -> io::Result<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, text))
}

/// A masked client frame.
pub fn frame(opcode: Opcode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    write_frame(&mut out, opcode, fin, rsv1, Some(random_key()), payload);
    out
}

/// One server frame: (opcode byte, payload).
pub fn read_frame(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b)?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b)?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    if len > 64 * 1024 * 1024 {
        return Err(io::ErrorKind::InvalidData.into());
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((head[0] & 0x0F, payload))
}

/// How a connection ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A close frame with this code (0: none).
    Close(u16),
    /// EOF or reset without a close frame.
    Dropped,
    /// Still open at the deadline.
    Open,
}

/// Reads (and discards data frames) until the server closes or `deadline`.
pub fn ending(stream: &mut TcpStream, deadline: Instant) -> Ending {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ending::Open;
        }
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match read_frame(stream) {
            Ok((8, payload)) => {
                let code = payload.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
                return Ending::Close(code);
            }
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Ending::Open;
            }
            Err(_) => return Ending::Dropped,
        }
    }
}
