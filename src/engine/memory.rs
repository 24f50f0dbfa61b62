//! The in-process engine: rooms and users sharded over the workers of one
//! process by a hash of their name; each worker owns its shard outright.
//!
//! A request for something this worker owns is carried out inside the
//! call. Anything else goes to its owner's outbox, handed over once per
//! loop turn (`flush`). Owners answer and fan out the same way. With one
//! worker everything is owned locally: no mailbox traffic at all.
//!
//! A room is *blocked* while its owner waits for the store (loading it,
//! reserving `seq`, reading older history): its requests queue in arrival
//! order and run when the answer comes, so a slow disk delays that room's
//! requests, never the loop or other rooms.

use super::room_state::{Plan, RoomState};
use super::{
    ConnRef, Delivery, Engine, EngineCounts, EventKind, JoinedRoom, Key, Lane, Name, Refused, Request, RoomCount,
    RoomEvent, Since, Stored, StoredMessage, Ticket,
};
use crate::net::mailbox::IDLE_CAPACITY;
use crate::runtime::{Finish, Mailbox, Workers};
use crate::store::{Kept, Retention, Store, StoreEvent};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// What travels between workers.
#[derive(Debug)]
pub enum Envelope {
    Request {
        from: usize,
        request: Request,
    },
    Delivery(Delivery),
    Store(StoreEvent),
    /// From a node's Redis thread (`crate::engine::redis`).
    Redis(crate::engine::redis::io::RedisEvent),
    /// Worker `from` gathers every owner's rooms (`Request::Rooms`).
    ListRooms {
        from: usize,
        token: u64,
    },
    /// One owner's part of that listing.
    RoomList {
        token: u64,
        rooms: Vec<RoomCount>,
    },
}

/// A `Rooms` request waiting for the owners' parts.
#[derive(Debug)]
struct Listing {
    ticket: Ticket,
    remaining: usize,
    rooms: Vec<RoomCount>,
}

/// The mailboxes of all workers, one per worker.
#[derive(Debug)]
pub struct Hub {
    mailboxes: Vec<Arc<Mailbox<Envelope>>>,
    finish: Arc<Finish>,
}

impl Hub {
    pub fn new(workers: &Workers) -> Arc<Hub> {
        Arc::new(Hub {
            mailboxes: workers
                .wakers
                .iter()
                .map(|w| Arc::new(Mailbox::new(w.clone())))
                .collect(),
            finish: workers.finish.clone(),
        })
    }

    /// Worker `index`'s mailbox (stores answer through it).
    pub fn mailbox(&self, index: usize) -> &Arc<Mailbox<Envelope>> {
        &self.mailboxes[index]
    }

    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }
}

/// Settings of room state, whatever the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    pub retention: Retention,
    /// Messages per room kept in memory; older retained ones are read from
    /// the store when asked for.
    pub tail: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            retention: Retention::default(),
            tail: 1000,
        }
    }
}

/// Which worker owns `name`: the same answer on every worker, for the life
/// of the process (a fixed-key SipHash, not the per-process random one).
pub fn owner_of(name: &str, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write(name.as_bytes());
    (h.finish() % workers as u64) as usize
}

/// What a blocked room waits for.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    Loading,
    Reserving,
    Reading(u64),
}

#[derive(Debug, Default)]
struct Slot {
    state: Option<RoomState>,
    wait: Option<Wait>,
    /// Requests that arrived while blocked, with their sender.
    queue: VecDeque<(usize, Request)>,
    /// What the store returned for the request at the front of `queue`.
    read: Option<Result<Vec<Arc<Stored>>, Refused>>,
}

/// Where this worker's deliveries go: to the caller (its own) or to the
/// outboxes of the others.
struct Out<'a> {
    me: usize,
    local: &'a mut Vec<Delivery>,
    outbox: &'a mut [Vec<Envelope>],
}

impl Out<'_> {
    fn send(&mut self, worker: usize, delivery: Delivery) {
        if worker == self.me {
            self.local.push(delivery);
        } else {
            self.outbox[worker].push(Envelope::Delivery(delivery));
        }
    }

    /// One shared event to every worker with members in `room`.
    fn fan_out(&mut self, room: &RoomState, event: Arc<RoomEvent>) {
        for worker in room.workers() {
            self.send(worker, Delivery::Room(event.clone()));
        }
    }
}

