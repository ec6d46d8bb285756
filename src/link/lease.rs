//! `ServiceLease`: a lease on an instance of a service's pool, on a connection of its own
//! (`pinned`): a client that dies holding it frees the instance at once.

use super::pinned::Pinned;
use super::pool::ms;
use super::Link;
use crate::cancel::Wait;
use crate::error::Result;
use crate::wire::{Leased, Op};
use std::sync::Arc;

/// A lease held through a service (see the module docs).
pub(crate) struct ServiceLease {
    conn: Pinned,
    pub index: usize,
    pub pid: i32,
}

impl ServiceLease {
    /// Lease an instance of `tool`, waiting as `Pool::lease` does.
    pub fn take(link: Arc<Link>, tool: &str, wait: &Wait) -> Result<ServiceLease> {
        let op = Op::Lease {
            tool: tool.into(),
            timeout_ms: ms(wait),
        };
        let (conn, l): (_, Leased) = Pinned::open(link, op, wait, || Op::Release)?;
        Ok(ServiceLease {
            conn: conn.named(format!("the lease of instance {}", l.index)),
            index: l.index,
            pid: l.pid,
        })
    }

    pub fn request(&self, payload: &str, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::LeaseRequest {
            timeout_ms: ms(wait),
        };
        let (_, reply): ((), _) = self.conn.call(op, payload.as_bytes(), Some(wait))?;
        Ok(reply)
    }

    pub fn notify(&self, payload: &str) -> Result<()> {
        self.conn
            .call::<()>(Op::LeaseNotify, payload.as_bytes(), None)
            .map(drop)
    }

    pub fn send(&self, line: &str) -> Result<()> {
        self.conn
            .call::<()>(Op::LeaseSend, line.as_bytes(), None)
            .map(drop)
    }

    pub fn read_line(&self, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::LeaseReadLine {
            timeout_ms: ms(wait),
        };
        let (_, line): ((), _) = self.conn.call(op, &[], Some(wait))?;
        Ok(line)
    }
}
