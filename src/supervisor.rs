//! Supervision: one thread per pool that restarts dead instances with exponential backoff
//! under a restart-intensity cap, stops idle instances, probes health, replaces an
//! instance whose request timed out, and decides when to recycle old, busy or large ones
//! (the recycling itself and the memory checks are [`crate::recycle`]).
//!
//! The thread sleeps until an event (a child was reaped, a recycle was asked for) or the
//! next timer; with no timers configured it only wakes on events. What it acts on is each
//! instance's [`Supervision`](crate::instance::Supervision) (what is pending next, and the
//! history behind it), which the request path (`hold`) and recycling also move through its
//! transitions.

use crate::cancel::Wait;
use crate::error::{Error, ExitInfo};
use crate::hold::exchange_on;
use crate::incarnation::State;
use crate::instance::{Next, Scheduled};
use crate::lifecycle::PoolCore;
use crate::metrics::RecycleReason;
use crate::recycle::{check_memory, recycle_gracefully, reserve, unreserve};
use crate::sizing;
use crate::spec::{Protocol, RestartPolicy};
use crate::util::jitter_fraction;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often timers (backoff, idle, lifetime, probes) are checked when any is in use.
pub const TICK: Duration = Duration::from_millis(20);
/// How often the supervisor reads the memory of every instance when `limits.max_rss_mb`
/// or `limits.memory_budget_mb` is set (a few `/proc` reads per instance).
pub const MEMORY_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Longest the supervisor waits for the exit status of an instance whose stdout has ended
/// but whose process is not reaped yet (it blocks the supervisor that long at most, once
/// per such death; a process still running then is taken as failed and replaced).
pub const REAP_WAIT: Duration = Duration::from_millis(250);

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

/// One look at instance `i`.
fn supervise(p: &Arc<PoolCore>, i: usize) {
    let inst = &p.instances[i];
    if inst.is_failed() {
        return;
    }
    let now = Instant::now();
    let cur = inst.current();
    let state = cur.as_ref().map(|c| c.state());
    let next = inst.supervision().next();
    if next == Next::ReplaceNow {
        restart_now(p, i);
        return;
    }
    let pending = matches!(next, Next::RestartAt(_) | Next::StartFailed);
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
        let last_used = inst.supervision().last_used().unwrap_or(now);
        if idle
            && now.duration_since(last_used) >= Duration::from_millis(ms)
            && sizing::may_stop_idle(p)
            && reserve(p, i)
        {
            log::debug!(target: "toolpool", "idle stop tool={} instance={i} pid={} idle_timeout_ms={ms}", p.spec.id, cur.log_pid());
            // Reserved, so no request can take it while it stops.
            sizing::stopping_idle(p);
            p.stop_instance(i);
            unreserve(p, i);
            return;
        }
    }
    let started = inst.supervision().started_at().unwrap_or(now);
    let too_old = p
        .spec
        .max_lifetime_ms
        .is_some_and(|ms| now.duration_since(started) >= Duration::from_millis(ms));
    if too_old {
        inst.supervision().ask_recycle(RecycleReason::Age);
    }
    // (Taken in a statement of its own: the guard must not live through the recycle.)
    let recycle = inst.supervision().take_recycle();
    if let Some(why) = recycle {
        recycle_gracefully(p, i, cur.pid(), why);
        return;
    }
    if let Some(h) = &p.spec.health {
        let due = inst
            .supervision()
            .last_probe()
            .0
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
    let next = inst.supervision().next();
    let schedule = match next {
        Next::RestartAt(_) => false,
        Next::StartFailed => true,
        _ => match r.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure if exit != Some(ExitInfo::Code(0)) => true,
            RestartPolicy::Never | RestartPolicy::OnFailure => {
                // It stays down: a recycle asked for before it ended is moot, and callers
                // waiting for it are told why (the router asks `none_can_serve`).
                if inst.supervision().take_recycle().is_some() {
                    p.admission.wake();
                }
                return;
            }
        },
    };
    if schedule && !schedule_restart(p, i, exit, now) {
        return;
    }
    if !inst.supervision().begin_restart(now) {
        return;
    }
    let _g = inst.start_lock.lock();
    if p.is_shut_down() {
        return;
    }
    match p.replace_locked(i, None) {
        Ok(()) => log::info!(target: "toolpool", "restarted tool={} instance={i}", p.spec.id),
        Err(e) => start_failed(p, i, &e),
    }
}

