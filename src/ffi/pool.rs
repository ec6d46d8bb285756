//! `ToolpoolPool`: a pool of warm instances of one tool (wraps [`crate::Pool`]).

use super::cancel::ToolpoolCancel;
use super::lease::ToolpoolLease;
use super::{
    bytes_out, c_string, ffi_call, ffi_void, invalid, json_string, millis, to_u32, Handle,
};
use crate::{MapResult, Pool, ToolSpec};
use std::ffi::c_char;

/// An opaque pool handle, from `toolpool_pool_new` or `toolpool_pool_from_registry`, freed
/// with `toolpool_pool_free`. Every call but `toolpool_pool_free` may be made from many
/// threads at once on the same handle.
pub struct ToolpoolPool {
    pub(crate) pool: Pool,
}

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

impl Handle for ToolpoolPool {
    type Inner = Pool;
    const WHAT: &'static str = "pool";
    fn inner(&self) -> &Pool {
        &self.pool
    }
}

fn boxed(pool: Pool) -> *mut ToolpoolPool {
    Box::into_raw(Box::new(ToolpoolPool { pool }))
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

/// Queue `line` (toolpool appends the newline) for the stdin of instance `instance`.
/// A full stdin queue is `TOOLPOOL_QUEUE_FULL`, never a wait; but an instance that is not
/// running (`lazy`, or stopped when idle) is started first, which waits for its ready
/// line. A line containing a newline is `TOOLPOOL_INVALID_ARGUMENT`. Writing to a child
/// that has died does not raise SIGPIPE in the host.
///
/// Errors: `TOOLPOOL_INDEX_OUT_OF_RANGE`, `TOOLPOOL_DEAD`, `TOOLPOOL_FAILED`,
/// `TOOLPOOL_QUEUE_FULL`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p` or `line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `line` is borrowed (copied before return).
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `line` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_send(
    p: *mut ToolpoolPool,
    instance: u32,
    line: *const c_char,
) -> i32 {
    ffi_call("toolpool_pool_send", || {
        let pool = try_handle!(p);
        let line = try_str!(line);
        pool.send(instance as usize, line)
    })
}

/// Send a JSON-RPC notification to instance `instance` (protocols `jsonrpc` and `lsp`):
/// `payload_json` is `{"method": ..., "params": ...}` as for `toolpool_pool_request`,
/// sent without an id and framed by the protocol (a line, or `Content-Length` headers);
/// no reply is awaited. Like `toolpool_pool_send`, a full stdin queue is
/// `TOOLPOOL_QUEUE_FULL`, never a wait, and a stopped instance is started first.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (a payload that is not such an object, or a pool
/// of another protocol; the message says which), `TOOLPOOL_INDEX_OUT_OF_RANGE`,
/// `TOOLPOOL_DEAD`, `TOOLPOOL_FAILED`, `TOOLPOOL_QUEUE_FULL`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p` or `payload_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payload_json` is borrowed (copied before return); nothing is allocated for
/// the caller.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `payload_json` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_notify(
    p: *mut ToolpoolPool,
    instance: u32,
    payload_json: *const c_char,
) -> i32 {
    ffi_call("toolpool_pool_notify", || {
        let pool = try_handle!(p);
        let payload = try_str!(payload_json);
        pool.notify(instance as usize, payload)
    })
}

/// Queue `line` for an instance picked by routing (round robin among live, unleased
/// instances); `*out_instance` receives its index. Read its output with
/// `toolpool_pool_read_line` or `toolpool_pool_read_any`.
///
/// Errors: `TOOLPOOL_UNAVAILABLE` when no instance can take it; as `toolpool_pool_send`.
/// NULL handling: `p`, `line` or `out_instance` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `line` is borrowed (copied before return).
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `line` NULL or NUL-terminated; `out_instance`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_send_routed(
    p: *mut ToolpoolPool,
    line: *const c_char,
    out_instance: *mut u32,
) -> i32 {
    ffi_call("toolpool_pool_send_routed", || {
        let pool = try_handle!(p);
        let line = try_str!(line);
        let out = try_out!(out_instance);
        let i = pool.send_routed(line)?;
        out.write(to_u32(i));
        Ok(())
    })
}

