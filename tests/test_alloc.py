"""The `alloc` backend: a lease and subnet.env, no device, no peers (flannel `pkg/backend/alloc`).

Unit tests check what an alloc node publishes (byte for byte Go flanneld's lease value and Node
annotations), its MTU, its readiness and what the status command makes of it. The integration
tests run alloc daemons in testbed nodes against a real etcd and against the Kubernetes API
emulator, and check the leases in the datastore, subnet.env, and that the kernel was not touched.
"""

from __future__ import annotations

import ipaddress
import json
import signal
from typing import Any

import pytest

from backend import alloc
from flanneld_py.observe import Observer
from flanneld_py.status import Observed, OwnLease, build_report, exit_code, render_text
from subnet.annotations import AnnotationNames, node_to_lease, own_annotations
from subnet.config import SUPPORTED_BACKENDS, NetworkConfig, parse_config
from subnet.lease import Lease, LeaseAttrs
from tests.testbed import Node, Testbed, wait_for

ALLOC_NETWORK = '{"Network": "10.244.0.0/16", "Backend": {"Type": "alloc"}}'
NAMES = AnnotationNames.for_prefix()
P = "flannel.alpha.coreos.com/"


def go_value(public_ip: str) -> bytes:
    """The etcd value Go flanneld's alloc backend writes for a node with this public IP."""
    return f'{{"PublicIP":"{public_ip}","PublicIPv6":null}}'.encode()


# --- pure ----------------------------------------------------------------------------------------


def test_alloc_is_supported_and_parsed_from_the_config() -> None:
    assert "alloc" in SUPPORTED_BACKENDS and "vxlan" in SUPPORTED_BACKENDS
    cfg = parse_config(ALLOC_NETWORK)
    assert cfg.backend_type == alloc.BACKEND_TYPE == "alloc"


def test_lease_value_is_byte_identical_to_go_flanneld() -> None:
    attrs = alloc.lease_attrs("198.18.0.7")
    assert attrs.encode() == go_value("198.18.0.7")
    assert attrs.backend_type == "" and attrs.backend_data is None
    assert LeaseAttrs.decode(attrs.encode()) == attrs
    assert alloc.lease_attrs(ipaddress.IPv4Address("10.0.0.1")).encode() == go_value("10.0.0.1")
    with pytest.raises(ValueError):
        alloc.lease_attrs("2001:db8::1")


def test_pod_mtu_is_the_interface_mtu() -> None:
    assert alloc.pod_mtu(1500) == 1500
    assert alloc.pod_mtu(9000) == 9000
    with pytest.raises(ValueError):
        alloc.pod_mtu(0)


def test_kube_annotations_are_written_as_go_flanneld_writes_them_for_alloc() -> None:
    attrs = alloc.lease_attrs("198.18.0.3")
    node: dict[str, Any] = {
        "metadata": {"name": "n3", "annotations": {}},
        "spec": {"podCIDR": "10.244.3.0/24"},
    }
    patch = own_annotations(NAMES, node, attrs)
    assert patch == {
        P + "backend-type": "",
        P + "backend-data": "null",
        P + "kube-subnet-manager": "true",
        P + "public-ip": "198.18.0.3",
    }
    node["metadata"]["annotations"] = patch
    assert own_annotations(NAMES, node, attrs) == {}
    # and another node reads it back as a lease without backend data
    cfg = NetworkConfig(network=ipaddress.IPv4Network("10.244.0.0/16"), backend_type="alloc")
    lease = node_to_lease(node, NAMES, cfg)
    assert lease is not None and lease.attrs == attrs


def test_vxlan_without_backend_data_still_omits_it() -> None:
    attrs = LeaseAttrs(ipaddress.IPv4Address("198.18.0.3"), backend_type="vxlan")
    assert P + "backend-data" not in own_annotations(NAMES, {}, attrs)


def test_observer_is_ready_without_a_peer_sync(tmp_path: Any) -> None:
    obs = Observer(str(tmp_path / "subnet.env"), "vxlan", "etcd", 30.0)
    obs.backend("alloc")
    samples = [s for m in obs.metrics.registry.collect() for s in m.samples
               if s.name == "flannel_build_info"]  # fmt: skip
    assert [s.labels["backend"] for s in samples] == ["alloc"]
    assert obs.readiness() == (False, "subnet.env is not written yet")
    obs.subnet_env()
    obs.no_datapath()
    assert obs.readiness() == (True, "")
    assert obs.liveness() == (True, "")


def alloc_observed(**changes: Any) -> Observed:
    """Node 1 of an alloc network, lease and subnet.env in order, no device."""
    cfg = NetworkConfig(network=ipaddress.IPv4Network("10.244.0.0/16"), backend_type="alloc",
                        backend={"Type": "alloc"})  # fmt: skip
    own = Lease(ipaddress.IPv4Network("10.244.1.0/24"), None, alloc.lease_attrs("198.18.0.1"),
                lease_id=7)  # fmt: skip
    peer = Lease(ipaddress.IPv4Network("10.244.2.0/24"), None, alloc.lease_attrs("198.18.0.2"),
                 lease_id=8)  # fmt: skip
    obs = Observed(
        mode="etcd",
        endpoint="http://198.18.0.254:2379",
        subnet_file="/run/flannel/subnet.env",
        config=cfg,
        leases=[(own.key, own), (peer.key, peer)],
        own=OwnLease(own.key, own.subnet, "198.18.0.1", None, "", lease_id=7, ttl=3600.0),
        env={
            "FLANNEL_NETWORK": "10.244.0.0/16",
            "FLANNEL_SUBNET": "10.244.1.1/24",
            "FLANNEL_MTU": "1500",
            "FLANNEL_IPMASQ": "false",
        },
        iface_name="eth0",
        state={"pid": 4242, "ready": True, "peers": 0, "last_error": None},
        daemon_alive=True,
    )
    for key, value in changes.items():
        setattr(obs, key, value)
    return obs


