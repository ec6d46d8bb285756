"""Cancellation: a CancelToken from another thread, Ctrl-C on the main thread
(a subprocess that receives SIGINT), and asyncio task cancellation (toolpool.aio). Each
checks that the next request gets its own reply (a nonce), and that many cancelled
waiters leave the pool's counters at zero."""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import toolpool
from toolpool import CancelToken, Pool, aio

#: Generous bound for "stopped soon after" (the promises: 10 ms for a token, 100 ms for
#: Ctrl-C); a loaded machine needs the room.
SOON = 0.5


def _idle(pool) -> bool:
    s = pool.status()
    return s["waiting"] == 0 and all(i["in_flight"] == 0 for i in s["instances"])


def test_a_token_from_another_thread_stops_a_request(testtool):
    with Pool({"command": [testtool]}) as pool:
        token = CancelToken()
        at = []
        threading.Timer(0.1, lambda: (at.append(time.monotonic()), token.cancel())).start()
        with pytest.raises(toolpool.Cancelled) as e:
            pool.request("delay:3000:late", timeout=30, cancel=token)
        latency = time.monotonic() - at[0]
        assert latency < SOON, latency
        assert e.value.code == 17 and "cancelled" in str(e.value)
        assert token.cancelled
        # Triggered before the call: at once, every call.
        t0 = time.monotonic()
        for call in (
            lambda: pool.request("x", cancel=token),
            lambda: pool.request_sticky("k", "x", cancel=token),
            lambda: pool.read_line(0, cancel=token),
            lambda: pool.read_line_bytes(0, cancel=token),
            lambda: pool.read_any(cancel=token),
            lambda: pool.lease(cancel=token),
        ):
            with pytest.raises(toolpool.Cancelled):
                call()
        assert all(isinstance(r, toolpool.Cancelled) for r in pool.map(["a", "b"], cancel=token))
        assert time.monotonic() - t0 < SOON
        assert pool.request("py-nonce-token", timeout=10) == "py-nonce-token"


def test_many_waiters_cancelled_leave_counters_at_zero(testtool):
    with Pool({"command": [testtool]}) as pool:
        token = CancelToken()
        errors = []

        def caller():
            try:
                pool.request("delay:3000:late", timeout=30, cancel=token)
            except toolpool.ToolpoolError as e:
                errors.append(e)

        threads = [threading.Thread(target=caller) for _ in range(12)]
        for th in threads:
            th.start()
        end = time.monotonic() + 10
        while pool.status()["waiting"] < 11 and time.monotonic() < end:
            time.sleep(0.01)
        t0 = time.monotonic()
        token.cancel()
        for th in threads:
            th.join(10)
        assert time.monotonic() - t0 < 2 * SOON
        assert len(errors) == 12 and all(isinstance(e, toolpool.Cancelled) for e in errors)
        assert _idle(pool), pool.status()
        assert pool.request("py-nonce-many", timeout=10) == "py-nonce-many"


CHILD = r"""
import signal, sys, time
# Python leaves SIGINT ignored when it starts with it ignored (a background job of a
# shell without job control, as CI scripts run); Ctrl-C is what this child is about.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
import toolpool
pool = toolpool.Pool({"command": [sys.argv[2]], "count": 1})
for what in ("request", "map", "read_line"):
    print("calling", what, flush=True)
    try:
        if what == "request":
            pool.request("delay:4000:late", timeout=10)
        elif what == "map":
            pool.map(["delay:4000:a"], timeout=10)
        else:
            pool.read_line(0, timeout=10)
        print("returned", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    reply = pool.request("nonce-" + what, timeout=10)
    print("next", reply, flush=True)
pool.close()
print("done", flush=True)
"""


