//! `ToolpoolPool`: a pool of warm instances of one tool (wraps [`crate::Pool`]): its life
//! cycle (new, size, restart, resize, reload, shutdown, free). The calls on a pool are
//! split by subject: [`super::lines`] (raw lines in and out), [`super::requests`]
//! (framed requests, batches, leases), [`super::status`] (health, status, metrics).

use super::{ffi_call, ffi_void, millis, to_u32, Handle};
use crate::{Pool, ToolSpec};
use std::ffi::c_char;
use std::sync::Arc;

/// An opaque pool handle, from `toolpool_pool_new` or `toolpool_pool_from_registry`, freed
/// with `toolpool_pool_free`; or lent by `toolpool_pools_get`, and then freed with its
/// `ToolpoolPools`. Every call but `toolpool_pool_free` may be made from many threads at
/// once on the same handle.
pub struct ToolpoolPool {
    pub(crate) pool: Arc<Pool>,
    /// Lent by a `ToolpoolPools`: `toolpool_pool_free` leaves it alone.
    pub(crate) lent: bool,
}

impl Handle for ToolpoolPool {
    type Inner = Pool;
    const WHAT: &'static str = "pool";
    fn inner(&self) -> &Pool {
        &self.pool
    }
}

fn boxed(pool: Pool) -> *mut ToolpoolPool {
    Box::into_raw(Box::new(ToolpoolPool {
        pool: Arc::new(pool),
        lent: false,
    }))
}

/// Start a pool from a standalone tool spec in JSON (the keys of a registry entry plus an
/// optional `"id"`; `"count"` gives the number of instances). Returns once every instance
/// is ready (or has failed to start: then nothing is left running).
///
/// Errors: `TOOLPOOL_CONFIG` for bad JSON, an unknown key, a wrong type or a bad value;
/// `TOOLPOOL_SPAWN_FAILED`, `TOOLPOOL_LIMIT_REACHED` when instances cannot start.
/// A `startup.handshake` answered with an error object, or not answered within
/// `startup.timeout_ms`, is `TOOLPOOL_SPAWN_FAILED` with the tool's error in the message.
/// NULL handling: `spec_json` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `spec_json` is borrowed for the call. On success `*out` receives a new
/// handle that the caller owns and frees with `toolpool_pool_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `spec_json` must be NULL or a NUL-terminated string; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_new(
    spec_json: *const c_char,
    out: *mut *mut ToolpoolPool,
) -> i32 {
    ffi_call("toolpool_pool_new", || {
        let json = try_str!(spec_json);
        let out = try_out!(out);
        let pool = Pool::from_spec(ToolSpec::from_json(json)?)?;
        out.write(boxed(pool));
        Ok(())
    })
}

/// Start a pool of tool `tool_id` from a registry file (`{"tools": {"<id>": {spec}}}`).
/// `registry_path` NULL means the file named by `$TOOLPOOL_REGISTRY`; `count` 0 means the
/// spec's own `count`.
///
/// Errors: `TOOLPOOL_NOT_FOUND` for an unknown tool id (the message lists the known ones);
/// `TOOLPOOL_IO` when the file cannot be read; `TOOLPOOL_CONFIG` for an invalid registry or
/// an unset `$TOOLPOOL_REGISTRY`; start-up errors as `toolpool_pool_new`.
/// NULL handling: `registry_path` may be NULL (see above); `tool_id` or `out` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: the strings are borrowed for the call. On success `*out` receives a new
/// handle that the caller owns and frees with `toolpool_pool_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// The strings must be NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_from_registry(
    registry_path: *const c_char,
    tool_id: *const c_char,
    count: u32,
    out: *mut *mut ToolpoolPool,
) -> i32 {
    ffi_call("toolpool_pool_from_registry", || {
        let path = try_str_opt!(registry_path);
        let tool = try_str!(tool_id);
        let out = try_out!(out);
        let pool = Pool::from_registry(path.map(std::path::Path::new), tool, count as usize)?;
        out.write(boxed(pool));
        Ok(())
    })
}

/// The number of instances of the pool now: its count, which `toolpool_pool_resize` and
/// `toolpool_pool_reload` change (also after shutdown).
///
/// NULL handling: `p` or `out_count` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `p` is borrowed; nothing is allocated.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_size(p: *const ToolpoolPool, out_count: *mut u32) -> i32 {
    ffi_call("toolpool_pool_size", || {
        let pool = try_handle!(p);
        let out = try_out!(out_count);
        out.write(to_u32(pool.len()));
        Ok(())
    })
}

/// Stop instance `instance` (its whole process group) and start it again with the same
/// spec; also clears a `failed` mark. Returns once the new process is ready.
///
/// Errors: `TOOLPOOL_INDEX_OUT_OF_RANGE`, `TOOLPOOL_SPAWN_FAILED`,
/// `TOOLPOOL_LIMIT_REACHED`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `p` is borrowed.
/// Thread safety: safe from many threads at once on the same pool (restarts of one index
/// are serialised).
///
/// # Safety
/// `p` must be NULL or a live pool handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_restart(p: *mut ToolpoolPool, instance: u32) -> i32 {
    ffi_call("toolpool_pool_restart", || {
        let pool = try_handle!(p);
        pool.restart(instance as usize)
    })
}

