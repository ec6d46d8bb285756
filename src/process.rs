//! One child process: spawning it cleanly, signalling its process group, reaping it.
//!
//! Hygiene, each point a pitfall that has bitten real projects (the team notes list them):
//! - the child leads its own process group, and every signal goes to the group, so a
//!   grandchild that holds the pipes dies with it;
//! - the child starts with an empty signal mask and default dispositions, and every fd
//!   above stdio is closed in the child, so it inherits only stdio (spawned with
//!   `posix_spawn`, which does not copy the host: [`crate::spawn`]);
//! - one [`Reaper`] owns the `wait`: it learns of the exit (a pidfd polled by the thread
//!   that drains the child's stderr, or `waitid(WNOWAIT)` on a thread of its own), kills
//!   what is left of the group while the zombie still pins the pid, and only then reaps,
//!   under the same lock that [`Process::signal`] takes, so a pid is never signalled after
//!   it could have been reused;
//! - a write to a dead child's stdin never raises SIGPIPE, which would kill a C or Go host:
//!   the host holds the pipe's read end as well ([`crate::pipe`]), and the threads we own
//!   block SIGPIPE for the pipes they write without one (one-shot runs); they block every
//!   other asynchronous signal too ([`spawn_thread`]), so a signal sent to the host runs
//!   its handler on one of the host's threads; no signal handler is ever installed.

use crate::error::{Error, ExitInfo, Result};
use crate::pipe::StdinEnd;
use crate::spawn::SpawnError;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Release};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What to start: the parts of a tool spec that make a process.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub env_clear: bool,
    pub cwd: Option<PathBuf>,
    /// stdin and stdout on a pseudo-terminal (see [`crate::spawn`]).
    pub pty: bool,
}

/// A started child: its handle, the parent's ends of its three pipes, and the duty to
/// reap it.
pub(crate) struct Spawned {
    pub process: Arc<Process>,
    pub stdin: StdinEnd,
    pub stdout: File,
    pub stderr: File,
    pub reaper: Reaper,
}

/// What runs once a child has been reaped, with how it ended.
pub(crate) type OnExit = Box<dyn FnOnce(ExitInfo) + Send>;

#[derive(Default)]
struct Reaped {
    reaped: bool,
    exit: Option<ExitInfo>,
}

/// A child process we started; shared by the incarnation, the limiter and the waiter thread.
pub(crate) struct Process {
    pid: i32,
    started: Instant,
    state: Mutex<Reaped>,
    /// `state.reaped`, readable without the lock (routing checks it on every pick).
    reaped: AtomicBool,
    exited: Condvar,
    /// The thread that waits for the exit, where there is one (see [`Reaper`]).
    waiter: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid).finish()
    }
}

impl Process {
    /// The child's pid (also its process group id).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How it ended, once reaped.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.state.lock().exit
    }

    /// True until the child has been reaped.
    pub fn is_alive(&self) -> bool {
        !self.reaped.load(Acquire)
    }

    /// Send `sig` to the child's process group. Returns false (and sends nothing) once the
    /// child has been reaped, so a reused pid is never signalled.
    pub fn signal(&self, sig: i32) -> bool {
        let st = self.state.lock();
        if st.reaped {
            return false;
        }
        // SAFETY: plain syscall; the group is pinned by the unreaped leader (we hold the
        // lock the waiter needs to reap).
        unsafe { libc::kill(-self.pid, sig) == 0 }
    }

    /// Wait until the child has been reaped, up to `timeout`. Returns how it ended.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitInfo> {
        let deadline = crate::util::deadline_in(timeout);
        let mut st = self.state.lock();
        while !st.reaped {
            if self.exited.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.exit
    }

    /// Join the waiter thread, if there is one (after the child has been reaped or killed).
    pub(crate) fn join_waiter(&self) {
        if let Some(h) = self.waiter.lock().take() {
            let _ = h.join();
        }
    }

    /// Kill the group and wait until it has been reaped (by whoever holds its [`Reaper`]):
    /// the end of every process, used where no grace is due.
    pub(crate) fn kill_and_reap(&self) -> Option<ExitInfo> {
        self.signal(libc::SIGKILL);
        self.join_waiter();
        self.wait_timeout(Duration::MAX)
    }
}

/// The one duty to reap a child and report its end, held by whoever watches it: the
/// stderr drainer of an incarnation or a run, which polls [`Reaper::exit_fd`] beside
/// stderr (so an instance needs one thread, not two), or a thread of its own
/// ([`Reaper::into_thread`]: ssh masters). Dropped with the duty undone (a thread that
/// could not start, a panic), it hands what is left to such a thread, so no child is left
/// a zombie and no end goes unreported.
pub(crate) struct Reaper {
    process: Arc<Process>,
    /// Readable once the child has exited: a pidfd (Linux 5.3 and later), else made by
    /// [`Reaper::exit_fd`] when first asked for.
    exit_fd: Option<OwnedFd>,
    on_exit: Option<OnExit>,
    /// How it ended, once [`Reaper::reap`] has reaped it.
    exit: Option<ExitInfo>,
}

