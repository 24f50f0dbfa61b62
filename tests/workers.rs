//! Several event-loop workers in one process, seen by independent clients
//! (tungstenite). With `--accept-mode handoff`, worker 0 hands accepted
//! connections out in turn, so connection k (counting every accepted
//! connection, plain HTTP ones included) lands on worker k mod N: members,
//! publishers and room owners are placed on different workers on purpose.
//! Every test here checks a property that must hold across workers exactly
//! as on one: one order per room, presence, direct messages, recovery on
//! another worker, shutdown and the fate of a worker that panics.

mod common;

use common::*;
use roomcast::apps::echo::Echo;
use roomcast::engine::memory::owner_of;
use roomcast::net::{App, CloseReason, Config, ConnId, Ctx, Route, Shared};
use roomcast::protocol::MessageKind;
use roomcast::protocol::handshake::head::Request as HttpRequest;
use roomcast::rooms::{RoomConfig, RoomServer};
use roomcast::runtime::{AcceptMode, Outcome};
use serde_json::{Value, json};
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tungstenite::Message;

const WORKERS: usize = 3;

fn server(room: RoomConfig) -> Running {
    start_rooms(
        RoomServer::new(test_config(), room)
            .workers(WORKERS)
            .accept(AcceptMode::Handoff),
    )
}

fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "join", "room": room}));
    let joined = recv_json(ws);
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

fn stats(addr: SocketAddr) -> Value {
    let mut s = raw(addr);
    std::io::Write::write_all(&mut s, b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (status, _) = read_head(&mut s);
    assert_eq!(status, 200);
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    serde_json::from_str(&body).unwrap()
}

/// Connections per worker, from `/stats`' `workers` array.
fn active_per_worker(addr: SocketAddr) -> Vec<u64> {
    stats(addr)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["connections_active"].as_u64().unwrap())
        .collect()
}

/// A room name owned by worker `owner`.
fn room_owned_by(owner: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|name| owner_of(name, WORKERS) == owner)
        .unwrap()
}

#[test]
fn connections_land_round_robin_and_stats_list_every_worker() {
    let server = server(RoomConfig::default());
    // Connections 0, 1, 2: one per worker.
    let clients: Vec<Ws> = (0..3).map(|i| user(server.addr, &format!("u{i}"))).collect();
    // This /stats request is connection 3 (worker 0), counted only while open.
    let s = stats(server.addr);
    assert_eq!(s["connections_active"], 3);
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), WORKERS);
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["worker"], i);
        assert_eq!(w["connections_active"], 1, "{s}");
        assert_eq!(w["connections_total"], 1);
        assert!(w["messages_out"].as_u64().unwrap() >= 1, "each sent a welcome");
    }
    let (_, metrics) = {
        let mut s = raw(server.addr);
        std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let head = read_head(&mut s);
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        (head, body)
    };
    for i in 0..WORKERS {
        let line = format!("roomcast_worker_connections_active{{worker=\"{i}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "missing {line} in\n{metrics}");
    }
    drop(clients);
}

