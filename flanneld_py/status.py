"""`flanneld-py status`: what this node's overlay looks like, and why it is broken if it is.

An operator runs it on a node (or `kubectl exec` runs it in the DaemonSet pod) with the daemon's own
flags, so that it finds the same datastore, subnet.env and kube settings. It reads the datastore and
the kernel itself, never the daemon, so it also answers while the daemon is down, and it reports:

- this node's lease (subnet, expiry, public IP, VTEP MAC; with IPv6 also the IPv6 subnet,
  PublicIPv6 and the BackendV6Data VTEP MAC), subnet.env, the `flannel.<VNI>` and (IPv6 or dual
  stack) `flannel-v6.<VNI>` devices (vxlan) or the external interface (host-gw);
- the peers, chosen by the daemon's rules (the backend's `peer_from_lease`, `check_peer_subnet`),
  and how each is reached: "overlay" (neighbour, FDB entry and onlink route on the device) or
  "direct" (a route via its public IP: every host-gw peer, and with VXLAN DirectRouting the peers
  whose public IP the daemon's own test, `VxlanDevice.select`, finds directly reachable);
- the difference between the objects those peers need and what the kernel has, dumped as the
  daemon's full pass dumps it (`VxlanDevice.dump`, `HostGwRoutes.dump`), through
  `backend.reconcile.diff`: missing, wrong, unexpected;
- the traffic rules' mode (iptables or nftables, from `EnableNFTables`) and whether flanneld's
  masquerade and forward rules for the given flags are present (IPv6: ip6tables, or the table
  `flannel-ipv6`);
- the daemon's last error and last sync (its state file, `flanneld_py.state`);
- the common failures explained in words (no lease, subnet.env missing, podCIDR not assigned,
  interface or device missing, MTU mismatch between pods and the device, datastore unreachable).

Every enabled family (`EnableIPv4`, `EnableIPv6`) is checked the way the daemon runs it: one
device and one set of peer entries per family (`daemon.select_entry`), this node's lease known
by its subnets of every family (`daemon.same_subnets`), a peer without an IPv6 part
(`daemon.missing_part`) reached over IPv4 only, the IPv6 device's MTU 70 bytes under the
underlay's on an IPv6 underlay, FLANNEL_MTU the smaller device MTU. The IPv6 side is the report's
`ipv6` section; an IPv6-only network has no `flannel.<VNI>` and no FLANNEL_SUBNET.

With the `alloc` backend there is no device and nothing to program: the report checks the lease
(public IP only), subnet.env and the daemon, and the datapath counts as in sync.

Exit status: 0 when the kernel is in sync and nothing is wrong, 1 otherwise, 2 for bad usage.
`--json` prints the same report as one JSON object (see `build_report` for its keys).

A pure core with I/O at the edges: `collect` reads everything into an `Observed` (plain data),
`build_report` turns that into the report (a JSON-ready dict) and `render_text` prints it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from backend import hostgw
from backend.netlink import LinkState
from backend.reconcile import KernelState, Op, PeerEntry, diff
from backend.vxlan import (
    KERNEL_DEFAULT_PORT,
    PeerFormatError,
    VXLANConfig,
    device_name,
    overlay_mtu,
    parse_vxlan_config,
    peer_from_lease,
)
from flanneld_py.cli import FLAGS, Options
from flanneld_py.families import (
    ENV_KEYS,
    missing_part,
    peer_record,
    same_subnets,
    select_entry,
    subnet_of,
)
from flanneld_py.flags import Flag, FlagError, HelpRequested, parse_flags, usage
from flanneld_py.state import read_state, state_path
from subnet.annotations import (
    AnnotationNames,
    node_name,
    node_to_lease,
    pod_cidrs,
    stored_mac,
)
from subnet.config import SUPPORTED_BACKENDS, ConfigError, NetworkConfig
from subnet.errors import ConfigNotFound, DatastoreUnavailable, KubeError
from subnet.lease import Lease, LeaseAttrs, LeaseFormatError
from subnet.subnetenv import previous_cidr, read_env_file

log = logging.getLogger(__name__)

STATUS_FLAGS: list[Flag] = [
    *FLAGS,
    Flag("json", "bool", False, "print the report as one JSON object", from_env=False),
]

INTRO = (
    "flanneld-py status shows this node's lease, subnet.env, the flannel.<VNI> device (IPv6: "
    "flannel-v6.<VNI>; host-gw: the external interface), the peers (and whether each is "
    "reached through the overlay or by a direct route) and the difference between the kernel "
    "entries the datastore's peers need and the kernel's, the traffic rules, plus the daemon's "
    "last error. Give it the daemon's flags. It reads the datastore and the kernel itself, so "
    "it works while the daemon is down. Exit status: 0 in sync and healthy, 1 not, 2 bad usage."
)

CNI_BRIDGE = "cni0"  # the bridge the flannel CNI plugin's delegate creates (flannel's default)
TEXT_LIMIT = 50  # diff entries listed per category in the text report (JSON lists them all)


# --- observations: what collect() read, as plain data --------------------------------------------


@dataclass
class OwnLease:
    """This node's lease as the datastore has it.

    `key` is the etcd subnet key (`10.244.1.0-24`) or, in kube mode, the node name. `ttl` is the
    seconds left on the key's etcd lease (None: no etcd lease, or it is gone); `lease_id` 0 marks a
    reservation (a key without an etcd lease, which never expires). `public_ip` and `vtep_mac` are
    what peers use to reach this node (None when not published). `public_ip_overwritten`: the
    published IP comes from the kube `public-ip-overwrite` annotation (NAT), so it may differ from
    the device's local address. The IPv6 counterparts (`ipv6_subnet`, `public_ipv6`,
    `vtep_mac_v6` from BackendV6Data, `public_ipv6_overwritten`) are None/False without IPv6;
    on an IPv6-only network `subnet`, `public_ip` and `vtep_mac` are None.
    """

    key: str
    subnet: ipaddress.IPv4Network | None
    public_ip: str | None
    vtep_mac: str | None
    backend_type: str = ""
    lease_id: int = 0
    ttl: float | None = None
    public_ip_overwritten: bool = False
    ipv6_subnet: ipaddress.IPv6Network | None = None
    public_ipv6: str | None = None
    vtep_mac_v6: str | None = None
    public_ipv6_overwritten: bool = False

    def subnet_of(self, version: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """This node's subnet of IP `version` (4 or 6), or None."""
        return self.subnet if version == 4 else self.ipv6_subnet

    def public(self, version: int) -> str | None:
        """The published public IP of IP `version` (`PublicIP` or `PublicIPv6`), or None."""
        return self.public_ip if version == 4 else self.public_ipv6

    def mac(self, version: int) -> str | None:
        """The published VTEP MAC of IP `version` (BackendData or BackendV6Data), or None."""
        return self.vtep_mac if version == 4 else self.vtep_mac_v6

    def overwritten(self, version: int) -> bool:
        """Whether the public IP of `version` comes from a kube `public-ip[v6]-overwrite`."""
        return self.public_ip_overwritten if version == 4 else self.public_ipv6_overwritten


@dataclass
class DeviceSide:
    """One address family's kernel side: the device `device_name` (`flannel.<VNI>` or
    `flannel-v6.<VNI>`) and `device` (None when absent) with its addresses of that family
    `device_addresses` (`10.244.1.0/32`, `fd10:244:0:1::/128`; link-local ones left out), its
    underlay interface `lower` (None when gone), and its per-peer entries `kernel` (vxlan: the
    device's; host-gw: the routes on the external interface; None when unreadable:
    `kernel_error`). `direct_ips` (VXLAN DirectRouting): the daemon's decision
    (`VxlanDevice.select`) per peer public IP of that family, True for "directly reachable"."""

    device_name: str
    device: LinkState | None = None
    device_addresses: list[str] = field(default_factory=list)
    lower: LinkState | None = None
    lower_name: str | None = None
    kernel: KernelState | None = None
    kernel_error: str | None = None
    direct_ips: dict[str, bool] = field(default_factory=dict)


@dataclass
class Observed:
    """Everything the report is made of, read by `collect` (or built by a test).

    Datastore side: `mode` "etcd" or "kube"; `endpoint` the etcd endpoints or the API server URL;
    `datastore_error` why it could not be read (None: it answered); `config`, or `config_error`;
    `leases` every readable lease as (key, lease), key = subnet key (etcd) or node name (kube);
    `invalid` the unreadable ones as (key, reason); `own` this node's lease, or `own_error` why
    there is none; `node` this node's name (kube).

    Node side: `subnet_file` and `env` (its `KEY=value` pairs, None when the file is missing;
    `env_error` when it exists but cannot be read); the device `device_name` and `device` (None when
    absent) with its IPv4 `device_addresses` (`10.244.1.0/32`), its underlay interface `lower`
    (None when gone) and its per-peer entries `kernel` (None when unreadable: `kernel_error`);
    `cni_bridge` the pods' bridge; `iface_error` why the daemon's flags select no external
    interface, `iface_name` the one they select.

    `iface` the external interface the flags select (None when not found) and `iface_addr` its
    address; with host-gw the routes on it are `kernel`. `direct_ips` (VXLAN DirectRouting):
    the daemon's decision (`VxlanDevice.select`) per peer public IP, True for "directly
    reachable". `rules`: the traffic rules, {"mode": "iptables"|"nftables", "checked": bool,
    "missing": [what is absent], "error": text or None} (None: not checked).

    Daemon: `state` its state file (None when absent), `daemon_alive` whether its pid runs.

    IPv6 (a network with `EnableIPv6`): `v6` the IPv6 side (`flannel-v6.<VNI>`, or with host-gw
    the IPv6 routes on the external interface), None when IPv6 is not enabled or the config is
    unknown; `iface_v6_addr` the external interface's IPv6 address. The flat device fields
    above are the IPv4 side (`side(4)`).
    """

    mode: str
    endpoint: str
    subnet_file: str
    datastore_error: str | None = None
    config: NetworkConfig | None = None
    config_error: str | None = None
    leases: list[tuple[str, Lease]] = field(default_factory=list)
    invalid: list[tuple[str, str]] = field(default_factory=list)
    own: OwnLease | None = None
    own_error: str | None = None
    node: str | None = None
    env: dict[str, str] | None = None
    env_error: str | None = None
    device_name: str = "flannel.1"
    device: LinkState | None = None
    device_addresses: list[str] = field(default_factory=list)
    lower: LinkState | None = None
    lower_name: str | None = None
    kernel: KernelState | None = None
    kernel_error: str | None = None
    cni_bridge: LinkState | None = None
    iface_name: str | None = None
    iface_error: str | None = None
    iface: LinkState | None = None
    iface_addr: str | None = None
    direct_ips: dict[str, bool] = field(default_factory=dict)
    rules: dict[str, Any] | None = None
    state: dict[str, Any] | None = None
    daemon_alive: bool | None = None
    v6: DeviceSide | None = None
    iface_v6_addr: str | None = None

    def side(self, version: int) -> DeviceSide:
        """The kernel side of IP `version`: a copy of the flat IPv4 fields for 4, `v6` for 6
        (an empty side named `flannel-v6.1` when it was not read)."""
        if version == 6:
            return self.v6 or DeviceSide(device_name(1, 6))
        return DeviceSide(self.device_name, self.device, self.device_addresses, self.lower,
                          self.lower_name, self.kernel, self.kernel_error,
                          self.direct_ips)  # fmt: skip


