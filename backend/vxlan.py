"""The VXLAN backend: the `flannel.<VNI>` device, this node's lease attributes, and peers' entries.

Wire-compatible with Go flanneld's VXLAN backend (flannel `pkg/backend/vxlan`): same device name,
VNI, UDP port (kernel default 8472 unless `Port` is set), learning off, VTEP MAC published in the
lease as `{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}`, and for every peer the neighbour/FDB/route trio
written by `backend.reconcile`. With `DirectRouting` a peer whose public IP is on a network this
node is attached to (the route lookup for it gives one route without a gateway) gets only the
route `<peer subnet> via <peer public IP>` (no device given: the kernel picks it) instead.

Deliberate differences (README "Compared with flanneld"): the MTU overhead is 70 bytes on an
IPv6 underlay; an existing device with a wrong MTU is corrected and one with another VNI, port,
local address or lower device is recreated; a recreated device keeps its MAC and gets every peer
again.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from backend import netlink, nlbulk
from backend.reconcile import KernelState, Op, PeerEntry
from subnet.config import ConfigError, json_fields
from subnet.lease import Lease

log = logging.getLogger(__name__)

KERNEL_DEFAULT_PORT = 8472
OVERHEAD_IPV4 = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14, bytes
OVERHEAD_IPV6 = 70  # outer IPv6 header is 20 bytes longer


@dataclass(frozen=True)
class VXLANConfig:
    """The `Backend` object of a vxlan network config (flannel `pkg/backend/vxlan/vxlan.go`).

    `port` 0 leaves the kernel default (8472); `mtu` 0 means "the external interface's MTU".
    """

    vni: int = 1
    port: int = 0
    mtu: int = 0
    gbp: bool = False
    learning: bool = False
    direct_routing: bool = False


def parse_vxlan_config(backend: dict[str, Any]) -> VXLANConfig:
    """Parse the `Backend` object (keys any case, unknown keys such as MacPrefix ignored).

    Raises ConfigError naming the field for a wrong type or an out-of-range value.
    """
    f = json_fields(backend)
    values: dict[str, Any] = {}
    for key, name, kind, lo, hi, example in (
        ("VNI", "vni", int, 0, (1 << 24) - 1, 1),
        ("Port", "port", int, 0, 65535, 8472),
        ("MTU", "mtu", int, 0, 65535, 1450),
        ("GBP", "gbp", bool, 0, 1, False),
        ("Learning", "learning", bool, 0, 1, False),
        ("DirectRouting", "direct_routing", bool, 0, 1, False),
    ):
        raw = f.get(key.lower())
        if raw is None:
            continue
        field = f"Backend.{key}"
        if kind is bool:
            if not isinstance(raw, bool):
                raise ConfigError(field, f"must be true or false, got {raw!r}")
        elif isinstance(raw, bool) or not isinstance(raw, int) or not lo <= raw <= hi:
            raise ConfigError(
                field, f"must be a whole number from {lo} to {hi} like {example}, got {raw!r}"
            )
        values[name] = raw
    return VXLANConfig(**values)


def device_name(vni: int, version: int = 4) -> str:
    """`flannel.<VNI>` for IPv4, `flannel-v6.<VNI>` for IPv6."""
    return f"flannel.{vni}" if version == 4 else f"flannel-v6.{vni}"


def overlay_mtu(base_mtu: int, underlay_ipv6: bool) -> int:
    """The overlay device MTU in bytes: base (interface or configured) MTU minus the overhead."""
    return base_mtu - (OVERHEAD_IPV6 if underlay_ipv6 else OVERHEAD_IPV4)


def random_mac() -> str:
    """A random locally administered unicast MAC (flannel `pkg/mac`), lowercase colon hex."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def backend_data(vni: int, mac: str) -> dict[str, Any]:
    """What a vxlan node publishes as BackendData: `{"VNI": 1, "VtepMAC": "…"}`."""
    return {"VNI": vni, "VtepMAC": mac}


class PeerFormatError(ValueError):
    """A peer lease whose vxlan BackendData cannot be used."""


_MAC_HEX = set("0123456789abcdef")


