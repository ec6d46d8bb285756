"""`toolpool serve` from Python: the real `toolpool` command ($TOOLPOOL_CLI, which the
Makefile sets) on a socket in a fresh directory, used through `toolpool.connect`,
`toolpool.aio.connect` and TOOLPOOL_SERVER; a service killed mid-call and started again;
4 Python and 4 Go host processes sharing one process limit; gunicorn workers as clients."""

import asyncio
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

import toolpool
from toolpool import aio

from conftest import PY_DIR, RELEASE, REPO, TESTTOOL

CLI = Path(os.environ.get("TOOLPOOL_CLI") or RELEASE / "toolpool")
APPS = PY_DIR / "tests" / "apps"
T = 10.0


def wait_for(cond, within: float = 10.0, what: str = "a condition") -> None:
    deadline = time.monotonic() + within
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        time.sleep(0.01)


def children(pid: int) -> List[int]:
    """The pids whose parent is `pid` (every thread's children file)."""
    out: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return out
    for t in tasks:
        try:
            out += [int(p) for p in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def live_children(pid: int) -> int:
    """How many children `pid` has at one instant, zombies (not yet reaped) included.

    The children files of its threads are read one after the other, so a child reaped
    after its file was read and a child started after that may both be listed: counted
    as is, the list can exceed what ever existed at once. So every listed child is looked
    at again afterwards, and only those still there (still `pid`'s children) count: each
    of them existed from its listing to its check, so all of them existed together when
    the last file was read."""
    count = 0
    for child in children(pid):
        try:
            if parent_of(child) == pid:
                count += 1
        except (FileNotFoundError, ProcessLookupError):
            pass  # reaped since it was listed
    return count


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool_spec(count: int, *args: str, **extra: Any) -> Dict[str, Any]:
    return {"command": [str(TESTTOOL), *args], "count": count, **extra}


class Served:
    """A running `toolpool serve` (the watchdog process we started, and the service, its
    child), stopped with SIGTERM by `stop()`."""

    def __init__(self, tools: Dict[str, Any], *args: str) -> None:
        if not CLI.is_file():
            pytest.fail(f"{CLI} is missing: run `make build` (or set $TOOLPOOL_CLI)")
        # A short path: a Unix socket path has at most 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="tp-svc-"))
        self.socket = self.dir / "tp.sock"
        self.registry = self.dir / "tools.json"
        self.registry.write_text(json.dumps({"tools": tools}))
        self.args = args
        self.log_path = self.dir / "serve.log"
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(CLI), "serve", "--registry", str(self.registry), "--socket", str(self.socket), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

        def answers() -> bool:
            assert self.proc is not None and self.proc.poll() is None, f"toolpool serve exited: {self.log()}"
            try:
                toolpool.connect(self.socket).close()
                return True
            except toolpool.ServiceError:
                return False

        wait_for(answers, 30, "toolpool serve to answer")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def service_pid(self) -> int:
        """The service: the one child of the watchdog (the process we started)."""
        assert self.proc is not None
        found: List[int] = []
        wait_for(lambda: bool(found.extend(children(self.proc.pid)) or found), 10, "the service process")
        return found[0]

    def kill_service(self) -> None:
        """SIGKILL the service; the watchdog then kills its tools and exits."""
        assert self.proc is not None
        os.kill(self.service_pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, wait, and remove the directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture()
def served() -> Iterator[Served]:
    s = Served({"echo": tool_spec(2), "bc": {"command": ["bc", "-q"], "count": 2}}, "--max-processes", "16")
    try:
        yield s
    finally:
        # While a pool of a service lives, the limit calls of this process go to that
        # service: let every one go before the next test.
        gc.collect()
        s.stop()


def pids(pool: toolpool.Pool) -> List[int]:
    return [i["pid"] for i in pool.status()["instances"]]


def test_every_pool_method_through_connect(served: Served) -> None:
    with toolpool.connect(served.socket) as client:
        assert client.tools() == ["bc", "echo"]
        assert repr(client).startswith("<toolpool.Client")
        with client.pool("bc") as bc:
            assert bc.request("2^64") == "18446744073709551616"
        pool = client.pool("echo")
        assert isinstance(pool, toolpool.Pool) and len(pool) == 2

        # Requests: plain, sticky, with options, batches (each reply its own).
        assert pool.request("hello", T) == "hello"
        a = pool.request_sticky("k", "one", T)
        b = pool.request_sticky("k", "two", T)
        assert (a.text, b.text, a.instance) == ("one", "two", b.instance)
        assert a.instance in (0, 1) and a.served_by == "pool"
        assert pool.request("three", T, retry={"max": 1, "on": ["dead"]}) == "three"
        assert pool.map([f"m{i}" for i in range(50)], T) == [f"m{i}" for i in range(50)]

        # Lines: to one instance, routed, stderr.
        pool.send(1, "line-one")
        assert pool.read_line(1, T) == "line-one"
        i = pool.send_routed("routed")
        assert pool.read_any(T) == (i, "routed")
        pool.send(0, b"bytes\xffkept")
        assert pool.read_line_bytes(0, T) == b"bytes\xffkept"
        pool.send(0, "stderr:1")
        assert pool.read_stderr_line(0, T) != ""
        assert pool.read_line(0, T) == "stderr done"

        # A lease: exclusive use, its own requests and lines.
        with pool.lease(T) as lease:
            assert lease.request("leased", T) == "leased"
            lease.send("raw")
            assert lease.read_line(T) == "raw"
            assert pool.status()["instances"][lease.index]["leased"] is True
        wait_for(lambda: not any(i["leased"] for i in pool.status()["instances"]), T, "the lease to end")

        # Status, health, metrics, Prometheus.
        st = pool.status()
        assert st["tool"] == "echo" and st["service_error"] is None
        assert all(parent_of(p) == served.service_pid for p in pids(pool))
        assert pool.health()["alive"] == 2
        assert pool.metrics()["requests_ok"] >= 54
        families = {f.name: f for f in text_string_to_metric_families(pool.metrics_prometheus())}
        ok = sum(s.value for s in families["toolpool_requests"].samples if s.labels.get("outcome") == "ok")
        assert ok >= 54, families["toolpool_requests"].samples

        # Restart, resize, reload.
        before = pids(pool)[0]
        pool.restart(0)
        assert pids(pool)[0] not in (0, before)
        pool.resize(3)
        assert len(pool) == 3 and pool.status()["max_instances"] == 3
        pool.reload(tool_spec(3, "--prefix", "P:"))
        assert pool.request("x", T) == "P:x"

        # A cancel token stops a call inside the service within milliseconds.
        token = toolpool.CancelToken()
        threading.Timer(0.2, token.cancel).start()
        t0 = time.monotonic()
        with pytest.raises(toolpool.Cancelled):
            pool.request("delay:10000:never", 20, cancel=token)
        assert time.monotonic() - t0 < 3
        assert pool.request("after", T) == "P:after"

        # Closing this handle ends it only: the service's pool serves on.
        pool.close()
        with pytest.raises(toolpool.ShutDown):
            pool.request("x")
        with client.pool("echo") as again:
            assert again.request("still", T) == "P:still"
    with pytest.raises(toolpool.ShutDown):
        client.tools()


def test_errors_come_back_as_a_local_pool_raises_them(served: Served) -> None:
    with toolpool.connect(served.socket) as client, client.pool("echo") as pool:
        with pytest.raises(toolpool.NotFound) as e:
            client.pool("nope")
        assert "nope" in str(e.value) and "bc, echo" in str(e.value)
        assert e.value.code == 2 and isinstance(e.value, LookupError)
        with pytest.raises(toolpool.IndexOutOfRange):
            pool.read_line(7, 1)
        with pytest.raises(toolpool.Timeout):
            pool.read_line(0, 0.05)
        with pytest.raises(toolpool.InvalidArgument):
            pool.send(0, "two\nlines")
        # (A timed-out request recycles its instance: lines framing.)
        t0 = time.monotonic()
        with pytest.raises(toolpool.Timeout):
            pool.request("delay:3000:late", 0.2)
        assert time.monotonic() - t0 < 2
    missing = served.dir / "nothing.sock"
    with pytest.raises(toolpool.ServiceError) as se:
        toolpool.connect(missing)
    assert se.value.code == 18 and se.value.status == "TOOLPOOL_SERVICE"
    assert str(missing) in str(se.value) and "toolpool serve" in str(se.value)


def test_every_method_through_aio_connect(served: Served) -> None:
    async def main() -> None:
        async with aio.connect(served.socket) as client:
            assert await client.tools() == ["bc", "echo"]
            with pytest.raises(toolpool.NotFound):
                await client.pool("nope")
            bc = await client.pool("bc")
            assert await bc.request("6*7") == "42"
            await bc.aclose()
            async with client.pool("echo") as pool:
                assert len(pool) == 2
                replies = await asyncio.gather(*(pool.request(f"r{i}", T) for i in range(40)))
                assert replies == [f"r{i}" for i in range(40)]
                a = await pool.request_sticky("k", "one", T)
                b = await pool.request_sticky("k", "two", T)
                assert (a.text, b.text, a.instance) == ("one", "two", b.instance)
                assert await pool.map(["x", "y"], T) == ["x", "y"]
                async with pool.lease(T) as lease:
                    assert await lease.request("leased", T) == "leased"
                    await lease.send("raw")
                    assert await lease.read_line(T) == "raw"
                await pool.send(1, "line")
                assert await pool.read_line(1, T) == "line"
                await pool.send(0, "any")
                assert await pool.read_any(T) == (0, "any")
                assert (await pool.status())["service_error"] is None
                assert (await pool.health())["alive"] == 2
                assert (await pool.metrics())["requests_ok"] >= 44
                assert "toolpool_requests_total" in await pool.metrics_prometheus()
                before = (await pool.status())["instances"][1]["pid"]
                await pool.restart(1)
                assert (await pool.status())["instances"][1]["pid"] != before
                await pool.resize(3)
                assert len(pool) == 3
                await pool.reload(tool_spec(3, "--prefix", "A:"))
                assert await pool.request("x", T) == "A:x"
                # Cancelling the task cancels the call inside the service.
                task = asyncio.ensure_future(pool.request("delay:10000:never", 20))
                await asyncio.sleep(0.2)
                t0 = time.monotonic()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert time.monotonic() - t0 < 3
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(pool.map(["delay:10000:never"], 20), 0.2)
                assert await pool.request("after", T) == "A:after"
                with pytest.raises(toolpool.Timeout):
                    await pool.request("delay:3000:late", 0.2)
        with pytest.raises(toolpool.ShutDown):
            await client.tools()
        with pytest.raises(toolpool.ServiceError):
            await aio.connect(served.dir / "nothing.sock")

    asyncio.run(main())


def test_closing_a_service_pool_wakes_its_waiting_callers(served: Served) -> None:
    with toolpool.connect(served.socket) as client:
        pool = client.pool("echo")
        outcomes: List[BaseException] = []

        def wait(call) -> None:
            try:
                call()
            except BaseException as e:  # noqa: B902  (asserted below)
                outcomes.append(e)

        callers = [
            threading.Thread(target=wait, args=(lambda: pool.read_line(0, 20),)),
            threading.Thread(target=wait, args=(lambda: pool.request("delay:20000:never", 20),)),
        ]
        for c in callers:
            c.start()
        with client.pool("echo") as other:
            wait_for(lambda: sum(i["in_flight"] for i in other.status()["instances"]) == 1, T, "the request")
            t0 = time.monotonic()
            pool.close()
            took = time.monotonic() - t0
            for c in callers:
                c.join(5)
            assert took < 2, took
            assert len(outcomes) == 2 and all(isinstance(e, toolpool.ShutDown) for e in outcomes), outcomes
            # The service cancelled the abandoned request; its pool serves the next one.
            wait_for(lambda: sum(i["in_flight"] for i in other.status()["instances"]) == 0, T, "the cancel")
            assert other.request("next", T) == "next"


def test_toolpool_server_makes_pool_by_id_the_services(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: this process's own limit (no client alive, TOOLPOOL_SERVER unset).
    assert toolpool.limit_status()["max_allowed"] != 16
    monkeypatch.setenv("TOOLPOOL_SERVER", f"unix:{served.socket}")
    # The registry is the service's: a path that does not exist is not read.
    with toolpool.Pool("echo", registry=served.dir / "no-such-registry.json") as pool:
        with toolpool.connect(served.socket) as other, other.pool("echo") as seen:
            assert pids(pool) == pids(seen)
        assert all(parent_of(p) == served.service_pid for p in pids(pool))
        assert pool.request("through the service", T) == "through the service"
        # The limit calls go to the service too.
        assert toolpool.limit_status()["max_allowed"] == 16
        assert set(pids(pool)) <= set(toolpool.limit_status()["active_pids"])
    with pytest.raises(toolpool.NotFound):
        toolpool.Pool("nope")
    monkeypatch.setenv("TOOLPOOL_SERVER", "tcp:1.2.3.4")
    with pytest.raises(toolpool.ConfigError, match="unix:PATH"):
        toolpool.Pool("echo")
    monkeypatch.delenv("TOOLPOOL_SERVER")
    gc.collect()
    assert toolpool.limit_status()["max_allowed"] != 16


def test_a_killed_service_fails_the_call_and_a_new_one_serves_the_same_client(served: Served) -> None:
    client = toolpool.connect(served.socket)
    pool = client.pool("echo")
    assert pool.request("before", T) == "before"
    outcome: List[BaseException] = []

    def slow() -> None:
        try:
            pool.request("delay:20000:never", 30)
        except BaseException as e:  # noqa: B902  (the outcome is asserted below)
            outcome.append(e)

    caller = threading.Thread(target=slow)
    caller.start()
    wait_for(lambda: any(i["in_flight"] for i in pool.status()["instances"]), T, "the call to reach an instance")
    t0 = time.monotonic()
    served.kill_service()
    caller.join(10)
    assert not caller.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], toolpool.ServiceError), outcome
    assert "went away" in str(outcome[0]), outcome[0]
    assert time.monotonic() - t0 < 5
    # No service: every call says so; status says why instead of raising.
    with pytest.raises(toolpool.ServiceError):
        pool.request("nobody", T)
    st = pool.status()
    assert st["service_error"] and st["instances"] == []
    # A new service on the same socket: the same client and pool work again.
    served.start()
    assert pool.request("again", T) == "again"
    assert client.tools() == ["bc", "echo"]
    pool.close()
    client.close()


def test_eight_hosts_share_the_service_limit_of_four() -> None:
    """4 Python and 4 Go processes hammer 4 on-demand tools (8 instances in all) of a
    service limited to 4 processes: its children never exceed 4, and every request is
    answered with its own reply (a start waits for the limit instead of failing)."""
    tools = {
        f"t{k}": tool_spec(
            2, "--prefix", f"t{k}:", min_instances=0, idle_timeout_ms=50, startup={"timeout_ms": 60000}
        )
        for k in range(4)
    }
    s = Served(tools, "--max-processes", "4")
    go_host = s.dir / "servicehost"
    env = dict(os.environ, PYTHONPATH=str(PY_DIR))
    env.setdefault("PKG_CONFIG_PATH", str(RELEASE.parent / "pkgconfig"))
    subprocess.run(
        ["go", "build", "-o", str(go_host), "./internal/servicehost"],
        cwd=REPO / "bindings" / "go", env=env, check=True, timeout=300,
    )
    service = s.service_pid
    seen: List[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.append(live_children(service))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    names = ",".join(tools)
    hosts = [
        subprocess.Popen([sys.executable, str(APPS / "hammer.py"), str(s.socket), f"py{k}", names, "4"],
                         env=env, stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ] + [
        subprocess.Popen([str(go_host), str(s.socket), f"go{k}", names, "4"], env=env, stdout=subprocess.PIPE, text=True)
        for k in range(4)
    ]
    try:
        outs = [h.communicate(timeout=240)[0] for h in hosts]
    finally:
        stop.set()
        sampler.join()
        for h in hosts:
            if h.poll() is None:
                h.kill()
        s.stop()
    assert [h.returncode for h in hosts] == [0] * 8, outs
    reports = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    for r in reports:
        assert r["wrong"] == [], r  # a reply never reaches the wrong caller
        assert r["errors"] == [], r  # a start waits for the limit (startup.timeout_ms 60 s)
        assert r["ok"] >= 10, r
    total = sum(r["ok"] for r in reports)
    print(f"8 hosts: {total} requests, {len(seen)} samples, most children seen {max(seen)}")
    # 8 hosts on 4 tools of 2 instances each want 8 processes: the limit is reached, and
    # never passed.
    assert max(seen) == 4, max(seen)


def test_gunicorn_workers_are_clients_of_one_service() -> None:
    metrics = f"127.0.0.1:{free_port()}"
    s = Served({"bc": {"command": ["bc", "-q"], "count": 2}}, "--metrics", metrics)
    env = dict(os.environ, PYTHONPATH=str(PY_DIR), TOOLPOOL_TEST_SOCKET=str(s.socket))
    gunicorn = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", "4", "--bind", "127.0.0.1:0",
         "--chdir", str(APPS), "--log-level", "info", "wsgi_bc:app"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert gunicorn.stderr is not None
        port = None
        for line in gunicorn.stderr:
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "gunicorn did not say where it listens"
        threading.Thread(target=gunicorn.stderr.read, daemon=True).start()  # keep draining it
        wait_for(lambda: len(children(gunicorn.pid)) == 4, 30, "4 gunicorn workers")
        workers = set(children(gunicorn.pid))

        def get(n: int) -> Dict[str, Any]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?n={n}", timeout=30) as r:
                body: Dict[str, Any] = json.loads(r.read())
                return body

        numbers = list(range(1000, 1400))
        with ThreadPoolExecutor(16) as ex:
            answers = list(ex.map(get, numbers))
        for n, a in zip(numbers, answers):
            assert a == {"pid": a["pid"], "n": n, "reply": str(2 * n)}, a
        served_by = {a["pid"] for a in answers}
        assert served_by <= workers and len(served_by) >= 2, (served_by, workers)

        # The service sees the workers that answered as connected clients.
        with urllib.request.urlopen(f"http://{metrics}/status", timeout=10) as r:
            status = json.loads(r.read())
        clients = {c["pid"] for c in status["clients"]}
        assert served_by <= clients, (served_by, clients)
        assert status["pools"]["bc"]["instances"][0]["requests"] + status["pools"]["bc"]["instances"][1]["requests"] >= 400
        print(f"gunicorn: {len(numbers)} requests by {len(served_by)} workers; service clients {sorted(clients)}")
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
            gunicorn.wait()
        s.stop()
