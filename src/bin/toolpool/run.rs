//! `toolpool run`: one request per input line over a warm pool, one reply per output line.
//!
//! Threads and bounded memory:
//! - a **reader** takes a credit, then reads one line (never the whole input) and queues
//!   it as a job; with no credit it stops reading, so a fast producer is held back by the
//!   pipe (backpressure) and at most `--max-pending` lines are ever held;
//! - **workers** (instances × in-flight per instance) each run one request at a time;
//! - the **main thread** writes results (in input order through a reorder buffer, or as
//!   they complete with `--unordered`) and gives a credit back per row written.
//!
//! Ctrl-C: the reader stops (it polls the input, so an idle pipe does not hold it), jobs
//! not yet started are dropped, requests in flight finish (the library has no cancellation
//! yet), their rows are written, the summary is printed, the pool is shut down and the exit
//! status is 130. A second Ctrl-C shuts the pool down at once, which fails what is still in
//! flight.

use crate::progress::{Progress, When};
use crate::stats::{self, Histogram};
use crate::tool::{parse_duration, ToolArgs};
use crate::{signals, Fatal, EXIT_FAILED, EXIT_OK};
use clap::Args;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use serde_json::{json, value::RawValue, Value};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolpool::{Error, Pool, Protocol, ServedBy};

/// Exit status when the output was closed (128 + SIGPIPE).
const EXIT_OUTPUT_CLOSED: i32 = 141;
/// Most requests run at once (one thread each), whatever -n × --in-flight says.
const MAX_WORKERS: usize = 1024;
/// Longest input line taken as a request; a longer one is an error row (and is not held).
const MAX_INPUT_LINE: usize = 64 << 20;
/// Error lines printed on stderr (without --jsonl) before the rest are only counted.
const MAX_ERRORS_SHOWN: u64 = 10;

/// Run every input line through a pool of warm instances of a tool.
///
/// Each input line (stdin, or --input) is one request; each reply is one output line
/// (stdout, or --output), in input order unless --unordered. Input is read as it comes
/// (an endless pipe works) and at most --max-pending lines are held at once. A failed row
/// is an empty output line plus a message on stderr, or an error object with --jsonl.
/// Ctrl-C stops reading, lets the requests in flight finish (the library has no
/// cancellation yet; a later version will cancel them), writes their rows, prints the
/// summary, stops every tool process and exits 130; a second Ctrl-C stops the tools at
/// once.
#[derive(Args, Debug)]
#[command(after_help = crate::AFTER_HELP)]
pub struct RunArgs {
    #[command(flatten)]
    pub tool: ToolArgs,

    /// Read requests from FILE instead of stdin.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Write replies to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Write each reply as soon as it is ready instead of in input order.
    #[arg(long)]
    pub unordered: bool,

    /// One JSON object per input line: {"line": n, "ok": true, "reply": ..., "instance":
    /// i, "ms": t} or {"line": n, "ok": false, "error": {"code", "name", "message"}, "ms":
    /// t}. With jsonrpc the reply is the result as JSON; otherwise a string.
    #[arg(long)]
    pub jsonl: bool,

    /// Time limit of one request, waiting for a free instance included (e.g. 500ms, 30s,
    /// 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Run a request again, up to N more times, when its instance died under it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,

    /// Progress on stderr (done/total, rate, ETA, errors): auto draws it only when stderr
    /// is a terminal.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = When::Auto)]
    pub progress: When,

    /// Most input lines read but not yet written [default: 8 × the requests that run at
    /// once, at least 64].
    #[arg(long, value_name = "N")]
    pub max_pending: Option<usize>,

    /// No summary and no per-row error messages on stderr.
    #[arg(short, long)]
    pub quiet: bool,
}

/// One input line to run.
struct Job {
    seq: u64,
    /// The line, or its length when longer than [`MAX_INPUT_LINE`] (then not kept).
    line: Result<Vec<u8>, usize>,
}

