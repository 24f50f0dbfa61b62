//! Compression tests: RFC 7692 section 7.2.3 examples, round trips in
//! every configuration, streaming, limits, window sizes, pooling, and the
//! path through `Connection`.

use super::*;
use crate::protocol::connection::{Connection, Event, Limits, MessageKind, Role};
use crate::protocol::frame::{Opcode, write_frame};

/// Every parameter as given, nothing added by config.
fn config(takeover: bool, window: u8) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: window,
        client_max_window_bits: window,
        threshold: 0,
        ..DeflateConfig::default()
    }
}

/// A server and a client that negotiated with `config`.
fn pair(config: &DeflateConfig) -> (Compression, Compression) {
    let (params, response) = negotiate(&[client_offer(config)], config).expect("accepted");
    let client_params = client_accept(&response, config).expect("valid response");
    (
        Compression::new(&params, Role::Server, config),
        Compression::new(&client_params, Role::Client, config),
    )
}

fn inflate_all(c: &mut Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    c.inflate(data, &mut out, limit)?;
    c.finish_message(&mut out, limit)?;
    Ok(out)
}

/// Sends `msg` from `tx` to `rx` and checks it arrives intact.
fn roundtrip(tx: &mut Compression, rx: &mut Compression, msg: &[u8]) -> usize {
    match tx.compress(msg) {
        Some(data) => {
            assert_eq!(inflate_all(rx, &data, usize::MAX).unwrap(), msg);
            data.len()
        }
        None => msg.len(),
    }
}

/// Chat-like JSON, deterministic.
fn json_messages(n: usize) -> Vec<Vec<u8>> {
    const WORDS: &[&str] = &[
        "hello", "room", "lobby", "player", "joined", "score", "ready", "gg", "next", "map",
    ];
    let mut s = 0x2545_f491_u32;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s as usize
    };
    (0..n)
        .map(|i| {
            let text: Vec<&str> = (0..3 + rand() % 40).map(|_| WORDS[rand() % WORDS.len()]).collect();
            format!(
                r#"{{"type":"message","room":"r{}","from":"user{}","seq":{i},"text":"{}"}}"#,
                rand() % 9,
                rand() % 500,
                text.join(" ")
            )
            .into_bytes()
        })
        .collect()
}

fn noise(n: usize) -> Vec<u8> {
    let mut s = 0x9e37_79b9_u32;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (s >> 16) as u8
        })
        .collect()
}

// RFC 7692 section 7.2.3 examples.

const HELLO: &[u8] = &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
const HELLO_AGAIN: &[u8] = &[0xf2, 0x00, 0x11, 0x00, 0x00];

#[test]
fn rfc_7_2_3_1_and_2_compress() {
    let (mut server, _) = pair(&config(true, 15));
    assert_eq!(server.compress(b"Hello").as_deref(), Some(HELLO));
    // 7.2.3.2: the second message refers back into the first.
    assert_eq!(server.compress(b"Hello").as_deref(), Some(HELLO_AGAIN));
    // Without context takeover every message starts afresh (threshold 0:
    // compressed even though 7 bytes for 5 does not pay).
    let (mut server, _) = pair(&config(false, 15));
    assert_eq!(server.compress(b"Hello").as_deref(), Some(HELLO));
    assert_eq!(server.compress(b"Hello").as_deref(), Some(HELLO));
    assert_eq!(
        codec::deflate(&mut codec::take_deflater(15, 5), b"Hello", false).as_deref(),
        Some(HELLO)
    );
}

