//! Several real `roomcast serve --redis` processes on real redis-servers
//! (issue "scale-out on Redis"), seen by independent clients (tungstenite):
//! one order, presence, direct messages and history across two and three
//! nodes; recovery on another node; the raw relay and the chat dialect
//! across nodes; a node killed with SIGKILL; Redis restarted and a dropped
//! connection in the middle of traffic; rooms sharded over three Redis
//! servers; TLS and passwords; the startup error; Redis commands per publish;
//! the publish API across nodes.

mod common;

use common::redis::RedisServer;
use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;

/// A `roomcast serve` process on a free port, killed when dropped.
struct Node {
    port: u16,
    process: Option<ServerProcess>,
}

impl Node {
    fn start(redis: &[String], extra: &[&str]) -> Node {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--workers", "2"])
            .args([
                "--no-demo",
                "--shutdown-timeout",
                "3",
                "--rate",
                "100000",
                "--burst",
                "100000",
            ]);
        for url in redis {
            cmd.args(["--redis", url]);
        }
        let child = cmd
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut process = ServerProcess(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect(addr).is_err() {
            assert!(process.0.try_wait().unwrap().is_none(), "node exited at startup");
            assert!(Instant::now() < deadline, "node did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Node {
            port,
            process: Some(process),
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn kill9(&mut self) {
        let mut p = self.process.take().unwrap();
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }
}

fn urls(servers: &[&RedisServer]) -> Vec<String> {
    servers.iter().map(|s| s.url()).collect()
}

fn join(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"type": "join", "room": room}));
    next_of(ws, "joined")
}

fn health(addr: SocketAddr) -> (u16, Value) {
    let mut s = raw(addr);
    std::io::Write::write_all(&mut s, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, _) = read_head(&mut s);
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    (status, serde_json::from_str(&body).unwrap())
}

/// Reads until the close frame; its code.
fn close_code(ws: &mut Ws) -> u16 {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map_or(1005, |f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn two_nodes_share_one_order_presence_direct_and_history() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&urls(&[&redis]), &[]), Node::start(&urls(&[&redis]), &[]));
    let room = "stage";
    let mut members = vec![
        user(a.addr(), "m0"),
        user(a.addr(), "m1"),
        user(b.addr(), "m2"),
        user(b.addr(), "m3"),
    ];
    let mut publishers = [user(a.addr(), "p0"), user(b.addr(), "p1")];
    for ws in members.iter_mut().chain(publishers.iter_mut()) {
        join(ws, room);
    }
    let mut check = user(b.addr(), "check");
    assert_eq!(
        join(&mut check, room)["users"],
        json!(["check", "m0", "m1", "m2", "m3", "p0", "p1"]),
        "presence counts members on both nodes"
    );
    // m0 saw every later arrival once, from whichever node.
    let mut arrivals = Vec::new();
    while arrivals.len() < 6 {
        arrivals.push(next_of(&mut members[0], "user_joined")["user"].clone());
    }
    assert_eq!(
        arrivals,
        json!(["m1", "m2", "m3", "p0", "p1", "check"])
            .as_array()
            .unwrap()
            .clone()
    );
    const EACH: usize = 30;
    for k in 0..EACH {
        for (p, ws) in publishers.iter_mut().enumerate() {
            send(
                ws,
                json!({"type": "broadcast", "room": room, "content": {"p": p, "k": k}, "id": k}),
            );
        }
    }
    let total = 2 * EACH;
    let reference = messages(&mut members[0], total);
    let seqs: Vec<u64> = reference.iter().map(|m| m.0).collect();
    assert_eq!(
        seqs,
        (1..=total as u64).collect::<Vec<_>>(),
        "one seq per message, no gap"
    );
    for p in 0..2 {
        let ks: Vec<u64> = reference
            .iter()
            .filter(|m| m.1["p"] == p)
            .map(|m| m.1["k"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ks,
            (0..EACH as u64).collect::<Vec<_>>(),
            "publisher {p} in its own order"
        );
    }
    for ws in members.iter_mut().skip(1) {
        assert_eq!(messages(ws, total), reference, "every member on every node: one order");
    }
    // Each publisher's ack comes after its own copy of the message.
    for (p, ws) in publishers.iter_mut().enumerate() {
        let mut seen = HashSet::new();
        let mut acks = 0;
        while acks < EACH {
            let event = recv_json(ws);
            match event["type"].as_str().unwrap() {
                "message" if event["content"]["p"] == p => {
                    seen.insert(event["content"]["k"].as_u64().unwrap());
                }
                "ack" => {
                    assert!(
                        seen.contains(&event["id"].as_u64().unwrap()),
                        "ack before its message: {event}"
                    );
                    acks += 1;
                }
                _ => {}
            }
        }
    }
    // Direct messages cross nodes; an unknown user is offline.
    send(
        &mut members[0],
        json!({"type": "direct", "to": "m3", "content": "psst", "id": "d"}),
    );
    let d = next_of(&mut members[3], "direct");
    assert_eq!((d["from"].clone(), d["content"].clone()), (json!("m0"), json!("psst")));
    assert_eq!(next_of(&mut members[0], "ack")["id"], "d");
    send(
        &mut members[0],
        json!({"type": "direct", "to": "nobody", "content": 1, "id": "x"}),
    );
    let err = next_of(&mut members[0], "error");
    assert_eq!(
        (err["code"].clone(), err["id"].clone()),
        (json!("user_offline"), json!("x"))
    );
    // History from Redis, on either node.
    send(
        &mut check,
        json!({"type": "history", "room": room, "limit": 5, "id": "h"}),
    );
    let h = next_of(&mut check, "history");
    let hs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(hs, (total as u64 - 4..=total as u64).collect::<Vec<_>>());
    // A user's last connection leaving is seen on the other node.
    drop(members.pop());
    assert_eq!(
        next_of(&mut members[0], "user_left"),
        json!({"type": "user_left", "room": room, "user": "m3"})
    );
}

#[test]
fn recovery_works_on_a_different_node() {
    let redis = RedisServer::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&urls(&[&redis]), &[])).collect();
    let room = "journal";
    let mut writer = user(nodes[1].addr(), "writer");
    join(&mut writer, room);
    let mut reader = user(nodes[0].addr(), "reader");
    let joined = join(&mut reader, room);
    let epoch = joined["epoch"].clone();
    send(
        &mut writer,
        json!({"type": "broadcast", "room": room, "content": "seen", "id": 0}),
    );
    let seen = next_of(&mut reader, "message")["seq"].as_u64().unwrap();
    drop(reader);
    for k in 1..=5 {
        send(
            &mut writer,
            json!({"type": "broadcast", "room": room, "content": k, "id": k}),
        );
        next_of(&mut writer, "ack");
    }
    // Back on another node, with where it was.
    let mut reader = user(nodes[2].addr(), "reader");
    send(
        &mut reader,
        json!({"type": "join", "room": room, "since": seen, "epoch": epoch}),
    );
    let joined = next_of(&mut reader, "joined");
    assert_eq!(
        (joined["recovered"].clone(), joined["seq"].clone()),
        (json!(true), json!(seen + 5))
    );
    let missed = messages(&mut reader, 5);
    assert_eq!(
        missed,
        (1..=5).map(|k| (seen + k, json!(k))).collect::<Vec<_>>(),
        "exactly what it missed"
    );
    // Then live, without a gap or a duplicate.
    send(
        &mut writer,
        json!({"type": "broadcast", "room": room, "content": "live", "id": 9}),
    );
    assert_eq!(messages(&mut reader, 1), [(seen + 6, json!("live"))]);
    // Another history's epoch proves nothing.
    let mut other = user(nodes[0].addr(), "other");
    send(
        &mut other,
        json!({"type": "join", "room": room, "since": seen, "epoch": "0000000000000000"}),
    );
    assert_eq!(next_of(&mut other, "joined")["recovered"], false);
}

