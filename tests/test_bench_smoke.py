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