# --- pure core -----------------------------------------------------------------------------------


def find_own_lease(
    leases: Sequence[tuple[str, Lease]],
    env_subnet: ipaddress.IPv4Network | None,
    device_addresses: Iterable[str] = (),
    device_mac: str | None = None,
    public_ip: str | None = None,
    env_subnet6: ipaddress.IPv6Network | None = None,
    device_macs: Iterable[str] = (),
    public_ipv6: str | None = None,
) -> tuple[tuple[str, Lease] | None, str]:
    """Which of the etcd `leases` is this node's, and how that was decided.

    Tried in order: the subnets in subnet.env (`env_subnet`, and `env_subnet6` from
    FLANNEL_IPV6_SUBNET: a lease must have every one given), the subnet holding a device's VTEP
    address (`device_addresses`, CIDR text, `/32` or `/128`), a lease publishing a device's MAC
    (`device_mac`, `device_macs`: in BackendData or BackendV6Data), a lease publishing this
    node's `public_ip` or `public_ipv6` (flannel's own reuse rule). With subnet.env present its
    subnets decide alone: a lease found another way would not be the one the pods use. Returns
    ((key, lease) or None, a phrase saying how it was found or what was looked for).
    """
    if env_subnet is not None or env_subnet6 is not None:
        for key, lease in leases:
            if (env_subnet is None or lease.subnet == env_subnet) and (
                env_subnet6 is None or lease.ipv6_subnet == env_subnet6
            ):
                return (key, lease), "from subnet.env"
        named = " and ".join(str(n) for n in (env_subnet, env_subnet6) if n is not None)
        return None, f"subnet.env names {named}"
    for text in device_addresses:
        addr = ipaddress.ip_interface(text).ip
        for key, lease in leases:
            subnet = subnet_of(lease, addr.version)
            if subnet is not None and addr == subnet.network_address:
                return (key, lease), f"from the device's address {text}"
    macs = [m.lower() for m in (device_mac, *device_macs) if m]
    for m in macs:
        for key, lease in leases:
            if m in (_vtep_mac(lease), _vtep_mac(lease, 6)):
                return (key, lease), f"from the device's MAC {m}"
    for ip, version in ((public_ip, 4), (public_ipv6, 6)):
        if not ip:
            continue
        for key, lease in leases:
            have = lease.attrs.public_ip if version == 4 else lease.attrs.public_ipv6
            if have is not None and str(have) == str(ipaddress.ip_address(ip)):
                return (key, lease), f"from the public IP {ip}"
    looked = ["subnet.env is missing"]
    if macs:
        looked.append(f"no lease has the device's MAC {' or '.join(macs)}")
    ips = [ip for ip in (public_ip, public_ipv6) if ip]
    if ips:
        looked.append(f"none has the public IP {' or '.join(ips)}")
    return None, "; ".join(looked)


def _vtep_mac(lease: Lease, version: int = 4) -> str | None:
    """The VtepMAC of the lease's BackendData (4) or BackendV6Data (6), lowercase, or None."""
    data = lease.attrs.backend_data if version == 4 else lease.attrs.backend_v6_data
    if not isinstance(data, dict):
        return None
    mac = {str(k).lower(): v for k, v in data.items()}.get("vtepmac")
    return mac.lower() if isinstance(mac, str) else None


Net = ipaddress.IPv4Network | ipaddress.IPv6Network


def desired_peers(
    leases: Iterable[tuple[str, Lease]],
    own_key: str | None,
    own_subnet: ipaddress.IPv4Network | None,
    network: ipaddress.IPv4Network | None,
    backend_type: str = "vxlan",
    direct_ips: Mapping[str, bool] | None = None,
) -> tuple[dict[str, PeerEntry], list[dict[str, str]]]:
    """The IPv4 peers of an IPv4-only network; see `family_peers` (which this calls with
    `{4: own_subnet}`, `{4: network}`). Returns ({key: IPv4 entry}, skipped)."""
    entries, skipped, _ = family_peers(leases, own_key, {4: own_subnet}, {4: network}, 4,
                                       backend_type, direct_ips)  # fmt: skip
    return entries, skipped


def family_peers(
    leases: Iterable[tuple[str, Lease]],
    own_key: str | None,
    own_subnets: Mapping[int, Net | None],
    networks: Mapping[int, Net | None],
    version: int,
    backend_type: str = "vxlan",
    direct_ips: Mapping[str, bool] | None = None,
) -> tuple[dict[str, PeerEntry], list[dict[str, str]], list[dict[str, str]]]:
    """The peers the device of IP `version` would program, by the daemon's rules. `networks`
    maps every enabled IP version to its cluster network (`Network`, `IPv6Network`) and
    `own_subnets` to this node's subnet of it. A lease is this node's when it has `own_key` or
    this node's subnet in every enabled family (`families.same_subnets`); any other is turned
    into a record as the daemon does (`families.peer_record`: subnets checked in every enabled
    family, a bad IPv6 subnet in dual stack dropping only the IPv6 part) with the peer function
    of `backend_type` ("vxlan": `backend.vxlan.peer_from_lease`; "host-gw":
    `backend.hostgw.peer_from_lease`, every entry direct), and `families.select_entry(version)`
    picks its entry. `direct_ips` (VXLAN DirectRouting) maps a peer public IP to the daemon's
    decision (`VxlanDevice.select`): True makes the entries of that IP direct routes.

    Returns ({key: entry}, skipped, partial): skipped lists {"key", "reason"} for leases the
    daemon skips in every family (bad backend data, subnet outside the network or overlapping
    ours, another backend); partial the peers without an entry of this family, with the reason
    (`families.missing_part`: "no IPv6 subnet", "no PublicIPv6", "no BackendV6Data"...).
    """
    to_peer = hostgw.peer_from_lease if backend_type == hostgw.BACKEND_TYPE else peer_from_lease
    families = tuple(networks)
    own = Lease(_v4(own_subnets.get(4)), _v6(own_subnets.get(6)), LeaseAttrs())
    pick = select_entry(version)
    entries: dict[str, PeerEntry] = {}
    skipped: list[dict[str, str]] = []
    partial: list[dict[str, str]] = []
    for key, lease in leases:
        if key == own_key or same_subnets(lease, own, families):
            continue
        try:
            peer, v6_problem = peer_record(lease, networks, own_subnets, to_peer)
        except PeerFormatError as err:
            skipped.append({"key": key, "reason": str(err)})
            continue
        if peer is None:
            skipped.append({"key": key, "reason": f"backend type {lease.attrs.backend_type!r}, "
                            f"not {backend_type}"})  # fmt: skip
            continue
        entry = pick(peer)
        if entry is None:
            why = missing_part(lease, version) or (v6_problem if version == 6 else "")
            partial.append({"key": key, "reason": why or f"no IPv{version} part"})
            continue
        if direct_ips and not entry.direct and direct_ips.get(entry.public_ip):
            entry = replace(entry, direct=True)
        entries[key] = entry
    return entries, skipped, partial


def _v4(net: Net | None) -> ipaddress.IPv4Network | None:
    return net if isinstance(net, ipaddress.IPv4Network) else None


def _v6(net: Net | None) -> ipaddress.IPv6Network | None:
    return net if isinstance(net, ipaddress.IPv6Network) else None


def peer_kind(entry: PeerEntry) -> str:
    """How a peer is reached: "direct" (a route via its public IP) or "overlay" (VXLAN)."""
    return "direct" if entry.direct else "overlay"


def _entry_text(kind: str, a: str, b: str | None) -> str:
    if kind == "neigh":
        return f"{a} lladdr {b}"
    if kind == "fdb":
        return f"{a} dst {b}"
    return f"{a} via {b}" if b else a


_FIELDS = {
    "neigh": ("ip", "mac"),
    "fdb": ("mac", "remote"),
    "route": ("dst", "gateway"),
    "direct": ("dst", "gateway"),
}


