//! The stderr side of an incarnation: the drainer thread that always reads stderr (into
//! a bounded queue that drops its oldest line when full, counted, and a tail of the last
//! `limits.stderr_tail_lines` lines for diagnosis, optionally logged), and the exit
//! record of a process, which shows that tail.

use crate::error::ExitInfo;
use crate::linebuf::LineBuf;
use crate::metrics::Counters;
use crate::process;
use crate::spec::{StderrMode, ToolSpec};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest stderr line kept in the tail shown by `status` (longer ones are shortened).
const TAIL_LINE_CHARS: usize = 500;

/// Start the stderr drainer of instance `index` (process `pid`) of `spec`: it reads
/// `stderr` to its end, queues each line on `tx` (keeping at most `limits.queue_lines`,
/// dropping the oldest through `drop_rx`), keeps the tail, and drops `done` when it ends.
pub(crate) fn spawn_drainer(
    spec: &ToolSpec,
    (index, pid): (usize, i32),
    stderr: File,
    counters: Arc<Counters>,
    (tx, drop_rx): (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    tail: Arc<Mutex<VecDeque<String>>>,
    done: Sender<()>,
) -> JoinHandle<()> {
    let q = spec.limits.queue_lines;
    let max = spec.limits.max_line_bytes;
    let keep = spec.limits.stderr_tail_lines;
    let log_as = (spec.stderr == StderrMode::Log)
        .then(|| format!("tool={} instance={index} pid={pid}", spec.id));
    process::spawn_small_thread(format!("toolpool-err-{pid}"), move || {
        let _done = done;
        stderr_loop(
            stderr,
            max,
            &counters,
            (tx, q),
            drop_rx,
            (&tail, keep),
            log_as.as_deref(),
        )
    })
}

/// `on_exit` behind the exit record: when the process of `who` (`tool=… instance=…`,
/// its pid read from `pid` then) ends, drop `dead` (which wakes the writer of a dead
/// child), write the record (waiting for `stderr_done` so the last stderr lines are in
/// it), then run `on_exit`.
pub(crate) fn exit_hook(
    who: String,
    pid: Arc<AtomicI32>,
    expected: Arc<AtomicBool>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_done: Receiver<()>,
    dead: Sender<()>,
    on_exit: Box<dyn FnOnce(ExitInfo) + Send>,
) -> Box<dyn FnOnce(ExitInfo) + Send> {
    Box::new(move |e| {
        drop(dead); // wakes the writer of a dead child
        let who = format!("{who} pid={}", pid.load(Relaxed));
        log_exit(&who, e, &expected, &tail, &stderr_done);
        on_exit(e)
    })
}

/// Longest the exit record waits for the stderr drainer to reach EOF (a descendant that
/// left the group may hold stderr open).
pub const EXIT_LOG_STDERR_WAIT: Duration = Duration::from_millis(100);

/// The record of a process's end: a warning when nobody asked for it (with the last
/// stderr lines), debug otherwise. Runs on the waiter thread.
fn log_exit(
    who: &str,
    exit: ExitInfo,
    expected: &AtomicBool,
    tail: &Mutex<VecDeque<String>>,
    stderr_done: &Receiver<()>,
) {
    if expected.load(Relaxed) {
        log::debug!(target: "toolpool", "stopped {who} {}", exit_fields(exit));
        return;
    }
    if !log::log_enabled!(target: "toolpool", log::Level::Warn) {
        return;
    }
    let _ = stderr_done.recv_timeout(EXIT_LOG_STDERR_WAIT);
    let tail: Vec<String> = tail.lock().iter().cloned().collect();
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
    (tail, keep): (&Mutex<VecDeque<String>>, usize),
    log_as: Option<&str>,
) {
    let emit = |line: Vec<u8>| {
        counters.stderr_lines.fetch_add(1, Relaxed);
        push_tail(tail, keep, &line);
        if let Some(who) = log_as {
            log::info!(target: "toolpool::stderr", "stderr {who}: {}", String::from_utf8_lossy(&line));
        }
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