/// P publishers on different workers pipeline into one room whose members
/// sit on every worker (and whose owner is yet another placement): every
/// member sees the same messages in the same order, `seq` 1..=P*K without
/// a gap, each publisher's messages in its own order; a client joining
/// later on any worker recovers exactly that sequence.
#[test]
fn one_order_per_room_across_publishers_members_and_workers() {
    const PUBLISHERS: usize = 3;
    const MEMBERS: usize = 6;
    const EACH: usize = 40;
    let server = server(RoomConfig {
        history_size: PUBLISHERS * EACH,
        ..RoomConfig::default()
    });
    let room = "stage";
    let mut members: Vec<Ws> = (0..MEMBERS).map(|i| user(server.addr, &format!("m{i}"))).collect();
    let mut publishers: Vec<Ws> = (0..PUBLISHERS).map(|i| user(server.addr, &format!("p{i}"))).collect();
    let mut epoch = Value::Null;
    for ws in members.iter_mut().chain(publishers.iter_mut()) {
        epoch = join(ws, room)["epoch"].clone();
    }
    // Pipelined, interleaved: publisher p sends its k-th message in turn.
    for k in 0..EACH {
        for (p, ws) in publishers.iter_mut().enumerate() {
            send(
                ws,
                json!({"type": "broadcast", "room": room, "content": {"p": p, "k": k}, "id": k}),
            );
        }
    }
    let total = PUBLISHERS * EACH;
    let read_messages = |ws: &mut Ws, n: usize| -> Vec<(u64, u64, u64)> {
        let mut got = Vec::new();
        while got.len() < n {
            let event = recv_json(ws);
            if event["type"] == "message" {
                let c = &event["content"];
                got.push((
                    event["seq"].as_u64().unwrap(),
                    c["p"].as_u64().unwrap(),
                    c["k"].as_u64().unwrap(),
                ));
            }
        }
        got
    };
    let reference = read_messages(&mut members[0], total);
    let seqs: Vec<u64> = reference.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "strictly increasing, no gap"
    );
    for p in 0..PUBLISHERS as u64 {
        let ks: Vec<u64> = reference.iter().filter(|m| m.1 == p).map(|m| m.2).collect();
        assert_eq!(
            ks,
            (0..EACH as u64).collect::<Vec<_>>(),
            "publisher {p} in its own order"
        );
    }
    for ws in members.iter_mut().skip(1).chain(publishers.iter_mut()) {
        assert_eq!(
            read_messages(ws, total),
            reference,
            "every member, every worker: one order"
        );
    }
    // Recovery from any worker: three newcomers land on three workers.
    for i in 0..WORKERS {
        let mut late = user(server.addr, &format!("late{i}"));
        send(
            &mut late,
            json!({"type": "join", "room": room, "since": 0, "epoch": epoch}),
        );
        let joined = recv_json(&mut late);
        assert_eq!(joined["recovered"], true, "{joined}");
        assert_eq!(joined["seq"], total);
        assert_eq!(read_messages(&mut late, total), reference);
    }
}

#[test]
fn presence_counts_a_users_connections_on_every_worker() {
    let server = server(RoomConfig::default());
    let room = room_owned_by(2, "lobby");
    let mut alice0 = user(server.addr, "alice"); // worker 0
    let mut alice1 = user(server.addr, "alice"); // worker 1
    let mut bob = user(server.addr, "bob"); // worker 2
    assert_eq!(active_per_worker(server.addr), [1, 1, 1]); // connection 3: the request
    join(&mut bob, &room);
    join(&mut alice0, &room);
    assert_eq!(
        recv_json(&mut bob),
        json!({"type": "user_joined", "room": room, "user": "alice"})
    );
    let joined = join(&mut alice1, &room);
    assert_eq!(joined["users"], json!(["alice", "bob"]), "listed once");
    // The first alice leaves: alice is still present through worker 1.
    send(&mut alice0, json!({"type": "leave", "room": room}));
    assert_eq!(recv_json(&mut alice0)["type"], "left");
    send(&mut bob, json!({"type": "presence", "room": room}));
    assert_eq!(
        recv_json(&mut bob)["users"],
        json!(["alice", "bob"]),
        "no user_left yet"
    );
    drop(alice1);
    assert_eq!(
        recv_json(&mut bob),
        json!({"type": "user_left", "room": room, "user": "alice"})
    );
}

#[test]
fn direct_messages_reach_a_users_connections_on_every_worker() {
    let server = server(RoomConfig::default());
    let mut bob0 = user(server.addr, "bob"); // worker 0
    let mut bob1 = user(server.addr, "bob"); // worker 1
    let mut alice = user(server.addr, "alice"); // worker 2
    send(
        &mut alice,
        json!({"type": "direct", "to": "bob", "content": "psst", "id": 1}),
    );
    for ws in [&mut bob0, &mut bob1] {
        let d = recv_json(ws);
        assert_eq!(
            (d["type"].clone(), d["from"].clone(), d["content"].clone()),
            (json!("direct"), json!("alice"), json!("psst"))
        );
    }
    assert_eq!(recv_json(&mut alice), json!({"type": "ack", "id": 1}));
    drop(bob0);
    drop(bob1);
    // Once both are gone, bob is offline wherever he was.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send(
            &mut alice,
            json!({"type": "direct", "to": "bob", "content": "?", "id": 2}),
        );
        let reply = recv_json(&mut alice);
        if reply["type"] == "error" {
            assert_eq!(reply["code"], "user_offline");
            break;
        }
        assert!(Instant::now() < deadline, "bob never went offline: {reply}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection's replies come in the order of its commands, even when the
/// commands go to rooms owned by different workers.
#[test]
fn replies_keep_command_order_across_owners() {
    let server = server(RoomConfig::default());
    let mut ws = user(server.addr, "solo");
    let rooms: Vec<String> = (0..WORKERS).map(|w| room_owned_by(w, "r")).collect();
    let mut expected = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        send(&mut ws, json!({"type": "join", "room": room, "id": format!("j{i}")}));
        expected.push(json!(format!("j{i}")));
        // A local error in between must not overtake the join replies.
        send(
            &mut ws,
            json!({"type": "presence", "room": "not-joined", "id": format!("e{i}")}),
        );
        expected.push(json!(format!("e{i}")));
    }
    for (i, room) in rooms.iter().enumerate() {
        send(
            &mut ws,
            json!({"type": "broadcast", "room": room, "content": i, "id": format!("b{i}")}),
        );
        expected.push(json!(format!("b{i}")));
    }
    let mut ids = Vec::new();
    while ids.len() < expected.len() {
        let event = recv_json(&mut ws);
        if event["type"] != "message" {
            ids.push(event["id"].clone());
        }
    }
    assert_eq!(ids, expected);
}

