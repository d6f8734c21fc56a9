"""Keeps ``benchmarks/bench_relay_floor.py`` runnable (a low rate, a few seconds, embedded
broker; no timing assertions): every relayed record arrives and the JSON has its shape."""

from __future__ import annotations

import pytest

from benchmarks import bench_relay_floor

pytestmark = pytest.mark.integration


def test_bench_relay_floor_smoke() -> None:
    result = bench_relay_floor.main(["--rates", "200", "--warmup", "1", "--duration", "2"])
    row = result["rates"]["200"]
    assert row["complete"] and row["received_window"] > 0
    assert row["p99_ms"] >= row["p50_ms"] > 0
    assert row["worker_cpu"] >= 0 and row["broker_cores"] >= 0
