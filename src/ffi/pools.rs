//! `ToolpoolPools`: a pool for every tool of a registry (wraps [`crate::Pools`]); its
//! pools are lent as `ToolpoolPool *` handles that every pool function takes.

use super::pool::ToolpoolPool;
use super::{c_string, ffi_call, ffi_void, invalid, json_string, millis, Handle};
use crate::{MapResult, Pools};
use std::collections::BTreeMap;
use std::ffi::c_char;

/// An opaque handle of a pool per tool, from `toolpool_pools_new`, freed with
/// `toolpool_pools_free`. Every call but `toolpool_pools_free` may be made from many
/// threads at once on the same handle.
pub struct ToolpoolPools {
    pools: Pools,
    /// The handles `toolpool_pools_get` lends, one per tool (stable addresses).
    lent: BTreeMap<String, Box<ToolpoolPool>>,
}

impl Handle for ToolpoolPools {
    type Inner = ToolpoolPools;
    const WHAT: &'static str = "pools";
    fn inner(&self) -> &ToolpoolPools {
        self
    }
}

/// A pool for every tool of the registry file at `registry_path` (NULL: the file named by
/// `$TOOLPOOL_REGISTRY`), each started as its spec says (a `lazy` tool on first use).
///
/// Errors: `TOOLPOOL_IO` when the file cannot be read; `TOOLPOOL_CONFIG` for an invalid
/// registry or an unset `$TOOLPOOL_REGISTRY`; a tool's start-up error (then nothing is
/// left running).
/// NULL handling: `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `registry_path` may be NULL.
/// Ownership: `registry_path` is borrowed; on success `*out` receives a new handle that
/// the caller owns and frees with `toolpool_pools_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `registry_path` must be NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_new(
    registry_path: *const c_char,
    out: *mut *mut ToolpoolPools,
) -> i32 {
    ffi_call("toolpool_pools_new", || {
        let path = try_str_opt!(registry_path);
        let out = try_out!(out);
        let pools = Pools::from_registry(path.map(std::path::Path::new))?;
        let lent = pools
            .tools()
            .into_iter()
            .map(|id| {
                let pool = pools
                    .pool(&id)
                    .map(|pool| ToolpoolPool { pool, lent: true });
                pool.map(|p| (id, Box::new(p)))
            })
            .collect::<crate::Result<_>>()?;
        out.write(Box::into_raw(Box::new(ToolpoolPools { pools, lent })));
        Ok(())
    })
}

/// The pool of tool `tool_id`: a borrowed `ToolpoolPool *` that every `toolpool_pool_*`
/// function takes, valid until `toolpool_pools_free` (`toolpool_pool_free` on it does
/// nothing).
///
/// Errors: `TOOLPOOL_NOT_FOUND` for an id the registry does not have (the message lists
/// the known ones).
/// NULL handling: `pools`, `tool_id` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `tool_id` is borrowed; `*out` is owned by `pools`.
/// Thread safety: safe from many threads at once on the same handle.
///
/// # Safety
/// `pools` must be NULL or a live handle; `tool_id` NULL or NUL-terminated; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_get(
    pools: *const ToolpoolPools,
    tool_id: *const c_char,
    out: *mut *mut ToolpoolPool,
) -> i32 {
    ffi_call("toolpool_pools_get", || {
        let this = try_handle!(pools);
        let id = try_str!(tool_id);
        let out = try_out!(out);
        match this.lent.get(id) {
            Some(p) => {
                let ptr: *const ToolpoolPool = &**p;
                out.write(ptr.cast_mut());
                Ok(())
            }
            None => Err(this.pools.pool(id).unwrap_err()),
        }
    })
}

