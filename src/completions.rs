//! [`Completions`]: requests submitted now and answered later, for hosts that wait on an
//! event loop (Python's asyncio, an epoll loop in C) instead of blocking a thread per call.
//!
//! [`Completions::request`] queues the request and returns at once; one of the queue's own
//! threads (made on demand, up to `max_threads`) runs it as [`crate::Pool::request`] does,
//! and pushes a [`Completion`] (the caller's tag and the result). The queue's eventfd
//! ([`Completions::fd`]) is readable while completions wait; [`Completions::next`] pops
//! them. So a host's loop watches one descriptor for any number of requests, and a burst
//! of replies costs it one wake-up. [`Completions::cancel`] stops one request by its tag
//! (a [`CancelToken`] per request, made without a system call).
//!
//! The queue owns its state: the waiting jobs, the pending tags and their tokens, the
//! finished completions; its threads only run jobs. Dropping it cancels what is pending,
//! drops the completions nobody took and joins its threads.

use crate::cancel::{CancelToken, Wait};
use crate::error::{Error, Result};
use crate::pool::Pool;
use crate::router::Reply;
use parking_lot::{Condvar, Mutex};
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The most threads a queue may run requests on (`max_threads` is clamped to this).
pub const MAX_COMPLETION_THREADS: usize = 1024;

/// One finished request: the tag it was submitted with, and its result.
#[derive(Debug)]
pub struct Completion {
    /// The caller's tag, as given to [`Completions::request`].
    pub tag: u64,
    /// The reply, or the error the request ended with ([`Error::Cancelled`] after
    /// [`Completions::cancel`], [`Error::ShutDown`] when the pool was shut down, ...).
    pub result: Result<Reply>,
}

type Run = Box<dyn FnOnce(&Wait) -> Result<Reply> + Send>;

struct Job {
    tag: u64,
    wait: Wait,
    run: Run,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    /// Threads waiting for a job.
    idle: usize,
    threads: usize,
    closed: bool,
}

struct Shared {
    max_threads: usize,
    jobs: Mutex<Jobs>,
    job_ready: Condvar,
    /// The tokens of the requests submitted and not yet completed, by tag.
    pending: Mutex<HashMap<u64, CancelToken>>,
    done: Mutex<VecDeque<Completion>>,
    /// Readable (counter > 0) exactly while `done` is not empty.
    efd: OwnedFd,
}

/// A completion queue: submit requests with a tag, watch [`Completions::fd`], take the
/// answers with [`Completions::next`]. `Send + Sync`; every method may be called from any
/// thread. See the module documentation.
pub struct Completions {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completions")
            .field("max_threads", &self.shared.max_threads)
            .field("pending", &self.shared.pending.lock().len())
            .finish()
    }
}

