//! The process-wide limit on concurrent child processes.
//!
//! One [`Limiter::global`] is shared by every pool and every one-shot run of the host
//! process (a pool may be given its own). A start beyond the limit waits, then fails with
//! [`Error::LimitReached`]. Lowering the limit never kills; it only holds back new starts.
//! A child leaves the count when its end is reported: once it has been reaped and its
//! stderr read to the end, at most 100 ms after its exit (see `crate::stderr`).

use crate::cancel::{cancelled, CancelToken};
use crate::error::{Error, Result};
use crate::process::{self, Launch, OnExit, Process, Spawned};
use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Environment variable giving the initial global limit (absent or 0: no limit).
pub const MAX_PROCESSES_ENV: &str = "TOOLPOOL_MAX_PROCESSES";

/// Utilization above which [`LimiterStatus::warning`] is set.
pub const WARN_UTILIZATION_PERCENT: f64 = 80.0;

/// The count of processes and starts in progress, under the limiter's lock.
#[derive(Default)]
struct Tally {
    max: usize,
    reserved: usize,
    /// Bumped by every `kill_all`: a process whose spawn began before (its permit holds
    /// an older value) is killed when it registers, so a kill-all never misses a process
    /// that was being spawned (and may already be visible) while it ran.
    kill_epoch: u64,
    procs: BTreeMap<i32, Arc<Process>>,
}

impl Tally {
    fn running(&self) -> usize {
        self.reserved + self.procs.len()
    }
    fn has_room(&self) -> bool {
        self.max == 0 || self.running() < self.max
    }
}

/// A cap on concurrent child processes, and the list of every one we started.
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
    /// Processes running (and starts in progress).
    pub active_processes: usize,
    /// The limit; 0 means no limit.
    pub max_allowed: usize,
    /// `active / max * 100`, 0 without a limit.
    pub utilization_percent: f64,
    /// Whether a start now would proceed without waiting.
    pub can_start_new: bool,
    /// Pids (= process group ids) of the running children.
    pub active_pids: Vec<i32>,
    /// Set above 80% utilization.
    pub warning: Option<String>,
}

/// What [`Limiter::kill_all`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillReport {
    /// Process groups signalled.
    pub killed_count: usize,
    /// Their leaders' pids.
    pub killed_pids: Vec<i32>,
}

/// A reserved place under the limit; becomes a registered process with [`Permit::bind`], or is given back
/// when dropped.
struct Permit {
    limiter: Arc<Limiter>,
    bound: bool,
    /// `kill_epoch` when the permit was taken.
    epoch: u64,
}

impl Permit {
    fn bind(mut self, process: &Arc<Process>) {
        let mut st = self.limiter.state.lock();
        st.reserved -= 1;
        st.procs.insert(process.pid(), Arc::clone(process));
        self.bound = true;
        if st.kill_epoch != self.epoch {
            process.signal(libc::SIGKILL);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.bound {
            self.limiter.state.lock().reserved -= 1;
            self.limiter.freed.notify_all();
        }
    }
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

    /// A snapshot of the count, the limit and the pids.
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
        }
    }

    /// SIGKILL every process group started under this limiter. Pools see their instances
    /// die and follow their restart policy.
    pub fn kill_all(&self) -> KillReport {
        let procs: Vec<Arc<Process>> = {
            let mut st = self.state.lock();
            st.kill_epoch += 1;
            st.procs.values().cloned().collect()
        };
        let killed_pids: Vec<i32> = procs
            .iter()
            .filter(|p| p.signal(libc::SIGKILL))
            .map(|p| p.pid())
            .collect();
        KillReport {
            killed_count: killed_pids.len(),
            killed_pids,
        }
    }

    /// Start `launch` within the limit (waiting up to `wait` for room, or until `cancel`).
    /// The process counts until it is reaped; then `on_exit` runs on the thread that reaped
    /// it (whoever the caller hands the returned [`Spawned::reaper`] to).
    pub(crate) fn spawn(
        self: &Arc<Self>,
        launch: &Launch,
        wait: Duration,
        cancel: Option<&CancelToken>,
        on_exit: OnExit,
    ) -> Result<Spawned> {
        let permit = self.acquire(wait, cancel)?;
        let mut sp = process::spawn(launch)?;
        // Registered before anyone can reap it, so a child that exits at once is released
        // after it was counted, never before.
        permit.bind(&sp.process);
        let limiter = Arc::clone(self);
        let pid = sp.process.pid();
        sp.reaper.on_exit(Box::new(move |exit| {
            limiter.release(pid);
            on_exit(exit);
        }));
        Ok(sp)
    }

    fn acquire(self: &Arc<Self>, wait: Duration, cancel: Option<&CancelToken>) -> Result<Permit> {
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
        if !st.has_room() {
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
            if self.freed.wait_until(&mut st, deadline).timed_out() && !st.has_room() {
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
        Ok(Permit {
            limiter: Arc::clone(self),
            bound: false,
            epoch: st.kill_epoch,
        })
    }

    fn release(&self, pid: i32) {
        self.state.lock().procs.remove(&pid);
        self.freed.notify_all();
    }
}
