//! Benchmarks of toolpool against the physical limit and against spawning per call.
//!
//! `make bench` (= `cargo bench --bench pool`). Prints one JSON object per figure on
//! stdout and a human summary table on stderr. Every ratio is taken against a reference
//! measured in the same run (and, for pinned figures, in the same pinned process):
//!
//! - `floor`: the test tool driven by a blocking write/read on its pipes from the calling
//!   thread, the physical limit of one round trip.
//! - `roundtrip` (`pool.send` + `pool.read_line`) and `request_roundtrip`
//!   (`pool.request`): p50 / floor p50.
//! - `spawn_per_call`: the test tool started per request; p50 / roundtrip p50.
//! - `floor_4x4` / `throughput_4x4`: 4 threads, each on its own raw child / pool
//!   instance; calls_per_s / floor_4x4 calls_per_s.
//! - `jsonrpc_spawn_per_call` / `jsonrpc_roundtrip`: the Python JSON-RPC example tool,
//!   started per request / pooled; ratio = spawn p50 / pooled p50. `jsonrpc_floor` is
//!   the same tool kept warm on raw pipes: the best ratio any pool could reach.
//! - `round_robin_8x3` / `least_busy_8x3`: 8 threads sharing 3 instances through
//!   `pool.request`; calls_per_s / round_robin calls_per_s.
//!
//! The floor rows use a minimal C echo child (benches/echo.c, raw read/write, built here
//! with `cc -O2`) and one 61-byte line (60 characters and the newline):
//!
//! - `floor_c`: that child on raw blocking pipes from the calling thread; ratio p50 /
//!   floor p50 (how much the test tool flatters the floor). The reference of the `_c` rows.
//! - `roundtrip_c` (send + read_line), `request_c` (`request`), `go_pool_c` (a plain Go
//!   pool, benches/gopool: exec + goroutines + channels, built with `go build` and skipped
//!   with a note when `go` is missing): p50 / floor_c p50; `vs_go_pool` = p50 / go_pool_c
//!   p50. Every latency row also gives `p50_block_min_us` / `p50_block_max_us`, the lowest
//!   and highest p50 of its interleaved blocks (the spread, mostly of interest unpinned).
//! - `floor_c_4x4` (ratio against floor_4x4), `roundtrip_c_4x4` (thread i on instance i),
//!   `request_c_4x4` (4 threads routed round robin over 4 instances),
//!   `request_lb_c_4x4` (the same routed least busy, where a thread keeps to its last
//!   instance among ties), `go_pool_c_4x4` (4 goroutines, 4 instances): calls_per_s /
//!   floor_c_4x4 calls_per_s; `vs_go_pool` = calls_per_s / the Go pool's.
//! - `scale_N` (N = 1, 10, 100, 1000; 1 and 10 in smoke mode): N raw C echo children are
//!   started one after another by std's `Command` (`spawn_ref_ms` = that time / cores,
//!   `cores` as the process sees them, so 1 when pinned), then a round-robin pool of N
//!   (`start_ms`, `start_ratio` = start / spawn_ref, `rss_kib_per_instance` and
//!   `threads_per_instance` from /proc/self/status before and after). Interleaved blocks:
//!   raw round robin over the N raw children (`floor_p50_us`, the floor with N children
//!   alive) and routed `request`s from one caller (`p50_us`); ratio = p50 / floor_p50.
//!   Then `shutdown_ms` (shutdown and drop of the pool).
//!
//! - `syscalls_floor_c`, `syscalls_roundtrip_c`, `syscalls_request_c` (pinned only): the
//!   system calls of the calling thread per round trip on the C echo child (raw floor,
//!   send + read_line, request), counted by the kernel's `raw_syscalls:sys_enter`
//!   tracepoint through `perf_event_open` (benches/pool/syscalls.rs); ratio = count / the
//!   floor's. Skipped with the reason when the counter cannot be opened.
//!
//! - The bindings (benches/pybench.py, benches/gobinding), on the C echo child and line,
//!   each process one block, interleaved with blocks of the Rust `request` on a pool of the
//!   same child (`request_c_p50_us`, `request_c_calls_per_s` in the rows):
//!   `py_main_c`, `py_worker_c` (`pool.request` from Python's main thread, from another
//!   thread), `py_purepy_c` (the pure-Python pool: Popen, a reader thread, Queues):
//!   p50 / the C request's p50; `vs_purepy` = p50 / the pure-Python pool's.
//!   `py_aio_seq_c` (`await pool.request`, one at a time): p50 / `py_main_c` p50.
//!   `go_binding_c` (the Go binding's `Request`, one goroutine): p50 / the C request's.
//!   `py_4x4_c` (4 Python threads, 4 instances) and `py_aio_gather_c` (one `gather` of
//!   5,000 requests over 4 instances): calls_per_s / `py_purepy_4x4_c` calls_per_s (the
//!   pure-Python pool, 4 threads); `py_purepy_4x4_c`: calls_per_s / the C request's 4x4.
//!   `go_binding_c_4x4` (4 goroutines, 4 instances): calls_per_s / the plain Go pool's
//!   (`go_pool_calls_per_s`, measured in the same rounds). Skipped with the reason when
//!   `make build` has not built the library, the Python extension or
//!   target/pkgconfig/toolpool.pc, or `go` is missing.
//!
//! - `ssh_roundtrip`: `request` on a pool of the test tool over ssh to
//!   127.0.0.1 (a throwaway sshd this bench starts, tests/common/sshd.rs), in blocks
//!   interleaved with the same `request` on a local pool (`local_p50_us`); ratio = p50 /
//!   local p50. Skipped with a note when `/usr/sbin/sshd` is missing (`make bench`
//!   installs it).
//!
//! - `service_request`: `request` through a `toolpool serve` (the real binary, started by
//!   this bench with a registry of the C echo child) from one thread of this process, in
//!   blocks interleaved with the in-process `request` on a local pool of the same child
//!   (`local_p50_us`); `added_us` = p50 - local p50, ratio = p50 / local p50.
//!   `service_4x4`: 4 client processes (this binary re-executed in client mode,
//!   `TOOLPOOL_BENCH_CLIENT`), one calling thread each, on a service pool of 4 instances,
//!   in rounds alternating with 4 threads on a local pool of 4 (`local_calls_per_s`);
//!   ratio = calls_per_s / local calls_per_s. Both rows also give the relay floor
//!   measured in the same rounds (benches/relay.c: caller processes, each with a Unix
//!   socket to a relay thread that passes lines to its own C echo child, raw blocking
//!   read/write, the least any service can cost): `relay_floor_p50_us` /
//!   `relay_floor_calls_per_s` and `vs_relay_floor` (p50 / its p50, calls_per_s / its
//!   calls_per_s). The `toolpool` binary is the one cargo
//!   built next to this bench (`cargo test --features cli` builds it), else `make build`'s.
//!
//! floor, roundtrip, spawn_per_call, the `_c`, 4x4, service and `scale_N` figures run twice:
//! unpinned, and pinned to one CPU. The pinned run is this binary re-executed with
//! `TOOLPOOL_BENCH_PINNED=1`; it pins its whole process with `sched_setaffinity` before it
//! creates any thread, so every pool thread and every child inherits the single-CPU mask
//! (the Go pool too: its GOMAXPROCS follows the mask). Latency figures are
//! measured in interleaved blocks (floor, pool, floor, pool, ...) so that background load
//! on the machine hits the figure and its reference alike.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use toolpool::{Pool, Protocol, Routing, ToolSpec};

#[path = "pool/service.rs"]
mod service;
#[path = "../tests/common/sshd.rs"]
mod sshd;
#[path = "pool/syscalls.rs"]
mod syscalls;

