//! Liveness of an open connection, as a pure function of time.
//!
//! Any frame from the peer proves it alive. After `ping_interval` of
//! silence a ping goes out; if the silence lasts `pong_timeout` longer, the
//! peer is dead. Separately, `idle_timeout` closes connections that send no
//! data messages (pongs keep the TCP path alive but do not count as use).

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    SendPing,
    /// No answer to a ping in time: drop the connection.
    Dead,
    /// No data for the idle timeout: close it.
    Idle,
}

#[derive(Clone, Copy, Debug)]
pub struct Heartbeat {
    last_heard: Instant,
    last_data: Instant,
    ping_sent: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

impl Heartbeat {
    pub fn new(now: Instant) -> Self {
        Heartbeat {
            last_heard: now,
            last_data: now,
            ping_sent: None,
        }
    }

    /// Records a frame from the peer; `data` for text/binary messages.
    /// The round trip of the ping outstanding, if any (for a pong heard now).
    pub fn round_trip(&self, now: Instant) -> Option<Duration> {
        self.ping_sent.map(|sent| now.saturating_duration_since(sent))
    }

    pub fn heard(&mut self, now: Instant, data: bool) {
        self.last_heard = now;
        self.ping_sent = None;
        if data {
            self.last_data = now;
        }
    }

    /// Decides what is due at `now`.
    pub fn check(&mut self, now: Instant, policy: &Policy) -> Action {
        if let Some(sent) = self.ping_sent
            && now >= sent + policy.pong_timeout
        {
            return Action::Dead;
        }
        if let Some(idle) = policy.idle_timeout
            && now >= self.last_data + idle
        {
            return Action::Idle;
        }
        if let Some(interval) = policy.ping_interval
            && self.ping_sent.is_none()
            && now >= self.last_heard + interval
        {
            self.ping_sent = Some(now);
            return Action::SendPing;
        }
        Action::Nothing
    }

    /// When `check` next has something to do.
    pub fn next_deadline(&self, policy: &Policy) -> Option<Instant> {
        let pong = self.ping_sent.map(|sent| sent + policy.pong_timeout);
        let ping = match self.ping_sent {
            None => policy.ping_interval.map(|i| self.last_heard + i),
            Some(_) => None,
        };
        let idle = policy.idle_timeout.map(|i| self.last_data + i);
        [pong, ping, idle].into_iter().flatten().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        ping_interval: Some(Duration::from_secs(30)),
        pong_timeout: Duration::from_secs(10),
        idle_timeout: Some(Duration::from_secs(3600)),
    };

    #[test]
    fn an_answering_peer_lives_for_hours() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0);
        let mut pings = 0;
        let mut now = t0;
        // Two simulated hours, answering every ping a second later.
        while now < t0 + Duration::from_secs(3500) {
            now = hb.next_deadline(&POLICY).unwrap();
            match hb.check(now, &POLICY) {
                Action::SendPing => {
                    pings += 1;
                    hb.heard(now + Duration::from_secs(1), false);
                }
                Action::Nothing => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(pings > 100);
        // Only pongs for an hour: the idle timeout fires.
        let end = hb.next_deadline(&POLICY).unwrap().max(t0 + Duration::from_secs(3600));
        assert_eq!(hb.check(end, &POLICY), Action::Idle);
    }

    #[test]
    fn a_silent_peer_is_pinged_then_dropped() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0);
        assert_eq!(hb.check(t0 + Duration::from_secs(29), &POLICY), Action::Nothing);
        assert_eq!(hb.next_deadline(&POLICY), Some(t0 + Duration::from_secs(30)));
        assert_eq!(hb.check(t0 + Duration::from_secs(30), &POLICY), Action::SendPing);
        assert_eq!(hb.next_deadline(&POLICY), Some(t0 + Duration::from_secs(40)));
        assert_eq!(hb.check(t0 + Duration::from_secs(39), &POLICY), Action::Nothing);
        assert_eq!(hb.check(t0 + Duration::from_secs(40), &POLICY), Action::Dead);
    }
}
