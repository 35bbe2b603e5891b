"""Make the kernel match the desired peer table, writing only the differences.

Per peer the overlay needs three kernel objects on `flannel.<VNI>` (flannel
`pkg/backend/vxlan/vxlan_network.go`): a neighbour entry (peer VTEP IP -> peer VTEP MAC), an FDB
entry (peer VTEP MAC -> peer public IP) and an onlink route (peer subnet via peer VTEP IP). They are
written in that order, so the route never points at an address the kernel would have to resolve.

Two passes, one worker:
- incremental: for the keys the watchers marked dirty, compare the desired record with what this
  worker last wrote and write the difference (cost proportional to the change, not the cluster);
- full: dump the device's tables, diff them against the whole table, write the difference, and
  remove entries of departed peers. Runs at start, periodically, and after a device is recreated,
  so drift made by others is repaired and a restart needs no flush.
Nothing is removed before the table holds a complete snapshot of the datastore.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from subnet.peers import PeerTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerEntry:
    """One peer's overlay endpoint for one address family.

    `subnet` is the peer's pod subnet (CIDR text), `vtep_ip` its network address (used as the
    onlink gateway and the neighbour IP), `vtep_mac` the MAC of the peer's flannel device, and
    `public_ip` the underlay address VXLAN packets are sent to.
    """

    subnet: str
    vtep_ip: str
    vtep_mac: str
    public_ip: str


@dataclass
class KernelState:
    """A device's per-peer objects: neighbours {IP: MAC}, FDB {(MAC, remote)}, routes {dst: gw}."""

    neighs: dict[str, str] = field(default_factory=dict)
    fdb: set[tuple[str, str]] = field(default_factory=set)
    routes: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[PeerEntry]) -> KernelState:
        """The objects a set of peers needs."""
        state = cls()
        for e in entries:
            state.neighs[e.vtep_ip] = e.vtep_mac
            state.fdb.add((e.vtep_mac, e.public_ip))
            state.routes[e.subnet] = e.vtep_ip
        return state


@dataclass(frozen=True)
class Op:
    """One kernel write: kind "neigh"/"fdb"/"route", action "replace"/"delete", and its arguments:
    neigh (ip, mac), fdb (mac, remote), route (dst, gateway); `key` names the peer it serves."""

    kind: str
    action: str
    a: str
    b: str | None
    key: str = ""


def diff(
    desired: Mapping[str, PeerEntry], actual: KernelState, keep: Iterable[PeerEntry] = ()
) -> list[Op]:
    """The writes that turn `actual` into what `desired` (lease key -> entry) needs.

    Per peer, in flannel's order: neighbour, FDB, route; only the objects that differ. Then the
    removals of everything else in `actual` (routes first, then FDB entries, then neighbours),
    except objects that the peers in `keep` still need.
    """
    ops: list[Op] = []
    want = KernelState.of([*desired.values(), *keep])
    for key, e in desired.items():
        if actual.neighs.get(e.vtep_ip) != e.vtep_mac:
            ops.append(Op("neigh", "replace", e.vtep_ip, e.vtep_mac, key))
        if (e.vtep_mac, e.public_ip) not in actual.fdb:
            ops.append(Op("fdb", "replace", e.vtep_mac, e.public_ip, key))
        if e.subnet not in actual.routes or actual.routes[e.subnet] != e.vtep_ip:
            ops.append(Op("route", "replace", e.subnet, e.vtep_ip, key))
    for dst in sorted(actual.routes.keys() - want.routes.keys()):
        ops.append(Op("route", "delete", dst, actual.routes[dst]))
    for mac, remote in sorted(actual.fdb - want.fdb):
        ops.append(Op("fdb", "delete", mac, remote))
    for ip in sorted(actual.neighs.keys() - want.neighs.keys()):
        ops.append(Op("neigh", "delete", ip, actual.neighs[ip]))
    return ops


class Datapath(Protocol):
    """The kernel side of one overlay device (one address family)."""

    def dump(self) -> KernelState:
        """The per-peer objects currently on the device."""

    def apply(self, op: Op) -> None:
        """Perform one write; raises on failure (a delete of a missing object is not one)."""

    def ensure_device(self) -> bool:
        """Make sure the device exists and is configured; True when it was (re)created."""


