//! The load generator's event loop: one `mio::Poll`, one thread, every
//! connection a client of the server under test.
//!
//! Shaped like the server's loop (src/net/server.rs), seen from the other
//! end: edge-triggered reads, output gathered during a turn and written
//! once per connection at its end, WRITABLE interest only while output is
//! backed up. Scenarios plug in through [`Handler`] and own time: they run
//! [`Driver::turn`] until their phase ends.
//!
//! The opening handshake uses the core (`ClientRequest::encode`,
//! `HeadReader::feed_response`, `validate`); frames go out through the
//! core's `write_frame`, masked with a fresh key from the core's generator
//! (section 5.3); frames come in through [`FrameReader`].

use super::frames::{Frame, FrameReader};
use super::histogram::Histogram;
use super::target::{Sources, Target};
use crate::protocol::deflate::{Compression, DeflateConfig, client_accept, client_offer};
use crate::protocol::frame::write_frame;
use crate::protocol::handshake::client::{ClientRequest, validate};
use crate::protocol::handshake::head::HeadReader;
use crate::protocol::mask::random_key;
use crate::protocol::{CloseCode, MessageKind, Opcode, Role};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One read buffer for every connection: big enough that pipelined 16 KiB
/// echoes come in a few reads.
const READ_BUF: usize = 256 * 1024;
/// `connect` on a non-blocking socket answers EINPROGRESS (Linux's number;
/// `ErrorKind::InProgress` is not stable yet).
const EINPROGRESS: i32 = 115;
/// Largest handshake response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Frames from this size on are written when queued, from one scratch
/// buffer, if nothing is waiting before them (see [`Io::send`]).
const WRITE_NOW_FROM: usize = 4096;

/// Where a connection stands.
#[derive(Debug)]
enum Phase {
    /// TCP connect in progress; WRITABLE signals the outcome.
    Connecting,
    /// Upgrade request sent, response head arriving.
    Handshaking(Box<Handshake>),
    Open,
    Closed,
}

#[derive(Debug)]
struct Handshake {
    head: HeadReader,
    key: String,
}

#[derive(Debug)]
struct Client {
    stream: Option<TcpStream>,
    phase: Phase,
    /// Bytes to write; `written` of them already went out.
    out: Vec<u8>,
    written: usize,
    /// On the dirty list.
    queued: bool,
    /// WRITABLE interest registered (only while output is backed up).
    writable: bool,
    frames: FrameReader,
    started: Instant,
}

/// How the connections fared, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub opened: u64,
    pub connect_failed: u64,
    pub handshake_failed: u64,
    pub handshake_timeouts: u64,
    /// Open connections the server closed (close frame or plain EOF).
    pub closed_by_server: u64,
    /// Open connections that broke: reset, or frames a server must not send.
    pub broken: u64,
    /// The first failure seen, for the human report.
    pub first_error: Option<String>,
}

impl Counters {
    pub fn failures(&self) -> u64 {
        self.connect_failed + self.handshake_failed + self.handshake_timeouts + self.closed_by_server + self.broken
    }

    fn note(&mut self, error: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }
}

/// What a scenario does with connections and messages.
pub trait Handler {
    /// The connection finished its opening handshake.
    fn opened(&mut self, _io: &mut Io, _id: usize, _now_ns: u64) {}
    /// A data message arrived (its payload: see [`Frame::Message`]).
    fn message(&mut self, io: &mut Io, id: usize, kind: MessageKind, payload: &[u8], now_ns: u64);
}

/// The connections, as handlers see them: send, and read the clock.
#[derive(Debug)]
pub struct Io {
    conns: Vec<Client>,
    dirty: Vec<usize>,
    /// Where large frames are encoded before they are written.
    scratch: Vec<u8>,
    epoch: Instant,
    open: usize,
    pub counters: Counters,
}

impl Io {
    /// Nanoseconds since the driver started: the bench's one clock.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The instant `ns` (from `now_ns`) stands for.
    pub fn instant(&self, ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(ns)
    }

