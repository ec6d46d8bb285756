//! The watchdog of `toolpool serve`: so that no tool process outlives the service, even
//! one killed with SIGKILL.
//!
//! Before any thread starts, `serve` forks. The parent becomes the watchdog: a child
//! subreaper (`PR_SET_CHILD_SUBREAPER`) with one thread and no pools. The child is the
//! service. If the service dies, whatever it started is re-parented to the watchdog,
//! which kills each such process group and exits with the service's status. If the
//! watchdog dies, the service gets SIGTERM (`PR_SET_PDEATHSIG`) and shuts down as usual.
//! SIGTERM, SIGINT and SIGHUP sent to the watchdog are passed on to the service.

use std::io;

/// Fork; returns in the service only (the watchdog exits with the service's status). Call
/// before any thread starts.
pub fn split() -> io::Result<()> {
    let forwarded = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];
    // SAFETY: sigset operations on a local set; sigprocmask on this (only) thread.
    let old = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in forwarded {
            libc::sigaddset(&mut set, s);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        (set, old)
    };
    // SAFETY: prctl with valid arguments on this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // SAFETY: getpid cannot fail.
    let watchdog = unsafe { libc::getpid() };
    // SAFETY: the process is single-threaded here (the caller's contract), so the child
    // may go on running Rust code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: prctl and sigprocmask on this process; the parent's death sends SIGTERM.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
            // The watchdog may have died before the line above: then we were re-parented.
            if libc::getppid() != watchdog {
                libc::_exit(143);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &old.1, std::ptr::null_mut());
        }
        return Ok(());
    }
    watch(pid, &old.0)
}

/// The watchdog's loop: pass signals on, reap, and clean up after the service.
fn watch(service: libc::pid_t, set: &libc::sigset_t) -> ! {
    loop {
        // SAFETY: a zeroed siginfo_t is valid output space.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is blocked in this (only) thread; `info` is writable.
        let sig = unsafe { libc::sigwaitinfo(set, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: kill with a valid signal; the service is our child (not yet reaped).
            unsafe { libc::kill(service, sig) };
            continue;
        }
        // Reap everything that ended; stop once the service has.
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own children, without blocking.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == service {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                let left = kill_orphans();
                if left > 0 {
                    eprintln!("toolpool serve: the service ended; killed {left} tool process group(s) it left");
                }
                std::process::exit(code);
            }
        }
    }
}

/// Kill the process group of every child this process adopted, and reap them all.
/// Returns how many there were.
fn kill_orphans() -> usize {
    let me = std::process::id() as i32;
    let mut killed = 0;
    for _ in 0..100 {
        let orphans = children_of(me);
        if orphans.is_empty() {
            break;
        }
        for pid in &orphans {
            // SAFETY: signalling a child of ours (it cannot be reaped and reused before we
            // reap it) and its group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        killed += orphans.len();
        loop {
            // SAFETY: waitpid on our children; blocks until one ends.
            let pid = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
            if pid <= 0 {
                break;
            }
        }
    }
    killed
}

/// The pids whose parent is `parent`, from /proc.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command (which may hold spaces) end with ')'.
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split(' ').nth(1)?.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
