//! A helper thread with a small fd table, for starting many children from a host that
//! holds many fds.
//!
//! A spawned child starts with a copy of the spawning thread's fd table and closes every
//! fd above stdio (`closefrom(3)`); both take one step per open fd, and so do the
//! reference counts of the files, which two spawning threads update at once. A pool of
//! 1,000 instances holds 4,000 fds, so starting N instances was O(N²) again (a profile of
//! a start of 1,000 showed `close_range` in the child as the largest cost).
//!
//! While [`with_helper`] runs, the spawns of the calling thread go through a helper thread
//! that has its own fd table (`unshare(CLONE_FILES)`) holding only stdio and its end of a
//! socket pair. The spawning thread creates the pipes as before, sends the three child ends
//! over the socket (`SCM_RIGHTS`), and the helper runs `posix_spawn` from its small table,
//! so the child copies and closes a handful of fds. The parent's ends never leave the
//! host's table. The helper's start costs one pass over the host's fds, once.
//!
//! Used for the parallel start of a pool (`lifecycle::start_all`); a spawn elsewhere (a
//! restart, a one-shot run) is made directly. If the OS refuses a step (no `unshare`, no
//! thread), the spawns are made directly too.

use super::{run, Job};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;

/// The helper's end of the socket, at this fd in the helper's own table.
const SOCK_FD: i32 = 3;
/// The helper keeps nothing on its stack (glibc's `posix_spawn` maps its own for the child).
const STACK_BYTES: usize = 128 * 1024;

struct Helper {
    /// Our end of the socket pair, in the host's table.
    sock: OwnedFd,
    jobs: Option<Sender<Job>>,
    done: Receiver<(i32, libc::pid_t)>,
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    static HELPER: RefCell<Option<Helper>> = const { RefCell::new(None) };
}

/// Run `f`; the spawns this thread makes meanwhile go through a helper with a small fd
/// table (see the module docs). The helper ends with `f`.
pub(crate) fn with_helper<R>(f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            HELPER.with(|h| h.borrow_mut().take());
        }
    }
    HELPER.with(|h| *h.borrow_mut() = Helper::start());
    let _reset = Reset;
    f()
}

/// `run(job, ends)` through this thread's helper if it has one, else here.
pub(super) fn spawn(job: Job, ends: [i32; 3]) -> (i32, libc::pid_t) {
    HELPER.with(|h| {
        let mut h = h.borrow_mut();
        let Some(helper) = h.as_ref() else {
            return run(&job, &ends);
        };
        match helper.spawn(job, &ends) {
            Ok(r) => r,
            Err(Some(job)) => {
                // The helper is gone before it took the job: without it from now on.
                *h = None;
                run(&job, &ends)
            }
            Err(None) => {
                *h = None;
                (libc::EAGAIN, 0)
            }
        }
    })
}

