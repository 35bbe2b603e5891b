"""Kubernetes mode end to end: flanneld-py daemons in node namespaces against the API emulator.

The emulator (tests/kubeapi.py) stands in for kube-apiserver, reached only through the official
client, with flannel's RBAC rights; the datapath, pods and CNI are real, as in test_overlay.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.testbed import Node, Testbed, wait_for

pytestmark = [pytest.mark.kernel, pytest.mark.kube]

P = "flannel.alpha.coreos.com/"


def node_annotations(tb: Testbed, node: Node) -> dict[str, str]:
    assert tb.kubeapi is not None
    obj = tb.kubeapi.get_node(node.name) or {}
    ann: dict[str, str] = obj["metadata"].get("annotations", {})
    return ann


def condition(tb: Testbed, node: Node, kind: str) -> dict[str, Any] | None:
    assert tb.kubeapi is not None
    obj = tb.kubeapi.get_node(node.name) or {}
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return dict(c)
    return None


def test_lease_comes_from_pod_cidr_and_annotations_match_flanneld(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    (node,) = tb.start_nodes(1)
    env = node.subnet_env()
    assert env["FLANNEL_SUBNET"] == "10.244.1.1/24"
    assert env["FLANNEL_NETWORK"] == "10.244.0.0/16"
    mac = tb.vtep_mac(node)
    assert node_annotations(tb, node) == {
        P + "backend-type": "vxlan",
        P + "backend-data": json.dumps({"VNI": 1, "VtepMAC": mac}, separators=(",", ":")),
        P + "kube-subnet-manager": "true",
        P + "public-ip": node.address,
    }
    wait_for("NetworkUnavailable=False", lambda: condition(tb, node, "NetworkUnavailable"))
    cond = condition(tb, node, "NetworkUnavailable")
    assert cond is not None and (cond["status"], cond["reason"]) == ("False", "FlannelIsUp")
    # only what flannel's ClusterRole allows was used
    from tests.kubeapi import FLANNEL_RULES

    assert tb.kubeapi is not None and tb.kubeapi.api_calls() <= FLANNEL_RULES


@pytest.mark.parametrize("count", [2, 3])
def test_pods_reach_each_other_in_kube_mode(kube_testbed: Testbed, count: int) -> None:
    nodes = kube_testbed.start_nodes(count)
    pods = [kube_testbed.add_pod(node) for node in nodes]
    assert kube_testbed.cross_node_ping_failures(pods) == []


def test_deleted_peer_node_loses_its_entries(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    nodes = tb.start_nodes(3)
    gone = nodes[2]
    subnet = tb.subnet_of(gone)
    mac = tb.vtep_mac(gone)
    tb.stop_daemon(gone)
    assert tb.kubeapi is not None
    tb.kubeapi.delete_node(gone.name)
    for node in nodes[:2]:
        wait_for(f"{subnet} to leave {node.name}", lambda: subnet not in tb.routes(node))  # noqa: B023
        assert (mac, gone.address) not in tb.fdb(node)
        assert subnet.split("/")[0] not in tb.neighbours(node)


def test_peer_annotation_change_is_followed(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node, peer = tb.start_nodes(2)
    old_mac = tb.vtep_mac(peer)
    vtep_ip = tb.subnet_of(peer).split("/")[0]
    new_mac = "0e:11:22:33:44:66"
    assert tb.kubeapi is not None
    tb.stop_daemon(peer)  # as if a Go flanneld on that node had published a new VTEP

    def set_mac(n: dict[str, Any]) -> None:
        n["metadata"]["annotations"][P + "backend-data"] = f'{{"VNI":1,"VtepMAC":"{new_mac}"}}'

    tb.kubeapi.update_node(peer.name, set_mac)
    wait_for("the new MAC", lambda: tb.neighbours(node).get(vtep_ip) == new_mac)
    wait_for("the new FDB entry", lambda: (new_mac, peer.address) in tb.fdb(node))
    assert (old_mac, peer.address) not in tb.fdb(node)


def test_pod_cidr_change_moves_the_peer_route(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node, peer = tb.start_nodes(2)
    assert tb.kubeapi is not None
    tb.stop_daemon(peer)

    def move(n: dict[str, Any]) -> None:
        n["spec"]["podCIDRs"] = ["10.244.77.0/24"]
        n["spec"]["podCIDR"] = "10.244.77.0/24"

    tb.kubeapi.update_node(peer.name, move)
    wait_for("the route to the new podCIDR", lambda: "10.244.77.0/24" in tb.routes(node))
    assert "10.244.2.0/24" not in tb.routes(node)


def test_watch_broken_by_410_relists_without_missing_changes(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    nodes = tb.start_nodes(3)
    assert tb.kubeapi is not None
    tb.stop_daemon(nodes[2])
    tb.kubeapi.expire_history()
    tb.kubeapi.delete_node(nodes[2].name)  # happens while node1's watch is being cut
    tb.kubeapi.drop_watches()
    wait_for("a re-list after 410", lambda: "410" in nodes[0].log())
    wait_for("the deleted node's route to go", lambda: "10.244.3.0/24" not in tb.routes(nodes[0]))
    assert "10.244.2.0/24" in tb.routes(nodes[0])


def test_malformed_annotations_are_skipped(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node, peer = tb.start_nodes(2)
    assert tb.kubeapi is not None
    tb.kubeapi.add_node(
        "bad-ip",
        pod_cidrs=["10.244.50.0/24"],
        annotations={
            P + "kube-subnet-manager": "true",
            P + "backend-type": "vxlan",
            P + "backend-data": '{"VNI":1,"VtepMAC":"0e:00:00:00:00:50"}',
            P + "public-ip": "x",
        },
    )
    tb.kubeapi.add_node(
        "bad-data",
        pod_cidrs=["10.244.51.0/24"],
        annotations={
            P + "kube-subnet-manager": "true",
            P + "backend-type": "vxlan",
            P + "backend-data": "{not json",
            P + "public-ip": "198.18.0.51",
        },
    )
    tb.kubeapi.add_node("good", pod_cidrs=["10.244.52.0/24"], annotations={
        P + "kube-subnet-manager": "true", P + "backend-type": "vxlan",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0e:00:00:00:00:52"}',
        P + "public-ip": "198.18.0.52"})  # fmt: skip
    wait_for("the good node's route", lambda: "10.244.52.0/24" in tb.routes(node))
    routes = tb.routes(node)
    assert "10.244.50.0/24" not in routes and "10.244.51.0/24" not in routes
    assert tb.subnet_of(peer) in routes
    log = node.log()
    assert "skipping node bad-ip" in log and "skipping node bad-data" in log
    assert node.process is not None and node.process.poll() is None


def test_node_without_pod_cidr_waits_then_starts(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node = tb.add_node(pod_cidr=False)
    assert tb.kubeapi is not None
    tb.kubeapi.add_node(node.name, internal_ip=node.address)
    tb.start_daemon(node)
    wait_for("the waiting message", lambda: "has no podCIDR yet" in node.log())
    assert "--allocate-node-cidrs" in node.log()
    assert not node.subnet_file.exists()
    assert node.process is not None and node.process.poll() is None

    def assign(n: dict[str, Any]) -> None:
        n["spec"]["podCIDR"] = "10.244.9.0/24"
        n["spec"]["podCIDRs"] = ["10.244.9.0/24"]

    tb.kubeapi.update_node(node.name, assign)
    assert tb.wait_subnet(node) == "10.244.9.1/24"


def test_node_without_pod_cidr_gives_up_after_the_wait(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node = tb.add_node(pod_cidr=False)
    assert tb.kubeapi is not None
    tb.kubeapi.add_node(node.name, internal_ip=node.address)
    tb.start_daemon(node, "--podcidr-wait=3")
    assert node.process is not None
    assert node.process.wait(timeout=60) == 1
    assert "gave up after 3 s" in node.log()


def test_missing_rbac_right_is_a_clear_error(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    assert tb.kubeapi is not None
    tb.kubeapi.add_token("flannel", [("get", "nodes"), ("list", "nodes"), ("watch", "nodes")])
    node = tb.add_node()
    tb.start_daemon(node)
    assert node.process is not None
    assert node.process.wait(timeout=60) == 1
    assert "nodes/status" in node.log()


def manifest_rules() -> set[tuple[str, str]]:
    """(verb, resource) pairs the deploy manifest's ClusterRole grants."""
    import yaml  # type: ignore[import-untyped]

    from tests.testbed import REPO

    docs = yaml.safe_load_all((REPO / "deploy" / "flanneld-py.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    return {(v, r) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}


def test_manifest_rbac_is_exactly_what_the_daemon_uses(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    assert tb.kubeapi is not None
    rules = manifest_rules()
    tb.kubeapi.add_token("flannel", rules)
    node = tb.add_node()
    tb.kubeapi.add_pod("kube-system", "flanneld-py-abcde", node_name=node.name)
    # as in the DaemonSet: the node is found through the daemon's own pod
    tb.start_daemon(node, env={"POD_NAME": "flanneld-py-abcde", "POD_NAMESPACE": "kube-system"})
    tb.wait_subnet(node)
    wait_for("NetworkUnavailable=False", lambda: condition(tb, node, "NetworkUnavailable"))
    wait_for("the node watch", lambda: ("watch", "nodes") in tb.kubeapi.api_calls())  # type: ignore[union-attr]
    assert tb.kubeapi.api_calls() == rules
    assert all(r.status < 400 for r in tb.kubeapi.requests)


def test_rebooted_node_keeps_its_vtep_mac(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    node, peer = tb.start_nodes(2)
    mac = tb.vtep_mac(node)
    tb.stop_daemon(node)
    tb.node_sh(node, "ip", "link", "del", "flannel.1")  # what a reboot does to the device
    tb.start_daemon(node)

    def device_back() -> bool:
        return tb.node_sh(node, "ip", "link", "show", "flannel.1", check=False).returncode == 0

    wait_for("flannel.1 to come back", device_back)
    assert tb.vtep_mac(node) == mac
    wait_for("the peer route again", lambda: tb.subnet_of(peer) in tb.routes(node))
    assert (mac, node.address) in tb.fdb(peer)


def test_public_ip_overwrite_and_node_public_ip(kube_testbed: Testbed) -> None:
    tb = kube_testbed
    assert tb.kubeapi is not None
    node = tb.add_node()
    tb.node_sh(node, "ip", "addr", "add", "198.18.0.101/24", "dev", "eth0")

    def annotate(n: dict[str, Any]) -> None:
        n["metadata"].setdefault("annotations", {}).update({
            P + "node-public-ip": "198.18.0.101",
            P + "public-ip-overwrite": "203.0.113.7",
        })  # fmt: skip

    tb.kubeapi.update_node(node.name, annotate)
    tb.start_daemon(node)
    tb.wait_subnet(node)
    # node-public-ip chose the address the tunnel uses; the overwrite is what peers are told
    info = json.loads(tb.node_sh(node, "ip", "-d", "-j", "link", "show", "flannel.1").stdout)[0]
    assert info["linkinfo"]["info_data"]["local"] == "198.18.0.101"
    assert node_annotations(tb, node)[P + "public-ip"] == "203.0.113.7"
