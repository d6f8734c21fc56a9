"""Purchase propensity and leave risk (online_models.propensity) and their evaluation driver."""

from __future__ import annotations

import io
import math
import pickle
import random
from contextlib import redirect_stdout
from typing import Any

import numpy as np
import orjson
import pytest

from agents.eval_models import main_propensity
from agents.rooms.state import RoomState
from agents.users.profile import UserProfile
from online_models.batch_logistic import BatchLogistic
from online_models.propensity import (
    LEAVE_FEATURES,
    MAX_SCHEMAS,
    PURCHASE_FEATURES,
    BinnedROCAUC,
    CalibrationTable,
    DelayedLabels,
    DelayedRows,
    LeaveRisk,
    OnlineClassifier,
    PrequentialMetrics,
    PurchasePropensity,
    constant_baseline,
    leave_features,
    leave_vector,
    purchase_features,
    purchase_vector,
)
from streams.contracts import ClickEvent, LiveEvent, as_dict

T0 = 1_700_000_000_000
SECOND = 1_000
MINUTE = 60_000
HOUR = 60 * MINUTE


def exact_auc(labels: list[bool], scores: list[float]) -> float:
    """Mann-Whitney AUC by brute force (ties count one half)."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def synthetic_example(rng: random.Random) -> tuple[dict[str, float], bool]:
    """Label from a logistic model of two of four features; two are pure noise."""
    x = {"carts": rng.random() * 3, "views": rng.random() * 5, "noise_a": rng.gauss(0, 1),
         "noise_b": rng.random()}
    z = 2.5 * x["carts"] - 0.6 * x["views"] - 2.0
    return x, rng.random() < 1.0 / (1.0 + math.exp(-z))


# ---------------------------------------------------------------------- metrics
def test_binned_auc_matches_the_exact_auc() -> None:
    rng = random.Random(3)
    labels, scores = [], []
    auc = BinnedROCAUC()
    for _ in range(1500):
        y = rng.random() < 0.2
        p = min(0.999, max(0.001, rng.betavariate(2, 5) + (0.15 if y else 0.0)))
        labels.append(y)
        scores.append(p)
        auc.update(y, p)
    assert auc.get() == pytest.approx(exact_auc(labels, scores), abs=0.002)


def test_auc_is_half_until_both_classes_are_seen() -> None:
    auc = BinnedROCAUC()
    auc.update(True, 0.9)
    assert auc.get() == 0.5


def test_calibration_of_a_calibrated_and_an_overconfident_predictor() -> None:
    rng = random.Random(5)
    calibrated, overconfident = CalibrationTable(), CalibrationTable()
    for _ in range(20_000):
        p = rng.random()
        y = rng.random() < p
        calibrated.update(y, p)
        overconfident.update(y, min(1.0, p * 1.5))
    assert calibrated.ece() < 0.02
    assert overconfident.ece() > 0.1
    rows = calibrated.rows()
    assert len(rows) == 10 and sum(r["count"] for r in rows) == 20_000
    assert all(abs(r["mean_p"] - r["observed"]) < 0.05 for r in rows)


def test_constant_baseline_is_the_entropy_of_the_rate() -> None:
    base = constant_baseline(25, 100)
    assert base["roc_auc"] == 0.5
    assert base["log_loss"] == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)),
                                             abs=1e-4)
    metrics = PrequentialMetrics()
    for i in range(100):
        metrics.update(i < 25, 0.25)
    assert metrics.to_dict()["log_loss"] == pytest.approx(base["log_loss"], abs=1e-4)


# ---------------------------------------------------------------------- classifier
@pytest.mark.parametrize("kind", ["logistic", "hoeffding", "auto"])
def test_learns_a_separable_signal(kind: str) -> None:
    clf = OnlineClassifier(kind, seed=1, learning_rate=0.05)
    rng = random.Random(11)
    for _ in range(3000):
        x, y = synthetic_example(rng)
        clf.learn_one(x, y)  # scored before learning: prequential
    report = clf.metrics()
    assert report["examples"] == 3000
    assert report["roc_auc"] > 0.8
    held_out = [synthetic_example(rng) for _ in range(1000)]
    scores = [clf.predict_proba_one(x) for x, _ in held_out]
    assert exact_auc([y for _, y in held_out], scores) > 0.8
    if kind == "auto":
        assert set(report["candidates_at_label_time"]) == {"logistic", "hoeffding"}
        assert report["active_model"] in report["candidates_at_label_time"]


def test_logistic_probabilities_are_calibrated_on_the_synthetic_signal() -> None:
    clf = OnlineClassifier(learning_rate=0.05)
    rng = random.Random(2)
    for _ in range(6000):
        clf.learn_one(*synthetic_example(rng))
    fresh = CalibrationTable()
    for _ in range(5000):
        x, y = synthetic_example(rng)
        fresh.update(y, clf.predict_proba_one(x))
    assert fresh.ece() < 0.05


def test_unseen_and_missing_features_are_fine() -> None:
    clf = OnlineClassifier("auto", seed=0)
    rng = random.Random(4)
    for i in range(600):
        x, y = synthetic_example(rng)
        if i % 3 == 0:
            del x["views"]  # sometimes missing
        if i % 5 == 0:
            x[f"rare_{i}"] = 1.0  # keys that come and go
        clf.learn_one(x, y)
    for x in ({}, {"brand_new": 7.0}, {"carts": 2.0, "something_else": -1.0}):
        p = clf.predict_proba_one(x)
        assert 0.0 < p < 1.0


def test_unknown_model_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="model kind"):
        OnlineClassifier("forest")
    with pytest.raises(ValueError, match="optimizer"):
        OnlineClassifier(optimizer="lbfgs")


# ---------------------------------------------------------------------- delayed labels
def test_outcome_labels_only_examples_scored_before_it_and_within_their_deadline() -> None:
    labels = DelayedLabels(release="outcome")
    labels.open("u1", {"f": 1.0}, 0.2, ts=T0, deadline_ts=T0 + MINUTE)
    labels.open("u1", {"f": 2.0}, 0.3, ts=T0 + 30 * SECOND, deadline_ts=T0 + 90 * SECOND)
    labels.open("u1", {"f": 3.0}, 0.4, ts=T0 + 80 * SECOND, deadline_ts=T0 + 140 * SECOND)
    # The outcome at +70 s: the first deadline had passed (negative), the second is in time
    # (positive), the third was scored after the outcome (an out-of-order event): stays.
    out = labels.resolve("u1", True, T0 + 70 * SECOND)
    assert out == [({"f": 1.0}, 0.2, False), ({"f": 2.0}, 0.3, True)]
    assert labels.pending_for("u1") == 1
    assert labels.resolve("u2", True, T0 + 70 * SECOND) == []  # other keys untouched


def test_expiry_is_on_event_time_and_follows_extended_deadlines() -> None:
    labels = DelayedLabels()
    labels.open("u1", {"f": 1.0}, 0.5, ts=T0, deadline_ts=T0 + MINUTE)
    labels.open("u2", {"f": 2.0}, 0.6, ts=T0, deadline_ts=T0 + MINUTE)
    assert labels.extend("u2", T0 + 50 * SECOND, T0 + 110 * SECOND) == 1
    assert labels.expire(T0 + MINUTE) == []  # strictly after the deadline
    assert labels.expire(T0 + MINUTE + 1) == [({"f": 1.0}, 0.5, False)]
    assert labels.expire(T0 + 100 * SECOND) == []
    # Activity after an example's deadline does not revive it.
    assert labels.extend("u2", T0 + 111 * SECOND, T0 + 200 * SECOND) == 0
    assert labels.expire(T0 + 110 * SECOND + 1) == [({"f": 2.0}, 0.6, False)]
    assert len(labels) == 0
    stats = labels.stats()
    assert (stats["opened"], stats["released_negative"], stats["released_positive"]) == (2, 2, 0)


def test_deadline_release_holds_positives_until_their_deadline() -> None:
    labels = DelayedLabels(release="deadline")
    labels.open("u1", {"f": 1.0}, 0.2, ts=T0, deadline_ts=T0 + MINUTE)
    labels.open("u2", {"f": 0.0}, 0.1, ts=T0 + SECOND, deadline_ts=T0 + MINUTE + SECOND)
    assert labels.resolve("u1", True, T0 + 5 * SECOND) == []
    assert labels.pending_for("u1") == 0  # labelled: no longer open for the key
    assert len(labels) == 2
    released = labels.expire(T0 + 2 * MINUTE)
    assert released == [({"f": 1.0}, 0.2, True), ({"f": 0.0}, 0.1, False)]  # scoring order


def test_pending_examples_are_capped() -> None:
    labels = DelayedLabels(max_pending=100, max_per_key=3)
    for i in range(250):
        labels.open(f"u{i}", {"f": float(i)}, 0.5, ts=T0 + i, deadline_ts=T0 + MINUTE + i)
    assert len(labels) == 100
    assert labels.evicted == 150
    released = labels.expire(T0 + 10 * MINUTE)
    assert [x["f"] for x, _, _ in released] == [float(i) for i in range(150, 250)]  # newest
    for i in range(5):
        labels.open("busy", {"f": float(i)}, 0.5, ts=T0 + i, deadline_ts=T0 + MINUTE)
    assert labels.pending_for("busy") == 3 and labels.skipped == 2


def test_min_interval_thins_examples_per_key() -> None:
    labels = DelayedLabels(min_interval_ms=10 * SECOND)
    opened = [labels.open("k", {"f": 1.0}, 0.5, ts=T0 + s * SECOND, deadline_ts=T0 + MINUTE)
              for s in (0, 3, 9, 10, 15, 21)]
    assert opened == [True, False, False, True, False, True]


def test_features_of_any_shape_round_trip_through_pending() -> None:
    labels = DelayedLabels(release="outcome")
    for i in range(MAX_SCHEMAS + 5):  # more distinct key sets than are stored compactly
        labels.open(f"k{i}", {f"feature_{i}": 0.5, "shared": 1.0}, 0.5, T0, T0 + MINUTE)
    labels.open("odd", {"text": "not a number", "n": 2}, 0.4, T0, T0 + MINUTE)
    assert labels.resolve("odd", True, T0 + SECOND) == [({"text": "not a number", "n": 2},
                                                         0.4, True)]
    last = MAX_SCHEMAS + 4
    assert labels.resolve(f"k{last}", True, T0 + SECOND) == [
        ({f"feature_{last}": 0.5, "shared": 1.0}, 0.5, True)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DelayedLabels(max_pending=0)
    with pytest.raises(ValueError, match="release"):
        DelayedLabels(release="never")


# ---------------------------------------------------------------------- tasks
def purchase_context(carts: int, views: int, kind: str = "view") -> dict[str, Any]:
    return {"profile": {"session": {"carts": carts, "events": views + carts}},
            "event": {"type": kind, "price": 50.0}}


def drive_purchase(task: PurchasePropensity, sessions: int, seed: int) -> list[float]:
    """Synthetic shoppers: sessions with a cart usually end in a purchase, others rarely."""
    rng = random.Random(seed)
    scores = []
    ts = T0
    for s in range(sessions):
        user = f"u{s % 50}"
        carts = rng.random() < 0.3
        buys = rng.random() < (0.8 if carts else 0.05)
        for step in range(3):
            ts += 2 * SECOND
            kind = "add_to_cart" if carts and step == 2 else "view"
            scores.append(task.score(user, purchase_context(int(carts), step + 1, kind), ts))
        if buys:
            ts += SECOND
            task.observe(user, "purchase", ts)
        ts += 10 * MINUTE  # the session ends; the next one starts after the gap
        task.tick(ts)
    return scores


def test_purchase_propensity_learns_from_delayed_session_labels() -> None:
    task = PurchasePropensity(session_gap_s=300, learning_rate=0.05, warmup=300)
    drive_purchase(task, 1500, seed=1)
    report = task.metrics()
    assert report["examples"] == report["labels"]["released_positive"] + \
        report["labels"]["released_negative"] == 4500
    assert report["labels"]["pending"] == 0
    assert report["after_warmup"]["roc_auc"] > 0.8
    assert report["after_warmup"]["log_loss"] < constant_baseline(
        report["positives"], report["examples"])["log_loss"]
    assert report["model_version"] == "purchase_propensity-v3-logistic"


def test_purchase_labels_follow_the_session() -> None:
    task = PurchasePropensity(session_gap_s=60)
    task.score("u1", purchase_context(0, 1), T0)
    task.observe("u1", "view", T0 + 50 * SECOND)     # activity: the session goes on
    assert task.tick(T0 + 70 * SECOND) == 0
    task.observe("u1", "purchase", T0 + 100 * SECOND)
    assert task.tick(T0 + 161 * SECOND) == 1          # positive, released at its deadline
    task.score("u2", purchase_context(0, 1), T0)
    assert task.tick(T0 + 61 * SECOND) == 1           # idle for the gap: negative
    report = task.metrics()
    assert (report["examples"], report["positives"]) == (2, 1)


def test_leave_risk_labels_within_the_horizon() -> None:
    task = LeaveRisk(horizon_s=60, release="outcome")
    context = {"event": {"type": "like", "ts": T0}, "viewer": {"joined_at": T0 - MINUTE}}
    task.score("room-1|u1", context, T0)
    task.score("room-1|u2", context, T0)
    task.score("room-2|u1", context, T0)
    assert task.observe("room-1|u1", "comment", T0 + SECOND) == 0
    assert task.observe("room-1|u1", "leave", T0 + 30 * SECOND) == 1  # positive at once
    assert task.observe("room-1|u2", "leave", T0 + 61 * SECOND) == 1  # too late: negative
    assert task.tick(T0 + 61 * SECOND) == 1                             # room-2|u1 stayed
    report = task.metrics()
    assert (report["examples"], report["positives"]) == (3, 1)


@pytest.mark.parametrize("model", ["logistic", "auto"])
def test_determinism_and_pickle_round_trip(model: str) -> None:
    first = PurchasePropensity(session_gap_s=300, model=model, seed=3, batch_size=64)
    second = PurchasePropensity(session_gap_s=300, model=model, seed=3, batch_size=64)
    assert drive_purchase(first, 400, seed=9) == drive_purchase(second, 400, seed=9)
    assert first.metrics() == second.metrics()

    # Mid-stream: examples pending, models trained; the copy must continue identically.
    first.score("u1", purchase_context(1, 2, "add_to_cart"), T0 + 10 * 60 * MINUTE)
    restored = pickle.loads(pickle.dumps(first))
    probes = [purchase_context(c, v, k) for c in (0, 1) for v in (1, 5)
              for k in ("view", "add_to_cart")] + [{}]
    assert restored.predict_many(probes).tolist() == first.predict_many(probes).tolist()
    assert drive_purchase(restored, 100, seed=10) == drive_purchase(first, 100, seed=10)
    assert restored.metrics() == first.metrics()

    leave = LeaveRisk(seed=1)
    context = {"event": {"type": "join", "ts": T0}, "viewer": {"joined_at": T0}}
    for i in range(50):
        leave.score(f"room-1|u{i}", context, T0 + i)
        if i % 3 == 0:
            leave.observe(f"room-1|u{i}", "leave", T0 + 10 * SECOND)
    leave.tick(T0 + 2 * MINUTE)
    copy = pickle.loads(pickle.dumps(leave))
    assert copy.score("room-1|x", context, T0 + 3 * MINUTE) == \
        leave.score("room-1|x", context, T0 + 3 * MINUTE)


# ---------------------------------------------------------------------- features
def real_contexts() -> tuple[dict[str, Any], dict[str, Any]]:
    """Contexts built from a real profile view and a real room insight."""
    catalog = {"i1": {"item_id": "i1", "category": "beauty", "price": 129.9, "brand": "B",
                      "tags": ["discount"]}}.get
    profile = UserProfile("u1")
    room = RoomState("room-1")
    live = [LiveEvent("e1", "join", T0, "room-1", "u1"),
            LiveEvent("e2", "product_pin", T0 + SECOND, "room-1", "h1", item_id="i1"),
            LiveEvent("e3", "comment", T0 + 2 * SECOND, "room-1", "u1", text="太好看了"),
            LiveEvent("e4", "product_click", T0 + 3 * SECOND, "room-1", "u1", item_id="i1"),
            LiveEvent("e5", "purchase", T0 + 4 * SECOND, "room-1", "u1", item_id="i1",
                      amount=129.9)]
    for event in live:
        room.apply(event)
        profile.apply_live(event, catalog)
    profile.apply_click(ClickEvent("c1", "add_to_cart", T0 + 5 * SECOND, "u1", "s1",
                                   item_id="i1", room_id="room-1"), catalog)
    ts = T0 + 6 * SECOND
    view = profile.view(ts)
    insight = as_dict(room.insight(ts))
    purchase = {"profile": view, "room": insight,
                "event": {"type": "add_to_cart", "item_id": "i1", "category": "beauty",
                          "price": 129.9, "source": "clicks"}}
    leave = {"profile": view, "room": insight, "event": {"type": "comment", "ts": ts},
             "viewer": {"joined_at": T0, "last_active_at": T0 + 4 * SECOND, "events": 4,
                        "returning": False, "pinned": catalog("i1")}}
    return purchase, leave


def test_features_are_numeric_bounded_and_use_the_context() -> None:
    purchase, leave = real_contexts()
    for builder, context in ((purchase_features, purchase), (leave_features, leave)):
        features = builder(context)
        empty = builder({})
        assert list(features) == list(empty)  # the same dense feature set, context or not
        assert all(isinstance(v, float) and -5.0 <= v <= 20.0 for v in features.values())
        assert all(v == 0.0 for k, v in empty.items() if not k.startswith("rfm_r_score"))
    p = purchase_features(purchase)
    assert p["rfm_has_order"] == 1.0 and p["sess_carts"] > 0 and p["ev_add_to_cart"] == 1.0
    assert p["item_is_pinned"] == 1.0 and p["item_top_category"] == 1.0
    assert p["room_present"] == 1.0 and p["life_new"] == 1.0
    lv = leave_features(leave)
    assert lv["v_in_room_0"] == 1.0 and lv["ev_comment"] == 1.0 and lv["room_viewers"] > 0
    # the pinned item against the profile: its category is the viewer's top one, its price
    # the viewer's usual price
    assert lv["pin_affinity"] > 0 and lv["pin_top_category"] == 1.0
    assert lv["pin_price_known"] == 1.0 and abs(lv["pin_price_vs_usual"]) < 0.01
    assert lv["room_pin_fresh"] == 1.0 and lv["v_events_per_min"] > 0


def test_leave_features_read_engagement_against_the_room_and_pin_fit() -> None:
    room = {"viewers": 100, "likes_per_min": 150.0, "comments_per_min": 50.0,
            "commerce": {"pinned": {"item_id": "i9", "pinned_at": T0}}}
    ts = T0 + 5 * MINUTE

    def features(events: int, pinned: dict[str, Any] | None = None,
                 profile: dict[str, Any] | None = None) -> dict[str, float]:
        return leave_features({"room": room, "event": {"type": "like", "ts": ts},
                               "profile": profile or {},
                               "viewer": {"joined_at": T0, "last_active_at": ts - SECOND,
                                          "events": events, "pinned": pinned}})

    # an average viewer here acts 2/min (likes + comments per viewer) / 0.7: ~14 in 5 min
    quiet, usual, busy = features(1), features(14), features(60)
    assert quiet["v_engage_vs_room"] < -1.5 < usual["v_engage_vs_room"] < 0.3 < \
        busy["v_engage_vs_room"]
    assert quiet["v_events_per_min"] < busy["v_events_per_min"]
    assert usual["v_in_room_lin"] == 0.5 and usual["room_pin_fresh"] == 0.0
    profile = {"affinities": {"categories": [{"name": "shoes", "score": 3.0},
                                             {"name": "bags", "score": 1.0}]},
               "price": {"avg_price": 100.0}}
    shoes = features(14, {"category": "shoes", "price": 100.0}, profile)
    bags = features(14, {"category": "bags", "price": 800.0}, profile)
    other = features(14, {"category": "toys", "price": 10.0}, profile)
    assert shoes["pin_top_category"] == 1.0 and bags["pin_top_category"] == 0.0
    assert shoes["pin_affinity"] > bags["pin_affinity"] > other["pin_affinity"] == 0.0
    assert shoes["pin_price_misfit"] == 0.0
    assert round(bags["pin_price_vs_usual"], 3) == round(math.log(8.0), 3)
    assert round(other["pin_price_misfit"], 3) == round(math.log(10.0), 3)
    unknown = features(14, {"category": "shoes", "price": 100.0})  # no profile history
    assert unknown["pin_price_known"] == 0.0 and unknown["pin_affinity"] == 0.0


def test_features_survive_garbage() -> None:
    garbage = {"profile": {"rfm": {"orders": "many", "monetary": math.inf,
                                   "recency_s": math.nan}, "session": None, "tags": None,
                           "affinities": {"categories": ["not-a-row"]}},
               "event": {"type": 3, "price": -5.0, "ts": None},
               "room": {"viewers": -10, "mood": "sunny", "peak_viewers": 0},
               "viewer": {"joined_at": "yesterday", "events": "lots",
                          "pinned": {"price": "x", "category": 5}}}
    for builder in (purchase_features, leave_features):
        values = builder(garbage).values()
        assert all(math.isfinite(v) for v in values)


# ---------------------------------------------------------------------- evaluation driver
def test_main_propensity_smoke() -> None:
    stdout = io.StringIO()
    with redirect_stdout(stdout):
        report = main_propensity(["--minutes", "1", "--users", "3000", "--rooms", "3",
                                  "--rate", "150", "--session-gap-s", "30", "--quiet"])
    last_line = stdout.getvalue().strip().splitlines()[-1]
    assert orjson.loads(last_line) == orjson.loads(orjson.dumps(report))
    assert report["simulation"]["events"]["live"] > 0
    assert report["simulation"]["events"]["clicks"] > 0
    for name in ("purchase_propensity", "leave_risk"):
        model = report[name]
        assert {"roc_auc", "log_loss", "ece", "calibration", "positive_rate", "examples",
                "baseline", "after_warmup", "labels", "model_version",
                "model_ops_per_s"} <= set(model)
        assert model["examples"] > 0 and 0.0 < model["positive_rate"] < 1.0
        assert 0.0 <= model["roc_auc"] <= 1.0 and model["log_loss"] > 0.0
        assert sum(row["count"] for row in model["calibration"]) == model["examples"]
        assert model["baseline"]["roc_auc"] == 0.5
        assert model["baseline"]["positive_rate"] == model["positive_rate"]
        warm = model["after_warmup"]
        if warm.get("examples"):
            assert warm["baseline"]["examples"] == warm["examples"]
    oracle = report["leave_risk"]["oracle"]
    assert oracle["examples"] > 0 and 0.0 <= oracle["roc_auc"] <= 1.0
    assert report["events_per_s"] > 0


# ---------------------------------------------------------------------- fast path
def synthetic_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic problem as rows: carts, views, noise_a, noise_b."""
    rng = random.Random(seed)
    rows, labels = [], []
    for _ in range(n):
        x, y = synthetic_example(rng)
        rows.append([x["carts"], x["views"], x["noise_a"], x["noise_b"]])
        labels.append(y)
    return np.array(rows), np.array(labels)


