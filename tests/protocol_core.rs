//! The sans-IO connection driven byte by byte: RFC examples, every
//! rejection with its close code, and streams split at every boundary.

use proptest::prelude::*;
use roomcast::protocol::frame::{Opcode, write_frame};
use roomcast::protocol::{CloseCode, CloseFrame, Connection, Error, Event, Limits, Role, State};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn client_frame(opcode: Opcode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, opcode, fin, false, Some(KEY), payload);
    out
}

fn server() -> Connection {
    Connection::new(Role::Server, Limits::default())
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> (Vec<Event>, Result<(), Error>) {
    let mut events = Vec::new();
    let result = conn.receive(bytes, &mut events);
    (events, result)
}

/// Feeds one byte at a time and collects everything.
fn feed_bytewise(conn: &mut Connection, bytes: &[u8]) -> (Vec<Event>, Result<(), Error>) {
    let mut events = Vec::new();
    for b in bytes {
        if let Err(e) = conn.receive(std::slice::from_ref(b), &mut events) {
            return (events, Err(e));
        }
    }
    (events, Ok(()))
}

/// The close code in the close frame the connection queued, if any.
fn sent_close_code(conn: &mut Connection) -> Option<u16> {
    let out = conn.take_output();
    let pos = out.iter().position(|&b| b == 0x88)?;
    let payload = &out[pos + 2..];
    Some(u16::from_be_bytes([payload[0], payload[1]]))
}

#[test]
fn rfc_masked_hello_byte_by_byte() {
    let mut conn = server();
    let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    let (events, result) = feed_bytewise(&mut conn, &bytes);
    result.unwrap();
    assert_eq!(events, [Event::Text(b"Hello".to_vec())]);
}

#[test]
fn fragments_with_interleaved_ping() {
    let mut conn = server();
    let mut bytes = client_frame(Opcode::Text, false, b"Hel");
    bytes.extend(client_frame(Opcode::Ping, true, b"p"));
    bytes.extend(client_frame(Opcode::Continuation, true, b"lo"));
    let (events, result) = feed(&mut conn, &bytes);
    result.unwrap();
    assert_eq!(events, [Event::Ping(b"p".to_vec()), Event::Text(b"Hello".to_vec())]);
    // The pong is queued, unmasked, with the ping's payload.
    assert_eq!(conn.take_output(), [0x8A, 0x01, b'p']);
}

#[test]
fn empty_frames_complete_without_payload_bytes() {
    let mut conn = server();
    let (events, result) = feed(&mut conn, &client_frame(Opcode::Binary, true, b""));
    result.unwrap();
    assert_eq!(events, [Event::Binary(vec![])]);
}

fn expect_failure(bytes: &[u8], error: Error, code: u16) {
    for bytewise in [false, true] {
        let mut conn = server();
        let (_, result) = if bytewise {
            feed_bytewise(&mut conn, bytes)
        } else {
            feed(&mut conn, bytes)
        };
        assert_eq!(result, Err(error), "bytewise={bytewise}");
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(sent_close_code(&mut conn), Some(code));
    }
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    expect_failure(&[0x81, 0x02, b'h', b'i'], Error::BadMasking, 1002);
}

#[test]
fn masked_server_frame_is_a_protocol_error_for_clients() {
    let mut conn = Connection::new(Role::Client, Limits::default());
    let (_, result) = feed(&mut conn, &client_frame(Opcode::Text, true, b"x"));
    assert_eq!(result, Err(Error::BadMasking));
    // The client's own close frame is masked.
    let out = conn.take_output();
    assert_eq!(out[0], 0x88);
    assert_eq!(out[1] & 0x80, 0x80);
}

#[test]
fn fragmentation_rules() {
    expect_failure(
        &client_frame(Opcode::Continuation, true, b"x"),
        Error::UnexpectedContinuation,
        1002,
    );
    let mut bytes = client_frame(Opcode::Text, false, b"a");
    bytes.extend(client_frame(Opcode::Binary, true, b"b"));
    expect_failure(&bytes, Error::ExpectedContinuation, 1002);
}

#[test]
fn reserved_bits_and_opcodes() {
    let mut rsv1 = client_frame(Opcode::Text, true, b"x");
    rsv1[0] |= 0x40;
    expect_failure(&rsv1, Error::ReservedBits, 1002);
    let mut rsv2 = client_frame(Opcode::Text, true, b"x");
    rsv2[0] |= 0x20;
    expect_failure(&rsv2, Error::ReservedBits, 1002);
    expect_failure(&[0x83, 0x80, 1, 2, 3, 4], Error::ReservedOpcode(3), 1002);
    expect_failure(&[0x8F, 0x80, 1, 2, 3, 4], Error::ReservedOpcode(0xF), 1002);
}

#[test]
fn control_frame_rules() {
    expect_failure(
        &client_frame(Opcode::Ping, false, b""),
        Error::FragmentedControlFrame,
        1002,
    );
    expect_failure(
        &client_frame(Opcode::Ping, true, &[0; 126]),
        Error::ControlFrameTooLong,
        1002,
    );
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    let mut conn = server();
    let frame = client_frame(
        Opcode::Text,
        true,
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
    );
    // Everything up to and including the first invalid byte (0x90 after 0xf4).
    let cut = 6 + 13;
    let (_, result) = feed(&mut conn, &frame[..cut]);
    assert_eq!(result, Err(Error::InvalidUtf8));
    assert_eq!(sent_close_code(&mut conn), Some(1007));
    // Truncated sequences across fragments are caught at the end.
    let mut bytes = client_frame(Opcode::Text, false, b"ok\xe2");
    bytes.extend(client_frame(Opcode::Continuation, true, b"\x82"));
    expect_failure(&bytes, Error::InvalidUtf8, 1007);
}

#[test]
fn size_limits_close_with_1009() {
    let limits = Limits {
        max_frame_size: 100,
        max_message_size: 150,
    };
    let mut conn = Connection::new(Role::Server, limits);
    // A header declaring too much fails before any payload is buffered.
    let (_, result) = feed(&mut conn, &client_frame(Opcode::Binary, true, &[0; 101])[..8]);
    assert_eq!(result, Err(Error::FrameTooLarge));
    assert_eq!(sent_close_code(&mut conn), Some(1009));
    let mut conn = Connection::new(Role::Server, limits);
    let mut bytes = client_frame(Opcode::Binary, false, &[0; 100]);
    bytes.extend(client_frame(Opcode::Continuation, true, &[0; 51]));
    let (_, result) = feed(&mut conn, &bytes);
    assert_eq!(result, Err(Error::MessageTooLarge));
    assert_eq!(sent_close_code(&mut conn), Some(1009));
    assert!(conn.buffered() <= 150 + 64);
}

#[test]
fn peer_initiated_close_is_echoed() {
    let mut conn = server();
    let (events, result) = feed(
        &mut conn,
        &client_frame(Opcode::Close, true, &[0x03, 0xE8, b'b', b'y', b'e']),
    );
    result.unwrap();
    assert_eq!(
        events,
        [Event::Close(Some(CloseFrame {
            code: CloseCode::NORMAL,
            reason: "bye".into()
        }))]
    );
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.take_output(), [0x88, 0x02, 0x03, 0xE8]);
    // Nothing is processed or sent after the handshake.
    let (events, _) = feed(&mut conn, &client_frame(Opcode::Text, true, b"late"));
    assert!(events.is_empty());
    conn.send_text("late");
    assert!(!conn.has_output());
}

