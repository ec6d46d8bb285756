"""Runs and permits: the Python face of ``ToolpoolRun`` and ``ToolpoolPermit``.

A run is one command started under the host-wide process limit; its ``stdout`` and
``stderr`` iterate lines as they come, and :meth:`Run.wait` gives the return code as
:mod:`subprocess` does (negative: killed by that signal)::

    with toolpool.start_run({"command": ["make", "all"], "timeout_ms": 600_000}) as run:
        for line in run.stdout:
            print(line)
        print(run.wait())

A permit is one slot of the limit for a process the program starts itself::

    with toolpool.acquire_slot(timeout=0) as permit:     # LimitReached when full
        proc = subprocess.Popen(["make", "all"])
        permit.register_pid(proc.pid)                     # counted until it exits
        proc.wait()
"""

from __future__ import annotations

import json
from ctypes import byref, c_int32, c_uint32, c_void_p
from typing import Any, Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Union

from ._cancel import CancelToken, run_blocking
from ._errors import InvalidArgument, call
from ._ffi import lib
from ._generated import TOOLPOOL_STREAM_STDERR, TOOLPOOL_STREAM_STDOUT
from ._managed import Managed
from ._pool import DEFAULT_TIMEOUT, _cstr, _ms, _take

__all__ = ["Run", "RunSpec", "RunResult", "LineStream", "Permit", "start_run", "run_output", "acquire_slot"]

#: A run spec: a dict (docs/runs.md: ``command``, ``env``, ``cwd``, ``input``,
#: ``timeout_ms``, ``slot_timeout_ms``, ...), its JSON text, or an argv list.
RunSpec = Union[Mapping[str, Any], str, Sequence[str]]

_STREAMS = {"stdout": TOOLPOOL_STREAM_STDOUT, "stderr": TOOLPOOL_STREAM_STDERR}


def _spec_json(spec: RunSpec) -> bytes:
    if isinstance(spec, str):
        return _cstr(spec, "spec")
    if isinstance(spec, Mapping):
        return _cstr(json.dumps(dict(spec)), "spec")
    if isinstance(spec, (list, tuple)):
        return _cstr(json.dumps({"command": list(spec)}), "spec")
    raise TypeError(f"a run spec must be a dict, a JSON string or an argv list, not {type(spec).__name__}")


def _returncode(exit: Mapping[str, int]) -> int:
    """``{"code": N}`` or ``{"signal": N}`` as :mod:`subprocess` reports it (-N: signal N)."""
    return exit["code"] if "code" in exit else -exit["signal"]


class RunResult(NamedTuple):
    """What :func:`run_output` collected (like :class:`subprocess.CompletedProcess`)."""

    #: The exit code, or ``-N`` when signal N killed it (-9: its timeout, ``kill_all``).
    returncode: int
    #: The first ``max_output_bytes`` of stdout (default 16 MiB; invalid UTF-8 replaced).
    stdout: str
    #: The first ``max_output_bytes`` of stderr.
    stderr: str
    #: Killed at its timeout.
    timed_out: bool
    #: Bytes read beyond ``max_output_bytes`` and dropped.
    stdout_dropped_bytes: int
    stderr_dropped_bytes: int
    #: The pid it had; None for a dry run.
    pid: Optional[int]
    #: Milliseconds from its start to its end.
    elapsed_ms: int


class LineStream:
    """One output stream of a :class:`Run`: iterating it gives the lines (no newline) until
    the stream ends, waiting as long as the run writes nothing."""

    def __init__(self, run: "Run", name: str) -> None:
        self._run = run
        self._name = name

    def read_line(self, timeout: Optional[float] = None, *, cancel: Optional[CancelToken] = None) -> Optional[str]:
        """The next line, or None at the end of the stream (see :meth:`Run.read_line`)."""
        return self._run.read_line(self._name, timeout, cancel=cancel)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self.read_line()
        if line is None:
            raise StopIteration
        return line

    def __repr__(self) -> str:
        return f"<toolpool.LineStream {self._name} of {self._run!r}>"


