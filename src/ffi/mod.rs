//! The C ABI (see `include/toolpool.h`, generated from these files by cbindgen).
//!
//! A thin skin over the Rust API, with no logic of its own: each `extern "C"` function
//! checks its pointers, converts its arguments, calls the Rust API and converts the result.
//! Shared plumbing lives here: the thread-local last error, the panic boundary
//! (`ffi_call`), and the boundary macros (`try_handle!`, `try_str!`, `try_out!`, ...) that
//! hold the pointer conversions and their SAFETY arguments. The status enum is the core's
//! [`ToolpoolStatus`] table. One file per C object: [`pool`] (its life cycle; the
//! calls on a pool by subject in [`lines`], [`requests`] and [`status`]), [`pools`] (a
//! pool per tool of a registry, lending pool handles), [`lease`],
//! [`limiter`], [`strings`] (errors, strings, version), [`cancel`] (cancel tokens and the
//! cancellable forms of the blocking calls), [`observe`] (the log callback, the metrics
//! of every pool), [`completions`] (the completion queue), [`client`] (a `toolpool serve`
//! service, whose pools are `ToolpoolPool`s), [`run`] (one command run under the process
//! limit), [`permit`] (a slot of the limit for a process the host starts itself).
//!
//! Global contract (also in docs/errors.md, "C API conventions"):
//! - Every function that returns `int32_t` returns a [`ToolpoolStatus`] value; 0 is success.
//! - Out-parameters are written only on success.
//! - On failure a message is stored in a thread-local slot ([`strings`]); on success the
//!   slot is cleared.
//! - Strings returned through `char **` are owned by the caller and freed with
//!   `toolpool_string_free`.
//! - A NULL handle or pointer is `TOOLPOOL_INVALID_ARGUMENT`, never a crash.
//! - No panic crosses the boundary: it becomes `TOOLPOOL_PANIC`.

/// The boundary macros, in the style of rustls-ffi: each wraps one unsafe conversion of a
/// parameter, names the parameter in the error, and carries the one SAFETY argument that
/// every C function's `# Safety` section makes true for its parameters (NULL or valid for
/// the call). Function bodies then hold no `unsafe` of their own.
macro_rules! try_handle {
    ($p:ident) => {
        // SAFETY: the function's contract: `$p` is NULL or a live handle of its type.
        unsafe { $crate::ffi::handle($p, stringify!($p)) }?
    };
}

/// A `const char *` parameter as `&str`: NULL or invalid UTF-8 is INVALID_ARGUMENT.
macro_rules! try_str {
    ($p:ident) => {
        // SAFETY: the function's contract: `$p` is NULL or a NUL-terminated string that
        // lives for the call.
        unsafe { $crate::ffi::cstr($p, stringify!($p)) }?
    };
}

/// A `const char *` parameter that may be NULL, as `Option<&str>`.
macro_rules! try_str_opt {
    ($p:ident) => {
        // SAFETY: as `try_str!`; NULL is allowed.
        unsafe { $crate::ffi::cstr_opt($p, stringify!($p)) }?
    };
}

/// A buffer parameter followed by its length, as `&[u8]`.
macro_rules! try_bytes {
    ($p:ident, $len:ident) => {
        // SAFETY: the function's contract: `$p` is NULL (only with `$len` 0) or readable
        // for `$len` bytes for the call.
        unsafe { $crate::ffi::bytes_in($p, $len, stringify!($p)) }?
    };
}

/// A required out-parameter: NULL is INVALID_ARGUMENT; written only on success.
macro_rules! try_out {
    ($p:ident) => {
        // SAFETY: the function's contract: `$p` is NULL or writable for the call.
        unsafe { $crate::ffi::out($p, stringify!($p)) }?
    };
}

/// An optional out-parameter (NULL: not wanted).
macro_rules! opt_out {
    ($p:ident) => {
        // SAFETY: the function's contract: `$p` is NULL or writable for the call.
        unsafe { $crate::ffi::out_opt($p) }
    };
}

pub mod cancel;
pub mod client;
pub mod completions;
/// The `Wait` of a cancellable call: `timeout_ms`, and the token `$c` unless it is NULL.
macro_rules! try_wait {
    ($ms:ident, $c:ident) => {{
        // SAFETY: the function's contract: `$c` is NULL or a live cancel token that
        // outlives the call.
        let token = unsafe { $c.as_ref() }.map(|c| c.inner());
        let wait = $crate::Wait::new($crate::ffi::millis($ms));
        match token {
            Some(t) => wait.with_cancel(t),
            None => wait,
        }
    }};
}

