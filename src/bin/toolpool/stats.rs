//! Latency quantiles in fixed memory (for an endless run), and number formatting.

use std::time::Duration;

/// Sub-buckets per power of two: quantiles within about 1.5%.
const SUB: usize = 64;
/// Powers of two of microseconds covered (up to about 2^40 µs = 12 days).
const POWERS: usize = 41;

/// A log-bucketed histogram of durations in microseconds.
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; SUB * POWERS],
            count: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn bucket(us: u64) -> usize {
        if us < SUB as u64 {
            return us as usize;
        }
        let p = 63 - us.leading_zeros() as usize; // us >= 2^p, p >= 6
        let shift = p - 6;
        let sub = ((us >> shift) as usize) - SUB; // 0..SUB
        let idx = (p - 5) * SUB + sub;
        idx.min(SUB * POWERS - 1)
    }

    /// The lower bound (µs) of bucket `idx`, the inverse of `bucket`.
    fn lower(idx: usize) -> u64 {
        if idx < SUB {
            return idx as u64;
        }
        let p = idx / SUB + 5;
        let sub = (idx % SUB) as u64;
        (SUB as u64 + sub) << (p - 6)
    }

    /// Count one duration.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[Self::bucket(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Add the counts of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The `q` quantile (0..=1) in milliseconds, or None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let us = Self::lower(i).min(self.max_us);
                return Some(us as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }
}

/// Milliseconds with a precision that suits the size: 0.213, 9.41, 123.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{v:.3}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A rate, without false precision.
pub fn rate(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 5.0).abs() < 0.1, "{p50}");
        assert!((p99 - 9.9).abs() < 0.2, "{p99}");
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
        for us in [0u64, 1, 63, 64, 65, 127, 128, 1000, 123_456_789] {
            let b = Histogram::bucket(us);
            assert!(Histogram::lower(b) <= us, "{us}");
            assert!(
                b + 1 >= SUB * POWERS || Histogram::lower(b + 1) > us,
                "{us}"
            );
        }
    }
}
