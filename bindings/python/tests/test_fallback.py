"""Fallback and retry by cause, the reply's served_by, and Pools (a pool per tool of a
registry) from Python, on real processes."""

import json
import os
import signal
import threading
import time

import pytest

import toolpool
from toolpool import Pool, Pools


def test_fallback_on_a_death_and_served_by(testtool):
    spec = {
        "command": [testtool],
        "oneshot": {"command": ["cat"]},
        "fallback": ["dead"],
    }
    with Pool(spec) as pool:
        r = pool.request_reply("fine")
        assert (r.text, r.served_by, r.instance) == ("fine", "pool", 0)
        r = pool.request_reply("crash:1")
        assert (r.text, r.served_by, r.instance) == ("crash:1", "oneshot", None)
        assert pool.metrics()["fallbacks"]["dead"] == 1


def test_a_bad_fallback_cause_is_a_config_error(testtool):
    with pytest.raises(toolpool.ConfigError) as ei:
        Pool({"command": [testtool], "oneshot": {"command": ["cat"]}, "fallback": ["deadd"]})
    assert "fallback" in str(ei.value) and "deadd" in str(ei.value)


def test_a_retry_after_a_kill_gives_one_reply(testtool):
    spec = {
        "command": [testtool],
        "count": 2,
        "retry": {"max": 2, "on": ["dead"]},
        "restart": {"policy": "always", "backoff_initial_ms": 10},
    }
    with Pool(spec) as pool:
        result = {}
        t = threading.Thread(target=lambda: result.update(r=pool.request_reply("delay:1500:kept", timeout=20)))
        t.start()
        deadline = time.monotonic() + 10
        pid = None
        while pid is None and time.monotonic() < deadline:
            busy = [i for i in pool.status()["instances"] if i["in_flight"] == 1]
            pid = busy[0]["pid"] if busy else None
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        t.join()
        assert (result["r"].text, result["r"].served_by) == ("kept", "retry")
        assert pool.status()["retries"]["dead"] == 1


def test_a_per_call_retry(testtool):
    spec = {"command": [testtool], "count": 2, "restart": {"policy": "always", "backoff_initial_ms": 10}}
    with Pool(spec) as pool:
        with pytest.raises(toolpool.InstanceDead):
            pool.request("crash:1", timeout=20, retry={"max": 1, "on": ["dead"]})
        assert pool.metrics()["retries"]["dead"] == 1
        assert pool.request("ok", retry=(1, ["dead"])) == "ok"


def test_pools_map_mixed_jobs_in_order(testtool, tmp_path):
    reg = tmp_path / "tools.json"
    reg.write_text(
        json.dumps(
            {
                "tools": {
                    "echo": {"command": [testtool], "count": 2},
                    "bc": {"command": ["bc", "-q"], "count": 2, "lazy": True},
                }
            }
        )
    )
    with Pools(str(reg)) as pools:
        status = pools.status()
        assert (status["echo"]["started"], status["bc"]["started"]) == (2, 0)
        assert pools["bc"].request("6*7") == "42"
        pools["bc"].close()  # belongs to the Pools: nothing happens
        assert pools["bc"].request("2^10") == "1024"
        results = pools.map([("bc", "1+1"), ("echo", "a"), ("nope", "x"), ("bc", "3*3"), ("echo", "b")])
        assert results[:2] == ["2", "a"] and results[3:] == ["9", "b"]
        assert isinstance(results[2], toolpool.NotFound)
        assert 'tool="bc"' in pools.metrics_prometheus()
        bc = pools["bc"]
    with pytest.raises(toolpool.ShutDown):
        bc.request("1")
