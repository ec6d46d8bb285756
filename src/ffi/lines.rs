//! Raw lines on a `ToolpoolPool`: to one instance or a routed one, JSON-RPC
//! notifications, and stdout and stderr lines back (from one instance or any), each
//! blocking read also in a cancellable form.

use super::cancel::ToolpoolCancel;
use super::pool::ToolpoolPool;
use super::{bytes_out, c_string, ffi_call, millis, to_u32, Handle};
use std::ffi::c_char;

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
