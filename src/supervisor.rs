//! Supervision: one thread per pool that restarts dead instances with exponential backoff
//! under a restart-intensity cap, stops idle instances, probes health, replaces an
//! instance whose request timed out, and decides when to recycle old, busy or large ones
//! (the recycling itself and the memory checks are [`crate::recycle`]).
//!
//! The thread sleeps until an event (a child was reaped, a recycle was asked for) or the
//! next timer; with no timers configured it only wakes on events. The request path calls
//! [`exchange`] (which recycles an incarnation that may hold a late reply) and
//! [`after_request`] (which counts requests toward `max_requests`).

use crate::error::{Error, ExitInfo, Result};
use crate::exchange::{self as framing, leaves_late_reply, Until};
use crate::incarnation::{Incarnation, State};
use crate::instance::Supervision;
use crate::lifecycle::PoolCore;
use crate::metrics::RecycleReason;
use crate::recycle::{check_memory, recycle, recycle_gracefully, reserve, unreserve};
use crate::sizing;
use crate::spec::{Protocol, RestartPolicy};
use crate::util::{deadline_in, jitter_fraction};
use crossbeam_channel::{bounded, Receiver, Sender};
use parking_lot::MutexGuard;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often timers (backoff, idle, lifetime, probes) are checked when any is in use.
pub const TICK: Duration = Duration::from_millis(20);
/// How often the supervisor reads the memory of every instance when `limits.max_rss_mb`
/// or `limits.memory_budget_mb` is set (a few `/proc` reads per instance).
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// An instance that stayed up this long (or `restart.window_ms`, if shorter) has its
/// backoff reset to `restart.backoff_initial_ms`.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// Longest the supervisor waits for the exit status of an instance whose stdout has ended
/// but whose process is not reaped yet (it blocks the supervisor that long at most, once
/// per such death; a process still running then is taken as failed and replaced).
pub const REAP_WAIT: Duration = Duration::from_millis(250);

/// Counts a request toward `max_requests` (the request path calls it; see [`crate::recycle`]).
pub(crate) use crate::recycle::after_request;

/// The supervisor thread of one pool.
pub(crate) struct Supervisor {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Supervisor {
    /// Start the thread; it holds the pool weakly and stops with it.
    pub(crate) fn start(pool: &Arc<PoolCore>) -> Supervisor {
        let (wake, wake_rx) = bounded(1);
        let (stop, stop_rx) = bounded::<()>(0);
        let weak = Arc::downgrade(pool);
        let timers = {
            let s = &pool.spec;
            s.idle_timeout_ms.is_some()
                || s.max_lifetime_ms.is_some()
                || s.health.is_some()
                || s.restart.policy != RestartPolicy::Never
                || s.limits.max_rss_mb.is_some()
                || s.limits.memory_budget_mb.is_some()
        };
        pool.set_supervisor_wake(Some(wake));
        // The id is validated (no NUL byte), and spawn_thread sanitises names anyway.
        let thread =
            crate::process::spawn_thread(format!("toolpool-sup-{}", pool.spec.id), move || {
                run(weak, wake_rx, stop_rx, timers)
            });
        Supervisor { stop, thread }
    }

    /// Stop the thread and wait for it.
    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(pool: Weak<PoolCore>, wake: Receiver<()>, stop: Receiver<()>, timers: bool) {
    let mut memory_checked: Option<Instant> = None;
    loop {
        let woke = if timers {
            crossbeam_channel::select! {
                recv(wake) -> _ => true,
                recv(stop) -> _ => return,
                default(TICK) => true,
            }
        } else {
            crossbeam_channel::select! {
                recv(wake) -> _ => true,
                recv(stop) -> _ => return,
            }
        };
        if !woke {
            return;
        }
        let Some(p) = pool.upgrade() else { return };
        if memory_checked.is_none_or(|t| t.elapsed() >= MEMORY_CHECK_INTERVAL) {
            memory_checked = Some(Instant::now());
            check_memory(&p);
        }
        for i in 0..p.instances.len() {
            if p.is_shut_down()
                || !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty))
            {
                return;
            }
            supervise(&p, i);
        }
    }
}

