//! The sans-IO RFC 6455 core: no sockets, threads or clocks.
//!
//! Bytes in, typed events out; commands in, bytes out. Server and client
//! roles share it. Files follow the RFC's concepts: `frame` (5.2), `mask`
//! (5.3), `utf8` (8.1), `close` (5.5.1, 7.4), `handshake` (4),
//! `connection` (fragmentation 5.4, control frames 5.5, closing 7) and
//! `deflate` (RFC 7692); `http1` frames the plain HTTP requests served
//! beside the upgrades (RFC 9112: keep-alive, pipelining, bodies).

pub mod close;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod http1;
pub mod mask;
mod random;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Connection, Event, InPlace, Limits, MessageKind, Role, State};
pub use error::Error;
pub use frame::Opcode;
