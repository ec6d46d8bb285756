//! `ToolpoolRun`: one command run under the process limit (wraps [`crate::Run`]), and
//! `toolpool_run_output`, which runs one to its end and returns everything it wrote
//! (wraps [`crate::run_output`]). The spec is a run spec in JSON (docs/runs.md); runs count
//! under the host-wide limiter.

use super::cancel::ToolpoolCancel;
use super::{c_string, ffi_call, ffi_void, invalid, json_string, Handle};
use crate::{run_output, ExitInfo, Run, RunOptions, RunSpec, Stream};
use std::ffi::c_char;

/// An opaque run handle, from `toolpool_run_start`, freed with `toolpool_run_free`. Every
/// call but `toolpool_run_free` may be made from many threads at once on the same handle
/// (one thread reading stdout while another reads stderr, writes, waits or kills).
pub struct ToolpoolRun {
    run: Run,
}

impl Handle for ToolpoolRun {
    type Inner = Run;
    const WHAT: &'static str = "run";
    fn inner(&self) -> &Run {
        &self.run
    }
}

/// The output streams of a run, for `toolpool_run_read_line` (the values are the streams'
/// file descriptor numbers in the child).
#[repr(i32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolpoolStream {
    /// The run's standard output.
    TOOLPOOL_STREAM_STDOUT = 1,
    /// The run's standard error.
    TOOLPOOL_STREAM_STDERR = 2,
}

/// Start a run from its spec in JSON (`{"command": [...], ...}`, see docs/runs.md), under
/// the host-wide limiter: it waits up to the spec's `slot_timeout_ms` (default 10000; 0:
/// not at all) for room under the limit, or until `c` is triggered. With `dry_run` in the
/// spec, or `TOOLPOOL_DRY_RUN=1` in the environment, no process starts: canned lines and
/// an exit code stand in for it.
///
/// Errors: `TOOLPOOL_CONFIG` (bad JSON, an unknown key, a bad value; the message names the
/// key), `TOOLPOOL_LIMIT_REACHED` ("maximum concurrent processes reached: N of M"),
/// `TOOLPOOL_CANCELLED`, `TOOLPOOL_SPAWN_FAILED` (no such program, a bad `cwd`).
/// NULL handling: `spec_json` or `out` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be
/// NULL (the wait is not cancellable).
/// Ownership: `spec_json` and `c` are borrowed for the call. On success `*out` receives a
/// new handle that the caller owns and frees with `toolpool_run_free` (which kills what
/// is left of the run).
/// Thread safety: safe from any thread; `c` may be triggered from any thread.
///
/// # Safety
/// `spec_json` must be NULL or a NUL-terminated string; `c` NULL or a live token; `out`
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_start(
    spec_json: *const c_char,
    c: *const ToolpoolCancel,
    out: *mut *mut ToolpoolRun,
) -> i32 {
    ffi_call("toolpool_run_start", || {
        let json = try_str!(spec_json);
        let out = try_out!(out);
        // SAFETY: the function's contract: `c` is NULL or a live token for the call.
        let cancel = unsafe { c.as_ref() }.map(|c| c.inner().clone());
        let run = Run::start_with(
            RunSpec::from_json(json)?,
            RunOptions {
                limiter: None,
                cancel,
            },
        )?;
        out.write(Box::into_raw(Box::new(ToolpoolRun { run })));
        Ok(())
    })
}

/// Queue `line` (toolpool appends the newline) for the run's stdin. Never blocks: what the
/// pipe cannot take at once is written by a thread, up to the spec's `queue_lines` lines.
///
/// Errors: `TOOLPOOL_INVALID_ARGUMENT` (a newline in `line`, or stdin closed by
/// `toolpool_run_close_stdin` or after the spec's `input`), `TOOLPOOL_QUEUE_FULL` (the
/// process is not reading), `TOOLPOOL_IO` (the run has ended, or closed its stdin).
/// NULL handling: `r` or `line` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: `line` is borrowed (copied before return).
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle; `line` NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_write_line(r: *mut ToolpoolRun, line: *const c_char) -> i32 {
    ffi_call("toolpool_run_write_line", || {
        let run = try_handle!(r);
        let line = try_str!(line);
        run.write_line(line)
    })
}

