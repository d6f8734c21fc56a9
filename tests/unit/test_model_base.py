"""Every online model against its contract in online_models.base, batch forms included:
a batch call gives what the single calls give."""

from __future__ import annotations

import random
from typing import Any

import pytest

from online_models.anomaly import AnomalyDetector
from online_models.base import (
    DelayedClassifier,
    Recommender,
    StreamDetector,
    TextScorer,
    predict_many,
)
from online_models.propensity import LeaveRisk, PurchasePropensity
from online_models.recsys import HybridRecommender
from online_models.sentiment import LexiconSentiment, NgramSentiment


def test_each_model_meets_its_contract() -> None:
    assert isinstance(HybridRecommender(seed=1), Recommender)
    assert isinstance(PurchasePropensity(seed=1), DelayedClassifier)
    assert isinstance(LeaveRisk(seed=1), DelayedClassifier)
    assert isinstance(LexiconSentiment(), TextScorer)
    assert isinstance(NgramSentiment(), TextScorer)
    assert isinstance(AnomalyDetector(), StreamDetector)


def clicks(n: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"session_id": f"s{rng.randrange(40)}", "item_id": f"i{rng.randrange(60)}",
             "ts": 1_700_000_000_000 + i * 1000, "user_id": f"u{rng.randrange(20)}"}
            for i in range(n)]


def test_recommender_batch_forms_equal_single_calls() -> None:
    one, many = HybridRecommender(seed=2), HybridRecommender(seed=2)
    events = clicks(600)
    for event in events:
        one.learn_one(event)
    assert many.learn_many(events) == len(events)
    queries = [{"session_id": f"s{n}", "user_id": f"u{n % 20}"} for n in range(30)]
    singles = [one.rank(q, k=10) for q in queries]
    assert many.rank_many(queries, k=10) == singles
    assert all(isinstance(r["item_id"], str) and isinstance(r["score"], float)
               and isinstance(r["reasons"], list) for ranked in singles for r in ranked)


def contexts(n: int, seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [{"profile": {"events": rng.randrange(50), "updated_at": i,
                         "session": {"events": rng.randrange(9), "carts": rng.randrange(3)}},
             "room": {"viewers": rng.randrange(500), "comments_per_min": rng.random() * 30},
             "event": {"type": rng.choice(["product_click", "add_to_cart", "view"]),
                       "price": rng.random() * 200, "source": "live"},
             "viewer": {"events": rng.randrange(20)}}
            for i in range(n)]


@pytest.mark.parametrize("model_class", [PurchasePropensity, LeaveRisk])
def test_classifier_batch_scores_equal_single_scores(model_class: type[Any]) -> None:
    one, many = model_class(seed=1), model_class(seed=1)
    events = [(f"k{i % 7}", ctx, 1_000 + i) for i, ctx in enumerate(contexts(40))]
    singles = [one.score(key, ctx, ts) for key, ctx, ts in events]
    batch = many.score_many(events)
    assert batch.tolist() == pytest.approx(singles, abs=1e-9)
    assert all(0.0 <= p <= 1.0 for p in singles)
    assert many.predict_many([ctx for _, ctx, _ in events]).tolist() == pytest.approx(
        singles, abs=1e-9)


def test_text_scorers_batch_form() -> None:
    texts = ["love it so much", "this is terrible", "ok", "太好了", ""]
    for model in (LexiconSentiment(), NgramSentiment()):
        assert predict_many(model, texts) == [model.predict_one(t) for t in texts]
        assert all(-1.0 <= s <= 1.0 for s in predict_many(model, texts))