def _parse_mac(value: Any) -> str:
    if not isinstance(value, str):
        raise PeerFormatError(f"VtepMAC must be a string, got {value!r}")
    parts = value.lower().replace("-", ":").split(":")
    if len(parts) != 6 or any(len(p) != 2 or not set(p) <= _MAC_HEX for p in parts):
        raise PeerFormatError(f"VtepMAC {value!r} is not a MAC address")
    if int(parts[0], 16) & 1 or parts == ["00"] * 6:
        raise PeerFormatError(f"VtepMAC {value!r} is not a unicast MAC (the kernel refuses it)")
    return ":".join(parts)


@dataclass(frozen=True, slots=True)
class VxlanPeer:
    """The slim record kept per peer: its entries for each family (None where absent)."""

    v4: PeerEntry | None
    v6: PeerEntry | None


def check_public_ip(lease: Lease) -> None:
    """Refuse a lease with an IPv4 subnet but PublicIP 0.0.0.0 (unset; flanneld writes it only
    on IPv6-only leases, which have no IPv4 subnet): the peer's subnet would be sent to
    0.0.0.0. Raises PeerFormatError."""
    if lease.subnet is not None and int(lease.attrs.public_ip) == 0:
        raise PeerFormatError(f"PublicIP is 0.0.0.0 (unset): no address to reach {lease.subnet}")


def v6_data_error(lease: Lease) -> str:
    """Why a vxlan lease's BackendV6Data cannot be used ("BackendV6Data: <problem>"), or ""
    when it can (or is absent: see `flanneld_py.families.missing_part`)."""
    data = lease.attrs.backend_v6_data
    if data is None:
        return ""
    if not isinstance(data, dict):
        return f"BackendV6Data: must be an object like {{'VtepMAC': '<mac>'}}, got {data!r}"
    try:
        _parse_mac(json_fields(data).get("vtepmac"))
    except PeerFormatError as err:
        return f"BackendV6Data: {err}"
    return ""


def peer_from_lease(lease: Lease) -> VxlanPeer | None:
    """Turn a peer's lease into its overlay entries. Returns None for another backend type.

    Raises PeerFormatError when BackendData is not `{"VtepMAC": "<mac>", ...}`. Unusable
    BackendV6Data (see `v6_data_error`) leaves the IPv6 part out, as flanneld (which programs
    the IPv4 part first) does; a lease with nothing but that part is refused (PeerFormatError).
    """
    if lease.attrs.backend_type != "vxlan":
        return None
    v4 = v6 = None
    if lease.subnet is not None:
        check_public_ip(lease)
        data = lease.attrs.backend_data
        if not isinstance(data, dict):
            raise PeerFormatError(f"BackendData must be an object, got {data!r}")
        v4 = PeerEntry(
            str(lease.subnet),
            str(lease.subnet.network_address),
            _parse_mac(json_fields(data).get("vtepmac")),
            str(lease.attrs.public_ip),
        )
    if lease.ipv6_subnet is not None and lease.attrs.public_ipv6 is not None:
        data = lease.attrs.backend_v6_data
        problem = v6_data_error(lease)
        if problem and v4 is None:
            raise PeerFormatError(problem)
        if isinstance(data, dict) and not problem:
            v6 = PeerEntry(
                str(lease.ipv6_subnet),
                str(lease.ipv6_subnet.network_address),
                _parse_mac(json_fields(data).get("vtepmac")),
                str(lease.attrs.public_ipv6),
            )
    return VxlanPeer(v4, v6)


