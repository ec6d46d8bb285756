//! `ServicePermit`: a slot of a service's process limit, for a process this client's
//! machine starts, on a connection of its own (`pinned`): a client that dies holding it
//! gives the slot back at once.

use super::pinned::Pinned;
use super::pool::ms;
use super::Link;
use crate::cancel::Wait;
use crate::error::Result;
use crate::limiter::ElsewhereSlot;
use crate::wire::Op;
use parking_lot::Mutex;
use std::sync::Arc;

/// A permit held through a service (see the module docs).
pub(crate) struct ServicePermit {
    conn: Pinned,
    pid: Mutex<Option<i32>>,
}

impl ServicePermit {
    /// Take a slot of the service's limit, waiting as `Limiter::acquire` does.
    pub fn take(link: Arc<Link>, wait: &Wait) -> Result<ServicePermit> {
        let op = Op::Acquire {
            timeout_ms: ms(wait),
        };
        let (conn, ()) = Pinned::open(link, op, wait, || Op::ReleasePermit)?;
        Ok(ServicePermit {
            conn: conn.named("the permit".into()),
            pid: Mutex::new(None),
        })
    }
}

impl ElsewhereSlot for ServicePermit {
    fn register_pid(&self, pid: i32) -> Result<()> {
        self.conn.call::<()>(Op::RegisterPid { pid }, &[], None)?;
        *self.pid.lock() = Some(pid);
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        *self.pid.lock()
    }

    fn holds_slot(&self) -> bool {
        self.conn
            .call::<bool>(Op::HoldsSlot, &[], None)
            .is_ok_and(|(held, _)| held)
    }
}
