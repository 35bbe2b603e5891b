"""Dual stack and IPv6-only networks, end to end: flanneld-py nodes on an IPv6 (and IPv4) underlay.

What a Go flanneld in the same cluster relies on (flannel-behaviour.md §2.2, §2.3, §4, §5): the
`&` subnet key (`0.0.0.0-0&...` when IPv6-only), the lease value with PublicIPv6 and
BackendV6Data, subnet.env's IPv6 lines, `flannel-v6.<VNI>` with the `/128` address and the
per-peer entries. Where flanneld-py differs on purpose: the IPv6 device's MTU overhead is 70
bytes and FLANNEL_MTU fits both devices; IPv6-only leases are matched on PublicIPv6 (README
"Compared with flanneld"). The pure helpers get unit tests first.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from typing import Any

import pytest

from flanneld_py.families import missing_part, same_subnets
from subnet.lease import Lease, LeaseAttrs
from tests.testbed import POD_NETWORK6, Node, Testbed, in_private_netns, wait_for

DUAL_CONFIG = json.dumps({"Network": "10.244.0.0/16", "EnableIPv6": True,
                          "IPv6Network": POD_NETWORK6, "Backend": {"Type": "vxlan"}})  # fmt: skip
V6_CONFIG = json.dumps({"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": POD_NETWORK6,
                        "Backend": {"Type": "vxlan"}})  # fmt: skip
V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network


# --- pure helpers --------------------------------------------------------------------------------


def lease(v4: str | None, v6: str | None, attrs: LeaseAttrs | None = None) -> Lease:
    return Lease(V4(v4) if v4 else None, V6(v6) if v6 else None, attrs or LeaseAttrs())


def test_own_lease_is_recognised_by_the_subnets_of_every_enabled_family() -> None:
    own = lease("10.244.1.0/24", "fd10:244:0:1::/64")
    assert same_subnets(lease("10.244.1.0/24", None), own, (4,))
    assert same_subnets(lease("10.244.1.0/24", "fd10:244:0:9::/64"), own, (4,))
    assert same_subnets(lease(None, "fd10:244:0:1::/64"), own, (6,))
    assert not same_subnets(lease("10.244.1.0/24", "fd10:244:0:9::/64"), own, (6,))
    assert same_subnets(lease("10.244.1.0/24", "fd10:244:0:1::/64"), own, (4, 6))
    # dual stack compares both: one family alike is another node (whose overlap is refused)
    assert not same_subnets(lease("10.244.1.0/24", "fd10:244:0:9::/64"), own, (4, 6))
    assert not same_subnets(lease("10.244.1.0/24", None), own, (4, 6))
    v6_only = lease(None, "fd10:244:0:1::/64")
    assert not same_subnets(lease(None, "fd10:244:0:2::/64"), v6_only, (6,))
    assert not same_subnets(lease("10.244.1.0/24", None), v6_only, (6,))


def test_missing_part_names_what_a_peer_lacks_for_a_family() -> None:
    data = {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}
    full = LeaseAttrs(ipaddress.IPv4Address("198.18.0.9"), ipaddress.IPv6Address("2001:db8::9"),
                      "vxlan", data, data)  # fmt: skip
    assert missing_part(lease("10.244.9.0/24", "fd10:244:0:9::/64", full), 4) == ""
    assert missing_part(lease("10.244.9.0/24", "fd10:244:0:9::/64", full), 6) == ""
    assert missing_part(lease(None, "fd10:244:0:9::/64", full), 4) == "no IPv4 subnet"
    assert missing_part(lease("10.244.9.0/24", None, full), 6) == "no IPv6 subnet"
    no_ip6 = LeaseAttrs(full.public_ip, None, "vxlan", data, data)
    assert missing_part(lease("10.244.9.0/24", "fd10:244:0:9::/64", no_ip6), 6) == "no PublicIPv6"
    no_data = LeaseAttrs(full.public_ip, full.public_ipv6, "vxlan", data, None)
    assert missing_part(lease(None, "fd10:244:0:9::/64", no_data), 6) == "no BackendV6Data"
    bad_mac = LeaseAttrs(full.public_ip, full.public_ipv6, "vxlan", data, {"VtepMAC": "zz"})
    assert missing_part(lease("10.244.9.0/24", "fd10:244:0:9::/64", bad_mac), 6) == (
        "BackendV6Data: VtepMAC 'zz' is not a MAC address"
    )


def test_first_sync_waits_for_every_device() -> None:
    from backend.reconcile import SyncResult
    from flanneld_py.observe import Observer

    obs = Observer("/nonexistent/subnet.env", "vxlan", "etcd", 30.0)
    obs.subnet_env_written = True
    obs.sync_pass("full", SyncResult(), 0.01, 2, complete=False)  # one device of two
    assert not obs.first_sync.is_set()
    assert obs.readiness() == (False, "the first peer sync is not in the kernel yet")
    obs.sync_pass("full", SyncResult(), 0.01, 4, complete=True)
    assert obs.first_sync.is_set() and obs.readiness() == (True, "")


# --- end to end ----------------------------------------------------------------------------------


def _testbed(families: tuple[int, ...], config: str) -> Iterator[Testbed]:
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    tb = Testbed(families=families)
    try:
        tb.start_etcd()
        tb.put_config(config)
        yield tb
    finally:
        tb.cleanup()


@pytest.fixture
def dual_testbed() -> Iterator[Testbed]:
    """Nodes with IPv4 and IPv6 underlay addresses, a dual-stack network config in etcd."""
    yield from _testbed((4, 6), DUAL_CONFIG)


@pytest.fixture
def v6_testbed() -> Iterator[Testbed]:
    """Nodes with IPv6 underlay addresses only (etcd reached at [2001:db8::fe]:2379), an
    IPv6-only network config (EnableIPv4 false)."""
    yield from _testbed((6,), V6_CONFIG)


def addresses(tb: Testbed, node: Node, dev: str, family: str) -> list[str]:
    res = tb.node_sh(node, "ip", "-j", "addr", "show", dev)
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(res.stdout)[0]["addr_info"]
            if a["family"] == family and a.get("scope") != "link"]  # fmt: skip


def mtu(tb: Testbed, node: Node, dev: str) -> int:
    res = tb.node_sh(node, "ip", "-j", "link", "show", dev)
    return int(json.loads(res.stdout)[0]["mtu"])


def first_host(cidr: str) -> str:
    net = ipaddress.ip_network(cidr)
    return f"{net.network_address + 1}/{net.prefixlen}"


def assert_v6_peers(tb: Testbed, nodes: list[Node]) -> None:
    """Every node has the IPv6 neighbour, FDB entry and onlink route of every other node on
    flannel-v6.1: the peer subnet's network address, its v6 VTEP MAC, its IPv6 public IP."""
    for node in nodes:
        for peer in nodes:
            if peer is node:
                continue
            subnet = tb.subnet6_of(peer)
            vtep_ip = subnet.split("/")[0]
            mac = tb.vtep_mac(peer, "flannel-v6.1")
            assert subnet in tb.routes(node, "flannel-v6.1")
            assert tb.neighbours(node, "flannel-v6.1")[vtep_ip] == mac
            assert (mac, peer.address6) in tb.fdb(node, "flannel-v6.1")
            route = tb.node_sh(node, "ip", "-6", "route", "show", subnet).stdout
            assert f"via {vtep_ip} dev flannel-v6.1" in route and "onlink" in route


