//! Churn: connections opening and closing all the time, ending every way a
//! real client's connection ends (close handshake, bare FIN, reset, a
//! reset or a silent half-open peer injected by the proxy), and coming back
//! with `join {since, epoch}`: the replay must be exactly what was missed.
//! Crowds: bursts of idle connections up to the descriptor budget, from
//! many source addresses (the per-address limits stay on).

use super::Shared;
use super::members::room_name;
use super::raw;
use crate::client::{Client, ClientConfig, Message};
use crate::protocol::CloseCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Outcome {
    pub connections: u64,
    pub recovered_ok: u64,
    pub recovered_failed: u64,
    /// Replayed messages, to compare with the rooms' logs at the end:
    /// (room, seq, publisher, k).
    pub replayed: Vec<(usize, u64, u64, u64)>,
    pub failures: Vec<String>,
}

/// Where a churning connection goes.
#[derive(Clone, Debug)]
pub struct Routes {
    pub direct: String,
    /// Through a proxy that resets the connection after a while.
    pub resetting: Option<String>,
    /// Through a proxy that goes silent (half-open) after a while.
    pub blackholing: Option<String>,
}

/// A position in a room: what was seen last, in which epoch, and when.
#[derive(Clone, Debug)]
struct Position {
    epoch: String,
    seq: u64,
    at: Instant,
}

/// A churner rejoins with `since` only from a position this recent: well
/// within what the rooms' history holds at the soak's rates (100 messages
/// at 20 per second), so that `recovered: false` is always a failure.
const FRESH: Duration = Duration::from_secs(2);

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