impl Reaper {
    fn new(process: Arc<Process>) -> Reaper {
        // SAFETY: plain syscall on our own unreaped child; the fd is checked before use.
        // A pidfd is always close-on-exec.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, process.pid, 0) };
        Reaper {
            process,
            // SAFETY: a fresh fd we own from here on.
            exit_fd: (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            on_exit: None,
            exit: None,
        }
    }

    /// Set what runs once the child has been reaped (on the thread that reaps it).
    pub fn on_exit(&mut self, f: OnExit) {
        self.on_exit = Some(f);
    }

    /// An fd that becomes readable once the child has exited (then [`Reaper::reap`] does
    /// not block). Where the kernel has no `pidfd_open` (before 5.3, or a sandbox that
    /// refuses it), the read end of a pipe whose write end a small thread closes when
    /// `waitid` returns; `None` only when no pipe can be made, and then `reap` blocks.
    pub fn exit_fd(&mut self) -> Option<RawFd> {
        if self.exit_fd.is_none() {
            self.exit_fd = self.exit_pipe();
        }
        self.exit_fd.as_ref().map(|f| f.as_raw_fd())
    }

    /// The fallback of [`Reaper::exit_fd`]: a pipe closed by a thread when the child exits.
    fn exit_pipe(&self) -> Option<OwnedFd> {
        let (r, handle) = exit_pipe(self.process.pid)?;
        *self.process.waiter.lock() = Some(handle);
        Some(r)
    }

    /// Wait until the child has exited (at once once [`Reaper::exit_fd`] is readable), kill
    /// what is left of its group, reap it. Returns how it ended; later calls return the same.
    pub fn reap(&mut self) -> ExitInfo {
        *self.exit.get_or_insert_with(|| reap(&self.process))
    }

    /// Run the `on_exit` (after [`Reaper::reap`]; reaps first if it was not).
    pub fn report(mut self) {
        let exit = self.reap();
        if let Some(f) = self.on_exit.take() {
            f(exit);
        }
    }

    /// Hand the duty to a thread of its own: it waits, reaps and reports.
    pub fn into_thread(self) {
        let p = Arc::clone(&self.process);
        let handle = spawn_small_thread(format!("toolpool-wait-{}", p.pid), move || self.report());
        *p.waiter.lock() = Some(handle);
    }
}

impl Drop for Reaper {
    /// Whatever is left of the duty is done now: reported here if the child was reaped,
    /// else handed to a thread.
    fn drop(&mut self) {
        if self.on_exit.is_none() && self.exit.is_some() {
            return;
        }
        let rest = Reaper {
            process: Arc::clone(&self.process),
            exit_fd: self.exit_fd.take(),
            on_exit: self.on_exit.take(),
            exit: self.exit.take(),
        };
        match rest.exit {
            Some(_) => rest.report(),
            None => rest.into_thread(),
        }
    }
}

/// Stack size of the per-instance threads (stdin writer, stderr drainer, a waiter) and the
/// start-up workers. They keep their buffers on the heap, but log records are emitted on
/// them (spawned, exited, `stderr: "log"`), and a C, Go or Python host's log callback runs
/// on the emitting thread, so the stack leaves room for a host's logging code: 256 KiB.
/// Only touched pages are resident, so this costs address space, not memory: a thousand
/// instances reserve 0.75 GiB of addresses instead of the 6 GiB of default stacks.
pub const SMALL_STACK_BYTES: usize = 256 * 1024;

/// Spawn a thread that blocks the asynchronous signals (SIGPIPE among them, so its writes
/// to a pipe without a reader return EPIPE; the others so that a signal sent to the process
/// reaches a host thread: `util::block_async_signals`).
///
/// The name is sanitised (a NUL byte in a thread name would panic). Panics only when the
/// OS refuses a new thread (out of memory or threads), as `std::thread::spawn` does.
pub(crate) fn spawn_thread<F>(name: String, f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.replace('\0', "?"))
        .spawn(move || {
            crate::util::block_async_signals();
            f()
        })
        .expect("toolpool: cannot spawn a thread")
}

/// [`spawn_thread`] with a [`SMALL_STACK_BYTES`] stack, for the per-instance threads.
pub(crate) fn spawn_small_thread<F>(name: String, f: F) -> JoinHandle<()>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.replace('\0', "?"))
        .stack_size(SMALL_STACK_BYTES)
        .spawn(move || {
            crate::util::block_async_signals();
            f()
        })
        .expect("toolpool: cannot spawn a thread")
}

