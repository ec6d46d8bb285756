//! Requests over a pool: picking an instance (round robin, least busy, sticky), waiting
//! for a free one within bounds, leases, routed send, batches, and the one-shot fallback.
//!
//! Every request ends in exactly one outcome: a reply, a tool error, a timeout, an
//! instance death, or shut-down. A late reply never reaches the next caller: after a
//! timeout in `lines` or `marker` framing the instance is recycled; in `jsonrpc` a reply
//! to a forgotten id is dropped and counted.

use crate::error::{Error, Result};
use crate::instance::State;
use crate::metrics::Outcome;
use crate::oneshot;
use crate::pool::{Pool, PoolInner, Worker};
use crate::reader::WaitEnd;
use crate::rpc;
use crate::spec::{Protocol, RestartPolicy, Routing};
use crate::util::lossy;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sticky keys remembered per pool; past this the oldest mapping is forgotten.
pub const MAX_STICKY_KEYS: usize = 65_536;
/// Most threads one `map` call uses (one per request it has in flight).
pub const MAX_MAP_THREADS: usize = 256;
/// Largest reply assembled in `marker` framing; past it the request fails and the
/// instance is recycled.
pub const MAX_MARKER_REPLY_BYTES: usize = 64 << 20;

/// Which path served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// A pooled instance.
    Pool,
    /// A one-shot run of the tool.
    Oneshot,
}

/// A successful request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reply {
    /// The reply: the line (`lines`), the lines joined by `\n` (`marker`), the `result`
    /// as JSON text (`jsonrpc`), or the one-shot run's stdout without its final newline.
    pub text: String,
    /// The instance that answered (None for a one-shot run).
    pub instance: Option<usize>,
    /// Which path served it.
    pub served_by: ServedBy,
    /// For sticky requests: the key's instance died, so the key moved to this one.
    pub moved: bool,
}

/// One result of a batch ([`Pool::map`]) in the shape the C, Go and Python APIs return as
/// JSON, keys in this order: `{"ok":true,"text":...,"instance":N|null,"served_by":...}` or
/// `{"ok":false,"code":<status>,"error":"<message>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MapResult {
    /// A reply.
    Ok {
        /// Always `true`.
        ok: bool,
        /// [`Reply::text`].
        text: String,
        /// [`Reply::instance`].
        instance: Option<usize>,
        /// [`Reply::served_by`].
        served_by: ServedBy,
    },
    /// An error.
    Err {
        /// Always `false`.
        ok: bool,
        /// [`Error::code`].
        code: i32,
        /// The error's message.
        error: String,
    },
}

impl From<Result<Reply>> for MapResult {
    fn from(r: Result<Reply>) -> MapResult {
        match r {
            Ok(reply) => MapResult::Ok {
                ok: true,
                text: reply.text,
                instance: reply.instance,
                served_by: reply.served_by,
            },
            Err(e) => MapResult::Err {
                ok: false,
                code: e.code(),
                error: e.to_string(),
            },
        }
    }
}

/// Routing state of a pool, under one lock.
pub(crate) struct RouteState {
    pub in_flight: Vec<usize>,
    pub leased: Vec<bool>,
    pub busy_since: Vec<Option<Instant>>,
    next: usize,
    pub waiting: usize,
    pub waited_total: u64,
    sticky: HashMap<String, (usize, i32)>,
    sticky_order: std::collections::VecDeque<String>,
}

impl RouteState {
    pub fn new(n: usize) -> RouteState {
        RouteState {
            in_flight: vec![0; n],
            leased: vec![false; n],
            busy_since: vec![None; n],
            next: 0,
            waiting: 0,
            waited_total: 0,
            sticky: HashMap::new(),
            sticky_order: Default::default(),
        }
    }

    fn take(&mut self, i: usize) {
        if self.in_flight[i] == 0 {
            self.busy_since[i] = Some(Instant::now());
        }
        self.in_flight[i] += 1;
    }

    fn give_back(&mut self, i: usize) {
        self.in_flight[i] -= 1;
        if self.in_flight[i] == 0 {
            self.busy_since[i] = None;
        }
    }

