//! The chat page and its assets over real sockets: what is served, with which
//! headers, what other methods get, and that `--no-demo` turns it all off.
//! (The page itself runs in Chromium in tests/browser/.)

mod common;

use common::{ServerProcess, free_port, raw, start_rooms, test_config};
use roomcast::http::demo;
use roomcast::rooms::{RoomConfig, RoomServer};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The whole response to `request`: (status, head, body).
fn exchange(addr: SocketAddr, request: &str) -> (u16, String, Vec<u8>) {
    let mut s = raw(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    s.read_to_end(&mut bytes).unwrap();
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head")
        + 4;
    let head = String::from_utf8(bytes[..end].to_vec()).unwrap();
    (head[9..12].parse().unwrap(), head, bytes[end..].to_vec())
}

fn request(method: &str, path: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const FILES: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../web/index.html")),
    (
        "/roomcast.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/roomcast.js"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
];

#[test]
fn serves_the_page_and_its_assets_with_their_types() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()).workers(2));
    assert_eq!(
        demo::paths().collect::<Vec<_>>(),
        FILES.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    for (path, content_type, body) in FILES {
        let (status, head, got) = exchange(server.addr, &request("GET", path));
        assert_eq!(status, 200, "{path}: {head}");
        assert_eq!(header(&head, "Content-Type"), Some(*content_type), "{path}");
        assert_eq!(header(&head, "Cache-Control"), Some("no-cache"), "{path}");
        assert_eq!(header(&head, "X-Content-Type-Options"), Some("nosniff"), "{path}");
        assert_eq!(header(&head, "Content-Length"), Some(body.len().to_string().as_str()));
        assert_eq!(&got, body, "{path}: the file from web/, unchanged");
    }
    // A query string does not change the page (the page reads it itself).
    let (status, _, got) = exchange(server.addr, &request("GET", "/?heartbeat=500"));
    assert_eq!((status, got.as_slice()), (200, FILES[0].2));
}

#[test]
fn the_page_may_only_talk_to_its_own_origin() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    let (_, head, _) = exchange(server.addr, &request("GET", "/"));
    let policy = header(&head, "Content-Security-Policy").expect("a CSP on the page");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
}

#[test]
fn every_local_file_the_page_references_is_served() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    let page = String::from_utf8(FILES[0].2.to_vec()).unwrap();
    let app = String::from_utf8(FILES[2].2.to_vec()).unwrap();
    let mut refs = Vec::new();
    for text in [&page, &app] {
        for quote in ['"', '\''] {
            for piece in text.split(quote).skip(1).step_by(2) {
                if piece.starts_with('/') && !piece.starts_with("//") && piece.len() > 1 && !piece.contains(' ') {
                    refs.push(piece.to_owned());
                }
            }
        }
    }
    for path in ["/style.css", "/app.js", "/roomcast.js"] {
        assert!(refs.iter().any(|r| r == path), "{path} is referenced: {refs:?}");
    }
    for path in &refs {
        let (status, _, _) = exchange(server.addr, &request("GET", path));
        assert_eq!(status, 200, "{path}, referenced by the page, is served");
    }
}

#[test]
fn head_gets_the_head_only() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    let (status, head, body) = exchange(server.addr, &request("HEAD", "/roomcast.js"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "Content-Length"),
        Some(FILES[1].2.len().to_string().as_str())
    );
    assert!(body.is_empty(), "{} bytes after a HEAD response", body.len());
}

#[test]
fn other_methods_get_405_with_allow() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        for (path, _, _) in FILES {
            let (status, head, _) = exchange(server.addr, &request(method, path));
            assert_eq!(status, 405, "{method} {path}");
            assert_eq!(header(&head, "Allow"), Some("GET, HEAD"), "{method} {path}");
        }
    }
}

#[test]
fn a_websocket_upgrade_at_the_page_is_still_404() {
    let server = start_rooms(RoomServer::new(test_config(), RoomConfig::default()));
    let (status, _, _) = exchange(server.addr, &common::upgrade_request("/", ""));
    assert_eq!(status, 404);
    // Near misses of asset paths are not assets.
    for path in ["/index.html", "/roomcast.js/", "/app.js.map", "//roomcast.js"] {
        assert_eq!(exchange(server.addr, &request("GET", path)).0, 404, "{path}");
    }
}

#[test]
fn demo_off_answers_404_and_leaves_the_rest_alone() {
    let config = RoomConfig {
        demo: false,
        ..RoomConfig::default()
    };
    let server = start_rooms(RoomServer::new(test_config(), config));
    for (path, _, _) in FILES {
        assert_eq!(exchange(server.addr, &request("GET", path)).0, 404, "{path}");
        assert_eq!(exchange(server.addr, &request("POST", path)).0, 404, "POST {path}");
    }
    assert_eq!(exchange(server.addr, &request("GET", "/health")).0, 200);
}

/// `roomcast serve` with `args` on a free port, once it has said it listens.
fn serve(args: &[&str]) -> (ServerProcess, SocketAddr) {
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["serve", "--store", "memory", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let process = ServerProcess(child);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines.next().expect("roomcast exited before listening").unwrap();
        if line.contains("listening on") {
            break;
        }
    }
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (process, format!("127.0.0.1:{port}").parse().unwrap())
}

#[test]
fn the_binary_serves_the_page_by_default_and_not_with_no_demo() {
    let (_on, addr) = serve(&[]);
    let (status, _, body) = exchange(addr, &request("GET", "/"));
    assert_eq!((status, body.as_slice()), (200, FILES[0].2));
    let (_off, addr) = serve(&["--no-demo"]);
    assert_eq!(exchange(addr, &request("GET", "/")).0, 404);
    assert_eq!(exchange(addr, &request("GET", "/roomcast.js")).0, 404);
}
