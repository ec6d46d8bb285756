//! Processes the host starts itself: a [`Permit`] is one slot of the limit; the pid
//! registered on it is counted, listed and killed with the rest, and gives its slot back
//! when it exits. That exit is seen without polling, through a pidfd, by one watcher
//! thread per limiter (`watch`); a registered process is signalled only through its
//! pidfd (`signal_registered`), so a pid that was reaped and reused is never signalled.

use super::{Entry, Limiter, Owner, ProcessKind, Target};
use crate::error::{Error, Result};
use crate::process::{self, Process};
use parking_lot::Mutex;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// `pidfd_send_signal` flag (Linux 6.9): signal the process group whose id is the pidfd's
/// process (`ESRCH` when that process leads no group).
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 1 << 2;

/// One slot of a [`Limiter`], taken by [`Limiter::acquire`]: the gate for a process the
/// host starts itself. Take it before the start, [`Permit::register_pid`] right after, and
/// the process counts in [`Limiter::status`] (as [`ProcessKind::Registered`]) and dies
/// with [`Limiter::kill_all`]. The slot comes back when the permit is dropped (or
/// [`Permit::release`]d), or as soon as the registered process exits, whichever comes
/// first. `Send + Sync`; its calls take `&self`.
///
/// A permit of the process-wide limit taken while the process uses a `toolpool serve`
/// service (`toolpool::acquire_slot`) is a slot of the service's limit: the same calls
/// act there.
pub struct Permit {
    inner: Inner,
}

enum Inner {
    /// A slot of a limiter in this process.
    Local(LocalPermit),
    /// A slot of a limit kept elsewhere (a service's).
    Elsewhere(Box<dyn ElsewhereSlot>),
}

/// A slot of a limit kept outside this process (by a `toolpool serve` service): what a
/// [`Permit`] from there does. Implemented by the client layer.
pub(crate) trait ElsewhereSlot: Send + Sync {
    /// [`Permit::register_pid`] there.
    fn register_pid(&self, pid: i32) -> Result<()>;
    /// [`Permit::pid`].
    fn pid(&self) -> Option<i32>;
    /// [`Permit::holds_slot`] there (false when it cannot tell: the service is gone).
    fn holds_slot(&self) -> bool;
}

/// A slot of a limiter of this process.
struct LocalPermit {
    limiter: Arc<Limiter>,
    id: u64,
    /// `kill_epoch` when the permit was taken.
    epoch: u64,
    held: Mutex<Held>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The slot is taken, no process yet (counted in `reserved`).
    Free,
    /// A registered pid holds it (until the process exits).
    Registered(i32),
    /// Bound to a child of toolpool, which now holds the slot itself.
    Bound,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("pid", &self.pid())
            .field("holds_slot", &self.holds_slot())
            .finish()
    }
}

impl Permit {
    /// Slot number `id` of `limiter`, taken while its kill epoch was `epoch`.
    pub(super) fn new(limiter: Arc<Limiter>, id: u64, epoch: u64) -> Permit {
        Permit {
            inner: Inner::Local(LocalPermit {
                limiter,
                id,
                epoch,
                held: Mutex::new(Held::Free),
            }),
        }
    }

    /// A slot of a limit kept elsewhere.
    pub(crate) fn elsewhere(slot: Box<dyn ElsewhereSlot>) -> Permit {
        Permit {
            inner: Inner::Elsewhere(slot),
        }
    }

    /// Attach `pid`, a process the host started (after taking the permit), to this slot:
    /// it shows in the limiter's status as `registered`, and `kill_all` ends it. The slot
    /// comes back when the process exits (seen through a pidfd; where the kernel gives
    /// none, only a child of this process can be registered: see `ExitWatch`), or when
    /// the permit is dropped. One pid per permit. If a `kill_all` ran since the permit was
    /// taken, the process is killed at once (it was being started while everything was to
    /// die).
    ///
    /// Errors: [`Error::InvalidArgument`] for a pid that is not positive, this process, a
    /// pid with no process, one already counted (a child of toolpool, or registered on
    /// another permit), or a permit that already holds a pid; [`Error::Io`] when the
    /// kernel gives no pidfd and the pid is not a child of this process.
    pub fn register_pid(&self, pid: i32) -> Result<()> {
        match &self.inner {
            Inner::Local(p) => p.register_pid(pid),
            Inner::Elsewhere(p) => p.register_pid(pid),
        }
    }