const TESTTOOL: &str = env!("CARGO_BIN_EXE_toolpool-testtool");
const RPC_TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools/rpc_tool.py");
const PINNED_ENV: &str = "TOOLPOOL_BENCH_PINNED";
/// Sources of the helper programs the bench builds (into `CARGO_TARGET_TMPDIR`).
const ECHO_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/echo.c");
const RELAY_SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/relay.c");
const GO_POOL_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/gopool");
const GO_BINDING_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/gobinding");
const PY_BENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pybench.py");
/// What `make build` makes, which the binding rows use.
const RELEASE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release");
const PY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bindings/python");
const PKG_CONFIG_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/pkgconfig");
const HELPER_DIR: &str = env!("CARGO_TARGET_TMPDIR");
/// How the parent hands the helpers it built to the pinned child.
const ECHO_ENV: &str = "TOOLPOOL_BENCH_ECHO";
const RELAY_ENV: &str = "TOOLPOOL_BENCH_RELAY";
const GO_POOL_ENV: &str = "TOOLPOOL_BENCH_GO_POOL";
const GO_SKIP_ENV: &str = "TOOLPOOL_BENCH_GO_SKIP";
const GO_BINDING_ENV: &str = "TOOLPOOL_BENCH_GO_BINDING";
const GO_BINDING_SKIP_ENV: &str = "TOOLPOOL_BENCH_GO_BINDING_SKIP";
/// The line of the C echo figures: 60 characters, 61 bytes with its newline.
macro_rules! line60 {
    () => {
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX"
    };
}
const LINE: &str = line60!();
const LINE_NL: &str = concat!(line60!(), "\n");
/// `TOOLPOOL_BENCH_SMOKE=1` (what `make test` runs): every figure with a few iterations,
/// then a check that each one produced its row; the numbers mean nothing.
const SMOKE_ENV: &str = "TOOLPOOL_BENCH_SMOKE";
/// Figures emitted unpinned only, besides `pinned_names()` (emitted pinned and unpinned).
const UNPINNED_NAMES: [&str; 8] = [
    "jsonrpc_spawn_per_call",
    "jsonrpc_floor",
    "jsonrpc_roundtrip",
    "round_robin_8x3",
    "least_busy_8x3",
    "python_pipe_unbuffered",
    "python_pty",
    "python_prompt",
];

fn smoke() -> bool {
    std::env::var_os(SMOKE_ENV).is_some_and(|v| v == "1")
}

/// An iteration count: as given, or a few in smoke mode.
fn scale(n: usize) -> usize {
    if smoke() {
        (n / 200).clamp(2, 10)
    } else {
        n
    }
}
const TIMEOUT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_millis(500);

/// Interleaved blocks of the single-thread latency figures.
const ROUNDS: usize = 10;
/// Measured iterations per block (so `ROUNDS * BLOCK` samples per figure).
const BLOCK: usize = 2_000;
const WARMUP: usize = 300;
const SPAWN_WARMUP: usize = 5;
const SPAWN_ITERS: usize = 200;
/// Alternating rounds of the multi-thread figures (4x4 and 8x3).
const THROUGHPUT_ROUNDS: usize = 5;
const THREADS_4X4: usize = 4;
/// Per thread and round.
const ITERS_4X4: usize = 2_000;
/// Per interleaved block (`ROUNDS` blocks) of the JSON-RPC floor and pooled figures.
const JSONRPC_BLOCK: usize = 200;
const JSONRPC_SPAWN_WARMUP: usize = 2;
const JSONRPC_SPAWN_ITERS: usize = 30;
/// Round trips counted for the `syscalls_*` rows (after the usual warm-up).
const SYSCALL_ITERS: usize = 5_000;
/// The system-call rows, pinned only (see `syscall_suite`).
const SYSCALL_NAMES: [&str; 3] = [
    "syscalls_floor_c",
    "syscalls_roundtrip_c",
    "syscalls_request_c",
];
const THREADS_8X3: usize = 8;
const INSTANCES_8X3: usize = 3;
/// Per thread and round.
const ITERS_8X3: usize = 300;
/// What a `scale_N` row holds besides the fields of every row.
const SCALE_FIELDS: [&str; 7] = [
    "start_ms",
    "spawn_ref_ms",
    "rss_kib_per_instance",
    "threads_per_instance",
    "p50_us",
    "floor_p50_us",
    "shutdown_ms",
];
/// Pool sizes of the `scale_N` rows (smoke mode: the first two).
const SCALE_SIZES: [usize; 4] = [1, 10, 100, 1_000];
/// Per interleaved block (`ROUNDS` blocks) of a `scale_N` row and its floor.
const SCALE_BLOCK: usize = 1_000;

/// Samples of one figure, in microseconds, and the wall time they took.
struct Stats {
    name: String,
    samples: Vec<f64>,
    /// The p50 of each measured block, for the spread of the block medians.
    blocks: Vec<f64>,
    wall: Duration,
    calls: usize,
}

impl Stats {
    fn new(name: impl Into<String>) -> Stats {
        Stats {
            name: name.into(),
            samples: Vec::new(),
            blocks: Vec::new(),
            wall: Duration::ZERO,
            calls: 0,
        }
    }

    /// Nearest-rank percentile of the sorted samples (NaN, printed as null, when a figure
    /// has only a rate: a `gather`).
    fn pct(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }

    fn p50(&self) -> f64 {
        self.pct(0.50)
    }

    fn calls_per_s(&self) -> f64 {
        self.calls as f64 / self.wall.as_secs_f64()
    }

    fn json(&self, pinned: bool, baseline: &str, ratio: f64, ratio_def: &str) -> Value {
        let mean = self.samples.iter().sum::<f64>() / self.samples.len() as f64;
        let mut v = json!({
            "name": self.name,
            "pinned": pinned,
            "p50_us": round2(self.p50()),
            "p90_us": round2(self.pct(0.90)),
            "p99_us": round2(self.pct(0.99)),
            "mean_us": round2(mean),
            "calls_per_s": self.calls_per_s().round(),
            "ratio": round3(ratio),
            "baseline": baseline,
            "ratio_def": ratio_def,
            "n": self.samples.len(),
        });
        // The spread: the lowest and highest p50 of the interleaved blocks.
        if self.blocks.len() >= 2 {
            let lo = self.blocks.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = self.blocks.iter().copied().fold(0.0, f64::max);
            v["p50_block_min_us"] = json!(round2(lo));
            v["p50_block_max_us"] = json!(round2(hi));
        }
        v
    }

