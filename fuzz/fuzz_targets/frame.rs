//! Frame headers and masking on arbitrary bytes.
//!
//! Input: raw bytes, no control prefix (a header is its own configuration).
//!
//! Invariants:
//! - `parse_header` never panics;
//! - a parsed header re-encodes with `write_header` to bytes that parse to
//!   the same header; the re-encoding is never longer than the original and
//!   equals it when the original used the minimal length form;
//! - every proper prefix of a parsed header asks for more bytes;
//! - `apply_mask` agrees with the section 5.3 definition at any offset and
//!   when a payload is masked in two pieces.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::frame::{MAX_HEADER_LEN, parse_header, write_header};
use roomcast::protocol::mask::{apply_mask, apply_mask_bytewise};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((header, len))) = parse_header(data) {
        assert!((2..=MAX_HEADER_LEN).contains(&len) && len <= data.len());
        let mut out = Vec::new();
        write_header(&mut out, &header);
        assert_eq!(parse_header(&out), Ok(Some((header, out.len()))), "round trip");
        assert!(out.len() <= len, "re-encoding grew: {out:?} from {:?}", &data[..len]);
        let minimal = match data[1] & 0x7F {
            126 => header.payload_len > 125,
            127 => header.payload_len > u64::from(u16::MAX),
            _ => true,
        };
        if minimal {
            assert_eq!(out, data[..len], "minimal header re-encodes byte for byte");
        }
        for end in 0..len {
            assert_eq!(parse_header(&data[..end]), Ok(None), "prefix of {end} bytes");
        }
    }

    if let [k0, k1, k2, k3, offset, payload @ ..] = data {
        let key = [*k0, *k1, *k2, *k3];
        let offset = usize::from(*offset);
        let mut fast = payload.to_vec();
        let mut slow = payload.to_vec();
        apply_mask(&mut fast, key, offset);
        apply_mask_bytewise(&mut slow, key, offset);
        assert_eq!(fast, slow, "word-at-a-time and bytewise masks differ");
        let mut split = payload.to_vec();
        let at = offset.min(split.len());
        let (a, b) = split.split_at_mut(at);
        apply_mask(a, key, offset);
        apply_mask(b, key, offset + at);
        assert_eq!(split, fast, "masking in two pieces differs");
        apply_mask(&mut fast, key, offset);
        assert_eq!(fast, payload, "masking twice is the identity");
    }
});
