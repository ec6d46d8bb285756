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
//! not yet started are dropped, requests in flight finish (the progress line, or one
//! stderr line without it, says how many and that a second Ctrl-C stops them), their rows
//! are written, the summary is printed, the pool is shut down and the exit status is 130.
//! A second Ctrl-C shuts the pool down at once, which fails what is still in flight.

use crate::input::{count_lines_later, Input, MAX_INPUT_LINE};
use crate::progress::{Progress, When};
use crate::rows::{Format, Outcome, Writer};
use crate::tool::{self, parse_duration, ToolArgs};
use crate::{signals, Fatal, EXIT_FAILED, EXIT_OK};
use clap::Args;
use crossbeam_channel::{bounded, select, Receiver, Sender};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolpool::{Error, Pool};

/// Exit status when the output was closed (128 + SIGPIPE).
const EXIT_OUTPUT_CLOSED: i32 = 141;
/// Most requests run at once (one thread each), whatever -n × --in-flight says.
const MAX_WORKERS: usize = 1024;

/// Run every input line through a pool of warm instances of a tool.
///
/// Each input line (stdin, or --input) is one request; each reply is one output line
/// (stdout, or --output), in input order unless --unordered. Input is read as it comes
/// (an endless pipe works) and at most --max-pending lines are held at once. A failed row
/// is an empty output line plus a message on stderr, or an error object with --jsonl.
/// Ctrl-C stops reading, lets the requests in flight finish (it says how many), writes
/// their rows, prints the summary, stops every tool process and exits 130; a second
/// Ctrl-C stops the tools at once, failing the requests still in flight.
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
    /// t}. With jsonrpc the reply is the result as JSON; otherwise a string, in which bytes
    /// that are not UTF-8 become U+FFFD (without --jsonl a reply's bytes are written as the
    /// tool wrote them).
    #[arg(long)]
    pub jsonl: bool,

    /// Time limit of one request, waiting for a free instance included (e.g. 500ms, 30s,
    /// 2m).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Run a request again, up to N more times, when its instance died under it (the
    /// spec's "retry", with "on": ["dead"]) [default: the spec's "retry", else none].
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

struct Done {
    seq: u64,
    outcome: Outcome,
}

/// Shared between threads: why to stop, and how far the reader got.
#[derive(Default)]
struct Shared {
    /// Stop reading input and starting jobs (Ctrl-C, or the output closed).
    stop: AtomicBool,
    /// A first Ctrl-C (or SIGTERM) came.
    interrupted: AtomicBool,
    /// Requests running now.
    running: AtomicU64,
    /// Lines read so far.
    read: AtomicU64,
    /// The input has ended (then `read` is the total).
    eof: AtomicBool,
    /// A read error, if the input failed.
    read_error: parking_lot::Mutex<Option<String>>,
}

pub fn main(args: RunArgs) -> Result<i32, Fatal> {
    let source = args.tool.source()?;
    let spec = match &source {
        tool::Source::Local(spec) => (**spec).clone(),
        tool::Source::Service(pool) => (*pool.spec()).clone(),
    };
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
    let jsonrpc = spec.protocol.is_rpc();
    let id = spec.id.clone();
    let shared = Arc::new(Shared::default());
    let interrupts = Interrupts::watch(signals, Arc::clone(&shared));
    let started = match source {
        tool::Source::Local(spec) => Pool::from_spec(*spec),
        tool::Source::Service(pool) => Ok(pool),
    };
    let pool = match started {
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

    let format = Format {
        jsonl: args.jsonl,
        jsonrpc,
        quiet: args.quiet,
        suspend_for_output: output_is_tty && progress.drawn(),
    };
    let mut w = Writer::new(&mut out, format, &progress, pool.len());
    write_rows(&mut w, &done_rx, &credit_tx, &shared, args.unordered);
    w.flush();
    let _ = reader.join();
    for h in workers {
        let _ = h.join();
    }
    let elapsed = started.elapsed();
    progress.finish();
    let metrics = pool.metrics();
    let stray = stray_lines(&pool);
    pool.shutdown(Duration::from_millis(pool.spec().shutdown.grace_ms));
    interrupts.wait_forced_shutdown();

    let sig = interrupts.signal();
    let read_error = shared.read_error.lock().take();
    if !args.quiet {
        eprintln!("{}", w.summary(elapsed, metrics.restarts, stray, sig != 0));
        if stray > 0 && sig == 0 {
            eprintln!(
                "toolpool: warning: {stray} output lines came outside any request (a reply of \
                 several lines, or a late one); with --protocol marker:END and --end-command \
                 (a line that makes the tool print END) each reply ends at the marker"
            );
        }
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

/// Output lines that came outside any request: those dropped before a request (counted
/// by the pool) and those still waiting now, when every request is done.
fn stray_lines(pool: &Pool) -> u64 {
    let dropped: u64 = pool.status().instances.iter().map(|i| i.unsolicited).sum();
    let mut waiting = 0;
    for i in 0..pool.len() {
        while pool.read_line_bytes(i, Duration::ZERO).is_ok() {
            waiting += 1;
        }
    }
    dropped + waiting
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
    let mut told_interrupt = false;
    loop {
        let d = select! {
            recv(done_rx) -> d => match d { Ok(d) => Some(d), Err(_) => break },
            recv(tick) -> _ => None,
        };
        if shared.interrupted.load(Relaxed) {
            let running = shared.running.load(Relaxed);
            let text = format!(
                "interrupted: waiting for {running} request{} in flight (Ctrl-C again stops them)",
                if running == 1 { "" } else { "s" }
            );
            if w.progress.drawn() {
                w.progress.status(&text);
            } else if !told_interrupt && !w.quiet() && running > 0 {
                eprintln!("toolpool: {text}");
            }
            told_interrupt = true;
        }
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
                        shared.interrupted.store(true, Relaxed);
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
            shared.running.fetch_add(1, Relaxed);
            let result = request(pool, &job.line, timeout, retries);
            shared.running.fetch_sub(1, Relaxed);
            Outcome::Ran {
                result,
                took: t0.elapsed(),
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
    retries: u32,
) -> Result<toolpool::Reply<Vec<u8>>, Error> {
    let line = line.as_ref().map_err(|len| {
        Error::InvalidArgument(format!(
            "the input line is {len} bytes, longer than {MAX_INPUT_LINE}"
        ))
    })?;
    let text = std::str::from_utf8(line)
        .map_err(|e| Error::InvalidArgument(format!("the input line is not valid UTF-8 ({e})")))?;
    // --retries: the library's retry on a death (the spec's `retry` otherwise).
    let options = toolpool::RequestOptions {
        key: None,
        retry: (retries > 0).then(|| toolpool::Retry::new(retries, [toolpool::Cause::Dead])),
    };
    pool.request_bytes(text, &options, timeout)
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
