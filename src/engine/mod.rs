//! The engine seam: where room state lives beyond one worker
//! (docs/architecture.md has the contract in full).
//!
//! A worker's room layer sends [`Request`]s and applies the [`Delivery`]s
//! that come back; it never knows whether a room's owner is this worker,
//! another worker of the process (the in-process engine, [`memory`]), or
//! another process. The guarantees, in short:
//!
//! 1. one total order per room, decided by its owner: every worker with
//!    members gets the room's events in that order, its own included;
//! 2. a `Joined` reply carries the room's position at the moment the member
//!    was added: the member gets exactly the events after it;
//! 3. requests to one owner are handled, and answered, in the order sent;
//! 4. presence counts a user's connections on every worker;
//! 5. an owner hands an event to each worker with members once;
//! 6. direct messages reach a user's `/ws` connections on every worker;
//! 7. what cannot be done is answered with an error, never dropped;
//! 8. a `Disconnect` reaches every worker, a `Rooms` listing covers every
//!    owner.
//!
//! [`contract`] checks these against any implementation.

pub mod contract;
pub mod memory;
pub mod redis;
mod room_state;

use crate::net::{ConnId, Outgoing};
use serde::Serialize;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// A room or user name, shared by the many events that carry it.
pub type Name = Arc<str>;

/// One stored chat message, as `message` events and `history` replies show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredMessage {
    pub room: String,
    pub user: String,
    pub content: Value,
    pub seq: u64,
    pub ts: u64,
}

/// A message kept for `history` and recovery. Its `/ws` event is encoded
/// once, by the first worker that needs it, and shared by live fan-out and
/// every later replay.
pub struct Stored {
    pub message: StoredMessage,
    pub json: OnceLock<Outgoing>,
}

impl Stored {
    pub fn new(message: StoredMessage) -> Arc<Self> {
        Arc::new(Stored {
            message,
            json: OnceLock::new(),
        })
    }
}

/// Two stored messages are the same message when their contents are.
impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.message.fmt(f)
    }
}

/// Where a command's reply goes: a connection of the requesting worker,
/// and the command's `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ticket {
    pub conn: ConnId,
    pub id: Option<Value>,
}

/// A connection anywhere in the process: its worker and its id there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnRef {
    pub worker: usize,
    pub id: ConnId,
}

/// A member of a room, as its owner counts it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub conn: ConnId,
    pub user: Name,
    /// Counted in presence (`/ws` and chat members; pub/sub subscribers are not).
    pub present: bool,
    /// A chat-tutorial member: gets `online_users` after every join and
    /// leave, and its own `user_joined` (`/ws` learns of itself from `joined`).
    pub roster: bool,
}

/// A recovery point a client brings to `join`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Since {
    pub seq: u64,
    /// The epoch the client saw `seq` in; without it nothing can be proven
    /// recovered.
    pub epoch: Option<String>,
}

