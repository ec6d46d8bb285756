"""Crashes, restarts, a child dying mid-write, limits, kill_all, and handle lifetime."""

import gc
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import toolpool
from toolpool import Pool

PY_DIR = Path(__file__).resolve().parent.parent


def wait_for(cond, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); toolpool reaps its children, so wait for that too.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_crash_and_restart(testtool):
    with Pool({"command": [testtool], "count": 2}) as pool:
        old_pid = pool.status()["instances"][0]["pid"]
        pool.send(0, "crash:1")
        with pytest.raises(toolpool.InstanceDead) as ei:
            pool.read_line(0, timeout=5)
        assert ei.value.code == 5 and "crash requested" in str(ei.value)
        h = pool.health()
        assert (h["total"], h["alive"], h["dead"]) == (2, 1, 1)
        assert h["instances"][0]["state"] == "dead" and h["instances"][0]["exit"] == {"code": 1}
        with pytest.raises(toolpool.InstanceDead):
            pool.send(0, "x")
        # The other instance is unaffected; routed requests avoid the dead one.
        assert pool.request("still here") == "still here"

        pool.restart(0)
        h = pool.health()
        assert (h["alive"], h["dead"]) == (2, 0)
        new_pid = pool.status()["instances"][0]["pid"]
        assert new_pid != old_pid
        pool.send(0, "back")
        assert pool.read_line(0, timeout=5) == "back"
        assert pool.metrics()["restarts"] >= 1


def test_restart_policy_always(testtool):
    spec = {"command": [testtool], "restart": {"policy": "always", "backoff_initial_ms": 10}}
    with Pool(spec) as pool:
        pid = pool.status()["instances"][0]["pid"]
        pool.send(0, "crash:2")
        assert wait_for(lambda: pool.status()["instances"][0]["pid"] not in (pid, None)
                        and pool.health()["alive"] == 1)
        assert pool.request("after restart", timeout=5) == "after restart"


def _die_mid_write(pool, lines=500):
    """The child stops reading for 300 ms, then exits; meanwhile 500 KB are queued for its
    stdin, so toolpool's writer is blocked on a full pipe when the child dies."""
    pool.send(0, "delay:300:x")
    pool.send(0, "crash:1")
    for k in range(lines):
        try:
            pool.send(0, f"line {k} " + "z" * 1000)
        except (toolpool.InstanceDead, toolpool.QueueFull):
            pass


def test_child_dying_mid_write_in_process(testtool):
    with Pool({"command": [testtool], "count": 2}) as pool:
        _die_mid_write(pool)
        assert wait_for(lambda: pool.health()["dead"] == 1)
        # Writes did hit the dead child's pipe; the writer thread counts them as dropped
        # once it sees the death, which may be a moment after status does.
        assert wait_for(lambda: pool.status()["instances"][0]["stdin_dropped"] > 0)
        with pytest.raises(toolpool.InstanceDead):
            pool.send(0, "x")
        assert pool.request("alive") == "alive"  # the other instance, the library, us


def test_child_dying_mid_write_as_c_host(testtool):
    # Python ignores SIGPIPE; a C host does not. Restore the default disposition in a
    # fresh interpreter, then write to a dying child: the host must survive.
    script = textwrap.dedent(
        f"""
        import signal, sys, time
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        sys.path.insert(0, {str(PY_DIR)!r})
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        import toolpool
        from test_lifecycle import _die_mid_write, wait_for
        with toolpool.Pool({{"command": [{testtool!r}], "count": 2}}) as pool:
            _die_mid_write(pool)
            assert wait_for(lambda: pool.health()["dead"] == 1)
            dropped = wait_for(lambda: pool.status()["instances"][0]["stdin_dropped"] > 0)
            print(dropped, pool.request("survived"))
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.strip() == "True survived"


def test_limit_and_kill_all(testtool):
    old = toolpool.set_limit(2)
    try:
        assert toolpool.set_limit(2) == 2
        st = toolpool.limit_status()
        assert st["max_allowed"] == 2 and set(st) >= {"active_processes", "can_start_new", "active_pids"}
        with Pool({"command": [testtool], "count": 2}) as pool:
            st = toolpool.limit_status()
            assert st["active_processes"] == 2 and st["can_start_new"] is False
            pids = [i["pid"] for i in pool.status()["instances"]]
            assert sorted(st["active_pids"]) == sorted(pids)
            start = time.monotonic()
            with pytest.raises(toolpool.LimitReached) as ei:
                Pool({"command": [testtool], "startup": {"timeout_ms": 200}})
            assert ei.value.code == 8
            assert time.monotonic() - start < 5

            report = toolpool.kill_all()
            assert report.killed_count == 2 and sorted(report.killed_pids) == sorted(pids)
            assert wait_for(lambda: pool.health()["dead"] == 2)
            assert wait_for(lambda: not any(alive(p) for p in pids))
            with pytest.raises(toolpool.InstanceDead):
                pool.send(0, "x")
            # Dead children free their slots: a new pool can start now.
            assert wait_for(lambda: toolpool.limit_status()["active_processes"] == 0)
            with Pool({"command": [testtool]}) as again:
                assert again.request("ok") == "ok"
    finally:
        toolpool.set_limit(old)
    assert toolpool.limit_status()["max_allowed"] == old
    with pytest.raises(ValueError):
        toolpool.set_limit(-1)


def test_del_frees_the_pool(testtool):
    pool = Pool({"command": [testtool], "count": 2})
    pids = [i["pid"] for i in pool.status()["instances"]]
    assert all(alive(p) for p in pids)
    del pool
    gc.collect()
    assert wait_for(lambda: not any(alive(p) for p in pids))


def test_context_manager_kills_children_even_on_error(testtool):
    with pytest.raises(RuntimeError):
        with Pool({"command": [testtool, "--ignore-term"]}) as pool:
            pid = pool.status()["instances"][0]["pid"]
            raise RuntimeError("boom")
    assert pool.closed
    assert wait_for(lambda: not alive(pid))


def test_many_create_close_cycles(testtool):
    for _ in range(20):
        with Pool({"command": [testtool], "count": 2}) as pool:
            assert pool.request("x") == "x"
    assert toolpool.limit_status()["active_processes"] == 0