class Run(Managed):
    """A command running under the host-wide process limit (from :func:`start_run`).

    Every method may be called from many threads at once (one thread may iterate
    ``stdout`` while another iterates ``stderr``, writes or waits). ``close()`` (also on
    leaving a ``with`` block, or when the object is collected) kills what is left of the
    process group, reaps it and frees the handle."""

    _what = "run"

    def __init__(self, spec: RunSpec, *, cancel: Optional[CancelToken] = None) -> None:
        data = _spec_json(spec)

        def start(c: Optional[int]) -> int:
            out = c_void_p()
            call(lib.toolpool_run_start, data, c, byref(out))
            assert out.value is not None
            return out.value

        self._init_handle(run_blocking(start, cancel))
        pid = c_int32()
        with self._borrow() as p:
            call(lib.toolpool_run_pid, p, byref(pid))
        #: The process's pid (also its process group id); None for a dry run.
        self.pid: Optional[int] = pid.value or None
        #: stdout, line by line (``for line in run.stdout``).
        self.stdout = LineStream(self, "stdout")
        #: stderr, line by line; the last ``queue_lines`` lines are kept for a late reader.
        self.stderr = LineStream(self, "stderr")
        self._returncode: Optional[int] = None

    def _delete(self, ptr: int) -> None:
        lib.toolpool_run_free(ptr)

    def _wake(self, ptr: int) -> None:
        # Safe to race other calls (only toolpool_run_free must not): the end wakes them.
        lib.toolpool_run_kill(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<toolpool.Run pid={self.pid} {state}>"

    def write_line(self, line: Union[str, bytes]) -> None:
        """Queue ``line`` (toolpool adds the newline) for stdin; never blocks. Raises
        ``InvalidArgument`` (a newline in it, or stdin closed), ``QueueFull`` (the process
        is not reading), ``ToolpoolIOError`` (the run has ended), ``ShutDown``."""
        data = _cstr(line, "line")
        with self._borrow() as p:
            call(lib.toolpool_run_write_line, p, data)

    def close_stdin(self) -> None:
        """Close stdin once the queued lines are written (the process reads EOF)."""
        with self._borrow() as p:
            call(lib.toolpool_run_close_stdin, p)

    def read_line(
        self, stream: str = "stdout", timeout: Optional[float] = None, *, cancel: Optional[CancelToken] = None
    ) -> Optional[str]:
        """The next line of ``stream`` (``"stdout"`` or ``"stderr"``) without its newline,
        or None at the end of the stream; waits up to ``timeout`` seconds (None: as long as
        it takes; 0: only what is there). stdout is read as you read it: nothing is lost
        (the process waits once ``queue_lines`` lines wait for you); stderr is drained
        always and keeps the last ``queue_lines`` lines. Raises ``Timeout``,
        ``Cancelled``, ``ShutDown``; Ctrl-C interrupts it."""
        code = _STREAMS.get(stream)
        if code is None:
            raise InvalidArgument(f"stream must be 'stdout' or 'stderr', not {stream!r}")
        ms = _ms(timeout)

        def read(c: Optional[int]) -> Optional[str]:
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_run_read_line, p, code, ms, c, byref(out))
            return _take(out) if out.value else None

        return run_blocking(read, cancel)

    def wait(self, timeout: Optional[float] = None, *, cancel: Optional[CancelToken] = None) -> int:
        """Wait for the end (up to ``timeout`` seconds; None: as long as it takes) and return
        the return code: the exit code, or ``-N`` when signal N killed it (-9 after
        :meth:`kill`, its ``timeout_ms`` or ``kill_all``). Once it returns, the run no
        longer counts under the limit. It does not read the streams: a process that
        writes more than its pipe and ``queue_lines`` hold waits for a reader. Raises
        ``Timeout``, ``Cancelled``, ``ShutDown``."""
        ms = _ms(timeout)

        def wait(c: Optional[int]) -> int:
            code, sig = c_int32(), c_int32()
            with self._borrow() as p:
                call(lib.toolpool_run_wait, p, ms, c, byref(code), byref(sig))
            return -sig.value if sig.value else code.value

        self._returncode = run_blocking(wait, cancel)
        return self._returncode

    @property
    def returncode(self) -> Optional[int]:
        """The return code once :meth:`wait` has returned it; None before."""
        return self._returncode

    def kill(self) -> None:
        """SIGKILL the process group (a dry run ends with signal 9); never blocks."""
        with self._borrow() as p:
            call(lib.toolpool_run_kill, p)

    def status(self) -> Dict[str, Any]:
        """The run's state: ``name``, ``pid``, ``dry_run``, ``running``, ``exit``,
        ``timed_out``, ``elapsed_ms`` and line counts (``stderr_dropped``: the oldest
        stderr lines dropped while ``queue_lines`` waited unread)."""
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_run_status_json, p, byref(out))
        result: Dict[str, Any] = json.loads(_take(out))
        return result


