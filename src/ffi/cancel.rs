//! `ToolpoolCancel`: a cancel token (wraps [`crate::CancelToken`]), and the cancellable
//! forms of the blocking calls: each is its plain form plus a `const ToolpoolCancel *c`
//! parameter after the timeout (NULL: not cancellable, exactly the plain call).
//!
//! A call waiting with a token that another thread triggers returns `TOOLPOOL_CANCELLED`
//! within milliseconds, with the guarantees of a timeout (no reply of the abandoned
//! request ever reaches another caller). A token triggered before the call makes it
//! return at once. A token may serve any number of calls, at once or one after another;
//! once triggered it stays triggered (make a new one for new calls).

use super::lease::ToolpoolLease;
use super::pool::ToolpoolPool;
use super::{
    bytes_out, c_string, ffi_call, ffi_void, invalid, json_string, millis, to_u32, Handle,
};
use crate::{CancelToken, MapResult, Wait};
use std::ffi::c_char;

/// An opaque cancel token, from `toolpool_cancel_new`, freed with `toolpool_cancel_free`.
/// `toolpool_cancel_trigger` may be called from any thread, also while calls wait on it.
pub struct ToolpoolCancel {
    token: CancelToken,
}

impl Handle for ToolpoolCancel {
    type Inner = CancelToken;
    const WHAT: &'static str = "cancel token";
    fn inner(&self) -> &CancelToken {
        &self.token
    }
}

/// The `Wait` of a cancellable call: `timeout_ms`, and the token `$c` unless it is NULL.
macro_rules! try_wait {
    ($ms:ident, $c:ident) => {{
        // SAFETY: the function's contract: `$c` is NULL or a live cancel token that
        // outlives the call.
        let token = unsafe { $c.as_ref() }.map(|c| c.inner());
        let wait = Wait::new(millis($ms));
        match token {
            Some(t) => wait.with_cancel(t),
            None => wait,
        }
    }};
}

/// Create a cancel token (not triggered). Makes no system call; the first call that waits
/// in `poll` with it creates one eventfd, closed by `toolpool_cancel_free`.
///
/// NULL handling: `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out` receives a new token that the caller owns and frees with
/// `toolpool_cancel_free`, after every call that uses it has returned.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_cancel_new(out: *mut *mut ToolpoolCancel) -> i32 {
    ffi_call("toolpool_cancel_new", || {
        let out = try_out!(out);
        out.write(Box::into_raw(Box::new(ToolpoolCancel {
            token: CancelToken::new(),
        })));
        Ok(())
    })
}

/// Trigger the token: every call waiting with it returns `TOOLPOOL_CANCELLED` within
/// milliseconds, and every later call with it returns `TOOLPOOL_CANCELLED` at once.
/// Idempotent. Not async-signal-safe (it takes locks): do not call it from a signal
/// handler; a thread (or Go's goroutine, Python's main thread) is fine.
///
/// NULL handling: `c` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `c` is borrowed.
/// Thread safety: safe from any thread, also while calls on other threads wait on `c`.
///
/// # Safety
/// `c` must be NULL or a live token.
#[no_mangle]
pub unsafe extern "C" fn toolpool_cancel_trigger(c: *const ToolpoolCancel) -> i32 {
    ffi_call("toolpool_cancel_trigger", || {
        try_handle!(c).cancel();
        Ok(())
    })
}

/// Whether the token was triggered: `*out_cancelled` receives 1 or 0.
///
/// NULL handling: `c` or `out_cancelled` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `c` is borrowed; nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `c` must be NULL or a live token; `out_cancelled` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_cancel_is_triggered(
    c: *const ToolpoolCancel,
    out_cancelled: *mut u32,
) -> i32 {
    ffi_call("toolpool_cancel_is_triggered", || {
        let token = try_handle!(c);
        let out = try_out!(out_cancelled);
        out.write(u32::from(token.is_cancelled()));
        Ok(())
    })
}

/// Free a token (and its eventfd, if one was made).
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `c`; `c` must not be used afterwards. Freeing a
/// token while a call still waits on it is the caller's bug (undefined behaviour): join
/// the calls first; to stop them, trigger, then free after they returned.
/// Thread safety: must not race another call using the same token.
///
/// # Safety
/// `c` must be NULL or a token from `toolpool_cancel_new` not yet freed, with no call
/// using it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_cancel_free(c: *mut ToolpoolCancel) {
    ffi_void("toolpool_cancel_free", || {
        if !c.is_null() {
            // SAFETY: per the contract, `c` came from `toolpool_cancel_new` and is freed once.
            drop(unsafe { Box::from_raw(c) });
        }
    })
}

