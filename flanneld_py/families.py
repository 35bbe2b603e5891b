"""A lease's two address families, as flanneld treats them: which subnet.env keys and lease
subnet belong to IPv4 and to IPv6, how a node recognises its own lease, and what a dual-stack
peer may lack. Shared by the daemon and the status command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backend.reconcile import PeerEntry
from backend.vxlan import VxlanPeer, v6_data_error
from subnet.lease import Lease

# subnet.env keys of each family's network and subnet (flannel `pkg/subnet` WriteSubnetFile)
ENV_KEYS = {4: ("FLANNEL_NETWORK", "FLANNEL_SUBNET"), 6: ("FLANNEL_IPV6_NETWORK",
                                                          "FLANNEL_IPV6_SUBNET")}  # fmt: skip


def subnet_of(lease: Lease, version: int) -> Any:
    """A lease's subnet of IP `version` (4 or 6), or None."""
    return lease.subnet if version == 4 else lease.ipv6_subnet


def same_subnets(lease: Lease, own: Lease, families: tuple[int, ...]) -> bool:
    """True when `lease` has this node's `own` subnet in every enabled family: how flannel
    recognises its own lease among the peers' (flannel `pkg/lease` LeaseWatcher: IPv4 only
    compares the IPv4 subnet, IPv6 only the IPv6 one, dual stack both)."""
    return all(
        subnet_of(lease, v) is not None and subnet_of(lease, v) == subnet_of(own, v)
        for v in families
    )


def missing_part(lease: Lease, version: int) -> str:
    """Why a vxlan peer lease has no usable part of IP `version` ("" when it has one)."""
    if version == 4:
        return "" if lease.subnet is not None else "no IPv4 subnet"
    if lease.ipv6_subnet is None:
        return "no IPv6 subnet"
    if lease.attrs.public_ipv6 is None:
        return "no PublicIPv6"
    if lease.attrs.backend_type == "vxlan":
        if lease.attrs.backend_v6_data is None:
            return "no BackendV6Data"
        return v6_data_error(lease)
    return ""


def select_entry(version: int) -> Callable[[VxlanPeer], PeerEntry | None]:
    """The `Reconciler.select` of the device of IP `version`: the peer's entry of that family."""
    return _select_v4 if version == 4 else _select_v6


def _select_v4(peer: VxlanPeer) -> PeerEntry | None:
    return peer.v4


def _select_v6(peer: VxlanPeer) -> PeerEntry | None:
    return peer.v6
