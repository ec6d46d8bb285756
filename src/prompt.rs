//! The `prompt` framing: one request to an interactive tool that prints a prompt and waits
//! (`python3 -i`, `sqlite3`, `node`, `tclsh`, IPython).
//!
//! The request (one line, or several: a block of code, a statement over lines) is written
//! in one go. The reply is what the tool then draws on stdout, read as text through a small
//! terminal (`term`: colours, cursor moves and the line editor's redraws never reach it),
//! up to the prompt that follows the whole input; the tool's echo of the input, the
//! continuation prompts and the prompts between statements are taken out (`session`).
//! stdout and stderr are both watched for the prompt (`python3 -i` writes it on stderr
//! when stdin is not a terminal), and what the tool writes on stderr meanwhile makes the
//! request a tool error carrying that text; the spec's `error` pattern does the same for a
//! reply that matches it.
//!
//! A timeout or cancel leaves the tool busy: with `interrupt`, it is sent SIGINT (Ctrl-C)
//! and given `shutdown.grace_ms` to come back to its prompt, and then keeps its session;
//! otherwise the session is out of step and the incarnation is replaced (the caller asks
//! [`in_step`]). The banner before the first prompt is start-up output, and the spec's
//! `init` lines run after it on every start ([`start`]).

use crate::cancel::{CancelToken, Until};
use crate::error::{Error, Result};
use crate::incarnation::Incarnation;
use crate::reader::WaitEnd;
use crate::session::{reply_text, Scanned, Session};
use crate::spec::{Prompt, ToolSpec};
use parking_lot::Mutex;
use std::time::{Duration, Instant};

/// Largest reply read in `prompt` framing; past it the request fails and the instance is
/// replaced.
pub const MAX_PROMPT_REPLY_BYTES: usize = 64 << 20;
/// Longest a reply waits for the stderr bytes the tool wrote before its prompt to be read.
const SETTLE: Duration = Duration::from_millis(100);

/// Wait for the tool's first prompt (what comes before it is start-up output, counted in
/// `startup_lines`), then run the spec's `init` lines, each to its prompt, by `deadline`.
/// A failure is [`Error::Spawn`] naming the step, or [`Error::Cancelled`].
pub(crate) fn start(
    inc: &Incarnation,
    spec: &ToolSpec,
    p: &Prompt,
    deadline: Instant,
    cancel: Option<&CancelToken>,
) -> Result<()> {
    let session = session(inc);
    let timeout = Duration::from_millis(spec.startup.timeout_ms);
    let until = Until {
        deadline,
        timeout,
        cancel,
    };
    let what = |step: &str| format!("tool '{}' instance {}: {step}", spec.id, inc.index());
    match wait_for_prompt(inc, session, &[], until) {
        Ok((out, err)) => {
            let banner = out.text.lines().count() + err.text.lines().count();
            inc.count_startup_lines(banner as u64);
            session.lock().synced = true;
        }
        Err(WaitEnd::Cancelled) => return Err(Error::Cancelled(what("the first prompt"))),
        Err(WaitEnd::Timeout) => {
            return Err(Error::Spawn(format!(
                "{} printed no prompt matching protocol.prompt {:?} within startup.timeout_ms ({} ms){}",
                what("the tool"),
                p.prompt,
                timeout.as_millis(),
                inc.stderr_suffix()
            )))
        }
        Err(WaitEnd::Eof) => {
            return Err(Error::Spawn(format!(
                "{} before its first prompt{}",
                what("ended"),
                inc.stderr_suffix()
            )))
        }
    }
    for (k, line) in p.init.iter().enumerate() {
        match exchange(inc, spec, p, line, until) {
            Ok(_) => {}
            Err(e @ Error::Cancelled(_)) => return Err(e),
            Err(e) => {
                return Err(Error::Spawn(format!(
                    "{} failed: {e}",
                    what(&format!("protocol.init[{k}] ({line:?})"))
                )))
            }
        }
    }
    Ok(())
}

/// One request on `inc` in `prompt` framing until `until` (see the module docs).
pub(crate) fn exchange(
    inc: &Incarnation,
    spec: &ToolSpec,
    p: &Prompt,
    payload: &str,
    until: Until<'_>,
) -> Result<Vec<u8>> {
    let session = session(inc);
    let what = || format!("reply from instance {} of '{}'", inc.index(), spec.id);
    // Each line as typed, Enter after each: a final newline is an empty line more, which
    // ends a block in most REPLs (as a person presses Enter twice after one).
    let lines: Vec<&str> = payload.split('\n').collect();
    {
        let mut s = session.lock();
        // What came since the last request belongs to no one.
        let stray = take_output(inc, &mut s);
        if stray > 0 {
            inc.count_unsolicited(stray);
        }
        s.begin();
        s.synced = false;
    }
    let bytes: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    inc.send_lines(&bytes)?;
    match wait_for_prompt(inc, session, &lines, until) {
        Ok((out, err)) => {
            session.lock().synced = true;
            reply(inc, spec, out, err)
        }
        Err(WaitEnd::Eof) => Err(inc.death(Duration::from_millis(200))),
        Err(end) => {
            if p.interrupt {
                interrupt(inc, spec, session);
            }
            Err(match end {
                WaitEnd::Cancelled => Error::Cancelled(what()),
                _ => Error::timeout(what(), until.timeout),
            })
        }
    }
}

