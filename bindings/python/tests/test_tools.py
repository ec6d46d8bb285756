"""The command-line tools people have, as they are (docs/tools.md): real bc, sqlite3, jq,
sed and python3, driven with the spec keys that make them behave."""

import time

import pytest

import toolpool
from toolpool import Pool


def test_bc_errors_on_stderr_fail_fast_with_the_tools_words():
    spec = {"command": ["bc", "-q"], "env": {"BC_LINE_LENGTH": "0"}, "stderr_error_ms": 200}
    with Pool(spec) as pool:
        pid = pool.status()["instances"][0]["pid"]
        start = time.monotonic()
        with pytest.raises(toolpool.ToolError) as ei:
            pool.request("1/0", timeout=30)
        assert time.monotonic() - start < 5
        assert "Divide by zero" in str(ei.value)
        assert pool.request("6*7") == "42"
        assert len(pool.request("2^300")) == 91
        st = pool.status()["instances"][0]
        assert st["pid"] == pid
        assert any("Divide by zero" in line for line in st["stderr_tail"])


def test_sqlite3_with_an_end_command():
    spec = {
        "command": ["sqlite3"],
        "protocol": {"marker": "END", "end_command": ".print END"},
        "stderr_error_ms": 200,
    }
    with Pool(spec) as pool:
        assert pool.request("create table t(a, b);") == ""
        assert pool.request("insert into t values (1, 'x'), (2, 'y');") == ""
        assert pool.request("select a, b from t order by a;") == "1|x\n2|y"
        with pytest.raises(toolpool.ToolError) as ei:
            pool.request("selec 1;")
        assert "syntax error" in str(ei.value)
        assert pool.request("select count(*) from t;") == "2"


@pytest.mark.parametrize(
    "argv, line, want",
    [
        (["jq", "-M", "-c", ".a"], '{"a": [1, 2]}', "[1,2]"),
        (["sed", "s/b/B/"], "abc", "aBc"),
        (["python3", "-c", "import sys\nfor l in sys.stdin: print(l.strip().upper())"], "hi", "HI"),
    ],
)
def test_tools_that_buffer_on_a_pipe_answer_on_a_pty(argv, line, want):
    with Pool({"command": argv, "pty": True, "count": 2}) as pool:
        for _ in range(3):
            assert pool.request(line, timeout=10) == want


def test_a_buffering_tool_on_a_pipe_times_out_and_the_message_names_pty():
    with Pool({"command": ["jq", "-c", ".a"]}) as pool:
        with pytest.raises(toolpool.Timeout) as ei:
            pool.request('{"a": 1}', timeout=0.5)
        assert '"pty": true' in str(ei.value)


def test_tools_that_exit_fail_requests_at_once(testtool):
    spec = {"command": [testtool], "count": 2, "restart": {"policy": "on_failure"}}
    with Pool(spec) as pool:
        for _ in range(2):
            with pytest.raises(toolpool.InstanceDead):
                pool.request("crash:0")
        deadline = time.monotonic() + 5
        while pool.health()["dead"] != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        start = time.monotonic()
        with pytest.raises(toolpool.Unavailable) as ei:
            pool.request("x", timeout=30)
        assert time.monotonic() - start < 2
        assert "restart.policy on_failure does not restart it" in str(ei.value)


def test_a_command_line_taken_for_a_tool_id_says_how_to_start_a_command(monkeypatch):
    monkeypatch.delenv("TOOLPOOL_REGISTRY", raising=False)
    with pytest.raises(toolpool.ConfigError) as ei:
        Pool("bc -q")
    m = str(ei.value)
    assert "tool id 'bc -q'" in m and '"command": ["bc","-q"]' in m
