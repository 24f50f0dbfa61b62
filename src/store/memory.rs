//! `--store memory`: history in RAM, bounded by the retention limits.
//!
//! Each worker's handle keeps the rooms it owns that have no members (a
//! room with members is held by its owner). Every room's epoch is made
//! fresh in each process, so nothing is ever recovered across a restart.
//! A room whose retained messages have all expired is forgotten.

use super::{ReadRange, Retention, RoomRecord, Store, StoreHealth, new_epoch};
use crate::engine::{Name, Stored};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

#[derive(Debug)]
struct Idle {
    record: RoomRecord,
    /// When its newest message expires (`u64::MAX` without an age limit).
    expires_ms: u64,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    retention: Retention,
    idle: HashMap<Name, Idle>,
    /// (expiry, room); entries of rooms reopened since are stale.
    expiries: BinaryHeap<Reverse<(u64, Name)>>,
}

impl MemoryStore {
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            retention,
            ..MemoryStore::default()
        }
    }
}

impl Store for MemoryStore {
    fn open(&mut self, room: &Name, _now_ms: u64) -> Option<RoomRecord> {
        Some(match self.idle.remove(room) {
            Some(idle) => idle.record,
            None => RoomRecord::new(new_epoch(), u64::MAX),
        })
    }

    fn close(&mut self, room: &Name, record: RoomRecord) {
        let Some(newest) = record.tail.back().map(|k| k.stored.message.ts) else {
            // Nothing retained: the next open starts a new epoch at 0,
            // which no client can mistake for this one.
            return;
        };
        let expires_ms = self
            .retention
            .max_age_ms
            .map_or(u64::MAX, |age| newest.saturating_add(age));
        if expires_ms != u64::MAX {
            self.expiries.push(Reverse((expires_ms, room.clone())));
        }
        self.idle.insert(room.clone(), Idle { record, expires_ms });
    }

    fn append(&mut self, _stored: &Arc<Stored>) -> u64 {
        0
    }

    fn is_durable(&self, _append_no: u64) -> bool {
        true
    }

    fn reserve(&mut self, _room: &Name, _upto: u64) -> bool {
        true
    }

    fn read(&mut self, _room: &Name, _range: ReadRange, _token: u64) {
        // The tail is the whole history: the owner never asks.
        debug_assert!(false, "the memory store has nothing older than the tail");
    }

    fn tick(&mut self, now_ms: u64) {
        while let Some(Reverse((at, _))) = self.expiries.peek() {
            if *at > now_ms {
                break;
            }
            let Some(Reverse((at, room))) = self.expiries.pop() else {
                break;
            };
            if self.idle.get(&room).is_some_and(|idle| idle.expires_ms == at) {
                self.idle.remove(&room);
            }
        }
        if self.idle.capacity() > 1024 && self.idle.len() < self.idle.capacity() / 4 {
            self.idle.shrink_to_fit();
            self.expiries.shrink_to_fit();
        }
    }

    fn rooms_kept(&self) -> usize {
        self.idle.len()
    }

    fn health(&self) -> StoreHealth {
        StoreHealth::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StoredMessage;
    use crate::store::Kept;
    use serde_json::json;

    fn kept(seq: u64, ts: u64) -> Kept {
        Kept {
            stored: Stored::new(StoredMessage {
                room: "r".into(),
                user: "u".into(),
                content: json!(seq),
                seq,
                ts,
            }),
            append_no: 0,
        }
    }

    #[test]
    fn an_idle_room_keeps_its_history_and_seq_until_it_expires() {
        let retention = Retention {
            count: 10,
            max_age_ms: Some(1000),
        };
        let mut store = MemoryStore::new(retention);
        let room: Name = "r".into();
        let mut record = store.open(&room, 0).unwrap();
        let epoch = record.epoch.clone();
        record.seq = 2;
        record.tail.extend([kept(1, 100), kept(2, 200)]);
        store.close(&room, record);
        store.tick(1199);
        let record = store.open(&room, 1199).unwrap();
        assert_eq!((record.seq, record.tail.len()), (2, 2));
        assert_eq!(record.epoch, epoch, "same history, same epoch");
        store.close(&room, record);
        store.tick(1200);
        assert_eq!(store.rooms_kept(), 0, "its newest message expired");
        let fresh = store.open(&room, 1200).unwrap();
        assert_eq!(fresh.seq, 0);
        assert_ne!(fresh.epoch, epoch, "a forgotten history gets a new epoch");
    }
}
