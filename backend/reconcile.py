"""Make the kernel match the desired peer table, writing only the differences.

Per peer the overlay needs three kernel objects on `flannel.<VNI>` (flannel
`pkg/backend/vxlan/vxlan_network.go`): a neighbour entry (peer VTEP IP -> peer VTEP MAC), an FDB
entry (peer VTEP MAC -> peer public IP) and an onlink route (peer subnet via peer VTEP IP). They are
written in that order, so the route never points at an address the kernel would have to resolve.
A *direct* peer (host-gw, flannel `pkg/backend/route_network.go`, or a VXLAN DirectRouting peer
on this node's own L2 network) needs one object instead: a route to its subnet via its public IP.

Two passes, one worker:
- incremental: for the keys the watchers marked dirty, compare the desired record with what this
  worker last wrote and write the difference (cost proportional to the change, not the cluster);
- full: dump the device's tables, diff them against the whole table, write the difference, and
  remove entries of departed peers. Runs at start, periodically, and after a device is recreated,
  so drift made by others is repaired and a restart needs no flush.
Nothing is removed before the table holds a complete snapshot of the datastore.

A full pass at 5,000 peers takes tens of milliseconds (selecting every peer, three dumps, the
diff). So that a lease event does not wait for all of it, the loop writes the events that woke it
before a periodic pass that is due (the first pass, and one requested after the device was
recreated, take them in instead), and the full pass serves the keys marked dirty meanwhile
between its stages (after selecting, after the dump, after the diff): an incremental pass for
them, in the same thread, against what this worker last wrote. Those keys
are *touched*: the full pass's snapshot of them (its selection, and the dump, which may have been
taken before or after the incremental write) is out of date, so its writes for them are dropped,
and so are its removals of any object a touched key's programmed entry needs. What it writes for
the other peers is unaffected (their records did not change, or they would be dirty), and a
touched key's state is what the incremental pass left, its reference counts and retries included;
the next full pass checks it against the kernel like any other. A key marked dirty after the last
stage is served by the next loop iteration, as before. Single stages are not interrupted: one
dump of the three tables (about 30 ms at 5,000 peers) is the longest wait a full pass imposes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from subnet.peers import PeerTable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One peer's overlay endpoint for one address family.

    `subnet` is the peer's pod subnet (CIDR text), `vtep_ip` its network address (used as the
    onlink gateway and the neighbour IP), `vtep_mac` the MAC of the peer's flannel device, and
    `public_ip` the underlay address VXLAN packets are sent to. With `direct` the peer is reached
    by a plain route `subnet via public_ip` and nothing else (`vtep_ip` and `vtep_mac` unused).
    """

    subnet: str
    vtep_ip: str
    vtep_mac: str
    public_ip: str
    direct: bool = False

    @classmethod
    def direct_route(cls, subnet: str, public_ip: str) -> PeerEntry:
        """An entry for a peer reached by the route `subnet via public_ip` alone (host-gw)."""
        return cls(subnet, "", "", public_ip, True)


@dataclass
class KernelState:
    """A device's per-peer objects: neighbours {IP: MAC}, FDB {(MAC, remote)}, routes {dst: gw}
    on the device, and direct routes {dst: gateway (a peer's public IP)} of direct peers."""

    neighs: dict[str, str] = field(default_factory=dict)
    fdb: set[tuple[str, str]] = field(default_factory=set)
    routes: dict[str, str | None] = field(default_factory=dict)
    direct: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[PeerEntry]) -> KernelState:
        """The objects a set of peers needs."""
        state = cls()
        for e in entries:
            if e.direct:
                state.direct[e.subnet] = e.public_ip
                continue
            state.neighs[e.vtep_ip] = e.vtep_mac
            state.fdb.add((e.vtep_mac, e.public_ip))
            state.routes[e.subnet] = e.vtep_ip
        return state


@dataclass(frozen=True, slots=True)
class Op:
    """One kernel write: kind "neigh"/"fdb"/"route"/"direct", action "replace"/"delete", and its
    arguments: neigh (ip, mac), fdb (mac, remote), route (dst, gateway), direct (dst, the peer's
    public IP as gateway); `key` names the peer it serves."""

    kind: str
    action: str
    a: str
    b: str | None
    key: str = ""