/// Close the run's stdin once the queued lines are written (the process reads EOF).
/// Idempotent.
///
/// NULL handling: `r` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated.
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_close_stdin(r: *mut ToolpoolRun) -> i32 {
    ffi_call("toolpool_run_close_stdin", || {
        try_handle!(r).close_stdin();
        Ok(())
    })
}

/// The next line of `stream` (`TOOLPOOL_STREAM_STDOUT` or `TOOLPOOL_STREAM_STDERR`)
/// without its newline, waiting up to `timeout_ms` (0: only what is there already), or
/// until `c` is triggered. At the end of the stream the call succeeds with `*out_line` set
/// to NULL: the pipe was closed and every line read, or the run ended and what its pipe
/// held was read. Bytes that are not UTF-8, and NUL bytes, become U+FFFD; a line longer
/// than the spec's `max_line_bytes` comes in pieces. stdout is read as you read it (the
/// process waits on its pipe while `queue_lines` lines wait for you: nothing is lost);
/// stderr is drained always, keeping the last `queue_lines` lines (the oldest dropped,
/// counted in `toolpool_run_status_json`).
///
/// Errors: `TOOLPOOL_TIMEOUT`, `TOOLPOOL_CANCELLED`, `TOOLPOOL_INVALID_ARGUMENT` (another
/// `stream` value).
/// NULL handling: `r` or `out_line` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may be NULL.
/// Ownership: `c` is borrowed for the call; on success `*out_line` receives a new string
/// that the caller frees with `toolpool_string_free`, or NULL at the end of the stream.
/// Thread safety: safe from many threads at once on the same run; read each stream from
/// one thread at a time (two readers of one stream each get different lines, and near the
/// end one of them may see the end first). `c` may be triggered from any thread.
///
/// # Safety
/// `r` must be NULL or a live run handle; `c` NULL or a live token; `out_line` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_read_line(
    r: *mut ToolpoolRun,
    stream: i32,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_line: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_run_read_line", || {
        let run = try_handle!(r);
        let out = try_out!(out_line);
        let stream = match stream {
            s if s == ToolpoolStream::TOOLPOOL_STREAM_STDOUT as i32 => Stream::Stdout,
            s if s == ToolpoolStream::TOOLPOOL_STREAM_STDERR as i32 => Stream::Stderr,
            other => {
                return Err(invalid(
                    "stream",
                    &format!(
                        "is {other}: give TOOLPOOL_STREAM_STDOUT (1) or TOOLPOOL_STREAM_STDERR (2)"
                    ),
                ))
            }
        };
        let line = run.read_line(stream, try_wait!(timeout_ms, c))?;
        out.write(line.map_or(std::ptr::null_mut(), c_string));
        Ok(())
    })
}

/// Wait up to `timeout_ms` (or until `c` is triggered) for the run to end. On success
/// `*out_exit_code` receives its exit code (-1 when a signal killed it) and
/// `*out_signal` the signal (0 when it exited): 9 after `toolpool_run_kill`, its
/// `timeout_ms` or `toolpool_kill_all`. Once this succeeds the run no longer counts under
/// the limit. It does not read the streams: a process that writes more than its stdout
/// pipe and `queue_lines` hold waits for a reader and does not end until one comes.
///
/// Errors: `TOOLPOOL_TIMEOUT` (still running), `TOOLPOOL_CANCELLED`.
/// NULL handling: `r` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c`, `out_exit_code` and
/// `out_signal` may be NULL (not cancellable; not wanted).
/// Ownership: `c` is borrowed for the call; nothing is allocated.
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle; `c` NULL or a live token; `out_exit_code` and
/// `out_signal` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_wait(
    r: *mut ToolpoolRun,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_exit_code: *mut i32,
    out_signal: *mut i32,
) -> i32 {
    ffi_call("toolpool_run_wait", || {
        let run = try_handle!(r);
        let (code_out, signal_out) = (opt_out!(out_exit_code), opt_out!(out_signal));
        let (code, signal) = match run.wait(try_wait!(timeout_ms, c))? {
            ExitInfo::Code(c) => (c, 0),
            ExitInfo::Signal(s) => (-1, s),
        };
        if let Some(o) = code_out {
            o.write(code);
        }
        if let Some(o) = signal_out {
            o.write(signal);
        }
        Ok(())
    })
}

