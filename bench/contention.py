"""Allocation under contention (bench suite 6): N flanneld-py daemons start at once on one etcd.

Inside the testbed (private network namespace, one real etcd), N node namespaces are built first
(not timed). Then N flanneld-py processes with the `alloc` backend (lease and subnet.env only, no
datapath, so only allocation is measured), one per node, compete for the subnets of one network,
in two rounds with the same nodes:

- cold start: the network config is in etcd; the N daemons are launched back to back. On two
  cores this is dominated by N Python start-ups, which spreads the acquisitions out in time;
- synchronized start: the daemons are launched without a network config and wait for it (they
  poll every second); once every one of them has logged that it is waiting, the config is
  written, so all N list the same free subnets and create their keys within about a second: the
  worst case for allocation races. Times are counted from the config write.

Between the rounds the daemons are stopped, and their keys and subnet.env files removed, so the
second round allocates afresh. Measured per round:

- time until every daemon has written a subnet.env (all hold leases); per daemon, the time to its
  subnet.env (p50 / p90 / max, from the files' modification times) and its acquisition alone
  (from its "leasing a subnet" to its "wrote subnet.env" log line: list, choose, grant, create);
- collisions: two daemons whose subnet.env names the same subnet, or a daemon whose subnet's etcd
  key is missing or names another node's public IP (must be 0), and the number of keys in etcd;
- retries: create transactions lost to another daemon (each logged by the etcd subnet manager as
  "... was taken by another node meanwhile; trying another"), in total, for the worst daemon, and
  how many daemons lost at least one; acquisition errors logged; daemons that exited;
- memory: each daemon's peak resident set (VmHWM) and resident set (VmRSS) two seconds after all
  are leased, mean / max, MiB; etcd's peak over the whole run for reference.

Run: `tests/private-netns .venv/bin/python -m bench.contention --daemons 100`
(`--daemons 5` for a quick run). Prints one markdown table; exits 1 when a round did not end with
every daemon leased and no collision.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import re
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from flanneld_py.state import state_path
from subnet.lease import LeaseAttrs, LeaseFormatError
from tests.testbed import Node, Testbed, TestbedError, wait_for

NETWORK = '{"Network": "10.244.0.0/16", "Backend": {"Type": "alloc"}}'
# Log lines counted or timed (flanneld_py/daemon.py, subnet/etcd.py):
RACE_LOST = "was taken by another node meanwhile"  # one per lost create transaction
ACQUIRE_ERROR = "could not acquire a lease"  # etcd unreachable or network full
WAITING = "couldn't fetch network config"  # logged once while the config is missing
START_LINE = "backend alloc: leasing a subnet only"  # just before the first list
LEASED_LINE = "FLANNEL_SUBNET="  # "wrote <path>: FLANNEL_SUBNET=... FLANNEL_MTU=..."
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
SETTLE = 2.0  # seconds after the last lease before memory is read (the watch's first list is in)


@dataclass
class Round:
    """The figures of one round. Times in seconds, memory in MiB; None when not reached."""

    name: str
    all_leased_s: float | None = None
    to_lease_s: list[float] = field(default_factory=list)  # per leased daemon, from the start
    acquire_s: list[float] = field(default_factory=list)  # per leased daemon, from its log
    leased: int = 0
    etcd_keys: int = 0
    collisions: int = 0
    retries: list[int] = field(default_factory=list)  # lost create races, per daemon
    acquire_errors: int = 0
    exited: int = 0
    exit_reasons: list[str] = field(default_factory=list)  # last log lines of exited daemons
    hwm_mib: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)

    @property
    def retries_total(self) -> int:
        """Lost create races over all daemons."""
        return sum(self.retries)


@dataclass
class ContentionResult:
    """Both rounds of a run with `daemons` daemons; `setup_s` built the node namespaces."""

    daemons: int
    setup_s: float
    cold: Round
    synced: Round
    etcd_hwm_mib: float = 0.0

    @property
    def ok(self) -> bool:
        """Every daemon leased in both rounds, no collision."""
        return all(r.leased == self.daemons and r.collisions == 0 for r in (self.cold, self.synced))


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a running process, MiB ({} when it is gone)."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def _stamp(line: str) -> float | None:
    """The Unix time of a text-format log line (`2026-11-29 13:12:40,045 I ...`, local time)."""
    m = _STAMP.match(line)
    if m is None:
        return None
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def acquire_seconds(log: str) -> float | None:
    """Seconds from the daemon's "leasing a subnet" line to its first "wrote subnet.env" line."""
    start = end = None
    for line in log.splitlines():
        if start is None and START_LINE in line:
            start = _stamp(line)
        elif start is not None and LEASED_LINE in line:
            end = _stamp(line)
            break
    return None if start is None or end is None else end - start


