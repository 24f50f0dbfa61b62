//! A chat server that filters what is said: roomcast's room server, with
//! hooks deciding about joins and messages.
//!
//!     cargo run --example chat_filter [ADDR]     # default 127.0.0.1:9002
//!
//! - Banned words are starred out; links are refused (a `/ws` client gets
//!   the error `rejected` with the reason).
//! - Rooms whose name starts with `staff` are for users whose name does too.
//! - Connections are logged as they come and go.

use roomcast::net::Config;
use roomcast::rooms::{Hooks, Publish, RoomConfig, RoomServer};
use roomcast::runtime::Runtime;
use serde_json::Value;
use std::net::SocketAddr;

struct Filter {
    banned: &'static [&'static str],
}

impl Filter {
    /// `text` with every banned word (any case) replaced by stars.
    fn starred(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for word in self.banned {
            let lower = out.to_lowercase();
            let mut from = 0;
            while let Some(at) = lower[from..].find(word) {
                let start = from + at;
                out.replace_range(start..start + word.len(), &"*".repeat(word.len()));
                from = start + word.len();
            }
        }
        out
    }
}

impl Hooks for Filter {
    fn on_connect(&self, user: &str, conn: u64) {
        log::info!("{user} connected (connection {conn})");
    }

    fn on_disconnect(&self, user: &str, conn: u64) {
        log::info!("{user} left (connection {conn})");
    }

    fn authorize_join(&self, user: &str, room: &str) -> Result<(), String> {
        if room.starts_with("staff") && !user.starts_with("staff") {
            return Err("staff rooms are for staff".into());
        }
        Ok(())
    }

    fn on_publish(&self, _user: &str, _room: &str, content: &Value) -> Publish {
        let Some(text) = content.as_str() else {
            return Publish::Reject("only text messages here".into());
        };
        if text.contains("http://") || text.contains("https://") {
            return Publish::Reject("no links, please".into());
        }
        let starred = self.starred(text);
        if starred == text {
            Publish::Keep
        } else {
            Publish::Replace(Value::String(starred))
        }
    }
}

/// The filtered chat server on `listen` (port 0: any free port).
pub fn start(listen: SocketAddr) -> std::io::Result<Runtime> {
    let config = Config {
        listen,
        ..Config::default()
    };
    RoomServer::new(config, RoomConfig::default())
        .hooks(Filter {
            banned: &["darn", "heck"],
        })
        .workers(2)
        .start()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let listen: SocketAddr = std::env::args().nth(1).as_deref().unwrap_or("127.0.0.1:9002").parse()?;
    let runtime = start(listen)?;
    println!("chat_filter listening on {}", runtime.local_addr());
    runtime.wait()?;
    Ok(())
}