#[test]
fn the_raw_relay_and_the_chat_dialect_cross_nodes() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&urls(&[&redis]), &[]), Node::start(&urls(&[&redis]), &[]));
    let mut subs = vec![ws(a.addr(), "/pubsub/news"), ws(b.addr(), "/pubsub/news")];
    let mut chat = ws(b.addr(), "/ws/news?username=carol");
    // The 101 means subscribed: frames sent right after reach every node.
    for i in 0..10 {
        subs[i % 2].send(Message::text(format!("t{i}"))).unwrap();
    }
    subs[0].send(Message::binary(vec![0u8, 1, 2])).unwrap();
    let mut orders = Vec::new();
    for ws in &mut subs {
        let got: Vec<Message> = (0..11).map(|_| ws.read().unwrap()).collect();
        // Two publishers on two nodes: each one's frames in its own order.
        for p in 0..2 {
            let mine: Vec<String> = got
                .iter()
                .filter_map(|m| m.to_text().ok().map(str::to_string))
                .filter(|t| t[1..].parse::<usize>().is_ok_and(|i| i % 2 == p))
                .collect();
            let expected: Vec<String> = (0..10).filter(|i| i % 2 == p).map(|i| format!("t{i}")).collect();
            assert_eq!(mine, expected);
        }
        assert!(
            got.contains(&Message::binary(vec![0u8, 1, 2])),
            "binary frames are relayed"
        );
        orders.push(got);
    }
    assert_eq!(orders[0], orders[1], "one order on both nodes");
    let mut texts = 0;
    let mut binary = false;
    while texts < 10 || !binary {
        match chat.read().unwrap() {
            Message::Text(t) => {
                let event: Value = serde_json::from_str(t.as_str()).unwrap();
                if event["type"] == "chat" {
                    texts += 1;
                }
            }
            Message::Binary(b) => binary = b.as_ref() == [0u8, 1, 2],
            _ => {}
        }
    }
}

