//! permessage-deflate (RFC 7692): memory per zlib stream and per connection,
//! then compress / inflate throughput of chat-like JSON messages.
//!
//! Run with `cargo bench --bench deflate`. The memory table is printed first
//! (heap bytes counted by a global allocator); `-- --memory` prints only it.
//! Results and the backend decision are in `docs/deflate.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use flate2::{Compress, Compression as Level, Decompress};
use roomcast::protocol::Role;
use roomcast::protocol::deflate::{Compression, DeflateConfig, SharedCompressor, client_offer, negotiate};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes `f`'s result holds (what it allocated and did not free).
fn held<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Relaxed);
    let value = f();
    (value, LIVE.load(Relaxed) - before)
}

/// Chat-like JSON messages of `words` words each, deterministic.
fn messages(n: usize, words: usize) -> Vec<Vec<u8>> {
    const W: &[&str] = &[
        "hello", "world", "room", "lobby", "player", "joined", "left", "score", "the", "a", "game", "ready", "ok",
        "lol", "gg", "next", "round", "map", "team", "red", "blue",
    ];
    let mut s = 0x1234_5678_u64;
    let mut rand = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s as usize
    };
    (0..n)
        .map(|i| {
            let text: Vec<&str> = (0..words).map(|_| W[rand() % W.len()]).collect();
            format!(
                r#"{{"type":"message","room":"lobby-{}","from":"user{}","ts":{},"text":"{}"}}"#,
                rand() % 50,
                rand() % 10000,
                1_700_000_000_000_u64 + i as u64 * 37,
                text.join(" ")
            )
            .into_bytes()
        })
        .collect()
}

fn config(takeover: bool, window: u8) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: !takeover,
        client_no_context_takeover: !takeover,
        server_max_window_bits: window,
        client_max_window_bits: window,
        ..DeflateConfig::default()
    }
}

/// A negotiated server-side `Compression`.
fn server(config: &DeflateConfig) -> Compression {
    let (params, _) = negotiate(&[client_offer(config)], config).expect("accepted");
    Compression::new(&params, Role::Server, config)
}

/// A client-side `Compression` matching `server(config)`.
fn client(config: &DeflateConfig) -> Compression {
    let (params, _) = negotiate(&[client_offer(config)], config).expect("accepted");
    Compression::new(&params, Role::Client, config)
}

fn inflate(c: &mut Compression, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    c.inflate(data, out, usize::MAX).unwrap();
    c.finish_message(out, usize::MAX).unwrap();
}

