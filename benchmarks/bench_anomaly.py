"""Throughput of the streaming anomaly detector next to two baselines, with their NAB scores.

    python -m benchmarks.bench_anomaly [--data DIR] [--runs 3] [--skip-hst] [--detectors A,B]
        [--memory]

Every detector streams every NAB series in ``DIR/data/*/*.csv`` (default: the shared NAB
subset) one point at a time, ``score_one`` then ``learn_one``, a fresh instance per series,
and is timed with ``time.perf_counter`` around that loop only (the input dicts are built
beforehand). ``points_per_s`` is the median over ``--runs`` runs; ``cpu_points_per_s`` the
same work per second of this thread's CPU time (``time.thread_time``), which the OS's other
processes do not inflate. The first run's scores are scored the NAB way
(:mod:`online_models.evaluation.nab`, threshold optimised per profile), so speed and quality sit
side by side:

- ``forecast``, ``cad``, ``ensemble``, ``fast``, ``fast_engine``, ``forecast_r0``: the
  ``livepulse eval nab --detector`` detectors (:mod:`online_models.anomaly`,
  :mod:`online_models.anomaly_cad`, :mod:`online_models.anomaly_ensemble`; ``fast_engine``
  is ``LIVEPULSE_ANOMALY_DETECTOR=fast``), warm-up = NAB probation;
- ``forecast_engine``, ``ensemble_engine``: the same with the engine's settings (no daily /
  weekly profiles: a live session lasts hours; shorter calibration memories);
- ``river_hst``: River's ``MinMaxScaler | HalfSpaceTrees`` (defaults, seed 42) on the value;
- ``windowed_gaussian``: mean and standard deviation of the last 6 400 values (running sums),
  score = 1 - two-sided Gaussian tail probability of the new value (in the spirit of NAB's
  windowed Gaussian baseline).

``--memory`` adds the KB per instance of the engine's detectors (:func:`memory_kb`).

Each row also has its NAB scores under leave-one-group-out (``nab_logo``: thresholds chosen
on the other groups, see :func:`online_models.evaluation.nab.leave_one_group_out`).

The last stdout line is one JSON document.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_incidents import ENGINE_BINS, ENGINE_CAPACITY
from online_models.anomaly import engine_forecast
from online_models.anomaly_cad import ContextAnomalyDetector
from online_models.anomaly_ensemble import EnsembleDetector
from online_models.evaluation.nab import DETECTORS as NAB_DETECTORS
from online_models.evaluation.nab import (
    Series,
    epoch,
    leave_one_group_out,
    load_corpus,
    load_profiles,
    probation_length,
    score_corpus,
)

DEFAULT_DATA = Path(os.environ.get("LIVEPULSE_SHARED_DIR",
                                   Path(__file__).resolve().parents[2] / "shared")) \
    / "datasets" / "nab"


class WindowedGaussian:
    """Gaussian tail score against the mean and deviation of the last ``window`` values."""

    def __init__(self, window: int = 6_400) -> None:
        self.values: deque[float] = deque()
        self.window = window
        self.total = 0.0
        self.squares = 0.0

    def score_one(self, x: dict[str, Any]) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        mean = self.total / n
        variance = max(self.squares / n - mean * mean, 0.0)
        if variance <= 0.0:
            return 0.0 if x["value"] == mean else 1.0
        return math.erf(abs(x["value"] - mean) / math.sqrt(2.0 * variance))

    def learn_one(self, x: dict[str, Any]) -> None:
        value = x["value"]
        self.values.append(value)
        self.total += value
        self.squares += value * value
        if len(self.values) > self.window:
            old = self.values.popleft()
            self.total -= old
            self.squares -= old * old


def river_hst(seed: int = 42) -> Any:
    from river import anomaly, preprocessing

    return preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed)


def engine_ensemble(warmup: int) -> EnsembleDetector:
    """The ensemble with the engine's forecast settings and the contextual detector."""
    return EnsembleDetector(
        [(engine_forecast(warmup), False),
         (ContextAnomalyDetector(warmup=warmup, rest=0, seed=0, capacity=ENGINE_CAPACITY),
          True)], warmup=warmup, bins=ENGINE_BINS)


DETECTORS: dict[str, Callable[[int], Any]] = {
    **NAB_DETECTORS,
    "ensemble_engine": engine_ensemble,
    "river_hst": lambda warmup: river_hst(),
    "windowed_gaussian": lambda warmup: WindowedGaussian(),
}


