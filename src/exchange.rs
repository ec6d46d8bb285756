//! One request on one incarnation, framed by the spec's protocol: write the payload to
//! stdin, then read the reply from stdout.
//!
//! - `lines`: one line out, one line back.
//! - `marker`: one line out (and the spec's `end_command`, which makes the tool print the
//!   marker, in the same write); back, every line up to the marker line, joined by `\n`.
//! - `jsonrpc`: the payload wrapped with an id ([`crate::rpc`]); the reply is the one the
//!   [`Dispatcher`] routes to that id, so many may be in flight.
//!
//! - `prompt`: see [`crate::prompt`].
//!
//! Nothing here decides what happens to an incarnation after a failed exchange: the caller
//! asks [`leaves_late_reply`] and recycles it (see `hold::exchange_on`).
//!
//! A cancelled exchange ends like a timed-out one: in `lines`/`marker` framing its reply
//! may still come, so it is [`Error::Cancelled`] and the incarnation is recycled; in
//! `jsonrpc` the id is forgotten (a late reply is dropped and counted) and, with the spec's
//! `cancel_notification`, the tool is told.
//!
//! Over-long lines: the reader cuts a line longer than `limits.max_line_bytes` into
//! pieces. In `lines` framing a reply that was cut fails with [`Error::Protocol`] (the
//! incarnation is recycled, so no piece reaches the next caller); in `marker` framing the
//! pieces are joined back into the whole line (the reply stays bounded by
//! [`MAX_MARKER_REPLY_BYTES`]).

use crate::cancel::Until;
use crate::error::{Error, Result};
use crate::incarnation::Incarnation;
use crate::prompt;
use crate::reader::WaitEnd;
use crate::rpc::{self, Dispatcher};
use crate::spec::{Marker, Protocol, ToolSpec};
use std::time::Duration;

/// Largest reply assembled in `marker` framing; past it the request fails and the
/// instance is recycled.
pub const MAX_MARKER_REPLY_BYTES: usize = 64 << 20;

/// How long a failed exchange waits for the exit status for its error.
const DEATH_WAIT: Duration = Duration::from_millis(200);

/// How often a request that watches stderr (`stderr_error_ms`) looks at it while no
/// stderr line has come (once one has, it wakes when its window ends).
const STDERR_LOOK: Duration = Duration::from_millis(50);
/// Longest a reply waits for the stderr lines the tool wrote before it to be counted (see
/// `Tail::settled`); in practice microseconds.
const STDERR_SETTLE: Duration = Duration::from_millis(100);

/// One framed exchange on `inc`, which the caller holds, until `until`, as `spec` frames
/// it (`protocol`, `cancel_notification`, `stderr_error_ms`, `pty`).
pub(crate) fn exchange(
    inc: &Incarnation,
    spec: &ToolSpec,
    payload: &str,
    until: Until<'_>,
) -> Result<Vec<u8>> {
    let tool = &spec.id;
    let what = || format!("reply from instance {} of '{tool}'", inc.index());
    match (&spec.protocol, inc.rpc()) {
        (Protocol::Jsonrpc | Protocol::Lsp, Some(d)) => jsonrpc(
            inc,
            d,
            payload,
            until,
            spec.cancel_notification.as_deref(),
            &what,
        ),
        (Protocol::Prompt(p), _) => prompt::exchange(inc, spec, p, payload, until),
        (proto, _) => {
            // Output nobody asked for must not be taken for this reply.
            inc.drop_unsolicited();
            let watch = spec.stderr_error_ms.map(|ms| StderrWatch {
                mark: inc.stderr().total().0,
                window: Duration::from_millis(ms),
            });
            match proto {
                // The line that makes the tool print the marker goes in the same write.
                Protocol::Marker(Marker {
                    end_command: Some(end),
                    ..
                }) => inc.send_lines(&[payload.as_bytes(), end.as_bytes()])?,
                _ => inc.send(payload.as_bytes())?,
            }
            let read = || read_watching(inc, spec, until, watch.as_ref(), &what);
            match proto {
                Protocol::Marker(m) => {
                    let reply = until_marker(read, &m.marker, &what)?;
                    match &watch {
                        Some(w) if reply.is_empty() => w.check_empty(inc, tool).map(|()| reply),
                        _ => Ok(reply),
                    }
                }
                _ => match read()? {
                    (line, false) => Ok(line),
                    (_, true) => Err(Error::Protocol(format!(
                        "{} is longer than limits.max_line_bytes ({} bytes); \
                         the reply is dropped and the instance recycled",
                        what(),
                        inc.max_line_bytes()
                    ))),
                },
            }
        }
    }
}

/// A request that watches stderr (`stderr_error_ms`): the stderr line count when it began,
/// and the window.
struct StderrWatch {
    mark: u64,
    window: Duration,
}

impl StderrWatch {
    /// The tool error for the stderr lines written since the request began, if any.
    fn error(&self, inc: &Incarnation, tool: &str) -> Option<Error> {
        let (lines, more) = inc.stderr().since(self.mark);
        if lines.is_empty() && more == 0 {
            return None;
        }
        let mut message = lines.join("\n");
        if more > 0 {
            message.push_str(&format!("\n(and {more} earlier stderr lines)"));
        }
        let data = serde_json::json!({
            "stderr": lines,
            "tool": tool,
            "instance": inc.index(),
        });
        Some(Error::Tool {
            code: 0,
            message,
            data: Some(data.to_string()),
        })
    }