/// What became of a job.
enum Outcome {
    /// It ran: its result, time taken (all attempts) and attempts.
    Ran {
        result: Result<toolpool::Reply, Error>,
        took: Duration,
        attempts: u32,
    },
    /// Interrupted before it started.
    Skipped,
}

struct Done {
    seq: u64,
    outcome: Outcome,
}

/// Shared between threads: why to stop, and how far the reader got.
#[derive(Default)]
struct Shared {
    /// Stop reading input and starting jobs (Ctrl-C, or the output closed).
    stop: AtomicBool,
    /// Lines read so far.
    read: AtomicU64,
    /// The input has ended (then `read` is the total).
    eof: AtomicBool,
    /// A read error, if the input failed.
    read_error: parking_lot::Mutex<Option<String>>,
}

pub fn main(args: RunArgs) -> Result<i32, Fatal> {
    let spec = args.tool.spec()?;
    let signals = signals::install();
    let input = Input::open(args.input.as_deref())?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::fs::File::create(p)
                .map_err(|e| Fatal::config(format!("cannot create {}: {e}", p.display())))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        )),
    };
    let output_is_tty = args.output.is_none() && crate::progress::isatty(1);

    let progress = Progress::new(args.progress);
    progress.status(&format!(
        "starting {} instance(s) of '{}'",
        spec.count, spec.id
    ));
    if let Some(path) = input.regular_file_path() {
        count_lines_later(path, progress.total_setter());
    }
    let jsonrpc = spec.protocol == Protocol::Jsonrpc;
    let id = spec.id.clone();
    let shared = Arc::new(Shared::default());
    let interrupts = Interrupts::watch(signals, Arc::clone(&shared));
    let pool = match Pool::from_spec(spec) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            progress.finish();
            let sig = interrupts.signal();
            if sig != 0 {
                eprintln!("toolpool: interrupted while starting '{id}'");
                return Ok(signals::exit_status(sig));
            }
            return Err(Fatal::config(format!("cannot start '{id}': {e}")));
        }
    };
    interrupts.set_pool(&pool);
    progress.status("errors: 0");
    let started = Instant::now();
    let width = (pool.len() * pool.spec().max_in_flight).min(MAX_WORKERS);
    let window = args.max_pending.unwrap_or((width * 8).max(64)).max(1);

    let (credit_tx, credit_rx) = bounded::<()>(window);
    for _ in 0..window {
        credit_tx.send(()).expect("room for every credit");
    }
    let (job_tx, job_rx) = bounded::<Job>(window);
    let (done_tx, done_rx) = bounded::<Done>(window);

    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("toolpool-input".into())
            .spawn(move || read_input(input, credit_rx, job_tx, &shared))
            .expect("reader thread")
    };
    let workers: Vec<_> = (0..width)
        .map(|_| {
            let (pool, jobs, done, shared) = (
                Arc::clone(&pool),
                job_rx.clone(),
                done_tx.clone(),
                Arc::clone(&shared),
            );
            let (timeout, retries) = (args.timeout, args.retries);
            std::thread::Builder::new()
                .name("toolpool-worker".into())
                .spawn(move || work(&pool, &jobs, &done, &shared, timeout, retries))
                .expect("worker thread")
        })
        .collect();
    drop((job_rx, done_tx));

    let mut w = Writer {
        out: &mut out,
        jsonl: args.jsonl,
        jsonrpc,
        quiet: args.quiet,
        progress: &progress,
        suspend_for_output: output_is_tty && progress.drawn(),
        latency: Histogram::default(),
        ok: 0,
        failed: 0,
        skipped: 0,
        used: vec![false; pool.len()],
        output_closed: false,
        write_error: None,
    };
    write_rows(&mut w, &done_rx, &credit_tx, &shared, args.unordered);
    w.flush();
    let _ = reader.join();
    for h in workers {
        let _ = h.join();
    }
    let elapsed = started.elapsed();
    progress.finish();
    let metrics = pool.metrics();
    pool.shutdown(Duration::from_millis(pool.spec().shutdown.grace_ms));
    interrupts.wait_forced_shutdown();

    let sig = interrupts.signal();
    let read_error = shared.read_error.lock().take();
    if !args.quiet {
        eprintln!("{}", w.summary(elapsed, metrics.restarts, sig != 0));
    }
    if let Some(e) = &read_error {
        eprintln!("toolpool: reading the input failed: {e}");
    }
    if let Some(e) = &w.write_error {
        eprintln!("toolpool: writing the output failed: {e}");
    }
    Ok(if sig != 0 {
        signals::exit_status(sig)
    } else if w.output_closed {
        EXIT_OUTPUT_CLOSED
    } else if w.failed > 0 || read_error.is_some() || w.write_error.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// Write the rows as they come back (in input order unless `unordered`), giving a credit
/// back for each row written, until every worker is done.
fn write_rows(
    w: &mut Writer,
    done_rx: &Receiver<Done>,
    credit_tx: &Sender<()>,
    shared: &Shared,
    unordered: bool,
) {
    let mut next: u64 = 0;
    let mut pending: HashMap<u64, Outcome> = HashMap::new();
    let tick = crossbeam_channel::tick(Duration::from_millis(200));
    let mut total_set = false;
    loop {
        let d = select! {
            recv(done_rx) -> d => match d { Ok(d) => Some(d), Err(_) => break },
            recv(tick) -> _ => None,
        };
        if !total_set && shared.eof.load(Relaxed) {
            total_set = true;
            w.progress.set_total(shared.read.load(Relaxed));
        }
        let Some(d) = d else { continue };
        if unordered {
            w.row(d.seq, d.outcome);
            let _ = credit_tx.try_send(());
        } else {
            pending.insert(d.seq, d.outcome);
            while let Some(o) = pending.remove(&next) {
                w.row(next, o);
                next += 1;
                let _ = credit_tx.try_send(());
            }
        }
        if w.output_closed || w.write_error.is_some() {
            // Nowhere to write: stop reading, finish what runs.
            shared.stop.store(true, Relaxed);
        }
        if done_rx.is_empty() {
            w.flush();
        }
    }
}

/// What the signals did: the first stops the run (and, while the pool is starting, kills
/// what it started, since a start cannot be cancelled); a second shuts the pool down at once.
struct Interrupts {
    state: Arc<parking_lot::Mutex<IntState>>,
    /// Held while a forced shutdown runs.
    forcing: Arc<parking_lot::Mutex<()>>,
}

#[derive(Default)]
struct IntState {
    signal: i32,
    pool: Option<Arc<Pool>>,
}

impl Interrupts {
    fn watch(signals: Receiver<i32>, shared: Arc<Shared>) -> Interrupts {
        let state = Arc::new(parking_lot::Mutex::new(IntState::default()));
        let forcing = Arc::new(parking_lot::Mutex::new(()));
        let (st, fl) = (Arc::clone(&state), Arc::clone(&forcing));
        std::thread::Builder::new()
            .name("toolpool-interrupt".into())
            .spawn(move || {
                while let Ok(sig) = signals.recv() {
                    let mut s = st.lock();
                    let first = s.signal == 0;
                    if first {
                        s.signal = sig;
                        shared.stop.store(true, Relaxed);
                    }
                    match s.pool.clone() {
                        Some(pool) if !first => {
                            let _forcing = fl.lock();
                            drop(s);
                            pool.shutdown(Duration::ZERO);
                        }
                        Some(_) => {}
                        None => {
                            // Still starting: end the start by killing what it started.
                            toolpool::Limiter::global().kill_all();
                        }
                    }
                }
            })
            .expect("interrupt thread");
        Interrupts { state, forcing }
    }

    fn set_pool(&self, pool: &Arc<Pool>) {
        let mut s = self.state.lock();
        s.pool = Some(Arc::clone(pool));
    }

    /// The first signal's number, or 0.
    fn signal(&self) -> i32 {
        self.state.lock().signal
    }

    /// Wait until a forced shutdown begun by a second signal has finished.
    fn wait_forced_shutdown(&self) {
        drop(self.forcing.lock());
    }
}

/// Writes rows and keeps the counts.
struct Writer<'a> {
    out: &'a mut Box<dyn Write>,
    jsonl: bool,
    jsonrpc: bool,
    quiet: bool,
    progress: &'a Progress,
    suspend_for_output: bool,
    latency: Histogram,
    ok: u64,
    failed: u64,
    skipped: u64,
    used: Vec<bool>,
    output_closed: bool,
    write_error: Option<String>,
}