/// Run mixed jobs, each on its tool's pool (every tool's jobs as a batch, all tools at
/// once), waiting up to `timeout_ms` for each job. `jobs_json` is a JSON array of `[tool,
/// payload]` pairs; `*out_results_json` receives one result per job, in input order, as
/// `toolpool_pool_map_json` gives them (a job of an unknown tool is its own error).
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` for `jobs_json` that is not such an array.
/// NULL handling: `pools`, `jobs_json` or `out_results_json` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `jobs_json` is borrowed; on success `*out_results_json` receives a new
/// string that the caller frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same handle.
///
/// # Safety
/// `pools` must be NULL or a live handle; `jobs_json` NULL or NUL-terminated;
/// `out_results_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_map_json(
    pools: *const ToolpoolPools,
    jobs_json: *const c_char,
    timeout_ms: u32,
    out_results_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pools_map_json", || {
        let this = try_handle!(pools);
        let json = try_str!(jobs_json);
        let out = try_out!(out_results_json);
        let jobs: Vec<(String, String)> = serde_json::from_str(json).map_err(|e| {
            invalid(
                "jobs_json",
                &format!("is not a JSON array of [tool, payload] pairs: {e}"),
            )
        })?;
        let results: Vec<MapResult> = this.pools.map_results(&jobs, millis(timeout_ms));
        out.write(json_string(&results)?);
        Ok(())
    })
}

/// The status of every pool as JSON: `{"<tool id>": <toolpool_pool_status_json's
/// document>, ...}`.
///
/// NULL handling: `pools` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same handle.
///
/// # Safety
/// `pools` must be NULL or a live handle; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_status_json(
    pools: *const ToolpoolPools,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pools_status_json", || {
        let this = try_handle!(pools);
        let out = try_out!(out_json);
        out.write(json_string(&this.pools.status())?);
        Ok(())
    })
}

/// Every pool's metrics in the Prometheus text exposition format 0.0.4 (families listed
/// in docs/observability.md), with the process's limiter.
///
/// NULL handling: `pools` or `out_text` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_text` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same handle.
///
/// # Safety
/// `pools` must be NULL or a live handle; `out_text` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_metrics_prometheus(
    pools: *const ToolpoolPools,
    out_text: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pools_metrics_prometheus", || {
        let this = try_handle!(pools);
        let out = try_out!(out_text);
        out.write(c_string(this.pools.metrics_prometheus()));
        Ok(())
    })
}

/// Shut every pool down, all at once, each waiting up to `grace_ms` (`UINT32_MAX`: its
/// spec's `shutdown.grace_ms`) as `toolpool_pool_shutdown` does. Idempotent; the pools'
/// status and metrics still answer until `toolpool_pools_free`.
///
/// NULL handling: `pools` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `pools` is borrowed.
/// Thread safety: safe from many threads at once on the same handle; calls waiting on
/// its pools are woken and return `TOOLPOOL_SHUT_DOWN`.
///
/// # Safety
/// `pools` must be NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_shutdown(
    pools: *const ToolpoolPools,
    grace_ms: u32,
) -> i32 {
    ffi_call("toolpool_pools_shutdown", || {
        let this = try_handle!(pools);
        this.pools
            .shutdown((grace_ms != u32::MAX).then(|| millis(grace_ms)));
        Ok(())
    })
}

/// Free the handle and the pools it lent, shutting every pool down first (with its spec's
/// `shutdown.grace_ms`) unless `toolpool_pools_shutdown` already did.
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `pools`; it and every pool `toolpool_pools_get`
/// lent must not be used afterwards.
/// Thread safety: must not race any other call on the handle or on its pools.
///
/// # Safety
/// `pools` must be NULL or a handle from `toolpool_pools_new` not yet freed, with no call
/// on it or its pools in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pools_free(pools: *mut ToolpoolPools) {
    if pools.is_null() {
        return;
    }
    ffi_void("toolpool_pools_free", || {
        // SAFETY: `pools` came from `Box::into_raw` in `toolpool_pools_new` (the caller's
        // contract).
        drop(unsafe { Box::from_raw(pools) });
    });
}
