//! TLS (`wss://`) over real sockets: the event loop's rustls path against
//! tungstenite over an independent rustls client, our client against our
//! server and against a tungstenite server, hostile input on the TLS port,
//! the handshake timeout, and certificate reloads (in process and by
//! SIGHUP to the binary). Certificates are made per test with rcgen.

mod common;

use common::*;
use roomcast::apps::echo::Echo;
use roomcast::client::{Client, ClientConfig, ClientError, HandshakeError, Message as ClientMessage};
use roomcast::net::{Config, TlsConfig};
use roomcast::protocol::{CloseCode as OurCloseCode, Limits};
use roomcast::rooms::{RoomConfig, RoomServer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;

fn big_messages(config: Config) -> Config {
    Config {
        limits: Limits {
            max_frame_size: 4 << 20,
            max_message_size: 4 << 20,
        },
        ..config
    }
}

/// Reads to the end of the close handshake; the server must end TLS with
/// close_notify (tungstenite sees a clean end: `ConnectionClosed`).
fn finish_close(ws: &mut tungstenite::WebSocket<TlsStream>) -> Option<CloseFrame> {
    let mut frame = None;
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => frame = f,
            // Messages still in flight (a room's user_left, say).
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Binary(_)) => {}
            Err(tungstenite::Error::ConnectionClosed) => return frame,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn tungstenite_echo_over_wss_text_binary_large_and_close_code() {
    let ca = TestCa::new("echo CA");
    let server = start(big_messages(tls_test_config(&ca.server_cert())), Echo);
    let mut ws = wss(server.addr, &ca, "/echo");
    assert_eq!(
        ws.get_ref().conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "ALPN http/1.1"
    );
    ws.send(Message::text("héllo over TLS")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo over TLS"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    // 1 MiB each way: many records, and more than rustls' 64 KiB of
    // buffered output, so the write path goes round its backpressure.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    let text: String = (0..1 << 20).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    ws.send(Message::text(text.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4000),
        reason: "bye".into(),
    }))
    .unwrap();
    let frame = finish_close(&mut ws).expect("close frame with a code");
    assert_eq!(frame.code, CloseCode::Library(4000));
}

#[test]
fn room_server_over_wss() {
    let ca = TestCa::new("rooms CA");
    let server = start_rooms(RoomServer::new(
        tls_test_config(&ca.server_cert()),
        RoomConfig::default(),
    ));
    let mut alice = wss(server.addr, &ca, "/ws?username=alice");
    let mut bob = wss(server.addr, &ca, "/ws?username=bob");
    let recv = |ws: &mut tungstenite::WebSocket<TlsStream>| -> Value {
        loop {
            match ws.read().unwrap() {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("expected text, got {other:?}"),
            }
        }
    };
    assert_eq!(recv(&mut alice)["type"], "welcome");
    assert_eq!(recv(&mut bob)["type"], "welcome");
    for ws in [&mut alice, &mut bob] {
        ws.send(Message::text(json!({"type": "join", "room": "lobby"}).to_string()))
            .unwrap();
        assert_eq!(recv(ws)["type"], "joined");
    }
    assert_eq!(recv(&mut alice)["type"], "user_joined");
    let content = "x".repeat(20_000);
    alice
        .send(Message::text(
            json!({"type": "broadcast", "room": "lobby", "content": content}).to_string(),
        ))
        .unwrap();
    for ws in [&mut alice, &mut bob] {
        let msg = recv(ws);
        assert_eq!(
            (msg["type"].as_str(), msg["user"].as_str()),
            (Some("message"), Some("alice"))
        );
        assert_eq!(msg["content"], content);
    }
    bob.close(None).unwrap();
    finish_close(&mut bob);
    alice.close(None).unwrap();
    finish_close(&mut alice);
}

