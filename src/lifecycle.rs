//! The shared core of one pool ([`PoolCore`]) and the life cycle of its incarnations:
//! start every instance (the parallel and remote start of a whole pool is the
//! `start_all` submodule), start one lazily, replace one (restart), stop one (idle), stop
//! all (shutdown).
//!
//! The `Pool`, a `Lease` and the supervisor thread (weakly) share one
//! `PoolCore`. It asks the layer below for incarnations ([`Incarnation::start`]) and
//! installs them in their [`Instance`](crate::instance::Instance); routing and supervision
//! (the modules above) build on it.

use crate::admission::Admission;
use crate::cancel::CancelToken;
use crate::error::{DeathInfo, Error, ExitInfo, Result};
use crate::handshake;
use crate::incarnation::{Incarnation, State};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::remote::Remote;
use crate::roster::{Instances, SizeState};
use crate::spec::{Routing, ToolSpec};
use crate::util::deadline_in;
use crossbeam_channel::Sender;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

mod start_all;

/// The state of one pool that its users share.
pub(crate) struct PoolCore {
    /// The spec the pool was created with. A reload changes only keys read when a
    /// process starts (and the count): those are read from `size.spec()`.
    pub spec: ToolSpec,
    /// Instances `0..instances.len()`; resize changes the count (see the roster module).
    pub instances: Instances,
    /// The sizing policy's state: the spec processes start from now, background starts,
    /// retirements, grow and shrink counts.
    pub size: SizeState,
    pub limiter: Arc<Limiter>,
    /// Requests are served by `oneshot` only.
    pub disabled: bool,
    pub admission: Admission,
    /// Requests of the whole pool.
    pub metrics: Metrics,
    /// Where `read_any` starts looking, so no instance starves the others.
    pub read_any_next: AtomicUsize,
    shut_down: AtomicBool,
    /// Wakes the supervisor thread (set once it runs).
    supervisor_wake: Mutex<Option<Sender<()>>>,
    /// The launcher and ssh connections of a pool on other hosts (`remote`).
    pub remote: Option<Remote>,
}

impl PoolCore {
    /// A core for `spec` (validated), nothing started.
    pub fn new(spec: ToolSpec, limiter: Arc<Limiter>, disabled: bool) -> PoolCore {
        let n = spec.count;
        PoolCore {
            instances: Instances::new(n),
            size: SizeState::new(spec.clone()),
            limiter,
            disabled,
            admission: Admission::new(n, spec.routing == Routing::LeastBusy),
            metrics: Metrics::default(),
            read_any_next: AtomicUsize::new(0),
            shut_down: AtomicBool::new(false),
            supervisor_wake: Mutex::new(None),
            remote: Remote::new(&spec),
            spec,
        }
    }

