"""The FastAPI service of docs/runs.md ("A FastAPI service that starts builds"): the lines
between the BEGIN and END markers are that block (test_runs_docs_block_is_this_file
checks), served here through Starlette's TestClient, with real `make` builds in a
directory of their own."""

import os
import re
import tempfile
import textwrap
from pathlib import Path

from fastapi.testclient import TestClient

import toolpool

from conftest import REPO

# A build directory for the service: `make hello`, `make fail`.
_BUILDS = tempfile.mkdtemp(prefix="toolpool-builds-")
Path(_BUILDS, "Makefile").write_text(
    textwrap.dedent(
        """\
        hello:
        \t@echo compiling hello
        \t@echo linking hello
        fail:
        \t@echo broken >&2; exit 2
        """
    )
)
os.environ["BUILDS"] = _BUILDS

# BEGIN docs/runs.md
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.responses import StreamingResponse

import toolpool
from toolpool import aio

BUILDS = os.environ.get("BUILDS", "/srv/builds")  # a directory with a Makefile
MAX_BUILDS = 4


def build_spec(target: str) -> dict:
    return {
        "name": f"build-{target}",
        "command": ["make", "--no-print-directory", target],
        "cwd": BUILDS,
        "slot_timeout_ms": 0,  # a full machine answers at once
        "timeout_ms": 600_000,  # no build runs longer than 10 minutes
    }


@asynccontextmanager
async def lifespan(app: FastAPI):
    old = toolpool.set_limit(MAX_BUILDS)
    yield
    toolpool.kill_all()  # no build outlives the service
    toolpool.set_limit(old)


app = FastAPI(lifespan=lifespan)


@app.post("/builds/{target}")
async def build(target: str) -> dict:
    try:
        result = await aio.run_output(build_spec(target))
    except toolpool.LimitReached as e:
        raise HTTPException(503, f"Cannot start build: {e}")
    return {"exit_code": result.returncode, "timed_out": result.timed_out, "log": result.stdout}


@app.get("/builds/{target}/log")
async def build_log(target: str) -> StreamingResponse:
    try:
        run = await aio.start_run(build_spec(target))
    except toolpool.LimitReached as e:
        raise HTTPException(503, f"Cannot start build: {e}")

    async def lines():
        async with run:  # a client that goes away kills the build
            async for line in run.stdout:
                yield line + "\n"
            yield f"exit {await run.wait()}\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/status")
async def status() -> dict:
    return toolpool.limit_status()
# END docs/runs.md


def test_runs_docs_block_is_this_file():
    text = (REPO / "docs" / "runs.md").read_text()
    section = text.split("## A FastAPI service that starts builds", 1)[1]
    block = re.search(r"^```python\n(.*?)^```", section, re.S | re.M)
    assert block, "docs/runs.md has no ```python block in its FastAPI section"
    this = Path(__file__).read_text()
    marked = re.search(r"^# BEGIN docs/runs.md\n(.*?)^# END docs/runs.md\n", this, re.S | re.M)
    assert marked
    assert block.group(1) == marked.group(1), (
        "the FastAPI service of docs/runs.md differs from bindings/python/tests/test_docs_runs.py: "
        "copy one onto the other"
    )


def test_the_service_builds_streams_and_refuses_when_full():
    before = toolpool.limit_status()["max_allowed"]
    with TestClient(app) as client:
        assert toolpool.limit_status()["max_allowed"] == MAX_BUILDS
        r = client.post("/builds/hello")
        assert r.status_code == 200, r.text
        assert r.json() == {"exit_code": 0, "timed_out": False, "log": "compiling hello\nlinking hello\n"}
        r = client.post("/builds/fail")
        assert r.json()["exit_code"] == 2
        r = client.get("/builds/hello/log")
        assert r.text == "compiling hello\nlinking hello\nexit 0\n"

        # Four builds running (the host's own runs here): the fifth is refused at once.
        busy = [toolpool.start_run(["sleep", "30"]) for _ in range(MAX_BUILDS)]
        try:
            r = client.post("/builds/hello")
            assert r.status_code == 503
            assert "Cannot start build: maximum concurrent processes reached: 4 of 4" in r.json()["detail"]
            assert client.get("/builds/hello/log").status_code == 503
            st = client.get("/status").json()
            assert (st["active_processes"], st["can_start_new"]) == (MAX_BUILDS, False)
            assert {p["kind"] for p in st["processes"]} == {"run"}
        finally:
            for run in busy:
                run.close()
    assert toolpool.limit_status()["max_allowed"] == before
