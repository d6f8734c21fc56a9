"""Per-event metrics applied once per batch give the series per-value updates give."""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram

from agents.stats import LATENCY_BUCKETS, EngineMetrics, observe_many


def _samples(histogram: Histogram) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, round(s.value, 9)) for s in histogram.collect()[0].samples
            if not s.name.endswith("_created")]


def test_observe_many_equals_observe_one_by_one() -> None:
    rng = random.Random(5)
    values = [rng.choice((0.0, 0.001, 0.05, 5.0, 7.5)) if i % 7 == 0 else rng.expovariate(20)
              for i in range(2_000)]  # bucket bounds exactly, and past the last bound
    one, many = (Histogram("lat_seconds", "x", buckets=LATENCY_BUCKETS,
                           registry=CollectorRegistry()) for _ in range(2))
    for value in values:
        one.observe(value)
    observe_many(many, values)
    assert _samples(one) == _samples(many)


def test_counts_and_latencies_wait_for_the_end_of_the_batch() -> None:
    metrics = EngineMetrics()
    metrics.count(metrics.triggers, "c1", "sent")
    metrics.count(metrics.triggers, "c1", "sent")
    metrics.observe_latency("recs", 12.0)
    assert metrics.child(metrics.triggers, "c1", "sent")._value.get() == 0
    metrics.flush_batch()
    assert metrics.child(metrics.triggers, "c1", "sent")._value.get() == 2
    assert metrics.recorders["recs"].count == 1
    metrics.flush_batch()  # nothing pending: nothing added twice
    assert metrics.child(metrics.triggers, "c1", "sent")._value.get() == 2
    assert metrics.recorders["recs"].count == 1
