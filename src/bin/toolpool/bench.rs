//! `toolpool bench`: the same sample through a warm pool and through one process per
//! call, with the speed-up.

use crate::stats::{self, Histogram};
use crate::tool::{parse_duration, ToolArgs};
use crate::{signals, Fatal, EXIT_FAILED, EXIT_OK};
use clap::Args;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};
use toolpool::{Oneshot, OneshotInput, Pool, PoolOptions, Protocol, ToolSpec};

/// Most sample lines kept.
const MAX_SAMPLE: usize = 100_000;

/// Measure the speed-up of a warm pool over starting the tool once per call.
///
/// Runs the sample (one request per line) through a warm pool of -n instances, then the
/// first --spawn-calls lines through one process per call (the spec's "oneshot" command
/// if it has one, else the same command with the request on stdin, then EOF; for an `lsp`
/// tool or one with a `startup.handshake`, a one-instance pool per call: start, handshake,
/// call, stop), both with
/// -n calls at once, and prints p50, p99 and calls/s of each and the speed-up, e.g.
/// `pooled 0.21 ms, spawn per call 9.4 ms: 45x`. The pool's start-up is timed on its own
/// (it is paid once).
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 every call succeeded; 1 some calls failed (the first error is shown); 2 usage
or configuration error; 130 interrupted (every tool process is killed).

Examples:
  seq 200 | sed 's/$/*3/' | toolpool bench -n 2 -- bc -q
  toolpool bench --input calls.jsonl --protocol jsonrpc --spawn-calls 10 -- python3 tool.py
  toolpool bench --registry tools.json --tool bc --input exprs.txt
  toolpool bench --spec examples/specs/mcp-time.json --input examples/specs/mcp-time-calls.jsonl")]
pub struct BenchArgs {
    #[command(flatten)]
    pub tool: ToolArgs,

    /// The sample: one request per line [default: stdin].
    #[arg(short, long, value_name = "SAMPLE")]
    pub input: Option<PathBuf>,

    /// Pooled calls to make, going round the sample as often as needed [default: the
    /// sample's length, at least 100 and at most 1000].
    #[arg(long, value_name = "N")]
    pub calls: Option<usize>,

    /// Calls made with one process each (the slow side is sampled, not run in full).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub spawn_calls: usize,

