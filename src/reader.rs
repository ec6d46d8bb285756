//! The stdout side of an incarnation, read on demand by the callers that wait for it.
//!
//! There is no stdout thread: a caller that needs a line (or a JSON-RPC reply, or the
//! ready line) becomes the *leader*, polls the pipe with its own timeout and reads what is
//! there; the lines it splits off go to a shared queue (or, through the [`StdoutFilter`],
//! to the JSON-RPC request that waits for them), and every waiter is woken to look. Other
//! waiters follow on a condition variable and take the lead when it is free. So a reply
//! reaches its caller with no thread hand-off, and only one thread ever reads the pipe.
//!
//! Memory stays bounded: at most `limits.queue_lines` lines wait in the queue (plain
//! lines are not split off the read buffer beyond that: the child blocks on its pipe
//! instead, nothing is lost), the read buffer holds at most one read (64 KiB) plus one
//! line piece, and a line longer than `limits.max_line_bytes` is cut into pieces (the
//! splitting rule is [`crate::linebuf`]'s). With a
//! filter (JSON-RPC), lines the filter passes on (notifications) drop the oldest queued
//! one when the queue is full, counted, so replies keep flowing.

use crate::cancel::{cancelled, CancelToken, Until, CANCEL_POLL_SLICE};
use crate::linebuf::LineBuf;
use crate::metrics::Counters;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Takes stdout lines before they reach the incarnation's queue (the JSON-RPC dispatcher).
pub(crate) trait StdoutFilter: Send + Sync {
    /// Return `Some(line)` to queue it for `read_line`, `None` when it was consumed.
    fn filter(&self, line: Vec<u8>) -> Option<Vec<u8>>;
    /// stdout reached EOF: fail whatever still waits for a reply.
    fn closed(&self);
    /// Cut the next message off `buf`, and whether it is a piece of a cut line (default: a
    /// line, as [`LineBuf::next_piece`]); the `lsp` framing reads `Content-Length` headers
    /// instead (its messages are never pieces).
    fn next_message(
        &self,
        buf: &mut LineBuf,
        max: usize,
        split: &AtomicU64,
    ) -> Option<(Vec<u8>, bool)> {
        buf.next_piece(max, split)
    }
}

/// Takes stdout as it comes, not in lines: each read is one queued chunk (the `prompt`
/// framing, whose prompt ends no line). A chunk is at most `limits.max_line_bytes`.
pub(crate) struct Chunks;

impl StdoutFilter for Chunks {
    fn filter(&self, chunk: Vec<u8>) -> Option<Vec<u8>> {
        Some(chunk)
    }

    fn closed(&self) {}

    fn next_message(
        &self,
        buf: &mut LineBuf,
        max: usize,
        _split: &AtomicU64,
    ) -> Option<(Vec<u8>, bool)> {
        let pending = buf.pending();
        if pending.is_empty() {
            return None;
        }
        let chunk = pending[..pending.len().min(max.max(1))].to_vec();
        buf.consume(chunk.len());
        Some((chunk, false))
    }
}

/// Longest a caller spins (non-blocking reads about every microsecond) for a reply before
/// it sleeps in `poll`. It spins only while recent replies on that instance came within
/// this budget (a miss doubles the number of waits that skip the spin, up to 1,024), at
/// most one caller fewer than the CPUs the process may use spins at a time (none on one
/// CPU), and nobody spins while more callers wait for replies than that (the CPUs are
/// then busy with callers and children, and a spin takes one from a child). So a caller
/// burns at most this much CPU per call, and far less on average when replies are slow.
pub const SPIN_BUDGET: std::time::Duration = std::time::Duration::from_micros(50);
/// Pause instructions between two reads of a spin (about a microsecond).
const SPIN_PAUSES: u32 = 64;
/// After a spin that missed, the waits that skip the spin double, up to this many.
const SPIN_MAX_BACKOFF: u32 = 1024;

