//! `Pinned`: one connection owned by one object of the service (a lease, a permit) for its
//! whole life. The service keeps the object with that connection, so closing it (a drop,
//! or this process dying) gives the object back at once.

use super::Link;
use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::wire::{Op, Socket};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// A connection kept by one object (see the module docs).
pub(crate) struct Pinned {
    link: Arc<Link>,
    /// `None` once a call broke it.
    sock: Mutex<Option<Socket>>,
    /// What the object is, for messages ("the lease of instance 2").
    what: String,
    /// The call that gives the object back (sent when dropped).
    release: fn() -> Op,
}

impl Pinned {
    /// Take a connection and make the call `op` that creates the object on it; its answer
    /// is the object's first value. On failure the connection goes back to the link.
    pub fn open<T: DeserializeOwned>(
        link: Arc<Link>,
        op: Op,
        wait: &Wait,
        release: fn() -> Op,
    ) -> Result<(Pinned, T)> {
        let ((v, _), sock) = link.call_keeping::<T>(op, &[], Some(wait))?;
        let pinned = Pinned {
            link,
            sock: Mutex::new(Some(sock)),
            what: String::new(),
            release,
        };
        Ok((pinned, v))
    }

    /// Name the object, for messages.
    pub fn named(mut self, what: String) -> Pinned {
        self.what = what;
        self
    }

    /// One call on the connection.
    pub fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> Result<(T, Vec<u8>)> {
        let mut guard = self.sock.lock();
        let Some(sock) = guard.as_mut() else {
            return Err(Error::Service(format!(
                "{} lost its connection to {}",
                self.what,
                self.link.where_()
            )));
        };
        let (r, reusable) = self.link.call_on(sock, op, data, wait);
        if !reusable {
            *guard = None;
        }
        r
    }
}

impl Drop for Pinned {
    /// Give the object back and keep the connection for other calls; if that fails,
    /// closing the connection gives it back.
    fn drop(&mut self) {
        let Some(mut sock) = self.sock.get_mut().take() else {
            return;
        };
        let wait = Wait::new(std::time::Duration::ZERO);
        let (r, reusable) = self
            .link
            .call_on::<()>(&mut sock, (self.release)(), &[], Some(&wait));
        if r.is_ok() && reusable {
            self.link.put_back(sock);
        }
    }
}
