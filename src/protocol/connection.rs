//! The WebSocket connection state machine (RFC 6455 sections 5-7), sans-IO.
//!
//! Four doors, as in quinn-proto: `receive` takes bytes from the peer and
//! yields events, `send_*`/`close` take commands, `take_output` hands back
//! bytes to write, and the caller owns time (timeouts live in the I/O loop).
//!
//! Payloads are processed as they stream in: each piece is unmasked,
//! inflated if compressed, size-checked and UTF-8-validated before the next
//! piece is read, so the connection fails at the first bad byte and never
//! buffers more than a message's own size. The caller keeps no read buffer:
//! every byte handed to `receive` is consumed.

use super::close::{CloseCode, CloseFrame, close_payload, parse_close_payload};
use super::deflate::Compression;
use super::error::Error;
use super::frame::{FrameHeader, MAX_HEADER_LEN, Opcode, encode_header, parse_header, write_frame};
use super::mask::{apply_mask, random_key};
use super::utf8::Utf8Validator;

/// Which end of the connection this is; it decides masking (section 5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// Size limits, checked as bytes arrive. A connection keeps them in 32
/// bits: a limit past 4 GiB acts as 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload accepted (1009 beyond).
    pub max_frame_size: usize,
    /// Largest message accepted, after reassembly and inflation (1009 beyond).
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: 64 * 1024,
            max_message_size: 64 * 1024,
        }
    }
}

/// Where the close handshake stands (section 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// Both close frames were exchanged, or the connection failed. Nothing
    /// more is sent or received; the caller flushes output and closes TCP.
    Closed,
}

/// Whether a message is text (valid UTF-8, guaranteed) or binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Binary,
}

impl MessageKind {
    pub fn opcode(self) -> Opcode {
        match self {
            MessageKind::Text => Opcode::Text,
            MessageKind::Binary => Opcode::Binary,
        }
    }
}

/// What the peer did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message; the bytes are valid UTF-8.
    Text(Vec<u8>),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A ping; the pong has already been queued.
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The peer's close frame (`None`: no status code). If we had not sent
    /// a close yet, the reply is already queued.
    Close(Option<CloseFrame>),
}

/// What `read_event_in_place` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InPlace {
    /// An event, as `read_event` returns it.
    Event(Event),
    /// A complete message that arrived as one unfragmented, uncompressed
    /// frame within the input: its payload, unmasked and (for text)
    /// validated, is `input[payload]`. Nothing was copied.
    Message {
        kind: MessageKind,
        payload: std::ops::Range<usize>,
    },
}

/// The frame whose payload is being received.
#[derive(Clone, Copy, Debug)]
struct FrameState {
    opcode: Opcode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    /// Payload bytes already seen, modulo 4: the mask phase.
    offset: u8,
}

/// A data message being reassembled from its frames.
#[derive(Debug)]
struct Assembly {
    kind: MessageKind,
    compressed: bool,
    data: Vec<u8>,
    utf8: Utf8Validator,
}

/// One WebSocket connection, either role.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    limits: Caps,
    header: [u8; MAX_HEADER_LEN],
    header_len: u8,
    frame: Option<FrameState>,
    /// The data message being assembled: boxed, because an idle connection
    /// (or one whose messages arrive as whole frames) has none.
    message: Option<Box<Assembly>>,
    compression: Option<Box<Compression>>,
    /// Boxed on first use: most connections never need it.
    side: Option<Box<Side>>,
}

/// What a connection holds only now and then: an idle one keeps a word
/// for both, not two vectors.
#[derive(Debug, Default)]
struct Side {
    /// Payload of the control frame in progress (at most 125 bytes).
    control: Vec<u8>,
    /// Frames the connection wrote itself (pong, close) or by `send`.
    output: Vec<u8>,
}

/// `Limits` in 8 bytes.
#[derive(Clone, Copy, Debug)]
struct Caps {
    max_frame_size: u32,
    max_message_size: u32,
}

impl Caps {
    fn new(limits: Limits) -> Self {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Caps {
            max_frame_size: cap(limits.max_frame_size),
            max_message_size: cap(limits.max_message_size),
        }
    }
}

impl Connection {
    pub fn new(role: Role, limits: Limits) -> Self {
        Connection {
            role,
            state: State::Open,
            limits: Caps::new(limits),
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            frame: None,
            message: None,
            compression: None,
            side: None,
        }
    }

