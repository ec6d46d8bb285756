//! The service rows' helpers: a real `toolpool serve` on a socket in a fresh directory, and
//! the client processes of `service_4x4` (this bench binary re-executed in client mode).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to the socket path) in a client process; `CLIENT_TOOL_ENV` names its pool.
pub const CLIENT_ENV: &str = "TOOLPOOL_BENCH_CLIENT";
pub const CLIENT_TOOL_ENV: &str = "TOOLPOOL_BENCH_CLIENT_TOOL";

/// How long `toolpool serve` may take to start its pools and answer.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `toolpool serve`; SIGTERM and waited for when dropped.
pub struct Served {
    child: Child,
    dir: PathBuf,
    pub socket: PathBuf,
}

impl Served {
    /// Start `toolpool` (the binary at `bin`) serving `registry_json`, and wait until a
    /// client connects. The error says why not, with the service's log.
    pub fn start(bin: &Path, registry_json: &str) -> Result<Served, String> {
        let dir = std::env::temp_dir().join(format!("tp-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("tp.sock");
        let registry = dir.join("tools.json");
        let log = dir.join("serve.log");
        std::fs::write(&registry, registry_json).map_err(|e| e.to_string())?;
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("serve")
            .arg("--registry")
            .arg(&registry)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let served = Served { child, dir, socket };
        let until = Instant::now() + READY_TIMEOUT;
        while toolpool::Client::connect(&served.socket).is_err() {
            if Instant::now() >= until {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("toolpool serve did not answer: {}", text.trim()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(served)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client process: `client_main` in a re-executed copy of this binary.
pub struct ClientProc {
    child: Child,
    /// `None` once dropped (EOF ends the client).
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl ClientProc {
    /// Start a client of the pool `tool` at `socket` and wait until it has warmed up.
    pub fn start(socket: &Path, tool: &str) -> ClientProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut child = Command::new(exe)
            .env(CLIENT_ENV, socket)
            .env(CLIENT_TOOL_ENV, tool)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a bench client process");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut c = ClientProc {
            child,
            stdin,
            stdout,
        };
        assert_eq!(c.line(), "ready", "the bench client's first line");
        c
    }

    /// Tell it to make `n` requests.
    pub fn go(&mut self, n: usize) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(format!("go {n}\n").as_bytes())
            .expect("write to a bench client");
    }

    /// Its next line (without the newline).
    pub fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout
            .read_line(&mut l)
            .expect("read from a bench client");
        assert!(!l.is_empty(), "a bench client ended early");
        l.trim_end().to_string()
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        // EOF on its stdin ends it.
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// Client mode: connect, warm up with `warmup` calls of `call`, say `ready`; then for
/// each `go N` make N calls, say `done`, then the samples (µs) as one JSON array.
pub fn client_main(warmup: usize, call: impl Fn(&toolpool::Pool)) {
    let socket = std::env::var_os(CLIENT_ENV).expect("socket path");
    let tool = std::env::var(CLIENT_TOOL_ENV).expect("tool id");
    let client = toolpool::Client::connect(Path::new(&socket)).expect("client connects");
    let pool = client.pool(&tool).expect("the service's pool");
    for _ in 0..warmup {
        call(&pool);
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|_| out.flush())
        .expect("ready");
    let mut samples = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let n: usize = line
            .strip_prefix("go ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("bench client: unexpected line {line:?}"));
        samples.clear();
        for _ in 0..n {
            let t = Instant::now();
            call(&pool);
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        writeln!(out, "done")
            .and_then(|_| out.flush())
            .expect("done");
        let json = serde_json::to_string(&samples).expect("samples");
        writeln!(out, "{json}")
            .and_then(|_| out.flush())
            .expect("samples");
    }
}