fn memory_table() {
    let level = DeflateConfig::default().level;
    let msg = messages(100, 12).concat();
    println!(
        "Heap bytes held (flate2 + zlib-rs, level {level}) after one {} B message",
        msg.len()
    );
    println!("| window bits | deflate stream | inflate stream | connection keeping both contexts |");
    println!("|---|---|---|---|");
    // Kept alive to the end, so no stream goes back to the pool and is reused uncounted.
    let mut keep = Vec::new();
    for window in 8..=15u8 {
        let zlib = window.max(9);
        let (mut c, deflate_new) = held(|| Compress::new_with_window_bits(Level::new(level.into()), false, zlib));
        let mut out = Vec::with_capacity(msg.len() * 2);
        let (_, deflate_grown) = held(|| c.compress_vec(&msg, &mut out, flate2::FlushCompress::Sync).unwrap());
        let (mut d, inflate_new) = held(|| Decompress::new_with_window_bits(false, zlib));
        let mut back = Vec::with_capacity(msg.len() * 2);
        let (_, inflate_grown) = held(|| {
            d.decompress_vec(&out, &mut back, flate2::FlushDecompress::Sync)
                .unwrap()
        });
        // One connection that sent and received a message, context takeover
        // both ways: its boxed `Compression` plus the streams it keeps.
        let cfg = DeflateConfig {
            threshold: 0,
            ..config(true, window)
        };
        let mut peer = client(&cfg);
        let echo = peer.compress(&msg).unwrap();
        let ((conn, data), held_bytes) = held(|| {
            let mut conn = Box::new(server(&cfg));
            inflate(&mut conn, &echo, &mut Vec::new());
            let data = conn.compress(&msg).unwrap();
            (conn, data)
        });
        let conn_bytes = held_bytes - data.capacity();
        inflate(&mut peer, &data, &mut Vec::new());
        keep.push((conn, peer));
        println!(
            "| {window} (zlib {zlib}) | {} | {} | {conn_bytes} |",
            deflate_new + deflate_grown,
            inflate_new + inflate_grown,
        );
    }
    drop(keep);
    // Default config: no context takeover. Warm the pool, then count what
    // connections keep after a message each way.
    let cfg = DeflateConfig::default();
    let mut peer = client(&cfg);
    let mut exchange = |conn: &mut Compression| {
        let data = conn.compress(&msg).unwrap();
        let echo = peer.compress(&msg).unwrap();
        let mut out = Vec::new();
        inflate(conn, &echo, &mut out);
        inflate(&mut peer, &data, &mut out);
    };
    exchange(&mut server(&cfg));
    let (conns, bytes) = held(|| {
        let mut conns: Vec<Box<Compression>> = (0..100).map(|_| Box::new(server(&cfg))).collect();
        conns.iter_mut().for_each(|c| exchange(c));
        conns
    });
    println!(
        "default config (no context takeover): {} B per connection after traffic \
         (the boxed Compression, {} B; zlib streams stay in the per-thread pool)",
        (bytes - conns.capacity() * std::mem::size_of::<Box<Compression>>()) / conns.len(),
        std::mem::size_of::<Compression>(),
    );
}

fn sets() -> [(&'static str, Vec<Vec<u8>>); 3] {
    [
        ("small", messages(2000, 12)),
        ("medium", messages(200, 250)),
        ("large", messages(8, 8000)),
    ]
}

fn compress(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("compress");
    for (label, msgs) in sets() {
        let bytes: usize = msgs.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        for (mode, takeover) in [("fresh", false), ("takeover", true)] {
            let cfg = DeflateConfig {
                threshold: 0,
                ..config(takeover, 15)
            };
            let mut s = server(&cfg);
            group.bench_with_input(BenchmarkId::new(mode, label), &msgs, |b, msgs| {
                b.iter(|| {
                    msgs.iter()
                        .map(|m| s.compress(black_box(m)).map_or(0, |v| v.len()))
                        .sum::<usize>()
                });
            });
        }
        let shared = SharedCompressor::new(&DeflateConfig {
            threshold: 0,
            ..DeflateConfig::default()
        });
        group.bench_with_input(BenchmarkId::new("shared", label), &msgs, |b, msgs| {
            b.iter(|| {
                msgs.iter()
                    .map(|m| shared.compress(black_box(m)).map_or(0, |v| v.len()))
                    .sum::<usize>()
            });
        });
    }
    group.finish();
}

fn decompress(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("inflate");
    for (label, msgs) in sets() {
        let bytes: usize = msgs.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        for (mode, takeover) in [("fresh", false), ("takeover", true)] {
            let cfg = DeflateConfig {
                threshold: 0,
                ..config(takeover, 15)
            };
            let mut s = server(&cfg);
            let compressed: Vec<Vec<u8>> = msgs.iter().map(|m| s.compress(m).expect("JSON compresses")).collect();
            let ratio = compressed.iter().map(Vec::len).sum::<usize>() as f64 / bytes as f64;
            println!("inflate/{mode}/{label}: compressed to {ratio:.3} of {bytes} B");
            let mut out = Vec::new();
            group.bench_with_input(BenchmarkId::new(mode, label), &compressed, |b, compressed| {
                b.iter(|| {
                    // A fresh receiver per pass: with takeover the stream must
                    // see the messages in order from the first.
                    let mut c = client(&cfg);
                    for data in compressed {
                        inflate(&mut c, black_box(data), &mut out);
                    }
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compress, decompress);

fn main() {
    memory_table();
    if std::env::args().any(|a| a == "--memory") {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
