//! `TCP_DEFER_ACCEPT` on a listening socket: the kernel hands a connection
//! to `accept` only once its first bytes have arrived (or the period has
//! passed without any), so a WebSocket client, which always speaks first,
//! costs the event loop one wake-up instead of two: no event for the bare
//! connection and another for its request. Measured on 19,900 connects:
//! 35.2 -> 26.1 us of server CPU per handshake, medians of five interleaved
//! rounds (docs/benchmarks.md, "One loop, fifth pass").
//!
//! The crate's only `unsafe`: neither std (unstable there), socket2 nor
//! rustix offers this option, so it is set with `setsockopt(2)` directly.
//! Invariants of both calls: the descriptor is borrowed for the call
//! (`AsFd`), and the option's buffer is a live `c_int` on the stack whose
//! exact size is passed; `getsockopt` may only shorten the length, which is
//! checked before the value is read. The fuzz target `defer_accept` runs
//! both on a real listener with any sequence of periods.
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd};

/// Sets the deferral period in whole seconds (0 turns it off). Linux
/// rounds it up to its SYN-ACK retransmission schedule (1 s, then 3 s, ...).
pub fn set(listener: &impl AsFd, secs: u32) -> io::Result<()> {
    let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: see the module's invariants.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The period the kernel keeps, in seconds (after its rounding).
pub fn get(listener: &impl AsFd) -> io::Result<u32> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: see the module's invariants.
    let rc = unsafe {
        libc::getsockopt(
            listener.as_fd().as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != size_of::<libc::c_int>() {
        return Err(io::Error::other("TCP_DEFER_ACCEPT: unexpected option length"));
    }
    Ok(u32::try_from(value).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_read_back_on_a_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(get(&listener).unwrap(), 0);
        set(&listener, 1).unwrap();
        assert_eq!(get(&listener).unwrap(), 1);
        set(&listener, 0).unwrap();
        assert_eq!(get(&listener).unwrap(), 0);
    }

    #[test]
    fn a_descriptor_that_is_no_tcp_socket_is_an_error() {
        let file = std::fs::File::open("/dev/null").unwrap();
        assert!(set(&file, 1).is_err());
        assert!(get(&file).is_err());
    }
}
