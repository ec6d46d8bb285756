"""Cancel tokens (``ToolpoolCancel``) and making Ctrl-C stop a blocking C call.

A C call holds up ``KeyboardInterrupt`` until it returns: Python runs signal handlers
between bytecodes, on the main thread. But CPython's own C-level handler also writes the
signal's number, at once, to the descriptor given to :func:`signal.set_wakeup_fd`. So a
blocking call on the main thread runs right there, armed by the native extension with a
cancel token (``native/src/sigint.rs``): the wakeup descriptor is a pipe that a watcher
thread reads, and a SIGINT that comes in during the call triggers the token. The C call
returns within milliseconds, the SIGINT handler runs, and its ``KeyboardInterrupt``
propagates. The pool is then as after a timeout: the abandoned request's reply never
reaches another caller. No thread hop per call, no lock.

Calls on other threads run with the caller's token, if any (signals do not reach them).
"""

from __future__ import annotations

import os
import signal
from ctypes import byref, c_uint32, c_void_p
from typing import Callable, Optional, TypeVar

from ._errors import ToolpoolError, call
from ._ffi import lib, native

__all__ = ["CancelToken", "run_blocking"]

T = TypeVar("T")


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


def _after_fork_in_child() -> None:
    # The watcher thread does not exist in a forked child: start over there, and give the
    # wakeup descriptor back to whoever had it before (our pipe is closed).
    forward = native.after_fork_in_child()
    if forward is None:
        return  # ours was never set
    try:
        signal.set_wakeup_fd(forward)
    except (ValueError, OSError):
        pass


os.register_at_fork(after_in_child=_after_fork_in_child)


def run_blocking(fn: Callable[[Optional[int]], T], cancel: Optional[CancelToken]) -> T:
    """Run ``fn(token_ptr)``, which makes one blocking C call with that token (``None``:
    NULL), so that Ctrl-C on the main thread stops it with ``KeyboardInterrupt``.

    On the main thread the call gets ``cancel`` (or the main thread's own token), which a
    SIGINT during the call triggers (so a token passed by the caller is triggered too);
    the SIGINT handler runs as the call returns. Elsewhere ``fn`` gets ``cancel``."""
    token, armed = native.arm(cancel.ptr or 0 if cancel is not None else 0)
    if not armed:
        return fn(token or None)
    try:
        result = fn(token)
    except ToolpoolError as e:
        interrupt = native.disarm(e.code)
        if interrupt is not None:
            raise interrupt from None
        raise
    except BaseException:
        native.disarm(0)
        raise
    native.disarm(0)
    return result
