//! One worker's handle on the Redis engine: requests become calls of
//! `room.lua` on the room's (or user's) shard; replies and the live stream
//! of each room this worker has members in become `Delivery`s, in the
//! order the contract asks for (docs/architecture.md).
//!
//! Every room event carries the room's event number `ev` (one counter per
//! room, taken by every event in `room.lua`'s `emit`), and every reply the
//! numbers before and after the call's own events. With both on one ordered
//! connection (`io.rs`), the worker places each reply exactly:
//!
//! - a `Joined` goes after every event up to its `ev` and before the
//!   rest: while a join is outstanding, live events of the room that may be
//!   after it are held back (`held`) until its reply says where it stands;
//! - a reply waits for the call's own events (`ack` after the sender's own
//!   copy of its message), and holds the later replies of its room behind
//!   it (`ready`), so a room's replies keep their order;
//! - events are contiguous per room: a gap, or an event of another epoch,
//!   means the room's history was reset under its members, who are told
//!   (`Delivery::Reset`).
//!
//! When a shard's connection drops, every reply owed is answered
//! `unavailable`; when it is back, each room with members here is resynced
//! (`room.lua` `resync`): this worker's presence is written again and the
//! messages after the last one delivered come from the history, or, if
//! that cannot be proven complete, the members are reset.

use super::events::{self, Placed};
use super::io::{RedisEvent, Shared as IoShared, ToIo};
use super::resp::Value;
use super::script::{Caller, Epochs, Target, shard_of};
use crate::engine::memory::{Envelope, Hub};
use crate::engine::{
    Delivery, Engine, EngineCounts, EventKind, JoinedRoom, Key, Lane, Member, Name, Position, Refused, Request,
    RoomCount, RoomEvent, Stored, Ticket,
};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// What every worker of a node shares.
#[derive(Debug)]
pub struct Common {
    pub node: String,
    pub caller: Caller,
    /// Channel prefix per shard (`rc:DB:`).
    pub prefixes: Vec<String>,
    pub io: Arc<IoShared>,
}

/// A reply this worker is owed by a shard, in the order sent.
#[derive(Debug)]
enum Pending {
    Join {
        room: Name,
        ticket: Ticket,
        member: Member,
        again: bool,
    },
    Leave {
        room: Name,
        ticket: Ticket,
    },
    Publish {
        room: Name,
        ticket: Ticket,
    },
    Typing {
        room: Name,
        ticket: Ticket,
    },
    Presence {
        room: Name,
        ticket: Ticket,
    },
    History {
        room: Name,
        ticket: Ticket,
    },
    Direct {
        ticket: Ticket,
    },
    Resync {
        room: Name,
    },
    Disconnect {
        ticket: Ticket,
    },
    /// One shard's part of listing `token`.
    Rooms {
        token: u64,
    },
}

/// A `Rooms` request waiting for every shard's part.
#[derive(Debug)]
struct Listing {
    ticket: Ticket,
    remaining: usize,
    rooms: Vec<RoomCount>,
    failed: bool,
}

#[derive(Debug, Default)]
struct ShardView {
    /// The connection this worker last saw come up; `None` while down.
    link_no: Option<u64>,
    run: Name,
    pending: VecDeque<Pending>,
}

/// This worker's view of one room.
#[derive(Debug)]
struct RoomLink {
    shard: usize,
    /// This worker's members, as written to Redis.
    members: u32,
    roster: u32,
    users: HashMap<Name, u32>,
    /// Joins and resyncs whose reply has not come.
    joining: u32,
    /// The last event delivered here.
    last: Option<u64>,
    /// Events up to here happened before every call still outstanding.
    horizon: u64,
    epoch: Option<Name>,
    /// The last message delivered here.
    last_seq: Option<u64>,
    /// Live events held back behind an outstanding join.
    held: VecDeque<Placed>,
    /// Replies in order, each waiting for the stream to reach its `ev`.
    ready: VecDeque<(u64, Delivery)>,
    /// The shard went down: the stream must be resynced.
    broken: bool,
    /// A write may have reached Redis without its reply: resync even
    /// without members, so no stale presence is left.
    dirty: bool,
}

impl RoomLink {
    fn new(shard: usize) -> Self {
        RoomLink {
            shard,
            members: 0,
            roster: 0,
            users: HashMap::new(),
            joining: 0,
            last: None,
            horizon: 0,
            epoch: None,
            last_seq: None,
            held: VecDeque::new(),
            ready: VecDeque::new(),
            broken: false,
            dirty: false,
        }
    }

