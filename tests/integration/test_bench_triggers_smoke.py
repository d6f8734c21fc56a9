"""Keeps ``benchmarks/bench_triggers.py`` runnable (tiny rate and duration, no timing
assertions): one worker and one relay on the session broker, the JSON shape only."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_triggers

pytestmark = pytest.mark.integration

LATENCY_KEYS = {"count", "p50_ms", "p95_ms", "p99_ms", "max_ms"}


def test_bench_triggers_smoke(broker: Any) -> None:
    result = bench_triggers.main(["--rates", "100", "--warmup", "2", "--duration", "2",
                                  "--redis", "", "--bootstrap", broker.bootstrap,
                                  "--drain-timeout", "30"])
    assert result["target_p99_ms"] == bench_triggers.TARGET_P99_MS
    assert set(result["rates"]) == {"100"}
    run = result["rates"]["100"]
    assert {"triggers", "relay", "p50_ratio", "p99_ratio", "target_met"} <= set(run)
    triggers, relay = run["triggers"], run["relay"]
    for part in (triggers, relay):
        assert set(part) >= LATENCY_KEYS
        assert part["sent_window"] > 0 and part["expected_window"] > 0
        assert part["received_window"] == part["count"] <= part["expected_window"]
        assert part["count"] > 0 and part["p99_ms"] >= part["p50_ms"]
    assert triggers["received_window"] == triggers["expected_window"]  # nothing lost
    assert set(triggers["by_source"]) <= {"live-events", "clicks"}
    assert triggers["event_ts_max_skew_ms"] <= 1
    assert triggers["lag_records_at_end"] is not None
    assert sum(triggers["mix_window"].values()) == triggers["sent_window"]