@pytest.mark.kernel
def test_dual_stack_pods_reach_each_other_over_both_families(dual_testbed: Testbed) -> None:
    tb = dual_testbed
    nodes = tb.start_nodes(3)
    leases = tb.leases()
    assert len(leases) == 3
    for node in nodes:
        subnet, subnet6 = tb.subnet_of(node), tb.subnet6_of(node)
        # subnet.env: both families, FLANNEL_MTU fits the IPv6 device (1500 - 70)
        assert node.subnet_file.read_text() == (
            "FLANNEL_NETWORK=10.244.0.0/16\n"
            f"FLANNEL_SUBNET={first_host(subnet)}\n"
            f"FLANNEL_IPV6_NETWORK={POD_NETWORK6}\n"
            f"FLANNEL_IPV6_SUBNET={first_host(subnet6)}\n"
            "FLANNEL_MTU=1430\n"
            "FLANNEL_IPMASQ=false\n"
        )
        v6 = ipaddress.IPv6Network(subnet6)
        key = f"{subnet.replace('/', '-')}&{v6.network_address.compressed}-{v6.prefixlen}"
        mac, mac6 = tb.vtep_mac(node), tb.vtep_mac(node, "flannel-v6.1")
        assert (
            leases[key]
            == (
                f'{{"PublicIP":"{node.address}","PublicIPv6":"{node.address6}",'
                f'"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}},'
                f'"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}'
            ).encode()
        )
        assert mac != mac6
        assert (mtu(tb, node, "flannel.1"), mtu(tb, node, "flannel-v6.1")) == (1450, 1430)
        assert addresses(tb, node, "flannel.1", "inet") == [f"{subnet.split('/')[0]}/32"]
        assert addresses(tb, node, "flannel-v6.1", "inet6") == [f"{v6.network_address}/128"]
        link = json.loads(tb.node_sh(node, "ip", "-d", "-j", "link", "show",
                                     "flannel-v6.1").stdout)[0]  # fmt: skip
        info = link["linkinfo"]["info_data"]
        local = info.get("local6", info.get("local"))  # iproute2's key for an IPv6 local
        assert (info["id"], local, info["learning"]) == (1, node.address6, False)
        assert node.log().count("datapath in sync") == 2  # one first sync per device
        state_file = node.workdir / "flanneld-py-state.json"

        def state(path: Any = state_file) -> tuple[bool, int]:
            data = json.loads(path.read_text())
            return data["ready"], data["peers"]

        # ready once both devices had a full pass; peers counted once, not once per device
        wait_for("ready with 2 peers in the state file", lambda: state() == (True, 2))
    assert_v6_peers(tb, nodes)
    pods = [tb.add_pod(node) for node in nodes]
    for pod in pods:
        assert ipaddress.ip_address(pod.ip) in ipaddress.ip_network(tb.subnet_of(pod.node))
        assert ipaddress.ip_address(pod.ip6) in ipaddress.ip_network(tb.subnet6_of(pod.node))
    failures = [
        (src.name, ip)
        for src in pods
        for dst in pods
        if src.node is not dst.node
        for ip in (dst.ip, dst.ip6)
        if not tb.ping(src, ip, count=3)
    ]
    assert failures == []


