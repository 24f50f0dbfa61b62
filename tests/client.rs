//! The client role over real sockets: against roomcast's own echo server,
//! against tungstenite as an independent server, against raw TCP for what
//! no well-behaved server sends, and the `roomcast client` CLI in pipe mode.

mod common;

use common::{start, test_config};
use roomcast::apps::echo::Echo;
use roomcast::client::{Client, ClientConfig, ClientError, HandshakeError, Message};
use roomcast::net::Config;
use roomcast::protocol::{CloseCode, CloseFrame, Error as ProtocolError, Limits};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::CloseFrame as TCloseFrame;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tungstenite::{Message as TMessage, WebSocket};

/// Tests must fail, not hang, when something goes wrong.
fn config() -> ClientConfig {
    ClientConfig {
        read_timeout: Some(Duration::from_secs(10)),
        close_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    }
}

/// roomcast's echo server, taking messages up to 1 MiB.
fn echo_server() -> common::Running {
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    };
    start(
        Config {
            limits,
            ..test_config()
        },
        Echo,
    )
}

/// A one-connection tungstenite server running `handle` on its own thread.
fn tungstenite_server<F, T>(handle: F) -> (String, JoinHandle<T>)
where
    F: FnOnce(WebSocket<TcpStream>) -> T + Send + 'static,
    T: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        handle(tungstenite::accept(stream).unwrap())
    });
    (url, thread)
}

/// A one-connection raw TCP server: `handle` gets the socket after the
/// request head was read.
fn raw_server<F>(handle: F) -> (String, JoinHandle<()>)
where
    F: FnOnce(TcpStream, String) + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        handle(stream, String::from_utf8(head).unwrap());
    });
    (url, thread)
}

/// The 101 answer to a raw request head.
fn switching_protocols(request: &str) -> String {
    let key = request
        .lines()
        .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
        .expect("request has a key");
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        roomcast::protocol::handshake::accept_key(key.as_bytes())
    )
}

/// Everything the peer sends until it closes TCP (or the read timeout).
fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    all
}