impl Helper {
    fn start() -> Option<Helper> {
        let mut sv = [0i32; 2];
        // SAFETY: socketpair fills two fds, owned from here on.
        let (ours, theirs) = unsafe {
            if libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            ) != 0
            {
                return None;
            }
            (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1]))
        };
        let theirs_fd = theirs.as_raw_fd();
        let (job_tx, job_rx) = bounded::<Job>(1);
        let (done_tx, done_rx) = bounded(1);
        let (ready_tx, ready_rx) = bounded::<bool>(1);
        let thread = std::thread::Builder::new()
            .name("toolpool-spawn".into())
            .stack_size(STACK_BYTES)
            .spawn(move || {
                // A signal sent to the host must never run its handler here: a handler
                // that writes to an fd would write into this thread's own fd table.
                crate::util::block_async_signals();
                // SAFETY: plain syscalls on this thread's own (unshared) fd table.
                let ok = unsafe {
                    libc::unshare(libc::CLONE_FILES) == 0
                        && (theirs_fd == SOCK_FD || libc::dup2(theirs_fd, SOCK_FD) == SOCK_FD)
                        && libc::close_range(SOCK_FD as u32 + 1, u32::MAX, 0) == 0
                };
                let _ = ready_tx.send(ok);
                if !ok {
                    return;
                }
                for job in job_rx {
                    let r = match receive_ends() {
                        Some(ends) => {
                            let r = run(&job, &ends);
                            for fd in ends {
                                // SAFETY: the fds were received by us and are ours to close.
                                unsafe { libc::close(fd) };
                            }
                            r
                        }
                        None => (libc::EIO, 0),
                    };
                    if done_tx.send(r).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        // The helper has its own table (or gave up): our copy of its end goes.
        let ok = ready_rx.recv().unwrap_or(false);
        drop(theirs);
        let helper = Helper {
            sock: ours,
            jobs: Some(job_tx),
            done: done_rx,
            thread: Some(thread),
        };
        ok.then_some(helper)
    }

    /// Send the ends, then the job; wait for its result. `Err(Some(job))`: the helper did
    /// not take it; `Err(None)`: it took it and is gone.
    fn spawn(&self, job: Job, ends: &[i32; 3]) -> Result<(i32, libc::pid_t), Option<Job>> {
        if !send_ends(self.sock.as_raw_fd(), ends) {
            return Err(Some(job));
        }
        let jobs = self.jobs.as_ref().ok_or(None)?;
        jobs.send(job).map_err(|e| Some(e.into_inner()))?;
        self.done.recv().map_err(|_| None)
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        self.jobs.take(); // the helper's loop ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Room for one control message carrying three fds.
const CMSG_BYTES: usize = 64;
/// The bytes of the three fds in a control message.
const ENDS_BYTES: u32 = 3 * std::mem::size_of::<i32>() as u32;

/// Run `f` on a message of one byte with room for the control data of three fds.
fn with_message<R>(f: impl FnOnce(&mut libc::msghdr) -> R) -> R {
    let mut byte = [0u8; 1];
    let mut cbuf = [0u64; CMSG_BYTES / 8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: msghdr is plain data, and all zeroes is an empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = CMSG_BYTES as _;
    f(&mut msg)
}

/// Make `call` (a `sendmsg` or `recvmsg` of one byte) again while it is interrupted;
/// true once it moved the byte.
fn one_byte(mut call: impl FnMut() -> isize) -> bool {
    loop {
        let r = call();
        if r == 1 {
            return true;
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return false;
    }
}

/// Send the three `ends` over `sock` as one message.
fn send_ends(sock: i32, ends: &[i32; 3]) -> bool {
    with_message(|msg| {
        // SAFETY: the control buffer holds CMSG_SPACE(12) = 32 bytes and more; the CMSG
        // macros stay within it.
        unsafe {
            msg.msg_controllen = libc::CMSG_SPACE(ENDS_BYTES) as _;
            let c = libc::CMSG_FIRSTHDR(msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(ENDS_BYTES) as _;
            std::ptr::copy_nonoverlapping(ends.as_ptr(), libc::CMSG_DATA(c).cast::<i32>(), 3);
            one_byte(|| libc::sendmsg(sock, msg, libc::MSG_NOSIGNAL))
        }
    })
}

/// Receive the three ends sent by [`send_ends`] on the helper's socket (close-on-exec).
fn receive_ends() -> Option<[i32; 3]> {
    with_message(|msg| {
        // SAFETY: the received fds are read only from a control message of the expected
        // level, type and length, within the control buffer.
        unsafe {
            if !one_byte(|| libc::recvmsg(SOCK_FD, &mut *msg, libc::MSG_CMSG_CLOEXEC)) {
                return None;
            }
            let c = libc::CMSG_FIRSTHDR(msg);
            let len = libc::CMSG_LEN(ENDS_BYTES) as usize;
            if c.is_null()
                || (*c).cmsg_level != libc::SOL_SOCKET
                || (*c).cmsg_type != libc::SCM_RIGHTS
                || (*c).cmsg_len as usize != len
            {
                return None;
            }
            let mut ends = [0i32; 3];
            std::ptr::copy_nonoverlapping(libc::CMSG_DATA(c).cast::<i32>(), ends.as_mut_ptr(), 3);
            // A host without stdio leaves 0..2 free, and an end there could be clobbered by
            // the child's `dup2` of another: move it up.
            for fd in &mut ends {
                if *fd < 3 {
                    let up = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3);
                    libc::close(*fd);
                    if up < 0 {
                        return None;
                    }
                    *fd = up;
                }
            }
            Some(ends)
        }
    })
}

#[cfg(test)]
mod tests {
    /// The signals blocked by thread `tid` of this process, from /proc.
    fn blocked(tid: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("SigBlk:")).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }

    #[test]
    fn the_helper_blocks_the_hosts_signals() {
        // Started from a thread that blocks nothing, the helper (alive for as long as the
        // closure runs) still blocks SIGINT and SIGTERM: a signal for the host never runs
        // its handler in the helper's private fd table.
        let masks = std::thread::spawn(|| {
            super::with_helper(|| {
                let mut masks = Vec::new();
                for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                    let comm = std::fs::read_to_string(task.path().join("comm")).unwrap();
                    if comm.trim() == "toolpool-spawn" {
                        masks.push(blocked(&task.file_name().to_string_lossy()));
                    }
                }
                masks
            })
        })
        .join()
        .unwrap();
        let bit = |sig: i32| 1u64 << (sig - 1);
        let want = bit(libc::SIGINT) | bit(libc::SIGTERM) | bit(libc::SIGPIPE);
        assert!(!masks.is_empty(), "no helper thread while with_helper runs");
        for mask in masks {
            assert_eq!(
                mask & want,
                want,
                "the helper lets signals in: SigBlk {mask:x}"
            );
        }
    }
}
