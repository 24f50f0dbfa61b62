//! The authoritative state of one room, held by its owner: position,
//! presence, members per worker and the in-memory history tail.

use super::{Member, Name, Position, Since, Stored};
use crate::store::{Kept, ReadRange, Retention, RoomRecord};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub struct RoomState {
    pub record: RoomRecord,
    /// Connections per present user, across all workers.
    users: HashMap<Name, u32>,
    /// Members per worker.
    per_worker: Vec<u32>,
    members: u32,
    /// Members that want `online_users` events (chat-tutorial members).
    roster_members: u32,
    /// A reservation asked of the store and not yet confirmed.
    pub reserving: bool,
}

/// How a recovery or history read is answered.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// From memory: these messages, and whether that is provably all.
    Answer { messages: Vec<Arc<Stored>>, complete: bool },
    /// Older messages than the tail are needed from the store first.
    Read(ReadRange),
}

impl RoomState {
    pub fn new(record: RoomRecord, workers: usize) -> Self {
        RoomState {
            record,
            users: HashMap::new(),
            per_worker: vec![0; workers],
            members: 0,
            roster_members: 0,
            reserving: false,
        }
    }

    /// Counts a member on `worker`; true when it is the user's first
    /// present connection in the room.
    pub fn add(&mut self, worker: usize, member: &Member) -> bool {
        self.per_worker[worker] += 1;
        self.members += 1;
        self.roster_members += u32::from(member.roster);
        if !member.present {
            return false;
        }
        let count = self.users.entry(member.user.clone()).or_default();
        *count += 1;
        *count == 1
    }

    /// Uncounts a member; true when it was the user's last present one.
    pub fn remove(&mut self, worker: usize, member: &Member) -> bool {
        let here = &mut self.per_worker[worker];
        if *here == 0 {
            // A leave without its join (the join was refused): nothing to undo.
            return false;
        }
        *here -= 1;
        self.members -= 1;
        self.roster_members -= u32::from(member.roster && self.roster_members > 0);
        if !member.present {
            return false;
        }
        match self.users.get_mut(&member.user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.users.remove(&member.user);
                true
            }
            None => false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    /// Members on every worker.
    pub fn members(&self) -> u64 {
        u64::from(self.members)
    }

    /// Present users, each once.
    pub fn user_count(&self) -> u64 {
        self.users.len() as u64
    }

    pub fn wants_roster(&self) -> bool {
        self.roster_members > 0
    }

    /// Present users, each once, sorted.
    pub fn users(&self) -> Vec<Name> {
        let mut users: Vec<Name> = self.users.keys().cloned().collect();
        users.sort_unstable();
        users
    }

    /// Workers with members here.
    pub fn workers(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_worker
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(w, _)| w)
    }

    pub fn position(&self) -> Position {
        Position {
            seq: self.record.seq,
            epoch: self.record.epoch.clone(),
        }
    }

    /// Keeps a new message in the tail, then enforces the limits: at most
    /// `retention.count` messages and none older than the age limit; beyond
    /// `tail` messages, the oldest leave memory once durable (they stay in
    /// the store).
    pub fn keep(&mut self, kept: Kept, tail: usize, retention: &Retention, now_ms: u64, durable: impl Fn(u64) -> bool) {
        self.record.tail.push_back(kept);
        self.trim(tail, retention, now_ms, durable);
    }

    pub fn trim(&mut self, tail: usize, retention: &Retention, now_ms: u64, durable: impl Fn(u64) -> bool) {
        let t = &mut self.record.tail;
        let oldest_allowed = retention.max_age_ms.map_or(0, |age| now_ms.saturating_sub(age));
        while let Some(front) = t.front() {
            let expired = t.len() > retention.count || front.stored.message.ts < oldest_allowed;
            if expired {
                t.pop_front();
            } else if !self.record.unsaved && t.len() > tail && durable(front.append_no) {
                t.pop_front();
                self.record.older_in_store = true;
            } else {
                break;
            }
        }
    }

    /// The `seq` of the oldest message in memory (one past the last when
    /// the tail is empty).
    fn tail_front(&self) -> u64 {
        self.record
            .tail
            .front()
            .map_or(self.record.seq + 1, |k| k.stored.message.seq)
    }

    fn tail_after(&self, after: u64) -> impl Iterator<Item = &Arc<Stored>> {
        self.record
            .tail
            .iter()
            .map(|k| &k.stored)
            .filter(move |s| s.message.seq > after)
    }

