//! Authentication at the handshake and authorization per room, end to end:
//! every accept and reject path of JWTs (HS256, RS256, ES256; header, query
//! and cookie), API keys, room grants, `refresh` and expiry. Tokens are
//! signed here with `jsonwebtoken` and the test keys in tests/fixtures.

mod common;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use roomcast::auth::{ApiKeys, Authenticator, JwtConfig, JwtVerifier};
use roomcast::rooms::{RoomConfig, RoomServer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const SECRET: &[u8] = b"test-secret-for-hs256-at-least-32-bytes!";
const RS256_PRIVATE: &[u8] = include_bytes!("fixtures/jwt-rs256-private.pem");
const RS256_PUBLIC: &[u8] = include_bytes!("fixtures/jwt-rs256-public.pem");
const ES256_PRIVATE: &[u8] = include_bytes!("fixtures/jwt-es256-private.pem");
const ES256_PUBLIC: &[u8] = include_bytes!("fixtures/jwt-es256-public.pem");
/// A service's API key; the server holds only its SHA-256.
const API_KEY: &str = "service-key-1";

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn authenticator(leeway: u64) -> Authenticator {
    let jwt = JwtVerifier::new(&JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        rs256_public_key_pem: Some(RS256_PUBLIC.to_vec()),
        es256_public_key_pem: Some(ES256_PUBLIC.to_vec()),
        issuer: Some("https://auth.example".into()),
        audience: Some("roomcast".into()),
        leeway,
    })
    .unwrap()
    .unwrap();
    let keys = ApiKeys::parse(&format!("{} ingest rooms=metrics:*\n", sha256_hex(API_KEY.as_bytes()))).unwrap();
    Authenticator::new(Some(jwt), Some(keys), "session")
}

fn server_on(t: &Transport, leeway: u64) -> Running {
    start_rooms(RoomServer::new(t.config(test_config()), RoomConfig::default()).auth(authenticator(leeway)))
}

fn server_with_leeway(leeway: u64) -> Running {
    server_on(&Transport::Plain, leeway)
}

fn server() -> Running {
    server_with_leeway(5)
}

/// Standard claims for `sub`, valid for an hour, with `extra` merged in.
fn claims(sub: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": sub,
        "iss": "https://auth.example",
        "aud": "roomcast",
        "exp": unix_now() + 3600,
        "rooms": ["lobby", "team:*"],
        "rooms_read": ["news"],
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn sign(alg: Algorithm, claims: &Value) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(RS256_PRIVATE).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(ES256_PRIVATE).unwrap(),
        other => panic!("no test key for {other:?}"),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

fn hs256(sub: &str, extra: Value) -> String {
    sign(Algorithm::HS256, &claims(sub, extra))
}

/// Sends an upgrade to `path` with `headers` and returns the status and body.
fn attempt(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    attempt_over(&Transport::Plain, addr, path, headers)
}

fn attempt_over(t: &Transport, addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = t.dial(addr);
    s.write_all(upgrade_request(path, headers).as_bytes()).unwrap();
    let (status, head) = read_head(&mut s);
    let mut body = String::new();
    if status != 101 {
        let _ = s.read_to_string(&mut body);
    }
    (status, head + &body)
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

type Ws = WebSocket<Box<dyn Stream>>;

/// A `/ws` connection with `headers`; returns it after its `welcome`.
fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
    connect_over(&Transport::Plain, addr, path, headers)
}

fn connect_over(t: &Transport, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Ws, Value) {
    let url = format!("{}://localhost:{}{path}", t.scheme(), addr.port());
    let mut request = url.into_client_request().unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        request.headers_mut().insert(name, v.parse().unwrap());
    }
    let (mut ws, _) = tungstenite::client(request, t.dial(addr)).unwrap();
    let welcome = recv(&mut ws);
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

fn connect_bearer(addr: SocketAddr, token: &str) -> Ws {
    connect(addr, "/ws", &[("authorization", &format!("Bearer {token}"))]).0
}

fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).unwrap();
}

fn recv(ws: &mut Ws) -> Value {
    recv_json(ws)
}

/// Sends `command` and returns the first reply that is not a room event.
fn request(ws: &mut Ws, command: Value) -> Value {
    send(ws, command);
    loop {
        let reply = recv(ws);
        if !matches!(reply["type"].as_str(), Some("user_joined" | "user_left")) {
            return reply;
        }
    }
}

fn close_code(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return (frame.code.into(), frame.reason.to_string()),
            Ok(Message::Close(None)) => panic!("close without a code"),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    }
}