/// Callers spinning now, process-wide.
static SPINNING: AtomicUsize = AtomicUsize::new(0);
/// Callers waiting for bytes now (spinning or in `poll`), process-wide.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Counted in [`WAITING`] while it lives.
struct Waiting;

impl Waiting {
    fn enter() -> Waiting {
        WAITING.fetch_add(1, Relaxed);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Relaxed);
    }
}

/// Callers that may spin at once: one fewer than the CPUs this process may use (so the
/// children always keep a CPU; none on one CPU, where a spin would only delay the child).
pub fn spin_slots() -> usize {
    static SLOTS: OnceLock<usize> = OnceLock::new();
    *SLOTS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) - 1)
}

/// One of the [`spin_slots`], held while spinning (also by the completion queue's spins,
/// so that all spins of the process share the spare CPUs).
pub(crate) struct SpinSlot;

impl SpinSlot {
    /// A slot, unless all are taken or more callers wait than there are slots: then the
    /// CPUs are busy with callers and children, and a spin would take one from a child.
    pub(crate) fn take() -> Option<SpinSlot> {
        let max = spin_slots();
        if WAITING.load(Relaxed) > max {
            return None;
        }
        SPINNING
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| SpinSlot)
    }
}

impl Drop for SpinSlot {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Relaxed);
    }
}

/// What the leader learnt of the reply timing (atomics: read and written by the leader
/// only, so relaxed loads and stores suffice).
#[derive(Default)]
struct Adapt {
    calls: AtomicU32,
    /// The last read-first found bytes.
    read_first: AtomicBool,
    /// Waits left that skip the spin.
    spin_skip: AtomicU32,
    /// The skip after the last miss (doubled each miss, 0 after a hit).
    spin_backoff: AtomicU32,
}

/// What one fetch from the pipe gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetched {
    /// Nothing yet (would block, interrupted, or the deadline passed).
    Nothing,
    /// Bytes were read into the buffer.
    Data,
    /// EOF or a read error: stdout is over.
    End,
    /// `poll` said readable but the read found nothing: look again.
    Again,
}

/// One non-blocking read into `lines`.
fn read_into(lines: &mut LineBuf, src: &File) -> Fetched {
    match lines.fill_from(src) {
        Ok(0) => Fetched::End,
        Ok(_) => Fetched::Data,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) =>
        {
            Fetched::Nothing
        }
        Err(_) => Fetched::End,
    }
}

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    /// The deadline passed.
    Timeout,
    /// stdout is closed and drained.
    Eof,
    /// The wait's cancel token was triggered.
    Cancelled,
}

/// What the waiters share, under one lock.
pub(crate) struct OutState {
    /// Someone is polling or reading the pipe.
    leader: bool,
    lines: LineBuf,
    /// Lines for `read_line`.
    pub queue: VecDeque<Vec<u8>>,
    /// Lines ever pushed onto `queue` (so the front one is number `pushed - queue.len()`).
    pushed: u64,
    /// Numbers of the queued lines that are pieces of a cut line (more of it follows).
    cut: VecDeque<u64>,
    eof: bool,
    /// Waiting for this ready line; start-up output until it is seen.
    ready_line: Option<Vec<u8>>,
}

impl OutState {
    /// True once the ready line was seen (or when there is none).
    pub fn ready(&self) -> bool {
        self.ready_line.is_none()
    }

    /// Pop the next queued line, and whether it is a piece of a line longer than
    /// `limits.max_line_bytes` that goes on in the next queued line.
    pub fn pop_piece(&mut self) -> Option<(Vec<u8>, bool)> {
        let number = self.pushed - self.queue.len() as u64;
        let line = self.queue.pop_front()?;
        self.forget_cut_before(number);
        let continues = self.cut.front() == Some(&number);
        if continues {
            self.cut.pop_front();
        }
        Some((line, continues))
    }

