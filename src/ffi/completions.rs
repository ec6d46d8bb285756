//! `ToolpoolCompletions`: a completion queue (wraps [`crate::Completions`]): submit requests
//! with a tag, watch one descriptor, take the answers as they come. For hosts that wait on
//! an event loop (epoll, libuv, Python's asyncio) instead of a blocked thread per call.

use super::pool::ToolpoolPool;
use super::{c_string, ffi_call, ffi_void, millis, to_u32, Handle};
use crate::{Completions, Error, Pool};
use std::borrow::Borrow;
use std::ffi::c_char;

/// An opaque completion queue, from `toolpool_completions_new`, freed with
/// `toolpool_completions_free`. Every call but `toolpool_completions_free` may be made from
/// many threads at once on the same queue.
pub struct ToolpoolCompletions {
    queue: Completions,
}

impl Handle for ToolpoolCompletions {
    type Inner = Completions;
    const WHAT: &'static str = "completion queue";
    fn inner(&self) -> &Completions {
        &self.queue
    }
}

/// One finished request, filled by `toolpool_completions_take`.
#[repr(C)]
#[derive(Debug)]
pub struct ToolpoolCompletion {
    /// The tag the request was submitted with.
    pub tag: u64,
    /// The request's outcome: `TOOLPOOL_OK`, or the status it failed with
    /// (`TOOLPOOL_CANCELLED` after `toolpool_completions_cancel`, `TOOLPOOL_TIMEOUT`, ...).
    pub status: i32,
    /// The instance that answered; `UINT32_MAX` when it failed or a one-shot run served it.
    pub instance: u32,
    /// For a sticky request: the key's instance had died and the key moved.
    pub moved: bool,
    /// Which path served it: `"pool"`, `"retry"` or `"oneshot"` (a string with static
    /// storage: never freed); NULL when it failed.
    pub served_by: *const c_char,
    /// The reply on `TOOLPOOL_OK`, else the error message (what `toolpool_last_error_message`
    /// would say). Never NULL; freed by the caller with `toolpool_string_free`.
    pub text: *mut c_char,
}

/// A pool borrowed by a submitted request for as long as it runs.
struct PoolRef(*const ToolpoolPool);

// SAFETY: a `Pool` is `Sync`, and the C contract of the submitting functions keeps the
// pool alive (not freed) until the request has completed.
unsafe impl Send for PoolRef {}

impl Borrow<Pool> for PoolRef {
    fn borrow(&self) -> &Pool {
        // SAFETY: non-NULL (checked at submission) and live until the request completed,
        // per the contract of `toolpool_completions_request`.
        unsafe { (*self.0).inner() }
    }
}

/// Make a completion queue that runs at most `max_threads` requests at once (1 to 1024;
/// more wait in the queue, still cancellable). Its threads are made on demand and end
/// with `toolpool_completions_free`. One eventfd is made (`toolpool_completions_fd`).
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (`max_threads` out of range), `TOOLPOOL_IO` (no
/// eventfd).
/// NULL handling: `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out` receives a new queue that the caller owns and frees with
/// `toolpool_completions_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `out` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_new(
    max_threads: u32,
    out: *mut *mut ToolpoolCompletions,
) -> i32 {
    ffi_call("toolpool_completions_new", || {
        let out = try_out!(out);
        let queue = Completions::new(max_threads as usize)?;
        out.write(Box::into_raw(Box::new(ToolpoolCompletions { queue })));
        Ok(())
    })
}

/// The queue's descriptor: readable while completions wait to be taken. Watch it for
/// reading (poll, epoll, a loop's reader callback) and call `toolpool_completions_take`
/// when it is; never read, write or close it.
///
/// NULL handling: `q` or `out_fd` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: the descriptor belongs to the queue and is closed by
/// `toolpool_completions_free`.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `q` must be NULL or a live queue; `out_fd` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_fd(
    q: *const ToolpoolCompletions,
    out_fd: *mut i32,
) -> i32 {
    ffi_call("toolpool_completions_fd", || {
        let queue = try_handle!(q);
        let out = try_out!(out_fd);
        out.write(queue.fd());
        Ok(())
    })
}

/// Submit `payload` as one request on pool `p` (as `toolpool_pool_request`: routing,
/// framing, waiting up to `timeout_ms` for an instance and the reply) and return at once;
/// a thread of the queue runs it, and its completion, with `tag`, is taken with
/// `toolpool_completions_take`. Each submitted request completes exactly once.
///
/// Errors (of the submission; the request's own errors come in its completion):
/// `TOOLPOOL_INVALID_ARGUMENT` (`tag` already pending on this queue, invalid UTF-8).
/// NULL handling: `q`, `p` or `payload` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `payload` is copied before return. `p` is borrowed until the request has
/// completed: free the pool only after each request submitted on it completed (or after
/// `toolpool_completions_free`); `toolpool_pool_shutdown` makes them complete at once.
/// Thread safety: safe from many threads at once on the same queue and pool.
///
/// # Safety
/// `q` must be NULL or a live queue; `p` NULL or a live pool that stays live as said
/// above; `payload` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_request(
    q: *const ToolpoolCompletions,
    p: *const ToolpoolPool,
    payload: *const c_char,
    timeout_ms: u32,
    tag: u64,
) -> i32 {
    ffi_call("toolpool_completions_request", || {
        let queue = try_handle!(q);
        try_handle!(p);
        let payload = try_str!(payload);
        queue.request(PoolRef(p), tag, payload, millis(timeout_ms))
    })
}

