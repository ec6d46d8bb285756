"""Line I/O, requests, sticky keys, leases and batches against real processes."""

import json
import shutil
import time

import pytest

import toolpool
from toolpool import Pool, Reply


def test_seed_usage_three_instances_three_commands(testtool):
    # The issue's own usage: three instances, a different command to each.
    with Pool({"command": [testtool], "count": 3}) as pool:
        assert len(pool) == 3
        for i, word in enumerate(["alpha", "beta", "gamma"]):
            pool.send(i, word)
        assert [pool.read_line(i, timeout=5) for i in range(3)] == ["alpha", "beta", "gamma"]


@pytest.mark.skipif(shutil.which("cat") is None, reason="no cat")
def test_seed_usage_with_cat():
    with Pool(["cat"], count=3) as pool:
        for i, word in enumerate(["alpha", "beta", "gamma"]):
            pool.send(i, word)
        # Read in another order: each instance keeps its own stream.
        assert pool.read_line(2, timeout=5) == "gamma"
        assert pool.read_line(0, timeout=5) == "alpha"
        assert pool.read_line(1, timeout=5) == "beta"


def test_spec_forms(testtool, tmp_path, monkeypatch):
    # dict, JSON text (count overridden), argv list, registry id, $TOOLPOOL_REGISTRY.
    with Pool(json.dumps({"command": [testtool], "count": 1}), count=2) as p:
        assert len(p) == 2
    with Pool([testtool, "--prefix", "> "]) as p:
        assert len(p) == 1
        assert p.request("x") == "> x"
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"tools": {"echo": {"command": [testtool], "count": 2}}}))
    with Pool("echo", registry=reg) as p:
        assert len(p) == 2
    with Pool("echo", count=3, registry=str(reg)) as p:
        assert len(p) == 3
    monkeypatch.setenv("TOOLPOOL_REGISTRY", str(reg))
    with Pool("echo") as p:
        assert len(p) == 2
        assert p.request("via env") == "via env"
    with pytest.raises(TypeError):
        Pool({"command": [testtool]}, registry=reg)


def test_bytes_unicode_stderr_routed_any(testtool):
    with Pool({"command": [testtool], "count": 3}) as pool:
        pool.send(0, "gr\u00fc\u00df dich \u2713")
        assert pool.read_line(0, timeout=5) == "gr\u00fc\u00df dich \u2713"
        pool.send(1, b"raw bytes")
        assert pool.read_line(1, timeout=5) == "raw bytes"
        pool.send(1, "badutf8")
        line = pool.read_line(1, timeout=5)
        assert line.startswith("bad ") and "\ufffd" in line
        # Exact bytes both ways: NUL and invalid UTF-8 survive.
        pool.send(1, b"a\x00\xff\xfez")
        assert pool.read_line_bytes(1, timeout=5) == b"a\x00\xff\xfez"
        pool.send(1, b"")
        assert pool.read_line_bytes(1, timeout=5) == b""
        with pytest.raises(toolpool.InvalidArgument):
            pool.send(1, b"two\nlines")

        pool.send(2, "stderr:2")
        assert pool.read_line(2, timeout=5) == "stderr done"
        assert pool.read_stderr_line(2, timeout=5) == "stderr line 0"
        assert pool.read_stderr_line(2, timeout=5) == "stderr line 1"

        i = pool.send_routed("routed")
        assert 0 <= i < 3
        assert pool.read_any(timeout=5) == (i, "routed")

        # A long line survives the trip.
        pool.send(0, "y" * 100_000)
        assert pool.read_line(0, timeout=5) == "y" * 100_000


def test_request_lines_and_jsonrpc(testtool, rpc_spec):
    with Pool({"command": [testtool], "count": 2}) as pool:
        assert pool.request("ping") == "ping"
        assert pool.request(b"bytes ping", timeout=5) == "bytes ping"
    with Pool(rpc_spec) as rpc:
        assert rpc.request({"method": "add", "params": [2, 3]}) == "5"
        assert rpc.request('{"method": "ping"}') == '"pong"'
        assert json.loads(rpc.request({"method": "echo", "params": {"a": [1, 2]}})) == {"a": [1, 2]}
        with pytest.raises(toolpool.ToolError) as ei:
            rpc.request({"method": "fail", "params": {"code": -32001, "message": "nope"}})
        assert ei.value.code == 10 and "nope" in str(ei.value)
        # The pool is fine afterwards.
        assert rpc.request({"method": "add", "params": [20, 22]}) == "42"