    /// Connections opened or attempted so far (ids are `0..len`).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn is_open(&self, id: usize) -> bool {
        matches!(self.conns.get(id).map(|c| &c.phase), Some(Phase::Open))
    }

    /// Connections currently open.
    pub fn open_count(&self) -> usize {
        self.open
    }

    /// Queues a data message, masked by the core; written at the end of the turn.
    pub fn send(&mut self, id: usize, kind: MessageKind, payload: &[u8]) {
        self.send_frame(id, kind.opcode(), payload);
    }

    fn send_frame(&mut self, id: usize, opcode: Opcode, payload: &[u8]) {
        let Some(c) = self.conns.get_mut(id) else { return };
        if !matches!(c.phase, Phase::Open) {
            return;
        }
        if payload.len() >= WRITE_NOW_FROM && c.out.is_empty() {
            // Encoded into one buffer for every connection, which stays in
            // cache, instead of each connection's own (100 x 16 KiB of them
            // are not), and written at once: the same one write per frame
            // as at the end of the turn. What the socket does not take now
            // waits in `out`; an error is left for the flush to meet again.
            self.scratch.clear();
            write_frame(&mut self.scratch, opcode, true, false, Some(random_key()), payload);
            let sent = match c.stream.as_mut().map(|s| s.write(&self.scratch)) {
                Some(Ok(n)) => n,
                _ => 0,
            };
            if sent == self.scratch.len() {
                return;
            }
            c.out.extend_from_slice(&self.scratch[sent..]);
        } else {
            write_frame(&mut c.out, opcode, true, false, Some(random_key()), payload);
        }
        if !c.queued {
            c.queued = true;
            self.dirty.push(id);
        }
    }
}

/// The outcome of opening a batch of connections.
#[derive(Clone, Copy, Debug)]
pub struct Opened {
    pub attempted: usize,
    pub opened: usize,
    /// From the first connect to the last successful handshake.
    pub secs: f64,
}

pub struct Driver {
    poll: Poll,
    events: Events,
    ready: Vec<(usize, bool, bool)>,
    read_buf: Box<[u8]>,
    io: Io,
    /// The server (with several: connection k dials `addrs[k % len]`).
    addrs: Vec<std::net::SocketAddr>,
    request: ClientRequest,
    sources: Sources,
    collect: bool,
    /// permessage-deflate, offered in every upgrade request (`--deflate`).
    deflate: Option<DeflateConfig>,
    to_open: usize,
    handshaking: usize,
    concurrency: usize,
    last_open: Option<Instant>,
    /// Connect start to validated 101, per connection.
    pub handshake_latency: Histogram,
}

impl Driver {
    /// A driver for `planned` connections to `target` from `sources`.
    /// `collect`: whether handlers need payloads of messages split across reads.
    pub fn new(target: Target, planned: usize, sources: Sources, collect: bool) -> io::Result<Driver> {
        let request = ClientRequest {
            host: target.host.clone(),
            target: target.target.clone(),
            ..ClientRequest::default()
        };
        Ok(Driver {
            poll: Poll::new()?,
            events: Events::with_capacity(4096),
            ready: Vec::with_capacity(4096),
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            io: Io {
                conns: Vec::with_capacity(planned),
                dirty: Vec::new(),
                scratch: Vec::new(),
                epoch: Instant::now(),
                open: 0,
                counters: Counters::default(),
            },
            addrs: vec![target.addr],
            request,
            sources,
            collect,
            deflate: None,
            to_open: 0,
            handshaking: 0,
            concurrency: 1,
            last_open: None,
            handshake_latency: Histogram::new(),
        })
    }

    /// Offers permessage-deflate (RFC 7692) in every upgrade request; a
    /// connection whose server accepts reads compressed messages.
    pub fn offer_deflate(&mut self) {
        let config = DeflateConfig::default();
        self.request.extensions = Some(client_offer(&config));
        self.deflate = Some(config);
    }

    /// The reader for a connection the server answered with `extensions`.
    fn frame_reader(&self, extensions: Option<&str>) -> Result<FrameReader, String> {
        let reader = FrameReader::new(self.collect);
        match (extensions, &self.deflate) {
            (Some(answer), Some(config)) => {
                let params = client_accept(answer, config).map_err(|e| format!("handshake: extension: {e:?}"))?;
                Ok(reader.with_compression(Compression::new(&params, Role::Client, config)))
            }
            _ => Ok(reader),
        }
    }

