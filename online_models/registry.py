"""Every online model, described so that one conformance suite can drive it.

A :class:`ModelSpec` says how to build a model (``factory(seed)``, with small caps so a test
stream reaches them), how to make a learning stream (``stream(seed, n)`` yields events and
``learn(model, event)`` feeds one), which inputs to predict on (``probes(seed)``: like the
stream; ``unseen(seed)``: ids, features and texts the stream never had, plus odd ones),
``predict(model, probe)`` (a value comparable with ``==``), ``valid(prediction)``, and
``bounds(model)``: ``{measure: (size, cap)}`` read from the model's own size hook.
``tests/unit/test_model_conformance.py`` runs every spec in :data:`MODELS`.

Adding a model is one ``register(ModelSpec(...))`` call next to the others below.

>>> {"ngram-sentiment", "lexicon-sentiment"} <= {spec.name for spec in MODELS}
True
>>> spec = get("ngram-sentiment")
>>> model = spec.factory(1)
>>> for event in spec.stream(1, 50):
...     spec.learn(model, event)
>>> all(spec.valid(spec.predict(model, probe)) for probe in spec.unseen(1))
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from online_models.anomaly import AnomalyDetector
from online_models.anomaly_cad import ContextAnomalyDetector
from online_models.anomaly_ensemble import EnsembleDetector
from online_models.propensity import LeaveRisk, OnlineClassifier, PurchasePropensity
from online_models.recsys import HybridRecommender
from online_models.segments import ProfileSegmenter, profile_features
from online_models.sentiment import LexiconSentiment, NgramSentiment


@dataclass(frozen=True)
class ModelSpec:
    """How the conformance suite builds, trains, probes and measures one model."""

    name: str
    factory: Callable[[int], Any]
    stream: Callable[[int, int], Iterable[Any]]
    learn: Callable[[Any, Any], None]
    probes: Callable[[int], list[Any]]
    unseen: Callable[[int], list[Any]]
    predict: Callable[[Any, Any], Any]
    bounds: Callable[[Any], dict[str, tuple[int, int]]]
    valid: Callable[[Any], bool] = lambda prediction: True
    long_stream: int = 5_000
    saturates: tuple[str, ...] = field(default=())
    """Bounds the long stream must drive (nearly) to their cap, so eviction is exercised."""


MODELS: list[ModelSpec] = []


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`MODELS` (names are unique)."""
    if any(existing.name == spec.name for existing in MODELS):
        raise ValueError(f"model {spec.name!r} is already registered")
    MODELS.append(spec)
    return spec


def get(name: str) -> ModelSpec:
    """The registered spec called ``name``."""
    for spec in MODELS:
        if spec.name == name:
            return spec
    raise KeyError(name)


# ---------------------------------------------------------------------------- comment sentiment

_EMOJI = ("❤️", "🔥", "👍", "😂", "🙄", "😍", "😡", "🎉")
_LABELS = {"positive": 1.0, "negative": -1.0, "neutral": 0.0}


@cache
def _labelled_comments() -> tuple[tuple[str, float], ...]:
    text = resources.files("online_models").joinpath("data", "comments_labelled.tsv")
    rows = []
    for line in text.read_text("utf-8").splitlines()[1:]:
        comment, _, tone = line.rpartition("\t")
        if comment and tone in _LABELS:
            rows.append((comment, _LABELS[tone]))
    return tuple(rows)


def _novel_word(rng: random.Random) -> str:
    """A made-up Latin word or run of Han characters: vocabulary the model has not seen."""
    if rng.random() < 0.5:
        return "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiouy")
                       for _ in range(rng.randint(2, 4)))
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(1, 4)))


def comment_stream(seed: int, n: int) -> Iterator[tuple[str, float | None]]:
    """``(text, label)`` events: labelled sample comments, often with new words and emoji
    mixed in; label None (a third of them) means "learn it as a weak label"."""
    rng = random.Random(seed)
    rows = _labelled_comments()
    for _ in range(n):
        text, value = rng.choice(rows)
        if rng.random() < 0.6:
            text = f"{text} {_novel_word(rng)}"
        if rng.random() < 0.2:
            text += rng.choice(_EMOJI)
        yield text, (None if rng.random() < 1 / 3 else value)


