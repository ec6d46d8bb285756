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
//! - stderr ([`crate::stderr`], which also writes the exit record): lines go to a bounded
//!   queue that drops its oldest line when full (counted), and the last
//!   `limits.stderr_tail_lines` are kept for diagnosis.
//! - `start` (a submodule) puts an incarnation together; this file holds what it does.
//! - A line longer than `limits.max_line_bytes` is cut into pieces of that size (counted).

use crate::cancel::CancelToken;
use crate::dry::Child;
use crate::error::{DeathInfo, Error, ExitInfo, Result};
use crate::metrics::Counters;
use crate::reader::{OutState, StdoutReader, WaitEnd};
use crate::rpc::{encode_notification, Dispatcher};
use crate::session::Session;
use crate::stderr::{self, Tail};
use crate::util::LogPid;
use crate::writer::{SendError, StdinWriter};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;
use parking_lot::MutexGuard;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod start;

/// Life-cycle state of an instance (of its current incarnation), as shown in status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The child process, or for a dry-run pool the responder that stands in for it.
    process: Child,
    stdin: Arc<StdinWriter>,
    stdout: StdoutReader,
    /// The JSON-RPC dispatcher on stdout (`jsonrpc` only).
    rpc: Option<Arc<Dispatcher>>,
    queue_lines: usize,
    stderr_rx: Receiver<Vec<u8>>,
    stderr_tail: Arc<Tail>,
    counters: Arc<Counters>,
    stopped: AtomicBool,
    retired: AtomicBool,
    /// Set when toolpool ends the process on purpose: its exit is then not a warning.
    expected: Arc<AtomicBool>,
    /// The stderr drainer, which also reaps the process (the stdin writer, if it was
    /// started, is joined with it: [`StdinWriter::take_thread`]).
    drainer: Mutex<Option<JoinHandle<()>>>,
    /// Disconnected once the drainer has ended: stderr read to EOF, the end reported.
    drained: Receiver<()>,
    /// `lsp` framing on stdin (Content-Length headers) instead of lines.
    lsp: bool,
    /// The handshake has not finished yet: not ready for work.
    handshake_pending: AtomicBool,
    /// The reply to the first handshake request (JSON text).
    handshake_reply: OnceLock<String>,
    /// The interactive session (`prompt` framing only).
    session: Option<Mutex<Session>>,
}

impl Incarnation {
    /// Wait until the ready line was seen (or there is none), up to `deadline`. Reads
    /// stdout meanwhile; lines before the ready line are start-up output.
    /// A triggered `cancel` ends the wait with [`Error::Cancelled`].
    pub fn wait_ready(
        &self,
        deadline: Instant,
        ready_line: &str,
        cancel: Option<&CancelToken>,
    ) -> Result<()> {
        match self
            .stdout
            .wait_for(deadline, cancel, |st| st.ready().then_some(()))
        {
            Ok(()) => {
                log::info!(
                    target: "toolpool",
                    "ready tool={} instance={} pid={} ms={}",
                    self.tool,
                    self.index,
                    self.log_pid(),
                    self.process.started().elapsed().as_millis()
                );
                Ok(())
            }
            Err(WaitEnd::Cancelled) => Err(Error::Cancelled(format!(
                "the ready line of instance {} of '{}'",
                self.index, self.tool
            ))),
            Err(end) => Err(Error::Spawn(format!(
                "tool '{}' instance {} {}{}",
                self.tool,
                self.index,
                match end {
                    WaitEnd::Eof => format!("closed stdout before the ready line '{ready_line}'"),
                    WaitEnd::Timeout | WaitEnd::Cancelled =>
                        format!("did not print its ready line '{ready_line}' in time"),
                },
                self.tail_suffix()
            ))),
        }
    }

    /// `; last stderr: ...` when there are stderr lines (for error messages).
    pub fn stderr_suffix(&self) -> String {
        self.tail_suffix()
    }

    fn tail_suffix(&self) -> String {
        let tail = self.stderr_tail();
        if tail.is_empty() {
            String::new()
        } else {
            format!("; last stderr: {}", tail.join(" | "))
        }
    }

    /// True once the ready line was seen (or when there is none) and the handshake, if
    /// any, is done.
    pub fn is_ready(&self) -> bool {
        self.stdout.ready() && !self.handshake_pending.load(Relaxed)
    }

