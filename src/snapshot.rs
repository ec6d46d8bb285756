//! Snapshots of a pool for people and programs: [`PoolStatus`] (per instance: state,
//! pid, counters, in flight, stderr tail), [`Health`] (counts by state) and
//! [`MetricsSnapshot`] (request outcomes and latency). Assembled from the owners of each
//! piece (instances, their incarnations, admission, metrics) without changing anything
//! but taking in pending stdout.

use crate::admission::Counts;
use crate::error::ExitInfo;
use crate::incarnation::State;
use crate::lifecycle::PoolCore;
use crate::metrics::{InstanceMetrics, MetricsSnapshot, RecycleReason};
use crate::sizing;
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

/// Status of one instance index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// Instance index.
    pub index: usize,
    /// Pid (= process group id) of the current process.
    pub pid: Option<i32>,
    /// Life-cycle state.
    pub state: State,
    /// How the last process at this index ended.
    pub exit: Option<ExitInfo>,
    /// Why the supervisor marked it failed.
    pub failed_reason: Option<String>,
    /// Restarts so far (by `restart`, the supervisor or recycling).
    pub restarts: u64,
    /// Lines written to its stdin (all incarnations).
    pub lines_sent: u64,
    /// Lines read from its stdout (all incarnations).
    pub lines_received: u64,
    /// Over-long lines cut into pieces.
    pub lines_split: u64,
    /// Lines read from stderr.
    pub stderr_lines: u64,
    /// stderr lines dropped because nobody read them (the tail still has the last ones).
    pub stderr_dropped: u64,
    /// Lines queued for stdin that could not be written (the child had died).
    pub stdin_dropped: u64,
    /// JSON-RPC notifications dropped because the stdout queue was full.
    pub stdout_dropped: u64,
    /// Lines nobody asked for, dropped before a `lines`/`marker` request.
    pub unsolicited: u64,
    /// Milliseconds since the current process started.
    pub uptime_ms: Option<u64>,
    /// Requests in flight now.
    pub in_flight: usize,
    /// Whether a lease holds it.
    pub leased: bool,
    /// Milliseconds the oldest request in flight has been running.
    pub current_request_age_ms: Option<u64>,
    /// Requests served by this index (all incarnations).
    pub requests: u64,
    /// Last health probe: milliseconds since, and its latency.
    pub last_probe_ago_ms: Option<u64>,
    /// Latency of the last health probe in microseconds.
    pub last_probe_us: Option<u64>,
    /// The last stderr lines.
    pub stderr_tail: Vec<String>,
    /// The last lines that broke the JSON-RPC framing.
    pub protocol_errors_tail: Vec<String>,
    /// The current incarnation's reply to its first `startup.handshake` request (for MCP
    /// and LSP: the server's capabilities and info); absent without a handshake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_reply: Option<serde_json::Value>,
    /// Requests from the tool answered by toolpool (`client_replies` or "method not
    /// found"), current incarnation.
    pub client_requests: u64,
    /// The host it runs on (`remote` pools; `None` for a local pool).
    pub host: Option<String>,
    /// Why its last start failed (`remote` pools): the host and the launcher's message.
    /// Cleared by the next start that reaches the host.
    pub host_error: Option<String>,
    /// The Slurm job step (`JOB.STEP`) of its latest start (`srun` pools), once toolpool
    /// has learned it from `squeue` (shortly after the step starts).
    pub step_id: Option<String>,
    /// Resident memory of the current process group (the process and every descendant
    /// still in its group), bytes, read from `/proc` now; `None` when not running.
    pub rss_bytes: Option<u64>,
    /// CPU time (user + system, reaped children included) of the current process group,
    /// seconds; `None` when not running.
    pub cpu_seconds: Option<f64>,
    /// Recycles (replaced while working: requests, age, memory, timeout), all incarnations.
    pub recycles: u64,
}

