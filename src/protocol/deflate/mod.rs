//! permessage-deflate (RFC 7692): negotiation (section 7.1, `negotiate`),
//! the `Sec-WebSocket-Extensions` grammar (`header`), and per-message
//! compression (7.2) over zlib streams (`codec`).
//!
//! A connection's [`Compression`] allocates its zlib streams lazily. In a
//! direction with no context takeover the stream is borrowed from a
//! per-thread pool for one message and handed back, so an idle connection
//! holds no zlib state at all; with context takeover the LZ77 window must
//! survive between messages, so the stream stays with the connection once
//! first used (~47 KB to inflate, ~250-380 KB to deflate; measured in
//! `docs/deflate.md`). The default [`DeflateConfig`] negotiates no context
//! takeover both ways, which also lets a room broadcast be compressed once
//! for every member ([`SharedCompressor`]).

mod codec;
mod header;
mod negotiate;

pub use negotiate::{
    DeflateConfig, DeflateParams, EXTENSION_NAME, NegotiationError, client_accept, client_offer, negotiate,
};

use flate2::{Compress, Decompress};

use super::connection::Role;
use super::error::Error;

/// Negotiated per-connection compression state.
#[derive(Debug)]
pub struct Compression {
    /// Held from the first byte of a compressed message to its end, or for
    /// good once used when the peer keeps its context.
    inflater: Option<Box<Decompress>>,
    /// Held for good once used, only with our context takeover.
    deflater: Option<Box<Compress>>,
    /// The peer may refer back to earlier messages (section 7.1.1).
    inflate_takeover: bool,
    /// We may refer back to earlier messages (section 7.1.1).
    deflate_takeover: bool,
    /// zlib window bits we compress with, 9..=15 (section 7.1.2).
    window: u8,
    level: u8,
    threshold: usize,
    /// Compressed bytes were fed since the last message ended.
    in_message: bool,
}

impl Compression {
    /// The state for `role` after negotiating `params`: a server inflates
    /// with the client_* parameters and deflates with the server_* ones, a
    /// client the reverse. Allocates no zlib state yet.
    pub fn new(params: &DeflateParams, role: Role, config: &DeflateConfig) -> Self {
        let (ours, theirs, bits, max) = match role {
            Role::Server => (
                params.server_no_context_takeover,
                params.client_no_context_takeover,
                params.server_max_window_bits,
                config.server_max_window_bits,
            ),
            Role::Client => (
                params.client_no_context_takeover,
                params.server_no_context_takeover,
                params.client_max_window_bits,
                config.client_max_window_bits,
            ),
        };
        Compression {
            inflater: None,
            deflater: None,
            inflate_takeover: !theirs,
            deflate_takeover: !ours,
            window: codec::zlib_window(bits.unwrap_or(15).min(max)),
            level: config.level.min(9),
            threshold: config.threshold,
            in_message: false,
        }
    }

    /// Inflates a piece of a compressed message's payload (already
    /// unmasked), appending to `out`. Fails with `MessageTooLarge` as soon
    /// as `out.len()` would pass `limit`, checked while inflating, and with
    /// `BadCompressedData` on corrupt data.
    pub fn inflate(&mut self, input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
        if input.is_empty() {
            return Ok(());
        }
        self.in_message = true;
        let d = self.inflater.get_or_insert_with(codec::take_inflater);
        codec::inflate(d, input, out, limit)
    }

    /// Ends a compressed message: inflates the `00 00 ff ff` tail (section
    /// 7.2.2) under the same limit, then, if the peer keeps no context,
    /// returns the stream to the pool. An empty payload is an empty message.
    pub fn finish_message(&mut self, out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
        if std::mem::take(&mut self.in_message) {
            let d = self.inflater.get_or_insert_with(codec::take_inflater);
            codec::inflate(d, &codec::TAIL, out, limit)?;
        }
        if !self.inflate_takeover
            && let Some(d) = self.inflater.take()
        {
            codec::give_inflater(d);
        }
        Ok(())
    }

    /// Compresses a whole outgoing message (section 7.2.1): the payload
    /// without the trailing `00 00 ff ff`, or `None` to send it
    /// uncompressed (below the threshold, or, without context takeover and
    /// with a threshold above 0, when compressing does not make it smaller).
    pub fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < self.threshold {
            return None;
        }
        if !self.deflate_takeover {
            return codec::deflate_fresh(payload, self.window, self.level, self.threshold > 0);
        }
        // With takeover the peer's window now holds this message too, so
        // it must be sent compressed whatever the ratio.
        let (window, level) = (self.window, self.level);
        let c = self.deflater.get_or_insert_with(|| codec::take_deflater(window, level));
        codec::deflate(c, payload, false)
    }

    /// Whether frames from `shared` may be sent on this connection as they
    /// are: we keep no context (our peer expects none) and its window fits
    /// in the one we negotiated.
    pub fn accepts_shared(&self, shared: &SharedCompressor) -> bool {
        !self.deflate_takeover && shared.window <= self.window
    }

    /// Whether zlib state is held right now (for memory accounting).
    pub fn holds_state(&self) -> bool {
        self.inflater.is_some() || self.deflater.is_some()
    }
}

impl Drop for Compression {
    fn drop(&mut self) {
        if let Some(d) = self.inflater.take() {
            codec::give_inflater(d);
        }
        if let Some(c) = self.deflater.take() {
            codec::give_deflater(c, self.window, self.level);
        }
    }
}

/// Compresses a message once for many connections: each message with a
/// fresh LZ77 context (server_no_context_takeover, section 7.1.1.1), so the
/// bytes are the same for every recipient and a room broadcast is
/// compressed once, framed once (RSV1 set) and queued to every member for
/// which [`Compression::accepts_shared`] holds. Others get a per-connection
/// compression (or the plain frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedCompressor {
    window: u8,
    level: u8,
    threshold: usize,
}

impl SharedCompressor {
    /// Uses the server's window, level and threshold from `config`.
    pub fn new(config: &DeflateConfig) -> Self {
        SharedCompressor {
            window: codec::zlib_window(config.server_max_window_bits),
            level: config.level.min(9),
            threshold: config.threshold,
        }
    }

    /// The frame payload (trailing `00 00 ff ff` removed, section 7.2.1),
    /// or `None` when the message should go uncompressed.
    pub fn compress(&self, payload: &[u8]) -> Option<Vec<u8>> {
        if payload.len() < self.threshold {
            return None;
        }
        codec::deflate_fresh(payload, self.window, self.level, self.threshold > 0)
    }
}

#[cfg(test)]
mod tests;
