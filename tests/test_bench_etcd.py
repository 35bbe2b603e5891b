"""A small run of the etcd-mode scale benchmark, so that it cannot rot (no timing is asserted)."""

from __future__ import annotations

import pytest

from bench import etcd_scale

pytestmark = [pytest.mark.kernel, pytest.mark.etcd]


def test_etcd_scale_runs_at_small_n(capsys: pytest.CaptureFixture[str]) -> None:
    out = etcd_scale.run(**etcd_scale.SMOKE)  # what `--smoke` runs
    # every peer reached the kernel (the benchmark itself checks the route counts)
    assert out["programming"][0][:2] == [200, 600]
    assert [row[:2] for row in out["resync"]] == [["none", 0], ["1 %", 6]]
    assert out["cold_start"][0] == 200 and float(out["cold_start"][3]) > 0
    assert [row[1] for row in out["events"]] == [10, 10]
    printed = capsys.readouterr().out
    for title in ("1. Programming", "2. Cold start", "3. Event", "4. Resync", "5. Idle"):
        assert title in printed
