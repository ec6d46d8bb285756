//! Sizing: how many instances a pool has (`count`, changed by [`resize`]) and how many of
//! them run (elastic pools, `min_instances`), and the rolling [`reload`] to a new spec.
//!
//! The policy, in one place, called from small hooks elsewhere:
//! - **Grow** ([`before_wait`], from the router): a caller finds every started instance
//!   busy and is about to wait. It starts one stopped instance in the background (at most
//!   one per caller, never beyond `count`) and waits as before, so it takes whichever
//!   instance frees first, the busy one or the new one.
//! - **Shrink** ([`may_stop_idle`], from the supervisor): an instance idle longer than
//!   `idle_timeout_ms` stops only while more than `min_instances` run (when the spec sets
//!   `min_instances`; without it every idle instance may stop, as it always could).
//! - **Resize**: indices stay `0..count`. Growing adds indices at the top (a fixed pool
//!   starts them before they are visible; an elastic or lazy one on demand). Shrinking
//!   removes the top indices at once for routing; idle ones stop at once, a busy or leased
//!   one after its last request or lease ends (a request in flight never fails); sticky
//!   keys on a removed index move as when its instance dies.
//! - **Reload**: one instance at a time, the new incarnation starts and passes its ready
//!   line before the old one is swapped out; the old one stops once the requests using it
//!   are over. Only keys read when a process starts may change (see [`RELOADABLE`]).
//!
//! State lives in [`SizeState`](crate::roster::SizeState) and the instance list; this
//! module is the one that changes them. Layer: above the lifecycle (`PoolCore`), below the
//! supervisor and the router, which call the hooks.

use crate::error::{Error, Result};
use crate::incarnation::{Incarnation, State};
use crate::lifecycle::PoolCore;
use crate::roster::Retiree;
use crate::spec::{ToolSpec, MAX_COUNT};
use parking_lot::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// How often a process retired by a resize or a reload (while busy) is checked for its
/// last request.
pub const RETIRE_POLL: Duration = Duration::from_millis(20);

/// The keys a [`Pool::reload`](crate::Pool::reload) may change in place; a new spec that changes any other key is
/// rejected (naming them) before anything changes.
pub const RELOADABLE: &[&str] = &[
    "command",
    "env",
    "env_clear",
    "cwd",
    "startup",
    "limits.max_line_bytes",
    "limits.queue_lines",
    "limits.stderr_tail_lines",
    "count",
    "min_instances",
    "lazy",
    "pty",
];

/// One caller's background start, if it asked for one while waiting.
#[derive(Default)]
pub(crate) struct Grow {
    attempt: Option<Arc<Mutex<Option<Result<()>>>>>,
}

/// Instances with a process that is starting or ready (what status shows as `started`).
pub(crate) fn started(p: &PoolCore) -> usize {
    p.instances
        .iter()
        .filter(|inst| {
            !inst.is_failed()
                && inst.with_current(|c| {
                    c.is_some_and(|c| matches!(c.state(), State::Ready | State::Starting))
                })
        })
        .count()
}

/// Hook in the router: every started instance is busy and the caller is about to wait
/// (under the admission lock). Starts a stopped instance in the background unless this
/// caller's own start is still under way (so a caller has at most one at a time; one whose
/// started instance another caller took starts another); returns its start's error when
/// nothing else can serve the caller.
pub(crate) fn before_wait(p: &Arc<PoolCore>, grow: &mut Grow) -> Result<()> {
    if p.disabled {
        return Ok(());
    }
    if let Some(attempt) = &grow.attempt {
        let outcome = attempt.lock().clone();
        match outcome {
            // Still starting: wait for it (or for a busy one to free).
            None => return Ok(()),
            // Started, but another caller took it first, and this one still waits: it
            // may start another. The index was removed by a shrink meanwhile: ask again.
            Some(Ok(())) | Some(Err(Error::IndexOutOfRange { .. })) => grow.attempt = None,
            Some(Err(e)) if !any_live(p) => return Err(e),
            Some(Err(_)) => return Ok(()),
        }
    }
    if let Some(i) = stopped_index(p) {
        grow.attempt = Some(start_in_background(p, i));
    }
    Ok(())
}

