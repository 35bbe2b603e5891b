"""The daemon: flanneld's start-up sequence (flannel `main.go`), then three workers.

Start-up, in flanneld's order: read the previous subnet.env, connect to the subnet manager, wait for
the network config, check br_netfilter (iptables mode), choose the external interface, create the
VXLAN device of each enabled family (`flannel.<VNI>`, `flannel-v6.<VNI>`; host-gw: none), acquire
the lease, give the devices their addresses, write the traffic rules (the other mode's removed,
masquerade and forward rules), write subnet.env, start the peer watch and the reconcilers, then
keep the lease renewed. SIGTERM and
SIGINT stop the workers and leave the devices, their entries and subnet.env in place, so a
restart does not interrupt traffic.

Workers (threads): the etcd watch feeds the desired peer table; one reconciler per device makes
the kernel match it (IPv4 and IPv6 share the code, parameterised by family: `Overlay`,
`select_entry`); the main thread renews the lease and re-acquires it if it is ever lost
(README "Compared with flanneld").

With the `alloc` backend (`backend.alloc`) the same sequence skips the device: the daemon acquires
and renews the lease and writes subnet.env, and runs no reconciler. In etcd mode the watch still
runs, only to notice this node's own lease being lost or overwritten (peers are ignored); in kube
mode there is no watch at all (as flanneld, which starts no Node informer for alloc).
"""

from __future__ import annotations