@dataclass
class SyncResult:
    """What one pass did: writes attempted, writes failed, and the peers to retry."""

    ops: int = 0
    failed: int = 0
    retry: set[str] = field(default_factory=set)
    errors: dict[str, str] = field(default_factory=dict)  # peer key -> why its write failed
    by_kind: dict[str, int] = field(default_factory=dict)  # writes attempted per object kind


V = TypeVar("V")


class Reconciler(Generic[V]):
    """The one worker that owns the kernel entries of one device.

    `select` turns a peer record into this device's `PeerEntry` (None: not on this device).
    `resync_period` in seconds; `retries` per write, with `backoff` seconds doubling between tries.
    A peer whose writes still fail is retried later, after `retry_base` seconds doubling up to
    `retry_max`, and logged once when it starts failing and once when it recovers, so a peer the
    kernel refuses neither floods the log nor delays the others.
    """

    def __init__(
        self,
        table: PeerTable[V],
        datapath: Datapath,
        select: Callable[[V], PeerEntry | None],
        resync_period: float = 30.0,
        retries: int = 3,
        backoff: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        retry_base: float = 1.0,
        retry_max: float = 60.0,
    ) -> None:
        self.table = table
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.failing: dict[str, tuple[int, float]] = {}  # peer key -> (failures, retry at)
        self._duplicates: dict[str, str] = {}  # peer key -> subnet it was refused for
        self.datapath = datapath
        self.select = select
        self.resync_period = resync_period
        self.retries = retries
        self.backoff = backoff
        self.clock = clock
        self.programmed: dict[str, PeerEntry] = {}
        self.last_full_sync: float | None = None
        self.first_sync_done = threading.Event()
        self.on_pass: Callable[[str, SyncResult, float], None] | None = None
        self.on_write: Callable[[Op, bool], None] | None = None
        self.on_programmed: Callable[[float], None] | None = None  # event-to-kernel seconds
        self.heartbeat = clock()  # last loop iteration, for liveness

    def desired(self, keys: Iterable[str] | None = None) -> dict[str, PeerEntry]:
        """This device's entries for `keys` (all peers when None).

        Two peers claiming the same subnet would make the kernel entries flip between them on
        every pass; the peer whose key sorts first keeps the subnet (a stable choice on every
        node) and the other is skipped with one warning. Incremental passes check against what
        is already programmed.
        """
        pairs = self.table.items() if keys is None else [(k, self.table.get(k)) for k in keys]
        out: dict[str, PeerEntry] = {}
        owner = {} if keys is None else {e.subnet: k for k, e in self.programmed.items()}
        for key, record in sorted(pairs, key=lambda pair: pair[0]):
            entry = self.select(record) if record is not None else None
            if entry is None:
                continue
            holder = owner.get(entry.subnet)
            if holder is not None and holder != key and holder < key:
                if self._duplicates.get(key) != entry.subnet:
                    self._duplicates[key] = entry.subnet
                    log.warning("peer %s claims subnet %s, already held by peer %s; ignoring it",
                                key, entry.subnet, holder)  # fmt: skip
                continue
            owner[entry.subnet] = key
            out[key] = entry
        return out

    def full_sync(self) -> SyncResult:
        """Dump the device, diff against the whole table, write the differences."""
        start = self.clock()
        if self.datapath.ensure_device():
            self.programmed.clear()
        desired = self.desired()
        ops = diff(desired, self.datapath.dump())
        result = self._apply(ops)
        self._observe_latency(self.table.pending() - result.retry)
        self.programmed = {k: e for k, e in desired.items() if k not in result.retry}
        self.last_full_sync = self.clock()
        self._report("full", result, start)
        return result

    def sync_keys(self, keys: set[str]) -> SyncResult:
        """Write the differences for the dirty `keys` only, against what this worker wrote last."""
        start = self.clock()
        desired = self.desired(keys)
        before = [self.programmed[k] for k in keys if k in self.programmed]
        others = [e for k, e in self.programmed.items() if k not in keys]
        result = self._apply(diff(desired, KernelState.of(before), keep=others))
        self._observe_latency(keys - result.retry)
        for key in keys:
            if key in result.retry:
                continue
            if key in desired:
                self.programmed[key] = desired[key]
            else:
                self.programmed.pop(key, None)
        self._report("incremental", result, start)
        return result

    def _apply(self, ops: list[Op]) -> SyncResult:
        result = SyncResult(ops=len(ops))
        attempted: set[str] = set()
        for op in ops:
            if op.key and op.key in result.retry:
                continue  # an earlier object of this peer failed: keep flannel's order
            attempted.add(op.key)
            result.by_kind[op.kind] = result.by_kind.get(op.kind, 0) + 1
            error = self._write(op)
            if self.on_write is not None:
                self.on_write(op, error is None)
            if error is not None:
                result.failed += 1
                if op.key:
                    result.retry.add(op.key)
                    result.errors[op.key] = f"{op.action} {op.kind} {op.a} {op.b or ''}: {error}"
                else:
                    log.warning("kernel write failed: %s %s %s %s: %s", op.action, op.kind,
                                op.a, op.b or "", error)  # fmt: skip
        self._schedule_retries(result, attempted)
        return result

    def _observe_latency(self, done: set[str]) -> None:
        since = self.table.take_since(done)
        if self.on_programmed is not None:
            now = time.monotonic()
            for t in since.values():
                self.on_programmed(now - t)

    def _schedule_retries(self, result: SyncResult, attempted: set[str]) -> None:
        now = self.clock()
        for key in result.retry:
            failures, _ = self.failing.get(key, (0, 0.0))
            if failures == 0:
                log.warning("cannot program peer %s (will retry with backoff): %s", key,
                            result.errors.get(key, "?"))  # fmt: skip
            delay = min(self.retry_max, self.retry_base * 2**failures)
            self.failing[key] = (failures + 1, now + delay)
        for key in attempted - result.retry:
            if self.failing.pop(key, None) is not None:
                log.info("peer %s programmed after earlier failures", key)

    def due_retries(self) -> set[str]:
        """Failing peers whose next attempt is due."""
        now = self.clock()
        return {key for key, (_, at) in self.failing.items() if at <= now}

    def _write(self, op: Op) -> str | None:
        """Perform one write with a few quick retries; returns the error text, None on success."""
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                self.datapath.apply(op)
                return None
            except Exception as err:  # netlink errors are many kinds; every one is retried
                if attempt == self.retries:
                    return str(err)
                time.sleep(delay)
                delay *= 2
        return "no attempt made"

    def _report(self, kind: str, result: SyncResult, start: float) -> None:
        if kind == "full" and not self.first_sync_done.is_set():
            log.info(
                "datapath in sync with %d peers (%d kernel writes, %d failed)",
                len(self.programmed),
                result.ops,
                result.failed,
            )
        elif result.ops:
            log.info("%s sync: %d kernel writes, %d failed", kind, result.ops, result.failed)
        if self.on_pass is not None:
            self.on_pass(kind, result, self.clock() - start)

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set: a full pass once the table is synced and every
        `resync_period` seconds, incremental passes for dirty keys in between."""
        while not stop.is_set():
            self.heartbeat = self.clock()
            dirty, full_requested = self.table.wait(timeout=1.0)
            if stop.is_set():
                return
            dirty |= self.due_retries()
            if not self.table.synced:  # no complete snapshot yet: nothing may be removed
                self.table.mark_dirty(dirty)
                stop.wait(0.1)
                continue
            due = (
                self.last_full_sync is None
                or self.clock() - self.last_full_sync >= self.resync_period
            )
            try:
                if due or full_requested:
                    self.full_sync()
                    self.first_sync_done.set()
                elif dirty:
                    self.sync_keys(dirty)
            except Exception:
                log.exception("reconcile pass failed; retrying")
                self.table.mark_dirty(dirty)
                self.last_full_sync = None
                stop.wait(1.0)
                continue
            for key in [k for k in self.failing if self.table.get(k) is None]:
                del self.failing[key]  # a peer that left is not retried
