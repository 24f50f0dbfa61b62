//! The room server (docs/protocol.md): sessions, three dialects sharing one
//! namespace (`/ws` JSON, `/ws/{room}` chat tutorial, `/pubsub/{topic}`
//! raw relay), and fan-out to this worker's members.
//!
//! What must be agreed beyond one worker (order, `seq`, history, presence,
//! where users are) goes through `crate::engine`; this layer sends it
//! requests (`commands.rs`) and applies what comes back (`deliver.rs`).
//! Every room event is encoded at most once per dialect, by whichever
//! worker first needs it, and the same bytes are queued to every recipient.

mod api;
mod commands;
pub mod counters;
mod deliver;
pub mod hooks;
pub mod local;
pub mod names;
pub mod session;
pub mod wire;

/// Token buckets live in the I/O layer, which limits pings and handshakes with them too.
pub use crate::net::rate;
pub use counters::{RoomCounters, RoomTotals};
pub use hooks::{Hooks, Publish};
pub use local::Dialect;

use crate::auth::{Authenticator, Identity, ServerKeys};
use crate::engine::memory::{EngineConfig, Envelope, Hub, MemoryEngine};
use crate::engine::redis::{RedisConfig, RedisNode};
use crate::engine::{Delivery, Engine, Member, Name, Request};
use crate::http::{self, Snapshot, WorkerSnapshot};
use crate::net::{App, CloseReason, ConnId, Ctx, Route, Shared};
use crate::protocol::handshake::head::Request as HttpRequest;
use crate::protocol::handshake::server::{Rejection, http_response};
use crate::protocol::{CloseCode, MessageKind};
use crate::runtime::{AcceptMode, Plan, Runtime};
use crate::store::sqlite::{Sqlite, SqliteConfig};
use crate::store::{Retention, Store, StoreHealth, memory::MemoryStore};
use local::LocalRoom;
use log::warn;
use rate::{RateLimit, TokenBucket, Verdict};
use serde_json::Value;
use session::{Session, SessionAuth};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wire::{CommandError, ErrorCode, Event};

/// Room-server settings; defaults per docs/protocol.md.
#[derive(Clone, Debug)]
pub struct RoomConfig {
    pub max_rooms_per_connection: usize,
    /// Messages kept per room for `history` and recovery.
    pub history_size: usize,
    /// Messages older than this leave the history; `None` keeps them.
    pub history_ttl: Option<Duration>,
    /// Largest `content` (as JSON text) a message may carry.
    pub max_content_size: usize,
    pub rate: RateLimit,
    /// Serve the chat page at `/` and its assets (`--no-demo` turns it off).
    pub demo: bool,
}

impl Default for RoomConfig {
    fn default() -> Self {
        RoomConfig {
            max_rooms_per_connection: 64,
            history_size: 100,
            history_ttl: Some(Duration::from_secs(7 * 24 * 3600)),
            max_content_size: 32 * 1024,
            rate: RateLimit {
                per_second: 50.0,
                burst: 100.0,
            },
            demo: true,
        }
    }
}

impl RoomConfig {
    pub fn retention(&self) -> Retention {
        Retention {
            count: self.history_size,
            max_age_ms: self.history_ttl.map(|d| d.as_millis() as u64),
        }
    }
}

