"""Faults of issue 5 that involve the daemon process and the datastore, with traffic running.

1. daemon restart (SIGTERM, SIGKILL) while pods ping across nodes: not one ping lost, same subnet;
2. etcd down longer than a watch timeout: the datapath stays exactly as it was, nothing is removed
   because etcd is unreachable, and changes made around the outage are applied once it is back;
3. etcd history compacted past the watch's revision: a re-list, no missed and no phantom peer;
5. the node's own lease deleted or expired: re-acquired with the same subnet, peers converge,
   traffic to the node resumes;
6. a node away longer than its TTL finds its old subnet leased by another node: it takes another
   subnet (never a duplicate), rewrites subnet.env and says so in its log.

Continuous pings run in the background (`Pinger`); a lost ping is a gap in the icmp_seq numbers of
the replies. Every wait polls a condition with a deadline.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from subnet.lease import LeaseAttrs, parse_subnet_key
from tests.testbed import Node, Pod, Testbed, end_process, wait_for

pytestmark = pytest.mark.kernel

HEALTH_PORT = 8081
SYNTHETIC_IP = "198.18.0.99"  # a node that exists only as a lease in etcd
SYNTHETIC_MAC = "0e:00:00:00:00:99"


# --- helpers ------------------------------------------------------------------------------------


class Pinger:
    """A continuous ping (every 50 ms) from a pod, in the background; records reply sequences."""

    def __init__(self, src: Pod, dst_ip: str) -> None:
        self.what = f"{src.name} -> {dst_ip}"
        cmd = ["ip", "netns", "exec", src.netns, "ping", "-n", "-i", "0.05", "-w", "300", dst_ip]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.seqs: set[int] = set()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            m = re.search(r"bytes from .*icmp_seq=(\d+)", line)
            if m:
                self.seqs.add(int(m.group(1)))

    def replies(self) -> int:
        return len(self.seqs)

    def wait_replies(self, more: int, timeout: float = 30) -> None:
        """Wait until `more` further replies have arrived."""
        target = self.replies() + more
        wait_for(f"{more} more replies to {self.what}", lambda: self.replies() >= target, timeout)

    def stop(self) -> None:
        """Stop ping (SIGINT, by PID) and wait for its output."""
        end_process(self.proc, signal.SIGINT)
        self._reader.join(timeout=10)

    def lost(self) -> list[int]:
        """Sequence numbers with no reply, up to the last one answered (a request still in
        flight when ping was stopped is not a loss)."""
        if not self.seqs:
            return [0]
        return [s for s in range(1, max(self.seqs) + 1) if s not in self.seqs]

    def report(self) -> str:
        lost = self.lost()
        return (
            f"{self.what}: {len(lost)} of {max(self.seqs, default=0)} pings lost "
            f"(first lost: {lost[:10]}); last output: {self.lines[-5:]}"
        )


@contextmanager
def pinging(src: Pod, dst_ip: str) -> Iterator[Pinger]:
    """A `Pinger` that is stopped on the way out, whatever happens."""
    p = Pinger(src, dst_ip)
    try:
        yield p
    finally:
        p.stop()


class KernelMonitor:
    """`ip monitor` of a node's links, addresses, routes and neighbours (FDB entries included),
    in the background: any removal on the overlay device is seen, however short-lived."""

    PROBE = "203.0.113.77"  # a route on the node's lo that shows the monitor is listening

    def __init__(self, tb: Testbed, node: Node) -> None:
        self.node = node
        cmd = ["ip", "netns", "exec", node.netns, "ip", "monitor", "link", "address", "route",
               "neigh"]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        probe = f"{self.PROBE}/32"

        def listening() -> bool:  # add and remove the probe until the monitor reports it
            if any(self.PROBE in line for line in self.lines):
                return True
            tb.node_sh(node, "ip", "route", "replace", probe, "dev", "lo")
            tb.node_sh(node, "ip", "route", "del", probe, "dev", "lo", check=False)
            return any(self.PROBE in line for line in self.lines)

        wait_for(f"ip monitor on {node.name} to listen", listening)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())

    def removals(self) -> list[str]:
        """Every removal seen on flannel.1 (or of flannel.1) so far."""
        return [ln for ln in list(self.lines) if ln.startswith("Deleted") and "flannel.1" in ln]

    def stop(self) -> None:
        """Stop the monitor (by PID)."""
        end_process(self.proc)
        self._reader.join(timeout=10)


@contextmanager
def monitoring(tb: Testbed, node: Node) -> Iterator[KernelMonitor]:
    """A `KernelMonitor` that is stopped on the way out, whatever happens."""
    m = KernelMonitor(tb, node)
    try:
        yield m
    finally:
        m.stop()


class Paused:
    """SIGSTOP a node's daemon (by PID) for the duration of a `with` block, then SIGCONT."""

    def __init__(self, node: Node) -> None:
        assert node.process is not None and node.process.poll() is None
        self.pid = node.process.pid

    def __enter__(self) -> Paused:
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        os.kill(self.pid, signal.SIGCONT)


