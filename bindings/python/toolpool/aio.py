"""asyncio face of toolpool: the event loop never blocks, and cancelling the awaiting task
(``task.cancel()``, ``asyncio.timeout``, ``asyncio.wait_for``) cancels the C call::

    from toolpool import aio

    async with aio.Pool({"command": ["bc", "-q"], "count": 4}) as pool:
        print(await pool.request("6*7"))                  # "42"
        async with pool.lease() as lease:
            await lease.send("x = 5")
            print(await lease.request("x * 2"))          # "10"

``request`` and ``request_sticky`` go through the pool's completion queue
(``ToolpoolCompletions``): a submission returns at once, the queue's own threads run the
requests, and the loop watches the queue's descriptor (``add_reader``), so a burst of
replies costs one wake-up of the loop and no Python thread. The other calls (``map``,
``lease``, ``read_line``, ``read_any``, ``send``, ``health``, ...) run on the pool's own
executor threads.

Runs too: ``async with aio.start_run(spec) as run``, ``async for line in run.stdout``,
``await run.wait()``; ``await aio.run_output(spec)``; ``async with aio.acquire_slot() as
permit`` for a process the program starts itself.

A cancelled call ends like a timed-out one: the task gets ``asyncio.CancelledError`` (or
``TimeoutError`` from ``asyncio.timeout``) within milliseconds, the abandoned request's
reply never reaches another caller, and the pool serves the next request normally.

:func:`connect` does the same for the pools of a ``toolpool serve`` service::

    async with aio.connect("/run/toolpool.sock") as client:
        async with client.pool("bc") as pool:
            print(await pool.request("6*7"))              # "42"
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from types import TracebackType
import os
from typing import Any, Callable, Dict, Generator, Iterable, List, Optional, Tuple, Type, TypeVar, Union

from ctypes import byref, c_int32, c_void_p

from ._aio_call import run_cancellable as _run
from ._aio_run import RUN_THREADS, AsyncRun, acquire_slot, run_output, start_run
from ._client import Client as _Client
from ._errors import ShutDown, ToolpoolError, call, error_for_code
from ._ffi import lib, native
from ._generated import TOOLPOOL_SHUT_DOWN
from ._pool import _DEFAULT_MS, DEFAULT_TIMEOUT, Payload, Reply, Spec, _ms, _payload
from ._pool import Lease as _Lease
from ._pool import Pool as _Pool

__all__ = [
    "Pool",
    "Lease",
    "Client",
    "connect",
    "MAX_THREADS",
    "AsyncRun",
    "RUN_THREADS",
    "start_run",
    "run_output",
    "acquire_slot",
]

T = TypeVar("T")

#: Threads of one ``aio.Pool``'s completion queue and of its executor: the most requests
#: (and other blocking calls) it runs at once; more wait in the queue, still cancellable.
#: Pass ``max_threads=`` to change it.
MAX_THREADS: int = 64

#: How long a lone request waits for its reply before yielding to the loop (microseconds;
#: spinning where a CPU is to spare, else asleep in ``poll``): the stdout reader's spin
#: budget. At most this long the loop is held per lone request, and only while such waits
#: keep finding the reply.
LONE_WAIT_US: int = 50

#: What a completion gives: (status, reply text or error message, instance, moved,
#: served_by).
_Done = Tuple[int, str, Optional[int], bool, Optional[str]]


class _Completions:
    """A ``ToolpoolCompletions`` queue watched by the running loop: each submitted request
    gets a tag and a future, resolved when the loop sees the queue's descriptor readable."""

    def __init__(self, max_threads: int, pool: _Pool) -> None:
        # The queue's requests borrow the pool: it must outlive the queue, even when both
        # are garbage at once (an aio.Pool never closed).
        self.pool = pool
        out = c_void_p()
        call(lib.toolpool_completions_new, max_threads, byref(out))
        assert out.value is not None
        self.ptr: Optional[int] = out.value
        fd = c_int32()
        call(lib.toolpool_completions_fd, self.ptr, byref(fd))
        self.fd = fd.value
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(self.fd, self._drain)
        self.futures: Dict[int, "asyncio.Future[_Done]"] = {}
        self.next_tag = 0
        # The short wait of a lone request (see `run`): waits to skip after a miss, and
        # the skip after the last miss (doubled each miss, up to 1,024; 0 after a hit).
        self.skip = 0
        self.backoff = 0

    def _drain(self) -> None:
        assert self.ptr is not None
        futures = self.futures
        for tag, status, text, instance, moved, served_by in native.completions_take(self.ptr):
            fut = futures.pop(tag, None)
            if fut is not None and not fut.done():
                fut.set_result((status, text, instance, moved, served_by))

    async def run(
        self, pool: _Pool, key: Optional[Union[str, bytes]], payload: Payload, timeout: Optional[float]
    ) -> _Done:
        """Submit one request on ``pool`` and wait for its completion. Cancelling the task
        cancels the request and waits for it to end (milliseconds)."""
        if self.ptr is None:
            raise ShutDown("the aio pool is closed")
        if type(payload) is not str:
            payload = _payload(payload)
        ms = _DEFAULT_MS if timeout is DEFAULT_TIMEOUT else _ms(timeout)
        tag = self.next_tag
        self.next_tag = tag + 1
        # The pool outlives the queue's requests: aclose() frees the queue first.
        p = pool._ptr
        if p is None:
            raise ShutDown("pool is closed")
        native.completions_request(self.ptr, p, key, payload, ms, tag)
        fut: "asyncio.Future[_Done]" = self.loop.create_future()
        alone = not self.futures
        self.futures[tag] = fut
        if alone:
            # A lone request (one at a time, the common case of a handler): wait up to
            # LONE_WAIT_US for its reply before yielding to the loop, so a reply that comes
            # within microseconds costs no loop wake-up. Kept only while it pays off: after
            # a miss it is skipped for a doubling number of lone requests.
            if self.skip:
                self.skip -= 1
            elif native.completions_wait(self.ptr, LONE_WAIT_US):
                self.backoff = 0
                self._drain()
            else:
                self.backoff = min(max(1, self.backoff * 2), 1024)
                self.skip = self.backoff
        try:
            return await fut
        except asyncio.CancelledError:
            if tag in self.futures:
                # Still running: stop it and wait for its completion, so nothing of it
                # outlives the task (its result, Cancelled, is dropped).
                done: "asyncio.Future[_Done]" = self.loop.create_future()
                self.futures[tag] = done
                lib.toolpool_completions_cancel(self.ptr, tag, None)
                while not done.done():
                    try:
                        await asyncio.shield(done)
                    except asyncio.CancelledError:  # cancelled again: keep waiting, briefly
                        pass
            raise

    def close(self) -> None:
        """Stop watching, cancel what is pending, free the queue (its threads end);
        the futures still waiting get ``ShutDown``."""
        ptr, self.ptr = self.ptr, None
        if ptr is None:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(self.fd)
        lib.toolpool_completions_free(ptr)
        futures, self.futures = self.futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_result((TOOLPOOL_SHUT_DOWN, "the aio pool is closed", None, False, None))


    def __del__(self) -> None:
        # An aio.Pool dropped without aclose(): free the queue (cancelling its requests)
        # before the pool it borrows can go.
        ptr, self.ptr = getattr(self, "ptr", None), None
        if ptr is not None:
            try:
                lib.toolpool_completions_free(ptr)
            except Exception:  # interpreter shutdown: the module may be half torn down
                pass


