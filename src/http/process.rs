//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds`,
//! `process_start_time_seconds`), read from `/proc/self` as Prometheus'
//! own client libraries read them.

/// Clock ticks per second of `/proc` times: 100 on every Linux platform
/// roomcast runs on (`USER_HZ`; reading it would take `sysconf`, i.e. libc).
const TICKS: f64 = 100.0;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Process {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses): field 3 is `after[0]`.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rfind(')')
        .map_or(Vec::new(), |i| stat[i + 1..].split_whitespace().collect())
}

fn field<T: std::str::FromStr>(fields: &[&str], n: usize) -> Option<T> {
    fields.get(n.checked_sub(3)?)?.parse().ok()
}

/// `None` off Linux or when `/proc` is not mounted.
pub fn read() -> Option<Process> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f = stat_fields(&stat);
    let (utime, stime, start): (u64, u64, u64) = (field(&f, 14)?, field(&f, 15)?, field(&f, 22)?);
    let boot: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        line["Max open files".len()..].split_whitespace().next()?.parse().ok()
    });
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / TICKS,
        resident_bytes: rss_kib * 1024,
        open_fds,
        max_fds,
        start_time_seconds: boot as f64 + start as f64 / TICKS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = read().expect("/proc is there on Linux");
        assert!(p.resident_bytes > 0 && p.open_fds >= 3);
        assert!(p.max_fds.is_some_and(|m| m >= p.open_fds));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 365.0);
    }

    #[test]
    fn command_names_with_spaces_and_parentheses() {
        let f = stat_fields("42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 999 20");
        assert_eq!(field::<u64>(&f, 14), Some(111));
        assert_eq!(field::<u64>(&f, 15), Some(222));
        assert_eq!(field::<u64>(&f, 22), Some(999));
    }
}
