//! The stderr side of an incarnation or a run: the one thread of an instance (or a run),
//! which drains stderr (into a bounded queue that drops its oldest line when full,
//! counted, and a tail of the last `limits.stderr_tail_lines` lines for diagnosis,
//! optionally logged; for `run_output`, into a capped buffer instead) and watches the
//! child's end through its [`Reaper`] (reaps it, then reports the end once stderr has been
//! read, so the exit record shows the last lines; kills it at a run's deadline); the exit
//! record; and the join of a process's stream threads once it has ended.

use crate::error::ExitInfo;
use crate::linebuf::LineBuf;
use crate::metrics::Counters;
use crate::process::{self, OnExit, Reaper};
use crate::spec::{StderrMode, ToolSpec};
use crate::util::{Capped, LogPid};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest stderr line kept in the tail shown by `status` (longer ones are shortened).
const TAIL_LINE_CHARS: usize = 500;

/// Start the stderr drainer of instance `index` of `spec`: it reads `stderr` to its end,
/// queues each line on `tx` (keeping at most `limits.queue_lines`, dropping the oldest
/// through `drop_rx`), keeps the tail, and drops `done` when it ends. With the `reaper`
/// of the process (`pid`) that writes it, it also reaps that process when it exits and
/// reports its end once stderr has reached EOF, or [`EXIT_STDERR_WAIT`] after the exit
/// (a descendant that left the group may hold stderr open), whichever comes first.
pub(crate) fn spawn_drainer(
    spec: &ToolSpec,
    (index, pid): (usize, i32),
    reaper: Option<Reaper>,
    counters: Arc<Counters>,
    (tx, drop_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    tail: Arc<Tail>,
    done: Sender<()>,
) -> JoinHandle<()> {
    let sink = Sink {
        max: spec.limits.max_line_bytes,
        counters,
        tx,
        cap: spec.limits.queue_lines,
        drop_rx,
        tail,
        log_as: (spec.stderr == StderrMode::Log).then(|| {
            format!(
                "tool={} instance={index} pid={}",
                spec.id,
                LogPid(Some(pid).filter(|&p| p > 0))
            )
        }),
        capture: None,
    };
    process::spawn_small_thread(format!("toolpool-err-{pid}"), move || {
        let _done = done;
        drain(&sink, reaper, None)
    })
}

/// Where a run's stderr lines go: a bounded queue for `read_line` (as an instance's), or,
/// for `run_output`, a capped buffer of the bytes as they came.
pub(crate) enum RunStderr {
    /// Lines queued (at most `cap`, the oldest dropped and counted through `drop_rx`).
    Queue {
        tx: Sender<Vec<u8>>,
        drop_rx: Receiver<Vec<u8>>,
        cap: usize,
    },
    /// Every byte kept up to the buffer's cap.
    Capture(Arc<Mutex<Capped>>),
}

/// A run's deadline: when it passes before the end, `kill` runs (once).
pub(crate) struct Deadline {
    pub at: Instant,
    pub kill: Box<dyn FnOnce() + Send>,
}

/// Start the stderr drainer of the run (`pid` names its thread; a dry run has none) that
/// writes `tail`'s pipe: lines longer than `max_line` cut, `to` where they go, the
/// process's `reaper` (none for a dry run, which reports its own end) as for an instance,
/// and the `deadline` at which it kills the run. Drops `done` when it ends.
pub(crate) fn spawn_run_drainer(
    (max_line, pid): (usize, i32),
    to: RunStderr,
    counters: Arc<Counters>,
    tail: Arc<Tail>,
    (reaper, deadline): (Option<Reaper>, Option<Deadline>),
    done: Sender<()>,
) -> JoinHandle<()> {
    let (tx, drop_rx, cap, capture) = match to {
        RunStderr::Queue { tx, drop_rx, cap } => (tx, drop_rx, cap, None),
        RunStderr::Capture(c) => {
            let (tx, rx) = crossbeam_channel::bounded(0);
            (tx, rx, 0, Some(c))
        }
    };
    let sink = Sink {
        max: max_line,
        counters,
        tx,
        cap,
        drop_rx,
        tail,
        log_as: None,
        capture,
    };
    process::spawn_small_thread(format!("toolpool-run-{pid}"), move || {
        let _done = done;
        drain(&sink, reaper, deadline)
    })
}

/// `on_exit` behind the exit record: when the process of `who` (`tool=… instance=…`,
/// its pid read from `pid` then) ends, drop `dead` (which wakes the writer of a dead
/// child), write the record, then run `on_exit`.
pub(crate) fn exit_hook(
    who: String,
    pid: Arc<AtomicI32>,
    expected: Arc<AtomicBool>,
    tail: Arc<std::sync::OnceLock<Arc<Tail>>>,
    dead: Sender<()>,
    on_exit: OnExit,
) -> OnExit {
    Box::new(move |e| {
        drop(dead); // wakes the writer of a dead child
                    // (0: no process was started, a dry-run incarnation.)
        let os_pid = Some(pid.load(Relaxed)).filter(|&p| p > 0);
        let who = format!("{who} pid={}", LogPid(os_pid));
        log_exit(&who, e, &expected, tail.get().map(|t| &**t));
        on_exit(e)
    })
}

/// Longest the end of a process is held back, after its exit, for its stderr to reach
/// EOF (a descendant that left the group may hold stderr open), so the exit record shows
/// the last stderr lines.
pub const EXIT_STDERR_WAIT: Duration = Duration::from_millis(100);

/// The record of a process's end: a warning when nobody asked for it (with the last
/// stderr lines), debug otherwise.
fn log_exit(who: &str, exit: ExitInfo, expected: &AtomicBool, tail: Option<&Tail>) {
    if expected.load(Relaxed) {
        log::debug!(target: "toolpool", "stopped {who} {}", exit_fields(exit));
        return;
    }
    if !log::log_enabled!(target: "toolpool", log::Level::Warn) {
        return;
    }
    let tail = tail.map(Tail::lines).unwrap_or_default();
    log::warn!(
        target: "toolpool",
        "exited unexpectedly {who} {} stderr={tail:?}",
        exit_fields(exit)
    );
}

/// `code=N` or `signal=N`, as the records show an exit.
pub(crate) fn exit_fields(exit: ExitInfo) -> String {
    match exit {
        ExitInfo::Code(c) => format!("code={c}"),
        ExitInfo::Signal(s) => format!("signal={s}"),
    }
}

/// The stderr lines an incarnation wrote lately (the last `limits.stderr_tail_lines`,
/// each cut to [`TAIL_LINE_CHARS`]), how many it wrote in all and when the last came, and
/// the pipe they come through (shared with the drainer, which reads it). The request path
/// marks [`Tail::total`] before a request and asks for the lines since
/// ([`Tail::since`]); [`Tail::settled`] tells it that every byte the tool has written to
/// stderr so far is counted.
pub(crate) struct Tail {
    keep: usize,
    state: Mutex<TailState>,
    /// The drainer has taken bytes from the pipe and not yet counted their lines.
    busy: AtomicBool,
    pipe: File,
    /// The `prompt` framing's copy of stderr as it comes (see [`Raw`]).
    raw: Option<Raw>,
}

/// stderr as it comes, not in lines, for the `prompt` framing (a prompt on stderr ends no
/// line): the bytes not yet taken (at most [`MAX_RAW_STDERR`], the oldest dropped), and
/// an eventfd the drainer makes readable when bytes come, which wakes the caller waiting
/// on stdout (`StdoutReader`'s wake fd).
pub(crate) struct Raw {
    bytes: Mutex<Vec<u8>>,
    wake: OwnedFd,
}

impl Raw {
    /// An empty one, with its eventfd (the only failure: no fd left).
    pub fn new() -> std::io::Result<Raw> {
        // SAFETY: eventfd with valid flags; a non-negative result is a new fd.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Raw {
            bytes: Mutex::new(Vec::new()),
            // SAFETY: a fresh fd we own from here on.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }
}

/// Most stderr bytes held for the `prompt` framing between two looks.
pub const MAX_RAW_STDERR: usize = 1 << 20;

#[derive(Default)]
struct TailState {
    lines: VecDeque<String>,
    total: u64,
    last_at: Option<Instant>,
}

impl Tail {
    /// The tail of the stderr pipe `pipe`, keeping `keep` lines; with `raw`, also stderr
    /// as it comes ([`Tail::take_raw`], [`Tail::wake_fd`]).
    pub fn new(pipe: File, keep: usize, raw: Option<Raw>) -> Tail {
        Tail {
            keep,
            state: Mutex::new(TailState::default()),
            busy: AtomicBool::new(false),
            pipe,
            raw,
        }
    }

    /// The stderr bytes that came since the last call (with `raw` only).
    pub fn take_raw(&self) -> Vec<u8> {
        self.raw
            .as_ref()
            .map(|r| std::mem::take(&mut *r.bytes.lock()))
            .unwrap_or_default()
    }

    /// The eventfd that turns readable when stderr bytes come (with `raw` only).
    pub fn wake_fd(&self) -> Option<RawFd> {
        self.raw.as_ref().map(|r| r.wake.as_raw_fd())
    }

    /// Keep `bytes` for [`Tail::take_raw`] and wake the waiter.
    fn forward(&self, bytes: &[u8]) {
        let Some(r) = &self.raw else { return };
        {
            let mut held = r.bytes.lock();
            held.extend_from_slice(bytes);
            if held.len() > MAX_RAW_STDERR {
                let over = held.len() - MAX_RAW_STDERR;
                held.drain(..over);
            }
        }
        let one: u64 = 1;
        // SAFETY: an 8-byte write from a live u64 to a non-blocking eventfd we own.
        unsafe { libc::write(r.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The lines kept (lossy UTF-8).
    pub fn lines(&self) -> Vec<String> {
        self.state.lock().lines.iter().cloned().collect()
    }

    /// Lines written so far, and when the last one came.
    pub fn total(&self) -> (u64, Option<Instant>) {
        let st = self.state.lock();
        (st.total, st.last_at)
    }

    /// The lines written after the first `mark` (as far as the tail still holds them), and
    /// how many more came that it no longer holds.
    pub fn since(&self, mark: u64) -> (Vec<String>, u64) {
        let st = self.state.lock();
        let new = st.total.saturating_sub(mark);
        let held = (new as usize).min(st.lines.len());
        let lines = st
            .lines
            .iter()
            .skip(st.lines.len() - held)
            .cloned()
            .collect();
        (lines, new - held as u64)
    }

    /// True when every whole line the tool has written to stderr so far is counted: none
    /// waits in the pipe, and the drainer is not between reading and counting. (Read in
    /// that order: a drainer that takes the bytes after the pipe was seen empty had set
    /// `busy` before it read.)
    pub fn settled(&self) -> bool {
        let mut pending: libc::c_int = 0;
        // SAFETY: FIONREAD on a pipe we hold open, into a live int.
        let r = unsafe { libc::ioctl(self.pipe.as_raw_fd(), libc::FIONREAD, &mut pending) };
        (r != 0 || pending == 0) && !self.busy.load(SeqCst)
    }

    fn push(&self, line: &[u8]) {
        let mut st = self.state.lock();
        st.total += 1;
        st.last_at = Some(Instant::now());
        if self.keep == 0 {
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
        if st.lines.len() == self.keep {
            st.lines.pop_front();
        }
        st.lines.push_back(s);
    }
}

/// Where the drainer puts what it reads.
struct Sink {
    max: usize,
    counters: Arc<Counters>,
    tx: Sender<Vec<u8>>,
    /// Most lines kept on `tx`.
    cap: usize,
    drop_rx: Receiver<Vec<u8>>,
    tail: Arc<Tail>,
    /// `tool=… instance=… pid=…` when stderr lines are logged.
    log_as: Option<String>,
    /// `run_output`: the bytes go here (as they came), not to the queue.
    capture: Option<Arc<Mutex<Capped>>>,
}

impl Sink {
    fn emit(&self, line: Vec<u8>) {
        self.counters.stderr_lines.fetch_add(1, Relaxed);
        self.tail.push(&line);
        if let Some(who) = &self.log_as {
            log::info!(target: "toolpool::stderr", "stderr {who}: {}", String::from_utf8_lossy(&line));
        }
        if self.capture.is_some() {
            return; // the bytes were kept as they came
        }
        // Nobody reads stderr: drop the oldest lines, keep draining.
        while self.tx.len() >= self.cap {
            if self.drop_rx.try_recv().is_ok() {
                self.counters.stderr_dropped.fetch_add(1, Relaxed);
            } else {
                break;
            }
        }
        let _ = self.tx.send(line); // fails only once nobody can read it any more
    }
}

/// The drainer's loop: one `poll` on stderr and the reaper's exit fd, until stderr has
/// reached EOF and the end has been reported; at the `deadline` (a run's), its kill runs.
fn drain(sink: &Sink, reaper: Option<Reaper>, mut deadline: Option<Deadline>) {
    let src = &sink.tail.pipe;
    // Without an exit fd (no fd left for a pipe), a thread of its own waits instead.
    let (mut reaper, exit_fd) = match reaper {
        Some(mut r) => match r.exit_fd() {
            Some(fd) => (Some(r), fd),
            None => {
                r.into_thread();
                (None, -1)
            }
        },
        None => (None, -1),
    };
    let mut lines = LineBuf::default();
    let mut open = true;
    // Set once the process has been reaped: when its end is reported at the latest.
    let mut report_by: Option<Instant> = None;
    while open || reaper.is_some() {
        let mut fds = [
            libc::pollfd {
                fd: if open { src.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if report_by.is_none() { exit_fd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let until = match (report_by, &reaper) {
            (Some(by), Some(_)) => Some(by),
            _ => None,
        };
        // A deadline matters only while the end is still to come.
        let ended = report_by.is_some() || (reaper.is_none() && !open);
        let until = match (&deadline, ended) {
            (Some(d), false) => Some(until.map_or(d.at, |u| u.min(d.at))),
            _ => until,
        };
        let ms = until.map_or(-1, |u| {
            u.saturating_duration_since(Instant::now())
                .as_millis()
                .saturating_add(1)
                .min(i32::MAX as u128) as i32
        });
        // SAFETY: poll on two initialised pollfds (a negative fd is skipped).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) } < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // ENOMEM, the one other error poll can give here: try again shortly.
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        if report_by.is_none() && deadline.as_ref().is_some_and(|d| Instant::now() >= d.at) {
            if let Some(d) = deadline.take() {
                (d.kill)();
            }
        }
        if fds[1].revents != 0 {
            if let Some(r) = reaper.as_mut() {
                r.reap();
                report_by = Some(Instant::now() + EXIT_STDERR_WAIT);
            }
        }
        if fds[0].revents != 0 {
            // Busy from before the read until its lines are counted (see `Tail::settled`).
            sink.tail.busy.store(true, SeqCst);
            match lines.fill_from(src) {
                Ok(0) => open = false,
                Ok(n) => {
                    let pending = lines.pending();
                    let fresh = &pending[pending.len() - n..];
                    sink.tail.forward(fresh);
                    if let Some(c) = &sink.capture {
                        c.lock().push(fresh);
                    }
                    while let Some(line) = lines.next_line(sink.max, &sink.counters.lines_split) {
                        sink.emit(line);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => open = false,
            }
            if !open {
                if let Some(rest) = lines.rest() {
                    sink.emit(rest);
                }
            }
            sink.tail.busy.store(false, SeqCst);
        }
        if report_by.is_some_and(|by| !open || Instant::now() >= by) {
            if let Some(r) = reaper.take() {
                r.report();
            }
        }
    }
}

/// Longest the stream threads of a process (its stderr drainer, its stdin writer) are
/// waited for once it is gone, when a pool shuts down or a run is dropped.
pub const STREAM_JOIN_WAIT: Duration = Duration::from_secs(2);

static LEAKED_THREADS: AtomicU64 = AtomicU64::new(0);

/// Stream threads left running because an escaped descendant still held a pipe open.
pub fn leaked_threads() -> u64 {
    LEAKED_THREADS.load(Relaxed)
}

/// Join a process's stream threads once it is gone: its stderr `drainer` (which drops the
/// sender of `drained` as it ends) and its stdin `writer`, if one was started.
///
/// A descendant that left the process group (its own group or session) and kept the
/// pipes open is beyond the group kill: the threads then stay blocked until it exits.
/// They are waited for up to [`STREAM_JOIN_WAIT`] in all, then left to finish on their
/// own (counted by [`leaked_threads`]) so a shutdown never hangs.
pub(crate) fn join_streams(
    drainer: Option<JoinHandle<()>>,
    drained: &Receiver<()>,
    writer: Option<JoinHandle<()>>,
) {
    let deadline = Instant::now() + STREAM_JOIN_WAIT;
    if let Some(t) = drainer {
        // Its end is signalled, not polled for: once `drained` disconnects, only the
        // thread's last instructions are left.
        match drained.recv_deadline(deadline) {
            Err(RecvTimeoutError::Disconnected) => {
                let _ = t.join();
            }
            _ => {
                LEAKED_THREADS.fetch_add(1, Relaxed);
            }
        }
    }
    if let Some(t) = writer {
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
