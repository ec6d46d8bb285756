//! The link to a `toolpool serve` service: the connections of one client
//! ([`Link`]), and the service's objects as the layers above drive them: a pool
//! (`ServicePool`, behind the pool façade), a lease (`ServiceLease`, behind [`Lease`]),
//! a permit (`ServicePermit`, behind [`Permit`]). The public type is [`crate::Client`],
//! above the pool façade; this layer sits below it, above the wire protocol.
//!
//! [`Lease`]: crate::Lease
//! [`Permit`]: crate::Permit
//!
//! A link keeps a small stack of idle connections. A call takes one (or opens one and
//! says hello), sends its frame, waits for the answer, and puts the connection back; so
//! calls from many threads run at once, each on its own connection, and a service that
//! restarted costs the calls in flight an [`Error::Service`] and nothing more: the next
//! call connects again. A lease or a permit keeps its connection for its whole life
//! (`pinned`), so a client that dies holding one gives it back at once.

mod lease;
mod permit;
mod pinned;
mod pool;

pub(crate) use lease::ServiceLease;
pub(crate) use permit::ServicePermit;
pub(crate) use pool::ServicePool;

use crate::cancel::Wait;
use crate::error::{Error, Result};
use crate::wire::{self, Answer, Call, Hello, Op, RecvEnd, Socket};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable that points at a service: `unix:PATH`. When it is set,
/// opening a tool by registry id (Rust [`Pool::from_registry`](crate::Pool::from_registry),
/// C `toolpool_pool_from_registry`, Go `FromRegistry`, Python `Pool(id, registry=...)`,
/// `toolpool run --tool ID`) uses the service instead of starting a local pool.
pub const SERVER_ENV: &str = "TOOLPOOL_SERVER";

/// Idle connections a client keeps for later calls; more are closed when put back.
pub const MAX_IDLE_CONNECTIONS: usize = 16;

/// How much longer than a call's own timeout a client waits for the service's answer
/// before it gives up on the connection (the service enforces the timeout itself).
pub const ANSWER_SLACK: Duration = Duration::from_secs(5);

/// How long a cancelled call waits for the service to confirm before it drops the
/// connection (which cancels the call on the service too).
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The socket path in `TOOLPOOL_SERVER`, if set.
pub(crate) fn server_from_env() -> Result<Option<PathBuf>> {
    let Ok(v) = std::env::var(SERVER_ENV) else {
        return Ok(None);
    };
    if v.is_empty() {
        return Ok(None);
    }
    match v.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => Ok(Some(PathBuf::from(p))),
        _ => Err(Error::Config(format!(
            "{SERVER_ENV}={v:?}: expected unix:PATH, the socket of `toolpool serve`"
        ))),
    }
}

/// The connections of one client, shared by its pools and leases.
pub(crate) struct Link {
    pub path: PathBuf,
    idle: Mutex<Vec<Socket>>,
    next_id: AtomicU64,
}

impl Link {
    /// A link to the service at `path`, with one connection open (hello included, so a
    /// missing or refusing service is an error here).
    pub fn connect(path: &Path) -> Result<Arc<Link>> {
        let link = Arc::new(Link {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        });
        let sock = link.open()?;
        link.put_back(sock);
        Ok(link)
    }

    /// The socket path, as messages name it.
    pub fn where_(&self) -> String {
        format!("the toolpool service at {}", self.path.display())
    }

