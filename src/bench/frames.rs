//! Reading the server's frames at load-generator speed.
//!
//! The core's `Connection` is the endpoint: it copies every message into a
//! fresh `Vec` and validates its UTF-8, which is right for a server or a
//! client application and too much for a load generator that must cost less
//! than the server it measures. This reader uses the core's header parser
//! (`frame::parse_header`, with all its RFC 6455 section 5.2 checks) and
//! then only looks at payloads: a frame that arrived whole in one read is
//! handed over as a slice of the read buffer, with no copy; only frames
//! split across reads are gathered, into a buffer that is reused, and only
//! when the caller asked for payloads. Server frames are never masked
//! (section 5.1), so the bytes are usable as they lie. With
//! permessage-deflate negotiated (`--deflate`), compressed messages are
//! gathered whatever `collect` says and inflated by the core's
//! `Compression` into a reused buffer.

use crate::protocol::deflate::Compression;
use crate::protocol::frame::{MAX_HEADER_LEN, parse_header};
use crate::protocol::{Error, MessageKind, Opcode};

/// The largest message gathered across reads (1009 beyond).
const MAX_MESSAGE: usize = 16 << 20;

/// What the server sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete data message. The payload is always there when the whole
    /// message came in one read; when it was split across reads it is there
    /// only if the reader collects payloads, and empty otherwise.
    Message(MessageKind, &'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// A close frame and its status code, if it had one.
    Close(Option<u16>),
}

/// The frame whose payload is arriving.
#[derive(Clone, Copy, Debug)]
struct Partial {
    opcode: Opcode,
    fin: bool,
    remaining: usize,
}

#[derive(Debug)]
pub struct FrameReader {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    frame: Option<Partial>,
    /// The data message in progress (it may span frames and reads).
    message: Option<MessageKind>,
    /// Bytes of the data message in progress, when collecting.
    data: Vec<u8>,
    /// Payload of the control frame in progress (at most 125 bytes).
    control: Vec<u8>,
    collect: bool,
    /// Set once permessage-deflate is negotiated.
    inflate: Option<Box<Inflate>>,
}

#[derive(Debug)]
struct Inflate {
    compression: Compression,
    /// The data message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
    /// Where a compressed message is inflated (reused).
    out: Vec<u8>,
}

impl Inflate {
    fn message(&mut self, compressed: &[u8]) -> Result<&[u8], Error> {
        self.out.clear();
        self.compression.inflate(compressed, &mut self.out, MAX_MESSAGE)?;
        self.compression.finish_message(&mut self.out, MAX_MESSAGE)?;
        Ok(&self.out)
    }
}

impl FrameReader {
    /// `collect`: whether messages split across reads are gathered so the
    /// caller sees their payload (broadcast needs it, echo does not).
    pub fn new(collect: bool) -> Self {
        FrameReader {
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            data: Vec::new(),
            control: Vec::new(),
            collect,
            inflate: None,
        }
    }