def health_flags(node: Node) -> tuple[str, str]:
    return f"--healthz-port={HEALTH_PORT}", f"--healthz-ip={node.address}"


def full_passes(node: Node) -> float:
    """flannel_dataplane_sync_duration_seconds_count{pass="full"} of the node's daemon."""
    url = f"http://{node.address}:{HEALTH_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "flannel_dataplane_sync_duration_seconds_count" and s.labels == {
                "pass": "full"
            }:
                return float(s.value)
    raise AssertionError(f"no full-pass count in {node.name}'s metrics")


def subnet_key(subnet: str) -> str:
    return subnet.replace("/", "-")


def lease_path(tb: Testbed, subnet: str) -> str:
    return f"{tb.etcd_prefix}/subnets/{subnet_key(subnet)}"


def synthetic_value(public_ip: str = SYNTHETIC_IP, mac: str = SYNTHETIC_MAC) -> bytes:
    """A valid vxlan lease value of a node that does not exist."""
    value = {
        "PublicIP": public_ip,
        "PublicIPv6": None,
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": mac},
    }
    return LeaseAttrs.decode(json.dumps(value)).encode()


def put_synthetic(tb: Testbed, subnet: str, public_ip: str, mac: str, ttl: int = 3600) -> int:
    """Lease `subnet` to a synthetic node (an etcd lease of `ttl` s); returns the etcd lease ID."""
    lease = tb.client.lease(ttl)
    tb.client.put(lease_path(tb, subnet), synthetic_value(public_ip, mac), lease=lease.id)
    return int(lease.id)


def etcd_peers(tb: Testbed) -> dict[str, tuple[str, str]]:
    """Every lease in etcd: {subnet CIDR: (VTEP MAC, public IP)}."""
    out = {}
    for key, value in tb.leases().items():
        v4, _ = parse_subnet_key(key)
        attrs = LeaseAttrs.decode(value)
        out[str(v4)] = (str(attrs.backend_data["VtepMAC"]), str(attrs.public_ip))
    return out


def datapath(tb: Testbed, node: Node) -> tuple[set[str], dict[str, str], set[tuple[str, str]]]:
    """(routes, neighbours, FDB entries) of the node's overlay device."""
    return tb.routes(node), tb.neighbours(node), tb.fdb(node)


def expected_datapath(
    tb: Testbed, node: Node
) -> tuple[set[str], dict[str, str], set[tuple[str, str]]]:
    """What `datapath(node)` must be for exactly the leases in etcd other than the node's own."""
    own = tb.subnet_of(node)
    peers = {s: p for s, p in etcd_peers(tb).items() if s != own}
    return (
        set(peers),
        {s.split("/")[0]: mac for s, (mac, _) in peers.items()},
        set(peers.values()),
    )


def wait_matches(tb: Testbed, node: Node, what: str = "") -> None:
    """Wait until the node's datapath is exactly what the leases in etcd ask for; fails with
    both when it is not by the deadline."""
    try:
        wait_for(
            what or f"{node.name} to match etcd",
            lambda: datapath(tb, node) == expected_datapath(tb, node),
        )
    except RuntimeError as err:  # TestbedError: timed out
        raise AssertionError(
            f"{err}\n  kernel: {datapath(tb, node)}\n  etcd:   {expected_datapath(tb, node)}"
        ) from None


