//! A held instance, and the one path every request on it takes.
//!
//! The router takes an instance for a routed request, a lease holds one for a
//! conversation: either way the caller has a [`Hold`] (a claim on the instance in
//! admission, given back when dropped, and the incarnation serving it), and each request
//! on it is [`Hold::serve`]: the cancel check, the framed exchange, the recycle of an
//! incarnation that may now hold a late reply, the instance's request metrics, and the
//! accounting after the request (`last_used`, `max_requests`). So a lease request counts
//! exactly as a routed one does. A health probe uses [`exchange_on`] (the same exchange
//! and recycle, not counted as a request).

use crate::cancel::{cancelled, Until};
use crate::error::{Error, Result};
use crate::exchange::{self as framing, leaves_late_reply};
use crate::incarnation::Incarnation;
use crate::lifecycle::PoolCore;
use crate::metrics::{Outcome, RecycleReason};
use crate::recycle::recycle;
use crate::util::jitter_fraction;
use std::sync::Arc;
use std::time::Instant;

/// What kind of use an instance is taken for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    Request,
    Lease,
}

/// A claim on an instance for one request or a lease; gives it back when dropped.
pub(crate) struct Claim {
    pub pool: Arc<PoolCore>,
    pub index: usize,
    pub how: Use,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let (i, how) = (self.index, self.how);
        self.pool.admission.update(|c| match how {
            Use::Lease => c.set_leased(i, false),
            Use::Request => c.give_back(i),
        });
    }
}

/// A claimed instance and the incarnation serving it.
pub(crate) struct Hold {
    pub claim: Claim,
    pub incarnation: Arc<Incarnation>,
}

impl Hold {
    /// One request on the held instance, until `until`: the exchange (or `Cancelled` when
    /// the token already fired, nothing sent), counted in the instance's request metrics
    /// and toward its `max_requests`.
    pub fn serve(&self, payload: &str, until: Until<'_>) -> Result<Vec<u8>> {
        let p = &self.claim.pool;
        let inc = &self.incarnation;
        let started = Instant::now();
        let result = exchange_on(p, inc, payload, until);
        let ended = Instant::now();
        let inst = &p.instances[inc.index()];
        inst.metrics
            .record(Outcome::of(&result), false, ended - started);
        after_request(p, inc, ended);
        result
    }
}

/// One framed exchange on `inc` (see [`crate::exchange`]); an incarnation that may now
/// hold a late reply is killed and replaced, whatever the restart policy. A token that
/// already fired sends nothing and leaves the incarnation as it is.
pub(crate) fn exchange_on(
    p: &PoolCore,
    inc: &Incarnation,
    payload: &str,
    until: Until<'_>,
) -> Result<Vec<u8>> {
    if cancelled(until.cancel) {
        return Err(Error::Cancelled(format!(
            "reply from instance {} of '{}'",
            inc.index(),
            p.spec.id
        )));
    }
    let result = framing::exchange(inc, &p.spec, payload, until);
    if leaves_late_reply(inc, &p.spec.protocol, &result) {
        let (tool, index, pid) = (&p.spec.id, inc.index(), inc.log_pid());
        match &result {
            Err(Error::Timeout { .. }) => {
                log::warn!(
                    target: "toolpool",
                    "timeout kill tool={tool} instance={index} pid={pid} timeout_ms={} (replaced, so its late reply cannot reach another caller)",
                    until.timeout.as_millis()
                );
                p.instances[index].recycles.count(RecycleReason::Timeout);
            }
            Err(Error::Cancelled(_)) => log::info!(
                target: "toolpool",
                "cancel kill tool={tool} instance={index} pid={pid} (replaced, so its late reply cannot reach another caller)"
            ),
            Err(e) => log::warn!(
                target: "toolpool",
                "protocol error kill tool={tool} instance={index} pid={pid} error={:?}",
                e.to_string()
            ),
            Ok(_) => {}
        }
        recycle(p, index, inc.pid());
    }
    result
}

/// After a request on `inc` that ended at `ended`: note the use, count it toward
/// `max_requests` (with jitter) and wake the supervisor when a recycle is due. A request
/// on an incarnation that has been replaced meanwhile counts for no one's recycle.
fn after_request(p: &PoolCore, inc: &Incarnation, ended: Instant) {
    let inst = &p.instances[inc.index()];
    let Some(max) = p.spec.max_requests else {
        inst.supervision().used(ended);
        return;
    };
    let same = inst.current_is(inc.pid(), |_| true);
    let due = {
        let mut s = inst.supervision();
        if same {
            s.count_request(ended, max, jitter_fraction())
        } else {
            s.used(ended);
            false
        }
    };
    if due {
        p.notify_supervisor();
    }
}
