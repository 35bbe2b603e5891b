"""Node annotations and pod CIDRs: how a node publishes its VTEP in Kubernetes mode (pure logic).

The annotation names and value formats are flannel's (flannel `pkg/subnet/kube/annotations.go` and
`kube.go`), so Go flanneld nodes and flanneld-py nodes read each other's:
`flannel.alpha.coreos.com/backend-type: vxlan`,
`flannel.alpha.coreos.com/backend-data: {"VNI":1,"VtepMAC":"12:c6:65:89:b4:e3"}`,
`flannel.alpha.coreos.com/public-ip: 10.0.0.5`, `…/kube-subnet-manager: "true"`, and the IPv6
equivalents. Nodes are read as the plain JSON dicts the API server sends; only the fields used here
are looked at, and a peer is kept as a slim record, never as a whole Node object.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from subnet.config import NetworkConfig, strict_json_loads
from subnet.lease import Lease, LeaseAttrs, LeaseFormatError, go_json

DEFAULT_PREFIX = "flannel.alpha.coreos.com"

# an FQDN of lowercase labels, optionally followed by "/name-" (flannel's validation)
_PREFIX_RE = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/([a-z0-9_.-]*-)?"
)


class AnnotationPrefixError(ValueError):
    """`--kube-annotation-prefix` is not a DNS name optionally followed by `/name`."""


def normalize_prefix(prefix: str) -> str:
    """Turn `--kube-annotation-prefix` into the text every annotation name starts with.

    `flannel.alpha.coreos.com` -> `flannel.alpha.coreos.com/`; `example.com/net` ->
    `example.com/net-`. Raises AnnotationPrefixError for more than one `/`, uppercase letters, or
    a name without a dot (flannel `pkg/subnet/kube/annotations.go`).
    """
    if prefix.count("/") > 1:
        raise AnnotationPrefixError(
            f"--kube-annotation-prefix {prefix!r}: at most one '/' is allowed"
        )
    if "/" not in prefix:
        prefix += "/"
    if not prefix.endswith(("/", "-")):
        prefix += "-"
    if not _PREFIX_RE.fullmatch(prefix):
        raise AnnotationPrefixError(
            f"--kube-annotation-prefix {prefix.rstrip('/-')!r}: must be a lowercase DNS name "
            "with at least one dot, optionally followed by /name, e.g. flannel.alpha.coreos.com"
        )
    return prefix


@dataclass(frozen=True)
class AnnotationNames:
    """The full annotation names for one prefix (see `normalize_prefix`)."""

    subnet_manager: str
    backend_type: str
    backend_data: str
    backend_v6_data: str
    public_ip: str
    public_ipv6: str
    public_ip_overwrite: str
    public_ipv6_overwrite: str
    node_public_ip: str
    node_public_ipv6: str

    @classmethod
    def for_prefix(cls, prefix: str = DEFAULT_PREFIX) -> AnnotationNames:
        """Names under `prefix` (normalised here). Raises AnnotationPrefixError."""
        p = normalize_prefix(prefix)
        return cls(
            subnet_manager=p + "kube-subnet-manager",
            backend_type=p + "backend-type",
            backend_data=p + "backend-data",
            backend_v6_data=p + "backend-v6-data",
            public_ip=p + "public-ip",
            public_ipv6=p + "public-ipv6",
            public_ip_overwrite=p + "public-ip-overwrite",
            public_ipv6_overwrite=p + "public-ipv6-overwrite",
            node_public_ip=p + "node-public-ip",
            node_public_ipv6=p + "node-public-ipv6",
        )

    def peer_view(self, node: dict[str, Any]) -> tuple[Any, ...]:
        """Every field of a Node that matters to its peers, for cheap change detection.

        Two Node versions with the same view (e.g. kubelet heartbeats) need no work.
        """
        ann = _annotations(node)
        spec = _obj(node.get("spec"))
        return (
            ann.get(self.subnet_manager),
            ann.get(self.backend_type),
            ann.get(self.backend_data),
            ann.get(self.backend_v6_data),
            ann.get(self.public_ip),
            ann.get(self.public_ipv6),
            spec.get("podCIDR"),
            str(spec.get("podCIDRs")),
        )


def _obj(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else {} (a malformed Node never raises AttributeError)."""
    return value if isinstance(value, dict) else {}


def _meta(node: dict[str, Any]) -> dict[str, Any]:
    return _obj(node.get("metadata"))


def _annotations(node: dict[str, Any]) -> dict[str, Any]:
    return _obj(_meta(node).get("annotations"))


def node_name(node: dict[str, Any]) -> str:
    """`metadata.name` of a Node dict ("" when missing)."""
    return str(_meta(node).get("name") or "")


def pod_cidrs(
    node: dict[str, Any],
) -> tuple[ipaddress.IPv4Network | None, ipaddress.IPv6Network | None]:
    """The node's IPv4 and IPv6 pod CIDRs from `spec.podCIDRs`, else `spec.podCIDR`.

    Raises LeaseFormatError for an unparsable CIDR or more than two entries (flannel's rule).
    """
    spec = _obj(node.get("spec"))
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    if not isinstance(cidrs, list):
        raise LeaseFormatError(f"node {node_name(node)!r}: spec.podCIDRs is not a list")
    if len(cidrs) > 2:
        raise LeaseFormatError(f"node {node_name(node)!r} has {len(cidrs)} podCIDRs; at most 2")
    v4: ipaddress.IPv4Network | None = None
    v6: ipaddress.IPv6Network | None = None
    for text in cidrs:
        try:
            net = ipaddress.ip_network(str(text))
        except ValueError as err:
            raise LeaseFormatError(f"node {node_name(node)!r}: podCIDR {text!r}: {err}") from None
        if isinstance(net, ipaddress.IPv4Network):
            v4 = v4 or net
        else:
            v6 = v6 or net
    return v4, v6


