//! The server-side publish API (`/api/`, README "Publish API") over real
//! sockets: every endpoint and every error status, HTTP/1.1 keep-alive and
//! pipelining, the limits on request heads and bodies, and API messages
//! seen by `/ws`, chat and pub/sub clients on other workers as ordinary
//! room messages. Clients: a hand-written HTTP/1.1 client (so pipelining
//! and broken framing can be sent) and tungstenite for the WebSockets.

mod common;

use common::*;
use roomcast::auth::ServerKeys;
use roomcast::bench::{self, ApiConfig, Common, Target};
use roomcast::engine::memory::owner_of;
use roomcast::net::Config;
use roomcast::rooms::{RoomConfig, RoomServer, StoreKind};
use roomcast::runtime::AcceptMode;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::Message;

const KEY_ALL: &str = "k-all-0123456789";
const KEY_SCORES: &str = "k-scores-0123456789";
const KEY_READ: &str = "k-read-0123456789";

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn key_file() -> String {
    format!(
        "# test keys\n{} backend\n{} scores allow=publish rooms=scores:*\n{} reader allow=read\n",
        sha256_hex(KEY_ALL),
        sha256_hex(KEY_SCORES),
        sha256_hex(KEY_READ)
    )
}

fn keys() -> ServerKeys {
    ServerKeys::parse(&key_file()).unwrap()
}

fn rooms_config() -> RoomConfig {
    RoomConfig {
        rate: roomcast::rooms::rate::RateLimit {
            per_second: 1e6,
            burst: 1e6,
        },
        ..RoomConfig::default()
    }
}

fn server_with(config: Config, workers: usize) -> Running {
    start_rooms(
        RoomServer::new(config, rooms_config())
            .workers(workers)
            .accept(AcceptMode::Handoff)
            .api_keys(keys()),
    )
}

fn server(workers: usize) -> Running {
    server_with(test_config(), workers)
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The error code of a JSON error.
    fn code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// One HTTP/1.1 connection; responses are read by their Content-Length,
/// so several can come on it.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            s: raw(addr),
            buf: Vec::new(),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.s.read(&mut chunk).unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    fn response(&mut self) -> Response {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "connection ended inside a head: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while self.buf.len() < end + len {
            assert!(self.fill() > 0, "connection ended inside a body");
        }
        let body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Response { status, head, body }
    }

    fn call(&mut self, method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Response {
        self.send_raw(&request(method, path, key, body));
        self.response()
    }

    fn post(&mut self, path: &str, body: Value) -> Response {
        self.call("POST", path, Some(KEY_ALL), Some(&body))
    }

    fn get(&mut self, path: &str) -> Response {
        self.call("GET", path, Some(KEY_ALL), None)
    }

    /// True if the server closes the connection (EOF) with nothing more to say.
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && closed_by_peer(&mut self.s)
    }
}

fn request(method: &str, path: &str, key: Option<&str>, body: Option<&Value>) -> Vec<u8> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let length = if method == "POST" {
        format!("Content-Length: {}\r\n", body.len())
    } else {
        String::new()
    };
    format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}{length}\r\n{body}").into_bytes()
}

fn join(ws: &mut Ws, room: &str) -> Value {
    ws.send(Message::text(json!({"type": "join", "room": room}).to_string()))
        .unwrap();
    let joined = recv_json(ws);
    assert_eq!(joined["type"], "joined", "{joined}");
    joined
}

fn text(ws: &mut Ws) -> String {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return (u16::from(frame.code), frame.reason.to_string()),
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
}

