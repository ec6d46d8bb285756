//! The one-shot path: run the tool once for one request, as a run (`crate::run`).
//!
//! The payload goes to stdin (then stdin is closed) or is appended as the last argument;
//! the reply is stdout without its final newline; a non-zero exit is [`Error::Tool`] with
//! the exit code and stderr. The run counts against the limiter (as a run named after the
//! tool), waits up to the timeout for a slot, is killed (whole group) at the timeout, and
//! is always reaped: all of it is `run::collect`'s, which `run_output` uses too.

use crate::cancel::Wait;
use crate::error::{Error, ExitInfo, Result};
use crate::limiter::Limiter;
use crate::run::{self, RunOutput};
use crate::spec::{Oneshot, OneshotInput, RunSpec, ToolSpec};
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
    let ms = timeout.as_millis().min(u64::MAX as u128) as u64;
    let run_spec = RunSpec {
        name: spec.id.clone(),
        env: spec.env.clone(),
        env_clear: spec.env_clear,
        cwd: spec.cwd.clone(),
        input: Some(match oneshot.input {
            OneshotInput::Stdin => format!("{payload}\n"),
            OneshotInput::Arg => String::new(),
        }),
        slot_timeout_ms: ms,
        max_output_bytes: MAX_ONESHOT_OUTPUT_BYTES,
        ..RunSpec::new(argv)
    };
    let out = run::collect(
        &run_spec,
        None,
        Wait::new(timeout),
        limiter,
        format!("tool '{}' one-shot", spec.id),
        None,
    )?;
    if out.timed_out {
        return Err(Error::timeout(
            format!("one-shot run of '{}'", spec.id),
            timeout,
        ));
    }
    outcome(&spec.id, &out)
}

/// The reply of a run that ended, or its error.
fn outcome(tool: &str, out: &RunOutput) -> Result<Vec<u8>> {
    let stdout = &out.stdout;
    let text = stdout.strip_suffix(b"\n").unwrap_or(stdout).to_vec();
    let stderr = out.stderr_text();
    let stderr = stderr.trim_end();
    match out.exit {
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

/// Run one of toolpool's own helper commands (`argv`, the host's environment, stdin
/// closed, counted by no pool's limit: `squeue`, `scancel`, `scontrol` for Slurm pools)
/// and collect its stdout and stderr. The exit is `None` when it ran longer than `timeout`
/// (it was killed then); `Err` when it could not start.
pub(crate) fn capture(
    argv: Vec<String>,
    timeout: Duration,
) -> Result<(Option<ExitInfo>, Vec<u8>, Vec<u8>)> {
    let name = argv.first().cloned().unwrap_or_default();
    let run_spec = RunSpec {
        name: name.clone(),
        max_output_bytes: MAX_ONESHOT_OUTPUT_BYTES,
        ..RunSpec::new(argv)
    };
    // A limiter of its own, with no limit: a helper never waits for a tool's slot.
    let unlimited = Limiter::new(0);
    let what = format!("toolpool's helper command '{name}'");
    let out = run::collect(&run_spec, None, Wait::new(timeout), &unlimited, what, None)?;
    let exit = (!out.timed_out).then_some(out.exit);
    Ok((exit, out.stdout, out.stderr))
}
