//! The room server (docs/protocol.md): rooms as a two-way index (room →
//! members here, connection → rooms in each session), presence, history
//! with recovery, direct messages, typing, rate limits, and three dialects
//! sharing one namespace: `/ws` (JSON), `/ws/{room}` (chat tutorial) and
//! `/pubsub/{topic}` (raw relay).
//!
//! Every fan-out goes through `RoomEvent`: it is encoded at most once per
//! dialect present in the room, framed once, and the same bytes are queued
//! to every recipient of that dialect.

pub mod names;
pub mod room;
pub mod wire;

/// Token buckets live in the I/O layer, which limits pings and handshakes with them too.
pub use crate::net::rate;

use crate::auth::{Authenticator, Grants, Identity};
use crate::http::{self, Snapshot};
use crate::net::{App, CloseReason, ConnId, Ctx, Outgoing, Route, Stats};
use crate::protocol::handshake::head::Request;
use crate::protocol::handshake::server::{Rejection, http_response};
use crate::protocol::{CloseCode, MessageKind};
use log::warn;
use rate::{RateLimit, TokenBucket, Verdict};
use room::{Dialect, Room, Stored};
use serde_json::Value;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::{ChatEnvelope, Command, CommandError, ErrorCode, Event, StoredMessage};

/// Room-server settings; defaults per docs/protocol.md.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    pub max_rooms_per_connection: usize,
    /// Messages kept per room for `history` and recovery.
    pub history_size: usize,
    /// Largest `content` (as JSON text) a message may carry.
    pub max_content_size: usize,
    pub rate: RateLimit,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_rooms_per_connection: 64,
            history_size: 100,
            max_content_size: 32 * 1024,
            rate: RateLimit {
                per_second: 50.0,
                burst: 100.0,
            },
        }
    }
}

/// Per-connection state, kept in the connection's slot.
#[derive(Debug)]
pub struct Session {
    user: String,
    dialect: Dialect,
    /// Rooms this connection is in (the connection → rooms half of the index).
    rooms: Vec<String>,
    /// The room a `/ws/{room}` or `/pubsub/{topic}` connection joins on open.
    auto_join: Option<String>,
    bucket: Option<TokenBucket>,
    /// What the credential allows; `None` while auth is off (everything).
    auth: Option<Box<SessionAuth>>,
}

/// An authenticated session's grants and expiry.
#[derive(Debug)]
struct SessionAuth {
    grants: Grants,
    /// When the credential expires (leeway included); `None` for API keys.
    deadline: Option<Instant>,
}

impl Session {
    fn can_join(&self, room: &str) -> bool {
        self.auth.as_ref().is_none_or(|a| a.grants.can_join(room))
    }

    fn can_publish(&self, room: &str) -> bool {
        self.auth.as_ref().is_none_or(|a| a.grants.can_publish(room))
    }
}

/// Counters of the room layer's limits and refusals, for `/stats` and `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoomCounters {
    /// Messages refused by the per-connection rate limit.
    pub rate_limited: u64,
    /// Connections closed for exceeding the rate limit while limited (1008).
    pub rate_limit_closes: u64,
    /// Joins refused at the rooms-per-connection limit.
    pub too_many_rooms: u64,
    /// Commands refused by the credential's grants (`not_authorized`).
    pub not_authorized: u64,
    /// Connections closed because their token expired (1008).
    pub token_expired_closes: u64,
    /// Tokens renewed with `refresh`.
    pub refreshes: u64,
}