pub struct MemoryEngine {
    me: usize,
    hub: Arc<Hub>,
    config: EngineConfig,
    store: Box<dyn Store>,
    rooms: HashMap<Name, Slot>,
    /// Users this worker owns: their `/ws` connections per worker.
    users: HashMap<Name, Vec<u32>>,
    outbox: Vec<Vec<Envelope>>,
    incoming: Vec<Envelope>,
    next_token: u64,
    /// Room listings this worker asked for, by token.
    listings: HashMap<u64, Listing>,
    next_listing: u64,
    /// Owned rooms with members.
    occupied: usize,
    finished: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Request {
    /// The room a room request is about.
    fn room(&self) -> Option<&Name> {
        match self {
            Request::Join { room, .. }
            | Request::Leave { room, .. }
            | Request::Publish { room, .. }
            | Request::Relay { room, .. }
            | Request::Typing { room, .. }
            | Request::Presence { room, .. }
            | Request::History { room, .. } => Some(room),
            Request::UserOnline { .. }
            | Request::UserOffline { .. }
            | Request::Direct { .. }
            | Request::Disconnect { .. }
            | Request::Rooms { .. } => None,
        }
    }

    fn key(&self) -> Key<'_> {
        match self {
            Request::UserOnline { user } | Request::UserOffline { user } => Key::User(user),
            Request::Direct { to, .. } => Key::User(to),
            Request::Disconnect { user, .. } => Key::User(user),
            other => Key::Room(other.room().map_or("", |r| r)),
        }
    }
}

/// Answers a request that cannot be carried out, as its kind is answered.
fn refuse(from: usize, request: Request, why: Refused, out: &mut Out) {
    let delivery = match request {
        Request::Join { ticket, room, .. } => Delivery::Joined {
            ticket,
            room,
            result: Err(why),
        },
        Request::History { ticket, room, .. } => Delivery::History {
            ticket,
            room,
            result: Err(why),
        },
        Request::Presence { ticket, room } => Delivery::Presence {
            ticket,
            room,
            result: Err(why),
        },
        Request::Leave {
            ticket: Some(ticket),
            room,
            ..
        } => Delivery::Left { ticket, room },
        Request::Publish {
            ticket: Some(ticket), ..
        }
        | Request::Typing {
            ticket: Some(ticket), ..
        }
        | Request::Direct {
            ticket: Some(ticket), ..
        }
        | Request::Disconnect {
            ticket: Some(ticket), ..
        } => Delivery::Done {
            ticket,
            result: Err(why),
        },
        Request::Rooms { ticket } => Delivery::Rooms {
            ticket,
            result: Err(why),
        },
        _ => return,
    };
    out.send(from, delivery);
}

impl MemoryEngine {
    /// Worker `me`'s engine, owning its shard of rooms with `store`.
    pub fn new(hub: Arc<Hub>, me: usize, config: EngineConfig, store: Box<dyn Store>) -> Self {
        let n = hub.workers();
        MemoryEngine {
            me,
            hub,
            config,
            store,
            rooms: HashMap::new(),
            users: HashMap::new(),
            outbox: (0..n).map(|_| Vec::new()).collect(),
            incoming: Vec::new(),
            next_token: 0,
            listings: HashMap::new(),
            next_listing: 0,
            occupied: 0,
            finished: false,
        }
    }

    fn workers(&self) -> usize {
        self.outbox.len()
    }

    fn owner(&self, key: Key<'_>) -> usize {
        match key {
            Key::Room(name) => owner_of(name, self.workers()),
            // Users hash apart from rooms of the same name.
            Key::User(name) => owner_of(name, self.workers()).wrapping_add(1) % self.workers(),
        }
    }

