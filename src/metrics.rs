//! Request counters and a lock-free latency histogram, per pool and per instance.

use crate::spec::Cause;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two: quantiles are exact to within about 19%.
const SUB: u32 = 4;
/// Buckets cover 1 µs to about 2^40 µs (12 days).
const BUCKETS: usize = (40 * SUB) as usize;

/// A log-scale histogram of latencies in microseconds.
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
    max_us: AtomicU64,
    /// Sum of every recorded latency, microseconds (for the Prometheus `_sum`).
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// `2^63 · 2^(k/4)` for k = 1, 2, 3, rounded up: the quarter-power edges inside an
/// octave, for a mantissa shifted to the top bit.
const QUARTER_EDGES: [u64; 3] = [
    10_968_499_650_544_839_024,
    13_043_817_825_332_782_213,
    15_511_800_964_685_064_949,
];

/// `floor(log2(us) · SUB)`, in integers (exact at every edge, no floating point on the
/// request path).
fn bucket_of(us: u64) -> usize {
    let v = us.max(1);
    let octave = 63 - v.leading_zeros();
    let top = v << v.leading_zeros();
    let quarter = QUARTER_EDGES.iter().filter(|&&e| top >= e).count() as u32;
    ((octave * SUB + quarter) as usize).min(BUCKETS - 1)
}

fn bucket_upper(b: usize) -> u64 {
    2f64.powf((b + 1) as f64 / SUB as f64).ceil() as u64
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        // (A read first: most latencies are below the maximum, and a load is cheaper
        // than the compare-and-swap loop of `fetch_max`.)
        if us > self.max_us.load(Relaxed) {
            self.max_us.fetch_max(us, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
    }

    /// Cumulative counts at the upper bounds `2^k` µs for `k` in `ks` (each bound is a
    /// bucket edge, so the counts are exact), the total count and the sum in µs: what a
    /// Prometheus histogram shows.
    pub fn cumulative(&self, ks: impl Iterator<Item = u32>) -> (Vec<(u64, u64)>, u64, u64) {
        let counts = self.counts();
        let rows = ks
            .map(|k| {
                // Bucket b holds latencies below 2^((b + 1) / SUB) µs.
                let upto = ((k * SUB) as usize).min(BUCKETS);
                (1u64 << k, counts[..upto].iter().sum())
            })
            .collect();
        let total: u64 = counts.iter().sum();
        (rows, total, self.sum_us.load(Relaxed))
    }

    /// The bucket counts now, one load each (one consistent copy for a whole snapshot).
    fn counts(&self) -> Vec<u64> {
        self.buckets.iter().map(|b| b.load(Relaxed)).collect()
    }

    /// Count (the sum of the buckets: no counter of its own to bump on every request),
    /// quantiles and maximum, from one copy of the buckets.
    pub fn snapshot(&self) -> LatencySnapshot {
        let counts = self.counts();
        let max = self.max_us.load(Relaxed);
        let count = counts.iter().sum();
        LatencySnapshot {
            count,
            p50_us: quantile_of(&counts, 0.50, max),
            p90_us: quantile_of(&counts, 0.90, max),
            p99_us: quantile_of(&counts, 0.99, max),
            max_us: (count > 0).then_some(max),
        }
    }
}

/// The upper bound of the bucket of `counts` holding quantile `q` (0..=1), capped at
/// `max`; `None` when nothing was recorded.
fn quantile_of(counts: &[u64], q: f64, max: u64) -> Option<u64> {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((n as f64 * q).ceil() as u64).clamp(1, n);
    let mut seen = 0;
    for (b, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_upper(b).min(max));
        }
    }
    Some(max)
}

/// Latency quantiles of completed requests.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencySnapshot {
    /// Requests measured.
    pub count: u64,
    /// Median, microseconds.
    pub p50_us: Option<u64>,
    /// 90th percentile, microseconds.
    pub p90_us: Option<u64>,
    /// 99th percentile, microseconds.
    pub p99_us: Option<u64>,
    /// Slowest, microseconds.
    pub max_us: Option<u64>,
}

/// How a request ended, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Timeout,
}

impl Outcome {
    /// The outcome a request result counts as.
    pub fn of<T>(r: &crate::error::Result<T>) -> Outcome {
        match r {
            Ok(_) => Outcome::Ok,
            Err(e) if e.is_timeout() => Outcome::Timeout,
            Err(_) => Outcome::Error,
        }
    }
}