    /// Samples of one block measured elsewhere (the Go pool), with its wall time.
    fn add_block(&mut self, samples: &[f64], wall: Duration, calls: usize) {
        if samples.len() >= 2 {
            self.blocks.push(median(samples));
        }
        self.samples.extend_from_slice(samples);
        self.wall += wall;
        self.calls += calls;
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[(s.len() - 1) / 2]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Every row printed so far, for the summary table.
static ROWS: Mutex<Vec<Value>> = Mutex::new(Vec::new());

/// Print one JSON row on stdout and keep it for the summary.
fn emit(v: &Value) {
    // In smoke mode only the pinned child prints (its parent reads the rows); the parent
    // checks them and prints none.
    if !smoke() || std::env::var_os(PINNED_ENV).is_some() {
        println!("{v}");
        let _ = std::io::stdout().flush();
    }
    ROWS.lock().expect("rows").push(v.clone());
}

/// Time `n` calls of `f`, appending per-call microseconds to `st`.
fn measure(st: &mut Stats, n: usize, mut f: impl FnMut()) {
    let first = st.samples.len();
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        st.samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    st.wall += t0.elapsed();
    st.calls += n;
    if n >= 2 {
        st.blocks.push(median(&st.samples[first..]));
    }
}

/// A raw child on pipes, driven by blocking I/O from the calling thread.
struct Raw {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Raw {
    /// The test tool.
    fn start() -> Raw {
        Raw::spawn(TESTTOOL, &[])
    }

    fn spawn(program: &str, args: &[&str]) -> Raw {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Raw {
            child,
            stdin,
            stdout,
            line: String::new(),
        }
    }

    /// Write `line` (with its newline), read one line back.
    fn exchange(&mut self, line: &[u8]) -> &str {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(line).expect("write");
        self.line.clear();
        self.stdout.read_line(&mut self.line).expect("read");
        &self.line
    }

    /// One echo round trip of the test tool.
    fn call(&mut self) {
        let reply = self.exchange(b"x\n");
        assert_eq!(reply, "x\n", "raw echo");
    }

    /// The C echo child.
    fn start_c() -> Raw {
        Raw::spawn(&helpers().echo, &[])
    }

    /// One round trip of the 61-byte line.
    fn call_line(&mut self) {
        let reply = self.exchange(LINE_NL.as_bytes());
        assert_eq!(reply, LINE_NL, "raw C echo");
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

fn testtool_pool(count: usize, routing: Routing) -> Pool {
    Pool::from_spec(ToolSpec {
        count,
        routing,
        ..ToolSpec::new([TESTTOOL])
    })
    .expect("start the test tool pool")
}

fn echo_pool(count: usize, routing: Routing) -> Pool {
    Pool::from_spec(ToolSpec {
        count,
        routing,
        ..ToolSpec::new([helpers().echo.as_str()])
    })
    .expect("start the C echo pool")
}

/// `send` + `read_line` of the 61-byte line.
fn pool_call_line(pool: &Pool, i: usize) {
    pool.send(i, LINE).expect("send");
    let l = pool.read_line(i, TIMEOUT).expect("read_line");
    assert_eq!(l, LINE, "pooled C echo");
}

/// A routed `request` of the 61-byte line.
fn request_line(pool: &Pool) {
    let r = pool.request(LINE, TIMEOUT).expect("request");
    assert_eq!(r.text, LINE, "requested C echo");
}

/// The helper programs: the C echo child and relay (always), the Go pool (when `go` is there), the Go
/// binding's bench program and the Python binding (when `make build` made what they need).
struct Helpers {
    echo: String,
    relay: String,
    go_pool: Result<String, String>,
    go_binding: Result<String, String>,
    python: Result<(), String>,
}

static HELPERS: OnceLock<Helpers> = OnceLock::new();

/// Built by the parent; the pinned child takes the parent's paths from its environment.
fn helpers() -> &'static Helpers {
    HELPERS.get_or_init(|| {
        if std::env::var_os(PINNED_ENV).is_some() {
            let echo = std::env::var(ECHO_ENV).expect("echo path from the parent");
            let relay = std::env::var(RELAY_ENV).expect("relay path from the parent");
            let go_pool = std::env::var(GO_POOL_ENV)
                .map_err(|_| std::env::var(GO_SKIP_ENV).unwrap_or_else(|_| "no Go pool".into()));
            let go_binding = std::env::var(GO_BINDING_ENV).map_err(|_| {
                std::env::var(GO_BINDING_SKIP_ENV).unwrap_or_else(|_| "no Go binding".into())
            });
            return Helpers {
                echo,
                relay,
                go_pool,
                go_binding,
                python: python_binding(),
            };
        }
        Helpers {
            echo: build_c("toolpool-bench-echo", ECHO_SRC),
            relay: build_c("toolpool-bench-relay", RELAY_SRC),
            go_pool: build_go_pool(),
            go_binding: build_go_binding(),
            python: python_binding(),
        }
    })
}

/// Build into a temporary name, then rename, so a concurrent run never sees half a file.
fn build_to(name: &str, build: impl FnOnce(&Path) -> Result<(), String>) -> Result<String, String> {
    let out = Path::new(HELPER_DIR).join(name);
    let tmp = Path::new(HELPER_DIR).join(format!("{name}.tmp{}", std::process::id()));
    build(&tmp)?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(out.to_str().expect("UTF-8 target dir").to_string())
}

fn run_build(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// `cc -O2 -pthread SRC` (`$CC` if set) into the helper dir as `name`.
fn build_c(name: &str, src: &str) -> String {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    build_to(name, |tmp| {
        run_build(
            Command::new(&cc)
                .args(["-O2", "-pthread", "-o"])
                .arg(tmp)
                .arg(src),
        )
    })
    .unwrap_or_else(|e| panic!("building {src}: {e}"))
}

/// `go build` of benches/gopool, or why not.
fn build_go_pool() -> Result<String, String> {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("go not installed".into()),
    }
    build_to("toolpool-bench-gopool", |tmp| {
        run_build(
            Command::new("go")
                .args(["build", "-o"])
                .arg(tmp)
                .arg(".")
                .current_dir(GO_POOL_DIR),
        )
    })
}

/// `go build` of benches/gobinding against the uninstalled target/pkgconfig/toolpool.pc
/// (`make build`), or why not.
fn build_go_binding() -> Result<String, String> {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Err("go not installed".into()),
    }
    if !Path::new(PKG_CONFIG_DIR).join("toolpool.pc").is_file() {
        return Err(format!(
            "{PKG_CONFIG_DIR}/toolpool.pc missing: run make build"
        ));
    }
    let path = match std::env::var_os("PKG_CONFIG_PATH") {
        Some(p) => format!("{PKG_CONFIG_DIR}:{}", p.to_string_lossy()),
        None => PKG_CONFIG_DIR.to_string(),
    };
    build_to("toolpool-bench-gobinding", |tmp| {
        run_build(
            Command::new("go")
                .args(["build", "-o"])
                .arg(tmp)
                .arg(".")
                .env("PKG_CONFIG_PATH", path)
                .current_dir(GO_BINDING_DIR),
        )
    })
}

/// Whether the Python binding can run from the checkout: python3, and the library and the
/// extension that `make build` makes.
fn python_binding() -> Result<(), String> {
    for f in ["libtoolpool.so", "lib_native.so"] {
        if !Path::new(RELEASE_DIR).join(f).is_file() {
            return Err(format!("{RELEASE_DIR}/{f} missing: run make build"));
        }
    }
    match Command::new("python3").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("python3 not installed".into()),
    }
}

/// One run of the Go pool (`lat`: one caller on one instance; `tput`: one goroutine per
/// instance), its samples added to `st` as one block.
fn go_pool_run(st: &mut Stats, go: &str, mode: &str, iters: usize, instances: usize) {
    let v = helper_run(Command::new(go), mode, iters, instances);
    add_run(st, &v);
}

/// Run a bench helper (the Go pool, the Go binding, pybench.py) on the C echo child and
/// the line, and parse its JSON.
fn helper_run(mut cmd: Command, mode: &str, iters: usize, instances: usize) -> Value {
    let out = cmd
        .args([
            mode,
            &helpers().echo,
            LINE,
            &scale(WARMUP).to_string(),
            &iters.to_string(),
            &instances.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{:?} {mode}: {}",
        cmd.get_program(),
        out.status
    );
    serde_json::from_slice(&out.stdout).expect("the helper's JSON")
}

/// Add one helper run (`{"samples_us": [...], "wall_us": W, "calls": C}`) as a block.
fn add_run(st: &mut Stats, v: &Value) {
    let samples: Vec<f64> = v["samples_us"]
        .as_array()
        .expect("samples_us")
        .iter()
        .map(|x| x.as_f64().expect("a sample"))
        .collect();
    let wall = Duration::from_secs_f64(v["wall_us"].as_f64().expect("wall_us") / 1e6);
    let calls = v["calls"].as_u64().expect("calls") as usize;
    st.add_block(&samples, wall, calls);
}

/// benches/pybench.py with the checkout's binding, library and extension.
fn pybench() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(PY_BENCH).env("PYTHONPATH", PY_DIR).env(
        "TOOLPOOL_LIB",
        Path::new(RELEASE_DIR).join("libtoolpool.so"),
    );
    cmd
}

/// The Python and Go binding rows (see the module docs), pinned or not.
fn bindings_suite(pinned: bool) {
    let h = helpers();
    let lat_names = ["py_main_c", "py_worker_c", "py_purepy_c", "py_aio_seq_c"];
    let tput_names = ["py_4x4_c", "py_purepy_4x4_c", "py_aio_gather_c"];
    // Latency: the C request and each binding path in interleaved blocks.
    let pool_c = echo_pool(1, Routing::RoundRobin);
    for _ in 0..scale(WARMUP) {
        request_line(&pool_c);
    }
    let mut req = Stats::new("request_c");
    let mut py: Vec<Stats> = lat_names.iter().map(|n| Stats::new(*n)).collect();
    let mut gob = Stats::new("go_binding_c");
    for _ in 0..scale(ROUNDS) {
        measure(&mut req, scale(BLOCK), || request_line(&pool_c));
        if h.python.is_ok() {
            let v = helper_run(pybench(), "lat", scale(BLOCK), 1);
            for (st, key) in py.iter_mut().zip(["main", "worker", "purepy", "aio_seq"]) {
                add_run(st, &v[key]);
            }
        }
        if let Ok(go) = &h.go_binding {
            add_run(
                &mut gob,
                &helper_run(Command::new(go), "lat", scale(BLOCK), 1),
            );
        }
    }
    pool_c.shutdown(GRACE);
    let r50 = req.p50();
    match &h.python {
        Ok(()) => {
            let (main50, pure50) = (py[0].p50(), py[2].p50());
            for st in &py[..3] {
                let mut row = st.json(
                    pinned,
                    "request_c",
                    st.p50() / r50,
                    "p50 / p50(the C request, same rounds)",
                );
                row["request_c_p50_us"] = json!(round2(r50));
                row["vs_purepy"] = json!(round3(st.p50() / pure50));
                emit(&row);
            }
            let aio = &py[3];
            let mut row = aio.json(
                pinned,
                "py_main_c",
                aio.p50() / main50,
                "p50 / p50(py_main_c)",
            );
            row["request_c_p50_us"] = json!(round2(r50));
            row["vs_request_c"] = json!(round3(aio.p50() / r50));
            emit(&row);
        }
        Err(why) => lat_names
            .iter()
            .for_each(|n| emit(&skipped(n, pinned, why))),
    }
    match &h.go_binding {
        Ok(_) => {
            let mut row = gob.json(
                pinned,
                "request_c",
                gob.p50() / r50,
                "p50 / p50(the C request, same rounds)",
            );
            row["request_c_p50_us"] = json!(round2(r50));
            emit(&row);
        }
        Err(why) => emit(&skipped("go_binding_c", pinned, why)),
    }

    // Throughput: 4 callers over 4 instances, in alternating rounds.
    let pool4 = Arc::new(echo_pool(THREADS_4X4, Routing::RoundRobin));
    let mut req4 = Stats::new("request_c_4x4");
    let mut py4: Vec<Stats> = tput_names.iter().map(|n| Stats::new(*n)).collect();
    let mut gob4 = Stats::new("go_binding_c_4x4");
    let mut gop4 = Stats::new("go_pool_c_4x4");
    for _ in 0..scale(THROUGHPUT_ROUNDS) {
        run_threads(&mut req4, THREADS_4X4, scale(ITERS_4X4), |_| {
            let pool = Arc::clone(&pool4);
            move || request_line(&pool)
        });
        if h.python.is_ok() {
            let v = helper_run(pybench(), "tput", scale(ITERS_4X4), THREADS_4X4);
            for (st, key) in py4.iter_mut().zip(["py_4x4", "purepy_4x4", "aio_gather"]) {
                add_run(st, &v[key]);
            }
        }
        if let (Ok(gb), Ok(gp)) = (&h.go_binding, &h.go_pool) {
            add_run(
                &mut gob4,
                &helper_run(Command::new(gb), "tput", scale(ITERS_4X4), THREADS_4X4),
            );
            go_pool_run(&mut gop4, gp, "tput", scale(ITERS_4X4), THREADS_4X4);
        }
    }
    pool4.shutdown(GRACE);
    let rc = req4.calls_per_s();
    match &h.python {
        Ok(()) => {
            let pure = py4[1].calls_per_s();
            for st in [&py4[0], &py4[2]] {
                let mut row = st.json(
                    pinned,
                    "py_purepy_4x4_c",
                    st.calls_per_s() / pure,
                    "calls_per_s / calls_per_s(py_purepy_4x4_c)",
                );
                row["request_c_calls_per_s"] = json!(rc.round());
                row["vs_request_c"] = json!(round3(st.calls_per_s() / rc));
                emit(&row);
            }
            let mut row = py4[1].json(
                pinned,
                "request_c_4x4",
                pure / rc,
                "calls_per_s / calls_per_s(the C request 4x4, same rounds)",
            );
            row["request_c_calls_per_s"] = json!(rc.round());
            emit(&row);
        }
        Err(why) => tput_names
            .iter()
            .for_each(|n| emit(&skipped(n, pinned, why))),
    }
    match (&h.go_binding, &h.go_pool) {
        (Ok(_), Ok(_)) => {
            let gp = gop4.calls_per_s();
            let mut row = gob4.json(
                pinned,
                "go_pool_c_4x4",
                gob4.calls_per_s() / gp,
                "calls_per_s / calls_per_s(the plain Go pool 4x4, same rounds)",
            );
            row["go_pool_calls_per_s"] = json!(gp.round());
            row["request_c_calls_per_s"] = json!(rc.round());
            row["vs_request_c"] = json!(round3(gob4.calls_per_s() / rc));
            emit(&row);
        }
        (Err(why), _) | (_, Err(why)) => emit(&skipped("go_binding_c_4x4", pinned, why)),
    }
}

fn pool_call(pool: &Pool, i: usize) {
    pool.send(i, "x").expect("send");
    let l = pool.read_line(i, TIMEOUT).expect("read_line");
    assert_eq!(l, "x", "pooled echo");
}

/// The test tool started for one request: write the line, close stdin, read, reap.
fn spawn_call() {
    let mut child = Command::new(TESTTOOL)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the test tool");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"x\n").expect("write");
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    let status = child.wait().expect("wait");
    assert!(status.success() && out == "x\n", "spawned echo: {out:?}");
}

/// floor, roundtrip, request_roundtrip, spawn_per_call, floor_4x4 and throughput_4x4.
fn core_suite(pinned: bool) {
    // Single-thread latency: floor and pooled paths in interleaved blocks.
    let mut raw = Raw::start();
    let pool = testtool_pool(1, Routing::RoundRobin);
    let mut raw_c = Raw::start_c();
    let pool_c = echo_pool(1, Routing::RoundRobin);
    for _ in 0..scale(WARMUP) {
        raw.call();
        pool_call(&pool, 0);
        pool.request("x", TIMEOUT).expect("request");
        raw_c.call_line();
        pool_call_line(&pool_c, 0);
        request_line(&pool_c);
    }
    let mut floor = Stats::new("floor");
    let mut rt = Stats::new("roundtrip");
    let mut req = Stats::new("request_roundtrip");
    let mut floor_c = Stats::new("floor_c");
    let mut rt_c = Stats::new("roundtrip_c");
    let mut req_c = Stats::new("request_c");
    let mut go_c = Stats::new("go_pool_c");
    let go_pool = helpers().go_pool.as_ref();
    for _ in 0..scale(ROUNDS) {
        measure(&mut floor, scale(BLOCK), || raw.call());
        measure(&mut rt, scale(BLOCK), || pool_call(&pool, 0));
        measure(&mut req, scale(BLOCK), || {
            let r = pool.request("x", TIMEOUT).expect("request");
            assert_eq!(r.text, "x");
        });
        measure(&mut floor_c, scale(BLOCK), || raw_c.call_line());
        measure(&mut rt_c, scale(BLOCK), || pool_call_line(&pool_c, 0));
        measure(&mut req_c, scale(BLOCK), || request_line(&pool_c));
        if let Ok(go) = go_pool {
            go_pool_run(&mut go_c, go, "lat", scale(BLOCK), 1);
        }
    }
    drop(raw_c);
    pool_c.shutdown(GRACE);
    let mut spawn = Stats::new("spawn_per_call");
    for _ in 0..scale(SPAWN_WARMUP) {
        spawn_call();
    }
    // The round trip keeps sampling between spawn blocks, so that both sides of the
    // spawn ratio see the same background load.
    for _ in 0..scale(ROUNDS) {
        measure(&mut rt, scale(BLOCK) / 10, || pool_call(&pool, 0));
        measure(&mut spawn, scale(SPAWN_ITERS) / scale(ROUNDS), spawn_call);
    }
    drop(raw);
    pool.shutdown(GRACE);

    let f50 = floor.p50();
    let r50 = rt.p50();
    emit(&floor.json(pinned, "floor", 1.0, "reference"));
    emit(&rt.json(pinned, "floor", r50 / f50, "p50 / p50(floor)"));
    emit(&req.json(pinned, "floor", req.p50() / f50, "p50 / p50(floor)"));
    emit(&spawn.json(
        pinned,
        "roundtrip",
        spawn.p50() / r50,
        "p50 / p50(roundtrip)",
    ));
    // The C echo figures: the same line (61 bytes) through every driver.
    let fc50 = floor_c.p50();
    let go50 = go_pool.ok().map(|_| go_c.p50());
    emit(&floor_c.json(
        pinned,
        "floor",
        fc50 / f50,
        "p50 / p50(floor with the test tool); reference of the _c rows",
    ));
    for st in [&rt_c, &req_c] {
        let mut row = st.json(pinned, "floor_c", st.p50() / fc50, "p50 / p50(floor_c)");
        if let Some(g) = go50 {
            row["vs_go_pool"] = json!(round3(st.p50() / g));
        }
        emit(&row);
    }
    match go_pool {
        Ok(_) => emit(&go_c.json(pinned, "floor_c", go_c.p50() / fc50, "p50 / p50(floor_c)")),
        Err(why) => emit(&skipped("go_pool_c", pinned, why)),
    }

    // Throughput: 4 threads, each on its own raw child or pool instance, in alternating
    // rounds (fresh raw children each round, started before the clock).
    let mut floor4 = Stats::new("floor_4x4");
    let mut tp4 = Stats::new("throughput_4x4");
    let pool4 = Arc::new(testtool_pool(THREADS_4X4, Routing::RoundRobin));
    // The same with the C echo child: line mode on instance i from thread i, routed
    // requests from 4 threads over 4 instances, and the Go pool.
    let mut floor4_c = Stats::new("floor_c_4x4");
    let mut rt4_c = Stats::new("roundtrip_c_4x4");
    let mut req4_c = Stats::new("request_c_4x4");
    let mut req4_lb_c = Stats::new("request_lb_c_4x4");
    let mut go4_c = Stats::new("go_pool_c_4x4");
    let pool4_c = Arc::new(echo_pool(THREADS_4X4, Routing::RoundRobin));
    let pool4_lb_c = Arc::new(echo_pool(THREADS_4X4, Routing::LeastBusy));
    for _ in 0..scale(THROUGHPUT_ROUNDS) {
        run_threads(&mut floor4, THREADS_4X4, scale(ITERS_4X4), |_| {
            let mut raw = Raw::start();
            move || raw.call()
        });
        run_threads(&mut tp4, THREADS_4X4, scale(ITERS_4X4), |i| {
            let pool = Arc::clone(&pool4);
            move || pool_call(&pool, i)
        });
        run_threads(&mut floor4_c, THREADS_4X4, scale(ITERS_4X4), |_| {
            let mut raw = Raw::start_c();
            move || raw.call_line()
        });
        run_threads(&mut rt4_c, THREADS_4X4, scale(ITERS_4X4), |i| {
            let pool = Arc::clone(&pool4_c);
            move || pool_call_line(&pool, i)
        });
        run_threads(&mut req4_c, THREADS_4X4, scale(ITERS_4X4), |_| {
            let pool = Arc::clone(&pool4_c);
            move || request_line(&pool)
        });
        run_threads(&mut req4_lb_c, THREADS_4X4, scale(ITERS_4X4), |_| {
            let pool = Arc::clone(&pool4_lb_c);
            move || request_line(&pool)
        });
        if let Ok(go) = go_pool {
            go_pool_run(&mut go4_c, go, "tput", scale(ITERS_4X4), THREADS_4X4);
        }
    }
    pool4.shutdown(GRACE);
    pool4_c.shutdown(GRACE);
    pool4_lb_c.shutdown(GRACE);
    let fc = floor4.calls_per_s();
    emit(&floor4.json(pinned, "floor_4x4", 1.0, "reference"));
    emit(&tp4.json(
        pinned,
        "floor_4x4",
        tp4.calls_per_s() / fc,
        "calls_per_s / calls_per_s(floor_4x4)",
    ));
    let fc_c = floor4_c.calls_per_s();
    let go_cps = go_pool.ok().map(|_| go4_c.calls_per_s());
    emit(&floor4_c.json(
        pinned,
        "floor_4x4",
        fc_c / fc,
        "calls_per_s / calls_per_s(floor_4x4 with the test tool); reference of the _c_4x4 rows",
    ));
    for st in [&rt4_c, &req4_c, &req4_lb_c] {
        let mut row = st.json(
            pinned,
            "floor_c_4x4",
            st.calls_per_s() / fc_c,
            "calls_per_s / calls_per_s(floor_c_4x4)",
        );
        if let Some(g) = go_cps {
            row["vs_go_pool"] = json!(round3(st.calls_per_s() / g));
        }
        emit(&row);
    }
    match go_pool {
        Ok(_) => emit(&go4_c.json(
            pinned,
            "floor_c_4x4",
            go4_c.calls_per_s() / fc_c,
            "calls_per_s / calls_per_s(floor_c_4x4)",
        )),
        Err(why) => emit(&skipped("go_pool_c_4x4", pinned, why)),
    }
}

/// `threads` threads, each with its own call made by `make(i)` (set up before the clock
/// starts), warm up, then `iters` calls each; samples, calls and wall time (from the
/// common start to the last thread's end) are added to `st`.
fn run_threads<F, C>(st: &mut Stats, threads: usize, iters: usize, make: F)
where
    F: Fn(usize) -> C,
    C: FnMut() + Send + 'static,
{
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let mut call = make(i);
            let (ready, go) = (Arc::clone(&ready), Arc::clone(&go));
            thread::spawn(move || {
                for _ in 0..scale(WARMUP) {
                    call();
                }
                ready.wait();
                go.wait();
                let mut st = Stats::new("");
                measure(&mut st, iters, &mut call);
                drop(call); // ends a raw child here, not on the main thread
                st.samples
            })
        })
        .collect();
    ready.wait();
    let t0 = Instant::now();
    go.wait();
    for h in handles {
        st.samples.extend(h.join().expect("bench thread"));
    }
    st.wall += t0.elapsed();
    st.calls += threads * iters;
}

