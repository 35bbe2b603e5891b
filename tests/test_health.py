"""The health server: flanneld's /healthz and /readyz answers, on a loopback port."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from flanneld_py.health import HealthServer


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def test_healthz_readyz_and_404() -> None:
    ready = threading.Event()
    alive = threading.Event()
    alive.set()
    server = HealthServer(
        "127.0.0.1",
        0,
        lambda: (ready.is_set(), "subnet.env is not written yet"),
        lambda: (alive.is_set(), "the watch worker has stopped"),
    ).start()
    try:
        assert get(server.port, "/healthz") == (200, "flanneld is running\n")
        assert get(server.port, "/readyz") == (
            503,
            "flanneld is not ready: subnet.env is not written yet\n",
        )
        ready.set()
        assert get(server.port, "/readyz") == (200, "flanneld is ready\n")
        alive.clear()
        assert get(server.port, "/healthz") == (503, "unhealthy: the watch worker has stopped\n")
        assert get(server.port, "/metrics")[0] == 404
    finally:
        server.stop()


def test_extra_paths_are_served() -> None:
    def app(environ: object, start_response: object) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
        return [b"x 1\n"]

    server = HealthServer("127.0.0.1", 0, lambda: (True, ""), extra={"/metrics": app}).start()
    try:
        assert get(server.port, "/metrics") == (200, "x 1\n")
    finally:
        server.stop()