def test_ctrl_c_interrupts_blocking_calls_and_the_pool_goes_on(testtool):
    py_dir = str(Path(toolpool.__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, py_dir, testtool],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    try:
        for what in ("request", "map", "read_line"):
            assert child.stdout.readline().split() == ["calling", what]
            time.sleep(0.3)  # inside the C call by now
            sent = time.monotonic()
            child.send_signal(signal.SIGINT)
            line = child.stdout.readline().strip()
            latency = time.monotonic() - sent
            assert line == "interrupted", line
            print(f"Ctrl-C latency ({what}): {latency * 1000:.1f} ms")
            assert latency < SOON, latency
            assert child.stdout.readline().split() == ["next", "nonce-" + what]
        assert child.stdout.readline().strip() == "done"
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_aio_pool_requests_without_blocking_the_loop(testtool, rpc_spec):
    async def main():
        async with aio.Pool({"command": [testtool], "count": 2}) as pool:
            ticks = 0

            async def ticker():
                nonlocal ticks
                while True:
                    await asyncio.sleep(0.01)
                    ticks += 1

            t = asyncio.create_task(ticker())
            replies = await asyncio.gather(*(pool.request(f"delay:200:r{k}") for k in range(4)))
            t.cancel()
            assert replies == [f"r{k}" for k in range(4)]
            assert ticks >= 20, ticks  # the loop kept running during ~400 ms of calls
            r = await pool.request_sticky("key", "sticky")
            assert r.text == "sticky" and r.instance in (0, 1)
            assert await pool.map(["a", "b", "c"]) == ["a", "b", "c"]
            async with pool.lease() as lease:
                await lease.send("first")
                assert await lease.read_line() == "first"
                assert await lease.request("second") == "second"
            health = await pool.health()
            assert health["alive"] == 2
            assert (await pool.status())["tool"]
            assert (await pool.metrics())["requests_ok"] >= 8
        with pytest.raises(toolpool.ShutDown):
            await pool.request("closed")

    asyncio.run(main())


def test_aio_task_cancellation_cancels_the_c_call(testtool):
    async def main():
        async with aio.Pool({"command": [testtool]}) as pool:
            task = asyncio.create_task(pool.request("delay:3000:late", timeout=30))
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - t0 < SOON
            assert await pool.request("aio-nonce-1") == "aio-nonce-1"
            # asyncio.timeout (and wait_for) cancel the same way.
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await pool.request("delay:3000:late", timeout=30)
            assert time.monotonic() - t0 < 0.2 + SOON
            assert await pool.request("aio-nonce-2") == "aio-nonce-2"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pool.map(["delay:3000:a", "delay:3000:b"]), 0.2)
            # Many waiting tasks cancelled at once leave the counters at zero. The pool's
            # completion queue runs two requests per instance (one served, one waiting in
            # admission); the other eight wait in the queue.
            tasks = [asyncio.create_task(pool.request("delay:3000:late", timeout=30)) for _ in range(10)]
            end = time.monotonic() + 10
            while (await pool.status())["waiting"] < 1 and time.monotonic() < end:
                await asyncio.sleep(0.01)
            t0 = time.monotonic()
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert time.monotonic() - t0 < 2 * SOON
            assert _idle(pool.pool), await pool.status()
            assert await pool.request("aio-nonce-3") == "aio-nonce-3"

    asyncio.run(main())