class VxlanDevice:
    """One `flannel.<VNI>` (or `flannel-v6.<VNI>`) device: the `Datapath` of a `Reconciler`.

    Owns its own netlink socket; not shared between threads. `address` is this node's VTEP
    address (its subnet's network address) and `network` the cluster network, both CIDR text,
    set once the lease is known.
    """

    def __init__(
        self,
        cfg: VXLANConfig,
        version: int,
        local: str,
        lower_index: int,
        lower_mtu: int,
        mac: str | None = None,
        ipr: Any = None,
    ) -> None:
        self.version = version
        self.family = socket.AF_INET if version == 4 else socket.AF_INET6
        base = cfg.mtu or lower_mtu
        self.spec = netlink.VxlanSpec(
            name=device_name(cfg.vni, version),
            vni=cfg.vni,
            local=local,
            lower_index=lower_index,
            port=cfg.port,
            learning=cfg.learning,
            gbp=cfg.gbp,
            mtu=overlay_mtu(base, ":" in local),
            mac=mac or random_mac(),
        )
        self.index = 0
        self.address: str | None = None
        self.network: str | None = None
        self.direct_routing = cfg.direct_routing
        self._reachable: dict[str, bool] = {}  # public IP -> directly reachable, this pass
        self._reached: dict[str, bool] = {}  # the same, the pass before (to log changes)
        self._lock = threading.Lock()
        self._ipr: Any = ipr
        self._owns_ipr = ipr is None  # a socket handed in stays its owner's to close
        self._bulk: nlbulk.BulkSocket | None = None

    @property
    def ipr(self) -> Any:
        if self._ipr is None:
            self._ipr = netlink.IPRoute()
        return self._ipr

    @property
    def bulk(self) -> nlbulk.BulkSocket:
        """The socket for per-peer writes and dumps, opened in the current network namespace."""
        if self._bulk is None:
            self._bulk = nlbulk.BulkSocket()
        return self._bulk

    @property
    def mac(self) -> str:
        return self.spec.mac

    @property
    def mtu(self) -> int:
        return self.spec.mtu

    def close(self) -> None:
        """Close the sockets this device opened (not a pyroute2 socket handed in as `ipr`); the
        device and its entries stay."""
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
        if self._ipr is not None and self._owns_ipr:
            self._ipr.close()
        self._ipr, self._owns_ipr = None, True  # a later `ipr` opens (and owns) a new one

    def _compatible(self, link: netlink.LinkState) -> str | None:
        """Why an existing link cannot be reused, or None when it can."""
        s = self.spec
        if link.kind != "vxlan":
            return f"it is a {link.kind or 'non-vxlan'} link"
        if link.vni != s.vni:
            return f"its VNI is {link.vni}, not {s.vni}"
        if link.lower_index not in (None, s.lower_index):
            return f"its lower device is index {link.lower_index}, not {s.lower_index}"
        if link.local is not None and ipaddress.ip_address(link.local) != ipaddress.ip_address(
            s.local
        ):
            return f"its local address is {link.local}, not {s.local}"
        if (link.port or KERNEL_DEFAULT_PORT) != (s.port or KERNEL_DEFAULT_PORT):
            return f"its UDP port is {link.port}, not {s.port or KERNEL_DEFAULT_PORT}"
        if link.gbp != s.gbp:
            return "its GBP setting differs"
        return None

    def ensure_device(self) -> bool:
        """Create the device, reuse a compatible one, or replace an incompatible one; fix its MTU,
        address and state. Returns True when the device was (re)created (its entries are gone).

        A reused device keeps its MAC (it is what peers already have); raises NetlinkError.
        """
        with self._lock:
            created = False
            link = netlink.get_link(self.ipr, self.spec.name)
            if link is not None:
                why = self._compatible(link)
                if why is not None:
                    log.warning("recreating %s: %s", self.spec.name, why)
                    netlink.delete_link(self.ipr, link.index)
                    link = None
                elif link.mac != self.spec.mac and self.index == 0:
                    self.spec = _with_mac(self.spec, link.mac)  # first start: adopt it
            if link is None:
                link = netlink.create_vxlan(self.ipr, self.spec)
                created = True
                log.info(
                    "created %s (VNI %d, local %s, MAC %s, MTU %d)",
                    self.spec.name,
                    self.spec.vni,
                    self.spec.local,
                    self.spec.mac,
                    self.spec.mtu,
                )
            elif link.mac != self.spec.mac:
                log.warning(
                    "%s has MAC %s, expected %s; recreating",
                    self.spec.name,
                    link.mac,
                    self.spec.mac,
                )
                netlink.delete_link(self.ipr, link.index)
                link = netlink.create_vxlan(self.ipr, self.spec)
                created = True
            if link.mtu != self.spec.mtu:
                log.info("setting %s MTU %d (was %d)", self.spec.name, self.spec.mtu, link.mtu)
            netlink.set_link(
                self.ipr,
                link.index,
                mtu=self.spec.mtu if link.mtu != self.spec.mtu else None,
                up=not link.up,
            )
            self.index = link.index
            if self.address is not None:
                prefix = 32 if self.version == 4 else 128
                netlink.ensure_address(
                    self.ipr, self.index, self.address, prefix, self._stale_scope()
                )
            _disable_accept_ra(self.spec.name)
            return created

    def set_address(self, address: str, network: str) -> None:
        """Give the device this node's VTEP address (`10.244.1.0/32`, `fd10:244:0:1::/128`),
        removing other addresses inside `network` (IPv4) or every other non-link-local address
        (IPv6), as flannel does. Call after the lease is acquired."""
        self.address, self.network = address, network
        prefix = 32 if self.version == 4 else 128
        with self._lock:
            removed = netlink.ensure_address(
                self.ipr, self.index, address, prefix, self._stale_scope()
            )
        for cidr in removed:
            log.info("removed stale address %s from %s", cidr, self.spec.name)

    def _stale_scope(self) -> str | None:
        """Where other addresses are removed from: the cluster network (IPv4), anywhere (IPv6;
        link-local addresses are always kept)."""
        return self.network if self.version == 4 else "::/0"

    def dump(self) -> KernelState:
        """The per-peer objects flanneld-py owns on the device (see `owned_state`), and with
        DirectRouting the direct routes (see `nlbulk.BulkSocket.dump_gateway_routes`: routes in
        the cluster network via a gateway, not onlink, on any other link)."""
        with self._lock:
            state = owned_state(self.bulk, self.index, self.family, self.network)
            if self.direct_routing and self.network is not None:
                net = ipaddress.ip_network(self.network)
                if net.version == self.version:
                    state.direct = self.bulk.dump_gateway_routes(
                        self.family, nlbulk.Scope.of(net), exclude_index=self.index
                    )
            return state

    def select(self, entry: PeerEntry | None) -> PeerEntry | None:
        """`entry` as this device programs it: without DirectRouting as it is; with it, made
        direct when the peer's public IP is directly reachable (`directly_reachable`, looked up
        once per public IP until `reselect`; a failed lookup means "not direct")."""
        if entry is None or not self.direct_routing:
            return entry
        ip = entry.public_ip
        direct = self._reachable.get(ip)
        if direct is None:
            try:
                direct = self.directly_reachable(ip)
            except OSError as err:
                log.warning("route lookup for peer public IP %s failed (%s); using the overlay",
                            ip, err)  # fmt: skip
                direct = False
            self._reachable[ip] = direct
            before = self._reached.get(ip)
            if before is not None and before != direct:
                log.info("peer public IP %s is %s: switching its peers to %s", ip,
                         "directly reachable" if direct else "no longer directly reachable",
                         "a direct route" if direct else "the overlay")  # fmt: skip
        return replace(entry, direct=True) if direct else entry

    def directly_reachable(self, ip: str) -> bool:
        """flannel's DirectRouting test (flannel `pkg/backend/vxlan/vxlan_network.go`): the route
        lookup for `ip` gives a route without a gateway, so `ip` is on a network this node is
        attached to. Raises OSError when the netlink socket fails."""
        with self._lock:
            return self.bulk.lookup_route(ip) == ""

    def reselect(self) -> None:
        """Forget the DirectRouting decisions, so the next selections look the routes up again
        (a `Reconciler`'s full pass calls it)."""
        if self._reachable:
            self._reached = self._reachable
        self._reachable = {}

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        """Perform kernel writes for peers (see `backend.reconcile.Op`) through the bulk
        netlink socket; per write None on success or the kernel's error text."""
        index, results = self.index, []
        with self._lock:
            step = self.bulk.window  # encoded one window at a time: little garbage at once
            for start in range(0, len(ops), step):
                requests = []
                for op in ops[start : start + step]:
                    if op.kind == "neigh":
                        message = nlbulk.neigh_request(op.action, index, op.a, op.b)
                    elif op.kind == "fdb":
                        message = nlbulk.fdb_request(op.action, index, op.a, op.b or "")
                    elif op.kind == "direct":  # no link: the kernel finds it for the gateway
                        message = nlbulk.gateway_route_request(op.action, op.a, op.b or "")
                    else:
                        message = nlbulk.route_request(op.action, index, op.a, op.b)
                    requests.append(nlbulk.Request(message, missing_ok=op.action == "delete"))
                results += self.bulk.execute(requests)
            if any(_refused_route(op, error) for op, error in zip(ops, results, strict=True)):
                self._clear_way(ops, results)
        return results

    def _clear_way(self, ops: Sequence[Op], results: list[str | None]) -> None:
        """IPv6 refuses an onlink route whose gateway (the peer's VTEP address, inside its
        subnet) is routed through another device, as it is while a route of flanneld's other
        kind to that subnet is left from an earlier start (host-gw, DirectRouting since turned
        off): such a route (see `nlbulk.BulkSocket.dump_gateway_routes`) is deleted and the
        onlink route written again; `results` is updated in place. One dump, only after a
        refused route write."""
        if self.network is None:
            return
        net = ipaddress.ip_network(self.network)
        if net.version != self.version:
            return
        found = self.bulk.dump_gateway_routes(
            self.family, nlbulk.Scope.of(net), exclude_index=self.index
        )
        for i, (op, error) in enumerate(zip(ops, results, strict=True)):
            gateway = found.get(op.a)
            if not _refused_route(op, error) or gateway is None:
                continue
            log.info("deleting the route %s via %s (host-gw's or DirectRouting's): IPv6 "
                     "refuses the overlay route to %s while it is there", op.a, gateway,
                     op.a)  # fmt: skip
            delete = nlbulk.gateway_route_request("delete", op.a, gateway)
            replace = nlbulk.route_request(op.action, self.index, op.a, op.b)
            results[i] = self.bulk.execute(
                [nlbulk.Request(delete, missing_ok=True), nlbulk.Request(replace)]
            )[1]


