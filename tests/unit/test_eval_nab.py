"""The NAB scorer on hand-computable cases, the ``livepulse eval nab`` command on a tiny
synthetic tree, and the real (shared) NAB subset against a reference detector."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from agents import cli
from online_models.evaluation import nab as eval_nab
from online_models.evaluation.nab import (
    load_corpus,
    load_profiles,
    probation_length,
    scaled_sigmoid,
    score_corpus,
)
from tests.conftest import SHARED, require

NAB = SHARED / "datasets" / "nab"
START = datetime(2024, 3, 1)
ROWS = 100             # probation: floor(0.15 * 100) = 15 rows
WINDOW = (60, 69)      # rows, inclusive: width 10
FP_WEIGHT = 0.11       # standard profile


def stamp(row: int) -> str:
    return (START + timedelta(minutes=5 * row)).strftime("%Y-%m-%d %H:%M:%S")


def write_tree(root: Path, files: dict[str, list[tuple[int, int]]], rows: int = ROWS,
               values: dict[str, list[float]] | None = None) -> Path:
    """A NAB tree: ``files`` maps ``group/name.csv`` to its windows (row ranges); values
    are ``values[name]`` or a small repeating pattern."""
    windows = {}
    for name, ranges in files.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["timestamp", "value"])
            for row in range(rows):
                value = values[name][row] if values and name in values else 10.0 + row % 3
                writer.writerow([stamp(row), value])
        windows[name] = [[stamp(left) + ".000000", stamp(right) + ".000000"]
                         for left, right in ranges]
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    profiles = {"standard": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 1.0,
                                            "fpWeight": FP_WEIGHT, "tnWeight": 1.0}},
                "reward_low_FN_rate": {"CostMatrix": {"tpWeight": 1.0, "fnWeight": 2.0,
                                                      "fpWeight": 0.11, "tnWeight": 1.0}}}
    (root / "profiles.json").write_text(json.dumps(profiles))
    return root


@pytest.fixture
def one_file(tmp_path: Path) -> Path:
    return write_tree(tmp_path, {"g/a.csv": [WINDOW]})


def standard(tree: Path, flagged: dict[int, float]) -> tuple[float, float]:
    """(raw, normalised) standard score of a detector scoring 0 except at ``flagged``."""
    corpus = load_corpus(tree)
    scores = [[flagged.get(row, 0.0) for row in range(ROWS)]]
    result = score_corpus(corpus, scores, load_profiles(tree))
    return result.raw["standard"], result.normalised["standard"]


def sigmoid_weight(position: float) -> float:
    """NAB's scaled sigmoid, written out independently of the module."""
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def test_sigmoid_and_probation_follow_nab() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(3.0) == -1.0
    assert probation_length(100) == 15 and probation_length(4032) == 604
    assert probation_length(5000) == probation_length(22_695) == 750


def test_windows_map_to_rows(one_file: Path) -> None:
    (series,) = load_corpus(one_file)
    assert series.name == "g/a.csv" and series.windows == [WINDOW] and len(series.values) == ROWS


def test_null_detector_scores_0_and_a_perfect_one_100(one_file: Path) -> None:
    assert standard(one_file, {}) == (-1.0, 0.0)
    assert standard(one_file, dict.fromkeys(range(ROWS), 0.5))[1] == 0.0
    raw, normalised = standard(one_file, {WINDOW[0]: 1.0})
    assert raw == pytest.approx(1.0) and normalised == pytest.approx(100.0)


def test_a_late_detection_earns_less(one_file: Path) -> None:
    # at the window's last row: position -(69 - 69 + 1) / 10 = -0.1
    raw, _ = standard(one_file, {WINDOW[1]: 1.0})
    assert raw == pytest.approx(sigmoid_weight(-0.1) / sigmoid_weight(-1.0))


@pytest.mark.parametrize("row", [30, 70, 80, 99])
def test_a_false_positive_costs_what_the_formula_says(one_file: Path, row: int) -> None:
    left, right = WINDOW
    # before any window: the full weight; after one: weighted by the distance from it
    cost = -FP_WEIGHT if row < left else FP_WEIGHT * sigmoid_weight((row - right) / (right - left))
    raw, normalised = standard(one_file, {left: 1.0, row: 1.0})
    assert raw == pytest.approx(1.0 + cost)
    assert normalised == pytest.approx(100.0 * (1.0 + cost + 1.0) / 2.0)


def test_an_alarm_just_after_a_window_costs_little(one_file: Path) -> None:
    raw_near, _ = standard(one_file, {WINDOW[0]: 1.0, 70: 1.0})
    raw_far, _ = standard(one_file, {WINDOW[0]: 1.0, 95: 1.0})
    assert 1.0 - 0.04 < raw_near < 1.0 and raw_far < 1.0 - 0.1