/// Request counters of a pool or of one instance index.
#[derive(Default)]
pub(crate) struct Metrics {
    pub ok: AtomicU64,
    pub error: AtomicU64,
    pub timeout: AtomicU64,
    pub fallback: AtomicU64,
    pub latency: Histogram,
    /// Fallbacks and retries, by cause (a pool's only).
    pub fallbacks: Causes,
    pub retries: Causes,
}

/// A counter per [`Cause`], in the order of [`Cause::ALL`].
#[derive(Debug, Default)]
pub(crate) struct Causes([AtomicU64; 6]);

impl Causes {
    /// Count one.
    pub fn count(&self, cause: Cause) {
        self.0[cause as usize].fetch_add(1, Relaxed);
    }

    /// Every cause by name, zeros included.
    pub fn by_name(&self) -> std::collections::BTreeMap<String, u64> {
        Cause::ALL
            .iter()
            .map(|&c| (c.name().to_string(), self.0[c as usize].load(Relaxed)))
            .collect()
    }
}

impl Metrics {
    /// A retry of a request that failed for `cause`.
    pub fn count_retry(&self, cause: Cause) {
        self.retries.count(cause);
    }

    /// A fallback of a request that failed for `cause`.
    pub fn count_fallback(&self, cause: Cause) {
        self.fallbacks.count(cause);
    }

    pub fn record(&self, outcome: Outcome, fallback: bool, took: Duration) {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Error => &self.error,
            Outcome::Timeout => &self.timeout,
        }
        .fetch_add(1, Relaxed);
        if fallback {
            self.fallback.fetch_add(1, Relaxed);
        }
        if outcome == Outcome::Ok {
            self.latency.record(took);
        }
    }

    pub fn requests_total(&self) -> u64 {
        self.ok.load(Relaxed) + self.error.load(Relaxed) + self.timeout.load(Relaxed)
    }
}

/// Request metrics of one instance index (all its incarnations).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceMetrics {
    /// Instance index.
    pub index: usize,
    /// Requests answered.
    pub requests_ok: u64,
    /// Requests that ended in an error (tool error, death, protocol error).
    pub requests_error: u64,
    /// Requests that timed out.
    pub requests_timeout: u64,
    /// Lines written to stdin.
    pub lines_in: u64,
    /// Lines read from stdout.
    pub lines_out: u64,
    /// Lines that broke the JSON-RPC framing.
    pub protocol_errors: u64,
    /// JSON-RPC replies that came after their request had timed out (dropped).
    pub late_replies_dropped: u64,
    /// Restarts.
    pub restarts: u64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Lines waiting in the stdin queue.
    pub stdin_queue: usize,
    /// Reply latency.
    pub latency: LatencySnapshot,
    /// Resident memory of the current process group in bytes (`None`: not running).
    pub rss_bytes: Option<u64>,
    /// CPU time (user + system) of the current process group in seconds.
    pub cpu_seconds: Option<f64>,
    /// Recycles, all incarnations (every reason).
    pub recycles: u64,
}

