"""Faults a node must survive, end to end in the testbed with pods pinging (issue 5, faults 7, 8,
10 and 11; fault 12 needs no kernel and is in test_properties.py).

7. A peer's public IP changes, or its public IP and VTEP MAC change together: the other nodes'
   entries follow and the old FDB entry is removed (the MAC-only case is in test_overlay.py).
8. Someone deletes a route, a neighbour entry, an FDB entry or the whole `flannel.1` inside a
   node: restored within a few resync periods, and pods reach each other again.
10. Several etcd endpoints of which the first are dead (nothing answers, or the port is closed):
    the daemons start, converge and follow later changes; the daemon's config read goes through
    the live endpoint (in-process, with the client starting on the first endpoint).
11. The subnet space runs out: the extra node logs an error naming the network and its size,
    stays alive and idle while it retries with backoff, and takes the first subnet that frees up.

Each test builds its own testbed (tests/testbed.py). Changes made behind a peer's back (its lease
rewritten in etcd) are made with that peer's daemon stopped (SIGTERM leaves its datapath and its
lease in place), because a running daemon writes its own lease back.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from flanneld_py.daemon import wait_for_config
from subnet.config import NetworkConfig
from subnet.etcd import EtcdOptions, EtcdRegistry, EtcdSubnetManager
from subnet.lease import LeaseAttrs
from tests.testbed import ETCD_URL, Node, Pod, Testbed, wait_for

pytestmark = pytest.mark.kernel

RESYNC = 2.0  # --resync-period of the self-repair tests, seconds
REPAIR_DEADLINE = 5 * RESYNC  # the issue says "within one resync period"; polled over five


def start(tb: Testbed, count: int, *extra: str) -> list[Node]:
    """Add `count` nodes, start their daemons with `extra` flags, wait for a converged mesh."""
    nodes = [tb.add_node() for _ in range(count)]
    for node in nodes:
        tb.start_daemon(node, *extra)
    for node in nodes:
        tb.wait_subnet(node)
    tb.wait_converged()
    return nodes


def lease_key(tb: Testbed, node: Node) -> str:
    """The node's full etcd key, `<prefix>/subnets/10.244.3.0-24`."""
    return f"{tb.etcd_prefix}/subnets/{tb.subnet_of(node).replace('/', '-')}"


def peer_entries(tb: Testbed, peer: Node) -> tuple[str, str, str, str]:
    """(subnet, VTEP IP, VTEP MAC, public IP) the other nodes must program for `peer`."""
    subnet = tb.subnet_of(peer)
    return subnet, subnet.split("/")[0], tb.vtep_mac(peer), peer.address


def rewrite_lease(tb: Testbed, peer: Node, public_ip: str, mac: str) -> None:
    """Put the peer's lease back with another public IP and VTEP MAC, on the same etcd lease."""
    key = lease_key(tb, peer)
    value, meta = tb.client.get(key)
    assert value is not None, f"{peer.name} has no lease {key}"
    old = LeaseAttrs.decode(value)
    new = LeaseAttrs.decode(
        json.dumps(
            {"PublicIP": public_ip, "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": mac}}
        )
    )  # fmt: skip
    assert new != old
    tb.client.put(key, new.encode(), lease=meta.lease_id)


def pods_reach_each_other(tb: Testbed, a: Pod, b: Pod) -> bool:
    return tb.ping(a, b.ip, count=3) and tb.ping(b, a.ip, count=3)


# --- fault 7: a peer's public IP (and MAC) change ---------------------------------------------


@pytest.mark.parametrize("change_mac", [False, True], ids=["public-ip", "public-ip-and-mac"])
def test_peer_public_ip_change_moves_its_entries(testbed: Testbed, change_mac: bool) -> None:
    node, peer = start(testbed, 2)
    pod_a, pod_b = testbed.add_pod(node), testbed.add_pod(peer)
    assert pods_reach_each_other(testbed, pod_a, pod_b)
    subnet, vtep_ip, old_mac, old_ip = peer_entries(testbed, peer)
    new_ip = "198.18.0.102"
    new_mac = "0e:5a:00:00:01:02" if change_mac else old_mac
    # The peer really moves: a new underlay address (the old one stays, as the VXLAN device's
    # local address), and with change_mac a new MAC on its device. Its daemon is stopped so
    # that it does not write its old lease value back.
    assert testbed.stop_daemon(peer) == 0
    testbed.node_sh(peer, "ip", "addr", "add", f"{new_ip}/24", "dev", "eth0")
    if change_mac:
        testbed.node_sh(peer, "ip", "link", "set", "flannel.1", "address", new_mac)
        # a MAC change flushes the device's neighbour entries, permanent ones too; put back the
        # one the peer's own daemon would restore at its next resync
        _, node_vtep, node_mac, _ = peer_entries(testbed, node)
        testbed.node_sh(peer, "ip", "neigh", "replace", node_vtep, "lladdr", node_mac,
                        "dev", "flannel.1", "nud", "permanent")  # fmt: skip
    rewrite_lease(testbed, peer, new_ip, new_mac)

    def fdb_moved() -> bool:
        fdb = testbed.fdb(node)
        return (new_mac, new_ip) in fdb and (old_mac, old_ip) not in fdb

    wait_for(f"{node.name}'s FDB to hold ({new_mac}, {new_ip}) and not ({old_mac}, {old_ip})",
             fdb_moved)  # fmt: skip
    assert testbed.neighbours(node).get(vtep_ip) == new_mac
    assert subnet in testbed.routes(node)
    assert [e for e in testbed.fdb(node) if e[0] in (old_mac, new_mac)] == [(new_mac, new_ip)]
    assert pods_reach_each_other(testbed, pod_a, pod_b)


