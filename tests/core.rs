//! The core pool against real processes: the test tool and programs on the machine.

mod common;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolpool::{Error, ExitInfo, Pool, Registry, State, ToolSpec};

#[test]
fn pool_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Pool>();
    check::<toolpool::Lease>();
    check::<toolpool::Pools>();
}

#[test]
fn three_instances_work_in_parallel() {
    let pool = private(tool(3, &[]));
    let t = Instant::now();
    for i in 0..3 {
        pool.send(i, &format!("delay:1000:done {i}")).unwrap();
    }
    for i in 0..3 {
        assert_eq!(pool.read_line(i, T).unwrap(), format!("done {i}"));
    }
    // In series it would take 3000 ms; in parallel about 1000 (slack for a loaded host).
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    let pids = pids(&pool);
    assert_eq!(pids.len(), 3);
    assert!(pids[0] != pids[1] && pids[1] != pids[2]);
}

#[test]
fn eight_threads_lose_no_line_and_keep_order() {
    let pool = Arc::new(private(tool(3, &[])));
    const PER: usize = 300;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                for seq in 0..PER {
                    let line = format!("t{t} {seq}");
                    loop {
                        match pool.send(t % 3, &line) {
                            Ok(()) => break,
                            Err(Error::QueueFull { .. }) => {
                                std::thread::sleep(Duration::from_millis(1))
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let expected = (0..8).filter(|t| t % 3 == i).count() * PER;
                (0..expected)
                    .map(|_| pool.read_line(i, T).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    for (i, r) in readers.into_iter().enumerate() {
        let lines = r.join().unwrap();
        for t in (0..8).filter(|t| t % 3 == i) {
            let seqs: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("t{t} ")))
                .map(|s| s.parse().unwrap())
                .collect();
            assert_eq!(
                seqs,
                (0..PER).collect::<Vec<_>>(),
                "thread {t} on instance {i}"
            );
        }
        assert!(matches!(
            pool.read_line(i, Duration::from_millis(50)),
            Err(Error::Timeout { .. })
        ));
    }
    let st = pool.status();
    let sent: u64 = st.instances.iter().map(|s| s.lines_sent).sum();
    assert_eq!(sent, 8 * PER as u64);
}

#[test]
fn read_timeout_returns_on_time() {
    let pool = private(tool(1, &[]));
    pool.send(0, "silent").unwrap();
    for ms in [0u64, 100, 300] {
        let t = Instant::now();
        let e = pool.read_line(0, Duration::from_millis(ms)).unwrap_err();
        let took = t.elapsed();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(took >= Duration::from_millis(ms), "{took:?}");
        assert!(took < Duration::from_millis(ms + 150), "{took:?}");
    }
    let e = pool
        .read_stderr_line(0, Duration::from_millis(50))
        .unwrap_err();
    assert!(e.to_string().contains("stderr of instance 0"), "{e}");
}

#[test]
fn crashed_instance_is_dead_with_exit_status_and_restarts() {
    let pool = private(tool(2, &[]));
    let old_pid = pool.status().instances[1].pid.unwrap();
    pool.send(1, "crash:7").unwrap();
    assert!(eventually(T, || pool.health().dead == 1));
    // Dead as soon as its stdout closed; the exit status once the stderr drainer (its
    // own thread, a moment behind) has reaped it.
    assert!(eventually(T, || {
        let s = &pool.status().instances[1];
        s.exit.is_some() && !s.stderr_tail.is_empty()
    }));
    let h = pool.health();
    assert_eq!((h.total, h.alive, h.dead), (2, 1, 1));
    let s = &pool.status().instances[1];
    assert_eq!(s.state, State::Dead);
    assert_eq!(s.exit, Some(ExitInfo::Code(7)));
    assert_has_line(&s.stderr_tail, "crash requested with code 7");
    match pool.send(1, "x") {
        Err(Error::InstanceDead(d)) => {
            assert_eq!(d.index, 1);
            assert_eq!(d.exit, Some(ExitInfo::Code(7)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(pool.read_line(1, T), Err(Error::InstanceDead(_))));
    // A death by signal is reported as such.
    pool.send(0, "kill:9").unwrap();
    assert!(eventually(T, || pool.status().instances[0].exit
        == Some(ExitInfo::Signal(9))));

    pool.restart(1).unwrap();
    let s = &pool.status().instances[1];
    assert_eq!(s.state, State::Ready);
    assert_eq!(s.restarts, 1);
    assert_ne!(s.pid.unwrap(), old_pid);
    pool.send(1, "again").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "again");
    assert!(no_lasting_zombies());
}

#[test]
fn shutdown_kills_a_sigterm_ignoring_child_and_its_grandchild() {
    let pool = private(tool(2, &["--ignore-term"]));
    pool.send(0, "grandchild").unwrap();
    let grandchild = Seen::of(pool.read_line(0, T).unwrap().parse().unwrap());
    let pgids = pids(&pool);
    assert!(grandchild.alive());
    let grace = Duration::from_millis(500);
    let t = Instant::now();
    pool.shutdown(grace);
    let cutoff = ticks_now();
    assert!(
        t.elapsed() < grace + Duration::from_secs(1),
        "{:?}",
        t.elapsed()
    );
    // SIGKILL has been sent to every group; the kernel finishes a grandchild (which is
    // not ours to reap) a moment later.
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || !grandchild.alive()),
        "grandchild {grandchild:?} survived"
    );
    for g in pgids {
        assert!(
            eventually(Duration::from_secs(3), || !group_alive(g, cutoff)),
            "group {g} survived"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // Idempotent, and every call after it says so.
    pool.shutdown(grace);
    assert!(matches!(pool.send(0, "x"), Err(Error::ShutDown(_))));
    assert!(matches!(pool.read_line(0, T), Err(Error::ShutDown(_))));
    assert!(matches!(pool.restart(0), Err(Error::ShutDown(_))));
    assert!(matches!(pool.request("x", T), Err(Error::ShutDown(_))));
    assert_eq!(pool.health().alive, 0);
    assert!(no_lasting_zombies());
}

#[test]
fn a_grandchild_holding_the_pipes_dies_with_a_crashed_child() {
    let pool = private(tool(1, &[]));
    pool.send(0, "grandchild").unwrap();
    let grandchild = Seen::of(pool.read_line(0, T).unwrap().parse().unwrap());
    pool.send(0, "crash:1").unwrap();
    assert!(
        eventually(T, || pool.health().dead == 1),
        "the reader never saw EOF"
    );
    assert!(eventually(T, || !grandchild.alive()));
}

#[test]
fn drop_stops_every_child() {
    let pool = private(tool(3, &["--ignore-term"]));
    let pgids = pids(&pool);
    drop(pool);
    let cutoff = ticks_now();
    for g in pgids {
        assert!(!group_alive(g, cutoff));
    }
}

#[test]
fn bad_inputs_get_distinct_errors() {
    let pool = private(tool(2, &[]));
    assert!(
        matches!(pool.send(0, "two\nlines"), Err(Error::InvalidArgument(m)) if m.contains("newline"))
    );
    match pool.send(5, "x") {
        Err(Error::IndexOutOfRange {
            index: 5, count: 2, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        pool.read_line(2, T),
        Err(Error::IndexOutOfRange { .. })
    ));
    assert!(matches!(
        pool.restart(9),
        Err(Error::IndexOutOfRange { .. })
    ));

    // Unknown tool names it and the known ids.
    let reg = Registry::from_json(
        r#"{"tools": {"cat": {"command": ["cat"]}, "bc": {"command": ["bc"]}}}"#,
    )
    .unwrap();
    let e = Pool::new("nope", 1, &reg).unwrap_err();
    assert!(matches!(e, Error::UnknownTool { .. }));
    let m = e.to_string();
    assert!(m.contains("'nope'") && m.contains("bc, cat"), "{m}");

    // Missing and non-executable binaries name the path.
    let e = Pool::from_spec(ToolSpec::new(["/no/such/tool"])).unwrap_err();
    assert!(
        matches!(e, Error::Spawn(_)) && e.to_string().contains("/no/such/tool"),
        "{e}"
    );
    let noexec = std::env::temp_dir().join(format!("toolpool-noexec-{}", std::process::id()));
    std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
    let noexec = noexec.to_str().unwrap().to_string();
    let e = Pool::from_spec(ToolSpec::new([noexec.clone()])).unwrap_err();
    assert!(
        e.to_string().contains(&noexec) && e.to_string().contains("permission"),
        "{e}"
    );
    std::fs::remove_file(&noexec).unwrap();
    let e = Pool::from_spec(ToolSpec::new(["no-such-tool-in-path"])).unwrap_err();
    assert!(e.to_string().contains("no-such-tool-in-path"), "{e}");
    let e = Pool::from_spec(ToolSpec {
        cwd: Some("/no/such/dir".into()),
        ..ToolSpec::new(["cat"])
    })
    .unwrap_err();
    assert!(e.to_string().contains("/no/such/dir"), "{e}");

    // Empty argv and count 0 are spec errors.
    assert!(
        matches!(Pool::from_spec(ToolSpec::new(Vec::<String>::new())), Err(Error::Config(m)) if m.contains("command"))
    );
    assert!(
        matches!(Pool::from_spec(ToolSpec { count: 0, ..ToolSpec::new(["cat"]) }), Err(Error::Config(m)) if m.contains("count"))
    );
}

#[test]
fn full_stdin_queue_is_an_error_not_a_block() {
    let mut spec = tool(1, &[]);
    spec.limits.queue_lines = 4;
    let pool = private(spec);
    pool.send(0, "hang").unwrap();
    let big = "y".repeat(200_000);
    let t = Instant::now();
    let mut full = None;
    for k in 0..50 {
        match pool.send(0, &big) {
            Ok(()) => {}
            Err(e) => {
                full = Some((k, e));
                break;
            }
        }
    }
    let (k, e) = full.expect("the queue never filled");
    assert!(matches!(e, Error::QueueFull { capacity: 4, .. }), "{e}");
    assert!(k <= 6, "{k} sends before full");
    assert!(t.elapsed() < Duration::from_secs(2));
    // The pool still shuts down although the writer is stuck on the child.
    let t = Instant::now();
    pool.shutdown(Duration::from_millis(300));
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn invalid_utf8_is_lossy_as_string_and_exact_as_bytes() {
    let pool = private(tool(1, &[]));
    pool.send(0, "badutf8").unwrap();
    pool.send(0, "badutf8").unwrap();
    assert_eq!(
        pool.read_line_bytes(0, T).unwrap(),
        b"bad \xff\xfe\xc3 bytes"
    );
    assert_eq!(
        pool.read_line(0, T).unwrap(),
        "bad \u{fffd}\u{fffd}\u{fffd} bytes"
    );
    // Bytes in are passed through exactly too.
    pool.send_bytes(0, b"raw \xff in").unwrap();
    assert_eq!(pool.read_line_bytes(0, T).unwrap(), b"raw \xff in");
}

#[test]
fn long_lines_are_cut_into_counted_pieces() {
    let mut spec = tool(1, &[]);
    spec.limits.max_line_bytes = 1000;
    let pool = private(spec);
    pool.send(0, "hugenl:3500").unwrap();
    let sizes: Vec<usize> = (0..4)
        .map(|_| pool.read_line_bytes(0, T).unwrap().len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 1000, 500]);
    assert_eq!(pool.status().instances[0].lines_split, 3);
    // A huge line with no newline at all is delivered in pieces, never held whole.
    pool.send(0, "huge:10000").unwrap();
    for _ in 0..10 {
        assert_eq!(pool.read_line_bytes(0, T).unwrap().len(), 1000);
    }
    pool.send(0, "after").unwrap();
    // The unterminated rest joined the next line: exactly the bytes, in order.
    assert_eq!(pool.read_line(0, T).unwrap(), "after");
}

#[test]
fn stderr_is_always_drained_and_its_tail_kept() {
    let pool = private(tool(1, &["--stderr-flood", "100000"]));
    pool.send(0, "still here").unwrap();
    assert_eq!(
        pool.read_line(0, Duration::from_secs(10)).unwrap(),
        "still here"
    );
    // The stderr reader drains on its own thread: the last lines may still be in flight.
    assert!(eventually(T, || pool.status().instances[0].stderr_lines == 100_000));
    let s = &pool.status().instances[0];
    assert!(s.stderr_dropped > 0);
    assert_eq!(s.stderr_tail.last().unwrap(), "stderr flood line 99999");
    assert_eq!(s.stderr_tail.len(), 20);
    // What is kept in the queue is the newest, in order.
    let first = pool.read_stderr_line(0, T).unwrap();
    let second = pool.read_stderr_line(0, T).unwrap();
    let n = |s: &str| s.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(n(&second), n(&first) + 1);
}

#[test]
fn ready_line_gates_readiness_and_startup_output_is_not_delivered() {
    let mut spec = tool(
        3,
        &[
            "--start-delay-ms",
            "300",
            "--banner",
            "2",
            "--ready",
            "READY",
        ],
    );
    spec.startup.ready_line = Some("READY".into());
    let pool = private(spec);
    // Ready once the line is seen: every instance ready at return.
    assert_eq!(pool.health().ready, 3);
    pool.send(2, "first").unwrap();
    assert_eq!(pool.read_line(2, T).unwrap(), "first");

    let mut spec = tool(2, &["--start-delay-ms", "2000", "--ready", "READY"]);
    spec.startup.ready_line = Some("READY".into());
    spec.startup.timeout_ms = 300;
    let t = Instant::now();
    let e = Pool::from_spec(spec).unwrap_err();
    assert!(
        matches!(e, Error::Spawn(_)) && e.to_string().contains("ready line 'READY'"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));

    let mut spec = tool(1, &["--exit-now", "4"]);
    spec.startup.ready_line = Some("READY".into());
    let e = Pool::from_spec(spec).unwrap_err();
    assert!(e.to_string().contains("before the ready line"), "{e}");
}

#[test]
fn env_env_clear_and_cwd_reach_the_child() {
    let mut spec = tool(1, &[]);
    spec.env.insert("TOOLPOOL_TEST_VAR".into(), "v1".into());
    spec.cwd = Some("/tmp".into());
    let pool = private(spec.clone());
    pool.send(0, "env:TOOLPOOL_TEST_VAR").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "v1");
    pool.send(0, "cwd").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "/tmp");
    pool.send(0, "env:HOME").unwrap();
    assert_ne!(pool.read_line(0, T).unwrap(), "<unset>");
    spec.env_clear = true;
    let pool = private(spec);
    pool.send(0, "env:HOME").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "<unset>");
    pool.send(0, "env:TOOLPOOL_TEST_VAR").unwrap();
    assert_eq!(pool.read_line(0, T).unwrap(), "v1");
}

#[test]
fn real_programs_cat_python_bc_sqlite() {
    let cat = private(ToolSpec {
        count: 3,
        ..ToolSpec::new(["cat"])
    });
    for i in 0..3 {
        cat.send(i, &format!("meow {i}")).unwrap();
    }
    for i in 0..3 {
        assert_eq!(cat.read_line(i, T).unwrap(), format!("meow {i}"));
    }
    let py = private(ToolSpec::new([
        "python3",
        "-u",
        "-c",
        "import sys\nfor l in sys.stdin: print(l.strip()[::-1])",
    ]));
    py.send(0, "toolpool").unwrap();
    assert_eq!(py.read_line(0, T).unwrap(), "looploot");

    let bc = private(ToolSpec {
        count: 2,
        ..ToolSpec::new(["bc", "-q"])
    });
    bc.send(1, "2^64").unwrap();
    assert_eq!(bc.read_line(1, T).unwrap(), "18446744073709551616");
    assert_eq!(bc.request("7*6", T).unwrap().text, "42");

    let sq = private(ToolSpec::new(["sqlite3", "-batch", ":memory:"]));
    for line in ["create table t(x);", "insert into t values (1),(2),(39);"] {
        sq.send(0, line).unwrap();
    }
    sq.send(0, "select sum(x) from t;").unwrap();
    assert_eq!(sq.read_line(0, T).unwrap(), "42");
    sq.send(0, "select nosuchcolumn from t;").unwrap();
    let err = sq.read_stderr_line(0, T).unwrap();
    assert!(err.contains("no such column"), "{err}");
}

#[test]
fn a_descendant_that_escaped_the_group_does_not_hang_shutdown() {
    let pool = private(tool(1, &[]));
    pool.send(0, "escape:30").unwrap();
    let escaped = Seen::of(pool.read_line(0, T).unwrap().parse().unwrap());
    let before = toolpool::leaked_threads();
    let t = Instant::now();
    pool.shutdown(Duration::from_millis(200));
    let took = t.elapsed();
    // It holds stderr open: the stderr drainer is left behind (stdout has no thread).
    assert!(
        took < Duration::from_millis(200) + toolpool::STREAM_JOIN_WAIT + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(toolpool::leaked_threads() - before, 1);
    assert!(escaped.alive(), "beyond the group kill, as documented");
    // SAFETY: sending a signal to a pid; no memory is involved.
    unsafe { libc::kill(escaped.pid, libc::SIGKILL) };
}

#[test]
fn a_flood_with_a_small_queue_loses_nothing() {
    let mut spec = tool(1, &[]);
    spec.limits.queue_lines = 16;
    let pool = private(spec);
    pool.send(0, "flood:20000").unwrap();
    for k in 0..20000 {
        assert_eq!(pool.read_line(0, T).unwrap(), format!("flood {k}"));
    }
    // status() takes in what is in the pipe, but never more than the queue holds (16).
    pool.send(0, "flood:100").unwrap();
    assert!(eventually(T, || pool.status().instances[0].lines_received == 20016));
    for _ in 0..5 {
        assert_eq!(
            pool.status().instances[0].lines_received,
            20016,
            "capped at 16"
        );
    }
    for k in 0..100 {
        assert_eq!(pool.read_line(0, T).unwrap(), format!("flood {k}"));
    }
    assert_eq!(pool.status().instances[0].lines_received, 20100);
}

#[test]
fn huge_timeouts_are_forever_not_a_panic() {
    let pool = private(tool(1, &[]));
    pool.send(0, "x").unwrap();
    assert_eq!(pool.read_line(0, Duration::MAX).unwrap(), "x");
    assert_eq!(pool.request("y", Duration::MAX).unwrap().text, "y");
    let (i, l) = {
        pool.send(0, "z").unwrap();
        pool.read_any(Duration::MAX).unwrap()
    };
    assert_eq!((i, l.as_str()), (0, "z"));
    pool.shutdown(Duration::MAX); // the child exits on EOF at once
    let mut spec = tool(1, &[]);
    spec.startup.timeout_ms = u64::MAX;
    let e = Pool::from_spec(spec).unwrap_err();
    assert!(e.to_string().contains("startup.timeout_ms"), "{e}");
}

#[test]
fn a_restarting_instance_shows_as_starting_with_its_new_pid() {
    let mut spec = tool(1, &["--start-delay-ms", "600", "--ready", "READY"]);
    spec.startup.ready_line = Some("READY".into());
    let pool = std::sync::Arc::new(private(spec));
    let old = pids(&pool)[0];
    let p = std::sync::Arc::clone(&pool);
    let restarting = std::thread::spawn(move || p.restart(0));
    assert!(eventually(Duration::from_millis(500), || {
        let s = &pool.status().instances[0];
        s.state == State::Starting && s.pid.is_some_and(|p| p != old)
    }));
    // Not routed to until ready: a request waits for it.
    assert_eq!(
        pool.request("after restart", T).unwrap().text,
        "after restart"
    );
    restarting.join().unwrap().unwrap();
    assert_eq!(pool.status().instances[0].state, State::Ready);
}
