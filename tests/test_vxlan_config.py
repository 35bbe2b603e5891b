"""Unit tests for the pure parts of the VXLAN backend (backend.vxlan): the Backend object, MTU,
MAC generation, device names and the conversion of a peer's lease into its overlay entries.
No netlink calls are made.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest

from backend.reconcile import PeerEntry
from backend.vxlan import (
    KERNEL_DEFAULT_PORT,
    PeerFormatError,
    VXLANConfig,
    VxlanPeer,
    backend_data,
    device_name,
    overlay_mtu,
    parse_vxlan_config,
    peer_from_lease,
    random_mac,
)
from subnet.config import ConfigError, parse_config
from subnet.lease import Lease, LeaseAttrs

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network

MAC = "c6:d2:32:6f:8f:44"
MAC6 = "7a:1b:00:2c:3d:4e"


# --- Backend object -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [{}, {"Type": "vxlan"}, {"type": "vxlan", "VNI": None}])
def test_defaults(backend: dict[str, Any]) -> None:
    cfg = parse_vxlan_config(backend)
    assert cfg == VXLANConfig(vni=1, port=0, mtu=0, gbp=False, learning=False, direct_routing=False)
    assert KERNEL_DEFAULT_PORT == 8472


def test_all_keys_case_insensitive() -> None:
    cfg = parse_vxlan_config(
        {
            "vni": 4096,
            "PORT": 4789,
            "Mtu": 1400,
            "gbp": True,
            "LEARNING": True,
            "directrouting": True,
        }
    )
    assert cfg == VXLANConfig(
        vni=4096, port=4789, mtu=1400, gbp=True, learning=True, direct_routing=True
    )


def test_unknown_and_windows_keys_are_ignored() -> None:
    cfg = parse_vxlan_config({"Type": "vxlan", "MacPrefix": "0E-2A", "Name": "x", "Foo": [1]})
    assert cfg == VXLANConfig()


def test_parses_the_backend_of_a_network_config() -> None:
    net = parse_config(
        '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 2, "Port": 8472, '
        '"DirectRouting": true}}'
    )
    cfg = parse_vxlan_config(net.backend)
    assert (cfg.vni, cfg.port, cfg.direct_routing) == (2, 8472, True)


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("VNI", "1", "Backend.VNI"),
        ("VNI", 1.5, "Backend.VNI"),
        ("VNI", True, "Backend.VNI"),
        ("vni", [1], "Backend.VNI"),
        ("Port", "8472", "Backend.Port"),
        ("port", False, "Backend.Port"),
        ("MTU", 1400.0, "Backend.MTU"),
        ("mtu", "1400", "Backend.MTU"),
        ("GBP", 1, "Backend.GBP"),
        ("Learning", "yes", "Backend.Learning"),
    ],
)
def test_wrong_type_names_the_field(key: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_vxlan_config({key: value})
    assert info.value.field == field
    assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", ["true", 1])
def test_wrong_type_direct_routing_names_the_field(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_vxlan_config({"DirectRouting": value})
    assert info.value.field == "Backend.DirectRouting"


@pytest.mark.parametrize(
    ("key", "value", "field", "hint"),
    [
        ("VNI", 1 << 24, "Backend.VNI", "16777215"),
        ("VNI", -1, "Backend.VNI", "16777215"),
        ("Port", 65536, "Backend.Port", "65535"),
        ("MTU", -5, "Backend.MTU", "1450"),
    ],
)
def test_out_of_range_names_the_field(key: str, value: int, field: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_vxlan_config({key: value})
    assert info.value.field == field
    assert hint in str(info.value)


def test_range_limits_are_accepted() -> None:
    cfg = parse_vxlan_config({"VNI": (1 << 24) - 1, "Port": 65535, "MTU": 0})
    assert (cfg.vni, cfg.port, cfg.mtu) == (16777215, 65535, 0)


# --- MTU, names, MACs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "ipv6", "expected"),
    [(1500, False, 1450), (1500, True, 1430), (9000, False, 8950), (9000, True, 8930)],
)
def test_overlay_mtu(base: int, ipv6: bool, expected: int) -> None:
    assert overlay_mtu(base, ipv6) == expected


def test_device_names() -> None:
    assert device_name(1) == "flannel.1"
    assert device_name(1, 4) == "flannel.1"
    assert device_name(4096, 6) == "flannel-v6.4096"


def test_random_mac_is_local_unicast_lowercase() -> None:
    macs = [random_mac() for _ in range(100)]
    for mac in macs:
        assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac), mac
        first = int(mac[:2], 16)
        assert first & 0x01 == 0, mac  # unicast
        assert first & 0x02 == 0x02, mac  # locally administered
    assert len(set(macs)) >= 99


def test_backend_data_encodes_like_flannel() -> None:
    attrs = LeaseAttrs(V4("192.168.64.3"), None, "vxlan", backend_data(1, MAC))
    assert attrs.encode() == (
        b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
    )


# --- peer_from_lease ------------------------------------------------------------------------------


def vxlan_lease(data: Any = None, **kw: Any) -> Lease:
    attrs = LeaseAttrs(
        public_ip=kw.get("public_ip", V4("192.168.64.3")),
        public_ipv6=kw.get("public_ipv6"),
        backend_type=kw.get("backend_type", "vxlan"),
        backend_data={"VNI": 1, "VtepMAC": MAC} if data is None else data,
        backend_v6_data=kw.get("v6_data"),
    )
    return Lease(kw.get("subnet", N4("10.244.2.0/24")), kw.get("ipv6_subnet"), attrs)


def test_peer_from_vxlan_lease() -> None:
    assert peer_from_lease(vxlan_lease()) == VxlanPeer(
        v4=PeerEntry("10.244.2.0/24", "10.244.2.0", MAC, "192.168.64.3"), v6=None
    )


def test_peer_from_decoded_etcd_value() -> None:
    attrs = LeaseAttrs.decode(
        b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
    )
    peer = peer_from_lease(Lease(N4("10.5.72.0/24"), None, attrs))
    assert peer is not None and peer.v4 is not None
    assert peer.v4 == PeerEntry("10.5.72.0/24", "10.5.72.0", MAC, "192.168.64.3")


def test_peer_from_dual_stack_lease() -> None:
    lease = vxlan_lease(
        public_ipv6=V6("fd00:64::3"),
        ipv6_subnet=N6("fd00:244:0:2::/64"),
        v6_data={"VNI": 1, "VtepMAC": MAC6},
    )
    assert peer_from_lease(lease) == VxlanPeer(
        v4=PeerEntry("10.244.2.0/24", "10.244.2.0", MAC, "192.168.64.3"),
        v6=PeerEntry("fd00:244:0:2::/64", "fd00:244:0:2::", MAC6, "fd00:64::3"),
    )


def test_peer_from_ipv6_only_lease() -> None:
    lease = vxlan_lease(
        data={},
        subnet=None,
        public_ip=V4("0.0.0.0"),
        public_ipv6=V6("fd00:64::3"),
        ipv6_subnet=N6("fd00:244:0:2::/64"),
        v6_data={"vni": 1, "vtepmac": MAC6},
    )
    assert peer_from_lease(lease) == VxlanPeer(
        v4=None, v6=PeerEntry("fd00:244:0:2::/64", "fd00:244:0:2::", MAC6, "fd00:64::3")
    )


def test_mac_is_normalised_to_lowercase_colons() -> None:
    peer = peer_from_lease(vxlan_lease({"VNI": 1, "vtepmac": "C6-D2-32-6F-8F-44"}))
    assert peer is not None and peer.v4 is not None
    assert peer.v4.vtep_mac == MAC


@pytest.mark.parametrize("backend_type", ["host-gw", "udp", "", "VXLAN", "wireguard"])
def test_other_backend_types_are_not_peers(backend_type: str) -> None:
    assert peer_from_lease(vxlan_lease(backend_type=backend_type)) is None


@pytest.mark.parametrize(
    "data",
    [
        {"VNI": 1, "VtepMAC": "zz:d2:32:6f:8f:44"},
        {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f"},
        {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44:00"},
        {"VNI": 1, "VtepMAC": "c6d2326f8f44"},
        {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:4"},
        {"VNI": 1, "VtepMAC": 12},
        {"VNI": 1},
        {"VNI": 1, "VtepMAC": None},
        "c6:d2:32:6f:8f:44",
        [MAC],
    ],
)
def test_bad_vtep_mac_raises_peer_format_error(data: Any) -> None:
    with pytest.raises(PeerFormatError):
        peer_from_lease(vxlan_lease(data))


def test_peer_format_error_is_a_value_error() -> None:
    assert issubclass(PeerFormatError, ValueError)


@pytest.mark.parametrize("mac", ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"])
def test_non_unicast_vtep_mac_is_refused(mac: str) -> None:
    lease = Lease(
        ipaddress.IPv4Network("10.244.2.0/24"),
        None,
        LeaseAttrs(ipaddress.IPv4Address("198.18.0.2"), None, "vxlan", {"VNI": 1, "VtepMAC": mac}),
    )
    with pytest.raises(PeerFormatError, match="unicast"):
        peer_from_lease(lease)


@pytest.mark.parametrize("v6_mac", ["zz:00:00:00:00:01", "01:00:5e:00:00:01", None, 7])
def test_a_bad_ipv6_part_leaves_the_ipv4_part(v6_mac: Any) -> None:
    """A dual-stack peer with unusable BackendV6Data is still reached over IPv4 (flanneld
    programs the IPv4 part before it looks at the IPv6 one); IPv6-only, the lease is refused."""
    kw = {"public_ipv6": V6("fd00:64::3"), "ipv6_subnet": N6("fd00:244:0:2::/64"),
          "v6_data": {"VNI": 1, "VtepMAC": v6_mac}}  # fmt: skip
    assert peer_from_lease(vxlan_lease(**kw)) == VxlanPeer(
        v4=PeerEntry("10.244.2.0/24", "10.244.2.0", MAC, "192.168.64.3"), v6=None
    )
    with pytest.raises(PeerFormatError, match="BackendV6Data"):
        peer_from_lease(vxlan_lease(data={}, subnet=None, public_ip=V4("0.0.0.0"), **kw))


def test_an_ipv4_part_without_a_public_ip_is_refused() -> None:
    """PublicIP 0.0.0.0 (unset) with an IPv4 subnet would become an FDB entry to 0.0.0.0 (or,
    with DirectRouting or host-gw, a route without a gateway sending the subnet's traffic to
    the local network); no flanneld writes such a lease."""
    from backend import hostgw

    with pytest.raises(PeerFormatError, match="PublicIP"):
        peer_from_lease(vxlan_lease(public_ip=V4("0.0.0.0")))
    attrs = LeaseAttrs(V4("0.0.0.0"), None, "host-gw")
    with pytest.raises(PeerFormatError, match="PublicIP"):
        hostgw.peer_from_lease(Lease(N4("10.244.2.0/24"), None, attrs))