    /// True after shutdown.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Relaxed)
    }

    /// Mark shut down; true if it already was.
    pub fn set_shut_down(&self) -> bool {
        self.shut_down.swap(true, Relaxed)
    }

    /// [`Error::ShutDown`] after shutdown.
    pub fn check_open(&self) -> Result<()> {
        if self.is_shut_down() {
            Err(Error::ShutDown(self.spec.id.clone()))
        } else {
            Ok(())
        }
    }

    /// [`Error::IndexOutOfRange`] unless `index` is an instance.
    pub fn check_index(&self, index: usize) -> Result<()> {
        if index >= self.instances.len() {
            return Err(Error::IndexOutOfRange {
                tool: self.spec.id.clone(),
                index,
                count: self.instances.len(),
            });
        }
        Ok(())
    }

    /// Where the supervisor thread listens for wake-ups.
    pub fn set_supervisor_wake(&self, wake: Option<Sender<()>>) {
        *self.supervisor_wake.lock() = wake;
    }

    /// Wake the supervisor thread (a death, a recycle to do).
    pub fn notify_supervisor(&self) {
        if let Some(w) = self.supervisor_wake.lock().as_ref() {
            let _ = w.try_send(());
        }
    }

    /// The incarnation of instance `index`. With `start`, a stopped instance (lazy, idle)
    /// is started.
    pub fn incarnation(self: &Arc<Self>, index: usize, start: bool) -> Result<Arc<Incarnation>> {
        self.check_index(index)?;
        self.check_open()?;
        let inst = &self.instances[index];
        if let Some(reason) = inst.failed() {
            return Err(Error::Failed {
                tool: self.spec.id.clone(),
                index,
                reason,
            });
        }
        if let Some(c) = inst.current() {
            return Ok(c);
        }
        if self.disabled {
            return Err(Error::unavailable(&self.spec.id, "the pool is disabled"));
        }
        if start {
            self.ensure_started(index, None)?;
            if let Some(c) = inst.current() {
                return Ok(c);
            }
        }
        Err(Error::InstanceDead(DeathInfo {
            tool: self.spec.id.clone(),
            index,
            exit: inst.last_exit(),
            stderr_tail: vec!["instance is not running".into()],
        }))
    }

    /// Start `index` if it has no live process (lazy start, after idle stop, after death).
    /// `cancel` stops the wait for room under the limit and for the ready line (the
    /// half-started incarnation is killed; the next use starts another). The wait for
    /// another caller's start of the same instance is not cancellable; it is bounded by
    /// `startup.timeout_ms`.
    pub fn ensure_started(
        self: &Arc<Self>,
        index: usize,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        let inst = &self.instances[index];
        let _g = inst.start_lock.lock();
        if inst.current().is_some_and(|c| c.state() != State::Dead) {
            return Ok(());
        }
        self.check_open()?;
        self.replace_locked(index, cancel)
    }

    /// Kill whatever runs at `index` and start a fresh process (counts as a restart), with
    /// a clean restart history: the user asked for it.
    pub fn restart(self: &Arc<Self>, index: usize) -> Result<()> {
        let inst = &self.instances[index];
        let _g = inst.start_lock.lock();
        inst.clear_failure();
        self.replace_locked(index, None)
    }

    /// With the instance's start lock held: retire the current incarnation, start a new
    /// one, wait for it to be ready.
    pub fn replace_locked(
        self: &Arc<Self>,
        index: usize,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        // A shrink may have removed the index since the caller looked (sizing).
        self.check_index(index)?;
        let inst = &self.instances[index];
        if let Some(old) = inst.take_current() {
            inst.retire(old);
            inst.count_restart();
        }
        self.check_open()?;
        let deadline = self.start_deadline();
        let c = self.spawn(index, cancel)?;
        // Installed at once, so status shows it `starting` (routing takes it once ready).
        self.install(index, Arc::clone(&c));
        if let Err(e) = self.ready_or_err(&c, deadline, cancel) {
            if e.is_cancelled() {
                // Back to not started (no failure, no restart counted): the next use
                // starts it again.
                if let Some(old) = inst.take_current() {
                    inst.retire(old);
                }
            } else {
                // It stays in the instance as dead, with its stderr tail, until replaced.
                c.kill();
                if let Some(r) = &self.remote {
                    r.record_error(index, &e);
                }
            }
            return Err(e);
        }
        // Ready now: callers waiting for an instance may take it.
        self.admission.wake();
        Ok(())
    }

    /// Wait for `c`'s ready line, then run its handshake (each only when the spec has one).
    fn ready_or_err(
        &self,
        c: &Incarnation,
        deadline: Instant,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        // The spec the incarnation was started from (a reload changes it).
        let spec = self.size.spec();
        if let Some(line) = &spec.startup.ready_line {
            c.wait_ready(deadline, line, cancel)?;
        }
        handshake::run(c, &spec, deadline, cancel)
    }

    /// Stop the incarnation at `index` on purpose (idle timeout); it starts again on use.
    pub fn stop_instance(&self, index: usize) {
        let inst = &self.instances[index];
        let _g = inst.start_lock.lock();
        // Never stop under the `current` lock: the exit callback (on the stderr drainer)
        // takes the admission lock, and status holds that while it reads the instance.
        if let Some(old) = inst.take_current() {
            inst.retire(old);
        }
    }

    /// Spawn an incarnation for `index` and wait until it is ready (not installed).
    pub fn spawn_ready(self: &Arc<Self>, index: usize) -> Result<Arc<Incarnation>> {
        let c = self.spawn(index, None)?;
        self.await_ready(&c, self.start_deadline())?;
        Ok(c)
    }

    /// Spawn an incarnation for each of `indices`, then wait for all to be ready (in
    /// parallel); none is installed. On any failure every one started here is stopped.
    pub fn spawn_all_ready(self: &Arc<Self>, indices: &[usize]) -> Result<Vec<Arc<Incarnation>>> {
        let deadline = self.start_deadline();
        let mut started = Vec::new();
        let mut failure = None;
        for &i in indices {
            match self.spawn(i, None) {
                Ok(c) => started.push(c),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            failure = started
                .iter()
                .find_map(|c| self.await_ready(c, deadline).err());
        }
        if let Some(e) = failure {
            for c in started {
                c.stop();
            }
            return Err(e);
        }
        Ok(started)
    }

    /// Install `c` at `index` (replacing nothing) and wake the routers.
    fn install(&self, index: usize, c: Arc<Incarnation>) {
        if let Some(old) = self.instances[index].install(c) {
            // Callers hold the start lock and took the old one out first; a safety net.
            self.instances[index].retire(old);
        }
        self.admission.wake();
    }

    /// Install `new` at `index` in place of the incarnation with pid `old_pid`, which is
    /// retired (a graceful recycle). False (and `new` stopped) when `old_pid` is gone.
    pub fn swap_in(&self, index: usize, old_pid: i32, new: Arc<Incarnation>) -> bool {
        let inst = &self.instances[index];
        let _g = inst.start_lock.lock();
        if self.is_shut_down() || !inst.current_is(old_pid, |_| true) {
            new.stop();
            return false;
        }
        let old = inst.install(new);
        inst.count_restart();
        self.admission.wake();
        if let Some(old) = old {
            inst.retire(old);
        }
        true
    }

    /// Install `new` at `index` in place of whatever runs there, which is returned, not
    /// stopped: the caller retires it once the requests still using it are over (a
    /// rolling reload). `Err` (and `new` stopped) after shutdown.
    pub fn swap_keep(
        &self,
        index: usize,
        new: Arc<Incarnation>,
    ) -> Result<Option<Arc<Incarnation>>> {
        let inst = &self.instances[index];
        let _g = inst.start_lock.lock();
        if let Err(e) = self.check_open() {
            new.stop();
            return Err(e);
        }
        let old = inst.install(new);
        if old.is_some() {
            inst.count_restart();
        }
        self.admission.wake();
        Ok(old)
    }

    /// When a process started now must be ready (`startup.timeout_ms`).
    fn start_deadline(&self) -> Instant {
        deadline_in(Duration::from_millis(self.size.spec().startup.timeout_ms))
    }

    fn spawn(
        self: &Arc<Self>,
        index: usize,
        cancel: Option<&CancelToken>,
    ) -> Result<Arc<Incarnation>> {
        // The spec now (a reload changes it); for a remote pool, its launcher argv.
        let current = self.size.spec();
        let remote_start;
        let (spec, step) = match &self.remote {
            Some(r) => {
                remote_start = r.local_spec(&current, index, self.start_deadline())?;
                (&remote_start.spec, remote_start.step)
            }
            None => (&*current, None),
        };
        let weak: Weak<PoolCore> = Arc::downgrade(self);
        let on_exit = Box::new(move |exit: ExitInfo| {
            if let Some(p) = weak.upgrade() {
                p.on_exit(index, exit);
            }
            // The launcher is gone: an srun's step is cancelled if Slurm still runs it
            // (also when the closure is dropped unrun: the launcher did not start).
            drop(step);
        });
        Incarnation::start(
            spec,
            index,
            &self.limiter,
            Arc::clone(&self.instances[index].counters),
            cancel,
            on_exit,
        )
    }

    fn await_ready(&self, c: &Incarnation, deadline: Instant) -> Result<()> {
        self.ready_or_err(c, deadline, None)
            .inspect_err(|_| c.stop())
    }

    /// Runs on the thread that reaped a process of instance `index` (its stderr drainer).
    fn on_exit(&self, index: usize, exit: ExitInfo) {
        self.instances[index].set_last_exit(exit);
        self.admission.wake();
        self.notify_supervisor();
    }

    /// Graceful stop of every instance, in lockstep so the total is bounded by `grace`:
    /// close every stdin, a short wait, SIGTERM, wait, then stop (SIGKILL, reap, join).
    pub fn stop_all(&self, grace: Duration) {
        let all: Vec<Arc<Incarnation>> = self
            .instances
            .iter()
            .filter_map(|inst| {
                let _g = inst.start_lock.lock();
                inst.take_current()
            })
            .collect();
        for c in &all {
            c.begin_stop();
        }
        let end = deadline_in(grace);
        let polite = (grace / 4).min(Duration::from_millis(250));
        wait_all(&all, deadline_in(polite));
        for c in &all {
            c.terminate();
        }
        wait_all(&all, end);
        // Kill every one first, then join: the threads of all of them end in parallel
        // instead of one incarnation at a time.
        for c in &all {
            c.begin_stop();
            c.kill();
        }
        for c in &all {
            c.stop();
        }
        if let Some(r) = &self.remote {
            r.shutdown();
        }
    }
}

fn wait_all(all: &[Arc<Incarnation>], deadline: Instant) {
    for c in all {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        c.wait_exit(deadline - now);
    }
}