    /// Spreads the connections over these servers too, in turn.
    pub fn spread_over(&mut self, more: &[Target]) {
        self.addrs.extend(more.iter().map(|t| t.addr));
    }

    pub fn io(&mut self) -> &mut Io {
        &mut self.io
    }

    /// How many source addresses the connections come from.
    pub fn source_addresses(&self) -> usize {
        self.sources.addresses(self.io.len())
    }

    /// Opens `n` more connections, at most `concurrency` handshakes at a
    /// time, giving up on those not open by `timeout`.
    pub fn open<H: Handler>(
        &mut self,
        h: &mut H,
        n: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> io::Result<Opened> {
        let start = Instant::now();
        let deadline = start + timeout;
        let first = self.io.len();
        self.to_open = n;
        self.concurrency = concurrency.max(1);
        self.last_open = None;
        loop {
            let now = Instant::now();
            if (self.to_open == 0 && self.handshaking == 0) || now >= deadline {
                break;
            }
            self.turn(h, Some((deadline - now).min(Duration::from_millis(100))))?;
        }
        self.to_open = 0;
        for id in first..self.io.len() {
            if matches!(self.io.conns[id].phase, Phase::Connecting | Phase::Handshaking(_)) {
                self.io.counters.handshake_timeouts += 1;
                self.io
                    .counters
                    .note(|| format!("handshake not done after {timeout:?}"));
                self.end(id);
            }
        }
        let opened = (first..self.io.len()).filter(|&id| self.io.is_open(id)).count();
        let secs = self.last_open.map_or(0.0, |t| t.duration_since(start).as_secs_f64());
        Ok(Opened {
            attempted: n,
            opened,
            secs,
        })
    }

    /// One turn of the loop: start connections due, wait for readiness (at
    /// most `timeout`), handle it, write what was queued.
    pub fn turn<H: Handler>(&mut self, h: &mut H, timeout: Option<Duration>) -> io::Result<()> {
        while self.to_open > 0 && self.handshaking < self.concurrency {
            self.launch()?;
        }
        self.flush_dirty();
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            return if e.kind() == ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        self.ready.clear();
        self.ready.extend(self.events.iter().map(|e| {
            let readable = e.is_readable() || e.is_read_closed() || e.is_error();
            (e.token().0, readable, e.is_writable())
        }));
        for i in 0..self.ready.len() {
            let (id, readable, writable) = self.ready[i];
            self.on_event(h, id, readable, writable);
        }
        self.flush_dirty();
        Ok(())
    }

    /// Runs turns until `until`, or until `done` says so (checked every turn).
    pub fn run_until<H: Handler>(&mut self, h: &mut H, until: Instant, done: impl Fn(&H) -> bool) -> io::Result<()> {
        loop {
            let now = Instant::now();
            if now >= until || done(h) {
                return Ok(());
            }
            self.turn(h, Some((until - now).min(Duration::from_millis(50))))?;
        }
    }

    /// Starts one TCP connection; an immediate failure still takes an id,
    /// so ids stay in step with the scenario's plan.
    fn launch(&mut self) -> io::Result<()> {
        self.to_open -= 1;
        let id = self.io.conns.len();
        let mut client = Client {
            stream: None,
            phase: Phase::Closed,
            out: Vec::new(),
            written: 0,
            queued: false,
            writable: true,
            frames: FrameReader::new(self.collect),
            started: Instant::now(),
        };
        let addr = self.addrs[id % self.addrs.len()];
        match connect(addr, self.sources.for_connection(id)) {
            Ok(mut stream) => {
                self.poll
                    .registry()
                    .register(&mut stream, Token(id), Interest::READABLE | Interest::WRITABLE)?;
                client.stream = Some(stream);
                client.phase = Phase::Connecting;
                self.handshaking += 1;
            }
            Err(e) => {
                self.io.counters.connect_failed += 1;
                self.io.counters.note(|| format!("connect: {e}"));
            }
        }
        self.io.conns.push(client);
        Ok(())
    }

    fn on_event<H: Handler>(&mut self, h: &mut H, id: usize, readable: bool, writable: bool) {
        let Some(c) = self.io.conns.get_mut(id) else { return };
        match c.phase {
            Phase::Closed => {}
            Phase::Connecting => {
                if readable || writable {
                    self.connected(id);
                }
            }
            Phase::Handshaking(_) | Phase::Open => {
                if writable {
                    self.flush(id);
                }
                if readable {
                    self.read(h, id);
                }
            }
        }
    }

    /// The connect attempt finished: send the upgrade request, or fail.
    /// (`SO_ERROR` tells a failure; a write before the connection is up
    /// fails with `NotConnected`, which `send_request` takes as "not yet",
    /// so no `getpeername` is needed to tell a spurious wakeup.)
    fn connected(&mut self, id: usize) {
        let Some(stream) = self.io.conns[id].stream.as_ref() else {
            return;
        };
        match stream.take_error() {
            Ok(None) => self.send_request(id),
            Ok(Some(e)) | Err(e) => {
                self.io.counters.connect_failed += 1;
                self.io.counters.note(|| format!("connect: {e}"));
                self.end(id);
            }
        }
    }

    fn send_request(&mut self, id: usize) {
        let c = &mut self.io.conns[id];
        let Some(stream) = c.stream.as_mut() else { return };
        let (bytes, key) = self.request.encode();
        let written = match stream.write(&bytes) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::NotConnected | ErrorKind::WouldBlock) => return,
            Err(e) => {
                self.io.counters.connect_failed += 1;
                self.io.counters.note(|| format!("connect: {e}"));
                return self.end(id);
            }
        };
        // The rest, if any (never, for a request this small), goes out on WRITABLE.
        c.out.extend_from_slice(&bytes[written..]);
        c.phase = Phase::Handshaking(Box::new(Handshake {
            head: HeadReader::new(MAX_HEAD),
            key,
        }));
    }

    /// Reads until the socket is drained. A short read means the receive
    /// queue was empty at that moment; anything arriving later raises a new
    /// edge, so the extra read that would only return `WouldBlock` is skipped.
    fn read<H: Handler>(&mut self, h: &mut H, id: usize) {
        loop {
            let Some(stream) = self.io.conns[id].stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.read_buf) {
                Ok(0) => {
                    if self.io.is_open(id) {
                        self.io.counters.closed_by_server += 1;
                        self.io
                            .counters
                            .note(|| "the server closed a connection without a close frame".into());
                    } else {
                        self.io.counters.handshake_failed += 1;
                        self.io
                            .counters
                            .note(|| "the server closed the connection during the handshake".into());
                    }
                    return self.end(id);
                }
                Ok(n) => {
                    let now = self.io.now_ns();
                    if !self.received(h, id, n, now) {
                        return;
                    }
                    if n < self.read_buf.len() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if self.io.is_open(id) {
                        self.io.counters.broken += 1;
                    } else {
                        self.io.counters.handshake_failed += 1;
                    }
                    self.io.counters.note(|| format!("read: {e}"));
                    return self.end(id);
                }
            }
        }
    }

    /// Handles `n` bytes just read into the read buffer; false once the
    /// connection has ended.
    fn received<H: Handler>(&mut self, h: &mut H, id: usize, n: usize, now: u64) -> bool {
        let mut start = 0;
        if let Phase::Handshaking(hs) = &mut self.io.conns[id].phase {
            let outcome = match hs.head.feed_response(&self.read_buf[..n]) {
                Ok(None) => return true,
                Ok(Some((response, rest))) => validate(&response, &hs.key, &self.request)
                    .map_err(|e| format!("handshake: {e}"))
                    // The bytes after the head are frames, at the end of what was read.
                    .map(|accepted| (n - rest.len(), accepted.extensions)),
                Err(e) => Err(format!("handshake response: {e:?}")),
            };
            let outcome = outcome.and_then(|(at, ext)| Ok((at, self.frame_reader(ext.as_deref())?)));
            match outcome {
                Ok((frames_at, reader)) => {
                    start = frames_at;
                    self.io.conns[id].frames = reader;
                }
                Err(e) => {
                    self.io.counters.handshake_failed += 1;
                    self.io.counters.note(|| e);
                    self.end(id);
                    return false;
                }
            }
            let c = &mut self.io.conns[id];
            c.phase = Phase::Open;
            c.out = Vec::new();
            c.written = 0;
            let took = c.started.elapsed();
            self.handshaking -= 1;
            self.io.open += 1;
            self.io.counters.opened += 1;
            self.last_open = Some(Instant::now());
            self.handshake_latency.record(took.as_nanos() as u64);
            h.opened(&mut self.io, id, now);
        }
        if start == n {
            return true;
        }
        // The reader leaves the connection for the duration so the handler
        // can use every connection, this one included.
        let mut frames = std::mem::replace(&mut self.io.conns[id].frames, FrameReader::new(false));
        let io = &mut self.io;
        let mut close = None;
        let result = frames.feed(&self.read_buf[start..n], &mut |frame| match frame {
            Frame::Message(kind, payload) => h.message(io, id, kind, payload, now),
            Frame::Ping(payload) => io.send_frame(id, Opcode::Pong, payload),
            Frame::Pong => {}
            Frame::Close(code) => close = Some(code),
        });
        self.io.conns[id].frames = frames;
        if let Err(e) = result {
            self.io.counters.broken += 1;
            self.io.counters.note(|| format!("bad frame from the server: {e}"));
            self.end(id);
            return false;
        }
        if let Some(code) = close {
            // Answer the close (section 5.5.1), then let the connection go.
            let code = code.unwrap_or(CloseCode::NORMAL.0);
            self.io.send_frame(id, Opcode::Close, &code.to_be_bytes());
            self.flush(id);
            self.io.counters.closed_by_server += 1;
            self.io
                .counters
                .note(|| format!("the server closed a connection with code {code}"));
            self.end(id);
            return false;
        }
        true
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.io.dirty);
        for &id in &dirty {
            self.flush(id);
        }
        dirty.clear();
        // Keep the list's capacity; flushing queues nothing new.
        self.io.dirty = dirty;
    }

    /// Writes what is queued; holds WRITABLE interest only while backed up.
    fn flush(&mut self, id: usize) {
        if let Err(e) = self.write_out(id) {
            self.io.counters.broken += 1;
            self.io.counters.note(|| format!("write: {e}"));
            self.end(id);
        }
    }

    fn write_out(&mut self, id: usize) -> io::Result<()> {
        let c = &mut self.io.conns[id];
        c.queued = false;
        let Some(stream) = c.stream.as_mut() else { return Ok(()) };
        while c.written < c.out.len() {
            match stream.write(&c.out[c.written..]) {
                Ok(n) => c.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if !c.writable {
                        c.writable = true;
                        let interest = Interest::READABLE | Interest::WRITABLE;
                        self.poll.registry().reregister(stream, Token(id), interest)?;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.out.clear();
        c.written = 0;
        // WRITABLE stays registered from the connect until data flows: an
        // idle connection costs no epoll_ctl beyond its registration.
        if c.writable && matches!(c.phase, Phase::Open) {
            c.writable = false;
            self.poll.registry().reregister(stream, Token(id), Interest::READABLE)?;
        }
        Ok(())
    }

    /// Closes the socket and forgets the connection (its id stays taken).
    fn end(&mut self, id: usize) {
        let c = &mut self.io.conns[id];
        match c.phase {
            Phase::Connecting | Phase::Handshaking(_) => self.handshaking -= 1,
            Phase::Open => self.io.open -= 1,
            Phase::Closed => return,
        }
        c.phase = Phase::Closed;
        if let Some(mut stream) = c.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        c.out = Vec::new();
    }

    /// Closes every connection (TCP only: the run is over).
    pub fn close_all(&mut self) {
        for id in 0..self.io.len() {
            self.end(id);
        }
    }
}

/// A non-blocking TCP connect, bound first to `local` if given.
fn connect(addr: SocketAddr, local: Option<SocketAddr>) -> io::Result<TcpStream> {
    // Non-blocking from birth: one system call fewer per connection.
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    // Small frames go out at once, as every WebSocket client sets it.
    socket.set_tcp_nodelay(true)?;
    if let Some(local) = local {
        socket.bind(&local.into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}
