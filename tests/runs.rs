//! Runs and permits on real commands: output read while the command runs, timeouts that
//! kill the whole group, the limit shared with pools (waiting, failing at once), pids the
//! host registers, `kill_all` over all three kinds, dry runs, bounds, and no leaks.
//! Every test uses a limiter of its own, so the counts are its own.

mod common;
use common::*;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolpool::{
    run_output_with, CancelToken, Error, ExitInfo, Limiter, Pool, PoolOptions, ProcessKind, Run,
    RunDryRun, RunOptions, RunSpec, Stream, Wait,
};

fn sh(script: &str) -> RunSpec {
    RunSpec::new(["sh", "-c", script])
}

fn start(spec: RunSpec, limiter: &Arc<Limiter>) -> Run {
    Run::start_with(
        spec,
        RunOptions {
            limiter: Some(Arc::clone(limiter)),
            cancel: None,
        },
    )
    .expect("run starts")
}

/// A pool of one test-tool instance, counted under `limiter`.
fn one_instance_under(limiter: &Arc<Limiter>) -> Pool {
    Pool::with_options(
        tool(1, &[]),
        PoolOptions {
            limiter: Some(Arc::clone(limiter)),
            ..Default::default()
        },
    )
    .expect("pool starts")
}

fn line(run: &Run, stream: Stream) -> Option<String> {
    run.read_line(stream, T).expect("a line or the end")
}

#[test]
fn output_is_read_while_the_command_still_runs() {
    let limiter = Limiter::new(0);
    let run = start(sh("echo first; sleep 30; echo second"), &limiter);
    let t0 = Instant::now();
    assert_eq!(line(&run, Stream::Stdout).as_deref(), Some("first"));
    // The command sleeps 30 s after its first line: it cannot have ended yet.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(run.exit(), None);
    let st = limiter.status();
    assert_eq!(st.active_pids, vec![run.pid().unwrap()]);
    assert_eq!(st.processes[0].kind, ProcessKind::Run);
    assert_eq!(st.processes[0].name.as_deref(), Some("sh"));
    assert!(run.kill());
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Signal(libc::SIGKILL));
    assert_eq!(
        limiter.status().active_processes,
        0,
        "counted until its end"
    );
    assert_eq!(line(&run, Stream::Stdout), None);
    assert_eq!(line(&run, Stream::Stderr), None);
}

#[test]
fn a_run_is_killed_at_its_timeout_with_its_grandchildren() {
    let limiter = Limiter::new(0);
    let cutoff = ticks_now() + 1;
    let run = start(
        RunSpec {
            timeout_ms: Some(300),
            ..sh("sleep 60 & echo $!; wait")
        },
        &limiter,
    );
    let pgid = run.pid().unwrap();
    let grandchild: i32 = line(&run, Stream::Stdout).unwrap().parse().unwrap();
    let g = Seen::of(grandchild);
    assert!(g.alive());
    let t0 = Instant::now();
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Signal(libc::SIGKILL));
    assert!(run.timed_out());
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        eventually(T, || !g.alive() && !group_alive(pgid, cutoff)),
        "the grandchild survived"
    );
    assert!(run.status().timed_out);

    // run_output: the timeout of the call kills it the same way, and keeps what it wrote.
    let out = run_output_with(
        sh("echo started; sleep 60 & wait"),
        Duration::from_millis(300),
        &limiter,
    )
    .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit, ExitInfo::Signal(libc::SIGKILL));
    assert_eq!(out.stdout_text(), "started\n");
    assert_eq!(limiter.status().active_processes, 0);
}

#[test]
fn with_the_limit_full_a_run_waits_and_starts_when_a_pool_instance_stops() {
    let limiter = Limiter::new(1);
    let pool = one_instance_under(&limiter);
    assert!(!limiter.status().can_start_new);
    let l = Arc::clone(&limiter);
    let waiting = std::thread::spawn(move || {
        let run = start(
            RunSpec {
                slot_timeout_ms: 20_000,
                ..sh("echo started")
            },
            &l,
        );
        (Instant::now(), run.read_line(Stream::Stdout, T))
    });
    // The only slot is the instance's: the run cannot have started.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished());
    let stopped = Instant::now();
    pool.shutdown(Duration::from_millis(500));
    let (started, first) = waiting.join().unwrap();
    assert!(started >= stopped);
    assert_eq!(first.unwrap().as_deref(), Some("started"));
}