/// Request metrics of a pool: totals and per instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// Tool id.
    pub tool: String,
    /// Requests answered (by the pool or the fallback).
    pub requests_ok: u64,
    /// Requests that ended in an error.
    pub requests_error: u64,
    /// Requests that timed out.
    pub requests_timeout: u64,
    /// Requests served by a one-shot run (also counted in ok/error/timeout).
    pub requests_fallback: u64,
    /// Requests sent to the one-shot run after a pooled failure, by cause (`fallback`).
    pub fallbacks: std::collections::BTreeMap<String, u64>,
    /// Pooled runs after the first, by the cause of the failure before (`retry`).
    pub retries: std::collections::BTreeMap<String, u64>,
    /// Lines written to stdin, all instances.
    pub lines_in: u64,
    /// Lines read from stdout, all instances.
    pub lines_out: u64,
    /// Protocol errors, all instances.
    pub protocol_errors: u64,
    /// Late JSON-RPC replies dropped, all instances.
    pub late_replies_dropped: u64,
    /// Restarts, all instances.
    pub restarts: u64,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Callers waiting for a free instance now.
    pub queue_depth: usize,
    /// Times a request had to wait for a free instance.
    pub waited_for_instance: u64,
    /// Instances started because every started one was busy and a caller would have
    /// waited (elastic growth; a lazy pool's first starts count too).
    pub grow_events: u64,
    /// Instances stopped because they were idle longer than `idle_timeout_ms`.
    pub shrink_events: u64,
    /// Reply latency of the whole pool.
    pub latency: LatencySnapshot,
    /// Resident memory of every running instance's process group, bytes.
    pub rss_bytes: u64,
    /// Recycles by reason (`requests`, `age`, `memory`, `memory_budget`, `timeout`).
    pub recycles: std::collections::BTreeMap<String, u64>,
    /// Per instance.
    pub instances: Vec<InstanceMetrics>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_follow_the_data() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let snap = h.snapshot();
        let p50 = snap.p50_us.unwrap();
        let p99 = snap.p99_us.unwrap();
        assert!((420..=620).contains(&p50), "p50 {p50}");
        assert!((900..=1000).contains(&p99), "p99 {p99}");
        assert_eq!(snap.max_us, Some(1000));
        assert_eq!(Histogram::default().snapshot().p50_us, None);
    }

    #[test]
    fn integer_buckets_match_the_log_scale() {
        // Every value up to 2^20 µs, and around every power of two and quarter edge
        // above: the integer bucket is floor(log2(us) * SUB), as computed in f64 where
        // f64 is exact enough to tell (away from an edge by more than its rounding).
        let mut values: Vec<u64> = (0..=1 << 20).collect();
        for e in 20..40u32 {
            for k in 0..SUB {
                let edge = 2f64.powf(e as f64 + k as f64 / SUB as f64);
                let at = edge as u64;
                values.extend(at.saturating_sub(2)..=at + 2);
            }
        }
        for us in values {
            let exact = (us.max(1) as f64).log2() * SUB as f64;
            let want = (exact as usize).min(BUCKETS - 1);
            if (exact - exact.round()).abs() > 1e-9 || exact.fract() == 0.0 {
                assert_eq!(bucket_of(us), want, "{us} µs");
            } else {
                // Within f64 rounding of an edge: one of the two buckets beside it.
                assert!(
                    bucket_of(us).abs_diff(exact.round() as usize) <= 1,
                    "{us} µs"
                );
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }
}

/// Why an incarnation was recycled (replaced while it worked), for the counters and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecycleReason {
    /// `max_requests` reached.
    Requests,
    /// `max_lifetime_ms` reached.
    Age,
    /// Its process group grew past `limits.max_rss_mb`.
    Memory,
    /// The pool was over `limits.memory_budget_mb` and it was the largest idle instance.
    MemoryBudget,
    /// A request timed out and the reply could still come (`lines`, `marker`): killed.
    Timeout,
}

impl RecycleReason {
    /// Every reason, in the order of [`Recycles`]. (A function, not an associated
    /// constant: cbindgen would take the constant for part of the C API.)
    pub fn all() -> [RecycleReason; 5] {
        [
            RecycleReason::Requests,
            RecycleReason::Age,
            RecycleReason::Memory,
            RecycleReason::MemoryBudget,
            RecycleReason::Timeout,
        ]
    }

    /// The label value (`reason` in logs and metrics).
    pub fn name(self) -> &'static str {
        match self {
            RecycleReason::Requests => "requests",
            RecycleReason::Age => "age",
            RecycleReason::Memory => "memory",
            RecycleReason::MemoryBudget => "memory_budget",
            RecycleReason::Timeout => "timeout",
        }
    }
}

/// Recycles of one instance, by reason.
#[derive(Debug, Default)]
pub(crate) struct Recycles([AtomicU64; 5]);

impl Recycles {
    /// Count one.
    pub fn count(&self, why: RecycleReason) {
        self.0[why as usize].fetch_add(1, Relaxed);
    }

    /// How many for `why`.
    pub fn get(&self, why: RecycleReason) -> u64 {
        self.0[why as usize].load(Relaxed)
    }
}

/// Counters of one incarnation.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub lines_sent: AtomicU64,
    pub lines_received: AtomicU64,
    pub stderr_lines: AtomicU64,
    pub lines_split: AtomicU64,
    pub stderr_dropped: AtomicU64,
    pub startup_lines: AtomicU64,
    pub stdin_dropped: AtomicU64,
    /// Lines found in the stdout queue before a `lines`/`marker` request (dropped).
    pub unsolicited: AtomicU64,
    /// Lines passed on by the JSON-RPC filter (notifications) dropped from a full queue.
    pub stdout_dropped: AtomicU64,
}