fn metrics(addr: SocketAddr) -> String {
    let mut s = raw(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn valid_tokens_from_header_query_and_cookie_with_every_algorithm() {
    let server = server();
    let addr = server.addr;
    // The identity is the token's `sub`; a `username` in the URL is ignored.
    let (_, welcome) = connect(
        addr,
        "/ws?username=mallory",
        &[("authorization", &format!("Bearer {}", hs256("alice", json!({}))))],
    );
    assert_eq!(welcome["user"], "alice");
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let token = sign(alg, &claims("bob", json!({})));
        let (_, welcome) = connect(addr, "/ws", &[("authorization", &format!("bearer {token}"))]);
        assert_eq!(welcome["user"], "bob", "{alg:?}");
    }
    let (_, welcome) = connect(addr, &format!("/ws?token={}", hs256("carol", json!({}))), &[]);
    assert_eq!(welcome["user"], "carol");
    let cookie = format!("theme=dark; session={}", hs256("dave", json!({})));
    let (_, welcome) = connect(addr, "/ws", &[("cookie", &cookie)]);
    assert_eq!(welcome["user"], "dave");
    // A token that expired within the leeway is still accepted.
    let (_, welcome) = connect(
        addr,
        "/ws",
        &[(
            "authorization",
            &format!("Bearer {}", hs256("erin", json!({"exp": unix_now() - 2}))),
        )],
    );
    assert_eq!(welcome["user"], "erin");
}

#[test]
fn bad_credentials_get_401_with_the_reason_and_are_counted() {
    for t in Transport::all() {
        bad_credentials(&t);
    }
}

fn bad_credentials(t: &Transport) {
    let server = server_on(t, 5);
    let addr = server.addr;
    let now = unix_now();
    // Change the signature's first character: its last one also carries
    // padding bits that a decoder may ignore.
    let token = hs256("alice", json!({}));
    let at = token.rfind('.').unwrap() + 1;
    let swap = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swap}{}", &token[..at], &token[at + 1..]);
    // alg confusion: the RSA public key used as an HS256 secret.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice", json!({})),
        &EncodingKey::from_secret(RS256_PUBLIC),
    )
    .unwrap();
    // alg "none": header {"alg":"none"}, no signature.
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!("{}.{}.", b64(json!({"alg": "none"})), b64(claims("alice", json!({}))));
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "missing credentials"),
        (bearer(&hs256("alice", json!({"exp": now - 60}))), "token expired"),
        (bearer(&forged), "invalid token signature"),
        (
            bearer(&hs256("alice", json!({"aud": "someone-else"}))),
            "wrong token audience",
        ),
        (
            bearer(&hs256("alice", json!({"iss": "https://evil.example"}))),
            "wrong token issuer",
        ),
        (
            bearer(&hs256("alice", json!({"nbf": now + 600}))),
            "token not yet valid",
        ),
        (bearer(&confused), "invalid token signature"),
        (bearer(&unsigned), "malformed token"),
        (bearer("not-a-jwt"), "malformed token"),
        // A valid signature with an algorithm no key is configured for.
        (
            bearer(
                &encode(
                    &Header::new(Algorithm::HS384),
                    &claims("alice", json!({})),
                    &EncodingKey::from_secret(SECRET),
                )
                .unwrap(),
            ),
            "token algorithm not accepted",
        ),
        (
            bearer(&hs256("bad/name", json!({}))),
            "token subject is not a valid username",
        ),
        (
            bearer(&sign(
                Algorithm::HS256,
                &json!({"sub": "alice", "aud": "roomcast", "iss": "https://auth.example"}),
            )),
            "token lacks a required claim",
        ),
        ("X-API-Key: wrong-key\r\n".into(), "unknown API key"),
    ];
    for (headers, reason) in &cases {
        let (status, response) = attempt_over(t, addr, "/ws?username=alice", headers);
        assert_eq!(status, 401, "{} {reason}: {response}", t.name());
        assert!(response.contains("WWW-Authenticate: Bearer"), "{response}");
        assert!(response.ends_with(reason), "expected {reason:?}: {response}");
    }
    let text = get(t.dial(addr), "/metrics");
    for reason in [
        "missing credentials",
        "token expired",
        "wrong token audience",
        "unknown API key",
    ] {
        assert!(
            text.contains(&format!("roomcast_handshake_failures_total{{reason=\"{reason}\"}}")),
            "{reason} not counted:\n{text}"
        );
    }
    assert!(text.contains("roomcast_handshake_failures_total{reason=\"invalid token signature\"} 2"));
}