/// What every worker's room layer shares: the counters of all of them,
/// for `/stats` and `/metrics`, and the store's health.
pub struct Registry {
    workers: Vec<Arc<RoomCounters>>,
    /// Each worker's biggest owned rooms, refreshed once a second.
    top_rooms: Vec<Mutex<Vec<(Name, u64)>>>,
    /// (time, messages in, messages out) at the previous `/stats` snapshot.
    last_sample: Mutex<Option<(Instant, u64, u64)>>,
    store_health: Box<dyn Fn() -> StoreHealth + Send + Sync>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl Registry {
    fn new(workers: usize, store_health: Box<dyn Fn() -> StoreHealth + Send + Sync>) -> Arc<Self> {
        Arc::new(Registry {
            workers: (0..workers).map(|_| Arc::default()).collect(),
            top_rooms: (0..workers).map(|_| Mutex::default()).collect(),
            last_sample: Mutex::new(None),
            store_health,
        })
    }

    fn snapshot(&self, net: &Shared, draining: bool) -> Snapshot {
        let now = Instant::now();
        let totals = net.totals();
        let mut counters = RoomTotals::default();
        let mut workers = Vec::new();
        for (stats, rooms) in net.per_worker().zip(&self.workers) {
            let r = rooms.totals();
            counters.add(&r);
            workers.push(WorkerSnapshot {
                connections_active: stats.connections_active.get(),
                connections_total: stats.connections_total.get(),
                messages_in: stats.messages_in.get(),
                messages_out: stats.messages_out.get(),
                rooms: r.rooms,
                members: r.members,
            });
        }
        let rates = {
            let mut last = self.last_sample.lock().unwrap_or_else(PoisonError::into_inner);
            let (t0, in0, out0) = last.unwrap_or((net.started(), 0, 0));
            let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
            *last = Some((now, totals.messages_in, totals.messages_out));
            (
                totals.messages_in.saturating_sub(in0) as f64 / secs,
                totals.messages_out.saturating_sub(out0) as f64 / secs,
            )
        };
        let mut top_rooms: Vec<(Name, u64)> = self
            .top_rooms
            .iter()
            .flat_map(|t| t.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect();
        top_rooms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        top_rooms.truncate(TOP_ROOMS);
        Snapshot {
            net: totals,
            top_rooms,
            started: net.started(),
            now,
            rooms: counters.rooms,
            members: counters.members,
            counters,
            rates,
            heap_bytes: crate::heap::live_bytes(),
            draining,
            workers,
            store: (self.store_health)(),
        }
    }
}

/// Where history is kept (`--store`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// In memory: lost at exit, every room gets a new epoch in every process.
    Memory,
    /// An SQLite file, written in batches: `--store sqlite:PATH`.
    Sqlite {
        path: std::path::PathBuf,
        flush: Duration,
        batch: usize,
        /// Caps the file's size; beyond it writes fail as on a full disk.
        max_bytes: Option<u64>,
    },
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            _ if s == "memory" => Ok(StoreKind::Memory),
            Some(("sqlite", path)) if !path.is_empty() => Ok(StoreKind::Sqlite {
                path: path.into(),
                flush: Duration::from_millis(100),
                batch: 1000,
                max_bytes: None,
            }),
            _ => Err(format!("`{s}`: expected `memory` or `sqlite:PATH`")),
        }
    }
}

/// Everything needed to run the room server; `start` runs it on `workers`
/// event loops.
pub struct RoomServer {
    pub net: crate::net::Config,
    pub rooms: RoomConfig,
    pub auth: Authenticator,
    pub workers: usize,
    pub accept: AcceptMode,
    pub store: StoreKind,
    /// Room state in Redis, shared with other nodes (`--redis`); `store`
    /// is then not used.
    pub redis: Option<RedisConfig>,
    pub hooks: Option<Arc<dyn Hooks>>,
    /// Keys of the publish API under `/api/`; `None`: the API is off (404).
    pub api_keys: Option<ServerKeys>,
}

impl RoomServer {
    pub fn new(net: crate::net::Config, rooms: RoomConfig) -> Self {
        RoomServer {
            net,
            rooms,
            auth: Authenticator::default(),
            workers: 1,
            accept: AcceptMode::default(),
            store: StoreKind::Memory,
            redis: None,
            hooks: None,
            api_keys: None,
        }
    }

    pub fn redis(mut self, redis: Option<RedisConfig>) -> Self {
        self.redis = redis;
        self
    }

    /// Lets `hooks` decide about joins and messages (see [`Hooks`]).
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// Turns the publish API on, for these keys.
    pub fn api_keys(mut self, keys: ServerKeys) -> Self {
        self.api_keys = Some(keys);
        self
    }

    pub fn store(mut self, store: StoreKind) -> Self {
        self.store = store;
        self
    }

