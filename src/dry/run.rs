//! A dry run's stand-in (`RunSpec::dry_run`): a [`Responder`] thread at the far end of
//! real pipes that reads and drops stdin, and after `delay_ms` writes the canned stdout
//! and stderr lines and ends with the exit code. A signal (`Run::kill`, the run's
//! timeout) ends it at once with that signal, as it would a process. No process, no pid,
//! no slot of the process limit.

use super::{set_nonblocking, stand_in, Responder, Started};
use crate::error::{ExitInfo, Result};
use crate::process::OnExit;
use crate::spec::RunDryRun;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Start the stand-in of the dry run `name` (which would run `argv`); it runs `on_exit`
/// on its own thread once it has ended.
pub(crate) fn spawn_run(
    dry: &RunDryRun,
    name: &str,
    argv: &[String],
    on_exit: OnExit,
) -> Result<Started> {
    log::debug!(target: "toolpool::dry_run", "dry run={name} would start argv={argv:?}");
    let dry = dry.clone();
    stand_in(
        format!("toolpool-dryrun-{name}"),
        move |r, stdin, stdout, stderr| {
            set_nonblocking(&stderr);
            act(&dry, r, stdin, stdout, stderr)
        },
        on_exit,
    )
}

/// What the stand-in does (see the module docs).
fn act(dry: &RunDryRun, r: &Responder, mut stdin: File, stdout: File, stderr: File) -> ExitInfo {
    let due = Instant::now() + Duration::from_millis(dry.delay_ms);
    let mut stdin_open = true;
    let mut sink = [0u8; 4096];
    // Until the delay has passed: drop what comes on stdin, end at a signal.
    loop {
        if let Some(sig) = r.state.lock().signal {
            return ExitInfo::Signal(sig);
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let fd = if stdin_open { stdin.as_raw_fd() } else { -1 };
        if wait(r, fd, libc::POLLIN, left) {
            match stdin.read(&mut sink) {
                Ok(0) => stdin_open = false,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => stdin_open = false,
            }
        }
    }
    for (lines, file) in [(&dry.stdout, &stdout), (&dry.stderr, &stderr)] {
        let mut bytes: Vec<u8> = Vec::new();
        for l in lines {
            bytes.extend_from_slice(l.as_bytes());
            bytes.push(b'\n');
        }
        if let Err(exit) = write_all(r, file, &bytes) {
            return exit;
        }
    }
    ExitInfo::Code(dry.exit_code)
}

/// Write `bytes` to the non-blocking `file`, waiting for room while nobody reads; a signal
/// ends it (`Err` with the exit it makes), as does a reader gone for good (SIGPIPE).
fn write_all(
    r: &Responder,
    mut file: &File,
    mut bytes: &[u8],
) -> std::result::Result<(), ExitInfo> {
    while !bytes.is_empty() {
        if let Some(sig) = r.state.lock().signal {
            return Err(ExitInfo::Signal(sig));
        }
        match file.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait(
                    r,
                    file.as_raw_fd(),
                    libc::POLLOUT,
                    Duration::from_secs(3600),
                );
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(ExitInfo::Signal(libc::SIGPIPE)),
        }
    }
    Ok(())
}

/// Wait up to `left` for `events` on `fd` (-1: none) or a signal (the wake eventfd, which
/// stays readable: the caller looks at the signal next). True when `fd` is ready.
fn wait(r: &Responder, fd: i32, events: libc::c_short, left: Duration) -> bool {
    let mut p = [
        libc::pollfd {
            fd: r.wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd,
            events,
            revents: 0,
        },
    ];
    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: poll on two initialised pollfds (a negative fd is skipped).
    let n = unsafe { libc::poll(p.as_mut_ptr(), 2, ms) };
    n > 0 && p[1].revents != 0
}