/// A start of instance `i` failed: log it (not when the pool is shutting down, which
/// fails starts on purpose) and try again after the next backoff (it counts toward the
/// cap).
fn start_failed(p: &PoolCore, i: usize, e: &Error) {
    if !p.is_shut_down() {
        log::warn!(target: "toolpool", "start failed tool={} instance={i} error={:?}", p.spec.id, e.to_string());
    }
    p.instances[i].supervision().start_failed();
}

/// Schedule the restart of dead instance `i`, or give up at the intensity cap (the
/// instance is marked failed, and false is returned).
fn schedule_restart(p: &PoolCore, i: usize, exit: Option<ExitInfo>, now: Instant) -> bool {
    let r = &p.spec.restart;
    let inst = &p.instances[i];
    let last_exit = exit
        .map(|e| e.to_string())
        .unwrap_or_else(|| "start failed".into());
    let scheduled = inst
        .supervision()
        .schedule_restart(r, now, jitter_fraction(), &last_exit);
    // Logged and marked with the supervision lock released: a host's log callback may
    // take its time.
    match scheduled {
        Scheduled::GaveUp(reason) => {
            log::warn!(target: "toolpool", "gave up tool={} instance={i} reason={reason:?}", p.spec.id);
            inst.mark_failed(reason);
            p.admission.wake();
            false
        }
        Scheduled::After { backoff, in_window } => {
            log::info!(
                target: "toolpool",
                "restart scheduled tool={} instance={i} backoff_ms={} restarts_in_window={in_window} max_restarts={} window_ms={}",
                p.spec.id,
                backoff.as_millis(),
                r.max_restarts,
                r.window_ms
            );
            true
        }
    }
}

/// Kill and start again at once (counts as a restart, ignores backoff).
fn restart_now(p: &Arc<PoolCore>, i: usize) {
    let inst = &p.instances[i];
    let _g = inst.start_lock.lock();
    if p.is_shut_down() {
        return;
    }
    // `ReplaceNow` stays pending until the new incarnation is installed (which clears it)
    // or the start has failed: until then a waiting caller must see this instance coming
    // back, or it gives up on a pool whose restart policy is `never`.
    if let Err(e) = p.replace_locked(i, None) {
        start_failed(p, i, &e);
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
    let t0 = Instant::now();
    let wait = Wait::new(Duration::from_millis(h.timeout_ms));
    let result = exchange_on(p, &cur, &payload, wait.until_from(t0));
    let took = t0.elapsed();
    let ok = match (&result, &h.expect) {
        (Ok(reply), Some(want)) => reply == want.as_bytes(),
        (Ok(_), None) => true,
        (Err(Error::Tool { .. }), _) => p.spec.protocol.is_rpc(),
        (Err(_), _) => false,
    };
    if !ok {
        let why = match &result {
            Ok(reply) => format!("unexpected reply {:?}", String::from_utf8_lossy(reply)),
            Err(e) => e.to_string(),
        };
        log::warn!(
            target: "toolpool",
            "probe failed tool={} instance={i} pid={} why={why:?}",
            p.spec.id,
            cur.log_pid()
        );
        // Out of service before routing can see it again.
        cur.kill();
    }
    unreserve(p, i);
    p.instances[i].supervision().probed(Instant::now(), took);
    if !ok {
        restart_now(p, i);
    }
}