    /// The handshake is done (`reply`: the first request's reply): ready for work.
    pub fn finish_handshake(&self, reply: Option<String>) {
        if let Some(r) = reply {
            let _ = self.handshake_reply.set(r);
        }
        self.handshake_pending.store(false, Relaxed);
    }

    /// The reply to the first handshake request (JSON text), once the handshake is done.
    pub fn handshake_reply(&self) -> Option<&str> {
        self.handshake_reply.get().map(String::as_str)
    }

    /// Queue one encoded JSON-RPC message (no newline in it) for stdin, framed by the
    /// protocol: a line for `jsonrpc`, `Content-Length` headers for `lsp`.
    pub fn send_message(&self, body: &[u8]) -> Result<()> {
        if !self.lsp {
            return self.send(body);
        }
        if self.stdin.is_broken() || !self.process.is_alive() {
            return Err(self.death(Duration::from_millis(50)));
        }
        self.queue(crate::lsp::frame(body))
    }

    /// Send a JSON-RPC notification (`{"method": ..., "params": ...}`, no id).
    pub fn notify(&self, payload: &str) -> Result<()> {
        if self.rpc.is_none() {
            return Err(Error::InvalidArgument(format!(
                "notify on instance {} of '{}': notifications need the jsonrpc or lsp protocol",
                self.index, self.tool
            )));
        }
        self.send_message(&encode_notification(payload)?)
    }

    /// The state shown in status. A killed incarnation is `Dead` from the kill on, not
    /// only once it has been reaped: it will never serve again.
    pub fn state(&self) -> State {
        if self.stopped.load(Relaxed) {
            State::Stopped
        } else if self.retired.load(Relaxed) || !self.process.is_alive() || self.stdout.eof() {
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
        let _ = self.drained.recv_timeout(wait);
        Error::InstanceDead(DeathInfo {
            tool: self.tool.clone(),
            index: self.index,
            exit,
            stderr_tail: self.stderr_tail(),
        })
    }

    /// Queue one line (the newline is appended here) for the child's stdin.
    pub fn send(&self, line: &[u8]) -> Result<()> {
        self.send_lines(&[line])
    }

    /// Queue several lines (each gets its newline) for the child's stdin, in one write.
    pub fn send_lines(&self, lines: &[&[u8]]) -> Result<()> {
        if lines.iter().any(|l| l.contains(&b'\n')) {
            return Err(Error::InvalidArgument(format!(
                "line for instance {} of '{}' contains a newline",
                self.index, self.tool
            )));
        }
        if self.stdin.is_broken() || !self.process.is_alive() {
            return Err(self.death(Duration::from_millis(50)));
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l);
            buf.push(b'\n');
        }
        self.queue(buf)
    }

