//! `toolpool._native`: the hot calls of the toolpool Python package, made without ctypes.
//!
//! ctypes costs about a microsecond and a half per call (argument conversion, a libffi
//! call, the out-parameter objects, a second call to free the reply): a quarter of a whole
//! round trip to a warm child. Here one Python call converts the payload, releases the GIL,
//! makes the C call, and builds the reply `str`; the completion queue's answers come back
//! as one list per wake-up of the event loop.
//!
//! Nothing of toolpool is linked in: [`bind`] looks the C functions up by name in the
//! libtoolpool that the package's ctypes layer loaded (`dlopen` with `RTLD_NOLOAD`), so the
//! process holds one copy of the library and one set of its globals. Handles (pools,
//! cancel tokens, completion queues) come from Python as addresses (`int`), which the
//! package takes from its ctypes objects; errors are raised as the package's exception
//! classes (built by the `error_for_code` function given to [`bind`]). It also carries
//! libtoolpool's log records to Python ([`log`]) and Ctrl-C for the main thread's calls
//! ([`sigint`]).

#[rustfmt::skip]
mod api;
mod log;
mod sigint;

use api::{Api, ToolpoolCompletion};
use pyo3::exceptions::{PyImportError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::OnceLock;

/// `TOOLPOOL_INVALID_ARGUMENT` and `TOOLPOOL_CANCELLED` of include/toolpool.h.
const INVALID_ARGUMENT: i32 = 1;
const CANCELLED: i32 = 17;
/// Completions taken per C call.
const TAKE_BATCH: usize = 64;

pub(crate) struct Bound_ {
    pub(crate) api: Api,
    error_for_code: Py<PyAny>,
}

static BOUND: OnceLock<Bound_> = OnceLock::new();

pub(crate) fn bound() -> PyResult<&'static Bound_> {
    BOUND
        .get()
        .ok_or_else(|| PyImportError::new_err("toolpool._native: bind() was not called"))
}

/// The package's exception for status `code` with `message`.
fn error(py: Python<'_>, code: i32, message: &str) -> PyErr {
    match bound() {
        Ok(b) => match b.error_for_code.call1(py, (code, message)) {
            Ok(exc) => PyErr::from_value(exc.into_bound(py)),
            Err(e) => e,
        },
        Err(e) => e,
    }
}

/// Bind to the libtoolpool at `lib_path`, which must already be loaded (by ctypes), and
/// raise errors as `error_for_code(code, message)`; `main_thread` is
/// `threading.main_thread().ident`. Called once, by the package's import.
#[pyfunction]
fn bind(lib_path: &str, error_for_code: Py<PyAny>, main_thread: u64) -> PyResult<()> {
    sigint::MAIN_THREAD.store(main_thread, std::sync::atomic::Ordering::Relaxed);
    if BOUND.get().is_some() {
        return Ok(());
    }
    let path = CString::new(lib_path)
        .map_err(|_| PyImportError::new_err("toolpool._native: a NUL byte in the library path"))?;
    // SAFETY: a NUL-terminated path; RTLD_NOLOAD only returns a library already loaded.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if handle.is_null() {
        return Err(PyImportError::new_err(format!(
            "toolpool._native: {lib_path} is not loaded in this process"
        )));
    }
    // SAFETY: `handle` is a loaded libtoolpool, whose exported functions are those of
    // include/toolpool.h. The handle's reference is kept (the library stays loaded).
    let api = unsafe { Api::load(|name| libc::dlsym(handle, name.as_ptr())) }
        .map_err(|e| PyImportError::new_err(format!("toolpool._native: {e}")))?;
    let _ = BOUND.set(Bound_ {
        api,
        error_for_code,
    });
    Ok(())
}

/// A `str` (UTF-8) or `bytes` argument as a C string, without a copy: CPython keeps a NUL
/// after both the UTF-8 form of a `str` (`PyUnicode_AsUTF8AndSize`) and a `bytes` object's
/// contents (`PyBytes_AsString`), so the pointer is NUL-terminated and lives as long as `v`.
/// A NUL byte inside, or a `str` that is not valid UTF-8 (lone surrogates), is
/// InvalidArgument; another type TypeError.
fn c_text<'a>(py: Python<'_>, what: &str, v: &'a Bound<'_, PyAny>) -> PyResult<CText<'a>> {
    let bytes: &'a [u8] = if let Ok(s) = v.cast::<PyString>() {
        match s.to_str() {
            Ok(t) => t.as_bytes(),
            Err(e) => {
                return Err(error(
                    py,
                    INVALID_ARGUMENT,
                    &format!("{what} is not valid UTF-8: {e}"),
                ))
            }
        }
    } else if let Ok(b) = v.cast::<PyBytes>() {
        b.as_bytes()
    } else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be str or bytes, not {}",
            v.get_type().name()?
        )));
    };
    if bytes.contains(&0) {
        return Err(error(
            py,
            INVALID_ARGUMENT,
            &format!("{what} contains a NUL byte"),
        ));
    }
    Ok(CText(bytes))
}

