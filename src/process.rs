//! One child process: spawning it cleanly, signalling its process group, reaping it.
//!
//! Hygiene, each point a pitfall that has bitten real projects (the team notes list them):
//! - the child leads its own process group, and every signal goes to the group, so a
//!   grandchild that holds the pipes dies with it;
//! - the child starts with an empty signal mask and default dispositions, and every fd
//!   above stdio is closed in the child, so it inherits only stdio (spawned with
//!   `posix_spawn`, which does not copy the host: [`crate::spawn`]);
//! - one waiter thread owns the `wait`: it learns of the exit with `waitid(WNOWAIT)`, kills
//!   what is left of the group while the zombie still pins the pid, and only then reaps,
//!   under the same lock that [`Process::signal`] takes, so a pid is never signalled after
//!   it could have been reused;
//! - a write to a dead child's stdin never raises SIGPIPE, which would kill a C or Go host:
//!   the host holds the pipe's read end as well ([`crate::pipe`]), and the threads we own
//!   block SIGPIPE ([`spawn_thread`]) for the pipes they write without one (one-shot
//!   runs); no signal handler is ever installed.

use crate::error::{Error, ExitInfo, Result};
use crate::pipe::StdinEnd;
use crate::spawn::SpawnError;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::fs::File;
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
}

/// A started child: its handle and the parent's ends of its three pipes.
pub(crate) struct Spawned {
    pub process: Arc<Process>,
    pub stdin: StdinEnd,
    pub stdout: File,
    pub stderr: File,
}

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

    /// Join the waiter thread (after the child has been reaped or killed).
    /// Start the one thread that waits for this child: it reaps it (see [`reap`]), then
    /// runs `on_exit`. Called once, right after [`spawn`].
    pub(crate) fn start_waiter(self: &Arc<Self>, on_exit: Box<dyn FnOnce(ExitInfo) + Send>) {
        let p = Arc::clone(self);
        let handle = spawn_small_thread(format!("toolpool-wait-{}", self.pid), move || {
            let exit = reap(&p);
            on_exit(exit);
        });
        *self.waiter.lock() = Some(handle);
    }

    pub(crate) fn join_waiter(&self) {
        if let Some(h) = self.waiter.lock().take() {
            let _ = h.join();
        }
    }

    /// Kill the group and reap: the end of every process, used where no grace is due.
    pub(crate) fn kill_and_reap(&self) -> Option<ExitInfo> {
        self.signal(libc::SIGKILL);
        self.join_waiter();
        self.exit()
    }
}

/// Stack size of the per-instance threads (stdin writer, stderr drainer, waiter) and the
/// start-up workers. They keep their buffers on the heap, but log records are emitted on
/// them (spawned, exited, `stderr: "log"`), and a C, Go or Python host's log callback runs
/// on the emitting thread, so the stack leaves room for a host's logging code: 256 KiB.
/// Only touched pages are resident, so this costs address space, not memory: a thousand
/// instances reserve 0.75 GiB of addresses instead of the 6 GiB of default stacks.
pub const SMALL_STACK_BYTES: usize = 256 * 1024;

/// Spawn a thread that blocks SIGPIPE, so its writes to a pipe without a reader return EPIPE.
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
            block_sigpipe();
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
            block_sigpipe();
            f()
        })
        .expect("toolpool: cannot spawn a thread")
}

fn block_sigpipe() {
    // SAFETY: manipulating this thread's own signal mask with a properly initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Start `launch` (with `posix_spawn`: see [`crate::spawn`] for the hygiene it keeps).
/// The caller then starts the waiter with [`Process::start_waiter`] (the limiter does,
/// once it has registered the process: see `Limiter::spawn`).
pub(crate) fn spawn(launch: &Launch) -> Result<Spawned> {
    let program = &launch.argv[0];
    let child = crate::spawn::spawn(
        &launch.argv,
        &launch.env,
        launch.env_clear,
        launch.cwd.as_deref(),
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
        process,
        stdin,
        stdout,
        stderr,
    })
}

/// The waiter: wait for exit without reaping, kill the rest of the group, then reap.
fn reap(p: &Process) -> ExitInfo {
    // SAFETY: waitid/waitpid on our own child with valid out-pointers.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        loop {
            let r = libc::waitid(
                libc::P_PID,
                p.pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            );
            if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
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