def comment_probes(seed: int) -> list[str]:
    """Sample comments as they appear in the stream, with and without decoration."""
    rng = random.Random(seed + 1)
    rows = _labelled_comments()
    return [text for text, _ in rng.sample(rows, 40)] + [text + "!!" for text, _ in rows[:10]]


def unseen_comments(seed: int) -> list[str]:
    """Texts no stream produces: made-up words, empty and degenerate input, odd Unicode."""
    rng = random.Random(f"unseen-{seed}")
    made_up = [" ".join(_novel_word(rng) for _ in range(rng.randint(1, 6))) for _ in range(20)]
    odd = ["", " ", "!!!", "???", "🙃", "8" * 40, "a" * 10_000, "爱" * 3_000,
           "e\u0301\u0301\u0301", "\u200b\u200d\ufeff", "مرحبا بالجميع", "🇨🇳🇺🇸", "\x00\x01",
           "NOT GOOD AT ALL!!!", "不不不不不好", "ok\tok\nok"]
    return made_up + odd


def _learn_comment(model: Any, event: tuple[str, float | None]) -> None:
    text, value = event
    if value is None and hasattr(model, "learn_weak"):
        model.learn_weak(text)
    else:
        model.learn_one(text, 0.0 if value is None else value)


def _score_in_range(prediction: Any) -> bool:
    return isinstance(prediction, float) and math.isfinite(prediction) \
        and -1.0 <= prediction <= 1.0


def _ngram_bounds(model: NgramSentiment) -> dict[str, tuple[int, int]]:
    stats = model.stats()
    return {"trained_buckets": (stats["trained_buckets"], model.n_buckets),
            "weight_array": (stats["buckets"], model.n_buckets)}


register(ModelSpec(
    name="ngram-sentiment",
    factory=lambda seed: NgramSentiment(n_buckets=2**9),
    stream=comment_stream, learn=_learn_comment,
    probes=comment_probes, unseen=unseen_comments,
    predict=lambda model, text: model.predict_one(text),
    valid=_score_in_range,
    bounds=_ngram_bounds,
    long_stream=3_000, saturates=("trained_buckets",),
))

register(ModelSpec(
    name="lexicon-sentiment",
    factory=lambda seed: LexiconSentiment(max_vocab=400),
    stream=comment_stream, learn=_learn_comment,
    probes=comment_probes, unseen=unseen_comments,
    predict=lambda model, text: model.predict_one(text),
    valid=_score_in_range,
    bounds=lambda model: {"vocabulary": (len(model), model.max_vocab)},
    long_stream=3_000, saturates=("vocabulary",),
))


# ---------------------------------------------------------------------------- recommender

_CATEGORIES = ("beauty", "shoes", "snacks", "home", "toys")


def click_stream(seed: int, n: int) -> Iterator[dict[str, Any]]:
    """Clicks, carts and purchases in short sessions over Zipf-popular items (ids from a
    pool larger than the test caps), with a catalog fact now and then."""
    rng = random.Random(seed)
    items = [f"i{index}" for index in range(300)]
    weights = [1.0 / (rank + 1) for rank in range(len(items))]
    ts, session, left, user = 1_700_000_000_000, 0, 0, None
    for _ in range(n):
        ts += rng.randint(200, 20_000)
        if rng.random() < 0.05:
            item = rng.choice(items)
            yield {"catalog": item, "category": _CATEGORIES[int(item[1:]) % 5],
                   "in_stock": rng.random() < 0.9}
            continue
        if left == 0:
            session += 1
            left = rng.randint(2, 12)
            user = f"u{rng.randrange(60)}" if rng.random() < 0.7 else None
        left -= 1
        kind = rng.choices(("click", "add_to_cart", "purchase"), (0.85, 0.1, 0.05))[0]
        yield {"session_id": f"s{session}", "item_id": rng.choices(items, weights)[0],
               "ts": ts, "user_id": user, "kind": kind}


