//! The pool: N warm instances of one tool, line I/O to each, status, restart, shutdown.
//!
//! `Pool` is `Send + Sync`; every method takes `&self` and may be called from many threads.
//! Requests, routing and leases are in [`crate::router`]; supervision in
//! the supervisor module (restarts, recycling, probes).

use crate::error::{Error, ExitInfo, Result};
use crate::instance::{Instance, State};
use crate::limiter::Limiter;
use crate::metrics::Counters;
use crate::metrics::{InstanceMetrics, Metrics, MetricsSnapshot};
use crate::reader::StdoutFilter;
use crate::router::RouteState;
use crate::rpc::Dispatcher;
use crate::spec::{Protocol, Registry, ToolSpec};
use crate::supervisor::{self, Supervisor};
use crate::util::lossy;
use parking_lot::{Condvar, Mutex, RwLock};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Environment variable that disables every pool (requests go to `oneshot`).
pub const DISABLE_ENV: &str = "TOOLPOOL_DISABLE";

/// How long read_any polls one set of instances before it looks again (restarted
/// instances, lines another reader queued).
const READ_ANY_SLICE: Duration = Duration::from_millis(50);

/// The running incarnation of a slot, with its JSON-RPC dispatcher if any.
#[derive(Clone)]
pub(crate) struct Worker {
    pub inst: Arc<Instance>,
    pub rpc: Option<Arc<Dispatcher>>,
}

/// One instance index: whatever incarnation runs there now, and what outlives it.
pub(crate) struct Slot {
    pub current: RwLock<Option<Worker>>,
    /// Serialises starts and restarts of this index.
    pub start_lock: Mutex<()>,
    pub counters: Arc<Counters>,
    pub restarts: AtomicU64,
    pub failed: Mutex<Option<String>>,
    pub last_exit: Mutex<Option<ExitInfo>>,
    pub metrics: Metrics,
    pub sup: Mutex<supervisor::SlotSup>,
    /// JSON-RPC counters of retired incarnations.
    pub protocol_errors: AtomicU64,
    pub late_replies: AtomicU64,
}

pub(crate) struct PoolInner {
    pub spec: ToolSpec,
    pub slots: Vec<Slot>,
    pub limiter: Arc<Limiter>,
    pub shut_down: AtomicBool,
    pub disabled: bool,
    pub route: Mutex<RouteState>,
    pub route_cv: Condvar,
    pub metrics: Metrics,
    pub supervisor: Mutex<Option<Supervisor>>,
    /// Where `read_any` starts looking, so no instance starves the others.
    pub read_any_next: std::sync::atomic::AtomicUsize,
}

/// A pool of warm instances of one tool. See the crate docs for an example.
pub struct Pool {
    pub(crate) inner: Arc<PoolInner>,
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

/// Status of one instance index.
#[derive(Debug, Clone, Serialize)]
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
}

/// Status of the whole pool.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// Tool id.
    pub tool: String,
    /// True after `shutdown`.
    pub shut_down: bool,
    /// True when requests are served by `oneshot` only.
    pub disabled: bool,
    /// How many times a request had to wait for a free instance.
    pub waited_for_instance: u64,
    /// Callers waiting for a free instance now.
    pub waiting: usize,
    /// Per instance.
    pub instances: Vec<InstanceStatus>,
}