/// `toolpool_pool_request`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_request`, plus `TOOLPOOL_CANCELLED` (at whichever stage:
/// waiting for an instance, for its start or a process-limit slot, for the reply). After a
/// cancelled request in `lines`/`marker` framing the instance is recycled; in `jsonrpc`
/// its late reply is dropped and counted (and the spec's `cancel_notification` is sent).
/// NULL handling: `p`, `payload` or `out_reply` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c`
/// may be NULL.
/// Ownership: `payload` and `c` are borrowed for the call (`c` must outlive it); on
/// success `*out_reply` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool and the same token;
/// `toolpool_cancel_trigger(c)` may be called from any thread meanwhile.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `payload` NULL or NUL-terminated; `c` NULL or a
/// live token; `out_reply` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_request_cancellable(
    p: *mut ToolpoolPool,
    payload: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_reply: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_request_cancellable", || {
        let pool = try_handle!(p);
        let payload = try_str!(payload);
        let out = try_out!(out_reply);
        let reply = pool.request(payload, try_wait!(timeout_ms, c))?;
        out.write(c_string(reply.text));
        Ok(())
    })
}

/// `toolpool_pool_request_sticky`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_request_sticky`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `p`, `key`, `payload` or `out_reply` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`; `c`, `out_instance` and `out_moved` may be NULL.
/// Ownership: `key`, `payload` and `c` are borrowed for the call; on success
/// `*out_reply` receives a new string that the caller frees with `toolpool_string_free`,
/// `*out_instance` (if not NULL) the instance index (`UINT32_MAX` when served by the
/// one-shot fallback) and `*out_moved` (if not NULL) whether the key moved.
/// Thread safety: as `toolpool_pool_request_cancellable`.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `key` and `payload` NULL or NUL-terminated;
/// `c` NULL or a live token; the out-pointers NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn toolpool_pool_request_sticky_cancellable(
    p: *mut ToolpoolPool,
    key: *const c_char,
    payload: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_reply: *mut *mut c_char,
    out_instance: *mut u32,
    out_moved: *mut bool,
) -> i32 {
    ffi_call("toolpool_pool_request_sticky_cancellable", || {
        let pool = try_handle!(p);
        let key = try_str!(key);
        let payload = try_str!(payload);
        let out_r = try_out!(out_reply);
        let (out_i, out_m) = (opt_out!(out_instance), opt_out!(out_moved));
        let reply = pool.request_sticky(key, payload, try_wait!(timeout_ms, c))?;
        if let Some(o) = out_i {
            o.write(reply.instance.map_or(u32::MAX, to_u32));
        }
        if let Some(o) = out_m {
            o.write(reply.moved);
        }
        out_r.write(c_string(reply.text));
        Ok(())
    })
}

/// `toolpool_pool_read_line`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_read_line`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `p` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out_line` receives a new string
/// that the caller frees with `toolpool_string_free`.
/// Thread safety: as `toolpool_pool_read_line`; `c` may be triggered from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `c` NULL or a live token; `out_line` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_line_cancellable(
    p: *mut ToolpoolPool,
    instance: u32,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_line: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_read_line_cancellable", || {
        let pool = try_handle!(p);
        let out = try_out!(out_line);
        let line = pool.read_line(instance as usize, try_wait!(timeout_ms, c))?;
        out.write(c_string(line));
        Ok(())
    })
}

/// `toolpool_pool_read_line_bytes`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_read_line_bytes`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `p`, `out_data` or `out_len` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c`
/// may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out_data` receives a new buffer
/// of `*out_len` bytes that the caller frees with `toolpool_bytes_free(data, len)`.
/// Thread safety: as `toolpool_pool_read_line_bytes`; `c` may be triggered from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `c` NULL or a live token; `out_data` and
/// `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_line_bytes_cancellable(
    p: *mut ToolpoolPool,
    instance: u32,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_data: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    ffi_call("toolpool_pool_read_line_bytes_cancellable", || {
        let pool = try_handle!(p);
        let out_d = try_out!(out_data);
        let out_l = try_out!(out_len);
        let line = pool.read_line_bytes(instance as usize, try_wait!(timeout_ms, c))?;
        let (ptr, len) = bytes_out(line);
        out_d.write(ptr);
        out_l.write(len);
        Ok(())
    })
}

