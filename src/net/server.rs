//! The event loop: one `mio::Poll`, one listener, connections in a slab.
//!
//! Edge-triggered: every readiness event is followed by reading until
//! `WouldBlock`, bounded by a per-wakeup budget so one flooding client
//! cannot starve the rest (connections over budget go on the `ready` list
//! and are resumed on the next turn). Output is written at the end of each
//! turn with vectored writes (or, for an application that says its replies
//! may go early, right after the connection's read: `App::replies_early`);
//! WRITABLE interest is held only while a queue is backed up. A connection
//! whose output is backed up is not read (TCP backpressure). All deadlines
//! sit in one heap whose earliest entry is the poll timeout.
//!
//! Plain HTTP requests are served with keep-alive: one at a time per
//! connection, in order (pipelined ones wait, unread, while an answer is
//! owed), each within `handshake_timeout` of its first byte, an idle
//! connection closed after `keepalive_timeout`.

use super::app::{App, CloseReason, Ctx, Route};
use super::config::Config;
use super::conn::{Conn, Phase, Wait, lookup};
use super::heartbeat::{Action, Heartbeat, Policy};
use super::id::{ConnId, Generations, LISTENER};
use super::mailbox::Mailbox;
use super::metrics::Disconnect;
use super::per_ip;
use super::rate::{TokenBucket, Verdict};
use super::send_queue::{BufPool, Chunk};
use super::shared::{Refusal, Shared};
use super::stats::Stats;
use super::timers::{Surfaced, Timers};
use super::transport::{Transport, tls_failure};
use crate::protocol::deflate::{self, Compression};
use crate::protocol::handshake::head::{HeadError, Request};
use crate::protocol::handshake::server::{self as handshake, Rejection};
use crate::protocol::http1::{self, Item};
use crate::protocol::{CloseCode, Connection, Event, InPlace, MessageKind, Role, State};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The waker's token; connection tokens have a non-zero generation in
/// their upper bits and never collide with it.
const WAKE: Token = Token(2);
/// Size of the one read buffer shared by all connections.
const READ_BUF: usize = 64 * 1024;
/// How long to stop accepting after running out of file descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The deadline of a connection that has no timer of its own.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Asks a running server to shut down gracefully, from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    flag: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.flag.store(true, Ordering::SeqCst);
        // A failed wake only delays shutdown to the next timer.
        let _ = self.waker.wake();
    }
}

/// A `Poll` and the `Waker` other threads use to interrupt it: made before
/// the application, so the application can hand the waker to whoever
/// sends it work.
pub struct Reactor {
    poll: Poll,
    waker: Arc<Waker>,
}

impl Reactor {
    pub fn new() -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(Reactor { poll, waker })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }
}

/// A connection accepted by another loop and handed to this one.
pub type Adopted = (TcpStream, SocketAddr);

/// One loop accepts for all (`--accept-mode handoff`): each admitted
/// connection goes to the next loop in turn, through its inbox.
pub struct Handoff {
    /// Where other loops hand this one its connections.
    pub inbox: Arc<Mailbox<Adopted>>,
    /// Every loop's inbox, by worker index (used by the accepting loop).
    pub peers: Arc<[Arc<Mailbox<Adopted>>]>,
}

pub struct Server<A: App> {
    poll: Poll,
    /// `None` for a loop that only adopts connections (handoff mode).
    listener: Option<TcpListener>,
    handoff: Option<Handoff>,
    /// The next loop an accepted connection goes to (handoff mode).
    next_loop: usize,
    worker: usize,
    adopted: Vec<Adopted>,
    local_addr: SocketAddr,
    conns: Slab<Conn<A::State>>,
    timers: Timers,
    generations: Generations,
    app: A,
    config: Config,
    stats: Arc<Stats>,
    shared: Arc<Shared>,
    read_buf: Box<[u8]>,
    /// The bytes being handled end a read that drained a plain socket, and
    /// the application's replies may go early (`App::replies_early`).
    drained: bool,
    /// Handed to the next `Ctx` (see `Ctx::write_through`).
    write_through: Option<ConnId>,
    /// Output buffers lent to connections while they have bytes queued.
    pool: BufPool,
    dirty: Vec<ConnId>,
    ready: Vec<ConnId>,
    closing: Vec<(ConnId, CloseCode, &'static str)>,
    answered: Vec<(ConnId, bool)>,
    /// The plain-HTTP connection whose buffered requests are being served.
    serving: Option<ConnId>,
    accept_paused_until: Option<Instant>,
    shutdown: ShutdownHandle,
    drain_deadline: Option<Instant>,
    next_housekeeping: Instant,
}

impl<A: App> Server<A> {
    /// One event loop on its own listener: the whole server in one thread.
    pub fn bind(config: Config, app: A) -> io::Result<Self> {
        let listener = listen(config.listen, config.backlog, false, config.defer_accept)?;
        let local_addr = listener.local_addr()?;
        let shared = Shared::new(1, Instant::now());
        Self::new(
            Reactor::new()?,
            Some(listener),
            local_addr,
            None,
            config,
            app,
            shared,
            0,
        )
    }

