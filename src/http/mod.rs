//! Plain HTTP on the WebSocket port: `/health`, `/stats` (JSON) and
//! `/metrics` (Prometheus text exposition format 0.0.4); the chat page
//! and its JavaScript client in `demo`; the publish API's wire format in
//! `api`.

pub mod api;
pub mod demo;
pub mod process;

use crate::net::Totals;
use crate::net::metrics::{Disconnect, HistogramTotals};
use crate::protocol::handshake::server::http_response;
use crate::rooms::RoomTotals;
use crate::store::StoreHealth;
use std::fmt::Write;
use std::time::Instant;

/// One worker's share, for `/stats`' `workers` and `/metrics`' `worker` label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerSnapshot {
    pub connections_active: u64,
    pub connections_total: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    /// Rooms with members that this worker owns.
    pub rooms: u64,
    /// Memberships of this worker's connections.
    pub members: u64,
}

/// Everything `/stats` and `/metrics` report, gathered at request time
/// from every worker.
#[derive(Debug)]
pub struct Snapshot {
    /// All workers' event-loop counters, summed.
    pub net: Totals,
    /// The rooms with the most members (as of the last second), largest first.
    pub top_rooms: Vec<(crate::engine::Name, u64)>,
    pub started: Instant,
    pub now: Instant,
    pub rooms: u64,
    pub members: u64,
    pub counters: RoomTotals,
    /// Messages per second in and out since the previous snapshot.
    pub rates: (f64, f64),
    pub heap_bytes: Option<usize>,
    pub draining: bool,
    pub workers: Vec<WorkerSnapshot>,
    pub store: StoreHealth,
}

/// Every abuse limit and how often it was hit, under one name each: the
/// `limit` label of `roomcast_limit_hits_total` and the keys of `/stats`'
/// `limits` object.
fn limit_hits(s: &Snapshot) -> [(&'static str, u64); 12] {
    let n = &s.net;
    let failures = |reason: &str| n.handshake_failures.get(reason).copied().unwrap_or(0);
    let closes = |code| n.protocol_error_codes.get(&code).copied().unwrap_or(0);
    [
        ("max_connections", n.rejected_full),
        ("connections_per_ip", n.rejected_per_ip),
        ("handshake_rate_per_ip", n.rejected_handshake_rate),
        ("max_head_size", failures("request head too large")),
        ("handshake_timeout", n.handshake_timeouts),
        ("max_message_size", closes(1009)),
        ("ping_rate", n.ping_flood_closes),
        ("message_rate", s.counters.rate_limited),
        ("message_rate_close", s.counters.rate_limit_closes),
        ("rooms_per_connection", s.counters.too_many_rooms),
        ("send_queue", n.slow_consumer_closes + n.dropped_messages),
        ("token_expiry", s.counters.token_expired_closes),
    ]
}

fn json_map<K: std::fmt::Display>(pairs: impl Iterator<Item = (K, u64)>) -> String {
    let items: Vec<String> = pairs
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.to_string())))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// A counter family with one label.
fn family(out: &mut String, name: &str, help: &str, label: &str, values: Vec<(String, u64)>) {
    let _ = writeln!(out, "# HELP roomcast_{name} {help}\n# TYPE roomcast_{name} counter");
    for (value, count) in values {
        let _ = writeln!(out, "roomcast_{name}{{{label}=\"{value}\"}} {count}");
    }
}

/// (reason label, count) for every disconnect reason.
fn disconnects(n: &Totals) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    Disconnect::ALL
        .iter()
        .map(|d| (d.label(), n.disconnects.get(*d as usize).copied().unwrap_or(0)))
}

