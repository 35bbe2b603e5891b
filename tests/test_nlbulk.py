"""The bulk netlink path: the bytes it writes, what the kernel makes of them, and its acks."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2.netlink.core import AsyncCoreSocket

from backend import nlbulk
from tests import pyroute2_reference as ref
from tests.testbed import in_private_netns, inside, sh

pytestmark = pytest.mark.kernel

MAC = "0e:00:00:00:01:02"


@pytest.fixture
def ns() -> Iterator[str]:
    """A namespace with a veth underlay (198.51.100.1/24, 2001:db8::1/64), `flannel.1` and
    `flannel-v6.1`."""
    if not in_private_netns():
        pytest.fail("run through tests/private-netns (as `make test` does)")
    name = f"fpy{os.getpid()}-bulk"
    sh(["ip", "netns", "add", name])
    run = ["ip", "netns", "exec", name]
    try:
        for cmd in (
            "ip link set lo up",
            "ip link add eth0 type veth peer name eth0p",
            "ip addr add 198.51.100.1/24 dev eth0",
            "ip -6 addr add 2001:db8::1/64 dev eth0 nodad",
            "ip link set eth0 up",
            "ip link set eth0p up",
            "ip link add flannel.1 type vxlan id 1 local 198.51.100.1 dev eth0 nolearning "
            "dstport 0",
            "ip link set flannel.1 up",
            "ip link add flannel-v6.1 type vxlan id 1 local 2001:db8::1 dev eth0 nolearning "
            "dstport 0",
            "ip link set flannel-v6.1 up",
        ):
            sh([*run, *cmd.split()])
        yield name
    finally:
        sh(["ip", "netns", "del", name], check=False)


def ifindex(ns: str, dev: str = "flannel.1") -> int:
    res = sh(["ip", "netns", "exec", ns, "ip", "-j", "link", "show", dev])
    return int(json.loads(res.stdout)[0]["ifindex"])


@pytest.fixture
def sockets(ns: str) -> Iterator[tuple[IPRoute, nlbulk.BulkSocket]]:
    with inside(ns):
        ipr, bulk = IPRoute(), nlbulk.BulkSocket()
    try:
        yield ipr, bulk
    finally:
        ipr.close()
        bulk.close()


def sent_by_pyroute2(monkeypatch: pytest.MonkeyPatch, call: Callable[[], Any]) -> bytes:
    """The bytes pyroute2 puts on the netlink socket for `call()`, sequence and port ID zeroed."""
    sent: list[bytes] = []
    original = AsyncCoreSocket.send

    def record(self: Any, data: bytes, flags: int = 0) -> Any:
        sent.append(bytes(data))
        return original(self, data, flags)

    with monkeypatch.context() as m:
        m.setattr(AsyncCoreSocket, "send", record)
        call()
    assert len(sent) == 1
    return sent[0][:8] + bytes(8) + sent[0][16:]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_requests_are_byte_identical_to_pyroute2s(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str, monkeypatch: pytest.MonkeyPatch, v6: bool
) -> None:
    ipr, _ = sockets
    idx = ifindex(ns, "flannel-v6.1" if v6 else "flannel.1")
    vtep, subnet, remote = (
        ("fd00:1:2::", "fd00:1:2::/64", "2001:db8::2")
        if v6
        else ("10.1.2.0", "10.1.2.0/24", "198.51.100.2")
    )
    pairs: list[tuple[Callable[[], Any], bytes]] = [
        (
            lambda: ref.replace_neigh(ipr, idx, vtep, MAC),
            nlbulk.neigh_request("replace", idx, vtep, MAC),
        ),
        (
            lambda: ref.replace_fdb(ipr, idx, MAC, remote),
            nlbulk.fdb_request("replace", idx, MAC, remote),
        ),
        (
            lambda: ref.replace_route(ipr, idx, subnet, vtep),
            nlbulk.route_request("replace", idx, subnet, vtep),
        ),
        (
            lambda: ref.delete_route(ipr, idx, subnet),
            nlbulk.route_request("delete", idx, subnet, None),
        ),
        (
            lambda: ref.delete_fdb(ipr, idx, MAC, remote),
            nlbulk.fdb_request("delete", idx, MAC, remote),
        ),
        (
            lambda: ref.delete_neigh(ipr, idx, vtep),
            nlbulk.neigh_request("delete", idx, vtep, None),
        ),
    ]
    for call, ours in pairs:
        assert sent_by_pyroute2(monkeypatch, call).hex() == ours.hex()


def peers(n: int) -> list[tuple[str, str, str, str]]:
    """(subnet, VTEP IP, VTEP MAC, public IP) of n synthetic peers."""
    return [
        (
            f"10.{1 + i // 256}.{i % 256}.0/24",
            f"10.{1 + i // 256}.{i % 256}.0",
            f"0e:00:00:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}",
            f"198.18.{1 + i // 250}.{1 + i % 250}",
        )
        for i in range(n)
    ]


def requests_for(idx: int, action: str, n: int) -> list[nlbulk.Request]:
    out = []
    for subnet, vtep, mac, public in peers(n):
        out += [
            nlbulk.Request(nlbulk.neigh_request(action, idx, vtep, mac), action == "delete"),
            nlbulk.Request(nlbulk.fdb_request(action, idx, mac, public), action == "delete"),
            nlbulk.Request(nlbulk.route_request(action, idx, subnet, vtep), action == "delete"),
        ]
    return out


def test_written_objects_read_back_the_same_by_pyroute2_ip_and_the_bulk_dumps(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    ipr, bulk = sockets
    bulk.window = 64  # several windows of sends and acks
    idx = ifindex(ns)
    assert bulk.execute(requests_for(idx, "replace", 300)) == [None] * 900
    want_neighs = {vtep: mac for _, vtep, mac, _ in peers(300)}
    want_fdb = {(mac, public) for _, _, mac, public in peers(300)}
    want_routes: dict[str, str | None] = {subnet: vtep for subnet, vtep, _, _ in peers(300)}
    assert ref.dump_neighs(ipr, idx, socket.AF_INET) == want_neighs
    assert ref.dump_fdb(ipr, idx, socket.AF_INET) == want_fdb
    assert ref.dump_routes(ipr, idx, socket.AF_INET) == want_routes
    assert bulk.dump_neighs(idx, socket.AF_INET) == want_neighs
    assert bulk.dump_fdb(idx, socket.AF_INET) == want_fdb
    assert bulk.dump_routes(idx, socket.AF_INET) == want_routes
    run = ["ip", "netns", "exec", ns]
    routes = sh([*run, "ip", "route", "show", "dev", "flannel.1"]).stdout
    assert "10.1.5.0/24 via 10.1.5.0 onlink" in routes  # proto boot is not printed
    fdb = sh([*run, "bridge", "fdb", "show", "dev", "flannel.1"]).stdout
    assert "0e:00:00:00:00:05 dst 198.18.1.6 self permanent" in fdb
    neigh = sh([*run, "ip", "neigh", "show", "dev", "flannel.1"]).stdout
    assert "10.1.5.0 lladdr 0e:00:00:00:00:05 PERMANENT" in neigh

    assert bulk.execute(requests_for(idx, "delete", 300)) == [None] * 900
    assert bulk.dump_neighs(idx, socket.AF_INET) == {}
    assert bulk.dump_fdb(idx, socket.AF_INET) == set()
    assert bulk.dump_routes(idx, socket.AF_INET) == {}
    # deleting what is already gone is a success for deletes
    assert bulk.execute(requests_for(idx, "delete", 3)) == [None] * 9


def test_ipv6_objects_round_trip(sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str) -> None:
    ipr, bulk = sockets
    idx = ifindex(ns, "flannel-v6.1")
    reqs = [
        nlbulk.Request(nlbulk.neigh_request("replace", idx, "fd00:1:2::", MAC)),
        nlbulk.Request(nlbulk.fdb_request("replace", idx, MAC, "2001:db8::2")),
        nlbulk.Request(nlbulk.route_request("replace", idx, "fd00:1:2::/64", "fd00:1:2::")),
    ]
    assert bulk.execute(reqs) == [None] * 3
    assert bulk.dump_neighs(idx, socket.AF_INET6) == {"fd00:1:2::": MAC}
    assert bulk.dump_fdb(idx, socket.AF_INET6) == {(MAC, "2001:db8::2")}
    assert bulk.dump_fdb(idx, socket.AF_INET) == set()
    routes = bulk.dump_routes(idx, socket.AF_INET6)
    assert routes["fd00:1:2::/64"] == "fd00:1:2::"
    assert routes == ref.dump_routes(ipr, idx, socket.AF_INET6)
    assert "fe80::/64" not in routes  # the kernel's route of the link-local address


def test_each_error_is_reported_for_its_own_request(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    _, bulk = sockets
    bulk.window = 16
    idx = ifindex(ns)
    reqs = requests_for(idx, "replace", 20)
    bad = [
        # a link that does not exist
        nlbulk.Request(nlbulk.neigh_request("replace", 999_999, "10.9.9.0", MAC)),
        # a route whose gateway is not reachable without onlink... on a deleted device index
        nlbulk.Request(nlbulk.route_request("replace", 999_999, "10.9.9.0/24", "10.9.9.0")),
        # a delete of something absent is fine only when allowed
        nlbulk.Request(nlbulk.route_request("delete", idx, "10.9.8.0/24", None)),
    ]
    mixed = reqs[:17] + bad[:1] + reqs[17:40] + bad[1:] + reqs[40:]
    results = bulk.execute(mixed)
    failed = {i: r for i, r in enumerate(results) if r is not None}
    assert set(failed) == {17, 41, 42}, failed
    assert "ENODEV" in (failed[17] or "")
    assert "ESRCH" in (failed[42] or "") or "ENOENT" in (failed[42] or "")
    # every other request took effect
    assert len(bulk.dump_routes(idx, socket.AF_INET)) == 20
    assert len(bulk.dump_fdb(idx, socket.AF_INET)) == 20


def test_dumps_leave_out_other_devices_and_tables(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    _, bulk = sockets
    idx = ifindex(ns)
    run = ["ip", "netns", "exec", ns]
    sh([*run, "ip", "route", "add", "10.7.0.0/16", "via", "198.51.100.7", "dev", "eth0"])
    sh([*run, "ip", "route", "add", "10.8.0.0/24", "dev", "flannel.1", "table", "100"])
    sh(
        [
            *run,
            "ip",
            "neigh",
            "add",
            "198.51.100.9",
            "lladdr",
            MAC,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]
    )
    sh(
        [
            *run,
            "ip",
            "neigh",
            "add",
            "10.6.0.1",
            "lladdr",
            MAC,
            "dev",
            "flannel.1",
            "nud",
            "reachable",
        ]
    )
    assert bulk.execute(requests_for(idx, "replace", 2)) == [None] * 6
    assert set(bulk.dump_routes(idx, socket.AF_INET)) == {"10.1.0.0/24", "10.1.1.0/24"}
    assert set(bulk.dump_neighs(idx, socket.AF_INET)) == {"10.1.0.0", "10.1.1.0"}
    eth0 = ifindex(ns, "eth0")
    assert bulk.dump_routes(eth0, socket.AF_INET)["10.7.0.0/16"] == "198.51.100.7"
    assert bulk.dump_neighs(eth0, socket.AF_INET) == {"198.51.100.9": MAC}


def test_lost_acknowledgements_are_reported_as_failures_never_as_done(ns: str) -> None:
    with inside(ns):
        bulk = nlbulk.BulkSocket(rcvbuf=4096)  # room for a handful of acknowledgements only
    try:
        bulk.window = 600  # far more than fit: the kernel drops acknowledgements
        idx = ifindex(ns)
        results = bulk.execute(requests_for(idx, "replace", 200))
        lost = [r for r in results if r is not None]
        assert lost, "the receive buffer was expected to overflow"
        assert all("acknowledgement lost" in r for r in lost)
        # the socket stays usable: stale acknowledgements are not taken for new ones
        bulk.window = 8
        assert bulk.execute(requests_for(idx, "replace", 200)) == [None] * 600
    finally:
        bulk.close()


def test_repeated_dumps_see_changes(sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str) -> None:
    """Each dump reads the kernel anew: changes made by others between dumps are seen."""
    _, bulk = sockets
    idx = ifindex(ns)
    assert bulk.execute(requests_for(idx, "replace", 3)) == [None] * 9
    first = (bulk.dump_neighs(idx, 2), bulk.dump_fdb(idx, 2), bulk.dump_routes(idx, 2))
    assert first == (bulk.dump_neighs(idx, 2), bulk.dump_fdb(idx, 2), bulk.dump_routes(idx, 2))
    run = ["ip", "netns", "exec", ns]
    sh([*run, "ip", "neigh", "replace", "10.1.1.0", "lladdr", MAC, "dev", "flannel.1", "nud",
        "permanent"])  # fmt: skip
    sh([*run, "ip", "route", "replace", "10.1.2.0/24", "via", "10.1.0.0", "dev", "flannel.1",
        "onlink"])  # fmt: skip
    sh([*run, "bridge", "fdb", "del", "0e:00:00:00:00:00", "dev", "flannel.1", "dst",
        "198.18.1.1", "self"])  # fmt: skip
    assert bulk.dump_neighs(idx, 2)["10.1.1.0"] == MAC
    assert bulk.dump_routes(idx, 2)["10.1.2.0/24"] == "10.1.0.0"
    assert ("0e:00:00:00:00:00", "198.18.1.1") not in bulk.dump_fdb(idx, 2)
    sh([*run, "ip", "neigh", "replace", "10.1.1.0", "lladdr", MAC, "dev", "flannel.1", "nud",
        "reachable"])  # fmt: skip
    assert "10.1.1.0" not in bulk.dump_neighs(idx, 2)  # no longer permanent: not ours


def test_scope_compares_packed_addresses() -> None:
    scope = nlbulk.Scope.of(ipaddress.ip_network("10.244.0.0/16"))
    assert scope.holds(socket.inet_aton("10.244.0.0")) and scope.holds(
        socket.inet_aton("10.244.255.255")
    )
    assert not scope.holds(socket.inet_aton("10.245.0.0")) and not scope.holds(
        socket.inet_aton("10.243.255.255")
    )
    assert scope.holds(socket.inet_aton("10.244.3.0"), 24) and not scope.holds(
        socket.inet_aton("10.244.0.0"), 8
    )
    assert not scope.holds(socket.inet_pton(socket.AF_INET6, "::1"))  # another family
    assert not nlbulk.Scope.empty().holds(socket.inet_aton("10.244.0.1"))


def test_flood_entries_are_left_out_on_request(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    _, bulk = sockets
    idx = ifindex(ns)
    sh(["ip", "netns", "exec", ns, "bridge", "fdb", "append", "00:00:00:00:00:00", "dev",
        "flannel.1", "dst", "198.18.9.9"])  # fmt: skip
    assert ("00:00:00:00:00:00", "198.18.9.9") in bulk.dump_fdb(idx, socket.AF_INET)
    assert bulk.dump_fdb(idx, socket.AF_INET, unicast=True) == set()


def test_a_dump_given_up_half_way_does_not_block_the_next(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    _, bulk = sockets
    idx = ifindex(ns)
    bulk.window = 512
    assert bulk.execute(requests_for(idx, "replace", 3000)) == [None] * 9000
    parts = bulk._dump(nlbulk.RTM_GETROUTE, nlbulk._RTMSG.pack(2, 0, 0, 0, 0, 0, 0, 0, 0))
    next(parts)
    parts.close()  # as when the consumer raises
    assert len(bulk.dump_neighs(idx, socket.AF_INET)) == 3000
    assert len(bulk.dump_routes(idx, socket.AF_INET)) == 3000


def test_a_route_of_another_metric_is_not_taken_for_ours(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    _, bulk = sockets
    idx = ifindex(ns)
    assert bulk.execute(requests_for(idx, "replace", 1)) == [None] * 3
    sh(["ip", "netns", "exec", ns, "ip", "route", "add", "10.1.0.0/24", "via", "10.1.9.9", "dev",
        "flannel.1", "onlink", "metric", "100"])  # fmt: skip
    assert bulk.dump_routes(idx, socket.AF_INET) == {"10.1.0.0/24": "10.1.0.0"}


def test_fdb_entries_of_another_port_or_vni_are_drift_and_can_be_deleted(
    sockets: tuple[IPRoute, nlbulk.BulkSocket], ns: str
) -> None:
    """An FDB entry whose UDP port or VNI differs from the device's (NDA_PORT/NDA_VNI in the
    dump) is listed with them, so it never looks like the entry flanneld-py wants; a resync
    pass replaces the wanted one and deletes the stray ones, which needs their port and VNI in
    the delete request (without them the kernel finds no such entry and deletes nothing)."""
    from backend.reconcile import KernelState, PeerEntry, diff

    _, bulk = sockets
    idx = ifindex(ns)
    fdb = ["ip", "netns", "exec", ns, "bridge", "fdb"]
    strays = {
        (MAC, "198.18.1.6 port 4789"),  # the peer's own entry, but another port
        ("0e:00:00:00:09:07", "198.18.1.7 vni 7"),
        ("0e:00:00:00:09:08", "198.18.1.8 port 4789 vni 7"),
    }
    for mac, remote in strays:
        sh([*fdb, "append", mac, "dev", "flannel.1", "dst", *remote.split(), "self", "permanent"])
    assert bulk.dump_fdb(idx, socket.AF_INET) == strays
    unchanged = nlbulk.fdb_request("delete", idx, "0e:00:00:00:09:07", "198.18.1.7")
    assert bulk.execute([nlbulk.Request(unchanged)]) == [None]  # the kernel's "done"...
    assert bulk.dump_fdb(idx, socket.AF_INET) == strays  # ...deleted nothing
    peer = PeerEntry("10.1.0.0/24", "10.1.0.0", MAC, "198.18.1.6")
    ops = [op for op in diff({"p": peer}, KernelState(fdb=strays)) if op.kind == "fdb"]
    assert {(op.action, op.a, op.b) for op in ops} == {("replace", MAC, "198.18.1.6")} | {
        ("delete", mac, remote) for mac, remote in strays
    }
    requests = [
        nlbulk.Request(nlbulk.fdb_request(op.action, idx, op.a, op.b or ""), op.action == "delete")
        for op in ops
    ]
    assert bulk.execute(requests) == [None] * len(requests)
    assert bulk.dump_fdb(idx, socket.AF_INET) == {(MAC, "198.18.1.6")}
    shown = sh([*fdb, "show", "dev", "flannel.1"]).stdout
    assert "port" not in shown and "vni" not in shown, shown


def test_fdb_remote_suffix_is_checked() -> None:
    with pytest.raises(ValueError, match="only 'port N' and 'vni N'"):
        nlbulk.fdb_request("delete", 3, MAC, "198.18.1.6 via 4")
    with pytest.raises(ValueError):
        nlbulk.fdb_request("delete", 3, MAC, "198.18.1.6 port")