    /// The recovery a `join` with `since` gets. `older` is what the store
    /// returned for an earlier `Plan::Read` of this same request.
    pub fn recover(&self, since: &Since, older: Option<&[Arc<Stored>]>, retention: &Retention) -> Plan {
        let seq = self.record.seq;
        let epoch_known = since.epoch.as_deref() == Some(&*self.record.epoch);
        if since.seq > seq || (since.epoch.is_some() && !epoch_known) {
            // Another history, or a position this one never reached.
            return Plan::Answer {
                messages: Vec::new(),
                complete: false,
            };
        }
        let nothing_lost = since.seq >= self.record.lost_through;
        let front = self.tail_front();
        let (mut messages, contiguous) = if since.seq + 1 >= front {
            (Vec::new(), true)
        } else if let Some(older) = older {
            // From the store: after `since`, before the tail, oldest first.
            let contiguous = older.first().is_some_and(|s| s.message.seq == since.seq + 1)
                && older.last().is_some_and(|s| s.message.seq + 1 == front)
                && older.windows(2).all(|w| w[1].message.seq == w[0].message.seq + 1);
            (older.to_vec(), contiguous)
        } else if self.record.older_in_store {
            return Plan::Read(ReadRange {
                after: since.seq,
                before: front,
                limit: retention.count,
            });
        } else {
            // What is older than the tail is gone.
            (Vec::new(), false)
        };
        messages.extend(self.tail_after(since.seq).cloned());
        Plan::Answer {
            messages,
            complete: contiguous && nothing_lost && epoch_known,
        }
    }

