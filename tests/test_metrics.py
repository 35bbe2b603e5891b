"""Metrics and health of running daemons in the testbed: names, types and values after known events.

Each daemon serves /metrics, /healthz and /readyz on its node's underlay address; the test process
(in the private namespace that holds the underlay bridge) scrapes them like Prometheus would. The
per-kind counts of programmed kernel objects are also checked without a kernel, on a reconciler
with an in-memory datapath.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.reconcile import KernelState, Op, PeerEntry, Reconciler, SyncResult
from flanneld_py.observe import Observer
from subnet.lease import LeaseAttrs
from subnet.peers import PeerTable
from tests.testbed import Node, Testbed, wait_for

PORT = 8081


def http_get(node: Node, path: str, timeout: float = 5) -> tuple[int, str]:
    try:
        url = f"http://{node.address}:{PORT}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode()


class Scrape:
    """One /metrics scrape: sample values by name and labels, metric types by family name."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def labelsets(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.samples if n == name]


def scrape(node: Node) -> Scrape:
    code, text = http_get(node, "/metrics")
    assert code == 200
    return Scrape(text)


@pytest.fixture
def nodes(testbed: Testbed) -> Iterator[list[Node]]:
    found = [testbed.add_node() for _ in range(2)]
    for node in found:
        testbed.start_daemon(node, f"--healthz-port={PORT}", f"--healthz-ip={node.address}",
                             "--resync-period=2")  # fmt: skip
    for node in found:
        testbed.wait_subnet(node)
    testbed.wait_converged()
    yield found


def synthetic_lease(i: int) -> bytes:
    attrs = LeaseAttrs.decode(json.dumps({
        "PublicIP": f"198.18.{1 + i // 250}.{1 + i % 250}", "PublicIPv6": None,
        "BackendType": "vxlan",
        "BackendData": {"VNI": 1, "VtepMAC": f"0e:00:00:00:{i >> 8:02x}:{i & 255:02x}"},
    }))  # fmt: skip
    return attrs.encode()


@pytest.mark.kernel
def test_metrics_after_known_events(testbed: Testbed, nodes: list[Node]) -> None:
    node, peer = nodes
    wait_for("/readyz 200", lambda: http_get(node, "/readyz")[0] == 200)
    first = scrape(node)
    # names and types
    assert first.types["flannel_lease_renewals"] == "counter"
    assert first.types["flannel_dataplane_sync_duration_seconds"] == "histogram"
    assert first.types["flannel_event_to_programmed_seconds"] == "histogram"
    assert first.types["flannel_peers"] == "gauge"
    assert not any(name.endswith("_created") for name, _ in first.samples)
    # static facts
    assert first.value("flannel_build_info", version="0.1.0", backend="vxlan",
                       subnet_manager="etcd") == 1  # fmt: skip
    (lease,) = first.labelsets("flannel_lease_info")
    assert lease == {"subnet": testbed.subnet_of(node), "ipv6_subnet": "",
                     "public_ip": node.address}  # fmt: skip
    assert first.value("flannel_lease_expiration_timestamp_seconds") > time.time() + 23 * 3600
    assert first.value("flannel_network_subnets", state="capacity") == 255
    assert first.value("flannel_network_subnets", state="allocated") == 2
    assert first.value("flannel_network_subnets", state="reserved") == 0
    # the peer, programmed
    assert first.value("flannel_peers", family="ipv4") == 1
    assert first.value("flannel_lease_events_total", type="added", source="etcd") >= 1
    for kind, count in (("route", 1), ("neigh", 1), ("fdb", 1), ("direct", 0)):
        assert first.value("flannel_dataplane_entries", kind=kind) == count, kind
    assert first.value("flannel_dataplane_operations_total", kind="fdb", op="replace",
                       result="success") >= 1  # fmt: skip
    assert first.value("flannel_dataplane_last_sync_timestamp_seconds") > time.time() - 60
    # labelled counters exist at 0 before anything happened
    assert first.value("flannel_lease_renewals_total", result="failure") == 0
    assert first.value("flannel_datastore_watch_restarts_total", reason="compacted") == 0
    assert first.value("flannel_invalid_leases_total") == 0

    prefix = f"{testbed.etcd_prefix}/subnets"
    # a malformed lease is skipped and counted
    testbed.client.put(f"{prefix}/10.244.250.0-24", "not json")
    wait_for("the invalid lease counted",
             lambda: scrape(node).value("flannel_invalid_leases_total") == 1)  # fmt: skip
    # a new peer: an event, programmed, its latency observed
    before = first.value("flannel_event_to_programmed_seconds_count")
    testbed.client.put(f"{prefix}/10.244.251.0-24", synthetic_lease(251))
    wait_for("two peers", lambda: scrape(node).value("flannel_peers", family="ipv4") == 2)
    wait_for("the route of the new peer", lambda: "10.244.251.0/24" in testbed.routes(node))
    after = scrape(node)
    assert after.value("flannel_event_to_programmed_seconds_count") > before
    assert after.value("flannel_dataplane_entries", kind="route") == 2
    assert after.value("flannel_dataplane_entries", kind="fdb") == 2
    assert after.value("flannel_dataplane_entries", kind="direct") == 0
    assert after.value("flannel_network_subnets", state="allocated") == 2
    assert after.value("flannel_network_subnets", state="reserved") == 1  # put without a lease
    # this node's lease overwritten by someone else: written back, counted as a renewal
    own_key = f"{prefix}/{testbed.subnet_of(node).replace('/', '-')}"
    testbed.client.put(own_key, synthetic_lease(99))

    def renewed() -> bool:
        return scrape(node).value("flannel_lease_renewals_total", result="success") == 1

    wait_for("a successful renewal", renewed)
    wait_for("our value back", lambda: testbed.client.get(own_key)[0] != synthetic_lease(99))
    # drift made by hand is repaired by the periodic full pass, and counted
    testbed.node_sh(node, "ip", "route", "del", testbed.subnet_of(peer), "dev", "flannel.1")
    wait_for("the route repaired", lambda: testbed.subnet_of(peer) in testbed.routes(node))

    def repair_counted() -> bool:
        return scrape(node).value("flannel_dataplane_drift_repairs_total", kind="route") >= 1

    wait_for("the repair counted", repair_counted)
    final = scrape(node)
    assert final.value("flannel_datastore_requests_total", op="list", result="success") >= 1
    assert final.value("flannel_datastore_requests_total", op="put", result="success") >= 1
    assert http_get(node, "/healthz") == (200, "flanneld is running\n")


