"""``toolpool.Pools``: a pool for every tool of a registry (``ToolpoolPools``)."""

from __future__ import annotations

import json
import os
import threading
from ctypes import byref, c_void_p
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from ._errors import ToolpoolError, call, error_for_code
from ._ffi import lib
from ._managed import Managed
from ._pool import DEFAULT_TIMEOUT, Payload, Pool, _cstr, _ms, _payload_str, _take, _take_json

__all__ = ["Pools"]

_U32_MAX = 0xFFFFFFFF


class Pools(Managed):
    """A pool for every tool of the registry file ``registry`` (``None``: the file named by
    ``$TOOLPOOL_REGISTRY``), each started as its spec says (a ``lazy`` tool on first
    use). ``pools["bc"]`` is the pool of tool ``bc`` (a :class:`Pool` that belongs to this
    object: its own ``close()`` does nothing); ``pools.map(jobs)`` runs jobs of several
    tools at once. A context manager; ``close()`` stops every pool."""

    _what = "pools"

    def __init__(self, registry: Optional[Union[str, "os.PathLike[str]"]] = None) -> None:
        out = c_void_p()
        path = None if registry is None else _cstr(registry, "registry")
        call(lib.toolpool_pools_new, path, byref(out))
        assert out.value is not None
        self._lent: Dict[str, Pool] = {}
        self._lent_lock = threading.Lock()
        self._init_handle(out.value)

    def __getitem__(self, tool: str) -> Pool:
        with self._lent_lock:
            pool = self._lent.get(tool)
            if pool is not None:
                return pool
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pools_get, p, _cstr(tool, "tool"), byref(out))
            assert out.value is not None
            pool = Pool._adopt(out.value, lent=True)
            self._lent[tool] = pool
            return pool

    def map(
        self, jobs: Iterable[Tuple[str, Payload]], timeout: Optional[float] = DEFAULT_TIMEOUT
    ) -> List[Union[str, ToolpoolError]]:
        """Run jobs ``(tool, payload)``: every tool's jobs as a batch on its pool, all
        tools at once; ``timeout`` applies to each job. Returns one item per job, in
        order: the reply text, or the exception instance (not raised) for a job that
        failed (an unknown tool's is ``NotFound``)."""
        pairs = [[tool, _payload_str(payload)] for tool, payload in jobs]
        arg = _cstr(json.dumps(pairs), "jobs")
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_pools_map_json, p, arg, _ms(timeout), byref(out))
        results: List[Union[str, ToolpoolError]] = []
        for r in _take_json(out):
            if r.get("ok"):
                results.append(r.get("text", ""))
            else:
                results.append(error_for_code(int(r.get("code", -1)), str(r.get("error", ""))))
        return results

    def status(self) -> Dict[str, Any]:
        """Every pool's status, by tool id (as :meth:`Pool.status`)."""
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_pools_status_json, p, byref(out))
        result: Dict[str, Any] = _take_json(out)
        return result

    def metrics_prometheus(self) -> str:
        """Every pool's metrics in the Prometheus text exposition format 0.0.4."""
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_pools_metrics_prometheus, p, byref(out))
        return _take(out)

    def shutdown(self, grace: Optional[float] = None) -> None:
        """Shut every pool down at once, each waiting up to ``grace`` seconds (``None``:
        its spec's ``shutdown.grace_ms``). Idempotent."""
        ms = _U32_MAX if grace is None else min(_ms(grace, "grace"), _U32_MAX - 1)
        with self._borrow() as p:
            call(lib.toolpool_pools_shutdown, p, ms)

    def _wake(self, ptr: int) -> None:
        lib.toolpool_pools_shutdown(ptr, _U32_MAX)

    def _delete(self, ptr: int) -> None:
        # The lent pools' calls are woken (their pools shut down) and waited for before
        # their handles go with this one.
        lib.toolpool_pools_shutdown(ptr, _U32_MAX)
        with self._lent_lock:
            for pool in self._lent.values():
                Managed.close(pool)
            self._lent.clear()
        lib.toolpool_pools_free(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<toolpool.Pools {state}>"
