//! Every abuse limit, hit on purpose over every transport: the precise
//! answer (HTTP status, close code or JSON error), the count in
//! `/metrics`, and that other clients are not harmed.

mod common;

use common::*;
use roomcast::net::Config;
use roomcast::rooms::rate::RateLimit;
use roomcast::rooms::{RoomConfig, RoomServer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

/// No per-address limits unless a test sets them: its own connections
/// (and its `/metrics` requests) all come from 127.0.0.1.
fn config() -> Config {
    Config {
        max_connections_per_ip: 0,
        handshake_rate_per_ip: None,
        ..test_config()
    }
}

fn server(t: &Transport, config: Config, rooms: RoomConfig) -> Running {
    start_rooms(RoomServer::new(t.config(config), rooms))
}

fn limit_hits(t: &Transport, addr: SocketAddr, limit: &str) -> u64 {
    metric(
        &get(t.dial(addr), "/metrics"),
        &format!("roomcast_limit_hits_total{{limit=\"{limit}\"}}"),
    )
}

/// An upgraded raw stream to `path`.
fn open(t: &Transport, addr: SocketAddr, path: &str) -> Box<dyn Stream> {
    let mut s = t.dial(addr);
    s.write_all(upgrade_request(path, "").as_bytes()).unwrap();
    assert_eq!(read_head(&mut s).0, 101);
    s
}

/// A WebSocket client over `t` that has read its `welcome`.
fn user(t: &Transport, addr: SocketAddr, name: &str) -> WebSocket<Box<dyn Stream>> {
    let url = format!("{}://localhost:{}/ws?username={name}", t.scheme(), addr.port());
    let (mut ws, _) = tungstenite::client(url, t.dial(addr)).unwrap();
    assert_eq!(recv(&mut ws)["type"], "welcome");
    ws
}

fn recv(ws: &mut WebSocket<Box<dyn Stream>>) -> Value {
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(frame) => return json!({"closed": frame.map(|f| u16::from(f.code))}),
            _ => continue,
        }
    }
}

fn send(ws: &mut WebSocket<Box<dyn Stream>>, value: Value) {
    ws.send(Message::text(value.to_string())).unwrap();
}

/// Fragments `payload` into text frames of one byte each.
fn one_byte_fragments(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() * 7);
    for (i, byte) in payload.iter().enumerate() {
        let opcode = if i == 0 { 0x1 } else { 0x0 };
        let fin = if i + 1 == payload.len() { 0x80 } else { 0 };
        out.extend_from_slice(&[fin | opcode, 0x80 | 1, 0, 0, 0, 0, *byte]);
    }
    out
}

/// A refusal at accept: 429/503 with the reason over plain TCP. Over TLS
/// the refusal comes before any TLS handshake (which is the work the limit
/// saves), so the answer is the closed connection.
fn assert_refused(t: &Transport, addr: SocketAddr, status: u16, reason: &str) {
    match t {
        Transport::Plain => {
            let mut s = t.dial(addr);
            let _ = s.write_all(upgrade_request("/ws?username=x", "").as_bytes());
            let (got, head) = read_head(&mut s);
            assert_eq!(got, status, "{head}");
            // Read by length: the server closes at once, and the request it
            // never read may turn its FIN into a reset after the response.
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .unwrap()
                .parse()
                .unwrap();
            let mut body = vec![0; length];
            s.read_exact(&mut body).unwrap();
            assert_eq!(body, reason.as_bytes());
            if status == 429 {
                assert!(head.contains("Retry-After: 1\r\n"), "{head}");
            }
        }
        Transport::Tls { .. } => assert!(
            t.try_dial(addr, None).is_err(),
            "TLS handshake with a refused connection"
        ),
    }
}

