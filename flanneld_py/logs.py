"""Log output: human-readable lines by default, one JSON object per line with `--log-format=json`.

JSON lines carry `time` (RFC 3339, UTC), `level`, `logger`, `msg`, and `error` when an exception
is attached and `stack` when `--log_backtrace_at` asked for one, for log pipelines that parse
them without regular expressions.

klog's `--vmodule` and `--log_backtrace_at` (flags flanneld takes from klog) keep their meaning with
Python source files in place of Go ones: `--vmodule=reconcile=1,etcd*=1` adds the debug lines of
`reconcile.py` and of every `etcd*.py`, `--log_backtrace_at=daemon.py:120` attaches the call stack
to whatever is logged by the logging call that starts on that line (Python attributes a call
spread over several lines to its first line).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import sys
import traceback
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
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def parse_vmodule(value: str) -> list[tuple[str, int]]:
    """`--vmodule` text, comma-separated `pattern=N` (klog's syntax), as [(pattern, N)]; a
    pattern is a glob matched against a source file's name without `.py`.

    Raises ValueError naming the malformed part.
    """
    rules: list[tuple[str, int]] = []
    for part in filter(None, value.split(",")):
        pattern, sep, level = part.partition("=")
        if not sep or not pattern or not level.isdigit():
            raise ValueError(f"--vmodule: {part!r} is not pattern=N (e.g. reconcile=1,etcd*=2)")
        rules.append((pattern.removesuffix(".py"), int(level)))
    return rules


def parse_backtrace_at(value: str) -> tuple[str, int] | None:
    """`--log_backtrace_at` text `file.py:line` as (file name, line); None when empty.

    Raises ValueError when it is not a file name and a line number.
    """
    if not value:
        return None
    name, sep, line = value.rpartition(":")
    if not sep or not name or "/" in name or not line.isdigit():
        raise ValueError(f"--log_backtrace_at={value!r}: expected file.py:line, e.g. daemon.py:120")
    return name, int(line)


class VerbosityFilter(logging.Filter):
    """Lets a debug record through when `-v` > 0 or a `--vmodule` rule with N > 0 matches the
    name of the file that logged it; records at INFO and above always pass."""

    def __init__(self, verbosity: int, rules: list[tuple[str, int]]) -> None:
        super().__init__()
        self.verbosity = verbosity
        self.rules = rules

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO or self.verbosity > 0:
            return True
        for pattern, level in self.rules:
            if fnmatch.fnmatchcase(record.module, pattern):
                return level > 0
        return False


class BacktraceFilter(logging.Filter):
    """Attaches the call stack (up to the logging call) to records logged from one file:line."""

    def __init__(self, filename: str, lineno: int) -> None:
        super().__init__()
        self.filename = filename
        self.lineno = lineno

    def filter(self, record: logging.LogRecord) -> bool:
        if record.filename == self.filename and record.lineno == self.lineno:
            frames = list(traceback.extract_stack())
            for i in range(len(frames) - 1, -1, -1):
                if frames[i].filename == record.pathname and frames[i].lineno == record.lineno:
                    del frames[i + 1 :]
                    break
            record.stack_info = "Stack (most recent call last):\n" + "".join(
                traceback.format_list(frames)
            ).rstrip("\n")
        return True


def setup_logging(
    log_format: str, verbosity: int, vmodule: str = "", backtrace_at: str = ""
) -> None:
    """Log to stderr in `log_format` ("text" or "json"); `verbosity` > 0 adds flanneld-py's debug
    lines, 3 and above also pyroute2's netlink message dumps; `vmodule` and `backtrace_at` are
    klog's `--vmodule` and `--log_backtrace_at` (see the module docstring).

    Raises ValueError for another format or a malformed `vmodule`/`backtrace_at`.
    """
    if log_format not in ("text", "json"):
        raise ValueError(f"--log-format={log_format!r}: use text or json")
    rules = parse_vmodule(vmodule)
    backtrace = parse_backtrace_at(backtrace_at)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handler.addFilter(VerbosityFilter(verbosity, rules))
    if backtrace is not None:
        handler.addFilter(BacktraceFilter(*backtrace))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    debug = verbosity > 0 or any(level > 0 for _, level in rules)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # pyroute2 logs every netlink message at debug level: only from -v=3 on
    logging.getLogger("pyroute2").setLevel(logging.DEBUG if verbosity >= 3 else logging.INFO)
