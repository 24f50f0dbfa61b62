//! Histograms and disconnect reasons: the measurements `/metrics` exposes
//! beyond plain counters. Like the counters, each has one writer (its
//! worker) and any number of readers.

use super::stats::Counter;

/// A histogram with fixed bucket bounds, for Prometheus' `_bucket` /
/// `_sum` / `_count` families. Values are integers in the histogram's unit
/// (nanoseconds for times, plain counts for sizes).
#[derive(Debug)]
pub struct Histogram {
    pub bounds: &'static [u64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: Box<[Counter]>,
    sum: Counter,
}

/// A histogram read at one moment, of one or more workers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramTotals {
    pub bounds: &'static [u64],
    /// Per bucket (not cumulative); the last one is `+Inf`.
    pub counts: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| Counter::default()).collect(),
            sum: Counter::default(),
        }
    }

    /// Records `v` (only the owning worker may call this).
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        self.counts[i].inc();
        self.sum.add(v);
    }

    pub fn totals(&self) -> HistogramTotals {
        HistogramTotals {
            bounds: self.bounds,
            counts: self.counts.iter().map(Counter::get).collect(),
            sum: self.sum.get(),
        }
    }
}

impl HistogramTotals {
    pub fn add(&mut self, other: &HistogramTotals) {
        if self.counts.is_empty() {
            *self = other.clone();
            return;
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Ping-to-pong round trips, in nanoseconds: 0.5 ms to 10 s.
pub const RTT_NS: &[u64] = &[
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// From a message being numbered to its being queued for a worker's
/// members, in nanoseconds: 10 µs to 1 s.
pub const ENQUEUE_NS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
];

/// Recipients of one room event on one worker.
pub const FANOUT: &[u64] = &[1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000];

/// Why a WebSocket connection ended: the `reason` label of
/// `roomcast_disconnects_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Disconnect {
    /// The client closed with 1000.
    ClientNormal,
    /// The client closed with 1001 (going away: page closed, app backgrounded).
    ClientGoingAway,
    /// The client closed with another 1xxx code.
    ClientError,
    /// The client closed with an application code (3000-4999).
    ClientApplication,
    /// The client closed without a status code.
    ClientNoCode,
    /// TCP ended (FIN or reset) without a close frame.
    ConnectionLost,
    /// No pong within `--pong-timeout`.
    DeadPeer,
    /// `--idle-timeout`.
    Idle,
    /// Its send queue overflowed (`--overflow close`).
    SlowConsumer,
    /// It broke the protocol (1002, 1007, 1009, ...).
    ProtocolError,
    /// A policy: ping flood, rate-limit abuse, token expiry, a read-only
    /// member publishing (1008).
    Policy,
    /// The server is shutting down (1001).
    Shutdown,
    /// Closed by the application or its API with a 4000-4999 code.
    ServerKick,
    /// Closed by the server with another code (e.g. 1003 for binary on /ws).
    ServerClose,
}

impl Disconnect {
    pub const ALL: [Disconnect; 14] = [
        Disconnect::ClientNormal,
        Disconnect::ClientGoingAway,
        Disconnect::ClientError,
        Disconnect::ClientApplication,
        Disconnect::ClientNoCode,
        Disconnect::ConnectionLost,
        Disconnect::DeadPeer,
        Disconnect::Idle,
        Disconnect::SlowConsumer,
        Disconnect::ProtocolError,
        Disconnect::Policy,
        Disconnect::Shutdown,
        Disconnect::ServerKick,
        Disconnect::ServerClose,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Disconnect::ClientNormal => "client_normal",
            Disconnect::ClientGoingAway => "client_going_away",
            Disconnect::ClientError => "client_error",
            Disconnect::ClientApplication => "client_application",
            Disconnect::ClientNoCode => "client_no_code",
            Disconnect::ConnectionLost => "connection_lost",
            Disconnect::DeadPeer => "dead_peer",
            Disconnect::Idle => "idle",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::Policy => "policy",
            Disconnect::Shutdown => "shutdown",
            Disconnect::ServerKick => "server_kick",
            Disconnect::ServerClose => "server_close",
        }
    }

    /// The peer's close frame's code.
    pub fn from_peer(code: Option<u16>) -> Self {
        match code {
            None => Disconnect::ClientNoCode,
            Some(1000) => Disconnect::ClientNormal,
            Some(1001) => Disconnect::ClientGoingAway,
            Some(3000..=4999) => Disconnect::ClientApplication,
            Some(_) => Disconnect::ClientError,
        }
    }

    /// A close the server started, by code and reason text.
    pub fn from_local(code: u16, reason: &str, draining: bool) -> Self {
        match (code, reason) {
            (1001, _) if draining => Disconnect::Shutdown,
            (_, "slow consumer") => Disconnect::SlowConsumer,
            (_, "idle timeout") => Disconnect::Idle,
            (1008, _) => Disconnect::Policy,
            (4000..=4999, _) => Disconnect::ServerKick,
            _ => Disconnect::ServerClose,
        }
    }
}

/// Counts per disconnect reason.
#[derive(Debug)]
pub struct Disconnects(Box<[Counter]>);

impl Default for Disconnects {
    fn default() -> Self {
        Disconnects(Disconnect::ALL.iter().map(|_| Counter::default()).collect())
    }
}

impl Disconnects {
    pub fn inc(&self, why: Disconnect) {
        self.0[why as usize].inc();
    }

    pub fn totals(&self) -> Vec<u64> {
        self.0.iter().map(Counter::get).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_up_to_their_bound() {
        let h = Histogram::new(&[10, 100]);
        for v in [0, 10, 11, 100, 101, 5000] {
            h.observe(v);
        }
        let t = h.totals();
        assert_eq!(t.counts, [2, 2, 2], "<=10, <=100, +Inf");
        assert_eq!(t.sum, 5222);
        let mut sum = t.clone();
        sum.add(&t);
        assert_eq!((sum.count(), sum.counts[0]), (12, 4));
    }

    #[test]
    fn disconnect_labels_by_code_class() {
        assert_eq!(Disconnect::from_peer(Some(1000)), Disconnect::ClientNormal);
        assert_eq!(Disconnect::from_peer(Some(1011)), Disconnect::ClientError);
        assert_eq!(Disconnect::from_peer(Some(4321)), Disconnect::ClientApplication);
        assert_eq!(
            Disconnect::from_local(1001, "server shutting down", true),
            Disconnect::Shutdown
        );
        assert_eq!(
            Disconnect::from_local(1008, "slow consumer", false),
            Disconnect::SlowConsumer
        );
        assert_eq!(Disconnect::from_local(1008, "ping flood", false), Disconnect::Policy);
        assert_eq!(Disconnect::from_local(4001, "kicked", false), Disconnect::ServerKick);
        let labels: std::collections::HashSet<&str> = Disconnect::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels.len(), Disconnect::ALL.len());
        for (i, d) in Disconnect::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "ALL is in declaration order");
        }
    }
}
