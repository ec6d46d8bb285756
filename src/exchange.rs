//! One request on one incarnation, framed by the spec's protocol: write the payload to
//! stdin, then read the reply from stdout.
//!
//! - `lines`: one line out, one line back.
//! - `marker`: one line out; back, every line up to the marker line, joined by `\n`.
//! - `jsonrpc`: the payload wrapped with an id ([`crate::rpc`]); the reply is the one the
//!   [`Dispatcher`] routes to that id, so many may be in flight.
//!
//! Nothing here decides what happens to an incarnation after a failed exchange: the caller
//! asks [`leaves_late_reply`] and recycles it (see `supervisor::exchange`).
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
use crate::reader::WaitEnd;
use crate::rpc::{self, Dispatcher};
use crate::spec::Protocol;
use crate::util::lossy;
use std::time::Duration;

/// Largest reply assembled in `marker` framing; past it the request fails and the
/// instance is recycled.
pub const MAX_MARKER_REPLY_BYTES: usize = 64 << 20;

/// How long a failed exchange waits for the exit status for its error.
const DEATH_WAIT: Duration = Duration::from_millis(200);

/// One framed exchange on `inc`, which the caller holds, until `until`. `cancel_method` is
/// the spec's `cancel_notification` (`jsonrpc` only).
pub(crate) fn exchange(
    inc: &Incarnation,
    protocol: &Protocol,
    tool: &str,
    payload: &str,
    until: Until<'_>,
    cancel_method: Option<&str>,
) -> Result<String> {
    let what = || format!("reply from instance {} of '{tool}'", inc.index());
    match (protocol, inc.rpc()) {
        (Protocol::Jsonrpc | Protocol::Lsp, Some(d)) => {
            jsonrpc(inc, d, payload, until, cancel_method, &what)
        }
        (proto, _) => {
            // Output nobody asked for must not be taken for this reply.
            inc.drop_unsolicited();
            inc.send(payload.as_bytes())?;
            let read = || match inc.read_piece(until.deadline, until.timeout, until.cancel) {
                Err(Error::Timeout { .. }) => Err(Error::timeout(what(), until.timeout)),
                Err(Error::Cancelled(_)) => Err(Error::Cancelled(what())),
                other => other,
            };
            match proto {
                Protocol::Marker(marker) => until_marker(read, marker, &what),
                _ => match read()? {
                    (line, false) => Ok(lossy(line)),
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

/// True when a failed exchange may have left its reply in the stream, so the next caller
/// would read it: the incarnation must be replaced (`lines` and `marker` framing; in
/// `jsonrpc` a late reply is matched by id and dropped).
pub(crate) fn leaves_late_reply(protocol: &Protocol, result: &Result<String>) -> bool {
    !protocol.is_rpc()
        && matches!(
            result,
            Err(Error::Timeout { .. } | Error::Protocol(_) | Error::Cancelled(_))
        )
}

fn jsonrpc(
    inc: &Incarnation,
    d: &Dispatcher,
    payload: &str,
    until: Until<'_>,
    cancel_method: Option<&str>,
    what: &dyn Fn() -> String,
) -> Result<String> {
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
        Ok(Some(Ok(result))) => Ok(result),
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
) -> Result<String> {
    let mut out: Vec<u8> = Vec::new();
    let mut first = true;
    // The last piece read was cut: the next one goes on the same line.
    let mut cut = false;
    loop {
        let (line, continues) = read()?;
        if !cut && !continues && line == marker.as_bytes() {
            return Ok(lossy(out));
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
