//! Small helpers every layer may use: deadlines that never overflow, lossy text, jitter,
//! pids as log records write them, and the signal mask of the library's threads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// `now + timeout`, saturating: a huge timeout (`Duration::MAX`) means "about forever"
/// instead of an overflow panic.
pub(crate) fn deadline_in(timeout: Duration) -> Instant {
    deadline_after(Instant::now(), timeout)
}

/// [`deadline_in`] from `now`, an instant the caller has just read (one clock read fewer
/// on the request path).
pub(crate) fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Bytes as text, invalid UTF-8 replaced by U+FFFD (no copy when already valid).
pub(crate) fn lossy(b: Vec<u8>) -> String {
    match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A small xorshift generator for jitter (no need for a crate).
pub(crate) fn jitter_fraction() -> f64 {
    static SEED: AtomicU64 = AtomicU64::new(0);
    let mut x = SEED.load(Relaxed);
    if x == 0 {
        x = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((std::process::id() as u64) << 32)
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    SEED.store(x, Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A pid as log records write it: the OS pid, or `null` where there is no process (a
/// dry-run incarnation), as status shows it.
#[derive(Clone, Copy)]
pub(crate) struct LogPid(pub Option<i32>);

impl std::fmt::Display for LogPid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("null"),
        }
    }
}

/// Block every asynchronous signal in the calling thread (one the library owns), leaving
/// only the fault signals a thread cannot block usefully (SIGSEGV, SIGBUS, SIGFPE, SIGILL,
/// SIGTRAP, SIGSYS). A signal sent to the process then goes to one of the host's threads,
/// where its handler expects to run (a handler that writes to a self-pipe would fail in a
/// thread with an fd table of its own, as the spawn helper has), and a write to a pipe
/// without a reader returns EPIPE instead of raising SIGPIPE.
pub(crate) fn block_async_signals() {
    // SAFETY: manipulating this thread's own signal mask with a properly initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for sig in [
            libc::SIGSEGV,
            libc::SIGBUS,
            libc::SIGFPE,
            libc::SIGILL,
            libc::SIGTRAP,
            libc::SIGSYS,
        ] {
            libc::sigdelset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Bytes kept up to a cap: the first `max`, and a count of the rest (read and dropped).
#[derive(Debug, Default)]
pub(crate) struct Capped {
    pub kept: Vec<u8>,
    pub dropped: u64,
    max: usize,
}

impl Capped {
    /// An empty buffer keeping at most `max` bytes.
    pub fn new(max: usize) -> Capped {
        Capped {
            kept: Vec::new(),
            dropped: 0,
            max,
        }
    }

    /// Keep what fits of `bytes`, count the rest.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len());
        let n = bytes.len().min(room);
        self.kept.extend_from_slice(&bytes[..n]);
        self.dropped += (bytes.len() - n) as u64;
    }
}
