//! One instance: a public index of a pool, and what outlives each of its incarnations
//! (the running process, [`Incarnation`]): counters, metrics, restarts, the failed mark,
//! the last exit, and the supervisor's bookkeeping ([`Supervision`]).
//!
//! The instance owns its current incarnation: it is installed, replaced and taken out only
//! through the methods here, under [`Instance::start_lock`] for starts and restarts.

use crate::error::ExitInfo;
use crate::incarnation::Incarnation;
use crate::metrics::{Counters, Metrics, RecycleReason, Recycles};
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::collections::VecDeque;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The supervisor's bookkeeping for one instance (changed by the supervisor, read by
/// status and routing).
#[derive(Debug, Default)]
pub(crate) struct Supervision {
    pub started_at: Option<Instant>,
    pub last_used: Option<Instant>,
    pub served: u64,
    pub recycle_at: Option<u64>,
    /// Replace now, whatever the policy (timed-out request, failed probe).
    pub replace_now: bool,
    /// Replace gracefully: start the new process before retiring the old one.
    pub recycle: bool,
    /// A restart is due (policy), at `next_restart`.
    pub restart_due: bool,
    /// The last start attempt failed; another is scheduled with backoff.
    pub start_failed: bool,
    pub next_restart: Option<Instant>,
    pub backoff: Option<Duration>,
    pub restart_times: VecDeque<Instant>,
    pub last_probe: Option<Instant>,
    pub last_probe_latency: Option<Duration>,
    /// Why `recycle` was set (none: the age, `max_lifetime_ms`).
    pub recycle_reason: Option<RecycleReason>,
}

impl Supervision {
    /// A new process is on its way (replacement, recycle or scheduled restart).
    pub(crate) fn will_start(&self) -> bool {
        self.replace_now || self.recycle || self.restart_due || self.start_failed
    }

    /// An incarnation was just installed.
    fn on_start(&mut self) {
        let now = Instant::now();
        self.started_at = Some(now);
        self.last_used = Some(now);
        self.served = 0;
        self.recycle_at = None;
        self.replace_now = false;
        self.recycle = false;
        self.recycle_reason = None;
        self.restart_due = false;
        self.next_restart = None;
    }

    /// A restart asked for by the user: a clean restart history and backoff.
    fn clear_history(&mut self) {
        self.restart_times.clear();
        self.backoff = None;
    }
}

/// One instance index.
#[derive(Default)]
pub(crate) struct Instance {
    current: RwLock<Option<Arc<Incarnation>>>,
    /// Serialises starts and restarts of this index.
    pub start_lock: Mutex<()>,
    /// Line counters of every incarnation, shared with the current one.
    pub counters: Arc<Counters>,
    /// Requests served by this index.
    pub metrics: Metrics,
    /// Recycles of this index, by reason.
    pub recycles: Recycles,
    restarts: AtomicU64,
    failed: Mutex<Option<String>>,
    /// Mirrors `failed.is_some()` (written under its lock), so routing asks without
    /// taking a lock on every pick.
    is_failed: AtomicBool,
    last_exit: Mutex<Option<ExitInfo>>,
    supervision: Mutex<Supervision>,
    /// JSON-RPC counters of retired incarnations.
    protocol_errors: AtomicU64,
    late_replies: AtomicU64,
}

impl Instance {
    /// The incarnation running now, if any.
    pub fn current(&self) -> Option<Arc<Incarnation>> {
        self.current.read().clone()
    }

    /// `f` of the incarnation running now, under the read lock (no clone: the routing
    /// hot path).
    pub fn with_current<R>(&self, f: impl FnOnce(Option<&Incarnation>) -> R) -> R {
        f(self.current.read().as_deref())
    }

    /// The incarnation running now if `f` holds for it (one read lock: the routing hot
    /// path checks and takes it at once).
    pub fn current_if(&self, f: impl FnOnce(&Incarnation) -> bool) -> Option<Arc<Incarnation>> {
        self.current.read().as_ref().filter(|c| f(c)).cloned()
    }

    /// True when the incarnation running now has pid `pid` (and `also` holds for it).
    pub fn current_is(&self, pid: i32, also: impl Fn(&Incarnation) -> bool) -> bool {
        self.current
            .read()
            .as_ref()
            .is_some_and(|c| c.pid() == pid && also(c))
    }

    /// Install `inc` as the current incarnation (status shows it at once; routing takes
    /// it once ready). Returns the one it replaced, which the caller retires.
    pub fn install(&self, inc: Arc<Incarnation>) -> Option<Arc<Incarnation>> {
        let old = self.current.write().replace(inc);
        self.supervision.lock().on_start();
        old
    }

    /// Take the current incarnation out (to retire it).
    pub fn take_current(&self) -> Option<Arc<Incarnation>> {
        self.current.write().take()
    }

    /// Stop an incarnation taken out of this instance, keeping its JSON-RPC counters.
    pub fn retire(&self, old: Arc<Incarnation>) {
        old.stop();
        if let Some(d) = old.rpc() {
            self.protocol_errors
                .fetch_add(d.protocol_errors.load(Relaxed), Relaxed);
            self.late_replies
                .fetch_add(d.late_replies.load(Relaxed), Relaxed);
        }
    }

    /// Count a restart (by `restart`, the supervisor or recycling).
    pub fn count_restart(&self) {
        self.restarts.fetch_add(1, Relaxed);
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Relaxed)
    }

    /// Why the supervisor marked it failed, if it did.
    pub fn failed(&self) -> Option<String> {
        if !self.is_failed() {
            return None;
        }
        self.failed.lock().clone()
    }

    /// True while marked failed.
    pub fn is_failed(&self) -> bool {
        self.is_failed.load(Acquire)
    }

    /// Mark failed: no automatic restart until a manual one.
    pub fn mark_failed(&self, reason: String) {
        let mut f = self.failed.lock();
        *f = Some(reason);
        self.is_failed.store(true, Release);
    }

    /// A restart asked for: clear the failed mark, the restart history and the backoff.
    pub fn clear_failure(&self) {
        let mut f = self.failed.lock();
        *f = None;
        self.is_failed.store(false, Release);
        drop(f);
        self.supervision.lock().clear_history();
    }

    /// How the last incarnation ended.
    pub fn last_exit(&self) -> Option<ExitInfo> {
        *self.last_exit.lock()
    }

    /// Record how an incarnation ended (from the thread that reaped it).
    pub fn set_last_exit(&self, exit: ExitInfo) {
        *self.last_exit.lock() = Some(exit);
    }

    /// The supervisor's bookkeeping, locked.
    pub fn supervision(&self) -> MutexGuard<'_, Supervision> {
        self.supervision.lock()
    }

    /// JSON-RPC protocol errors and late replies, of every incarnation.
    pub fn rpc_counts(&self) -> (u64, u64) {
        let rpc = self.current().and_then(|c| c.rpc().cloned());
        let now = |f: fn(&crate::rpc::Dispatcher) -> u64| rpc.as_deref().map_or(0, f);
        (
            self.protocol_errors.load(Relaxed) + now(|d| d.protocol_errors.load(Relaxed)),
            self.late_replies.load(Relaxed) + now(|d| d.late_replies.load(Relaxed)),
        )
    }
}