    /// Drop the cut marks of lines no longer queued (popped, dropped, cleared).
    fn forget_cut_before(&mut self, number: u64) {
        while self.cut.front().is_some_and(|&n| n < number) {
            self.cut.pop_front();
        }
    }
}

/// The parent's end of a child's stdout.
pub(crate) struct StdoutReader {
    file: File,
    /// Shared (`Arc`) with the wakers of cancel tokens, which take the lock and notify.
    st: Arc<Mutex<OutState>>,
    cv: Arc<Condvar>,
    max_line: usize,
    cap: usize,
    filter: Option<Arc<dyn StdoutFilter>>,
    counters: Arc<Counters>,
    /// How replies came lately (used by the leader only).
    adapt: Adapt,
    /// An fd that also wakes the leader's `poll` (readable: drained, and the waiters look
    /// again): the stderr drainer's signal in the `prompt` framing.
    wake: Option<RawFd>,
    /// Mirrors of `OutState::eof` and `OutState::ready()`, readable without the lock
    /// (routing checks them on every pick).
    eof_seen: AtomicBool,
    ready_seen: AtomicBool,
    /// Some bytes were read (start-up output included).
    wrote: AtomicBool,
}

impl StdoutReader {
    pub fn new(
        file: File,
        max_line: usize,
        cap: usize,
        ready_line: Option<Vec<u8>>,
        filter: Option<Arc<dyn StdoutFilter>>,
        counters: Arc<Counters>,
        wake: Option<RawFd>,
    ) -> StdoutReader {
        // SAFETY: fcntl on an fd we own; only the leader reads it, after poll.
        unsafe {
            let fd = file.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let ready_now = ready_line.is_none();
        StdoutReader {
            file,
            st: Arc::new(Mutex::new(OutState {
                leader: false,
                lines: LineBuf::default(),
                queue: VecDeque::new(),
                pushed: 0,
                cut: VecDeque::new(),
                eof: false,
                ready_line,
            })),
            cv: Arc::new(Condvar::new()),
            max_line,
            cap,
            filter,
            counters,
            adapt: Adapt::default(),
            wake,
            eof_seen: AtomicBool::new(false),
            ready_seen: AtomicBool::new(ready_now),
            wrote: AtomicBool::new(false),
        }
    }

    /// `limits.max_line_bytes`: longer lines are cut into pieces of this size.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// True once stdout reached EOF.
    pub fn eof(&self) -> bool {
        self.eof_seen.load(Acquire)
    }

    /// True once the ready line was seen (or when there is none).
    pub fn ready(&self) -> bool {
        self.ready_seen.load(Acquire)
    }

    /// True once the tool has written anything on stdout.
    pub fn wrote(&self) -> bool {
        self.wrote.load(Relaxed)
    }

    /// Wait until `check` returns something, reading the pipe as needed, until
    /// `deadline` or until `cancel` is triggered. `check` runs under the state lock after
    /// every step (so what is already there is taken even when cancelled).
    pub fn wait_for<T>(
        &self,
        deadline: Instant,
        cancel: Option<&CancelToken>,
        mut check: impl FnMut(&mut OutState) -> Option<T>,
    ) -> Result<T, WaitEnd> {
        // With a token: the leader is woken through the token's eventfd in its poll set
        // (made before the first look at the token); a follower through a waker on the
        // condvar, registered the first time it is about to wait (so a caller that never
        // follows, the common case, registers nothing).
        let mut registered = None;
        let cancel_fd = cancel.map(CancelToken::poll_fd);
        let mut st = self.st.lock();
        loop {
            if let Some(v) = check(&mut st) {
                // What `check` took may have made room for a leader waiting on a full
                // queue (no system call when nobody waits).
                self.cv.notify_all();
                return Ok(v);
            }
            if st.eof {
                return Err(WaitEnd::Eof);
            }
            if cancelled(cancel) {
                return Err(WaitEnd::Cancelled);
            }
            if !st.leader {
                st.leader = true;
                let got = self.lead(&mut st, Some(deadline), cancel_fd);
                st.leader = false;
                self.cv.notify_all();
                if got || cancelled(cancel) {
                    continue;
                }
                if Instant::now() >= deadline {
                    return check(&mut st).ok_or(WaitEnd::Timeout);
                }
                // Nothing to read for now (the queue is full): wait for a change.
            }
            if let (Some(c), None) = (cancel, &registered) {
                let (st, cv) = (Arc::clone(&self.st), Arc::clone(&self.cv));
                registered = Some(c.on_cancel(Arc::new(move || {
                    drop(st.lock());
                    cv.notify_all();
                })));
                // Cancelled before the waker was there: nobody would wake this wait.
                continue;
            }
            // A token without an eventfd is looked at every slice.
            let until = match cancel_fd {
                Some(None) => deadline.min(Instant::now() + CANCEL_POLL_SLICE),
                _ => deadline,
            };
            if self.cv.wait_until(&mut st, until).timed_out() {
                if until < deadline {
                    continue;
                }
                return check(&mut st).ok_or(if st.eof {
                    WaitEnd::Eof
                } else {
                    WaitEnd::Timeout
                });
            }
        }
    }

    /// Take in whatever is already in the pipe without waiting (no-op while another
    /// thread leads).
    pub fn take_available(&self) -> MutexGuard<'_, OutState> {
        let mut st = self.st.lock();
        if !st.leader && self.lead(&mut st, None, None) {
            self.cv.notify_all();
        }
        st
    }