    pub fn accept(mut self, mode: AcceptMode) -> Self {
        self.accept = mode;
        self
    }

    pub fn auth(mut self, auth: Authenticator) -> Self {
        self.auth = auth;
        self
    }

    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers.max(1);
        self
    }

    /// Binds the listeners, opens the store and starts the workers. A store
    /// that cannot be opened is an error naming its path.
    pub fn start(self) -> std::io::Result<Runtime> {
        if self.redis.is_some() {
            return self.start_on_redis();
        }
        let plan = Plan::new(self.net, self.workers, self.accept)?;
        let n = plan.workers().count();
        let hub = Hub::new(plan.workers());
        let engine = EngineConfig {
            retention: self.rooms.retention(),
            // In memory the tail is the whole history; on disk, the newest part.
            tail: match self.store {
                StoreKind::Memory => self.rooms.history_size,
                StoreKind::Sqlite { .. } => self.rooms.history_size.min(MEMORY_TAIL),
            },
        };
        let (stores, registry, sqlite): (Vec<Box<dyn Store>>, _, _) = match self.store {
            StoreKind::Memory => {
                let stores = (0..n)
                    .map(|_| Box::new(MemoryStore::new(engine.retention)) as Box<dyn Store>)
                    .collect();
                (stores, Registry::new(n, Box::new(StoreHealth::default)), None)
            }
            StoreKind::Sqlite {
                path,
                flush,
                batch,
                max_bytes,
            } => {
                let mailboxes = hub.clone();
                let reply: crate::store::sqlite::Reply =
                    Arc::new(move |w, event| mailboxes.mailbox(w).send(Envelope::Store(event)));
                let config = SqliteConfig {
                    path,
                    flush,
                    batch: batch.max(1),
                    retention: engine.retention,
                    tail: engine.tail,
                    max_bytes,
                };
                let sqlite = Sqlite::open(config, n, reply).map_err(std::io::Error::other)?;
                let stores = (0..n).map(|w| Box::new(sqlite.handle(w)) as Box<dyn Store>).collect();
                let registry = Registry::new(n, Box::new(sqlite.health_probe()));
                (stores, registry, Some(sqlite))
            }
        };
        let shared = WorkerParts {
            config: self.rooms,
            auth: Arc::new(self.auth),
            registry,
            api_keys: self.api_keys.map(Arc::new),
            hooks: self.hooks,
        };
        let apps = stores
            .into_iter()
            .enumerate()
            .map(|(i, store)| {
                let engine = MemoryEngine::new(hub.clone(), i, engine, store);
                shared.rooms(i, Box::new(engine))
            })
            .collect();
        let mut runtime = plan.spawn(apps)?;
        if let Some(sqlite) = sqlite {
            // The workers' handles are gone with them: the last commit follows.
            runtime.after_exit(move || sqlite.join());
        }
        Ok(runtime)
    }
}

impl RoomServer {
    /// With `--redis`: every worker is a member of the Redis cluster with
    /// an engine handle of its own; history lives in Redis (README "Several
    /// nodes on Redis"). A server that cannot be reached is an error naming it.
    fn start_on_redis(self) -> std::io::Result<Runtime> {
        let mut config = self.redis.expect("a Redis configuration");
        config.retention = self.rooms.retention();
        let plan = Plan::new(self.net, self.workers, self.accept)?;
        let n = plan.workers().count();
        let node = RedisNode::start(config, Hub::new(plan.workers())).map_err(std::io::Error::other)?;
        let registry = Registry::new(n, Box::new(node.health_probe()));
        let shared = WorkerParts {
            config: self.rooms,
            auth: Arc::new(self.auth),
            registry,
            api_keys: self.api_keys.map(Arc::new),
            hooks: self.hooks,
        };
        let apps = (0..n).map(|i| shared.rooms(i, Box::new(node.engine(i)))).collect();
        let mut runtime = plan.spawn(apps)?;
        // The workers' members have left by then: the node leaves the cluster.
        runtime.after_exit(move || node.join());
        Ok(runtime)
    }
}

