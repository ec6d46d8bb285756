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
//! `srun` made (never the allocation toolpool runs in). It looks again until nothing is
//! left, [`CHASE_TRIES`] times at most. The same thread learns each running step's id for
//! the status (one `squeue` for every start not yet known, 100 ms after the start, then
//! less and less often up to every [`RESOLVE_MAX_WAIT`]). Lookups and cancels of one
//! round are batched into one command each. At shutdown the keeper finishes its cancels
//! (within [`CLOSE_WAIT`]) before the pool's shutdown returns.
//!
//! **Inside an allocation.** When `SLURM_JOB_ID` is set as the pool is created,
//! instances run as steps of that job (`--jobid=ID --overlap`: they share the
//! allocation's CPUs with each other and with the job's other steps, so a pool starts
//! whatever the allocation's size), and a spec without `hosts` takes the allocation's
//! nodes (`SLURM_JOB_NODELIST`, expanded by `scontrol show hostnames`), `per_host`
//! instances on each.

use crate::error::{Error, ExitInfo, Result};
use crate::spec::ToolSpec;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a lookup or cancel command (`squeue`, `scancel`, `scontrol`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// The first look for a new start's step id, after its `srun` started.
pub const RESOLVE_FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two looks for a step id (the wait doubles from
/// [`RESOLVE_FIRST_WAIT`] while the job is pending).
pub const RESOLVE_MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the keeper looks for (and cancels) what is left of an ended start before it
/// gives up with a warning in the log; the looks are [`CHASE_WAIT`] apart.
pub const CHASE_TRIES: u32 = 20;
/// The wait between two looks at an ended start.
pub const CHASE_WAIT: Duration = Duration::from_millis(250);
/// How long a pool's shutdown waits for the keeper's last cancels.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

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
fn new_tag(tool: &str, index: usize) -> String {
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
enum Failure {
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
fn run(argv: &[String]) -> std::result::Result<String, Failure> {
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

/// The latest start of one instance.
struct Latest {
    tag: String,
    /// `JOB.STEP`, once learned.
    step: Option<String>,
    /// Its `srun` still runs.
    live: bool,
    /// When to look for its step id next, and the wait after that.
    next: Instant,
    wait: Duration,
}

/// An ended start whose step or job may still run.
struct Chase {
    tag: String,
    tries: u32,
    next: Instant,
}

#[derive(Default)]
struct Table {
    /// By instance index.
    latest: BTreeMap<usize, Latest>,
    ended: Vec<Chase>,
    /// Set by shutdown: the keeper finishes the chases, then exits.
    closed: Option<Instant>,
    /// No Slurm client could be run: nothing more is tried.
    given_up: bool,
    /// A failed lookup has been logged as a warning.
    warned: bool,
}

struct Shared {
    table: Mutex<Table>,
    wake: Condvar,
    /// `SLURM_JOB_ID` when the pool was created.
    allocation: Option<String>,
    tool: String,
}

/// The Slurm steps of one pool and the thread that keeps them (see the module docs).
pub(crate) struct Steps {
    shared: Arc<Shared>,
    keeper: Mutex<Option<JoinHandle<()>>>,
}

/// Held by the exit callback of one start: dropped once its `srun` has ended (or could
/// not be spawned), it hands the start to the keeper, which cancels what Slurm still runs
/// under its tag.
pub(crate) struct StepGuard {
    shared: Arc<Shared>,
    index: usize,
    tag: String,
}

impl Steps {
    /// The steps of a pool of `tool`; `allocation` is the job it runs in. No thread yet:
    /// the first start starts the keeper.
    pub fn new(tool: &str, allocation: Option<String>) -> Steps {
        Steps {
            shared: Arc::new(Shared {
                table: Mutex::new(Table::default()),
                wake: Condvar::new(),
                allocation,
                tool: tool.to_string(),
            }),
            keeper: Mutex::new(None),
        }
    }

    /// The job the instances run in (`None`: each `srun` makes its own).
    pub fn allocation(&self) -> Option<&str> {
        self.shared.allocation.as_deref()
    }

    /// A new start of instance `index`: its tag, and the guard that ends its step.
    pub fn begin(&self, index: usize) -> (String, StepGuard) {
        let tag = new_tag(&self.shared.tool, index);
        let mut keeper = self.keeper.lock();
        let mut t = self.shared.table.lock();
        // After shutdown no keeper starts again: the guard cancels on its own thread.
        if keeper.is_none() && t.closed.is_none() {
            let shared = Arc::clone(&self.shared);
            *keeper = Some(crate::process::spawn_small_thread(
                format!("toolpool-slurm-{}", self.shared.tool),
                move || keep(&shared),
            ));
        }
        drop(keeper);
        t.latest.insert(
            index,
            Latest {
                tag: tag.clone(),
                step: None,
                live: true,
                next: Instant::now() + RESOLVE_FIRST_WAIT,
                wait: RESOLVE_FIRST_WAIT,
            },
        );
        drop(t);
        self.shared.wake.notify_all();
        let guard = StepGuard {
            shared: Arc::clone(&self.shared),
            index,
            tag: tag.clone(),
        };
        (tag, guard)
    }

    /// The step id (`JOB.STEP`) of the latest start of `index`, once learned.
    pub fn step_id(&self, index: usize) -> Option<String> {
        let t = self.shared.table.lock();
        t.latest.get(&index).and_then(|l| l.step.clone())
    }

    /// Let the keeper finish its cancels (up to [`CLOSE_WAIT`]), then join it. Starts
    /// that end later are cancelled by their guard's thread. Idempotent.
    pub fn shutdown(&self) {
        {
            let mut t = self.shared.table.lock();
            t.closed.get_or_insert_with(Instant::now);
        }
        self.shared.wake.notify_all();
        if let Some(k) = self.keeper.lock().take() {
            let _ = k.join();
        }
    }
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        let closed = {
            let mut t = self.shared.table.lock();
            if let Some(l) = t.latest.get_mut(&self.index).filter(|l| l.tag == self.tag) {
                l.live = false;
            }
            if t.given_up {
                return;
            }
            if t.closed.is_none() {
                t.ended.push(Chase {
                    tag: std::mem::take(&mut self.tag),
                    tries: 0,
                    next: Instant::now(),
                });
            }
            t.closed.is_some()
        };
        if closed {
            // The keeper is gone (or going): one round here, on the thread that reaped srun.
            let tags = [std::mem::take(&mut self.tag)];
            let _ = round(&self.shared, &[], &tags);
        } else {
            self.shared.wake.notify_all();
        }
    }
}

/// The keeper thread: look up step ids and chase ended starts until closed and done.
fn keep(shared: &Shared) {
    loop {
        let (resolve, chase) = {
            let mut t = shared.table.lock();
            loop {
                let now = Instant::now();
                if t.given_up || t.closed.is_some_and(|c| now >= c + CLOSE_WAIT) {
                    return;
                }
                let closing = t.closed.is_some();
                let resolve: Vec<String> = if closing {
                    Vec::new()
                } else {
                    t.latest
                        .values()
                        .filter(|l| l.live && l.step.is_none() && l.next <= now)
                        .map(|l| l.tag.clone())
                        .collect()
                };
                let chase: Vec<String> = t
                    .ended
                    .iter()
                    .filter(|c| c.next <= now)
                    .map(|c| c.tag.clone())
                    .collect();
                if !resolve.is_empty() || !chase.is_empty() {
                    break (resolve, chase);
                }
                if closing && t.ended.is_empty() {
                    return;
                }
                let next = t
                    .latest
                    .values()
                    .filter(|l| !closing && l.live && l.step.is_none())
                    .map(|l| l.next)
                    .chain(t.ended.iter().map(|c| c.next))
                    .chain(t.closed.map(|c| c + CLOSE_WAIT))
                    .min();
                match next {
                    Some(at) => {
                        shared.wake.wait_until(&mut t, at);
                    }
                    None => shared.wake.wait(&mut t),
                }
            }
        };
        let result = round(shared, &resolve, &chase);
        let mut t = shared.table.lock();
        let now = Instant::now();
        match result {
            Ok(found) => {
                for l in t.latest.values_mut() {
                    if !resolve.contains(&l.tag) {
                        continue;
                    }
                    l.step = found.step_of(&l.tag);
                    l.wait = (l.wait * 2).min(RESOLVE_MAX_WAIT);
                    l.next = now + l.wait;
                }
                let tool = &shared.tool;
                t.ended.retain_mut(|c| {
                    if !chase.contains(&c.tag) {
                        return true;
                    }
                    if !found.runs(&c.tag) {
                        return false;
                    }
                    c.tries += 1;
                    c.next = now + CHASE_WAIT;
                    if c.tries >= CHASE_TRIES {
                        log::warn!(target: "toolpool", "tool={tool} Slurm still runs {} after {CHASE_TRIES} cancels: giving up", c.tag);
                        return false;
                    }
                    true
                });
            }
            Err(Failure::NoClient(why)) => {
                log::warn!(target: "toolpool", "tool={} cannot run the Slurm clients, no step ids or cancels for this pool: {why}", shared.tool);
                t.given_up = true;
                t.ended.clear();
            }
            Err(Failure::Failed(why)) => {
                if std::mem::replace(&mut t.warned, true) {
                    log::debug!(target: "toolpool", "tool={} Slurm lookup failed: {why}", shared.tool);
                } else {
                    log::warn!(target: "toolpool", "tool={} Slurm lookup failed (later failures are logged at debug level): {why}", shared.tool);
                }
                for l in t.latest.values_mut() {
                    if resolve.contains(&l.tag) {
                        l.wait = (l.wait * 2).min(RESOLVE_MAX_WAIT);
                        l.next = now + l.wait;
                    }
                }
                let closing = t.closed.is_some();
                t.ended.retain_mut(|c| {
                    if !chase.contains(&c.tag) {
                        return true;
                    }
                    c.tries += 1;
                    c.next = now + CHASE_WAIT * c.tries;
                    // While shutting down a failing Slurm gets no second chance.
                    !closing && c.tries < CHASE_TRIES
                });
            }
        }
    }
}

/// What Slurm runs under some tags.
#[derive(Default)]
struct Found {
    /// (`JOB.STEP`, tag)
    steps: Vec<(String, String)>,
    /// (job id, tag) of jobs `srun` made that are not completing.
    jobs: Vec<(String, String)>,
    /// Jobs `srun` made that are completing: their steps are ending.
    completing: Vec<String>,
}

impl Found {
    fn step_of(&self, tag: &str) -> Option<String> {
        self.steps
            .iter()
            .find(|(_, t)| t == tag)
            .map(|(s, _)| s.clone())
    }

    /// Steps and jobs still running under `tag` (steps of completing jobs not counted).
    fn live(&self, tags: &[String]) -> (Vec<String>, Vec<String>) {
        let steps = self
            .steps
            .iter()
            .filter(|(s, t)| {
                tags.contains(t)
                    && !self
                        .completing
                        .iter()
                        .any(|j| s.split('.').next() == Some(j))
            })
            .map(|(s, _)| s.clone())
            .collect();
        let jobs = self
            .jobs
            .iter()
            .filter(|(_, t)| tags.contains(t))
            .map(|(j, _)| j.clone())
            .collect();
        (steps, jobs)
    }

    fn runs(&self, tag: &str) -> bool {
        let (s, j) = self.live(&[tag.to_string()]);
        !s.is_empty() || !j.is_empty()
    }
}

/// One round: look up `resolve` and `chase` (one `squeue` for the steps, one for the jobs
/// of ended starts outside an allocation), then cancel what still runs of `chase`: the
/// steps first (SIGKILL at once), then the jobs `srun` made.
fn round(
    shared: &Shared,
    resolve: &[String],
    chase: &[String],
) -> std::result::Result<Found, Failure> {
    let mut found = Found::default();
    let all: Vec<String> = resolve.iter().chain(chase).cloned().collect();
    for f in squeue(&all, true, "%i %j")? {
        if let [id, name] = &f[..] {
            found.steps.push((id.clone(), name.clone()));
        }
    }
    if shared.allocation.is_none() {
        for f in squeue(chase, false, "%i %j %T")? {
            match &f[..] {
                [id, _, state] if state == "COMPLETING" => found.completing.push(id.clone()),
                [id, name, _] => found.jobs.push((id.clone(), name.clone())),
                _ => {}
            }
        }
    }
    let (steps, jobs) = found.live(chase);
    for ids in [steps, jobs] {
        for part in ids.chunks(BATCH) {
            let mut argv = vec!["scancel".to_string()];
            argv.extend(part.iter().cloned());
            // A step or job that ended meanwhile makes scancel fail: the next look tells.
            if let Err(why) = run(&argv) {
                log::debug!(target: "toolpool", "tool={} {why}", shared.tool);
            }
        }
    }
    Ok(found)
}

/// Names (or ids) per `squeue` or `scancel` command: a list of thousands would make a very
/// long argv.
const BATCH: usize = 100;

/// The lines of `squeue --noheader --me [--steps] --name=TAGS --format=FORMAT`, split
/// into fields, for every tag of `tags`.
fn squeue(
    tags: &[String],
    steps: bool,
    format: &str,
) -> std::result::Result<Vec<Vec<String>>, Failure> {
    let mut out = Vec::new();
    for part in tags.chunks(BATCH) {
        let mut argv: Vec<String> = vec!["squeue".into(), "--noheader".into(), "--me".into()];
        if steps {
            argv.push("--steps".into());
        }
        argv.push(format!("--name={}", part.join(",")));
        argv.push(format!("--format={format}"));
        out.extend(
            run(&argv)?
                .lines()
                .map(|l| l.split_whitespace().map(String::from).collect()),
        );
    }
    Ok(out)
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

    #[test]
    fn completing_jobs_do_not_count() {
        let found = Found {
            steps: vec![("7.0".into(), "a".into()), ("8.0".into(), "b".into())],
            jobs: vec![("9".into(), "c".into())],
            completing: vec!["7".into()],
        };
        assert!(!found.runs("a"));
        assert!(found.runs("b") && found.runs("c"));
        assert_eq!(found.step_of("a").as_deref(), Some("7.0"));
    }
}
