//! Dry run: an in-process *responder* stands in for a tool's process, so a pool with the
//! `dry_run` spec key starts no process, needs no binary and counts nothing against the
//! process limit, yet behaves as a real pool.
//!
//! The least special-casing: a dry incarnation has real pipes for stdin, stdout and
//! stderr, and a responder thread holds the far ends instead of a child. The incarnation,
//! its writer, its reader, the JSON-RPC dispatcher and every framing run unchanged; only
//! the other end differs. [`Child`] is what sits there (a [`Process`] or a [`Responder`]),
//! with the same few calls, so the incarnation's one kill path stays one.
//!
//! The responder (what it answers and when: the `script` submodule) reads request lines,
//! answers each from the spec's [`DryRun`] after its
//! `delay_ms` (in order for `lines` and `marker`, as a line tool does; each on its own
//! clock for `jsonrpc`, so requests in flight overlap), prints the ready line first when
//! the spec has one, and logs one `debug` record per request (target
//! `toolpool::dry_run`): what would have been sent to which argv. Like a process it ends
//! on a signal ([`Responder::signal`]: exit `Signal(n)` at once, pending replies dropped
//! with it), at EOF on stdin once its pending replies are written (exit `Code(0)`), or on a
//! dry error in `lines`/`marker` framing (its message on stderr, exit `Code(code)`). Its
//! pipe ends close as it ends, so the reader sees EOF as after a real death, and its
//! thread then runs the exit callback as a process's stderr drainer does after reaping it
//! (once the drainer has read the responder's stderr to its end, or 100 ms after).
//!
//! A dry incarnation has no pid: status shows `null`. Internally it has a negative id
//! (-1, -2, ...; wrapping after 2^31 of them) where a real one has its pid, so the
//! identity checks (sticky keys, recycling) work unchanged; [`Responder::signal`] never
//! reaches the OS.

use crate::error::{Error, ExitInfo, Result};
use crate::pipe::StdinEnd;
use crate::process::{OnExit, Process, Reaper, Spawned};
use crate::spec::{DryRun, ToolSpec};
use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod run;
mod script;
pub(crate) use run::spawn_run;
use script::Script;

/// Longest request line a responder reads whole; longer ones are answered in pieces.
pub const MAX_DRY_REQUEST_BYTES: usize = 16 << 20;
/// Replies a responder holds (delayed, not yet written) before it stops reading stdin,
/// as a tool blocked on a full stdout pipe would.
pub const MAX_DRY_PENDING: usize = 1024;
/// Bytes of due replies a responder buffers while nobody reads its stdout, before it
/// stops reading stdin (the same backpressure).
pub const MAX_DRY_OUT_BYTES: usize = 1 << 20;

/// What sits at the far end of an incarnation's (or a run's) pipes.
#[derive(Clone)]
pub(crate) enum Child {
    /// A real child process.
    Process(Arc<Process>),
    /// A dry-run responder thread.
    Dry(Arc<Responder>),
}

impl Child {
    /// The pid, or a dry incarnation's (negative) id: an identity, unique among the live.
    pub fn pid(&self) -> i32 {
        match self {
            Child::Process(p) => p.pid(),
            Child::Dry(r) => r.id,
        }
    }

    /// The OS pid; `None` for a dry incarnation.
    pub fn os_pid(&self) -> Option<i32> {
        match self {
            Child::Process(p) => Some(p.pid()),
            Child::Dry(_) => None,
        }
    }

    /// When it started.
    pub fn started(&self) -> Instant {
        match self {
            Child::Process(p) => p.started(),
            Child::Dry(r) => r.started,
        }
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<ExitInfo> {
        match self {
            Child::Process(p) => p.exit(),
            Child::Dry(r) => r.state.lock().exit,
        }
    }

    /// True until it has ended (a process: been reaped).
    pub fn is_alive(&self) -> bool {
        match self {
            Child::Process(p) => p.is_alive(),
            Child::Dry(r) => r.state.lock().exit.is_none(),
        }
    }

    /// Send `sig` (a process: to its group). False once it has ended.
    pub fn signal(&self, sig: i32) -> bool {
        match self {
            Child::Process(p) => p.signal(sig),
            Child::Dry(r) => r.signal(sig),
        }
    }

    /// Wait up to `timeout` for the end; how it ended, if it did.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitInfo> {
        match self {
            Child::Process(p) => p.wait_timeout(timeout),
            Child::Dry(r) => {
                let deadline = crate::util::deadline_in(timeout);
                let mut st = r.state.lock();
                while st.exit.is_none() {
                    if r.exited.wait_until(&mut st, deadline).timed_out() {
                        break;
                    }
                }
                st.exit
            }
        }
    }

    /// Join the thread that saw the end, if it is not the stderr drainer (a process's
    /// fallback waiter, or the responder).
    pub fn join_waiter(&self) {
        match self {
            Child::Process(p) => p.join_waiter(),
            Child::Dry(r) => {
                if let Some(h) = r.thread.lock().take() {
                    let _ = h.join();
                }
            }
        }
    }
}

