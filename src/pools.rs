//! `Pools`: one pool per tool of a registry, and mixed batches run on each tool's pool at
//! once.
//!
//! Every tool gets its pool when the `Pools` is made, and starts as its spec says: a
//! `lazy` tool's instances start on first use, any other's at once. Jobs of several tools
//! ([`Pools::map`]) are grouped by tool and each group runs as a batch on its own pool,
//! all groups at the same time; results come back in input order. [`Pools::reload`] takes
//! a new registry while requests run (what `toolpool serve` does on SIGHUP).

use crate::client::Client;
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::router::{MapResult, Reply};
use crate::spec::Registry;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a pool that a reload removed or replaced may stay in use (requests, leases)
/// before it is shut down anyway.
pub const RETIRE_WAIT: Duration = Duration::from_secs(60);

/// A pool per tool id of a registry (see the module docs). `Send + Sync`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Pools {
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
}

/// What [`Pools::reload`] did, by tool id.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// New tools, started.
    pub added: Vec<String>,
    /// Tools whose spec changed in reloadable keys: reloaded in place, one instance at a
    /// time.
    pub reloaded: Vec<String>,
    /// Tools whose spec changed in other keys: a new pool started and took over; the old
    /// one stops once its requests are over.
    pub replaced: Vec<String>,
    /// Tools no longer in the registry: they stop once their requests are over.
    pub removed: Vec<String>,
    /// Tools whose new spec could not be applied, with the error; each keeps its old pool.
    pub failed: Vec<(String, String)>,
}

impl Pools {
    /// A pool for every tool of `registry`, each started as its spec says. If one cannot
    /// start, the ones made so far are shut down and its error is returned.
    pub fn new(registry: Registry) -> Result<Pools> {
        let mut pools = BTreeMap::new();
        for (id, spec) in &registry.tools {
            match Pool::from_spec(spec.clone()) {
                Ok(p) => {
                    pools.insert(id.clone(), Arc::new(p));
                }
                Err(e) => {
                    shutdown_all(pools.values(), None);
                    return Err(e);
                }
            }
        }
        Ok(Pools {
            pools: RwLock::new(pools),
        })
    }

    /// The pools of the registry file at `path` (`None`: the file named by
    /// `TOOLPOOL_REGISTRY`), as [`Pools::new`] makes them. With `TOOLPOOL_SERVER` set,
    /// the pools of that service instead ([`Pools::from_service`]).
    pub fn from_registry(path: Option<&std::path::Path>) -> Result<Pools> {
        if let Some(client) = Client::from_env()? {
            return Pools::from_service(&client);
        }
        let registry = match path {
            Some(p) => Registry::from_path(p)?,
            None => Registry::from_env()?,
        };
        Pools::new(registry)
    }

    /// Every pool of a `toolpool serve` service. Reloading it is the service's business
    /// (SIGHUP); [`Pools::reload`] here is an error.
    pub fn from_service(client: &Client) -> Result<Pools> {
        let mut pools = BTreeMap::new();
        for id in client.tools()? {
            let p = client.pool(&id)?;
            pools.insert(id, Arc::new(p));
        }
        Ok(Pools {
            pools: RwLock::new(pools),
        })
    }

    /// The pool of `tool` ([`crate::Error::UnknownTool`], naming the known ids, if the
    /// registry has none).
    pub fn pool(&self, tool: &str) -> Result<Arc<Pool>> {
        let pools = self.pools.read();
        match pools.get(tool) {
            Some(p) => Ok(Arc::clone(p)),
            None => Err(Error::UnknownTool {
                tool: tool.to_string(),
                known: pools.keys().cloned().collect(),
            }),
        }
    }

    /// The tool ids, in order.
    pub fn tools(&self) -> Vec<String> {
        self.pools.read().keys().cloned().collect()
    }

    /// Take a new registry while requests run, tool by tool: a new tool starts; a tool
    /// whose spec changed only in [`RELOADABLE`](crate::pool::RELOADABLE) keys is reloaded
    /// in place ([`Pool::reload`]: one instance at a time, no request fails); one whose
    /// other keys changed gets a new pool, started before it takes over; a tool no longer
    /// listed is removed. A pool taken out (replaced or removed) serves the requests and
    /// leases it has, and stops once they are over (at most [`RETIRE_WAIT`] later). A
    /// tool whose new spec cannot be applied keeps its old pool and is listed in
    /// [`ReloadReport::failed`].
    pub fn reload(&self, registry: Registry) -> Result<ReloadReport> {
        let mut report = ReloadReport::default();
        let old: BTreeMap<String, Arc<Pool>> = self.pools.read().clone();
        if old.values().any(|p| p.is_service()) {
            return Err(Error::InvalidArgument(
                "these pools belong to a toolpool service: send it SIGHUP to reload".into(),
            ));
        }
        for (id, spec) in &registry.tools {
            match old.get(id) {
                None => match Pool::from_spec(spec.clone()) {
                    Ok(p) => {
                        self.pools.write().insert(id.clone(), Arc::new(p));
                        report.added.push(id.clone());
                    }
                    Err(e) => report.failed.push((id.clone(), e.to_string())),
                },
                Some(p) if *p.spec() == *spec => {}
                Some(p) => match p.reload(spec.clone()) {
                    Ok(()) => report.reloaded.push(id.clone()),
                    // A key outside RELOADABLE changed: a new pool takes over.
                    Err(Error::Config(_)) if spec.validate().is_ok() => {
                        match Pool::from_spec(spec.clone()) {
                            Ok(new) => {
                                let old = self.pools.write().insert(id.clone(), Arc::new(new));
                                old.into_iter().for_each(retire);
                                report.replaced.push(id.clone());
                            }
                            Err(e) => report.failed.push((id.clone(), e.to_string())),
                        }
                    }
                    Err(e) => report.failed.push((id.clone(), e.to_string())),
                },
            }
        }
        for id in old.keys().filter(|id| !registry.tools.contains_key(*id)) {
            if let Some(p) = self.pools.write().remove(id) {
                retire(p);
                report.removed.push(id.clone());
            }
        }
        Ok(report)
    }