    /// Carries out `request`, sent by worker `from`, as its owner.
    fn handle(&mut self, from: usize, request: Request, local: &mut Vec<Delivery>) {
        let n = self.workers();
        match request {
            Request::UserOnline { user } => {
                self.users.entry(user).or_insert_with(|| vec![0; n])[from] += 1;
            }
            Request::UserOffline { user } => {
                if let Some(counts) = self.users.get_mut(&user) {
                    counts[from] = counts[from].saturating_sub(1);
                    if counts.iter().all(|c| *c == 0) {
                        self.users.remove(&user);
                    }
                }
            }
            Request::Direct { to, event, ticket } => {
                let mut out = Out {
                    me: self.me,
                    local,
                    outbox: &mut self.outbox,
                };
                let mut delivered = false;
                if let Some(counts) = self.users.get(&to) {
                    for (worker, _) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                        delivered = true;
                        let delivery = Delivery::Direct {
                            to: to.clone(),
                            event: event.clone(),
                        };
                        out.send(worker, delivery);
                    }
                }
                if let Some(ticket) = ticket {
                    let result = if delivered { Ok(None) } else { Err(Refused::UserOffline) };
                    out.send(from, Delivery::Done { ticket, result });
                }
            }
            Request::Disconnect { user, code, ticket } => {
                let mut out = Out {
                    me: self.me,
                    local,
                    outbox: &mut self.outbox,
                };
                // Every worker: the directory knows only `/ws` connections,
                // and a user's other dialects count too.
                for worker in 0..n {
                    let delivery = Delivery::Disconnect {
                        user: user.clone(),
                        code,
                    };
                    out.send(worker, delivery);
                }
                if let Some(ticket) = ticket {
                    out.send(
                        from,
                        Delivery::Done {
                            ticket,
                            result: Ok(None),
                        },
                    );
                }
            }
            room_request => {
                let Some(room) = room_request.room().cloned() else {
                    return;
                };
                let slot = self.rooms.entry(room.clone()).or_default();
                slot.queue.push_back((from, room_request));
                if slot.wait.is_none() {
                    self.run(&room, local);
                }
            }
        }
    }

    /// Runs a room's queued requests until it is empty or blocks.
    fn run(&mut self, room: &Name, local: &mut Vec<Delivery>) {
        let now = now_ms();
        let n = self.workers();
        loop {
            let Some(slot) = self.rooms.get_mut(room) else { return };
            if slot.wait.is_some() {
                return;
            }
            let Some((from, request)) = slot.queue.pop_front() else {
                // Nothing queued: an empty room leaves memory.
                if slot.state.as_ref().is_some_and(RoomState::is_empty) {
                    if let Some(Slot { state: Some(state), .. }) = self.rooms.remove(room) {
                        self.store.close(room, state.record);
                    }
                } else if slot.state.is_none() {
                    self.rooms.remove(room);
                }
                return;
            };
            if slot.state.is_none() {
                match self.store.open(room, now) {
                    Some(record) => slot.state = Some(RoomState::new(record, n)),
                    None => {
                        slot.wait = Some(Wait::Loading);
                        slot.queue.push_front((from, request));
                        return;
                    }
                }
            }
            let mut out = Out {
                me: self.me,
                local,
                outbox: &mut self.outbox,
            };
            let blocked = apply(
                slot,
                from,
                request,
                &mut out,
                &mut *self.store,
                &self.config,
                &mut self.occupied,
                &mut self.next_token,
                now,
            );
            if let Some((wait, request)) = blocked {
                slot.wait = Some(wait);
                slot.queue.push_front((from, request));
                return;
            }
        }
    }

    fn on_store(&mut self, event: StoreEvent, local: &mut Vec<Delivery>) {
        let n = self.workers();
        let room = match event {
            StoreEvent::Opened { room, result } => {
                let Some(slot) = self.rooms.get_mut(&room) else { return };
                if slot.wait != Some(Wait::Loading) {
                    return;
                }
                slot.wait = None;
                match result {
                    Ok(record) => slot.state = Some(RoomState::new(record, n)),
                    Err(e) => {
                        log::error!("store: cannot load room {room}: {}", e.0);
                        let mut out = Out {
                            me: self.me,
                            local,
                            outbox: &mut self.outbox,
                        };
                        for (from, request) in std::mem::take(&mut slot.queue) {
                            refuse(from, request, Refused::Unavailable, &mut out);
                        }
                    }
                }
                room
            }
            StoreEvent::Reserved { room, upto } => {
                let Some(slot) = self.rooms.get_mut(&room) else { return };
                if let Some(state) = &mut slot.state {
                    state.record.reserved = state.record.reserved.max(upto);
                    state.reserving = false;
                }
                if slot.wait == Some(Wait::Reserving) {
                    slot.wait = None;
                }
                room
            }
            StoreEvent::ReserveFailed { room } => {
                let Some(slot) = self.rooms.get_mut(&room) else { return };
                if let Some(state) = &mut slot.state
                    && !state.record.unsaved
                {
                    // Its `seq` can no longer be proven unique after a crash:
                    // go on in a fresh epoch that is never stored, so no
                    // client can mistake these messages for stored ones.
                    log::error!("store: cannot reserve seq for room {room}; it continues in memory only");
                    let record = &mut state.record;
                    record.epoch = crate::store::new_epoch();
                    record.unsaved = true;
                    record.reserved = u64::MAX;
                    record.older_in_store = false;
                    state.reserving = false;
                }
                if slot.wait == Some(Wait::Reserving) {
                    slot.wait = None;
                }
                room
            }
            StoreEvent::Read { room, token, result } => {
                let Some(slot) = self.rooms.get_mut(&room) else { return };
                if slot.wait != Some(Wait::Reading(token)) {
                    return;
                }
                slot.wait = None;
                slot.read = Some(result.map_err(|e| {
                    log::error!("store: cannot read room {room}: {}", e.0);
                    Refused::Unavailable
                }));
                room
            }
        };
        self.run(&room, local);
    }

    fn take_mail(&mut self, local: &mut Vec<Delivery>) {
        let mailbox = self.hub.mailboxes[self.me].clone();
        mailbox.unpark();
        mailbox.take(&mut self.incoming);
        let mut incoming = std::mem::take(&mut self.incoming);
        for envelope in incoming.drain(..) {
            match envelope {
                Envelope::Request { from, request } => self.handle(from, request, local),
                Envelope::Delivery(delivery) => local.push(delivery),
                Envelope::Store(event) => self.on_store(event, local),
                Envelope::Redis(_) => {}
                Envelope::ListRooms { from, token } => {
                    let rooms = self.room_counts();
                    self.outbox[from].push(Envelope::RoomList { token, rooms });
                }
                Envelope::RoomList { token, rooms } => self.gathered(token, rooms, local),
            }
        }
        self.incoming = incoming;
    }

    /// This owner's rooms with members.
    fn room_counts(&self) -> Vec<RoomCount> {
        self.rooms
            .iter()
            .filter_map(|(room, slot)| {
                let state = slot.state.as_ref().filter(|s| !s.is_empty())?;
                Some(RoomCount {
                    room: room.clone(),
                    members: state.members(),
                    users: state.user_count(),
                })
            })
            .collect()
    }

    /// One owner's part of listing `token` is in; the last completes it.
    fn gathered(&mut self, token: u64, rooms: Vec<RoomCount>, local: &mut Vec<Delivery>) {
        let Some(listing) = self.listings.get_mut(&token) else {
            return;
        };
        listing.rooms.extend(rooms);
        listing.remaining -= 1;
        if listing.remaining == 0
            && let Some(mut listing) = self.listings.remove(&token)
        {
            listing.rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
            local.push(Delivery::Rooms {
                ticket: listing.ticket,
                result: Ok(listing.rooms),
            });
        }
    }

    fn send_outboxes(&mut self) {
        for (worker, outbox) in self.outbox.iter_mut().enumerate() {
            if !outbox.is_empty() {
                self.hub.mailboxes[worker].send_all(outbox);
            }
        }
    }
}