def _learn_click(model: HybridRecommender, event: dict[str, Any]) -> None:
    if "catalog" in event:
        model.set_item(event["catalog"], category=event["category"], in_stock=event["in_stock"])
    else:
        model.learn_one(event)


def rank_probes(seed: int) -> list[dict[str, Any]]:
    """Rank requests for sessions and users a short stream of ``seed`` has seen."""
    rng = random.Random(seed + 1)
    return [{"session_id": f"s{rng.randint(1, 40)}", "user_id": f"u{rng.randrange(60)}"}
            for _ in range(20)] + [{"session_id": "s1", "room_items": ["i3", "i5"]}]


def unseen_rank_requests(seed: int) -> list[dict[str, Any]]:
    """New sessions, users, items, categories; empty and odd requests."""
    return [{}, {"session_id": f"never-{seed}"}, {"user_id": "nobody"},
            {"session_id": "s1", "room_items": ["brand-new-1", "brand-new-2"]},
            {"session_id": "s2", "exclude": ["not-an-item"], "affinity": {"unknown-cat": 5.0}},
            {"session_id": "s3", "ts": 0}, {"session_id": "s3", "ts": 10**15},
            {"session_id": None, "user_id": None, "room_items": None, "exclude": None},
            {"session_id": "会话", "user_id": "用户", "room_items": ["商品"]}]


def _valid_ranking(ranking: Any) -> bool:
    ids = [row["item_id"] for row in ranking]
    return isinstance(ranking, list) and len(ids) == len(set(ids)) <= RANK_K and all(
        isinstance(row["item_id"], str) and math.isfinite(row["score"]) for row in ranking)


def _recommender_bounds(model: HybridRecommender) -> dict[str, tuple[int, int]]:
    stats = model.stats()
    return {
        "sessions": (stats["sessions"], stats["max_sessions"]),
        "items": (stats["items"], stats["max_items"]),
        "users": (stats["users"], stats["max_users"]),
        "longest_session": (stats["longest_session"], stats["max_session_len"]),
        "longest_postings": (stats["longest_postings"], stats["max_postings_per_item"]),
        "longest_covisit_row": (stats["longest_covisit_row"], stats["max_covisit_per_item"]),
        "mf_users": (stats["mf_users"], stats["max_users"]),
        "mf_items": (stats["mf_items"], stats["max_items"]),
    }


RANK_K = 10

register(ModelSpec(
    name="hybrid-recommender",
    factory=lambda seed: HybridRecommender(
        seed=seed, max_sessions=60, max_items=80, max_users=30, max_session_len=8,
        max_postings_per_item=20, max_covisit_per_item=12),
    stream=click_stream, learn=_learn_click,
    probes=rank_probes, unseen=unseen_rank_requests,
    predict=lambda model, request: model.rank(request, k=RANK_K),
    valid=_valid_ranking,
    bounds=_recommender_bounds,
    long_stream=5_000, saturates=("sessions", "items", "users"),
))


# ---------------------------------------------------------------------------- propensity

_FEATURE_NAMES = tuple(f"f{index}" for index in range(12))


def labelled_vectors(seed: int, n: int) -> Iterator[tuple[dict[str, float], bool]]:
    """``(x, y)`` with a fixed set of feature names (some missing per example) and a label
    that depends on two of them."""
    rng = random.Random(seed)
    for _ in range(n):
        x = {name: rng.gauss(0.0, 1.0) for name in _FEATURE_NAMES if rng.random() < 0.8}
        y = x.get("f0", 0.0) + 0.5 * x.get("f1", 0.0) + rng.gauss(0.0, 0.5) > 0.3
        yield x, y


def _vector_probes(seed: int) -> list[dict[str, float]]:
    return [x for x, _ in labelled_vectors(seed + 1, 30)]


def _unseen_vectors(seed: int) -> list[dict[str, float]]:
    return [{}, {"never_seen": 3.0}, {"f0": 1e9, "f1": -1e9}, {"f0": 0.0, "brand_new": -2.0},
            {name: 0.0 for name in _FEATURE_NAMES}, {"特征": 1.0}]


