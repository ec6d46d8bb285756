//! The stdin side of an incarnation: a bounded queue, a writer thread started when a line
//! first has to wait, and a fast path.
//!
//! `send` never blocks on the child. When nothing is queued and no write is under way,
//! the caller writes the line itself with one non-blocking `write` (which cannot raise
//! SIGPIPE: the host holds the pipe's read end too, see [`crate::pipe`]), which saves a
//! thread hand-off per line. Whatever does not fit in the pipe at once goes on the queue,
//! and the writer thread writes it, blocking on the child instead of the caller. Order is kept:
//! the fast path is taken only while `pending` (queued or being written) is zero, checked
//! under the lock that every write takes.

use crate::metrics::Counters;
use crate::pipe::StdinEnd;
use crossbeam_channel::{select, unbounded, Receiver, Sender, TryRecvError, TrySendError};
use parking_lot::Mutex;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes the writer gathers into one `write` when lines queue up.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Why a line could not be queued.
pub(crate) enum SendError {
    /// The queue is full: the child is not reading.
    Full,
    /// stdin is closed or broken (the child died or we closed it).
    Closed,
}

struct Shared {
    /// Most lines the queue holds (`limits.queue_lines`).
    cap: usize,
    /// The pipe; `None` once the writer has closed it. Every write holds this lock.
    file: Mutex<Option<StdinEnd>>,
    /// Lines queued or being written by the writer thread.
    pending: AtomicUsize,
    broken: AtomicBool,
    counters: Arc<Counters>,
}

/// The writer thread: started by the first line that has to wait (most lines are written
/// by the caller, so many incarnations never need one).
enum Thread {
    /// Not started yet: what it will take.
    NotStarted {
        rx: Receiver<Vec<u8>>,
        dead: Receiver<()>,
        name: String,
    },
    Running(JoinHandle<()>),
    /// Handed to [`StdinWriter::take_thread`].
    Taken,
}

/// The parent's end of a child's stdin.
pub(crate) struct StdinWriter {
    tx: Mutex<Option<Sender<Vec<u8>>>>,
    shared: Arc<Shared>,
    thread: Mutex<Thread>,
}

