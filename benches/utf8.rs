//! UTF-8 validation of whole text payloads (RFC 6455 section 8.1): the
//! protocol core's `validate` (`simdutf8`) against std's `from_utf8`, which
//! it used before.
//!
//! Run with `cargo bench --bench utf8`; results are in bytes per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::protocol::utf8::validate;
use std::hint::black_box;

/// A JSON chat message, a larger JSON document, and text that is mostly
/// not ASCII (Cyrillic and CJK), each at a few sizes.
fn inputs() -> Vec<(String, Vec<u8>)> {
    let json = r#"{"type":"broadcast","room":"lobby","content":{"text":"hello there, how are you?","n":42}}"#;
    let mixed = "Привет, мир! 你好，世界！ Grüße. ";
    let mut out = Vec::new();
    for (name, unit) in [("json", json), ("non-ascii", mixed)] {
        for size in [32, 1024, 64 * 1024] {
            let mut text = unit.repeat(size / unit.len() + 1);
            let mut end = size;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            out.push((format!("{name}/{size}"), text.into_bytes()));
        }
    }
    out
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (label, bytes) in inputs() {
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("roomcast", &label), &bytes, |b, bytes| {
            b.iter(|| validate(black_box(bytes)).is_ok());
        });
        group.bench_with_input(BenchmarkId::new("std", &label), &bytes, |b, bytes| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok());
        });
    }
    group.finish();
}

criterion_group!(benches, validation);
criterion_main!(benches);
