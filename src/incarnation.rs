//! One incarnation: one running process of an instance, with its stdin
//! ([`crate::writer`]), its stdout ([`crate::reader`], read on demand by the callers that
//! wait; for `jsonrpc` through the [`Dispatcher`]), and a thread that always drains stderr.
//! An instance (the public index, [`crate::instance`]) runs one incarnation at a time;
//! a restart replaces it with a new one.
//!
//! It owns its process's end: [`Incarnation::kill`] is the one kill path (out of service,
//! SIGKILL to the group, never blocks); [`Incarnation::stop`] also closes stdin and joins
//! every thread.
//!
//! - stderr: lines go to a bounded queue that drops its oldest line when full (counted),
//!   and the last `limits.stderr_tail_lines` are kept for diagnosis.
//! - A line longer than `limits.max_line_bytes` is cut into pieces of that size (counted).

use crate::error::{DeathInfo, Error, ExitInfo, Result};
use crate::limiter::Limiter;
use crate::metrics::Counters;
use crate::process::{self, Launch, Process};
use crate::reader::{LineBuf, OutState, StdoutFilter, StdoutReader, WaitEnd};
use crate::rpc::Dispatcher;
use crate::spec::{Protocol, ToolSpec};
use crate::writer::{SendError, StdinWriter};
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use parking_lot::MutexGuard;
use serde::Serialize;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Index of the stderr drainer in `Incarnation::threads` (after the stdin writer).
const DRAINER: usize = 1;

/// Longest stderr line kept in the tail shown by `status` (longer ones are shortened).
const TAIL_LINE_CHARS: usize = 500;
/// Longest `Incarnation::join` waits for the stream threads once the process is gone.
pub const STREAM_JOIN_WAIT: Duration = Duration::from_secs(2);

static LEAKED_THREADS: AtomicU64 = AtomicU64::new(0);

/// Stream threads left running because an escaped descendant still held a pipe open.
pub fn leaked_threads() -> u64 {
    LEAKED_THREADS.load(Relaxed)
}

/// Life-cycle state of an instance (of its current incarnation), as shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Started, waiting for its ready line.
    Starting,
    /// Ready for work.
    Ready,
    /// The process ended (or its stdout closed) without being asked to.
    Dead,
    /// Stopped on purpose (shutdown, restart, idle timeout) or not started yet (lazy).
    Stopped,
    /// Too many restarts: the supervisor gave up until `restart` is called.
    Failed,
}