@pytest.mark.kernel
def test_ipv6_only_cluster_over_an_ipv6_underlay(v6_testbed: Testbed) -> None:
    tb = v6_testbed
    nodes = tb.start_nodes(2)
    leases = tb.leases()
    for node in nodes:
        subnet6 = tb.subnet6_of(node)
        assert node.subnet_file.read_text() == (
            f"FLANNEL_IPV6_NETWORK={POD_NETWORK6}\n"
            f"FLANNEL_IPV6_SUBNET={first_host(subnet6)}\n"
            "FLANNEL_MTU=1430\n"
            "FLANNEL_IPMASQ=false\n"
        )
        v6 = ipaddress.IPv6Network(subnet6)
        key = f"0.0.0.0-0&{v6.network_address.compressed}-{v6.prefixlen}"
        mac6 = tb.vtep_mac(node, "flannel-v6.1")
        assert (
            leases[key]
            == (
                f'{{"PublicIP":"0.0.0.0","PublicIPv6":"{node.address6}","BackendType":"vxlan",'
                f'"BackendV6Data":{{"VNI":1,"VtepMAC":"{mac6}"}}}}'
            ).encode()
        )
        assert tb.node_sh(node, "ip", "link", "show", "flannel.1", check=False).returncode != 0
        assert addresses(tb, node, "flannel-v6.1", "inet6") == [f"{v6.network_address}/128"]
    assert_v6_peers(tb, nodes)
    pods = [tb.add_pod(node) for node in nodes]
    assert all(":" in pod.ip6 for pod in pods)
    assert tb.cross_node_ping_failures(pods) == []


