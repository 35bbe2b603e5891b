"""Interface selection for IPv6 and dual stack, against the real kernel in a throwaway namespace.

flanneld's rules (flannel `pkg/ipmatch`): the IPv6 default route for an IPv6-only network, both
default routes on one interface in dual stack, `--public-ipv6` as the lookup key and the published
address, and the per-family address choice.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from flanneld_py.iface import InterfaceError, select_interface
from tests.testbed import in_private_netns, inside, sh

pytestmark = pytest.mark.kernel
DUAL = (4, 6)


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with `eth0` (198.51.100.1/24, 2001:db8:1::1/64, both default routes) and
    `eth1` (203.0.113.5/24, 2001:db8:2::5/64 and a dynamic 2001:db8:2::7/64, MTU 9000)."""
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    name = f"fpy{os.getpid()}-if6"
    sh(["ip", "netns", "add", name])
    try:
        for cmd in (
            "ip link set lo up",
            "ip link add eth0 type veth peer name eth0p",
            "ip link add eth1 mtu 9000 type veth peer name eth1p",
            "ip addr add 198.51.100.1/24 dev eth0",
            "ip addr add 2001:db8:1::1/64 dev eth0 nodad",
            "ip addr add 203.0.113.5/24 dev eth1",
            "ip addr add 2001:db8:2::7/64 dev eth1 nodad valid_lft 300 preferred_lft 300",
            "ip addr add 2001:db8:2::5/64 dev eth1 nodad",  # permanent: chosen before ::7
            "ip link set eth0 up",
            "ip link set eth0p up",
            "ip link set eth1 up",
            "ip link set eth1p up",
            "ip route add default via 198.51.100.254",
            "ip -6 route add default via 2001:db8:1::fe",
            "ip -6 route add 2001:db8:77::/64 via 2001:db8:2::fe dev eth1 src 2001:db8:2::7",
        ):
            sh(["ip", "netns", "exec", name, *cmd.split()])
        yield name
    finally:
        sh(["ip", "netns", "del", name], check=False)


@pytest.fixture
def ipr(ns: str) -> Iterator[IPRoute]:
    with inside(ns):
        sock = IPRoute()
    try:
        yield sock
    finally:
        sock.close()


def run(ns: str, cmd: str) -> None:
    sh(["ip", "netns", "exec", ns, *cmd.split()])


def test_default_routes_pick_the_interface_per_stack(ipr: IPRoute) -> None:
    dual = select_interface([], ipr=ipr, families=DUAL)
    assert (dual.name, dual.iface_addr, dual.ext_addr, dual.iface_v6_addr, dual.ext_v6_addr) == (
        "eth0", "198.51.100.1", "198.51.100.1", "2001:db8:1::1", "2001:db8:1::1")  # fmt: skip
    v6 = select_interface([], ipr=ipr, families=(6,))
    assert (v6.name, v6.iface_addr, v6.ext_addr, v6.ext_v6_addr) == (
        "eth0", "", "", "2001:db8:1::1")  # fmt: skip
    assert (v6.ext(4), v6.ext(6)) == ("", "2001:db8:1::1")
    v4 = select_interface([], ipr=ipr)
    assert (v4.ext_addr, v4.iface_v6_addr, v4.ext_v6_addr) == ("198.51.100.1", "", "")


def test_dual_stack_needs_both_default_routes_on_one_interface(ns: str, ipr: IPRoute) -> None:
    run(ns, "ip -6 route replace default via 2001:db8:2::fe dev eth1")
    with pytest.raises(InterfaceError, match=r"IPv6 default route's interface \(eth1\)"):
        select_interface([], ipr=ipr, families=DUAL)
    assert select_interface([], ipr=ipr, families=(6,)).name == "eth1"
    assert select_interface([], ipr=ipr).name == "eth0"
    run(ns, "ip -6 route del default")
    with pytest.raises(InterfaceError, match="no IPv6 default route"):
        select_interface([], ipr=ipr, families=(6,))
    with pytest.raises(InterfaceError, match="no IPv6 default route"):
        select_interface([], ipr=ipr, families=DUAL)
    assert select_interface([], ipr=ipr).name == "eth0"  # IPv4-only does not care