def has_route(tb: Testbed, node: Node, subnet: str) -> Callable[[], bool]:
    """A probe: the node has a route to `subnet` through the overlay."""

    def probe() -> bool:
        return subnet in tb.routes(node)

    return probe


def keys_of_ip(tb: Testbed, public_ip: str) -> list[str]:
    return sorted(
        k for k, v in tb.leases().items() if str(LeaseAttrs.decode(v).public_ip) == public_ip
    )


def wait_synced_again(node: Node, before: int) -> None:
    """Wait for a new 'datapath in sync' line (the first full pass of a (re)started daemon)."""
    wait_for(f"{node.name}'s daemon to sync", lambda: node.log().count("datapath in sync") > before)


# --- 1. daemon restart with traffic running -----------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_loses_no_ping_and_keeps_subnet(testbed: Testbed, sig: int) -> None:
    node, peer = testbed.start_nodes(2)
    pod_a, pod_b = testbed.add_pod(node), testbed.add_pod(peer)
    subnet_before = node.subnet_env()["FLANNEL_SUBNET"]
    mac_before = testbed.vtep_mac(node)
    with (
        monitoring(testbed, node) as kernel,
        pinging(pod_a, pod_b.ip) as there,
        pinging(pod_b, pod_a.ip) as back,
    ):
        there.wait_replies(10)
        back.wait_replies(10)
        syncs = node.log().count("datapath in sync")
        code = testbed.stop_daemon(node, sig)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        testbed.start_daemon(node)
        wait_synced_again(node, syncs)
        there.wait_replies(20)
        back.wait_replies(20)
    assert kernel.removals() == [], "entries removed during the restart"
    assert there.lost() == [], there.report()
    assert back.lost() == [], back.report()
    assert node.process is not None and node.process.poll() is None
    assert node.subnet_env()["FLANNEL_SUBNET"] == subnet_before
    assert testbed.vtep_mac(node) == mac_before
    assert keys_of_ip(testbed, node.address) == [subnet_key(testbed.subnet_of(node))]
    assert datapath(testbed, node) == expected_datapath(testbed, node)


# --- 2. etcd down longer than a watch timeout ---------------------------------------------------


