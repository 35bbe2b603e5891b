"""Datapath: TCP throughput pod to pod through the VXLAN overlay against node to node underneath.

Two flanneld-py nodes on a real etcd, one pod on each made by the real CNI plugins. iperf3 measures,
in the same run and alternating so that a change in the machine's load hits both alike:

- **overlay**: pod on node 1 to pod on node 2, through cni0, flannel.1 (VXLAN) and the underlay;
- **underlay**: node 1 to node 2 directly over their `eth0` veths and the underlay bridge, the
  physical baseline the overlay is compared with.

Around every run it reads the IP fragmentation counters of `/proc/net/snmp` (`FragCreates`,
`ReasmReqds`, `ReasmOKs`) in both node namespaces and both pod namespaces: with the overlay MTU
right (underlay MTU minus the 50 bytes of VXLAN encapsulation) nothing is ever fragmented, so every
difference must be 0. It also reports the MTUs on each path and the TCP MSS and path MTU that iperf3
saw. The iperf3 servers are processes of this benchmark, started with `ip netns exec` in the
server's namespace and stopped by PID, also on an error or Ctrl-C.

Run: `tests/private-netns .venv/bin/python -m bench.datapath` (3 runs of 5 s per path), or
`tests/private-netns .venv/bin/python -m bench.datapath --runs N --seconds S [--json]`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.testbed import (
    Node,
    Pod,
    Testbed,
    TestbedError,
    die_with_parent,
    end_process,
    sh,
    wait_for,
)

IPERF_PORT = 5201
#: /proc/net/snmp "Ip:" counters that move when a packet is fragmented or reassembled.
FRAG_COUNTERS = ("FragCreates", "ReasmReqds", "ReasmOKs")


@dataclass
class PathResult:
    """What was measured on one path (overlay or underlay)."""

    gbps: list[float] = field(default_factory=list)
    """Receiver-side throughput of each run, Gbit/s."""
    mtu: dict[str, int] = field(default_factory=dict)
    """MTU of each device on the path that the benchmark can see, by name."""
    mss: int = 0
    """TCP MSS of iperf3's data connection (its `tcp_mss_default`), bytes."""
    pmtu: int = 0
    """Path MTU the sender's TCP socket reported, bytes."""
    frags: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FRAG_COUNTERS, 0))
    """Sum over the node and pod namespaces of each counter's increase during this path's runs."""

    @property
    def median(self) -> float:
        return statistics.median(self.gbps) if self.gbps else 0.0


@dataclass
class Result:
    """Both paths of one benchmark run."""

    runs: int
    seconds: int
    overlay: PathResult
    underlay: PathResult

    @property
    def ratio(self) -> float:
        """Median overlay throughput over median underlay throughput."""
        base = self.underlay.median
        return self.overlay.median / base if base else float("nan")

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("overlay", "underlay"):
            out[name]["median"] = getattr(self, name).median
        out["ratio"] = self.ratio
        return out


def ns_cmd(netns: str, *cmd: str) -> list[str]:
    """A command run in a namespace, as the testbed's node_sh / pod_sh run it."""
    return ["ip", "netns", "exec", netns, *cmd]


def snmp_ip(netns: str) -> dict[str, int]:
    """The `Ip:` counters of /proc/net/snmp as seen inside `netns` (the file is per namespace)."""
    lines = [ln.split() for ln in sh(ns_cmd(netns, "cat", "/proc/net/snmp")).stdout.splitlines()]
    names, values = [ln for ln in lines if ln and ln[0] == "Ip:"][:2]
    return {k: int(v) for k, v in zip(names[1:], values[1:], strict=True)}


def frag_snapshot(namespaces: list[str]) -> dict[str, int]:
    """FRAG_COUNTERS summed over `namespaces`."""
    total = dict.fromkeys(FRAG_COUNTERS, 0)
    for netns in namespaces:
        counters = snmp_ip(netns)
        for key in FRAG_COUNTERS:
            total[key] += counters[key]
    return total


def link_mtu(netns: str, dev: str) -> int:
    res = sh(ns_cmd(netns, "ip", "-j", "link", "show", dev))
    return int(json.loads(res.stdout)[0]["mtu"])


def listening(netns: str, port: int) -> bool:
    res = sh(ns_cmd(netns, "ss", "-Htln", f"sport = :{port}"), check=False)
    return res.returncode == 0 and bool(res.stdout.strip())


