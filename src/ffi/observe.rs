//! The C side of observability: the log callback ([`toolpool_set_log_callback`], over
//! [`crate::log_bridge`]) and the Prometheus exposition of every live pool
//! ([`toolpool_metrics_prometheus_all`]).

use super::{c_string, ffi_call, invalid};
use crate::log_bridge;
use std::ffi::{c_char, c_void, CString};

/// A log record for the host: `level` is 1 = error, 2 = warn, 3 = info, 4 = debug,
/// 5 = trace (the `log` crate's order); `target` is `"toolpool"` (life-cycle records) or
/// `"toolpool::stderr"` (a tool's stderr line, spec key `stderr: "log"`); `message` starts
/// with the event name and carries `key=value` fields (docs/observability.md, "Logs").
/// Both strings are NUL-terminated UTF-8, borrowed for the call only: copy them to keep
/// them.
pub type ToolpoolLogCallback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        level: i32,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// The host's callback and its userdata, as the bridge's sink.
struct CSink {
    cb: unsafe extern "C" fn(*mut c_void, i32, *const c_char, *const c_char),
    userdata: *mut c_void,
}

// SAFETY: the contract of `toolpool_set_log_callback`: the callback may be called from any
// thread, several at once, with this userdata; the host makes that safe.
unsafe impl Send for CSink {}
// SAFETY: as above.
unsafe impl Sync for CSink {}

impl CSink {
    fn call(&self, level: log::Level, target: &str, message: &str) {
        let c = |s: &str| CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default();
        let (t, m) = (c(target), c(message));
        // SAFETY: the host gave a valid function pointer; the strings live for the call.
        unsafe {
            (self.cb)(
                self.userdata,
                log_bridge::level_number(level),
                t.as_ptr(),
                m.as_ptr(),
            )
        }
    }
}

/// Send toolpool's log records up to `max_level` (0 = none, 1 = error, 2 = warn, 3 = info,
/// 4 = debug, 5 = trace) to `cb`, with `userdata` passed back on every call; `cb` NULL
/// removes the callback (records are then not built at all).
///
/// The first call with a callback installs toolpool's logger as the process's `log`
/// logger. The rule for a Rust host: if the process already has a `log` logger (a Rust
/// program that links toolpool and set up `env_logger` or the like), this call changes
/// nothing and fails with `TOOLPOOL_INVALID_ARGUMENT` (the records keep going to that
/// logger); toolpool never replaces a host's logger, and never installs one unless this
/// function is called.
///
/// Calling threads: `cb` is called on the thread that emits the record: a pool's
/// supervisor thread, an instance's stderr thread (which also reaps its process), or the
/// thread of a toolpool call (a start, a timeout, a refused request), also during
/// `toolpool_pool_shutdown` and `toolpool_pool_free`; several threads may call it at
/// once, so it must be thread-safe.
/// It must not call toolpool functions (a record emitted inside it is dropped, and
/// `toolpool_set_log_callback` from inside it fails). It should return quickly: the
/// emitting thread waits for it. No record is emitted on the path of a successful request.
///
/// NULL handling: `cb` NULL removes the callback; `userdata` may be NULL (passed as is).
/// Ownership: `userdata` stays the caller's and must stay valid until the callback is
/// replaced or removed; `target` and `message` are borrowed for one call.
/// Thread safety: safe from any thread; once it returns, the previous callback is not
/// running and is never called again.
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` for a level outside 0..=5, another `log` logger in
/// the process, or a call from inside the callback.
///
/// # Safety
/// `cb` must be NULL or a function that may be called as described, with `userdata`.
#[no_mangle]
pub unsafe extern "C" fn toolpool_set_log_callback(
    max_level: i32,
    cb: ToolpoolLogCallback,
    userdata: *mut c_void,
) -> i32 {
    ffi_call("toolpool_set_log_callback", || {
        let level = log_bridge::level_filter(max_level)
            .ok_or_else(|| invalid("max_level", "must be between 0 and 5"))?;
        let sink = cb.map(|cb| {
            let s = CSink { cb, userdata };
            Box::new(move |l: log::Level, t: &str, m: &str| s.call(l, t, m)) as log_bridge::Sink
        });
        log_bridge::set_sink(level, sink)
    })
}

/// The Prometheus text exposition (format 0.0.4) of every live pool in the process (made
/// and neither shut down nor freed), with the global process limit: what a `/metrics`
/// handler serves. Pools sharing a tool id get a `pool` label after the first.
///
/// NULL handling: `out_text` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_text` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from any thread, also while pools are made and freed.
///
/// # Safety
/// `out_text` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_metrics_prometheus_all(out_text: *mut *mut c_char) -> i32 {
    ffi_call("toolpool_metrics_prometheus_all", || {
        let out = try_out!(out_text);
        out.write(c_string(crate::pool::metrics_prometheus_all()));
        Ok(())
    })
}
