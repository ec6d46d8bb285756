//! Requests over a pool: picking an instance (round robin, least busy, sticky), waiting
//! for a free one within bounds (the admission module), the request on the instance taken
//! (`Hold::serve`, the one request path), the one-shot fallback, and the pool's
//! request metrics.
//!
//! Every request ends in exactly one outcome: a reply, a tool error, a timeout, an
//! instance death, shut-down, or cancelled (its [`crate::CancelToken`]; a cancelled
//! request ends as a timed-out one does). A late reply never reaches the next caller: after a
//! timeout in `lines` or `marker` framing the incarnation is recycled; in `jsonrpc` a reply
//! to a forgotten id is dropped and counted.

use crate::admission::Counts;
use crate::cancel::{cancelled, CancelToken, Registration, Until, Wait};
use crate::error::{Error, ExitInfo, Result};
use crate::hold::{Claim, Hold, Use};
use crate::incarnation::{Incarnation, State};
use crate::lifecycle::PoolCore;
use crate::metrics::Outcome;
use crate::oneshot;
use crate::rpc;
use crate::sizing;
use crate::spec::{Cause, Protocol, RestartPolicy, Retry, Routing};
use crate::util::lossy;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::admission::MAX_STICKY_KEYS;
pub use crate::exchange::MAX_MARKER_REPLY_BYTES;

/// Most threads one `map` call uses (one per request it has in flight).
pub const MAX_MAP_THREADS: usize = 256;

/// Which path served a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// A pooled instance, at the first run.
    Pool,
    /// A pooled instance, at a later run (`retry`).
    Retry,
    /// A one-shot run of the tool (`fallback`, or a disabled pool).
    Oneshot,
}

impl ServedBy {
    /// The name, as JSON spells it: `"pool"`, `"retry"` or `"oneshot"`.
    pub fn name(self) -> &'static str {
        match self {
            ServedBy::Pool => "pool",
            ServedBy::Retry => "retry",
            ServedBy::Oneshot => "oneshot",
        }
    }

    /// [`ServedBy::name`] as a C string with static storage.
    pub fn c_name(self) -> &'static std::ffi::CStr {
        match self {
            ServedBy::Pool => c"pool",
            ServedBy::Retry => c"retry",
            ServedBy::Oneshot => c"oneshot",
        }
    }
}

/// A successful request. `T` is what the reply is read as: `String` (bytes that are not
/// UTF-8 replaced by U+FFFD) from [`crate::Pool::request`], the exact bytes (`Vec<u8>`)
/// from [`crate::Pool::request_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply<T = String> {
    /// The reply: the line (`lines`), the lines joined by `\n` (`marker`), the `result`
    /// as JSON text (`jsonrpc`), or the one-shot run's stdout without its final newline.
    pub text: T,
    /// The instance that answered (None for a one-shot run).
    pub instance: Option<usize>,
    /// Which path served it.
    pub served_by: ServedBy,
    /// For sticky requests: the key's instance died, so the key moved to this one.
    pub moved: bool,
}

/// One result of a batch ([`crate::Pool::map`]) in the shape the C, Go and Python APIs return as
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

