"""Unit tests for the desired peer table (subnet.peers.PeerTable)."""

from __future__ import annotations

import threading
import time

from subnet.peers import PeerTable


def recording_table() -> tuple[PeerTable[str], list[tuple[str, str, str | None]]]:
    table: PeerTable[str] = PeerTable()
    events: list[tuple[str, str, str | None]] = []
    table.on_change = lambda key, change, record: events.append((key, change, record))
    return table, events


def test_new_table_is_empty_and_not_synced() -> None:
    table: PeerTable[str] = PeerTable()
    assert len(table) == 0
    assert table.synced is False
    assert table.items() == []
    assert table.get("a") is None
    assert table.wait(0) == (set(), False)


def test_upsert_reports_added_changed_and_unchanged() -> None:
    table, events = recording_table()
    assert table.upsert("a", "one") == "added"
    assert table.upsert("a", "one") is None
    assert table.upsert("a", "two") == "changed"
    assert table.get("a") == "two"
    assert len(table) == 1
    assert events == [("a", "added", "one"), ("a", "changed", "two")]


def test_upsert_marks_only_real_changes_dirty() -> None:
    table: PeerTable[str] = PeerTable()
    table.upsert("a", "one")
    assert table.wait(0) == ({"a"}, False)
    table.upsert("a", "one")
    assert table.wait(0) == (set(), False)
    table.upsert("a", "two")
    table.upsert("b", "x")
    assert table.wait(0) == ({"a", "b"}, False)


def test_remove() -> None:
    table, events = recording_table()
    table.upsert("a", "one")
    table.wait(0)
    assert table.remove("a") is True
    assert table.get("a") is None
    assert len(table) == 0
    assert table.wait(0) == ({"a"}, False)
    assert table.remove("a") is False
    assert table.remove("never") is False
    assert table.wait(0) == (set(), False)
    assert events == [("a", "added", "one"), ("a", "removed", None)]


def test_reset_marks_added_changed_and_removed_dirty_and_syncs() -> None:
    table, events = recording_table()
    for key, value in (("a", "1"), ("b", "2"), ("c", "3")):
        table.upsert(key, value)
    table.wait(0)
    events.clear()
    table.reset([("a", "1"), ("b", "20"), ("d", "4")])
    assert table.synced is True
    assert sorted(table.items()) == [("a", "1"), ("b", "20"), ("d", "4")]
    assert table.wait(0) == ({"b", "c", "d"}, False)
    assert sorted(events, key=lambda e: e[0]) == [
        ("b", "changed", "20"),
        ("c", "removed", None),
        ("d", "added", "4"),
    ]


def test_reset_with_identical_snapshot_marks_nothing() -> None:
    table: PeerTable[str] = PeerTable()
    table.reset([("a", "1")])
    assert table.wait(0) == ({"a"}, False)
    table.reset([("a", "1")])
    assert table.wait(0) == (set(), False)
    table.reset([])
    assert table.wait(0) == ({"a"}, False)
    assert len(table) == 0
    assert table.synced is True


def test_wait_returns_and_clears_dirty_keys_and_full_request() -> None:
    table: PeerTable[str] = PeerTable()
    table.upsert("a", "1")
    table.request_full_sync()
    assert table.wait(0) == ({"a"}, True)
    assert table.wait(0) == (set(), False)


def test_mark_dirty() -> None:
    table: PeerTable[str] = PeerTable()
    table.mark_dirty(["x", "y"])
    assert table.wait(0) == ({"x", "y"}, False)


def test_wait_times_out_without_work() -> None:
    table: PeerTable[str] = PeerTable()
    start = time.monotonic()
    assert table.wait(0.05) == (set(), False)
    assert time.monotonic() - start >= 0.04


def test_wait_wakes_up_on_upsert_from_another_thread() -> None:
    table: PeerTable[str] = PeerTable()
    got: list[tuple[set[str], bool]] = []
    waiter = threading.Thread(target=lambda: got.append(table.wait(5.0)))
    start = time.monotonic()
    waiter.start()
    time.sleep(0.02)
    table.upsert("a", "1")
    waiter.join(2.0)
    assert not waiter.is_alive()
    assert got == [({"a"}, False)]
    assert time.monotonic() - start < 2.0


def test_wait_wakes_up_on_full_sync_request() -> None:
    table: PeerTable[str] = PeerTable()
    got: list[tuple[set[str], bool]] = []
    waiter = threading.Thread(target=lambda: got.append(table.wait(5.0)))
    waiter.start()
    time.sleep(0.02)
    table.request_full_sync()
    waiter.join(2.0)
    assert got == [(set(), True)]


def test_items_is_a_copy() -> None:
    table: PeerTable[str] = PeerTable()
    table.upsert("a", "1")
    items = table.items()
    items.append(("b", "2"))
    assert table.items() == [("a", "1")]
