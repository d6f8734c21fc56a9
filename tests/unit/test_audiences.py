"""Online segments (online_models.segments) and audiences (agents.users.audiences): the model,
the conditions, and the user pipeline on the in-memory harness (agents.testing)."""

from __future__ import annotations

import asyncio
import itertools
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.promo.campaigns import Campaign, CampaignError
from agents.testing import Harness
from agents.users.audiences import (
    Audience,
    AudienceBook,
    AudienceError,
    Audiences,
    parse_audiences,
)
from agents.users.profile import UserProfile
from config.settings import Settings
from online_models.registry import profile_view_stream
from online_models.segments import FEATURES, ProfileSegmenter, profile_features
from streams.contracts import AUDIENCE_CHANGE, check_contract

_ids = itertools.count()


def live(kind: str, user: str = "u1", **extra: Any) -> bytes:
    return orjson.dumps({"event_id": f"a{next(_ids)}", "type": kind, "ts": Harness.now_ms(),
                         "room_id": "r1", "user_id": user, **extra})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ------------------------------------------------------------------ the segments model
def test_segments_separate_planted_types_and_describe_them_from_their_centroids() -> None:
    seg = ProfileSegmenter(n_segments=4, warmup=64, seed=3)
    assert seg.learn_predict_one({"spend": 1.0}) is None  # warming up: no segment yet
    for view in profile_view_stream(1, 3_000):
        seg.learn_one(profile_features(view))
    whale = {"events": 30, "rfm": {"monetary": 3000.0, "orders": 6, "frequency_30d": 6.0},
             "price": {"avg_price": 190.0, "sensitivity": 0.2},
             "live": {"watch_time_s": 3000.0, "comments": 5, "likes": 10,
                      "gift_value": 400.0, "rooms_watched": 4}}
    lurker = {"events": 20, "rfm": {"monetary": 0.0, "orders": 0},
              "price": {"sensitivity": 0.25},
              "live": {"watch_time_s": 60.0, "likes": 10, "rooms_watched": 4}}
    a, b = seg.predict_one(profile_features(whale)), seg.predict_one(profile_features(lurker))
    assert a != b
    described = seg.describe(a)
    assert described["en"].startswith("high-spend") and described["zh"].startswith("高消费")
    assert described["zh"].endswith("用户") and described["centroid"]["spend"] > 0.5
    assert seg.describe(b)["centroid"]["spend"] < 0
    # every segment is named, no two alike, and the shares add up
    labels = [s["en"] for s in seg.describe_all()]
    assert len(set(labels)) == 4 and all(labels)
    assert abs(sum(s["share"] for s in seg.describe_all()) - 1.0) < 1e-6
    assert seg.size()["centroids"] == (4 * len(FEATURES), 4 * len(FEATURES))
    assert seg.size()["buffer"][0] == 0


def test_profile_features_ignore_bad_values() -> None:
    assert profile_features({"rfm": {"monetary": float("nan"), "orders": True},
                             "price": {"avg_price": 0}, "events": "x"}) == {}
    x = profile_features(UserProfile("u1").view(0))
    assert set(x) <= set(FEATURES) and x["deal"] == 0.25


# ------------------------------------------------------------------ audience definitions
def test_audience_conditions_over_tags_segments_scores_and_profile_fields() -> None:
    audience = Audience.from_dict({"id": "vip", "when": [
        {"field": "profile.tags", "op": "contains", "value": "gifter"},
        {"field": "profile.segment", "op": "in", "value": [1, 2]},
        {"any": [{"field": "scores.purchase_propensity", "op": ">=", "value": 0.5},
                 {"field": "profile.rfm.orders", "op": ">=", "value": 3}]}]})
    view = {"tags": ["gifter"], "segment": 2, "rfm": {"orders": 0}}
    assert audience.matches({"profile": view, "scores": {"purchase_propensity": 0.7}})
    assert not audience.matches({"profile": view, "scores": {"purchase_propensity": 0.2}})
    assert audience.matches({"profile": {**view, "rfm": {"orders": 3}}, "scores": {}})
    assert not audience.matches({"profile": {**view, "segment": None}, "scores": {}})
    assert not audience.matches({"profile": {**view, "tags": []},
                                 "scores": {"purchase_propensity": 0.9}})


