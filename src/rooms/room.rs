//! One room: its members, who is present, its sequence and its history.

use super::wire::StoredMessage;
use crate::net::{ConnId, Outgoing};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Which protocol a connection speaks; events are encoded once per dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// `/ws`: JSON commands and events.
    Json,
    /// `/ws/{room}`: the chat tutorial's envelopes.
    Chat,
    /// `/pubsub/{topic}`: raw relay.
    PubSub,
}

impl Dialect {
    pub const ALL: [Dialect; 3] = [Dialect::Json, Dialect::Chat, Dialect::PubSub];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A message kept for `history` and recovery, with its `/ws` event framed
/// once: live fan-out and every later replay share those bytes.
pub struct Stored {
    pub message: StoredMessage,
    pub json: Outgoing,
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.message.fmt(f)
    }
}

#[derive(Debug, Default)]
pub struct Room {
    /// Members in join order (swap-removed on leave), for fan-out.
    members: Vec<(ConnId, Dialect)>,
    /// Where each member sits in `members`.
    positions: HashMap<ConnId, usize>,
    /// Connections per present user (pubsub subscribers are not present).
    users: HashMap<String, u32>,
    /// The last message's sequence number; 0 for a new room.
    pub seq: u64,
    history: VecDeque<Arc<Stored>>,
}

impl Room {
    pub fn members(&self) -> &[(ConnId, Dialect)] {
        &self.members
    }

    pub fn is_member(&self, id: ConnId) -> bool {
        self.positions.contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Adds a member; true when this is the user's first connection here.
    pub fn add(&mut self, id: ConnId, dialect: Dialect, user: &str) -> bool {
        if self.positions.contains_key(&id) {
            return false;
        }
        self.positions.insert(id, self.members.len());
        self.members.push((id, dialect));
        if dialect == Dialect::PubSub {
            return false;
        }
        let count = self.users.entry(user.to_owned()).or_default();
        *count += 1;
        *count == 1
    }

    /// Removes a member: its dialect, and whether it was the user's last
    /// connection here; `None` if it was not a member.
    pub fn remove(&mut self, id: ConnId, user: &str) -> Option<(Dialect, bool)> {
        let pos = self.positions.remove(&id)?;
        let (_, dialect) = self.members.swap_remove(pos);
        if let Some(&(moved, _)) = self.members.get(pos) {
            self.positions.insert(moved, pos);
        }
        if dialect == Dialect::PubSub {
            return Some((dialect, false));
        }
        let last = match self.users.get_mut(user) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.users.remove(user);
                true
            }
            None => false,
        };
        Some((dialect, last))
    }

    /// Present usernames, each once, sorted for stable output.
    pub fn users(&self) -> Vec<&str> {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        users
    }

    /// Takes the next sequence number and keeps the message in history.
    pub fn store(&mut self, stored: Arc<Stored>, capacity: usize) {
        if capacity == 0 {
            return;
        }
        if self.history.len() == capacity {
            self.history.pop_front();
        }
        self.history.push_back(stored);
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Messages with `seq > since`, oldest first, and whether that is all
    /// of them (false when some have already left the history).
    pub fn since(&self, since: u64) -> (impl Iterator<Item = &Arc<Stored>>, bool) {
        let oldest_kept = self.history.front().map_or(self.seq + 1, |s| s.message.seq);
        let complete = since + 1 >= oldest_kept || since >= self.seq;
        (self.history.iter().filter(move |s| s.message.seq > since), complete)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(n: u32) -> ConnId {
        ConnId {
            index: n,
            generation: 1,
        }
    }

    fn stored(room: &mut Room, cap: usize) {
        let seq = room.next_seq();
        let message = StoredMessage {
            room: "r".into(),
            user: "u".into(),
            content: json!(seq),
            seq,
            ts: 0,
        };
        room.store(
            Arc::new(Stored {
                message,
                json: Outgoing::text(Vec::new()),
            }),
            cap,
        );
    }

    #[test]
    fn presence_counts_connections_per_user() {
        let mut room = Room::default();
        assert!(room.add(id(1), Dialect::Json, "alice"));
        assert!(!room.add(id(2), Dialect::Chat, "alice"));
        assert!(room.add(id(3), Dialect::Json, "bob"));
        assert!(!room.add(id(4), Dialect::PubSub, "alice"));
        assert_eq!(room.users(), ["alice", "bob"]);
        assert_eq!(room.remove(id(1), "alice"), Some((Dialect::Json, false)));
        assert_eq!(room.remove(id(2), "alice"), Some((Dialect::Chat, true)));
        assert_eq!(room.remove(id(4), "alice"), Some((Dialect::PubSub, false)));
        assert_eq!(room.remove(id(4), "alice"), None);
        assert_eq!(room.users(), ["bob"]);
        assert!(room.is_member(id(3)) && !room.is_member(id(1)));
        assert_eq!(room.remove(id(3), "bob"), Some((Dialect::Json, true)));
        assert!(room.is_empty());
    }

    #[test]
    fn swap_remove_keeps_positions_right() {
        let mut room = Room::default();
        for n in 0..10 {
            room.add(id(n), Dialect::Json, &format!("u{n}"));
        }
        for n in [0, 5, 9, 3] {
            room.remove(id(n), &format!("u{n}"));
        }
        for (pos, (member, _)) in room.members().iter().enumerate() {
            assert_eq!(room.positions[member], pos);
        }
        assert_eq!(room.len(), 6);
    }

    #[test]
    fn history_is_bounded_and_recovery_knows_gaps() {
        let mut room = Room::default();
        for _ in 0..5 {
            stored(&mut room, 3);
        }
        // Kept: 3, 4, 5.
        let (missed, complete) = room.since(2);
        assert_eq!(missed.map(|s| s.message.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(complete);
        let (missed, complete) = room.since(1);
        assert_eq!(missed.count(), 3);
        assert!(!complete, "message 2 is gone");
        let (missed, complete) = room.since(5);
        assert_eq!(missed.count(), 0);
        assert!(complete);
        let (_, complete) = Room::default().since(0);
        assert!(complete);
    }
}