#[test]
fn slot_timeout_0_fails_at_once_naming_the_limit() {
    let limiter = Limiter::new(5);
    let runs: Vec<Run> = (0..5).map(|_| start(sh("sleep 30"), &limiter)).collect();
    let st = limiter.status();
    assert_eq!((st.active_processes, st.max_allowed), (5, 5));
    assert_eq!(st.utilization_percent, 100.0);
    assert!(st.warning.is_some() && !st.can_start_new);
    let t0 = Instant::now();
    let e = Run::start_with(
        RunSpec {
            slot_timeout_ms: 0,
            ..sh("echo never")
        },
        RunOptions {
            limiter: Some(Arc::clone(&limiter)),
            cancel: None,
        },
    )
    .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(e, Error::LimitReached { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("maximum concurrent processes reached: 5 of 5"),
        "{e}"
    );
    // A permit is taken the same way.
    let e = limiter.acquire(Duration::ZERO).unwrap_err();
    assert!(e.to_string().contains("5 of 5"), "{e}");
    // A cancel token ends a longer wait.
    let token = CancelToken::new();
    let (l, t) = (Arc::clone(&limiter), token.clone());
    let w =
        std::thread::spawn(move || l.acquire(Wait::new(Duration::from_secs(30)).with_cancel(&t)));
    std::thread::sleep(Duration::from_millis(100));
    token.cancel();
    assert!(matches!(w.join().unwrap(), Err(Error::Cancelled(_))));
    drop(runs);
    assert_eq!(limiter.status().active_processes, 0);
}

#[test]
fn a_registered_pid_holds_a_slot_until_it_exits() {
    let limiter = Limiter::new(1);
    let permit = limiter.acquire(T).unwrap();
    assert_eq!(limiter.status().reserved, 1);
    assert!(!limiter.status().can_start_new);
    let mut child = std::process::Command::new("sleep")
        .arg("0.3")
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    permit.register_pid(pid).unwrap();
    let st = limiter.status();
    assert_eq!((st.active_processes, st.reserved), (1, 0));
    assert_eq!(st.active_pids, vec![pid]);
    assert_eq!(st.processes[0].kind, ProcessKind::Registered);
    assert!(permit.holds_slot());
    // It exits (and stays a zombie: nobody has reaped it yet); the slot comes back.
    assert!(
        eventually(T, || limiter.status().active_processes == 0),
        "{:?}",
        limiter.status()
    );
    assert!(!permit.holds_slot());
    assert_eq!(permit.pid(), Some(pid));
    assert!(child.wait().unwrap().success());
    drop(permit);
    assert_eq!(limiter.status().active_processes, 0);

    // Dropping the permit gives the slot back while the process still runs.
    let p = limiter.acquire(T).unwrap();
    let mut long = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    p.register_pid(long.id() as i32).unwrap();
    assert_eq!(limiter.status().active_processes, 1);
    p.release();
    assert_eq!(limiter.status().active_processes, 0);
    long.kill().unwrap();
    long.wait().unwrap();
}

#[test]
fn register_pid_refuses_what_it_cannot_watch() {
    let limiter = Limiter::new(0);
    let p = limiter.acquire(T).unwrap();
    let me = std::process::id() as i32;
    for (pid, want) in [
        (0, "not a process id"),
        (-5, "not a process id"),
        (me, "is this process"),
        (i32::MAX, "no process has pid"),
    ] {
        let e = p.register_pid(pid).unwrap_err();
        assert!(
            matches!(e, Error::InvalidArgument(_)) && e.to_string().contains(want),
            "{pid}: {e}"
        );
    }
    let run = start(sh("sleep 30"), &limiter);
    let e = p.register_pid(run.pid().unwrap()).unwrap_err();
    assert!(e.to_string().contains("already counted"), "{e}");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    p.register_pid(child.id() as i32).unwrap();
    let e = p.register_pid(child.id() as i32).unwrap_err();
    assert!(e.to_string().contains("already holds pid"), "{e}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_all_ends_runs_registered_pids_and_pool_children() {
    let limiter = Limiter::new(0);
    let pool = one_instance_under(&limiter);
    let instance = pids(&pool)[0];
    let cutoff = ticks_now() + 1;
    let run = start(sh("sleep 60 & echo $!; wait"), &limiter);
    let run_grandchild = Seen::of(line(&run, Stream::Stdout).unwrap().parse().unwrap());
    // The host's own process, leading its own group, with a child in it.
    let permit = limiter.acquire(T).unwrap();
    let mut host = std::process::Command::new("sh")
        .args(["-c", "sleep 60 & echo $!; wait"])
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let host_pid = host.id() as i32;
    permit.register_pid(host_pid).unwrap();
    let mut first = String::new();
    std::io::BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let host_grandchild = Seen::of(first.trim().parse().unwrap());
    let kinds: Vec<ProcessKind> = limiter.status().processes.iter().map(|p| p.kind).collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    for k in [
        ProcessKind::Instance,
        ProcessKind::Run,
        ProcessKind::Registered,
    ] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }

    let report = limiter.kill_all();
    let mut killed = report.killed_pids.clone();
    killed.sort();
    let mut want = vec![instance, run.pid().unwrap(), host_pid];
    want.sort();
    assert_eq!(killed, want);
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Signal(libc::SIGKILL));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(host.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(eventually(T, || !run_grandchild.alive()
        && !host_grandchild.alive()
        && !group_alive(host_pid, cutoff)));
    assert!(eventually(T, || pool.status().instances[0].state
        == toolpool::State::Dead));
    assert!(eventually(T, || limiter.status().active_processes == 0));
    assert!(!permit.holds_slot());
}

#[test]
fn a_dry_run_starts_no_process() {
    // The limit is full: a dry run needs no slot.
    let limiter = Limiter::new(1);
    let _busy = start(sh("sleep 30"), &limiter);
    let spec = RunSpec {
        dry_run: Some(RunDryRun {
            stdout: vec!["one".into(), "two".into()],
            stderr: vec!["warn".into()],
            exit_code: 3,
            delay_ms: 200,
        }),
        slot_timeout_ms: 0,
        ..RunSpec::new(["/nonexistent/build-tool", "--all"])
    };
    let t0 = Instant::now();
    let run = start(spec.clone(), &limiter);
    assert_eq!(run.pid(), None);
    assert!(run.status().dry_run);
    assert_eq!(line(&run, Stream::Stdout).as_deref(), Some("one"));
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(line(&run, Stream::Stdout).as_deref(), Some("two"));
    assert_eq!(line(&run, Stream::Stdout), None);
    assert_eq!(line(&run, Stream::Stderr).as_deref(), Some("warn"));
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Code(3));
    assert_eq!(limiter.status().active_processes, 1);

    let out = run_output_with(spec.clone(), T, &limiter).unwrap();
    assert_eq!(
        (
            out.stdout_text().as_str(),
            out.stderr_text().as_str(),
            out.exit
        ),
        ("one\ntwo\n", "warn\n", ExitInfo::Code(3))
    );
    // Killed (or timed out) before its delay, it ends with the signal.
    let slow = start(
        RunSpec {
            timeout_ms: Some(100),
            dry_run: Some(RunDryRun {
                delay_ms: 30_000,
                ..Default::default()
            }),
            ..spec
        },
        &limiter,
    );
    assert_eq!(slow.wait(T).unwrap(), ExitInfo::Signal(libc::SIGKILL));
    assert!(slow.timed_out());
}

