"""The `alloc` backend: a subnet lease and subnet.env, and nothing in the kernel.

flannel's `alloc` backend (flannel `pkg/backend/alloc`) only takes part in subnet allocation: it
acquires (etcd: and renews) the node's lease and lets flanneld write subnet.env, and leaves the
datapath to something else (routes installed by another agent, a cloud's VPC routes...). It creates
no device and programs no peers, so it needs no peer watch either.

What it publishes is a contract with Go flanneld nodes, so it is exactly what Go writes: the lease
attributes carry the public IP only, with no BackendType and no BackendData. In etcd the value is
`{"PublicIP":"198.18.0.1","PublicIPv6":null}`; in Kubernetes mode the Node gets an empty
`backend-type` and `backend-data: null` (see `subnet.annotations.own_annotations`). The MTU handed
to pods is the external interface's own: there is no encapsulation overhead to subtract.
"""

from __future__ import annotations

import ipaddress

from subnet.lease import LeaseAttrs

BACKEND_TYPE = "alloc"


def lease_attrs(public_ip: str | ipaddress.IPv4Address) -> LeaseAttrs:
    """The lease attributes an alloc node publishes: its public IPv4 address and nothing else.

    `public_ip` is dotted-quad text or an address; raises ValueError when it is not IPv4.
    """
    return LeaseAttrs(public_ip=ipaddress.IPv4Address(public_ip))


def pod_mtu(iface_mtu: int) -> int:
    """FLANNEL_MTU for subnet.env (bytes): the external interface's MTU, unchanged (flannel's
    SimpleNetwork.MTU). Raises ValueError for an MTU that is not positive."""
    if iface_mtu <= 0:
        raise ValueError(f"interface MTU {iface_mtu} is not positive")
    return iface_mtu
