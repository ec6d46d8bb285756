//! SIGINT and SIGTERM (and SIGHUP for `serve`) for the command (the library installs no
//! handler; a binary may).
//!
//! A self-pipe: the handler only writes the signal number to a pipe (async-signal-safe);
//! a watcher thread reads it and passes it on as a channel message, where ordinary code
//! decides what to do.

use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicI32, Ordering};

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; errno is saved and restored around it.
        unsafe {
            let errno = *libc::__errno_location();
            libc::write(fd, (&b as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Install the handlers for SIGINT and SIGTERM; every signal that arrives is sent on the
/// returned channel (its number). Call once.
pub fn install() -> Receiver<i32> {
    install_for(&[libc::SIGINT, libc::SIGTERM])
}

/// [`install`] for the signals `sigs`.
pub fn install_for(sigs: &[i32]) -> Receiver<i32> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds; both are close-on-exec so no child inherits them.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2 for the signal handler");
    // The read end blocks; the write end stays non-blocking so the handler never waits.
    // SAFETY: fcntl on a fd we own.
    unsafe {
        let fl = libc::fcntl(fds[0], libc::F_GETFL);
        libc::fcntl(fds[0], libc::F_SETFL, fl & !libc::O_NONBLOCK);
    }
    WRITE_FD.store(fds[1], Ordering::Relaxed);
    let (tx, rx) = crossbeam_channel::unbounded();
    let read_fd = fds[0];
    std::thread::Builder::new()
        .name("toolpool-signals".into())
        .spawn(move || loop {
            let mut b = 0u8;
            // SAFETY: read one byte into a local from the fd this thread owns.
            let n = unsafe { libc::read(read_fd, (&mut b as *mut u8).cast(), 1) };
            if n == 1 {
                if tx.send(b as i32).is_err() {
                    return;
                }
            } else if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            } else {
                return;
            }
        })
        .expect("signal watcher thread");
    for &sig in sigs {
        // SAFETY: a zeroed sigaction with our handler; SA_RESTART so other threads' blocking
        // calls are not interrupted.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    rx
}

/// The exit status for a command ended by `sig` (128 + the signal number).
pub fn exit_status(sig: i32) -> i32 {
    128 + sig
}

/// For commands with nothing to finish (`bench`, `check`): on the first signal, kill every
/// process group toolpool started and exit with 128 + the signal.
pub fn exit_on_signal(rx: Receiver<i32>) {
    std::thread::Builder::new()
        .name("toolpool-interrupt".into())
        .spawn(move || {
            if let Ok(sig) = rx.recv() {
                let report = toolpool::Limiter::global().kill_all();
                let _ = report;
                eprintln!("toolpool: interrupted; every tool process was killed");
                std::process::exit(exit_status(sig));
            }
        })
        .expect("interrupt thread");
}