#[test]
fn every_endpoint_over_one_keep_alive_connection() {
    let server = server(1);
    let mut alice = user(server.addr, "alice");
    join(&mut alice, "news");
    let mut api = Client::new(server.addr);

    let r = api.post("/api/publish", json!({"room": "news", "content": {"headline": "hi"}}));
    assert_eq!((r.status, r.json()), (200, json!({"seq": 1})), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("connection"), None, "kept alive");
    let m = next_of(&mut alice, "message");
    assert_eq!(
        (
            m["room"].clone(),
            m["user"].clone(),
            m["content"].clone(),
            m["seq"].clone()
        ),
        (json!("news"), json!("server"), json!({"headline": "hi"}), json!(1))
    );

    let r = api.post(
        "/api/publish",
        json!({"room": "news", "user": "editor", "content": "two"}),
    );
    assert_eq!(r.json(), json!({"seq": 2}));
    assert_eq!(next_of(&mut alice, "message")["user"], "editor");

    let r = api.post("/api/broadcast", json!({"rooms": ["news", "other"], "content": 3}));
    assert_eq!((r.status, r.json()), (200, json!({"seqs": {"news": 3, "other": 1}})));
    assert_eq!(next_of(&mut alice, "message")["seq"], 3);

    let r = api.post("/api/direct", json!({"user": "alice", "content": {"n": 1}}));
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    let d = next_of(&mut alice, "direct");
    assert_eq!(
        (d["from"].clone(), d["content"].clone()),
        (json!("server"), json!({"n": 1}))
    );
    let r = api.post("/api/direct", json!({"user": "alice", "from": "ops", "content": 2}));
    assert_eq!(r.status, 200);
    assert_eq!(next_of(&mut alice, "direct")["from"], "ops");

    let r = api.get("/api/rooms/news/presence");
    assert_eq!((r.status, r.json()), (200, json!({"room": "news", "users": ["alice"]})));

    let r = api.get("/api/rooms/news/history?since=1&limit=1");
    assert_eq!(r.status, 200);
    let history = r.json();
    assert_eq!(history["room"], "news");
    let messages = history["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        (messages[0]["seq"].clone(), messages[0]["user"].clone()),
        (json!(2), json!("editor"))
    );
    let r = api.get("/api/rooms/news/history");
    let seqs: Vec<u64> = r.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    let mut bob = user(server.addr, "bob");
    join(&mut bob, "news");
    let r = api.get("/api/rooms");
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"rooms": [{"room": "news", "members": 2, "users": 2}]})),
        "rooms with members only: `other` has none"
    );

    let r = api.post("/api/disconnect", json!({"user": "bob"}));
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    assert_eq!(close_of(&mut bob), (4000, "disconnected by the server".to_owned()));
    let r = api.post("/api/disconnect", json!({"user": "alice", "code": 4409}));
    assert_eq!(r.status, 200);
    assert_eq!(close_of(&mut alice).0, 4409);
    let r = api.get("/api/rooms");
    assert_eq!(r.json(), json!({"rooms": []}));
}

#[test]
fn a_publish_to_an_empty_room_is_history_and_recovery_for_every_dialect() {
    let server = server(1);
    let mut api = Client::new(server.addr);
    let r = api.post("/api/publish", json!({"room": "quiet", "content": "first"}));
    assert_eq!(
        r.json(),
        json!({"seq": 1}),
        "an empty room is loaded, appended to, and closed"
    );
    let r = api.post("/api/publish", json!({"room": "quiet", "content": {"second": true}}));
    assert_eq!(r.json(), json!({"seq": 2}));
    let r = api.get("/api/rooms/quiet/history");
    assert_eq!(r.json()["messages"].as_array().unwrap().len(), 2);
    // Recovery from seq 0 in the room's epoch gets both, proven complete.
    let mut late = user(server.addr, "late");
    let joined = join(&mut late, "quiet");
    assert_eq!(joined["seq"], 2);
    let epoch = joined["epoch"].clone();
    let mut again = user(server.addr, "again");
    again
        .send(Message::text(
            json!({"type": "join", "room": "quiet", "since": 0, "epoch": epoch}).to_string(),
        ))
        .unwrap();
    let joined = next_of(&mut again, "joined");
    assert_eq!(joined["recovered"], true, "{joined}");
    assert_eq!(next_of(&mut again, "message")["content"], "first");
    assert_eq!(next_of(&mut again, "message")["content"], json!({"second": true}));
    // The chat and pub/sub dialects get API messages as theirs.
    let mut chat = ws(server.addr, "/ws/quiet?username=carol");
    let mut pubsub = ws(server.addr, "/pubsub/quiet");
    let r = api.post("/api/publish", json!({"room": "quiet", "content": "third"}));
    assert_eq!(r.json(), json!({"seq": 3}));
    let chat_msg = loop {
        let t: Value = serde_json::from_str(&text(&mut chat)).unwrap();
        if t["type"] == "chat" {
            break t;
        }
    };
    assert_eq!(
        chat_msg,
        json!({"type": "chat", "content": "third", "room": "quiet", "username": "server"})
    );
    assert_eq!(text(&mut pubsub), "third");
    assert_eq!(next_of(&mut late, "message")["seq"], 3);
}

