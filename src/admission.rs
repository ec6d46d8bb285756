//! Admission: who holds which instance right now, and who waits for one.
//!
//! One lock over the per-instance counts (requests in flight, leases, since when busy),
//! the callers waiting, the round-robin cursor and the sticky keys; one condvar that wakes
//! waiters whenever an instance may have become free. The router picks and waits here;
//! the supervisor reserves an idle instance here before it stops or probes it; status reads
//! the counts. Nothing else changes them.

use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Instant;

/// Sticky keys remembered per pool; past this the oldest mapping is forgotten.
pub const MAX_STICKY_KEYS: usize = 65_536;

/// The counts under the admission lock.
pub(crate) struct Counts {
    in_flight: Vec<usize>,
    /// `(in_flight[i], i)` for every instance, so the least busy is found in O(log N);
    /// kept only in pools routed by load (`None` otherwise: two tree updates per request
    /// that round robin would never read).
    by_load: Option<BTreeSet<(usize, usize)>>,
    leased: Vec<bool>,
    busy_since: Vec<Option<Instant>>,
    /// Where the next round-robin pick starts.
    pub next: usize,
    /// Callers waiting for a free instance now.
    pub waiting: usize,
    /// Times a caller had to wait.
    pub waited_total: u64,
    sticky: HashMap<String, (usize, i32)>,
    sticky_order: VecDeque<String>,
}

impl Counts {
    fn new(n: usize, by_load: bool) -> Counts {
        Counts {
            in_flight: vec![0; n],
            by_load: by_load.then(|| (0..n).map(|i| (0, i)).collect()),
            leased: vec![false; n],
            busy_since: vec![None; n],
            next: 0,
            waiting: 0,
            waited_total: 0,
            sticky: HashMap::new(),
            sticky_order: VecDeque::new(),
        }
    }

    /// Make room for instances `0..n` (a resize grew the pool; never shrinks).
    pub fn ensure_len(&mut self, n: usize) {
        let old = self.in_flight.len();
        if old < n {
            self.in_flight.resize(n, 0);
            self.leased.resize(n, false);
            self.busy_since.resize(n, None);
            if let Some(b) = &mut self.by_load {
                b.extend((old..n).map(|i| (0, i)));
            }
        }
    }

    /// Requests in flight on `i` (a supervisor reservation counts as one).
    pub fn in_flight(&self, i: usize) -> usize {
        self.in_flight[i]
    }

    /// Set `in_flight[i]`, keeping `by_load` in step.
    fn set_in_flight(&mut self, i: usize, n: usize) {
        if let Some(b) = &mut self.by_load {
            b.remove(&(self.in_flight[i], i));
            b.insert((n, i));
        }
        self.in_flight[i] = n;
    }

    /// The least busy instance below `below` requests in flight for which `ok` gives
    /// something, with what it gave; among equals `prefer` (the caller's last one) if it
    /// is one of them, else the first from `from` on (wrapping), as a round robin would
    /// take them. O(log N) plus the instances `ok` turns down. Only in a pool made with
    /// the load order (see [`Admission::new`]); `None` in any other.
    pub fn least_busy<T>(
        &self,
        from: usize,
        below: usize,
        prefer: Option<usize>,
        mut ok: impl FnMut(usize) -> Option<T>,
    ) -> Option<(usize, T)> {
        let by_load = self.by_load.as_ref()?;
        let mut level = by_load.first()?.0;
        let preferred = prefer.filter(|&i| level < below && self.in_flight.get(i) == Some(&level));
        if let Some(hit) = preferred.and_then(|i| ok(i).map(|t| (i, t))) {
            return Some(hit);
        }
        while level < below {
            let hit = by_load
                .range((level, from)..(level + 1, 0))
                .chain(by_load.range((level, 0)..(level, from)))
                .find_map(|&(_, i)| ok(i).map(|t| (i, t)));
            if hit.is_some() {
                return hit;
            }
            level = by_load.range((level + 1, 0)..).next()?.0;
        }
        None
    }

    /// Requests in flight on all instances.
    pub fn in_flight_total(&self) -> usize {
        self.in_flight.iter().sum()
    }

