//! libtoolpool's log records into Python: the C log callback, which calls the package's
//! sink (`_log._on_record`) with the GIL taken.
//!
//! Records are also emitted on the thread that makes a call, so on Python's main thread
//! during a blocking call that a SIGINT is stopping. Python may then run the pending SIGINT
//! handler inside the sink; its `KeyboardInterrupt` cannot cross the C call, so it is not
//! dropped (as ctypes would, printing "Exception ignored") but the signal is tripped again
//! (`PyErr_SetInterrupt`), and the handler runs once more where the interrupted call
//! returns. Any other exception of the sink is reported as unraisable, losing that record
//! only.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::ffi::{c_char, c_void, CStr};
use std::sync::OnceLock;

static SINK: OnceLock<Py<PyAny>> = OnceLock::new();

/// The bytes of a borrowed C string (empty for NULL).
fn bytes<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        &[]
    } else {
        // SAFETY: the library passes NUL-terminated strings valid for the callback.
        unsafe { CStr::from_ptr(p) }.to_bytes()
    }
}

/// The `ToolpoolLogCallback`: `sink(level, target, message)` (bytes), from any thread.
unsafe extern "C" fn on_record(
    _userdata: *mut c_void,
    level: i32,
    target: *const c_char,
    message: *const c_char,
) {
    let Some(sink) = SINK.get() else { return };
    let (target, message) = (bytes(target), bytes(message));
    // No panic may unwind into the library.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Python::attach(|py| {
            let args = (level, PyBytes::new(py, target), PyBytes::new(py, message));
            if let Err(e) = sink.call1(py, args) {
                if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    // SAFETY: takes no arguments; trips SIGINT as the signal itself would.
                    unsafe { pyo3::ffi::PyErr_SetInterrupt() };
                } else {
                    e.write_unraisable(py, Some(sink.bind(py)));
                }
            }
        })
    }));
}

/// Send records up to `max_level` to `sink(level, target, message)`. False when a Rust
/// logger was set first (toolpool embedded in a Rust program): its records go there.
#[pyfunction]
pub fn set_log_sink(sink: Py<PyAny>, max_level: i32) -> PyResult<bool> {
    let api = &crate::bound()?.api;
    if SINK.set(sink).is_err() {
        return Ok(true); // one sink per process; the package sets it once
    }
    // SAFETY: a callback with the declared signature, no userdata.
    let rc = unsafe {
        (api.toolpool_set_log_callback)(max_level, Some(on_record), std::ptr::null_mut())
    };
    Ok(rc == 0)
}

/// Stop sending records (at interpreter exit).
#[pyfunction]
pub fn clear_log_sink() -> PyResult<()> {
    let api = &crate::bound()?.api;
    // SAFETY: NULL removes the callback.
    unsafe { (api.toolpool_set_log_callback)(0, None, std::ptr::null_mut()) };
    Ok(())
}
