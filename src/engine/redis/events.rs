//! What arrives on the channels: a room's events ("EV EPOCH KIND SKIP
//! BODY", written by `room.lua`'s `emit`) and a node's messages: direct
//! messages ("W1,W2 USER EVENT") and disconnects ("! CODE USER"). Each is
//! parsed once per node by the Redis thread into the shared value every
//! worker it is for delivers.

use crate::engine::{ConnRef, EventKind, Name, RoomEvent, Stored, StoredMessage};
use crate::net::{ConnId, Outgoing};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A retained message as `room.lua` stores it.
#[derive(Deserialize)]
struct Entry {
    seq: u64,
    ts: u64,
    user: String,
    content: Value,
}

/// A message of `room`'s history list.
pub fn stored(room: &str, entry: &[u8]) -> Option<Arc<Stored>> {
    let e: Entry = serde_json::from_slice(entry).ok()?;
    Some(Stored::new(StoredMessage {
        room: room.to_string(),
        user: e.user,
        content: e.content,
        seq: e.seq,
        ts: e.ts,
    }))
}

/// A room event with its place in the room's stream.
#[derive(Debug)]
pub struct Placed {
    pub ev: u64,
    pub epoch: Name,
    pub event: Arc<RoomEvent>,
}

fn split_word(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = s.iter().position(|b| *b == b' ')?;
    Some((&s[..at], &s[at + 1..]))
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// The connection an event skips, if it is on this node: "NODE.W.INDEX.GEN".
fn skip_of(field: &[u8], node: &str) -> Option<ConnRef> {
    let field = text(field)?;
    let mut parts = field.split('.');
    if parts.next()? != node {
        return None;
    }
    let worker = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    Some(ConnRef {
        worker,
        id: ConnId { index, generation },
    })
}

/// Parses one room event. `epochs` keeps one shared copy of each room's
/// epoch string, so events do not allocate it again.
pub fn room_event(room: &Name, payload: &[u8], node: &str, epochs: &mut HashMap<Name, Name>) -> Option<Placed> {
    let (ev, rest) = split_word(payload)?;
    let ev: u64 = text(ev)?.parse().ok()?;
    let (epoch, rest) = split_word(rest)?;
    let (kind, rest) = split_word(rest)?;
    let (skip, body) = split_word(rest)?;
    let epoch = text(epoch)?;
    let epoch = match epochs.get(room) {
        Some(known) if &**known == epoch => known.clone(),
        _ => {
            let fresh: Name = epoch.into();
            epochs.insert(room.clone(), fresh.clone());
            fresh
        }
    };
    let name = || text(body).map(Name::from);
    let kind = match kind {
        b"m" => EventKind::Message(stored(room, body)?),
        b"j" => EventKind::UserJoined(name()?),
        b"l" => EventKind::UserLeft(name()?),
        b"o" => {
            let users = text(body)?;
            let users = if users.is_empty() {
                Vec::new()
            } else {
                users.split(',').map(Name::from).collect()
            };
            EventKind::OnlineUsers(users)
        }
        b"t" => {
            let (typing, user) = split_word(body)?;
            EventKind::Typing {
                user: text(user)?.into(),
                typing: typing == b"1",
            }
        }
        b"b" => EventKind::Binary(body.to_vec()),
        _ => return None,
    };
    let skip = if skip == b"-" { None } else { skip_of(skip, node) };
    Some(Placed {
        ev,
        epoch,
        event: RoomEvent::new(room.clone(), kind, skip),
    })
}

/// What a node's channel carries.
#[derive(Debug)]
pub enum NodeMessage {
    /// An encoded direct event for `to`'s connections on these workers.
    Direct {
        workers: Vec<usize>,
        to: Name,
        event: Arc<Outgoing>,
    },
    /// Every connection of `user` on this node is to be closed with `code`.
    Disconnect { user: Name, code: u16 },
}

/// A message of this node's channel.
pub fn node_message(payload: &[u8]) -> Option<NodeMessage> {
    let (first, rest) = split_word(payload)?;
    if first == b"!" {
        let (code, user) = split_word(rest)?;
        let code = text(code)?.parse().ok()?;
        return Some(NodeMessage::Disconnect {
            user: text(user)?.into(),
            code,
        });
    }
    let (user, event) = split_word(rest)?;
    let workers = text(first)?
        .split(',')
        .map(|w| w.parse().ok())
        .collect::<Option<Vec<usize>>>()?;
    Some(NodeMessage::Direct {
        workers,
        to: text(user)?.into(),
        event: Arc::new(Outgoing::text(event.to_vec())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_room_lua_emits() {
        let mut epochs = HashMap::new();
        let room: Name = "lobby".into();
        let m = room_event(
            &room,
            br#"7 e1 m - {"seq":3,"ts":99,"user":"al","content":{"a":[1]}}"#,
            "n1",
            &mut epochs,
        )
        .unwrap();
        assert_eq!((m.ev, &*m.epoch), (7, "e1"));
        match &m.event.kind {
            EventKind::Message(s) => {
                assert_eq!((s.message.seq, s.message.ts, s.message.user.as_str()), (3, 99, "al"));
                assert_eq!(s.message.content, serde_json::json!({"a": [1]}));
            }
            other => panic!("{other:?}"),
        }
        let t = room_event(&room, b"8 e1 t n1.1.4.2 1 bob", "n1", &mut epochs).unwrap();
        assert!(Arc::ptr_eq(&epochs[&room], &t.epoch) || &*t.epoch == "e1");
        assert!(matches!(&t.event.kind, EventKind::Typing { user, typing: true } if &**user == "bob"));
        assert_eq!(
            t.event.skip,
            Some(ConnRef {
                worker: 1,
                id: ConnId {
                    index: 4,
                    generation: 2
                }
            })
        );
        let other_node = room_event(&room, b"9 e1 t n2.1.4.2 0 bob", "n1", &mut epochs).unwrap();
        assert_eq!(other_node.event.skip, None, "a connection of another node");
        let o = room_event(&room, b"10 e1 o - a,b", "n1", &mut epochs).unwrap();
        assert!(matches!(&o.event.kind, EventKind::OnlineUsers(u) if u.len() == 2));
        let empty = room_event(&room, b"11 e1 o - ", "n1", &mut epochs).unwrap();
        assert!(matches!(&empty.event.kind, EventKind::OnlineUsers(u) if u.is_empty()));
        let bin = room_event(&room, b"12 e1 b - \x00 \xff", "n1", &mut epochs).unwrap();
        assert!(matches!(&bin.event.kind, EventKind::Binary(d) if d == b"\x00 \xff"));
        for bad in [&b""[..], b"x e1 j - a", b"1 e1 q - a", b"1 e1 m - {", b"1 e1"] {
            assert!(room_event(&room, bad, "n1", &mut epochs).is_none(), "{bad:?}");
        }
        match node_message(b"0,2 bob {\"type\":\"direct\"}") {
            Some(NodeMessage::Direct { workers, to, event }) => assert_eq!(
                (workers, &*to, event.payload()),
                (vec![0, 2], "bob", &b"{\"type\":\"direct\"}"[..])
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            node_message(b"! 4001 al ice"),
            Some(NodeMessage::Disconnect { user, code: 4001 }) if &*user == "al ice"
        ));
        for bad in [&b"x bob e"[..], b"! 4001", b"! x bob", b"! 70000 bob", b"0,2 bob"] {
            assert!(node_message(bad).is_none(), "{bad:?}");
        }
    }
}
