//! Flags shared by the server commands, and signal handling.

pub mod bench;
pub mod client;
pub mod config;

use clap::{Args, Parser, ValueEnum};
use roomcast::auth::{self, ApiKeys, Authenticator, JwtConfig, JwtVerifier, ServerKeys};
use roomcast::engine::redis::{RedisConfig, RedisUrl};
use roomcast::net::{Config, OverflowPolicy, TlsConfig, TlsError};
use roomcast::protocol::Limits;
use roomcast::protocol::deflate::DeflateConfig;
use roomcast::rooms::rate::RateLimit;
use roomcast::rooms::{RoomConfig, StoreKind};
use roomcast::runtime::{AcceptMode, Stop};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AcceptModeArg {
    Reuseport,
    Handoff,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Overflow {
    Close,
    Drop,
}

/// Event-loop settings; every default is the library's `Config::default()`.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub listen: SocketAddr,
    /// Event-loop threads, each with its own listener (SO_REUSEPORT); 0
    /// means one per core this process may use.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// How connections are spread over the workers: a listener per worker
    /// (`reuseport`, the kernel picks) or worker 0 accepting and handing
    /// them out in turn (`handoff`).
    #[arg(long, value_enum, default_value = "reuseport")]
    pub accept_mode: AcceptModeArg,
    /// Listen backlog (capped by the kernel's net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,
    /// Seconds the kernel holds a new connection until it sends its first
    /// bytes (TCP_DEFER_ACCEPT): one wake-up per connection instead of two.
    /// A connection that sends nothing reaches the server after this; 0: off.
    #[arg(long, default_value_t = 1)]
    pub defer_accept: u32,
    /// Largest message in bytes, after reassembly and inflation (close 1009 beyond).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_message_size: usize,
    /// Largest frame payload in bytes (close 1009 beyond); defaults to the message limit.
    #[arg(long)]
    pub max_frame_size: Option<usize>,
    /// Connections held at once (HTTP 503 beyond).
    #[arg(long, default_value_t = 100_000)]
    pub max_connections: usize,
    /// Connections one client address may hold (IPv6: per /64; HTTP 429 beyond; 0 = unlimited).
    #[arg(long, default_value_t = 1000)]
    pub max_connections_per_ip: usize,
    /// New connections per second one client address may open, with a
    /// burst of twice that (HTTP 429 beyond; 0 = unlimited).
    #[arg(long, default_value_t = 100.0)]
    pub handshake_rate_per_ip: f64,
    /// Pings per second a client may send, sustained (close 1008 beyond; 0 = unlimited).
    #[arg(long, default_value_t = 10.0)]
    pub ping_rate: f64,
    /// Pings a client may send in a burst.
    #[arg(long, default_value_t = 50.0)]
    pub ping_burst: f64,
    /// Largest HTTP request head in bytes (431 beyond).
    #[arg(long, default_value_t = 8192)]
    pub max_head_size: usize,
    /// Per-connection send queue limit in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_send_queue: usize,
    /// What to do when a send queue is full: close the slow client (1008) or drop messages.
    #[arg(long, value_enum, default_value = "close")]
    pub overflow: Overflow,
    /// Seconds allowed for the upgrade request to arrive (and for each plain
    /// HTTP request, head and body, from its first byte).
    #[arg(long, default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Seconds an HTTP keep-alive connection may sit idle between requests.
    #[arg(long, default_value_t = 30.0)]
    pub keepalive_timeout: f64,
    /// Seconds of peer silence before a ping (0 turns pings off).
    #[arg(long, default_value_t = 30.0)]
    pub ping_interval: f64,
    /// Seconds to wait for any answer to a ping before dropping the peer.
    #[arg(long, default_value_t = 10.0)]
    pub pong_timeout: f64,
    /// Seconds without a data message before closing (0 = never).
    #[arg(long, default_value_t = 0.0)]
    pub idle_timeout: f64,
    /// Seconds to wait for the peer's side of the close handshake.
    #[arg(long, default_value_t = 5.0)]
    pub close_timeout: f64,
    /// Seconds a graceful shutdown may take.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_timeout: f64,
    /// Allowed Origin header value (repeatable); none given admits every origin.
    #[arg(long = "allow-origin")]
    pub allowed_origins: Vec<String>,
    /// Turn permessage-deflate (RFC 7692) off.
    #[arg(long)]
    pub no_deflate: bool,
    /// Keep a compression context per connection (better ratio, ~400 KB per
    /// active connection) instead of compressing each message afresh, which
    /// lets a broadcast be compressed once for every member.
    #[arg(long)]
    pub deflate_context_takeover: bool,
    /// Messages shorter than this many bytes go uncompressed.
    #[arg(long, default_value_t = 64)]
    pub deflate_threshold: usize,
    /// zlib compression level, 0-9.
    #[arg(long, default_value_t = 5)]
    pub deflate_level: u8,
    /// Largest LZ77 window (log2) the server compresses with, 9-15.
    #[arg(long, default_value_t = 15)]
    pub deflate_window_bits: u8,
    /// PEM certificate chain, leaf first: serve wss:// (TLS) instead of ws://.
    /// SIGHUP reloads it and the key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// `roomcast serve`: the event-loop flags plus the room server's own.
#[derive(Parser, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Messages kept per room for `history` and recovery.
    #[arg(long, default_value_t = 100)]
    pub history_size: usize,
    /// Seconds a message stays in history (0 = no age limit; default 7 days).
    #[arg(long, default_value_t = 604_800.0)]
    pub history_ttl: f64,
    /// Where history is kept: `sqlite:PATH` (an embedded SQLite file,
    /// created if missing) or `memory` (lost at exit).
    #[arg(long, default_value = "sqlite:roomcast.db")]
    pub store: StoreKind,
    /// Longest time, in milliseconds, a message waits before its batch is
    /// written (the most a crash can lose).
    #[arg(long, default_value_t = 100)]
    pub store_flush_ms: u64,
    /// Messages that make a batch be written at once.
    #[arg(long, default_value_t = 1000)]
    pub store_batch: usize,
    /// Rooms one connection may be in.
    #[arg(long, default_value_t = 64)]
    pub max_rooms_per_connection: usize,
    /// Largest message `content` in bytes of compact JSON (`message_too_large` beyond).
    #[arg(long, default_value_t = 32 * 1024)]
    pub max_content_size: usize,
    /// Sustained messages per second per connection (`rate_limited` beyond).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Burst of messages per connection; a client that keeps sending a whole
    /// burst's worth while limited is closed with 1008.
    #[arg(long, default_value_t = 100.0)]
    pub burst: f64,
    /// Do not serve the chat page at `/` and its assets (404 instead).
    #[arg(long)]
    pub no_demo: bool,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub api: ApiArgs,
}