/// Each credential kind is refused by a server configured without it.
#[test]
fn credential_kinds_that_are_not_configured_get_401() {
    let keys = ApiKeys::parse(&format!("{} ingest rooms=*\n", sha256_hex(API_KEY.as_bytes()))).unwrap();
    let keys_only = start_rooms(
        RoomServer::new(test_config(), RoomConfig::default()).auth(Authenticator::new(None, Some(keys), "session")),
    );
    let (status, body) = attempt(keys_only.addr, "/ws", &bearer(&hs256("alice", json!({}))));
    assert_eq!(status, 401, "{body}");
    assert!(body.ends_with("tokens are not accepted"), "{body}");
    assert_eq!(
        attempt(keys_only.addr, "/ws", &format!("X-API-Key: {API_KEY}\r\n")).0,
        101
    );

    let jwt = JwtVerifier::new(&JwtConfig {
        hs256_secret: Some(SECRET.to_vec()),
        ..JwtConfig::default()
    })
    .unwrap();
    let jwt_only = start_rooms(
        RoomServer::new(test_config(), RoomConfig::default()).auth(Authenticator::new(jwt, None, "session")),
    );
    let (status, body) = attempt(jwt_only.addr, "/ws", &format!("X-API-Key: {API_KEY}\r\n"));
    assert_eq!(status, 401, "{body}");
    assert!(body.ends_with("API keys are not accepted"), "{body}");
}

#[test]
fn api_keys_identify_service_clients() {
    let server = server();
    let (mut ws, welcome) = connect(server.addr, "/ws", &[("x-api-key", API_KEY)]);
    assert_eq!(welcome["user"], "ingest");
    assert_eq!(
        request(&mut ws, json!({"type": "join", "room": "metrics:cpu"}))["type"],
        "joined"
    );
    let reply = request(&mut ws, json!({"type": "join", "room": "lobby"}));
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    // API keys do not expire, so there is nothing to refresh with.
    let reply = request(&mut ws, json!({"type": "refresh", "token": API_KEY}));
    assert_eq!(reply["code"], "not_authorized", "{reply}");
}

#[test]
fn room_grants_are_enforced_on_every_command() {
    for t in Transport::all() {
        room_grants(&t);
    }
}

fn room_grants(t: &Transport) {
    let server = server_on(t, 5);
    let addr = server.addr;
    let bearer_header = format!("Bearer {}", hs256("alice", json!({})));
    let (mut alice, _) = connect_over(t, addr, "/ws", &[("authorization", &bearer_header)]);
    for room in ["lobby", "team:eng", "news"] {
        assert_eq!(
            request(&mut alice, json!({"type": "join", "room": room}))["type"],
            "joined",
            "{room}"
        );
    }
    for room in ["lobby2", "team", "admin"] {
        let reply = request(&mut alice, json!({"type": "join", "room": room, "id": 1}));
        assert_eq!(reply["code"], "not_authorized", "{room}: {reply}");
        assert_eq!(reply["id"], 1);
    }
    // Read-only: joined, but may neither publish nor type.
    let reply = request(
        &mut alice,
        json!({"type": "broadcast", "room": "news", "content": "hi"}),
    );
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    let reply = request(&mut alice, json!({"type": "typing", "room": "news", "typing": true}));
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    let reply = request(
        &mut alice,
        json!({"type": "broadcast", "room": "team:eng", "content": "hi", "id": 2}),
    );
    assert_eq!(reply["type"], "message", "{reply}");
    // A chat-tutorial or pub/sub connection names its room in the URL: refused before the upgrade.
    let token = hs256("alice", json!({}));
    let (status, body) = attempt_over(t, addr, &format!("/ws/admin?token={token}"), "");
    assert_eq!(status, 403, "{body}");
    assert!(body.ends_with("not authorized for this room"));
    assert_eq!(
        attempt_over(t, addr, &format!("/pubsub/admin?token={token}"), "").0,
        403
    );
    assert_eq!(attempt_over(t, addr, &format!("/ws/lobby?token={token}"), "").0, 101);
    // A read-only pub/sub subscriber that publishes is closed (no error envelope there).
    let url = format!("{}://localhost:{}/pubsub/news?token={token}", t.scheme(), addr.port());
    let (mut sub, _) = tungstenite::client(url, t.dial(addr)).unwrap();
    sub.send(Message::text("hello")).unwrap();
    assert_eq!(
        close_code(&mut sub),
        (1008, "not authorized to publish to this room".into())
    );
    assert_eq!(
        metric(&get(t.dial(addr), "/metrics"), "roomcast_not_authorized_total"),
        6
    );
}