def test_batch_logistic_learns_the_synthetic_signal_in_mini_batches() -> None:
    X, y = synthetic_rows(6000, seed=1)
    model = BatchLogistic(4, learning_rate=0.05)
    served = PrequentialMetrics()
    for start in range(0, 5000, 250):
        batch = slice(start, start + 250)
        served.update_many(y[batch], model.predict_many(X[batch]))  # before learning it
        model.learn_many(X[batch], y[batch])
    assert model.learned == 5000 and served.to_dict()["roc_auc"] > 0.8
    held_out = model.predict_many(X[5000:])
    assert exact_auc(y[5000:].tolist(), held_out.tolist()) > 0.8
    fresh = CalibrationTable()
    fresh.update_many(y[5000:], held_out)
    assert fresh.ece() < 0.05
    one = [model.predict_one(row) for row in X[5000:5050].tolist()]
    packed = [model.predict_packed(row.astype(np.float32).tobytes()) for row in X[5000:5050]]
    assert np.allclose(held_out[:50], one) and np.allclose(one, packed, atol=1e-5)


def test_batch_logistic_in_single_steps_matches_river() -> None:
    """Steps of one example are River's StandardScaler | LogisticRegression(AdaGrad)."""
    X, y = synthetic_rows(600, seed=2)
    names = ("carts", "views", "noise_a", "noise_b")
    river = OnlineClassifier(learning_rate=0.05)
    model = BatchLogistic(4, learning_rate=0.05, step_rows=1)
    for start in range(0, 600, 20):
        for row, label in zip(X[start:start + 20].tolist(), y[start:start + 20].tolist(),
                              strict=True):
            river.learn_one(dict(zip(names, row, strict=True)), label)
        model.learn_many(X[start:start + 20], y[start:start + 20])
    probes = X[:30].tolist()
    assert np.allclose([river.predict_proba_one(dict(zip(names, r, strict=True)))
                        for r in probes], [model.predict_one(r) for r in probes], atol=1e-9)


