"""The HTTP server of `--healthz-ip`/`--healthz-port`: the probes a DaemonSet points at, and
/metrics.

flanneld's endpoints and healthy answers (flannel `main.go` health handlers): `GET /healthz` is
liveness, 200 "flanneld is running"; `GET /readyz` is readiness, 200 "flanneld is ready". Unlike
flanneld's always-200 liveness, both answer 503 with a one-line reason when the daemon is not
well (`flanneld_py.observe` decides). Other paths get 404. It runs in its own threads, so a busy
daemon still answers (slowly, if Python is busy: keep probe timeouts generous).
"""

from __future__ import annotations

import logging
import socketserver
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the address (socket.getfqdn), which
        blocks for seconds on a node without DNS."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes would flood the log
        pass


Check = Callable[[], tuple[bool, str]]


class HealthServer:
    """Serves /healthz and /readyz on `ip:port` in a background thread.

    `live` and `ready` are called per request and return (ok, reason when not). `extra` maps
    further paths to WSGI apps (e.g. "/metrics"). Raises OSError when the port cannot be bound.
    """

    def __init__(
        self,
        ip: str,
        port: int,
        ready: Check,
        live: Check | None = None,
        extra: dict[str, Callable[..., Iterable[bytes]]] | None = None,
    ) -> None:
        self.ready = ready
        self.live = live or (lambda: (True, ""))
        self.extra = extra or {}
        self.httpd = make_server(ip, port, self._app, server_class=_Server,
                                 handler_class=_QuietHandler)  # fmt: skip
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="health",
                                       daemon=True)  # fmt: skip

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.httpd.server_address[1])

    def start(self) -> HealthServer:
        self.thread.start()
        log.info("health server listening on %s:%d", *self.httpd.server_address[:2])
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            ok, why = self.live()
            if ok:
                return _text(start_response, "200 OK", "flanneld is running")
            return _text(start_response, "503 Service Unavailable", f"unhealthy: {why}")
        if path == "/readyz":
            ok, why = self.ready()
            if ok:
                return _text(start_response, "200 OK", "flanneld is ready")
            return _text(start_response, "503 Service Unavailable", f"flanneld is not ready: {why}")
        app = self.extra.get(path)
        if app is not None:
            return app(environ, start_response)
        return _text(start_response, "404 Not Found", "404 page not found")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    data = (body + "\n").encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(data)))])  # fmt: skip
    return [data]