    /// Worker `worker` of the process whose shared state is `shared`
    /// (see `crate::runtime`), accepting from `listener`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        reactor: Reactor,
        mut listener: Option<TcpListener>,
        local_addr: SocketAddr,
        handoff: Option<Handoff>,
        config: Config,
        app: A,
        shared: Arc<Shared>,
        worker: usize,
    ) -> io::Result<Self> {
        let Reactor { poll, waker } = reactor;
        if let Some(listener) = &mut listener {
            poll.registry().register(listener, LISTENER, Interest::READABLE)?;
        }
        let now = Instant::now();
        Ok(Server {
            local_addr,
            poll,
            listener,
            handoff,
            next_loop: worker,
            worker,
            adopted: Vec::new(),
            conns: Slab::new(),
            timers: Timers::new(Instant::now()),
            generations: Generations::for_worker(worker, shared.worker_count()),
            app,
            config,
            stats: shared.stats(worker).clone(),
            shared,
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            drained: false,
            write_through: None,
            pool: BufPool::default(),
            dirty: Vec::new(),
            ready: Vec::new(),
            closing: Vec::new(),
            answered: Vec::new(),
            serving: None,
            accept_paused_until: None,
            shutdown: ShutdownHandle {
                flag: Arc::new(AtomicBool::new(false)),
                waker,
            },
            drain_deadline: None,
            next_housekeeping: now,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    pub fn app(&self) -> &A {
        &self.app
    }

    /// This loop's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Runs until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if self.shutdown.flag.load(Ordering::SeqCst) && self.drain_deadline.is_none() {
                self.begin_drain(now);
            }
            if let Some(deadline) = self.drain_deadline
                && ((self.conns.is_empty() && self.with_ctx(now, |app, ctx| app.can_exit(ctx))) || now >= deadline)
            {
                info!(
                    "shutdown complete; {} connections dropped at the deadline",
                    self.conns.len()
                );
                return Ok(());
            }
            self.with_ctx(now, |app, ctx| app.on_turn_end(ctx));
            self.finish_closing(now);
            // Work for other threads leaves before our replies reach any client.
            let may_block = self.app.before_poll() & self.handoff.as_ref().is_none_or(|h| h.inbox.park());
            // Everything queued since the last poll goes out before we block.
            self.flush_dirty(now);
            let timeout = if may_block {
                self.poll_timeout(now)
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            self.adopt(now);
            self.with_ctx(now, |app, ctx| app.on_wake(ctx));
            self.finish_closing(now);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(now),
                    WAKE => {}
                    token => {
                        let id = ConnId::from_token(token);
                        if event.is_writable() {
                            self.flush(id, now);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let ended = event.is_read_closed() || event.is_error();
                            self.read(id, now, ended);
                        }
                    }
                }
            }
            if self.accept_paused_until.is_some_and(|t| now >= t) {
                self.accept_paused_until = None;
                self.accept(now);
            }
            for id in std::mem::take(&mut self.ready) {
                self.read(id, now, false);
            }
            self.fire_timers(now);
            if self.app.next_deadline().is_some_and(|at| now >= at) {
                self.with_ctx(now, |app, ctx| app.on_timer(ctx));
                self.finish_closing(now);
            }
            self.housekeeping(now);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        // Housekeeping wakes the loop only while there is memory to give back.
        let housekeeping = (!self.pool.is_empty()
            || (self.conns.capacity() > 1024 && self.conns.len() < self.conns.capacity() / 4))
            .then_some(self.next_housekeeping);
        [
            self.timers.next_deadline(),
            self.app.next_deadline(),
            self.accept_paused_until,
            self.drain_deadline,
            housekeeping,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn per_ip_limits(&self) -> per_ip::Limits {
        per_ip::Limits {
            max_connections: self.config.max_connections_per_ip,
            rate: self.config.handshake_rate_per_ip,
        }
    }

    fn heartbeat_policy(&self) -> Policy {
        Policy {
            ping_interval: self.config.ping_interval,
            pong_timeout: self.config.pong_timeout,
            idle_timeout: self.config.idle_timeout,
        }
        .capped()
    }

    /// The connection `id` refers to, if it is still the slot's occupant.
    fn conn(&mut self, id: ConnId) -> Option<&mut Conn<A::State>> {
        lookup(&mut self.conns, id)
    }

    fn set_deadline(&mut self, id: ConnId, at: Instant) {
        if let Some(conn) = lookup(&mut self.conns, id) {
            self.timers.set(&mut conn.timer, at, id);
        }
    }

    fn mark_dirty(&mut self, id: ConnId) {
        if let Some(conn) = self.conn(id)
            && !conn.dirty
        {
            conn.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Queues bytes that bypass the overflow policy: handshake responses,
    /// pongs and close frames are never dropped.
    fn push_control(&mut self, id: ConnId, bytes: Vec<u8>) {
        if let Some(conn) = lookup(&mut self.conns, id) {
            let len = bytes.len();
            conn.out.push(Chunk::Owned(bytes), &mut self.pool);
            self.stats.queued(len);
            self.mark_dirty(id);
        }
    }

    fn accept(&mut self, now: Instant) {
        while self.accept_paused_until.is_none() {
            let Some(listener) = &self.listener else { return };
            match listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_resource_exhaustion(&e) => {
                    // Pending connections stay in the backlog; retry later
                    // instead of spinning on an error that will repeat.
                    error!("accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                }
                Err(e) => debug!("accept failed: {e}"),
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        let limits = self.per_ip_limits();
        if let Err(refusal) = self.shared.admit(peer.ip(), self.config.max_connections, &limits, now) {
            let (status, reason) = match refusal {
                Refusal::Full => {
                    self.stats.rejected_full.inc();
                    (503, "server full")
                }
                Refusal::PerIp => {
                    self.stats.rejected_per_ip.inc();
                    (429, "too many connections from this address")
                }
                Refusal::Rate => {
                    self.stats.rejected_handshake_rate.inc();
                    (429, "too many new connections from this address")
                }
            };
            debug!("refused {peer}: {reason}");
            return self.refuse(&mut socket, Rejection::new(status, reason));
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("set_nodelay for {peer}: {e}");
        }
        if let Some(handoff) = &self.handoff {
            let target = self.next_loop % handoff.peers.len();
            self.next_loop = self.next_loop.wrapping_add(1);
            if target != self.worker {
                return handoff.peers[target].send((socket, peer));
            }
        }
        self.register(socket, peer, now);
    }

    /// Takes the connections another loop accepted for this one.
    fn adopt(&mut self, now: Instant) {
        let Some(handoff) = &self.handoff else { return };
        handoff.inbox.unpark();
        handoff.inbox.take(&mut self.adopted);
        let mut adopted = std::mem::take(&mut self.adopted);
        for (socket, peer) in adopted.drain(..) {
            self.register(socket, peer, now);
        }
        self.adopted = adopted;
    }

    /// Starts serving an admitted connection on this loop.
    fn register(&mut self, socket: TcpStream, peer: SocketAddr, now: Instant) {
        let mut socket = match Transport::accept(socket, self.config.tls.as_ref()) {
            Ok(socket) => socket,
            Err(e) => {
                warn!("TLS session for {peer}: {e}");
                return self.shared.release(peer.ip());
            }
        };
        let entry = self.conns.vacant_entry();
        let id = ConnId {
            index: entry.key() as u32,
            generation: self.generations.next_generation(),
        };
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, id.token(), Interest::READABLE)
        {
            warn!("register {peer}: {e}");
            self.shared.release(peer.ip());
            return;
        }
        let conn = entry.insert(Conn::new(id, socket, peer, self.config.max_head_size));
        self.timers
            .set(&mut conn.timer, now + self.config.handshake_timeout, id);
    }

    /// Answers a connection refused at accept, before reading anything. Over
    /// TLS there is no answer but the close: an HTTP status would need the
    /// TLS handshake whose cost the refusal is there to save.
    fn refuse(&self, socket: &mut TcpStream, rejection: Rejection) {
        if self.config.tls.is_none() {
            // Best effort: a fresh socket's send buffer takes this at once.
            let _ = socket.write_all(&rejection.response());
        }
    }

    /// Reads until `WouldBlock`, the budget, or backpressure stops it.
    /// `ended`: the event said the peer's side is closed or failed, so the
    /// socket is read to its end even after a short read.
    fn read(&mut self, id: ConnId, now: Instant, ended: bool) {
        // Plain requests that arrived while an answer was owed go first.
        let buffered = self.conn(id).is_some_and(|c| match &c.phase {
            Phase::Http(http) => !c.read_paused && !http.owes_answer() && http.reader.buffered() > 0,
            _ => false,
        });
        if buffered {
            self.serve_http(id, now);
        }
        // The shared buffer is moved out so handlers can borrow `self`.
        let mut buf = std::mem::take(&mut self.read_buf);
        self.read_into(id, &mut buf, now, ended);
        self.read_buf = buf;
        // A TLS handshake answers before any HTTP bytes arrive.
        if self.conn(id).is_some_and(|c| c.socket.tls_pending()) {
            self.mark_dirty(id);
        }
        if self.app.replies_early()
            && let Some(conn) = self.conn(id)
            && std::mem::take(&mut conn.dirty)
        {
            self.flush(id, now);
        }
    }

    fn read_into(&mut self, id: ConnId, buf: &mut [u8], now: Instant, ended: bool) {
        let mut budget = self.config.read_budget;
        let pause_at = self.config.read_pause_bytes;
        loop {
            let Some(conn) = self.conn(id) else { return };
            if conn.read_paused || conn.app_paused {
                return;
            }
            if let Phase::Http(http) = &conn.phase
                && http.owes_answer()
            {
                // Resumed by the answer (`finish_answered`).
                return;
            }
            if conn.out.len_bytes() >= pause_at && !matches!(conn.phase, Phase::Draining) {
                conn.read_paused = true;
                return;
            }
            if budget == 0 {
                self.ready.push(id);
                return;
            }
            // Edge-triggered: a plain socket that gave less than a full
            // buffer is empty now, and bytes arriving later raise a new
            // event, so the read that would only say `WouldBlock` is
            // skipped. (Unless the peer's FIN is already in: no new event
            // would come for it.)
            let drains = conn.socket.is_plain() && !ended;
            match conn.socket.read(buf) {
                Ok(0) => return self.on_eof(id, now),
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.stats.bytes_in.add(n as u64);
                    self.drained = drains && n < buf.len() && self.app.replies_early();
                    self.on_bytes(id, &mut buf[..n], now);
                    self.drained = false;
                    if drains && n < buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("read from {}: {e}", conn.peer);
                    match tls_failure(&e) {
                        Some(f) if f.handshaking => self.stats.handshake_failed("TLS handshake failed"),
                        Some(_) => self.stats.protocol_errors.inc(),
                        None => {}
                    }
                    return self.remove(id, now);
                }
            }
        }
    }

    fn on_bytes(&mut self, id: ConnId, data: &mut [u8], now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        match &mut conn.phase {
            Phase::Http(http) => {
                http.reader.push(data);
                if std::mem::take(&mut http.idle) {
                    // A new request on a keep-alive connection: it has the
                    // request timeout to arrive, however slowly it trickles.
                    self.set_deadline(id, now + self.config.handshake_timeout);
                }
                self.serve_http(id, now);
            }
            Phase::Open { .. } | Phase::Closing(_) => self.on_frames(id, data, now),
            Phase::Draining => {}
        }
    }

    /// Serves the requests buffered on a plain-HTTP connection, in order,
    /// until one's answer is owed, the connection leaves HTTP, or its output
    /// backs up (reading resumes when it drains).
    fn serve_http(&mut self, id: ConnId, now: Instant) {
        let pause_at = self.config.read_pause_bytes;
        let outer = self.serving.replace(id);
        while let Some(conn) = lookup(&mut self.conns, id) {
            let backed_up = conn.out.len_bytes() >= pause_at;
            let Phase::Http(http) = &mut conn.phase else { break };
            if http.owes_answer() {
                break;
            }
            if backed_up {
                conn.read_paused = true;
                break;
            }
            match http.reader.next_item() {
                Ok(None) => break,
                Ok(Some(Item::Head(request))) => self.on_request(id, request, now),
                Ok(Some(Item::Body(body))) => self.on_body(id, body, now),
                Err(HeadError::TooLarge) => {
                    self.reject(id, Rejection::new(431, "request head too large"), now);
                    break;
                }
                Err(HeadError::Malformed) => {
                    self.reject(id, Rejection::new(400, "malformed HTTP request"), now);
                    break;
                }
            }
        }
        self.serving = outer;
    }

    fn on_request(&mut self, id: ConnId, request: Request, now: Instant) {
        let Some(peer) = self.conn(id).map(|c| c.peer.addr()) else {
            return;
        };
        let draining = self.drain_deadline.is_some();
        let state = match self.app.route(&request, peer, &self.shared, draining) {
            Route::Respond(response) => return self.answer(id, &request, response, now),
            Route::Reject(rejection) => return self.reject(id, rejection, now),
            Route::Defer => return self.read_body(id, request, now),
            Route::Upgrade(_) if draining => {
                return self.reject(id, Rejection::new(503, "server shutting down"), now);
            }
            Route::Upgrade(state) => state,
        };
        let upgrade = match handshake::validate(&request)
            .and_then(|up| handshake::check_origin(&request, &self.config.allowed_origins).map(|_| up))
        {
            Ok(up) => up,
            Err(rejection) => return self.reject(id, rejection, now),
        };
        let protocol = handshake::select_protocol(&upgrade.protocols, &self.config.subprotocols);
        let deflate = &self.config.deflate;
        let negotiated = deflate
            .enabled
            .then(|| deflate::negotiate(&upgrade.extensions, deflate))
            .flatten();
        let response = handshake::accept_response(&upgrade.key, protocol, negotiated.as_ref().map(|(_, h)| h.as_str()));
        let mut ws = Connection::new(Role::Server, self.config.limits);
        if let Some((params, _)) = &negotiated {
            ws = ws.with_compression(Compression::new(params, Role::Server, deflate));
        }
        let heartbeat = Heartbeat::new(now);
        let deadline = heartbeat.next_deadline(&self.heartbeat_policy());
        let Some(conn) = self.conn(id) else { return };
        // Bytes after the head are the client's first frames.
        let rest = match &mut conn.phase {
            Phase::Http(http) => http.reader.take_rest(),
            _ => Vec::new(),
        };
        conn.phase = Phase::Open { ws, state, heartbeat };
        self.push_control(id, response);
        self.stats.connections_total.inc();
        self.stats.connections_active.inc();
        // With heartbeats off, an open connection has no deadline of its own.
        self.set_deadline(id, deadline.unwrap_or(now + NEVER));
        self.with_ctx(now, |app, ctx| app.on_open(ctx, id));
        self.finish_closing(now);
        if !rest.is_empty() {
            let mut rest = rest;
            self.on_frames(id, &mut rest, now);
        }
    }

    /// Queues the response to a plain request. The connection stays for the
    /// next request unless either side closes it, or the request's body is
    /// one the loop would not read (then where the next request starts is
    /// unknown); a body within the limit is skipped.
    fn answer(&mut self, id: ConnId, request: &Request, response: Vec<u8>, now: Instant) {
        let next = match self.drain_deadline {
            Some(_) => http1::Next::Close,
            None => http1::after_response(request, &response, self.config.max_body_size),
        };
        if next == http1::Next::Close {
            return self.respond(id, http1::with_close(response), now);
        }
        self.push_control(id, response);
        if let http1::Next::Skip(len) = next
            && let Some(conn) = self.conn(id)
            && let Phase::Http(http) = &mut conn.phase
        {
            http.reader.expect_body(len);
            http.wait = Wait::Skip;
            return;
        }
        self.await_request(id, now);
    }

    /// A deferred request: its body is read next (or its framing refused).
    fn read_body(&mut self, id: ConnId, request: Request, now: Instant) {
        let len = match http1::body_length(&request, self.config.max_body_size) {
            Ok(len) => len,
            Err(err) => {
                let response = self.app.http_error(&request, err.status(), err.reason());
                return self.respond(id, http1::with_close(response), now);
            }
        };
        if len > 0 && http1::expects_continue(&request) {
            self.push_control(id, http1::CONTINUE.to_vec());
        }
        if let Some(conn) = self.conn(id)
            && let Phase::Http(http) = &mut conn.phase
        {
            http.reader.expect_body(len);
            http.wait = Wait::Body(Box::new(request));
        }
    }

    /// A deferred request's body is in: the application answers it.
    fn on_body(&mut self, id: ConnId, body: Vec<u8>, now: Instant) {
        let draining = self.drain_deadline.is_some();
        let Some(conn) = self.conn(id) else { return };
        let Phase::Http(http) = &mut conn.phase else { return };
        let Wait::Body(request) = std::mem::replace(&mut http.wait, Wait::Head) else {
            // A skipped body: the request was answered already.
            return self.await_request(id, now);
        };
        http.wait = Wait::Answer {
            close: draining || http1::wants_close(&request),
        };
        self.with_ctx(now, |app, ctx| app.on_request(ctx, id, &request, body));
        self.finish_closing(now);
    }

    /// Carries on with connections whose deferred requests were answered:
    /// closes them, or serves their next request.
    fn finish_answered(&mut self, now: Instant) {
        while let Some((id, close)) = self.answered.pop() {
            if close {
                self.drain(id, now);
                continue;
            }
            self.await_request(id, now);
            // The loop serving it now goes on by itself; others are read again.
            if self.serving != Some(id) {
                self.ready.push(id);
            }
        }
    }

    /// After an answer on a keep-alive connection: the next request has the
    /// request timeout if it has begun, the keep-alive timeout if not.
    fn await_request(&mut self, id: ConnId, now: Instant) {
        let (request, keepalive) = (self.config.handshake_timeout, self.config.keepalive_timeout);
        let Some(conn) = self.conn(id) else { return };
        let Phase::Http(http) = &mut conn.phase else { return };
        http.idle = http.reader.buffered() == 0;
        if http.idle {
            http.reader.release();
        }
        let at = now + if http.idle { keepalive } else { request };
        self.set_deadline(id, at);
    }

    /// Answers with an HTTP error and closes.
    fn reject(&mut self, id: ConnId, rejection: Rejection, now: Instant) {
        if let Some(conn) = self.conn(id) {
            debug!(
                "handshake from {} rejected: {} {}",
                conn.peer, rejection.status, rejection.reason
            );
        }
        self.stats.handshake_failed(rejection.reason);
        self.respond(id, rejection.response(), now);
    }

    fn respond(&mut self, id: ConnId, response: Vec<u8>, now: Instant) {
        self.push_control(id, response);
        self.drain(id, now);
    }

    /// Nothing more to say: flush, shut down our side, wait for the FIN.
    fn drain(&mut self, id: ConnId, now: Instant) {
        if let Some(conn) = self.conn(id) {
            conn.phase = Phase::Draining;
            self.set_deadline(id, now + self.config.close_timeout);
            self.mark_dirty(id);
        }
    }

    /// Feeds WebSocket bytes to the connection, one event at a time, so the
    /// application's replies to a message are queued before any close frame
    /// that a later frame in the same read provokes. A message that lies
    /// whole in `data` is unmasked there and lent to the application.
    fn on_frames(&mut self, id: ConnId, mut data: &mut [u8], now: Instant) {
        while !data.is_empty() {
            let Some(conn) = lookup(&mut self.conns, id) else {
                return;
            };
            let (ws, heartbeat) = match &mut conn.phase {
                Phase::Open { ws, heartbeat, .. } => (ws, Some(heartbeat)),
                Phase::Closing(ws) => (ws, None),
                _ => return,
            };
            let result = ws.read_event_in_place(data);
            let ws_state = ws.state();
            let (frame, found) = match result {
                Ok((used, found)) => {
                    let (frame, rest) = std::mem::take(&mut data).split_at_mut(used);
                    data = rest;
                    (frame, found)
                }
                Err(err) => {
                    debug!("protocol error from {}: {err}", conn.peer);
                    self.stats.protocol_error(err.close_code().0);
                    self.flush_protocol_output(id);
                    self.leave_open(id, CloseReason::ProtocolError(err.close_code()), now);
                    return self.drain(id, now);
                }
            };
            let event = match found {
                Some(InPlace::Event(event)) => Some(event),
                Some(InPlace::Message { kind, payload }) => {
                    if let Some(heartbeat) = heartbeat {
                        heartbeat.heard(now, true);
                    }
                    let open = matches!(conn.phase, Phase::Open { .. }) && !conn.doomed;
                    // The read's last message: its reply may be written at once.
                    if self.drained && data.is_empty() {
                        self.write_through = Some(id);
                    }
                    self.deliver(id, open, kind, &frame[payload], now);
                    self.write_through = None;
                    continue;
                }
                None => None,
            };
            if let (Some(heartbeat), Some(event)) = (heartbeat, &event) {
                if let Event::Pong(pong) = event
                    && let Some(rtt) = heartbeat.round_trip(now, self.timers.epoch(), pong)
                {
                    self.stats.ping_rtt.observe(rtt.as_nanos() as u64);
                }
                heartbeat.heard(now, matches!(event, Event::Text(_) | Event::Binary(_)));
            }
            let open = matches!(conn.phase, Phase::Open { .. }) && !conn.doomed;
            if open
                && matches!(event, Some(Event::Ping(_)))
                && let Some(limit) = self.config.ping_rate
            {
                let bucket = conn
                    .pings
                    .get_or_insert_with(|| Box::new(TokenBucket::new(&limit, now)));
                if bucket.take(&limit, now) != Verdict::Allow {
                    debug!("ping flood from {}", conn.peer);
                    self.stats.ping_flood_closes.inc();
                    conn.doomed = true;
                    self.closing.push((id, CloseCode::POLICY, "ping flood"));
                    self.flush_protocol_output(id);
                    self.finish_closing(now);
                    continue;
                }
            }
            match event {
                Some(Event::Text(data)) => self.deliver(id, open, MessageKind::Text, &data, now),
                Some(Event::Binary(data)) => self.deliver(id, open, MessageKind::Binary, &data, now),
                Some(Event::Close(frame)) => {
                    self.flush_protocol_output(id);
                    self.leave_open(id, CloseReason::Peer(frame.map(|f| f.code)), now);
                    return self.drain(id, now);
                }
                Some(Event::Ping(_) | Event::Pong(_)) | None => {}
            }
            self.flush_protocol_output(id);
            if ws_state == State::Closed {
                return self.drain(id, now);
            }
        }
    }

    fn deliver(&mut self, id: ConnId, open: bool, kind: MessageKind, data: &[u8], now: Instant) {
        self.stats.messages_in.inc();
        // Messages after the app closed this connection are not delivered.
        if open {
            self.with_ctx(now, |app, ctx| app.on_message(ctx, id, kind, data));
            self.finish_closing(now);
        }
    }

    /// Queues what the protocol core wrote by itself (pongs, close frames).
    fn flush_protocol_output(&mut self, id: ConnId) {
        let output = match self.conn(id).map(|c| &mut c.phase) {
            Some(Phase::Open { ws, .. } | Phase::Closing(ws)) if ws.has_output() => ws.take_output(),
            _ => return,
        };
        self.push_control(id, output);
    }

    /// Runs `f` with the application and a context over the connections.
    fn with_ctx<R>(&mut self, now: Instant, f: impl FnOnce(&mut A, &mut Ctx<'_, A::State>) -> R) -> R {
        let mut ctx = Ctx {
            conns: &mut self.conns,
            config: &self.config,
            stats: &self.stats,
            dirty: &mut self.dirty,
            ready: &mut self.ready,
            closing: &mut self.closing,
            answered: &mut self.answered,
            pool: &mut self.pool,
            now,
            write_through: self.write_through.take(),
        };
        f(&mut self.app, &mut ctx)
    }

    /// Closes what the application (or an overflow) asked to close, and
    /// carries on with the HTTP requests it answered.
    #[inline]
    fn finish_closing(&mut self, now: Instant) {
        // Runs after every message, and almost always finds nothing to do:
        // the check is inlined, the work is not.
        if !self.closing.is_empty() || !self.answered.is_empty() {
            self.close_requested(now);
        }
    }

    fn close_requested(&mut self, now: Instant) {
        let draining = self.drain_deadline.is_some();
        while let Some((id, code, reason)) = self.closing.pop() {
            if let Some(conn) = lookup(&mut self.conns, id)
                && matches!(conn.phase, Phase::Open { .. })
            {
                conn.cause
                    .get_or_insert(Disconnect::from_local(code.0, reason, draining));
                if conn.shed {
                    // Nothing queued will be read in time: the close goes next.
                    let dropped = conn.out.drop_unsent();
                    self.stats.queued_bytes.sub(dropped as u64);
                }
                let Phase::Open { ws, .. } = &mut conn.phase else {
                    continue;
                };
                ws.close(code, reason);
                let output = ws.take_output();
                self.push_control(id, output);
                self.leave_open(id, CloseReason::Local(code), now);
            }
        }
        if !self.answered.is_empty() {
            self.finish_answered(now);
        }
    }

    /// Detaches the application from a connection leaving the open state:
    /// `Closing` if our close frame awaits an answer, else `Draining`.
    fn leave_open(&mut self, id: ConnId, reason: CloseReason, now: Instant) {
        let Some(conn) = self.conn(id) else { return };
        let Phase::Open { ws, state, .. } = std::mem::replace(&mut conn.phase, Phase::Draining) else {
            return;
        };
        if ws.state() == State::CloseSent {
            conn.phase = Phase::Closing(ws);
        }
        conn.doomed = true;
        // Whatever the application held back goes out with the close.
        conn.held = false;
        let why = match reason {
            CloseReason::Peer(code) => Disconnect::from_peer(code.map(|c| c.0)),
            CloseReason::ProtocolError(_) => Disconnect::ProtocolError,
            CloseReason::Abnormal => conn.cause.unwrap_or(Disconnect::ConnectionLost),
            CloseReason::Local(code) => conn.cause.unwrap_or(Disconnect::from_local(code.0, "", false)),
        };
        self.stats.disconnects.inc(why);
        self.stats.connections_active.sub(1);
        self.set_deadline(id, now + self.config.close_timeout);
        self.mark_dirty(id);
        self.with_ctx(now, |app, ctx| app.on_close(ctx, id, state, reason));
        self.finish_closing(now);
    }

    fn on_eof(&mut self, id: ConnId, now: Instant) {
        // A peer that half-closed after its last request still gets what is
        // queued for it, as far as the socket takes it now.
        if self.conn(id).is_some_and(|c| !c.out.is_empty() && !c.held) {
            self.flush(id, now);
        }
        self.remove(id, now);
    }

    /// Releases a connection at once, telling the app if it was open.
    fn remove(&mut self, id: ConnId, now: Instant) {
        self.leave_open(id, CloseReason::Abnormal, now);
        if self.conn(id).is_none() {
            return;
        }
        let mut conn = self.conns.remove(id.index as usize);
        self.stats.queued_bytes.sub(conn.out.len_bytes() as u64);
        self.shared.release(conn.peer.ip());
        if let Err(e) = self.poll.registry().deregister(&mut conn.socket) {
            debug!("deregister {}: {e}", conn.peer);
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        while !self.dirty.is_empty() {
            for id in std::mem::take(&mut self.dirty) {
                // Not dirty any more: written early, right after its read.
                if let Some(conn) = self.conn(id)
                    && std::mem::take(&mut conn.dirty)
                {
                    self.flush(id, now);
                }
            }
        }
    }

    /// Writes queued output; adjusts WRITABLE interest; resumes reading
    /// when a backed-up queue drains; shuts down a draining connection.
    fn flush(&mut self, id: ConnId, now: Instant) {
        let pause_at = self.config.read_pause_bytes;
        let (conns, stats, pool) = (&mut self.conns, &self.stats, &mut self.pool);
        let Some(conn) = lookup(conns, id) else { return };
        if conn.held {
            return;
        }
        // A draining TLS connection sends close_notify after its last bytes.
        let close = matches!(conn.phase, Phase::Draining) && !conn.shut;
        let queued = conn.out.len_bytes();
        let result = conn.socket.write_queue(&mut conn.out, close, pool);
        stats.queued_bytes.sub((queued - conn.out.len_bytes()) as u64);
        let written = match result {
            Ok(n) => n,
            Err(e) => {
                debug!("write to {}: {e}", conn.peer);
                return self.remove(id, now);
            }
        };
        self.stats.bytes_out.add(written as u64);
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        let pending = !conn.out.is_empty() || conn.socket.tls_pending();
        if pending != conn.want_write {
            let interest = if pending {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            conn.want_write = pending;
            if let Err(e) = self.poll.registry().reregister(&mut conn.socket, id.token(), interest) {
                debug!("reregister {}: {e}", conn.peer);
                return self.remove(id, now);
            }
        }
        if conn.read_paused && conn.out.len_bytes() < pause_at / 2 {
            conn.read_paused = false;
            self.ready.push(id);
        }
        if pending {
            return;
        }
        if matches!(conn.phase, Phase::Draining) && !conn.shut {
            conn.shut = true;
            // Our FIN: the server closes TCP first (RFC 6455 section 7.1.1).
            if conn.socket.shutdown(Shutdown::Write).is_err() {
                return self.remove(id, now);
            }
        }
        let dropped = std::mem::take(&mut conn.dropped);
        if dropped > 0 && matches!(conn.phase, Phase::Open { .. }) {
            self.with_ctx(now, |app, ctx| app.on_drained(ctx, id, dropped.into()));
            self.finish_closing(now);
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(entry) = self.timers.pop_due(now) {
            let id = entry.1;
            if let Some(conn) = lookup(&mut self.conns, id)
                && self.timers.surfaced(&mut conn.timer, entry, now) == Surfaced::Due
            {
                self.on_deadline(id, now);
            }
        }
    }

    /// Once a second: give memory back after a crowd has left. The slab and
    /// the heaps keep their peak capacity otherwise.
    fn housekeeping(&mut self, now: Instant) {
        if now < self.next_housekeeping {
            return;
        }
        self.next_housekeeping = now + Duration::from_secs(1);
        self.pool.trim();
        let limits = self.per_ip_limits();
        self.shared.prune(&limits, now);
        let conns = &self.conns;
        self.timers.compact(conns.len(), |id| {
            conns.get(id.index as usize).filter(|c| c.id == id).map(|c| &c.timer)
        });
        if self.conns.capacity() > 1024 && self.conns.len() < self.conns.capacity() / 4 {
            self.conns.shrink_to_fit();
            self.dirty.shrink_to_fit();
            self.ready.shrink_to_fit();
            self.closing.shrink_to_fit();
        }
    }

    fn on_deadline(&mut self, id: ConnId, now: Instant) {
        let policy = self.heartbeat_policy();
        let epoch = self.timers.epoch();
        let Some(conn) = self.conn(id) else { return };
        match &mut conn.phase {
            Phase::Http(http) if http.owes_answer() => {
                // The application is at work on it (the engine answers every
                // request): the deadline waits too.
                self.set_deadline(id, now + self.config.handshake_timeout);
            }
            Phase::Http(http) if http.idle => {
                debug!("keep-alive timeout for {}", conn.peer);
                self.remove(id, now);
            }
            Phase::Http(_) => {
                debug!("request timeout for {}", conn.peer);
                self.stats.handshake_timeouts.inc();
                self.remove(id, now);
            }
            Phase::Open { ws, heartbeat, .. } => match heartbeat.check(now, &policy) {
                action @ (Action::Nothing | Action::SendPing) => {
                    if action == Action::SendPing {
                        ws.send_ping(&Heartbeat::ping_payload(now, epoch));
                    }
                    let output = ws.take_output();
                    let next = heartbeat.next_deadline(&policy);
                    if !output.is_empty() {
                        self.push_control(id, output);
                    }
                    if let Some(next) = next {
                        self.set_deadline(id, next);
                    }
                }
                Action::Dead => {
                    debug!("no pong from {}; dropping", conn.peer);
                    conn.cause = Some(Disconnect::DeadPeer);
                    self.stats.dead_peers.inc();
                    self.remove(id, now);
                }
                Action::Idle => {
                    self.stats.idle_closes.inc();
                    self.closing.push((id, CloseCode::NORMAL, "idle timeout"));
                    self.finish_closing(now);
                }
            },
            Phase::Closing(_) | Phase::Draining => self.remove(id, now),
        }
    }

    /// Graceful shutdown: every open connection gets close 1001; new
    /// upgrades get 503; the loop ends when all are gone or at the deadline.
    fn begin_drain(&mut self, now: Instant) {
        info!(
            "shutting down: closing {} connections",
            self.stats.connections_active.get()
        );
        self.drain_deadline = Some(now + self.config.shutdown_timeout);
        let open: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase, Phase::Open { .. }))
            .map(|(_, c)| c.id)
            .collect();
        for id in open {
            self.closing.push((id, CloseCode::GOING_AWAY, "server shutting down"));
        }
        self.finish_closing(now);
        // Keep-alive connections between requests end now; those with a
        // request under way end after its answer.
        let mut idle = Vec::new();
        for (_, conn) in self.conns.iter_mut() {
            if let Phase::Http(http) = &mut conn.phase {
                match &mut http.wait {
                    Wait::Head if http.idle => idle.push(conn.id),
                    Wait::Answer { close } => *close = true,
                    _ => {}
                }
            }
        }
        for id in idle {
            self.drain(id, now);
        }
        // Connections still waiting for a close answer must not outlive the deadline.
        let deadline = now + self.config.shutdown_timeout;
        let timers = &self.timers;
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| timers.deadline(&c.timer) > deadline)
            .map(|(_, c)| c.id)
            .collect();
        for id in late {
            self.set_deadline(id, deadline);
        }
    }
}

/// Binds the listening socket. The backlog is set explicitly: crowds of
/// clients connecting at once overflow a small one, and each overflowed SYN
/// costs its client a retransmission timeout (1 s, then 3 s...).
/// With `reuse_port`, several loops may listen on the same address
/// (`SO_REUSEPORT`): the kernel spreads new connections over them.
/// `defer_accept`: seconds for `TCP_DEFER_ACCEPT` (0: off; see
/// `Config::defer_accept`).
pub fn listen(addr: SocketAddr, backlog: i32, reuse_port: bool, defer_accept: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    if defer_accept > 0 {
        super::defer_accept::set(&socket, defer_accept)?;
    }
    Ok(TcpListener::from_std(socket.into()))
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_codes::EMFILE | libc_codes::ENFILE | libc_codes::ENOBUFS | libc_codes::ENOMEM)
    )
}

/// The errno values that mean "out of descriptors or memory" on Linux.
mod libc_codes {
    pub const EMFILE: i32 = 24;
    pub const ENFILE: i32 = 23;
    pub const ENOBUFS: i32 = 105;
    pub const ENOMEM: i32 = 12;
}
