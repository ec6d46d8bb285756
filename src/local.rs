//! `LocalPool`: N warm instances of one tool in this process, as the pool façade
//! ([`crate::Pool`]) drives them: line I/O to one instance or any, requests and batches
//! ([`crate::router`]), leases, status, restart, resize, reload, shutdown. The public docs
//! of each operation are on the façade.
//!
//! `Send + Sync`; every method takes `&self`. It owns the supervisor thread (the
//! supervisor module) and shares the pool's core (the lifecycle module) with leases and
//! that thread.

use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::hold::{Hold, Use};
use crate::incarnation::Incarnation;
use crate::lifecycle::PoolCore;
use crate::limiter::Limiter;
use crate::metrics::MetricsSnapshot;
use crate::reader::WaitEnd;
use crate::router::{self, Reply, MAX_MAP_THREADS};
use crate::sizing;
use crate::snapshot::{self, PoolStatus};
use crate::spec::{Retry, ToolSpec};
use crate::supervisor::Supervisor;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Environment variable that disables every pool (requests go to `oneshot`).
pub const DISABLE_ENV: &str = "TOOLPOOL_DISABLE";

/// Options of a pool beyond its spec.
#[derive(Debug, Clone, Default)]
pub struct PoolOptions {
    /// Use this limiter instead of [`Limiter::global`].
    pub limiter: Option<Arc<Limiter>>,
    /// Do not start the pool; serve requests with the spec's `oneshot` (like
    /// `TOOLPOOL_DISABLE=1`).
    pub disabled: bool,
}

/// A pool in this process (see the module docs).
pub(crate) struct LocalPool {
    core: Arc<PoolCore>,
    supervisor: Mutex<Option<Supervisor>>,
}

impl LocalPool {
    /// Start a pool: every instance in parallel (unless `lazy`), returning once all are
    /// ready; if one cannot start, the others are stopped and the error is returned.
    pub fn start(spec: ToolSpec, opts: PoolOptions) -> Result<LocalPool> {
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
        Ok(LocalPool {
            core,
            supervisor: Mutex::new(supervisor),
        })
    }

    pub fn spec(&self) -> Arc<ToolSpec> {
        self.core.size.spec()
    }

    pub fn len(&self) -> usize {
        self.core.instances.len()
    }

    pub fn send_bytes(&self, index: usize, line: &[u8]) -> Result<()> {
        self.core.incarnation(index, true)?.send(line)
    }

    pub fn notify(&self, index: usize, payload: &str) -> Result<()> {
        self.core.incarnation(index, true)?.notify(payload)
    }

    pub fn read_line_bytes(&self, index: usize, wait: &Wait) -> Result<Vec<u8>> {
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

    pub fn read_stderr_line(&self, index: usize, wait: &Wait) -> Result<Vec<u8>> {
        self.core
            .incarnation(index, false)?
            .read_stderr_line(wait.timeout())
    }

    pub fn read_any_bytes(&self, wait: &Wait) -> Result<(usize, Vec<u8>)> {
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

    pub fn request_bytes(
        &self,
        payload: &str,
        key: Option<&str>,
        retry: Option<&Retry>,
        wait: &Wait,
    ) -> Result<Reply<Vec<u8>>> {
        router::request(&self.core, payload, key, wait, retry)
    }

    pub fn lease(&self, wait: &Wait) -> Result<Hold> {
        router::take(&self.core, Use::Lease, None, wait.until()).map(|(hold, _)| hold)
    }

    pub fn send_routed(&self, line: &str) -> Result<usize> {
        let i = router::pick_for_send(&self.core)?;
        self.send_bytes(i, line.as_bytes())?;
        Ok(i)
    }

    /// Every payload as its own request on up to [`MAX_MAP_THREADS`] scoped threads.
    pub fn map<S: AsRef<str> + Sync>(&self, payloads: &[S], wait: &Wait) -> Vec<Result<Reply>> {
        let width = (self.len() * self.core.spec.max_in_flight)
            .min(MAX_MAP_THREADS)
            .clamp(1, payloads.len().max(1));
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Result<Reply>>> = (0..payloads.len()).map(|_| None).collect();
        let one = |p: &str| self.request_bytes(p, None, None, wait).map(Reply::lossy);
        // `s.spawn` panics only when the OS refuses a thread (as std::thread::spawn does).
        let parts: Vec<Vec<(usize, Result<Reply>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..width)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Relaxed);
                            let Some(p) = payloads.get(k) else { break };
                            done.push((k, one(p.as_ref())));
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

    pub fn status(&self) -> PoolStatus {
        snapshot::status(&self.core)
    }

    pub fn metrics(&self) -> MetricsSnapshot {
        snapshot::metrics(&self.core)
    }

    pub fn metrics_prometheus(&self) -> String {
        crate::prometheus::render_one(&self.core)
    }

    pub fn restart(&self, index: usize) -> Result<()> {
        self.core.check_index(index)?;
        self.core.check_open()?;
        self.core.restart(index)
    }

    pub fn resize(&self, count: usize) -> Result<()> {
        sizing::resize(&self.core, count)
    }

    pub fn reload(&self, spec: ToolSpec) -> Result<()> {
        let spec = crate::remote::slurm::take_allocation_nodes(dry_run_env(spec))?;
        sizing::reload(&self.core, spec)
    }

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

    pub fn is_shut_down(&self) -> bool {
        self.core.is_shut_down()
    }

    /// The shared core (for `Pools`' Prometheus exposition).
    pub fn core(&self) -> &Arc<PoolCore> {
        &self.core
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.core.limiter
    }
}

impl Drop for LocalPool {
    /// Shuts down with the spec's grace period: no child outlives the pool.
    fn drop(&mut self) {
        self.shutdown(Duration::from_millis(self.core.spec.shutdown.grace_ms));
    }
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
