//! `roomcast bench`: the load generator's flags; src/bench/ does the work.

use clap::{Args, Subcommand, ValueEnum};
use roomcast::bench::target::parse_source;
use roomcast::bench::{self, ApiConfig, BroadcastConfig, Common, ConnectConfig, EchoConfig, Mode, Target};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Subcommand, Debug)]
pub enum Scenario {
    /// C connections, each keeping D messages of S bytes in flight against an
    /// echo server: messages/s and round-trip latency.
    Echo(EchoArgs),
    /// N members of one room plus P publishers: deliveries/s,
    /// publish-to-delivery latency and lost deliveries.
    Broadcast(BroadcastArgs),
    /// Opens N connections (handshakes/s), then holds them idle and reports
    /// the server's memory per connection.
    Connect(ConnectArgs),
    /// C keep-alive HTTP connections publishing through roomcast's publish
    /// API (`POST /api/publish`): publishes/s and request-to-answer latency.
    Api(ApiBenchArgs),
    /// Everything at once against a room server for --duration seconds:
    /// members checking every delivery, churn with recovery, crowds,
    /// hostile clients, a fault-injecting proxy, resource accounting; exits
    /// non-zero on any loss, duplicate, leak or missing answer
    /// (docs/reliability.md).
    Soak(SoakArgs),
}

#[derive(Args, Debug)]
pub struct SoakArgs {
    /// The server's /ws endpoint; loopback only.
    #[arg(long, default_value = "ws://127.0.0.1:9001/ws")]
    pub url: String,
    /// Seconds the run lasts (the first fifth without churn or hostiles).
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
    /// The server's pid: resident memory, descriptors and threads from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Rooms of well-behaved members.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Members per room (the last one of each through the fault proxy).
    #[arg(long, default_value_t = 5)]
    pub members: usize,
    /// Messages per second per room.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Threads opening and closing connections all the time.
    #[arg(long, default_value_t = 4)]
    pub churners: usize,
    /// Idle connections per crowd burst (0: none).
    #[arg(long, default_value_t = 2000)]
    pub crowd: usize,
    /// Seconds between crowd bursts.
    #[arg(long, default_value_t = 10.0)]
    pub crowd_every: f64,
    /// No hostile clients.
    #[arg(long)]
    pub no_hostile: bool,
    /// The server's --handshake-timeout, in seconds (what slowloris expects).
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Milliseconds the p99 under load may exceed the calm p99.
    #[arg(long, default_value_t = 100.0)]
    pub p99_bound_ms: f64,
    /// KiB of resident memory the server may keep after the load (plus 5%).
    #[arg(long, default_value_t = 16384)]
    pub rss_slack_kib: u64,
    /// Write a chart of latency and memory over time (SVG) here.
    #[arg(long)]
    pub chart: Option<std::path::PathBuf>,
    /// Write the resource samples (JSON) here.
    #[arg(long)]
    pub samples: Option<std::path::PathBuf>,
}

/// Flags every scenario takes.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Server URL, ws://HOST:PORT/PATH; loopback addresses only
    /// (127.0.0.0/8, localhost, [::1]). The default depends on the scenario.
    #[arg(long)]
    pub url: Option<String>,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// The server's pid: report its CPU use and resident memory (from /proc).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Opening handshakes in flight at once.
    #[arg(long, visible_alias = "concurrency", default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Seconds allowed for all connections to open.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Connections per source address; beyond it connections come from
    /// 127.0.0.2, 127.0.0.3, ... (Linux's connect slows down past ~14k
    /// connections from one address to one server).
    #[arg(long, default_value_t = 10_000)]
    pub per_source_ip: usize,
    /// Bind connections to this loopback source address (and the next ones
    /// past --per-source-ip), e.g. 127.0.0.2 for a second bench process.
    #[arg(long)]
    pub source_ip: Option<String>,
}