def start_run(spec: RunSpec, *, cancel: Optional[CancelToken] = None) -> Run:
    """Start a run under the host-wide limiter: wait up to the spec's ``slot_timeout_ms``
    (default 10 s; 0: not at all) for room under the limit, then start the process (or,
    with ``dry_run`` in the spec or ``TOOLPOOL_DRY_RUN=1``, its stand-in). Use it as a
    context manager. Raises ``ConfigError``, ``LimitReached`` ("maximum concurrent processes
    reached: N of M"), ``SpawnFailed``, ``Cancelled`` (``cancel`` ends the slot wait)."""
    return Run(spec, cancel=cancel)


def run_output(spec: RunSpec, timeout: Optional[float] = None, *, cancel: Optional[CancelToken] = None) -> RunResult:
    """Run ``spec`` to its end and collect its output: stdin gets the spec's ``input`` (or
    is closed at once), stdout and stderr are kept up to ``max_output_bytes`` each. The
    run is killed, with its group, after ``timeout`` seconds (None: no limit) or the spec's
    ``timeout_ms``, whichever is shorter; then ``timed_out`` is True. A non-zero exit is a
    result, not an exception. Raises what :func:`start_run` raises, and ``Cancelled``
    (``cancel`` kills the run)."""
    data, ms = _spec_json(spec), _ms(timeout)

    def collect(c: Optional[int]) -> RunResult:
        out = c_void_p()
        call(lib.toolpool_run_output, data, ms, c, byref(out))
        doc = json.loads(_take(out))
        return RunResult(
            returncode=_returncode(doc["exit"]),
            stdout=doc["stdout"],
            stderr=doc["stderr"],
            timed_out=doc["timed_out"],
            stdout_dropped_bytes=doc["stdout_dropped_bytes"],
            stderr_dropped_bytes=doc["stderr_dropped_bytes"],
            pid=doc["pid"],
            elapsed_ms=doc["elapsed_ms"],
        )

    return run_blocking(collect, cancel)


class Permit(Managed):
    """One slot of the host-wide process limit, for a process the program starts itself
    (from :func:`acquire_slot`). Register the process's pid right after its start: it then
    counts in :func:`limit_status` (kind ``"registered"``) and dies with
    :func:`kill_all`. The slot comes back when the process exits (seen through a pidfd,
    not by polling), or at :meth:`release` (also on leaving a ``with`` block)."""

    _what = "permit"

    def __init__(self, ptr: int) -> None:
        self._init_handle(ptr)

    def _delete(self, ptr: int) -> None:
        lib.toolpool_permit_release(ptr)

    def __repr__(self) -> str:
        state = "released" if self.closed else "held"
        return f"<toolpool.Permit {state}>"

    def register_pid(self, pid: int) -> None:
        """Attach ``pid`` (a ``subprocess.Popen``'s or an asyncio process's ``pid``) to the
        slot. One pid per permit. Raises ``InvalidArgument`` (no such process, this
        process, a pid already counted, a second pid), ``ToolpoolIOError`` (no pidfd and
        not a child of this process), ``ShutDown`` (released)."""
        if isinstance(pid, bool) or not isinstance(pid, int):
            raise TypeError(f"pid must be an int, not {type(pid).__name__}")
        if not 0 < pid <= 0x7FFFFFFF:
            raise InvalidArgument(f"pid {pid} is not a process id")
        with self._borrow() as p:
            call(lib.toolpool_permit_register_pid, p, pid)

    @property
    def holds_slot(self) -> bool:
        """True before a pid is registered and while the registered process runs."""
        out = c_uint32()
        with self._borrow() as p:
            call(lib.toolpool_permit_holds_slot, p, byref(out))
        return bool(out.value)

    def release(self) -> None:
        """Give the slot back (a registered process keeps running, no longer counted).
        Idempotent."""
        self.close()


def acquire_slot(timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None) -> Permit:
    """Take one slot of the host-wide process limit, waiting up to ``timeout`` seconds (0:
    fail at once when the limit is full). Raises ``LimitReached`` ("maximum concurrent
    processes reached: N of M"), ``Cancelled``; Ctrl-C interrupts the wait."""
    ms = _ms(timeout)

    def acquire(c: Optional[int]) -> int:
        out = c_void_p()
        call(lib.toolpool_limit_acquire, ms, c, byref(out))
        assert out.value is not None
        return out.value

    return Permit(run_blocking(acquire, cancel))
