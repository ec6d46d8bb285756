//! What a dry-run responder answers: the script of one dry incarnation (the spec's
//! [`DryRun`] replies, their delays and failures, per framing) and the loop that reads
//! request lines and writes the replies as they fall due.

use super::{Responder, MAX_DRY_OUT_BYTES, MAX_DRY_PENDING, MAX_DRY_REQUEST_BYTES};
use crate::error::ExitInfo;
use crate::linebuf::LineBuf;
use crate::spec::{DryDefault, DryRun, Marker, Protocol};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// What a reply does once due.
enum Action {
    /// Write these bytes on stdout.
    Write(Vec<u8>),
    /// Write the message on stderr and end with this exit status.
    Fail(i32, String),
}

/// What the responder answers, and for whom (the log record).
pub(super) struct Script {
    pub(super) tool: String,
    pub(super) index: usize,
    pub(super) argv: Vec<String>,
    pub(super) protocol: Protocol,
    pub(super) dry: DryRun,
    pub(super) ready_line: Option<String>,
}

impl Script {
    pub(super) fn run(
        &self,
        r: &Responder,
        stdin: File,
        stdout: File,
        mut stderr: File,
    ) -> ExitInfo {
        let mut lines = LineBuf::default();
        let split = AtomicU64::new(0);
        let mut out: Vec<u8> = Vec::new();
        let mut pending: BTreeMap<(Instant, u64), Action> = BTreeMap::new();
        let mut seq = 0u64;
        let mut last_due = Instant::now();
        let mut stdin_open = true;
        if let Some(ready) = &self.ready_line {
            out.extend_from_slice(ready.as_bytes());
            out.push(b'\n');
        }
        loop {
            if let Some(sig) = r.state.lock().signal {
                return ExitInfo::Signal(sig);
            }
            if let Some(exit) = release_due(&mut pending, &mut out, &mut stderr) {
                return exit;
            }
            if !out.is_empty() {
                match (&stdout).write(&out) {
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    // Nobody reads stdout any more: a tool would die of SIGPIPE.
                    Err(_) => return ExitInfo::Signal(libc::SIGPIPE),
                }
            }
            if !stdin_open && pending.is_empty() && out.is_empty() {
                return ExitInfo::Code(0);
            }
            let read =
                stdin_open && out.len() < MAX_DRY_OUT_BYTES && pending.len() < MAX_DRY_PENDING;
            let mut fds = vec![libc::pollfd {
                fd: r.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            if read {
                fds.push(libc::pollfd {
                    fd: stdin.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            if !out.is_empty() {
                fds.push(libc::pollfd {
                    fd: stdout.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                });
            }
            let timeout = poll_timeout(&pending, out.is_empty());
            // SAFETY: poll on valid pollfds of fds we hold for the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n <= 0 || !read || fds[1].revents == 0 {
                continue; // a signal is seen at the top of the loop
            }
            match lines.fill_from(&stdin) {
                Ok(0) => {
                    stdin_open = false;
                    if let Some(rest) = lines.rest() {
                        self.answer(&rest, &mut pending, &mut seq, &mut last_due);
                    }
                }
                Ok(_) => {
                    while let Some(line) = lines.next_line(MAX_DRY_REQUEST_BYTES, &split) {
                        self.answer(&line, &mut pending, &mut seq, &mut last_due);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => stdin_open = false,
            }
        }
    }

    /// Queue the answer to one request line, due after its delay.
    fn answer(
        &self,
        line: &[u8],
        pending: &mut BTreeMap<(Instant, u64), Action>,
        seq: &mut u64,
        last_due: &mut Instant,
    ) {
        log::debug!(
            target: "toolpool::dry_run",
            "dry run: tool '{}' instance {}: would send {:?} to {:?}",
            self.tool,
            self.index,
            String::from_utf8_lossy(line),
            self.argv
        );
        let (delay, action) = match &self.protocol {
            Protocol::Jsonrpc => self.answer_rpc(line),
            proto => self.answer_line(line, proto),
        };
        let Some(action) = action else { return };
        let now = Instant::now();
        let due = match self.protocol {
            Protocol::Jsonrpc => now + delay,
            // One request at a time, in order, as a line tool answers.
            _ => (*last_due).max(now) + delay,
        };
        *last_due = due;
        *seq += 1;
        pending.insert((due, *seq), action);
    }

    fn answer_line(&self, line: &[u8], proto: &Protocol) -> (Duration, Option<Action>) {
        // The spec's `end_command`: the tool prints the marker, and only then.
        if let Protocol::Marker(Marker {
            marker,
            end_command: Some(end),
        }) = proto
        {
            if line == end.as_bytes() {
                let out = format!("{marker}\n").into_bytes();
                return (Duration::ZERO, Some(Action::Write(out)));
            }
        }
        let key = String::from_utf8_lossy(line);
        let found = self.dry.find(&key);
        let delay = Duration::from_millis(found.map_or(0, |r| r.delay_ms));
        let text: Vec<u8> = match found {
            Some(r) if r.error.is_some() => {
                let e = r.error.as_ref().expect("checked");
                return (delay, Some(Action::Fail(e.code as i32, e.message.clone())));
            }
            Some(r) if r.reply.is_some() => r.reply.clone().unwrap_or_default().into_bytes(),
            _ => match &self.dry.default {
                DryDefault::Echo => line.to_vec(),
                DryDefault::Reply(s) => s.clone().into_bytes(),
                DryDefault::Error => {
                    let message = format!("dry run: no reply matches the line '{key}'");
                    return (delay, Some(Action::Fail(1, message)));
                }
            },
        };
        let mut out = Vec::with_capacity(text.len() + 8);
        match proto {
            Protocol::Marker(Marker {
                marker,
                end_command: None,
            }) => {
                if !text.is_empty() {
                    out.extend_from_slice(&text);
                    out.push(b'\n');
                }
                out.extend_from_slice(marker.as_bytes());
                out.push(b'\n');
            }
            // With an `end_command` the marker comes when that line does.
            Protocol::Marker(_) if text.is_empty() => {}
            _ => {
                out.extend_from_slice(&text);
                out.push(b'\n');
            }
        }
        (delay, Some(Action::Write(out)))
    }

    fn answer_rpc(&self, line: &[u8]) -> (Duration, Option<Action>) {
        let req: Option<serde_json::Map<String, Value>> = serde_json::from_slice(line).ok();
        let id = req
            .as_ref()
            .and_then(|o| o.get("id").cloned())
            .unwrap_or(Value::Null);
        let method = req
            .as_ref()
            .and_then(|o| o.get("method"))
            .and_then(Value::as_str);
        let Some(method) = method else {
            let e = error_line(&id, -32600, "dry run: not a JSON-RPC request");
            return (Duration::ZERO, Some(Action::Write(e)));
        };
        if req.as_ref().is_some_and(|o| !o.contains_key("id")) {
            return (Duration::ZERO, None); // a notification gets no reply
        }
        let found = self.dry.find(method);
        let delay = Duration::from_millis(found.map_or(0, |r| r.delay_ms));
        let line = match found {
            Some(r) if r.error.is_some() => {
                let e = r.error.as_ref().expect("checked");
                error_line(&id, e.code, &e.message)
            }
            Some(r) if r.reply.is_some() => result_line(&id, r.reply.as_deref().unwrap_or("null")),
            _ => match &self.dry.default {
                DryDefault::Echo => {
                    let params = req.as_ref().and_then(|o| o.get("params"));
                    let text = params.map_or("null".to_string(), Value::to_string);
                    result_line(&id, &text)
                }
                DryDefault::Reply(s) => result_line(&id, s),
                DryDefault::Error => error_line(
                    &id,
                    -32601,
                    &format!("dry run: no reply for the method '{method}'"),
                ),
            },
        };
        (delay, Some(Action::Write(line)))
    }
}

/// Move the replies that are due from `pending` to `out`, in order; a failure is due
/// once all output before it is written, and ends the run: its message goes to
/// `stderr` and its exit is returned.
fn release_due(
    pending: &mut BTreeMap<(Instant, u64), Action>,
    out: &mut Vec<u8>,
    stderr: &mut File,
) -> Option<ExitInfo> {
    let now = Instant::now();
    while let Some(entry) = pending.first_entry() {
        if entry.key().0 > now {
            break;
        }
        if matches!(entry.get(), Action::Fail(..)) && !out.is_empty() {
            break;
        }
        match entry.remove() {
            Action::Write(b) => out.extend_from_slice(&b),
            Action::Fail(code, message) => {
                let _ = stderr.write_all(message.as_bytes());
                let _ = stderr.write_all(b"\n");
                return Some(ExitInfo::Code(code));
            }
        }
    }
    None
}

/// The `poll` timeout in ms until the first pending reply is due (-1: none, or a
/// failure that waits for the output before it, through POLLOUT, not for a timer).
fn poll_timeout(pending: &BTreeMap<(Instant, u64), Action>, out_empty: bool) -> i32 {
    match pending.first_key_value() {
        Some((_, Action::Fail(..))) if !out_empty => -1,
        Some(((due, _), _)) => {
            let left = due.saturating_duration_since(Instant::now());
            left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
        }
        None => -1,
    }
}

/// A reply line with `result` = `json` (valid JSON, checked with the spec), kept exact: a
/// newline in valid JSON is whitespace outside strings, so it becomes a space.
fn result_line(id: &Value, json: &str) -> Vec<u8> {
    let one_line = json.replace(['\n', '\r'], " ");
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{one_line}}}\n").into_bytes()
}

fn error_line(id: &Value, code: i64, message: &str) -> Vec<u8> {
    let v = serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": code, "message": message},
    });
    let mut b = v.to_string().into_bytes();
    b.push(b'\n');
    b
}
