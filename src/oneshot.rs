//! The one-shot path: run the tool once for one request.
//!
//! The payload goes to stdin (then stdin is closed) or is appended as the last argument;
//! the reply is stdout without its final newline; a non-zero exit is [`Error::Tool`] with
//! the exit code and stderr. The run counts against the limiter like any child, is killed
//! (whole group) at the timeout, and is always reaped.

use crate::error::{Error, ExitInfo, Result};
use crate::limiter::Limiter;
use crate::process::{spawn_thread, Launch};
use crate::spec::{Oneshot, OneshotInput, ToolSpec};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Most stdout (and stderr) bytes kept from a one-shot run; the rest is read and dropped.
pub const MAX_ONESHOT_OUTPUT_BYTES: usize = 64 << 20;

/// Run `oneshot` once for `payload`.
pub(crate) fn run(
    spec: &ToolSpec,
    oneshot: &Oneshot,
    payload: &str,
    timeout: Duration,
    limiter: &Arc<Limiter>,
) -> Result<String> {
    let mut argv = oneshot.command.clone();
    if oneshot.input == OneshotInput::Arg {
        argv.push(payload.to_string());
    }
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(Error::InvalidArgument(
            "one-shot payload contains a NUL byte".into(),
        ));
    }
    let launch = Launch {
        argv,
        env: spec.env.clone(),
        env_clear: spec.env_clear,
        cwd: spec.cwd.clone(),
    };
    let sp = limiter
        .spawn(&launch, timeout, Box::new(|_: ExitInfo| {}))
        .map_err(|e| match e {
            Error::Spawn(m) => Error::Spawn(format!("tool '{}' one-shot: {m}", spec.id)),
            other => other,
        })?;
    let mut stdin = sp.stdin;
    let input = (oneshot.input == OneshotInput::Stdin).then(|| format!("{payload}\n"));
    let writer = spawn_thread("toolpool-oneshot-in".into(), move || {
        if let Some(input) = input {
            let _ = stdin.write_all(input.as_bytes());
        }
    });
    let collect = |mut f: std::fs::File| {
        move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 16 * 1024];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = MAX_ONESHOT_OUTPUT_BYTES.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            kept
        }
    };
    let (out_tx, out_rx) = crossbeam_channel::bounded(1);
    let (err_tx, err_rx) = crossbeam_channel::bounded(1);
    let stdout = sp.stdout;
    let stderr = sp.stderr;
    let mut read_out = Some(collect(stdout));
    let mut read_err = Some(collect(stderr));
    let t_out = spawn_thread("toolpool-oneshot-out".into(), move || {
        let _ = out_tx.send(read_out.take().expect("once")());
    });
    let t_err = spawn_thread("toolpool-oneshot-err".into(), move || {
        let _ = err_tx.send(read_err.take().expect("once")());
    });
    let exit = sp.process.wait_timeout(timeout);
    let timed_out = exit.is_none();
    let exit = match exit {
        Some(e) => e,
        None => sp
            .process
            .kill_and_reap()
            .unwrap_or(ExitInfo::Signal(libc::SIGKILL)),
    };
    sp.process.join_waiter();
    let _ = writer.join();
    let out = out_rx.recv().unwrap_or_default();
    let err = err_rx.recv().unwrap_or_default();
    let _ = t_out.join();
    let _ = t_err.join();
    if timed_out {
        return Err(Error::timeout(
            format!("one-shot run of '{}'", spec.id),
            timeout,
        ));
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if text.ends_with('\n') {
        text.pop();
    }
    match exit {
        ExitInfo::Code(0) => Ok(text),
        ExitInfo::Code(c) => Err(Error::Tool {
            code: c as i64,
            message: format!(
                "one-shot run of '{}' exited with code {c}: {}",
                spec.id,
                String::from_utf8_lossy(&err).trim_end()
            ),
            data: None,
        }),
        ExitInfo::Signal(s) => Err(Error::Tool {
            code: -(s as i64),
            message: format!(
                "one-shot run of '{}' was killed by signal {s}: {}",
                spec.id,
                String::from_utf8_lossy(&err).trim_end()
            ),
            data: None,
        }),
    }
}
