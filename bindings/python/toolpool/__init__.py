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
:func:`start_run` and :func:`run_output` run one-off commands under the same process
limit, and :func:`acquire_slot` gates the processes a program starts itself.
:func:`connect` uses the pools of a ``toolpool serve`` service shared by many processes.
See ``bindings/python/README.md``.
"""

from . import _errors
from ._errors import *  # noqa: F401,F403  (the error classes, error_for_code, status_name)
from ._ffi import LIB_PATH
from ._limit import KillReport, LimitStatus, ProcessInfo, kill_all, limit_status, set_limit, version
from ._cancel import CancelToken
from ._log import LOGGER, TRACE, metrics_prometheus_all
from ._pool import DEFAULT_GRACE, DEFAULT_TIMEOUT, Lease, Payload, Pool, Reply, RetrySpec, Spec
from ._pools import Pools
from ._run import LineStream, Permit, Run, RunResult, RunSpec, acquire_slot, run_output, start_run
from ._client import Client, connect
from . import aio  # toolpool.aio: the asyncio face

__all__ = [
    "Pool",
    "Pools",
    "Client",
    "connect",
    "Lease",
    "Reply",
    "RetrySpec",
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
    "LimitStatus",
    "ProcessInfo",
    "LOGGER",
    "TRACE",
    "metrics_prometheus_all",
    "CancelToken",
    "Run",
    "RunSpec",
    "RunResult",
    "LineStream",
    "Permit",
    "start_run",
    "run_output",
    "acquire_slot",
    "aio",
]
__all__ += _errors.__all__

__version__ = "0.1.0"
