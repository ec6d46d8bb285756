"""Pool and Lease: the Python face of ``ToolpoolPool`` and ``ToolpoolLease``."""

from __future__ import annotations

import ctypes
import json
import math
import os
import threading
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from ._cancel import CancelToken, run_blocking
from ._errors import InvalidArgument, IndexOutOfRange, ShutDown, ToolpoolError, call, error_for_code
from ._ffi import lib, native
from ._managed import Managed

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_GRACE",
    "Pool",
    "Lease",
    "Reply",
    "RetrySpec",
    "Payload",
    "Spec",
]

#: Default for every ``timeout=`` (seconds): reads, requests, leases, ``map``.
DEFAULT_TIMEOUT: float = 30.0
#: The grace (seconds) of the shutdown that :meth:`Pool.close` from another thread starts
#: to wake the callers that wait (the spec default); the pool is then freed with the spec's
#: own ``shutdown.grace_ms``.
DEFAULT_GRACE: float = 2.0

_U32_MAX = 0xFFFFFFFF

#: A line or payload: ``str`` (encoded UTF-8) or ``bytes`` (passed as is). A ``dict`` or
#: ``list`` payload of a request is sent as its JSON text (``json.dumps``).
Payload = Union[str, bytes, Mapping[str, Any], Sequence[Any]]
#: A pool spec: a dict (a registry entry's keys), a JSON string, a tool id, or an argv list.
Spec = Union[Mapping[str, Any], str, bytes, Sequence[str]]


class Reply(NamedTuple):
    """The answer to :meth:`Pool.request_sticky` and :meth:`Pool.request_reply`."""

    text: str
    #: The instance that answered; None when a one-shot run served the request.
    instance: Optional[int]
    #: True when the key's instance had died and the key moved to another one.
    moved: bool
    #: Which path served it: ``"pool"``, ``"retry"`` (a later pooled run) or
    #: ``"oneshot"`` (the spec's one-shot command).
    served_by: str = "pool"


#: A retry for one request (the spec key ``retry``): ``{"max": N, "on": [causes]}``, or
#: ``(N, [causes])``; causes ``"dead"``, ``"timeout"``, ``"invalid_reply"``,
#: ``"unavailable"``, ``"spawn_failed"``, ``"tool_error"``.
RetrySpec = Union[Mapping[str, Any], Tuple[int, Sequence[str]]]


def _options(key: Optional[Union[str, bytes]], retry: Optional[RetrySpec]) -> Optional[bytes]:
    """The options JSON of ``toolpool_pool_request_json`` (None: none)."""
    opts: Dict[str, Any] = {}
    if key is not None:
        opts["key"] = key.decode("utf-8") if isinstance(key, bytes) else key
    if retry is not None:
        if isinstance(retry, tuple):
            opts["retry"] = {"max": retry[0], "on": list(retry[1])}
        elif isinstance(retry, Mapping):
            opts["retry"] = dict(retry)
        else:
            raise TypeError(f"retry must be a dict or a (max, causes) tuple, not {type(retry).__name__}")
    return _cstr(json.dumps(opts), "options") if opts else None


# -- conversions --------------------------------------------------------------------------


def _ms(timeout: Optional[float], what: str = "timeout") -> int:
    """Seconds (float) to the C milliseconds; None waits as long as C can (~49.7 days)."""
    if timeout is None:
        return _U32_MAX
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise InvalidArgument(f"{what} must be >= 0 seconds, not {timeout!r}")
    ms = math.ceil(timeout * 1000)
    return min(ms, _U32_MAX)


_DEFAULT_MS = _ms(DEFAULT_TIMEOUT)


def _index(i: int) -> int:
    if isinstance(i, bool) or not isinstance(i, int):
        raise TypeError(f"instance index must be an int, not {type(i).__name__}")
    if not 0 <= i <= _U32_MAX - 1:
        raise IndexOutOfRange(f"instance index {i} is out of range")
    return i


def _cstr(s: Union[str, bytes, bytearray, memoryview, "os.PathLike[str]"], what: str) -> bytes:
    """A str (UTF-8) or bytes argument as a C string; a NUL inside is InvalidArgument."""
    if isinstance(s, os.PathLike):
        s = os.fspath(s)
    if isinstance(s, str):
        try:
            b = s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidArgument(f"{what} is not valid UTF-8: {e}") from None
    elif isinstance(s, (bytes, bytearray, memoryview)):
        b = bytes(s)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(s).__name__}")
    if b"\0" in b:
        raise InvalidArgument(f"{what} contains a NUL byte")
    return b


