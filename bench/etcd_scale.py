"""etcd mode at scale: programming, cold start, event latency, resync and idle cost at N peers.

Five measurements (issue "Performance and scale", suites 1-5), each printed as one markdown table
with its physical baseline measured in the same run:

1. programming: the reconciler given a table of N peers, fresh device -> all 3N objects in the
   kernel; versus `ip -batch` (neighbours, routes) + `bridge -batch` (FDB) applying the same
   objects to a fresh device;
2. cold start: daemon process start -> all N peers' routes in the kernel, with N leases pre-loaded
   in etcd; the daemon's CPU seconds and peak resident memory (VmHWM);
3. event latency: with N peers synced, lease puts and deletes; time from the etcd call returning
   to the route appearing or disappearing (an rtnetlink listener in the node's namespace);
4. resync pass at N peers with no drift and with 1 % drift (routes, neighbour and FDB entries
   deleted by hand): wall and CPU seconds, versus `ip`/`bridge` dumping the same tables;
5. idle: the synced daemon's CPU over a period, and its resident memory.

Run: `make bench`, or `tests/private-netns .venv/bin/python -m bench.etcd_scale` (see --help;
`--smoke` is the small run `make test` does).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from backend import nlbulk
from backend.reconcile import PeerEntry, Reconciler
from backend.vxlan import VXLANConfig, VxlanDevice
from bench.kube_scale import proc_status as memory_mib
from subnet.peers import PeerTable
from tests.testbed import Node, Testbed, inside, sh, wait_for

# what the container image sets for the daemon (Dockerfile ENV), so memory is measured as deployed
IMAGE_ENV = {"PYTHONMALLOC": "malloc"}
NETWORK = '{"Network": "10.0.0.0/8", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}'
PREFIX = "/coreos.com/network"


def peer(i: int) -> PeerEntry:
    """Synthetic peer i (0-based): subnet 10.<1+i/256>.<i%256>.0/24, a public IP on the
    underlay, and a unique VTEP MAC."""
    vtep = f"10.{1 + i // 256}.{i % 256}.0"
    mac = f"0e:00:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return PeerEntry(f"{vtep}/24", vtep, mac, f"198.18.{1 + i // 250}.{1 + i % 250}")


def lease_value(e: PeerEntry) -> bytes:
    """The etcd value Go flanneld writes for this peer (flannel `pkg/lease` LeaseAttrs)."""
    data = {"VNI": 1, "VtepMAC": e.vtep_mac}
    return json.dumps(
        {"PublicIP": e.public_ip, "BackendType": "vxlan", "BackendData": data},
        separators=(",", ":"),
    ).encode()


def lease_key(e: PeerEntry) -> str:
    return f"{PREFIX}/subnets/{e.subnet.replace('/', '-')}"


def table_md(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table with a title line."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pass_row(
    drift: str, writes: int, baseline: float, walls: list[float], cpus: list[float]
) -> list[Any]:
    """A row of the resync table: medians in milliseconds and the ratio to the baseline."""
    wall = statistics.median(walls)
    return [drift, writes, f"{baseline * 1000:.1f}", f"{wall * 1000:.1f}",
            f"{statistics.median(cpus) * 1000:.1f}", f"{wall / baseline:.2f}x"]  # fmt: skip


# --- 1 and 4: the reconciler in-process against a device in a node namespace -------------------


class Bench:
    """One node namespace (underlay veth `eth0` 198.18.0.1/24) for in-process measurements."""

    def __init__(self, tb: Testbed) -> None:
        self.tb = tb
        self.node = tb.add_node()
        with inside(self.node.netns):
            ipr = IPRoute()
            self.lower = ipr.link_lookup(ifname="eth0")[0]
            ipr.close()

    def sh(self, *cmd: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.node.netns, *cmd], input=stdin,
                              capture_output=True, text=True, check=True)  # fmt: skip

    def fresh_device(self) -> VxlanDevice:
        if self.has_device():
            self.sh("ip", "link", "del", "flannel.1")
        with inside(self.node.netns):
            dev = VxlanDevice(VXLANConfig(), 4, self.node.address, self.lower, 1500)
            dev.ipr  # noqa: B018 - open the sockets inside the namespace
            dev.bulk  # noqa: B018
        dev.ensure_device()
        return dev

    def has_device(self) -> bool:
        res = subprocess.run(["ip", "netns", "exec", self.node.netns, "ip", "link", "show",
                              "flannel.1"], capture_output=True)  # fmt: skip
        return res.returncode == 0

    def ip_batch(self, entries: list[PeerEntry]) -> float:
        """Seconds for `ip -batch` + `bridge -batch` to write the entries to a fresh device."""
        self.fresh_device().close()
        ip_lines, br_lines = [], []
        for e in entries:
            ip_lines.append(
                f"neigh replace {e.vtep_ip} lladdr {e.vtep_mac} dev flannel.1 nud permanent"
            )
            br_lines.append(
                f"fdb replace {e.vtep_mac} dev flannel.1 dst {e.public_ip} self permanent"
            )
        for e in entries:
            ip_lines.append(f"route replace {e.subnet} via {e.vtep_ip} dev flannel.1 onlink")
        ip_in, br_in = "\n".join(ip_lines) + "\n", "\n".join(br_lines) + "\n"
        start = time.perf_counter()
        self.sh("ip", "-batch", "-", stdin=ip_in)
        self.sh("bridge", "-batch", "-", stdin=br_in)
        return time.perf_counter() - start

    def dump_with_ip(self) -> float:
        """Seconds for `ip`/`bridge` to dump the device's neighbour, FDB and route tables."""
        start = time.perf_counter()
        self.sh("ip", "-4", "neigh", "show", "dev", "flannel.1")
        self.sh("bridge", "fdb", "show", "dev", "flannel.1")
        self.sh("ip", "-4", "route", "show", "dev", "flannel.1")
        return time.perf_counter() - start

    def reconciler(self, n: int) -> tuple[Reconciler[PeerEntry], VxlanDevice]:
        dev = self.fresh_device()
        dev.network = "10.0.0.0/8"
        table: PeerTable[PeerEntry] = PeerTable()
        table.reset((f"k{i}", peer(i)) for i in range(n))
        return Reconciler(table, dev, lambda e: e, resync_period=3600), dev

    def programming(self, n: int) -> list[Any]:
        entries = [peer(i) for i in range(n)]
        baseline = min(self.ip_batch(entries) for _ in range(2))
        rec, dev = self.reconciler(n)
        try:
            start, cpu = time.perf_counter(), time.process_time()
            result = rec.full_sync()
            wall, used = time.perf_counter() - start, time.process_time() - cpu
            assert result.failed == 0, result.errors
            routes = len(dev.bulk.dump_routes(dev.index, socket.AF_INET))
            assert routes == n, f"{routes} routes in the kernel, expected {n}"
        finally:
            dev.close()
        return [
            n,
            3 * n,
            f"{baseline:.3f}",
            f"{wall:.3f}",
            f"{used:.3f}",
            f"{wall / baseline:.2f}x",
        ]

    def resync(self, n: int, repeats: int = 5) -> list[list[Any]]:
        rec, dev = self.reconciler(n)
        rows = []
        try:
            rec.full_sync()
            gc.collect()
            gc.freeze()  # as the daemon does after its first pass (keeps its objects out of GC)
            baseline = min(self.dump_with_ip() for _ in range(repeats))
            walls, cpus = [], []
            for _ in range(repeats):
                start, cpu = time.perf_counter(), time.process_time()
                result = rec.full_sync()
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                assert result.ops == 0, f"{result.ops} writes on a pass without drift"
            rows.append(pass_row("none", 0, baseline, walls, cpus))
            drifted = max(1, n // 100)
            walls, cpus = [], []
            for _ in range(repeats):
                self.drift(drifted, n)
                start, cpu = time.perf_counter(), time.process_time()
                result = rec.full_sync()
                walls.append(time.perf_counter() - start)
                cpus.append(time.process_time() - cpu)
                assert result.ops == 3 * drifted and result.failed == 0, result
            rows.append(pass_row("1 %", 3 * drifted, baseline, walls, cpus))
        finally:
            gc.unfreeze()
            dev.close()
        return rows

    def drift(self, count: int, n: int) -> None:
        """Delete `count` of the `n` peers' route, neighbour and FDB entries behind the
        reconciler's back."""
        ip_lines, br_lines = [], []
        for i in range(0, count * 97, 97):
            e = peer(i % n)
            ip_lines += [
                f"route del {e.subnet} dev flannel.1",
                f"neigh del {e.vtep_ip} dev flannel.1",
            ]
            br_lines.append(f"fdb del {e.vtep_mac} dev flannel.1 dst {e.public_ip} self")
        self.sh("ip", "-batch", "-", stdin="\n".join(ip_lines) + "\n")
        self.sh("bridge", "-batch", "-", stdin="\n".join(br_lines) + "\n")


# --- 2, 3 and 5: a daemon process against etcd holding N leases ---------------------------------


class RouteListener:
    """Timestamps of route additions and removals through one device, from rtnetlink
    notifications (group RTMGRP_IPV4_ROUTE) read in a thread in the node's namespace."""

    def __init__(self, ns: str) -> None:
        with inside(ns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        self.sock.bind((0, 0x40))
        self.cond = threading.Condition()
        self.added: dict[str, float] = {}
        self.removed: dict[str, float] = {}
        self.overruns = 0
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                self.overruns += 1
                continue
            now = time.monotonic()
            off = 0
            with self.cond:
                while off + 16 <= len(data):
                    length, kind = struct.unpack_from("=IH", data, off)
                    if length < 16:
                        break
                    if kind in (nlbulk.RTM_NEWROUTE, nlbulk.RTM_DELROUTE):
                        body = data[off + 16 : off + length]
                        attrs = nlbulk._attrs(body, 12, len(body))
                        if nlbulk.RTA_DST in attrs:
                            dst = f"{socket.inet_ntoa(attrs[nlbulk.RTA_DST])}/{body[1]}"
                            side = self.added if kind == nlbulk.RTM_NEWROUTE else self.removed
                            side[dst] = now
                    off += (length + 3) & ~3
                self.cond.notify_all()

    def wait(
        self, side: dict[str, float], dst: str, before: float, after: float, timeout: float = 10
    ) -> float:
        """Seconds from `after` (the etcd call returned) to the notification for `dst` seen
        since `before` (the call started); 0 when the kernel was even faster than etcd's answer.
        Raises TimeoutError."""
        with self.cond:
            if not self.cond.wait_for(lambda: side.get(dst, 0) >= before, timeout):
                raise TimeoutError(f"no route notification for {dst}")
            return max(0.0, side[dst] - after)

    def close(self) -> None:
        self._stop = True
        self.sock.close()


def preload(tb: Testbed, n: int) -> None:
    """Write the network config and N peers' leases (one etcd lease, 1 h TTL) to etcd."""
    tb.put_config(NETWORK)
    client = tb.client
    lease = client.lease(3600)
    for start in range(0, n, 100):
        puts = [client.transactions.put(lease_key(peer(i)), lease_value(peer(i)), lease.id)
                for i in range(start, min(n, start + 100))]  # fmt: skip
        client.transaction(compare=[], success=puts, failure=[])
    # etcd answers slowly for a few seconds after a burst of writes (its backend commits); let it
    # settle so that the cold start measures the daemon, not that
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        asked = time.monotonic()
        client.get(f"{PREFIX}/config")
        if time.monotonic() - asked < 0.02:
            time.sleep(3.0)
            break
        time.sleep(0.5)


def quantiles(values: list[float]) -> list[str]:
    """p50, p90, p99 and max, milliseconds."""
    xs = sorted(values)

    def q(p: float) -> float:
        return xs[min(len(xs) - 1, round(p * (len(xs) - 1)))]

    return [f"{q(p) * 1000:.1f}" for p in (0.5, 0.9, 0.99)] + [f"{xs[-1] * 1000:.1f}"]


def route_total(ns: str) -> int:
    """The routes through `flannel.1` in namespace `ns` (0 without the device)."""
    with inside(ns):
        bulk = nlbulk.BulkSocket()
    try:
        res = sh(["ip", "netns", "exec", ns, "ip", "-j", "link", "show", "flannel.1"], check=False)
        if res.returncode != 0:
            return 0
        return len(bulk.dump_routes(int(json.loads(res.stdout)[0]["ifindex"]), socket.AF_INET))
    finally:
        bulk.close()


class DaemonRun:
    """One flanneld-py node against etcd preloaded with N peer leases."""

    def __init__(self, tb: Testbed, n: int, args: tuple[str, ...] = ()) -> None:
        self.tb, self.n, self.args = tb, n, args
        self.node: Node = tb.add_node()
        self.listener = RouteListener(self.node.netns)

    def cold_start(self, env: dict[str, str] | None = None) -> list[Any]:
        start = time.monotonic()
        self.tb.start_daemon(self.node, *self.args, env=IMAGE_ENV if env is None else env)
        proc = self.node.process
        assert proc is not None
        wait_for(f"{self.n} routes", lambda: len(self.listener.added) >= self.n or
                 route_total(self.node.netns) >= self.n, timeout=120, interval=0.2)  # fmt: skip
        wall = time.monotonic() - start
        cpu = cpu_seconds(proc.pid)
        mem = memory_mib(proc.pid)
        return [self.n, f"{wall:.2f}", f"{cpu:.2f}", f"{mem['VmRSS']:.1f}", f"{mem['VmHWM']:.1f}"]

    def events(self, count: int, spacing: float) -> list[list[Any]]:
        client = self.tb.client
        lease = client.lease(3600)
        news = [peer(self.n + i) for i in range(count)]
        put_lat, del_lat = [], []
        for e in news:
            before = time.monotonic()
            client.put(lease_key(e), lease_value(e), lease=lease.id)
            after = time.monotonic()
            put_lat.append(self.listener.wait(self.listener.added, e.subnet, before, after))
            time.sleep(spacing)
        for e in news:
            before = time.monotonic()
            client.delete(lease_key(e))
            after = time.monotonic()
            del_lat.append(self.listener.wait(self.listener.removed, e.subnet, before, after))
            time.sleep(spacing)
        return [["lease put -> route added", count, *quantiles(put_lat)],
                ["lease delete -> route removed", count, *quantiles(del_lat)]]  # fmt: skip

    def idle(self, seconds: float) -> list[Any]:
        proc = self.node.process
        assert proc is not None
        before = cpu_seconds(proc.pid)
        time.sleep(seconds)
        used = cpu_seconds(proc.pid) - before
        mem = memory_mib(proc.pid)
        return [self.n, f"{seconds:.0f}", f"{used:.3f}", f"{used / seconds:.4f}",
                f"{mem['VmRSS']:.1f}"]  # fmt: skip

    def close(self) -> None:
        self.listener.close()
        self.tb.stop_daemon(self.node)


# what `--smoke` and the test suite run: every measurement, small and fast
SMOKE: dict[str, Any] = {"program": [200], "peers": 200, "events": 10, "spacing": 0.02, "idle": 1.0}


def run(
    program: list[int],
    peers: int,
    events: int,
    spacing: float,
    idle: float,
    resync_period: float | None = None,
) -> dict[str, Any]:
    """Run the five measurements in a new testbed, printing each table as it is done; returns
    the rows by measurement name ("programming", "resync", "cold_start", "events", "idle").
    `resync_period` (seconds) is given to the daemon as `--resync-period` (None: its default)."""
    out: dict[str, Any] = {}
    with Testbed() as tb:
        bench = Bench(tb)
        rows = [bench.programming(n) for n in program]
        out["programming"] = rows
        print(table_md("1. Programming N peers (3N kernel objects) on a fresh device",
                       ["peers", "objects", "ip -batch + bridge -batch (s)", "flanneld-py (s)",
                        "flanneld-py CPU (s)", "ratio"], rows))  # fmt: skip
        rows = bench.resync(peers)
        out["resync"] = rows
        print(table_md(f"4. Resync pass at {peers} peers (best of 5)",
                       ["drift", "writes", "ip/bridge dump of the 3 tables (ms)", "pass (ms)",
                        "pass CPU (ms)", "ratio"], rows))  # fmt: skip
        sh(["ip", "netns", "exec", bench.node.netns, "ip", "link", "del", "flannel.1"])
        tb.start_etcd()
        preload(tb, peers)
        args = () if resync_period is None else (f"--resync-period={resync_period:g}",)
        daemon = DaemonRun(tb, peers, args)
        try:
            row = daemon.cold_start()
            out["cold_start"] = row
            print(table_md("2. Cold start: daemon process start -> all peers in the kernel",
                           ["peers", "wall (s)", "daemon CPU (s)", "RSS (MiB)", "peak RSS (MiB)"],
                           [row]))  # fmt: skip
            time.sleep(1.0)
            rows = daemon.events(events, spacing)
            out["events"] = rows
            print(table_md(f"3. Event -> kernel latency with {peers} peers synced",
                           ["event", "count", "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)"],
                           rows))  # fmt: skip
            row = daemon.idle(idle)
            out["idle"] = row
            print(table_md("5. Idle", ["peers", "period (s)", "CPU (s)", "cores", "RSS (MiB)"],
                           [row]))  # fmt: skip
        finally:
            daemon.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.etcd_scale",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--program",
        default="1000,5000,10000",
        help="peer counts for the programming benchmark (comma-separated)",
    )
    parser.add_argument(
        "--peers", type=int, default=5000, help="peers for cold start, events, resync and idle"
    )
    parser.add_argument("--events", type=int, default=100, help="lease puts (and deletes)")
    parser.add_argument("--spacing", type=float, default=0.1, help="seconds between events")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle measurement")
    parser.add_argument(
        "--resync-period",
        type=float,
        default=None,
        help="the daemon's --resync-period in seconds (default: the daemon's, 30 s); a short one "
        "makes lease events meet full passes",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the small, fast run `make test` does (200 peers, 10 events 20 ms apart, 1 s "
        "idle); replaces the sizes given by the other options",
    )
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    if args.smoke:
        out = run(**SMOKE)
    else:
        counts = [int(c) for c in args.program.split(",") if c]
        out = run(counts, args.peers, args.events, args.spacing, args.idle, args.resync_period)
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
