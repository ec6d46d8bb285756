//! A lease: exclusive use of one instance for a multi-step conversation.

use crate::cancel::Wait;
use crate::error::Result;
use crate::hold::Hold;
use crate::router;
use crate::util::lossy;

/// Exclusive use of one instance for a multi-step conversation; returned when dropped.
/// A leased instance gets no routed work.
pub struct Lease {
    hold: Hold,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("index", &self.hold.claim.index)
            .finish()
    }
}

impl Lease {
    pub(crate) fn new(hold: Hold) -> Lease {
        Lease { hold }
    }

    /// The leased instance's index.
    pub fn index(&self) -> usize {
        self.hold.claim.index
    }

    /// The leased instance's pid (negative for a dry-run instance, which has no process).
    pub fn pid(&self) -> i32 {
        self.hold.incarnation.pid()
    }

    /// A framed request on the leased instance, waiting up to the timeout (a `Duration`,
    /// or a [`Wait`] with a cancel token).
    ///
    /// It counts as a routed request does: in the pool's and the instance's request
    /// metrics (and their Prometheus families) and toward `max_requests`.
    pub fn request(&self, payload: &str, wait: impl Into<Wait>) -> Result<String> {
        router::request_held(&self.hold, payload, &wait.into()).map(lossy)
    }

    /// Send a JSON-RPC notification (`{"method": ..., "params": ...}`, no id) to the leased
    /// instance (`jsonrpc` and `lsp` only), as [`Pool::notify`](crate::Pool::notify).
    pub fn notify(&self, payload: &str) -> Result<()> {
        self.hold.claim.pool.check_open()?;
        self.hold.incarnation.notify(payload)
    }

    /// Send a raw line to the leased instance.
    pub fn send(&self, line: &str) -> Result<()> {
        self.hold.claim.pool.check_open()?;
        self.hold.incarnation.send(line.as_bytes())
    }

    /// Read a raw stdout line of the leased instance, waiting up to the timeout (a
    /// `Duration`, or a [`Wait`] with a cancel token).
    pub fn read_line(&self, wait: impl Into<Wait>) -> Result<String> {
        let wait = wait.into();
        self.hold.claim.pool.check_open()?;
        self.hold
            .incarnation
            .read_line(wait.timeout(), wait.token())
            .map(lossy)
    }
}