/// A NUL-terminated string borrowed from a Python object (see [`c_text`]).
struct CText<'a>(&'a [u8]);

impl CText<'_> {
    /// The address, as an integer that may cross `Python::detach` (the object stays alive:
    /// the caller holds it for the whole call).
    fn addr(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

/// What a blocking call gives back across `Python::detach` (raw pointers are not `Send`).
struct Outcome {
    rc: i32,
    /// The reply (to free with `toolpool_string_free`) on success, else 0.
    reply: usize,
    /// The last-error message on failure, read on the calling thread.
    message: String,
}

/// The reply string of a successful call as `str`, freed on the C side.
fn take_reply<'py>(py: Python<'py>, api: &Api, reply: usize) -> Bound<'py, PyString> {
    let p = reply as *mut c_char;
    // SAFETY: `p` is a NUL-terminated string the library returned and we own.
    let s = PyString::new(py, &unsafe { CStr::from_ptr(p) }.to_string_lossy());
    // SAFETY: `p` came from the library and is freed once.
    unsafe { (api.toolpool_string_free)(p) };
    s
}

/// The last-error message of this thread (after a failed call).
fn last_error(api: &Api) -> String {
    // SAFETY: the library's own thread-local message, valid until the next call here.
    let m = unsafe { (api.toolpool_last_error_message)() };
    if m.is_null() {
        String::new()
    } else {
        // SAFETY: non-NULL and NUL-terminated.
        unsafe { CStr::from_ptr(m) }.to_string_lossy().into_owned()
    }
}

/// The error of a failed blocking call; `interrupted`: the call was armed and a SIGINT
/// stopped it ([`sigint::interrupted_error`]).
fn failure(py: Python<'_>, o: &Outcome, interrupted: bool) -> PyErr {
    if interrupted && o.rc == CANCELLED {
        if let Some(e) = sigint::interrupted_error(py) {
            return e;
        }
    }
    error(py, o.rc, &o.message)
}

/// `toolpool_pool_request_cancellable(pool, payload, timeout_ms, cancel)` with the GIL
/// released; returns the reply. `cancel` is a `ToolpoolCancel *` or 0. On the main thread
/// the call is armed for Ctrl-C ([`sigint`]).
#[pyfunction]
fn request<'py>(
    py: Python<'py>,
    pool: usize,
    payload: &Bound<'py, PyAny>,
    timeout_ms: u32,
    cancel: usize,
) -> PyResult<Bound<'py, PyString>> {
    let b = bound()?;
    let payload = c_text(py, "payload", payload)?;
    let api = &b.api;
    let armed = sigint::arm(py, api, cancel)?;
    let token = armed.unwrap_or(cancel);
    let o = py.detach(|| {
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: `pool` and `token` are live handles lent by the package for the call
        // (or NULL), `payload` a C string, `out` writable.
        let rc = unsafe {
            (api.toolpool_pool_request_cancellable)(
                pool as *mut c_void,
                payload.addr() as *const c_char,
                timeout_ms,
                token as *const c_void,
                &mut out,
            )
        };
        outcome(api, rc, out)
    });
    let interrupted = armed.is_some() && sigint::disarm();
    if o.rc != 0 {
        return Err(failure(py, &o, interrupted));
    }
    Ok(take_reply(py, api, o.reply))
}

fn outcome(api: &Api, rc: i32, out: *mut c_char) -> Outcome {
    Outcome {
        rc,
        reply: out as usize,
        message: if rc == 0 {
            String::new()
        } else {
            last_error(api)
        },
    }
}

/// For a blocking call made through ctypes: arm it for Ctrl-C on the main thread (see
/// [`sigint::arm`]). Returns `(token, armed)`: call with `token` (a `ToolpoolCancel *` or
/// 0), then [`disarm`] if `armed`.
#[pyfunction]
fn arm(py: Python<'_>, cancel: usize) -> PyResult<(usize, bool)> {
    let api = &bound()?.api;
    Ok(match sigint::arm(py, api, cancel)? {
        Some(t) => (t, true),
        None => (cancel, false),
    })
}

/// After a call [`arm`]ed, which ended with `status`: None, or the error a SIGINT during
/// the call makes of a `TOOLPOOL_CANCELLED` (see [`sigint::interrupted_error`]).
#[pyfunction]
fn disarm(py: Python<'_>, status: i32) -> Option<PyErr> {
    (sigint::disarm() && status == CANCELLED)
        .then(|| sigint::interrupted_error(py))
        .flatten()
}

