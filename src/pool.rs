//! The pool façade: [`Pool`], N warm instances of one tool, run in this process
//! (`local`) or by a `toolpool serve` service (`link`, for a [`crate::Client`]). Every method is written
//! once here and works on both; the two sit behind one type so a program switches by
//! configuration alone (`TOOLPOOL_SERVER`).
//!
//! `Pool` is `Send + Sync`; every method takes `&self` and may be called from many threads.

use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::lease::Lease;
use crate::limiter::Limiter;
use crate::link::{self, Link, ServicePool};
use crate::local::LocalPool;
use crate::metrics::MetricsSnapshot;
use crate::router::Reply;
use crate::spec::{Registry, Retry, ToolSpec};
use crate::util::lossy;
use std::sync::Arc;
use std::time::Duration;

pub use crate::local::{PoolOptions, DISABLE_ENV};
pub use crate::sizing::{RELOADABLE, RETIRE_POLL};
pub use crate::snapshot::{Health, HostStatus, InstanceStatus, PoolStatus};

/// A pool of warm instances of one tool. See the crate docs for an example.
pub struct Pool {
    inner: Inner,
}

/// Where the pool runs.
enum Inner {
    /// In this process.
    Local(LocalPool),
    /// In a `toolpool serve` service.
    Service(ServicePool),
}

