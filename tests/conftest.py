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


@pytest.fixture(scope="session")
def etcd_url() -> Iterator[str]:
    """A real etcd listening on loopback for the whole session; yields its client URL."""
    _require_private_netns()
    client_port, peer_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    workdir = tempfile.mkdtemp(prefix="fpy-etcd-")
    args = ["--name", "t", "--data-dir", f"{workdir}/data", "--listen-client-urls", url,
            "--advertise-client-urls", url, "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer, "--initial-cluster", f"t={peer}",
            "--log-level", "warn"]  # fmt: skip
    with open(f"{workdir}/etcd.log", "wb") as log:
        proc = subprocess.Popen(["etcd", *args], stdout=log, stderr=subprocess.STDOUT)
    try:

        def up() -> bool:
            with socket.create_connection(("127.0.0.1", client_port), timeout=1):
                return True

        wait_for("etcd to listen", up, timeout=30)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(workdir, ignore_errors=True)


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
