//! Per-connection state, kept in the connection's slot, and the rule that
//! keeps a connection's replies in the order of its commands.
//!
//! Replies come from the engine in order within one lane (one room or user
//! at its owner). A connection waiting for replies in lane L may send more
//! commands in L; any other command, and any command that would be
//! answered at once by this worker (an error found here, a `refresh`),
//! waits in `deferred` until the outstanding replies are in.

use super::local::Dialect;
use super::rate::TokenBucket;
use super::wire::{CommandError, Request};
use crate::auth::Grants;
use crate::engine::{Lane, Name};
use std::collections::VecDeque;
use std::time::Instant;

/// Past this many held-back commands, the connection is not read until
/// they have run (TCP backpressure).
pub const DEFER_PAUSE: usize = 64;

#[derive(Debug)]
pub struct Session {
    pub user: Name,
    pub dialect: Dialect,
    /// Rooms this connection is in or joining (the connection → rooms half
    /// of the index).
    pub rooms: Vec<Name>,
    /// The room a `/ws/{room}` or `/pubsub/{topic}` connection joins on open.
    pub auto_join: Option<String>,
    pub bucket: Option<TokenBucket>,
    /// What the credential allows; `None` while auth is off (everything).
    pub auth: Option<Box<SessionAuth>>,
    /// Engine replies still owed to this connection, all in `lane`.
    pub pending: u32,
    pub lane: Option<Lane>,
    /// Commands held back until `pending` is 0, in arrival order.
    pub deferred: Option<Box<VecDeque<Result<Request, CommandError>>>>,
}

/// An authenticated session's grants and expiry.
#[derive(Debug)]
pub struct SessionAuth {
    pub grants: Grants,
    /// When the credential expires (leeway included); `None` for API keys.
    pub deadline: Option<Instant>,
}

impl Session {
    pub fn new(user: Name, dialect: Dialect, auto_join: Option<String>, auth: Option<Box<SessionAuth>>) -> Self {
        Session {
            user,
            dialect,
            rooms: Vec::new(),
            auto_join,
            bucket: None,
            auth,
            pending: 0,
            lane: None,
            deferred: None,
        }
    }

    pub fn can_join(&self, room: &str) -> bool {
        self.auth.as_ref().is_none_or(|a| a.grants.can_join(room))
    }

    pub fn can_publish(&self, room: &str) -> bool {
        self.auth.as_ref().is_none_or(|a| a.grants.can_publish(room))
    }

    pub fn in_room(&self, room: &str) -> bool {
        self.rooms.iter().any(|r| &**r == room)
    }

    pub fn has_deferred(&self) -> bool {
        self.deferred.as_ref().is_some_and(|d| !d.is_empty())
    }

    /// Whether a command in `lane` (`None`: answered by this worker) may run
    /// now without its reply overtaking an earlier one.
    pub fn may_run(&self, lane: Option<Lane>) -> bool {
        !self.has_deferred() && (self.pending == 0 || (lane.is_some() && lane == self.lane))
    }

    /// Holds a command back; returns how many are held.
    pub fn defer(&mut self, command: Result<Request, CommandError>) -> usize {
        let deferred = self.deferred.get_or_insert_with(Default::default);
        deferred.push_back(command);
        deferred.len()
    }

    /// Puts a command back at the head of the queue.
    pub fn defer_front(&mut self, command: Result<Request, CommandError>) -> usize {
        let deferred = self.deferred.get_or_insert_with(Default::default);
        deferred.push_front(command);
        deferred.len()
    }

    /// The next held-back command, once nothing is outstanding.
    pub fn next_deferred(&mut self) -> Option<Result<Request, CommandError>> {
        if self.pending > 0 {
            return None;
        }
        let deferred = self.deferred.as_mut()?;
        let next = deferred.pop_front();
        if deferred.is_empty() {
            self.deferred = None;
        }
        next
    }

    /// A request in `lane` was sent; its reply is owed.
    pub fn sent(&mut self, lane: Lane) {
        self.pending += 1;
        self.lane = Some(lane);
    }

    /// A reply arrived.
    pub fn answered(&mut self) {
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 {
            self.lane = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rooms::wire;

    fn lane(owner: usize, key: u64) -> Lane {
        Lane { owner, key }
    }

    #[test]
    fn commands_wait_outside_the_outstanding_lane() {
        let mut s = Session::new("u".into(), Dialect::Json, None, None);
        assert!(s.may_run(None) && s.may_run(Some(lane(1, 7))));
        s.sent(lane(1, 7));
        assert!(s.may_run(Some(lane(1, 7))), "same lane: pipelined");
        assert!(!s.may_run(Some(lane(1, 8))), "another room at the same owner");
        assert!(!s.may_run(Some(lane(0, 7))));
        assert!(!s.may_run(None), "a local answer would overtake");
        let parsed = wire::parse(br#"{"type":"presence","room":"x"}"#);
        assert_eq!(s.defer(parsed), 1);
        assert!(!s.may_run(Some(lane(1, 7))), "behind a held-back command");
        assert!(s.next_deferred().is_none(), "still waiting");
        s.answered();
        assert!(s.next_deferred().is_some());
        assert!(s.deferred.is_none(), "the queue's memory is given back");
        assert!(s.may_run(None));
    }
}
