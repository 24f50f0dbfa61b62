//! The broadcast payload: a send timestamp and the publisher's number,
//! written as `#t=<nanoseconds>,<publisher>` and found again in whatever
//! the server wraps around it (roomcast's JSON `message` event, or the raw
//! relay's verbatim copy) by a byte search, not a JSON parse.
//!
//! The marker `#t=` cannot occur elsewhere in roomcast's events (room and
//! user names are `[A-Za-z0-9._:-]`, the bench picks them), and it is
//! plain ASCII, so it passes JSON string encoding unchanged.

use std::io::Write;

const MARKER: &[u8] = b"#t=";

/// Appends the stamp for a message sent at `sent_ns` by `publisher`,
/// padded with `.` to at least `min_len` bytes. Writes into a reused
/// buffer: no allocation once the buffer has grown.
pub fn stamp(out: &mut Vec<u8>, sent_ns: u64, publisher: u32, min_len: usize) {
    let start = out.len();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "#t={sent_ns},{publisher}");
    let len = out.len() - start;
    if len < min_len {
        out.resize(start + min_len, b'.');
    }
}

/// As [`stamp`], but padded with varied text (records of numbers and
/// words, no `"`, `\\` or `#`, so it also fits in a JSON string) that
/// compresses about as well as typical JSON events do, where a run of `.`
/// would compress to almost nothing: for runs with permessage-deflate.
pub fn stamp_varied(out: &mut Vec<u8>, sent_ns: u64, publisher: u32, min_len: usize) {
    let start = out.len();
    stamp(out, sent_ns, publisher, 0);
    let stamp_len = out.len() - start;
    let mut x = (sent_ns ^ (u64::from(publisher) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let sides = ["buy", "sell", "hold"];
    while out.len() - start < min_len {
        // xorshift64: cheap, and different in every message.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let _ = write!(
            out,
            " {{id:{},px:{}.{:02},qty:{},side:{}}}",
            x % 100_000,
            (x >> 20) % 5000,
            (x >> 33) % 100,
            (x >> 40) % 1000,
            sides[(x >> 60) as usize % 3]
        );
    }
    out.truncate(start + min_len.max(stamp_len));
}

/// Finds the stamp in `payload`: `(sent_ns, publisher)`, or `None` for a
/// message that carries none (welcome, joined, presence events ...).
pub fn parse(payload: &[u8]) -> Option<(u64, u32)> {
    let mut rest = payload;
    loop {
        // A byte scan for '#' (vectorised by the compiler), then a check.
        let at = rest.iter().position(|&b| b == b'#')?;
        rest = &rest[at..];
        if rest.starts_with(MARKER) {
            break;
        }
        rest = &rest[1..];
    }
    let (ns, rest) = digits(&rest[MARKER.len()..])?;
    let rest = rest.strip_prefix(b",")?;
    let (publisher, _) = digits(rest)?;
    Some((ns, u32::try_from(publisher).ok()?))
}

/// A decimal number at the front of `s` and what follows it.
fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take(20).take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    // Eight digits per step: a nanosecond stamp has 19, and a digit at a
    // time took 8.7% of the bench's samples at 6 M deliveries/s (6.3% this
    // way, counting included; docs/benchmarks.md, "One loop, sixth pass").
    // Up to 19 digits cannot overflow a u64; only a 20th is checked.
    let (head, last) = s[..n].split_at(n.min(19));
    let mut value: u64 = 0;
    let mut chunks = head.chunks_exact(8);
    for chunk in &mut chunks {
        value = value * 100_000_000 + eight_digits(chunk.try_into().expect("8 bytes"));
    }
    for &b in chunks.remainder() {
        value = value * 10 + u64::from(b - b'0');
    }
    if let Some(&b) = last.first() {
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((value, &s[n..]))
}

/// The value of eight ASCII digits, most significant first, in three
/// multiplications: pairs of digits, then pairs of pairs, then the halves.
fn eight_digits(chunk: [u8; 8]) -> u64 {
    let v = u64::from_le_bytes(chunk) - 0x3030_3030_3030_3030;
    // Each 16-bit lane: its first digit times 10 plus its second.
    let v = (v * 10 + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    // Each 32-bit lane: its first pair times 100 plus its second.
    let v = (v.wrapping_mul(1 + (100 << 16)) >> 16) & 0x0000_ffff_0000_ffff;
    // The first four digits times 10,000 plus the last four.
    v.wrapping_mul(1 + (10_000 << 32)) >> 32
}

/// Whether `payload` holds `needle` (for rare checks such as `"type":"joined"`).
pub fn contains(payload: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && payload.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_bare_and_padded() {
        let mut buf = Vec::new();
        stamp(&mut buf, 1_234_567_890_123, 7, 0);
        assert_eq!(buf, b"#t=1234567890123,7");
        assert_eq!(parse(&buf), Some((1_234_567_890_123, 7)));
        buf.clear();
        stamp(&mut buf, 5, 0, 64);
        assert_eq!(buf.len(), 64);
        assert!(buf.ends_with(b"..."));
        assert_eq!(parse(&buf), Some((5, 0)));
        // Extremes.
        buf.clear();
        stamp(&mut buf, u64::MAX, u32::MAX, 0);
        assert_eq!(parse(&buf), Some((u64::MAX, u32::MAX)));
    }

    #[test]
    fn varied_padding_fits_a_json_string_and_compresses_like_json() {
        let mut buf = Vec::new();
        stamp_varied(&mut buf, 42, 3, 1024);
        assert_eq!(buf.len(), 1024);
        assert_eq!(parse(&buf), Some((42, 3)));
        assert!(!buf[1..].iter().any(|b| matches!(b, b'"' | b'\\' | b'#')));
        let mut other = Vec::new();
        stamp_varied(&mut other, 43, 3, 1024);
        assert_ne!(buf[20..], other[20..]);
        // About what a JSON event compresses to, not the near-nothing of a run of dots.
        let compressor = crate::protocol::deflate::SharedCompressor::new(&Default::default());
        let compressed = compressor.compress(&buf).unwrap();
        let ratio = buf.len() as f64 / compressed.len() as f64;
        assert!((2.0..6.0).contains(&ratio), "{ratio}");
        // Shorter than its stamp: the stamp alone.
        buf.clear();
        stamp_varied(&mut buf, 7, 1, 2);
        assert_eq!(buf, b"#t=7,1");
    }

    #[test]
    fn found_inside_roomcast_json_events() {
        let event = br##"{"type":"message","room":"bench","user":"bench","content":"#t=99887766,3....","seq":42,"ts":1700000000000}"##;
        assert_eq!(parse(event), Some((99_887_766, 3)));
        // A stray '#' before the marker does not confuse the search.
        assert_eq!(parse(b"{\"content\":\"a#b##t=12,1\"}"), Some((12, 1)));
    }

    #[test]
    fn messages_without_a_stamp() {
        for payload in [
            &br#"{"type":"welcome","conn":1,"user":"bench"}"#[..],
            br#"{"type":"joined","room":"bench","users":["bench"],"seq":0}"#,
            b"",
            b"#t=",
            b"#t=12",
            b"#t=12;3",
            b"#t=,3",
            b"#t=99999999999999999999999,1",
            b"#t=1,99999999999",
        ] {
            assert_eq!(parse(payload), None, "{:?}", String::from_utf8_lossy(payload));
        }
    }

    #[test]
    fn numbers_of_every_length_parse_as_std_parses_them() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 1..=20usize {
            for _ in 0..200 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let text: String = (0..len)
                    .map(|i| char::from(b'0' + ((x >> (3 * i % 61)) % 10) as u8))
                    .collect();
                let input = format!("{text},7");
                let expected = text.parse::<u64>().ok().map(|v| (v, &b",7"[..]));
                assert_eq!(digits(input.as_bytes()), expected, "{text}");
            }
        }
        for text in [
            "0",
            "00000000",
            "99999999",
            "1000000000000000000",
            "9999999999999999999",
            "18446744073709551615",
        ] {
            assert_eq!(
                digits(text.as_bytes()),
                Some((text.parse().unwrap(), &b""[..])),
                "{text}"
            );
        }
        assert_eq!(digits(b"18446744073709551616"), None);
        assert_eq!(digits(b"x1"), None);
    }

    #[test]
    fn contains_finds_event_types() {
        let joined = br#"{"type":"joined","room":"bench"}"#;
        assert!(contains(joined, br#""type":"joined""#));
        assert!(!contains(joined, br#""type":"error""#));
        assert!(!contains(joined, b""));
    }
}
