"""The etcd subnet manager: flannel's lease protocol over the etcd v3 API.

Keys and values are flannel's (`<prefix>/config`, `<prefix>/subnets/10.5.72.0-24`, lease value JSON;
flannel `pkg/subnet/etcd/registry.go`), so Go flanneld nodes and flanneld-py nodes share one etcd.
Leases are etcd leases of 24 h; renewal grants a new one and re-puts the value (flannel never uses
KeepAlive). Where flannel's behaviour is a known fault this module does better (README "Compared
with flanneld"): a lost creation race tries another subnet, an unparseable key or value is
skipped and counted instead of clearing every peer, reservations stay leaseless.

The etcd client (etcd-sdk-python, imported as `pyetcd`) is used only by `EtcdRegistry`, a small
wrapper whose methods raise `DatastoreUnavailable` for every connection-level failure.
"""

from __future__ import annotations

import logging
import os
import posixpath
import random
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# gRPC's default epoll poller has aborted the daemon at start-up in tests ("epoll_wait error: Bad
# file descriptor"); the poll() poller has no long-lived descriptor to lose. Set before importing.
os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")

import grpc
import pyetcd
import pyetcd.exceptions

from subnet.allocate import choose_subnets
from subnet.config import NetworkConfig, check_network_config, parse_config
from subnet.errors import ConfigNotFound, DatastoreUnavailable, SubnetContention
from subnet.lease import Lease, LeaseAttrs, LeaseFormatError, make_subnet_key, parse_subnet_key

log = logging.getLogger(__name__)

SUBNET_TTL = 24 * 3600  # seconds; flannel's subnetTTL
RACE_RETRIES = 10
DEFAULT_ENDPOINTS = "http://127.0.0.1:4001,http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"
_GRPC_OPTIONS = [
    ("grpc.keepalive_time_ms", 10_000),  # notice a silently dead connection within about 15 s
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),  # reconnect as flannel does: 0.1 s doubling...
    ("grpc.max_reconnect_backoff_ms", 5_000),  # ...to at most 5 s (not min_reconnect_backoff:
    # it is also the connect timeout, and a short one fails connections on a busy machine)
]


@dataclass(frozen=True)
class EtcdOptions:
    """Connection settings, from flanneld's `--etcd-*` flags. `timeout` is per request, seconds."""

    endpoints: str = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_PREFIX
    keyfile: str = ""
    certfile: str = ""
    cafile: str = ""
    username: str = ""
    password: str = ""
    timeout: float = 5.0

    @classmethod
    def from_flags(cls, opts: Any) -> EtcdOptions:
        """From parsed flanneld flags (attributes etcd_endpoints, etcd_prefix, ...)."""
        return cls(
            endpoints=opts.etcd_endpoints,
            prefix=opts.etcd_prefix,
            keyfile=opts.etcd_keyfile,
            certfile=opts.etcd_certfile,
            cafile=opts.etcd_cafile,
            username=opts.etcd_username,
            password=opts.etcd_password,
        )


@dataclass(frozen=True)
class StoredLease:
    """A raw subnet key as listed: full key, value bytes, etcd lease ID (0 = no lease)."""

    key: str
    value: bytes
    lease_id: int


@dataclass(frozen=True)
class WatchEvent:
    """One change under `subnets/`: `kind` "put" or "delete", the full key, the value (b"" for a
    delete), the etcd revision of the change, and the etcd lease ID of a put (0: none)."""

    kind: str
    key: str
    value: bytes
    revision: int
    lease_id: int = 0


class Listing:
    """The key-values of one range request, as a sequence of `StoredLease`.

    They stay in the protobuf response (a few large blocks) and become `StoredLease` objects one
    at a time while iterated, so that a listing of thousands of leases is never held twice, as
    protobuf and as Python objects (about 340 bytes per lease in small objects).
    """

    __slots__ = ("_kvs",)

    def __init__(self, kvs: Any) -> None:
        self._kvs = kvs

    def __len__(self) -> int:
        return len(self._kvs)

    def __iter__(self) -> Iterator[StoredLease]:
        for kv in self._kvs:
            yield StoredLease(kv.key.decode(), kv.value, kv.lease)