pub mod lease;
pub mod limiter;
pub mod lines;
pub mod observe;
pub mod permit;
pub mod pool;
pub mod pools;
pub mod requests;
pub mod run;
pub mod status;
pub mod strings;

use crate::error::Error;
use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

pub use crate::status::ToolpoolStatus;

/// The last failure on this thread: status code and message.
struct LastError {
    code: i32,
    message: CString,
}

thread_local! {
    static LAST_ERROR: RefCell<Option<LastError>> = const { RefCell::new(None) };
}

/// Store `code` and `message` as this thread's last error.
pub(crate) fn set_last_error(code: i32, message: &str) {
    let message = CString::new(message.replace('\0', "\u{FFFD}")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(LastError { code, message }));
}

fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// This thread's last error code (0 if none).
pub(crate) fn last_error_code() -> i32 {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(0, |e| e.code))
}

/// This thread's last error message, or NULL. The pointer stays valid until the slot is
/// next written (the next status-returning call on this thread).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| {
        e.borrow()
            .as_ref()
            .map_or(std::ptr::null(), |e| e.message.as_ptr())
    })
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// The panic boundary of every status-returning function: runs `f`, catches a panic,
/// maps `Err` to its status and stores the message as the thread's last error; clears
/// the last error on success. `func` names the C function for panic messages.
pub(crate) fn ffi_call(func: &str, f: impl FnOnce() -> Result<(), Error>) -> i32 {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            clear_last_error();
            ToolpoolStatus::TOOLPOOL_OK as i32
        }
        Ok(Err(e)) => {
            let code = e.code();
            set_last_error(code, &e.to_string());
            code
        }
        Err(payload) => {
            let code = ToolpoolStatus::TOOLPOOL_PANIC as i32;
            set_last_error(
                code,
                &format!(
                    "panic in {func}: {} (a toolpool bug, please report it)",
                    panic_message(&*payload)
                ),
            );
            code
        }
    }
}

/// The panic boundary of the `void` functions (the `_free`s): a panic is caught and stored
/// as the last error; nothing else touches the last error.
pub(crate) fn ffi_void(func: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        set_last_error(
            ToolpoolStatus::TOOLPOOL_PANIC as i32,
            &format!(
                "panic in {func}: {} (a toolpool bug, please report it)",
                panic_message(&*payload)
            ),
        );
    }
}

/// `Error::InvalidArgument` naming parameter `name`.
pub(crate) fn invalid(name: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("{name} {why}"))
}

/// A C handle type: an opaque box around one Rust object.
pub(crate) trait Handle {
    /// The Rust object inside.
    type Inner;
    /// What the handle is, for messages ("pool", "lease").
    const WHAT: &'static str;
    /// The Rust object inside.
    fn inner(&self) -> &Self::Inner;
}

/// The object behind handle parameter `name`, or INVALID_ARGUMENT if NULL. Use
/// [`try_handle!`].
///
/// # Safety
/// `p` must be NULL or point to a live `H` for `'a`.
pub(crate) unsafe fn handle<'a, H: Handle + 'a>(
    p: *const H,
    name: &str,
) -> Result<&'a H::Inner, Error> {
    // SAFETY: non-NULL and live per the caller's contract.
    match unsafe { p.as_ref() } {
        Some(h) => Ok(h.inner()),
        None => Err(invalid(
            &format!("{name} (the {} handle)", H::WHAT),
            "is NULL",
        )),
    }
}

/// Check that out-pointer `p` is not NULL; the write happens later, on success only. Use
/// [`try_out!`].
///
/// # Safety
/// `p` must be NULL or valid for a write of `T` for the rest of the call.
pub(crate) unsafe fn out<T>(p: *mut T, name: &str) -> Result<OutPtr<T>, Error> {
    if p.is_null() {
        Err(invalid(name, "is NULL"))
    } else {
        Ok(OutPtr(p))
    }
}

/// An optional out-pointer (NULL: the caller does not want the value). Use [`opt_out!`].
///
/// # Safety
/// As [`out`].
pub(crate) unsafe fn out_opt<T>(p: *mut T) -> Option<OutPtr<T>> {
    (!p.is_null()).then_some(OutPtr(p))
}

