//! Helpers shared by the integration tests: the test tool, specs, and leak checks that
//! read /proc.
#![allow(dead_code)]

use std::time::{Duration, Instant};
use toolpool::{Pool, PoolOptions, Protocol, ToolSpec};

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

/// A pool with its own limiter, so tests in one binary do not see each other's children.
pub fn private(spec: ToolSpec) -> Pool {
    Pool::with_options(
        spec,
        PoolOptions {
            limiter: Some(toolpool::Limiter::new(0)),
            ..Default::default()
        },
    )
    .expect("pool starts")
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

/// True when no child of this process stays a zombie: a child seen as a zombie now must
/// be reaped within 2 s (other tests' children may be between exit and reap right now).
pub fn no_lasting_zombies() -> bool {
    let seen = zombies();
    eventually(Duration::from_secs(2), || {
        let now = zombies();
        seen.iter().all(|z| !now.contains(z))
    })
}

/// True while a live (non-zombie) process is left in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        f.len() > 2 && f[0] != "Z" && f[2].parse::<i32>() == Ok(pgid)
    })
}

/// True while `pid` exists (as anything but a zombie).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z')),
        Err(_) => false,
    }
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
