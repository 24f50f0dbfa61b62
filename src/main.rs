//! `roomcast`: the command-line entry point.

use clap::{Parser, Subcommand};
use roomcast::apps::echo::Echo;
use roomcast::net::{App, Config, Server};
use roomcast::rooms::Rooms;
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
    /// The room server (the default command): /ws, /ws/{room}, /pubsub/{topic}, /health, /stats, /metrics.
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
            run(&args.server, Rooms::new(args.room_config()).with_auth(auth))
        }
        Command::Echo(args) => run(&args, Echo),
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

fn run<A: App>(args: &cli::ServerArgs, app: A) -> std::io::Result<()> {
    let config = Config {
        tls: args.tls()?,
        ..args.config()
    };
    let tls = config.tls.clone();
    let mut server = Server::bind(config, app)?;
    cli::stop_on_signals(server.shutdown_handle(), tls.clone())?;
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    log::info!("listening on {} for {scheme}://", server.local_addr());
    server.run()
}