def _result(done: _Done) -> str:
    status, text = done[0], done[1]
    if status != 0:
        raise error_for_code(status, text)
    return text


_Self = TypeVar("_Self", bound="_Opens")


class _Opens:
    """``async with x`` and ``x = await x`` for an object that opens with ``start()`` and
    closes with ``aclose()`` (both run their blocking part in a thread)."""

    async def start(self: _Self) -> _Self:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    def __await__(self: _Self) -> Generator[Any, None, _Self]:
        return self.start().__await__()

    async def __aenter__(self: _Self) -> _Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.aclose()


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


class Pool(_Opens):
    """A pool for asyncio programs: ``async with aio.Pool(spec) as pool``. The arguments are
    those of :class:`toolpool.Pool`; the pool starts on ``__aenter__`` (or
    :meth:`start`, or ``await pool``) in a thread, and shuts down on ``__aexit__`` (or
    :meth:`aclose`). :meth:`Client.pool` makes one of a service's pools."""

    def __init__(
        self,
        spec_or_tool: Spec,
        count: Optional[int] = None,
        *,
        registry: Optional[str] = None,
        max_threads: int = MAX_THREADS,
    ) -> None:
        self._setup(lambda: _Pool(spec_or_tool, count, registry=registry), max_threads)

    def _setup(self, open_pool: Callable[[], _Pool], max_threads: int) -> None:
        #: Called in a thread by start(): the toolpool.Pool this object drives.
        self._open = open_pool
        self._max_threads = max_threads
        self._executor = concurrent.futures.ThreadPoolExecutor(max_threads, thread_name_prefix="toolpool-aio")
        self._pool: Optional[_Pool] = None
        self._queue: Optional[_Completions] = None

    def _live(self) -> _Pool:
        if self._pool is None:
            raise ShutDown("the aio pool is not started (use `async with aio.Pool(...)`) or is closed")
        return self._pool

    async def start(self) -> "Pool":
        """Start the instances (in a thread); returns the pool."""
        if self._pool is None:
            loop = asyncio.get_running_loop()
            try:
                self._pool = await loop.run_in_executor(self._executor, self._open)
            except BaseException:
                self._executor.shutdown(wait=False)  # nothing to run: let its thread go
                raise
            self._queue = _Completions(self._max_threads, self._pool)
        return self

    @classmethod
    def _opened_by(cls, open_pool: Callable[[], _Pool], max_threads: int) -> "Pool":
        """An aio pool whose :meth:`start` takes the :class:`toolpool.Pool` that
        ``open_pool`` returns (called in a thread); :meth:`aclose` closes it."""
        self = cls.__new__(cls)
        self._setup(open_pool, max_threads)
        return self

    async def aclose(self, grace: Optional[float] = None) -> None:
        """Shut the pool down (in a thread) and free it. Idempotent. ``grace`` as in
        :meth:`toolpool.Pool.shutdown` (``None``: the spec's ``shutdown.grace_ms``)."""
        pool, self._pool = self._pool, None
        queue, self._queue = self._queue, None
        loop = asyncio.get_running_loop()
        if pool is not None:
            # The shutdown ends the queue's requests at once; the queue is freed (its
            # threads joined) before the pool they borrow.
            await loop.run_in_executor(self._executor, pool.shutdown, grace)
            if queue is not None:
                queue.close()
            await loop.run_in_executor(self._executor, pool.close)
        await loop.run_in_executor(None, lambda: self._executor.shutdown(wait=True))

    @property
    def pool(self) -> _Pool:
        """The underlying :class:`toolpool.Pool` (its blocking methods block the loop)."""
        return self._live()

    async def request(self, payload: Payload, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """:meth:`toolpool.Pool.request`, awaited (through the completion queue, no
        thread of Python's); cancelling the task cancels it."""
        p, q = self._live(), self._queue
        assert q is not None
        return _result(await q.run(p, None, payload, timeout))

    async def request_sticky(
        self, key: Union[str, bytes], payload: Payload, timeout: Optional[float] = DEFAULT_TIMEOUT
    ) -> Reply:
        """:meth:`toolpool.Pool.request_sticky`, awaited (as :meth:`request`)."""
        p, q = self._live(), self._queue
        assert q is not None
        done = await q.run(p, key, payload, timeout)
        return Reply(_result(done), done[2], done[3], done[4] or "pool")

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

    async def _in_thread(self, fn: Callable[[_Pool], T]) -> T:
        """``fn(pool)`` on the pool's executor."""
        p = self._live()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, p)

    async def health(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.health`, in a thread."""
        return await self._in_thread(_Pool.health)

    async def status(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.status`, in a thread."""
        return await self._in_thread(_Pool.status)

    async def metrics(self) -> Dict[str, Any]:
        """:meth:`toolpool.Pool.metrics`, in a thread."""
        return await self._in_thread(_Pool.metrics)

    async def metrics_prometheus(self) -> str:
        """:meth:`toolpool.Pool.metrics_prometheus`, in a thread."""
        return await self._in_thread(_Pool.metrics_prometheus)

    async def restart(self, i: int) -> None:
        """:meth:`toolpool.Pool.restart`, in a thread."""
        await self._in_thread(lambda p: p.restart(i))

    async def resize(self, n: int) -> None:
        """:meth:`toolpool.Pool.resize`, in a thread."""
        await self._in_thread(lambda p: p.resize(n))

    async def reload(self, spec: Spec) -> None:
        """:meth:`toolpool.Pool.reload`, in a thread."""
        await self._in_thread(lambda p: p.reload(spec))

    def __len__(self) -> int:
        """The number of instances (as :func:`len` of :class:`toolpool.Pool`)."""
        return len(self._live())


class Client(_Opens):
    """A client of a ``toolpool serve`` service for asyncio programs, from :func:`connect`:
    ``async with aio.connect(path) as client`` (or ``client = await aio.connect(path)``
    then :meth:`aclose`) connects in a thread; :meth:`pool` gives the service's pools as
    :class:`Pool` objects."""

    def __init__(self, path: Union[str, "os.PathLike[str]"], *, max_threads: int = MAX_THREADS) -> None:
        self._path = path
        self._max_threads = max_threads
        self._client: Optional[_Client] = None

    def _live(self) -> _Client:
        if self._client is None:
            raise ShutDown("the aio client is not connected (use `async with aio.connect(...)`) or is closed")
        return self._client

    @property
    def client(self) -> _Client:
        """The underlying :class:`toolpool.Client` (its blocking methods block the loop)."""
        return self._live()

    async def start(self) -> "Client":
        """Connect (in a thread); returns the client. Raises :class:`toolpool.ServiceError`
        as :func:`toolpool.connect` does."""
        if self._client is None:
            self._client = await asyncio.get_running_loop().run_in_executor(None, _Client, self._path)
        return self

    async def aclose(self) -> None:
        """Close the client (its idle connections). The pools taken from it keep working
        until they are closed themselves. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            await asyncio.get_running_loop().run_in_executor(None, client.close)

    def pool(self, tool: str, *, max_threads: Optional[int] = None) -> Pool:
        """The service's pool of ``tool`` as an :class:`aio.Pool <Pool>`, opened (in a
        thread) by ``async with client.pool(tool) as pool`` or ``pool = await
        client.pool(tool)``, closed by leaving the block or :meth:`Pool.aclose` (which ends
        this handle only; the service's pool runs on). Opening raises what
        :meth:`toolpool.Client.pool` raises (``NotFound``, ``ServiceError``).
        ``max_threads`` defaults to the client's."""
        client = self._live()
        return Pool._opened_by(lambda: client.pool(tool), max_threads or self._max_threads)

    async def tools(self) -> List[str]:
        """:meth:`toolpool.Client.tools`, in a thread."""
        client = self._live()
        return await asyncio.get_running_loop().run_in_executor(None, client.tools)


def connect(path: Union[str, "os.PathLike[str]"], *, max_threads: int = MAX_THREADS) -> Client:
    """A client of the ``toolpool serve`` service on the Unix socket ``path``, connected by
    ``async with aio.connect(path) as client`` or ``client = await aio.connect(path)``.
    ``max_threads`` is the default of its pools (see :data:`MAX_THREADS`)."""
    return Client(path, max_threads=max_threads)
