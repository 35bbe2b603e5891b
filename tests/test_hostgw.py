"""The host-gw backend: the pure parts, and host-gw nodes in the testbed (real etcd, kernel, CNI).

A host-gw node writes one route per peer, `<peer subnet> via <peer public IP> dev eth0`, exactly
as flanneld (`ip route` shows the same line), keeps it (a route deleted by hand is back within
flanneld's 10 s route check), refuses to start behind NAT, and publishes flanneld's lease value.
"""

from __future__ import annotations

import json
import socket

import pytest

from backend import hostgw, nlbulk
from backend.reconcile import KernelState, Op, PeerEntry, diff
from subnet.config import SUPPORTED_BACKENDS
from subnet.lease import Lease, LeaseAttrs
from tests.testbed import Node, Testbed, wait_for

HOSTGW_NETWORK = '{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}'


# --- pure parts -----------------------------------------------------------------------------------


def test_host_gw_is_a_supported_backend() -> None:
    assert "host-gw" in SUPPORTED_BACKENDS


def test_lease_value_is_flanneld_s() -> None:
    attrs = hostgw.lease_attrs("198.18.0.1")
    assert attrs.encode() == b'{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}'


def test_pod_mtu_is_the_interface_mtu() -> None:
    assert hostgw.pod_mtu(1500) == 1500
    assert hostgw.pod_mtu(9000) == 9000
    with pytest.raises(ValueError):
        hostgw.pod_mtu(0)


def test_full_passes_run_at_least_every_ten_seconds() -> None:
    assert hostgw.resync_period(30.0) == 10.0
    assert hostgw.resync_period(2.0) == 2.0


def test_public_ip_other_than_the_interface_address_is_refused() -> None:
    hostgw.check_not_behind_nat("eth0", "198.18.0.1", "198.18.0.1")
    with pytest.raises(hostgw.BehindNat, match="probably behind NAT") as err:
        hostgw.check_not_behind_nat("eth0", "198.18.0.1", "203.0.113.7")
    assert "203.0.113.7" in str(err.value) and "198.18.0.1" in str(err.value)
    assert "--public-ip" in str(err.value)


def _lease(backend_type: str, data: object = None) -> Lease:
    import ipaddress

    return Lease(
        subnet=ipaddress.IPv4Network("10.244.7.0/24"),
        ipv6_subnet=None,
        attrs=LeaseAttrs(ipaddress.IPv4Address("198.18.0.7"), None, backend_type, data),
    )


def test_a_host_gw_peer_is_one_direct_route() -> None:
    peer = hostgw.peer_from_lease(_lease("host-gw"))
    assert peer is not None and peer.v6 is None
    assert peer.v4 == PeerEntry.direct_route("10.244.7.0/24", "198.18.0.7")
    assert diff({"k": peer.v4}, KernelState()) == [
        Op("direct", "replace", "10.244.7.0/24", "198.18.0.7", "k")
    ]


def test_peers_of_other_backends_are_not_host_gw_peers() -> None:
    assert (
        hostgw.peer_from_lease(_lease("vxlan", {"VNI": 1, "VtepMAC": "0e:00:00:00:00:07"})) is None
    )
    assert hostgw.peer_from_lease(_lease("")) is None


def test_gateway_route_request_layout() -> None:
    msg = nlbulk.gateway_route_request("replace", "10.244.7.0/24", "198.18.0.7", 5)
    length, kind, flags, _, _ = nlbulk._HDR.unpack_from(msg, 0)
    assert (length, kind) == (len(msg), nlbulk.RTM_NEWROUTE)
    assert flags == nlbulk._REPLACE
    family, dst_len, _, _, table, proto, scope, rtype, rflags = nlbulk._RTMSG.unpack_from(msg, 16)
    assert (family, dst_len, table, proto, scope, rtype, rflags) == (
        socket.AF_INET,
        24,
        nlbulk.RT_TABLE_MAIN,
        nlbulk.RTPROT_BOOT,
        0,
        nlbulk.RTN_UNICAST,
        0,
    )
    attrs = nlbulk._attrs(msg, 28, len(msg))
    assert attrs[nlbulk.RTA_DST] == socket.inet_aton("10.244.7.0")
    assert attrs[nlbulk.RTA_GATEWAY] == socket.inet_aton("198.18.0.7")
    assert attrs[nlbulk.RTA_OIF] == (5).to_bytes(4, "little")
    # without a link (DirectRouting) the kernel picks it; a delete matches the gateway
    delete = nlbulk.gateway_route_request("delete", "10.244.7.0/24", "198.18.0.7")
    assert nlbulk._HDR.unpack_from(delete, 0)[1] == nlbulk.RTM_DELROUTE
    attrs = nlbulk._attrs(delete, 28, len(delete))
    assert nlbulk.RTA_OIF not in attrs and attrs[nlbulk.RTA_GATEWAY] == socket.inet_aton(
        "198.18.0.7"
    )


