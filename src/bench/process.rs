//! What the kernel says about a process: CPU time and resident memory from
//! `/proc`, and this process's descriptor limit.
//!
//! CPU use is how the bench proves it is not the bottleneck: its own
//! utime + stime over the wall time of the measurement (under 100% of its
//! core, with headroom), and the server's, if its pid is given.

use std::time::Instant;

/// `/proc/PID/stat` counts CPU time in USER_HZ ticks, 100 per second on
/// every Linux architecture (the kernel converts for userspace).
const TICKS_PER_SECOND: f64 = 100.0;

/// Which process to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pid {
    Myself,
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Myself => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// User plus system CPU time of the whole process (all threads), in ticks.
pub fn cpu_ticks(pid: Pid) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{}/stat", pid.dir())).ok()?;
    parse_cpu_ticks(&stat)
}

/// Fields 14 (utime) and 15 (stime) of a stat line; the command name in
/// field 2 may hold spaces and parentheses, so counting starts after the
/// last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: Pid) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{}/status", pid.dir())).ok()?;
    parse_rss_kib(&status)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU use of one process over an interval.
#[derive(Clone, Copy, Debug)]
pub struct CpuMeter {
    pid: Pid,
    ticks: Option<u64>,
    at: Instant,
}

impl CpuMeter {
    pub fn start(pid: Pid) -> Self {
        CpuMeter {
            pid,
            ticks: cpu_ticks(pid),
            at: Instant::now(),
        }
    }

    /// Percent of one core since `start` (100 = one core busy all the time).
    pub fn percent(&self) -> Option<f64> {
        let now = cpu_ticks(self.pid)?;
        let secs = self.at.elapsed().as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let used = now.checked_sub(self.ticks?)? as f64 / TICKS_PER_SECOND;
        Some(100.0 * used / secs)
    }
}

/// Raises the soft descriptor limit to the hard one; returns the limit now
/// in force. Many systems start processes at a soft limit of 1,024, which
/// would cap the bench far below its job.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let stat = "4242 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 170 30 0 0 20 0 1 0 100 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(200));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_rss() {
        let status = "Name:\tx\nVmPeak:\t  10 kB\nVmRSS:\t    2048 kB\nThreads:\t1\n";
        assert_eq!(parse_rss_kib(status), Some(2048));
        assert_eq!(parse_rss_kib("Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        assert!(rss_kib(Pid::Myself).unwrap() > 0);
        assert!(cpu_ticks(Pid::Myself).is_some());
        let meter = CpuMeter::start(Pid::Myself);
        let until = Instant::now() + std::time::Duration::from_millis(30);
        while Instant::now() < until {
            std::hint::black_box(0);
        }
        assert!(meter.percent().unwrap() >= 0.0);
    }
}