    /// Queue `buf` as it is for stdin.
    fn queue(&self, buf: Vec<u8>) -> Result<()> {
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

    /// The next stdout line, waiting up to `timeout` (or until `cancel`).
    pub fn read_line(&self, timeout: Duration, cancel: Option<&CancelToken>) -> Result<Vec<u8>> {
        self.read_piece(crate::util::deadline_in(timeout), timeout, cancel)
            .map(|(line, _)| line)
    }

    /// [`Incarnation::read_line`] until `deadline` (`timeout` is what a timeout error
    /// names), and whether the line is a piece of a line longer than
    /// `limits.max_line_bytes` that goes on in the next one.
    pub fn read_piece(
        &self,
        deadline: Instant,
        timeout: Duration,
        cancel: Option<&CancelToken>,
    ) -> Result<(Vec<u8>, bool)> {
        match self.stdout.wait_for(deadline, cancel, |st| st.pop_piece()) {
            Ok(piece) => Ok(piece),
            Err(WaitEnd::Timeout) => Err(Error::timeout(self.stdout_what(), timeout)),
            Err(WaitEnd::Cancelled) => Err(Error::Cancelled(self.stdout_what())),
            Err(WaitEnd::Eof) => Err(self.death(Duration::from_millis(200))),
        }
    }

    fn stdout_what(&self) -> String {
        format!("stdout of instance {} of '{}'", self.index, self.tool)
    }

    /// True once it has written anything on stdout (start-up output included).
    pub fn wrote_stdout(&self) -> bool {
        self.stdout.wrote()
    }

    /// `limits.max_line_bytes` of its stdout.
    pub fn max_line_bytes(&self) -> usize {
        self.stdout.max_line()
    }

    /// Drop (and count) stdout lines nobody asked for, taking in what is in the pipe now
    /// without waiting.
    pub fn drop_unsolicited(&self) {
        let mut st = self.stdout.take_available();
        if !st.queue.is_empty() {
            self.counters
                .unsolicited
                .fetch_add(st.queue.len() as u64, Relaxed);
            st.queue.clear();
        }
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
        self.stderr_tail.lines()
    }

    /// Its stderr tail: what came when, for a request that watches stderr.
    pub fn stderr(&self) -> &Tail {
        &self.stderr_tail
    }

    /// Close the child's stdin (after the queued lines are written).
    pub fn close_stdin(&self) {
        self.stdin.close();
    }

    /// The one kill path: take it out of service (routing skips it from now on) and
    /// SIGKILL its process group. Never blocks; the stderr drainer reaps it.
    pub fn kill(&self) {
        self.expected.store(true, Relaxed);
        self.retired.store(true, Relaxed);
        self.process.signal(libc::SIGKILL);
    }

    /// Stopping on purpose: status shows it `stopped`, not `dead`; stdin is closed (after
    /// the queued lines), which many tools take as the sign to exit.
    pub fn begin_stop(&self) {
        self.expected.store(true, Relaxed);
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

    /// The pid (= process group id); for a dry incarnation a negative id (no process).
    pub fn pid(&self) -> i32 {
        self.process.pid()
    }

    /// The OS pid; `None` for a dry incarnation.
    pub fn os_pid(&self) -> Option<i32> {
        self.process.os_pid()
    }

    /// The pid as log records write it (`null` for a dry incarnation).
    pub fn log_pid(&self) -> LogPid {
        LogPid(self.process.os_pid())
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

    /// Memory and CPU of its process group, from `/proc` (`None` once it has been reaped).
    pub(crate) fn usage(&self) -> Option<crate::procstat::Usage> {
        // A dry incarnation has no process (and its id is no pid).
        let pid = self.process.os_pid()?;
        if !self.process.is_alive() {
            return None;
        }
        crate::procstat::group_usage(pid)
    }

    /// The interactive session (`prompt` framing only).
    pub fn session(&self) -> Option<&Mutex<Session>> {
        self.session.as_ref()
    }

    /// Count `n` lines of start-up output (the banner before a first prompt).
    pub fn count_startup_lines(&self, n: u64) {
        self.counters.startup_lines.fetch_add(n, Relaxed);
    }

    /// Count `n` pieces of output that came outside any request.
    pub fn count_unsolicited(&self, n: u64) {
        self.counters.unsolicited.fetch_add(n, Relaxed);
    }

    /// Interrupt the tool as Ctrl-C on a terminal does: SIGINT to its process group.
    pub fn interrupt(&self) {
        self.process.signal(libc::SIGINT);
    }

    /// The JSON-RPC dispatcher (`jsonrpc` only).
    pub fn rpc(&self) -> Option<&Arc<Dispatcher>> {
        self.rpc.as_ref()
    }

    /// Wait on stdout until `check` returns something (see [`StdoutReader::wait_for`]).
    pub fn wait_stdout<T>(
        &self,
        deadline: Instant,
        cancel: Option<&CancelToken>,
        check: impl FnMut(&mut OutState) -> Option<T>,
    ) -> std::result::Result<T, WaitEnd> {
        self.stdout.wait_for(deadline, cancel, check)
    }

    /// Take in what is in the stdout pipe now, without waiting (bounded by the queue).
    pub fn pull_output(&self) -> MutexGuard<'_, OutState> {
        self.stdout.take_available()
    }

    /// Join the threads once the process is gone (see [`stderr::join_streams`]: a
    /// descendant that escaped the group and holds a pipe open delays it by at most
    /// [`stderr::STREAM_JOIN_WAIT`]).
    pub fn join(&self) {
        self.process.join_waiter();
        let drainer = self.drainer.lock().take();
        stderr::join_streams(drainer, &self.drained, self.stdin.take_thread());
    }
}

impl Drop for Incarnation {
    /// A safety net: an incarnation dropped without `stop` still takes its process group
    /// down (the stderr drainer reaps it).
    fn drop(&mut self) {
        self.process.signal(libc::SIGKILL);
    }
}

impl AsRef<StdoutReader> for Incarnation {
    /// Its stdout, for waits over several incarnations at once (`reader::read_any`).
    fn as_ref(&self) -> &StdoutReader {
        &self.stdout
    }
}