# --- in the testbed -------------------------------------------------------------------------------


def peer_routes(tb: Testbed, node: Node) -> list[str]:
    """The node's `ip route` lines to pod subnets via an underlay address."""
    out = tb.node_sh(node, "ip", "route", "show").stdout
    lines = [line.strip() for line in out.splitlines() if line.startswith("10.244.")]
    return sorted(line for line in lines if " via 198.18." in line and " proto " not in line)


def expected_routes(tb: Testbed, node: Node, nodes: list[Node]) -> list[str]:
    """flanneld's host-gw routes on `node`: one per other node."""
    return sorted(f"{tb.subnet_of(p)} via {p.address} dev eth0" for p in nodes if p is not node)


def start_host_gw(tb: Testbed, count: int, *extra: str) -> list[Node]:
    tb.put_config(HOSTGW_NETWORK)
    nodes = [tb.add_node() for _ in range(count)]
    for node in nodes:
        tb.start_daemon(node, *extra)
    for node in nodes:
        tb.wait_subnet(node)
    for node in nodes:
        wait_for(f"{node.name}'s host-gw routes",
                 lambda node=node: peer_routes(tb, node) == expected_routes(tb, node, nodes))  # type: ignore[misc]  # fmt: skip
    return nodes


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_pods_reach_each_other_with_flanneld_s_routes(testbed: Testbed) -> None:
    nodes = start_host_gw(testbed, 3)
    for node in nodes:
        env = node.subnet_env()
        assert env["FLANNEL_MTU"] == "1500"  # the interface's: no encapsulation
        assert env["FLANNEL_NETWORK"] == "10.244.0.0/16"
        # no overlay device
        assert testbed.node_sh(node, "ip", "link", "show", "flannel.1", check=False).returncode
    for key, value in testbed.leases().items():
        node = next(n for n in nodes if testbed.subnet_of(n).replace("/", "-") == key)
        assert value == (
            f'{{"PublicIP":"{node.address}","PublicIPv6":null,"BackendType":"host-gw"}}'.encode()
        )
    pods = [testbed.add_pod(node) for node in nodes]
    assert testbed.cross_node_ping_failures(pods) == []


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_routes_are_repaired_and_follow_peers(testbed: Testbed) -> None:
    nodes = start_host_gw(testbed, 2)
    node, peer = nodes
    want = expected_routes(testbed, node, nodes)
    subnet = testbed.subnet_of(peer)
    # a route deleted by hand is back within flanneld's 10 s route check
    testbed.node_sh(node, "ip", "route", "del", subnet)
    assert peer_routes(testbed, node) == []
    wait_for("the deleted route back", lambda: peer_routes(testbed, node) == want, timeout=20)
    # a route changed by hand (another gateway) is corrected
    testbed.node_sh(node, "ip", "route", "replace", subnet, "via", "198.18.0.77", "dev", "eth0")
    wait_for("the route corrected", lambda: peer_routes(testbed, node) == want, timeout=20)
    # routes that are not flanneld's stay: another protocol, and outside the cluster network
    testbed.node_sh(node, "ip", "route", "add", "10.244.250.0/24", "via", "198.18.0.250",
                    "proto", "static")  # fmt: skip
    testbed.node_sh(node, "ip", "route", "add", "172.31.0.0/24", "via", "198.18.0.251")
    # a lease of another backend type is ignored, with a warning
    prefix = f"{testbed.etcd_prefix}/subnets"
    testbed.client.put(
        f"{prefix}/10.244.201.0-24",
        '{"PublicIP":"198.18.0.98","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:98"}}',
    )
    # a new host-gw peer (as a Go flanneld would publish it) gets its route
    value = '{"PublicIP":"198.18.0.97","PublicIPv6":null,"BackendType":"host-gw"}'
    testbed.client.put(f"{prefix}/10.244.202.0-24", value)
    wait_for(
        "the new peer's route",
        lambda: "10.244.202.0/24 via 198.18.0.97 dev eth0" in peer_routes(testbed, node),
    )
    wait_for("the warning", lambda: "not host-gw" in node.log())
    assert "10.244.202.0/24 (public IP 198.18.0.97)" in node.log()
    assert "10.244.201.0/24" not in testbed.node_sh(node, "ip", "route").stdout
    # a departed peer's route goes
    testbed.client.delete(f"{prefix}/10.244.202.0-24")
    wait_for("the departed peer's route gone", lambda: peer_routes(testbed, node) == want)
    routes = testbed.node_sh(node, "ip", "route").stdout
    assert "10.244.250.0/24 via 198.18.0.250 dev eth0 proto static" in routes
    assert "172.31.0.0/24 via 198.18.0.251 dev eth0" in routes
    # nothing is removed on shutdown
    assert testbed.stop_daemon(node) == 0
    assert peer_routes(testbed, node) == want


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_node_behind_nat_refuses_to_start(testbed: Testbed) -> None:
    testbed.put_config(HOSTGW_NETWORK)
    node = testbed.add_node()
    testbed.start_daemon(node, "--iface=eth0", "--public-ip=203.0.113.7")
    assert node.process is not None
    assert node.process.wait(timeout=60) == 1
    log = node.log()
    assert "probably behind NAT" in log and "203.0.113.7" in log, log[-2000:]
    assert not node.subnet_file.exists()
    assert testbed.leases() == {}


