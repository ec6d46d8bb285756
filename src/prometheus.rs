//! Prometheus text exposition (format 0.0.4) of one pool or of every live pool, and the
//! list of live pools it reads (owned here: pools register when they are made and drop
//! out when they are shut down or freed).
//!
//! Every family is one row of [`POOL_FAMILIES`] (name, type, help, and how one pool's
//! samples are read off its snapshots) or of the limiter's two; the text is written by one
//! loop, so each family has one `# HELP` and one `# TYPE`, families keep a fixed order
//! and label values are escaped. The latency histogram's log-scale buckets have edges at
//! every power of two microseconds, so the `le` bounds shown (powers of four from 16 µs)
//! give exact cumulative counts. Every family and its labels are listed in
//! docs/observability.md; `bindings/python/tests/test_docs.py` keeps that table equal to
//! this output.

use crate::incarnation::State;
use crate::lifecycle::PoolCore;
use crate::limiter::{Limiter, LimiterStatus};
use crate::metrics::{MetricsSnapshot, RecycleReason};
use crate::snapshot::{self, PoolStatus};
use parking_lot::Mutex;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

/// The histogram's `le` bounds: 2^k µs for these k (16 µs ... about 4.8 hours).
const LE_POWERS: std::ops::RangeInclusive<u32> = 2..=17;

/// A live pool and its `pool` label, fixed when it registered.
struct Entry {
    pool: Weak<PoolCore>,
    label: Option<String>,
}

static LIVE: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
/// Pools registered so far in the process: the `pool` label of a pool that shares its
/// tool id is its number here (never reused).
static REGISTERED: AtomicU64 = AtomicU64::new(0);

/// Remember a new pool for [`render_all`]. A pool whose tool id an unlabelled live pool
/// already has gets a `pool` label, its registration number, which it keeps for life: so
/// every series stays unique, and a label never changes as other pools come and go.
pub(crate) fn register(core: &Arc<PoolCore>) {
    let n = REGISTERED.fetch_add(1, Relaxed) + 1;
    let mut live = LIVE.lock();
    live.retain(|e| e.pool.strong_count() > 0);
    let taken = live
        .iter()
        .any(|e| e.label.is_none() && e.pool.upgrade().is_some_and(|p| p.spec.id == core.spec.id));
    live.push(Entry {
        pool: Arc::downgrade(core),
        label: taken.then(|| n.to_string()),
    });
}

/// Every pool that is neither shut down nor freed, in the order they were made, with its
/// `pool` label.
fn live_pools() -> Vec<(Arc<PoolCore>, Option<String>)> {
    let mut live = LIVE.lock();
    live.retain(|e| e.pool.strong_count() > 0);
    live.iter()
        .filter_map(|e| Some((e.pool.upgrade()?, e.label.clone())))
        .filter(|(p, _)| !p.is_shut_down())
        .collect()
}

/// The `pool` label of `core`, if it has one.
fn label_of(core: &Arc<PoolCore>) -> Option<String> {
    LIVE.lock()
        .iter()
        .find(|e| std::ptr::eq(e.pool.as_ptr(), Arc::as_ptr(core)))
        .and_then(|e| e.label.clone())
}

/// The exposition of one pool (with its `pool` label, if it has one) and its limiter.
pub(crate) fn render_one(core: &Arc<PoolCore>) -> String {
    render(&[(Arc::clone(core), label_of(core))], &core.limiter)
}

/// The exposition of some pools (a `Pools`), with the global limiter.
pub(crate) fn render_some(cores: &[Arc<PoolCore>]) -> String {
    let pools: Vec<_> = cores.iter().map(|c| (Arc::clone(c), label_of(c))).collect();
    render(&pools, Limiter::global())
}

/// The exposition of every live pool (and the global limiter).
pub(crate) fn render_all() -> String {
    render(&live_pools(), Limiter::global())
}