def test_marker_protocol(testtool):
    with Pool({"command": [testtool], "protocol": {"marker": "END"}}) as pool:
        assert pool.request("multi:3:row") == "row 0\nrow 1\nrow 2"


def test_sticky(testtool):
    with Pool({"command": [testtool], "count": 3, "routing": "sticky"}) as pool:
        first = pool.request_sticky("user-7", "one")
        assert isinstance(first, Reply)
        assert first.text == "one" and first.instance is not None and not first.moved
        for _ in range(5):
            again = pool.request_sticky("user-7", "two")
            assert again == Reply("two", first.instance, False)
        seen = {pool.request_sticky(f"key-{k}", "x").instance for k in range(12)}
        assert len(seen) > 1  # keys spread over the pool

        # Kill the key's instance: the key moves, and says so.
        pool.send(first.instance, "crash:1")
        deadline = time.monotonic() + 5
        while pool.health()["dead"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        moved = pool.request_sticky("user-7", "three")
        assert moved.text == "three" and moved.moved and moved.instance != first.instance
        assert pool.request_sticky("user-7", "four") == Reply("four", moved.instance, False)


def test_lease_context_manager(testtool):
    with Pool({"command": [testtool], "count": 2}) as pool:
        with pool.lease(timeout=5) as lease:
            assert lease.index in (0, 1)
            assert pool.status()["instances"][lease.index]["leased"] is True
            lease.send("step 1")
            assert lease.read_line(timeout=5) == "step 1"
            assert lease.request("step 2") == "step 2"
            # Routed work goes to the other instance meanwhile.
            other = 1 - lease.index
            assert pool.send_routed("routed") == other
            assert pool.read_line(other, timeout=5) == "routed"
            # The only free instance is leased too: a second lease waits, then times out.
            with pool.lease(timeout=5) as second:
                assert second.index == other
                with pytest.raises(toolpool.Timeout):
                    pool.lease(timeout=0.1)
        assert lease.closed
        assert pool.status()["instances"][lease.index]["leased"] is False
        with pytest.raises(toolpool.ShutDown):
            lease.send("after close")
        lease.close()  # idempotent


def test_lease_outlives_pool(testtool):
    pool = Pool({"command": [testtool]})
    lease = pool.lease()
    pool.close()
    with pytest.raises(toolpool.ShutDown):
        lease.request("x", timeout=1)
    lease.close()


def test_map_order_and_errors(testtool, rpc_spec):
    with Pool({"command": [testtool], "count": 4}) as pool:
        # Later items finish first; results still come back in input order.
        payloads = [f"delay:{(20 - k) * 5}:item {k}" for k in range(20)]
        assert pool.map(payloads, timeout=10) == [f"item {k}" for k in range(20)]
        assert pool.map([]) == []
    with Pool(rpc_spec) as rpc:
        out = rpc.map(
            [
                {"method": "add", "params": [1, 1]},
                {"method": "fail", "params": {"message": "bad item"}},
                '{"method": "add", "params": [2, 2]}',
                {"method": "sleep", "params": {"ms": 3000, "value": 1}},
            ],
            timeout=0.5,
        )
        assert out[0] == "2" and out[2] == "4"
        assert isinstance(out[1], toolpool.ToolError) and "bad item" in str(out[1])
        assert isinstance(out[3], toolpool.Timeout) and out[3].code == 4


def test_health_status_metrics(testtool):
    with Pool({"command": [testtool], "count": 2}) as pool:
        pool.request("a")
        pool.request("b")
        h = pool.health()
        assert (h["total"], h["alive"], h["dead"]) == (2, 2, 0)
        s = pool.status()
        assert s["tool"] == "toolpool-testtool" and not s["shut_down"]
        assert [i["state"] for i in s["instances"]] == ["ready", "ready"]
        m = pool.metrics()
        assert m["requests_ok"] == 2 and m["latency"]["count"] == 2
        assert repr(pool).startswith("<toolpool.Pool size=2")