/// `toolpool_pool_read_any`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_read_any`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `p`, `out_instance` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`;
/// `c` may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out_line` receives a new string
/// that the caller frees with `toolpool_string_free`.
/// Thread safety: as `toolpool_pool_read_any`; `c` may be triggered from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `c` NULL or a live token; the out-pointers
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_any_cancellable(
    p: *mut ToolpoolPool,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_instance: *mut u32,
    out_line: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_read_any_cancellable", || {
        let pool = try_handle!(p);
        let out_i = try_out!(out_instance);
        let out_l = try_out!(out_line);
        let (i, line) = pool.read_any(try_wait!(timeout_ms, c))?;
        out_i.write(to_u32(i));
        out_l.write(c_string(line));
        Ok(())
    })
}

/// `toolpool_pool_map_json`, cancellable by `c` (NULL: not cancellable): triggering `c`
/// fails every request not yet answered with `TOOLPOOL_CANCELLED` in its result, and the
/// call returns (successfully, with every result).
///
/// Errors: as `toolpool_pool_map_json`.
/// NULL handling: `p`, `payloads_json` or `out_results_json` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `payloads_json` and `c` are borrowed for the call; on success
/// `*out_results_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: as `toolpool_pool_map_json`; `c` may be triggered from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `payloads_json` NULL or NUL-terminated; `c`
/// NULL or a live token; `out_results_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_map_json_cancellable(
    p: *mut ToolpoolPool,
    payloads_json: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_results_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_map_json_cancellable", || {
        let pool = try_handle!(p);
        let json = try_str!(payloads_json);
        let out = try_out!(out_results_json);
        let payloads: Vec<String> = serde_json::from_str(json).map_err(|e| {
            invalid(
                "payloads_json",
                &format!("is not a JSON array of strings: {e}"),
            )
        })?;
        let results: Vec<MapResult> = pool
            .map(&payloads, try_wait!(timeout_ms, c))
            .into_iter()
            .map(MapResult::from)
            .collect();
        out.write(json_string(&results)?);
        Ok(())
    })
}

/// `toolpool_pool_lease`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_pool_lease`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `p` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out` receives a new lease that
/// the caller frees with `toolpool_lease_free`.
/// Thread safety: as `toolpool_pool_lease`; `c` may be triggered from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `c` NULL or a live token; `out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_lease_cancellable(
    p: *mut ToolpoolPool,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out: *mut *mut ToolpoolLease,
) -> i32 {
    ffi_call("toolpool_pool_lease_cancellable", || {
        let pool = try_handle!(p);
        let out = try_out!(out);
        let lease = pool.lease(try_wait!(timeout_ms, c))?;
        out.write(ToolpoolLease::boxed(lease));
        Ok(())
    })
}

/// `toolpool_lease_request`, cancellable by `c` (NULL: not cancellable). A cancelled
/// request in `lines`/`marker` framing recycles the leased instance: the lease's later
/// calls fail with `TOOLPOOL_DEAD`; free it and take a new one.
///
/// Errors: as `toolpool_lease_request`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `l`, `payload` or `out_reply` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c`
/// may be NULL.
/// Ownership: `payload` and `c` are borrowed for the call; on success `*out_reply`
/// receives a new string that the caller frees with `toolpool_string_free`.
/// Thread safety: one thread at a time per lease; `c` may be triggered from any thread.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `payload` NULL or NUL-terminated; `c` NULL or
/// a live token; `out_reply` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_request_cancellable(
    l: *mut ToolpoolLease,
    payload: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_reply: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_lease_request_cancellable", || {
        let lease = try_handle!(l);
        let payload = try_str!(payload);
        let out = try_out!(out_reply);
        let reply = lease.request(payload, try_wait!(timeout_ms, c))?;
        out.write(c_string(reply));
        Ok(())
    })
}

/// `toolpool_lease_read_line`, cancellable by `c` (NULL: not cancellable).
///
/// Errors: as `toolpool_lease_read_line`, plus `TOOLPOOL_CANCELLED`.
/// NULL handling: `l` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out_line` receives a new string
/// that the caller frees with `toolpool_string_free`.
/// Thread safety: one thread at a time per lease; `c` may be triggered from any thread.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `c` NULL or a live token; `out_line` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_read_line_cancellable(
    l: *mut ToolpoolLease,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_line: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_lease_read_line_cancellable", || {
        let lease = try_handle!(l);
        let out = try_out!(out_line);
        let line = lease.read_line(try_wait!(timeout_ms, c))?;
        out.write(c_string(line));
        Ok(())
    })
}
