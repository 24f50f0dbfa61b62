//! A log-bucketed latency histogram, HDR-style, in a fixed array.
//!
//! Values below 128 are counted exactly. Above, each power of two is split
//! into 64 equal sub-buckets, so a bucket is at most 1/64 of its lower bound
//! wide: reporting a bucket's midpoint is within 0.8% of any value in it
//! (the "~2%" budget with room to spare). Recording is a `leading_zeros`, a
//! shift and an increment: no allocation, no branches on the hot path beyond
//! the small-value check. 3,776 counters cover the whole `u64` range.

/// Sub-buckets per power of two, as a number of bits.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets needed for every `u64`: exact values below `2 * SUB`, then
/// `SUB` buckets for each of the remaining exponents.
const BUCKETS: usize = ((64 - SUB_BITS as usize) << SUB_BITS) + SUB as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .field("min", &self.min())
            .field("max", &self.max)
            .finish()
    }
}

/// The bucket holding `v`.
fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    // The top SUB_BITS + 1 bits, in [SUB, 2 * SUB).
    let mantissa = (v >> shift) as usize;
    ((shift as usize + 1) << SUB_BITS) + mantissa - SUB as usize
}

/// The smallest and largest value of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < 2 * SUB as usize {
        return (i as u64, i as u64);
    }
    let shift = (i >> SUB_BITS) as u32 - 1;
    let mantissa = (i as u64 & (SUB - 1)) + SUB;
    let low = mantissa << shift;
    (low, low + ((1u64 << shift) - 1))
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn min(&self) -> u64 {
        if self.count == 0 { 0 } else { self.min }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at quantile `q` (0.0..=1.0): the midpoint of the bucket
    /// holding the `ceil(q * count)`-th smallest value, clamped to the exact
    /// minimum and maximum (which quantiles 0 and 1 return). Zero when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if q <= 0.0 {
            return self.min;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds(i);
                return (low + (high - low) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        *self = Histogram {
            counts: std::mem::take(&mut self.counts),
            ..Histogram::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..2 * SUB {
            assert_eq!(bounds(index(v)), (v, v));
        }
    }

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut expected_low = 0;
        for i in 0..BUCKETS {
            let (low, high) = bounds(i);
            assert_eq!(low, expected_low, "bucket {i}");
            assert!(high >= low);
            assert_eq!(index(low), i);
            assert_eq!(index(high), i);
            if high == u64::MAX {
                assert_eq!(i, BUCKETS - 1);
                return;
            }
            expected_low = high + 1;
        }
        panic!("buckets end before u64::MAX");
    }

    #[test]
    fn relative_error_is_below_one_percent() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let (low, high) = bounds(index(v));
            let mid = low + (high - low) / 2;
            let err = (mid as f64 - v as f64).abs() / v as f64;
            assert!(err <= 0.008, "{v}: bucket {low}..={high}, error {err}");
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn quantiles_of_a_uniform_distribution() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.min(), 1000);
        assert_eq!(h.max(), 100_000_000);
        for (q, want) in [(0.5, 50_000_000.0), (0.99, 99_000_000.0), (0.999, 99_900_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.quantile(0.0), 1000);
        assert!((h.mean() - 50_000_500.0).abs() < 1.0);
    }

    #[test]
    fn a_tail_shows_in_p99_but_not_p50() {
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(100_000);
        }
        for _ in 0..10 {
            h.record(50_000_000);
        }
        assert!((h.quantile(0.5) as f64 - 100_000.0).abs() < 1000.0);
        assert!((h.quantile(0.999) as f64 - 50_000_000.0).abs() < 500_000.0);
        // Exactly 99% are fast: p99 is still the fast bucket.
        assert!(h.quantile(0.99) < 110_000);
    }

    #[test]
    fn empty_merge_and_clear() {
        let mut a = Histogram::new();
        assert_eq!((a.quantile(0.5), a.min(), a.max(), a.mean()), (0, 0, 0, 0.0));
        let mut b = Histogram::new();
        a.record(10);
        b.record(1_000_000);
        b.record(u64::MAX);
        a.merge(&b);
        assert_eq!((a.count(), a.min(), a.max()), (3, 10, u64::MAX));
        a.clear();
        assert_eq!(a.count(), 0);
        a.record(7);
        assert_eq!(a.quantile(0.5), 7);
    }
}