    /// The registered pid, if any (also after the process exited).
    pub fn pid(&self) -> Option<i32> {
        match &self.inner {
            Inner::Local(p) => p.pid(),
            Inner::Elsewhere(p) => p.pid(),
        }
    }

    /// True while the permit still holds its slot: before a pid is registered, and while
    /// the registered process runs.
    pub fn holds_slot(&self) -> bool {
        match &self.inner {
            Inner::Local(p) => p.holds_slot(),
            Inner::Elsewhere(p) => p.holds_slot(),
        }
    }

    /// Give the slot back now (as dropping the permit does). A registered process is left
    /// running; it is no longer counted.
    pub fn release(self) {}

    /// The slot becomes `process`, a child toolpool just started (see `Limiter::spawn`,
    /// which takes local permits only).
    pub(super) fn bind(self, process: &Arc<Process>, owner: Owner) {
        if let Inner::Local(p) = &self.inner {
            p.bind(process, owner);
        }
    }
}

impl LocalPermit {
    fn register_pid(&self, pid: i32) -> Result<()> {
        let mut held = self.held.lock();
        match *held {
            Held::Free => {}
            Held::Registered(p) => {
                return Err(Error::InvalidArgument(format!(
                    "this permit already holds pid {p} (one pid per permit; take another)"
                )))
            }
            Held::Bound => {
                return Err(Error::InvalidArgument(
                    "this permit is bound to a process toolpool started".into(),
                ))
            }
        }
        if pid <= 0 {
            return Err(Error::InvalidArgument(format!(
                "pid {pid} is not a process id (a pid is at least 1)"
            )));
        }
        if pid as u32 == std::process::id() {
            return Err(Error::InvalidArgument(format!(
                "pid {pid} is this process: register the processes it starts, not itself"
            )));
        }
        let exit = Arc::new(ExitWatch::open(pid)?);
        let mut st = self.limiter.state.lock();
        if let Some(e) = st.procs.get(&pid) {
            let exited = matches!(&e.target, Target::Registered { exit, .. } if exit.exited());
            if !exited {
                return Err(Error::InvalidArgument(format!(
                    "pid {pid} is already counted (a process toolpool started, or one \
                     registered on another permit)"
                )));
            }
            // A registered process that exited, not yet seen by the watcher: its pid was
            // reused by the one registered now.
            st.procs.remove(&pid);
            self.limiter.freed.notify_all();
        }
        let wake = match st.watcher.wake.clone() {
            Some(w) => w,
            None => {
                let w =
                    Arc::new(eventfd().map_err(|e| {
                        Error::Io(format!("cannot watch pid {pid}: no eventfd: {e}"))
                    })?);
                st.watcher.wake = Some(Arc::clone(&w));
                w
            }
        };
        st.reserved -= 1;
        st.procs.insert(
            pid,
            Entry {
                kind: ProcessKind::Registered,
                name: None,
                target: Target::Registered {
                    permit: self.id,
                    exit: Arc::clone(&exit),
                },
            },
        );
        *held = Held::Registered(pid);
        let late = st.kill_epoch != self.epoch;
        let start = !std::mem::replace(&mut st.watcher.running, true);
        drop(st);
        if late {
            signal_registered(pid, &exit);
        }
        if start {
            let limiter = Arc::clone(&self.limiter);
            process::spawn_small_thread("toolpool-pidwatch".into(), move || watch(&limiter));
        } else {
            poke(&wake);
        }
        log::debug!(target: "toolpool", "registered pid={pid}");
        Ok(())
    }