#[test]
fn pubsub_and_chat_subscribers_on_other_workers_get_everything_after_their_101() {
    let server = server(RoomConfig::default());
    let topic = room_owned_by(0, "t");
    // Worker 0 owns the topic; the subscribers sit on workers 0, 1, 2.
    let mut subs: Vec<Ws> = (0..3).map(|_| ws(server.addr, &format!("/pubsub/{topic}"))).collect();
    let mut chat = ws(server.addr, &format!("/ws/{topic}?username=carol")); // worker 0 again
    // The 101 means subscribed: a message sent right after reaches all.
    subs[1].send(Message::text("first")).unwrap();
    for ws in &mut subs {
        assert_eq!(ws.read().unwrap(), Message::text("first"));
    }
    let mut saw_chat = false;
    for _ in 0..3 {
        let event: Value = serde_json::from_str(chat.read().unwrap().to_text().unwrap()).unwrap();
        if event["type"] == "chat" {
            assert_eq!(event["content"], "first");
            saw_chat = true;
            break;
        }
    }
    assert!(saw_chat, "the chat member got the relayed text as chat");
}

#[test]
fn shutdown_reaches_every_worker() {
    let server = start_rooms(
        RoomServer::new(
            Config {
                shutdown_timeout: Duration::from_secs(5),
                ..test_config()
            },
            RoomConfig::default(),
        )
        .workers(WORKERS)
        .accept(AcceptMode::Handoff),
    );
    let mut clients: Vec<Ws> = (0..WORKERS).map(|i| user(server.addr, &format!("u{i}"))).collect();
    for ws in &mut clients {
        join(ws, "everywhere");
    }
    let started = Instant::now();
    server.handle.shutdown();
    for ws in &mut clients {
        let close = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame,
                Ok(_) => continue,
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert_eq!(u16::from(close.unwrap().code), 1001);
    }
    drop(clients);
    server.wait().expect("every worker finished");
    assert!(started.elapsed() < Duration::from_secs(5), "within --shutdown-timeout");
}

#[test]
fn per_address_limits_hold_across_workers() {
    let server = start_rooms(
        RoomServer::new(
            Config {
                max_connections_per_ip: 2,
                ..test_config()
            },
            RoomConfig::default(),
        )
        .workers(WORKERS)
        .accept(AcceptMode::ReusePort),
    );
    let _a = user(server.addr, "a");
    let _b = user(server.addr, "b");
    let (status, head) = http(server.addr, &upgrade_request("/ws?username=c", ""));
    assert_eq!(status, 429, "{head}");
}

/// An application that panics on the message "boom".
struct Fragile;

impl App for Fragile {
    type State = ();

    fn route(&mut self, _req: &HttpRequest, _peer: SocketAddr, _net: &Shared, _draining: bool) -> Route<()> {
        Route::Upgrade(())
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId) {}

    fn on_message(&mut self, ctx: &mut Ctx<'_, ()>, id: ConnId, kind: MessageKind, data: &[u8]) {
        assert!(data != b"boom", "a bug in the application");
        ctx.send(id, kind, data);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_, ()>, _id: ConnId, _state: (), _reason: CloseReason) {}
}