#[test]
fn expired_tokens_close_the_connection_unless_refreshed() {
    // No leeway: a token valid for one more second expires during the test.
    let server = server_with_leeway(0);
    let addr = server.addr;
    let soon = json!({"exp": unix_now() + 1});
    let mut quiet = connect_bearer(addr, &hs256("alice", soon.clone()));
    let mut fresh = connect_bearer(addr, &hs256("bob", soon));
    assert_eq!(
        request(&mut fresh, json!({"type": "join", "room": "news"}))["type"],
        "joined"
    );
    assert_eq!(
        request(&mut fresh, json!({"type": "join", "room": "lobby"}))["type"],
        "joined"
    );

    // A token for someone else, or a bad one, is refused and changes nothing.
    let reply = request(
        &mut fresh,
        json!({"type": "refresh", "token": hs256("alice", json!({})), "id": 1}),
    );
    assert_eq!(
        (reply["code"].as_str(), reply["message"].as_str()),
        (Some("not_authorized"), Some("the token is for another user"))
    );
    let reply = request(
        &mut fresh,
        json!({"type": "refresh", "token": hs256("bob", json!({"exp": 1}))}),
    );
    assert_eq!(reply["message"], "token expired", "{reply}");

    // A fresh token with fewer rooms: `news` is left, the new expiry is reported.
    let exp = unix_now() + 3600;
    let token = hs256("bob", json!({"exp": exp, "rooms": ["lobby"], "rooms_read": []}));
    send(&mut fresh, json!({"type": "refresh", "token": token, "id": 2}));
    assert_eq!(recv(&mut fresh), json!({"type": "left", "room": "news"}));
    assert_eq!(recv(&mut fresh), json!({"type": "refreshed", "id": 2, "exp": exp}));

    assert_eq!(close_code(&mut quiet), (1008, "token expired".into()));
    // Past the first expiry the refreshed connection still works.
    let reply = request(&mut fresh, json!({"type": "presence", "room": "lobby"}));
    assert_eq!(reply["type"], "presence", "{reply}");
    let text = metrics(addr);
    assert!(
        text.contains("roomcast_limit_hits_total{limit=\"token_expiry\"} 1"),
        "{text}"
    );
    assert!(text.contains("roomcast_token_refreshes_total 1"), "{text}");
}

#[test]
fn with_auth_off_identity_comes_from_the_url() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    let (mut ws, welcome) = connect(server.addr, "/ws?username=zoe", &[]);
    assert_eq!(welcome["user"], "zoe");
    let reply = request(&mut ws, json!({"type": "refresh", "token": "x"}));
    assert_eq!(reply["code"], "not_authorized", "{reply}");
    assert_eq!(
        request(&mut ws, json!({"type": "join", "room": "admin"}))["type"],
        "joined"
    );
}

/// The real binary, with debug logging: failures are logged with their
/// reason and peer, and neither the secret nor any token reaches the log.
#[test]
fn secrets_and_tokens_never_reach_the_log() {
    let dir = std::env::temp_dir().join(format!("roomcast-auth-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, [SECRET, b"\n"].concat()).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args([
            "serve",
            "--store",
            "memory",
            "--listen",
            &addr.to_string(),
            "--jwt-secret-file",
        ])
        .arg(&secret_file)
        .env("RUST_LOG", "trace")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let good = sign(
        Algorithm::HS256,
        &json!({"sub": "alice", "exp": unix_now() + 60, "rooms": ["*"]}),
    );
    let expired = sign(Algorithm::HS256, &json!({"sub": "alice", "exp": unix_now() - 600}));
    assert_eq!(attempt(addr, "/ws", &bearer(&expired)).0, 401);
    assert_eq!(attempt(addr, &format!("/ws?token={expired}"), "").0, 401);
    let mut ws = connect_bearer(addr, &good);
    send(&mut ws, json!({"type": "refresh", "token": expired}));
    assert_eq!(recv(&mut ws)["code"], "not_authorized");
    drop(ws);
    // SIGTERM: a graceful shutdown, then the log is complete.
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let mut log = String::new();
    child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(log.contains("auth on"), "{log}");
    assert!(log.contains("authentication failed from 127.0.0.1:"), "{log}");
    assert!(log.contains("token expired"), "{log}");
    let secret = std::str::from_utf8(SECRET).unwrap();
    for (what, needle) in [("secret", secret), ("token", &good[..]), ("token", &expired[..])] {
        assert!(!log.contains(needle), "the {what} was logged:\n{log}");
        // Nor its signature alone.
        let signature = needle.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "part of the {what} was logged:\n{log}");
    }
}
