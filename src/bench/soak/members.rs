//! Well-behaved members: each holds one connection for the whole run, in
//! one of the soak's rooms, publishes at a steady rate, and checks every
//! delivery: `seq` without gaps, no duplicate, each publisher's messages in
//! its own order, none missing at the end; latency from the send time each
//! message carries.

use super::Shared;
use crate::bench::histogram::Histogram;
use crate::client::{Client, ClientConfig, Message};
use crate::protocol::CloseCode;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// One member's part in the run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub room: usize,
    /// Its number among all members (publisher id in message contents).
    pub gid: usize,
    /// Members of its room, by gid.
    pub peers: std::ops::Range<usize>,
    pub url: String,
    /// Messages per second it publishes.
    pub rate: f64,
    /// Connected through the fault proxy (its latency is reported apart).
    pub proxied: bool,
    /// Members per room: the last one of each room goes through the fault
    /// proxy, and what it sends is delayed by it too.
    pub per_room: usize,
    /// Keeps the room's log for checking recoveries.
    pub recorder: bool,
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub delivered: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub lost: u64,
    pub errors: Vec<String>,
    /// Latency of messages sent before / after the hostile load started.
    pub calm: Histogram,
    pub load: Histogram,
    /// Latency of messages that crossed the fault proxy.
    pub faulted: Histogram,
    pub proxied: bool,
}

/// Which messages of each publisher a member has seen.
struct Seen {
    /// Per publisher (offset from the room's first gid): seen flags by `k`.
    by_publisher: Vec<Vec<bool>>,
    max_k: Vec<Option<u64>>,
}

impl Seen {
    fn mark(&mut self, p: usize, k: u64, out: &mut Outcome) {
        let (Some(seen), Some(max)) = (self.by_publisher.get_mut(p), self.max_k.get_mut(p)) else {
            out.errors.push(format!("message from unknown publisher {p}"));
            return;
        };
        let k = k as usize;
        if seen.len() <= k {
            seen.resize(k + 1, false);
        }
        if seen[k] {
            out.duplicates += 1;
            return;
        }
        seen[k] = true;
        *max = Some(max.map_or(k as u64, |m| m.max(k as u64)));
    }

    fn missing(&self, published: &[u64]) -> u64 {
        self.by_publisher
            .iter()
            .zip(published)
            .map(|(seen, &n)| {
                (0..n as usize)
                    .filter(|&k| !seen.get(k).copied().unwrap_or(false))
                    .count() as u64
            })
            .sum()
    }
}

/// Whether member `gid` goes through the fault proxy.
pub fn proxied(gid: usize, per_room: usize) -> bool {
    per_room > 1 && gid % per_room == per_room - 1
}

pub fn room_name(room: usize) -> String {
    format!("soak-{room}")
}

fn send(client: &mut Client, value: &Value) -> Result<(), String> {
    client.send_text(&value.to_string()).map_err(|e| e.to_string())
}

/// Connects and joins; waits for every member at `ready`; then runs.
pub fn run(shared: Arc<Shared>, plan: Plan, ready: Arc<Barrier>) -> Outcome {
    let mut out = Outcome {
        proxied: plan.proxied,
        ..Outcome::default()
    };
    let joined = connect(&plan);
    ready.wait();
    let mut client = match joined {
        Ok(client) => client,
        Err(e) => {
            out.errors.push(e);
            return out;
        }
    };
    shared.opened();
    if let Err(e) = serve(&shared, &plan, &mut client, &mut out) {
        out.errors.push(e);
    }
    shared.closed();
    let _ = client.close(CloseCode::NORMAL, "soak done");
    out
}

fn connect(plan: &Plan) -> Result<Client, String> {
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let mut client = Client::connect(&plan.url, &config).map_err(|e| format!("member {}: {e}", plan.gid))?;
    send(&mut client, &json!({"type": "join", "room": room_name(plan.room)}))?;
    loop {
        match client.read_message_timeout(Duration::from_secs(20)) {
            Ok(Some(Message::Text(t))) if t.contains("\"joined\"") => return Ok(client),
            Ok(Some(_)) => continue,
            Ok(None) => return Err(format!("member {}: no joined", plan.gid)),
            Err(e) => return Err(format!("member {}: {e}", plan.gid)),
        }
    }
}