def _subnet(node: Node) -> str | None:
    """The node's subnet key (`10.244.3.0-24`) from its subnet.env; None before it is written."""
    value = node.subnet_env().get("FLANNEL_SUBNET")
    if not value:
        return None
    net = ipaddress.ip_interface(value).network
    return f"{net.network_address}-{net.prefixlen}"


def count_collisions(tb: Testbed, nodes: list[Node]) -> tuple[int, int]:
    """(collisions, keys in etcd): a collision is a daemon sharing its subnet.env subnet with an
    earlier daemon, or one whose subnet's etcd key is missing or publishes another public IP."""
    keys = tb.leases()
    holders: dict[str, list[Node]] = {}
    collisions = 0
    for node in nodes:
        key = _subnet(node)
        if key is None:
            continue
        holders.setdefault(key, []).append(node)
        try:
            owner = str(LeaseAttrs.decode(keys[key]).public_ip) if key in keys else None
        except LeaseFormatError:
            owner = None
        if owner != node.address:
            collisions += 1
    collisions += sum(len(h) - 1 for h in holders.values() if len(h) > 1)
    return collisions, len(keys)


def _log_since(node: Node, offset: int) -> str:
    return node.log()[offset:]


def _running(node: Node) -> bool:
    return node.process is not None and node.process.poll() is None


def _wait_leased(nodes: list[Node], start: float, timeout: float) -> float | None:
    """Seconds from `start` (monotonic) until every node has a subnet.env; None when a daemon
    exited first or `timeout` passed."""
    deadline = start + timeout
    while True:
        done = sum(1 for node in nodes if _subnet(node) is not None)
        if done == len(nodes):
            return time.monotonic() - start
        gone = sum(1 for node in nodes if not _running(node))
        if done + gone >= len(nodes) or time.monotonic() > deadline:
            return None
        time.sleep(0.02)


def run_round(tb: Testbed, nodes: list[Node], synced: bool, timeout: float) -> Round:
    """Launch a daemon on every node, measure (see the module docstring), stop them all, and
    remove their keys and subnet.env files. `synced`: withhold the network config until every
    daemon waits for it. Raises TestbedError when the daemons do not all get to wait in time."""
    rnd = Round("synchronized start" if synced else "cold start")
    config_key = f"{tb.etcd_prefix}/config"
    offsets = [len(node.log()) for node in nodes]
    if synced:
        tb.client.delete(config_key)
    else:
        tb.put_config(NETWORK)
    try:
        start_wall, start = time.time(), time.monotonic()
        for node in nodes:
            tb.start_daemon(node)
        if synced:

            def waiting() -> bool:
                return all(WAITING in _log_since(n, o) or not _running(n)
                           for n, o in zip(nodes, offsets, strict=True))  # fmt: skip

            wait_for("every daemon to wait for the network config", waiting, timeout, 0.1)
            start_wall, start = time.time(), time.monotonic()
            tb.put_config(NETWORK)
        rnd.all_leased_s = _wait_leased(nodes, start, timeout)
        time.sleep(SETTLE)
        for node, offset in zip(nodes, offsets, strict=True):
            log = _log_since(node, offset)
            rnd.retries.append(log.count(RACE_LOST))
            rnd.acquire_errors += log.count(ACQUIRE_ERROR)
            if _subnet(node) is not None:
                rnd.leased += 1
                rnd.to_lease_s.append(node.subnet_file.stat().st_mtime - start_wall)
                seconds = acquire_seconds(log)
                if seconds is not None:
                    rnd.acquire_s.append(seconds)
            assert node.process is not None
            if not _running(node):
                rnd.exited += 1
                tail = " | ".join(log.strip().splitlines()[-3:])
                rnd.exit_reasons.append(f"{node.name} exited {node.process.returncode}: {tail}")
                continue
            mem = proc_status(node.process.pid)
            if mem:
                rnd.hwm_mib.append(mem["VmHWM"])
                rnd.rss_mib.append(mem["VmRSS"])
        rnd.collisions, rnd.etcd_keys = count_collisions(tb, nodes)
    finally:
        for node in nodes:  # SIGTERM to all first: they stop in parallel
            if _running(node):
                assert node.process is not None
                node.process.send_signal(signal.SIGTERM)
        for node in nodes:
            tb.stop_daemon(node)
        tb.client.delete_prefix(f"{tb.etcd_prefix}/subnets/")
        for node in nodes:
            for path in (node.subnet_file, Path(state_path(str(node.subnet_file)))):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
    return rnd


