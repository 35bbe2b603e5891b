"""Unit tests for subnet allocation (subnet.allocate).

The scenario of flannel's mock-registry test (flannel-behaviour.md section 10, "Lease
allocation"): network 10.3.0.0/16, SubnetMin 10.3.1.0, SubnetMax 10.3.25.0, leases 10.3.1/2/4/5.0/24
and the out-of-range 10.3.31.0/24, all published by 1.1.1.1.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnet.allocate import (
    CANDIDATES,
    Choice,
    OutOfSubnets,
    choose_subnets,
    fits,
    free_subnets,
    lease_fits,
)
from subnet.config import NetworkConfig, check_network_config, parse_config
from subnet.lease import UNSET_IPV4, Lease, LeaseAttrs

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network

NEW_NODE = V4("1.2.3.4")
OTHER = V4("1.1.1.1")


def config(**obj: Any) -> NetworkConfig:
    return check_network_config(parse_config(json.dumps(obj)))


MOCK_CFG = config(Network="10.3.0.0/16", SubnetMin="10.3.1.0", SubnetMax="10.3.25.0")


def lease(
    subnet: str | None, ip: V4 = OTHER, v6: str | None = None, ipv6: V6 | None = None
) -> Lease:
    return Lease(
        N4(subnet) if subnet else None,
        N6(v6) if v6 else None,
        LeaseAttrs(public_ip=ip, public_ipv6=ipv6, backend_type="vxlan"),
    )


def mock_leases() -> list[Lease]:
    return [lease(f"10.3.{n}.0/24") for n in (1, 2, 4, 5, 31)]


def in_mock_range(net: N4 | None) -> bool:
    return (
        net is not None
        and net.prefixlen == 24
        and V4("10.3.1.0") <= net.network_address <= V4("10.3.25.0")
    )


def used(leases: list[Lease]) -> set[N4 | None]:
    return {x.subnet for x in leases}


# --- the mock-registry cases ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_new_node_gets_a_free_subnet_in_range(seed: int) -> None:
    leases = mock_leases()
    choice = choose_subnets(MOCK_CFG, leases, NEW_NODE, None, rng=random.Random(seed))
    assert in_mock_range(choice.subnet)
    assert choice.subnet not in used(leases)
    assert choice.ipv6_subnet is None
    assert choice.reuse is None
    assert choice.stale == []


def test_same_public_ip_gets_its_existing_lease_back() -> None:
    leases = mock_leases()
    first = choose_subnets(MOCK_CFG, leases, NEW_NODE, None, rng=random.Random(1))
    assert first.subnet is not None
    mine = Lease(first.subnet, None, LeaseAttrs(public_ip=NEW_NODE), lease_id=7)
    again = choose_subnets(MOCK_CFG, [*leases, mine], NEW_NODE, None, rng=random.Random(2))
    assert again.subnet == first.subnet
    assert again.reuse is mine
    assert again.stale == []


def test_previous_subnet_from_subnet_env_is_reused() -> None:
    choice = choose_subnets(
        MOCK_CFG, mock_leases(), NEW_NODE, None, previous=(N4("10.3.6.0/24"), None)
    )
    assert choice == Choice(N4("10.3.6.0/24"), None, reuse=None, stale=[], reason=choice.reason)
    assert "previous" in choice.reason


@pytest.mark.parametrize("seed", range(10))
def test_previous_subnet_outside_network_is_not_reused(seed: int) -> None:
    choice = choose_subnets(
        MOCK_CFG,
        mock_leases(),
        NEW_NODE,
        None,
        previous=(N4("10.4.1.0/24"), None),
        rng=random.Random(seed),
    )
    assert choice.subnet != N4("10.4.1.0/24")
    assert in_mock_range(choice.subnet)
    assert choice.subnet not in used(mock_leases())


@pytest.mark.parametrize("previous", ["10.3.2.0/24", "10.3.26.0/24", "10.3.6.0/25", "10.3.2.0/23"])
def test_previous_subnet_taken_or_invalid_is_not_reused(previous: str) -> None:
    choice = choose_subnets(
        MOCK_CFG, mock_leases(), NEW_NODE, None, previous=(N4(previous), None), rng=random.Random(0)
    )
    assert choice.subnet != N4(previous)
    assert in_mock_range(choice.subnet)
    assert choice.subnet not in used(mock_leases())
    assert choice.reason == "new subnet"


def test_previous_subnet_overlapping_a_lease_is_not_reused() -> None:
    leases = [*mock_leases(), lease("10.3.6.128/25")]
    choice = choose_subnets(
        MOCK_CFG, leases, NEW_NODE, None, previous=(N4("10.3.6.0/24"), None), rng=random.Random(0)
    )
    assert choice.subnet != N4("10.3.6.0/24")


@pytest.mark.parametrize("seed", range(10))
def test_config_change_gives_a_valid_subnet_and_marks_the_old_lease_stale(seed: int) -> None:
    mine = lease("10.3.7.0/24", ip=NEW_NODE)
    leases = [*mock_leases(), mine]
    new_cfg = config(Network="10.4.0.0/16")
    choice = choose_subnets(
        new_cfg,
        leases,
        NEW_NODE,
        None,
        previous=(N4("10.3.7.0/24"), None),
        rng=random.Random(seed),
    )
    assert choice.subnet is not None
    assert choice.subnet.subnet_of(N4("10.4.0.0/16"))
    assert fits(new_cfg, 4, choice.subnet)
    assert choice.reuse is None
    assert choice.stale == [mine]


def test_incompatible_lease_of_this_node_is_stale_and_its_subnet_free_again() -> None:
    cfg = config(Network="10.3.0.0/16", SubnetMin="10.3.1.0", SubnetMax="10.3.1.0")
    mine = lease("10.3.1.0/25", ip=NEW_NODE)  # wrong length for SubnetLen 24
    choice = choose_subnets(cfg, [mine], NEW_NODE, None, rng=random.Random(0))
    assert choice.subnet == N4("10.3.1.0/24")
    assert choice.stale == [mine]
    assert choice.reuse is None


def test_first_fitting_lease_of_this_node_wins_and_earlier_misfits_are_stale() -> None:
    bad = lease("10.9.1.0/24", ip=NEW_NODE)
    good = lease("10.3.9.0/24", ip=NEW_NODE)
    also = lease("10.3.10.0/24", ip=NEW_NODE)
    choice = choose_subnets(MOCK_CFG, [bad, good, also], NEW_NODE, None)
    assert choice.reuse is good
    assert choice.subnet == N4("10.3.9.0/24")
    assert choice.stale == [bad]


# --- random pick among the first 100 free subnets -------------------------------------------------


def test_free_subnets_lists_the_first_100_in_order() -> None:
    cfg = config(Network="10.3.0.0/16")
    free = free_subnets(cfg, 4, [])
    assert CANDIDATES == 100
    assert len(free) == 100
    assert free[0] == N4("10.3.1.0/24")
    assert free[-1] == N4("10.3.100.0/24")
    assert free == [N4(f"10.3.{n}.0/24") for n in range(1, 101)]


def test_free_subnets_respects_limit_and_range() -> None:
    assert free_subnets(MOCK_CFG, 4, [], limit=3) == [N4(f"10.3.{n}.0/24") for n in (1, 2, 3)]
    every = free_subnets(MOCK_CFG, 4, [x.subnet for x in mock_leases() if x.subnet])
    assert every == [N4(f"10.3.{n}.0/24") for n in range(1, 26) if n not in (1, 2, 4, 5)]


@pytest.mark.parametrize("seed", range(40))
def test_random_pick_is_among_the_first_100_free(seed: int) -> None:
    cfg = config(Network="10.3.0.0/16")
    taken = [lease(f"10.3.{n}.0/24") for n in range(1, 200, 3)]
    first_free = free_subnets(cfg, 4, [x.subnet for x in taken if x.subnet])
    assert len(first_free) == 100
    choice = choose_subnets(cfg, taken, NEW_NODE, None, rng=random.Random(seed))
    assert choice.subnet in first_free
    assert choice.subnet == random.Random(seed).choice(first_free)


def test_random_pick_is_not_lowest_first() -> None:
    cfg = config(Network="10.3.0.0/16")
    picks = {
        choose_subnets(cfg, [], NEW_NODE, None, rng=random.Random(seed)).subnet
        for seed in range(30)
    }
    assert len(picks) > 10
    for p in picks:
        assert p is not None
        assert V4("10.3.1.0") <= p.network_address <= V4("10.3.100.0")


def test_default_rng_still_picks_a_free_subnet() -> None:
    choice = choose_subnets(MOCK_CFG, mock_leases(), NEW_NODE, None)
    assert in_mock_range(choice.subnet)
    assert choice.subnet not in used(mock_leases())


# --- overlap, exhaustion --------------------------------------------------------------------------


def test_overlap_with_larger_lease_outside_the_length_excludes_candidates() -> None:
    free = free_subnets(MOCK_CFG, 4, [N4("10.3.0.0/20")])
    assert free[0] == N4("10.3.16.0/24")
    assert all(not f.overlaps(N4("10.3.0.0/20")) for f in free)


def test_overlap_with_smaller_lease_excludes_its_containing_subnet() -> None:
    free = free_subnets(MOCK_CFG, 4, [N4("10.3.7.16/28")])
    assert N4("10.3.7.0/24") not in free
    assert N4("10.3.6.0/24") in free and N4("10.3.8.0/24") in free


def test_lease_outside_the_range_excludes_an_overlapping_candidate() -> None:
    cfg = config(Network="10.3.0.0/16", SubnetMin="10.3.1.0", SubnetMax="10.3.3.0")
    # 10.3.0.0/22 starts before SubnetMin but covers every candidate
    with pytest.raises(OutOfSubnets):
        choose_subnets(cfg, [lease("10.3.0.0/22")], NEW_NODE, None)
    # a lease of another family never blocks an IPv4 subnet
    assert free_subnets(cfg, 4, [N6("::/0")]) == [N4(f"10.3.{n}.0/24") for n in (1, 2, 3)]


def test_out_of_subnets_names_the_network() -> None:
    cfg = config(Network="10.3.0.0/16", SubnetMin="10.3.1.0", SubnetMax="10.3.3.0")
    leases = [lease(f"10.3.{n}.0/24") for n in (1, 2, 3)]
    with pytest.raises(OutOfSubnets) as info:
        choose_subnets(cfg, leases, NEW_NODE, None)
    message = str(info.value)
    assert "10.3.0.0/16" in message
    assert "3" in message and "/24" in message
    assert isinstance(info.value, RuntimeError)


def test_last_free_subnet_is_found() -> None:
    cfg = config(Network="10.3.0.0/16", SubnetMin="10.3.1.0", SubnetMax="10.3.3.0")
    leases = [lease(f"10.3.{n}.0/24") for n in (1, 3)]
    assert choose_subnets(cfg, leases, NEW_NODE, None).subnet == N4("10.3.2.0/24")


# --- fits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "ok"),
    [
        ("10.3.1.0/24", True),
        ("10.3.25.0/24", True),
        ("10.3.13.0/24", True),
        ("10.3.0.0/24", False),
        ("10.3.26.0/24", False),
        ("10.3.1.0/25", False),
        ("10.4.1.0/24", False),
    ],
)
def test_fits_ipv4(net: str, ok: bool) -> None:
    assert fits(MOCK_CFG, 4, N4(net)) is ok


def test_fits_for_disabled_and_missing_families() -> None:
    assert fits(MOCK_CFG, 4, None) is False  # IPv4 enabled: a subnet is required
    assert fits(MOCK_CFG, 6, None) is True  # IPv6 disabled: no subnet is right
    assert fits(MOCK_CFG, 6, N6("fd00::/64")) is False
    assert lease_fits(MOCK_CFG, lease("10.3.3.0/24")) is True
    assert lease_fits(MOCK_CFG, lease("10.3.3.0/24", v6="fd00::/64")) is False


def test_fits_needs_a_checked_config() -> None:
    assert fits(parse_config('{"Network": "10.3.0.0/16"}'), 4, N4("10.3.1.0/24")) is False


# --- IPv6-only and dual stack ---------------------------------------------------------------------

V6_CFG = config(EnableIPv4=False, EnableIPv6=True, IPv6Network="fc00::/48")


def v6_lease(subnet: str, ipv6: str) -> Lease:
    return Lease(
        None, N6(subnet), LeaseAttrs(public_ip=UNSET_IPV4, public_ipv6=V6(ipv6), backend_type="x")
    )


@pytest.mark.parametrize("public_ip", [None, UNSET_IPV4])
def test_ipv6_only_matches_own_lease_by_public_ipv6(public_ip: V4 | None) -> None:
    other = v6_lease("fc00:0:0:1::/64", "fd00::2")
    mine = v6_lease("fc00:0:0:5::/64", "fd00::1")
    choice = choose_subnets(V6_CFG, [other, mine], public_ip, V6("fd00::1"))
    assert choice.reuse is mine
    assert (choice.subnet, choice.ipv6_subnet) == (None, N6("fc00:0:0:5::/64"))


@pytest.mark.parametrize("seed", range(5))
def test_ipv6_only_new_node_does_not_take_another_nodes_lease(seed: int) -> None:
    leases = [v6_lease(f"fc00:0:0:{n}::/64", f"fd00::{n}") for n in (1, 2, 3)]
    choice = choose_subnets(V6_CFG, leases, UNSET_IPV4, V6("fd00::99"), rng=random.Random(seed))
    assert choice.reuse is None
    assert choice.subnet is None
    assert choice.ipv6_subnet is not None
    assert choice.ipv6_subnet not in {x.ipv6_subnet for x in leases}
    assert fits(V6_CFG, 6, choice.ipv6_subnet)
    assert choice.stale == []


def test_ipv6_only_without_public_ipv6_never_reuses() -> None:
    leases = [v6_lease("fc00:0:0:1::/64", "fd00::2")]
    choice = choose_subnets(V6_CFG, leases, None, None, rng=random.Random(0))
    assert choice.reuse is None
    assert choice.ipv6_subnet != N6("fc00:0:0:1::/64")


def test_ipv6_only_previous_subnet_is_reused() -> None:
    choice = choose_subnets(V6_CFG, [], None, V6("fd00::1"), previous=(None, N6("fc00:0:0:9::/64")))
    assert (choice.subnet, choice.ipv6_subnet) == (None, N6("fc00:0:0:9::/64"))


@pytest.mark.parametrize("seed", range(5))
def test_dual_stack_new_node_gets_both_families(seed: int) -> None:
    cfg = config(Network="10.3.0.0/16", EnableIPv6=True, IPv6Network="fc00::/48")
    taken = [lease("10.3.1.0/24", v6="fc00:0:0:1::/64", ipv6=V6("fd00::2"))]
    choice = choose_subnets(cfg, taken, NEW_NODE, V6("fd00::1"), rng=random.Random(seed))
    assert fits(cfg, 4, choice.subnet) and fits(cfg, 6, choice.ipv6_subnet)
    assert choice.subnet != N4("10.3.1.0/24")
    assert choice.ipv6_subnet != N6("fc00:0:0:1::/64")


def test_dual_stack_reuses_by_ipv4_and_drops_a_v4_only_lease() -> None:
    cfg = config(Network="10.3.0.0/16", EnableIPv6=True, IPv6Network="fc00::/48")
    v4_only = lease("10.3.7.0/24", ip=NEW_NODE)
    dual = lease("10.3.8.0/24", ip=NEW_NODE, v6="fc00:0:0:8::/64")
    choice = choose_subnets(cfg, [v4_only, dual], NEW_NODE, None)
    assert choice.reuse is dual
    assert choice.stale == [v4_only]
    assert (choice.subnet, choice.ipv6_subnet) == (N4("10.3.8.0/24"), N6("fc00:0:0:8::/64"))


def test_dual_stack_previous_needs_both_families() -> None:
    cfg = config(Network="10.3.0.0/16", EnableIPv6=True, IPv6Network="fc00::/48")
    only_v4 = choose_subnets(
        cfg, [], NEW_NODE, None, previous=(N4("10.3.6.0/24"), None), rng=random.Random(0)
    )
    assert only_v4.reason == "new subnet"
    both = choose_subnets(
        cfg, [], NEW_NODE, None, previous=(N4("10.3.6.0/24"), N6("fc00:0:0:6::/64"))
    )
    assert (both.subnet, both.ipv6_subnet) == (N4("10.3.6.0/24"), N6("fc00:0:0:6::/64"))


@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(16, 30)), max_size=40)
)
@settings(max_examples=200, deadline=None)
def test_free_subnets_equals_a_linear_overlap_check(specs: list[tuple[int, int, int]]) -> None:
    """The indexed overlap test agrees with comparing every candidate with every used subnet."""
    used: list[Any] = [
        ipaddress.ip_network(f"10.3.{b}.{c}/{plen}", strict=False) for b, c, plen in specs
    ]
    fam = MOCK_CFG.family(4)
    assert fam.subnet_min is not None and fam.subnet_max is not None
    expected = []
    for addr in range(int(fam.subnet_min), int(fam.subnet_max) + 1, 256):
        net = ipaddress.ip_network((addr, 24))
        if not any(net.overlaps(u) for u in used):
            expected.append(net)
    assert free_subnets(MOCK_CFG, 4, used, limit=1000) == expected