/// What every worker's room layer shares, whatever the engine.
struct WorkerParts {
    config: RoomConfig,
    auth: Arc<Authenticator>,
    registry: Arc<Registry>,
    api_keys: Option<Arc<ServerKeys>>,
    hooks: Option<Arc<dyn Hooks>>,
}

impl WorkerParts {
    /// Worker `i`'s room layer over `engine`.
    fn rooms(&self, i: usize, engine: Box<dyn Engine>) -> Rooms {
        let mut rooms = Rooms::new(i, self.config.clone(), self.auth.clone(), engine, self.registry.clone())
            .with_api(self.api_keys.clone());
        rooms.hooks = self.hooks.clone();
        rooms
    }
}

/// Messages per room an owner keeps in memory at most; older retained ones
/// are read from the store when asked for.
const MEMORY_TAIL: usize = 1000;

/// One worker's room layer.
pub struct Rooms {
    worker: usize,
    config: RoomConfig,
    auth: Arc<Authenticator>,
    /// Token expiries (connection, deadline); stale entries are skipped.
    expiries: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Open sessions with an expiring credential.
    timed_sessions: usize,
    /// This worker's members of each room.
    local: HashMap<Name, LocalRoom>,
    /// This worker's `/ws` connections per user, for direct messages.
    users: HashMap<Name, Vec<ConnId>>,
    engine: Box<dyn Engine>,
    /// Deliveries not applied yet, in the order the engine gave them.
    work: Vec<Delivery>,
    counters: Arc<RoomCounters>,
    registry: Arc<Registry>,
    next_tick: Instant,
    hooks: Option<Arc<dyn Hooks>>,
    /// The publish API's calls waiting for the engine.
    api: api::Api,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How often the engine's housekeeping (retention, idle rooms) runs.
const TICK: Duration = Duration::from_secs(1);
/// Rooms listed in `/stats` `top_rooms`.
const TOP_ROOMS: usize = 10;

impl Rooms {
    pub fn new(
        worker: usize,
        config: RoomConfig,
        auth: Arc<Authenticator>,
        engine: Box<dyn Engine>,
        registry: Arc<Registry>,
    ) -> Self {
        Rooms {
            worker,
            config,
            auth,
            expiries: BinaryHeap::new(),
            timed_sessions: 0,
            local: HashMap::new(),
            users: HashMap::new(),
            engine,
            work: Vec::new(),
            counters: registry.workers[worker].clone(),
            registry,
            next_tick: Instant::now() + TICK,
            hooks: None,
            api: api::Api::default(),
        }
    }

    /// Serves the publish API with these keys (`None`: off, 404).
    pub fn with_api(mut self, keys: Option<Arc<ServerKeys>>) -> Self {
        self.api = api::Api::new(keys);
        self
    }

    /// The member a session is, as the room's owner counts it.
    fn member(id: ConnId, session: &Session) -> Member {
        Member {
            conn: id,
            user: session.user.clone(),
            present: session.dialect != Dialect::PubSub,
            roster: session.dialect == Dialect::Chat,
        }
    }

