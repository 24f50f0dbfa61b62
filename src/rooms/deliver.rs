//! Applying what the engine delivers: room events fanned out to this
//! worker's members (encoded once per dialect, shared by all workers),
//! direct messages, and the replies owed to connections.

use super::commands::speaks_json;
use super::session::Session;
use super::wire::{self, ChatEnvelope, CommandError, ErrorCode, Event};
use super::{Dialect, Rooms};
use crate::engine::{Delivery, EventKind, JoinedRoom, Name, Refused, RoomEvent, Stored, Ticket};
use crate::net::{Batch, ConnId, Ctx, Outgoing};
use crate::protocol::{CloseCode, MessageKind};
use std::sync::Arc;

/// The `/ws` `message` event of a stored message, encoded on first use.
pub(super) fn stored_json(stored: &Stored) -> &Outgoing {
    stored
        .json
        .get_or_init(|| Outgoing::text(Event::Message(&stored.message).to_bytes()))
}

/// The event for members speaking `dialect`, or `None` if they do not get
/// it. (`/ws` messages are the stored message's own encoding: `prepared`.)
fn encode(event: &RoomEvent, dialect: Dialect) -> Option<Outgoing> {
    let room = &*event.room;
    let chat = |kind: &str, content: &str, username: &str| {
        Some(Outgoing::text(
            ChatEnvelope {
                kind,
                content,
                room,
                username,
            }
            .to_bytes(),
        ))
    };
    match (&event.kind, dialect) {
        (EventKind::Message(s), Dialect::Chat) => {
            chat("chat", &wire::content_text(&s.message.content), &s.message.user)
        }
        (EventKind::Message(s), Dialect::PubSub) => {
            Some(Outgoing::text(wire::content_text(&s.message.content).into_bytes()))
        }
        (EventKind::Binary(data), Dialect::Chat | Dialect::PubSub) => {
            Some(Outgoing::new(MessageKind::Binary, data.clone()))
        }
        (EventKind::UserJoined(user), Dialect::Json) => {
            Some(Outgoing::text(Event::UserJoined { room, user }.to_bytes()))
        }
        (EventKind::UserJoined(user), Dialect::Chat) => chat("user_joined", &format!("{user} joined the room"), user),
        (EventKind::UserLeft(user), Dialect::Json) => Some(Outgoing::text(Event::UserLeft { room, user }.to_bytes())),
        (EventKind::UserLeft(user), Dialect::Chat) => chat("user_left", &format!("{user} left the room"), user),
        (EventKind::OnlineUsers(users), Dialect::Chat) => {
            let names: Vec<&str> = users.iter().map(|u| &**u).collect();
            chat("online_users", &names.join(","), "")
        }
        (EventKind::Typing { user, typing }, Dialect::Json) => Some(Outgoing::text(
            Event::Typing {
                room,
                user,
                typing: *typing,
            }
            .to_bytes(),
        )),
        _ => None,
    }
}

/// The prepared message for `dialect`: a stored message's own `/ws` event
/// (shared with every replay), or the event's per-dialect encoding.
fn prepared(event: &RoomEvent, dialect: Dialect) -> Option<&Outgoing> {
    if let (EventKind::Message(stored), Dialect::Json) = (&event.kind, dialect) {
        return Some(stored_json(stored));
    }
    event.encoded[dialect.index()]
        .get_or_init(|| encode(event, dialect))
        .as_ref()
}

fn refusal_error(ticket: Ticket, why: Refused) -> CommandError {
    let code = match why {
        Refused::UserOffline => ErrorCode::UserOffline,
        Refused::Unavailable => ErrorCode::Unavailable,
    };
    let message = match why {
        Refused::UserOffline => "no connection of that user is online",
        Refused::Unavailable => "room state is unavailable right now; try again",
    };
    CommandError::new(ticket.id, code, message)
}

