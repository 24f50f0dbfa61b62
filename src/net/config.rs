//! Event-loop settings, with their defaults in one place.

use super::rate::RateLimit;
use super::tls::TlsConfig;
use crate::protocol::Limits;
use crate::protocol::deflate::DeflateConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// What to do when a connection's send queue exceeds its byte limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// Close the slow consumer with 1008 (counted).
    Close,
    /// Drop the data message for this consumer (counted); the application
    /// is told how many were missed once the queue drains.
    Drop,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: i32,
    /// Seconds the kernel holds a new connection until its first bytes
    /// arrive before handing it over anyway (`TCP_DEFER_ACCEPT`; 0: off).
    /// Clients speak first, so the loop wakes once per connection, not
    /// twice; a connection that sends nothing reaches the server (its limits
    /// and its handshake timeout) only after this period.
    pub defer_accept: u32,
    /// Connections held at once; beyond it new ones get HTTP 503.
    pub max_connections: usize,
    /// Connections held at once per client address (IPv6: per /64); beyond
    /// it HTTP 429. 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// New connections per second per client address (burst = 2 s worth);
    /// beyond it HTTP 429. `None` = unlimited.
    pub handshake_rate_per_ip: Option<RateLimit>,
    /// Pings a peer may send (sustained per second, and burst); a peer
    /// beyond it is closed with 1008. `None` = unlimited.
    pub ping_rate: Option<RateLimit>,
    /// Largest HTTP request head (431 beyond).
    pub max_head_size: usize,
    /// Time allowed for a whole request (head and body) to arrive: the
    /// upgrade request, or a plain request from its first byte, or from the
    /// previous answer on a keep-alive connection (slowloris).
    pub handshake_timeout: Duration,
    /// How long a keep-alive connection may sit idle between plain HTTP
    /// requests before it is closed.
    pub keepalive_timeout: Duration,
    /// Largest body of a deferred plain HTTP request (`Route::Defer`; the
    /// publish API's `--max-api-body`); 413 beyond.
    pub max_body_size: usize,
    /// A ping is sent after this long without hearing from the peer.
    pub ping_interval: Option<Duration>,
    /// A peer that has not answered a ping after this long is dropped.
    pub pong_timeout: Duration,
    /// Close (1000) after this long without a data message from the peer.
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the peer's close frame, then for its FIN.
    pub close_timeout: Duration,
    pub limits: Limits,
    /// Per-connection send queue limit in bytes.
    pub max_send_queue: usize,
    pub overflow: OverflowPolicy,
    /// Stop reading a connection while this much output is queued for it.
    pub read_pause_bytes: usize,
    /// Bytes read from one connection per wakeup before others get a turn.
    pub read_budget: usize,
    /// Allowed `Origin` values; empty admits all.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in its order of preference.
    pub subprotocols: Vec<String>,
    /// permessage-deflate (RFC 7692): whether and how it is negotiated.
    pub deflate: DeflateConfig,
    /// How long a graceful shutdown may take before remaining connections are dropped.
    pub shutdown_timeout: Duration,
    /// TLS (`wss://`) on the listening port; `None` serves plain `ws://`.
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9001)),
            backlog: 4096,
            defer_accept: 1,
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            handshake_rate_per_ip: Some(RateLimit {
                per_second: 100.0,
                burst: 200.0,
            }),
            ping_rate: Some(RateLimit {
                per_second: 10.0,
                burst: 50.0,
            }),
            max_head_size: 8 * 1024,
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            max_body_size: 64 * 1024,
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            max_send_queue: 1024 * 1024,
            overflow: OverflowPolicy::Close,
            read_pause_bytes: 256 * 1024,
            read_budget: 256 * 1024,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            deflate: DeflateConfig::default(),
            shutdown_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}