    fn add(&mut self, member: &Member) {
        self.members += 1;
        self.roster += u32::from(member.roster);
        if member.present {
            *self.users.entry(member.user.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, member: &Member) {
        if self.members == 0 {
            return;
        }
        self.members -= 1;
        if member.roster {
            self.roster = self.roster.saturating_sub(1);
        }
        if member.present
            && let Some(n) = self.users.get_mut(&member.user)
        {
            *n -= 1;
            if *n == 0 {
                self.users.remove(&member.user);
            }
        }
    }

    /// A fresh subscription: nothing is known of the stream yet.
    fn restart_stream(&mut self) {
        self.last = None;
        self.horizon = 0;
        self.epoch = None;
        self.last_seq = None;
        self.held.clear();
    }

    /// Whether replies must wait for the live stream.
    fn gated(&self) -> bool {
        self.members > 0 && !self.broken && self.last.is_some()
    }

    fn idle(&self) -> bool {
        self.members == 0 && self.joining == 0 && self.ready.is_empty() && !self.dirty
    }

    /// Delivers one live event (or drops it as already seen).
    fn deliver(&mut self, room: &Name, placed: Placed, out: &mut Vec<Delivery>) {
        if self.epoch.as_ref().is_some_and(|e| *e != placed.epoch) {
            log::warn!(
                "redis: room {room} has a new history (epoch {}); its members here must rejoin",
                placed.epoch
            );
            return self.reset(room, placed, out);
        }
        if let Some(last) = self.last {
            if placed.ev <= last {
                return;
            }
            if placed.ev > last + 1 {
                log::error!(
                    "redis: room {room} skipped events {}..{}; its members here must rejoin",
                    last + 1,
                    placed.ev - 1
                );
                return self.reset(room, placed, out);
            }
        }
        self.last = Some(placed.ev);
        if let EventKind::Message(stored) = &placed.event.kind {
            let seq = stored.message.seq;
            if self.last_seq.is_some_and(|s| seq <= s) {
                return self.release(out);
            }
            self.last_seq = Some(seq);
        }
        out.push(Delivery::Room(placed.event));
        self.release(out);
    }

    /// The members here can no longer be given a complete stream.
    fn reset(&mut self, room: &Name, placed: Placed, out: &mut Vec<Delivery>) {
        out.push(Delivery::Reset { room: room.clone() });
        self.epoch = Some(placed.epoch);
        self.last = Some(placed.ev);
        self.last_seq = None;
        self.release(out);
    }

    /// Hands on the replies whose place in the stream has come.
    fn release(&mut self, out: &mut Vec<Delivery>) {
        let gated = self.gated();
        let last = self.last.unwrap_or(0);
        while let Some((gate, _)) = self.ready.front() {
            if gated && *gate > last {
                break;
            }
            if let Some((_, delivery)) = self.ready.pop_front() {
                out.push(delivery);
            }
        }
    }

    /// A reply whose own events end at `after`: held events up to there
    /// may go, and the reply goes once the stream has passed `gate`.
    fn reply(&mut self, room: &Name, gate: u64, after: u64, delivery: Delivery, out: &mut Vec<Delivery>) {
        self.horizon = self.horizon.max(after);
        self.ready.push_back((gate, delivery));
        // The reply first if its place has come, then the events after it.
        self.release(out);
        self.flush_held(room, self.horizon, out);
    }

    /// Delivers held events up to `upto`.
    fn flush_held(&mut self, room: &Name, upto: u64, out: &mut Vec<Delivery>) {
        while self.held.front().is_some_and(|p| p.ev <= upto) {
            if let Some(p) = self.held.pop_front() {
                self.deliver(room, p, out);
            }
        }
    }

    /// A join or resync answered at position `ev0`: the stream is there.
    fn settle_at(&mut self, room: &Name, ev0: u64, out: &mut Vec<Delivery>) {
        self.flush_held(room, ev0, out);
        match self.last {
            Some(l) if l >= ev0 => {}
            _ => self.last = Some(ev0),
        }
    }

    /// Everything held goes now, in order (the shard went down).
    fn drain(&mut self, room: &Name, out: &mut Vec<Delivery>) {
        let held: Vec<Placed> = self.held.drain(..).collect();
        for p in held {
            self.deliver(room, p, out);
        }
        out.extend(self.ready.drain(..).map(|(_, d)| d));
    }
}

pub struct RedisEngine {
    me: usize,
    hub: Arc<Hub>,
    common: Arc<Common>,
    shards: Vec<ShardView>,
    rooms: HashMap<Name, RoomLink>,
    /// This worker's `/ws` connections per user.
    users: HashMap<Name, u32>,
    outbox: Vec<ToIo>,
    incoming: Vec<Envelope>,
    epochs: Epochs,
    listings: HashMap<u64, Listing>,
    next_listing: u64,
}

fn ints(v: &Value, n: usize) -> Option<Vec<i64>> {
    let items = v.as_array()?;
    (0..n).map(|i| items.get(i)?.as_int()).collect()
}

fn names(v: Option<&Value>) -> Option<Vec<Name>> {
    v?.as_array()?.iter().map(|u| u.as_str().map(Name::from)).collect()
}

fn entries(room: &str, v: Option<&Value>) -> Option<Vec<Arc<Stored>>> {
    v?.as_array()?
        .iter()
        .map(|e| events::stored(room, e.as_bytes()?))
        .collect()
}

/// `room.lua` `rooms`' flat reply: room, members, users, ...
fn room_counts(v: &Value) -> Option<Vec<RoomCount>> {
    let items = v.as_array()?;
    if items.len() % 3 != 0 {
        return None;
    }
    items
        .chunks(3)
        .map(|t| {
            Some(RoomCount {
                room: t[0].as_str()?.into(),
                members: u64::try_from(t[1].as_int()?).ok()?,
                users: u64::try_from(t[2].as_int()?).ok()?,
            })
        })
        .collect()
}

/// A `[ev, X]` reply: the room's event position (the gate its answer waits
/// for) and what `second` reads from X; an error or a malformed reply is
/// refused, at gate 0.
fn gated<T>(
    result: &Result<Value, String>,
    second: impl FnOnce(Option<&Value>) -> Option<T>,
    malformed: &str,
) -> (u64, Result<T, Refused>) {
    let parsed = result.as_ref().ok().and_then(|v| {
        let items = v.as_array()?;
        Some((items.first()?.as_int()? as u64, second(items.get(1))?))
    });
    match (parsed, result) {
        (Some((ev, value)), _) => (ev, Ok(value)),
        (None, Err(e)) => (0, refused(e)),
        (None, Ok(_)) => (0, refused(malformed)),
    }
}

fn refused<T>(why: &str) -> Result<T, Refused> {
    log::debug!("redis: {why}");
    Err(Refused::Unavailable)
}

impl RedisEngine {
    pub fn new(hub: Arc<Hub>, common: Arc<Common>, me: usize, initial: &[(u64, Name)]) -> Self {
        RedisEngine {
            me,
            hub,
            shards: initial
                .iter()
                .map(|(link_no, run)| ShardView {
                    link_no: Some(*link_no),
                    run: run.clone(),
                    pending: VecDeque::new(),
                })
                .collect(),
            common,
            rooms: HashMap::new(),
            users: HashMap::new(),
            outbox: Vec::new(),
            incoming: Vec::new(),
            epochs: Epochs::new(),
            listings: HashMap::new(),
            next_listing: 0,
        }
    }

    fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn room_shard(&self, room: &str) -> usize {
        shard_of(room, self.shard_count())
    }

    fn user_shard(&self, user: &str) -> usize {
        // Users hash apart from rooms of the same name.
        shard_of(&format!("user:{user}"), self.shard_count())
    }

    fn cmd(&mut self, shard: usize, op: &str, args: &[&[u8]], reply: bool) {
        let view = &self.shards[shard];
        let target = Target {
            channels: &self.common.prefixes[shard],
            run: &view.run,
        };
        let mut bytes = Vec::with_capacity(256);
        self.common
            .caller
            .call(&mut bytes, &target, &self.epochs.fresh(), op, args);
        self.outbox.push(ToIo::Cmd {
            shard,
            link_no: view.link_no.unwrap_or(0),
            worker: self.me,
            bytes,
            reply,
        });
    }

    fn expect(&mut self, shard: usize, pending: Pending) {
        self.shards[shard].pending.push_back(pending);
    }

    fn link(&mut self, room: &Name) -> &mut RoomLink {
        let shard = self.room_shard(room);
        self.rooms.entry(room.clone()).or_insert_with(|| RoomLink::new(shard))
    }

    /// `node.worker.index.generation`: a connection anywhere in the cluster.
    fn conn_ref(&self, conn: crate::net::ConnId) -> String {
        format!("{}.{}.{}.{}", self.common.node, self.me, conn.index, conn.generation)
    }

    fn handle(&mut self, request: Request, out: &mut Vec<Delivery>) {
        let me = self.me.to_string();
        let flag = |b: bool| if b { "1" } else { "0" };
        match request {
            Request::Join {
                room,
                member,
                since,
                again,
                ticket,
            } => {
                let skip = self.conn_ref(member.conn);
                let shard = self.room_shard(&room);
                let link = self.link(&room);
                let fresh = !again && link.members == 0;
                if fresh {
                    link.restart_stream();
                }
                if !again {
                    link.add(&member);
                }
                link.joining += 1;
                if fresh {
                    self.outbox.push(ToIo::Sub {
                        shard,
                        worker: self.me,
                        room: room.clone(),
                    });
                }
                let (since_seq, since_epoch) = match &since {
                    Some(s) => (s.seq.to_string(), s.epoch.clone().unwrap_or_default()),
                    None => (String::new(), String::new()),
                };
                let args: [&[u8]; 9] = [
                    room.as_bytes(),
                    me.as_bytes(),
                    member.user.as_bytes(),
                    flag(member.present).as_bytes(),
                    flag(member.roster).as_bytes(),
                    skip.as_bytes(),
                    flag(again).as_bytes(),
                    since_seq.as_bytes(),
                    since_epoch.as_bytes(),
                ];
                self.cmd(shard, "join", &args, true);
                self.expect(
                    shard,
                    Pending::Join {
                        room,
                        ticket,
                        member,
                        again,
                    },
                );
            }
            Request::Leave { room, member, ticket } => {
                let shard = self.room_shard(&room);
                let link = self.link(&room);
                let had = link.members > 0;
                link.remove(&member);
                if had && link.members == 0 {
                    self.outbox.push(ToIo::Unsub {
                        shard,
                        worker: self.me,
                        room: room.clone(),
                    });
                }
                let args: [&[u8]; 5] = [
                    room.as_bytes(),
                    me.as_bytes(),
                    member.user.as_bytes(),
                    flag(member.present).as_bytes(),
                    flag(member.roster).as_bytes(),
                ];
                self.cmd(shard, "leave", &args, ticket.is_some());
                match ticket {
                    Some(ticket) => self.expect(shard, Pending::Leave { room, ticket }),
                    None => self.forget_if_idle(&room),
                }
            }
            Request::Publish {
                room,
                user,
                content,
                ticket,
            } => {
                let shard = self.room_shard(&room);
                let fields = format!(
                    "\"user\":{},\"content\":{}",
                    serde_json::Value::from(&*user),
                    serde_json::to_string(&content).unwrap_or_else(|_| "null".into())
                );
                self.cmd(
                    shard,
                    "publish",
                    &[room.as_bytes(), fields.as_bytes()],
                    ticket.is_some(),
                );
                if let Some(ticket) = ticket {
                    self.expect(shard, Pending::Publish { room, ticket });
                }
            }
            Request::Relay { room, data } => {
                let shard = self.room_shard(&room);
                self.cmd(shard, "relay", &[room.as_bytes(), &data], false);
            }
            Request::Typing {
                room,
                user,
                typing,
                from,
                ticket,
            } => {
                let shard = self.room_shard(&room);
                let skip = self.conn_ref(from);
                let args: [&[u8]; 4] = [
                    room.as_bytes(),
                    user.as_bytes(),
                    flag(typing).as_bytes(),
                    skip.as_bytes(),
                ];
                self.cmd(shard, "typing", &args, ticket.is_some());
                if let Some(ticket) = ticket {
                    self.expect(shard, Pending::Typing { room, ticket });
                }
            }
            Request::Presence { room, ticket } => {
                let shard = self.room_shard(&room);
                self.cmd(shard, "presence", &[room.as_bytes()], true);
                self.expect(shard, Pending::Presence { room, ticket });
            }
            Request::History {
                room,
                since,
                limit,
                ticket,
            } => {
                let shard = self.room_shard(&room);
                let since = since.map(|s| s.to_string()).unwrap_or_default();
                let limit = limit.map(|l| l.to_string()).unwrap_or_default();
                self.cmd(
                    shard,
                    "history",
                    &[room.as_bytes(), since.as_bytes(), limit.as_bytes()],
                    true,
                );
                self.expect(shard, Pending::History { room, ticket });
            }
            Request::UserOnline { user } => {
                *self.users.entry(user.clone()).or_default() += 1;
                let shard = self.user_shard(&user);
                self.cmd(shard, "online", &[user.as_bytes(), me.as_bytes()], false);
            }
            Request::UserOffline { user } => {
                if let Some(n) = self.users.get_mut(&user) {
                    *n -= 1;
                    if *n == 0 {
                        self.users.remove(&user);
                    }
                }
                let shard = self.user_shard(&user);
                self.cmd(shard, "offline", &[user.as_bytes(), me.as_bytes()], false);
            }
            Request::Direct { to, event, ticket } => {
                let shard = self.user_shard(&to);
                self.cmd(shard, "direct", &[to.as_bytes(), event.payload()], ticket.is_some());
                if let Some(ticket) = ticket {
                    self.expect(shard, Pending::Direct { ticket });
                }
            }
            Request::Disconnect { user, code, ticket } => {
                // This node's workers are told here (this one first), the
                // other live nodes through their channels.
                for w in 0..self.hub.workers() {
                    let delivery = Delivery::Disconnect {
                        user: user.clone(),
                        code,
                    };
                    if w == self.me {
                        out.push(delivery);
                    } else {
                        self.hub.mailbox(w).send(Envelope::Delivery(delivery));
                    }
                }
                let shard = self.user_shard(&user);
                let code = code.to_string();
                self.cmd(
                    shard,
                    "disconnect",
                    &[user.as_bytes(), code.as_bytes()],
                    ticket.is_some(),
                );
                if let Some(ticket) = ticket {
                    self.expect(shard, Pending::Disconnect { ticket });
                }
            }
            Request::Rooms { ticket } => {
                // Rooms are sharded: every shard lists its own.
                self.next_listing += 1;
                let token = self.next_listing;
                let listing = Listing {
                    ticket,
                    remaining: self.shard_count(),
                    rooms: Vec::new(),
                    failed: false,
                };
                self.listings.insert(token, listing);
                for shard in 0..self.shard_count() {
                    self.cmd(shard, "rooms", &[], true);
                    self.expect(shard, Pending::Rooms { token });
                }
            }
        }
    }

    /// One shard's part of a `Rooms` listing; the last completes it.
    fn listed(&mut self, token: u64, result: Result<Value, String>, out: &mut Vec<Delivery>) {
        let Some(listing) = self.listings.get_mut(&token) else {
            return;
        };
        match result.as_ref().map(room_counts) {
            Ok(Some(rooms)) => listing.rooms.extend(rooms),
            Ok(None) => {
                log::debug!("redis: a rooms reply that is not (room, members, users) triples");
                listing.failed = true;
            }
            Err(e) => {
                log::debug!("redis: {e}");
                listing.failed = true;
            }
        }
        listing.remaining -= 1;
        if listing.remaining == 0
            && let Some(mut listing) = self.listings.remove(&token)
        {
            let result = if listing.failed {
                Err(Refused::Unavailable)
            } else {
                listing.rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
                Ok(listing.rooms)
            };
            out.push(Delivery::Rooms {
                ticket: listing.ticket,
                result,
            });
        }
    }

    fn forget_if_idle(&mut self, room: &Name) {
        if self.rooms.get(room).is_some_and(RoomLink::idle) {
            self.rooms.remove(room);
        }
    }

    fn on_mail(&mut self, event: RedisEvent, out: &mut Vec<Delivery>) {
        match event {
            RedisEvent::Reply { shard, result } => {
                let Some(pending) = self.shards[shard].pending.pop_front() else {
                    log::error!("redis: a reply this worker was not owed");
                    return;
                };
                self.on_reply(pending, result, out);
            }
            RedisEvent::Room { room, placed } => {
                let Some(link) = self.rooms.get_mut(&room) else { return };
                if link.members == 0 || link.broken {
                    return;
                }
                if link.joining > 0 && placed.ev > link.horizon {
                    link.held.push_back(placed);
                } else {
                    link.deliver(&room, placed, out);
                }
            }
            RedisEvent::Direct { to, event } => out.push(Delivery::Direct { to, event }),
            RedisEvent::Down { shard } => {
                self.shards[shard].link_no = None;
                for (room, link) in self.rooms.iter_mut().filter(|(_, l)| l.shard == shard) {
                    link.drain(room, out);
                    link.broken = true;
                    link.joining = 0;
                    link.last = None;
                    link.horizon = 0;
                }
            }
            RedisEvent::Up { shard, link_no, run } => {
                let view = &mut self.shards[shard];
                if view.link_no == Some(link_no) {
                    return;
                }
                view.link_no = Some(link_no);
                view.run = run;
                self.resync(shard);
            }
        }
    }

    /// After a reconnect: this worker's presence and users written again,
    /// and each room's stream brought up to date.
    fn resync(&mut self, shard: usize) {
        let me = self.me.to_string();
        let rooms: Vec<Name> = self
            .rooms
            .iter()
            .filter(|(_, l)| l.shard == shard && (l.members > 0 || l.dirty || l.broken))
            .map(|(r, _)| r.clone())
            .collect();
        for room in rooms {
            let Some(link) = self.rooms.get_mut(&room) else {
                continue;
            };
            // Subscribed again (the thread did it before telling us): live
            // events are held until the resync says where the room is.
            link.broken = false;
            link.joining += 1;
            let counts: Vec<(String, String)> =
                link.users.iter().map(|(u, n)| (u.to_string(), n.to_string())).collect();
            let (members, roster) = (link.members.to_string(), link.roster.to_string());
            let last_seq = link.last_seq.map(|s| s.to_string()).unwrap_or_default();
            let epoch = link.epoch.as_deref().unwrap_or_default().to_string();
            let mut args: Vec<&[u8]> = vec![
                room.as_bytes(),
                me.as_bytes(),
                members.as_bytes(),
                roster.as_bytes(),
                last_seq.as_bytes(),
                epoch.as_bytes(),
            ];
            for (u, n) in &counts {
                args.push(u.as_bytes());
                args.push(n.as_bytes());
            }
            self.cmd(shard, "resync", &args, true);
            self.expect(shard, Pending::Resync { room });
        }
        let users: Vec<(String, String)> = self
            .users
            .iter()
            .filter(|(u, _)| self.user_shard(u) == shard)
            .map(|(u, n)| (u.to_string(), n.to_string()))
            .collect();
        let mut chunks: Vec<&[(String, String)]> = users.chunks(500).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            let clear = if i == 0 { "1" } else { "0" };
            let mut args: Vec<&[u8]> = vec![me.as_bytes(), clear.as_bytes()];
            for (u, n) in chunk {
                args.push(u.as_bytes());
                args.push(n.as_bytes());
            }
            self.cmd(shard, "restore_users", &args, false);
        }
    }

    fn on_reply(&mut self, pending: Pending, result: Result<Value, String>, out: &mut Vec<Delivery>) {
        match pending {
            Pending::Join {
                room,
                ticket,
                member,
                again,
            } => self.on_joined(room, ticket, member, again, result, out),
            Pending::Resync { room } => self.on_resync(room, result, out),
            Pending::Disconnect { ticket } => {
                let result = match result.as_ref().map(Value::as_int) {
                    Ok(Some(_)) => Ok(None),
                    Ok(None) => refused("a disconnect reply without its count"),
                    Err(e) => refused(e),
                };
                out.push(Delivery::Done { ticket, result });
            }
            Pending::Rooms { token } => self.listed(token, result, out),
            Pending::Direct { ticket } => {
                let result = match result.as_ref().map(Value::as_int) {
                    Ok(Some(n)) if n > 0 => Ok(None),
                    Ok(Some(_)) => Err(Refused::UserOffline),
                    Ok(None) => refused("a direct reply without its count"),
                    Err(e) => refused(e),
                };
                out.push(Delivery::Done { ticket, result });
            }
            Pending::Leave { room, ticket } => {
                let (gate, after) = match &result {
                    Ok(v) => ints(v, 2).map_or((0, 0), |n| (n[0] as u64, n[1] as u64)),
                    Err(_) => (0, 0),
                };
                let delivery = Delivery::Left {
                    ticket,
                    room: room.clone(),
                };
                self.room_reply(&room, gate, after, delivery, out);
                self.forget_if_idle(&room);
            }
            Pending::Publish { room, ticket } => {
                let (gate, after, result) = match result.as_ref().map(|v| ints(v, 3)) {
                    Ok(Some(n)) => (n[1] as u64, n[1] as u64, Ok(Some(n[2] as u64))),
                    Ok(None) => (0, 0, refused("a publish reply without its seq")),
                    Err(e) => (0, 0, refused(e)),
                };
                self.room_reply(&room, gate, after, Delivery::Done { ticket, result }, out);
            }
            Pending::Typing { room, ticket } => {
                let (gate, result) = match result.as_ref().map(|v| ints(v, 2)) {
                    Ok(Some(n)) => (n[1] as u64, Ok(None)),
                    Ok(None) => (0, refused("a typing reply without its position")),
                    Err(e) => (0, refused(e)),
                };
                self.room_reply(&room, gate, gate, Delivery::Done { ticket, result }, out);
            }
            Pending::Presence { room, ticket } => {
                let (gate, result) = gated(&result, names, "a presence reply without users");
                let delivery = Delivery::Presence {
                    ticket,
                    room: room.clone(),
                    result,
                };
                self.room_reply(&room, gate, gate, delivery, out);
            }
            Pending::History { room, ticket } => {
                let (gate, result) = gated(&result, |v| entries(&room, v), "a history reply without messages");
                let delivery = Delivery::History {
                    ticket,
                    room: room.clone(),
                    result,
                };
                self.room_reply(&room, gate, gate, delivery, out);
            }
        }
    }

    fn room_reply(&mut self, room: &Name, gate: u64, after: u64, delivery: Delivery, out: &mut Vec<Delivery>) {
        match self.rooms.get_mut(room) {
            Some(link) => link.reply(room, gate, after, delivery, out),
            None => out.push(delivery),
        }
    }

    fn on_joined(
        &mut self,
        room: Name,
        ticket: Ticket,
        member: Member,
        again: bool,
        result: Result<Value, String>,
        out: &mut Vec<Delivery>,
    ) {
        let me = self.me;
        let Some(link) = self.rooms.get_mut(&room) else { return };
        link.joining = link.joining.saturating_sub(1);
        // [ev0, ev1, seq, epoch, users, recovered, missed]
        let parsed = result.as_ref().ok().and_then(|v| {
            let items = v.as_array()?;
            let n = ints(v, 3)?;
            let epoch: Name = items.get(3)?.as_str()?.into();
            let users = names(items.get(4))?;
            let recovered = match items.get(5)?.as_int()? {
                -1 => None,
                0 => Some(false),
                _ => Some(true),
            };
            let missed = entries(&room, items.get(6))?;
            Some((n[0] as u64, n[1] as u64, n[2] as u64, epoch, users, recovered, missed))
        });
        let Some((ev0, ev1, seq, epoch, users, recovered, missed)) = parsed else {
            if let Err(e) = &result {
                log::debug!("redis: join refused: {e}");
            } else {
                log::error!("redis: a join reply that does not parse: {result:?}");
            }
            let mut unsub = None;
            if !again {
                link.remove(&member);
                if link.members == 0 {
                    unsub = Some(ToIo::Unsub {
                        shard: link.shard,
                        worker: me,
                        room: room.clone(),
                    });
                }
            }
            link.dirty |= !again;
            let delivery = Delivery::Joined {
                ticket,
                room: room.clone(),
                result: Err(Refused::Unavailable),
            };
            link.reply(&room, 0, 0, delivery, out);
            self.outbox.extend(unsub);
            self.forget_if_idle(&room);
            return;
        };
        link.horizon = link.horizon.max(ev1);
        link.settle_at(&room, ev0, out);
        let others = link.members > u32::from(!again);
        if others && link.epoch.as_ref().is_some_and(|e| *e != epoch) {
            log::warn!("redis: room {room} has a new history (epoch {epoch}); its members here must rejoin");
            out.push(Delivery::Reset { room: room.clone() });
        }
        if link.epoch.as_ref() != Some(&epoch) {
            link.epoch = Some(epoch.clone());
            link.last_seq = Some(seq);
        } else {
            link.last_seq = Some(link.last_seq.map_or(seq, |s| s.max(seq)));
        }
        let delivery = Delivery::Joined {
            ticket,
            room: room.clone(),
            result: Ok(JoinedRoom {
                users,
                position: Position { seq, epoch },
                recovered,
                missed,
            }),
        };
        link.reply(&room, ev0, ev1, delivery, out);
    }

    fn on_resync(&mut self, room: Name, result: Result<Value, String>, out: &mut Vec<Delivery>) {
        let Some(link) = self.rooms.get_mut(&room) else { return };
        link.joining = link.joining.saturating_sub(1);
        // [ev0, ev1, seq, epoch, recovered, missed]
        let parsed = result.as_ref().ok().and_then(|v| {
            let items = v.as_array()?;
            let n = ints(v, 3)?;
            let epoch: Name = items.get(3)?.as_str()?.into();
            let whole = items.get(4)?.as_int()? == 1;
            Some((
                n[0] as u64,
                n[1] as u64,
                n[2] as u64,
                epoch,
                whole,
                entries(&room, items.get(5))?,
            ))
        });
        let Some((ev0, ev1, seq, epoch, whole, missed)) = parsed else {
            // Down again: the next reconnect resyncs.
            link.dirty = true;
            return;
        };
        link.broken = false;
        link.dirty = false;
        link.horizon = link.horizon.max(ev1);
        if link.members > 0 {
            let same = link.epoch.as_ref() == Some(&epoch) && link.last_seq.is_some();
            if same && whole {
                let first_live = link.held.iter().find_map(|p| match &p.event.kind {
                    EventKind::Message(s) => Some(s.message.seq),
                    _ => None,
                });
                for stored in missed {
                    let seq = stored.message.seq;
                    if first_live.is_some_and(|f| seq >= f) || link.last_seq.is_some_and(|l| seq <= l) {
                        continue;
                    }
                    link.last_seq = Some(seq);
                    out.push(Delivery::Room(RoomEvent::new(
                        room.clone(),
                        EventKind::Message(stored),
                        None,
                    )));
                }
            } else {
                log::warn!(
                    "redis: room {room}: what its members here missed while Redis was unreachable cannot be \
                     recovered; they must rejoin"
                );
                out.push(Delivery::Reset { room: room.clone() });
                link.last_seq = None;
            }
        }
        link.epoch = Some(epoch);
        link.last = None;
        link.settle_at(&room, ev0, out);
        link.last_seq = Some(link.last_seq.map_or(seq, |s| s.max(seq)));
        link.flush_held(&room, link.horizon, out);
        link.release(out);
        self.forget_if_idle(&room);
    }

    fn take_mail(&mut self, out: &mut Vec<Delivery>) {
        let mailbox = self.hub.mailbox(self.me).clone();
        mailbox.unpark();
        mailbox.take(&mut self.incoming);
        let mut incoming = std::mem::take(&mut self.incoming);
        for envelope in incoming.drain(..) {
            match envelope {
                Envelope::Redis(event) => self.on_mail(event, out),
                // A `Disconnect` from this node's worker or from its channel.
                Envelope::Delivery(delivery) => out.push(delivery),
                _ => {}
            }
        }
        self.incoming = incoming;
    }

    fn send(&mut self) {
        if !self.outbox.is_empty() {
            self.common.io.inbox.send_all(&mut self.outbox);
        }
    }

    /// Whether replies are still owed to this worker (tests wait for it).
    pub fn busy(&self) -> bool {
        self.owed()
    }

    fn owed(&self) -> bool {
        self.shards.iter().any(|s| !s.pending.is_empty()) || self.rooms.values().any(|l| !l.ready.is_empty())
    }
}

impl Engine for RedisEngine {
    fn lane(&self, key: Key<'_>) -> Lane {
        let owner = match key {
            Key::Room(r) => self.room_shard(r),
            Key::User(u) => self.user_shard(u),
        };
        Lane {
            owner,
            key: key.lane_hash(),
        }
    }

    fn request(&mut self, request: Request, out: &mut Vec<Delivery>) {
        self.handle(request, out);
    }

    fn poll(&mut self, out: &mut Vec<Delivery>) {
        self.take_mail(out);
    }

    fn flush(&mut self) -> bool {
        self.send();
        self.hub.mailbox(self.me).park()
    }

    /// Done once every reply this worker is owed has come (its members'
    /// leaves are in Redis); nobody else sends it work.
    fn finish(&mut self) -> bool {
        self.send();
        if self.owed() {
            return false;
        }
        true
    }

    fn counts(&self) -> EngineCounts {
        // Rooms with members on this node, counted once (by worker 0).
        let rooms = if self.me == 0 {
            self.common.io.rooms.load(Ordering::Relaxed)
        } else {
            0
        };
        EngineCounts {
            rooms,
            rooms_loaded: rooms,
        }
    }
}