/// One pool's data, read once.
struct Row {
    /// `tool="..."` and, if it has one, `,pool="..."`.
    labels: String,
    status: PoolStatus,
    metrics: MetricsSnapshot,
    histogram: (Vec<(u64, u64)>, u64, u64),
}

/// One sample: the name's suffix (`_bucket`, `_sum`, ... or empty), its labels beyond the
/// pool's, and the value as written.
type Sample = (&'static str, Vec<(&'static str, String)>, String);

/// One family: name, type, help, and the samples of one pool.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Row) -> Vec<Sample>,
);

/// A sample with no labels beyond the pool's.
fn one(v: impl ToString) -> Vec<Sample> {
    vec![("", vec![], v.to_string())]
}

/// One sample per `(label value, value)`, under label `key`.
fn by<V: ToString>(
    key: &'static str,
    values: impl IntoIterator<Item = (String, V)>,
) -> Vec<Sample> {
    values
        .into_iter()
        .map(|(k, v)| ("", vec![(key, k)], v.to_string()))
        .collect()
}

/// The per-pool families, in the order they are written.
const POOL_FAMILIES: &[Family] = &[
    (
        "toolpool_requests_total",
        "counter",
        "Requests that ended, by outcome (ok, error, timeout).",
        |r| {
            let m = &r.metrics;
            let rows = [("ok", m.requests_ok), ("error", m.requests_error), ("timeout", m.requests_timeout)];
            by("outcome", rows.map(|(k, v)| (k.to_string(), v)))
        },
    ),
    (
        "toolpool_requests_fallback_total",
        "counter",
        "Requests served by the one-shot fallback (also in toolpool_requests_total).",
        |r| one(r.metrics.requests_fallback),
    ),
    (
        "toolpool_fallbacks_total",
        "counter",
        "Requests sent to the one-shot run after a pooled failure, by cause (dead, timeout, invalid_reply, unavailable, spawn_failed, tool_error).",
        |r| by("cause", r.metrics.fallbacks.clone()),
    ),
    (
        "toolpool_retries_total",
        "counter",
        "Pooled runs after the first, by the cause of the failure before.",
        |r| by("cause", r.metrics.retries.clone()),
    ),
    (
        "toolpool_request_duration_seconds",
        "histogram",
        "Duration of successful requests, in seconds.",
        |r| {
            let (buckets, count, sum_us) = &r.histogram;
            let mut out: Vec<Sample> = buckets
                .iter()
                .map(|(le_us, n)| ("_bucket", vec![("le", float(*le_us as f64 / 1e6))], n.to_string()))
                .collect();
            out.push(("_bucket", vec![("le", "+Inf".into())], count.to_string()));
            out.push(("_sum", vec![], float(*sum_us as f64 / 1e6)));
            out.push(("_count", vec![], count.to_string()));
            out
        },
    ),
    (
        "toolpool_requests_in_flight",
        "gauge",
        "Requests in flight now.",
        |r| one(r.metrics.in_flight),
    ),
    (
        "toolpool_requests_waiting",
        "gauge",
        "Callers waiting for a free instance now.",
        |r| one(r.metrics.queue_depth),
    ),
    (
        "toolpool_instances",
        "gauge",
        "Instances by state (starting, ready, dead, stopped, failed).",
        |r| {
            let states = [
                ("starting", State::Starting),
                ("ready", State::Ready),
                ("dead", State::Dead),
                ("stopped", State::Stopped),
                ("failed", State::Failed),
            ];
            let count = |s| r.status.instances.iter().filter(|i| i.state == s).count();
            by("state", states.map(|(k, s)| (k.to_string(), count(s))))
        },
    ),
    (
        "toolpool_restarts_total",
        "counter",
        "Restarts of instances (by restart(), the restart policy, probes, recycling).",
        |r| one(r.metrics.restarts),
    ),
    (
        "toolpool_grow_events_total",
        "counter",
        "Instances an elastic pool started because every started one was busy.",
        |r| one(r.metrics.grow_events),
    ),
    (
        "toolpool_shrink_events_total",
        "counter",
        "Instances an elastic pool stopped after idle_timeout_ms (down to min_instances).",
        |r| one(r.metrics.shrink_events),
    ),
    (
        "toolpool_recycles_total",
        "counter",
        "Instances replaced while working, by reason (requests, age, memory, memory_budget, timeout).",
        |r| {
            let n = |why: RecycleReason| r.metrics.recycles.get(why.name()).copied().unwrap_or(0);
            by("reason", RecycleReason::all().map(|why| (why.name().to_string(), n(why))))
        },
    ),
    (
        "toolpool_protocol_errors_total",
        "counter",
        "Output lines that broke the JSON-RPC framing.",
        |r| one(r.metrics.protocol_errors),
    ),
    (
        "toolpool_late_replies_dropped_total",
        "counter",
        "JSON-RPC replies that came after their request had timed out (dropped).",
        |r| one(r.metrics.late_replies_dropped),
    ),
    (
        "toolpool_rss_bytes",
        "gauge",
        "Resident memory of every running instance's process group, in bytes.",
        |r| one(r.metrics.rss_bytes),
    ),
    (
        "toolpool_instance_rss_bytes",
        "gauge",
        "Resident memory of one running instance's process group, in bytes.",
        |r| by("instance", r.status.instances.iter().filter_map(|i| Some((i.index.to_string(), i.rss_bytes?)))),
    ),
    (
        "toolpool_instance_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of one running instance's process group, in seconds; starts again from 0 when the instance restarts.",
        |r| by("instance", r.status.instances.iter().filter_map(|i| Some((i.index.to_string(), float(i.cpu_seconds?))))),
    ),
];

