//! A lease: exclusive use of one instance for a multi-step conversation.

use crate::error::Result;
use crate::router::{self, Hold};
use crate::util::{deadline_in, lossy};
use std::time::Duration;

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

    /// The leased instance's pid.
    pub fn pid(&self) -> i32 {
        self.hold.incarnation.pid()
    }

    /// A framed request on the leased instance.
    pub fn request(&self, payload: &str, timeout: Duration) -> Result<String> {
        let p = &self.hold.claim.pool;
        p.check_open()?;
        let deadline = deadline_in(timeout);
        router::exchange_counted(p, &self.hold.incarnation, payload, deadline, timeout)
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

    /// Read a raw stdout line of the leased instance.
    pub fn read_line(&self, timeout: Duration) -> Result<String> {
        self.hold.claim.pool.check_open()?;
        self.hold.incarnation.read_line(timeout).map(lossy)
    }
}
