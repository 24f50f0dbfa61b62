//! `roomcast client URL`: a line-oriented WebSocket client.
//!
//! stdin lines go out as text messages; text received is printed as lines,
//! binary as hex (or appended raw to `--binary-out`). At the end of stdin
//! the client waits `--wait` seconds for replies, closes with 1000 and exits
//! 0, so it works from a pipe. Ctrl-C also closes with 1000 (a second one
//! exits at once). With `--reconnect` a lost connection is reopened with
//! exponential backoff and jitter, and the `--on-connect` messages are sent
//! again on every connection: that is how a client rejoins its rooms.
//!
//! Threads: one reads stdin into a channel; the main thread owns the
//! connection and alternates between the channel and the socket, reading
//! the socket with a short timeout. Only one thread touches the connection,
//! so nothing needs a lock.
//!
//! `--autobahn` instead drives Autobahn's fuzzingserver at URL (see
//! `roomcast::client::autobahn` and `autobahn/client.sh`).

use clap::Args;
use roomcast::client::{
    Backoff, Client, ClientConfig, ClientError, HandshakeError, Message, WsUrl, check_header, load_ca_file,
};
use roomcast::protocol::deflate::DeflateConfig;
use roomcast::protocol::{CloseCode, CloseFrame, Limits};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

/// Exit statuses (documented in docs/client.md).
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_HANDSHAKE: u8 = 3;
const EXIT_INTERRUPTED: u8 = 130;

/// How long the main loop waits on the socket before looking at stdin and
/// signals again: the most a typed line or Ctrl-C waits.
const POLL: Duration = Duration::from_millis(20);

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Server URL: ws[s]://host[:port][/path][?query] (IPv6 as [::1]).
    pub url: String,
    /// Extra request header, 'Name: value' (repeatable), e.g. for Authorization.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Subprotocol to offer (repeatable, in order of preference).
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    pub no_deflate: bool,
    /// Text message sent on every (re)connection before stdin lines (repeatable, in order).
    #[arg(long = "on-connect", value_name = "TEXT")]
    pub on_connect: Vec<String>,
    /// Append received binary messages, raw, to FILE instead of printing them as hex.
    #[arg(long, value_name = "FILE")]
    pub binary_out: Option<PathBuf>,
    /// Seconds to keep printing replies after stdin ends, before closing.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub wait: f64,
    /// Reconnect when the connection is lost or the server closes it.
    #[arg(long)]
    pub reconnect: bool,
    /// Reconnect attempts in a row that may fail before giving up (0: never give up).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_attempts: u32,
    /// First reconnect delay in seconds; it doubles per failed attempt.
    #[arg(long, default_value_t = 0.5, value_name = "SECS")]
    pub backoff_base: f64,
    /// Longest reconnect delay in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub backoff_max: f64,
    /// Seconds allowed for the TCP connection and the handshake.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Seconds allowed for the close handshake.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub close_timeout: f64,
    /// Largest message accepted from the server, in bytes (close 1009 beyond).
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_size: usize,
    /// PEM file of CA certificates to trust for wss:// besides the system's
    /// (a private CA, or a self-signed server certificate).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Drive Autobahn's fuzzingserver at URL: run every case, echoing, then update its reports.
    #[arg(long)]
    pub autobahn: bool,
    /// Agent name reported to the fuzzingserver (with --autobahn).
    #[arg(long, default_value = "roomcast", value_name = "NAME")]
    pub agent: String,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}

impl ClientArgs {
    fn config(&self) -> Result<ClientConfig, String> {
        let mut headers = Vec::new();
        for h in &self.headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("--header {h:?}: expected 'Name: value'"))?;
            let (name, value) = (name.trim(), value.trim());
            check_header(name, value).map_err(|e| format!("--header {h:?}: {e}"))?;
            headers.push((name.to_owned(), value.to_owned()));
        }
        let ca_certs = match &self.ca {
            Some(path) => load_ca_file(path).map_err(|e| format!("--ca {}: {e}", path.display()))?,
            None => Vec::new(),
        };
        Ok(ClientConfig {
            ca_certs,
            headers,
            protocols: self.protocols.clone(),
            deflate: DeflateConfig {
                enabled: !self.no_deflate,
                ..DeflateConfig::default()
            },
            limits: Limits {
                max_frame_size: self.max_message_size,
                max_message_size: self.max_message_size,
            },
            connect_timeout: secs(self.connect_timeout),
            close_timeout: secs(self.close_timeout),
            ..ClientConfig::default()
        })
    }
}

