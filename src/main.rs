//! `roomcast`: the command-line entry point.

use clap::{Parser, Subcommand};
use roomcast::apps::echo::Echo;
use roomcast::net::Config;
use roomcast::rooms::RoomServer;
use roomcast::runtime::{self, Runtime};
use std::process::ExitCode;

mod bin_alloc;
mod cli;

#[global_allocator]
static ALLOCATOR: bin_alloc::Counting = bin_alloc::Counting;

#[derive(Parser)]
#[command(
    name = "roomcast",
    version,
    about = "A WebSocket room server written from scratch on RFC 6455"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The room server (the default command): /ws, /ws/{room}, /pubsub/{topic}, /health, /stats, /metrics, and the chat page at /.
    Serve(Box<cli::ServeArgs>),
    /// Echo every message back, on every path (conformance runs, benchmarks).
    Echo(cli::ServerArgs),
    /// Connect to a WebSocket server: stdin lines out, messages in (docs/client.md).
    Client(cli::client::ClientArgs),
    /// Load generator against a loopback server: echo, broadcast, connect (docs/benchmarks.md).
    Bench(cli::bench::BenchArgs),
}

fn main() -> ExitCode {
    roomcast::heap::enable();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Flags over env over `--config` file over defaults (src/cli/config/).
    let cli: Cli = cli::config::parse(std::env::args_os());
    let command = cli.command.unwrap_or_else(|| {
        // No subcommand is `serve`, with env and file the same.
        let serve: Cli = cli::config::parse(["roomcast", "serve"]);
        serve.command.expect("parsed as serve")
    });
    let result = match command {
        Command::Serve(args) => {
            let auth = match args.auth.authenticator() {
                Ok(auth) => auth,
                Err(e) => {
                    log::error!("auth configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if auth.enabled() {
                log::info!("auth on: upgrades without a valid token or API key get 401");
            } else {
                log::warn!(
                    "AUTH IS OFF: anyone can connect under any ?username= and join every room. \
                     Configure --jwt-secret-file, --jwt-rs256-key, --jwt-es256-key or --api-keys \
                     before exposing this server (README \"Security\")."
                );
            }
            let redis = match args.redis.config() {
                Ok(redis) => redis,
                Err(e) => {
                    log::error!("redis configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(redis) = &redis {
                let urls: Vec<String> = redis.urls.iter().map(ToString::to_string).collect();
                log::info!(
                    "room state and history in Redis ({}); --store is not used",
                    urls.join(", ")
                );
            }
            let api_keys = match args.api.keys() {
                Ok(keys) => keys,
                Err(e) => {
                    log::error!("publish API: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(keys) = &api_keys {
                log::info!("publish API on at /api/ with {} key(s)", keys.len());
            }
            let room_config = args.room_config();
            let (workers, mode, store) = (args.server.workers(), args.server.accept_mode(), args.store());
            let max_api_body = args.api.max_api_body;
            serve(&args.server, |config| {
                let config = Config {
                    max_body_size: max_api_body,
                    ..config
                };
                let server = RoomServer::new(config, room_config)
                    .auth(auth)
                    .workers(workers)
                    .accept(mode)
                    .store(store)
                    .redis(redis);
                match api_keys {
                    Some(keys) => server.api_keys(keys),
                    None => server,
                }
                .start()
            })
        }
        Command::Echo(args) => {
            let (workers, mode) = (args.workers(), args.accept_mode());
            serve(&args, |config| runtime::start(config, workers, mode, |_, _| Echo))
        }
        Command::Client(args) => return cli::client::run(args),
        Command::Bench(args) => return cli::bench::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the workers `start` makes, stops them on SIGINT/SIGTERM, and
/// waits: a worker that panics ends the process with an error.
fn serve(
    args: &cli::ServerArgs,
    start: impl FnOnce(Config) -> std::io::Result<Runtime>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config {
        tls: args.tls()?,
        ..args.config()
    };
    let tls = config.tls.clone();
    let runtime = start(config)?;
    cli::stop_on_signals(runtime.stopper(), tls.clone())?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    log::info!(
        "listening on {} for {scheme}:// with {} worker{}",
        runtime.local_addr(),
        runtime.workers(),
        if runtime.workers() == 1 { "" } else { "s" }
    );
    runtime.wait()?;
    Ok(())
}