# --- fault 8: kernel entries deleted by someone else ------------------------------------------


def delete_entry(tb: Testbed, node: Node, what: str, peer: Node) -> None:
    subnet, vtep_ip, mac, public_ip = peer_entries(tb, peer)
    cmd = {
        "route": ["ip", "route", "del", subnet, "dev", "flannel.1"],
        "neighbour": ["ip", "neigh", "del", vtep_ip, "dev", "flannel.1"],
        "fdb": ["bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", public_ip],
        "device": ["ip", "link", "del", "flannel.1"],
    }[what]
    tb.node_sh(node, *cmd)  # raises unless the kernel deleted it


@pytest.mark.parametrize("what", ["route", "neighbour", "fdb", "device"])
def test_deleted_kernel_state_is_restored_within_a_resync_period(
    testbed: Testbed, what: str
) -> None:
    nodes = start(testbed, 3, f"--resync-period={RESYNC:g}")
    node = nodes[0]
    pods = [testbed.add_pod(n) for n in nodes]
    assert testbed.cross_node_ping_failures(pods) == []
    mac = testbed.vtep_mac(node)
    address = f"{testbed.subnet_of(node).split('/')[0]}/32"
    want = {p.name: peer_entries(testbed, p) for p in nodes[1:]}

    def restored() -> bool:
        routes, neighs, fdb = testbed.routes(node), testbed.neighbours(node), testbed.fdb(node)
        return all(
            subnet in routes and neighs.get(vtep_ip) == peer_mac and (peer_mac, ip) in fdb
            for subnet, vtep_ip, peer_mac, ip in want.values()
        )

    assert restored()
    delete_entry(testbed, node, what, nodes[1])
    wait_for(f"{node.name}'s entries after the {what} was deleted", restored,
             timeout=REPAIR_DEADLINE)  # fmt: skip
    # the recreated device is the same to the peers: same MAC, same VTEP address
    assert testbed.vtep_mac(node) == mac
    res = testbed.node_sh(node, "ip", "-j", "addr", "show", "dev", "flannel.1")
    addrs = {f"{a['local']}/{a['prefixlen']}" for a in json.loads(res.stdout)[0]["addr_info"]}
    assert address in addrs
    assert node.process is not None and node.process.poll() is None
    assert testbed.cross_node_ping_failures(pods) == []


# --- fault 10: the first etcd endpoints are dead ---------------------------------------------

UNREACHABLE = "http://198.18.0.253:2379"  # on the underlay, but nothing answers ARP
REFUSING = "http://198.18.0.254:2399"  # the etcd host, a closed port
FAILOVER_BUG = (
    "bug: subnet.etcd.EtcdRegistry relies on pyetcd's failover, which starts on a random "
    "endpoint and skips a failed one only for time_retry (1 s) after its failure; every retry "
    "loop of the daemon waits >= 1 s (wait_for_config: 1 s), so a dead endpoint is tried again "
    "and again and the live one never"
)


def test_daemons_start_and_converge_with_dead_etcd_endpoints_listed_first(
    testbed: Testbed,
) -> None:
    # Each daemon's client starts on a random endpoint (pyetcd), so eight daemons and two dead
    # endpoints of three make a start on a dead one all but certain ((1/3)^8 otherwise).
    # start_daemon passes --etcd-endpoints itself; given again, the last one wins (as in Go's
    # flag package; test_properties.test_later_flag_wins).
    flag = f"--etcd-endpoints={UNREACHABLE},{REFUSING},{ETCD_URL}"
    nodes = [testbed.add_node() for _ in range(8)]
    for node in nodes[:7]:
        testbed.start_daemon(node, flag)
    for node in nodes[:7]:
        testbed.wait_subnet(node, timeout=45)
    testbed.wait_converged(timeout=60)
    # a node that joins later reaches the others through their watches
    testbed.start_daemon(nodes[7], flag)
    testbed.wait_subnet(nodes[7], timeout=45)
    testbed.wait_converged(timeout=60)
    pods = [testbed.add_pod(n) for n in (nodes[0], nodes[7])]
    assert testbed.cross_node_ping_failures(pods) == []
    assert len(testbed.leases()) == 8


