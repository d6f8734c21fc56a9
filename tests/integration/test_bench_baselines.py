"""Keeps ``benchmarks/baselines.py`` runnable: every baseline drains a small backlog on the
session broker and counts each event exactly once over the right keys (no timing checks)."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import baselines

pytestmark = pytest.mark.integration

EVENTS = 3_000


def test_every_baseline_counts_the_backlog(broker: Any) -> None:
    results = baselines.measure_baselines(broker.bootstrap, EVENTS, partitions=4,
                                          timeout_s=120)
    expected = [b.name for b in baselines.available()]
    assert {"aiokafka", "faust", "quix"} <= set(expected)
    assert list(results) == expected
    keys = EVENTS // baselines.KEY_RATIO
    for name, result in results.items():
        assert "error" not in result, f"{name}: {result.get('error')}"
        assert (result["events"], result["processed"], result["keys"]) == (EVENTS, EVENTS, keys)
        assert result["events_per_s"] > 0 and result["rss_mb"] > 0


def test_unknown_baseline_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown baselines"):
        baselines.available(["nope"])