impl Reply<Vec<u8>> {
    /// The same reply as text (bytes that are not UTF-8 replaced by U+FFFD).
    pub(crate) fn lossy(self) -> Reply {
        Reply {
            text: lossy(self.text),
            instance: self.instance,
            served_by: self.served_by,
            moved: self.moved,
        }
    }
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

/// The incarnation of instance `i` when it can take a request now: started, usable,
/// not marked failed.
fn serving(p: &PoolCore, i: usize) -> Option<Arc<Incarnation>> {
    let inst = &p.instances[i];
    if inst.is_failed() {
        return None;
    }
    inst.current_if(Incarnation::usable)
}

/// Whether instance `i` can take a raw line now or once started: not failed, and either
/// usable or not running (a remote one whose host could not be reached waits for the
/// supervisor's backoff instead of being started by every caller).
fn live(p: &PoolCore, i: usize) -> bool {
    let inst = &p.instances[i];
    if inst.is_failed() {
        return false;
    }
    let host_down = p.remote.is_some() && inst.supervision().will_start();
    inst.with_current(|c| match c {
        Some(c) => c.usable(),
        None => !host_down,
    })
}

/// False when no instance will ever take work without a manual `restart`.
/// Saturation records: at most one per this interval in the process (the ones left out
/// are counted in the next).
pub const SATURATION_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A warning that a request was refused with `Saturated`, rate-limited.
fn log_saturation(tool: &str, waiting: usize, max_waiting: usize) {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    static NEXT_MS: AtomicU64 = AtomicU64::new(0);
    static LEFT_OUT: AtomicU64 = AtomicU64::new(0);
    if !log::log_enabled!(target: "toolpool", log::Level::Warn) {
        return;
    }
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64;
    let next = NEXT_MS.load(Relaxed);
    let interval = SATURATION_LOG_INTERVAL.as_millis() as u64;
    if now < next
        || NEXT_MS
            .compare_exchange(next, now + interval, Relaxed, Relaxed)
            .is_err()
    {
        LEFT_OUT.fetch_add(1, Relaxed);
        return;
    }
    log::warn!(
        target: "toolpool",
        "saturated tool={tool} waiting={waiting} max_waiting={max_waiting} refused_unlogged={}",
        LEFT_OUT.swap(0, Relaxed)
    );
}

/// Why no instance will ever serve without a manual `restart`, or `None` while one may:
/// every instance is marked failed (the restart cap), or ended and left down by the
/// restart policy, or not running with its host unreachable. A started, starting or
/// stopped-on-purpose instance may serve, and so may one whose restart is pending or whose
/// exit the supervisor has not judged yet.
fn none_can_serve(p: &PoolCore) -> Option<String> {
    let policy = p.spec.restart.policy;
    let mut reasons: Vec<String> = Vec::new();
    for (i, inst) in p.instances.iter().enumerate() {
        if let Some(why) = inst.failed() {
            reasons.push(format!("instance {i} failed: {why}"));
            continue;
        }
        if inst.supervision().will_start() {
            return None;
        }
        let ended = inst.with_current(|c| match c {
            None => None,
            Some(c) => match c.state() {
                State::Dead | State::Stopped => Some(c.exit()),
                _ => None,
            },
        });
        // Not started, or stopped on purpose (lazy, idle): it starts on demand.
        let exit = ended?;
        let left_down = match (policy, exit) {
            (RestartPolicy::Never, Some(_)) => true,
            (RestartPolicy::OnFailure, Some(ExitInfo::Code(0))) => true,
            // Not reaped yet, or the policy restarts it.
            _ => false,
        };
        if !left_down {
            return None;
        }
        let exit = exit.map_or("ended".into(), |e| match e {
            ExitInfo::Code(c) => format!("exited with status {c}"),
            ExitInfo::Signal(s) => format!("was killed by signal {s}"),
        });
        let policy = match policy {
            RestartPolicy::Never => "never",
            RestartPolicy::OnFailure => "on_failure",
            RestartPolicy::Always => "always",
        };
        reasons.push(format!(
            "instance {i} {exit}; restart.policy {policy} does not restart it"
        ));
    }
    Some(summarize(reasons))
}

/// The reasons of several instances, the same ones said once with their count.
fn summarize(reasons: Vec<String>) -> String {
    let mut shown: Vec<(String, usize)> = Vec::new();
    for r in reasons {
        // "instance N <rest>": group by the rest.
        let rest = r.splitn(3, ' ').nth(2).unwrap_or(&r).to_string();
        match shown.iter_mut().find(|(x, _)| *x == rest) {
            Some((_, n)) => *n += 1,
            None => shown.push((rest, 1)),
        }
    }
    shown
        .into_iter()
        .map(|(rest, n)| match n {
            1 => format!("its instance {rest}"),
            n => format!("{n} instances {rest}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

thread_local! {
    /// The pool (the address of its core) and the instance this thread took last: least
    /// busy routing gives that instance again when it is among the least busy, so a
    /// caller and its tool process keep to one CPU and warm caches (no cross-CPU wake-up
    /// per request). A hint only: a stale one (a pool dropped, its address reused) just
    /// names an instance that is checked like any other.
    static LAST_TAKEN: Cell<(usize, usize)> = const { Cell::new((0, usize::MAX)) };
}

/// The instance to take and its incarnation, if one is free now.
fn pick(
    p: &PoolCore,
    c: &mut Counts,
    how: Use,
    key: Option<&str>,
) -> Option<(usize, Arc<Incarnation>)> {
    let n = p.instances.len();
    let cap = match how {
        Use::Request => p.spec.max_in_flight,
        Use::Lease => 1,
    };
    let free = |c: &Counts, i: usize| !c.leased(i) && c.in_flight(i) < cap;
    if let Some(key) = key {
        if let Some((i, pid)) = c.sticky(key) {
            // (`i < n`: a shrink may have removed the key's instance; the key moves.)
            let same =
                (i < n).then(|| p.instances[i].current_if(|inc| inc.pid() == pid && inc.usable()));
            if let Some(found) = same.flatten() {
                return free(c, i).then_some((i, found));
            }
            c.forget(key);
        }
    }
    // Started instances only (`serving`): a stopped one is started by sizing, in the
    // background.
    let least_busy = p.spec.routing == Routing::LeastBusy;
    let (i, inc) = if least_busy && key.is_none() {
        // O(log N): the counts keep the instances ordered by load.
        let counts: &Counts = c;
        let (pool, last) = LAST_TAKEN.get();
        let prefer = (pool == std::ptr::from_ref(p) as usize).then_some(last);
        counts.least_busy(counts.next, cap, prefer, |i| {
            // (`i < n`: instances a shrink removed stay in the counts.)
            (i < n && !counts.leased(i))
                .then(|| serving(p, i))
                .flatten()
        })
    } else {
        // Round robin: the first free one from the cursor on (O(1) unless instances
        // ahead of it are busy).
        (0..n).map(|k| (c.next + k) % n).find_map(|i| {
            free(c, i)
                .then(|| serving(p, i))
                .flatten()
                .map(|inc| (i, inc))
        })
    }?;
    if least_busy {
        LAST_TAKEN.set((std::ptr::from_ref(p) as usize, i));
    }
    c.next = (i + 1) % n;
    Some((i, inc))
}

/// Have `token`'s cancel wake the admission waiters of `p` (held weakly) while the
/// registration lives.
fn wake_on_cancel<'t>(p: &Arc<PoolCore>, token: &'t CancelToken) -> Registration<'t> {
    let weak = Arc::downgrade(p);
    token.on_cancel(Arc::new(move || {
        if let Some(p) = weak.upgrade() {
            p.admission.wake();
        }
    }))
}

/// Take an instance for a request or a lease, waiting until `deadline` within the
/// `limits.max_waiting` bound ([`Error::Unavailable`], with the reason, when no instance
/// will ever serve); the flag
/// says a sticky key moved.
pub(crate) fn take(
    p: &Arc<PoolCore>,
    how: Use,
    key: Option<&str>,
    until: Until<'_>,
) -> Result<(Hold, bool)> {
    let Until {
        deadline,
        timeout,
        cancel,
    } = until;
    let what = || match how {
        Use::Request => format!("a free instance of '{}'", p.spec.id),
        Use::Lease => format!("an instance of '{}' to lease", p.spec.id),
    };
    let mut waited = false;
    // Set once a sticky key's instance is found dead and the key is dropped.
    let mut moved = false;
    // With a token: its cancel wakes this waiter (registered before the first look).
    let _registered = cancel.map(|t| wake_on_cancel(p, t));
    // This caller's background start of another instance, if it needs one (sizing).
    let mut grow = sizing::Grow::default();
    let mut c = p.admission.lock();
    let (index, incarnation) = loop {
        p.check_open()?;
        if cancelled(cancel) {
            return Err(Error::Cancelled(what()));
        }
        let had_key = key.is_some_and(|k| c.has_key(k));
        let picked = pick(p, &mut c, how, key);
        moved |= had_key && !key.is_some_and(|k| c.has_key(k));
        if let Some(picked) = picked {
            break picked;
        }
        if let Some(why) = none_can_serve(p) {
            return Err(Error::unavailable(&p.spec.id, why));
        }
        let max_waiting = p.spec.limits.max_waiting;
        if c.waiting >= max_waiting {
            let (tool, waiting) = (p.spec.id.clone(), c.waiting);
            drop(c);
            log_saturation(&tool, waiting, max_waiting);
            return Err(Error::Saturated {
                tool,
                waiting,
                max_waiting,
            });
        }
        // Every started instance is busy: sizing may start another (never past count).
        sizing::before_wait(p, &mut grow)?;
        if !waited {
            waited = true;
            c.waited_total += 1;
        }
        c.waiting += 1;
        let timed_out = p.admission.wait_until(&mut c, deadline);
        c.waiting -= 1;
        if timed_out {
            // No pick now: the deadline has passed, and an exchange begun now would only
            // time out (and, in `lines` framing, recycle a healthy instance).
            p.check_open()?;
            return Err(Error::timeout(what(), timeout));
        }
    };
    match how {
        Use::Request => c.take(index),
        Use::Lease => c.set_leased(index, true),
    }
    drop(c);
    // From here the instance is ours; the claim gives it back on every path.
    let claim = Claim {
        pool: Arc::clone(p),
        index,
        how,
    };
    if let Some(k) = key {
        p.admission.lock().remember(k, index, incarnation.pid());
    }
    Ok((Hold { claim, incarnation }, moved))
}

/// Run one request with routing, waiting, retries, fallback and metrics. `retry` is the
/// caller's override of the spec's `retry` (`Some` with `max` 0: no retry).
pub(crate) fn request(
    p: &Arc<PoolCore>,
    payload: &str,
    key: Option<&str>,
    wait: &Wait,
    retry: Option<&Retry>,
) -> Result<Reply<Vec<u8>>> {
    let started = Instant::now();
    let result = route(p, payload, key, wait.until_from(started), retry);
    let fallback = matches!(&result, Ok(r) if r.served_by == ServedBy::Oneshot);
    p.metrics
        .record(Outcome::of(&result), fallback, started.elapsed());
    result
}

/// One request on a held instance (a lease), counted in the pool's metrics as a routed
/// request is (its latency is the exchange: a lease waits for no instance).
pub(crate) fn request_held(hold: &Hold, payload: &str, wait: &Wait) -> Result<Vec<u8>> {
    let p = &hold.claim.pool;
    let started = Instant::now();
    let result = p
        .check_open()
        .and_then(|()| hold.serve(payload, wait.until_from(started)));
    p.metrics
        .record(Outcome::of(&result), false, started.elapsed());
    result
}

/// The cause `fallback` and `retry` name a failure by; `None` for the failures that
/// neither may act on (cancelled, shut down, a bad argument, a full stdin queue).
fn cause(e: &Error) -> Option<Cause> {
    Some(match e {
        Error::InstanceDead(_) => Cause::Dead,
        Error::Timeout { .. } => Cause::Timeout,
        Error::Protocol(_) => Cause::InvalidReply,
        Error::Unavailable { .. }
        | Error::LimitReached { .. }
        | Error::Failed { .. }
        | Error::Saturated { .. }
        | Error::Service(_) => Cause::Unavailable,
        Error::Spawn(_) => Cause::SpawnFailed,
        Error::Tool { .. } => Cause::ToolError,
        _ => return None,
    })
}

fn route(
    p: &Arc<PoolCore>,
    payload: &str,
    key: Option<&str>,
    until: Until<'_>,
    retry: Option<&Retry>,
) -> Result<Reply<Vec<u8>>> {
    p.check_open()?;
    if cancelled(until.cancel) {
        return Err(Error::Cancelled(format!("a request to '{}'", p.spec.id)));
    }
    if p.disabled {
        return oneshot(p, payload, until.timeout, "the pool is disabled");
    }
    let fallback = &p.spec.fallback;
    let may_fall_back = fallback.any() && p.spec.oneshot.is_some() && p.spec.dry_run.is_none();
    // With `timeout` among the fallback's causes, the pooled attempts get `attempt_ms` of
    // the caller's time (default half), so the one-shot run has the rest.
    let pooled = match may_fall_back && fallback.on(Cause::Timeout) {
        true => {
            let part = fallback
                .attempt_ms
                .map_or(until.timeout / 2, Duration::from_millis)
                .min(until.timeout);
            Until {
                deadline: until.deadline.min(Instant::now() + part),
                timeout: part,
                cancel: until.cancel,
            }
        }
        false => until,
    };
    let retry = retry.or(p.spec.retry.as_ref());
    let mut runs = 0;
    loop {
        let e = match attempt(p, payload, key, pooled) {
            Ok(mut reply) => {
                if runs > 0 {
                    reply.served_by = ServedBy::Retry;
                }
                return Ok(reply);
            }
            Err(e) => e,
        };
        let Some(why) = cause(&e) else {
            return Err(e);
        };
        let again = retry.is_some_and(|r| r.on(why) && runs < r.max);
        if again && Instant::now() < pooled.deadline && !cancelled(until.cancel) {
            runs += 1;
            p.metrics.count_retry(why);
            log::debug!(target: "toolpool", "retry tool={} cause={} run={runs}", p.spec.id, why.name());
            continue;
        }
        if may_fall_back && fallback.on(why) {
            let left = until.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || cancelled(until.cancel) {
                return Err(e);
            }
            p.metrics.count_fallback(why);
            return oneshot(p, payload, left.min(until.timeout), &e.to_string());
        }
        return Err(e);
    }
}

/// One pooled attempt: take an instance (waiting within `until`), serve the request on it.
fn attempt(
    p: &Arc<PoolCore>,
    payload: &str,
    key: Option<&str>,
    until: Until<'_>,
) -> Result<Reply<Vec<u8>>> {
    let (hold, moved) = take(p, Use::Request, key, until)?;
    let index = hold.claim.index;
    let text = hold.serve(payload, until)?;
    Ok(Reply {
        text,
        instance: Some(index),
        served_by: ServedBy::Pool,
        moved,
    })
}

/// One run of the spec's `oneshot` command for `payload` (`why`: what sent the request
/// there), shaped as a pooled reply of the same framing would be: for `jsonrpc` and `lsp`
/// the payload goes as a JSON-RPC request and the reply is its `result` (an error object
/// is a tool error); for `marker`, the lines before the marker.
fn oneshot(p: &PoolCore, payload: &str, timeout: Duration, why: &str) -> Result<Reply<Vec<u8>>> {
    if p.spec.dry_run.is_some() {
        return Err(Error::unavailable(
            &p.spec.id,
            format!("{why}; a dry-run pool runs no one-shot process"),
        ));
    }
    let Some(o) = &p.spec.oneshot else {
        return Err(Error::unavailable(
            &p.spec.id,
            format!("{why}; no oneshot fallback"),
        ));
    };
    let rpc = p.spec.protocol.is_rpc();
    let input = match rpc {
        true => lossy(rpc::encode_request(ONESHOT_ID, payload)?),
        false => payload.to_string(),
    };
    let out = oneshot::run(&p.spec, o, &input, timeout, &p.limiter)?;
    let text = match &p.spec.protocol {
        Protocol::Jsonrpc | Protocol::Lsp => oneshot_result(&p.spec.id, &out)?,
        Protocol::Marker(m) => {
            let marker = m.marker.as_bytes();
            let end = out
                .split(|&b| b == b'\n')
                .scan(0usize, |at, line| {
                    let start = *at;
                    *at += line.len() + 1;
                    Some((start, line))
                })
                .find(|(_, line)| *line == marker)
                .map_or(out.len(), |(start, _)| start);
            out[..end]
                .strip_suffix(b"\n")
                .unwrap_or(&out[..end])
                .to_vec()
        }
        _ => out,
    };
    Ok(Reply {
        text,
        instance: None,
        served_by: ServedBy::Oneshot,
        moved: false,
    })
}

/// The id of the one request a one-shot run of a JSON-RPC tool is sent.
const ONESHOT_ID: u64 = 1;

/// The `result` of the JSON-RPC reply to [`ONESHOT_ID`] among the lines of a one-shot
/// run's stdout (an error object is [`Error::Tool`]); none is [`Error::Protocol`].
fn oneshot_result(tool: &str, out: &[u8]) -> Result<Vec<u8>> {
    for line in out.split(|&b| b == b'\n') {
        if let rpc::Parsed::Reply { id, outcome } = rpc::parse_line(line) {
            if id == ONESHOT_ID {
                return outcome.map(String::into_bytes).map_err(Error::from);
            }
        }
    }
    Err(Error::Protocol(format!(
        "the one-shot run of '{tool}' wrote no JSON-RPC reply to its request"
    )))
}

/// The instance for a routed raw line: the next ready, unleased one in turn.
pub(crate) fn pick_for_send(p: &PoolCore) -> Result<usize> {
    p.check_open()?;
    let mut c = p.admission.lock();
    let n = p.instances.len();
    let found = (0..n)
        .map(|k| (c.next + k) % n)
        .find(|&i| !c.leased(i) && live(p, i));
    let Some(i) = found else {
        return Err(Error::unavailable(&p.spec.id, "no live, unleased instance"));
    };
    c.next = (i + 1) % n;
    Ok(i)
}
