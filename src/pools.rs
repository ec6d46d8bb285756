//! `Pools`: one pool per tool id from a registry, created on first use, and mixed batches
//! grouped by tool.

use crate::error::Result;
use crate::pool::Pool;
use crate::router::Reply;
use crate::spec::Registry;
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// An orchestrator: a pool per tool id, started on first use with the spec's `count`.
#[derive(Debug)]
pub struct Pools {
    registry: Registry,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
}

impl Pools {
    /// An orchestrator over `registry`; starts nothing yet.
    pub fn new(registry: Registry) -> Pools {
        Pools {
            registry,
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The pool of `tool`, started now if this is its first use.
    pub fn pool(&self, tool: &str) -> Result<Arc<Pool>> {
        let spec = self.registry.get(tool)?;
        let mut pools = self.pools.lock();
        if let Some(p) = pools.get(tool) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(Pool::from_spec(spec.clone())?);
        pools.insert(tool.to_string(), Arc::clone(&p));
        Ok(p)
    }

    /// Run mixed jobs `(tool, payload)`: grouped by tool, each group as a batch on its
    /// pool (groups run concurrently); results in input order.
    pub fn run<T: AsRef<str> + Sync, P: AsRef<str> + Sync>(
        &self,
        jobs: &[(T, P)],
        timeout: Duration,
    ) -> Vec<Result<Reply>> {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (k, (tool, _)) in jobs.iter().enumerate() {
            groups.entry(tool.as_ref()).or_default().push(k);
        }
        let mut out: Vec<Option<Result<Reply>>> = (0..jobs.len()).map(|_| None).collect();
        let done: Vec<(Vec<usize>, Vec<Result<Reply>>)> = std::thread::scope(|s| {
            let handles: Vec<_> = groups
                .into_iter()
                .map(|(tool, idx)| {
                    s.spawn(move || {
                        let results = match self.pool(tool) {
                            Ok(pool) => {
                                let payloads: Vec<&str> =
                                    idx.iter().map(|&k| jobs[k].1.as_ref()).collect();
                                pool.map(&payloads, timeout)
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

    /// Shut every pool down.
    pub fn shutdown(&self, grace: Duration) {
        for p in self.pools.lock().values() {
            p.shutdown(grace);
        }
    }
}
