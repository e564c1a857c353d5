//! Latency histogram with fixed memory and ~1.6% relative precision.
//!
//! A run can produce tens of millions of samples; storing them to sort for
//! p99.9 would cost hundreds of MB and a long pause at the end. This
//! log-linear layout (64 linear sub-buckets per power of two, exact below
//! 128 ns) keeps a few thousand counters and records in O(1).

const EXACT: u64 = 128;
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Exponents 7..=63 each get `SUB` sub-buckets above the exact range.
const BUCKETS: usize = EXACT as usize + (64 - 7) * SUB;

/// Counts of nanosecond values.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 7
    let sub = ((v >> (e - SUB_BITS)) as usize) & (SUB - 1);
    EXACT as usize + (e as usize - 7) * SUB + sub
}

/// Midpoint of a bucket, the value reported for samples that fell in it.
fn value_of(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let e = (j / SUB) as u32 + 7;
    let sub = (j % SUB) as u64;
    let shift = e - SUB_BITS;
    let low = (SUB as u64 + sub) << shift;
    low + ((1u64 << shift) >> 1)
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
            sum: 0,
        }
    }

    /// Records one value in nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.counts[index(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
        self.sum += u128::from(ns);
    }

    /// Adds the values of `other` (histograms kept per thread, reported as one).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// Value at quantile `q` (0..=1), in nanoseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return value_of(i).min(self.max);
            }
        }
        self.max
    }

    /// p50, p99, p99.9, mean and max in microseconds, as a JSON object.
    pub fn summary_us(&self) -> serde_json::Value {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        let mean = if self.total == 0 {
            0.0
        } else {
            (self.sum / u128::from(self.total)) as u64 as f64
        };
        serde_json::json!({
            "count": self.total,
            "p50": us(self.quantile(0.50)),
            "p99": us(self.quantile(0.99)),
            "p999": us(self.quantile(0.999)),
            "mean": us(mean as u64),
            "max": us(self.max),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_below_128() {
        let mut h = Histogram::new();
        for v in 0..100 {
            h.record(v);
        }
        assert_eq!(h.quantile(0.5), 49);
        assert_eq!(h.quantile(1.0), 99);
    }

    #[test]
    fn relative_error_is_small() {
        for v in [128u64, 1000, 55_555, 1_234_567, 9_876_543_210] {
            let got = value_of(index(v));
            let err = (got as f64 - v as f64).abs() / v as f64;
            assert!(err < 0.02, "{v} -> {got}");
        }
    }

    #[test]
    fn quantiles_of_uniform() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 99_000_000.0).abs() / 99_000_000.0 < 0.02);
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Histogram::new().quantile(0.99), 0);
    }
}
