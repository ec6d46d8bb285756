//! `ServiceLease`: a lease on an instance of a service's pool. It owns one connection for
//! its whole life: the service keeps the lease with that connection, so closing it (a
//! drop, or this process dying) frees the instance at once.

use super::pool::ms;
use super::Link;
use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::wire::{Leased, Op, Socket};
use parking_lot::Mutex;
use std::sync::Arc;

/// A lease held through a service (see the module docs).
pub(crate) struct ServiceLease {
    link: Arc<Link>,
    /// The lease's connection; `None` once a call broke it.
    sock: Mutex<Option<Socket>>,
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
        let ((l, _), sock) = link.call_keeping::<Leased>(op, &[], Some(wait))?;
        Ok(ServiceLease {
            link,
            sock: Mutex::new(Some(sock)),
            index: l.index,
            pid: l.pid,
        })
    }

    /// One call on the lease's connection.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> Result<(T, Vec<u8>)> {
        let mut guard = self.sock.lock();
        let Some(sock) = guard.as_mut() else {
            return Err(Error::Service(format!(
                "the lease of instance {} lost its connection to {}",
                self.index,
                self.link.where_()
            )));
        };
        let (r, reusable) = self.link.call_on(sock, op, data, wait);
        if !reusable {
            *guard = None;
        }
        r
    }

    pub fn request(&self, payload: &str, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::LeaseRequest {
            timeout_ms: ms(wait),
        };
        self.call::<()>(op, payload.as_bytes(), Some(wait))
            .map(|(_, d)| d)
    }

    pub fn notify(&self, payload: &str) -> Result<()> {
        self.call::<()>(Op::LeaseNotify, payload.as_bytes(), None)
            .map(drop)
    }

    pub fn send(&self, line: &str) -> Result<()> {
        self.call::<()>(Op::LeaseSend, line.as_bytes(), None)
            .map(drop)
    }

    pub fn read_line(&self, wait: &Wait) -> Result<Vec<u8>> {
        let op = Op::LeaseReadLine {
            timeout_ms: ms(wait),
        };
        self.call::<()>(op, &[], Some(wait)).map(|(_, d)| d)
    }
}

impl Drop for ServiceLease {
    /// Release on the service and keep the connection for other calls; if that fails,
    /// closing the connection releases it.
    fn drop(&mut self) {
        let Some(mut sock) = self.sock.get_mut().take() else {
            return;
        };
        let wait = Wait::new(std::time::Duration::ZERO);
        let (r, reusable) = self
            .link
            .call_on::<()>(&mut sock, Op::Release, &[], Some(&wait));
        if r.is_ok() && reusable {
            self.link.put_back(sock);
        }
    }
}