#[test]
fn empty_close_is_answered_with_empty_close() {
    let mut conn = server();
    let (events, _) = feed(&mut conn, &client_frame(Opcode::Close, true, b""));
    assert_eq!(events, [Event::Close(None)]);
    assert_eq!(conn.take_output(), [0x88, 0x00]);
}

#[test]
fn bad_close_payloads() {
    expect_failure(
        &client_frame(Opcode::Close, true, &[0x03]),
        Error::InvalidClosePayload,
        1002,
    );
    expect_failure(
        &client_frame(Opcode::Close, true, &[0x03, 0xED]),
        Error::InvalidCloseCode(1005),
        1002,
    );
    expect_failure(
        &client_frame(Opcode::Close, true, &[0x03, 0xE8, 0xFF]),
        Error::InvalidUtf8,
        1007,
    );
}

#[test]
fn locally_initiated_close() {
    let mut conn = server();
    conn.close(CloseCode::GOING_AWAY, "shutdown");
    assert_eq!(conn.state(), State::CloseSent);
    let out = conn.take_output();
    assert_eq!(&out[..4], [0x88, 10, 0x03, 0xE9]);
    conn.send_text("dropped");
    conn.send_ping(b"dropped");
    assert!(!conn.has_output());
    let (events, _) = feed(&mut conn, &client_frame(Opcode::Close, true, &[0x03, 0xE9]));
    assert_eq!(events.len(), 1);
    assert_eq!(conn.state(), State::Closed);
    // Our close was already sent: no second one.
    assert!(!conn.has_output());
}