/// A histogram in the text exposition format: cumulative `_bucket`s with
/// `le` labels, then `_sum` and `_count`. `scale` turns the stored integer
/// unit into the metric's (1e9 for nanoseconds into seconds).
fn histogram(out: &mut String, name: &str, help: &str, h: &HistogramTotals, scale: f64) {
    let _ = writeln!(out, "# HELP roomcast_{name} {help}\n# TYPE roomcast_{name} histogram");
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(&h.counts) {
        cumulative += n;
        let _ = writeln!(
            out,
            "roomcast_{name}_bucket{{le=\"{}\"}} {cumulative}",
            *bound as f64 / scale
        );
    }
    let count = h.count();
    let _ = writeln!(out, "roomcast_{name}_bucket{{le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "roomcast_{name}_sum {}", h.sum as f64 / scale);
    let _ = writeln!(out, "roomcast_{name}_count {count}");
}

fn process_metrics(out: &mut String) {
    let Some(p) = process::read() else { return };
    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    gauge(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpu_seconds.to_string(),
    );
    gauge(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident_bytes.to_string(),
    );
    gauge(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds.to_string(),
    );
    if let Some(max) = p.max_fds {
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    gauge(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.start_time_seconds.to_string(),
    );
}

fn store_json(h: &StoreHealth) -> String {
    format!(
        "{{\"degraded\":{},\"errors\":{},\"persisted\":{}}}",
        h.degraded
            .as_deref()
            .map_or(serde_json::Value::Null, serde_json::Value::from),
        h.errors,
        h.persisted
    )
}

fn workers_json(workers: &[WorkerSnapshot]) -> String {
    let items: Vec<String> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                concat!(
                    "{{\"worker\":{},\"connections_active\":{},\"connections_total\":{},",
                    "\"messages_in\":{},\"messages_out\":{},\"rooms\":{},\"members\":{}}}"
                ),
                i, w.connections_active, w.connections_total, w.messages_in, w.messages_out, w.rooms, w.members
            )
        })
        .collect();
    items.join(",")
}

pub fn health(s: &Snapshot) -> Vec<u8> {
    let (status, word) = if s.draining {
        (503, "draining")
    } else if s.store.degraded.is_some() {
        // Still serving live messages: degraded, not down.
        (200, "degraded")
    } else {
        (200, "ok")
    };
    let store = s.store.degraded.as_deref().map_or(String::new(), |e| {
        format!(",\"store_error\":{}", serde_json::Value::from(e))
    });
    let body = format!(
        "{{\"status\":\"{word}\",\"connections\":{},\"workers\":{},\"uptime_seconds\":{}{store}}}",
        s.net.connections_active,
        s.workers.len(),
        s.now.duration_since(s.started).as_secs()
    );
    http_response(
        status,
        "Cache-Control: no-store\r\n",
        "application/json",
        body.as_bytes(),
    )
}

pub fn stats(s: &Snapshot) -> Vec<u8> {
    let n = &s.net;
    let failures = json_map(n.handshake_failures.iter().map(|(k, v)| (k, *v)));
    let codes = json_map(n.protocol_error_codes.iter().map(|(k, v)| (k, *v)));
    let limits = json_map(limit_hits(s).into_iter());
    let c = &s.counters;
    let body = format!(
        concat!(
            "{{\"connections_total\":{},\"connections_active\":{},",
            "\"messages_in\":{},\"messages_out\":{},\"bytes_in\":{},\"bytes_out\":{},",
            "\"messages_in_per_second\":{:.1},\"messages_out_per_second\":{:.1},",
            "\"rooms\":{},\"members\":{},\"dropped_messages\":{},\"slow_consumer_closes\":{},",
            "\"rate_limited\":{},\"protocol_errors\":{},\"dead_peers\":{},\"idle_closes\":{},",
            "\"handshake_timeouts\":{},\"rejected_full\":{},\"handshake_failures\":{},",
            "\"protocol_errors_by_code\":{},\"limits\":{},\"not_authorized\":{},\"token_refreshes\":{},",
            "\"unavailable\":{},\"deferred_commands\":{},\"store\":{},",
            "\"send_queue_bytes\":{},\"send_queue_bytes_peak\":{},\"rooms_loaded\":{},",
            "\"disconnects\":{},\"top_rooms\":[{}],\"rejected\":{},",
            "\"heap_bytes\":{},\"uptime_seconds\":{},\"workers\":[{}]}}"
        ),
        n.connections_total,
        n.connections_active,
        n.messages_in,
        n.messages_out,
        n.bytes_in,
        n.bytes_out,
        s.rates.0,
        s.rates.1,
        s.rooms,
        s.members,
        n.dropped_messages,
        n.slow_consumer_closes,
        c.rate_limited,
        n.protocol_errors,
        n.dead_peers,
        n.idle_closes,
        n.handshake_timeouts,
        n.rejected_full,
        failures,
        codes,
        limits,
        c.not_authorized,
        c.refreshes,
        c.unavailable,
        c.deferred,
        store_json(&s.store),
        n.queued_bytes,
        n.queued_bytes_peak,
        c.rooms_loaded,
        json_map(disconnects(n)),
        s.top_rooms
            .iter()
            .map(|(room, members)| format!(
                "{{\"room\":{},\"members\":{members}}}",
                serde_json::Value::from(&**room)
            ))
            .collect::<Vec<_>>()
            .join(","),
        c.rejected,
        s.heap_bytes.map_or("null".to_owned(), |b| b.to_string()),
        s.now.duration_since(s.started).as_secs(),
        workers_json(&s.workers),
    );
    http_response(200, "Cache-Control: no-store\r\n", "application/json", body.as_bytes())
}

