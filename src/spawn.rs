//! Starting a child with `posix_spawn`, which does not copy the host.
//!
//! `fork` copies the parent's page tables, so its cost grows with the host (every instance
//! adds thread stacks and buffers) and starting N instances is O(N²). glibc's
//! `posix_spawn` runs the child on a small stack with `clone(CLONE_VM | CLONE_VFORK)`:
//! nothing is copied, and the cost is flat in the size of the host.
//!
//! The hygiene a `pre_exec` hook used to give comes from spawn attributes and file
//! actions (glibc ≥ 2.34):
//! - an empty signal mask (`POSIX_SPAWN_SETSIGMASK`) and every signal at its default
//!   disposition (`POSIX_SPAWN_SETSIGDEF` over a set with every bit on, including the two
//!   that glibc reserves for itself and `sigfillset` leaves out, which a host may still
//!   have ignored);
//! - its own process group (`POSIX_SPAWN_SETPGROUP`, group 0);
//! - only stdio inherited: the three ends are `dup2`ed to 0, 1, 2, then
//!   `posix_spawn_file_actions_addclosefrom_np(3)` closes everything above (a C host may
//!   have leaked fds without `O_CLOEXEC`), and every fd we open is close-on-exec anyway;
//! - `cwd` by `posix_spawn_file_actions_addchdir_np`; the program is looked up in the
//!   child's `PATH` here (as `Command` does), so the error for a missing binary and for a
//!   bad `cwd` can be told apart.
//!
//! stdin, stdout and stderr are pipes (or, with `pty`, stdin and stdout a pseudo-terminal:
//! [`Pty`]); the host keeps the read end of stdin open as well,
//! so a write to it never raises SIGPIPE ([`crate::pipe`]). (A `socketpair` for stdin
//! written with `send(MSG_NOSIGNAL)` would do that too, but a round trip through a Unix
//! socket measured 1.7 µs slower than through a pipe.)

mod helper;

pub(crate) use helper::with_helper;

use crate::pipe::{pipe, StdinEnd};
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// A child started by [`spawn`]: its pid and the parent's ends of its stdio.
pub(crate) struct Child {
    pub pid: i32,
    pub stdin: StdinEnd,
    pub stdout: File,
    pub stderr: File,
}

/// Why [`spawn`] failed, for the caller's message.
pub(crate) enum SpawnError {
    /// The program was not found (not in `PATH`, or no such file).
    NotFound,
    /// `cwd` is not a directory.
    BadCwd(PathBuf),
    /// The program is there but cannot be executed.
    PermissionDenied,
    /// Anything else (out of fds, out of memory, ...).
    Other(io::Error),
}

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

/// The child's environment: the host's (unless cleared) with `env` over it.
fn environment(env: &BTreeMap<String, String>, clear: bool) -> Vec<(OsString, OsString)> {
    let mut all: BTreeMap<OsString, OsString> = if clear {
        BTreeMap::new()
    } else {
        std::env::vars_os().collect()
    };
    for (k, v) in env {
        all.insert(k.into(), v.into());
    }
    all.into_iter().collect()
}

fn executable(p: &Path) -> bool {
    let Ok(c) = cstr(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access on a NUL-terminated path.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

/// `program` as `execvp` would find it with the child's `PATH`: as given when it holds a
/// `/`, else the first executable match in `PATH` (default `/usr/local/bin:/usr/bin:/bin`).
///
/// A path is checked here too (relative to `cwd` when it is relative), so a missing or
/// non-executable program is reported even where the spawn itself cannot tell (valgrind
/// runs the child as a plain fork, and an exec failure then shows only as exit 127).
fn resolve(program: &str, path: Option<&OsStr>, cwd: Option<&Path>) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let given = PathBuf::from(program);
        let full = match cwd {
            Some(d) if given.is_relative() => d.join(&given),
            _ => given.clone(),
        };
        return if executable(&full) {
            Ok(given)
        } else if full.exists() {
            Err(SpawnError::PermissionDenied)
        } else {
            Err(SpawnError::NotFound)
        };
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    let mut denied = false;
    for dir in path.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        let cand = Path::new(OsStr::from_bytes(dir)).join(program);
        if executable(&cand) {
            return Ok(cand);
        }
        denied |= cand.is_file();
    }
    Err(if denied {
        SpawnError::PermissionDenied
    } else {
        SpawnError::NotFound
    })
}