#[test]
fn client_frames_are_masked_with_fresh_keys() {
    let mut conn = Connection::new(Role::Client, Limits::default());
    conn.send_text("same");
    conn.send_text("same");
    let out = conn.take_output();
    let (a, b) = out.split_at(out.len() / 2);
    assert_eq!(a[1] & 0x80, 0x80);
    assert_ne!(a[2..6], b[2..6], "masking keys must differ");
    // A server decodes them.
    let mut srv = server();
    let (events, result) = feed(&mut srv, &out);
    result.unwrap();
    assert_eq!(events, [Event::Text(b"same".to_vec()), Event::Text(b"same".to_vec())]);
}

/// One message of a random valid stream: fragments plus a control frame.
#[derive(Clone, Debug)]
struct Msg {
    text: bool,
    body: Vec<u8>,
    cuts: Vec<usize>,
    ping_at: Option<usize>,
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        prop::collection::vec(any::<char>(), 0..20),
        prop::collection::vec(any::<u8>(), 0..40),
        prop::collection::vec(0usize..60, 0..3),
        prop::option::of(0usize..4),
    )
        .prop_map(|(text, chars, bytes, mut cuts, ping_at)| {
            let body = if text {
                chars.into_iter().collect::<String>().into_bytes()
            } else {
                bytes
            };
            cuts.iter_mut().for_each(|c| *c = (*c).min(body.len()));
            cuts.sort_unstable();
            Msg {
                text,
                body,
                cuts,
                ping_at,
            }
        })
}

/// Encodes the messages as client frames and returns the events they must yield.
fn encode(msgs: &[Msg]) -> (Vec<u8>, Vec<Event>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for m in msgs {
        let mut bounds = vec![0];
        bounds.extend(&m.cuts);
        bounds.push(m.body.len());
        let pieces: Vec<&[u8]> = bounds.windows(2).map(|w| &m.body[w[0]..w[1]]).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = match (i, m.text) {
                (0, true) => Opcode::Text,
                (0, false) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            if m.ping_at == Some(i) && i > 0 {
                bytes.extend(client_frame(Opcode::Ping, true, b"hb"));
                expected.push(Event::Ping(b"hb".to_vec()));
            }
            bytes.extend(client_frame(opcode, i + 1 == pieces.len(), piece));
        }
        expected.push(if m.text {
            Event::Text(m.body.clone())
        } else {
            Event::Binary(m.body.clone())
        });
    }
    (bytes, expected)
}

/// One frame with arbitrary header bits (mostly data opcodes, but any; FIN,
/// RSV1, masked or not) around a payload that is valid UTF-8 half of the time.
fn raw_frame_strategy() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![4 => Just(1u8), 4 => Just(2u8), 2 => Just(0u8), 1 => Just(9u8), 1 => 0u8..16],
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.9),
        prop::collection::vec(any::<u8>(), 0..100),
        any::<String>(),
        any::<bool>(),
    )
        .prop_map(|(opcode, fin, rsv1, masked, bytes, text, use_text)| {
            let mut payload = if use_text { text.into_bytes() } else { bytes };
            payload.truncate(130);
            let mut out = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
            let mask_bit = u8::from(masked) << 7;
            if payload.len() < 126 {
                out.push(mask_bit | payload.len() as u8);
            } else {
                out.push(mask_bit | 126);
                out.extend((payload.len() as u16).to_be_bytes());
            }
            if masked {
                out.extend(KEY);
                payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= KEY[i % 4]);
            }
            out.extend(payload);
            out
        })
}

