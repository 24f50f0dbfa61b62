//! Reconnect delays: exponential backoff with jitter.
//!
//! The n-th consecutive retry waits `min(max, base * 2^n)`, of which the
//! upper half is random ("equal jitter"): never less than half the nominal
//! delay, so a dead server is not hammered, and spread out, so that the
//! clients of a server that restarts do not all come back in the same
//! millisecond.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// Retries since the last `reset`.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over, after a connection succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next retry, counting it.
    pub fn next_delay(&mut self) -> Duration {
        let unit = getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64;
        self.next_delay_with(unit)
    }

    /// As `next_delay`, with the random part given (`unit` in 0..=1).
    pub fn next_delay_with(&mut self, unit: f64) -> Duration {
        let nominal = self.nominal(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        nominal / 2 + (nominal / 2).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// `min(max, base * 2^attempt)`, without overflow.
    fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(31));
        self.base.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let lows: Vec<_> = (0..6).map(|_| b.next_delay_with(0.0)).collect();
        assert_eq!(lows, [50 * MS, 100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
        assert_eq!(b.attempts(), 6);
        b.reset();
        let highs: Vec<_> = (0..5).map(|_| b.next_delay_with(1.0)).collect();
        assert_eq!(highs, [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS]);
    }

    #[test]
    fn random_delays_stay_in_range_and_never_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for n in 0..200 {
            let d = b.next_delay();
            let nominal = Duration::from_secs(1 << n.min(5)).min(Duration::from_secs(30));
            assert!(d >= nominal / 2 && d <= nominal, "{n}: {d:?}");
        }
    }
}