/// Change the pool's number of instances to `count` (1 to 4096) at run time (see
/// `Pool::resize`). Indices stay `0..count`: growing adds indices at the top (a fixed pool
/// starts them and returns once they are ready; an elastic or lazy pool starts them on
/// demand); shrinking removes the top indices at once (they return
/// `TOOLPOOL_INDEX_OUT_OF_RANGE`): idle ones stop before the call returns, a busy or
/// leased one after its last request or lease, so no request in flight fails.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` for a count of 0 or above 4096;
/// `TOOLPOOL_SHUT_DOWN`; `TOOLPOOL_SPAWN_FAILED`, `TOOLPOOL_LIMIT_REACHED` when a fixed
/// pool cannot start its new instances (its size is then unchanged).
/// NULL handling: `p` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `p` is borrowed.
/// Thread safety: safe from many threads at once on the same pool, also while requests
/// run; resizes and reloads of one pool are serialised.
///
/// # Safety
/// `p` must be NULL or a live pool handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_resize(p: *mut ToolpoolPool, count: u32) -> i32 {
    ffi_call("toolpool_pool_resize", || {
        let pool = try_handle!(p);
        pool.resize(count as usize)
    })
}

/// Rolling reload to a new standalone spec in JSON (the keys of `toolpool_pool_new`; no
/// `"id"` keeps the pool's id, no `"count"` its count): one instance at a time, the new process starts and prints
/// its ready line before the old one is swapped out, and the old one stops once the
/// requests using it are over, so requests keep being served. Only the keys that say how
/// a process starts (`command`, `env`, `env_clear`, `cwd`, `startup`, the per-process
/// `limits`) and the sizes (`count`, `min_instances`, `lazy`) may change.
///
/// Errors, all before anything changes: `TOOLPOOL_CONFIG` for bad JSON, an invalid spec,
/// or a change to another key (the message names each one). When a new process cannot
/// start: `TOOLPOOL_SPAWN_FAILED` or `TOOLPOOL_LIMIT_REACHED` with the reason; the reload
/// stops, the instances it replaced go back to the old spec (as far as the process limit
/// allows), and the pool keeps serving. `TOOLPOOL_SHUT_DOWN` after shutdown.
/// NULL handling: `p` or `spec_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `spec_json` is borrowed for the call.
/// Thread safety: safe from many threads at once on the same pool, also while requests
/// run; resizes and reloads of one pool are serialised.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `spec_json` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_reload(
    p: *mut ToolpoolPool,
    spec_json: *const c_char,
) -> i32 {
    ffi_call("toolpool_pool_reload", || {
        let pool = try_handle!(p);
        let json = try_str!(spec_json);
        pool.reload_json(json)
    })
}

/// Shut the pool down: close every stdin, SIGTERM each process group, wait up to
/// `grace_ms`, SIGKILL what is left, reap every child. Idempotent (a second call returns
/// `TOOLPOOL_OK` at once). Afterwards I/O, requests, leases and restarts return
/// `TOOLPOOL_SHUT_DOWN`; size, health, status and metrics still work. The handle must
/// still be freed with `toolpool_pool_free`.
///
/// NULL handling: `p` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `p` is borrowed.
/// Thread safety: safe from many threads at once on the same pool; calls waiting for an
/// instance are woken and return `TOOLPOOL_SHUT_DOWN`.
///
/// # Safety
/// `p` must be NULL or a live pool handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_shutdown(p: *mut ToolpoolPool, grace_ms: u32) -> i32 {
    ffi_call("toolpool_pool_shutdown", || {
        let pool = try_handle!(p);
        pool.shutdown(millis(grace_ms));
        Ok(())
    })
}

/// Free a pool handle, shutting the pool down first (with the spec's
/// `shutdown.grace_ms`) unless `toolpool_pool_shutdown` already did: no child outlives the
/// pool. Leases taken from it stay valid until freed (their calls return
/// `TOOLPOOL_SHUT_DOWN`).
///
/// NULL handling: NULL is ignored; so is a pool lent by `toolpool_pools_get` (its
/// `ToolpoolPools` frees it).
/// Ownership: takes back ownership of `p`; `p` must not be used afterwards.
/// Thread safety: must not race any other call on the same handle (finish or join every
/// thread using it first); other pools are unaffected.
///
/// # Safety
/// `p` must be NULL, a pool lent by a live `ToolpoolPools`, or a handle from
/// `toolpool_pool_new` / `toolpool_pool_from_registry` not yet freed, with no call on it
/// in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_free(p: *mut ToolpoolPool) {
    if p.is_null() {
        return;
    }
    ffi_void("toolpool_pool_free", || {
        // SAFETY: `p` is live per the caller's contract.
        if unsafe { (*p).lent } {
            return;
        }
        // SAFETY: `p` came from `Box::into_raw` in `boxed` (the caller's contract).
        drop(unsafe { Box::from_raw(p) });
    });
}