impl Rooms {
    /// Applies deliveries until none is left (applying one may run held-back
    /// commands, which may produce more). A run of events for one room goes
    /// out as one batch per member.
    pub(super) fn pump(&mut self, ctx: &mut Ctx<'_, Session>) {
        let mut run: Vec<Arc<RoomEvent>> = Vec::new();
        while !self.work.is_empty() {
            for delivery in std::mem::take(&mut self.work) {
                if let Delivery::Room(event) = delivery {
                    if run.first().is_some_and(|first| first.room != event.room) {
                        self.fan_out(ctx, &std::mem::take(&mut run));
                    }
                    run.push(event);
                    continue;
                }
                if !run.is_empty() && !self.is_silent(ctx, &delivery) {
                    self.fan_out(ctx, &std::mem::take(&mut run));
                }
                self.apply(ctx, delivery);
            }
            if !run.is_empty() {
                self.fan_out(ctx, &std::mem::take(&mut run));
            }
        }
    }

    /// Whether applying `delivery` sends nothing: the acknowledgement of a
    /// command that succeeded and whose sender asked for no reply (no id;
    /// every raw publish), with no commands of its sender held back. Such a
    /// delivery may go ahead of room events waiting to be fanned out.
    pub(super) fn is_silent(&self, ctx: &mut Ctx<'_, Session>, delivery: &Delivery) -> bool {
        match delivery {
            Delivery::Done { ticket, result: Ok(_) } if ticket.id.is_none() && !self.api.owns(delivery) => {
                ctx.state(ticket.conn).is_none_or(|s| !s.has_deferred())
            }
            _ => false,
        }
    }

    fn apply(&mut self, ctx: &mut Ctx<'_, Session>, delivery: Delivery) {
        if self.api.owns(&delivery) {
            return self.api_reply(ctx, delivery);
        }
        match delivery {
            Delivery::Room(event) => self.fan_out(ctx, &[event]),
            Delivery::Direct { to, event } => {
                if let Some(conns) = self.users.get(&to) {
                    for &conn in conns {
                        ctx.send_outgoing(conn, &event);
                    }
                }
            }
            Delivery::Joined { ticket, room, result } => {
                let conn = ticket.conn;
                ctx.release_output(conn);
                match result {
                    Ok(joined) => self.joined(ctx, ticket, room, joined),
                    Err(why) => {
                        if let Some(session) = ctx.state(conn) {
                            session.rooms.retain(|r| *r != room);
                        }
                        if why == Refused::Unavailable {
                            self.counters.unavailable.inc();
                        }
                        if speaks_json(ctx, conn) {
                            Self::error(ctx, conn, &refusal_error(ticket, why));
                        }
                    }
                }
                self.answered(ctx, conn);
            }
            Delivery::Left { ticket, room } => {
                let conn = ticket.conn;
                if speaks_json(ctx, conn) {
                    let id = ticket.id.as_ref();
                    Self::reply(ctx, conn, Event::Left { id, room: &room });
                }
                self.answered(ctx, conn);
            }
            Delivery::Presence { ticket, room, result } => {
                let conn = ticket.conn;
                match result {
                    Ok(users) => {
                        let users = users.iter().map(|u| &**u).collect();
                        let id = ticket.id.as_ref();
                        Self::reply(ctx, conn, Event::Presence { id, room: &room, users });
                    }
                    Err(why) => self.refused(ctx, ticket, why),
                }
                self.answered(ctx, conn);
            }
            Delivery::History { ticket, room, result } => {
                let conn = ticket.conn;
                match result {
                    Ok(messages) => {
                        let messages = messages.iter().map(|s| &s.message).collect();
                        let id = ticket.id.as_ref();
                        Self::reply(
                            ctx,
                            conn,
                            Event::History {
                                id,
                                room: &room,
                                messages,
                            },
                        );
                    }
                    Err(why) => self.refused(ctx, ticket, why),
                }
                self.answered(ctx, conn);
            }
            Delivery::Reset { room } => {
                if let Some(local) = self.local.get(&room) {
                    let members: Vec<ConnId> = local.members().iter().map(|(m, _)| *m).collect();
                    for member in members {
                        // 1012 Service Restart: come back (with `since`).
                        ctx.close(member, CloseCode(1012), "room state was reset; rejoin");
                    }
                }
            }
            Delivery::Disconnect { user, code } => self.disconnect_local(ctx, &user, code),
            // Only the API lists rooms (`owns` took its replies).
            Delivery::Rooms { .. } => {}
            Delivery::Done { ticket, result } => {
                let conn = ticket.conn;
                match result {
                    Ok(_) => {
                        if let Some(id) = &ticket.id {
                            Self::reply(ctx, conn, Event::Ack { id });
                        }
                    }
                    Err(why) => self.refused(ctx, ticket, why),
                }
                self.answered(ctx, conn);
            }
        }
    }

