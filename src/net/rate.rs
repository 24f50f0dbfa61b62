//! Token-bucket rate limiting, with time passed in: messages per
//! connection (rooms), pings per connection and handshakes per address.

use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages allowed in a burst.
    pub burst: f64,
}

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f64,
    updated: Instant,
    /// Messages refused since the last one accepted.
    strikes: u32,
}

/// What to do with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this message; the client is told.
    Limited,
    /// The client kept sending a whole burst's worth while limited: close it.
    Abuse,
}

impl TokenBucket {
    pub fn new(limit: &RateLimit, now: Instant) -> Self {
        TokenBucket {
            tokens: limit.burst,
            updated: now,
            strikes: 0,
        }
    }

    /// Whether the bucket would be full at `now` (nothing to remember).
    pub fn is_full(&self, limit: &RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * limit.per_second >= limit.burst
    }

    pub fn take(&mut self, limit: &RateLimit, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if f64::from(self.strikes) > limit.burst {
            Verdict::Abuse
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMIT: RateLimit = RateLimit {
        per_second: 10.0,
        burst: 5.0,
    };

    #[test]
    fn burst_then_sustained_rate_then_abuse() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(&LIMIT, t0);
        for _ in 0..5 {
            assert_eq!(bucket.take(&LIMIT, t0), Verdict::Allow);
        }
        assert_eq!(bucket.take(&LIMIT, t0), Verdict::Limited);
        // 100 ms later one token has refilled.
        assert_eq!(bucket.take(&LIMIT, t0 + Duration::from_millis(100)), Verdict::Allow);
        // Ten seconds at exactly the sustained rate are fine.
        for i in 2..102 {
            assert_eq!(bucket.take(&LIMIT, t0 + Duration::from_millis(100 * i)), Verdict::Allow);
        }
        let t1 = t0 + Duration::from_millis(100 * 101);
        let verdicts: Vec<_> = (0..7).map(|_| bucket.take(&LIMIT, t1)).collect();
        assert_eq!(verdicts[..5], [Verdict::Limited; 5]);
        assert_eq!(verdicts[5], Verdict::Abuse);
    }
}
