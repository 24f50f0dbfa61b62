//! Sizing the process's descriptor table before connections arrive.
//!
//! Linux grows a process's descriptor table by doubling it when a new
//! descriptor does not fit. In a process with more than one thread, each
//! growth waits for an RCU grace period (`expand_fdtable` calls
//! `synchronize_rcu`), milliseconds to tens of milliseconds during which
//! the worker that accepted the connection does nothing else. A crowd of
//! connections arriving at once (a reconnect storm after a deploy) crosses
//! every power of two from 64 up on the way, so the stalls add up:
//! docs/benchmarks.md measures them. A table is never shrunk, so making
//! the descriptor the server may need at most once, at start-up, and
//! closing it again pays the growth one time, before anyone waits on it.

use log::debug;
use std::fs::File;
use std::io;

/// Grows the descriptor table to hold `count` descriptors (capped at the
/// soft `RLIMIT_NOFILE`, below which every descriptor must lie anyway).
/// Returns the table size asked for. The cost is kernel memory: one
/// pointer and two bits per entry, 8 KiB per thousand descriptors.
pub fn reserve(count: usize) -> io::Result<usize> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let limit = usize::try_from(soft).unwrap_or(usize::MAX);
    let want = count.min(limit).min(i32::MAX as usize);
    if want <= 64 {
        // The table every process starts with holds 64.
        return Ok(want);
    }
    let any = File::open("/dev/null")?;
    // The lowest free descriptor at or above `want - 1`: the table grows
    // to hold it, and keeps that size once it is closed again.
    let high = rustix::io::fcntl_dupfd_cloexec(&any, (want - 1) as i32)?;
    drop(high);
    debug!("descriptor table sized for {want}");
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table's size as the kernel reports it.
    fn table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_table_holds_as_many_descriptors_as_the_limit_allows() {
        let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
        // Asking for more than the limit is capped, not an error.
        let want = reserve(usize::MAX).unwrap();
        assert_eq!(want as u64, soft.min(i32::MAX as u64));
        assert!(table_size() >= want, "FDSize {} < {want}", table_size());
        // Nothing is left open: the next descriptor is a low one.
        let next = File::open("/dev/null").unwrap();
        assert!(std::os::fd::AsRawFd::as_raw_fd(&next) < 1000);
    }
}
