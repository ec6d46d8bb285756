//! Ctrl-C for blocking calls made on Python's main thread, with no thread hop per call.
//!
//! A C call holds up `KeyboardInterrupt` until it returns: Python runs signal handlers
//! between bytecodes, on the main thread. But CPython's own C-level handler also writes the
//! signal's number, at once, to the descriptor given to `signal.set_wakeup_fd`. So the main
//! thread's calls run right where they are, with a cancel token, after [`arm`] made our
//! pipe the wakeup descriptor; a watcher thread (one per process, made on first use, asleep
//! in `poll`, never needing the GIL) triggers the token when a SIGINT byte comes in while a
//! call is armed. The call returns within milliseconds, the pending handler runs, and its
//! `KeyboardInterrupt` propagates.
//!
//! One lock orders the watcher and the main thread. [`arm`] takes it, reads whatever bytes
//! are already in the pipe (signals from before the call, whose handlers ran or will run
//! anyway: they must not stop this call) and only then marks the call armed; the watcher
//! reads the pipe only under the same lock. So a call is stopped only by a signal that came
//! after it was armed. Bytes are passed on to the wakeup descriptor that was set before ours
//! (asyncio's `add_signal_handler` sets one), which keeps working.

use crate::api::Api;
use parking_lot::Mutex;
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How long the wakeup descriptor is trusted to still be ours: setting it costs two system
/// calls, so [`arm`] sets it again only when this much time has passed. Should another
/// library replace it meanwhile (asyncio's `add_signal_handler`, or its `loop.close()`,
/// which sets none), calls armed within that time are not stopped early by Ctrl-C.
pub const RECHECK: Duration = Duration::from_millis(50);

/// `threading.get_ident()` of the main thread (`pthread_self()` on Linux), from `bind`.
pub static MAIN_THREAD: AtomicU64 = AtomicU64::new(0);

#[derive(Default)]
struct State {
    /// The pipe (read end for the watcher, write end for CPython's handler); -1 before
    /// the first armed call. `failed`: the wakeup descriptor cannot be set here.
    rfd: i32,
    wfd: i32,
    failed: bool,
    /// The wakeup descriptor someone had set before ours (-1: none).
    forward: i32,
    /// The token of the armed call (0: none).
    current: usize,
    /// The main thread's own token (0: not made yet), and whether a SIGINT triggered it
    /// (it is then replaced before the next call).
    main_token: usize,
    fired: bool,
    /// A SIGINT triggered the armed call's token.
    interrupted: bool,
    checked: Option<Instant>,
}

static STATE: Mutex<State> = Mutex::new(State {
    rfd: -1,
    wfd: -1,
    failed: false,
    forward: -1,
    current: 0,
    main_token: 0,
    fired: false,
    interrupted: false,
    checked: None,
});

/// On the main thread: make sure our pipe is the wakeup descriptor, drop the signals that
/// came before, and arm the call with `user` (a `ToolpoolCancel *`, which a SIGINT then
/// triggers too) or the main thread's own token. Returns the token to call with, or None
/// off the main thread (or where the wakeup descriptor cannot be set): then call with
/// `user` as it is, and do not [`disarm`].
pub fn arm(py: Python<'_>, api: &Api, user: usize) -> PyResult<Option<usize>> {
    // SAFETY: pthread_self has no preconditions.
    if unsafe { libc::pthread_self() } as u64 != MAIN_THREAD.load(Relaxed) {
        return Ok(None);
    }
    let mut st = STATE.lock();
    if st.failed {
        return Ok(None);
    }
    if st.rfd < 0 {
        if !start(py, &mut st)? {
            return Ok(None);
        }
    } else if st.checked.is_none_or(|t| t.elapsed() > RECHECK) {
        set_wakeup(py, &mut st)?;
    }
    drain(&st);
    let token = if user != 0 {
        user
    } else {
        if st.fired || st.main_token == 0 {
            replace_main_token(api, &mut st)?;
        }
        st.main_token
    };
    st.current = token;
    st.interrupted = false;
    Ok(Some(token))
}

/// After an armed call: no call is armed. Returns whether a SIGINT triggered its token.
pub fn disarm() -> bool {
    let mut st = STATE.lock();
    st.current = 0;
    st.interrupted
}

fn replace_main_token(api: &Api, st: &mut State) -> PyResult<()> {
    let mut t: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: a writable out-pointer.
    if unsafe { (api.toolpool_cancel_new)(&mut t) } != 0 || t.is_null() {
        return Err(pyo3::exceptions::PyMemoryError::new_err(
            "toolpool: no cancel token",
        ));
    }
    if st.main_token != 0 {
        // SAFETY: our own token; no call uses it (none is armed, and the watcher only
        // touches it under the lock we hold).
        unsafe { (api.toolpool_cancel_free)(st.main_token as *mut libc::c_void) };
    }
    st.main_token = t as usize;
    st.fired = false;
    Ok(())
}

