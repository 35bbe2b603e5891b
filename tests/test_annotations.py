"""Node annotations and pod CIDRs (kube mode), pure logic: names, conversions, what gets patched."""

from __future__ import annotations

import contextlib
import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnet.annotations import (
    AnnotationNames,
    AnnotationPrefixError,
    node_to_lease,
    normalize_prefix,
    own_annotations,
    pod_cidrs,
    stored_mac,
)
from subnet.config import parse_config
from subnet.lease import LeaseAttrs, LeaseFormatError

NAMES = AnnotationNames.for_prefix()
CFG = parse_config('{"Network": "10.244.0.0/16"}')
DUAL = parse_config(
    '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "2001:db8:42::/56"}'
)
P = "flannel.alpha.coreos.com/"


@pytest.mark.parametrize(
    ("prefix", "backend_type"),
    [
        ("flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type"),
        ("flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/backend-type"),
        ("flannel.alpha.coreos.com/prefix", "flannel.alpha.coreos.com/prefix-backend-type"),
        ("flannel.alpha.coreos.com/prefix-", "flannel.alpha.coreos.com/prefix-backend-type"),
        ("org.com", "org.com/backend-type"),
        ("org9.com", "org9.com/backend-type"),
        ("org.com/9", "org.com/9-backend-type"),
    ],
)
def test_valid_prefixes_normalise_as_flannel_does(prefix: str, backend_type: str) -> None:
    assert AnnotationNames.for_prefix(prefix).backend_type == backend_type


@pytest.mark.parametrize("prefix", ["org", "org/", "org/prefix", "org.COM", "org.com/PREFIX",
                                    "a.b/c/d"])  # fmt: skip
def test_invalid_prefixes_are_rejected_with_the_flag_name(prefix: str) -> None:
    with pytest.raises(AnnotationPrefixError, match="--kube-annotation-prefix"):
        normalize_prefix(prefix)


def node(name: str = "n2", cidrs: Any = None, cidr: Any = None, **ann: str) -> dict[str, Any]:
    """A Node dict with `ann` as flannel annotations (`backend_type` -> `.../backend-type`)."""
    spec: dict[str, Any] = {}
    if cidrs is not None:
        spec["podCIDRs"] = cidrs
    if cidr is not None:
        spec["podCIDR"] = cidr
    return {"metadata": {"name": name, "annotations": {P + k.replace("_", "-"): v
                                                        for k, v in ann.items()}},
            "spec": spec}  # fmt: skip


VXLAN = {
    "kube_subnet_manager": "true",
    "backend_type": "vxlan",
    "backend_data": '{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}',
    "public_ip": "198.18.0.2",
}


def test_managed_node_becomes_a_lease() -> None:
    lease = node_to_lease(node(cidrs=["10.244.2.0/24"], **VXLAN), NAMES, CFG)
    assert lease is not None
    assert str(lease.subnet) == "10.244.2.0/24" and lease.ipv6_subnet is None
    assert lease.attrs == LeaseAttrs(
        ipaddress.IPv4Address("198.18.0.2"),
        None,
        "vxlan",
        {"VNI": 1, "VtepMAC": "12:c6:65:89:b4:e3"},
    )


def test_pod_cidr_falls_back_to_the_single_field_and_splits_families() -> None:
    assert pod_cidrs(node(cidr="10.244.3.0/24")) == (ipaddress.ip_network("10.244.3.0/24"), None)
    v4, v6 = pod_cidrs(node(cidrs=["2001:db8:42:3::/64", "10.244.3.0/24"]))
    assert (str(v4), str(v6)) == ("10.244.3.0/24", "2001:db8:42:3::/64")
    with pytest.raises(LeaseFormatError, match="at most 2"):
        pod_cidrs(node(cidrs=["10.244.3.0/24", "10.244.4.0/24", "10.244.5.0/24"]))
    with pytest.raises(LeaseFormatError, match="n2"):
        pod_cidrs(node(cidrs=["10.244.3.1/24"]))