class IperfServer:
    """`iperf3 -s` bound to one address in one namespace; `stop()` ends it by PID."""

    def __init__(self, tb: Testbed, netns: str, address: str) -> None:
        self.netns, self.address = netns, address
        self.log = tb.workdir / f"iperf3-{netns}.log"
        cmd = ns_cmd(netns, "iperf3", "-s", "-B", address, "-p", str(IPERF_PORT))
        with open(self.log, "ab") as log:  # `ip netns exec` execs iperf3: the PID is iperf3's
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
            )
        try:
            wait_for(f"iperf3 -s in {netns}", self._ready, timeout=20, interval=0.05)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise TestbedError(f"iperf3 -s in {self.netns} exited: {self.log.read_text()[-500:]}")
        return listening(self.netns, IPERF_PORT)

    def stop(self) -> None:
        if self.proc is None:
            return
        end_process(self.proc)
        self.proc = None


def iperf_run(netns: str, server: str, seconds: int) -> dict[str, Any]:
    """One iperf3 TCP test from `netns` to `server`; returns iperf3's JSON report."""
    cmd = ns_cmd(netns, "iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", str(seconds), "-J")
    res = sh(cmd, check=False, timeout=seconds + 60)
    try:
        report: dict[str, Any] = json.loads(res.stdout)
    except json.JSONDecodeError:
        report = {"error": res.stderr.strip() or res.stdout.strip()}
    if res.returncode != 0 or "error" in report:
        raise TestbedError(f"iperf3 from {netns} to {server} failed: {report.get('error')}")
    return report


def measure(
    path: PathResult, client_ns: str, server: str, seconds: int, watched: list[str]
) -> None:
    """One run on one path: throughput, MSS and path MTU, and the fragment counters' increase."""
    before = frag_snapshot(watched)
    report = iperf_run(client_ns, server, seconds)
    after = frag_snapshot(watched)
    for key in FRAG_COUNTERS:
        path.frags[key] += after[key] - before[key]
    path.gbps.append(report["end"]["sum_received"]["bits_per_second"] / 1e9)
    path.mss = int(report["start"].get("tcp_mss_default", 0))
    streams = report["intervals"][-1]["streams"] if report.get("intervals") else []
    path.pmtu = int(streams[0].get("pmtu", 0)) if streams else 0


def run(runs: int, seconds: int) -> Result:
    tb = Testbed()
    servers: list[IperfServer] = []
    try:
        tb.start_etcd()
        tb.put_config()
        nodes: list[Node] = tb.start_nodes(2)
        pods: list[Pod] = [tb.add_pod(node) for node in nodes]
        wait_for("pod to pod ping across nodes", lambda: tb.ping(pods[0], pods[1].ip), timeout=30)
        overlay = PathResult(mtu={
            "pod eth0": link_mtu(pods[0].netns, "eth0"),
            "cni0": link_mtu(nodes[0].netns, "cni0"),
            "flannel.1": link_mtu(nodes[0].netns, "flannel.1"),
        })  # fmt: skip
        underlay = PathResult(mtu={"node eth0": link_mtu(nodes[0].netns, "eth0")})
        servers.append(IperfServer(tb, pods[1].netns, pods[1].ip))
        servers.append(IperfServer(tb, nodes[1].netns, nodes[1].address))
        watched = [n.netns for n in nodes] + [p.netns for p in pods]
        for _ in range(runs):
            measure(underlay, nodes[0].netns, nodes[1].address, seconds, watched)
            measure(overlay, pods[0].netns, pods[1].ip, seconds, watched)
        return Result(runs, seconds, overlay, underlay)
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
        tb.cleanup()


def table(result: Result) -> str:
    """The result as one markdown table."""

    def row(name: str, path: PathResult, ratio: str) -> str:
        mtu = ", ".join(f"{dev} {mtu}" for dev, mtu in path.mtu.items())
        runs = ", ".join(f"{g:.2f}" for g in path.gbps)
        frags = " / ".join(str(path.frags[key]) for key in FRAG_COUNTERS)
        cells = [name, mtu, f"{path.mss} / {path.pmtu}", runs, f"{path.median:.2f}", ratio, frags]
        return "| " + " | ".join(cells) + " |"

    return "\n".join([
        "| path | MTU | TCP MSS / path MTU | runs (Gbit/s) | median (Gbit/s) "
        "| overlay/underlay | fragments: FragCreates / ReasmReqds / ReasmOKs |",
        "|---|---|---|---|---|---|---|",
        row("overlay: pod → pod across nodes (VXLAN)", result.overlay, f"{result.ratio:.2f}"),
        row("underlay: node → node (veth + bridge)", result.underlay, "1.00"),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="datapath throughput: overlay vs underlay")
    parser.add_argument("--runs", type=int, default=3, help="iperf3 runs per path")
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 run")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be 1 to 20")
    if not 1 <= args.seconds <= 60:
        parser.error("--seconds must be 1 to 60")
    result = run(args.runs, args.seconds)
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"datapath, iperf3 TCP, {args.runs} run(s) of {args.seconds} s per path, two nodes\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