fn serve(shared: &Shared, plan: &Plan, client: &mut Client, out: &mut Outcome) -> Result<(), String> {
    let peers = plan.peers.len();
    let mut seen = Seen {
        by_publisher: vec![Vec::new(); peers],
        max_k: vec![None; peers],
    };
    let interval = Duration::from_secs_f64(1.0 / plan.rate.max(0.01));
    // Spread the publishers' beats over the interval.
    let mut next = shared.start + interval.mul_f64((plan.gid % 97) as f64 / 97.0);
    let mut k: u64 = 0;
    let mut last_seq: Option<u64> = None;
    let room = room_name(plan.room);
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let publishing = !shared.stop_publish.load(Ordering::SeqCst);
        if publishing && now >= next {
            let t = shared.start.elapsed().as_nanos() as u64;
            let content = json!({"p": plan.gid, "k": k, "t": t});
            send(client, &json!({"type": "broadcast", "room": room, "content": content}))?;
            k += 1;
            shared.published[plan.gid].store(k, Ordering::SeqCst);
            next += interval;
            if next < now {
                // Fell behind (a stall): skip beats rather than burst.
                next = now + interval;
            }
        }
        if !publishing {
            let deadline = *drain_deadline.get_or_insert(now + Duration::from_secs(10));
            let published: Vec<u64> = plan
                .peers
                .clone()
                .map(|g| shared.published[g].load(Ordering::SeqCst))
                .collect();
            if seen.missing(&published) == 0 || now >= deadline {
                out.lost = seen.missing(&published);
                return Ok(());
            }
        }
        let wait = if publishing {
            next.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50))
        } else {
            Duration::from_millis(50)
        };
        match client.read_message_timeout(wait.max(Duration::from_millis(1))) {
            Ok(Some(Message::Text(text))) => on_text(shared, plan, &text, &mut seen, &mut last_seq, out),
            Ok(Some(Message::Close(frame))) => {
                return Err(format!("member {}: closed by the server: {frame:?}", plan.gid));
            }
            Ok(Some(Message::Binary(_))) | Ok(None) => {}
            Err(e) => return Err(format!("member {}: {e}", plan.gid)),
        }
    }
}

fn on_text(shared: &Shared, plan: &Plan, text: &str, seen: &mut Seen, last_seq: &mut Option<u64>, out: &mut Outcome) {
    let Ok(event) = serde_json::from_str::<Value>(text) else {
        out.errors.push(format!("not JSON: {text}"));
        return;
    };
    match event["type"].as_str() {
        Some("message") => {}
        Some("error") => {
            out.errors.push(format!("member {}: {text}", plan.gid));
            return;
        }
        _ => return,
    }
    let now = shared.start.elapsed().as_nanos() as u64;
    let (Some(seq), Some(p), Some(k), Some(t)) = (
        event["seq"].as_u64(),
        event["content"]["p"].as_u64(),
        event["content"]["k"].as_u64(),
        event["content"]["t"].as_u64(),
    ) else {
        out.errors.push(format!("unexpected message {text}"));
        return;
    };
    out.delivered += 1;
    // A gap shows at the end as a missing message; an earlier seq after a
    // later one is an order violation (the same seq twice: a duplicate,
    // counted below).
    if last_seq.is_some_and(|last| seq < last) {
        out.out_of_order += 1;
    }
    *last_seq = Some(last_seq.map_or(seq, |l| l.max(seq)));
    let Some(offset) = (p as usize).checked_sub(plan.peers.start) else {
        out.errors.push(format!("message from another room's member {p}"));
        return;
    };
    seen.mark(offset, k, out);
    if plan.recorder {
        shared.room_logs[plan.room]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(seq, (p, k));
    }
    let latency_us = now.saturating_sub(t) / 1000;
    let load_from = shared.load_at.duration_since(shared.start).as_nanos() as u64;
    if plan.proxied || proxied(p as usize, plan.per_room) {
        // Through the proxy one way or the other: its faults are in it.
        out.faulted.record(latency_us);
        return;
    }
    if t < load_from {
        out.calm.record(latency_us);
    } else {
        out.load.record(latency_us);
    }
    shared.record_latency(t, latency_us);
}