/// True when the tool is at its prompt, so its next output answers the next request: after
/// a reply, or an interrupt that brought the prompt back. False after a timeout, a cancel
/// or a protocol error that did not: then the incarnation must be replaced.
pub(crate) fn in_step(inc: &Incarnation) -> bool {
    inc.session().is_some_and(|s| s.lock().synced)
}

/// The reply of a request that ended at the prompt: stdout's text (its final newlines
/// dropped), or the tool error that stderr output or the `error` pattern makes of it.
fn reply(inc: &Incarnation, spec: &ToolSpec, out: Scanned, err: Scanned) -> Result<Vec<u8>> {
    let text = &reply_text(&out.text);
    let errors = reply_text(&err.text);
    let errors = errors.trim_start_matches('\n');
    let tool_error = |message: &str| {
        let data = serde_json::json!({
            "stdout": text,
            "stderr": errors,
            "tool": spec.id,
            "instance": inc.index(),
        });
        Error::Tool {
            code: 0,
            message: message.to_string(),
            data: Some(data.to_string()),
        }
    };
    if !errors.trim().is_empty() {
        return Err(tool_error(errors));
    }
    let error = session(inc).lock().patterns.error.clone();
    if error.is_some_and(|e| e.is_match(text)) {
        return Err(tool_error(text));
    }
    Ok(text.as_bytes().to_vec())
}

/// Interrupt the tool (SIGINT to its process group, as a terminal's Ctrl-C) and wait up to
/// `shutdown.grace_ms` for its prompt; the session is in step again if it came back.
fn interrupt(inc: &Incarnation, spec: &ToolSpec, session: &Mutex<Session>) {
    {
        // Only what comes after the interrupt counts: the screen may end with a prompt
        // the tool printed between two lines of the request.
        let mut s = session.lock();
        take_output(inc, &mut s);
        s.out.clear();
        s.err.clear();
    }
    inc.interrupt();
    let grace = Duration::from_millis(spec.shutdown.grace_ms);
    let until = Until {
        deadline: Instant::now() + grace,
        timeout: grace,
        cancel: None,
    };
    let back = wait_for_prompt(inc, session, &[], until).is_ok();
    log::info!(
        target: "toolpool",
        "interrupted tool={} instance={} pid={} back_at_prompt={back}",
        spec.id,
        inc.index(),
        inc.log_pid()
    );
    session.lock().synced = back;
}

/// Wait until the tool is at its prompt after reading every one of `lines` (a prompt
/// passed after each line but the last), reading both streams into the session, until
/// `until`. On success, both streams as read against `lines`.
fn wait_for_prompt(
    inc: &Incarnation,
    session: &Mutex<Session>,
    lines: &[&str],
    until: Until<'_>,
) -> std::result::Result<(Scanned, Scanned), WaitEnd> {
    let need = lines.len().saturating_sub(1);
    loop {
        let found = inc.wait_stdout(until.deadline, until.cancel, |st| {
            let mut s = session.lock();
            while let Some(chunk) = st.queue.pop_front() {
                s.out.feed(&chunk);
            }
            s.err.feed(&inc.stderr().take_raw());
            if s.out.len() + s.err.len() > MAX_PROMPT_REPLY_BYTES {
                return Some(None);
            }
            if !at_prompt(&s) {
                return None;
            }
            let (o, e) = s.scan(lines);
            // At a prompt that follows every line (not one between two of them).
            let done = (o.at_prompt || e.at_prompt) && o.prompts + e.prompts >= need;
            done.then_some(Some((o, e)))
        })?;
        let Some((out, _)) = found else {
            // Too large: nothing can be read of it in step.
            return Err(WaitEnd::Timeout);
        };
        // The other stream may hold what the tool wrote before the prompt: read it, then
        // read both again.
        settle(inc, session, out.at_prompt);
        let (out, err) = session.lock().scan(lines);
        if (out.at_prompt || err.at_prompt) && out.prompts + err.prompts >= need {
            return Ok((out, err));
        }
    }
}

/// A cheap look before a full scan: does the cursor row of either stream end with a prompt?
fn at_prompt(s: &Session) -> bool {
    let ends = |row: String| {
        s.patterns
            .prompt
            .find_iter(&row)
            .last()
            .is_some_and(|m| m.end() == row.len())
    };
    ends(s.out.cursor_row()) || ends(s.err.cursor_row())
}

/// Read what the other stream holds of what the tool wrote before its prompt: stderr once
/// every byte in its pipe is read (prompt on stdout), or stdout's pipe (prompt on stderr).
fn settle(inc: &Incarnation, session: &Mutex<Session>, prompt_on_stdout: bool) {
    if prompt_on_stdout {
        let end = Instant::now() + SETTLE;
        while !inc.stderr().settled() && Instant::now() < end {
            std::thread::yield_now();
        }
    } else {
        drop(inc.pull_output());
    }
    take_output(inc, &mut session.lock());
}

/// Feed what both streams hold now into the session; returns the chunks taken.
fn take_output(inc: &Incarnation, s: &mut Session) -> u64 {
    let mut taken = 0;
    let mut st = inc.pull_output();
    while let Some(chunk) = st.queue.pop_front() {
        s.out.feed(&chunk);
        taken += 1;
    }
    drop(st);
    let err = inc.stderr().take_raw();
    if !err.is_empty() {
        s.err.feed(&err);
        taken += 1;
    }
    taken
}

fn session(inc: &Incarnation) -> &Mutex<Session> {
    inc.session()
        .expect("an incarnation of a prompt tool has a session")
}