def test_probation_rows_are_not_scored(one_file: Path) -> None:
    assert standard(one_file, {3: 1.0, 14: 1.0, WINDOW[0]: 1.0}) == standard(
        one_file, {WINDOW[0]: 1.0})
    assert standard(one_file, {15: 1.0, WINDOW[0]: 1.0})[0] == pytest.approx(1.0 - FP_WEIGHT)


def test_one_threshold_is_optimised_over_all_files(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"g/a.csv": [WINDOW], "g/b.csv": [WINDOW]})
    corpus = load_corpus(tree)
    a = [0.0] * ROWS
    a[WINDOW[0]] = 0.6            # a's window is found only at 0.6 ...
    b = [0.0] * ROWS
    b[WINDOW[0]], b[20] = 0.9, 0.7  # ... which also flags b's false positive at 0.7
    result = score_corpus(corpus, [a, b], load_profiles(tree))
    # 0.6 (two windows, one FP: 2 - 0.11) beats 0.9 (one window, one missed: 0)
    assert result.thresholds["standard"] == 0.6
    assert result.raw["standard"] == pytest.approx(2.0 - FP_WEIGHT)
    assert result.per_file["g/b.csv"]["standard"] == {"score": round(1 - FP_WEIGHT, 4),
                                                      "tp": 1, "fn": 0, "fp": 1}
    # held-out use: a fixed threshold is applied as given
    fixed = score_corpus(corpus, [a, b], load_profiles(tree), {"standard": 0.9,
                                                               "reward_low_FN_rate": 0.9})
    assert fixed.raw["standard"] == pytest.approx(0.0)