def diff(
    desired: Mapping[str, PeerEntry], actual: KernelState, keep: KernelState | None = None
) -> list[Op]:
    """The writes that turn `actual` into what `desired` (lease key -> entry) needs.

    Per peer, in flannel's order: neighbour, FDB, route (a direct peer: its direct route); only
    the objects that differ. A peer switching from a direct route to the overlay has its direct
    route deleted (an op with its key) right before its onlink route: the kernel refuses an
    IPv6 onlink route whose gateway, inside the peer's subnet, is routed through another
    device. Then the removals of everything else in `actual` (routes first, then direct routes,
    FDB entries, neighbours), except the objects in `keep` (those other peers still need).
    """
    ops: list[Op] = []
    want = KernelState.of(desired.values())
    if keep is not None:
        want.neighs.update(keep.neighs)
        want.fdb |= keep.fdb
        want.routes.update(keep.routes)
    switched: set[str] = set()  # direct routes deleted before their peer's onlink route
    for key, e in desired.items():
        if e.direct:
            if actual.direct.get(e.subnet) != e.public_ip:
                ops.append(Op("direct", "replace", e.subnet, e.public_ip, key))
            continue
        if actual.neighs.get(e.vtep_ip) != e.vtep_mac:
            ops.append(Op("neigh", "replace", e.vtep_ip, e.vtep_mac, key))
        if (e.vtep_mac, e.public_ip) not in actual.fdb:
            ops.append(Op("fdb", "replace", e.vtep_mac, e.public_ip, key))
        if e.subnet not in actual.routes or actual.routes[e.subnet] != e.vtep_ip:
            old = actual.direct.get(e.subnet)
            if old is not None and e.subnet not in want.direct:
                ops.append(Op("direct", "delete", e.subnet, old, key))
                switched.add(e.subnet)
            ops.append(Op("route", "replace", e.subnet, e.vtep_ip, key))
    for dst in sorted(actual.routes.keys() - want.routes.keys()):
        ops.append(Op("route", "delete", dst, actual.routes[dst]))
    if actual.direct:
        for dst in sorted(actual.direct.keys() - want.direct.keys() - switched):
            ops.append(Op("direct", "delete", dst, actual.direct[dst]))
    for mac, remote in sorted(actual.fdb - want.fdb):
        ops.append(Op("fdb", "delete", mac, remote))
    for ip in sorted(actual.neighs.keys() - want.neighs.keys()):
        ops.append(Op("neigh", "delete", ip, actual.neighs[ip]))
    return ops


class ObjectRefs:
    """How many programmed peers need each shared kernel object, so that an incremental pass
    can tell in O(1) whether an object a changed peer no longer needs is still another peer's:
    two leases of one node share its FDB entry, and subnets of different lengths with the same
    network address share a neighbour entry. Routes are never shared (one peer per subnet, see
    `Reconciler.desired`); `subnet_owner` records whose each subnet is."""

    def __init__(self) -> None:
        self.neighs: dict[str, int] = {}
        self.fdb: dict[tuple[str, str], int] = {}
        self.subnet_owner: dict[str, str] = {}  # subnet -> key of the peer programmed with it
        self.direct = 0  # programmed entries that are direct routes

    def add(self, key: str, e: PeerEntry) -> None:
        """Count the objects of peer `key`'s entry `e`, and make it its subnet's owner."""
        self.subnet_owner[e.subnet] = key
        if e.direct:
            self.direct += 1
            return
        self.neighs[e.vtep_ip] = self.neighs.get(e.vtep_ip, 0) + 1
        fdb = (e.vtep_mac, e.public_ip)
        self.fdb[fdb] = self.fdb.get(fdb, 0) + 1

    def remove(self, key: str, e: PeerEntry) -> None:
        """Undo `add(key, e)`."""
        if self.subnet_owner.get(e.subnet) == key:
            del self.subnet_owner[e.subnet]
        if e.direct:
            self.direct -= 1
            return
        _decrement(self.neighs, e.vtep_ip)
        _decrement(self.fdb, (e.vtep_mac, e.public_ip))

    def still_needed(self, leaving: Iterable[PeerEntry]) -> KernelState:
        """The objects of the `leaving` entries that programmed peers other than them need."""
        leaving = [e for e in leaving if not e.direct]
        own_neighs: dict[str, int] = {}
        own_fdb: dict[tuple[str, str], int] = {}
        for e in leaving:
            own_neighs[e.vtep_ip] = own_neighs.get(e.vtep_ip, 0) + 1
            fdb = (e.vtep_mac, e.public_ip)
            own_fdb[fdb] = own_fdb.get(fdb, 0) + 1
        keep = KernelState()
        for e in leaving:
            if self.neighs.get(e.vtep_ip, 0) > own_neighs[e.vtep_ip]:
                keep.neighs[e.vtep_ip] = e.vtep_mac
            fdb = (e.vtep_mac, e.public_ip)
            if self.fdb.get(fdb, 0) > own_fdb[fdb]:
                keep.fdb.add(fdb)
        return keep


