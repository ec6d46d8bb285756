//! The watcher: one thread and one epoll set that cancel a call when its client sends a
//! frame (a cancel) or goes away while the call runs. A connection's thread is inside the
//! call then, so someone else must look at its socket.
//!
//! Most calls end within microseconds, and putting a socket into the epoll set and taking
//! it out again costs two `epoll_ctl` per call, so a call is watched only once it has
//! run for a while: the thread ticks every [`TICK`] while calls run, and adds the socket
//! of each call it finds running at two ticks in a row (a cancel or a hang-up that came
//! before is reported at once). A call that ends is taken out of the set only if it was
//! put in. So a cancel, or a client that leaves, is noticed at most two ticks after its
//! call started; a call that ends sooner answers, and an answer to a client that left
//! closes the connection. Without calls the thread sleeps until one starts.

use crate::cancel::CancelToken;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the thread looks for calls to watch while calls run.
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Ticks with no call running or started before the thread sleeps until a call starts.
const IDLE_TICKS: u32 = 100;

/// The epoll set, the watched connections, and the thread's schedule.
pub(crate) struct Watcher {
    epoll: OwnedFd,
    /// Every connection, by its key (what its epoll events carry, with the call's number).
    conns: Mutex<HashMap<u32, Arc<Slot>>>,
    next_key: Mutex<u32>,
    /// Calls started so far: the thread's sign that calls run.
    started: AtomicU64,
    /// The thread waits without a tick: a call that starts must wake it.
    asleep: AtomicBool,
    stop: AtomicBool,
    /// Makes `epoll_wait` return (a call started while the thread slept, or it stops).
    wake: OwnedFd,
}

/// One connection's socket and the call it runs.
struct Slot {
    key: u32,
    fd: RawFd,
    call: Mutex<Running>,
}

/// The call a connection runs, as the watcher sees it.
#[derive(Default)]
struct Running {
    /// Numbers the connection's calls, so that an event for an earlier call is ignored.
    number: u32,
    /// The running call's token; `None` between calls.
    token: Option<CancelToken>,
    /// Seen running at the last tick.
    seen: bool,
    /// Its socket is in the epoll set.
    armed: bool,
}

/// A connection known to the watcher; dropping it forgets the connection (before its
/// socket closes).
pub(crate) struct Registered<'a> {
    watcher: &'a Watcher,
    slot: Arc<Slot>,
}

/// A call being run; dropping it ends the watch (before the connection reads again).
pub(crate) struct Watched<'a> {
    watcher: &'a Watcher,
    slot: &'a Slot,
}

