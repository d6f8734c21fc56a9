"""ContextAnomalyDetector, Calibrator and EnsembleDetector: what they flag, what they learn,
their calibration against a brute-force count, bounded memory and restore from a signed
snapshot mid-stream."""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from typing import Any

import pytest

from online_models.anomaly import AnomalyDetector
from online_models.anomaly_cad import ContextAnomalyDetector
from online_models.anomaly_ensemble import Calibrator, EnsembleDetector
from online_models.snapshot import load_snapshot, save_snapshot

KEY = b"anomaly-cad-test-key-0123456789ab"


def cycle(n: int, start: int = 0) -> list[dict[str, Any]]:
    """A noiseless repeating shape of period 12 sampled every minute."""
    shape = [0, 1, 3, 6, 8, 9, 8, 6, 3, 1, 0, 0]
    return [{"value": 100.0 + 10.0 * shape[i % 12], "ts": 60.0 * i}
            for i in range(start, start + n)]


def run(detector: Any, points: list[dict[str, Any]]) -> list[float]:
    scores = []
    for x in points:
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores


def test_cad_learns_a_cycle_and_flags_a_break_inside_the_usual_range() -> None:
    detector = ContextAnomalyDetector(warmup=60)
    scores = run(detector, cycle(600))
    assert scores[:60] == [0.0] * 60 and max(scores[120:]) == 0.0
    nxt = cycle(1, start=600)[0]
    assert nxt["value"] == 100.0 and detector.score_one(nxt) == 0.0
    # 180 is a usual value, but never after 100, 100: a break of the pattern
    assert detector.novelty({"value": 180.0}) >= 0.5
    assert detector.score_one({"value": 1_000.0}) == 1.0   # a level never seen at all


def test_cad_rest_reports_an_event_once() -> None:
    detector = ContextAnomalyDetector(warmup=60, rest=20)
    run(detector, cycle(600))
    flat = [{"value": 500.0}] * 10
    scores = run(detector, flat)
    assert scores[0] == 1.0 and max(scores[1:]) < 1.0


def test_cad_memory_is_capped_and_bad_values_are_ignored() -> None:
    detector = ContextAnomalyDetector(warmup=20, capacity=200)
    rng = random.Random(1)
    for _ in range(5_000):
        x = {"value": rng.uniform(0, 1_000)}
        assert 0.0 <= detector.score_one(x) <= 1.0
        detector.learn_one(x)
    assert all(stored <= cap for stored, cap in detector.size().values())
    for bad in ({"value": math.nan}, {"value": "x"}, {}, {"value": 1e300}, {"value": -1e300}):
        assert 0.0 <= detector.score_one(bad) <= 1.0
        detector.learn_one(bad)
    low, high = detector.expected_range()
    assert low <= high


def test_calibrator_matches_a_brute_force_tail_count() -> None:
    rng = random.Random(2)
    calibrator, seen = Calibrator(bins=1024, cap=10**9), []
    for _ in range(3_000):
        score = rng.betavariate(0.5, 4.0)
        b = min(1023, int(score * 1024))
        # the share of past scores in this score's bin or above, counted by hand
        tail = len(seen) - bisect_left(sorted(seen), b)
        expected = 0.0 if score <= 0 else min(1.0, -math.log10((tail + 1) / (len(seen) + 1)) / 6)
        assert calibrator.score(score) == pytest.approx(expected, abs=1e-12)
        calibrator.add(score)
        seen.append(b)


def test_calibrator_halves_its_counts_at_the_cap() -> None:
    calibrator = Calibrator(cap=100)
    for _ in range(99):
        calibrator.add(0.1)
    assert calibrator.total == 99
    calibrator.add(0.9)
    assert calibrator.total == 50 and calibrator.tail(0.9) == pytest.approx(0.5)
    assert calibrator.tail(0.0) == pytest.approx(50.0)


def test_ensemble_is_the_max_of_its_calibrated_members() -> None:
    ensemble = EnsembleDetector(warmup=60)
    mean = EnsembleDetector(warmup=60, combine="mean")
    points = cycle(2_000)
    rng = random.Random(3)
    for x in points:
        x = dict(x, value=x["value"] + rng.gauss(0, 1))
        members = ensemble.member_scores(x)
        assert ensemble.score_one(x) == max(members)
        assert mean.score_one(x) == pytest.approx(sum(mean.member_scores(x)) / 2)
        ensemble.learn_one(x)
        mean.learn_one(x)
    far = {"value": 1_000.0, "ts": 120_000.0}
    forecast, context = ensemble.member_scores(far)
    # the novelty is total; calibrated, it is as rare as the noisy cycle's rarest novelties
    assert forecast == 1.0 and ensemble.members[1].novelty(far) == 1.0 and context > 0.3
    with pytest.raises(ValueError):
        EnsembleDetector(combine="median")


def test_ensemble_restores_from_a_signed_snapshot_and_continues_identically() -> None:
    ensemble = EnsembleDetector(
        [(AnomalyDetector(warmup=30), False), (ContextAnomalyDetector(warmup=30, rest=0), True)],
        warmup=30)
    run(ensemble, cycle(700))
    blob = save_snapshot(ensemble, None, key=KEY, model_name="anomaly-ensemble", version="1")
    restored, _ = load_snapshot(blob, key=KEY, expected_model="anomaly-ensemble")
    tail = [dict(x, value=x["value"] * (1.5 if i == 50 else 1.0))
            for i, x in enumerate(cycle(200, start=700))]
    assert run(restored, tail) == run(ensemble, tail)
    assert restored.n_seen == ensemble.n_seen == 900
