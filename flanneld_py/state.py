"""The daemon's state file: what `flanneld-py status` cannot read from the datastore or the kernel.

Written next to subnet.env as `flanneld-py-state.json` (atomically, like subnet.env), read by the
status command, so that an operator sees the daemon's last error and its last sync even when the
metrics endpoint is not reachable. Format (JSON object, times in Unix seconds):
`{"pid": 123, "started": 1764400000.0, "updated": ..., "ready": true, "peers": 2,
"last_full_sync": ..., "last_error": {"time": ..., "message": "..."} or null}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from typing import Any

STATE_FILE = "flanneld-py-state.json"


def state_path(subnet_file: str) -> str:
    """The state file that belongs to `subnet_file` (same directory)."""
    return os.path.join(os.path.dirname(os.path.abspath(subnet_file)), STATE_FILE)


def read_state(subnet_file: str) -> dict[str, Any] | None:
    """The daemon's last written state, or None when there is none (or it is unreadable)."""
    try:
        with open(state_path(subnet_file)) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class StateFile:
    """Keeps the state file current: `update(**fields)` merges fields; the file is rewritten at
    once, or, within `min_interval` seconds of the last write, once that interval is over (so a
    burst of updates costs one write a second and the last one is never lost). Errors writing it
    are ignored (it is a diagnostic aid, never a reason to stop)."""

    def __init__(self, subnet_file: str, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self._last_write = 0.0
        self._timer: threading.Timer | None = None
        self.path = state_path(subnet_file)
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "started": time.time(),
            "ready": False,
            "peers": 0,
            "last_full_sync": None,
            "last_error": None,
        }
        self._lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        """Merge `fields` into the state and write the file (now, or within `min_interval`)."""
        with self._lock:
            self.data.update(fields)
            wait = self._last_write + self.min_interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    self._timer = threading.Timer(wait, self._flush)
                    self._timer.daemon = True
                    self._timer.start()
                return
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            self._timer = None
            self._last_write = time.monotonic()
            self.data["updated"] = time.time()
            text = json.dumps(self.data)
        directory = os.path.dirname(self.path)
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".flanneld-py-state.", dir=directory)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path)
        except OSError:
            with contextlib.suppress(Exception):
                os.unlink(tmp)

    def error(self, message: str) -> None:
        """Record the daemon's latest error."""
        self.update(last_error={"time": time.time(), "message": message})


class ErrorRecorder(logging.Handler):
    """A logging handler that records every WARNING (and worse) line in the state file: the
    problems an operator asks about (etcd unreachable, a peer the kernel refuses...)."""

    def __init__(self, state: StateFile) -> None:
        super().__init__(level=logging.WARNING)
        self.state = state

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.state.error(record.getMessage())
