//! The server's own memory count, over plain HTTP on its WebSocket port.
//!
//! roomcast answers `GET /stats` (`serve`) and any plain GET (`echo`) with
//! JSON holding `heap_bytes`: the live heap its allocator counts, exact
//! where RSS also holds the allocator's caches. Peers answer something else
//! or nothing; the probe then gives up quietly after a short timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(1);
/// Paths tried in order.
const PATHS: [&str; 2] = ["/stats", "/"];

/// The server's `heap_bytes`, if it reports one.
pub fn heap_bytes(addr: SocketAddr, host: &str) -> Option<u64> {
    PATHS.iter().find_map(|path| {
        let body = get(addr, host, path)?;
        json_number(&body, "heap_bytes")
    })
}

/// One `GET` with `Connection: close`; the whole answer, if any came.
fn get(addr: SocketAddr, host: &str, path: &str) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).ok()?;
    stream.set_read_timeout(Some(TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(TIMEOUT)).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = Vec::new();
    // A timeout after some bytes still leaves a usable answer.
    let _ = stream.take(1 << 20).read_to_end(&mut answer);
    (!answer.is_empty()).then_some(answer)
}

/// The unsigned integer after `"key":` in a JSON text, found by search.
fn json_number(text: &[u8], key: &str) -> Option<u64> {
    let needle = format!("\"{key}\":");
    let at = text.windows(needle.len()).position(|w| w == needle.as_bytes())? + needle.len();
    let rest = &text[at..];
    let rest = &rest[rest.iter().take_while(|b| b.is_ascii_whitespace()).count()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_heap_bytes() {
        let body = br#"HTTP/1.1 200 OK\r\n\r\n{"connections_active":3,"heap_bytes": 123456,"uptime_seconds":1}"#;
        assert_eq!(json_number(body, "heap_bytes"), Some(123_456));
        assert_eq!(json_number(body, "connections_active"), Some(3));
        assert_eq!(json_number(br#"{"heap_bytes":null}"#, "heap_bytes"), None);
        assert_eq!(json_number(b"426 Upgrade Required", "heap_bytes"), None);
    }
}