/// Instances of one host by state (`remote` pools).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The host, as named in `remote.hosts`.
    pub host: String,
    /// Instances placed on it.
    pub instances: usize,
    /// Ready for work.
    pub ready: usize,
    /// Started, waiting for the ready line.
    pub starting: usize,
    /// Dead (ended, or could not start) and not failed.
    pub dead: usize,
    /// Stopped on purpose or not started yet.
    pub stopped: usize,
    /// Failed (restart cap reached).
    pub failed: usize,
}

/// Status of the whole pool.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PoolStatus {
    /// Tool id.
    pub tool: String,
    /// True after `shutdown`.
    pub shut_down: bool,
    /// True when requests are served by `oneshot` only.
    pub disabled: bool,
    /// True when no process runs: canned replies stand in for the tool (`dry_run`).
    pub dry_run: bool,
    /// The argv the pool runs (in a dry run: would run).
    pub command: Vec<String>,
    /// How many times a request had to wait for a free instance.
    pub waited_for_instance: u64,
    /// Callers waiting for a free instance now.
    pub waiting: usize,
    /// Instances with a process now (starting or ready).
    pub started: usize,
    /// The most instances it may run: its `count` (what [`crate::Pool::resize`] changes).
    pub max_instances: usize,
    /// The fewest it keeps started: `min_instances`, or `count` when the spec has none.
    pub min_instances: usize,
    /// The spec's `shutdown.grace_ms`: what a shutdown without a grace of its own waits
    /// (freeing or dropping the pool; Python's `shutdown()`).
    pub shutdown_grace_ms: u64,
    /// Requests sent to the one-shot run after a pooled failure, by cause (`fallback`).
    pub fallbacks: std::collections::BTreeMap<String, u64>,
    /// Pooled runs after the first, by the cause of the failure before (`retry`).
    pub retries: std::collections::BTreeMap<String, u64>,
    /// Per instance.
    pub instances: Vec<InstanceStatus>,
    /// Instances by host and state, in the order of `remote.hosts` (empty for a local pool).
    pub hosts: Vec<HostStatus>,
    /// For a pool of a `toolpool serve` service: why the service could not report this
    /// status (it is gone, or refused); then every other field is empty. `None` otherwise.
    pub service_error: Option<String>,
}

impl PoolStatus {
    /// The status of a service's pool the service could not report, saying why.
    pub(crate) fn unknown(tool: &str, why: String) -> PoolStatus {
        PoolStatus {
            tool: tool.to_string(),
            service_error: Some(why),
            ..Default::default()
        }
    }
}

/// Health summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Instances in the pool.
    pub total: usize,
    /// Starting or ready.
    pub alive: usize,
    /// Ready for work.
    pub ready: usize,
    /// Dead (ended on their own) or failed.
    pub dead: usize,
    /// Failed (restart cap reached).
    pub failed: usize,
    /// Stopped on purpose or not started yet.
    pub stopped: usize,
    /// Per instance.
    pub instances: Vec<InstanceStatus>,
}

/// Take in what the children have written so far (without waiting), so counters of late
/// replies and protocol errors are current even when nobody is reading.
fn pull_output(core: &PoolCore) {
    for inst in &core.instances {
        if let Some(c) = inst.current() {
            drop(c.pull_output());
        }
    }
}

/// The status of every instance.
pub(crate) fn status(core: &PoolCore) -> PoolStatus {
    pull_output(core);
    let started = sizing::started(core);
    let max_instances = core.instances.len();
    let counts = core.admission.lock();
    let instances: Vec<InstanceStatus> = (0..core.instances.len())
        .map(|i| instance_status(core, i, &counts))
        .collect();
    PoolStatus {
        tool: core.spec.id.clone(),
        shut_down: core.is_shut_down(),
        disabled: core.disabled,
        dry_run: core.spec.dry_run.is_some(),
        command: core.spec.command.clone(),
        waited_for_instance: counts.waited_total,
        waiting: counts.waiting,
        started,
        max_instances,
        min_instances: core.size.spec().min_instances.unwrap_or(max_instances),
        shutdown_grace_ms: core.spec.shutdown.grace_ms,
        fallbacks: core.metrics.fallbacks.by_name(),
        retries: core.metrics.retries.by_name(),
        hosts: by_host(&instances),
        instances,
        service_error: None,
    }
}