def test_public_ipv6_finds_its_interface_and_is_published(ipr: IPRoute) -> None:
    owned = select_interface([], ipr=ipr, public_ipv6="2001:db8:2::7", families=(6,))
    assert (owned.name, owned.iface_v6_addr, owned.ext_v6_addr) == (
        "eth1", "2001:db8:2::7", "2001:db8:2::7")  # fmt: skip
    dual = select_interface([], ipr=ipr, public_ipv6="2001:db8:2::5", families=DUAL)
    assert (dual.name, dual.ext_addr, dual.ext_v6_addr) == ("eth1", "203.0.113.5", "2001:db8:2::5")
    # --public-ip is the lookup key before --public-ipv6; the IPv6 address is the interface's
    both = select_interface([], ipr=ipr, public_ip="198.51.100.1", public_ipv6="2001:db8:2::5",
                            families=DUAL)  # fmt: skip
    assert (both.name, both.iface_v6_addr, both.ext_v6_addr) == (
        "eth0", "2001:db8:1::1", "2001:db8:2::5")  # fmt: skip
    # behind NAT: the interface from --iface, the published address from --public-ipv6
    nat = select_interface(["eth0"], ipr=ipr, public_ipv6="2001:db8:ff::9", families=DUAL)
    assert (nat.iface_v6_addr, nat.ext_v6_addr, nat.ext_addr) == (
        "2001:db8:1::1", "2001:db8:ff::9", "198.51.100.1")  # fmt: skip
    with pytest.raises(InterfaceError, match="not an address of this machine"):
        select_interface([], ipr=ipr, public_ipv6="2001:db8:ff::9", families=(6,))
    with pytest.raises(InterfaceError, match=r"--public-ipv6 '198\.51\.100\.1' is not an IPv6"):
        select_interface([], ipr=ipr, public_ipv6="198.51.100.1", families=(6,))
    with pytest.raises(InterfaceError, match="--public-ipv6 'fe80::1%eth0' is not an IPv6"):
        select_interface([], ipr=ipr, public_ipv6="fe80::1%eth0", families=DUAL)
    # a family the network does not enable is left alone
    assert select_interface([], ipr=ipr, public_ipv6="nonsense").ext_v6_addr == ""
    assert select_interface([], ipr=ipr, public_ip="x", families=(6,)).ext_addr == ""


def test_iface_regex_and_can_reach_match_ipv6(ipr: IPRoute) -> None:
    by_ip6 = select_interface(["2001:db8:2::7"], ipr=ipr, families=DUAL)
    assert (by_ip6.name, by_ip6.iface_addr, by_ip6.iface_v6_addr) == (
        "eth1", "203.0.113.5", "2001:db8:2::7")  # fmt: skip
    by_ip4 = select_interface(["203.0.113.5"], ipr=ipr, families=DUAL)
    assert (by_ip4.iface_addr, by_ip4.iface_v6_addr) == ("203.0.113.5", "2001:db8:2::5")
    by_name = select_interface(["eth1"], ipr=ipr, families=(6,))
    assert by_name.iface_v6_addr == "2001:db8:2::5"  # permanent before dynamic
    regex = select_interface([], ipr=ipr, regexes=[r"^2001:db8:2::7$"], families=(6,))
    assert (regex.name, regex.iface_v6_addr) == ("eth1", "2001:db8:2::7")
    # in dual stack an address of either family may match; the other is the interface's first
    regex = select_interface([], ipr=ipr, regexes=[r"::7$"], families=DUAL)
    assert (regex.name, regex.iface_addr, regex.iface_v6_addr) == (
        "eth1", "203.0.113.5", "2001:db8:2::7")  # fmt: skip
    # an IPv6 address does not match in an IPv4-only network: the name does
    assert select_interface([], ipr=ipr, regexes=["nomatch", "::7$", "eth1"]).name == "eth1"
    reach = select_interface([], ipr=ipr, can_reach="2001:db8:77::1", families=DUAL)
    assert (reach.name, reach.iface_addr, reach.iface_v6_addr) == (
        "eth1",
        "203.0.113.5",
        "2001:db8:2::7",
    )  # fmt: skip  the route's source


def test_interface_without_an_address_of_an_enabled_family_is_refused(
    ns: str, ipr: IPRoute
) -> None:
    run(ns, "ip link add eth2 type veth peer name eth2p")
    run(ns, "sysctl -q -w net.ipv6.conf.eth2.disable_ipv6=1")  # not even a link-local one
    run(ns, "ip addr add 198.18.5.1/24 dev eth2")
    run(ns, "ip link set eth2 up")
    assert select_interface(["eth2"], ipr=ipr).iface_addr == "198.18.5.1"
    with pytest.raises(InterfaceError, match=r"eth2 \(--iface eth2\) has no IPv6 address"):
        select_interface(["eth2"], ipr=ipr, families=DUAL)
    # a name match needs addresses of every enabled family: eth0p (IPv4 only, before eth1 in
    # kernel order) is passed over for eth1 in dual stack
    run(ns, "ip addr add 198.18.6.1/24 dev eth0p")
    run(ns, "sysctl -q -w net.ipv6.conf.eth0p.disable_ipv6=1")
    assert select_interface([], ipr=ipr, regexes=["eth0p|eth1"]).name == "eth0p"
    assert select_interface([], ipr=ipr, regexes=["eth0p|eth1"], families=DUAL).name == "eth1"