#[test]
fn rfc_7_2_3_examples_inflate() {
    let (mut server, _) = pair(&config(true, 15));
    assert_eq!(inflate_all(&mut server, HELLO, 100).unwrap(), b"Hello");
    assert_eq!(inflate_all(&mut server, HELLO_AGAIN, 100).unwrap(), b"Hello");
    let examples: [&[u8]; 4] = [
        // 7.2.3.3: a stored (uncompressed) block.
        &[0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00],
        // 7.2.3.4: BFINAL set, then an empty stored block header.
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        // 7.2.3.5: two DEFLATE blocks in one message.
        &[
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ],
        HELLO,
    ];
    for data in examples {
        assert_eq!(inflate_all(&mut server, data, 100).unwrap(), b"Hello", "{data:02x?}");
    }
    // 7.2.3.6: an empty message compresses to a single 0x00; an empty
    // payload is accepted as an empty message too.
    assert_eq!(inflate_all(&mut server, &[0x00], 100).unwrap(), b"");
    assert_eq!(inflate_all(&mut server, &[], 100).unwrap(), b"");
    let mut c = codec::take_deflater(15, 5);
    assert_eq!(codec::deflate(&mut c, b"", false).as_deref(), Some(&[0x00][..]));
    // And the stream still works afterwards.
    assert_eq!(inflate_all(&mut server, HELLO, 100).unwrap(), b"Hello");
}

#[test]
fn roundtrips_every_window_and_takeover() {
    let msgs = json_messages(40);
    for takeover in [false, true] {
        for window in 8..=15 {
            let (mut server, mut client) = pair(&config(takeover, window));
            let (mut raw, mut sent) = (0, 0);
            for msg in &msgs {
                raw += msg.len();
                sent += roundtrip(&mut server, &mut client, msg);
                roundtrip(&mut client, &mut server, msg);
            }
            roundtrip(&mut server, &mut client, &noise(70_000));
            roundtrip(&mut client, &mut server, &[b'a'; 100_000]);
            assert!(sent < raw, "takeover {takeover} window {window}: {sent} >= {raw}");
        }
    }
}

#[test]
fn context_takeover_compresses_better() {
    let msgs = json_messages(50);
    let total = |takeover| {
        let (mut server, mut client) = pair(&config(takeover, 15));
        msgs.iter()
            .map(|m| roundtrip(&mut server, &mut client, m))
            .sum::<usize>()
    };
    let (with, without) = (total(true), total(false));
    assert!(with * 3 < without * 2, "takeover {with} vs none {without}");
}

#[test]
fn inflates_pieces_split_at_every_byte() {
    let msg = json_messages(30).concat();
    let (mut server, mut client) = pair(&config(false, 15));
    let data = server.compress(&msg).unwrap();
    for split in 0..=data.len() {
        let mut out = Vec::new();
        client.inflate(&data[..split], &mut out, msg.len()).unwrap();
        client.inflate(&data[split..], &mut out, msg.len()).unwrap();
        client.finish_message(&mut out, msg.len()).unwrap();
        assert_eq!(out, msg, "split at {split}");
    }
    // One byte at a time, with context takeover across messages.
    let (mut server, mut client) = pair(&config(true, 10));
    for msg in json_messages(20) {
        let data = server.compress(&msg).unwrap();
        let mut out = Vec::new();
        for byte in data.chunks(1) {
            client.inflate(byte, &mut out, msg.len()).unwrap();
        }
        client.finish_message(&mut out, msg.len()).unwrap();
        assert_eq!(out, msg);
    }
}

#[test]
fn deflate_bomb_stops_at_the_limit() {
    let mut c = codec::take_deflater(15, 9);
    let bomb = codec::deflate(&mut c, &vec![0u8; 16 << 20], false).unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let limit = 1 << 20;
    for piece in [bomb.len(), 4096, 1] {
        let (mut server, _) = pair(&config(false, 15));
        let mut out = Vec::new();
        let err = bomb
            .chunks(piece)
            .try_for_each(|p| server.inflate(p, &mut out, limit))
            .and_then(|()| server.finish_message(&mut out, limit));
        assert_eq!(err, Err(Error::MessageTooLarge));
        assert!(out.len() <= limit + 1, "{}", out.len());
        assert!(out.capacity() <= limit + (64 << 10), "{}", out.capacity());
    }
}