    /// The messages a `history` command gets (see `Request::History`).
    pub fn history(&self, since: Option<u64>, limit: Option<usize>, older: Option<&[Arc<Stored>]>) -> Plan {
        let after = since.unwrap_or(0);
        let front = self.tail_front();
        let in_tail = self.tail_after(after).count();
        let wanted = limit.unwrap_or(usize::MAX);
        // Newest-first requests (no `since`) that the tail covers need no read.
        let tail_enough = after + 1 >= front || (since.is_none() && in_tail >= wanted);
        let mut messages: Vec<Arc<Stored>> = match older {
            Some(older) => older.to_vec(),
            None if tail_enough || !self.record.older_in_store => Vec::new(),
            None => {
                return Plan::Read(ReadRange {
                    after,
                    before: front,
                    limit: usize::MAX,
                });
            }
        };
        messages.extend(self.tail_after(after).cloned());
        if let Some(limit) = limit {
            if since.is_some() {
                messages.truncate(limit);
            } else {
                messages.drain(..messages.len().saturating_sub(limit));
            }
        }
        Plan::Answer {
            messages,
            complete: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StoredMessage;
    use crate::net::ConnId;
    use serde_json::json;

    fn member(user: &str, present: bool, roster: bool) -> Member {
        Member {
            conn: ConnId {
                index: 0,
                generation: 1,
            },
            user: user.into(),
            present,
            roster,
        }
    }

    fn kept(seq: u64, append_no: u64) -> Kept {
        Kept {
            stored: Stored::new(StoredMessage {
                room: "r".into(),
                user: "u".into(),
                content: json!(seq),
                seq,
                ts: 1000 + seq,
            }),
            append_no,
        }
    }

    fn room_with(seqs: std::ops::RangeInclusive<u64>, retention: &Retention) -> RoomState {
        let mut room = RoomState::new(RoomRecord::new("e1".into(), u64::MAX), 2);
        for seq in seqs {
            room.record.seq = seq;
            room.keep(kept(seq, seq), usize::MAX, retention, 0, |_| true);
        }
        room
    }

    fn seqs(plan: &Plan) -> (Vec<u64>, bool) {
        match plan {
            Plan::Answer { messages, complete } => (messages.iter().map(|s| s.message.seq).collect(), *complete),
            Plan::Read(r) => panic!("unexpected read {r:?}"),
        }
    }

    fn since(seq: u64, epoch: Option<&str>) -> Since {
        Since {
            seq,
            epoch: epoch.map(str::to_owned),
        }
    }

    #[test]
    fn presence_counts_connections_across_workers() {
        let mut room = RoomState::new(RoomRecord::new("e".into(), 0), 2);
        assert!(room.add(0, &member("alice", true, false)));
        assert!(
            !room.add(1, &member("alice", true, true)),
            "second connection, other worker"
        );
        assert!(
            !room.add(1, &member("sub", false, false)),
            "pub/sub subscribers are not present"
        );
        assert_eq!(room.users(), [Name::from("alice")]);
        assert_eq!(room.workers().collect::<Vec<_>>(), [0, 1]);
        assert!(room.wants_roster());
        assert!(!room.remove(0, &member("alice", true, false)));
        assert!(room.remove(1, &member("alice", true, true)));
        assert!(!room.wants_roster());
        assert!(!room.remove(0, &member("ghost", true, false)), "a leave without a join");
        assert!(!room.is_empty());
        room.remove(1, &member("sub", false, false));
        assert!(room.is_empty());
    }

    #[test]
    fn recovery_needs_the_epoch_and_an_unbroken_history() {
        let retention = Retention {
            count: 3,
            max_age_ms: None,
        };
        let room = room_with(1..=5, &retention); // keeps 3, 4, 5
        assert_eq!(
            seqs(&room.recover(&since(2, Some("e1")), None, &retention)),
            (vec![3, 4, 5], true)
        );
        assert_eq!(
            seqs(&room.recover(&since(5, Some("e1")), None, &retention)),
            (vec![], true)
        );
        assert_eq!(
            seqs(&room.recover(&since(1, Some("e1")), None, &retention)),
            (vec![3, 4, 5], false),
            "2 is gone"
        );
        assert_eq!(
            seqs(&room.recover(&since(2, None), None, &retention)),
            (vec![3, 4, 5], false),
            "no epoch, no proof"
        );
        assert_eq!(
            seqs(&room.recover(&since(2, Some("e0")), None, &retention)),
            (vec![], false),
            "another history"
        );
        assert_eq!(
            seqs(&room.recover(&since(9, Some("e1")), None, &retention)),
            (vec![], false),
            "ahead of the room"
        );
        let mut lossy = room_with(1..=5, &retention);
        lossy.record.lost_through = 4;
        assert!(
            !seqs(&lossy.recover(&since(3, Some("e1")), None, &retention)).1,
            "a crash may have lost 4"
        );
        assert!(seqs(&lossy.recover(&since(4, Some("e1")), None, &retention)).1);
    }

    #[test]
    fn the_tail_leaves_memory_only_when_durable_and_reads_fill_the_gap() {
        let retention = Retention {
            count: 100,
            max_age_ms: None,
        };
        let mut room = RoomState::new(RoomRecord::new("e1".into(), u64::MAX), 1);
        for seq in 1..=6 {
            room.record.seq = seq;
            // Appends up to 3 are durable; the tail holds 2 beyond that.
            room.keep(kept(seq, seq), 2, &retention, 0, |n| n <= 3);
        }
        let kept_seqs: Vec<u64> = room.record.tail.iter().map(|k| k.stored.message.seq).collect();
        assert_eq!(
            kept_seqs,
            [4, 5, 6],
            "4 is not durable yet: it stays beyond the tail size"
        );
        assert!(room.record.older_in_store);
        let plan = room.recover(&since(1, Some("e1")), None, &retention);
        assert_eq!(
            plan,
            Plan::Read(ReadRange {
                after: 1,
                before: 4,
                limit: 100
            })
        );
        let older = [kept(2, 2).stored, kept(3, 3).stored];
        assert_eq!(
            seqs(&room.recover(&since(1, Some("e1")), Some(&older), &retention)),
            (vec![2, 3, 4, 5, 6], true)
        );
        let gap = [kept(3, 3).stored];
        assert!(
            !seqs(&room.recover(&since(1, Some("e1")), Some(&gap), &retention)).1,
            "2 expired in the store"
        );
        assert_eq!(
            seqs(&room.history(None, Some(2), None)),
            (vec![5, 6], true),
            "newest from memory"
        );
        assert!(matches!(room.history(Some(0), Some(2), None), Plan::Read(_)));
    }

    #[test]
    fn retention_by_count_and_age() {
        let retention = Retention {
            count: 4,
            max_age_ms: Some(250),
        };
        let mut room = RoomState::new(RoomRecord::new("e".into(), u64::MAX), 1);
        for seq in 1..=5 {
            room.record.seq = seq;
            let mut k = kept(seq, 0);
            Arc::get_mut(&mut k.stored).unwrap().message.ts = seq * 100;
            room.keep(k, usize::MAX, &retention, seq * 100, |_| true);
        }
        room.trim(usize::MAX, &retention, 500, |_| true);
        let left: Vec<u64> = room.record.tail.iter().map(|k| k.stored.message.seq).collect();
        assert_eq!(left, [3, 4, 5]);
        assert!(!room.record.older_in_store, "expired is gone, not in the store");
    }
}
