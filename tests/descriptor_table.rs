//! A server sizes its process's descriptor table when it starts, not while
//! a crowd of connections waits (src/net/descriptors.rs). A test binary of
//! its own: in a process nobody else has grown the table in, the size the
//! kernel reports can only come from the server's start-up.

use roomcast::apps::echo::Echo;
use roomcast::net::Config;
use roomcast::runtime::{self, AcceptMode};
use std::io::{Read, Write};
use std::net::TcpStream;

/// The table's size as the kernel reports it (`FDSize` in /proc).
fn table_size() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
    line["FDSize:".len()..].trim().parse().unwrap()
}

#[test]
fn starting_a_server_sizes_the_descriptor_table_for_its_connections() {
    let max_connections = 3000;
    let (soft, _) = rlimit_soft();
    let expected = (max_connections + 64).min(soft);
    assert!(
        table_size() < expected,
        "the table is already {} before the server starts",
        table_size()
    );
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        max_connections,
        shutdown_timeout: std::time::Duration::from_secs(1),
        ..Config::default()
    };
    let server = runtime::start(config, 2, AcceptMode::ReusePort, |_, _| Echo).unwrap();
    assert!(table_size() >= expected, "FDSize {} < {expected}", table_size());
    // The descriptor that grew it is closed again: the server still serves.
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.write_all(b"GET /nothing HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert!(head.starts_with(b"HTTP/1.1 "), "{:?}", String::from_utf8_lossy(&head));
    drop(s);
    server.stopper().shutdown();
    server.wait().unwrap();
}

/// The soft open-file limit, read from /proc (the limit the server caps at).
fn rlimit_soft() -> (usize, usize) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut parse = || fields.next().unwrap().parse().unwrap_or(usize::MAX);
    (parse(), parse())
}
