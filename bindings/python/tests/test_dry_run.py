"""Dry-run pools (the "dry_run" spec key): canned replies, no process, no binary."""

import json
import os
import re
import subprocess
import sys
import threading

import pytest

import toolpool
from toolpool import Pool

from conftest import PY_DIR, REPO
from test_docs import marked_block

MISSING = "/nonexistent/dry-run-tool"


def children():
    """Pids of this process's children, in any state."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == me:
            out.append(int(name))
    return out


def dry(replies=(), default="echo", **keys):
    spec = {"command": [MISSING, "--flag"], "dry_run": {"replies": list(replies), "default": default}}
    spec.update(keys)
    return spec


def test_lines_with_no_process_and_no_binary():
    before = children()
    with Pool(dry([{"match": "6*7", "reply": "42"}], count=3)) as pool:
        assert pool.request("6*7", timeout=5) == "42"
        assert pool.request("hello", timeout=5) == "hello"
        assert pool.map(["a", "6*7", "b"], timeout=5) == ["a", "42", "b"]
        st = pool.status()
        assert st["dry_run"] is True and st["disabled"] is False
        assert st["command"] == [MISSING, "--flag"]
        assert [i["pid"] for i in st["instances"]] == [None, None, None]
        h = pool.health()
        assert (h["total"], h["alive"], h["ready"]) == (3, 3, 3)
        assert pool.metrics()["requests_ok"] == 5
        assert children() == before, "a dry pool started a process"
        assert toolpool.limit_status()["active_processes"] == 0
    assert children() == before


def test_sticky_keys_leases_and_restart():
    with Pool(dry(count=2)) as pool:
        first = pool.request_sticky("user", "a", timeout=5)
        assert all(pool.request_sticky("user", "b", timeout=5).instance == first.instance for _ in range(4))
        with pool.lease(timeout=5) as lease:
            assert lease.request("mine", timeout=5) == "mine"
            others = {pool.request_sticky(str(k), "x", timeout=5).instance for k in range(4)}
            assert lease.index not in others
        pool.restart(0)
        assert pool.status()["instances"][0]["restarts"] == 1
        assert pool.request("after restart", timeout=5) == "after restart"


def test_delay_times_out_and_the_late_reply_reaches_nobody():
    with Pool(dry([{"match": "slow", "reply": "LATE", "delay_ms": 2000}])) as pool:
        with pytest.raises(toolpool.Timeout):
            pool.request("slow", timeout=0.2)
        assert [pool.request(f"n{k}", timeout=5) for k in range(3)] == ["n0", "n1", "n2"]
        assert pool.metrics()["requests_timeout"] == 1


def test_errors_in_each_framing():
    with Pool(dry([{"match": "crash", "error": {"code": 3, "message": "disk on fire"}}])) as pool:
        with pytest.raises(toolpool.InstanceDead, match="disk on fire"):
            pool.request("crash", timeout=5)
    rpc = dry([{"match": "boom", "error": {"code": 42, "message": "it broke"}}], default="error",
              protocol="jsonrpc", max_in_flight=4)
    with Pool(rpc) as pool:
        with pytest.raises(toolpool.ToolError, match="it broke"):
            pool.request({"method": "boom"}, timeout=5)
        with pytest.raises(toolpool.ToolError, match="'nope'"):
            pool.request({"method": "nope"}, timeout=5)
    with Pool(dry([{"match": "t", "reply": "a\nb"}], protocol={"marker": "END"})) as pool:
        assert pool.request("t", timeout=5) == "a\nb"
        assert pool.request("echo me", timeout=5) == "echo me"


def test_jsonrpc_requests_overlap_on_one_instance():
    spec = dry([{"match": "work", "reply": "7", "delay_ms": 1000}], protocol="jsonrpc", max_in_flight=4)
    with Pool(spec) as pool:
        results = []
        threads = [threading.Thread(target=lambda: results.append(pool.request({"method": "work"}, timeout=3)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # One after the other would need 4 s: the last would time out.
        assert results == ["7"] * 4


@pytest.mark.parametrize("dry_run, key", [
    ({"replies": [{"match": "a", "reply": "x\ny"}]}, "dry_run.replies[0].reply"),
    ({"replies": [{"match": "a"}, {"match": "a"}]}, "dry_run.replies[1].match"),
    ({"replies": [{"match": "a", "delay_ms": -1}]}, "dry_run.replies[0].delay_ms"),
    ({"replies": [{"match": "a", "error": {"code": 300, "message": "m"}}]}, "dry_run.replies[0].error.code"),
    ({"default": ["echo"]}, "dry_run.default"),
    ({"reply": "x"}, "dry_run.reply"),
])
def test_bad_dry_run_names_the_key(dry_run, key):
    with pytest.raises(toolpool.ConfigError) as e:
        Pool({"command": [MISSING], "dry_run": dry_run})
    assert f"key '{key}'" in str(e.value)


def test_environment_makes_every_pool_dry():
    # In a child interpreter, so the variable reaches no other test.
    code = (
        "import toolpool\n"
        f"with toolpool.Pool({{'command': [{MISSING!r}]}}) as p:\n"
        "    print(p.request('hi', timeout=5), p.status()['dry_run'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PY_DIR), TOOLPOOL_DRY_RUN="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "hi True\n"
    env["TOOLPOOL_DRY_RUN"] = "0"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "SpawnFailed" in out.stderr


def docs_block(lang):
    """The ```lang block of docs/testing.md (there is one per language)."""
    text = (REPO / "docs" / "testing.md").read_text()
    blocks = re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) == 1, f"docs/testing.md has {len(blocks)} ```{lang} blocks, want 1"
    return blocks[0]


def test_docs_dry_run_examples_are_the_tests_make_test_runs():
    files = {
        "python": PY_DIR / "tests" / "test_docs_dry_run.py",
        "go": REPO / "bindings" / "go" / "dryrun_docs_test.go",
    }
    for lang, path in files.items():
        comment = "#" if lang == "python" else "//"
        want = marked_block(path, f"{comment} BEGIN docs/testing.md", f"{comment} END docs/testing.md")
        assert docs_block(lang) == want.rstrip("\n") + "\n", (
            f"the {lang} example of docs/testing.md differs from {path.relative_to(REPO)}: copy one onto the other"
        )
