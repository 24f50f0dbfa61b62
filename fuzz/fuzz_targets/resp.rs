//! The RESP3 parser of the Redis engine on arbitrary server bytes.
//!
//! Input: raw bytes, as a Redis server's stream (no control prefix).
//!
//! Invariants:
//! - `parse` never panics, and a value never claims more bytes than given;
//! - the values of a stream, parsed one after another, re-encode (`encode`)
//!   to bytes that parse back to a value with the same encoding, taking
//!   exactly those bytes;
//! - every proper prefix of a value's canonical encoding is incomplete
//!   (`Ok(None)`), never an error: a reply split over two reads is waited
//!   for, not refused.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::engine::redis::resp::{encode, parse};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((value, used))) = parse(rest) {
        assert!(used > 0 && used <= rest.len(), "took {used} of {}", rest.len());
        let mut once = Vec::new();
        encode(&value, &mut once);
        let (again, n) = parse(&once).expect("its own encoding parses").expect("complete");
        assert_eq!(n, once.len(), "the encoding is one value");
        let mut twice = Vec::new();
        encode(&again, &mut twice);
        assert_eq!(once, twice, "encoding is stable");
        if once.len() <= 512 {
            for end in 0..once.len() {
                assert_eq!(parse(&once[..end]), Ok(None), "prefix of {end} bytes");
            }
        }
        rest = &rest[used..];
    }
});
