//! The seam between the event loop and an application (rooms, echo).
//!
//! The loop owns sockets, buffers and time; the application owns meaning.
//! It decides what each HTTP request gets, and reacts to messages through
//! a `Ctx` that can send to, or close, any open connection by id, and
//! answer a deferred HTTP request.

use super::config::{Config, OverflowPolicy};
use super::conn::{Conn, Phase, Wait, lookup};
use super::id::ConnId;
use super::send_queue::{BufPool, Chunk};
use super::shared::Shared;
use super::stats::Stats;
use super::transport::{Sender, Transport};
use crate::protocol::deflate::SharedCompressor;
use crate::protocol::frame::encode_server_frame;
use crate::protocol::handshake::head::Request;
use crate::protocol::handshake::server::Rejection;
use crate::protocol::http1;
use crate::protocol::{CloseCode, MessageKind};
use slab::Slab;
use std::io::{IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Instant;

/// What a request gets.
pub enum Route<S> {
    /// Upgrade to WebSocket (if the handshake is valid) with this state.
    Upgrade(S),
    /// A complete plain HTTP response. The connection stays open for the
    /// next request (HTTP/1.1 keep-alive) unless the response says
    /// `Connection: close` (every `http_response` does), the client asked
    /// for it, or the request had a body.
    Respond(Vec<u8>),
    /// Refuse with an HTTP error (counted as a handshake failure); the
    /// connection closes after it.
    Reject(Rejection),
    /// A plain request the application answers itself, now or later: the
    /// loop reads its body (`Content-Length`, at most
    /// `Config::max_body_size`; framing it refuses gets `App::http_error`),
    /// then calls `App::on_request`, whose answer goes out with
    /// `Ctx::respond`. Until then, later requests on the connection wait.
    Defer,
}

/// A message prepared once for many recipients: framed at most once (and
/// compressed at most once, for recipients without a compression context
/// of their own), the same bytes shared by every recipient's queue.
pub struct Outgoing {
    kind: MessageKind,
    payload: Vec<u8>,
    frame: OnceLock<Arc<[u8]>>,
    /// The frame compressed with a fresh context; `None` inside when the
    /// message goes uncompressed (below the threshold, or no gain).
    compressed: OnceLock<Option<Arc<[u8]>>>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("kind", &self.kind)
            .field("len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    pub fn new(kind: MessageKind, payload: Vec<u8>) -> Self {
        Outgoing {
            kind,
            payload,
            frame: OnceLock::new(),
            compressed: OnceLock::new(),
        }
    }

    pub fn text(payload: Vec<u8>) -> Self {
        Self::new(MessageKind::Text, payload)
    }

    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The unmasked, uncompressed frame, encoded on first use.
    pub fn frame(&self) -> &Arc<[u8]> {
        self.frame
            .get_or_init(|| Arc::from(encode_server_frame(self.kind.opcode(), false, &self.payload)))
    }

    /// The frame for connections that accept shared compressed frames:
    /// compressed once (RSV1 set), or the plain frame when not worth it.
    pub fn compressed_frame(&self, compressor: &SharedCompressor) -> &Arc<[u8]> {
        let compressed = self.compressed.get_or_init(|| {
            let payload = compressor.compress(&self.payload)?;
            Some(Arc::from(encode_server_frame(self.kind.opcode(), true, &payload)))
        });
        compressed.as_ref().unwrap_or_else(|| self.frame())
    }
}

/// Prepared messages that go to many connections together, in order:
/// framed once into one buffer, so that each recipient costs one queue
/// operation for all of them, not one per message.
pub struct Batch<'a> {
    messages: Vec<&'a Outgoing>,
    plain: OnceLock<Arc<[u8]>>,
    compressed: OnceLock<Arc<[u8]>>,
}

