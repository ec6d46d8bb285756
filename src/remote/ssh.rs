//! OpenSSH connection sharing, managed per pool: one master connection (`ssh -M -N`) per
//! host and per [`SESSIONS_PER_CONNECTION`] instances on it, with its control socket in a
//! private directory (mode 0700, from `mkdtemp`). Instances connect through the socket
//! (`ControlMaster=no`), so a start costs a new session, not a new TCP connection and key
//! exchange. A master that died (dropped connection) is replaced at the next start; at
//! shutdown every master gets SIGTERM (then SIGKILL), is reaped, and the directory is
//! removed.
//!
//! Masters are toolpool's own children (own process group, reaped by a thread of their
//! own), but not instances: they do not count toward the process limit and `kill_all`
//! leaves them.

use crate::error::{Error, Result};
use crate::process::{self, Launch, Process};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Sessions opened through one master connection: OpenSSH's default `MaxSessions` (a
/// server refuses more). A host with more instances gets one master per 10.
pub const SESSIONS_PER_CONNECTION: usize = 10;
/// Bytes of a master's stderr kept for error messages.
const STDERR_KEEP: usize = 4096;
/// How long a master has to exit on SIGTERM at shutdown before SIGKILL.
const MASTER_GRACE: Duration = Duration::from_millis(500);

/// Options toolpool gives every ssh it runs, after the spec's `options` (ssh takes the
/// first value of each option, so the spec's win): never prompt (a prompt would hang a
/// start), no terminal, notice a dead connection within 30 s.
pub const SSH_DEFAULTS: &[&str] = &[
    "-o",
    "BatchMode=yes",
    "-o",
    "ServerAliveInterval=10",
    "-o",
    "ServerAliveCountMax=3",
    "-T",
];

/// A master that could not connect is not tried again for this long: the other starts of
/// the same round (a pool's start, a burst of restarts) get its error at once instead of
/// each waiting for the host again.
pub const FAILURE_REUSE: Duration = Duration::from_millis(500);

/// One master slot: the running master, or the last failure.
#[derive(Default)]
struct Slot {
    master: Option<Master>,
    failed: Option<(Instant, String)>,
}

/// A slot shared by the starts that use it.
type SharedSlot = Arc<Mutex<Slot>>;

struct Master {
    process: Arc<Process>,
    stderr: Arc<Mutex<VecDeque<u8>>>,
    drainer: Option<JoinHandle<()>>,
}