/// Spawn `argv` with the hygiene above (with `pty`, stdin and stdout on a pseudo-terminal:
/// see [`Pty`]). Thread-safe; nothing of the host is copied.
pub(crate) fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    env_clear: bool,
    cwd: Option<&Path>,
    pty: bool,
) -> Result<Child, SpawnError> {
    if let Some(d) = cwd {
        if !d.is_dir() {
            return Err(SpawnError::BadCwd(d.to_path_buf()));
        }
    }
    let envs = environment(env, env_clear);
    let path_var = envs
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let program = resolve(&argv[0], path_var, cwd)?;
    let other = SpawnError::Other;
    let job = Job {
        prog: cstr(program.as_os_str().as_bytes()).map_err(other)?,
        args: argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<io::Result<_>>()
            .map_err(other)?,
        env: env_strings(envs).map_err(other)?,
        cwd: cwd
            .map(|d| cstr(d.as_os_str().as_bytes()))
            .transpose()
            .map_err(other)?,
        tty: None,
    };
    let (err_parent, err_child) = pipe().map_err(other)?;
    use std::os::fd::AsRawFd;
    let r = if pty {
        let pty = Pty::open().map_err(other)?;
        let job = Job {
            tty: Some(pty.path.clone()),
            ..job
        };
        // The terminal's side is opened by the child by its name (which makes it the
        // child's controlling terminal); the fds passed for 0 and 1 are not used.
        let slave = pty.slave.as_raw_fd();
        let ends = [slave, slave, err_child.as_raw_fd()];
        let (r, pid) = helper::spawn(job, ends);
        // Ours closed now: once the child's side is gone, reads of the master end (EIO).
        drop((pty.slave, err_child));
        (r, pid, pty.master.map(|m| (m.stdin, m.stdout)))
    } else {
        let (in_child, in_parent) = pipe().map_err(other)?;
        let (out_parent, out_child) = pipe().map_err(other)?;
        let ends = [
            in_child.as_raw_fd(),
            out_child.as_raw_fd(),
            err_child.as_raw_fd(),
        ];
        // Through this thread's helper, if it has one (see `helper`).
        let (r, pid) = helper::spawn(job, ends);
        drop((out_child, err_child));
        (
            r,
            pid,
            Ok((StdinEnd::new(in_parent, in_child), File::from(out_parent))),
        )
    };
    let (r, pid, ends) = r;
    let (stdin, stdout) = ends.map_err(other)?;
    match r {
        0 => Ok(Child {
            pid,
            stdin,
            stdout,
            stderr: File::from(err_parent),
        }),
        libc::ENOENT | libc::ENOTDIR => Err(match cwd {
            Some(d) if !d.is_dir() => SpawnError::BadCwd(d.to_path_buf()),
            _ => SpawnError::NotFound,
        }),
        libc::EACCES => Err(SpawnError::PermissionDenied),
        e => Err(SpawnError::Other(io::Error::from_raw_os_error(e))),
    }
}

/// What `posix_spawn` needs, as owned C strings (so a helper thread can run it).
pub(crate) struct Job {
    prog: CString,
    args: Vec<CString>,
    env: Vec<CString>,
    cwd: Option<CString>,
    /// The terminal's path, to open as stdin and stdout (see [`Pty`]).
    tty: Option<CString>,
}

/// Window size of a tool's terminal: wide, so that tools which wrap or lay out their
/// output to the terminal's width (REPLs, progress lines) do so rarely.
pub const PTY_COLUMNS: u16 = 1000;
/// Rows of a tool's terminal.
pub const PTY_ROWS: u16 = 50;

/// A pseudo-terminal for a child's stdin and stdout, in raw mode (no echo, no CR/LF
/// translation, no canonical line limit) with a [`PTY_COLUMNS`] × [`PTY_ROWS`] window.
/// The child becomes a session leader (`POSIX_SPAWN_SETSID`, which also makes it its
/// process group's leader, so the group kill is the same) and opens the terminal by name,
/// which makes it its controlling terminal; the parent keeps the master end, read by the
/// stdout reader and written (through a second fd on the same description) by the stdin
/// writer. A write to the master never raises SIGPIPE.
struct Pty {
    /// Our ends, or why they could not be made (reported after the spawn's own error).
    master: io::Result<MasterEnds>,
    slave: OwnedFd,
    path: CString,
}

struct MasterEnds {
    stdin: StdinEnd,
    stdout: File,
}

impl Pty {
    fn open() -> io::Result<Pty> {
        // SAFETY: posix_openpt returns a new fd (checked), owned from here on; grantpt,
        // unlockpt, ptsname_r and the termios calls act on that fd with buffers we own.
        unsafe {
            let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let master = OwnedFd::from_raw_fd(fd);
            if libc::grantpt(fd) != 0 || libc::unlockpt(fd) != 0 {
                return Err(io::Error::last_os_error());
            }
            let mut name = [0 as libc::c_char; 128];
            let r = libc::ptsname_r(fd, name.as_mut_ptr(), name.len());
            if r != 0 {
                return Err(io::Error::from_raw_os_error(r));
            }
            let path = std::ffi::CStr::from_ptr(name.as_ptr()).to_owned();
            let s = libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            );
            if s < 0 {
                return Err(io::Error::last_os_error());
            }
            let slave = OwnedFd::from_raw_fd(s);
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(s, &mut t) != 0 {
                return Err(io::Error::last_os_error());
            }
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(s, libc::TCSANOW, &t) != 0 {
                return Err(io::Error::last_os_error());
            }
            let ws = libc::winsize {
                ws_row: PTY_ROWS,
                ws_col: PTY_COLUMNS,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            libc::ioctl(fd, libc::TIOCSWINSZ, &ws);
            let master = high(master).and_then(|out| {
                let writer = out.try_clone()?;
                Ok(MasterEnds {
                    stdin: StdinEnd::pty(writer),
                    stdout: File::from(out),
                })
            });
            Ok(Pty {
                master,
                slave: high(slave)?,
                path,
            })
        }
    }
}