def test_fast_task_matches_the_river_reference_when_learning_every_example() -> None:
    fast = PurchasePropensity(session_gap_s=300, learning_rate=0.05, batch_size=1)
    fast.classifier.step_rows = 1  # a tick releases a session's 3 examples at once
    river = PurchasePropensity(session_gap_s=300, learning_rate=0.05, batch_size=1,
                               model="river")
    fast_scores = drive_purchase(fast, 300, seed=4)
    river_scores = drive_purchase(river, 300, seed=4)
    assert np.allclose(fast_scores, river_scores, atol=1e-4)  # float32 rows aside
    assert fast.metrics()["roc_auc"] == pytest.approx(river.metrics()["roc_auc"], abs=0.01)
    assert river.model_version == "purchase_propensity-v3-river"


def test_learning_waits_for_a_mini_batch_or_learn_pending() -> None:
    task = PurchasePropensity(session_gap_s=60, batch_size=50)
    for i in range(49):
        task.score(f"u{i}", purchase_context(i % 2, 1), T0 + i)
    assert task.tick(T0 + 2 * MINUTE) == 49          # released, not learned yet
    assert task.classifier.learned == 0 and task.labels.ready == 49
    task.score("u49", purchase_context(1, 1), T0 + 2 * MINUTE)
    task.observe("u49", "purchase", T0 + 2 * MINUTE + 1)
    assert task.tick(T0 + 4 * MINUTE) == 1           # the 50th: the batch is learned
    assert task.classifier.learned == 50 and task.labels.ready == 0
    task.score("u50", purchase_context(0, 1), T0 + 4 * MINUTE)
    task.tick(T0 + 6 * MINUTE)
    assert task.learn_pending() == 1 and task.learn_pending() == 0
    report = task.metrics()
    assert (report["examples"], report["positives"]) == (51, 1)


