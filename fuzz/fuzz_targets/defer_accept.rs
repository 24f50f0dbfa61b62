//! `TCP_DEFER_ACCEPT` (`roomcast::net::defer_accept`, the crate's one
//! `unsafe` module) with any sequence of periods.
//!
//! Input: 4-byte little-endian periods in seconds, set one after another on
//! one listener (a short last group is zero-padded).
//!
//! Invariants:
//! - `set` succeeds on a TCP listener for every `u32`, and `get` succeeds;
//! - the kernel keeps 0 exactly when 0 was set;
//! - a period it keeps is never shorter than the one set, up to its own
//!   ceiling (255 SYN-ACK retransmissions, about 8 hours);
//! - on a descriptor that is no socket, both fail with an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::net::defer_accept::{get, set};
use std::net::TcpListener;
use std::sync::OnceLock;

/// Below the kernel's ceiling with room to spare: 7 doubling steps from
/// 1 s, then 120 s a step, to 255 steps.
const BELOW_CEILING: u32 = 20_000;

static LISTENER: OnceLock<TcpListener> = OnceLock::new();
static NOT_A_SOCKET: OnceLock<std::fs::File> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let listener = LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("a listener"));
    for group in data.chunks(4).take(64) {
        let mut bytes = [0u8; 4];
        bytes[..group.len()].copy_from_slice(group);
        let secs = u32::from_le_bytes(bytes);
        set(listener, secs).expect("any period is accepted");
        let kept = get(listener).expect("the option reads back");
        assert_eq!(kept == 0, secs == 0, "set {secs}, kept {kept}");
        if secs <= BELOW_CEILING {
            assert!(kept >= secs, "set {secs}, kept {kept}: shortened");
        }
    }
    let file = NOT_A_SOCKET.get_or_init(|| std::fs::File::open("/dev/null").expect("/dev/null"));
    let secs = data.first().copied().unwrap_or(1).into();
    assert!(set(file, secs).is_err() && get(file).is_err());
});
