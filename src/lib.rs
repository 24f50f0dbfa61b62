//! roomcast: a WebSocket server written from scratch on RFC 6455.
//!
//! `protocol` is the sans-IO core (handshake, frames, masking, UTF-8,
//! messages, closing, permessage-deflate); `net` is the mio event loop that
//! carries it over TCP; `apps` are what runs on it (echo, rooms).

#![forbid(unsafe_code)]

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