/// The key of the wake eventfd's epoll events.
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
            conns: Mutex::new(HashMap::new()),
            next_key: Mutex::new(0),
            started: AtomicU64::new(0),
            asleep: AtomicBool::new(true),
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

    /// Know the connection on socket `fd` (once, before its first call).
    pub fn register(&self, fd: RawFd) -> Registered<'_> {
        let mut conns = self.conns.lock();
        let key = {
            let mut next = self.next_key.lock();
            // u32::MAX with call number u32::MAX would read as the wake-up's key.
            while *next == u32::MAX || conns.contains_key(&*next) {
                *next = next.wrapping_add(1);
            }
            let key = *next;
            *next = next.wrapping_add(1);
            key
        };
        let slot = Arc::new(Slot {
            key,
            fd,
            call: Mutex::new(Running::default()),
        });
        conns.insert(key, Arc::clone(&slot));
        Registered {
            watcher: self,
            slot,
        }
    }

    /// Stop the thread (it ends at its next wake-up, made now).
    pub fn stop(&self) {
        self.stop.store(true, SeqCst);
        self.wake_up();
    }

    fn wake_up(&self) {
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a live u64 to our eventfd (non-blocking).
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn run(&self) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        let mut next_tick = Instant::now();
        let mut last_started = self.started.load(SeqCst);
        let mut idle = 0;
        while !self.stop.load(SeqCst) {
            let timeout = if self.asleep.load(SeqCst) {
                -1
            } else {
                let left = next_tick.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000) as i32
            };
            // SAFETY: `events` has room for 64 events.
            let n = unsafe {
                libc::epoll_wait(self.epoll.as_raw_fd(), events.as_mut_ptr(), 64, timeout)
            };
            for ev in events.iter().take(n.max(0) as usize) {
                if ev.u64 == WAKE {
                    let mut count = 0u64;
                    // SAFETY: an 8-byte read into a live u64 from our non-blocking eventfd.
                    unsafe {
                        libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8)
                    };
                    if self.asleep.swap(false, SeqCst) {
                        next_tick = Instant::now() + TICK;
                    }
                } else {
                    self.fire(ev.u64);
                }
            }
            let now = Instant::now();
            if self.asleep.load(SeqCst) || now < next_tick {
                continue;
            }
            next_tick = now + TICK;
            let running = self.tick();
            let started = self.started.load(SeqCst);
            if running || started != last_started {
                idle = 0;
            } else {
                idle += 1;
            }
            last_started = started;
            if idle >= IDLE_TICKS {
                // Sleep, unless a call started meanwhile: it reads `asleep` after it
                // counts itself in `started`, so one of the two sees the other.
                self.asleep.store(true, SeqCst);
                if self.started.load(SeqCst) != last_started {
                    self.asleep.store(false, SeqCst);
                }
                idle = 0;
            }
        }
    }

    /// Watch every call seen running at the last tick and still running; true when a
    /// call runs.
    fn tick(&self) -> bool {
        let mut any = false;
        for slot in self.conns.lock().values() {
            let mut call = slot.call.lock();
            if call.token.is_none() {
                continue;
            }
            any = true;
            if call.seen && !call.armed {
                let mut ev = libc::epoll_event {
                    events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
                    u64: (u64::from(slot.key) << 32) | u64::from(call.number),
                };
                // SAFETY: the epoll fd and the slot's socket are live (a connection is
                // forgotten before its socket closes); `ev` is a valid event. A failure (out
                // of memory) leaves the call unwatched: it still ends by its timeout.
                let rc = unsafe {
                    libc::epoll_ctl(
                        self.epoll.as_raw_fd(),
                        libc::EPOLL_CTL_ADD,
                        slot.fd,
                        &mut ev,
                    )
                };
                call.armed = rc == 0;
            }
            call.seen = true;
        }
        any
    }

    /// An event on a watched socket: cancel its call if it still runs.
    fn fire(&self, data: u64) {
        let (key, number) = ((data >> 32) as u32, data as u32);
        let Some(slot) = self.conns.lock().get(&key).cloned() else {
            return;
        };
        let call = slot.call.lock();
        if call.armed && call.number == number {
            if let Some(token) = &call.token {
                token.cancel();
            }
        }
    }
}

impl Registered<'_> {
    /// Cancel `token` if the client sends a frame or hangs up before the returned guard
    /// is dropped (once the call has run for a tick or two: see the module docs).
    pub fn watch(&self, token: &CancelToken) -> Watched<'_> {
        {
            let mut call = self.slot.call.lock();
            call.number = call.number.wrapping_add(1);
            call.token = Some(token.clone());
        }
        let w = self.watcher;
        w.started.fetch_add(1, SeqCst);
        if w.asleep.load(SeqCst) {
            w.wake_up();
        }
        Watched {
            watcher: w,
            slot: &self.slot,
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.watcher.conns.lock().remove(&self.slot.key);
    }
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        let mut call = self.slot.call.lock();
        call.token = None;
        call.seen = false;
        if std::mem::take(&mut call.armed) {
            // SAFETY: the epoll fd and the socket are live.
            unsafe {
                libc::epoll_ctl(
                    self.watcher.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    self.slot.fd,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}
