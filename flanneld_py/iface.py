"""Choosing the external interface: the one VXLAN packets leave by, and the addresses peers use.

flanneld's order (flannel `main.go` and `pkg/ipmatch` LookupExtIface): each `--iface` in turn (an
IP address names the interface that owns it, anything else is an interface name), then each
`--iface-regex` (matched against every usable address of the enabled families of every interface,
in kernel order, and only when no address matches, against interface names), then
`--iface-can-reach` (the interface and preferred source address of the route to that IP); the
first that finds an interface wins. With none of the three, the interface owning `--public-ip` if
that is set, else the one owning `--public-ipv6`, else the interface of the default route: the
IPv4 one, the IPv6 one for an IPv6-only network, and in dual stack both, which must be the same
interface.

Per enabled family the interface address is the one that matched (an `--iface` or public IP, a
regex, the route's source), else the interface's first usable one (global before link-local,
permanent before dynamic, non-temporary before temporary). The external address peers use is
`--public-ip` / `--public-ipv6` when set, else that interface address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backend.netlink import IPRoute, NetlinkError

IFA_F_TEMPORARY = 0x01  # an IPv6 privacy address (RFC 8981)
IFA_F_DEPRECATED = 0x20
IFA_F_PERMANENT = 0x80
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


class InterfaceError(RuntimeError):
    """No usable external interface; the message says what was looked for."""


@dataclass(frozen=True)
class ExternalInterface:
    """The chosen interface: name, index, MTU (bytes), and per address family its own address
    and the external address published to peers (they differ only with `--public-ip[v6]`).
    A family the network does not enable has "" for both."""

    name: str
    index: int
    mtu: int
    iface_addr: str
    ext_addr: str
    iface_v6_addr: str = ""
    ext_v6_addr: str = ""

    def ext(self, version: int) -> str:
        """The external address of family `version` (4 or 6); "" when not enabled."""
        return self.ext_addr if version == 4 else self.ext_v6_addr


def _addresses(ipr: Any, index: int, family: int) -> list[str]:
    """Usable addresses of a link: global before link-local, permanent before dynamic,
    non-temporary before temporary; deprecated ones are left out."""
    found = []
    for m in ipr.addr("dump", index=index, family=family):
        addr = m.get("IFA_ADDRESS")
        if not addr:
            continue
        ip = ipaddress.ip_address(addr)
        flags = m.get("IFA_FLAGS") or m["flags"]
        if ip.is_loopback or ip.is_multicast or flags & IFA_F_DEPRECATED:
            continue
        temporary = family == socket.AF_INET6 and bool(flags & IFA_F_TEMPORARY)
        rank = (ip.is_link_local, not flags & IFA_F_PERMANENT, temporary)
        found.append((rank, addr))
    return [addr for _, addr in sorted(found, key=lambda r: r[0])]


def _link(ipr: Any, index: int) -> tuple[str, int]:
    msg = ipr.link("get", index=index)[0]
    return msg.get("IFLA_IFNAME"), int(msg.get("IFLA_MTU") or 0)


def _owner_of(ipr: Any, address: str) -> int | None:
    want = ipaddress.ip_address(address)
    for m in ipr.addr("dump", family=_AF[want.version]):
        if m.get("IFA_ADDRESS") and ipaddress.ip_address(m.get("IFA_ADDRESS")) == want:
            return int(m["index"])
    return None


def _default_route_index(ipr: Any, family: int) -> int | None:
    for m in ipr.route("dump", table=254, family=family):
        if m["dst_len"] != 0 or m["type"] != 1:  # RTN_UNICAST: not an unreachable default
            continue
        if m.get("RTA_OIF"):
            return int(m.get("RTA_OIF"))
        for hop in m.get("RTA_MULTIPATH") or []:
            return int(hop["oif"])
    return None


# (interface index, the addresses that picked it by family, description for messages)
Candidate = tuple[int, dict[int, str], str]


def _by_regex(ipr: Any, pattern: str, families: Sequence[int]) -> Candidate | None:
    """The first interface with a usable address of an enabled family matching `pattern` (the
    matching addresses), else the first whose name matches and which has addresses of every
    enabled family; None when neither. Go's regexp.MatchString semantics: a match anywhere in
    the text. Raises InterfaceError for a pattern that does not compile."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise InterfaceError(
            f"--iface-regex {pattern!r} is not a regular expression: {err}"
        ) from None
    what = f"--iface-regex {pattern}"
    links = [(int(m["index"]), m.get("IFLA_IFNAME") or "") for m in ipr.get_links()]
    for index, _ in links:
        matched: dict[int, str] = {}
        for version in families:
            for addr in _addresses(ipr, index, _AF[version]):
                if regex.search(addr):
                    matched[version] = addr
                    break
        if matched:
            return index, matched, what
    for index, name in links:
        if regex.search(name) and all(_addresses(ipr, index, _AF[v]) for v in families):
            return index, {}, what
    return None


