//! [`Completions`]: requests submitted now and answered later, for hosts that wait on an
//! event loop (Python's asyncio, an epoll loop in C) instead of blocking a thread per call.
//!
//! [`Completions::request`] queues the request and returns at once; one of the queue's own
//! threads (made on demand, up to `max_threads`) runs it as [`crate::Pool::request`] does,
//! and pushes a [`Completion`] (the caller's tag and the result). At most
//! [`RUNNING_PER_SLOT`] requests per slot of a pool (instances × `max_in_flight`) run at
//! once; the rest wait in the queue rather than in the pool's admission, where every freed
//! instance would wake them all. The queue's eventfd
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
use crate::reader::{SpinSlot, SPIN_BUDGET};
use crate::router::Reply;
use parking_lot::{Condvar, Mutex};
use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most threads a queue may run requests on (`max_threads` is clamped to this).
pub const MAX_COMPLETION_THREADS: usize = 1024;

/// Requests of one pool that run at once, per slot of the pool (an instance's
/// `max_in_flight`): one being served, one waiting to be served next, so an instance never
/// waits for a thread (measured: 4 instances of a C echo child gave 55k requests/s with 4
/// threads, 75k-80k with 8, and 22k with 64, the waiters all woken on every reply).
pub const RUNNING_PER_SLOT: usize = 2;

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
    /// The pool's address (which requests share a limit), and that limit.
    pool: usize,
    limit: usize,
}

#[derive(Default)]
struct Jobs {
    queue: VecDeque<Job>,
    /// Requests running now, per pool address.
    running: HashMap<usize, usize>,
    /// Threads waiting for a job.
    idle: usize,
    threads: usize,
    closed: bool,
}

impl Jobs {
    /// The oldest job whose pool is below its limit, counted as running.
    fn take(&mut self) -> Option<Job> {
        let running = &self.running;
        let i = self
            .queue
            .iter()
            .position(|j| running.get(&j.pool).copied().unwrap_or(0) < j.limit)?;
        let job = self.queue.remove(i)?;
        *self.running.entry(job.pool).or_insert(0) += 1;
        Some(job)
    }

    fn finished(&mut self, pool: usize) {
        if let Some(n) = self.running.get_mut(&pool) {
            *n -= 1;
            if *n == 0 {
                self.running.remove(&pool);
            }
        }
    }
}

struct Shared {
    max_threads: usize,
    jobs: Mutex<Jobs>,
    job_ready: Condvar,
    /// The tokens of the requests submitted and not yet completed, by tag.
    pending: Mutex<HashMap<u64, CancelToken>>,
    done: Mutex<VecDeque<Completion>>,
    /// `done` is not empty (read without the lock by a waiter).
    ready: AtomicBool,
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
    /// [`MAX_COMPLETION_THREADS`]), and at most [`RUNNING_PER_SLOT`] per slot of a pool;
    /// more wait in the queue, still cancellable. Threads are made when a request that may
    /// run finds none idle, and live until the queue is dropped. Makes
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
                ready: AtomicBool::new(false),
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
        let (key, limit) = limit_of(pool.borrow());
        self.submit(
            tag,
            timeout,
            (key, limit),
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
        let limit = limit_of(pool.borrow());
        self.submit(
            tag,
            timeout,
            limit,
            Box::new(move |w| pool.borrow().request_sticky(&key, &payload, w)),
        )
    }

    fn submit(
        &self,
        tag: u64,
        timeout: Duration,
        (pool, limit): (usize, usize),
        run: Run,
    ) -> Result<()> {
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
            pool,
            limit,
        };
        let mut jobs = self.shared.jobs.lock();
        jobs.queue.push_back(job);
        let running = jobs.running.get(&pool).copied().unwrap_or(0);
        if jobs.idle == 0 && running < limit && jobs.threads < self.shared.max_threads {
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
        let Some(token) = self.shared.pending.lock().get(&tag).cloned() else {
            return false;
        };
        token.cancel();
        // Not started: it completes now, instead of when a thread is free for it.
        let queued = {
            let mut jobs = self.shared.jobs.lock();
            let i = jobs.queue.iter().position(|j| j.tag == tag);
            i.and_then(|i| jobs.queue.remove(i))
        };
        if queued.is_some() {
            self.shared.complete(
                tag,
                Err(Error::Cancelled(format!(
                    "request {tag} of the completion queue was cancelled before it started"
                ))),
            );
        }
        true
    }

