"""The overlay end to end: flanneld-py processes in node namespaces, a real etcd, real CNI pods.

Each test builds its own testbed (tests/testbed.py) and asserts what a cluster operator relies on:
pods reach each other across nodes; a departed node's entries go away; a changed peer is followed;
restarts keep the subnet and never remove peers' entries; concurrent starts never share a subnet;
bad data in etcd is skipped; a bad config stops the daemon with a message naming the field.
"""

from __future__ import annotations

import signal
import threading

import pytest

from subnet.lease import LeaseAttrs
from tests.testbed import Node, Testbed, wait_for

pytestmark = pytest.mark.kernel


def lease_key(tb: Testbed, node: Node) -> str:
    return tb.subnet_of(node).replace("/", "-")


def expected_entries(tb: Testbed, peer: Node) -> tuple[str, str, str, str]:
    """(subnet, VTEP IP, VTEP MAC, public IP) that other nodes must program for `peer`."""
    subnet = tb.subnet_of(peer)
    return subnet, subnet.split("/")[0], tb.vtep_mac(peer), peer.address


@pytest.mark.parametrize("count", [2, 3])
def test_pods_reach_each_other_across_nodes(testbed: Testbed, count: int) -> None:
    nodes = testbed.start_nodes(count)
    pods = [testbed.add_pod(node) for node in nodes]
    for node in nodes:
        env = node.subnet_env()
        assert env["FLANNEL_NETWORK"] == "10.244.0.0/16"
        assert env["FLANNEL_MTU"] == "1450"
        assert env["FLANNEL_IPMASQ"] == "false"
        for peer in nodes:
            if peer is node:
                continue
            subnet, vtep_ip, mac, public_ip = expected_entries(testbed, peer)
            assert subnet in testbed.routes(node)
            assert testbed.neighbours(node)[vtep_ip] == mac
            assert (mac, public_ip) in testbed.fdb(node)
    assert testbed.cross_node_ping_failures(pods) == []


def test_readyz_turns_200_once_subnet_env_is_written(testbed: Testbed) -> None:
    import urllib.request

    node = testbed.add_node()
    testbed.start_daemon(node, "--healthz-port=8081", f"--healthz-ip={node.address}")
    testbed.wait_subnet(node)

    def ready() -> bool:
        url = f"http://{node.address}:8081/readyz"
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(resp.status == 200)

    wait_for("/readyz 200", ready)


def test_pod_gets_address_in_node_subnet_and_del_releases_it(testbed: Testbed) -> None:
    (node,) = testbed.start_nodes(1)
    pod = testbed.add_pod(node)
    assert pod.ip.startswith(testbed.subnet_of(node).rsplit(".", 2)[0])
    saved = node.workdir / "cni-flannel" / pod.container_id
    assert saved.exists()
    testbed.del_pod(pod)
    assert not saved.exists()
    assert not (node.workdir / "cni-ipam" / "cbr0" / pod.ip).exists()


def test_departed_peer_loses_its_entries_on_the_others(testbed: Testbed) -> None:
    nodes = testbed.start_nodes(3)
    gone = nodes[2]
    subnet, vtep_ip, mac, public_ip = expected_entries(testbed, gone)
    key = lease_key(testbed, gone)
    assert testbed.stop_daemon(gone) == 0
    testbed.client.delete(f"{testbed.etcd_prefix}/subnets/{key}")
    for node in nodes[:2]:

        def route_gone(n: Node = node) -> bool:
            return subnet not in testbed.routes(n)

        wait_for(f"{subnet} to leave {node.name}", route_gone)
        assert vtep_ip not in testbed.neighbours(node)
        assert (mac, public_ip) not in testbed.fdb(node)
        # the remaining peer is untouched
        other = nodes[1] if node is nodes[0] else nodes[0]
        assert testbed.subnet_of(other) in testbed.routes(node)


