//! The Redis thread of a node: one `mio::Poll` driving one connection per
//! Redis server (shard), shared by every worker of the process.
//!
//! Why one connection per shard, in RESP3: commands and pub/sub messages
//! then travel on one ordered stream. A subscription made by `SUBSCRIBE`
//! is in effect for every command written after it (Redis runs a
//! connection's commands in order), and a script's reply reaches us after
//! every event published before the script ran. So a worker's join is
//! written right behind its `SUBSCRIBE`, and the join's position can be
//! matched against the live stream exactly (see `engine.rs`). Pipelining:
//! every worker's commands are appended to the connection's write buffer
//! as they come, with no round trip between them; replies are matched to
//! their senders by arrival order (`pending`).
//!
//! Why a thread rather than RESP in the workers' loops: the workers' loops
//! (`crate::net`) own their `Poll` and know nothing of engines; one thread
//! per node keeps one connection per shard whatever the worker count, and
//! parses each event once for all workers (the same `Arc` goes to each
//! worker with members, one hand-off per worker per event).

use super::events::{self, NodeMessage, Placed};
use super::link::Link;
use super::resp::{self, Value};
use super::script::{self, Caller, Epochs, Target};
use super::url::RedisUrl;
use crate::engine::memory::{Envelope, Hub};
use crate::engine::{Delivery, Name};
use crate::net::{Mailbox, Outgoing};
use log::{debug, error, info, warn};
use mio::{Events, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// What a worker hands the Redis thread.
#[derive(Debug)]
pub enum ToIo {
    /// A command for `shard`, valid only on connection `link_no` (a worker that
    /// has not seen the current connection come up gets `unavailable`).
    Cmd {
        shard: usize,
        link_no: u64,
        worker: usize,
        bytes: Vec<u8>,
        /// The worker wants the reply (otherwise it is dropped here).
        reply: bool,
    },
    /// `worker` has members in `room` now / no longer.
    Sub {
        shard: usize,
        worker: usize,
        room: Name,
    },
    Unsub {
        shard: usize,
        worker: usize,
        room: Name,
    },
}

/// What the Redis thread hands a worker, in the order it happened on the
/// shard's connection.
#[derive(Debug)]
pub enum RedisEvent {
    Reply {
        shard: usize,
        result: Result<Value, String>,
    },
    Room {
        room: Name,
        placed: Placed,
    },
    Direct {
        to: Name,
        event: Arc<Outgoing>,
    },
    /// The shard's connection is gone; every reply owed was answered before this.
    Down {
        shard: usize,
    },
    /// Connection `link_no` of the shard is ready; `run` is its server's run id.
    Up {
        shard: usize,
        link_no: u64,
        run: Name,
    },
}

impl Clone for Placed {
    fn clone(&self) -> Self {
        Placed {
            ev: self.ev,
            epoch: self.epoch.clone(),
            event: self.event.clone(),
        }
    }
}

/// What the Redis thread shares with the workers and `/health`.
pub struct Shared {
    pub inbox: Mailbox<ToIo>,
    pub stop: AtomicBool,
    /// Per shard: why it is unavailable, while it is.
    pub down: Mutex<Vec<Option<String>>>,
    /// Per shard: the connection that is up (0 for none yet) and its
    /// server's run id.
    pub state: Mutex<Vec<(u64, Name)>>,
    /// Connection failures since start.
    pub errors: AtomicU64,
    /// Distinct rooms this node has members in.
    pub rooms: AtomicUsize,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Settings of the Redis thread.
pub struct IoConfig {
    pub urls: Vec<RedisUrl>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub caller: Caller,
    pub workers: usize,
    /// Between two heartbeats.
    pub beat: Duration,
    /// A connection that is not ready, or a heartbeat not answered, within
    /// this is given up and made again.
    pub patience: Duration,
}

/// A reply owed, in the order the commands were written.
#[derive(Debug)]
enum Slot {
    Worker { worker: usize, reply: bool },
    Hello,
    Select,
    Script,
    Info,
    Register,
    Beat,
    Deregister,
}

struct Conn {
    link: Link,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

struct Shard {
    url: RedisUrl,
    /// Channel names start with this: `rc:DB:`.
    prefix: String,
    /// This node's direct-message channel on this shard.
    inbox: Vec<u8>,
    conn: Option<Conn>,
    /// Set up and serving (`link_no` is the current connection).
    up: bool,
    link_no: u64,
    run: String,
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    failures: u32,
    pending: VecDeque<Slot>,
    /// Rooms with members on this node, and which workers have them.
    channels: HashMap<Name, Vec<bool>>,
    next_beat: Instant,
    beat_sent: Option<Instant>,
}

pub struct Io {
    poll: Poll,
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    config: IoConfig,
    shards: Vec<Shard>,
    outbox: Vec<Vec<Envelope>>,
    incoming: Vec<ToIo>,
    epochs: HashMap<Name, Name>,
    cands: Epochs,
    /// Until every shard was up once: whom to tell (startup waits for it).
    ready: Option<mpsc::Sender<Result<(), String>>>,
}

/// The waker's token; shards use their index.
pub const WAKE: Token = Token(1 << 30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

fn token(shard: usize) -> Token {
    Token(shard)
}

impl Io {
    pub fn new(
        poll: Poll,
        shared: Arc<Shared>,
        hub: Arc<Hub>,
        config: IoConfig,
        ready: mpsc::Sender<Result<(), String>>,
    ) -> Io {
        let now = Instant::now();
        let shards = config
            .urls
            .iter()
            .map(|url| {
                let prefix = format!("rc:{}:", url.db);
                let inbox = format!("{prefix}n:{}", config.caller.node).into_bytes();
                Shard {
                    url: url.clone(),
                    prefix,
                    inbox,
                    conn: None,
                    up: false,
                    link_no: 0,
                    run: String::new(),
                    since: now,
                    retry_at: now,
                    backoff: BACKOFF_MIN,
                    failures: 0,
                    pending: VecDeque::new(),
                    channels: HashMap::new(),
                    next_beat: now,
                    beat_sent: None,
                }
            })
            .collect();
        Io {
            poll,
            outbox: (0..config.workers).map(|_| Vec::new()).collect(),
            shared,
            hub,
            config,
            shards,
            incoming: Vec::new(),
            epochs: HashMap::new(),
            cands: Epochs::new(),
            ready: Some(ready),
        }
    }

    /// Runs until told to stop (then leaves the cluster cleanly), or until
    /// the first connection of some shard fails at startup.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut stopping: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.take_inbox();
            if stopping.is_none() && self.shared.stop.load(Ordering::SeqCst) {
                stopping = Some(now + Duration::from_secs(2));
                self.leave_cluster();
            }
            if let Some(deadline) = stopping {
                let left = self
                    .shards
                    .iter()
                    .any(|s| s.pending.iter().any(|p| matches!(p, Slot::Deregister)));
                if !left || now >= deadline {
                    return;
                }
            } else {
                self.timers(now);
            }
            self.write_all();
            self.send_outboxes();
            let timeout = if self.shared.inbox.park() {
                self.timeout(now, stopping)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                error!("redis: poll failed: {e}");
                return;
            }
            self.shared.inbox.unpark();
            for event in events.iter() {
                if event.token() == WAKE {
                    continue;
                }
                let s = event.token().0;
                if event.is_writable() {
                    self.write(s);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.read(s);
                }
            }
            self.send_outboxes();
            if self.ready.is_none() && self.startup_failed() {
                return;
            }
        }
    }

    /// Set when the first attempt of some shard failed before all were up.
    fn startup_failed(&self) -> bool {
        self.shards.iter().any(|s| s.link_no == 0 && s.failures > 0)
    }

    fn timeout(&self, now: Instant, stopping: Option<Instant>) -> Option<Duration> {
        if let Some(deadline) = stopping {
            return Some(deadline.saturating_duration_since(now).min(Duration::from_millis(50)));
        }
        let mut next: Option<Instant> = None;
        for s in &self.shards {
            let at = if s.up {
                s.beat_sent.map_or(s.next_beat, |t| t + self.config.patience)
            } else if s.conn.is_some() {
                s.since + self.config.patience
            } else {
                s.retry_at
            };
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next.map(|at| at.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn take_inbox(&mut self) {
        self.shared.inbox.take(&mut self.incoming);
        let mut incoming = std::mem::take(&mut self.incoming);
        for item in incoming.drain(..) {
            match item {
                ToIo::Cmd {
                    shard,
                    link_no,
                    worker,
                    bytes,
                    reply,
                } => {
                    let s = &mut self.shards[shard];
                    let live = s.up && s.link_no == link_no;
                    match &mut s.conn {
                        Some(conn) if live => {
                            conn.wbuf.extend_from_slice(&bytes);
                            s.pending.push_back(Slot::Worker { worker, reply });
                        }
                        _ if reply => {
                            let why = format!("{} is unavailable", s.url);
                            self.outbox[worker].push(Envelope::Redis(RedisEvent::Reply {
                                shard,
                                result: Err(why),
                            }));
                        }
                        _ => {}
                    }
                }
                ToIo::Sub { shard, worker, room } => {
                    let workers = self.config.workers;
                    let s = &mut self.shards[shard];
                    let entry = s.channels.entry(room.clone()).or_insert_with(|| vec![false; workers]);
                    let first = !entry.contains(&true);
                    entry[worker] = true;
                    if first {
                        self.shared.rooms.fetch_add(1, Ordering::Relaxed);
                        // Also while connecting: before or after the setup's own
                        // subscriptions, either is in order.
                        if let Some(conn) = &mut s.conn {
                            let channel = [s.prefix.as_bytes(), b"r:", room.as_bytes()].concat();
                            resp::command(&mut conn.wbuf, &[b"SUBSCRIBE".as_slice(), &channel]);
                        }
                    }
                }
                ToIo::Unsub { shard, worker, room } => {
                    let s = &mut self.shards[shard];
                    let Some(entry) = s.channels.get_mut(&room) else {
                        continue;
                    };
                    entry[worker] = false;
                    if !entry.contains(&true) {
                        s.channels.remove(&room);
                        self.epochs.remove(&room);
                        self.shared.rooms.fetch_sub(1, Ordering::Relaxed);
                        // Also while connecting: before or after the setup's own
                        // subscriptions, either is in order.
                        if let Some(conn) = &mut s.conn {
                            let channel = [s.prefix.as_bytes(), b"r:", room.as_bytes()].concat();
                            resp::command(&mut conn.wbuf, &[b"UNSUBSCRIBE".as_slice(), &channel]);
                        }
                    }
                }
            }
        }
        self.incoming = incoming;
    }

    /// Reconnects, heartbeats, and connections that take too long.
    fn timers(&mut self, now: Instant) {
        for i in 0..self.shards.len() {
            let s = &self.shards[i];
            if s.up {
                if let Some(sent) = s.beat_sent {
                    if now >= sent + self.config.patience {
                        let why = format!("no answer for {:?}", self.config.patience);
                        self.fail(i, &why);
                    }
                } else if now >= s.next_beat {
                    self.beat(i, now);
                }
            } else if s.conn.is_some() {
                if now >= s.since + self.config.patience {
                    self.fail(i, "timed out connecting");
                }
            } else if now >= s.retry_at {
                self.connect(i, now);
            }
        }
    }

    fn call(&mut self, s: usize, op: &str, args: &[&[u8]], slot: Slot) {
        let cand = self.cands.fresh();
        let shard = &mut self.shards[s];
        let Some(conn) = &mut shard.conn else { return };
        let target = Target {
            channels: &shard.prefix,
            run: &shard.run,
        };
        self.config.caller.call(&mut conn.wbuf, &target, &cand, op, args);
        shard.pending.push_back(slot);
    }

    fn beat(&mut self, s: usize, now: Instant) {
        self.call(s, "heartbeat", &[], Slot::Beat);
        let shard = &mut self.shards[s];
        shard.beat_sent = Some(now);
        shard.next_beat = now + self.config.beat;
    }

    fn connect(&mut self, s: usize, now: Instant) {
        let url = self.shards[s].url.clone();
        let tls = if url.tls { self.config.tls.clone() } else { None };
        if url.tls && tls.is_none() {
            self.fail(s, "no TLS configuration");
            return;
        }
        let mut link = match Link::connect(&url.host, url.port, tls.as_ref()) {
            Ok(link) => link,
            Err(e) => return self.fail(s, &e.to_string()),
        };
        if let Err(e) = link.register(self.poll.registry(), token(s)) {
            return self.fail(s, &e.to_string());
        }
        let mut wbuf = Vec::new();
        let mut pending = VecDeque::new();
        let name = format!("roomcast-{}", self.config.caller.node);
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        if let Some(password) = &url.password {
            hello.extend_from_slice(&[
                b"AUTH",
                url.user.as_deref().unwrap_or("default").as_bytes(),
                password.as_bytes(),
            ]);
        }
        hello.extend_from_slice(&[b"SETNAME", name.as_bytes()]);
        resp::command(&mut wbuf, &hello);
        pending.push_back(Slot::Hello);
        if url.db != 0 {
            resp::command(&mut wbuf, &[b"SELECT".as_slice(), url.db.to_string().as_bytes()]);
            pending.push_back(Slot::Select);
        }
        resp::command(&mut wbuf, &[b"SCRIPT".as_slice(), b"LOAD", script::SOURCE.as_bytes()]);
        pending.push_back(Slot::Script);
        resp::command(&mut wbuf, &[b"INFO".as_slice(), b"server"]);
        pending.push_back(Slot::Info);
        let shard = &mut self.shards[s];
        shard.conn = Some(Conn {
            link,
            rbuf: Vec::new(),
            wbuf,
        });
        shard.pending = pending;
        shard.since = now;
        debug!("redis {}: connecting", shard.url);
    }

    /// Called with the `INFO` reply: registers the node, subscribes, and
    /// waits for the registration's answer before serving.
    fn setup_rest(&mut self, s: usize) {
        self.call(s, "register", &[], Slot::Register);
        let shard = &mut self.shards[s];
        let Some(conn) = &mut shard.conn else { return };
        let mut channels: Vec<Vec<u8>> = vec![shard.inbox.clone()];
        channels.extend(
            shard
                .channels
                .keys()
                .map(|room| [shard.prefix.as_bytes(), b"r:", room.as_bytes()].concat()),
        );
        for chunk in channels.chunks(1000) {
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(chunk.iter().map(|c| c.as_slice()));
            resp::command(&mut conn.wbuf, &args);
        }
    }

    fn up(&mut self, s: usize, now: Instant) {
        let shard = &mut self.shards[s];
        shard.up = true;
        shard.link_no += 1;
        shard.backoff = BACKOFF_MIN;
        shard.next_beat = now + self.config.beat;
        shard.beat_sent = None;
        if shard.failures > 0 {
            info!(
                "redis {}: connected again after {:.1} s; recovering what the rooms missed",
                shard.url,
                now.duration_since(shard.since).as_secs_f64()
            );
        } else {
            info!("redis {}: connected (server run id {})", shard.url, shard.run);
        }
        shard.failures = 0;
        self.shared.down.lock().unwrap_or_else(PoisonError::into_inner)[s] = None;
        let (link_no, run): (u64, Name) = (shard.link_no, shard.run.as_str().into());
        self.shared.state.lock().unwrap_or_else(PoisonError::into_inner)[s] = (link_no, run.clone());
        for outbox in &mut self.outbox {
            outbox.push(Envelope::Redis(RedisEvent::Up {
                shard: s,
                link_no,
                run: run.clone(),
            }));
        }
        if self.shards.iter().all(|s| s.up)
            && let Some(ready) = self.ready.take()
        {
            let _ = ready.send(Ok(()));
        }
    }

    /// Drops the shard's connection: every reply owed is answered with an
    /// error (in order), the workers are told, and a reconnect is planned.
    fn fail(&mut self, s: usize, why: &str) {
        let now = Instant::now();
        let shard = &mut self.shards[s];
        if let Some(mut conn) = shard.conn.take() {
            conn.link.deregister(self.poll.registry());
        }
        let was_up = std::mem::replace(&mut shard.up, false);
        let text = format!("{} is unavailable: {why}", shard.url);
        for slot in shard.pending.drain(..) {
            if let Slot::Worker { worker, reply: true } = slot {
                self.outbox[worker].push(Envelope::Redis(RedisEvent::Reply {
                    shard: s,
                    result: Err(text.clone()),
                }));
            }
        }
        if was_up {
            for outbox in &mut self.outbox {
                outbox.push(Envelope::Redis(RedisEvent::Down { shard: s }));
            }
            warn!(
                "redis {}: connection lost ({why}); requests for its rooms get `unavailable` until it is back",
                shard.url
            );
            shard.since = now;
        } else if shard.failures == 0 || shard.failures.is_power_of_two() {
            warn!(
                "redis {}: cannot connect ({why}); retrying with backoff up to {:?}",
                shard.url, BACKOFF_MAX
            );
        }
        shard.failures += 1;
        shard.beat_sent = None;
        shard.retry_at = now + shard.backoff;
        shard.backoff = (shard.backoff * 2).min(BACKOFF_MAX);
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
        self.shared.down.lock().unwrap_or_else(PoisonError::into_inner)[s] = Some(text.clone());
        if shard.link_no == 0
            && let Some(ready) = self.ready.take()
        {
            let _ = ready.send(Err(text));
        }
    }

    fn write_all(&mut self) {
        for s in 0..self.shards.len() {
            if self.shards[s]
                .conn
                .as_ref()
                .is_some_and(|c| c.link.wants_write(&c.wbuf))
            {
                self.write(s);
            }
        }
    }

    fn write(&mut self, s: usize) {
        let Some(conn) = &mut self.shards[s].conn else { return };
        if let Err(e) = conn.link.write(&mut conn.wbuf) {
            self.fail(s, &e.to_string());
        }
    }

    fn read(&mut self, s: usize) {
        let Some(conn) = &mut self.shards[s].conn else { return };
        let closed = match conn.link.read(&mut conn.rbuf) {
            Ok(closed) => closed,
            Err(e) => return self.fail(s, &e.to_string()),
        };
        let mut values = Vec::new();
        let mut used = 0;
        let mut bad = None;
        loop {
            match resp::parse(&conn.rbuf[used..]) {
                Ok(Some((v, n))) => {
                    values.push(v);
                    used += n;
                }
                Ok(None) => break,
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        conn.rbuf.drain(..used);
        for v in values {
            self.value(s, v);
            if self.shards[s].conn.is_none() {
                return;
            }
        }
        if let Some(e) = bad {
            self.fail(s, &e.to_string());
        } else if closed {
            self.fail(s, "closed by the server");
        }
    }

    fn value(&mut self, s: usize, v: Value) {
        if let Value::Push(items) = v {
            return self.push(s, items);
        }
        let Some(slot) = self.shards[s].pending.pop_front() else {
            return self.fail(s, "a reply that no command asked for");
        };
        let err = match &v {
            Value::Error(e) => Some(e.clone()),
            _ => None,
        };
        match slot {
            Slot::Worker { worker, reply } => {
                // These mean the connection's state is not what we set up:
                // scripts flushed, this node declared dead, a replica.
                let reset = err.as_deref().filter(|e| {
                    ["NOSCRIPT", "REAPED", "READONLY", "LOADING"]
                        .iter()
                        .any(|p| e.starts_with(p))
                });
                if reply {
                    let result = match &err {
                        Some(e) => Err(format!("{}: {e}", self.shards[s].url)),
                        None => Ok(v),
                    };
                    self.outbox[worker].push(Envelope::Redis(RedisEvent::Reply { shard: s, result }));
                } else if let Some(e) = &err {
                    warn!("redis {}: {e}", self.shards[s].url);
                }
                if let Some(e) = reset {
                    let e = e.to_string();
                    self.fail(s, &e);
                }
            }
            _ if err.is_some() => {
                let what = format!("{slot:?}").to_uppercase();
                let e = err.unwrap_or_default();
                self.fail(s, &format!("{what}: {e}"));
            }
            Slot::Info => {
                let text = v.as_str().unwrap_or_default();
                let run = text
                    .lines()
                    .find_map(|l| l.strip_prefix("run_id:"))
                    .map(str::trim)
                    .unwrap_or_default();
                if run.is_empty() {
                    return self.fail(s, "INFO has no run_id");
                }
                self.shards[s].run = run.to_string();
                self.setup_rest(s);
            }
            Slot::Script => {
                if v.as_str() != Some(script::sha()) {
                    self.fail(s, "SCRIPT LOAD answered another SHA-1");
                }
            }
            Slot::Register => self.up(s, Instant::now()),
            Slot::Beat => {
                self.shards[s].beat_sent = None;
                let items = v.as_array().unwrap_or_default();
                match items.first().and_then(Value::as_int) {
                    Some(1) => {
                        if let Some(n) = items.get(1).and_then(Value::as_int).filter(|n| *n > 0) {
                            info!("redis {}: removed {n} node(s) that stopped beating", self.shards[s].url);
                        }
                    }
                    _ => {
                        warn!(
                            "redis {}: this node was declared dead (no heartbeat in time); joining again",
                            self.shards[s].url
                        );
                        self.fail(s, "this node was declared dead");
                    }
                }
            }
            Slot::Hello | Slot::Select | Slot::Deregister => {}
        }
    }

    fn push(&mut self, s: usize, items: Vec<Value>) {
        let kind = items.first().and_then(Value::as_bytes).unwrap_or_default();
        if kind != b"message" {
            // Subscription confirmations: the subscription is in effect for
            // every command written after it, so nothing waits for them.
            return;
        }
        let (Some(channel), Some(payload)) = (
            items.get(1).and_then(Value::as_bytes),
            items.get(2).and_then(Value::as_bytes),
        ) else {
            return;
        };
        let shard = &self.shards[s];
        if channel == shard.inbox.as_slice() {
            let n = self.outbox.len();
            match events::node_message(payload) {
                Some(NodeMessage::Direct { workers, to, event }) => {
                    for w in workers.into_iter().filter(|w| *w < n) {
                        self.outbox[w].push(Envelope::Redis(RedisEvent::Direct {
                            to: to.clone(),
                            event: event.clone(),
                        }));
                    }
                }
                Some(NodeMessage::Disconnect { user, code }) => {
                    for outbox in &mut self.outbox {
                        let delivery = Delivery::Disconnect {
                            user: user.clone(),
                            code,
                        };
                        outbox.push(Envelope::Delivery(delivery));
                    }
                }
                None => warn!("redis {}: an unreadable message on the node's channel", shard.url),
            }
            return;
        }
        let Some(room) = channel
            .strip_prefix(shard.prefix.as_bytes())
            .and_then(|c| c.strip_prefix(b"r:"))
            .and_then(|c| std::str::from_utf8(c).ok())
        else {
            return;
        };
        let Some((room, workers)) = shard.channels.get_key_value(room) else {
            return;
        };
        let Some(placed) = events::room_event(room, payload, &self.config.caller.node, &mut self.epochs) else {
            // The worker sees the gap in the event numbers and resets.
            warn!("redis {}: an unreadable event in room {room}", shard.url);
            return;
        };
        for (w, _) in workers.iter().enumerate().filter(|(_, on)| **on) {
            self.outbox[w].push(Envelope::Redis(RedisEvent::Room {
                room: room.clone(),
                placed: placed.clone(),
            }));
        }
    }

    fn send_outboxes(&mut self) {
        for (w, outbox) in self.outbox.iter_mut().enumerate() {
            if !outbox.is_empty() {
                self.hub.mailbox(w).send_all(outbox);
            }
        }
    }

    /// At shutdown: remove what is left of this node from every shard (its
    /// members have left by now; this also removes anything a lost reply
    /// left behind).
    fn leave_cluster(&mut self) {
        for s in 0..self.shards.len() {
            if self.shards[s].up {
                self.call(s, "deregister", &[], Slot::Deregister);
            }
        }
    }
}