/// The recovery a join gets (`recovered`, missed messages), or the range
/// to read from the store first. A failed read proves nothing: what memory
/// has is sent, with `recovered: false`.
fn recovery(
    room: &RoomState,
    since: &Since,
    older: &Option<Result<Vec<Arc<Stored>>, Refused>>,
    config: &EngineConfig,
) -> Result<(Option<bool>, Vec<Arc<Stored>>), crate::store::ReadRange> {
    let older = match older {
        Some(Ok(messages)) => Some(messages.as_slice()),
        Some(Err(_)) => Some(&[][..]),
        None => None,
    };
    match room.recover(since, older, &config.retention) {
        Plan::Answer { messages, complete } => Ok((Some(complete), messages)),
        Plan::Read(range) => Err(range),
    }
}

/// Carries out one room request on a loaded room. Returns the request back
/// with what it waits for when the room must block first.
#[allow(clippy::too_many_arguments)]
fn apply(
    slot: &mut Slot,
    from: usize,
    request: Request,
    out: &mut Out,
    store: &mut dyn Store,
    config: &EngineConfig,
    occupied: &mut usize,
    next_token: &mut u64,
    now: u64,
) -> Option<(Wait, Request)> {
    let room_state = slot.state.as_mut().expect("a loaded room");
    let older = slot.read.take();
    match request {
        Request::Join {
            room,
            member,
            since,
            again,
            ticket,
        } => {
            let plan = since.as_ref().map(|since| recovery(room_state, since, &older, config));
            let (recovered, missed) = match plan {
                None => (None, Vec::new()),
                Some(plan) => match plan {
                    Ok(answer) => answer,
                    Err(range) => {
                        *next_token += 1;
                        store.read(&room, range, *next_token);
                        let token = *next_token;
                        return Some((
                            Wait::Reading(token),
                            Request::Join {
                                room,
                                member,
                                since,
                                again,
                                ticket,
                            },
                        ));
                    }
                },
            };
            let was_empty = room_state.is_empty();
            let first = !again && room_state.add(from, &member);
            if was_empty && !room_state.is_empty() {
                *occupied += 1;
            }
            out.send(
                from,
                Delivery::Joined {
                    ticket,
                    room: room.clone(),
                    result: Ok(JoinedRoom {
                        users: room_state.users(),
                        position: room_state.position(),
                        recovered,
                        missed,
                    }),
                },
            );
            if first {
                let skip = (!member.roster).then_some(ConnRef {
                    worker: from,
                    id: member.conn,
                });
                out.fan_out(
                    room_state,
                    RoomEvent::new(room.clone(), EventKind::UserJoined(member.user), skip),
                );
            }
            if !again && member.present && room_state.wants_roster() {
                out.fan_out(
                    room_state,
                    RoomEvent::new(room, EventKind::OnlineUsers(room_state.users()), None),
                );
            }
        }
        Request::Leave { room, member, ticket } => {
            let was_empty = room_state.is_empty();
            let last = room_state.remove(from, &member);
            if !was_empty && room_state.is_empty() {
                *occupied -= 1;
            }
            if let Some(ticket) = ticket {
                out.send(
                    from,
                    Delivery::Left {
                        ticket,
                        room: room.clone(),
                    },
                );
            }
            if last {
                out.fan_out(
                    room_state,
                    RoomEvent::new(room.clone(), EventKind::UserLeft(member.user), None),
                );
            }
            if member.present && room_state.wants_roster() {
                out.fan_out(
                    room_state,
                    RoomEvent::new(room, EventKind::OnlineUsers(room_state.users()), None),
                );
            }
        }
        Request::Publish {
            room,
            user,
            content,
            ticket,
        } => {
            let record = &mut room_state.record;
            if record.seq >= record.reserved {
                if !room_state.reserving {
                    room_state.reserving = true;
                    let upto = record.reserved.max(record.seq).saturating_add(store.reserve_step());
                    if store.reserve(&room, upto) {
                        record.reserved = upto;
                        room_state.reserving = false;
                    }
                }
                if record.seq >= record.reserved {
                    let request = Request::Publish {
                        room,
                        user,
                        content,
                        ticket,
                    };
                    return Some((Wait::Reserving, request));
                }
            }
            record.seq += 1;
            let seq = record.seq;
            // Reserve ahead, so publishing rarely has to wait for the store.
            let step = store.reserve_step();
            if !room_state.reserving && record.reserved - seq < step / 2 {
                room_state.reserving = true;
                if store.reserve(&room, record.reserved.saturating_add(step)) {
                    record.reserved = record.reserved.saturating_add(step);
                    room_state.reserving = false;
                }
            }
            let stored = Stored::new(StoredMessage {
                room: room.to_string(),
                user: user.to_string(),
                content,
                seq,
                ts: now,
            });
            let append_no = if room_state.record.unsaved {
                0
            } else {
                store.append(&stored)
            };
            room_state.keep(
                Kept {
                    stored: stored.clone(),
                    append_no,
                },
                config.tail,
                &config.retention,
                now,
                |n| store.is_durable(n),
            );
            out.fan_out(room_state, RoomEvent::new(room, EventKind::Message(stored), None));
            if let Some(ticket) = ticket {
                out.send(
                    from,
                    Delivery::Done {
                        ticket,
                        result: Ok(Some(seq)),
                    },
                );
            }
        }
        Request::Relay { room, data } => {
            out.fan_out(room_state, RoomEvent::new(room, EventKind::Binary(data), None));
        }
        Request::Typing {
            room,
            user,
            typing,
            from: conn,
            ticket,
        } => {
            let skip = Some(ConnRef { worker: from, id: conn });
            out.fan_out(
                room_state,
                RoomEvent::new(room, EventKind::Typing { user, typing }, skip),
            );
            if let Some(ticket) = ticket {
                out.send(
                    from,
                    Delivery::Done {
                        ticket,
                        result: Ok(None),
                    },
                );
            }
        }
        Request::Presence { room, ticket } => {
            out.send(
                from,
                Delivery::Presence {
                    ticket,
                    room,
                    result: Ok(room_state.users()),
                },
            );
        }
        Request::History {
            room,
            since,
            limit,
            ticket,
        } => {
            let older_messages = match &older {
                Some(Ok(messages)) => Some(messages.as_slice()),
                Some(Err(why)) => {
                    out.send(
                        from,
                        Delivery::History {
                            ticket,
                            room,
                            result: Err(*why),
                        },
                    );
                    return None;
                }
                None => None,
            };
            match room_state.history(since, limit, older_messages) {
                Plan::Answer { messages, .. } => out.send(
                    from,
                    Delivery::History {
                        ticket,
                        room,
                        result: Ok(messages),
                    },
                ),
                Plan::Read(range) => {
                    *next_token += 1;
                    store.read(&room, range, *next_token);
                    let request = Request::History {
                        room,
                        since,
                        limit,
                        ticket,
                    };
                    return Some((Wait::Reading(*next_token), request));
                }
            }
        }
        Request::UserOnline { .. }
        | Request::UserOffline { .. }
        | Request::Direct { .. }
        | Request::Disconnect { .. }
        | Request::Rooms { .. } => {}
    }
    None
}

