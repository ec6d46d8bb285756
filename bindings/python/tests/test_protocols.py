"""Protocol servers from Python: the lsp framing, a start-up handshake,
``notify`` on a pool and a lease, requests from the tool answered; against the JSON-RPC
test tool in its ``--lsp`` mode and a real language server from PyPI."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

from toolpool import ConfigError, IndexOutOfRange, InvalidArgument, Pool, SpawnFailed

REPO = Path(__file__).resolve().parents[3]
RPC_TOOL = REPO / "examples" / "tools" / "rpc_tool.py"
PYTHON = shutil.which("python3") or sys.executable


def lsp_spec(count: int) -> Dict[str, Any]:
    return {
        "command": [PYTHON, "-u", str(RPC_TOOL), "--lsp"],
        "protocol": "lsp",
        "count": count,
        "max_in_flight": 4,
        "client_replies": {"workspace/configuration": [{"from": "python"}]},
        "startup": {
            "timeout_ms": 20000,
            "handshake": [
                {"method": "echo", "params": {"server": "py"}},
                {"method": "initialized", "params": {}, "notification": True},
            ],
        },
    }


def test_lsp_handshake_requests_and_notify() -> None:
    with Pool(lsp_spec(2)) as pool:
        for inst in pool.status()["instances"]:
            assert inst["handshake_reply"] == {"server": "py"}
        replies = pool.map([{"method": "add", "params": [k, 1]} for k in range(12)], timeout=10)
        assert list(replies) == [str(k + 1) for k in range(12)]

        pool.notify(1, {"method": "to1", "params": [1]})
        with pool.lease() as a, pool.lease() as b:
            one, zero = (a, b) if a.index == 1 else (b, a)
            one.notify({"method": "viaLease"})
            assert json.loads(one.request({"method": "notes"})) == [
                ["initialized", {}],
                ["to1", [1]],
                ["viaLease", None],
            ]
            assert json.loads(zero.request({"method": "notes"})) == [["initialized", {}]]
            got = json.loads(one.request({"method": "ask", "params": {"method": "workspace/configuration"}}))
            assert got["result"] == [{"from": "python"}]
            got = json.loads(one.request({"method": "ask", "params": {"method": "roots/list"}}))
            assert got["error"]["code"] == -32601
            with pytest.raises(InvalidArgument, match="method"):
                one.notify({"params": {}})
        assert pool.status()["instances"][1]["client_requests"] == 2
        with pytest.raises(InvalidArgument, match="payload"):
            pool.notify(0, "[]")
        with pytest.raises(IndexOutOfRange):
            pool.notify(5, {"method": "m"})


def test_notify_needs_a_jsonrpc_framing(testtool: str) -> None:
    with Pool({"command": [testtool]}) as pool:
        with pytest.raises(InvalidArgument, match="jsonrpc or lsp"):
            pool.notify(0, {"method": "m"})


def test_handshake_errors() -> None:
    spec = lsp_spec(1)
    spec["startup"]["handshake"] = [{"method": "fail", "params": {"message": "not now"}}]
    with pytest.raises(SpawnFailed, match="not now"):
        Pool(spec)
    spec["startup"] = {"timeout_ms": 500, "handshake": [{"method": "sleep", "params": {"ms": 30000}}]}
    with pytest.raises(SpawnFailed, match=r"no reply within startup.timeout_ms \(500 ms\)"):
        Pool(spec)
    with pytest.raises(ConfigError, match="startup.handshake"):
        Pool({"command": ["cat"], "startup": {"handshake": [{"method": "initialize"}]}})


def test_a_real_language_server_through_a_lease(tmp_path: Path) -> None:
    venv = subprocess.run(
        [str(REPO / "tests" / "protocol_venv.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    src = tmp_path / "doc.py"
    text = "def greet(name):\n    return 'hi ' + name\n\nclass Greeter:\n    pass\n"
    src.write_text(text)
    spec = {
        "command": [f"{venv}/bin/jedi-language-server"],
        "protocol": "lsp",
        "startup": {
            "timeout_ms": 30000,
            "handshake": [
                {"method": "initialize", "params": {"processId": None, "rootUri": tmp_path.as_uri(), "capabilities": {}}},
                {"method": "initialized", "params": {}, "notification": True},
            ],
        },
    }
    with Pool(spec) as pool:
        assert pool.status()["instances"][0]["handshake_reply"]["serverInfo"]["name"] == "jedi-language-server"
        with pool.lease() as lease:
            lease.notify(
                {
                    "method": "textDocument/didOpen",
                    "params": {"textDocument": {"uri": src.as_uri(), "languageId": "python", "version": 1, "text": text}},
                }
            )
            symbols = json.loads(
                lease.request(
                    {"method": "textDocument/documentSymbol", "params": {"textDocument": {"uri": src.as_uri()}}},
                    timeout=30,
                )
            )
        assert {"greet", "Greeter"} <= {s["name"] for s in symbols}