    /// As leader: split buffered bytes; if that gives nothing, fetch more from the pipe:
    /// without a deadline one non-blocking read, under the lock (it cannot block); with
    /// one, see [`StdoutReader::fetch`], with the lock released (`cancel` is `Some(fd)`
    /// with a token, `Some(None)` when its eventfd could not be made). Returns true when
    /// something happened (lines, EOF).
    fn lead(
        &self,
        st: &mut MutexGuard<'_, OutState>,
        deadline: Option<Instant>,
        cancel: Option<Option<i32>>,
    ) -> bool {
        if self.split(st) {
            return true;
        }
        if !self.room(st) {
            return false; // the queue is full: nothing more is read until it drains
        }
        let got = match deadline {
            None => read_into(&mut st.lines, &self.file),
            Some(d) => {
                // Only the leader touches the read buffer, so it can be filled unlocked.
                let mut lines = std::mem::take(&mut st.lines);
                let got = MutexGuard::unlocked(st, || self.fetch(&mut lines, d, cancel));
                st.lines = lines;
                got
            }
        };
        match got {
            Fetched::Nothing => false,
            Fetched::Again => true,
            Fetched::Data => {
                if !self.wrote.load(Relaxed) {
                    self.wrote.store(true, Relaxed);
                }
                self.split(st);
                true
            }
            Fetched::End => {
                self.finish(st);
                true
            }
        }
    }

