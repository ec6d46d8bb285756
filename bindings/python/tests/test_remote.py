"""A pool over ssh from Python: a real OpenSSH server on 127.0.0.1, started
here on a free port with throwaway keys (ssh-keygen) and a known_hosts this test writes,
so host key checking stays on. sshd is killed and its directory removed even when a test
fails. `make test` installs openssh-server when /usr/sbin/sshd is missing."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import pytest

import toolpool

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "toolpool-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture()
def ssh_options() -> Iterator[List[str]]:
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} is missing: apt-get install -y openssh-server (make test does)")
    d = Path(tempfile.mkdtemp(prefix="toolpool-py-sshd-"))
    proc = None
    try:
        os.makedirs("/run/sshd", exist_ok=True)
        _keygen(d / "host_key")
        _keygen(d / "user_key")
        shutil.copy(d / "user_key.pub", d / "authorized_keys")
        kind, key = (d / "host_key.pub").read_text().split()[:2]
        port = _free_port()
        (d / "known_hosts").write_text(f"[127.0.0.1]:{port},[localhost]:{port} {kind} {key}\n")
        # SetEnv SHLVL=1: see tests/common/sshd.rs (this machine's root ~/.bashrc is slow)
        (d / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n"
            f"AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nLogLevel ERROR\nSetEnv SHLVL=1\n"
        )
        proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(d / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("sshd did not start on 127.0.0.1")
                time.sleep(0.02)
        yield [
            "-F", "/dev/null", "-p", str(port), "-i", str(d / "user_key"),
            "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={d}/known_hosts",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes",
        ]
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def test_ssh_pool_serves_and_status_shows_hosts(testtool: str, ssh_options: List[str]) -> None:
    prefix = "it's a \"quoted\" $HOME; `x` "
    spec = {
        "command": [testtool, "--prefix", prefix, "--ready", "READY"],
        "startup": {"ready_line": "READY", "timeout_ms": 20000},
        "remote": {
            "launcher": "ssh",
            "hosts": ["127.0.0.1", "localhost"],
            "options": ssh_options,
            "per_host": 2,
        },
    }
    with toolpool.Pool(spec) as pool:
        assert len(pool) == 4
        for i in range(6):
            assert pool.request(f"q{i}", timeout=10.0) == f"{prefix}q{i}"
        st = pool.status()
        assert [i["host"] for i in st["instances"]] == ["127.0.0.1", "localhost"] * 2
        assert [(h["host"], h["instances"], h["ready"]) for h in st["hosts"]] == [
            ("127.0.0.1", 2, 2),
            ("localhost", 2, 2),
        ]
        assert all(i["host_error"] is None for i in st["instances"])
        # the Slurm step of an srun pool's instance; none over ssh
        assert all(i["step_id"] is None for i in st["instances"])


def test_remote_spec_errors_name_the_key() -> None:
    with pytest.raises(toolpool.ConfigError, match=r"remote\.hosts"):
        toolpool.Pool({"command": ["cat"], "remote": {"launcher": "ssh", "hosts": []}})
    with pytest.raises(toolpool.ConfigError, match=r"\{host\}"):
        toolpool.Pool({"command": ["cat"], "remote": {"launcher": ["rsh"], "hosts": ["a"]}})