/// A started child or responder, the parent's ends of its three pipes, and for a child
/// the duty to reap it (a responder reports its own end).
pub(crate) struct Started {
    pub process: Child,
    pub stdin: StdinEnd,
    pub stdout: File,
    pub stderr: File,
    pub reaper: Option<Reaper>,
}

impl From<Spawned> for Started {
    fn from(sp: Spawned) -> Started {
        Started {
            process: Child::Process(sp.process),
            stdin: sp.stdin,
            stdout: sp.stdout,
            stderr: sp.stderr,
            reaper: Some(sp.reaper),
        }
    }
}

#[derive(Default)]
struct End {
    /// The first signal asked for; the responder ends with it.
    signal: Option<i32>,
    exit: Option<ExitInfo>,
}

/// The thread that answers for a dry incarnation, and how it ended.
pub(crate) struct Responder {
    id: i32,
    started: Instant,
    state: Mutex<End>,
    exited: Condvar,
    /// An eventfd the responder polls: written by [`Responder::signal`].
    wake: OwnedFd,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Responder {
    /// End the responder with `sig` (any signal ends it, as SIGTERM and SIGKILL end a
    /// tool). False once it has ended.
    pub fn signal(&self, sig: i32) -> bool {
        let mut st = self.state.lock();
        if st.exit.is_some() {
            return false;
        }
        if sig == 0 {
            return true; // kill(pid, 0): only asks whether it is there
        }
        st.signal.get_or_insert(sig);
        let one: u64 = 1;
        // SAFETY: an 8-byte write to the eventfd we own.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        true
    }
}

/// The next dry id: -1, -2, ... (never a pid, never 0).
fn next_id() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(-1);
    NEXT.fetch_update(Relaxed, Relaxed, |n| {
        Some(if n == i32::MIN { -1 } else { n - 1 })
    })
    .unwrap_or(-1)
}

/// A pipe: (read end, write end).
fn pipe() -> Result<(File, File)> {
    let (r, w) = crate::pipe::pipe()
        .map_err(|e| Error::Spawn(format!("dry run: cannot create a pipe: {e}")))?;
    Ok((File::from(r), File::from(w)))
}

fn set_nonblocking(f: &File) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
}

/// Start a responder for instance `index` of `spec` (whose `dry_run` is `dry`); it runs
/// `on_exit` on its own thread once it has ended.
pub(crate) fn spawn(
    spec: &ToolSpec,
    dry: &DryRun,
    index: usize,
    on_exit: OnExit,
) -> Result<Started> {
    let script = Script {
        tool: spec.id.clone(),
        index,
        argv: spec.command.clone(),
        protocol: spec.protocol.clone(),
        dry: dry.clone(),
        ready_line: spec.startup.ready_line.clone(),
    };
    stand_in(
        format!("toolpool-dry-{index}"),
        move |r, stdin, stdout, stderr| script.run(r, stdin, stdout, stderr),
        on_exit,
    )
}

/// Real pipes with a [`Responder`] thread (named `name`) at their far end, which runs
/// `act` on its ends of stdin (non-blocking), stdout (non-blocking) and stderr, then
/// `on_exit` with the exit `act` gave. Its ends close as `act` returns, as a dead
/// process's do.
fn stand_in(
    name: String,
    act: impl FnOnce(&Responder, File, File, File) -> ExitInfo + Send + 'static,
    on_exit: OnExit,
) -> Result<Started> {
    let (stdin_r, stdin_w) = pipe()?;
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    // SAFETY: plain syscall; the fd is checked before use.
    let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if wake < 0 {
        return Err(Error::Spawn(format!(
            "dry run: cannot create an eventfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    set_nonblocking(&stdin_r);
    // Held by the host as a process's stdin is (see `crate::pipe`).
    let stdin_keep = stdin_r
        .try_clone()
        .map_err(|e| Error::Spawn(format!("dry run: cannot duplicate a pipe end: {e}")))?;
    set_nonblocking(&stdout_w);
    let responder = Arc::new(Responder {
        id: next_id(),
        started: Instant::now(),
        state: Mutex::new(End::default()),
        exited: Condvar::new(),
        // SAFETY: a fresh fd we own from here on.
        wake: unsafe { OwnedFd::from_raw_fd(wake) },
        thread: Mutex::new(None),
    });
    let r = Arc::clone(&responder);
    let handle = crate::process::spawn_thread(name, move || {
        let exit = act(&r, stdin_r, stdout_w, stderr_w);
        {
            let mut st = r.state.lock();
            st.exit = Some(exit);
            r.exited.notify_all();
        }
        on_exit(exit);
    });
    *responder.thread.lock() = Some(handle);
    Ok(Started {
        process: Child::Dry(responder),
        stdin: StdinEnd::new(stdin_w.into(), stdin_keep.into()),
        stdout: stdout_r,
        stderr: stderr_r,
        reaper: None,
    })
}
