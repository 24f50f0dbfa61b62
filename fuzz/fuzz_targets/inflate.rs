//! permessage-deflate inflation (RFC 7692 section 7.2.2) through
//! `Connection`, both roles, with and without context takeover.
//!
//! Input: see `roomcast_fuzz::Input`. Config byte:
//! - bits 0-1: frame size limit (125, 1000, 16384, 65536);
//! - bits 2-3: message size limit (1, 125, 4096, 65536), after inflation;
//! - bit 4: the peer keeps its LZ77 context between messages (takeover);
//! - bit 5: record mode (below) instead of raw frames.
//!
//! Raw mode: the stream is frames, as on the wire. Record mode lets the
//! fuzzer work on DEFLATE bytes without keeping frame headers consistent:
//! the stream is records, each one frame of a compressed message:
//!
//! ```text
//! byte 0     bits 0-5: payload length n (0..=63), bit 6: FIN,
//!            bit 7: on a message's first frame, Text (else Binary);
//!                   on a continuation, a Ping comes before the frame
//! byte 1..   n bytes of DEFLATE data (fewer if the stream ends)
//! ```
//!
//! Invariants: those of the `connection` target (no panic, segmentation
//! changes nothing, Closed after an error, Text is UTF-8, sizes within the
//! limits, our output is valid), and in record mode a differential check:
//! every message equals what a plain one-call inflate of its bytes gives,
//! and a message that fails, fails with the error that comes first in the
//! inflated bytes (bad UTF-8 in the first limit + 1 bytes, else the size,
//! else the corrupt data).

#![no_main]

use flate2::{Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;
use roomcast::protocol::deflate::{Compression, DeflateConfig, DeflateParams};
use roomcast::protocol::frame::{Opcode, write_frame};
use roomcast::protocol::{Connection, Error, Event, Limits, Role};
use roomcast_fuzz::connection::{Run, check_run};
use roomcast_fuzz::{Input, split};

const FRAME_LIMITS: [usize; 4] = [125, 1000, 16384, 65536];
const MESSAGE_LIMITS: [usize; 4] = [1, 125, 4096, 65536];

/// The mask clients put on the record-mode frames (RFC 6455 section 5.7).
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The empty stored block a sync flush ends with (section 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let config = input.config;
    let limits = Limits {
        max_frame_size: FRAME_LIMITS[usize::from(config & 3)],
        max_message_size: MESSAGE_LIMITS[usize::from(config >> 2 & 3)],
    };
    let takeover = config & 0x10 != 0;
    let record_mode = config & 0x20 != 0;
    let params = DeflateParams {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: None,
        client_max_window_bits: None,
    };
    let deflate_config = DeflateConfig::default();
    for role in [Role::Server, Role::Client] {
        let (stream, messages) = if record_mode {
            frames_from_records(input.stream, role)
        } else {
            (input.stream.to_vec(), Vec::new())
        };
        let new = || Connection::new(role, limits).with_compression(Compression::new(&params, role, &deflate_config));
        let pieces = split(input.plan, &stream);
        let chunked = Run::feed(new(), &pieces, input.plan & 0x10 != 0);
        let whole = Run::feed(new(), &[&stream], false);
        check_run(&chunked, &whole, limits);
        if record_mode {
            differential(&whole, &messages, takeover, limits.max_message_size);
        }
    }
});

/// A compressed message as the records gave it.
struct Message {
    text: bool,
    /// The DEFLATE bytes of all its frames.
    payload: Vec<u8>,
    /// Its last frame had FIN.
    finished: bool,
}

/// Builds the frames the peer of `role` would send, and the messages they carry.
fn frames_from_records(mut records: &[u8], role: Role) -> (Vec<u8>, Vec<Message>) {
    let mask = (role == Role::Server).then_some(KEY);
    let mut out = Vec::new();
    let mut messages: Vec<Message> = Vec::new();
    while let [head, rest @ ..] = records {
        let len = usize::from(head & 0x3F).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        records = tail;
        let fin = head & 0x40 != 0;
        let flag = head & 0x80 != 0;
        let first = messages.last().is_none_or(|m| m.finished);
        if first {
            messages.push(Message {
                text: flag,
                payload: Vec::new(),
                finished: false,
            });
            let opcode = if flag { Opcode::Text } else { Opcode::Binary };
            write_frame(&mut out, opcode, fin, true, mask, payload);
        } else {
            if flag {
                write_frame(&mut out, Opcode::Ping, true, false, mask, b"p");
            }
            write_frame(&mut out, Opcode::Continuation, fin, false, mask, payload);
        }
        let message = messages.last_mut().expect("pushed above");
        message.payload.extend_from_slice(payload);
        message.finished = fin;
    }
    (out, messages)
}

