//! Counters kept by the event loop, read by `/stats` and `/metrics`.

use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// WebSocket connections opened (plain HTTP requests are not counted).
    pub connections_total: u64,
    /// WebSocket connections open now.
    pub connections_active: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Data messages dropped under the `drop` overflow policy.
    pub dropped_messages: u64,
    /// Connections closed under the `close` overflow policy.
    pub slow_consumer_closes: u64,
    /// Connections closed for protocol errors, by close code.
    pub protocol_errors: u64,
    /// Dropped after an unanswered ping.
    pub dead_peers: u64,
    pub idle_closes: u64,
    pub handshake_timeouts: u64,
    /// Connections refused because `max_connections` was reached.
    pub rejected_full: u64,
    /// Connections refused at `max_connections_per_ip`.
    pub rejected_per_ip: u64,
    /// Connections refused at `handshake_rate_per_ip`.
    pub rejected_handshake_rate: u64,
    /// Connections closed for sending pings beyond `ping_rate`.
    pub ping_flood_closes: u64,
    /// Protocol errors by the close code we failed the connection with
    /// (1002 protocol, 1007 bad payload, 1009 too big, ...).
    pub protocol_error_codes: BTreeMap<u16, u64>,
    /// Handshakes rejected, by reason.
    pub handshake_failures: BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn new(now: Instant) -> Self {
        Stats {
            started: now,
            connections_total: 0,
            connections_active: 0,
            messages_in: 0,
            messages_out: 0,
            bytes_in: 0,
            bytes_out: 0,
            dropped_messages: 0,
            slow_consumer_closes: 0,
            protocol_errors: 0,
            dead_peers: 0,
            idle_closes: 0,
            handshake_timeouts: 0,
            rejected_full: 0,
            rejected_per_ip: 0,
            rejected_handshake_rate: 0,
            ping_flood_closes: 0,
            protocol_error_codes: BTreeMap::new(),
            handshake_failures: BTreeMap::new(),
        }
    }

    pub fn handshake_failed(&mut self, reason: &'static str) {
        *self.handshake_failures.entry(reason).or_default() += 1;
    }
}
