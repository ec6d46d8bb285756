//! Process hygiene: signals, SIGPIPE, inherited fds. This binary behaves like a C host:
//! SIGPIPE has its default action (it kills the process) and the spawning thread has
//! signals blocked and ignored that the children must not inherit.

mod common;
use common::*;
use std::os::fd::AsRawFd;
use std::time::Duration;
use toolpool::Error;

fn like_a_c_host() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: setting dispositions to SIG_DFL/SIG_IGN installs no handler code.
    ONCE.call_once(|| unsafe {
        // The Rust runtime ignores SIGPIPE; a C or Go host does not.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    });
}

#[test]
fn children_start_with_no_blocked_or_ignored_signals() {
    like_a_c_host();
    // SAFETY: a zeroed sigset_t is valid input to sigemptyset; the set outlives the calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let own = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(
        !own.contains("SigBlk:\t0000000000000000"),
        "the test thread should block signals"
    );
    // awk (not a Rust or Python program, which set their own dispositions at start)
    // reports the state it was exec'd with.
    let pool = private(toolpool::ToolSpec::new([
        "awk",
        r#"/^Sig(Blk|Ign)/ { printf "%s ", $0 } END { print "" }"#,
        "/proc/self/status",
    ]));
    let line = pool.read_line(0, T).unwrap();
    assert_eq!(
        line.trim_end(),
        "SigBlk:\t0000000000000000 SigIgn:\t0000000000000000"
    );
}

