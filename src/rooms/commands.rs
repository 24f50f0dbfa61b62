//! `/ws` commands: checked here, carried out by the engine (docs/protocol.md).
//!
//! Every check that can refuse a command runs before anything changes, so a
//! command held back to keep replies in order (see `session.rs`) can be run
//! again later from the start.

use super::session::{DEFER_PAUSE, Session, SessionAuth};
use super::wire::{self, Command, CommandError, ErrorCode, Event};
use super::{Dialect, Publish, Rooms, expiry_deadline, names};
use crate::engine::{Key, Lane, Name, Request, Since, Ticket};
use crate::net::{ConnId, Ctx, Outgoing};
use serde_json::Value;
use std::cmp::Reverse;
use std::sync::Arc;

/// Why a command is refused here.
struct Refusal {
    code: ErrorCode,
    /// The hooks' reason, when they refused it.
    reason: Option<String>,
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Refusal { code, reason: None }
    }
}

fn message_for(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::InvalidRoom => "room names are 1-128 bytes of A-Z a-z 0-9 . _ : -",
        ErrorCode::NotMember => "join the room first",
        ErrorCode::TooManyRooms => "too many rooms on this connection",
        ErrorCode::UserOffline => "no connection of that user is online",
        ErrorCode::MessageTooLarge => "content exceeds the size limit",
        ErrorCode::NotAuthorized => "your credential does not allow this room",
        ErrorCode::Unavailable => "room state is unavailable right now; try again",
        _ => "command failed",
    }
}

impl Rooms {
    /// The lane a command's engine request travels in; `None` for commands
    /// this worker answers itself.
    fn lane_of(&self, command: &Command) -> Option<Lane> {
        let key = match command {
            Command::Join { room, .. }
            | Command::Leave { room }
            | Command::Broadcast { room, .. }
            | Command::Typing { room, .. }
            | Command::Presence { room }
            | Command::History { room, .. } => Key::Room(room),
            Command::Direct { to, .. } => Key::User(to),
            Command::Refresh { .. } => return None,
        };
        Some(self.engine.lane(key))
    }

    /// Runs a command that just arrived now, or holds it back until the
    /// connection's outstanding replies are in.
    pub(super) fn dispatch(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        parsed: Result<wire::Request, CommandError>,
    ) {
        let lane = parsed.as_ref().ok().and_then(|r| self.lane_of(&r.command));
        let Some(session) = ctx.state(id) else { return };
        if !session.may_run(lane) {
            self.hold(ctx, id, parsed, false);
            return;
        }
        if let Some(again) = self.execute(ctx, id, parsed, lane) {
            self.hold(ctx, id, Ok(again), false);
        }
    }

    /// Holds a command back: at the back of the queue when it just arrived,
    /// at the front when it came from there.
    fn hold(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        command: Result<wire::Request, CommandError>,
        front: bool,
    ) {
        let Some(session) = ctx.state(id) else { return };
        let held = if front {
            session.defer_front(command)
        } else {
            self.counters.deferred.inc();
            session.defer(command)
        };
        if held >= DEFER_PAUSE {
            ctx.pause_reading(id);
        }
    }

    /// Runs a command that may run now. Returns it back if it must wait
    /// after all (it would be refused here while replies are still owed, and
    /// the refusal would overtake them).
    fn execute(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        parsed: Result<wire::Request, CommandError>,
        lane: Option<Lane>,
    ) -> Option<wire::Request> {
        let request = match parsed {
            Ok(request) => request,
            Err(err) => {
                Self::error(ctx, id, &err);
                return None;
            }
        };
        let replacement = match self.check(ctx, id, &request.command) {
            Ok(replacement) => replacement,
            Err(refusal) => {
                if ctx.state(id).is_some_and(|s| s.pending > 0) {
                    return Some(request);
                }
                match refusal.code {
                    ErrorCode::NotAuthorized => self.counters.not_authorized.inc(),
                    ErrorCode::TooManyRooms => self.counters.too_many_rooms.inc(),
                    ErrorCode::Rejected => self.counters.rejected.inc(),
                    _ => {}
                }
                let message = refusal.reason.unwrap_or_else(|| message_for(refusal.code).to_owned());
                Self::error(ctx, id, &CommandError::new(request.id, refusal.code, message));
                return None;
            }
        };
        self.act(ctx, id, request, lane, replacement);
        None
    }