/// Count instances by host and state, hosts in order of first appearance.
fn by_host(instances: &[InstanceStatus]) -> Vec<HostStatus> {
    let mut hosts: Vec<HostStatus> = Vec::new();
    for s in instances {
        let Some(h) = &s.host else { continue };
        let pos = match hosts.iter().position(|x| &x.host == h) {
            Some(p) => p,
            None => {
                hosts.push(HostStatus {
                    host: h.clone(),
                    ..HostStatus::default()
                });
                hosts.len() - 1
            }
        };
        let e = &mut hosts[pos];
        e.instances += 1;
        match s.state {
            State::Ready => e.ready += 1,
            State::Starting => e.starting += 1,
            State::Dead => e.dead += 1,
            State::Stopped => e.stopped += 1,
            State::Failed => e.failed += 1,
        }
    }
    hosts
}

/// Counts by state, from a status.
pub(crate) fn health(status: PoolStatus) -> Health {
    let instances = status.instances;
    let count = |f: &dyn Fn(State) -> bool| instances.iter().filter(|s| f(s.state)).count();
    Health {
        total: instances.len(),
        alive: count(&|s| matches!(s, State::Ready | State::Starting)),
        ready: count(&|s| s == State::Ready),
        dead: count(&|s| matches!(s, State::Dead | State::Failed)),
        failed: count(&|s| s == State::Failed),
        stopped: count(&|s| s == State::Stopped),
        instances,
    }
}

fn ms_since(now: Instant, t: Instant) -> u64 {
    now.saturating_duration_since(t).as_millis() as u64
}

fn instance_status(core: &PoolCore, i: usize, counts: &Counts) -> InstanceStatus {
    let inst = &core.instances[i];
    let cur = inst.current();
    let failed = inst.failed();
    let c = &inst.counters;
    let sup = inst.supervision();
    let state = match (&cur, &failed) {
        (_, Some(_)) => State::Failed,
        (Some(cur), None) => cur.state(),
        (None, None) => State::Stopped,
    };
    // No process, but not stopped on purpose: a restart is pending after a death or a
    // failed start (dead), or the process is being replaced right now (starting).
    let state = match state {
        State::Stopped if sup.restart_pending() => State::Dead,
        State::Stopped if sup.will_start() => State::Starting,
        other => other,
    };
    let now = Instant::now();
    let usage = cur.as_ref().and_then(|c| c.usage());
    InstanceStatus {
        index: i,
        pid: cur.as_ref().and_then(|c| c.os_pid()),
        state,
        exit: cur.as_ref().and_then(|c| c.exit()).or(inst.last_exit()),
        failed_reason: failed,
        restarts: inst.restarts(),
        lines_sent: c.lines_sent.load(Relaxed),
        lines_received: c.lines_received.load(Relaxed),
        lines_split: c.lines_split.load(Relaxed),
        stderr_lines: c.stderr_lines.load(Relaxed),
        stderr_dropped: c.stderr_dropped.load(Relaxed),
        stdin_dropped: c.stdin_dropped.load(Relaxed),
        stdout_dropped: c.stdout_dropped.load(Relaxed),
        unsolicited: c.unsolicited.load(Relaxed),
        uptime_ms: cur
            .as_ref()
            .and_then(|c| c.uptime())
            .map(|d| d.as_millis() as u64),
        in_flight: counts.in_flight(i),
        leased: counts.leased(i),
        current_request_age_ms: counts.busy_since(i).map(|t| ms_since(now, t)),
        requests: inst.metrics.requests_total(),
        last_probe_ago_ms: sup.last_probe().0.map(|t| ms_since(now, t)),
        last_probe_us: sup.last_probe().1.map(|d| d.as_micros() as u64),
        stderr_tail: cur.as_ref().map(|c| c.stderr_tail()).unwrap_or_default(),
        protocol_errors_tail: cur
            .as_ref()
            .and_then(|c| c.rpc().map(|d| d.bad_lines()))
            .unwrap_or_default(),
        handshake_reply: cur
            .as_ref()
            .and_then(|c| c.handshake_reply().map(|r| serde_json::from_str(r).ok()))
            .flatten(),
        client_requests: cur
            .as_ref()
            .and_then(|c| c.rpc().map(|d| d.client_requests.load(Relaxed)))
            .unwrap_or(0),
        host: core.remote.as_ref().map(|r| r.host(i).to_string()),
        host_error: core.remote.as_ref().and_then(|r| r.last_error(i)),
        step_id: core.remote.as_ref().and_then(|r| r.step_id(i)),
        rss_bytes: usage.map(|u| u.rss_bytes),
        cpu_seconds: usage.map(|u| u.cpu_seconds),
        recycles: recycles_of(inst),
    }
}

