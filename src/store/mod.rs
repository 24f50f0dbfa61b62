//! Durable history (docs/architecture.md, "The store").
//!
//! The owner of a room (see `crate::engine`) keeps the room's newest
//! messages in memory and hands each new one to the store; the store keeps
//! what must outlive membership and restarts: per room, its messages, its
//! last `seq` (with a reservation ahead of it) and its epoch. Each worker
//! holds its own [`Store`] handle for the rooms it owns; implementations
//! that do I/O do it on threads of their own and answer through the
//! owner's mailbox ([`StoreEvent`]), never on an event loop.

pub mod memory;
pub mod sqlite;

use crate::engine::{Name, Stored};
use std::collections::VecDeque;
use std::sync::Arc;

/// Retention, enforced by the store whatever the room's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept per room (`--history-size`).
    pub count: usize,
    /// Messages older than this are dropped (`--history-ttl`); `None` keeps them.
    pub max_age_ms: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            count: 100,
            max_age_ms: Some(7 * 24 * 3600 * 1000),
        }
    }
}

/// A retained message in a room's in-memory tail.
#[derive(Clone, Debug)]
pub struct Kept {
    pub stored: Arc<Stored>,
    /// The handle's append number; the message may leave memory only once
    /// the store says it is durable.
    pub append_no: u64,
}

/// A room's state as its owner holds it while the room is in memory.
#[derive(Debug)]
pub struct RoomRecord {
    /// The last `seq` handed out.
    pub seq: u64,
    /// Changes whenever the room's history is lost or reset.
    pub epoch: Name,
    /// Messages up to this `seq` may have been lost (a crash lost the batch
    /// in flight): recovery from before it cannot be proven complete.
    pub lost_through: u64,
    /// `seq` may be handed out up to this value (durably reserved).
    pub reserved: u64,
    /// The newest retained messages, oldest first.
    pub tail: VecDeque<Kept>,
    /// Older retained messages than the tail's front may be in the store.
    pub older_in_store: bool,
    /// This epoch is not stored (its `seq` reservation could not be
    /// written): its messages live in memory only.
    pub unsaved: bool,
}

impl RoomRecord {
    /// A room that has never had a message.
    pub fn new(epoch: Name, reserved: u64) -> Self {
        RoomRecord {
            seq: 0,
            epoch,
            lost_through: 0,
            reserved,
            tail: VecDeque::new(),
            older_in_store: false,
            unsaved: false,
        }
    }
}

/// Why the store could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError(pub String);

/// A range of a room's history to read from the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRange {
    /// Messages with `seq > after`...
    pub after: u64,
    /// ... and `seq < before`.
    pub before: u64,
    /// At most this many: the oldest ones.
    pub limit: usize,
}

/// An answer from a store's own threads, delivered through the owner's mailbox.
#[derive(Debug)]
pub enum StoreEvent {
    /// The room's state, asked for by `open`.
    Opened {
        room: Name,
        result: Result<RoomRecord, StoreError>,
    },
    /// `seq` up to `upto` is durably reserved.
    Reserved { room: Name, upto: u64 },
    /// A reservation could not be stored.
    ReserveFailed { room: Name },
    /// Messages asked for by `read`, oldest first.
    Read {
        room: Name,
        token: u64,
        result: Result<Vec<Arc<Stored>>, StoreError>,
    },
}

/// Health of the store, for `/health` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// The last error, while the store is failing.
    pub degraded: Option<String>,
    /// Write or read errors since start.
    pub errors: u64,
    /// Messages durably written since start.
    pub persisted: u64,
}

/// One owner's handle on the store.
pub trait Store: Send {
    /// The state of `room`, if it can be had now; otherwise `None`, and a
    /// `StoreEvent::Opened` follows.
    fn open(&mut self, room: &Name, now_ms: u64) -> Option<RoomRecord>;

    /// The owner no longer holds `room` in memory (it has no members).
    fn close(&mut self, room: &Name, record: RoomRecord);

    /// Keeps a message the owner just numbered; returns its append number.
    fn append(&mut self, stored: &Arc<Stored>) -> u64;

    /// Whether the message with this append number is durable.
    fn is_durable(&self, append_no: u64) -> bool;

    /// Asks that `seq` up to `upto` be reserved. True if it already is
    /// (nothing will follow); otherwise a `StoreEvent::Reserved` follows.
    fn reserve(&mut self, room: &Name, upto: u64) -> bool;

    /// How far ahead to reserve `seq` at a time.
    fn reserve_step(&self) -> u64 {
        u64::MAX / 2
    }

    /// Reads older messages than the in-memory tail; a `StoreEvent::Read`
    /// with `token` follows.
    fn read(&mut self, room: &Name, range: ReadRange, token: u64);

    /// Retention sweeps and other housekeeping, about once a second.
    fn tick(&mut self, _now_ms: u64) {}

    /// Rooms whose state this handle keeps outside the owner's memory.
    fn rooms_kept(&self) -> usize;

    fn health(&self) -> StoreHealth;
}

/// A fresh epoch: 8 random bytes in hex. Any two differ with overwhelming
/// probability, so a reset history is never mistaken for the old one.
pub fn new_epoch() -> Name {
    let mut bytes = [0u8; 8];
    // No entropy (never on Linux): fall back to the clock, still unique per run.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = nanos.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into()
}