def test_readme_aio_example_runs():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("**asyncio: `toolpool.aio`.**", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    env = dict(os.environ, PYTHONPATH=str(Path(toolpool.__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "42" and lines[2] == "['2', '4']" and lines[3] == "10", out.stdout


STORM = r"""
import os, select, signal, sys, threading
# One CPU: the watcher thread then runs only when the main thread lets it, the case where a
# SIGINT from before a call could still be unread when the call starts.
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[1])
import toolpool
pool = toolpool.Pool({"command": [sys.argv[2]], "count": 1})
ok = interrupted = i = 0
announced = False


def run():
    # Until the parent, done signalling, writes a line on stdin. The parent signals only
    # once it has read "ready": from then on every line of the child is inside a try.
    global ok, interrupted, i, announced
    if not announced:
        announced = True
        print("ready", flush=True)
    while True:
        i += 1
        if i % 100 == 0 and select.select([sys.stdin], [], [], 0)[0]:
            return
        try:
            reply = pool.request(f"n{i}", timeout=10)
            assert reply == f"n{i}", (reply, i)
            ok += 1
        except KeyboardInterrupt:
            interrupted += 1
        except toolpool.Cancelled as e:  # the bug this test is about
            print("cancelled", e, flush=True)
            sys.exit(3)


while True:
    try:
        run()
        break
    except KeyboardInterrupt:  # landed between calls, in Python code
        interrupted += 1
pool.close()
tasks = [t for t in os.listdir("/proc/self/task")]
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks)
print("done", ok, interrupted, threading.active_count(), names, flush=True)
"""


def test_sigints_between_and_during_calls_never_cancel_the_next_call(testtool):
    """SIGINTs every 2 ms during back-to-back main-thread requests, on one CPU: one that
    lands while the main thread runs Python code raises KeyboardInterrupt there and must
    not stop a later call (a call is armed only after the bytes already in the wakeup pipe
    are read); one that lands during a call stops it with KeyboardInterrupt. Never a
    Cancelled, every reply the caller's own, and no thread made per call: the only extra
    thread is the watcher."""
    py_dir = str(Path(toolpool.__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", STORM, py_dir, testtool],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "ready"
        for _ in range(150):
            child.send_signal(signal.SIGINT)
            time.sleep(0.002)
        time.sleep(0.1)
        child.stdin.write("stop\n")
        child.stdin.flush()
        out = child.stdout.read()
        assert child.wait(30) == 0, out
        words = out.split(maxsplit=4)
        assert words[0] == "done", out
        ok, interrupted, python_threads = int(words[1]), int(words[2]), int(words[3])
        assert ok > 0 and interrupted >= 1, out
        assert python_threads == 1, out
        assert "toolpool-sigint" in words[4], out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


OWN_HANDLER = r"""
import signal, sys
seen = []
signal.signal(signal.SIGINT, lambda *a: seen.append(1))
sys.path.insert(0, sys.argv[1])
import toolpool
pool = toolpool.Pool({"command": [sys.argv[2]], "count": 1})
print("calling", flush=True)
try:
    pool.request("delay:4000:late", timeout=10)
    print("returned", flush=True)
except toolpool.Cancelled:
    print("cancelled", len(seen), flush=True)
print("next", pool.request("nonce-own", timeout=10), flush=True)
"""


def test_ctrl_c_with_a_handler_that_returns_leaves_the_call_cancelled(testtool):
    py_dir = str(Path(toolpool.__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", OWN_HANDLER, py_dir, testtool], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline().strip() == "calling"
        time.sleep(0.3)
        child.send_signal(signal.SIGINT)
        assert child.stdout.readline().split() == ["cancelled", "1"]
        assert child.stdout.readline().split() == ["next", "nonce-own"]
        assert child.wait(10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_aio_gather_many_requests_each_gets_its_own_reply(testtool):
    async def main():
        async with aio.Pool({"command": [testtool], "count": 3}) as pool:
            replies = await asyncio.gather(*(pool.request(f"g{k}") for k in range(3000)))
            assert replies == [f"g{k}" for k in range(3000)]
            sticky = await asyncio.gather(*(pool.request_sticky(f"key{k % 5}", f"s{k}") for k in range(50)))
            assert [r.text for r in sticky] == [f"s{k}" for k in range(50)]
            by_key = {}
            for k, r in enumerate(sticky):
                assert by_key.setdefault(k % 5, r.instance) == r.instance
            # A bad payload is refused at submission, not lost in the queue.
            with pytest.raises(toolpool.InvalidArgument):
                await pool.request("nul\0byte")
            assert await pool.request("after") == "after"

    asyncio.run(main())


def test_aio_pool_dropped_without_aclose_frees_its_queue_before_its_pool(testtool):
    """An aio.Pool that is never closed, with requests in flight, is collected without a
    crash: the queue (which the requests borrow the pool through) goes first."""
    code = f"""
import asyncio, gc, sys
sys.path.insert(0, {str(Path(toolpool.__file__).resolve().parent.parent)!r})
from toolpool import aio

async def main():
    pool = await aio.Pool({{"command": [{testtool!r}], "count": 1}}).start()
    tasks = [asyncio.create_task(pool.request("delay:2000:late")) for _ in range(3)]
    await asyncio.sleep(0.2)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    tasks2 = [asyncio.create_task(pool.request("delay:2000:late")) for _ in range(3)]
    await asyncio.sleep(0.2)
    del pool

loop = asyncio.new_event_loop()
loop.run_until_complete(main())
for t in asyncio.all_tasks(loop):
    t.cancel()
loop.close()
gc.collect()
print("ok", flush=True)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stdout, out.stderr)
