"""The etcd subnet manager against a real etcd: keys, values, TTLs, races, reservations, watch."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

import pytest

from subnet.allocate import OutOfSubnets
from subnet.config import ConfigError
from subnet.errors import ConfigNotFound, DatastoreUnavailable
from subnet.etcd import (
    EtcdOptions,
    EtcdRegistry,
    EtcdSubnetManager,
    StoredLease,
)
from subnet.lease import Lease, LeaseAttrs
from tests.conftest import EtcdServer
from tests.testbed import wait_for

pytestmark = pytest.mark.etcd

R = TypeVar("R", bound=EtcdRegistry)
CONFIG = '{"Network": "10.3.0.0/16", "Backend": {"Type": "vxlan"}}'


def attrs(ip: str, mac: str = "0e:00:00:00:00:01") -> LeaseAttrs:
    return LeaseAttrs(ipaddress.IPv4Address(ip), None, "vxlan", {"VNI": 1, "VtepMAC": mac})


@pytest.fixture
def registry(etcd_url: str, etcd_prefix: str) -> Iterator[EtcdRegistry]:
    with registry_of(EtcdRegistry, etcd_url, etcd_prefix) as reg:
        yield reg


def put_config(registry: EtcdRegistry, config: str = CONFIG) -> None:
    registry.put(f"{registry.prefix}/config", config.encode())


def test_missing_config_says_how_to_create_it(registry: EtcdRegistry) -> None:
    sm = EtcdSubnetManager(registry)
    with pytest.raises(ConfigNotFound, match="flannel config not found in etcd store"):
        sm.get_network_config()
    put_config(registry, '{"Network": "10.3.0.0/16", "SubnetLen": 40}')
    with pytest.raises(ConfigError) as err:
        sm.get_network_config()
    assert err.value.field == "SubnetLen"
    put_config(registry)
    assert sm.get_network_config().subnet_len == 24


def test_acquire_writes_flannel_key_value_and_24h_ttl(registry: EtcdRegistry) -> None:
    put_config(registry)
    sm = EtcdSubnetManager(registry)
    lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    assert lease.subnet is not None and lease.subnet.prefixlen == 24
    key = f"{registry.prefix}/subnets/{lease.subnet.network_address}-24"
    value, meta = registry.client.get(key)
    assert value == (
        b'{"PublicIP":"1.2.3.4","PublicIPv6":null,"BackendType":"vxlan",'
        b'"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"}}'
    )
    assert meta.lease_id == lease.lease_id != 0
    assert 86390 <= registry.client.get_lease_info(lease.lease_id).TTL <= 86400
    # the same public IP gets the same lease back, with fresh attributes
    again = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4", "0e:00:00:00:00:02"))
    assert again.subnet == lease.subnet
    assert b"0e:00:00:00:00:02" in registry.client.get(key)[0]


def test_renew_grants_a_new_24h_lease_and_keeps_the_value(registry: EtcdRegistry) -> None:
    put_config(registry)
    sm = EtcdSubnetManager(registry)
    lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    key = f"{registry.prefix}/subnets/{lease.key}"
    before, _ = registry.client.get(key)
    renewed = sm.renew_lease(lease)
    after, meta = registry.client.get(key)
    assert after == before
    assert renewed.lease_id == meta.lease_id != lease.lease_id
    assert 86390 <= registry.client.get_lease_info(meta.lease_id).TTL <= 86400


def test_previous_subnet_is_preferred(registry: EtcdRegistry) -> None:
    put_config(registry)
    sm = EtcdSubnetManager(registry, previous=(ipaddress.IPv4Network("10.3.77.0/24"), None))
    lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    assert str(lease.subnet) == "10.3.77.0/24"


class RacingRegistry(EtcdRegistry):
    """Lets another node create the chosen key just before our first create."""

    raced: str = ""

    def create(self, key: str, value: bytes, lease_id: int) -> bool:
        if not self.raced:
            self.raced = key
            self.put(key, attrs("9.9.9.9").encode())
        return bool(super().create(key, value, lease_id))


def test_lost_creation_race_takes_another_subnet(etcd_url: str, etcd_prefix: str) -> None:
    reg = RacingRegistry(EtcdOptions(endpoints=etcd_url, prefix=etcd_prefix))
    try:
        put_config(reg)
        sm = EtcdSubnetManager(reg)
        lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"), rng=random.Random(7))
        assert reg.raced and not reg.raced.endswith(lease.key)
        assert reg.client.get(reg.raced)[0] == attrs("9.9.9.9").encode()
        mine, _ = reg.client.get(f"{reg.prefix}/subnets/{lease.key}")
        assert b'"PublicIP":"1.2.3.4"' in mine
    finally:
        reg.client.delete_prefix(etcd_prefix)
        reg.close()


def test_reservation_is_used_and_stays_leaseless(registry: EtcdRegistry) -> None:
    put_config(registry)
    key = f"{registry.prefix}/subnets/10.3.42.0-24"
    registry.put(key, b'{"PublicIP":"1.2.3.4","PublicIPv6":null}')
    sm = EtcdSubnetManager(registry)
    lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    assert str(lease.subnet) == "10.3.42.0/24"
    value, meta = registry.client.get(key)
    assert meta.lease_id == 0
    assert b'"BackendType":"vxlan"' in value
    assert sm.renew_lease(lease) == lease


def test_lease_that_no_longer_fits_the_config_is_replaced(registry: EtcdRegistry) -> None:
    put_config(registry)
    sm = EtcdSubnetManager(registry)
    old = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    put_config(registry, '{"Network": "10.4.0.0/16"}')
    new = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    assert new.subnet is not None and new.subnet.subnet_of(ipaddress.IPv4Network("10.4.0.0/16"))
    assert registry.client.get(f"{registry.prefix}/subnets/{old.key}")[0] is None


def test_full_network_says_which_network_is_out_of_subnets(registry: EtcdRegistry) -> None:
    put_config(registry, '{"Network": "10.9.0.0/28"}')  # SubnetLen 30: 3 usable subnets
    sm = EtcdSubnetManager(registry)
    cfg = sm.get_network_config()
    for i in range(3):
        sm.acquire_lease(cfg, attrs(f"1.2.3.{i + 1}"))
    with pytest.raises(OutOfSubnets, match=r"10\.9\.0\.0/28"):
        sm.acquire_lease(cfg, attrs("1.2.3.9"))


class Recorder:
    def __init__(self) -> None:
        self.snapshots: list[list[str]] = []
        self.puts: list[str] = []
        self.deletes: list[str] = []
        self.invalid: list[str] = []

    def snapshot(self, pairs: Iterable[tuple[str, Lease]]) -> None:
        items = list(pairs)
        assert all(key == lease.key for key, lease in items)
        self.snapshots.append(sorted(key for key, _ in items))

    def put(self, key: str, lease: Lease) -> None:
        assert key == lease.key
        self.puts.append(key)

    def delete(self, key: str) -> None:
        self.deletes.append(key)


@contextlib.contextmanager
def watching(sm: EtcdSubnetManager, rec: Recorder) -> Iterator[None]:
    """`sm.watch_leases` reporting to `rec` in a thread, stopped (and checked stopped) after."""
    stop = threading.Event()
    t = threading.Thread(
        target=sm.watch_leases, args=(rec.snapshot, rec.put, rec.delete, stop), daemon=True
    )
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()


class CountingRegistry(EtcdRegistry):
    """Counts the listings of `subnets/`."""

    lists = 0

    def list_subnets(self) -> tuple[list[StoredLease], int]:
        self.lists += 1
        items, revision = super().list_subnets()
        return items, revision


@contextlib.contextmanager
def registry_of(cls: type[R], etcd_url: str, etcd_prefix: str) -> Iterator[R]:
    """A registry of class `cls` on the test's prefix, emptied and closed after."""
    reg = cls(EtcdOptions(endpoints=etcd_url, prefix=etcd_prefix))
    try:
        yield reg
    finally:
        reg.client.delete_prefix(etcd_prefix)
        reg.close()


