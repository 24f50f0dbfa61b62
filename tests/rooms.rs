//! The room server end to end over real sockets, with tungstenite as the
//! client: presence, history and recovery, direct messages, typing, every
//! error code, the chat-tutorial and pub/sub dialects, slow consumers under
//! both policies, rate limits, shutdown, and the HTTP endpoints.

mod common;

use common::*;
use roomcast::net::{Config, OverflowPolicy};
use roomcast::rooms::rate::RateLimit;
use roomcast::rooms::{RoomConfig, RoomServer};
use roomcast::runtime::AcceptMode;
use serde_json::{Value, json};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tungstenite::Message;

/// How many workers the servers of the running test have, and how
/// connections reach them. Every test below runs on one worker and on three
/// (with `handoff`, connection k lands on worker k mod 3, so members,
/// senders and room owners are spread deterministically), and on two with
/// `SO_REUSEPORT` (the kernel's spread).
#[derive(Clone, Copy, Debug)]
struct Layout {
    workers: usize,
    mode: AcceptMode,
}

thread_local! {
    static LAYOUT: std::cell::Cell<Layout> = const { std::cell::Cell::new(Layout { workers: 1, mode: AcceptMode::ReusePort }) };
}

fn rooms(config: Config, room: RoomConfig) -> Running {
    let layout = LAYOUT.get();
    start_rooms(
        RoomServer::new(config, room)
            .workers(layout.workers)
            .accept(layout.mode),
    )
}

macro_rules! on_every_layout {
    ($($name:ident),* $(,)?) => {
        mod one_worker {
            $(#[test] fn $name() { super::$name() })*
        }
        mod three_workers_round_robin {
            $(#[test] fn $name() {
                super::LAYOUT.set(super::Layout { workers: 3, mode: super::AcceptMode::Handoff });
                super::$name()
            })*
        }
        mod two_workers_reuseport {
            $(#[test] fn $name() {
                super::LAYOUT.set(super::Layout { workers: 2, mode: super::AcceptMode::ReusePort });
                super::$name()
            })*
        }
    };
}

on_every_layout!(
    presence_with_multi_connection_users,
    broadcast_reaches_every_member_including_sender_with_increasing_seq,
    history_and_recovery_after_reconnect,
    direct_messages_reach_every_connection_of_the_user,
    typing_goes_to_every_other_connection,
    every_error_code_keeps_the_connection_open,
    binary_on_the_json_endpoint_is_closed_with_1003,
    bad_upgrades_and_http_routes,
    chat_tutorial_mode_is_byte_compatible,
    pubsub_relays_frames_verbatim_to_all_subscribers,
    a_burst_reaches_every_member_in_order_in_its_dialect,
    a_stalled_reader_is_closed_and_delays_no_one,
    a_stalled_reader_under_drop_policy_is_told_what_it_missed,
    rate_limits_answer_then_close_on_abuse,
    shutdown_tells_everyone_1001_and_health_turns_503,
    stats_and_metrics_match_the_traffic,
);

fn server() -> Running {
    rooms(test_config(), RoomConfig::default())
}

fn open(addr: SocketAddr, path: &str) -> Ws {
    ws(addr, path)
}

/// A `/ws` client that has read its `welcome`.
fn user(addr: SocketAddr, name: &str) -> Ws {
    let mut ws = open(addr, &format!("/ws?username={name}"));
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["user"], name);
    ws
}

fn recv(ws: &mut Ws) -> Value {
    recv_json(ws)
}

fn recv_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "join", "room": room}));
    let joined = recv(ws);
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

/// Expects an `error` with `code`.
fn expect_error(ws: &mut Ws, command: Value, code: &str) -> Value {
    send(ws, command.clone());
    let reply = recv(ws);
    assert_eq!(reply["type"], "error", "{command} -> {reply}");
    assert_eq!(reply["code"], code, "{command} -> {reply}");
    reply
}