def _probability(prediction: Any) -> bool:
    return isinstance(prediction, float) and 0.0 <= prediction <= 1.0


def _classifier_bounds(model: OnlineClassifier) -> dict[str, tuple[int, int]]:
    """Per-feature state only: as many features as the stream has names."""
    pipeline = model.candidates["logistic"]
    return {"logistic_weights": (len(pipeline["LogisticRegression"].weights),
                                 len(_FEATURE_NAMES)),
            "scaler_features": (len(pipeline["StandardScaler"].counts), len(_FEATURE_NAMES))}


register(ModelSpec(
    name="online-classifier",
    factory=lambda seed: OnlineClassifier("auto", seed=seed),
    stream=labelled_vectors, learn=lambda model, event: model.learn_one(*event),
    probes=_vector_probes, unseen=_unseen_vectors,
    predict=lambda model, x: model.predict_proba_one(x),
    valid=_probability,
    bounds=_classifier_bounds,
    long_stream=3_000, saturates=("logistic_weights",),
))

_LIVE_KINDS = ("comment", "like", "gift", "product_click", "add_to_cart", "join")


def task_stream(seed: int, n: int, outcome: str) -> Iterator[tuple[Any, ...]]:
    """Delayed-label traffic for :class:`PurchasePropensity` (``outcome="purchase"``) or
    :class:`LeaveRisk` (``"leave"``): scored events with a context, outcomes, and ticks.
    Keys with carts are likelier to reach the outcome. Every fifth block of 200 events is a
    burst (5 ms apart) that fills the pending-example caps."""
    rng = random.Random(seed)
    ts = 1_700_000_000_000
    for index in range(n):
        ts += 5 if index // 200 % 5 == 4 else rng.randint(50, 1_000)
        key = f"room-{rng.randrange(3)}|u{rng.randrange(40)}" if outcome == "leave" \
            else f"u{rng.randrange(40)}"
        if index % 25 == 24:
            yield ("tick", ts)
            continue
        carts = rng.randrange(4)
        context = {
            "profile": {"session": {"events": rng.randrange(30), "carts": carts},
                        "rfm": {"orders": rng.randrange(5)}, "lifecycle": "active"},
            "event": {"type": rng.choice(_LIVE_KINDS), "price": rng.uniform(5, 500),
                      "ts": ts, "source": "live"},
            "viewer": {"joined_at": ts - rng.randrange(600_000),
                       "last_active_at": ts - rng.randrange(120_000), "events": carts},
            "room": {"viewers": rng.randrange(1, 5_000), "peak_viewers": 5_000},
        }
        if rng.random() < 0.15 + 0.1 * carts:
            yield ("observe", key, outcome, ts)
        else:
            yield ("score", key, context, ts)


def _learn_task(model: Any, event: tuple[Any, ...]) -> None:
    if event[0] == "tick":
        model.tick(event[1])
    elif event[0] == "observe":
        model.observe(event[1], event[2], event[3])
    else:
        model.score(event[1], event[2], event[3])


def _context_probes(seed: int, outcome: str) -> list[dict[str, Any]]:
    return [event[2] for event in task_stream(seed + 1, 60, outcome) if event[0] == "score"]


def _unseen_contexts(seed: int) -> list[dict[str, Any]]:
    return [{}, {"event": {"type": "teleport"}}, {"profile": {"lifecycle": "martian",
                                                             "tags": ["unknown-tag"]}},
            {"profile": {"rfm": {"orders": "many", "monetary": None}, "session": "broken"}},
            {"event": {"price": float("nan"), "ts": float("inf")}, "room": {"viewers": -5}},
            {"viewer": {"joined_at": 10**15, "events": 10**9}, "room": []}]


def _task_bounds(model: Any) -> dict[str, tuple[int, int]]:
    labels = model.labels
    keys = {f"u{user}" for user in range(40)} | {f"room-{room}|u{user}" for room in range(3)
                                                  for user in range(40)}
    return {"pending": (len(labels), labels.max_pending),
            "pending_per_key": (max(labels.pending_for(key) for key in keys),
                                labels.max_per_key)}