    /// Sends a request; its synchronous results join the work queue.
    fn request(&mut self, request: Request) {
        self.engine.request(request, &mut self.work);
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

    /// A connection's membership of `name` on this worker ends.
    fn forget_local(&mut self, id: ConnId, name: &str) {
        if let Some(room) = self.local.get_mut(name)
            && room.remove(id)
        {
            self.counters.members.sub(1);
            if room.is_empty() {
                self.local.remove(name);
            }
        }
    }

    /// Publishes `content` to `room` as connection `id` of `user` (chat
    /// and pub/sub text): no `ack`, but a refusal closes it (see `deliver`).
    fn publish(&mut self, id: ConnId, room: Name, user: Name, content: Value) {
        self.request(Request::Publish {
            room,
            user,
            content,
            ticket: Some(crate::engine::Ticket { conn: id, id: None }),
        });
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

    /// Keeps the gauges `/stats` reads from other workers current.
    fn publish_gauges(&self) {
        let counts = self.engine.counts();
        for (gauge, now) in [
            (&self.counters.rooms, counts.rooms as u64),
            (&self.counters.rooms_loaded, counts.rooms_loaded as u64),
        ] {
            let current = gauge.get();
            if now != current {
                gauge.add(now.wrapping_sub(current));
            }
        }
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

    fn route(&mut self, req: &HttpRequest, peer: SocketAddr, net: &Shared, draining: bool) -> Route<Session> {
        if self.api.enabled() && req.path().starts_with(http::api::PREFIX) {
            return self.api_route(req, peer, draining);
        }
        if self.config.demo
            && let Some(response) = http::demo::serve(req)
        {
            return Route::Respond(response);
        }
        let path = req.path();
        if matches!(path, "/health" | "/stats" | "/metrics") {
            if req.method != "GET" && req.method != "HEAD" {
                return Route::Respond(Rejection::new(405, "use GET").response());
            }
            let snapshot = self.registry.snapshot(net, draining);
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
        if let (Some(hooks), Some(room)) = (&self.hooks, &auto_join)
            && let Err(reason) = hooks.authorize_join(&user, room)
        {
            warn!("{user} from {peer} may not join {room}: {reason}");
            return Route::Reject(Rejection::new(403, "not authorized for this room"));
        }
        Route::Upgrade(Session::new(user.into(), dialect, auto_join, auth))
    }

    fn on_request(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, req: &HttpRequest, body: Vec<u8>) {
        self.api_request(ctx, id, req, &body);
    }

    fn http_error(&mut self, req: &HttpRequest, status: u16, reason: &'static str) -> Vec<u8> {
        // Only API requests are deferred, so only they reach here.
        let _ = req;
        http::api::ApiError::framing(status, reason).response()
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
        if let Some(hooks) = &self.hooks {
            hooks.on_connect(&user, id.token().0 as u64);
        }
        if dialect == Dialect::Json {
            let conns = self.users.entry(user.clone()).or_default();
            conns.push(id);
            if conns.len() == 1 {
                self.request(Request::UserOnline { user: user.clone() });
            }
            let conn = id.token().0 as u64;
            Self::reply(ctx, id, Event::Welcome { conn, user: &user });
        }
        if let Some(room) = auto_join {
            // These dialects have no `joined`: the 101 itself must mean
            // "subscribed", so it waits until the room's owner has added
            // the member (at once when this worker owns the room).
            ctx.hold_output(id);
            // Cannot be refused: a fresh connection is in no room yet, and
            // the handshake checked the name and the grant.
            self.join(ctx, id, room.into(), None, None);
        }
        self.pump(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, kind: MessageKind, data: &[u8]) {
        let now = ctx.now();
        let rate = self.config.rate;
        let Some(session) = ctx.state(id) else { return };
        let verdict = session.bucket.as_mut().map_or(Verdict::Allow, |b| b.take(&rate, now));
        let (user, dialect) = (session.user.clone(), session.dialect);
        let home = session.rooms.first().cloned();
        let may_publish = home.as_ref().is_none_or(|room| session.can_publish(room));
        // Only a publish on a raw dialect adds to the turn's batch; a reply
        // or a close must not overtake room events still waiting for it.
        if !(matches!(verdict, Verdict::Allow) && dialect != Dialect::Json && may_publish) {
            self.pump(ctx);
        }
        match verdict {
            Verdict::Allow => {}
            Verdict::Limited => {
                self.counters.rate_limited.inc();
                if dialect == Dialect::Json {
                    let err = CommandError::new(None, ErrorCode::RateLimited, "slow down");
                    Self::error(ctx, id, &err);
                }
                return;
            }
            Verdict::Abuse => {
                self.counters.rate_limited.inc();
                self.counters.rate_limit_closes.inc();
                return ctx.close(id, CloseCode::POLICY, "rate limit exceeded");
            }
        }
        match (dialect, kind) {
            (Dialect::Json, MessageKind::Text) => self.dispatch(ctx, id, wire::parse(data)),
            (Dialect::Json, MessageKind::Binary) => {
                ctx.close(id, CloseCode::UNSUPPORTED_DATA, "binary messages are not part of /ws")
            }
            (_, _) if !may_publish => {
                // These dialects have no error envelope: a read-only member that publishes is closed.
                self.counters.not_authorized.inc();
                ctx.close(id, CloseCode::POLICY, "not authorized to publish to this room")
            }
            (_, MessageKind::Text) => {
                let Some(room) = home else { return };
                if data.len() > self.config.max_content_size {
                    return;
                }
                // Valid UTF-8: the protocol core checked it.
                let text = std::str::from_utf8(data).unwrap_or_default();
                let mut content = Value::String(text.to_owned());
                match self.hooks.as_ref().map(|h| h.on_publish(&user, &room, &content)) {
                    None | Some(Publish::Keep) => {}
                    Some(Publish::Replace(v)) => content = v,
                    Some(Publish::Reject(_)) => {
                        self.counters.rejected.inc();
                        return;
                    }
                }
                self.publish(id, room, user, content);
            }
            (_, MessageKind::Binary) => {
                let Some(room) = home else { return };
                self.request(Request::Relay {
                    room,
                    data: data.to_vec(),
                });
            }
        }
        // Room events wait for the end of the turn, so that the turn's
        // messages to one room reach each member as one batch; anything
        // that sends (a reply, an ack asked for) goes now, in order with them.
        let waits = |d: &Delivery| matches!(d, Delivery::Room(_)) || self.is_silent(ctx, d);
        if !self.work.iter().all(waits) {
            self.pump(ctx);
        }
    }

    fn on_turn_end(&mut self, ctx: &mut Ctx<'_, Session>) {
        self.pump(ctx);
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
        if let Some(hooks) = &self.hooks {
            hooks.on_disconnect(&session.user, id.token().0 as u64);
        }
        let member = Self::member(id, &session);
        for room in &session.rooms {
            self.forget_local(id, room);
            self.request(Request::Leave {
                room: room.clone(),
                member: member.clone(),
                ticket: None,
            });
        }
        if session.dialect == Dialect::Json
            && let Some(conns) = self.users.get_mut(&session.user)
        {
            conns.retain(|c| *c != id);
            if conns.is_empty() {
                self.users.remove(&session.user);
                self.request(Request::UserOffline { user: session.user });
            }
        }
        self.pump(ctx);
    }

    fn next_deadline(&self) -> Option<Instant> {
        let expiry = self.expiries.peek().map(|Reverse((at, _))| *at);
        Some(expiry.map_or(self.next_tick, |at| at.min(self.next_tick)))
    }

    /// Closes connections whose token expired without a `refresh`, and
    /// runs the engine's housekeeping.
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
                self.counters.token_expired_closes.inc();
                ctx.close(id, CloseCode::POLICY, "token expired");
            }
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.engine.tick(now_ms());
            let top = self.engine.top_rooms(TOP_ROOMS);
            *self.registry.top_rooms[self.worker]
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = top;
            // Give back what a burst or a crowd left behind.
            if self.work.is_empty() && self.work.capacity() > 64 {
                self.work = Vec::new();
            }
            if self.local.capacity() > 1024 && self.local.len() < self.local.capacity() / 4 {
                self.local.shrink_to_fit();
            }
            if self.users.capacity() > 1024 && self.users.len() < self.users.capacity() / 4 {
                self.users.shrink_to_fit();
            }
        }
        self.pump(ctx);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Session>, id: ConnId, dropped: u64) {
        if ctx.state(id).is_some_and(|s| s.dialect == Dialect::Json) {
            Self::reply(ctx, id, Event::Dropped { count: dropped });
        }
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_, Session>) {
        self.engine.poll(&mut self.work);
        self.pump(ctx);
    }

    fn before_poll(&mut self) -> bool {
        self.publish_gauges();
        self.engine.flush()
    }

    fn can_exit(&mut self, ctx: &mut Ctx<'_, Session>) -> bool {
        let done = self.engine.finish();
        // What the final round produced for this worker has no one to go to.
        self.work.clear();
        let _ = ctx;
        done
    }
}
