//! One instance: a public index of a pool, and what outlives each of its incarnations
//! (the running process, [`Incarnation`]): counters, metrics, restarts, the failed mark,
//! the last exit, and the supervisor's bookkeeping ([`Supervision`], a submodule).
//!
//! The instance owns its current incarnation: it is installed, replaced and taken out only
//! through the methods here, under [`Instance::start_lock`] for starts and restarts.
//! [`Supervision`] changes only through its own transitions (the request path counts
//! requests, recycling asks for replacements, the supervisor thread schedules restarts).

use crate::error::ExitInfo;
use crate::incarnation::Incarnation;
use crate::metrics::{Counters, Metrics, Recycles};
use parking_lot::{Mutex, MutexGuard, RwLock};
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;

mod supervision;
pub(crate) use supervision::{Next, Scheduled, Supervision};

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
        self.supervision.lock().started();
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

    /// The supervisor's bookkeeping, locked (its fields are private: it changes only
    /// through its transitions, see [`Supervision`]).
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