#[test]
fn plain_http_and_garbage_on_the_tls_port_are_dropped() {
    let ca = TestCa::new("garbage CA");
    let server = start(tls_test_config(&ca.server_cert()), Echo);
    let mut plain = raw(server.addr);
    plain.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let mut answer = Vec::new();
    // The server may answer with a TLS alert record, then closes; never HTTP.
    let _ = plain.read_to_end(&mut answer);
    assert!(!answer.starts_with(b"HTTP"), "{answer:?}");
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "an alert record or nothing: {answer:?}"
    );

    let mut garbage = raw(server.addr);
    garbage.write_all(&[0xff; 300]).unwrap();
    assert!(closed_by_peer(&mut garbage));

    // A record header promising an oversized record.
    let mut oversized = raw(server.addr);
    oversized.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff]).unwrap();
    oversized.write_all(&[0u8; 1000]).unwrap();
    assert!(closed_by_peer(&mut oversized));

    // Others are still served.
    let mut ws = wss(server.addr, &ca, "/");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still here"));
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_the_server_goes_on() {
    let ca = TestCa::new("server CA");
    let stranger = TestCa::new("another CA");
    let server = start_rooms(RoomServer::new(
        tls_test_config(&ca.server_cert()),
        RoomConfig::default(),
    ));
    let err = tls_connect(server.addr, &stranger).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let mut ws = wss(server.addr, &ca, "/ws?username=carol");
    assert!(matches!(ws.read().unwrap(), Message::Text(_)), "welcome");
    // The client's alert is counted as a failed handshake (/stats over TLS).
    let stats = retry("the failure counted", || {
        let mut s = tls_connect(server.addr, &ca).unwrap();
        s.write_all(b"GET /stats HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"TLS handshake failed\":1").then_some(body)
    });
    assert!(stats.contains("\"connections_active\":1"), "{stats}");
}

#[test]
fn a_tls_handshake_that_never_completes_is_dropped_at_the_handshake_timeout() {
    let ca = TestCa::new("slow CA");
    let server = start(
        Config {
            handshake_timeout: Duration::from_millis(300),
            ..tls_test_config(&ca.server_cert())
        },
        Echo,
    );
    let started = Instant::now();
    // Silent, and the start of a ClientHello record that never finishes.
    let mut silent = raw(server.addr);
    let mut partial = raw(server.addr);
    partial.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).unwrap();
    assert!(closed_by_peer(&mut silent));
    assert!(closed_by_peer(&mut partial));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // A client that finishes the TLS handshake but sends no HTTP is
    // bounded by the same timeout.
    let mut idle = tls_connect(server.addr, &ca).unwrap();
    let mut buf = [0u8; 64];
    let end = idle.read(&mut buf);
    assert!(matches!(end, Ok(0)) || end.is_err(), "{end:?}");
}

fn client_config(ca: &TestCa) -> ClientConfig {
    ClientConfig {
        ca_certs: vec![ca.cert_der.clone()],
        read_timeout: Some(Duration::from_secs(10)),
        ..ClientConfig::default()
    }
}

#[test]
fn roomcast_client_over_wss_to_our_server() {
    let ca = TestCa::new("client CA");
    let server = start(big_messages(tls_test_config(&ca.server_cert())), Echo);
    let port = server.addr.port();
    for host in ["localhost", "127.0.0.1"] {
        let mut client = Client::connect(&format!("wss://{host}:{port}/chat"), &client_config(&ca)).unwrap();
        assert!(client.is_compressed());
        client.send_text("hello").unwrap();
        assert_eq!(client.read_message().unwrap(), ClientMessage::Text("hello".into()));
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
        client.send_binary(&big).unwrap();
        assert_eq!(client.read_message().unwrap(), ClientMessage::Binary(big));
        let frame = client.close(OurCloseCode(4001), "done").unwrap().unwrap();
        assert_eq!(frame.code, OurCloseCode(4001));
    }
    // Without the CA (the system's roots do not know it): a TLS handshake error.
    let err = Client::connect(&format!("wss://localhost:{port}/"), &ClientConfig::default()).unwrap_err();
    assert!(matches!(err, ClientError::Handshake(HandshakeError::Tls(_))), "{err}");
    // ws:// to a TLS port is not a WebSocket either.
    assert!(Client::connect(&format!("ws://localhost:{port}/"), &client_config(&ca)).is_err());
    // A certificate for another name: refused though its CA is trusted.
    let elsewhere = start(tls_test_config(&ca.cert_for(&["other.example"])), Echo);
    let url = format!("wss://localhost:{}/", elsewhere.addr.port());
    let err = Client::connect(&url, &client_config(&ca)).unwrap_err();
    assert!(
        matches!(&err, ClientError::Handshake(HandshakeError::Tls(e)) if e.contains("certificate")),
        "{err}"
    );
}

