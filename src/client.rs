//! The client of `toolpool serve`: [`Client`] connects to a service's Unix socket and hands
//! out its pools as [`Pool`]s, the same type a local pool is, and slots of its process
//! limit as [`Permit`]s. Above the pool façade; the connections themselves are the
//! link layer's (`link`): a client keeps a small stack of idle ones, a call takes one (or
//! opens one), and a service that restarted costs the calls in flight an
//! [`Error::Service`] and nothing more: the next call connects again.
//!
//! [`Error::Service`]: crate::Error::Service

use crate::cancel::Wait;
use crate::error::Result;
use crate::limiter::{KillReport, LimiterStatus, Permit};
use crate::link::{self, Link, ServicePermit, ServicePool};
use crate::pool::Pool;
use crate::wire::Op;
use parking_lot::Mutex;
use std::path::Path;
use std::sync::{Arc, Weak};

pub use crate::link::{ANSWER_SLACK, MAX_IDLE_CONNECTIONS, SERVER_ENV};

/// A connection to a `toolpool serve` service (see the module docs). `Clone + Send +
/// Sync`: clones share the connections.
#[derive(Clone)]
pub struct Client {
    link: Arc<Link>,
}

/// The link of the client connected last (see [`Client::current`]).
static CURRENT: Mutex<Weak<Link>> = Mutex::new(Weak::new());

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("path", &self.link.path)
            .finish()
    }
}

impl Client {
    /// Connect to the service listening on the Unix socket at `path` (one connection,
    /// hello included, so a missing or refusing service is an error here).
    ///
    /// Errors: [`Error::Service`](crate::Error::Service) when nothing listens there, the
    /// peer is not a toolpool service, speaks another protocol version, or refuses this
    /// user.
    ///
    /// The process-wide limit calls ([`crate::limit_status`], [`crate::set_limit`],
    /// [`crate::kill_all`]), slots ([`crate::acquire_slot`]) and runs go to the service of
    /// the client connected last, while it lives.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client> {
        let link = Link::connect(path.as_ref())?;
        *CURRENT.lock() = Arc::downgrade(&link);
        Ok(Client { link })
    }

    /// The service this process uses for its process-wide limit: the client connected
    /// last, while it lives; else the one `TOOLPOOL_SERVER` names; else `None` (the
    /// limit is this process's own).
    pub fn current() -> Result<Option<Client>> {
        if let Some(link) = CURRENT.lock().upgrade() {
            return Ok(Some(Client { link }));
        }
        Client::from_env()
    }

    /// The client `TOOLPOOL_SERVER` names (`unix:PATH`), or `None` when it is unset or
    /// empty. A value of another form is [`Error::Config`](crate::Error::Config).
    pub fn from_env() -> Result<Option<Client>> {
        match link::server_from_env()? {
            Some(path) => Client::connect(path).map(Some),
            None => Ok(None),
        }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.link.path
    }

    /// The service's pool of `tool`, as a [`Pool`]: every pool method works on it.
    /// [`Error::UnknownTool`](crate::Error::UnknownTool) (listing the service's tools) when
    /// the service has none.
    pub fn pool(&self, tool: &str) -> Result<Pool> {
        ServicePool::open(Arc::clone(&self.link), tool).map(Pool::from_service)
    }

    /// The tool ids the service serves, in order.
    pub fn tools(&self) -> Result<Vec<String>> {
        self.link.call(Op::Tools, &[], None).map(|(t, _)| t)
    }

    /// The service's process limit and the processes counted against it.
    pub fn limit_status(&self) -> Result<LimiterStatus> {
        self.link.call(Op::LimitStatus, &[], None).map(|(s, _)| s)
    }

    /// Set the service's process limit (0: none); returns the old one.
    pub fn set_limit(&self, max: usize) -> Result<usize> {
        self.link
            .call(Op::SetLimit { max }, &[], None)
            .map(|(s, _)| s)
    }

    /// A slot of the service's process limit for a process this machine starts (register
    /// its pid on the permit), waiting as [`Limiter::acquire`](crate::Limiter::acquire)
    /// does: the process counts in the service's status and dies with its `kill_all`.
    /// The slot comes back when the permit is dropped or its process exits, or at once
    /// if this process dies.
    pub fn acquire(&self, wait: impl Into<Wait>) -> Result<Permit> {
        let wait = wait.into();
        let p = ServicePermit::take(Arc::clone(&self.link), &wait)?;
        Ok(Permit::elsewhere(Box::new(p)))
    }

    /// Kill every process counted against the service's limit, as
    /// [`Limiter::kill_all`](crate::Limiter::kill_all) does locally.
    pub fn kill_all(&self) -> Result<KillReport> {
        self.link.call(Op::KillAll, &[], None).map(|(s, _)| s)
    }
}