/// A family of the limiter (no labels): name, type, help, its one value.
type LimiterFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&LimiterStatus) -> usize,
);

/// The limiter's families.
const LIMITER_FAMILIES: &[LimiterFamily] = &[
    (
        "toolpool_process_limit",
        "gauge",
        "The limit on concurrent tool processes (0: none).",
        |s| s.max_allowed,
    ),
    (
        "toolpool_processes_active",
        "gauge",
        "Tool processes running under the limit (and starts in progress).",
        |s| s.active_processes,
    ),
];

fn render(pools: &[(Arc<PoolCore>, Option<String>)], limiter: &Limiter) -> String {
    let rows: Vec<Row> = pools
        .iter()
        .map(|(p, label)| {
            let mut labels = format!("tool=\"{}\"", escape(&p.spec.id));
            if let Some(n) = label {
                let _ = write!(labels, ",pool=\"{}\"", escape(n));
            }
            Row {
                labels,
                status: snapshot::status(p),
                metrics: snapshot::metrics(p),
                histogram: p.metrics.latency.cumulative(LE_POWERS.map(|k| 2 * k)),
            }
        })
        .collect();
    let mut out = String::new();
    for (name, kind, help, samples) in POOL_FAMILIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &rows {
            for (suffix, extra, value) in samples(r) {
                let _ = writeln!(out, "{name}{suffix}{} {value}", labels(&r.labels, &extra));
            }
        }
    }
    let st = limiter.status();
    for (name, kind, help, value) in LIMITER_FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
            value(&st)
        );
    }
    out
}

/// `{base` plus the `extra` label pairs, `}`.
fn labels(base: &str, extra: &[(&str, String)]) -> String {
    let mut s = String::from("{");
    s.push_str(base);
    for (k, v) in extra {
        if s.len() > 1 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"{}\"", escape(v));
    }
    s.push('}');
    s
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float as Prometheus writes it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            labels("tool=\"x\"", &[("le", "+Inf".into())]),
            "{tool=\"x\",le=\"+Inf\"}"
        );
        assert_eq!(labels("", &[("a", "1".into())]), "{a=\"1\"}");
        assert_eq!(float(0.000016), "0.000016");
    }
}