#[test]
fn run_output_collects_both_streams_with_input_and_caps() {
    let limiter = Limiter::new(0);
    let out = run_output_with(
        RunSpec {
            input: Some("hello\nworld".into()),
            ..sh("cat; echo oops >&2; exit 4")
        },
        T,
        &limiter,
    )
    .unwrap();
    assert_eq!(out.stdout_text(), "hello\nworld");
    assert_eq!(out.stderr_text(), "oops\n");
    assert_eq!(out.exit, ExitInfo::Code(4));
    assert!(!out.success() && !out.timed_out);
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["exit"], serde_json::json!({"code": 4}));
    assert_eq!(json["stdout"], "hello\nworld");

    let capped = run_output_with(
        RunSpec {
            max_output_bytes: 1000,
            ..sh("seq 1 100000; seq 1 1000 >&2")
        },
        T,
        &limiter,
    )
    .unwrap();
    assert_eq!(capped.stdout.len(), 1000);
    assert!(capped.stdout_text().starts_with("1\n2\n3\n"));
    let total: u64 = (1..=100000u64)
        .map(|n| n.to_string().len() as u64 + 1)
        .sum();
    assert_eq!(capped.stdout_dropped_bytes, total - 1000);
    assert_eq!(capped.stderr.len(), 1000);
    assert!(capped.success());

    // Nothing there to run: a clear error, as for a pool.
    let e = run_output_with(RunSpec::new(["no-such-tool-xyz"]), T, &limiter).unwrap_err();
    assert!(
        matches!(e, Error::Spawn(_)) && e.to_string().contains("run 'no-such-tool-xyz'"),
        "{e}"
    );
}