@pytest.mark.kernel
def test_ipv6_only_restart_finds_its_lease_by_public_ipv6(v6_testbed: Testbed) -> None:
    """Every IPv6-only node publishes PublicIP 0.0.0.0: the lease is found by PublicIPv6
    (README "Compared with flanneld"), even without the previous subnet.env; a stray global
    address on flannel-v6.1 is removed, the link-local one kept."""
    tb = v6_testbed
    nodes = tb.start_nodes(2)
    node = nodes[1]
    key = next(k for k in tb.leases() if tb.subnet6_of(node).split("/")[0] in k)
    key_address = f"{tb.subnet6_of(node).split('/')[0]}/128"
    assert tb.stop_daemon(node) == 0
    node.subnet_file.unlink()
    tb.node_sh(node, "ip", "addr", "add", "2001:db8:99::5/64", "dev", "flannel-v6.1", "nodad")
    tb.start_daemon(node)
    tb.wait_subnet(node)
    assert f"reusing lease {key} (existing lease of public IP {node.address6})" in node.log()
    assert key in tb.leases() and len(tb.leases()) == 2
    wait_for("the stray address to go",
             lambda: addresses(tb, node, "flannel-v6.1", "inet6") == [key_address])  # fmt: skip
    res = tb.node_sh(node, "ip", "-j", "-6", "addr", "show", "flannel-v6.1", "scope", "link")
    assert json.loads(res.stdout)[0]["addr_info"], "the link-local address was removed"
    tb.wait_converged()


@pytest.mark.kernel
def test_ipv6_entries_removed_by_hand_are_restored_and_the_kernels_kept(
    dual_testbed: Testbed,
) -> None:
    """The IPv6 device's full pass repairs its own entries and leaves the kernel's routes (the
    link-local prefix, the /128 prefix route of the device address) alone."""
    tb = dual_testbed
    nodes = [tb.add_node() for _ in range(2)]
    for node in nodes:
        tb.start_daemon(node, "--resync-period=1")
    for node in nodes:
        tb.wait_subnet(node)
    tb.wait_converged()
    node, peer = nodes
    subnet6 = tb.subnet6_of(peer)
    vtep6 = subnet6.split("/")[0]
    own6 = tb.subnet6_of(node).split("/")[0]
    tb.node_sh(node, "ip", "-6", "route", "del", subnet6, "dev", "flannel-v6.1")
    tb.node_sh(node, "ip", "-6", "neigh", "del", vtep6, "dev", "flannel-v6.1")
    wait_for("the IPv6 route back", lambda: subnet6 in tb.routes(node, "flannel-v6.1"))
    wait_for("the IPv6 neighbour back", lambda: vtep6 in tb.neighbours(node, "flannel-v6.1"))
    routes = tb.routes(node, "flannel-v6.1")
    assert {"fe80::/64", own6} <= routes  # the kernel's, untouched by the full passes
    assert "0 failed" in node.log()
    pods = [tb.add_pod(n) for n in nodes]
    assert tb.ping(pods[0], pods[1].ip6, count=3)


@pytest.mark.kernel
def test_ip_blackhole_route_for_each_family(dual_testbed: Testbed) -> None:
    tb = dual_testbed
    node = tb.add_node()
    tb.start_daemon(node, "--ip-blackhole-route", "--iptables-resync=1")
    tb.wait_subnet(node)
    subnet, subnet6 = tb.subnet_of(node), tb.subnet6_of(node)

    def blackholes(*family: str) -> list[str]:
        return tb.node_sh(node, "ip", *family, "route", "show", "type", "blackhole").stdout.split()

    def both() -> bool:
        return subnet in blackholes() and subnet6 in blackholes("-6")

    wait_for("both blackhole routes", both, timeout=15)
    tb.node_sh(node, "ip", "-6", "route", "del", "blackhole", subnet6)
    wait_for("the IPv6 blackhole route back", lambda: subnet6 in blackholes("-6"), timeout=15)
    assert blackholes("-6").count(subnet6) == 1 and blackholes().count(subnet) == 1


