//! Pipes for a child's stdio, and the stdin end whose writes never raise SIGPIPE.
//!
//! A write to a pipe with no reader raises SIGPIPE in the writing thread, and under a C
//! host with the default disposition that kills the host. `send` writes from the caller's
//! thread, which we do not own and cannot leave with SIGPIPE blocked; a mask pair around
//! each write costs two system calls per line. Instead [`StdinEnd`] keeps the pipe's read
//! end open in the host as well: the pipe always has a reader, so a write never raises
//! SIGPIPE (or returns `EPIPE`), whatever the host's disposition, with no extra system
//! call. A line written after the child died stays in the pipe until the writer sees the
//! death (the reaper, or the writer's wait for room in the pipe, tells it); the request it
//! carried ends as the instance's death, as it would have with `EPIPE`.
//!
//! The cost is one fd per instance. The limit this brings: a tool that closes its stdin but
//! keeps running is not noticed at the write (no `EPIPE`): its requests time out.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An fd at 3 or above, close-on-exec (so a `dup2` of it to 0..2 in a child cannot clobber
/// another end).
pub(crate) fn high_fd(owned: OwnedFd) -> io::Result<OwnedFd> {
    let fd = owned.as_raw_fd();
    if fd >= 3 {
        return Ok(owned);
    }
    // SAFETY: fcntl on a valid fd we own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// A pipe, both ends close-on-exec and at fd 3 or above: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two fresh fds, owned from here on.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high_fd(r)?, high_fd(w)?))
}

/// The host's end of a child's stdin: the write end, and the read end held open beside it
/// so that no write raises SIGPIPE (see the module docs).
pub(crate) struct StdinEnd {
    /// The write end.
    pub file: File,
    /// The read end, never read; closed with this value (none for a terminal, whose
    /// master end raises no SIGPIPE).
    _reader: Option<OwnedFd>,
}

impl StdinEnd {
    /// `write` with the pipe's `reader` held open beside it.
    pub fn new(write: OwnedFd, reader: OwnedFd) -> StdinEnd {
        StdinEnd {
            file: File::from(write),
            _reader: Some(reader),
        }
    }

    /// The master end of a pseudo-terminal (see `spawn::Pty`): a write after the child's
    /// side is gone fails with `EIO`, with no signal.
    pub fn pty(master: OwnedFd) -> StdinEnd {
        StdinEnd {
            file: File::from(master),
            _reader: None,
        }
    }
}
