"""Kubernetes mode at scale: one real node against N synthetic Nodes in the API emulator.

Measures, in one run inside the testbed: the daemon's time from start to all N peers programmed,
its resident memory (VmRSS and peak VmHWM, MiB) once synced, the latency from a Node change in the
API to the kernel entry (p50/p90/max over a series of podCIDR and VTEP MAC changes), and, as the
physical baseline, `ip -batch` + `bridge -batch` applying the same 3N kernel objects to a fresh
device in the same namespace.

Run: `make bench` (N = 5000), or
`tests/private-netns .venv/bin/python -m bench.kube_scale --nodes N`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.testbed import Node, Testbed, wait_for

P = "flannel.alpha.coreos.com/"
NETWORK = '{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}'


def peer(i: int) -> tuple[str, str, str, str]:
    """(name, podCIDR, public IP, VTEP MAC) of synthetic peer i (0-based)."""
    cidr = f"10.{1 + i // 256}.{i % 256}.0/24"
    public = f"198.18.{1 + i // 250}.{1 + i % 250}"
    mac = f"0e:00:00:{(i >> 16) & 0xFF:02x}:{(i >> 8) & 0xFF:02x}:{i & 0xFF:02x}"
    return f"peer-{i}", cidr, public, mac


def peer_annotations(public: str, mac: str) -> dict[str, str]:
    return {
        P + "kube-subnet-manager": "true",
        P + "backend-type": "vxlan",
        P + "backend-data": json.dumps({"VNI": 1, "VtepMAC": mac}, separators=(",", ":")),
        P + "public-ip": public,
    }


def route_count(tb: Testbed, node: Node) -> int:
    res = tb.node_sh(node, "ip", "-4", "route", "show", "dev", "flannel.1", check=False)
    return len(res.stdout.splitlines())


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def daemon_pid(node: Node) -> int:
    """The PID of flanneld-py itself (`ip netns exec` execs it, so it is the Popen PID)."""
    assert node.process is not None
    return node.process.pid


def baseline(tb: Testbed, node: Node, n: int) -> float:
    """Seconds for `ip -batch` + `bridge -batch` to apply the same 3N objects to a fresh device."""
    tb.node_sh(node, "ip", "link", "add", "base.1", "type", "vxlan", "id", "99", "dev", "eth0",
               "dstport", "8472", "nolearning")  # fmt: skip
    tb.node_sh(node, "ip", "link", "set", "base.1", "up")
    with tempfile.TemporaryDirectory() as d:
        ip_batch, fdb_batch = Path(d) / "ip", Path(d) / "fdb"
        ip_lines, fdb_lines = [], []
        for i in range(n):
            _, cidr, public, mac = peer(i)
            gw = cidr.split("/")[0]
            ip_lines.append(f"neigh replace {gw} lladdr {mac} dev base.1 nud permanent")
            ip_lines.append(f"route replace {cidr} via {gw} dev base.1 onlink")
            fdb_lines.append(f"fdb replace {mac} dev base.1 dst {public} self permanent")
        ip_batch.write_text("\n".join(ip_lines) + "\n")
        fdb_batch.write_text("\n".join(fdb_lines) + "\n")
        start = time.monotonic()
        tb.node_sh(node, "ip", "-batch", str(ip_batch), timeout=300)
        tb.node_sh(node, "bridge", "-batch", str(fdb_batch), timeout=300)
        elapsed = time.monotonic() - start
    tb.node_sh(node, "ip", "link", "del", "base.1")
    return elapsed


def change_latency(tb: Testbed, node: Node, n: int, changes: int) -> list[float]:
    """Seconds from a Node update in the API to the matching kernel entry, per change."""
    assert tb.kubeapi is not None
    out = []
    for k in range(changes):
        name, _, public, _ = peer(k)
        if k % 2 == 0:  # move the podCIDR: a new route must appear
            new_cidr = f"10.200.{k}.0/24"

            def move(obj: dict[str, Any], c: str = new_cidr) -> None:
                obj["spec"]["podCIDR"] = c
                obj["spec"]["podCIDRs"] = [c]

            start = time.monotonic()
            tb.kubeapi.update_node(name, move)
            wait_for("the moved route", lambda c=new_cidr: c in tb.routes(node),  # type: ignore[misc]
                     timeout=60, interval=0.002)  # fmt: skip
        else:  # a new VTEP MAC: the neighbour entry must change
            mac = f"0e:ff:00:00:{k >> 8 & 0xFF:02x}:{k & 0xFF:02x}"
            gw = peer(k)[1].split("/")[0]

            def remac(obj: dict[str, Any], m: str = mac, p: str = public) -> None:
                obj["metadata"]["annotations"].update(peer_annotations(p, m))

            start = time.monotonic()
            tb.kubeapi.update_node(name, remac)

            def has_mac(m: str = mac, g: str = gw) -> bool:
                res = tb.node_sh(node, "ip", "neigh", "show", g, "dev", "flannel.1")
                return m in res.stdout

            wait_for("the new neighbour entry", has_mac, timeout=60, interval=0.002)
        out.append(time.monotonic() - start)
    return out


def run(n: int, changes: int) -> dict[str, float]:
    tb = Testbed()
    try:
        api = tb.start_kubeapi(NETWORK)
        t0 = time.monotonic()
        for i in range(n):
            name, cidr, public, mac = peer(i)
            api.add_node(name, pod_cidrs=[cidr], annotations=peer_annotations(public, mac))
        seed = time.monotonic() - t0
        node = tb.add_node(pod_cidr=False)
        api.add_node(node.name, pod_cidrs=["10.250.0.0/24"], internal_ip=node.address)
        base = baseline(tb, node, n)
        start = time.monotonic()
        tb.start_daemon(node)
        wait_for(f"{n} routes", lambda: route_count(tb, node) >= n, timeout=600, interval=0.05)
        synced = time.monotonic() - start
        mem = proc_status(daemon_pid(node))
        lat = change_latency(tb, node, n, changes)
        mem_after = proc_status(daemon_pid(node))
        lat_sorted = sorted(lat)
        return {
            "nodes": n,
            "seed_api_s": seed,
            "baseline_ip_batch_s": base,
            "cold_sync_s": synced,
            "ratio_to_baseline": synced / base if base else float("nan"),
            "rss_mib": mem["VmRSS"],
            "peak_rss_mib": max(mem["VmHWM"], mem_after["VmHWM"]),
            "change_p50_ms": statistics.median(lat) * 1000,
            "change_p90_ms": lat_sorted[int(0.9 * (len(lat) - 1))] * 1000,
            "change_max_ms": lat_sorted[-1] * 1000,
        }
    finally:
        tb.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kube-mode scale benchmark")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 1 <= args.nodes <= 10000:
        parser.error("--nodes must be 1 to 10000")
    result = run(args.nodes, max(2, args.changes))
    if args.json:
        print(json.dumps(result))
        return 0
    width = max(len(k) for k in result)
    print(f"kube mode, {args.nodes} synthetic Nodes, one flanneld-py node")
    for key, value in result.items():
        print(f"  {key:<{width}}  {value:10.2f}" if isinstance(value, float) else
              f"  {key:<{width}}  {value:10d}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