/// Start `launch` (with `posix_spawn`: see [`crate::spawn`] for the hygiene it keeps).
/// The caller then hands the [`Reaper`] on (the limiter sets its `on_exit` once it has
/// registered the process: see `Limiter::spawn`).
pub(crate) fn spawn(launch: &Launch) -> Result<Spawned> {
    let program = &launch.argv[0];
    let child = crate::spawn::spawn(
        &launch.argv,
        &launch.env,
        launch.env_clear,
        launch.cwd.as_deref(),
        launch.pty,
    )
    .map_err(|e| {
        let why = match e {
            SpawnError::BadCwd(d) => format!("working directory {} does not exist", d.display()),
            SpawnError::NotFound => "no such file (or not found in PATH)".to_string(),
            SpawnError::PermissionDenied => "permission denied (not executable?)".into(),
            SpawnError::Other(e) => e.to_string(),
        };
        Error::Spawn(format!("cannot start '{program}': {why}"))
    })?;
    let pid = child.pid;
    let (stdin, stdout, stderr) = (child.stdin, child.stdout, child.stderr);
    let process = Arc::new(Process {
        pid,
        started: Instant::now(),
        state: Mutex::new(Reaped::default()),
        reaped: AtomicBool::new(false),
        exited: Condvar::new(),
        waiter: Mutex::new(None),
    });
    Ok(Spawned {
        reaper: Reaper::new(Arc::clone(&process)),
        process,
        stdin,
        stdout,
        stderr,
    })
}

/// Where there is no pidfd: the read end of a pipe that turns readable (EOF) once `pid`,
/// a child of this process, has exited (or been reaped by someone else), and the thread
/// that closes the write end then (it does not reap). `None` when no pipe can be made.
pub(crate) fn exit_pipe(pid: i32) -> Option<(OwnedFd, JoinHandle<()>)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 with a valid two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: two fresh fds we own from here on.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let handle = spawn_small_thread(format!("toolpool-wait-{pid}"), move || {
        wait_exited(pid);
        drop(w);
    });
    Some((r, handle))
}

/// True when `pid` is a child of this process (exited or not, not yet reaped).
pub(crate) fn is_child(pid: i32) -> bool {
    // SAFETY: waitid on `pid` with a valid out-pointer; WNOHANG | WNOWAIT neither blocks
    // nor reaps.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        ) == 0
    }
}

/// Block until `pid` (our child) has exited, without reaping it.
fn wait_exited(pid: i32) {
    // SAFETY: waitid on our own child with a valid out-pointer.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
    }
}

/// Wait for exit without reaping, kill the rest of the group, then reap.
fn reap(p: &Process) -> ExitInfo {
    wait_exited(p.pid);
    // SAFETY: kill and waitpid on our own child with a valid out-pointer.
    unsafe {
        // The leader is a zombie: its pid, and so the group id, cannot be reused yet.
        libc::kill(-p.pid, libc::SIGKILL);
        let mut st = p.state.lock();
        let mut status = 0;
        loop {
            let r = libc::waitpid(p.pid, &mut status, 0);
            if r >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let exit = if libc::WIFSIGNALED(status) {
            ExitInfo::Signal(libc::WTERMSIG(status))
        } else {
            ExitInfo::Code(libc::WEXITSTATUS(status))
        };
        st.reaped = true;
        st.exit = Some(exit);
        p.reaped.store(true, Release);
        p.exited.notify_all();
        exit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Spawned {
        spawn(&Launch {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            pty: false,
        })
        .unwrap()
    }

    /// Whether `fd` becomes readable within `ms`.
    fn readable(fd: RawFd, ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one initialised pollfd.
        unsafe { libc::poll(&mut p, 1, ms) == 1 }
    }

    /// The exit fd, from a pidfd and from the pipe used where there is none: not readable
    /// while the child runs, readable once it exited; then `reap` gives its status and
    /// `report` runs `on_exit` once.
    #[test]
    fn the_exit_fd_turns_readable_at_exit_with_or_without_a_pidfd() {
        for pidfd in [true, false] {
            let sp = sh("read x; exit 3");
            let mut r = sp.reaper;
            if !pidfd {
                r.exit_fd = None; // as on a kernel without pidfd_open
            }
            let fd = r.exit_fd().unwrap();
            assert!(
                !readable(fd, 100),
                "readable before the exit (pidfd {pidfd})"
            );
            drop(sp.stdin); // `read` sees EOF, the shell exits
            assert!(
                readable(fd, 10_000),
                "not readable after the exit (pidfd {pidfd})"
            );
            let (tx, rx) = crossbeam_channel::bounded(1);
            r.on_exit(Box::new(move |e| tx.send(e).unwrap()));
            assert_eq!(r.reap(), ExitInfo::Code(3));
            assert!(!sp.process.is_alive());
            r.report();
            assert_eq!(rx.try_recv(), Ok(ExitInfo::Code(3)));
            sp.process.join_waiter();
        }
    }

    /// A reaper dropped with its duty undone hands it to a thread: the child is reaped
    /// and `on_exit` runs.
    #[test]
    fn a_dropped_reaper_still_reaps_and_reports() {
        let mut sp = sh("exit 5");
        let (tx, rx) = crossbeam_channel::bounded(1);
        sp.reaper.on_exit(Box::new(move |e| tx.send(e).unwrap()));
        let process = Arc::clone(&sp.process);
        drop(sp);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(ExitInfo::Code(5))
        );
        assert_eq!(
            process.wait_timeout(Duration::from_secs(10)),
            Some(ExitInfo::Code(5))
        );
        process.join_waiter();
    }
}