#[test]
fn a_killed_nodes_users_leave_within_the_node_timeout() {
    let redis = RedisServer::start();
    let flags = ["--redis-node-timeout", "3"];
    let mut a = Node::start(&urls(&[&redis]), &flags);
    let b = Node::start(&urls(&[&redis]), &flags);
    let mut alice = user(a.addr(), "alice");
    join(&mut alice, "lobby");
    let mut bob = user(b.addr(), "bob");
    assert_eq!(join(&mut bob, "lobby")["users"], json!(["alice", "bob"]));
    a.kill9();
    let killed = Instant::now();
    assert_eq!(
        next_of(&mut bob, "user_left"),
        json!({"type": "user_left", "room": "lobby", "user": "alice"})
    );
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "user_left after {took:?}, the timeout is 3 s"
    );
    send(&mut bob, json!({"type": "presence", "room": "lobby", "id": 1}));
    assert_eq!(next_of(&mut bob, "presence")["users"], json!(["bob"]));
    send(
        &mut bob,
        json!({"type": "direct", "to": "alice", "content": "?", "id": 2}),
    );
    assert_eq!(next_of(&mut bob, "error")["code"], "user_offline");
    // Nothing of the dead node is left in Redis.
    assert_eq!(redis.cmd(&["ZCARD", "rc:nodes"]).as_int(), Some(1));
}

