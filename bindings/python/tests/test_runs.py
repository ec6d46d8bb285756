"""Runs and permits through the Python binding, on real commands: lines read while the
command runs, a timeout that kills the grandchildren, a run that waits for a pool's slot,
slot_timeout_ms 0, a registered pid released when it exits, kill_all over pool children,
runs and registered pids, dry runs, run_output, and the asyncio face."""

import asyncio
import os
import signal
import subprocess
import threading
import time

import pytest

import toolpool
from toolpool import aio


def wait_for(cond, within=5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def alive(pid):
    """The process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][0] != "Z"
    except FileNotFoundError:
        return False


def idle():
    assert wait_for(lambda: toolpool.limit_status()["active_processes"] == 0), toolpool.limit_status()


@pytest.fixture
def limit():
    """Set the host-wide limit for one test; put it back after."""
    idle()
    old = []

    def set_to(n):
        old.append(toolpool.set_limit(n))

    yield set_to
    if old:
        toolpool.set_limit(old[0])


def sh(script, **keys):
    return {"command": ["sh", "-c", script], **keys}


def test_lines_are_read_while_the_command_runs():
    idle()
    with toolpool.start_run(sh("echo first; sleep 30; echo second")) as run:
        t0 = time.monotonic()
        assert next(run.stdout) == "first"
        assert time.monotonic() - t0 < 10
        assert run.status()["running"] is True
        st = toolpool.limit_status()
        assert st["processes"] == [{"pid": run.pid, "kind": "run", "name": "sh"}]
        assert st["active_pids"] == [run.pid]
        run.kill()
        assert run.wait(timeout=10) == -signal.SIGKILL
        assert run.returncode == -9
        assert list(run.stdout) == [] and list(run.stderr) == []
    idle()
    with pytest.raises(toolpool.ShutDown):
        run.read_line()


def test_a_run_is_killed_at_its_timeout_with_its_grandchildren():
    with toolpool.start_run(sh("sleep 60 & echo $!; wait", timeout_ms=300)) as run:
        grandchild = int(next(run.stdout))
        assert alive(grandchild)
        assert run.wait(timeout=10) == -9
        assert run.status()["timed_out"] is True
    assert wait_for(lambda: not alive(grandchild))
    result = toolpool.run_output(sh("echo started; sleep 60 & wait"), timeout=0.3)
    assert (result.timed_out, result.returncode, result.stdout) == (True, -9, "started\n")


def test_a_run_waits_for_a_pool_instance_to_stop(limit, testtool):
    limit(1)
    pool = toolpool.Pool([testtool])
    got = {}

    def start():
        with toolpool.start_run(sh("echo started", slot_timeout_ms=20000)) as run:
            got["at"] = time.monotonic()
            got["line"] = run.read_line(timeout=10)

    t = threading.Thread(target=start)
    t.start()
    # The only slot is the instance's: the run cannot have started.
    time.sleep(0.3)
    assert t.is_alive() and not got
    stopped = time.monotonic()
    pool.close()
    t.join(20)
    assert got["line"] == "started" and got["at"] >= stopped


def test_slot_timeout_0_fails_at_once_naming_the_limit(limit):
    limit(1)
    with toolpool.start_run(["sleep", "30"]):
        t0 = time.monotonic()
        with pytest.raises(toolpool.LimitReached, match="maximum concurrent processes reached: 1 of 1"):
            toolpool.start_run(sh("echo never", slot_timeout_ms=0))
        assert time.monotonic() - t0 < 0.5
        with pytest.raises(toolpool.LimitReached, match="1 of 1"):
            toolpool.acquire_slot(timeout=0)
        token = toolpool.CancelToken()
        threading.Timer(0.1, token.cancel).start()
        with pytest.raises(toolpool.Cancelled):
            toolpool.acquire_slot(timeout=30, cancel=token)


def test_a_registered_pid_gives_its_slot_back_when_it_exits(limit):
    limit(1)
    with toolpool.acquire_slot() as permit:
        assert toolpool.limit_status()["reserved"] == 1
        proc = subprocess.Popen(["sleep", "0.3"])
        permit.register_pid(proc.pid)
        st = toolpool.limit_status()
        assert st["processes"] == [{"pid": proc.pid, "kind": "registered", "name": None}]
        assert not st["can_start_new"] and permit.holds_slot
        with pytest.raises(toolpool.InvalidArgument, match="already holds"):
            permit.register_pid(proc.pid)
        # It exits (a zombie until reaped below): the slot comes back.
        idle()
        assert not permit.holds_slot
        assert proc.wait() == 0
    with pytest.raises(toolpool.ShutDown):
        permit.register_pid(os.getpid())
    with toolpool.acquire_slot() as permit:
        with pytest.raises(toolpool.InvalidArgument, match="this process"):
            permit.register_pid(os.getpid())


def test_kill_all_ends_runs_registered_pids_and_pool_children(testtool):
    idle()
    with toolpool.Pool([testtool]) as pool, toolpool.start_run(sh("sleep 60 & echo $!; wait")) as run:
        instance = pool.status()["instances"][0]["pid"]
        run_grandchild = int(next(run.stdout))
        with toolpool.acquire_slot() as permit:
            host = subprocess.Popen(
                ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, text=True, start_new_session=True
            )
            permit.register_pid(host.pid)
            host_grandchild = int(host.stdout.readline())
            kinds = sorted(p["kind"] for p in toolpool.limit_status()["processes"])
            assert kinds == ["instance", "registered", "run"]
            report = toolpool.kill_all()
            assert sorted(report.killed_pids) == sorted([instance, run.pid, host.pid])
            assert run.wait(timeout=10) == -9
            assert host.wait(timeout=10) == -signal.SIGKILL
            host.stdout.close()
        assert wait_for(lambda: not alive(run_grandchild) and not alive(host_grandchild))
        assert wait_for(lambda: pool.health()["dead"] == 1)


def test_a_dry_run_starts_no_process():
    spec = {
        "command": ["/nonexistent/build", "--all"],
        "dry_run": {"stdout": ["one", "two"], "stderr": ["warn"], "exit_code": 3, "delay_ms": 50},
    }
    with toolpool.start_run(spec) as run:
        assert run.pid is None
        assert list(run.stdout) == ["one", "two"]
        assert list(run.stderr) == ["warn"]
        assert run.wait(timeout=5) == 3
    result = toolpool.run_output(spec)
    assert (result.stdout, result.stderr, result.returncode, result.pid) == ("one\ntwo\n", "warn\n", 3, None)


def test_run_output_stdin_and_errors():
    result = toolpool.run_output(sh("cat; echo oops >&2; exit 4", input="hello\nworld"), timeout=10)
    assert (result.returncode, result.stdout, result.stderr, result.timed_out) == (4, "hello\nworld", "oops\n", False)
    capped = toolpool.run_output(sh("seq 1 100000", max_output_bytes=100))
    assert len(capped.stdout) == 100 and capped.stdout_dropped_bytes > 500000
    with toolpool.start_run(["cat"]) as run:
        run.write_line("ping")
        assert run.read_line(timeout=10) == "ping"
        with pytest.raises(toolpool.InvalidArgument):
            run.write_line("a\nb")
        with pytest.raises(toolpool.Timeout):
            run.read_line(timeout=0.05)
        with pytest.raises(toolpool.InvalidArgument, match="stream"):
            run.read_line("stdin")
        run.close_stdin()
        assert run.read_line(timeout=10) is None
        assert run.wait(timeout=10) == 0
    with pytest.raises(toolpool.ConfigError, match="key 'command'"):
        toolpool.start_run({"command": []})
    with pytest.raises(toolpool.SpawnFailed, match="run 'no-such-tool-xyz'"):
        toolpool.run_output(["no-such-tool-xyz"])


def test_aio_runs_stream_wait_and_cancel():
    async def main():
        async with aio.start_run(sh("echo a; sleep 0.2; echo b >&2; echo c")) as run:
            lines = [line async for line in run.stdout]
            assert lines == ["a", "c"]
            assert [line async for line in run.stderr] == ["b"]
            assert await run.wait() == 0
        run = await aio.start_run(sh("sleep 30"))
        async with run:
            task = asyncio.create_task(run.wait())
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            run.kill()
            assert await run.wait(timeout=10) == -9
        result = await aio.run_output(sh("echo out"))
        assert result.stdout == "out\n"
        # Cancelling the task kills the run.
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(aio.run_output(["sleep", "30"]), 0.2)
        assert time.monotonic() - t0 < 5
        async with aio.acquire_slot() as permit:
            proc = await asyncio.create_subprocess_exec("sleep", "0.1")
            permit.register_pid(proc.pid)
            assert await proc.wait() == 0

    asyncio.run(main())
    idle()
