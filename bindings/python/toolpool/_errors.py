"""The exception hierarchy (one class per ``ToolpoolStatus``) and the checked-call helper.

The codes come from include/toolpool.h through _generated.py; tests/test_docs.py checks
that every error constant of the header has its class here."""

from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Optional, Type

from ._ffi import LIB_PATH, lib, native
from ._generated import (
    TOOLPOOL_CANCELLED,
    TOOLPOOL_CONFIG,
    TOOLPOOL_DEAD,
    TOOLPOOL_FAILED,
    TOOLPOOL_INDEX_OUT_OF_RANGE,
    TOOLPOOL_INVALID_ARGUMENT,
    TOOLPOOL_IO,
    TOOLPOOL_LIMIT_REACHED,
    TOOLPOOL_NOT_FOUND,
    TOOLPOOL_PANIC,
    TOOLPOOL_PROTOCOL_ERROR,
    TOOLPOOL_QUEUE_FULL,
    TOOLPOOL_SATURATED,
    TOOLPOOL_SERVICE,
    TOOLPOOL_SHUT_DOWN,
    TOOLPOOL_SPAWN_FAILED,
    TOOLPOOL_TIMEOUT,
    TOOLPOOL_TOOL_ERROR,
    TOOLPOOL_UNAVAILABLE,
)

__all__ = [
    "ToolpoolError",
    "InvalidArgument",
    "NotFound",
    "SpawnFailed",
    "Timeout",
    "InstanceDead",
    "Saturated",
    "ShutDown",
    "LimitReached",
    "ProtocolError",
    "ToolError",
    "ConfigError",
    "IndexOutOfRange",
    "QueueFull",
    "InstanceFailed",
    "Unavailable",
    "ToolpoolIOError",
    "Panic",
    "Cancelled",
    "ServiceError",
    "error_for_code",
    "status_name",
]


class ToolpoolError(Exception):
    """Base of every toolpool error.

    ``code`` is the ``ToolpoolStatus`` value (``TOOLPOOL_TIMEOUT`` is 4, ...),
    ``status`` its name, and ``message`` the library's last-error message.
    """

    #: The ``ToolpoolStatus`` value of this class (None for the base class).
    CODE: Optional[int] = None

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.message: str = message
        self.code: int = code if code is not None else (self.CODE if self.CODE is not None else -1)

    @property
    def status(self) -> str:
        """The status constant's name, e.g. ``"TOOLPOOL_TIMEOUT"``."""
        return status_name(self.code)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code})"


class InvalidArgument(ToolpoolError, ValueError):
    """A bad argument: invalid UTF-8, a newline or NUL in a line, bad JSON input (1)."""

    CODE = TOOLPOOL_INVALID_ARGUMENT


class NotFound(ToolpoolError, LookupError):
    """The tool id is not in the registry (2)."""

    CODE = TOOLPOOL_NOT_FOUND


class SpawnFailed(ToolpoolError):
    """A process could not be started or did not become ready in time (3)."""

    CODE = TOOLPOOL_SPAWN_FAILED


class Timeout(ToolpoolError, TimeoutError):
    """Nothing arrived, or no instance became free, within the timeout (4)."""

    CODE = TOOLPOOL_TIMEOUT


class InstanceDead(ToolpoolError):
    """The instance is dead (5)."""

    CODE = TOOLPOOL_DEAD


class Saturated(ToolpoolError):
    """Every instance is busy and the wait queue is full (6)."""

    CODE = TOOLPOOL_SATURATED


class ShutDown(ToolpoolError):
    """The pool has been shut down or closed (7)."""

    CODE = TOOLPOOL_SHUT_DOWN


class LimitReached(ToolpoolError):
    """The process-wide limit did not allow a new process in time (8)."""

    CODE = TOOLPOOL_LIMIT_REACHED