#[test]
fn limit_is_exact_and_counts_earlier_bytes() {
    let msg = json_messages(10).concat();
    let (mut server, mut client) = pair(&config(false, 15));
    let data = server.compress(&msg).unwrap();
    assert_eq!(inflate_all(&mut client, &data, msg.len()).unwrap(), msg);
    assert_eq!(
        inflate_all(&mut client, &data, msg.len() - 1),
        Err(Error::MessageTooLarge)
    );
    // The limit applies to all of `out`, including what was there before.
    let (_, mut client) = pair(&config(false, 15));
    let mut out = vec![0; 10];
    client.inflate(&data, &mut out, msg.len() + 10).unwrap();
    client.finish_message(&mut out, msg.len() + 10).unwrap();
    assert_eq!(&out[10..], &msg[..]);
}

#[test]
fn verdict_does_not_depend_on_segmentation() {
    // Two literals, then a stored block with bad lengths: past a limit of
    // 1 byte, zlib (output full) still parses that header when given it all
    // at once, and the too-large output must still be what is reported.
    let data = [0xb2, 0x32, 0x01, 0x00, 0x00, 0x00, 0x32, 0x32];
    for piece in [data.len(), 1] {
        let (_, mut client) = pair(&config(true, 15));
        let mut out = Vec::new();
        let result = data.chunks(piece).try_for_each(|p| client.inflate(p, &mut out, 1));
        assert_eq!(result, Err(Error::MessageTooLarge), "pieces of {piece}");
    }
}

#[test]
fn corrupt_data_is_rejected() {
    let (_, mut client) = pair(&config(true, 15));
    // BTYPE 11 is reserved (RFC 1951 section 3.2.3).
    assert_eq!(
        inflate_all(&mut client, &[0x07, 0x00], 100),
        Err(Error::BadCompressedData)
    );
    // A stored block whose NLEN is not the complement of LEN.
    let (_, mut client) = pair(&config(true, 15));
    assert_eq!(
        inflate_all(&mut client, &[0x00, 0x05, 0x00, 0x00, 0x00], 100),
        Err(Error::BadCompressedData)
    );
    // A distance reaching before the start of the stream.
    let (_, mut client) = pair(&config(true, 15));
    assert_eq!(
        inflate_all(&mut client, HELLO_AGAIN, 100),
        Err(Error::BadCompressedData)
    );
    // Random garbage fails (or at worst inflates to something) without panicking.
    for seed in 0..200 {
        let (_, mut client) = pair(&config(false, 15));
        let _ = inflate_all(&mut client, &noise(seed + 1)[..], 1000);
    }
}

#[test]
fn threshold_and_incompressible_messages_go_plain() {
    let (mut server, _) = pair(&DeflateConfig::default());
    assert_eq!(DeflateConfig::default().threshold, 64);
    assert_eq!(server.compress(&[b'a'; 63]), None);
    assert!(server.compress(&[b'a'; 64]).is_some());
    assert_eq!(server.compress(&noise(1000)), None, "not smaller: sent plain");
    // Threshold 0 compresses every message, shrinking or not.
    let (mut server, mut client) = pair(&config(false, 15));
    let data = server.compress(&noise(1000)).unwrap();
    assert_eq!(inflate_all(&mut client, &data, 2000).unwrap(), noise(1000));
    // With takeover, noise must still be sent compressed (the window has it).
    let (mut server, mut client) = pair(&config_takeover_threshold(64));
    let data = server.compress(&noise(1000)).unwrap();
    assert_eq!(inflate_all(&mut client, &data, 2000).unwrap(), noise(1000));
}

fn config_takeover_threshold(threshold: usize) -> DeflateConfig {
    DeflateConfig {
        threshold,
        ..config(true, 15)
    }
}

