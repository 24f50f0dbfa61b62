//! The I/O layer: a hand-written `mio` event loop that carries the sans-IO
//! protocol core over TCP. Applications plug in through [`App`].

pub mod app;
pub mod config;
mod conn;
pub mod defer_accept;
pub mod descriptors;
pub mod heartbeat;
pub mod id;
pub mod mailbox;
pub mod metrics;
mod per_ip;
pub mod rate;
pub mod send_queue;
pub mod server;
pub mod shared;
pub mod stats;
pub mod timers;
pub mod tls;
mod transport;

pub use app::{App, Batch, CloseReason, Ctx, Outgoing, Route, Sent};
pub use config::{Config, OverflowPolicy};
pub use id::ConnId;
pub use mailbox::Mailbox;
pub use server::{Adopted, Handoff, Reactor, Server, ShutdownHandle, listen};
pub use shared::Shared;
pub use stats::{Counter, Stats, Totals};
pub use tls::{TlsConfig, TlsError};
