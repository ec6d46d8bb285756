//! Framed requests on a `ToolpoolPool`: routed, sticky, batches (`map`), and leases
//! (exclusive use of one instance), each also in a cancellable form.

use super::cancel::ToolpoolCancel;
use super::lease::ToolpoolLease;
use super::pool::ToolpoolPool;
use super::{c_string, ffi_call, invalid, json_string, to_u32, Handle};
use crate::MapResult;
use std::ffi::c_char;

/// Send `payload` as one request to an instance picked by the spec's `routing` and wait
/// up to `timeout_ms` (waiting for a free instance included) for its reply, framed by the
/// spec's `protocol`: the reply line (`lines`), the lines up to the marker joined by `\n`
/// (`marker`), or the JSON text of `result` (`jsonrpc`, where `payload` is
/// `{"method":...,"params":...}`).
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_TOOL_ERROR` (a JSON-RPC error object; the
/// message has its code and text), `TOOLPOOL_DEAD`, `TOOLPOOL_SATURATED`,
/// `TOOLPOOL_UNAVAILABLE`, `TOOLPOOL_PROTOCOL_ERROR`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p`, `payload` or `out_reply` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payload` is borrowed; on success `*out_reply` receives a new string that
/// the caller frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool; each caller gets the
/// reply to its own request.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `payload` NULL or NUL-terminated; `out_reply`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_request(
    p: *mut ToolpoolPool,
    payload: *const c_char,
    timeout_ms: u32,
    out_reply: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_request_cancellable(p, payload, timeout_ms, std::ptr::null(), out_reply)
    }
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

/// Like `toolpool_pool_request`, but requests with the same `key` go to the same instance
/// while it lives. `*out_instance` receives the instance that answered (`UINT32_MAX` when a
/// one-shot run served it); `*out_moved` is set to true when the key's instance had died
/// and the key moved to another one.
///
/// NULL handling: `p`, `key`, `payload` or `out_reply` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`; `out_instance` and `out_moved` may be NULL (not wanted).
/// Ownership: `key` and `payload` are borrowed; on success `*out_reply` receives a new
/// string that the caller frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; the strings NULL or NUL-terminated; the
/// out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_request_sticky(
    p: *mut ToolpoolPool,
    key: *const c_char,
    payload: *const c_char,
    timeout_ms: u32,
    out_reply: *mut *mut c_char,
    out_instance: *mut u32,
    out_moved: *mut bool,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_request_sticky_cancellable(
            p,
            key,
            payload,
            timeout_ms,
            std::ptr::null(),
            out_reply,
            out_instance,
            out_moved,
        )
    }
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

/// Run a batch: `payloads_json` is a JSON array of strings, each sent as its own request,
/// spread over the pool; `timeout_ms` applies to each. `*out_results_json` receives a
/// JSON array in the same order, one object per payload:
/// `{"ok":true,"text":"...","instance":N or null,"served_by":"pool" or "oneshot"}` or
/// `{"ok":false,"code":<status>,"error":"<message>"}` (`MapResult` of the Rust API). The
/// call succeeds even when some requests fail (each result says), also on a shut-down
/// pool (each result is `TOOLPOOL_SHUT_DOWN`), as `Pool::map` in Rust.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` when `payloads_json` is not a JSON array of strings.
/// NULL handling: `p`, `payloads_json` or `out_results_json` NULL is
/// `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payloads_json` is borrowed; on success `*out_results_json` receives a new
/// string that the caller frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `payloads_json` NULL or NUL-terminated;
/// `out_results_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_map_json(
    p: *mut ToolpoolPool,
    payloads_json: *const c_char,
    timeout_ms: u32,
    out_results_json: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_map_json_cancellable(
            p,
            payloads_json,
            timeout_ms,
            std::ptr::null(),
            out_results_json,
        )
    }
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

/// Lease one idle instance for exclusive use (a multi-step conversation), waiting up to
/// `timeout_ms` for one. A leased instance gets no routed work until the lease is freed.
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_SATURATED`, `TOOLPOOL_UNAVAILABLE`,
/// `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out` receives a new lease that the caller owns and frees with
/// `toolpool_lease_free` (which gives the instance back). The lease keeps the pool's
/// internals alive, so freeing the pool first is safe: the lease's calls then return
/// `TOOLPOOL_SHUT_DOWN`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_lease(
    p: *mut ToolpoolPool,
    timeout_ms: u32,
    out: *mut *mut ToolpoolLease,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe { toolpool_pool_lease_cancellable(p, timeout_ms, std::ptr::null(), out) }
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

/// Options of `toolpool_pool_request_json`, as JSON: `{"key": "..."}` (a sticky key),
/// `{"retry": {"max": N, "on": [causes]}}` (this request's retry instead of the spec's).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOptionsJson {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    retry: Option<crate::Retry>,
}

/// A request with options, its reply as JSON: `{"text": "...", "instance": N|null,
/// "served_by": "pool"|"retry"|"oneshot", "moved": bool}`. `options_json` is NULL or
/// `{"key": "...", "retry": {"max": N, "on": ["dead", ...]}}`: a sticky key (as
/// `toolpool_pool_request_sticky`) and this request's own retry (the spec key `retry`;
/// `{"max": 0}` turns the spec's off).
///
/// Errors: as `toolpool_pool_request_cancellable`; `TOOLPOOL_INVALID_ARGUMENT` for
/// options that are not such JSON (the message names the key).
/// NULL handling: `p`, `payload` or `out_reply_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`;
/// `options_json` and `c` may be NULL.
/// Ownership: the strings and `c` are borrowed for the call; on success `*out_reply_json`
/// receives a new string that the caller frees with `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool; `c` may be triggered
/// from any thread.
///
/// # Safety
/// `p` must be NULL or a live pool handle; the strings NULL or NUL-terminated; `c` NULL or
/// a live token; `out_reply_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_request_json(
    p: *mut ToolpoolPool,
    payload: *const c_char,
    options_json: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_reply_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_request_json", || {
        let pool = try_handle!(p);
        let payload = try_str!(payload);
        let options = try_str_opt!(options_json);
        let out = try_out!(out_reply_json);
        let options: RequestOptionsJson = match options {
            None => RequestOptionsJson {
                key: None,
                retry: None,
            },
            Some(json) => serde_json::from_str(json)
                .map_err(|e| invalid("options_json", &format!("is not valid options: {e}")))?,
        };
        let options = crate::RequestOptions {
            key: options.key,
            retry: options.retry,
        };
        let reply = pool.request_with(payload, &options, try_wait!(timeout_ms, c))?;
        out.write(json_string(&reply)?);
        Ok(())
    })
}