/// The real interpreter behind `python3` (not a pyenv/asdf shim script), so that the
/// per-call spawn figure measures Python, not a shim.
fn python() -> Option<String> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let exe = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !exe.is_empty()).then_some(exe)
}

fn jsonrpc_spawn_call(python: &str) {
    let mut child = Command::new(python)
        .args(["-u", RPC_TOOL])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn python");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":[1]}\n")
        .expect("write");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read");
    drop(stdin);
    child.wait().expect("wait");
    let v: Value = serde_json::from_str(&line).expect("a JSON-RPC reply");
    assert_eq!(v["result"], json!([1]), "{line}");
}

fn jsonrpc_suite() {
    let Some(py) = python() else {
        for name in [
            "jsonrpc_spawn_per_call",
            "jsonrpc_floor",
            "jsonrpc_roundtrip",
        ] {
            emit(&skipped(name, false, "python3 not found"));
        }
        return;
    };
    // The same tool kept warm and driven over raw pipes: the best a pool could do.
    let mut raw = Raw::spawn(&py, &["-u", RPC_TOOL]);
    let mut id = 0u64;
    let mut raw_call = || {
        id += 1;
        let req =
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"echo\",\"params\":[1]}}\n");
        let v: Value = serde_json::from_str(raw.exchange(req.as_bytes())).expect("JSON reply");
        assert_eq!((&v["id"], &v["result"]), (&json!(id), &json!([1])));
    };
    let pool = Pool::from_spec(ToolSpec {
        protocol: Protocol::Jsonrpc,
        ..ToolSpec::new([py.as_str(), "-u", RPC_TOOL])
    })
    .expect("start the JSON-RPC pool");
    let payload = r#"{"method":"echo","params":[1]}"#;
    let call = || {
        let r = pool.request(payload, TIMEOUT).expect("jsonrpc request");
        assert_eq!(r.text, "[1]");
    };
    for _ in 0..scale(WARMUP) {
        raw_call();
        call();
    }
    for _ in 0..scale(JSONRPC_SPAWN_WARMUP) {
        jsonrpc_spawn_call(&py);
    }
    let mut spawn = Stats::new("jsonrpc_spawn_per_call");
    let mut floor = Stats::new("jsonrpc_floor");
    let mut pooled = Stats::new("jsonrpc_roundtrip");
    for _ in 0..scale(ROUNDS) {
        measure(
            &mut spawn,
            scale(JSONRPC_SPAWN_ITERS) / scale(ROUNDS),
            || jsonrpc_spawn_call(&py),
        );
        measure(&mut floor, scale(JSONRPC_BLOCK), &mut raw_call);
        measure(&mut pooled, scale(JSONRPC_BLOCK), call);
    }
    drop(raw);
    pool.shutdown(GRACE);

    let s50 = spawn.p50();
    emit(&spawn.json(false, "jsonrpc_spawn_per_call", 1.0, "reference"));
    emit(&floor.json(
        false,
        "jsonrpc_spawn_per_call",
        s50 / floor.p50(),
        "p50(jsonrpc_spawn_per_call) / p50 (ceiling for a pool)",
    ));
    emit(&pooled.json(
        false,
        "jsonrpc_spawn_per_call",
        s50 / pooled.p50(),
        "p50(jsonrpc_spawn_per_call) / p50",
    ));
}

