"""VXLAN DirectRouting: peers on this node's own networks get a plain route, the others the overlay.

In the testbed, nodes 1 and 2 share the underlay network 198.18.0.0/24; node 3 sits on
198.18.1.0/24 behind a router namespace, so the route lookup for its public IP on node 1 goes
through a gateway. Node 1 must program node 2 with the route `<subnet> via 198.18.0.2 dev eth0`
only (no neighbour, FDB or onlink route on flannel.1), node 3 with the overlay trio, pods must
reach each other, and a peer whose reachability changes must switch kinds, leaving nothing of
the other kind behind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from backend.reconcile import KernelState, Op, PeerEntry, Reconciler, diff
from backend.vxlan import VxlanDevice, parse_vxlan_config
from subnet.peers import PeerTable
from tests.testbed import (
    DIRECT_ROUTING_NETWORK,
    ROUTER_UNDERLAY,
    UNDERLAY_GW,
    UNDERLAY_GW6,
    Node,
    Testbed,
    inside,
    start_direct_routing_nodes,
    wait_for,
)

MAC = "0e:00:00:00:00:02"


# --- pure parts -----------------------------------------------------------------------------------


def overlay(n: int) -> PeerEntry:
    return PeerEntry(f"10.244.{n}.0/24", f"10.244.{n}.0", MAC, f"198.18.0.{n}")


def direct(n: int) -> PeerEntry:
    return PeerEntry(f"10.244.{n}.0/24", f"10.244.{n}.0", MAC, f"198.18.0.{n}", True)


def test_a_direct_peer_needs_only_its_route() -> None:
    assert KernelState.of([direct(2)]) == KernelState(direct={"10.244.2.0/24": "198.18.0.2"})
    assert diff({"k": direct(2)}, KernelState()) == [
        Op("direct", "replace", "10.244.2.0/24", "198.18.0.2", "k")
    ]


def test_switching_to_direct_removes_the_overlay_entries_after_the_route() -> None:
    ops = diff({"k": direct(2)}, KernelState.of([overlay(2)]))
    assert ops == [
        Op("direct", "replace", "10.244.2.0/24", "198.18.0.2", "k"),
        Op("route", "delete", "10.244.2.0/24", "10.244.2.0"),
        Op("fdb", "delete", MAC, "198.18.0.2"),
        Op("neigh", "delete", "10.244.2.0", MAC),
    ]


def test_switching_to_the_overlay_removes_the_direct_route_before_the_onlink_route() -> None:
    """The kernel refuses an IPv6 onlink route whose gateway (the peer's VTEP address, inside
    the peer's subnet) is routed through another device, as it is while the direct route is
    there: the direct route goes first, with the peer's routes (after its neighbour and FDB
    entries)."""
    ops = diff({"k": overlay(2)}, KernelState.of([direct(2)]))
    assert ops == [
        Op("neigh", "replace", "10.244.2.0", MAC, "k"),
        Op("fdb", "replace", MAC, "198.18.0.2", "k"),
        Op("direct", "delete", "10.244.2.0/24", "198.18.0.2", "k"),
        Op("route", "replace", "10.244.2.0/24", "10.244.2.0", "k"),
    ]
    dp = Fake()
    dp.state = KernelState.of([direct(2), direct(3)])
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k", overlay(2))])
    Reconciler(table, dp, lambda e: e, backoff=0).full_sync()
    assert dp.ops == [*ops, Op("direct", "delete", "10.244.3.0/24", "198.18.0.3")]
    assert dp.state == KernelState.of([overlay(2)])


class Fake:
    """A datapath holding overlay entries and direct routes, with the kernel's replace rule:
    a route replace takes the place of the route of the same destination of either kind."""

    def __init__(self) -> None:
        self.state = KernelState()
        self.ops: list[Op] = []

    def dump(self) -> KernelState:
        s = self.state
        return KernelState(dict(s.neighs), set(s.fdb), dict(s.routes), dict(s.direct))

    def ensure_device(self) -> bool:
        return False

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        s = self.state
        for op in ops:
            self.ops.append(op)
            replace = op.action == "replace"
            if op.kind == "neigh":
                s.neighs.update({op.a: op.b or ""}) if replace else s.neighs.pop(op.a, None)
            elif op.kind == "fdb":
                s.fdb.add((op.a, op.b or "")) if replace else s.fdb.discard((op.a, op.b or ""))
            elif replace:
                s.routes.pop(op.a, None), s.direct.pop(op.a, None)
                if op.kind == "route":
                    s.routes[op.a] = op.b
                else:
                    s.direct[op.a] = op.b or ""
            elif op.kind == "route":
                s.routes.pop(op.a, None)
            elif s.direct.get(op.a) == op.b:
                s.direct.pop(op.a)
        return [None] * len(ops)


def test_the_decision_is_made_again_in_full_passes_only() -> None:
    reachable = {"198.18.0.2": True}
    lookups: list[str] = []

    def select(peer: PeerEntry) -> PeerEntry:
        lookups.append(peer.public_ip)
        return direct(2) if reachable[peer.public_ip] else peer

    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k", overlay(2))])
    dp = Fake()
    r = Reconciler(table, dp, select, backoff=0, reselect=lambda: None)
    r.full_sync()
    assert dp.state == KernelState.of([direct(2)])
    reachable["198.18.0.2"] = False
    r.full_sync()  # the table did not change, the reachability did: reselected
    assert dp.state == KernelState.of([overlay(2)])
    assert lookups == ["198.18.0.2", "198.18.0.2"]
    reachable["198.18.0.2"] = True
    r.full_sync()
    assert dp.state == KernelState.of([direct(2)])
    # the peer leaves: its direct route goes, as the references say nothing else needs removing
    table.remove("k")
    r.sync_keys({"k"})
    assert dp.state == KernelState()


def test_device_select_looks_up_once_per_public_ip_until_reselect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def reachable(self: VxlanDevice, ip: str) -> bool:
        calls.append(ip)
        return ip == "198.18.0.2"

    monkeypatch.setattr(VxlanDevice, "directly_reachable", reachable)
    dev = VxlanDevice(parse_vxlan_config({"DirectRouting": True}), 4, "198.18.0.1", 2, 1500,
                      ipr=object())  # fmt: skip
    assert dev.select(overlay(2)) == direct(2)
    assert dev.select(overlay(3)) == overlay(3)
    assert dev.select(overlay(2)) == direct(2)
    assert calls == ["198.18.0.2", "198.18.0.3"]
    dev.reselect()
    assert dev.select(overlay(2)) == direct(2)
    assert calls == ["198.18.0.2", "198.18.0.3", "198.18.0.2"]
    plain = VxlanDevice(parse_vxlan_config({}), 4, "198.18.0.1", 2, 1500, ipr=object())
    assert plain.select(overlay(2)) == overlay(2)
    assert calls == ["198.18.0.2", "198.18.0.3", "198.18.0.2"]


# --- in the testbed -------------------------------------------------------------------------------


def direct_routes(tb: Testbed, node: Node) -> list[str]:
    """The node's `ip route` lines to pod subnets that are not on flannel.1 and not cni0's."""
    out = tb.node_sh(node, "ip", "route", "show").stdout
    return sorted(
        line.strip()
        for line in out.splitlines()
        if line.startswith("10.244.") and " via " in line and "flannel.1" not in line
    )


def overlay_of(tb: Testbed, node: Node, peer: Node) -> tuple[bool, bool, bool]:
    """Whether `node` has the neighbour, FDB entry and flannel.1 route for `peer`."""
    subnet = tb.subnet_of(peer)
    mac = tb.vtep_mac(peer)
    return (
        tb.neighbours(node).get(subnet.split("/")[0]) == mac,
        (mac, peer.address) in tb.fdb(node),
        subnet in tb.routes(node),
    )


@pytest.mark.kernel
def test_route_lookup_tells_on_link_from_gateway_and_unreachable(testbed: Testbed) -> None:
    from backend.nlbulk import BulkSocket

    node = testbed.add_node()  # eth0 198.18.0.1/24, default via 198.18.0.254
    testbed.node_sh(node, "ip", "route", "add", "blackhole", "203.0.113.0/24")
    testbed.node_sh(node, "ip", "route", "del", "default")
    testbed.node_sh(node, "ip", "route", "add", "198.51.100.0/24", "via", UNDERLAY_GW)
    with inside(node.netns):
        bulk = BulkSocket()
    try:
        assert bulk.lookup_route("198.18.0.2") == ""  # on the node's network: direct
        assert bulk.lookup_route("198.51.100.7") == UNDERLAY_GW  # through a router
        assert bulk.lookup_route("203.0.113.7") is None  # blackhole
        assert bulk.lookup_route("172.31.0.1") is None  # no route at all
    finally:
        bulk.close()


@pytest.mark.kernel
@pytest.mark.parametrize("family", [4, 6])
def test_dump_of_direct_routes_skips_onlink_routes_not_gateways_inside_the_network(
    testbed: Testbed, family: int
) -> None:
    """Routes via a peer's public IP are listed even when the cluster network holds that
    address (its nodes' addresses inside `Network`); VXLAN-style onlink routes are not."""
    import ipaddress
    import socket

    from backend.nlbulk import BulkSocket, Scope

    node = testbed.add_node()  # eth0 198.18.0.1/24
    dev = "eth0"
    if family == 4:
        net, under, peer, gw = "198.18.0.0/16", "198.18.0.1/24", "198.18.5.0/24", "198.18.0.2"
        onlink, vtep = "198.18.6.0/24", "198.18.6.0"
    else:
        net, under, peer, gw = "2001:db8::/32", "2001:db8::1/64", "2001:db8:5::/64", "2001:db8::2"
        onlink, vtep = "2001:db8:6::/64", "2001:db8:6::"
        testbed.node_sh(node, "ip", "addr", "add", under, "dev", dev, "nodad")
    testbed.node_sh(node, "ip", "route", "add", peer, "via", gw, "dev", dev)
    testbed.node_sh(node, "ip", "route", "add", onlink, "via", vtep, "dev", dev, "onlink")
    with inside(node.netns):
        bulk = BulkSocket()
    try:
        af = socket.AF_INET if family == 4 else socket.AF_INET6
        found = bulk.dump_gateway_routes(af, Scope.of(ipaddress.ip_network(net)))
        assert found == {peer: gw}
    finally:
        bulk.close()


@pytest.mark.kernel
@pytest.mark.etcd
def test_direct_routing_on_one_l2_network_and_overlay_through_a_router(testbed: Testbed) -> None:
    n1, n2, n3 = start_direct_routing_nodes(testbed, "--resync-period=2")
    s1, s2, s3 = (testbed.subnet_of(n) for n in (n1, n2, n3))
    # n1 and n2 reach each other directly: one route each, nothing on flannel.1
    wait_for("n1's direct route to n2",
             lambda: direct_routes(testbed, n1) == [f"{s2} via 198.18.0.2 dev eth0"])  # fmt: skip
    wait_for("n2's direct route to n1",
             lambda: direct_routes(testbed, n2) == [f"{s1} via 198.18.0.1 dev eth0"])  # fmt: skip
    # n3 is behind the router: the overlay, both ways
    for node, peer in ((n1, n3), (n2, n3), (n3, n1), (n3, n2)):
        wait_for(f"{node.name}'s overlay entries for {peer.name}",
                 lambda node=node, peer=peer: overlay_of(testbed, node, peer) == (True, True, True))  # type: ignore[misc]  # fmt: skip
    assert overlay_of(testbed, n1, n2) == (False, False, False)
    assert overlay_of(testbed, n2, n1) == (False, False, False)
    assert s2 not in testbed.routes(n1) and s1 not in testbed.routes(n2)
    assert testbed.routes(n1) == {s3} and testbed.routes(n3) == {s1, s2}
    assert direct_routes(testbed, n3) == []
    assert "not implemented" not in n1.log()
    pods = [testbed.add_pod(node) for node in (n1, n2, n3)]
    assert testbed.cross_node_ping_failures(pods) == []

    # n1 gets an address on n3's network (the same bridge) instead of its route through the
    # router: n3 becomes directly reachable, and the next full pass switches it to a direct
    # route, removing its overlay entries
    testbed.node_sh(n1, "ip", "route", "del", "198.18.1.0/24", "via", ROUTER_UNDERLAY)
    testbed.node_sh(n1, "ip", "addr", "add", "198.18.1.201/24", "dev", "eth0")
    want = sorted([f"{s2} via 198.18.0.2 dev eth0", f"{s3} via 198.18.1.3 dev eth0"])
    wait_for("n1's direct route to n3", lambda: direct_routes(testbed, n1) == want, timeout=20)
    wait_for("n3's overlay entries gone from n1",
             lambda: overlay_of(testbed, n1, n3) == (False, False, False))  # fmt: skip
    assert testbed.routes(n1) == set()
    assert "peer public IP 198.18.1.3 is directly reachable" in n1.log()
    assert testbed.ping(pods[0], pods[2].ip, count=3)
    # and back: the address goes, n3 is behind the router again
    testbed.node_sh(n1, "ip", "addr", "del", "198.18.1.201/24", "dev", "eth0")
    testbed.node_sh(n1, "ip", "route", "add", "198.18.1.0/24", "via", ROUTER_UNDERLAY)
    wait_for("n3's overlay entries back on n1",
             lambda: overlay_of(testbed, n1, n3) == (True, True, True), timeout=20)  # fmt: skip
    wait_for("n1's direct route to n3 gone",
             lambda: direct_routes(testbed, n1) == [f"{s2} via 198.18.0.2 dev eth0"])  # fmt: skip
    assert testbed.ping(pods[0], pods[2].ip, count=3)


@pytest.mark.kernel
@pytest.mark.etcd
def test_ipv6_peer_switches_between_direct_route_and_overlay_without_a_failed_write() -> None:
    """Dual stack with DirectRouting: n2's IPv6 public address leaves n1's on-link network (a
    host route through the router) and comes back; n1's IPv6 entries for n2 switch kinds,
    every kernel write succeeding (an onlink route written over the direct route fails in
    IPv6, and the peer would wait for a retry without a route)."""
    from tests.testbed import POD_NETWORK6, in_private_netns

    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    tb = Testbed(families=(4, 6))
    try:
        tb.start_etcd()
        backend = {"Type": "vxlan", "DirectRouting": True}
        tb.put_config(json.dumps({"Network": "10.244.0.0/16", "EnableIPv6": True,
                                  "IPv6Network": POD_NETWORK6, "Backend": backend}))  # fmt: skip
        n1, n2 = tb.add_node(), tb.add_node()
        for node in (n1, n2):
            tb.start_daemon(node, "--resync-period=2")
        for node in (n1, n2):
            tb.wait_subnet(node)
        s6 = tb.subnet6_of(n2)
        direct6 = f"{s6} via {n2.address6} dev eth0"

        def v6_direct() -> bool:
            out = tb.node_sh(n1, "ip", "-6", "route", "show", s6).stdout
            return out.startswith(direct6)

        wait_for("n1's IPv6 direct route to n2", v6_direct)
        tb.node_sh(n1, "ip", "-6", "route", "add", f"{n2.address6}/128", "via", UNDERLAY_GW6)
        wait_for("n2's IPv6 overlay entries on n1", lambda: s6 in tb.routes(n1, "flannel-v6.1"),
                 timeout=20)  # fmt: skip
        assert not v6_direct()
        tb.node_sh(n1, "ip", "-6", "route", "del", f"{n2.address6}/128")
        wait_for("n1's IPv6 direct route back", v6_direct, timeout=20)
        wait_for("the overlay route gone", lambda: s6 not in tb.routes(n1, "flannel-v6.1"))
        log = n1.log()
        assert "no longer directly reachable" in log
        assert "cannot program peer" not in log and " 1 failed" not in log, log[-3000:]
    finally:
        tb.cleanup()


@pytest.mark.kernel
@pytest.mark.etcd
def test_direct_routes_are_repaired_and_departed_peers_removed(testbed: Testbed) -> None:
    testbed.put_config(DIRECT_ROUTING_NETWORK)
    n1, n2 = (testbed.add_node() for _ in range(2))
    for node in (n1, n2):
        testbed.start_daemon(node, "--resync-period=2")
    for node in (n1, n2):
        testbed.wait_subnet(node)
    s2 = testbed.subnet_of(n2)
    want = [f"{s2} via 198.18.0.2 dev eth0"]
    wait_for("n1's direct route", lambda: direct_routes(testbed, n1) == want)
    # a route of another protocol inside the cluster network is not ours: it stays
    testbed.node_sh(n1, "ip", "route", "add", "10.244.250.0/24", "via", "198.18.0.250",
                    "proto", "static")  # fmt: skip
    testbed.node_sh(n1, "ip", "route", "del", s2)
    wait_for("the direct route back", lambda: want[0] in direct_routes(testbed, n1), timeout=15)
    # a departed peer's direct route goes
    key = s2.replace("/", "-")
    testbed.stop_daemon(n2)
    testbed.client.delete(f"{testbed.etcd_prefix}/subnets/{key}")
    wait_for(
        "the departed peer's route gone", lambda: s2 not in " ".join(direct_routes(testbed, n1))
    )
    assert direct_routes(testbed, n1) == ["10.244.250.0/24 via 198.18.0.250 dev eth0 proto static"]
