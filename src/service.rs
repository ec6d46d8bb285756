//! The service behind `toolpool serve`: one process owns the pools of a registry and the
//! process limit, and serves them to many host processes on a Unix socket. The top layer
//! of the crate: a host of [`Pools`] like any other, speaking the wire protocol
//! (`wire`) to [`Client`](crate::Client)s.
//!
//! One thread accepts; each connection gets a thread that reads a call, runs it on the
//! pool (the same method a local caller would), and writes the answer; the watcher
//! (`watch`) cancels the running call when its client sends a cancel or goes away. A
//! lease lives with its connection.

mod conn;
mod listen;
mod watch;

use crate::error::{Error, Result};
use crate::limiter::{Limiter, LimiterStatus};
use crate::pools::{Pools, ReloadReport};
use crate::spec::Registry;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use listen::systemd_socket;

/// The default `--max-clients`: connections served at once; more are refused.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// How long a new connection may take to say hello before it is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How the service listens, and whom it serves.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The socket file's mode (`--socket-mode`, default `0o600`).
    pub socket_mode: u32,
    /// A group whose members may connect, and that owns the socket (`--socket-group`).
    pub socket_group: Option<u32>,
    /// Connections served at once (`--max-clients`); one more gets
    /// [`Error::Service`] and is closed.
    pub max_clients: usize,
}

impl Default for ServiceOptions {
    fn default() -> ServiceOptions {
        ServiceOptions {
            socket_mode: 0o600,
            socket_group: None,
            max_clients: DEFAULT_MAX_CLIENTS,
        }
    }
}

/// A running service (see the module docs). `Send + Sync`: [`Service::run`] on one
/// thread, [`Service::stop`] and [`Service::reload`] from others.
pub struct Service {
    shared: Arc<Shared>,
}

/// What the accept loop and every connection thread share.
pub(crate) struct Shared {
    pub pools: Pools,
    pub options: ServiceOptions,
    pub watcher: Arc<watch::Watcher>,
    listener: OwnedFd,
    /// The socket file this service made (removed at shutdown); `None` for a socket
    /// systemd passed.
    path: Option<PathBuf>,
    /// Live connections: their socket fds (to shut them down) and whether a call runs.
    conns: Mutex<HashMap<u64, ConnState>>,
    next_conn: AtomicU64,
    stopping: AtomicBool,
    shut_down: AtomicBool,
    started: Instant,
    own_uid: u32,
}

/// What the service knows of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnState {
    fd: i32,
    peer_pid: i32,
    busy: bool,
}

/// One connected client, in [`ServiceStatus`].
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    /// The client's pid (its connection's peer).
    pub pid: i32,
    /// Inside a call now.
    pub busy: bool,
}

/// The service's own status: `GET /status` of `toolpool serve --metrics`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    /// This process.
    pub pid: u32,
    /// Seconds since the service started.
    pub uptime_s: u64,
    /// Connections open now (a client process may hold several: one per call in flight,
    /// one per lease).
    pub clients: Vec<ClientStatus>,
    /// The process limit and what counts against it.
    pub limit: LimiterStatus,
    /// Every pool's status, by tool id.
    pub pools: std::collections::BTreeMap<String, crate::PoolStatus>,
}

