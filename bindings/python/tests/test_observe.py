"""Observability: records in the "toolpool" logger, Prometheus text read by a real parser
(prometheus_client), memory per instance and recycling on memory."""

import logging
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import toolpool
from test_lifecycle import wait_for
from toolpool import Pool


class Keep(logging.Handler):
    """Every record of the "toolpool" logger, from any thread."""

    def __init__(self):
        super().__init__(level=1)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def find(self, level, prefix, needle):
        for r in list(self.records):
            msg = r.getMessage()
            if r.levelno == level and msg.startswith(prefix) and needle in msg:
                return r
        return None


@pytest.fixture
def records():
    h = Keep()
    logger = logging.getLogger("toolpool")
    old = logger.level
    logger.addHandler(h)
    logger.setLevel(logging.DEBUG)
    yield h
    logger.removeHandler(h)
    logger.setLevel(old)


def test_crash_is_a_warning_and_restart_is_info(testtool, records):
    spec = {"id": "py_obs", "command": [testtool], "restart": {"policy": "always", "backoff_initial_ms": 20}}
    with Pool(spec) as pool:
        assert wait_for(lambda: records.find(logging.INFO, "spawned", "tool=py_obs "))
        before = len(records.records)
        for k in range(20):
            assert pool.request(f"r{k}") == f"r{k}"
        assert len(records.records) == before, "a successful request logs nothing"
        pool.send(0, "crash:4")
        assert wait_for(lambda: records.find(logging.WARNING, "exited unexpectedly", "tool=py_obs "))
        warn = records.find(logging.WARNING, "exited unexpectedly", "tool=py_obs ")
        assert "code=4" in warn.getMessage() and "crash requested with code 4" in warn.getMessage()
        assert warn.name == "toolpool" and warn.toolpool_target == "toolpool"
        assert wait_for(lambda: records.find(logging.INFO, "restarted", "tool=py_obs "))
        assert records.find(logging.INFO, "restart scheduled", "tool=py_obs ")
        assert pool.request("back") == "back"


def test_stderr_lines_as_records(testtool, records):
    with Pool({"id": "py_err", "command": [testtool], "stderr": "log"}) as pool:
        assert pool.request("stderr:2") == "stderr done"
        assert wait_for(lambda: records.find(logging.INFO, "stderr", "tool=py_err ") is not None)
        assert wait_for(lambda: any(r.getMessage().endswith(": stderr line 1") for r in records.records))
        rec = records.find(logging.INFO, "stderr", "tool=py_err ")
        assert rec.toolpool_target == "toolpool::stderr"


def families(text):
    """Parsed with prometheus_client's text parser: {name: family}."""
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, name, sample, **labels):
    for s in fams[name].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {sample} {labels}")


def test_prometheus_text_parses(testtool):
    with Pool({"id": "py_prom", "command": [testtool], "count": 2}) as pool:
        for k in range(6):
            pool.request(f"x{k}")
        with pytest.raises(toolpool.Timeout):
            pool.request("delay:1000:late", timeout=0.05)
        fams = families(pool.metrics_prometheus())
        assert fams["toolpool_requests"].type == "counter"
        assert value(fams, "toolpool_requests", "toolpool_requests_total", tool="py_prom", outcome="ok") == 6
        assert value(fams, "toolpool_requests", "toolpool_requests_total", tool="py_prom", outcome="timeout") == 1
        h = fams["toolpool_request_duration_seconds"]
        assert h.type == "histogram"
        buckets = [s for s in h.samples if s.name.endswith("_bucket")]
        assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 6
        assert all(a.value <= b.value for a, b in zip(buckets, buckets[1:]))
        assert value(fams, "toolpool_recycles", "toolpool_recycles_total", tool="py_prom", reason="timeout") == 1
        assert fams["toolpool_instance_rss_bytes"].type == "gauge"
        assert "toolpool_process_limit" in fams and "toolpool_processes_active" in fams
        states = {s.labels["state"]: s.value for s in fams["toolpool_instances"].samples}
        assert set(states) == {"starting", "ready", "dead", "stopped", "failed"}
        assert sum(states.values()) == 2

        # Every live pool at once, as a /metrics handler serves it.
        with Pool({"id": "py_prom_b", "command": ["cat"]}) as other:
            other.request("hello")
            fams = families(toolpool.metrics_prometheus_all())
            tools = {s.labels.get("tool") for s in fams["toolpool_requests"].samples}
            assert {"py_prom", "py_prom_b"} <= tools
            assert value(fams, "toolpool_requests", "toolpool_requests_total", tool="py_prom_b", outcome="ok") == 1


def test_memory_in_status_and_recycling_on_max_rss(testtool, records):
    spec = {"id": "py_rss", "command": [testtool], "limits": {"max_rss_mb": 40}}
    with Pool(spec) as pool:
        assert pool.request("pid")
        st = pool.status()["instances"][0]
        assert 0 < st["rss_bytes"] < 40 << 20 and st["cpu_seconds"] >= 0
        old = st["pid"]
        assert pool.request("alloc:64") == "allocated 64"
        assert wait_for(lambda: pool.status()["instances"][0]["pid"] != old, within=15)
        for k in range(10):
            assert pool.request(f"after{k}") == f"after{k}"
        # The counter follows the swap (the new pid shows first).
        assert wait_for(lambda: records.find(logging.INFO, "recycled", "reason=memory"))
        m = pool.metrics()
        assert m["recycles"]["memory"] == 1
        assert m["requests_error"] == 0 and m["requests_timeout"] == 0
