"""toolpool: pools of warm command-line tool processes, driven over stdin/stdout.

A ctypes binding of libtoolpool's C ABI (``include/toolpool.h``)::

    import toolpool

    with toolpool.Pool({"command": ["bc", "-q"], "count": 3}) as pool:
        print(pool.request("2 + 3"))          # "5"
        pool.send(1, "7 * 6")
        print(pool.read_line(1, timeout=5))   # "42"

Every failure raises a :class:`ToolpoolError` subclass carrying ``.code`` (the C status)
and the library's message. Blocking calls release the GIL, so threads run in parallel.
See ``bindings/python/README.md``.
"""

from __future__ import annotations

import json
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Dict

from ._errors import (
    ConfigError,
    IndexOutOfRange,
    InstanceDead,
    InstanceFailed,
    InvalidArgument,
    LimitReached,
    NotFound,
    Panic,
    ProtocolError,
    Saturated,
    ShutDown,
    SpawnFailed,
    Timeout,
    ToolError,
    ToolpoolError,
    ToolpoolIOError,
    Unavailable,
    QueueFull,
    call,
    error_for_code,
    status_name,
)
from ._ffi import LIB_PATH, lib
from ._pool import DEFAULT_GRACE, DEFAULT_TIMEOUT, Lease, Payload, Pool, Reply, Spec, _take

__all__ = [
    "Pool",
    "Lease",
    "Reply",
    "Payload",
    "Spec",
    "DEFAULT_TIMEOUT",
    "DEFAULT_GRACE",
    "LIB_PATH",
    "version",
    "set_limit",
    "limit_status",
    "kill_all",
    "status_name",
    "error_for_code",
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
]

__version__ = "0.1.0"


def version() -> str:
    """The version of the loaded libtoolpool, e.g. ``"0.1.0"``."""
    v: bytes = lib.toolpool_version()
    return v.decode()


def set_limit(n: int) -> int:
    """Set the host-wide limit on concurrent child processes of every pool (0: none;
    the initial value comes from ``$TOOLPOOL_MAX_PROCESSES``). Lowering it never kills;
    it holds back new starts, which wait up to the spec's ``startup.timeout_ms`` and then
    fail with :class:`LimitReached`. Returns the previous limit."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"limit must be an int, not {type(n).__name__}")
    if not 0 <= n <= 0xFFFFFFFF:
        raise InvalidArgument(f"limit must be between 0 and 2**32-1, not {n}")
    old = c_uint32()
    call(lib.toolpool_limit_set, n, byref(old))
    return old.value


def limit_status() -> Dict[str, Any]:
    """The host-wide limiter: ``active_processes``, ``max_allowed`` (0: none),
    ``utilization_percent``, ``can_start_new``, ``active_pids``, ``warning``."""
    out = c_void_p()
    call(lib.toolpool_limit_status_json, byref(out))
    result: Dict[str, Any] = json.loads(_take(out))
    return result


def kill_all() -> int:
    """SIGKILL the process group of every child started under the host-wide limiter
    (every pool); returns how many groups were signalled. Pools follow their restart
    policy afterwards."""
    out = c_uint32()
    call(lib.toolpool_kill_all, byref(out))
    return out.value