#[derive(Args, Debug)]
pub struct EchoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections.
    #[arg(short, long, default_value_t = 100)]
    pub connections: usize,
    /// Payload bytes per message.
    #[arg(short, long, default_value_t = 20)]
    pub size: usize,
    /// Messages in flight per connection.
    #[arg(short = 'd', long, default_value_t = 1)]
    pub in_flight: usize,
    /// Binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Raw pub/sub relay (default URL ws://127.0.0.1:9001/pubsub/bench).
    Raw,
    /// roomcast's JSON protocol: join, then broadcast (default URL ws://127.0.0.1:9001/ws).
    Rooms,
}

#[derive(Args, Debug)]
pub struct BroadcastArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Members that only receive.
    #[arg(short = 'n', long, default_value_t = 100)]
    pub members: usize,
    /// Publishers (they receive too).
    #[arg(short, long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second across all publishers; 0 = as fast as the window allows.
    #[arg(short, long, default_value_t = 0.0)]
    pub rate: f64,
    /// Messages in flight per publisher (sent, own copy not yet back).
    #[arg(short, long, default_value_t = 16)]
    pub window: usize,
    /// Pad each published message to at least this many bytes.
    #[arg(short, long, default_value_t = 0)]
    pub size: usize,
    /// The server's protocol.
    #[arg(long, value_enum, default_value = "raw")]
    pub mode: ModeArg,
    /// Room to join in rooms mode.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Longest wait, in seconds, for missing deliveries after the window.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Another node of the same cluster (repeatable): connections go to
    /// --url and these in turn, publishers included.
    #[arg(long, value_name = "URL")]
    pub spread_url: Vec<String>,
    /// Offer permessage-deflate (RFC 7692) and inflate what comes back;
    /// messages are padded with varied text that compresses like JSON.
    #[arg(long)]
    pub deflate: bool,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Connections to open.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold the connections idle before reading memory.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
}

#[derive(Args, Debug)]
pub struct ApiBenchArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Keep-alive HTTP connections.
    #[arg(short, long, default_value_t = 1)]
    pub connections: usize,
    /// Requests in flight per connection (pipelined beyond 1).
    #[arg(short = 'd', long, default_value_t = 1)]
    pub in_flight: usize,
    /// Room to publish to.
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Pad each message's content to this many bytes.
    #[arg(short, long, default_value_t = 16)]
    pub size: usize,
    /// File holding the API key itself (its first line), as the server's
    /// --api-key-file lists its hash.
    #[arg(long, value_name = "FILE")]
    pub key_file: std::path::PathBuf,
    /// `/ws` members of the room that receive (and count) every publish.
    #[arg(short, long, default_value_t = 1)]
    pub members: usize,
    /// Longest wait, in seconds, for the last answers and deliveries.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

impl CommonArgs {
    fn common(&self, default_url: &str) -> Result<Common, String> {
        let url = self.url.as_deref().unwrap_or(default_url);
        let target = Target::parse(url).map_err(|e| e.to_string())?;
        if self.duration <= 0.0 {
            return Err("--duration must be positive".into());
        }
        Ok(Common {
            target,
            warmup: secs(self.warmup),
            duration: secs(self.duration),
            server_pid: self.server_pid,
            connect_concurrency: self.connect_concurrency.max(1),
            connect_timeout: secs(self.connect_timeout),
            per_source_address: self.per_source_ip.max(1),
            first_source: self
                .source_ip
                .as_deref()
                .map(parse_source)
                .transpose()
                .map_err(|e| e.to_string())?,
            progress: true,
            spread: Vec::new(),
        })
    }
}

/// What a scenario ended with.
enum Outcome {
    Report(bench::Report),
    /// Already reported; exit with this status.
    Done(ExitCode),
}

