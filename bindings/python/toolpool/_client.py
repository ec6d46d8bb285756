"""``toolpool.connect``: a client of a ``toolpool serve`` service (``ToolpoolClient``)."""

from __future__ import annotations

import os
from ctypes import byref, c_void_p
from typing import List, Union

from ._errors import call
from ._ffi import lib
from ._managed import Managed
from ._pool import Pool, _cstr, _take_json

__all__ = ["Client", "connect"]


class Client(Managed):
    """A connection to the ``toolpool serve`` service listening on the Unix socket
    ``path``: one process that owns the pools of a registry and the process limit, shared
    by every program of the machine that connects. Made by :func:`connect`.

    :meth:`pool` gives the service's pools as ordinary :class:`toolpool.Pool` objects.
    Every method may be called from many threads at once. A context manager;
    ``close()`` closes the idle connections (the pools taken from it keep working until
    they are closed themselves). While a client is open (or ``$TOOLPOOL_SERVER`` is set),
    :func:`toolpool.set_limit`, :func:`toolpool.limit_status` and
    :func:`toolpool.kill_all` act on the service's process limit.
    """

    _what = "client"

    def __init__(self, path: Union[str, "os.PathLike[str]"]) -> None:
        out = c_void_p()
        call(lib.toolpool_client_connect, _cstr(path, "path"), byref(out))
        assert out.value is not None
        #: The socket path.
        self.path: str = os.fspath(path)
        self._init_handle(out.value)

    def _delete(self, ptr: int) -> None:
        lib.toolpool_client_free(ptr)

    def pool(self, tool: str) -> Pool:
        """The service's pool of ``tool``, as a :class:`toolpool.Pool`: every method works,
        each call a round trip to the service, errors as a local pool raises them (plus
        :class:`ServiceError` when the service cannot be reached; the next call connects
        again). ``len()`` is the service's count. ``close()`` (or ``shutdown()``) ends this
        handle only; the service's pool runs on for its other clients. Raises
        :class:`NotFound` (the message lists the service's tools), :class:`ServiceError`,
        :class:`ShutDown` (the client is closed)."""
        out = c_void_p()
        with self._borrow() as c:
            call(lib.toolpool_client_pool, c, _cstr(tool, "tool"), byref(out))
        assert out.value is not None
        return Pool._adopt(out.value, lent=False)

    def tools(self) -> List[str]:
        """The tool ids the service serves, sorted. Raises
        :class:`ServiceError`, :class:`ShutDown` (the client is closed)."""
        out = c_void_p()
        with self._borrow() as c:
            call(lib.toolpool_client_tools_json, c, byref(out))
        return [str(t) for t in _take_json(out)]

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<toolpool.Client {self.path!r} {state}>"


def connect(path: Union[str, "os.PathLike[str]"]) -> Client:
    """Connect to the ``toolpool serve`` service on the Unix socket ``path`` (one
    connection and the protocol hello happen now). Raises :class:`ServiceError` when
    nothing listens there, the peer is not a toolpool service or speaks another protocol
    version, or it refuses this user (the message says which)::

        with toolpool.connect("/run/toolpool.sock") as client:
            bc = client.pool("bc")
            print(bc.request("2^10"))  # "1024"
    """
    return Client(path)
