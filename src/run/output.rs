//! Collecting a run's output: [`run_output`](crate::run_output) (and the one-shot fallback, through
//! `collect`) start a run in its collecting form (stdout as raw chunks, stderr captured as
//! it comes, stdin closed after the spec's `input`), read stdout to its end on the calling
//! thread, and wait for the exit: no thread beyond the run's own.

use super::{dry_of, Plan, Run};
use crate::cancel::{cancelled, CancelToken, Wait};
use crate::error::{Error, ExitInfo, Result};
use crate::limiter::{Limiter, Permit};
use crate::reader::WaitEnd;
use crate::spec::{RunDryRun, RunSpec};
use crate::util::Capped;
use serde::{Serialize, Serializer};
use std::sync::Arc;
use std::time::Duration;

/// Everything a run wrote, and how it ended ([`run_output`](crate::run_output)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOutput {
    /// How it ended (a code, or a signal: 9 when killed at its timeout or by `kill_all`).
    pub exit: ExitInfo,
    /// Killed at its timeout.
    pub timed_out: bool,
    /// The first `max_output_bytes` of stdout, as written (JSON: lossy UTF-8 text).
    #[serde(serialize_with = "as_text")]
    pub stdout: Vec<u8>,
    /// The first `max_output_bytes` of stderr.
    #[serde(serialize_with = "as_text")]
    pub stderr: Vec<u8>,
    /// stdout bytes read beyond `max_output_bytes` and dropped.
    pub stdout_dropped_bytes: u64,
    /// stderr bytes read beyond `max_output_bytes` and dropped.
    pub stderr_dropped_bytes: u64,
    /// The pid it had; `None` for a dry run.
    pub pid: Option<i32>,
    /// Milliseconds from the start (after the slot wait) to the end.
    pub elapsed_ms: u64,
}

impl RunOutput {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        self.exit == ExitInfo::Code(0)
    }

    /// stdout as text (invalid UTF-8 replaced by U+FFFD).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced by U+FFFD).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn as_text<S: Serializer>(b: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// [`run_output`](crate::run_output) under `limiter` (and only that limiter: never a service's).
pub fn run_output_with(
    spec: RunSpec,
    wait: impl Into<Wait>,
    limiter: &Arc<Limiter>,
) -> Result<RunOutput> {
    spec.validate()?;
    let dry = dry_of(&spec);
    let what = format!("run '{}'", spec.display_name());
    collect(&spec, dry, wait.into(), limiter, what, None)
}

/// Start `spec` (with `dry`, or for real) and collect its output (see [`run_output`](crate::run_output));
/// `what` prefixes a spawn error. The one path of `run_output` and the one-shot fallback.
pub(crate) fn collect(
    spec: &RunSpec,
    dry: Option<RunDryRun>,
    wait: Wait,
    limiter: &Arc<Limiter>,
    what: String,
    slot: Option<Permit>,
) -> Result<RunOutput> {
    let cancel = wait.token();
    let timeout = match spec.timeout_ms.map(Duration::from_millis) {
        Some(t) => t.min(wait.timeout()),
        None => wait.timeout(),
    };
    let run = Run::launch(Plan {
        spec,
        dry,
        timeout: Some(timeout),
        limiter,
        cancel,
        collect: true,
        what,
        slot,
    })?;
    // From here the token kills the run.
    let _registered = cancel.map(|c| {
        let child = run.child.clone();
        c.on_cancel(Arc::new(move || {
            child.signal(libc::SIGKILL);
        }))
    });
    let mut out = Capped::new(spec.max_output_bytes);
    if let Err(e) = run.collect_stdout(&mut out, cancel) {
        run.kill();
        return Err(e);
    }
    let exit = run.wait(Wait::new(Duration::MAX))?;
    if cancelled(cancel) && exit == ExitInfo::Signal(libc::SIGKILL) && !run.timed_out() {
        return Err(Error::Cancelled(format!("run '{}'", run.name)));
    }
    let elapsed_ms = run.started.elapsed().as_millis() as u64;
    let captured = run
        .captured
        .as_ref()
        .map(|c| std::mem::take(&mut *c.lock()))
        .unwrap_or_default();
    Ok(RunOutput {
        exit,
        timed_out: run.timed_out(),
        stdout: out.kept,
        stderr: captured.kept,
        stdout_dropped_bytes: out.dropped,
        stderr_dropped_bytes: captured.dropped,
        pid: run.pid(),
        elapsed_ms,
    })
}

impl Run {
    /// `run_output`'s loop: stdout to its end (or what the pipe holds once the run has
    /// ended), into `out`, until `cancel`.
    fn collect_stdout(&self, out: &mut Capped, cancel: Option<&CancelToken>) -> Result<()> {
        let forever = crate::util::deadline_in(Duration::MAX);
        loop {
            let got = self.stdout.wait_for(forever, cancel, |st| {
                if let Some(chunk) = st.queue.pop_front() {
                    return Some(Some(chunk));
                }
                self.ended().then_some(None)
            });
            match got {
                Ok(Some(chunk)) => out.push(&chunk),
                Ok(None) => {
                    // Ended: take what the pipe holds, then stop (it may be held open).
                    loop {
                        let mut st = self.stdout.take_available();
                        let mut any = false;
                        while let Some(chunk) = st.queue.pop_front() {
                            out.push(&chunk);
                            any = true;
                        }
                        if !any || self.stdout.eof() {
                            return Ok(());
                        }
                    }
                }
                Err(WaitEnd::Eof) => return Ok(()),
                Err(WaitEnd::Cancelled) => {
                    return Err(Error::Cancelled(format!("run '{}'", self.name)))
                }
                Err(WaitEnd::Timeout) => {} // not before the end of time
            }
        }
    }
}
