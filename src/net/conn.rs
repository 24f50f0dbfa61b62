//! One TCP connection as the event loop sees it.

use super::heartbeat::Heartbeat;
use super::id::ConnId;
use super::metrics::Disconnect;
use super::rate::TokenBucket;
use super::send_queue::SendQueue;
use super::timers::Timer;
use super::transport::Transport;
use crate::protocol::Connection;
use crate::protocol::handshake::head::Request;
use crate::protocol::http1::RequestReader;
use slab::Slab;
use std::net::{IpAddr, SocketAddr};

/// Where a connection is in its life.
pub enum Phase<S> {
    /// Reading HTTP requests: the upgrade request, or plain requests one
    /// after another on a keep-alive connection.
    /// Boxed: one word leaves the enum's tag a niche in the open state's
    /// layout, and an open connection (the common case, held for hours)
    /// is 8 bytes smaller for it.
    Http(Box<Http>),
    /// A WebSocket the application knows about.
    Open {
        ws: Connection,
        state: S,
        heartbeat: Heartbeat,
    },
    /// We sent a close frame; waiting for the peer's (the application has
    /// already been told the connection is gone).
    Closing(Connection),
    /// Nothing more to say: flush output, shut down our side, discard input
    /// until the peer's FIN or the deadline, then release.
    Draining,
}

pub struct Conn<S> {
    pub id: ConnId,
    pub socket: Transport,
    pub peer: Peer,
    pub phase: Phase<S>,
    pub out: SendQueue,
    /// Its one current deadline (see `timers`).
    pub timer: Timer,
    /// Registered for WRITABLE (only while output is pending).
    pub want_write: bool,
    /// Listed in the loop's dirty list (output queued since the last flush).
    pub dirty: bool,
    /// Reading stopped because our output to the peer is backed up.
    pub read_paused: bool,
    /// Reading stopped by the application (`Ctx::pause_reading`).
    pub app_paused: bool,
    /// Output held back by the application (`Ctx::hold_output`).
    pub held: bool,
    /// Closing as a slow consumer: its unsent frames are dropped so the
    /// close frame goes out next (and their memory is freed at once).
    pub shed: bool,
    /// Why the server is ending it, once it knows (for the metrics).
    pub cause: Option<Disconnect>,
    /// Our write side has been shut down.
    pub shut: bool,
    /// A close is pending (policy or application); no more sends.
    pub doomed: bool,
    /// Data messages dropped since the queue last drained (saturating).
    pub dropped: u32,
    /// The ping-rate bucket, made at the first ping (most peers never ping).
    pub pings: Option<Box<TokenBucket>>,
}

impl<S> Conn<S> {
    pub fn new(id: ConnId, socket: Transport, peer: SocketAddr, max_head: usize) -> Self {
        Conn {
            id,
            socket,
            peer: Peer::from(peer),
            phase: Phase::Http(Box::new(Http::new(max_head))),
            out: SendQueue::default(),
            timer: Timer::default(),
            want_write: false,
            dirty: false,
            read_paused: false,
            app_paused: false,
            held: false,
            shed: false,
            cause: None,
            shut: false,
            doomed: false,
            dropped: 0,
            pings: None,
        }
    }
}

/// The peer's address in 20 bytes, not a `SocketAddr`'s 32 (it is in
/// every slot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    ip: IpAddr,
    port: u16,
}

impl Peer {
    pub fn ip(&self) -> IpAddr {
        self.ip
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer {
            ip: addr.ip(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.addr().fmt(f)
    }
}

/// A connection that speaks plain HTTP (so far).
pub struct Http {
    pub reader: RequestReader,
    pub wait: Wait,
    /// Between requests on a keep-alive connection, nothing buffered: the
    /// deadline is the keep-alive timeout, not the request timeout.
    pub idle: bool,
}

/// What the next step of a plain-HTTP connection waits for.
pub enum Wait {
    /// The next request head.
    Head,
    /// The body of this request (for `App::on_request`).
    Body(Box<Request>),
    /// The body of a request already answered, to be skipped.
    Skip,
    /// The application's answer (`Ctx::respond`); `close`: the connection
    /// ends after it.
    Answer { close: bool },
}

impl Http {
    pub fn new(max_head: usize) -> Self {
        Http {
            reader: RequestReader::new(max_head),
            wait: Wait::Head,
            idle: false,
        }
    }

    /// Whether an answer is owed: later requests wait, unread.
    pub fn owes_answer(&self) -> bool {
        matches!(self.wait, Wait::Answer { .. })
    }
}

/// The connection `id` names, if it still occupies its slot.
pub fn lookup<S>(conns: &mut Slab<Conn<S>>, id: ConnId) -> Option<&mut Conn<S>> {
    conns.get_mut(id.index as usize).filter(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    /// Idle connections are the common case: keep a slot small. The
    /// measured cost per idle connection is in docs/benchmarks.md ("One
    /// loop, second pass").
    #[test]
    fn connection_slot_stays_within_budget() {
        assert!(std::mem::size_of::<super::Conn<()>>() <= 192);
        assert!(std::mem::size_of::<crate::protocol::Connection>() <= 72);
    }
}
