"""The host-wide process limit and kill switch, and the library's version."""

from __future__ import annotations

import json
from ctypes import byref, c_uint32, c_void_p
from typing import List, Literal, NamedTuple, Optional, TypedDict

from ._errors import InvalidArgument, call
from ._ffi import lib
from ._pool import _take


def version() -> str:
    """The version of the loaded libtoolpool, e.g. ``"0.1.0"``."""
    v: bytes = lib.toolpool_version()
    return v.decode()


def set_limit(n: int) -> int:
    """Set the host-wide limit on concurrent processes of every pool, run and permit (0:
    none; the initial value comes from ``$TOOLPOOL_MAX_PROCESSES``). Lowering it never
    kills; it holds back new starts, which wait (a pool's ``startup.timeout_ms``, a run's
    ``slot_timeout_ms``, :func:`acquire_slot`'s timeout) and then fail with
    :class:`LimitReached`. Returns the previous limit."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"limit must be an int, not {type(n).__name__}")
    if not 0 <= n <= 0xFFFFFFFF:
        raise InvalidArgument(f"limit must be between 0 and 2**32-1, not {n}")
    old = c_uint32()
    call(lib.toolpool_limit_set, n, byref(old))
    return old.value


class ProcessInfo(TypedDict):
    """One counted process of :class:`LimitStatus`."""

    pid: int
    #: A pool's instance, a run, or a process registered on a :class:`Permit`.
    kind: Literal["instance", "run", "registered"]
    #: The pool's tool id or the run's name; None for a registered process.
    name: Optional[str]


class LimitStatus(TypedDict):
    """The host-wide limiter (:func:`limit_status`): pool instances, runs and registered
    processes all count."""

    #: Slots in use (``reserved`` included).
    active_processes: int
    #: The limit; 0: none.
    max_allowed: int
    utilization_percent: float
    can_start_new: bool
    active_pids: List[int]
    #: A message above 80% use, else None.
    warning: Optional[str]
    #: Slots with no process yet: starts in progress, permits without a pid.
    reserved: int
    #: Every counted process with its kind, by pid.
    processes: List[ProcessInfo]


def limit_status() -> LimitStatus:
    """The host-wide limiter: ``active_processes``, ``max_allowed`` (0: none),
    ``utilization_percent``, ``can_start_new``, ``active_pids``, ``warning``,
    ``reserved`` and ``processes`` (each counted pid with its ``kind``: ``"instance"``,
    ``"run"`` or ``"registered"``)."""
    out = c_void_p()
    call(lib.toolpool_limit_status_json, byref(out))
    result: LimitStatus = json.loads(_take(out))
    return result


class KillReport(NamedTuple):
    """What :func:`kill_all` did."""

    #: Processes signalled.
    killed_count: int
    #: Their pids.
    killed_pids: List[int]


def kill_all() -> KillReport:
    """SIGKILL every process counted under the host-wide limiter: the process group of
    every pool instance and run, and every registered process (with its group if it leads
    one); returns how many were signalled and their pids. Pools follow their restart
    policy afterwards; runs end with signal 9."""
    out = c_void_p()
    call(lib.toolpool_kill_all_json, byref(out))
    doc = json.loads(_take(out))
    return KillReport(int(doc["killed_count"]), [int(p) for p in doc["killed_pids"]])
