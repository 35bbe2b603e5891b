"""`flanneld-py status`: the report's pure core, and the command run in node namespaces.

Unit tests build an `Observed` by hand (no root, no datastore) and check the classification of
the diff, the peers chosen by the daemon's rules, finding this node's lease, the problems explained
in words and the exit status. The integration tests (marked `kernel`) run the command inside a
testbed node's namespace, as an operator would on the node, with the daemon's own flags.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.netlink import LinkState
from backend.reconcile import KernelState, PeerEntry
from flanneld_py import status
from flanneld_py.status import (
    Observed,
    OwnLease,
    build_report,
    classify_diff,
    desired_peers,
    exit_code,
    find_own_lease,
    render_text,
)
from subnet.config import NetworkConfig
from subnet.lease import Lease, LeaseAttrs
from tests.testbed import ETCD_URL, ETCD_URL6, REPO, Node, Testbed, wait_for

NET = ipaddress.IPv4Network("10.244.0.0/16")
CFG = NetworkConfig(network=NET, backend_type="vxlan", backend={"Type": "vxlan"})
OWN_MAC = "0e:00:00:00:00:01"
NFT_NETWORK = '{"Network": "10.244.0.0/16", "EnableNFTables": true, "Backend": {"Type": "vxlan"}}'


def mac(i: int) -> str:
    return f"0e:00:00:00:00:{i:02x}"


def lease(i: int, backend: str = "vxlan", vtep_mac: str | None = None, lease_id: int = 7) -> Lease:
    """Node i's lease: 10.244.i.0/24, public IP 198.18.0.i, VTEP MAC 0e:..:i."""
    attrs = LeaseAttrs(
        public_ip=ipaddress.IPv4Address(f"198.18.0.{i}"),
        backend_type=backend,
        backend_data={"VNI": 1, "VtepMAC": vtep_mac or mac(i)},
    )
    return Lease(ipaddress.IPv4Network(f"10.244.{i}.0/24"), None, attrs, lease_id=lease_id)


def entry(i: int) -> PeerEntry:
    return PeerEntry(f"10.244.{i}.0/24", f"10.244.{i}.0", mac(i), f"198.18.0.{i}")


def link(mtu: int = 1450, **kw: Any) -> LinkState:
    values: dict[str, Any] = dict(
        index=5,
        mac=OWN_MAC,
        mtu=mtu,
        kind="vxlan",
        up=True,
        vni=1,
        local="198.18.0.1",
        lower_index=2,
        port=8472,
    )
    values.update(kw)
    return LinkState(**values)


