//! A `toolpool serve` for tests: the real binary on a socket in a fresh directory, with a
//! registry written there; stopped (SIGTERM, then waited for) when dropped.
#![allow(dead_code)]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `toolpool` command.
pub fn toolpool_bin() -> &'static str {
    env!("CARGO_BIN_EXE_toolpool")
}

/// A fresh directory under the system temp dir (removed by the caller or left for a
/// post-mortem; small).
pub fn fresh_dir(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tp-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running `toolpool serve`.
pub struct Served {
    /// The `toolpool serve` process (the watchdog).
    pub child: Child,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub registry: PathBuf,
    /// Lines the service wrote on stderr so far (a thread collects them).
    pub log: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Served {
    /// Start `toolpool serve` on `registry_json` with `args`, and wait (up to 30 s) until it
    /// answers a client.
    pub fn start(name: &str, registry_json: &str, args: &[&str]) -> Served {
        let dir = fresh_dir(name);
        let socket = dir.join("tp.sock");
        let registry = dir.join("tools.json");
        std::fs::write(&registry, registry_json).unwrap();
        Served::start_at(dir, socket, registry, args)
    }

    /// [`Served::start`] on a given socket and registry.
    pub fn start_at(dir: PathBuf, socket: PathBuf, registry: PathBuf, args: &[&str]) -> Served {
        let mut child = Command::new(toolpool_bin())
            .arg("serve")
            .arg("--registry")
            .arg(&registry)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("toolpool serve starts");
        let log = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().push(line);
            }
        });
        let served = Served {
            child,
            dir,
            socket,
            registry,
            log,
        };
        served.wait_ready();
        served
    }

    /// Wait until a client connects (the pools have started).
    pub fn wait_ready(&self) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if toolpool::Client::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < until,
                "toolpool serve did not answer within 30 s; its log: {:?}",
                self.log.lock()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn client(&self) -> toolpool::Client {
        toolpool::Client::connect(&self.socket).expect("client connects")
    }

    /// The service process (the watchdog's child).
    pub fn service_pid(&self) -> i32 {
        let watchdog = self.child.id() as i32;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = children_of(watchdog).first() {
                return *pid;
            }
            assert!(Instant::now() < until, "the watchdog has no child");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Send `sig` to the `toolpool serve` process (the watchdog passes it on).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Whether the service logged a line containing `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().iter().any(|l| l.contains(needle))
    }

    /// Wait up to `within` for a log line containing `needle`.
    pub fn wait_logged(&self, needle: &str, within: Duration) -> bool {
        let until = Instant::now() + within;
        while Instant::now() < until {
            if self.logged(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The pids whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
        }
    }
    out
}

/// Whether process `pid` exists (and is not a zombie).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// A registry document of `tools` (`(id, spec JSON)` pairs).
pub fn registry(tools: &[(&str, String)]) -> String {
    let body: Vec<String> = tools
        .iter()
        .map(|(id, spec)| format!("{}: {spec}", serde_json::to_string(id).unwrap()))
        .collect();
    format!("{{\"tools\": {{{}}}}}", body.join(", "))
}

/// The spec JSON of the test tool with `args` and `count` instances, plus `extra` keys
/// (`"key": value, ...` or empty).
pub fn testtool_spec(count: usize, args: &[&str], extra: &str) -> String {
    let mut argv = vec![super::testtool().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    let sep = if extra.is_empty() { "" } else { ", " };
    format!(
        "{{\"command\": {}, \"count\": {count}{sep}{extra}}}",
        serde_json::to_string(&argv).unwrap()
    )
}

/// Whether `path` is a socket file.
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