@pytest.mark.kernel
def test_health_answers_while_a_large_sync_runs(testbed: Testbed, nodes: list[Node]) -> None:
    node, _ = nodes
    prefix = f"{testbed.etcd_prefix}/subnets"
    count = 1500
    live: list[int] = []
    for i in range(count):  # /28 peers in 10.244.128.0/17, inside the network
        key = f"10.244.{128 + i // 16}.{(i % 16) * 16}-28"
        testbed.client.put(f"{prefix}/{key}", synthetic_lease(i + 1))
        if i % 100 == 0:  # probes while the daemon is busy with the stream of new peers
            live.append(http_get(node, "/healthz", timeout=5)[0])  # raises past the timeout
    deadline = time.monotonic() + 180
    while True:
        live.append(http_get(node, "/healthz", timeout=5)[0])
        if len(testbed.routes(node)) >= count + 1 or time.monotonic() > deadline:
            break
    assert len(testbed.routes(node)) == count + 1
    assert len(live) > count // 100 and set(live) == {200}


@pytest.mark.kernel
def test_state_file_records_the_last_error(testbed: Testbed, nodes: list[Node]) -> None:
    node, _ = nodes
    state_file = node.subnet_file.parent / "flanneld-py-state.json"
    wait_for("the state file", state_file.exists)
    wait_for("ready in the state file", lambda: json.loads(state_file.read_text())["ready"])
    state: dict[str, Any] = json.loads(state_file.read_text())
    assert state["peers"] == 1 and state["last_error"] is None
    assert state["lease"] == testbed.subnet_of(node).replace("/", "-")
    testbed.stop_etcd()  # the next renewal or watch error is an error line
    wait_for("an error recorded", lambda: json.loads(state_file.read_text())["last_error"],
             timeout=60)  # fmt: skip


# --- flannel_dataplane_entries per kind, without a kernel ----------------------------------------


def overlay(n: int, mac: str | None = None, public_ip: str | None = None) -> PeerEntry:
    return PeerEntry(f"10.244.{n}.0/24", f"10.244.{n}.0", mac or f"0e:00:00:00:00:{n:02x}",
                     public_ip or f"198.18.0.{n}")  # fmt: skip


def direct(n: int) -> PeerEntry:
    return PeerEntry.direct_route(f"10.244.{n}.0/24", f"198.18.0.{n}")


class MemoryDatapath:
    """A datapath that accepts every write and dumps what the entries of `state` need."""

    def __init__(self) -> None:
        self.state = KernelState()

    def dump(self) -> KernelState:
        return self.state

    def ensure_device(self) -> bool:
        return False

    def apply_many(self, ops: Sequence[Op]) -> list[str | None]:
        return [None] * len(ops)