/// Feeds `bytes` in chunks of `sizes` to one connection through
/// `read_event` and to another through `read_event_in_place`; true when
/// both yield the same events, the same error and the same output.
fn same_in_place_and_copying(bytes: &[u8], sizes: &[usize], limits: Limits) -> bool {
    use roomcast::protocol::{InPlace, MessageKind};
    let mut copying = Connection::new(Role::Server, limits);
    let mut in_place = Connection::new(Role::Server, limits);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut err_a, mut err_b) = (None, None);
    let mut pos = 0;
    for size in sizes.iter().cycle() {
        if pos >= bytes.len() {
            break;
        }
        let end = (pos + size).min(bytes.len());
        let mut chunk = &bytes[pos..end];
        while err_a.is_none() && !chunk.is_empty() {
            match copying.read_event(chunk) {
                Ok((0, None)) => break, // closed: the rest is ignored
                Ok((used, event)) => {
                    a.extend(event);
                    chunk = &chunk[used..];
                }
                Err(e) => err_a = Some(e),
            }
        }
        let mut owned = bytes[pos..end].to_vec();
        let mut at = 0;
        while err_b.is_none() && at < owned.len() {
            match in_place.read_event_in_place(&mut owned[at..]) {
                Ok((0, None)) => break,
                Ok((used, found)) => {
                    b.extend(found.map(|found| match found {
                        InPlace::Event(event) => event,
                        InPlace::Message { kind, payload } => {
                            let data = owned[at..][payload].to_vec();
                            match kind {
                                MessageKind::Text => Event::Text(data),
                                MessageKind::Binary => Event::Binary(data),
                            }
                        }
                    }));
                    at += used;
                }
                Err(e) => err_b = Some(e),
            }
        }
        pos = end;
    }
    a == b && err_a == err_b && copying.take_output() == in_place.take_output() && copying.state() == in_place.state()
}

proptest! {
    #[test]
    fn every_split_point_gives_the_same_events(msgs in prop::collection::vec(msg_strategy(), 1..5)) {
        let (bytes, expected) = encode(&msgs);
        for split in 0..=bytes.len() {
            let mut conn = server();
            let mut events = Vec::new();
            conn.receive(&bytes[..split], &mut events).unwrap();
            conn.receive(&bytes[split..], &mut events).unwrap();
            prop_assert_eq!(&events, &expected);
        }
    }

    #[test]
    fn random_chunking_gives_the_same_events(
        msgs in prop::collection::vec(msg_strategy(), 1..8),
        sizes in prop::collection::vec(1usize..17, 1..64),
    ) {
        let (bytes, expected) = encode(&msgs);
        let mut conn = server();
        let mut events = Vec::new();
        let mut rest = &bytes[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len());
            conn.receive(&rest[..n], &mut events).unwrap();
            rest = &rest[n..];
            i += 1;
        }
        prop_assert_eq!(events, expected);
    }

    #[test]
    fn in_place_reads_match_copying_reads_on_valid_streams(
        msgs in prop::collection::vec(msg_strategy(), 1..8),
        sizes in prop::collection::vec(1usize..90, 1..16),
    ) {
        let (bytes, _) = encode(&msgs);
        prop_assert!(same_in_place_and_copying(&bytes, &sizes, Limits::default()));
    }

    #[test]
    fn in_place_reads_match_copying_reads_on_arbitrary_frames(
        frames in prop::collection::vec(raw_frame_strategy(), 1..8),
        sizes in prop::collection::vec(1usize..300, 1..8),
        frame_limit_first in any::<bool>(),
    ) {
        let bytes: Vec<u8> = frames.concat();
        let limits = if frame_limit_first {
            Limits { max_frame_size: 64, max_message_size: 96 }
        } else {
            Limits { max_frame_size: 128, max_message_size: 48 }
        };
        prop_assert!(same_in_place_and_copying(&bytes, &sizes, limits));
    }

    #[test]
    fn in_place_reads_match_copying_reads_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        sizes in prop::collection::vec(1usize..600, 1..8),
    ) {
        let limits = Limits { max_frame_size: 64, max_message_size: 96 };
        prop_assert!(same_in_place_and_copying(&bytes, &sizes, limits));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for role in [Role::Server, Role::Client] {
            let mut conn = Connection::new(role, Limits { max_frame_size: 256, max_message_size: 512 });
            let mut events = Vec::new();
            let _ = conn.receive(&bytes, &mut events);
        }
    }
}

#[test]
fn deflate_threshold_zero_compresses_every_message() {
    use roomcast::protocol::deflate::{Compression, DeflateConfig, DeflateParams};
    // Incompressible bytes: deflate output is longer than the input.
    let noise: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let params = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        ..Default::default()
    };
    let mut skipping = Compression::new(&params, Role::Server, &DeflateConfig::default());
    assert_eq!(skipping.compress(&noise), None, "not worth it: sent uncompressed");
    assert_eq!(skipping.compress(b"short"), None, "below the threshold");
    let always = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let mut compressing = Compression::new(&params, Role::Server, &always);
    assert!(compressing.compress(&noise).is_some());
    assert!(compressing.compress(b"").is_some());
}
