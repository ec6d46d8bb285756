//! The supervisor's bookkeeping for one instance: what happens to it next ([`Next`]) and
//! the history that decides it (start time, use, requests served, restarts, backoff,
//! probes).
//!
//! The fields are private: every change is one of the transitions below, so the rules
//! (a pending replacement is not undone by a recycle request, a restart is counted in the
//! window when it begins, an install clears what was pending) live in one place. The
//! request path calls [`Supervision::used`] and [`Supervision::count_request`]; recycling
//! calls [`Supervision::ask_recycle`], [`Supervision::replace_now`] and
//! [`Supervision::take_recycle`]; the supervisor thread schedules and begins restarts;
//! status only reads.

use crate::metrics::RecycleReason;
use crate::spec::Restart;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An instance that stayed up this long (or `restart.window_ms`, if shorter) has its
/// backoff reset to `restart.backoff_initial_ms`.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);

/// What the supervisor does next for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Next {
    /// Nothing pending: it serves (or is stopped on purpose, or not started yet).
    #[default]
    Serve,
    /// Replace it now, whatever the restart policy (a request may have left a late reply,
    /// a probe failed).
    ReplaceNow,
    /// Replace it gracefully (the new process starts first), for this reason.
    Recycle(RecycleReason),
    /// Start it again at this instant (the restart policy, after a backoff).
    RestartAt(Instant),
    /// The last start failed; the next one is scheduled with backoff.
    StartFailed,
}

/// How [`Supervision::schedule_restart`] went.
pub(crate) enum Scheduled {
    /// A restart at the next backoff: its delay and the restarts in the window so far.
    After { backoff: Duration, in_window: usize },
    /// The intensity cap is reached: the instance is to be marked failed, for this reason.
    GaveUp(String),
}

/// The bookkeeping of one instance (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Supervision {
    next: Next,
    started_at: Option<Instant>,
    last_used: Option<Instant>,
    /// Requests served by the current incarnation.
    served: u64,
    /// When `served` reaches this, the incarnation is recycled (`max_requests`, jittered).
    recycle_at: Option<u64>,
    backoff: Option<Duration>,
    restart_times: VecDeque<Instant>,
    last_probe: Option<Instant>,
    last_probe_latency: Option<Duration>,
}

impl Supervision {
    /// What is pending.
    pub fn next(&self) -> Next {
        self.next
    }

    /// A new process is on its way (replacement, recycle, scheduled or failed restart).
    pub fn will_start(&self) -> bool {
        self.next != Next::Serve
    }

    /// A restart is scheduled or the last start failed: the instance has no process that
    /// serves, and one is coming (status shows it dead, not stopped).
    pub fn restart_pending(&self) -> bool {
        matches!(self.next, Next::RestartAt(_) | Next::StartFailed)
    }

    /// When the current incarnation was installed.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// When a request on it last ended (or it started).
    pub fn last_used(&self) -> Option<Instant> {
        self.last_used
    }

    /// When it was last probed, and how long the probe took.
    pub fn last_probe(&self) -> (Option<Instant>, Option<Duration>) {
        (self.last_probe, self.last_probe_latency)
    }

    /// An incarnation was just installed: whatever was pending is done.
    pub fn started(&mut self) {
        let now = Instant::now();
        self.next = Next::Serve;
        self.started_at = Some(now);
        self.last_used = Some(now);
        self.served = 0;
        self.recycle_at = None;
    }

    /// A start failed; the next is scheduled with backoff (and counts toward the cap).
    pub fn start_failed(&mut self) {
        self.next = Next::StartFailed;
    }

    /// Replace now, whatever was pending (the process is being killed).
    pub fn replace_now(&mut self) {
        self.next = Next::ReplaceNow;
    }

    /// Recycle gracefully for `why`, unless something is already pending. False when it
    /// was (the request is dropped: the pending step replaces the process anyway).
    pub fn ask_recycle(&mut self, why: RecycleReason) -> bool {
        if self.next != Next::Serve {
            return false;
        }
        self.next = Next::Recycle(why);
        true
    }

    /// The graceful recycle begins: its reason, and nothing pending any more (a recycle
    /// that cannot finish asks again with [`Supervision::ask_recycle`]).
    pub fn take_recycle(&mut self) -> Option<RecycleReason> {
        match self.next {
            Next::Recycle(why) => {
                self.next = Next::Serve;
                Some(why)
            }
            _ => None,
        }
    }

    /// A request on it ended at `ended`.
    pub fn used(&mut self, ended: Instant) {
        self.last_used = Some(ended);
    }