    /// Whether a lease holds `i`.
    pub fn leased(&self, i: usize) -> bool {
        self.leased[i]
    }

    /// Since when `i` has had a request in flight.
    pub fn busy_since(&self, i: usize) -> Option<Instant> {
        self.busy_since[i]
    }

    /// No request in flight and no lease.
    pub fn idle(&self, i: usize) -> bool {
        self.in_flight[i] == 0 && !self.leased[i]
    }

    /// A request starts on `i`.
    pub fn take(&mut self, i: usize) {
        if self.in_flight[i] == 0 {
            self.busy_since[i] = Some(Instant::now());
        }
        self.set_in_flight(i, self.in_flight[i] + 1);
    }

    /// A request on `i` is over.
    pub fn give_back(&mut self, i: usize) {
        self.set_in_flight(i, self.in_flight[i] - 1);
        if self.in_flight[i] == 0 {
            self.busy_since[i] = None;
        }
    }

    /// A lease takes `i` (or gives it back).
    pub fn set_leased(&mut self, i: usize, leased: bool) {
        self.leased[i] = leased;
    }

    /// Reserve idle `i` for the supervisor (stop or probe): routing sees it busy, status
    /// shows one in flight with no request age. False when it is not idle.
    pub fn reserve_idle(&mut self, i: usize) -> bool {
        if !self.idle(i) {
            return false;
        }
        self.set_in_flight(i, self.in_flight[i] + 1);
        true
    }

    /// End a [`Counts::reserve_idle`].
    pub fn unreserve(&mut self, i: usize) {
        self.set_in_flight(i, self.in_flight[i] - 1);
    }

    /// The instance and pid `key` maps to.
    pub fn sticky(&self, key: &str) -> Option<(usize, i32)> {
        self.sticky.get(key).copied()
    }

    /// True while `key` has a mapping.
    pub fn has_key(&self, key: &str) -> bool {
        self.sticky.contains_key(key)
    }

    /// Drop `key`'s mapping (its incarnation is gone).
    pub fn forget(&mut self, key: &str) {
        self.sticky.remove(key);
    }

    /// Map `key` to instance `i` running `pid`; the oldest key goes past the cap.
    pub fn remember(&mut self, key: &str, i: usize, pid: i32) {
        if self.sticky.insert(key.to_string(), (i, pid)).is_none() {
            self.sticky_order.push_back(key.to_string());
            if self.sticky_order.len() > MAX_STICKY_KEYS {
                if let Some(old) = self.sticky_order.pop_front() {
                    self.sticky.remove(&old);
                }
            }
        }
    }
}

/// The admission state of a pool and its condvar.
pub(crate) struct Admission {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Admission {
    /// For `n` instances; `by_load` keeps them ordered by load for
    /// [`Counts::least_busy`] (pools routed by load).
    pub fn new(n: usize, by_load: bool) -> Admission {
        Admission {
            counts: Mutex::new(Counts::new(n, by_load)),
            changed: Condvar::new(),
        }
    }

    /// The counts, locked.
    pub fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock()
    }

    /// Wait for a change until `deadline`; true when the deadline passed.
    pub fn wait_until(&self, counts: &mut MutexGuard<'_, Counts>, deadline: Instant) -> bool {
        self.changed.wait_until(counts, deadline).timed_out()
    }

    /// Wake every waiter. Takes the lock first so a waiter that has just checked cannot
    /// miss the wake-up.
    pub fn wake(&self) {
        drop(self.counts.lock());
        self.changed.notify_all();
    }

    /// Change the counts, then wake every waiter.
    pub fn update(&self, f: impl FnOnce(&mut Counts)) {
        f(&mut self.counts.lock());
        self.changed.notify_all();
    }

    /// Wait until `i` is idle, `stop()` says so, or `deadline` passes.
    pub fn wait_idle(&self, i: usize, deadline: Instant, stop: impl Fn() -> bool) {
        let mut c = self.counts.lock();
        while !c.idle(i) && !stop() {
            if self.wait_until(&mut c, deadline) {
                break;
            }
        }
    }
}
