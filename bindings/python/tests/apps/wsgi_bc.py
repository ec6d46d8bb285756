"""A WSGI app for the gunicorn test (test_service.py): GET /?n=N answers 2*N computed by
the `bc` pool of the `toolpool serve` service at $TOOLPOOL_TEST_SOCKET, as JSON with the
worker's pid.

Each worker connects on its first request, after gunicorn forked it: a client (its
connections) must not be shared across a fork."""

import json
import os
import threading
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple
from urllib.parse import parse_qs

import toolpool

_lock = threading.Lock()
_pool: Optional[toolpool.Pool] = None


def _bc() -> toolpool.Pool:
    global _pool
    with _lock:
        if _pool is None:
            _pool = toolpool.connect(os.environ["TOOLPOOL_TEST_SOCKET"]).pool("bc")
        return _pool


def app(environ: Dict[str, Any], start_response: Callable[[str, List[Tuple[str, str]]], Any]) -> Iterable[bytes]:
    try:
        n = int(parse_qs(environ.get("QUERY_STRING", ""))["n"][0])
        body = {"pid": os.getpid(), "n": n, "reply": _bc().request(f"2*{n}", 30)}
        status = "200 OK"
    except toolpool.ToolpoolError as e:
        body, status = {"pid": os.getpid(), "error": f"{e.status}: {e}"}, "503 Service Unavailable"
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