def test_entry_counts_follow_full_and_incremental_passes() -> None:
    table: PeerTable[PeerEntry] = PeerTable()
    # two leases of one node share its FDB entry; peer 4 and 5 are direct
    shared = overlay(3, mac="0e:00:00:00:00:02", public_ip="198.18.0.2")
    table.reset([("k2", overlay(2)), ("k3", shared), ("k4", direct(4)), ("k5", direct(5))])
    r = Reconciler(table, MemoryDatapath(), lambda e: e, backoff=0)
    passes: list[dict[str, int]] = []
    r.on_pass = lambda kind, result, seconds: passes.append(result.entries)
    r.full_sync()
    assert passes[-1] == {"route": 2, "neigh": 2, "fdb": 1, "direct": 2}
    table.remove("k4")
    table.upsert("k6", overlay(6))
    r.sync_keys({"k4", "k6"})
    assert passes[-1] == {"route": 3, "neigh": 3, "fdb": 2, "direct": 1}
    table.upsert("k2", PeerEntry.direct_route("10.244.2.0/24", "198.18.0.2"))  # now direct
    r.sync_keys({"k2"})
    assert passes[-1] == {"route": 2, "neigh": 2, "fdb": 2, "direct": 2}
    assert passes[-1] == r.entry_counts()


def test_observer_sets_the_gauge_per_kind(tmp_path: Any) -> None:
    def gauge(obs: Observer, kind: str) -> float | None:
        return obs.metrics.registry.get_sample_value("flannel_dataplane_entries", {"kind": kind})

    obs = Observer(str(tmp_path / "subnet.env"), "host-gw", "etcd", 30.0)
    assert gauge(obs, "direct") == 0  # present before the first pass
    entries = {"route": 0, "neigh": 0, "fdb": 0, "direct": 7}
    obs.sync_pass("full", SyncResult(entries=entries), 0.01, 7)
    assert {k: gauge(obs, k) for k in entries} == entries
    obs.sync_pass("incremental", SyncResult(), 0.01, 3)  # no counts given: one per peer
    assert (gauge(obs, "route"), gauge(obs, "direct")) == (3, 0)


# --- host-gw and DirectRouting nodes in the testbed ----------------------------------------------


def entries_of(node: Node) -> dict[str, float]:
    s = scrape(node)
    return {k: s.value("flannel_dataplane_entries", kind=k) for k in ("route", "neigh", "fdb",
                                                                       "direct")}  # fmt: skip


@pytest.mark.kernel
@pytest.mark.etcd
def test_dataplane_entries_of_a_host_gw_node(testbed: Testbed) -> None:
    from tests.test_hostgw import start_host_gw

    node, _peer = start_host_gw(testbed, 2, f"--healthz-port={PORT}")
    wait_for("/readyz 200", lambda: http_get(node, "/readyz")[0] == 200)
    assert scrape(node).value("flannel_build_info", version="0.1.0", backend="host-gw",
                              subnet_manager="etcd") == 1  # fmt: skip
    one = {"route": 0, "neigh": 0, "fdb": 0, "direct": 1}
    wait_for("one direct route counted", lambda: entries_of(node) == one)
    value = '{"PublicIP":"198.18.0.97","PublicIPv6":null,"BackendType":"host-gw"}'
    key = f"{testbed.etcd_prefix}/subnets/10.244.202.0-24"
    testbed.client.put(key, value)
    wait_for("two direct routes counted", lambda: entries_of(node) == {**one, "direct": 2})
    testbed.client.delete(key)
    wait_for("one again", lambda: entries_of(node) == one)
    assert scrape(node).value("flannel_dataplane_operations_total", kind="direct",
                              op="replace", result="success") >= 2  # fmt: skip


@pytest.mark.kernel
@pytest.mark.etcd
def test_dataplane_entries_of_a_direct_routing_node(testbed: Testbed) -> None:
    from tests.testbed import start_direct_routing_nodes

    n1, _n2, n3 = start_direct_routing_nodes(testbed, f"--healthz-port={PORT}")
    wait_for("/readyz 200", lambda: http_get(n1, "/readyz")[0] == 200)
    # n2 by a direct route, n3 through the overlay
    mixed = {"route": 1, "neigh": 1, "fdb": 1, "direct": 1}
    wait_for("n1's entries per kind", lambda: entries_of(n1) == mixed)
    wait_for("/readyz 200 on n3", lambda: http_get(n3, "/readyz")[0] == 200)
    overlay_only = {"route": 2, "neigh": 2, "fdb": 2, "direct": 0}
    wait_for("n3's entries per kind", lambda: entries_of(n3) == overlay_only)
