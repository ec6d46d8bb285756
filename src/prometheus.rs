//! Prometheus text exposition (format 0.0.4) of one pool or of every live pool, and the
//! list of live pools it reads (owned here: pools register when they are made and drop
//! out when they are shut down or freed).
//!
//! Built from the snapshots ([`crate::snapshot`]) and the pool's latency histogram, whose
//! log-scale buckets have edges at every power of two microseconds, so the `le` bounds
//! shown (powers of four from 16 µs) give exact cumulative counts. One `# HELP` and
//! `# TYPE` per family, families in a fixed order, label values escaped. Every family and
//! its labels are listed in docs/observability.md; `bindings/python/tests/test_docs.py`
//! keeps that table equal to this output.

use crate::incarnation::State;
use crate::lifecycle::PoolCore;
use crate::limiter::Limiter;
use crate::metrics::RecycleReason;
use crate::snapshot;
use parking_lot::Mutex;
use std::fmt::Write;
use std::sync::{Arc, Weak};

/// The histogram's `le` bounds: 2^k µs for these k (16 µs ... about 4.8 hours).
const LE_POWERS: std::ops::RangeInclusive<u32> = 2..=17;

static LIVE: Mutex<Vec<Weak<PoolCore>>> = Mutex::new(Vec::new());

/// Remember a new pool for [`render_all`].
pub(crate) fn register(core: &Arc<PoolCore>) {
    let mut live = LIVE.lock();
    live.retain(|w| w.strong_count() > 0);
    live.push(Arc::downgrade(core));
}

/// Every pool that is neither shut down nor freed, in the order they were made.
fn live_pools() -> Vec<Arc<PoolCore>> {
    let mut live = LIVE.lock();
    live.retain(|w| w.strong_count() > 0);
    live.iter()
        .filter_map(Weak::upgrade)
        .filter(|p| !p.is_shut_down())
        .collect()
}

/// The exposition of one pool (and its limiter).
pub(crate) fn render_one(core: &Arc<PoolCore>) -> String {
    render(&[(Arc::clone(core), None)], &core.limiter)
}

/// The exposition of every live pool (and the global limiter). Pools that share a tool id
/// get a `pool` label (`2`, `3`, ... in the order they were made) after the first, so
/// every series stays unique.
pub(crate) fn render_all() -> String {
    let pools = live_pools();
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let labelled: Vec<(Arc<PoolCore>, Option<String>)> = pools
        .into_iter()
        .map(|p| {
            let n = seen.entry(p.spec.id.clone()).or_insert(0);
            *n += 1;
            let extra = (*n > 1).then(|| n.to_string());
            (p, extra)
        })
        .collect();
    render(&labelled, Limiter::global())
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

/// One pool's data, read once.
struct Row {
    labels: String,
    status: snapshot::PoolStatus,
    metrics: crate::metrics::MetricsSnapshot,
    histogram: (Vec<(u64, u64)>, u64, u64),
}

/// `{tool="..",pool=".."` plus `extra` label pairs and `}`.
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

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name}{labels} {value}");
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

/// A family with one sample per pool, `value` of its row.
fn per_pool<V: std::fmt::Display>(
    out: &mut String,
    rows: &[Row],
    (name, kind, help): (&str, &str, &str),
    value: impl Fn(&Row) -> V,
) {
    family(out, name, kind, help);
    for r in rows {
        sample(out, name, &labels(&r.labels, &[]), value(r));
    }
}

