"""Log formats: the JSON lines a log pipeline parses."""

from __future__ import annotations

import json
import logging

import pytest

from flanneld_py.logs import JsonFormatter, setup_logging


def test_json_lines_carry_time_level_logger_and_message() -> None:
    record = logging.LogRecord("flanneld", logging.WARNING, __file__, 1, "peer %s: %s",
                               ("added", "10.244.2.0/24"), None)  # fmt: skip
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "warning"
    assert entry["logger"] == "flanneld"
    assert entry["msg"] == "peer added: 10.244.2.0/24"
    assert entry["time"].endswith("+00:00") and "T" in entry["time"]


def test_exceptions_are_one_json_field() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert "RuntimeError: boom" in json.loads(line)["error"]


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="--log-format"):
        setup_logging("yaml", 0)