def _by_route(ipr: Any, target: str) -> Candidate | None:
    """The interface and preferred source address of the route to `target` (an IPv4 or IPv6
    address); None when there is no route. Raises InterfaceError for a value that is not an
    address."""
    try:
        ip = ipaddress.ip_address(target)
    except ValueError:
        raise InterfaceError(
            f"--iface-can-reach {target!r} is not an IPv4 address or an IPv6 address"
        ) from None
    try:
        routes = ipr.route("get", dst=target, family=_AF[ip.version])
    except NetlinkError:
        return None  # unreachable
    for m in routes:
        if m.get("RTA_OIF"):
            source = m.get("RTA_PREFSRC")
            return (
                int(m.get("RTA_OIF")),
                ({ip.version: source} if source else {}),
                (f"--iface-can-reach {target}"),
            )
    return None


def _by_iface(ipr: Any, value: str) -> Candidate | None:
    """The interface named by one `--iface` value: the owner of that address, or that name."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        found = ipr.link_lookup(ifname=value)
        return (found[0], {}, f"--iface {value}") if found else None
    index = _owner_of(ipr, value)
    return None if index is None else (index, {ip.version: value}, f"--iface {value}")


def _check_public(flag: str, value: str, version: int) -> None:
    if not value:
        return
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is None or ip.version != version or "%" in value:
        raise InterfaceError(f"{flag} {value!r} is not an IPv{version} address")


def _by_default_route(ipr: Any, families: Sequence[int]) -> Candidate:
    """The interface of the default route of every enabled family (one and the same)."""
    found: dict[int, int] = {}
    for version in families:
        index = _default_route_index(ipr, _AF[version])
        if index is None:
            raise InterfaceError(
                f"this machine has no IPv{version} default route; choose the external "
                "interface with --iface"
            )
        found[version] = index
    if len(set(found.values())) > 1:
        names = {v: _link(ipr, i)[0] for v, i in found.items()}
        raise InterfaceError(
            f"the IPv6 default route's interface ({names[6]}) is not the IPv4 default route's "
            f"({names[4]}); a dual-stack network needs one external interface: choose it with "
            "--iface"
        )
    return next(iter(found.values())), {}, "the default route"


def select_interface(
    ifaces: list[str],
    public_ip: str = "",
    ipr: Any = None,
    regexes: list[str] | None = None,
    can_reach: str = "",
    public_ipv6: str = "",
    families: Sequence[int] = (4,),
) -> ExternalInterface:
    """Pick the external interface for the address `families` of the network ((4,), (6,) or
    (4, 6)), in flanneld's order (see the module docstring).

    `ifaces` are `--iface` values (names or IP addresses), `regexes` the `--iface-regex` values,
    `can_reach` the `--iface-can-reach` address; `public_ip` / `public_ipv6` are used only when
    their family is enabled. Raises InterfaceError.
    """
    regexes = regexes or []
    public = {4: public_ip if 4 in families else "", 6: public_ipv6 if 6 in families else ""}
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        _check_public("--public-ip", public[4], 4)
        _check_public("--public-ipv6", public[6], 6)
        found: Candidate | None = None
        for value in ifaces:
            found = _by_iface(ipr, value)
            if found is not None:
                break
        for pattern in regexes if found is None else []:
            found = _by_regex(ipr, pattern, families)
            if found is not None:
                break
        if can_reach and found is None:
            found = _by_route(ipr, can_reach)
        given = [f"--iface {v}" for v in ifaces] + [f"--iface-regex {r}" for r in regexes]
        given += [f"--iface-can-reach {can_reach}"] if can_reach else []
        if given and found is None:
            raise InterfaceError(f"no interface found for any of: {', '.join(given)}")
        if found is None:
            for version, flag in ((4, "--public-ip"), (6, "--public-ipv6")):
                if public[version]:
                    index = _owner_of(ipr, public[version])
                    if index is None:
                        raise InterfaceError(
                            f"{flag} {public[version]} is not an address of this machine; give "
                            "the interface with --iface as well when the public IP is a NAT "
                            "address"
                        )
                    found = index, {version: public[version]}, f"{flag} {public[version]}"
                    break
            else:
                found = _by_default_route(ipr, families)
        index, fixed, what = found
        name, mtu = _link(ipr, index)
        if mtu <= 0:
            raise InterfaceError(f"interface {name} ({what}) reports MTU {mtu}")
        chosen = {4: "", 6: ""}
        for version in families:
            chosen[version] = fixed.get(version) or next(
                iter(_addresses(ipr, index, _AF[version])), ""
            )
            if not chosen[version]:
                raise InterfaceError(f"interface {name} ({what}) has no IPv{version} address")
        return ExternalInterface(
            name,
            index,
            mtu,
            chosen[4],
            public[4] or chosen[4],
            chosen[6],
            public[6] or chosen[6],
        )
    finally:
        if own:
            ipr.close()