    /// Wait for bytes until `deadline` and read them, in as few system calls as the reply
    /// allows: a read first when replies were there at once lately (then no `poll`); a
    /// bounded spin of non-blocking reads when replies came within [`SPIN_BUDGET`] lately
    /// and a spin slot is free ([`spin_slots`]), so an unpinned caller need not sleep and
    /// pay a CPU wake-up; else `poll` (also on the cancel token's eventfd), then one read.
    fn fetch(
        &self,
        lines: &mut LineBuf,
        deadline: Instant,
        cancel: Option<Option<i32>>,
    ) -> Fetched {
        let a = &self.adapt;
        let calls = a.calls.fetch_add(1, Relaxed);
        // 1. Read first: kept while it finds the reply, retried every 16th wait.
        if a.read_first.load(Relaxed) || calls.is_multiple_of(16) {
            let got = read_into(lines, &self.file);
            a.read_first.store(got != Fetched::Nothing, Relaxed);
            if got != Fetched::Nothing {
                return got;
            }
        }
        // Counted only where a spin could happen (a process-wide atomic on every wait).
        let _waiting = (spin_slots() > 0).then(Waiting::enter);
        // 2. Spin, when it paid off lately (after a miss it is skipped for a growing
        // number of waits, up to 1024) and a slot is free.
        let skip = a.spin_skip.load(Relaxed);
        if skip > 0 {
            a.spin_skip.store(skip - 1, Relaxed);
        } else if let Some(_slot) = SpinSlot::take() {
            let spin_end = (Instant::now() + SPIN_BUDGET).min(deadline);
            loop {
                for _ in 0..SPIN_PAUSES {
                    std::hint::spin_loop();
                }
                let got = read_into(lines, &self.file);
                if got != Fetched::Nothing {
                    a.spin_backoff.store(0, Relaxed);
                    return got;
                }
                if Instant::now() >= spin_end {
                    break;
                }
            }
            let b = (a.spin_backoff.load(Relaxed) * 2).clamp(1, SPIN_MAX_BACKOFF);
            a.spin_backoff.store(b, Relaxed);
            a.spin_skip.store(b, Relaxed);
        }
        // 3. Sleep in poll, then read.
        if !self.poll_until(deadline, cancel) {
            return Fetched::Nothing;
        }
        match read_into(lines, &self.file) {
            // Readable but nothing read (interrupted): the leader looks again.
            Fetched::Nothing => Fetched::Again,
            got => got,
        }
    }

    fn room(&self, st: &OutState) -> bool {
        self.filter.is_some() || st.queue.len() < self.cap
    }

    /// poll(2) the pipe until readable (or closed) or `deadline`; with a cancel token
    /// (see [`StdoutReader::lead`]) also until its eventfd is readable (false then).
    fn poll_until(&self, deadline: Instant, cancel: Option<Option<i32>>) -> bool {
        loop {
            let mut left = deadline.saturating_duration_since(Instant::now());
            if cancel == Some(None) {
                left = left.min(CANCEL_POLL_SLICE); // no eventfd: look at the token often
            }
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // Round up so a wait of 0.4 ms is not a busy zero-timeout poll.
            let ms = if ms == 0 && !left.is_zero() { 1 } else { ms };
            let pipe = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // [pipe, cancel, wake]; a negative fd is skipped.
            let mut p = [pipe, pipe, pipe];
            p[1].fd = cancel.flatten().unwrap_or(-1);
            p[2].fd = self.wake.unwrap_or(-1);
            let n = if self.wake.is_some() { 3 } else { 2 };
            // SAFETY: poll on `n` initialised pollfds.
            let r = unsafe { libc::poll(p.as_mut_ptr(), n, ms) };
            if r > 0 {
                if p[2].revents != 0 {
                    drain_wake(p[2].fd);
                    return true; // the waiters look again
                }
                return p[0].revents != 0;
            }
            if r == 0 {
                return false;
            }
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return true; // let read() report it
            }
        }
    }

    /// EOF: the unterminated rest is a last line; the filter fails what still waits.
    fn finish(&self, st: &mut OutState) {
        if let Some(rest) = st.lines.rest() {
            self.emit(st, rest);
        }
        st.eof = true;
        self.eof_seen.store(true, Release);
        if let Some(f) = &self.filter {
            f.closed();
        }
    }

    /// Split complete lines (and over-long pieces) off the buffer while there is room.
    fn split(&self, st: &mut OutState) -> bool {
        let mut any = false;
        while self.room(st) {
            let split = &self.counters.lines_split;
            let next = match &self.filter {
                Some(f) => f.next_message(&mut st.lines, self.max_line, split),
                None => st.lines.next_piece(self.max_line, split),
            };
            let Some((line, continues)) = next else {
                break;
            };
            self.emit_piece(st, line, continues);
            any = true;
        }
        any
    }

    fn emit(&self, st: &mut OutState, line: Vec<u8>) {
        self.emit_piece(st, line, false);
    }

    /// Queue (or filter) one line; `continues` marks a piece of a cut line.
    fn emit_piece(&self, st: &mut OutState, line: Vec<u8>, continues: bool) {
        self.counters.lines_received.fetch_add(1, Relaxed);
        if let Some(want) = &st.ready_line {
            self.counters.startup_lines.fetch_add(1, Relaxed);
            if line == *want {
                st.ready_line = None;
                self.ready_seen.store(true, Release);
            }
            return;
        }
        let line = match &self.filter {
            Some(f) => match f.filter(line) {
                Some(l) => l,
                None => return,
            },
            None => line,
        };
        if st.queue.len() >= self.cap {
            st.queue.pop_front();
            self.counters.stdout_dropped.fetch_add(1, Relaxed);
        }
        st.queue.push_back(line);
        if continues {
            st.cut.push_back(st.pushed);
        }
        st.pushed += 1;
        let front = st.pushed - st.queue.len() as u64;
        st.forget_cut_before(front);
    }
}

