//! Cancellation: a [`CancelToken`] that another thread triggers, and [`Wait`], the timeout
//! plus optional token that every blocking call takes (`Duration` converts into it, so
//! `pool.request(p, Duration::from_secs(1))` reads as before).
//!
//! A blocking call waits in one of two ways, and the token wakes both:
//! - on a condition variable (admission, the process limiter, a follower waiting for the
//!   stdout leader): the waiter registers a waker (`CancelToken::on_cancel`) that takes
//!   the waiter's mutex and notifies its condvar, so the wake-up cannot be missed;
//! - in `poll` (the stdout leader, `read_any`): the token's eventfd (`CancelToken::poll_fd`,
//!   created on first use, once per token) is added to the poll set; `cancel()` makes it
//!   readable for good.
//!
//! Without a token none of this runs: no allocation, no system call, no lock. A leaf
//! module (it imports only `util`). `Wait::until` turns a wait into the
//! deadline the layers below take.

use crate::util::deadline_after;
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a waiter in `poll` looks at a token whose eventfd could not be created
/// (the process is out of file descriptors): the cancel latency bound in that case.
pub const CANCEL_POLL_SLICE: Duration = Duration::from_millis(5);

/// A wake-up for one waiter, run by [`CancelToken::cancel`].
pub(crate) type Waker = Arc<dyn Fn() + Send + Sync>;

/// Stops blocking calls from another thread: hand a clone (or a [`Wait`] made with it) to
/// the calls, then call [`CancelToken::cancel`] from anywhere. Every call waiting with it
/// returns [`Error::Cancelled`](crate::Error::Cancelled) within milliseconds, and every
/// later call with it returns at once. Cancelling is final (a token cannot be reset).
///
/// `Clone + Send + Sync`; a clone is an `Arc` clone and shares the state. Creating one
/// makes no system call.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cancelled: AtomicBool,
    wake: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    next_id: u64,
    list: Vec<(u64, Waker)>,
    /// The eventfd for waiters in `poll`, once one asked for it.
    fd: Option<OwnedFd>,
    /// Creating the eventfd failed once; waiters slice their polls instead.
    fd_failed: bool,
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A new token, not cancelled.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// Cancel: every call waiting with this token (or a clone) stops and returns
    /// `Error::Cancelled`; later calls with it return at once. Idempotent, safe from any
    /// thread, never blocks for long (it takes the waiters' locks briefly to wake them).
    /// Not async-signal-safe: do not call it from a signal handler.
    pub fn cancel(&self) {
        if self.inner.cancelled.swap(true, SeqCst) {
            return;
        }
        let wakers: Vec<Waker> = {
            let w = self.inner.wake.lock();
            if let Some(fd) = &w.fd {
                signal(fd.as_raw_fd());
            }
            w.list.iter().map(|(_, f)| Arc::clone(f)).collect()
        };
        for wake in wakers {
            wake();
        }
    }

    /// True once [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(SeqCst)
    }

    /// Run `wake` when the token is cancelled, for as long as the returned registration
    /// lives. Register *before* the last look at [`CancelToken::is_cancelled`]: the
    /// canceller sets the flag first, then runs the wakers it finds.
    pub(crate) fn on_cancel(&self, wake: Waker) -> Registration<'_> {
        let mut w = self.inner.wake.lock();
        let id = w.next_id;
        w.next_id += 1;
        w.list.push((id, wake));
        Registration { token: self, id }
    }

    /// The eventfd that becomes readable on cancel, created on first use (close-on-exec).
    /// `None` when it cannot be created; poll in [`CANCEL_POLL_SLICE`]s then. Look at
    /// [`CancelToken::is_cancelled`] after this call, before polling.
    pub(crate) fn poll_fd(&self) -> Option<RawFd> {
        let mut w = self.inner.wake.lock();
        if w.fd.is_none() && !w.fd_failed {
            // SAFETY: eventfd with valid flags; a non-negative result is a new fd we own.
            let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
            if fd >= 0 {
                // SAFETY: `fd` was just created and is owned by nobody else.
                w.fd = Some(unsafe { OwnedFd::from_raw_fd(fd) });
                if self.is_cancelled() {
                    // Cancelled before the fd existed: make it readable too.
                    signal(fd);
                }
            } else {
                w.fd_failed = true;
            }
        }
        w.fd.as_ref().map(|f| f.as_raw_fd())
    }
}