impl StdinWriter {
    /// Take over `stdin`. The writer thread starts with the first line that must be
    /// queued; it ends when the queue is closed and drained, or when `dead` fires, or on a
    /// write error.
    pub fn start(
        stdin: StdinEnd,
        queue_lines: usize,
        counters: Arc<Counters>,
        dead: Receiver<()>,
        name: String,
    ) -> StdinWriter {
        // SAFETY: fcntl on an fd we own. The child's end is a different open file
        // description, so it keeps blocking semantics.
        unsafe {
            let fd = stdin.file.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        // Allocated as it fills (blocks of 31 lines); bounded by `cap` in `send`.
        let (tx, rx) = unbounded::<Vec<u8>>();
        let shared = Arc::new(Shared {
            cap: queue_lines,
            file: Mutex::new(Some(stdin)),
            pending: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
            counters,
        });
        StdinWriter {
            tx: Mutex::new(Some(tx)),
            shared,
            thread: Mutex::new(Thread::NotStarted { rx, dead, name }),
        }
    }

    /// Start the writer thread if it has not started (called with the queue's lock held).
    fn ensure_thread(&self) {
        let mut t = self.thread.lock();
        *t = match std::mem::replace(&mut *t, Thread::Taken) {
            Thread::NotStarted { rx, dead, name } => {
                let s = Arc::clone(&self.shared);
                Thread::Running(crate::process::spawn_small_thread(name, move || {
                    write_loop(&s, rx, dead)
                }))
            }
            other => other,
        };
    }

    /// The writer thread, if it was started, for joining (once).
    pub fn take_thread(&self) -> Option<JoinHandle<()>> {
        let mut t = self.thread.lock();
        match std::mem::replace(&mut *t, Thread::Taken) {
            Thread::Running(h) => Some(h),
            other => {
                *t = other;
                None
            }
        }
    }

    /// True after a write failed (the child closed its stdin or died).
    pub fn is_broken(&self) -> bool {
        self.shared.broken.load(Relaxed)
    }

    /// Lines waiting to be written.
    pub fn queue_len(&self) -> usize {
        self.shared.pending.load(Relaxed)
    }

    /// Close the queue; the writer closes the pipe once the queued lines are written (with
    /// no writer thread nothing was ever queued, and the pipe is closed here).
    pub fn close(&self) {
        let mut tx = self.tx.lock();
        tx.take();
        if let Thread::NotStarted { .. } = &*self.thread.lock() {
            self.shared.file.lock().take();
        }
    }

    /// Write or queue `buf` (one line with its newline).
    pub fn send(&self, buf: Vec<u8>) -> Result<(), SendError> {
        let guard = self.tx.lock();
        let Some(tx) = guard.as_ref() else {
            return Err(SendError::Closed);
        };
        let s = &*self.shared;
        let enqueue = |buf: Vec<u8>| {
            if tx.len() >= s.cap {
                return Err(SendError::Full);
            }
            self.ensure_thread();
            s.pending.fetch_add(1, SeqCst);
            tx.try_send(buf).map_err(|e| {
                s.pending.fetch_sub(1, SeqCst);
                match e {
                    TrySendError::Full(_) => SendError::Full,
                    TrySendError::Disconnected(_) => SendError::Closed,
                }
            })
        };
        if s.pending.load(SeqCst) != 0 {
            return enqueue(buf);
        }
        let Some(mut file) = s.file.try_lock() else {
            return enqueue(buf); // the writer is busy: behind it
        };
        if s.pending.load(SeqCst) != 0 {
            return enqueue(buf);
        }
        let Some(f) = file.as_mut() else {
            return Err(SendError::Closed);
        };
        let mut buf = buf;
        match f.file.write(&buf) {
            Ok(n) if n == buf.len() => {
                s.counters.lines_sent.fetch_add(1, Relaxed);
                return Ok(());
            }
            Ok(n) => {
                buf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                s.broken.store(true, Relaxed);
                return Err(SendError::Closed);
            }
        }
        // The rest waits for the writer; queued while we still hold the file lock, so
        // nothing can overtake it.
        let queued = enqueue(buf);
        drop(file);
        queued
    }
}

/// How often a writer waiting for room in the pipe checks whether the child died: the
/// pipe has a reader as long as we hold its read end, so the death does not end the wait
/// by itself (no `EPIPE`).
const DEATH_CHECK_MS: i32 = 20;

/// Write all of `buf`, waiting for room with poll (the fd is non-blocking). Fails with
/// `BrokenPipe` once `dead` has fired.
fn write_all_blocking(f: &mut File, mut buf: &[u8], dead: &Receiver<()>) -> std::io::Result<()> {
    while !buf.is_empty() {
        match f.write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if !matches!(dead.try_recv(), Err(TryRecvError::Empty)) {
                    return Err(std::io::ErrorKind::BrokenPipe.into());
                }
                let mut p = libc::pollfd {
                    fd: f.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd.
                unsafe { libc::poll(&mut p, 1, DEATH_CHECK_MS) };
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_loop(s: &Shared, rx: Receiver<Vec<u8>>, dead: Receiver<()>) {
    let mut batch = Vec::new();
    loop {
        let first = select! {
            recv(rx) -> m => match m { Ok(l) => l, Err(_) => break },
            recv(dead) -> _ => break,
        };
        let mut n = 1;
        batch.clear();
        batch.extend_from_slice(&first);
        while batch.len() < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(l) => {
                    batch.extend_from_slice(&l);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        let mut file = s.file.lock();
        let ok = match file.as_mut() {
            Some(f) => write_all_blocking(&mut f.file, &batch, &dead).is_ok(),
            None => false,
        };
        s.pending.fetch_sub(n, SeqCst);
        if !ok {
            s.broken.store(true, Relaxed);
            s.counters.stdin_dropped.fetch_add(n as u64, Relaxed);
            break;
        }
        s.counters.lines_sent.fetch_add(n as u64, Relaxed);
    }
    // Close the pipe (EOF for the child) and count what can no longer be written.
    s.file.lock().take();
    let left = rx.try_iter().count();
    s.pending.fetch_sub(left, SeqCst);
    s.counters.stdin_dropped.fetch_add(left as u64, Relaxed);
}
