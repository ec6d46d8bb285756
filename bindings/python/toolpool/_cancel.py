"""Cancel tokens (``ToolpoolCancel``) and running a blocking C call so that Ctrl-C stops it.

A ctypes call holds up ``KeyboardInterrupt`` until it returns (Python runs signal handlers
between bytecodes, on the main thread). So a blocking call made on the main thread runs on
a helper thread instead, with a cancel token, while the main thread waits on an
``Event`` in short slices; on ``KeyboardInterrupt`` (or any exception a signal handler
raises) it triggers the token, waits the few milliseconds the C call takes to return, and
re-raises. The pool is then as after a timeout: the abandoned request's reply never
reaches another caller. Calls made on other threads run where they are (signals do not
reach them) with the caller's token, if any.
"""

from __future__ import annotations

import queue
import threading
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Callable, Optional, Tuple, TypeVar

from ._errors import call
from ._ffi import lib

__all__ = ["CancelToken", "run_blocking", "WAIT_SLICE"]

T = TypeVar("T")

#: How long the main thread waits at a time for a blocking call that runs on the helper
#: thread (seconds): a bound on how late ``KeyboardInterrupt`` is seen should the wait
#: itself not be interrupted by the signal.
WAIT_SLICE: float = 0.05


class CancelToken:
    """Stops blocking calls from another thread (``ToolpoolCancel``).

    Pass it as ``cancel=`` to any blocking call (``request``, ``request_sticky``, ``map``,
    ``lease``, ``read_line``, ``read_line_bytes``, ``read_any``, and the lease's
    ``request`` and ``read_line``); :meth:`cancel` from any thread makes every call waiting
    with it raise :class:`Cancelled` within milliseconds, and every later call with it
    raise at once. Cancelling is final. The C token is freed when the object is garbage
    collected (a call in progress holds a reference to it)."""

    def __init__(self) -> None:
        out = c_void_p()
        call(lib.toolpool_cancel_new, byref(out))
        assert out.value is not None
        self._ptr: Optional[int] = out.value

    @property
    def ptr(self) -> Optional[int]:
        """The ``ToolpoolCancel *`` (for passing to the C API)."""
        return self._ptr

    def cancel(self) -> None:
        """Trigger the token (idempotent; safe from any thread, not from a C signal
        handler)."""
        if self._ptr is not None:
            call(lib.toolpool_cancel_trigger, self._ptr)

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        if self._ptr is None:
            return False
        out = c_uint32()
        call(lib.toolpool_cancel_is_triggered, self._ptr, byref(out))
        return bool(out.value)

    def __repr__(self) -> str:
        return f"CancelToken(cancelled={self.cancelled})"

    def __del__(self) -> None:
        ptr, self._ptr = getattr(self, "_ptr", None), None
        if ptr is not None:
            try:
                lib.toolpool_cancel_free(ptr)
            except Exception:  # interpreter shutdown: the module may be half torn down
                pass


# One daemon helper thread runs the main thread's blocking calls, one at a time (the
# main thread waits for each one, so it is free again when the next call comes).
_jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
_helper: Optional[threading.Thread] = None
_helper_lock = threading.Lock()


def _serve() -> None:
    while True:
        _jobs.get()()


def _submit(job: Callable[[], None]) -> None:
    global _helper
    with _helper_lock:
        if _helper is None or not _helper.is_alive():
            _helper = threading.Thread(target=_serve, name="toolpool-call", daemon=True)
            _helper.start()
    _jobs.put(job)


def run_blocking(fn: Callable[[Optional[int]], T], cancel: Optional[CancelToken]) -> T:
    """Run ``fn(token_ptr)``, which makes one blocking C call with that token (``None``:
    NULL), so that Ctrl-C on the main thread stops it with ``KeyboardInterrupt``.

    On the main thread the call runs on the helper thread with ``cancel`` (or a token of
    its own); ``KeyboardInterrupt`` triggers that token (so a token passed by the caller
    is triggered too), waits for the call to return, and is re-raised. Elsewhere ``fn``
    runs on the calling thread."""
    if threading.current_thread() is not threading.main_thread():
        return fn(cancel.ptr if cancel is not None else None)
    token = cancel if cancel is not None else CancelToken()
    done = threading.Event()
    box: list[Tuple[bool, Any]] = []

    def job() -> None:
        try:
            box.append((True, fn(token.ptr)))
        except BaseException as e:  # handed to the caller below
            box.append((False, e))
        finally:
            done.set()

    _submit(job)
    try:
        while not done.wait(WAIT_SLICE):
            pass
    except BaseException:
        # KeyboardInterrupt (or whatever a signal handler raised): stop the C call and
        # wait for it, so nothing of it outlives this call.
        token.cancel()
        while not done.is_set():
            try:
                done.wait(WAIT_SLICE)
            except BaseException:  # a second Ctrl-C: keep waiting, it takes milliseconds
                pass
        raise
    ok, value = box[0]
    if not ok:
        raise value
    result: T = value
    return result