def test_score_many_and_predict_many_match_score() -> None:
    one = PurchasePropensity(session_gap_s=300, batch_size=32)
    many = PurchasePropensity(session_gap_s=300, batch_size=32)
    drive_purchase(one, 200, seed=5)
    drive_purchase(many, 200, seed=5)
    ts = T0 + 100 * 60 * MINUTE
    events = [(f"u{i % 7}", purchase_context(i % 2, i % 5, ("view", "add_to_cart")[i % 2]),
               ts + i) for i in range(40)]
    probabilities = many.predict_many([context for _, context, _ in events])
    assert len(many.labels) == 0  # predict_many keeps nothing
    batch = many.score_many(events)
    single = [one.score(key, context, at) for key, context, at in events]
    assert isinstance(batch, np.ndarray) and batch.shape == (40,)
    assert np.allclose(batch, single, atol=1e-5) and np.allclose(batch, probabilities)
    assert many.labels.stats() == one.labels.stats() and many.scored == one.scored
    assert many.score_many([]).shape == (0,)
    leave = LeaveRisk()
    context = {"event": {"type": "like", "ts": T0}, "viewer": {"joined_at": T0 - MINUTE}}
    assert leave.score_many([("r|u1", context, T0)]).tolist() == [0.5]  # nothing learned