#[test]
fn streams_are_lazy_and_released_without_takeover() {
    let msg = json_messages(5).concat();
    let (mut server, mut client) = pair(&config(false, 15));
    assert!(!server.holds_state() && !client.holds_state());
    let data = server.compress(&msg).unwrap();
    assert!(!server.holds_state(), "deflate borrows a pooled stream per message");
    let mut out = Vec::new();
    client.inflate(&data[..10], &mut out, usize::MAX).unwrap();
    assert!(client.holds_state(), "held while a message is in progress");
    client.inflate(&data[10..], &mut out, usize::MAX).unwrap();
    client.finish_message(&mut out, usize::MAX).unwrap();
    assert!(!client.holds_state(), "handed back at the end of the message");
    assert!(codec::pooled().0 >= 1 && codec::pooled().1 >= 1);

    let (mut server, mut client) = pair(&config(true, 15));
    assert!(!server.holds_state() && !client.holds_state());
    roundtrip(&mut server, &mut client, &msg);
    assert!(
        server.holds_state() && client.holds_state(),
        "the LZ77 window must survive"
    );
}

#[test]
fn pooled_streams_give_identical_output() {
    let msgs = json_messages(20);
    let fresh: Vec<_> = msgs
        .iter()
        .map(|m| codec::deflate(&mut codec::take_deflater(12, 5), m, true))
        .collect();
    for _ in 0..3 {
        let pooled: Vec<_> = msgs.iter().map(|m| codec::deflate_fresh(m, 12, 5, true)).collect();
        assert_eq!(pooled, fresh);
    }
}

#[test]
fn shared_compressor_fans_out() {
    let config = DeflateConfig::default();
    let shared = SharedCompressor::new(&config);
    let msg = json_messages(3).concat();
    let data = shared.compress(&msg).unwrap();
    assert_eq!(shared.compress(&msg).as_ref(), Some(&data), "same bytes every time");
    assert_eq!(shared.compress(b"short"), None, "below the threshold");
    let (server, mut client) = pair(&config);
    assert!(server.accepts_shared(&shared));
    for _ in 0..3 {
        assert_eq!(inflate_all(&mut client, &data, usize::MAX).unwrap(), msg);
    }
    // A member that keeps context, or asked for a smaller window, cannot
    // take the shared bytes.
    let (server, _) = pair(&config_takeover_threshold(64));
    assert!(!server.accepts_shared(&shared));
    let small = DeflateConfig {
        server_max_window_bits: 10,
        ..config
    };
    let (server, _) = pair(&small);
    assert!(!server.accepts_shared(&shared));
    assert!(server.accepts_shared(&SharedCompressor::new(&small)));
    // Window 8 and 9 both compress with zlib's 9 (distances <= 250).
    let w8 = DeflateConfig {
        server_max_window_bits: 8,
        ..config
    };
    let (server, _) = pair(&w8);
    assert!(server.accepts_shared(&SharedCompressor::new(&DeflateConfig {
        server_max_window_bits: 9,
        ..config
    })));
}

