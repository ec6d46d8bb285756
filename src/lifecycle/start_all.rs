//! Starting a whole pool at once ([`PoolCore::start_all`]): local instances spawned in
//! parallel (one worker per core) and then awaited, all or nothing; remote ones one
//! thread per host connection, where the instances that start are kept.

use super::PoolCore;
use crate::error::{Error, Result};
use crate::incarnation::Incarnation;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// A spawned incarnation and when it must be ready, or why it could not be spawned.
type Started = Result<(Arc<Incarnation>, Instant)>;

impl PoolCore {
    /// Start every instance: spawn all in parallel (one worker per core, see
    /// [`PoolCore::spawn_all`]), then wait for all to be ready, each within
    /// `startup.timeout_ms` of its own spawn. On any failure every process started here is
    /// stopped and the failure of the lowest instance index is returned.
    pub fn start_all(self: &Arc<Self>) -> Result<()> {
        if self.remote.is_some() {
            return self.start_all_remote();
        }
        // Elastic pools start `min_instances`; the others every instance.
        let first = self.spec.min_instances.unwrap_or(self.instances.len());
        let started = self.spawn_all(first);
        let mut failure = started.iter().find_map(|r| r.as_ref().err().cloned());
        let ok: Vec<(Arc<Incarnation>, Instant)> = started.into_iter().flatten().collect();
        if failure.is_none() {
            failure = ok
                .iter()
                .find_map(|(c, deadline)| self.await_ready(c, *deadline).err());
        }
        if let Some(e) = failure {
            for (c, _) in ok {
                c.stop();
            }
            return Err(e);
        }
        for (i, (c, _)) in ok.into_iter().enumerate() {
            self.install(i, c);
        }
        Ok(())
    }

    /// [`PoolCore::start_all`] for a pool on other hosts: one host that cannot be reached
    /// must not stop the others, so an instance that fails to start is left dead with
    /// its error (the supervisor retries it with backoff); only when none starts is it an
    /// error (the first one, naming its host).
    fn start_all_remote(self: &Arc<Self>) -> Result<()> {
        let deadline = self.start_deadline();
        // Elastic pools start `min_instances` (the first indices), as local ones do.
        let first = self.spec.min_instances.unwrap_or(self.instances.len());
        if first == 0 {
            return Ok(());
        }
        let groups: Vec<Vec<usize>> = (self.remote.as_ref())
            .map(|r| r.groups())
            .unwrap_or_default()
            .into_iter()
            .map(|g| g.into_iter().filter(|&i| i < first).collect::<Vec<_>>())
            .filter(|g| !g.is_empty())
            .collect();
        // One thread per host connection: each connects (ssh: its master) and spawns its
        // instances, so the hosts' connection times overlap each other and the spawns.
        let spawned: Vec<(usize, Result<Arc<Incarnation>>)> = std::thread::scope(|scope| {
            let threads: Vec<_> = groups
                .iter()
                .map(|group| {
                    scope.spawn(move || {
                        group
                            .iter()
                            .map(|&i| (i, self.spawn(i, None)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap_or_default())
                .collect()
        });
        let mut first = None;
        let mut started = Vec::new();
        for (i, r) in spawned {
            match r {
                Ok(c) => started.push((i, c)),
                Err(e) => {
                    self.instances[i].supervision().start_failed();
                    first.get_or_insert(e);
                }
            }
        }
        let mut ready = Vec::new();
        for (i, c) in started {
            match self.await_ready(&c, deadline) {
                Ok(()) => ready.push((i, c)),
                Err(e) => {
                    if let Some(r) = &self.remote {
                        r.record_error(i, &e);
                    }
                    self.instances[i].supervision().start_failed();
                    first.get_or_insert(e);
                }
            }
        }
        if ready.is_empty() {
            if let Some(r) = &self.remote {
                r.shutdown();
            }
            return Err(first.unwrap_or_else(|| Error::Spawn("no instance started".into())));
        }
        for (i, c) in ready {
            self.install(i, c);
        }
        Ok(())
    }

    /// Spawn instances `0..n`, in index order, on up to one worker thread per core (the
    /// calling thread alone for one instance), each spawning through a helper with a small
    /// fd table (`spawn::with_helper`). Each success carries its own ready deadline. After
    /// the first failure no further index is started.
    fn spawn_all(self: &Arc<Self>, n: usize) -> Vec<Started> {
        let one = |i: usize| self.spawn(i, None).map(|c| (c, self.start_deadline()));
        let workers = std::thread::available_parallelism()
            .map_or(1, |c| c.get())
            .min(n);
        if n <= 1 {
            return (0..n).map(one).collect();
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let slots: Vec<Mutex<Option<Started>>> = (0..n).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..workers {
                let work = || loop {
                    if failed.load(Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = one(i);
                    if r.is_err() {
                        failed.store(true, Relaxed);
                    }
                    *slots[i].lock() = Some(r);
                };
                // If no worker thread can be made, this thread does the work. Each worker
                // spawns through a helper with a small fd table (`spawn::with_helper`).
                if std::thread::Builder::new()
                    .name("toolpool-start".into())
                    .stack_size(crate::process::SMALL_STACK_BYTES)
                    .spawn_scoped(s, move || {
                        crate::util::block_async_signals();
                        crate::spawn::with_helper(work)
                    })
                    .is_err()
                {
                    work();
                }
            }
        });
        // Every index that was started, in order (after a failure some are missing).
        slots.into_iter().filter_map(|m| m.into_inner()).collect()
    }
}
