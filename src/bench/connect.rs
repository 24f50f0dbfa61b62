//! `connect`: opening handshakes per second, then memory per idle
//! connection.
//!
//! N connections are opened with at most C handshakes in flight, then held
//! idle (answering the server's pings) for the hold time. The server's
//! memory is read before the first connection and at the end of the hold:
//! its own live-heap count when it reports one over plain HTTP (roomcast
//! does), and its resident set size when its pid is given. Both deltas are
//! divided by the connections open at the end.

use super::Common;
use super::driver::{Driver, Handler, Io};
use super::probe;
use super::process::{CpuMeter, Pid, rss_kib};
use super::report::{self, Report};
use crate::protocol::MessageKind;
use serde_json::json;
use std::io;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct ConnectConfig {
    pub common: Common,
    pub connections: usize,
    /// How long the connections are held once open.
    pub hold: Duration,
}

/// Idle connections ignore whatever the server says (a welcome, say).
struct Idle;

impl Handler for Idle {
    fn message(&mut self, _io: &mut Io, _id: usize, _kind: MessageKind, _payload: &[u8], _now: u64) {}
}

/// Memory as seen at one moment.
#[derive(Clone, Copy, Debug)]
struct Memory {
    heap: Option<u64>,
    rss_kib: Option<u64>,
    bench_rss_kib: Option<u64>,
}

fn memory(common: &Common) -> Memory {
    Memory {
        heap: probe::heap_bytes(common.target.addr, &common.target.host),
        rss_kib: common.server_pid.and_then(|p| rss_kib(Pid::Other(p))),
        bench_rss_kib: rss_kib(Pid::Myself),
    }
}

/// `(after - before) / n`, which may be negative when memory was given back.
fn per_connection(before: Option<u64>, after: Option<u64>, scale: u64, n: usize) -> Option<f64> {
    let (before, after) = (before? as f64, after? as f64);
    (n > 0).then(|| (after - before) * scale as f64 / n as f64)
}

pub fn run(config: &ConnectConfig) -> io::Result<Report> {
    let common = &config.common;
    let mut driver = Driver::new(
        common.target.clone(),
        config.connections,
        common.sources(config.connections),
        false,
    )?;
    let before = memory(common);
    common.progress(&format!(
        "connect: opening {} connections to {}, {} handshakes at a time",
        config.connections,
        common.target.url(),
        common.connect_concurrency
    ));
    let (bench_cpu, server_cpu) = (
        CpuMeter::start(Pid::Myself),
        common.server_pid.map(|p| CpuMeter::start(Pid::Other(p))),
    );
    let opened = driver.open(
        &mut Idle,
        config.connections,
        common.connect_concurrency,
        common.connect_timeout,
    )?;
    let bench_cpu = bench_cpu.percent();
    let server_cpu = server_cpu.and_then(|m| m.percent());
    if opened.opened == 0 {
        return Err(report::no_connections(&driver.io().counters));
    }
    // compare.py waits for this line before reading memory itself.
    common.progress(&format!(
        "connect: holding {} connections for {:?}",
        opened.opened, config.hold
    ));
    driver.run_until(&mut Idle, Instant::now() + config.hold, |_| false)?;
    let held = driver.io().open_count();
    let after = memory(common);
    let counters = driver.io().counters.clone();
    let sources = driver.source_addresses();
    let handshake_latency = driver.handshake_latency.clone();
    driver.close_all();

    let rate = if opened.secs > 0.0 {
        opened.opened as f64 / opened.secs
    } else {
        0.0
    };
    let heap_per = per_connection(before.heap, after.heap, 1, held);
    let rss_per = per_connection(before.rss_kib, after.rss_kib, 1024, held);
    let bench_per = per_connection(before.bench_rss_kib, after.bench_rss_kib, 1024, held);
    let mut r = Report::new("connect", common);
    r.line(format!(
        "connect {} of {} connections in {:.2} s from {sources} source address(es): {rate:.0} handshakes/s",
        opened.opened, opened.attempted, opened.secs
    ));
    r.latency_line("handshake", &handshake_latency);
    r.cpu_lines(bench_cpu, server_cpu);
    r.line(format!("  held {held} idle connections for {:?}", config.hold));
    let bytes = |v: Option<f64>, what: &str| v.map_or(format!("n/a ({what})"), |v| format!("{v:.0} B"));
    r.line(format!(
        "  server memory per idle connection: heap {}, RSS {}",
        bytes(heap_per, "no heap_bytes over HTTP"),
        bytes(rss_per, "no --server-pid")
    ));
    r.line(format!(
        "  bench RSS per connection: {}",
        bytes(bench_per, "unreadable")
    ));
    r.counter_lines(&counters, held, opened.opened);
    r.json(json!({
        "connections": opened.attempted,
        "opened": opened.opened,
        "held": held,
        "source_addresses": sources,
        "connect_secs": report::round(opened.secs, 3),
        "handshakes_per_sec": report::round(rate, 1),
        "handshake_latency_us": report::latency_json(&handshake_latency),
        "hold_secs": config.hold.as_secs_f64(),
        "server_heap_before": before.heap,
        "server_heap_after": after.heap,
        "heap_bytes_per_conn": heap_per.map(|v| report::round(v, 1)),
        "server_rss_kib_before": before.rss_kib,
        "server_rss_kib_after": after.rss_kib,
        "rss_bytes_per_conn": rss_per.map(|v| report::round(v, 1)),
        "bench_rss_bytes_per_conn": bench_per.map(|v| report::round(v, 1)),
        "bench_cpu_percent": bench_cpu.map(|v| report::round(v, 1)),
        "server_cpu_percent": server_cpu.map(|v| report::round(v, 1)),
        "errors": counters.failures(),
        "counters": counters,
    }));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_deltas() {
        assert_eq!(per_connection(Some(1000), Some(3000), 1, 4), Some(500.0));
        assert_eq!(per_connection(Some(10), Some(12), 1024, 2), Some(1024.0));
        assert_eq!(per_connection(Some(3000), Some(1000), 1, 4), Some(-500.0));
        assert_eq!(per_connection(None, Some(1), 1, 4), None);
        assert_eq!(per_connection(Some(1), Some(2), 1, 0), None);
    }
}
