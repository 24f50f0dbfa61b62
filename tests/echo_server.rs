//! The event loop over real sockets: handshake rejections, protocol
//! failures with their close codes, heartbeats and timeouts, and many
//! concurrent connections.

mod common;

use common::*;
use roomcast::apps::echo::Echo;
use roomcast::net::Config;
use roomcast::protocol::Limits;
use std::io::Write;
use std::time::Duration;
use tungstenite::{Message, connect, protocol::frame::coding::CloseCode};

fn echo(config: Config) -> Running {
    start(config, Echo)
}

#[test]
fn tungstenite_round_trip_text_binary_and_ping() {
    let server = echo(test_config());
    let (mut ws, response) = connect(format!("ws://{}/any/path", server.addr)).unwrap();
    assert_eq!(response.status(), 101);
    ws.send(Message::text("héllo")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    ws.send(Message::Ping(b"are you there".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec().into()));
    ws.close(None).unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(_)) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn each_bad_upgrade_gets_its_status() {
    let server = echo(Config {
        allowed_origins: vec!["https://ok.example".into()],
        ..test_config()
    });
    let addr = server.addr;
    let good = upgrade_request("/", "");
    assert_eq!(http(addr, &good.replace("Upgrade: websocket\r\n", "")).0, 400);
    assert_eq!(
        http(
            addr,
            &good.replace("Connection: Upgrade\r\n", "Connection: keep-alive\r\n")
        )
        .0,
        400
    );
    assert_eq!(http(addr, &good.replace("Host: localhost\r\n", "")).0, 400);
    assert_eq!(http(addr, &good.replace(KEY, "dG9vIHNob3J0")).0, 400);
    assert_eq!(http(addr, &good.replace("GET", "POST")).0, 405);
    let (status, head) = http(addr, &good.replace("Version: 13", "Version: 7"));
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13\r\n"));
    let big = format!("X-Filler: {}\r\n", "a".repeat(9000));
    assert_eq!(http(addr, &upgrade_request("/", &big)).0, 431);
    assert_eq!(http(addr, "GET / HTTP/1.1\r\nbroken header line\r\n\r\n").0, 400);
    assert_eq!(
        http(addr, &upgrade_request("/", "Origin: https://evil.example\r\n")).0,
        403
    );
    assert_eq!(
        http(addr, &upgrade_request("/", "Origin: https://ok.example\r\n")).0,
        101
    );
}

#[test]
fn a_handshake_that_never_finishes_is_closed() {
    let server = echo(Config {
        handshake_timeout: Duration::from_millis(200),
        ..test_config()
    });
    let mut s = raw(server.addr);
    s.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\n").unwrap();
    assert!(closed_by_peer(&mut s));
}

#[test]
fn frames_after_the_head_in_the_same_packet_are_kept() {
    let server = echo(test_config());
    let mut s = raw(server.addr);
    let mut bytes = upgrade_request("/", "").into_bytes();
    bytes.extend(client_frame(1, b"early"));
    s.write_all(&bytes).unwrap();
    assert_eq!(read_head(&mut s).0, 101);
    assert_eq!(read_frame(&mut s), (1, b"early".to_vec()));
}

#[test]
fn unmasked_client_frame_is_closed_with_1002() {
    let server = echo(test_config());
    let mut s = raw_ws(server.addr, "/");
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(read_close_code(&mut s), 1002);
    assert!(closed_by_peer(&mut s));
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    let server = echo(test_config());
    let mut s = raw_ws(server.addr, "/");
    s.write_all(&client_frame(1, b"ok \xff\xfe")).unwrap();
    assert_eq!(read_close_code(&mut s), 1007);
}

#[test]
fn oversized_message_is_closed_with_1009() {
    let limits = Limits {
        max_frame_size: 1000,
        max_message_size: 1000,
    };
    let server = echo(Config {
        limits,
        ..test_config()
    });
    let (mut ws, _) = connect(format!("ws://{}/", server.addr)).unwrap();
    ws.send(Message::binary(vec![7u8; 1000])).unwrap();
    assert_eq!(ws.read().unwrap().len(), 1000);
    ws.send(Message::binary(vec![7u8; 1001])).unwrap();
    match ws.read().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
}

#[test]
fn a_peer_that_never_answers_pings_is_dropped() {
    let config = Config {
        ping_interval: Some(Duration::from_millis(100)),
        pong_timeout: Duration::from_millis(100),
        ..test_config()
    };
    let server = echo(config);
    let mut s = raw_ws(server.addr, "/");
    // The server pings; this client never answers and is dropped.
    let (op, _) = read_frame(&mut s);
    assert_eq!(op, 9);
    assert!(closed_by_peer(&mut s));
}

#[test]
fn a_peer_that_answers_pings_stays() {
    let config = Config {
        ping_interval: Some(Duration::from_millis(50)),
        pong_timeout: Duration::from_millis(200),
        ..test_config()
    };
    let server = echo(config);
    let (mut ws, _) = connect(format!("ws://{}/", server.addr)).unwrap();
    // tungstenite answers pings by itself while reading; survive many rounds.
    for i in 0..10 {
        std::thread::sleep(Duration::from_millis(60));
        ws.send(Message::text(format!("{i}"))).unwrap();
        loop {
            match ws.read().unwrap() {
                Message::Text(t) => {
                    assert_eq!(t.as_str(), format!("{i}"));
                    break;
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn shutdown_sends_1001_to_every_client() {
    let server = echo(test_config());
    let mut clients: Vec<_> = (0..5).map(|_| raw_ws(server.addr, "/")).collect();
    server.handle.shutdown();
    for s in &mut clients {
        assert_eq!(read_close_code(s), 1001);
        s.write_all(&client_frame(8, &1001u16.to_be_bytes())).unwrap();
        assert!(closed_by_peer(s));
    }
}

#[test]
fn connections_beyond_the_limit_get_503() {
    let server = echo(Config {
        max_connections: 1,
        ..test_config()
    });
    let _first = raw_ws(server.addr, "/");
    let (status, head) = http(server.addr, &upgrade_request("/", ""));
    assert_eq!(status, 503, "{head}");
}

/// `TCP_DEFER_ACCEPT`: the kernel keeps a connection that has sent nothing
/// from the server, so it holds none of `max_connections` meanwhile. With
/// the option off, the same silent connection (first in the accept queue)
/// takes the one slot and the handshake behind it is refused.
#[test]
fn a_silent_connection_holds_no_slot_while_the_kernel_defers_it() {
    let deferred = echo(Config {
        max_connections: 1,
        defer_accept: 30,
        ..test_config()
    });
    let _silent = raw(deferred.addr);
    let _open = raw_ws(deferred.addr, "/");

    let undeferred = echo(Config {
        max_connections: 1,
        defer_accept: 0,
        ..test_config()
    });
    let _silent = raw(undeferred.addr);
    let (status, head) = http(undeferred.addr, &upgrade_request("/", ""));
    assert_eq!(status, 503, "{head}");
}

/// A connection that never speaks still reaches the server once the
/// deferral ends, and its handshake timeout closes it.
#[test]
fn a_silent_connection_is_closed_after_the_deferral_and_the_handshake_timeout() {
    let server = echo(Config {
        defer_accept: 1,
        handshake_timeout: Duration::from_millis(200),
        ..test_config()
    });
    let mut silent = raw(server.addr);
    let started = std::time::Instant::now();
    assert!(closed_by_peer(&mut silent));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_idle_connection_is_closed_with_1000() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(150)),
        ping_interval: None,
        ..test_config()
    };
    let server = echo(config);
    let mut s = raw_ws(server.addr, "/");
    assert_eq!(read_close_code(&mut s), 1000);
}

#[test]
fn large_echoes_through_a_small_receive_window_arrive_whole_and_in_order() {
    // 12 messages, ~600 KB: the first replies go from the read buffer as a
    // second iovec (`Ctx::write_through`), the rest queue up behind them.
    echoes_before_any_is_read(12, |i| 50_000 + 97 * i);
}

#[test]
fn small_echoes_through_a_small_receive_window_arrive_whole_and_in_order() {
    // 3,000 messages of 1 B to 4 KiB, ~6 MB: the first replies are copied
    // behind their headers and written at once, the rest queue up behind
    // them once the sockets are full.
    echoes_before_any_is_read(3_000, |i| 1 + (i * 1_361) % 4_100);
}

/// Sends `n` binary messages of `size(i)` bytes to the echo server from a
/// client that reads nothing until it has sent them all, through a 4 KiB
/// receive buffer, then checks every reply. Distinct bytes per message
/// catch a reply cut, lost or reordered on the direct or the queued path.
/// (Whether a direct write comes up short is up to the kernel's buffer
/// sizes; `unsent` is tested apart.)
fn echoes_before_any_is_read(n: usize, size: fn(usize) -> usize) {
    let server = echo(test_config());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&server.addr.into()).unwrap();
    let stream: std::net::TcpStream = socket.into();
    let (mut reader, _) = tungstenite::client(format!("ws://{}/", server.addr), stream.try_clone().unwrap()).unwrap();
    let mut writer = tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let payload = move |i: usize| -> Vec<u8> { (0..size(i)).map(|j| ((i * 7 + j) % 251) as u8).collect() };
    // Far more than the sockets hold while nobody reads. The reader starts
    // once they are all sent, or after 5 s if the sender is blocked (a
    // kernel with small buffers): never a deadlock.
    let (sent, all_sent) = std::sync::mpsc::channel();
    let sender = std::thread::spawn(move || {
        for i in 0..n {
            writer.send(Message::binary(payload(i))).unwrap();
        }
        sent.send(()).unwrap();
        writer
    });
    let _ = all_sent.recv_timeout(Duration::from_secs(5));
    for i in 0..n {
        match reader.read().unwrap() {
            Message::Binary(got) => assert!(got[..] == payload(i)[..], "message {i} differs"),
            other => panic!("message {i}: {other:?}"),
        }
    }
    drop(sender.join().unwrap());
}
