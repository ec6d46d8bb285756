"""A base class for objects that own a C handle (the wasmtime-py ``_managed.py`` pattern).

``close()`` is idempotent, the object is a context manager, and ``__del__`` closes what
the program forgot to. On top of that pattern, every C call *borrows* the handle
(``with self._borrow() as ptr:``, or the same steps written out on a hot path) so that
``close()`` on one thread never frees the handle while another thread is still inside a
call on it: ``close()`` marks the object closed (new calls raise :class:`ShutDown`), asks
the subclass to wake the calls in progress (``_wake``), waits for them to return, and only
then frees the handle.

A borrow takes no lock: it appends to a list, reads the handle, and pops from the list
when the call is over (``append`` and ``pop`` are atomic under the GIL). ``close()`` clears
the handle first and looks at the list second; a borrower appends first and reads the
handle second. So either ``close()`` sees the borrower and waits for it, or the borrower
sees the handle cleared and raises ``ShutDown``.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from types import TracebackType
from typing import Iterator, List, Optional, Type, TypeVar

from ._errors import ShutDown

_Self = TypeVar("_Self", bound="Managed")


class Managed:
    """Owns one C handle (an address, as ``int``) and frees it exactly once."""

    _ptr: Optional[int] = None
    _what: str = "object"
    #: Replaced by the object's own list once it has a handle.
    _calls: List[None] = []

    def _init_handle(self, ptr: int) -> None:
        #: One entry per call in progress (see the module docs).
        self._calls: List[None] = []
        self._close_lock = threading.Lock()
        self._ptr = ptr

    # -- for subclasses -----------------------------------------------------------------

    def _delete(self, ptr: int) -> None:
        """Free the C handle (``toolpool_*_free``). Implemented by subclasses."""
        raise NotImplementedError

    def _wake(self, ptr: int) -> None:
        """Make calls in progress on other threads return soon (called by ``close``)."""

    @contextmanager
    def _borrow(self) -> Iterator[int]:
        """The live handle for the duration of one C call; ShutDown once closed."""
        calls = getattr(self, "_calls", None)
        if calls is None:
            raise ShutDown(f"{self._what} is closed")
        calls.append(None)
        try:
            ptr = self._ptr
            if ptr is None:
                raise ShutDown(f"{self._what} is closed")
            yield ptr
        finally:
            calls.pop()

    # -- public -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._ptr is None

    def close(self) -> None:
        """Free the handle. Idempotent. Calls in progress on other threads are woken and
        finish first; later calls raise :class:`ShutDown`."""
        lock = getattr(self, "_close_lock", None)
        if lock is None:
            return
        with lock:
            ptr = self._ptr
            if ptr is None:
                return
            self._ptr = None
            if self._calls:
                self._wake(ptr)
                while self._calls:
                    time.sleep(0.001)
            self._delete(ptr)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the module may be half torn down
            pass
