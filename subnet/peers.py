"""The desired peer table: the latest known state of every other node, fed by the watchers.

Level-triggered: a watcher only records the newest state of a peer (latest wins) and marks its key
dirty; one reconciler reads the table and makes the kernel match. Bursts coalesce by key, a missed
wake-up is repaired by the next pass, and nothing here ever blocks a watcher.

A snapshot (`reset`) replaces the whole table: peers absent from it are removed, and peers whose
record changed are marked dirty too (flannel's snapshot diff forgets those; README "Compared
with flanneld").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Generic, TypeVar

V = TypeVar("V")


class PeerTable(Generic[V]):
    """Thread-safe map of lease key -> slim peer record `V`, with a set of keys to (re)program.

    `synced` becomes true after the first full snapshot: until then the table is incomplete and
    the reconciler must not remove anything from the kernel.
    """

    def __init__(self) -> None:
        self._peers: dict[str, V] = {}
        self._dirty: set[str] = set()
        self._since: dict[str, float] = {}  # key -> arrival of its oldest unprogrammed change
        self._cond = threading.Condition()
        self._synced = False
        self._full = False
        self.on_change: Callable[[str, str, V | None], None] | None = None
        self.version = 0  # grows with every change: unchanged means same records

    @property
    def synced(self) -> bool:
        """True once a complete snapshot has been loaded."""
        return self._synced

    def __len__(self) -> int:
        return len(self._peers)

    def get(self, key: str) -> V | None:
        """The record of one peer, or None."""
        with self._cond:
            return self._peers.get(key)

    def items(self) -> list[tuple[str, V]]:
        """A copy of all (key, record) pairs."""
        with self._cond:
            return list(self._peers.items())

    def upsert(self, key: str, record: V) -> str | None:
        """Record a peer's newest state. Returns "added", "changed", or None when unchanged."""
        with self._cond:
            old = self._peers.get(key)
            if old == record:
                return None
            self._peers[key] = record
            self._mark(key)
        change = "added" if old is None else "changed"
        self._notify(key, change, record)
        return change

    def remove(self, key: str) -> bool:
        """Forget a peer. Returns False when it was not known."""
        with self._cond:
            if self._peers.pop(key, None) is None:
                return False
            self._mark(key)
        self._notify(key, "removed", None)
        return True

    def reset(self, records: Mapping[str, V] | Iterable[tuple[str, V]]) -> None:
        """Replace the table with a complete snapshot (key -> record); marks every difference
        dirty."""
        new = dict(records)
        events: list[tuple[str, str, V | None]] = []
        with self._cond:
            for key in self._peers.keys() - new.keys():
                events.append((key, "removed", None))
                self._mark(key)
            for key, record in new.items():
                old = self._peers.get(key)
                if old != record:
                    events.append((key, "added" if old is None else "changed", record))
                    self._mark(key)
            self._peers = new
            self._synced = True
            self._cond.notify_all()
        for event in events:
            self._notify(*event)

    def request_full_sync(self) -> None:
        """Ask the reconciler for a full pass (kernel dump and diff) as soon as it can."""
        with self._cond:
            self._full = True
            self._cond.notify_all()

    def wait(self, timeout: float) -> tuple[set[str], bool]:
        """Block up to `timeout` seconds for work; returns (dirty keys, full sync requested)
        and clears both. Returns at once when work is pending."""
        with self._cond:
            if not self._dirty and not self._full:
                self._cond.wait(timeout)
            dirty, self._dirty = self._dirty, set()
            full, self._full = self._full, False
            return dirty, full

    def mark_dirty(self, keys: Iterable[str]) -> None:
        """Mark keys for another attempt (e.g. after a failed kernel write)."""
        with self._cond:
            for key in keys:
                self._mark(key)

    def _mark(self, key: str) -> None:
        self.version += 1
        self._dirty.add(key)
        self._since.setdefault(key, time.monotonic())
        self._cond.notify_all()

    def pending(self) -> set[str]:
        """Keys with a change not yet reported programmed (see `take_since`)."""
        with self._cond:
            return set(self._since)

    def take_since(self, keys: Iterable[str]) -> dict[str, float]:
        """Pop the arrival times (time.monotonic) of the changes of `keys` now programmed."""
        with self._cond:
            taken = {k: self._since.pop(k) for k in keys if k in self._since}
            if not self._since:
                self._since = {}  # a dict keeps its size once grown: drop the empty table
            return taken

    def _notify(self, key: str, change: str, record: V | None) -> None:
        if self.on_change is not None:
            self.on_change(key, change, record)
