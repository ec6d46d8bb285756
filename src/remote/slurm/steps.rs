//! The keeper of an `srun` pool's steps (see [`super`]): per instance the tag of its
//! latest start and, once learned, its step id; a thread that learns the ids and cancels
//! what Slurm still runs under the tag of a start whose `srun` has ended.

use super::{new_tag, run, Failure};
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first look for a new start's step id, after its `srun` started.
pub const RESOLVE_FIRST_WAIT: Duration = Duration::from_millis(100);
/// The longest wait between two looks for a step id (the wait doubles from
/// [`RESOLVE_FIRST_WAIT`] while the job is pending).
pub const RESOLVE_MAX_WAIT: Duration = Duration::from_secs(10);
/// How often the keeper looks for (and cancels) what is left of an ended start before it
/// gives up with a warning in the log (about 20 s after the first look).
pub const CHASE_TRIES: u32 = 8;
/// The wait before the second look at an ended start; it doubles from look to look, up
/// to [`CHASE_MAX_WAIT`]. (Slurm lists a step whose `srun` was killed for about 2.2 s after
/// its processes are gone: its `slurmstepd` tries to tell the dead `srun`.)
pub const CHASE_WAIT: Duration = Duration::from_millis(250);
/// The longest wait between two looks at an ended start.
pub const CHASE_MAX_WAIT: Duration = Duration::from_secs(4);
/// How long a pool's shutdown waits for the keeper's last cancels.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

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

/// The Slurm steps of one pool and the thread that keeps them (see [`super`]).
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
                let closing = t.closed.is_some();
                t.ended.retain_mut(|c| {
                    if !chase.contains(&c.tag) {
                        return true;
                    }
                    // Gone at two looks in a row (a job that a dying srun had asked for
                    // may show up just after the first); or, while shutting down,
                    // cancelled in this round: Slurm does the rest, the pool's shutdown
                    // need not wait for it.
                    let gone = !found.runs(&c.tag);
                    if closing || (gone && c.tries > 0) {
                        return false;
                    }
                    c.next = now + (CHASE_WAIT * (1 << c.tries.min(8))).min(CHASE_MAX_WAIT);
                    c.tries += 1;
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
                    c.next = now + (CHASE_WAIT * (1 << c.tries.min(8))).min(CHASE_MAX_WAIT);
                    c.tries += 1;
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
