//! `echo`: C connections, each keeping D messages of S bytes in flight
//! against an echo server; messages per second and round-trip latency.
//!
//! Echo servers answer in order, so each connection keeps the send times
//! of its messages in flight in a queue of D entries and matches every
//! reply with the oldest: the payload is never looked at, and nothing is
//! allocated per message (the queue is sized once, the frame is encoded
//! into the connection's reused output buffer).

use super::driver::{Driver, Handler, Io};
use super::histogram::Histogram;
use super::process::{CpuMeter, Pid};
use super::report::{self, Report};
use super::{Common, Window};
use crate::protocol::MessageKind;
use serde_json::json;
use std::collections::VecDeque;
use std::io;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub common: Common,
    pub connections: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages in flight per connection.
    pub in_flight: usize,
    pub binary: bool,
}

struct Echo {
    payload: Vec<u8>,
    kind: MessageKind,
    /// Send times (ns) of the messages in flight, per connection.
    sent_at: Vec<VecDeque<u64>>,
    sending: bool,
    window: Window,
    replies: u64,
    latency: Histogram,
    /// Replies with nothing in flight: the server sent more than it got.
    unexpected: u64,
}

impl Handler for Echo {
    fn message(&mut self, io: &mut Io, id: usize, _kind: MessageKind, _payload: &[u8], now: u64) {
        let Some(sent) = self.sent_at.get_mut(id).and_then(VecDeque::pop_front) else {
            self.unexpected += 1;
            return;
        };
        if self.window.contains(now) {
            self.replies += 1;
            self.latency.record(now.saturating_sub(sent));
        }
        if self.sending {
            io.send(id, self.kind, &self.payload);
            self.sent_at[id].push_back(now);
        }
    }
}

pub fn run(config: &EchoConfig) -> io::Result<Report> {
    let common = &config.common;
    let mut driver = Driver::new(
        common.target.clone(),
        config.connections,
        common.sources(config.connections),
        false,
    )?;
    let in_flight = config.in_flight.max(1);
    let mut echo = Echo {
        // Printable ASCII, so text messages are valid UTF-8.
        payload: (0..config.size).map(|i| b'a' + (i % 26) as u8).collect(),
        kind: if config.binary {
            MessageKind::Binary
        } else {
            MessageKind::Text
        },
        sent_at: (0..config.connections)
            .map(|_| VecDeque::with_capacity(in_flight))
            .collect(),
        sending: true,
        window: Window::default(),
        replies: 0,
        latency: Histogram::new(),
        unexpected: 0,
    };
    common.progress(&format!(
        "echo: opening {} connections to {}",
        config.connections,
        common.target.url()
    ));
    let opened = driver.open(
        &mut echo,
        config.connections,
        common.connect_concurrency,
        common.connect_timeout,
    )?;
    if opened.opened == 0 {
        return Err(report::no_connections(&driver.io().counters));
    }
    // Every open connection starts with its full window in flight.
    let io = driver.io();
    let now = io.now_ns();
    for id in 0..io.len() {
        if io.is_open(id) {
            for _ in 0..in_flight {
                io.send(id, echo.kind, &echo.payload);
                echo.sent_at[id].push_back(now);
            }
        }
    }
    common.progress(&format!(
        "echo: {} open; warming up for {:?}",
        opened.opened, common.warmup
    ));
    let warm_end = Instant::now() + common.warmup;
    driver.run_until(&mut echo, warm_end, |_| false)?;
    let (bench_cpu, server_cpu) = (
        CpuMeter::start(Pid::Myself),
        common.server_pid.map(|p| CpuMeter::start(Pid::Other(p))),
    );
    let start = driver.io().now_ns();
    echo.window = Window::new(start, common.duration);
    let end = driver.io().instant(echo.window.end);
    driver.run_until(&mut echo, end, |_| false)?;
    echo.sending = false;
    let secs = common.duration.as_secs_f64();
    let bench_cpu = bench_cpu.percent();
    let server_cpu = server_cpu.and_then(|m| m.percent());
    let counters = driver.io().counters.clone();
    let still_open = driver.io().open_count();
    driver.close_all();

    let rate = echo.replies as f64 / secs;
    let mut r = Report::new("echo", common);
    r.line(format!(
        "echo {} connections x {} B {} x {} in flight, {:.1} s: {} round trips",
        opened.opened,
        config.size,
        if config.binary { "binary" } else { "text" },
        in_flight,
        secs,
        echo.replies
    ));
    r.line(format!(
        "  {:.0} msgs/s ({:.1} MiB/s each way)",
        rate,
        rate * config.size as f64 / (1 << 20) as f64
    ));
    r.latency_line("round trip", &echo.latency);
    r.cpu_lines(bench_cpu, server_cpu);
    r.counter_lines(&counters, still_open, opened.opened);
    if echo.unexpected > 0 {
        r.line(format!("  WARNING: {} replies the bench did not send", echo.unexpected));
    }
    r.json(json!({
        "connections": opened.opened,
        "size": config.size,
        "in_flight": in_flight,
        "binary": config.binary,
        "duration_secs": secs,
        "messages": echo.replies,
        "msgs_per_sec": report::round(rate, 1),
        "bytes_per_sec": report::round(rate * config.size as f64, 0),
        "latency_us": report::latency_json(&echo.latency),
        "bench_cpu_percent": bench_cpu.map(|v| report::round(v, 1)),
        "server_cpu_percent": server_cpu.map(|v| report::round(v, 1)),
        "unexpected_replies": echo.unexpected,
        "errors": counters.failures(),
        "counters": counters,
    }));
    Ok(r)
}