    /// Reads compressed messages too (the handshake negotiated them).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.inflate = Some(Box::new(Inflate {
            compression,
            compressed: false,
            out: Vec::new(),
        }));
        self
    }

    fn compressed(&self) -> bool {
        self.inflate.as_ref().is_some_and(|i| i.compressed)
    }

    /// Feeds bytes read from the server; calls `on` for each frame completed.
    pub fn feed(&mut self, mut input: &[u8], on: &mut impl FnMut(Frame<'_>)) -> Result<(), Error> {
        while !input.is_empty() {
            let Some(frame) = self.frame else {
                input = self.read_header(input, on)?;
                continue;
            };
            let n = input.len().min(frame.remaining);
            let (piece, rest) = input.split_at(n);
            input = rest;
            if frame.opcode.is_control() {
                self.control.extend_from_slice(piece);
            } else if self.collect || self.compressed() {
                if self.data.len() + n > MAX_MESSAGE {
                    return Err(Error::MessageTooLarge);
                }
                self.data.extend_from_slice(piece);
            }
            let remaining = frame.remaining - n;
            self.frame = Some(Partial { remaining, ..frame });
            if remaining == 0 {
                self.end_frame(on)?;
            }
        }
        Ok(())
    }

    /// Reads a header from `input` (completing one begun in an earlier
    /// read, if any) and returns the rest of the input. A whole unfragmented
    /// frame found in `input` is delivered straight from it.
    fn read_header<'a>(&mut self, input: &'a [u8], on: &mut impl FnMut(Frame<'_>)) -> Result<&'a [u8], Error> {
        let had = self.header_len;
        let (header, rest) = if had == 0 {
            match parse_header(input)? {
                None => {
                    self.header[..input.len()].copy_from_slice(input);
                    self.header_len = input.len();
                    return Ok(&[]);
                }
                Some((h, len)) => (h, &input[len..]),
            }
        } else {
            let take = input.len().min(MAX_HEADER_LEN - had);
            self.header[had..had + take].copy_from_slice(&input[..take]);
            match parse_header(&self.header[..had + take])? {
                None => {
                    self.header_len = had + take;
                    return Ok(&input[take..]);
                }
                Some((h, len)) => {
                    self.header_len = 0;
                    (h, &input[len - had..])
                }
            }
        };
        // Section 5.1: a server never masks. RSV1 marks a compressed
        // message (RFC 7692 section 6): only on its first frame, only if negotiated.
        if header.mask.is_some() {
            return Err(Error::BadMasking);
        }
        let starts_message = matches!(header.opcode, Opcode::Text | Opcode::Binary);
        if header.rsv1 && !(starts_message && self.inflate.is_some()) {
            return Err(Error::ReservedBits);
        }
        if let Some(inflate) = self.inflate.as_mut()
            && starts_message
        {
            inflate.compressed = header.rsv1;
        }
        let kind = match header.opcode {
            Opcode::Text | Opcode::Binary if self.message.is_some() => return Err(Error::ExpectedContinuation),
            Opcode::Text => Some(MessageKind::Text),
            Opcode::Binary => Some(MessageKind::Binary),
            Opcode::Continuation if self.message.is_none() => return Err(Error::UnexpectedContinuation),
            _ => None,
        };
        if header.payload_len > MAX_MESSAGE as u64 {
            return Err(Error::FrameTooLarge);
        }
        let payload_len = header.payload_len as usize;
        // The common case: a whole single-frame message in this read.
        if let Some(kind) = kind
            && header.fin
            && rest.len() >= payload_len
        {
            let (payload, rest) = rest.split_at(payload_len);
            match self.inflate.as_mut().filter(|i| i.compressed) {
                Some(inflate) => on(Frame::Message(kind, inflate.message(payload)?)),
                None => on(Frame::Message(kind, payload)),
            }
            return Ok(rest);
        }
        if kind.is_some() {
            self.message = kind;
            self.data.clear();
        }
        if header.opcode.is_control() {
            self.control.clear();
        }
        self.frame = Some(Partial {
            opcode: header.opcode,
            fin: header.fin,
            remaining: payload_len,
        });
        if payload_len == 0 {
            self.end_frame(on)?;
        }
        Ok(rest)
    }

    fn end_frame(&mut self, on: &mut impl FnMut(Frame<'_>)) -> Result<(), Error> {
        let frame = self.frame.take().expect("a frame in progress");
        match frame.opcode {
            Opcode::Ping => on(Frame::Ping(&self.control)),
            Opcode::Pong => on(Frame::Pong),
            Opcode::Close => {
                let code = match *self.control.as_slice() {
                    [] => None,
                    [_] => return Err(Error::InvalidClosePayload),
                    [a, b, ..] => Some(u16::from_be_bytes([a, b])),
                };
                on(Frame::Close(code));
            }
            _ if frame.fin => {
                let kind = self.message.take().expect("data frame belongs to a message");
                match self.inflate.as_mut().filter(|i| i.compressed) {
                    Some(inflate) => on(Frame::Message(kind, inflate.message(&self.data)?)),
                    None => on(Frame::Message(kind, &self.data)),
                }
                self.data.clear();
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::write_frame;

    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Message(MessageKind, Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Option<u16>),
    }

    fn feed_in_pieces(reader: &mut FrameReader, bytes: &[u8], piece: usize) -> Result<Vec<Seen>, Error> {
        let mut seen = Vec::new();
        for chunk in bytes.chunks(piece) {
            reader.feed(chunk, &mut |f| {
                seen.push(match f {
                    Frame::Message(k, p) => Seen::Message(k, p.to_vec()),
                    Frame::Ping(p) => Seen::Ping(p.to_vec()),
                    Frame::Pong => Seen::Pong,
                    Frame::Close(c) => Seen::Close(c),
                })
            })?;
        }
        Ok(seen)
    }

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, Opcode::Text, true, false, None, b"hello");
        write_frame(&mut out, Opcode::Binary, true, false, None, &[7u8; 300]);
        write_frame(&mut out, Opcode::Ping, true, false, None, b"p");
        write_frame(&mut out, Opcode::Text, false, false, None, b"frag");
        write_frame(&mut out, Opcode::Pong, true, false, None, b"");
        write_frame(&mut out, Opcode::Continuation, true, false, None, b"mented");
        write_frame(&mut out, Opcode::Binary, true, false, None, &[1u8; 70_000]);
        write_frame(&mut out, Opcode::Text, true, false, None, b"");
        write_frame(&mut out, Opcode::Close, true, false, None, &1000u16.to_be_bytes());
        out
    }

    #[test]
    fn every_split_point_gives_the_same_frames_when_collecting() {
        let bytes = stream();
        let whole = feed_in_pieces(&mut FrameReader::new(true), &bytes, bytes.len()).unwrap();
        assert_eq!(
            whole,
            vec![
                Seen::Message(MessageKind::Text, b"hello".to_vec()),
                Seen::Message(MessageKind::Binary, vec![7; 300]),
                Seen::Ping(b"p".to_vec()),
                Seen::Pong,
                Seen::Message(MessageKind::Text, b"fragmented".to_vec()),
                Seen::Message(MessageKind::Binary, vec![1; 70_000]),
                Seen::Message(MessageKind::Text, Vec::new()),
                Seen::Close(Some(1000)),
            ]
        );
        for piece in [1, 2, 3, 5, 13, 14, 15, 64, 1000, 4096] {
            assert_eq!(
                feed_in_pieces(&mut FrameReader::new(true), &bytes, piece).unwrap(),
                whole,
                "{piece}"
            );
        }
    }

    #[test]
    fn without_collecting_split_messages_are_counted_not_copied() {
        let bytes = stream();
        let seen = feed_in_pieces(&mut FrameReader::new(false), &bytes, 7).unwrap();
        let kinds: Vec<_> = seen
            .iter()
            .map(|s| match s {
                Seen::Message(k, p) => (Some(*k), p.len()),
                _ => (None, 0),
            })
            .collect();
        assert_eq!(kinds.len(), 8);
        // Split messages come with no payload; control payloads are kept.
        assert_eq!(kinds[1], (Some(MessageKind::Binary), 0));
        assert_eq!(seen[2], Seen::Ping(b"p".to_vec()));
        assert_eq!(seen[7], Seen::Close(Some(1000)));
    }

    fn inflating(collect: bool) -> FrameReader {
        let config = crate::protocol::deflate::DeflateConfig::default();
        let answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let params = crate::protocol::deflate::client_accept(answer, &config).unwrap();
        let role = crate::protocol::Role::Client;
        FrameReader::new(collect).with_compression(Compression::new(&params, role, &config))
    }

    #[test]
    fn compressed_messages_are_inflated_at_every_split_point() {
        let compressor = crate::protocol::deflate::SharedCompressor::new(&Default::default());
        let text = b"{\"type\":\"message\",\"content\":\"hello hello hello hello\"}".repeat(20);
        let packed = compressor.compress(&text).unwrap();
        let (head, tail) = packed.split_at(packed.len() / 2);
        let mut bytes = Vec::new();
        write_frame(&mut bytes, Opcode::Text, true, true, None, &packed);
        write_frame(&mut bytes, Opcode::Text, true, false, None, b"plain");
        write_frame(&mut bytes, Opcode::Text, false, true, None, head);
        write_frame(&mut bytes, Opcode::Ping, true, false, None, b"p");
        write_frame(&mut bytes, Opcode::Continuation, true, false, None, tail);
        let expected = vec![
            Seen::Message(MessageKind::Text, text.clone()),
            Seen::Message(MessageKind::Text, b"plain".to_vec()),
            Seen::Ping(b"p".to_vec()),
            Seen::Message(MessageKind::Text, text.clone()),
        ];
        for piece in [1, 2, 7, 64, bytes.len()] {
            assert_eq!(
                feed_in_pieces(&mut inflating(true), &bytes, piece).unwrap(),
                expected,
                "{piece}"
            );
            // Compressed messages are gathered and inflated even when not collecting.
            let seen = feed_in_pieces(&mut inflating(false), &bytes, piece).unwrap();
            assert_eq!((&seen[0], &seen[3]), (&expected[0], &expected[3]), "{piece}");
        }
        // RSV1 on a continuation or a control frame is still an error.
        let mut bad = Vec::new();
        write_frame(&mut bad, Opcode::Ping, true, true, None, b"");
        assert_eq!(
            feed_in_pieces(&mut inflating(true), &bad, 100),
            Err(Error::ReservedBits)
        );
    }

    #[test]
    fn refuses_what_a_server_must_not_send() {
        let mut masked = Vec::new();
        write_frame(&mut masked, Opcode::Text, true, false, Some([1, 2, 3, 4]), b"x");
        assert_eq!(
            feed_in_pieces(&mut FrameReader::new(true), &masked, 100),
            Err(Error::BadMasking)
        );
        let mut continuation = Vec::new();
        write_frame(&mut continuation, Opcode::Continuation, true, false, None, b"x");
        assert_eq!(
            feed_in_pieces(&mut FrameReader::new(true), &continuation, 1),
            Err(Error::UnexpectedContinuation)
        );
        assert_eq!(
            feed_in_pieces(&mut FrameReader::new(true), &[0xC1, 0], 1),
            Err(Error::ReservedBits)
        );
        let mut huge = Vec::new();
        crate::protocol::frame::write_header(
            &mut huge,
            &crate::protocol::frame::FrameHeader {
                fin: true,
                rsv1: false,
                opcode: Opcode::Binary,
                mask: None,
                payload_len: 1 << 40,
            },
        );
        assert_eq!(
            feed_in_pieces(&mut FrameReader::new(false), &huge, 3),
            Err(Error::FrameTooLarge)
        );
    }
}