    fn pid(&self) -> Option<i32> {
        match *self.held.lock() {
            Held::Registered(p) => Some(p),
            _ => None,
        }
    }

    fn holds_slot(&self) -> bool {
        match *self.held.lock() {
            Held::Free => true,
            Held::Bound => false,
            Held::Registered(pid) => self
                .limiter
                .state
                .lock()
                .procs
                .get(&pid)
                .is_some_and(|e| self.is_mine(e)),
        }
    }

    fn is_mine(&self, e: &Entry) -> bool {
        matches!(e.target, Target::Registered { permit, .. } if permit == self.id)
    }

    /// The slot becomes `process`, a child toolpool just started.
    fn bind(&self, process: &Arc<Process>, owner: Owner) {
        *self.held.lock() = Held::Bound;
        let mut st = self.limiter.state.lock();
        st.reserved -= 1;
        let replaced = st.procs.insert(
            process.pid(),
            Entry {
                kind: owner.kind,
                name: Some(owner.name),
                target: Target::Child(Arc::clone(process)),
            },
        );
        let late = st.kill_epoch != self.epoch;
        drop(st);
        if replaced.is_some() {
            // A process gone before its end was reported: its pid is reused.
            self.limiter.freed.notify_all();
        }
        if late {
            process.signal(libc::SIGKILL);
        }
    }
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        let held = *self.held.lock();
        let mut st = self.limiter.state.lock();
        match held {
            Held::Bound => return,
            Held::Free => st.reserved -= 1,
            Held::Registered(pid) => {
                if !st.procs.get(&pid).is_some_and(|e| self.is_mine(e)) {
                    return; // the process exited: its slot is back already
                }
                st.procs.remove(&pid);
                if let Some(w) = &st.watcher.wake {
                    poke(w);
                }
            }
        }
        drop(st);
        self.limiter.freed.notify_all();
    }
}

/// The watcher of `limiter`'s registered processes: `poll` their pidfds (and the wake
/// eventfd) and remove each one that exits; returns when none is left.
fn watch(limiter: &Arc<Limiter>) {
    loop {
        let (set, wake) = {
            let mut st = limiter.state.lock();
            let set: Vec<(i32, Arc<ExitWatch>)> = st
                .procs
                .iter()
                .filter_map(|(&pid, e)| match &e.target {
                    Target::Registered { exit, .. } => Some((pid, Arc::clone(exit))),
                    Target::Child(_) => None,
                })
                .collect();
            if set.is_empty() {
                st.watcher.running = false;
                return;
            }
            (set, st.watcher.wake.clone())
        };
        let mut fds: Vec<libc::pollfd> =
            std::iter::once(wake.as_ref().map_or(-1, |w| w.as_raw_fd()))
                .chain(set.iter().map(|(_, w)| w.fd.as_raw_fd()))
                .map(|fd| libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
        // SAFETY: poll on initialised pollfds of fds kept open by `set` and `wake`.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                std::thread::sleep(Duration::from_millis(10)); // ENOMEM: try again shortly
            }
            continue;
        }
        if fds[0].revents != 0 {
            if let Some(w) = &wake {
                drain(w.as_raw_fd());
            }
        }
        let exited: Vec<&(i32, Arc<ExitWatch>)> = set
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|(s, _)| s)
            .collect();
        if exited.is_empty() {
            continue;
        }
        let mut st = limiter.state.lock();
        for (pid, fd) in &exited {
            let same = st.procs.get(pid).is_some_and(
                |e| matches!(&e.target, Target::Registered { exit, .. } if Arc::ptr_eq(exit, fd)),
            );
            if same {
                st.procs.remove(pid);
            }
        }
        drop(st);
        limiter.freed.notify_all();
        for (pid, _) in exited {
            log::debug!(target: "toolpool", "registered process exited pid={pid}");
        }
    }
}