fn render(pools: &[(Arc<PoolCore>, Option<String>)], limiter: &Limiter) -> String {
    let rows: Vec<Row> = pools
        .iter()
        .map(|(p, extra)| {
            let mut base = format!("tool=\"{}\"", escape(&p.spec.id));
            if let Some(n) = extra {
                let _ = write!(base, ",pool=\"{}\"", escape(n));
            }
            Row {
                labels: base,
                status: snapshot::status(p),
                metrics: snapshot::metrics(p),
                histogram: p.metrics.latency.cumulative(LE_POWERS.map(|k| 2 * k)),
            }
        })
        .collect();
    let mut out = String::new();

    family(
        &mut out,
        "toolpool_requests_total",
        "counter",
        "Requests that ended, by outcome (ok, error, timeout).",
    );
    for r in &rows {
        let m = &r.metrics;
        for (outcome, n) in [
            ("ok", m.requests_ok),
            ("error", m.requests_error),
            ("timeout", m.requests_timeout),
        ] {
            let l = labels(&r.labels, &[("outcome", outcome.into())]);
            sample(&mut out, "toolpool_requests_total", &l, n);
        }
    }
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_requests_fallback_total",
            "counter",
            "Requests served by the one-shot fallback (also in toolpool_requests_total).",
        ),
        |r| r.metrics.requests_fallback,
    );
    family(
        &mut out,
        "toolpool_request_duration_seconds",
        "histogram",
        "Duration of successful requests, in seconds.",
    );
    for r in &rows {
        let (buckets, count, sum_us) = &r.histogram;
        for (le_us, n) in buckets {
            let le = float(*le_us as f64 / 1e6);
            let l = labels(&r.labels, &[("le", le)]);
            sample(&mut out, "toolpool_request_duration_seconds_bucket", &l, n);
        }
        let l = labels(&r.labels, &[("le", "+Inf".into())]);
        sample(
            &mut out,
            "toolpool_request_duration_seconds_bucket",
            &l,
            count,
        );
        let l = labels(&r.labels, &[]);
        sample(
            &mut out,
            "toolpool_request_duration_seconds_sum",
            &l,
            float(*sum_us as f64 / 1e6),
        );
        sample(
            &mut out,
            "toolpool_request_duration_seconds_count",
            &l,
            count,
        );
    }
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_requests_in_flight",
            "gauge",
            "Requests in flight now.",
        ),
        |r| r.metrics.in_flight,
    );
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_requests_waiting",
            "gauge",
            "Callers waiting for a free instance now.",
        ),
        |r| r.metrics.queue_depth,
    );
    family(
        &mut out,
        "toolpool_instances",
        "gauge",
        "Instances by state (starting, ready, dead, stopped, failed).",
    );
    for r in &rows {
        for (name, state) in [
            ("starting", State::Starting),
            ("ready", State::Ready),
            ("dead", State::Dead),
            ("stopped", State::Stopped),
            ("failed", State::Failed),
        ] {
            let n = r
                .status
                .instances
                .iter()
                .filter(|i| i.state == state)
                .count();
            let l = labels(&r.labels, &[("state", name.into())]);
            sample(&mut out, "toolpool_instances", &l, n);
        }
    }
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_restarts_total",
            "counter",
            "Restarts of instances (by restart(), the restart policy, probes, recycling).",
        ),
        |r| r.metrics.restarts,
    );
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_grow_events_total",
            "counter",
            "Instances an elastic pool started because every started one was busy.",
        ),
        |r| r.metrics.grow_events,
    );
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_shrink_events_total",
            "counter",
            "Instances an elastic pool stopped after idle_timeout_ms (down to min_instances).",
        ),
        |r| r.metrics.shrink_events,
    );
    family(
        &mut out,
        "toolpool_recycles_total",
        "counter",
        "Instances replaced while working, by reason (requests, age, memory, memory_budget, timeout).",
    );
    for r in &rows {
        for why in RecycleReason::ALL {
            let n = r.metrics.recycles.get(why.name()).copied().unwrap_or(0);
            let l = labels(&r.labels, &[("reason", why.name().into())]);
            sample(&mut out, "toolpool_recycles_total", &l, n);
        }
    }
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_protocol_errors_total",
            "counter",
            "Output lines that broke the JSON-RPC framing.",
        ),
        |r| r.metrics.protocol_errors,
    );
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_late_replies_dropped_total",
            "counter",
            "JSON-RPC replies that came after their request had timed out (dropped).",
        ),
        |r| r.metrics.late_replies_dropped,
    );
    per_pool(
        &mut out,
        &rows,
        (
            "toolpool_rss_bytes",
            "gauge",
            "Resident memory of every running instance's process group, in bytes.",
        ),
        |r| r.metrics.rss_bytes,
    );
    family(
        &mut out,
        "toolpool_instance_rss_bytes",
        "gauge",
        "Resident memory of one running instance's process group, in bytes.",
    );
    for r in &rows {
        for i in &r.status.instances {
            if let Some(b) = i.rss_bytes {
                let l = labels(&r.labels, &[("instance", i.index.to_string())]);
                sample(&mut out, "toolpool_instance_rss_bytes", &l, b);
            }
        }
    }
    family(
        &mut out,
        "toolpool_instance_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of one running instance's process group, in seconds; starts again from 0 when the instance restarts.",
    );
    for r in &rows {
        for i in &r.status.instances {
            if let Some(c) = i.cpu_seconds {
                let l = labels(&r.labels, &[("instance", i.index.to_string())]);
                sample(
                    &mut out,
                    "toolpool_instance_cpu_seconds_total",
                    &l,
                    float(c),
                );
            }
        }
    }
    let st = limiter.status();
    family(
        &mut out,
        "toolpool_process_limit",
        "gauge",
        "The limit on concurrent tool processes (0: none).",
    );
    sample(&mut out, "toolpool_process_limit", "", st.max_allowed);
    family(
        &mut out,
        "toolpool_processes_active",
        "gauge",
        "Tool processes running under the limit (and starts in progress).",
    );
    sample(
        &mut out,
        "toolpool_processes_active",
        "",
        st.active_processes,
    );
    out
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