def classify_diff(
    desired: Mapping[str, PeerEntry], actual: KernelState
) -> dict[str, list[dict[str, Any]]]:
    """Sort `diff(desired, actual)` into what an operator asks about.

    - missing: a replace for an object the kernel lacks;
    - wrong: a replace for an object the kernel has with another value (a neighbour with another
      MAC, a route with another gateway, an FDB entry for the MAC with another remote);
    - unexpected: a delete (an object no peer needs). An FDB entry already listed as wrong is not
      listed again.

    Each item: {"kind": "neigh"|"fdb"|"route"|"direct", "peer": lease key ("" for unexpected),
    the object's fields (neigh: ip, mac; fdb: mac, remote; route (onlink, on the device) and
    direct (via a peer's public IP): dst, gateway), "text"}, and for wrong items the kernel's
    value as "kernel_mac" / "kernel_remote" / "kernel_gateway".
    """
    out: dict[str, list[dict[str, Any]]] = {"missing": [], "wrong": [], "unexpected": []}
    explained: set[tuple[str, str]] = set()  # FDB (mac, remote) reported as wrong
    for op in diff(desired, actual):
        f1, f2 = _FIELDS[op.kind]
        item: dict[str, Any] = {"kind": op.kind, "peer": op.key, f1: op.a, f2: op.b}
        item["text"] = _entry_text(op.kind, op.a, op.b)
        if op.action == "delete":
            if op.kind == "fdb" and (op.a, op.b or "") in explained:
                continue
            item["peer"] = ""
            out["unexpected"].append(item)
            continue
        have = _kernel_value(op, actual)
        if have is None:
            out["missing"].append(item)
        else:
            item[f"kernel_{f2}"] = have
            item["text"] += f" (kernel: {_entry_text(op.kind, op.a, have)})"
            out["wrong"].append(item)
            if op.kind == "fdb":
                explained.add((op.a, have))
    return out