#[test]
fn redis_restarted_in_the_middle_of_traffic() {
    let mut redis = RedisServer::start();
    let (a, b) = (Node::start(&urls(&[&redis]), &[]), Node::start(&urls(&[&redis]), &[]));
    let room = "busy";
    let mut alice = user(a.addr(), "alice");
    let mut bob = user(b.addr(), "bob");
    let epoch = join(&mut alice, room)["epoch"].clone();
    join(&mut bob, room);
    let mut chat = ws(b.addr(), &format!("/ws/{room}?username=carol"));
    for k in 0..5 {
        send(
            &mut alice,
            json!({"type": "broadcast", "room": room, "content": k, "id": k}),
        );
    }
    assert_eq!(messages(&mut bob, 5).last().unwrap().0, 5);
    redis.stop();
    // Connections stay open; publishes are refused, not lost silently.
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        assert!(Instant::now() < deadline, "publishes were never refused");
        send(
            &mut alice,
            json!({"type": "broadcast", "room": room, "content": "x", "id": "down"}),
        );
        let reply = loop {
            let event = recv_json(&mut alice);
            if event["type"] == "ack" || event["type"] == "error" {
                break event;
            }
        };
        if reply["type"] == "error" {
            break reply;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        (refused["code"].clone(), refused["id"].clone()),
        (json!("unavailable"), json!("down"))
    );
    send(&mut bob, json!({"type": "presence", "room": room, "id": "p"}));
    assert_eq!(next_of(&mut bob, "error")["code"], "unavailable");
    // A broadcast without `id` is refused too, without `id`.
    send(&mut bob, json!({"type": "broadcast", "room": room, "content": "y"}));
    let err = next_of(&mut bob, "error");
    assert_eq!(
        (err["code"].clone(), err.get("id")),
        (json!("unavailable"), None),
        "{err}"
    );
    // The chat dialect has no error envelope: a refused message closes it.
    chat.send(Message::text("lost?")).unwrap();
    assert_eq!(close_code(&mut chat), 1013);
    for node in [&a, &b] {
        let (status, body) = health(node.addr());
        assert_eq!((status, body["status"].clone()), (200, json!("degraded")), "{body}");
        assert!(body["store_error"].as_str().unwrap().contains(&redis.url()), "{body}");
    }
    // Back, empty: the history the members were in is gone, so they are
    // told to start afresh rather than continue across the reset.
    redis.restart();
    assert_eq!(close_code(&mut alice), 1012);
    assert_eq!(close_code(&mut bob), 1012);
    for node in [&a, &b] {
        assert_eq!(health(node.addr()).1["status"], "ok");
    }
    let mut alice = user(a.addr(), "alice");
    send(
        &mut alice,
        json!({"type": "join", "room": room, "since": 5, "epoch": epoch}),
    );
    let joined = next_of(&mut alice, "joined");
    assert_eq!(joined["recovered"], false, "never recovered across a reset: {joined}");
    assert_ne!(joined["epoch"], epoch);
    let mut bob = user(b.addr(), "bob");
    join(&mut bob, room);
    send(
        &mut alice,
        json!({"type": "broadcast", "room": room, "content": "again", "id": 1}),
    );
    assert_eq!(messages(&mut bob, 1), [(1, json!("again"))], "a new history from seq 1");
    send(&mut bob, json!({"type": "history", "room": room, "id": "h"}));
    let h = next_of(&mut bob, "history");
    assert_eq!(h["messages"].as_array().unwrap().len(), 1, "{h}");
}