import collections
import gc
import ipaddress
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from backend import alloc, hostgw
from backend.netlink import IPRoute, NetlinkError, ensure_blackhole
from backend.reconcile import PeerEntry, Reconciler, SyncResult
from backend.traffic import Family, TrafficRules
from backend.vxlan import (
    PeerFormatError,
    VxlanDevice,
    VxlanPeer,
    backend_data,
    parse_vxlan_config,
    peer_from_lease,
    v6_data_error,
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
from flanneld_py.health import HealthServer
from flanneld_py.iface import InterfaceError, select_interface
from flanneld_py.memory import configure_allocator, release_free_memory
from flanneld_py.observe import Observer
from flanneld_py.preflight import PreflightError, check_bridge_netfilter
from flanneld_py.state import ErrorRecorder
from subnet.allocate import OutOfSubnets, fits
from subnet.config import SUPPORTED_BACKENDS, ConfigError, NetworkConfig
from subnet.errors import ConfigNotFound, DatastoreUnavailable, KubeError, SubnetContention
from subnet.lease import UNSET_IPV4, Lease, LeaseAttrs
from subnet.manager import SubnetManager
from subnet.peers import PeerTable
from subnet.subnetenv import SubnetEnv, previous_cidr, read_env_file, write_subnet_env

log = logging.getLogger("flanneld")
SNAPSHOT_PEER_LOGS = 50  # peer changes of one listing logged at info level, the rest at debug
_KEY_STATES = {(a, b): (a, b) for a in (False, True) for b in (False, True)}  # shared tuples

T = TypeVar("T")
__all__ = ["SUPPORTED_BACKENDS", "Daemon", "run"]
RENEW_RETRY = 60.0  # seconds between failed renewals (flannel's value)


@dataclass
class Overlay:
    """One address family's datapath: its device (`flannel.<VNI>` or `flannel-v6.<VNI>`) and
    the peer table its reconciler reads. Every table holds the same records: each reconciler
    takes its own dirty keys, and `select_entry` picks its family's entry."""

    version: int
    device: VxlanDevice | hostgw.HostGwRoutes
    table: PeerTable[VxlanPeer]


def make_subnet_manager(
    opts: Options,
    previous: tuple[Any, Any],
    on_invalid: Callable[[str, str], None],
) -> SubnetManager:
    """The etcd subnet manager, or the Kubernetes one with `--kube-subnet-mgr`.

    Raises KubeError when the Kubernetes API or this node's name cannot be found.
    """
    if not opts.kube_subnet_mgr:
        from subnet.etcd import EtcdOptions, EtcdRegistry, EtcdSubnetManager  # grpc: etcd only

        registry = EtcdRegistry(EtcdOptions.from_flags(opts))
        return EtcdSubnetManager(registry, previous, on_invalid=on_invalid)
    from subnet.kube import KubeSubnetManager, api_client  # imports the kubernetes client

    api = api_client(opts.kube_api_url, opts.kubeconfig_file)
    node = KubeSubnetManager.node_name_from_env(api)
    log.info("subnet manager: Kubernetes API, node %s", node)
    return KubeSubnetManager(
        api,
        node,
        opts.net_config_path,
        opts.kube_annotation_prefix,
        podcidr_wait=opts.podcidr_wait,
        set_network_unavailable=opts.set_node_network_unavailable,
        on_invalid=on_invalid,
    )


def wait_for_config(sm: SubnetManager, stop: threading.Event) -> NetworkConfig | None:
    """Read the network config, retrying every second while it is missing or etcd is down.

    Returns None when stopped. Raises ConfigError for an invalid config: retrying cannot fix that
    without an operator, and a clear exit is easier to notice than a retry loop.
    """
    last = ""
    while not stop.is_set():
        try:
            return sm.get_network_config()
        except (ConfigNotFound, DatastoreUnavailable) as err:
            if str(err) != last:
                log.error("couldn't fetch network config: %s (retrying every second)", err)
                last = str(err)
        stop.wait(1.0)
    return None


def warn_unimplemented(opts: Options) -> None:
    """Log each compatibility-only flag that was set to something other than its default."""
    for flag in FLAGS:
        if not flag.implemented and getattr(opts, flag.attr) != flag.default:
            log.warning("--%s is not implemented yet in flanneld-py and has no effect", flag.name)


class Daemon:
    """One running flanneld-py: the state shared by the start-up sequence and the workers."""

    def __init__(self, opts: Options) -> None:
        self.ipr: Any = None  # one netlink socket for the daemon's life, see start()
        self.opts = opts
        self.stop = threading.Event()
        self.previous = read_env_file(opts.subnet_file)
        prev = (
            previous_cidr(self.previous, "FLANNEL_SUBNET", 4),
            previous_cidr(self.previous, "FLANNEL_IPV6_SUBNET", 6),
        )
        self.obs = Observer(opts.subnet_file, "vxlan", "kube" if opts.kube_subnet_mgr else "etcd",
                            opts.resync_period)  # fmt: skip
        self.sm = make_subnet_manager(opts, prev, self._count_invalid)
        self.sm.observe_requests(self.obs.request)
        self.table: PeerTable[VxlanPeer] = PeerTable()
        self.table.on_change = self._peer_changed
        self.subnet_keys: dict[str, tuple[bool, bool]] = {}  # key -> (in range, reserved)
        self._subnet_counts: collections.Counter[tuple[bool, bool]] = collections.Counter()
        self._count_lock = threading.Lock()
        self._snapshot_budget: int | None = None  # info lines a listing may still log
        self._snapshot_quiet = 0  # its changes logged at debug level
        self.lease: Lease | None = None
        self.lease_lost = threading.Event()
        self.renew_now = threading.Event()  # our lease value was overwritten: re-put it
        self.cfg: NetworkConfig | None = None
        self.overlays: list[Overlay] = []  # one per enabled family; none with alloc
        self.programs_peers = True  # False with the alloc backend: peers are not even tracked
        self.mtu = 0  # FLANNEL_MTU without a device (alloc): the external interface's MTU
        self._bad_peers: dict[str, str] = {}  # peer key -> problem last logged
        self._partial_peers: dict[str, str] = {}  # peer key -> missing family part last logged
        # per enabled IP version, the peers without an entry of that family (few: kept instead
        # of a record per peer, so counting peers per family costs O(1) per event and no memory)
        self._lacking: dict[int, set[str]] = {4: set(), 6: set()}
        self._reconcilers: list[Reconciler[VxlanPeer]] = []
        self._synced_families: set[int] = set()  # devices that had their first full pass
        self._other_backends: dict[str, str] = {}  # peer key -> backend type last logged
        self._foreign_own: dict[str, Lease] = {}  # another node's put on our own key
        self._peer_from_lease = peer_from_lease  # the backend's lease -> peer record
        self.rules: TrafficRules | None = None  # the masquerade/forward rules, once written

    # --- start-up -------------------------------------------------------------------------------

    def start(self) -> bool:
        """Run the start-up sequence; False when stopped before it finished.

        Raises ConfigError, InterfaceError for problems an operator must fix.
        """
        warn_unimplemented(self.opts)
        cfg = wait_for_config(self.sm, self.stop)
        if cfg is None:
            return False
        # Opened only now, after the datastore client is up: pyroute2 can close a file
        # descriptor number twice while it sets up, and opened before gRPC, that number could
        # be gRPC's epoll by then ("epoll_wait error: Bad file descriptor", then abort).
        self.ipr = IPRoute()
        gc.collect()
        self.cfg = cfg
        if cfg.backend_type not in SUPPORTED_BACKENDS:
            raise ConfigError(
                "Backend.Type",
                f"{cfg.backend_type!r} is not supported by flanneld-py; supported: "
                f"{', '.join(SUPPORTED_BACKENDS)} (alloc leases a subnet and writes subnet.env "
                "without programming a datapath)",
            )
        self.obs.backend(cfg.backend_type)
        if not cfg.families:  # kube mode: net-conf.json is parsed, not checked
            raise ConfigError(
                "EnableIPv4", "EnableIPv4 and EnableIPv6 are both false; enable at least one"
            )
        self.programs_peers = cfg.backend_type != alloc.BACKEND_TYPE
        vx = parse_vxlan_config(cfg.backend) if cfg.backend_type == "vxlan" else None
        check_bridge_netfilter(cfg.families, cfg.enable_nftables)
        stored_ips = self._retry("read this node's stored public IPs", self.sm.stored_public_ips)
        if stored_ips is None:
            return False
        for stored, name in zip(stored_ips, ("node-public-ip", "node-public-ipv6"), strict=True):
            if stored:
                log.info("using public IP %s from the node's %s annotation", stored, name)
        ext = select_interface(
            self.opts.iface,
            stored_ips[0] or self.opts.public_ip,
            ipr=self.ipr,
            regexes=self.opts.iface_regex,
            can_reach=self.opts.iface_can_reach,
            public_ipv6=stored_ips[1] or self.opts.public_ipv6,
            families=cfg.families,
        )
        for version in cfg.families:
            log.info("using interface %s (index %d, MTU %d), IPv%d address %s, public IP %s",
                     ext.name, ext.index, ext.mtu, version,
                     ext.iface_addr if version == 4 else ext.iface_v6_addr,
                     ext.ext(version))  # fmt: skip
        if 4 not in cfg.families and (stored_ips[0] or self.opts.public_ip):
            log.warning("--public-ip is ignored: the network is IPv6-only (EnableIPv4 false)")
        if cfg.backend_type == hostgw.BACKEND_TYPE:
            for version in cfg.families:
                iface_addr = ext.iface_addr if version == 4 else ext.iface_v6_addr
                hostgw.check_not_behind_nat(ext.name, iface_addr or "", ext.ext(version) or "")
            log.info("backend host-gw: routes to peers' subnets via their public IPs on %s",
                     ext.name)  # fmt: skip
            self._peer_from_lease = hostgw.peer_from_lease
            for version in cfg.families:
                self._add_overlay(version, hostgw.HostGwRoutes(ext.index, ext.mtu, version))
            attrs = hostgw.lease_attrs(ext.ext_addr or UNSET_IPV4, ext.ext_v6_addr or None)
        elif vx is None:
            log.info("backend alloc: leasing a subnet only (no device, no peers)")
            self.mtu = alloc.pod_mtu(ext.mtu)
            attrs = alloc.lease_attrs(ext.ext_addr or UNSET_IPV4)
        else:
            macs = self._retry("read this node's stored VTEP MACs", self.sm.stored_macs)
            if macs is None:
                return False
            data: dict[int, dict[str, Any]] = {}
            for version in cfg.families:
                # the first device shares the daemon's netlink socket; a second (dual stack)
                # gets its own, since its reconciler runs in a thread of its own
                device = VxlanDevice(vx, version, ext.ext(version), ext.index, ext.mtu,
                                     macs[0 if version == 4 else 1],
                                     None if self.overlays else self.ipr)  # fmt: skip
                device.ensure_device()
                self._add_overlay(version, device)
                data[version] = backend_data(vx.vni, device.mac)
            attrs = LeaseAttrs(
                public_ip=ipaddress.IPv4Address(ext.ext_addr or UNSET_IPV4),
                public_ipv6=ipaddress.IPv6Address(ext.ext_v6_addr) if ext.ext_v6_addr else None,
                backend_type="vxlan",
                backend_data=data.get(4),
                backend_v6_data=data.get(6),
            )
        lease = self._acquire(cfg, attrs)
        if lease is None:
            return False
        self._use_lease(lease)
        if not self.overlays:
            self.obs.no_datapath()
        return True

    def _add_overlay(self, version: int, device: VxlanDevice | hostgw.HostGwRoutes) -> None:
        """Program peers of IP `version` through `device`. The first overlay reads the daemon's
        peer table; a second (dual stack) a mirror table holding the same records."""
        first = not self.overlays
        self.overlays.append(Overlay(version, device, self.table if first else PeerTable()))

    @property
    def tables(self) -> list[PeerTable[VxlanPeer]]:
        """The peer tables to update: one per device."""
        return [o.table for o in self.overlays] or [self.table]

    @property
    def pod_mtu(self) -> int:
        """FLANNEL_MTU, bytes: the smallest device MTU (vxlan; in dual stack the IPv6 device's,
        whose underlay overhead is larger, so pods' packets fit both; README "Compared with
        flanneld"), else the
        external interface's (alloc)."""
        return min((o.device.mtu for o in self.overlays), default=self.mtu)

    def _retry(self, what: str, call: Callable[[], T]) -> T | None:
        """`call()`, retried with backoff (1 s doubling to 30 s) while the datastore is
        unreachable; None when stopped meanwhile."""
        delay, last = 1.0, ""
        while not self.stop.is_set():
            try:
                return call()
            except DatastoreUnavailable as err:
                if str(err) != last:
                    log.error("could not %s: %s; retrying with backoff", what, err)
                    last = str(err)
            self.stop.wait(delay)
            delay = min(delay * 2, 30.0)
        return None

    def _acquire(self, cfg: NetworkConfig, attrs: LeaseAttrs) -> Lease | None:
        """Acquire a lease, retrying with backoff while etcd is down, the network is full, or
        other nodes keep taking the chosen subnets first."""
        delay = 1.0
        while not self.stop.is_set():
            try:
                return self.sm.acquire_lease(cfg, attrs, self.stop)
            except (DatastoreUnavailable, OutOfSubnets, SubnetContention) as err:
                log.error("could not acquire a lease: %s; retrying in %.0f s", err, delay)
            self.stop.wait(delay)
            delay = min(delay * 2, 30.0)
        return None

    def _use_lease(self, lease: Lease) -> None:
        """Make `lease` this node's: device addresses, traffic rules, subnet.env (after the
        rules, as flanneld: pods started from subnet.env find the rules in place), peer filter.

        Raises ValueError when the lease lacks a subnet of an enabled family."""
        cfg = self.cfg
        assert cfg is not None
        for version in cfg.families:
            if subnet_of(lease, version) is None:
                raise ValueError(f"IPv{version} is enabled but the lease {lease.key} has no "
                                 f"IPv{version} subnet")  # fmt: skip
        old = self.lease
        self.lease = lease
        self.obs.lease(lease.subnet, lease.ipv6_subnet, lease.attrs.public_ip, lease.expiration,
                       lease.key)  # fmt: skip
        for o in self.overlays:
            network = cfg.family(o.version).network
            o.device.set_address(str(subnet_of(lease, o.version).network_address), str(network))
        if old is None:
            self.rules = self._traffic_rules()
        elif self.rules is not None and not same_subnets(old, lease, cfg.families):
            self.rules.change(self._rule_families(old))
        env = SubnetEnv(
            cfg.network if 4 in cfg.families else None,
            lease.subnet,
            cfg.ipv6_network if 6 in cfg.families else None,
            lease.ipv6_subnet,
            self.pod_mtu,
            self.opts.ip_masq,
        )
        try:
            write_subnet_env(self.opts.subnet_file, env)
            self.obs.subnet_env()
            log.info("wrote %s: %s", self.opts.subnet_file,
                     " ".join(env.render().split("\n")).strip())  # fmt: skip
        except OSError as err:
            log.error("could not write %s: %s", self.opts.subnet_file, err)
        for version in cfg.families:
            now = subnet_of(lease, version)
            before = (
                subnet_of(old, version)
                if old is not None
                else previous_cidr(self.previous, ENV_KEYS[version][1], version)
            )
            if before is not None and before != now:
                log.warning(
                    "this node's subnet changed from %s to %s (the old one is gone or leased by "
                    "another node); pods started before keep addresses of the old subnet until "
                    "they are recreated",
                    before,
                    now,
                )
        if self._remove_peer(lease.key):
            log.info("dropped %s from the peer table: it is now this node's lease", lease.key)
        if old is not None and old.key != lease.key and old.key in self._foreign_own:
            # another node took our old subnet while it was still ours: it is a peer now
            self._on_put(old.key, self._foreign_own.pop(old.key))

    # --- peer watch -----------------------------------------------------------------------------

    def _count_invalid(self, key: str, reason: str) -> None:
        self.obs.invalid()

    def _is_own(self, key: str, lease: Lease) -> bool:
        own, cfg = self.lease, self.cfg
        return (
            own is not None
            and cfg is not None
            and (key == self.sm.own_key(own) or same_subnets(lease, own, cfg.families))
        )

    def _peer(self, key: str, lease: Lease) -> VxlanPeer | None:
        """Peer `key`'s record; None for a lease of another backend type. An unusable IPv6 part
        of a dual-stack lease leaves the IPv4 part (logged), and the peer's last good IPv6
        entry stays (README "Compared with flanneld"; flanneld leaves it in the kernel too).

        Raises PeerFormatError (logged once per key and problem, and counted) for unusable
        backend data.
        """
        cfg, own = self.cfg, self.lease
        assert cfg is not None
        try:
            peer, v6_problem = peer_record(
                lease,
                {v: cfg.family(v).network for v in cfg.families},
                {v: subnet_of(own, v) for v in cfg.families} if own else {},
                self._peer_from_lease,
            )
        except PeerFormatError as err:
            if self._bad_peers.get(lease.key) != str(err):
                self._bad_peers[lease.key] = str(err)
                log.warning("skipping peer lease %s: %s", lease.key, err)
            self.obs.invalid()
            raise
        self._bad_peers.pop(lease.key, None)
        if peer is None and self._other_backends.get(lease.key) != lease.attrs.backend_type:
            self._other_backends[lease.key] = lease.attrs.backend_type
            log.warning("ignoring peer lease %s: backend type %r, not %s", lease.key,
                        lease.attrs.backend_type, self.cfg and self.cfg.backend_type)  # fmt: skip
        kept = False
        if peer is not None and peer.v6 is None and self.cfg and 6 in self.cfg.families:
            old = self.table.get(key)
            bad = v6_problem or (lease.attrs.backend_type == "vxlan" and v6_data_error(lease))
            if bad and old is not None and old.v6 is not None:
                peer, kept = replace(peer, v6=old.v6), True
        if peer is not None:
            self._note_partial(lease, v6_problem, kept)
        return peer

    def _note_partial(self, lease: Lease, v6_problem: str = "", kept: bool = False) -> None:
        """Log once per peer and problem when a vxlan peer lacks the part of an enabled family
        (a dual-stack network with an IPv4-only node) or that part is unusable (`v6_problem`):
        it is reached over the families it has (and IPv6 by its last good entry, `kept`)."""
        assert self.cfg is not None
        missing = {v: missing_part(lease, v) or (v6_problem if v == 6 else "")
                   for v in self.cfg.families}  # fmt: skip
        problem = "; ".join(f"IPv{v}: {why}" for v, why in missing.items() if why)
        if not problem:
            self._partial_peers.pop(lease.key, None)
        elif self._partial_peers.get(lease.key) != problem:
            self._partial_peers[lease.key] = problem
            usable = [f"IPv{v}" for v, why in missing.items() if not why]
            log.warning("peer lease %s has %s; %s", lease.key, problem,
                        "keeping its last good IPv6 entry" if kept
                        else f"reachable over {' and '.join(usable)} only" if usable
                        else "it cannot be reached")  # fmt: skip

    def _on_snapshot(self, items: Iterable[tuple[str, Lease]]) -> None:
        """Load a complete listing. `items` is walked once, keeping only a slim record per peer
        (the etcd manager decodes its leases one at a time while it is walked)."""
        own = self.lease
        own_key = self.sm.own_key(own) if own is not None else None
        own_listed = False
        with self._count_lock:
            self.subnet_keys = {}
            self._subnet_counts.clear()
        records: dict[str, VxlanPeer] = {}
        for key, lease in items:
            own_listed = own_listed or key == own_key
            self._track_key(key, lease, count=False)
            if not self.programs_peers or self._is_own(key, lease):
                continue
            try:
                peer = self._peer(key, lease)
            except PeerFormatError:
                continue
            if peer is not None:
                records[key] = peer
        if own is not None and self.sm.renews and own.lease_id != 0 and not own_listed:
            log.warning("this node's lease %s is gone from the datastore", own.key)
            self.lease_lost.set()
        with self._count_lock:
            self._count_subnets()
        if not self.programs_peers:
            return
        self._snapshot_budget, self._snapshot_quiet = SNAPSHOT_PEER_LOGS, 0
        try:
            for table in self.tables:
                table.reset(records)
        finally:
            self._snapshot_budget = None
        if self._snapshot_quiet:
            log.info("... and %d more peer changes in this listing (logged at debug level)",
                     self._snapshot_quiet)  # fmt: skip

    def _on_put(self, key: str, lease: Lease) -> None:
        self._track_key(key, lease)
        if self._is_own(key, lease):
            own = self.lease
            if (
                own is not None
                and self.sm.renews
                and key == self.sm.own_key(own)
                and lease.attrs != own.attrs
            ):
                log.warning("this node's lease %s was overwritten (public IP %s); writing it "
                            "back", key, lease.attrs.public_ip)  # fmt: skip
                self.renew_now.set()
                self._foreign_own[key] = lease  # a peer's, if we lose that subnet meanwhile
            return
        if not self.programs_peers:
            return
        try:
            peer = self._peer(key, lease)
        except PeerFormatError:
            return  # keep the peer's last good state (README "Compared with flanneld")
        if peer is None:
            self._remove_peer(key)  # the peer switched to another backend
        else:
            for table in self.tables:
                table.upsert(key, peer)

    def _on_delete(self, key: str) -> None:
        self._track_key(key, None)
        self._foreign_own.pop(key, None)
        self._partial_peers.pop(key, None)
        own = self.lease
        if own is not None and key == self.sm.own_key(own):
            if self.sm.renews:
                log.warning("this node's lease %s was deleted or expired", own.key)
                self.lease_lost.set()
            return
        self._remove_peer(key)

    def _remove_peer(self, key: str) -> bool:
        """Drop a peer from every table; False when it was not known."""
        removed = [table.remove(key) for table in self.tables]
        return removed[0]

    def _count_subnets(self) -> None:
        """flannel_network_subnets: how full the network is (etcd mode), in the first enabled
        family (IPv4 unless the network is IPv6-only)."""
        cfg = self.cfg
        if not self.sm.renews or cfg is None or not cfg.families:
            return
        version = cfg.families[0]
        fam = cfg.family(version)
        if fam.subnet_min is None or fam.subnet_max is None:
            return
        bits = (32 if version == 4 else 128) - fam.subnet_len
        capacity = ((int(fam.subnet_max) - int(fam.subnet_min)) >> bits) + 1
        counts = self._subnet_counts
        self.obs.metrics.count_subnets(capacity, counts[(True, False)], counts[(True, True)])

    def _track_key(self, key: str, lease: Lease | None, count: bool = True) -> None:
        """Record a lease key's (in range, reserved) state; O(1), so that an event costs the
        same at any number of leases."""
        with self._count_lock:  # the watch thread and the lease keeper both report keys
            old = self.subnet_keys.pop(key, None)
            if old is not None:
                self._subnet_counts[old] -= 1
            if lease is not None and self.cfg is not None and self.cfg.families:
                version = self.cfg.families[0]
                in_range = fits(self.cfg, version, subnet_of(lease, version))
                state = _KEY_STATES[(in_range, lease.lease_id == 0)]
                self.subnet_keys[key] = state
                self._subnet_counts[state] += 1
            if count:
                self._count_subnets()

    def _peer_changed(self, key: str, change: str, peer: VxlanPeer | None) -> None:
        self.obs.peer_event(change)
        counts = {4: 0, 6: 0}  # peers with an entry of each enabled family
        for version in self.cfg.families if self.cfg is not None else ():
            lacking = self._lacking[version]
            if peer is None or (peer.v4 if version == 4 else peer.v6) is not None:
                lacking.discard(key)
            else:
                lacking.add(key)
            counts[version] = len(self.table) - len(lacking)
        self.obs.peers(counts[4], counts[6])
        self._log_peer(key, change, peer)

    def _log_peer(self, key: str, change: str, peer: VxlanPeer | None) -> None:
        """One line per peer change; a listing of thousands of peers logs its first
        SNAPSHOT_PEER_LOGS changes and a count, the rest at debug level."""
        level = logging.INFO
        if self._snapshot_budget is not None:
            if self._snapshot_budget > 0:
                self._snapshot_budget -= 1
            else:
                self._snapshot_quiet += 1
                level = logging.DEBUG
        if not log.isEnabledFor(level):
            return
        entries = [e for e in (peer.v4, peer.v6) if e is not None] if peer is not None else []
        for e in entries:
            if e.direct:  # host-gw: no VTEP
                log.log(level, "peer %s: %s (public IP %s)", change, e.subnet, e.public_ip)
            else:
                log.log(level, "peer %s: %s (public IP %s, VTEP MAC %s)", change, e.subnet,
                        e.public_ip, e.vtep_mac)  # fmt: skip
        if not entries:
            log.log(level, "peer %s: %s", change, key)

    # --- workers --------------------------------------------------------------------------------

    def run_workers(self) -> None:
        """Start the watch and the reconciler, then renew the lease until stopped.

        alloc backend: no reconciler; the watch only in etcd mode (own lease lost or
        overwritten), none in kube mode.
        """
        threads: dict[str, threading.Thread] = {}
        if self.overlays or self.sm.renews:
            threads["watch"] = threading.Thread(
                target=self.sm.watch_leases,
                name="watch",
                daemon=True,
                args=(self._on_snapshot, self._on_put, self._on_delete, self.stop, self.obs.watch),
            )
        self._reconcilers = reconcilers = [self._reconciler(o) for o in self.overlays]
        for o, reconciler in zip(self.overlays, reconcilers, strict=True):
            name = "reconcile" if o.version == 4 else "reconcile-v6"
            threads[name] = threading.Thread(
                target=reconciler.run, name=name, daemon=True, args=(self.stop,)
            )
        if reconcilers:
            self.obs.loop_heartbeat = lambda: min(r.heartbeat for r in reconcilers)
        if self.opts.ip_blackhole_route:
            threads["blackhole"] = threading.Thread(
                target=self._keep_blackhole_route, name="blackhole", daemon=True
            )
        rules = self.rules  # written before subnet.env (`_use_lease`)
        if rules is not None and rules.keeps_rules:
            threads[rules.mode] = threading.Thread(
                target=rules.run, name=rules.mode, daemon=True, args=(self.stop,)
            )
        self.obs.threads = threads
        for t in threads.values():
            t.start()
        threading.Thread(target=self._complete_lease, name="complete", daemon=True).start()
        if self.sm.renews:
            self._keep_lease()
        else:
            self.stop.wait()
        for t in threads.values():
            t.join(timeout=5)

    def _reconciler(self, overlay: Overlay) -> Reconciler[VxlanPeer]:
        """The worker that keeps `overlay`'s device in line with its table, reporting to the
        observer; the first sync is complete once every device has had a full pass."""
        select, reselect, period = _reconcile_args(overlay, self.opts.resync_period)
        reconciler = Reconciler(overlay.table, overlay.device, select, resync_period=period,
                                reselect=reselect)  # fmt: skip
        reconciler.on_write = self.obs.write
        reconciler.on_programmed = self.obs.programmed
        synced = self._synced_families

        def on_pass(kind: str, result: SyncResult, seconds: float) -> None:
            if kind == "full":
                synced.add(overlay.version)
            programmed = [len(r.programmed) for r in self._reconcilers]
            complete = len(synced) == len(self.overlays)
            entries: collections.Counter[str] = collections.Counter()
            for r in self._reconcilers:
                entries.update(r.entry_counts())
            self.obs.sync_pass(kind, result, seconds, max(programmed), complete, dict(entries))
            if kind == "full":
                release_free_memory()  # the listing's and the pass's garbage
                if complete and gc.get_freeze_count() == 0:  # the start-up objects live as
                    gc.freeze()  # long as the daemon: keep them out of later collections

        reconciler.on_pass = on_pass
        return reconciler

    def _keep_blackhole_route(self) -> None:
        """`--ip-blackhole-route`: every `--iptables-resync` seconds (the first time after one
        period, as flanneld), add a blackhole route for this node's subnet of each family when
        there is none, so that traffic to its unused addresses is dropped here rather than
        routed out."""
        ipr = IPRoute()
        try:
            last_error: dict[int, str] = {}  # per IP version
            while not self.stop.wait(float(self.opts.iptables_resync)):
                lease = self.lease
                for subnet in (lease.subnet, lease.ipv6_subnet) if lease is not None else ():
                    if subnet is None:
                        continue
                    try:
                        if ensure_blackhole(ipr, str(subnet)):
                            log.info("added a blackhole route for %s", subnet)
                        last_error.pop(subnet.version, None)
                    except (NetlinkError, OSError) as err:
                        if str(err) != last_error.get(subnet.version):
                            last_error[subnet.version] = str(err)
                            log.error("could not add the blackhole route for %s: %s",
                                      subnet, err)  # fmt: skip
        finally:
            ipr.close()

    def _traffic_rules(self) -> TrafficRules | None:
        """Remove the other mode's rules and write the masquerade (`--ip-masq`) and forward
        (`--iptables-forward-rules`) rules of every enabled family for this lease, in iptables
        (ip6tables) or, with EnableNFTables, nftables mode (`backend.traffic`); iptables mode
        first removes the masquerade rules of the previous subnet.env's network and subnet when
        they differ. None without a lease. Errors are logged: the overlay works without the
        rules (flanneld exits instead)."""
        if self.lease is None:
            return None
        assert self.cfg is not None
        opts = self.opts
        rules = TrafficRules(nftables=self.cfg.enable_nftables, ip_masq=opts.ip_masq,
                             forward=opts.iptables_forward_rules,
                             random_fully_disable=opts.ip_masq_fully_random_disable,
                             resync=float(opts.iptables_resync))  # fmt: skip
        rules.start(self._rule_families(None))
        return rules

    def _rule_families(self, old: Lease | None) -> list[Family]:
        """The traffic rules' inputs per enabled family: the cluster network and this node's
        subnet, with the previous ones: `old` lease's when the subnet changed while running,
        else those of the previous subnet.env."""
        cfg, lease = self.cfg, self.lease
        assert cfg is not None and lease is not None
        families = []
        for version in cfg.families:
            net = cfg.family(version).network
            assert net is not None  # a checked config has the network of every enabled family
            old_net, old_subnet = (
                (net, subnet_of(old, version))
                if old is not None
                else (previous_cidr(self.previous, k, version) for k in ENV_KEYS[version])
            )
            families.append(Family(net, subnet_of(lease, version), old_net, old_subnet))
        return families

    def _complete_lease(self) -> None:
        """Once the first peer sync is in the kernel, tell the datastore the network is up
        (kube: NetworkUnavailable=False; until then the node keeps whatever said otherwise)."""
        while not self.obs.first_sync.wait(1.0):
            if self.stop.is_set():
                return
        try:
            self.sm.complete_lease()
        except Exception as err:  # the datapath works regardless; say so and go on
            log.error("could not mark the node's network as available: %s", err)

    def _keep_lease(self) -> None:
        """Renew at expiry minus the margin; re-acquire (same subnet preferred) if lost."""
        margin = self.opts.subnet_lease_renew_margin * 60.0
        while not self.stop.is_set():
            lease = self.lease
            assert lease is not None and self.cfg is not None
            if self.lease_lost.is_set():
                self.lease_lost.clear()
                try:  # flannel re-reads and re-checks the config for every acquisition
                    self.cfg = self.sm.get_network_config()
                except (ConfigError, ConfigNotFound, DatastoreUnavailable) as err:
                    log.warning("using the network config read at start (%s)", err)
                self.sm.prefer(lease)
                new = self._acquire(self.cfg, lease.attrs)
                if new is not None:
                    self._use_lease(new)
                continue
            due = (lease.expiration or float("inf")) - margin - time.time()
            if self.renew_now.is_set():
                self.renew_now.clear()
                due = 0
            if due > 0:
                self.stop.wait(min(due, 1.0))  # re-check for a lost lease every second
                continue
            try:
                self.lease = self.sm.renew_lease(lease)
                self.obs.renewal(True)
                self.obs.lease(lease.subnet, lease.ipv6_subnet, lease.attrs.public_ip,
                               self.lease.expiration, lease.key)  # fmt: skip
                log.info(
                    "renewed lease %s until %s",
                    lease.key,
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.lease.expiration)),
                )
            except DatastoreUnavailable as err:
                self.obs.renewal(False)
                log.error(
                    "could not renew lease %s: %s; retrying in %.0f s", lease.key, err, RENEW_RETRY
                )
                self.stop.wait(RENEW_RETRY)

    def close(self) -> None:
        """Release sockets; the kernel state and subnet.env stay as they are."""
        self.sm.close()
        for o in self.overlays:
            o.device.close()
        if self.ipr is not None:
            self.ipr.close()