/// What a worker asks of the engine. Every request with a ticket is
/// answered exactly once.
#[derive(Debug)]
pub enum Request {
    /// Adds a member; answered with `Joined`.
    Join {
        room: Name,
        member: Member,
        since: Option<Since>,
        /// Already a member: only the position (and recovery) is wanted.
        again: bool,
        ticket: Ticket,
    },
    /// Removes a member; answered with `Left` if it has a ticket.
    Leave {
        room: Name,
        member: Member,
        ticket: Option<Ticket>,
    },
    /// Assigns the next `seq`, appends to history, delivers; answered with
    /// `Done` (carrying the `seq`) if it has a ticket.
    Publish {
        room: Name,
        user: Name,
        content: Value,
        ticket: Option<Ticket>,
    },
    /// A binary frame for the room's chat and pub/sub members, in the
    /// room's order; no `seq`, no history.
    Relay { room: Name, data: Vec<u8> },
    /// Delivered to every member but the sender's connection.
    Typing {
        room: Name,
        user: Name,
        typing: bool,
        from: ConnId,
        ticket: Option<Ticket>,
    },
    /// Answered with `Presence`.
    Presence { room: Name, ticket: Ticket },
    /// Answered with `History`: messages with `seq > since` (default 0),
    /// oldest first; with `limit`, the oldest `limit` after `since` or,
    /// without `since`, the newest `limit`.
    History {
        room: Name,
        since: Option<u64>,
        limit: Option<usize>,
        ticket: Ticket,
    },
    /// A `/ws` connection of `user` opened on the requesting worker.
    UserOnline { user: Name },
    /// One closed.
    UserOffline { user: Name },
    /// An encoded `direct` event for every `/ws` connection of `to`;
    /// answered with `Done` (`UserOffline` when there is none).
    Direct {
        to: Name,
        event: Arc<Outgoing>,
        ticket: Option<Ticket>,
    },
    /// Every connection of `user`, on every worker and in every dialect,
    /// is to be closed with `code`; answered with `Done` once every worker
    /// has been handed the `Disconnect` (the requester's own first).
    Disconnect {
        user: Name,
        code: u16,
        ticket: Option<Ticket>,
    },
    /// Every room with members, from every owner; answered with `Rooms`.
    Rooms { ticket: Ticket },
}

/// Why the engine could not carry out a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A direct message for a user with no `/ws` connection.
    UserOffline,
    /// The state it needs (store, Redis) cannot be reached now.
    Unavailable,
}

/// A room's position: the last `seq` and the epoch it counts in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub seq: u64,
    pub epoch: Name,
}

/// The owner's answer to a join.
#[derive(Debug)]
pub struct JoinedRoom {
    pub users: Vec<Name>,
    pub position: Position,
    /// With `since`: whether every message after it is in `missed`.
    pub recovered: Option<bool>,
    /// With a recoverable `since`: the messages after it, oldest first.
    pub missed: Vec<Arc<Stored>>,
}

/// What happened in a room, for every worker with members there.
#[derive(Debug)]
pub enum EventKind {
    Message(Arc<Stored>),
    Binary(Vec<u8>),
    UserJoined(Name),
    UserLeft(Name),
    /// The room's users after a join or leave (the chat tutorial's `online_users`).
    OnlineUsers(Vec<Name>),
    Typing {
        user: Name,
        typing: bool,
    },
}

/// A room event, made once by the owner and shared by every worker that
/// delivers it.
#[derive(Debug)]
pub struct RoomEvent {
    pub room: Name,
    pub kind: EventKind,
    /// A connection that does not get this event.
    pub skip: Option<ConnRef>,
    /// The event encoded for each dialect, by the first worker that needs it.
    pub encoded: [OnceLock<Option<Outgoing>>; 3],
    /// When the owner made it (for the publish-to-enqueue latency).
    pub at: std::time::Instant,
}

impl RoomEvent {
    pub fn new(room: Name, kind: EventKind, skip: Option<ConnRef>) -> Arc<Self> {
        Arc::new(RoomEvent {
            room,
            kind,
            skip,
            encoded: Default::default(),
            at: std::time::Instant::now(),
        })
    }
}

/// A room with members, as `Rooms` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomCount {
    pub room: Name,
    /// Connections in the room on every worker (pub/sub subscribers included).
    pub members: u64,
    /// Present users, each once (as `Presence` lists them).
    pub users: u64,
}