pub fn churn(shared: &Shared, id: usize, routes: &Routes) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (id as u64 + 1).wrapping_mul(0x1234_5678_9ABC);
    let mut positions: HashMap<usize, Position> = HashMap::new();
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(20),
        ..ClientConfig::default()
    };
    let mut n = 0u64;
    let mut last_room: Option<usize> = None;
    while !shared.stop_load.load(Ordering::SeqCst) {
        n += 1;
        // Mostly back to the room just left (recovery), sometimes elsewhere.
        let room = match last_room {
            Some(r) if !n.is_multiple_of(5) => r,
            _ => (xorshift(&mut rng) % shared.rooms as u64) as usize,
        };
        last_room = Some(room);
        let (base, proxied) = match n % 29 {
            7 if routes.resetting.is_some() => (routes.resetting.as_deref().unwrap_or_default(), true),
            13 if routes.blackholing.is_some() => (routes.blackholing.as_deref().unwrap_or_default(), true),
            _ => (routes.direct.as_str(), false),
        };
        let url = format!("{base}?username=churn{id}");
        let mut client = match Client::connect(&url, &config) {
            Ok(c) => c,
            Err(e) => {
                out.failures.push(format!("churn {id}: connect: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        out.connections += 1;
        shared.opened();
        let from = positions.get(&room).filter(|p| p.at.elapsed() < FRESH);
        let result = visit(&mut client, room, from, &mut out);
        shared.closed();
        match result {
            Ok(Some(position)) => {
                positions.insert(room, position);
            }
            Ok(None) => {}
            // A proxied connection may be cut by its fault at any moment;
            // its position is simply not advanced.
            Err(_) if proxied => {}
            Err(e) => out.failures.push(format!("churn {id}: {e}")),
        }
        match n % 4 {
            0 => {
                let _ = client.close(CloseCode::NORMAL, "churn");
            }
            1 => {
                let _ = client.abort(true);
            }
            2 => {
                let _ = client.abort(false);
            }
            // Vanish: drop the socket (a FIN the server sees as EOF).
            _ => drop(client),
        }
        // Offline for a while, so that there is something to recover.
        std::thread::sleep(Duration::from_millis(10 + xorshift(&mut rng) % 150));
    }
    out
}

fn send(client: &mut Client, value: &Value) -> Result<(), String> {
    client.send_text(&value.to_string()).map_err(|e| e.to_string())
}

fn next_event(client: &mut Client, deadline: Instant) -> Result<Option<Value>, String> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match client.read_message_timeout(left).map_err(|e| e.to_string())? {
            Some(Message::Text(t)) => return serde_json::from_str(&t).map(Some).map_err(|e| e.to_string()),
            Some(Message::Close(f)) => return Err(format!("closed by the server: {f:?}")),
            Some(Message::Binary(_)) => continue,
            None => return Ok(None),
        }
    }
}

/// Joins (recovering from `from`), checks the replay, reads live for a
/// moment; returns where it got to.
fn visit(
    client: &mut Client,
    room: usize,
    from: Option<&Position>,
    out: &mut Outcome,
) -> Result<Option<Position>, String> {
    let name = room_name(room);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut join = json!({"type": "join", "room": name});
    if let Some(p) = from {
        join["since"] = json!(p.seq);
        join["epoch"] = json!(p.epoch);
    }
    send(client, &join)?;
    let joined = loop {
        match next_event(client, deadline)? {
            Some(e) if e["type"] == "joined" => break e,
            Some(_) => continue,
            None => return Err("no joined".into()),
        }
    };
    let epoch = joined["epoch"].as_str().unwrap_or_default().to_owned();
    let head = joined["seq"].as_u64().unwrap_or(0);
    let mut last = head;
    if let Some(p) = from {
        if joined["recovered"] != true || epoch != p.epoch {
            out.recovered_failed += 1;
            out.failures
                .push(format!("{name}: rejoin since {} in {}: {joined}", p.seq, p.epoch));
            return Ok(None);
        }
        // The replay: exactly since+1 ..= head, in order, then live.
        let mut expected = p.seq + 1;
        while expected <= head {
            let Some(event) = next_event(client, deadline)? else {
                return Err(format!("{name}: replay stopped at {expected} of {head}"));
            };
            if event["type"] != "message" {
                continue;
            }
            let seq = event["seq"].as_u64().unwrap_or(0);
            if seq != expected {
                out.recovered_failed += 1;
                out.failures
                    .push(format!("{name}: replay gave seq {seq}, expected {expected}"));
                return Ok(None);
            }
            let c = &event["content"];
            out.replayed.push((
                room,
                seq,
                c["p"].as_u64().unwrap_or(u64::MAX),
                c["k"].as_u64().unwrap_or(u64::MAX),
            ));
            expected += 1;
        }
        out.recovered_ok += 1;
    }
    // Live for a moment: still gapless.
    let until = Instant::now() + Duration::from_millis(30 + (head % 7) * 20);
    while let Some(event) = next_event(client, until)? {
        if event["type"] != "message" {
            continue;
        }
        let seq = event["seq"].as_u64().unwrap_or(0);
        if seq != last + 1 {
            out.failures.push(format!("{name}: live seq {seq} after {last}"));
            return Ok(None);
        }
        last = seq;
    }
    Ok(Some(Position {
        epoch,
        seq: last,
        at: Instant::now(),
    }))
}

/// Crowds: every `every`, `size` idle connections from many source
/// addresses (127.1.x.y, at most `per_address` each), held `hold`, closed
/// half by reset and half by FIN. Each must get its 101.
pub fn crowds(shared: &Shared, server: SocketAddr, size: usize, every: Duration, hold: Duration) -> Outcome {
    let mut out = Outcome::default();
    let per_address = 50usize;
    let mut round = 0u32;
    let mut next = Instant::now();
    while !shared.stop_load.load(Ordering::SeqCst) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        next = Instant::now() + every;
        round += 1;
        let mut held = Vec::with_capacity(size);
        for i in 0..size {
            let n = i / per_address;
            let source = Ipv4Addr::new(127, 1 + (round % 2) as u8, (n / 250) as u8, (n % 250) as u8 + 1);
            let opened = raw::connect(server, Some(source), Duration::from_secs(10)).and_then(|mut s| {
                let (status, head) = raw::upgrade(&mut s, &format!("/ws?username=crowd{i}"), "")?;
                if status == 101 {
                    Ok(s)
                } else {
                    Err(std::io::Error::other(format!(
                        "status {status}: {}",
                        head.lines().next().unwrap_or("")
                    )))
                }
            });
            match opened {
                Ok(s) => {
                    out.connections += 1;
                    shared.opened();
                    held.push(s);
                }
                Err(e) => {
                    out.failures.push(format!("crowd {round}: connection {i}: {e}"));
                    break;
                }
            }
            if shared.stop_load.load(Ordering::SeqCst) {
                break;
            }
        }
        std::thread::sleep(hold);
        for (i, s) in held.into_iter().enumerate() {
            if i % 2 == 0 {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            }
            drop(s);
            shared.closed();
        }
    }
    out
}