/// Health summary.
#[derive(Debug, Clone, Serialize)]
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
            Some(p) => Registry::from_path(p)?,
            None => Registry::from_env()?,
        };
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
    pub fn with_options(spec: ToolSpec, opts: PoolOptions) -> Result<Pool> {
        spec.validate()?;
        let disabled = opts.disabled
            || spec.disabled
            || std::env::var(DISABLE_ENV).is_ok_and(|v| !v.is_empty() && v != "0");
        let n = spec.count;
        let inner = Arc::new(PoolInner {
            slots: (0..n).map(|_| Slot::new()).collect(),
            limiter: opts
                .limiter
                .unwrap_or_else(|| Arc::clone(Limiter::global())),
            shut_down: AtomicBool::new(false),
            disabled,
            route: Mutex::new(RouteState::new(n)),
            route_cv: Condvar::new(),
            metrics: Metrics::default(),
            supervisor: Mutex::new(None),
            read_any_next: Default::default(),
            spec,
        });
        let pool = Pool { inner };
        if !disabled && !pool.inner.spec.lazy {
            if let Err(e) = pool.inner.start_all() {
                if pool.inner.spec.oneshot.is_none() {
                    pool.inner.shut_down.store(true, Relaxed);
                    return Err(e);
                }
                // With a one-shot fallback, a pool that cannot start still serves; its
                // instances are failed (not retried) until `restart` is called.
                for slot in &pool.inner.slots {
                    *slot.failed.lock() = Some(format!("could not start: {e}"));
                }
            }
        }
        if !disabled {
            let sup = Supervisor::start(&pool.inner);
            *pool.inner.supervisor.lock() = sup;
        }
        Ok(pool)
    }

    /// The spec this pool runs.
    pub fn spec(&self) -> &ToolSpec {
        &self.inner.spec
    }

    /// Number of instances.
    pub fn len(&self) -> usize {
        self.inner.slots.len()
    }

    /// Never true: a pool has at least one instance (kept for the `len` convention).
    pub fn is_empty(&self) -> bool {
        self.inner.slots.is_empty()
    }

    /// Queue `line` (a newline is appended) for instance `index`. Never blocks: a full
    /// stdin queue is [`Error::QueueFull`].
    pub fn send(&self, index: usize, line: &str) -> Result<()> {
        self.send_bytes(index, line.as_bytes())
    }

    /// [`Pool::send`] for raw bytes.
    pub fn send_bytes(&self, index: usize, line: &[u8]) -> Result<()> {
        self.inner.worker(index, true)?.inst.send(line)
    }

    /// The next stdout line of instance `index` (invalid UTF-8 replaced), waiting up to
    /// `timeout`.
    pub fn read_line(&self, index: usize, timeout: Duration) -> Result<String> {
        self.read_line_bytes(index, timeout).map(lossy)
    }

    /// The next stdout line of instance `index`, exact bytes without the newline.
    pub fn read_line_bytes(&self, index: usize, timeout: Duration) -> Result<Vec<u8>> {
        self.inner.worker(index, false)?.inst.read_line(timeout)
    }

    /// The next stderr line of instance `index`, waiting up to `timeout`.
    pub fn read_stderr_line(&self, index: usize, timeout: Duration) -> Result<String> {
        self.inner
            .worker(index, false)?
            .inst
            .read_stderr_line(timeout)
            .map(lossy)
    }

    /// The first stdout line from any instance, with its index, waiting up to `timeout`.
    pub fn read_any(&self, timeout: Duration) -> Result<(usize, String)> {
        self.read_any_bytes(timeout).map(|(i, l)| (i, lossy(l)))
    }

    /// [`Pool::read_any`] with exact bytes.
    pub fn read_any_bytes(&self, timeout: Duration) -> Result<(usize, Vec<u8>)> {
        let deadline = crate::util::deadline_in(timeout);
        loop {
            self.inner.check_open()?;
            let workers: Vec<(usize, Arc<Instance>)> = (0..self.len())
                .filter_map(|i| Some((i, self.inner.slots[i].current.read().clone()?.inst)))
                .collect();
            // Lines already queued, or already in a pipe, go first, in index order from a
            // rotating start so no instance starves the others.
            let n = workers.len().max(1);
            let first = self.inner.read_any_next.fetch_add(1, Relaxed) % n;
            for k in 0..workers.len() {
                let (i, inst) = &workers[(first + k) % n];
                if let Some(line) = inst.stdout.take_available().queue.pop_front() {
                    return Ok((*i, line));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::timeout(
                    format!("stdout of any instance of '{}'", self.inner.spec.id),
                    timeout,
                ));
            }
            // Wait for any pipe to become readable (a short slice, so restarted instances
            // and lines queued by another reader are noticed).
            let open: Vec<libc::pollfd> = workers
                .iter()
                .filter(|(_, w)| !w.stdout.eof())
                .map(|(_, w)| libc::pollfd {
                    fd: w.stdout.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let slice = (deadline - now).min(READ_ANY_SLICE);
            if open.is_empty() {
                std::thread::sleep(slice);
            } else {
                let mut fds = open;
                // SAFETY: poll on valid pollfds of pipes kept open by `workers`.
                unsafe {
                    libc::poll(
                        fds.as_mut_ptr(),
                        fds.len() as libc::nfds_t,
                        slice.as_millis().max(1) as i32,
                    )
                };
            }
        }
    }

    /// Per-instance status.
    pub fn status(&self) -> PoolStatus {
        self.inner.status()
    }

    /// Counts of alive and dead instances, plus their status.
    pub fn health(&self) -> Health {
        let instances = self.inner.status().instances;
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

    /// Request metrics of the pool and each instance.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics_snapshot()
    }

    /// Stop instance `index` (group kill) and start it again with the same spec; also
    /// clears a `failed` mark. Returns once the new process is ready.
    pub fn restart(&self, index: usize) -> Result<()> {
        self.inner.check_index(index)?;
        self.inner.check_open()?;
        self.inner.restart_slot(index)
    }

    /// Shut the pool down: close every stdin, give the tools a moment to exit, SIGTERM each
    /// process group, wait up to `grace`, SIGKILL, reap, join every thread. Idempotent;
    /// later calls return at once. Requests waiting for an instance get
    /// [`Error::ShutDown`].
    pub fn shutdown(&self, grace: Duration) {
        if self.inner.shut_down.swap(true, Relaxed) {
            return;
        }
        // Not under the lock: the waiter threads take it to notify the supervisor.
        let sup = self.inner.supervisor.lock().take();
        if let Some(sup) = sup {
            sup.stop();
        }
        self.inner.route_cv.notify_all();
        self.inner.stop_all(grace);
    }

    /// True after [`Pool::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Relaxed)
    }

    /// The limiter this pool's processes count against.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }
}

