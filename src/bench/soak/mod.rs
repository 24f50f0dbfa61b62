//! `roomcast bench soak`: everything at once against one server, bounded in
//! time and loopback-only like the rest of `bench` (docs/reliability.md).
//!
//! - **members** (`members.rs`) in many rooms publish at a steady rate and
//!   check every delivery: no loss, no duplicate, one order per room;
//! - **churn** (`churn.rs`) opens and closes connections all the time,
//!   ending them every way a client can, and checks that rejoining with
//!   `since`/`epoch` replays exactly what was missed; **crowds** push the
//!   connection count up to the descriptor budget in bursts;
//! - **hostile** clients (`hostile.rs`) of eight kinds, each attempt checked
//!   for its documented answer;
//! - a fault-injecting **proxy** (`proxy.rs`) between some members or
//!   churners and the server: latency, one-byte segments, a bandwidth cap,
//!   stalls, resets, half-open peers;
//! - the server's **resources** (`resources.rs`) sampled all along; after
//!   the load, memory and descriptors must come back to their baseline.
//!
//! The run is split: the first part has only the members (the calm p99),
//! then everything else joins in (the loaded p99, which may exceed the
//! calm one by a stated bound at most). Threads and blocking sockets, not
//! the bench's event loop: the soak checks correctness under load; it does
//! not try to be the fastest client.

pub mod chart;
pub mod churn;
pub mod hostile;
pub mod members;
pub mod proxy;
pub mod raw;
pub mod resources;

use super::histogram::Histogram;
use super::process;
use super::target::Target;
use hostile::{Kind, Tally};
use proxy::{Fault, Proxy};
use resources::Sample;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The server's `/ws` endpoint.
    pub target: Target,
    pub duration: Duration,
    pub server_pid: Option<u32>,
    pub rooms: usize,
    /// Well-behaved members per room (one of them through the fault proxy).
    pub members: usize,
    /// Messages per second per room.
    pub rate: f64,
    pub churners: usize,
    /// Idle connections per crowd burst.
    pub crowd: usize,
    pub crowd_every: Duration,
    pub hostile: bool,
    /// The server's `--handshake-timeout`, for the slowloris answer.
    pub handshake_timeout: Duration,
    /// How much the loaded p99 may exceed the calm p99.
    pub p99_bound: Duration,
    /// Resident memory may end this much above baseline (plus 5%).
    pub rss_slack_kib: u64,
    /// Live heap may end this much above baseline (plus 5%), plus
    /// `HEAP_PER_WORKER` for each of the server's workers.
    pub heap_slack_bytes: u64,
    /// Where to write the chart (SVG) and the samples (JSON).
    pub chart: Option<PathBuf>,
    pub samples: Option<PathBuf>,
}

impl SoakConfig {
    pub fn new(target: Target, duration: Duration) -> Self {
        SoakConfig {
            target,
            duration,
            server_pid: None,
            rooms: 10,
            members: 5,
            rate: 20.0,
            churners: 4,
            crowd: 2000,
            crowd_every: Duration::from_secs(10),
            hostile: true,
            handshake_timeout: Duration::from_secs(10),
            p99_bound: Duration::from_millis(100),
            rss_slack_kib: 16 * 1024,
            heap_slack_bytes: 1 << 20,
            chart: None,
            samples: None,
        }
    }
}

/// What a worker keeps once it has compressed and inflated messages: its
/// pool of zlib streams (src/protocol/deflate/codec.rs: up to 2 deflaters
/// of about 380 KB and 8 inflaters of about 70 KB at window 15), made on
/// first use and reused, never freed.
pub const HEAP_PER_WORKER: u64 = 1536 * 1024;

/// What the threads share.
pub struct Shared {
    pub start: Instant,
    /// When churn, crowds and hostiles begin.
    pub load_at: Instant,
    pub rooms: usize,
    pub stop_load: AtomicBool,
    pub stop_publish: AtomicBool,
    /// Messages each member has published (by gid).
    pub published: Vec<AtomicU64>,
    /// Per room, seq → (publisher, k) as its recorder saw it.
    pub room_logs: Vec<Mutex<HashMap<u64, (u64, u64)>>>,
    open: AtomicU64,
    peak: AtomicU64,
    /// Latency per time bucket (by send time), for the chart.
    buckets: Mutex<Vec<Histogram>>,
    bucket_ns: u64,
}