/// Proves nothing is pending: a round trip on the same connection comes back first.
fn assert_quiet(ws: &mut Ws) {
    send(ws, json!({"type": "presence", "room": "__none__"}));
    let reply = recv(ws);
    assert_eq!(reply["type"], "error", "unexpected pending event: {reply}");
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = raw(addr);
    std::io::Write::write_all(&mut s, format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
    let (status, _) = read_head(&mut s);
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (status, body)
}

fn stats(addr: SocketAddr) -> Value {
    let (status, body) = get(addr, "/stats");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Polls `/stats` until `check` holds (the server processes closes asynchronously).
fn stats_when(addr: SocketAddr, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let s = stats(addr);
        if check(&s) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("stats never matched: {}", stats(addr));
}

fn presence_with_multi_connection_users() {
    let server = server();
    let mut alice1 = user(server.addr, "alice");
    let joined = join(&mut alice1, "lobby");
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    assert!(
        epoch.len() == 16 && epoch.bytes().all(|b| b.is_ascii_hexdigit()),
        "{joined}"
    );
    assert_eq!(
        joined,
        json!({"type": "joined", "room": "lobby", "users": ["alice"], "seq": 0, "epoch": epoch})
    );
    let mut bob = user(server.addr, "bob");
    let joined = join(&mut bob, "lobby");
    assert_eq!(joined["users"], json!(["alice", "bob"]));
    assert_eq!(
        recv(&mut alice1),
        json!({"type": "user_joined", "room": "lobby", "user": "bob"})
    );
    // alice's second connection: no user_joined, users listed once.
    let mut alice2 = user(server.addr, "alice");
    assert_eq!(join(&mut alice2, "lobby")["users"], json!(["alice", "bob"]));
    send(&mut bob, json!({"type": "presence", "room": "lobby", "id": 1}));
    assert_eq!(
        recv(&mut bob),
        json!({"type": "presence", "id": 1, "room": "lobby", "users": ["alice", "bob"]})
    );
    // One of alice's connections leaves: still present, no user_left.
    send(&mut alice1, json!({"type": "leave", "room": "lobby", "id": "x"}));
    assert_eq!(recv(&mut alice1), json!({"type": "left", "id": "x", "room": "lobby"}));
    assert_quiet(&mut bob);
    // The last one disconnects: user_left.
    drop(alice2);
    assert_eq!(
        recv(&mut bob),
        json!({"type": "user_left", "room": "lobby", "user": "alice"})
    );
}

fn broadcast_reaches_every_member_including_sender_with_increasing_seq() {
    let server = server();
    let mut a = user(server.addr, "a");
    let mut b = user(server.addr, "b");
    let mut outsider = user(server.addr, "c");
    join(&mut a, "r");
    join(&mut b, "r");
    recv(&mut a); // user_joined b
    for i in 1..=3 {
        send(
            &mut a,
            json!({"type": "broadcast", "room": "r", "content": {"n": i}, "id": i}),
        );
        for ws in [&mut a, &mut b] {
            let msg = recv(ws);
            assert_eq!(msg["type"], "message");
            assert_eq!(msg["seq"], i);
            assert_eq!(msg["user"], "a");
            assert_eq!(msg["content"], json!({"n": i}));
            assert!(msg.get("id").is_none(), "message events carry no id");
            assert!(msg["ts"].as_u64().unwrap() > 1_600_000_000_000);
        }
        assert_eq!(recv(&mut a), json!({"type": "ack", "id": i}));
    }
    // Without an id, no ack.
    send(&mut b, json!({"type": "broadcast", "room": "r", "content": "x"}));
    assert_eq!(recv(&mut b)["seq"], 4);
    assert_quiet(&mut b);
    assert_quiet(&mut outsider);
}

fn history_and_recovery_after_reconnect() {
    let server = rooms(
        test_config(),
        RoomConfig {
            history_size: 3,
            ..RoomConfig::default()
        },
    );
    let mut a = user(server.addr, "a");
    let epoch = join(&mut a, "r")["epoch"].clone();
    for i in 1..=5 {
        send(&mut a, json!({"type": "broadcast", "room": "r", "content": i}));
        recv(&mut a);
    }
    // Missed 4 and 5: both still in history.
    let mut b = user(server.addr, "b");
    send(&mut b, json!({"type": "join", "room": "r", "since": 3, "epoch": epoch}));
    let joined = recv(&mut b);
    assert_eq!(
        (joined["seq"].clone(), joined["recovered"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(recv(&mut b)["seq"], 4);
    assert_eq!(recv(&mut b)["seq"], 5);
    assert_quiet(&mut b);
    // Without the epoch nothing can be proven: recovered false, what is kept follows.
    let mut d = user(server.addr, "d");
    send(&mut d, json!({"type": "join", "room": "r", "since": 3}));
    assert_eq!(recv(&mut d)["recovered"], false);
    assert_eq!(recv(&mut d)["seq"], 4);
    assert_eq!(recv(&mut d)["seq"], 5);
    assert_quiet(&mut d);
    // Another epoch (a history that was reset): recovered false, nothing follows.
    let mut e = user(server.addr, "e");
    send(
        &mut e,
        json!({"type": "join", "room": "r", "since": 3, "epoch": "0123456789abcdef"}),
    );
    let joined = recv(&mut e);
    assert_eq!(
        (joined["recovered"].clone(), joined["epoch"].clone()),
        (json!(false), epoch.clone())
    );
    assert_quiet(&mut e);
    // A `since` ahead of the room: recovered false.
    send(&mut e, json!({"type": "join", "room": "r", "since": 9, "epoch": epoch}));
    assert_eq!(recv(&mut e)["recovered"], false);
    assert_quiet(&mut e);
    // Missed from 2 on, but 2 has left the history: recovered false, 3..5 follow.
    let mut c = user(server.addr, "c");
    send(&mut c, json!({"type": "join", "room": "r", "since": 1, "epoch": epoch}));
    assert_eq!(recv(&mut c)["recovered"], false);
    let seqs: Vec<Value> = (0..3).map(|_| recv(&mut c)["seq"].clone()).collect();
    assert_eq!(seqs, [json!(3), json!(4), json!(5)]);
    // history: all kept, a page after since, the newest with limit.
    send(&mut c, json!({"type": "history", "room": "r", "id": 9}));
    let h = recv(&mut c);
    assert_eq!(h["id"], 9);
    let seqs = |h: &Value| {
        h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&h), [3, 4, 5]);
    assert_eq!(
        h["messages"][0],
        json!({"room": "r", "user": "a", "content": 3, "seq": 3, "ts": h["messages"][0]["ts"]})
    );
    send(&mut c, json!({"type": "history", "room": "r", "since": 3, "limit": 1}));
    assert_eq!(seqs(&recv(&mut c)), [4]);
    send(&mut c, json!({"type": "history", "room": "r", "limit": 2}));
    assert_eq!(seqs(&recv(&mut c)), [4, 5]);
}

fn direct_messages_reach_every_connection_of_the_user() {
    let server = server();
    let mut a = user(server.addr, "alice");
    let mut b1 = user(server.addr, "bob");
    let mut b2 = user(server.addr, "bob");
    send(
        &mut a,
        json!({"type": "direct", "to": "bob", "content": {"hi": true}, "id": 5}),
    );
    for b in [&mut b1, &mut b2] {
        let dm = recv(b);
        assert_eq!(
            (dm["type"].clone(), dm["from"].clone(), dm["content"].clone()),
            (json!("direct"), json!("alice"), json!({"hi": true}))
        );
    }
    assert_eq!(recv(&mut a), json!({"type": "ack", "id": 5}));
    expect_error(
        &mut a,
        json!({"type": "direct", "to": "nobody", "content": 1}),
        "user_offline",
    );
}

fn typing_goes_to_every_other_connection() {
    let server = server();
    let mut a1 = user(server.addr, "a");
    let mut a2 = user(server.addr, "a");
    let mut b = user(server.addr, "b");
    join(&mut a1, "r");
    join(&mut a2, "r");
    join(&mut b, "r");
    recv(&mut a1); // user_joined b
    recv(&mut a2);
    send(&mut a1, json!({"type": "typing", "room": "r", "typing": true}));
    let expected = json!({"type": "typing", "room": "r", "user": "a", "typing": true});
    assert_eq!(recv(&mut a2), expected);
    assert_eq!(recv(&mut b), expected);
    assert_quiet(&mut a1);
}

fn every_error_code_keeps_the_connection_open() {
    let server = rooms(
        test_config(),
        RoomConfig {
            max_rooms_per_connection: 2,
            max_content_size: 100,
            ..RoomConfig::default()
        },
    );
    let mut a = user(server.addr, "a");
    let send_raw = |ws: &mut Ws, text: &str, code: &str| {
        ws.send(Message::text(text)).unwrap();
        let reply = recv(ws);
        assert_eq!(reply["code"], code, "{text} -> {reply}");
    };
    send_raw(&mut a, "not json", "bad_json");
    send_raw(&mut a, "[1]", "bad_json");
    send_raw(&mut a, r#"{"room":"r"}"#, "missing_field");
    let reply = expect_error(&mut a, json!({"type": "fly", "id": 3}), "unknown_type");
    assert_eq!(reply["id"], 3);
    expect_error(&mut a, json!({"type": "join"}), "missing_field");
    expect_error(&mut a, json!({"type": "join", "room": "has space"}), "invalid_room");
    expect_error(&mut a, json!({"type": "join", "room": "x".repeat(129)}), "invalid_room");
    expect_error(
        &mut a,
        json!({"type": "broadcast", "room": "r", "content": 1}),
        "not_member",
    );
    expect_error(&mut a, json!({"type": "presence", "room": "r"}), "not_member");
    expect_error(&mut a, json!({"type": "history", "room": "r"}), "not_member");
    expect_error(&mut a, json!({"type": "leave", "room": "r"}), "not_member");
    expect_error(
        &mut a,
        json!({"type": "typing", "room": "r", "typing": true}),
        "not_member",
    );
    join(&mut a, "r1");
    join(&mut a, "r2");
    expect_error(&mut a, json!({"type": "join", "room": "r3"}), "too_many_rooms");
    expect_error(
        &mut a,
        json!({"type": "broadcast", "room": "r1", "content": "x".repeat(200)}),
        "message_too_large",
    );
    expect_error(
        &mut a,
        json!({"type": "direct", "to": "ghost", "content": 1}),
        "user_offline",
    );
    // Still open and working.
    send(&mut a, json!({"type": "broadcast", "room": "r1", "content": "ok"}));
    assert_eq!(recv(&mut a)["content"], "ok");
}

fn binary_on_the_json_endpoint_is_closed_with_1003() {
    let server = server();
    let mut a = user(server.addr, "a");
    a.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    match a.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1003),
        other => panic!("expected close 1003, got {other:?}"),
    }
}

fn bad_upgrades_and_http_routes() {
    let server = server();
    let addr = server.addr;
    assert_eq!(http(addr, &upgrade_request("/ws", "")).0, 400, "missing username");
    assert_eq!(http(addr, &upgrade_request("/ws?username=a%20b", "")).0, 400);
    assert_eq!(http(addr, &upgrade_request("/ws/bad%20room?username=a", "")).0, 400);
    assert_eq!(http(addr, &upgrade_request("/nope", "")).0, 404);
    assert_eq!(http(addr, "DELETE /nope HTTP/1.1\r\nHost: t\r\n\r\n").0, 404);
    assert_eq!(
        http(addr, "POST /stats HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").0,
        405
    );
    assert_eq!(http(addr, &upgrade_request("/ws", "").replace("GET", "POST")).0, 405);
    let (status, body) = get(addr, "/health");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["status"], "ok");
    let s = stats(addr);
    assert_eq!(s["handshake_failures"]["missing username"], 1);
    assert_eq!(s["handshake_failures"]["invalid username"], 1);
}

fn chat_tutorial_mode_is_byte_compatible() {
    let server = server();
    let mut alice = open(server.addr, "/ws/general?username=alice");
    assert_eq!(
        recv_text(&mut alice),
        r#"{"type":"user_joined","content":"alice joined the room","room":"general","username":"alice"}"#
    );
    assert_eq!(
        recv_text(&mut alice),
        r#"{"type":"online_users","content":"alice","room":"general","username":""}"#
    );
    let mut bob = open(server.addr, "/ws/general?username=bob");
    let joined = r#"{"type":"user_joined","content":"bob joined the room","room":"general","username":"bob"}"#;
    let online = r#"{"type":"online_users","content":"alice,bob","room":"general","username":""}"#;
    for ws in [&mut alice, &mut bob] {
        assert_eq!(recv_text(ws), joined);
        assert_eq!(recv_text(ws), online);
    }
    bob.send(Message::text("hello there")).unwrap();
    for ws in [&mut alice, &mut bob] {
        assert_eq!(
            recv_text(ws),
            r#"{"type":"chat","content":"hello there","room":"general","username":"bob"}"#
        );
    }
    // Binary frames are relayed verbatim, sender included.
    alice.send(Message::binary(vec![0u8, 159, 255])).unwrap();
    for ws in [&mut alice, &mut bob] {
        assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 159, 255]));
    }
    // A /ws client in the same room sees chat as `message` and vice versa.
    let mut carol = user(server.addr, "carol");
    assert_eq!(join(&mut carol, "general")["users"], json!(["alice", "bob", "carol"]));
    recv_text(&mut alice); // user_joined carol
    assert_eq!(
        recv_text(&mut alice),
        r#"{"type":"online_users","content":"alice,bob,carol","room":"general","username":""}"#
    );
    bob.send(Message::text("hi carol")).unwrap();
    let msg = recv(&mut carol);
    assert_eq!(
        (msg["type"].clone(), msg["content"].clone(), msg["user"].clone()),
        (json!("message"), json!("hi carol"), json!("bob"))
    );
    send(
        &mut carol,
        json!({"type": "broadcast", "room": "general", "content": "hi all"}),
    );
    recv_text(&mut alice); // bob's chat
    assert_eq!(
        recv_text(&mut alice),
        r#"{"type":"chat","content":"hi all","room":"general","username":"carol"}"#
    );
    drop(bob);
    recv_text(&mut alice); // carol's chat was read above; now the leave
    assert_eq!(
        recv_text(&mut alice),
        r#"{"type":"online_users","content":"alice,carol","room":"general","username":""}"#
    );
}

