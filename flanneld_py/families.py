"""A lease's two address families, as flanneld treats them: which subnet.env keys and lease
subnet belong to IPv4 and to IPv6, how a node recognises its own lease, and what a dual-stack
peer may lack. Shared by the daemon and the status command.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from backend.reconcile import PeerEntry
from backend.vxlan import PeerFormatError, VxlanPeer, check_peer_subnet, v6_data_error
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


def peer_record(
    lease: Lease,
    networks: Mapping[int, Any],
    own_subnets: Mapping[int, Any],
    to_peer: Callable[[Lease], VxlanPeer | None],
) -> tuple[VxlanPeer | None, str]:
    """A peer lease's record as the daemon programs it, and why its IPv6 part was dropped ("" if
    not). `networks` maps every enabled IP version to its cluster network, `own_subnets` to this
    node's subnet of it (None when unknown); `to_peer` is the backend's lease decoder
    (`backend.vxlan.peer_from_lease`, `backend.hostgw.peer_from_lease`; None: another backend).
    Each enabled family's subnet is checked (`check_peer_subnet`); in dual stack a bad IPv6
    subnet costs only the IPv6 part.

    Raises PeerFormatError when the lease cannot be used at all.
    """
    v6_problem = ""
    for version, network in networks.items():
        try:
            check_peer_subnet(lease, network, own_subnets.get(version), version)
        except PeerFormatError as err:
            if version != 6 or 4 not in networks:
                raise
            v6_problem = str(err)
    peer = to_peer(lease)
    if peer is not None and v6_problem:
        peer = replace(peer, v6=None)
    return peer, v6_problem