@pytest.mark.kernel
def test_dual_stack_peer_without_an_ipv6_part_is_reached_over_ipv4(dual_testbed: Testbed) -> None:
    from tests.test_metrics import PORT, scrape

    tb = dual_testbed
    node = tb.add_node()
    tb.start_daemon(node, f"--healthz-port={PORT}", f"--healthz-ip={node.address}")
    tb.wait_subnet(node)
    prefix = f"{tb.etcd_prefix}/subnets"
    v4_only = LeaseAttrs(ipaddress.IPv4Address("198.18.0.99"), None, "vxlan",
                         {"VNI": 1, "VtepMAC": "0e:00:00:00:00:99"})  # fmt: skip
    tb.client.put(f"{prefix}/10.244.200.0-24", v4_only.encode())
    wait_for("the IPv4-only peer's route", lambda: "10.244.200.0/24" in tb.routes(node))
    assert tb.neighbours(node)["10.244.200.0"] == "0e:00:00:00:00:99"
    # a renewal of the same lease is not logged again
    tb.client.put(f"{prefix}/10.244.200.0-24", v4_only.encode())
    # a dual-stack peer lease whose BackendV6Data is missing: IPv4 only as well
    no_v6_data = LeaseAttrs(ipaddress.IPv4Address("198.18.0.98"),
                            ipaddress.IPv6Address("2001:db8::98"), "vxlan",
                            {"VNI": 1, "VtepMAC": "0e:00:00:00:00:98"})  # fmt: skip
    tb.client.put(f"{prefix}/10.244.201.0-24&fd10:244:0:c9::-64", no_v6_data.encode())
    wait_for("the second peer's route", lambda: "10.244.201.0/24" in tb.routes(node))
    assert "fd10:244:0:c9::/64" not in tb.routes(node, "flannel-v6.1")
    assert "fd10:244:0:c9::" not in tb.neighbours(node, "flannel-v6.1")
    log = node.log()
    assert log.count("peer lease 10.244.200.0-24 has IPv6: no IPv6 subnet; reachable over "
                     "IPv4 only") == 1  # fmt: skip
    assert "peer lease 10.244.201.0-24&fd10:244:0:c9::-64 has IPv6: no BackendV6Data" in log
    # a complete dual-stack peer: counted in both families
    full = LeaseAttrs(ipaddress.IPv4Address("198.18.0.97"), ipaddress.IPv6Address("2001:db8::97"),
                      "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:97"},
                      {"VNI": 1, "VtepMAC": "0e:00:00:00:01:97"})  # fmt: skip
    tb.client.put(f"{prefix}/10.244.202.0-24&fd10:244:0:ca::-64", full.encode())
    wait_for("the full peer's IPv6 route",
             lambda: "fd10:244:0:ca::/64" in tb.routes(node, "flannel-v6.1"))  # fmt: skip
    # BackendV6Data with a bad MAC, or an IPv6 subnet outside IPv6Network: IPv4 only too
    bad_v6 = LeaseAttrs(ipaddress.IPv4Address("198.18.0.96"), ipaddress.IPv6Address("2001:db8::96"),
                        "vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:96"},
                        {"VNI": 1, "VtepMAC": "not-a-mac"})  # fmt: skip
    tb.client.put(f"{prefix}/10.244.203.0-24&fd10:244:0:cb::-64", bad_v6.encode())
    outside = LeaseAttrs(ipaddress.IPv4Address("198.18.0.95"),
                         ipaddress.IPv6Address("2001:db8::95"), "vxlan",
                         {"VNI": 1, "VtepMAC": "0e:00:00:00:00:95"},
                         {"VNI": 1, "VtepMAC": "0e:00:00:00:01:95"})  # fmt: skip
    tb.client.put(f"{prefix}/10.244.204.0-24&fd99::-64", outside.encode())
    wait_for("the routes of the peers with a bad IPv6 part",
             lambda: {"10.244.203.0/24", "10.244.204.0/24"} <= set(tb.routes(node)))  # fmt: skip
    assert tb.neighbours(node)["10.244.203.0"] == "0e:00:00:00:00:96"
    assert "fd99::/64" not in tb.routes(node, "flannel-v6.1")
    log = node.log()
    assert ("peer lease 10.244.203.0-24&fd10:244:0:cb::-64 has IPv6: BackendV6Data: VtepMAC "
            "'not-a-mac' is not a MAC address; reachable over IPv4 only") in log  # fmt: skip
    assert ("peer lease 10.244.204.0-24&fd99::-64 has IPv6: subnet fd99::/64 is outside the "
            f"network {POD_NETWORK6}; reachable over IPv4 only") in log  # fmt: skip
    # the full peer's update breaks its BackendV6Data: the IPv4 change is taken, the IPv6
    # entries stay as they were (the last good state)
    new_v4 = {"VNI": 1, "VtepMAC": "0e:00:00:00:02:97"}
    broken = LeaseAttrs(full.public_ip, full.public_ipv6, "vxlan", new_v4, {"VtepMAC": 7})
    tb.client.put(f"{prefix}/10.244.202.0-24&fd10:244:0:ca::-64", broken.encode())
    wait_for("the full peer's new IPv4 MAC",
             lambda: tb.neighbours(node)["10.244.202.0"] == "0e:00:00:00:02:97")  # fmt: skip
    assert tb.neighbours(node, "flannel-v6.1")["fd10:244:0:ca::"] == "0e:00:00:00:01:97"
    assert "fd10:244:0:ca::/64" in tb.routes(node, "flannel-v6.1")
    wait_for("the warning", lambda: "keeping its last good IPv6 entry" in node.log())
    metrics = scrape(node)
    assert metrics.value("flannel_peers", family="ipv4") == 5
    assert metrics.value("flannel_peers", family="ipv6") == 1
    assert node.process is not None and node.process.poll() is None