pub fn metrics(s: &Snapshot) -> Vec<u8> {
    let n = &s.net;
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = write!(
            out,
            "# HELP roomcast_{name} {help}\n# TYPE roomcast_{name} {kind}\nroomcast_{name} {value}\n"
        );
    };
    metric(
        "connections_total",
        "counter",
        "WebSocket connections accepted.",
        n.connections_total.to_string(),
    );
    metric(
        "connections_active",
        "gauge",
        "Open WebSocket connections.",
        n.connections_active.to_string(),
    );
    metric(
        "messages_in_total",
        "counter",
        "Messages received.",
        n.messages_in.to_string(),
    );
    metric(
        "messages_out_total",
        "counter",
        "Messages queued to clients.",
        n.messages_out.to_string(),
    );
    metric(
        "bytes_in_total",
        "counter",
        "Bytes read from sockets.",
        n.bytes_in.to_string(),
    );
    metric(
        "bytes_out_total",
        "counter",
        "Bytes written to sockets.",
        n.bytes_out.to_string(),
    );
    metric("rooms", "gauge", "Rooms with at least one member.", s.rooms.to_string());
    metric(
        "room_members",
        "gauge",
        "Memberships across all rooms.",
        s.members.to_string(),
    );
    metric(
        "dropped_messages_total",
        "counter",
        "Messages dropped for slow consumers.",
        n.dropped_messages.to_string(),
    );
    metric(
        "slow_consumer_closes_total",
        "counter",
        "Slow consumers closed (1008).",
        n.slow_consumer_closes.to_string(),
    );
    metric(
        "rate_limited_total",
        "counter",
        "Messages refused by rate limits.",
        s.counters.rate_limited.to_string(),
    );
    metric(
        "protocol_errors_total",
        "counter",
        "Connections failed for protocol errors.",
        n.protocol_errors.to_string(),
    );
    metric(
        "dead_peers_total",
        "counter",
        "Peers dropped for not answering pings.",
        n.dead_peers.to_string(),
    );
    metric(
        "idle_closes_total",
        "counter",
        "Connections closed for idleness.",
        n.idle_closes.to_string(),
    );
    metric(
        "handshake_timeouts_total",
        "counter",
        "Handshakes that did not finish in time.",
        n.handshake_timeouts.to_string(),
    );
    metric(
        "rejected_full_total",
        "counter",
        "Connections refused at the connection limit.",
        n.rejected_full.to_string(),
    );
    metric(
        "send_queue_bytes",
        "gauge",
        "Bytes waiting in send queues.",
        n.queued_bytes.to_string(),
    );
    metric(
        "send_queue_bytes_peak",
        "gauge",
        "The most bytes each worker's send queues held at once, summed over workers.",
        n.queued_bytes_peak.to_string(),
    );
    metric(
        "heap_bytes",
        "gauge",
        "Live heap bytes.",
        s.heap_bytes.map_or("NaN".to_owned(), |b| b.to_string()),
    );
    metric(
        "uptime_seconds",
        "gauge",
        "Seconds since start.",
        s.now.duration_since(s.started).as_secs().to_string(),
    );
    out.push_str("# HELP roomcast_handshake_failures_total Upgrade requests refused, by reason.\n");
    out.push_str("# TYPE roomcast_handshake_failures_total counter\n");
    for (reason, count) in &n.handshake_failures {
        let _ = writeln!(out, "roomcast_handshake_failures_total{{reason=\"{reason}\"}} {count}");
    }
    family(
        &mut out,
        "protocol_errors_by_code_total",
        "Connections failed for protocol errors, by close code.",
        "code",
        n.protocol_error_codes
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect(),
    );
    family(
        &mut out,
        "limit_hits_total",
        "Times each abuse limit refused a connection, message or command.",
        "limit",
        limit_hits(s).iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    );
    let _ = write!(
        out,
        concat!(
            "# HELP roomcast_not_authorized_total Commands refused by the credential's room grants.\n",
            "# TYPE roomcast_not_authorized_total counter\nroomcast_not_authorized_total {}\n",
            "# HELP roomcast_token_refreshes_total Tokens renewed with `refresh`.\n",
            "# TYPE roomcast_token_refreshes_total counter\nroomcast_token_refreshes_total {}\n"
        ),
        s.counters.not_authorized, s.counters.refreshes
    );
    let _ = write!(
        out,
        concat!(
            "# HELP roomcast_unavailable_total Commands refused because shared room state could not be reached.\n",
            "# TYPE roomcast_unavailable_total counter\nroomcast_unavailable_total {}\n",
            "# HELP roomcast_deferred_commands_total Commands held back to keep a connection's replies in order.\n",
            "# TYPE roomcast_deferred_commands_total counter\nroomcast_deferred_commands_total {}\n",
            "# HELP roomcast_store_errors_total History store write or read errors.\n",
            "# TYPE roomcast_store_errors_total counter\nroomcast_store_errors_total {}\n",
            "# HELP roomcast_store_persisted_total Messages durably written by the history store.\n",
            "# TYPE roomcast_store_persisted_total counter\nroomcast_store_persisted_total {}\n",
            "# HELP roomcast_store_degraded 1 while the history store is failing.\n",
            "# TYPE roomcast_store_degraded gauge\nroomcast_store_degraded {}\n",
        ),
        s.counters.unavailable,
        s.counters.deferred,
        s.store.errors,
        s.store.persisted,
        u8::from(s.store.degraded.is_some())
    );
    type PerWorker = (&'static str, &'static str, &'static str, fn(&WorkerSnapshot) -> u64);
    family(
        &mut out,
        "disconnects_total",
        "WebSocket connections ended, by reason.",
        "reason",
        disconnects(n).map(|(k, v)| (k.to_owned(), v)).collect(),
    );
    histogram(
        &mut out,
        "ping_rtt_seconds",
        "Ping-to-pong round trips of heartbeats.",
        &n.ping_rtt,
        1e9,
    );
    histogram(
        &mut out,
        "publish_enqueue_seconds",
        "From a room message being numbered to its being queued for a worker's members.",
        &s.counters.enqueue,
        1e9,
    );
    histogram(
        &mut out,
        "fanout_recipients",
        "Members one room message reached on one worker.",
        &s.counters.fanout,
        1.0,
    );
    let _ = write!(
        out,
        concat!(
            "# HELP roomcast_rejected_total Messages refused by the embedding program's hooks.\n",
            "# TYPE roomcast_rejected_total counter\nroomcast_rejected_total {}\n",
            "# HELP roomcast_rooms_loaded Rooms held in memory (with members, or being loaded).\n",
            "# TYPE roomcast_rooms_loaded gauge\nroomcast_rooms_loaded {}\n",
        ),
        s.counters.rejected, s.counters.rooms_loaded
    );
    process_metrics(&mut out);
    let per_worker: [PerWorker; 6] = [
        (
            "worker_connections_active",
            "gauge",
            "Open WebSocket connections, per worker.",
            |w| w.connections_active,
        ),
        (
            "worker_connections_total",
            "counter",
            "WebSocket connections accepted, per worker.",
            |w| w.connections_total,
        ),
        (
            "worker_messages_in_total",
            "counter",
            "Messages received, per worker.",
            |w| w.messages_in,
        ),
        (
            "worker_messages_out_total",
            "counter",
            "Messages queued to clients, per worker.",
            |w| w.messages_out,
        ),
        (
            "worker_rooms",
            "gauge",
            "Rooms with members owned by the worker.",
            |w| w.rooms,
        ),
        (
            "worker_room_members",
            "gauge",
            "Room memberships of the worker's connections.",
            |w| w.members,
        ),
    ];
    for (name, kind, help, value) in per_worker {
        let _ = writeln!(out, "# HELP roomcast_{name} {help}\n# TYPE roomcast_{name} {kind}");
        for (i, w) in s.workers.iter().enumerate() {
            let _ = writeln!(out, "roomcast_{name}{{worker=\"{i}\"}} {}", value(w));
        }
    }
    http_response(200, "", "text/plain; version=0.0.4; charset=utf-8", out.as_bytes())
}
