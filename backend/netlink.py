"""Every call flanneld-py makes into the kernel's routing tables, in one place.

Small functions over a pyroute2 `IPRoute` that take plain data (strings, ints) and return plain
data, so the rest of the code can be tested without a kernel. The per-peer objects (neighbour,
FDB and route entries) go through the bulk path in `backend.nlbulk` instead.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from backend.pyroute2_lite import ensure_lite

ensure_lite()

from pyroute2.iproute.linux import IPRoute  # noqa: E402 - after ensure_lite
from pyroute2.netlink.exceptions import NetlinkError  # noqa: E402
from pyroute2.netlink.rtnl import ndmsg  # noqa: E402

NUD_PERMANENT = ndmsg.states["permanent"]
NTF_SELF = ndmsg.flags["self"]
RTNH_F_ONLINK = 4
MAIN_TABLE = 254
RTPROT_BOOT = 3  # what `ip route` uses by default; flannel's netlink library sends the same
AF_BRIDGE = 7

__all__ = ["IPRoute", "NetlinkError"]


def family_of(address: str) -> int:
    """socket.AF_INET or socket.AF_INET6 for an address or CIDR string."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


@dataclass(frozen=True)
class VxlanSpec:
    """The VXLAN link flanneld wants (flannel `pkg/backend/vxlan/device.go` vxlanDeviceAttrs).

    `port` 0 means "let the kernel choose" (8472). `local` is the node's external address and
    `lower_index` the interface index of the external interface. `mtu` in bytes.
    """

    name: str
    vni: int
    local: str
    lower_index: int
    port: int
    learning: bool
    gbp: bool
    mtu: int
    mac: str


@dataclass(frozen=True)
class LinkState:
    """What the kernel reports of a link: index, MAC (lowercase), MTU (bytes), kind, and for a
    VXLAN link its VNI, local address, lower-device index and port (None when absent)."""

    index: int
    mac: str
    mtu: int
    kind: str
    up: bool
    vni: int | None = None
    local: str | None = None
    lower_index: int | None = None
    port: int | None = None
    gbp: bool = False
    learning: bool | None = None


def get_link(ipr: IPRoute, name: str) -> LinkState | None:
    """The link called `name`, or None when there is none."""
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    return _link_state(ipr.link("get", index=indexes[0])[0])


def _link_state(msg: Any) -> LinkState:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
    data = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
    vx: dict[str, Any] = {}
    gbp = False
    if kind == "vxlan" and data is not None:
        vx = {name: value for name, value in data.get("attrs", []) if name != "UNKNOWN"}
        gbp = "IFLA_VXLAN_GBP" in vx
    local = vx.get("IFLA_VXLAN_LOCAL") or vx.get("IFLA_VXLAN_LOCAL6")
    learning = vx.get("IFLA_VXLAN_LEARNING")
    return LinkState(
        index=msg["index"],
        mac=(msg.get("IFLA_ADDRESS") or "").lower(),
        mtu=msg.get("IFLA_MTU") or 0,
        kind=kind,
        up=bool(msg["flags"] & 1),
        vni=vx.get("IFLA_VXLAN_ID"),
        local=local,
        lower_index=vx.get("IFLA_VXLAN_LINK"),
        port=vx.get("IFLA_VXLAN_PORT"),
        gbp=gbp,
        learning=None if learning is None else bool(learning),
    )


def create_vxlan(ipr: IPRoute, spec: VxlanSpec) -> LinkState:
    """Create the VXLAN link of `spec`, with its MAC set at creation, and bring it up.

    Raises NetlinkError (e.g. EEXIST when a link of that name exists).
    """
    kwargs: dict[str, Any] = dict(
        ifname=spec.name,
        kind="vxlan",
        vxlan_id=spec.vni,
        vxlan_link=spec.lower_index,
        vxlan_learning=1 if spec.learning else 0,
        vxlan_l2miss=0,
        vxlan_l3miss=0,
        address=spec.mac,
        mtu=spec.mtu,
    )
    kwargs["vxlan_local6" if ":" in spec.local else "vxlan_local"] = spec.local
    if spec.port:
        kwargs["vxlan_port"] = spec.port
    if spec.gbp:
        kwargs["vxlan_gbp"] = True
    ipr.link("add", **kwargs)
    link = get_link(ipr, spec.name)
    assert link is not None
    ipr.link("set", index=link.index, state="up")
    return link


def delete_link(ipr: IPRoute, index: int) -> None:
    """Delete a link by index; a link already gone is not an error."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise


def set_link(ipr: IPRoute, index: int, *, mtu: int | None = None, up: bool = True) -> None:
    """Set a link's MTU (bytes, when given) and bring it up."""
    if mtu is not None:
        ipr.link("set", index=index, mtu=mtu)
    if up:
        ipr.link("set", index=index, state="up")


def link_addresses(ipr: IPRoute, index: int, family: int) -> list[tuple[str, int]]:
    """The (address, prefix length) pairs on a link for one family, in kernel order."""
    return [
        (m.get("IFA_ADDRESS"), m["prefixlen"])
        for m in ipr.addr("dump", index=index, family=family)
        if m.get("IFA_ADDRESS")
    ]


def ensure_address(
    ipr: IPRoute, index: int, address: str, prefixlen: int, remove_within: str | None
) -> list[str]:
    """Make `address/prefixlen` present on the link and remove other addresses of its family
    inside `remove_within` (a CIDR; None removes no others), except link-local ones (the
    kernel's own `fe80::` address of an IPv6 device stays). Returns the CIDRs removed."""
    family = family_of(address)
    wanted = ipaddress.ip_interface(f"{address}/{prefixlen}")
    scope = ipaddress.ip_network(remove_within) if remove_within else None
    removed = []
    present = False
    for addr, plen in link_addresses(ipr, index, family):
        have = ipaddress.ip_interface(f"{addr}/{plen}")
        if have == wanted:
            present = True
        elif scope is not None and have.ip in scope and not have.ip.is_link_local:
            ipr.addr("del", index=index, address=addr, prefixlen=plen)
            removed.append(str(have))
    if not present:
        ipr.addr("add", index=index, address=address, prefixlen=prefixlen)
    return removed


RTN_BLACKHOLE = 6


def ensure_blackhole(ipr: IPRoute, dst: str) -> bool:
    """Add a blackhole route to `dst` (CIDR text, main table) unless one exists; True when it
    was added. Raises NetlinkError."""
    family = family_of(dst)
    for m in ipr.route("dump", table=MAIN_TABLE, family=family, type=RTN_BLACKHOLE):
        if m["type"] == RTN_BLACKHOLE and f"{m.get('RTA_DST')}/{m['dst_len']}" == dst:
            return False
    ipr.route("add", dst=dst, type=RTN_BLACKHOLE, table=MAIN_TABLE, family=family)
    return True
