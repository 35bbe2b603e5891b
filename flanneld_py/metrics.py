"""Prometheus metrics: does this node hold a lease, is the network running out of subnets, is the
datapath in sync with the cluster, and why not. Go flanneld has none of these.

One registry of our own (never the process-wide default, so imports and tests cannot collide),
served at /metrics by the health server. Names follow Prometheus conventions: base units,
`_seconds`, `_total` for counters, no per-peer labels (label values are bounded sets). Every
labelled counter is created at 0 for all its label values, so a rate() works from the first scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)

KINDS = ("route", "neigh", "fdb", "direct")  # kernel objects: see `backend.reconcile.Op`
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """Every metric of one daemon, in its own registry. `app` is the WSGI app for /metrics."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.build_info = Gauge(
            "flannel_build_info",
            "Build and configuration (value 1).",
            ["version", "backend", "subnet_manager"],
            registry=r,
        )
        self.lease_info = Gauge(
            "flannel_lease_info",
            "This node's lease (value 1).",
            ["subnet", "ipv6_subnet", "public_ip"],
            registry=r,
        )
        self.lease_expiration = Gauge(
            "flannel_lease_expiration_timestamp_seconds",
            "When this node's lease expires unless renewed (Unix time; 0: never).",
            registry=r,
        )
        self.lease_renewals = Counter(
            "flannel_lease_renewals", "Lease renewals by result.", ["result"], registry=r
        )
        self.network_subnets = Gauge(
            "flannel_network_subnets",
            "Subnets of the network (etcd mode): capacity between SubnetMin and SubnetMax, "
            "allocated (leased), reserved (keys without an etcd lease).",
            ["state"],
            registry=r,
        )
        self.peers = Gauge(
            "flannel_peers", "Peers programmed-to-be, by address family.", ["family"], registry=r
        )
        self.lease_events = Counter(
            "flannel_lease_events",
            "Peer lease events from the datastore.",
            ["type", "source"],
            registry=r,
        )
        self.invalid_leases = Counter(
            "flannel_invalid_leases", "Malformed leases or Node annotations skipped.", registry=r
        )
        self.dataplane_entries = Gauge(
            "flannel_dataplane_entries",
            "Kernel objects programmed for peers, by kind: route (onlink route on the VXLAN "
            "device), neigh, fdb (distinct entries; peers may share one), direct (route via a "
            "peer's public IP: host-gw, VXLAN DirectRouting).",
            ["kind"],
            registry=r,
        )
        self.dataplane_ops = Counter(
            "flannel_dataplane_operations",
            "Kernel writes by kind, operation and result.",
            ["kind", "op", "result"],
            registry=r,
        )
        self.sync_duration = Histogram(
            "flannel_dataplane_sync_duration_seconds",
            "Duration of reconcile passes.",
            ["pass"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.last_sync = Gauge(
            "flannel_dataplane_last_sync_timestamp_seconds",
            "End of the last full reconcile pass (Unix time).",
            registry=r,
        )
        self.drift_repairs = Counter(
            "flannel_dataplane_drift_repairs",
            "Kernel entries found wrong or missing by a periodic full pass and repaired.",
            ["kind"],
            registry=r,
        )
        self.event_to_programmed = Histogram(
            "flannel_event_to_programmed_seconds",
            "From a datastore event's arrival to its peer's kernel entries being written.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.datastore_requests = Counter(
            "flannel_datastore_requests",
            "Datastore requests by operation and result.",
            ["op", "result"],
            registry=r,
        )
        self.watch_restarts = Counter(
            "flannel_datastore_watch_restarts",
            "Peer watch restarts by reason.",
            ["reason"],
            registry=r,
        )
        self.app = make_wsgi_app(r)
        self._zero()

    def _zero(self) -> None:
        for result in ("success", "failure"):
            self.lease_renewals.labels(result)
        for state in ("capacity", "allocated", "reserved"):
            self.network_subnets.labels(state)
        for family in ("ipv4", "ipv6"):
            self.peers.labels(family)
        for source in ("etcd", "kube"):
            for kind in ("added", "changed", "removed"):
                self.lease_events.labels(kind, source)
        for kind in KINDS:
            self.dataplane_entries.labels(kind)
            self.drift_repairs.labels(kind)
            for op in ("replace", "delete"):
                for result in ("success", "failure"):
                    self.dataplane_ops.labels(kind, op, result)
        for kind in ("full", "incremental"):
            self.sync_duration.labels(kind)
        for op in ("list", "watch", "get", "put", "create", "delete", "grant", "patch"):
            for result in ("success", "failure"):
                self.datastore_requests.labels(op, result)
        for reason in ("compacted", "expired", "unavailable"):
            self.watch_restarts.labels(reason)

    def set_lease(
        self, subnet: Any, ipv6_subnet: Any, public_ip: Any, expiration: float | None
    ) -> None:
        """Publish this node's lease (replacing any earlier one)."""
        self.lease_info.clear()
        self.lease_info.labels(str(subnet or ""), str(ipv6_subnet or ""), str(public_ip)).set(1)
        self.lease_expiration.set(expiration or 0)

    def count_subnets(self, capacity: int, allocated: int, reserved: int) -> None:
        """Set flannel_network_subnets: the subnets the network can hold, and the lease keys
        inside its range that are leases (allocated) or leaseless reservations."""
        self.network_subnets.labels("capacity").set(capacity)
        self.network_subnets.labels("allocated").set(allocated)
        self.network_subnets.labels("reserved").set(reserved)

    def request_hook(self) -> Callable[[str, bool], None]:
        """A callback for datastore clients: (operation, succeeded)."""

        def hook(op: str, ok: bool) -> None:
            self.datastore_requests.labels(op, "success" if ok else "failure").inc()

        return hook