#[test]
fn connections_per_address_are_capped_and_others_are_unaffected() {
    for t in Transport::all() {
        let server = server(
            &t,
            Config {
                max_connections_per_ip: 3,
                ..config()
            },
            RoomConfig::default(),
        );
        let addr = server.addr;
        let held: Vec<_> = (0..3).map(|_| open(&t, addr, "/pubsub/a")).collect();
        assert_refused(&t, addr, 429, "too many connections from this address");
        // Another address still gets in (and can read the metrics).
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut s = t.dial_from(addr, other);
        s.write_all(upgrade_request("/pubsub/a", "").as_bytes()).unwrap();
        assert_eq!(read_head(&mut s).0, 101, "{}", t.name());
        let text = get(t.dial_from(addr, "127.0.0.3".parse().unwrap()), "/metrics");
        assert_eq!(
            metric(&text, "roomcast_limit_hits_total{limit=\"connections_per_ip\"}"),
            1
        );
        // A connection given back is a slot given back.
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut s = t.dial(addr);
            s.write_all(upgrade_request("/pubsub/a", "").as_bytes()).unwrap();
            let mut first = [0u8; 12];
            if s.read_exact(&mut first).is_ok() && &first[9..12] == b"101" {
                break;
            }
            assert!(Instant::now() < deadline, "{}: slots not released", t.name());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn new_connections_per_second_per_address_are_limited() {
    for t in Transport::all() {
        let rate = RateLimit {
            per_second: 1.0,
            burst: 5.0,
        };
        let server = server(
            &t,
            Config {
                handshake_rate_per_ip: Some(rate),
                ..config()
            },
            RoomConfig::default(),
        );
        let addr = server.addr;
        for _ in 0..5 {
            let text = get(t.dial(addr), "/health");
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        }
        assert_refused(&t, addr, 429, "too many new connections from this address");
        let text = get(t.dial_from(addr, "127.0.0.2".parse().unwrap()), "/metrics");
        assert_eq!(
            metric(&text, "roomcast_limit_hits_total{limit=\"handshake_rate_per_ip\"}"),
            1
        );
    }
}

#[test]
fn total_connections_are_capped_with_503() {
    for t in Transport::all() {
        let server = server(
            &t,
            Config {
                max_connections: 2,
                ..config()
            },
            RoomConfig::default(),
        );
        let addr = server.addr;
        let held: Vec<_> = (0..2).map(|_| open(&t, addr, "/pubsub/a")).collect();
        assert_refused(&t, addr, 503, "server full");
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        let text = loop {
            let text = get(t.dial(addr), "/metrics");
            if text.starts_with("HTTP/1.1 200") {
                break text;
            }
            assert!(Instant::now() < deadline, "{}: never below the cap again", t.name());
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(metric(&text, "roomcast_limit_hits_total{limit=\"max_connections\"}") >= 1);
    }
}

#[test]
fn oversized_request_heads_get_431() {
    for t in Transport::all() {
        let server = server(
            &t,
            Config {
                max_head_size: 1024,
                ..config()
            },
            RoomConfig::default(),
        );
        let mut s = t.dial(server.addr);
        let big = format!("X-Padding: {}\r\n", "a".repeat(2000));
        s.write_all(upgrade_request("/ws?username=a", &big).as_bytes()).unwrap();
        assert_eq!(read_head(&mut s).0, 431);
        assert_eq!(limit_hits(&t, server.addr, "max_head_size"), 1);
    }
}

#[test]
fn slowloris_handshakes_are_dropped_at_the_timeout_while_others_are_served() {
    for t in Transport::all() {
        let server = server(
            &t,
            Config {
                handshake_timeout: Duration::from_millis(300),
                ..config()
            },
            RoomConfig::default(),
        );
        let addr = server.addr;
        let started = Instant::now();
        let mut slow = t.dial(addr);
        slow.write_all(b"GET /ws?username=a HTTP/1.1\r\nHost: x\r\n").unwrap();
        slow.flush().unwrap();
        // Someone else is served meanwhile.
        let mut ws = user(&t, addr, "b");
        send(&mut ws, json!({"type": "join", "room": "r"}));
        assert_eq!(recv(&mut ws)["type"], "joined");
        assert!(closed_by_peer(&mut slow), "{}", t.name());
        assert!(started.elapsed() >= Duration::from_millis(250));
        assert_eq!(limit_hits(&t, addr, "handshake_timeout"), 1);
    }
}

#[test]
fn oversized_messages_get_1009() {
    for t in Transport::all() {
        let mut config = config();
        config.limits.max_message_size = 1024;
        config.limits.max_frame_size = 1024;
        let server = server(&t, config, RoomConfig::default());
        let mut s = open(&t, server.addr, "/pubsub/a");
        s.write_all(&client_frame(0x1, &[b'x'; 2000])).unwrap();
        assert_eq!(read_close_code(&mut s), 1009);
        let text = get(t.dial(server.addr), "/metrics");
        assert_eq!(
            metric(&text, "roomcast_limit_hits_total{limit=\"max_message_size\"}"),
            1
        );
        assert_eq!(
            metric(&text, "roomcast_protocol_errors_by_code_total{code=\"1009\"}"),
            1
        );
    }
}

/// Thousands of 1-byte fragments are one message of that many bytes: it is
/// delivered, and a flood past the message limit is refused with 1009
/// (tests/fragment_cost.rs shows the cost per fragment is constant).
#[test]
fn tiny_fragment_floods_cost_what_their_size_allows() {
    for t in Transport::all() {
        let mut config = config();
        config.limits.max_message_size = 64 * 1024;
        let server = server(&t, config, RoomConfig::default());
        let mut s = open(&t, server.addr, "/pubsub/flood");
        let payload: Vec<u8> = (0..20_000).map(|i| b'a' + (i % 26) as u8).collect();
        s.write_all(&one_byte_fragments(&payload)).unwrap();
        // The pub/sub relay sends the message back to its sender, whole.
        let (opcode, echoed) = read_frame(&mut s);
        assert_eq!((opcode, echoed.len()), (1, payload.len()), "{}", t.name());
        assert_eq!(echoed, payload);
        let flood: Vec<u8> = vec![b'z'; 70_000];
        let _ = s.write_all(&one_byte_fragments(&flood));
        assert_eq!(read_close_code(&mut s), 1009, "{}", t.name());
        assert_eq!(limit_hits(&t, server.addr, "max_message_size"), 1);
    }
}

#[test]
fn ping_floods_are_closed_with_1008() {
    for t in Transport::all() {
        let rate = RateLimit {
            per_second: 10.0,
            burst: 20.0,
        };
        let server = server(
            &t,
            Config {
                ping_rate: Some(rate),
                ..config()
            },
            RoomConfig::default(),
        );
        let mut s = open(&t, server.addr, "/pubsub/a");
        let mut pings = Vec::new();
        for i in 0..200u32 {
            pings.extend_from_slice(&client_frame(0x9, &i.to_be_bytes()));
        }
        s.write_all(&pings).unwrap();
        let mut pongs = 0;
        let code = loop {
            match read_frame(&mut s) {
                (0xA, _) => pongs += 1,
                (0x8, payload) => break (u16::from_be_bytes([payload[0], payload[1]]), payload[2..].to_vec()),
                other => panic!("unexpected frame {other:?}"),
            }
        };
        assert_eq!(code, (1008, b"ping flood".to_vec()), "{}", t.name());
        assert!((20..=21).contains(&pongs), "the burst is answered: {pongs} pongs");
        assert_eq!(limit_hits(&t, server.addr, "ping_rate"), 1);
    }
}

#[test]
fn message_rate_and_rooms_per_connection_are_limited() {
    for t in Transport::all() {
        let rooms = RoomConfig {
            max_rooms_per_connection: 2,
            rate: RateLimit {
                per_second: 0.001,
                burst: 5.0,
            },
            ..RoomConfig::default()
        };
        let server = server(&t, config(), rooms);
        let addr = server.addr;
        let mut ws = user(&t, addr, "a");
        for room in ["r1", "r2"] {
            send(&mut ws, json!({"type": "join", "room": room}));
            assert_eq!(recv(&mut ws)["type"], "joined");
        }
        send(&mut ws, json!({"type": "join", "room": "r3"}));
        assert_eq!(recv(&mut ws)["code"], "too_many_rooms");
        assert_eq!(limit_hits(&t, addr, "rooms_per_connection"), 1);
        // Three of the burst of five are spent; the next two pass, then
        // `rate_limited` five times (a burst's worth), then 1008.
        for _ in 0..2 {
            send(&mut ws, json!({"type": "presence", "room": "r1"}));
            assert_eq!(recv(&mut ws)["type"], "presence");
        }
        for _ in 0..5 {
            send(&mut ws, json!({"type": "presence", "room": "r1"}));
            assert_eq!(recv(&mut ws)["code"], "rate_limited");
        }
        send(&mut ws, json!({"type": "presence", "room": "r1"}));
        assert_eq!(recv(&mut ws), json!({"closed": 1008}));
        // Another client is unaffected.
        let mut other = user(&t, addr, "b");
        send(&mut other, json!({"type": "join", "room": "r1"}));
        assert_eq!(recv(&mut other)["type"], "joined");
        assert_eq!(limit_hits(&t, addr, "message_rate"), 6);
        assert_eq!(limit_hits(&t, addr, "message_rate_close"), 1);
    }
}

#[test]
fn origins_outside_the_allowlist_get_403() {
    for t in Transport::all() {
        let server = server(
            &t,
            Config {
                allowed_origins: vec!["https://app.example".into()],
                ..config()
            },
            RoomConfig::default(),
        );
        let addr = server.addr;
        let attempt = |origin: &str| {
            let mut s = t.dial(addr);
            let origin = format!("Origin: {origin}\r\n");
            s.write_all(upgrade_request("/ws?username=a", &origin).as_bytes())
                .unwrap();
            read_head(&mut s).0
        };
        assert_eq!(attempt("https://evil.example"), 403);
        assert_eq!(attempt("https://app.example"), 101);
        let text = get(t.dial(addr), "/metrics");
        assert_eq!(
            metric(
                &text,
                "roomcast_handshake_failures_total{reason=\"origin not allowed\"}"
            ),
            1
        );
    }
}