impl Master {
    fn stderr_text(&self) -> String {
        let bytes: Vec<u8> = self.stderr.lock().iter().copied().collect();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// SIGTERM, a short wait, SIGKILL, reap, join the stderr drainer.
    fn stop(mut self) {
        self.process.signal(libc::SIGTERM);
        self.process.wait_timeout(MASTER_GRACE);
        self.process.kill_and_reap();
        self.join_drainer();
    }

    fn join_drainer(&mut self) {
        if let Some(d) = self.drainer.take() {
            // The pipe closes when the master exits (it forks nothing); bounded anyway.
            let deadline = Instant::now() + Duration::from_secs(2);
            while !d.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if d.is_finished() {
                let _ = d.join();
            }
        }
    }
}

/// The masters of one pool.
pub(crate) struct Masters {
    dir: PathBuf,
    options: Vec<String>,
    /// By (host, shard): the socket's master, if started.
    masters: Mutex<BTreeMap<(String, usize), SharedSlot>>,
    /// Set by [`Masters::shutdown`]: no master starts after it.
    closed: std::sync::atomic::AtomicBool,
}

impl Masters {
    /// A private directory for the control sockets; nothing started yet.
    pub fn new(options: &[String]) -> Result<Masters> {
        Ok(Masters {
            dir: private_dir()?,
            options: options.to_vec(),
            masters: Mutex::new(BTreeMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The control socket of `shard` of `host`, its master started (or restarted) if
    /// needed and ready (authenticated) before `deadline`.
    pub fn socket(&self, host: &str, shard: usize, deadline: Instant) -> Result<PathBuf> {
        let slot = {
            let mut all = self.masters.lock();
            if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(Error::Spawn(format!(
                    "host '{host}': the pool is shutting down"
                )));
            }
            Arc::clone(all.entry((host.to_string(), shard)).or_default())
        };
        let mut slot = slot.lock();
        let path = self.socket_path(host, shard);
        if let Some(m) = slot.master.as_ref() {
            if m.process.is_alive() && path.exists() {
                return Ok(path);
            }
        }
        if let Some((at, why)) = &slot.failed {
            if at.elapsed() < FAILURE_REUSE {
                return Err(Error::Spawn(why.clone()));
            }
        }
        if let Some(old) = slot.master.take() {
            old.stop();
        }
        let _ = std::fs::remove_file(&path);
        match self.connect(host, &path, deadline) {
            Ok(master) => {
                slot.master = Some(master);
                slot.failed = None;
                Ok(path)
            }
            Err(why) => {
                slot.failed = Some((Instant::now(), why.clone()));
                Err(Error::Spawn(why))
            }
        }
    }

    /// Start a master for `host` on `path` and wait until it is ready; the message of a
    /// failure names the host and has ssh's stderr.
    fn connect(
        &self,
        host: &str,
        path: &Path,
        deadline: Instant,
    ) -> std::result::Result<Master, String> {
        let master = self.start(host, path).map_err(|e| e.to_string())?;
        loop {
            if path.exists() {
                return Ok(master);
            }
            if !master.process.is_alive() || Instant::now() >= deadline {
                let alive = master.process.is_alive();
                let exit = master.process.exit();
                master.process.kill_and_reap();
                let mut master = master;
                master.join_drainer();
                let why = master.stderr_text();
                let how = match (alive, exit) {
                    (true, _) => "did not connect in time (startup.timeout_ms)".to_string(),
                    (false, Some(e)) => format!("failed ({e})"),
                    (false, None) => "failed".to_string(),
                };
                return Err(format!(
                    "host '{host}': ssh {how}: {}",
                    if why.is_empty() { "no message" } else { &why }
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn socket_path(&self, host: &str, shard: usize) -> PathBuf {
        // Short names: a unix socket path is limited to 107 bytes.
        self.dir.join(format!("{}-{shard}", short_hash(host)))
    }

    fn start(&self, host: &str, path: &Path) -> Result<Master> {
        let mut argv: Vec<String> = vec![
            "ssh".into(),
            "-o".into(),
            "ControlMaster=yes".into(),
            "-o".into(),
            format!("ControlPath={}", path.display()),
            "-o".into(),
            "ControlPersist=no".into(),
        ];
        argv.extend(self.options.iter().cloned());
        argv.extend(SSH_DEFAULTS.iter().map(|s| s.to_string()));
        argv.extend(["-n".into(), "-N".into(), "--".into(), host.to_string()]);
        let sp = process::spawn(&Launch {
            argv,
            env: BTreeMap::new(),
            env_clear: false,
            cwd: None,
            pty: false,
        })
        .map_err(|e| Error::Spawn(format!("host '{host}': {e}")))?;
        sp.reaper.into_thread();
        drop(sp.stdin);
        drop(sp.stdout);
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let keep = Arc::clone(&stderr);
        let mut src = sp.stderr;
        let drainer =
            process::spawn_thread(format!("toolpool-ssh-{}", sp.process.pid()), move || {
                let mut buf = [0u8; 1024];
                loop {
                    match src.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let mut k = keep.lock();
                            k.extend(&buf[..n]);
                            while k.len() > STDERR_KEEP {
                                k.pop_front();
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break,
                    }
                }
            });
        Ok(Master {
            process: sp.process,
            stderr,
            drainer: Some(drainer),
        })
    }

    /// Stop every master, remove the directory. Idempotent.
    pub fn shutdown(&self) {
        let all: Vec<_> = std::mem::take(&mut *{
            let m = self.masters.lock();
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            m
        })
        .into_values()
        .collect();
        for slot in all {
            if let Some(m) = slot.lock().master.take() {
                m.stop();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// 16 hex digits of FNV-1a of `s`: a short, fixed-length socket name per host.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// `mkdtemp` under `$TMPDIR` when its path is short enough for socket names, else `/tmp`.
fn private_dir() -> Result<PathBuf> {
    let base = std::env::var_os("TMPDIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && p.as_os_str().len() <= 60)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let template = base.join("toolpool-ssh-XXXXXX");
    let mut bytes = template.into_os_string().into_encoded_bytes();
    bytes.push(0);
    // SAFETY: `bytes` is a NUL-terminated, writable template that mkdtemp fills in.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(Error::Spawn(format!(
            "cannot create a private directory for ssh control sockets: {}",
            std::io::Error::last_os_error()
        )));
    }
    bytes.pop();
    // SAFETY: the bytes came from an OsString and mkdtemp only replaced ASCII X's.
    Ok(PathBuf::from(unsafe {
        std::ffi::OsString::from_encoded_bytes_unchecked(bytes)
    }))
}
