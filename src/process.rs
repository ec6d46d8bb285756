//! One child process: spawning it cleanly, signalling its process group, reaping it.
//!
//! Hygiene, each point a pitfall that has bitten real projects (the team notes list them):
//! - the child leads its own process group, and every signal goes to the group, so a
//!   grandchild that holds the pipes dies with it;
//! - the child starts with an empty signal mask and default dispositions, and every fd
//!   above stdio is close-on-exec in the child, so it inherits only stdio;
//! - one waiter thread owns the `wait`: it learns of the exit with `waitid(WNOWAIT)`, kills
//!   what is left of the group while the zombie still pins the pid, and only then reaps,
//!   under the same lock that [`Process::signal`] takes, so a pid is never signalled after
//!   it could have been reused;
//! - the threads we own block SIGPIPE ([`spawn_thread`]) so a write to a dead child returns
//!   `EPIPE` instead of killing a C or Go host; no signal handler is ever installed.

use crate::error::{Error, ExitInfo, Result};
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
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
    pub stdin: File,
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
        !self.state.lock().reaped
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
        let handle = spawn_thread(format!("toolpool-wait-{}", self.pid), move || {
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

/// Spawn a thread that blocks SIGPIPE, so writes to a dead child return EPIPE.
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

fn block_sigpipe() {
    // SAFETY: manipulating this thread's own signal mask with a properly initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Runs in the child between fork and exec: only async-signal-safe calls.
fn child_setup() -> std::io::Result<()> {
    // SAFETY: each call is async-signal-safe and touches only the child's own state.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // The raw syscall, because glibc's signal() refuses the signals it reserves for
        // itself (32, 33), which a host may still have ignored. An all-zero kernel
        // sigaction is SIG_DFL with no flags and an empty mask on every architecture.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        // Everything above stdio becomes close-on-exec (a C host may have leaked fds
        // without O_CLOEXEC). close_range(CLOSE_RANGE_CLOEXEC) needs Linux 5.11; older
        // kernels get the loop. std's own exec-error pipe is already close-on-exec.
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
            let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
                n if n > 0 => n.min(65_536) as i32,
                _ => 4096,
            };
            for fd in 3..max {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
    Ok(())
}

/// Start `launch`. The caller then starts the waiter with [`Process::start_waiter`] (the
/// limiter does, once it has registered the process: see `Limiter::spawn`).
pub(crate) fn spawn(launch: &Launch) -> Result<Spawned> {
    let program = &launch.argv[0];
    let mut cmd = Command::new(program);
    cmd.args(&launch.argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if launch.env_clear {
        cmd.env_clear();
    }
    cmd.envs(&launch.env);
    if let Some(dir) = &launch.cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: child_setup only makes async-signal-safe calls.
    unsafe {
        cmd.pre_exec(child_setup);
    }
    let mut child = cmd.spawn().map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::NotFound => match &launch.cwd {
                Some(d) if !d.is_dir() => {
                    format!("working directory {} does not exist", d.display())
                }
                _ => "no such file (or not found in PATH)".to_string(),
            },
            std::io::ErrorKind::PermissionDenied => "permission denied (not executable?)".into(),
            _ => e.to_string(),
        };
        Error::Spawn(format!("cannot start '{program}': {why}"))
    })?;
    let pid = child.id() as i32;
    // The three pipes were asked for above (`Stdio::piped`), so they are there.
    let (stdin, stdout, stderr) = (
        File::from(std::os::fd::OwnedFd::from(
            child.stdin.take().expect("piped"),
        )),
        File::from(std::os::fd::OwnedFd::from(
            child.stdout.take().expect("piped"),
        )),
        File::from(std::os::fd::OwnedFd::from(
            child.stderr.take().expect("piped"),
        )),
    );
    drop(child); // std's Child neither waits nor kills on drop; our waiter owns the wait.
    let process = Arc::new(Process {
        pid,
        started: Instant::now(),
        state: Mutex::new(Reaped::default()),
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
        p.exited.notify_all();
        exit
    }
}