/// One framed exchange (see [`crate::exchange`]); an incarnation that may now hold a late
/// reply is killed and replaced, whatever the restart policy.
pub(crate) fn exchange(
    p: &PoolCore,
    inc: &Incarnation,
    payload: &str,
    until: Until<'_>,
) -> Result<String> {
    if crate::cancel::cancelled(until.cancel) {
        // Nothing sent, nothing left behind: the incarnation stays.
        return Err(Error::Cancelled(format!(
            "reply from instance {} of '{}'",
            inc.index(),
            p.spec.id
        )));
    }
    let result = framing::exchange(
        inc,
        &p.spec.protocol,
        &p.spec.id,
        payload,
        until,
        p.spec.cancel_notification.as_deref(),
    );
    if leaves_late_reply(&p.spec.protocol, &result) {
        let (tool, index, pid) = (&p.spec.id, inc.index(), inc.pid());
        match &result {
            Err(Error::Timeout { .. }) => {
                log::warn!(
                    target: "toolpool",
                    "timeout kill tool={tool} instance={index} pid={pid} timeout_ms={} (a late reply could reach the next caller)",
                    until.timeout.as_millis()
                );
                p.instances[index].recycles.count(RecycleReason::Timeout);
            }
            Err(Error::Cancelled(_)) => log::info!(
                target: "toolpool",
                "cancel kill tool={tool} instance={index} pid={pid} (a late reply could reach the next caller)"
            ),
            Err(e) => log::warn!(
                target: "toolpool",
                "protocol error kill tool={tool} instance={index} pid={pid} error={:?}",
                e.to_string()
            ),
            Ok(_) => {}
        }
        recycle(p, index, pid);
    }
    result
}

/// One look at instance `i`.
fn supervise(p: &Arc<PoolCore>, i: usize) {
    let inst = &p.instances[i];
    if inst.is_failed() {
        return;
    }
    let now = Instant::now();
    let cur = inst.current();
    let state = cur.as_ref().map(|c| c.state());
    let (replace_now, recycle, pending) = {
        let s = inst.supervision();
        (s.replace_now, s.recycle, s.restart_due || s.start_failed)
    };
    if replace_now {
        restart_now(p, i);
        return;
    }
    if state == Some(State::Dead) || pending {
        // Dead by its stdout's EOF, the process may not be reaped yet, and its exit status
        // decides an `on_failure` restart: wait for it a little (not found: a failure).
        let judged =
            state == Some(State::Dead) && p.spec.restart.policy == RestartPolicy::OnFailure;
        let exit = cur.as_ref().and_then(|c| {
            c.exit()
                .or_else(|| judged.then(|| c.wait_exit(REAP_WAIT)).flatten())
        });
        on_dead(p, i, exit, now);
        return;
    }
    let Some(cur) = cur else { return };
    if state != Some(State::Ready) {
        return;
    }
    let idle = p.admission.lock().idle(i);
    if let Some(ms) = p.spec.idle_timeout_ms {
        let last_used = inst.supervision().last_used.unwrap_or(now);
        if idle
            && now.duration_since(last_used) >= Duration::from_millis(ms)
            && sizing::may_stop_idle(p)
            && reserve(p, i)
        {
            log::debug!(target: "toolpool", "idle stop tool={} instance={i} pid={} idle_timeout_ms={ms}", p.spec.id, cur.pid());
            // Reserved, so no request can take it while it stops.
            sizing::stopping_idle(p);
            p.stop_instance(i);
            unreserve(p, i);
            return;
        }
    }
    let started = inst.supervision().started_at.unwrap_or(now);
    let too_old = p
        .spec
        .max_lifetime_ms
        .is_some_and(|ms| now.duration_since(started) >= Duration::from_millis(ms));
    if recycle || too_old {
        let why = match inst.supervision().recycle_reason {
            Some(why) if recycle => why,
            _ => RecycleReason::Age,
        };
        recycle_gracefully(p, i, cur.pid(), why);
        return;
    }
    if let Some(h) = &p.spec.health {
        let due = inst
            .supervision()
            .last_probe
            .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(h.interval_ms));
        if idle && due {
            probe(p, i);
        }
    }
}

/// A dead instance: restart it per policy, with backoff and the intensity cap.
fn on_dead(p: &Arc<PoolCore>, i: usize, exit: Option<ExitInfo>, now: Instant) {
    let r = &p.spec.restart;
    let inst = &p.instances[i];
    let mut s = inst.supervision();
    let wanted = s.start_failed
        || match r.policy {
            RestartPolicy::Never => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit != Some(ExitInfo::Code(0)),
        };
    if !wanted && !s.restart_due {
        return;
    }
    if !s.restart_due {
        match schedule_restart(p, i, s, exit, now) {
            Some(guard) => s = guard,
            None => return,
        }
    }
    if s.next_restart.is_some_and(|t| now >= t) {
        s.restart_times.push_back(now);
        s.restart_due = false;
        s.next_restart = None;
        drop(s);
        let _g = inst.start_lock.lock();
        if p.is_shut_down() {
            return;
        }
        match p.replace_locked(i, None) {
            Ok(()) => log::info!(target: "toolpool", "restarted tool={} instance={i}", p.spec.id),
            Err(e) => {
                log::warn!(target: "toolpool", "start failed tool={} instance={i} error={:?}", p.spec.id, e.to_string());
                // Try again after the next backoff; it counts toward the cap.
                inst.supervision().start_failed = true;
            }
        }
    }
}

