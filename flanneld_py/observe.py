"""What the daemon tells the outside world about itself: metrics, health, the state file.

The daemon's workers call the `Observer` at each meaningful step (a lease taken or renewed, a peer
event, a kernel write, a reconcile pass, the watch's state); the Observer keeps the Prometheus
metrics (`flanneld_py.metrics`), the state file (`flanneld_py.state`) and the answers of
/healthz and /readyz consistent with each other.

Liveness (/healthz): the reconciler loop and the datastore watch are running, and the reconciler
looped recently. Readiness (/readyz): subnet.env is written and the first full peer sync is in
the kernel, and then the datastore watch is live, or has been down for less than three resync
periods (at least 30 s: a short outage changes nothing in the datapath). With the `alloc` backend
there is no peer sync: subnet.env written is ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from backend.reconcile import Op, SyncResult
from flanneld_py import __version__
from flanneld_py.metrics import Metrics
from flanneld_py.state import StateFile

STALE_LOOP = 120.0  # seconds without a reconciler iteration before liveness fails
REACHABLE_STATES = ("listed", "watching")


class Observer:
    """Metrics, state file and health answers of one daemon.

    `resync_period` (seconds) bounds how old the last full sync may be for readiness while the
    datastore is unreachable (three periods).
    """

    def __init__(
        self,
        subnet_file: str,
        backend: str,
        subnet_manager: str,
        resync_period: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = Metrics()
        self.subnet_manager = subnet_manager
        self.metrics.build_info.labels(__version__, backend, subnet_manager).set(1)
        self.source = "kube" if subnet_manager == "kube" else "etcd"
        self.state = StateFile(subnet_file)
        self.resync_period = resync_period
        self.clock = clock
        self.subnet_env_written = False
        self.first_sync = threading.Event()
        self.last_full_sync: float | None = None
        self.watch_state = "starting"
        self.watch_down_since: float | None = None
        self.threads: dict[str, threading.Thread] = {}
        self.loop_heartbeat: Callable[[], float] | None = None  # monotonic time of last loop

    # --- health ---------------------------------------------------------------------------------

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason when not)."""
        for name, thread in self.threads.items():
            if not thread.is_alive():
                return False, f"the {name} worker has stopped"
        if self.loop_heartbeat is not None:
            idle = time.monotonic() - self.loop_heartbeat()
            if idle > STALE_LOOP:
                return False, f"the reconcile loop has not run for {idle:.0f} s"
        return True, ""

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason when not)."""
        if not self.subnet_env_written:
            return False, "subnet.env is not written yet"
        if not self.first_sync.is_set():
            return False, "the first peer sync is not in the kernel yet"
        if self.watch_state in REACHABLE_STATES or self.watch_down_since is None:
            return True, ""
        down = self.clock() - self.watch_down_since
        if down <= max(30.0, 3 * self.resync_period):
            return True, ""
        return False, f"the datastore watch has been down for {down:.0f} s ({self.watch_state})"

    # --- events ---------------------------------------------------------------------------------

    def backend(self, backend: str) -> None:
        """The backend type of the network config, once read (the `flannel_build_info` label,
        and `backend` in the state file, which `flanneld-py status` reads when the datastore
        cannot tell it)."""
        self.metrics.build_info.clear()
        self.metrics.build_info.labels(__version__, backend, self.subnet_manager).set(1)
        self.state.update(backend=backend)

    def no_datapath(self) -> None:
        """The backend programs nothing (alloc): there is no peer sync to wait for, so the node is
        ready once subnet.env is written."""
        self.first_sync.set()
        self.state.update(ready=self.readiness()[0])

    def lease(
        self, subnet: Any, ipv6_subnet: Any, public_ip: Any, expiration: float | None, key: str
    ) -> None:
        """This node holds (or renewed) a lease."""
        self.metrics.set_lease(subnet, ipv6_subnet, public_ip, expiration)
        self.state.update(lease=key, lease_expiration=expiration)

    def renewal(self, ok: bool) -> None:
        self.metrics.lease_renewals.labels("success" if ok else "failure").inc()

    def subnet_env(self) -> None:
        self.subnet_env_written = True
        self.state.update(subnet_env=True)

    def peer_event(self, change: str) -> None:
        self.metrics.lease_events.labels(change, self.source).inc()

    def peers(self, ipv4: int, ipv6: int) -> None:
        self.metrics.peers.labels("ipv4").set(ipv4)
        self.metrics.peers.labels("ipv6").set(ipv6)

    def invalid(self) -> None:
        self.metrics.invalid_leases.inc()

    def watch(self, state: str) -> None:
        """The datastore watch's state: listed, watching, compacted, expired, unavailable."""
        self.watch_state = state
        if state in REACHABLE_STATES:
            self.watch_down_since = None
        elif state == "unavailable" and self.watch_down_since is None:
            self.watch_down_since = self.clock()
        if state in ("compacted", "expired", "unavailable"):
            self.metrics.watch_restarts.labels(state).inc()

    def request(self, op: str, ok: bool) -> None:
        self.metrics.datastore_requests.labels(op, "success" if ok else "failure").inc()

    def write(self, op: Op, ok: bool) -> None:
        action = "replace" if op.action == "replace" else "delete"
        self.metrics.dataplane_ops.labels(op.kind, action, "success" if ok else "failure").inc()

    def programmed(self, seconds: float) -> None:
        self.metrics.event_to_programmed.observe(seconds)

    def sync_pass(
        self,
        kind: str,
        result: SyncResult,
        seconds: float,
        peers: int,
        complete: bool = True,
        entries: dict[str, int] | None = None,
    ) -> None:
        """A reconcile pass ended; `peers` is the number of peers now programmed, `entries` the
        kernel objects they need by kind on all devices (`Reconciler.entry_counts`, summed over
        the families; default `result.entries`: one device), which set
        flannel_dataplane_entries (O(1) per pass; when empty, each overlay kind counts one per
        peer). `complete` is False while another device (dual stack: the other family's) has not
        finished its first full pass: the first sync is not done yet."""
        self.metrics.sync_duration.labels(kind).observe(seconds)
        entries = entries or result.entries
        entries = entries or {"route": peers, "neigh": peers, "fdb": peers, "direct": 0}
        for k, n in entries.items():
            self.metrics.dataplane_entries.labels(k).set(n)
        if kind != "full":
            self.state.update(peers=peers)
            return
        if self.first_sync.is_set():  # after the first pass, a full pass only finds drift
            for k, n in result.by_kind.items():
                self.metrics.drift_repairs.labels(k).inc(n)
        if not complete:
            return
        now = self.clock()
        self.last_full_sync = now
        self.metrics.last_sync.set(now)
        self.first_sync.set()
        self.state.update(ready=self.readiness()[0], peers=peers, last_full_sync=now)