    /// A new connection, hello exchanged.
    pub fn open(&self) -> Result<Socket> {
        let stream = std::os::unix::net::UnixStream::connect(&self.path).map_err(|e| {
            Error::Service(format!(
                "cannot connect to {}: {e} (is `toolpool serve --socket {}` running?)",
                self.where_(),
                self.path.display()
            ))
        })?;
        let mut sock = Socket::new(OwnedFd::from(stream));
        let lost = |e: &dyn std::fmt::Display| {
            Error::Service(format!("{} did not say hello: {e}", self.where_()))
        };
        sock.send(&wire::to_json(&Hello::ours()), &[])
            .map_err(|e| lost(&e))?;
        let until = Instant::now() + ANSWER_SLACK;
        let frame = sock.recv(Some((until, None))).map_err(|e| lost(&e))?;
        let hello: Hello = serde_json::from_slice(&frame.json).map_err(|e| lost(&e))?;
        if hello.hello != "toolpool" {
            return Err(lost(&"the peer is not a toolpool service"));
        }
        if let Some(refused) = hello.refused {
            return Err(refused);
        }
        if hello.version != wire::PROTOCOL_VERSION {
            return Err(Error::Service(format!(
                "{} speaks protocol version {} (toolpool {}), this library {} (toolpool {}): \
                 use the same toolpool release on both sides",
                self.where_(),
                hello.version,
                hello.build,
                wire::PROTOCOL_VERSION,
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(sock)
    }

    /// Keep `sock` for a later call (up to [`MAX_IDLE_CONNECTIONS`]).
    pub fn put_back(&self, sock: Socket) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE_CONNECTIONS {
            idle.push(sock);
        }
    }

    /// One call on a kept connection (or a new one): the answer's value and data.
    pub fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> Result<(T, Vec<u8>)> {
        let (answer, sock) = self.call_keeping(op, data, wait)?;
        self.put_back(sock);
        Ok(answer)
    }

    /// [`Link::call`], handing the connection to the caller (a lease keeps it). After an
    /// error the connection is kept here, or closed when it cannot serve another call.
    pub fn call_keeping<T: DeserializeOwned>(
        &self,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> Result<((T, Vec<u8>), Socket)> {
        let (sent, mut sock) = self.send(op, data, wait)?;
        match self.answer(&mut sock, sent, wait) {
            (Ok(answer), _) => Ok((answer, sock)),
            (Err(e), reusable) => {
                if reusable {
                    self.put_back(sock);
                }
                Err(e)
            }
        }
    }

    /// Send a call on a kept connection (or a new one), to be answered on the connection
    /// returned; [`Error::Cancelled`] when the wait's token is cancelled already.
    fn send(&self, op: Op, data: &[u8], wait: Option<&Wait>) -> Result<(Sent, Socket)> {
        let what = op.name();
        self.not_cancelled(what, wait)?;
        let (id, json) = self.encode(op);
        let sock = self.send_on_kept(&json, data, what)?;
        Ok((Sent { id, what }, sock))
    }

    /// Send a call on a kept connection, or on a new one when none is kept or every kept
    /// one fails. No `poll` first to see whether a kept connection still lives: one the
    /// service closed (it restarted) fails the send with `EPIPE` before the service could
    /// read the whole frame, so the call cannot have run and goes on the next connection.
    fn send_on_kept(&self, json: &[u8], data: &[u8], what: &str) -> Result<Socket> {
        loop {
            let Some(sock) = self.idle.lock().pop() else {
                break;
            };
            // Bytes left over from an earlier answer: something the service never sends.
            if sock.is_clean() && sock.send(json, data).is_ok() {
                return Ok(sock);
            }
        }
        let sock = self.open()?;
        sock.send(json, data).map_err(|e| self.lost(what, &e))?;
        Ok(sock)
    }

    /// One call on `sock` (a lease's connection); the bool says whether `sock` can serve
    /// another call.
    pub fn call_on<T: DeserializeOwned>(
        &self,
        sock: &mut Socket,
        op: Op,
        data: &[u8],
        wait: Option<&Wait>,
    ) -> (Result<(T, Vec<u8>)>, bool) {
        let what = op.name();
        if let Err(e) = self.not_cancelled(what, wait) {
            return (Err(e), true);
        }
        let (id, json) = self.encode(op);
        if let Err(e) = sock.send(&json, data) {
            return (Err(self.lost(what, &e)), false);
        }
        self.answer(sock, Sent { id, what }, wait)
    }

    /// [`Error::Cancelled`] when the wait's token is cancelled already.
    fn not_cancelled(&self, what: &str, wait: Option<&Wait>) -> Result<()> {
        match wait {
            Some(w) if w.is_cancelled() => {
                Err(Error::Cancelled(format!("{what} on {}", self.where_())))
            }
            _ => Ok(()),
        }
    }

    /// A new call id, and the call's JSON.
    fn encode(&self, op: Op) -> (u64, Vec<u8>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        (id, wire::to_json(&Call { id, op }))
    }

    /// Wait for the answer to the call `sent` on `sock`; the bool says whether `sock` can
    /// serve another call.
    fn answer<T: DeserializeOwned>(
        &self,
        sock: &mut Socket,
        sent: Sent,
        wait: Option<&Wait>,
    ) -> (Result<(T, Vec<u8>)>, bool) {
        let Sent { id, what } = sent;
        let deadline =
            wait.map(|w| crate::util::deadline_in(w.timeout().saturating_add(ANSWER_SLACK)));
        let token = wait.and_then(|w| w.token());
        let mut cancel_sent = false;
        let frame = loop {
            let until = match (deadline, cancel_sent) {
                (_, true) => Some((Instant::now() + CANCEL_GRACE, None)),
                (Some(d), false) => Some((d, token)),
                (None, false) => token.map(|t| (far_future(), Some(t))),
            };
            match sock.recv(until) {
                Ok(f) => break f,
                Err(RecvEnd::Cancelled) => {
                    // Ask the service to stop the call; its answer (Cancelled) follows.
                    let cancel = wire::to_json(&Call { id, op: Op::Cancel });
                    if sock.send(&cancel, &[]).is_err() {
                        return (
                            Err(Error::Cancelled(format!("{what} on {}", self.where_()))),
                            false,
                        );
                    }
                    cancel_sent = true;
                }
                Err(RecvEnd::TimedOut) if cancel_sent => {
                    return (
                        Err(Error::Cancelled(format!("{what} on {}", self.where_()))),
                        false,
                    );
                }
                Err(RecvEnd::TimedOut) => {
                    let after = wait.map(|w| w.timeout()).unwrap_or_default() + ANSWER_SLACK;
                    return (
                        Err(Error::timeout(
                            format!("the answer of {} to {what}", self.where_()),
                            after,
                        )),
                        false,
                    );
                }
                Err(e) => return (Err(self.lost(what, &e)), false),
            }
        };
        let answer: Answer<T> = match serde_json::from_slice(&frame.json) {
            Ok(a) => a,
            Err(e) => {
                let msg = format!(
                    "{} sent an answer to {what} this client cannot read: {e}",
                    self.where_()
                );
                return (Err(Error::Service(msg)), false);
            }
        };
        if answer.id != id {
            let msg = format!(
                "{} answered call {} while call {id} ({what}) waited",
                self.where_(),
                answer.id
            );
            return (Err(Error::Service(msg)), false);
        }
        let r = match (answer.ok, answer.err) {
            (_, Some(e)) => Err(e),
            (Some(v), None) => Ok((v, frame.data)),
            // `"ok": null` reads as no `ok`: a call with nothing to return (unit).
            (None, None) => match serde_json::from_str::<T>("null") {
                Ok(v) => Ok((v, frame.data)),
                Err(_) => Err(Error::Service(format!(
                    "{} answered {what} with neither ok nor err",
                    self.where_()
                ))),
            },
        };
        (r, true)
    }

    /// The error of a call whose connection broke.
    fn lost(&self, what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Service(format!(
            "{} went away during {what} ({e}): it stopped or restarted; the next call connects again",
            self.where_()
        ))
    }
}

/// A call sent, waiting for its answer: its id, and its op's name (for messages).
struct Sent {
    id: u64,
    what: &'static str,
}

/// A deadline that never comes (for a wait that only a token ends).
fn far_future() -> Instant {
    crate::util::deadline_in(Duration::MAX)
}