impl Drop for Pool {
    /// Shuts down with the spec's grace period: no child outlives the pool.
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(self.inner.spec.shutdown.grace_ms));
    }
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("tool", &self.inner.spec.id)
            .field("count", &self.len())
            .finish()
    }
}

impl Slot {
    fn new() -> Slot {
        Slot {
            current: RwLock::new(None),
            start_lock: Mutex::new(()),
            counters: Arc::new(Counters::default()),
            restarts: AtomicU64::new(0),
            failed: Mutex::new(None),
            last_exit: Mutex::new(None),
            metrics: Metrics::default(),
            sup: Mutex::new(supervisor::SlotSup::default()),
            protocol_errors: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
        }
    }
}

impl PoolInner {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.shut_down.load(Relaxed) {
            Err(Error::ShutDown(self.spec.id.clone()))
        } else {
            Ok(())
        }
    }

    pub(crate) fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.slots.len() {
            return Err(Error::IndexOutOfRange {
                tool: self.spec.id.clone(),
                index,
                count: self.slots.len(),
            });
        }
        Ok(())
    }

    /// The current worker at `index`. With `start`, a lazily stopped slot is started.
    pub(crate) fn worker(self: &Arc<Self>, index: usize, start: bool) -> Result<Worker> {
        self.check_index(index)?;
        self.check_open()?;
        if let Some(reason) = self.slots[index].failed.lock().clone() {
            return Err(Error::Failed {
                tool: self.spec.id.clone(),
                index,
                reason,
            });
        }
        if let Some(w) = self.slots[index].current.read().clone() {
            return Ok(w);
        }
        if self.disabled {
            return Err(Error::unavailable(&self.spec.id, "the pool is disabled"));
        }
        if start {
            self.ensure_started(index)?;
            if let Some(w) = self.slots[index].current.read().clone() {
                return Ok(w);
            }
        }
        Err(Error::InstanceDead(crate::error::DeathInfo {
            tool: self.spec.id.clone(),
            index,
            exit: *self.slots[index].last_exit.lock(),
            stderr_tail: vec!["instance is not running".into()],
        }))
    }

    /// Start every slot: spawn all, then wait for all to be ready (in parallel). On any
    /// failure every process started here is killed.
    fn start_all(self: &Arc<Self>) -> Result<()> {
        let deadline = self.start_deadline();
        let mut started = Vec::new();
        let mut failure = None;
        for i in 0..self.slots.len() {
            match self.spawn_worker(i) {
                Ok(w) => started.push(w),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = started
                .iter()
                .find_map(|w| self.await_ready(w, deadline).err());
        }
        if let Some(e) = failure {
            for w in started {
                w.inst.kill();
            }
            return Err(e);
        }
        for (i, w) in started.into_iter().enumerate() {
            self.install(i, w);
        }
        Ok(())
    }

    /// Start `index` if it has no process (lazy start, after idle stop, after death).
    pub(crate) fn ensure_started(self: &Arc<Self>, index: usize) -> Result<()> {
        let slot = &self.slots[index];
        let _g = slot.start_lock.lock();
        if let Some(w) = slot.current.read().as_ref() {
            if w.inst.state() != State::Dead {
                return Ok(());
            }
        }
        self.check_open()?;
        self.replace_locked(index)
    }

    /// Kill whatever runs at `index` and start a fresh process (counts as a restart).
    pub(crate) fn restart_slot(self: &Arc<Self>, index: usize) -> Result<()> {
        let slot = &self.slots[index];
        let _g = slot.start_lock.lock();
        // Asked for: a fresh start, with a clean restart history and backoff.
        *slot.failed.lock() = None;
        {
            let mut s = slot.sup.lock();
            s.restart_times.clear();
            s.backoff = None;
        }
        self.replace_locked(index)
    }

    /// With the slot's start lock held: retire the current process, start a new one.
    pub(crate) fn replace_locked(self: &Arc<Self>, index: usize) -> Result<()> {
        let slot = &self.slots[index];
        let old = slot.current.write().take();
        if let Some(old) = old {
            self.retire(index, old);
            slot.restarts.fetch_add(1, Relaxed);
        }
        self.check_open()?;
        let w = self.spawn_worker(index)?;
        // Installed at once, so status shows it `starting` (routing takes it once ready).
        self.install(index, w.clone());
        if let Some(line) = &self.spec.startup.ready_line {
            let deadline = self.start_deadline();
            if let Err(e) = w.inst.wait_ready(deadline, line) {
                // It stays in the slot as dead, with its stderr tail, until replaced.
                w.inst.process.signal(libc::SIGKILL);
                return Err(e);
            }
            // Ready now: callers waiting for an instance may take it.
            self.wake_routers();
        }
        Ok(())
    }

    /// Stop the process at `index` on purpose (idle timeout); it starts again on use.
    pub(crate) fn stop_slot(&self, index: usize) {
        let slot = &self.slots[index];
        let _g = slot.start_lock.lock();
        // Never kill under a slot lock: the waiter's exit callback takes the route lock,
        // and status() holds that while it reads the slot.
        let old = slot.current.write().take();
        if let Some(old) = old {
            self.retire(index, old);
        }
    }

    /// When a process started now must be ready (`startup.timeout_ms`).
    fn start_deadline(&self) -> Instant {
        crate::util::deadline_in(Duration::from_millis(self.spec.startup.timeout_ms))
    }

    /// Kill a worker taken out of slot `index`, keeping its JSON-RPC counters.
    pub(crate) fn retire(&self, index: usize, w: Worker) {
        w.inst.kill();
        if let Some(d) = &w.rpc {
            let slot = &self.slots[index];
            slot.protocol_errors
                .fetch_add(d.protocol_errors.load(Relaxed), Relaxed);
            slot.late_replies
                .fetch_add(d.late_replies.load(Relaxed), Relaxed);
        }
    }

    /// Spawn a process for `index` and wait until it is ready (not installed).
    pub(crate) fn spawn_ready(self: &Arc<Self>, index: usize) -> Result<Worker> {
        let w = self.spawn_worker(index)?;
        let deadline = self.start_deadline();
        self.await_ready(&w, deadline)?;
        Ok(w)
    }

    fn spawn_worker(self: &Arc<Self>, index: usize) -> Result<Worker> {
        let rpc =
            (self.spec.protocol == Protocol::Jsonrpc).then(|| Arc::new(Dispatcher::new(index)));
        let filter = rpc.clone().map(|d| d as Arc<dyn StdoutFilter>);
        let weak: Weak<PoolInner> = Arc::downgrade(self);
        let on_exit = Box::new(move |exit: ExitInfo| {
            if let Some(p) = weak.upgrade() {
                p.on_exit(index, exit);
            }
        });
        let inst = Instance::start(
            &self.spec,
            index,
            &self.limiter,
            Arc::clone(&self.slots[index].counters),
            filter,
            on_exit,
        )?;
        Ok(Worker { inst, rpc })
    }

    fn await_ready(&self, w: &Worker, deadline: Instant) -> Result<()> {
        if let Some(line) = &self.spec.startup.ready_line {
            if let Err(e) = w.inst.wait_ready(deadline, line) {
                w.inst.kill();
                return Err(e);
            }
        }
        Ok(())
    }

    fn install(&self, index: usize, w: Worker) {
        let slot = &self.slots[index];
        *slot.current.write() = Some(w);
        slot.sup.lock().on_start();
        self.wake_routers();
    }

    /// Runs on the waiter thread when a process of slot `index` has been reaped.
    fn on_exit(&self, index: usize, exit: ExitInfo) {
        *self.slots[index].last_exit.lock() = Some(exit);
        self.wake_routers();
        if let Some(s) = self.supervisor.lock().as_ref() {
            s.notify();
        }
    }

    /// Graceful stop of every slot, in lockstep so the total is bounded by `grace`.
    fn stop_all(&self, grace: Duration) {
        let workers: Vec<Worker> = self
            .slots
            .iter()
            .filter_map(|s| {
                let _g = s.start_lock.lock();
                s.current.write().take()
            })
            .collect();
        for w in &workers {
            w.inst.stopped.store(true, Relaxed);
            w.inst.close_stdin();
        }
        let end = crate::util::deadline_in(grace);
        let polite = (grace / 4).min(Duration::from_millis(250));
        wait_all(&workers, crate::util::deadline_in(polite));
        for w in &workers {
            w.inst.process.signal(libc::SIGTERM);
        }
        wait_all(&workers, end);
        for w in &workers {
            w.inst.kill();
        }
    }

    /// Take in what the children have written so far (without waiting), so counters of
    /// late replies and protocol errors are current even when nobody is reading.
    fn pull_output(&self) {
        for slot in &self.slots {
            let w = slot.current.read().clone();
            if let Some(w) = w {
                drop(w.inst.stdout.take_available());
            }
        }
    }

    pub(crate) fn metrics_snapshot(&self) -> MetricsSnapshot {
        self.pull_output();
        let route = self.route.lock();
        let instances: Vec<InstanceMetrics> = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let w = slot.current.read().clone();
                let rpc = w.as_ref().and_then(|w| w.rpc.clone());
                let m = &slot.metrics;
                InstanceMetrics {
                    index: i,
                    requests_ok: m.ok.load(Relaxed),
                    requests_error: m.error.load(Relaxed),
                    requests_timeout: m.timeout.load(Relaxed),
                    lines_in: slot.counters.lines_sent.load(Relaxed),
                    lines_out: slot.counters.lines_received.load(Relaxed),
                    protocol_errors: slot.protocol_errors.load(Relaxed)
                        + rpc.as_ref().map_or(0, |d| d.protocol_errors.load(Relaxed)),
                    late_replies_dropped: slot.late_replies.load(Relaxed)
                        + rpc.as_ref().map_or(0, |d| d.late_replies.load(Relaxed)),
                    restarts: slot.restarts.load(Relaxed),
                    in_flight: route.in_flight[i],
                    stdin_queue: w.as_ref().map_or(0, |w| w.inst.stdin_queue_len()),
                    latency: m.latency.snapshot(),
                }
            })
            .collect();
        let sum = |f: &dyn Fn(&InstanceMetrics) -> u64| instances.iter().map(f).sum::<u64>();
        let m = &self.metrics;
        MetricsSnapshot {
            tool: self.spec.id.clone(),
            requests_ok: m.ok.load(Relaxed),
            requests_error: m.error.load(Relaxed),
            requests_timeout: m.timeout.load(Relaxed),
            requests_fallback: m.fallback.load(Relaxed),
            lines_in: sum(&|i| i.lines_in),
            lines_out: sum(&|i| i.lines_out),
            protocol_errors: sum(&|i| i.protocol_errors),
            late_replies_dropped: sum(&|i| i.late_replies_dropped),
            restarts: sum(&|i| i.restarts),
            in_flight: route.in_flight.iter().sum(),
            queue_depth: route.waiting,
            waited_for_instance: route.waited_total,
            latency: m.latency.snapshot(),
            instances,
        }
    }

    pub(crate) fn status(&self) -> PoolStatus {
        self.pull_output();
        let route = self.route.lock();
        let instances = (0..self.slots.len())
            .map(|i| self.instance_status(i, &route))
            .collect();
        PoolStatus {
            tool: self.spec.id.clone(),
            shut_down: self.shut_down.load(Relaxed),
            disabled: self.disabled,
            waited_for_instance: route.waited_total,
            waiting: route.waiting,
            instances,
        }
    }

    fn instance_status(&self, i: usize, route: &RouteState) -> InstanceStatus {
        let slot = &self.slots[i];
        let w = slot.current.read().clone();
        let failed = slot.failed.lock().clone();
        let c = &slot.counters;
        let state = match (&w, &failed) {
            (_, Some(_)) => State::Failed,
            (Some(w), None) => w.inst.state(),
            (None, None) => State::Stopped,
        };
        let sup = slot.sup.lock();
        // No process because a restart failed and another is pending: dead, not stopped.
        let state = match state {
            State::Stopped if sup.start_failed || sup.restart_due => State::Dead,
            other => other,
        };
        let now = Instant::now();
        InstanceStatus {
            index: i,
            pid: w.as_ref().map(|w| w.inst.process.pid()),
            state,
            exit: w
                .as_ref()
                .and_then(|w| w.inst.process.exit())
                .or(*slot.last_exit.lock()),
            failed_reason: failed,
            restarts: slot.restarts.load(Relaxed),
            lines_sent: c.lines_sent.load(Relaxed),
            lines_received: c.lines_received.load(Relaxed),
            lines_split: c.lines_split.load(Relaxed),
            stderr_lines: c.stderr_lines.load(Relaxed),
            stderr_dropped: c.stderr_dropped.load(Relaxed),
            stdin_dropped: c.stdin_dropped.load(Relaxed),
            stdout_dropped: c.stdout_dropped.load(Relaxed),
            unsolicited: c.unsolicited.load(Relaxed),
            uptime_ms: w
                .as_ref()
                .filter(|w| w.inst.process.is_alive())
                .map(|w| w.inst.process.started().elapsed().as_millis() as u64),
            in_flight: route.in_flight[i],
            leased: route.leased[i],
            current_request_age_ms: route.busy_since[i]
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            requests: slot.metrics.requests_total(),
            last_probe_ago_ms: sup
                .last_probe
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            last_probe_us: sup.last_probe_latency.map(|d| d.as_micros() as u64),
            stderr_tail: w.as_ref().map(|w| w.inst.stderr_tail()).unwrap_or_default(),
            protocol_errors_tail: w
                .as_ref()
                .and_then(|w| w.rpc.as_ref())
                .map(|d| d.bad_lines())
                .unwrap_or_default(),
        }
    }
}

fn wait_all(workers: &[Worker], deadline: Instant) {
    for w in workers {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        w.inst.process.wait_timeout(deadline - now);
    }
}