/// A checked, non-NULL out-pointer, valid for one write during the call (the promise made
/// to [`out`]). It is not `Send`, so it cannot outlive the call's thread.
pub(crate) struct OutPtr<T>(*mut T);

impl<T> OutPtr<T> {
    /// Write `v`. Called only once everything has succeeded.
    pub(crate) fn write(self, v: T) {
        // SAFETY: non-NULL (checked in `out`) and writable for the call (the promise made
        // to the unsafe `out`); `write` does not drop whatever (possibly uninitialised)
        // value was there.
        unsafe { self.0.write(v) }
    }
}

/// The UTF-8 text of NUL-terminated string `p`; NULL or invalid UTF-8 is
/// INVALID_ARGUMENT naming `name`.
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn cstr<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(invalid(name, "is NULL"));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| {
        invalid(
            name,
            &format!(
                "is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Like [`cstr`] but NULL is `None`.
///
/// # Safety
/// As [`cstr`].
pub(crate) unsafe fn cstr_opt<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Error> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded contract.
        unsafe { cstr(p, name) }.map(Some)
    }
}

/// Borrow `len` bytes at `p` (NULL allowed only for `len` 0).
///
/// # Safety
/// `p` must be NULL or readable for `len` bytes for the duration of the call.
pub(crate) unsafe fn bytes_in<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(name, "is NULL but its length is not 0"));
    }
    // SAFETY: non-NULL and readable for `len` bytes per the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Hand a byte buffer to C: pointer and length, freed with `toolpool_bytes_free`.
pub(crate) fn bytes_out(v: Vec<u8>) -> (*mut u8, usize) {
    let b: Box<[u8]> = v.into_boxed_slice();
    let len = b.len();
    (Box::into_raw(b).cast::<u8>(), len)
}

/// A string for the caller, freed with `toolpool_string_free`. A NUL byte inside (a tool
/// may print one) becomes U+FFFD, so the C string is never cut short.
pub(crate) fn c_string(s: String) -> *mut c_char {
    let c = match CString::new(s) {
        Ok(c) => c,
        Err(e) => {
            let s = String::from_utf8(e.into_vec())
                .unwrap_or_default()
                .replace('\0', "\u{FFFD}");
            CString::new(s).unwrap_or_default()
        }
    };
    c.into_raw()
}

/// JSON text of `v` as a caller-owned C string.
pub(crate) fn json_string<T: serde::Serialize>(v: &T) -> Result<*mut c_char, Error> {
    serde_json::to_string(v)
        .map(c_string)
        .map_err(|e| Error::Io(format!("cannot serialise to JSON: {e}")))
}

/// A C timeout in milliseconds.
pub(crate) fn millis(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// A count or index for C, saturating at `u32::MAX`.
pub(crate) fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_becomes_status_and_message() {
        // The default hook prints the panic to stderr; that is expected here.
        let rc = ffi_call("toolpool_test", || panic!("boom"));
        assert_eq!(rc, ToolpoolStatus::TOOLPOOL_PANIC as i32);
        assert_eq!(last_error_code(), 99);
        // SAFETY: the pointer is a NUL-terminated string that toolpool returned and keeps alive.
        let msg = unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap();
        assert!(
            msg.contains("toolpool_test") && msg.contains("boom"),
            "{msg}"
        );
        assert_eq!(ffi_call("toolpool_test", || Ok(())), 0);
        assert!(last_error_ptr().is_null());
        assert_eq!(last_error_code(), 0);
    }

    #[test]
    fn strings_in_and_out() {
        let bad = [0x66u8, 0xff, 0];
        // SAFETY: a NUL-terminated buffer (or NULL) that lives for the call.
        let e = unsafe { cstr(bad.as_ptr().cast(), "line") }.unwrap_err();
        assert_eq!(e.code(), 1);
        assert!(e.to_string().contains("line"));
        // SAFETY: a NUL-terminated buffer (or NULL) that lives for the call.
        let e = unsafe { cstr(std::ptr::null(), "spec_json") }.unwrap_err();
        assert!(e.to_string().contains("spec_json is NULL"));
        let p = c_string("a\0b".to_string());
        // SAFETY: the pointer came from `c_string` (CString::into_raw) just above.
        let back = unsafe { CString::from_raw(p) };
        assert_eq!(back.to_str().unwrap(), "a\u{FFFD}b");
    }
}