def test_etcd_outage_keeps_datapath_and_applies_later_changes(testbed: Testbed) -> None:
    nodes = [testbed.add_node() for _ in range(3)]
    for node in nodes:
        testbed.start_daemon(node, *health_flags(node), "--resync-period=2")
    for node in nodes:
        testbed.wait_subnet(node)
    testbed.wait_converged()
    n1, n2, n3 = nodes
    pods = [testbed.add_pod(node) for node in nodes]
    own_values = {
        n.name: testbed.client.get(lease_path(testbed, testbed.subnet_of(n)))[0] for n in (n1, n2)
    }
    n3_subnet = testbed.subnet_of(n3)
    n3_vtep = (testbed.vtep_mac(n3), n3.address)
    before = {n.name: datapath(testbed, n) for n in (n1, n2)}
    for n in (n1, n2):
        assert before[n.name] == expected_datapath(testbed, n)
    with (
        monitoring(testbed, n1) as kernel1,
        monitoring(testbed, n2) as kernel2,
        pinging(pods[0], pods[1].ip) as to_n2,
        pinging(pods[1], pods[0].ip) as to_n1,
        pinging(pods[0], pods[2].ip) as to_n3,
    ):
        for p in (to_n2, to_n1, to_n3):
            p.wait_replies(5)
        passes = {n.name: full_passes(n) for n in (n1, n2)}
        testbed.stop_etcd()
        down = time.monotonic()
        assert testbed.stop_daemon(n3) == 0  # node3 leaves while etcd is unreachable
        drift: list[str] = []
        seen_passes = dict(passes)
        # the outage: at least 20 s (longer than the gRPC keepalive timeout of 15 s) and at
        # least three full resyncs on both nodes, with the datapath checked all along
        deadline = down + 45
        while time.monotonic() < deadline:
            for n in (n1, n2):
                now = datapath(testbed, n)
                if now != before[n.name]:
                    drift.append(f"{n.name} after {time.monotonic() - down:.1f} s: {now}")
                assert n.process is not None and n.process.poll() is None, n.log()[-2000:]
                seen_passes[n.name] = full_passes(n)
            if drift:
                break
            if time.monotonic() - down >= 20 and all(
                seen_passes[k] >= passes[k] + 3 for k in passes
            ):
                break
            time.sleep(0.5)
        assert drift == [], f"datapath changed while etcd was down (before: {before}): {drift}"
        assert all(seen_passes[k] >= passes[k] + 3 for k in passes), (passes, seen_passes)
        assert "watch interrupted" in n1.log() and "watch interrupted" in n2.log()
        testbed.start_etcd()
        # a change right after the outage: a new node's lease; once it is programmed, both
        # watches are live again
        put_synthetic(testbed, "10.244.240.0/24", SYNTHETIC_IP, SYNTHETIC_MAC)
        for n in (n1, n2):
            wait_for(f"{n.name} to add the new lease", has_route(testbed, n, "10.244.240.0/24"))
        to_n3.wait_replies(5)
        to_n3.stop()  # node3's route goes away next, on purpose
        assert to_n3.lost() == [], to_n3.report()
        # nothing was removed during the outage or when the watches came back
        assert kernel1.removals() == [] and kernel2.removals() == [], (
            kernel1.removals(),
            kernel2.removals(),
        )
        # and node3, which left during the outage, is removed once its lease goes
        testbed.client.delete(lease_path(testbed, n3_subnet))
        for n in (n1, n2):
            want = {testbed.subnet_of(o) for o in (n1, n2) if o is not n} | {"10.244.240.0/24"}

            def follows(n: Node = n, want: set[str] = want) -> bool:
                return testbed.routes(n) == want

            wait_for(f"{n.name} to follow the changes (routes {sorted(want)})", follows)
            assert datapath(testbed, n) == expected_datapath(testbed, n)
            assert n3_vtep not in testbed.fdb(n)
        to_n2.wait_replies(5)
        to_n1.wait_replies(5)
    assert to_n2.lost() == [], to_n2.report()
    assert to_n1.lost() == [], to_n1.report()
    for n in (n1, n2):
        key = lease_path(testbed, testbed.subnet_of(n))
        assert testbed.client.get(key)[0] == own_values[n.name], "own lease rewritten"
        log = n.log()
        assert "is gone from the datastore" not in log, log[-2000:]
        assert "was deleted or expired" not in log, log[-2000:]


# --- 3. compaction past the watch's revision ----------------------------------------------------


def test_compaction_past_watch_revision_relists_without_missed_or_phantom_peers(
    testbed: Testbed,
) -> None:
    n1, n2 = testbed.start_nodes(2)
    # a peer node1 knows about, deleted while node1 cannot watch
    put_synthetic(testbed, "10.244.230.0/24", "198.18.0.90", "0e:00:00:00:00:90")
    wait_for("node1 to know 10.244.230.0/24", has_route(testbed, n1, "10.244.230.0/24"))
    relists = n1.log().count("re-listing")
    with Paused(n1):  # node1's watch is cut (etcd restarts) while it cannot read anything
        testbed.stop_etcd()
        testbed.start_etcd()
        put_synthetic(testbed, "10.244.231.0/24", "198.18.0.91", "0e:00:00:00:00:91")  # missed?
        put_synthetic(testbed, "10.244.232.0/24", "198.18.0.92", "0e:00:00:00:00:92")
        testbed.client.delete(lease_path(testbed, "10.244.232.0/24"))  # a short-lived one
        testbed.client.delete(lease_path(testbed, "10.244.230.0/24"))  # phantom?
        _, meta = testbed.client.get(f"{testbed.etcd_prefix}/config")
        testbed.client.compact(meta.response_header.revision)
    for node in (n1, n2):
        want = expected_datapath(testbed, node)
        assert "10.244.231.0/24" in want[0] and "10.244.230.0/24" not in want[0]
        wait_matches(testbed, node)
    # the path under test was taken: node1's watch resumed below the compaction and re-listed
    log = n1.log()
    assert log.count("re-listing") > relists and "compacted past revision" in log, log[-3000:]
    assert n1.process is not None and n1.process.poll() is None


