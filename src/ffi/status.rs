//! What a `ToolpoolPool` reports: health counts, the status, metrics and Prometheus
//! documents. These calls only read the pool (`const ToolpoolPool *`).

use super::pool::ToolpoolPool;
use super::{c_string, ffi_call, json_string, to_u32};
use std::ffi::c_char;

/// Counts of a pool's instances, filled by `toolpool_pool_health`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolpoolHealth {
    /// Instances in the pool.
    pub total: u32,
    /// Instances starting or ready.
    pub alive: u32,
    /// Instances that ended on their own, or were marked failed.
    pub dead: u32,
}

/// Counts of the pool's instances: total, alive (starting or ready), dead (ended on their
/// own, or failed). Works after shutdown (then every instance is stopped: alive 0, dead 0).
///
/// NULL handling: `p` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `*out` is a caller-owned struct that toolpool fills; nothing is allocated.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_health(
    p: *const ToolpoolPool,
    out: *mut ToolpoolHealth,
) -> i32 {
    ffi_call("toolpool_pool_health", || {
        let pool = try_handle!(p);
        let out = try_out!(out);
        let h = pool.health();
        out.write(ToolpoolHealth {
            total: to_u32(h.total),
            alive: to_u32(h.alive),
            dead: to_u32(h.dead),
        });
        Ok(())
    })
}

/// The pool's health as JSON: `total`, `alive`, `ready`, `dead`, `failed`, `stopped` and
/// `instances` (the per-instance status of `toolpool_pool_status_json`). Works after
/// shutdown.
///
/// NULL handling: `p` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_health_json(
    p: *const ToolpoolPool,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_health_json", || {
        let pool = try_handle!(p);
        let out = try_out!(out_json);
        let s = json_string(&pool.health())?;
        out.write(s);
        Ok(())
    })
}

/// The pool's status as JSON: `tool`, `shut_down`, `disabled`, `waiting`,
/// `waited_for_instance`, `started` (instances with a process), `max_instances` (the
/// count), `min_instances`, and `instances` (per instance: `index`, `pid`, `state`, `exit`,
/// `restarts`, line counters, `in_flight`, `leased`, `stderr_tail`, `rss_bytes` and
/// `cpu_seconds` of its process group (null when not running), `recycles`, ...). Works
/// after shutdown.
///
/// NULL handling: `p` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_status_json(
    p: *const ToolpoolPool,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_status_json", || {
        let pool = try_handle!(p);
        let out = try_out!(out_json);
        let s = json_string(&pool.status())?;
        out.write(s);
        Ok(())
    })
}

/// The pool's request metrics as JSON: counts of ok, error, timeout and fallback
/// requests, lines in and out, restarts, in-flight and queue depth, `grow_events` and
/// `shrink_events` (elastic sizing), latency quantiles, `rss_bytes` and `recycles` by
/// reason, and the same per instance (with `cpu_seconds`). Works after shutdown.
///
/// NULL handling: `p` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_metrics_json(
    p: *const ToolpoolPool,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_metrics_json", || {
        let pool = try_handle!(p);
        let out = try_out!(out_json);
        let s = json_string(&pool.metrics())?;
        out.write(s);
        Ok(())
    })
}

/// The pool's metrics in the Prometheus text exposition format 0.0.4 (families listed in
/// docs/observability.md), with this pool's process limit. Works after shutdown.
///
/// NULL handling: `p` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `p` is borrowed; on success `*out` receives a new string that the caller
/// frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_metrics_prometheus(
    p: *const ToolpoolPool,
    out: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_metrics_prometheus", || {
        let pool = try_handle!(p);
        let out = try_out!(out);
        out.write(c_string(pool.metrics_prometheus()));
        Ok(())
    })
}