fn run_scenario(scenario: Scenario) -> Result<Outcome, String> {
    let report = match scenario {
        Scenario::Echo(a) => bench::run_echo(&EchoConfig {
            common: a.common.common("ws://127.0.0.1:9001/")?,
            connections: a.connections,
            size: a.size,
            in_flight: a.in_flight,
            binary: a.binary,
        }),
        Scenario::Broadcast(a) => {
            let (mode, default_url) = match a.mode {
                ModeArg::Raw => (Mode::Raw, "ws://127.0.0.1:9001/pubsub/bench"),
                ModeArg::Rooms => (Mode::Rooms, "ws://127.0.0.1:9001/ws"),
            };
            let mut common = a.common.common(default_url)?;
            for url in &a.spread_url {
                common.spread.push(Target::parse(url).map_err(|e| e.to_string())?);
            }
            if mode == Mode::Rooms && !common.target.target.contains("username=") {
                // One username for every connection: roomcast announces a
                // user's first connection only, so N members cost no N² presence events.
                let sep = if common.target.target.contains('?') { '&' } else { '?' };
                common.target = common
                    .target
                    .with_target(&format!("{}{sep}username=bench", common.target.target));
            }
            bench::run_broadcast(&BroadcastConfig {
                common,
                members: a.members,
                publishers: a.publishers,
                rate: a.rate.max(0.0),
                window: a.window,
                size: a.size,
                mode,
                room: a.room,
                drain: secs(a.drain),
                deflate: a.deflate,
            })
        }
        Scenario::Api(a) => {
            let key = std::fs::read_to_string(&a.key_file).map_err(|e| format!("{}: {e}", a.key_file.display()))?;
            let key = key.lines().next().unwrap_or("").trim().to_owned();
            if key.is_empty() {
                return Err(format!("{}: no key in it", a.key_file.display()));
            }
            // http:// names the same server: the API shares the WebSocket port.
            let mut common = a.common;
            common.url = common.url.map(|u| match u.strip_prefix("http://") {
                Some(rest) => format!("ws://{rest}"),
                None => u,
            });
            bench::run_api(&ApiConfig {
                common: common.common("ws://127.0.0.1:9001/")?,
                connections: a.connections.max(1),
                in_flight: a.in_flight,
                room: a.room,
                size: a.size,
                key,
                members: a.members,
                drain: secs(a.drain),
            })
        }
        Scenario::Connect(a) => bench::run_connect(&ConnectConfig {
            common: a.common.common("ws://127.0.0.1:9001/")?,
            connections: a.connections,
            hold: secs(a.hold),
        }),
        // It reports on its own, with its own exit status.
        Scenario::Soak(a) => return Ok(Outcome::Done(run_soak(a))),
    };
    report.map(Outcome::Report).map_err(|e| e.to_string())
}

fn run_soak(a: SoakArgs) -> ExitCode {
    let target = match Target::parse(&a.url) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("roomcast bench soak: {e}");
            return ExitCode::from(2);
        }
    };
    let config = bench::soak::SoakConfig {
        server_pid: a.server_pid,
        rooms: a.rooms.max(1),
        members: a.members.max(1),
        rate: a.rate.max(0.1),
        churners: a.churners,
        crowd: a.crowd,
        crowd_every: secs(a.crowd_every).max(Duration::from_secs(1)),
        hostile: !a.no_hostile,
        handshake_timeout: secs(a.handshake_timeout),
        p99_bound: secs(a.p99_bound_ms / 1000.0),
        rss_slack_kib: a.rss_slack_kib,
        chart: a.chart,
        samples: a.samples,
        ..bench::soak::SoakConfig::new(target, secs(a.duration).max(Duration::from_secs(5)))
    };
    match bench::soak::run(&config) {
        Ok(report) => {
            report.print();
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("roomcast bench soak: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(args: BenchArgs) -> ExitCode {
    match run_scenario(args.scenario) {
        Ok(Outcome::Report(report)) => {
            report.print();
            ExitCode::SUCCESS
        }
        Ok(Outcome::Done(status)) => status,
        Err(e) => {
            eprintln!("roomcast bench: {e}");
            ExitCode::FAILURE
        }
    }
}
