//! `broadcast`: N members of one room plus P publishers; deliveries per
//! second, publish-to-delivery latency and lost deliveries.
//!
//! Every publisher is also a receiver (roomcast's `broadcast` and a raw
//! pub/sub relay both deliver to the sender too), so each message published
//! is owed to N + P connections. A message carries its send time and its
//! publisher's number (see `payload`); a delivery is counted, and its
//! latency recorded, when that send time lies in the measurement window,
//! however late it arrives. After the window, publishing stops and the run
//! drains until every owed delivery came or the drain time is up; what is
//! still missing is lost.
//!
//! Pacing: with a rate, each publisher sends on its own schedule (rate / P
//! per second), skipping a beat (counted as throttled) when its window of
//! messages in flight is full; without one, each publisher keeps its window
//! full, sending the next message when its own copy of an earlier one comes
//! back. In flight means "sent, own copy not yet received".

use super::driver::{Driver, Handler, Io};
use super::histogram::Histogram;
use super::payload;
use super::process::{CpuMeter, Pid};
use super::report::{self, Report};
use super::{Common, Window};
use crate::protocol::MessageKind;
use serde_json::json;
use std::io;
use std::time::{Duration, Instant};

/// What the server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// roomcast's JSON protocol on `/ws`: join, then `broadcast` commands.
    Rooms,
    /// A raw relay such as `/pubsub/{topic}`: every text frame goes to every
    /// subscriber verbatim.
    Raw,
}

#[derive(Clone, Debug)]
pub struct BroadcastConfig {
    pub common: Common,
    /// Receivers that never publish.
    pub members: usize,
    pub publishers: usize,
    /// Messages per second across all publishers; 0 publishes as fast as
    /// the window allows.
    pub rate: f64,
    /// Messages in flight per publisher.
    pub window: usize,
    /// The published text is padded to at least this many bytes.
    pub size: usize,
    pub mode: Mode,
    /// The room to join in `Rooms` mode.
    pub room: String,
    /// Longest wait for missing deliveries after the window.
    pub drain: Duration,
    /// Offer permessage-deflate; messages are padded with varied text
    /// (`payload::stamp_varied`) so that they compress like JSON.
    pub deflate: bool,
}

/// Time given to a raw relay to register subscribers after their 101.
const SETTLE: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, Default)]
struct Publisher {
    in_flight: usize,
    next_at: u64,
}

struct Broadcast {
    mode: Mode,
    room: String,
    size: usize,
    publishers: Vec<Publisher>,
    window_limit: usize,
    /// Nanoseconds between two messages of one publisher, when paced.
    interval: Option<u64>,
    /// Pad with varied text, not dots (compression is on).
    varied: bool,
    publishing: bool,
    /// Scratch for composing messages: reused, never reallocated once grown.
    buf: Vec<u8>,
    joined: Vec<bool>,
    joined_count: usize,
    window: Window,
    published: u64,
    deliveries: u64,
    latency: Histogram,
    throttled: u64,
    unstamped: u64,
    server_errors: u64,
    first_server_error: Option<String>,
}

impl Broadcast {
    fn publish(&mut self, io: &mut Io, p: usize, now: u64) {
        self.buf.clear();
        if self.mode == Mode::Rooms {
            self.buf.extend_from_slice(b"{\"type\":\"broadcast\",\"room\":\"");
            self.buf.extend_from_slice(self.room.as_bytes());
            self.buf.extend_from_slice(b"\",\"content\":\"");
        }
        if self.varied {
            payload::stamp_varied(&mut self.buf, now, p as u32, self.size);
        } else {
            payload::stamp(&mut self.buf, now, p as u32, self.size);
        }
        if self.mode == Mode::Rooms {
            self.buf.extend_from_slice(b"\"}");
        }
        io.send(p, MessageKind::Text, &self.buf);
        self.publishers[p].in_flight += 1;
        if self.window.contains(now) {
            self.published += 1;
        }
    }

    /// Paced publishing: every publisher whose time has come sends, or
    /// skips the beat when its window is full.
    fn tick(&mut self, io: &mut Io, now: u64) {
        let Some(interval) = self.interval else { return };
        for p in 0..self.publishers.len() {
            if !io.is_open(p) {
                continue;
            }
            // Far behind (a stalled server): skip the missed beats at once.
            let behind = now.saturating_sub(self.publishers[p].next_at);
            if behind > 1_000_000_000 {
                let missed = behind / interval;
                self.throttled += missed;
                self.publishers[p].next_at += missed * interval;
            }
            while self.publishers[p].next_at <= now {
                self.publishers[p].next_at += interval;
                if self.publishers[p].in_flight < self.window_limit {
                    self.publish(io, p, now);
                } else {
                    self.throttled += 1;
                }
            }
        }
    }