# --- 5. own lease deleted or expired ------------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_own_lease_lost_is_reacquired_with_same_subnet(testbed: Testbed, how: str) -> None:
    node, peer = testbed.start_nodes(2)
    pod_a, pod_b = testbed.add_pod(node), testbed.add_pod(peer)
    assert testbed.ping(pod_b, pod_a.ip, count=3)
    subnet_env = node.subnet_env()["FLANNEL_SUBNET"]
    subnet = testbed.subnet_of(node)
    key = lease_path(testbed, subnet)
    value, meta = testbed.client.get(key)
    old_lease = int(meta.lease_id)
    assert old_lease != 0
    if how == "deleted":
        testbed.client.delete(key)
    else:  # an expiry: etcd deletes the key with its lease
        testbed.client.revoke_lease(old_lease)
    wait_for("the daemon to notice", lambda: "was deleted or expired" in node.log())

    def reacquired() -> list[str]:
        return keys_of_ip(testbed, node.address)

    assert wait_for(f"{node.name}'s lease re-acquired", reacquired) == [subnet_key(subnet)]
    assert int(testbed.client.get(key)[1].lease_id) not in (0, old_lease)
    assert testbed.client.get(key)[0] == value
    assert node.subnet_env()["FLANNEL_SUBNET"] == subnet_env
    wait_matches(testbed, peer, f"{peer.name} to have {node.name}'s entries again")
    assert subnet in testbed.routes(peer)
    wait_for(f"{pod_b.name} to reach {pod_a.name} again", lambda: testbed.ping(pod_b, pod_a.ip))
    assert datapath(testbed, node) == expected_datapath(testbed, node)
    assert node.process is not None and node.process.poll() is None


# --- 6. back after the TTL, old subnet taken by another node ------------------------------------


def subnet_forms(cidr: str) -> tuple[str, ...]:
    """The ways a log line may name a subnet: CIDR, etcd key, FLANNEL_SUBNET."""
    net = ipaddress.ip_network(cidr)
    return cidr, subnet_key(cidr), f"{net.network_address + 1}/{net.prefixlen}"


def test_node_back_after_ttl_gets_another_subnet_and_says_so(testbed: Testbed) -> None:
    node, peer = testbed.start_nodes(2)
    old = testbed.subnet_of(node)
    old_env = node.subnet_env()
    assert testbed.stop_daemon(node) == 0
    testbed.client.delete(lease_path(testbed, old))  # its lease expired while it was away
    synthetic_lease = put_synthetic(testbed, old, SYNTHETIC_IP, SYNTHETIC_MAC)
    synthetic = testbed.client.get(lease_path(testbed, old))
    wait_for(
        f"{peer.name} to follow the subnet's new owner",
        lambda: testbed.neighbours(peer).get(old.split("/")[0]) == SYNTHETIC_MAC,
    )
    log_before = len(node.log())
    testbed.start_daemon(node)
    wait_for(
        f"{node.name}'s daemon to write subnet.env",
        lambda: f"wrote {node.subnet_file}" in node.log()[log_before:],
    )
    new_env = node.subnet_env()
    new = testbed.subnet_of(node)
    assert new != old, f"{node.name} took {old} again, leased to {SYNTHETIC_IP}"
    assert {k: v for k, v in new_env.items() if k != "FLANNEL_SUBNET"} == {
        k: v for k, v in old_env.items() if k != "FLANNEL_SUBNET"
    }
    # never a duplicate: the other node's lease is untouched, this node has exactly one
    value, meta = testbed.client.get(lease_path(testbed, old))
    assert value == synthetic[0] and int(meta.lease_id) == synthetic_lease
    assert meta.mod_revision == synthetic[1].mod_revision
    assert keys_of_ip(testbed, node.address) == [subnet_key(new)]
    assert keys_of_ip(testbed, SYNTHETIC_IP) == [subnet_key(old)]
    # everyone converges: the old subnet now leads to the other node, the new one to this node
    for n in (node, peer):
        wait_matches(testbed, n)
    assert old in testbed.routes(node) and new in testbed.routes(peer)
    assert node.process is not None and node.process.poll() is None
    # and the log says so: one line naming both the old subnet and the new one
    lines = node.log()[log_before:].splitlines()
    said = [
        line
        for line in lines
        if any(f in line for f in subnet_forms(old)) and any(f in line for f in subnet_forms(new))
    ]
    assert said, f"no log line names both the old subnet {old} and the new {new}:\n" + "\n".join(
        lines
    )
