//! Instances on a real one-node Slurm cluster (`"launcher": "srun"`), started by each test
//! in a private dir (tests/common/slurm.rs: Debian's slurm-wlm and munge, `make test`
//! installs them). The node is this machine (`localhost`), so a remote tool's pid is a
//! local one and its life can be checked in /proc. Every test runs against Slurm's
//! defaults where they matter (`KillWait=30`, no `InactiveLimit`, no time limit): a step
//! left behind would run for ever.

mod common;
#[path = "common/slurm.rs"]
mod slurm;

use common::{argv_of, eventually, reply_pid, testtool, Seen};
use slurm::Slurm;
use std::time::{Duration, Instant};
use toolpool::{Error, Launcher, Pool, Restart, RestartPolicy, State, ToolSpec};

const T: Duration = Duration::from_secs(20);
/// The ask: the remote tool and its job step are gone within 5 s, however the launcher
/// ended.
const CLEANUP: Duration = Duration::from_secs(5);

/// The tests of this file run one at a time: each starts its own cluster and sets
/// `SLURM_CONF` for the process.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `count` instances of the test tool through srun on `hosts` (empty: the allocation's).
fn srun_spec(hosts: &[&str], count: usize, args: &[&str]) -> ToolSpec {
    ToolSpec {
        id: "slurm-testtool".into(),
        ..common::remote_tool(Launcher::Srun, hosts, vec![], count, args)
    }
}

fn pool(spec: ToolSpec) -> toolpool::Result<Pool> {
    common::try_private(spec)
}

fn reply(pool: &Pool, index: usize, cmd: &str) -> String {
    pool.send(index, cmd).unwrap();
    pool.read_line(index, T).unwrap()
}

/// The step the tool of `index` runs in, as the tool itself sees it.
fn step_seen_by_tool(pool: &Pool, index: usize) -> String {
    format!(
        "{}.{}",
        reply(pool, index, "env:SLURM_JOB_ID"),
        reply(pool, index, "env:SLURM_STEP_ID")
    )
}

/// The step id in the status of `index`, waiting until toolpool has learned it.
fn status_step(pool: &Pool, index: usize) -> String {
    let mut id = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            id = pool.status().instances[index].step_id.clone();
            id.is_some()
        }),
        "no step id in the status of instance {index}: {:?}",
        pool.status().instances[index]
    );
    id.unwrap()
}

/// True once Slurm lists none of `steps`.
fn steps_gone(steps: &[String]) -> bool {
    let now = slurm::steps();
    steps.iter().all(|s| now.iter().all(|(id, _)| id != s))
}