    /// When the next paced message is due.
    fn next_due(&self) -> Option<u64> {
        self.interval?;
        self.publishers.iter().map(|p| p.next_at).min()
    }

    /// A message with no stamp: a reply or presence event of the room protocol.
    fn unstamped(&mut self, id: usize, payload: &[u8]) {
        self.unstamped += 1;
        if self.mode != Mode::Rooms {
            return;
        }
        if payload::contains(payload, br#""type":"joined""#) {
            if let Some(j) = self.joined.get_mut(id)
                && !*j
            {
                *j = true;
                self.joined_count += 1;
            }
        } else if payload::contains(payload, br#""type":"error""#) {
            self.server_errors += 1;
            if self.first_server_error.is_none() {
                let shown = &payload[..payload.len().min(200)];
                self.first_server_error = Some(String::from_utf8_lossy(shown).into_owned());
            }
        }
    }

    fn owed(&self, receivers: usize) -> u64 {
        self.published * receivers as u64
    }
}

impl Handler for Broadcast {
    fn opened(&mut self, io: &mut Io, id: usize, _now: u64) {
        if self.mode == Mode::Rooms {
            self.buf.clear();
            self.buf.extend_from_slice(b"{\"type\":\"join\",\"room\":\"");
            self.buf.extend_from_slice(self.room.as_bytes());
            self.buf.extend_from_slice(b"\"}");
            io.send(id, MessageKind::Text, &self.buf);
        }
    }

    fn message(&mut self, io: &mut Io, id: usize, _kind: MessageKind, payload: &[u8], now: u64) {
        let Some((sent, publisher)) = payload::parse(payload) else {
            return self.unstamped(id, payload);
        };
        if self.window.contains(sent) {
            self.deliveries += 1;
            self.latency.record(now.saturating_sub(sent));
        }
        let p = publisher as usize;
        if p == id && p < self.publishers.len() {
            let publisher = &mut self.publishers[p];
            publisher.in_flight = publisher.in_flight.saturating_sub(1);
            if self.publishing && self.interval.is_none() {
                self.publish(io, p, now);
            }
        }
    }
}