#[test]
fn a_dropped_connection_is_resynced_without_a_gap() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&urls(&[&redis]), &[]), Node::start(&urls(&[&redis]), &[]));
    let room = "stream";
    let mut watcher = user(a.addr(), "watcher");
    let epoch = join(&mut watcher, room)["epoch"].clone();
    let mut writer = user(b.addr(), "writer");
    join(&mut writer, room);
    const N: u64 = 150;
    for k in 0..N {
        send(
            &mut writer,
            json!({"type": "broadcast", "room": room, "content": k, "id": k}),
        );
        if k == 50 {
            // Every node's connection drops; Redis keeps its data.
            redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut acked = HashSet::new();
    let mut answered = 0;
    while answered < N {
        let event = recv_json(&mut writer);
        match event["type"].as_str().unwrap() {
            "ack" => {
                acked.insert(event["id"].as_u64().unwrap());
                answered += 1;
            }
            "error" => {
                assert_eq!(event["code"], "unavailable");
                answered += 1;
            }
            _ => {}
        }
    }
    assert!(acked.len() < N as usize, "the drop refused some publishes");
    let last = *acked.iter().max().unwrap();
    // The watcher, on the other node, gets every stored message once, in
    // order, including the ones published while its node was away.
    let mut got: Vec<(u64, u64)> = Vec::new();
    while got.last().is_none_or(|m| m.1 != last) {
        let m = next_of(&mut watcher, "message");
        got.push((m["seq"].as_u64().unwrap(), m["content"].as_u64().unwrap()));
    }
    let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=got.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");
    let contents: HashSet<u64> = got.iter().map(|m| m.1).collect();
    assert!(
        acked.iter().all(|k| contents.contains(k)),
        "every acknowledged message arrived"
    );
    // And it can still recover across the drop: the epoch is the same.
    let since = got.len() as u64 - 10;
    let mut late = user(a.addr(), "late");
    send(
        &mut late,
        json!({"type": "join", "room": room, "since": since, "epoch": epoch}),
    );
    assert_eq!(next_of(&mut late, "joined")["recovered"], true);
    assert_eq!(
        messages(&mut late, 10),
        got[got.len() - 10..]
            .iter()
            .map(|m| (m.0, json!(m.1)))
            .collect::<Vec<_>>()
    );
}

#[test]
fn rooms_and_users_shard_over_three_redis_servers() {
    let servers = [RedisServer::start(), RedisServer::start(), RedisServer::start()];
    let all = urls(&servers.iter().collect::<Vec<_>>());
    let (a, b) = (Node::start(&all, &[]), Node::start(&all, &[]));
    let rooms: Vec<String> = (0..9).map(|i| format!("shard-room-{i}")).collect();
    let mut on_a = user(a.addr(), "ann");
    let mut on_b = user(b.addr(), "ben");
    for room in &rooms {
        join(&mut on_a, room);
        let joined = join(&mut on_b, room);
        assert_eq!(joined["users"], json!(["ann", "ben"]), "{room}");
    }
    for (i, room) in rooms.iter().enumerate() {
        send(
            &mut on_a,
            json!({"type": "broadcast", "room": room, "content": i, "id": i}),
        );
    }
    let mut got: Vec<(String, u64)> = Vec::new();
    while got.len() < rooms.len() {
        let m = next_of(&mut on_b, "message");
        got.push((m["room"].as_str().unwrap().to_string(), m["seq"].as_u64().unwrap()));
    }
    got.sort();
    let mut expected: Vec<(String, u64)> = rooms.iter().map(|r| (r.clone(), 1)).collect();
    expected.sort();
    assert_eq!(got, expected, "each room's first message, across nodes");
    send(
        &mut on_b,
        json!({"type": "direct", "to": "ann", "content": "hi", "id": "d"}),
    );
    assert_eq!(next_of(&mut on_a, "direct")["content"], "hi");
    for s in &servers {
        let keys = s.cmd(&["KEYS", "rc:{shard-room-*}"]);
        assert!(
            keys.as_array().is_some_and(|k| !k.is_empty()),
            "server {} holds no room",
            s.port
        );
    }
}

#[test]
fn startup_without_redis_is_a_clear_error() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&url) && stderr.contains("unavailable"), "{stderr}");
}

#[test]
fn a_password_in_the_url_authenticates_and_is_never_shown() {
    let redis = RedisServer::with_args(&["--requirepass", "s3cret-pw"]);
    let good = format!("redis://:s3cret-pw@127.0.0.1:{}", redis.port);
    let node = Node::start(std::slice::from_ref(&good), &[]);
    let mut ws = user(node.addr(), "u");
    assert_eq!(join(&mut ws, "r")["type"], "joined");
    let printed = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--redis", &good, "--print-config"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("redis = [\"redis://:***@127.0.0.1:"), "{printed}");
    assert!(!printed.contains("s3cret-pw"), "{printed}");
    let bad = format!("redis://:wrong-pw@127.0.0.1:{}", redis.port);
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &bad])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("WRONGPASS") && !stderr.contains("wrong-pw"), "{stderr}");
}

