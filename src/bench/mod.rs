//! `roomcast bench`: a load generator for WebSocket servers on this machine.
//!
//! One thread, one `mio` event loop, no async runtime: the same shape as
//! the server it measures, seen from the client side (`driver`). Three
//! scenarios: `echo` (messages per second and round-trip latency),
//! `broadcast` (fan-out deliveries per second, publish-to-delivery latency,
//! lost deliveries) and `connect` (handshakes per second, then memory per
//! idle connection); `api` measures the publish API (publishes per second
//! over keep-alive HTTP connections). Latencies go into a log-bucketed `histogram`; each run
//! ends with human-readable lines and one JSON line (`report`).
//!
//! The generator proves it is not the bottleneck by reporting its own CPU
//! use (and the server's, given its pid) over the measurement window; the
//! per-message path allocates nothing: frames are encoded into reused
//! per-connection buffers and incoming frames are read in place.
//!
//! Targets are loopback only (`target`): anything else is refused.

pub mod api;
pub mod broadcast;
pub mod connect;
pub mod driver;
pub mod echo;
pub mod frames;
pub mod histogram;
pub mod payload;
pub mod probe;
pub mod process;
pub mod report;
pub mod soak;
pub mod target;

pub use api::ApiConfig;
pub use broadcast::{BroadcastConfig, Mode};
pub use connect::ConnectConfig;
pub use echo::EchoConfig;
pub use histogram::Histogram;
pub use report::Report;
pub use target::{Target, TargetError};

use std::io::Write;
use std::time::Duration;

/// Settings every scenario shares.
#[derive(Clone, Debug)]
pub struct Common {
    pub target: Target,
    /// Load before the measurement starts (not counted).
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// The server's pid, for its CPU use and resident memory.
    pub server_pid: Option<u32>,
    /// Opening handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Time allowed for all connections to open.
    pub connect_timeout: Duration,
    /// Connections per source address before the next 127.0.0.x is used.
    pub per_source_address: usize,
    /// The first source address to bind (then the next ones); `None`: the
    /// kernel's choice until `per_source_address` is exceeded.
    pub first_source: Option<std::net::Ipv4Addr>,
    /// Print progress lines as the run goes (the CLI does; tests do not).
    pub progress: bool,
    /// `broadcast`: connection k goes to `[target] + spread` in turn (the
    /// nodes of one cluster; docs/benchmarks.md "Several nodes on Redis").
    pub spread: Vec<Target>,
}

impl Common {
    pub fn new(target: Target) -> Common {
        Common {
            target,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            server_pid: None,
            connect_concurrency: 256,
            connect_timeout: Duration::from_secs(60),
            per_source_address: 10_000,
            first_source: None,
            progress: false,
            spread: Vec::new(),
        }
    }

    /// Where `planned` connections come from.
    pub fn sources(&self, planned: usize) -> target::Sources {
        target::Sources::new(planned, self.per_source_address, self.first_source, &self.target)
    }

    fn progress(&self, line: &str) {
        if self.progress {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// The measurement window, in the driver's nanoseconds: `[start, end)`.
/// The default window is empty, so nothing counts during warmup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn new(start: u64, length: Duration) -> Window {
        Window {
            start,
            end: start + length.as_nanos() as u64,
        }
    }

    pub fn contains(&self, ns: u64) -> bool {
        ns >= self.start && ns < self.end
    }
}

/// Raises the descriptor limit, then runs one scenario.
pub fn run_echo(config: &EchoConfig) -> std::io::Result<Report> {
    prepare(&config.common, config.connections);
    echo::run(config)
}

pub fn run_broadcast(config: &BroadcastConfig) -> std::io::Result<Report> {
    prepare(&config.common, config.members + config.publishers);
    broadcast::run(config)
}

pub fn run_api(config: &ApiConfig) -> std::io::Result<Report> {
    prepare(&config.common, config.connections + config.members);
    api::run(config)
}

pub fn run_connect(config: &ConnectConfig) -> std::io::Result<Report> {
    prepare(&config.common, config.connections);
    connect::run(config)
}

fn prepare(common: &Common, connections: usize) {
    match process::raise_fd_limit() {
        Ok(limit) if (limit as usize) < connections + 64 => common.progress(&format!(
            "warning: the descriptor limit is {limit}; {connections} connections will not all open"
        )),
        Ok(_) => {}
        Err(e) => common.progress(&format!("warning: cannot raise the descriptor limit: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds() {
        assert!(!Window::default().contains(0));
        let w = Window::new(100, Duration::from_nanos(50));
        assert!(!w.contains(99));
        assert!(w.contains(100));
        assert!(w.contains(149));
        assert!(!w.contains(150));
    }
}
