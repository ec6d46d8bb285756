//! `Pools`: one pool per tool of a registry, and mixed batches run on each tool's pool at
//! once.
//!
//! Every tool gets its pool when the `Pools` is made, and starts as its spec says: a
//! `lazy` tool's instances start on first use, any other's at once. Jobs of several tools
//! ([`Pools::map`]) are grouped by tool and each group runs as a batch on its own pool,
//! all groups at the same time; results come back in input order.

use crate::error::Result;
use crate::pool::Pool;
use crate::router::{MapResult, Reply};
use crate::spec::Registry;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A pool per tool id of a registry (see the module docs). `Send + Sync`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Pools {
    registry: Registry,
    pools: BTreeMap<String, Arc<Pool>>,
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
                    for p in pools.values() {
                        let p: &Arc<Pool> = p;
                        p.shutdown(Duration::from_millis(p.spec().shutdown.grace_ms));
                    }
                    return Err(e);
                }
            }
        }
        Ok(Pools { registry, pools })
    }

    /// The pools of the registry file at `path` (`None`: the file named by
    /// `TOOLPOOL_REGISTRY`), as [`Pools::new`] makes them.
    pub fn from_registry(path: Option<&std::path::Path>) -> Result<Pools> {
        let registry = match path {
            Some(p) => Registry::from_path(p)?,
            None => Registry::from_env()?,
        };
        Pools::new(registry)
    }

    /// The pool of `tool` ([`crate::Error::UnknownTool`], naming the known ids, if the
    /// registry has none).
    pub fn pool(&self, tool: &str) -> Result<Arc<Pool>> {
        match self.pools.get(tool) {
            Some(p) => Ok(Arc::clone(p)),
            None => Err(self.registry.get(tool).map(|_| ()).unwrap_err()),
        }
    }

    /// The tool ids, in order.
    pub fn tools(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
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
        self.pools
            .iter()
            .map(|(id, p)| (id.clone(), p.status()))
            .collect()
    }

    /// The Prometheus text exposition of every pool (one `# HELP` and `# TYPE` per
    /// family) with the process's limiter.
    pub fn metrics_prometheus(&self) -> String {
        let cores: Vec<_> = self.pools.values().map(|p| p.core()).collect();
        crate::prometheus::render_some(&cores)
    }

    /// Shut every pool down, each with `grace` (`None`: its spec's `shutdown.grace_ms`),
    /// all at once.
    pub fn shutdown(&self, grace: Option<Duration>) {
        std::thread::scope(|s| {
            for p in self.pools.values() {
                s.spawn(move || {
                    let g = grace.unwrap_or(Duration::from_millis(p.spec().shutdown.grace_ms));
                    p.shutdown(g)
                });
            }
        });
    }
}

impl Drop for Pools {
    /// Shuts every pool down at once (no child outlives the `Pools`).
    fn drop(&mut self) {
        self.shutdown(None);
    }
}