    /// The oldest completion not yet taken, if any. The eventfd stops being readable once
    /// the last one is taken.
    pub fn next(&self) -> Option<Completion> {
        let mut done = self.shared.done.lock();
        let c = done.pop_front();
        if done.is_empty() {
            self.shared.ready.store(false, Relaxed);
            drain(self.shared.efd.as_raw_fd());
        }
        c
    }

    /// Wait until a completion is there to take, up to `timeout`: spinning for at most
    /// [`SPIN_BUDGET`] when a CPU is to spare (as the stdout reader does), then asleep in
    /// `poll` on the eventfd. True when one is there. For a host that expects the reply
    /// within microseconds and would rather not go through its event loop for it.
    pub fn wait(&self, timeout: Duration) -> bool {
        let ready = || self.shared.ready.load(Acquire);
        let start = Instant::now();
        if let Some(_slot) = SpinSlot::take() {
            let end = start + timeout.min(SPIN_BUDGET);
            while !ready() && Instant::now() < end {
                // SAFETY: no arguments; gives this CPU to a runnable thread (the tool or the
                // queue thread may have been woken onto it) before the next look.
                unsafe { libc::sched_yield() };
            }
        }
        loop {
            if ready() {
                return true;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return false;
            }
            let mut p = libc::pollfd {
                fd: self.fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut p, 1, ms) };
        }
    }

    /// Requests submitted and not yet completed.
    pub fn pending(&self) -> usize {
        self.shared.pending.lock().len()
    }
}

impl Drop for Completions {
    fn drop(&mut self) {
        {
            // Requests not started never will: their completions would reach nobody.
            let mut jobs = self.shared.jobs.lock();
            jobs.closed = true;
            jobs.queue.clear();
        }
        for token in self.shared.pending.lock().values() {
            token.cancel();
        }
        self.shared.job_ready.notify_all();
        for t in self.threads.get_mut().drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    /// Push the completion of `tag` (no longer pending) and make the fd readable.
    fn complete(&self, tag: u64, result: Result<Reply>) {
        self.pending.lock().remove(&tag);
        let mut done = self.done.lock();
        if done.is_empty() {
            signal(self.efd.as_raw_fd());
        }
        done.push_back(Completion { tag, result });
        self.ready.store(true, Release);
    }
}

/// A pool's address (which requests share a limit) and its limit of running requests:
/// [`RUNNING_PER_SLOT`] per slot (instances × `max_in_flight`). Asks a service nothing:
/// a submission never waits.
fn limit_of(pool: &Pool) -> (usize, usize) {
    (
        pool as *const Pool as usize,
        pool.slots().saturating_mul(RUNNING_PER_SLOT),
    )
}

/// A queue thread: run jobs until the queue is dropped. Out of work, it sleeps on the
/// condvar. (Spinning for the next job instead was measured: one request at a time on a
/// 2-CPU machine took 60-85 µs with it, 8 µs without: the spinning thread kept a CPU from
/// the tool and the caller.)
fn serve(shared: &Shared) {
    let mut jobs = shared.jobs.lock();
    loop {
        let Some(job) = jobs.take() else {
            if jobs.closed {
                return;
            }
            jobs.idle += 1;
            shared.job_ready.wait(&mut jobs);
            jobs.idle -= 1;
            continue;
        };
        drop(jobs);
        let result = (job.run)(&job.wait);
        shared.complete(job.tag, result);
        jobs = shared.jobs.lock();
        jobs.finished(job.pool);
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
