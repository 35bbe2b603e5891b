"""Log formats: the JSON lines a log pipeline parses."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

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


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_vmodule_adds_debug_lines_of_matching_files_only(
    restore_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    # records are attributed to the file that logs them: this test file, "test_logs"
    setup_logging("text", 0, vmodule="test_l*=1")
    logging.getLogger("anything").debug("wanted debug line")
    setup_logging("text", 0, vmodule="reconcile=1,test_logs=0")
    logging.getLogger("anything").debug("unwanted debug line")
    logging.getLogger("anything").info("info line")
    err = capsys.readouterr().err
    assert "wanted debug line" in err
    assert "unwanted debug line" not in err
    assert "info line" in err


def test_without_verbosity_debug_lines_are_dropped(
    restore_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("text", 0)
    logging.getLogger("x").debug("hidden")
    setup_logging("text", 1)
    logging.getLogger("x").debug("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "shown" in err


def test_backtrace_at_attaches_the_stack_of_that_line_only(
    restore_root_logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    def log_twice() -> int:
        logging.getLogger("x").warning("first")
        line = sys._getframe().f_lineno - 1
        logging.getLogger("x").warning("second")
        return line

    setup_logging("json", 0)
    line = log_twice()
    capsys.readouterr()
    setup_logging("json", 0, backtrace_at=f"test_logs.py:{line}")
    log_twice()
    first, second = (json.loads(x) for x in capsys.readouterr().err.splitlines())
    assert "log_twice" in first["stack"] and "test_backtrace_at" in first["stack"]
    assert "logging/__init__" not in first["stack"]
    assert "stack" not in second


@pytest.mark.parametrize(
    ("vmodule", "backtrace_at", "message"),
    [
        ("reconcile", "", "--vmodule: 'reconcile' is not pattern=N"),
        ("etcd=x", "", "--vmodule: 'etcd=x' is not pattern=N"),
        ("", "daemon.py", "--log_backtrace_at='daemon.py': expected file.py:line"),
        ("", "a/daemon.py:3", "expected file.py:line"),
    ],
)
def test_malformed_klog_flags_are_refused(vmodule: str, backtrace_at: str, message: str) -> None:
    with pytest.raises(ValueError) as err:
        setup_logging("text", 0, vmodule, backtrace_at)
    assert message in str(err.value)