/// One started process, its pipes and its threads.
pub(crate) struct Incarnation {
    tool: String,
    index: usize,
    process: Arc<Process>,
    stdin: StdinWriter,
    stdout: StdoutReader,
    /// The JSON-RPC dispatcher on stdout (`jsonrpc` only).
    rpc: Option<Arc<Dispatcher>>,
    queue_lines: usize,
    stderr_rx: Receiver<Vec<u8>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    counters: Arc<Counters>,
    stopped: AtomicBool,
    retired: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Incarnation {
    /// Spawn one incarnation of `spec` for instance `index`, counting into `counters`
    /// (the instance's, which outlive it). Does not wait for readiness.
    pub fn start(
        spec: &ToolSpec,
        index: usize,
        limiter: &Arc<Limiter>,
        counters: Arc<Counters>,
        on_exit: Box<dyn FnOnce(ExitInfo) + Send>,
    ) -> Result<Arc<Incarnation>> {
        let rpc = (spec.protocol == Protocol::Jsonrpc).then(|| Arc::new(Dispatcher::new(index)));
        let filter = rpc.clone().map(|d| d as Arc<dyn StdoutFilter>);
        let launch = Launch {
            argv: spec.command.clone(),
            env: spec.env.clone(),
            env_clear: spec.env_clear,
            cwd: spec.cwd.clone(),
        };
        let (dead_tx, dead_rx) = bounded::<()>(0);
        let on_exit: Box<dyn FnOnce(ExitInfo) + Send> = Box::new(move |e| {
            drop(dead_tx); // wakes the writer of a dead child
            on_exit(e)
        });
        let wait = Duration::from_millis(spec.startup.timeout_ms);
        let sp = limiter.spawn(&launch, wait, on_exit).map_err(|e| match e {
            Error::Spawn(m) => Error::Spawn(format!("tool '{}' instance {index}: {m}", spec.id)),
            other => other,
        })?;
        let pid = sp.process.pid();
        let q = spec.limits.queue_lines;
        // Allocated as it fills; `stderr_loop` keeps it to `q` lines.
        let (stderr_tx, stderr_rx) = unbounded::<Vec<u8>>();
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (stdin, writer) = StdinWriter::start(
            sp.stdin,
            q,
            Arc::clone(&counters),
            dead_rx,
            format!("toolpool-in-{pid}"),
        );
        let stdout = StdoutReader::new(
            sp.stdout,
            spec.limits.max_line_bytes,
            q,
            spec.startup.ready_line.clone().map(String::into_bytes),
            filter,
            Arc::clone(&counters),
        );
        let drainer = {
            let tail = Arc::clone(&stderr_tail);
            let drop_rx = stderr_rx.clone();
            let stderr = sp.stderr;
            let counters = Arc::clone(&counters);
            let max = spec.limits.max_line_bytes;
            let keep = spec.limits.stderr_tail_lines;
            process::spawn_small_thread(format!("toolpool-err-{pid}"), move || {
                stderr_loop(stderr, max, &counters, (stderr_tx, q), drop_rx, &tail, keep)
            })
        };
        Ok(Arc::new(Incarnation {
            tool: spec.id.clone(),
            index,
            process: sp.process,
            stdin,
            stdout,
            rpc,
            queue_lines: q,
            stderr_rx,
            stderr_tail,
            counters,
            stopped: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            threads: Mutex::new(vec![writer, drainer]), // see DRAINER
        }))
    }

    /// Wait until the ready line was seen (or there is none), up to `deadline`. Reads
    /// stdout meanwhile; lines before the ready line are start-up output.
    pub fn wait_ready(&self, deadline: Instant, ready_line: &str) -> Result<()> {
        match self
            .stdout
            .wait_for(deadline, |st| st.ready().then_some(()))
        {
            Ok(()) => Ok(()),
            Err(end) => Err(Error::Spawn(format!(
                "tool '{}' instance {} {}{}",
                self.tool,
                self.index,
                match end {
                    WaitEnd::Eof => format!("closed stdout before the ready line '{ready_line}'"),
                    WaitEnd::Timeout =>
                        format!("did not print its ready line '{ready_line}' in time"),
                },
                self.tail_suffix()
            ))),
        }
    }

    fn tail_suffix(&self) -> String {
        let tail = self.stderr_tail();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last stderr: {}", tail.join(" | "))
        }
    }

    /// True once the ready line was seen (or when there is none).
    pub fn is_ready(&self) -> bool {
        self.stdout.ready()
    }

    /// The state shown in status.
    pub fn state(&self) -> State {
        if self.stopped.load(Relaxed) {
            State::Stopped
        } else if !self.process.is_alive() || self.stdout.eof() {
            State::Dead
        } else if self.is_ready() {
            State::Ready
        } else {
            State::Starting
        }
    }

    /// Alive and ready for work.
    pub fn usable(&self) -> bool {
        self.state() == State::Ready && !self.stdin.is_broken() && !self.retired.load(Relaxed)
    }

    /// The instance index it serves.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Why this instance cannot be used, for [`Error::InstanceDead`]. Waits up to `wait`
    /// for the exit status, and as long again for the stderr drainer to reach EOF, so
    /// the last stderr lines (often the reason) are in the error.
    pub fn death(&self, wait: Duration) -> Error {
        let exit = self.process.wait_timeout(wait);
        let deadline = crate::util::deadline_in(wait);
        while !self.stderr_done() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Error::InstanceDead(DeathInfo {
            tool: self.tool.clone(),
            index: self.index,
            exit,
            stderr_tail: self.stderr_tail(),
        })
    }