#[test]
fn stdout_read_late_loses_nothing_and_stderr_drops_its_oldest_lines() {
    let limiter = Limiter::new(0);
    // Far more than a pipe holds, on both streams.
    let run = start(
        RunSpec {
            queue_lines: 100,
            ..sh("seq 1 3000 >&2; seq 1 200000; echo done")
        },
        &limiter,
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut n = 0u64;
    let mut last = String::new();
    while let Some(l) = line(&run, Stream::Stdout) {
        n += 1;
        last = l;
    }
    assert_eq!((n, last.as_str()), (200_001, "done"));
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Code(0));
    let mut kept = Vec::new();
    while let Some(l) = line(&run, Stream::Stderr) {
        kept.push(l);
    }
    assert_eq!(kept.len(), 100);
    assert_eq!((kept[0].as_str(), kept[99].as_str()), ("2901", "3000"));
    let st = run.status();
    assert_eq!((st.stderr_lines, st.stderr_dropped), (3000, 2900));
    assert_eq!(st.stdout_lines, 200_001);
}

#[test]
fn stdin_lines_and_its_end() {
    let limiter = Limiter::new(0);
    let run = start(RunSpec::new(["cat"]), &limiter);
    run.write_line("ping").unwrap();
    assert_eq!(line(&run, Stream::Stdout).as_deref(), Some("ping"));
    assert!(matches!(
        run.write_line("a\nb"),
        Err(Error::InvalidArgument(_))
    ));
    let e = run
        .read_line(Stream::Stdout, Duration::from_millis(50))
        .unwrap_err();
    assert!(e.is_timeout(), "{e}");
    run.close_stdin();
    assert_eq!(line(&run, Stream::Stdout), None);
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Code(0));
    let e = run.write_line("late").unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e}");
    let e = run.wait(Duration::ZERO).unwrap();
    assert_eq!(e, ExitInfo::Code(0));
    let still = start(RunSpec::new(["cat"]), &limiter);
    still.close_stdin();
    assert!(matches!(
        still.write_line("x"),
        Err(Error::InvalidArgument(_))
    ));
    let token = CancelToken::new();
    let slow = start(sh("sleep 30"), &limiter);
    let t = token.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        t.cancel();
    });
    let e = slow.wait((Duration::from_secs(30), &token)).unwrap_err();
    assert!(e.is_cancelled(), "{e}");
    let e = slow.read_line(Stream::Stderr, (T, &token)).unwrap_err();
    assert!(e.is_cancelled(), "{e}");
}

#[test]
fn a_descendant_that_escaped_the_group_does_not_hold_the_readers() {
    let limiter = Limiter::new(0);
    let run = start(
        RunSpec {
            input: Some("escape:5\n".into()),
            ..RunSpec::new([testtool()])
        },
        &limiter,
    );
    let escaped: i32 = line(&run, Stream::Stdout).unwrap().parse().unwrap();
    let t0 = Instant::now();
    assert_eq!(line(&run, Stream::Stdout), None);
    assert_eq!(line(&run, Stream::Stderr), None);
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Code(0));
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // SAFETY: plain syscall on the sleep the test tool left behind.
    unsafe { libc::kill(escaped, libc::SIGKILL) };
}

#[test]
fn runs_leave_no_fd_thread_or_zombie_behind() {
    let limiter = Limiter::new(0);
    drop(start(sh("true"), &limiter)); // statics made on first use
    let _ = run_output_with(sh("true"), T, &limiter);
    let (fds, threads) = (fd_count(), thread_count());
    for _ in 0..5 {
        let run = start(sh("echo x; sleep 30"), &limiter);
        assert_eq!(line(&run, Stream::Stdout).as_deref(), Some("x"));
        drop(run); // killed, reaped, joined
        let out = run_output_with(sh("echo y"), T, &limiter).unwrap();
        assert_eq!(out.stdout_text(), "y\n");
        let p = limiter.acquire(T).unwrap();
        let mut c = std::process::Command::new("true").spawn().unwrap();
        p.register_pid(c.id() as i32).unwrap();
        c.wait().unwrap();
    }
    assert!(
        eventually(T, || fd_count() <= fds && thread_count() <= threads),
        "fds {} (from {fds}), threads {} (from {threads})",
        fd_count(),
        thread_count()
    );
    assert!(no_lasting_zombies());
    assert_eq!(limiter.status().active_processes, 0);
}
