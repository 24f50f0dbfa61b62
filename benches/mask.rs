//! Masking throughput (RFC 6455 section 5.3): the word-at-a-time
//! `apply_mask` against the byte-at-a-time reference definition.
//!
//! Run with `cargo bench --bench mask`; results are in bytes per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::protocol::mask::{apply_mask, apply_mask_bytewise};
use std::hint::black_box;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame header's worth, the comparison's small echo, a chat message, the
/// default frame limit, a large message.
const SIZES: [(usize, &str); 5] = [
    (16, "16B"),
    (20, "20B"),
    (1024, "1KiB"),
    (64 * 1024, "64KiB"),
    (1024 * 1024, "1MiB"),
];

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for (size, label) in SIZES {
        let mut buf: Vec<u8> = (0..size).map(|i| i as u8).collect();
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("word", label), &size, |b, _| {
            // Offset 1 so the key is rotated, as for a payload's later piece.
            b.iter(|| apply_mask(black_box(&mut buf), black_box(KEY), black_box(1)));
        });
        group.bench_with_input(BenchmarkId::new("bytewise", label), &size, |b, _| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), black_box(KEY), black_box(1)));
        });
    }
    group.finish();
}

criterion_group!(benches, masking);
criterion_main!(benches);
