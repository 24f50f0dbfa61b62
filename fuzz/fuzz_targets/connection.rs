//! `Connection::receive` for both roles, small limits, any segmentation.
//!
//! Input: see `roomcast_fuzz::Input`. Config byte: bits 0-2 pick the frame
//! size limit, bits 3-5 the message size limit, bit 6 starts the close
//! handshake before any byte is received.
//!
//! The stream is fed to a server and to a client (one of them usually fails
//! on masking at once, which is cheap), in pieces and in one piece. Bit 4 of
//! the chunk plan feeds the pieces through `read_event` (one event per
//! call) instead of `receive`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::{CloseCode, Connection, Limits, Role};
use roomcast_fuzz::connection::{Run, check_run};
use roomcast_fuzz::{Input, split};

/// Limits around the boundaries that matter: nothing, one byte, the
/// control-frame maximum and the 7/16-bit length forms.
const LIMITS: [usize; 8] = [0, 1, 7, 125, 126, 1000, 65535, 65536];

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let limits = Limits {
        max_frame_size: LIMITS[usize::from(input.config & 7)],
        max_message_size: LIMITS[usize::from(input.config >> 3 & 7)],
    };
    let close_first = input.config & 0x40 != 0;
    let pieces = split(input.plan, input.stream);
    let by_event = input.plan & 0x10 != 0;
    for role in [Role::Server, Role::Client] {
        let new = || {
            let mut conn = Connection::new(role, limits);
            if close_first {
                conn.close(CloseCode::NORMAL, "bye");
            }
            conn
        };
        let chunked = Run::feed(new(), &pieces, by_event);
        let whole = Run::feed(new(), &[input.stream], false);
        check_run(&chunked, &whole, limits);
    }
});