impl Engine for MemoryEngine {
    fn lane(&self, key: Key<'_>) -> Lane {
        Lane {
            owner: self.owner(key),
            key: key.lane_hash(),
        }
    }

    fn request(&mut self, request: Request, out: &mut Vec<Delivery>) {
        if let Request::Rooms { ticket } = request {
            // Every owner has a part: ask each, gather in `gathered`.
            self.next_listing += 1;
            let token = self.next_listing;
            let n = self.workers();
            let listing = Listing {
                ticket,
                remaining: n,
                rooms: Vec::new(),
            };
            self.listings.insert(token, listing);
            for worker in (0..n).filter(|w| *w != self.me) {
                self.outbox[worker].push(Envelope::ListRooms { from: self.me, token });
            }
            let rooms = self.room_counts();
            return self.gathered(token, rooms, out);
        }
        let owner = self.owner(request.key());
        if owner == self.me {
            self.handle(owner, request, out);
        } else {
            self.outbox[owner].push(Envelope::Request { from: self.me, request });
        }
    }

    fn poll(&mut self, out: &mut Vec<Delivery>) {
        self.take_mail(out);
    }

    fn flush(&mut self) -> bool {
        self.send_outboxes();
        self.hub.mailboxes[self.me].park()
    }

    fn finish(&mut self) -> bool {
        self.send_outboxes();
        self.hub.finish.mark_done(self.me);
        if !self.hub.finish.all_done() {
            return false;
        }
        if !self.finished {
            self.finished = true;
            // Nobody sends more: carry out what was sent, then hand every
            // room in memory back to the store (which records its `seq`).
            let mut ignored = Vec::new();
            self.take_mail(&mut ignored);
            for (room, slot) in self.rooms.drain() {
                if let Some(state) = slot.state {
                    self.store.close(&room, state.record);
                }
            }
        }
        true
    }

