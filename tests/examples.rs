//! The programs in examples/, compiled into this test and run on loopback
//! with tungstenite as the client: the crate is usable as a library (a
//! custom `App` on the runtime, the room server with hooks). `cargo test`
//! also builds the examples themselves, so their `main`s keep compiling.

mod common;

use common::*;
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpStream};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// The examples' code, compiled into this test: their `start` functions
/// run the same servers their `main`s do.
#[path = "../examples/chat_filter.rs"]
#[allow(dead_code)]
mod chat_filter;
#[path = "../examples/game_lobby.rs"]
#[allow(dead_code)]
mod game_lobby;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).unwrap();
}

fn next_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let event = recv_json(ws);
        if event["type"] == kind {
            return event;
        }
    }
}

#[test]
fn chat_filter_stars_words_refuses_links_and_guards_staff_rooms() {
    let server = chat_filter::start(loopback()).unwrap();
    let addr = server.local_addr();
    let mut alice = ws(addr, "/ws?username=alice");
    next_of(&mut alice, "welcome");
    send(&mut alice, json!({"type": "join", "room": "lobby"}));
    next_of(&mut alice, "joined");
    send(
        &mut alice,
        json!({"type": "broadcast", "room": "lobby", "content": "what the Heck, darn it"}),
    );
    assert_eq!(next_of(&mut alice, "message")["content"], "what the ****, **** it");
    send(
        &mut alice,
        json!({"type": "broadcast", "room": "lobby", "content": "see https://x.example", "id": 1}),
    );
    let err = next_of(&mut alice, "error");
    assert_eq!(
        (err["code"].clone(), err["message"].clone(), err["id"].clone()),
        (json!("rejected"), json!("no links, please"), json!(1))
    );
    send(
        &mut alice,
        json!({"type": "broadcast", "room": "lobby", "content": {"not": "text"}}),
    );
    assert_eq!(next_of(&mut alice, "error")["code"], "rejected");
    send(&mut alice, json!({"type": "join", "room": "staff-room"}));
    let err = next_of(&mut alice, "error");
    assert_eq!(
        (err["code"].clone(), err["message"].clone()),
        (json!("not_authorized"), json!("staff rooms are for staff"))
    );
    let mut staff = ws(addr, "/ws?username=staff-bob");
    next_of(&mut staff, "welcome");
    send(&mut staff, json!({"type": "join", "room": "staff-room"}));
    assert_eq!(next_of(&mut staff, "joined")["room"], "staff-room");
    // The chat-tutorial dialect joins at the upgrade: refused with 403.
    let (status, _) = http(addr, &upgrade_request("/ws/staff-room?username=carol", ""));
    assert_eq!(status, 403);
}

#[test]
fn game_lobby_counts_down_when_everyone_is_ready() {
    let server = game_lobby::start(loopback(), std::time::Duration::from_millis(300)).unwrap();
    let addr = server.local_addr();
    let mut ann = ws(addr, "/lobby?name=ann");
    assert_eq!(
        next_of(&mut ann, "lobby")["players"],
        json!([{"name": "ann", "ready": false}])
    );
    let mut ben = ws(addr, "/lobby?name=ben");
    next_of(&mut ben, "lobby");
    next_of(&mut ann, "lobby");
    ann.send(Message::text("ready")).unwrap();
    let lobby = next_of(&mut ben, "lobby");
    assert_eq!(lobby["countdown"], false, "one of two is ready");
    ben.send(Message::text("ready")).unwrap();
    assert_eq!(next_of(&mut ann, "lobby")["countdown"], false);
    assert_eq!(
        next_of(&mut ann, "lobby")["countdown"],
        true,
        "everyone ready: counting down"
    );
    assert_eq!(next_of(&mut ann, "start")["round"], 1);
    assert_eq!(next_of(&mut ben, "start")["round"], 1);
    let after = next_of(&mut ann, "lobby");
    assert!(
        after["players"].as_array().unwrap().iter().all(|p| p["ready"] == false),
        "{after}"
    );
    ann.send(Message::text("dance")).unwrap();
    assert_eq!(next_of(&mut ann, "error")["message"], "send `ready` or `unready`");
    let (status, _) = http(addr, &upgrade_request("/lobby?name=", ""));
    assert_eq!(status, 400);
}
