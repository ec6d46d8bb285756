//! One running incarnation of a tool: the process, a writer thread that owns its stdin, and
//! reader threads for stdout and stderr, joined by bounded queues.
//!
//! - stdin: `send` puts a line on a bounded queue (`limits.queue_lines`) and never blocks;
//!   the writer thread blocks on the child instead, and batches what queued up meanwhile.
//! - stdout: lines go to a bounded queue; when nobody reads, the reader waits, and so the
//!   child blocks on its pipe (backpressure, nothing lost). A [`StdoutFilter`] (the
//!   JSON-RPC dispatcher) may take lines before they reach the queue.
//! - stderr: always drained. Lines go to a bounded queue that drops its oldest line when
//!   full (counted), and the last `limits.stderr_tail_lines` are kept for diagnosis.
//! - A line longer than `limits.max_line_bytes` is cut into pieces of that size (counted).

use crate::error::{DeathInfo, Error, ExitInfo, Result};
use crate::limiter::Limiter;
use crate::process::{self, Launch, Process};
use crate::spec::ToolSpec;
use crate::writer::{SendError, StdinWriter};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest stderr line kept in the tail shown by `status` (longer ones are shortened).
const TAIL_LINE_CHARS: usize = 500;
/// Longest `Instance::join` waits for the stream threads once the process is gone.
pub const STREAM_JOIN_WAIT: Duration = Duration::from_secs(2);

static LEAKED_THREADS: AtomicU64 = AtomicU64::new(0);

/// Stream threads left running because an escaped descendant still held a pipe open.
pub fn leaked_threads() -> u64 {
    LEAKED_THREADS.load(Relaxed)
}

/// Bytes asked of the kernel per `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Takes stdout lines before they reach the instance's queue (the JSON-RPC dispatcher).
pub(crate) trait StdoutFilter: Send + Sync {
    /// Return `Some(line)` to queue it for `read_line`, `None` when it was consumed.
    fn filter(&self, line: Vec<u8>) -> Option<Vec<u8>>;
    /// stdout reached EOF: fail whatever still waits for a reply.
    fn closed(&self);
}

/// Life-cycle state of an instance, as shown in status.
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

/// Counters of one incarnation.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub lines_sent: AtomicU64,
    pub lines_received: AtomicU64,
    pub stderr_lines: AtomicU64,
    pub lines_split: AtomicU64,
    pub stderr_dropped: AtomicU64,
    pub startup_lines: AtomicU64,
    pub stdin_dropped: AtomicU64,
    /// Lines found in the stdout queue before a `lines`/`marker` request (dropped).
    pub unsolicited: AtomicU64,
}

enum Readiness {
    Waiting,
    Ready,
    Failed(String),
}

/// One started process and its threads.
pub(crate) struct Instance {
    pub tool: String,
    pub index: usize,
    pub process: Arc<Process>,
    stdin: StdinWriter,
    stdout_eof: Arc<AtomicBool>,
    queue_lines: usize,
    pub stdout_rx: Receiver<Vec<u8>>,
    pub stderr_rx: Receiver<Vec<u8>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    readiness: Arc<(Mutex<Readiness>, Condvar)>,
    pub counters: Arc<Counters>,
    pub stopped: AtomicBool,
    retired: AtomicBool,
    stop_tx: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What the reader threads share.
struct ReaderCtx {
    max_line: usize,
    counters: Arc<Counters>,
    stop_rx: Receiver<()>,
}

impl Instance {
    /// Spawn one incarnation of `spec` as instance `index`. Does not wait for readiness.
    pub fn start(
        spec: &ToolSpec,
        index: usize,
        limiter: &Arc<Limiter>,
        counters: Arc<Counters>,
        filter: Option<Arc<dyn StdoutFilter>>,
        on_exit: Box<dyn FnOnce(ExitInfo) + Send>,
    ) -> Result<Arc<Instance>> {
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
        let sp = process::spawn(&launch, limiter, wait, on_exit).map_err(|e| match e {
            Error::Spawn(m) => Error::Spawn(format!("tool '{}' instance {index}: {m}", spec.id)),
            other => other,
        })?;
        let pid = sp.process.pid();
        let q = spec.limits.queue_lines;
        let (stdout_tx, stdout_rx) = bounded::<Vec<u8>>(q);
        let (stderr_tx, stderr_rx) = bounded::<Vec<u8>>(q);
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let readiness = Arc::new((
            Mutex::new(if spec.startup.ready_line.is_some() {
                Readiness::Waiting
            } else {
                Readiness::Ready
            }),
            Condvar::new(),
        ));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout_eof = Arc::new(AtomicBool::new(false));
        let ctx = |c: &Arc<Counters>| ReaderCtx {
            max_line: spec.limits.max_line_bytes,
            counters: Arc::clone(c),
            stop_rx: stop_rx.clone(),
        };

        let mut threads = Vec::with_capacity(3);
        let (stdin, writer) = StdinWriter::start(
            sp.stdin,
            q,
            Arc::clone(&counters),
            dead_rx,
            format!("toolpool-in-{pid}"),
        );
        threads.push(writer);
        {
            let c = ctx(&counters);
            let ready_line = spec.startup.ready_line.clone().map(String::into_bytes);
            let readiness = Arc::clone(&readiness);
            let eof = Arc::clone(&stdout_eof);
            let stdout = sp.stdout;
            threads.push(process::spawn_thread(
                format!("toolpool-out-{pid}"),
                move || {
                    stdout_loop(stdout, c, stdout_tx, ready_line, &readiness, filter);
                    eof.store(true, Relaxed);
                },
            ));
        }
        {
            let c = ctx(&counters);
            let tail = Arc::clone(&stderr_tail);
            let keep = spec.limits.stderr_tail_lines;
            let drop_rx = stderr_rx.clone();
            let stderr = sp.stderr;
            threads.push(process::spawn_thread(
                format!("toolpool-err-{pid}"),
                move || stderr_loop(stderr, c, stderr_tx, drop_rx, tail, keep),
            ));
        }
        Ok(Arc::new(Instance {
            tool: spec.id.clone(),
            index,
            process: sp.process,
            stdin,
            stdout_eof,
            queue_lines: q,
            stdout_rx,
            stderr_rx,
            stderr_tail,
            readiness,
            counters,
            stopped: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            stop_tx: Mutex::new(Some(stop_tx)),
            threads: Mutex::new(threads),
        }))
    }