def run(n: int, timeout: float = 600.0) -> ContentionResult:
    """Build the testbed with `n` nodes, run both rounds, tear everything down.

    `timeout` (seconds) bounds each wait of each round. Raises TestbedError when the testbed
    cannot be built or the daemons never all wait for the config.
    """
    tb = Testbed()
    try:
        tb.start_etcd()
        t0 = time.monotonic()
        nodes = [tb.add_node() for _ in range(n)]
        setup = time.monotonic() - t0
        cold = run_round(tb, nodes, synced=False, timeout=timeout)
        synced = run_round(tb, nodes, synced=True, timeout=timeout)
        etcd_hwm = proc_status(tb.etcd.pid).get("VmHWM", 0.0) if tb.etcd is not None else 0.0
        return ContentionResult(n, setup, cold, synced, etcd_hwm)
    finally:
        tb.cleanup()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def _spread(values: list[float], unit: str, scale: float = 1.0) -> str:
    if not values:
        return "-"
    parts = [_pct(values, 0.5), _pct(values, 0.9), max(values)]
    digits = 0 if scale > 1 else 2
    return " / ".join(f"{v * scale:.{digits}f}" for v in parts) + f" {unit}"


def _mean_max(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} / {max(values):.1f} MiB" if values else "-"


def table(r: ContentionResult) -> str:
    """The result as one markdown table: metric | cold start | synchronized start."""
    rounds = (r.cold, r.synced)

    def row(name: str, cell: Callable[[Round], str]) -> tuple[str, str, str]:
        return name, cell(r.cold), cell(r.synced)

    rows = [
        row("daemons (alloc backend, one node namespace each)", lambda _: f"{r.daemons}"),
        row(
            "all leased (subnet.env written), from launch / from config write",
            lambda x: f"{x.all_leased_s:.2f} s" if x.all_leased_s is not None else "not reached",
        ),
        row("per daemon: time to its lease, p50 / p90 / max", lambda x: _spread(x.to_lease_s, "s")),
        row(
            "per daemon: acquisition alone (list, create, write), p50 / p90 / max",
            lambda x: _spread(x.acquire_s, "ms", 1000.0),
        ),
        row("daemons holding a lease / keys in etcd", lambda x: f"{x.leased} / {x.etcd_keys}"),
        row(
            "collisions (subnet held twice, or etcd names another node)",
            lambda x: f"{x.collisions}",
        ),
        row(
            "lost create races (retries): total / worst daemon / daemons that lost one",
            lambda x: (
                f"{x.retries_total} / {max(x.retries, default=0)} / "
                f"{sum(1 for k in x.retries if k)}"
            ),
        ),
        row(
            "acquisition errors logged / daemons that exited",
            lambda x: f"{x.acquire_errors} / {x.exited}",
        ),
        row("peak RSS per daemon (VmHWM), mean / max", lambda x: _mean_max(x.hwm_mib)),
        row("RSS per daemon once leased (VmRSS), mean / max", lambda x: _mean_max(x.rss_mib)),
    ]
    rows.append(("etcd peak RSS over the run (VmHWM)", f"{r.etcd_hwm_mib:.1f} MiB", ""))
    rows.append(("node namespaces built before round 1 (not timed)", f"{r.setup_s:.1f} s", ""))
    width = [max(len(x[i]) for x in [("metric", *(d.name for d in rounds)), *rows])
             for i in range(3)]  # fmt: skip
    head = ("metric", *(d.name for d in rounds))
    lines = ["| " + " | ".join(f"{c:<{w}}" for c, w in zip(head, width, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in width) + "|")
    lines += ["| " + " | ".join(f"{c:<{w}}" for c, w in zip(x, width, strict=True)) + " |"
              for x in rows]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="allocation under contention (bench suite 6)")
    parser.add_argument("--daemons", type=int, default=100, help="daemons started at once")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    args = parser.parse_args(argv)
    if not 1 <= args.daemons <= 250:
        parser.error("--daemons must be 1 to 250 (one underlay address per node)")
    try:
        result = run(args.daemons, args.timeout)
    except TestbedError as err:
        print(f"bench.contention: {err}", file=sys.stderr)
        return 1
    print(table(result))
    for rnd in (result.cold, result.synced):
        for reason in rnd.exit_reasons:
            print(f"{rnd.name}: {reason}", file=sys.stderr)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