def healthy(**changes: Any) -> Observed:
    """A node (node 1) in sync with two peers (nodes 2 and 3), daemon running."""
    own = lease(1, vtep_mac=OWN_MAC)
    obs = Observed(
        mode="etcd",
        endpoint="http://198.18.0.254:2379",
        subnet_file="/run/flannel/subnet.env",
        config=CFG,
        leases=[(own.key, own), (lease(2).key, lease(2)), (lease(3).key, lease(3))],
        own=OwnLease(own.key, own.subnet, "198.18.0.1", OWN_MAC, "vxlan", lease_id=7, ttl=3600.0),
        env={
            "FLANNEL_NETWORK": "10.244.0.0/16",
            "FLANNEL_SUBNET": "10.244.1.1/24",
            "FLANNEL_MTU": "1450",
            "FLANNEL_IPMASQ": "false",
        },
        device=link(),
        device_addresses=["10.244.1.0/32"],
        lower=LinkState(index=2, mac="02:00:00:00:00:09", mtu=1500, kind="veth", up=True),
        lower_name="eth0",
        kernel=KernelState.of([entry(2), entry(3)]),
        cni_bridge=LinkState(index=9, mac="02:00:00:00:00:0a", mtu=1450, kind="bridge", up=True),
        iface_name="eth0",
        state={
            "pid": 4242,
            "ready": True,
            "peers": 2,
            "last_full_sync": 1_700_000_000.0,
            "last_error": None,
        },
        daemon_alive=True,
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


# --- classification of the diff ------------------------------------------------------------------


def test_in_sync_classifies_nothing() -> None:
    desired = {"k2": entry(2), "k3": entry(3)}
    assert classify_diff(desired, KernelState.of([entry(2), entry(3)])) == {
        "missing": [],
        "wrong": [],
        "unexpected": [],
    }


def test_absent_objects_are_missing_with_their_fields() -> None:
    got = classify_diff({"k2": entry(2)}, KernelState())
    assert got["wrong"] == [] and got["unexpected"] == []
    assert [(i["kind"], i["peer"]) for i in got["missing"]] == [
        ("neigh", "k2"),
        ("fdb", "k2"),
        ("route", "k2"),
    ]
    neigh, fdb, route = got["missing"]
    assert (neigh["ip"], neigh["mac"]) == ("10.244.2.0", mac(2))
    assert (fdb["mac"], fdb["remote"]) == (mac(2), "198.18.0.2")
    assert (route["dst"], route["gateway"]) == ("10.244.2.0/24", "10.244.2.0")
    assert route["text"] == "10.244.2.0/24 via 10.244.2.0"


def test_present_objects_with_other_values_are_wrong_not_unexpected() -> None:
    kernel = KernelState(
        neighs={"10.244.2.0": "0e:99:99:99:99:99"},
        fdb={(mac(2), "198.18.0.77")},
        routes={"10.244.2.0/24": "10.244.9.9"},
    )
    got = classify_diff({"k2": entry(2)}, kernel)
    assert got["missing"] == [] and got["unexpected"] == []
    wrong = {i["kind"]: i for i in got["wrong"]}
    assert wrong["neigh"]["kernel_mac"] == "0e:99:99:99:99:99"
    assert wrong["neigh"]["mac"] == mac(2)
    assert wrong["fdb"]["kernel_remote"] == "198.18.0.77"
    assert wrong["route"]["kernel_gateway"] == "10.244.9.9"
    assert "kernel: 10.244.2.0/24 via 10.244.9.9" in wrong["route"]["text"]


def test_objects_no_peer_needs_are_unexpected() -> None:
    kernel = KernelState.of([entry(2)])
    kernel.routes["10.244.250.0/24"] = "10.244.250.0"
    kernel.neighs["10.244.250.0"] = mac(0xFA)
    kernel.fdb.add((mac(0xFA), "198.18.0.250"))
    got = classify_diff({"k2": entry(2)}, kernel)
    assert got["missing"] == [] and got["wrong"] == []
    assert [(i["kind"], i["peer"], i["text"]) for i in got["unexpected"]] == [
        ("route", "", "10.244.250.0/24 via 10.244.250.0"),
        ("fdb", "", f"{mac(0xFA)} dst 198.18.0.250"),
        ("neigh", "", f"10.244.250.0 lladdr {mac(0xFA)}"),
    ]


def test_peer_whose_mac_changed_shows_wrong_neigh_missing_fdb_unexpected_old_fdb() -> None:
    old = PeerEntry("10.244.2.0/24", "10.244.2.0", "0e:aa:aa:aa:aa:aa", "198.18.0.2")
    got = classify_diff({"k2": entry(2)}, KernelState.of([old]))
    assert [i["kind"] for i in got["wrong"]] == ["neigh"]
    assert [(i["kind"], i["mac"]) for i in got["missing"]] == [("fdb", mac(2))]
    assert [(i["kind"], i["mac"]) for i in got["unexpected"]] == [("fdb", "0e:aa:aa:aa:aa:aa")]


# --- peers and this node's lease -----------------------------------------------------------------


def test_desired_peers_follow_the_daemons_rules() -> None:
    own = lease(1)
    same_subnet = lease(1, vtep_mac=mac(0x11))  # another key for our subnet: ours, not a peer
    leases = [
        (own.key, own),
        ("other-key-of-ours", same_subnet),
        (lease(2).key, lease(2)),
        ("bad-mac", lease(3, vtep_mac="ff:ff:ff:ff:ff:ff")),
        ("host-gw", lease(4, backend="host-gw")),
        ("outside", Lease(ipaddress.IPv4Network("10.9.0.0/24"), None, lease(5).attrs)),
        ("overlap", Lease(ipaddress.IPv4Network("10.244.0.0/23"), None, lease(6).attrs)),
    ]
    entries, skipped = desired_peers(leases, own.key, own.subnet, NET)
    assert entries == {lease(2).key: entry(2)}
    reasons = {s["key"]: s["reason"] for s in skipped}
    assert set(reasons) == {"bad-mac", "host-gw", "outside", "overlap"}
    assert "unicast" in reasons["bad-mac"]
    assert "host-gw" in reasons["host-gw"]
    assert "outside" in reasons["outside"]
    assert "overlaps" in reasons["overlap"]


def test_own_lease_found_from_subnet_env_first() -> None:
    leases = [(lease(i).key, lease(i)) for i in (1, 2)]
    found, how = find_own_lease(leases, ipaddress.IPv4Network("10.244.2.0/24"), ["10.244.1.0/32"])
    assert found is not None and found[0] == "10.244.2.0-24" and "subnet.env" in how
    found, how = find_own_lease(leases, ipaddress.IPv4Network("10.244.7.0/24"))
    assert found is None and "10.244.7.0/24" in how


def test_own_lease_found_without_subnet_env() -> None:
    leases = [(lease(i).key, lease(i)) for i in (1, 2, 3)]
    assert find_own_lease(leases, None, ["10.244.3.0/32"])[0] == ("10.244.3.0-24", lease(3))
    assert find_own_lease(leases, None, [], mac(2))[0] == ("10.244.2.0-24", lease(2))
    assert find_own_lease(leases, None, [], None, "198.18.0.1")[0] == ("10.244.1.0-24", lease(1))
    found, how = find_own_lease(leases, None, [], "0e:12:34:56:78:9a", "198.18.0.99")
    assert found is None and "subnet.env is missing" in how and "198.18.0.99" in how


# --- the report ----------------------------------------------------------------------------------


REPORT_KEYS = {"lease", "subnet_env", "device", "peers", "diff", "daemon", "problems", "in_sync"}


def test_healthy_node_reports_in_sync_and_exit_0() -> None:
    report = build_report(healthy(), now=1_700_000_100.0)
    assert report.keys() >= REPORT_KEYS
    assert set(report["diff"]) >= {"missing", "wrong", "unexpected"}
    assert report["problems"] == [] and report["in_sync"] is True and exit_code(report) == 0
    assert report["peers"]["count"] == 2
    lease_ = report["lease"]
    assert (lease_["subnet"], lease_["public_ip"], lease_["vtep_mac"]) == (
        "10.244.1.0/24",
        "198.18.0.1",
        OWN_MAC,
    )
    assert lease_["expires_at"] == 1_700_000_100.0 + 3600 and lease_["ttl"] == 3600.0
    assert report["device"]["mtu"] == 1450 and report["device"]["vni"] == 1
    json.dumps(report)  # JSON-ready
    text = render_text(report, now=1_700_000_100.0)
    for want in (
        "10.244.1.0/24 (key 10.244.1.0-24)",
        "198.18.0.1",
        OWN_MAC,
        "in sync",
        "FLANNEL_MTU=1450",
        "4242 (running)",
        "OK: in sync and healthy",
    ):
        assert want in text


def test_out_of_sync_is_listed_and_exit_1() -> None:
    kernel = KernelState.of([entry(2), entry(3)])
    del kernel.routes["10.244.3.0/24"]
    kernel.routes["10.244.250.0/24"] = "10.244.250.0"
    report = build_report(healthy(kernel=kernel))
    assert report["in_sync"] is False and exit_code(report) == 1
    assert [i["dst"] for i in report["diff"]["missing"]] == ["10.244.3.0/24"]
    assert [i["dst"] for i in report["diff"]["unexpected"]] == ["10.244.250.0/24"]
    assert any("out of sync" in p for p in report["problems"])
    text = render_text(report)
    assert "OUT OF SYNC" in text
    assert "missing    route  10.244.3.0-24     10.244.3.0/24 via 10.244.3.0" in text
    assert "unexpected route  -                 10.244.250.0/24 via 10.244.250.0" in text


def test_reservation_never_expires_and_kube_lease_has_no_expiry() -> None:
    obs = healthy()
    assert obs.own is not None
    obs.own.lease_id, obs.own.ttl = 0, None
    assert build_report(obs)["lease"]["expires"] == "never"
    assert build_report(obs)["lease"]["reservation"] is True
    obs.own.lease_id = 7  # an etcd lease that is gone
    report = build_report(obs)
    assert report["lease"]["expires"].startswith("expired")
    assert any("has expired" in p for p in report["problems"])
    kube = healthy(mode="kube", node="node1")
    assert kube.own is not None
    kube.own.key, kube.own.ttl = "node1", None
    assert build_report(kube)["lease"]["expires"] == "no expiry (podCIDR)"


def problems_of(**changes: Any) -> list[str]:
    report = build_report(healthy(**changes))
    assert exit_code(report) == (1 if report["problems"] else 0)
    return list(report["problems"])


def only(problems: list[str], needle: str) -> str:
    found = [p for p in problems if needle in p]
    assert len(found) == 1, problems
    return found[0]


def test_subnet_env_missing_is_explained() -> None:
    text = only(problems_of(env=None), "subnet.env missing")
    assert "/run/flannel/subnet.env does not exist" in text and "CNI plugin" in text


def test_subnet_env_for_another_subnet_is_explained() -> None:
    env = {**healthy().env, "FLANNEL_SUBNET": "10.244.9.1/24"}  # type: ignore[dict-item]
    only(problems_of(env=env), "lease is 10.244.1.0/24")


def test_no_lease_is_explained() -> None:
    why = "no lease for this node in the datastore (subnet.env names 10.244.1.0/24; ...)"
    assert only(problems_of(own=None, own_error=why), "no lease for this node") == why


def test_pod_cidr_not_assigned_is_explained() -> None:
    why = "podCIDR not assigned: node 'node1' has no spec.podCIDR ..."
    probs = problems_of(mode="kube", node="node1", own=None, own_error=why)
    assert only(probs, "podCIDR not assigned") == why


def test_interface_and_device_missing_are_explained() -> None:
    probs = problems_of(
        device=None,
        kernel=None,
        device_addresses=[],
        lower=None,
        iface_error="none of the interfaces given by --iface exist: eth9",
    )
    assert "eth9" in only(probs, "interface not found:")
    assert "flannel.1 does not exist" in only(probs, "device missing")
    gone = problems_of(lower=None, lower_name=None)  # the device's underlay link was deleted
    assert "index 2" in only(gone, "interface not found:")


def test_mtu_mismatches_are_explained() -> None:
    probs = problems_of(device=link(mtu=1400))
    pods = only(probs, "pods get MTU 1450")
    assert "flannel.1 has MTU 1400" in pods and "dropped" in pods
    assert "should have 1450" in only(probs, "eth0 MTU 1500 minus 50")
    br = LinkState(index=9, mac="02:00:00:00:00:0a", mtu=1400, kind="bridge", up=True)
    assert "FLANNEL_MTU in subnet.env is 1450" in only(problems_of(cni_bridge=br), "cni0")


def test_device_differences_are_explained() -> None:
    only(problems_of(device=link(mac="0e:00:00:00:00:77")), "publishes VTEP MAC")
    only(problems_of(device=link(up=False)), "is down")
    only(problems_of(device=link(port=4789)), "UDP port 4789")
    only(problems_of(device_addresses=[]), "lacks its VTEP address 10.244.1.0/32")
    only(problems_of(device=link(local="198.18.0.99")), "sends from 198.18.0.99")


def test_datastore_unreachable_still_shows_the_kernel() -> None:
    obs = healthy(
        datastore_error="etcd: ConnectionFailedError: etcd connection failed",
        config=None,
        leases=[],
        own=None,
    )
    report = build_report(obs)
    text = only(report["problems"], "datastore unreachable")
    assert "etcd at http://198.18.0.254:2379" in text and "ConnectionFailedError" in text
    assert report["diff"]["checked"] is False and report["in_sync"] is False
    assert exit_code(report) == 1
    assert report["device"]["exists"] and report["device"]["mtu"] == 1450
    assert "UNREACHABLE" in render_text(report)


def test_daemon_state_is_shown_and_a_dead_daemon_warned_about() -> None:
    state = {
        "pid": 4242,
        "ready": True,
        "last_full_sync": 1_700_000_000.0,
        "last_error": {"time": 1_700_000_050.0, "message": "etcd watch interrupted"},
    }
    report = build_report(healthy(state=state, daemon_alive=False))
    assert report["daemon"]["last_error"]["message"] == "etcd watch interrupted"
    assert report["daemon"]["running"] is False
    assert any("4242) is not running" in w for w in report["warnings"])
    assert exit_code(report) == 0  # in sync: the kernel is fine while the daemon is down
    text = render_text(report, now=1_700_000_100.0)
    assert "4242 (NOT RUNNING)" in text and "etcd watch interrupted" in text
    assert "(100 s ago)" in text


def test_pid_alive_checks_the_program() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "flanneld"])
    try:
        assert status.pid_alive(proc.pid) is True
    finally:
        proc.kill()
        proc.wait()
    assert status.pid_alive(proc.pid) is False
    assert status.pid_alive(os.getpid()) is False  # a pid reused by another program
    zombie = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "flanneld"])
    try:
        zombie.kill()  # exited but not reaped: still in the process table
        wait_for("a zombie", lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split()[2] == "Z")
        assert status.pid_alive(zombie.pid) is False
    finally:
        zombie.wait()
    assert status.pid_alive("x") is None


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--no-such-flag"],
        ["extra"],
        ["--etcd-endpoints=ftp://x"],
        ["--json=maybe"],
        ["--kube-subnet-mgr", "--kube-annotation-prefix=NoDots"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main(argv) == 2
    assert capsys.readouterr().err.startswith("flanneld-py status: ")


def test_version_prints_the_version_without_checking(capsys: pytest.CaptureFixture[str]) -> None:
    from flanneld_py import __version__

    assert status.main(["--version", "--etcd-endpoints=http://198.51.100.1:2379"]) == 0
    out = capsys.readouterr()
    assert out.err.strip() == __version__ and out.out == ""


def test_help_and_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from flanneld_py.cli import main

    assert main(["status", "--help"]) == 0
    assert "--json" in capsys.readouterr().out
    seen: list[Any] = []

    def fake_collect(opts: Any) -> Observed:
        seen.append(opts)
        return healthy()

    monkeypatch.setattr(status, "collect", fake_collect)
    assert main(["status", "--json", "--subnet-file=/x/subnet.env", "--etcd-prefix=/p"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report.keys() >= REPORT_KEYS and report["in_sync"] is True
    assert (seen[0].subnet_file, seen[0].etcd_prefix) == ("/x/subnet.env", "/p")


# --- integration: the command in a node's namespace ----------------------------------------------


def run_status(tb: Testbed, node: Node, *extra: str) -> subprocess.CompletedProcess[str]:
    """`flanneld-py status` in the node's namespace with the flags the testbed gives its daemon."""
    env = [f"PYTHONPATH={REPO}"]
    flags = [f"--subnet-file={node.subnet_file}"]
    if tb.kubeapi is not None:
        env.append(f"NODE_NAME={node.name}")
        flags += [
            "--kube-subnet-mgr",
            f"--kubeconfig-file={tb.workdir / 'kubeconfig'}",
            f"--net-config-path={tb.workdir / 'net-conf.json'}",
        ]
    else:
        url = ETCD_URL if 4 in tb.families else ETCD_URL6  # as the testbed's daemons
        flags += [f"--etcd-endpoints={url}", f"--etcd-prefix={tb.etcd_prefix}"]
    return tb.node_sh(
        node,
        "env",
        *env,
        sys.executable,
        "-m",
        "flanneld_py",
        "status",
        *flags,
        *extra,
        check=False,
    )


def run_json(tb: Testbed, node: Node) -> tuple[int, dict[str, Any]]:
    res = run_status(tb, node, "--json")
    assert res.stdout.startswith("{"), res.stderr
    return res.returncode, json.loads(res.stdout)


@pytest.fixture
def two_nodes(testbed: Testbed) -> Iterator[tuple[Testbed, Node, Node]]:
    """Two etcd-mode nodes in sync; the first one's daemon stopped (the kernel stays)."""
    node, peer = testbed.start_nodes(2)
    assert testbed.stop_daemon(node) == 0
    yield testbed, node, peer


@pytest.mark.kernel
def test_in_sync_node_shows_lease_and_peers_exit_0(testbed: Testbed) -> None:
    nodes = testbed.start_nodes(3)
    node = nodes[0]
    testbed.add_pod(node)  # creates cni0
    res = run_status(testbed, node)
    assert res.returncode == 0, res.stdout + res.stderr
    subnet = testbed.subnet_of(node)
    for want in (
        f"{subnet} (key {subnet.replace('/', '-')})",
        testbed.vtep_mac(node),
        node.address,
        "Peers         2",
        "Datapath      in sync",
    ):
        assert want in res.stdout
    code, report = run_json(testbed, node)
    assert code == 0 and report["in_sync"] is True and report["problems"] == []
    assert report["lease"]["subnet"] == subnet
    assert report["lease"]["vtep_mac"] == testbed.vtep_mac(node)
    assert report["lease"]["public_ip"] == node.address
    assert 0 < report["lease"]["ttl"] <= 24 * 3600
    assert report["peers"]["count"] == 2
    assert report["device"]["name"] == "flannel.1" and report["device"]["mtu"] == 1450
    assert report["device"]["vni"] == 1 and report["device"]["port"] == 8472
    assert report["cni_bridge"]["mtu"] == 1450
    assert report["subnet_env"]["values"]["FLANNEL_SUBNET"] == node.subnet_env()["FLANNEL_SUBNET"]


@pytest.mark.kernel
def test_deleted_route_is_missing_while_the_daemon_is_stopped(
    two_nodes: tuple[Testbed, Node, Node],
) -> None:
    tb, node, peer = two_nodes
    subnet = tb.subnet_of(peer)
    assert run_status(tb, node).returncode == 0  # works with the daemon down
    tb.node_sh(node, "ip", "route", "del", subnet, "dev", "flannel.1")
    res = run_status(tb, node)
    assert res.returncode == 1
    assert f"missing    route  {subnet.replace('/', '-'):<18}{subnet} via" in res.stdout
    assert tb.subnet_of(node) in res.stdout  # the lease is still shown
    code, report = run_json(tb, node)
    assert code == 1 and report["in_sync"] is False
    assert [(i["kind"], i["dst"], i["gateway"]) for i in report["diff"]["missing"]] == [
        ("route", subnet, subnet.split("/")[0])
    ]
    assert report["diff"]["wrong"] == [] and report["diff"]["unexpected"] == []
    if report["daemon"]["found"]:
        assert report["daemon"]["running"] is False


@pytest.mark.kernel
def test_stale_route_is_unexpected_and_changed_neighbour_wrong(
    two_nodes: tuple[Testbed, Node, Node],
) -> None:
    tb, node, peer = two_nodes
    tb.node_sh(
        node,
        "ip",
        "route",
        "add",
        "10.244.250.0/24",
        "via",
        "10.244.250.0",
        "dev",
        "flannel.1",
        "onlink",
    )
    vtep_ip = tb.subnet_of(peer).split("/")[0]
    tb.node_sh(
        node,
        "ip",
        "neigh",
        "replace",
        vtep_ip,
        "lladdr",
        "0e:12:34:56:78:9a",
        "dev",
        "flannel.1",
        "nud",
        "permanent",
    )
    res = run_status(tb, node)
    assert res.returncode == 1
    assert "unexpected route  -                 10.244.250.0/24 via 10.244.250.0" in res.stdout
    _code, report = run_json(tb, node)
    assert [(i["kind"], i["dst"]) for i in report["diff"]["unexpected"]] == [
        ("route", "10.244.250.0/24")
    ]
    assert [(i["kind"], i["ip"], i["mac"], i["kernel_mac"]) for i in report["diff"]["wrong"]] == [
        ("neigh", vtep_ip, tb.vtep_mac(peer), "0e:12:34:56:78:9a")
    ]
    assert report["diff"]["missing"] == []


@pytest.mark.kernel
def test_removed_subnet_env_is_explained(testbed: Testbed) -> None:
    node, _ = testbed.start_nodes(2)
    node.subnet_file.unlink()
    res = run_status(testbed, node)
    assert res.returncode == 1
    assert f"subnet.env missing: {node.subnet_file} does not exist" in res.stdout
    _code, report = run_json(testbed, node)
    assert report["subnet_env"]["exists"] is False
    assert report["lease"]["found"] is True  # found through the device's VTEP address
    assert report["in_sync"] is True  # the datapath itself is fine
    assert [p for p in report["problems"] if "subnet.env missing" in p]


@pytest.mark.kernel
def test_unreachable_etcd_is_named_and_the_kernel_still_shown(testbed: Testbed) -> None:
    node, _ = testbed.start_nodes(2)
    testbed.stop_etcd()
    start = time.monotonic()
    res = run_status(testbed, node)
    assert time.monotonic() - start < 30
    assert res.returncode == 1
    assert f"datastore unreachable: etcd at {ETCD_URL}:" in res.stdout
    _code, report = run_json(testbed, node)
    assert report["datastore"]["reachable"] is False
    assert report["device"]["exists"] is True and report["device"]["mtu"] == 1450
    assert report["diff"]["checked"] is False


@pytest.mark.kernel
def test_mtu_mismatch_and_missing_device_are_explained(
    two_nodes: tuple[Testbed, Node, Node],
) -> None:
    tb, node, _peer = two_nodes
    tb.add_pod(node)
    tb.node_sh(node, "ip", "link", "set", "cni0", "mtu", "1400")
    tb.node_sh(node, "ip", "link", "set", "flannel.1", "mtu", "1300")
    code, report = run_json(tb, node)
    assert code == 1
    probs = report["problems"]
    assert [p for p in probs if "pods get MTU 1450" in p and "flannel.1 has MTU 1300" in p]
    assert [p for p in probs if "cni0 has MTU 1400" in p]
    tb.node_sh(node, "ip", "link", "del", "flannel.1")
    res = run_status(tb, node)
    assert res.returncode == 1
    assert "device missing: flannel.1 does not exist" in res.stdout
    code, report = run_json(tb, node)
    assert {i["kind"] for i in report["diff"]["missing"]} == {"neigh", "fdb", "route"}


@pytest.mark.kernel
@pytest.mark.kube
def test_kube_node_in_sync_exit_0(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node, _ = tb.start_nodes(2)
    res = run_status(tb, node)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lease (node node1)" in res.stdout and "no expiry (podCIDR)" in res.stdout
    code, report = run_json(tb, node)
    assert code == 0 and report["in_sync"] is True and report["problems"] == []
    assert (report["lease"]["node"], report["lease"]["subnet"]) == ("node1", "10.244.1.0/24")
    assert report["lease"]["vtep_mac"] == tb.vtep_mac(node)
    assert report["peers"]["count"] == 1


@pytest.mark.kernel
@pytest.mark.kube
def test_kube_pod_cidr_not_assigned_is_explained(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node = tb.add_node(pod_cidr=False)  # the namespace only: no Node object yet
    res = run_status(tb, node)
    assert res.returncode == 1
    assert "no lease for this node: node 'node1' does not exist in the API server" in res.stdout
    assert tb.kubeapi is not None
    tb.kubeapi.add_node(node.name, internal_ip=node.address)  # registered, no podCIDR
    res = run_status(tb, node)
    assert res.returncode == 1
    assert "podCIDR not assigned: node 'node1' has no spec.podCIDR" in res.stdout
    assert "device missing" in res.stdout


# --- host-gw and VXLAN DirectRouting (pure) -----------------------------------------------------

HOSTGW_CFG = NetworkConfig(network=NET, backend_type="host-gw", backend={"Type": "host-gw"})
DR_CFG = NetworkConfig(
    network=NET, backend_type="vxlan", backend={"Type": "vxlan", "DirectRouting": True}
)


def hostgw_lease(i: int) -> Lease:
    """A host-gw node's lease as flanneld writes it: public IP, backend type, no backend data."""
    attrs = LeaseAttrs(public_ip=ipaddress.IPv4Address(f"198.18.0.{i}"), backend_type="host-gw")
    return Lease(ipaddress.IPv4Network(f"10.244.{i}.0/24"), None, attrs, lease_id=7)


def direct(i: int) -> PeerEntry:
    return PeerEntry.direct_route(f"10.244.{i}.0/24", f"198.18.0.{i}")


def host_gw(**changes: Any) -> Observed:
    """A host-gw node (node 1) in sync with two peers (nodes 2 and 3): no device, the routes on
    eth0, FLANNEL_MTU the interface's."""
    own = hostgw_lease(1)
    leases = [(x.key, x) for x in (own, hostgw_lease(2), hostgw_lease(3))]
    obs = healthy(
        config=HOSTGW_CFG,
        leases=leases,
        own=OwnLease(own.key, own.subnet, "198.18.0.1", None, "host-gw", lease_id=7, ttl=3600.0),
        env={**healthy().env, "FLANNEL_MTU": "1500"},  # type: ignore[dict-item]
        device=None,
        device_addresses=[],
        lower=None,
        lower_name=None,
        iface=LinkState(index=2, mac="02:00:00:00:00:09", mtu=1500, kind="veth", up=True),
        iface_addr="198.18.0.1",
        kernel=KernelState.of([direct(2), direct(3)]),
        cni_bridge=LinkState(index=9, mac="02:00:00:00:00:0a", mtu=1500, kind="bridge", up=True),
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


def test_host_gw_node_in_sync_has_no_device_and_direct_peers() -> None:
    report = build_report(host_gw(), now=1_700_000_100.0)
    assert report["problems"] == [] and report["in_sync"] is True and exit_code(report) == 0
    assert report["network"]["backend_type"] == "host-gw"
    assert report["device"]["needed"] is False and report["device"]["exists"] is False
    assert (report["interface"]["name"], report["interface"]["mtu"]) == ("eth0", 1500)
    peers = report["peers"]
    assert (peers["count"], peers["direct"], peers["overlay"]) == (2, 2, 0)
    assert peers["entries"][0] == {
        "key": "10.244.2.0-24",
        "subnet": "10.244.2.0/24",
        "public_ip": "198.18.0.2",
        "kind": "direct",
    }
    json.dumps(report)
    text = render_text(report, now=1_700_000_100.0)
    for want in (
        "backend host-gw",
        "Device        none (backend host-gw: a route per peer via its public IP on eth0)",
        "Interface     eth0",
        "Peers         2 (2 direct, 0 overlay)",
        "  direct   10.244.2.0/24       via 198.18.0.2       10.244.2.0-24",
        "Datapath      in sync (2 peers: 2 x route via public IP)",
        "OK: in sync and healthy",
    ):
        assert want in text, text
    assert "VTEP MAC" not in text and "device missing" not in text


def test_host_gw_drift_is_classified_as_direct_routes() -> None:
    kernel = KernelState(direct={"10.244.3.0/24": "198.18.0.77", "10.244.250.0/24": "198.18.0.9"})
    report = build_report(host_gw(kernel=kernel))
    assert exit_code(report) == 1
    d = report["diff"]
    assert [(i["kind"], i["peer"], i["dst"], i["gateway"]) for i in d["missing"]] == [
        ("direct", "10.244.2.0-24", "10.244.2.0/24", "198.18.0.2")
    ]
    assert [(i["kind"], i["gateway"], i["kernel_gateway"]) for i in d["wrong"]] == [
        ("direct", "198.18.0.3", "198.18.0.77")
    ]
    assert [(i["kind"], i["dst"]) for i in d["unexpected"]] == [("direct", "10.244.250.0/24")]
    assert any("the kernel's routes differ" in p for p in report["problems"])
    text = render_text(report)
    assert "missing    direct 10.244.2.0-24     10.244.2.0/24 via 198.18.0.2" in text


def test_host_gw_skips_vxlan_peers_and_explains_its_own_failures() -> None:
    obs = host_gw()
    obs.leases.append((lease(4).key, lease(4)))  # a vxlan node: the daemon ignores it
    report = build_report(obs)
    assert report["in_sync"] is True and report["peers"]["count"] == 2
    assert [s["key"] for s in report["peers"]["skipped"]] == [lease(4).key]
    assert "not host-gw" in report["peers"]["skipped"][0]["reason"]
    nat = build_report(host_gw(iface_addr="198.18.0.5"))["problems"]
    assert "probably behind NAT" in only(nat, "this node's lease:")
    mtu = build_report(host_gw(iface=LinkState(2, "02:00:00:00:00:09", 1400, "veth", True)))
    assert "eth0 has MTU 1400" in only(mtu["problems"], "pods get MTU 1500")
    down = build_report(host_gw(iface=LinkState(2, "02:00:00:00:00:09", 1500, "veth", False)))
    only(down["problems"], "eth0 is down")
    gone = build_report(
        host_gw(iface=None, iface_name=None, iface_addr=None, kernel=None, iface_error="no eth0")
    )
    assert gone["diff"]["checked"] is False and exit_code(gone) == 1
    only(gone["problems"], "interface not found: no eth0")
    own = host_gw()
    assert own.own is not None
    own.own.public_ip = None
    only(build_report(own)["problems"], "does not publish a public IP")


def dr(**changes: Any) -> Observed:
    """A vxlan node with DirectRouting: peer 2 directly reachable (a direct route), peer 3 not
    (the overlay trio), both in sync."""
    obs = healthy(
        config=DR_CFG,
        direct_ips={"198.18.0.1": True, "198.18.0.2": True, "198.18.0.3": False},
        kernel=KernelState.of([direct(2), entry(3)]),
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


def test_direct_routing_node_in_sync_with_direct_and_overlay_peers() -> None:
    report = build_report(dr())
    assert report["problems"] == [] and report["in_sync"] is True and exit_code(report) == 0
    assert report["network"]["direct_routing"] is True
    peers = report["peers"]
    assert (peers["direct"], peers["overlay"]) == (1, 1)
    assert {p["key"]: p["kind"] for p in peers["entries"]} == {
        "10.244.2.0-24": "direct",
        "10.244.3.0-24": "overlay",
    }
    text = render_text(report)
    for want in (
        "backend vxlan with DirectRouting",
        "Peers         2 (1 direct, 1 overlay)",
        "  direct   10.244.2.0/24       via 198.18.0.2       10.244.2.0-24",
        "  overlay  10.244.3.0/24       via 198.18.0.3       10.244.3.0-24",
        "in sync (2 peers: 1 x route via public IP; 1 x neighbour, FDB, route)",
    ):
        assert want in text, text
    # without DirectRouting in the config, the decisions are not used: all overlay
    plain = build_report(dr(config=CFG))
    assert plain["peers"]["direct"] == 0 and plain["in_sync"] is False


def test_direct_routing_peer_programmed_the_other_way_is_out_of_sync() -> None:
    report = build_report(dr(kernel=KernelState.of([entry(2), entry(3)])))
    d = report["diff"]
    assert [(i["kind"], i["dst"], i["gateway"]) for i in d["missing"]] == [
        ("direct", "10.244.2.0/24", "198.18.0.2")
    ]
    assert sorted(i["kind"] for i in d["unexpected"]) == ["fdb", "neigh", "route"]
    assert exit_code(report) == 1


def test_traffic_rules_missing_is_a_problem_and_unreadable_a_warning() -> None:
    present = {"mode": "iptables", "masquerade": False, "forward": True, "checked": True,
               "missing": [], "error": None}  # fmt: skip
    report = build_report(healthy(rules=present))
    assert report["rules"]["mode"] == "iptables" and exit_code(report) == 0
    assert "Traffic rules iptables (masquerade no, forward yes): present" in render_text(report)
    gone = {**present, "missing": ["filter -A FORWARD -j FLANNEL-FWD"]}
    report = build_report(healthy(rules=gone))
    assert "FLANNEL-FWD" in only(report["problems"], "traffic rules missing (iptables mode)")
    assert "  missing    filter -A FORWARD -j FLANNEL-FWD" in render_text(report)
    broken = {**present, "mode": "nftables", "checked": False, "error": "nft is not installed"}
    report = build_report(healthy(rules=broken))
    assert exit_code(report) == 0
    assert any("could not check the nftables rules" in w for w in report["warnings"])


# --- integration: host-gw and DirectRouting nodes ------------------------------------------------


@pytest.mark.kernel
@pytest.mark.etcd
def test_host_gw_node_in_sync_then_a_route_deleted_by_hand_is_missing(testbed: Testbed) -> None:
    from tests.test_hostgw import start_host_gw

    node, peer, third = start_host_gw(testbed, 3)
    res = run_status(testbed, node)
    assert res.returncode == 0, res.stdout + res.stderr
    for want in (
        "backend host-gw",
        "Device        none (backend host-gw: a route per peer via its public IP on eth0)",
        "Peers         2 (2 direct, 0 overlay)",
        "Datapath      in sync (2 peers: 2 x route via public IP)",
        "Traffic rules iptables (masquerade no, forward yes): present",
    ):
        assert want in res.stdout, res.stdout
    code, report = run_json(testbed, node)
    assert code == 0 and report["problems"] == [], report["problems"]
    assert report["network"]["backend_type"] == "host-gw"
    assert report["device"]["needed"] is False and report["device"]["exists"] is False
    assert (report["interface"]["name"], report["interface"]["mtu"]) == ("eth0", 1500)
    assert report["lease"]["public_ip"] == node.address and report["lease"]["vtep_mac"] is None
    assert sorted((p["subnet"], p["public_ip"], p["kind"]) for p in report["peers"]["entries"]) == (
        sorted((testbed.subnet_of(n), n.address, "direct") for n in (peer, third))
    )
    assert report["rules"]["missing"] == []
    # the daemon stopped (it would put the route back within 10 s), a route deleted by hand
    assert testbed.stop_daemon(node) == 0
    subnet = testbed.subnet_of(peer)
    testbed.node_sh(node, "ip", "route", "del", subnet)
    res = run_status(testbed, node)
    assert res.returncode == 1
    key = subnet.replace("/", "-")
    assert f"missing    direct {key:<18}{subnet} via {peer.address}" in res.stdout, res.stdout
    code, report = run_json(testbed, node)
    assert code == 1 and report["in_sync"] is False
    assert [(i["kind"], i["dst"], i["gateway"]) for i in report["diff"]["missing"]] == [
        ("direct", subnet, peer.address)
    ]
    assert report["diff"]["wrong"] == [] and report["diff"]["unexpected"] == []
    assert [p for p in report["problems"] if "the kernel's routes differ" in p]


@pytest.mark.kernel
@pytest.mark.etcd
def test_direct_routing_node_status_is_clean_with_direct_and_overlay_peers(
    testbed: Testbed,
) -> None:
    """n1 and n2 share 198.18.0.0/24 (direct), n3 is behind a router (overlay)."""
    from tests.testbed import start_direct_routing_nodes

    n1, n2, n3 = start_direct_routing_nodes(testbed)
    s2, s3 = testbed.subnet_of(n2), testbed.subnet_of(n3)
    want = f"{s2} via 198.18.0.2 dev eth0"
    wait_for("n1's direct route to n2", lambda: want in testbed.node_sh(n1, "ip", "route").stdout)
    wait_for("n1's overlay route to n3", lambda: s3 in testbed.routes(n1))

    def clean() -> subprocess.CompletedProcess[str] | None:
        r = run_status(testbed, n1)
        return r if r.returncode == 0 else None

    res = wait_for("n1's status clean", clean)
    assert res is not None
    k2, k3 = s2.replace("/", "-"), s3.replace("/", "-")
    for line in (
        "backend vxlan with DirectRouting",
        "Peers         2 (1 direct, 1 overlay)",
        f"  direct   {s2:<20}via {n2.address:<17}{k2}",
        f"  overlay  {s3:<20}via {n3.address:<17}{k3}",
        "Datapath      in sync (2 peers: 1 x route via public IP; 1 x neighbour, FDB, route)",
    ):
        assert line in res.stdout, res.stdout
    code, report = run_json(testbed, n1)
    assert code == 0 and report["problems"] == [], report["problems"]
    assert report["network"]["direct_routing"] is True
    assert {p["key"]: p["kind"] for p in report["peers"]["entries"]} == {
        k2: "direct",
        k3: "overlay",
    }
    # n3 sees both peers through the overlay
    code, report = run_json(testbed, n3)
    assert code == 0 and (report["peers"]["direct"], report["peers"]["overlay"]) == (0, 2)
    # a direct route deleted by hand while the daemon is stopped: missing, of kind direct
    assert testbed.stop_daemon(n1) == 0
    testbed.node_sh(n1, "ip", "route", "del", s2)
    code, report = run_json(testbed, n1)
    assert code == 1
    assert [(i["kind"], i["peer"], i["gateway"]) for i in report["diff"]["missing"]] == [
        ("direct", k2, n2.address)
    ]
    assert report["diff"]["unexpected"] == [] and report["diff"]["wrong"] == []


@pytest.mark.kernel
@pytest.mark.etcd
def test_traffic_rules_present_then_missing_in_both_modes(testbed: Testbed) -> None:
    node = testbed.add_node()
    testbed.start_daemon(node, "--ip-masq")
    testbed.wait_subnet(node)

    def rules_ok() -> dict[str, Any] | None:
        res = run_status(testbed, node, "--ip-masq", "--json")
        report: dict[str, Any] = json.loads(res.stdout)
        return report if res.returncode == 0 and report["rules"]["missing"] == [] else None

    report = wait_for("the iptables rules present", rules_ok)
    assert report is not None and report["rules"]["mode"] == "iptables"
    assert report["rules"]["masquerade"] is True and report["rules"]["forward"] is True
    assert testbed.stop_daemon(node) == 0
    testbed.node_sh(node, "iptables", "-t", "filter", "-F", "FLANNEL-FWD")
    res = run_status(testbed, node, "--ip-masq")
    assert res.returncode == 1
    assert "Traffic rules iptables (masquerade yes, forward yes): MISSING" in res.stdout
    network = "10.244.0.0/16"
    assert f"  missing    filter -A FLANNEL-FWD -s {network} -m comment" in res.stdout

    testbed.put_config(NFT_NETWORK)
    testbed.start_daemon(node, "--ip-masq")
    report = wait_for("the nftables rules present", rules_ok)
    assert report is not None and report["rules"]["mode"] == "nftables"
    assert testbed.stop_daemon(node) == 0
    testbed.node_sh(node, "nft", "delete", "chain", "ip", "flannel-ipv4", "forward")
    code, report = run_json(testbed, node)  # without --ip-masq: only the forward chain asked for
    assert code == 1 and report["rules"]["masquerade"] is False
    assert report["rules"]["missing"] == ["chain ip flannel-ipv4 forward"]
    assert [p for p in report["problems"] if "traffic rules missing (nftables mode)" in p]


def test_no_device_expected_when_the_daemon_last_ran_host_gw_and_the_config_is_unknown() -> None:
    unreadable: dict[str, Any] = {"datastore_error": "etcd: down", "config": None, "own": None}
    gw = host_gw(**unreadable, state={**(healthy().state or {}), "backend": "host-gw"})
    assert not [p for p in build_report(gw)["problems"] if "device missing" in p]
    vx = host_gw(**unreadable, state={**(healthy().state or {}), "backend": "vxlan"})
    only(build_report(vx)["problems"], "device missing")


@pytest.mark.kernel
@pytest.mark.kube
def test_kube_host_gw_node_in_sync_exit_0(kube_testbed: Testbed) -> None:
    from tests.test_hostgw import HOSTGW_NETWORK

    tb = kube_testbed
    (tb.workdir / "net-conf.json").write_text(HOSTGW_NETWORK)
    node, peer = (tb.add_node() for _ in range(2))
    for n in (node, peer):
        tb.start_daemon(n)
    for n in (node, peer):
        tb.wait_subnet(n)
    route = f"{tb.subnet_of(peer)} via {peer.address} dev eth0"
    wait_for("the route to the peer", lambda: route in tb.node_sh(node, "ip", "route").stdout)
    code, report = run_json(tb, node)
    assert code == 0 and report["problems"] == [], report["problems"]
    assert (report["lease"]["node"], report["network"]["backend_type"]) == ("node1", "host-gw")
    assert [(p["key"], p["kind"]) for p in report["peers"]["entries"]] == [("node2", "direct")]
    state_file = node.subnet_file.parent / "flanneld-py-state.json"
    wait_for("the backend in the state file",
             lambda: json.loads(state_file.read_text()).get("backend") == "host-gw")  # fmt: skip
