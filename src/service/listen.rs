//! The service's socket: bound with the mode and group asked for (before `listen`, so no
//! one connects to it with other permissions), a stale file replaced, a live service on
//! the same path refused; or the socket systemd passes (`LISTEN_FDS`). And who may
//! connect: the peer credentials of each connection.

use crate::error::{Error, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `SO_PEERGROUPS` (Linux 4.13): the peer's supplementary groups.
const SO_PEERGROUPS: libc::c_int = 59;

/// Connections waiting for `accept`.
const BACKLOG: i32 = 128;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Bind a listening Unix socket at `path` with file mode `mode` and, when given, group
/// `group`. A socket file nobody listens on is replaced; one a live process listens on
/// is an error, as is a path that is not a socket.
pub(crate) fn bind(path: &Path, mode: u32, group: Option<u32>) -> Result<OwnedFd> {
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::Service(format!(
                    "socket path {shown} exists and is not a socket; remove it or choose another \
                     path (--socket)"
                )));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Error::Service(format!(
                    "a toolpool service already listens on {shown}: stop it first, or choose \
                     another path (--socket)"
                )));
            }
            // Stale: left by a service that ended without removing it.
            std::fs::remove_file(path)
                .map_err(|e| Error::Io(format!("cannot remove the stale socket {shown}: {e}")))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::Io(format!("cannot look at {shown}: {e}"))),
    }
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("socket path {shown} contains a NUL byte")))?;
    // SAFETY: a zeroed sockaddr_un is valid; we copy at most sun_path's size minus the NUL.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = cpath.as_bytes_with_nul();
    if bytes.len() > addr.sun_path.len() {
        return Err(Error::Config(format!(
            "socket path {shown} is {} bytes long; a Unix socket path has at most {}",
            bytes.len() - 1,
            addr.sun_path.len() - 1
        )));
    }
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let io = |what: &str| {
        Error::Io(format!(
            "cannot {what} the socket {shown}: {}",
            std::io::Error::last_os_error()
        ))
    };
    // SAFETY: socket() with valid flags; a non-negative result is a new fd we own.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io("create"));
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
    if unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len,
        )
    } != 0
    {
        return Err(io("bind"));
    }
    // Mode and group before listen(): until then every connect is refused.
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::chmod(cpath.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(io("set the mode of"));
    }
    if let Some(gid) = group {
        // SAFETY: a NUL-terminated path; uid -1 leaves the owner as it is.
        if unsafe { libc::chown(cpath.as_ptr(), u32::MAX, gid) } != 0 {
            return Err(io("set the group of"));
        }
    }
    Ok(fd)
}

/// Start listening on a socket from [`bind`].
pub(crate) fn listen(fd: &OwnedFd) -> Result<()> {
    // SAFETY: a live socket fd.
    if unsafe { libc::listen(fd.as_raw_fd(), BACKLOG) } != 0 {
        return Err(Error::Io(format!(
            "cannot listen on the service socket: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The listening socket systemd passed this process (`LISTEN_PID` is this process and
/// `LISTEN_FDS` is at least 1): fd 3, made close-on-exec. `None` without socket
/// activation. Read once, before any thread starts; the variables are left as they are.
pub fn systemd_socket() -> Result<Option<OwnedFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        return Ok(None);
    }
    let n: u32 = fds.trim().parse().map_err(|_| {
        Error::Config(format!(
            "LISTEN_FDS={fds:?} is not a number of file descriptors"
        ))
    })?;
    if n == 0 {
        return Ok(None);
    }
    if n > 1 {
        log::warn!(target: "toolpool::service", "systemd passed {n} sockets; serving the first (fd 3)");
    }
    // SAFETY: fcntl on an fd number; a failure means fd 3 is not open.
    if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(Error::Config(format!(
            "LISTEN_FDS={n} but fd 3 is not open: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: systemd hands fd 3 to this process; nothing else owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) }))
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the peer of `fd` (`SO_PEERCRED`, `SO_PEERGROUPS`).
    pub fn of(fd: RawFd) -> std::io::Result<Peer> {
        let mut cred = libc::ucred {
            pid: 0,
            uid: 0,
            gid: 0,
        };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut groups = vec![0u32; 256];
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: `groups` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        // An old kernel, or more than 256 groups: the primary group alone.
        groups.truncate(if rc == 0 { len as usize / 4 } else { 0 });
        Ok(Peer {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
            groups,
        })
    }

    /// Whether this peer may use a service running as `own_uid`: the same user, root, or a
    /// member of `group`. The error says who is allowed.
    pub fn check(&self, own_uid: u32, group: Option<u32>) -> std::result::Result<(), String> {
        let in_group = group.is_some_and(|g| self.gid == g || self.groups.contains(&g));
        if self.uid == own_uid || self.uid == 0 || in_group {
            return Ok(());
        }
        let who = match group {
            Some(g) => format!("uid {own_uid}, root, or members of group {g} (--socket-group)"),
            None => format!("uid {own_uid} and root (--socket-group lets a group in)"),
        };
        Err(format!(
            "uid {} (pid {}) may not use this toolpool service: it serves {who}",
            self.uid, self.pid
        ))
    }
}