class ProtocolError(ToolpoolError):
    """The tool broke the framing protocol (9)."""

    CODE = TOOLPOOL_PROTOCOL_ERROR


class ToolError(ToolpoolError):
    """The tool answered with an error: a JSON-RPC error, a failed one-shot run, or
    stderr lines and no reply (``stderr_error_ms``) (10)."""

    CODE = TOOLPOOL_TOOL_ERROR


class ConfigError(ToolpoolError):
    """A registry or tool spec is invalid (11)."""

    CODE = TOOLPOOL_CONFIG


class IndexOutOfRange(ToolpoolError, IndexError):
    """An instance index is out of range (12)."""

    CODE = TOOLPOOL_INDEX_OUT_OF_RANGE


class QueueFull(ToolpoolError):
    """The instance's stdin queue is full (13)."""

    CODE = TOOLPOOL_QUEUE_FULL


class InstanceFailed(ToolpoolError):
    """The instance was marked failed by the supervisor: too many restarts (14)."""

    CODE = TOOLPOOL_FAILED


class Unavailable(ToolpoolError):
    """No instance can take work and no fallback is configured (15)."""

    CODE = TOOLPOOL_UNAVAILABLE


class ToolpoolIOError(ToolpoolError):
    """An I/O error outside a spawn, e.g. reading a registry file (16)."""

    CODE = TOOLPOOL_IO


class Cancelled(ToolpoolError):
    """The call was stopped by its cancel token (17): :meth:`CancelToken.cancel` from
    another thread. (Ctrl-C raises ``KeyboardInterrupt`` instead, and a cancelled asyncio
    task ``asyncio.CancelledError``.)"""

    CODE = TOOLPOOL_CANCELLED


class ServiceError(ToolpoolError):
    """The ``toolpool serve`` service could not be used (18): nothing listens on its
    socket, it refused this client (another user, too many clients, another protocol
    version), or it went away during the call. The next call connects again by itself, so
    the same client and pool work once the service is back."""

    CODE = TOOLPOOL_SERVICE


class Panic(ToolpoolError):
    """A panic inside toolpool was caught at the boundary: a bug, please report it (99)."""

    CODE = TOOLPOOL_PANIC


# One class per error constant of the header (tests/test_docs.py checks the set), each a
# direct subclass of ToolpoolError defined above.
_BY_CODE: Dict[int, Type[ToolpoolError]] = {
    cls.CODE: cls for cls in ToolpoolError.__subclasses__() if cls.CODE is not None
}


def status_name(code: int) -> str:
    """The name of a status constant, e.g. ``"TOOLPOOL_TIMEOUT"`` for 4."""
    if not -(2**31) <= code < 2**31:
        return "TOOLPOOL_UNKNOWN"
    name: bytes = lib.toolpool_status_name(code)
    return name.decode()


def error_for_code(code: int, message: str) -> ToolpoolError:
    """The exception instance for status ``code`` (the base class for an unknown code)."""
    cls = _BY_CODE.get(code, ToolpoolError)
    return cls(message, code)


def _last_error(rc: int) -> ToolpoolError:
    # Called right after the failing call, on the same thread: the slot is still ours.
    raw = lib.toolpool_last_error_message()
    msg = raw.decode("utf-8", "replace") if raw else status_name(rc)
    return error_for_code(rc, msg)


def check(rc: int) -> None:
    """Raise the exception for status ``rc`` unless it is ``TOOLPOOL_OK``."""
    if rc != 0:
        raise _last_error(rc)


def call(fn: Callable[..., int], *args: Any) -> None:
    """Call a status-returning C function and raise the right subclass on failure.

    ctypes releases the GIL for the duration of the call and makes it on this thread,
    so the thread-local last-error message read here belongs to this call.
    """
    rc = fn(*args)
    if rc != 0:
        raise _last_error(rc)


# The native extension raises the same classes.
native.bind(str(LIB_PATH), error_for_code, threading.main_thread().ident)