impl<'a> Batch<'a> {
    pub fn new(messages: Vec<&'a Outgoing>) -> Self {
        Batch {
            messages,
            plain: OnceLock::new(),
            compressed: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The frames one after another; one message's own frame is shared as is.
    fn joined(&self, frame: impl Fn(&Outgoing) -> &Arc<[u8]>) -> Arc<[u8]> {
        match self.messages[..] {
            [one] => frame(one).clone(),
            _ => {
                let mut joined = Vec::with_capacity(self.messages.iter().map(|m| frame(m).len()).sum());
                for m in &self.messages {
                    joined.extend_from_slice(frame(m));
                }
                joined.into()
            }
        }
    }

    fn plain(&self) -> &Arc<[u8]> {
        self.plain.get_or_init(|| self.joined(Outgoing::frame))
    }

    fn compressed(&self, compressor: &SharedCompressor) -> &Arc<[u8]> {
        self.compressed
            .get_or_init(|| self.joined(|m| m.compressed_frame(compressor)))
    }
}

/// Frames `data` for an open connection straight into its queue's tail,
/// after anything the protocol queued by itself; returns the bytes added.
fn frame_into<S>(conn: &mut Conn<S>, pool: &mut BufPool, kind: MessageKind, data: &[u8]) -> usize {
    let Phase::Open { ws, .. } = &mut conn.phase else {
        return 0;
    };
    let before = conn.out.len_bytes();
    if ws.has_output() {
        conn.out.push(Chunk::Owned(ws.take_output()), pool);
    }
    conn.out.append_frame(pool, |tail| ws.send_into(kind, data, tail));
    conn.out.len_bytes() - before
}

/// Writes a message straight to a plain connection with nothing queued
/// (see `Ctx::write_through`) and queues what the socket does not take;
/// returns the bytes queued. `None`: it must be framed into the queue.
fn write_now<S>(
    conn: &mut Conn<S>,
    pool: &mut BufPool,
    stats: &Stats,
    kind: MessageKind,
    data: &[u8],
) -> Option<usize> {
    let Phase::Open { ws, .. } = &conn.phase else {
        return None;
    };
    if conn.held || !conn.out.is_empty() || ws.has_output() {
        return None;
    }
    let Transport::Plain(socket) = &conn.socket else {
        return None;
    };
    let (header, n) = ws.plain_header(kind, data.len())?;
    let header = &header[..n];
    let written = if data.len() < COPY_BELOW {
        Sender(socket).write(pool.frame(header, data))
    } else {
        Sender(socket).write_vectored(&[IoSlice::new(header), IoSlice::new(data)])
    };
    // An error is left for the loop's flush of the queued rest to meet again
    // (and end the connection on).
    let written = written.unwrap_or(0);
    stats.bytes_out.add(written as u64);
    if written == header.len() + data.len() {
        return Some(0);
    }
    let rest = unsent(header, data, written);
    let queued = rest.len();
    conn.out.push(Chunk::Owned(rest), pool);
    Some(queued)
}

/// What a write of `written` bytes of `header` then `payload` left unsent.
fn unsent(header: &[u8], payload: &[u8], written: usize) -> Vec<u8> {
    let mut rest = Vec::with_capacity((header.len() + payload.len()).saturating_sub(written));
    rest.extend_from_slice(header.get(written..).unwrap_or_default());
    rest.extend_from_slice(&payload[written.saturating_sub(header.len()).min(payload.len())..]);
    rest
}

/// Why a connection left the open state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent a close frame (with this code, if any).
    Peer(Option<CloseCode>),
    /// We closed it (application, shutdown, policy) with this code.
    Local(CloseCode),
    /// The peer broke the protocol; we closed with this code.
    ProtocolError(CloseCode),
    /// The TCP connection ended or failed without a close frame.
    Abnormal,
}

/// Outcome of queueing a message for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// Dropped under the `drop` overflow policy.
    Dropped,
    /// The connection is closed or closing (possibly by this very send,
    /// under the `close` overflow policy).
    Closed,
}

pub trait App {
    /// Per-connection application state, kept in the connection's slot.
    type State;

    /// Routes a complete request head. `net` holds every worker's counters;
    /// `draining` is true during shutdown.
    fn route(&mut self, req: &Request, peer: SocketAddr, net: &Shared, draining: bool) -> Route<Self::State>;

