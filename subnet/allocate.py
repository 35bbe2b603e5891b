"""Choosing a node's subnet: pure logic, no datastore.

flannel's order (flannel `pkg/subnet/etcd/local_manager.go` tryAcquireLease): (1) an existing lease
published with this node's public IP, if it still fits the config; (2) the subnet this node had
before, from its old subnet.env, if free and valid; (3) a random pick among the first 100 free
subnets between SubnetMin and SubnetMax. A random pick (not the lowest) keeps nodes that start
together from racing for the same subnet.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from subnet.config import IPNetwork, NetworkConfig
from subnet.lease import Lease

CANDIDATES = 100  # flannel picks among at most this many free subnets


class OutOfSubnets(RuntimeError):
    """Every subnet between SubnetMin and SubnetMax is leased."""


@dataclass(frozen=True)
class Choice:
    """The outcome of `choose_subnets`.

    `reuse` is the existing lease to take over (its key is re-written with fresh attributes), or
    None for a new lease of `subnet`/`ipv6_subnet`. `stale` are this node's old leases that no
    longer fit the config: delete them first. `reason` says why, for the log.
    """

    subnet: ipaddress.IPv4Network | None
    ipv6_subnet: ipaddress.IPv6Network | None
    reuse: Lease | None = None
    stale: list[Lease] = field(default_factory=list)
    reason: str = ""


def fits(cfg: NetworkConfig, version: int, net: IPNetwork | None) -> bool:
    """True when `net` is a valid subnet of family `version` for the checked config `cfg`.

    For a disabled family only "no subnet" fits.
    """
    enabled = version in cfg.families
    if net is None or not enabled:
        return net is None and not enabled
    fam = cfg.family(version)
    if fam.subnet_min is None or fam.subnet_max is None or net.version != version:
        return False
    lo, hi, addr = int(fam.subnet_min), int(fam.subnet_max), int(net.network_address)
    return net.prefixlen == fam.subnet_len and lo <= addr <= hi


def lease_fits(cfg: NetworkConfig, lease: Lease) -> bool:
    """True when both of a lease's subnets fit the checked config."""
    return fits(cfg, 4, lease.subnet) and fits(cfg, 6, lease.ipv6_subnet)


def _overlaps(net: IPNetwork, used: Iterable[IPNetwork]) -> bool:
    return any(net.version == u.version and net.overlaps(u) for u in used)


class _Occupied:
    """The address ranges of used subnets of one IP version, for O(log n) overlap tests: a
    candidate [lo, hi] overlaps a used range when some range starting at or before hi ends at
    or after lo (sorted starts, running maximum of the ends)."""

    def __init__(self, used: Iterable[IPNetwork]) -> None:
        ranges = sorted((int(u.network_address), int(u.broadcast_address)) for u in used)
        self.starts = [lo for lo, _ in ranges]
        self.max_end: list[int] = []
        top = -1
        for _, hi in ranges:
            top = max(top, hi)
            self.max_end.append(top)

    def overlaps(self, lo: int, hi: int) -> bool:
        i = bisect.bisect_right(self.starts, hi)
        return i > 0 and self.max_end[i - 1] >= lo


def free_subnets(
    cfg: NetworkConfig, version: int, used: Sequence[IPNetwork], limit: int = CANDIDATES
) -> list[IPNetwork]:
    """The first `limit` subnets from SubnetMin up to SubnetMax that overlap no `used` subnet.

    O((candidates walked + used) log used): fast at thousands of leases."""
    fam = cfg.family(version)
    assert fam.subnet_min is not None and fam.subnet_max is not None, "config not checked"
    size = 1 << ((32 if version == 4 else 128) - fam.subnet_len)
    occupied = _Occupied(u for u in used if u.version == version)
    out: list[IPNetwork] = []
    addr = int(fam.subnet_min)
    while addr <= int(fam.subnet_max) and len(out) < limit:
        if not occupied.overlaps(addr, addr + size - 1):
            out.append(ipaddress.ip_network((addr, fam.subnet_len)))
        addr += size
    return out


def choose_subnets(
    cfg: NetworkConfig,
    leases: Sequence[Lease],
    public_ip: ipaddress.IPv4Address | None,
    public_ipv6: ipaddress.IPv6Address | None,
    previous: tuple[ipaddress.IPv4Network | None, ipaddress.IPv6Network | None] = (None, None),
    rng: random.Random | None = None,
) -> Choice:
    """Pick this node's subnet(s) from the existing `leases` and the checked config `cfg`.

    Matching on public IP uses the IPv4 public IP, or the IPv6 one in IPv6-only mode (where every
    node publishes PublicIP 0.0.0.0; README "Compared with flanneld"). Raises `OutOfSubnets`
    naming the network and its size when no subnet is free.
    """
    rng = rng or random.Random()
    v6_only = not cfg.enable_ipv4
    stale: list[Lease] = []
    for lease in leases:
        mine = (
            public_ip is not None and lease.attrs.public_ip == public_ip
            if cfg.enable_ipv4
            else public_ipv6 is not None and lease.attrs.public_ipv6 == public_ipv6
        )
        if not mine:
            continue
        if lease_fits(cfg, lease):
            return Choice(
                lease.subnet,
                lease.ipv6_subnet,
                reuse=lease,
                stale=stale,
                reason=f"existing lease of public IP {public_ipv6 if v6_only else public_ip}",
            )
        stale.append(lease)
    stale_keys = {s.key for s in stale}
    others = [lease for lease in leases if lease.key not in stale_keys]
    used: list[IPNetwork] = [n for lease in others for n in (lease.subnet, lease.ipv6_subnet) if n]

    prev_v4, prev_v6 = previous
    if (prev_v4 or prev_v6) and fits(cfg, 4, prev_v4) and fits(cfg, 6, prev_v6):
        wanted = [n for n in (prev_v4, prev_v6) if n is not None]
        if not any(_overlaps(n, used) for n in wanted):
            return Choice(prev_v4, prev_v6, stale=stale, reason="previous subnet from subnet.env")

    picked: dict[int, IPNetwork] = {}
    for version in cfg.families:
        free = free_subnets(cfg, version, used)
        if not free:
            fam = cfg.family(version)
            total = (
                (int(fam.subnet_max or 0) - int(fam.subnet_min or 0))
                >> ((32 if version == 4 else 128) - fam.subnet_len)
            ) + 1
            raise OutOfSubnets(
                f"out of subnets: all {total} /{fam.subnet_len} subnets of {fam.network} between "
                f"{fam.subnet_min} and {fam.subnet_max} are leased"
            )
        picked[version] = rng.choice(free)
    v4 = picked.get(4)
    v6 = picked.get(6)
    return Choice(
        v4 if isinstance(v4, ipaddress.IPv4Network) else None,
        v6 if isinstance(v6, ipaddress.IPv6Network) else None,
        stale=stale,
        reason="new subnet",
    )