@pytest.mark.parametrize(("record", "why"), [
    ({"id": "a", "when": [{"field": "room.viewers", "op": ">", "value": 1}]}, "profile.*"),
    ({"id": "a", "when": []}, "at least one"),
    ({"id": "a", "when": [{"field": "profile.x", "op": "~", "value": 1}]}, "op must be"),
    ({"id": "a b", "when": [{"field": "profile.x", "op": "==", "value": 1}]}, "id may only"),
    ({"id": "a", "on": ["like"], "when": [{"field": "profile.x", "op": "==", "value": 1}]},
     "unknown keys"),
    ({"id": "a", "version": 0, "when": [{"field": "profile.x", "op": "==", "value": 1}]},
     "version"),
])
def test_bad_audience_definitions_are_refused_with_the_reason(record: dict[str, Any],
                                                              why: str) -> None:
    with pytest.raises(AudienceError, match=why.replace("*", r"\*")):
        Audience.from_dict(record)


def test_book_applies_runtime_definitions_by_version_and_lists_refusals() -> None:
    book = AudienceBook(parse_audiences(
        "audiences: [{id: a, when: [{field: profile.lifecycle, op: '==', value: new}]}]"))
    rule = [{"field": "profile.lifecycle", "op": "==", "value": "loyal"}]
    assert book.apply("b", {"id": "b", "when": rule}) == "applied"
    assert book.apply("a", {"id": "a", "version": 3, "when": rule, "enabled": False}) == \
        "applied"
    assert [a.id for a in book.active()] == ["b"]
    with pytest.raises(AudienceError):
        book.apply("c", {"id": "c", "when": [{"field": "event.type", "op": "==",
                                              "value": "like"}]})
    assert "c" in book.rejected
    assert book.apply("a", None) == "removed" and [a.id for a in book.active()] == ["a", "b"]


# ------------------------------------------------------------------ membership (pure)
def test_membership_changes_are_enter_and_exit_records_in_the_contract() -> None:
    book = AudienceBook(parse_audiences(
        "audiences: [{id: gifts, when: [{field: profile.tags, op: contains, value: gifter}]}]"))
    aud, p = Audiences(book), UserProfile("u1")
    p.events, p.updated_at = 1, 1_000
    enter = aud.on_event(p, {"tags": ["gifter"]}, None, "e1")
    assert aud.on_event(p, {"tags": ["gifter"]}, None, "e2") == []
    left = aud.on_event(p, {"tags": []}, None, "e3")
    for change in enter + left:
        check_contract(AUDIENCE_CHANGE, change)
    assert [(c["type"], c["reason"]) for c in enter + left] == [("enter", "conditions"),
                                                                ("exit", "conditions")]
    # the same event again (a redelivery) gives the same change id
    p.audiences = ()
    assert aud.on_event(p, {"tags": ["gifter"]}, None, "e1")[0]["change_id"] == \
        enter[0]["change_id"]
    # a removed audience: its members exit at their next event
    book.defaults.clear()
    book._rebuild()
    gone = aud.on_event(p, {"tags": ["gifter"]}, None, "e4")
    assert [(c["type"], c["reason"], c["audience_version"]) for c in gone] == [
        ("exit", "removed", 0)]


