"""toolpool's log records into the standard :mod:`logging` module, and the Prometheus
exposition of every live pool.

On import the package registers a C log callback (``toolpool_set_log_callback``, in the
native extension: ``native/src/log.rs``) that turns each record of libtoolpool into a record of the logger named ``"toolpool"``
(:data:`LOGGER`) at the matching level: 1 error -> ``ERROR``, 2 warn -> ``WARNING``,
3 info -> ``INFO``, 4 debug -> ``DEBUG``, 5 trace -> :data:`TRACE` (5). The message is
the event name followed by ``key=value`` fields (docs/observability.md, "Logs"); the record's
``toolpool_target`` attribute is ``"toolpool"``, or ``"toolpool::stderr"`` for a tool's
stderr line (spec key ``"stderr": "log"``). Configure it like any logger, e.g.
``logging.getLogger("toolpool").setLevel(logging.INFO)``; it has no handler of its own.

Records come from libtoolpool's threads (supervisors, waiters, stderr drainers) as well
as from the threads that call toolpool; each callback takes the GIL for the record. The
callback is removed at interpreter exit (:mod:`atexit`), so no record reaches a Python
that is shutting down. If the process already has a Rust ``log`` logger (toolpool
embedded in a Rust program), registration is skipped and the records go to that logger.
"""

from __future__ import annotations

import atexit
import logging
from ctypes import byref, c_void_p

from ._errors import call
from ._ffi import lib, native
from ._pool import _take

#: The logger that receives toolpool's records (with a NullHandler, as a library's logger
#: should: nothing is printed unless the application configures logging).
LOGGER = logging.getLogger("toolpool")
LOGGER.addHandler(logging.NullHandler())

#: The level of toolpool's trace records (below ``logging.DEBUG``).
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: TRACE}


def _on_record(level: int, target: bytes, message: bytes) -> None:
    # Never raise into C: a failing handler loses this record only.
    try:
        lvl = _LEVELS.get(level, TRACE)
        if not LOGGER.isEnabledFor(lvl):
            return
        text = message.decode("utf-8", "replace")
        tgt = target.decode("utf-8", "replace")
        LOGGER.log(lvl, "%s", text, extra={"toolpool_target": tgt})
    except Exception:  # pragma: no cover - a broken handler
        pass


#: True when the callback is registered (False if a Rust logger was there first).
forwarding: bool = native.set_log_sink(_on_record, 5)


@atexit.register
def _remove_callback() -> None:
    global forwarding
    if forwarding:
        native.clear_log_sink()
        forwarding = False


def metrics_prometheus_all() -> str:
    """The Prometheus text exposition (format 0.0.4) of every live pool in the process
    (made and neither shut down nor closed), with the host-wide process limit: the body
    of a ``/metrics`` handler. Pools sharing a tool id get a ``pool`` label after the
    first."""
    out = c_void_p()
    call(lib.toolpool_metrics_prometheus_all, byref(out))
    return _take(out)
