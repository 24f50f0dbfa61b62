//! A game lobby with state of its own, written directly on roomcast's event
//! loop (the `App` trait), without the room server.
//!
//!     cargo run --example game_lobby [ADDR] [COUNTDOWN_MS]   # 127.0.0.1:9003, 3000
//!
//! Players connect to `ws://ADDR/lobby?name=NAME` and send `ready` or
//! `unready`. After every change the server sends everyone the lobby:
//! `{"type":"lobby","players":[{"name":..,"ready":..}],"countdown":bool}`.
//! When at least two players are there and all are ready, a countdown starts
//! (a server-side timer); any change cancels it; when it ends everyone gets
//! `{"type":"start","round":N}` and the lobby resets for the next round.

use roomcast::net::{App, CloseReason, Config, ConnId, Ctx, Route, Shared};
use roomcast::protocol::MessageKind;
use roomcast::protocol::handshake::head::Request;
use roomcast::protocol::handshake::server::{Rejection, http_response};
use roomcast::runtime::{self, AcceptMode, Runtime};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Player {
    name: String,
    ready: bool,
}

struct Lobby {
    players: BTreeMap<ConnId, Player>,
    countdown: Duration,
    starts_at: Option<Instant>,
    round: u32,
}

impl Lobby {
    /// Tells everyone how the lobby stands.
    fn announce(&self, ctx: &mut Ctx<'_, String>) {
        let players: Vec<_> = self
            .players
            .values()
            .map(|p| json!({"name": p.name, "ready": p.ready}))
            .collect();
        let state = json!({"type": "lobby", "players": players, "countdown": self.starts_at.is_some()}).to_string();
        for &id in self.players.keys() {
            ctx.send(id, MessageKind::Text, state.as_bytes());
        }
    }

    /// Starts or cancels the countdown after a change.
    fn changed(&mut self, ctx: &mut Ctx<'_, String>) {
        let all_ready = self.players.len() >= 2 && self.players.values().all(|p| p.ready);
        self.starts_at = all_ready.then(|| ctx.now() + self.countdown);
        self.announce(ctx);
    }
}

impl App for Lobby {
    type State = String;

    fn route(&mut self, req: &Request, _peer: SocketAddr, _net: &Shared, _draining: bool) -> Route<String> {
        if req.path() != "/lobby" {
            return Route::Respond(http_response(404, "", "text/plain", b"not found"));
        }
        let name = req
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
            .filter(|n| (1..=32).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric()));
        match name {
            Some(name) => Route::Upgrade(name.to_owned()),
            None => Route::Reject(Rejection::new(400, "name: 1-32 letters or digits")),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_, String>, id: ConnId) {
        let name = ctx.state(id).cloned().unwrap_or_default();
        self.players.insert(id, Player { name, ready: false });
        self.changed(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, String>, id: ConnId, kind: MessageKind, data: &[u8]) {
        let ready = match (kind, data) {
            (MessageKind::Text, b"ready") => true,
            (MessageKind::Text, b"unready") => false,
            _ => {
                let error = json!({"type": "error", "message": "send `ready` or `unready`"}).to_string();
                ctx.send(id, MessageKind::Text, error.as_bytes());
                return;
            }
        };
        if let Some(player) = self.players.get_mut(&id) {
            player.ready = ready;
        }
        self.changed(ctx);
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, String>, id: ConnId, _name: String, _reason: CloseReason) {
        self.players.remove(&id);
        self.changed(ctx);
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.starts_at
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, String>) {
        self.starts_at = None;
        self.round += 1;
        let start = json!({"type": "start", "round": self.round}).to_string();
        for (&id, player) in &mut self.players {
            ctx.send(id, MessageKind::Text, start.as_bytes());
            player.ready = false;
        }
        self.announce(ctx);
    }
}

/// The lobby on `listen` (port 0: any free port), counting down `countdown`.
pub fn start(listen: SocketAddr, countdown: Duration) -> std::io::Result<Runtime> {
    let config = Config {
        listen,
        ..Config::default()
    };
    // One worker: the lobby's state lives in one place.
    let mut lobby = Some(Lobby {
        players: BTreeMap::new(),
        countdown,
        starts_at: None,
        round: 0,
    });
    runtime::start(config, 1, AcceptMode::default(), |_, _| {
        lobby.take().expect("one worker")
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9003").parse()?;
    let countdown = Duration::from_millis(args.next().map_or(Ok(3000), |a| a.parse())?);
    let runtime = start(listen, countdown)?;
    println!("game_lobby listening on {}", runtime.local_addr());
    runtime.wait()?;
    Ok(())
}
