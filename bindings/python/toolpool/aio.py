"""asyncio face of toolpool: every call runs on a thread of the pool's own executor, so the
event loop never blocks, and cancelling the awaiting task (``task.cancel()``,
``asyncio.timeout``, ``asyncio.wait_for``) cancels the C call through a cancel token::

    from toolpool import aio

    async with aio.Pool({"command": ["bc", "-q"], "count": 4}) as pool:
        print(await pool.request("6*7"))                  # "42"
        async with pool.lease() as lease:
            await lease.send("x = 5")
            print(await lease.request("x * 2"))          # "10"

Runs too: ``async with aio.start_run(spec) as run``, ``async for line in run.stdout``,
``await run.wait()``; ``await aio.run_output(spec)``; ``async with aio.acquire_slot() as
permit`` for a process the program starts itself.

A cancelled call ends like a timed-out one: the task gets ``asyncio.CancelledError`` (or
``TimeoutError`` from ``asyncio.timeout``) within milliseconds, the abandoned request's
reply never reaches another caller, and the pool serves the next request normally.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import TracebackType
from typing import Any, Dict, Iterable, List, Optional, Tuple, Type, Union

from ._aio_call import run_cancellable as _run
from ._aio_run import RUN_THREADS, AsyncRun, acquire_slot, run_output, start_run
from ._errors import ShutDown, ToolpoolError
from ._pool import DEFAULT_TIMEOUT, Payload, Reply, Spec
from ._pool import Lease as _Lease
from ._pool import Pool as _Pool

__all__ = ["Pool", "Lease", "MAX_THREADS", "AsyncRun", "RUN_THREADS", "start_run", "run_output", "acquire_slot"]

#: Threads of one ``aio.Pool``'s executor: the most blocking calls it runs at once (more
#: wait in the executor's queue, still cancellable). Pass ``max_threads=`` to change it.
MAX_THREADS: int = 64


class Lease:
    """An instance leased from :meth:`Pool.lease` (use ``async with pool.lease() as l``)."""

    def __init__(self, lease: _Lease, executor: concurrent.futures.Executor) -> None:
        self._lease = lease
        self._executor = executor

    @property
    def index(self) -> int:
        """The index of the leased instance."""
        return self._lease.index

    async def send(self, line: Union[str, bytes]) -> None:
        """Queue ``line`` for the leased instance's stdin (never waits for the child)."""
        self._lease.send(line)

    async def read_line(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """The next stdout line of the leased instance."""
        return await _run(self._executor, lambda t: self._lease.read_line(timeout, cancel=t))

    async def request(self, payload: Payload, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """One framed request on the leased instance."""
        return await _run(self._executor, lambda t: self._lease.request(payload, timeout, cancel=t))

    def close(self) -> None:
        """Give the instance back (does not block)."""
        self._lease.close()


class _LeaseContext:
    """``async with pool.lease() as lease``: leases on enter, gives back on exit."""

    def __init__(self, pool: "Pool", timeout: Optional[float]) -> None:
        self._pool = pool
        self._timeout = timeout
        self._lease: Optional[Lease] = None

    async def __aenter__(self) -> Lease:
        p, ex = self._pool._live(), self._pool._executor
        raw = await _run(ex, lambda t: p.lease(self._timeout, cancel=t))
        self._lease = Lease(raw, ex)
        return self._lease

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._lease is not None:
            self._lease.close()


class Pool:
    """A pool for asyncio programs: ``async with aio.Pool(spec) as pool``. The arguments are
    those of :class:`toolpool.Pool`; the pool starts on ``__aenter__`` (or
    :meth:`start`) in a thread, and shuts down on ``__aexit__`` (or :meth:`aclose`)."""

    def __init__(
        self,
        spec_or_tool: Spec,
        count: Optional[int] = None,
        *,
        registry: Optional[str] = None,
        max_threads: int = MAX_THREADS,
    ) -> None:
        self._args: Tuple[Spec, Optional[int], Optional[str]] = (spec_or_tool, count, registry)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="toolpool-aio")
        self._pool: Optional[_Pool] = None

    def _live(self) -> _Pool:
        if self._pool is None:
            raise ShutDown("the aio pool is not started (use `async with aio.Pool(...)`) or is closed")
        return self._pool

    async def start(self) -> "Pool":
        """Start the instances (in a thread); returns the pool."""
        if self._pool is None:
            spec, count, registry = self._args
            loop = asyncio.get_running_loop()
            self._pool = await loop.run_in_executor(self._executor, lambda: _Pool(spec, count, registry=registry))
        return self

    async def aclose(self, grace: Optional[float] = None) -> None:
        """Shut the pool down (in a thread) and free it. Idempotent. ``grace`` as in
        :meth:`toolpool.Pool.shutdown` (``None``: the spec's ``shutdown.grace_ms``)."""
        pool, self._pool = self._pool, None
        loop = asyncio.get_running_loop()
        if pool is not None:

            def stop(p: _Pool) -> None:
                p.shutdown(grace)
                p.close()

            await loop.run_in_executor(self._executor, stop, pool)
        await loop.run_in_executor(None, lambda: self._executor.shutdown(wait=True))

    async def __aenter__(self) -> "Pool":
        return await self.start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()

    @property
    def pool(self) -> _Pool:
        """The underlying :class:`toolpool.Pool` (its blocking methods block the loop)."""
        return self._live()

    async def request(self, payload: Payload, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """:meth:`toolpool.Pool.request`, awaited; cancelling the task cancels it."""
        p = self._live()
        return await _run(self._executor, lambda t: p.request(payload, timeout, cancel=t))

    async def request_sticky(
        self, key: Union[str, bytes], payload: Payload, timeout: Optional[float] = DEFAULT_TIMEOUT
    ) -> Reply:
        """:meth:`toolpool.Pool.request_sticky`, awaited."""
        p = self._live()
        return await _run(self._executor, lambda t: p.request_sticky(key, payload, timeout, cancel=t))

    async def map(
        self, payloads: Iterable[Payload], timeout: Optional[float] = DEFAULT_TIMEOUT
    ) -> List[Union[str, ToolpoolError]]:
        """:meth:`toolpool.Pool.map`, awaited; cancelling the task cancels every request
        not yet answered."""
        p, items = self._live(), list(payloads)
        return await _run(self._executor, lambda t: p.map(items, timeout, cancel=t))

    async def read_line(self, i: int, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """:meth:`toolpool.Pool.read_line`, awaited."""
        p = self._live()
        return await _run(self._executor, lambda t: p.read_line(i, timeout, cancel=t))

    async def read_any(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> Tuple[int, str]:
        """:meth:`toolpool.Pool.read_any`, awaited."""
        p = self._live()
        return await _run(self._executor, lambda t: p.read_any(timeout, cancel=t))

    async def send(self, i: int, line: Union[str, bytes]) -> None:
        """:meth:`toolpool.Pool.send` (starts a stopped instance first, in a thread)."""
        p = self._live()
        await asyncio.get_running_loop().run_in_executor(self._executor, lambda: p.send(i, line))

    def lease(self, timeout: Optional[float] = DEFAULT_TIMEOUT) -> _LeaseContext:
        """``async with pool.lease() as lease``: one instance for exclusive use."""
        return _LeaseContext(self, timeout)

    async def health(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.health`, in a thread."""
        p = self._live()
        return await asyncio.get_running_loop().run_in_executor(self._executor, p.health)

    async def status(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.status`, in a thread."""
        p = self._live()
        return await asyncio.get_running_loop().run_in_executor(self._executor, p.status)

    async def metrics(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.metrics`, in a thread."""
        p = self._live()
        return await asyncio.get_running_loop().run_in_executor(self._executor, p.metrics)