/// Reads tungstenite messages until the client's close frame; returns it.
fn until_close(ws: &mut WebSocket<TcpStream>) -> Option<TCloseFrame> {
    loop {
        match ws.read() {
            Ok(TMessage::Close(frame)) => {
                // Drive the reply out, then the connection ends.
                while ws.read().is_ok() {}
                return frame;
            }
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

// ---------------------------------------------------------------- library

#[test]
fn round_trip_with_roomcast_echo_and_deflate() {
    let server = echo_server();
    let url = format!("ws://{}/any", server.addr);
    let mut client = Client::connect(&url, &config()).unwrap();
    assert!(client.is_compressed(), "roomcast's server accepts the default offer");
    client.send_text("héllo").unwrap();
    assert_eq!(client.read_message().unwrap(), Message::Text("héllo".into()));
    client.send_binary(&[0, 1, 2, 255]).unwrap();
    assert_eq!(client.read_message().unwrap(), Message::Binary(vec![0, 1, 2, 255]));
    // Large and compressible: goes out compressed, comes back compressed.
    let big = "roomcast ".repeat(20_000);
    client.send_text(&big).unwrap();
    assert!(client.read_message().unwrap() == Message::Text(big));
    let close = client.close(CloseCode::NORMAL, "done").unwrap();
    assert_eq!(close.map(|f| f.code), Some(CloseCode::NORMAL));
    assert!(matches!(client.send_text("late"), Err(ClientError::Closed)));
}

#[test]
fn round_trip_without_deflate() {
    let server = echo_server();
    let mut config = config();
    config.deflate.enabled = false;
    let mut client = Client::connect(&format!("ws://{}/", server.addr), &config).unwrap();
    assert!(!client.is_compressed());
    for size in [0, 125, 126, 65_535, 65_536, 300_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        client.send_binary(&payload).unwrap();
        assert!(client.read_message().unwrap() == Message::Binary(payload), "{size}");
    }
    client.close(CloseCode::NORMAL, "").unwrap();
}

#[test]
fn tungstenite_server_gets_masked_frames_and_answers() {
    // tungstenite refuses unmasked client frames, so this also checks masking.
    let (url, server) = tungstenite_server(|mut ws| {
        for _ in 0..2 {
            let msg = ws.read().unwrap();
            ws.send(msg).unwrap();
        }
        until_close(&mut ws);
    });
    let mut client = Client::connect(&url, &config()).unwrap();
    assert!(
        !client.is_compressed(),
        "tungstenite (no deflate feature) declines the offer"
    );
    client.send_text("ping me").unwrap();
    assert_eq!(client.read_message().unwrap(), Message::Text("ping me".into()));
    client.send_binary(b"\x00\xff").unwrap();
    assert_eq!(client.read_message().unwrap(), Message::Binary(b"\x00\xff".to_vec()));
    client.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn pings_are_answered_while_reading() {
    let (url, server) = tungstenite_server(|mut ws| {
        ws.send(TMessage::Ping(b"p1".to_vec().into())).unwrap();
        ws.send(TMessage::text("after the ping")).unwrap();
        assert_eq!(ws.read().unwrap(), TMessage::Pong(b"p1".to_vec().into()));
        until_close(&mut ws);
    });
    let mut client = Client::connect(&url, &config()).unwrap();
    // The ping is not handed out; its pong went back on the way.
    assert_eq!(client.read_message().unwrap(), Message::Text("after the ping".into()));
    client.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn client_close_handshake() {
    let (tx, rx) = mpsc::channel();
    let (url, server) = tungstenite_server(move |mut ws| {
        tx.send(until_close(&mut ws)).unwrap();
    });
    let mut client = Client::connect(&url, &config()).unwrap();
    let echoed = client.close(CloseCode(4001), "bye").unwrap();
    assert_eq!(echoed.map(|f| f.code), Some(CloseCode(4001)));
    let seen = rx.recv().unwrap().unwrap();
    assert_eq!((u16::from(seen.code), seen.reason.as_str()), (4001, "bye"));
    assert!(matches!(client.read_message(), Err(ClientError::Closed)));
    server.join().unwrap();
}

#[test]
fn server_close_is_answered_and_reported() {
    let (tx, rx) = mpsc::channel();
    let (url, server) = tungstenite_server(move |mut ws| {
        ws.close(Some(TCloseFrame {
            code: TCloseCode::from(4000),
            reason: "kicked".into(),
        }))
        .unwrap();
        // The client's reply completes the handshake.
        let reply = loop {
            match ws.read() {
                Ok(TMessage::Close(frame)) => break frame,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        };
        tx.send(reply.map(|f| u16::from(f.code))).unwrap();
        while ws.read().is_ok() {}
    });
    let mut client = Client::connect(&url, &config()).unwrap();
    let frame = CloseFrame {
        code: CloseCode(4000),
        reason: "kicked".into(),
    };
    assert_eq!(client.read_message().unwrap(), Message::Close(Some(frame)));
    assert_eq!(rx.recv().unwrap(), Some(4000), "the reply echoes the code");
    assert!(matches!(client.read_message(), Err(ClientError::Closed)));
    server.join().unwrap();
}

#[test]
fn rejected_handshake_reports_the_status() {
    let server = start(
        Config {
            allowed_origins: vec!["https://ok.example".into()],
            ..test_config()
        },
        Echo,
    );
    let mut config = config();
    config.headers.push(("Origin".into(), "https://evil.example".into()));
    let err = Client::connect(&format!("ws://{}/", server.addr), &config).unwrap_err();
    assert_eq!(err.http_status(), Some(403), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("HTTP 403") && text.contains("origin not allowed"),
        "{text}"
    );

    // A plain HTTP server: the status and the start of its body.
    let (url, raw) = raw_server(|mut s, _| {
        s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 12\r\nConnection: close\r\n\r\nbad token!\r\n")
            .unwrap();
    });
    let err = Client::connect(&url, &ClientConfig::default()).unwrap_err();
    assert_eq!(err.http_status(), Some(401));
    assert!(err.to_string().contains("bad token!"), "{err}");
    raw.join().unwrap();
}

#[test]
fn bad_accept_key_fails_the_handshake() {
    let (url, raw) = raw_server(|mut s, _| {
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
        )
        .unwrap();
        read_to_eof(&mut s);
    });
    let err = Client::connect(&url, &config()).unwrap_err();
    assert!(
        matches!(err, ClientError::Handshake(HandshakeError::Invalid(_))),
        "{err}"
    );
    raw.join().unwrap();
}

#[test]
fn frames_in_the_same_packet_as_the_101_are_kept() {
    let (url, raw) = raw_server(|mut s, request| {
        let mut out = switching_protocols(&request).into_bytes();
        out.extend_from_slice(b"\x81\x05first\x81\x06second");
        s.write_all(&out).unwrap();
        read_to_eof(&mut s);
    });
    let mut config = config();
    config.deflate.enabled = false;
    let mut client = Client::connect(&url, &config).unwrap();
    assert_eq!(client.read_message().unwrap(), Message::Text("first".into()));
    assert_eq!(client.read_message().unwrap(), Message::Text("second".into()));
    drop(client);
    raw.join().unwrap();
}

#[test]
fn protocol_error_from_the_server_is_closed_with_its_code() {
    let (url, raw) = raw_server(|mut s, request| {
        s.write_all(switching_protocols(&request).as_bytes()).unwrap();
        // A masked frame: servers must not mask (section 5.1).
        s.write_all(b"\x81\x82\x01\x02\x03\x04ij").unwrap();
        let rest = read_to_eof(&mut s);
        // The client's close frame: masked, opcode 8, code 1002.
        assert_eq!(rest[0], 0x88);
        let key = [rest[2], rest[3], rest[4], rest[5]];
        let code = [rest[6] ^ key[0], rest[7] ^ key[1]];
        assert_eq!(u16::from_be_bytes(code), 1002);
    });
    let mut config = config();
    config.deflate.enabled = false;
    config.close_timeout = Duration::from_millis(200);
    let mut client = Client::connect(&url, &config).unwrap();
    match client.read_message() {
        Err(ClientError::Protocol(ProtocolError::BadMasking)) => {}
        other => panic!("{other:?}"),
    }
    raw.join().unwrap();
}

#[test]
fn connection_dropped_without_close_is_reported() {
    let (url, raw) = raw_server(|mut s, request| {
        s.write_all(switching_protocols(&request).as_bytes()).unwrap();
    });
    let mut config = config();
    config.deflate.enabled = false;
    let mut client = Client::connect(&url, &config).unwrap();
    raw.join().unwrap();
    assert!(matches!(client.read_message(), Err(ClientError::ConnectionLost)));
}

#[test]
#[allow(clippy::result_large_err)] // tungstenite's callback signature
fn headers_and_subprotocol_are_sent_and_checked() {
    let (url, server) = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/room?token=abc", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut ws = tungstenite::accept_hdr(stream, |req: &Request, mut resp: Response| {
                assert_eq!(req.uri().to_string(), "/room?token=abc");
                assert_eq!(req.headers()["authorization"], "Bearer s3cret");
                assert_eq!(req.headers()["sec-websocket-protocol"], "v2.chat, chat");
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
                Ok(resp)
            })
            .unwrap();
            until_close(&mut ws);
        });
        (url, thread)
    };
    let config = ClientConfig {
        headers: vec![("Authorization".into(), "Bearer s3cret".into())],
        protocols: vec!["v2.chat".into(), "chat".into()],
        ..config()
    };
    let mut client = Client::connect(&url, &config).unwrap();
    assert_eq!(client.protocol(), Some("chat"));
    client.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn read_with_timeout_returns_none_then_the_message() {
    let (tx, rx) = mpsc::channel::<()>();
    let (url, server) = tungstenite_server(move |mut ws| {
        rx.recv().unwrap();
        ws.send(TMessage::text("late")).unwrap();
        until_close(&mut ws);
    });
    let mut client = Client::connect(&url, &config()).unwrap();
    let started = Instant::now();
    assert_eq!(client.read_message_timeout(Duration::from_millis(50)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(50));
    tx.send(()).unwrap();
    assert_eq!(
        client.read_message_timeout(Duration::from_secs(5)).unwrap(),
        Some(Message::Text("late".into()))
    );
    client.close(CloseCode::NORMAL, "").unwrap();
    server.join().unwrap();
}

#[test]
fn url_errors_come_before_any_connection() {
    let err = Client::connect("https://example.com/", &config()).unwrap_err();
    assert!(err.to_string().contains("ws:// or wss://"), "{err}");
    let err = Client::connect("ws://127.0.0.1:1/", &config()).unwrap_err();
    assert!(matches!(err, ClientError::Connect(_)), "{err}");
}

// ---------------------------------------------------------------- CLI

fn cli(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
    cmd.arg("client").args(args).env("RUST_LOG", "info");
    cmd
}

/// Runs the CLI with `input` on stdin (then EOF) and waits for it.
fn cli_piped(args: &[&str], input: &str) -> Output {
    let mut child = cli(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    wait_output(child)
}

/// Waits for the child with a deadline, so a hung CLI fails the test.
fn wait_output(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("roomcast client did not exit: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn cli_pipe_mode_sends_lines_prints_replies_and_closes() {
    let server = start(test_config(), Echo);
    let url = format!("ws://{}/", server.addr);
    let out = cli_piped(&[&url, "--wait", "0.3"], "hello\n\nwörld\r\n");
    assert!(out.status.success(), "{out:?}");
    // Blank lines are skipped; CRLF is trimmed.
    assert_eq!(text(&out.stdout), "hello\nwörld\n");
}

#[test]
fn cli_prints_binary_as_hex_or_appends_it_to_a_file() {
    for to_file in [false, true] {
        let (tx, rx) = mpsc::channel();
        let (url, server) = tungstenite_server(move |mut ws| {
            ws.send(TMessage::binary(vec![0xde, 0xad, 0xbe, 0xef])).unwrap();
            tx.send(until_close(&mut ws).map(|f| u16::from(f.code))).unwrap();
        });
        let dir = std::env::temp_dir().join(format!("roomcast-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("binary.out");
        let _ = std::fs::remove_file(&file);
        let mut args = vec![url.as_str(), "--wait", "0.3"];
        let path = file.to_str().unwrap().to_owned();
        if to_file {
            args.extend(["--binary-out", &path]);
        }
        let out = cli_piped(&args, "");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(rx.recv().unwrap(), Some(1000), "closed with 1000 at end of input");
        if to_file {
            assert_eq!(text(&out.stdout), "");
            assert_eq!(std::fs::read(&file).unwrap(), [0xde, 0xad, 0xbe, 0xef]);
        } else {
            assert_eq!(text(&out.stdout), "deadbeef\n");
        }
        server.join().unwrap();
    }
}

#[test]
fn cli_handshake_failure_exits_3_with_the_status() {
    let server = start(
        Config {
            allowed_origins: vec!["https://ok.example".into()],
            ..test_config()
        },
        Echo,
    );
    let url = format!("ws://{}/", server.addr);
    let out = cli_piped(&[&url, "--header", "Origin: https://evil.example"], "hi\n");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text(&out.stderr).contains("HTTP 403"), "{}", text(&out.stderr));
}

#[test]
fn cli_usage_errors_exit_2() {
    let out = cli_piped(&["http://example.com/"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("ws:// or wss://"), "{}", text(&out.stderr));
    let out = cli_piped(&["wss://127.0.0.1:9/", "--ca", "/nonexistent/ca.pem"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--ca /nonexistent/ca.pem"),
        "{}",
        text(&out.stderr)
    );
    let out = cli_piped(&["ws://127.0.0.1:9/", "--header", "no colon"], "");
    assert_eq!(out.status.code(), Some(2));
    let out = cli_piped(&["ws://127.0.0.1:9/", "--header", "Sec-WebSocket-Key: x"], "");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn cli_reconnects_with_backoff_and_sends_on_connect_lines_again() {
    let join = r#"{"type":"join","room":"lobby"}"#;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let accept = |listener: &TcpListener| {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            tungstenite::accept(stream).unwrap()
        };
        // First connection: the rooms are joined, then the server goes away
        // without a close frame.
        let mut ws = accept(&listener);
        let first = ws.read().unwrap().into_text().unwrap().to_string();
        drop(ws);
        // Second connection: joined again, in the same order.
        let mut ws = accept(&listener);
        let again = ws.read().unwrap().into_text().unwrap().to_string();
        let second = ws.read().unwrap().into_text().unwrap().to_string();
        ws.send(TMessage::text("welcome back")).unwrap();
        tx.send(()).unwrap();
        let close = until_close(&mut ws).map(|f| u16::from(f.code));
        (first, again, second, close)
    });
    let started = Instant::now();
    let mut child = cli(&[
        &url,
        "--on-connect",
        join,
        "--on-connect",
        "second line",
        "--reconnect",
        "--backoff-base",
        "0.05",
        "--backoff-max",
        "0.2",
        "--wait",
        "0.2",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("second connection");
    drop(child.stdin.take()); // end of input: close cleanly
    let out = wait_output(child);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(text(&out.stdout), "welcome back\n");
    assert!(text(&out.stderr).contains("reconnecting in"), "{}", text(&out.stderr));
    let (first, again, second, close) = server.join().unwrap();
    assert_eq!(
        (first.as_str(), again.as_str(), second.as_str()),
        (join, join, "second line")
    );
    assert_eq!(close, Some(1000));
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[test]
fn cli_gives_up_after_max_attempts() {
    // A port with nothing listening.
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("ws://{addr}/");
    let out = cli_piped(
        &[
            &url,
            "--reconnect",
            "--max-attempts",
            "2",
            "--backoff-base",
            "0.01",
            "--backoff-max",
            "0.02",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("giving up after 2 reconnect attempts"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_ctrl_c_closes_with_1000() {
    let (tx, rx) = mpsc::channel();
    let (url, server) = tungstenite_server(move |mut ws| {
        let hello = ws.read().unwrap();
        tx.send(()).unwrap();
        let close = until_close(&mut ws).map(|f| u16::from(f.code));
        (hello, close)
    });
    let child = cli(&[&url, "--on-connect", "hello"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    rx.recv_timeout(Duration::from_secs(10)).expect("connected");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = wait_output(child);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    let (hello, close) = server.join().unwrap();
    assert_eq!(hello, TMessage::text("hello"));
    assert_eq!(close, Some(1000));
}