/// The same Python line echo driven on pipes with `-u` and on a pseudo-terminal without
/// it (what `pty` costs a request against the tool's own unbuffered flag), and the same
/// interpreter as a REPL in prompt framing.
fn pty_suite() {
    let Some(py) = python() else {
        for name in ["python_pipe_unbuffered", "python_pty", "python_prompt"] {
            emit(&skipped(name, false, "python3 not found"));
        }
        return;
    };
    let echo = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)";
    let pool = |pty: bool| {
        let mut argv = vec![py.as_str()];
        if !pty {
            argv.push("-u");
        }
        argv.extend(["-c", echo]);
        Pool::from_spec(ToolSpec {
            pty,
            ..ToolSpec::new(argv)
        })
        .expect("start the python pool")
    };
    let (pipe, pty) = (pool(false), pool(true));
    // The same interpreter as an interactive REPL in prompt framing: the statement is the
    // line as a string literal, and the reply its repr (two characters more).
    let repl = Pool::from_spec(ToolSpec {
        pty: true,
        protocol: Protocol::Prompt(toolpool::spec::Prompt::new(">>> ")),
        ..ToolSpec::new([py.as_str(), "-i", "-q"])
    })
    .expect("start the python REPL pool");
    let literal = format!("'{LINE}'");
    let call = |p: &Pool| {
        let r = p.request(LINE, TIMEOUT).expect("python echo");
        assert_eq!(r.text, LINE);
    };
    let ask = || {
        let r = repl.request(&literal, TIMEOUT).expect("python prompt");
        assert_eq!(r.text, literal);
    };
    for _ in 0..scale(WARMUP) {
        call(&pipe);
        call(&pty);
        ask();
    }
    let mut on_pipe = Stats::new("python_pipe_unbuffered");
    let mut on_pty = Stats::new("python_pty");
    let mut prompt = Stats::new("python_prompt");
    for _ in 0..scale(ROUNDS) {
        measure(&mut on_pipe, scale(JSONRPC_BLOCK), || call(&pipe));
        measure(&mut on_pty, scale(JSONRPC_BLOCK), || call(&pty));
        measure(&mut prompt, scale(JSONRPC_BLOCK), ask);
    }
    pipe.shutdown(GRACE);
    pty.shutdown(GRACE);
    repl.shutdown(GRACE);
    let base = on_pipe.p50();
    emit(&on_pipe.json(false, "python_pipe_unbuffered", 1.0, "reference"));
    emit(&on_pty.json(
        false,
        "python_pipe_unbuffered",
        on_pty.p50() / base,
        "p50 / p50(python_pipe_unbuffered): the cost of pty (target <= 1.2)",
    ));
    emit(&prompt.json(
        false,
        "python_pty",
        prompt.p50() / on_pty.p50(),
        "p50 / p50(python_pty): python3 -i in prompt framing against the same python3 as a lines tool on a pty",
    ));
}