fn pubsub_relays_frames_verbatim_to_all_subscribers() {
    let server = server();
    let mut a = open(server.addr, "/pubsub/prices");
    let mut b = open(server.addr, "/pubsub/prices");
    let mut other = open(server.addr, "/pubsub/other");
    a.send(Message::text("EURUSD 1.08")).unwrap();
    b.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    // Two senders on two connections: either may come first, but every
    // subscriber sees the one order the topic's owner decided.
    let seen: Vec<Vec<Message>> = [&mut a, &mut b]
        .into_iter()
        .map(|ws| vec![ws.read().unwrap(), ws.read().unwrap()])
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert!(seen[0].contains(&Message::text("EURUSD 1.08")));
    assert!(seen[0].contains(&Message::binary(vec![1u8, 2, 3])));
    other.send(Message::text("only here")).unwrap();
    assert_eq!(other.read().unwrap(), Message::text("only here"));
}

/// Messages that arrive in one read go out as one batch per member: every
/// member still gets each of them, in order, in its own dialect, and the
/// sender of a run of typing events none of its own.
fn a_burst_reaches_every_member_in_order_in_its_dialect() {
    const BURST: usize = 80;
    let server = server();
    let mut publisher = open(server.addr, "/pubsub/burst");
    let mut subscriber = open(server.addr, "/pubsub/burst");
    let mut carol = user(server.addr, "carol");
    join(&mut carol, "burst");
    // One write (within the rate limit's burst of 100): the server reads
    // the whole burst in one turn.
    for i in 0..BURST {
        publisher.write(Message::text(format!("m{i}"))).unwrap();
    }
    publisher.flush().unwrap();
    for ws in [&mut publisher, &mut subscriber] {
        for i in 0..BURST {
            assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
        }
    }
    let mut seq = 0;
    for i in 0..BURST {
        let m = recv(&mut carol);
        assert_eq!(
            (&m["type"], &m["content"]),
            (&json!("message"), &json!(format!("m{i}")))
        );
        assert!(m["seq"].as_u64().unwrap() > seq, "{m}");
        seq = m["seq"].as_u64().unwrap();
    }
    let mut dave = user(server.addr, "dave");
    join(&mut dave, "burst");
    recv(&mut carol); // user_joined dave
    for typing in [true, false, true] {
        let command = json!({"type": "typing", "room": "burst", "typing": typing});
        carol.write(Message::text(command.to_string())).unwrap();
    }
    carol.flush().unwrap();
    for typing in [true, false, true] {
        assert_eq!(
            recv(&mut dave),
            json!({"type": "typing", "room": "burst", "user": "carol", "typing": typing})
        );
    }
    assert_quiet(&mut carol);
}

