//! Helpers shared by the integration tests: the test tool, specs, and leak checks that
//! read /proc.
#![allow(dead_code)]

use std::time::{Duration, Instant};
use toolpool::{Launcher, Pool, PoolOptions, Protocol, RemoteSpec, Startup, ToolSpec};

pub const T: Duration = Duration::from_secs(5);

pub fn testtool() -> &'static str {
    env!("CARGO_BIN_EXE_toolpool-testtool")
}

pub fn rpc_tool() -> String {
    format!("{}/examples/tools/rpc_tool.py", env!("CARGO_MANIFEST_DIR"))
}

/// A spec for the test tool with `args`, `count` instances.
pub fn tool(count: usize, args: &[&str]) -> ToolSpec {
    let mut argv = vec![testtool().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    ToolSpec {
        id: "testtool".into(),
        count,
        ..ToolSpec::new(argv)
    }
}

/// A spec for the Python JSON-RPC tool.
pub fn rpc(count: usize) -> ToolSpec {
    ToolSpec {
        id: "rpc_tool".into(),
        count,
        protocol: Protocol::Jsonrpc,
        startup: toolpool::Startup {
            ready_line: Some("READY".into()),
            timeout_ms: 20_000,
            ..Default::default()
        },
        ..ToolSpec::new([
            "python3".to_string(),
            "-u".into(),
            rpc_tool(),
            "--ready".into(),
            "READY".into(),
        ])
    }
}

/// `count` instances of the test tool with `args` on `hosts` through `launcher` (with its
/// `options`), ready once it prints READY (within 20 s: remote starts are slower).
pub fn remote_tool(
    launcher: Launcher,
    hosts: &[&str],
    options: Vec<String>,
    count: usize,
    args: &[&str],
) -> ToolSpec {
    let mut argv = vec![testtool().to_string()];
    argv.extend(args.iter().map(|s| s.to_string()));
    argv.extend(["--ready".into(), "READY".into()]);
    ToolSpec {
        id: "remote-testtool".into(),
        count,
        startup: Startup {
            ready_line: Some("READY".into()),
            timeout_ms: 20_000,
            ..Default::default()
        },
        remote: Some(RemoteSpec {
            launcher,
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            options,
            per_host: None,
        }),
        ..ToolSpec::new(argv)
    }
}

/// A pool with its own limiter, so tests in one binary do not see each other's children.
pub fn private(spec: ToolSpec) -> Pool {
    try_private(spec).expect("pool starts")
}

/// [`private`], or why the pool did not start.
pub fn try_private(spec: ToolSpec) -> toolpool::Result<Pool> {
    Pool::with_options(
        spec,
        PoolOptions {
            limiter: Some(toolpool::Limiter::new(0)),
            ..Default::default()
        },
    )
}

/// The pid the test tool of `index` replies to `cmd` (`pid`, `grandchild`).
pub fn reply_pid(pool: &Pool, index: usize, cmd: &str) -> i32 {
    pool.send(index, cmd).unwrap();
    let line = pool.read_line(index, Duration::from_secs(20)).unwrap();
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("a pid, got {line:?}"))
}

/// The argv of a process, from /proc (empty once it is gone).
pub fn argv_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .filter(|a| !a.is_empty())
        .collect()
}

/// The pid of every instance (each is running).
pub fn pids(pool: &Pool) -> Vec<i32> {
    pool.status()
        .instances
        .iter()
        .map(|s| s.pid.expect("running"))
        .collect()
}

/// Children of this process that are zombies.
pub fn zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] == "Z" && f[1].parse::<i32>() == Ok(me) {
            out.push(pid);
        }
    }
    out
}

/// Children of this process in any state (zombies included).
pub fn children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| stat_fields(pid).is_some_and(|f| f.get(1) == Some(&me)))
        .collect()
}

/// True when no child of this process stays a zombie: a child seen as a zombie now must
/// be reaped within 2 s (other tests' children may be between exit and reap right now).
pub fn no_lasting_zombies() -> bool {
    let seen = zombies();
    eventually(Duration::from_secs(2), || {
        let now = zombies();
        seen.iter().all(|z| !now.contains(z))
    })
}

/// The fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// A process seen once: its pid and start time, so a later check is not fooled when the
/// pid is reused (pid_max is 32768 here and tests start many processes).
#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub pid: i32,
    start: u64,
}

impl Seen {
    pub fn of(pid: i32) -> Seen {
        // A process already gone gets start 0, which no live process has.
        let start = stat_fields(pid)
            .and_then(|f| f.get(19)?.parse().ok())
            .unwrap_or(0);
        Seen { pid, start }
    }

    /// The same process still exists and is not a zombie.
    pub fn alive(&self) -> bool {
        stat_fields(self.pid).is_some_and(|f| {
            f[0] != "Z" && f.get(19).and_then(|v| v.parse().ok()) == Some(self.start)
        })
    }
}

/// Clock ticks since boot (the unit of a process's start time in /proc/<pid>/stat).
pub fn ticks_now() -> u64 {
    let up = std::fs::read_to_string("/proc/uptime").unwrap();
    let secs: f64 = up.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf reads a constant; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (secs * hz) as u64 + 1
}

/// True while a live (non-zombie) process of process group `pgid` that started before
/// `cutoff` (clock ticks, from [`ticks_now`]) exists: members of a later group that
/// reuses the number do not count.
pub fn group_alive(pgid: i32, cutoff: u64) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            return false;
        };
        let Some(f) = stat_fields(pid) else {
            return false;
        };
        let start: u64 = f.get(19).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        f[0] != "Z" && f[2].parse::<i32>() == Ok(pgid) && start < cutoff
    })
}

/// Wait (up to 3 s) until this process has `fds0` fds and at most `threads0` threads
/// again (after a pool's drop), else panic with the counts.
#[track_caller]
pub fn assert_fds_and_threads_back(fds0: usize, threads0: usize) {
    assert!(
        eventually(Duration::from_secs(3), || fd_count() == fds0
            && thread_count() <= threads0),
        "fds {fds0} -> {}, threads {threads0} -> {}",
        fd_count(),
        thread_count()
    );
}

pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Poll `f` until true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Assert that one of `lines` (a stderr or protocol-error tail) contains `needle`.
#[track_caller]
pub fn assert_has_line(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "no line with {needle:?} in {lines:?}"
    );
}

/// The virtual environment with the protocol servers and REPLs from PyPI
/// (tests/protocol_venv.sh), made when missing; its path.
pub fn protocol_venv() -> &'static str {
    static VENV: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/protocol_venv.sh");
        let out = std::process::Command::new(script)
            .output()
            .expect("run protocol_venv.sh");
        assert!(
            out.status.success(),
            "protocol_venv.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}