fn routing_suite() {
    let rr_pool = Arc::new(testtool_pool(INSTANCES_8X3, Routing::RoundRobin));
    let lb_pool = Arc::new(testtool_pool(INSTANCES_8X3, Routing::LeastBusy));
    let run = |st: &mut Stats, pool: &Arc<Pool>| {
        run_threads(st, THREADS_8X3, scale(ITERS_8X3), |_| {
            let pool = Arc::clone(pool);
            move || {
                let r = pool.request("x", TIMEOUT).expect("request");
                assert_eq!(r.text, "x");
            }
        })
    };
    let mut rr = Stats::new("round_robin_8x3");
    let mut lb = Stats::new("least_busy_8x3");
    for _ in 0..scale(THROUGHPUT_ROUNDS) {
        run(&mut rr, &rr_pool);
        run(&mut lb, &lb_pool);
    }
    rr_pool.shutdown(GRACE);
    lb_pool.shutdown(GRACE);
    emit(&rr.json(false, "round_robin_8x3", 1.0, "reference"));
    emit(&lb.json(
        false,
        "round_robin_8x3",
        lb.calls_per_s() / rr.calls_per_s(),
        "calls_per_s / calls_per_s(round_robin_8x3)",
    ));
}

fn scale_sizes() -> &'static [usize] {
    if smoke() {
        &SCALE_SIZES[..2]
    } else {
        &SCALE_SIZES
    }
}

/// VmRSS (KiB) and Threads of this process, from /proc/self/status.
fn rss_and_threads() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{key} in /proc/self/status"))
    };
    (field("VmRSS:"), field("Threads:"))
}

/// Room for 1,000 instances plus 1,000 raw children: the soft fd limit up to the hard one.
fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `scale_N`: a pool of N C echo children next to N raw ones.
fn scale_suite(pinned: bool) {
    raise_fd_limit();
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    for &n in scale_sizes() {
        scale_row(n, cores, pinned);
    }
}

fn scale_row(n: usize, cores: usize, pinned: bool) {
    let ms = |d: Duration| round2(d.as_secs_f64() * 1e3);
    // The spawn reference: N raw children started one after another by std's Command (no
    // pre_exec, so posix_spawn), divided by the cores. They stay alive for the floor.
    let t = Instant::now();
    let mut raws: Vec<Raw> = (0..n).map(|_| Raw::start_c()).collect();
    let spawn_ref = t.elapsed() / cores as u32;
    // Give the heap freed by earlier figures back first, or the pool would reuse it and
    // its growth would not show in VmRSS.
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
    let (rss0, threads0) = rss_and_threads();
    let t = Instant::now();
    let pool = echo_pool(n, Routing::RoundRobin);
    let start = t.elapsed();
    let (rss1, threads1) = rss_and_threads();
    // Warm every child once, then interleaved blocks: raw round robin over the N raw
    // children (the floor with N children alive), routed requests over the N instances.
    for r in &mut raws {
        r.call_line();
    }
    for _ in 0..n.max(scale(WARMUP)) {
        request_line(&pool);
    }
    let mut floor = Stats::new("");
    let mut st = Stats::new(format!("scale_{n}"));
    let mut k = 0;
    for _ in 0..scale(ROUNDS) {
        measure(&mut floor, scale(SCALE_BLOCK), || {
            raws[k % n].call_line();
            k += 1;
        });
        measure(&mut st, scale(SCALE_BLOCK), || request_line(&pool));
    }
    let t = Instant::now();
    pool.shutdown(GRACE);
    drop(pool);
    let shutdown = t.elapsed();
    drop(raws);
    let f50 = floor.p50();
    let mut row = st.json(
        pinned,
        "floor_p50_us",
        st.p50() / f50,
        "p50 (routed requests over N instances) / floor_p50_us (raw round robin over N C echo children)",
    );
    row["instances"] = json!(n);
    row["start_ms"] = json!(ms(start));
    row["spawn_ref_ms"] = json!(ms(spawn_ref));
    row["start_ratio"] = json!(round3(start.as_secs_f64() / spawn_ref.as_secs_f64()));
    row["cores"] = json!(cores);
    row["rss_kib_per_instance"] = json!(round2((rss1 - rss0) / n as f64));
    row["threads_per_instance"] = json!(round2((threads1 - threads0) / n as f64));
    row["floor_p50_us"] = json!(round2(f50));
    row["shutdown_ms"] = json!(ms(shutdown));
    emit(&row);
}

fn skipped(name: &str, pinned: bool, why: &str) -> Value {
    json!({
        "name": name, "pinned": pinned, "skipped": why,
        "p50_us": null, "p99_us": null, "calls_per_s": null, "ratio": null, "baseline": null,
    })
}