impl Shared {
    pub fn opened(&self) {
        let n = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak.fetch_max(n, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn record_latency(&self, sent_ns: u64, us: u64) {
        let i = (sent_ns / self.bucket_ns) as usize;
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() <= i {
            buckets.resize_with(i + 1, Histogram::new);
        }
        buckets[i].record(us);
    }
}

fn latency_json(h: &Histogram) -> Value {
    json!({"p50": h.quantile(0.5), "p99": h.quantile(0.99), "p999": h.quantile(0.999), "max": h.max(), "samples": h.count()})
}

/// The outcome: human lines, one JSON object, and whether it passed.
pub struct SoakReport {
    pub lines: Vec<String>,
    pub json: Value,
    pub passed: bool,
}

impl SoakReport {
    pub fn print(&self) {
        for line in &self.lines {
            println!("{line}");
        }
        println!("{}", self.json);
    }
}

fn wait_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

/// Runs the soak; `Err` only when it could not run at all.
pub fn run(config: &SoakConfig) -> Result<SoakReport, String> {
    process::raise_fd_limit().map_err(|e| format!("descriptor limit: {e}"))?;
    let server = config.target.addr;
    let base_url = format!("ws://{}{}", server, config.target.path());
    let pid = config.server_pid;
    // An answer to /stats means every worker runs: only then the baseline.
    let Some(stats) = resources::stats(server) else {
        return Err(format!("no /stats at {server}: is a roomcast server listening there?"));
    };
    let workers = stats["workers"].as_array().map_or(1, |w| w.len() as u64);
    std::thread::sleep(Duration::from_millis(500));
    let baseline = resources::sample(server, pid, 0.0, 0);
    let calm = config
        .duration
        .mul_f64(0.2)
        .max(Duration::from_secs(2))
        .min(config.duration);
    let now = Instant::now();
    let bucket_ns = (config.duration.as_nanos() as u64 / 200).max(1_000_000_000);
    let total_members = config.rooms * config.members;
    let shared = Arc::new(Shared {
        start: now,
        load_at: now + calm,
        rooms: config.rooms,
        stop_load: AtomicBool::new(false),
        stop_publish: AtomicBool::new(false),
        published: (0..total_members).map(|_| AtomicU64::new(0)).collect(),
        room_logs: (0..config.rooms).map(|_| Mutex::default()).collect(),
        open: AtomicU64::new(0),
        peak: AtomicU64::new(0),
        buckets: Mutex::new(Vec::new()),
        bucket_ns,
    });

    // Fault proxies: well-behaved members through the gentle ones, churners
    // through the ones that cut connections.
    let member_faults = [
        Fault::Latency(Duration::from_millis(20)),
        Fault::OneByte,
        Fault::Bandwidth(64 * 1024),
        Fault::Stall {
            every: Duration::from_secs(5),
            pause: Duration::from_millis(1500),
        },
    ];
    let mut proxies: Vec<Proxy> = Vec::new();
    for fault in member_faults
        .iter()
        .copied()
        .chain([Fault::Reset(Duration::from_millis(300)), Fault::Vanish])
    {
        proxies.push(Proxy::start(server, fault).map_err(|e| format!("proxy: {e}"))?);
    }
    let proxy_url = |i: usize| format!("ws://{}{}", proxies[i].addr(), config.target.path());

    // Members.
    let ready = Arc::new(Barrier::new(total_members + 1));
    let mut member_threads = Vec::new();
    for room in 0..config.rooms {
        for m in 0..config.members {
            let gid = room * config.members + m;
            let proxied = members::proxied(gid, config.members);
            let base = if proxied {
                proxy_url(room % member_faults.len())
            } else {
                base_url.clone()
            };
            let plan = members::Plan {
                room,
                gid,
                peers: room * config.members..(room + 1) * config.members,
                url: format!("{base}?username=m{gid}"),
                rate: config.rate / config.members as f64,
                proxied,
                per_room: config.members,
                recorder: m == 0,
            };
            let (shared, ready) = (shared.clone(), ready.clone());
            member_threads.push(
                std::thread::Builder::new()
                    .name(format!("soak-member-{gid}"))
                    .spawn(move || members::run(shared, plan, ready))
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    ready.wait();

    // Resources, every second until told to stop.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (shared, sampling) = (shared.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::SeqCst) {
                let t = shared.start.elapsed().as_secs_f64();
                samples.push(resources::sample(server, pid, t, shared.open.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };

    // The load joins after the calm part.
    wait_until(shared.load_at);
    let routes = churn::Routes {
        direct: base_url.clone(),
        resetting: Some(proxy_url(member_faults.len())),
        blackholing: Some(proxy_url(member_faults.len() + 1)),
    };
    let mut churn_threads = Vec::new();
    for id in 0..config.churners {
        let (shared, routes) = (shared.clone(), routes.clone());
        churn_threads.push(std::thread::spawn(move || churn::churn(&shared, id, &routes)));
    }
    let crowd_thread = (config.crowd > 0).then(|| {
        let (shared, size, every) = (shared.clone(), config.crowd, config.crowd_every);
        std::thread::spawn(move || churn::crowds(&shared, server, size, every, Duration::from_secs(1)))
    });
    let mut hostile_threads = Vec::new();
    let mut firehose = None;
    if config.hostile {
        let shared2 = shared.clone();
        firehose = Some(std::thread::spawn(move || hostile::firehose(&shared2, server)));
        let expect = hostile::Expect {
            handshake_timeout: config.handshake_timeout,
        };
        for kind in Kind::ALL {
            let shared = shared.clone();
            hostile_threads.push(std::thread::spawn(move || {
                let mut tally = Tally::default();
                while !shared.stop_load.load(Ordering::SeqCst) {
                    tally.attempts += 1;
                    match hostile::attempt(kind, server, expect, &shared) {
                        Ok(()) => tally.answered += 1,
                        // Cut short by the end of the load: no verdict.
                        Err(_) if shared.stop_load.load(Ordering::SeqCst) => tally.attempts -= 1,
                        Err(e) => {
                            tally.wrong += 1;
                            tally.first_wrong.get_or_insert(e);
                        }
                    }
                    // Pause between attempts, checking for the end.
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until && !shared.stop_load.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                (kind, tally)
            }));
        }
    }

    wait_until(shared.start + config.duration);
    shared.stop_load.store(true, Ordering::SeqCst);
    let churned: Vec<churn::Outcome> = churn_threads.into_iter().filter_map(|t| t.join().ok()).collect();
    let crowd = crowd_thread.and_then(|t| t.join().ok()).unwrap_or_default();
    let abusers: BTreeMap<Kind, Tally> = hostile_threads.into_iter().filter_map(|t| t.join().ok()).collect();
    let firehose_error = firehose.and_then(|t| t.join().ok()).and_then(Result::err);
    shared.stop_publish.store(true, Ordering::SeqCst);
    let members: Vec<members::Outcome> = member_threads.into_iter().filter_map(|t| t.join().ok()).collect();
    let half_open = proxies.last().map(|p| {
        (
            p.stats.vanished.load(Ordering::Relaxed),
            p.stats.dead_peers_noticed.load(Ordering::Relaxed),
            p.stats.dead_peer_max_ms.load(Ordering::Relaxed),
        )
    });
    for p in &mut proxies {
        p.stop();
    }

    // Idle again: every connection gone, housekeeping done.
    let idle_deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < idle_deadline {
        let s = resources::sample(server, pid, 0.0, 0);
        if s.connections == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let end = resources::sample(server, pid, shared.start.elapsed().as_secs_f64(), 0);
    sampling.store(false, Ordering::SeqCst);
    let mut samples: Vec<Sample> = sampler.join().unwrap_or_default();
    samples.push(end);

    Ok(report(
        config,
        &shared,
        Outcomes {
            members,
            churned,
            crowd,
            abusers,
            firehose_error,
            half_open,
            baseline,
            end,
            samples,
            workers,
        },
    ))
}

struct Outcomes {
    members: Vec<members::Outcome>,
    churned: Vec<churn::Outcome>,
    crowd: churn::Outcome,
    abusers: BTreeMap<Kind, Tally>,
    firehose_error: Option<String>,
    half_open: Option<(u64, u64, u64)>,
    baseline: Sample,
    end: Sample,
    samples: Vec<Sample>,
    /// The server's workers (from `/stats`).
    workers: u64,
}

fn report(config: &SoakConfig, shared: &Shared, o: Outcomes) -> SoakReport {
    let mut failures: Vec<String> = Vec::new();
    let (mut all, mut calm, mut load, mut proxied) =
        (Histogram::new(), Histogram::new(), Histogram::new(), Histogram::new());
    let (mut delivered, mut lost, mut duplicates, mut out_of_order) = (0u64, 0u64, 0u64, 0u64);
    for m in &o.members {
        delivered += m.delivered;
        lost += m.lost;
        duplicates += m.duplicates;
        out_of_order += m.out_of_order;
        proxied.merge(&m.faulted);
        calm.merge(&m.calm);
        load.merge(&m.load);
        all.merge(&m.calm);
        all.merge(&m.load);
        failures.extend(m.errors.iter().take(3).cloned());
    }
    if o.members.len() != config.rooms * config.members {
        failures.push(format!(
            "{} of {} members finished",
            o.members.len(),
            config.rooms * config.members
        ));
    }
    // Every replayed message must be what the room's recorder saw at that seq.
    let (mut recovered_ok, mut recovered_failed, mut churn_connections) = (0u64, 0u64, 0u64);
    for c in &o.churned {
        recovered_ok += c.recovered_ok;
        recovered_failed += c.recovered_failed;
        churn_connections += c.connections;
        failures.extend(c.failures.iter().take(3).cloned());
        for &(room, seq, p, k) in &c.replayed {
            let log = shared.room_logs[room].lock().unwrap_or_else(|e| e.into_inner());
            if log.get(&seq).is_some_and(|&(lp, lk)| (lp, lk) != (p, k)) {
                recovered_failed += 1;
                failures.push(format!(
                    "room {room} seq {seq}: replayed ({p},{k}), recorded {:?}",
                    log[&seq]
                ));
            }
        }
    }
    failures.extend(o.crowd.failures.iter().take(3).cloned());
    if let Some(e) = &o.firehose_error {
        failures.push(format!("firehose: {e}"));
    }
    for (kind, t) in &o.abusers {
        if t.wrong > 0 || t.answered == 0 {
            failures.push(format!(
                "{kind:?}: {} of {} attempts without the documented answer ({}){}",
                t.attempts - t.answered,
                t.attempts,
                kind.answer(),
                t.first_wrong.as_deref().map_or(String::new(), |e| format!(": {e}"))
            ));
        }
    }
    for (what, n) in [
        ("lost", lost),
        ("duplicates", duplicates),
        ("out of order", out_of_order),
    ] {
        if n > 0 {
            failures.push(format!("{n} deliveries {what}"));
        }
    }
    if recovered_failed > 0 {
        failures.push(format!("{recovered_failed} recoveries failed"));
    }
    let (p99_calm, p99_load) = (calm.quantile(0.99), load.quantile(0.99));
    let bound_us = config.p99_bound.as_micros() as u64;
    if load.count() > 0 && p99_load > p99_calm + bound_us {
        failures.push(format!(
            "p99 under load {p99_load} µs exceeds calm {p99_calm} µs + {bound_us} µs"
        ));
    }
    let grew = |base: Option<u64>, end: Option<u64>, slack: u64| match (base, end) {
        (Some(b), Some(e)) => e > b + b / 20 + slack,
        _ => false,
    };
    if grew(o.baseline.rss_kib, o.end.rss_kib, config.rss_slack_kib) {
        failures.push(format!(
            "RSS {:?} KiB after the load, baseline {:?} KiB",
            o.end.rss_kib, o.baseline.rss_kib
        ));
    }
    let heap_slack = config.heap_slack_bytes + HEAP_PER_WORKER * o.workers;
    if grew(o.baseline.heap_bytes, o.end.heap_bytes, heap_slack) {
        failures.push(format!(
            "heap {:?} B after the load, baseline {:?} B",
            o.end.heap_bytes, o.baseline.heap_bytes
        ));
    }
    if o.baseline.fds.is_some() && o.end.fds != o.baseline.fds {
        failures.push(format!(
            "descriptors {:?} after the load, baseline {:?}",
            o.end.fds, o.baseline.fds
        ));
    }
    if o.end.connections != Some(0) {
        failures.push(format!("{:?} connections still open after the load", o.end.connections));
    }
    let connections = churn_connections + o.crowd.connections + o.members.len() as u64;
    let peak = shared.peak.load(Ordering::Relaxed);
    let abusers_json: BTreeMap<String, Value> = o
        .abusers
        .iter()
        .map(|(k, t)| {
            (
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                json!(t),
            )
        })
        .collect();
    let passed = failures.is_empty();
    let mut lines = vec![
        format!(
            "soak: {} s against {}, {} rooms x {} members at {}/s per room, {} churners, crowds of {}",
            config.duration.as_secs(),
            config.target.url(),
            config.rooms,
            config.members,
            config.rate,
            config.churners,
            config.crowd
        ),
        format!("deliveries: {delivered}, lost {lost}, duplicates {duplicates}, out of order {out_of_order}"),
        format!(
            "latency (well-behaved): p50 {} µs, p99 {} µs (calm {p99_calm}, under load {p99_load}), p99.9 {} µs, max {} µs",
            all.quantile(0.5),
            all.quantile(0.99),
            all.quantile(0.999),
            all.max()
        ),
        format!(
            "through the fault proxy: p99 {} µs, max {} µs",
            proxied.quantile(0.99),
            proxied.max()
        ),
        format!(
            "connections: {connections} opened ({churn_connections} churn, {} crowd), peak {peak} at once; recoveries {recovered_ok} ok, {recovered_failed} failed",
            o.crowd.connections
        ),
    ];
    if let Some((blackholed, noticed, max_ms)) = o.half_open {
        lines.push(format!("half-open peers: {blackholed} vanished clients, {noticed} dropped by the server (at most {max_ms} ms after going silent)"));
    }
    for (kind, t) in &o.abusers {
        lines.push(format!(
            "hostile {kind:?}: {}/{} answered ({})",
            t.answered,
            t.attempts,
            kind.answer()
        ));
    }
    lines.push(format!(
        "server: RSS {:?} -> {:?} KiB, heap {:?} -> {:?} B, descriptors {:?} -> {:?}, threads {:?} -> {:?}",
        o.baseline.rss_kib,
        o.end.rss_kib,
        o.baseline.heap_bytes,
        o.end.heap_bytes,
        o.baseline.fds,
        o.end.fds,
        o.baseline.threads,
        o.end.threads
    ));
    lines.push(if passed {
        "PASSED".to_owned()
    } else {
        format!("FAILED:\n  {}", failures.join("\n  "))
    });
    let json = json!({
        "scenario": "soak",
        "url": config.target.url(),
        "duration_secs": config.duration.as_secs_f64(),
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "recovered_ok": recovered_ok,
        "recovered_failed": recovered_failed,
        "abusers": abusers_json,
        "latency_us": latency_json(&all),
        "latency_calm_us": latency_json(&calm),
        "latency_load_us": latency_json(&load),
        "p99_bound_us": bound_us,
        "latency_proxied_us": latency_json(&proxied),
        "connections_opened": connections,
        "peak_connections": peak,
        "half_open": o.half_open.map(|(b, n, ms)| json!({"made": b, "dropped_by_server": n, "max_ms": ms})),
        "rss_baseline_kib": o.baseline.rss_kib,
        "rss_end_kib": o.end.rss_kib,
        "heap_baseline_bytes": o.baseline.heap_bytes,
        "heap_end_bytes": o.end.heap_bytes,
        "fds_baseline": o.baseline.fds,
        "fds_end": o.end.fds,
        "threads_baseline": o.baseline.threads,
        "threads_end": o.end.threads,
        "passed": passed,
        "failures": failures,
    });
    write_artifacts(config, shared, &o.samples);
    SoakReport { lines, json, passed }
}

fn write_artifacts(config: &SoakConfig, shared: &Shared, samples: &[Sample]) {
    if let Some(path) = &config.samples {
        let _ = std::fs::write(path, serde_json::to_string_pretty(samples).unwrap_or_default());
    }
    let Some(path) = &config.chart else { return };
    let buckets = shared.buckets.lock().unwrap_or_else(|e| e.into_inner());
    let bucket_s = shared.bucket_ns as f64 / 1e9;
    let p99: Vec<(f64, f64)> = buckets
        .iter()
        .enumerate()
        .filter(|(_, h)| h.count() > 0)
        .map(|(i, h)| ((i as f64 + 0.5) * bucket_s, h.quantile(0.99) as f64 / 1000.0))
        .collect();
    let mib = |v: Option<u64>, scale: f64| v.map(|v| v as f64 / scale);
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t, mib(s.rss_kib, 1024.0)?)))
        .collect();
    let heap: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t, mib(s.heap_bytes, 1048576.0)?)))
        .collect();
    let conns: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| Some((s.t, s.connections? as f64 / 1000.0)))
        .collect();
    let t_max = samples.last().map_or(config.duration.as_secs_f64(), |s| s.t);
    let svg = chart::svg(
        &format!("roomcast bench soak, {} s", config.duration.as_secs()),
        &[chart::Series {
            points: p99,
            colour: "#c0392b",
            label: "p99 per interval (ms)",
        }],
        &[
            chart::Series {
                points: rss,
                colour: "#2c3e50",
                label: "resident memory (MiB)",
            },
            chart::Series {
                points: heap,
                colour: "#27ae60",
                label: "live heap (MiB)",
            },
            chart::Series {
                points: conns,
                colour: "#8e44ad",
                label: "open connections (thousands)",
            },
        ],
        t_max,
    );
    let _ = std::fs::write(path, svg);
}
