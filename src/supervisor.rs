//! Supervision: one thread per pool that restarts dead instances with exponential backoff
//! under a restart-intensity cap, stops idle instances, recycles old or busy ones, probes
//! health, and replaces an instance whose request timed out.
//!
//! The thread sleeps until an event (a child was reaped, a recycle was asked for) or the
//! next timer; with no timers configured it only wakes on events.

use crate::error::{Error, ExitInfo};
use crate::instance::State;
use crate::pool::PoolInner;
use crate::spec::{Protocol, RestartPolicy};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often timers (backoff, idle, lifetime, probes) are checked when any is in use.
pub const TICK: Duration = Duration::from_millis(20);
/// Longest a graceful recycle waits for its instance to finish the request in flight.
pub const RECYCLE_WAIT: Duration = Duration::from_secs(10);
/// An instance that stayed up this long (or `restart.window_ms`, if shorter) has its
/// backoff reset to `restart.backoff_initial_ms`.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// Supervision state of one instance index.
#[derive(Debug, Default)]
pub(crate) struct SlotSup {
    pub started_at: Option<Instant>,
    pub last_used: Option<Instant>,
    pub served: u64,
    pub recycle_at: Option<u64>,
    /// Replace now, whatever the policy (timed-out request, failed probe).
    pub replace_now: bool,
    /// Replace gracefully: start the new process before retiring the old one.
    pub recycle: bool,
    /// A restart is due (policy), at `next_restart`.
    pub restart_due: bool,
    /// The last start attempt failed; another is scheduled with backoff.
    pub start_failed: bool,
    pub next_restart: Option<Instant>,
    pub backoff: Option<Duration>,
    pub restart_times: VecDeque<Instant>,
    pub last_probe: Option<Instant>,
    pub last_probe_latency: Option<Duration>,
}

impl SlotSup {
    /// A new process is on its way (replacement, recycle or scheduled restart).
    pub(crate) fn will_start(&self) -> bool {
        self.replace_now || self.recycle || self.restart_due || self.start_failed
    }

    pub(crate) fn on_start(&mut self) {
        let now = Instant::now();
        self.started_at = Some(now);
        self.last_used = Some(now);
        self.served = 0;
        self.recycle_at = None;
        self.replace_now = false;
        self.recycle = false;
        self.restart_due = false;
        self.next_restart = None;
    }
}