def test_segment_is_assigned_at_first_event_then_every_n_events_or_minutes() -> None:
    seg = ProfileSegmenter(n_segments=2, warmup=2, seed=1)
    seg.learn_one({"spend": 1.0})
    seg.learn_one({"spend": 9.0})
    aud = Audiences(AudienceBook(), seg, every_events=5, every_ms=60_000)
    p = UserProfile("u1")
    learned = []
    for n in range(1, 13):
        p.events, p.updated_at = n, 1_000 * n
        aud.on_event(p, {"rfm": {"monetary": 10.0 * n}}, None, f"e{n}")
        learned.append(seg.learned)
    assert p.segment in (0, 1)
    # learned at the first event, then at events 5 and 10 only (10 s of event time apart)
    assert [b - a for a, b in itertools.pairwise([2, *learned])] == \
        [1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    p.events, p.updated_at = 13, 80_000  # 70 s after the last assignment
    aud.on_event(p, {}, None, "e13")
    assert seg.learned == 6 and p.segment_ts == 80_000


# ------------------------------------------------------------------ the user pipeline
def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(kafka_url="memory", data_dir=str(tmp_path), partitions=2, redis_url="",
                    clickhouse_url="", **extra)


def test_pipeline_emits_enter_on_the_audience_changes_topic_and_exit_on_opt_out(
        tmp_path: Path) -> None:
    h = Harness(_settings(tmp_path))
    run(h.feed("live-events", 0, [live("join"), *(live("gift", amount=52.0)
                                                  for _ in range(3))]))
    run(h.forward_activity())
    changes = h.sent(h.names.audience_changes)
    assert [(c["type"], c["audience_id"], c["user_id"]) for c in changes] == [
        ("enter", "gift-givers", "u1")]
    raw = [s for s in h.iter_sent() if s.topic == h.names.audience_changes]
    assert raw[0].key == b"u1"
    profile = h.profiles.get("u1")
    assert profile.audiences == ("gift-givers",)
    report = h.audiences.report_one("gift-givers", 0)
    assert report["size"] == 1 and report["sample"] == ["1u"]
    assert report["composition"][0]["members"] == 1
    # opted out: exits, then belongs to nothing whatever it does
    profile.set_consent(False, Harness.now_ms())
    run(h.feed("live-events", 0, [live("gift", amount=52.0)]))
    run(h.forward_activity())
    changes = h.sent(h.names.audience_changes)
    assert [(c["type"], c["reason"]) for c in changes[1:]] == [("exit", "consent")]
    assert profile.audiences == () and profile.segment is None
    assert h.audiences.report_one("gift-givers", 0)["size"] == 0


def test_campaign_conditions_may_reference_audiences(tmp_path: Path) -> None:
    path = tmp_path / "campaigns.yaml"
    path.write_text("""
campaigns:
  - id: thank-gifters
    on: [like]
    when:
      - {field: profile.audiences, op: contains, value: gift-givers, reason: gifter}
      - {field: profile.segment, op: exists, value: true}
    action: thank_you
    holdout: 0
""")
    h = Harness(_settings(tmp_path, campaigns_file=str(path)))
    h.models.segments = ProfileSegmenter(n_segments=2, warmup=2, seed=1)
    run(h.feed("live-events", 0, [live("join", user="u2"), live("like", user="u2")]))
    run(h.forward_activity())
    assert h.sent(h.names.promo_triggers) == []  # not in the audience yet
    run(h.feed("live-events", 0, [*(live("gift", user="u2", amount=52.0) for _ in range(3)),
                                  live("like", user="u2")]))
    run(h.forward_activity())
    triggers = h.sent(h.names.promo_triggers)
    assert [(t["campaign_id"], t["reasons"]) for t in triggers] == [("thank-gifters",
                                                                      ["gifter"])]


def test_a_discount_by_segment_is_refused_by_the_fairness_guard() -> None:
    with pytest.raises(CampaignError, match=r"profile\.segment"):
        Campaign.from_dict({"id": "c", "on": ["like"], "action": "coupon",
                            "offer": {"discount_pct": 10},
                            "when": [{"field": "profile.segment", "op": "==", "value": 2}]})


def test_a_discount_through_an_audience_is_refused_by_the_fairness_guard() -> None:
    # the audience's own conditions may select on spend and change at run time
    with pytest.raises(CampaignError, match=r"profile\.audiences"):
        Campaign.from_dict({"id": "c", "on": ["like"], "action": "coupon",
                            "offer": {"discount_pct": 10},
                            "when": [{"field": "profile.audiences", "op": "contains",
                                      "value": "big-spenders"}]})
    Campaign.from_dict({"id": "c", "on": ["like"], "action": "coupon",   # with a reason
                        "offer": {"discount_pct": 10}, "allow_personalised_pricing": True,
                        "justification": "loyalty tier agreed with the legal team",
                        "when": [{"field": "profile.audiences", "op": "contains",
                                  "value": "big-spenders"}]})


def test_audience_index_is_bounded_and_forgets_erased_users() -> None:
    book = AudienceBook(parse_audiences(
        "audiences: [{id: all, when: [{field: profile.events, op: '>=', value: 0}]}]"))
    aud = Audiences(book)
    rng = random.Random(1)
    for n in range(50):
        p = UserProfile(f"u{n}")
        p.events, p.updated_at = 1, rng.randrange(1, 10**6)
        aud.on_event(p, {"events": 1}, None, f"e{n}")
    assert aud.report_one("all", 0)["size"] == 50
    assert aud.forget("u7") == 1 and aud.report_one("all", 0)["size"] == 49


def test_an_erased_member_exits_every_audience(tmp_path: Path) -> None:
    from tests.unit.test_privacy import erasure_harness, erasure_records, request

    h, eraser = erasure_harness(tmp_path)
    eraser.audiences = h.audiences  # as agents.users.pipeline.register wires it
    run(h.feed("live-events", 0, [live("join", user="gone"),
                                  *(live("gift", user="gone", amount=52.0) for _ in range(3))]))
    run(h.forward_activity())
    assert h.audiences.report_one("gift-givers", 0)["size"] == 1
    (message,) = erasure_records(h, [("gone", request("gone"))])
    run(eraser.on_request(message))
    changes = h.sent(h.names.audience_changes)
    assert [(c["type"], c["user_id"], c["reason"]) for c in changes] == [
        ("enter", "gone", "conditions"), ("exit", "gone", "erased")]
    check_contract(AUDIENCE_CHANGE, changes[-1])
    assert h.audiences.report_one("gift-givers", 0)["size"] == 0
