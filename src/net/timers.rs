//! Connection deadlines in one heap; the earliest is the poll timeout.
//!
//! Each connection has a single current deadline (the earliest of its
//! handshake, heartbeat, idle or close timers), kept in its [`Timer`].
//! Deadlines are milliseconds since the loop's epoch ([`Tick`]): 8 bytes in
//! the slot, 16 per heap entry.
//!
//! Moving a deadline later pushes nothing: the entry already in the heap
//! surfaces first, and is then pushed again for the new deadline. Only a
//! deadline moved earlier pushes a new entry. So an idle connection, whose
//! deadline moves later on every frame and at the upgrade, has one entry,
//! not one per move; stale entries are skipped when they surface, and every
//! operation stays O(log n) without a handle per timer.

use super::id::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since the loop's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// No entry in the heap.
    const NONE: Tick = Tick(u64::MAX);
}

/// A connection's deadline, and the earliest heap entry it has.
#[derive(Clone, Copy, Debug)]
pub struct Timer {
    deadline: Tick,
    queued: Tick,
}

impl Default for Timer {
    fn default() -> Self {
        Timer {
            deadline: Tick::NONE,
            queued: Tick::NONE,
        }
    }
}

/// What a surfaced heap entry means for its connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Surfaced {
    /// The deadline has passed: act on it (and set the next one).
    Due,
    /// Superseded, or pushed again for the later deadline: nothing to do.
    NotDue,
}

#[derive(Debug)]
pub struct Timers {
    epoch: Instant,
    heap: BinaryHeap<Reverse<(Tick, ConnId)>>,
}

impl Timers {
    pub fn new(epoch: Instant) -> Self {
        Timers {
            epoch,
            heap: BinaryHeap::new(),
        }
    }

    /// The instant tick 0 stands for.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// `at` rounded up to the millisecond: a deadline never fires early.
    fn deadline_tick(&self, at: Instant) -> Tick {
        let d = at.saturating_duration_since(self.epoch);
        Tick(d.as_millis() as u64 + u64::from(!d.subsec_nanos().is_multiple_of(1_000_000)))
    }

    /// `now` rounded down: what has passed.
    fn now_tick(&self, now: Instant) -> Tick {
        Tick(now.saturating_duration_since(self.epoch).as_millis() as u64)
    }

    fn instant(&self, tick: Tick) -> Instant {
        self.epoch + Duration::from_millis(tick.0)
    }

    /// Sets `timer`'s deadline to `at`; pushes an entry only if it is
    /// earlier than every entry the connection has.
    pub fn set(&mut self, timer: &mut Timer, at: Instant, id: ConnId) {
        let tick = self.deadline_tick(at);
        timer.deadline = tick;
        if tick < timer.queued {
            timer.queued = tick;
            self.heap.push(Reverse((tick, id)));
        }
    }

    /// The deadline `timer` holds.
    pub fn deadline(&self, timer: &Timer) -> Instant {
        self.instant(timer.deadline)
    }

    /// The earliest entry, possibly stale.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| self.instant(*at))
    }

    /// Pops one entry due at or before `now`. The caller hands it to
    /// [`Timers::surfaced`] with the connection's timer, if it still exists.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Tick, ConnId)> {
        let now = self.now_tick(now);
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Judges a popped entry: stale (the connection has an earlier one, or
    /// it was superseded), due, or pushed again for a later deadline.
    pub fn surfaced(&mut self, timer: &mut Timer, entry: (Tick, ConnId), now: Instant) -> Surfaced {
        let (at, id) = entry;
        if at != timer.queued {
            return Surfaced::NotDue;
        }
        timer.queued = Tick::NONE;
        if timer.deadline <= self.now_tick(now) {
            return Surfaced::Due;
        }
        timer.queued = timer.deadline;
        self.heap.push(Reverse((timer.deadline, id)));
        Surfaced::NotDue
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops stale entries when they outnumber live connections, and gives
    /// back capacity, so the heap stays proportional to the connection count.
    /// `timer_of` gives the timer of the connection an entry names, if any.
    pub fn compact<'a>(&mut self, live: usize, timer_of: impl Fn(ConnId) -> Option<&'a Timer>) {
        if self.heap.len() > 2 * live + 1024 {
            self.heap
                .retain(|Reverse((at, id))| timer_of(*id).is_some_and(|t| t.queued == *at));
        }
        if self.heap.capacity() > 4 * self.heap.len() + 1024 {
            self.heap.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ConnId {
        ConnId { index, generation: 1 }
    }

    /// Pops everything due at `now` for the one timer `t` of `id`.
    fn fire(timers: &mut Timers, t: &mut Timer, now: Instant) -> usize {
        let mut due = 0;
        while let Some(entry) = timers.pop_due(now) {
            if timers.surfaced(t, entry, now) == Surfaced::Due {
                due += 1;
            }
        }
        due
    }

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let (mut a, mut b) = (Timer::default(), Timer::default());
        timers.set(&mut a, t0 + Duration::from_secs(2), id(1));
        timers.set(&mut b, t0 + Duration::from_secs(1), id(2));
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let later = t0 + Duration::from_secs(5);
        let first = timers.pop_due(later).unwrap();
        assert_eq!(first.1, id(2));
        assert_eq!(timers.surfaced(&mut b, first, later), Surfaced::Due);
        let second = timers.pop_due(later).unwrap();
        assert_eq!(second.1, id(1));
        assert_eq!(timers.surfaced(&mut a, second, later), Surfaced::Due);
        assert!(timers.is_empty());
    }

    #[test]
    fn a_later_deadline_pushes_nothing_until_the_old_entry_surfaces() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let mut t = Timer::default();
        timers.set(&mut t, t0 + Duration::from_secs(10), id(1));
        for s in 11..100 {
            timers.set(&mut t, t0 + Duration::from_secs(s), id(1));
        }
        assert_eq!(timers.len(), 1);
        // The old entry surfaces at 10 s, is pushed again for 99 s.
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(10)), 0);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(99)));
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(99)), 1);
    }

    #[test]
    fn an_earlier_deadline_wins_and_the_superseded_entry_is_ignored() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let mut t = Timer::default();
        timers.set(&mut t, t0 + Duration::from_secs(10), id(1));
        timers.set(&mut t, t0 + Duration::from_secs(2), id(1));
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(2)), 1);
        // Fired: the next deadline is set afresh; the 10 s entry is stale.
        timers.set(&mut t, t0 + Duration::from_secs(30), id(1));
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(10)), 0);
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(29)), 0);
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_secs(30)), 1);
    }

    #[test]
    fn never_fires_before_the_instant_it_was_given() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let mut t = Timer::default();
        let at = t0 + Duration::from_micros(1500);
        timers.set(&mut t, at, id(1));
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_micros(1999)), 0);
        assert!(timers.next_deadline().unwrap() >= at);
        assert_eq!(fire(&mut timers, &mut t, t0 + Duration::from_millis(2)), 1);
    }
}