/// The supervisor thread of one pool.
pub(crate) struct Supervisor {
    wake: Sender<()>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Supervisor {
    pub(crate) fn start(pool: &Arc<PoolInner>) -> Option<Supervisor> {
        let (wake, wake_rx) = bounded(1);
        let (stop, stop_rx) = bounded::<()>(0);
        let weak = Arc::downgrade(pool);
        let timers = {
            let s = &pool.spec;
            s.idle_timeout_ms.is_some()
                || s.max_lifetime_ms.is_some()
                || s.health.is_some()
                || s.restart.policy != RestartPolicy::Never
        };
        let thread =
            crate::process::spawn_thread(format!("toolpool-sup-{}", pool.spec.id), move || {
                run(weak, wake_rx, stop_rx, timers)
            });
        Some(Supervisor { wake, stop, thread })
    }

    pub(crate) fn notify(&self) {
        let _ = self.wake.try_send(());
    }

    pub(crate) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn run(pool: Weak<PoolInner>, wake: Receiver<()>, stop: Receiver<()>, timers: bool) {
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
        if p.shut_down.load(Relaxed) {
            return;
        }
        for i in 0..p.slots.len() {
            if p.shut_down.load(Relaxed)
                || !matches!(stop.try_recv(), Err(crossbeam_channel::TryRecvError::Empty))
            {
                return;
            }
            p.supervise(i);
        }
    }
}

/// A small xorshift generator for jitter (no need for a crate).
fn jitter_fraction() -> f64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut x = SEED.load(Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((std::process::id() as u64) << 32)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    SEED.store(x, Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

impl PoolInner {
    /// After a request on `index` (pid `pid`): count it, schedule recycling.
    pub(crate) fn after_request(&self, index: usize, pid: i32) {
        let Some(max) = self.spec.max_requests else {
            self.slots[index].sup.lock().last_used = Some(Instant::now());
            return;
        };
        let same = self.slots[index]
            .current
            .read()
            .as_ref()
            .is_some_and(|w| w.inst.process.pid() == pid);
        let mut s = self.slots[index].sup.lock();
        s.last_used = Some(Instant::now());
        if !same {
            return;
        }
        s.served += 1;
        let at = *s.recycle_at.get_or_insert_with(|| {
            // Up to 10% early, so instances started together do not recycle together.
            let j = (max as f64 * 0.1 * jitter_fraction()) as u64;
            max.saturating_sub(j).max(1)
        });
        if s.served >= at && !s.recycle {
            s.recycle = true;
            drop(s);
            self.notify_supervisor();
        }
    }

    /// Kill the process `pid` at `index` now and have the supervisor start a new one,
    /// whatever the restart policy (a timed-out request left a reply in its stream).
    pub(crate) fn recycle(&self, index: usize, pid: i32) {
        let slot = &self.slots[index];
        if let Some(w) = slot.current.read().as_ref() {
            if w.inst.process.pid() == pid {
                w.inst.retire();
                w.inst.process.signal(libc::SIGKILL);
                slot.sup.lock().replace_now = true;
            }
        }
        self.notify_supervisor();
    }

    fn notify_supervisor(&self) {
        if let Some(s) = self.supervisor.lock().as_ref() {
            s.notify();
        }
    }

    /// One look at instance `i`.
    fn supervise(self: &Arc<Self>, i: usize) {
        let slot = &self.slots[i];
        if slot.failed.lock().is_some() {
            return;
        }
        let now = Instant::now();
        let w = slot.current.read().clone();
        let state = w.as_ref().map(|w| w.inst.state());
        let (replace_now, recycle) = {
            let s = slot.sup.lock();
            (s.replace_now, s.recycle)
        };
        if replace_now {
            self.restart_now(i);
            return;
        }
        let pending = {
            let s = slot.sup.lock();
            s.restart_due || s.start_failed
        };
        if state == Some(State::Dead) || pending {
            self.on_dead(i, w.as_ref().and_then(|w| w.inst.process.exit()), now);
            return;
        }
        let Some(w) = w else { return };
        if state != Some(State::Ready) {
            return;
        }
        let idle = {
            let st = self.route.lock();
            st.in_flight[i] == 0 && !st.leased[i]
        };
        let (started, last_used) = {
            let s = slot.sup.lock();
            (s.started_at.unwrap_or(now), s.last_used.unwrap_or(now))
        };
        if let Some(ms) = self.spec.idle_timeout_ms {
            if idle
                && now.duration_since(last_used) >= Duration::from_millis(ms)
                && self.reserve_idle(i)
            {
                // Reserved, so no request can take it while it stops.
                self.stop_slot(i);
                self.unreserve(i);
                return;
            }
        }
        let too_old = self
            .spec
            .max_lifetime_ms
            .is_some_and(|ms| now.duration_since(started) >= Duration::from_millis(ms));
        if recycle || too_old {
            self.recycle_gracefully(i, w.inst.process.pid());
            return;
        }
        if let Some(h) = &self.spec.health {
            let due = slot
                .sup
                .lock()
                .last_probe
                .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(h.interval_ms));
            if idle && due {
                self.probe(i);
            }
        }
    }

    /// Take idle instance `i` out of routing (as if a request were in flight on it).
    fn reserve_idle(&self, i: usize) -> bool {
        let mut st = self.route.lock();
        if st.in_flight[i] > 0 || st.leased[i] {
            return false;
        }
        st.in_flight[i] += 1;
        true
    }

    fn unreserve(&self, i: usize) {
        self.route.lock().in_flight[i] -= 1;
        self.wake_routers();
    }

    /// A dead instance: restart it per policy, with backoff and the intensity cap.
    fn on_dead(self: &Arc<Self>, i: usize, exit: Option<ExitInfo>, now: Instant) {
        let r = &self.spec.restart;
        let slot = &self.slots[i];
        let mut s = slot.sup.lock();
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
                *slot.failed.lock() = Some(reason);
                self.wake_routers();
                return;
            }
            let base = s
                .backoff
                .unwrap_or(Duration::from_millis(r.backoff_initial_ms));
            s.next_restart = Some(now + base.mul_f64(0.8 + 0.4 * jitter_fraction()));
            s.backoff = Some((base * 2).min(Duration::from_millis(
                r.backoff_max_ms.max(r.backoff_initial_ms),
            )));
            s.restart_due = true;
        }
        if s.next_restart.is_some_and(|t| now >= t) {
            s.restart_times.push_back(now);
            s.restart_due = false;
            s.next_restart = None;
            drop(s);
            let _g = slot.start_lock.lock();
            if !self.shut_down.load(Relaxed) && self.replace_locked(i).is_err() {
                // Try again after the next backoff; it counts toward the cap.
                slot.sup.lock().start_failed = true;
            }
        }
    }