fn slow_consumer_setup(policy: OverflowPolicy) -> (Running, Ws, Ws, TcpStream) {
    let config = Config {
        max_send_queue: 64 * 1024,
        overflow: policy,
        ..test_config()
    };
    let room = RoomConfig {
        rate: RateLimit {
            per_second: 1e6,
            burst: 1e6,
        },
        ..RoomConfig::default()
    };
    let server = rooms(config, room);
    let mut publisher = user(server.addr, "pub");
    let mut reader = user(server.addr, "reader");
    join(&mut publisher, "feed");
    join(&mut reader, "feed");
    recv(&mut publisher); // user_joined reader
    // The stalled member: joins by hand and never reads again.
    let mut stalled = raw_ws(server.addr, "/ws?username=stalled");
    std::io::Write::write_all(&mut stalled, &client_frame(1, br#"{"type":"join","room":"feed"}"#)).unwrap();
    recv(&mut publisher); // user_joined stalled
    recv(&mut reader);
    (server, publisher, reader, stalled)
}

/// Publishes `n` 16 KiB messages; the live reader must get every one, in
/// order. Returns the other events the reader saw.
fn publish_and_read_all(publisher: &mut Ws, reader: &mut Ws, n: usize) -> Vec<Value> {
    let big = "x".repeat(16 * 1024);
    let mut others = Vec::new();
    let next_message = |ws: &mut Ws, others: &mut Vec<Value>| loop {
        let event = recv(ws);
        if event["type"] == "message" {
            return event;
        }
        others.push(event);
    };
    for i in 0..n {
        send(publisher, json!({"type": "broadcast", "room": "feed", "content": big}));
        assert_eq!(
            next_message(reader, &mut others)["seq"],
            i + 1,
            "the live reader missed nothing"
        );
        next_message(publisher, &mut Vec::new());
    }
    others
}

fn a_stalled_reader_is_closed_and_delays_no_one() {
    let (server, mut publisher, mut reader, _stalled) = slow_consumer_setup(OverflowPolicy::Close);
    // ~10 MB: far beyond the stalled client's socket buffers and queue limit.
    let others = publish_and_read_all(&mut publisher, &mut reader, 600);
    let s = stats_when(server.addr, |s| s["slow_consumer_closes"] == 1);
    assert_eq!(s["members"], 2);
    assert_eq!(
        others,
        [json!({"type": "user_left", "room": "feed", "user": "stalled"})]
    );
}

fn a_stalled_reader_under_drop_policy_is_told_what_it_missed() {
    let (server, mut publisher, mut reader, mut stalled) = slow_consumer_setup(OverflowPolicy::Drop);
    publish_and_read_all(&mut publisher, &mut reader, 600);
    // It drains: every message frame it got, then the count of the rest.
    let mut got = 0;
    let dropped = loop {
        let (op, payload) = read_frame(&mut stalled);
        assert_eq!(op, 1);
        let event: Value = serde_json::from_slice(&payload).unwrap();
        match event["type"].as_str().unwrap() {
            "message" => got += 1,
            "welcome" | "joined" => {}
            "dropped" => break event["count"].as_u64().unwrap(),
            other => panic!("unexpected {other}"),
        }
    };
    assert!(dropped > 0);
    assert_eq!(got + dropped, 600);
    let s = stats_when(server.addr, |s| s["dropped_messages"] == dropped);
    assert_eq!(s["slow_consumer_closes"], 0);
}

fn rate_limits_answer_then_close_on_abuse() {
    let room = RoomConfig {
        rate: RateLimit {
            per_second: 0.001,
            burst: 3.0,
        },
        ..RoomConfig::default()
    };
    let server = rooms(test_config(), room);
    let mut a = user(server.addr, "a");
    for _ in 0..3 {
        send(&mut a, json!({"type": "presence", "room": "x"}));
        assert_eq!(recv(&mut a)["code"], "not_member");
    }
    for _ in 0..3 {
        send(&mut a, json!({"type": "presence", "room": "x"}));
        assert_eq!(recv(&mut a)["code"], "rate_limited");
    }
    send(&mut a, json!({"type": "presence", "room": "x"}));
    match a.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1008),
        other => panic!("expected close 1008, got {other:?}"),
    }
    assert_eq!(stats(server.addr)["rate_limited"], 4);
}

