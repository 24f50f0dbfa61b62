//! The publish API carried out (README "Publish API"): each call becomes
//! engine requests exactly like the `/ws` commands it mirrors, so an API
//! message is an ordinary room message (`seq`, history, recovery, every
//! dialect, every worker). The HTTP answer is deferred until the engine's
//! replies are in (`Route::Defer`, `Ctx::respond`).

use super::Rooms;
use super::session::Session;
use super::wire::Event;
use crate::auth::{ServerKey, ServerKeys, bearer};
use crate::engine::{Delivery, Name, Refused, Request, Ticket};
use crate::http::api::{self, ApiError, Call, Endpoint};
use crate::net::{ConnId, Ctx, Outgoing, Route};
use crate::protocol::CloseCode;
use crate::protocol::handshake::head::Request as HttpRequest;
use log::{debug, warn};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// One worker's API state: the keys, and the calls waiting for the engine.
#[derive(Debug, Default)]
pub struct Api {
    keys: Option<Arc<ServerKeys>>,
    pending: HashMap<ConnId, Pending>,
}

/// What a deferred call still waits for.
#[derive(Debug)]
enum Pending {
    Publish,
    /// One `Done` per room; `ticket.id` is the room's index in `rooms`.
    Broadcast {
        rooms: Vec<Name>,
        seqs: Vec<Option<u64>>,
        left: usize,
        failed: bool,
    },
    /// `direct` and `disconnect`: `{"ok":true}`.
    Done,
    Presence,
    History,
    /// The listing, shown only with the rooms the key may read.
    Rooms(Box<ServerKey>),
}

impl Api {
    pub fn new(keys: Option<Arc<ServerKeys>>) -> Self {
        Api {
            keys,
            pending: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.keys.is_some()
    }

    /// Whether `delivery` answers a call of this API.
    pub fn owns(&self, delivery: &Delivery) -> bool {
        !self.pending.is_empty() && delivery.ticket().is_some_and(|t| self.pending.contains_key(&t.conn))
    }

    /// The key a request carries, or why it is refused (401).
    fn key(&self, req: &HttpRequest) -> Result<&ServerKey, ApiError> {
        let keys = self.keys.as_ref().ok_or_else(ApiError::not_found)?;
        let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing API key (Authorization: Bearer KEY)"))?;
        keys.check(token.as_bytes())
            .ok_or_else(|| ApiError::unauthorized("wrong API key"))
    }
}

fn reply_ticket(conn: ConnId, index: Option<usize>) -> Ticket {
    Ticket {
        conn,
        id: index.map(Value::from),
    }
}

fn refusal(why: Refused) -> ApiError {
    match why {
        Refused::Unavailable => ApiError::unavailable(),
        Refused::UserOffline => ApiError::new(404, "user_offline", "no connection of that user is online"),
    }
}

impl Rooms {
    /// Routes a request under `/api/`: everything that can be refused
    /// from the head alone is refused here, before any body is read.
    pub(super) fn api_route(&mut self, req: &HttpRequest, peer: SocketAddr, draining: bool) -> Route<Session> {
        let refuse = |err: ApiError| Route::Respond(err.response());
        let Some(endpoint) = Endpoint::from_path(req.path()) else {
            return refuse(ApiError::not_found());
        };
        if req.method != endpoint.method() {
            return Route::Respond(ApiError::method_not_allowed(endpoint.method()));
        }
        let key = match self.api.key(req) {
            Ok(key) => key,
            Err(err) => {
                warn!("API request from {peer} refused: {}", err.message);
                return refuse(err);
            }
        };
        if !key.may(endpoint.op()) {
            warn!("API key {} from {peer} may not {}", key.name, endpoint.op().name());
            return refuse(ApiError::forbidden(format!(
                "this key may not {}",
                endpoint.op().name()
            )));
        }
        if draining {
            return refuse(ApiError::new(503, "shutting_down", "the server is shutting down"));
        }
        Route::Defer
    }

    /// A deferred API request with its body: carried out through the engine.
    pub(super) fn api_request(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, req: &HttpRequest, body: &[u8]) {
        if let Err(err) = self.api_call(id, req, body) {
            ctx.respond(id, err.response());
        }
        self.pump(ctx);
    }