def test_watch_lists_then_follows_puts_and_deletes(registry: EtcdRegistry) -> None:
    prefix = f"{registry.prefix}/subnets"
    registry.put(f"{prefix}/10.3.1.0-24", attrs("1.1.1.1").encode())
    registry.put(f"{prefix}/bogus", b"{}")
    rec = Recorder()
    sm = EtcdSubnetManager(registry, on_invalid=lambda key, why: rec.invalid.append(key))
    with watching(sm, rec):
        wait_for("the first snapshot", lambda: rec.snapshots)
        assert rec.snapshots[0] == ["10.3.1.0-24"]
        assert rec.invalid == [f"{prefix}/bogus"]
        registry.put(f"{prefix}/10.3.2.0-24", attrs("2.2.2.2").encode())
        registry.put(f"{prefix}/10.3.3.0-24", b"garbage")
        registry.delete(f"{prefix}/10.3.1.0-24")
        wait_for("the delete event", lambda: rec.deletes == ["10.3.1.0-24"])
        assert rec.puts == ["10.3.2.0-24"]
        assert f"{prefix}/10.3.3.0-24" in rec.invalid


class CompactedOnce(CountingRegistry):
    """Reports a stale revision on the first list, so the first watch starts below compaction."""

    def list_subnets(self) -> tuple[list[StoredLease], int]:
        items, rev = super().list_subnets()
        return items, (1 if self.lists == 1 else rev)


