"""Choosing the external interface: the one VXLAN packets leave by, and the address peers use.

flanneld's order (flannel `main.go` and `pkg/ipmatch` LookupExtIface): each `--iface` in turn (an
IP address names the interface that owns it, anything else is an interface name), then each
`--iface-regex` (matched against every usable address of every interface, in kernel order, and
only when no address matches, against interface names), then `--iface-can-reach` (the interface
and preferred source address of the route to that IP); the first that finds an interface wins.
With none of the three, the interface owning `--public-ip` if that is set, else the interface of
the default route. The external address is `--public-ip` when set, else the interface's chosen
address: the one that matched, or its first usable one (global before link-local, permanent
before dynamic).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from backend.netlink import IPRoute, NetlinkError


class InterfaceError(RuntimeError):
    """No usable external interface; the message says what was looked for."""


@dataclass(frozen=True)
class ExternalInterface:
    """The chosen interface: name, index, MTU (bytes), its own address, and the external address
    published to peers (they differ only with `--public-ip`)."""

    name: str
    index: int
    mtu: int
    iface_addr: str
    ext_addr: str


def _addresses(ipr: Any, index: int, family: int) -> list[str]:
    """Usable addresses of a link: global before link-local, permanent before dynamic."""
    found = []
    for m in ipr.addr("dump", index=index, family=family):
        addr = m.get("IFA_ADDRESS")
        if not addr:
            continue
        ip = ipaddress.ip_address(addr)
        flags = m.get("IFA_FLAGS") or m["flags"]
        if ip.is_loopback or ip.is_multicast or flags & 0x20:  # IFA_F_DEPRECATED
            continue
        rank = (ip.is_link_local, not flags & 0x80)  # IFA_F_PERMANENT
        found.append((rank, addr))
    return [addr for _, addr in sorted(found, key=lambda r: r[0])]


def _link(ipr: Any, index: int) -> tuple[str, int]:
    msg = ipr.link("get", index=index)[0]
    return msg.get("IFLA_IFNAME"), int(msg.get("IFLA_MTU") or 0)


def _owner_of(ipr: Any, address: str) -> int | None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    want = ipaddress.ip_address(address)
    for m in ipr.addr("dump", family=family):
        if m.get("IFA_ADDRESS") and ipaddress.ip_address(m.get("IFA_ADDRESS")) == want:
            return int(m["index"])
    return None


def _default_route_index(ipr: Any, family: int) -> int | None:
    for m in ipr.route("dump", table=254, family=family):
        if m["dst_len"] == 0 and m.get("RTA_OIF"):
            return int(m.get("RTA_OIF"))
        for hop in m.get("RTA_MULTIPATH") or []:
            if m["dst_len"] == 0:
                return int(hop["oif"])
    return None


def _by_regex(ipr: Any, pattern: str) -> tuple[int, str | None] | None:
    """The first interface with a usable IPv4 address matching `pattern` (that address), else
    the first whose name matches (its first usable address is chosen later); None when neither.
    Go's regexp.MatchString semantics: a match anywhere in the text. Raises InterfaceError for a
    pattern that does not compile."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise InterfaceError(
            f"--iface-regex {pattern!r} is not a regular expression: {err}"
        ) from None
    links = [(int(m["index"]), m.get("IFLA_IFNAME") or "") for m in ipr.get_links()]
    for index, _ in links:
        for addr in _addresses(ipr, index, socket.AF_INET):
            if regex.search(addr):
                return index, addr
    for index, name in links:
        if regex.search(name) and _addresses(ipr, index, socket.AF_INET):
            return index, None
    return None


def _by_route(ipr: Any, target: str) -> tuple[int, str | None] | None:
    """The interface and preferred source address of the route to `target` (an IPv4 address);
    None when there is no route. Raises InterfaceError for a value that is not an address."""
    try:
        ipaddress.IPv4Address(target)
    except ValueError:
        raise InterfaceError(f"--iface-can-reach {target!r} is not an IPv4 address") from None
    try:
        routes = ipr.route("get", dst=target)
    except NetlinkError:
        return None  # unreachable
    for m in routes:
        if m.get("RTA_OIF"):
            return int(m.get("RTA_OIF")), m.get("RTA_PREFSRC")
    return None


def select_interface(
    ifaces: list[str],
    public_ip: str = "",
    ipr: Any = None,
    regexes: list[str] | None = None,
    can_reach: str = "",
) -> ExternalInterface:
    """Pick the external interface for IPv4, in flanneld's order (see the module docstring).

    `ifaces` are `--iface` values (names or IP addresses), `regexes` the `--iface-regex` values,
    `can_reach` the `--iface-can-reach` address. Raises InterfaceError.
    """
    regexes = regexes or []
    own = ipr is None
    ipr = ipr or IPRoute()
    try:
        if public_ip:
            try:
                ipaddress.IPv4Address(public_ip)
            except ValueError:
                raise InterfaceError(f"--public-ip {public_ip!r} is not an IPv4 address") from None
        candidates: list[tuple[int, str | None, str]] = []  # (index, fixed address, description)
        for value in ifaces:
            try:
                ipaddress.ip_address(value)
                index = _owner_of(ipr, value)
                if index is not None:
                    candidates.append((index, value, f"--iface {value}"))
                    break
            except ValueError:
                found = ipr.link_lookup(ifname=value)
                if found:
                    candidates.append((found[0], None, f"--iface {value}"))
                    break
        for pattern in regexes if not candidates else []:
            found_by_regex = _by_regex(ipr, pattern)
            if found_by_regex is not None:
                candidates.append((*found_by_regex, f"--iface-regex {pattern}"))
                break
        if can_reach and not candidates:
            found_by_route = _by_route(ipr, can_reach)
            if found_by_route is not None:
                candidates.append((*found_by_route, f"--iface-can-reach {can_reach}"))
        given = [f"--iface {v}" for v in ifaces] + [f"--iface-regex {r}" for r in regexes]
        given += [f"--iface-can-reach {can_reach}"] if can_reach else []
        if given and not candidates:
            raise InterfaceError(f"no interface found for any of: {', '.join(given)}")
        if not given:
            if public_ip:
                index = _owner_of(ipr, public_ip)
                if index is None:
                    raise InterfaceError(
                        f"--public-ip {public_ip} is not an address of this machine; give the "
                        "interface with --iface as well when the public IP is a NAT address"
                    )
                candidates.append((index, public_ip, f"--public-ip {public_ip}"))
            else:
                index = _default_route_index(ipr, socket.AF_INET)
                if index is None:
                    raise InterfaceError(
                        "this machine has no IPv4 default route; choose the "
                        "external interface with --iface"
                    )
                candidates.append((index, None, "the default route"))
        index, fixed, what = candidates[0]
        name, mtu = _link(ipr, index)
        if mtu <= 0:
            raise InterfaceError(f"interface {name} ({what}) reports MTU {mtu}")
        iface_addr = fixed
        if iface_addr is None:
            addrs = _addresses(ipr, index, socket.AF_INET)
            if not addrs:
                raise InterfaceError(f"interface {name} ({what}) has no IPv4 address")
            iface_addr = addrs[0]
        return ExternalInterface(name, index, mtu, iface_addr, public_ip or iface_addr)
    finally:
        if own:
            ipr.close()
