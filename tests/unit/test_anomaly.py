"""AnomalyDetector: score range, what it flags and what it learns to ignore, its expected
range, determinism and bounded memory."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Iterator
from typing import Any

import pytest

from online_models.anomaly import AnomalyDetector

T0 = 1_700_000_000.0   # a Tuesday, 22:13 UTC
FIVE_MIN = 300.0


def noise(seed: int, n: int, level: float = 100.0, sd: float = 3.0) -> Iterator[dict[str, Any]]:
    """A 1 Hz metric: Gaussian noise around ``level``."""
    rng = random.Random(seed)
    for i in range(n):
        yield {"value": level + rng.gauss(0.0, sd), "ts": T0 + i}


def daily(seed: int, days: int, skip_peak_on: int | None = None) -> Iterator[dict[str, Any]]:
    """5-minute samples of a daily pattern: low at night, a plateau 8:00-16:00, noise; the
    plateau of day ``skip_peak_on`` is missing."""
    rng = random.Random(seed)
    for i in range(days * 288):
        ts = T0 + i * FIVE_MIN
        hour = (ts % 86_400) / 3_600
        high = 8 <= hour < 16 and i // 288 != skip_peak_on
        yield {"value": (80.0 if high else 20.0) + rng.gauss(0.0, 2.0), "ts": ts}


def run(detector: AnomalyDetector, stream: Iterator[dict[str, Any]]) -> list[float]:
    scores = []
    for x in stream:
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    return scores


def test_scores_are_in_0_1_and_zero_during_warmup() -> None:
    detector = AnomalyDetector(warmup=25)
    rng = random.Random(3)
    scores = []
    for i in range(2_000):
        value = rng.choice([rng.gauss(0, 1), rng.expovariate(0.01), -1e6, 1e9, 0.0])
        x = {"value": value, "ts": T0 + i}
        scores.append(detector.score_one(x))
        detector.learn_one(x)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert scores[:25] == [0.0] * 25
    assert detector.score_one({"value": 5e9, "ts": T0 + 2_000}) == 1.0
    for no_value in ({"value": float("nan")}, {"value": None}, {}, {"value": "x"}):
        assert detector.score_one(no_value) == 0.0
        detector.learn_one(no_value)   # ignored
    for odd_time in ({"value": 1.0, "ts": float("inf")}, {"value": 1.0, "ts": "noon"}):
        assert 0.0 <= detector.score_one(odd_time) <= 1.0
        detector.learn_one(odd_time)   # learnt without a time
    assert detector.n_seen == 2_000 + 2


def test_score_one_does_not_learn() -> None:
    detector = AnomalyDetector()
    run(detector, noise(1, 200))
    x = {"value": 130.0, "ts": T0 + 200}
    first = detector.score_one(x)
    assert detector.score_one(x) == first and detector.n_seen == 200


def test_a_spike_is_flagged_and_the_noise_around_it_is_not() -> None:
    detector = AnomalyDetector()
    scores = run(detector, noise(2, 400))
    spike = detector.score_one({"value": 125.0, "ts": T0 + 400})   # about 8 sigma
    assert spike >= detector.alarm
    assert sum(s >= detector.alarm for s in scores[100:]) <= 1


def test_a_level_shift_is_flagged_once_then_learnt() -> None:
    detector = AnomalyDetector()
    run(detector, noise(4, 300))
    shifted = run(detector, ({"value": x["value"] + 30.0, "ts": x["ts"] + 300}
                             for x in noise(5, 400)))
    assert shifted[0] >= detector.alarm
    assert max(shifted[150:]) < detector.alarm   # the new level is normal by now
    low, high = detector.expected_range()
    assert low < 130.0 < high


def test_a_daily_pattern_is_not_flagged_after_learning_but_a_missing_peak_is() -> None:
    detector = AnomalyDetector(warmup=600)
    scores = run(detector, daily(6, days=10, skip_peak_on=8))
    learnt = scores[3 * 288: 8 * 288]   # days 4-8: plateaus come and go on time
    assert sum(s >= detector.alarm for s in learnt) <= 2
    day8 = scores[8 * 288: 9 * 288]
    assert max(day8) >= detector.alarm   # the plateau that did not come


def test_expected_range_brackets_the_recent_level() -> None:
    detector = AnomalyDetector(warmup=20)
    assert detector.expected_range() == (0.0, 0.0)
    run(detector, noise(7, 25, level=50.0, sd=2.0))
    low, high = detector.expected_range()   # after a short warm-up already
    assert 40.0 < low < 50.0 < high < 60.0
    run(detector, noise(8, 500, level=50.0, sd=2.0))
    low, high = detector.expected_range()
    assert 40.0 < low < 46.0 and 54.0 < high < 60.0


def test_expected_range_follows_the_time_of_day() -> None:
    detector = AnomalyDetector(warmup=600)
    run(detector, daily(9, days=4))
    # the stream ended just before T0 + 4 days; the next point is at the same clock time as
    # T0 (22:13 UTC, night): low level expected
    low, high = detector.expected_range()
    assert low < 20.0 < high < 40.0


def test_deterministic_and_pickle_round_trip_continues_identically() -> None:
    first, second = AnomalyDetector(seed=1), AnomalyDetector(seed=1)
    stream = list(daily(10, days=3))
    assert run(first, iter(stream)) == run(second, iter(stream))
    copy = pickle.loads(pickle.dumps(first))
    tail = list(noise(11, 300, level=50.0))
    assert run(copy, iter(tail)) == run(first, iter(tail))
    assert copy.expected_range() == first.expected_range()


def test_memory_is_bounded_on_a_long_stream() -> None:
    detector = AnomalyDetector(window=32, errors=64, history=128, block=8, blocks=16)
    run(detector, daily(12, days=20))
    sizes = detector.size()
    assert all(stored <= cap for stored, cap in sizes.values())
    assert sizes["history"] == (128, 128) and sizes["block_maxima"] == (16, 16)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_scale_free(scale: float) -> None:
    """The same shape at any unit scale gets the same alarms."""
    detector = AnomalyDetector()
    stream = [{"value": x["value"] * scale, "ts": x["ts"]} for x in noise(13, 300)]
    stream.append({"value": 130.0 * scale, "ts": T0 + 300})
    scores = run(detector, iter(stream))
    reference = [*run(AnomalyDetector(), noise(13, 300)), 0.0]
    flagged = [i for i, s in enumerate(scores) if s >= 0.5]
    assert flagged[-1] == 300
    assert flagged[:-1] == [i for i, s in enumerate(reference[:-1]) if s >= 0.5]
    assert math.isclose(scores[-2], reference[-2], rel_tol=1e-6, abs_tol=1e-9)


def test_thinning_and_fewer_forecasters_keep_scoring_a_spike() -> None:
    from online_models.anomaly_ensemble import fast_ensemble

    for det in (AnomalyDetector(warmup=20, steps=False, thin=16),
                AnomalyDetector(warmup=20, periods=("weekly",)), fast_ensemble(warmup=20)):
        scores = []
        for i in range(2_000):
            x = {"value": 10.0 + (i % 7) * 0.1 + (30.0 if i == 1_900 else 0.0),
                 "ts": 1_700_000_000.0 + 300 * i}
            scores.append(det.score_one(x))
            det.learn_one(x)
        assert scores[1_900] > 0.8 and max(scores[1_000:1_900]) < 0.5


def test_periods_are_checked() -> None:
    with pytest.raises(ValueError, match="periods"):
        AnomalyDetector(periods=("monthly",))
