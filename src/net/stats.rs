//! Counters kept by each event loop, read by `/stats` and `/metrics` from
//! any worker.
//!
//! Every counter has one writer, the worker that owns it, so a relaxed load
//! and store is enough to update it (a plain `mov` on x86-64: no locked
//! instruction on the per-message path), and any thread may read it.

use super::metrics::{Disconnects, Histogram, HistogramTotals, RTT_NS};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A counter with a single writer thread and any number of readers.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning thread may call this (a read-modify-write
    /// from two threads could lose an update).
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// Raises the value to `v` if it is lower (a high-water mark).
    #[inline]
    pub fn max(&self, v: u64) {
        if v > self.0.load(Relaxed) {
            self.0.store(v, Relaxed);
        }
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Defines the counters once: the live `Stats` of a worker and the plain
/// `Totals` a reader sums them into.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        #[derive(Debug)]
        pub struct Stats {
            pub started: Instant,
            $($(#[$doc])* pub $name: Counter,)*
            /// Protocol errors by the close code we failed the connection with
            /// (1002 protocol, 1007 bad payload, 1009 too big, ...). Rare: a mutex.
            pub protocol_error_codes: Mutex<BTreeMap<u16, u64>>,
            /// Handshakes rejected, by reason. Rare: a mutex.
            pub handshake_failures: Mutex<BTreeMap<&'static str, u64>>,
            /// WebSocket connections ended, by reason.
            pub disconnects: Disconnects,
            /// Ping-to-pong round trips (ns).
            pub ping_rtt: Histogram,
        }

        /// The counters of one or more workers, read at one moment.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Totals {
            $(pub $name: u64,)*
            pub protocol_error_codes: BTreeMap<u16, u64>,
            pub handshake_failures: BTreeMap<&'static str, u64>,
            /// By `Disconnect as usize`.
            pub disconnects: Vec<u64>,
            pub ping_rtt: HistogramTotals,
        }

        impl Stats {
            pub fn new(now: Instant) -> Self {
                Stats {
                    started: now,
                    $($name: Counter::default(),)*
                    protocol_error_codes: Mutex::default(),
                    handshake_failures: Mutex::default(),
                    disconnects: Disconnects::default(),
                    ping_rtt: Histogram::new(RTT_NS),
                }
            }

            /// The counters as they are now.
            pub fn totals(&self) -> Totals {
                Totals {
                    $($name: self.$name.get(),)*
                    protocol_error_codes: lock(&self.protocol_error_codes).clone(),
                    handshake_failures: lock(&self.handshake_failures).clone(),
                    disconnects: self.disconnects.totals(),
                    ping_rtt: self.ping_rtt.totals(),
                }
            }
        }

        impl Totals {
            /// Adds another worker's counters to these.
            pub fn add(&mut self, other: &Totals) {
                $(self.$name += other.$name;)*
                for (k, v) in &other.protocol_error_codes {
                    *self.protocol_error_codes.entry(*k).or_default() += v;
                }
                for (k, v) in &other.handshake_failures {
                    *self.handshake_failures.entry(k).or_default() += v;
                }
                self.disconnects.resize(other.disconnects.len().max(self.disconnects.len()), 0);
                for (a, b) in self.disconnects.iter_mut().zip(&other.disconnects) {
                    *a += b;
                }
                self.ping_rtt.add(&other.ping_rtt);
            }
        }
    };
}

counters! {
    /// WebSocket connections opened (plain HTTP requests are not counted).
    connections_total,
    /// WebSocket connections open now.
    connections_active,
    messages_in,
    messages_out,
    bytes_in,
    bytes_out,
    /// Data messages dropped under the `drop` overflow policy.
    dropped_messages,
    /// Connections closed under the `close` overflow policy.
    slow_consumer_closes,
    /// Connections closed for protocol errors.
    protocol_errors,
    /// Dropped after an unanswered ping.
    dead_peers,
    idle_closes,
    handshake_timeouts,
    /// Connections refused because `max_connections` was reached.
    rejected_full,
    /// Connections refused at `max_connections_per_ip`.
    rejected_per_ip,
    /// Connections refused at `handshake_rate_per_ip`.
    rejected_handshake_rate,
    /// Connections closed for sending pings beyond `ping_rate`.
    ping_flood_closes,
    /// Bytes waiting in send queues now (a gauge).
    queued_bytes,
    /// The most `queued_bytes` has been (a high-water mark; summed over
    /// workers it bounds the process's peak).
    queued_bytes_peak,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Stats {
    pub fn handshake_failed(&self, reason: &'static str) {
        *lock(&self.handshake_failures).entry(reason).or_default() += 1;
    }

    /// `n` bytes joined a send queue.
    #[inline]
    pub fn queued(&self, n: usize) {
        self.queued_bytes.add(n as u64);
        self.queued_bytes_peak.max(self.queued_bytes.get());
    }

    pub fn protocol_error(&self, code: u16) {
        self.protocol_errors.inc();
        *lock(&self.protocol_error_codes).entry(code).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers() {
        let now = Instant::now();
        let (a, b) = (Stats::new(now), Stats::new(now));
        a.messages_in.add(3);
        b.messages_in.inc();
        b.connections_active.inc();
        b.connections_active.inc();
        b.connections_active.sub(1);
        a.protocol_error(1009);
        b.protocol_error(1009);
        b.handshake_failed("x");
        let mut sum = a.totals();
        sum.add(&b.totals());
        assert_eq!(sum.messages_in, 4);
        assert_eq!(sum.connections_active, 1);
        assert_eq!(sum.protocol_errors, 2);
        assert_eq!(sum.protocol_error_codes[&1009], 2);
        assert_eq!(sum.handshake_failures["x"], 1);
    }
}
