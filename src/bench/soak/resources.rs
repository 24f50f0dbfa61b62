//! What the server holds, sampled over the run: from `/proc/PID` (resident
//! memory, descriptors, threads) and from its `/stats` (live heap, open
//! connections, send-queue bytes).

use serde::Serialize;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    pub threads: Option<u64>,
    pub heap_bytes: Option<u64>,
    pub connections: Option<u64>,
    pub send_queue_bytes: Option<u64>,
    /// Connections the harness holds open itself.
    pub harness_open: u64,
}

/// `/stats` of the server, if it answers.
pub fn stats(server: SocketAddr) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn sample(server: SocketAddr, pid: Option<u32>, t: f64, harness_open: u64) -> Sample {
    // /proc first: the /stats request's own connection must not be counted.
    let fds = pid.and_then(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .ok()
            .map(|d| d.count() as u64)
    });
    let rss_kib = pid.and_then(|p| status_field(p, "VmRSS:"));
    let threads = pid.and_then(|p| status_field(p, "Threads:"));
    let stats = stats(server);
    let field = |name: &str| stats.as_ref().and_then(|s| s[name].as_u64());
    Sample {
        t,
        rss_kib,
        fds,
        threads,
        heap_bytes: field("heap_bytes"),
        connections: field("connections_active"),
        send_queue_bytes: field("send_queue_bytes"),
        harness_open,
    }
}
