//! `roomcast bench` against in-process servers: each scenario runs briefly
//! and its JSON line must hold sane numbers.

mod common;

use roomcast::apps::echo::Echo;
use roomcast::bench::{self, BroadcastConfig, Common, ConnectConfig, EchoConfig, Mode, Report, Target};
use roomcast::rooms::{RoomConfig, RoomServer};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

fn common(addr: SocketAddr, path: &str) -> Common {
    let mut c = Common::new(Target::parse(&format!("ws://{addr}{path}")).unwrap());
    c.warmup = Duration::from_millis(200);
    c.duration = Duration::from_secs(1);
    c.connect_timeout = Duration::from_secs(10);
    // The server runs in this process: its CPU and memory are ours.
    c.server_pid = Some(std::process::id());
    c
}

/// The report's last line, parsed back: one JSON object on one line.
fn json_line(report: &Report) -> Value {
    let line = Value::Object(report.json.clone()).to_string();
    assert!(!line.contains('\n'));
    let value: Value = serde_json::from_str(&line).unwrap();
    assert!(value.is_object());
    value
}

fn f(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn echo_scenario_reports_rate_and_latency() {
    let server = common::start(common::test_config(), Echo);
    let report = bench::run_echo(&EchoConfig {
        common: common(server.addr, "/"),
        connections: 20,
        size: 100,
        in_flight: 2,
        binary: false,
    })
    .unwrap();
    let v = json_line(&report);
    assert_eq!(v["scenario"], "echo");
    assert_eq!(f(&v, "connections"), 20.0);
    assert!(f(&v, "msgs_per_sec") > 0.0, "{v}");
    assert!(f(&v, "messages") > 0.0);
    let latency = &v["latency_us"];
    assert!(f(latency, "p50") > 0.0);
    assert!(f(latency, "p50") <= f(latency, "p99"));
    assert!(f(latency, "p99") <= f(latency, "p999"));
    assert!(f(latency, "p999") <= f(latency, "max"));
    assert_eq!(f(&v, "errors"), 0.0);
    assert_eq!(f(&v, "unexpected_replies"), 0.0);
    assert!(f(&v, "bench_cpu_percent") >= 0.0);
    assert!(report.lines.iter().any(|l| l.contains("msgs/s")));
}

#[test]
fn echo_scenario_binary_messages_split_across_reads() {
    let server = common::start(common::test_config(), Echo);
    let report = bench::run_echo(&EchoConfig {
        common: common(server.addr, "/"),
        connections: 4,
        size: 60_000,
        in_flight: 4,
        binary: true,
    })
    .unwrap();
    let v = json_line(&report);
    assert!(f(&v, "messages") > 0.0, "{v}");
    assert_eq!(f(&v, "errors"), 0.0);
    assert_eq!(f(&v, "unexpected_replies"), 0.0);
}

fn broadcast(addr: SocketAddr, path: &str, mode: Mode) -> Value {
    broadcast_sized(addr, path, mode, 64, false)
}

fn broadcast_sized(addr: SocketAddr, path: &str, mode: Mode, size: usize, deflate: bool) -> Value {
    let report = bench::run_broadcast(&BroadcastConfig {
        common: common(addr, path),
        members: 20,
        publishers: 2,
        // Low enough for roomcast's default rate limit (50/s per connection).
        rate: 20.0,
        window: 16,
        size,
        mode,
        room: "bench".into(),
        drain: Duration::from_secs(3),
        deflate,
    })
    .unwrap();
    json_line(&report)
}

#[test]
fn broadcast_over_raw_pubsub_loses_nothing_at_low_rate() {
    let server = common::start_rooms(RoomServer::new(common::test_config(), RoomConfig::default()));
    let v = broadcast(server.addr, "/pubsub/bench", Mode::Raw);
    assert_eq!(v["mode"], "raw");
    assert_eq!(f(&v, "receivers"), 22.0);
    assert!(f(&v, "published") > 0.0, "{v}");
    assert!(f(&v, "deliveries") > 0.0);
    assert_eq!(f(&v, "deliveries"), f(&v, "published") * 22.0);
    assert_eq!(f(&v, "lost"), 0.0, "{v}");
    assert!(f(&v["latency_us"], "p50") > 0.0);
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn broadcast_with_deflate_inflates_every_delivery() {
    let server = common::start_rooms(RoomServer::new(common::test_config(), RoomConfig::default()));
    for (path, mode) in [("/pubsub/bench", Mode::Raw), ("/ws?username=bench", Mode::Rooms)] {
        // 1 KiB of varied text: over the compression threshold, so every
        // delivery arrives compressed and is counted only if it inflates.
        let v = broadcast_sized(server.addr, path, mode, 1024, true);
        assert_eq!(v["deflate"], true);
        assert!(f(&v, "deliveries") > 0.0, "{v}");
        assert_eq!(f(&v, "lost"), 0.0, "{v}");
        assert_eq!(f(&v, "errors"), 0.0, "{v}");
    }
}

#[test]
fn broadcast_over_the_json_protocol_loses_nothing_at_low_rate() {
    let server = common::start_rooms(RoomServer::new(common::test_config(), RoomConfig::default()));
    let v = broadcast(server.addr, "/ws?username=bench", Mode::Rooms);
    assert_eq!(v["mode"], "rooms");
    assert!(f(&v, "deliveries") > 0.0, "{v}");
    assert_eq!(f(&v, "lost"), 0.0, "{v}");
    assert_eq!(f(&v, "server_errors"), 0.0, "{v}");
    assert!(f(&v, "deliveries_per_sec") > 0.0);
}

#[test]
fn connect_scenario_counts_handshakes_and_memory() {
    let server = common::start(common::test_config(), Echo);
    let mut c = common(server.addr, "/");
    c.connect_concurrency = 8;
    let report = bench::run_connect(&ConnectConfig {
        common: c,
        connections: 50,
        hold: Duration::from_millis(300),
    })
    .unwrap();
    let v = json_line(&report);
    assert_eq!(f(&v, "opened"), 50.0);
    assert_eq!(f(&v, "held"), 50.0);
    assert!(f(&v, "handshakes_per_sec") > 0.0, "{v}");
    assert!(f(&v["handshake_latency_us"], "p50") > 0.0);
    // No counting allocator in the test binary: no heap figure, but RSS is read.
    assert!(v["heap_bytes_per_conn"].is_null());
    assert!(v["rss_bytes_per_conn"].is_number(), "{v}");
    assert_eq!(f(&v, "errors"), 0.0);
}

#[test]
fn connections_spread_over_source_addresses() {
    let server = common::start(common::test_config(), Echo);
    let mut c = common(server.addr, "/");
    c.first_source = Some("127.0.0.2".parse().unwrap());
    c.per_source_address = 20;
    let report = bench::run_connect(&ConnectConfig {
        common: c,
        connections: 50,
        hold: Duration::ZERO,
    })
    .unwrap();
    let v = json_line(&report);
    assert_eq!(f(&v, "opened"), 50.0, "{v}");
    // 127.0.0.2, .3 and .4: 20 + 20 + 10.
    assert_eq!(f(&v, "source_addresses"), 3.0);
}

#[test]
fn refuses_targets_off_this_machine() {
    for url in [
        "ws://10.0.0.1:9001/",
        "ws://192.168.0.2/",
        "ws://example.com/",
        "wss://127.0.0.1/",
    ] {
        assert!(Target::parse(url).is_err(), "{url}");
    }
}

/// A short soak against an in-process room server on two workers: every
/// check passes, and the JSON line has the promised fields. (The real
/// figures come from `benches/soak.sh` against the binary.)
#[test]
fn soak_passes_against_a_healthy_server_and_reports_its_fields() {
    let server = common::start_rooms(
        RoomServer::new(
            roomcast::net::Config {
                handshake_timeout: Duration::from_secs(2),
                ..common::test_config()
            },
            RoomConfig::default(),
        )
        .workers(2),
    );
    let target = Target::parse(&format!("ws://{}/ws", server.addr)).unwrap();
    let config = bench::soak::SoakConfig {
        rooms: 3,
        members: 3,
        churners: 2,
        crowd: 100,
        crowd_every: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(2),
        // In this process: memory and descriptors are the test's own too.
        server_pid: None,
        heap_slack_bytes: 64 << 20,
        ..bench::soak::SoakConfig::new(target, Duration::from_secs(8))
    };
    let report = bench::soak::run(&config).unwrap();
    let v = &report.json;
    assert!(report.passed, "{}", report.lines.join("\n"));
    for key in [
        "delivered",
        "lost",
        "duplicates",
        "out_of_order",
        "recovered_ok",
        "recovered_failed",
        "abusers",
        "latency_us",
        "peak_connections",
    ] {
        assert!(!v[key].is_null(), "{key} missing in {v}");
    }
    assert!(f(v, "delivered") > 0.0);
    assert_eq!(f(v, "lost"), 0.0);
    assert!(f(v, "recovered_ok") > 0.0, "{v}");
    for kind in [
        "stalled_reader",
        "ping_flood",
        "oversize_frame",
        "invalid_utf8",
        "compression_bomb",
        "handshake_storm",
    ] {
        assert!(f(&v["abusers"][kind], "answered") >= 1.0, "{kind}: {v}");
    }
}

#[test]
fn soak_refuses_targets_off_this_machine() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_roomcast"))
        .args(["bench", "soak", "--url", "ws://192.0.2.1:9001/ws", "--duration", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"), "{out:?}");
}
