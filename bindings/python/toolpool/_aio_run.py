"""The asyncio face of runs and permits (exported by :mod:`toolpool.aio`)::

    async with aio.start_run({"command": ["make", "all"]}) as run:
        async for line in run.stdout:
            print(line)
        code = await run.wait()

Each run has a small executor of its own (:data:`RUN_THREADS` threads: a reader per
stream and a waiter), so a silent run never holds up another run or a pool; cancelling the
awaiting task cancels the C call through a token, as for ``aio.Pool``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import TracebackType
from typing import Any, AsyncIterator, Callable, Dict, Generator, Optional, Type, TypeVar, Union

from ._aio_call import run_cancellable
from ._cancel import CancelToken
from ._pool import DEFAULT_TIMEOUT
from ._run import Permit, Run, RunResult, RunSpec
from ._run import acquire_slot as _acquire_slot
from ._run import run_output as _run_output

__all__ = ["AsyncRun", "AsyncLineStream", "start_run", "run_output", "acquire_slot", "RUN_THREADS"]

T = TypeVar("T")

#: Threads of one :class:`AsyncRun`'s executor: its blocking calls at once (a reader of
#: stdout, a reader of stderr, a waiter, and one more); more wait in its queue.
RUN_THREADS: int = 4


async def _in_thread(fn: Callable[[CancelToken], T]) -> T:
    """``fn(token)`` on a thread of its own (a one-call executor, so a long run or slot
    wait never holds a thread the loop's default executor needs), cancellable."""
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="toolpool-aio-run")
    try:
        return await run_cancellable(ex, fn)
    finally:
        ex.shutdown(wait=False)  # its one thread ends by itself; the loop never waits


class AsyncLineStream:
    """One output stream of an :class:`AsyncRun`: ``async for line in run.stdout``."""

    def __init__(self, run: "AsyncRun", name: str) -> None:
        self._run = run
        self._name = name

    async def read_line(self, timeout: Optional[float] = None) -> Optional[str]:
        """The next line, or None at the end of the stream."""
        return await self._run.read_line(self._name, timeout)

    def __aiter__(self) -> AsyncIterator[str]:
        return self

    async def __anext__(self) -> str:
        line = await self.read_line()
        if line is None:
            raise StopAsyncIteration
        return line


class AsyncRun:
    """A run for asyncio programs (from :func:`start_run`); its blocking calls run on its
    own executor and never block the event loop. ``async with`` (or :meth:`aclose`) kills
    what is left and frees it."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._executor = concurrent.futures.ThreadPoolExecutor(RUN_THREADS, thread_name_prefix="toolpool-aio-run")
        #: The process's pid; None for a dry run.
        self.pid: Optional[int] = run.pid
        #: stdout, line by line (``async for line in run.stdout``).
        self.stdout = AsyncLineStream(self, "stdout")
        #: stderr, line by line.
        self.stderr = AsyncLineStream(self, "stderr")

    @property
    def run(self) -> Run:
        """The underlying :class:`toolpool.Run` (its methods block)."""
        return self._run

    @property
    def returncode(self) -> Optional[int]:
        """The return code once :meth:`wait` has returned it; None before."""
        return self._run.returncode

    async def read_line(self, stream: str = "stdout", timeout: Optional[float] = None) -> Optional[str]:
        """:meth:`toolpool.Run.read_line`, awaited; cancelling the task cancels it."""
        r = self._run
        return await run_cancellable(self._executor, lambda t: r.read_line(stream, timeout, cancel=t))

    def write_line(self, line: Union[str, bytes]) -> None:
        """Queue ``line`` for stdin (never blocks)."""
        self._run.write_line(line)

    def close_stdin(self) -> None:
        """Close stdin once the queued lines are written."""
        self._run.close_stdin()

    async def wait(self, timeout: Optional[float] = None) -> int:
        """:meth:`toolpool.Run.wait`, awaited: the return code (-N: signal N)."""
        r = self._run
        return await run_cancellable(self._executor, lambda t: r.wait(timeout, cancel=t))

    def kill(self) -> None:
        """SIGKILL the process group (never blocks)."""
        self._run.kill()

    def status(self) -> Dict[str, Any]:
        """:meth:`toolpool.Run.status` (does not block)."""
        return self._run.status()

    async def aclose(self) -> None:
        """Kill what is left, free the run (in a thread) and stop its executor. Idempotent."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._run.close)
        await loop.run_in_executor(None, lambda: self._executor.shutdown(wait=True))

    async def __aenter__(self) -> "AsyncRun":
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()


class _Starting:
    """What :func:`start_run` returns: ``await`` it for the :class:`AsyncRun`, or use it in
    ``async with`` (the run is closed on leaving)."""

    def __init__(self, spec: RunSpec) -> None:
        self._spec = spec
        self._run: Optional[AsyncRun] = None

    async def _start(self) -> AsyncRun:
        spec = self._spec
        raw = await _in_thread(lambda t: Run(spec, cancel=t))
        self._run = AsyncRun(raw)
        return self._run

    def __await__(self) -> Generator[Any, None, AsyncRun]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncRun:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._run is not None:
            await self._run.aclose()


def start_run(spec: RunSpec) -> _Starting:
    """:func:`toolpool.start_run` for asyncio: ``async with aio.start_run(spec) as run``, or
    ``run = await aio.start_run(spec)`` (then ``async with run`` or ``await
    run.aclose()``). The wait for a slot runs in a thread; cancelling the task ends it."""
    return _Starting(spec)


async def run_output(spec: RunSpec, timeout: Optional[float] = None) -> RunResult:
    """:func:`toolpool.run_output`, awaited; cancelling the task kills the run."""
    return await _in_thread(lambda t: _run_output(spec, timeout, cancel=t))


class _Acquiring:
    """What :func:`acquire_slot` returns: awaitable, or an ``async with`` that releases."""

    def __init__(self, timeout: Optional[float]) -> None:
        self._timeout = timeout
        self._permit: Optional[Permit] = None

    async def _acquire(self) -> Permit:
        timeout = self._timeout
        self._permit = await _in_thread(lambda t: _acquire_slot(timeout, cancel=t))
        return self._permit

    def __await__(self) -> Generator[Any, None, Permit]:
        return self._acquire().__await__()

    async def __aenter__(self) -> Permit:
        return await self._acquire()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if self._permit is not None:
            self._permit.release()


def acquire_slot(timeout: Optional[float] = DEFAULT_TIMEOUT) -> _Acquiring:
    """:func:`toolpool.acquire_slot` for asyncio: ``async with aio.acquire_slot() as
    permit`` (released on leaving), or ``permit = await aio.acquire_slot()``."""
    return _Acquiring(timeout)
