//! Runs: one command started once under the process limit, its output read line by line
//! and its exit status waited for ([`Run`]), or all of its output collected
//! ([`run_output`](crate::run_output)). A pool's one-shot fallback is a run too (`crate::oneshot`).
//!
//! A run is put together from the pieces an incarnation uses, so it keeps their process
//! hygiene and their bounds: the limiter starts the child (`Limiter::spawn`, listed as
//! [`ProcessKind::Run`]: its own process group, an empty signal mask, only stdio
//! inherited); stdin is a `StdinWriter` (a write never blocks and never raises SIGPIPE);
//! stdout is a `StdoutReader` read by whoever waits for a line (at most `queue_lines`
//! lines read ahead, then the child waits on its pipe: nothing is lost); one thread drains
//! stderr (at most `queue_lines` lines kept, the oldest dropped and counted), reaps the
//! child and kills its group at the run's deadline (`stderr::spawn_run_drainer`). A dry
//! run puts a responder at the far end of the same pipes (`dry::spawn_run`).
//!
//! The end: the child's exit is reported once its stderr is read to the end (or 100 ms
//! after the exit, when a descendant that left the group holds it open). From then on the
//! run no longer counts under the limit, [`Run::wait`] returns, and a stream still open
//! is over once what is in its pipe has been read, so a daemon the command left behind
//! cannot hold a reader forever.

use crate::cancel::{cancelled, CancelToken, Until, Wait};
use crate::dry::{self, Child, Started};
use crate::error::{Error, ExitInfo, Result};
use crate::limiter::{Limiter, Owner, Permit, ProcessKind};
use crate::metrics::Counters;
use crate::process::{Launch, OnExit};
use crate::reader::{Chunks, StdoutFilter, StdoutReader, WaitEnd};
use crate::spec::{RunDryRun, RunSpec, DRY_RUN_ENV};
use crate::stderr::{self, Deadline, RunStderr, Tail};
use crate::util::{lossy, Capped};
use crate::writer::{SendError, StdinWriter};
use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod output;
pub(crate) use output::collect;
pub use output::{run_output_with, RunOutput};

/// One of a run's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// What [`Run::start_with`] may be given besides the spec.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Count the run under this limiter instead of [`Limiter::global`].
    pub limiter: Option<Arc<Limiter>>,
    /// Ends the wait for a slot (`slot_timeout_ms`) early: [`Error::Cancelled`].
    pub cancel: Option<CancelToken>,
}

/// A run's state (see [`Run::status`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunStatus {
    /// The run's name.
    pub name: String,
    /// The process's pid (its process group id); `None` for a dry run.
    pub pid: Option<i32>,
    /// No process: canned output (`dry_run`).
    pub dry_run: bool,
    /// Still running (its end not reported yet).
    pub running: bool,
    /// How it ended, once it has.
    pub exit: Option<ExitInfo>,
    /// Killed at its `timeout_ms`.
    pub timed_out: bool,
    /// Milliseconds since it started.
    pub elapsed_ms: u64,
    /// stdout lines (and pieces of cut lines) read from the pipe so far.
    pub stdout_lines: u64,
    /// stderr lines read from the pipe so far.
    pub stderr_lines: u64,
    /// stderr lines dropped, oldest first, while `queue_lines` were waiting to be read.
    pub stderr_dropped: u64,
    /// Lines longer than `max_line_bytes`, delivered in pieces.
    pub lines_split: u64,
    /// Lines written to stdin so far.
    pub stdin_lines: u64,
}

/// How a run ended, set once by its end report.
struct End {
    exit: Mutex<Option<ExitInfo>>,
    done: AtomicBool,
    cv: Condvar,
    /// An eventfd made readable at the end: wakes the stdout reader's `poll`.
    wake: OwnedFd,
}

