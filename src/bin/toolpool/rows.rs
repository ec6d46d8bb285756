//! Writing the rows of `toolpool run` (plain or JSONL) and counting them for the summary.

use crate::progress::Progress;
use crate::stats::{self, Histogram};
use serde_json::{json, value::RawValue, Value};
use std::io::Write;
use std::time::Duration;
use toolpool::{Error, ServedBy};

/// What became of a job.
pub enum Outcome {
    /// It ran: its result and the time taken (every run of it).
    Ran {
        /// The reply's exact bytes: plain output passes them through.
        result: Result<toolpool::Reply<Vec<u8>>, Error>,
        took: Duration,
    },
    /// Interrupted before it started.
    Skipped,
}

/// Error lines printed on stderr (without --jsonl) before the rest are only counted.
const MAX_ERRORS_SHOWN: u64 = 10;

/// How rows are written.
pub struct Format {
    /// One JSON object per row.
    pub jsonl: bool,
    /// Replies are JSON-RPC results (JSON text), not strings.
    pub jsonrpc: bool,
    /// No per-row error messages on stderr.
    pub quiet: bool,
    /// Clear the progress bar around each write (output and bar share a terminal).
    pub suspend_for_output: bool,
}

/// Writes rows and keeps the counts.
pub struct Writer<'a> {
    out: &'a mut Box<dyn Write>,
    format: Format,
    /// The progress display, advanced per row.
    pub progress: &'a Progress,
    latency: Histogram,
    /// Rows with a reply.
    pub ok: u64,
    /// Rows with an error.
    pub failed: u64,
    /// Rows read but not run (interrupted).
    pub skipped: u64,
    /// Which instances answered.
    used: Vec<bool>,
    /// The output was closed (EPIPE): nothing more is written.
    pub output_closed: bool,
    /// Writing failed otherwise: nothing more is written.
    pub write_error: Option<String>,
}

impl<'a> Writer<'a> {
    /// A writer to `out` for a pool of `instances`.
    pub fn new(
        out: &'a mut Box<dyn Write>,
        format: Format,
        progress: &'a Progress,
        instances: usize,
    ) -> Writer<'a> {
        Writer {
            out,
            format,
            progress,
            latency: Histogram::default(),
            ok: 0,
            failed: 0,
            skipped: 0,
            used: vec![false; instances],
            output_closed: false,
            write_error: None,
        }
    }

    /// The summary line: requests, ok, failed, p50/p99, calls/s, restarts, instances used.
    /// The summary line; `stray` counts output lines that came outside any request.
    pub fn summary(
        &self,
        elapsed: Duration,
        restarts: u64,
        stray: u64,
        interrupted: bool,
    ) -> String {
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
        if stray > 0 {
            s += &format!(", {stray} output lines outside any request");
        }
        if interrupted {
            s += &format!("; interrupted, {} read but not run", self.skipped);
        }
        s
    }

    /// True with `-q`: no summary, no messages on stderr.
    pub fn quiet(&self) -> bool {
        self.format.quiet
    }

    pub fn row(&mut self, seq: u64, outcome: Outcome) {
        let Outcome::Ran { result, took } = outcome else {
            self.skipped += 1;
            return;
        };
        self.latency.record(took);
        let line_no = seq + 1;
        let ms = (took.as_secs_f64() * 1e6).round() / 1e3;
        let mut text: Vec<u8> = match &result {
            Ok(reply) => {
                self.ok += 1;
                if let Some(i) = reply.instance {
                    if let Some(u) = self.used.get_mut(i) {
                        *u = true;
                    }
                }
                if self.format.jsonl {
                    let mut o = format!(
                        "{{\"line\":{line_no},\"ok\":true,\"reply\":{},\"instance\":{}",
                        self.reply_value(&String::from_utf8_lossy(&reply.text)),
                        json!(reply.instance)
                    );
                    match reply.served_by {
                        ServedBy::Oneshot => o += ",\"served_by\":\"oneshot\"",
                        ServedBy::Retry => o += ",\"served_by\":\"retry\"",
                        ServedBy::Pool => {}
                    }
                    o += &format!(",\"ms\":{}", json!(ms));
                    (o + "}").into_bytes()
                } else {
                    reply.text.clone()
                }
            }
            Err(e) => {
                self.failed += 1;
                if self.format.jsonl {
                    format!(
                        "{{\"line\":{line_no},\"ok\":false,\"error\":{},\"ms\":{}}}",
                        error_json(e),
                        json!(ms)
                    )
                    .into_bytes()
                } else {
                    if !self.format.quiet && self.failed <= MAX_ERRORS_SHOWN {
                        let msg = format!("toolpool: line {line_no}: {e}");
                        self.progress.suspend(|| eprintln!("{msg}"));
                        if self.failed == MAX_ERRORS_SHOWN {
                            self.progress.suspend(|| {
                                eprintln!("toolpool: further errors are only counted (--jsonl has every one)")
                            });
                        }
                    }
                    Vec::new()
                }
            }
        };
        self.progress.row_done(self.failed, result.is_err());
        if self.output_closed || self.write_error.is_some() {
            return;
        }
        text.push(b'\n');
        let res = if self.format.suspend_for_output {
            let out = &mut *self.out;
            self.progress
                .suspend(|| out.write_all(&text).and_then(|_| out.flush()))
        } else {
            self.out.write_all(&text)
        };
        self.note(res);
    }

    fn reply_value(&self, text: &str) -> Value {
        if self.format.jsonrpc {
            if let Ok(raw) = RawValue::from_string(text.to_string()) {
                if let Ok(v) = serde_json::to_value(&raw) {
                    return v;
                }
            }
        }
        Value::String(text.to_string())
    }

    pub fn flush(&mut self) {
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