/// Pin the whole process (before any thread exists) to the first CPU it may run on.
fn pin_to_one_cpu() -> Result<usize, String> {
    // SAFETY: cpu_set_t is plain data; the calls get its exact size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        if libc::sched_getaffinity(0, size, &mut set) != 0 {
            return Err(format!(
                "sched_getaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .ok_or("empty affinity mask")?;
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        if libc::sched_setaffinity(0, size, &one) != 0 {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(cpu)
    }
}

/// System calls per round trip of the calling thread, pinned (so the count is
/// the common case: no spin): the raw C floor (`write` + `read`), `send` + `read_line`
/// and `request` on the C echo child. `syscalls_per_call` is the count; ratio = that /
/// the floor's. Skipped with the reason when the kernel counter cannot be opened.
fn syscall_suite() {
    let counter = match syscalls::Counter::new() {
        Ok(c) => c,
        Err(why) => {
            for name in SYSCALL_NAMES {
                emit(&skipped(name, true, &why));
            }
            return;
        }
    };
    let mut raw = Raw::start_c();
    let pool = echo_pool(1, Routing::RoundRobin);
    for _ in 0..scale(WARMUP) {
        raw.call_line();
        pool_call_line(&pool, 0);
        request_line(&pool);
    }
    let n = scale(SYSCALL_ITERS);
    let floor = counter.per_call(n, || raw.call_line());
    let line = counter.per_call(n, || pool_call_line(&pool, 0));
    let request = counter.per_call(n, || request_line(&pool));
    drop(raw);
    pool.shutdown(GRACE);
    for (name, per_call) in SYSCALL_NAMES.into_iter().zip([floor, line, request]) {
        emit(&json!({
            "name": name, "pinned": true, "p50_us": null, "p99_us": null, "calls_per_s": null,
            "syscalls_per_call": round2(per_call), "calls": n,
            "ratio": round2(per_call / floor), "baseline": "syscalls_floor_c",
            "ratio_def": "system calls per round trip of the calling thread / the raw floor's",
        }));
    }
}

/// Figures emitted both pinned and unpinned: the core suite and the `scale_N` rows.
fn pinned_names() -> Vec<String> {
    let core = [
        "floor",
        "roundtrip",
        "request_roundtrip",
        "spawn_per_call",
        "floor_c",
        "roundtrip_c",
        "request_c",
        "go_pool_c",
        "floor_4x4",
        "throughput_4x4",
        "floor_c_4x4",
        "roundtrip_c_4x4",
        "request_c_4x4",
        "request_lb_c_4x4",
        "go_pool_c_4x4",
        "py_main_c",
        "py_worker_c",
        "py_purepy_c",
        "py_aio_seq_c",
        "go_binding_c",
        "py_4x4_c",
        "py_purepy_4x4_c",
        "py_aio_gather_c",
        "go_binding_c_4x4",
        "service_request",
        "service_4x4",
    ];
    let scale = scale_sizes().iter().map(|n| format!("scale_{n}"));
    core.iter().map(|s| s.to_string()).chain(scale).collect()
}

/// Child mode: pin, run the core suite, print its JSON lines.
fn pinned_main() {
    match pin_to_one_cpu() {
        Ok(cpu) => {
            eprintln!("pinned run on CPU {cpu}");
            core_suite(true);
            bindings_suite(true);
            service_suite(true);
            syscall_suite();
            scale_suite(true);
        }
        Err(why) => {
            for name in pinned_names()
                .iter()
                .map(String::as_str)
                .chain(SYSCALL_NAMES)
            {
                emit(&skipped(name, true, &format!("cannot pin: {why}")));
            }
        }
    }
}

/// Re-execute this binary pinned and pass its JSON lines through.
fn run_pinned_child() {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            for name in pinned_names() {
                emit(&skipped(&name, true, &format!("current_exe: {e}")));
            }
            return;
        }
    };
    let h = helpers();
    let mut cmd = Command::new(exe);
    cmd.env(PINNED_ENV, "1")
        .env(ECHO_ENV, &h.echo)
        .env(RELAY_ENV, &h.relay);
    match &h.go_pool {
        Ok(go) => cmd.env(GO_POOL_ENV, go),
        Err(why) => cmd.env(GO_SKIP_ENV, why),
    };
    match &h.go_binding {
        Ok(go) => cmd.env(GO_BINDING_ENV, go),
        Err(why) => cmd.env(GO_BINDING_SKIP_ENV, why),
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the pinned bench");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = Vec::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            seen.push(v["name"].as_str().unwrap_or_default().to_string());
            emit(&v);
        }
    }
    for name in pinned_names()
        .iter()
        .map(String::as_str)
        .chain(SYSCALL_NAMES)
        .filter(|n| !seen.iter().any(|s| s == n))
    {
        emit(&skipped(
            name,
            true,
            &format!("pinned run failed: {}", out.status),
        ));
    }
}

fn summary(rows: &[Value]) {
    let num = |v: &Value, k: &str, digits: usize| match v[k].as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "-".into(),
    };
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "\n{:<24} {:>6} {:>11} {:>11} {:>12} {:>9}  baseline",
        "figure", "pinned", "p50 us", "p99 us", "calls/s", "ratio"
    );
    for v in rows {
        let name = v["name"].as_str().unwrap_or("?");
        let pinned = if v["pinned"].as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        };
        if let Some(why) = v["skipped"].as_str() {
            let _ = writeln!(e, "{name:<24} {pinned:>6}  skipped: {why}");
            continue;
        }
        let _ = writeln!(
            e,
            "{:<24} {:>6} {:>11} {:>11} {:>12} {:>9}  {} ({})",
            name,
            pinned,
            num(v, "p50_us", 1),
            num(v, "p99_us", 1),
            num(v, "calls_per_s", 0),
            num(v, "ratio", 2),
            v["baseline"].as_str().unwrap_or("-"),
            v["ratio_def"].as_str().unwrap_or("-"),
        );
    }
    let _ = writeln!(
        e,
        "\n{:<12} {:>6} {:>10} {:>13} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9}",
        "scale",
        "pinned",
        "start ms",
        "spawn ref ms",
        "RSS KiB",
        "threads",
        "p50 us",
        "floor us",
        "p50/floor",
        "stop ms"
    );
    for v in rows.iter().filter(|v| v.get("instances").is_some()) {
        let pinned = if v["pinned"] == true { "yes" } else { "no" };
        let _ = writeln!(
            e,
            "{:<12} {:>6} {:>10} {:>13} {:>8} {:>9} {:>9} {:>9} {:>11} {:>9}",
            v["name"].as_str().unwrap_or("?"),
            pinned,
            num(v, "start_ms", 1),
            num(v, "spawn_ref_ms", 1),
            num(v, "rss_kib_per_instance", 0),
            num(v, "threads_per_instance", 1),
            num(v, "p50_us", 1),
            num(v, "floor_p50_us", 1),
            num(v, "ratio", 2),
            num(v, "shutdown_ms", 1),
        );
    }
}

/// The `syscalls_*` rows as their own table (after `summary`).
fn syscall_summary(rows: &[Value]) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(
        e,
        "\n{:<24} {:>6} {:>18} {:>9}",
        "system calls", "pinned", "per round trip", "ratio"
    );
    for v in rows.iter().filter(|v| v.get("syscalls_per_call").is_some()) {
        let _ = writeln!(
            e,
            "{:<24} {:>6} {:>18.2} {:>9.2}  {}",
            v["name"].as_str().unwrap_or("?"),
            "yes",
            v["syscalls_per_call"].as_f64().unwrap_or(f64::NAN),
            v["ratio"].as_f64().unwrap_or(f64::NAN),
            v["baseline"].as_str().unwrap_or("-"),
        );
    }
}

fn main() {
    if std::env::var_os(service::CLIENT_ENV).is_some() {
        service::client_main(scale(WARMUP), request_line);
        return;
    }
    if std::env::var_os(PINNED_ENV).is_some_and(|v| v == "1") {
        pinned_main();
        return;
    }
    let t0 = Instant::now();
    helpers();
    run_pinned_child();
    core_suite(false);
    bindings_suite(false);
    service_suite(false);
    scale_suite(false);
    jsonrpc_suite();
    pty_suite();
    routing_suite();
    ssh_suite();
    let rows = ROWS.lock().expect("rows");
    if smoke() {
        smoke_check(&rows);
        eprintln!(
            "bench smoke: {} rows ok in {:.1} s",
            rows.len(),
            t0.elapsed().as_secs_f64()
        );
        return;
    }
    summary(&rows);
    syscall_summary(&rows);
    eprintln!("total bench time {:.1} s", t0.elapsed().as_secs_f64());
}

/// The `toolpool` command the service rows start: the one cargo builds next to this bench
/// (with `--features cli`, or by `cargo test --features cli` before it), else the one
/// `make build` made.
fn toolpool_bin() -> Result<std::path::PathBuf, String> {
    let cargo = option_env!("CARGO_BIN_EXE_toolpool").map(Path::new);
    let release = Path::new(RELEASE_DIR).join("toolpool");
    match cargo.filter(|p| p.is_file()) {
        Some(p) => Ok(p.to_path_buf()),
        None if release.is_file() => Ok(release),
        None => Err(format!("{} missing: run make build", release.display())),
    }
}