    /// Time limit of one call.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one side measured.
struct Side {
    calls: usize,
    errors: usize,
    first_error: Option<String>,
    latency: Histogram,
    elapsed: Duration,
}

impl Side {
    fn p(&self, q: f64) -> f64 {
        self.latency.quantile_ms(q).unwrap_or(0.0)
    }
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn line(&self, name: &str) -> String {
        format!(
            "{name:<15} {:>7} calls   p50 {:>8} ms   p99 {:>8} ms   {:>9} calls/s{}",
            self.calls,
            stats::ms(self.p(0.5)),
            stats::ms(self.p(0.99)),
            stats::rate(self.rate()),
            if self.errors > 0 {
                format!("   {} failed", self.errors)
            } else {
                String::new()
            }
        )
    }
}

pub fn main(args: BenchArgs) -> Result<i32, Fatal> {
    let spec = args.tool.spec()?;
    signals::exit_on_signal(signals::install());
    let sample = read_sample(args.input.as_deref())?;
    let calls = args.calls.unwrap_or(sample.len().clamp(100, 1000)).max(1);
    let width = spec.count * spec.max_in_flight;

    // The slow side's spec: one process per call, never a pool.
    let mut once: ToolSpec = spec.clone();
    if once.oneshot.is_none() {
        once.oneshot = Some(Oneshot {
            command: spec.command.clone(),
            input: OneshotInput::Stdin,
        });
    }
    let jsonrpc = spec.protocol == Protocol::Jsonrpc;
    // With a handshake or Content-Length framing a bare one-shot run cannot serve a call:
    // each call then starts a one-instance pool (start, handshake, call, stop) instead.
    let per_call_pool = spec.protocol == Protocol::Lsp || !spec.startup.handshake.is_empty();

    println!(
        "sample: {} lines; {} instance(s) of '{}', {} call(s) at once",
        sample.len(),
        spec.count,
        spec.id,
        width
    );
    let t0 = Instant::now();
    let pool = Pool::from_spec(spec.clone())
        .map_err(|e| Fatal::config(format!("cannot start '{}': {e}", spec.id)))?;
    let startup = t0.elapsed();
    let pooled = measure(width, calls, |k| {
        pool.request(&sample[k % sample.len()], args.timeout)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    pool.shutdown(Duration::from_millis(spec.shutdown.grace_ms));

    let spawn_n = args.spawn_calls.max(1).min(calls);
    let spawned = if per_call_pool {
        let one = ToolSpec {
            count: 1,
            lazy: false,
            oneshot: None,
            ..spec.clone()
        };
        measure(width, spawn_n, |k| {
            let pool = Pool::from_spec(one.clone()).map_err(|e| e.to_string())?;
            let r = pool
                .request(&sample[k % sample.len()], args.timeout)
                .map(drop)
                .map_err(|e| e.to_string());
            pool.shutdown(Duration::from_millis(one.shutdown.grace_ms));
            r
        })
    } else {
        let spawn_pool = Pool::with_options(
            once,
            PoolOptions {
                disabled: true,
                ..Default::default()
            },
        )
        .map_err(|e| Fatal::config(format!("cannot run '{}' once per call: {e}", spec.id)))?;
        let side = measure(width, spawn_n, |k| {
            let line = &sample[k % sample.len()];
            // A one-shot run gets the request as the tool reads it: JSON-RPC framed if need be.
            let payload = if jsonrpc {
                rpc_frame(line)?
            } else {
                line.clone()
            };
            spawn_pool
                .request(&payload, args.timeout)
                .map(drop)
                .map_err(|e| e.to_string())
        });
        drop(spawn_pool);
        side
    };

    println!(
        "{}   (start-up of {} instance(s): {} ms, paid once)",
        pooled.line("pooled"),
        spec.count,
        stats::ms(startup.as_secs_f64() * 1000.0)
    );
    println!("{}", spawned.line("spawn per call"));
    for (name, side) in [("pooled", &pooled), ("spawn per call", &spawned)] {
        if let Some(e) = &side.first_error {
            println!(
                "{name}: {} of {} calls failed; first: {e}",
                side.errors, side.calls
            );
        }
    }
    let (a, b) = (pooled.p(0.5), spawned.p(0.5));
    if a > 0.0 && pooled.errors < pooled.calls && spawned.errors < spawned.calls {
        println!(
            "pooled {} ms, spawn per call {} ms: {}x (calls/s: {}x)",
            stats::ms(a),
            stats::ms(b),
            speedup(b / a),
            speedup(pooled.rate() / spawned.rate().max(1e-9))
        );
    }
    Ok(if pooled.errors > 0 || spawned.errors > 0 {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// `{"method": ..., "params": ...}` as the JSON-RPC 2.0 request line a tool reads.
fn rpc_frame(line: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("the sample line is not JSON: {e}"))?;
    let Some(method) = v.get("method").and_then(|m| m.as_str()) else {
        return Err("the sample line has no string \"method\"".into());
    };
    let mut req = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method});
    if let Some(p) = v.get("params") {
        req["params"] = p.clone();
    }
    Ok(req.to_string())
}

fn speedup(x: f64) -> String {
    if x < 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// Make `calls` calls of `call(k)` from `width` threads; latency of each, and the total
/// time.
fn measure(width: usize, calls: usize, call: impl Fn(usize) -> Result<(), String> + Sync) -> Side {
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    let parts: Vec<(Histogram, usize, Option<String>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..width.clamp(1, calls))
            .map(|_| {
                s.spawn(|| {
                    let (mut h, mut errors, mut first) = (Histogram::default(), 0, None);
                    loop {
                        let k = next.fetch_add(1, Relaxed);
                        if k >= calls {
                            break;
                        }
                        let t = Instant::now();
                        let r = call(k);
                        h.record(t.elapsed());
                        if let Err(e) = r {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                    }
                    (h, errors, first)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("bench thread"))
            .collect()
    });
    let elapsed = t0.elapsed();
    let mut side = Side {
        calls,
        errors: 0,
        first_error: None,
        latency: Histogram::default(),
        elapsed,
    };
    for (h, e, f) in parts {
        side.latency.merge(&h);
        side.errors += e;
        if side.first_error.is_none() {
            side.first_error = f;
        }
    }
    side
}

fn read_sample(path: Option<&std::path::Path>) -> Result<Vec<String>, Fatal> {
    let reader: Box<dyn BufRead> = match path {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(p)
                .map_err(|e| Fatal::config(format!("cannot open {}: {e}", p.display())))?,
        )),
        None => {
            if crate::progress::isatty(0) {
                return Err(Fatal::config(
                    "no sample: give --input SAMPLE or pipe the sample in (one request per line)",
                ));
            }
            Box::new(std::io::stdin().lock())
        }
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.map_err(|e| Fatal::config(format!("cannot read the sample: {e}")))?;
        let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
        out.push(line);
        if out.len() >= MAX_SAMPLE {
            break;
        }
    }
    if out.is_empty() {
        return Err(Fatal::config("the sample is empty"));
    }
    Ok(out)
}