/// Largest LZ77 distance in a raw DEFLATE stream (RFC 1951), decoding
/// until the data ends on a block boundary.
fn max_distance(data: &[u8]) -> usize {
    struct Bits<'a>(&'a [u8], usize);
    impl Bits<'_> {
        fn get(&mut self, n: u32) -> usize {
            (0..n).fold(0, |v, i| {
                let bit = (self.0[self.1 / 8] >> (self.1 % 8)) & 1;
                self.1 += 1;
                v | (bit as usize) << i
            })
        }
    }
    /// Canonical Huffman code: counts per length and symbols in order.
    struct Huffman(Vec<u16>, Vec<usize>);
    impl Huffman {
        fn new(lengths: &[u8]) -> Self {
            let mut counts = vec![0u16; 16];
            lengths.iter().for_each(|&l| counts[l as usize] += 1);
            counts[0] = 0;
            let mut symbols: Vec<usize> = (0..lengths.len()).filter(|&s| lengths[s] != 0).collect();
            symbols.sort_by_key(|&s| lengths[s]);
            Huffman(counts, symbols)
        }
        fn decode(&self, b: &mut Bits<'_>) -> usize {
            let (mut code, mut first, mut index) = (0, 0, 0);
            for len in 1..16 {
                code |= b.get(1);
                let count = self.0[len] as usize;
                if code < first + count {
                    return self.1[index + code - first];
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            panic!("bad code");
        }
    }
    const LBASE: [usize; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227,
        258,
    ];
    const LEXT: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DBASE: [usize; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
        6145, 8193, 12289, 16385, 24577,
    ];
    let mut b = Bits(data, 0);
    let mut max = 0;
    while b.1 < data.len() * 8 {
        let _final = b.get(1);
        let (lit, dist) = match b.get(2) {
            0 => {
                b.1 = b.1.div_ceil(8) * 8;
                let len = b.get(16);
                b.1 += 16 + 8 * len;
                continue;
            }
            1 => {
                let mut l = [8u8; 288];
                l[144..256].fill(9);
                l[256..280].fill(7);
                (Huffman::new(&l), Huffman::new(&[5; 30]))
            }
            2 => {
                let (hlit, hdist, hclen) = (b.get(5) + 257, b.get(5) + 1, b.get(4) + 4);
                const ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
                let mut cl = [0u8; 19];
                ORDER[..hclen].iter().for_each(|&i| cl[i] = b.get(3) as u8);
                let cl = Huffman::new(&cl);
                let mut lengths = Vec::new();
                while lengths.len() < hlit + hdist {
                    match cl.decode(&mut b) {
                        s @ 0..=15 => lengths.push(s as u8),
                        16 => {
                            let prev = *lengths.last().unwrap();
                            let n = 3 + b.get(2);
                            lengths.extend(std::iter::repeat_n(prev, n));
                        }
                        17 => lengths.extend(std::iter::repeat_n(0, 3 + b.get(3))),
                        _ => lengths.extend(std::iter::repeat_n(0, 11 + b.get(7))),
                    }
                }
                (Huffman::new(&lengths[..hlit]), Huffman::new(&lengths[hlit..]))
            }
            _ => panic!("reserved block type"),
        };
        loop {
            match lit.decode(&mut b) {
                0..=255 => {}
                256 => break,
                sym => {
                    let _len = LBASE[sym - 257] + b.get(LEXT[sym - 257]);
                    let d = dist.decode(&mut b);
                    let extra = if d < 4 { 0 } else { (d as u32 - 2) / 2 };
                    max = max.max(DBASE[d] + b.get(extra));
                }
            }
        }
    }
    max
}

#[test]
fn compressed_distances_fit_the_negotiated_window() {
    // Repeats at 251..=300 bytes: beyond what a window-8 peer may see.
    let mut data = Vec::new();
    for period in [251, 256, 300, 700, 3000] {
        let block = noise(period);
        data.extend(block.iter().cycle().take(period * 8));
    }
    data.extend(json_messages(50).concat());
    assert_eq!(
        max_distance(&[HELLO, &codec::TAIL].concat()),
        0,
        "no match within one Hello"
    );
    assert_eq!(
        max_distance(&[HELLO, &codec::TAIL, HELLO_AGAIN, &codec::TAIL].concat()),
        5
    );
    for window in 8..=15u8 {
        for level in [1, 5, 9] {
            let cfg = DeflateConfig {
                level,
                ..config(true, window)
            };
            let (mut server, mut client) = pair(&cfg);
            let mut stream = Vec::new();
            for msg in [&data[..], &data[..1000], &data[5000..]] {
                let out = server.compress(msg).unwrap();
                assert_eq!(inflate_all(&mut client, &out, usize::MAX).unwrap(), msg);
                stream.extend_from_slice(&out);
                stream.extend_from_slice(&codec::TAIL);
            }
            let max = max_distance(&stream);
            assert!(max <= 1 << window, "window {window} level {level}: distance {max}");
            if window == 8 {
                assert!(max <= 250, "zlib window 9 never reaches past 250: {max}");
            }
        }
    }
}

// Through `Connection`: frames in, events out.

fn server_connection(config: &DeflateConfig, max_message_size: usize) -> Connection {
    let (params, _) = negotiate(&[client_offer(config)], config).unwrap();
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size,
    };
    Connection::new(Role::Server, limits).with_compression(Compression::new(&params, Role::Server, config))
}