    /// A request on the current incarnation ended at `ended`, with `max_requests` = `max`:
    /// true when the incarnation is now due for a recycle (asked for here).
    pub fn count_request(&mut self, ended: Instant, max: u64, jitter: f64) -> bool {
        self.last_used = Some(ended);
        self.served += 1;
        let at = *self.recycle_at.get_or_insert_with(|| {
            // Up to 10% early, so instances started together do not recycle together.
            let j = (max as f64 * 0.1 * jitter) as u64;
            max.saturating_sub(j).max(1)
        });
        self.served >= at && self.ask_recycle(RecycleReason::Requests)
    }

    /// A probe was sent at `at` and took `took`.
    pub fn probed(&mut self, at: Instant, took: Duration) {
        self.last_probe = Some(at);
        self.last_probe_latency = Some(took);
    }

    /// The instance died (or its start failed) and `r` wants it back: drop the restarts
    /// older than the window, reset the backoff after a stable run, then either give up at
    /// the intensity cap (nothing pending; the caller marks it failed) or schedule the
    /// restart after a backoff jittered by `jitter` (0..1).
    pub fn schedule_restart(
        &mut self,
        r: &Restart,
        now: Instant,
        jitter: f64,
        last_exit: &str,
    ) -> Scheduled {
        self.next = Next::Serve;
        let window = Duration::from_millis(r.window_ms);
        let stable = self
            .started_at
            .is_some_and(|t| now.duration_since(t) >= BACKOFF_RESET_AFTER.min(window));
        if stable {
            self.backoff = None;
        }
        while self
            .restart_times
            .front()
            .is_some_and(|&t| now.duration_since(t) > window)
        {
            self.restart_times.pop_front();
        }
        if self.restart_times.len() >= r.max_restarts as usize {
            return Scheduled::GaveUp(format!(
                "{} restarts within {} ms (restart.max_restarts); last exit: {last_exit}",
                self.restart_times.len(),
                r.window_ms,
            ));
        }
        let base = self
            .backoff
            .unwrap_or(Duration::from_millis(r.backoff_initial_ms));
        let backoff = base.mul_f64(0.8 + 0.4 * jitter);
        self.next = Next::RestartAt(now + backoff);
        self.backoff = Some((base * 2).min(Duration::from_millis(
            r.backoff_max_ms.max(r.backoff_initial_ms),
        )));
        Scheduled::After {
            backoff,
            in_window: self.restart_times.len(),
        }
    }

    /// The scheduled restart is due at `now`: it begins (counted in the window). False
    /// when none is scheduled or it is not due yet.
    pub fn begin_restart(&mut self, now: Instant) -> bool {
        match self.next {
            Next::RestartAt(t) if now >= t => {
                self.restart_times.push_back(now);
                self.next = Next::Serve;
                true
            }
            _ => false,
        }
    }

    /// A restart asked for by the user: a clean restart history and backoff.
    pub fn clear_history(&mut self) {
        self.restart_times.clear();
        self.backoff = None;
    }

    /// Everything forgotten: an index a shrink removed comes back with a grow.
    pub fn reset(&mut self) {
        *self = Supervision::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restart(max_restarts: u32) -> Restart {
        Restart {
            max_restarts,
            ..Restart::default()
        }
    }

    #[test]
    fn a_recycle_request_does_not_undo_a_pending_replacement() {
        let mut s = Supervision::default();
        s.replace_now();
        assert!(!s.ask_recycle(RecycleReason::Memory));
        assert_eq!(s.next(), Next::ReplaceNow);
        s.started();
        assert!(s.ask_recycle(RecycleReason::Memory));
        assert_eq!(s.take_recycle(), Some(RecycleReason::Memory));
        assert_eq!(s.next(), Next::Serve);
    }

    #[test]
    fn restarts_count_in_the_window_until_the_cap() {
        let mut s = Supervision::default();
        let r = restart(2);
        let t0 = Instant::now();
        for k in 0..2 {
            let Scheduled::After { backoff, in_window } = s.schedule_restart(&r, t0, 0.5, "x")
            else {
                panic!("gave up after {k}");
            };
            assert_eq!(in_window, k);
            assert!(!s.begin_restart(t0), "not due before its backoff");
            assert!(s.begin_restart(t0 + backoff));
        }
        match s.schedule_restart(&r, t0, 0.5, "code=3") {
            Scheduled::GaveUp(why) => assert!(why.contains("2 restarts"), "{why}"),
            Scheduled::After { .. } => panic!("the cap did not hold"),
        }
        assert_eq!(s.next(), Next::Serve);
    }

    #[test]
    fn max_requests_asks_for_one_recycle() {
        let mut s = Supervision::default();
        s.started();
        let now = Instant::now();
        let due: Vec<bool> = (0..4).map(|_| s.count_request(now, 3, 0.0)).collect();
        assert_eq!(due, [false, false, true, false]);
        assert_eq!(s.next(), Next::Recycle(RecycleReason::Requests));
    }
}
