//! The stderr side of an incarnation: the one thread of an instance, which drains stderr
//! (into a bounded queue that drops its oldest line when full, counted, and a tail of the
//! last `limits.stderr_tail_lines` lines for diagnosis, optionally logged) and watches
//! the child's end through its [`Reaper`] (reaps it, then reports the end once stderr
//! has been read, so the exit record shows the last lines); and that exit record.

use crate::error::ExitInfo;
use crate::linebuf::LineBuf;
use crate::metrics::Counters;
use crate::process::{self, OnExit, Reaper};
use crate::spec::{StderrMode, ToolSpec};
use crate::util::LogPid;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed, Ordering::SeqCst};
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
    };
    process::spawn_small_thread(format!("toolpool-err-{pid}"), move || {
        let _done = done;
        drain(&sink, reaper)
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
}

impl Sink {
    fn emit(&self, line: Vec<u8>) {
        self.counters.stderr_lines.fetch_add(1, Relaxed);
        self.tail.push(&line);
        if let Some(who) = &self.log_as {
            log::info!(target: "toolpool::stderr", "stderr {who}: {}", String::from_utf8_lossy(&line));
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
/// reached EOF and the end has been reported.
fn drain(sink: &Sink, reaper: Option<Reaper>) {
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
        let ms = match (report_by, &reaper) {
            (Some(by), Some(_)) => by
                .saturating_duration_since(Instant::now())
                .as_millis()
                .saturating_add(1) as i32,
            _ => -1,
        };
        // SAFETY: poll on two initialised pollfds (a negative fd is skipped).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) } < 0 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                // ENOMEM, the one other error poll can give here: try again shortly.
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
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
                    sink.tail.forward(&pending[pending.len() - n..]);
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
