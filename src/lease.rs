//! A lease: exclusive use of one instance for a multi-step conversation, on a local pool
//! (a hold of the router) or on a service's pool (a call connection of its own).

use crate::cancel::Wait;
use crate::error::Result;
use crate::hold::Hold;
use crate::link::ServiceLease;
use crate::router;
use crate::util::lossy;

/// Exclusive use of one instance for a multi-step conversation; returned when dropped.
/// A leased instance gets no routed work.
pub struct Lease {
    inner: Inner,
}

enum Inner {
    Local(Hold),
    Service(ServiceLease),
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("index", &self.index())
            .finish()
    }
}

impl Lease {
    pub(crate) fn local(hold: Hold) -> Lease {
        Lease {
            inner: Inner::Local(hold),
        }
    }

    pub(crate) fn service(lease: ServiceLease) -> Lease {
        Lease {
            inner: Inner::Service(lease),
        }
    }

    /// The leased instance's index.
    pub fn index(&self) -> usize {
        match &self.inner {
            Inner::Local(h) => h.claim.index,
            Inner::Service(l) => l.index,
        }
    }

    /// The leased instance's pid (negative for a dry-run instance, which has no process).
    pub fn pid(&self) -> i32 {
        match &self.inner {
            Inner::Local(h) => h.incarnation.pid(),
            Inner::Service(l) => l.pid,
        }
    }

    /// A framed request on the leased instance, waiting up to the timeout (a `Duration`,
    /// or a [`Wait`] with a cancel token).
    ///
    /// It counts as a routed request does: in the pool's and the instance's request
    /// metrics (and their Prometheus families) and toward `max_requests`.
    pub fn request(&self, payload: &str, wait: impl Into<Wait>) -> Result<String> {
        let wait = wait.into();
        match &self.inner {
            Inner::Local(h) => router::request_held(h, payload, &wait),
            Inner::Service(l) => l.request(payload, &wait),
        }
        .map(lossy)
    }

    /// Send a JSON-RPC notification (`{"method": ..., "params": ...}`, no id) to the leased
    /// instance (`jsonrpc` and `lsp` only), as [`Pool::notify`](crate::Pool::notify).
    pub fn notify(&self, payload: &str) -> Result<()> {
        match &self.inner {
            Inner::Local(h) => {
                h.claim.pool.check_open()?;
                h.incarnation.notify(payload)
            }
            Inner::Service(l) => l.notify(payload),
        }
    }

    /// Send a raw line to the leased instance.
    pub fn send(&self, line: &str) -> Result<()> {
        match &self.inner {
            Inner::Local(h) => {
                h.claim.pool.check_open()?;
                h.incarnation.send(line.as_bytes())
            }
            Inner::Service(l) => l.send(line),
        }
    }

    /// Read a raw stdout line of the leased instance, waiting up to the timeout (a
    /// `Duration`, or a [`Wait`] with a cancel token).
    pub fn read_line(&self, wait: impl Into<Wait>) -> Result<String> {
        let wait = wait.into();
        match &self.inner {
            Inner::Local(h) => {
                h.claim.pool.check_open()?;
                h.incarnation.read_line(wait.timeout(), wait.token())
            }
            Inner::Service(l) => l.read_line(&wait),
        }
        .map(lossy)
    }
}