/// What the engine gives a worker.
#[derive(Debug)]
pub enum Delivery {
    /// For this worker's members of the event's room, in the room's order.
    Room(Arc<RoomEvent>),
    /// For this worker's `/ws` connections of `to`.
    Direct {
        to: Name,
        event: Arc<Outgoing>,
    },
    Joined {
        ticket: Ticket,
        room: Name,
        result: Result<JoinedRoom, Refused>,
    },
    Left {
        ticket: Ticket,
        room: Name,
    },
    Presence {
        ticket: Ticket,
        room: Name,
        result: Result<Vec<Name>, Refused>,
    },
    History {
        ticket: Ticket,
        room: Name,
        result: Result<Vec<Arc<Stored>>, Refused>,
    },
    /// The outcome of a publish (with its `seq`), typing, direct or
    /// disconnect.
    Done {
        ticket: Ticket,
        result: Result<Option<u64>, Refused>,
    },
    /// This worker's members of `room` can no longer be given its events
    /// without a gap (its history was reset, or what they missed while
    /// the state was unreachable is gone): they must start afresh. The
    /// room layer closes them (1012), so clients rejoin with `since`.
    Reset {
        room: Name,
    },
    /// Close this worker's connections of `user` with `code`.
    Disconnect {
        user: Name,
        code: u16,
    },
    /// Every room with members, sorted by name.
    Rooms {
        ticket: Ticket,
        result: Result<Vec<RoomCount>, Refused>,
    },
}

impl Delivery {
    /// The ticket of a reply.
    pub fn ticket(&self) -> Option<&Ticket> {
        match self {
            Delivery::Joined { ticket, .. }
            | Delivery::Left { ticket, .. }
            | Delivery::Presence { ticket, .. }
            | Delivery::History { ticket, .. }
            | Delivery::Done { ticket, .. }
            | Delivery::Rooms { ticket, .. } => Some(ticket),
            Delivery::Room(_) | Delivery::Direct { .. } | Delivery::Disconnect { .. } | Delivery::Reset { .. } => None,
        }
    }
}

/// A stream of requests that is answered in the order it was sent: the
/// requests about one room (or one user) to its owner. The room layer keeps
/// a connection's replies in command order by sending more only within the
/// lane it is waiting on (docs/architecture.md, "Per-connection ordering").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lane {
    pub owner: usize,
    /// A hash of what the requests are about.
    pub key: u64,
}

impl Key<'_> {
    /// A hash that tells lanes apart (rooms from users of the same name).
    pub fn lane_hash(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
        let mut h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
        match self {
            Key::Room(name) => {
                h.write_u8(0);
                h.write(name.as_bytes());
            }
            Key::User(name) => {
                h.write_u8(1);
                h.write(name.as_bytes());
            }
        }
        h.finish()
    }
}

/// What a request is about, to find its owner.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    Room(&'a str),
    User(&'a str),
}

/// Counts an engine reports for `/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineCounts {
    /// Rooms with members, among those this worker owns.
    pub rooms: usize,
    /// Rooms this worker owns whose state is in memory (with members, or
    /// recently used).
    pub rooms_loaded: usize,
}

/// One worker's handle on the shared room state.
pub trait Engine: Send {
    /// The lane of requests about `key`.
    fn lane(&self, key: Key<'_>) -> Lane;

    /// Sends a request. What it leads to for this worker is appended to
    /// `out` when the request is carried out at once (this worker owns its
    /// subject), or comes later through `poll`.
    fn request(&mut self, request: Request, out: &mut Vec<Delivery>);

    /// Takes the work other threads handed to this worker (carrying out
    /// requests it owns) and appends the deliveries for this worker to
    /// `out`, in order.
    fn poll(&mut self, out: &mut Vec<Delivery>);

    /// Hands queued work to the other workers. Returns false when work for
    /// this worker is already waiting (the loop must not block).
    fn flush(&mut self) -> bool;

    /// This worker's connections are all gone (graceful shutdown). Returns
    /// true once no worker can send it more work, after which it has
    /// carried out everything it was sent.
    fn finish(&mut self) -> bool;

    /// Housekeeping (retention, idle rooms), called about once a second.
    fn tick(&mut self, _now_ms: u64) {}

    fn counts(&self) -> EngineCounts;

    /// The `n` rooms with the most members among those this worker owns
    /// (largest first).
    fn top_rooms(&self, _n: usize) -> Vec<(Name, u64)> {
        Vec::new()
    }
}