    fn remember(&mut self, key: &str, i: usize, pid: i32) {
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

/// What kind of use an instance is taken for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Request,
    Lease,
}

/// A claim on an instance for one request or a lease; gives it back when dropped.
struct Hold {
    pool: Arc<PoolInner>,
    index: usize,
    lease: bool,
}

/// A claimed instance and its worker.
struct Taken {
    hold: Hold,
    worker: Worker,
}

impl Drop for Hold {
    fn drop(&mut self) {
        {
            let mut st = self.pool.route.lock();
            if self.lease {
                st.leased[self.index] = false;
            } else {
                st.give_back(self.index);
            }
        }
        self.pool.route_cv.notify_all();
    }
}

impl PoolInner {
    /// Wake callers waiting for an instance. Takes the route lock first so a waiter that
    /// has just checked cannot miss the wake-up.
    pub(crate) fn wake_routers(&self) {
        drop(self.route.lock());
        self.route_cv.notify_all();
    }

    /// Whether instance `i` can take work now (`Some(needs_start)`), or not (`None`).
    fn available(&self, i: usize) -> Option<bool> {
        let slot = &self.slots[i];
        if slot.failed.lock().is_some() {
            return None;
        }
        match slot.current.read().as_ref() {
            Some(w) => w.inst.usable().then_some(false),
            None => Some(true),
        }
    }

    /// False when no instance will ever take work without a manual `restart`.
    fn may_serve(&self) -> bool {
        let auto = self.spec.restart.policy != RestartPolicy::Never;
        self.slots.iter().any(|slot| {
            if slot.failed.lock().is_some() {
                return false;
            }
            if slot.sup.lock().will_start() {
                return true;
            }
            match slot.current.read().as_ref() {
                None => true,
                Some(w) => auto || !matches!(w.inst.state(), State::Dead | State::Stopped),
            }
        })
    }

    fn pick(&self, st: &mut RouteState, how: Use, key: Option<&str>) -> Option<(usize, bool)> {
        let n = self.slots.len();
        let cap = match how {
            Use::Request => self.spec.max_in_flight,
            Use::Lease => 1,
        };
        let free = |st: &RouteState, i: usize| !st.leased[i] && st.in_flight[i] < cap;
        if let Some(key) = key {
            if let Some(&(i, pid)) = st.sticky.get(key) {
                let same = self.slots[i]
                    .current
                    .read()
                    .as_ref()
                    .is_some_and(|w| w.inst.process.pid() == pid && w.inst.usable());
                if same {
                    return free(st, i).then_some((i, false));
                }
                st.sticky.remove(key);
            }
        }
        let candidates = (0..n)
            .map(|k| (st.next + k) % n)
            .filter(|&i| free(st, i))
            .filter_map(|i| self.available(i).map(|start| (i, start)));
        let chosen = if self.spec.routing == Routing::LeastBusy && key.is_none() {
            candidates.min_by_key(|&(i, _)| st.in_flight[i])
        } else {
            candidates.into_iter().next()
        };
        if let Some((i, _)) = chosen {
            st.next = (i + 1) % n;
        }
        chosen
    }

