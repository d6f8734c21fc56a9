"""Numenta Anomaly Benchmark (NAB) scoring of the streaming anomaly detectors.

``DIR`` is a NAB tree: ``DIR/data/<group>/<file>.csv`` (``timestamp,value``),
``DIR/labels/combined_windows.json`` and ``DIR/profiles.json``. Each file is streamed through
a fresh detector (score before learn, ``warmup`` = the file's probation length), and the
per-row scores are scored the NAB way:

- the first ``min(floor(0.15 n), floor(0.15 * 5000))`` rows of each file (probation) are
  not scored;
- a labelled window counts once: its earliest detection earns
  ``tpWeight * S(p) / S(-1)`` with ``S(p) = 2 / (1 + exp(5 p)) - 1`` and
  ``p = -(right - i + 1) / width`` (about -1 at the left edge, 0 just past the right edge);
  a window with no detection costs ``fnWeight``;
- every detection outside a window costs ``fpWeight * S(p)`` with
  ``p = |i - right_prev| / (width_prev - 1)`` relative to the preceding window (so an alarm
  just after a window costs little), and the full ``fpWeight`` before the first window or
  when ``p >= 3``;
- one threshold per profile (detection = score >= threshold) is chosen to maximise the sum
  over all files, and the sum is normalised so that the null detector (a constant score)
  gets 0 and a perfect one (every window detected at its left edge, nothing else) 100:
  ``100 * (score - null) / (windows * tpWeight - null)``.

>>> scaled_sigmoid(-1.0) > 0.98 and scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(3.0) == -1.0
True
>>> probation_length(4032), probation_length(22695)
(604, 750)

Command line (``livepulse eval nab`` runs :func:`main`)::

    livepulse eval nab --data /work/shared/datasets/nab [--scores-out DIR2]   # ensemble
    livepulse eval nab --data DIR --score-only DIR/reference-results/numenta
    livepulse eval nab --data DIR --holdout realAdExchange,artificialNoAnomaly
    livepulse eval nab --data DIR --detector forecast,cad,ensemble
    livepulse eval nab --data DIR --detector fast,fast_engine --incidents

It prints one line per file (raw standard score, windows, detections), then the
**leave-one-group-out** lines (:func:`leave_one_group_out`: each top-level group scored at the
threshold, and detector when several are given, chosen on the other groups only; the primary
figure) beside the all-files line (one threshold optimised over every file, as NAB does), and,
as its last line, one JSON object: the all-files scores at the top level, ``logo`` for the
leave-one-group-out ones. ``--incidents`` also scores each detector as the engine alerts on
it (:func:`leave_one_group_out_incidents`: a detection is an incident opening of the engine's
tracker rule, :data:`ENGINE_RULE`, rather than every row at or above the threshold).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from online_models.anomaly import AnomalyDetector, engine_forecast
from online_models.anomaly_cad import ContextAnomalyDetector
from online_models.anomaly_ensemble import EnsembleDetector, fast_ensemble

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROBATION = 0.15
PROBATION_CAP = 5000


def scaled_sigmoid(position: float) -> float:
    """NAB's weighting of a detection at relative ``position`` to a window's right edge."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(n_rows: int, fraction: float = PROBATION) -> int:
    """Rows at the start of a file that are not scored."""
    return min(math.floor(fraction * n_rows), math.floor(fraction * PROBATION_CAP))


def parse_time(text: str) -> datetime:
    """A NAB timestamp (``2014-04-10 07:15:00`` or with ``.000000``), as naive UTC."""
    return datetime.fromisoformat(text.strip())


def epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


@dataclass
class Series:
    """One NAB data file with its labelled windows (row index ranges, inclusive)."""

    name: str
    timestamps: list[str]
    times: list[datetime]
    values: list[float]
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def group(self) -> str:
        return self.name.split("/", 1)[0]


def read_series(path: Path, name: str, limits: Iterable[Sequence[str]] = ()) -> Series:
    timestamps: list[str] = []
    values: list[float] = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            timestamps.append(row["timestamp"])
            values.append(float(row["value"]))
    times = [parse_time(stamp) for stamp in timestamps]
    windows = []
    for start, end in limits:
        left = bisect_left(times, parse_time(start))
        right = bisect_right(times, parse_time(end)) - 1
        if left <= right:
            windows.append((left, right))
    return Series(name, timestamps, times, values, windows)