impl Service {
    /// Start the pools of `registry` and serve them on a new socket at `path`. The socket
    /// accepts connections only once every pool has started.
    ///
    /// Errors: [`Error::Config`] when a live service already listens at `path` or the
    /// path is not a socket; [`Error::Io`] when the socket cannot be made; a tool's
    /// start-up error.
    pub fn bind(path: &Path, registry: Registry, options: ServiceOptions) -> Result<Service> {
        let fd = listen::bind(path, options.socket_mode, options.socket_group)?;
        let pools = match Pools::new(registry) {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        listen::listen(&fd)?;
        Service::with(fd, Some(path.to_path_buf()), pools, options)
    }

    /// Serve the pools of `registry` on a socket that already listens (one from
    /// [`systemd_socket`]).
    pub fn from_socket(
        listener: OwnedFd,
        registry: Registry,
        options: ServiceOptions,
    ) -> Result<Service> {
        let pools = Pools::new(registry)?;
        Service::with(listener, None, pools, options)
    }

    fn with(
        listener: OwnedFd,
        path: Option<PathBuf>,
        pools: Pools,
        options: ServiceOptions,
    ) -> Result<Service> {
        let watcher = watch::Watcher::start()
            .map_err(|e| Error::Io(format!("cannot start the service's watcher: {e}")))?;
        Ok(Service {
            shared: Arc::new(Shared {
                pools,
                options,
                watcher,
                listener,
                path,
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(1),
                stopping: AtomicBool::new(false),
                shut_down: AtomicBool::new(false),
                started: Instant::now(),
                // SAFETY: geteuid cannot fail.
                own_uid: unsafe { libc::geteuid() },
            }),
        })
    }

    /// Accept and serve clients until [`Service::stop`]; each connection on a thread of
    /// its own.
    pub fn run(&self) -> Result<()> {
        let sh = &self.shared;
        while !sh.stopping.load(SeqCst) {
            // SAFETY: accept4 on our listening socket; a non-negative result is a new fd.
            let fd = unsafe {
                libc::accept4(
                    sh.listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                let e = std::io::Error::last_os_error();
                if sh.stopping.load(SeqCst) {
                    break;
                }
                match e.raw_os_error() {
                    Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                    // Out of fds or memory: wait a little rather than spin.
                    Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS)
                    | Some(libc::ENOMEM) => {
                        log::warn!(target: "toolpool::service", "accept: {e}; retrying in 100 ms");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    _ => return Err(Error::Io(format!("accept on the service socket: {e}"))),
                }
            }
            // SAFETY: `fd` was just returned by accept4 and is owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            conn::start(Arc::clone(sh), fd);
        }
        Ok(())
    }

    /// Make [`Service::run`] return (from any thread; idempotent). Connections stay until
    /// [`Service::shutdown`].
    pub fn stop(&self) {
        if !self.shared.stopping.swap(true, SeqCst) {
            // SAFETY: a live socket; shutdown wakes a thread blocked in accept.
            unsafe { libc::shutdown(self.shared.listener.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Let the calls in flight finish (up to `grace`), close every connection (which
    /// frees their leases), shut every pool down with `grace`, and remove the socket file.
    /// Idempotent.
    pub fn shutdown(&self, grace: Duration) {
        self.stop();
        let sh = &self.shared;
        if sh.shut_down.swap(true, SeqCst) {
            return;
        }
        let until = Instant::now() + grace;
        while Instant::now() < until && sh.conns.lock().values().any(|c| c.busy) {
            std::thread::sleep(Duration::from_millis(5));
        }
        for c in sh.conns.lock().values() {
            // SAFETY: the fd stays open while it is in the table (its thread removes it
            // before closing it); shutdown makes that thread's read return.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        }
        sh.pools.shutdown(Some(grace));
        sh.watcher.stop();
        if let Some(p) = &sh.path {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Take a new registry (what SIGHUP does): see [`Pools::reload`].
    pub fn reload(&self, registry: Registry) -> Result<ReloadReport> {
        self.shared.pools.reload(registry)
    }

    /// The pools this service serves.
    pub fn pools(&self) -> &Pools {
        &self.shared.pools
    }

    /// The service's status: clients, the process limit, every pool.
    pub fn status(&self) -> ServiceStatus {
        let sh = &self.shared;
        let clients = sh
            .conns
            .lock()
            .values()
            .map(|c| ClientStatus {
                pid: c.peer_pid,
                busy: c.busy,
            })
            .collect();
        ServiceStatus {
            pid: std::process::id(),
            uptime_s: sh.started.elapsed().as_secs(),
            clients,
            limit: Limiter::global().status(),
            pools: sh.pools.status(),
        }
    }

    /// Every pool's Prometheus text with the process limit.
    pub fn metrics_prometheus(&self) -> String {
        self.shared.pools.metrics_prometheus()
    }
}

impl Shared {
    /// Register a new connection; `None` when `max_clients` are connected already.
    fn admit(&self, fd: i32, peer_pid: i32) -> Option<u64> {
        let mut conns = self.conns.lock();
        if conns.len() >= self.options.max_clients {
            return None;
        }
        let id = self.next_conn.fetch_add(1, Relaxed);
        conns.insert(
            id,
            ConnState {
                fd,
                peer_pid,
                busy: false,
            },
        );
        Some(id)
    }

    /// Mark connection `id` inside a call or not.
    fn set_busy(&self, id: u64, busy: bool) {
        if let Some(c) = self.conns.lock().get_mut(&id) {
            c.busy = busy;
        }
    }

    /// Forget connection `id` (before its fd closes).
    fn leave(&self, id: u64) {
        self.conns.lock().remove(&id);
    }
}

impl Drop for Service {
    /// Shut down with a grace of 2 s if [`Service::shutdown`] was not called.
    fn drop(&mut self) {
        self.shutdown(Duration::from_secs(2));
    }
}