    /// Take an instance for a request or a lease, waiting until `deadline` within the
    /// `limits.max_waiting` bound. `Ok(None)` means no instance can serve at all.
    fn take(
        self: &Arc<Self>,
        how: Use,
        key: Option<&str>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Option<(Taken, bool)>> {
        let mut waited = false;
        // Set once a sticky key's instance is found dead and the key is dropped.
        let mut moved = false;
        let mut st = self.route.lock();
        let mut try_pick = |st: &mut RouteState| {
            let had_key = key.is_some_and(|k| st.sticky.contains_key(k));
            let picked = self.pick(st, how, key);
            moved |= had_key && !key.is_some_and(|k| st.sticky.contains_key(k));
            picked
        };
        let (index, start) = loop {
            self.check_open()?;
            if let Some(p) = try_pick(&mut st) {
                break p;
            }
            if !self.may_serve() {
                return Ok(None);
            }
            if st.waiting >= self.spec.limits.max_waiting {
                return Err(Error::Saturated {
                    tool: self.spec.id.clone(),
                    waiting: st.waiting,
                    max_waiting: self.spec.limits.max_waiting,
                });
            }
            if !waited {
                waited = true;
                st.waited_total += 1;
            }
            st.waiting += 1;
            let timed_out = self.route_cv.wait_until(&mut st, deadline).timed_out();
            st.waiting -= 1;
            if timed_out {
                // No pick now: the deadline has passed, and an exchange begun now would
                // only time out (and, in `lines` framing, recycle a healthy instance).
                self.check_open()?;
                let what = match how {
                    Use::Request => format!("a free instance of '{}'", self.spec.id),
                    Use::Lease => format!("an instance of '{}' to lease", self.spec.id),
                };
                return Err(Error::timeout(what, timeout));
            }
        };
        match how {
            Use::Request => st.take(index),
            Use::Lease => st.leased[index] = true,
        }
        drop(st);
        // From here the instance is ours; `Hold` gives it back on every path.
        let hold = Hold {
            pool: Arc::clone(self),
            index,
            lease: how == Use::Lease,
        };
        if start {
            self.ensure_started(index)?;
        }
        let worker = self.worker(index, false)?;
        if let Some(k) = key {
            self.route
                .lock()
                .remember(k, index, worker.inst.process.pid());
        }
        Ok(Some((Taken { hold, worker }, moved)))
    }

    /// One framed exchange on `w`, which the caller holds.
    pub(crate) fn exchange(
        self: &Arc<Self>,
        w: &Worker,
        payload: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<String> {
        let inst = &w.inst;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let what = || format!("reply from instance {} of '{}'", inst.index, self.spec.id);
        match (&self.spec.protocol, &w.rpc) {
            (Protocol::Jsonrpc, Some(d)) => {
                let Some((id, rx)) = d.register() else {
                    return Err(inst.death(Duration::from_millis(200)));
                };
                let line = match rpc::encode_request(id, payload) {
                    Ok(l) => l,
                    Err(e) => {
                        d.forget(id);
                        return Err(e);
                    }
                };
                if let Err(e) = inst.send(&line) {
                    d.forget(id);
                    return Err(e);
                }
                let deadline_reply = inst.stdout.wait_for(deadline, |_| match rx.try_recv() {
                    Ok(outcome) => Some(Some(outcome)),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
                    Err(crossbeam_channel::TryRecvError::Empty) => None,
                });
                match deadline_reply {
                    Ok(Some(Ok(result))) => Ok(result),
                    Ok(Some(Err(e))) => Err(e.into()),
                    Err(WaitEnd::Timeout) => {
                        d.forget(id);
                        Err(Error::timeout(what(), timeout))
                    }
                    Ok(None) | Err(WaitEnd::Eof) => Err(inst.death(Duration::from_millis(200))),
                }
            }
            (proto, _) => {
                // Output nobody asked for must not be taken for this reply.
                inst.drop_unsolicited();
                inst.send(payload.as_bytes())?;
                let read = || match inst.read_line(remaining()) {
                    Err(Error::Timeout { .. }) => Err(Error::timeout(what(), timeout)),
                    other => other,
                };
                let result = match proto {
                    Protocol::Marker(marker) => {
                        let mut out: Vec<u8> = Vec::new();
                        let mut first = true;
                        loop {
                            let line = match read() {
                                Ok(l) => l,
                                Err(e) => break Err(e),
                            };
                            if line == marker.as_bytes() {
                                break Ok(lossy(out));
                            }
                            if !first {
                                out.push(b'\n');
                            }
                            first = false;
                            out.extend_from_slice(&line);
                            if out.len() > MAX_MARKER_REPLY_BYTES {
                                break Err(Error::Protocol(format!(
                                    "reply from instance {} of '{}' exceeds {} bytes without the marker '{marker}'",
                                    inst.index, self.spec.id, MAX_MARKER_REPLY_BYTES
                                )));
                            }
                        }
                    }
                    _ => read().map(lossy),
                };
                if matches!(result, Err(Error::Timeout { .. } | Error::Protocol(_))) {
                    // A late reply would be read by the next caller: replace the process.
                    self.recycle(inst.index, inst.process.pid());
                }
                result
            }
        }
    }

    /// [`PoolInner::exchange`] counted in the instance's request metrics (probes are not
    /// requests and call `exchange` directly).
    fn exchange_counted(
        self: &Arc<Self>,
        w: &Worker,
        payload: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<String> {
        let started = Instant::now();
        let result = self.exchange(w, payload, deadline, timeout);
        self.slots[w.inst.index]
            .metrics
            .record(Outcome::of(&result), false, started.elapsed());
        result
    }

    /// Run one request with routing, waiting, fallback and metrics.
    pub(crate) fn request(
        self: &Arc<Self>,
        payload: &str,
        key: Option<&str>,
        timeout: Duration,
    ) -> Result<Reply> {
        let started = Instant::now();
        let deadline = crate::util::deadline_in(timeout);
        let result = self.request_inner(payload, key, deadline, timeout);
        let outcome = Outcome::of(&result);
        let fallback = matches!(&result, Ok(r) if r.served_by == ServedBy::Oneshot);
        self.metrics.record(outcome, fallback, started.elapsed());
        result
    }

    fn request_inner(
        self: &Arc<Self>,
        payload: &str,
        key: Option<&str>,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Reply> {
        self.check_open()?;
        if self.disabled {
            return self.oneshot(payload, timeout, "the pool is disabled");
        }
        let taken = match self.take(Use::Request, key, deadline, timeout) {
            Ok(Some(t)) => t,
            Ok(None) => return self.oneshot(payload, timeout, "no instance can serve"),
            Err(e @ (Error::Spawn(_) | Error::LimitReached { .. }))
                if self.spec.oneshot.is_some() =>
            {
                return self.oneshot_after(payload, deadline, timeout, e)
            }
            Err(e) => return Err(e),
        };
        let (taken, moved) = taken;
        let index = taken.hold.index;
        let result = self.exchange_counted(&taken.worker, payload, deadline, timeout);
        let pid = taken.worker.inst.process.pid();
        drop(taken);
        self.after_request(index, pid);
        match result {
            Ok(text) => Ok(Reply {
                text,
                instance: Some(index),
                served_by: ServedBy::Pool,
                moved,
            }),
            Err(e @ Error::InstanceDead(_))
                if self.spec.fallback && self.spec.oneshot.is_some() =>
            {
                self.oneshot_after(payload, deadline, timeout, e)
            }
            Err(e) => Err(e),
        }
    }

    fn oneshot_after(
        &self,
        payload: &str,
        deadline: Instant,
        timeout: Duration,
        why: Error,
    ) -> Result<Reply> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(why);
        }
        self.oneshot(payload, left.min(timeout), &why.to_string())
    }

    fn oneshot(&self, payload: &str, timeout: Duration, why: &str) -> Result<Reply> {
        let Some(o) = &self.spec.oneshot else {
            return Err(Error::unavailable(
                &self.spec.id,
                format!("{why}; no oneshot fallback"),
            ));
        };
        let text = oneshot::run(&self.spec, o, payload, timeout, &self.limiter)?;
        Ok(Reply {
            text,
            instance: None,
            served_by: ServedBy::Oneshot,
            moved: false,
        })
    }
}

/// Exclusive use of one instance for a multi-step conversation; returned when dropped.
/// A leased instance gets no routed work.
pub struct Lease {
    taken: Taken,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("index", &self.taken.hold.index)
            .finish()
    }
}

impl Lease {
    /// The leased instance's index.
    pub fn index(&self) -> usize {
        self.taken.hold.index
    }