/// `toolpool_completions_request` as `toolpool_pool_request_sticky`: requests with the same
/// `key` go to the same instance while it lives (the completion's `instance` and `moved`
/// say where it went).
///
/// Errors, NULL handling, ownership and thread safety: as `toolpool_completions_request`;
/// `key` NULL is `TOOLPOOL_INVALID_ARGUMENT` and is copied before return.
///
/// # Safety
/// As `toolpool_completions_request`; `key` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_request_sticky(
    q: *const ToolpoolCompletions,
    p: *const ToolpoolPool,
    key: *const c_char,
    payload: *const c_char,
    timeout_ms: u32,
    tag: u64,
) -> i32 {
    ffi_call("toolpool_completions_request_sticky", || {
        let queue = try_handle!(q);
        try_handle!(p);
        let key = try_str!(key);
        let payload = try_str!(payload);
        queue.request_sticky(PoolRef(p), tag, key, payload, millis(timeout_ms))
    })
}

/// Cancel the pending request submitted with `tag`: it completes with `TOOLPOOL_CANCELLED`
/// within milliseconds (at once when it has not started), with the guarantees of a
/// timeout (its reply never reaches another caller). `*out_found` (if not NULL) receives
/// 1, or 0 when no request with that tag was pending (it completed already).
///
/// NULL handling: `q` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `out_found` may be NULL.
/// Ownership: nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `q` must be NULL or a live queue; `out_found` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_cancel(
    q: *const ToolpoolCompletions,
    tag: u64,
    out_found: *mut u32,
) -> i32 {
    ffi_call("toolpool_completions_cancel", || {
        let queue = try_handle!(q);
        let found = queue.cancel(tag);
        if let Some(out) = opt_out!(out_found) {
            out.write(u32::from(found));
        }
        Ok(())
    })
}

/// Take up to `cap` finished requests, oldest first, into `out[0..*out_count]`; never
/// waits (`*out_count` 0 when none is there). The descriptor stops being readable once
/// the last one is taken.
///
/// NULL handling: `q`, `out` or `out_count` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: each completion's `text` is a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from any thread; each completion is taken once.
///
/// # Safety
/// `q` must be NULL or a live queue; `out` NULL or writable for `cap` completions;
/// `out_count` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_take(
    q: *const ToolpoolCompletions,
    out: *mut ToolpoolCompletion,
    cap: usize,
    out_count: *mut usize,
) -> i32 {
    ffi_call("toolpool_completions_take", || {
        let queue = try_handle!(q);
        let count = try_out!(out_count);
        if out.is_null() {
            return Err(super::invalid("out", "is NULL"));
        }
        let mut n = 0;
        while n < cap {
            let Some(c) = queue.next() else { break };
            let (status, instance, moved, served_by, text) = match c.result {
                Ok(r) => {
                    let by = r.served_by.c_name().as_ptr();
                    (0, r.instance.map_or(u32::MAX, to_u32), r.moved, by, r.text)
                }
                Err(e) => (e.code(), u32::MAX, false, std::ptr::null(), e.to_string()),
            };
            // SAFETY: `out` is writable for `cap` completions (the contract) and n < cap.
            unsafe {
                out.add(n).write(ToolpoolCompletion {
                    tag: c.tag,
                    status,
                    instance,
                    moved,
                    served_by,
                    text: c_string(text),
                })
            };
            n += 1;
        }
        count.write(n);
        Ok::<(), Error>(())
    })
}

/// Wait until a completion is there to take, up to `timeout_us` microseconds: spinning for
/// at most 50 us when the process may use more than one CPU, then asleep in `poll` on the
/// queue's descriptor. `*out_ready` receives 1 when one is there, else 0. For a host that
/// expects a reply within microseconds and would rather not go through its event loop.
///
/// NULL handling: `q` or `out_ready` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `q` must be NULL or a live queue; `out_ready` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_wait(
    q: *const ToolpoolCompletions,
    timeout_us: u32,
    out_ready: *mut u32,
) -> i32 {
    ffi_call("toolpool_completions_wait", || {
        let queue = try_handle!(q);
        let out = try_out!(out_ready);
        let ready = queue.wait(std::time::Duration::from_micros(u64::from(timeout_us)));
        out.write(u32::from(ready));
        Ok(())
    })
}

/// Free a queue: cancel its pending requests, wait for its threads to end (milliseconds),
/// drop the completions nobody took, close its descriptor.
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `q`; `q` must not be used afterwards.
/// Thread safety: must not race another call on the same queue.
///
/// # Safety
/// `q` must be NULL or a queue from `toolpool_completions_new` not yet freed.
#[no_mangle]
pub unsafe extern "C" fn toolpool_completions_free(q: *mut ToolpoolCompletions) {
    ffi_void("toolpool_completions_free", || {
        if !q.is_null() {
            // SAFETY: per the contract, `q` came from `toolpool_completions_new` and is
            // freed once.
            drop(unsafe { Box::from_raw(q) });
        }
    })
}