/// What the reference inflater made of a message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Ok(Vec<u8>),
    /// More than the limit came out (the bytes up to limit + 1 are kept).
    TooLarge(Vec<u8>),
    /// Corrupt data, with what came out before it.
    Bad(Vec<u8>),
}

impl Outcome {
    fn output(&self) -> &[u8] {
        match self {
            Outcome::Ok(out) | Outcome::TooLarge(out) | Outcome::Bad(out) => out,
        }
    }
}

/// The reference: the whole message inflated in one call on a plain
/// stream, none of `Compression`'s piecewise feeding, pooling or limit
/// bookkeeping. It uses the same zlib engine as roomcast (zlib-rs), so what
/// is tested is roomcast's use of it, not the engine.
struct Reference {
    inflater: Decompress,
}

impl Reference {
    fn new() -> Self {
        Reference {
            inflater: Decompress::new(false),
        }
    }

    /// A new DEFLATE stream: no window.
    fn reset(&mut self) {
        self.inflater.reset(false);
    }

    /// The sync-flush tail appended to a finished non-empty message, at most
    /// `limit + 1` bytes out, and a block with BFINAL ending the DEFLATE
    /// stream, after which a new stream starts (RFC 7692 section 7.2.3.4).
    fn message(&mut self, message: &Message, limit: usize) -> Outcome {
        let mut input = message.payload.clone();
        if message.finished && !input.is_empty() {
            input.extend_from_slice(&TAIL);
        }
        let mut input = &input[..];
        let mut out = Vec::with_capacity(limit + 1);
        loop {
            let before = (self.inflater.total_in(), out.len());
            let status = self.inflater.decompress_vec(input, &mut out, FlushDecompress::None);
            let read = (self.inflater.total_in() - before.0) as usize;
            input = &input[read..];
            if out.len() > limit {
                out.truncate(limit + 1);
                return Outcome::TooLarge(out);
            }
            match status {
                Err(_) => return Outcome::Bad(out),
                Ok(Status::StreamEnd) => {
                    self.inflater.reset(false);
                    if input.is_empty() {
                        return Outcome::Ok(out);
                    }
                }
                Ok(_) if input.is_empty() => return Outcome::Ok(out),
                // Input left, room left, nothing done: a stuck stream.
                Ok(_) if read == 0 && out.len() == before.1 => return Outcome::Bad(out),
                Ok(_) => {}
            }
        }
    }
}

/// UTF-8 that may still be completed by more bytes.
fn utf8_prefix_ok(bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// Checks the whole-stream run of record mode against the reference.
fn differential(run: &Run, messages: &[Message], takeover: bool, limit: usize) {
    let delivered: Vec<&Vec<u8>> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Text(d) | Event::Binary(d) => Some(d),
            _ => None,
        })
        .collect();
    let mut reference = Reference::new();
    for (i, message) in messages.iter().enumerate() {
        if !takeover {
            reference.reset();
        }
        let expected = reference.message(message, limit);
        if let Some(got) = delivered.get(i) {
            assert_eq!(expected, Outcome::Ok(got.to_vec()), "message {i} inflated differently");
            continue;
        }
        // The first message not delivered: it failed, or it is unfinished.
        // Failures are expected in the order of the inflated bytes: a bad
        // UTF-8 byte (the one past the limit included: inflation stops
        // there), else the byte past the limit, else the corrupt input
        // after all the output.
        let out = expected.output();
        let want = if message.text && !utf8_prefix_ok(out) {
            Err(Error::InvalidUtf8)
        } else {
            match &expected {
                Outcome::TooLarge(_) => Err(Error::MessageTooLarge),
                Outcome::Bad(_) => Err(Error::BadCompressedData),
                Outcome::Ok(out) if message.finished => {
                    assert!(
                        message.text && std::str::from_utf8(out).is_err(),
                        "message {i} not delivered"
                    );
                    Err(Error::InvalidUtf8)
                }
                Outcome::Ok(_) => Ok(()),
            }
        };
        assert_eq!(run.result, want, "message {i}: the reference made {expected:?}");
        return;
    }
    assert_eq!(delivered.len(), messages.iter().filter(|m| m.finished).count());
}