/// Runs `roomcast client`; the exit status says how it ended.
pub fn run(args: ClientArgs) -> ExitCode {
    let url = match WsUrl::parse(&args.url) {
        Ok(url) => url,
        Err(e) => return fail(EXIT_USAGE, &format!("{}: {e}", args.url)),
    };
    let config = match args.config() {
        Ok(config) => config,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    if args.autobahn {
        return run_autobahn(&url, &args.agent, config);
    }
    let stop = match stop_flag() {
        Ok(stop) => stop,
        Err(e) => return fail(EXIT_ERROR, &format!("cannot install signal handlers: {e}")),
    };
    let mut out = match Output::new(args.binary_out.as_ref()) {
        Ok(out) => out,
        Err(e) => return fail(EXIT_USAGE, &format!("--binary-out: {e}")),
    };
    let lines = read_stdin_lines();
    let mut backoff = Backoff::new(secs(args.backoff_base), secs(args.backoff_max));
    loop {
        let end = match Client::connect_to(&url, &config) {
            Ok(client) => {
                backoff.reset();
                log::info!("connected to {url}{}", describe(&client));
                session(client, &args, &lines, &stop, &mut out)
            }
            Err(e) => End::Failed(e),
        };
        let reason = match end {
            End::Done(Ok(())) => return ExitCode::SUCCESS,
            End::Done(Err(e)) => return fail(EXIT_ERROR, &format!("close: {e}")),
            End::Interrupted => return ExitCode::from(EXIT_INTERRUPTED),
            End::ServerClosed(frame) if !args.reconnect => return server_closed(frame),
            End::Failed(e) if !args.reconnect || !retryable(&e) => return fail(exit_status(&e), &e.to_string()),
            End::ServerClosed(frame) => format!("server closed the connection ({})", close_text(&frame)),
            End::Failed(e) => e.to_string(),
        };
        if args.max_attempts > 0 && backoff.attempts() >= args.max_attempts {
            return fail(
                EXIT_ERROR,
                &format!("{reason}; giving up after {} reconnect attempts", args.max_attempts),
            );
        }
        let delay = backoff.next_delay();
        log::warn!("{reason}; reconnecting in {:.2}s", delay.as_secs_f64());
        if sleep_unless(delay, &stop) {
            return ExitCode::from(EXIT_INTERRUPTED);
        }
    }
}

/// How one connection ended.
enum End {
    /// stdin ended and the close handshake ran (or failed).
    Done(Result<(), ClientError>),
    /// Ctrl-C or SIGTERM; the connection was closed with 1000.
    Interrupted,
    ServerClosed(Option<CloseFrame>),
    /// The connection could not be opened, or broke.
    Failed(ClientError),
}

/// Sends the `--on-connect` lines, then moves stdin lines out and
/// messages in until one side ends.
fn session(
    mut client: Client,
    args: &ClientArgs,
    lines: &Receiver<String>,
    stop: &AtomicBool,
    out: &mut Output,
) -> End {
    for text in &args.on_connect {
        if let Err(e) = client.send_text(text) {
            return End::Failed(e);
        }
    }
    let mut stdin_done: Option<Instant> = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            if let Err(e) = client.close(CloseCode::NORMAL, "") {
                log::warn!("close: {e}");
            }
            return End::Interrupted;
        }
        let now = Instant::now();
        if let Some(deadline) = stdin_done
            && now >= deadline
        {
            return End::Done(client.close(CloseCode::NORMAL, "").map(|_| ()));
        }
        while stdin_done.is_none() {
            match lines.try_recv() {
                Ok(line) => {
                    if let Err(e) = client.send_text(&line) {
                        return End::Failed(e);
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => stdin_done = Some(now + secs(args.wait)),
            }
        }
        let timeout = stdin_done.map_or(POLL, |d| d.saturating_duration_since(now).min(POLL));
        match client.read_message_timeout(timeout) {
            Ok(None) => {}
            Ok(Some(Message::Text(text))) => out.text(&text),
            Ok(Some(Message::Binary(data))) => out.binary(&data),
            Ok(Some(Message::Close(frame))) => return End::ServerClosed(frame),
            Err(e) => return End::Failed(e),
        }
    }
}

/// Where received messages go.
struct Output {
    binary_file: Option<File>,
}

impl Output {
    fn new(binary_out: Option<&PathBuf>) -> io::Result<Output> {
        let binary_file = match binary_out {
            Some(path) => Some(File::options().create(true).append(true).open(path)?),
            None => None,
        };
        Ok(Output { binary_file })
    }

    fn text(&mut self, text: &str) {
        // A closed stdout (`| head -1`) is not a reason to drop the connection.
        let _ = writeln!(io::stdout().lock(), "{text}");
    }

    fn binary(&mut self, data: &[u8]) {
        match &mut self.binary_file {
            Some(file) => {
                if let Err(e) = file.write_all(data) {
                    log::error!("--binary-out: {e}");
                }
            }
            None => {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                let _ = writeln!(io::stdout().lock(), "{hex}");
            }
        }
    }
}

/// Reads stdin lines on a thread; the channel disconnects at end of input.
/// Blank lines are skipped; invalid UTF-8 is replaced (text messages must
/// be UTF-8).
fn read_stdin_lines() -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match stdin.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end_matches(['\n', '\r']);
                if !line.is_empty() && tx.send(line.to_owned()).is_err() {
                    return;
                }
            }
        })
        .expect("spawn stdin thread");
    rx
}