def _task_predict(model: Any, context: dict[str, Any]) -> float:
    """The task's probability for a context, without opening a pending example, after
    learning the labelled examples waiting for their mini-batch (as a worker's commit does)."""
    model.learn_pending()
    return float(model.predict_many([context])[0])


register(ModelSpec(
    name="purchase-propensity",
    factory=lambda seed: PurchasePropensity(seed=seed, session_gap_s=60, max_pending=120,
                                            max_per_key=6, warmup=50),
    stream=lambda seed, n: task_stream(seed, n, "purchase"), learn=_learn_task,
    probes=lambda seed: _context_probes(seed, "purchase"), unseen=_unseen_contexts,
    predict=_task_predict, valid=_probability, bounds=_task_bounds,
    long_stream=3_000, saturates=("pending", "pending_per_key"),
))

register(ModelSpec(
    name="leave-risk",
    factory=lambda seed: LeaveRisk(seed=seed, horizon_s=60, max_pending=120, max_per_key=3,
                                   warmup=50),
    stream=lambda seed, n: task_stream(seed, n, "leave"), learn=_learn_task,
    probes=lambda seed: _context_probes(seed, "leave"), unseen=_unseen_contexts,
    predict=_task_predict, valid=_probability, bounds=_task_bounds,
    long_stream=3_000, saturates=("pending",),
))


# ---------------------------------------------------------------------------- anomaly detector


def metric_stream(seed: int, n: int) -> Iterator[dict[str, Any]]:
    """A 1 Hz live-room metric: a daily-ish cycle (period 600 s here), noise, a level shift
    every ~1 500 points and rare spikes."""
    rng = random.Random(seed)
    level = rng.uniform(50, 500)
    for index in range(n):
        if index % 1_500 == 1_499:
            level *= rng.uniform(0.5, 1.5)
        value = level * (1 + 0.3 * math.sin(2 * math.pi * index / 600)) + rng.gauss(0, 5)
        if rng.random() < 0.003:
            value += rng.choice((-1, 1)) * level
        yield {"value": value, "ts": 1_700_000_000.0 + index, "room_id": f"room-{seed}"}


def _metric_probes(seed: int) -> list[dict[str, Any]]:
    return list(metric_stream(seed + 1, 40))


def _unseen_metrics(seed: int) -> list[dict[str, Any]]:
    return [{"value": 0.0}, {"value": -1e12}, {"value": 1e300}, {"value": float("nan")},
            {"value": float("inf")}, {"value": None}, {"value": "12.5"}, {"value": "many"},
            {}, {"value": 3.0, "ts": None}, {"value": 3.0, "ts": float("nan")},
            {"value": 3.0, "ts": -1e18}, {"value": 3.0, "ts": 1e18}, {"value": 7, "extra": [1]}]


def _valid_score(prediction: Any) -> bool:
    return isinstance(prediction, float) and 0.0 <= prediction <= 1.0


register(ModelSpec(
    name="anomaly-detector",
    factory=lambda seed: AnomalyDetector(seed=seed, window=64, history=200, warmup=20),
    stream=metric_stream, learn=lambda model, x: model.learn_one(x),
    probes=_metric_probes, unseen=_unseen_metrics,
    predict=lambda model, x: model.score_one(x), valid=_valid_score,
    bounds=lambda model: model.size(),
    long_stream=3_000, saturates=("recent", "history"),
))

def _metric_continuation(seed: int) -> list[dict[str, Any]]:
    """The 40 points after the conformance suite's 400 (novelty depends on the series)."""
    return list(metric_stream(seed, 440))[400:]


register(ModelSpec(
    name="anomaly-cad",
    factory=lambda seed: ContextAnomalyDetector(seed=seed, capacity=120, warmup=20, rest=0),
    stream=metric_stream, learn=lambda model, x: model.learn_one(x),
    probes=_metric_continuation, unseen=_unseen_metrics,
    predict=lambda model, x: model.score_one(x), valid=_valid_score,
    bounds=lambda model: model.size(),
    long_stream=3_000, saturates=("pairs", "contexts"),
))

