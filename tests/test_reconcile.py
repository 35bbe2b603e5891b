"""Unit tests for the kernel diff and the reconciler (backend.reconcile).

The kernel is replaced by `FakeDatapath`, an in-memory model of one flannel.N device's neighbour,
FDB and route tables that records every write and can be told to fail some of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.reconcile import KernelState, Op, PeerEntry, Reconciler, SyncResult, diff
from subnet.peers import PeerTable

MAC_A = "aa:aa:aa:aa:aa:01"
MAC_B = "bb:bb:bb:bb:bb:02"
MAC_C = "cc:cc:cc:cc:cc:03"


def entry(n: int, mac: str = MAC_A, public: str | None = None) -> PeerEntry:
    return PeerEntry(f"10.5.{n}.0/24", f"10.5.{n}.0", mac, public or f"192.168.0.{n}")


def programmed(e: PeerEntry) -> KernelState:
    return KernelState.of([e])


@dataclass
class Failure:
    remaining: int  # how many more attempts fail; -1: every attempt


class FakeDatapath:
    """An in-memory device: applies Ops to a KernelState, logs them, fails on request."""

    def __init__(self, state: KernelState | None = None) -> None:
        self.state = state or KernelState()
        self.log: list[Op] = []
        self.attempts: list[Op] = []
        self.failures: dict[tuple[str, str, str], Failure] = {}
        self.recreate = False
        self.dumps = 0

    def fail(self, kind: str, action: str, a: str, times: int = -1) -> None:
        self.failures[(kind, action, a)] = Failure(times)

    def dump(self) -> KernelState:
        self.dumps += 1
        s = self.state
        return KernelState(dict(s.neighs), set(s.fdb), dict(s.routes), dict(s.direct))

    def ensure_device(self) -> bool:
        if self.recreate:
            self.recreate = False
            self.state = KernelState()
            return True
        return False

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        out: list[str | None] = []
        for op in ops:
            try:
                self.apply(op)
                out.append(None)
            except OSError as err:
                out.append(str(err))
        return out

    def apply(self, op: Op) -> None:
        self.attempts.append(op)
        failure = self.failures.get((op.kind, op.action, op.a))
        if failure is not None and failure.remaining != 0:
            failure.remaining -= 1 if failure.remaining > 0 else 0
            raise OSError(f"EBUSY: {op.kind} {op.action} {op.a}")
        self.log.append(op)
        s = self.state
        if op.kind == "neigh":
            if op.action == "replace":
                s.neighs[op.a] = op.b or ""
            else:
                s.neighs.pop(op.a, None)
        elif op.kind == "fdb":
            if op.action == "replace":
                s.fdb.add((op.a, op.b or ""))
            else:
                s.fdb.discard((op.a, op.b or ""))
        elif op.action == "replace":  # the kernel's rule: one route per destination (metric 0)
            s.routes.pop(op.a, None)
            s.direct.pop(op.a, None)
            if op.kind == "route":
                s.routes[op.a] = op.b
            else:
                s.direct[op.a] = op.b or ""
        elif op.kind == "route":
            s.routes.pop(op.a, None)
        elif s.direct.get(op.a) == op.b:  # a direct route is deleted by destination and gateway
            del s.direct[op.a]


def reconciler(
    table: PeerTable[PeerEntry], dp: FakeDatapath, retries: int = 3
) -> Reconciler[PeerEntry]:
    return Reconciler(table, dp, lambda record: record, retries=retries, backoff=0)


# --- diff -----------------------------------------------------------------------------------------


def test_new_peer_gets_neigh_fdb_route_in_that_order() -> None:
    e = entry(2)
    assert diff({"k2": e}, KernelState()) == [
        Op("neigh", "replace", "10.5.2.0", MAC_A, "k2"),
        Op("fdb", "replace", MAC_A, "192.168.0.2", "k2"),
        Op("route", "replace", "10.5.2.0/24", "10.5.2.0", "k2"),
    ]


def test_unchanged_peer_needs_no_ops() -> None:
    e = entry(2)
    assert diff({"k2": e}, programmed(e)) == []


def test_mac_change_replaces_neigh_and_fdb_and_deletes_old_fdb() -> None:
    old, new = entry(2, MAC_A), entry(2, MAC_B)
    assert diff({"k2": new}, programmed(old)) == [
        Op("neigh", "replace", "10.5.2.0", MAC_B, "k2"),
        Op("fdb", "replace", MAC_B, "192.168.0.2", "k2"),
        Op("fdb", "delete", MAC_A, "192.168.0.2"),
    ]


def test_public_ip_change_replaces_fdb_and_deletes_old_one() -> None:
    old, new = entry(2, public="192.168.0.2"), entry(2, public="192.168.9.9")
    assert diff({"k2": new}, programmed(old)) == [
        Op("fdb", "replace", MAC_A, "192.168.9.9", "k2"),
        Op("fdb", "delete", MAC_A, "192.168.0.2"),
    ]


def test_removed_peer_deletes_route_fdb_neigh_in_that_order() -> None:
    assert diff({}, programmed(entry(2))) == [
        Op("route", "delete", "10.5.2.0/24", "10.5.2.0"),
        Op("fdb", "delete", MAC_A, "192.168.0.2"),
        Op("neigh", "delete", "10.5.2.0", MAC_A),
    ]


def test_route_with_wrong_gateway_is_replaced() -> None:
    e = entry(2)
    actual = programmed(e)
    actual.routes[e.subnet] = "10.5.99.0"
    assert diff({"k2": e}, actual) == [Op("route", "replace", "10.5.2.0/24", "10.5.2.0", "k2")]
    actual.routes[e.subnet] = None
    assert diff({"k2": e}, actual) == [Op("route", "replace", "10.5.2.0/24", "10.5.2.0", "k2")]


def test_missing_neighbour_alone_is_rewritten() -> None:
    e = entry(2)
    actual = programmed(e)
    del actual.neighs[e.vtep_ip]
    assert diff({"k2": e}, actual) == [Op("neigh", "replace", "10.5.2.0", MAC_A, "k2")]


def test_unexpected_kernel_entries_are_deleted() -> None:
    e = entry(2)
    actual = programmed(e)
    actual.routes["10.7.0.0/24"] = "10.7.0.0"
    actual.fdb.add((MAC_C, "192.168.7.7"))
    actual.neighs["10.7.0.0"] = MAC_C
    assert diff({"k2": e}, actual) == [
        Op("route", "delete", "10.7.0.0/24", "10.7.0.0"),
        Op("fdb", "delete", MAC_C, "192.168.7.7"),
        Op("neigh", "delete", "10.7.0.0", MAC_C),
    ]


def test_ops_are_grouped_per_peer_in_desired_order() -> None:
    ops = diff({"k3": entry(3, MAC_B), "k2": entry(2)}, KernelState())
    assert [(op.key, op.kind) for op in ops] == [
        ("k3", "neigh"),
        ("k3", "fdb"),
        ("k3", "route"),
        ("k2", "neigh"),
        ("k2", "fdb"),
        ("k2", "route"),
    ]


def test_kernel_state_of() -> None:
    state = KernelState.of([entry(2), entry(3, MAC_B)])
    assert state.neighs == {"10.5.2.0": MAC_A, "10.5.3.0": MAC_B}
    assert state.fdb == {(MAC_A, "192.168.0.2"), (MAC_B, "192.168.0.3")}
    assert state.routes == {"10.5.2.0/24": "10.5.2.0", "10.5.3.0/24": "10.5.3.0"}


def direct(n: int, public: str | None = None) -> PeerEntry:
    return PeerEntry.direct_route(f"10.5.{n}.0/24", public or f"192.168.0.{n}")


def test_kernel_state_of_direct_peers_has_only_their_routes() -> None:
    state = KernelState.of([entry(2), direct(3)])
    assert state == KernelState(
        {"10.5.2.0": MAC_A},
        {(MAC_A, "192.168.0.2")},
        {"10.5.2.0/24": "10.5.2.0"},
        {"10.5.3.0/24": "192.168.0.3"},
    )


def test_direct_route_with_another_gateway_is_replaced_and_strays_deleted_last() -> None:
    actual = KernelState(direct={"10.5.3.0/24": "192.168.0.9", "10.5.9.0/24": "192.168.0.9"})
    assert diff({"k3": direct(3), "k2": entry(2)}, actual) == [
        Op("direct", "replace", "10.5.3.0/24", "192.168.0.3", "k3"),
        Op("neigh", "replace", "10.5.2.0", MAC_A, "k2"),
        Op("fdb", "replace", MAC_A, "192.168.0.2", "k2"),
        Op("route", "replace", "10.5.2.0/24", "10.5.2.0", "k2"),
        Op("direct", "delete", "10.5.9.0/24", "192.168.0.9"),
    ]


_peer_sets = st.dictionaries(
    st.integers(1, 12),
    st.tuples(st.sampled_from([MAC_A, MAC_B, MAC_C]), st.integers(1, 4)),
    max_size=8,
)


def _peers(spec: dict[int, tuple[str, int]]) -> dict[str, PeerEntry]:
    return {f"k{n}": entry(n, mac, f"192.168.1.{ip}") for n, (mac, ip) in spec.items()}


@settings(max_examples=150, deadline=None)
@given(_peer_sets, _peer_sets, st.sets(st.integers(1, 12), max_size=4))
def test_applying_the_diff_converges(
    want_spec: dict[int, tuple[str, int]],
    have_spec: dict[int, tuple[str, int]],
    drift: set[int],
) -> None:
    desired = _peers(want_spec)
    actual = KernelState.of(_peers(have_spec).values())
    for n in drift:  # foreign entries nobody asked for
        actual.routes[f"10.9.{n}.0/24"] = None
        actual.neighs[f"10.9.{n}.0"] = MAC_C
    dp = FakeDatapath(actual)
    for op in diff(desired, dp.dump()):
        dp.apply(op)
    assert dp.state == KernelState.of(desired.values())
    assert diff(desired, dp.dump()) == []


_mixed_sets = st.dictionaries(
    st.integers(1, 12),
    st.tuples(st.sampled_from([MAC_A, MAC_B, None]), st.integers(1, 4)),  # None: direct
    max_size=8,
)


def _mixed(spec: dict[int, tuple[str | None, int]]) -> dict[str, PeerEntry]:
    return {
        f"k{n}": direct(n, f"192.168.1.{ip}") if mac is None else entry(n, mac, f"192.168.1.{ip}")
        for n, (mac, ip) in spec.items()
    }


@settings(max_examples=150, deadline=None)
@given(_mixed_sets, _mixed_sets)
def test_applying_the_diff_converges_with_direct_peers(
    want_spec: dict[int, tuple[str | None, int]], have_spec: dict[int, tuple[str | None, int]]
) -> None:
    desired = _mixed(want_spec)
    dp = FakeDatapath(KernelState.of(_mixed(have_spec).values()))
    for op in diff(desired, dp.dump()):
        dp.apply(op)
    assert dp.state == KernelState.of(desired.values())
    assert diff(desired, dp.dump()) == []


# --- Reconciler -----------------------------------------------------------------------------------


def test_full_sync_programs_every_peer() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3, MAC_B))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    result = r.full_sync()
    assert (result.ops, result.failed, result.retry) == (6, 0, set())
    assert dp.state == KernelState.of([entry(2), entry(3, MAC_B)])
    assert r.programmed == {"k2": entry(2), "k3": entry(3, MAC_B)}
    assert r.last_full_sync is not None


def test_second_full_sync_writes_nothing() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.log.clear()
    result = r.full_sync()
    assert result.ops == 0
    assert dp.log == []
    assert dp.dumps == 2


def test_full_sync_repairs_only_the_drift() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.log.clear()
    del dp.state.neighs["10.5.3.0"]  # someone ran `ip neigh del`
    dp.state.routes["10.8.0.0/24"] = "10.8.0.0"  # a leftover of a departed peer
    result = r.full_sync()
    assert dp.log == [
        Op("neigh", "replace", "10.5.3.0", MAC_A, "k3"),
        Op("route", "delete", "10.8.0.0/24", "10.8.0.0"),
    ]
    assert result.ops == 2
    assert dp.state == KernelState.of([entry(2), entry(3)])


def test_recreated_device_gets_every_peer_again() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.recreate = True
    dp.log.clear()
    result = r.full_sync()
    assert result.ops == 3
    assert [op.kind for op in dp.log] == ["neigh", "fdb", "route"]
    assert dp.state == KernelState.of([entry(2)])


def test_select_filters_records() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3))])
    dp = FakeDatapath()
    r: Reconciler[PeerEntry] = Reconciler(
        table, dp, lambda e: e if e.subnet != "10.5.3.0/24" else None, backoff=0
    )
    r.full_sync()
    assert set(r.programmed) == {"k2"}
    assert dp.state == KernelState.of([entry(2)])


def test_sync_keys_touches_only_dirty_keys() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    table.wait(0)
    del dp.state.neighs["10.5.2.0"]  # drift on k2: not dirty, so not looked at
    table.upsert("k3", entry(3, MAC_B))
    dirty, _ = table.wait(0)
    assert dirty == {"k3"}
    dp.log.clear()
    dumps = dp.dumps
    result = r.sync_keys(dirty)
    assert dp.log == [
        Op("neigh", "replace", "10.5.3.0", MAC_B, "k3"),
        Op("fdb", "replace", MAC_B, "192.168.0.3", "k3"),
        Op("fdb", "delete", MAC_A, "192.168.0.3"),
    ]
    assert result.ops == 3
    assert dp.dumps == dumps  # incremental passes never dump the kernel
    assert "10.5.2.0" not in dp.state.neighs
    assert r.programmed["k3"] == entry(3, MAC_B)


def test_sync_keys_removes_a_departed_peer() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3, MAC_B))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.log.clear()
    table.remove("k2")
    result = r.sync_keys({"k2"})
    assert dp.log == [
        Op("route", "delete", "10.5.2.0/24", "10.5.2.0"),
        Op("fdb", "delete", MAC_A, "192.168.0.2"),
        Op("neigh", "delete", "10.5.2.0", MAC_A),
    ]
    assert result.retry == set()
    assert set(r.programmed) == {"k3"}
    assert dp.state == KernelState.of([entry(3, MAC_B)])


def test_an_fdb_entry_two_leases_share_stays_until_both_are_gone() -> None:
    """A node holding two leases (old and new subnet) has one VTEP MAC and public IP."""
    table: PeerTable[PeerEntry] = PeerTable()
    shared = "192.168.0.9"
    table.reset([("k2", entry(2, public=shared)), ("k3", entry(3, public=shared))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    table.remove("k2")
    r.sync_keys({"k2"})
    assert (MAC_A, shared) in dp.state.fdb
    assert "10.5.2.0/24" not in dp.state.routes
    table.remove("k3")
    r.sync_keys({"k3"})
    assert dp.state == KernelState()


def test_a_peer_switching_kinds_incrementally_leaves_nothing_of_the_other_kind() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    table.upsert("k2", direct(2))
    r.sync_keys({"k2"})
    assert dp.state == KernelState.of([direct(2), entry(3)])
    # the direct route is written before the overlay entries go (no gap in routing)
    written = [(op.kind, op.action) for op in dp.log[-4:]]
    assert written == [("direct", "replace"), ("route", "delete"), ("fdb", "delete"),
                       ("neigh", "delete")]  # fmt: skip
    table.upsert("k2", entry(2))
    r.sync_keys({"k2"})
    assert dp.state == KernelState.of([entry(2), entry(3)])
    assert r.full_sync().ops == 0


def test_a_direct_peer_does_not_hold_an_fdb_entry_another_peer_shares() -> None:
    """A node's two leases, one reached directly: the FDB entry is the overlay lease's only."""
    table: PeerTable[PeerEntry] = PeerTable()
    shared = "192.168.0.9"
    table.reset([("k2", entry(2, public=shared)), ("k3", direct(3, public=shared))])
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    assert dp.state == KernelState.of([entry(2, public=shared), direct(3, public=shared)])
    table.remove("k2")
    r.sync_keys({"k2"})
    assert dp.state == KernelState.of([direct(3, public=shared)])
    table.remove("k3")
    r.sync_keys({"k3"})
    assert dp.state == KernelState()


def test_reselect_makes_every_full_pass_select_again() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    calls: list[str] = []
    direct_now = {"on": False}

    def select(record: PeerEntry) -> PeerEntry:
        calls.append(record.subnet)
        return direct(2) if direct_now["on"] else record

    reselects: list[int] = []
    r = Reconciler(table, dp, select, backoff=0, reselect=lambda: reselects.append(1))
    r.full_sync()
    direct_now["on"] = True
    r.full_sync()
    assert (len(calls), len(reselects)) == (2, 2)
    assert dp.state == KernelState.of([direct(2)])
    plain = Reconciler(table, FakeDatapath(), select, backoff=0)
    plain.full_sync()
    plain.full_sync()
    assert len(calls) == 3  # without reselect an unchanged table is not selected again


def test_an_incremental_pass_costs_the_same_at_any_table_size() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([(f"k{n}", PeerEntry(f"10.{n // 256}.{n % 256}.0/24", f"10.{n // 256}.{n % 256}.0",
                                     MAC_A, "192.168.0.1")) for n in range(2000)])  # fmt: skip
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    walked: list[str] = []
    items = table.items

    def counted_items() -> list[tuple[str, PeerEntry]]:
        walked.append("table")
        return items()

    table.items = counted_items  # type: ignore[method-assign]
    programmed = r.programmed
    r.programmed = _NoIteration(programmed)
    dp.log.clear()
    table.upsert("k7", PeerEntry("10.99.0.0/24", "10.99.0.0", MAC_B, "192.168.0.2"))
    r.sync_keys({"k7"})
    assert walked == []
    assert [op.action for op in dp.log] == ["replace"] * 3 + ["delete"] * 2


class _NoIteration(dict[str, PeerEntry]):
    """A dict that fails the test when something walks through it."""

    def __iter__(self) -> Any:
        raise AssertionError("an incremental pass walked every programmed peer")

    def items(self) -> Any:
        raise AssertionError("an incremental pass walked every programmed peer")

    def values(self) -> Any:
        raise AssertionError("an incremental pass walked every programmed peer")

    def keys(self) -> Any:
        raise AssertionError("an incremental pass walked every programmed peer")

    def copy(self) -> Any:
        raise AssertionError("an incremental pass walked every programmed peer")


def test_sync_keys_for_an_unknown_key_does_nothing() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    dp = FakeDatapath()
    r = reconciler(table, dp)
    result = r.sync_keys({"ghost"})
    assert (result.ops, dp.log, r.programmed) == (0, [], {})


def test_failing_write_is_retried_and_then_succeeds() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    dp.fail("fdb", "replace", MAC_A, times=2)
    r = reconciler(table, dp, retries=3)
    result = r.full_sync()
    assert (result.failed, result.retry) == (0, set())
    assert [op.kind for op in dp.attempts] == ["neigh", "fdb", "fdb", "fdb", "route"]
    assert r.programmed == {"k2": entry(2)}


def test_persistently_failing_peer_is_retried_later_and_not_recorded() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3, MAC_B))])
    dp = FakeDatapath()
    dp.fail("fdb", "replace", MAC_A)
    r = reconciler(table, dp, retries=3)
    result = r.full_sync()
    assert result.retry == {"k2"}
    assert result.failed == 1
    assert result.ops == 6
    k2_attempts = [op for op in dp.attempts if op.key == "k2"]
    assert [(op.kind, op.action) for op in k2_attempts] == [
        ("neigh", "replace"),
        ("fdb", "replace"),
        ("fdb", "replace"),
        ("fdb", "replace"),
    ]  # three tries of the FDB entry, and the route is never attempted
    assert "10.5.2.0/24" not in dp.state.routes
    assert set(r.programmed) == {"k3"}
    assert dp.state.routes["10.5.3.0/24"] == "10.5.3.0"


def test_failed_peer_is_written_again_by_the_next_incremental_pass() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    dp.fail("route", "replace", "10.5.2.0/24", times=3)
    r = reconciler(table, dp, retries=3)
    first = r.sync_keys({"k2"})
    assert first.retry == {"k2"}
    assert "k2" not in r.programmed
    second = r.sync_keys(first.retry)
    assert second.retry == set()
    assert r.programmed == {"k2": entry(2)}
    assert dp.state == KernelState.of([entry(2)])


def test_delete_failures_are_counted_but_not_retried_per_peer() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([])
    dp = FakeDatapath(programmed(entry(2)))
    dp.fail("route", "delete", "10.5.2.0/24")
    r = reconciler(table, dp, retries=2)
    result = r.full_sync()
    assert result.failed == 1
    assert result.retry == set()
    assert dp.state.neighs == {}
    assert dp.state.fdb == set()


def test_on_pass_reports_each_pass() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2))])
    dp = FakeDatapath()
    ticks = iter(range(100))
    r: Reconciler[PeerEntry] = Reconciler(
        table, dp, lambda e: e, backoff=0, clock=lambda: float(next(ticks))
    )
    seen: list[tuple[str, SyncResult, float]] = []
    r.on_pass = lambda kind, result, took: seen.append((kind, result, took))
    r.full_sync()
    r.sync_keys({"k2"})
    assert [(kind, res.ops) for kind, res, _ in seen] == [("full", 3), ("incremental", 0)]
    assert all(took > 0 for _, _, took in seen)


def test_run_does_a_full_sync_once_synced_then_stops() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    dp = FakeDatapath()
    r = reconciler(table, dp)
    stop = threading.Event()
    worker = threading.Thread(target=r.run, args=(stop,), daemon=True)
    worker.start()
    try:
        table.reset([("k2", entry(2))])
        assert r.first_sync_done.wait(3.0)
        assert dp.state == KernelState.of([entry(2)])
        table.upsert("k3", entry(3, MAC_B))
        deadline = time.monotonic() + 3.0
        while "k3" not in r.programmed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.programmed.get("k3") == entry(3, MAC_B)
    finally:
        stop.set()
        table.request_full_sync()
        worker.join(3.0)
    assert not worker.is_alive()


class CountingTable(PeerTable[PeerEntry]):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float) -> tuple[set[str], bool]:
        self.waits += 1
        return super().wait(timeout)


def test_run_does_not_spin_before_the_first_snapshot() -> None:
    table = CountingTable()
    table.upsert("k2", entry(2))  # a watch event before the snapshot: table not synced
    dp = FakeDatapath()
    r = reconciler(table, dp)
    stop = threading.Event()
    worker = threading.Thread(target=r.run, args=(stop,), daemon=True)
    worker.start()
    time.sleep(0.2)
    stop.set()
    table.request_full_sync()
    worker.join(3.0)
    assert dp.log == []  # nothing is written before the table is synced
    assert table.waits <= 10


def test_a_peer_the_kernel_refuses_backs_off_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    now = [100.0]
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k2", entry(2)), ("k3", entry(3, MAC_B))])
    dp = FakeDatapath()
    dp.fail("fdb", "replace", MAC_A)
    r = Reconciler(table, dp, lambda e: e, retries=1, backoff=0, clock=lambda: now[0],
                   retry_base=1.0, retry_max=4.0)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="backend.reconcile"):
        r.full_sync()
        assert r.failing["k2"] == (1, 101.0)
        assert r.due_retries() == set()
        now[0] = 101.0
        assert r.due_retries() == {"k2"}
        for _ in range(4):
            r.sync_keys(r.due_retries() or {"k2"})
    assert r.failing["k2"][0] == 5
    assert r.failing["k2"][1] - now[0] == 4.0  # capped at retry_max
    warnings = [rec for rec in caplog.records if "cannot program peer k2" in rec.getMessage()]
    assert len(warnings) == 1
    assert "10.5.3.0/24" in dp.state.routes  # the other peer was not held up
    dp.failures.clear()
    r.sync_keys({"k2"})
    assert "k2" not in r.failing and r.programmed["k2"] == entry(2)


# --- one subnet, two peers (kube mode keys peers by node name) ------------------------------------

S = "10.5.7.0/24"
NODE_A = PeerEntry(S, "10.5.7.0", MAC_A, "192.168.0.1")
NODE_B = PeerEntry(S, "10.5.7.0", MAC_B, "192.168.0.2")


def synced(
    records: list[tuple[str, PeerEntry]],
) -> tuple[PeerTable[PeerEntry], FakeDatapath, Reconciler[PeerEntry]]:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset(records)
    dp = FakeDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    table.wait(0)
    return table, dp, r


def drain(table: PeerTable[PeerEntry], r: Reconciler[PeerEntry]) -> None:
    """Incremental passes until nothing is dirty (as the reconciler's loop would run them)."""
    for _ in range(5):
        dirty, _ = table.wait(0)
        if not dirty:
            return
        r.sync_keys(dirty)


def test_a_subnet_handed_to_another_node_in_one_pass_is_programmed() -> None:
    table, dp, r = synced([("node-a", NODE_A)])
    table.reset([("node-b", NODE_B)])  # a re-list: node-a gone, node-b has its podCIDR
    drain(table, r)
    assert set(r.programmed) == {"node-b"}
    assert dp.state == KernelState.of([NODE_B])


def test_a_subnet_left_and_taken_in_one_pass_is_programmed() -> None:
    table, dp, r = synced([("node-a", NODE_A)])
    moved = PeerEntry("10.5.8.0/24", "10.5.8.0", MAC_A, "192.168.0.1")
    table.upsert("node-a", moved)
    table.upsert("node-b", NODE_B)
    drain(table, r)
    assert dp.state == KernelState.of([moved, NODE_B])


def test_a_lower_key_taking_a_subnet_displaces_the_holder() -> None:
    table, dp, r = synced([("node-b", NODE_B)])
    table.upsert("node-a", NODE_A)  # sorts first: it keeps the subnet
    drain(table, r)
    assert set(r.programmed) == {"node-a"}
    assert dp.state == KernelState.of([NODE_A])
    table.remove("node-b")  # the displaced duplicate leaves: node-a's route stays
    drain(table, r)
    assert dp.state == KernelState.of([NODE_A])


def test_a_duplicate_is_programmed_once_the_holder_leaves() -> None:
    table, dp, r = synced([("node-a", NODE_A), ("node-b", NODE_B)])
    assert set(r.programmed) == {"node-a"}
    table.remove("node-a")
    drain(table, r)
    assert set(r.programmed) == {"node-b"}
    assert dp.state == KernelState.of([NODE_B])


def test_a_recreated_device_forgets_the_old_references() -> None:
    table, dp, r = synced([("node-a", NODE_A)])
    table.remove("node-a")
    dp.recreate = True
    r.full_sync()
    assert r.refs.subnet_owner == {}
    table.upsert("node-b", NODE_B)
    drain(table, r)
    assert "node-b" in r.programmed


def test_references_stay_exact_after_failures_on_a_recreated_device() -> None:
    e1 = PeerEntry("10.5.1.0/24", "10.5.1.0", MAC_A, "192.168.0.1")
    e2 = PeerEntry("10.5.2.0/24", "10.5.2.0", MAC_B, "192.168.0.2")
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k1", e1), ("k2", e2)])
    dp = FakeDatapath()
    r = reconciler(table, dp, retries=1)
    r.full_sync()
    dp.recreate = True
    dp.fail("neigh", "replace", "10.5.1.0", times=1)
    dp.fail("neigh", "replace", "10.5.2.0", times=1)
    r.full_sync()
    r.sync_keys({"k1", "k2"})
    r.full_sync()
    table.remove("k1")
    r.sync_keys({"k1"})
    assert dp.state == KernelState.of([e2])


# --- events during a full pass ------------------------------------------------------------------


class DumpHookDatapath(FakeDatapath):
    """A device whose dump runs `during` (the lease events that arrive while the kernel is
    dumped) after taking its snapshot, so the dump the full pass diffs predates them."""

    def __init__(self) -> None:
        super().__init__()
        self.during: Any = None

    def dump(self) -> KernelState:
        snapshot = super().dump()
        if self.during is not None:
            self.during()
            self.during = None
        return snapshot


def events_table() -> PeerTable[PeerEntry]:
    table: PeerTable[PeerEntry] = PeerTable()
    table.reset([("k1", entry(1, MAC_A)), ("k2", entry(2, MAC_B)), ("k3", entry(3, MAC_C))])
    return table


def lease_events(table: PeerTable[PeerEntry]) -> None:
    """k4 joins, k2 moves to another MAC and public IP, k3 leaves."""
    table.upsert("k4", entry(4, "dd:dd:dd:dd:dd:04"))
    table.upsert("k2", entry(2, "ee:ee:ee:ee:ee:05", "192.168.9.2"))
    table.remove("k3")


def test_events_during_the_dump_are_written_before_the_full_pass_and_not_undone() -> None:
    table = events_table()
    dp = DumpHookDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.state.routes["10.5.99.0/24"] = "10.5.99.0"  # drift the full pass repairs
    del dp.state.neighs["10.5.1.0"]
    dp.during = lambda: lease_events(table)
    mark = len(dp.log)
    r.full_sync()
    mac2, mac4 = "ee:ee:ee:ee:ee:05", "dd:dd:dd:dd:dd:04"
    assert dp.log[mark:] == [
        # the incremental pass for the events, served right after the dump
        Op("neigh", "replace", "10.5.2.0", mac2, "k2"),
        Op("fdb", "replace", mac2, "192.168.9.2", "k2"),
        Op("neigh", "replace", "10.5.4.0", mac4, "k4"),
        Op("fdb", "replace", mac4, "192.168.0.4", "k4"),
        Op("route", "replace", "10.5.4.0/24", "10.5.4.0", "k4"),
        Op("route", "delete", "10.5.3.0/24", "10.5.3.0"),
        Op("fdb", "delete", MAC_B, "192.168.0.2"),
        Op("fdb", "delete", MAC_C, "192.168.0.3"),
        Op("neigh", "delete", "10.5.3.0", MAC_C),
        # then the full pass's repairs, and nothing of its stale view of k2, k3 and k4
        Op("neigh", "replace", "10.5.1.0", MAC_A, "k1"),
        Op("route", "delete", "10.5.99.0/24", "10.5.99.0"),
    ]
    want = dict(table.items())
    assert dp.state == KernelState.of(want.values())
    assert r.programmed == want
    assert r.entry_counts() == {"route": 3, "neigh": 3, "fdb": 3, "direct": 0}
    assert r.full_sync().ops == 0


def test_events_before_the_dump_are_not_undone_by_the_stale_selection() -> None:
    table = events_table()
    dp = FakeDatapath()
    selected: list[str] = []

    def select(record: PeerEntry) -> PeerEntry:
        selected.append(record.subnet)
        if len(selected) == 4:  # the second full pass is selecting: the events arrive
            lease_events(table)
        return record

    r: Reconciler[PeerEntry] = Reconciler(table, dp, select, backoff=0, reselect=lambda: None)
    r.full_sync()
    dump_before = dp.dumps
    result = r.full_sync()  # the incremental writes happen before its dump, which sees them
    assert dp.dumps == dump_before + 1
    assert result.ops == 0  # the stale selection of k2, k3 and k4 is not written back
    want = dict(table.items())
    assert dp.state == KernelState.of(want.values())
    assert r.programmed == want
    assert r.refs.subnet_owner == {e.subnet: k for k, e in want.items()}
    assert r.full_sync().ops == 0


def test_a_full_pass_request_made_during_a_full_pass_is_kept() -> None:
    table = events_table()
    dp = DumpHookDatapath()
    r = reconciler(table, dp)
    r.full_sync()
    dp.during = table.request_full_sync
    r.full_sync()
    assert table.wait(timeout=0.0) == (set(), True)


def test_events_that_wake_a_due_full_pass_are_written_before_it() -> None:
    table = events_table()
    dp = DumpHookDatapath()
    now = [0.0]
    r: Reconciler[PeerEntry] = Reconciler(table, dp, lambda e: e, backoff=0, clock=lambda: now[0])
    r.full_sync()
    now[0] = 31.0  # the periodic full pass is due
    stop = threading.Event()
    written_at_dump: list[int] = []

    def during() -> None:
        written_at_dump.append(len(dp.log))
        stop.set()  # one loop iteration

    dp.during = during
    mark = len(dp.log)
    table.upsert("k4", entry(4, "dd:dd:dd:dd:dd:04"))
    r.run(stop)
    assert written_at_dump == [mark + 3]  # k4's neighbour, FDB entry and route
    assert r.last_full_sync == 31.0
    assert dp.state == KernelState.of(dict(table.items()).values())