def test_delayed_rows_semantics() -> None:
    q = DelayedRows(1, release="outcome")
    q.open("u1", [1.0], 0.2, ts=T0, deadline_ts=T0 + MINUTE)
    q.open("u1", [2.0], 0.3, ts=T0 + 30 * SECOND, deadline_ts=T0 + 90 * SECOND)
    q.open("u1", [3.0], 0.4, ts=T0 + 80 * SECOND, deadline_ts=T0 + 140 * SECOND)
    assert q.resolve("u1", True, T0 + 70 * SECOND) == 2  # late negative, then in time
    rows, y, p, ts = q.take_ready()
    assert rows[:, 0].tolist() == [1.0, 2.0] and y.tolist() == [False, True]
    assert p.tolist() == [0.2, 0.3] and ts.tolist() == [T0, T0 + 30 * SECOND]
    assert q.pending_for("u1") == 1 and len(q) == 1
    held = DelayedRows(1)  # release="deadline"
    held.open("u1", [1.0], 0.2, ts=T0, deadline_ts=T0 + MINUTE)
    held.open("u2", [0.0], 0.1, ts=T0, deadline_ts=T0 + MINUTE)
    assert held.extend("u2", T0 + 50 * SECOND, T0 + 110 * SECOND) == 1
    assert held.resolve("u1", True, T0 + 5 * SECOND) == 0 and held.pending_for("u1") == 0
    assert held.expire(T0 + MINUTE) == 0 and held.expire(T0 + MINUTE + 1) == 1
    assert held.take_ready()[1].tolist() == [True]
    assert held.extend("u2", T0 + 111 * SECOND, T0 + 200 * SECOND) == 0  # too late
    assert held.expire(T0 + 110 * SECOND + 1) == 1 and held.take_ready()[1].tolist() == [False]
    with pytest.raises(ValueError, match="release"):
        DelayedRows(2, release="never")


