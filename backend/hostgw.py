"""The `host-gw` backend: a route to every peer's subnet via the peer's public IP.

flannel's host-gw backend (flannel `pkg/backend/hostgw/hostgw.go`, `pkg/backend/route_network.go`)
needs every node on one L2 network: for each peer it writes `ip route replace <peer subnet> via
<peer public IP> dev <external interface>` and nothing else; there is no device and no
encapsulation, so pods get the interface's own MTU. The lease carries no backend data:
`{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"host-gw"}` (Kubernetes mode:
`backend-type: host-gw`, `backend-data: null`). Peers must be host-gw nodes too; leases of other
backend types are ignored (with a warning, by the daemon).

The routes are kept by the same level-triggered `backend.reconcile.Reconciler` as the VXLAN
entries (every peer is a direct `PeerEntry`); its full pass, at least every `ROUTE_CHECK_PERIOD`
seconds as flanneld's route check, dumps the interface's routes inside the cluster network,
re-adds missing ones, corrects wrong gateways and removes those of departed peers. A node whose
public IP is not its interface address (behind NAT) cannot be reached that way and refuses to
start, as flanneld does.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence

from backend import nlbulk
from backend.reconcile import KernelState, Op, PeerEntry
from backend.vxlan import VxlanPeer, check_public_ip
from subnet.lease import Lease, LeaseAttrs

BACKEND_TYPE = "host-gw"
ROUTE_CHECK_PERIOD = 10.0  # seconds: flanneld re-adds missing host-gw routes this often


class BehindNat(ValueError):
    """The node's public IP differs from its interface address: host-gw cannot work."""


def check_not_behind_nat(iface: str, iface_addr: str, public_ip: str) -> None:
    """Refuse a public IP (`--public-ip`, or a node-public-ip annotation) other than the
    interface's address: peers would route to an address this node does not have. Raises
    BehindNat naming both addresses and the fix."""
    if ipaddress.ip_address(iface_addr) != ipaddress.ip_address(public_ip):
        raise BehindNat(
            f"backend host-gw: the public IP {public_ip} differs from the address {iface_addr} of "
            f"interface {iface}, so this node is probably behind NAT, which host-gw does not "
            "support (peers route to the public IP directly); drop --public-ip or set it to the "
            "interface address, or use the vxlan backend"
        )


def lease_attrs(
    public_ip: str | ipaddress.IPv4Address, public_ipv6: str | None = None
) -> LeaseAttrs:
    """What a host-gw node publishes: its public IPv4 address (and IPv6 address, when the
    network has IPv6) and the backend type, no backend data. Raises ValueError when
    `public_ip` is not IPv4 or `public_ipv6` not IPv6."""
    v6 = ipaddress.IPv6Address(public_ipv6) if public_ipv6 else None
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(public_ip), public_ipv6=v6,
                      backend_type=BACKEND_TYPE)  # fmt: skip


def pod_mtu(iface_mtu: int) -> int:
    """FLANNEL_MTU (bytes): the external interface's MTU, unchanged (no encapsulation). Raises
    ValueError for an MTU that is not positive."""
    if iface_mtu <= 0:
        raise ValueError(f"interface MTU {iface_mtu} is not positive")
    return iface_mtu


def resync_period(configured: float) -> float:
    """Seconds between full passes: `--resync-period`, but at most flanneld's route check
    period, so a route deleted by hand is back as soon as flanneld would put it back."""
    return min(configured, ROUTE_CHECK_PERIOD)


def peer_from_lease(lease: Lease) -> VxlanPeer | None:
    """A host-gw peer's record: per family a direct entry `subnet via public IP` (IPv6: the
    IPv6 subnet via PublicIPv6); None for a lease of another backend type or with neither.
    Raises PeerFormatError for an IPv4 subnet without a PublicIP (`vxlan.check_public_ip`)."""
    if lease.attrs.backend_type != BACKEND_TYPE:
        return None
    v4 = v6 = None
    if lease.subnet is not None:
        check_public_ip(lease)
        v4 = PeerEntry.direct_route(str(lease.subnet), str(lease.attrs.public_ip))
    if lease.ipv6_subnet is not None and lease.attrs.public_ipv6 is not None:
        v6 = PeerEntry.direct_route(str(lease.ipv6_subnet), str(lease.attrs.public_ipv6))
    return VxlanPeer(v4, v6) if v4 or v6 else None


class HostGwRoutes:
    """The routes via peers on the external interface (link `index`): the `Datapath` of a
    `Reconciler`. `mtu` is the interface's (bytes). Owns its netlink socket; one thread."""

    def __init__(self, index: int, mtu: int, version: int = 4) -> None:
        self.index = index
        self.mtu = pod_mtu(mtu)
        self.family = socket.AF_INET if version == 4 else socket.AF_INET6
        self.version = version
        self.network: str | None = None
        self._lock = threading.Lock()
        self._bulk: nlbulk.BulkSocket | None = None

    @property
    def bulk(self) -> nlbulk.BulkSocket:
        """The socket for route writes and dumps, opened in the current network namespace."""
        if self._bulk is None:
            self._bulk = nlbulk.BulkSocket()
        return self._bulk

    def set_address(self, address: str, network: str) -> None:
        """Record the cluster `network` (CIDR text), which scopes the dumps; host-gw puts no
        address anywhere (`address` is accepted for the daemon's one call for all backends)."""
        self.network = network

    def ensure_device(self) -> bool:
        """Nothing to create: the routes use the external interface as it is. Always False."""
        return False

    def dump(self) -> KernelState:
        """The host-gw routes on the interface: main table, protocol boot, destination inside
        the cluster network, a gateway, not onlink (see `BulkSocket.dump_gateway_routes`); empty
        until the network is known. Other routes are never listed, so never removed."""
        if self.network is None:
            return KernelState()
        net = ipaddress.ip_network(self.network)
        if net.version != self.version:
            return KernelState()
        with self._lock:
            routes = self.bulk.dump_gateway_routes(
                self.family, nlbulk.Scope.of(net), index=self.index
            )
        return KernelState(direct=routes)

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        """Write the route ops ("direct": `dst via gateway dev <interface>`, replace or delete);
        per op None on success or the kernel's error text. Raises OSError when the socket
        fails; any other kind of op is refused as a programming error (ValueError)."""
        requests = []
        for op in ops:
            if op.kind != "direct":
                raise ValueError(f"host-gw writes routes only, not {op.kind}")
            message = nlbulk.gateway_route_request(op.action, op.a, op.b or "", self.index)
            requests.append(nlbulk.Request(message, missing_ok=op.action == "delete"))
        with self._lock:
            return self.bulk.execute(requests)

    def close(self) -> None:
        """Close the netlink socket; the routes stay (nothing is removed on shutdown)."""
        if self._bulk is not None:
            self._bulk.close()
            self._bulk = None