    /// An empty reply is the tool error when stderr lines came during the request (once
    /// every line the tool wrote before its reply is counted).
    fn check_empty(&self, inc: &Incarnation, tool: &str) -> Result<()> {
        let until = std::time::Instant::now() + STDERR_SETTLE;
        while !inc.stderr().settled() && std::time::Instant::now() < until {
            std::thread::yield_now();
        }
        self.error(inc, tool).map_or(Ok(()), Err)
    }
}

/// The next reply line (or piece of one) of `inc` until `until`. With a stderr `watch`,
/// stderr lines followed by its window with no reply line end the wait as a tool error.
/// A timeout on an instance that has written nothing on stdout since it started says the
/// tool may buffer its output on a pipe.
fn read_watching(
    inc: &Incarnation,
    spec: &ToolSpec,
    until: Until<'_>,
    watch: Option<&StderrWatch>,
    what: &dyn Fn() -> String,
) -> Result<(Vec<u8>, bool)> {
    loop {
        let step = match watch {
            None => until.deadline,
            Some(w) => {
                let now = std::time::Instant::now();
                let (total, last) = inc.stderr().total();
                let next = match last {
                    Some(at) if total > w.mark => {
                        if now >= at + w.window {
                            if let Some(e) = w.error(inc, &spec.id) {
                                return Err(e);
                            }
                        }
                        at + w.window
                    }
                    _ => now + STDERR_LOOK.min(w.window),
                };
                next.min(until.deadline)
            }
        };
        match inc.read_piece(step, until.timeout, until.cancel) {
            Err(Error::Timeout { .. }) if step < until.deadline => continue,
            Err(Error::Timeout { .. }) => {
                let mut what = what();
                if !spec.pty && !inc.wrote_stdout() {
                    what.push_str(
                        "; it has written nothing on stdout since it started: it may buffer its \
                         output on a pipe (set \"pty\": true, or --pty on the command line)",
                    );
                }
                return Err(Error::timeout(what, until.timeout));
            }
            Err(Error::Cancelled(_)) => return Err(Error::Cancelled(what())),
            other => return other,
        }
    }
}

/// True when a failed exchange may have left its reply in the stream, so the next caller
/// would read it: the incarnation must be replaced (`lines` and `marker` framing, and
/// `prompt` unless an interrupt brought the tool back to its prompt; in `jsonrpc` a late
/// reply is matched by id and dropped).
pub(crate) fn leaves_late_reply<T>(
    inc: &Incarnation,
    protocol: &Protocol,
    result: &Result<T>,
) -> bool {
    let failed = matches!(
        result,
        Err(Error::Timeout { .. } | Error::Protocol(_) | Error::Cancelled(_))
    );
    match protocol {
        Protocol::Jsonrpc | Protocol::Lsp => false,
        Protocol::Prompt(_) => failed && !prompt::in_step(inc),
        Protocol::Lines | Protocol::Marker(_) => failed,
    }
}

fn jsonrpc(
    inc: &Incarnation,
    d: &Dispatcher,
    payload: &str,
    until: Until<'_>,
    cancel_method: Option<&str>,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let Some((id, rx)) = d.register() else {
        return Err(inc.death(DEATH_WAIT));
    };
    let sent = rpc::encode_request(id, payload).and_then(|line| inc.send_message(&line));
    if let Err(e) = sent {
        d.forget(id);
        return Err(e);
    }
    let reply = inc.wait_stdout(until.deadline, until.cancel, |_| match rx.try_recv() {
        Ok(outcome) => Some(Some(outcome)),
        Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
        Err(crossbeam_channel::TryRecvError::Empty) => None,
    });
    match reply {
        Ok(Some(Ok(result))) => Ok(result.into_bytes()),
        Ok(Some(Err(e))) => Err(e.into()),
        Err(end @ (WaitEnd::Timeout | WaitEnd::Cancelled)) => {
            d.forget(id);
            let (err, reason) = match end {
                WaitEnd::Cancelled => (Error::Cancelled(what()), "cancelled by the caller"),
                _ => (Error::timeout(what(), until.timeout), "timed out"),
            };
            if let Some(method) = cancel_method {
                // Best effort: the tool may stop early; its late reply is dropped anyway.
                let _ = inc.send_message(&rpc::encode_cancel(method, id, reason));
            }
            Err(err)
        }
        Ok(None) | Err(WaitEnd::Eof) => Err(inc.death(DEATH_WAIT)),
    }
}

fn until_marker(
    read: impl Fn() -> Result<(Vec<u8>, bool)>,
    marker: &str,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut first = true;
    // The last piece read was cut: the next one goes on the same line.
    let mut cut = false;
    loop {
        let (line, continues) = read()?;
        if !cut && !continues && line == marker.as_bytes() {
            return Ok(out);
        }
        if !first && !cut {
            out.push(b'\n');
        }
        first = false;
        cut = continues;
        out.extend_from_slice(&line);
        if out.len() > MAX_MARKER_REPLY_BYTES {
            return Err(Error::Protocol(format!(
                "{} exceeds {MAX_MARKER_REPLY_BYTES} bytes without the marker '{marker}'",
                what()
            )));
        }
    }
}