def test_unmanaged_or_cidrless_nodes_are_not_peers() -> None:
    unmanaged = {k: v for k, v in VXLAN.items() if k != "kube_subnet_manager"}
    assert node_to_lease(node(cidrs=["10.244.2.0/24"], **unmanaged), NAMES, CFG) is None
    assert node_to_lease(node(**VXLAN), NAMES, CFG) is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("public_ip", "not-an-ip", "public IP"),
        ("public_ip", "", "no flannel.alpha.coreos.com/public-ip"),
        ("backend_data", "{broken", "backend-data is not JSON"),
    ],
)
def test_malformed_annotations_name_the_node(field: str, value: str, message: str) -> None:
    with pytest.raises(LeaseFormatError, match=message) as err:
        node_to_lease(node(cidrs=["10.244.2.0/24"], **{**VXLAN, field: value}), NAMES, CFG)
    assert "'n2'" in str(err.value)


def test_dual_stack_node_carries_both_families() -> None:
    n = node(
        cidrs=["10.244.2.0/24", "2001:db8:42:2::/64"],
        **VXLAN,
        public_ipv6="2001:db8::2",
        backend_v6_data='{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}',
    )
    lease = node_to_lease(n, NAMES, DUAL)
    assert lease is not None
    assert str(lease.ipv6_subnet) == "2001:db8:42:2::/64"
    assert str(lease.attrs.public_ipv6) == "2001:db8::2"
    assert lease.attrs.backend_v6_data == {"VNI": 1, "VtepMAC": "12:c6:65:89:b4:e4"}
    # an IPv4-only config ignores the IPv6 half
    v4_only = node_to_lease(n, NAMES, CFG)
    assert v4_only is not None and v4_only.ipv6_subnet is None


def test_annotations_of_a_family_the_network_lacks_are_not_read() -> None:
    """flanneld (`pkg/subnet/kube` nodeToLease) reads public-ip and backend-data only with
    IPv4 enabled, public-ipv6 and backend-v6-data only with IPv6 enabled: junk in the other
    family's annotations does not cost the node."""
    junk6 = {"public_ipv6": "not-an-ip", "backend_v6_data": "{broken"}
    lease = node_to_lease(node(cidrs=["10.244.2.0/24"], **VXLAN, **junk6), NAMES, CFG)
    assert lease is not None and lease.attrs.public_ipv6 is None
    assert lease.attrs.backend_v6_data is None
    v6_only = parse_config('{"EnableIPv4": false, "EnableIPv6": true, '
                           '"IPv6Network": "2001:db8:42::/56"}')  # fmt: skip
    n = node(cidrs=["2001:db8:42:2::/64"], kube_subnet_manager="true", backend_type="vxlan",
             public_ip="junk", backend_data="{broken", public_ipv6="2001:db8::2",
             backend_v6_data='{"VNI":1,"VtepMAC":"12:c6:65:89:b4:e4"}')  # fmt: skip
    lease = node_to_lease(n, NAMES, v6_only)
    assert lease is not None and str(lease.attrs.public_ipv6) == "2001:db8::2"
    assert int(lease.attrs.public_ip) == 0 and lease.attrs.backend_data is None


def test_dual_stack_node_with_broken_backend_v6_data_keeps_its_ipv4_part() -> None:
    """As flanneld, which programs the IPv4 part before it decodes BackendV6Data."""
    from backend.vxlan import peer_from_lease, v6_data_error

    n = node(cidrs=["10.244.2.0/24", "2001:db8:42:2::/64"], **VXLAN,
             public_ipv6="2001:db8::2", backend_v6_data="{broken")  # fmt: skip
    lease = node_to_lease(n, NAMES, DUAL)
    assert lease is not None
    peer = peer_from_lease(lease)
    assert peer is not None and peer.v4 is not None and peer.v6 is None
    assert v6_data_error(lease).startswith("BackendV6Data: must be an object")


def test_stored_mac_is_read_from_backend_data() -> None:
    assert stored_mac(node(**VXLAN), NAMES.backend_data) == "12:c6:65:89:b4:e3"
    assert stored_mac(node(backend_data="null"), NAMES.backend_data) is None
    assert stored_mac(node(backend_data='{"VtepMAC":"zz"}'), NAMES.backend_data) is None
    assert stored_mac(node(), NAMES.backend_data) is None


