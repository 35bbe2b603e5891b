"""The VXLAN device and interface selection against the real kernel, in a throwaway namespace."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from backend.reconcile import KernelState, Op
from backend.vxlan import VXLANConfig, VxlanDevice
from flanneld_py.iface import InterfaceError, select_interface
from tests.testbed import in_private_netns, inside, sh

pytestmark = pytest.mark.kernel


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace with a veth `eth0` (198.51.100.1/24, MTU 1500, default route)."""
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    name = f"fpy{os.getpid()}-dev"
    sh(["ip", "netns", "add", name])
    try:
        run = ["ip", "netns", "exec", name]
        sh([*run, "ip", "link", "set", "lo", "up"])
        sh([*run, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"])
        sh([*run, "ip", "addr", "add", "198.51.100.1/24", "dev", "eth0"])
        sh([*run, "ip", "link", "set", "eth0", "up"])
        sh([*run, "ip", "link", "set", "eth0p", "up"])
        sh([*run, "ip", "route", "add", "default", "via", "198.51.100.254"])
        yield name
    finally:
        sh(["ip", "netns", "del", name], check=False)


def link_json(ns: str, dev: str) -> dict[str, object]:
    res = sh(["ip", "netns", "exec", ns, "ip", "-d", "-j", "link", "show", dev])
    out: dict[str, object] = json.loads(res.stdout)[0]
    return out


def make_device(ns: str, cfg: VXLANConfig | None = None) -> VxlanDevice:
    with inside(ns):
        ipr = IPRoute()
        index = ipr.link_lookup(ifname="eth0")[0]
        ipr.close()
        dev = VxlanDevice(cfg or VXLANConfig(), 4, "198.51.100.1", index, 1500)
        dev.ipr  # noqa: B018 - open the sockets inside the namespace
        dev.bulk  # noqa: B018
    return dev


def test_device_has_flannel_attributes(ns: str) -> None:
    dev = make_device(ns)
    try:
        assert dev.ensure_device() is True
        dev.set_address("10.244.7.0", "10.244.0.0/16")
        link = link_json(ns, "flannel.1")
        info = link["linkinfo"]["info_data"]  # type: ignore[index]
        assert info["id"] == 1
        assert info["local"] == "198.51.100.1"
        assert info["port"] == 8472
        assert info["learning"] is False
        assert link["mtu"] == 1450
        assert link["address"] == dev.mac
        first = int(dev.mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast
        addrs = sh(["ip", "netns", "exec", ns, "ip", "-j", "addr", "show", "flannel.1"])
        assert [
            (a["local"], a["prefixlen"])
            for a in json.loads(addrs.stdout)[0]["addr_info"]
            if a["family"] == "inet"
        ] == [("10.244.7.0", 32)]
        # a second ensure reuses the device as it is
        assert dev.ensure_device() is False
        assert link_json(ns, "flannel.1")["ifindex"] == link["ifindex"]
    finally:
        dev.close()


def test_stale_address_inside_network_is_replaced(ns: str) -> None:
    dev = make_device(ns)
    try:
        dev.ensure_device()
        dev.set_address("10.244.7.0", "10.244.0.0/16")
        sh(["ip", "netns", "exec", ns, "ip", "addr", "add", "192.168.77.1/32", "dev", "flannel.1"])
        dev.set_address("10.244.9.0", "10.244.0.0/16")
        res = sh(["ip", "netns", "exec", ns, "ip", "-j", "-4", "addr", "show", "flannel.1"])
        have = sorted(a["local"] for a in json.loads(res.stdout)[0]["addr_info"])
        assert have == ["10.244.9.0", "192.168.77.1"]
    finally:
        dev.close()


def test_existing_device_with_wrong_mtu_is_fixed_and_keeps_its_mac(ns: str) -> None:
    sh(["ip", "netns", "exec", ns, "ip", "link", "add", "flannel.1", "mtu", "1300", "address",
        "0a:00:00:00:00:42", "type", "vxlan", "id", "1", "local", "198.51.100.1", "dev", "eth0",
        "dstport", "8472", "nolearning"])  # fmt: skip
    dev = make_device(ns)
    try:
        assert dev.ensure_device() is False
        link = link_json(ns, "flannel.1")
        assert link["mtu"] == 1450
        assert link["address"] == "0a:00:00:00:00:42" == dev.mac
    finally:
        dev.close()


@pytest.mark.parametrize(
    "wrong",
    [["id", "2", "dstport", "8472"], ["id", "1", "dstport", "4789"]],
    ids=["VNI", "port"],
)
def test_existing_device_with_wrong_vni_or_port_is_recreated(ns: str, wrong: list[str]) -> None:
    sh(["ip", "netns", "exec", ns, "ip", "link", "add", "flannel.1", "type", "vxlan", *wrong,
        "local", "198.51.100.1", "dev", "eth0"])  # fmt: skip
    before = link_json(ns, "flannel.1")["ifindex"]
    dev = make_device(ns)
    try:
        assert dev.ensure_device() is True
        link = link_json(ns, "flannel.1")
        info = link["linkinfo"]["info_data"]  # type: ignore[index]
        assert (info["id"], info["port"]) == (1, 8472)
        assert link["ifindex"] != before
    finally:
        dev.close()


def test_configured_port_mtu_and_vni_are_used(ns: str) -> None:
    dev = make_device(ns, VXLANConfig(vni=4096, port=4789, mtu=1400))
    try:
        dev.ensure_device()
        link = link_json(ns, "flannel.4096")
        info = link["linkinfo"]["info_data"]  # type: ignore[index]
        assert (info["id"], info["port"], link["mtu"]) == (4096, 4789, 1350)
    finally:
        dev.close()


def test_gbp_and_learning_from_the_network_config_reach_the_device(ns: str) -> None:
    from backend.vxlan import parse_vxlan_config

    cfg = parse_vxlan_config({"Type": "vxlan", "VNI": 7, "GBP": True, "Learning": True})
    dev = make_device(ns, cfg)
    try:
        dev.ensure_device()
        info = link_json(ns, "flannel.7")["linkinfo"]["info_data"]  # type: ignore[index]
        assert info["id"] == 7 and info["learning"] is True
        assert info.get("gbp") is True
        # a device without GBP is not reused for a GBP config: it is recreated with it
        dev.close()
        plain = make_device(ns, VXLANConfig(vni=7))
        plain.ensure_device()
        assert "gbp" not in link_json(ns, "flannel.7")["linkinfo"]["info_data"]  # type: ignore[index]
        plain.close()
    finally:
        dev.close()


def test_peer_entries_round_trip_through_the_kernel(ns: str) -> None:
    dev = make_device(ns)
    try:
        dev.ensure_device()
        for op in [
            Op("neigh", "replace", "10.244.2.0", "0e:00:00:00:00:02"),
            Op("fdb", "replace", "0e:00:00:00:00:02", "198.51.100.2"),
            Op("route", "replace", "10.244.2.0/24", "10.244.2.0"),
        ]:
            assert dev.apply_many([op]) == [None], op
        assert dev.dump() == KernelState(
            {"10.244.2.0": "0e:00:00:00:00:02"},
            {("0e:00:00:00:00:02", "198.51.100.2")},
            {"10.244.2.0/24": "10.244.2.0"},
        )
        res = sh(["ip", "netns", "exec", ns, "ip", "route", "show", "dev", "flannel.1"])
        assert "10.244.2.0/24 via 10.244.2.0 onlink" in res.stdout
        for op in [
            Op("route", "delete", "10.244.2.0/24", "10.244.2.0"),
            Op("fdb", "delete", "0e:00:00:00:00:02", "198.51.100.2"),
            Op("neigh", "delete", "10.244.2.0", "0e:00:00:00:00:02"),
            Op("route", "delete", "10.244.2.0/24", "10.244.2.0"),  # already gone: fine
        ]:
            assert dev.apply_many([op]) == [None], op
        assert dev.dump() == KernelState()
    finally:
        dev.close()


def test_iface_regex_and_can_reach_follow_flanneld_order(ns: str) -> None:
    """Several interfaces, several addresses each: --iface first, then --iface-regex (addresses
    before names), then --iface-can-reach; the address choice prefers permanent global ones."""
    run = ["ip", "netns", "exec", ns]
    for cmd in (
        "ip link add eth1 type veth peer name eth1p",
        "ip link add data0 type veth peer name data0p",
        "ip addr add 203.0.113.5/24 dev eth1",
        "ip addr add 203.0.113.9/24 dev eth1",
        "ip addr add 192.168.77.2/24 dev data0 valid_lft 300 preferred_lft 300",  # dynamic
        "ip addr add 192.168.78.2/24 dev data0",  # permanent: chosen first
        "ip link set eth1 up",
        "ip link set data0 up",
        "ip route add 198.18.200.0/24 via 203.0.113.1 dev eth1 src 203.0.113.9",
    ):
        sh([*run, *cmd.split()])
    with inside(ns):
        ipr = IPRoute()
    try:
        by_address = select_interface([], ipr=ipr, regexes=[r"^203\.0\.113\.9$"])
        assert (by_address.name, by_address.iface_addr) == ("eth1", "203.0.113.9")
        by_name = select_interface([], ipr=ipr, regexes=["^data"])
        assert (by_name.name, by_name.iface_addr) == ("data0", "192.168.78.2")
        # addresses are tried before names: "eth1" is not an address, so the name matches
        assert select_interface([], ipr=ipr, regexes=["nomatch", "eth1"]).name == "eth1"
        # --iface wins over the regexes, the regexes over --iface-can-reach
        assert select_interface(["data0"], ipr=ipr, regexes=["eth1"]).name == "data0"
        assert select_interface([], ipr=ipr, regexes=["data"], can_reach="198.18.200.7").name == (
            "data0"
        )
        reach = select_interface(["nosuch"], ipr=ipr, can_reach="198.18.200.7")
        assert (reach.name, reach.iface_addr) == ("eth1", "203.0.113.9")  # the route's source
        with pytest.raises(InterfaceError, match="--iface-regex nomatch"):
            select_interface([], ipr=ipr, regexes=["nomatch"])
        with pytest.raises(InterfaceError, match="not a regular expression"):
            select_interface([], ipr=ipr, regexes=["("])
        with pytest.raises(InterfaceError, match="not an IPv4 address"):
            select_interface([], ipr=ipr, can_reach="eth0")
    finally:
        ipr.close()


def test_interface_selection_follows_flanneld_order(ns: str) -> None:
    run = ["ip", "netns", "exec", ns]
    sh([*run, "ip", "link", "add", "eth1", "mtu", "9000", "type", "veth", "peer", "name", "eth1p"])
    sh([*run, "ip", "addr", "add", "203.0.113.5/24", "dev", "eth1"])
    sh([*run, "ip", "link", "set", "eth1", "up"])
    with inside(ns):
        ipr = IPRoute()
    try:
        default = select_interface([], ipr=ipr)
        assert (default.name, default.iface_addr, default.ext_addr) == (
            "eth0", "198.51.100.1", "198.51.100.1")  # fmt: skip
        by_name = select_interface(["nosuch", "eth1"], ipr=ipr)
        assert (by_name.name, by_name.mtu, by_name.iface_addr) == ("eth1", 9000, "203.0.113.5")
        by_ip = select_interface(["203.0.113.5"], ipr=ipr)
        assert by_ip.name == "eth1"
        nat = select_interface(["eth0"], public_ip="192.0.2.200", ipr=ipr)
        assert (nat.iface_addr, nat.ext_addr) == ("198.51.100.1", "192.0.2.200")
        owned = select_interface([], public_ip="203.0.113.5", ipr=ipr)
        assert owned.name == "eth1"
        with pytest.raises(InterfaceError, match="not an address of this machine"):
            select_interface([], public_ip="198.18.9.9", ipr=ipr)
        with pytest.raises(InterfaceError, match="nosuch"):
            select_interface(["nosuch"], ipr=ipr)
    finally:
        ipr.close()
