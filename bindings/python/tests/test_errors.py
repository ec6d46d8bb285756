"""The exception hierarchy: one class per status, each with .code and the library message."""

import json
import pickle
import time

import pytest

import toolpool
from toolpool import Pool

EXPECTED = {
    "InvalidArgument": 1,
    "NotFound": 2,
    "SpawnFailed": 3,
    "Timeout": 4,
    "InstanceDead": 5,
    "Saturated": 6,
    "ShutDown": 7,
    "LimitReached": 8,
    "ProtocolError": 9,
    "ToolError": 10,
    "ConfigError": 11,
    "IndexOutOfRange": 12,
    "QueueFull": 13,
    "InstanceFailed": 14,
    "Unavailable": 15,
    "ToolpoolIOError": 16,
    "Panic": 99,
}


def test_one_class_per_status():
    for name, code in EXPECTED.items():
        cls = getattr(toolpool, name)
        assert issubclass(cls, toolpool.ToolpoolError)
        assert cls.CODE == code
        err = toolpool.error_for_code(code, "msg")
        assert type(err) is cls and err.code == code and str(err) == "msg"
        # The names agree with the C header's constants.
        assert err.status == toolpool.status_name(code) != "TOOLPOOL_UNKNOWN"
    assert toolpool.status_name(4) == "TOOLPOOL_TIMEOUT"
    assert toolpool.status_name(1234) == "TOOLPOOL_UNKNOWN"
    unknown = toolpool.error_for_code(1234, "future status")
    assert type(unknown) is toolpool.ToolpoolError and unknown.code == 1234
    # Builtin bases where they mean the same thing; the builtin IOError is not shadowed.
    assert issubclass(toolpool.Timeout, TimeoutError)
    assert issubclass(toolpool.IndexOutOfRange, IndexError)
    assert issubclass(toolpool.InvalidArgument, ValueError)
    assert not hasattr(toolpool, "IOError")
    # Exceptions survive pickling (e.g. across multiprocessing).
    e = pickle.loads(pickle.dumps(toolpool.Timeout("late", 4)))
    assert type(e) is toolpool.Timeout and e.code == 4 and e.message == "late"


def test_index_out_of_range(testtool):
    with Pool({"command": [testtool], "count": 3}) as pool:
        with pytest.raises(toolpool.IndexOutOfRange) as ei:
            pool.send(3, "x")
        assert ei.value.code == 12 and "3" in str(ei.value)
        with pytest.raises(IndexError):
            pool.read_line(7, timeout=0)
        with pytest.raises(toolpool.IndexOutOfRange):
            pool.restart(99)
        with pytest.raises(toolpool.IndexOutOfRange):
            pool.send(-1, "x")  # checked in Python: never wraps around to a valid index
        with pytest.raises(toolpool.IndexOutOfRange):
            pool.send(2**32, "x")


def test_not_found_for_unknown_registry_tool(testtool, tmp_path):
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"tools": {"echo": {"command": [testtool]}}}))
    with pytest.raises(toolpool.NotFound) as ei:
        Pool("no-such-tool", registry=reg)
    assert ei.value.code == 2
    assert "no-such-tool" in str(ei.value) and "echo" in str(ei.value)  # lists the known ones
    with pytest.raises(toolpool.ToolpoolIOError):
        Pool("echo", registry=tmp_path / "missing.json")


def test_config_error_for_bad_spec(testtool, monkeypatch):
    with pytest.raises(toolpool.ConfigError) as ei:
        Pool({"command": [testtool], "no_such_key": 1})
    assert ei.value.code == 11 and "no_such_key" in str(ei.value)
    with pytest.raises(toolpool.ConfigError):
        Pool("{not json")
    with pytest.raises(toolpool.ConfigError):
        Pool({"command": []})
    with pytest.raises(toolpool.ConfigError):
        Pool({"command": [testtool], "count": "three"})
    monkeypatch.delenv("TOOLPOOL_REGISTRY", raising=False)
    with pytest.raises(toolpool.ConfigError):
        Pool("echo")  # no registry= and no $TOOLPOOL_REGISTRY


def test_spawn_failed():
    with pytest.raises(toolpool.SpawnFailed) as ei:
        Pool({"command": ["/nonexistent/toolpool-no-such-program"]})
    assert ei.value.code == 3


def test_invalid_arguments(testtool):
    with Pool({"command": [testtool]}) as pool:
        with pytest.raises(toolpool.InvalidArgument) as ei:
            pool.send(0, "two\nlines")
        assert ei.value.code == 1
        with pytest.raises(toolpool.InvalidArgument):
            pool.send(0, "nul\0byte")
        with pytest.raises(ValueError):
            pool.read_line(0, timeout=-1)
        with pytest.raises(TypeError):
            pool.send(0, 42)
        with pytest.raises(toolpool.InvalidArgument):
            Pool({"command": [testtool]}, count=0)
        # Nothing was consumed by the failed calls.
        assert pool.request("still fine") == "still fine"


def test_shut_down_after_shutdown_and_close(testtool):
    pool = Pool({"command": [testtool], "count": 2})
    pid = pool.status()["instances"][0]["pid"]
    pool.shutdown(grace=1)
    pool.shutdown()  # idempotent
    with pytest.raises(toolpool.ShutDown) as ei:
        pool.request("x")
    assert ei.value.code == 7
    with pytest.raises(toolpool.ShutDown):
        pool.lease(timeout=0)
    # Still answers about itself until closed.
    assert len(pool) == 2 and pool.status()["shut_down"] is True
    assert pool.health()["alive"] == 0
    _assert_gone(pid)
    pool.close()
    pool.close()  # idempotent
    assert pool.closed and len(pool) == 2
    for call in (
        lambda: pool.send(0, "x"),
        lambda: pool.request("x"),
        lambda: pool.health(),
        lambda: pool.shutdown(),
    ):
        with pytest.raises(toolpool.ShutDown):
            call()


def test_shutdown_waits_the_specs_grace_by_default(testtool):
    # A tool that ignores SIGTERM is killed once the grace has passed: the spec's 300 ms,
    # not the 2 s default of a spec without the key.
    spec = {"command": [testtool, "--ignore-term"], "shutdown": {"grace_ms": 300}}
    with Pool(spec) as pool:
        assert pool.status()["shutdown_grace_ms"] == 300
        pool.send(0, "hang")
        start = time.monotonic()
        pool.shutdown()
        took = time.monotonic() - start
    assert 0.25 <= took < 1.5, took


def test_timeout_error_is_quick(testtool):
    with Pool({"command": [testtool]}) as pool:
        start = time.monotonic()
        with pytest.raises(toolpool.Timeout) as ei:
            pool.read_line(0, timeout=0.1)
        elapsed = time.monotonic() - start
        assert 0.09 <= elapsed < 2.0
        assert ei.value.code == 4 and isinstance(ei.value, TimeoutError)
        with pytest.raises(toolpool.Timeout):
            pool.read_line(0, timeout=0)
        with pytest.raises(toolpool.Timeout):
            pool.read_stderr_line(0, timeout=0.05)
        with pytest.raises(toolpool.Timeout):
            pool.read_any(timeout=0.05)


def test_request_timeout_leaves_no_late_reply(testtool):
    with Pool({"command": [testtool]}) as pool:
        start = time.monotonic()
        with pytest.raises(toolpool.Timeout):
            pool.request("delay:1000:late", timeout=0.1)
        assert time.monotonic() - start < 2.0
        # The next caller gets its own reply, never "late".
        assert pool.request("fresh", timeout=10) == "fresh"


def _assert_gone(pid, within=5.0):
    import os

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still exists")
