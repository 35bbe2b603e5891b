"""A small run of every benchmark, so that bench/ cannot rot (no timing is asserted)."""

from __future__ import annotations

import pytest

from bench import kube_scale

pytestmark = [pytest.mark.kernel, pytest.mark.kube]


def test_kube_scale_runs_at_small_n() -> None:
    result = kube_scale.run(20, 2)
    assert result["nodes"] == 20
    assert result["rss_mib"] > 0 and result["peak_rss_mib"] >= result["rss_mib"]
    assert result["cold_sync_s"] > 0 and result["baseline_ip_batch_s"] > 0
    assert result["change_max_ms"] >= result["change_p50_ms"] > 0


@pytest.mark.etcd
def test_datapath_runs_once_without_fragments() -> None:
    from bench import datapath

    result = datapath.run(runs=1, seconds=1)
    assert len(result.overlay.gbps) == 1 and result.overlay.gbps[0] > 0
    assert len(result.underlay.gbps) == 1 and result.underlay.gbps[0] > 0
    assert result.overlay.frags == {"FragCreates": 0, "ReasmReqds": 0, "ReasmOKs": 0}
    assert result.overlay.mtu["flannel.1"] == result.underlay.mtu["node eth0"] - 50
    assert "|" in datapath.table(result)


@pytest.mark.etcd
def test_contention_runs_at_small_n() -> None:
    from bench import contention

    result = contention.run(5, timeout=120)
    assert result.ok
    for rnd in (result.cold, result.synced):
        assert rnd.leased == 5 and rnd.etcd_keys == 5 and rnd.exited == 0
        assert rnd.collisions == 0
        assert rnd.all_leased_s is not None and len(rnd.to_lease_s) == 5
        assert len(rnd.retries) == 5 and len(rnd.hwm_mib) == 5 and min(rnd.hwm_mib) > 0
    assert "| collisions" in contention.table(result)