#[test]
fn rediss_talks_tls_to_redis() {
    let ca = TestCa::new("redis test CA");
    let cert = ca.server_cert();
    let dir = std::env::temp_dir().join(format!("roomcast-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_file, key_file, ca_file) = (dir.join("cert.pem"), dir.join("key.pem"), dir.join("ca.pem"));
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let tls_port = free_port().to_string();
    let redis = RedisServer::with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert_file.to_str().unwrap(),
        "--tls-key-file",
        key_file.to_str().unwrap(),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://localhost:{tls_port}");
    let nodes: Vec<Node> = (0..2)
        .map(|_| Node::start(std::slice::from_ref(&url), &["--redis-ca", ca_file.to_str().unwrap()]))
        .collect();
    let mut x = user(nodes[0].addr(), "x");
    let mut y = user(nodes[1].addr(), "y");
    join(&mut x, "secure");
    join(&mut y, "secure");
    send(
        &mut x,
        json!({"type": "broadcast", "room": "secure", "content": "over TLS", "id": 1}),
    );
    assert_eq!(messages(&mut y, 1), [(1, json!("over TLS"))]);
    // Without the CA, the server's certificate is not trusted.
    let output = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--listen", "127.0.0.1:0", "--redis", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Redis commands per publish, from `INFO commandstats`: the same for a
/// room of 2 members on 2 nodes as for 40 members on 3 nodes.
#[test]
fn redis_commands_per_publish_do_not_grow_with_members_or_nodes() {
    let per_publish = |nodes: usize, members_per_node: usize| -> f64 {
        let redis = RedisServer::start();
        let nodes: Vec<Node> = (0..nodes).map(|_| Node::start(&urls(&[&redis]), &[])).collect();
        let mut members: Vec<Ws> = Vec::new();
        for (n, node) in nodes.iter().enumerate() {
            for m in 0..members_per_node {
                let mut ws = user(node.addr(), &format!("m{n}x{m}"));
                join(&mut ws, "count");
                members.push(ws);
            }
        }
        const K: usize = 200;
        let total = |r: &RedisServer| -> u64 { r.command_calls().iter().map(|c| c.1).sum() };
        let before = total(&redis);
        for k in 0..K {
            send(
                &mut members[0],
                json!({"type": "broadcast", "room": "count", "content": k, "id": k}),
            );
        }
        let last = members.len() - 1;
        assert_eq!(messages(&mut members[last], K).last().unwrap().0, K as u64);
        // Less the INFO call itself.
        (total(&redis) - before - 1) as f64 / K as f64
    };
    let small = per_publish(2, 1);
    let large = per_publish(3, 14);
    assert!(small <= 12.0, "{small} commands per publish");
    assert!(
        (large - small).abs() < 0.5,
        "{small} per publish for 2 members, {large} for 42"
    );
}

/// A node subscribes to a room's channel only while it has members there,
/// and typing reaches the other members on every node but not the sender.
#[test]
fn a_node_subscribes_only_to_rooms_it_has_members_in() {
    let redis = RedisServer::start();
    let (a, b) = (Node::start(&urls(&[&redis]), &[]), Node::start(&urls(&[&redis]), &[]));
    let subscribers = |room: &str| -> i64 {
        let v = redis.cmd(&["PUBSUB", "NUMSUB", &format!("rc:0:r:{room}")]);
        v.as_array().and_then(|a| a.get(1)).and_then(|n| n.as_int()).unwrap()
    };
    let mut ann = user(a.addr(), "ann");
    let mut bea = user(b.addr(), "bea");
    join(&mut bea, "only-b");
    assert_eq!(subscribers("only-b"), 1, "node A has no member there: no subscription");
    join(&mut ann, "both");
    join(&mut bea, "both");
    assert_eq!(subscribers("both"), 2);
    send(
        &mut ann,
        json!({"type": "typing", "room": "both", "typing": true, "id": "t"}),
    );
    assert_eq!(
        next_of(&mut bea, "typing"),
        json!({"type": "typing", "room": "both", "user": "ann", "typing": true})
    );
    assert_eq!(next_of(&mut ann, "ack")["id"], "t");
    send(&mut ann, json!({"type": "leave", "room": "both", "id": "l"}));
    assert_eq!(next_of(&mut ann, "left")["id"], "l");
    assert_eq!(subscribers("both"), 1, "the last member on node A left: unsubscribed");
}

/// An API call with `Connection: close`: its status and JSON body.
fn api(addr: SocketAddr, key: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = raw(addr);
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
    let (status, _) = read_head(&mut s);
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} {text:?}: {e}"));
    (status, body)
}

/// The publish API on one node sees and reaches the others: `/api/rooms`
/// counts every node's members of rooms sharded over two Redis servers,
/// and `/api/disconnect` closes the user's connections on every node, in
/// every dialect; with a Redis server down the listing is `unavailable`.
#[test]
fn the_publish_api_lists_and_disconnects_across_nodes() {
    const KEY: &str = "node-api-key-0123456789";
    let digest = ring::digest::digest(&ring::digest::SHA256, KEY.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let scratch = Scratch::new("redis-api");
    let keys = scratch.path("keys");
    std::fs::write(&keys, format!("{hex} backend\n")).unwrap();
    let keys = keys.to_str().unwrap();
    let servers = [RedisServer::start(), RedisServer::start()];
    let all = urls(&servers.iter().collect::<Vec<_>>());
    let a = Node::start(&all, &["--api-key-file", keys]);
    let b = Node::start(&all, &["--api-key-file", keys]);
    let rooms: Vec<String> = (0..6).map(|i| format!("api-room-{i}")).collect();
    let mut ann = user(a.addr(), "ann");
    let mut ben = user(b.addr(), "ben");
    for room in &rooms {
        join(&mut ann, room);
    }
    for room in &rooms[..3] {
        join(&mut ben, room);
    }
    // ben twice more on node b: a second /ws connection and the chat dialect.
    let mut ben2 = user(b.addr(), "ben");
    join(&mut ben2, &rooms[0]);
    let mut ben_chat = ws(b.addr(), &format!("/ws/{}?username=ben", rooms[1]));
    let mut sub = ws(a.addr(), &format!("/pubsub/{}", rooms[5]));
    let (status, listed) = api(a.addr(), KEY, "GET", "/api/rooms", None);
    assert_eq!(status, 200, "{listed}");
    let expected: Vec<Value> = rooms
        .iter()
        .enumerate()
        .map(|(i, room)| {
            let (members, users) = match i {
                0 => (3, 2),
                1 => (3, 2),
                2 => (2, 2),
                5 => (2, 1),
                _ => (1, 1),
            };
            json!({"room": room, "members": members, "users": users})
        })
        .collect();
    assert_eq!(listed, json!({ "rooms": expected }));

    let (status, answer) = api(
        b.addr(),
        KEY,
        "POST",
        "/api/disconnect",
        Some(json!({"user": "ann", "code": 4003})),
    );
    assert_eq!((status, answer), (200, json!({"ok": true})));
    assert_eq!(close_code(&mut ann), 4003, "ann on the other node");
    let (status, answer) = api(a.addr(), KEY, "POST", "/api/disconnect", Some(json!({"user": "ben"})));
    assert_eq!((status, answer), (200, json!({"ok": true})));
    for ws in [&mut ben, &mut ben2, &mut ben_chat] {
        assert_eq!(close_code(ws), 4000, "every connection of ben, in every dialect");
    }
    // The subscriber stays; once the leaves are in, only it is listed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listed) = api(b.addr(), KEY, "GET", "/api/rooms", None);
        if listed == json!({"rooms": [{"room": rooms[5], "members": 1, "users": 0}]}) {
            break;
        }
        assert!(Instant::now() < deadline, "still listed: {listed}");
        std::thread::sleep(Duration::from_millis(20));
    }
    sub.send(Message::text("still here")).unwrap();
    assert_eq!(sub.read().unwrap(), Message::text("still here"));
    // One shard down: the listing is refused, not partial.
    let mut servers = servers;
    servers[1].stop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, answer) = api(a.addr(), KEY, "GET", "/api/rooms", None);
        if status == 503 {
            assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
            break;
        }
        assert!(Instant::now() < deadline, "still answered {status} {answer}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