/// The server-side publish API under `/api/` (README "Publish API").
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// File of SHA-256 hashes of the publish API's keys, one per line with a
    /// name (format in README "Publish API"); the API is off (404) without it.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body the publish API reads, in bytes (413 beyond).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_api_body: usize,
}

impl ApiArgs {
    /// Reads the key file. Errors name the file and line, never a key.
    pub fn keys(&self) -> Result<Option<ServerKeys>, String> {
        let Some(path) = &self.api_key_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ServerKeys::parse(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Several nodes sharing rooms through Redis (README "Several nodes on Redis").
#[derive(Args, Debug)]
pub struct RedisArgs {
    /// Share rooms, presence, history and users with other nodes through
    /// this Redis server: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], or
    /// rediss:// for TLS. Repeat to shard rooms over several servers (every
    /// node lists them in the same order). History then lives in Redis and
    /// --store is not used.
    #[arg(long = "redis", value_name = "URL")]
    pub urls: Vec<RedisUrl>,
    /// Seconds after which the other nodes remove the users of a node that
    /// stopped beating (killed, cut off), with user_left; a node beats
    /// every sixth of this.
    #[arg(long, default_value_t = 15.0)]
    pub redis_node_timeout: f64,
    /// PEM file of CA certificates to trust for rediss:// besides the system's.
    #[arg(long, value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,
}

impl RedisArgs {
    /// The Redis engine's settings, if `--redis` is given.
    pub fn config(&self) -> Result<Option<RedisConfig>, String> {
        if self.urls.is_empty() {
            return Ok(None);
        }
        if self.redis_node_timeout.is_nan() || self.redis_node_timeout < 0.5 {
            return Err("--redis-node-timeout must be at least 0.5 seconds".into());
        }
        let mut config = RedisConfig::new(self.urls.clone());
        config.node_timeout = secs(self.redis_node_timeout);
        if let Some(path) = &self.redis_ca {
            config.ca = roomcast::client::load_ca_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(Some(config))
    }
}

/// Authentication at the handshake (README "Security"). With none of the
/// key flags, auth is off: anyone may connect under any `?username=`.
#[derive(Args, Debug)]
pub struct AuthArgs {
    /// File holding the HS256 shared secret (at least 32 bytes; a trailing
    /// newline is ignored). Or the secret itself in env ROOMCAST_JWT_SECRET.
    #[arg(long, value_name = "FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM file with the RSA public key for RS256 tokens.
    #[arg(long, value_name = "FILE")]
    pub jwt_rs256_key: Option<PathBuf>,
    /// PEM file with the P-256 public key for ES256 tokens.
    #[arg(long, value_name = "FILE")]
    pub jwt_es256_key: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[arg(long, default_value_t = 30)]
    pub jwt_leeway: u64,
    /// Cookie that may carry the token (for browsers).
    #[arg(long, default_value = auth::DEFAULT_COOKIE)]
    pub auth_cookie: String,
    /// File of hashed API keys for service clients (`X-API-Key` header; format in README).
    #[arg(long, value_name = "FILE")]
    pub api_keys: Option<PathBuf>,
}

impl AuthArgs {
    /// Reads the configured keys. Errors name the file, never its contents.
    pub fn authenticator(&self) -> Result<Authenticator, String> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let secret = match (&self.jwt_secret_file, config::jwt_secret_from_env()) {
            (Some(path), None) => {
                let mut secret = read(path)?;
                while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    secret.pop();
                }
                Some(secret)
            }
            (None, from_env) => from_env,
            (Some(_), Some(_)) => {
                return Err(format!(
                    "both {} and --jwt-secret-file are set: give one",
                    config::JWT_SECRET_ENV
                ));
            }
        };
        let jwt = JwtVerifier::new(&JwtConfig {
            hs256_secret: secret,
            rs256_public_key_pem: self.jwt_rs256_key.as_ref().map(read).transpose()?,
            es256_public_key_pem: self.jwt_es256_key.as_ref().map(read).transpose()?,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway: self.jwt_leeway,
        })?;
        let api_keys = match &self.api_keys {
            Some(path) => {
                let text = String::from_utf8(read(path)?).map_err(|_| format!("{}: not UTF-8", path.display()))?;
                Some(ApiKeys::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => None,
        };
        Ok(Authenticator::new(jwt, api_keys, &self.auth_cookie))
    }
}

impl ServeArgs {
    /// `--store` with its flush settings.
    pub fn store(&self) -> StoreKind {
        match &self.store {
            StoreKind::Sqlite { path, .. } => StoreKind::Sqlite {
                path: path.clone(),
                flush: Duration::from_millis(self.store_flush_ms.max(1)),
                batch: self.store_batch.max(1),
                max_bytes: None,
            },
            StoreKind::Memory => StoreKind::Memory,
        }
    }

    pub fn room_config(&self) -> RoomConfig {
        RoomConfig {
            max_rooms_per_connection: self.max_rooms_per_connection,
            history_size: self.history_size,
            history_ttl: optional_secs(self.history_ttl),
            max_content_size: self.max_content_size,
            rate: RateLimit {
                per_second: self.rate,
                burst: self.burst.max(1.0),
            },
            demo: !self.no_demo,
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn optional_secs(s: f64) -> Option<Duration> {
    (s > 0.0).then(|| secs(s))
}

impl ServerArgs {
    /// `--workers`, with 0 resolved to the cores available.
    pub fn workers(&self) -> usize {
        match self.workers {
            0 => roomcast::runtime::default_workers(),
            n => n,
        }
    }

    pub fn accept_mode(&self) -> AcceptMode {
        match self.accept_mode {
            AcceptModeArg::Reuseport => AcceptMode::ReusePort,
            AcceptModeArg::Handoff => AcceptMode::Handoff,
        }
    }

    pub fn config(&self) -> Config {
        Config {
            listen: self.listen,
            backlog: self.backlog,
            defer_accept: self.defer_accept,
            max_connections: self.max_connections,
            max_head_size: self.max_head_size,
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_rate_per_ip: (self.handshake_rate_per_ip > 0.0).then(|| RateLimit {
                per_second: self.handshake_rate_per_ip,
                burst: (2.0 * self.handshake_rate_per_ip).max(1.0),
            }),
            ping_rate: (self.ping_rate > 0.0).then(|| RateLimit {
                per_second: self.ping_rate,
                burst: self.ping_burst.max(1.0),
            }),
            handshake_timeout: secs(self.handshake_timeout),
            keepalive_timeout: secs(self.keepalive_timeout),
            ping_interval: optional_secs(self.ping_interval),
            pong_timeout: secs(self.pong_timeout),
            idle_timeout: optional_secs(self.idle_timeout),
            close_timeout: secs(self.close_timeout),
            limits: Limits {
                max_frame_size: self.max_frame_size.unwrap_or(self.max_message_size),
                max_message_size: self.max_message_size,
            },
            max_send_queue: self.max_send_queue,
            overflow: match self.overflow {
                Overflow::Close => OverflowPolicy::Close,
                Overflow::Drop => OverflowPolicy::Drop,
            },
            allowed_origins: self.allowed_origins.clone(),
            deflate: DeflateConfig {
                enabled: !self.no_deflate,
                server_max_window_bits: self.deflate_window_bits.clamp(9, 15),
                server_no_context_takeover: !self.deflate_context_takeover,
                threshold: self.deflate_threshold,
                level: self.deflate_level.min(9),
                ..DeflateConfig::default()
            },
            shutdown_timeout: secs(self.shutdown_timeout),
            ..Config::default()
        }
    }
}

impl ServerArgs {
    /// The certificate and key of `--tls-cert`/`--tls-key`, loaded now so a
    /// bad file stops the server at startup.
    pub fn tls(&self) -> Result<Option<TlsConfig>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsConfig::load(cert, key).map(Some),
            (None, None) => Ok(None),
            // clap's `requires` refuses this before we get here.
            _ => Err(TlsError("--tls-cert and --tls-key go together".into())),
        }
    }
}

/// SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
/// With TLS, SIGHUP reloads the certificate and key for new connections.
pub fn stop_on_signals(handle: Stop, tls: Option<TlsConfig>) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    if tls.is_some() {
        signals.add_signal(SIGHUP)?;
    }
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        let mut seen = false;
        for signal in signals.forever() {
            if signal == SIGHUP {
                reload(tls.as_ref());
                continue;
            }
            if seen {
                log::warn!("second signal {signal}: exiting now");
                std::process::exit(130);
            }
            seen = true;
            log::info!("signal {signal}: shutting down gracefully");
            handle.shutdown();
        }
    })?;
    Ok(())
}

fn reload(tls: Option<&TlsConfig>) {
    let Some(tls) = tls else { return };
    match tls.reload() {
        Ok(()) => log::info!("SIGHUP: TLS certificate and key reloaded; new connections use them"),
        Err(e) => log::error!("SIGHUP: TLS reload failed, keeping the current certificate: {e}"),
    }
}