#[test]
fn srun_pool_serves_each_instance_in_a_named_step_of_its_own() {
    let _serial = serial();
    let cluster = Slurm::start();
    eprintln!(
        "{}, node idle {:?} after the start",
        cluster.version(),
        cluster.up_after
    );
    let weird = r#"it's "quoted" $HOME `id`; a|b"#;
    let mut spec = srun_spec(&["localhost"], 3, &["--prefix", weird]);
    spec.env.insert("TP_VAR".into(), "two words; 'q' $x".into());
    spec.cwd = Some("/usr".into());
    let (fds0, threads0) = (common::fd_count(), common::thread_count());
    let t0 = Instant::now();
    let p = pool(spec).expect("pool starts through srun");
    eprintln!("3 instances through srun ready in {:?}", t0.elapsed());
    for i in 0..6 {
        assert_eq!(
            p.request(&format!("hello {i}"), T).unwrap().text,
            format!("{weird}hello {i}")
        );
    }
    assert_eq!(
        p.request("env:TP_VAR", T).unwrap().text,
        "two words; 'q' $x"
    );
    assert_eq!(p.request("cwd", T).unwrap().text, "/usr");
    // Each instance is a step of its own, named with a tag of its own, and the status
    // gives the step the tool itself runs in.
    let mut steps = Vec::new();
    let mut tags = Vec::new();
    for i in 0..3 {
        let step = status_step(&p, i);
        assert_eq!(step_seen_by_tool(&p, i), step, "instance {i}");
        let st = &p.status().instances[i];
        assert_eq!(st.host.as_deref(), Some("localhost"));
        let argv = argv_of(st.pid.unwrap());
        assert_eq!(argv[0], "srun");
        let tag = argv
            .iter()
            .find_map(|a| a.strip_prefix("--job-name="))
            .expect("srun names the step")
            .to_string();
        assert!(
            tag.starts_with(&format!("toolpool-slurm-testtool-{i}-")),
            "{tag}"
        );
        let listed = slurm::steps();
        assert!(
            listed.iter().any(|(id, name)| *id == step && *name == tag),
            "step {step} named {tag} in {listed:?}"
        );
        steps.push(step);
        tags.push(tag);
    }
    steps.sort();
    steps.dedup();
    tags.sort();
    tags.dedup();
    assert_eq!((steps.len(), tags.len()), (3, 3));
    let json = serde_json::to_value(p.status()).unwrap();
    assert!(json["instances"][0]["step_id"].is_string());
    // A grown pool: the new instance is a step of its own too.
    p.resize(4).unwrap();
    assert_eq!(
        p.request_sticky("grown", "x", T).unwrap().text,
        format!("{weird}x")
    );
    let grown = status_step(&p, 3);
    assert!(!steps.contains(&grown));
    assert_eq!(step_seen_by_tool(&p, 3), grown);
    steps.push(grown);
    // Shutdown with tools that ignore end of input and SIGTERM: tools and steps gone.
    let tools: Vec<Seen> = (0..4).map(|i| Seen::of(reply_pid(&p, i, "pid"))).collect();
    for i in 0..4 {
        p.send(i, "hang").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    p.shutdown(Duration::from_millis(500));
    let shutdown = t0.elapsed();
    assert!(
        eventually(CLEANUP, || tools.iter().all(|t| !t.alive())
            && steps_gone(&steps)),
        "left after shutdown: tools {:?}, steps {:?}",
        tools.iter().filter(|t| t.alive()).collect::<Vec<_>>(),
        slurm::steps()
    );
    eprintln!(
        "shutdown returned in {shutdown:?}; stubborn tools and their steps gone {:?} after it began",
        t0.elapsed()
    );
    drop(p);
    common::assert_fds_and_threads_back(fds0, threads0);
    assert!(common::no_lasting_zombies());
}

/// A SIGKILLed local srun: its tool (one that ignores end of input and SIGTERM) and its
/// step must be gone within 5 s, every time. `TOOLPOOL_SLURM_KILL_TRIES` sets the number
/// of tries (20 by default); the instances restart in between, as the policy says. Slurm
/// lists a step until its `slurmstepd` ends, about 2.2 s after the kill (it retries
/// telling the dead srun that the task exited), so a thread watches `squeue` while the
/// next tries go on.
#[test]
fn sigkilled_srun_never_leaves_its_step_running() {
    let _serial = serial();
    let cluster = Slurm::start();
    let tries: usize = std::env::var("TOOLPOOL_SLURM_KILL_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Enough instances that the next one is ready while the killed ones restart (Slurm
    // starts a new job once the killed one's job has completed, about 2.5 s later).
    const N: usize = 16;
    let mut spec = srun_spec(&["localhost"], N, &["--ignore-term"]);
    spec.restart = Restart {
        policy: RestartPolicy::Always,
        backoff_initial_ms: 50,
        max_restarts: 100_000,
        ..Restart::default()
    };
    let p = pool(spec).unwrap();
    // Killed steps: (step, when its srun was killed, how long until squeue lost it).
    type Killed = Vec<(String, Instant, Option<Duration>)>;
    let killed = std::sync::Arc::new(std::sync::Mutex::new(Killed::new()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (killed, done) = (killed.clone(), done.clone());
        let conf = cluster.conf.clone();
        std::thread::spawn(move || loop {
            let finished = done.load(std::sync::atomic::Ordering::Relaxed);
            let o = std::process::Command::new("squeue")
                .args(["-h", "--steps", "-o", "%i"])
                .env("SLURM_CONF", &conf)
                .output();
            // A cluster gone (a failed test tears it down) ends the watch; the check
            // after it reports what was not seen to go.
            let Some(o) = o.ok().filter(|o| o.status.success()) else {
                return;
            };
            let listed = String::from_utf8_lossy(&o.stdout).to_string();
            let mut k = killed.lock().unwrap();
            for (step, at, gone) in k.iter_mut() {
                if gone.is_none() && !listed.lines().any(|l| l.trim() == step) {
                    *gone = Some(at.elapsed());
                }
            }
            let open = k
                .iter()
                .any(|(_, at, g)| g.is_none() && at.elapsed() < CLEANUP);
            drop(k);
            if finished && !open {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        })
    };
    let mut tool_times = Vec::new();
    for k in 0..tries {
        let i = k % N;
        assert!(
            eventually(T, || p.status().instances[i].state == State::Ready),
            "instance {i} ready again: {:?}",
            p.status().instances[i]
        );
        let tool = Seen::of(reply_pid(&p, i, "pid"));
        let step = status_step(&p, i);
        assert_eq!(step_seen_by_tool(&p, i), step);
        p.send(i, "hang").unwrap(); // no longer reads: never sees an end of input
        let launcher = p.status().instances[i].pid.unwrap();
        assert_eq!(argv_of(launcher)[0], "srun");
        // SAFETY: plain syscall on our own child (the srun, not its group).
        unsafe { libc::kill(launcher, libc::SIGKILL) };
        let t0 = Instant::now();
        killed.lock().unwrap().push((step.clone(), t0, None));
        assert!(
            eventually(CLEANUP, || !tool.alive()),
            "try {k}: the tool of step {step} still runs {:?} after its srun was killed",
            t0.elapsed(),
        );
        tool_times.push(t0.elapsed());
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().expect("the squeue watcher");
    let k = killed.lock().unwrap();
    let late: Vec<_> = k
        .iter()
        .filter(|(_, _, g)| g.is_none_or(|g| g > CLEANUP))
        .collect();
    assert!(
        late.is_empty(),
        "steps still listed 5 s after their srun was killed: {late:?}"
    );
    let mut step_times: Vec<Duration> = k.iter().filter_map(|(_, _, g)| *g).collect();
    step_times.sort();
    tool_times.sort();
    eprintln!(
        "{tries} of {tries} SIGKILLed sruns left nothing: tool gone after {:?} (median), \
         {:?} (max); step unlisted after {:?} (median), {:?} (max)",
        tool_times[tries / 2],
        tool_times[tries - 1],
        step_times[tries / 2],
        step_times[tries - 1],
    );
}

/// Stopped (restart), recycled (max_requests) and killed (the limiter's kill_all)
/// instances: the tool and its step are gone within 5 s each time.
#[test]
fn stopped_recycled_and_killed_instances_leave_no_step() {
    let _serial = serial();
    let _cluster = Slurm::start();
    let mut spec = srun_spec(&["localhost"], 2, &["--ignore-term"]);
    spec.max_requests = Some(3);
    spec.shutdown.grace_ms = 300;
    let p = pool(spec).unwrap();
    // Stopped and started again: the old tool hangs (no end of input reaches it).
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    let step = status_step(&p, 0);
    p.send(0, "hang").unwrap();
    p.restart(0).unwrap();
    assert!(
        eventually(CLEANUP, || !tool.alive()
            && steps_gone(std::slice::from_ref(&step))),
        "restart left {step}: {:?}",
        slurm::steps()
    );
    let new_step = status_step(&p, 0);
    assert_ne!(new_step, step);
    assert_eq!(step_seen_by_tool(&p, 0), new_step);
    // Recycled after 3 requests (the graceful path: a new one first, then the old one
    // stops).
    let r = p.request_sticky("k", "pid", T).unwrap();
    let i = r.instance.expect("served by an instance");
    let tool = Seen::of(r.text.parse().unwrap());
    let step = status_step(&p, i);
    for _ in 0..3 {
        p.request_sticky("k", "x", T).unwrap();
    }
    assert!(
        eventually(CLEANUP, || !tool.alive()
            && steps_gone(std::slice::from_ref(&step))),
        "recycling left {step}: {:?}",
        slurm::steps()
    );
    assert!(p.status().instances[i].recycles >= 1);
    // Killed: every launcher's group gets SIGKILL (srun and its shepherd together).
    let tools: Vec<Seen> = (0..2).map(|i| Seen::of(reply_pid(&p, i, "pid"))).collect();
    let steps: Vec<String> = (0..2).map(|i| status_step(&p, i)).collect();
    for i in 0..2 {
        p.send(i, "hang").unwrap();
    }
    let report = p.limiter().unwrap().kill_all();
    assert_eq!(report.killed_count, 2, "{report:?}");
    assert!(
        eventually(CLEANUP, || tools.iter().all(|t| !t.alive())
            && steps_gone(&steps)),
        "kill_all left tools {:?} steps {:?}",
        tools.iter().filter(|t| t.alive()).collect::<Vec<_>>(),
        slurm::steps()
    );
}

/// A step that Slurm ends (scancel) is a dead instance: the policy restarts it, in a new
/// step.
#[test]
fn step_cancelled_by_slurm_is_a_dead_instance_and_restarts() {
    let _serial = serial();
    let cluster = Slurm::start();
    let mut spec = srun_spec(&["localhost"], 1, &[]);
    spec.restart = Restart {
        policy: RestartPolicy::Always,
        backoff_initial_ms: 50,
        ..Restart::default()
    };
    let p = pool(spec).unwrap();
    let step = status_step(&p, 0);
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    let out = cluster.run("scancel", &[&step]).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(eventually(CLEANUP, || !tool.alive()), "tool of {step} left");
    assert!(
        eventually(T, || p.status().instances[0].restarts >= 1
            && p.status().instances[0].state == State::Ready),
        "restarted: {:?}",
        p.status().instances[0]
    );
    assert!(p.status().instances[0].exit.is_some());
    let new_step = status_step(&p, 0);
    assert_ne!(new_step, step);
    assert_eq!(p.request("again", T).unwrap().text, "again");
}

/// Inside a real `salloc`: the test binary runs [`inside_an_allocation`] again under
/// `salloc -N1`, which passes it `SLURM_JOB_ID` and `SLURM_JOB_NODELIST`.
#[test]
fn instances_inside_an_allocation_are_steps_of_its_job() {
    let _serial = serial();
    let _cluster = Slurm::start();
    // Outside an allocation a spec without hosts says what is missing.
    let json = format!(
        r#"{{"command":["{}"],"remote":{{"launcher":"srun","per_host":2}}}}"#,
        testtool()
    );
    let spec = ToolSpec::from_json(&json).unwrap();
    assert_eq!(spec.count, 2);
    match pool(spec) {
        Err(Error::Config(m)) => {
            assert!(
                m.contains("remote.hosts") && m.contains("SLURM_JOB_NODELIST"),
                "{m}"
            )
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("salloc")
        .args(["-N1", "--job-name=toolpool-alloc-test", "--"])
        .arg(exe)
        .args(["--exact", "inside_an_allocation", "--include-ignored"])
        .args(["--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("salloc runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "under salloc:\n{text}");
    assert!(text.contains("INSIDE OK"), "under salloc:\n{text}");
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.contains("inside:"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        eventually(CLEANUP, || slurm::jobs().is_empty()),
        "the allocation ended with salloc: {:?}",
        slurm::jobs()
    );
}

/// Set by the test above for the run under `salloc`.
const INSIDE: &str = "TOOLPOOL_TEST_INSIDE_SALLOC";

/// Run under `salloc` by the test above, which checks its output (a run of the ignored
/// tests outside it returns at once).
#[test]
#[ignore = "runs inside salloc, started by instances_inside_an_allocation_are_steps_of_its_job"]
fn inside_an_allocation() {
    if std::env::var_os(INSIDE).is_none() {
        eprintln!("not under salloc: run by instances_inside_an_allocation_are_steps_of_its_job");
        return;
    }
    let job = std::env::var("SLURM_JOB_ID").expect("salloc sets SLURM_JOB_ID");
    // The cluster of the test that started salloc (its SLURM_CONF came along).
    let cluster_steps = slurm::steps;
    // No hosts: the allocation's node, two instances on it.
    let json = format!(
        r#"{{"id":"alloc-tool","command":["{}","--ignore-term","--ready","READY"],
            "startup":{{"ready_line":"READY","timeout_ms":20000}},
            "restart":{{"policy":"always","backoff_initial_ms":50}},
            "remote":{{"launcher":"srun","per_host":2}}}}"#,
        testtool()
    );
    let spec = ToolSpec::from_json(&json).unwrap();
    let p = pool(spec).expect("pool starts inside the allocation");
    let st = p.status();
    assert_eq!(st.instances.len(), 2);
    assert_eq!(st.hosts.len(), 1);
    assert_eq!(st.hosts[0].host, "localhost");
    let mut steps = Vec::new();
    for i in 0..2 {
        let step = status_step(&p, i);
        assert_eq!(step_seen_by_tool(&p, i), step);
        assert_eq!(
            step.split('.').next(),
            Some(job.as_str()),
            "a step of job {job}"
        );
        let argv = argv_of(p.status().instances[i].pid.unwrap());
        for want in [format!("--jobid={job}"), "--overlap".into()] {
            assert!(argv.contains(&want), "{want} in {argv:?}");
        }
        steps.push(step);
    }
    eprintln!("inside: job {job}, steps {steps:?}");
    // A SIGKILLed srun: its step goes, the allocation stays, the instance comes back.
    let tool = Seen::of(reply_pid(&p, 0, "pid"));
    p.send(0, "hang").unwrap();
    let launcher = p.status().instances[0].pid.unwrap();
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(launcher, libc::SIGKILL) };
    let t0 = Instant::now();
    assert!(
        eventually(CLEANUP, || !tool.alive()
            && cluster_steps().iter().all(|(id, _)| *id != steps[0])),
        "step {} left: {:?}",
        steps[0],
        cluster_steps()
    );
    eprintln!(
        "inside: step {} gone {:?} after its srun was killed",
        steps[0],
        t0.elapsed()
    );
    assert!(
        eventually(T, || p.status().instances[0].state == State::Ready),
        "{:?}",
        p.status().instances[0]
    );
    let again = status_step(&p, 0);
    assert_ne!(again, steps[0]);
    assert_eq!(again.split('.').next(), Some(job.as_str()));
    // Shutdown: every step of the pool goes, the allocation does not.
    let tools: Vec<Seen> = (0..2).map(|i| Seen::of(reply_pid(&p, i, "pid"))).collect();
    let ours: Vec<String> = (0..2).map(|i| status_step(&p, i)).collect();
    for i in 0..2 {
        p.send(i, "hang").unwrap();
    }
    p.shutdown(Duration::from_millis(300));
    assert!(
        eventually(CLEANUP, || tools.iter().all(|t| !t.alive())
            && cluster_steps().iter().all(|(id, _)| !ours.contains(id))),
        "after shutdown: {:?}",
        cluster_steps()
    );
    let alloc: Vec<_> = slurm::jobs().into_iter().filter(|j| j.0 == job).collect();
    assert_eq!(alloc.len(), 1);
    assert_eq!(alloc[0].2, "RUNNING", "the allocation runs on: {alloc:?}");
    println!("INSIDE OK");
}
