"""ModelHost without Faust: prequential scoring, catalog filters, consent, snapshots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.models import ModelHost
from config.settings import Settings
from streams.contracts import ClickEvent


def host(tmp_path: Path) -> ModelHost:
    return ModelHost(Settings(data_dir=str(tmp_path), snapshot_key="test-key", recs_top_k=5))


def click(i: int, user: str, session: str, item: str) -> ClickEvent:
    return ClickEvent(f"e{i}", "click", 1_700_000_000_000 + i * 1000, user, session,
                      item_id=item)


def feed(models: ModelHost, view: dict[str, Any], catalog: dict[str, dict[str, Any]]) -> Any:
    rec = None
    for s in range(30):
        for step, item in enumerate(("a", "b", "c")):
            rec = models.on_event(click(s * 10 + step, f"u{s}", f"s{s}", item), view, None,
                                  "clicks", item=catalog.get(item))
    return rec


def test_recommends_learns_prequentially_and_drops_out_of_stock_items(tmp_path: Path) -> None:
    models = host(tmp_path)
    catalog = {"a": {"category": "x", "in_stock": True}, "b": {"category": "x", "in_stock": True},
               "c": {"category": "x", "in_stock": False}}
    rec = feed(models, {"consent": True}, catalog)
    assert rec is not None and rec.model_version == models.recommender.model_version
    assert "c" not in [item["item_id"] for item in rec.items]  # out of stock
    report = models.prequential()["recommender"]
    # scored clicks: b and c of each session; c is never listed (out of stock), so HR < 0.5,
    # and b is found once a = > b has been seen
    assert report["learned"] == 90 and 0.4 < report["hr@20"] < 0.5


def test_no_personal_scores_without_consent(tmp_path: Path) -> None:
    models = host(tmp_path)
    feed(models, {"consent": False}, {})
    assert models.scores == {}
    feed(models, {"consent": True}, {})
    assert models.scores and all("purchase_propensity" in s for s in models.scores.values())


def test_snapshot_round_trip_restores_the_same_rankings(tmp_path: Path) -> None:
    models = host(tmp_path)
    feed(models, {"consent": True}, {})
    models.snapshot()
    again = host(tmp_path)
    assert set(again.restore()) >= {"recommender", "propensity", "leave_risk", "sentiment"}
    query = {"consent": True, "session": {"id": "s3"}, "updated_at": 1_700_000_100_000}
    assert again.recommend("u3", query) == models.recommend("u3", query)
