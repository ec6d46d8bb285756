//! The pool façade: [`Pool`], N warm instances of one tool. Line I/O to one instance or
//! any, requests and batches ([`crate::router`]), leases, status, restart, shutdown.
//!
//! `Pool` is `Send + Sync`; every method takes `&self` and may be called from many threads.
//! It owns the supervisor thread (the supervisor module) and shares the pool's core
//! (the lifecycle module) with leases and that thread.

use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::hold::Use;
use crate::incarnation::Incarnation;
use crate::lease::Lease;
use crate::lifecycle::PoolCore;
use crate::limiter::Limiter;
use crate::metrics::MetricsSnapshot;
use crate::reader::WaitEnd;
use crate::router::{self, Reply, MAX_MAP_THREADS};
use crate::sizing;
use crate::snapshot;
use crate::spec::{Registry, Retry, ToolSpec};
use crate::supervisor::Supervisor;
use crate::util::lossy;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

pub use crate::sizing::{RELOADABLE, RETIRE_POLL};
pub use crate::snapshot::{Health, HostStatus, InstanceStatus, PoolStatus};

/// Environment variable that disables every pool (requests go to `oneshot`).
pub const DISABLE_ENV: &str = "TOOLPOOL_DISABLE";

/// A pool of warm instances of one tool. See the crate docs for an example.
pub struct Pool {
    core: Arc<PoolCore>,
    supervisor: Mutex<Option<Supervisor>>,
}

/// Options of one request ([`Pool::request_with`]).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// A sticky key, as [`Pool::request_sticky`] takes it.
    pub key: Option<String>,
    /// This request's `retry` instead of the spec's ([`Retry`] with `max` 0: none).
    pub retry: Option<Retry>,
}

/// Options of a pool beyond its spec.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// Use this limiter instead of [`Limiter::global`].
    pub limiter: Option<Arc<Limiter>>,
    /// Do not start the pool; serve requests with the spec's `oneshot` (like
    /// `TOOLPOOL_DISABLE=1`).
    pub disabled: bool,
}

impl Pool {
    /// A pool of `count` instances of `tool` from `registry`.
    pub fn new(tool: &str, count: usize, registry: &Registry) -> Result<Pool> {
        let mut spec = registry.get(tool)?.clone();
        spec.count = count;
        Pool::from_spec(spec)
    }

