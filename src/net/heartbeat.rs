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

/// Three times in 24 bytes (an idle connection's slot holds one): the
/// last data message exactly, the rest as milliseconds after it.
#[derive(Clone, Copy, Debug)]
pub struct Heartbeat {
    last_data: Instant,
    /// The last frame of any kind, rounded down (a ping is at most a
    /// millisecond early).
    heard_ms: u32,
    /// Our ping, rounded up (the pong deadline is never early); `NO_PING`
    /// while none is outstanding.
    ping_ms: u32,
}

const NO_PING: u32 = u32::MAX;

/// The longest span the milliseconds hold with room to spare (24 days);
/// `Policy` durations are capped to it.
pub const MAX_SPAN: Duration = Duration::from_millis(i32::MAX as u64);

#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub ping_interval: Option<Duration>,
    pub pong_timeout: Duration,
    pub idle_timeout: Option<Duration>,
}

impl Policy {
    /// The policy with every duration capped to `MAX_SPAN`.
    pub fn capped(self) -> Self {
        Policy {
            ping_interval: self.ping_interval.map(|d| d.min(MAX_SPAN)),
            pong_timeout: self.pong_timeout.min(MAX_SPAN),
            idle_timeout: self.idle_timeout.map(|d| d.min(MAX_SPAN)),
        }
    }
}

impl Heartbeat {
    pub fn new(now: Instant) -> Self {
        Heartbeat {
            last_data: now,
            heard_ms: 0,
            ping_ms: NO_PING,
        }
    }

    fn after(&self, ms: u32) -> Instant {
        self.last_data + Duration::from_millis(ms.into())
    }

    fn last_heard(&self) -> Instant {
        self.after(self.heard_ms)
    }

    fn ping_sent(&self) -> Option<Instant> {
        (self.ping_ms != NO_PING).then(|| self.after(self.ping_ms))
    }

    /// The payload of our pings: when it went out, in nanoseconds since
    /// `epoch`. The pong brings it back, so the round trip is exact without
    /// the slot keeping the time to the nanosecond.
    pub fn ping_payload(now: Instant, epoch: Instant) -> [u8; 8] {
        (now.saturating_duration_since(epoch).as_nanos() as u64).to_le_bytes()
    }

    /// The round trip of the ping outstanding, from its pong's payload. A
    /// pong that does not answer it (unsolicited, or a payload the peer
    /// chose) tells nothing.
    pub fn round_trip(&self, now: Instant, epoch: Instant, pong: &[u8]) -> Option<Duration> {
        let outstanding = self.ping_sent()?;
        let nanos = u64::from_le_bytes(pong.try_into().ok()?);
        let sent = epoch.checked_add(Duration::from_nanos(nanos))?;
        let plausible = sent <= now && sent <= outstanding && sent + Duration::from_millis(1) >= outstanding;
        plausible.then(|| now - sent)
    }

    /// Records a frame from the peer; `data` for text/binary messages.
    /// Inlined: per message, with `data` known, it is three stores.
    #[inline]
    pub fn heard(&mut self, now: Instant, data: bool) {
        self.ping_ms = NO_PING;
        // A data message (the per-message path) needs no clock arithmetic.
        if !data {
            let since = now.saturating_duration_since(self.last_data);
            // Past the longest span no idle timeout is pending (`Policy`
            // caps it), so the last data message no longer matters.
            if since < MAX_SPAN {
                self.heard_ms = since.as_millis() as u32;
                return;
            }
        }
        self.last_data = now;
        self.heard_ms = 0;
    }

    /// Decides what is due at `now` (for a policy that is `capped`).
    pub fn check(&mut self, now: Instant, policy: &Policy) -> Action {
        if let Some(sent) = self.ping_sent()
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
            && self.ping_ms == NO_PING
            && now >= self.last_heard() + interval
        {
            let since = now.saturating_duration_since(self.last_data);
            self.ping_ms = u32::try_from(since.as_nanos().div_ceil(1_000_000)).unwrap_or(NO_PING - 1);
            return Action::SendPing;
        }
        Action::Nothing
    }

    /// When `check` next has something to do.
    pub fn next_deadline(&self, policy: &Policy) -> Option<Instant> {
        let pong = self.ping_sent().map(|sent| sent + policy.pong_timeout);
        let ping = match self.ping_sent() {
            None => policy.ping_interval.map(|i| self.last_heard() + i),
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

    #[test]
    fn the_pong_payload_tells_the_round_trip_of_the_ping_outstanding() {
        let epoch = Instant::now();
        let t0 = epoch + Duration::from_millis(7);
        let mut hb = Heartbeat::new(t0);
        let sent = t0 + Duration::from_micros(30_000_250);
        assert_eq!(hb.check(sent, &POLICY), Action::SendPing);
        let payload = Heartbeat::ping_payload(sent, epoch);
        let now = sent + Duration::from_micros(83);
        assert_eq!(hb.round_trip(now, epoch, &payload), Some(Duration::from_micros(83)));
        // A pong the peer made up, or one with no ping outstanding, tells nothing.
        assert_eq!(hb.round_trip(now, epoch, b"12345678"), None);
        assert_eq!(hb.round_trip(now, epoch, b""), None);
        hb.heard(now, false);
        assert_eq!(hb.round_trip(now, epoch, &payload), None);
    }

    #[test]
    fn pongs_do_not_reset_the_idle_clock() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0);
        hb.heard(t0 + Duration::from_millis(1500), true);
        for s in 2..3600 {
            hb.heard(t0 + Duration::from_secs(s), false);
        }
        let idle_at = t0 + Duration::from_millis(1500) + Duration::from_secs(3600);
        assert_eq!(hb.next_deadline(&POLICY), Some(idle_at));
    }
}