#[test]
fn a_write_to_a_dead_child_does_not_kill_the_host() {
    like_a_c_host();
    let pool = private(tool(1, &[]));
    pool.send(0, "crash:1").unwrap();
    // Keep writing while it dies and after, from this thread (SIGPIPE at its default, not
    // blocked): no write raises SIGPIPE, and the death is reported.
    let mut dead = false;
    for _ in 0..2000 {
        match pool.send(0, &"z".repeat(1000)) {
            Ok(()) | Err(Error::QueueFull { .. }) => {}
            Err(Error::InstanceDead(_)) => {
                dead = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(dead, "the death was never reported");
    assert!(eventually(T, || pool.health().dead == 1));
    // One-shot runs write from our threads too.
    let spec = toolpool::ToolSpec {
        oneshot: Some(toolpool::Oneshot {
            command: vec!["true".into()],
            input: toolpool::OneshotInput::Stdin,
        }),
        disabled: true,
        ..tool(1, &[])
    };
    let p = private(spec);
    let big = "q".repeat(1 << 20); // more than a pipe holds; `true` never reads it
    for _ in 0..5 {
        assert_eq!(p.request(&big, T).unwrap().text, "");
    }
}

#[test]
fn children_inherit_only_stdio() {
    like_a_c_host();
    // An fd the host leaked without O_CLOEXEC (as C code often does).
    let f = std::fs::File::open("/proc/self/status").unwrap();
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on an fd owned by `f`, which is open for the whole block.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
    }
    // Several instances: a pool's start spawns through helpers with their own fd tables
    // (the fds go there over a socket); those must not leak into the children either.
    let pool = private(tool(4, &[]));
    for i in 0..4 {
        pool.send(i, "fds").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "0,1,2");
    }
    drop(f);
}

/// The documented limit of holding the stdin pipe's read end (src/pipe.rs): a tool that
/// closes its stdin and keeps running is not noticed at the write. Its request must end
/// as a timeout (no hang, no SIGPIPE in this C-like host), and a tool that then exits is
/// reported dead.
#[test]
fn a_tool_that_closes_its_stdin_gives_a_timeout_not_a_hang() {
    like_a_c_host();
    let pool = private(toolpool::ToolSpec {
        id: "closes-stdin".into(),
        limits: toolpool::Limits {
            queue_lines: 16,
            ..Default::default()
        },
        ..toolpool::ToolSpec::new(["sh", "-c", "exec 0<&-; sleep 30"])
    });
    let t0 = std::time::Instant::now();
    match pool.request("x", Duration::from_millis(300)) {
        Err(Error::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // The timed-out process was replaced (a late reply could be in its stdout). Lines for
    // the new one fill its pipe (nobody reads it), then the queue, then are refused:
    // `send` never blocks and never raises SIGPIPE.
    assert!(eventually(T, || pool.health().alive == 1));
    let line = "y".repeat(4096);
    let refused = (0..200).find(|_| match pool.send(0, &line) {
        Ok(()) => false,
        Err(Error::QueueFull { .. }) => true,
        Err(e) => panic!("{e}"),
    });
    // Bounded: 64 KiB of pipe (16 lines), the writer thread's batch in hand (up to 64 KiB
    // more) and 16 queued lines.
    let k = refused.expect("the queue never filled");
    assert!((16..=50).contains(&k), "refused after {k} lines");
    pool.shutdown(Duration::from_millis(100));
}

/// The signal mask of thread `tid` of this process (`SigBlk`), if it still runs.
fn blocked(tid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("SigBlk:"))?;
    u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
}

#[test]
fn the_librarys_threads_leave_signals_to_the_hosts_threads() {
    // Once a pool runs, every thread toolpool made for it (each instance's stderr drain,
    // the supervisor and a stdin writer when they are up) blocks SIGINT, SIGTERM and SIGPIPE, so a signal sent to
    // the process runs the host's handler on a host thread. (The spawn helper, alive only
    // while a spawn runs, has its own test next to it.)
    let pool = private(tool(2, &[]));
    pool.request("ping", Duration::from_secs(5)).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = task.file_name().to_string_lossy().to_string();
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        if !comm.starts_with("toolpool-") {
            continue;
        }
        if let Some(mask) = blocked(&tid) {
            let bit = |sig: i32| 1u64 << (sig - 1);
            let want = bit(libc::SIGINT) | bit(libc::SIGTERM) | bit(libc::SIGPIPE);
            assert_eq!(
                mask & want,
                want,
                "{comm} ({tid}) lets signals in: SigBlk {mask:x}"
            );
            seen.insert(comm.split('-').nth(1).unwrap_or_default().to_string());
        }
    }
    assert!(seen.contains("err"), "threads seen: {seen:?}");
    drop(pool);
}

/// Runs keep the same hygiene as pool children: empty signal mask and default
/// dispositions, only stdio inherited, and a write to a run that has died raises no
/// SIGPIPE in this C-like host.
#[test]
fn runs_start_clean_and_a_dead_run_raises_no_sigpipe() {
    like_a_c_host();
    let limiter = toolpool::Limiter::new(0);
    let opts = || toolpool::RunOptions {
        limiter: Some(std::sync::Arc::clone(&limiter)),
        cancel: None,
    };
    let out = toolpool::run_output_with(
        toolpool::RunSpec::new([
            "awk",
            r#"/^Sig(Blk|Ign)/ { printf "%s ", $0 } END { print "" }"#,
            "/proc/self/status",
        ]),
        T,
        &limiter,
    )
    .unwrap();
    assert_eq!(
        out.stdout_text().trim_end(),
        "SigBlk:\t0000000000000000 SigIgn:\t0000000000000000"
    );
    let leaked = std::fs::File::open("/proc/self/status").unwrap();
    // SAFETY: fcntl on an fd owned by `leaked`, open for the whole test.
    unsafe {
        let fd = leaked.as_raw_fd();
        libc::fcntl(
            fd,
            libc::F_SETFD,
            libc::fcntl(fd, libc::F_GETFD) & !libc::FD_CLOEXEC,
        );
    }
    let run = toolpool::Run::start_with(toolpool::RunSpec::new([testtool()]), opts()).unwrap();
    run.write_line("fds").unwrap();
    assert_eq!(
        run.read_line(toolpool::Stream::Stdout, T)
            .unwrap()
            .as_deref(),
        Some("0,1,2")
    );
    drop(leaked);
    run.write_line("crash:1").unwrap();
    assert_eq!(run.wait(T).unwrap(), toolpool::ExitInfo::Code(1));
    // Written after its death, from this thread: refused, and no SIGPIPE.
    let e = run.write_line(&"z".repeat(100_000)).unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e}");
    // A run that never reads a large input, from our threads.
    let out = toolpool::run_output_with(
        toolpool::RunSpec {
            input: Some("q".repeat(1 << 20)),
            ..toolpool::RunSpec::new(["true"])
        },
        T,
        &limiter,
    )
    .unwrap();
    assert_eq!(out.exit, toolpool::ExitInfo::Code(0));
}