def _json_annotation(value: Any, what: str) -> Any:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LeaseFormatError(f"{what} is not a string")
    try:
        return strict_json_loads(value)
    except ValueError as err:
        raise LeaseFormatError(f"{what} is not JSON: {err}") from None


def node_to_lease(node: dict[str, Any], names: AnnotationNames, cfg: NetworkConfig) -> Lease | None:
    """A peer Node as a lease; None when flannel does not manage it (no `kube-subnet-manager`
    annotation `"true"`, or no podCIDR yet).

    Raises LeaseFormatError (naming the node) for a malformed public IP, backend data or podCIDR
    (in dual stack, a backend-v6-data that is not JSON is kept as its text, which the backend
    finds unusable, and the IPv4 part stays usable).
    """
    ann = _annotations(node)
    name = node_name(node)
    if ann.get(names.subnet_manager) != "true":
        return None
    v4, v6 = pod_cidrs(node)
    if not cfg.enable_ipv4:
        v4 = None
    if not cfg.enable_ipv6:
        v6 = None
    if v4 is None and v6 is None:
        return None
    # as flanneld's nodeToLease: a family's annotations are read only when it is enabled
    raw4 = ann.get(names.public_ip) if cfg.enable_ipv4 else None
    raw6 = ann.get(names.public_ipv6) if cfg.enable_ipv6 else None
    try:
        if not isinstance(raw4 or "", str) or not isinstance(raw6 or "", str):
            raise ValueError("not a string")
        public_ip = ipaddress.IPv4Address(raw4 or "0.0.0.0")
        public_ipv6 = ipaddress.IPv6Address(raw6) if raw6 else None
    except ValueError as err:
        raise LeaseFormatError(f"node {name!r}: public IP annotation: {err}") from None
    if v4 is not None and int(public_ip) == 0:
        raise LeaseFormatError(f"node {name!r} has no {names.public_ip} annotation")
    backend_data = None
    if cfg.enable_ipv4:
        raw = ann.get(names.backend_data)
        backend_data = _json_annotation(raw, f"node {name!r} backend-data")
    backend_v6_data = None
    if cfg.enable_ipv6:
        raw = ann.get(names.backend_v6_data)
        try:
            backend_v6_data = _json_annotation(raw, f"node {name!r} backend-v6-data")
        except LeaseFormatError:
            if v4 is None:
                raise
            backend_v6_data = raw  # not an object: the IPv6 part is unusable, the IPv4 one is not
    attrs = LeaseAttrs(
        public_ip=public_ip,
        public_ipv6=public_ipv6,
        backend_type=str(ann.get(names.backend_type) or ""),
        backend_data=backend_data,
        backend_v6_data=backend_v6_data,
    )
    return Lease(v4, v6, attrs)


def stored_mac(node: dict[str, Any], annotation: str) -> str | None:
    """The VtepMAC in a node's backend-data annotation, or None when absent or unreadable.

    Lets a rebooted node recreate `flannel.<VNI>` with the MAC its peers already have.
    """
    value = _annotations(node).get(annotation)
    try:
        data = _json_annotation(value, annotation)
    except LeaseFormatError:
        return None
    if isinstance(data, dict):
        mac = {k.lower(): v for k, v in data.items()}.get("vtepmac")
        if isinstance(mac, str) and re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", mac):
            return mac.lower()
    return None


def own_annotations(
    names: AnnotationNames, node: dict[str, Any], attrs: LeaseAttrs
) -> dict[str, str]:
    """The annotations this node must publish, as flanneld writes them (only those that differ
    from what the Node has are returned; {} means nothing to patch).

    `public-ip` is the `public-ip-overwrite` annotation when set (NAT), else the detected IP.
    `backend-data` is the JSON of the backend data; a backend other than vxlan writes it even
    when there is none, as `null` (alloc: `backend-type: ""`, `backend-data: null`), and a
    vxlan node without it (IPv6-only) writes neither it nor `public-ip`. `backend-v6-data` and
    `public-ipv6` (or `public-ipv6-overwrite`) come with vxlan's IPv6 backend data, or for
    host-gw with an IPv6 public IP (`backend-v6-data: null`), as flanneld's AcquireLease.
    """
    ann = _annotations(node)
    want: dict[str, str] = {
        names.backend_type: attrs.backend_type,
        names.subnet_manager: "true",
    }
    if attrs.backend_data is not None or attrs.backend_type != "vxlan":
        want[names.backend_data] = go_json(attrs.backend_data)
        want[names.public_ip] = ann.get(names.public_ip_overwrite) or str(attrs.public_ip)
    if attrs.public_ipv6 is not None and (
        attrs.backend_v6_data is not None or attrs.backend_type == "host-gw"
    ):
        want[names.backend_v6_data] = go_json(attrs.backend_v6_data)
        want[names.public_ipv6] = ann.get(names.public_ipv6_overwrite) or str(attrs.public_ipv6)
    return {k: v for k, v in want.items() if ann.get(k) != v}