def _refused_route(op: Op, error: str | None) -> bool:
    """Whether the kernel refused an onlink route write as invalid (see `_clear_way`)."""
    return op.kind == "route" and op.action == "replace" and error is not None and "EINVAL" in error


def owned_state(
    bulk: nlbulk.BulkSocket, index: int, family: int, network: str | None
) -> KernelState:
    """The per-peer objects flanneld-py owns on a flannel device: permanent neighbour entries
    and main-table routes inside the cluster `network` (CIDR text; None: all), and permanent FDB
    entries with a unicast MAC. Anything else an operator put there (a route to another network,
    the all-zeros flood entry) is not listed, so it is never removed."""
    scope = None
    if network is not None:
        net = ipaddress.ip_network(network)
        same_family = net.version == (4 if family == socket.AF_INET else 6)
        scope = nlbulk.Scope.of(net) if same_family else nlbulk.Scope.empty()
    return KernelState(
        neighs=bulk.dump_neighs(index, family, scope),
        fdb=bulk.dump_fdb(index, family, unicast=True),
        routes=bulk.dump_routes(index, family, scope),
    )


def check_peer_subnet(lease: Lease, network: Any, own_subnet: Any, version: int = 4) -> None:
    """Refuse a peer subnet of IP `version` outside the cluster `network` (IPv6: IPv6Network)
    or overlapping this node's `own_subnet` of that version (either may be None): the kernel
    would refuse the route, or traffic would go astray. Raises PeerFormatError."""
    subnet = lease.subnet if version == 4 else lease.ipv6_subnet
    if subnet is None or network is None:
        return
    if not subnet.subnet_of(network):
        raise PeerFormatError(f"subnet {subnet} is outside the network {network}")
    if own_subnet is not None and subnet.overlaps(own_subnet):
        raise PeerFormatError(f"subnet {subnet} overlaps this node's {own_subnet}")


def _with_mac(spec: netlink.VxlanSpec, mac: str) -> netlink.VxlanSpec:
    return netlink.VxlanSpec(**{**spec.__dict__, "mac": mac})


def _disable_accept_ra(name: str) -> None:
    """Best effort: no router advertisements on the overlay device (read-only /proc is fine)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/accept_ra", "w") as f:
            f.write("0")
    except OSError:
        pass
