//! Errors, strings and version: the last-error slot, `toolpool_string_free`, the version
//! and status names.

use super::{ffi_void, last_error_code, last_error_ptr, ToolpoolStatus};
use std::ffi::{c_char, CString};

/// The message of the last failed call on this thread, or NULL if the last
/// status-returning call on this thread succeeded (or none was made).
///
/// NULL handling: takes no pointer; returns NULL when there is no error.
/// Ownership: the string is owned by toolpool (do not free it); it stays valid until the
/// next status-returning toolpool call on this thread. Copy it to keep it.
/// Thread safety: each thread has its own slot; safe from any thread. Does not change the
/// slot, nor does `toolpool_last_error_code`, `toolpool_string_free`, `toolpool_version`
/// or `toolpool_status_name`.
#[no_mangle]
pub extern "C" fn toolpool_last_error_message() -> *const c_char {
    last_error_ptr()
}

/// The status of the last failed call on this thread (`TOOLPOOL_OK` if the last
/// status-returning call on this thread succeeded, or none was made).
///
/// NULL handling: takes no pointer.
/// Ownership: nothing to free.
/// Thread safety: per thread, like `toolpool_last_error_message`.
#[no_mangle]
pub extern "C" fn toolpool_last_error_code() -> i32 {
    last_error_code()
}

/// Free a string that toolpool returned through a `char **` out-parameter.
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `s`; `s` must not be used afterwards. Never pass it
/// to `free()`, and never pass a string toolpool did not allocate, nor the `const char *`
/// of `toolpool_last_error_message`, `toolpool_version` or `toolpool_status_name`.
/// Thread safety: safe from any thread (a string may be freed on another thread than the
/// one that received it).
///
/// # Safety
/// `s` must be NULL or a string returned by toolpool and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn toolpool_string_free(s: *mut c_char) {
    if s.is_null() {
        return;
    }
    ffi_void("toolpool_string_free", || {
        // SAFETY: `s` came from `CString::into_raw` in `c_string` (the caller's contract).
        drop(unsafe { CString::from_raw(s) });
    });
}

/// Free a byte buffer returned by toolpool (`toolpool_pool_read_line_bytes`), with the
/// length it came with.
///
/// NULL handling: `data` NULL is a no-op.
/// Ownership: takes back the buffer; do not use it afterwards. Never pass it to `free()`,
/// never pass a buffer toolpool did not allocate, and always pass its exact length.
/// Thread safety: safe from any thread.
///
/// # Safety
/// `data` must be NULL or a buffer returned by toolpool with length `len`, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn toolpool_bytes_free(data: *mut u8, len: usize) {
    if data.is_null() {
        return;
    }
    ffi_void("toolpool_bytes_free", || {
        // SAFETY: `data`/`len` came from `bytes_out` (the caller's contract).
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(data, len)) });
    });
}

/// The library version, e.g. `"0.1.0"`.
///
/// NULL handling: takes no pointer; never returns NULL.
/// Ownership: a static string; do not free it.
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn toolpool_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    VERSION.as_ptr().cast()
}

/// The name of a status constant, e.g. `"TOOLPOOL_TIMEOUT"` for 4; `"TOOLPOOL_UNKNOWN"`
/// for a value that is not a `ToolpoolStatus`.
///
/// NULL handling: takes no pointer; never returns NULL.
/// Ownership: a static string; do not free it.
/// Thread safety: safe from any thread.
#[no_mangle]
pub extern "C" fn toolpool_status_name(status: i32) -> *const c_char {
    ToolpoolStatus::from_code(status)
        .map_or(c"TOOLPOOL_UNKNOWN", ToolpoolStatus::name)
        .as_ptr()
}