def _kernel_value(op: Op, actual: KernelState) -> str | None:
    """The kernel's value of the object a replace `op` writes; None when the object is absent."""
    if op.kind == "neigh":
        return actual.neighs.get(op.a)
    if op.kind == "direct":
        return actual.direct.get(op.a)
    if op.kind == "route":
        if op.a not in actual.routes:
            return None
        return actual.routes[op.a] or "(no gateway)"
    remotes = sorted(remote for mac, remote in actual.fdb if mac == op.a)
    return remotes[0] if remotes else None


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def _fmt_age(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 120:
        text = f"{s} s"
    elif s < 7200:
        text = f"{s // 60} min"
    else:
        text = f"{s // 3600} h {s % 3600 // 60} min"
    return text


def _lease_section(obs: Observed, now: float) -> dict[str, Any]:
    own = obs.own
    out: dict[str, Any] = {
        "found": own is not None,
        "source": obs.mode,
        "key": None,
        "node": obs.node,
        "subnet": None,
        "expires": None,
        "expires_at": None,
        "ttl": None,
        "reservation": False,
        "public_ip": None,
        "vtep_mac": None,
        "ipv6_subnet": None,
        "public_ipv6": None,
        "vtep_mac_v6": None,
        "backend_type": None,
        "error": obs.own_error,
    }
    if own is None:
        return out
    out.update(
        key=own.key,
        subnet=str(own.subnet) if own.subnet else None,
        public_ip=own.public_ip,
        vtep_mac=own.vtep_mac,
        ipv6_subnet=str(own.ipv6_subnet) if own.ipv6_subnet else None,
        public_ipv6=own.public_ipv6,
        vtep_mac_v6=own.vtep_mac_v6,
        backend_type=own.backend_type or None,
    )
    if obs.mode == "kube":
        out["expires"] = "no expiry (podCIDR)"
    elif own.lease_id == 0:
        out.update(expires="never", reservation=True)
    elif own.ttl is None:
        out["expires"] = "expired (its etcd lease is gone)"
    else:
        out.update(
            expires=f"{_fmt_time(now + own.ttl)} (in {_fmt_age(own.ttl)})",
            expires_at=now + own.ttl,
            ttl=own.ttl,
        )
    return out


def _link_dict(link: LinkState | None, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "exists": link is not None}
    if link is not None:
        out.update(kind=link.kind, up=link.up, mtu=link.mtu, mac=link.mac)
    return out


def _device_section(obs: Observed, version: int = 4) -> dict[str, Any]:
    side = obs.side(version)
    dev = side.device
    out = _link_dict(dev, side.device_name)
    out["needed"] = not (is_lease_only(obs.config) or is_host_gw(obs.config)) and (
        version in families_of(obs)
    )
    out.update(vni=None, port=None, local=None, addresses=list(side.device_addresses))
    out["lower"] = side.lower_name
    if dev is not None:
        out.update(vni=dev.vni, port=dev.port or KERNEL_DEFAULT_PORT, local=dev.local)
    return out


def _interface_section(obs: Observed) -> dict[str, Any]:
    out = _link_dict(obs.iface, obs.iface_name or "")
    out["name"] = obs.iface_name
    out.update(address=obs.iface_addr, error=obs.iface_error)
    if obs.iface_v6_addr:
        out["address_v6"] = obs.iface_v6_addr
    return out


def _peers_section(
    desired: Mapping[str, PeerEntry],
    known: bool,
    skipped: list[dict[str, str]],
    partial: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    entries = [
        {"key": key, "subnet": e.subnet, "public_ip": e.public_ip, "kind": peer_kind(e)}
        for key, e in sorted(desired.items())
    ]
    direct = sum(1 for e in desired.values() if e.direct)
    out = {
        "count": len(desired),
        "known": known,
        "direct": direct,
        "overlay": len(desired) - direct,
        "entries": entries,
        "skipped": skipped,
    }
    if partial is not None:
        out["partial"] = partial
    return out


def _daemon_section(obs: Observed, now: float) -> dict[str, Any]:
    st = obs.state or {}
    last_error = st.get("last_error") if isinstance(st.get("last_error"), dict) else None
    return {
        "state_file": state_path(obs.subnet_file),
        "found": obs.state is not None,
        "pid": st.get("pid"),
        "running": obs.daemon_alive,
        "ready": st.get("ready"),
        "peers": st.get("peers"),
        "started": st.get("started"),
        "updated": st.get("updated"),
        "last_full_sync": st.get("last_full_sync"),
        "last_error": last_error,
    }


def _int(text: str | None) -> int | None:
    try:
        return int(text or "")
    except ValueError:
        return None


def check_problems(obs: Observed) -> tuple[list[str], list[str]]:
    """The failures an operator must act on (problems) and things worth knowing (warnings), each
    a sentence saying what is wrong, what it breaks and what to do."""
    problems: list[str] = []
    warnings: list[str] = []
    p = problems.append
    own, env, cfg = obs.own, obs.env, obs.config
    vx, backend_error = backend_settings(cfg)

    # datastore and network config
    if obs.datastore_error is not None:
        what = "etcd at" if obs.mode == "etcd" else "the Kubernetes API at"
        p(
            f"datastore unreachable: {what} {obs.endpoint}: {obs.datastore_error}. The lease, "
            "the peers and the diff could not be checked; the kernel side is shown as it is."
        )
    elif obs.config_error is not None or backend_error is not None:
        p(f"network config unusable: {obs.config_error or backend_error}")
    elif cfg is not None and cfg.backend_type not in SUPPORTED_BACKENDS:
        p(
            f"the network config's backend type is {cfg.backend_type!r}; flanneld-py supports "
            f"only {' and '.join(SUPPORTED_BACKENDS)}, so the daemon refuses to start"
        )
    lease_only = is_lease_only(cfg)
    host_gw = is_host_gw(cfg)

    # this node's lease
    families = families_of(obs)
    if own is None and obs.own_error is not None and obs.datastore_error is None:
        p(obs.own_error)
    if own is not None and obs.datastore_error is None:
        if lease_only and own.public_ip is None:
            p(
                f"this node's lease ({own.key}) does not publish a public IP; flanneld-py "
                "publishes it at start — is it running?"
            )
        for version in () if lease_only else families:
            _lease_problems(own, version, host_gw, p)
        if obs.mode == "etcd" and own.lease_id != 0 and own.ttl is None:
            p(
                f"this node's lease {own.key} has expired (its etcd lease is gone): other nodes "
                "will drop their routes to it; a running flanneld-py re-acquires it"
            )

    # subnet.env
    env_subnets: dict[int, Net | None] = {}
    if obs.env_error is not None:
        p(f"subnet.env {obs.subnet_file} cannot be read: {obs.env_error}")
    elif env is None:
        p(
            f"subnet.env missing: {obs.subnet_file} does not exist, so the flannel CNI plugin "
            "cannot set up new pods on this node; flanneld-py writes it once it holds a lease "
            "(is it running, with this --subnet-file? its log says why it has not)"
        )
    else:
        for version in families:
            env_subnets[version] = _env_problems(obs, env, version, p)
        if _int(env.get("FLANNEL_MTU")) is None:
            p(f"subnet.env {obs.subnet_file} has no valid FLANNEL_MTU")

    # external interface and the devices
    if obs.iface_error is not None:
        p(f"interface not found: {obs.iface_error}")
    carriers: list[tuple[LinkState, str]] = []  # the devices pods' packets go through
    if lease_only:
        pass  # alloc: no device to check
    elif host_gw:
        _interface_problems(obs, p)
    elif cfg is None and _last_backend(obs) in ("alloc", hostgw.BACKEND_TYPE):
        pass  # config unread, but the daemon last ran a backend without a device
    else:
        for version in families:
            side = obs.side(version)
            if side.kernel_error is not None:
                p(f"cannot read the kernel's state of {side.device_name}: {side.kernel_error}")
            elif side.device is None:
                p(
                    f"device missing: {side.device_name} does not exist, so this node has no "
                    f"{'' if version == 4 else 'IPv6 '}overlay (no pod traffic to or from other "
                    "nodes); flanneld-py creates it at start — is it running? its log says why "
                    "it could not (e.g. interface not found)"
                )
            else:
                carriers.append((side.device, side.device_name))
                _device_problems(obs, side, version, vx, env_subnets.get(version), p,
                                 warnings.append)  # fmt: skip

    # MTU seen by pods: the device's (vxlan; dual stack: the smaller one, as the daemon's
    # FLANNEL_MTU), the external interface's (host-gw)
    env_mtu = _int(env.get("FLANNEL_MTU")) if env is not None else None
    carrier: LinkState | None = None
    carrier_name, path = obs.device_name, "the overlay"
    if carriers:
        carrier, carrier_name = min(carriers, key=lambda c: c[0].mtu)
    if host_gw:
        carrier, carrier_name, path = obs.iface, obs.iface_name or "the interface", "the network"
    if env_mtu is not None and carrier is not None and carrier.mtu and env_mtu != carrier.mtu:
        effect = (
            f"pods send packets {path} cannot carry: large packets are dropped and TCP "
            "connections stall after the handshake"
            if env_mtu > carrier.mtu
            else f"pods use a smaller MTU than {path} carries (works, but wastes capacity)"
        )
        p(
            f"MTU mismatch: pods get MTU {env_mtu} (FLANNEL_MTU in subnet.env) but "
            f"{carrier_name} has MTU {carrier.mtu}: {effect}. Restart flanneld-py; pods created "
            "before keep their MTU until recreated"
        )
    br = obs.cni_bridge
    if env_mtu is not None and br is not None and br.mtu and br.mtu != env_mtu:
        p(
            f"MTU mismatch: the pods' bridge {CNI_BRIDGE} has MTU {br.mtu} but FLANNEL_MTU in "
            f"subnet.env is {env_mtu}: pods created before the change use the old MTU; recreate "
            f"them (and {CNI_BRIDGE} if no pod is left on it)"
        )

    # traffic rules
    rules = obs.rules
    if rules is not None and rules.get("error"):
        warnings.append(f"could not check the {rules['mode']} rules: {rules['error']}")
    elif rules is not None and rules.get("missing"):
        p(
            f"traffic rules missing ({rules['mode']} mode): {', '.join(rules['missing'])}: "
            "without the masquerade rules pods cannot reach outside the cluster, without the "
            "forward rules a DROP forward policy cuts pod traffic; a running flanneld-py writes "
            "them again within --iptables-resync"
        )

    # skipped peers and the daemon
    for item in obs.invalid:
        warnings.append(f"unreadable lease {item[0]} skipped: {item[1]}")
    st = obs.state
    if st is None:
        warnings.append(
            f"no daemon state file at {state_path(obs.subnet_file)}: the daemon's last error "
            "and last sync are unknown"
        )
    elif obs.daemon_alive is False:
        warnings.append(
            f"the daemon (pid {st.get('pid')}) is not running: the kernel keeps its entries "
            "but no longer follows changes in the datastore"
        )
    return problems, warnings


def _lease_problems(
    own: OwnLease, version: int, host_gw: bool, problem: Callable[[str], None]
) -> None:
    """Add what this node's lease lacks for IP `version`: the public IP (host-gw), or the VTEP
    MAC and public IP (vxlan) peers need to reach it."""
    if host_gw and own.public(version) is None:
        ip, route = ("public IP", "route") if version == 4 else ("public IPv6", "IPv6 route")
        problem(
            f"this node's lease ({own.key}) does not publish a {ip}: peers have no "
            f"gateway for their {route} to this node's pods; flanneld-py publishes it at "
            "start — is it running?"
        )
    elif not host_gw and (own.mac(version) is None or own.public(version) is None):
        what = "a VTEP MAC and public IP" if version == 4 else "an IPv6 VTEP MAC (BackendV6Data) "
        what += "" if version == 4 else "and PublicIPv6"
        traffic = "traffic" if version == 4 else "IPv6 traffic"
        problem(
            f"this node's lease ({own.key}) does not publish {what}: peers "
            f"cannot send {traffic} to this node's pods; flanneld-py publishes them at start — "
            "is it running?"
        )


def _env_problems(
    obs: Observed, env: Mapping[str, str], version: int, problem: Callable[[str], None]
) -> Net | None:
    """Add what is wrong with subnet.env's network and subnet of IP `version` (FLANNEL_NETWORK
    and FLANNEL_SUBNET, or FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET) against the lease and
    the config; returns subnet.env's subnet of that version (None when invalid)."""
    own, cfg = obs.own, obs.config
    net_key, subnet_key = ENV_KEYS[version]
    env_subnet = env_net(env, subnet_key, version)
    own_subnet = own.subnet_of(version) if own is not None else None
    if env_subnet is None:
        problem(f"subnet.env {obs.subnet_file} has no valid {subnet_key}")
    elif own_subnet is not None and own_subnet != env_subnet:
        lease = "lease" if version == 4 else "lease's IPv6 subnet"
        problem(
            f"subnet.env says {subnet_key}={env.get(subnet_key)} but this node's "
            f"{lease} is {own_subnet}: new pods get addresses that other nodes route "
            "elsewhere; restart flanneld-py to rewrite subnet.env"
        )
    want = cfg.family(version).network if cfg is not None else None
    if want is not None and env_net(env, net_key, version) != want:
        problem(
            f"subnet.env says {net_key}={env.get(net_key)} but the network "
            f"config says {want}; restart flanneld-py to rewrite subnet.env"
        )
    return env_subnet


def _interface_problems(obs: Observed, problem: Callable[[str], None]) -> None:
    """Add what is wrong with the external interface of a host-gw node, which carries the routes
    of every enabled family (its absence is reported with the interface selection)."""
    iface, name, own = obs.iface, obs.iface_name or "the external interface", obs.own
    families = families_of(obs)
    for version in families:
        error = obs.side(version).kernel_error
        if error is not None:
            fam = "" if version == 4 else "IPv6 "
            problem(f"cannot read the kernel's {fam}routes on {name}: {error}")
    if iface is None:
        return
    if not iface.up:
        problem(f"{name} is down: no pod traffic to or from other nodes; `ip link set {name} up`")
    for version, addr in ((4, obs.iface_addr), (6, obs.iface_v6_addr)):
        public = own.public(version) if own is not None else None
        if version in families and public and addr:
            try:
                hostgw.check_not_behind_nat(name, addr, public)
            except hostgw.BehindNat as err:
                problem(f"this node's lease: {err}")


def _device_problems(
    obs: Observed,
    side: DeviceSide,
    version: int,
    vx: VXLANConfig | None,
    env_subnet: Net | None,
    problem: Callable[[str], None],
    warning: Callable[[str], None],
) -> None:
    """Add what is wrong with the existing device of IP `version` (`side.device`); `vx` are the
    config's settings (None: unknown), `env_subnet` the subnet of that version in subnet.env.
    Checked: kind, VNI, port, state, underlay interface, the VTEP address (`/32`, `/128`), the
    MAC against the lease's (BackendData / BackendV6Data VtepMAC), the local address against
    the lease's public IP, the MTU (underlay or Backend.MTU minus 50 bytes on an IPv4 underlay,
    70 on an IPv6 one: `backend.vxlan.overlay_mtu`)."""
    dev, own, name = side.device, obs.own, side.device_name
    assert dev is not None
    if dev.kind != "vxlan":
        problem(f"{name} is a {dev.kind or 'non-VXLAN'} link, not a VXLAN device")
        return
    if vx is not None and dev.vni != vx.vni:
        problem(f"{name} has VNI {dev.vni} but the network config says {vx.vni}")
    want_port = (vx.port if vx is not None else 0) or KERNEL_DEFAULT_PORT
    if vx is not None and (dev.port or KERNEL_DEFAULT_PORT) != want_port:
        problem(
            f"{name} uses UDP port {dev.port} but the network config says {want_port}: the "
            "nodes cannot decode each other's packets; restart flanneld-py to recreate it"
        )
    if not dev.up:
        problem(f"{name} is down: no overlay traffic passes; `ip link set {name} up`")
    if dev.lower_index and side.lower is None:
        problem(
            f"interface not found: {name}'s underlay interface (index {dev.lower_index}) no "
            "longer exists; restart flanneld-py to recreate the device on the current one"
        )
    elif side.lower_name and obs.iface_name and side.lower_name != obs.iface_name:
        warning(
            f"{name} sends through {side.lower_name} but these flags select {obs.iface_name}; "
            "the daemon recreates the device on start (or it runs with other --iface flags)"
        )
    subnet = (own.subnet_of(version) if own is not None else None) or env_subnet
    if subnet is not None:
        want = f"{subnet.network_address}/{32 if version == 4 else 128}"
        if want not in side.device_addresses:
            problem(
                f"{name} lacks its VTEP address {want} (it has "
                f"{', '.join(side.device_addresses) or 'none'}): peers' replies to this node's "
                "VTEP are not accepted; restart flanneld-py"
            )
    mac = own.mac(version) if own is not None else None
    if mac and mac != dev.mac:
        problem(
            f"this node's lease publishes VTEP MAC {mac} but {name} has MAC {dev.mac}: "
            "other nodes address their traffic to the wrong MAC and it is dropped; restart "
            "flanneld-py to publish the device's MAC"
        )
    public = own.public(version) if own is not None else None
    if (
        own is not None
        and public
        and dev.local
        and not own.overwritten(version)
        and ipaddress.ip_address(public) != ipaddress.ip_address(dev.local)
    ):
        problem(
            f"this node's lease publishes public IP {public} but {name} sends from "
            f"{dev.local}; restart flanneld-py"
        )
    if side.lower is not None and side.lower.mtu and vx is not None:
        base, source = (vx.mtu, "Backend.MTU") if vx.mtu else (side.lower.mtu, side.lower_name)
        want_mtu = overlay_mtu(base, bool(dev.local and ":" in dev.local))
        overhead = base - want_mtu
        if dev.mtu != want_mtu:
            problem(
                f"MTU mismatch: {name} has MTU {dev.mtu} but should have {want_mtu} "
                f"({source} MTU {base} minus {overhead} bytes of VXLAN overhead); flanneld-py "
                "corrects it at start"
            )


def _last_backend(obs: Observed) -> str | None:
    """The backend type the daemon last ran (`backend` in its state file), or None."""
    value = (obs.state or {}).get("backend")
    return value if isinstance(value, str) else None


def is_lease_only(cfg: NetworkConfig | None) -> bool:
    """True for the `alloc` backend: a lease and subnet.env, no device and no peers."""
    return cfg is not None and cfg.backend_type == "alloc"


def is_host_gw(cfg: NetworkConfig | None) -> bool:
    """True for the `host-gw` backend: no device, a route per peer on the external interface."""
    return cfg is not None and cfg.backend_type == hostgw.BACKEND_TYPE


def backend_settings(cfg: NetworkConfig | None) -> tuple[VXLANConfig | None, str | None]:
    """(the config's vxlan Backend settings, None) or (None, why they are unusable); (None, None)
    without a config or for another backend type."""
    if cfg is None or cfg.backend_type != "vxlan":
        return None, None
    try:
        return parse_vxlan_config(cfg.backend), None
    except ConfigError as err:
        return None, str(err)


def env_v4(env: Mapping[str, str] | None, key: str) -> ipaddress.IPv4Network | None:
    """The IPv4 network of `key` (FLANNEL_SUBNET, FLANNEL_NETWORK) in subnet.env values, masked;
    None when absent or unparsable."""
    net = previous_cidr(dict(env), key, 4) if env else None
    return net if isinstance(net, ipaddress.IPv4Network) else None


def env_net(env: Mapping[str, str] | None, key: str, version: int) -> Net | None:
    """The network of IP `version` of `key` in subnet.env values (FLANNEL_SUBNET,
    FLANNEL_IPV6_NETWORK...), masked; None when absent or unparsable."""
    return previous_cidr(dict(env), key, version) if env else None


def build_report(obs: Observed, now: float | None = None) -> dict[str, Any]:
    """The report: a JSON-ready dict with these keys (stable; more may be added).

    - mode ("etcd"|"kube"), datastore {endpoint, reachable, error}, network {network, backend_type,
      vni, port, direct_routing} or null;
    - lease {found, source, key, node, subnet, expires (text), expires_at (Unix s), ttl (s),
      reservation, public_ip, vtep_mac, backend_type, error};
    - subnet_env {path, exists, values};
    - device {name, exists, needed (false for alloc and host-gw: no device), kind, up, mtu, mac,
      vni, port, local, addresses, lower}; interface (the external one) {name, exists, kind, up,
      mtu, mac, address, error}; cni_bridge {name, exists, mtu, ...};
    - peers {count, known (false when the datastore could not be read), direct, overlay (how
      many peers of each kind), entries [{key, subnet, public_ip, kind: "direct"|"overlay"}],
      skipped [{key, reason}]};
    - diff {checked, missing, wrong, unexpected} (items: see `classify_diff`);
    - daemon {state_file, found, pid, running, ready, peers, started, updated, last_full_sync,
      last_error {time, message} or null};
    - rules {mode: "iptables"|"nftables", masquerade, forward (the flags), checked, missing
      [what is absent], error, variant (iptables mode: "nft"|"legacy"|"")} or null (config or
      subnet unknown);
    - ipv6 (a network with EnableIPv6; else null) {device, peers, diff, in_sync}: the same
      sections for `flannel-v6.<VNI>` (host-gw: the IPv6 routes on the external interface);
      `peers.partial` [{key, reason}] lists peers without an entry of that family;
    - problems [sentences], warnings [sentences], in_sync (bool: the diff of every enabled
      family checked and empty), healthy (bool: in_sync and no problems).

    The top-level device, peers and diff are the IPv4 side; on an IPv6-only network the IPv4
    device is not `needed`, no IPv4 peer is desired and its diff counts as checked and empty.
    `network` also has ipv6_network and families ([4], [6] or [4, 6]); `lease` ipv6_subnet,
    public_ipv6, vtep_mac_v6; `interface` address_v6 (when IPv6 is enabled); `rules` families.

    With the alloc backend (`network.backend_type` "alloc") no peers are desired and the kernel is
    not compared: `peers.count` is 0 and `in_sync` is true once the datastore could be read. With
    host-gw every peer is "direct" and the kernel side is the routes on the external interface
    (not compared while that interface is unknown).
    """
    now = time.time() if now is None else now
    cfg = obs.config
    vx, backend_error = backend_settings(cfg)
    known = (
        obs.datastore_error is None
        and cfg is not None
        and obs.config_error is None
        and backend_error is None
    )
    families = families_of(obs)
    own_key = obs.own.key if obs.own else (obs.node if obs.mode == "kube" else None)
    lease_only = is_lease_only(cfg)
    host_gw = is_host_gw(cfg)
    networks = {v: _network(obs, v) for v in families}
    own_subnets = {v: _own_subnet(obs, v) for v in families}
    problems, warnings = check_problems(obs)
    skipped: list[dict[str, str]] = []
    per_family: dict[int, dict[str, Any]] = {}
    for version in (4, 6):
        side = obs.side(version)
        enabled = version in families
        direct_ips = side.direct_ips if vx is not None and vx.direct_routing else None
        desired: dict[str, PeerEntry] = {}
        partial: list[dict[str, str]] = []
        if known and cfg is not None and not lease_only and enabled:
            desired, skipped, partial = family_peers(
                obs.leases, own_key, own_subnets, networks, version, cfg.backend_type, direct_ips
            )
        readable = side.kernel_error is None and (side.kernel is not None or not host_gw)
        checked = known and (lease_only or readable or not enabled)
        if checked and enabled and not lease_only:
            classified = classify_diff(desired, side.kernel or KernelState())
        else:
            classified = {"missing": [], "wrong": [], "unexpected": []}
        in_sync = checked and not any(classified.values())
        if checked and not in_sync:
            counts = ", ".join(f"{len(v)} {k}" for k, v in classified.items() if v)
            what = "routes" if host_gw else "overlay entries"
            fam = "" if version == 4 else "IPv6 "
            problems.append(
                f"out of sync: the kernel's {fam}{what} differ from what the datastore's peers "
                f"need ({counts}); a running flanneld-py repairs this within --resync-period"
            )
        for item in partial:
            warnings.append(f"peer {item['key']} has no IPv{version} entry ({item['reason']}): "
                            f"reachable over the other family only")  # fmt: skip
        per_family[version] = {
            "device": _device_section(obs, version),
            "peers": _peers_section(desired, known, [], partial if enabled else None),
            "diff": {"checked": checked, **classified},
            "in_sync": in_sync,
        }
    warnings[:0] = [f"peer {s['key']} skipped: {s['reason']}" for s in skipped]
    v4 = per_family[4]
    v4["peers"]["skipped"] = skipped
    in_sync = v4["in_sync"] and (6 not in families or per_family[6]["in_sync"])
    ipv6 = None
    if 6 in families:
        ipv6 = per_family[6]
        ipv6["peers"]["skipped"] = skipped
    return {
        "mode": obs.mode,
        "datastore": {
            "endpoint": obs.endpoint,
            "reachable": obs.datastore_error is None,
            "error": obs.datastore_error,
        },
        "network": None
        if cfg is None
        else {
            "network": str(cfg.network) if cfg.network and 4 in families else None,
            "ipv6_network": str(cfg.ipv6_network) if cfg.ipv6_network and 6 in families else None,
            "families": list(families),
            "backend_type": cfg.backend_type,
            "vni": vx.vni if vx else None,
            "port": (vx.port or KERNEL_DEFAULT_PORT) if vx else None,
            "direct_routing": vx.direct_routing if vx else None,
        },
        "lease": _lease_section(obs, now),
        "subnet_env": {
            "path": obs.subnet_file,
            "exists": obs.env is not None,
            "values": dict(obs.env or {}),
        },
        "device": v4["device"],
        "interface": _interface_section(obs),
        "cni_bridge": _link_dict(obs.cni_bridge, CNI_BRIDGE),
        "peers": v4["peers"],
        "diff": v4["diff"],
        "ipv6": ipv6,
        "daemon": _daemon_section(obs, now),
        "rules": obs.rules,
        "problems": problems,
        "warnings": warnings,
        "in_sync": in_sync,
        "healthy": in_sync and not problems,
    }


def families_of(obs: Observed) -> tuple[int, ...]:
    """The enabled IP versions: the config's (`EnableIPv4`, `EnableIPv6`); without a config,
    those subnet.env names (FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET); else (4,)."""
    if obs.config is not None and obs.config.families:
        return obs.config.families
    found = tuple(v for v in (4, 6) if obs.env and ENV_KEYS[v][1] in obs.env)
    return found or (4,)


def _network(obs: Observed, version: int) -> Net | None:
    """The cluster network of IP `version`: the config's, else subnet.env's."""
    net = obs.config.family(version).network if obs.config is not None else None
    return net or env_net(obs.env, ENV_KEYS[version][0], version)


def _own_subnet(obs: Observed, version: int) -> Net | None:
    """This node's subnet of IP `version`: its lease's, else subnet.env's."""
    own = obs.own.subnet_of(version) if obs.own is not None else None
    return own or env_net(obs.env, ENV_KEYS[version][1], version)


def exit_code(report: Mapping[str, Any]) -> int:
    """0 when the report is in sync and has no problems, else 1."""
    return 0 if report["in_sync"] and not report["problems"] else 1


def _row(label: str, value: Any) -> str:
    return f"  {label:<13}{value}"


def _yes(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "no")


def render_text(report: Mapping[str, Any], now: float | None = None) -> str:
    """The report as the readable sections `flanneld-py status` prints."""
    now = time.time() if now is None else now
    out: list[str] = []
    add = out.append
    ds = report["datastore"]
    where = "etcd" if report["mode"] == "etcd" else "Kubernetes API"
    reach = "reachable" if ds["reachable"] else "UNREACHABLE"
    add(f"Datastore     {where} {ds['endpoint']} ({reach})")
    net = report["network"]
    lease_only = net is not None and net["backend_type"] == "alloc"
    host_gw = net is not None and net["backend_type"] == hostgw.BACKEND_TYPE
    direct_routing = net is not None and bool(net.get("direct_routing"))
    families = (net.get("families") if net is not None else None) or [4]
    if net is not None:
        dr = " with DirectRouting" if direct_routing else ""
        nets = [n for n in (net["network"], net.get("ipv6_network")) if n] or [None]
        add(f"Network       {', '.join(str(n) for n in nets)}, backend {net['backend_type']}{dr}")
    add("")

    lease = report["lease"]
    title = "Lease" if report["mode"] == "etcd" else f"Lease (node {lease['node']})"
    add(title)
    if lease["found"]:
        key = f" (key {lease['key']})" if report["mode"] == "etcd" else ""
        if 4 in families:
            add(_row("subnet", f"{lease['subnet']}{key}"))
            key = ""
        if 6 in families:
            add(_row("IPv6 subnet", f"{lease.get('ipv6_subnet')}{key}"))
        add(_row("expires", lease["expires"]))
        if 4 in families:
            add(_row("public IP", lease["public_ip"] or "(not published)"))
            if not lease_only and not host_gw:
                add(_row("VTEP MAC", lease["vtep_mac"] or "(not published)"))
        if 6 in families:
            add(_row("public IPv6", lease.get("public_ipv6") or "(not published)"))
            if not lease_only and not host_gw:
                add(_row("VTEP MAC v6", lease.get("vtep_mac_v6") or "(not published)"))
    elif ds["reachable"]:
        add("  none found for this node")
    else:
        add("  unknown (datastore unreachable)")
    add("")

    env = report["subnet_env"]
    add(f"subnet.env    {env['path']}")
    if env["exists"]:
        for key, value in env["values"].items():
            add(f"  {key}={value}")
    else:
        add("  (missing)")
    add("")

    dev = report["device"]
    iface = report["interface"]
    if lease_only:
        add("Device        none (backend alloc: leases only, no datapath)")
    elif host_gw:
        on = iface["name"] or "the external interface"
        add(f"Device        none (backend host-gw: a route per peer via its public IP on {on})")
        add(f"Interface     {iface['name'] or '(not found)'}")
        if iface["exists"]:
            add(_row("state", "up" if iface["up"] else "DOWN"))
            add(_row("MTU", iface["mtu"]))
            if 4 in families:
                add(_row("address", iface["address"] or "-"))
            if 6 in families:
                add(_row("IPv6 address", iface.get("address_v6") or "-"))
        elif iface["error"]:
            add(f"  {iface['error']}")
    else:
        if 4 in families:
            _render_device(add, "Device        ", dev)
        if report.get("ipv6"):
            _render_device(add, "Device IPv6   ", report["ipv6"]["device"])
    br = report["cni_bridge"]
    if br["exists"]:
        add(_row(f"{br['name']} MTU", br["mtu"]))
    add("")

    sides = [("", report["peers"], report["diff"])] if 4 in families else []
    if report.get("ipv6"):
        sides.append((" IPv6", report["ipv6"]["peers"], report["ipv6"]["diff"]))
    for fam, peers, _d in sides:
        _render_peers(add, f"Peers{fam}".ljust(14), peers, lease_only, host_gw or direct_routing)
    add("")
    for fam, peers, d in sides:
        ok = d["checked"] and not (d["missing"] or d["wrong"] or d["unexpected"])
        _render_datapath(add, f"Datapath{fam}".ljust(14), peers, d, ok, lease_only,
                         host_gw or direct_routing)  # fmt: skip
    add("")

    rules = report.get("rules")
    if rules is not None:
        flags = f"masquerade {_yes(rules['masquerade'])}, forward {_yes(rules['forward'])}"
        if rules.get("error"):
            state = f"not checked: {rules['error']}"
        elif not rules["masquerade"] and not rules["forward"]:
            state = "none asked for"
        else:
            state = "MISSING" if rules["missing"] else "present"
        variant = f"-{rules['variant']}" if rules.get("variant") else ""
        fams = {(4,): "", (6,): " IPv6", (4, 6): " IPv4+IPv6"}.get(
            tuple(rules.get("families") or (4,)), ""
        )
        add(f"Traffic rules {rules['mode']}{variant}{fams} ({flags}): {state}")
        for item in rules["missing"][:TEXT_LIMIT]:
            add(f"  missing    {item}")
        add("")

    dm = report["daemon"]
    add(f"Daemon        state file {dm['state_file']}")
    if dm["found"]:
        running = {True: "running", False: "NOT RUNNING", None: "unknown"}[dm["running"]]
        add(_row("pid", f"{dm['pid']} ({running})"))
        add(_row("ready", _yes(dm["ready"])))
        sync = dm["last_full_sync"]
        if lease_only:
            add(_row("last sync", "- (backend alloc: nothing to sync)"))
        else:
            add(_row("last sync", "never" if not sync else f"{_fmt_time(sync)} "
                     f"({_fmt_age(now - sync)} ago)"))  # fmt: skip
        err = dm["last_error"]
        if err:
            at = f"{_fmt_time(err['time'])}: " if err.get("time") else ""
            add(_row("last error", f"{at}{err.get('message')}"))
        else:
            add(_row("last error", "none"))
    else:
        add("  (no state file)")
    add("")

    if report["problems"]:
        add("Problems")
        for text in report["problems"]:
            add(f"  - {text}")
        add("")
    if report["warnings"]:
        add("Warnings")
        for text in report["warnings"]:
            add(f"  - {text}")
        add("")
    add("Result        " + ("OK: in sync and healthy" if report["healthy"] else "NOT OK"))
    return "\n".join(out) + "\n"


def _col(text: str, width: int) -> str:
    """`text` padded to a column of `width` characters, or followed by one space when longer
    (dual-stack keys, IPv6 addresses)."""
    return f"{text:<{width}}" if len(text) < width else f"{text} "


def _render_device(add: Callable[[str], None], title: str, dev: Mapping[str, Any]) -> None:
    add(f"{title}{dev['name']}")
    if dev["exists"]:
        add(_row("state", "up" if dev["up"] else "DOWN"))
        add(_row("MTU", dev["mtu"]))
        add(_row("MAC", dev["mac"]))
        add(_row("VNI / port", f"{dev['vni']} / {dev['port']}"))
        local = dev["local"] or "-"
        add(_row("local", local + (f" (via {dev['lower']})" if dev["lower"] else "")))
        add(_row("address", ", ".join(dev["addresses"]) or "(none)"))
    else:
        add("  (does not exist)")


def _render_peers(
    add: Callable[[str], None],
    title: str,
    peers: Mapping[str, Any],
    lease_only: bool,
    kinds: bool,
) -> None:
    if lease_only:
        add(f"{title}not programmed (backend alloc)")
    elif peers["known"] and kinds:
        add(f"{title}{peers['count']} ({peers['direct']} direct, {peers['overlay']} overlay)")
        for p in peers["entries"][:TEXT_LIMIT]:
            add(f"  {p['kind']:<9}{_col(p['subnet'], 20)}via {_col(p['public_ip'], 17)}{p['key']}")
        if len(peers["entries"]) > TEXT_LIMIT:
            add(f"  ... and {len(peers['entries']) - TEXT_LIMIT} more (see --json)")
        for s in peers["skipped"]:
            add(f"  skipped {s['key']}: {s['reason']}")
    elif peers["known"]:
        add(f"{title}{peers['count']}")
        for s in peers["skipped"]:
            add(f"  skipped {s['key']}: {s['reason']}")
    else:
        add(f"{title}unknown (datastore not read)")
    for s in peers.get("partial") or []:
        add(f"  partial {s['key']}: {s['reason']}")


def _render_datapath(
    add: Callable[[str], None],
    title: str,
    peers: Mapping[str, Any],
    d: Mapping[str, Any],
    in_sync: bool,
    lease_only: bool,
    kinds: bool,
) -> None:
    if not d["checked"]:
        add(f"{title}not compared (needs the datastore and the kernel)")
    elif lease_only:
        add(f"{title}nothing to program (backend alloc)")
    elif in_sync and not kinds:
        add(f"{title}in sync ({peers['count']} peers x neighbour, FDB, route)")
    elif in_sync:
        parts = []
        if peers["direct"]:
            parts.append(f"{peers['direct']} x route via public IP")
        if peers["overlay"]:
            parts.append(f"{peers['overlay']} x neighbour, FDB, route")
        add(f"{title}in sync ({peers['count']} peers" + (
            f": {'; '.join(parts)})" if parts else ")"))  # fmt: skip
    else:
        add(f"{title}OUT OF SYNC (desired vs kernel)")
        add(f"  {'STATE':<11}{'KIND':<7}{'PEER':<18}ENTRY")
        for state in ("missing", "wrong", "unexpected"):
            items = d[state]
            for item in items[:TEXT_LIMIT]:
                add(f"  {state:<11}{item['kind']:<7}{_col(item['peer'] or '-', 18)}{item['text']}")
            if len(items) > TEXT_LIMIT:
                add(f"  {state:<11}... and {len(items) - TEXT_LIMIT} more (see --json)")


# --- I/O: the datastore, the kernel, the files ---------------------------------------------------


def pid_alive(pid: Any) -> bool | None:
    """Whether a flanneld process runs with `pid` (None when `pid` is not a number). A pid reused
    by another program counts as not running."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rpartition(b")")[2].split()[:1] == [b"Z"]:
                return False  # exited, not yet reaped
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return True
    return not cmdline or b"flanneld" in cmdline  # empty while a process is being exec'd


def _read_env(obs: Observed) -> None:
    if not os.path.exists(obs.subnet_file):
        return
    try:
        obs.env = read_env_file(obs.subnet_file)
    except OSError as err:
        obs.env_error = err.strerror or str(err)


def _read_etcd(opts: Options, obs: Observed) -> Any:
    """Config and leases from etcd into `obs`; returns the registry (for the TTL) or None."""
    from subnet.config import check_network_config, parse_config
    from subnet.etcd import EtcdOptions, EtcdRegistry, decode_lease

    registry = EtcdRegistry(EtcdOptions.from_flags(opts))
    try:
        try:
            obs.config = check_network_config(parse_config(registry.get_config()))
        except (ConfigError, ConfigNotFound) as err:
            obs.config_error = str(err)
        items, _ = registry.list_subnets()
    except (DatastoreUnavailable, OSError) as err:
        obs.datastore_error = str(err)
        registry.close()
        return None
    for item in items:
        try:
            lease = decode_lease(item)
        except LeaseFormatError as err:
            obs.invalid.append((item.key.rsplit("/", 1)[-1], str(err)))
            continue
        obs.leases.append((lease.key, lease))
    return registry


def _names(opts: Options) -> AnnotationNames:
    """The kube annotation names of `--kube-annotation-prefix` (validated in `main`)."""
    return AnnotationNames.for_prefix(opts.kube_annotation_prefix)


def _read_kube(opts: Options, obs: Observed) -> dict[str, Any] | None:
    """Config, this Node and every peer Node into `obs`; returns this node's Node (or None)."""
    from subnet.kube import API_ERRORS, LIST_PAGE, KubeSubnetManager, api_client

    names = _names(opts)
    try:
        api = api_client(opts.kube_api_url, opts.kubeconfig_file)
    except KubeError as err:
        obs.datastore_error = str(err)
        return None
    obs.endpoint = str(getattr(api.api_client.configuration, "host", "") or obs.endpoint)
    try:
        try:
            obs.node = KubeSubnetManager.node_name_from_env(api)
        except KubeError as err:
            obs.datastore_error = str(err)
            return None
        sm = KubeSubnetManager(api, obs.node, opts.net_config_path, opts.kube_annotation_prefix)
        try:
            obs.config = sm.get_network_config()
        except ConfigError as err:
            obs.config_error = str(err)
        try:
            node = sm.read_node()
        except KubeError as err:
            obs.own_error = f"no lease for this node: {err}"
            node = None
        if node is not None:
            _own_from_node(obs, node, names)
        if obs.config is None:
            return node
        cont: str | None = None
        while True:
            page = api.list_nodes(LIST_PAGE, cont)
            for item in page.get("items") or []:
                name = node_name(item)
                try:
                    lease = node_to_lease(item, names, obs.config)
                except LeaseFormatError as err:
                    obs.invalid.append((name, str(err)))
                    continue
                if lease is not None:
                    obs.leases.append((name, lease))
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return node
    except DatastoreUnavailable as err:
        obs.datastore_error = str(err)
    except API_ERRORS as err:
        obs.datastore_error = f"{type(err).__name__}: {err}"
    finally:
        api.close()
    return None


def _own_from_node(obs: Observed, node: dict[str, Any], names: AnnotationNames) -> None:
    """This node's lease from its Node object: podCIDR, public-ip and backend-data annotations."""
    ann = (node.get("metadata") or {}).get("annotations") or {}
    try:
        v4, v6 = pod_cidrs(node)
    except LeaseFormatError as err:
        obs.own_error = f"this node's podCIDR is unusable: {err}"
        return
    families = families_of(obs)
    if 4 in families and v4 is None:
        obs.own_error = (
            f"podCIDR not assigned: node {obs.node!r} has no spec.podCIDR, so flanneld-py cannot "
            "start on it; is the controller manager running with --allocate-node-cidrs=true and "
            "a --cluster-cidr?"
        )
        return
    if 6 in families and v6 is None:
        obs.own_error = (
            f"podCIDR not assigned: node {obs.node!r} has no IPv6 podCIDR (spec.podCIDRs), so "
            "flanneld-py cannot start on it with EnableIPv6; is the controller manager running "
            "with --allocate-node-cidrs=true and an IPv6 --cluster-cidr?"
        )
        return
    obs.own = OwnLease(
        key=str(obs.node),
        subnet=v4 if 4 in families else None,
        public_ip=(ann.get(names.public_ip) or None) if 4 in families else None,
        vtep_mac=stored_mac(node, names.backend_data) if 4 in families else None,
        backend_type=str(ann.get(names.backend_type) or ""),
        public_ip_overwritten=bool(ann.get(names.public_ip_overwrite)),
        ipv6_subnet=v6 if 6 in families else None,
        public_ipv6=(ann.get(names.public_ipv6) or None) if 6 in families else None,
        vtep_mac_v6=stored_mac(node, names.backend_v6_data) if 6 in families else None,
        public_ipv6_overwritten=bool(ann.get(names.public_ipv6_overwrite)),
    )


def _read_kernel(obs: Observed, opts: Options, public_ip: str, public_ipv6: str = "") -> None:
    """The external interface, the pods' bridge, and the backend's kernel side of every enabled
    family into `obs`: with vxlan the device (`flannel.<VNI>`, `flannel-v6.<VNI>`) and its
    entries (with DirectRouting also the direct routes, and the daemon's decision for each peer
    public IP), with host-gw the routes on the interface, with alloc nothing more. Each dumped
    as the daemon's full pass dumps it."""
    from backend import netlink
    from flanneld_py.iface import ExternalInterface, InterfaceError, select_interface

    try:
        ipr = netlink.IPRoute()
    except OSError as err:
        obs.kernel_error = str(err)
        return
    cfg = obs.config
    families = families_of(obs)
    try:
        if cfg is None:
            obs.device_name = _guess_device(ipr) or obs.device_name
        obs.cni_bridge = netlink.get_link(ipr, CNI_BRIDGE)
        ext: ExternalInterface | None = None
        try:
            ext = select_interface(opts.iface, public_ip, ipr, regexes=opts.iface_regex,
                                   can_reach=opts.iface_can_reach, public_ipv6=public_ipv6,
                                   families=families)  # fmt: skip
            obs.iface_name, obs.iface_addr = ext.name, ext.iface_addr
            obs.iface_v6_addr = ext.iface_v6_addr or None
            obs.iface = netlink.get_link(ipr, ext.name)
        except InterfaceError as err:
            obs.iface_error = str(err)
        if is_lease_only(cfg):
            return
        vx, _ = backend_settings(cfg)
        for version in families:
            side = obs.side(version)
            if version == 6 and vx is not None:
                side.device_name = device_name(vx.vni, 6)
            try:
                _read_side(obs, side, ipr, version, vx, ext)
            except (OSError, netlink.NetlinkError) as err:
                side.kernel_error = str(err)
            _store_side(obs, version, side)
    except (OSError, netlink.NetlinkError) as err:
        obs.kernel_error = str(err)
    finally:
        ipr.close()


def _read_side(
    obs: Observed, side: DeviceSide, ipr: Any, version: int, vx: VXLANConfig | None, ext: Any
) -> None:
    """Read the kernel side of IP `version` into `side`: host-gw the routes on the external
    interface `ext` (None: not found), vxlan the device and its entries. Raises OSError,
    NetlinkError."""
    from backend import netlink

    network = _network(obs, version)
    if is_host_gw(obs.config):
        if ext is not None and network is not None:
            side.kernel = _host_gw_routes(ext, str(network), version)
        return
    dev = side.device = netlink.get_link(ipr, side.device_name)
    if vx is not None and vx.direct_routing:
        _direct_routing_decisions(obs, side, vx, network, version)
    if dev is None:
        return
    if dev.lower_index:
        side.lower_name = _link_name(ipr, dev.lower_index)
        if side.lower_name is not None:
            side.lower = netlink.get_link(ipr, side.lower_name)
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    side.device_addresses = [
        f"{a}/{plen}"
        for a, plen in netlink.link_addresses(ipr, dev.index, family)
        if version == 4 or not ipaddress.ip_address(a).is_link_local
    ]
    side.kernel = _device_entries(vx, dev, str(network) if network else None, version)


def _store_side(obs: Observed, version: int, side: DeviceSide) -> None:
    """Put the side read for IP `version` into `obs` (IPv4: the flat fields)."""
    if version == 6:
        obs.v6 = side
        return
    obs.device_name, obs.device, obs.device_addresses = (side.device_name, side.device,
                                                         side.device_addresses)  # fmt: skip
    obs.lower, obs.lower_name, obs.kernel = side.lower, side.lower_name, side.kernel
    obs.kernel_error, obs.direct_ips = side.kernel_error, side.direct_ips


def _vxlan_device(vx: VXLANConfig, dev: LinkState | None, network: Any, version: int = 4) -> Any:
    """The daemon's `VxlanDevice` of IP `version` for the existing link `dev` (None: absent),
    used read-only: its `dump` and `select` are what the daemon's full pass runs. Close it
    after use."""
    from backend.vxlan import VxlanDevice

    local = (dev.local if dev is not None else None) or ("0.0.0.0" if version == 4 else "::")
    lower = (dev.lower_index if dev is not None else None) or 0
    mac = dev.mac if dev is not None else None
    device = VxlanDevice(vx, version, local, lower, 1500, mac)
    device.index = dev.index if dev is not None else 0
    device.network = str(network) if network is not None else None
    return device


def _device_entries(
    vx: VXLANConfig | None, dev: LinkState, network: str | None, version: int = 4
) -> KernelState:
    """The device's entries as the daemon's full pass dumps them (`VxlanDevice.dump`); only the
    overlay entries (`owned_state`) when the config, so DirectRouting, is unknown."""
    if vx is None:
        from backend.nlbulk import BulkSocket
        from backend.vxlan import owned_state

        bulk = BulkSocket()
        try:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            return owned_state(bulk, dev.index, family, network)
        finally:
            bulk.close()
    device = _vxlan_device(vx, dev, network, version)
    try:
        state: KernelState = device.dump()
        return state
    finally:
        device.close()


def _direct_routing_decisions(
    obs: Observed, side: DeviceSide, vx: VXLANConfig, network: Any, version: int
) -> None:
    """DirectRouting: the daemon's decision (`VxlanDevice.select`: one route lookup per public
    IP) for the public IP of IP `version` of every vxlan lease, into `side.direct_ips`."""
    device = _vxlan_device(vx, side.device, network, version)
    pick = select_entry(version)
    try:
        for _key, lease in obs.leases:
            try:
                peer = peer_from_lease(lease)
            except PeerFormatError:
                continue
            entry = pick(peer) if peer is not None else None
            if entry is None or entry.public_ip in side.direct_ips:
                continue
            chosen = device.select(entry)
            side.direct_ips[entry.public_ip] = chosen is not None and chosen.direct
    finally:
        device.close()


def _host_gw_routes(ext: Any, network: str, version: int = 4) -> KernelState:
    """The host-gw routes of IP `version` on the external interface `ext`, as the daemon's full
    pass dumps them (`HostGwRoutes.dump`)."""
    routes = hostgw.HostGwRoutes(ext.index, max(ext.mtu, 1), version)
    try:
        routes.set_address("", network)
        return routes.dump()
    finally:
        routes.close()


def _guess_device(ipr: Any) -> str | None:
    """The one `flannel.<N>` VXLAN link, when the config (and so the VNI) is unknown."""
    found = []
    for msg in ipr.get_links():
        name = msg.get("IFLA_IFNAME") or ""
        if name.startswith("flannel.") and name[8:].isdigit():
            found.append(name)
    return found[0] if len(found) == 1 else None


def _link_name(ipr: Any, index: int) -> str | None:
    from backend.netlink import NetlinkError

    try:
        return str(ipr.link("get", index=index)[0].get("IFLA_IFNAME"))
    except NetlinkError:
        return None


def collect(opts: Options) -> Observed:
    """Read the datastore, subnet.env, the kernel (this network namespace) and the daemon's state
    file into an `Observed`. Never raises for what it reports (unreachable datastore, missing
    device...): those are recorded in the result."""
    mode = "kube" if opts.kube_subnet_mgr else "etcd"
    endpoint = opts.etcd_endpoints if mode == "etcd" else (opts.kube_api_url or "(in-cluster)")
    obs = Observed(mode=mode, endpoint=endpoint, subnet_file=opts.subnet_file)
    _read_env(obs)
    registry = None
    public_ip, public_ipv6 = opts.public_ip, opts.public_ipv6
    if mode == "etcd":
        registry = _read_etcd(opts, obs)
    else:
        node = _read_kube(opts, obs)
        ann = ((node or {}).get("metadata") or {}).get("annotations") or {}
        names = _names(opts)
        public_ip = ann.get(names.node_public_ip) or public_ip  # as the daemon
        public_ipv6 = ann.get(names.node_public_ipv6) or public_ipv6
    vx, _ = backend_settings(obs.config)
    if vx is not None:
        obs.device_name = device_name(vx.vni)
    _read_kernel(obs, opts, public_ip, public_ipv6)
    if registry is not None:
        try:
            _own_from_etcd(obs, opts, registry)
        finally:
            registry.close()
    _read_rules(obs, opts)
    obs.state = read_state(opts.subnet_file)
    if obs.state is not None:
        obs.daemon_alive = pid_alive(obs.state.get("pid"))
    return obs


def _own_from_etcd(obs: Observed, opts: Options, registry: Any) -> None:
    v6 = obs.v6 or DeviceSide("")
    families = families_of(obs)
    found, how = find_own_lease(
        obs.leases,
        env_v4(obs.env, "FLANNEL_SUBNET") if 4 in families else None,
        [*obs.device_addresses, *v6.device_addresses],
        obs.device.mac if obs.device else None,
        (opts.public_ip or (obs.device.local if obs.device else None) or obs.iface_addr)
        if 4 in families
        else None,
        _v6(env_net(obs.env, "FLANNEL_IPV6_SUBNET", 6)) if 6 in families else None,
        [v6.device.mac] if v6.device else [],
        (opts.public_ipv6 or (v6.device.local if v6.device else None) or obs.iface_v6_addr)
        if 6 in families
        else None,
    )
    if found is None:
        obs.own_error = (
            f"no lease for this node in the datastore ({how}; etcd has no matching key under "
            f"{opts.etcd_prefix.rstrip('/')}/subnets/): other nodes have no route to this node's "
            "pods; a running flanneld-py acquires one"
        )
        return
    key, lease = found
    try:
        ttl = registry.ttl(lease.lease_id)
    except DatastoreUnavailable as err:
        obs.datastore_error = str(err)
        ttl = None
    obs.own = OwnLease(
        key=key,
        subnet=lease.subnet,
        public_ip=str(lease.attrs.public_ip) if int(lease.attrs.public_ip) else None,
        vtep_mac=_vtep_mac(lease),
        backend_type=lease.attrs.backend_type,
        lease_id=lease.lease_id,
        ttl=ttl,
        ipv6_subnet=lease.ipv6_subnet,
        public_ipv6=str(lease.attrs.public_ipv6) if lease.attrs.public_ipv6 else None,
        vtep_mac_v6=_vtep_mac(lease, 6),
    )


def _read_rules(obs: Observed, opts: Options) -> None:
    """Whether flanneld's traffic rules for the flags (`--ip-masq`, `--iptables-forward-rules`)
    and this node's subnets are present, in the mode of the config's `EnableNFTables`, for
    every enabled family with a known network and subnet (`families`), into `obs.rules`.
    iptables mode: the daemon's rules (`masq_rules`, `forward_rules`) with `iptables` (IPv4)
    and `ip6tables` (IPv6), found by `Iptables.missing` and confirmed absent by `iptables -C`,
    in the variant the daemon picks (`detect_variant`, recorded as "variant": "nft", "legacy"
    or "" for the system's). nftables mode: the tables `flannel-ipv4` / `flannel-ipv6` and
    their chains (`postrtg`, `forward`) exist (the daemon itself compares the whole listing
    with the one it wrote, which only it has). Left None when no family's network and subnet
    are known."""
    cfg = obs.config
    if cfg is None:
        return
    inputs = []
    for version in families_of(obs):
        net, own = _network(obs, version), _own_subnet(obs, version)
        if cfg.family(version).network is not None and net is not None and own is not None:
            inputs.append((version, str(net), str(own)))
    if not inputs:
        return
    mode = "nftables" if cfg.enable_nftables else "iptables"
    rules: dict[str, Any] = {"mode": mode, "masquerade": opts.ip_masq,
                             "forward": opts.iptables_forward_rules, "checked": False,
                             "missing": [], "error": None,
                             "families": [v for v, _, _ in inputs]}  # fmt: skip
    obs.rules = rules
    if not (opts.ip_masq or opts.iptables_forward_rules):
        rules["checked"] = True
        return
    try:
        if mode != "nftables":
            from backend.iptables import detect_variant

            rules["variant"] = detect_variant()  # the daemon's choice: kubelet's variant
        for version, network, subnet in inputs:
            if mode == "nftables":
                rules["missing"] += _missing_nftables(opts, network, subnet, version)
            else:
                rules["missing"] += _missing_iptables(opts, network, subnet, rules["variant"],
                                                      version)  # fmt: skip
        rules["checked"] = True
    except FileNotFoundError as err:
        rules["error"] = f"{err.filename or 'the command'} is not installed"
    except (OSError, subprocess.SubprocessError, RuntimeError) as err:  # IptablesError, NftError
        rules["error"] = str(err)


def _missing_iptables(
    opts: Options, network: str, subnet: str, variant: str, version: int = 4
) -> list[str]:
    """The daemon's rules of IP `version` for the flags that are absent, as `TABLE -A CHAIN
    args` (IPv6: `ip6tables TABLE -A CHAIN args`), looked for in the iptables `variant` the
    daemon writes to ("nft", "legacy" or "": see `backend.iptables.detect_variant`)."""
    from backend.iptables import Iptables, forward_rules, masq_rules, rule_line

    ipt = Iptables(version, variant)
    wanted = []
    if opts.ip_masq:
        fully = not opts.ip_masq_fully_random_disable and ipt.supports_random_fully()
        wanted += masq_rules(network, subnet, fully)
    if opts.iptables_forward_rules:
        wanted += forward_rules(network)
    absent = [rule for rule in ipt.missing(wanted) if not ipt.exists(rule)]
    prefix = "" if version == 4 else "ip6tables "
    return [f"{prefix}{rule.table} {rule_line(rule)}" for rule in absent]


def _missing_nftables(opts: Options, network: str, subnet: str, version: int = 4) -> list[str]:
    """The daemon's nftables table and chains of IP `version` for the flags that are absent,
    as `table ip NAME` / `chain ip NAME CHAIN` (IPv6: `ip6`, table `flannel-ipv6`)."""
    from backend.nftables import FAMILIES, Nft, forward_chain, masq_chain, table_name

    listing = Nft().list_table(version)
    table = table_name(version)
    nft_family = FAMILIES[version][0]
    if listing is None:
        return [f"table {nft_family} {table}"]
    chains = []
    if opts.ip_masq:
        chains.append(masq_chain(network, subnet, False).name)
    if opts.iptables_forward_rules:
        chains.append(forward_chain(network).name)
    lines = [line.split() for line in listing.splitlines()]
    present = {words[1] for words in lines if len(words) > 1 and words[0] == "chain"}
    return [f"chain {nft_family} {table} {name}" for name in chains if name not in present]


# --- command line --------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    """`flanneld-py status [flags] [--json]`: print the report; returns the exit status (0 in sync
    and healthy, 1 not, 2 bad usage)."""
    prog = "flanneld-py status"
    try:
        values, rest = parse_flags(STATUS_FLAGS, argv)
        if rest:
            raise FlagError(f"unexpected argument {rest[0]!r}: status takes only flags")
        as_json = bool(values.pop("json"))
        opts = Options(**values)
        if not opts.kube_subnet_mgr:
            from subnet.etcd import parse_endpoints

            parse_endpoints(opts.etcd_endpoints)
        else:
            AnnotationNames.for_prefix(opts.kube_annotation_prefix)
    except HelpRequested:
        sys.stdout.write(usage(prog, STATUS_FLAGS, INTRO))
        return 0
    except (FlagError, ValueError) as err:  # ValueError: bad endpoints, annotation prefix
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    if opts.version:  # the daemon's flag: the same version, the same place (stderr)
        from flanneld_py import __version__

        print(__version__, file=sys.stderr)
        return 0
    root = logging.getLogger()
    if opts.v > 0:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                            format="%(levelname).1s %(name)s] %(message)s")  # fmt: skip
    elif not root.handlers:
        root.addHandler(logging.NullHandler())  # library warnings would clutter the report
    report = build_report(collect(opts))
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=False) + "\n")
    else:
        sys.stdout.write(render_text(report))
    return exit_code(report)
