"""The pytest example of docs/testing.md ("Testing your program without the tool"): the
lines between the BEGIN and END markers are that block (test_dry_run.py checks)."""

# BEGIN docs/testing.md
import json

import pytest
import toolpool

# The real tool is not installed in CI: a dry pool never starts it.
SPEC = {
    "command": ["/opt/acme/bin/summarize", "--model", "large"],
    "protocol": "jsonrpc",
    "dry_run": {
        "replies": [
            {"match": "summarize", "reply": "{\"summary\": \"short\"}"},
            {"match": "translate", "error": {"code": 7, "message": "no such language"}},
            {"match": "deep", "reply": "null", "delay_ms": 5000},
        ],
        "default": "error",
    },
}


def summarize(pool, text):  # the code under test
    return json.loads(pool.request({"method": "summarize", "params": {"text": text}}))["summary"]


def test_my_program_without_the_tool():
    with toolpool.Pool(SPEC) as pool:
        assert summarize(pool, "a long text") == "short"
        with pytest.raises(toolpool.ToolError, match="no such language"):
            pool.request({"method": "translate"})
        with pytest.raises(toolpool.Timeout):
            pool.request({"method": "deep"}, timeout=0.2)
        assert pool.status()["dry_run"] is True
# END docs/testing.md