def test_watch_relists_after_compaction(etcd_url: str, etcd_prefix: str) -> None:
    with registry_of(CompactedOnce, etcd_url, etcd_prefix) as reg:
        prefix = f"{reg.prefix}/subnets"
        for i in range(3):
            reg.put(f"{prefix}/10.3.{i + 1}.0-24", attrs("1.1.1.1").encode())
        _, rev = EtcdRegistry.list_subnets(reg)
        reg.client.compact(rev)
        rec = Recorder()
        with watching(EtcdSubnetManager(reg), rec):
            wait_for("a re-list after compaction", lambda: len(rec.snapshots) >= 2)
            assert rec.snapshots[1] == ["10.3.1.0-24", "10.3.2.0-24", "10.3.3.0-24"]
            reg.put(f"{prefix}/10.3.9.0-24", attrs("1.1.1.9").encode())
            wait_for("a live event after the re-list", lambda: "10.3.9.0-24" in rec.puts)


def test_username_password_over_http_survive_an_etcd_restart(etcd_server: EtcdServer) -> None:
    import grpc
    from pyetcd import etcdrpc

    channel = grpc.insecure_channel(f"127.0.0.1:{etcd_server.client_port}")
    auth = etcdrpc.AuthStub(channel)
    auth.UserAdd(etcdrpc.AuthUserAddRequest(name="root", password="s3cret"), timeout=5)
    auth.RoleAdd(etcdrpc.AuthRoleAddRequest(name="root"), timeout=5)
    auth.UserGrantRole(etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"), timeout=5)
    auth.AuthEnable(etcdrpc.AuthEnableRequest(), timeout=5)
    channel.close()
    reg = EtcdRegistry(EtcdOptions(endpoints=etcd_server.url, prefix="/auth-test",
                                   username="root", password="s3cret"))  # fmt: skip
    try:
        put_config(reg)
        sm = EtcdSubnetManager(reg)
        lease = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
        etcd_server.stop()  # the auth token dies with the server
        etcd_server.start()

        def renewed() -> bool:
            try:
                sm.renew_lease(lease)
            except DatastoreUnavailable:
                return False
            return True

        wait_for("a renewal with a fresh token", renewed, timeout=30, interval=0.5)
    finally:
        reg.close()


class CreatesAfterList(CountingRegistry):
    """Another node creates a lease right after our first list, before our watch starts."""

    def list_subnets(self) -> tuple[list[StoredLease], int]:
        result = super().list_subnets()
        if self.lists == 1:
            self.put(f"{self.subnets_prefix}/10.3.77.0-24", attrs("7.7.7.7").encode())
        return result


def test_lease_created_between_list_and_watch_is_seen(etcd_url: str, etcd_prefix: str) -> None:
    with registry_of(CreatesAfterList, etcd_url, etcd_prefix) as reg:
        rec = Recorder()
        with watching(EtcdSubnetManager(reg), rec):
            wait_for("the lease created after the list", lambda: "10.3.77.0-24" in rec.puts)
            assert rec.snapshots == [[]]  # it was not in the list: only the watch can report it


def test_start_up_lists_the_leases_once(etcd_url: str, etcd_prefix: str) -> None:
    """The watch's first snapshot is the acquisition's listing with this node's lease in it;
    changes made after that listing (even before the watch starts) come as events."""
    with registry_of(CountingRegistry, etcd_url, etcd_prefix) as reg:
        put_config(reg)
        prefix = f"{reg.prefix}/subnets"
        reg.put(f"{prefix}/10.3.1.0-24", attrs("1.1.1.1").encode())
        sm = EtcdSubnetManager(reg)
        own = sm.acquire_lease(sm.get_network_config(), attrs("9.9.9.9"))
        reg.put(f"{prefix}/10.3.2.0-24", attrs("2.2.2.2").encode())  # after the listing
        rec = Recorder()
        with watching(sm, rec):
            wait_for("the later lease", lambda: "10.3.2.0-24" in rec.puts)
            assert rec.snapshots == [sorted(["10.3.1.0-24", own.key])]
            assert reg.lists == 1


def test_leases_deleted_by_the_acquisition_are_not_in_the_first_snapshot(
    registry: EtcdRegistry,
) -> None:
    put_config(registry, '{"Network": "10.3.0.0/16", "SubnetLen": 24}')
    first = EtcdSubnetManager(registry)
    first.acquire_lease(first.get_network_config(), attrs("1.2.3.4"))
    put_config(registry, '{"Network": "10.3.0.0/16", "SubnetLen": 25}')  # the old /24 is stale
    sm = EtcdSubnetManager(registry)
    new = sm.acquire_lease(sm.get_network_config(), attrs("1.2.3.4"))
    rec = Recorder()
    with watching(sm, rec):
        wait_for("the first snapshot", lambda: rec.snapshots)
        assert rec.snapshots[0] == [new.key]
