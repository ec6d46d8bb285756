//! One request on one incarnation, framed by the spec's protocol: write the payload to
//! stdin, then read the reply from stdout.
//!
//! - `lines`: one line out, one line back.
//! - `marker`: one line out; back, every line up to the marker line, joined by `\n`.
//! - `jsonrpc`: the payload wrapped with an id ([`crate::rpc`]); the reply is the one the
//!   [`Dispatcher`](crate::rpc::Dispatcher) routes to that id, so many may be in flight.
//!
//! Nothing here decides what happens to an incarnation after a failed exchange: the caller
//! asks [`leaves_late_reply`] and recycles it (see `supervisor::exchange`).

use crate::error::{Error, Result};
use crate::incarnation::Incarnation;
use crate::reader::WaitEnd;
use crate::rpc::{self, Dispatcher};
use crate::spec::Protocol;
use crate::util::lossy;
use std::time::{Duration, Instant};

/// Largest reply assembled in `marker` framing; past it the request fails and the
/// instance is recycled.
pub const MAX_MARKER_REPLY_BYTES: usize = 64 << 20;

/// How long a failed exchange waits for the exit status for its error.
const DEATH_WAIT: Duration = Duration::from_millis(200);

/// One framed exchange on `inc`, which the caller holds, until `deadline` (`timeout` is
/// what a timeout error reports).
pub(crate) fn exchange(
    inc: &Incarnation,
    protocol: &Protocol,
    tool: &str,
    payload: &str,
    deadline: Instant,
    timeout: Duration,
) -> Result<String> {
    let what = || format!("reply from instance {} of '{tool}'", inc.index());
    match (protocol, inc.rpc()) {
        (Protocol::Jsonrpc | Protocol::Lsp, Some(d)) => jsonrpc(inc, d, payload, deadline, || {
            Error::timeout(what(), timeout)
        }),
        (proto, _) => {
            // Output nobody asked for must not be taken for this reply.
            inc.drop_unsolicited();
            inc.send(payload.as_bytes())?;
            let read = || match inc.read_line(deadline.saturating_duration_since(Instant::now())) {
                Err(Error::Timeout { .. }) => Err(Error::timeout(what(), timeout)),
                other => other,
            };
            match proto {
                Protocol::Marker(marker) => until_marker(read, marker, &what),
                _ => read().map(lossy),
            }
        }
    }
}

/// True when a failed exchange may have left its reply in the stream, so the next caller
/// would read it: the incarnation must be replaced (`lines` and `marker` framing; in
/// `jsonrpc` a late reply is matched by id and dropped).
pub(crate) fn leaves_late_reply(protocol: &Protocol, result: &Result<String>) -> bool {
    !protocol.is_rpc() && matches!(result, Err(Error::Timeout { .. } | Error::Protocol(_)))
}

fn jsonrpc(
    inc: &Incarnation,
    d: &Dispatcher,
    payload: &str,
    deadline: Instant,
    timed_out: impl Fn() -> Error,
) -> Result<String> {
    let Some((id, rx)) = d.register() else {
        return Err(inc.death(DEATH_WAIT));
    };
    let sent = rpc::encode_request(id, payload).and_then(|line| inc.send_message(&line));
    if let Err(e) = sent {
        d.forget(id);
        return Err(e);
    }
    let reply = inc.wait_stdout(deadline, |_| match rx.try_recv() {
        Ok(outcome) => Some(Some(outcome)),
        Err(crossbeam_channel::TryRecvError::Disconnected) => Some(None),
        Err(crossbeam_channel::TryRecvError::Empty) => None,
    });
    match reply {
        Ok(Some(Ok(result))) => Ok(result),
        Ok(Some(Err(e))) => Err(e.into()),
        Err(WaitEnd::Timeout) => {
            d.forget(id);
            Err(timed_out())
        }
        Ok(None) | Err(WaitEnd::Eof) => Err(inc.death(DEATH_WAIT)),
    }
}

fn until_marker(
    read: impl Fn() -> Result<Vec<u8>>,
    marker: &str,
    what: &dyn Fn() -> String,
) -> Result<String> {
    let mut out: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let line = read()?;
        if line == marker.as_bytes() {
            return Ok(lossy(out));
        }
        if !first {
            out.push(b'\n');
        }
        first = false;
        out.extend_from_slice(&line);
        if out.len() > MAX_MARKER_REPLY_BYTES {
            return Err(Error::Protocol(format!(
                "{} exceeds {MAX_MARKER_REPLY_BYTES} bytes without the marker '{marker}'",
                what()
            )));
        }
    }
}
