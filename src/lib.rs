//! roomcast: a WebSocket server written from scratch on RFC 6455.
//!
//! `protocol` is the sans-IO core (handshake, frames, masking, UTF-8,
//! messages, closing, permessage-deflate).

#![forbid(unsafe_code)]

pub mod protocol;
