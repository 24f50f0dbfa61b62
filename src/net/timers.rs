//! Connection deadlines in one heap; the earliest is the poll timeout.
//!
//! Each connection has a single current deadline (the earliest of its
//! handshake, heartbeat, idle or close timers). Moving a deadline pushes a
//! new entry; stale entries are skipped when they surface, which keeps every
//! operation O(log n) without a handle per timer.

use super::id::ConnId;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, ConnId)>>,
}

impl Timers {
    pub fn schedule(&mut self, at: Instant, id: ConnId) {
        self.heap.push(Reverse((at, id)));
    }

    /// The earliest entry, possibly stale.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Pops one entry due at or before `now`. The caller checks it against
    /// the connection's current deadline and ignores it if stale.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, ConnId)> {
        match self.heap.peek() {
            Some(Reverse((at, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drops stale entries when they outnumber live connections, and gives
    /// back capacity, so the heap stays proportional to the connection count.
    pub fn compact(&mut self, live: usize, is_current: impl Fn(Instant, ConnId) -> bool) {
        if self.heap.len() > 2 * live + 1024 {
            self.heap.retain(|Reverse((at, id))| is_current(*at, *id));
        }
        if self.heap.capacity() > 4 * self.heap.len() + 1024 {
            self.heap.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let a = ConnId {
            index: 1,
            generation: 1,
        };
        let b = ConnId {
            index: 2,
            generation: 1,
        };
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(2), a);
        timers.schedule(t0 + Duration::from_secs(1), b);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).unwrap().1, b);
        assert_eq!(timers.pop_due(t0 + Duration::from_secs(5)).unwrap().1, a);
        assert!(timers.is_empty());
    }
}
