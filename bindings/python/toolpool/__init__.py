"""toolpool: pools of warm command-line tool processes, driven over stdin/stdout.

A ctypes binding of libtoolpool's C ABI (``include/toolpool.h``)::

    import toolpool

    with toolpool.Pool({"command": ["bc", "-q"], "count": 3}) as pool:
        print(pool.request("2 + 3"))          # "5"
        pool.send(1, "7 * 6")
        print(pool.read_line(1, timeout=5))   # "42"

Every failure raises a :class:`ToolpoolError` subclass carrying ``.code`` (the C status)
and the library's message. Blocking calls release the GIL, so threads run in parallel.
Ctrl-C interrupts any blocking call (``KeyboardInterrupt``), a :class:`CancelToken` stops
calls from another thread, and :mod:`toolpool.aio` serves asyncio programs.
See ``bindings/python/README.md``.
"""

from ._errors import (
    Cancelled,
    ConfigError,
    IndexOutOfRange,
    InstanceDead,
    InstanceFailed,
    InvalidArgument,
    LimitReached,
    NotFound,
    Panic,
    ProtocolError,
    QueueFull,
    Saturated,
    ShutDown,
    SpawnFailed,
    Timeout,
    ToolError,
    ToolpoolError,
    ToolpoolIOError,
    Unavailable,
    error_for_code,
    status_name,
)
from ._ffi import LIB_PATH
from ._limit import KillReport, kill_all, limit_status, set_limit, version
from ._cancel import CancelToken
from ._log import LOGGER, TRACE, metrics_prometheus_all
from ._pool import DEFAULT_GRACE, DEFAULT_TIMEOUT, Lease, Payload, Pool, Reply, Spec
from . import aio  # toolpool.aio: the asyncio face

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
    "KillReport",
    "LOGGER",
    "TRACE",
    "metrics_prometheus_all",
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
    "Cancelled",
    "CancelToken",
    "aio",
]

__version__ = "0.1.0"