def test_own_annotations_are_written_as_flanneld_writes_them() -> None:
    attrs = LeaseAttrs(
        ipaddress.IPv4Address("198.18.0.1"),
        None,
        "vxlan",
        {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"},
    )
    patch = own_annotations(NAMES, node(), attrs)
    assert patch == {
        P + "backend-type": "vxlan",
        P + "backend-data": '{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}',
        P + "kube-subnet-manager": "true",
        P + "public-ip": "198.18.0.1",
    }
    # nothing to patch when the node already says all of it
    current = {k[len(P) :].replace("-", "_"): v for k, v in patch.items()}
    assert own_annotations(NAMES, node(**current), attrs) == {}
    # NAT: public-ip-overwrite wins over the detected address
    nat = node(**current, public_ip_overwrite="203.0.113.9")
    assert own_annotations(NAMES, nat, attrs) == {P + "public-ip": "203.0.113.9"}


def test_ipv6_annotations_are_written_as_flanneld_writes_them() -> None:
    """flanneld (`pkg/subnet/kube` AcquireLease) writes backend-data and public-ip only when a
    vxlan node has IPv4 backend data (so never IPv6-only), and backend-v6-data with
    public-ipv6 for a vxlan node with IPv6 backend data or a host-gw node with an IPv6 public
    IP, whose backend-v6-data is `null`."""
    v6 = ipaddress.IPv6Address("2001:db8::1")
    data = {"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"}
    v6_only = LeaseAttrs(ipaddress.IPv4Address("0.0.0.0"), v6, "vxlan", None, data)
    assert own_annotations(NAMES, node(), v6_only) == {
        P + "backend-type": "vxlan",
        P + "backend-v6-data": '{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}',
        P + "kube-subnet-manager": "true",
        P + "public-ipv6": "2001:db8::1",
    }
    dual_host_gw = LeaseAttrs(ipaddress.IPv4Address("198.18.0.1"), v6, "host-gw")
    assert own_annotations(NAMES, node(), dual_host_gw) == {
        P + "backend-type": "host-gw",
        P + "backend-data": "null",
        P + "backend-v6-data": "null",
        P + "kube-subnet-manager": "true",
        P + "public-ip": "198.18.0.1",
        P + "public-ipv6": "2001:db8::1",
    }
    v6_only_host_gw = LeaseAttrs(ipaddress.IPv4Address("0.0.0.0"), v6, "host-gw")
    assert own_annotations(NAMES, node(), v6_only_host_gw) == {
        P + "backend-type": "host-gw",
        P + "backend-data": "null",
        P + "backend-v6-data": "null",
        P + "kube-subnet-manager": "true",
        P + "public-ip": "0.0.0.0",
        P + "public-ipv6": "2001:db8::1",
    }


def test_peer_view_ignores_heartbeats_but_sees_pod_cidr_changes() -> None:
    a = node(cidrs=["10.244.2.0/24"], **VXLAN)
    b = node(cidrs=["10.244.2.0/24"], **VXLAN)
    b["status"] = {"conditions": [{"type": "Ready", "lastHeartbeatTime": "now"}]}
    b["metadata"]["resourceVersion"] = "999"
    assert NAMES.peer_view(a) == NAMES.peer_view(b)
    c = node(cidrs=["10.244.9.0/24"], **VXLAN)
    assert NAMES.peer_view(a) != NAMES.peer_view(c)


@settings(max_examples=200)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda children: st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=10), children, max_size=3),
        max_leaves=10,
    ),
    st.dictionaries(
        st.sampled_from([P + "public-ip", P + "backend-data", P + "backend-type",
                         P + "public-ipv6", P + "backend-v6-data"]),
        st.sampled_from(["198.18.0.2", "2001:db8::2", "null", "{}", '{"VtepMAC":1}']) | st.text(),
    ),
)  # fmt: skip
def test_node_conversion_never_crashes(spec: Any, ann: dict[str, str]) -> None:
    n = {"metadata": {"name": "x", "annotations": {**ann, P + "kube-subnet-manager": "true"}},
         "spec": spec}  # fmt: skip
    with contextlib.suppress(LeaseFormatError):
        node_to_lease(n, NAMES, DUAL)
    with contextlib.suppress(LeaseFormatError):
        node_to_lease({**n, "spec": {"podCIDRs": spec}}, NAMES, DUAL)
    assert NAMES.peer_view(n) == NAMES.peer_view(dict(n))