/// One command running under the process limit: write its stdin, read its stdout and
/// stderr line by line, wait for its exit. See the module docs for how it is built.
///
/// ```
/// use std::time::Duration;
/// use toolpool::{ExitInfo, Run, RunSpec, Stream};
///
/// let run = Run::start(RunSpec {
///     timeout_ms: Some(60_000), // the whole group is killed after a minute
///     ..RunSpec::new(["sh", "-c", "echo compiling; echo warning >&2; exit 3"])
/// })?;
/// let t = Duration::from_secs(10);
/// assert_eq!(run.read_line(Stream::Stdout, t)?.as_deref(), Some("compiling"));
/// assert_eq!(run.read_line(Stream::Stdout, t)?, None); // the end of stdout
/// assert_eq!(run.read_line(Stream::Stderr, t)?.as_deref(), Some("warning"));
/// assert_eq!(run.wait(t)?, ExitInfo::Code(3));
/// # Ok::<(), toolpool::Error>(())
/// ```
///
/// `Send + Sync`: every call takes `&self`, so one thread may read stdout while another
/// reads stderr, writes stdin, waits or kills. Dropping it kills what is left of the
/// process group, reaps the child and joins its threads (waiting at most
/// [`crate::STREAM_JOIN_WAIT`] for a descendant that escaped the group).
pub struct Run {
    name: String,
    child: Child,
    stdin: StdinWriter,
    stdout: StdoutReader,
    stderr_rx: Receiver<Vec<u8>>,
    /// Disconnected at the end: wakes a stderr reader.
    ended_rx: Receiver<()>,
    end: Arc<End>,
    counters: Arc<Counters>,
    timed_out: Arc<AtomicBool>,
    /// The spec's `queue_lines` (the stdin queue's capacity, for its error).
    queue_lines: usize,
    /// `run_output`: stderr as it came.
    captured: Option<Arc<Mutex<Capped>>>,
    drainer: Mutex<Option<JoinHandle<()>>>,
    /// Disconnected once the drainer has ended.
    drained: Receiver<()>,
    started: Instant,
    /// The slot of a limit kept elsewhere (a service's) this run's process is registered
    /// on; given back once the run is dropped.
    _slot: Option<Permit>,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .finish()
    }
}

/// What `Run::launch` is to build.
struct Plan<'a> {
    spec: &'a RunSpec,
    dry: Option<RunDryRun>,
    /// The run's lifetime (from the spec, shortened by `run_output`'s timeout).
    timeout: Option<Duration>,
    limiter: &'a Arc<Limiter>,
    cancel: Option<&'a CancelToken>,
    /// `run_output`: stdout as raw chunks, stderr captured, stdin closed unless `input`.
    collect: bool,
    /// What a spawn error is prefixed with (`run 'make'`).
    what: String,
    /// A slot of a limit kept elsewhere to register the process on (then `limiter` is
    /// one without a limit).
    slot: Option<Permit>,
}

impl Run {
    /// Start `spec` under `limiter` (waiting for a slot until `cancel`); with `slot`, a
    /// slot of a limit kept elsewhere, the process is registered on it instead (and
    /// `limiter` should have no limit). The public `Run::start` decides which (`limit`).
    pub(crate) fn start_under(
        spec: RunSpec,
        limiter: &Arc<Limiter>,
        cancel: Option<&CancelToken>,
        slot: Option<Permit>,
    ) -> Result<Run> {
        spec.validate()?;
        Run::launch(Plan {
            dry: dry_of(&spec),
            timeout: spec.timeout_ms.map(Duration::from_millis),
            what: format!("run '{}'", spec.display_name()),
            spec: &spec,
            limiter,
            cancel,
            collect: false,
            slot,
        })
    }

