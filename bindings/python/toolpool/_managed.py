"""A base class for objects that own a C handle (the wasmtime-py ``_managed.py`` pattern).

``close()`` is idempotent, the object is a context manager, and ``__del__`` closes what
the program forgot to. On top of that pattern, every C call *borrows* the handle
(``with self._borrow() as ptr:``) so that ``close()`` on one thread never frees the handle
while another thread is still inside a call on it: ``close()`` marks the object closed (new
calls raise :class:`ShutDown`), asks the subclass to wake the calls in progress
(``_wake``), waits for them to return, and only then frees the handle.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from types import TracebackType
from typing import Iterator, Optional, Type, TypeVar

from ._errors import ShutDown

_Self = TypeVar("_Self", bound="Managed")


class Managed:
    """Owns one C handle (an address, as ``int``) and frees it exactly once."""

    _ptr: Optional[int] = None
    _what: str = "object"

    def _init_handle(self, ptr: int) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._active = 0
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
        cv = getattr(self, "_cv", None)
        if cv is None:
            raise ShutDown(f"{self._what} is closed")
        with cv:
            ptr = self._ptr
            if ptr is None:
                raise ShutDown(f"{self._what} is closed")
            self._active += 1
        try:
            yield ptr
        finally:
            with cv:
                self._active -= 1
                if self._active == 0:
                    cv.notify_all()

    # -- public -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._ptr is None

    def close(self) -> None:
        """Free the handle. Idempotent. Calls in progress on other threads are woken and
        finish first; later calls raise :class:`ShutDown`."""
        cv = getattr(self, "_cv", None)
        if cv is None:
            return
        with cv:
            ptr = self._ptr
            if ptr is None:
                return
            self._ptr = None
            busy = self._active > 0
        if busy:
            self._wake(ptr)
            with cv:
                while self._active > 0:
                    cv.wait()
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