def test_kube_annotations_of_a_host_gw_node() -> None:
    from subnet.annotations import AnnotationNames, own_annotations

    names = AnnotationNames.for_prefix()
    ann = own_annotations(names, {"metadata": {}}, hostgw.lease_attrs("198.18.0.1"))
    assert ann[names.backend_type] == "host-gw"
    assert json.loads(ann[names.backend_data]) is None


@pytest.mark.kernel
@pytest.mark.kube
def test_host_gw_in_kube_mode_annotates_like_flanneld_and_routes(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    (tb.workdir / "net-conf.json").write_text(HOSTGW_NETWORK)
    nodes = [tb.add_node() for _ in range(2)]
    for node in nodes:
        tb.start_daemon(node)
    for node in nodes:
        tb.wait_subnet(node)
    for node in nodes:
        wait_for(f"{node.name}'s host-gw routes",
                 lambda node=node: peer_routes(tb, node) == expected_routes(tb, node, nodes))  # type: ignore[misc]  # fmt: skip
        assert tb.kubeapi is not None
        ann = (tb.kubeapi.get_node(node.name) or {})["metadata"]["annotations"]
        p = "flannel.alpha.coreos.com/"
        assert (ann[p + "backend-type"], ann[p + "backend-data"]) == ("host-gw", "null")
        assert ann[p + "public-ip"] == node.address
        assert node.subnet_env()["FLANNEL_MTU"] == "1500"
    pods = [tb.add_pod(node) for node in nodes]
    assert tb.cross_node_ping_failures(pods) == []


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_with_the_underlay_inside_the_cluster_network(testbed: Testbed) -> None:
    """Network 198.18.0.0/16 holds the nodes' own addresses (SubnetMin keeps the leases off
    them), so every route's gateway lies inside the cluster network: the routes are still
    flanneld-py's, a departed peer's route goes, and the full passes write nothing new."""
    testbed.put_config(json.dumps({"Network": "198.18.0.0/16", "SubnetMin": "198.18.16.0",
                                   "Backend": {"Type": "host-gw"}}))  # fmt: skip
    node, peer = testbed.add_node(), testbed.add_node()
    for n in (node, peer):
        testbed.start_daemon(n, "--resync-period=1")
    for n in (node, peer):
        testbed.wait_subnet(n)
    subnet = testbed.subnet_of(peer)
    route = f"{subnet} via {peer.address} dev eth0"
    state_file = node.subnet_file.parent / "flanneld-py-state.json"

    def last_full_sync() -> float:
        return float(json.loads(state_file.read_text()).get("last_full_sync") or 0)

    def routes() -> list[str]:
        out = testbed.node_sh(node, "ip", "route", "show").stdout
        return [line.strip() for line in out.splitlines() if line.startswith("198.18.")]

    wait_for("the peer's route", lambda: route in routes())
    wait_for("the first full pass", lambda: "datapath in sync" in node.log())
    first = last_full_sync()
    wait_for("two more full passes", lambda: last_full_sync() > first + 1.5, timeout=20)
    assert "full sync:" not in node.log(), node.log()[-3000:]  # none of them rewrote the route
    testbed.stop_daemon(peer)
    testbed.client.delete(f"{testbed.etcd_prefix}/subnets/{subnet.replace('/', '-')}")
    wait_for("the departed peer's route gone", lambda: route not in routes(), timeout=20)