def test_peer_mac_change_replaces_entries_and_drops_old_fdb(testbed: Testbed) -> None:
    nodes = testbed.start_nodes(2)
    peer = nodes[1]
    subnet, vtep_ip, old_mac, public_ip = expected_entries(testbed, peer)
    key = f"{testbed.etcd_prefix}/subnets/{lease_key(testbed, peer)}"
    value, _ = testbed.client.get(key)
    attrs = LeaseAttrs.decode(value)
    new_mac = "0e:11:22:33:44:55"
    changed = LeaseAttrs(attrs.public_ip, None, "vxlan", {"VNI": 1, "VtepMAC": new_mac})
    # as if a Go flanneld on that node had published a new VTEP; a running flanneld-py would
    # write its own lease back at once
    testbed.stop_daemon(peer)
    testbed.client.put(key, changed.encode())
    node = nodes[0]
    wait_for(
        "the new MAC in the neighbour entry",
        lambda: testbed.neighbours(node).get(vtep_ip) == new_mac,
    )
    wait_for("the new FDB entry", lambda: (new_mac, public_ip) in testbed.fdb(node))
    wait_for("the old FDB entry to go", lambda: (old_mac, public_ip) not in testbed.fdb(node))
    assert subnet in testbed.routes(node)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_keeps_subnet_and_never_removes_peer_entries(testbed: Testbed, sig: int) -> None:
    nodes = testbed.start_nodes(2)
    node, peer = nodes
    before_subnet = node.subnet_env()["FLANNEL_SUBNET"]
    before_mac = testbed.vtep_mac(node)
    peer_subnet = testbed.subnet_of(peer)
    samples: list[bool] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(peer_subnet in testbed.routes(node))
            stop.wait(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        code = testbed.stop_daemon(node, sig)
        assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
        testbed.start_daemon(node)
        wait_for(
            "the restarted daemon's first sync", lambda: node.log().count("datapath in sync") >= 2
        )
    finally:
        stop.set()
        sampler.join()
    assert samples and all(samples), "the peer's route disappeared during the restart"
    assert node.subnet_env()["FLANNEL_SUBNET"] == before_subnet
    assert testbed.vtep_mac(node) == before_mac
    assert "reusing lease" in node.log()
    pod_a, pod_b = testbed.add_pod(node), testbed.add_pod(peer)
    assert testbed.ping(pod_a, pod_b.ip, count=3)


def test_ten_daemons_started_at_once_get_distinct_subnets(testbed: Testbed) -> None:
    nodes = [testbed.add_node() for _ in range(10)]
    for node in nodes:
        testbed.start_daemon(node)
    subnets = [testbed.wait_subnet(node, timeout=120) for node in nodes]
    assert len(set(subnets)) == 10
    assert len(testbed.leases()) == 10
    testbed.wait_converged(timeout=120)


def test_malformed_leases_are_skipped_without_disturbing_others(testbed: Testbed) -> None:
    nodes = testbed.start_nodes(2)
    node, peer = nodes
    prefix = f"{testbed.etcd_prefix}/subnets"
    testbed.client.put(f"{prefix}/10.244.200.0-24", "this is not JSON")
    testbed.client.put(f"{prefix}/not-a-subnet-key", '{"PublicIP":"198.18.0.99"}')
    testbed.client.put(f"{prefix}/0.0.0.0-0", '{"PublicIP":"198.18.0.96"}')  # names no subnet
    testbed.client.put(
        f"{prefix}/10.244.201.0-24",
        '{"PublicIP":"198.18.0.98","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"not-a-mac"}}',
    )
    # a broken update of a live peer keeps that peer's last good entries
    peer_key = f"{prefix}/{lease_key(testbed, peer)}"
    testbed.client.put(peer_key, '{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":7}')
    # a valid lease written after the bad ones is still programmed: the watch went on
    good = LeaseAttrs.decode(
        b'{"PublicIP":"198.18.0.97","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:97"}}'
    )
    testbed.client.put(f"{prefix}/10.244.202.0-24", good.encode())
    wait_for("the valid lease's route", lambda: "10.244.202.0/24" in testbed.routes(node))
    assert testbed.subnet_of(peer) in testbed.routes(node)
    assert "10.244.200.0/24" not in testbed.routes(node)
    assert "10.244.201.0/24" not in testbed.routes(node)
    assert node.process is not None and node.process.poll() is None
    log = node.log()
    assert "10.244.200.0-24" in log and "10.244.201.0-24" in log
    # a restarted daemon lists the same bad keys and still starts
    testbed.stop_daemon(node)
    testbed.start_daemon(node)
    wait_for("the restarted daemon's sync", lambda: node.log().count("datapath in sync") >= 2)
    assert "10.244.202.0/24" in testbed.routes(node)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ('{"Network": "10.244.0.0/16", "SubnetLen": 31}', "SubnetLen"),
        ('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}', "Backend.Type"),
        ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": "one"}}', "VNI"),
    ],
)
def test_invalid_config_exits_nonzero_naming_the_field(
    testbed: Testbed, config: str, field: str
) -> None:
    testbed.put_config(config)
    node = testbed.add_node()
    testbed.start_daemon(node)
    assert node.process is not None
    code = node.process.wait(timeout=60)
    assert code == 1
    assert field in node.log()
    assert not node.subnet_file.exists()
