"""Log output: human-readable lines by default, one JSON object per line with `--log-format=json`.

JSON lines carry `time` (RFC 3339, UTC), `level`, `logger`, `msg`, and `error` when an exception
is attached, for log pipelines that parse them without regular expressions.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname).1s %(name)s] %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (no newlines inside)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_format: str, verbosity: int) -> None:
    """Log to stderr in `log_format` ("text" or "json"); `verbosity` > 0 adds flanneld-py's debug
    lines, 3 and above also pyroute2's netlink message dumps.

    Raises ValueError for another format.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"--log-format={log_format!r}: use text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity > 0 else logging.INFO)
    # pyroute2 logs every netlink message at debug level: only from -v=3 on
    logging.getLogger("pyroute2").setLevel(logging.DEBUG if verbosity >= 3 else logging.INFO)
