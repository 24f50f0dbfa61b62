//! The client role on the same sans-IO core as the server.
//!
//! `url` parses `ws://` and `wss://` URLs, `handshake` opens a connection
//! (TCP, TLS for `wss://` in `stream`, upgrade request, response checks,
//! permessage-deflate), `blocking` is the client itself over a std
//! `TcpStream` (or rustls over one) with timeouts (no async runtime, no event
//! loop: one connection per thread is what a CLI and a test driver need),
//! `backoff` spaces out reconnects, and `autobahn` drives the Autobahn
//! fuzzingserver.
//!
//! ```no_run
//! use roomcast::client::{Client, ClientConfig, Message};
//! use roomcast::protocol::CloseCode;
//!
//! let mut client = Client::connect("ws://127.0.0.1:9001/", &ClientConfig::default())?;
//! client.send_text("hello")?;
//! if let Message::Text(reply) = client.read_message()? {
//!     println!("{reply}");
//! }
//! client.close(CloseCode::NORMAL, "")?;
//! # Ok::<(), roomcast::client::ClientError>(())
//! ```

pub mod autobahn;
mod backoff;
mod blocking;
mod error;
mod handshake;
mod stream;
mod url;

pub use backoff::Backoff;
pub use blocking::Client;
pub use error::{ClientError, HandshakeError};
pub use handshake::check_header;
pub use stream::load_ca_file;
pub use url::{UrlError, WsUrl};

use crate::protocol::deflate::DeflateConfig;
use crate::protocol::{CloseFrame, Limits};
use rustls::pki_types::CertificateDer;
use std::time::Duration;

/// What `Client::read_message` returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    /// The server closed; `None` when its close frame had no status code.
    Close(Option<CloseFrame>),
}

/// Client settings, with their defaults in one place.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Extra request headers, such as `Authorization`.
    pub headers: Vec<(String, String)>,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// permessage-deflate: offered when `enabled` (the default).
    pub deflate: DeflateConfig,
    /// Largest frame and message accepted from the server (1009 beyond).
    pub limits: Limits,
    /// Largest response head.
    pub max_head_size: usize,
    /// Time for the TCP connection and the opening handshake together.
    pub connect_timeout: Duration,
    /// How long `read_message` waits; `None` waits for ever.
    pub read_timeout: Option<Duration>,
    /// How long a write may block on a server that does not read.
    pub write_timeout: Option<Duration>,
    /// How long the close handshake may take, and the wait for the
    /// server to close TCP after it.
    pub close_timeout: Duration,
    /// CA certificates trusted for `wss://` besides the system's trust
    /// store (`--ca`; see [`load_ca_file`]).
    pub ca_certs: Vec<CertificateDer<'static>>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            headers: Vec::new(),
            protocols: Vec::new(),
            deflate: DeflateConfig::default(),
            limits: Limits {
                max_frame_size: 16 * 1024 * 1024,
                max_message_size: 16 * 1024 * 1024,
            },
            max_head_size: 16 * 1024,
            connect_timeout: Duration::from_secs(10),
            read_timeout: None,
            write_timeout: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
            ca_certs: Vec::new(),
        }
    }
}
