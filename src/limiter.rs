//! The process-wide limit on concurrent processes, and the list of every process it counts.
//!
//! One [`Limiter::global`] is shared by every pool, run and permit of the host process (a
//! pool may be given its own). It counts three kinds of process ([`ProcessKind`]): pool
//! instances and runs, which toolpool starts (`Limiter::spawn`), and processes the host
//! starts itself and registers on a [`Permit`] ([`Limiter::acquire`],
//! [`Permit::register_pid`]). A start or an `acquire` beyond the limit waits, then fails
//! with [`Error::LimitReached`]. Lowering the limit never kills; [`Limiter::kill_all`]
//! SIGKILLs every counted process.
//!
//! A slot comes back:
//! - for a child of toolpool, once it has been reaped and its stderr read to the end (at
//!   most 100 ms after its exit, see `crate::stderr`);
//! - for a permit, when it is dropped, or when its registered process exits. That exit is
//!   seen without polling, through a pidfd: one watcher thread per limiter `poll`s the
//!   pidfds of every registered process (and an eventfd that tells it the set changed);
//!   it starts with the first registration and ends when none is left. One thread for all,
//!   not one per permit: a host may register hundreds of builds, and one `poll` over their
//!   fds costs one thread instead of hundreds. (Where the kernel gives no pidfd, see
//!   `ExitWatch`.)
//!
//! A registered process is signalled only through its pidfd, so a pid that has been
//! reaped (by the host) and reused is never signalled (see `signal_registered`).

mod permit;
pub(crate) use permit::ElsewhereSlot;
pub use permit::Permit;
use permit::{signal_registered, ExitWatch};

use crate::cancel::{cancelled, CancelToken, Wait};
use crate::error::{Error, Result};
use crate::process::{self, Launch, OnExit, Process, Spawned};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Environment variable giving the initial global limit (absent or 0: no limit).
pub const MAX_PROCESSES_ENV: &str = "TOOLPOOL_MAX_PROCESSES";

/// Utilization above which [`LimiterStatus::warning`] is set.
pub const WARN_UTILIZATION_PERCENT: f64 = 80.0;

/// What a counted process is, in [`LimiterStatus::processes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// A pool's instance (its current incarnation).
    Instance,
    /// A run (`toolpool::Run`, `run_output`, a pool's one-shot fallback).
    Run,
    /// A process the host started and registered on a [`Permit`].
    Registered,
}

/// One counted process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its pid (for a child of toolpool also its process group id).
    pub pid: i32,
    /// What it is.
    pub kind: ProcessKind,
    /// The pool's tool id, or the run's name; `None` for a registered process.
    pub name: Option<String>,
}

/// Who a child of toolpool is, for [`LimiterStatus::processes`].
pub(crate) struct Owner {
    pub kind: ProcessKind,
    pub name: String,
}

/// How a counted process is reached.
enum Target {
    /// A child of toolpool (signalled through its group, under its reaper's lock).
    Child(Arc<Process>),
    /// A process the host registered on permit number `permit`, watched through `exit`.
    Registered { permit: u64, exit: Arc<ExitWatch> },
}

struct Entry {
    kind: ProcessKind,
    name: Option<String>,
    target: Target,
}

/// The count of processes and slots, under the limiter's lock: the one owner of both.
#[derive(Default)]
struct Tally {
    max: usize,
    /// Slots taken with no process yet: spawns in progress, permits with no pid.
    reserved: usize,
    /// Bumped by every `kill_all`: a process whose permit was taken before (the permit
    /// holds an older value) is killed as it joins the count, so a kill-all never misses a
    /// process that was being started (and may already be visible) while it ran.
    kill_epoch: u64,
    procs: BTreeMap<i32, Entry>,
    next_permit: u64,
    watcher: Watcher,
}

/// The pidfd watcher of the registered processes.
#[derive(Default)]
struct Watcher {
    /// An eventfd that wakes its `poll` when the set changes (made on first use).
    wake: Option<Arc<OwnedFd>>,
    running: bool,
}