register(ModelSpec(
    name="anomaly-ensemble",
    factory=lambda seed: EnsembleDetector(
        [(AnomalyDetector(seed=seed, window=64, history=200, warmup=20), False),
         (ContextAnomalyDetector(seed=seed, capacity=120, warmup=20, rest=0), True)],
        warmup=20, cap=500),
    stream=metric_stream, learn=lambda model, x: model.learn_one(x),
    probes=_metric_probes, unseen=_unseen_metrics,
    predict=lambda model, x: model.score_one(x), valid=_valid_score,
    bounds=lambda model: model.size(),
    long_stream=3_000, saturates=("0.recent", "0.history", "1.pairs"),
))

register(ModelSpec(
    name="anomaly-fast",
    # the engine-sized fast ensemble, smaller still so the suite's stream saturates it
    factory=lambda seed: EnsembleDetector(
        [(AnomalyDetector(seed=seed, window=64, history=200, warmup=20, steps=False, thin=16),
          False),
         (ContextAnomalyDetector(seed=seed, depth=3, capacity=120, warmup=20, rest=0), True)],
        warmup=20, cap=500, bins=256),
    stream=metric_stream, learn=lambda model, x: model.learn_one(x),
    probes=_metric_probes, unseen=_unseen_metrics,
    predict=lambda model, x: model.score_one(x), valid=_valid_score,
    bounds=lambda model: model.size(),
    long_stream=3_000, saturates=("0.recent", "0.history", "1.pairs"),
))


# ---------------------------------------------------------------------------- profile segments

# planted user types: (spend, orders, gift value, comments, watch s, sensitivity)
_SEGMENT_TYPES = ((3000.0, 6, 400.0, 5, 3000.0, 0.2), (80.0, 1, 0.0, 30, 5000.0, 0.7),
                  (0.0, 0, 0.0, 0, 60.0, 0.25), (600.0, 3, 20.0, 2, 600.0, 0.5))


def profile_view_stream(seed: int, n: int) -> Iterator[dict[str, Any]]:
    """Profile views (``agents.users.profile`` shape) of four planted user types."""
    rng = random.Random(f"segments-{seed}")
    for _ in range(n):
        spend, orders, gifts, comments, watch, deal = rng.choice(_SEGMENT_TYPES)
        jitter = math.exp(rng.gauss(0.0, 0.3))
        yield {"events": int(20 * jitter) + orders,
               "rfm": {"monetary": round(spend * jitter, 2), "orders": orders,
                       "frequency_30d": orders * jitter},
               "price": {"avg_price": round(40 + spend / 20 * jitter, 2) if orders else None,
                         "sensitivity": min(1.0, deal * jitter)},
               "live": {"watch_time_s": watch * jitter, "comments": int(comments * jitter),
                        "likes": int(10 * jitter), "gift_value": gifts * jitter,
                        "rooms_watched": 1 + int(3 * jitter)}}


def _unseen_views(seed: int) -> list[dict[str, Any]]:
    return [{}, {"rfm": None}, {"rfm": {"monetary": float("nan"), "orders": -3}},
            {"rfm": {"monetary": 1e15}, "live": {"gift_value": float("inf")}},
            {"price": {"avg_price": 0.0, "sensitivity": 7}}, {"events": "many"},
            {"live": {"comments": True, "watch_time_s": -5}}]


def _segment_predict(model: Any, view: dict[str, Any]) -> int | None:
    return model.predict_one(profile_features(view))


def _segment_learn(model: Any, view: dict[str, Any]) -> None:
    model.learn_one(profile_features(view))


def _segment_factory(seed: int) -> Any:
    return ProfileSegmenter(n_segments=4, warmup=64, seed=seed)


register(ModelSpec(
    name="profile-segments",
    factory=_segment_factory, stream=profile_view_stream, learn=_segment_learn,
    probes=lambda seed: list(profile_view_stream(seed + 1, 40)), unseen=_unseen_views,
    predict=_segment_predict, valid=lambda s: s is None or s in range(4),
    bounds=lambda model: model.size(), long_stream=2_000, saturates=("centroids",),
))