/// Make eventfd `fd` readable (for good: nobody reads it).
fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write from a live u64 to an eventfd we own. It cannot block
    // (EFD_NONBLOCK), and a counter of a few writes cannot overflow.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// A registered waker; unregistered when dropped.
pub(crate) struct Registration<'a> {
    token: &'a CancelToken,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.token
            .inner
            .wake
            .lock()
            .list
            .retain(|(id, _)| *id != self.id);
    }
}

/// How long a blocking call may wait, and the token that may stop it sooner.
///
/// Every blocking method takes `impl Into<Wait>`: pass a `Duration` as before, or
/// `Wait::new(timeout).with_cancel(&token)`, or `(timeout, &token)`.
#[derive(Debug, Clone, Default)]
pub struct Wait {
    timeout: Duration,
    cancel: Option<CancelToken>,
}

impl Wait {
    /// Wait up to `timeout`, not cancellable.
    pub fn new(timeout: Duration) -> Wait {
        Wait {
            timeout,
            cancel: None,
        }
    }

    /// The same wait, also stopped by `token` (a clone of it is kept).
    pub fn with_cancel(mut self, token: &CancelToken) -> Wait {
        self.cancel = Some(token.clone());
        self
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The token, if any.
    pub fn token(&self) -> Option<&CancelToken> {
        self.cancel.as_ref()
    }

    /// True when the wait has a token and it is cancelled.
    pub fn is_cancelled(&self) -> bool {
        cancelled(self.token())
    }

    /// Its end, counted from now.
    pub(crate) fn until(&self) -> Until<'_> {
        self.until_from(Instant::now())
    }

    /// Its end, counted from `start` (an instant the caller has just read).
    pub(crate) fn until_from(&self, start: Instant) -> Until<'_> {
        Until {
            deadline: deadline_after(start, self.timeout),
            timeout: self.timeout,
            cancel: self.token(),
        }
    }
}

/// The end of a wait as the layers below take it: the deadline, the timeout an error
/// reports, the optional token.
#[derive(Clone, Copy)]
pub(crate) struct Until<'a> {
    pub deadline: Instant,
    pub timeout: Duration,
    pub cancel: Option<&'a CancelToken>,
}

impl From<Duration> for Wait {
    fn from(timeout: Duration) -> Wait {
        Wait::new(timeout)
    }
}

impl From<(Duration, &CancelToken)> for Wait {
    fn from((timeout, token): (Duration, &CancelToken)) -> Wait {
        Wait::new(timeout).with_cancel(token)
    }
}

impl From<&Wait> for Wait {
    fn from(w: &Wait) -> Wait {
        w.clone()
    }
}

/// True when `token` is given and cancelled.
pub(crate) fn cancelled(token: Option<&CancelToken>) -> bool {
    token.is_some_and(CancelToken::is_cancelled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn wakers_run_once_and_unregister() {
        let t = CancelToken::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = Arc::clone(&n);
        let reg = t.on_cancel(Arc::new(move || {
            n2.fetch_add(1, SeqCst);
        }));
        drop(reg);
        let n3 = Arc::clone(&n);
        let _reg = t.on_cancel(Arc::new(move || {
            n3.fetch_add(10, SeqCst);
        }));
        t.clone().cancel();
        t.cancel();
        assert_eq!(n.load(SeqCst), 10);
        assert!(t.is_cancelled());
    }

    #[test]
    fn the_eventfd_is_readable_after_cancel_even_if_made_later() {
        for early in [true, false] {
            let t = CancelToken::new();
            if early {
                t.poll_fd().unwrap();
            }
            t.cancel();
            let fd = t.poll_fd().unwrap();
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            assert_eq!(unsafe { libc::poll(&mut p, 1, 0) }, 1, "early {early}");
        }
    }
}
