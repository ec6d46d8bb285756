//! `ToolpoolCancel`: a cancel token (wraps [`crate::CancelToken`]). The cancellable forms
//! of the blocking calls live beside their plain forms ([`super::pool`], [`super::lease`]):
//! each is its plain form plus a `const ToolpoolCancel *c` parameter after the timeout
//! (NULL: not cancellable); the plain form calls it with NULL.
//!
//! A call waiting with a token that another thread triggers returns `TOOLPOOL_CANCELLED`
//! within milliseconds, with the guarantees of a timeout (no reply of the abandoned
//! request ever reaches another caller). A token triggered before the call makes it
//! return at once. A token may serve any number of calls, at once or one after another;
//! once triggered it stays triggered (make a new one for new calls).

use super::{ffi_call, ffi_void, Handle};
use crate::CancelToken;

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
