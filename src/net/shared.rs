//! What the event loops of one process share: admission (the connection
//! count and the per-address table) and every worker's counters.
//!
//! Admission is process-wide, not per worker: a client cannot get N times
//! its address's quota by landing on N workers. It is touched once per
//! accepted and once per released connection, never per message.

use super::per_ip::{self, PerIp};
use super::stats::{Stats, Totals};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Why a new connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` sockets are held by the process.
    Full,
    /// Its address holds `max_connections_per_ip` already.
    PerIp,
    /// Its address opened connections faster than `handshake_rate_per_ip`.
    Rate,
}

#[derive(Debug)]
pub struct Shared {
    /// Each worker's counters, by worker index.
    workers: Vec<Arc<Stats>>,
    /// Sockets held across all workers (handshaking, open or closing).
    held: AtomicUsize,
    per_ip: Mutex<PerIp>,
}

impl Shared {
    /// State for `workers` event loops started at `now`.
    pub fn new(workers: usize, now: Instant) -> Arc<Self> {
        Arc::new(Shared {
            workers: (0..workers.max(1)).map(|_| Arc::new(Stats::new(now))).collect(),
            held: AtomicUsize::new(0),
            per_ip: Mutex::default(),
        })
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Worker `index`'s counters.
    pub fn stats(&self, index: usize) -> &Arc<Stats> {
        &self.workers[index]
    }

    /// Every worker's counters, by worker index.
    pub fn per_worker(&self) -> impl Iterator<Item = &Stats> {
        self.workers.iter().map(|s| &**s)
    }

    /// The counters of all workers summed.
    pub fn totals(&self) -> Totals {
        let mut sum = Totals::default();
        for stats in &self.workers {
            sum.add(&stats.totals());
        }
        sum
    }

    /// When the process started serving.
    pub fn started(&self) -> Instant {
        self.workers[0].started
    }

    /// Counts a new socket from `ip`, or refuses it.
    pub fn admit(
        &self,
        ip: IpAddr,
        max_connections: usize,
        limits: &per_ip::Limits,
        now: Instant,
    ) -> Result<(), Refusal> {
        if self.held.fetch_add(1, Ordering::Relaxed) >= max_connections {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Full);
        }
        let verdict = self.per_ip().admit(ip, limits, now);
        verdict.map_err(|refusal| {
            self.held.fetch_sub(1, Ordering::Relaxed);
            match refusal {
                per_ip::Refusal::Connections => Refusal::PerIp,
                per_ip::Refusal::Rate => Refusal::Rate,
            }
        })
    }

    /// A socket admitted from `ip` is gone.
    pub fn release(&self, ip: IpAddr) {
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.per_ip().release(ip);
    }

    /// Forgets quiet addresses (called by every worker's housekeeping).
    pub fn prune(&self, limits: &per_ip::Limits, now: Instant) {
        self.per_ip().prune(limits, now);
    }

    fn per_ip(&self) -> std::sync::MutexGuard<'_, PerIp> {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_is_process_wide() {
        let shared = Shared::new(2, Instant::now());
        let limits = per_ip::Limits {
            max_connections: 0,
            rate: None,
        };
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let now = Instant::now();
        assert!(shared.admit(ip, 2, &limits, now).is_ok());
        assert!(shared.admit(ip, 2, &limits, now).is_ok());
        assert_eq!(shared.admit(ip, 2, &limits, now), Err(Refusal::Full));
        shared.release(ip);
        assert!(shared.admit(ip, 2, &limits, now).is_ok());
    }

    #[test]
    fn a_per_address_refusal_gives_its_slot_back() {
        let shared = Shared::new(1, Instant::now());
        let limits = per_ip::Limits {
            max_connections: 1,
            rate: None,
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        shared.admit(a, 2, &limits, now).unwrap();
        assert_eq!(shared.admit(a, 2, &limits, now), Err(Refusal::PerIp));
        assert!(
            shared.admit(b, 2, &limits, now).is_ok(),
            "the refused socket held no slot"
        );
    }
}