impl Completions {
    /// A queue running at most `max_threads` requests at once (1 to
    /// [`MAX_COMPLETION_THREADS`]; more wait in the queue, still cancellable). Threads are
    /// made when a request finds none idle, and live until the queue is dropped. Makes
    /// one eventfd (close-on-exec, non-blocking); `Error::Io` when it cannot.
    pub fn new(max_threads: usize) -> Result<Completions> {
        if !(1..=MAX_COMPLETION_THREADS).contains(&max_threads) {
            return Err(Error::InvalidArgument(format!(
                "max_threads must be between 1 and {MAX_COMPLETION_THREADS}, not {max_threads}"
            )));
        }
        // SAFETY: eventfd with valid flags; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::Io(format!(
                "cannot create the completion queue's eventfd: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Completions {
            shared: Arc::new(Shared {
                max_threads,
                jobs: Mutex::new(Jobs::default()),
                job_ready: Condvar::new(),
                pending: Mutex::new(HashMap::new()),
                done: Mutex::new(VecDeque::new()),
                // SAFETY: `fd` was just created and is owned by nobody else.
                efd: unsafe { OwnedFd::from_raw_fd(fd) },
            }),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// The eventfd that is readable while completions wait to be taken: watch it for
    /// reading (`poll`, `epoll`, asyncio's `add_reader`), never read it directly. It stays
    /// open until the queue is dropped.
    pub fn fd(&self) -> RawFd {
        self.shared.efd.as_raw_fd()
    }

    /// Submit `payload` as one request on `pool` (as [`Pool::request`], waiting up to
    /// `timeout` for an instance and the reply) and return at once. Its [`Completion`]
    /// carries `tag`. `pool` is anything that lends a [`Pool`] and can move to the
    /// queue's thread (`Arc<Pool>`, `&'static Pool`). Errors: `Error::InvalidArgument`
    /// when `tag` is already pending.
    pub fn request<P>(&self, pool: P, tag: u64, payload: &str, timeout: Duration) -> Result<()>
    where
        P: Borrow<Pool> + Send + 'static,
    {
        let payload = payload.to_string();
        self.submit(
            tag,
            timeout,
            Box::new(move |w| pool.borrow().request(&payload, w)),
        )
    }

    /// [`Completions::request`] as [`Pool::request_sticky`]: requests with the same `key`
    /// go to the same instance while it lives.
    pub fn request_sticky<P>(
        &self,
        pool: P,
        tag: u64,
        key: &str,
        payload: &str,
        timeout: Duration,
    ) -> Result<()>
    where
        P: Borrow<Pool> + Send + 'static,
    {
        let (key, payload) = (key.to_string(), payload.to_string());
        self.submit(
            tag,
            timeout,
            Box::new(move |w| pool.borrow().request_sticky(&key, &payload, w)),
        )
    }

    fn submit(&self, tag: u64, timeout: Duration, run: Run) -> Result<()> {
        let token = CancelToken::new();
        {
            let mut pending = self.shared.pending.lock();
            if pending.contains_key(&tag) {
                return Err(Error::InvalidArgument(format!(
                    "tag {tag} is already pending on this completion queue"
                )));
            }
            pending.insert(tag, token.clone());
        }
        let job = Job {
            tag,
            wait: Wait::new(timeout).with_cancel(&token),
            run,
        };
        let mut jobs = self.shared.jobs.lock();
        jobs.queue.push_back(job);
        if jobs.queue.len() > jobs.idle && jobs.threads < self.shared.max_threads {
            jobs.threads += 1;
            drop(jobs);
            let shared = Arc::clone(&self.shared);
            let name = format!("toolpool-cq-{}", self.threads.lock().len());
            let handle = crate::process::spawn_thread(name, move || serve(&shared));
            self.threads.lock().push(handle);
        } else {
            self.shared.job_ready.notify_one();
        }
        Ok(())
    }

    /// Cancel the pending request submitted with `tag`: it completes with
    /// `Error::Cancelled` within milliseconds (at once when it has not started), with the
    /// guarantees of a timeout. Returns false when no request with that tag is pending
    /// (it completed already, or never was).
    pub fn cancel(&self, tag: u64) -> bool {
        let token = self.shared.pending.lock().get(&tag).cloned();
        match token {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }

    /// The oldest completion not yet taken, if any. The eventfd stops being readable once
    /// the last one is taken.
    pub fn next(&self) -> Option<Completion> {
        let mut done = self.shared.done.lock();
        let c = done.pop_front();
        if done.is_empty() {
            drain(self.shared.efd.as_raw_fd());
        }
        c
    }

    /// Requests submitted and not yet completed.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().len()
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        self.shared.jobs.lock().closed = true;
        for token in self.shared.pending.lock().values() {
            token.cancel();
        }
        self.shared.job_ready.notify_all();
        for t in self.threads.get_mut().drain(..) {
            let _ = t.join();
        }
    }
}

/// A queue thread: run jobs until the queue is dropped (what is still queued then is
/// cancelled: each runs and returns at once).
fn serve(shared: &Shared) {
    loop {
        let job = {
            let mut jobs = shared.jobs.lock();
            loop {
                if let Some(job) = jobs.queue.pop_front() {
                    break job;
                }
                if jobs.closed {
                    return;
                }
                jobs.idle += 1;
                shared.job_ready.wait(&mut jobs);
                jobs.idle -= 1;
            }
        };
        let result = (job.run)(&job.wait);
        shared.pending.lock().remove(&job.tag);
        let mut done = shared.done.lock();
        if done.is_empty() {
            signal(shared.efd.as_raw_fd());
        }
        done.push_back(Completion {
            tag: job.tag,
            result,
        });
    }
}

/// Make eventfd `fd` readable.
fn signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: an 8-byte write from a live u64 to an eventfd we own; it cannot block
    // (EFD_NONBLOCK) and the counter stays far below its maximum (reset on every drain).
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Reset eventfd `fd` to not readable.
fn drain(fd: RawFd) {
    let mut n: u64 = 0;
    // SAFETY: an 8-byte read into a live u64 from an eventfd we own; non-blocking (EAGAIN
    // when already 0).
    unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn max_threads_is_checked() {
        assert!(matches!(
            Completions::new(0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(Completions::new(MAX_COMPLETION_THREADS + 1).is_err());
        let q = Completions::new(1).unwrap();
        assert!(!readable(q.fd()));
        assert!(q.next().is_none());
        assert!(!q.cancel(7));
    }
}