def first_endpoint_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make pyetcd start on the first endpoint listed (as Go's client tries them in order)."""
    monkeypatch.setattr(sys.modules["pyetcd.client"].random, "choice", lambda seq: seq[0])


@pytest.mark.parametrize(
    "endpoints",
    [
        pytest.param(
            f"{UNREACHABLE},{ETCD_URL}",
            id="first-unreachable",
        ),
        pytest.param(
            f"{REFUSING},{ETCD_URL}",
            id="first-refusing",
        ),
        pytest.param(f"{ETCD_URL},{UNREACHABLE}", id="second-unreachable"),
    ],
)
def test_config_is_read_through_the_live_endpoint_when_the_first_is_dead(
    testbed: Testbed, monkeypatch: pytest.MonkeyPatch, endpoints: str
) -> None:
    # the daemon's own start-up step (flanneld_py.daemon.wait_for_config: one try a second),
    # in-process, so that the endpoint the client starts on is the first one, every time
    first_endpoint_first(monkeypatch)
    sm = EtcdSubnetManager(EtcdRegistry(EtcdOptions(endpoints=endpoints,
                                                    prefix=testbed.etcd_prefix)))  # fmt: skip
    stop = threading.Event()
    result: list[NetworkConfig | None] = []
    worker = threading.Thread(target=lambda: result.append(wait_for_config(sm, stop)))
    worker.start()
    try:
        wait_for("the network config through the live endpoint", lambda: result, timeout=20)
    finally:
        stop.set()
        worker.join(timeout=30)
        sm.close()
    assert result and result[0] is not None and str(result[0].network) == "10.244.0.0/16"


# --- fault 11: the subnet space runs out --------------------------------------------------------

SMALL_NETWORK = '{"Network": "10.244.0.0/28", "SubnetLen": 30, "Backend": {"Type": "vxlan"}}'


def http_get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_full_network_retries_with_backoff_then_takes_a_freed_subnet(testbed: Testbed) -> None:
    testbed.put_config(SMALL_NETWORK)  # SubnetMin .4, SubnetMax .12: three /30 subnets
    first = start(testbed, 3)
    assert sorted(testbed.leases()) == ["10.244.0.12-30", "10.244.0.4-30", "10.244.0.8-30"]
    late = testbed.add_node()
    testbed.start_daemon(late, "--healthz-port=8081", f"--healthz-ip={late.address}")
    base = f"http://{late.address}:8081"

    def retries() -> list[tuple[str, str]]:
        return re.findall(r"could not acquire a lease: (.*); retrying in (\d+) s", late.log())

    wait_for("three failed acquisitions", lambda: len(retries()) >= 3, timeout=60)
    assert late.process is not None and late.process.poll() is None
    pid = late.process.pid  # `ip netns exec` execs the daemon: same process
    wall0, cpu0 = time.monotonic(), cpu_seconds(pid)
    seen = retries()
    assert all(
        re.fullmatch(r"out of subnets: all 3 /30 subnets of 10\.244\.0\.0/28 between "
                     r"10\.244\.0\.4 and 10\.244\.0\.12 are leased", why)
        for why, _ in seen
    ), seen  # fmt: skip
    delays = [int(d) for _, d in seen]
    assert delays[:3] == [1, 2, 4], f"no backoff: {delays}"
    assert not late.subnet_file.exists()
    status, reason = http_get(f"{base}/readyz")
    assert status == 503 and "subnet.env" in reason
    assert http_get(f"{base}/healthz")[0] == 200  # alive: no reason to restart it
    # idle between attempts: over one backoff interval it uses a fraction of one CPU
    wait_for("a fourth attempt", lambda: len(retries()) >= 4, timeout=60)
    wall, cpu = time.monotonic() - wall0, cpu_seconds(pid) - cpu0
    assert late.process.poll() is None
    assert cpu < 0.25 * wall, f"{cpu:.2f} s CPU in {wall:.2f} s while waiting for a subnet"

    # one node leaves and its lease is deleted: the waiting node takes that subnet
    gone = first[0]
    freed = testbed.subnet_of(gone)
    assert testbed.stop_daemon(gone) == 0
    testbed.client.delete(lease_key(testbed, gone))
    testbed.wait_subnet(late, timeout=60)
    assert testbed.subnet_of(late) == freed
    wait_for("/readyz 200", lambda: http_get(f"{base}/readyz")[0] == 200, timeout=60)
    testbed.wait_converged()
    pods = [testbed.add_pod(late), testbed.add_pod(first[1])]
    assert testbed.cross_node_ping_failures(pods) == []
