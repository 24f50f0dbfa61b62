//! Per-address admission: open connections and new connections per second
//! for each client address, checked at `accept` before any byte is read.
//!
//! IPv6 clients are grouped by /64, the block one subscriber usually
//! holds, so a client cannot escape the limits by rotating addresses.

use super::rate::{RateLimit, TokenBucket, Verdict};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

/// Why an address was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It holds `max_connections_per_ip` connections already.
    Connections,
    /// It opened connections faster than `handshake_rate_per_ip`.
    Rate,
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections per address; 0 = unlimited.
    pub max_connections: usize,
    /// New connections per second per address; `None` = unlimited.
    pub rate: Option<RateLimit>,
}

#[derive(Debug)]
struct Entry {
    open: usize,
    bucket: Option<TokenBucket>,
}

#[derive(Debug, Default)]
pub struct PerIp {
    entries: HashMap<IpAddr, Entry>,
}

/// The key an address is counted under.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

impl PerIp {
    /// Counts a new connection from `ip`, or refuses it.
    pub fn admit(&mut self, ip: IpAddr, limits: &Limits, now: Instant) -> Result<(), Refusal> {
        if limits.max_connections == 0 && limits.rate.is_none() {
            return Ok(());
        }
        let entry = self.entries.entry(key(ip)).or_insert(Entry { open: 0, bucket: None });
        if let Some(rate) = &limits.rate {
            let bucket = entry.bucket.get_or_insert_with(|| TokenBucket::new(rate, now));
            if bucket.take(rate, now) != Verdict::Allow {
                return Err(Refusal::Rate);
            }
        }
        if limits.max_connections > 0 && entry.open >= limits.max_connections {
            return Err(Refusal::Connections);
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection admitted from `ip` is gone.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(entry) = self.entries.get_mut(&key(ip)) {
            entry.open = entry.open.saturating_sub(1);
        }
    }

    /// Forgets addresses with no connection and a full bucket.
    pub fn prune(&mut self, limits: &Limits, now: Instant) {
        self.entries.retain(|_, e| {
            e.open > 0
                || match (&e.bucket, &limits.rate) {
                    (Some(bucket), Some(rate)) => !bucket.is_full(rate, now),
                    _ => false,
                }
        });
        if self.entries.capacity() > 1024 && self.entries.len() < self.entries.capacity() / 4 {
            self.entries.shrink_to_fit();
        }
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn caps_open_connections_per_address() {
        let limits = Limits {
            max_connections: 2,
            rate: None,
        };
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut per_ip = PerIp::default();
        let now = Instant::now();
        assert!(per_ip.admit(a, &limits, now).is_ok() && per_ip.admit(a, &limits, now).is_ok());
        assert_eq!(per_ip.admit(a, &limits, now), Err(Refusal::Connections));
        assert!(per_ip.admit(b, &limits, now).is_ok(), "other addresses are unaffected");
        per_ip.release(a);
        assert!(per_ip.admit(a, &limits, now).is_ok());
        for _ in 0..2 {
            per_ip.release(a);
        }
        per_ip.release(b);
        per_ip.prune(&limits, now);
        assert_eq!(per_ip.tracked(), 0, "nothing is kept for gone clients");
    }

    #[test]
    fn limits_the_connection_rate_and_forgets_quiet_addresses() {
        let limits = Limits {
            max_connections: 0,
            rate: Some(RateLimit {
                per_second: 10.0,
                burst: 3.0,
            }),
        };
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut per_ip = PerIp::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            per_ip.admit(ip, &limits, t0).unwrap();
            per_ip.release(ip);
        }
        assert_eq!(per_ip.admit(ip, &limits, t0), Err(Refusal::Rate));
        assert!(per_ip.admit(ip, &limits, t0 + Duration::from_millis(100)).is_ok());
        per_ip.release(ip);
        per_ip.prune(&limits, t0 + Duration::from_millis(100));
        assert_eq!(per_ip.tracked(), 1, "a recent burst is remembered");
        per_ip.prune(&limits, t0 + Duration::from_secs(1));
        assert_eq!(per_ip.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let limits = Limits {
            max_connections: 1,
            rate: None,
        };
        let mut per_ip = PerIp::default();
        let now = Instant::now();
        per_ip.admit("2001:db8:1:2::1".parse().unwrap(), &limits, now).unwrap();
        let same_64 = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(per_ip.admit(same_64, &limits, now), Err(Refusal::Connections));
        assert!(per_ip.admit("2001:db8:1:3::1".parse().unwrap(), &limits, now).is_ok());
        per_ip.admit("10.1.1.1".parse().unwrap(), &limits, now).unwrap();
        let mapped = "::ffff:10.1.1.1".parse().unwrap();
        assert_eq!(per_ip.admit(mapped, &limits, now), Err(Refusal::Connections));
    }
}