    /// Everything that can refuse a command, with no side effect; for a
    /// broadcast, the content the hooks put in its place, if any.
    fn check(&self, ctx: &mut Ctx<'_, Session>, id: ConnId, command: &Command) -> Result<Option<Value>, Refusal> {
        self.builtin_checks(ctx, id, command).map_err(Refusal::from)?;
        let (Some(hooks), Some(session)) = (&self.hooks, ctx.state(id)) else {
            return Ok(None);
        };
        let refuse = |code, reason| Refusal {
            code,
            reason: Some(reason),
        };
        match command {
            Command::Join { room, .. } if !session.in_room(room) => hooks
                .authorize_join(&session.user, room)
                .map(|()| None)
                .map_err(|reason| refuse(ErrorCode::NotAuthorized, reason)),
            Command::Broadcast { room, content } => match hooks.on_publish(&session.user, room, content) {
                Publish::Keep => Ok(None),
                Publish::Replace(content) => {
                    self.check_size(&content).map_err(Refusal::from)?;
                    Ok(Some(content))
                }
                Publish::Reject(reason) => Err(refuse(ErrorCode::Rejected, reason)),
            },
            _ => Ok(None),
        }
    }

    /// The room server's own rules: names, membership, grants, sizes.
    fn builtin_checks(&self, ctx: &mut Ctx<'_, Session>, id: ConnId, command: &Command) -> Result<(), ErrorCode> {
        let max_rooms = self.config.max_rooms_per_connection;
        let Some(session) = ctx.state(id) else { return Ok(()) };
        let member = |room: &str| {
            if !names::valid_room(room) {
                Err(ErrorCode::InvalidRoom)
            } else if !session.in_room(room) {
                Err(ErrorCode::NotMember)
            } else {
                Ok(())
            }
        };
        let publisher = |room: &str| {
            member(room)?;
            if session.can_publish(room) {
                Ok(())
            } else {
                Err(ErrorCode::NotAuthorized)
            }
        };
        match command {
            Command::Join { room, .. } => {
                if !names::valid_room(room) {
                    return Err(ErrorCode::InvalidRoom);
                }
                if !session.can_join(room) {
                    return Err(ErrorCode::NotAuthorized);
                }
                if !session.in_room(room) && session.rooms.len() >= max_rooms {
                    return Err(ErrorCode::TooManyRooms);
                }
                Ok(())
            }
            Command::Leave { room } | Command::Presence { room } | Command::History { room, .. } => member(room),
            Command::Broadcast { room, content } => {
                publisher(room)?;
                self.check_size(content)
            }
            Command::Typing { room, .. } => publisher(room),
            Command::Direct { content, .. } => self.check_size(content),
            // It answers with its own error messages.
            Command::Refresh { .. } => Ok(()),
        }
    }

    /// Carries out a checked command (with the hooks' replacement content).
    fn act(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        request: wire::Request,
        lane: Option<Lane>,
        replacement: Option<Value>,
    ) {
        let req_id = request.id;
        let Some(session) = ctx.state(id) else { return };
        let user = session.user.clone();
        let ticket = |id_: Option<Value>| Ticket { conn: id, id: id_ };
        let engine_request = match request.command {
            Command::Join { room, since, epoch } => {
                let since = since.map(|seq| Since { seq, epoch });
                return self.join(ctx, id, room.into(), since, req_id);
            }
            Command::Leave { room } => {
                let room: Name = room.into();
                let member = Self::member(id, session);
                session.rooms.retain(|r| *r != room);
                self.forget_local(id, &room);
                Request::Leave {
                    room,
                    member,
                    ticket: Some(ticket(req_id)),
                }
            }
            Command::Broadcast { room, content } => Request::Publish {
                room: room.into(),
                user,
                content: replacement.unwrap_or(content),
                // Always answered, so a failure is an `error` even without
                // an `id`; success gets an `ack` only with one.
                ticket: Some(ticket(req_id)),
            },
            Command::Direct { to, content } => {
                let event = Outgoing::text(
                    Event::Direct {
                        from: &user,
                        content: &content,
                        ts: super::now_ms(),
                    }
                    .to_bytes(),
                );
                // Always answered: `user_offline` needs no `id`.
                Request::Direct {
                    to: to.into(),
                    event: Arc::new(event),
                    ticket: Some(ticket(req_id)),
                }
            }
            Command::Typing { room, typing } => Request::Typing {
                room: room.into(),
                user,
                typing,
                from: id,
                ticket: req_id.map(|i| ticket(Some(i))),
            },
            Command::Presence { room } => Request::Presence {
                room: room.into(),
                ticket: ticket(req_id),
            },
            Command::History { room, since, limit } => Request::History {
                room: room.into(),
                since,
                limit,
                ticket: ticket(req_id),
            },
            Command::Refresh { token } => {
                if let Err(err) = self.refresh(ctx, id, req_id.as_ref(), &token) {
                    self.counters.not_authorized.inc();
                    Self::error(ctx, id, &err);
                }
                return;
            }
        };
        self.send(ctx, id, lane, engine_request);
    }