def _reconcile_args(
    overlay: Overlay, resync: float
) -> tuple[Callable[[VxlanPeer], PeerEntry | None], Callable[[], None] | None, float]:
    """The reconciler's (select, reselect, full-pass period) for an overlay: VXLAN with
    DirectRouting decides per peer (re-evaluated every full pass); host-gw checks its routes at
    least every 10 s, as flanneld."""
    select, device = select_entry(overlay.version), overlay.device
    if isinstance(device, hostgw.HostGwRoutes):
        return select, None, hostgw.resync_period(resync)
    if device.direct_routing:
        return (lambda peer: device.select(select(peer))), device.reselect, resync
    return select, None, resync


def run(opts: Options) -> int:
    """Run flanneld-py until SIGTERM/SIGINT; returns the exit status (1 for start-up failures)."""
    margin = opts.subnet_lease_renew_margin
    if not 1 <= margin <= 1439:
        log.error("--subnet-lease-renew-margin=%d: must be 1 to 1439 minutes", margin)
        return 1
    configure_allocator()  # before the start-up listing and the first pass
    try:
        daemon = Daemon(opts)
    except (ConfigError, KubeError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    health = None

    def on_signal(signum: int, _frame: object) -> None:
        log.info(
            "received %s, shutting down (the datapath stays in place)", signal.Signals(signum).name
        )
        daemon.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        logging.getLogger().addHandler(ErrorRecorder(daemon.obs.state))
        if opts.healthz_port > 0:
            health = HealthServer(
                opts.healthz_ip,
                opts.healthz_port,
                daemon.obs.readiness,
                daemon.obs.liveness,
                extra={"/metrics": daemon.obs.metrics.app},
            ).start()
        if not daemon.start():
            return 0
        daemon.run_workers()
        return 0
    except (ConfigError, InterfaceError, PreflightError, KubeError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    finally:
        if health is not None:
            health.stop()
        daemon.close()