    /// Enables permessage-deflate with the negotiated parameters.
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = Some(Box::new(compression));
        self
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_frame_size: self.limits.max_frame_size as usize,
            max_message_size: self.limits.max_message_size as usize,
        }
    }

    /// Whether data frames may still be sent (no close sent yet).
    pub fn can_send(&self) -> bool {
        self.state == State::Open
    }

    /// Whether permessage-deflate is in use.
    pub fn is_compressed(&self) -> bool {
        self.compression.is_some()
    }

    /// The negotiated permessage-deflate state, if any.
    pub fn compression(&self) -> Option<&Compression> {
        self.compression.as_deref()
    }

    /// Whether bytes are waiting in `take_output`.
    pub fn has_output(&self) -> bool {
        self.side.as_ref().is_some_and(|s| !s.output.is_empty())
    }

    fn side(&mut self) -> &mut Side {
        self.side.get_or_insert_with(Box::default)
    }

    fn take_control(&mut self) -> Vec<u8> {
        self.side
            .as_mut()
            .map(|s| std::mem::take(&mut s.control))
            .unwrap_or_default()
    }

    /// Takes the bytes to write to the peer, in order.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.side
            .as_mut()
            .map(|s| std::mem::take(&mut s.output))
            .unwrap_or_default()
    }

    /// Bytes buffered for a message in progress (for memory accounting).
    pub fn buffered(&self) -> usize {
        self.message.as_ref().map_or(0, |m| m.data.capacity()) + self.side.as_ref().map_or(0, |s| s.control.capacity())
    }

    /// Feeds bytes received from the peer, pushing what happened to
    /// `events`. On a protocol violation the close frame with the right code
    /// is queued, the state becomes `Closed` and the error is returned; the
    /// caller flushes output and closes the TCP connection.
    pub fn receive(&mut self, mut input: &[u8], events: &mut Vec<Event>) -> Result<(), Error> {
        while !input.is_empty() {
            let (used, event) = self.read_event(input)?;
            input = &input[used..];
            events.extend(event);
        }
        Ok(())
    }

    /// Consumes input up to and including the next complete event, and
    /// returns how many bytes it used and the event, if one completed.
    ///
    /// Taking one event at a time lets the application answer messages that
    /// arrived before a protocol error or a close frame in the same read:
    /// its replies are queued before the close frame, as the peer expects.
    pub fn read_event(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Error> {
        if self.state == State::Closed {
            return Ok((input.len(), None));
        }
        let mut rest = input;
        let result = self.read_event_inner(&mut rest);
        let used = input.len() - rest.len();
        result.map(|event| (used, event)).map_err(|err| self.fail(err))
    }

    /// As `read_event`, but a message that lies whole in `input` as a
    /// single frame (the common case for small and medium messages) is
    /// unmasked in place and handed back as a range of `input`, without
    /// being copied or allocated. Anything else takes `read_event`'s path;
    /// the events, errors and output are the same either way.
    pub fn read_event_in_place(&mut self, input: &mut [u8]) -> Result<(usize, Option<InPlace>), Error> {
        if self.state != State::Closed
            && self.frame.is_none()
            && self.header_len == 0
            && self.message.is_none()
            && let Ok(Some((h, len))) = parse_header(input)
            && h.fin
            && !h.rsv1
            && matches!(h.opcode, Opcode::Text | Opcode::Binary)
            && (input.len() - len) as u64 >= h.payload_len
        {
            // Straight-line rather than a closure over `Result`s: the
            // header and the outcome stay in registers (returned through
            // memory they cost two store-forwarding stalls per message).
            if let Err(err) = self.check_data_header(&h) {
                return Err(self.fail(err));
            }
            let end = len + h.payload_len as usize;
            let payload = &mut input[len..end];
            if let Some(key) = h.mask {
                apply_mask(payload, key, 0);
            }
            let kind = if h.opcode == Opcode::Text {
                if super::utf8::validate(payload).is_err() {
                    return Err(self.fail(Error::InvalidUtf8));
                }
                MessageKind::Text
            } else {
                MessageKind::Binary
            };
            return Ok((
                end,
                Some(InPlace::Message {
                    kind,
                    payload: len..end,
                }),
            ));
        }
        self.read_event(input)
            .map(|(used, event)| (used, event.map(InPlace::Event)))
    }

    /// After a protocol error: the close frame with its code is queued (if
    /// we had sent none), and the connection is closed.
    fn fail(&mut self, err: Error) -> Error {
        if self.state == State::Open {
            self.push_close(err.close_code(), err.reason());
        }
        self.state = State::Closed;
        self.message = None;
        self.frame = None;
        err
    }

    /// The rules a data frame's header must meet whatever the input's shape.
    fn check_data_header(&self, h: &FrameHeader) -> Result<(), Error> {
        // Section 5.1: clients mask, servers do not.
        if h.mask.is_some() != (self.role == Role::Server) {
            return Err(Error::BadMasking);
        }
        if h.payload_len > u64::from(self.limits.max_frame_size) {
            return Err(Error::FrameTooLarge);
        }
        if h.payload_len > u64::from(self.limits.max_message_size) {
            return Err(Error::MessageTooLarge);
        }
        Ok(())
    }

    fn read_event_inner(&mut self, input: &mut &[u8]) -> Result<Option<Event>, Error> {
        while !input.is_empty() && self.state != State::Closed {
            let event = match self.frame {
                None => {
                    let had = self.header_len as usize;
                    let take = input.len().min(MAX_HEADER_LEN - had);
                    self.header[had..had + take].copy_from_slice(&input[..take]);
                    let buffered = &self.header[..had + take];
                    match parse_header(buffered)? {
                        None => {
                            self.header_len = buffered.len() as u8;
                            *input = &input[take..];
                            None
                        }
                        Some((header, len)) => {
                            self.header_len = 0;
                            *input = &input[len - had..];
                            self.start_frame(header)?
                        }
                    }
                }
                Some(frame) => {
                    let n = input.len().min(frame.remaining as usize);
                    let (piece, rest) = input.split_at(n);
                    *input = rest;
                    self.payload(frame, piece)?;
                    let frame = self.frame.as_mut().expect("frame in progress");
                    frame.remaining -= n as u64;
                    frame.offset = ((frame.offset as usize + n) % 4) as u8;
                    if frame.remaining == 0 { self.end_frame()? } else { None }
                }
            };
            if event.is_some() {
                return Ok(event);
            }
        }
        Ok(None)
    }

    /// Applies the rules that depend on connection state to a new header.
    fn start_frame(&mut self, h: FrameHeader) -> Result<Option<Event>, Error> {
        // Section 5.1: clients mask, servers do not.
        if h.mask.is_some() != (self.role == Role::Server) {
            return Err(Error::BadMasking);
        }
        if h.payload_len > u64::from(self.limits.max_frame_size) {
            return Err(Error::FrameTooLarge);
        }
        match h.opcode {
            Opcode::Text | Opcode::Binary => {
                if self.message.is_some() {
                    return Err(Error::ExpectedContinuation);
                }
                if h.rsv1 && self.compression.is_none() {
                    return Err(Error::ReservedBits);
                }
                let kind = if h.opcode == Opcode::Text {
                    MessageKind::Text
                } else {
                    MessageKind::Binary
                };
                self.message = Some(Box::new(Assembly {
                    kind,
                    compressed: h.rsv1,
                    data: Vec::new(),
                    utf8: Utf8Validator::new(),
                }));
            }
            Opcode::Continuation => {
                if self.message.is_none() {
                    return Err(Error::UnexpectedContinuation);
                }
                if h.rsv1 {
                    return Err(Error::CompressedContinuation);
                }
            }
            _ if h.rsv1 => return Err(Error::CompressedContinuation),
            _ => {}
        }
        if let Some(msg) = &mut self.message
            && !h.opcode.is_control()
            && !msg.compressed
        {
            // Fail before buffering when the declared size already breaks the limit.
            if msg.data.len() as u64 + h.payload_len > u64::from(self.limits.max_message_size) {
                return Err(Error::MessageTooLarge);
            }
            // Bounded by the limit above; capped so a header alone cannot
            // make us allocate a large buffer ahead of its bytes.
            msg.data.reserve((h.payload_len as usize).min(64 * 1024));
        }
        self.frame = Some(FrameState {
            opcode: h.opcode,
            fin: h.fin,
            mask: h.mask,
            remaining: h.payload_len,
            offset: 0,
        });
        if h.payload_len == 0 {
            return self.end_frame();
        }
        Ok(None)
    }

    /// Processes one piece of the current frame's payload.
    fn payload(&mut self, frame: FrameState, piece: &[u8]) -> Result<(), Error> {
        if frame.opcode.is_control() {
            let control = &mut self.side().control;
            let start = control.len();
            control.extend_from_slice(piece);
            if let Some(key) = frame.mask {
                apply_mask(&mut control[start..], key, frame.offset.into());
            }
            return Ok(());
        }
        let msg = self.message.as_mut().expect("data frame belongs to a message");
        let start = msg.data.len();
        let mut inflated = Ok(());
        if msg.compressed {
            let inflater = self.compression.as_mut().expect("compressed implies negotiated");
            let limit = self.limits.max_message_size as usize;
            inflated = match frame.mask {
                None => inflater.inflate(piece, &mut msg.data, limit),
                Some(key) => {
                    // Unmask through a small stack buffer: the compressed bytes
                    // are needed only until the inflater has consumed them.
                    let mut scratch = [0u8; 4096];
                    let mut offset = usize::from(frame.offset);
                    piece.chunks(scratch.len()).try_for_each(|chunk| {
                        let buf = &mut scratch[..chunk.len()];
                        buf.copy_from_slice(chunk);
                        apply_mask(buf, key, offset);
                        offset += chunk.len();
                        inflater.inflate(buf, &mut msg.data, limit)
                    })
                }
            };
        } else {
            msg.data.extend_from_slice(piece);
            if let Some(key) = frame.mask {
                apply_mask(&mut msg.data[start..], key, frame.offset.into());
            }
        }
        // What was inflated before an inflate error came first in the
        // stream: its UTF-8 is judged first, so the error does not depend
        // on how the bytes were split into reads.
        if msg.kind == MessageKind::Text {
            msg.utf8.feed(&msg.data[start..]).map_err(|_| Error::InvalidUtf8)?;
        }
        inflated
    }

    fn end_frame(&mut self) -> Result<Option<Event>, Error> {
        let frame = self.frame.take().expect("frame in progress");
        let event = match frame.opcode {
            Opcode::Ping => {
                let payload = self.take_control();
                if self.state == State::Open {
                    self.push_frame(Opcode::Pong, &payload);
                }
                Event::Ping(payload)
            }
            Opcode::Pong => Event::Pong(self.take_control()),
            Opcode::Close => {
                let payload = self.take_control();
                let close = parse_close_payload(&payload)?;
                if self.state == State::Open {
                    // Section 5.5.1: reply with a close frame, echoing the code.
                    match &close {
                        Some(c) => self.push_close(c.code, ""),
                        None => self.push_frame(Opcode::Close, &[]),
                    }
                }
                self.state = State::Closed;
                Event::Close(close)
            }
            _ if frame.fin => {
                let mut msg = *self.message.take().expect("data frame belongs to a message");
                if msg.compressed {
                    let inflater = self.compression.as_mut().expect("compressed implies negotiated");
                    let start = msg.data.len();
                    let finished = inflater.finish_message(&mut msg.data, self.limits.max_message_size as usize);
                    if msg.kind == MessageKind::Text {
                        msg.utf8.feed(&msg.data[start..]).map_err(|_| Error::InvalidUtf8)?;
                    }
                    finished?;
                }
                match msg.kind {
                    MessageKind::Text => {
                        msg.utf8.finish().map_err(|_| Error::InvalidUtf8)?;
                        Event::Text(msg.data)
                    }
                    MessageKind::Binary => Event::Binary(msg.data),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(event))
    }

    fn mask_key(&self) -> Option<[u8; 4]> {
        (self.role == Role::Client).then(random_key)
    }

    fn push_frame(&mut self, opcode: Opcode, payload: &[u8]) {
        let mask = self.mask_key();
        write_frame(&mut self.side().output, opcode, true, false, mask, payload);
    }

    fn push_close(&mut self, code: CloseCode, reason: &str) {
        self.push_frame(Opcode::Close, &close_payload(code, reason));
    }

    /// Queues a data message, compressed when negotiated and worthwhile.
    /// Ignored once a close has been sent (section 5.5.1).
    pub fn send(&mut self, kind: MessageKind, payload: &[u8]) {
        let mut output = self.take_output();
        self.send_into(kind, payload, &mut output);
        if !output.is_empty() {
            self.side().output = output;
        }
    }

    /// As `send`, but the frame is appended to `out` instead of this
    /// connection's output: for a caller that keeps its own send buffer and
    /// has taken what `take_output` held first (the order of frames is the
    /// caller's to keep). Nothing is written unless the connection is open.
    pub fn send_into(&mut self, kind: MessageKind, payload: &[u8], out: &mut Vec<u8>) {
        if !self.can_send() {
            return;
        }
        let mask = self.mask_key();
        if let Some(deflater) = self.compression.as_mut()
            && let Some(compressed) = deflater.compress(payload)
        {
            write_frame(out, kind.opcode(), true, true, mask, &compressed);
            return;
        }
        write_frame(out, kind.opcode(), true, false, mask, payload);
    }

    /// The header of an uncompressed, unmasked frame of `len` payload
    /// bytes, for a caller that writes header and payload itself (straight
    /// from its own buffer, without copying the payload). `None` when a
    /// message cannot take that shape: not open, permessage-deflate in use
    /// (it may compress), or the client role (it masks).
    pub fn plain_header(&self, kind: MessageKind, len: usize) -> Option<([u8; MAX_HEADER_LEN], usize)> {
        if !self.can_send() || self.compression.is_some() || self.role == Role::Client {
            return None;
        }
        Some(encode_header(&FrameHeader {
            fin: true,
            rsv1: false,
            opcode: kind.opcode(),
            mask: None,
            payload_len: len as u64,
        }))
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(MessageKind::Text, text.as_bytes());
    }

    /// Queues a ping (payload cut to 125 bytes).
    pub fn send_ping(&mut self, payload: &[u8]) {
        if self.can_send() {
            self.push_frame(Opcode::Ping, &payload[..payload.len().min(125)]);
        }
    }

    /// Starts the close handshake (section 7.1.2). A no-op once a close was sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.state == State::Open {
            self.push_close(code, reason);
            self.state = State::CloseSent;
        }
    }
}