    /// A WebSocket connection opened.
    fn on_open(&mut self, ctx: &mut Ctx<'_, Self::State>, id: ConnId);

    /// A complete message arrived. `data` is borrowed from the read buffer
    /// (unmasked in place, no copy): copy what must outlive the call.
    fn on_message(&mut self, ctx: &mut Ctx<'_, Self::State>, id: ConnId, kind: MessageKind, data: &[u8]);

    /// The connection left the open state; `state` is its final state. No
    /// more messages can be sent to it.
    fn on_close(&mut self, ctx: &mut Ctx<'_, Self::State>, id: ConnId, state: Self::State, reason: CloseReason);

    /// A deferred request (`Route::Defer`) arrived with its body. Answer it
    /// with `ctx.respond(id, ...)`, here or later (e.g. when another
    /// worker's reply arrives); if the connection is gone by then, the
    /// answer is dropped.
    fn on_request(&mut self, ctx: &mut Ctx<'_, Self::State>, id: ConnId, _req: &Request, _body: Vec<u8>) {
        ctx.respond(id, Rejection::new(404, "not found").response());
    }

    /// The answer to a deferred request whose body the loop refuses to read
    /// (`status` 400, 411, 413 or 501); the connection closes after it.
    fn http_error(&mut self, _req: &Request, status: u16, reason: &'static str) -> Vec<u8> {
        Rejection::new(status, reason).response()
    }

    /// A connection whose messages were dropped has drained its queue.
    fn on_drained(&mut self, _ctx: &mut Ctx<'_, Self::State>, _id: ConnId, _dropped: u64) {}

    /// The earliest time the application wants `on_timer` (e.g. a token expiry).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    /// Called once `next_deadline` has passed.
    fn on_timer(&mut self, _ctx: &mut Ctx<'_, Self::State>) {}

    /// Called once per loop turn, after its events and before its output
    /// is written: work the application gathered over the turn (a room's
    /// messages, fanned out together) is finished here.
    fn on_turn_end(&mut self, _ctx: &mut Ctx<'_, Self::State>) {}

    /// Called on every loop turn, right after `poll` returns and before the
    /// turn's socket events: work handed over by other threads (through the
    /// loop's `Waker`) is taken here.
    fn on_wake(&mut self, _ctx: &mut Ctx<'_, Self::State>) {}

    /// Called before the loop writes its queued output and blocks in `poll`:
    /// hand work to other threads here, so that it is on its way before any
    /// reply the client reads. Returns false when work for this loop is
    /// already waiting, so the loop must not block.
    fn before_poll(&mut self) -> bool {
        true
    }

    /// Whether a connection's replies may be written as soon as its bytes
    /// are handled, rather than with the rest of the turn's output before
    /// the loop blocks. Early, the client acts on a reply while the loop is
    /// still reading other connections (10 connections in ping-pong: about
    /// twice the round trips, docs/benchmarks.md). An application whose
    /// replies must follow work it finishes in `on_turn_end` or hands to
    /// other threads in `before_poll` keeps the default, false.
    fn replies_early(&self) -> bool {
        false
    }

    /// During a graceful shutdown, once this loop's connections are all
    /// gone: whether the loop may end now. An application whose state other
    /// loops still talk to returns false until they are done too (the
    /// shutdown deadline ends the loop regardless).
    fn can_exit(&mut self, _ctx: &mut Ctx<'_, Self::State>) -> bool {
        true
    }
}

/// A reply written at once (`Ctx::write_through`) smaller than this is
/// copied behind its header and sent as one slice: copying a small payload
/// costs less than a second iovec. A larger one goes from the caller's
/// buffer as that second iovec, sparing the copy (docs/benchmarks.md,
/// "One loop, seventh pass").
const COPY_BELOW: usize = 4096;

/// What the application can do to connections while handling an event.
pub struct Ctx<'a, S> {
    pub(super) conns: &'a mut Slab<Conn<S>>,
    pub(super) config: &'a Config,
    pub(super) stats: &'a Stats,
    pub(super) dirty: &'a mut Vec<ConnId>,
    /// Connections to read again this turn (reading resumed).
    pub(super) ready: &'a mut Vec<ConnId>,
    /// Connections that must leave the open state (overflow closes); the
    /// loop finishes them after the handler returns.
    pub(super) closing: &'a mut Vec<(ConnId, CloseCode, &'static str)>,
    /// Deferred requests answered (`respond`), with whether the connection
    /// closes after the answer; the loop carries on with them.
    pub(super) answered: &'a mut Vec<(ConnId, bool)>,
    /// The worker's spare output buffers.
    pub(super) pool: &'a mut BufPool,
    pub(super) now: Instant,
    /// The connection whose message is being handled, when that message
    /// ended a read that drained a plain socket and the application's
    /// replies may go early: its first reply, if nothing is queued ahead
    /// of it, is written at once (see `COPY_BELOW`) rather than framed
    /// into a send queue taken from the pool, marked dirty and written a
    /// moment later by the same loop turn's flush.
    pub(super) write_through: Option<ConnId>,
}

impl<S> Ctx<'_, S> {
    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn stats(&self) -> &Stats {
        self.stats
    }

    fn open_conn(&mut self, id: ConnId) -> Option<&mut Conn<S>> {
        lookup(self.conns, id).filter(|c| matches!(c.phase, Phase::Open { .. }))
    }

    /// The application state of an open connection.
    pub fn state(&mut self, id: ConnId) -> Option<&mut S> {
        match &mut self.open_conn(id)?.phase {
            Phase::Open { state, .. } => Some(state),
            _ => None,
        }
    }

    /// Whether the connection negotiated permessage-deflate.
    pub fn is_compressed(&mut self, id: ConnId) -> bool {
        match &self.open_conn(id).map(|c| &c.phase) {
            Some(Phase::Open { ws, .. }) => ws.is_compressed(),
            _ => false,
        }
    }

    /// Frames and queues a message (compressed if negotiated), or writes
    /// it at once (see `write_through`).
    pub fn send(&mut self, id: ConnId, kind: MessageKind, data: &[u8]) -> Sent {
        // Only the first reply: the rest of a burst is one write later.
        let through = self.write_through.take_if(|t| *t == id).is_some();
        let stats = self.stats;
        self.enqueue(id, 1, |conn, pool| {
            if through && let Some(queued) = write_now(conn, pool, stats, kind, data) {
                return queued;
            }
            frame_into(conn, pool, kind, data)
        })
    }

    /// Queues an already framed message shared among many connections.
    pub fn send_shared(&mut self, id: ConnId, frame: &Arc<[u8]>) -> Sent {
        self.enqueue(id, 1, |conn, pool| {
            conn.out.push_shared(frame, pool);
            frame.len()
        })
    }

    /// Queues a prepared message: the shared plain frame; the shared
    /// compressed frame for connections that keep no compression context;
    /// or, for a connection with a context of its own, a frame compressed
    /// for it alone.
    pub fn send_outgoing(&mut self, id: ConnId, out: &Outgoing) -> Sent {
        let shared = SharedCompressor::new(&self.config.deflate);
        // One lookup per recipient: this is the fan-out loop.
        self.enqueue(id, 1, |conn, pool| {
            let Phase::Open { ws, .. } = &conn.phase else {
                return 0;
            };
            let frame = match ws.compression().map(|c| c.accepts_shared(&shared)) {
                None => out.frame(),
                Some(true) => out.compressed_frame(&shared),
                Some(false) => return frame_into(conn, pool, out.kind, &out.payload),
            };
            conn.out.push_shared(frame, pool);
            frame.len()
        })
    }

    /// Queues a batch of prepared messages, in order, as `send_outgoing`
    /// would one by one, but with one queue operation for them all (under
    /// the overflow policy they are queued, or dropped, together).
    pub fn send_batch(&mut self, id: ConnId, batch: &Batch) -> Sent {
        if batch.is_empty() {
            return Sent::Queued;
        }
        let shared = SharedCompressor::new(&self.config.deflate);
        self.enqueue(id, batch.len() as u64, |conn, pool| {
            let Phase::Open { ws, .. } = &conn.phase else {
                return 0;
            };
            let frames = match ws.compression().map(|c| c.accepts_shared(&shared)) {
                None => batch.plain(),
                Some(true) => batch.compressed(&shared),
                Some(false) => {
                    let each = |m: &&Outgoing| frame_into(conn, pool, m.kind, &m.payload);
                    return batch.messages.iter().map(each).sum();
                }
            };
            conn.out.push_shared(frames, pool);
            frames.len()
        })
    }

    /// Queues what `queue` adds to an open connection's output (returning
    /// the bytes added), unless the overflow policy says otherwise.
    /// `messages`: how many messages that is (for the counters).
    fn enqueue(&mut self, id: ConnId, messages: u64, queue: impl FnOnce(&mut Conn<S>, &mut BufPool) -> usize) -> Sent {
        let limit = self.config.max_send_queue;
        let overflow = self.config.overflow;
        let Some(conn) = lookup(self.conns, id).filter(|c| matches!(c.phase, Phase::Open { .. })) else {
            return Sent::Closed;
        };
        if conn.doomed {
            return Sent::Closed;
        }
        if conn.out.len_bytes() >= limit {
            return match overflow {
                OverflowPolicy::Drop => {
                    conn.dropped = conn.dropped.saturating_add(u32::try_from(messages).unwrap_or(u32::MAX));
                    self.stats.dropped_messages.add(messages);
                    Sent::Dropped
                }
                OverflowPolicy::Close => {
                    conn.doomed = true;
                    conn.shed = true;
                    self.stats.slow_consumer_closes.inc();
                    self.closing.push((id, CloseCode::POLICY, "slow consumer"));
                    Sent::Closed
                }
            };
        }
        let added = queue(conn, self.pool);
        self.stats.queued(added);
        self.stats.messages_out.add(messages);
        // A reply written whole at once left nothing for the flush to do.
        if added > 0 && !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
        Sent::Queued
    }

    /// Stops reading from the connection until `resume_reading`: the
    /// application has more of its input waiting than it wants to hold (TCP
    /// backpressure reaches the peer).
    pub fn pause_reading(&mut self, id: ConnId) {
        if let Some(conn) = lookup(self.conns, id) {
            conn.app_paused = true;
        }
    }

    /// Reads from a connection paused by `pause_reading` again.
    pub fn resume_reading(&mut self, id: ConnId) {
        if let Some(conn) = lookup(self.conns, id)
            && conn.app_paused
        {
            conn.app_paused = false;
            self.ready.push(id);
        }
    }

    /// Writes nothing to the connection (its handshake response included)
    /// until `release_output`: the application is not ready for the peer
    /// to act yet (e.g. a subscription is being made elsewhere).
    pub fn hold_output(&mut self, id: ConnId) {
        if let Some(conn) = self.open_conn(id) {
            conn.held = true;
        }
    }

    /// Lets held output go.
    pub fn release_output(&mut self, id: ConnId) {
        if let Some(conn) = lookup(self.conns, id)
            && conn.held
        {
            conn.held = false;
            if !conn.dirty {
                conn.dirty = true;
                self.dirty.push(id);
            }
        }
    }

    /// Answers the deferred request the connection is waiting on (see
    /// `Route::Defer`) with a complete HTTP response. Returns false if there
    /// is none (the connection closed meanwhile, or was answered already).
    pub fn respond(&mut self, id: ConnId, response: Vec<u8>) -> bool {
        let Some(conn) = lookup(self.conns, id) else {
            return false;
        };
        let Phase::Http(http) = &mut conn.phase else {
            return false;
        };
        let Wait::Answer { close } = http.wait else {
            return false;
        };
        http.wait = Wait::Head;
        let close = close || http1::closes(&response);
        let response = if close { http1::with_close(response) } else { response };
        // Like a handshake response: never subject to the overflow policy.
        self.stats.queued(response.len());
        conn.out.push(Chunk::Owned(response), self.pool);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.push(id);
        }
        self.answered.push((id, close));
        true
    }

    /// Starts the close handshake with `code`.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &'static str) {
        if let Some(conn) = self.open_conn(id)
            && !conn.doomed
        {
            conn.doomed = true;
            self.closing.push((id, code, reason));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unsent;

    #[test]
    fn a_short_direct_write_leaves_exactly_the_rest() {
        let header = [0x82, 5];
        let payload = *b"hello";
        let whole: Vec<u8> = header.iter().chain(&payload).copied().collect();
        for written in 0..=whole.len() {
            assert_eq!(
                unsent(&header, &payload, written),
                whole[written..],
                "after {written} bytes"
            );
        }
    }
}