    /// True once the stderr drainer has read to EOF.
    fn stderr_done(&self) -> bool {
        self.threads
            .lock()
            .get(DRAINER)
            .is_none_or(|t| t.is_finished())
    }

    /// Queue one line (the newline is appended here) for the child's stdin.
    pub fn send(&self, line: &[u8]) -> Result<()> {
        if line.contains(&b'\n') {
            return Err(Error::InvalidArgument(format!(
                "line for instance {} of '{}' contains a newline",
                self.index, self.tool
            )));
        }
        if self.stdin.is_broken() || !self.process.is_alive() {
            return Err(self.death(Duration::from_millis(50)));
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line);
        buf.push(b'\n');
        match self.stdin.send(buf) {
            Ok(()) => Ok(()),
            Err(SendError::Full) => Err(Error::QueueFull {
                tool: self.tool.clone(),
                index: self.index,
                capacity: self.queue_lines,
            }),
            Err(SendError::Closed) => Err(self.death(Duration::from_millis(50))),
        }
    }

    /// The next stdout line, waiting up to `timeout`.
    pub fn read_line(&self, timeout: Duration) -> Result<Vec<u8>> {
        match self
            .stdout
            .wait_for(crate::util::deadline_in(timeout), |st| st.queue.pop_front())
        {
            Ok(line) => Ok(line),
            Err(WaitEnd::Timeout) => Err(Error::timeout(
                format!("stdout of instance {} of '{}'", self.index, self.tool),
                timeout,
            )),
            Err(WaitEnd::Eof) => Err(self.death(Duration::from_millis(200))),
        }
    }

    /// Drop (and count) stdout lines nobody asked for, taking in what is in the pipe now
    /// without waiting.
    pub fn drop_unsolicited(&self) {
        let mut st = self.stdout.take_available();
        let n = st.queue.len();
        st.queue.clear();
        self.counters.unsolicited.fetch_add(n as u64, Relaxed);
    }