    /// Run mixed jobs `(tool, payload)`: grouped by tool, each group as a batch
    /// ([`Pool::map`]) on its pool, all groups at once; results in input order. A job of an
    /// unknown tool is its own [`crate::Error::UnknownTool`].
    pub fn map<T: AsRef<str> + Sync, P: AsRef<str> + Sync>(
        &self,
        jobs: &[(T, P)],
        timeout: impl Into<crate::Wait>,
    ) -> Vec<Result<Reply>> {
        let wait = timeout.into();
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, (tool, _)) in jobs.iter().enumerate() {
            groups.entry(tool.as_ref()).or_default().push(k);
        }
        let mut out: Vec<Option<Result<Reply>>> = (0..jobs.len()).map(|_| None).collect();
        let wait = &wait;
        let done: Vec<(Vec<usize>, Vec<Result<Reply>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .into_iter()
                .map(|(tool, idx)| {
                    s.spawn(move || {
                        let results = match self.pool(tool) {
                            Ok(pool) => {
                                let payloads: Vec<&str> =
                                    idx.iter().map(|&k| jobs[k].1.as_ref()).collect();
                                pool.map(&payloads, wait)
                            }
                            // Every job of the group gets the same error.
                            Err(e) => idx.iter().map(|_| Err(e.clone())).collect(),
                        };
                        (idx, results)
                    })
                })
                .collect();
            // A group never panics (Pool::map does not); if one did, the panic goes on to
            // the caller here (the C boundary turns it into TOOLPOOL_PANIC).
            handles
                .into_iter()
                .map(|h| h.join().expect("group thread panicked"))
                .collect()
        });
        for (idx, results) in done {
            for (k, r) in idx.into_iter().zip(results) {
                out[k] = Some(r);
            }
        }
        // Every job index is in exactly one group: each result was filled.
        out.into_iter().map(|r| r.expect("every job ran")).collect()
    }

    /// [`Pools::map`] with each result as the C, Go and Python APIs return it
    /// ([`MapResult`]).
    pub fn map_results<T: AsRef<str> + Sync, P: AsRef<str> + Sync>(
        &self,
        jobs: &[(T, P)],
        timeout: impl Into<crate::Wait>,
    ) -> Vec<MapResult> {
        self.map(jobs, timeout)
            .into_iter()
            .map(MapResult::from)
            .collect()
    }

    /// The status of every pool, by tool id.
    pub fn status(&self) -> BTreeMap<String, crate::PoolStatus> {
        let pools = self.pools.read().clone();
        pools
            .iter()
            .map(|(id, p)| (id.clone(), p.status()))
            .collect()
    }

    /// The Prometheus text exposition of every pool (one `# HELP` and `# TYPE` per
    /// family) with the process's limiter.
    pub fn metrics_prometheus(&self) -> String {
        let cores: Vec<_> = self
            .pools
            .read()
            .values()
            .filter_map(|p| p.core().cloned())
            .collect();
        crate::prometheus::render_some(&cores)
    }

    /// Shut every pool down, each with `grace` (`None`: its spec's `shutdown.grace_ms`),
    /// all at once.
    pub fn shutdown(&self, grace: Option<Duration>) {
        let pools = self.pools.read().clone();
        shutdown_all(pools.values(), grace);
    }
}

/// Shut `pools` down at once, each with `grace` or its spec's.
fn shutdown_all<'a>(pools: impl Iterator<Item = &'a Arc<Pool>>, grace: Option<Duration>) {
    std::thread::scope(|s| {
        for p in pools {
            s.spawn(move || {
                let g = grace.unwrap_or(Duration::from_millis(p.spec().shutdown.grace_ms));
                p.shutdown(g)
            });
        }
    });
}

/// Shut `pool` down once nobody else holds it (its requests and leases are over), or
/// after [`RETIRE_WAIT`], on a thread of its own.
fn retire(pool: Arc<Pool>) {
    let work = move || {
        let until = Instant::now() + RETIRE_WAIT;
        while Arc::strong_count(&pool) > 1 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        pool.shutdown(Duration::from_millis(pool.spec().shutdown.grace_ms));
    };
    if let Err(e) = std::thread::Builder::new()
        .name("toolpool-retire".into())
        .spawn(work)
    {
        log::warn!(target: "toolpool", "cannot start a thread to retire a pool ({e}); it stops when its last user lets go");
    }
}

impl Drop for Pools {
    /// Shuts every pool down at once (no child outlives the `Pools`).
    fn drop(&mut self) {
        self.shutdown(None);
    }
}