    fn refused(&mut self, ctx: &mut Ctx<'_, Session>, ticket: Ticket, why: Refused) {
        if why == Refused::Unavailable {
            self.counters.unavailable.inc();
        }
        let conn = ticket.conn;
        if !speaks_json(ctx, conn) {
            // Chat and pub/sub have no error envelope: a publish that was
            // not carried out closes the connection rather than vanish.
            ctx.close(conn, CloseCode::TRY_AGAIN_LATER, "room state unavailable; try again");
            return;
        }
        Self::error(ctx, conn, &refusal_error(ticket, why));
    }

    /// A reply owed to `conn` was given: held-back commands may run.
    fn answered(&mut self, ctx: &mut Ctx<'_, Session>, conn: ConnId) {
        let Some(session) = ctx.state(conn) else { return };
        session.answered();
        if session.pending == 0 && session.has_deferred() {
            self.run_deferred(ctx, conn);
        }
    }

    /// The owner added `conn` to `room`: from now on it gets the room's
    /// events here; a `/ws` client is told, then sent what it missed.
    fn joined(&mut self, ctx: &mut Ctx<'_, Session>, ticket: Ticket, room: Name, joined: JoinedRoom) {
        let conn = ticket.conn;
        let Some(session) = ctx.state(conn) else { return };
        let dialect = session.dialect;
        // Not if it left again meanwhile.
        if session.in_room(&room) && self.local.entry(room.clone()).or_default().add(conn, dialect) {
            self.counters.members.inc();
        }
        if dialect != Dialect::Json {
            return;
        }
        let users = joined.users.iter().map(|u| &**u).collect();
        let reply = Event::Joined {
            id: ticket.id.as_ref(),
            room: &room,
            users,
            seq: joined.position.seq,
            epoch: &joined.position.epoch,
            recovered: joined.recovered,
        };
        Self::reply(ctx, conn, reply);
        for stored in &joined.missed {
            ctx.send_outgoing(conn, stored_json(stored));
        }
    }

    /// Consecutive events of one room to this worker's members of it: each
    /// member gets them as one batch (its own messages left out where an
    /// event says so).
    fn fan_out(&mut self, ctx: &mut Ctx<'_, Session>, events: &[Arc<RoomEvent>]) {
        let Some(local) = events.first().and_then(|e| self.local.get(&e.room)) else {
            return;
        };
        let skip = |e: &RoomEvent| e.skip.filter(|s| s.worker == self.worker).map(|s| s.id);
        let skipped: Vec<ConnId> = events.iter().filter_map(|e| skip(e)).collect();
        let mut batches: [Option<Batch>; 3] = [None, None, None];
        // Members reached: batched, per dialect; one at a time, per event.
        let mut batched = [0usize; 3];
        let mut singly = vec![0usize; events.len()];
        for &(member, dialect) in local.members() {
            if skipped.contains(&member) {
                // Rare (a member's own message in a run): one at a time.
                for (i, event) in events.iter().enumerate() {
                    if skip(event) != Some(member)
                        && let Some(out) = prepared(event, dialect)
                    {
                        ctx.send_outgoing(member, out);
                        singly[i] += 1;
                    }
                }
                continue;
            }
            let batch = batches[dialect.index()]
                .get_or_insert_with(|| Batch::new(events.iter().filter_map(|e| prepared(e, dialect)).collect()));
            ctx.send_batch(member, batch);
            batched[dialect.index()] += 1;
        }
        let now = std::time::Instant::now();
        for (event, singly) in events.iter().zip(singly) {
            if !matches!(event.kind, EventKind::Message(_)) {
                continue;
            }
            let reached: usize = Dialect::ALL
                .into_iter()
                .filter(|d| batched[d.index()] > 0 && prepared(event, *d).is_some())
                .map(|d| batched[d.index()])
                .sum();
            self.counters.fanout.observe((reached + singly) as u64);
            let waited = now.saturating_duration_since(event.at);
            self.counters.enqueue.observe(waited.as_nanos() as u64);
        }
    }
}