# --- Kubernetes mode -----------------------------------------------------------------------------

P = "flannel.alpha.coreos.com/"


def _kube_testbed(families: tuple[int, ...], config: str) -> Iterator[Testbed]:
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    tb = Testbed(families=families)
    try:
        tb.start_kubeapi(config)
        yield tb
    finally:
        tb.cleanup()


@pytest.fixture
def dual_kube_testbed() -> Iterator[Testbed]:
    """A dual-stack underlay and the Kubernetes API emulator: Nodes get podCIDRs
    [10.244.<i>.0/24, fd10:244:0:<i>::/64], net-conf.json enables both families."""
    yield from _kube_testbed((4, 6), DUAL_CONFIG)


@pytest.fixture
def v6_kube_testbed() -> Iterator[Testbed]:
    """An IPv6-only underlay, the API emulator at [2001:db8::fe]:6443, podCIDRs
    [fd10:244:0:<i>::/64], an IPv6-only net-conf.json."""
    yield from _kube_testbed((6,), V6_CONFIG)


@pytest.mark.kernel
@pytest.mark.kube
def test_kube_dual_stack_annotations_pod_cidrs_and_node_public_ipv6(
    dual_kube_testbed: Testbed,
) -> None:
    """Both podCIDRs make the lease; backend-v6-data and public-ipv6 are published as flanneld
    does; a node-public-ipv6 annotation replaces the detected address (the interface that owns
    it, the VXLAN local address, what peers program)."""
    tb = dual_kube_testbed
    assert tb.kubeapi is not None
    node1, node2 = tb.add_node(), tb.add_node()
    tb.node_sh(node2, "ip", "addr", "add", "2001:db8::102/64", "dev", "eth0", "nodad")

    def annotate(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("annotations", {})[P + "node-public-ipv6"] = "2001:db8::102"

    tb.kubeapi.update_node(node2.name, annotate)
    for node in (node1, node2):
        tb.start_daemon(node)
    for node in (node1, node2):
        tb.wait_subnet(node)
    tb.wait_converged()
    for node, public6 in ((node1, node1.address6), (node2, "2001:db8::102")):
        i = node.index
        assert node.subnet_file.read_text() == (
            f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{i}.1/24\n"
            f"FLANNEL_IPV6_NETWORK={POD_NETWORK6}\nFLANNEL_IPV6_SUBNET=fd10:244:0:{i}::1/64\n"
            "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        )
        ann = (tb.kubeapi.get_node(node.name) or {})["metadata"]["annotations"]
        mac, mac6 = tb.vtep_mac(node), tb.vtep_mac(node, "flannel-v6.1")
        assert {k: v for k, v in ann.items() if k != P + "node-public-ipv6"} == {
            P + "backend-type": "vxlan",
            P + "backend-data": f'{{"VNI":1,"VtepMAC":"{mac}"}}',
            P + "backend-v6-data": f'{{"VNI":1,"VtepMAC":"{mac6}"}}',
            P + "kube-subnet-manager": "true",
            P + "public-ip": node.address,
            P + "public-ipv6": public6,
        }
        link = json.loads(tb.node_sh(node, "ip", "-d", "-j", "link", "show",
                                     "flannel-v6.1").stdout)[0]  # fmt: skip
        info = link["linkinfo"]["info_data"]
        assert info.get("local6", info.get("local")) == public6
    assert (tb.vtep_mac(node2, "flannel-v6.1"), "2001:db8::102") in tb.fdb(node1, "flannel-v6.1")
    assert "fd10:244:0:2::/64" in tb.routes(node1, "flannel-v6.1")
    assert "fd10:244:0:1::/64" in tb.routes(node2, "flannel-v6.1")
    pods = [tb.add_pod(node) for node in (node1, node2)]
    assert tb.ping(pods[0], pods[1].ip6, count=3) and tb.ping(pods[1], pods[0].ip6, count=3)
    assert tb.ping(pods[0], pods[1].ip, count=3)


@pytest.mark.kernel
@pytest.mark.kube
def test_kube_ipv6_only(v6_kube_testbed: Testbed) -> None:
    tb = v6_kube_testbed
    assert tb.kubeapi is not None
    nodes = tb.start_nodes(2)
    for node in nodes:
        i = node.index
        assert node.subnet_file.read_text() == (
            f"FLANNEL_IPV6_NETWORK={POD_NETWORK6}\nFLANNEL_IPV6_SUBNET=fd10:244:0:{i}::1/64\n"
            "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"
        )
        ann = (tb.kubeapi.get_node(node.name) or {})["metadata"]["annotations"]
        mac6 = tb.vtep_mac(node, "flannel-v6.1")
        assert ann[P + "backend-v6-data"] == f'{{"VNI":1,"VtepMAC":"{mac6}"}}'
        assert ann[P + "public-ipv6"] == node.address6
    assert_v6_peers(tb, nodes)
    pods = [tb.add_pod(node) for node in nodes]
    assert tb.cross_node_ping_failures(pods) == []


# --- traffic rules and host-gw in dual stack ------------------------------------------------------


@pytest.mark.kernel
def test_dual_stack_masquerade_rules_for_both_families(dual_testbed: Testbed) -> None:
    """--ip-masq on a dual-stack network: flanneld's rules with iptables for IPv4 and with
    ip6tables for IPv6 (multicast ff00::/8), each with its network and the node's subnet."""
    from tests.test_iptables import MASQ_S

    tb = dual_testbed
    node = tb.add_node()
    tb.start_daemon(node, "--ip-masq", "--iptables-resync=1")
    tb.wait_subnet(node)
    want4 = [line.format(N="10.244.0.0/16", P=tb.subnet_of(node)) for line in MASQ_S]
    want6 = [
        line.format(N=POD_NETWORK6, P=tb.subnet6_of(node)).replace("224.0.0.0/4", "ff00::/8")
        for line in MASQ_S
    ]

    def shown(binary: str) -> list[str]:
        out = tb.node_sh(node, binary, "-w", "-t", "nat", "-S").stdout
        return [line for line in out.splitlines() if "FLANNEL" in line]

    wait_for("the IPv4 rules", lambda: shown("iptables") == want4)
    wait_for("the IPv6 rules", lambda: shown("ip6tables") == want6)
    tb.node_sh(node, "ip6tables", "-w", "-t", "nat", "-F", "FLANNEL-POSTRTG")
    wait_for("the IPv6 rules repaired", lambda: shown("ip6tables") == want6, timeout=15)


@pytest.mark.kernel
def test_host_gw_dual_stack_routes_via_both_public_addresses(dual_testbed: Testbed) -> None:
    tb = dual_testbed
    config = json.loads(DUAL_CONFIG)
    config["Backend"] = {"Type": "host-gw"}
    tb.put_config(json.dumps(config))
    nodes = [tb.add_node() for _ in range(2)]
    for node in nodes:
        tb.start_daemon(node)
    for node in nodes:
        tb.wait_subnet(node)
    a, b = nodes

    def routes(*family: str) -> set[str]:
        out = tb.node_sh(a, "ip", *family, "route", "show", "proto", "boot").stdout
        return {" ".join(line.split()[:5]) for line in out.splitlines()}

    want4 = f"{tb.subnet_of(b)} via {b.address} dev eth0"
    want6 = f"{tb.subnet6_of(b)} via {b.address6} dev eth0"
    wait_for("the IPv4 host-gw route", lambda: want4 in routes())
    wait_for("the IPv6 host-gw route", lambda: want6 in routes("-6"))
    assert a.subnet_env()["FLANNEL_MTU"] == "1500"


@pytest.mark.kernel
def test_switch_from_host_gw_to_vxlan_in_dual_stack_replaces_the_ipv6_routes() -> None:
    """The cluster moves from host-gw to vxlan (or DirectRouting is turned off): the routes
    `<peer subnet> via <peer public IP>` of the last start are in the way of the overlay's
    onlink routes, which IPv4 writes over them but IPv6 refuses (the onlink gateway is routed
    through eth0). The IPv6 route left by host-gw goes and the peer gets the overlay."""
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    tb = Testbed(families=(4, 6))

    def config(backend: str) -> None:
        cfg = {"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": POD_NETWORK6}
        tb.put_config(json.dumps({**cfg, "Backend": {"Type": backend}}))

    try:
        tb.start_etcd()
        config("host-gw")
        nodes = [tb.add_node(), tb.add_node()]
        for node in nodes:
            tb.start_daemon(node)
        for node in nodes:
            tb.wait_subnet(node)
        n1, n2 = nodes
        s6 = tb.subnet6_of(n2)

        def route6() -> str:
            return tb.node_sh(n1, "ip", "-6", "route", "show", s6).stdout

        wait_for("n1's host-gw IPv6 route", lambda: f"via {n2.address6} dev eth0" in route6())
        for node in nodes:
            assert tb.stop_daemon(node) == 0
        config("vxlan")
        for node in nodes:
            tb.start_daemon(node)
        wait_for("n2's IPv6 overlay route on n1", lambda: s6 in tb.routes(n1, "flannel-v6.1"))
        assert "eth0" not in route6()
        assert "cannot program peer" not in n1.log()
        pods = [tb.add_pod(node) for node in nodes]
        assert tb.ping(pods[0], pods[1].ip6, count=3)
    finally:
        tb.cleanup()


@pytest.mark.kernel
@pytest.mark.parametrize("nftables", [False, True])
def test_subnet_change_while_running_moves_both_families_masquerade_rules(
    nftables: bool,
) -> None:
    """The node's lease is lost while it is frozen and another node takes its subnets: the
    daemon leases new ones and its masquerade rules follow in both families (iptables and
    ip6tables, or both nftables tables); nothing names the old subnets any more."""
    import signal

    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    tb = Testbed(families=(4, 6))
    try:
        tb.start_etcd()
        cfg = json.loads(DUAL_CONFIG)
        tb.put_config(json.dumps({**cfg, "EnableNFTables": nftables}))
        node = tb.add_node()
        tb.start_daemon(node, "--ip-masq", "--iptables-resync=1")
        tb.wait_subnet(node)
        old4, old6 = tb.subnet_of(node), tb.subnet6_of(node)
        v6 = ipaddress.IPv6Network(old6)
        key = f"{tb.etcd_prefix}/subnets/{old4.replace('/', '-')}&{v6.network_address}-64"

        def rules() -> str:
            if nftables:
                return tb.node_sh(node, "nft", "list", "ruleset").stdout
            return "".join(tb.node_sh(node, cmd, "-t", "nat", "-S").stdout
                           for cmd in ("iptables", "ip6tables"))  # fmt: skip

        wait_for("the rules of both families", lambda: old4 in rules() and old6 in rules())
        assert node.process is not None
        node.process.send_signal(signal.SIGSTOP)
        try:
            tb.client.delete(key)
            other = LeaseAttrs(ipaddress.IPv4Address("198.18.0.99"),
                               ipaddress.IPv6Address("2001:db8::99"), "vxlan",
                               {"VNI": 1, "VtepMAC": "0e:00:00:00:00:99"},
                               {"VNI": 1, "VtepMAC": "0e:00:00:00:01:99"})  # fmt: skip
            tb.client.put(key, other.encode(), lease=tb.client.lease(3600).id)
        finally:
            node.process.send_signal(signal.SIGCONT)
        wait_for("new subnets", lambda: tb.subnet_of(node) != old4)
        new4, new6 = tb.subnet_of(node), tb.subnet6_of(node)
        assert new6 != old6

        def moved() -> bool:
            text = rules()
            return new4 in text and new6 in text and old4 not in text and old6 not in text

        wait_for("the rules of the new subnets only", moved, timeout=15)
    finally:
        tb.cleanup()