/// Reset eventfd `fd` (made readable by a waker) to not readable.
fn drain_wake(fd: RawFd) {
    let mut count: u64 = 0;
    // SAFETY: an 8-byte read into a live u64 from a non-blocking eventfd.
    unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
}

/// How long [`read_any`] polls one set of readers before it looks again (restarted
/// instances, lines another reader queued).
const READ_ANY_SLICE: Duration = Duration::from_millis(50);

/// The first line from any of several stdouts, with the index `look` gave its reader,
/// until `until`. `look` lists the readers now (it runs again every
/// [`READ_ANY_SLICE`], so restarted instances are seen; its error ends the wait);
/// `start` rotates where the search begins, so no reader starves the others. A wait that
/// ends without a line is `end`'s error.
pub(crate) fn read_any<S, E>(
    until: Until<'_>,
    start: &AtomicUsize,
    mut look: impl FnMut() -> Result<Vec<(usize, S)>, E>,
    end: impl Fn(WaitEnd) -> E,
) -> Result<(usize, Vec<u8>), E>
where
    S: std::ops::Deref,
    S::Target: AsRef<StdoutReader>,
{
    let Until {
        deadline, cancel, ..
    } = until;
    // With a token, its eventfd joins the poll set (made before the first look).
    let cancel_fd = cancel.map(CancelToken::poll_fd);
    loop {
        let readers = look()?;
        if cancelled(cancel) {
            return Err(end(WaitEnd::Cancelled));
        }
        // Lines already queued, or already in a pipe, go first.
        let n = readers.len().max(1);
        let first = start.fetch_add(1, Relaxed) % n;
        for k in 0..readers.len() {
            let (i, r) = &readers[(first + k) % n];
            if let Some(line) = (**r).as_ref().take_available().queue.pop_front() {
                return Ok((*i, line));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(end(WaitEnd::Timeout));
        }
        let slice = match cancel_fd {
            Some(None) => CANCEL_POLL_SLICE, // no eventfd: look at the token often
            _ => READ_ANY_SLICE,
        };
        let open = readers
            .iter()
            .map(|(_, r)| (**r).as_ref())
            .filter(|r| !r.eof());
        poll_any(open, (deadline - now).min(slice), cancel_fd.flatten());
    }
}

/// Poll the pipes of `readers` (and `cancel_fd`) until one is readable or `slice` passes.
fn poll_any<'a>(
    readers: impl Iterator<Item = &'a StdoutReader>,
    slice: Duration,
    cancel_fd: Option<i32>,
) {
    let mut fds: Vec<libc::pollfd> = readers
        .map(|r| r.file.as_raw_fd())
        .chain(cancel_fd)
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if fds.is_empty() {
        std::thread::sleep(slice);
        return;
    }
    // SAFETY: poll on valid pollfds of pipes the caller's readers keep open for the call.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            slice.as_millis().max(1) as i32,
        )
    };
}