impl Tally {
    fn running(&self) -> usize {
        self.reserved + self.procs.len()
    }
    fn has_room(&self) -> bool {
        self.max == 0 || self.running() < self.max
    }
}

/// A cap on concurrent processes, and the list of every one it counts.
#[derive(Default)]
pub struct Limiter {
    state: Mutex<Tally>,
    freed: Condvar,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("status", &self.status())
            .finish()
    }
}

/// A snapshot of a limiter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterStatus {
    /// Slots in use: processes counted, starts in progress, permits without a pid.
    pub active_processes: usize,
    /// The limit; 0 means no limit.
    pub max_allowed: usize,
    /// `active / max * 100`, 0 without a limit.
    pub utilization_percent: f64,
    /// Whether a start now would proceed without waiting.
    pub can_start_new: bool,
    /// Pids of the counted processes (for a child of toolpool also its process group id).
    pub active_pids: Vec<i32>,
    /// Set above 80% utilization.
    pub warning: Option<String>,
    /// Slots taken with no process yet (in `active_processes`, not in `active_pids`):
    /// starts in progress and permits with no registered pid.
    pub reserved: usize,
    /// Every counted process with its kind and name, by pid.
    pub processes: Vec<ProcessInfo>,
}

/// What [`Limiter::kill_all`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    /// Processes signalled (each with its process group, for a child of toolpool or a
    /// registered process that leads one).
    pub killed_count: usize,
    /// Their pids.
    pub killed_pids: Vec<i32>,
}

