"""The seam between the daemon and where leases come from (etcd or the Kubernetes API).

Mirrors flannel's `pkg/subnet` Manager interface: read the network config, acquire (and for etcd
renew) this node's lease, and report every other node's lease as it changes. The daemon talks only
to this protocol; `subnet.etcd.EtcdSubnetManager` and `subnet.kube.KubeSubnetManager` implement it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from subnet.config import NetworkConfig
from subnet.lease import Lease, LeaseAttrs

SnapshotFn = Callable[[Iterable[tuple[str, Lease]]], None]
PutFn = Callable[[str, Lease], None]
DeleteFn = Callable[[str], None]


class SubnetManager(Protocol):
    """Where this node's lease and its peers' leases come from.

    Peers are reported with a key that identifies the peer for the manager's lifetime: the subnet
    key (`10.244.3.0-24`) for etcd, the node name for Kubernetes.
    """

    renews: bool
    """True when the lease expires and must be renewed (etcd); False for podCIDRs."""

    def get_network_config(self) -> NetworkConfig:
        """The network config. Raises ConfigError (invalid), DatastoreUnavailable, LookupError
        (not written yet)."""

    def stored_public_ips(self) -> tuple[str, str]:
        """Public IPv4/IPv6 set for this node in the datastore ("" when none); they take the
        place of `--public-ip` / `--public-ipv6`."""

    def stored_macs(self) -> tuple[str | None, str | None]:
        """VTEP MACs this node published before (IPv4 device, IPv6 device), to reuse them."""

    def own_key(self, lease: Lease) -> str:
        """The key under which this node's own lease would be reported as a peer."""

    def prefer(self, lease: Lease) -> None:
        """Make the next `acquire_lease` prefer this lease's subnets if they are free."""

    def acquire_lease(
        self, cfg: NetworkConfig, attrs: LeaseAttrs, stop: threading.Event
    ) -> Lease | None:
        """Take this node's lease, publishing `attrs`. None when `stop` was set meanwhile.

        Raises DatastoreUnavailable and OutOfSubnets (worth retrying) or an error an operator
        must fix."""

    def renew_lease(self, lease: Lease) -> Lease:
        """Extend the lease. Raises DatastoreUnavailable."""

    def complete_lease(self) -> None:
        """Tell the datastore this node's network is up (Kubernetes: node condition)."""

    def close(self) -> None:
        """Release connections."""

    def observe_requests(self, hook: Callable[[str, bool], None]) -> None:
        """Call `hook(operation, succeeded)` for every datastore request (for metrics)."""

    def watch_leases(
        self,
        on_snapshot: SnapshotFn,
        on_put: PutFn,
        on_delete: DeleteFn,
        stop: threading.Event,
        on_state: Callable[[str], None] = ...,
    ) -> None:
        """Report every peer lease: a full snapshot first (and after any resynchronisation),
        then each change, until `stop` is set. Never raises for datastore outages."""
