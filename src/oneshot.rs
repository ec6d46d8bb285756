//! The one-shot path: run the tool once for one request.
//!
//! The payload goes to stdin (then stdin is closed) or is appended as the last argument;
//! the reply is stdout without its final newline; a non-zero exit is [`Error::Tool`] with
//! the exit code and stderr. The run counts against the limiter like any child, is killed
//! (whole group) at the timeout, and is always reaped.

use crate::error::{Error, ExitInfo, Result};
use crate::limiter::Limiter;
use crate::process::{spawn_thread, Launch, Spawned};
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
) -> Result<Vec<u8>> {
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
        pty: false,
    };
    let sp = limiter
        .spawn(&launch, timeout, None, Box::new(|_: ExitInfo| {}))
        .map_err(|e| match e {
            Error::Spawn(m) => Error::Spawn(format!("tool '{}' one-shot: {m}", spec.id)),
            other => other,
        })?;
    let input = (oneshot.input == OneshotInput::Stdin).then(|| format!("{payload}\n"));
    let (exit, out, err) = drive(sp, input, timeout);
    let Some(exit) = exit else {
        return Err(Error::timeout(
            format!("one-shot run of '{}'", spec.id),
            timeout,
        ));
    };
    outcome(&spec.id, exit, &out, &err)
}

/// Run one of toolpool's own helper commands (`argv`, the host's environment, stdin
/// closed, counted by no limiter: `squeue`, `scancel`, `scontrol` for Slurm pools) and
/// collect its stdout and stderr. The exit is `None` when it ran longer than `timeout`
/// (it was killed then); `Err` when it could not start.
pub(crate) fn capture(
    argv: Vec<String>,
    timeout: Duration,
) -> Result<(Option<ExitInfo>, Vec<u8>, Vec<u8>)> {
    let sp = crate::process::spawn(&Launch {
        argv,
        env: Default::default(),
        env_clear: false,
        cwd: None,
        pty: false,
    })?;
    Ok(drive(sp, None, timeout))
}

/// Feed stdin, collect stdout and stderr (each on its own thread, so neither pipe can fill
/// up), wait up to `timeout`, then kill and reap. The exit is `None` on a timeout.
fn drive(
    sp: Spawned,
    input: Option<String>,
    timeout: Duration,
) -> (Option<ExitInfo>, Vec<u8>, Vec<u8>) {
    sp.reaper.into_thread();
    // Without the held read end: a tool that never reads must end the write with EPIPE.
    let mut stdin = sp.stdin.into_file();
    let writer = spawn_thread("toolpool-oneshot-in".into(), move || {
        if let Some(input) = input {
            let _ = stdin.write_all(input.as_bytes());
        }
    });
    let (out_tx, out_rx) = crossbeam_channel::bounded(1);
    let (err_tx, err_rx) = crossbeam_channel::bounded(1);
    let (stdout, stderr) = (sp.stdout, sp.stderr);
    let t_out = spawn_thread("toolpool-oneshot-out".into(), move || {
        let _ = out_tx.send(collect(stdout));
    });
    let t_err = spawn_thread("toolpool-oneshot-err".into(), move || {
        let _ = err_tx.send(collect(stderr));
    });
    let exit = sp.process.wait_timeout(timeout);
    if exit.is_none() {
        sp.process.kill_and_reap();
    }
    sp.process.join_waiter();
    let _ = writer.join();
    let out = out_rx.recv().unwrap_or_default();
    let err = err_rx.recv().unwrap_or_default();
    let _ = t_out.join();
    let _ = t_err.join();
    (exit, out, err)
}

/// Read `f` to EOF, keeping at most [`MAX_ONESHOT_OUTPUT_BYTES`].
fn collect(mut f: std::fs::File) -> Vec<u8> {
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

/// The reply of a run that ended with `exit`, or its error.
fn outcome(tool: &str, exit: ExitInfo, out: &[u8], err: &[u8]) -> Result<Vec<u8>> {
    let text = out.strip_suffix(b"\n").unwrap_or(out).to_vec();
    let stderr = String::from_utf8_lossy(err);
    let stderr = stderr.trim_end();
    match exit {
        ExitInfo::Code(0) => Ok(text),
        ExitInfo::Code(c) => Err(Error::Tool {
            code: c as i64,
            message: format!("one-shot run of '{tool}' exited with code {c}: {stderr}"),
            data: None,
        }),
        ExitInfo::Signal(s) => Err(Error::Tool {
            code: -(s as i64),
            message: format!("one-shot run of '{tool}' was killed by signal {s}: {stderr}"),
            data: None,
        }),
    }
}
