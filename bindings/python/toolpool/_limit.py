"""The host-wide process limit and kill switch, and the library's version."""

from __future__ import annotations

import json
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Dict, List, NamedTuple

from ._errors import InvalidArgument, call
from ._ffi import lib
from ._pool import _take


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


class KillReport(NamedTuple):
    """What :func:`kill_all` did."""

    #: Process groups signalled.
    killed_count: int
    #: Their leaders' pids (the children toolpool started).
    killed_pids: List[int]


def kill_all() -> KillReport:
    """SIGKILL the process group of every child started under the host-wide limiter
    (every pool); returns how many groups were signalled and their pids. Pools follow
    their restart policy afterwards."""
    out = c_void_p()
    call(lib.toolpool_kill_all_json, byref(out))
    doc = json.loads(_take(out))
    return KillReport(int(doc["killed_count"]), [int(p) for p in doc["killed_pids"]])
