"""Test setup: import toolpool from this checkout (no pip install needed) and find the
helper tools built by `make build`."""

import os
import shutil
import sys
from pathlib import Path

import pytest

PY_DIR = Path(__file__).resolve().parent.parent  # bindings/python
REPO = PY_DIR.parent.parent
# cargo's target directory: $CARGO_TARGET_DIR (relative to the repository) when set.
RELEASE = REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release"
LIB = RELEASE / ("libtoolpool.dylib" if sys.platform == "darwin" else "libtoolpool.so")

sys.path.insert(0, str(PY_DIR))
if LIB.is_file():
    os.environ.setdefault("TOOLPOOL_LIB", str(LIB))

TESTTOOL = Path(os.environ.get("TOOLPOOL_TESTTOOL") or RELEASE / "toolpool-testtool")
RPC_TOOL = REPO / "examples" / "tools" / "rpc_tool.py"


@pytest.fixture(scope="session")
def testtool() -> str:
    if not TESTTOOL.is_file():
        pytest.fail(f"{TESTTOOL} is missing: run `make build`")
    return str(TESTTOOL)


@pytest.fixture(scope="session")
def rpc_spec() -> dict:
    """A spec for the JSON-RPC test tool (2 instances, up to 8 requests in flight each)."""
    python = shutil.which("python3") or sys.executable
    return {
        "command": [python, "-u", str(RPC_TOOL), "--ready", "READY"],
        "startup": {"ready_line": "READY"},
        "protocol": "jsonrpc",
        "max_in_flight": 8,
        "count": 2,
    }
