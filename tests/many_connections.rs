//! Ten thousand concurrent WebSocket connections against the real binary,
//! held, used and released. The server's live heap bytes (counted by its
//! allocator, read over plain HTTP) return to the baseline: nothing leaks and
//! peak capacity is given back. RSS is printed for information only: it
//! also holds what the C allocator keeps cached. The server runs as its own
//! process so each process stays within the 20,000 descriptor limit.

mod common;

use common::{ServerProcess, free_port};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 10_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_all(addr: SocketAddr) -> Vec<TcpStream> {
    let request = common::upgrade_request("/", "");
    let mut conns: Vec<TcpStream> = Vec::with_capacity(CONNECTIONS);
    // Pipelined in batches: send a batch of handshakes, then read the answers.
    while conns.len() < CONNECTIONS {
        let start = conns.len();
        for _ in 0..500 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            conns.push(s);
        }
        for s in &mut conns[start..] {
            assert_eq!(common::read_head(s).0, 101);
        }
    }
    conns
}

/// The server's counters from its plain-HTTP answer.
fn counters(addr: SocketAddr) -> (u64, u64) {
    let mut s = common::raw(addr);
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let (status, _) = common::read_head(&mut s);
    assert_eq!(status, 200);
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).unwrap();
    let field = |name: &str| -> u64 {
        let at = body.find(&format!("\"{name}\":")).unwrap() + name.len() + 3;
        body[at..].split([',', '}']).next().unwrap().parse().unwrap()
    };
    (field("connections_active"), field("heap_bytes"))
}

/// Live heap bytes once the server reports `active` open connections
/// (polled: the server processes closes asynchronously).
fn heap_at(addr: SocketAddr, active: u64) -> u64 {
    let start = Instant::now();
    loop {
        let (now_active, heap) = counters(addr);
        if now_active == active || start.elapsed() > Duration::from_secs(20) {
            assert_eq!(now_active, active, "server still reports {now_active} open");
            return heap;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The server's RSS once `done` holds for it, or after 10 s.
fn rss_when(pid: u32, done: impl Fn(u64) -> bool) -> u64 {
    let start = Instant::now();
    loop {
        let rss = rss_kib(pid);
        if done(rss) || start.elapsed() > Duration::from_secs(10) {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ten_thousand_connections_held_and_released() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["echo", "--listen", &format!("127.0.0.1:{port}"), "--ping-interval", "0"])
        // All 10,000 come from 127.0.0.1 at once.
        .args(["--max-connections-per-ip", "0", "--handshake-rate-per-ip", "0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = ServerProcess(child);
    let pid = server.0.id();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    while TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let baseline = heap_at(addr, 0);
    let baseline_rss = rss_kib(pid);

    let mut rounds = Vec::new();
    for round in 0..2 {
        let mut conns = open_all(addr);
        // Every connection works, not just exists: a sample echoes.
        for s in conns.iter_mut().step_by(997) {
            s.write_all(&common::client_frame(1, b"ping")).unwrap();
            assert_eq!(common::read_frame(s), (1, b"ping".to_vec()));
        }
        let held = heap_at(addr, CONNECTIONS as u64);
        let held_rss = rss_kib(pid);
        drop(conns);
        // Closes are processed, then housekeeping gives capacity back (~1 s).
        heap_at(addr, 0);
        let start = Instant::now();
        let mut released = counters(addr).1;
        while released > baseline + 64 * 1024 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            released = counters(addr).1;
        }
        let released_rss = rss_when(pid, |_| true);
        eprintln!(
            "round {round}: heap baseline {baseline} B, {CONNECTIONS} held {held} B ({} B/conn), released {released} B; \
             RSS {baseline_rss} -> {held_rss} -> {released_rss} KiB",
            (held - baseline) / CONNECTIONS as u64
        );
        rounds.push((held, released));
    }
    for (round, &(held, released)) in rounds.iter().enumerate() {
        assert!(
            held > baseline + 100 * CONNECTIONS as u64,
            "round {round}: connections cost nothing?"
        );
        // Within 64 KiB of the baseline: per-connection memory all came back.
        assert!(
            released <= baseline + 64 * 1024,
            "round {round}: heap did not return: baseline {baseline}, held {held}, released {released}"
        );
    }
}
