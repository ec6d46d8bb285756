//! `ToolpoolLease`: exclusive use of one instance (wraps [`crate::Lease`]).

use super::cancel::ToolpoolCancel;
use super::{c_string, ffi_call, ffi_void, to_u32, Handle};
use crate::Lease;
use std::ffi::c_char;

/// An opaque lease handle, from `toolpool_pool_lease`, freed with `toolpool_lease_free`.
/// A lease is one conversation: use it from one thread at a time (it may move between
/// threads).
pub struct ToolpoolLease {
    lease: Lease,
}

impl ToolpoolLease {
    pub(crate) fn boxed(lease: Lease) -> *mut ToolpoolLease {
        Box::into_raw(Box::new(ToolpoolLease { lease }))
    }
}

impl Handle for ToolpoolLease {
    type Inner = Lease;
    const WHAT: &'static str = "lease";
    fn inner(&self) -> &Lease {
        &self.lease
    }
}

/// The index of the leased instance.
///
/// NULL handling: `l` or `out_instance` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `l` is borrowed; nothing is allocated.
/// Thread safety: safe from any thread; the lease itself must not be freed meanwhile.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `out_instance` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_index(
    l: *const ToolpoolLease,
    out_instance: *mut u32,
) -> i32 {
    ffi_call("toolpool_lease_index", || {
        let lease = try_handle!(l);
        let out = try_out!(out_instance);
        out.write(to_u32(lease.index()));
        Ok(())
    })
}

/// Queue `line` (toolpool appends the newline) for the leased instance's stdin.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (a newline in `line`), `TOOLPOOL_DEAD`,
/// `TOOLPOOL_QUEUE_FULL`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `l` or `line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `line` is borrowed (copied before return).
/// Thread safety: one thread at a time per lease.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `line` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_send(l: *mut ToolpoolLease, line: *const c_char) -> i32 {
    ffi_call("toolpool_lease_send", || {
        let lease = try_handle!(l);
        let line = try_str!(line);
        lease.send(line)
    })
}

/// Send a JSON-RPC notification (`{"method": ..., "params": ...}`, no id) to the leased
/// instance (protocols `jsonrpc` and `lsp`), as `toolpool_pool_notify`; no reply is
/// awaited. With a lease, a notification (an LSP `textDocument/didOpen`) and the requests
/// that depend on it reach the same process.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (a bad payload, or another protocol),
/// `TOOLPOOL_DEAD`, `TOOLPOOL_QUEUE_FULL`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `l` or `payload_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payload_json` is borrowed (copied before return); nothing is allocated for
/// the caller.
/// Thread safety: one thread at a time per lease.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `payload_json` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_notify(
    l: *mut ToolpoolLease,
    payload_json: *const c_char,
) -> i32 {
    ffi_call("toolpool_lease_notify", || {
        let lease = try_handle!(l);
        let payload = try_str!(payload_json);
        lease.notify(payload)
    })
}

/// The next stdout line of the leased instance, waiting up to `timeout_ms`. Same rules as
/// `toolpool_pool_read_line` (invalid UTF-8 and NUL bytes become U+FFFD).
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_DEAD`, `TOOLPOOL_SHUT_DOWN`.
/// NULL handling: `l` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_line` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: one thread at a time per lease.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `out_line` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_read_line(
    l: *mut ToolpoolLease,
    timeout_ms: u32,
    out_line: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe { toolpool_lease_read_line_cancellable(l, timeout_ms, std::ptr::null(), out_line) }
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

/// One framed request on the leased instance (framing as `toolpool_pool_request`),
/// waiting up to `timeout_ms` for the reply.
///
/// Errors: as `toolpool_pool_request`.
/// NULL handling: `l`, `payload` or `out_reply` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payload` is borrowed; on success `*out_reply` receives a new string that
/// the caller frees with `toolpool_string_free`.
/// Thread safety: one thread at a time per lease.
///
/// # Safety
/// `l` must be NULL or a live lease handle; `payload` NULL or NUL-terminated; `out_reply`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_request(
    l: *mut ToolpoolLease,
    payload: *const c_char,
    timeout_ms: u32,
    out_reply: *mut *mut c_char,
) -> i32 {
    // SAFETY: the same contract as the cancellable form, with no token.
    unsafe {
        toolpool_lease_request_cancellable(l, payload, timeout_ms, std::ptr::null(), out_reply)
    }
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

/// Free a lease, giving its instance back to the pool. May be called before or after the
/// pool is freed.
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `l`; `l` must not be used afterwards.
/// Thread safety: must not race another call on the same lease.
///
/// # Safety
/// `l` must be NULL or a handle from `toolpool_pool_lease` not yet freed, with no call on
/// it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_lease_free(l: *mut ToolpoolLease) {
    if l.is_null() {
        return;
    }
    ffi_void("toolpool_lease_free", || {
        // SAFETY: `l` came from `Box::into_raw` in `boxed` (the caller's contract).
        drop(unsafe { Box::from_raw(l) });
    });
}
