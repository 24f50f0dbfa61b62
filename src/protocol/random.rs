//! Unpredictable bytes for masking keys and handshake nonces.
//!
//! The OS generator is the only trustworthy source here; it is read in
//! batches per thread so that masking a client frame costs no system call.

use std::cell::RefCell;

const BATCH: usize = 256;

struct Pool {
    bytes: [u8; BATCH],
    used: usize,
}

thread_local! {
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { bytes: [0; BATCH], used: BATCH }) };
}

/// Fills `out` with bytes from the operating system's CSPRNG.
pub fn fill(out: &mut [u8]) {
    if out.len() > BATCH / 4 {
        os_fill(out);
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used + out.len() > BATCH {
            os_fill(&mut pool.bytes);
            pool.used = 0;
        }
        let start = pool.used;
        out.copy_from_slice(&pool.bytes[start..start + out.len()]);
        pool.used += out.len();
    });
}

fn os_fill(out: &mut [u8]) {
    // The OS generator does not fail on Linux once booted; if it ever did,
    // sending predictable masks would be worse than stopping.
    getrandom::fill(out).expect("operating system random generator failed");
}