/// An independent server: tungstenite over rustls' own stream, echoing
/// until the close.
#[test]
fn roomcast_client_over_wss_to_a_tungstenite_server() {
    let ca = TestCa::new("tungstenite CA");
    let config = ca.server_cert().server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let tls = rustls::ServerConnection::new(config).unwrap();
        let mut ws = tungstenite::accept(rustls::StreamOwned::new(tls, tcp)).unwrap();
        let mut seen = Vec::new();
        loop {
            match ws.read() {
                Ok(msg @ (Message::Text(_) | Message::Binary(_))) => {
                    seen.push(msg.clone());
                    ws.send(msg).unwrap();
                }
                Ok(Message::Close(frame)) => {
                    // tungstenite answers the close; flush it, then end TLS and TCP.
                    let _ = ws.flush();
                    let stream = ws.get_mut();
                    stream.conn.send_close_notify();
                    let _ = stream.flush();
                    let _ = stream.sock.shutdown(std::net::Shutdown::Write);
                    return (seen, frame.map(|f| u16::from(f.code)));
                }
                Ok(_) => {}
                Err(e) => panic!("server: {e}"),
            }
        }
    });
    let mut client = Client::connect(&format!("wss://localhost:{port}/"), &client_config(&ca)).unwrap();
    client.send_text("to tungstenite").unwrap();
    assert_eq!(
        client.read_message().unwrap(),
        ClientMessage::Text("to tungstenite".into())
    );
    client.send_binary(&[9u8; 70_000]).unwrap();
    assert_eq!(client.read_message().unwrap(), ClientMessage::Binary(vec![9u8; 70_000]));
    let frame = client.close(OurCloseCode::NORMAL, "").unwrap().unwrap();
    assert_eq!(frame.code, OurCloseCode::NORMAL);
    let (seen, code) = server.join().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(code, Some(1000));
}

/// A scratch directory for certificate files, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("roomcast-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write_cert(dir: &TempDir, cert: &ServerCert) {
    std::fs::write(dir.path("cert.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path("key.pem"), &cert.key_pem).unwrap();
}

/// An open connection, checked by one echo.
fn echoes(ws: &mut tungstenite::WebSocket<TlsStream>, text: &str) {
    ws.send(Message::text(text)).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

#[test]
fn reload_gives_new_connections_the_new_certificate_and_keeps_old_ones() {
    let dir = TempDir::new("reload");
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    write_cert(&dir, &old_ca.server_cert());
    let tls = TlsConfig::load(dir.path("cert.pem"), dir.path("key.pem")).unwrap();
    let server = start(
        Config {
            tls: Some(tls.clone()),
            ..test_config()
        },
        Echo,
    );
    let mut old = wss(server.addr, &old_ca, "/");
    echoes(&mut old, "before");

    write_cert(&dir, &new_ca.server_cert());
    tls.reload().unwrap();
    let mut new = wss(server.addr, &new_ca, "/");
    echoes(&mut new, "new certificate");
    assert!(
        tls_connect(server.addr, &old_ca).is_err(),
        "the old certificate is gone"
    );
    echoes(&mut old, "the old connection goes on");

    // A broken key file: the reload fails and the current config stays.
    std::fs::write(dir.path("key.pem"), "not a key").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(err.to_string().contains("key.pem"), "{err}");
    echoes(&mut wss(server.addr, &new_ca, "/"), "still the new certificate");

    // Swapping a config in directly (no files) works the same way.
    let third = TestCa::new("third CA");
    tls.set(third.server_cert().server_config());
    echoes(&mut wss(server.addr, &third, "/"), "set");
    echoes(&mut old, "old still");
    echoes(&mut new, "new still");
}

fn retry<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn_echo(args: &[&Path], port: u16) -> ServerProcess {
    let child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["echo", "--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(args[0])
        .arg("--tls-key")
        .arg(args[1])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ServerProcess(child)
}

#[test]
fn sighup_reloads_the_certificate_files_in_the_binary() {
    let dir = TempDir::new("sighup");
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    write_cert(&dir, &old_ca.server_cert());
    let port = free_port();
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let server = spawn_echo(&[&cert, &key], port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    retry("server up", || std::net::TcpStream::connect(addr).ok());
    let mut old = wss(addr, &old_ca, "/");
    echoes(&mut old, "before");

    write_cert(&dir, &new_ca.server_cert());
    let hup = |pid: u32| {
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(status.success());
    };
    hup(server.0.id());
    let mut new = retry("new certificate served", || tls_connect(addr, &new_ca).ok());
    // The connection is a fresh one: finish the WebSocket handshake on it.
    new.write_all(upgrade_request("/", "").as_bytes()).unwrap();
    let (status, _) = read_head_tls(&mut new);
    assert_eq!(status, 101);
    echoes(&mut old, "old connection kept");

    // A failed reload keeps serving the last good certificate.
    std::fs::write(&cert, "garbage").unwrap();
    hup(server.0.id());
    std::thread::sleep(Duration::from_millis(200));
    echoes(&mut wss(addr, &new_ca, "/"), "after a failed reload");
    let mut child = server;
    child.0.kill().unwrap();
    let mut stderr = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("TLS reload failed"), "{stderr}");
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

/// Reads an HTTP response head from a TLS stream: (status, head).
fn read_head_tls(s: &mut TlsStream) -> (u16, String) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection ended in the head");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    (text[9..12].parse().unwrap(), text)
}
