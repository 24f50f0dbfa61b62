//! Live heap bytes, as counted by the binary's allocator.
//!
//! The library stays free of `unsafe`; the `roomcast` binary installs a
//! counting wrapper around the system allocator (src/bin_alloc.rs) and
//! reports through this counter. `/stats`, `/metrics` and the echo server's
//! plain-HTTP answer read it, so memory per connection is measured exactly
//! instead of inferred from RSS (which also holds allocator caches).

use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static COUNTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the counting allocator.
pub fn allocated(bytes: usize) {
    LIVE.fetch_add(bytes, Ordering::Relaxed);
}

/// Called by the counting allocator.
pub fn freed(bytes: usize) {
    LIVE.fetch_sub(bytes, Ordering::Relaxed);
}

/// Marks that a counting allocator is installed.
pub fn enable() {
    COUNTING.store(true, Ordering::Relaxed);
}

/// Live heap bytes, if a counting allocator is installed.
pub fn live_bytes() -> Option<usize> {
    COUNTING.load(Ordering::Relaxed).then(|| LIVE.load(Ordering::Relaxed))
}