/// In a child after `fork` (the watcher thread is not there): start over. Returns the
/// wakeup descriptor to set back (the one that was set before ours, or -1) when ours was
/// set, else None.
#[pyfunction]
fn after_fork_in_child() -> Option<i32> {
    sigint::after_fork_in_child()
}

/// `toolpool_completions_request(queue, pool, payload, timeout_ms, tag)`, or with a `key`
/// `toolpool_completions_request_sticky`: submit; never waits (the GIL is kept).
#[pyfunction]
#[pyo3(signature = (queue, pool, key, payload, timeout_ms, tag))]
fn completions_request(
    py: Python<'_>,
    queue: usize,
    pool: usize,
    key: Option<&Bound<'_, PyAny>>,
    payload: &Bound<'_, PyAny>,
    timeout_ms: u32,
    tag: u64,
) -> PyResult<()> {
    let api = &bound()?.api;
    let payload = c_text(py, "payload", payload)?;
    let (q, p) = (queue as *const c_void, pool as *const c_void);
    let payload = payload.addr() as *const c_char;
    let rc = match key {
        // SAFETY: live handles lent by the package (the pool outlives the queue's
        // requests), C strings copied by the call.
        None => unsafe { (api.toolpool_completions_request)(q, p, payload, timeout_ms, tag) },
        Some(key) => {
            let key = c_text(py, "key", key)?;
            // SAFETY: as above.
            unsafe {
                (api.toolpool_completions_request_sticky)(
                    q,
                    p,
                    key.addr() as *const c_char,
                    payload,
                    timeout_ms,
                    tag,
                )
            }
        }
    };
    submitted(py, api, rc)
}

fn submitted(py: Python<'_>, api: &Api, rc: i32) -> PyResult<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(error(py, rc, &last_error(api)))
    }
}

/// Every completion waiting on `queue`, as a list of `(tag, status, text, instance or
/// None, moved, served_by or None)`: `text` is the reply when `status` is 0, else the
/// error message.
#[pyfunction]
fn completions_take<'py>(py: Python<'py>, queue: usize) -> PyResult<Bound<'py, PyList>> {
    let api = &bound()?.api;
    let list = PyList::empty(py);
    let mut buf: Vec<ToolpoolCompletion> = Vec::with_capacity(TAKE_BATCH);
    loop {
        let mut n = 0usize;
        // SAFETY: a live queue; `buf` has room for TAKE_BATCH completions; `n` writable.
        let rc = unsafe {
            (api.toolpool_completions_take)(
                queue as *const c_void,
                buf.as_mut_ptr(),
                TAKE_BATCH,
                &mut n,
            )
        };
        if rc != 0 {
            return Err(error(py, rc, &last_error(api)));
        }
        // SAFETY: the call initialised the first `n` (at most TAKE_BATCH) entries.
        unsafe { buf.set_len(n) };
        for c in buf.drain(..) {
            let text = take_reply(py, api, c.text as usize);
            let instance = (c.instance != u32::MAX).then_some(c.instance);
            let served_by = if c.served_by.is_null() {
                None
            } else {
                // SAFETY: not NULL: a NUL-terminated string with static storage.
                unsafe { CStr::from_ptr(c.served_by) }.to_str().ok()
            };
            list.append((c.tag, c.status, text, instance, c.moved, served_by))?;
        }
        if n < TAKE_BATCH {
            return Ok(list);
        }
    }
}

/// `toolpool_completions_wait(queue, timeout_us)` with the GIL released: whether a
/// completion is there to take.
#[pyfunction]
fn completions_wait(py: Python<'_>, queue: usize, timeout_us: u32) -> PyResult<bool> {
    let api = &bound()?.api;
    let (rc, ready) = py.detach(|| {
        let mut ready = 0u32;
        // SAFETY: a live queue lent by the package; `ready` writable.
        let rc = unsafe {
            (api.toolpool_completions_wait)(queue as *const c_void, timeout_us, &mut ready)
        };
        (rc, ready)
    });
    submitted(py, api, rc)?;
    Ok(ready != 0)
}

/// The module: `toolpool._native`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bind, m)?)?;
    m.add_function(wrap_pyfunction!(request, m)?)?;
    m.add_function(wrap_pyfunction!(arm, m)?)?;
    m.add_function(wrap_pyfunction!(disarm, m)?)?;
    m.add_function(wrap_pyfunction!(after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(completions_request, m)?)?;
    m.add_function(wrap_pyfunction!(completions_take, m)?)?;
    m.add_function(wrap_pyfunction!(completions_wait, m)?)?;
    m.add_function(wrap_pyfunction!(log::set_log_sink, m)?)?;
    m.add_function(wrap_pyfunction!(log::clear_log_sink, m)?)?;
    Ok(())
}