#[test]
fn a_worker_that_panics_takes_the_process_down_loudly() {
    let server = start_workers(test_config(), WORKERS, AcceptMode::Handoff, |_| Fragile);
    let mut clients: Vec<Ws> = (0..WORKERS).map(|_| ws(server.addr, "/")).collect();
    for ws in &mut clients {
        ws.send(Message::text("hi")).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text("hi"));
    }
    // Worker 1's client triggers the bug.
    clients[1].send(Message::text("boom")).unwrap();
    // Its connection dies with the worker; the others are shut down (1001).
    assert!(
        clients[1].read().is_err(),
        "the dead worker's client sees the connection end"
    );
    for i in [0, 2] {
        match clients[i].read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
            other => panic!("worker {i}'s client: {other:?}"),
        }
    }
    drop(clients);
    let failure = server.wait().unwrap_err();
    assert_eq!((failure.worker, failure.outcome), (1, Outcome::Panicked));
}

#[test]
fn echo_runs_on_every_worker() {
    let server = start_workers(test_config(), WORKERS, AcceptMode::Handoff, |_| Echo);
    let mut clients: Vec<Ws> = (0..WORKERS * 2).map(|_| ws(server.addr, "/")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::binary(vec![i as u8; 1000])).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(vec![i as u8; 1000]));
    }
}

/// Hooks of an embedding program, on every worker: connects and
/// disconnects seen once each, a rejected message refused with `rejected`
/// on `/ws` and dropped silently on `/pubsub`, a replaced one delivered as
/// replaced to every dialect.
#[test]
fn hooks_see_every_connection_and_decide_every_message() {
    use roomcast::rooms::{Hooks, Publish};
    use std::sync::{Arc, Mutex};
    #[derive(Default)]
    struct Seen {
        events: Mutex<Vec<String>>,
    }
    struct Recorder(Arc<Seen>);
    impl Hooks for Recorder {
        fn on_connect(&self, user: &str, _conn: u64) {
            self.0.events.lock().unwrap().push(format!("+{user}"));
        }
        fn on_disconnect(&self, user: &str, _conn: u64) {
            self.0.events.lock().unwrap().push(format!("-{user}"));
        }
        fn on_publish(&self, _user: &str, _room: &str, content: &Value) -> Publish {
            match content.as_str() {
                Some("secret") => Publish::Reject("not here".into()),
                Some(t) => Publish::Replace(Value::String(t.to_uppercase())),
                None => Publish::Keep,
            }
        }
    }
    let seen = Arc::new(Seen::default());
    let server = start_rooms(
        RoomServer::new(test_config(), RoomConfig::default())
            .workers(WORKERS)
            .accept(AcceptMode::Handoff)
            .hooks(Recorder(seen.clone())),
    );
    let mut a = user(server.addr, "ann");
    let mut b = user(server.addr, "bo");
    let mut sub = ws(server.addr, "/pubsub/hooked?username=sub");
    join(&mut a, "hooked");
    join(&mut b, "hooked");
    send(
        &mut a,
        json!({"type": "broadcast", "room": "hooked", "content": "hello", "id": 1}),
    );
    for ws in [&mut a, &mut b] {
        loop {
            let e = recv_json(ws);
            if e["type"] == "message" {
                assert_eq!(e["content"], "HELLO");
                break;
            }
        }
    }
    assert_eq!(sub.read().unwrap(), Message::text("HELLO"));
    send(
        &mut a,
        json!({"type": "broadcast", "room": "hooked", "content": "secret", "id": 2}),
    );
    loop {
        let e = recv_json(&mut a);
        if e["type"] == "error" {
            assert_eq!(
                (e["code"].clone(), e["message"].clone(), e["id"].clone()),
                (json!("rejected"), json!("not here"), json!(2))
            );
            break;
        }
    }
    // From the relay: dropped, and the next one still flows.
    sub.send(Message::text("secret")).unwrap();
    sub.send(Message::text("after")).unwrap();
    assert_eq!(sub.read().unwrap(), Message::text("AFTER"));
    drop((a, b, sub));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut events = seen.events.lock().unwrap().clone();
        events.sort();
        if events == ["+ann", "+bo", "+sub", "-ann", "-bo", "-sub"] {
            break;
        }
        assert!(Instant::now() < deadline, "{events:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