/// SIGKILL the run's process group (a dry run ends with signal 9). Never blocks; a run
/// that has already ended is left as it is. `toolpool_run_wait` then gives the end.
///
/// NULL handling: `r` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated.
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_kill(r: *mut ToolpoolRun) -> i32 {
    ffi_call("toolpool_run_kill", || {
        try_handle!(r).kill();
        Ok(())
    })
}

/// The run's pid, which is also its process group id; 0 for a dry run (no process).
///
/// NULL handling: `r` or `out_pid` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: nothing is allocated.
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle; `out_pid` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_pid(r: *const ToolpoolRun, out_pid: *mut i32) -> i32 {
    ffi_call("toolpool_run_pid", || {
        let run = try_handle!(r);
        let out = try_out!(out_pid);
        out.write(run.pid().unwrap_or(0));
        Ok(())
    })
}

/// The run's state as JSON: `name`, `pid` (null for a dry run), `dry_run`, `running`,
/// `exit` (null, `{"code": N}` or `{"signal": N}`), `timed_out`, `elapsed_ms`,
/// `stdout_lines`, `stderr_lines`, `stderr_dropped`, `lines_split`, `stdin_lines`.
///
/// NULL handling: `r` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`.
/// Ownership: on success `*out_json` receives a new string that the caller frees with
/// `toolpool_string_free`.
/// Thread safety: safe from many threads at once on the same run.
///
/// # Safety
/// `r` must be NULL or a live run handle; `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_status_json(
    r: *const ToolpoolRun,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_run_status_json", || {
        let run = try_handle!(r);
        let out = try_out!(out_json);
        out.write(json_string(&run.status())?);
        Ok(())
    })
}

/// Free a run: SIGKILL what is left of its process group, reap it and join its threads
/// (a descendant that left the group and holds a pipe open delays this by at most 2 s).
///
/// NULL handling: NULL is ignored.
/// Ownership: takes back ownership of `r`; `r` must not be used afterwards.
/// Thread safety: must not race another call on the same run.
///
/// # Safety
/// `r` must be NULL or a handle from `toolpool_run_start` not yet freed, with no call on
/// it in progress.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_free(r: *mut ToolpoolRun) {
    ffi_void("toolpool_run_free", || {
        if !r.is_null() {
            // SAFETY: per the contract, `r` came from `toolpool_run_start` and is freed once.
            drop(unsafe { Box::from_raw(r) });
        }
    })
}

/// Run a spec (as for `toolpool_run_start`) to its end and collect what it wrote: stdin
/// gets the spec's `input` (or is closed at once), stdout and stderr are kept up to the
/// spec's `max_output_bytes` each (default 16 MiB; the rest is read and counted). The run
/// is killed, with its group, after `timeout_ms` or the spec's `timeout_ms`, whichever is
/// shorter (`UINT32_MAX`: about 49.7 days); then the result says `"timed_out": true`.
/// Triggering `c` ends the slot wait, or kills the run: `TOOLPOOL_CANCELLED`.
///
/// `*out_json` receives `{"exit": {"code": N} or {"signal": N}, "timed_out": bool,
/// "stdout": "...", "stderr": "...", "stdout_dropped_bytes": N, "stderr_dropped_bytes": N,
/// "pid": N or null, "elapsed_ms": N}` (the text as lossy UTF-8). A non-zero exit is a
/// result, not an error.
///
/// Errors: those of `toolpool_run_start`, and `TOOLPOOL_CANCELLED`.
/// NULL handling: `spec_json` or `out_json` NULL is `TOOLPOOL_INVALID_ARGUMENT`; `c` may
/// be NULL.
/// Ownership: `spec_json` and `c` are borrowed for the call; on success `*out_json`
/// receives a new string that the caller frees with `toolpool_string_free`.
/// Thread safety: safe from any thread; `c` may be triggered from any thread.
///
/// # Safety
/// `spec_json` must be NULL or a NUL-terminated string; `c` NULL or a live token;
/// `out_json` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn toolpool_run_output(
    spec_json: *const c_char,
    timeout_ms: u32,
    c: *const ToolpoolCancel,
    out_json: *mut *mut c_char,
) -> i32 {
    ffi_call("toolpool_run_output", || {
        let json = try_str!(spec_json);
        let out = try_out!(out_json);
        let result = run_output(RunSpec::from_json(json)?, try_wait!(timeout_ms, c))?;
        out.write(json_string(&result)?);
        Ok(())
    })
}