/// A stopped index routing could use once started: not failed, not being started, no
/// restart pending (the supervisor's backoff stays in charge of those).
fn stopped_index(p: &PoolCore) -> Option<usize> {
    let starting = p.size.starting.lock();
    (0..p.instances.len()).find(|&i| {
        let inst = &p.instances[i];
        !starting.contains(&i)
            && !inst.is_failed()
            && inst.with_current(|c| c.is_none())
            && !inst.supervision().will_start()
    })
}

/// Something may still serve: a started instance, or a start under way.
fn any_live(p: &PoolCore) -> bool {
    started(p) > 0 || !p.size.starting.lock().is_empty()
}

fn start_in_background(p: &Arc<PoolCore>, i: usize) -> Arc<Mutex<Option<Result<()>>>> {
    p.size.starting.lock().insert(i);
    // Counted when it begins (a caller served by it may finish before this thread does);
    // taken back if it fails.
    p.size.grows.fetch_add(1, Relaxed);
    let attempt = Arc::new(Mutex::new(None));
    let (pool, done) = (Arc::clone(p), Arc::clone(&attempt));
    let thread = crate::process::spawn_thread(format!("toolpool-grow-{i}"), move || {
        let result = start_one(&pool, i);
        if result.is_err() {
            pool.size.grows.fetch_sub(1, Relaxed);
        }
        *done.lock() = Some(result);
        pool.size.starting.lock().remove(&i);
        // The new instance is ready (or failed): let the waiting callers look again.
        pool.admission.wake();
    });
    let mut starters = p.size.starters.lock();
    join_finished(&mut starters);
    starters.push(thread);
    attempt
}

fn join_finished(threads: &mut Vec<std::thread::JoinHandle<()>>) {
    let mut k = 0;
    while k < threads.len() {
        if threads[k].is_finished() {
            let _ = threads.swap_remove(k).join();
        } else {
            k += 1;
        }
    }
}

/// Start instance `i` unless something runs there already.
fn start_one(p: &Arc<PoolCore>, i: usize) -> Result<()> {
    let inst = &p.instances[i];
    let _g = inst.start_lock.lock();
    p.check_open()?;
    p.check_index(i)?;
    if inst.current().is_some_and(|c| c.state() != State::Dead) {
        return Ok(());
    }
    p.replace_locked(i, None)
}

/// Hook in the supervisor: may an instance idle past `idle_timeout_ms` stop now?
pub(crate) fn may_stop_idle(p: &PoolCore) -> bool {
    match p.size.spec().min_instances {
        None => true,
        Some(min) => started(p) > min,
    }
}

/// Hook in the supervisor: an idle instance is about to stop (counted first, so whoever
/// sees it gone sees it counted).
pub(crate) fn stopping_idle(p: &PoolCore) {
    p.size.shrinks.fetch_add(1, Relaxed);
}

/// Change the pool's `count` to `n` (see the module docs).
pub(crate) fn resize(p: &Arc<PoolCore>, n: usize) -> Result<()> {
    if n == 0 || n > MAX_COUNT {
        return Err(Error::InvalidArgument(format!(
            "resize of '{}' to {n}: the count must be between 1 and {MAX_COUNT}",
            p.spec.id
        )));
    }
    p.check_open()?;
    let _g = p.size.change_lock();
    p.check_open()?;
    resize_locked(p, n)
}

fn resize_locked(p: &Arc<PoolCore>, n: usize) -> Result<()> {
    let cur = p.instances.len();
    let before = p.size.spec();
    let mut spec = (*before).clone();
    spec.count = n;
    spec.min_instances = spec.min_instances.map(|m| m.min(n));
    p.size.set_spec(spec);
    if n > cur {
        if let Err(e) = grow(p, cur, n) {
            p.size.set_spec((*before).clone());
            return Err(e);
        }
    } else if n < cur {
        shrink(p, n, cur);
    }
    Ok(())
}