class Compacted(Exception):
    """The watch's start revision is older than etcd's compaction horizon: re-list."""


_CLIENT_ERRORS = (pyetcd.exceptions.Etcd3Exception, grpc.RpcError, ValueError)
_CONNECTION_ERRORS = (
    pyetcd.exceptions.ConnectionFailedError,
    pyetcd.exceptions.ConnectionTimeoutError,
)


def _unauthenticated(err: BaseException) -> bool:
    return isinstance(err, grpc.RpcError) and err.code() == grpc.StatusCode.UNAUTHENTICATED


def _unavailable(call: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the client's connection-level errors into DatastoreUnavailable; an expired or
    revoked auth token (etcd restarted, idle too long) drops the client so the next call logs
    in again."""

    op = _OPS.get(call.__name__, call.__name__)

    def wrapper(self: EtcdRegistry, *args: Any, **kwargs: Any) -> Any:
        # A connection failure marks the endpoint failed for a moment (pyetcd's time_retry), so
        # retrying at once goes to the next endpoint: a dead first endpoint costs one timeout.
        for attempt in range(len(self.endpoints)):
            try:
                result = call(self, *args, **kwargs)
            except _CLIENT_ERRORS as err:
                self.on_request(op, False)
                if _unauthenticated(err):
                    self.reset()
                if attempt + 1 < len(self.endpoints) and isinstance(err, _CONNECTION_ERRORS):
                    continue
                raise DatastoreUnavailable(f"etcd: {type(err).__name__}: {err}") from err
            self.on_request(op, True)
            return result
        raise DatastoreUnavailable("etcd: no endpoint")

    return wrapper


_OPS = {"get_config": "get", "list_subnets": "list", "ttl": "get", "revoke": "delete"}


def parse_endpoints(text: str) -> list[tuple[str, int, bool]]:
    """`--etcd-endpoints` as (host, port, https) triples; `host:port` without a scheme is http
    (as Go's etcd client takes it). Raises ValueError naming the bad entry."""
    out = []
    for raw in text.split(","):
        entry = raw.strip()
        url = urllib.parse.urlsplit(entry if "://" in entry else f"http://{entry}")
        try:
            port = url.port or 2379
        except ValueError:
            port = 0
        if not url.hostname or url.scheme not in ("http", "https") or not port:
            raise ValueError(
                f"--etcd-endpoints: {entry!r} is not an endpoint like http://10.0.0.1:2379"
            )
        out.append((url.hostname, port, url.scheme == "https"))
    return out


class EtcdRegistry:
    """The few etcd operations flannel's protocol needs, over one client with endpoint failover."""

    def __init__(self, opts: EtcdOptions) -> None:
        self.opts = opts
        # Go's path.Join: cleaned, no trailing slash, a leading slash only when given
        self.prefix = posixpath.normpath(opts.prefix).replace("//", "/") or "/"
        self.subnets_prefix = posixpath.join(self.prefix, "subnets")
        self.endpoints = parse_endpoints(opts.endpoints)
        self._lock = threading.Lock()
        self._client: Any = None
        self.on_request: Callable[[str, bool], None] = lambda op, ok: None  # for metrics
        if bool(opts.keyfile) != bool(opts.certfile):
            log.warning(
                "--etcd-keyfile and --etcd-certfile must both be set to use TLS client "
                "certificates; connecting without them"
            )
        if any(not https for _, _, https in self.endpoints):
            log.warning("connecting to etcd with http. This is insecure")

    def _endpoints(self) -> list[Any]:
        creds = None
        if any(https for _, _, https in self.endpoints):  # TLS for https:// endpoints
            ca = Path(self.opts.cafile).read_bytes() if self.opts.cafile else None
            key = cert = None
            if self.opts.keyfile and self.opts.certfile:  # client certificate: both or none
                key = Path(self.opts.keyfile).read_bytes()
                cert = Path(self.opts.certfile).read_bytes()
            creds = grpc.ssl_channel_credentials(ca, key, cert)
        out = []
        for host, port, https in self.endpoints:
            secure = https and creds is not None
            out.append(
                pyetcd.Endpoint(
                    f"[{host}]" if ":" in host else host,  # gRPC's target: [2001:db8::fe]:2379
                    port,
                    secure=secure,
                    creds=creds if secure else None,
                    time_retry=1.0,
                    opts=_GRPC_OPTIONS,
                )
            )
        return out

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                client = pyetcd.MultiEndpointEtcd3Client(
                    endpoints=self._endpoints(),
                    timeout=self.opts.timeout,
                    user=self.opts.username or None,
                    password=self.opts.password or None,
                    failover=True,
                )
                # The auth token goes in the request metadata, which etcd reads; gRPC refuses
                # to send it as call credentials over a plain-text channel.
                client.call_credentials = None
                self._client = client
            return self._client

    def reset(self) -> None:
        """Drop the client; the next call connects (and authenticates) again."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def close(self) -> None:
        """Close the client's channels."""
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    @_unavailable
    def get_config(self) -> str:
        """The raw `<prefix>/config` value. Raises ConfigNotFound, DatastoreUnavailable."""
        value, _ = self.client.get(posixpath.join(self.prefix, "config"))
        if value is None:
            raise ConfigNotFound(
                "flannel config not found in etcd store. Did you create your config using etcdv3 "
                f"API? (expected key {posixpath.join(self.prefix, 'config')})"
            )
        return str(value.decode())

    @_unavailable
    def list_subnets(self) -> tuple[Listing, int]:
        """Every key under `<prefix>/subnets` (one range request) and the store revision."""
        resp = self.client.get_prefix_response(self.subnets_prefix)
        return Listing(resp.kvs), int(resp.header.revision)

    @_unavailable
    def ttl(self, lease_id: int) -> float | None:
        """Seconds an etcd lease has left; None for no lease or one that is gone."""
        if lease_id == 0:
            return None
        ttl = int(self.client.get_lease_info(lease_id).TTL)
        return None if ttl < 0 else float(ttl)

    @_unavailable
    def grant(self, ttl: int) -> int:
        """A new etcd lease of `ttl` seconds; returns its ID."""
        return int(self.client.lease(ttl).id)

    @_unavailable
    def revoke(self, lease_id: int) -> None:
        """Revoke an etcd lease (its keys are deleted)."""
        self.client.revoke_lease(lease_id)

    @_unavailable
    def create(self, key: str, value: bytes, lease_id: int) -> bool:
        """Put `key` only if it does not exist (one transaction). False when it already existed."""
        c = self.client
        ok, _ = c.transaction(
            compare=[c.transactions.version(key) == 0],
            success=[c.transactions.put(key, value, lease_id)],
            failure=[],
        )
        return bool(ok)

    @_unavailable
    def put(self, key: str, value: bytes, lease_id: int = 0) -> None:
        """Write `key` unconditionally, attached to `lease_id` (0: no lease)."""
        self.client.put(key, value, lease=lease_id)

    @_unavailable
    def delete(self, key: str) -> None:
        """Delete `key` (absent is fine)."""
        self.client.delete(key)

    def watch(
        self, prefix: str, start_revision: int
    ) -> tuple[Iterator[WatchEvent], Callable[[], None]]:
        """Watch every key under `prefix` from `start_revision` on.

        Returns (events, cancel). Iterating raises `Compacted` when the revision is no longer
        available and `DatastoreUnavailable` when the connection fails.
        """
        try:
            responses, cancel = self.client.watch_prefix_response(
                prefix, start_revision=start_revision
            )
        except pyetcd.exceptions.RevisionCompactedError as err:
            self.on_request("watch", False)
            raise Compacted(str(err.compacted_revision)) from err
        except _CLIENT_ERRORS as err:
            self.on_request("watch", False)
            if _unauthenticated(err):
                self.reset()
            raise DatastoreUnavailable(f"etcd watch: {type(err).__name__}: {err}") from err
        self.on_request("watch", True)

        def events() -> Iterator[WatchEvent]:
            try:
                for resp in responses:
                    for ev in resp.events:
                        kind = "delete" if isinstance(ev, pyetcd.events.DeleteEvent) else "put"
                        yield WatchEvent(kind, ev.key.decode(), ev.value, int(ev.mod_revision),
                                         int(ev.lease))  # fmt: skip
            except pyetcd.exceptions.RevisionCompactedError as err:
                raise Compacted(str(err.compacted_revision)) from err
            except _CLIENT_ERRORS as err:
                if _unauthenticated(err):
                    self.reset()
                raise DatastoreUnavailable(f"etcd watch: {type(err).__name__}: {err}") from err
            raise DatastoreUnavailable("etcd watch stream ended")

        return events(), cancel


def decode_lease(item: StoredLease) -> Lease:
    """A listed key and value as a `Lease` (expiration unknown). Raises LeaseFormatError."""
    v4, v6 = parse_subnet_key(item.key)
    return Lease(v4, v6, LeaseAttrs.decode(item.value), lease_id=item.lease_id)


class EtcdSubnetManager:
    """Own lease acquisition and renewal, and the peer watch, against one etcd cluster.

    `previous` is the (IPv4, IPv6) subnet of the node's old subnet.env, preferred when free.
    `on_invalid(key, reason)` is called for every key or value under `subnets/` that cannot be
    parsed (the key is skipped, nothing else changes).
    """

    def __init__(
        self,
        registry: EtcdRegistry,
        previous: tuple[Any, Any] = (None, None),
        on_invalid: Callable[[str, str], None] | None = None,
    ) -> None:
        self.registry = registry
        self.previous = previous
        self.on_invalid = on_invalid or (lambda key, reason: None)
        self._invalid_seen: dict[str, str] = {}  # full key -> reason last logged
        # the listing of the first acquisition, the store revision it was taken at, this node's
        # lease and the keys deleted since: the watch's first snapshot (see `_keep_listing`)
        self._listing: tuple[Iterable[StoredLease], int, Lease, frozenset[str]] | None = None
        self._watch_started = False

    renews = True

    def stored_public_ips(self) -> tuple[str, str]:
        """etcd keeps no per-node public IP override."""
        return "", ""

    def stored_macs(self) -> tuple[str | None, str | None]:
        """A new VTEP MAC is chosen at each device creation in etcd mode (as flanneld does)."""
        return None, None

    def own_key(self, lease: Lease) -> str:
        """Peers are keyed by subnet key, so this node's is its lease's."""
        return lease.key

    def prefer(self, lease: Lease) -> None:
        """Make the next acquisition prefer `lease`'s subnets (after the lease was lost)."""
        self.previous = (lease.subnet, lease.ipv6_subnet)

    def complete_lease(self) -> None:
        """Nothing to report in etcd mode."""

    def close(self) -> None:
        """Close the etcd client."""
        self.registry.close()

    def observe_requests(self, hook: Callable[[str, bool], None]) -> None:
        """Report every etcd request to `hook(operation, succeeded)`."""
        self.registry.on_request = hook

    # --- config ---------------------------------------------------------------------------------

    def get_network_config(self) -> NetworkConfig:
        """Read, parse and validate `<prefix>/config`.

        Raises ConfigNotFound, ConfigError (invalid config), DatastoreUnavailable.
        """
        return check_network_config(parse_config(self.registry.get_config()))

    # --- own lease ------------------------------------------------------------------------------

    def _decode(self, items: Iterable[StoredLease], report: bool = True) -> Iterator[Lease]:
        """The valid leases of a listing, decoded one at a time (so that a consumer keeping
        only what it needs of each never holds them all); invalid ones are logged and counted
        when `report`."""
        for item in items:
            try:
                yield decode_lease(item)
            except LeaseFormatError as err:
                if report:
                    self._invalid(item, str(err))

    def _keep_listing(
        self, listing: Iterable[StoredLease], revision: int, own: Lease, deleted: set[str]
    ) -> Lease:
        """Before the watch starts, keep the acquisition's raw listing for the watch's first
        snapshot, with `own` (this node's new lease) in place of its key's old value and the
        `deleted` keys left out. Returns `own`.

        The raw key-values are kept, not the decoded leases: they are a few times smaller, and
        the snapshot decodes them again one at a time (about 20 ms per 1,000 leases)."""
        if not self._watch_started:
            self._listing = (listing, revision, own, frozenset(deleted))
        return own

    def _replay(self, listing: Iterable[StoredLease], own: Lease, deleted: frozenset[str]
                ) -> Iterator[tuple[str, Lease]]:  # fmt: skip
        """The kept listing's (key, lease) pairs as `_keep_listing` describes them (invalid
        keys were logged and counted when it was taken)."""
        own_key = own.key
        for lease in self._decode(listing, report=False):
            key = lease.key
            if key != own_key and key not in deleted:
                yield key, lease
        yield own_key, own

    def _invalid(self, item: StoredLease, reason: str) -> None:
        """Log an invalid key once per key and reason (memory bounded by the number of keys)."""
        if self._invalid_seen.get(item.key) != reason:
            self._invalid_seen[item.key] = reason
            log.warning("skipping invalid lease %s: %s", item.key, reason[:300])
        self.on_invalid(item.key, reason)

    def acquire_lease(
        self,
        cfg: NetworkConfig,
        attrs: LeaseAttrs,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> Lease:
        """Take this node's lease, in flannel's order (same public IP, previous subnet, random).

        A key created by another node between our list and our create makes us re-list and try
        another subnet, up to RACE_RETRIES times. Raises OutOfSubnets, DatastoreUnavailable,
        SubnetContention (races lost every time).
        """
        rng = rng or random.Random()
        for _ in range(RACE_RETRIES):
            listing, revision = self.registry.list_subnets()
            leases = list(self._decode(listing))
            choice = choose_subnets(
                cfg, leases, attrs.public_ip, attrs.public_ipv6, self.previous, rng
            )
            for stale in choice.stale:
                log.info(
                    "deleting this node's lease %s: it does not fit the network config", stale.key
                )
                self.registry.delete(self._key(stale.key))
            # gone from etcd: not in the listing the watch may start from
            deleted = {stale.key for stale in choice.stale}
            value = attrs.encode()
            own: Lease | None = None
            if choice.reuse is not None and choice.reuse.lease_id == 0:
                # a reservation stays leaseless (README "Compared with flanneld")
                lease = choice.reuse
                self.registry.put(self._key(lease.key), value, 0)
                log.info("using reserved subnet %s", lease.key)
                own = Lease(lease.subnet, lease.ipv6_subnet, attrs, None, 0)
            elif choice.reuse is not None:
                lease = choice.reuse
                lease_id = self.registry.grant(SUBNET_TTL)
                self.registry.put(self._key(lease.key), value, lease_id)
                log.info("reusing lease %s (%s)", lease.key, choice.reason)
                own = Lease(lease.subnet, lease.ipv6_subnet, attrs, time.time() + SUBNET_TTL,
                            lease_id)  # fmt: skip
            else:
                new = Lease(choice.subnet, choice.ipv6_subnet, attrs)
                lease_id = self.registry.grant(SUBNET_TTL)
                if self.registry.create(self._key(new.key), value, lease_id):
                    log.info("acquired lease %s (%s)", new.key, choice.reason)
                    own = Lease(new.subnet, new.ipv6_subnet, attrs, time.time() + SUBNET_TTL,
                                lease_id)  # fmt: skip
                else:
                    self.registry.revoke(lease_id)
                    log.info("subnet %s was taken by another node meanwhile; trying another",
                             new.key)  # fmt: skip
                    self.previous = (None, None)
            if own is not None:
                return self._keep_listing(listing, revision, own, deleted)
        raise SubnetContention(
            f"could not create a lease after {RACE_RETRIES} tries: another node "
            "took each chosen subnet first"
        )

    def renew_lease(self, lease: Lease) -> Lease:
        """Re-put the lease with a fresh 24 h etcd lease (flannel RenewLease). A reservation is
        re-written unchanged. Raises DatastoreUnavailable."""
        if lease.lease_id == 0:
            return lease
        lease_id = self.registry.grant(SUBNET_TTL)
        self.registry.put(self._key(lease.key), lease.attrs.encode(), lease_id)
        return Lease(
            lease.subnet, lease.ipv6_subnet, lease.attrs, time.time() + SUBNET_TTL, lease_id
        )

    def _key(self, subnet_key: str) -> str:
        return posixpath.join(self.registry.subnets_prefix, subnet_key)

    # --- peers ----------------------------------------------------------------------------------

    def watch_leases(
        self,
        on_snapshot: Callable[[Iterable[tuple[str, Lease]]], None],
        on_put: Callable[[str, Lease], None],
        on_delete: Callable[[str], None],
        stop: threading.Event,
        on_state: Callable[[str], None] = lambda state: None,
    ) -> None:
        """List, then watch `subnets/` until `stop` is set; calls back with what changed.

        `on_snapshot` gets every valid lease after each (re)list, `on_put` each created or renewed
        lease, `on_delete` the subnet key of each deleted or expired one. A compaction past our
        revision leads to a re-list; a connection failure to a re-watch from the saved revision
        after a backoff of 0.1 s doubling to 5 s. `on_state` hears "listed", "watching",
        "compacted", "unavailable" for health reporting.
        """
        revision: int | None = None
        backoff = 0.1
        self._watch_started = True
        current: list[Callable[[], None]] = []  # the open watch's cancel, for the stopper

        def stopper() -> None:
            stop.wait()
            for cancel in list(current):
                cancel()

        threading.Thread(target=stopper, name="etcd-watch-stop", daemon=True).start()
        while not stop.is_set():
            try:
                if revision is None:
                    revision = self._snapshot(on_snapshot) + 1
                    on_state("listed")
                events, cancel = self.registry.watch(self.registry.subnets_prefix, revision)
                current[:] = [cancel]
                on_state("watching")
                for ev in events:
                    backoff = 0.1
                    revision = ev.revision + 1
                    try:
                        self._handle_event(ev, on_put, on_delete)
                    except Exception:  # a bug must cost one event, never the watch
                        log.exception("could not handle the change of %s; skipped", ev.key)
                    if stop.is_set():
                        break
            except Compacted:
                log.info("etcd history was compacted past revision %s; re-listing", revision)
                on_state("compacted")
                revision = None
            except DatastoreUnavailable as err:
                if stop.is_set():
                    return
                log.warning("etcd watch interrupted (%s); retrying in %.1f s", err, backoff)
                on_state("unavailable")
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:  # a bug must not end the watch: log it, re-list, go on
                log.exception("etcd watch failed unexpectedly; re-listing in %.1f s", backoff)
                revision = None
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _snapshot(self, on_snapshot: Callable[[Iterable[tuple[str, Lease]]], None]) -> int:
        """Hand every valid lease to `on_snapshot` and return the store revision they are from.

        The first snapshot reuses the listing of this node's lease acquisition (Go flanneld lists
        twice at start-up); later ones list again (one range request, no per-key TTL lookups).
        `on_snapshot` gets the leases as an iterator, decoded one at a time: it keeps what it
        needs of each (a slim peer record) and never holds thousands of `Lease` objects at once.
        The listing is dropped on return: the watch loop must not keep it alive."""
        if self._listing is not None:  # the acquisition's, taken moments ago
            (listing, revision, own, deleted), self._listing = self._listing, None
            pairs = self._replay(listing, own, deleted)
        else:
            listing, revision = self.registry.list_subnets()
            pairs = ((lease.key, lease) for lease in self._decode(listing))
        on_snapshot(pairs)
        return revision

    def _handle_event(
        self, ev: WatchEvent, on_put: Callable[[str, Lease], None], on_delete: Callable[[str], None]
    ) -> None:
        item = StoredLease(ev.key, ev.value, ev.lease_id)
        if ev.kind == "delete":
            self._invalid_seen.pop(ev.key, None)
            try:
                subnets = parse_subnet_key(ev.key)
            except LeaseFormatError:
                return  # an invalid key going away: nothing was programmed for it
            on_delete(make_subnet_key(*subnets))  # the canonical key the put was reported under
            return
        try:
            lease = decode_lease(item)
        except LeaseFormatError as err:
            self._invalid(item, str(err))
            return
        self._invalid_seen.pop(ev.key, None)
        on_put(lease.key, lease)