    fn launch(plan: Plan<'_>) -> Result<Run> {
        let spec = plan.spec;
        let name = spec.display_name();
        // SAFETY: eventfd with valid flags; a non-negative result is a new fd.
        let wake = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if wake < 0 {
            return Err(Error::Spawn(format!(
                "{}: cannot create an eventfd: {}",
                plan.what,
                std::io::Error::last_os_error()
            )));
        }
        let end = Arc::new(End {
            exit: Mutex::new(None),
            done: AtomicBool::new(false),
            cv: Condvar::new(),
            // SAFETY: a fresh fd we own from here on.
            wake: unsafe { OwnedFd::from_raw_fd(wake) },
        });
        let (dead_tx, dead_rx) = bounded::<()>(0);
        let (ended_tx, ended_rx) = bounded::<()>(0);
        let (done_tx, done_rx) = bounded::<()>(0);
        let on_exit = end_hook(Arc::clone(&end), name.clone(), (dead_tx, ended_tx));
        let started: Started = match &plan.dry {
            Some(d) => {
                let drained = done_rx.clone();
                dry::spawn_run(
                    d,
                    &name,
                    &spec.command,
                    Box::new(move |e| {
                        // As for an instance: reported once stderr was read (or 100 ms on).
                        let _ = drained.recv_timeout(stderr::EXIT_STDERR_WAIT);
                        on_exit(e)
                    }),
                )?
            }
            None => {
                let launch = Launch {
                    argv: spec.command.clone(),
                    env: spec.env.clone(),
                    env_clear: spec.env_clear,
                    cwd: spec.cwd.clone(),
                    pty: false,
                };
                let owner = Owner {
                    kind: ProcessKind::Run,
                    name: name.clone(),
                };
                let wait = Duration::from_millis(spec.slot_timeout_ms);
                plan.limiter
                    .spawn(&launch, owner, wait, plan.cancel, on_exit)
                    .map_err(|e| match e {
                        Error::Spawn(m) => Error::Spawn(format!("{}: {m}", plan.what)),
                        other => other,
                    })?
                    .into()
            }
        };
        let child = started.process;
        let pid = child.os_pid();
        if let Some(pid) = pid {
            log::info!(target: "toolpool", "started run={name} pid={pid} argv={:?}", spec.command);
            if let Some(slot) = &plan.slot {
                if let Err(e) = slot.register_pid(pid) {
                    // Not counted where the limit is kept: it must not run.
                    child.signal(libc::SIGKILL);
                    return Err(e);
                }
            }
        }
        let counters = Arc::new(Counters::default());
        let stdin = StdinWriter::start(
            started.stdin,
            spec.queue_lines,
            Arc::clone(&counters),
            dead_rx,
            format!("toolpool-runin-{}", pid.unwrap_or(0)),
        );
        // `run_output` takes stdout as it comes (each read one chunk, never cut).
        let (max_line, filter) = if plan.collect {
            (usize::MAX, Some(Arc::new(Chunks) as Arc<dyn StdoutFilter>))
        } else {
            (spec.max_line_bytes, None)
        };
        let stdout = StdoutReader::new(
            started.stdout,
            max_line,
            spec.queue_lines,
            None,
            filter,
            Arc::clone(&counters),
            Some(end.wake.as_raw_fd()),
        );
        let (stderr_tx, stderr_rx) = unbounded::<Vec<u8>>();
        let captured = plan
            .collect
            .then(|| Arc::new(Mutex::new(Capped::new(spec.max_output_bytes))));
        let to = match &captured {
            Some(c) => RunStderr::Capture(Arc::clone(c)),
            None => RunStderr::Queue {
                tx: stderr_tx,
                drop_rx: stderr_rx.clone(),
                cap: spec.queue_lines,
            },
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let deadline = plan.timeout.map(|t| {
            let (child, flag) = (child.clone(), Arc::clone(&timed_out));
            Deadline {
                at: crate::util::deadline_in(t),
                kill: Box::new(move || {
                    // Under the reaper's lock: true only if it was still running.
                    if child.signal(libc::SIGKILL) {
                        flag.store(true, SeqCst);
                    }
                }),
            }
        });
        let tail = Arc::new(Tail::new(started.stderr, 0, None));
        let drainer = stderr::spawn_run_drainer(
            (spec.max_line_bytes, pid.unwrap_or(0)),
            to,
            Arc::clone(&counters),
            tail,
            (started.reaper, deadline),
            done_tx,
        );
        let run = Run {
            name,
            child,
            stdin,
            stdout,
            stderr_rx,
            ended_rx,
            end,
            counters,
            timed_out,
            queue_lines: spec.queue_lines,
            captured,
            drainer: Mutex::new(Some(drainer)),
            drained: done_rx,
            started: Instant::now(),
            _slot: plan.slot,
        };
        match &spec.input {
            Some(input) => {
                if !input.is_empty() {
                    // The queue is empty: this cannot be refused.
                    let _ = run.stdin.send(input.clone().into_bytes());
                }
                run.stdin.close();
            }
            None if plan.collect => run.stdin.close(),
            None => {}
        }
        Ok(run)
    }

    /// The run's name (`name` in the spec, else the file name of `command[0]`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process's pid, which is also its process group id; `None` for a dry run.
    pub fn pid(&self) -> Option<i32> {
        self.child.os_pid()
    }

    /// Queue `line` (a newline is appended) for the process's stdin. Never blocks: what
    /// the pipe cannot take at once is written by a thread, at most `queue_lines` lines
    /// of it; beyond that the call fails with [`Error::QueueFull`] (the process is not
    /// reading). A newline inside `line` is [`Error::InvalidArgument`], as is a write
    /// after [`Run::close_stdin`] (or with `input` in the spec); a write to a run that
    /// has ended (or closed its stdin) is [`Error::Io`].
    pub fn write_line(&self, line: &str) -> Result<()> {
        if line.contains('\n') {
            return Err(Error::InvalidArgument(format!(
                "line for run '{}' contains a newline",
                self.name
            )));
        }
        if let Some(e) = self.exit() {
            return Err(Error::Io(format!(
                "cannot write to run '{}': it has ended ({e})",
                self.name
            )));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        match self.stdin.send(buf) {
            Ok(()) => Ok(()),
            Err(SendError::Full) => Err(Error::QueueFull {
                tool: self.name.clone(),
                index: 0,
                capacity: self.queue_lines,
            }),
            Err(SendError::Closed) if self.stdin.is_broken() => Err(Error::Io(format!(
                "cannot write to run '{}': it closed its stdin",
                self.name
            ))),
            Err(SendError::Closed) => Err(Error::InvalidArgument(format!(
                "stdin of run '{}' is closed (by close_stdin, or after the spec's input)",
                self.name
            ))),
        }
    }

    /// Close the process's stdin once the queued lines are written (EOF for it).
    /// Idempotent.
    pub fn close_stdin(&self) {
        self.stdin.close();
    }

    /// The next line of `stream` without its newline (invalid UTF-8 replaced by U+FFFD),
    /// waiting up to the wait's timeout (0: only what is there already). `Ok(None)` at
    /// the end of the stream: the pipe closed and every line was read (or the run ended
    /// and what its pipe held was read: a descendant that left the group may hold it
    /// open). A line longer than `max_line_bytes` comes in pieces. Errors:
    /// [`Error::Timeout`], [`Error::Cancelled`].
    pub fn read_line(&self, stream: Stream, wait: impl Into<Wait>) -> Result<Option<String>> {
        let wait = wait.into();
        let until = wait.until();
        let line = match stream {
            Stream::Stdout => self.read_stdout(until),
            Stream::Stderr => self.read_stderr(until),
        }?;
        Ok(line.map(lossy))
    }

    fn what(&self, stream: Stream) -> String {
        let s = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        format!("{s} of run '{}'", self.name)
    }

    fn ended(&self) -> bool {
        self.end.done.load(SeqCst)
    }

    fn read_stdout(&self, until: Until<'_>) -> Result<Option<Vec<u8>>> {
        let got = self.stdout.wait_for(until.deadline, until.cancel, |st| {
            if let Some((line, _)) = st.pop_piece() {
                return Some(Some(line));
            }
            self.ended().then_some(None)
        });
        match got {
            Ok(Some(line)) => Ok(Some(line)),
            // Ended: what its pipe holds now is the last of it.
            Ok(None) => Ok(self.stdout.take_available().pop_piece().map(|(l, _)| l)),
            Err(WaitEnd::Eof) => Ok(None),
            Err(WaitEnd::Timeout) => Err(Error::timeout(self.what(Stream::Stdout), until.timeout)),
            Err(WaitEnd::Cancelled) => Err(Error::Cancelled(self.what(Stream::Stdout))),
        }
    }

    fn read_stderr(&self, until: Until<'_>) -> Result<Option<Vec<u8>>> {
        // Without a token, a channel that never delivers.
        let (tx, cancel_rx) = match until.cancel {
            Some(_) => {
                let (tx, rx) = bounded::<()>(1);
                (Some(tx), rx)
            }
            None => (None, crossbeam_channel::never()),
        };
        let _registered = until.cancel.zip(tx).map(|(c, tx)| {
            c.on_cancel(Arc::new(move || {
                let _ = tx.try_send(());
            }))
        });
        if cancelled(until.cancel) {
            return Err(Error::Cancelled(self.what(Stream::Stderr)));
        }
        let left = until.deadline.saturating_duration_since(Instant::now());
        select! {
            recv(self.stderr_rx) -> m => Ok(m.ok()),
            // Ended: the drainer has queued what it read (to EOF, or 100 ms on).
            recv(self.ended_rx) -> _ => Ok(self.stderr_rx.try_recv().ok()),
            recv(cancel_rx) -> _ => Err(Error::Cancelled(self.what(Stream::Stderr))),
            default(left) => match self.stderr_rx.try_recv() {
                Ok(line) => Ok(Some(line)),
                Err(_) => Err(Error::timeout(self.what(Stream::Stderr), until.timeout)),
            },
        }
    }

    /// How it ended, waiting up to the wait's timeout: an exit code, or the signal that
    /// killed it (9 after [`Run::kill`], its timeout or `kill_all`). Once this returns,
    /// the run no longer counts under the limit. Errors: [`Error::Timeout`] (still
    /// running), [`Error::Cancelled`].
    ///
    /// It does not read the streams: a process that writes more than its stdout pipe and
    /// `queue_lines` hold waits for a reader, and does not end until one comes.
    pub fn wait(&self, wait: impl Into<Wait>) -> Result<ExitInfo> {
        let wait = wait.into();
        let until = wait.until();
        let _registered = until.cancel.map(|c| {
            let end = Arc::clone(&self.end);
            c.on_cancel(Arc::new(move || {
                drop(end.exit.lock());
                end.cv.notify_all();
            }))
        });
        let mut exit = self.end.exit.lock();
        loop {
            if let Some(e) = *exit {
                return Ok(e);
            }
            if cancelled(until.cancel) {
                return Err(Error::Cancelled(format!("the end of run '{}'", self.name)));
            }
            if self
                .end
                .cv
                .wait_until(&mut exit, until.deadline)
                .timed_out()
            {
                return exit.ok_or_else(|| {
                    Error::timeout(format!("the end of run '{}'", self.name), until.timeout)
                });
            }
        }
    }

    /// How it ended, if it has (without waiting).
    pub fn exit(&self) -> Option<ExitInfo> {
        *self.end.exit.lock()
    }

    /// SIGKILL its process group (a dry run ends with signal 9). Returns false when it
    /// had already ended. Never blocks; [`Run::wait`] then gives the end.
    pub fn kill(&self) -> bool {
        self.child.signal(libc::SIGKILL)
    }

    /// True when it was killed at its `timeout_ms`.
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(SeqCst)
    }

    /// Its state and counters now.
    pub fn status(&self) -> RunStatus {
        let c = &self.counters;
        let exit = self.exit();
        RunStatus {
            name: self.name.clone(),
            pid: self.pid(),
            dry_run: self.pid().is_none(),
            running: exit.is_none(),
            exit,
            timed_out: self.timed_out(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            stdout_lines: c.lines_received.load(Relaxed),
            stderr_lines: c.stderr_lines.load(Relaxed),
            stderr_dropped: c.stderr_dropped.load(Relaxed),
            lines_split: c.lines_split.load(Relaxed),
            stdin_lines: c.lines_sent.load(Relaxed),
        }
    }
}

impl Drop for Run {
    /// Kill what is left, reap, join the threads.
    fn drop(&mut self) {
        self.child.signal(libc::SIGKILL);
        self.stdin.close();
        self.child.join_waiter();
        let drainer = self.drainer.lock().take();
        stderr::join_streams(drainer, &self.drained, self.stdin.take_thread());
    }
}

/// The run's end report, for the limiter (after it has released the slot) or the dry
/// stand-in: record the exit, wake every waiter (`wait`, the stdout reader's `poll`, a
/// stderr reader, a stdin writer waiting for room).
fn end_hook(end: Arc<End>, name: String, wakers: (Sender<()>, Sender<()>)) -> OnExit {
    Box::new(move |exit| {
        {
            let mut e = end.exit.lock();
            *e = Some(exit);
            end.done.store(true, SeqCst);
        }
        end.cv.notify_all();
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a live u64 to a non-blocking eventfd we own.
        unsafe { libc::write(end.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        drop(wakers);
        log::debug!(target: "toolpool", "ended run={name} {}", stderr::exit_fields(exit));
    })
}

/// The dry run of `spec`: its `dry_run`, or with `TOOLPOOL_DRY_RUN=1` the default one.
pub(crate) fn dry_of(spec: &RunSpec) -> Option<RunDryRun> {
    spec.dry_run.clone().or_else(|| {
        std::env::var(DRY_RUN_ENV)
            .is_ok_and(|v| !v.is_empty() && v != "0")
            .then(RunDryRun::default)
    })
}
