//! Slurm (`"launcher": "srun"`): every instance is a job step of its own, named with a
//! unique tag, and no step outlives the `srun` that launched it.
//!
//! **Why a step can outlive its `srun`.** On the node, `slurmstepd` holds the write end
//! of the task's stdin pipe and keeps it open when the `srun` on the other end vanishes
//! without a word (SIGKILL): it closes it only when `srun` forwards an end of input. The
//! watchdog ([`super::watchdog`]) therefore never sees its input end, and its parent,
//! `slurmstepd`, lives on. What normally ends such a step is `srun`'s own "shepherd", a
//! child process `srun` forks at start that waits for its parent to vanish and then asks
//! `slurmctld` to kill the step (and to release the job when `srun` made it). But the
//! shepherd is in `srun`'s process group, and toolpool ends what is left of a dead
//! child's group at once (so no grandchild holds its pipes): the shepherd is killed
//! before it reaches `slurmctld` nearly every time. The step then runs until its time
//! limit, which is unlimited by default. Nothing on the node can tell that `srun` is gone.
//!
//! **What toolpool does.** Each start gets `--job-name=TAG` (a tag unique to that start:
//! `toolpool-TOOL-INDEX-NONCE`; it names the job `srun` makes, or the step inside an
//! allocation). When the `srun` process has ended, however it ended, a keeper thread of
//! the pool looks the tag up (`squeue --me --steps --name`, and `squeue --me --name` for
//! the job outside an allocation) and cancels what Slurm still runs under it: the step
//! with `scancel JOB.STEP` (SIGKILL to every process of the step at once), then the job
//! `srun` made (never the allocation toolpool runs in). It looks again (after
//! [`steps::CHASE_WAIT`], then at doubling waits) until two looks in a row find nothing,
//! [`steps::CHASE_TRIES`] times at most. The same thread learns each running step's
//! id for the status (one `squeue` for every start not yet known, 100 ms after the start,
//! then less and less often up to every [`steps::RESOLVE_MAX_WAIT`]). Lookups and cancels
//! of one round are batched into one command each. At shutdown the keeper sends the
//! cancels of every ended start (within [`steps::CLOSE_WAIT`]) before the pool's shutdown
//! returns, without waiting for Slurm to list them gone. The keeper
//! is the [`steps`] submodule; this one holds the allocation, the names and the flags.
//!
//! **Inside an allocation.** When `SLURM_JOB_ID` is set as the pool is created,
//! instances run as steps of that job (`--jobid=ID --overlap`: they share the
//! allocation's CPUs with each other and with the job's other steps, so a pool starts
//! whatever the allocation's size), and a spec without `hosts` takes the allocation's
//! nodes (`SLURM_JOB_NODELIST`, expanded by `scontrol show hostnames`), `per_host`
//! instances on each.

use crate::error::{Error, ExitInfo, Result};
use crate::spec::ToolSpec;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

pub mod steps;
pub(crate) use steps::{StepGuard, Steps};

/// How long a lookup or cancel command (`squeue`, `scancel`, `scontrol`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The job toolpool runs in (`SLURM_JOB_ID`), if any.
pub fn allocation() -> Option<String> {
    std::env::var("SLURM_JOB_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// `spec` with the hosts of an `srun` pool that names none taken from the Slurm
/// allocation (`SLURM_JOB_NODELIST` expanded by `scontrol show hostnames`), and `count`
/// set to `per_host` × nodes when the spec gives `per_host`. Any other spec is returned
/// as it is.
pub(crate) fn take_allocation_nodes(mut spec: ToolSpec) -> Result<ToolSpec> {
    let Some(remote) = spec.remote.as_mut().filter(|r| r.hosts_from_allocation()) else {
        return Ok(spec);
    };
    let tool = &spec.id;
    let list = ["SLURM_JOB_NODELIST", "SLURM_NODELIST"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .ok_or_else(|| {
            Error::Config(format!(
                "tool '{tool}': key 'remote.hosts': none given, and toolpool does not run inside \
                 a Slurm allocation (SLURM_JOB_NODELIST is not set): name the nodes, or create \
                 the pool inside salloc or sbatch"
            ))
        })?;
    let argv = ["scontrol", "show", "hostnames", list.trim()].map(String::from);
    let nodes: Vec<String> = run(&argv)
        .map_err(|why| {
            Error::Spawn(format!(
                "tool '{tool}': cannot expand the allocation's node list '{list}': {why}"
            ))
        })?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if nodes.is_empty() {
        return Err(Error::Spawn(format!(
            "tool '{tool}': scontrol names no node in the allocation's node list '{list}'"
        )));
    }
    if let Some(n) = remote.per_host {
        spec.count = n.saturating_mul(nodes.len());
    }
    remote.hosts = nodes;
    Ok(spec)
}

/// The srun flags of one start: its name, and inside an allocation the job and
/// `--overlap`.
pub(crate) fn srun_flags(tag: &str, allocation: Option<&str>) -> Vec<String> {
    let mut flags = vec![format!("--job-name={tag}")];
    if let Some(job) = allocation {
        flags.extend([format!("--jobid={job}"), "--overlap".into()]);
    }
    flags
}

/// A tag unique to one start of instance `index` of `tool` (a Slurm job or step name:
/// letters, digits, `-`, `_` and `.` only, no comma, which would split an `squeue
/// --name` list).
pub(crate) fn new_tag(tool: &str, index: usize) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static NONCE: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let nonce = *NONCE.get_or_init(|| {
        let mut b = [0u8; 4];
        // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        if n == 4 {
            u32::from_ne_bytes(b)
        } else {
            // No getrandom: the pid and the clock make a collision unlikely enough.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::process::id().rotate_left(16) ^ t
        }
    });
    let tool: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!(
        "toolpool-{tool}-{index}-{nonce:08x}{:x}",
        NEXT.fetch_add(1, Relaxed)
    )
}

/// Why a Slurm client gave no answer.
pub(crate) enum Failure {
    /// It could not be started at all (no Slurm clients on this host).
    NoClient(String),
    /// It ran and failed (its exit and stderr), or timed out.
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoClient(why) | Failure::Failed(why) => f.write_str(why),
        }
    }
}

/// Run a Slurm client (up to [`COMMAND_TIMEOUT`]) and return its stdout.
pub(crate) fn run(argv: &[String]) -> std::result::Result<String, Failure> {
    let (exit, out, err) = crate::oneshot::capture(argv.to_vec(), COMMAND_TIMEOUT)
        .map_err(|e| Failure::NoClient(e.to_string()))?;
    let err = String::from_utf8_lossy(&err);
    let err = err.trim();
    match exit {
        Some(ExitInfo::Code(0)) => Ok(String::from_utf8_lossy(&out).into_owned()),
        Some(e) => Err(Failure::Failed(format!("{} failed ({e}): {err}", argv[0]))),
        None => Err(Failure::Failed(format!(
            "{} did not answer within {COMMAND_TIMEOUT:?}: {err}",
            argv[0]
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_unique_and_plain() {
        let a = new_tag("my tool, v2", 3);
        let b = new_tag("my tool, v2", 3);
        assert_ne!(a, b);
        assert!(a.starts_with("toolpool-my_tool__v2-3-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
    }

    #[test]
    fn flags_inside_and_outside_an_allocation() {
        assert_eq!(srun_flags("t", None), ["--job-name=t"]);
        assert_eq!(
            srun_flags("t", Some("42")),
            ["--job-name=t", "--jobid=42", "--overlap"]
        );
    }
}