/// What tells that a registered process has exited: its pidfd (Linux 5.3 and later),
/// which also signals it safely; or, where the kernel or a sandbox gives none (valgrind,
/// a seccomp filter), for a child of this process only, the read end of a pipe that a
/// small thread closes when `waitid(WNOWAIT)` sees the exit (it never reaps: the host
/// does).
pub(crate) struct ExitWatch {
    fd: OwnedFd,
    pidfd: bool,
}

impl ExitWatch {
    fn open(pid: i32) -> Result<ExitWatch> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            return Ok(ExitWatch {
                // SAFETY: a fresh fd we own from here on.
                fd: unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
                pidfd: true,
            });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ESRCH) {
            return Err(Error::InvalidArgument(format!("no process has pid {pid}")));
        }
        if !process::is_child(pid) {
            return Err(Error::Io(format!(
                "cannot watch pid {pid}: pidfd_open failed ({e}), and without a pidfd only \
                 a child of this process can be registered (Linux 5.3 or later has pidfds)"
            )));
        }
        let (fd, _thread) = process::exit_pipe(pid)
            .ok_or_else(|| Error::Io(format!("cannot watch pid {pid}: no pipe left")))?;
        Ok(ExitWatch { fd, pidfd: false })
    }

    /// True once the process has exited (the fd is readable).
    fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one initialised pollfd, without waiting.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }
}

/// SIGKILL a registered process, and its process group if it leads one (and it is not
/// this process's group). True when the process was signalled.
///
/// With a pidfd, both go through it: the group with `PIDFD_SIGNAL_PROCESS_GROUP` (Linux
/// 6.9), which reaches only the group this very process leads, even after the pid was
/// reused. Without (an older kernel for the group, no pidfd at all), `kill` is called right
/// after the watch shows the process alive: the pid cannot have been reused unless the
/// process exited, was reaped and the kernel's pid counter went round all pids within
/// those few instructions.
pub(super) fn signal_registered(pid: i32, exit: &ExitWatch) -> bool {
    let fd = exit.fd.as_raw_fd();
    let send = |flags: libc::c_uint| {
        if !exit.pidfd {
            return Err(Some(libc::ENOSYS));
        }
        // SAFETY: plain syscall on a pidfd we own; a null siginfo is allowed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                flags,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error())
        }
    };
    let no_pidfd_call = |r: std::result::Result<(), Option<i32>>| {
        matches!(r, Err(Some(libc::EINVAL | libc::ENOSYS)))
    };
    // SAFETY: getpgid and getpgrp are plain syscalls with no pointers.
    let (group, ours) = unsafe { (libc::getpgid(pid), libc::getpgrp()) };
    // The group (the leader included), then the process itself (which may lead none).
    let mut signalled = false;
    if group == pid && group != ours {
        signalled = match send(PIDFD_SIGNAL_PROCESS_GROUP) {
            Ok(()) => true,
            // SAFETY: plain syscall; see the note above on why `pid` is still the leader.
            r if no_pidfd_call(r) && !exit.exited() => unsafe {
                libc::kill(-pid, libc::SIGKILL) == 0
            },
            _ => false,
        };
    }
    match send(0) {
        Ok(()) => true,
        r if no_pidfd_call(r) && !signalled && !exit.exited() => {
            // SAFETY: plain syscall; as above.
            unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
        }
        _ => signalled,
    }
}

/// A non-blocking eventfd (close-on-exec).
fn eventfd() -> std::io::Result<OwnedFd> {
    // SAFETY: eventfd with valid flags; a non-negative result is a new fd.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make eventfd `w` readable (wakes the watcher).
fn poke(w: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write from a live u64 to a non-blocking eventfd we own.
    unsafe { libc::write(w.as_raw_fd(), (&one as *const u64).cast(), 8) };
}

/// Reset eventfd `fd` to not readable.
fn drain(fd: RawFd) {
    let mut n: u64 = 0;
    // SAFETY: an 8-byte read into a live u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
}