def test_delayed_rows_are_bounded_and_compact() -> None:
    q = DelayedRows(61, max_pending=100, max_per_key=3)
    row = [0.5] * 61
    for i in range(250):
        q.open(f"u{i}", row, 0.5, ts=T0 + i, deadline_ts=T0 + MINUTE + i)
    assert len(q) == 100 and q.evicted == 150 and q.capacity <= 256
    assert q.expire(T0 + 10 * MINUTE) == 100
    assert q.take_ready()[3].tolist() == [T0 + i for i in range(150, 250)]  # the newest
    for i in range(5):
        q.open("busy", row, 0.5, ts=T0 + i, deadline_ts=T0 + MINUTE)
    assert q.pending_for("busy") == 3 and q.skipped == 2
    assert q.nbytes() / q.capacity < 300  # 244 bytes of float32 row + a few words
    big = DelayedRows(61, max_pending=10_000)
    for i in range(20_000):  # slots are reused once released: capacity stays ~pending
        big.open(f"u{i % 5000}", row, 0.5, ts=T0 + i, deadline_ts=T0 + i + 1000)
        if i % 500 == 0:
            big.expire(T0 + i)
            big.take_ready()
    assert len(big) <= 10_000 and big.capacity <= 16_384 and len(big._heap) < 50_000