def test_cli_runs_the_detector_and_writes_scores(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    values = [50.0 + (row % 5) for row in range(400)]
    values[300] = 500.0   # a spike in the window
    tree = write_tree(tmp_path / "nab", {"g1/a.csv": [(290, 309)], "g2/b.csv": []}, rows=400,
                      values={"g1/a.csv": values})
    out = tmp_path / "scores"
    assert cli.main(["eval", "nab", "--data", str(tree), "--scores-out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("g1/a.csv") and lines[1].startswith("g2/b.csv")
    summary = json.loads(lines[-1])
    # the spike is the window's middle row: 0.848 earned, nothing else flagged
    assert summary["standard"] == pytest.approx(100 * (scaled_sigmoid(-0.5) / scaled_sigmoid(-1)
                                                       + 1) / 2, abs=0.01)
    assert summary["files"] == 2 and summary["points"] == 800 and summary["points_per_s"] > 0
    assert set(summary["by_group"]) == {"g1", "g2"}
    with (out / "g1" / "a.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"] and len(rows) == 400
    assert float(rows[300]["anomaly_score"]) == max(float(row["anomaly_score"]) for row in rows)
    # scoring the written files again gives the same result
    again = eval_nab.main(["--data", str(tree), "--score-only", str(out)])
    assert again["standard"] == summary["standard"]


def test_on_the_shared_nab_subset_it_beats_windowed_gaussian(
        capsys: pytest.CaptureFixture[str]) -> None:
    require((NAB / "labels" / "combined_windows.json").exists(),
            f"dataset {NAB} (../shared beside the repo)")
    ours = eval_nab.main(["--data", str(NAB), "--compare"])
    capsys.readouterr()
    assert ours["files"] == len(list((NAB / "data").glob("*/*.csv")))
    reference = ours["reference"]["windowedGaussian"]
    assert ours["standard"] > reference["standard"]
    assert ours["reward_low_FP_rate"] > reference["reward_low_FP_rate"]
    assert ours["reward_low_FN_rate"] > reference["reward_low_FN_rate"]


def test_leave_one_group_out_tunes_each_group_on_the_others_only(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"g1/a.csv": [WINDOW], "g2/b.csv": [WINDOW]})
    corpus = load_corpus(tree)
    a = [0.0] * ROWS
    a[WINDOW[0]], a[20] = 0.9, 0.5   # g1 alone: 0.9 is best (0.5 adds a false positive)
    b = [0.0] * ROWS
    b[WINDOW[0]] = 0.6               # g2 alone: 0.6 is best
    profiles = load_profiles(tree)
    logo = eval_nab.leave_one_group_out(corpus, {"x": [a, b], "silent": [[0.0] * ROWS] * 2},
                                        profiles)
    # g2 is scored at g1's threshold (0.9: its window missed), g1 at g2's (0.6: found, and
    # the 0.5 false positive stays below it)
    assert logo["groups"]["g2"]["thresholds"]["standard"] == 0.9
    assert logo["groups"]["g2"]["raw"]["standard"] == pytest.approx(-1.0)
    assert logo["groups"]["g1"]["thresholds"]["standard"] == 0.6
    assert logo["groups"]["g1"]["raw"]["standard"] == pytest.approx(1.0)
    assert logo["groups"]["g1"]["detector"]["standard"] == "x"
    # combined: raw 0 between null -2 and perfect 2; all files at one threshold: perfect
    assert logo["standard"] == pytest.approx(50.0)
    assert score_corpus(corpus, [a, b], profiles).normalised["standard"] == pytest.approx(100.0)


def test_cli_reports_leave_one_group_out_beside_all_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = [50.0 + (row % 5) for row in range(400)]
    values[300] = 500.0
    tree = write_tree(tmp_path / "nab", {"g1/a.csv": [(290, 309)], "g2/b.csv": [(290, 309)]},
                      rows=400, values={"g1/a.csv": values, "g2/b.csv": values})
    summary = eval_nab.main(["--data", str(tree), "--detector", "forecast"])
    out = capsys.readouterr().out
    assert "logo forecast combined" in out and "all-files forecast" in out
    assert set(summary["logo"]["groups"]) == {"g1", "g2"}
    assert summary["logo"]["standard"] == pytest.approx(summary["standard"], abs=0.01)
    with pytest.raises(SystemExit):
        eval_nab.main(["--data", str(tree), "--detector", "nope"])


def test_incident_openings_are_the_engine_trackers(tmp_path: Path) -> None:
    """incident_opens follows agents.anomalies.incidents.IncidentTracker (its defaults) on
    random score streams: sampled once a second as the watchers do, and every 5 minutes with
    gaps as NAB's rows are (where one anomalous row lasts long enough to open)."""
    import random

    from agents.anomalies.incidents import IncidentTracker, Signal

    rng = random.Random(5)
    for sample_s, gaps in ((1.0, (1,)), (300.0, (1, 1, 1, 2, 7))):
        for _ in range(30):
            scores = [rng.choice([0.0, 0.3, 0.55, 0.92, 0.97]) for _ in range(300)]
            times = [0.0]
            for _ in scores[1:]:
                times.append(times[-1] + sample_s * rng.choice(gaps))
            tracker = IncidentTracker(clock=lambda: 0, sample_s=sample_s)
            opened = [row for row, (score, at) in enumerate(zip(scores, times, strict=True))
                      for record in tracker.observe(
                          "room", "r", [Signal("x", 1.0, 0.0, 1.0, score)], int(at * 1000))
                      if record["status"] == "open"]
            assert eval_nab.incident_opens(scores, tracker.open_score, times=times,
                                           sample_s=sample_s,
                                           close=tracker.close_score) == opened
            assert opened
    engine = IncidentTracker()
    rule = {"open": engine.open_score, "confirm_s": engine.confirm_ms / 1000,
            "close": engine.close_score, "quiet_s": engine.quiet_ms / 1000}
    assert rule == eval_nab.ENGINE_RULE


def test_incident_scoring_counts_one_detection_per_incident(tmp_path: Path) -> None:
    tree = write_tree(tmp_path, {"g1/a.csv": [WINDOW], "g2/b.csv": [WINDOW]})
    corpus = load_corpus(tree)
    profiles = load_profiles(tree)
    # a window found by two high scores (5-minute rows: the first opens), then an event after
    # it that stays high for 10 rows: one incident (one false positive), where row-wise
    # scoring counts ten
    one = [0.0] * ROWS
    one[WINDOW[0]] = one[WINDOW[0] + 1] = 0.95
    for row in range(80, 90):
        one[row] = 0.95
    logo = eval_nab.leave_one_group_out_incidents(corpus, [one, one], profiles)
    fp = scaled_sigmoid(abs(80 - WINDOW[1]) / (WINDOW[1] - WINDOW[0])) * FP_WEIGHT
    found = 1.0   # at the window's first row
    assert logo["groups"]["g1"]["raw"]["standard"] == pytest.approx(found + fp, abs=1e-3)
    assert logo["groups"]["g1"]["thresholds"]["standard"] == 0.95
    rowwise = score_corpus(corpus, [one, one], profiles, {"standard": 0.95,
                                                          "reward_low_FN_rate": 0.95})
    assert rowwise.raw["standard"] < 2 * (found + fp)   # ten false positives per file


def test_cli_scores_as_the_engine_alerts(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    values = [50.0 + (row % 5) for row in range(400)]
    values[300] = values[301] = 500.0   # two rows: the engine's rule can open on it
    tree = write_tree(tmp_path / "nab", {"g1/a.csv": [(290, 309)], "g2/b.csv": [(290, 309)]},
                      rows=400, values={"g1/a.csv": values, "g2/b.csv": values})
    summary = eval_nab.main(["--data", str(tree), "--detector", "fast_engine", "--incidents"])
    out = capsys.readouterr().out
    assert "logo incidents:fast_engine combined" in out
    assert "all-files incidents:fast_engine" in out
    logo = summary["incidents"]["fast_engine"]
    assert logo["rule"] == eval_nab.ENGINE_RULE and set(logo["groups"]) == {"g1", "g2"}
    assert logo["standard"] > 50.0   # the jump is found in both groups