def _decrement(counts: dict[Any, int], obj: object) -> None:
    left = counts.get(obj, 0) - 1
    if left > 0:
        counts[obj] = left
    else:
        counts.pop(obj, None)


class Datapath(Protocol):
    """The kernel side of one overlay device (one address family)."""

    def dump(self) -> KernelState:
        """The per-peer objects currently on the device."""

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        """Perform the writes in order; per write None on success or the error text (a delete
        of a missing object is a success). Raises only when the device cannot be written at all.
        """

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
    # after the pass, the kernel objects the programmed peers need, per kind (route, neigh,
    # fdb, direct): see `Reconciler.entry_counts`
    entries: dict[str, int] = field(default_factory=dict)


V = TypeVar("V")
_ENTRY_KINDS = ("neigh", "fdb")  # written before any route


class Reconciler(Generic[V]):
    """The one worker that owns the kernel entries of one device.

    `select` turns a peer record into this device's `PeerEntry` (None: not on this device).
    `reselect`, when given, is called at the start of every full pass and makes the full pass
    select every peer again even when the table has not changed (a selection that depends on
    the kernel, such as DirectRouting's reachability check, is re-evaluated that way).
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
        reselect: Callable[[], None] | None = None,
    ) -> None:
        self.table = table
        self.reselect = reselect
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
        self.refs = ObjectRefs()  # objects needed by the programmed entries
        # the last full pass's desired entries, by table version (most passes find no change)
        self._desired: tuple[int, dict[str, PeerEntry]] | None = None
        self.last_full_sync: float | None = None
        self.first_sync_done = threading.Event()
        self.on_pass: Callable[[str, SyncResult, float], None] | None = None
        self.on_write: Callable[[Op, bool], None] | None = None
        self.on_programmed: Callable[[float], None] | None = None  # event-to-kernel seconds
        self.heartbeat = clock()  # last loop iteration, for liveness
        self._touched: set[str] | None = None  # during a full pass: keys served meanwhile

    def desired(self, keys: Iterable[str] | None = None) -> dict[str, PeerEntry]:
        """This device's entries for `keys` (all peers when None).

        Two peers claiming the same subnet would make the kernel entries flip between them on
        every pass; the peer whose key sorts first keeps the subnet (a stable choice on every
        node) and the other is skipped with one warning and remembered, to be tried again when
        the subnet is freed. An incremental pass also checks the programmed peers outside `keys`.
        """
        changing: set[str] = set() if keys is None else set(keys)
        pairs = self.table.items() if keys is None else [(k, self.table.get(k)) for k in changing]
        out: dict[str, PeerEntry] = {}
        programmed = {} if keys is None else self.refs.subnet_owner
        claimed: dict[str, str] = {}  # subnet -> key, in this call
        for key, record in sorted(pairs, key=lambda pair: pair[0]):
            entry = self.select(record) if record is not None else None
            if entry is None:
                self._duplicates.pop(key, None)
                continue
            holder = claimed.get(entry.subnet)
            if holder is None and programmed.get(entry.subnet) not in changing:
                holder = programmed.get(entry.subnet)  # a peer this pass leaves as it is
            if holder is not None and holder != key and holder < key:
                if self._duplicates.get(key) != entry.subnet:
                    self._duplicates[key] = entry.subnet
                    log.warning("peer %s claims subnet %s, already held by peer %s; ignoring it",
                                key, entry.subnet, holder)  # fmt: skip
                continue
            self._duplicates.pop(key, None)
            claimed[entry.subnet] = key
            out[key] = entry
        return out

    def full_sync(self) -> SyncResult:
        """Dump the device, diff against the whole table, write the differences."""
        start = self.clock()
        if self.datapath.ensure_device():
            self.programmed.clear()  # the device's entries are gone with it
            self.refs = ObjectRefs()
        touched: set[str] = set()
        self._touched = touched
        try:
            self._drain_dirty()  # keys dirty so far: this pass selects their newest records
            version = self.table.version
            if self.reselect is not None:
                self.reselect()
                self._desired = None
            if self._desired is None or self._desired[0] != version:  # the table changed
                self._desired = (version, self.desired())
            desired = self._desired[1]
            self._serve_dirty()
            actual = self.datapath.dump()
            self._serve_dirty()
            ops = diff(desired, actual)
            del actual  # freed before the pass reports (the daemon then trims the heap)
            self._serve_dirty()
        finally:
            self._touched = None
        if touched:
            ops = self._without_touched(ops, touched)
        result = self._apply(ops)
        del ops
        self._observe_latency(self.table.pending() - result.retry - touched)
        left = result.retry | touched
        programmed = {k: e for k, e in desired.items() if k not in left}
        for key in touched:  # as the incremental pass left them
            if key in self.programmed:
                programmed[key] = self.programmed[key]
        if programmed != self.programmed:  # same entries (the usual case): same references
            self.programmed = programmed
            self.refs = ObjectRefs()
            for key, e in programmed.items():
                self.refs.add(key, e)
        self.last_full_sync = self.clock()
        self._report("full", result, start)
        return result

    def _serve_dirty(self) -> None:
        """Within a full pass: an incremental pass for the keys marked dirty since it began (see
        the module docstring); `sync_keys` adds them to the pass's touched keys. A full pass
        requested meanwhile stays requested."""
        dirty = self._drain_dirty()
        if dirty:
            self.sync_keys(dirty)

    def _drain_dirty(self) -> set[str]:
        """Take the keys marked dirty without waiting, leaving a full-pass request in place."""
        dirty, full_requested = self.table.wait(timeout=0.0)
        if full_requested:
            self.table.request_full_sync()
        return dirty

    def _without_touched(self, ops: list[Op], touched: set[str]) -> list[Op]:
        """`ops` without the writes for `touched` keys and without the removals of objects their
        programmed entries need: an incremental pass wrote those after this pass's snapshot."""
        needed = KernelState.of(self.programmed[k] for k in touched if k in self.programmed)
        out = []
        for op in ops:
            if op.key in touched:
                continue
            if op.action == "delete" and not op.key:
                if op.kind == "route" and op.a in needed.routes:
                    continue
                if op.kind == "direct" and op.a in needed.direct:
                    continue
                if op.kind == "neigh" and op.a in needed.neighs:
                    continue
                if op.kind == "fdb" and (op.a, op.b or "") in needed.fdb:
                    continue
            out.append(op)
        return out

    def sync_keys(self, keys: set[str]) -> SyncResult:
        """Write the differences for the dirty `keys` only, against what this worker wrote last.
        The cost is proportional to the number of keys, not to the number of peers.

        A key taking a subnet from a programmed peer whose key sorts after it brings that peer
        into the pass (it becomes the duplicate and loses its entries); a duplicate whose
        subnet this pass frees is marked dirty, to be programmed by the next pass.
        """
        start = self.clock()
        keys = set(keys)
        for key in list(keys):
            record = self.table.get(key)
            entry = self.select(record) if record is not None else None
            holder = self.refs.subnet_owner.get(entry.subnet) if entry is not None else None
            if holder is not None and holder not in keys and holder > key:
                keys.add(holder)
        desired = self.desired(keys)
        before = [self.programmed[k] for k in keys if k in self.programmed]
        keep = self.refs.still_needed(before)
        result = self._apply(diff(desired, KernelState.of(before), keep=keep))
        self._observe_latency(keys - result.retry)
        freed: set[str] = set()
        for key in keys:
            if key in result.retry:
                continue
            old = self.programmed.pop(key, None)
            if old is not None:
                self.refs.remove(key, old)
                freed.add(old.subnet)
            if key in desired:
                self.programmed[key] = desired[key]
                self.refs.add(key, desired[key])
        if self._touched is not None:  # within a full pass (see `_serve_dirty`)
            self._touched |= keys
        freed -= self.refs.subnet_owner.keys()
        if freed:
            waiting = [k for k, subnet in self._duplicates.items() if subnet in freed]
            self.table.mark_dirty(waiting)
        self._report("incremental", result, start)
        return result

    def _apply(self, ops: list[Op]) -> SyncResult:
        """Write `ops` in three batches that keep flannel's order for every peer: neighbour and
        FDB entries, then routes and direct routes (skipping peers whose entries failed; with
        them the deletes that belong to a peer, see `diff`), then the other removals."""
        result = SyncResult(ops=len(ops))
        attempted: set[str] = set()
        entries = [op for op in ops if op.action == "replace" and op.kind in _ENTRY_KINDS]
        routes, removals = [], []
        for op in ops:
            if op.kind not in _ENTRY_KINDS and (op.action == "replace" or op.key):
                routes.append(op)
            elif op.action != "replace":
                removals.append(op)
        for batch in (entries, routes, removals):
            batch = [op for op in batch if not (op.key and op.key in result.retry)]
            if not batch:
                continue
            for op, error in zip(batch, self._write(batch), strict=True):
                attempted.add(op.key)
                result.by_kind[op.kind] = result.by_kind.get(op.kind, 0) + 1
                if self.on_write is not None:
                    self.on_write(op, error is None)
                if error is None:
                    continue
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

    def _write(self, ops: list[Op]) -> list[str | None]:
        """Perform the writes, retrying the failed ones a few times with a short backoff;
        returns per write None on success or the last error text."""
        errors: list[str | None] = [None] * len(ops)
        todo = list(range(len(ops)))
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                outcome = self.datapath.apply_many([ops[i] for i in todo])
            except Exception as err:  # the device as a whole: every write of the batch failed
                outcome = [str(err) or type(err).__name__] * len(todo)
            for i, error in zip(todo, outcome, strict=True):
                errors[i] = error
            todo = [i for i in todo if errors[i] is not None]
            if not todo or attempt == self.retries:
                break
            time.sleep(delay)
            delay *= 2
        return errors

    def entry_counts(self) -> dict[str, int]:
        """The kernel objects the programmed peers need, by kind: "route" (onlink routes on the
        device), "neigh" and "fdb" (distinct entries: peers may share one), "direct" (routes via
        a peer's public IP). O(1): read from the references, never by walking the peers."""
        direct = self.refs.direct
        return {
            "route": len(self.programmed) - direct,
            "neigh": len(self.refs.neighs),
            "fdb": len(self.refs.fdb),
            "direct": direct,
        }

    def _report(self, kind: str, result: SyncResult, start: float) -> None:
        result.entries = self.entry_counts()
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
            full = due or full_requested
            # a periodic full pass takes tens of milliseconds: the events that woke this loop
            # are written first (the first pass and a requested one, after a device was
            # recreated, take them in instead)
            events_first = not full or (self.last_full_sync is not None and not full_requested)
            try:
                if dirty and events_first:
                    self.sync_keys(dirty)
                if full:
                    self.full_sync()
                    self.first_sync_done.set()
            except Exception:
                log.exception("reconcile pass failed; retrying")
                self.table.mark_dirty(dirty)
                self.last_full_sync = None
                stop.wait(1.0)
                continue
            for key in [k for k in self.failing if self.table.get(k) is None]:
                del self.failing[key]  # a peer that left is not retried