    /// A pool of `tool` from the registry file at `path` (`None`: the file named by
    /// `TOOLPOOL_REGISTRY`) with `count` instances (0: the spec's own `count`). The rules
    /// of `toolpool_pool_from_registry` and the bindings.
    pub fn from_registry(path: Option<&std::path::Path>, tool: &str, count: usize) -> Result<Pool> {
        let registry = match path {
            Some(p) => Registry::from_path(p),
            None => Registry::from_env(),
        }
        .map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{m}{}", id_hint(tool))),
            other => other,
        })?;
        if count == 0 {
            Pool::from_spec(registry.get(tool)?.clone())
        } else {
            Pool::new(tool, count, &registry)
        }
    }

    /// A pool from a spec (`spec.count` instances), under the global limiter.
    pub fn from_spec(spec: ToolSpec) -> Result<Pool> {
        Pool::with_options(spec, PoolOptions::default())
    }

    /// A pool from a spec with options. Starts every instance in parallel (unless `lazy`)
    /// and returns once all are ready; if one cannot start, the others are stopped and the
    /// error is returned. With `disabled` (or `TOOLPOOL_DISABLE=1`) nothing is started.
    /// With `dry_run` (or `TOOLPOOL_DRY_RUN=1`) no process ever starts: responders stand
    /// in for the tool, and `disabled` is ignored.
    pub fn with_options(spec: ToolSpec, opts: PoolOptions) -> Result<Pool> {
        let spec = crate::remote::slurm::take_allocation_nodes(dry_run_env(spec))?;
        spec.validate()?;
        // A dry pool runs no process at all, one-shot runs included.
        let disabled =
            spec.dry_run.is_none() && (opts.disabled || spec.disabled || env_set(DISABLE_ENV));
        let limiter = opts
            .limiter
            .unwrap_or_else(|| Arc::clone(Limiter::global()));
        let core = Arc::new(PoolCore::new(spec, limiter, disabled));
        if !disabled && !core.spec.lazy {
            if let Err(e) = core.start_all() {
                use crate::spec::Cause;
                let fb = &core.spec.fallback;
                let serves = fb.on(Cause::SpawnFailed) || fb.on(Cause::Unavailable);
                if core.spec.oneshot.is_none() || !serves {
                    core.set_shut_down();
                    return Err(e);
                }
                // With a one-shot fallback on these causes, a pool that cannot start still
                // serves; its instances are failed (not retried) until `restart` is called.
                for inst in &core.instances {
                    inst.mark_failed(format!("could not start: {e}"));
                }
            }
        }
        let supervisor = (!disabled).then(|| Supervisor::start(&core));
        crate::prometheus::register(&core);
        Ok(Pool {
            core,
            supervisor: Mutex::new(supervisor),
        })
    }

    /// The spec this pool runs now: after [`Pool::resize`] its `count` is the new one,
    /// after [`Pool::reload`] it is the new spec.
    pub fn spec(&self) -> Arc<ToolSpec> {
        self.core.size.spec()
    }

    /// Number of instances now (the spec's `count`; [`Pool::resize`] changes it). Indices
    /// run `0..len()`; an index a shrink removed is [`Error::IndexOutOfRange`].
    pub fn len(&self) -> usize {
        self.core.instances.len()
    }

    /// Never true: a pool has at least one instance (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.core.instances.is_empty()
    }

    /// Queue `line` (a newline is appended) for instance `index`. A full stdin queue is
    /// [`Error::QueueFull`], never a wait; but an instance that is not running (lazy, or
    /// stopped when idle) is started first, which waits for its ready line.
    pub fn send(&self, index: usize, line: &str) -> Result<()> {
        self.send_bytes(index, line.as_bytes())
    }

    /// Send a JSON-RPC notification to instance `index` (`jsonrpc` and `lsp` only):
    /// `payload` is `{"method": ..., "params": ...}` as for [`Pool::request`], sent without
    /// an id, framed by the protocol; nothing is awaited. Like [`Pool::send`], a stopped
    /// instance is started first and a full stdin queue is [`Error::QueueFull`].
    /// A bad payload or another protocol is [`Error::InvalidArgument`].
    pub fn notify(&self, index: usize, payload: &str) -> Result<()> {
        self.core.incarnation(index, true)?.notify(payload)
    }

    /// [`Pool::send`] for raw bytes.
    pub fn send_bytes(&self, index: usize, line: &[u8]) -> Result<()> {
        self.core.incarnation(index, true)?.send(line)
    }

    /// The next stdout line of instance `index` (invalid UTF-8 replaced), waiting up to
    /// `timeout` (a `Duration`, or a [`Wait`] with a cancel token). A line longer than
    /// `limits.max_line_bytes` arrives in pieces of that size.
    pub fn read_line(&self, index: usize, timeout: impl Into<Wait>) -> Result<String> {
        self.read_line_bytes(index, timeout).map(lossy)
    }

    /// The next stdout line of instance `index`, exact bytes without the newline.
    pub fn read_line_bytes(&self, index: usize, timeout: impl Into<Wait>) -> Result<Vec<u8>> {
        let wait = timeout.into();
        if wait.is_cancelled() {
            return Err(Error::Cancelled(format!(
                "stdout of instance {index} of '{}'",
                self.core.spec.id
            )));
        }
        self.core
            .incarnation(index, false)?
            .read_line(wait.timeout(), wait.token())
    }

    /// The next stderr line of instance `index`, waiting up to `timeout`.
    pub fn read_stderr_line(&self, index: usize, timeout: Duration) -> Result<String> {
        self.core
            .incarnation(index, false)?
            .read_stderr_line(timeout)
            .map(lossy)
    }

    /// The first stdout line from any instance, with its index, waiting up to `timeout`
    /// (a `Duration`, or a [`Wait`] with a cancel token).
    pub fn read_any(&self, timeout: impl Into<Wait>) -> Result<(usize, String)> {
        self.read_any_bytes(timeout).map(|(i, l)| (i, lossy(l)))
    }

    /// [`Pool::read_any`] with exact bytes.
    pub fn read_any_bytes(&self, timeout: impl Into<Wait>) -> Result<(usize, Vec<u8>)> {
        let wait = timeout.into();
        let core = &self.core;
        let what = || format!("stdout of any instance of '{}'", core.spec.id);
        let look = || {
            core.check_open()?;
            Ok((0..self.len())
                .filter_map(|i| Some((i, core.instances[i].current()?)))
                .collect::<Vec<(usize, Arc<Incarnation>)>>())
        };
        crate::reader::read_any(wait.until(), &core.read_any_next, look, |end| match end {
            WaitEnd::Cancelled => Error::Cancelled(what()),
            _ => Error::timeout(what(), wait.timeout()),
        })
    }

    /// Send `payload` to an instance picked by the spec's `routing` and wait up to `timeout`
    /// (waiting for a free instance included) for its reply.
    ///
    /// `timeout` is a `Duration` or a [`Wait`] that also carries a [`CancelToken`](crate::CancelToken): a
    /// cancelled request returns [`Error::Cancelled`] within milliseconds, whichever stage
    /// it is in (waiting for an instance, for a start, for the reply); its late reply never
    /// reaches another caller (the instance is recycled in `lines`/`marker` framing, the
    /// reply dropped and counted in `jsonrpc`).
    pub fn request(&self, payload: &str, timeout: impl Into<Wait>) -> Result<Reply> {
        router::request(&self.core, payload, None, &timeout.into(), None).map(Reply::lossy)
    }

    /// [`Pool::request`] with [`RequestOptions`]: a sticky key, and this call's own
    /// `retry` instead of the spec's.
    pub fn request_with(
        &self,
        payload: &str,
        options: &RequestOptions,
        timeout: impl Into<Wait>,
    ) -> Result<Reply> {
        self.request_bytes(payload, options, timeout)
            .map(Reply::lossy)
    }

    /// [`Pool::request_with`] with the reply's exact bytes (no UTF-8 replacement).
    pub fn request_bytes(
        &self,
        payload: &str,
        options: &RequestOptions,
        timeout: impl Into<Wait>,
    ) -> Result<Reply<Vec<u8>>> {
        let key = options.key.as_deref();
        router::request(
            &self.core,
            payload,
            key,
            &timeout.into(),
            options.retry.as_ref(),
        )
    }

    /// Like [`Pool::request`], but `key` maps to the same instance while that instance
    /// lives; when it has died, the key moves and [`Reply::moved`] is set.
    pub fn request_sticky(
        &self,
        key: &str,
        payload: &str,
        timeout: impl Into<Wait>,
    ) -> Result<Reply> {
        router::request(&self.core, payload, Some(key), &timeout.into(), None).map(Reply::lossy)
    }

    /// Lease one idle instance for exclusive use, waiting up to `timeout` (a `Duration`,
    /// or a [`Wait`] with a cancel token) for one.
    pub fn lease(&self, timeout: impl Into<Wait>) -> Result<Lease> {
        let wait = timeout.into();
        let (hold, _) = router::take(&self.core, Use::Lease, None, wait.until())?;
        Ok(Lease::new(hold))
    }

    /// Send a raw line to an instance picked by routing (round robin among ready,
    /// unleased instances); returns its index. Read the output with
    /// [`Pool::read_any`] or [`Pool::read_line`].
    pub fn send_routed(&self, line: &str) -> Result<usize> {
        let i = router::pick_for_send(&self.core)?;
        self.send(i, line)?;
        Ok(i)
    }

    /// Run a batch: every payload as its own request, spread over the pool, results in
    /// input order, each its own success or error. `timeout` applies to each request.
    /// On a shut-down pool every result is [`Error::ShutDown`] (in every language: the
    /// C call `toolpool_pool_map_json` succeeds and each item says so; see [`MapResult`](crate::MapResult)).
    /// Runs as many requests at once as the pool can take (instances × `max_in_flight`,
    /// at most [`MAX_MAP_THREADS`]), each on a scoped thread. With a cancel token (a
    /// [`Wait`]), cancelling fails every request not yet answered with
    /// [`Error::Cancelled`] (each its own result) and the call returns.
    pub fn map<S: AsRef<str> + Sync>(
        &self,
        payloads: &[S],
        timeout: impl Into<Wait>,
    ) -> Vec<Result<Reply>> {
        let wait = timeout.into();
        let timeout = &wait;
        let width = (self.len() * self.core.spec.max_in_flight)
            .min(MAX_MAP_THREADS)
            .clamp(1, payloads.len().max(1));
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Result<Reply>>> = (0..payloads.len()).map(|_| None).collect();
        // `s.spawn` panics only when the OS refuses a thread (as std::thread::spawn does).
        let parts: Vec<Vec<(usize, Result<Reply>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..width)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Relaxed);
                            let Some(p) = payloads.get(k) else { break };
                            done.push((k, self.request(p.as_ref(), timeout)));
                        }
                        done
                    })
                })
                .collect();
            // A request never panics; if one did, the panic goes on to the caller here
            // (the C boundary turns it into TOOLPOOL_PANIC).
            handles
                .into_iter()
                .map(|h| h.join().expect("map thread panicked"))
                .collect()
        });
        for (k, r) in parts.into_iter().flatten() {
            out[k] = Some(r);
        }
        // Every index below `payloads.len()` was taken by exactly one thread.
        out.into_iter()
            .map(|r| r.expect("every payload ran"))
            .collect()
    }

    /// Per-instance status.
    pub fn status(&self) -> PoolStatus {
        snapshot::status(&self.core)
    }

    /// Counts of alive and dead instances, plus their status.
    pub fn health(&self) -> Health {
        snapshot::health(snapshot::status(&self.core))
    }

    /// Request metrics of the pool and each instance.
    pub fn metrics(&self) -> MetricsSnapshot {
        snapshot::metrics(&self.core)
    }

    /// The pool's metrics in the Prometheus text exposition format 0.0.4 (the families
    /// are listed in docs/observability.md), with this pool's limiter. Works after
    /// shutdown.
    pub fn metrics_prometheus(&self) -> String {
        crate::prometheus::render_one(&self.core)
    }

    /// Stop instance `index` (group kill) and start it again with the same spec; also
    /// clears a `failed` mark. Returns once the new process is ready.
    pub fn restart(&self, index: usize) -> Result<()> {
        self.core.check_index(index)?;
        self.core.check_open()?;
        self.core.restart(index)
    }

    /// Change the number of instances to `count` (1..=[`MAX_COUNT`](crate::spec::MAX_COUNT)),
    /// at run time, under load.
    ///
    /// Indices stay `0..count`. Growing adds indices at the top: a fixed pool (no
    /// `min_instances`, not `lazy`) starts them and returns once they are ready (within the
    /// process limit: an instance that cannot start is the error, and the pool keeps its
    /// old size); an elastic or lazy pool starts them on demand. Shrinking removes the top
    /// indices at once (they become [`Error::IndexOutOfRange`] and get no new work): idle
    /// ones stop before `resize` returns, a busy or leased one after its last request or
    /// lease ends, so no request in flight fails. Sticky keys of a removed instance move as
    /// when it dies. `min_instances`, when set, is lowered to `count` if above it. A later
    /// grow reuses a removed index (its request counters go on).
    ///
    /// Errors: [`Error::InvalidArgument`] for 0 or more than the cap, [`Error::ShutDown`]
    /// after shutdown, start-up errors when growing a fixed pool.
    pub fn resize(&self, count: usize) -> Result<()> {
        sizing::resize(&self.core, count)
    }

    /// Replace the spec of the running pool, one instance at a time: each new process
    /// starts and passes its ready line before the old one is swapped out; the old one
    /// stops once the requests (or lease) using it are over. A pool under load serves
    /// every request during the reload. When it returns `Ok`, every running instance runs
    /// the new spec (stopped ones start from it when next needed), and a new `count` or
    /// `min_instances` has been applied as by [`Pool::resize`].
    ///
    /// Only the keys in [`RELOADABLE`] (how a process starts, and the sizes) may change;
    /// any other key that differs is an [`Error::Config`] naming each one, and an invalid
    /// spec is the [`ToolSpec::validate`] error: in both cases before anything changes.
    /// When a new process cannot start (bad command, no ready line, process limit), the
    /// reload stops, the instances it already replaced go back to the old spec (as far as
    /// the process limit allows: one that cannot keeps its new process, which did start),
    /// the old instances keep serving, and that start-up error is returned.
    pub fn reload(&self, spec: ToolSpec) -> Result<()> {
        let spec = crate::remote::slurm::take_allocation_nodes(dry_run_env(spec))?;
        sizing::reload(&self.core, spec)
    }

    /// [`Pool::reload`] from a standalone JSON spec (as for `toolpool_pool_new`); a spec
    /// without `"id"` keeps the pool's id, and one without `"count"` its count.
    pub fn reload_json(&self, spec_json: &str) -> Result<()> {
        let mut value: serde_json::Value = serde_json::from_str(spec_json)
            .map_err(|e| Error::Config(format!("spec is not valid JSON: {e}")))?;
        if let Some(obj) = value.as_object_mut() {
            if !obj.contains_key("id") {
                let id = self.core.spec.id.clone();
                obj.insert("id".into(), serde_json::Value::String(id));
            }
            if !obj.contains_key("count") {
                obj.insert("count".into(), self.len().into());
            }
        }
        self.reload(ToolSpec::from_json(&value.to_string())?)
    }

    /// Shut the pool down: close every stdin, give the tools a moment to exit, SIGTERM each
    /// process group, wait up to `grace`, SIGKILL, reap, join every thread. Idempotent;
    /// later calls return at once. Requests waiting for an instance get
    /// [`Error::ShutDown`].
    pub fn shutdown(&self, grace: Duration) {
        if self.core.set_shut_down() {
            return;
        }
        // Not under the lock: the threads that reap the processes notify the supervisor.
        let sup = self.supervisor.lock().take();
        if let Some(sup) = sup {
            self.core.set_supervisor_wake(None);
            sup.stop();
        }
        self.core.admission.wake();
        self.core.stop_all(grace);
        // Background starts, retiring incarnations, removed indices (sizing).
        sizing::shutdown(&self.core);
    }

    /// True after [`Pool::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        self.core.is_shut_down()
    }

    /// The shared core (for `Pools`' Prometheus exposition).
    pub(crate) fn core(&self) -> Arc<PoolCore> {
        Arc::clone(&self.core)
    }

    /// The limiter this pool's processes count against.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.core.limiter
    }
}

