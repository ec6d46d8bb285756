//! The process-wide limit as a program sees it: this process's own
//! ([`Limiter::global`]), or, when the process uses a `toolpool serve` service
//! ([`Client::current`]), the service's, which every process of the application shares.
//! Its status, limit and kill switch; slots for the host's own processes
//! ([`acquire_slot`]); and the entry points of runs that count against it ([`Run::start`],
//! [`run_output`]), which decide where a run is counted before the run layer starts it.

use crate::cancel::{CancelToken, Wait};
use crate::client::Client;
use crate::error::Result;
use crate::limiter::{KillReport, Limiter, LimiterStatus, Permit};
use crate::run::{Run, RunOptions, RunOutput};
use crate::spec::RunSpec;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The process limit and the processes counted against it (the service's when this
/// process uses one).
pub fn limit_status() -> Result<LimiterStatus> {
    match Client::current()? {
        Some(c) => c.limit_status(),
        None => Ok(Limiter::global().status()),
    }
}

/// Set the process limit (0: none; the service's when this process uses one); returns the
/// old one.
pub fn set_limit(max: usize) -> Result<usize> {
    match Client::current()? {
        Some(c) => c.set_limit(max),
        None => Ok(Limiter::global().set_limit(max).0),
    }
}

/// Kill every process counted against the limit (the service's when this process uses
/// one).
pub fn kill_all() -> Result<KillReport> {
    match Client::current()? {
        Some(c) => c.kill_all(),
        None => Ok(Limiter::global().kill_all()),
    }
}

/// A slot of the process-wide limit for a process this program starts itself (register
/// its pid on the permit): [`Limiter::acquire`] on [`Limiter::global`], or, when this
/// process uses a `toolpool serve` service, a slot of the service's limit
/// ([`Client::acquire`]), so every process of the application shares one limit.
pub fn acquire_slot(wait: impl Into<Wait>) -> Result<Permit> {
    let wait = wait.into();
    match Client::current()? {
        Some(c) => c.acquire(wait),
        None => Limiter::global().acquire(wait),
    }
}

/// Where a run without a limiter of its own is counted: this process's limit, or a slot
/// of the service's (then the process runs under a limiter with no limit, and is
/// registered on the slot).
fn run_place(
    spec: &RunSpec,
    cancel: Option<&CancelToken>,
) -> Result<(Arc<Limiter>, Option<Permit>)> {
    // A dry run starts no process: nothing to count anywhere.
    if crate::run::dry_of(spec).is_some() {
        return Ok((Arc::clone(Limiter::global()), None));
    }
    match Client::current()? {
        None => Ok((Arc::clone(Limiter::global()), None)),
        Some(c) => {
            let mut wait = Wait::new(Duration::from_millis(spec.slot_timeout_ms));
            if let Some(t) = cancel {
                wait = wait.with_cancel(t);
            }
            let slot = c.acquire(wait)?;
            Ok((Arc::clone(unlimited()), Some(slot)))
        }
    }
}

/// The limiter of runs counted by a service: no limit here.
fn unlimited() -> &'static Arc<Limiter> {
    static UNLIMITED: OnceLock<Arc<Limiter>> = OnceLock::new();
    UNLIMITED.get_or_init(|| Limiter::new(0))
}

impl Run {
    /// Start `spec` under the host-wide limit ([`Limiter::global`], or the service's when
    /// this process uses one: see [`acquire_slot`]): wait up to its `slot_timeout_ms` for
    /// room ([`Error::LimitReached`](crate::Error::LimitReached) after), then start the
    /// process (or, with `dry_run` or `TOOLPOOL_DRY_RUN=1`, its stand-in). The spec is
    /// checked first ([`Error::Config`](crate::Error::Config)); a program that cannot
    /// start is [`Error::Spawn`](crate::Error::Spawn).
    pub fn start(spec: RunSpec) -> Result<Run> {
        Run::start_with(spec, RunOptions::default())
    }

    /// [`Run::start`] with a limiter of its own (then only that limiter counts it) or a
    /// cancel token for the slot wait.
    pub fn start_with(spec: RunSpec, opts: RunOptions) -> Result<Run> {
        spec.validate()?;
        let cancel = opts.cancel.as_ref();
        if let Some(l) = &opts.limiter {
            return Run::start_under(spec, l, cancel, None);
        }
        let (limiter, slot) = run_place(&spec, cancel)?;
        Run::start_under(spec, &limiter, cancel, slot)
    }
}

/// Run `spec` to its end under the host-wide limit (the service's when this process uses
/// one, as [`Run::start`]) and collect its output: stdin gets the spec's `input` (or is
/// closed at once), stdout and stderr are kept up to `max_output_bytes` each (the rest
/// read and counted), and the exit status is waited for. The run is killed (whole group)
/// after the wait's timeout or the spec's `timeout_ms`, whichever is shorter: the result
/// then says `timed_out`. Errors are for a run that could not start
/// ([`Error::Config`](crate::Error::Config), [`Error::Spawn`](crate::Error::Spawn),
/// [`Error::LimitReached`](crate::Error::LimitReached)) or was cancelled by the wait's
/// token, which kills it ([`Error::Cancelled`](crate::Error::Cancelled)); a non-zero exit
/// is a result, not an error.
///
/// ```
/// use std::time::Duration;
/// use toolpool::{run_output, ExitInfo, RunSpec};
///
/// let out = run_output(
///     RunSpec {
///         input: Some("b\na\n".into()),
///         ..RunSpec::new(["sort"])
///     },
///     Duration::from_secs(10),
/// )?;
/// assert_eq!((out.exit, out.stdout_text().as_str()), (ExitInfo::Code(0), "a\nb\n"));
/// # Ok::<(), toolpool::Error>(())
/// ```
pub fn run_output(spec: RunSpec, wait: impl Into<Wait>) -> Result<RunOutput> {
    spec.validate()?;
    let wait = wait.into();
    let (limiter, slot) = run_place(&spec, wait.token())?;
    let dry = crate::run::dry_of(&spec);
    let what = format!("run '{}'", spec.display_name());
    crate::run::collect(&spec, dry, wait, &limiter, what, slot)
}