def test_forget_drops_pending_held_and_released_examples() -> None:
    task = LeaveRisk(horizon_s=60, batch_size=1000)
    context = {"event": {"type": "like", "ts": T0}, "viewer": {"joined_at": T0}}
    for key in ("room-1|u1", "room-2|u1", "room-1|u2"):
        task.score(key, context, T0)
    task.observe("room-1|u1", "leave", T0 + SECOND)             # held positive
    task.score("room-3|u1", context, T0 + 2 * SECOND)
    task.tick(T0 + MINUTE + 1)                                  # released, not learned
    task.score("room-4|u1", context, T0 + MINUTE + 2)           # pending
    assert task.holds(lambda key: key.endswith("|u1")) == 4
    assert task.forget(lambda key: key.endswith("|u1")) == 4
    assert task.holds(lambda key: key.endswith("|u1")) == 0
    assert task.learn_pending() == 1                            # only u2's example is left
    assert task.metrics()["labels"]["pending"] == 0


def test_snapshot_round_trip_with_released_examples_and_old_format_refused() -> None:
    task = LeaveRisk(horizon_s=60, batch_size=64)
    context = {"event": {"type": "comment", "ts": T0}, "viewer": {"joined_at": T0 - MINUTE}}
    for i in range(300):
        task.score(f"room-1|u{i}", context, T0 + i * SECOND)
        if i % 4 == 0:
            task.observe(f"room-1|u{i}", "leave", T0 + i * SECOND + 500)
        task.tick(T0 + i * SECOND)
    assert task.labels.ready and len(task.labels)  # both waiting: snapshot mid-stream
    copy = pickle.loads(pickle.dumps(task))
    for t in (task, copy):
        t.tick(T0 + 400 * SECOND)
    assert copy.metrics() == task.metrics()
    later = {"event": {"type": "like", "ts": T0 + HOUR}, "viewer": {"joined_at": T0}}
    assert copy.score("room-9|x", later, T0 + HOUR) == task.score("room-9|x", later, T0 + HOUR)
    state = task.__dict__.copy()
    state["format_version"] = 1
    old = LeaveRisk.__new__(LeaveRisk)
    with pytest.raises(ValueError, match="format"):
        old.__setstate__(state)