/// Options of one request ([`Pool::request_with`]).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// A sticky key, as [`Pool::request_sticky`] takes it.
    pub key: Option<String>,
    /// This request's `retry` instead of the spec's ([`Retry`] with `max` 0: none).
    pub retry: Option<Retry>,
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
    ///
    /// With `TOOLPOOL_SERVER=unix:PATH` set, the pool is the service's pool of `tool`
    /// instead ([`Client::pool`](crate::Client::pool)): the service's registry and its counts apply, and `path`
    /// and `count` are not used.
    pub fn from_registry(path: Option<&std::path::Path>, tool: &str, count: usize) -> Result<Pool> {
        if let Some(server) = link::server_from_env()? {
            return ServicePool::open(Link::connect(&server)?, tool).map(Pool::from_service);
        }
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
        LocalPool::start(spec, opts).map(|p| Pool {
            inner: Inner::Local(p),
        })
    }

    /// A pool of a service (made by [`Client::pool`](crate::Client::pool)).
    pub(crate) fn from_service(p: ServicePool) -> Pool {
        Pool {
            inner: Inner::Service(p),
        }
    }

    /// The spec this pool runs now: after [`Pool::resize`] its `count` is the new one,
    /// after [`Pool::reload`] it is the new spec.
    pub fn spec(&self) -> Arc<ToolSpec> {
        match &self.inner {
            Inner::Local(p) => p.spec(),
            Inner::Service(p) => p.spec(),
        }
    }

    /// Number of instances now (the spec's `count`; [`Pool::resize`] changes it). Indices
    /// run `0..len()`; an index a shrink removed is [`Error::IndexOutOfRange`].
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Local(p) => p.len(),
            Inner::Service(p) => p.len(),
        }
    }

    /// Requests it serves at once (instances × `max_in_flight`), without a round trip to
    /// a service: for a service's pool, as of the last call that brought its size back.
    /// What a completion queue lets run at once on this pool is a multiple of it.
    pub(crate) fn slots(&self) -> usize {
        let (spec, len) = match &self.inner {
            Inner::Local(p) => (p.spec(), p.len()),
            Inner::Service(p) => p.seen(),
        };
        len.max(1) * spec.max_in_flight.max(1)
    }

    /// Never true: a pool has at least one instance (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for a pool of a `toolpool serve` service ([`Client::pool`](crate::Client::pool)).
    pub fn is_service(&self) -> bool {
        matches!(self.inner, Inner::Service(_))
    }

    /// Queue `line` (a newline is appended) for instance `index`. A full stdin queue is
    /// [`Error::QueueFull`], never a wait; but an instance that is not running (lazy, or
    /// stopped when idle) is started first, which waits for its ready line.
    pub fn send(&self, index: usize, line: &str) -> Result<()> {
        self.send_bytes(index, line.as_bytes())
    }

    /// [`Pool::send`] for raw bytes.
    pub fn send_bytes(&self, index: usize, line: &[u8]) -> Result<()> {
        match &self.inner {
            Inner::Local(p) => p.send_bytes(index, line),
            Inner::Service(p) => p.send_bytes(index, line),
        }
    }

    /// Send a JSON-RPC notification to instance `index` (`jsonrpc` and `lsp` only):
    /// `payload` is `{"method": ..., "params": ...}` as for [`Pool::request`], sent without
    /// an id, framed by the protocol; nothing is awaited. Like [`Pool::send`], a stopped
    /// instance is started first and a full stdin queue is [`Error::QueueFull`].
    /// A bad payload or another protocol is [`Error::InvalidArgument`].
    pub fn notify(&self, index: usize, payload: &str) -> Result<()> {
        match &self.inner {
            Inner::Local(p) => p.notify(index, payload),
            Inner::Service(p) => p.notify(index, payload),
        }
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
        match &self.inner {
            Inner::Local(p) => p.read_line_bytes(index, &wait),
            Inner::Service(p) => p.read_line_bytes(index, &wait),
        }
    }

    /// The next stderr line of instance `index`, waiting up to `timeout`.
    pub fn read_stderr_line(&self, index: usize, timeout: Duration) -> Result<String> {
        let wait = Wait::new(timeout);
        match &self.inner {
            Inner::Local(p) => p.read_stderr_line(index, &wait),
            Inner::Service(p) => p.read_stderr_line(index, &wait),
        }
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
        match &self.inner {
            Inner::Local(p) => p.read_any_bytes(&wait),
            Inner::Service(p) => p.read_any_bytes(&wait),
        }
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
        self.request_bytes(payload, &RequestOptions::default(), timeout)
            .map(Reply::lossy)
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
        let wait = timeout.into();
        let key = options.key.as_deref();
        let retry = options.retry.as_ref();
        match &self.inner {
            Inner::Local(p) => p.request_bytes(payload, key, retry, &wait),
            Inner::Service(p) => p.request_bytes(payload, key, retry, &wait),
        }
    }

    /// Like [`Pool::request`], but `key` maps to the same instance while that instance
    /// lives; when it has died, the key moves and [`Reply::moved`] is set.
    pub fn request_sticky(
        &self,
        key: &str,
        payload: &str,
        timeout: impl Into<Wait>,
    ) -> Result<Reply> {
        let options = RequestOptions {
            key: Some(key.to_string()),
            retry: None,
        };
        self.request_with(payload, &options, timeout)
    }

    /// Lease one idle instance for exclusive use, waiting up to `timeout` (a `Duration`,
    /// or a [`Wait`] with a cancel token) for one. A lease of a service's pool holds one
    /// connection to the service: if this process dies, the service frees the instance at
    /// once.
    pub fn lease(&self, timeout: impl Into<Wait>) -> Result<Lease> {
        let wait = timeout.into();
        match &self.inner {
            Inner::Local(p) => p.lease(&wait).map(Lease::local),
            Inner::Service(p) => p.lease(&wait).map(Lease::service),
        }
    }

    /// Send a raw line to an instance picked by routing (round robin among ready,
    /// unleased instances); returns its index. Read the output with
    /// [`Pool::read_any`] or [`Pool::read_line`].
    pub fn send_routed(&self, line: &str) -> Result<usize> {
        match &self.inner {
            Inner::Local(p) => p.send_routed(line),
            Inner::Service(p) => p.send_routed(line),
        }
    }

    /// Run a batch: every payload as its own request, spread over the pool, results in
    /// input order, each its own success or error. `timeout` applies to each request.
    /// On a shut-down pool every result is [`Error::ShutDown`] (in every language: the
    /// C call `toolpool_pool_map_json` succeeds and each item says so; see [`MapResult`](crate::MapResult)).
    /// Runs as many requests at once as the pool can take (instances × `max_in_flight`,
    /// at most [`MAX_MAP_THREADS`](crate::router::MAX_MAP_THREADS)), each on a scoped
    /// thread (of the service, for a service's pool). With a cancel token (a [`Wait`]),
    /// cancelling fails every request not yet answered with [`Error::Cancelled`] (each its
    /// own result) and the call returns.
    pub fn map<S: AsRef<str> + Sync>(
        &self,
        payloads: &[S],
        timeout: impl Into<Wait>,
    ) -> Vec<Result<Reply>> {
        let wait = timeout.into();
        match &self.inner {
            Inner::Local(p) => p.map(payloads, &wait),
            Inner::Service(p) => {
                let owned = payloads.iter().map(|s| s.as_ref().to_string()).collect();
                p.map(owned, &wait)
            }
        }
    }

    /// Per-instance status. For a service's pool that the service cannot report (it is
    /// gone), a status with no instances whose `service_error` says why.
    pub fn status(&self) -> PoolStatus {
        match &self.inner {
            Inner::Local(p) => p.status(),
            Inner::Service(p) => p.status(),
        }
    }

    /// Counts of alive and dead instances, plus their status.
    pub fn health(&self) -> Health {
        crate::snapshot::health(self.status())
    }

    /// Request metrics of the pool and each instance (zeros for a service's pool the
    /// service cannot report; its [`Pool::status`] says why).
    pub fn metrics(&self) -> MetricsSnapshot {
        match &self.inner {
            Inner::Local(p) => p.metrics(),
            Inner::Service(p) => p.metrics(),
        }
    }

    /// The pool's metrics in the Prometheus text exposition format 0.0.4 (the families
    /// are listed in docs/observability.md), with this pool's limiter. Works after
    /// shutdown.
    pub fn metrics_prometheus(&self) -> String {
        match &self.inner {
            Inner::Local(p) => p.metrics_prometheus(),
            Inner::Service(p) => p.metrics_prometheus(),
        }
    }

    /// Stop instance `index` (group kill) and start it again with the same spec; also
    /// clears a `failed` mark. Returns once the new process is ready.
    pub fn restart(&self, index: usize) -> Result<()> {
        match &self.inner {
            Inner::Local(p) => p.restart(index),
            Inner::Service(p) => p.restart(index),
        }
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
        match &self.inner {
            Inner::Local(p) => p.resize(count),
            Inner::Service(p) => p.resize(count),
        }
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
        match &self.inner {
            Inner::Local(p) => p.reload(spec),
            Inner::Service(p) => p.reload(spec),
        }
    }

    /// [`Pool::reload`] from a standalone JSON spec (as for `toolpool_pool_new`); a spec
    /// without `"id"` keeps the pool's id, and one without `"count"` its count.
    pub fn reload_json(&self, spec_json: &str) -> Result<()> {
        let mut value: serde_json::Value = serde_json::from_str(spec_json)
            .map_err(|e| Error::Config(format!("spec is not valid JSON: {e}")))?;
        if let Some(obj) = value.as_object_mut() {
            if !obj.contains_key("id") {
                let id = self.spec().id.clone();
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
    ///
    /// For a service's pool this ends this handle only (its later calls fail with
    /// [`Error::ShutDown`]); the service's pool runs on for its other clients.
    pub fn shutdown(&self, grace: Duration) {
        match &self.inner {
            Inner::Local(p) => p.shutdown(grace),
            Inner::Service(p) => p.shutdown(),
        }
    }

    /// True after [`Pool::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        match &self.inner {
            Inner::Local(p) => p.is_shut_down(),
            Inner::Service(p) => p.is_shut_down(),
        }
    }

    /// The limiter this pool's processes count against; `None` for a service's pool
    /// (whose limit is the service's: [`Client::limit_status`](crate::Client::limit_status)).
    pub fn limiter(&self) -> Option<&Arc<Limiter>> {
        match &self.inner {
            Inner::Local(p) => Some(p.limiter()),
            Inner::Service(_) => None,
        }
    }

    /// The local pool's shared core (for `Pools`' Prometheus exposition).
    pub(crate) fn core(&self) -> Option<&Arc<crate::lifecycle::PoolCore>> {
        match &self.inner {
            Inner::Local(p) => Some(p.core()),
            Inner::Service(_) => None,
        }
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

/// The Prometheus text exposition (format 0.0.4) of every live pool in the process (made
/// and neither shut down nor dropped), with the global limiter: what a `/metrics` handler
/// serves. Pools that share a tool id get a `pool` label after the first. With no live
/// pool it still shows the limiter families.
pub fn metrics_prometheus_all() -> String {
    crate::prometheus::render_all()
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (tool, place) = match &self.inner {
            Inner::Local(p) => (p.spec().id.clone(), "local"),
            Inner::Service(p) => (p.tool().to_string(), "service"),
        };
        f.debug_struct("Pool")
            .field("tool", &tool)
            .field("runs", &place)
            .finish()
    }
}