/// Recycles of one instance, every reason.
fn recycles_of(inst: &crate::instance::Instance) -> u64 {
    RecycleReason::all()
        .iter()
        .map(|&r| inst.recycles.get(r))
        .sum()
}

/// Request metrics of the pool and each instance.
pub(crate) fn metrics(core: &PoolCore) -> MetricsSnapshot {
    pull_output(core);
    let counts = core.admission.lock();
    let instances: Vec<InstanceMetrics> = core
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let m = &inst.metrics;
            let (protocol_errors, late_replies_dropped) = inst.rpc_counts();
            let usage = inst.current().and_then(|c| c.usage());
            InstanceMetrics {
                index: i,
                requests_ok: m.ok.load(Relaxed),
                requests_error: m.error.load(Relaxed),
                requests_timeout: m.timeout.load(Relaxed),
                lines_in: inst.counters.lines_sent.load(Relaxed),
                lines_out: inst.counters.lines_received.load(Relaxed),
                protocol_errors,
                late_replies_dropped,
                restarts: inst.restarts(),
                in_flight: counts.in_flight(i),
                stdin_queue: inst.current().map_or(0, |c| c.stdin_queue_len()),
                latency: m.latency.snapshot(),
                rss_bytes: usage.map(|u| u.rss_bytes),
                cpu_seconds: usage.map(|u| u.cpu_seconds),
                recycles: recycles_of(inst),
            }
        })
        .collect();
    let sum = |f: &dyn Fn(&InstanceMetrics) -> u64| instances.iter().map(f).sum::<u64>();
    let m = &core.metrics;
    MetricsSnapshot {
        tool: core.spec.id.clone(),
        requests_ok: m.ok.load(Relaxed),
        requests_error: m.error.load(Relaxed),
        requests_timeout: m.timeout.load(Relaxed),
        requests_fallback: m.fallback.load(Relaxed),
        fallbacks: m.fallbacks.by_name(),
        retries: m.retries.by_name(),
        lines_in: sum(&|i| i.lines_in),
        lines_out: sum(&|i| i.lines_out),
        protocol_errors: sum(&|i| i.protocol_errors),
        late_replies_dropped: sum(&|i| i.late_replies_dropped),
        restarts: sum(&|i| i.restarts),
        in_flight: counts.in_flight_total(),
        queue_depth: counts.waiting,
        waited_for_instance: counts.waited_total,
        grow_events: core.size.grows.load(Relaxed),
        shrink_events: core.size.shrinks.load(Relaxed),
        latency: m.latency.snapshot(),
        rss_bytes: instances.iter().filter_map(|i| i.rss_bytes).sum(),
        recycles: RecycleReason::all()
            .iter()
            .map(|&r| {
                let n = core.instances.iter().map(|i| i.recycles.get(r)).sum();
                (r.name().to_string(), n)
            })
            .collect(),
        instances,
    }
}
