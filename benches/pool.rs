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
//! floor, roundtrip, spawn_per_call and the 4x4 figures run twice: unpinned, and pinned
//! to one CPU. The pinned run is this binary re-executed with `TOOLPOOL_BENCH_PINNED=1`;
//! it pins its whole process with `sched_setaffinity` before it creates any thread, so
//! every pool thread and every child inherits the single-CPU mask. Latency figures are
//! measured in interleaved blocks (floor, pool, floor, pool, ...) so that background load
//! on the machine hits the figure and its reference alike.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use toolpool::{Pool, Protocol, Routing, ToolSpec};

const TESTTOOL: &str = env!("CARGO_BIN_EXE_toolpool-testtool");
const RPC_TOOL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools/rpc_tool.py");
const PINNED_ENV: &str = "TOOLPOOL_BENCH_PINNED";
/// `TOOLPOOL_BENCH_SMOKE=1` (what `make test` runs): every figure with a few iterations,
/// then a check that each one produced its row; the numbers mean nothing.
const SMOKE_ENV: &str = "TOOLPOOL_BENCH_SMOKE";
/// Figures emitted besides `PINNED_NAMES` (which are also emitted unpinned).
const UNPINNED_NAMES: [&str; 5] = [
    "jsonrpc_spawn_per_call",
    "jsonrpc_floor",
    "jsonrpc_roundtrip",
    "round_robin_8x3",
    "least_busy_8x3",
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
const THREADS_8X3: usize = 8;
const INSTANCES_8X3: usize = 3;
/// Per thread and round.
const ITERS_8X3: usize = 300;

/// Samples of one figure, in microseconds, and the wall time they took.
struct Stats {
    name: &'static str,
    samples: Vec<f64>,
    wall: Duration,
    calls: usize,
}

impl Stats {
    fn new(name: &'static str) -> Stats {
        Stats {
            name,
            samples: Vec::new(),
            wall: Duration::ZERO,
            calls: 0,
        }
    }

    /// Nearest-rank percentile of the sorted samples.
    fn pct(&self, q: f64) -> f64 {
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
        json!({
            "name": self.name,
            "pinned": pinned,
            "p50_us": round2(self.p50()),
            "p90_us": round2(self.pct(0.90)),
            "p99_us": round2(self.pct(0.99)),
            "mean_us": round2(mean),
            "calls_per_s": self.calls_per_s().round(),
            "ratio": (ratio * 1000.0).round() / 1000.0,
            "baseline": baseline,
            "ratio_def": ratio_def,
            "n": self.samples.len(),
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
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
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        f();
        st.samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    st.wall += t0.elapsed();
    st.calls += n;
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
    for _ in 0..scale(WARMUP) {
        raw.call();
        pool_call(&pool, 0);
        pool.request("x", TIMEOUT).expect("request");
    }
    let mut floor = Stats::new("floor");
    let mut rt = Stats::new("roundtrip");
    let mut req = Stats::new("request_roundtrip");
    for _ in 0..scale(ROUNDS) {
        measure(&mut floor, scale(BLOCK), || raw.call());
        measure(&mut rt, scale(BLOCK), || pool_call(&pool, 0));
        measure(&mut req, scale(BLOCK), || {
            let r = pool.request("x", TIMEOUT).expect("request");
            assert_eq!(r.text, "x");
        });
    }
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

    // Throughput: 4 threads, each on its own raw child or pool instance, in alternating
    // rounds (fresh raw children each round, started before the clock).
    let mut floor4 = Stats::new("floor_4x4");
    let mut tp4 = Stats::new("throughput_4x4");
    let pool4 = Arc::new(testtool_pool(THREADS_4X4, Routing::RoundRobin));
    for _ in 0..scale(THROUGHPUT_ROUNDS) {
        run_threads(&mut floor4, THREADS_4X4, scale(ITERS_4X4), |_| {
            let mut raw = Raw::start();
            move || raw.call()
        });
        run_threads(&mut tp4, THREADS_4X4, scale(ITERS_4X4), |i| {
            let pool = Arc::clone(&pool4);
            move || pool_call(&pool, i)
        });
    }
    pool4.shutdown(GRACE);
    let fc = floor4.calls_per_s();
    emit(&floor4.json(pinned, "floor_4x4", 1.0, "reference"));
    emit(&tp4.json(
        pinned,
        "floor_4x4",
        tp4.calls_per_s() / fc,
        "calls_per_s / calls_per_s(floor_4x4)",
    ));
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

const PINNED_NAMES: [&str; 6] = [
    "floor",
    "roundtrip",
    "request_roundtrip",
    "spawn_per_call",
    "floor_4x4",
    "throughput_4x4",
];

/// Child mode: pin, run the core suite, print its JSON lines.
fn pinned_main() {
    match pin_to_one_cpu() {
        Ok(cpu) => {
            eprintln!("pinned run on CPU {cpu}");
            core_suite(true);
        }
        Err(why) => {
            for name in PINNED_NAMES {
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
            for name in PINNED_NAMES {
                emit(&skipped(name, true, &format!("current_exe: {e}")));
            }
            return;
        }
    };
    let out = Command::new(exe)
        .env(PINNED_ENV, "1")
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
    for name in PINNED_NAMES
        .iter()
        .filter(|n| !seen.iter().any(|s| s == *n))
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
}

fn main() {
    if std::env::var_os(PINNED_ENV).is_some_and(|v| v == "1") {
        pinned_main();
        return;
    }
    let t0 = Instant::now();
    run_pinned_child();
    core_suite(false);
    jsonrpc_suite();
    routing_suite();
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
    eprintln!("total bench time {:.1} s", t0.elapsed().as_secs_f64());
}

/// Smoke mode: every figure has its unpinned row with numbers in it.
fn smoke_check(rows: &[Value]) {
    let mut bad = Vec::new();
    // Every figure has its unpinned row; the pinned ones may be skipped when pinning fails.
    for name in PINNED_NAMES.iter().chain(&UNPINNED_NAMES) {
        let row = rows
            .iter()
            .find(|v| v["name"] == *name && v["pinned"] == false);
        match row {
            None => bad.push(format!("{name}: no row")),
            Some(v) if v.get("skipped").is_some() => {
                bad.push(format!("{name}: skipped: {}", v["skipped"]))
            }
            Some(v) if !v["ratio"].as_f64().is_some_and(f64::is_finite) => {
                bad.push(format!("{name}: no ratio in {v}"))
            }
            Some(_) => {}
        }
    }
    if !bad.is_empty() {
        eprintln!("bench smoke failed:\n  {}", bad.join("\n  "));
        std::process::exit(1);
    }
}