/// For a registry that cannot be read: what `tool`, taken as a tool id, was looked up
/// for, and a hint when it looks like a command line instead.
fn id_hint(tool: &str) -> String {
    let name = crate::spec::sanitize(tool);
    let mut hint = format!(" (looking up tool id '{name}')");
    if tool.contains(char::is_whitespace) || tool.contains('/') {
        let argv: Vec<&str> = tool.split_whitespace().collect();
        hint.push_str(&format!(
            "; '{name}' looks like a command line, not a tool id: to start a command, give a \
             spec with \"command\": {}",
            serde_json::to_string(&argv).unwrap_or_default()
        ));
    }
    hint
}

/// `spec` as `TOOLPOOL_DRY_RUN=1` makes it: dry with `default: "echo"` unless it has its
/// own `dry_run` (for a new pool and for a reload alike).
fn dry_run_env(mut spec: ToolSpec) -> ToolSpec {
    if spec.dry_run.is_none() && env_set(crate::spec::DRY_RUN_ENV) {
        spec.dry_run = Some(crate::spec::DryRun::echo());
    }
    spec
}

/// True when the environment variable `name` is set, not empty and not "0".
fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The Prometheus text exposition (format 0.0.4) of every live pool in the process (made
/// and neither shut down nor dropped), with the global limiter: what a `/metrics` handler
/// serves. Pools that share a tool id get a `pool` label after the first. With no live
/// pool it still shows the limiter families.
pub fn metrics_prometheus_all() -> String {
    crate::prometheus::render_all()
}

impl Drop for Pool {
    /// Shuts down with the spec's grace period: no child outlives the pool.
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(self.core.spec.shutdown.grace_ms));
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("tool", &self.core.spec.id)
            .field("count", &self.len())
            .finish()
    }
}