fn shutdown_tells_everyone_1001_and_health_turns_503() {
    let server = server();
    let mut clients: Vec<TcpStream> = (0..3)
        .map(|i| raw_ws(server.addr, &format!("/ws?username=u{i}")))
        .collect();
    for s in &mut clients {
        read_frame(s); // welcome
    }
    server.handle.shutdown();
    for s in &mut clients {
        assert_eq!(read_close_code(s), 1001);
    }
    // Still draining (no client answered): health says so; upgrades are refused.
    assert_eq!(get(server.addr, "/health").0, 503);
    assert_eq!(http(server.addr, &upgrade_request("/ws?username=late", "")).0, 503);
    for s in &mut clients {
        std::io::Write::write_all(s, &client_frame(8, &1001u16.to_be_bytes())).unwrap();
        assert!(closed_by_peer(s));
    }
}

fn stats_and_metrics_match_the_traffic() {
    let server = server();
    let mut a = user(server.addr, "a");
    let mut b = user(server.addr, "b");
    join(&mut a, "r1");
    join(&mut b, "r1");
    join(&mut b, "r2");
    recv(&mut a); // user_joined
    for _ in 0..4 {
        send(&mut a, json!({"type": "broadcast", "room": "r1", "content": "m"}));
        recv(&mut a);
        recv(&mut b);
    }
    let s = stats(server.addr);
    assert_eq!(s["connections_active"], 2);
    assert_eq!(s["connections_total"], 2);
    assert_eq!(s["rooms"], 2);
    assert_eq!(s["members"], 3);
    // 3 joins + 4 broadcasts in.
    assert_eq!(s["messages_in"], 7);
    // 2 welcomes, 3 joined, 1 user_joined, 8 messages out.
    assert_eq!(s["messages_out"], 14);
    let (status, metrics) = get(server.addr, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "roomcast_connections_active 2",
        "roomcast_rooms 2",
        "roomcast_room_members 3",
        "roomcast_messages_in_total 7",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    // Every kind of departure leaves the index clean.
    drop(a);
    b.close(None).unwrap();
    // Rooms are counted by their owners, which may be other workers.
    stats_when(server.addr, |s| {
        s["connections_active"] == 0 && s["rooms"] == 0 && s["members"] == 0
    });
}