    /// The leased instance's pid.
    pub fn pid(&self) -> i32 {
        self.taken.worker.inst.process.pid()
    }

    /// A framed request on the leased instance.
    pub fn request(&self, payload: &str, timeout: Duration) -> Result<String> {
        let p = &self.taken.hold.pool;
        p.check_open()?;
        p.exchange_counted(
            &self.taken.worker,
            payload,
            crate::util::deadline_in(timeout),
            timeout,
        )
    }

    /// Send a raw line to the leased instance.
    pub fn send(&self, line: &str) -> Result<()> {
        self.taken.hold.pool.check_open()?;
        self.taken.worker.inst.send(line.as_bytes())
    }

    /// Read a raw stdout line of the leased instance.
    pub fn read_line(&self, timeout: Duration) -> Result<String> {
        self.taken.hold.pool.check_open()?;
        self.taken.worker.inst.read_line(timeout).map(lossy)
    }
}

impl Pool {
    /// Send `payload` to an instance picked by the spec's `routing` and wait up to `timeout`
    /// (waiting for a free instance included) for its reply.
    pub fn request(&self, payload: &str, timeout: Duration) -> Result<Reply> {
        self.inner.request(payload, None, timeout)
    }

    /// Like [`Pool::request`], but `key` maps to the same instance while that instance
    /// lives; when it has died, the key moves and [`Reply::moved`] is set.
    pub fn request_sticky(&self, key: &str, payload: &str, timeout: Duration) -> Result<Reply> {
        self.inner.request(payload, Some(key), timeout)
    }