/// The restart of dead instance `i` (its supervision state `s` held): reset the backoff
/// after a stable run, and either give up at the intensity cap (`None`, the instance
/// marked failed) or schedule the restart after a jittered backoff. Returns the state
/// locked again (it is released while logging).
fn schedule_restart<'a>(
    p: &'a PoolCore,
    i: usize,
    mut s: MutexGuard<'a, Supervision>,
    exit: Option<ExitInfo>,
    now: Instant,
) -> Option<MutexGuard<'a, Supervision>> {
    let r = &p.spec.restart;
    let inst = &p.instances[i];
    s.start_failed = false;
    let window = Duration::from_millis(r.window_ms);
    let stable = s
        .started_at
        .is_some_and(|t| now.duration_since(t) >= BACKOFF_RESET_AFTER.min(window));
    if stable {
        s.backoff = None;
    }
    while s
        .restart_times
        .front()
        .is_some_and(|&t| now.duration_since(t) > window)
    {
        s.restart_times.pop_front();
    }
    if s.restart_times.len() >= r.max_restarts as usize {
        let reason = format!(
            "{} restarts within {} ms (restart.max_restarts); last exit: {}",
            s.restart_times.len(),
            r.window_ms,
            exit.map(|e| e.to_string())
                .unwrap_or_else(|| "start failed".into())
        );
        drop(s);
        log::warn!(target: "toolpool", "gave up tool={} instance={i} reason={reason:?}", p.spec.id);
        inst.mark_failed(reason);
        p.admission.wake();
        return None;
    }
    let base = s
        .backoff
        .unwrap_or(Duration::from_millis(r.backoff_initial_ms));
    s.next_restart = Some(now + base.mul_f64(0.8 + 0.4 * jitter_fraction()));
    s.backoff = Some((base * 2).min(Duration::from_millis(
        r.backoff_max_ms.max(r.backoff_initial_ms),
    )));
    s.restart_due = true;
    let backoff_ms = s
        .next_restart
        .map_or(0, |t| t.saturating_duration_since(now).as_millis());
    let in_window = s.restart_times.len();
    // Not under the supervision lock: a host's log callback may take its time.
    drop(s);
    log::info!(
        target: "toolpool",
        "restart scheduled tool={} instance={i} backoff_ms={backoff_ms} restarts_in_window={in_window} max_restarts={} window_ms={}",
        p.spec.id,
        r.max_restarts,
        r.window_ms
    );
    Some(inst.supervision())
}

/// Kill and start again at once (counts as a restart, ignores backoff).
fn restart_now(p: &Arc<PoolCore>, i: usize) {
    let inst = &p.instances[i];
    let _g = inst.start_lock.lock();
    if p.is_shut_down() {
        return;
    }
    // `replace_now` stays set until the new incarnation is installed (which clears it) or
    // the start has failed: until then a waiting caller must see this instance coming
    // back, or it gives up on a pool whose restart policy is `never`.
    if let Err(e) = p.replace_locked(i, None) {
        log::warn!(target: "toolpool", "start failed tool={} instance={i} error={:?}", p.spec.id, e.to_string());
        let mut s = inst.supervision();
        s.start_failed = true;
        s.replace_now = false;
    }
}

/// Send the health probe to idle instance `i`; replace it if it does not answer.
fn probe(p: &Arc<PoolCore>, i: usize) {
    let Some(h) = &p.spec.health else { return };
    let Some(cur) = p.instances[i].current() else {
        return;
    };
    if !reserve(p, i) {
        return;
    }
    let payload = match p.spec.protocol {
        Protocol::Jsonrpc | Protocol::Lsp => r#"{"method":"ping"}"#.to_string(),
        _ => h.probe.clone().unwrap_or_default(),
    };
    let timeout = Duration::from_millis(h.timeout_ms);
    let t0 = Instant::now();
    let until = Until {
        deadline: deadline_in(timeout),
        timeout,
        cancel: None,
    };
    let result = exchange(p, &cur, &payload, until);
    let took = t0.elapsed();
    let ok = match (&result, &h.expect) {
        (Ok(reply), Some(want)) => reply == want,
        (Ok(_), None) => true,
        (Err(Error::Tool { .. }), _) => p.spec.protocol.is_rpc(),
        (Err(_), _) => false,
    };
    if !ok {
        let why = match &result {
            Ok(reply) => format!("unexpected reply {reply:?}"),
            Err(e) => e.to_string(),
        };
        log::warn!(
            target: "toolpool",
            "probe failed tool={} instance={i} pid={} why={why:?}",
            p.spec.id,
            cur.pid()
        );
        // Out of service before routing can see it again.
        cur.kill();
    }
    unreserve(p, i);
    {
        let mut s = p.instances[i].supervision();
        s.last_probe = Some(Instant::now());
        s.last_probe_latency = Some(took);
    }
    if !ok {
        restart_now(p, i);
    }
}