impl Writer<'_> {
    /// The summary line: requests, ok, failed, p50/p99, calls/s, restarts, instances used.
    fn summary(&self, elapsed: Duration, restarts: u64, interrupted: bool) -> String {
        let rows = self.ok + self.failed;
        let mut s = format!(
            "toolpool: {rows} requests, {} ok, {} failed",
            self.ok, self.failed
        );
        let q = |q| self.latency.quantile_ms(q);
        if let (Some(p50), Some(p99)) = (q(0.5), q(0.99)) {
            s += &format!(", p50 {} ms, p99 {} ms", stats::ms(p50), stats::ms(p99));
        }
        s += &format!(
            ", {} calls/s, {restarts} restarts, {}/{} instances used, {:.2} s",
            stats::rate(rows as f64 / elapsed.as_secs_f64().max(1e-9)),
            self.used.iter().filter(|u| **u).count(),
            self.used.len(),
            elapsed.as_secs_f64()
        );
        if interrupted {
            s += &format!("; interrupted, {} read but not run", self.skipped);
        }
        s
    }

    fn row(&mut self, seq: u64, outcome: Outcome) {
        let Outcome::Ran {
            result,
            took,
            attempts,
        } = outcome
        else {
            self.skipped += 1;
            return;
        };
        self.latency.record(took);
        let line_no = seq + 1;
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        let mut text = match &result {
            Ok(reply) => {
                self.ok += 1;
                if let Some(i) = reply.instance {
                    if let Some(u) = self.used.get_mut(i) {
                        *u = true;
                    }
                }
                if self.jsonl {
                    let mut o = format!(
                        "{{\"line\":{line_no},\"ok\":true,\"reply\":{},\"instance\":{}",
                        self.reply_value(&reply.text),
                        json!(reply.instance)
                    );
                    if reply.served_by == ServedBy::Oneshot {
                        o += ",\"served_by\":\"oneshot\"";
                    }
                    o += &format!(",\"ms\":{}", json!(ms));
                    if attempts > 1 {
                        o += &format!(",\"attempts\":{attempts}");
                    }
                    o + "}"
                } else {
                    reply.text.clone()
                }
            }
            Err(e) => {
                self.failed += 1;
                if self.jsonl {
                    let mut o = format!(
                        "{{\"line\":{line_no},\"ok\":false,\"error\":{},\"ms\":{}",
                        error_json(e),
                        json!(ms)
                    );
                    if attempts > 1 {
                        o += &format!(",\"attempts\":{attempts}");
                    }
                    o + "}"
                } else {
                    if !self.quiet && self.failed <= MAX_ERRORS_SHOWN {
                        let msg = format!("toolpool: line {line_no}: {e}");
                        self.progress.suspend(|| eprintln!("{msg}"));
                        if self.failed == MAX_ERRORS_SHOWN {
                            self.progress.suspend(|| {
                                eprintln!("toolpool: further errors are only counted (--jsonl has every one)")
                            });
                        }
                    }
                    String::new()
                }
            }
        };
        self.progress.row_done(self.failed, result.is_err());
        if self.output_closed || self.write_error.is_some() {
            return;
        }
        text.push('\n');
        let res = if self.suspend_for_output {
            let out = &mut *self.out;
            self.progress
                .suspend(|| out.write_all(text.as_bytes()).and_then(|_| out.flush()))
        } else {
            self.out.write_all(text.as_bytes())
        };
        self.note(res);
    }

    fn reply_value(&self, text: &str) -> Value {
        if self.jsonrpc {
            if let Ok(raw) = RawValue::from_string(text.to_string()) {
                if let Ok(v) = serde_json::to_value(&raw) {
                    return v;
                }
            }
        }
        Value::String(text.to_string())
    }

    fn flush(&mut self) {
        if !self.output_closed && self.write_error.is_none() {
            let res = self.out.flush();
            self.note(res);
        }
    }

    fn note(&mut self, res: std::io::Result<()>) {
        if let Err(e) = res {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                self.output_closed = true;
            } else {
                self.write_error = Some(e.to_string());
            }
        }
    }
}

