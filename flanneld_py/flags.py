"""flanneld's command line: the same flag names, defaults and syntax as Go flanneld.

Existing DaemonSet manifests and systemd units pass flags the way Go's `flag` package reads them,
so this parser follows its rules: `-flag` and `--flag` are the same; values come as `--flag value`
or `--flag=value`; a boolean is set by `--flag` alone or `--flag=true|false` (Go's ParseBool
spellings); parsing stops at `--` or at the first argument that is not a flag. Flags not given on
the command line are then read from `FLANNELD_<FLAG>` environment variables (name upper-cased,
`-` -> `_`) when those are non-empty (flannel's `main.go`, coreos/pkg flagutil).
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class FlagError(ValueError):
    """A command line or FLANNELD_* variable that cannot be parsed; the message names the flag."""


class HelpRequested(Exception):
    """`-h`, `-help` or `--help` was given."""


@dataclass(frozen=True)
class Flag:
    """One flag: its name (without dashes), kind ("str", "bool", "int", "float", "list"),
    default, and help text. `implemented` is False for flags accepted only for compatibility;
    `from_env` is False for flags flanneld reads before its environment (only --version)."""

    name: str
    kind: str
    default: Any
    help: str
    implemented: bool = True
    from_env: bool = True

    @property
    def env(self) -> str:
        """The environment variable that may set this flag."""
        return "FLANNELD_" + self.name.upper().replace("-", "_")

    @property
    def attr(self) -> str:
        """The option's Python attribute name."""
        return self.name.replace("-", "_")


def parse_bool(name: str, text: str) -> bool:
    """Go's strconv.ParseBool. Raises FlagError naming the flag."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FlagError(f"invalid boolean value {text!r} for flag -{name}: use true or false")


def _convert(flag: Flag, text: str) -> Any:
    if flag.kind == "bool":
        return parse_bool(flag.name, text)
    if flag.kind == "int":
        try:
            return int(text, 0)
        except ValueError:
            raise FlagError(
                f"invalid value {text!r} for flag -{flag.name}: must be a whole number"
            ) from None
    if flag.kind == "float":
        try:
            return float(text)
        except ValueError:
            raise FlagError(
                f"invalid value {text!r} for flag -{flag.name}: must be a number"
            ) from None
    return text


def parse_flags(
    flags: Sequence[Flag], argv: Sequence[str], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """Parse `argv` (without the program name) against `flags`, then fill from `environ`.

    Returns ({attribute name: value} for every flag, the remaining positional arguments) and
    raises FlagError for an unknown flag, a missing or malformed value; HelpRequested for -h.
    """
    by_name = {f.name: f for f in flags}
    given: dict[str, Any] = {}
    args = list(argv)
    while args:
        arg = args[0]
        if len(arg) < 2 or arg[0] != "-":
            break
        args.pop(0)
        if arg == "--":
            break
        name = arg[2:] if arg.startswith("--") else arg[1:]
        if not name or name[0] in "-=":
            raise FlagError(f"bad flag syntax: {arg}")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in ("h", "help") and name not in by_name:
            raise HelpRequested()
        flag = by_name.get(name)
        if flag is None:
            raise FlagError(f"flag provided but not defined: -{name} (see --help)")
        if flag.kind == "bool":
            parsed = True if value is None else parse_bool(name, value)
        else:
            if value is None:
                if not args:
                    raise FlagError(f"flag needs an argument: -{name}")
                value = args.pop(0)
            parsed = _convert(flag, value)
        if flag.kind == "list":
            given.setdefault(flag.attr, []).append(parsed)
        else:
            given[flag.attr] = parsed
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for flag in flags:
        if flag.attr in given:
            out[flag.attr] = given[flag.attr]
        elif flag.from_env and env.get(flag.env):
            text = env[flag.env]
            try:
                converted = _convert(flag, text)
            except FlagError as err:
                raise FlagError(f"{flag.env}: {err}") from None
            out[flag.attr] = [converted] if flag.kind == "list" else converted
        else:
            out[flag.attr] = list(flag.default) if flag.kind == "list" else flag.default
    return out, args


def usage(prog: str, flags: Sequence[Flag], intro: str) -> str:
    """The --help text: one entry per flag with its default and environment variable."""
    lines = [f"Usage: {prog} [flags]", "", textwrap.fill(intro, 78), "", "Flags:"]
    for f in flags:
        kind = {"bool": "", "list": " value (repeatable)"}.get(
            f.kind, f" {f.kind}" if f.kind != "str" else " string"
        )
        default = "" if f.default in ("", None, [], False) else f" (default {f.default!r})"
        lines.append(f"  --{f.name}{kind}{default}")
        text = f.help + ("" if f.implemented else " [accepted for compatibility; no effect yet]")
        lines.extend(textwrap.wrap(text, 72, initial_indent="      ", subsequent_indent="      "))
        if f.from_env:
            lines.append(f"      env: {f.env}")
    return "\n".join(lines) + "\n"