def _payload(p: Payload) -> bytes:
    if isinstance(p, (str, bytes, bytearray, memoryview)):
        return _cstr(p, "payload")
    if isinstance(p, (Mapping, list, tuple)):
        return _cstr(json.dumps(p), "payload")
    raise TypeError(f"payload must be str, bytes, dict or list, not {type(p).__name__}")


def _payload_str(p: Payload) -> str:
    b = _payload(p)
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidArgument(f"payload is not valid UTF-8: {e}") from None


def _take(ptr: c_void_p) -> str:
    """Copy a toolpool-owned string into Python and free it with toolpool_string_free."""
    if not ptr.value:
        return ""
    try:
        return ctypes.string_at(ptr.value).decode("utf-8", "replace")
    finally:
        lib.toolpool_string_free(ptr)


def _take_json(ptr: c_void_p) -> Any:
    return json.loads(_take(ptr))


# -- Pool ---------------------------------------------------------------------------------


class Pool(Managed):
    """A pool of warm tool processes.

    ``spec_or_tool`` is one of:

    * a ``dict``: a tool spec (the keys of a registry entry, e.g.
      ``{"command": ["bc", "-q"], "count": 3}``), sent as JSON;
    * a ``str`` starting with ``{``: the same spec as JSON text;
    * a list of strings: the command (argv), every other key at its default;
    * any other ``str``: a tool id looked up in the registry file ``registry``
      (``None``: the file named by ``$TOOLPOOL_REGISTRY``). With
      ``$TOOLPOOL_SERVER=unix:PATH`` set, the pool is that ``toolpool serve`` service's
      pool of the tool instead (as ``toolpool.connect(PATH).pool(tool)``): the service's
      registry and counts apply, and ``registry`` and ``count`` are not used.

    ``count`` overrides the spec's instance count. The constructor returns once every
    instance is ready (``SpawnFailed``, ``LimitReached``, ``ConfigError``, ``NotFound`` if
    not). Every method may be called from many threads at once; ``close()`` (also on
    leaving a ``with`` block, or when the object is collected) shuts the pool down.
    """

    _what = "pool"

    def __init__(
        self,
        spec_or_tool: Spec,
        count: Optional[int] = None,
        registry: Optional[Union[str, "os.PathLike[str]"]] = None,
    ) -> None:
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"count must be an int or None, not {type(count).__name__}")
        if count is not None and not 1 <= count <= _U32_MAX:
            raise InvalidArgument(f"count must be at least 1, not {count}")
        out = c_void_p()
        if isinstance(spec_or_tool, bytes):
            spec_or_tool = spec_or_tool.decode("utf-8")
        if isinstance(spec_or_tool, str) and not spec_or_tool.lstrip().startswith("{"):
            reg = None if registry is None else _cstr(registry, "registry")
            call(
                lib.toolpool_pool_from_registry,
                reg,
                _cstr(spec_or_tool, "tool id"),
                count or 0,
                byref(out),
            )
        else:
            if registry is not None:
                raise TypeError("registry= applies only when the first argument is a tool id")
            call(lib.toolpool_pool_new, _cstr(self._spec_json(spec_or_tool, count), "spec"), byref(out))
        assert out.value is not None
        self._init_handle(out.value)
        n = c_uint32()
        with self._borrow() as p:
            call(lib.toolpool_pool_size, p, byref(n))
        self._size = n.value

    @staticmethod
    def _spec_json(spec: Spec, count: Optional[int]) -> str:
        if isinstance(spec, str):
            if count is None:
                return spec
            try:
                obj = json.loads(spec)
            except ValueError:
                return spec  # let the library report the bad JSON as ConfigError
            if not isinstance(obj, dict):
                return spec
            spec = obj
        elif isinstance(spec, (list, tuple)):
            spec = {"command": list(spec)}
        if not isinstance(spec, Mapping):
            raise TypeError(
                "spec_or_tool must be a dict, a JSON string, a tool id or a command list, "
                f"not {type(spec).__name__}"
            )
        d = dict(spec)
        if count is not None:
            d["count"] = count
        return json.dumps(d)

    #: Lent by a :class:`toolpool.Pools`: its own ``close()`` does nothing.
    _lent: bool = False

    @classmethod
    def _adopt(cls, ptr: int, *, lent: bool) -> "Pool":
        """A pool around a handle the C API gave: one ``toolpool_pools_get`` lent (``lent``:
        its ``Pools`` frees it), or a new one this object owns (``toolpool_client_pool``)."""
        self = cls.__new__(cls)
        self._lent = lent
        self._init_handle(ptr)
        n = c_uint32()
        call(lib.toolpool_pool_size, ptr, byref(n))
        self._size = n.value
        return self

    def close(self) -> None:
        """Shut the pool down (the spec's ``shutdown.grace_ms``) and free it; idempotent.
        A pool from a :class:`toolpool.Pools` belongs to it: this does nothing, and the
        ``Pools`` closes it."""
        if not self._lent:
            super().close()

    def _delete(self, ptr: int) -> None:
        lib.toolpool_pool_free(ptr)

    def _wake(self, ptr: int) -> None:
        # Safe to race other calls (only toolpool_pool_free must not): it wakes waiters.
        lib.toolpool_pool_shutdown(ptr, _ms(DEFAULT_GRACE))

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<toolpool.Pool size={self._size} {state}>"

    # -- line I/O -----------------------------------------------------------------------

    def send(self, i: int, line: Union[str, bytes]) -> None:
        """Queue ``line`` (toolpool adds the newline) for instance ``i``'s stdin.

        A ``str`` is sent as UTF-8; ``bytes`` are sent exactly (NUL and bytes that are not
        UTF-8 included). Never blocks. Raises ``InvalidArgument`` (a newline in the line),
        ``InstanceDead``, ``InstanceFailed``, ``QueueFull``, ``IndexOutOfRange``,
        ``ShutDown``.
        """
        idx = _index(i)
        if isinstance(line, (bytes, bytearray, memoryview)):
            raw = bytes(line)
            with self._borrow() as p:
                call(lib.toolpool_pool_send_bytes, p, idx, raw, len(raw))
            return
        data = _cstr(line, "line")
        with self._borrow() as p:
            call(lib.toolpool_pool_send, p, idx, data)

    def notify(self, i: int, payload: Payload) -> None:
        """Send a JSON-RPC notification to instance ``i`` (protocols ``jsonrpc`` and ``lsp``).

        ``payload`` is ``{"method": ..., "params": ...}`` (a dict or its JSON text), as for
        :meth:`request`; it is sent without an id, framed by the protocol, and nothing is
        awaited. Never blocks. Raises ``InvalidArgument`` (a bad payload, or another
        protocol), ``IndexOutOfRange``, ``InstanceDead``, ``InstanceFailed``,
        ``QueueFull``, ``ShutDown``.
        """
        idx = _index(i)
        data = _payload(payload)
        with self._borrow() as p:
            call(lib.toolpool_pool_notify, p, idx, data)

    def send_routed(self, line: Union[str, bytes]) -> int:
        """Send ``line`` to the instance the spec's routing picks; returns its index."""
        data = _cstr(line, "line")
        out = c_uint32()
        with self._borrow() as p:
            call(lib.toolpool_pool_send_routed, p, data, byref(out))
        return out.value

    def read_line(
        self, i: int, timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None
    ) -> str:
        """The next stdout line of instance ``i`` (no newline), waiting up to ``timeout``
        seconds (0: only what is there; None: no limit). Raises ``Timeout``,
        ``InstanceDead`` (ended and fully read), ``IndexOutOfRange``, ``ShutDown``,
        ``Cancelled`` (``cancel`` was triggered). Ctrl-C interrupts it, as every blocking
        call, with ``KeyboardInterrupt``."""
        idx, ms = _index(i), _ms(timeout)

        def run(c: Optional[int]) -> str:
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pool_read_line_cancellable, p, idx, ms, c, byref(out))
            return _take(out)

        return run_blocking(run, cancel)

    def read_line_bytes(
        self, i: int, timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None
    ) -> bytes:
        """Like :meth:`read_line`, but the exact bytes the tool wrote (no decoding)."""
        idx, ms = _index(i), _ms(timeout)

        def run(c: Optional[int]) -> bytes:
            out = c_void_p()
            size = ctypes.c_size_t()
            with self._borrow() as p:
                call(lib.toolpool_pool_read_line_bytes_cancellable, p, idx, ms, c, byref(out), byref(size))
            try:
                return ctypes.string_at(out.value or 0, size.value) if size.value else b""
            finally:
                lib.toolpool_bytes_free(out, size)

        return run_blocking(run, cancel)

    def read_stderr_line(self, i: int, timeout: Optional[float] = DEFAULT_TIMEOUT) -> str:
        """The next stderr line of instance ``i``, waiting up to ``timeout`` seconds."""
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_pool_read_stderr_line, p, _index(i), _ms(timeout), byref(out))
        return _take(out)

    def read_any(
        self, timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None
    ) -> Tuple[int, str]:
        """The first stdout line from any instance: ``(index, line)``."""
        ms = _ms(timeout)

        def run(c: Optional[int]) -> Tuple[int, str]:
            idx = c_uint32()
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pool_read_any_cancellable, p, ms, c, byref(idx), byref(out))
            return idx.value, _take(out)

        return run_blocking(run, cancel)

    # -- requests -----------------------------------------------------------------------

    def request(
        self,
        payload: Payload,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        cancel: Optional[CancelToken] = None,
        retry: Optional[RetrySpec] = None,
    ) -> str:
        """One request, framed by the spec's ``protocol``, to an instance picked by its
        ``routing``; returns the reply text (for ``jsonrpc``: the JSON text of
        ``result``; the payload is then ``{"method": ..., "params": ...}``, as a dict or
        its JSON text). ``timeout`` covers waiting for a free instance too. Raises
        ``Timeout``, ``ToolError``, ``InstanceDead``, ``Saturated``, ``Unavailable``,
        ``ProtocolError``, ``ShutDown``, ``Cancelled`` (``cancel`` was triggered from
        another thread). Ctrl-C stops it within milliseconds with ``KeyboardInterrupt``;
        the abandoned request's reply never reaches another caller. ``retry`` overrides the
        spec's ``retry`` for this request (``{"max": 0}``: none)."""
        if retry is not None:
            return self.request_reply(payload, timeout, cancel=cancel, retry=retry).text
        if type(payload) is not str:
            payload = _payload(payload)
        ms = _DEFAULT_MS if timeout is DEFAULT_TIMEOUT else _ms(timeout)
        calls = self._calls
        calls.append(None)
        try:
            ptr = self._ptr
            if ptr is None:
                raise ShutDown("pool is closed")
            text: str = native.request(ptr, payload, ms, cancel.ptr or 0 if cancel is not None else 0)
            return text
        finally:
            calls.pop()

    def request_reply(
        self,
        payload: Payload,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        key: Optional[Union[str, bytes]] = None,
        retry: Optional[RetrySpec] = None,
        cancel: Optional[CancelToken] = None,
    ) -> Reply:
        """:meth:`request` with options (a sticky ``key``; this request's ``retry``), and
        the whole :class:`Reply`: the instance that answered and which path served it
        (``served_by``)."""
        data, ms = _payload(payload), _ms(timeout)
        opts = _options(key, retry)

        def run(c: Optional[int]) -> Reply:
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pool_request_json, p, data, opts, ms, c, byref(out))
            r = _take_json(out)
            return Reply(str(r["text"]), r.get("instance"), bool(r.get("moved")), str(r.get("served_by", "pool")))

        return run_blocking(run, cancel)

    def request_sticky(
        self,
        key: Union[str, bytes],
        payload: Payload,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        cancel: Optional[CancelToken] = None,
    ) -> Reply:
        """Like :meth:`request`, but requests with the same ``key`` go to the same
        instance while it lives. Returns ``Reply(text, instance, moved, served_by)``."""
        _cstr(key, "key")
        return self.request_reply(payload, timeout, key=key, cancel=cancel)

    def map(
        self,
        payloads: Iterable[Payload],
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        cancel: Optional[CancelToken] = None,
    ) -> List[Union[str, ToolpoolError]]:
        """Run a batch spread over the pool; ``timeout`` applies to each request.

        Returns one item per payload, in order: the reply text (``str``) or, for a
        request that failed, the exception instance (a :class:`ToolpoolError` subclass,
        not raised). Raises only for a bad argument or a closed pool. Triggering
        ``cancel`` makes every request not yet answered a ``Cancelled`` item."""
        items = [_payload_str(x) for x in payloads]
        arg = _cstr(json.dumps(items), "payloads")
        ms = _ms(timeout)

        def run(c: Optional[int]) -> Any:
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pool_map_json_cancellable, p, arg, ms, c, byref(out))
            return _take_json(out)

        results: List[Union[str, ToolpoolError]] = []
        for r in run_blocking(run, cancel):
            if r.get("ok"):
                results.append(r.get("text", ""))
            else:
                results.append(error_for_code(int(r.get("code", -1)), str(r.get("error", ""))))
        return results

    def lease(self, timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None) -> "Lease":
        """Lease one idle instance for exclusive use (a multi-step conversation), waiting
        up to ``timeout`` seconds for one. Use it as a context manager or ``close()`` it
        to give the instance back."""
        ms = _ms(timeout)

        def run(c: Optional[int]) -> Lease:
            out = c_void_p()
            with self._borrow() as p:
                call(lib.toolpool_pool_lease_cancellable, p, ms, c, byref(out))
            assert out.value is not None
            return Lease(self, out.value)

        return run_blocking(run, cancel)

    # -- state --------------------------------------------------------------------------

    def _json(self, fn: Any) -> Dict[str, Any]:
        out = c_void_p()
        with self._borrow() as p:
            call(fn, p, byref(out))
        result: Dict[str, Any] = _take_json(out)
        return result

    def health(self) -> Dict[str, Any]:
        """``{"total", "alive", "ready", "dead", "failed", "stopped", "instances"}``."""
        return self._json(lib.toolpool_pool_health_json)

    def status(self) -> Dict[str, Any]:
        """``{"tool", "shut_down", "disabled", "waiting", "started", "max_instances",
        "min_instances", "instances": [...], ...}``."""
        return self._json(lib.toolpool_pool_status_json)

    def metrics(self) -> Dict[str, Any]:
        """Request counts, lines in/out, restarts, latency quantiles, per instance too."""
        return self._json(lib.toolpool_pool_metrics_json)

    def metrics_prometheus(self) -> str:
        """The pool's metrics in the Prometheus text exposition format 0.0.4 (families
        listed in docs/observability.md). Works after :meth:`shutdown`."""
        out = c_void_p()
        with self._borrow() as p:
            call(lib.toolpool_pool_metrics_prometheus, p, byref(out))
        return _take(out)

    def restart(self, i: int) -> None:
        """Stop instance ``i`` (its process group) and start it again; clears a failed
        mark. Returns once the new process is ready."""
        with self._borrow() as p:
            call(lib.toolpool_pool_restart, p, _index(i))

    def resize(self, n: int) -> None:
        """Change the number of instances to ``n`` (1 to 4096) at run time.

        Indices stay ``0..n-1``: growing adds indices at the top (a fixed pool starts them
        and returns once they are ready; an elastic or lazy pool starts them on demand);
        shrinking removes the top ones at once (they raise ``IndexOutOfRange``): idle ones
        stop before this returns, a busy or leased one after its last request or lease, so
        no request in flight fails. Raises ``InvalidArgument`` (``n`` out of range),
        ``ShutDown``, and for a fixed pool that cannot start its new instances
        ``SpawnFailed`` or ``LimitReached`` (the size is then unchanged)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if not 0 <= n <= _U32_MAX:
            raise InvalidArgument(f"resize to {n}: the count must be between 1 and 4096")
        try:
            with self._borrow() as p:
                call(lib.toolpool_pool_resize, p, n)
        finally:
            self._refresh_size()

    def reload(self, spec: Spec) -> None:
        """Replace the pool's spec (a dict, JSON text or a command list, as for the
        constructor; without ``"id"`` or ``"count"`` the pool keeps its id or count) one instance at a time: each
        new process starts and prints its ready line before the old one is swapped out,
        and the old one stops once the requests using it are over, so requests keep being
        served. Only how a process starts (``command``, ``env``, ``env_clear``, ``cwd``,
        ``startup``, the per-process ``limits``) and the sizes (``count``,
        ``min_instances``, ``lazy``) may change. Raises ``ConfigError`` before anything
        changes (bad JSON, an invalid spec, or another key changed: the message names
        each); ``SpawnFailed`` or ``LimitReached`` when a new process cannot start (the
        reload stops, the instances it replaced go back to the old spec as far as the
        process limit allows, and the pool keeps serving); ``ShutDown`` after shutdown."""
        try:
            with self._borrow() as p:
                call(lib.toolpool_pool_reload, p, _cstr(self._spec_json(spec, None), "spec"))
        finally:
            self._refresh_size()

    def _refresh_size(self) -> None:
        # len() answers after close() too, so the count is cached after each change.
        n = c_uint32()
        try:
            with self._borrow() as p:
                call(lib.toolpool_pool_size, p, byref(n))
        except ToolpoolError:
            return
        self._size = n.value

    def shutdown(self, grace: Optional[float] = None) -> None:
        """Close every stdin, SIGTERM each process group, wait up to ``grace`` seconds
        (``None``: the spec's ``shutdown.grace_ms``, as :meth:`close` waits), SIGKILL the
        rest, reap. Idempotent. Afterwards I/O raises ``ShutDown``; ``len``, ``health``,
        ``status`` and ``metrics`` still answer until :meth:`close`."""
        if grace is None:
            grace = self.status()["shutdown_grace_ms"] / 1000.0
        with self._borrow() as p:
            call(lib.toolpool_pool_shutdown, p, _ms(grace, "grace"))


# -- Lease --------------------------------------------------------------------------------


class Lease(Managed):
    """One leased instance, from :meth:`Pool.lease`. Calls on one lease are serialised
    (the C contract allows one thread at a time; this class enforces it with a lock).
    ``close()`` gives the instance back; it may outlive the pool (its calls then raise
    ``ShutDown``)."""

    _what = "lease"

    def __init__(self, pool: Pool, ptr: int) -> None:
        self._pool = pool  # keeps the pool object alive while the lease is open
        self._lock = threading.Lock()
        self._init_handle(ptr)
        n = c_uint32()
        with self._borrow() as p:
            call(lib.toolpool_lease_index, p, byref(n))
        #: The index of the leased instance.
        self.index: int = n.value

    def _delete(self, ptr: int) -> None:
        lib.toolpool_lease_free(ptr)
        self._pool = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<toolpool.Lease index={self.index} {state}>"

    def send(self, line: Union[str, bytes]) -> None:
        """Queue ``line`` for the leased instance's stdin."""
        data = _cstr(line, "line")
        with self._borrow() as p, self._lock:
            call(lib.toolpool_lease_send, p, data)

    def notify(self, payload: Payload) -> None:
        """Send a JSON-RPC notification to the leased instance (as :meth:`Pool.notify`).

        With a lease, an LSP ``textDocument/didOpen`` and the requests about that document
        reach the same server.
        """
        data = _payload(payload)
        with self._borrow() as p, self._lock:
            call(lib.toolpool_lease_notify, p, data)

    def read_line(self, timeout: Optional[float] = DEFAULT_TIMEOUT, *, cancel: Optional[CancelToken] = None) -> str:
        """The next stdout line of the leased instance."""
        ms = _ms(timeout)

        def run(c: Optional[int]) -> str:
            out = c_void_p()
            with self._borrow() as p, self._lock:
                call(lib.toolpool_lease_read_line_cancellable, p, ms, c, byref(out))
            return _take(out)

        return run_blocking(run, cancel)

    def request(
        self,
        payload: Payload,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        *,
        cancel: Optional[CancelToken] = None,
        retry: Optional[RetrySpec] = None,
    ) -> str:
        """One framed request on the leased instance (framing as :meth:`Pool.request`).
        A cancelled (or interrupted) request in ``lines``/``marker`` framing recycles the
        leased instance: later calls on this lease raise ``InstanceDead``."""
        data, ms = _payload(payload), _ms(timeout)

        def run(c: Optional[int]) -> str:
            out = c_void_p()
            with self._borrow() as p, self._lock:
                call(lib.toolpool_lease_request_cancellable, p, data, ms, c, byref(out))
            return _take(out)

        return run_blocking(run, cancel)