    /// Lease one idle instance for exclusive use, waiting up to `timeout` for one.
    pub fn lease(&self, timeout: Duration) -> Result<Lease> {
        let deadline = crate::util::deadline_in(timeout);
        match self.inner.take(Use::Lease, None, deadline, timeout)? {
            Some((taken, _)) => Ok(Lease { taken }),
            None => Err(Error::unavailable(
                &self.inner.spec.id,
                "no instance can serve a lease",
            )),
        }
    }

    /// Send a raw line to an instance picked by routing (round robin among ready,
    /// unleased instances); returns its index. Read the output with
    /// [`Pool::read_any`] or [`Pool::read_line`].
    pub fn send_routed(&self, line: &str) -> Result<usize> {
        let p = &self.inner;
        p.check_open()?;
        let i = {
            let mut st = p.route.lock();
            let n = p.slots.len();
            let found = (0..n)
                .map(|k| (st.next + k) % n)
                .find(|&i| !st.leased[i] && p.available(i).is_some());
            let Some(i) = found else {
                return Err(Error::unavailable(&p.spec.id, "no live, unleased instance"));
            };
            st.next = (i + 1) % n;
            i
        };
        self.send(i, line)?;
        Ok(i)
    }

    /// Run a batch: every payload as its own request, spread over the pool, results in
    /// input order, each its own success or error. `timeout` applies to each request.
    /// On a shut-down pool every result is [`Error::ShutDown`] (in every language: the
    /// C call `toolpool_pool_map_json` succeeds and each item says so).
    /// Runs as many requests at once as the pool can take (instances × `max_in_flight`,
    /// at most [`MAX_MAP_THREADS`]), each on a scoped thread.
    pub fn map<S: AsRef<str> + Sync>(
        &self,
        payloads: &[S],
        timeout: Duration,
    ) -> Vec<Result<Reply>> {
        let width = (self.len() * self.inner.spec.max_in_flight)
            .min(MAX_MAP_THREADS)
            .clamp(1, payloads.len().max(1));
        let next = AtomicUsize::new(0);
        let mut out: Vec<Option<Result<Reply>>> = (0..payloads.len()).map(|_| None).collect();
        let parts: Vec<Vec<(usize, Result<Reply>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..width)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Relaxed);
                            let Some(p) = payloads.get(k) else { break };
                            done.push((k, self.request(p.as_ref(), timeout)));
                        }
                        done
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("map worker panicked"))
                .collect()
        });
        for (k, r) in parts.into_iter().flatten() {
            out[k] = Some(r);
        }
        out.into_iter()
            .map(|r| r.expect("every payload ran"))
            .collect()
    }
}