def test_vectors_are_the_named_features_in_order() -> None:
    purchase, leave = real_contexts()
    assert purchase_vector(purchase) == list(purchase_features(purchase).values())
    assert list(purchase_features(purchase)) == list(PURCHASE_FEATURES)
    assert leave_vector(leave) == list(leave_features(leave).values())
    assert len(leave_vector({})) == len(LEAVE_FEATURES)
    # a room insight edited in place is not served from the per-insight cache
    room = dict(purchase["room"])
    before = purchase_vector({**purchase, "room": room})
    room["viewers"] = 10_000
    after = purchase_vector({**purchase, "room": room})
    assert after[PURCHASE_FEATURES.index("room_viewers")] > \
        before[PURCHASE_FEATURES.index("room_viewers")]


def test_profile_block_is_reused_only_for_the_same_unchanged_view() -> None:
    purchase, leave = real_contexts()
    view = purchase["profile"]
    assert view.get("updated_at") is not None
    first = purchase_vector(purchase)
    assert leave_vector({**leave, "profile": view})[8 + 9:8 + 9 + 41] == first[:41]
    edited = dict(view, events=view["events"] + 1,
                  session=dict(view["session"], carts=view["session"]["carts"] + 5))
    assert purchase_vector({**purchase, "profile": edited})[
        PURCHASE_FEATURES.index("sess_carts")] > first[PURCHASE_FEATURES.index("sess_carts")]
    view["session"]["carts"] += 5  # edited in place, events too: recomputed
    view["events"] += 1
    assert purchase_vector(purchase)[PURCHASE_FEATURES.index("sess_carts")] > \
        first[PURCHASE_FEATURES.index("sess_carts")]


def test_a_score_the_key_cannot_keep_reuses_its_newest_example_and_learning_is_unchanged(
        ) -> None:
    """A chatty viewer fills its key (8 open examples): further scores within ``reuse_ms``
    serve the newest example's probability without features; the model learns exactly
    what it learns when every score is computed."""
    reusing, computing = LeaveRisk(batch_size=16), LeaveRisk(batch_size=16)
    computing.reuse_ms = 0
    rng = random.Random(3)
    served: dict[str, list[float]] = {"reusing": [], "computing": []}
    for n in range(3_000):
        ts = T0 + n * 400
        key = f"r|u{rng.randrange(4)}"
        kind = "leave" if rng.random() < 0.02 else rng.choice(("like", "comment", "gift"))
        context = {"event": {"type": kind, "ts": ts},
                   "viewer": {"joined_at": T0 - rng.randrange(600) * 1000,
                              "events": rng.randrange(50)},
                   "room": {"viewers": rng.randrange(1, 500)}}
        for name, task in (("reusing", reusing), ("computing", computing)):
            task.tick(ts)
            if kind == "leave":
                task.observe(key, kind, ts)
            else:
                served[name].append(task.score(key, context, ts))
    assert reusing.reused > 300 and computing.reused == 0
    assert reusing.labels.stats() == computing.labels.stats()
    assert np.array_equal(reusing.classifier.weights, computing.classifier.weights)
    assert reusing.metrics()["roc_auc"] == computing.metrics()["roc_auc"]
    changed = sum(a != b for a, b in zip(served["reusing"], served["computing"], strict=True))
    assert 0 < changed <= reusing.reused
