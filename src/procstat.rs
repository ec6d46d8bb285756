//! Memory and CPU of one incarnation's process group, read from `/proc`.
//!
//! Cheap by design: no scan of all of `/proc`. From the group leader (the pid toolpool
//! started) it follows `/proc/<pid>/task/<tid>/children` down the process tree and sums
//! `/proc/<pid>/stat` of every descendant still in the leader's process group: resident
//! set size (`rss`, field 24) and CPU time (`utime + stime + cutime + cstime`, fields
//! 14..17, so reaped children of a member count too). A member that exits while it is read
//! is skipped. A descendant that left the group (its own group or session) is not counted,
//! as it is beyond the group kill too. On a kernel without `/proc` every read is `None`.

use std::fs;

/// Most processes of one group that are read (a bound on the cost of one reading).
pub const MAX_GROUP_PROCESSES: usize = 256;

/// Memory and CPU of one process group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Usage {
    /// Resident set size of every member, bytes.
    pub rss_bytes: u64,
    /// User + system CPU time of every member (and its reaped children), seconds.
    pub cpu_seconds: f64,
}

/// The fields of `/proc/<pid>/stat` we use: process group, CPU ticks, rss pages.
struct Stat {
    pgrp: i32,
    ticks: u64,
    rss_pages: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: skip past it.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let num = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = num(14)? + num(15)? + num(16)? + num(17)?;
    Some(Stat {
        pgrp: f.get(5 - 3)?.parse().ok()?,
        ticks,
        rss_pages: num(24)?,
    })
}

fn children(pid: i32, out: &mut Vec<i32>) {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let path = t.path().join("children");
        if let Ok(s) = fs::read_to_string(path) {
            out.extend(
                s.split_ascii_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
}

/// `sysconf(name)`, or `default` when it is not known.
fn sysconf_or(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: plain libc call without pointers.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as u64
    } else {
        default
    }
}

/// Memory and CPU of the process group led by `leader`, or `None` when the leader is gone
/// (or `/proc` cannot be read).
pub(crate) fn group_usage(leader: i32) -> Option<Usage> {
    let first = read_stat(leader)?;
    let mut pages = first.rss_pages;
    let mut ticks = first.ticks;
    let mut todo = Vec::new();
    children(leader, &mut todo);
    let mut seen = 1;
    while let Some(pid) = todo.pop() {
        if seen >= MAX_GROUP_PROCESSES {
            break;
        }
        let Some(st) = read_stat(pid) else { continue };
        if st.pgrp != leader {
            continue;
        }
        seen += 1;
        pages += st.rss_pages;
        ticks += st.ticks;
        children(pid, &mut todo);
    }
    Some(Usage {
        rss_bytes: pages * sysconf_or(libc::_SC_PAGESIZE, 4096),
        cpu_seconds: ticks as f64 / sysconf_or(libc::_SC_CLK_TCK, 100) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        // SAFETY: plain libc call.
        let me = unsafe { libc::getpid() };
        // This test process is not a group leader of its own group necessarily; read_stat
        // works for any pid.
        let st = read_stat(me).expect("stat of self");
        assert!(st.rss_pages > 0);
        assert_eq!(group_usage(i32::MAX), None);
    }
}