    /// Kill and start again at once (counts as a restart, ignores backoff).
    fn restart_now(self: &Arc<Self>, i: usize) {
        let slot = &self.slots[i];
        let _g = slot.start_lock.lock();
        if self.shut_down.load(Relaxed) {
            return;
        }
        slot.sup.lock().replace_now = false;
        if self.replace_locked(i).is_err() {
            slot.sup.lock().start_failed = true;
        }
    }

    /// Start a replacement first, then retire the old process once it is idle.
    fn recycle_gracefully(self: &Arc<Self>, i: usize, old_pid: i32) {
        let slot = &self.slots[i];
        slot.sup.lock().recycle = false;
        let new = match self.spawn_ready(i) {
            Ok(w) => w,
            Err(_) => return, // try again on the next request or tick
        };
        let deadline = Instant::now() + RECYCLE_WAIT;
        {
            let mut st = self.route.lock();
            while (st.in_flight[i] > 0 || st.leased[i]) && !self.shut_down.load(Relaxed) {
                if self.route_cv.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
        }
        let _g = slot.start_lock.lock();
        let still_old = slot
            .current
            .read()
            .as_ref()
            .is_some_and(|w| w.inst.process.pid() == old_pid);
        if self.shut_down.load(Relaxed) || !still_old {
            new.inst.kill();
            return;
        }
        let old = slot.current.write().replace(new);
        slot.restarts.fetch_add(1, Relaxed);
        slot.sup.lock().on_start();
        self.wake_routers();
        if let Some(old) = old {
            self.retire(i, old);
        }
    }

    /// Send the health probe to idle instance `i`; replace it if it does not answer.
    fn probe(self: &Arc<Self>, i: usize) {
        let Some(h) = &self.spec.health else { return };
        let Some(w) = self.slots[i].current.read().clone() else {
            return;
        };
        if !self.reserve_idle(i) {
            return;
        }
        let payload = match self.spec.protocol {
            Protocol::Jsonrpc => r#"{"method":"ping"}"#.to_string(),
            _ => h.probe.clone().unwrap_or_default(),
        };
        let timeout = Duration::from_millis(h.timeout_ms);
        let t0 = Instant::now();
        let result = self.exchange(&w, &payload, crate::util::deadline_in(timeout), timeout);
        let took = t0.elapsed();
        let ok = match (&result, &h.expect) {
            (Ok(reply), Some(want)) => reply == want,
            (Ok(_), None) => true,
            (Err(Error::Tool { .. }), _) => self.spec.protocol == Protocol::Jsonrpc,
            (Err(_), _) => false,
        };
        if !ok {
            // Out of service before routing can see it again.
            w.inst.retire();
            w.inst.process.signal(libc::SIGKILL);
        }
        self.unreserve(i);
        {
            let mut s = self.slots[i].sup.lock();
            s.last_probe = Some(Instant::now());
            s.last_probe_latency = Some(took);
        }
        if !ok {
            self.restart_now(i);
        }
    }
}