impl Limiter {
    /// A new limiter; `max` 0 means no limit.
    pub fn new(max: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            state: Mutex::new(Tally {
                max,
                ..Tally::default()
            }),
            freed: Condvar::new(),
        })
    }

    /// The host-wide limiter, created on first use with the limit from
    /// `TOOLPOOL_MAX_PROCESSES` (no limit when unset, empty or 0).
    pub fn global() -> &'static Arc<Limiter> {
        static GLOBAL: OnceLock<Arc<Limiter>> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let max = std::env::var(MAX_PROCESSES_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            Limiter::new(max)
        })
    }

    /// Change the limit (0: no limit); returns `(old, new)`. Never kills.
    pub fn set_limit(&self, max: usize) -> (usize, usize) {
        let old = std::mem::replace(&mut self.state.lock().max, max);
        self.freed.notify_all();
        (old, max)
    }

    /// The limit in force (0: none).
    pub fn limit(&self) -> usize {
        self.state.lock().max
    }

    /// A snapshot of the count, the limit and the processes.
    pub fn status(&self) -> LimiterStatus {
        let st = self.state.lock();
        let active = st.running();
        let util = if st.max == 0 {
            0.0
        } else {
            active as f64 * 100.0 / st.max as f64
        };
        LimiterStatus {
            active_processes: active,
            max_allowed: st.max,
            utilization_percent: (util * 10.0).round() / 10.0,
            can_start_new: st.has_room(),
            active_pids: st.procs.keys().copied().collect(),
            warning: (util > WARN_UTILIZATION_PERCENT)
                .then(|| format!("process limit {:.0}% used ({active} of {})", util, st.max)),
            reserved: st.reserved,
            processes: st
                .procs
                .iter()
                .map(|(&pid, e)| ProcessInfo {
                    pid,
                    kind: e.kind,
                    name: e.name.clone(),
                })
                .collect(),
        }
    }

    /// SIGKILL every counted process: each child of toolpool with its process group
    /// (pools see their instances die and follow their restart policy; runs end with
    /// signal 9), each registered process through its pidfd, with its group if it leads
    /// one. A process being started meanwhile is killed as it joins the count.
    pub fn kill_all(&self) -> KillReport {
        enum Kill {
            Child(Arc<Process>),
            Registered(i32, Arc<ExitWatch>),
        }
        let targets: Vec<Kill> = {
            let mut st = self.state.lock();
            st.kill_epoch += 1;
            st.procs
                .iter()
                .map(|(&pid, e)| match &e.target {
                    Target::Child(p) => Kill::Child(Arc::clone(p)),
                    Target::Registered { exit, .. } => Kill::Registered(pid, Arc::clone(exit)),
                })
                .collect()
        };
        let killed_pids: Vec<i32> = targets
            .iter()
            .filter_map(|k| match k {
                Kill::Child(p) => p.signal(libc::SIGKILL).then(|| p.pid()),
                Kill::Registered(pid, fd) => signal_registered(*pid, fd).then_some(*pid),
            })
            .collect();
        KillReport {
            killed_count: killed_pids.len(),
            killed_pids,
        }
    }

    /// Take one slot, waiting up to the wait's timeout for room (or until its token is
    /// cancelled: [`Error::Cancelled`]). Past the wait: [`Error::LimitReached`], whose
    /// message names the count and the limit (`maximum concurrent processes reached: 5
    /// of 5`); a timeout of 0 fails at once when the limit is full.
    pub fn acquire(self: &Arc<Self>, wait: impl Into<Wait>) -> Result<Permit> {
        let wait = wait.into();
        self.take_slot(wait.timeout(), wait.token())
    }

    /// Start `launch` within the limit (waiting up to `wait` for room, or until `cancel`),
    /// listed as `owner`. The process counts until it is reaped; then `on_exit` runs on the
    /// thread that reaped it (whoever the caller hands the returned [`Spawned::reaper`] to).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        launch: &Launch,
        owner: Owner,
        wait: Duration,
        cancel: Option<&CancelToken>,
        on_exit: OnExit,
    ) -> Result<Spawned> {
        let permit = self.take_slot(wait, cancel)?;
        let mut sp = process::spawn(launch)?;
        // Registered before anyone can reap it, so a child that exits at once is released
        // after it was counted, never before.
        permit.bind(&sp.process, owner);
        let limiter = Arc::clone(self);
        let process = Arc::clone(&sp.process);
        sp.reaper.on_exit(Box::new(move |exit| {
            limiter.release(&process);
            on_exit(exit);
        }));
        Ok(sp)
    }

    fn take_slot(self: &Arc<Self>, wait: Duration, cancel: Option<&CancelToken>) -> Result<Permit> {
        let deadline = crate::util::deadline_in(wait);
        let _registered = cancel.map(|c| {
            let me = Arc::downgrade(self);
            c.on_cancel(Arc::new(move || {
                if let Some(l) = me.upgrade() {
                    drop(l.state.lock());
                    l.freed.notify_all();
                }
            }))
        });
        let mut st = self.state.lock();
        if !st.has_room() && !cancelled(cancel) && !wait.is_zero() {
            let (limit, running) = (st.max, st.running());
            // Not under the limiter's lock: a host's log callback may take its time.
            drop(st);
            log::info!(
                target: "toolpool",
                "waiting for a process slot limit={limit} running={running} wait_ms={}",
                wait.as_millis()
            );
            st = self.state.lock();
        }
        while !st.has_room() {
            if cancelled(cancel) {
                return Err(Error::Cancelled(format!(
                    "room under the process limit ({} of {} running)",
                    st.running(),
                    st.max
                )));
            }
            if wait.is_zero() || self.freed.wait_until(&mut st, deadline).timed_out() {
                if st.has_room() {
                    break;
                }
                let (limit, running) = (st.max, st.running());
                drop(st);
                log::warn!(
                    target: "toolpool",
                    "limit reached limit={limit} running={running} waited_ms={}",
                    wait.as_millis()
                );
                return Err(Error::LimitReached {
                    limit,
                    running,
                    waited: wait,
                });
            }
        }
        st.reserved += 1;
        st.next_permit += 1;
        Ok(Permit::new(Arc::clone(self), st.next_permit, st.kill_epoch))
    }

    /// `process`, reaped, leaves the count (if its pid was not taken over meanwhile).
    fn release(&self, process: &Arc<Process>) {
        let mut st = self.state.lock();
        let pid = process.pid();
        if st
            .procs
            .get(&pid)
            .is_some_and(|e| matches!(&e.target, Target::Child(p) if Arc::ptr_eq(p, process)))
        {
            st.procs.remove(&pid);
        }
        drop(st);
        self.freed.notify_all();
    }
}