/// The JSON form of an error: code and name as in the C API, and the message; a tool's
/// own error also carries its code and data.
fn error_json(e: &Error) -> String {
    let mut o = format!(
        "{{\"code\":{},\"name\":\"{}\",\"message\":{}",
        e.code(),
        error_name(e.code()),
        json!(e.to_string())
    );
    if let Error::Tool { code, data, .. } = e {
        o += &format!(",\"tool_code\":{code}");
        if let Some(d) = data {
            let v: Value = serde_json::from_str(d).unwrap_or_else(|_| json!(d));
            o += &format!(",\"data\":{v}");
        }
    }
    o + "}"
}

/// The C status name of an error code, lower case without the prefix.
fn error_name(code: i32) -> &'static str {
    match code {
        1 => "invalid_argument",
        2 => "not_found",
        3 => "spawn_failed",
        4 => "timeout",
        5 => "dead",
        6 => "saturated",
        7 => "shut_down",
        8 => "limit_reached",
        9 => "protocol_error",
        10 => "tool_error",
        11 => "config",
        12 => "index_out_of_range",
        13 => "queue_full",
        14 => "failed",
        15 => "unavailable",
        16 => "io",
        _ => "error",
    }
}

fn work(
    pool: &Pool,
    jobs: &Receiver<Job>,
    done: &Sender<Done>,
    shared: &Shared,
    timeout: Duration,
    retries: u32,
) {
    while let Ok(job) = jobs.recv() {
        let outcome = if shared.stop.load(Relaxed) {
            Outcome::Skipped
        } else {
            let t0 = Instant::now();
            let mut attempts = 0;
            let result = loop {
                attempts += 1;
                let r = request(pool, &job.line, timeout);
                match r {
                    Err(Error::InstanceDead(_)) if attempts <= retries => continue,
                    r => break r,
                }
            };
            Outcome::Ran {
                result,
                took: t0.elapsed(),
                attempts,
            }
        };
        if done
            .send(Done {
                seq: job.seq,
                outcome,
            })
            .is_err()
        {
            return;
        }
    }
}