def memory_kb(factory: Callable[[], Any], seconds: int = 3 * 3600, instances: int = 5,
              seed: int = 1) -> float:
    """KB per instance (``tracemalloc``: blocks allocated and still held) after ``seconds``
    of a noisy 1 Hz metric, the mean over ``instances``."""
    import random
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        detectors = [factory() for _ in range(instances)]
        rng = random.Random(seed)
        for t in range(seconds):
            x = {"value": 100.0 + rng.gauss(0.0, 5.0), "ts": 1.7e9 + t}
            for detector in detectors:
                detector.score_one(x)
                detector.learn_one(x)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return round(held / instances / 1024, 1)


def stream(detector: Any, points: Sequence[dict[str, Any]]) -> tuple[list[float], float, float]:
    """Scores, wall seconds and thread-CPU seconds of one pass (score, then learn)."""
    score_one, learn_one = detector.score_one, detector.learn_one
    scores = []
    append = scores.append
    wall, cpu = time.perf_counter(), time.thread_time()
    for x in points:
        append(score_one(x))
        learn_one(x)
    return scores, time.perf_counter() - wall, time.thread_time() - cpu


def measure(name: str, corpus: Sequence[Series], inputs: Sequence[list[dict[str, Any]]],
            runs: int) -> dict[str, Any]:
    factory = DETECTORS[name]
    walls, cpus, first = [], [], None
    points = sum(len(file_points) for file_points in inputs)
    for _ in range(runs):
        wall = cpu = 0.0
        scores = []
        for series, file_points in zip(corpus, inputs, strict=True):
            detector = factory(probation_length(len(series.values)))
            file_scores, w, c = stream(detector, file_points)
            scores.append(file_scores)
            wall += w
            cpu += c
        walls.append(points / wall)
        cpus.append(points / cpu if cpu > 0 else float("nan"))
        first = first or scores
    return {"points_per_s": round(statistics.median(walls)),
            "points_per_s_runs": [round(value) for value in walls],
            "cpu_points_per_s": round(statistics.median(cpus)),
            "us_per_point": round(1e6 / statistics.median(walls), 2),
            "scores": first}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-hst", action="store_true", help="leave River HST out (slow)")
    parser.add_argument("--memory", action="store_true",
                        help="also KB per instance of the engine's detectors "
                        "(LIVEPULSE_ANOMALY_DETECTOR values) after 3 h of a 1 Hz metric")
    parser.add_argument("--detectors", default=None,
                        help=f"comma-separated subset of {', '.join(DETECTORS)}")
    args = parser.parse_args(argv)
    names = args.detectors.split(",") if args.detectors else list(DETECTORS)
    unknown = sorted(set(names) - set(DETECTORS))
    if unknown:
        raise SystemExit(f"unknown detectors {unknown}: choose from {', '.join(DETECTORS)}")

    corpus = load_corpus(args.data)
    profiles = load_profiles(args.data)
    inputs = [[{"value": value, "ts": epoch(moment)}
               for moment, value in zip(series.times, series.values, strict=True)]
              for series in corpus]
    load_before = os.getloadavg()[0]
    result: dict[str, Any] = {"files": len(corpus),
                              "points": sum(len(points) for points in inputs),
                              "runs": args.runs, "cpus": os.cpu_count()}
    for name in names:
        if name == "river_hst" and args.skip_hst:
            continue
        row = measure(name, corpus, inputs, args.runs)
        scores = row.pop("scores")
        nab = score_corpus(corpus, scores, profiles)
        row["nab"] = {profile: round(value, 2) for profile, value in nab.normalised.items()}
        logo = leave_one_group_out(corpus, {name: scores}, profiles)
        row["nab_logo"] = {profile: logo[profile] for profile in profiles}
        result[name] = row
        print(f"{name:<18} {row['points_per_s']:>9,} points/s (runs {row['points_per_s_runs']},"
              f" cpu {row['cpu_points_per_s']:,}/s)  NAB standard {row['nab']['standard']}"
              f" (leave-one-group-out {row['nab_logo']['standard']})")
    if args.memory:
        from agents.anomalies.watches import DETECTORS as ENGINE_DETECTORS

        result["engine_kb_per_instance"] = {name: memory_kb(factory)
                                            for name, factory in ENGINE_DETECTORS.items()}
        print(f"engine detectors, KB per instance: {result['engine_kb_per_instance']}")
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