    fn api_call(&mut self, id: ConnId, req: &HttpRequest, body: &[u8]) -> Result<(), ApiError> {
        // `route` checked these; the key is looked up again (no state is
        // kept between a head and its body).
        let endpoint = Endpoint::from_path(req.path()).ok_or_else(ApiError::not_found)?;
        let key = self.api.key(req)?;
        let call = api::parse(endpoint, req.query(), body)?;
        if let Some(room) = call.rooms().iter().find(|r| !key.may_use_room(r)) {
            return Err(ApiError::forbidden(format!("this key may not use room {room}")));
        }
        if let Call::Publish { content, .. } | Call::Broadcast { content, .. } | Call::Direct { content, .. } = &call
            && self.check_size(content).is_err()
        {
            return Err(ApiError::new(
                413,
                "message_too_large",
                "content exceeds --max-content-size bytes of compact JSON",
            ));
        }
        debug!("API call by key {}: {}", key.name, req.path());
        let listing_key = matches!(call, Call::Rooms).then(|| Box::new(key.clone()));
        let ticket = |index| reply_ticket(id, index);
        let (pending, requests) = match call {
            Call::Publish { room, user, content } => {
                let request = Request::Publish {
                    room: room.into(),
                    user: user.into(),
                    content,
                    ticket: Some(ticket(None)),
                };
                (Pending::Publish, vec![request])
            }
            Call::Broadcast { rooms, user, content } => {
                let user: Name = user.into();
                let rooms: Vec<Name> = rooms.into_iter().map(Name::from).collect();
                let requests = rooms
                    .iter()
                    .enumerate()
                    .map(|(i, room)| Request::Publish {
                        room: room.clone(),
                        user: user.clone(),
                        content: content.clone(),
                        ticket: Some(ticket(Some(i))),
                    })
                    .collect();
                let pending = Pending::Broadcast {
                    seqs: vec![None; rooms.len()],
                    left: rooms.len(),
                    failed: false,
                    rooms,
                };
                (pending, requests)
            }
            Call::Direct { to, from, content } => {
                let event = Event::Direct {
                    from: &from,
                    content: &content,
                    ts: super::now_ms(),
                };
                let request = Request::Direct {
                    to: to.into(),
                    event: Arc::new(Outgoing::text(event.to_bytes())),
                    ticket: Some(ticket(None)),
                };
                (Pending::Done, vec![request])
            }
            Call::Disconnect { user, code } => {
                let request = Request::Disconnect {
                    user: user.into(),
                    code,
                    ticket: Some(ticket(None)),
                };
                (Pending::Done, vec![request])
            }
            Call::Rooms => {
                let key = listing_key.expect("made for Rooms");
                (Pending::Rooms(key), vec![Request::Rooms { ticket: ticket(None) }])
            }
            Call::Presence { room } => {
                let request = Request::Presence {
                    room: room.into(),
                    ticket: ticket(None),
                };
                (Pending::Presence, vec![request])
            }
            Call::History { room, since, limit } => {
                let request = Request::History {
                    room: room.into(),
                    since,
                    limit,
                    ticket: ticket(None),
                };
                (Pending::History, vec![request])
            }
        };
        // Waiting before the requests go: the owner may be this worker,
        // whose replies are applied at the next `pump`.
        self.api.pending.insert(id, pending);
        for request in requests {
            self.request(request);
        }
        Ok(())
    }