    /// Wait until the ready line was seen (or there is none), up to `deadline`.
    pub fn wait_ready(&self, deadline: Instant, ready_line: &str) -> Result<()> {
        let (lock, cv) = &*self.readiness;
        let mut r = lock.lock();
        loop {
            match &*r {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(why) => {
                    return Err(Error::Spawn(format!(
                        "tool '{}' instance {}: {why}{}",
                        self.tool,
                        self.index,
                        self.tail_suffix()
                    )))
                }
                Readiness::Waiting => {
                    if cv.wait_until(&mut r, deadline).timed_out() {
                        if let Readiness::Waiting = &*r {
                            return Err(Error::Spawn(format!(
                                "tool '{}' instance {} did not print its ready line '{ready_line}' in time{}",
                                self.tool,
                                self.index,
                                self.tail_suffix()
                            )));
                        }
                    }
                }
            }
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
        matches!(*self.readiness.0.lock(), Readiness::Ready)
    }

    /// The state shown in status.
    pub fn state(&self) -> State {
        if self.stopped.load(Relaxed) {
            State::Stopped
        } else if !self.process.is_alive() || self.stdout_closed() {
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

    /// Take out of service (it is about to be killed and replaced).
    pub fn retire(&self) {
        self.retired.store(true, Relaxed);
    }

    fn stdout_closed(&self) -> bool {
        self.stdout_eof.load(Relaxed)
    }

    /// Why this instance cannot be used, for [`Error::InstanceDead`]. Waits up to `wait`
    /// for the exit status.
    pub fn death(&self, wait: Duration) -> Error {
        Error::InstanceDead(DeathInfo {
            tool: self.tool.clone(),
            index: self.index,
            exit: self.process.wait_timeout(wait),
            stderr_tail: self.stderr_tail(),
        })
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
        recv_line(&self.stdout_rx, timeout, || {
            format!("stdout of instance {} of '{}'", self.index, self.tool)
        })
        .map_err(|e| e.unwrap_or_else(|| self.death(Duration::from_millis(200))))
    }

    /// The next stderr line, waiting up to `timeout`.
    pub fn read_stderr_line(&self, timeout: Duration) -> Result<Vec<u8>> {
        recv_line(&self.stderr_rx, timeout, || {
            format!("stderr of instance {} of '{}'", self.index, self.tool)
        })
        .map_err(|e| e.unwrap_or_else(|| self.death(Duration::from_millis(200))))
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

    /// Mark stopped on purpose, SIGKILL the group, reap and join every thread.
    pub fn kill(&self) {
        self.stopped.store(true, Relaxed);
        self.close_stdin();
        self.process.signal(libc::SIGKILL);
        self.join();
    }

    /// Join the threads once the process is gone. Reader threads blocked on a full queue
    /// are released by dropping the stop channel.
    ///
    /// A descendant that left the process group (its own group or session) and kept the
    /// pipes open is beyond the group kill: the stream threads then stay blocked until it
    /// exits. They are waited for up to [`STREAM_JOIN_WAIT`] in all, then left to finish
    /// on their own (counted by [`leaked_threads`]) so a shutdown never hangs.
    pub fn join(&self) {
        self.process.join_waiter();
        self.stop_tx.lock().take();
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

impl Drop for Instance {
    /// A safety net: an instance dropped without `kill` still takes its process group
    /// down (the waiter thread reaps it).
    fn drop(&mut self) {
        self.process.signal(libc::SIGKILL);
    }
}

/// `Err(None)` means the queue is disconnected and drained.
fn recv_line(
    rx: &Receiver<Vec<u8>>,
    timeout: Duration,
    what: impl FnOnce() -> String,
) -> std::result::Result<Vec<u8>, Option<Error>> {
    match rx.recv_timeout(timeout) {
        Ok(l) => Ok(l),
        Err(RecvTimeoutError::Timeout) => Err(Some(Error::timeout(what(), timeout))),
        Err(RecvTimeoutError::Disconnected) => Err(None),
    }
}

/// Split a byte stream into lines of at most `max` bytes; calls `emit(line, is_piece)`.
/// Returns when the stream ends (the unterminated rest is emitted as a last line).
fn read_lines(mut src: File, max: usize, mut emit: impl FnMut(Vec<u8>) -> bool, split: &AtomicU64) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match src.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n');
            let seg_end = nl.unwrap_or(rest.len());
            let room = max - line.len();
            if seg_end > room || (nl.is_none() && seg_end == room) {
                // The line outgrows the cap: hand over a full piece and go on.
                line.extend_from_slice(&rest[..room]);
                rest = &rest[room..];
                split.fetch_add(1, Relaxed);
                if !emit(std::mem::take(&mut line)) {
                    return;
                }
                continue;
            }
            line.extend_from_slice(&rest[..seg_end]);
            match nl {
                Some(_) => {
                    rest = &rest[seg_end + 1..];
                    if !emit(std::mem::replace(&mut line, Vec::with_capacity(64))) {
                        return;
                    }
                }
                None => rest = &[],
            }
        }
    }
    if !line.is_empty() {
        emit(line);
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

fn stdout_loop(
    src: File,
    ctx: ReaderCtx,
    tx: Sender<Vec<u8>>,
    mut ready_line: Option<Vec<u8>>,
    readiness: &(Mutex<Readiness>, Condvar),
    filter: Option<Arc<dyn StdoutFilter>>,
) {
    let counters = Arc::clone(&ctx.counters);
    read_lines(
        src,
        ctx.max_line,
        |line| {
            counters.lines_received.fetch_add(1, Relaxed);
            if let Some(want) = &ready_line {
                counters.startup_lines.fetch_add(1, Relaxed);
                if line == *want {
                    ready_line = None;
                    *readiness.0.lock() = Readiness::Ready;
                    readiness.1.notify_all();
                }
                return true;
            }
            let line = match &filter {
                Some(f) => match f.filter(line) {
                    Some(l) => l,
                    None => return true,
                },
                None => line,
            };
            match tx.try_send(line) {
                Ok(()) => true,
                Err(TrySendError::Full(line)) => select! {
                    send(tx, line) -> r => r.is_ok(),
                    recv(ctx.stop_rx) -> _ => false,
                },
                Err(TrySendError::Disconnected(_)) => false,
            }
        },
        &ctx.counters.lines_split,
    );
    if ready_line.is_some() {
        *readiness.0.lock() = Readiness::Failed("stdout closed before the ready line".into());
        readiness.1.notify_all();
    }
    if let Some(f) = &filter {
        f.closed();
    }
}

fn stderr_loop(
    src: File,
    ctx: ReaderCtx,
    tx: Sender<Vec<u8>>,
    drop_rx: Receiver<Vec<u8>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    keep: usize,
) {
    let counters = Arc::clone(&ctx.counters);
    read_lines(
        src,
        ctx.max_line,
        |line| {
            counters.stderr_lines.fetch_add(1, Relaxed);
            push_tail(&tail, keep, &line);
            let mut line = line;
            loop {
                match tx.try_send(line) {
                    Ok(()) => return true,
                    Err(TrySendError::Full(l)) => {
                        // Nobody reads stderr: drop the oldest line, keep draining.
                        if drop_rx.try_recv().is_ok() {
                            counters.stderr_dropped.fetch_add(1, Relaxed);
                        }
                        line = l;
                    }
                    Err(TrySendError::Disconnected(_)) => return true,
                }
            }
        },
        &ctx.counters.lines_split,
    );
}