fn grow(p: &Arc<PoolCore>, cur: usize, n: usize) -> Result<()> {
    p.instances.allocate(n);
    p.admission.update(|c| c.ensure_len(n));
    for i in cur..n {
        let inst = &p.instances[i];
        if inst.current().is_none() {
            // A reused index starts afresh (its request counters are kept).
            inst.clear_failure();
            inst.supervision().reset();
        }
    }
    let spec = p.size.spec();
    if spec.min_instances.is_none() && !spec.lazy && !p.disabled {
        // A fixed pool: the new instances are ready before routing can see them.
        let todo: Vec<usize> = (cur..n)
            .filter(|&i| p.instances[i].current().is_none())
            .collect();
        let fresh = p.spawn_all_ready(&todo)?;
        for (i, c) in todo.into_iter().zip(fresh) {
            if let Some(old) = p.swap_keep(i, c)? {
                p.instances[i].retire(old);
            }
        }
    }
    p.admission.update(|_| p.instances.set_len(n));
    Ok(())
}

fn shrink(p: &Arc<PoolCore>, n: usize, cur: usize) {
    // Under the admission lock: no pick sees the removed indices from here on.
    p.admission.update(|_| p.instances.set_len(n));
    // Idle ones stop now; busy or leased ones once their work is over.
    for i in (n..cur).rev() {
        if !try_retire_index(p, i) {
            retire_later(p, Retiree::Index(i));
        }
    }
}

/// Stop removed index `i` if it is idle (true), or say it is busy (false).
fn try_retire_index(p: &PoolCore, i: usize) -> bool {
    if !p.admission.lock().reserve_idle(i) {
        return false;
    }
    p.stop_instance(i);
    p.admission.update(|c| c.unreserve(i));
    true
}

fn retire_later(p: &Arc<PoolCore>, r: Retiree) {
    let mut g = p.size.retirees.lock();
    g.0.push(r);
    if !g.2 {
        if let Some(old) = g.1.take() {
            let _ = old.join(); // it has said it is done
        }
        let pool = Arc::clone(p);
        g.1 = Some(crate::process::spawn_thread(
            format!("toolpool-retire-{}", p.spec.id),
            move || retire_loop(&pool),
        ));
        g.2 = true;
    }
}

/// The retiring thread: runs while something waits to retire.
fn retire_loop(p: &Arc<PoolCore>) {
    loop {
        if p.is_shut_down() {
            return; // shutdown stops the rest
        }
        let due: Vec<Retiree> = {
            let mut g = p.size.retirees.lock();
            let (due, wait): (Vec<Retiree>, Vec<Retiree>) = g.0.drain(..).partition(|r| match r {
                Retiree::Incarnation(c) => Arc::strong_count(c) == 1,
                Retiree::Index(_) => true,
            });
            g.0 = wait;
            if due.is_empty() && g.0.is_empty() {
                g.2 = false;
                return;
            }
            due
        };
        for r in due {
            match r {
                Retiree::Incarnation(c) => p.instances[c.index()].retire(c),
                Retiree::Index(i) if i < p.instances.len() => {} // a grow took it back
                Retiree::Index(i) => {
                    if !try_retire_index(p, i) {
                        p.size.retirees.lock().0.push(Retiree::Index(i));
                    }
                }
            }
        }
        std::thread::sleep(RETIRE_POLL);
    }
}

