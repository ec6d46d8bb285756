//! The watcher: one thread and one epoll set that cancel a call when its client sends a
//! frame (a cancel) or goes away while the call runs. A connection's thread is inside the
//! call then, so someone else must look at its socket.

use crate::cancel::CancelToken;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;

/// The epoll set and the token of each watched call, by a number of its own (so an event
/// that comes late can never cancel the connection's next call).
pub(crate) struct Watcher {
    epoll: OwnedFd,
    calls: Mutex<HashMap<u64, CancelToken>>,
    next: AtomicU64,
    stop: AtomicBool,
    /// Makes `epoll_wait` return when the watcher stops.
    wake: OwnedFd,
}

/// A call being watched; dropping it stops watching (before the connection reads again).
pub(crate) struct Watched<'a> {
    watcher: &'a Watcher,
    id: u64,
    fd: RawFd,
}

/// The `u64` an epoll event carries for the wake eventfd.
const WAKE: u64 = u64::MAX;

impl Watcher {
    /// A watcher and its thread.
    pub fn start() -> std::io::Result<Arc<Watcher>> {
        // SAFETY: plain syscalls; each non-negative result is a new fd we own.
        let (epoll, wake) = unsafe {
            let e = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            if e < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let epoll = OwnedFd::from_raw_fd(e);
            let w = libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK);
            if w < 0 {
                return Err(std::io::Error::last_os_error());
            }
            (epoll, OwnedFd::from_raw_fd(w))
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: WAKE,
        };
        // SAFETY: both fds are live; `ev` is a valid event.
        if unsafe {
            libc::epoll_ctl(
                epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                wake.as_raw_fd(),
                &mut ev,
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let watcher = Arc::new(Watcher {
            epoll,
            calls: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            wake,
        });
        let w = Arc::clone(&watcher);
        std::thread::Builder::new()
            .name("toolpool-watch".into())
            .stack_size(crate::process::SMALL_STACK_BYTES)
            .spawn(move || {
                crate::util::block_async_signals();
                w.run()
            })?;
        Ok(watcher)
    }

    /// Cancel `token` if the connection on socket `fd` becomes readable or hangs up
    /// before the returned guard is dropped.
    pub fn watch(&self, fd: RawFd, token: &CancelToken) -> Watched<'_> {
        let id = self.next.fetch_add(1, Relaxed);
        self.calls.lock().insert(id, token.clone());
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: id,
        };
        // SAFETY: the epoll fd and `fd` are live; `ev` is a valid event. A failure (out of
        // memory) leaves the call unwatched: it still ends by its timeout.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        Watched {
            watcher: self,
            id,
            fd,
        }
    }

    /// Stop the thread (it ends at its next wake-up, made now).
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a live u64 to our eventfd (non-blocking).
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        while !self.stop.load(SeqCst) {
            // SAFETY: `events` has room for 64 events.
            let n =
                unsafe { libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, -1) };
            for ev in events.iter().take(n.max(0) as usize) {
                let id = ev.u64;
                if id == WAKE {
                    continue;
                }
                if let Some(token) = self.calls.lock().get(&id) {
                    token.cancel();
                }
            }
        }
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.watcher.calls.lock().remove(&self.id);
        // SAFETY: the epoll fd is live; removing an fd it may not hold is harmless.
        unsafe {
            libc::epoll_ctl(
                self.watcher.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            )
        };
    }
}