/// The next stdout line of instance `instance`, without its newline, waiting up to
/// `timeout_ms` (0: only what is already there). Bytes that are not UTF-8 are replaced by
/// U+FFFD, and so is a NUL byte inside the line (so the C string is never cut short).
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_DEAD` (the instance ended and every line it
/// wrote has been read), `TOOLPOOL_INDEX_OUT_OF_RANGE`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_line` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool (two readers of one
/// instance each get different lines).
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_line` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_line(
    p: *mut ToolpoolPool,
    instance: u32,
    timeout_ms: u32,
    out_line: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_read_line_cancellable(p, instance, timeout_ms, std::ptr::null(), out_line)
    }
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

/// Queue the `len` bytes at `data` (toolpool appends the newline) for the stdin of
/// instance `instance`, exactly as given: any byte but `\n` is allowed, NUL and bytes
/// that are not UTF-8 included. Otherwise as `toolpool_pool_send`.
///
/// Errors: as `toolpool_pool_send`; a `\n` among the bytes is `TOOLPOOL_INVALID_ARGUMENT`.
/// NULL handling: `p` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `data` may be NULL only when
/// `len` is 0.
/// Ownership: `data` is borrowed (copied before return).
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `data` NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_send_bytes(
    p: *mut ToolpoolPool,
    instance: u32,
    data: *const u8,
    len: usize,
) -> i32 {
    ffi_call("toolpool_pool_send_bytes", || {
        let pool = try_handle!(p);
        let data = try_bytes!(data, len);
        pool.send_bytes(instance as usize, data)
    })
}

/// The next stdout line of instance `instance`, without its newline, as the exact bytes
/// the tool wrote (no UTF-8 replacement, NUL bytes kept), waiting up to `timeout_ms`.
/// Otherwise as `toolpool_pool_read_line`.
///
/// Errors: as `toolpool_pool_read_line`.
/// NULL handling: `p`, `out_data` or `out_len` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_data` receives a new buffer of `*out_len` bytes (not
/// NUL-terminated; non-NULL even when empty) that the caller frees with
/// `toolpool_bytes_free(data, len)`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_data` and `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_line_bytes(
    p: *mut ToolpoolPool,
    instance: u32,
    timeout_ms: u32,
    out_data: *mut *mut u8,
    out_len: *mut usize,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_read_line_bytes_cancellable(
            p,
            instance,
            timeout_ms,
            std::ptr::null(),
            out_data,
            out_len,
        )
    }
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

/// The next stderr line of instance `instance`, waiting up to `timeout_ms`. Same rules as
/// `toolpool_pool_read_line`. (stderr is always drained; lines nobody reads are dropped
/// past a bound and counted in the status.)
///
/// NULL handling: `p` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_line` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; `out_line` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_stderr_line(
    p: *mut ToolpoolPool,
    instance: u32,
    timeout_ms: u32,
    out_line: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_read_stderr_line", || {
        let pool = try_handle!(p);
        let out = try_out!(out_line);
        let line = pool.read_stderr_line(instance as usize, millis(timeout_ms))?;
        out.write(c_string(line));
        Ok(())
    })
}

/// The first stdout line from any instance, waiting up to `timeout_ms`: `*out_instance`
/// receives the instance index and `*out_line` the line (same rules as
/// `toolpool_pool_read_line`).
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `p`, `out_instance` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_line` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same pool.
///
/// # Safety
/// `p` must be NULL or a live pool handle; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_read_any(
    p: *mut ToolpoolPool,
    timeout_ms: u32,
    out_instance: *mut u32,
    out_line: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_pool_read_any_cancellable(p, timeout_ms, std::ptr::null(), out_instance, out_line)
    }
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
    p: *mut ToolpoolPool,
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
    p: *mut ToolpoolPool,
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
    p: *mut ToolpoolPool,
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
    p: *mut ToolpoolPool,
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
    p: *mut ToolpoolPool,
    out: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_pool_metrics_prometheus", || {
        let pool = try_handle!(p);
        let out = try_out!(out);
        out.write(c_string(pool.metrics_prometheus()));
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
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `p`; `p` must not be used afterwards.
/// Thread safety: must not race any other call on the same handle (finish or join every
/// thread using it first); other pools are unaffected.
///
/// # Safety
/// `p` must be NULL or a handle from `toolpool_pool_new` / `toolpool_pool_from_registry`
/// not yet freed, with no call on it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_pool_free(p: *mut ToolpoolPool) {
    if p.is_null() {
        return;
    }
    ffi_void("toolpool_pool_free", || {
        // SAFETY: `p` came from `Box::into_raw` in `boxed` (the caller's contract).
        drop(unsafe { Box::from_raw(p) });
    });
}