    fn tick(&mut self, now_ms: u64) {
        // Hand-off buffers keep the capacity of the largest burst they saw:
        // give it back once they are idle.
        let idle = |v: &mut Vec<Envelope>| {
            if v.is_empty() && v.capacity() > IDLE_CAPACITY {
                *v = Vec::new();
            }
        };
        self.outbox.iter_mut().for_each(idle);
        idle(&mut self.incoming);
        self.hub.mailboxes[self.me].shrink_idle();
        if self.rooms.capacity() > 1024 && self.rooms.len() < self.rooms.capacity() / 4 {
            self.rooms.shrink_to_fit();
        }
        if self.users.capacity() > 1024 && self.users.len() < self.users.capacity() / 4 {
            self.users.shrink_to_fit();
        }
        let (tail, retention) = (self.config.tail, self.config.retention);
        let store = &*self.store;
        for slot in self.rooms.values_mut() {
            if let Some(state) = &mut slot.state {
                state.trim(tail, &retention, now_ms, |n| store.is_durable(n));
            }
        }
        self.store.tick(now_ms);
    }

    fn counts(&self) -> EngineCounts {
        EngineCounts {
            rooms: self.occupied,
            rooms_loaded: self.rooms.len(),
        }
    }

    fn top_rooms(&self, n: usize) -> Vec<(Name, u64)> {
        let mut rooms: Vec<(Name, u64)> = self
            .rooms
            .iter()
            .filter_map(|(name, slot)| Some((name.clone(), slot.state.as_ref()?.members())))
            .filter(|(_, members)| *members > 0)
            .collect();
        let by_size = |a: &(Name, u64), b: &(Name, u64)| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0));
        if rooms.len() > n {
            rooms.select_nth_unstable_by(n, by_size);
            rooms.truncate(n);
        }
        rooms.sort_unstable_by(by_size);
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::contract::{self, Cluster};
    use crate::store::memory::MemoryStore;

    /// In-process engines without event loops: each worker's waker belongs
    /// to a `Poll` nobody waits on; the contract's `settle` drives them.
    struct Memory {
        _polls: Vec<mio::Poll>,
        engines: Vec<MemoryEngine>,
    }

    impl Memory {
        fn new(n: usize) -> Self {
            let polls: Vec<mio::Poll> = (0..n).map(|_| mio::Poll::new().unwrap()).collect();
            let wakers = polls
                .iter()
                .map(|p| Arc::new(mio::Waker::new(p.registry(), mio::Token(0)).unwrap()))
                .collect();
            let hub = Hub::new(&Workers::new(wakers));
            let config = EngineConfig::default();
            let engines = (0..n)
                .map(|i| MemoryEngine::new(hub.clone(), i, config, Box::new(MemoryStore::new(config.retention))))
                .collect();
            Memory { _polls: polls, engines }
        }
    }

    impl Cluster for Memory {
        fn workers(&self) -> usize {
            self.engines.len()
        }

        fn engine(&mut self, worker: usize) -> &mut dyn Engine {
            &mut self.engines[worker]
        }
    }

    #[test]
    fn the_contract_holds_on_one_worker() {
        contract::one_order_per_room(&mut Memory::new(1), "r");
        contract::recovery_on_any_worker(&mut Memory::new(1), "r");
        contract::replies_in_lane_order(&mut Memory::new(1), "r");
        contract::direct_across_workers(&mut Memory::new(1), "bob");
        contract::join_position_under_traffic(&mut Memory::new(1), "r");
        contract::disconnect_and_rooms_cover_every_worker(&mut Memory::new(1), "list");
    }

    #[test]
    fn the_contract_holds_on_three_workers() {
        contract::all(&mut Memory::new(3));
    }

    #[test]
    fn owners_are_spread_and_stable() {
        let owners: Vec<usize> = (0..300).map(|i| owner_of(&format!("room{i}"), 3)).collect();
        for w in 0..3 {
            let share = owners.iter().filter(|o| **o == w).count();
            assert!((60..=140).contains(&share), "worker {w} owns {share} of 300");
        }
        assert_eq!(
            owners,
            (0..300).map(|i| owner_of(&format!("room{i}"), 3)).collect::<Vec<_>>()
        );
    }
}
