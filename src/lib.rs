//! roomcast: a WebSocket server written from scratch on
//! [RFC 6455](https://www.rfc-editor.org/rfc/rfc6455) (with
//! [RFC 7692](https://www.rfc-editor.org/rfc/rfc7692) permessage-deflate),
//! and the real-time room server built on it.
//!
//! # Layers
//!
//! Data flows down, never back up:
//!
//! | module | what | knows about |
//! |---|---|---|
//! | [`protocol`] | the sans-IO core: handshake, frames, masking, UTF-8, the message and close state machine, permessage-deflate; plain HTTP/1.1 request framing ([RFC 9112](https://www.rfc-editor.org/rfc/rfc9112)). Bytes and time in, events and bytes out; server and client roles | nothing else |
//! | [`net`] | one event loop (`mio`): sockets, timers, send queues, TLS; applications plug in through [`net::App`] | `protocol` |
//! | [`runtime`] | N event loops in one process: threads, listeners, mailboxes, shutdown, panics | `net` |
//! | [`engine`] | where room state lives beyond one loop: the seam ([`engine::Engine`]), its contract, the in-process engine | `store` |
//! | [`store`] | durable history: SQLite (default) and memory | messages as data |
//! | [`rooms`] | the room server: sessions, three dialects, fan-out, reply order; [`rooms::Hooks`] for embedding programs | `net`, `engine` |
//! | [`http`], [`auth`] | `/health`, `/stats`, `/metrics`, the chat page, the publish API's wire format; credentials and grants | |
//! | [`client`], [`bench`](mod@bench) | the client role on the same core; the load generator and soak harness | `protocol` |
//!
//! docs/architecture.md in the repository has the design and the engine's
//! contract; docs/protocol.md the room protocol.
//!
//! # Running your own application
//!
//! Implement [`net::App`] (route HTTP requests, answering plain ones at
//! once or later with [`net::Route::Defer`] and [`net::Ctx::respond`]; react
//! to opens, messages, closes and timers through a [`net::Ctx`]) and start it on as many loops
//! as you like with [`runtime::start`]. `examples/game_lobby.rs` keeps a
//! game lobby's state this way.
//!
//! # Embedding the room server
//!
//! [`rooms::RoomServer`] runs the room server with your settings; its
//! [`hooks`](rooms::RoomServer::hooks) let you authorize joins, transform or
//! reject messages, and watch connections come and go.
//! `examples/chat_filter.rs` filters a chat's words this way:
//!
//! ```no_run
//! use roomcast::rooms::{Hooks, Publish, RoomConfig, RoomServer};
//! use serde_json::Value;
//!
//! struct NoShouting;
//!
//! impl Hooks for NoShouting {
//!     fn on_publish(&self, _user: &str, _room: &str, content: &Value) -> Publish {
//!         match content.as_str() {
//!             Some(text) if text.chars().any(|c| c.is_lowercase()) => Publish::Keep,
//!             Some(text) => Publish::Replace(Value::String(text.to_lowercase())),
//!             None => Publish::Reject("text only".into()),
//!         }
//!     }
//! }
//!
//! let runtime = RoomServer::new(roomcast::net::Config::default(), RoomConfig::default())
//!     .hooks(NoShouting)
//!     .workers(2)
//!     .start()?;
//! runtime.wait()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// One module may opt out: `net::defer_accept`, a socket option no safe API
// offers (its docs give the invariants and the measured gain).
#![deny(unsafe_code)]

pub mod apps;
pub mod auth;
pub mod bench;
pub mod client;
pub mod engine;
pub mod heap;
pub mod http;
pub mod net;
pub mod protocol;
pub mod rooms;
pub mod runtime;
pub mod store;
