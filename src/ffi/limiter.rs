//! The process-wide limit and kill switch (wraps [`crate::limit_status`] and its
//! siblings: this process's limiter, or the service's when the process uses one).

use super::{ffi_call, json_string, to_u32};
use std::ffi::c_char;

/// Set the host-wide limit on concurrent processes of every pool, run and permit (0: no
/// limit; the initial value comes from `$TOOLPOOL_MAX_PROCESSES`). Lowering it never
/// kills: it only holds back new starts, which wait (up to the spec's
/// `startup.timeout_ms`, a run's `slot_timeout_ms`, a permit's timeout) and then fail with
/// `TOOLPOOL_LIMIT_REACHED`. `*out_old` receives the previous limit. When the process uses a
/// `toolpool serve` service (a live `ToolpoolClient`, or `$TOOLPOOL_SERVER`), the service's
/// limit.
///
/// NULL handling: `out_old` may be NULL (not wanted).
/// Ownership: nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out_old` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_limit_set(max: u32, out_old: *mut u32) -> i32 {
    ffi_call("toolpool_limit_set", || {
        let out = opt_out!(out_old);
        let old = crate::set_limit(max as usize)?;
        if let Some(o) = out {
            o.write(to_u32(old));
        }
        Ok(())
    })
}

/// The host-wide limiter (the service's when the process uses one) as JSON:
/// `active_processes`, `max_allowed` (0: none),
/// `utilization_percent`, `can_start_new`, `active_pids`, `warning` (null, or a message
/// above 80% use), `reserved` (slots taken with no process yet: starts in progress,
/// permits with no registered pid) and `processes` (`[{"pid": N, "kind": "instance" |
/// "run" | "registered", "name": tool id, run name, or null}]`). Pool instances, runs and
/// registered processes all count.
///
/// NULL handling: `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out_json` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_limit_status_json(out_json: *mut *mut c_char) -> i32 {
    ffi_call("toolpool_limit_status_json", || {
        let out = try_out!(out_json);
        let s = json_string(&crate::limit_status()?)?;
        out.write(s);
        Ok(())
    })
}

/// SIGKILL every process counted under the host-wide limiter: the process group of every
/// pool instance (of pools that did not get their own limiter) and run, and every
/// registered process (with its group if it leads one). Pools see their instances die
/// and follow their restart policy; runs end with signal 9. `*out_killed` receives how
/// many processes were signalled.
///
/// NULL handling: `out_killed` may be NULL (not wanted).
/// Ownership: nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out_killed` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_kill_all(out_killed: *mut u32) -> i32 {
    ffi_call("toolpool_kill_all", || {
        let out = opt_out!(out_killed);
        let report = crate::kill_all()?;
        if let Some(o) = out {
            o.write(to_u32(report.killed_count));
        }
        Ok(())
    })
}

/// Like `toolpool_kill_all`, and says which processes: SIGKILL every process counted
/// under the host-wide limiter (as `toolpool_kill_all`), then report them as JSON
/// `{"killed_count": N, "killed_pids": [pid, ...]}`. Pools see their instances die and
/// follow their restart policy.
///
/// NULL handling: `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT` (and nothing is killed).
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out_json` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_kill_all_json(out_json: *mut *mut c_char) -> i32 {
    ffi_call("toolpool_kill_all_json", || {
        let out = try_out!(out_json);
        let s = json_string(&crate::kill_all()?)?;
        out.write(s);
        Ok(())
    })
}