/// A flag set by SIGINT or SIGTERM; a second signal exits at once with 130.
fn stop_flag() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(signal, EXIT_INTERRUPTED.into(), Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    Ok(stop)
}

/// Sleeps for `delay`; returns true if a signal asked to stop meanwhile.
fn sleep_unless(delay: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + delay;
    loop {
        if stop.load(Ordering::SeqCst) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// Whether trying again can help: not for a bad request (4xx other than
/// 408/429), a misbehaving handshake answer or a bad URL.
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Handshake(HandshakeError::Rejected { status, .. }) => {
            !(400..500).contains(status) || matches!(status, 408 | 429)
        }
        ClientError::Handshake(
            HandshakeError::Invalid(_)
            | HandshakeError::Extension(_)
            | HandshakeError::BadHeader(_)
            | HandshakeError::Tls(_),
        ) => false,
        ClientError::Url(_) => false,
        _ => true,
    }
}

fn exit_status(e: &ClientError) -> u8 {
    match e {
        ClientError::Handshake(_) => EXIT_HANDSHAKE,
        _ => EXIT_ERROR,
    }
}

/// A close by the server ends the run: 0 for 1000 (or no code), else 1.
fn server_closed(frame: Option<CloseFrame>) -> ExitCode {
    match &frame {
        None => ExitCode::SUCCESS,
        Some(f) if f.code == CloseCode::NORMAL => ExitCode::SUCCESS,
        Some(_) => fail(
            EXIT_ERROR,
            &format!("server closed the connection ({})", close_text(&frame)),
        ),
    }
}

fn close_text(frame: &Option<CloseFrame>) -> String {
    match frame {
        None => "no status code".into(),
        Some(f) if f.reason.is_empty() => format!("code {}", f.code.0),
        Some(f) => format!("code {}: {}", f.code.0, f.reason),
    }
}

fn describe(client: &Client) -> String {
    let mut s = String::new();
    if let Some(p) = client.protocol() {
        s.push_str(&format!(" (subprotocol {p})"));
    }
    if client.is_compressed() {
        s.push_str(" (permessage-deflate)");
    }
    s
}

fn fail(status: u8, message: &str) -> ExitCode {
    log::error!("{message}");
    ExitCode::from(status)
}

fn run_autobahn(url: &WsUrl, agent: &str, config: ClientConfig) -> ExitCode {
    let config = ClientConfig {
        // Messages up to 16 MiB (9.x) arrive in one piece.
        limits: Limits {
            max_frame_size: 64 * 1024 * 1024,
            max_message_size: 64 * 1024 * 1024,
        },
        // A case the server abandons must not hang the run.
        read_timeout: Some(Duration::from_secs(60)),
        ..config
    };
    match roomcast::client::autobahn::run(url, agent, &config) {
        Ok(summary) if summary.not_connected == 0 => {
            log::info!("autobahn: ran {} cases", summary.cases);
            ExitCode::SUCCESS
        }
        Ok(summary) => fail(
            EXIT_ERROR,
            &format!(
                "autobahn: {} of {} cases could not connect",
                summary.not_connected, summary.cases
            ),
        ),
        Err(e) => fail(exit_status(&e), &format!("autobahn: {e}")),
    }
}
