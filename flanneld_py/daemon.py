"""The daemon: flanneld's start-up sequence (flannel `main.go`), then three workers.

Start-up, in flanneld's order: read the previous subnet.env, connect to the subnet manager, wait for
the network config, choose the external interface, create the VXLAN device, acquire the lease,
give the device its address, write subnet.env, start the peer watch and the reconciler, then keep
the lease renewed. SIGTERM and SIGINT stop the workers and leave the device, its entries and
subnet.env in place, so a restart does not interrupt traffic.

Workers (threads): the etcd watch feeds the desired peer table; the reconciler makes the kernel
match it; the main thread renews the lease and re-acquires it if it is ever lost (decisions #12).

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
from typing import Any, TypeVar

from backend import alloc
from backend.iptables import Iptables, IptablesError, RuleKeeper, forward_rules, masq_rules
from backend.netlink import IPRoute, NetlinkError, ensure_blackhole
from backend.reconcile import PeerEntry, Reconciler, SyncResult
from backend.vxlan import (
    PeerFormatError,
    VxlanDevice,
    VxlanPeer,
    backend_data,
    check_peer_subnet,
    parse_vxlan_config,
    peer_from_lease,
)
from flanneld_py.cli import FLAGS, Options
from flanneld_py.health import HealthServer
from flanneld_py.iface import InterfaceError, select_interface
from flanneld_py.memory import configure_allocator, release_free_memory
from flanneld_py.observe import Observer
from flanneld_py.state import ErrorRecorder
from subnet.allocate import OutOfSubnets, fits
from subnet.config import SUPPORTED_BACKENDS, ConfigError, NetworkConfig
from subnet.errors import ConfigNotFound, DatastoreUnavailable, KubeError, SubnetContention
from subnet.lease import Lease, LeaseAttrs
from subnet.manager import SubnetManager
from subnet.peers import PeerTable
from subnet.subnetenv import SubnetEnv, previous_cidr, read_env_file, write_subnet_env

log = logging.getLogger("flanneld")
SNAPSHOT_PEER_LOGS = 50  # peer changes of one listing logged at info level, the rest at debug
_KEY_STATES = {(a, b): (a, b) for a in (False, True) for b in (False, True)}  # shared tuples

T = TypeVar("T")
__all__ = ["SUPPORTED_BACKENDS", "Daemon", "run"]
RENEW_RETRY = 60.0  # seconds between failed renewals (flannel's value)


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
        self.device: VxlanDevice | None = None  # None with the alloc backend
        self.programs_peers = True  # False with the alloc backend: peers are not even tracked
        self.mtu = 0  # FLANNEL_MTU without a device (alloc): the external interface's MTU
        self._bad_peers: dict[str, str] = {}  # peer key -> problem last logged
        self._other_backends: dict[str, str] = {}  # peer key -> backend type last logged
        self._foreign_own: dict[str, Lease] = {}  # another node's put on our own key

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
        if not cfg.enable_ipv4 or cfg.enable_ipv6:
            raise ConfigError("EnableIPv6", "flanneld-py supports IPv4-only networks so far")
        self.programs_peers = cfg.backend_type != alloc.BACKEND_TYPE
        vx = parse_vxlan_config(cfg.backend) if self.programs_peers else None
        if vx is not None and vx.direct_routing:
            log.warning(
                "Backend.DirectRouting is not implemented yet; using the overlay for all peers"
            )
        if cfg.enable_nftables and (self.opts.ip_masq or self.opts.iptables_forward_rules):
            log.warning("EnableNFTables is not implemented yet; writing the iptables rules instead")
        stored_ips = self._retry("read this node's stored public IPs", self.sm.stored_public_ips)
        if stored_ips is None:
            return False
        stored_ip = stored_ips[0]
        if stored_ip:
            log.info("using public IP %s from the node's node-public-ip annotation", stored_ip)
        ext = select_interface(
            self.opts.iface,
            stored_ip or self.opts.public_ip,
            ipr=self.ipr,
            regexes=self.opts.iface_regex,
            can_reach=self.opts.iface_can_reach,
        )
        log.info(
            "using interface %s (index %d, MTU %d), address %s, public IP %s",
            ext.name,
            ext.index,
            ext.mtu,
            ext.iface_addr,
            ext.ext_addr,
        )
        if vx is None:
            log.info("backend alloc: leasing a subnet only (no device, no peers)")
            self.mtu = alloc.pod_mtu(ext.mtu)
            attrs = alloc.lease_attrs(ext.ext_addr)
        else:
            macs = self._retry("read this node's stored VTEP MACs", self.sm.stored_macs)
            if macs is None:
                return False
            self.device = VxlanDevice(vx, 4, ext.ext_addr, ext.index, ext.mtu, macs[0], self.ipr)
            self.device.ensure_device()
            attrs = LeaseAttrs(
                public_ip=ipaddress.IPv4Address(ext.ext_addr),
                backend_type="vxlan",
                backend_data=backend_data(vx.vni, self.device.mac),
            )
        lease = self._acquire(cfg, attrs)
        if lease is None:
            return False
        self._use_lease(lease)
        if self.device is None:
            self.obs.no_datapath()
        return True

    @property
    def pod_mtu(self) -> int:
        """FLANNEL_MTU, bytes: the device's MTU (vxlan), else the external interface's (alloc)."""
        return self.device.mtu if self.device is not None else self.mtu

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
        """Make `lease` this node's: device address, subnet.env, peer filter."""
        assert self.cfg is not None and lease.subnet is not None
        old = self.lease
        self.lease = lease
        self.obs.lease(lease.subnet, lease.ipv6_subnet, lease.attrs.public_ip, lease.expiration,
                       lease.key)  # fmt: skip
        if self.device is not None:
            self.device.set_address(str(lease.subnet.network_address), str(self.cfg.network))
        env = SubnetEnv(self.cfg.network, lease.subnet, None, None, self.pod_mtu, self.opts.ip_masq)
        try:
            write_subnet_env(self.opts.subnet_file, env)
            self.obs.subnet_env()
            log.info(
                "wrote %s: FLANNEL_SUBNET=%s FLANNEL_MTU=%d",
                self.opts.subnet_file,
                f"{lease.subnet.network_address + 1}/{lease.subnet.prefixlen}",
                self.pod_mtu,
            )
        except OSError as err:
            log.error("could not write %s: %s", self.opts.subnet_file, err)
        before = (
            old.subnet if old is not None else previous_cidr(self.previous, "FLANNEL_SUBNET", 4)
        )
        if before is not None and before != lease.subnet:
            log.warning(
                "this node's subnet changed from %s to %s (the old one is gone or leased by "
                "another node); pods started before keep addresses of the old subnet until they "
                "are recreated",
                before,
                lease.subnet,
            )
        if self.table.remove(lease.key):
            log.info("dropped %s from the peer table: it is now this node's lease", lease.key)
        if old is not None and old.key != lease.key and old.key in self._foreign_own:
            # another node took our old subnet while it was still ours: it is a peer now
            self._on_put(old.key, self._foreign_own.pop(old.key))

    # --- peer watch -----------------------------------------------------------------------------

    def _count_invalid(self, key: str, reason: str) -> None:
        self.obs.invalid()

    def _is_own(self, key: str, lease: Lease) -> bool:
        own = self.lease
        return own is not None and (
            key == self.sm.own_key(own) or (lease.subnet is not None and lease.subnet == own.subnet)
        )

    def _peer(self, lease: Lease) -> VxlanPeer | None:
        """A peer's record; None for a lease of another backend type.

        Raises PeerFormatError (logged once per key and problem, and counted) for unusable
        backend data.
        """
        try:
            self._check_subnets(lease)
            peer = peer_from_lease(lease)
        except PeerFormatError as err:
            if self._bad_peers.get(lease.key) != str(err):
                self._bad_peers[lease.key] = str(err)
                log.warning("skipping peer lease %s: %s", lease.key, err)
            self.obs.invalid()
            raise
        self._bad_peers.pop(lease.key, None)
        if peer is None and self._other_backends.get(lease.key) != lease.attrs.backend_type:
            self._other_backends[lease.key] = lease.attrs.backend_type
            log.warning("ignoring peer lease %s: backend type %r, not vxlan", lease.key,
                        lease.attrs.backend_type)  # fmt: skip
        return peer

    def _check_subnets(self, lease: Lease) -> None:
        check_peer_subnet(lease, self.cfg.network if self.cfg else None,
                          self.lease.subnet if self.lease else None)  # fmt: skip

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
                peer = self._peer(lease)
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
            self.table.reset(records)
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
            peer = self._peer(lease)
        except PeerFormatError:
            return  # keep the peer's last good state (decisions #2)
        if peer is None:
            self.table.remove(key)  # the peer switched to another backend
        else:
            self.table.upsert(key, peer)

    def _on_delete(self, key: str) -> None:
        self._track_key(key, None)
        self._foreign_own.pop(key, None)
        own = self.lease
        if own is not None and key == self.sm.own_key(own):
            if self.sm.renews:
                log.warning("this node's lease %s was deleted or expired", own.key)
                self.lease_lost.set()
            return
        self.table.remove(key)

    def _count_subnets(self) -> None:
        """flannel_network_subnets: how full the network is (etcd mode)."""
        cfg = self.cfg
        if not self.sm.renews or cfg is None or cfg.subnet_min is None or cfg.subnet_max is None:
            return
        capacity = ((int(cfg.subnet_max) - int(cfg.subnet_min)) >> (32 - cfg.subnet_len)) + 1
        counts = self._subnet_counts
        self.obs.metrics.count_subnets(capacity, counts[(True, False)], counts[(True, True)])

    def _track_key(self, key: str, lease: Lease | None, count: bool = True) -> None:
        """Record a lease key's (in range, reserved) state; O(1), so that an event costs the
        same at any number of leases."""
        with self._count_lock:  # the watch thread and the lease keeper both report keys
            old = self.subnet_keys.pop(key, None)
            if old is not None:
                self._subnet_counts[old] -= 1
            if lease is not None and self.cfg is not None:
                state = _KEY_STATES[(fits(self.cfg, 4, lease.subnet), lease.lease_id == 0)]
                self.subnet_keys[key] = state
                self._subnet_counts[state] += 1
            if count:
                self._count_subnets()

    def _peer_changed(self, key: str, change: str, peer: VxlanPeer | None) -> None:
        self.obs.peer_event(change)
        self.obs.peers(len(self.table), 0)  # O(1) per event: IPv4-only so far
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
        if peer is not None and peer.v4 is not None:
            log.log(level, "peer %s: %s (public IP %s, VTEP MAC %s)", change, peer.v4.subnet,
                    peer.v4.public_ip, peer.v4.vtep_mac)  # fmt: skip
        else:
            log.log(level, "peer %s: %s", change, key)

    # --- workers --------------------------------------------------------------------------------

    def run_workers(self) -> None:
        """Start the watch and the reconciler, then renew the lease until stopped.

        alloc backend: no reconciler; the watch only in etcd mode (own lease lost or
        overwritten), none in kube mode.
        """
        threads: dict[str, threading.Thread] = {}
        if self.device is not None or self.sm.renews:
            threads["watch"] = threading.Thread(
                target=self.sm.watch_leases,
                name="watch",
                daemon=True,
                args=(self._on_snapshot, self._on_put, self._on_delete, self.stop, self.obs.watch),
            )
        if self.device is not None:
            reconciler = Reconciler(
                self.table,
                self.device,
                _select_v4,
                resync_period=self.opts.resync_period,
            )
            reconciler.on_write = self.obs.write
            reconciler.on_programmed = self.obs.programmed

            def on_pass(kind: str, result: SyncResult, seconds: float) -> None:
                self.obs.sync_pass(kind, result, seconds, len(reconciler.programmed))
                if kind == "full":
                    release_free_memory()  # the listing's and the pass's garbage
                    if gc.get_freeze_count() == 0:  # the start-up objects live as long
                        gc.freeze()  # as the daemon: keep them out of later collections

            reconciler.on_pass = on_pass
            self.obs.loop_heartbeat = lambda: reconciler.heartbeat
            threads["reconcile"] = threading.Thread(
                target=reconciler.run, name="reconcile", daemon=True, args=(self.stop,)
            )
        if self.opts.ip_blackhole_route:
            threads["blackhole"] = threading.Thread(
                target=self._keep_blackhole_route, name="blackhole", daemon=True
            )
        keeper = self._traffic_rules()
        if keeper is not None:
            threads["iptables"] = threading.Thread(
                target=keeper.run, name="iptables", daemon=True, args=(self.stop,)
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

    def _keep_blackhole_route(self) -> None:
        """`--ip-blackhole-route`: every `--iptables-resync` seconds (the first time after one
        period, as flanneld), add a blackhole route for this node's subnet when there is none,
        so that traffic to its unused addresses is dropped here rather than routed out."""
        ipr = IPRoute()
        try:
            last_error = ""
            while not self.stop.wait(float(self.opts.iptables_resync)):
                lease = self.lease
                if lease is None or lease.subnet is None:
                    continue
                try:
                    if ensure_blackhole(ipr, str(lease.subnet)):
                        log.info("added a blackhole route for %s", lease.subnet)
                    last_error = ""
                except (NetlinkError, OSError) as err:
                    if str(err) != last_error:
                        last_error = str(err)
                        log.error("could not add the blackhole route for %s: %s",
                                  lease.subnet, err)  # fmt: skip
        finally:
            ipr.close()

    def _traffic_rules(self) -> RuleKeeper | None:
        """Write the masquerade (`--ip-masq`) and forward (`--iptables-forward-rules`) rules for
        this lease, after removing those of the network and subnet of the previous subnet.env
        when they differ; None when neither is wanted. Errors are logged: the overlay works
        without them (flanneld exits instead)."""
        opts = self.opts
        if not (opts.ip_masq or opts.iptables_forward_rules) or self.lease is None:
            return None
        assert self.cfg is not None and self.lease.subnet is not None
        ipt = Iptables()
        keeper = RuleKeeper(ipt, float(opts.iptables_resync))
        network, subnet = str(self.cfg.network), str(self.lease.subnet)
        random_fully = not opts.ip_masq_fully_random_disable and ipt.supports_random_fully()
        try:
            if opts.ip_masq:
                old_net = previous_cidr(self.previous, "FLANNEL_NETWORK", 4)
                old_sub = previous_cidr(self.previous, "FLANNEL_SUBNET", 4)
                if (
                    old_net is not None
                    and old_sub is not None
                    and (str(old_net) != network or str(old_sub) != subnet)
                ):
                    log.info("removing the masquerade rules of the previous network %s, subnet "
                             "%s", old_net, old_sub)  # fmt: skip
                    ipt.delete(masq_rules(str(old_net), str(old_sub), random_fully))
                keeper.add("masquerade", masq_rules(network, subnet, random_fully))
            if opts.iptables_forward_rules:
                keeper.add("forward", forward_rules(network))
        except (IptablesError, OSError) as err:
            log.error("could not write the iptables rules: %s; retrying every %d s", err,
                      opts.iptables_resync)  # fmt: skip
        return keeper

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
        if self.device is not None:
            self.device.close()  # closes the shared netlink socket
        elif self.ipr is not None:
            self.ipr.close()


def _select_v4(peer: VxlanPeer) -> PeerEntry | None:
    return peer.v4


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
    except (ConfigError, InterfaceError, KubeError, ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    finally:
        if health is not None:
            health.stop()
        daemon.close()
