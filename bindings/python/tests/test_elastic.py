"""Elastic sizing (min_instances), pool.resize and pool.reload on real
processes of the test tool, with three threads making requests meanwhile."""

import threading
import time

import pytest

import toolpool
from toolpool import Pool


def _wait_for(cond, within=10.0):
    end = time.monotonic() + within
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


class Load:
    """Three threads making requests until stopped; each reply must be its own."""

    def __init__(self, pool):
        self.pool = pool
        self.stop = threading.Event()
        self.done = 0
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(t,)) for t in range(3)]
        for th in self.threads:
            th.start()

    def _run(self, t):
        k = 0
        while not self.stop.is_set():
            k += 1
            try:
                reply = self.pool.request(f"delay:3:t{t}-{k}", timeout=30.0)
                assert reply == f"t{t}-{k}", reply
            except BaseException as e:  # reported by finish()
                with self.lock:
                    self.errors.append(e)
                return
            with self.lock:
                self.done += 1

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join()
        assert self.errors == []
        assert self.done > 10
        return self.done


def test_one_sequential_caller_uses_one_process(testtool):
    with Pool({"command": [testtool], "count": 4, "lazy": True}) as pool:
        pids = {pool.request("pid") for _ in range(20)}
        assert len(pids) == 1
        st = pool.status()
        assert (st["started"], st["max_instances"]) == (1, 4)


def test_concurrent_slow_callers_grow_then_idle_shrinks(testtool):
    spec = {"command": [testtool], "count": 4, "min_instances": 1, "idle_timeout_ms": 300}
    with Pool(spec) as pool:
        assert pool.status()["started"] == 1
        used = []
        barrier = threading.Barrier(3)

        def slow(k):
            barrier.wait()
            used.append(pool.request_sticky(f"k{k}", f"delay:1500:{k}", timeout=30.0).instance)

        threads = [threading.Thread(target=slow, args=(k,)) for k in range(3)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(set(used)) == 3, used
        assert pool.metrics()["grow_events"] >= 2
        assert _wait_for(lambda: pool.status()["started"] == 1)
        assert pool.metrics()["shrink_events"] >= 2


def test_resize_under_load(testtool):
    with Pool({"command": [testtool], "count": 2}) as pool:
        with pytest.raises(toolpool.InvalidArgument, match="4096"):
            pool.resize(0)
        with pytest.raises(toolpool.InvalidArgument):
            pool.resize(5000)
        load = Load(pool)
        for n in (4, 1, 3, 5, 2):
            time.sleep(0.1)
            pool.resize(n)
            assert len(pool) == n
        time.sleep(0.1)
        load.finish()
        with pytest.raises(toolpool.IndexOutOfRange):
            pool.read_line(2, timeout=0.01)
        assert pool.metrics()["requests_error"] == 0
        pool.shutdown(0.5)
        with pytest.raises(toolpool.ShutDown):
            pool.resize(3)


def _versioned(testtool, version, count=3):
    return {
        "command": [testtool, "--ready", "UP"],
        "startup": {"ready_line": "UP"},
        "count": count,
        "env": {"TOOL_VERSION": version},
    }


def test_reload_under_load(testtool):
    with Pool(_versioned(testtool, "v1")) as pool:
        with pytest.raises(toolpool.ConfigError, match="protocol"):
            pool.reload({"command": [testtool], "count": 3, "protocol": "jsonrpc"})
        failing = dict(_versioned(testtool, "v2"), command=[testtool, "--exit-now", "3"])
        with pytest.raises(toolpool.SpawnFailed, match="ready line"):
            pool.reload(failing)
        load = Load(pool)
        time.sleep(0.15)
        pool.reload(_versioned(testtool, "v2"))
        time.sleep(0.15)
        load.finish()
        for i in range(3):
            pool.send(i, "env:TOOL_VERSION")
            assert pool.read_line(i) == "v2"
        # A reload may change the count too.
        pool.reload(_versioned(testtool, "v3", count=2))
        assert len(pool) == 2