pub fn run(config: &BroadcastConfig) -> io::Result<Report> {
    let common = &config.common;
    let publishers = config.publishers.max(1);
    let total = config.members + publishers;
    let mut driver = Driver::new(common.target.clone(), total, common.sources(total), true)?;
    driver.spread_over(&common.spread);
    if config.deflate {
        driver.offer_deflate();
    }
    let window_limit = config.window.max(1);
    let interval = (config.rate > 0.0).then(|| (1e9 * publishers as f64 / config.rate).max(1.0) as u64);
    let mut b = Broadcast {
        mode: config.mode,
        room: config.room.clone(),
        size: config.size,
        publishers: vec![Publisher::default(); publishers],
        window_limit,
        interval,
        varied: config.deflate,
        publishing: false,
        buf: Vec::with_capacity(256 + config.size),
        joined: vec![false; total],
        joined_count: 0,
        window: Window::default(),
        published: 0,
        deliveries: 0,
        latency: Histogram::new(),
        throttled: 0,
        unstamped: 0,
        server_errors: 0,
        first_server_error: None,
    };
    common.progress(&format!(
        "broadcast: opening {publishers} publishers + {} members to {}",
        config.members,
        common.target.url()
    ));
    // Publishers first: ids 0..P publish, the rest only listen.
    let opened = driver.open(&mut b, total, common.connect_concurrency, common.connect_timeout)?;
    if opened.opened == 0 {
        return Err(report::no_connections(&driver.io().counters));
    }
    if (0..publishers).any(|p| !driver.io().is_open(p)) {
        return Err(io::Error::other("a publisher's connection did not open"));
    }
    match config.mode {
        Mode::Rooms => {
            let deadline = Instant::now() + common.connect_timeout;
            let want = driver.io().open_count();
            driver.run_until(&mut b, deadline, |b| b.joined_count >= want)?;
            if b.joined_count < want {
                return Err(io::Error::other(format!(
                    "only {} of {want} connections joined room {:?}{}",
                    b.joined_count,
                    config.room,
                    b.first_server_error
                        .as_ref()
                        .map_or(String::new(), |e| format!(": {e}"))
                )));
            }
        }
        Mode::Raw => driver.run_until(&mut b, Instant::now() + SETTLE, |_| false)?,
    }
    let receivers = driver.io().open_count();
    common.progress(&format!(
        "broadcast: {receivers} receivers ready; warming up for {:?}",
        common.warmup
    ));

    // Warmup, then the measurement window, publishing throughout.
    b.publishing = true;
    let now = driver.io().now_ns();
    for p in 0..publishers {
        b.publishers[p].next_at = now + interval.map_or(0, |i| i * p as u64 / publishers as u64);
        if interval.is_none() {
            for _ in 0..window_limit {
                b.publish(driver.io(), p, now);
            }
        }
    }
    let warm_end = Instant::now() + common.warmup;
    publish_until(&mut driver, &mut b, warm_end)?;
    let (bench_cpu, server_cpu) = (
        CpuMeter::start(Pid::Myself),
        common.server_pid.map(|p| CpuMeter::start(Pid::Other(p))),
    );
    b.window = Window::new(driver.io().now_ns(), common.duration);
    let end = driver.io().instant(b.window.end);
    publish_until(&mut driver, &mut b, end)?;
    let bench_cpu = bench_cpu.percent();
    let server_cpu = server_cpu.and_then(|m| m.percent());
    b.publishing = false;
    let drain_start = Instant::now();
    driver.run_until(&mut b, drain_start + config.drain, |b| {
        b.deliveries >= b.owed(receivers)
    })?;
    let drained_in = drain_start.elapsed();
    let counters = driver.io().counters.clone();
    let still_open = driver.io().open_count();
    driver.close_all();

    let secs = common.duration.as_secs_f64();
    let owed = b.owed(receivers);
    let lost = owed.saturating_sub(b.deliveries);
    let mode = match config.mode {
        Mode::Rooms => "roomcast JSON",
        Mode::Raw => "raw pub/sub",
    };
    let pacing = match interval {
        Some(_) => format!("{:.0} msgs/s target", config.rate),
        None => format!("as fast as a window of {window_limit} allows"),
    };
    let mut r = Report::new("broadcast", common);
    let deflate = if config.deflate {
        ", permessage-deflate offered"
    } else {
        ""
    };
    r.line(format!(
        "broadcast ({mode}) {} members + {publishers} publishers, {pacing}{deflate}, {secs:.1} s:",
        config.members
    ));
    r.line(format!(
        "  published {} ({:.0}/s), delivered {} of {owed} ({:.0}/s), lost {lost}{}",
        b.published,
        b.published as f64 / secs,
        b.deliveries,
        b.deliveries as f64 / secs,
        if b.throttled > 0 {
            format!(", {} beats skipped (window full)", b.throttled)
        } else {
            String::new()
        }
    ));
    r.latency_line("publish-to-delivery", &b.latency);
    r.cpu_lines(bench_cpu, server_cpu);
    r.counter_lines(&counters, still_open, opened.opened);
    if let Some(e) = &b.first_server_error {
        r.line(format!(
            "  {} error events from the server, first: {e}",
            b.server_errors
        ));
    }
    if lost > 0 {
        r.line(format!("  drain: waited {drained_in:.1?} for missing deliveries"));
    }
    r.json(json!({
        "mode": match config.mode { Mode::Rooms => "rooms", Mode::Raw => "raw" },
        "members": config.members,
        "publishers": publishers,
        "receivers": receivers,
        "rate": config.rate,
        "window": window_limit,
        "size": config.size,
        "deflate": config.deflate,
        "duration_secs": secs,
        "published": b.published,
        "publish_per_sec": report::round(b.published as f64 / secs, 1),
        "deliveries": b.deliveries,
        "deliveries_per_sec": report::round(b.deliveries as f64 / secs, 1),
        "expected": owed,
        "lost": lost,
        "throttled": b.throttled,
        "latency_us": report::latency_json(&b.latency),
        "bench_cpu_percent": bench_cpu.map(|v| report::round(v, 1)),
        "server_cpu_percent": server_cpu.map(|v| report::round(v, 1)),
        "server_errors": b.server_errors,
        "errors": counters.failures(),
        "counters": counters,
    }));
    Ok(r)
}

/// Runs turns until `until`, publishing on schedule when paced.
fn publish_until(driver: &mut Driver, b: &mut Broadcast, until: Instant) -> io::Result<()> {
    loop {
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        let io = driver.io();
        b.tick(io, io.now_ns());
        let wake = b.next_due().map_or(until, |ns| io.instant(ns).min(until));
        driver.turn(
            b,
            Some(wake.saturating_duration_since(now).min(Duration::from_millis(50))),
        )?;
    }
}
