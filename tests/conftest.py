"""Shared fixtures: a real etcd on loopback, and the multi-node testbed.

Both need the private network namespace of `tests/private-netns` (as `make test` provides); a test
that asks for them elsewhere fails with a message saying so rather than touching this machine's own
network.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.testbed import Testbed, in_private_netns, wait_for


def _require_private_netns() -> None:
    if not in_private_netns():
        pytest.fail(
            "this test needs the private network namespace: run it with "
            "`tests/private-netns .venv/bin/python -m pytest` (as `make test` does)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    """A real etcd on loopback ports of its own, in a temporary data directory; `stop()` then
    `start()` keeps the data (an etcd restart)."""

    def __init__(self) -> None:
        self.client_port, self.peer_port = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.workdir = tempfile.mkdtemp(prefix="fpy-etcd-")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> EtcdServer:
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = ["--name", "t", "--data-dir", f"{self.workdir}/data",
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"t={peer}", "--log-level", "warn"]  # fmt: skip
        with open(f"{self.workdir}/etcd.log", "ab") as log:
            self.proc = subprocess.Popen(["etcd", *args], stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=1):
                return True

        wait_for("etcd to listen", up, timeout=30)
        return self

    def stop(self) -> None:
        """Stop etcd (SIGTERM, by PID) and wait for it."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
            self.proc = None

    def remove(self) -> None:
        """Stop etcd and delete its data."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """A real etcd listening on loopback for the whole session; yields its client URL."""
    _require_private_netns()
    server = EtcdServer()
    try:
        yield server.start().url
    finally:
        server.remove()


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """A real etcd of the test's own, for tests that restart it or change its settings."""
    _require_private_netns()
    server = EtcdServer()
    try:
        yield server.start()
    finally:
        server.remove()


@pytest.fixture
def etcd_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to the test, so tests sharing the session etcd never meet."""
    return f"/fpy-test/{os.getpid()}/{request.node.name}"


@pytest.fixture
def kube_testbed() -> Iterator[Testbed]:
    """An empty testbed in Kubernetes mode: the API emulator instead of etcd, no nodes yet."""
    _require_private_netns()
    tb = Testbed()
    try:
        tb.start_kubeapi()
        yield tb
    finally:
        tb.cleanup()


@pytest.fixture
def testbed() -> Iterator[Testbed]:
    """An empty testbed (underlay bridge, etcd with the default network config, no nodes yet)."""
    _require_private_netns()
    tb = Testbed()
    try:
        tb.start_etcd()
        tb.put_config()
        yield tb
    finally:
        tb.cleanup()