/// Replace the pool's spec by `new`, one instance at a time (see the module docs).
pub(crate) fn reload(p: &Arc<PoolCore>, new: ToolSpec) -> Result<()> {
    new.validate()?;
    p.check_open()?;
    let _g = p.size.change_lock();
    p.check_open()?;
    let old = p.size.spec();
    let fixed = fixed_keys_changed(&old, &new);
    if !fixed.is_empty() {
        return Err(Error::Config(format!(
            "tool '{}': reload cannot change {} in place (only {}); nothing was changed",
            p.spec.id,
            fixed.join(", "),
            RELOADABLE.join(", ")
        )));
    }
    let cur = p.instances.len();
    p.size.set_spec(ToolSpec {
        count: cur,
        min_instances: new.min_instances.map(|m| m.min(cur)),
        ..new.clone()
    });
    let mut replaced = Vec::new();
    let mut result = Ok(());
    if !p.disabled {
        for i in 0..cur.min(new.count) {
            match replace_one(p, i) {
                Ok(true) => replaced.push(i),
                Ok(false) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
    }
    if result.is_ok() && new.count != cur {
        result = resize_locked(p, new.count);
    }
    if result.is_ok() {
        p.size.set_spec(new);
        top_up(p);
        return result;
    }
    // The new spec cannot start: back to the old one everywhere.
    p.size.set_spec((*old).clone());
    for i in replaced {
        let _ = replace_one(p, i);
    }
    result
}

/// The keys outside [`RELOADABLE`] that differ between `a` and `b`, as key paths
/// (`restart.policy`, `limits.max_waiting`, `remote.hosts`). Compared through the specs'
/// JSON form, so a key added to [`ToolSpec`] is fixed until it is listed in
/// [`RELOADABLE`], never silently ignored by a reload.
fn fixed_keys_changed(a: &ToolSpec, b: &ToolSpec) -> Vec<String> {
    let mut out = Vec::new();
    match (serde_json::to_value(a), serde_json::to_value(b)) {
        (Ok(va), Ok(vb)) => changed_paths("", &va, &vb, &mut out),
        // A spec always serialises; should it not, nothing may change in place.
        _ => out.push("(the whole spec)".to_string()),
    }
    out.retain(|k| {
        !RELOADABLE
            .iter()
            .any(|r| k == r || k.strip_prefix(r).is_some_and(|rest| rest.starts_with('.')))
    });
    out
}

/// Append to `out` the dotted paths under `prefix` where `a` and `b` differ (objects are
/// compared key by key, anything else as a whole; a missing key counts as `null`).
fn changed_paths(
    prefix: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            let keys: std::collections::BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
            for k in keys {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let (x, y) = (ma.get(k), mb.get(k));
                changed_paths(
                    &path,
                    x.unwrap_or(&Value::Null),
                    y.unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// Replace the running incarnation of `i` by one of the spec now: start it, wait for its
/// ready line, swap it in, retire the old one once its requests are over. `Ok(false)`
/// when nothing runs there (it starts from the new spec when next needed).
fn replace_one(p: &Arc<PoolCore>, i: usize) -> Result<bool> {
    let running = p.instances[i]
        .current()
        .is_some_and(|c| matches!(c.state(), State::Ready | State::Starting));
    if !running {
        return Ok(false);
    }
    let new = p.spawn_ready(i)?;
    if let Some(old) = p.swap_keep(i, new)? {
        retire_incarnation(p, old);
    }
    Ok(true)
}

/// Stop `old` now if nothing uses it, else once the last request or lease lets go.
fn retire_incarnation(p: &Arc<PoolCore>, old: Arc<Incarnation>) {
    if Arc::strong_count(&old) == 1 {
        p.instances[old.index()].retire(old);
    } else {
        retire_later(p, Retiree::Incarnation(old));
    }
}

/// Start stopped instances until `min_instances` run (after a reload raised it).
fn top_up(p: &Arc<PoolCore>) {
    let Some(min) = p.size.spec().min_instances else {
        return;
    };
    if p.disabled {
        return;
    }
    let mut need = min.saturating_sub(started(p));
    for i in 0..p.instances.len() {
        if need == 0 {
            return;
        }
        if p.instances[i].current().is_none() && start_one(p, i).is_ok() {
            need -= 1;
        }
    }
}

/// At shutdown, after every instance in `0..count` stopped: join the background starts
/// and the retiring thread, stop what waits to retire and anything left on a removed
/// index.
pub(crate) fn shutdown(p: &PoolCore) {
    let starters: Vec<_> = p.size.starters.lock().drain(..).collect();
    for t in starters {
        let _ = t.join();
    }
    let thread = p.size.retirees.lock().1.take();
    if let Some(t) = thread {
        let _ = t.join();
    }
    let rest: Vec<Retiree> = p.size.retirees.lock().0.drain(..).collect();
    for r in rest {
        if let Retiree::Incarnation(c) = r {
            p.instances[c.index()].retire(c);
        }
    }
    for i in p.instances.len()..p.instances.allocated() {
        p.stop_instance(i);
    }
}
