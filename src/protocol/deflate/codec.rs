//! The zlib streams behind permessage-deflate (flate2 over zlib-rs, see
//! `docs/deflate.md`): bounded inflation, whole-message compression, and a
//! small per-thread pool of idle streams.
//!
//! The pool is why a connection without context takeover holds no zlib
//! state between messages: its stream goes back to the pool at the end of
//! each message and the next message (of any connection on this thread)
//! takes it again, so the ~50-380 KB of zlib state is allocated once per
//! thread instead of once per connection, and never re-initialised from
//! scratch on the hot path (a reset costs about half of a fresh stream).

use std::cell::RefCell;

use flate2::{Compress, Compression as Level, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::error::Error;

/// The empty stored block a sync flush ends with: removed by the sender
/// (RFC 7692 section 7.2.1), appended by the receiver (7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Inflate always uses the largest window: it decodes every window a peer
/// may use (8..=15), and zlib-rs allocates its 32 KiB window whatever the
/// setting, so a smaller one would save nothing.
const INFLATE_WINDOW: u8 = 15;

/// Smallest growth step of an inflate output buffer.
const MIN_GROW: usize = 256;

/// Idle streams kept per thread; more are freed.
const POOL_INFLATERS: usize = 8;
const POOL_DEFLATERS: usize = 2;

/// The zlib window for a negotiated `*_max_window_bits`. zlib cannot
/// deflate with 8 and uses 9, whose matches reach at most
/// 512 - 262 (MIN_LOOKAHEAD) = 250 bytes back: within the 256 bytes a
/// window-8 peer keeps, so 9 honours a negotiated 8 (section 7.1.2).
pub(crate) fn zlib_window(bits: u8) -> u8 {
    bits.clamp(9, 15)
}

/// Inflates `input`, appending to `out` and failing as soon as
/// `out.len()` would pass `limit`: `out` never grows beyond `limit + 1`
/// bytes of capacity, whatever the compression ratio (deflate bombs).
pub(crate) fn inflate(d: &mut Decompress, mut input: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), Error> {
    loop {
        if out.len() == out.capacity() {
            // One byte of headroom past the limit tells "exactly at the
            // limit" from "over it".
            let room = limit.saturating_add(1).saturating_sub(out.len());
            if room == 0 {
                return Err(Error::MessageTooLarge);
            }
            let grow = out.len().max(2 * input.len()).max(MIN_GROW).min(room);
            out.reserve_exact(grow);
        }
        let (before_in, before_out) = (d.total_in(), out.len());
        let result = d.decompress_vec(input, out, FlushDecompress::None);
        // Checked first: with its output full, zlib still decodes codes
        // that need no room and may fail on one past the limit, which must
        // not change the verdict with how the input was split.
        if out.len() > limit {
            return Err(Error::MessageTooLarge);
        }
        let status = result.map_err(|_| Error::BadCompressedData)?;
        let read = (d.total_in() - before_in) as usize;
        input = &input[read..];
        if status == Status::StreamEnd {
            // Section 7.2.3.4: a block with BFINAL set ends the DEFLATE
            // stream; what follows in the message starts a new one. The
            // LZ77 window is lost, so a peer that flushes this way and then
            // refers back across messages fails with BadCompressedData.
            d.reset(false);
        }
        let room_left = out.len() < out.capacity();
        if input.is_empty() && room_left {
            return Ok(());
        }
        if room_left && read == 0 && out.len() == before_out && status != Status::StreamEnd {
            // No progress with both input and room: cannot happen with a
            // sane stream; refuse rather than spin.
            return Err(Error::BadCompressedData);
        }
    }
}

/// Compresses a whole message (section 7.2.1): the payload, a sync flush,
/// and the trailing `00 00 ff ff` removed. With `only_if_smaller`, returns
/// `None` as soon as the output is not smaller than the payload; the
/// stream must then be reset before reuse.
pub(crate) fn deflate(c: &mut Compress, payload: &[u8], only_if_smaller: bool) -> Option<Vec<u8>> {
    let mut out = if only_if_smaller {
        // Output + tail shorter than payload + tail, or not worth sending.
        Vec::with_capacity(payload.len() + TAIL.len())
    } else {
        Vec::with_capacity(payload.len() / 2 + 64)
    };
    let start = c.total_in();
    loop {
        let done = (c.total_in() - start) as usize;
        c.compress_vec(&payload[done..], &mut out, FlushCompress::Sync)
            .expect("deflate on a valid stream cannot fail");
        let consumed = (c.total_in() - start) as usize == payload.len();
        if consumed && out.len() < out.capacity() {
            break;
        }
        if only_if_smaller {
            return None;
        }
        out.reserve(out.capacity());
    }
    debug_assert!(out.ends_with(&TAIL), "sync flush ends with an empty stored block");
    out.truncate(out.len() - TAIL.len());
    (!only_if_smaller || out.len() < payload.len()).then_some(out)
}

/// Compresses `payload` with a fresh LZ77 context (no context takeover),
/// using a pooled stream. With `only_if_smaller`, `None` when the result is
/// not smaller than the payload (the message then goes uncompressed).
pub(crate) fn deflate_fresh(payload: &[u8], window: u8, level: u8, only_if_smaller: bool) -> Option<Vec<u8>> {
    let mut c = take_deflater(window, level);
    let out = deflate(&mut c, payload, only_if_smaller);
    give_deflater(c, window, level);
    out
}

/// Boxed so a stream moves between the pool and a connection without
/// copying, and an idle `Compression` stays a few words.
#[allow(clippy::vec_box)]
struct Pool {
    inflaters: Vec<Box<Decompress>>,
    deflaters: Vec<(u8, u8, Box<Compress>)>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool { inflaters: Vec::new(), deflaters: Vec::new() })
    };
}

/// An inflate stream ready for a new message.
pub(crate) fn take_inflater() -> Box<Decompress> {
    POOL.try_with(|p| p.borrow_mut().inflaters.pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Decompress::new_with_window_bits(false, INFLATE_WINDOW)))
}

/// Resets `d` and keeps it for reuse on this thread (or frees it).
pub(crate) fn give_inflater(mut d: Box<Decompress>) {
    d.reset(false);
    let _ = POOL.try_with(|p| {
        let pool = &mut p.borrow_mut().inflaters;
        if pool.len() < POOL_INFLATERS {
            pool.push(d);
        }
    });
}

/// A deflate stream with `window` bits (9..=15) and `level`, ready for a new message.
pub(crate) fn take_deflater(window: u8, level: u8) -> Box<Compress> {
    let pooled = POOL.try_with(|p| {
        let pool = &mut p.borrow_mut().deflaters;
        let i = pool.iter().rposition(|&(w, l, _)| (w, l) == (window, level))?;
        Some(pool.swap_remove(i).2)
    });
    pooled
        .ok()
        .flatten()
        .unwrap_or_else(|| Box::new(Compress::new_with_window_bits(Level::new(level.into()), false, window)))
}

/// Resets `c` and keeps it for reuse on this thread (or frees it).
pub(crate) fn give_deflater(mut c: Box<Compress>, window: u8, level: u8) {
    c.reset();
    let _ = POOL.try_with(|p| {
        let pool = &mut p.borrow_mut().deflaters;
        if pool.len() < POOL_DEFLATERS {
            pool.push((window, level, c));
        }
    });
}

/// Idle pooled streams on this thread: (inflaters, deflaters).
#[cfg(test)]
pub(crate) fn pooled() -> (usize, usize) {
    POOL.with_borrow(|p| (p.inflaters.len(), p.deflaters.len()))
}