/// The first armed call: the pipe, the wakeup descriptor, the watcher thread. False when
/// the wakeup descriptor cannot be set (not the main interpreter).
fn start(py: Python<'_>, st: &mut State) -> PyResult<bool> {
    let mut fds = [0i32; 2];
    // SAFETY: a writable array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    (st.rfd, st.wfd) = (fds[0], fds[1]);
    if let Err(e) = set_wakeup(py, st) {
        // SAFETY: the pipe we just made.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        (st.rfd, st.wfd, st.failed) = (-1, -1, true);
        if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) {
            return Ok(false);
        }
        return Err(e);
    }
    let api = &crate::bound()?.api;
    // The Api is 'static (a OnceLock), so the thread may keep it.
    let rfd = st.rfd;
    std::thread::Builder::new()
        .name("toolpool-sigint".into())
        .spawn(move || watch(api, rfd))
        .map_err(PyErr::from)?;
    Ok(true)
}

/// `signal.set_wakeup_fd(our pipe)`; what it replaced becomes the forward target.
fn set_wakeup(py: Python<'_>, st: &mut State) -> PyResult<()> {
    let prev: i32 = py
        .import("signal")?
        .getattr("set_wakeup_fd")?
        .call1((st.wfd,))?
        .extract()?;
    if prev != st.wfd {
        st.forward = prev;
    }
    st.checked = Some(Instant::now());
    Ok(())
}

/// Read what is in the pipe (never waits), pass it on, and say whether a SIGINT was in it.
fn drain(st: &State) -> bool {
    let mut sigint = false;
    let mut buf = [0u8; 256];
    loop {
        // SAFETY: a read into a live buffer of its size from our non-blocking pipe.
        let n = unsafe { libc::read(st.rfd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return sigint;
        }
        let got = &buf[..n as usize];
        sigint |= got.contains(&(libc::SIGINT as u8));
        if st.forward >= 0 {
            // SAFETY: a write of live bytes; a failure (closed, full) drops them, as
            // CPython's own handler would.
            unsafe { libc::write(st.forward, got.as_ptr().cast(), got.len()) };
        }
    }
}

/// The watcher thread: wait for bytes, then, under the lock, read them and trigger the
/// armed call's token on a SIGINT. Ends when the pipe is replaced (after a fork).
fn watch(api: &'static Api, rfd: i32) {
    loop {
        let mut p = libc::pollfd {
            fd: rfd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, -1) };
        let mut st = STATE.lock();
        if st.rfd != rfd {
            return;
        }
        if drain(&st) && st.current != 0 {
            // SAFETY: the armed call's token: live while armed (disarm and the token's
            // replacement take this lock first).
            unsafe { (api.toolpool_cancel_trigger)(st.current as *const libc::c_void) };
            st.interrupted = true;
            if st.current == st.main_token {
                st.fired = true;
            }
        }
    }
}

/// In a child after `fork`: the watcher thread is gone, and so is whoever held the lock.
/// Start over on the next armed call. Returns the wakeup descriptor to set back (the one
/// set before ours, or -1) when ours was set (it is closed here), else None.
pub fn after_fork_in_child() -> Option<i32> {
    if STATE.is_locked() {
        // SAFETY: in the child only the forking thread exists; a lock held at the fork
        // belonged to a thread that is not there (the main thread never holds it across
        // a fork: it holds it only inside `arm`/`disarm`).
        unsafe { STATE.force_unlock() };
    }
    let mut st = STATE.lock();
    if st.rfd < 0 {
        return None;
    }
    // SAFETY: our pipe's descriptors, inherited by the child; closed once.
    unsafe {
        libc::close(st.rfd);
        libc::close(st.wfd);
    }
    let forward = st.forward;
    *st = State {
        rfd: -1,
        wfd: -1,
        forward: -1,
        ..State::default()
    };
    Some(forward)
}

/// The error of an armed call that a SIGINT stopped (it returned `TOOLPOOL_CANCELLED`):
/// what the pending signal handlers raise. Should Python have run the handler already,
/// inside a callback into Python during the call, its `KeyboardInterrupt` was lost there;
/// with Python's default SIGINT handler that is raised here instead. None when a handler of
/// the program's own returned normally: the call's `Cancelled` stands.
pub fn interrupted_error(py: Python<'_>) -> Option<PyErr> {
    if let Err(e) = py.check_signals() {
        return Some(e);
    }
    let default = (|| -> PyResult<bool> {
        let signal = py.import("signal")?;
        let handler = signal.getattr("getsignal")?.call1((libc::SIGINT,))?;
        Ok(handler.is(&signal.getattr("default_int_handler")?))
    })()
    .unwrap_or(false);
    default.then(|| PyKeyboardInterrupt::new_err(()))
}
