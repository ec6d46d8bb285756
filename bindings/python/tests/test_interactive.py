"""Interactive tools in prompt framing (docs/interactive.md): python3 -i and sqlite3 on a
pseudo-terminal, state kept across requests, blocks, errors, interrupts, init lines; a
conversation through a lease and per-user sessions through sticky keys."""

import os
import signal
import time

import pytest

import toolpool
from toolpool import Pool

PYTHON = {"command": ["python3", "-i", "-q"], "pty": True, "protocol": {"prompt": ">>> "}}


def test_python_state_blocks_and_errors():
    with Pool(PYTHON) as pool:
        assert pool.request("x = 5") == ""
        assert pool.request("def f(a):\n    return a * 2\n") == ""
        assert pool.request("f(x)") == "10"
        with pytest.raises(toolpool.ToolError) as ei:
            pool.request("1/0")
        assert "ZeroDivisionError" in str(ei.value)
        assert pool.request("x") == "5"


def test_an_interrupt_keeps_the_session():
    spec = dict(PYTHON, protocol={"prompt": ">>> ", "interrupt": True})
    with Pool(spec) as pool:
        pool.request("x = 41")
        pid = pool.status()["instances"][0]["pid"]
        with pytest.raises(toolpool.Timeout):
            pool.request("import time; time.sleep(60)", timeout=0.5)
        assert pool.request("x + 1") == "42"
        assert pool.status()["instances"][0]["pid"] == pid


def test_init_lines_come_back_after_a_kill():
    spec = dict(
        PYTHON,
        protocol={"prompt": ">>> ", "init": ["y = 7"]},
        restart={"policy": "always", "backoff_initial_ms": 10},
    )
    with Pool(spec) as pool:
        pool.request("y = 1")
        pid = pool.status()["instances"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = pool.status()["instances"][0]
            if st["pid"] != pid and st["state"] == "ready":
                break
            time.sleep(0.05)
        assert pool.request("y") == "7"


def test_a_conversation_on_a_lease_and_sessions_by_user():
    with Pool(dict(PYTHON, count=2)) as pool:
        # One conversation of several steps on one instance.
        with pool.lease() as session:
            session.request("notes = []")
            session.request("notes.append('read the file')")
            session.request("notes.append('answer the question')")
            assert session.request("len(notes)") == "2"
        # A session per user: each key stays on its instance and keeps its state.
        for user in ("ana", "bo"):
            pool.request_sticky(user, f"me = {user!r}")
        assert pool.request_sticky("ana", "me").text == "'ana'"
        assert pool.request_sticky("bo", "me").text == "'bo'"


def test_sqlite3_interactive():
    spec = {"command": ["sqlite3", "-interactive"], "pty": True, "protocol": {"prompt": "sqlite> "}}
    with Pool(spec) as pool:
        pool.request("create table t(a);")
        pool.request("insert into t\nvalues (1), (2);")
        assert pool.request("select a from t;") == "1\n2"
        with pytest.raises(toolpool.ToolError):
            pool.request("selec 1;")


def test_the_conversation_example_of_the_docs_runs(capsys):
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parents[3] / "docs" / "interactive.md"
    block = re.search(r"```python\n(.*?)```", page.read_text(), re.S)
    assert block, "docs/interactive.md has a python block"
    exec(compile(block.group(1), "docs/interactive.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["2", "'ana'"]