def test_status_of_an_alloc_node_needs_no_device_and_no_peers() -> None:
    report = build_report(alloc_observed())
    assert report["problems"] == [] and report["warnings"] == []
    assert report["in_sync"] is True and exit_code(report) == 0
    assert report["peers"]["count"] == 0 and report["device"]["exists"] is False
    text = render_text(report)
    assert "backend alloc" in text and "Result        OK" in text


def test_status_of_an_alloc_node_without_public_ip_is_a_problem() -> None:
    obs = alloc_observed()
    assert obs.own is not None
    obs.own.public_ip = None
    report = build_report(obs)
    assert exit_code(report) == 1
    assert any("does not publish a public IP" in p for p in report["problems"])


def test_status_names_the_supported_backends_for_another_type() -> None:
    obs = alloc_observed()
    assert obs.config is not None
    obs.config = NetworkConfig(network=obs.config.network, backend_type="udp")
    problems = build_report(obs)["problems"]
    assert any("supports only vxlan and host-gw and alloc" in p for p in problems)


# --- integration ---------------------------------------------------------------------------------


def links(tb: Testbed, node: Node) -> list[str]:
    res = tb.node_sh(node, "ip", "-j", "link", "show")
    return [str(link["ifname"]) for link in json.loads(res.stdout)]


def routes(tb: Testbed, node: Node) -> list[str]:
    res = tb.node_sh(node, "ip", "-j", "-4", "route", "show", "table", "all")
    return sorted(str(r.get("dst")) for r in json.loads(res.stdout))


@pytest.mark.kernel
@pytest.mark.etcd
def test_alloc_daemons_lease_distinct_subnets_and_touch_no_kernel_state(
    testbed: Testbed,
) -> None:
    tb = testbed
    tb.put_config(ALLOC_NETWORK)
    nodes = [tb.add_node() for _ in range(3)]
    before = {node.name: (links(tb, node), routes(tb, node)) for node in nodes}
    for node in nodes:
        tb.start_daemon(node)
    for node in nodes:
        tb.wait_subnet(node)
    subnets = {node.name: tb.subnet_of(node) for node in nodes}
    assert len(set(subnets.values())) == 3, subnets
    leases = tb.leases()
    assert set(leases) == {s.replace("/", "-") for s in subnets.values()}
    for node in nodes:
        subnet = subnets[node.name]
        assert leases[subnet.replace("/", "-")] == go_value(node.address)
        first = ipaddress.ip_network(subnet).network_address + 1
        assert node.subnet_file.read_text() == (
            f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={first}/24\n"
            "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
        )
        # no flannel.<VNI>, no address, no route, nothing: the kernel is as the testbed made it
        assert (links(tb, node), routes(tb, node)) == before[node.name]
        assert not any(name.startswith("flannel") for name in links(tb, node))
        assert "peer added" not in node.log()
    # the key has a 24 h etcd lease
    key = f"{tb.etcd_prefix}/subnets/{subnets['node1'].replace('/', '-')}"
    _, meta = tb.client.get(key)
    ttl = int(tb.client.get_lease_info(meta.lease_id).TTL)
    assert 24 * 3600 - 60 < ttl <= 24 * 3600

    # a restarted daemon reuses its lease: same subnet, same value
    node = nodes[0]
    assert tb.stop_daemon(node, signal.SIGTERM) == 0
    tb.start_daemon(node)
    wait_for("the restart to reuse the lease", lambda: "reusing lease" in node.log())
    assert tb.subnet_of(node) == subnets[node.name]
    assert tb.leases()[subnets[node.name].replace("/", "-")] == go_value(node.address)

    # the own-lease watch runs: a deleted lease is taken again (the same subnet, it is free)
    tb.client.delete(key)
    wait_for("the lease to be re-acquired", lambda: tb.leases().get(key.rsplit("/", 1)[1]))
    assert tb.leases()[key.rsplit("/", 1)[1]] == go_value(node.address)
    assert all(n.process is not None and n.process.poll() is None for n in nodes)


@pytest.mark.kernel
@pytest.mark.kube
def test_alloc_in_kube_mode_publishes_flanneld_annotations_and_watches_nothing(
    kube_testbed: Testbed,
) -> None:
    tb = kube_testbed
    (tb.workdir / "net-conf.json").write_text(ALLOC_NETWORK)
    nodes = [tb.add_node() for _ in range(2)]
    for node in nodes:
        tb.start_daemon(node)
    for node in nodes:
        assert tb.wait_subnet(node) == f"10.244.{node.index}.1/24"
    assert tb.kubeapi is not None
    api = tb.kubeapi

    def condition(node: Node) -> dict[str, Any] | None:
        obj = api.get_node(node.name) or {}
        for c in obj.get("status", {}).get("conditions", []):
            if c["type"] == "NetworkUnavailable":
                return dict(c)
        return None

    for node in nodes:
        assert node.subnet_env()["FLANNEL_MTU"] == "1500"
        ann = (api.get_node(node.name) or {})["metadata"]["annotations"]
        assert ann == {
            P + "backend-type": "",
            P + "backend-data": "null",
            P + "kube-subnet-manager": "true",
            P + "public-ip": node.address,
        }
        cond = wait_for("NetworkUnavailable=False", lambda n=node: condition(n))  # type: ignore[misc]
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "FlannelIsUp")
        assert not any(name.startswith("flannel") for name in links(tb, node))
    # flanneld starts no Node informer for alloc: neither does flanneld-py
    assert ("watch", "nodes") not in api.api_calls() and ("list", "nodes") not in api.api_calls()
