"""Keeps ``benchmarks/bench_broker_growth.py`` runnable on both local brokers (tiny steps,
no timing assertions): the JSON shape only."""

from __future__ import annotations

import pytest

from benchmarks import bench_broker_growth
from streams.broker import BROKER_ENGINES

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("engine", BROKER_ENGINES)
def test_bench_broker_growth_smoke(engine: str) -> None:
    result = bench_broker_growth.main(["--broker", engine, "--steps", "5,20", "--probes", "3",
                                       "--idle-s", "0.2"])
    assert result["broker"] == engine
    assert [row["stored_batches"] for row in result["steps"]] == [8, 23]  # each + 3 probes
    for row in result["steps"]:
        assert row["relay_max_ms"] >= row["relay_p50_ms"] > 0
        assert row["idle_broker_cores"] >= 0