    /// Sends a request for a connection, counting the reply it is owed.
    fn send(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, lane: Option<Lane>, request: Request) {
        let owed = match &request {
            Request::Join { .. } | Request::Presence { .. } | Request::History { .. } => true,
            Request::Leave { ticket, .. }
            | Request::Publish { ticket, .. }
            | Request::Typing { ticket, .. }
            | Request::Direct { ticket, .. } => ticket.is_some(),
            Request::Relay { .. }
            | Request::UserOnline { .. }
            | Request::UserOffline { .. }
            | Request::Disconnect { .. }
            | Request::Rooms { .. } => false,
        };
        if owed && let (Some(session), Some(lane)) = (ctx.state(id), lane) {
            session.sent(lane);
        }
        self.request(request);
    }

    /// Joins `room` (or asks again for the position of a room one is in).
    pub(super) fn join(
        &mut self,
        ctx: &mut Ctx<'_, Session>,
        id: ConnId,
        room: Name,
        since: Option<Since>,
        req_id: Option<Value>,
    ) {
        let lane = self.engine.lane(Key::Room(&room));
        let Some(session) = ctx.state(id) else { return };
        let again = session.in_room(&room);
        if !again {
            session.rooms.push(room.clone());
        }
        let member = Self::member(id, session);
        let request = Request::Join {
            room,
            member,
            since,
            again,
            ticket: Ticket { conn: id, id: req_id },
        };
        self.send(ctx, id, Some(lane), request);
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
        if *identity.user != *session.user {
            return Err(refuse("the token is for another user"));
        }
        let deadline = expiry_deadline(&identity, self.auth.leeway(), now);
        let member = Self::member(id, session);
        let excluded: Vec<Name> = session
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
        self.counters.refreshes.inc();
        for room in excluded {
            self.forget_local(id, &room);
            self.request(Request::Leave {
                room: room.clone(),
                member: member.clone(),
                ticket: None,
            });
            Self::reply(ctx, id, Event::Left { id: None, room: &room });
        }
        let exp = identity.expires.unwrap_or(0);
        Self::reply(ctx, id, Event::Refreshed { id: req_id, exp });
        Ok(())
    }

    /// Runs the commands a connection held back, in order, while nothing
    /// is owed to it.
    pub(super) fn run_deferred(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId) {
        loop {
            let Some(session) = ctx.state(id) else { return };
            let Some(command) = session.next_deferred() else { break };
            let lane = command.as_ref().ok().and_then(|r| self.lane_of(&r.command));
            // Nothing is owed (`next_deferred` says so): it may run.
            if let Some(again) = self.execute(ctx, id, command, lane) {
                self.hold(ctx, id, Ok(again), true);
                break;
            }
        }
        let few = ctx
            .state(id)
            .is_some_and(|s| s.deferred.as_ref().is_none_or(|d| d.len() < DEFER_PAUSE / 4));
        if few {
            ctx.resume_reading(id);
        }
    }
}

/// Only `/ws` connections get replies.
pub(super) fn speaks_json(ctx: &mut Ctx<'_, Session>, id: ConnId) -> bool {
    ctx.state(id).is_some_and(|s| s.dialect == Dialect::Json)
}