/// `service_request` and `service_4x4` (see the module docs), pinned or not.
fn service_suite(pinned: bool) {
    let echo = serde_json::to_string(&helpers().echo).expect("a path as JSON");
    let registry = format!(
        r#"{{"tools": {{"echo1": {{"command": [{echo}], "count": 1}},
                       "echo4": {{"command": [{echo}], "count": {THREADS_4X4}}}}}}}"#
    );
    let served = match toolpool_bin().and_then(|bin| service::Served::start(&bin, &registry)) {
        Ok(s) => s,
        Err(why) => {
            for name in ["service_request", "service_4x4"] {
                emit(&skipped(name, pinned, &why));
            }
            return;
        }
    };
    let client = toolpool::Client::connect(&served.socket).expect("connect to the service");

    // Latency: one caller, the local pool and the service's in interleaved blocks.
    let local = echo_pool(1, Routing::RoundRobin);
    let remote = client.pool("echo1").expect("the service's pool echo1");
    let relay = || Command::new(&helpers().relay);
    let mut floor = Stats::new("relay_floor");
    let (loc, svc) = local_vs(&local, &remote, "service_request", scale(BLOCK), || {
        add_run(&mut floor, &helper_run(relay(), "lat", scale(BLOCK), 1))
    });
    local.shutdown(GRACE);
    let l50 = loc.p50();
    let mut row = svc.json(
        pinned,
        "request on a local pool of the same C echo child (same rounds)",
        svc.p50() / l50,
        "p50 / p50(local request)",
    );
    row["local_p50_us"] = json!(round2(l50));
    row["added_us"] = json!(round2(svc.p50() - l50));
    row["relay_floor_p50_us"] = json!(round2(floor.p50()));
    row["vs_relay_floor"] = json!(round3(svc.p50() / floor.p50()));
    emit(&row);

    // Throughput: 4 client processes on the service's pool of 4, and 4 threads on a
    // local pool of 4, in alternating rounds.
    let local4 = Arc::new(echo_pool(THREADS_4X4, Routing::RoundRobin));
    let mut clients: Vec<service::ClientProc> = (0..THREADS_4X4)
        .map(|_| service::ClientProc::start(&served.socket, "echo4"))
        .collect();
    let mut loc4 = Stats::new("service_local_4x4");
    let mut svc4 = Stats::new("service_4x4");
    let mut floor4 = Stats::new("relay_floor_4x4");
    for _ in 0..scale(THROUGHPUT_ROUNDS) {
        run_threads(&mut loc4, THREADS_4X4, scale(ITERS_4X4), |_| {
            let pool = Arc::clone(&local4);
            move || request_line(&pool)
        });
        run_clients(&mut svc4, &mut clients, scale(ITERS_4X4));
        let v = helper_run(relay(), "tput", scale(ITERS_4X4), THREADS_4X4);
        add_run(&mut floor4, &v);
    }
    drop(clients);
    local4.shutdown(GRACE);
    drop(served);
    let lc = loc4.calls_per_s();
    let mut row = svc4.json(
        pinned,
        "4 threads on a local pool of 4 (same rounds)",
        svc4.calls_per_s() / lc,
        "calls_per_s / calls_per_s(4 threads on a local pool of 4)",
    );
    row["local_calls_per_s"] = json!(lc.round());
    row["relay_floor_calls_per_s"] = json!(floor4.calls_per_s().round());
    row["vs_relay_floor"] = json!(round3(svc4.calls_per_s() / floor4.calls_per_s()));
    emit(&row);
}

/// `request_line` on a local pool and on `remote` after a warm-up, in `ROUNDS` interleaved
/// blocks of `block` calls each (and `also` once a round): the local figure, and
/// `remote`'s (named `name`).
fn local_vs(
    local: &Pool,
    remote: &Pool,
    name: &str,
    block: usize,
    mut also: impl FnMut(),
) -> (Stats, Stats) {
    for _ in 0..scale(WARMUP) {
        request_line(local);
        request_line(remote);
    }
    let mut loc = Stats::new("local_request");
    let mut st = Stats::new(name);
    for _ in 0..scale(ROUNDS) {
        measure(&mut loc, block, || request_line(local));
        measure(&mut st, block, || request_line(remote));
        also();
    }
    (loc, st)
}

/// One round of the client processes: `iters` requests each, started together; samples,
/// calls and wall time (from the first `go` to the last `done`) are added to `st`.
fn run_clients(st: &mut Stats, clients: &mut [service::ClientProc], iters: usize) {
    let t0 = Instant::now();
    for c in clients.iter_mut() {
        c.go(iters);
    }
    for c in clients.iter_mut() {
        assert_eq!(c.line(), "done", "a bench client's answer");
    }
    st.wall += t0.elapsed();
    for c in clients.iter_mut() {
        let samples: Vec<f64> = serde_json::from_str(&c.line()).expect("a client's samples");
        st.samples.extend(samples);
    }
    st.calls += clients.len() * iters;
}

/// The round trip over ssh to 127.0.0.1 next to the local one.
fn ssh_suite() {
    if !sshd::available() {
        emit(&skipped("ssh_roundtrip", false, "sshd not installed"));
        return;
    }
    let server = sshd::Sshd::start();
    let spec = |remote: bool| ToolSpec {
        remote: remote.then(|| toolpool::RemoteSpec {
            launcher: toolpool::Launcher::Ssh,
            hosts: vec!["127.0.0.1".into()],
            options: server.options(),
            per_host: None,
        }),
        ..ToolSpec::new([TESTTOOL])
    };
    let local = Pool::from_spec(spec(false)).expect("local pool");
    let remote = Pool::from_spec(spec(true)).expect("pool over ssh to 127.0.0.1");
    let (loc, ssh) = local_vs(
        &local,
        &remote,
        "ssh_roundtrip",
        scale(JSONRPC_BLOCK),
        || {},
    );
    local.shutdown(GRACE);
    remote.shutdown(GRACE);
    let mut row = ssh.json(
        false,
        "request on a local pool (same run)",
        ssh.p50() / loc.p50(),
        "p50 / p50(local request)",
    );
    row["local_p50_us"] = json!(round2(loc.p50()));
    if smoke() && !row["ratio"].as_f64().is_some_and(f64::is_finite) {
        eprintln!("bench smoke failed: ssh_roundtrip has no ratio: {row}");
        std::process::exit(1);
    }
    emit(&row);
}

/// Smoke mode: every figure has its unpinned row with numbers in it.
fn smoke_check(rows: &[Value]) {
    let mut bad = Vec::new();
    // Every figure has its unpinned row; the pinned ones may be skipped when pinning fails.
    let names = pinned_names();
    for name in names.iter().map(String::as_str).chain(UNPINNED_NAMES) {
        let row = rows
            .iter()
            .find(|v| v["name"] == *name && v["pinned"] == false);
        match row {
            None => bad.push(format!("{name}: no row")),
            // The Go rows need `go`, which is optional.
            Some(v) if name.starts_with("go_") && v["skipped"] == "go not installed" => {}
            Some(v) if v.get("skipped").is_some() => {
                bad.push(format!("{name}: skipped: {}", v["skipped"]))
            }
            Some(v) if !v["ratio"].as_f64().is_some_and(f64::is_finite) => {
                bad.push(format!("{name}: no ratio in {v}"))
            }
            Some(v)
                if name.starts_with("scale_") && SCALE_FIELDS.iter().any(|f| !v[f].is_number()) =>
            {
                bad.push(format!(
                    "{name}: a field of {SCALE_FIELDS:?} missing in {v}"
                ))
            }
            Some(_) => {}
        }
    }
    // The system-call rows are pinned only; they may be skipped (no pinning, no kernel
    // counter), but a row that is there has its count.
    for name in SYSCALL_NAMES {
        match rows.iter().find(|v| v["name"] == name) {
            None => bad.push(format!("{name}: no row")),
            Some(v) if v.get("skipped").is_some() => {}
            Some(v) if !v["syscalls_per_call"].as_f64().is_some_and(|x| x > 0.0) => {
                bad.push(format!("{name}: no syscalls_per_call in {v}"))
            }
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        eprintln!("bench smoke failed:\n  {}", bad.join("\n  "));
        std::process::exit(1);
    }
}