#[test]
fn errors_have_statuses_codes_and_json_bodies() {
    let config = Config {
        max_body_size: 2048,
        ..test_config()
    };
    let server = start_rooms(
        RoomServer::new(
            config,
            RoomConfig {
                max_content_size: 100,
                ..rooms_config()
            },
        )
        .api_keys(keys()),
    );
    let addr = server.addr;
    let mut api = Client::new(addr);
    let publish = json!({"room": "r", "content": 1});

    let r = api.call("POST", "/api/publish", None, Some(&publish));
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"), "{r:?}");
    let r = api.call("POST", "/api/publish", Some("wrong"), Some(&publish));
    assert_eq!((r.status, r.code()), (401, "unauthorized".into()));
    let r = api.call("POST", "/api/disconnect", Some(KEY_SCORES), Some(&json!({"user": "x"})));
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden".into()),
        "no disconnect for this key"
    );
    let r = api.call("POST", "/api/publish", Some(KEY_SCORES), Some(&publish));
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden".into()),
        "room outside the key's rooms"
    );
    let r = api.call(
        "POST",
        "/api/publish",
        Some(KEY_SCORES),
        Some(&json!({"room": "scores:nba", "content": 1})),
    );
    assert_eq!(r.status, 200);
    let r = api.call("POST", "/api/publish", Some(KEY_READ), Some(&publish));
    assert_eq!(r.status, 403);
    assert_eq!(api.call("GET", "/api/rooms", Some(KEY_READ), None).status, 200);
    let r = api.get("/api/nothing");
    assert_eq!((r.status, r.code()), (404, "not_found".into()));
    let r = api.get("/api/publish");
    assert_eq!(
        (r.status, r.code(), r.header("allow")),
        (405, "method_not_allowed".into(), Some("POST"))
    );
    let r = api.post("/api/rooms", json!({}));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    for (body, code) in [
        (&b"{not json"[..], "bad_json"),
        (b"[1,2]", "bad_json"),
        (br#"{"content":1}"#, "missing_field"),
        (br#"{"room":"r"}"#, "missing_field"),
        (br#"{"room":7,"content":1}"#, "bad_json"),
        (br#"{"room":"no spaces","content":1}"#, "invalid_room"),
        (br#"{"room":"r","user":"","content":1}"#, "invalid_user"),
    ] {
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_ALL}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        api.send_raw(&[head.as_bytes(), body].concat());
        let r = api.response();
        assert_eq!(
            (r.status, r.code()),
            (400, code.into()),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    let r = api.get("/api/rooms/bad%20name/presence");
    assert_eq!((r.status, r.code()), (400, "invalid_room".into()));
    let r = api.get("/api/rooms/r/history?limit=ten");
    assert_eq!((r.status, r.code()), (400, "invalid_query".into()));
    let r = api.post("/api/publish", json!({"room": "r", "content": "x".repeat(200)}));
    assert_eq!((r.status, r.code()), (413, "message_too_large".into()));
    let r = api.post("/api/direct", json!({"user": "nobody", "content": 1}));
    assert_eq!((r.status, r.code()), (404, "user_offline".into()));
    // After every error above, the same connection still serves.
    assert_eq!(api.post("/api/publish", publish.clone()).json(), json!({"seq": 1}));

    // Framing the server will not read: answered, then the connection closes.
    let framing = |head: &str| {
        let mut c = Client::new(addr);
        c.send_raw(head.as_bytes());
        let r = c.response();
        assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        assert!(c.closed(), "closed after {head}");
        (r.status, r.code())
    };
    let auth = format!("Host: t\r\nAuthorization: Bearer {KEY_ALL}\r\n");
    assert_eq!(
        framing(&format!("POST /api/publish HTTP/1.1\r\n{auth}\r\n")),
        (411, "length_required".into())
    );
    assert_eq!(
        framing(&format!(
            "POST /api/publish HTTP/1.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )),
        (411, "length_required".into())
    );
    assert_eq!(
        framing(&format!(
            "POST /api/publish HTTP/1.1\r\n{auth}Transfer-Encoding: gzip\r\n\r\n"
        )),
        (501, "not_implemented".into())
    );
    assert_eq!(
        framing(&format!(
            "POST /api/publish HTTP/1.1\r\n{auth}Content-Length: 2049\r\n\r\n"
        )),
        (413, "body_too_large".into()),
        "over --max-api-body, refused before the body is sent"
    );
    assert_eq!(
        framing(&format!(
            "POST /api/publish HTTP/1.1\r\n{auth}Content-Length: 1, 2\r\n\r\n"
        )),
        (400, "bad_request".into())
    );
    // Exactly at the limit is fine.
    let content = "y".repeat(2048 - r#"{"room":"r","content":""}"#.len());
    let mut c = Client::new(addr);
    let r = c.call(
        "POST",
        "/api/publish",
        Some(KEY_ALL),
        Some(&json!({"room": "r", "content": content})),
    );
    assert_eq!(
        (r.status, r.code()),
        (413, "message_too_large".into()),
        "read whole, then judged"
    );
}

#[test]
fn the_api_is_off_without_keys_and_other_endpoints_are_unchanged() {
    let off = start_rooms(RoomServer::new(test_config(), rooms_config()));
    let (status, head) = http(
        off.addr,
        &format!(
            "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_ALL}\r\nContent-Length: 2\r\n\r\n{{}}"
        ),
    );
    assert_eq!(status, 404);
    assert!(head.contains("text/plain"), "the plain 404 of any unknown path: {head}");
    // /health still answers and closes, as before the API existed.
    let server = server(1);
    let mut c = Client::new(server.addr);
    c.send_raw(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed());
}

#[test]
fn thousands_of_publishes_on_one_keep_alive_connection() {
    let server = server(1);
    let mut member = user(server.addr, "watcher");
    join(&mut member, "busy");
    let mut api = Client::new(server.addr);
    const N: u64 = 3000;
    for i in 1..=N {
        let r = api.post("/api/publish", json!({"room": "busy", "content": i}));
        assert_eq!(r.json(), json!({"seq": i}));
    }
    for i in 1..=N {
        let m = next_of(&mut member, "message");
        assert_eq!((m["seq"].as_u64(), m["content"].as_u64()), (Some(i), Some(i)));
    }
    // Every answer and message went out: the queued-bytes gauge is back to
    // zero (deferred answers are counted in as well as out).
    api.send_raw(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    let stats = api.response().json();
    assert_eq!(stats["send_queue_bytes"], json!(0), "{stats}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    // Three workers: the rooms' owners differ, the answers still keep order.
    let server = server(3);
    let rooms: Vec<String> = (0..3)
        .map(|w| {
            (0..)
                .map(|i| format!("p{w}-{i}"))
                .find(|r| owner_of(r, 3) == w)
                .unwrap()
        })
        .collect();
    let mut api = Client::new(server.addr);
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    let mut seqs = [0u64; 3];
    for i in 0..300 {
        let r = i % 3;
        if i % 7 == 0 {
            batch.extend(request(
                "GET",
                &format!("/api/rooms/{}/history", rooms[r]),
                Some(KEY_ALL),
                None,
            ));
            expected.push(json!({"history_len": seqs[r]}));
        } else {
            let body = json!({"room": rooms[r], "content": i});
            batch.extend(request("POST", "/api/publish", Some(KEY_ALL), Some(&body)));
            seqs[r] += 1;
            expected.push(json!({"seq": seqs[r]}));
        }
    }
    api.send_raw(&batch);
    for want in expected {
        let r = api.response();
        assert_eq!(r.status, 200);
        let got = r.json();
        if let Some(len) = want.get("history_len") {
            assert_eq!(
                got["messages"].as_array().unwrap().len() as u64,
                len.as_u64().unwrap(),
                "{got}"
            );
        } else {
            assert_eq!(got, want);
        }
    }
    // Then `Connection: close`: answered, and the connection ends.
    let mut last = request("GET", "/api/rooms", Some(KEY_ALL), None);
    let at = last.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    last.splice(at..at, b"Connection: close\r\n".iter().copied());
    last.extend(request("GET", "/api/rooms", Some(KEY_ALL), None));
    api.send_raw(&last);
    let r = api.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(api.closed(), "the request after `Connection: close` is not answered");
}

#[test]
fn a_client_that_half_closes_after_its_requests_gets_every_answer() {
    let server = server(3);
    let mut api = Client::new(server.addr);
    let mut batch = Vec::new();
    for i in 0..20 {
        let body = json!({"room": format!("h{}", i % 4), "content": i});
        batch.extend(request("POST", "/api/publish", Some(KEY_ALL), Some(&body)));
    }
    api.send_raw(&batch);
    api.s.shutdown(std::net::Shutdown::Write).unwrap();
    for i in 0..20u64 {
        let r = api.response();
        assert_eq!(r.json(), json!({"seq": i / 4 + 1}), "answer {i}");
    }
    assert!(api.closed());
}

#[test]
fn expect_continue_and_http_1_0_and_an_upgrade_after_requests() {
    let server = server(1);
    let mut api = Client::new(server.addr);
    let body = json!({"room": "c", "content": 1}).to_string();
    api.send_raw(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_ALL}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = api.response();
    assert_eq!(interim.status, 100);
    api.send_raw(body.as_bytes());
    assert_eq!(api.response().json(), json!({"seq": 1}));
    // The same connection then upgrades to a WebSocket.
    api.send_raw(upgrade_request("/ws?username=u", "").as_bytes());
    let r = api.response();
    assert_eq!(r.status, 101);
    let early = std::io::Cursor::new(std::mem::take(&mut api.buf));
    let (op, payload) = read_frame(&mut early.chain(&api.s));
    assert_eq!(op, 1);
    assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap()["type"], "welcome");

    // HTTP/1.0 has no keep-alive here.
    let mut old = Client::new(server.addr);
    old.send_raw(format!("GET /api/rooms HTTP/1.0\r\nAuthorization: Bearer {KEY_ALL}\r\n\r\n").as_bytes());
    let r = old.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(old.closed());
}

#[test]
fn idle_keep_alive_connections_are_closed_and_slow_requests_dropped() {
    let config = Config {
        keepalive_timeout: Duration::from_millis(300),
        handshake_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let server = server_with(config, 1);
    let mut api = Client::new(server.addr);
    assert_eq!(api.get("/api/rooms").status, 200);
    let idle = Instant::now();
    assert!(api.closed(), "an idle keep-alive connection is closed");
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // A body trickling in a byte at a time is dropped at the request
    // timeout, counted from its first byte however steadily it trickles.
    let mut slow = Client::new(server.addr);
    let body = json!({"room": "s", "content": "x".repeat(100)}).to_string();
    slow.send_raw(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY_ALL}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let started = Instant::now();
    let mut dropped = false;
    for b in body.bytes() {
        std::thread::sleep(Duration::from_millis(50));
        if slow.s.write_all(&[b]).is_err() {
            dropped = true;
            break;
        }
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(dropped || slow.closed(), "a slow body is dropped");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A slow head on a connection that already served a request: the same.
    let mut again = Client::new(server.addr);
    assert_eq!(again.get("/api/rooms").status, 200);
    let started = Instant::now();
    for b in b"GET /api/rooms HTTP/1.1\r\nHost: t\r\nX-Slow: ".iter() {
        if again.s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    assert!(again.closed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // And the stats count them as request timeouts.
    let mut stats = Client::new(server.addr);
    stats.send_raw(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    let s = stats.response().json();
    assert!(s["handshake_timeouts"].as_u64().unwrap() >= 2, "{s}");
}

#[test]
fn a_second_request_head_is_bounded_too() {
    let config = Config {
        max_head_size: 1024,
        ..test_config()
    };
    let server = server_with(config, 1);
    let mut api = Client::new(server.addr);
    assert_eq!(api.get("/api/rooms").status, 200);
    api.send_raw(format!("GET /api/rooms HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(2000)).as_bytes());
    let r = api.response();
    assert_eq!(r.status, 431);
    assert!(api.closed());
}

#[test]
fn api_messages_reach_members_on_every_worker_in_order() {
    // Handoff: connection k lands on worker k mod 3.
    let server = server(3);
    let room = (0..).map(|i| format!("live{i}")).find(|r| owner_of(r, 3) == 2).unwrap();
    let mut members: Vec<Ws> = (0..3).map(|i| user(server.addr, &format!("m{i}"))).collect();
    for m in &mut members {
        join(m, &room);
    }
    // Connections 3, 4: the API client on worker 0, a chat member on worker 1.
    let mut api = Client::new(server.addr);
    let mut chat = ws(server.addr, &format!("/ws/{room}?username=chatter"));
    for i in 1..=50u64 {
        let r = api.post("/api/publish", json!({"room": room, "content": i}));
        assert_eq!(r.json(), json!({"seq": i}));
    }
    for m in &mut members {
        for i in 1..=50u64 {
            let msg = next_of(m, "message");
            assert_eq!((msg["seq"].as_u64(), msg["content"].as_u64()), (Some(i), Some(i)));
        }
    }
    let mut seen = 0;
    while seen < 50 {
        let t: Value = serde_json::from_str(&text(&mut chat)).unwrap();
        if t["type"] == "chat" {
            seen += 1;
            assert_eq!(t["content"], seen.to_string());
        }
    }
    let r = api.get("/api/rooms");
    assert_eq!(
        r.json(),
        json!({"rooms": [{"room": room, "members": 4, "users": 4}]}),
        "counted across all workers"
    );
    let r = api.get(&format!("/api/rooms/{room}/presence"));
    assert_eq!(r.json()["users"], json!(["chatter", "m0", "m1", "m2"]));
}

#[test]
fn disconnect_closes_a_user_on_every_worker_in_every_dialect() {
    let server = server(3);
    // Connections 0-2: dave on every worker; 3: the API; 4: dave's chat
    // connection (worker 1); 5: someone else.
    let mut daves: Vec<Ws> = (0..3).map(|_| user(server.addr, "dave")).collect();
    let mut api = Client::new(server.addr);
    let mut chat = ws(server.addr, "/ws/lounge?username=dave");
    let mut erin = user(server.addr, "erin");
    let _ = text(&mut chat);
    let r = api.post("/api/disconnect", json!({"user": "dave", "code": 4001}));
    assert_eq!((r.status, r.json()), (200, json!({"ok": true})));
    for dave in daves.iter_mut().chain([&mut chat]) {
        assert_eq!(close_of(dave), (4001, "disconnected by the server".to_owned()));
    }
    // Nobody else.
    erin.send(Message::text(
        json!({"type": "join", "room": "lounge", "id": 1}).to_string(),
    ))
    .unwrap();
    assert_eq!(next_of(&mut erin, "joined")["room"], "lounge");
    let r = api.post("/api/direct", json!({"user": "dave", "content": 1}));
    assert_eq!(r.code(), "user_offline", "dave is gone everywhere");
    // Counted as server kicks (the 4000 range) in /metrics.
    let mut metrics = Client::new(server.addr);
    metrics.send_raw(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let body = String::from_utf8(metrics.response().body).unwrap();
    let kicks: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("roomcast_disconnects_total{reason=\"server_kick\"} "))
        .unwrap_or_else(|| panic!("no server_kick line in\n{body}"))
        .parse()
        .unwrap();
    assert_eq!(kicks, 4, "three /ws connections and one chat connection");
}

#[test]
fn an_unavailable_store_is_503_unavailable() {
    let dir = std::env::temp_dir().join(format!("roomcast-api-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server = start_rooms(
        RoomServer::new(test_config(), rooms_config())
            .store(StoreKind::Sqlite {
                path: dir.join("db"),
                flush: Duration::from_millis(5),
                batch: 50,
                max_bytes: Some(64 * 1024),
            })
            .api_keys(keys()),
    );
    let mut api = Client::new(server.addr);
    let filler = "x".repeat(4000);
    // Every publish here loads a room (none has members): once the store
    // is full, one that must be created in it cannot be loaded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    let r = loop {
        i += 1;
        let r = api.post("/api/publish", json!({"room": format!("fill{i}"), "content": filler}));
        if r.status != 200 {
            break r;
        }
        assert!(Instant::now() < deadline, "the store never refused");
    };
    assert_eq!((r.status, r.code()), (503, "unavailable".into()), "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary: `--api-key-file` and `--max-api-body` work, and the key
/// never reaches the log, even at trace level.
#[test]
fn the_binary_serves_the_api_and_never_logs_the_key() {
    let dir = std::env::temp_dir().join(format!("roomcast-api-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, key_file()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "serve",
            "--store",
            "memory",
            "--max-api-body",
            "100",
            "--listen",
            &addr.to_string(),
        ])
        .arg("--api-key-file")
        .arg(&file)
        .env("RUST_LOG", "trace")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut api = Client::new(addr);
    assert_eq!(
        api.post("/api/publish", json!({"room": "r", "content": 1})).json(),
        json!({"seq": 1})
    );
    assert_eq!(api.call("GET", "/api/rooms", Some("not-the-key"), None).status, 401);
    let r = api.post("/api/publish", json!({"room": "r", "content": "z".repeat(100)}));
    assert_eq!(r.status, 413, "--max-api-body 100");
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(log.contains("publish API on at /api/ with 3 key(s)"), "{log}");
    assert!(log.contains("API request from 127.0.0.1:"), "{log}");
    for key in [KEY_ALL, KEY_SCORES, KEY_READ, "not-the-key"] {
        assert!(!log.contains(key), "a key was logged:\n{log}");
    }
}

/// `roomcast bench api` against an in-process server: publishes are
/// answered 200 and every one reaches the member.
#[test]
fn the_api_bench_publishes_and_its_member_gets_every_message() {
    let server = server(1);
    let mut common = Common::new(Target::parse(&format!("ws://{}/", server.addr)).unwrap());
    common.warmup = Duration::from_millis(200);
    common.duration = Duration::from_secs(1);
    common.server_pid = Some(std::process::id());
    let report = bench::run_api(&ApiConfig {
        common,
        connections: 2,
        in_flight: 4,
        room: "bench".into(),
        size: 8,
        key: KEY_ALL.into(),
        members: 1,
        drain: Duration::from_secs(5),
    })
    .unwrap();
    let v = Value::Object(report.json.clone());
    assert!(v["publishes"].as_u64().unwrap() > 100, "{v}");
    assert!(v["publishes_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert!(
        v["deliveries"].as_u64().unwrap() >= v["publishes"].as_u64().unwrap(),
        "{v}"
    );
}
