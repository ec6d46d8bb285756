//! Recycling: retiring a healthy incarnation for a fresh one. After `max_requests`
//! (counted on the request path, `hold`, with jitter), over `limits.max_rss_mb` or the
//! pool's `limits.memory_budget_mb` ([`check_memory`]), or at once when a request may have
//! left a late reply ([`recycle`]). The graceful kind ([`recycle_gracefully`]) starts the
//! replacement first and swaps it in once the old one is idle. What is pending is the
//! instance's `Supervision` (asked for through its transitions); the supervisor thread
//! (above) acts on it and calls the graceful recycle; this module does the work.

use crate::incarnation::State;
use crate::lifecycle::PoolCore;
use crate::metrics::RecycleReason;
use crate::util::LogPid;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest a graceful recycle waits for its instance to finish the request in flight.
pub const RECYCLE_WAIT: Duration = Duration::from_secs(10);

/// Kill the incarnation `pid` at `index` now and have the supervisor start a new one,
/// whatever the restart policy (a timed-out request left a reply in its stream).
pub(crate) fn recycle(p: &PoolCore, index: usize, pid: i32) {
    let inst = &p.instances[index];
    if let Some(c) = inst.current().filter(|c| c.pid() == pid) {
        // Marked before the kill: from the kill on the incarnation is dead, and a caller
        // waiting for an instance must see this one coming back, not gone for good.
        inst.supervision().replace_now();
        c.kill();
    }
    p.notify_supervisor();
}

/// Start a replacement first, then retire the old process once it is idle: it is reserved
/// (taken out of routing) for the swap, so no request is on it when it goes. Still busy
/// after [`RECYCLE_WAIT`]: the replacement is stopped and the recycle tried again later,
/// so a request in flight is never failed by a recycle.
pub(crate) fn recycle_gracefully(p: &Arc<PoolCore>, i: usize, old_pid: i32, why: RecycleReason) {
    let inst = &p.instances[i];
    let new = match p.spawn_ready(i) {
        Ok(c) => c,
        Err(e) => {
            // (A pool shutting down fails starts on purpose: nothing to warn about.)
            if !p.is_shut_down() {
                log::warn!(target: "toolpool", "start failed tool={} instance={i} error={:?} (recycle, reason={})", p.spec.id, e.to_string(), why.name());
            }
            return; // try again on the next request or tick
        }
    };
    let new_pid = new.log_pid();
    // (The old incarnation's, for the record: it is the current one until the swap.)
    let old_log_pid = inst.current().map_or(LogPid(None), |c| c.log_pid());
    let deadline = Instant::now() + RECYCLE_WAIT;
    let reserved = loop {
        p.admission.wait_idle(i, deadline, || p.is_shut_down());
        if p.is_shut_down() {
            break false;
        }
        if reserve(p, i) {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    if !reserved {
        new.stop();
        if !p.is_shut_down() {
            inst.supervision().ask_recycle(why);
        }
        return;
    }
    let swapped = p.swap_in(i, old_pid, new);
    unreserve(p, i);
    if swapped {
        inst.recycles.count(why);
        log::info!(
            target: "toolpool",
            "recycled tool={} instance={i} pid={old_log_pid} new_pid={new_pid} reason={}",
            p.spec.id,
            why.name()
        );
    }
}

/// Read the memory of every running instance; mark for a graceful recycle each one over
/// `limits.max_rss_mb`, and, while the pool is over `limits.memory_budget_mb`, the largest
/// idle instances first.
pub(crate) fn check_memory(p: &PoolCore) {
    let limits = &p.spec.limits;
    if limits.max_rss_mb.is_none() && limits.memory_budget_mb.is_none() {
        return;
    }
    let mib = |mb: u64| mb.saturating_mul(1 << 20);
    let rss: Vec<Option<u64>> = p
        .instances
        .iter()
        .map(|inst| {
            inst.current()
                .filter(|c| c.state() == State::Ready)
                .and_then(|c| c.usage())
                .map(|u| u.rss_bytes)
        })
        .collect();
    let mark = |i: usize, why: RecycleReason, bytes: u64, limit_mb: u64| {
        if !p.instances[i].supervision().ask_recycle(why) {
            return false;
        }
        log::info!(
            target: "toolpool",
            "recycle scheduled tool={} instance={i} reason={} rss_bytes={bytes} limit_mb={limit_mb}",
            p.spec.id,
            why.name()
        );
        true
    };
    if let Some(max) = limits.max_rss_mb {
        for (i, r) in rss.iter().enumerate() {
            if r.is_some_and(|b| b > mib(max)) {
                mark(i, RecycleReason::Memory, r.unwrap_or(0), max);
            }
        }
    }
    if let Some(budget) = limits.memory_budget_mb {
        let mut total: u64 = rss.iter().flatten().sum();
        if total <= mib(budget) {
            return;
        }
        let mut idle: Vec<(u64, usize)> = {
            let counts = p.admission.lock();
            rss.iter()
                .enumerate()
                .filter_map(|(i, r)| Some(((*r)?, i)))
                .filter(|&(_, i)| counts.idle(i))
                .collect()
        };
        idle.sort_unstable_by(|a, b| b.cmp(a));
        for (bytes, i) in idle {
            if total <= mib(budget) {
                break;
            }
            if mark(i, RecycleReason::MemoryBudget, bytes, budget) {
                total -= bytes;
            }
        }
    }
}

/// Take idle instance `i` out of routing (as if a request were in flight on it).
pub(crate) fn reserve(p: &PoolCore, i: usize) -> bool {
    p.admission.lock().reserve_idle(i)
}

pub(crate) fn unreserve(p: &PoolCore, i: usize) {
    p.admission.update(|c| c.unreserve(i));
}
