//! A kernel or sandbox without `pidfd_open`: a seccomp filter makes it fail with ENOSYS
//! for this whole test process, and pools still reap, report and restart their children,
//! through the fallback (a waiter thread per child that wakes the stderr drainer); a
//! permit still watches and kills a registered child.
//! Alone in its binary: the filter cannot be removed, and the counts must be its own.

mod common;
use common::*;
use std::time::Duration;
use toolpool::{Error, ExitInfo};

/// Make `pidfd_open` fail with ENOSYS in every thread of this process, from now on.
fn refuse_pidfd_open() {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut filter = [
        op(LD_W_ABS, 0, 0, 0), // the syscall number (seccomp_data.nr)
        op(JEQ_K, 0, 1, libc::SYS_pidfd_open as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: prctl and seccomp with a valid filter program that outlives the calls.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        let r = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_TSYNC,
            &prog as *const libc::sock_fprog,
        );
        assert_eq!(r, 0, "seccomp: {}", std::io::Error::last_os_error());
        let fd = libc::syscall(libc::SYS_pidfd_open, std::process::id(), 0);
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((fd, errno), (-1, Some(libc::ENOSYS)));
    }
}

#[test]
fn without_pidfd_open_children_are_still_reaped_reported_and_restarted() {
    refuse_pidfd_open();
    drop(private(tool(1, &[]))); // lazily created statics counted in the baseline
    let (fds, threads) = (fd_count(), thread_count());
    let n = 3;
    let mut spec = tool(n, &[]);
    spec.restart = toolpool::Restart {
        policy: toolpool::RestartPolicy::OnFailure,
        backoff_initial_ms: 10,
        ..Default::default()
    };
    let pool = private(spec);
    // Two threads per instance here (the stderr drainer and a waiter) plus the supervisor.
    assert!(
        eventually(Duration::from_secs(2), || thread_count()
            == threads + 2 * n + 1),
        "{} threads for {n} instances (from {threads})",
        thread_count()
    );
    for i in 0..n {
        pool.send(i, "ping").unwrap();
        assert_eq!(pool.read_line(i, T).unwrap(), "ping");
    }
    let old = pool.status().instances[1].pid.unwrap();
    pool.send(1, "crash:7").unwrap();
    // Reaped, with its status and the stderr line it wrote before it died.
    match pool.read_line(1, T) {
        Err(Error::InstanceDead(d)) => {
            assert_eq!(d.exit, Some(ExitInfo::Code(7)));
            assert_has_line(&d.stderr_tail, "crash requested with code 7");
        }
        other => panic!("{other:?}"),
    }
    // Reported: the supervisor restarts it.
    assert!(eventually(T, || {
        let s = &pool.status().instances[1];
        s.restarts == 1 && s.pid.is_some_and(|p| p != old)
    }));
    pool.send(1, "again").unwrap();
    assert_eq!(pool.read_line(1, T).unwrap(), "again");
    pool.shutdown(Duration::from_millis(500));
    assert!(no_lasting_zombies(), "zombies: {:?}", zombies());
    assert_eq!(fd_count(), fds, "fds leaked");
    assert!(
        eventually(Duration::from_secs(2), || thread_count() <= threads),
        "threads: {} vs {threads}",
        thread_count()
    );
    registered_children_are_watched_without_pidfds();
}

/// Permits where there is no pidfd: a child of this process is watched through a waiter
/// thread (its slot comes back when it exits, kill_all ends it with its group); any other
/// process cannot be registered.
fn registered_children_are_watched_without_pidfds() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let limiter = toolpool::Limiter::new(1);
    let p = limiter.acquire(T).unwrap();
    let e = p.register_pid(1).unwrap_err();
    assert!(
        matches!(e, Error::Io(_)) && e.to_string().contains("only a child"),
        "{e}"
    );
    let mut short = std::process::Command::new("sleep")
        .arg("0.2")
        .spawn()
        .unwrap();
    p.register_pid(short.id() as i32).unwrap();
    assert_eq!(limiter.status().active_processes, 1);
    assert!(eventually(T, || limiter.status().active_processes == 0));
    assert!(short.wait().unwrap().success());
    drop(p);

    let p = limiter.acquire(T).unwrap();
    let mut long = std::process::Command::new("sh")
        .args(["-c", "sleep 30 & wait"])
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = long.id() as i32;
    p.register_pid(pid).unwrap();
    let cutoff = ticks_now() + 1;
    assert_eq!(limiter.kill_all().killed_pids, vec![pid]);
    assert_eq!(long.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(eventually(T, || !group_alive(pid, cutoff)));
    assert!(eventually(T, || limiter.status().active_processes == 0));
}
