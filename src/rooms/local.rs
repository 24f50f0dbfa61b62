//! This worker's members of a room: the room → connections half of the
//! index, for fan-out. Presence, order and history live with the room's
//! owner (`crate::engine`).

use crate::net::ConnId;
use std::collections::HashMap;

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

#[derive(Debug, Default)]
pub struct LocalRoom {
    /// Members in join order (swap-removed on leave), for fan-out.
    members: Vec<(ConnId, Dialect)>,
    /// Where each member sits in `members`.
    positions: HashMap<ConnId, usize>,
}

impl LocalRoom {
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

    /// Adds a member; false if it already was one.
    pub fn add(&mut self, id: ConnId, dialect: Dialect) -> bool {
        if self.positions.contains_key(&id) {
            return false;
        }
        self.positions.insert(id, self.members.len());
        self.members.push((id, dialect));
        true
    }

    /// Removes a member; false if it was not one.
    pub fn remove(&mut self, id: ConnId) -> bool {
        let Some(pos) = self.positions.remove(&id) else {
            return false;
        };
        self.members.swap_remove(pos);
        if let Some(&(moved, _)) = self.members.get(pos) {
            self.positions.insert(moved, pos);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> ConnId {
        ConnId {
            index: n,
            generation: 1,
        }
    }

    #[test]
    fn swap_remove_keeps_positions_right() {
        let mut room = LocalRoom::default();
        for n in 0..10 {
            assert!(room.add(id(n), Dialect::Json));
        }
        assert!(!room.add(id(3), Dialect::Chat));
        for n in [0, 5, 9, 3] {
            assert!(room.remove(id(n)));
        }
        assert!(!room.remove(id(0)));
        for (pos, (member, _)) in room.members().iter().enumerate() {
            assert_eq!(room.positions[member], pos);
        }
        assert_eq!(room.len(), 6);
        assert!(room.is_member(id(1)) && !room.is_member(id(5)));
    }
}