fn request(
    pool: &Pool,
    line: &Result<Vec<u8>, usize>,
    timeout: Duration,
) -> Result<toolpool::Reply, Error> {
    let line = line.as_ref().map_err(|len| {
        Error::InvalidArgument(format!(
            "the input line is {len} bytes, longer than {MAX_INPUT_LINE}"
        ))
    })?;
    let text = std::str::from_utf8(line)
        .map_err(|e| Error::InvalidArgument(format!("the input line is not valid UTF-8 ({e})")))?;
    pool.request(text, timeout)
}

/// The input: a file or stdin, read in pieces with a poll first so that a stop request is
/// seen within 100 ms even when nothing arrives.
struct Input {
    file: Option<std::fs::File>,
    path: Option<PathBuf>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Input {
    fn open(path: Option<&std::path::Path>) -> Result<Input, Fatal> {
        let file = match path {
            Some(p) => Some(
                std::fs::File::open(p)
                    .map_err(|e| Fatal::config(format!("cannot open {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(Input {
            file,
            path: path.map(|p| p.to_path_buf()),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            eof: false,
        })
    }

    fn fd(&self) -> RawFd {
        self.file.as_ref().map_or(0, |f| f.as_raw_fd())
    }

    /// A path to count the lines of when the input is a regular file.
    fn regular_file_path(&self) -> Option<PathBuf> {
        // SAFETY: fstat fills a stat for a valid fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.fd(), &mut st) } != 0 {
            return None;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        Some(
            self.path
                .clone()
                .unwrap_or_else(|| "/proc/self/fd/0".into()),
        )
    }

    /// The next line (without its newline and a trailing CR): the line, or its length
    /// when longer than [`MAX_INPUT_LINE`] (read through, not kept); None at the end of the
    /// input or when `stop` is set.
    fn next_line(&mut self, stop: &AtomicBool) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
        let mut line = Vec::new();
        let mut len = 0usize;
        let mut take = |line: &mut Vec<u8>, piece: &[u8]| {
            len += piece.len();
            if len <= MAX_INPUT_LINE {
                line.extend_from_slice(piece);
            } else {
                *line = Vec::new();
            }
            len
        };
        loop {
            if let Some(k) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let len = take(&mut line, &self.buf[self.start..self.start + k]);
                self.start += k + 1;
                if len > MAX_INPUT_LINE {
                    return Ok(Some(Err(len)));
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(Ok(line)));
            }
            let len = take(&mut line, &self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
            if self.eof {
                // A last line without a newline still counts.
                return Ok(match len {
                    0 => None,
                    n if n > MAX_INPUT_LINE => Some(Err(n)),
                    _ => Some(Ok(line)),
                });
            }
            // Wait until readable, looking at `stop` every 100 ms.
            loop {
                if stop.load(Relaxed) {
                    return Ok(None);
                }
                let mut pfd = libc::pollfd {
                    fd: self.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 100) };
                if n > 0 {
                    break;
                }
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            // SAFETY: read into our buffer, within its length.
            let n = unsafe { libc::read(self.fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted
                    || e.kind() == std::io::ErrorKind::WouldBlock
                {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                self.eof = true;
            }
            self.end = n as usize;
        }
    }
}

fn read_input(mut input: Input, credits: Receiver<()>, jobs: Sender<Job>, shared: &Shared) {
    let mut seq = 0u64;
    loop {
        // A credit first: with none, stop reading and let the pipe push back.
        loop {
            if shared.stop.load(Relaxed) {
                return;
            }
            if credits.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
        }
        let line = match input.next_line(&shared.stop) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                *shared.read_error.lock() = Some(e.to_string());
                break;
            }
        };
        if jobs.send(Job { seq, line }).is_err() {
            return;
        }
        seq += 1;
        shared.read.store(seq, Relaxed);
    }
    if !shared.stop.load(Relaxed) {
        shared.eof.store(true, Relaxed);
    }
}

/// Count the lines of a regular file on a thread of its own, then report the total.
fn count_lines_later(path: PathBuf, set: Box<dyn FnOnce(u64) + Send>) {
    let _ = std::thread::Builder::new()
        .name("toolpool-count".into())
        .spawn(move || {
            use std::io::Read;
            let Ok(mut f) = std::fs::File::open(&path) else {
                return;
            };
            let mut buf = vec![0u8; 256 * 1024];
            let (mut n, mut last) = (0u64, b'\n');
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
                        last = buf[k - 1];
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            if last != b'\n' {
                n += 1;
            }
            set(n);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
        let path = std::env::temp_dir().join(format!(
            "toolpool-run-input-{}-{}",
            std::process::id(),
            data.len()
        ));
        std::fs::write(&path, data).unwrap();
        let mut input = Input::open(Some(&path)).unwrap();
        let stop = AtomicBool::new(false);
        let mut out = Vec::new();
        while let Some(l) = input.next_line(&stop).unwrap() {
            out.push(l);
        }
        std::fs::remove_file(&path).unwrap();
        out
    }

    #[test]
    fn input_lines() {
        let ok = |s: &str| Ok(s.as_bytes().to_vec());
        assert_eq!(
            lines_of(b"a\r\n\nb\nlast"),
            vec![ok("a"), ok(""), ok("b"), ok("last")]
        );
        assert_eq!(lines_of(b"x\n"), vec![ok("x")]);
        assert!(lines_of(b"").is_empty());
        // Lines across the 64 KiB read buffer stay whole.
        let long = "y".repeat(200_000);
        assert_eq!(
            lines_of(format!("{long}\nz\n").as_bytes()),
            vec![ok(&long), ok("z")]
        );
    }
}