def load_corpus(data_dir: Path, groups: Iterable[str] | None = None) -> list[Series]:
    """Every ``data/<group>/<file>.csv`` under ``data_dir`` with its windows, sorted by name."""
    labels = json.loads((data_dir / "labels" / "combined_windows.json").read_text())
    wanted = set(groups) if groups else None
    corpus = []
    for path in sorted((data_dir / "data").glob("*/*.csv")):
        name = f"{path.parent.name}/{path.name}"
        if wanted is not None and path.parent.name not in wanted:
            continue
        corpus.append(read_series(path, name, labels.get(name, [])))
    return corpus


def load_profiles(data_dir: Path) -> dict[str, dict[str, float]]:
    """Cost matrices per profile from ``profiles.json`` (NAB's three by default)."""
    path = data_dir / "profiles.json"
    if not path.exists():
        return {"standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11},
                "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22},
                "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11}}
    raw = json.loads(path.read_text())
    return {name: {k: float(v) for k, v in spec["CostMatrix"].items()}
            for name, spec in raw.items()}


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Row:
    """A scorable row: its anomaly score, and either its window id (weight earned if it is
    the window's first detection, before tpWeight) or None (weight of a false positive,
    before fpWeight, always <= 0)."""

    score: float
    weight: float
    window: int | None


def sweep(series: Series, scores: Sequence[float], window_offset: int = 0,
          fraction: float = PROBATION) -> list[Row]:
    """The scorable rows of one file (probation dropped), in file order."""
    if len(scores) != len(series.values):
        raise ValueError(f"{series.name}: {len(scores)} scores for {len(series.values)} rows")
    probation = probation_length(len(scores), fraction)
    rows: list[Row] = []
    windows = series.windows
    next_window = 0
    current: tuple[int, int] | None = None
    previous: tuple[int, int] | None = None
    for i, score in enumerate(scores):
        if current is None and next_window < len(windows) and i == windows[next_window][0]:
            current = windows[next_window]
            next_window += 1
        if current is not None:
            left, right = current
            position = -(right - i + 1) / (right - left + 1)
            weight, window = scaled_sigmoid(position) / MAX_TP, window_offset + next_window - 1
        else:
            if previous is None:
                position = 3.0
            else:
                left, right = previous
                position = abs(i - right) / max(1, right - left)
            weight, window = scaled_sigmoid(position), None
        if i >= probation:
            rows.append(Row(float(score), weight, window))
        if current is not None and i == current[1]:
            previous, current = current, None
    return rows


def file_score(rows: Iterable[Row], n_windows_ids: Iterable[int], threshold: float,
               costs: dict[str, float]) -> tuple[float, dict[str, int]]:
    """Raw NAB score of one file's rows at ``threshold`` and its tp/fp/fn window counts."""
    best = {window: -costs["fnWeight"] for window in n_windows_ids}
    fp_sum, fp = 0.0, 0
    for row in rows:
        if row.score < threshold:
            continue
        if row.window is None:
            fp_sum += row.weight * costs["fpWeight"]
            fp += 1
        else:
            best[row.window] = max(best[row.window], row.weight * costs["tpWeight"])
    detected = sum(value > -costs["fnWeight"] for value in best.values())
    return sum(best.values()) + fp_sum, {"tp": detected, "fn": len(best) - detected, "fp": fp}


def best_threshold(rows: list[Row], window_ids: Iterable[int],
                   costs: dict[str, float]) -> tuple[float, float]:
    """(threshold, raw score) maximising the summed score over ``rows`` (of many files).

    Thresholds are swept from above every score down through each distinct score; ties keep
    the highest threshold.
    """
    best_part = {window: -costs["fnWeight"] for window in window_ids}
    total = sum(best_part.values())
    best = (1.1, total)
    ordered = sorted(rows, key=lambda row: row.score, reverse=True)
    fp_weight, tp_weight = costs["fpWeight"], costs["tpWeight"]
    for index, row in enumerate(ordered):
        if row.window is None:
            total += row.weight * fp_weight
        else:
            gain = row.weight * tp_weight
            if gain > best_part[row.window]:
                total += gain - best_part[row.window]
                best_part[row.window] = gain
        last_of_level = index + 1 == len(ordered) or ordered[index + 1].score != row.score
        if last_of_level and total > best[1]:
            best = (row.score, total)
    return best


@dataclass
class Scored:
    """NAB result of one detector over a corpus."""

    normalised: dict[str, float]
    thresholds: dict[str, float]
    raw: dict[str, float]
    per_file: dict[str, dict[str, Any]]


def window_ids(corpus: Sequence[Series]) -> list[list[int]]:
    ids, offset = [], 0
    for series in corpus:
        ids.append(list(range(offset, offset + len(series.windows))))
        offset += len(series.windows)
    return ids


def score_corpus(corpus: Sequence[Series], scores: Sequence[Sequence[float]],
                 profiles: dict[str, dict[str, float]],
                 thresholds: dict[str, float] | None = None) -> Scored:
    """NAB scores of ``scores`` (one list per series). With ``thresholds`` given, those are
    used instead of optimising (held-out evaluation)."""
    ids = window_ids(corpus)
    swept = [sweep(series, file_scores, file_ids[0] if file_ids else 0)
             for series, file_scores, file_ids in zip(corpus, scores, ids, strict=True)]
    all_rows = [row for rows in swept for row in rows]
    all_ids = [window for file_ids in ids for window in file_ids]
    null_rows = [Row(0.5, row.weight, row.window) for row in all_rows]
    normalised, chosen, raw = {}, {}, {}
    per_file: dict[str, dict[str, Any]] = {series.name: {} for series in corpus}
    for profile, costs in profiles.items():
        if thresholds is None:
            threshold, _ = best_threshold(all_rows, all_ids, costs)
        else:
            threshold = thresholds[profile]
        total = 0.0
        for series, rows, file_ids in zip(corpus, swept, ids, strict=True):
            value, counts = file_score(rows, file_ids, threshold, costs)
            total += value
            per_file[series.name][profile] = {"score": round(value, 4), **counts}
        null = best_threshold(null_rows, all_ids, costs)[1]
        perfect = len(all_ids) * costs["tpWeight"]
        normalised[profile] = 100.0 * (total - null) / (perfect - null) if perfect > null \
            else float("nan")
        chosen[profile], raw[profile] = threshold, total
    return Scored(normalised, chosen, raw, per_file)


# --------------------------------------------------------------------------- running


def run_detector(series: Series, factory: Callable[[int], Any]) -> list[float]:
    """Prequential scores of a fresh detector over one series (score, then learn)."""
    detector = factory(probation_length(len(series.values)))
    scores = []
    score_one, learn_one = detector.score_one, detector.learn_one
    for moment, value in zip(series.times, series.values, strict=True):
        x = {"value": value, "ts": epoch(moment)}
        scores.append(score_one(x))
        learn_one(x)
    return scores


def default_factory(warmup: int) -> AnomalyDetector:
    return AnomalyDetector(warmup=warmup, seed=0)


def cad_factory(warmup: int) -> ContextAnomalyDetector:
    return ContextAnomalyDetector(warmup=warmup, seed=0)


def ensemble_factory(warmup: int) -> EnsembleDetector:
    return EnsembleDetector(warmup=warmup, seed=0)


DETECTORS: dict[str, Callable[[int], Any]] = {
    "forecast": default_factory,
    "cad": cad_factory,
    "ensemble": ensemble_factory,
    "fast": lambda warmup: fast_ensemble(warmup),
    "fast_engine": lambda warmup: fast_ensemble(warmup, refractory=0),
    "forecast_r0": lambda warmup: AnomalyDetector(warmup=warmup, seed=0, refractory=0),
    "forecast_engine": lambda warmup: engine_forecast(warmup),
}
"""``--detector`` names: a factory of a fresh detector given its warm-up (the probation)."""


def run_corpus(corpus: Sequence[Series], factory: Callable[[int], Any] = default_factory
               ) -> tuple[list[list[float]], float]:
    """Scores for every series and the detector's seconds (score + learn only)."""
    scores, seconds = [], 0.0
    for series in corpus:
        started = time.perf_counter()
        scores.append(run_detector(series, factory))
        seconds += time.perf_counter() - started
    return scores, seconds


def read_scores(results_dir: Path, corpus: Sequence[Series]) -> list[list[float]]:
    """``anomaly_score`` columns of an existing results tree (``<group>/<file>.csv``, or
    NAB's ``<group>/<detector>_<file>.csv``)."""
    out = []
    for series in corpus:
        group, filename = series.name.split("/", 1)
        path = results_dir / group / filename
        if not path.exists():
            matches = sorted((results_dir / group).glob(f"*_{filename}"))
            if not matches:
                raise FileNotFoundError(f"no results for {series.name} under {results_dir}")
            path = matches[0]
        with path.open(newline="") as handle:
            out.append([float(row["anomaly_score"]) for row in csv.DictReader(handle)])
    return out


def write_scores(out_dir: Path, corpus: Sequence[Series],
                 scores: Sequence[Sequence[float]]) -> None:
    """``out_dir/<group>/<file>.csv`` with ``timestamp,value,anomaly_score``."""
    for series, file_scores in zip(corpus, scores, strict=True):
        path = out_dir / series.name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for stamp, value, score in zip(series.timestamps, series.values, file_scores,
                                           strict=True):
                writer.writerow([stamp, repr(value), repr(float(score))])


def _rounded(values: dict[str, float], digits: int = 2) -> dict[str, float]:
    return {key: round(value, digits) for key, value in values.items()}


def by_group(corpus: Sequence[Series], scores: Sequence[Sequence[float]],
             profiles: dict[str, dict[str, float]], thresholds: dict[str, float]
             ) -> dict[str, dict[str, float]]:
    """Standard score of each group at the corpus thresholds (raw when it has no window)."""
    out = {}
    for group in sorted({series.group for series in corpus}):
        picked = [i for i, series in enumerate(corpus) if series.group == group]
        part = score_corpus([corpus[i] for i in picked], [scores[i] for i in picked],
                            {"standard": profiles["standard"]},
                            {"standard": thresholds["standard"]})
        windows = sum(len(corpus[i].windows) for i in picked)
        out[group] = {"windows": windows, "raw": round(part.raw["standard"], 3)}
        if windows:
            out[group]["normalised"] = round(part.normalised["standard"], 2)
    return out


def holdout(corpus: Sequence[Series], scores: Sequence[Sequence[float]],
            profiles: dict[str, dict[str, float]], held: set[str]) -> dict[str, Any]:
    """Thresholds optimised on the groups not in ``held``, then applied to ``held``."""
    tune = [i for i, series in enumerate(corpus) if series.group not in held]
    test = [i for i, series in enumerate(corpus) if series.group in held]
    if not tune or not test:
        raise SystemExit(f"--holdout {sorted(held)}: both the held-out and the other groups "
                         "need files")
    tuned = score_corpus([corpus[i] for i in tune], [scores[i] for i in tune], profiles)
    tested = score_corpus([corpus[i] for i in test], [scores[i] for i in test], profiles,
                          tuned.thresholds)
    own = score_corpus([corpus[i] for i in test], [scores[i] for i in test], profiles)
    return {"held_out_groups": sorted(held),
            "tuning_groups": sorted({corpus[i].group for i in tune}),
            "tuning": _rounded(tuned.normalised),
            "held_out_at_tuning_thresholds": _rounded(tested.normalised),
            "held_out_own_thresholds": _rounded(own.normalised)}


def leave_one_group_out(corpus: Sequence[Series],
                        candidates: dict[str, Sequence[Sequence[float]]],
                        profiles: dict[str, dict[str, float]]) -> dict[str, Any]:
    """NAB scores where nothing is tuned on the group being scored.

    For each group (top-level folder) and profile, the detector among ``candidates``
    (``{name: scores per series}``) and its threshold are chosen to maximise the raw score
    on the *other* groups, then applied to that group. The combined figure sums every group's
    raw score at its own held-out choice and normalises it over the whole corpus (null 0,
    perfect 100), like the all-files score; groups are also reported alone (normalised when
    they have windows, raw always).

    >>> from datetime import datetime, timedelta
    >>> times = [datetime(2024, 1, 1) + timedelta(minutes=i) for i in range(100)]
    >>> corpus = [Series(f"g{k}/a.csv", [""] * 100, times, [0.0] * 100, [(50, 59)])
    ...           for k in range(3)]
    >>> spike = [[1.0 if i == 50 else 0.0 for i in range(100)]] * 3
    >>> logo = leave_one_group_out(corpus, {"spike": spike}, load_profiles(Path("/none")))
    >>> logo["standard"], logo["groups"]["g1"]["thresholds"]["standard"]
    (100.0, 1.0)
    """
    if not candidates:
        raise ValueError("no detector scores")
    ids = window_ids(corpus)
    swept = {name: [sweep(series, file_scores, file_ids[0] if file_ids else 0)
                    for series, file_scores, file_ids in zip(corpus, scores, ids, strict=True)]
             for name, scores in candidates.items()}
    groups = sorted({series.group for series in corpus})
    if len(groups) < 2:
        raise SystemExit("leave-one-group-out needs at least two groups")
    members = {group: [i for i, series in enumerate(corpus) if series.group == group]
               for group in groups}
    totals = dict.fromkeys(profiles, 0.0)
    per_group: dict[str, dict[str, Any]] = {}
    for group in groups:
        tune = [i for i in range(len(corpus)) if corpus[i].group != group]
        tune_ids = [window for i in tune for window in ids[i]]
        test_ids = [window for i in members[group] for window in ids[i]]
        line: dict[str, Any] = {"windows": len(test_ids), "files": len(members[group]),
                                "detector": {}, "thresholds": {}, "raw": {}}
        for profile, costs in profiles.items():
            best_name, best_threshold_, best_raw = "", 1.1, -math.inf
            for name, rows in swept.items():
                tune_rows = [row for i in tune for row in rows[i]]
                threshold, raw = best_threshold(tune_rows, tune_ids, costs)
                if raw > best_raw:
                    best_name, best_threshold_, best_raw = name, threshold, raw
            rows = swept[best_name]
            raw = sum(file_score(rows[i], ids[i], best_threshold_, costs)[0]
                      for i in members[group])
            totals[profile] += raw
            line["detector"][profile] = best_name
            line["thresholds"][profile] = round(best_threshold_, 6)
            line["raw"][profile] = round(raw, 3)
            if test_ids:
                null_rows = [Row(0.5, row.weight, row.window)
                             for i in members[group] for row in rows[i]]
                null = best_threshold(null_rows, test_ids, costs)[1]
                perfect = len(test_ids) * costs["tpWeight"]
                line[profile] = round(100.0 * (raw - null) / (perfect - null), 2)
        per_group[group] = line
    all_ids = [window for file_ids in ids for window in file_ids]
    any_rows = next(iter(swept.values()))
    null_rows = [Row(0.5, row.weight, row.window) for rows in any_rows for row in rows]
    out: dict[str, Any] = {}
    for profile, costs in profiles.items():
        null = best_threshold(null_rows, all_ids, costs)[1]
        perfect = len(all_ids) * costs["tpWeight"]
        out[profile] = round(100.0 * (totals[profile] - null) / (perfect - null), 2) \
            if perfect > null else float("nan")
    out["raw"] = {profile: round(total, 3) for profile, total in totals.items()}
    out["groups"] = per_group
    return out


# --------------------------------------------------------------------------- as the engine alerts


ENGINE_RULE = {"open": 0.9, "confirm_s": 2.0, "close": 0.5, "quiet_s": 5.0}
"""The engine's incident rule (the defaults of ``agents.anomalies.incidents.IncidentTracker``,
whose watchers sample once a second): an incident opens once scores at or above ``open`` have
lasted ``confirm_s`` seconds (a sample stands for the interval after it: two samples a
second apart, one NAB row of 5 minutes), and resolves once every score stayed below
``close`` for ``quiet_s`` seconds. ``open`` is the engine's threshold at one sample a
second; on NAB the open threshold is chosen leave-one-group-out instead (a score is a
per-sample tail probability, and NAB's rows are minutes to an hour apart)."""

THRESHOLDS = tuple(round(0.01 * k, 2) for k in range(100, 0, -1))
"""Open thresholds swept when detections are incident openings (highest first)."""


def incident_opens(scores: Sequence[float], threshold: float, *,
                   times: Sequence[float] | None = None, sample_s: float = 1.0,
                   confirm_s: float = 2.0, close: float = 0.5,
                   quiet_s: float = 5.0) -> list[int]:
    """Rows at which the engine's incident tracker would open an incident on ``scores``
    (one metric; row ``i`` sampled at ``times[i]`` seconds, by default ``i * sample_s``),
    opening at ``threshold`` (``close`` is capped at it).

    A detector's repeated high scores during one event are one incident, not one alarm each:
    this is how the engine deduplicates, instead of a refractory period in the detector.

    >>> incident_opens([0, .95, .96, .6, .2, .2, .2, .2, .2, .2, .97, .98], 0.9)
    [2, 11]
    >>> incident_opens([0, .95, 0, .95, 0], 0.9), incident_opens([0, .95, 0], 0.9, sample_s=300)
    ([], [1])
    """
    close = min(close, threshold)
    at = times if times is not None else [i * sample_s for i in range(len(scores))]
    opens: list[int] = []
    start, is_open, quiet_since = None, False, None
    for i, score in enumerate(scores):
        if not is_open:
            if score >= threshold:
                start = at[i] if start is None else start
                if at[i] - start + sample_s >= confirm_s:
                    opens.append(i)
                    is_open, start, quiet_since = True, None, None
            else:
                start = None
        elif score >= close:
            quiet_since = None
        else:
            quiet_since = at[i] if quiet_since is None else quiet_since
            if at[i] - quiet_since >= quiet_s:
                is_open = False
    return opens


def sample_times(series: Series) -> tuple[list[float] | None, float]:
    """A file's row times in seconds from its first row, and its usual row interval (the
    median step), which each row stands for."""
    if not series.times:
        return None, 1.0
    first = series.times[0]
    at = [(t - first).total_seconds() for t in series.times]
    steps = sorted(b - a for a, b in pairwise(at) if b > a)
    return at, steps[len(steps) // 2] if steps else 1.0


def incident_table(corpus: Sequence[Series], scores: Sequence[Sequence[float]],
                   profiles: dict[str, dict[str, float]],
                   thresholds: Sequence[float] = THRESHOLDS,
                   rule: dict[str, Any] | None = None) -> list[dict[str, list[float]]]:
    """Per file and profile, the raw NAB score at each of ``thresholds`` when the detections
    are the incident openings (:func:`incident_opens`, ``rule`` default :data:`ENGINE_RULE`
    but for its ``open``, with the file's row times and interval)."""
    rule = dict(ENGINE_RULE if rule is None else rule)
    rule.pop("open")
    table = []
    for series, file_scores, file_ids in zip(corpus, scores, window_ids(corpus), strict=True):
        rows = sweep(series, file_scores, file_ids[0] if file_ids else 0)
        skipped = len(file_scores) - len(rows)   # the probation
        at, step = sample_times(series)
        line: dict[str, list[float]] = {profile: [] for profile in profiles}
        for threshold in thresholds:
            opened = [rows[i - skipped]
                      for i in incident_opens(file_scores, threshold, times=at, sample_s=step,
                                              **rule)
                      if i >= skipped]
            for profile, costs in profiles.items():
                line[profile].append(file_score(opened, file_ids, -math.inf, costs)[0])
        table.append(line)
    return table


def leave_one_group_out_incidents(corpus: Sequence[Series], scores: Sequence[Sequence[float]],
                                  profiles: dict[str, dict[str, float]],
                                  thresholds: Sequence[float] = THRESHOLDS,
                                  rule: dict[str, Any] | None = None,
                                  label: str = "incidents") -> dict[str, Any]:
    """:func:`leave_one_group_out` with the engine's incident openings as the detections:
    each group is scored at the open threshold (of ``thresholds``) best on the other groups.
    The result has the same layout, plus ``all_files`` (one threshold for every file)."""
    table = incident_table(corpus, scores, profiles, thresholds, rule)
    ids = window_ids(corpus)
    groups = sorted({series.group for series in corpus})
    if len(groups) < 2:
        raise SystemExit("leave-one-group-out needs at least two groups")
    swept = [sweep(series, file_scores, file_ids[0] if file_ids else 0)
             for series, file_scores, file_ids in zip(corpus, scores, ids, strict=True)]

    def best(files: Sequence[int], profile: str) -> int:
        sums = [sum(table[i][profile][k] for i in files) for k in range(len(thresholds))]
        return max(range(len(thresholds)), key=lambda k: (sums[k], -k))   # ties: highest

    def normalised(raw: float, files: Sequence[int], costs: dict[str, float]) -> float:
        null_rows = [Row(0.5, row.weight, row.window) for i in files for row in swept[i]]
        window_set = [window for i in files for window in ids[i]]
        null = best_threshold(null_rows, window_set, costs)[1]
        perfect = len(window_set) * costs["tpWeight"]
        return round(100.0 * (raw - null) / (perfect - null), 2) if perfect > null \
            else float("nan")

    everything = range(len(corpus))
    totals = dict.fromkeys(profiles, 0.0)
    per_group: dict[str, dict[str, Any]] = {}
    for group in groups:
        members = [i for i in everything if corpus[i].group == group]
        others = [i for i in everything if corpus[i].group != group]
        test_ids = [window for i in members for window in ids[i]]
        line: dict[str, Any] = {"windows": len(test_ids), "files": len(members),
                                "detector": {}, "thresholds": {}, "raw": {}}
        for profile, costs in profiles.items():
            k = best(others, profile)
            raw = sum(table[i][profile][k] for i in members)
            totals[profile] += raw
            line["detector"][profile] = label
            line["thresholds"][profile] = thresholds[k]
            line["raw"][profile] = round(raw, 3)
            if test_ids:
                line[profile] = normalised(raw, members, costs)
        per_group[group] = line
    out: dict[str, Any] = {profile: normalised(totals[profile], everything, costs)
                           for profile, costs in profiles.items()}
    out["raw"] = {profile: round(total, 3) for profile, total in totals.items()}
    out["all_files"] = {
        profile: normalised(sum(table[i][profile][best(everything, profile)]
                                for i in everything), everything, costs)
        for profile, costs in profiles.items()}
    out["rule"] = dict(ENGINE_RULE if rule is None else rule)
    out["groups"] = per_group
    return out


_SHORT = {"standard": "standard", "reward_low_FP_rate": "low_FP",
          "reward_low_FN_rate": "low_FN"}


def _figures(scores: dict[str, float], profiles: Iterable[str]) -> str:
    return "  ".join(f"{_SHORT.get(p, p)} {scores[p]:6.2f}" for p in profiles)


def _print_logo(label: str, logo: dict[str, Any], profiles: dict[str, Any]) -> None:
    """One line per held-out group and the combined line of a leave-one-group-out run."""
    for group, line in logo["groups"].items():
        figures = "  ".join(
            f"{_SHORT.get(p, p)} {line[p]:6.2f}" if p in line else
            f"{_SHORT.get(p, p)} raw {line['raw'][p]:.3f}" for p in profiles)
        chosen = ",".join(sorted(set(line["detector"].values())))
        print(f"logo {label} {group:<24} windows {line['windows']:>3}  {figures}  "
              f"threshold {line['thresholds'].get('standard')} ({chosen})")
    total = sum(line["windows"] for line in logo["groups"].values())
    print(f"logo {label} {'combined':<24} windows {total:>3}  {_figures(logo, profiles)}")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run (or read) the detector's scores over a NAB tree, score them, print the result."""
    parser = argparse.ArgumentParser(prog="livepulse eval nab",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="NAB tree (data/, labels/)")
    parser.add_argument("--scores-out", type=Path, default=None,
                        help="write <group>/<file>.csv with timestamp,value,anomaly_score")
    parser.add_argument("--score-only", type=Path, default=None,
                        help="score an existing results tree instead of running the detector")
    parser.add_argument("--groups", default=None, help="comma-separated groups to use")
    parser.add_argument("--holdout", default=None,
                        help="comma-separated groups scored at thresholds tuned on the others")
    parser.add_argument("--detector", default="ensemble",
                        help=f"detector(s), comma-separated: {', '.join(DETECTORS)}; with "
                        "several, leave-one-group-out also picks the detector on the other "
                        "groups. Default: ensemble, the best leave-one-group-out on the "
                        "shared data (the engine runs fast_engine: add --incidents)")
    parser.add_argument("--incidents", action="store_true",
                        help="also score each detector as the engine alerts: the detections "
                        "are the incident tracker's openings (leave-one-group-out over open "
                        "thresholds)")
    parser.add_argument("--compare", action="store_true",
                        help="also score DIR/reference-results/* on the same files")
    args = parser.parse_args(argv)

    groups = args.groups.split(",") if args.groups else None
    corpus = load_corpus(args.data, groups)
    if not corpus:
        raise SystemExit(f"no data files under {args.data / 'data'}")
    profiles = load_profiles(args.data)
    points = sum(len(series.values) for series in corpus)
    candidates: dict[str, list[list[float]]] = {}
    speeds: dict[str, int | None] = {}
    if args.score_only is not None:
        label = args.score_only.name or str(args.score_only)
        candidates[label] = read_scores(args.score_only, corpus)
        speeds[label] = None
    else:
        names = [name.strip() for name in args.detector.split(",") if name.strip()]
        unknown = [name for name in names if name not in DETECTORS]
        if unknown or not names:
            raise SystemExit(f"--detector {args.detector}: choose from {sorted(DETECTORS)}")
        for name in names:
            scores, seconds = run_corpus(corpus, DETECTORS[name])
            candidates[name] = scores
            speeds[name] = round(points / seconds) if seconds > 0 else None
    detector, scores = next(iter(candidates.items()))
    if args.scores_out is not None:
        for name, detector_scores in candidates.items():
            out = args.scores_out / name if len(candidates) > 1 else args.scores_out
            write_scores(out, corpus, detector_scores)
    result = score_corpus(corpus, scores, profiles)
    for series in corpus:
        standard = result.per_file[series.name]["standard"]
        print(f"{series.name:<60} standard {standard['score']:>8.3f}  "
              f"windows {len(series.windows)} tp {standard['tp']} fp {standard['fp']}")
    summary: dict[str, Any] = {
        "detector": detector,
        **_rounded(result.normalised),
        "thresholds": _rounded(result.thresholds, 6),
        "raw": _rounded(result.raw, 3),
        "by_group": by_group(corpus, scores, profiles, result.thresholds),
        "files": len(corpus),
        "windows": sum(len(series.windows) for series in corpus),
        "points": points,
        "points_per_s": speeds[detector],
    }
    if len({series.group for series in corpus}) > 1:
        # each detector alone (thresholds from the other groups), then, with several, the
        # detector too chosen on the other groups
        runs = [(name, {name: detector_scores}) for name, detector_scores in candidates.items()]
        if len(candidates) > 1:
            runs.append(("selected", candidates))
            summary["all_files"], summary["logo_by_detector"] = {}, {}
        for label, chosen in runs:
            logo = leave_one_group_out(corpus, chosen, profiles)
            _print_logo(label, logo, profiles)
            if label != "selected":
                every = score_corpus(corpus, chosen[label], profiles).normalised
                print(f"all-files {label:<23} windows {summary['windows']:>3}  "
                      f"{_figures(every, profiles)}")
            if len(candidates) == 1 or label == "selected":
                summary["logo"] = logo
            else:
                summary["all_files"][label] = {**_rounded(every),
                                               "points_per_s": speeds[label]}
                summary["logo_by_detector"][label] = logo
    if args.incidents and len({series.group for series in corpus}) > 1:
        summary["incidents"] = {}
        for name, detector_scores in candidates.items():
            logo = leave_one_group_out_incidents(corpus, detector_scores, profiles, label=name)
            _print_logo(f"incidents:{name}", logo, profiles)
            print(f"all-files incidents:{name:<13} windows {summary['windows']:>3}  "
                  f"{_figures(logo['all_files'], profiles)}")
            summary["incidents"][name] = logo
    if args.holdout:
        summary["holdout"] = holdout(corpus, scores, profiles, set(args.holdout.split(",")))
    if args.compare:
        reference = {}
        for ref_dir in sorted((args.data / "reference-results").glob("*")):
            if ref_dir.is_dir():
                ref_scores = read_scores(ref_dir, corpus)
                ref = score_corpus(corpus, ref_scores, profiles)
                reference[ref_dir.name] = _rounded(ref.normalised)
                if "logo" in summary:
                    ref_logo = leave_one_group_out(corpus, {ref_dir.name: ref_scores}, profiles)
                    reference[ref_dir.name]["logo"] = {p: ref_logo[p] for p in profiles}
        summary["reference"] = reference
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