    /// Applies an engine reply to an API call; the last one answers it.
    pub(super) fn api_reply(&mut self, ctx: &mut Ctx<'_, Session>, delivery: Delivery) {
        let Some(conn) = delivery.ticket().map(|t| t.conn) else {
            return;
        };
        let Some(pending) = self.api.pending.remove(&conn) else {
            return;
        };
        let answer = match (pending, delivery) {
            (Pending::Publish, Delivery::Done { result, .. }) => match result {
                Ok(seq) => Ok(json!({ "seq": seq })),
                Err(why) => Err(refusal(why)),
            },
            (
                Pending::Broadcast {
                    rooms,
                    mut seqs,
                    left,
                    mut failed,
                },
                Delivery::Done { ticket, result },
            ) => {
                let index = ticket.id.as_ref().and_then(Value::as_u64).map(|i| i as usize);
                match (index.and_then(|i| seqs.get_mut(i)), result) {
                    (Some(slot), Ok(seq)) => *slot = seq,
                    (_, _) => failed = true,
                }
                if left > 1 {
                    let pending = Pending::Broadcast {
                        rooms,
                        seqs,
                        left: left - 1,
                        failed,
                    };
                    self.api.pending.insert(conn, pending);
                    return;
                }
                broadcast_answer(&rooms, &seqs, failed)
            }
            (Pending::Done, Delivery::Done { result, .. }) => match result {
                Ok(_) => Ok(json!({ "ok": true })),
                Err(why) => Err(refusal(why)),
            },
            (Pending::Presence, Delivery::Presence { room, result, .. }) => match result {
                Ok(users) => Ok(json!({ "room": &*room, "users": users.iter().map(|u| &**u).collect::<Vec<_>>() })),
                Err(why) => Err(refusal(why)),
            },
            (Pending::History, Delivery::History { room, result, .. }) => match result {
                Ok(messages) => {
                    let messages: Vec<&_> = messages.iter().map(|s| &s.message).collect();
                    Ok(json!({ "room": &*room, "messages": messages }))
                }
                Err(why) => Err(refusal(why)),
            },
            (Pending::Rooms(key), Delivery::Rooms { result, .. }) => match result {
                Ok(rooms) => {
                    let rooms: Vec<Value> = rooms
                        .iter()
                        .filter(|r| key.may_use_room(&r.room))
                        .map(|r| json!({ "room": &*r.room, "members": r.members, "users": r.users }))
                        .collect();
                    Ok(json!({ "rooms": rooms }))
                }
                Err(why) => Err(refusal(why)),
            },
            (pending, delivery) => {
                // Every request kind has its one reply kind; anything else is a bug.
                log::error!("API call {pending:?} got an unexpected reply {delivery:?}");
                Err(ApiError::new(500, "internal", "unexpected reply"))
            }
        };
        let response = match answer {
            Ok(body) => api::ok(&body),
            Err(err) => {
                if err.status == 503 {
                    self.counters.unavailable.inc();
                }
                err.response()
            }
        };
        // A client that left meanwhile gets nothing; the call was still done.
        ctx.respond(conn, response);
    }

    /// Closes this worker's connections of `user`, in every dialect.
    pub(super) fn disconnect_local(&mut self, ctx: &mut Ctx<'_, Session>, user: &str, code: u16) {
        let mut conns: Vec<ConnId> = self.users.get(user).cloned().unwrap_or_default();
        // Chat and pub/sub sessions are not in the directory: they are
        // members of exactly one room here (a rare scan, behind an API key).
        for room in self.local.values() {
            for &(member, dialect) in room.members() {
                if dialect != super::Dialect::Json && ctx.state(member).is_some_and(|s| &*s.user == user) {
                    conns.push(member);
                }
            }
        }
        conns.sort_unstable_by_key(|c| (c.index, c.generation));
        conns.dedup();
        for conn in conns {
            ctx.close(conn, CloseCode(code), api::DISCONNECT_REASON);
        }
    }
}

/// `{"seqs":{room:seq,...}}`, or 503 naming the rooms that failed (with
/// the `seqs` of those that did not: they were published).
fn broadcast_answer(rooms: &[Name], seqs: &[Option<u64>], failed: bool) -> Result<Value, ApiError> {
    let done: serde_json::Map<String, Value> = rooms
        .iter()
        .zip(seqs)
        .filter_map(|(room, seq)| Some((room.to_string(), Value::from((*seq)?))))
        .collect();
    if !failed {
        return Ok(json!({ "seqs": done }));
    }
    let missing: Vec<&str> = rooms
        .iter()
        .zip(seqs)
        .filter(|(_, seq)| seq.is_none())
        .map(|(room, _)| &**room)
        .collect();
    Err(ApiError::new(
        503,
        "unavailable",
        format!(
            "not published to {}; published to the others: {}",
            missing.join(", "),
            Value::Object(done)
        ),
    ))
}
