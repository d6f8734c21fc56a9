"""Keeps ``benchmarks/bench_flood.py`` runnable (a small flood, a few seconds, embedded broker;
no timing assertions): the flood is quarantined, the user incident opens, every other timed
event has its output, and the JSON has its shape."""

from __future__ import annotations

import pytest

from benchmarks import bench_flood

pytestmark = pytest.mark.integration


def test_bench_flood_smoke() -> None:
    result = bench_flood.main(["--smoke", "--only", "on"])
    (run,) = result["runs"]
    assert run["quarantine"] and run["flood_sent"] == 3_000
    # the burst passes, the rest of the flood is dead-lettered
    assert 3_000 - 400 <= run["dead_letters"] < 3_000
    assert run["user_incidents_opened"] >= 1
    assert run["background_without_output"] == 0
    for phase in ("baseline", "flood"):
        assert sum(g["count"] for g in run[phase].values()) > 0
    assert set(run["p99_ratio"]) == set(bench_flood.GROUPS)