fn client_frame(opcode: Opcode, fin: bool, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, opcode, fin, rsv1, Some([0x37, 0xfa, 0x21, 0x3d]), payload);
    out
}

#[test]
fn connection_inflates_masked_frames() {
    let config = config(true, 15);
    let mut conn = server_connection(&config, 1 << 20);
    let mut events = Vec::new();
    conn.receive(&client_frame(Opcode::Text, true, true, HELLO), &mut events)
        .unwrap();
    conn.receive(&client_frame(Opcode::Text, true, true, HELLO_AGAIN), &mut events)
        .unwrap();
    assert_eq!(
        events,
        vec![Event::Text(b"Hello".to_vec()), Event::Text(b"Hello".to_vec())]
    );

    // A fragmented compressed message (RSV1 on the first frame only, RFC
    // 7692 section 6.1), fed one byte at a time, a ping in the middle.
    let (_, mut client) = pair(&config);
    let msg = json_messages(20).concat();
    let data = client.compress(&msg).unwrap();
    let (a, b) = data.split_at(data.len() / 3);
    let mut wire = client_frame(Opcode::Binary, false, true, a);
    wire.extend(client_frame(Opcode::Ping, true, false, b"p"));
    wire.extend(client_frame(Opcode::Continuation, true, false, b));
    events.clear();
    for byte in wire.chunks(1) {
        conn.receive(byte, &mut events).unwrap();
    }
    assert_eq!(events, vec![Event::Ping(b"p".to_vec()), Event::Binary(msg)]);
}

/// The status code of the unmasked close frame at the start of `wire`.
fn close_code(wire: &[u8]) -> u16 {
    assert_eq!(wire[0], 0x88, "a close frame");
    u16::from_be_bytes([wire[2], wire[3]])
}

#[test]
fn connection_rejects_bad_compressed_text() {
    let config = config(false, 15);
    let mut c = codec::take_deflater(15, 5);
    let bad_utf8 = codec::deflate(&mut c, b"ok \xff\xfe", false).unwrap();
    let mut events = Vec::new();
    let mut conn = server_connection(&config, 1 << 20);
    let frame = client_frame(Opcode::Text, true, true, &bad_utf8);
    assert_eq!(conn.receive(&frame, &mut events), Err(Error::InvalidUtf8));
    assert_eq!(close_code(&conn.take_output()), 1007);

    let mut conn = server_connection(&config, 1 << 20);
    let frame = client_frame(Opcode::Binary, true, true, &[0x07, 0x00]);
    assert_eq!(conn.receive(&frame, &mut events), Err(Error::BadCompressedData));

    let mut c = codec::take_deflater(15, 9);
    let bomb = codec::deflate(&mut c, &vec![b' '; 4 << 20], false).unwrap();
    let mut conn = server_connection(&config, 64 << 10);
    let frame = client_frame(Opcode::Text, true, true, &bomb);
    assert_eq!(conn.receive(&frame, &mut events), Err(Error::MessageTooLarge));
    assert_eq!(close_code(&conn.take_output()), 1009);
    assert!(conn.buffered() <= 64 << 10, "{}", conn.buffered());
    assert!(events.is_empty());
}

#[test]
fn connection_send_compresses_for_the_peer() {
    let config = DeflateConfig::default();
    let mut server = server_connection(&config, 1 << 20);
    let client_params = client_accept(&negotiate(&[client_offer(&config)], &config).unwrap().1, &config).unwrap();
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    };
    let mut client =
        Connection::new(Role::Client, limits).with_compression(Compression::new(&client_params, Role::Client, &config));
    let msgs = json_messages(10);
    for msg in &msgs {
        server.send(MessageKind::Text, msg);
    }
    let wire = server.take_output();
    assert!(wire.len() < msgs.iter().map(Vec::len).sum(), "compressed on the wire");
    let mut events = Vec::new();
    client.receive(&wire, &mut events).unwrap();
    assert_eq!(events, msgs.into_iter().map(Event::Text).collect::<Vec<_>>());
}
