//! `ServicePermit`: a slot of a service's process limit, for a process this client's
//! machine starts. Like a lease it owns one connection for its whole life: the service
//! keeps the permit with that connection, so closing it (a drop, or this process dying)
//! gives the slot back at once.

use super::pool::ms;
use super::Link;
use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::limiter::ElsewhereSlot;
use crate::wire::{Op, Socket};
use parking_lot::Mutex;
use std::sync::Arc;

/// A permit held through a service (see the module docs).
pub(crate) struct ServicePermit {
    link: Arc<Link>,
    /// The permit's connection; `None` once a call broke it.
    sock: Mutex<Option<Socket>>,
    pid: Mutex<Option<i32>>,
}

impl ServicePermit {
    /// Take a slot of the service's limit, waiting as `Limiter::acquire` does.
    pub fn take(link: Arc<Link>, wait: &Wait) -> Result<ServicePermit> {
        let mut sock = link.take()?;
        let op = Op::Acquire {
            timeout_ms: ms(wait),
        };
        let (r, reusable) = link.call_on::<()>(&mut sock, op, &[], Some(wait));
        match r {
            Ok(_) => Ok(ServicePermit {
                link,
                sock: Mutex::new(Some(sock)),
                pid: Mutex::new(None),
            }),
            Err(e) => {
                if reusable {
                    link.put_back(sock);
                }
                Err(e)
            }
        }
    }

    /// One call on the permit's connection.
    fn call<T: serde::de::DeserializeOwned>(&self, op: Op) -> Result<T> {
        let mut guard = self.sock.lock();
        let Some(sock) = guard.as_mut() else {
            return Err(Error::Service(format!(
                "the permit lost its connection to {}",
                self.link.where_()
            )));
        };
        let (r, reusable) = self.link.call_on(sock, op, &[], None);
        if !reusable {
            *guard = None;
        }
        r.map(|(v, _)| v)
    }
}

impl ElsewhereSlot for ServicePermit {
    fn register_pid(&self, pid: i32) -> Result<()> {
        self.call::<()>(Op::RegisterPid { pid })?;
        *self.pid.lock() = Some(pid);
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        *self.pid.lock()
    }

    fn holds_slot(&self) -> bool {
        self.call::<bool>(Op::HoldsSlot).unwrap_or(false)
    }
}

impl Drop for ServicePermit {
    /// Release on the service and keep the connection for other calls; if that fails,
    /// closing the connection releases it.
    fn drop(&mut self) {
        let Some(mut sock) = self.sock.get_mut().take() else {
            return;
        };
        let wait = Wait::new(std::time::Duration::ZERO);
        let (r, reusable) = self
            .link
            .call_on::<()>(&mut sock, Op::ReleasePermit, &[], Some(&wait));
        if r.is_ok() && reusable {
            self.link.put_back(sock);
        }
    }
}
