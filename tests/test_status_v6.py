"""`flanneld-py status` on IPv6-only and dual-stack networks: the `flannel-v6.<VNI>` device, the
IPv6 peers' entries, the IPv6 host-gw routes and the ip6tables / `flannel-ipv6` traffic rules.

Unit tests build an `Observed` by hand (as tests/test_status.py does for IPv4); the integration
tests (marked `kernel`) run the command in the nodes of the dual-stack and IPv6-only testbeds of
tests/test_dualstack.py.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from backend.netlink import LinkState
from backend.reconcile import KernelState, PeerEntry
from flanneld_py.status import (
    DeviceSide,
    Observed,
    OwnLease,
    build_report,
    exit_code,
    family_peers,
    find_own_lease,
    render_text,
)
from subnet.config import NetworkConfig
from subnet.lease import Lease, LeaseAttrs
from tests.test_dualstack import (  # noqa: F401 (fixtures)
    DUAL_CONFIG,
    dual_kube_testbed,
    dual_testbed,
    v6_kube_testbed,
    v6_testbed,
)
from tests.test_status import run_json, run_status
from tests.testbed import POD_NETWORK6, Testbed, wait_for
from tests.testbed import TestbedError as _TestbedError  # not collected as a test class

NET4 = ipaddress.IPv4Network("10.244.0.0/16")
NET6 = ipaddress.IPv6Network("fd10:244::/56")
DUAL_CFG = NetworkConfig(network=NET4, ipv6_network=NET6, enable_ipv6=True, backend_type="vxlan",
                         backend={"Type": "vxlan"})  # fmt: skip
V6_CFG = NetworkConfig(ipv6_network=NET6, enable_ipv4=False, enable_ipv6=True,
                       backend_type="vxlan", backend={"Type": "vxlan"})  # fmt: skip
OWN_MAC, OWN_MAC6 = "0e:00:00:00:00:01", "0e:00:00:00:06:01"


def mac(i: int, v6: bool = False) -> str:
    return f"0e:00:00:00:{'06' if v6 else '00'}:{i:02x}"


def sub4(i: int) -> str:
    return f"10.244.{i}.0/24"


def sub6(i: int) -> str:
    return f"fd10:244:0:{i:x}::/64"


def lease(i: int, v4: bool = True, v6_data: bool = True, backend: str = "vxlan") -> Lease:
    """Node i's lease: 10.244.i.0/24 (unless not `v4`) and fd10:244:0:i::/64, public IPs
    198.18.0.i and 2001:db8::i, VTEP MACs 0e:..:00:i and 0e:..:06:i."""
    data = {"VNI": 1, "VtepMAC": mac(i)} if backend == "vxlan" else None
    data6 = {"VNI": 1, "VtepMAC": mac(i, True)} if backend == "vxlan" and v6_data else None
    attrs = LeaseAttrs(
        public_ip=ipaddress.IPv4Address(f"198.18.0.{i}" if v4 else "0.0.0.0"),
        public_ipv6=ipaddress.IPv6Address(f"2001:db8::{i:x}"),
        backend_type=backend,
        backend_data=data if v4 else None,
        backend_v6_data=data6,
    )
    return Lease(ipaddress.IPv4Network(sub4(i)) if v4 else None,
                 ipaddress.IPv6Network(sub6(i)), attrs, lease_id=7)  # fmt: skip


def entry4(i: int) -> PeerEntry:
    return PeerEntry(sub4(i), f"10.244.{i}.0", mac(i), f"198.18.0.{i}")


def entry6(i: int) -> PeerEntry:
    return PeerEntry(sub6(i), f"fd10:244:0:{i:x}::", mac(i, True), f"2001:db8::{i:x}")


def vxlan_link(mtu: int, local: str, mac_: str, index: int, **kw: Any) -> LinkState:
    values: dict[str, Any] = dict(index=index, mac=mac_, mtu=mtu, kind="vxlan", up=True, vni=1,
                                  local=local, lower_index=2, port=8472)  # fmt: skip
    values.update(kw)
    return LinkState(**values)


ETH0 = LinkState(index=2, mac="02:00:00:00:00:09", mtu=1500, kind="veth", up=True)


def v6_side(**changes: Any) -> DeviceSide:
    side = DeviceSide(
        "flannel-v6.1",
        device=vxlan_link(1430, "2001:db8::1", OWN_MAC6, 6),
        device_addresses=["fd10:244:0:1::/128"],
        lower=ETH0,
        lower_name="eth0",
        kernel=KernelState.of([entry6(2), entry6(3)]),
    )
    for key, value in changes.items():
        setattr(side, key, value)
    return side


def dual(**changes: Any) -> Observed:
    """Node 1 of a dual-stack network, in sync with nodes 2 and 3 in both families."""
    own = lease(1)
    leases = [(own.key, own), (lease(2).key, lease(2)), (lease(3).key, lease(3))]
    obs = Observed(
        mode="etcd",
        endpoint="http://198.18.0.254:2379",
        subnet_file="/run/flannel/subnet.env",
        config=DUAL_CFG,
        leases=leases,
        own=OwnLease(
            own.key,
            own.subnet,
            "198.18.0.1",
            OWN_MAC,
            "vxlan",
            lease_id=7,
            ttl=3600.0,
            ipv6_subnet=own.ipv6_subnet,
            public_ipv6="2001:db8::1",
            vtep_mac_v6=OWN_MAC6,
        ),
        env={
            "FLANNEL_NETWORK": str(NET4),
            "FLANNEL_SUBNET": "10.244.1.1/24",
            "FLANNEL_IPV6_NETWORK": str(NET6),
            "FLANNEL_IPV6_SUBNET": "fd10:244:0:1::1/64",
            "FLANNEL_MTU": "1430",
            "FLANNEL_IPMASQ": "false",
        },
        device=vxlan_link(1450, "198.18.0.1", OWN_MAC, 5),
        device_addresses=["10.244.1.0/32"],
        lower=ETH0,
        lower_name="eth0",
        kernel=KernelState.of([entry4(2), entry4(3)]),
        cni_bridge=LinkState(index=9, mac="02:00:00:00:00:0a", mtu=1430, kind="bridge", up=True),
        iface_name="eth0",
        iface_addr="198.18.0.1",
        iface_v6_addr="2001:db8::1",
        state={"pid": 4242, "ready": True, "peers": 2, "last_full_sync": 1_700_000_000.0},
        daemon_alive=True,
        v6=v6_side(),
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


def v6_only(**changes: Any) -> Observed:
    """Node 1 of an IPv6-only network (no flannel.1, no FLANNEL_SUBNET), in sync."""
    leases = [(lease(i, v4=False).key, lease(i, v4=False)) for i in (1, 2, 3)]
    own = leases[0][1]
    obs = dual(
        config=V6_CFG,
        leases=leases,
        own=OwnLease(
            own.key,
            None,
            None,
            None,
            "vxlan",
            lease_id=7,
            ttl=3600.0,
            ipv6_subnet=own.ipv6_subnet,
            public_ipv6="2001:db8::1",
            vtep_mac_v6=OWN_MAC6,
        ),
        env={
            "FLANNEL_IPV6_NETWORK": str(NET6),
            "FLANNEL_IPV6_SUBNET": "fd10:244:0:1::1/64",
            "FLANNEL_MTU": "1430",
            "FLANNEL_IPMASQ": "false",
        },
        device_name="flannel.1",
        device=None,
        device_addresses=[],
        lower=None,
        lower_name=None,
        kernel=None,
        iface_addr="",
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


def only(problems: list[str], needle: str) -> str:
    found = [p for p in problems if needle in p]
    assert len(found) == 1, problems
    return found[0]


# --- the report ----------------------------------------------------------------------------------


def test_dual_stack_node_in_sync_reports_both_devices_exit_0() -> None:
    report = build_report(dual(), now=1_700_000_100.0)
    assert report["problems"] == [] and report["in_sync"] is True and exit_code(report) == 0
    assert report["network"]["families"] == [4, 6]
    assert report["network"]["ipv6_network"] == str(NET6)
    v6 = report["ipv6"]
    assert v6["in_sync"] is True and v6["diff"]["checked"] is True
    assert (v6["device"]["name"], v6["device"]["mtu"], v6["device"]["needed"]) == (
        "flannel-v6.1", 1430, True)  # fmt: skip
    assert v6["device"]["addresses"] == ["fd10:244:0:1::/128"]
    assert [(p["key"], p["subnet"], p["public_ip"]) for p in v6["peers"]["entries"]] == [
        (lease(2).key, sub6(2), "2001:db8::2"),
        (lease(3).key, sub6(3), "2001:db8::3"),
    ]
    assert report["peers"]["count"] == 2 and report["device"]["mtu"] == 1450
    lease_ = report["lease"]
    assert (lease_["ipv6_subnet"], lease_["public_ipv6"], lease_["vtep_mac_v6"]) == (
        sub6(1), "2001:db8::1", OWN_MAC6)  # fmt: skip
    json.dumps(report)
    text = render_text(report, now=1_700_000_100.0)
    for want in (
        f"Network       {NET4}, {NET6}, backend vxlan",
        "  subnet       10.244.1.0/24 (key 10.244.1.0-24&fd10:244:0:1::-64)",
        f"  IPv6 subnet  {sub6(1)}",
        "  public IPv6  2001:db8::1",
        f"  VTEP MAC v6  {OWN_MAC6}",
        "Device        flannel.1",
        "Device IPv6   flannel-v6.1",
        "  address      fd10:244:0:1::/128",
        "  local        2001:db8::1 (via eth0)",
        "Peers         2",
        "Peers IPv6    2",
        "Datapath      in sync (2 peers x neighbour, FDB, route)",
        "Datapath IPv6 in sync (2 peers x neighbour, FDB, route)",
        "OK: in sync and healthy",
    ):
        assert want in text, text


def test_ipv4_only_report_has_no_ipv6_section() -> None:
    obs = dual(config=NetworkConfig(network=NET4, backend_type="vxlan", backend={"Type": "vxlan"}),
               v6=None)  # fmt: skip
    report = build_report(obs)
    assert report["ipv6"] is None and report["network"]["families"] == [4]
    text = render_text(report)
    assert "IPv6" not in text and "v6" not in text


def test_ipv6_only_node_in_sync_needs_no_ipv4_device_nor_flannel_subnet() -> None:
    report = build_report(v6_only())
    assert report["problems"] == [] and report["in_sync"] is True and exit_code(report) == 0
    assert report["device"]["needed"] is False and report["peers"]["count"] == 0
    assert report["ipv6"]["peers"]["count"] == 2 and report["ipv6"]["in_sync"] is True
    text = render_text(report)
    assert "Device IPv6   flannel-v6.1" in text and "Device        flannel.1" not in text
    assert "Datapath IPv6 in sync (2 peers" in text and "Datapath      " not in text
    assert "  subnet       " not in text and "public IP    " not in text
    key = lease(1, v4=False).key
    assert f"  IPv6 subnet  {sub6(1)} (key {key})" in text


def test_ipv6_drift_is_listed_under_ipv6_and_exit_1() -> None:
    kernel = KernelState.of([entry6(2), entry6(3)])
    del kernel.routes[sub6(3)]
    kernel.fdb.discard((mac(2, True), "2001:db8::2"))
    report = build_report(dual(v6=v6_side(kernel=kernel)))
    assert exit_code(report) == 1 and report["in_sync"] is False
    assert report["diff"]["missing"] == []  # IPv4 untouched
    d = report["ipv6"]["diff"]
    assert sorted((i["kind"], i["peer"]) for i in d["missing"]) == [
        ("fdb", lease(2).key),
        ("route", lease(3).key),
    ]
    only(report["problems"], "the kernel's IPv6 overlay entries differ")
    text = render_text(report)
    assert "Datapath IPv6 OUT OF SYNC (desired vs kernel)" in text
    assert "Datapath      in sync (2 peers x neighbour, FDB, route)" in text
    route = f"  missing    route  {lease(3).key} {sub6(3)} via fd10:244:0:3::"
    assert route in text, text


def test_ipv6_device_differences_are_explained() -> None:
    def problems(**side: Any) -> list[str]:
        return list(build_report(dual(v6=v6_side(**side)))["problems"])

    mtu = only(problems(device=vxlan_link(1450, "2001:db8::1", OWN_MAC6, 6)), "flannel-v6.1 has")
    assert "should have 1430 (eth0 MTU 1500 minus 70 bytes" in mtu
    wrong_mac = vxlan_link(1430, "2001:db8::1", "0e:00:00:00:06:77", 6)
    assert OWN_MAC6 in only(problems(device=wrong_mac), "publishes VTEP MAC")
    only(problems(device_addresses=[]), "flannel-v6.1 lacks its VTEP address fd10:244:0:1::/128")
    only(problems(device=vxlan_link(1430, "2001:db8::1", OWN_MAC6, 6, vni=2)), "VNI 2")
    only(problems(device=vxlan_link(1430, "2001:db8::1", OWN_MAC6, 6, port=4789)), "port 4789")
    only(problems(device=vxlan_link(1430, "2001:db8::99", OWN_MAC6, 6)), "sends from 2001:db8::99")
    gone = problems(device=None, device_addresses=[], kernel=None)
    assert "flannel-v6.1 does not exist" in only(gone, "device missing")
    # FLANNEL_MTU is the smaller device MTU: 1430 for flannel.1 at 1450 is right; 1450 is not
    env = {**(dual().env or {}), "FLANNEL_MTU": "1450"}
    big = build_report(dual(env=env))["problems"]
    assert "flannel-v6.1 has MTU 1430" in only(big, "pods get MTU 1450")


def test_ipv6_lease_and_subnet_env_problems() -> None:
    obs = dual()
    assert obs.own is not None
    obs.own.vtep_mac_v6 = None
    only(build_report(obs)["problems"], "does not publish an IPv6 VTEP MAC (BackendV6Data)")
    env = {**(dual().env or {}), "FLANNEL_IPV6_SUBNET": "fd10:244:0:9::1/64"}
    only(build_report(dual(env=env))["problems"], f"lease's IPv6 subnet is {sub6(1)}")
    env = {k: v for k, v in (v6_only().env or {}).items() if k != "FLANNEL_IPV6_SUBNET"}
    only(build_report(v6_only(env=env))["problems"], "has no valid FLANNEL_IPV6_SUBNET")
    env = {**(dual().env or {}), "FLANNEL_IPV6_NETWORK": "fd99::/56"}
    only(build_report(dual(env=env))["problems"], "FLANNEL_IPV6_NETWORK=fd99::/56")


def test_family_peers_follow_the_daemons_dual_stack_rules() -> None:
    own = lease(1)
    networks: dict[int, Any] = {4: NET4, 6: NET6}
    owns = {4: own.subnet, 6: own.ipv6_subnet}
    overlap6 = lease(5)
    overlap6 = Lease(overlap6.subnet, own.ipv6_subnet, overlap6.attrs)  # same IPv6, other IPv4
    leases = [
        (own.key, own),
        (lease(2).key, lease(2)),
        ("no-v6-data", lease(3, v6_data=False)),
        ("overlap6", overlap6),
    ]
    e6, skipped, partial = family_peers(leases, own.key, owns, networks, 6)
    assert e6 == {lease(2).key: entry6(2)} and skipped == []
    # a bad IPv6 subnet costs only the IPv6 part, as in the daemon (`families.peer_record`)
    assert [p["key"] for p in partial] == ["no-v6-data", "overlap6"]
    assert partial[0]["reason"] == "no BackendV6Data" and "overlaps" in partial[1]["reason"]
    e4, _, partial4 = family_peers(leases, own.key, owns, networks, 4)
    assert e4 == {lease(2).key: entry4(2), "no-v6-data": entry4(3), "overlap6": entry4(5)}
    assert partial4 == []
    report = build_report(dual(leases=leases))
    assert report["ipv6"]["peers"]["partial"] == partial
    assert any("no-v6-data has no IPv6 entry (no BackendV6Data)" in w for w in report["warnings"])
    assert "  partial no-v6-data: no BackendV6Data" in render_text(report)


def test_own_ipv6_lease_found_by_subnet_env_address_mac_or_public_ipv6() -> None:
    leases = [(lease(i, v4=False).key, lease(i, v4=False)) for i in (1, 2, 3)]
    v6 = ipaddress.IPv6Network
    found, how = find_own_lease(leases, None, env_subnet6=v6(sub6(2)))
    assert found is not None and found[1] == leases[1][1] and how == "from subnet.env"
    found, how = find_own_lease(leases, None, env_subnet6=v6(sub6(9)))
    assert found is None and sub6(9) in how
    assert find_own_lease(leases, None, ["fd10:244:0:3::/128"])[0] == leases[2]
    assert find_own_lease(leases, None, device_macs=[mac(2, True)])[0] == leases[1]
    assert find_own_lease(leases, None, public_ipv6="2001:db8::3")[0] == leases[2]
    # dual stack: subnet.env names both subnets, both must match
    duals = [(lease(i).key, lease(i)) for i in (1, 2)]
    v4 = ipaddress.IPv4Network
    assert find_own_lease(duals, v4(sub4(2)), env_subnet6=v6(sub6(2)))[0] == duals[1]
    assert find_own_lease(duals, v4(sub4(2)), env_subnet6=v6(sub6(1)))[0] is None


def test_host_gw_dual_stack_routes_and_ipv6_nat_check() -> None:
    cfg = NetworkConfig(network=NET4, ipv6_network=NET6, enable_ipv6=True, backend_type="host-gw",
                        backend={"Type": "host-gw"})  # fmt: skip
    leases = [(lease(i, backend="host-gw").key, lease(i, backend="host-gw")) for i in (1, 2)]
    d4 = PeerEntry.direct_route(sub4(2), "198.18.0.2")
    d6 = PeerEntry.direct_route(sub6(2), "2001:db8::2")

    def node(**changes: Any) -> Observed:
        own = dual().own
        assert own is not None
        own.vtep_mac = own.vtep_mac_v6 = None
        obs = dual(
            config=cfg,
            leases=leases,
            own=own,
            device=None,
            device_addresses=[],
            kernel=KernelState.of([d4]),
            iface=ETH0,
            env={**(dual().env or {}), "FLANNEL_MTU": "1500"},
            cni_bridge=None,
            v6=DeviceSide("flannel-v6.1", kernel=KernelState.of([d6])),
        )
        for key, value in changes.items():
            setattr(obs, key, value)
        return obs

    report = build_report(node())
    assert report["problems"] == [] and exit_code(report) == 0, report["problems"]
    assert report["ipv6"]["device"]["needed"] is False
    assert [(p["subnet"], p["kind"]) for p in report["ipv6"]["peers"]["entries"]] == [
        (sub6(2), "direct")
    ]
    text = render_text(report)
    assert "  IPv6 address 2001:db8::1" in text and "Datapath IPv6 in sync (1 peers" in text
    gone = build_report(node(v6=DeviceSide("flannel-v6.1", kernel=KernelState())))
    assert [(i["kind"], i["dst"], i["gateway"]) for i in gone["ipv6"]["diff"]["missing"]] == [
        ("direct", sub6(2), "2001:db8::2")
    ]
    only(gone["problems"], "the kernel's IPv6 routes differ")
    nat = build_report(node(iface_v6_addr="2001:db8::77"))["problems"]
    assert "2001:db8::1" in only(nat, "probably behind NAT")


def test_ipv6_direct_routing_decisions_make_direct_and_overlay_ipv6_peers() -> None:
    cfg = NetworkConfig(network=NET4, ipv6_network=NET6, enable_ipv6=True, backend_type="vxlan",
                        backend={"Type": "vxlan", "DirectRouting": True})  # fmt: skip
    d6 = PeerEntry.direct_route(sub6(2), "2001:db8::2")
    side = v6_side(direct_ips={"2001:db8::2": True, "2001:db8::3": False},
                   kernel=KernelState.of([d6, entry6(3)]))  # fmt: skip
    report = build_report(dual(config=cfg, v6=side))
    assert report["ipv6"]["in_sync"] is True and report["problems"] == [], report["problems"]
    assert {p["subnet"]: p["kind"] for p in report["ipv6"]["peers"]["entries"]} == {
        sub6(2): "direct",
        sub6(3): "overlay",
    }
    assert (report["peers"]["direct"], report["peers"]["overlay"]) == (0, 2)  # IPv4: no decision
    text = render_text(report)
    assert "Peers IPv6    2 (1 direct, 1 overlay)" in text
    assert f"  direct   {sub6(2):<20}via 2001:db8::2" in text
    assert "Datapath IPv6 in sync (2 peers: 1 x route via public IP; 1 x neighbour" in text
    # the peer programmed through the overlay instead: its direct route is missing
    other = build_report(dual(config=cfg, v6=v6_side(direct_ips=side.direct_ips)))
    missing = other["ipv6"]["diff"]["missing"]
    assert [(i["kind"], i["dst"], i["gateway"]) for i in missing] == [
        ("direct", sub6(2), "2001:db8::2")
    ]


def test_traffic_rules_of_both_families_in_one_line() -> None:
    rules = {"mode": "iptables", "masquerade": True, "forward": True, "checked": True,
             "missing": ["ip6tables filter -A FORWARD -m comment --comment \"flanneld forward\" "
                         "-j FLANNEL-FWD"], "error": None, "families": [4, 6]}  # fmt: skip
    report = build_report(dual(rules=rules))
    assert "ip6tables filter" in only(report["problems"], "traffic rules missing (iptables mode)")
    text = render_text(report)
    assert "Traffic rules iptables IPv4+IPv6 (masquerade yes, forward yes): MISSING" in text
    assert "  missing    ip6tables filter -A FORWARD" in text


# --- integration: dual-stack and IPv6-only nodes -------------------------------------------------


@pytest.mark.kernel
@pytest.mark.etcd
def test_dual_stack_node_status_is_clean_then_ipv6_route_and_fdb_deleted_are_missing(
    dual_testbed: Testbed,  # noqa: F811
) -> None:
    tb = dual_testbed
    node, peer = tb.start_nodes(2)
    tb.add_pod(node)  # creates cni0

    def clean() -> dict[str, Any] | None:
        code, report = run_json(tb, node)
        return report if code == 0 else None

    report = wait_for("the dual-stack node's status clean", clean)
    assert report is not None and report["problems"] == [], report
    v6 = report["ipv6"]
    mac6 = tb.vtep_mac(node, "flannel-v6.1")
    subnet6 = tb.subnet6_of(node)
    assert (v6["device"]["name"], v6["device"]["mtu"], v6["device"]["mac"]) == (
        "flannel-v6.1", 1430, mac6)  # fmt: skip
    assert v6["device"]["addresses"] == [f"{subnet6.split('/')[0]}/128"]
    assert (v6["device"]["vni"], v6["device"]["port"]) == (1, 8472)
    assert v6["device"]["local"] == node.address6
    assert (report["lease"]["ipv6_subnet"], report["lease"]["vtep_mac_v6"]) == (subnet6, mac6)
    assert report["lease"]["public_ipv6"] == node.address6
    assert [(p["subnet"], p["public_ip"]) for p in v6["peers"]["entries"]] == [
        (tb.subnet6_of(peer), peer.address6)
    ]
    assert report["device"]["mtu"] == 1450 and report["peers"]["count"] == 1
    res = run_status(tb, node)
    assert res.returncode == 0, res.stdout + res.stderr
    for want in ("Device IPv6   flannel-v6.1", "Peers IPv6    1", "Datapath IPv6 in sync"):
        assert want in res.stdout, res.stdout
    # the daemon stopped (it would repair them), an IPv6 route and FDB entry deleted by hand
    assert tb.stop_daemon(node) == 0
    psub6 = tb.subnet6_of(peer)
    pmac6 = tb.vtep_mac(peer, "flannel-v6.1")
    tb.node_sh(node, "ip", "-6", "route", "del", psub6, "dev", "flannel-v6.1")
    tb.node_sh(node, "bridge", "fdb", "del", pmac6, "dev", "flannel-v6.1", "dst", peer.address6)
    res = run_status(tb, node)
    assert res.returncode == 1
    key = next(iter(tb.leases().keys() - {k for k in tb.leases() if subnet6.split("/")[0] in k}))
    assert "Datapath IPv6 OUT OF SYNC (desired vs kernel)" in res.stdout, res.stdout
    assert f"  missing    route  {key} {psub6} via {psub6.split('/')[0]}" in res.stdout
    assert "Datapath      in sync (1 peers x neighbour, FDB, route)" in res.stdout
    code, report = run_json(tb, node)
    assert code == 1 and report["in_sync"] is False and report["diff"]["missing"] == []
    d = report["ipv6"]["diff"]
    assert sorted((i["kind"], i["text"]) for i in d["missing"]) == [
        ("fdb", f"{pmac6} dst {peer.address6}"),
        ("route", f"{psub6} via {psub6.split('/')[0]}"),
    ]
    assert d["wrong"] == [] and d["unexpected"] == []
    assert [p for p in report["problems"] if "IPv6 overlay entries differ" in p]


@pytest.mark.kernel
@pytest.mark.etcd
def test_ipv6_only_node_status_is_clean(v6_testbed: Testbed) -> None:  # noqa: F811
    tb = v6_testbed
    node, peer = tb.start_nodes(2)

    seen: list[dict[str, Any]] = []

    def clean() -> dict[str, Any] | None:
        code, report = run_json(tb, node)
        seen[:] = [report]
        return report if code == 0 else None

    try:
        report = wait_for("the IPv6-only node's status clean", clean)
    except _TestbedError:
        pytest.fail(f"status not clean: {seen and seen[0]['problems']}")
    assert report is not None and report["problems"] == [], report
    assert report["network"]["families"] == [6] and report["device"]["needed"] is False
    assert report["lease"]["subnet"] is None
    assert report["lease"]["ipv6_subnet"] == tb.subnet6_of(node)
    v6 = report["ipv6"]
    assert v6["device"]["exists"] and v6["device"]["mtu"] == 1430
    assert [p["public_ip"] for p in v6["peers"]["entries"]] == [peer.address6]
    res = run_status(tb, node)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Datapath IPv6 in sync (1 peers x neighbour, FDB, route)" in res.stdout
    assert "flannel.1" not in res.stdout


@pytest.mark.kernel
@pytest.mark.etcd
def test_dual_stack_ip6tables_and_nftables_ipv6_rules_checked(
    dual_testbed: Testbed,  # noqa: F811
) -> None:
    tb = dual_testbed
    node = tb.add_node()
    tb.start_daemon(node, "--ip-masq")
    tb.wait_subnet(node)

    def rules_ok() -> dict[str, Any] | None:
        res = run_status(tb, node, "--ip-masq", "--json")
        report: dict[str, Any] = json.loads(res.stdout)
        return report if res.returncode == 0 and report["rules"]["missing"] == [] else None

    report = wait_for("the iptables and ip6tables rules present", rules_ok)
    assert report is not None and report["rules"]["families"] == [4, 6]
    assert tb.stop_daemon(node) == 0
    tb.node_sh(node, "ip6tables", "-t", "filter", "-F", "FLANNEL-FWD")
    res = run_status(tb, node, "--ip-masq")
    assert res.returncode == 1
    assert "Traffic rules iptables IPv4+IPv6 (masquerade yes, forward yes): MISSING" in res.stdout
    assert f"  missing    ip6tables filter -A FLANNEL-FWD -s {POD_NETWORK6}" in res.stdout
    assert "  missing    filter -A FLANNEL-FWD" not in res.stdout  # IPv4 intact

    config = {**json.loads(DUAL_CONFIG), "EnableNFTables": True}
    tb.put_config(json.dumps(config))
    tb.start_daemon(node, "--ip-masq")
    report = wait_for("the nftables rules present", rules_ok)
    assert report is not None and report["rules"]["mode"] == "nftables"
    assert tb.stop_daemon(node) == 0
    tb.node_sh(node, "nft", "delete", "chain", "ip6", "flannel-ipv6", "forward")
    code, report = run_json(tb, node)
    assert code == 1 and report["rules"]["missing"] == ["chain ip6 flannel-ipv6 forward"]


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_dual_stack_status_clean_then_ipv6_route_deleted_is_missing(
    dual_testbed: Testbed,  # noqa: F811
) -> None:
    tb = dual_testbed
    tb.put_config(json.dumps({**json.loads(DUAL_CONFIG), "Backend": {"Type": "host-gw"}}))
    node, peer = (tb.add_node() for _ in range(2))
    for n in (node, peer):
        tb.start_daemon(n)
    for n in (node, peer):
        tb.wait_subnet(n)
    psub6 = tb.subnet6_of(peer)
    route6 = f"{psub6} via {peer.address6} dev eth0"
    wait_for("the IPv6 host-gw route",
             lambda: route6 in tb.node_sh(node, "ip", "-6", "route").stdout)  # fmt: skip
    code, report = run_json(tb, node)
    assert code == 0 and report["problems"] == [], report["problems"]
    v6 = report["ipv6"]
    assert v6["device"]["needed"] is False
    assert [(p["subnet"], p["public_ip"], p["kind"]) for p in v6["peers"]["entries"]] == [
        (psub6, peer.address6, "direct")
    ]
    assert report["interface"]["address_v6"] == node.address6
    assert tb.stop_daemon(node) == 0
    tb.node_sh(node, "ip", "-6", "route", "del", psub6)
    code, report = run_json(tb, node)
    assert code == 1 and report["diff"]["missing"] == []
    assert [(i["kind"], i["dst"], i["gateway"]) for i in report["ipv6"]["diff"]["missing"]] == [
        ("direct", psub6, peer.address6)
    ]


@pytest.mark.kernel
@pytest.mark.kube
@pytest.mark.parametrize("stack", ["dual", "ipv6"])
def test_kube_dual_stack_and_ipv6_only_status_clean(
    stack: str, request: pytest.FixtureRequest
) -> None:
    tb: Testbed = request.getfixturevalue(f"{stack if stack == 'dual' else 'v6'}_kube_testbed")
    node, peer = tb.start_nodes(2)

    def clean() -> dict[str, Any] | None:
        code, report = run_json(tb, node)
        return report if code == 0 else None

    report = wait_for(f"the {stack} kube node's status clean", clean)
    assert report is not None and report["problems"] == [], report
    assert report["lease"]["ipv6_subnet"] == tb.subnet6_of(node)
    assert report["lease"]["vtep_mac_v6"] == tb.vtep_mac(node, "flannel-v6.1")
    assert report["lease"]["public_ipv6"] == node.address6
    assert [p["key"] for p in report["ipv6"]["peers"]["entries"]] == [peer.name]
    assert report["network"]["families"] == ([4, 6] if stack == "dual" else [6])


@pytest.mark.kernel
@pytest.mark.etcd
def test_dual_stack_direct_routing_status_clean_then_ipv6_direct_route_deleted(
    dual_testbed: Testbed,  # noqa: F811
) -> None:
    """Nodes on one L2 network: with DirectRouting every peer is direct in both families."""
    tb = dual_testbed
    config = json.loads(DUAL_CONFIG)
    tb.put_config(json.dumps({**config, "Backend": {"Type": "vxlan", "DirectRouting": True}}))
    node, peer = (tb.add_node() for _ in range(2))
    for n in (node, peer):
        tb.start_daemon(n)
    for n in (node, peer):
        tb.wait_subnet(n)
    psub6 = tb.subnet6_of(peer)
    route6 = f"{psub6} via {peer.address6} dev eth0"
    route4 = f"{tb.subnet_of(peer)} via {peer.address} dev eth0"
    wait_for("the IPv6 direct route",
             lambda: route6 in tb.node_sh(node, "ip", "-6", "route").stdout)  # fmt: skip
    wait_for("the IPv4 direct route", lambda: route4 in tb.node_sh(node, "ip", "route").stdout)
    code, report = run_json(tb, node)
    assert code == 0 and report["problems"] == [], report["problems"]
    assert [(p["subnet"], p["kind"]) for p in report["ipv6"]["peers"]["entries"]] == [
        (psub6, "direct")
    ]
    assert report["peers"]["direct"] == 1
    assert tb.stop_daemon(node) == 0
    tb.node_sh(node, "ip", "-6", "route", "del", psub6)
    code, report = run_json(tb, node)
    assert code == 1 and report["diff"]["missing"] == []
    assert [(i["kind"], i["dst"], i["gateway"]) for i in report["ipv6"]["diff"]["missing"]] == [
        ("direct", psub6, peer.address6)
    ]