    /// The next stderr line, waiting up to `timeout`.
    pub fn read_stderr_line(&self, timeout: Duration) -> Result<Vec<u8>> {
        match self.stderr_rx.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(Error::timeout(
                format!("stderr of instance {} of '{}'", self.index, self.tool),
                timeout,
            )),
            Err(RecvTimeoutError::Disconnected) => Err(self.death(Duration::from_millis(200))),
        }
    }

    /// Lines waiting in the stdin queue.
    pub fn stdin_queue_len(&self) -> usize {
        self.stdin.queue_len()
    }

    /// The last stderr lines (lossy UTF-8).
    pub fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail.lock().iter().cloned().collect()
    }

    /// Close the child's stdin (after the queued lines are written).
    pub fn close_stdin(&self) {
        self.stdin.close();
    }

    /// The one kill path: take it out of service (routing skips it from now on) and
    /// SIGKILL its process group. Never blocks; the waiter thread reaps it.
    pub fn kill(&self) {
        self.retired.store(true, Relaxed);
        self.process.signal(libc::SIGKILL);
    }

    /// Stopping on purpose: status shows it `stopped`, not `dead`; stdin is closed (after
    /// the queued lines), which many tools take as the sign to exit.
    pub fn begin_stop(&self) {
        self.stopped.store(true, Relaxed);
        self.close_stdin();
    }

    /// Ask politely: SIGTERM to the process group.
    pub fn terminate(&self) {
        self.process.signal(libc::SIGTERM);
    }

    /// Stop for good: [`Incarnation::begin_stop`], [`Incarnation::kill`], then reap and join
    /// every thread.
    pub fn stop(&self) {
        self.begin_stop();
        self.kill();
        self.join();
    }

    /// Wait up to `timeout` for the process to be reaped; its exit, if it was.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitInfo> {
        self.process.wait_timeout(timeout)
    }

    /// The pid (= process group id).
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// How the process ended, once reaped.
    pub fn exit(&self) -> Option<ExitInfo> {
        self.process.exit()
    }

    /// How long it has been running (`None` once it has ended).
    pub fn uptime(&self) -> Option<Duration> {
        self.process
            .is_alive()
            .then(|| self.process.started().elapsed())
    }

    /// The JSON-RPC dispatcher (`jsonrpc` only).
    pub fn rpc(&self) -> Option<&Arc<Dispatcher>> {
        self.rpc.as_ref()
    }

    /// Wait on stdout until `check` returns something (see [`StdoutReader::wait_for`]).
    pub fn wait_stdout<T>(
        &self,
        deadline: Instant,
        check: impl FnMut(&mut OutState) -> Option<T>,
    ) -> std::result::Result<T, WaitEnd> {
        self.stdout.wait_for(deadline, check)
    }

    /// Take in what is in the stdout pipe now, without waiting (bounded by the queue).
    pub fn pull_output(&self) -> MutexGuard<'_, OutState> {
        self.stdout.take_available()
    }

    /// The stdout fd to poll for more output, or `None` at EOF (never read it directly).
    pub fn poll_fd(&self) -> Option<i32> {
        (!self.stdout.eof()).then(|| self.stdout.raw_fd())
    }

    /// Join the threads once the process is gone.
    ///
    /// A descendant that left the process group (its own group or session) and kept the
    /// pipes open is beyond the group kill: the stream threads then stay blocked until it
    /// exits. They are waited for up to [`STREAM_JOIN_WAIT`] in all, then left to finish
    /// on their own (counted by [`leaked_threads`]) so a shutdown never hangs.
    pub fn join(&self) {
        self.process.join_waiter();
        let deadline = Instant::now() + STREAM_JOIN_WAIT;
        for t in self.threads.lock().drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                LEAKED_THREADS.fetch_add(1, Relaxed);
            }
        }
    }
}

impl Drop for Incarnation {
    /// A safety net: an incarnation dropped without `stop` still takes its process group
    /// down (the waiter thread reaps it).
    fn drop(&mut self) {
        self.process.signal(libc::SIGKILL);
    }
}

fn push_tail(tail: &Mutex<VecDeque<String>>, keep: usize, line: &[u8]) {
    if keep == 0 {
        return;
    }
    let mut s = String::from_utf8_lossy(line).into_owned();
    if s.len() > TAIL_LINE_CHARS {
        let mut cut = TAIL_LINE_CHARS;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    let mut t = tail.lock();
    if t.len() == keep {
        t.pop_front();
    }
    t.push_back(s);
}

fn stderr_loop(
    src: File,
    max: usize,
    counters: &Counters,
    (tx, cap): (Sender<Vec<u8>>, usize),
    drop_rx: Receiver<Vec<u8>>,
    tail: &Mutex<VecDeque<String>>,
    keep: usize,
) {
    let emit = |line: Vec<u8>| {
        counters.stderr_lines.fetch_add(1, Relaxed);
        push_tail(tail, keep, &line);
        // Nobody reads stderr: drop the oldest lines, keep draining.
        while tx.len() >= cap {
            if drop_rx.try_recv().is_ok() {
                counters.stderr_dropped.fetch_add(1, Relaxed);
            } else {
                break;
            }
        }
        let _ = tx.send(line); // fails only once nobody can read it any more
    };
    let mut lines = LineBuf::default();
    loop {
        match lines.fill_from(&src) {
            Ok(0) => break,
            Ok(_) => {
                while let Some(line) = lines.next_line(max, &counters.lines_split) {
                    emit(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if let Some(rest) = lines.rest() {
        emit(rest);
    }
}
