"""Many threads on one pool: every caller gets its own reply (ctypes releases the GIL)."""

import json
import sys
import threading
import time
import uuid

import pytest

import toolpool
from toolpool import Pool

THREADS = 8
PER_THREAD = 25


def _run_threads(work):
    errors = []

    def runner(t):
        try:
            work(t)
        except BaseException as e:  # reported below, with the thread number
            errors.append((t, e))

    threads = [threading.Thread(target=runner, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors


def test_jsonrpc_nonces_no_cross_talk(rpc_spec):
    with Pool(rpc_spec) as pool:
        pids = set()
        lock = threading.Lock()

        def work(t):
            for k in range(PER_THREAD):
                nonce = f"{t}-{k}-{uuid.uuid4().hex}"
                reply = json.loads(pool.request({"method": "nonce", "params": {"nonce": nonce}}, timeout=10))
                assert reply["nonce"] == nonce
                with lock:
                    pids.add(reply["pid"])

        _run_threads(work)
        assert len(pids) == 2  # both instances served
        assert pool.metrics()["requests_ok"] == THREADS * PER_THREAD


def test_lines_requests_no_cross_talk(testtool):
    with Pool({"command": [testtool], "count": 4, "routing": "least_busy"}) as pool:

        def work(t):
            for k in range(PER_THREAD):
                text = f"thread {t} request {k} {uuid.uuid4().hex}"
                assert pool.request(text, timeout=10) == text

        _run_threads(work)


def test_blocking_calls_release_the_gil(testtool):
    # 8 threads each wait 300 ms in the tool: in parallel that is ~0.3 s, not 2.4 s.
    with Pool({"command": [testtool], "count": THREADS}) as pool:
        start = time.monotonic()
        _run_threads(lambda t: pool.request(f"delay:300:{t}", timeout=10))
        assert time.monotonic() - start < 2.0


def test_sticky_and_leases_from_threads(testtool):
    with Pool({"command": [testtool], "count": 3, "routing": "sticky"}) as pool:

        def work(t):
            where = pool.request_sticky(f"key-{t}", "hello").instance
            for k in range(10):
                r = pool.request_sticky(f"key-{t}", f"{t}:{k}")
                assert r.text == f"{t}:{k}" and r.instance == where
            with pool.lease(timeout=20) as lease:
                for k in range(5):
                    assert lease.request(f"lease {t} {k}") == f"lease {t} {k}"

        _run_threads(work)


def _wait_inside_c_call(th: threading.Thread, fn: str, within: float = 10.0) -> None:
    """Wait until thread ``th`` is blocked inside the C function ``fn``: its Python frame is
    the ctypes call in ``_errors.call`` (so it released the GIL, or is about to) and the
    kernel shows it asleep in poll(2), which is where toolpool waits for a child's line
    (a thread waiting for the GIL sleeps in a futex instead)."""
    deadline = time.monotonic() + within
    last = ""
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(th.ident or -1)
        try:
            with open(f"/proc/self/task/{th.native_id}/wchan") as f:
                wchan = f.read()
        except OSError:
            wchan = ""
        in_call = (
            frame is not None
            and frame.f_code.co_name == "call"
            and frame.f_code.co_filename.endswith("_errors.py")
            and getattr(frame.f_locals.get("fn"), "__name__", "") == fn
        )
        last = f"frame {frame.f_code.co_name if frame else None}, wchan {wchan!r}"
        if in_call and "poll" in wchan:
            return
        time.sleep(0.005)
    pytest.fail(f"the thread never blocked inside {fn} (last seen: {last})")


def test_close_wakes_a_blocked_reader(testtool):
    pool = Pool({"command": [testtool]})
    caught = []

    def reader():
        try:
            pool.read_line(0, timeout=30)
        except toolpool.ToolpoolError as e:
            caught.append(e)

    th = threading.Thread(target=reader)
    th.start()
    _wait_inside_c_call(th, "toolpool_pool_read_line_cancellable")
    start = time.monotonic()
    pool.close()  # must not free the handle under the reader
    th.join(10)
    assert not th.is_alive()
    assert time.monotonic() - start < 5
    assert len(caught) == 1 and isinstance(caught[0], (toolpool.ShutDown, toolpool.InstanceDead))
    with pytest.raises(toolpool.ShutDown):
        pool.read_line(0, timeout=0)