/// What happened in a room, before it is encoded for each dialect.
enum RoomEvent<'a> {
    Message(&'a Stored),
    Binary(&'a [u8]),
    UserJoined(&'a str),
    UserLeft(&'a str),
    /// The chat tutorial's `online_users`, sent after every join and leave.
    OnlineUsers,
    Typing {
        user: &'a str,
        typing: bool,
    },
}

impl RoomEvent<'_> {
    /// An already prepared message for `dialect`, if the event carries one.
    fn prepared(&self, dialect: Dialect) -> Option<&Outgoing> {
        match (self, dialect) {
            (RoomEvent::Message(stored), Dialect::Json) => Some(&stored.json),
            _ => None,
        }
    }

    /// The message for members speaking `dialect`, or `None` if they do not get this event.
    fn encode(&self, dialect: Dialect, name: &str, room: &Room) -> Option<Outgoing> {
        let chat = |kind: &str, content: &str, username: &str| {
            Some(Outgoing::text(
                ChatEnvelope {
                    kind,
                    content,
                    room: name,
                    username,
                }
                .to_bytes(),
            ))
        };
        match (self, dialect) {
            (RoomEvent::Message(s), Dialect::Chat) => {
                chat("chat", &wire::content_text(&s.message.content), &s.message.user)
            }
            (RoomEvent::Message(s), Dialect::PubSub) => {
                Some(Outgoing::text(wire::content_text(&s.message.content).into_bytes()))
            }
            (RoomEvent::Binary(data), Dialect::Chat | Dialect::PubSub) => {
                Some(Outgoing::new(MessageKind::Binary, data.to_vec()))
            }
            (RoomEvent::UserJoined(user), Dialect::Json) => {
                Some(Outgoing::text(Event::UserJoined { room: name, user }.to_bytes()))
            }
            (RoomEvent::UserJoined(user), Dialect::Chat) => {
                chat("user_joined", &format!("{user} joined the room"), user)
            }
            (RoomEvent::UserLeft(user), Dialect::Json) => {
                Some(Outgoing::text(Event::UserLeft { room: name, user }.to_bytes()))
            }
            (RoomEvent::UserLeft(user), Dialect::Chat) => chat("user_left", &format!("{user} left the room"), user),
            (RoomEvent::OnlineUsers, Dialect::Chat) => chat("online_users", &room.users().join(","), ""),
            (RoomEvent::Typing { user, typing }, Dialect::Json) => Some(Outgoing::text(
                Event::Typing {
                    room: name,
                    user,
                    typing: *typing,
                }
                .to_bytes(),
            )),
            _ => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Rooms {
    config: RoomConfig,
    auth: Authenticator,
    /// Token expiries (connection, deadline); stale entries are skipped.
    expiries: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Open sessions with an expiring credential.
    timed_sessions: usize,
    rooms: HashMap<String, Room>,
    /// Open connections per username, for direct messages.
    users: HashMap<String, Vec<ConnId>>,
    members: usize,
    counters: RoomCounters,
    /// (time, messages in, messages out) at the previous `/stats` snapshot.
    last_sample: Option<(Instant, u64, u64)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Rooms {
    pub fn new(config: RoomConfig) -> Self {
        Rooms {
            config,
            ..Rooms::default()
        }
    }

    /// Authenticates upgrades with `auth` (see README "Security").
    pub fn with_auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn snapshot<'a>(&mut self, stats: &'a Stats, draining: bool) -> Snapshot<'a> {
        let now = Instant::now();
        let (t0, in0, out0) = self.last_sample.unwrap_or((stats.started, 0, 0));
        let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
        let rates = (
            (stats.messages_in - in0) as f64 / secs,
            (stats.messages_out - out0) as f64 / secs,
        );
        self.last_sample = Some((now, stats.messages_in, stats.messages_out));
        Snapshot {
            net: stats,
            now,
            rooms: self.rooms.len(),
            members: self.members,
            counters: self.counters,
            rates,
            heap_bytes: crate::heap::live_bytes(),
            draining,
        }
    }

    /// Sends `event` to the room's members (except `skip`), encoding it at
    /// most once per dialect.
    fn fan_out(ctx: &mut Ctx<'_, Session>, name: &str, room: &Room, event: &RoomEvent, skip: Option<ConnId>) {
        let mut encoded: [Option<Option<Outgoing>>; 3] = [None, None, None];
        for &(member, dialect) in room.members() {
            if Some(member) == skip {
                continue;
            }
            if let Some(out) = event.prepared(dialect) {
                ctx.send_outgoing(member, out);
                continue;
            }
            let out = encoded[dialect.index()].get_or_insert_with(|| event.encode(dialect, name, room));
            if let Some(out) = out {
                ctx.send_outgoing(member, out);
            }
        }
    }

    fn reply(ctx: &mut Ctx<'_, Session>, id: ConnId, event: Event) {
        ctx.send(id, MessageKind::Text, &event.to_bytes());
    }

    fn error(ctx: &mut Ctx<'_, Session>, id: ConnId, err: &CommandError) {
        let event = Event::Error {
            id: err.id.as_ref(),
            code: err.code.as_str(),
            message: &err.message,
        };
        Self::reply(ctx, id, event);
    }

    fn session(ctx: &mut Ctx<'_, Session>, id: ConnId) -> Option<(String, Dialect)> {
        ctx.state(id).map(|s| (s.user.clone(), s.dialect))
    }

    /// Adds `id` to `name`; returns false if it was already a member.
    fn join(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, name: &str) -> Result<bool, ErrorCode> {
        let max = self.config.max_rooms_per_connection;
        let Some(session) = ctx.state(id) else { return Ok(false) };
        if !session.can_join(name) {
            self.counters.not_authorized += 1;
            return Err(ErrorCode::NotAuthorized);
        }
        if session.rooms.iter().any(|r| r == name) {
            return Ok(false);
        }
        if session.rooms.len() >= max {
            self.counters.too_many_rooms += 1;
            return Err(ErrorCode::TooManyRooms);
        }
        session.rooms.push(name.to_owned());
        let (user, dialect) = (session.user.clone(), session.dialect);
        let room = self.rooms.entry(name.to_owned()).or_default();
        let first = room.add(id, dialect, &user);
        self.members += 1;
        if first {
            // The `/ws` newcomer learns of itself from `joined`; a chat newcomer
            // gets its own `user_joined`, as in the tutorial.
            let skip = (dialect == Dialect::Json).then_some(id);
            Self::fan_out(ctx, name, room, &RoomEvent::UserJoined(&user), skip);
        }
        if dialect != Dialect::PubSub {
            Self::fan_out(ctx, name, room, &RoomEvent::OnlineUsers, None);
        }
        Ok(true)
    }

    /// Removes `id` from `name`, tells the others, drops the room if empty.
    fn leave(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, name: &str, user: &str) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        let Some((dialect, last)) = room.remove(id, user) else {
            return;
        };
        self.members -= 1;
        if last {
            Self::fan_out(ctx, name, room, &RoomEvent::UserLeft(user), None);
        }
        if dialect != Dialect::PubSub {
            Self::fan_out(ctx, name, room, &RoomEvent::OnlineUsers, None);
        }
        if room.is_empty() {
            self.rooms.remove(name);
        }
    }

    /// Stores a message in the room's history and sends it to every member.
    fn publish(&mut self, ctx: &mut Ctx<'_, Session>, name: &str, user: &str, content: Value) {
        let Some(room) = self.rooms.get_mut(name) else { return };
        let seq = room.next_seq();
        let message = StoredMessage {
            room: name.to_owned(),
            user: user.to_owned(),
            content,
            seq,
            ts: now_ms(),
        };
        let json = Outgoing::text(Event::Message(&message).to_bytes());
        let stored = Arc::new(Stored { message, json });
        room.store(stored.clone(), self.config.history_size);
        Self::fan_out(ctx, name, room, &RoomEvent::Message(&stored), None);
    }

    fn member_room(&self, ctx: &mut Ctx<'_, Session>, id: ConnId, name: &str) -> Result<(), ErrorCode> {
        if !names::valid_room(name) {
            return Err(ErrorCode::InvalidRoom);
        }
        let member = ctx.state(id).is_some_and(|s| s.rooms.iter().any(|r| r == name));
        if member { Ok(()) } else { Err(ErrorCode::NotMember) }
    }

    /// A member that may also publish (messages, typing) to `name`.
    fn publisher_room(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, name: &str) -> Result<(), ErrorCode> {
        self.member_room(ctx, id, name)?;
        if ctx.state(id).is_some_and(|s| s.can_publish(name)) {
            Ok(())
        } else {
            self.counters.not_authorized += 1;
            Err(ErrorCode::NotAuthorized)
        }
    }

    /// Replaces an authenticated session's credential with a fresh token
    /// for the same user; rooms the new grants exclude are left.
    fn refresh(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        req_id: Option<&Value>,
        token: &str,
    ) -> Result<(), CommandError> {
        let refuse = |message: &str| CommandError::new(req_id.cloned(), ErrorCode::NotAuthorized, message);
        let now = ctx.now();
        let Some(session) = ctx.state(id) else { return Ok(()) };
        if session.auth.is_none() {
            return Err(refuse("auth is off: there is no token to refresh"));
        }
        let identity = self.auth.verify_token(token).map_err(|e| refuse(e.0))?;
        if identity.user != session.user {
            return Err(refuse("the token is for another user"));
        }
        let deadline = expiry_deadline(&identity, self.auth.leeway(), now);
        let user = session.user.clone();
        let excluded: Vec<String> = session
            .rooms
            .iter()
            .filter(|r| !identity.grants.can_join(r))
            .cloned()
            .collect();
        session.rooms.retain(|r| identity.grants.can_join(r));
        session.auth = Some(Box::new(SessionAuth {
            grants: identity.grants,
            deadline,
        }));
        if let Some(at) = deadline {
            self.expiries.push(Reverse((at, id)));
        }
        self.counters.refreshes += 1;
        for name in excluded {
            self.leave(ctx, id, &name, &user);
            Self::reply(ctx, id, Event::Left { id: None, room: &name });
        }
        let exp = identity.expires.unwrap_or(0);
        Self::reply(ctx, id, Event::Refreshed { id: req_id, exp });
        Ok(())
    }

    fn check_size(&self, content: &Value) -> Result<(), ErrorCode> {
        // Measured as compact JSON, the size it has in every event.
        let size = serde_json::to_vec(content).map_or(usize::MAX, |v| v.len());
        if size > self.config.max_content_size {
            Err(ErrorCode::MessageTooLarge)
        } else {
            Ok(())
        }
    }

    fn command(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, bytes: &[u8]) {
        let request = match wire::parse(bytes) {
            Ok(r) => r,
            Err(err) => return Self::error(ctx, id, &err),
        };
        let req_id = request.id.clone();
        if let Command::Refresh { token } = &request.command {
            if let Err(err) = self.refresh(ctx, id, req_id.as_ref(), token) {
                self.counters.not_authorized += 1;
                Self::error(ctx, id, &err);
            }
            return;
        }
        if let Err(code) = self.execute(ctx, id, request) {
            let message = match code {
                ErrorCode::InvalidRoom => "room names are 1-128 bytes of A-Z a-z 0-9 . _ : -",
                ErrorCode::NotMember => "join the room first",
                ErrorCode::TooManyRooms => "too many rooms on this connection",
                ErrorCode::UserOffline => "no connection of that user is online",
                ErrorCode::MessageTooLarge => "content exceeds the size limit",
                ErrorCode::NotAuthorized => "your credential does not allow this room",
                _ => "command failed",
            };
            Self::error(ctx, id, &CommandError::new(req_id, code, message));
        }
    }

    fn execute(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, request: wire::Request) -> Result<(), ErrorCode> {
        let Some((user, _)) = Self::session(ctx, id) else {
            return Ok(());
        };
        let req_id = request.id.as_ref();
        let ack = |ctx: &mut Ctx<'_, Session>| {
            if let Some(req_id) = req_id {
                Self::reply(ctx, id, Event::Ack { id: req_id });
            }
        };
        match request.command {
            Command::Join { room: name, since } => {
                if !names::valid_room(&name) {
                    return Err(ErrorCode::InvalidRoom);
                }
                self.join(ctx, id, &name)?;
                let room = &self.rooms[&name];
                let (missed, complete) = room.since(since.unwrap_or(room.seq));
                let missed: Vec<Arc<Stored>> = if since.is_some() {
                    missed.cloned().collect()
                } else {
                    Vec::new()
                };
                let reply = Event::Joined {
                    id: req_id,
                    room: &name,
                    users: room.users(),
                    seq: room.seq,
                    recovered: since.map(|_| complete),
                };
                Self::reply(ctx, id, reply);
                for stored in missed {
                    ctx.send_outgoing(id, &stored.json);
                }
            }
            Command::Leave { room: name } => {
                self.member_room(ctx, id, &name)?;
                if let Some(session) = ctx.state(id) {
                    session.rooms.retain(|r| *r != name);
                }
                self.leave(ctx, id, &name, &user);
                Self::reply(
                    ctx,
                    id,
                    Event::Left {
                        id: req_id,
                        room: &name,
                    },
                );
            }
            Command::Broadcast { room: name, content } => {
                self.publisher_room(ctx, id, &name)?;
                self.check_size(&content)?;
                self.publish(ctx, &name, &user, content);
                ack(ctx);
            }
            Command::Direct { to, content } => {
                self.check_size(&content)?;
                let targets: Vec<ConnId> = self.users.get(&to).cloned().unwrap_or_default();
                let event = Outgoing::text(
                    Event::Direct {
                        from: &user,
                        content: &content,
                        ts: now_ms(),
                    }
                    .to_bytes(),
                );
                let mut delivered = 0;
                for target in targets {
                    if ctx.state(target).is_some_and(|s| s.dialect == Dialect::Json) {
                        ctx.send_outgoing(target, &event);
                        delivered += 1;
                    }
                }
                if delivered == 0 {
                    return Err(ErrorCode::UserOffline);
                }
                ack(ctx);
            }
            Command::Typing { room: name, typing } => {
                self.publisher_room(ctx, id, &name)?;
                let room = &self.rooms[&name];
                Self::fan_out(ctx, &name, room, &RoomEvent::Typing { user: &user, typing }, Some(id));
                ack(ctx);
            }
            Command::Presence { room: name } => {
                self.member_room(ctx, id, &name)?;
                let room = &self.rooms[&name];
                Self::reply(
                    ctx,
                    id,
                    Event::Presence {
                        id: req_id,
                        room: &name,
                        users: room.users(),
                    },
                );
            }
            Command::History {
                room: name,
                since,
                limit,
            } => {
                self.member_room(ctx, id, &name)?;
                let room = &self.rooms[&name];
                let (messages, _) = room.since(since.unwrap_or(0));
                let mut messages: Vec<&StoredMessage> = messages.map(|s| &s.message).collect();
                if let Some(limit) = limit {
                    // After `since`: the oldest page; without it: the newest messages.
                    if since.is_some() {
                        messages.truncate(limit);
                    } else {
                        messages.drain(..messages.len().saturating_sub(limit));
                    }
                }
                Self::reply(
                    ctx,
                    id,
                    Event::History {
                        id: req_id,
                        room: &name,
                        messages,
                    },
                );
            }
            // Handled before: it answers with its own error messages.
            Command::Refresh { .. } => {}
        }
        Ok(())
    }
}

/// When a session authenticated with `identity` must end: `exp` plus the
/// leeway, as an `Instant` on the loop's clock.
fn expiry_deadline(identity: &Identity, leeway: u64, now: Instant) -> Option<Instant> {
    let end_ms = identity.expires?.saturating_add(leeway).saturating_mul(1000);
    Some(now + Duration::from_millis(end_ms.saturating_sub(now_ms())))
}

/// Splits `/prefix/{name}` paths; the name is percent-decoded.
fn path_name<'a>(path: &'a str, prefix: &str) -> Option<String> {
    let rest: &'a str = path.strip_prefix(prefix)?;
    (!rest.is_empty() && !rest.contains('/')).then(|| names::percent_decode(rest, false))
}

impl App for Rooms {
    type State = Session;

    fn route(&mut self, req: &Request, peer: SocketAddr, stats: &Stats, draining: bool) -> Route<Session> {
        let path = req.path();
        if matches!(path, "/health" | "/stats" | "/metrics") {
            if req.method != "GET" && req.method != "HEAD" {
                return Route::Respond(Rejection::new(405, "use GET").response());
            }
            let snapshot = self.snapshot(stats, draining);
            return Route::Respond(match path {
                "/health" => http::health(&snapshot),
                "/stats" => http::stats(&snapshot),
                _ => http::metrics(&snapshot),
            });
        }
        let username = names::query_param(req.query(), "username");
        let (dialect, auto_join) = if path == "/ws" {
            (Dialect::Json, None)
        } else if let Some(room) = path_name(path, "/ws/") {
            (Dialect::Chat, Some(room))
        } else if let Some(topic) = path_name(path, "/pubsub/") {
            (Dialect::PubSub, Some(topic))
        } else {
            return Route::Respond(http_response(404, "", "text/plain; charset=utf-8", b"not found"));
        };
        if req.method != "GET" {
            return Route::Reject(Rejection::new(405, "WebSocket upgrade requires GET"));
        }
        if auto_join.as_deref().is_some_and(|r| !names::valid_room(r)) {
            return Route::Reject(Rejection::new(400, "invalid room name"));
        }
        let (user, auth) = if self.auth.enabled() {
            // The identity is the credential's; `?username=` is ignored.
            let identity = match self.auth.authenticate(req) {
                Ok(identity) => identity,
                Err(err) => {
                    warn!("authentication failed from {peer}: {err}");
                    return Route::Reject(Rejection::new(401, err.0));
                }
            };
            if let Some(room) = &auto_join
                && !identity.grants.can_join(room)
            {
                warn!("{} from {peer} is not authorized for room {room}", identity.user);
                return Route::Reject(Rejection::new(403, "not authorized for this room"));
            }
            let deadline = expiry_deadline(&identity, self.auth.leeway(), Instant::now());
            let auth = SessionAuth {
                grants: identity.grants,
                deadline,
            };
            (identity.user, Some(Box::new(auth)))
        } else {
            let user = match (username, dialect) {
                (Some(u), _) if names::valid_user(&u) => u,
                (Some(_), _) => return Route::Reject(Rejection::new(400, "invalid username")),
                (None, Dialect::PubSub) => String::new(),
                (None, _) => return Route::Reject(Rejection::new(400, "missing username")),
            };
            (user, None)
        };
        Route::Upgrade(Session {
            user,
            dialect,
            rooms: Vec::new(),
            auto_join,
            bucket: None,
            auth,
        })
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId) {
        let now = ctx.now();
        let rate = self.config.rate;
        let Some(session) = ctx.state(id) else { return };
        session.bucket = Some(TokenBucket::new(&rate, now));
        let (user, dialect, auto_join) = (session.user.clone(), session.dialect, session.auto_join.take());
        if let Some(at) = session.auth.as_ref().and_then(|a| a.deadline) {
            self.expiries.push(Reverse((at, id)));
            self.timed_sessions += 1;
        }
        if !user.is_empty() {
            self.users.entry(user.clone()).or_default().push(id);
        }
        if dialect == Dialect::Json {
            let conn = id.token().0 as u64;
            Self::reply(ctx, id, Event::Welcome { conn, user: &user });
        }
        if let Some(room) = auto_join {
            // Cannot fail: a fresh connection is in no room yet.
            let _ = self.join(ctx, id, &room);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, kind: MessageKind, data: Vec<u8>) {
        let now = ctx.now();
        let rate = self.config.rate;
        let Some(session) = ctx.state(id) else { return };
        let verdict = session.bucket.as_mut().map_or(Verdict::Allow, |b| b.take(&rate, now));
        let (user, dialect) = (session.user.clone(), session.dialect);
        let home = session.rooms.first().cloned();
        let may_publish = home.as_ref().is_none_or(|room| session.can_publish(room));
        match verdict {
            Verdict::Allow => {}
            Verdict::Limited => {
                self.counters.rate_limited += 1;
                if dialect == Dialect::Json {
                    let err = CommandError::new(None, ErrorCode::RateLimited, "slow down");
                    Self::error(ctx, id, &err);
                }
                return;
            }
            Verdict::Abuse => {
                self.counters.rate_limited += 1;
                self.counters.rate_limit_closes += 1;
                return ctx.close(id, CloseCode::POLICY, "rate limit exceeded");
            }
        }
        match (dialect, kind) {
            (Dialect::Json, MessageKind::Text) => self.command(ctx, id, &data),
            (Dialect::Json, MessageKind::Binary) => {
                ctx.close(id, CloseCode::UNSUPPORTED_DATA, "binary messages are not part of /ws")
            }
            (_, _) if !may_publish => {
                // These dialects have no error envelope: a read-only member that publishes is closed.
                self.counters.not_authorized += 1;
                ctx.close(id, CloseCode::POLICY, "not authorized to publish to this room")
            }
            (_, MessageKind::Text) => {
                let Some(room) = home else { return };
                // Valid UTF-8: the protocol core checked it.
                let text = String::from_utf8_lossy(&data).into_owned();
                if text.len() > self.config.max_content_size {
                    return;
                }
                self.publish(ctx, &room, &user, Value::String(text));
            }
            (_, MessageKind::Binary) => {
                let Some(name) = home else { return };
                if let Some(room) = self.rooms.get(&name) {
                    Self::fan_out(ctx, &name, room, &RoomEvent::Binary(&data), None);
                }
            }
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, session: Session, _reason: CloseReason) {
        if session.auth.as_ref().is_some_and(|a| a.deadline.is_some()) {
            self.timed_sessions -= 1;
            // Entries of closed sessions wait for their deadline; under churn
            // with long-lived tokens, drop them before they pile up.
            if self.expiries.len() > 2 * self.timed_sessions + 64 {
                self.expiries.retain(|Reverse((at, id))| {
                    ctx.state(*id).and_then(|s| s.auth.as_ref()).and_then(|a| a.deadline) == Some(*at)
                });
            }
        }
        for name in &session.rooms {
            self.leave(ctx, id, name, &session.user);
        }
        if let Some(conns) = self.users.get_mut(&session.user) {
            conns.retain(|c| *c != id);
            if conns.is_empty() {
                self.users.remove(&session.user);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.expiries.peek().map(|Reverse((at, _))| *at)
    }

    /// Closes connections whose token expired without a `refresh`.
    fn on_timer(&mut self, ctx: &mut Ctx<'_, Session>) {
        let now = ctx.now();
        while let Some(&Reverse((at, id))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            // A refreshed session has a later deadline; its old entry is stale.
            let current = ctx.state(id).and_then(|s| s.auth.as_ref()).and_then(|a| a.deadline);
            if current == Some(at) {
                self.counters.token_expired_closes += 1;
                ctx.close(id, CloseCode::POLICY, "token expired");
            }
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, dropped: u64) {
        if ctx.state(id).is_some_and(|s| s.dialect == Dialect::Json) {
            Self::reply(ctx, id, Event::Dropped { count: dropped });
        }
    }
}