/// `fd` moved to 3 or above if it is below (see [`crate::pipe`]).
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    crate::pipe::high_fd(fd)
}

/// `posix_spawn` of `job` with the pipe `ends` (fds in the calling thread's table) as the
/// child's stdio and the hygiene above: `(0, pid)` or `(errno, 0)`.
fn run(job: &Job, ends: &[i32; 3]) -> (i32, libc::pid_t) {
    let mut argp: Vec<*mut libc::c_char> = job.args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argp.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = job.env.iter().map(|a| a.as_ptr().cast_mut()).collect();
    envp.push(std::ptr::null_mut());
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and
    // destroyed on every path; every pointer passed stays alive until posix_spawn returns.
    let r = unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let r = libc::posix_spawnattr_init(&mut attr);
        if r != 0 {
            return (r, 0);
        }
        let r = libc::posix_spawn_file_actions_init(&mut fa);
        if r != 0 {
            libc::posix_spawnattr_destroy(&mut attr);
            return (r, 0);
        }
        let r = match set_up(&mut attr, &mut fa, ends, job.cwd.as_ref(), job.tty.as_ref()) {
            Ok(()) => libc::posix_spawn(
                &mut pid,
                job.prog.as_ptr(),
                &fa,
                &attr,
                argp.as_ptr(),
                envp.as_ptr(),
            ),
            Err(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        };
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut attr);
        r
    };
    (r, pid)
}

/// The environment as the `KEY=value` C strings `posix_spawn` takes.
fn env_strings(envs: Vec<(OsString, OsString)>) -> io::Result<Vec<CString>> {
    envs.into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            cstr(&kv)
        })
        .collect()
}

/// Fill the initialised spawn attributes `attr` and file actions `fa`: an empty signal
/// mask, every signal to its default, a new process group, the pipe `ends` as fds 0, 1
/// and 2 with every other fd closed, and the working directory `cwd`.
fn set_up(
    attr: &mut libc::posix_spawnattr_t,
    fa: &mut libc::posix_spawn_file_actions_t,
    ends: &[i32; 3],
    cwd: Option<&CString>,
    tty: Option<&CString>,
) -> io::Result<()> {
    // SAFETY: `attr` and `fa` were initialised by the caller; the sigsets are plain data
    // initialised here; `cwd` outlives the call that copies it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        // Every bit on: glibc's sigfillset leaves out its two internal signals.
        let mut all: libc::sigset_t = std::mem::zeroed();
        std::ptr::write_bytes(&mut all as *mut libc::sigset_t, 0xff, 1);
        check(libc::posix_spawnattr_setsigmask(attr, &empty))?;
        check(libc::posix_spawnattr_setsigdefault(attr, &all))?;
        // A new session (for a terminal) leads a new group as well; else a new group.
        let group = match tty {
            Some(_) => libc::POSIX_SPAWN_SETSID,
            None => {
                check(libc::posix_spawnattr_setpgroup(attr, 0))?;
                libc::POSIX_SPAWN_SETPGROUP as libc::c_short
            }
        };
        let flags = libc::POSIX_SPAWN_SETSIGMASK as libc::c_short
            | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
            | group;
        check(libc::posix_spawnattr_setflags(attr, flags))?;
        match tty {
            Some(path) => {
                // Opened after setsid, without O_NOCTTY: the controlling terminal.
                check(libc::posix_spawn_file_actions_addopen(
                    fa,
                    0,
                    path.as_ptr(),
                    libc::O_RDWR,
                    0,
                ))?;
                check(libc::posix_spawn_file_actions_adddup2(fa, 0, 1))?;
                check(libc::posix_spawn_file_actions_adddup2(fa, ends[2], 2))?;
            }
            None => {
                for (target, fd) in ends.iter().enumerate() {
                    check(libc::posix_spawn_file_actions_adddup2(
                        fa,
                        *fd,
                        target as i32,
                    ))?;
                }
            }
        }
        check(libc::posix_spawn_file_actions_addclosefrom_np(fa, 3))?;
        if let Some(d) = cwd {
            check(libc::posix_spawn_file_actions_addchdir_np(fa, d.as_ptr()))?;
        }
        Ok(())
    }
}
