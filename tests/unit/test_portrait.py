"""The audience portrait (agents.rooms.portrait): pure counting, the room state's use of it,
and the whole hop on the harness (room -> user pipeline -> room-audience -> room insight)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import jsonschema
import orjson

from agents.rooms.portrait import (
    FOLLOW_MINUTES,
    NEXT_ROOMS_KEPT,
    AudiencePortrait,
    viewer_summary,
)
from agents.rooms.state import RoomState, mentions
from agents.testing import Harness
from agents.users.pipeline import came_from_room
from agents.users.profile import UserProfile
from streams.contracts import ROOM_INSIGHT, LiveEvent, as_dict, check_contract, json_schema
from streams.outputs import partition_for

_ids = itertools.count()


def summary(lifecycle: str = "new", tags: tuple[str, ...] = (), category: str | None = None,
            brand: str | None = None, band: str | None = None,
            intent: str = "unknown") -> dict[str, Any]:
    return {"l": lifecycle, "t": list(tags), "c": category, "b": brand, "p": band,
            "i": intent}


def test_counts_follow_replacements_and_departures() -> None:
    p = AudiencePortrait()
    p.set("u1", summary("new", ("bargain_hunter",), "beauty", "Lumaki", "mid", "low"))
    p.set("u2", summary("loyal", ("bargain_hunter", "big_spender"), "beauty", None, "premium",
                        "high"))
    p.set("u1", summary("new", (), "home", None, "mid", "medium"))  # replaced, not added
    v = p.view(viewers=3, returning=1, unique_viewers=5, now_ms=120_000)
    assert v["profiled"] == 2
    assert {r["key"]: r["count"] for r in v["top_categories"]} == {"beauty": 1, "home": 1}
    assert v["segments"]["tags"] == [{"key": "bargain_hunter", "count": 1, "share": 0.5},
                                     {"key": "big_spender", "count": 1, "share": 0.5}]
    # the third viewer has no summary yet: unknown intent
    assert v["intent"] == {"high": 1, "medium": 1, "low": 0, "unknown": 1}
    assert v["new_vs_returning"] == {"new": 2, "returning": 1}
    p.drop("u2")
    p.drop("u2")  # twice is harmless
    v = p.view(1, 0, 5, 120_000)
    assert v["top_categories"] == [{"key": "home", "count": 1, "share": 1.0}]
    assert v["segments"]["tags"] == [] and v["price_bands"][0]["key"] == "mid"
    assert all(not c for c in p.counts["t"].values())


def test_follows_per_minute_and_memory_bounds() -> None:
    p = AudiencePortrait()
    for minute in range(30):
        for _ in range(minute % 3 + 1):
            p.event("follow", "u", minute * 60_000 + 5_000)
    assert len(p.follows) == FOLLOW_MINUTES
    v = p.view(0, 0, 0, 29 * 60_000 + 10_000)
    assert v["follows"]["per_min"] == 29 % 3 + 1 and v["follows"]["prev_min"] == 28 % 3 + 1
    assert [m["follows"] for m in v["follows"]["by_minute"]] == [
        m % 3 + 1 for m in range(20, 30)]
    for i in range(5 * NEXT_ROOMS_KEPT):
        p.moved(f"r{i % 100}")
    p.moved("hot")
    p.moved("hot")
    assert len(p.next_rooms.rows) <= NEXT_ROOMS_KEPT
    assert v["viewer_to_buyer"] == {"buyers": 0, "viewers": 0, "rate": 0.0}


def test_buyer_rate_counts_distinct_buyers() -> None:
    p = AudiencePortrait()
    for user in ("u1", "u1", "u2"):
        p.event("purchase", user, 1_000)
    assert p.view(0, 0, 10, 1_000)["viewer_to_buyer"] == {"buyers": 2, "viewers": 10,
                                                           "rate": 0.2}


def test_summary_of_a_profile_view_with_and_without_scores() -> None:
    profile = UserProfile("u1")
    catalog = {"i1": {"item_id": "i1", "category": "beauty", "brand": "Lumaki",
                      "price": 129.9}}.get
    profile.apply(LiveEvent("e1", "join", 1_000, "r1", "u1"), catalog)
    profile.apply(LiveEvent("e2", "add_to_cart", 2_000, "r1", "u1", item_id="i1"), catalog)
    s = viewer_summary(profile.view(2_000), None)
    assert s == {"l": "new", "t": s["t"], "c": "beauty", "b": "Lumaki", "p": "mid",
                 "i": "unknown"}
    assert viewer_summary(profile.view(2_000), {"purchase_propensity": 0.9})["i"] == "high"


def test_room_keeps_summaries_of_present_viewers_only_and_forgets_them() -> None:
    room = RoomState("r1")
    room.apply(LiveEvent("e1", "join", 1_000, "r1", "u1"))
    assert room.viewer_summary("u1", summary(category="beauty"))
    assert not room.viewer_summary("u2", summary())  # never joined: not kept
    assert room.names("u1") and mentions(room.to_dict(), "u1")
    restored = RoomState.from_dict(orjson.loads(orjson.dumps(room.to_dict())))
    assert restored.insight(2_000).portrait["top_categories"][0]["key"] == "beauty"
    assert restored.forget_user("u1")
    assert "u1" not in orjson.dumps(restored.to_dict()).decode()
    assert restored.insight(2_000).portrait["profiled"] == 0
    room.apply(LiveEvent("e2", "leave", 3_000, "r1", "u1"))  # session over: summary gone
    assert room.portrait.summaries == {} and not mentions(room.to_dict(), "u1")


def test_came_from_room_after_a_switch_without_a_leave() -> None:
    p = UserProfile("u1")
    p.apply(LiveEvent("e1", "join", 0, "r1", "u1"))
    p.apply(LiveEvent("e2", "like", 20_000, "r1", "u1"))
    assert came_from_room(p, LiveEvent("e3", "join", 30_000, "r2", "u1")) == "r1"
    assert came_from_room(p, LiveEvent("e3", "like", 30_000, "r1", "u1")) is None
    assert came_from_room(p, LiveEvent("e3", "leave", 30_000, "r2", "u1")) is None
    assert came_from_room(UserProfile("u2"), LiveEvent("e4", "join", 0, "r2", "u2")) is None
    # a late event of another room (from before this watch) is not a move
    assert came_from_room(p, LiveEvent("e5", "join", -5_000, "r3", "u1")) is None


# ---------------------------------------------------------------------- the harness
def live(kind: str, ts: int, room: str = "r1", user: str = "u1", **extra: Any) -> bytes:
    return orjson.dumps({"event_id": f"p{next(_ids)}", "type": kind, "ts": ts,
                         "room_id": room, "user_id": user, **extra})


def test_room_insight_carries_the_portrait_through_the_pipelines() -> None:
    h = Harness()
    run = asyncio.run
    catalog = [orjson.dumps({"item_id": "i1", "ts": Harness.now_ms(), "category": "beauty",
                             "price": 129.9, "in_stock": True, "brand": "Lumaki"})]
    run(h.feed("catalog", 0, catalog, keys=[b"i1"]))
    assert "i1" in h.catalog
    parts = h.settings.partitions
    p1, p2 = partition_for(b"r1", parts), partition_for(b"r2", parts)
    t = Harness.now_ms()
    run(h.feed("live-events", p1, [
        live("join", t, user="u1"), live("join", t + 100, user="u2"),
        live("join", t + 200, user="u3"),
        live("product_click", t + 1_000, user="u1", item_id="i1"),
        live("add_to_cart", t + 2_000, user="u1", item_id="i1"),
        live("purchase", t + 3_000, user="u1", item_id="i1", amount=129.9),
        live("follow", t + 4_000, user="u2"),
        live("leave", t + 5_000, user="u3"),
    ]))
    run(h.forward_activity())
    run(h.feed("live-events", p2, [live("join", t + 65_000, room="r2", user="u3")]))
    run(h.forward_activity())
    assert run(h.forward_audience()) >= 2
    insight = h.rooms.pipeline.insight_of("r1") or {}
    check_contract(ROOM_INSIGHT, insight)
    jsonschema.validate(orjson.loads(orjson.dumps(insight)), json_schema(ROOM_INSIGHT))
    portrait = insight["portrait"]
    assert insight["viewers"] == 2 and portrait["profiled"] == 2  # u3 left: not counted
    assert portrait["top_categories"] == [{"key": "beauty", "count": 1, "share": 0.5}]
    assert portrait["price_bands"][0]["key"] == "mid"
    assert sum(portrait["intent"].values()) == 2
    assert portrait["new_vs_returning"] == {"new": 2, "returning": 0}
    assert portrait["viewer_to_buyer"] == {"buyers": 1, "viewers": 3, "rate": 0.3333}
    assert portrait["follows"]["per_min"] + portrait["follows"]["prev_min"] == 1
    assert portrait["next_rooms"] == [{"room_id": "r2", "count": 1, "share": 1.0}]
    r2 = h.rooms.pipeline.insight_of("r2") or {}
    assert r2["portrait"]["profiled"] == 1 and r2["portrait"]["next_rooms"] == []
    # erasure: the room no longer names the user, the portrait forgets their summary
    h.rooms.pipeline.forget_user("u1", 0, 0)
    after = as_dict(h.rooms.pipeline.rooms["r1"].state.insight(t + 70_000))
    assert after["portrait"]["profiled"] == 1 and "u1" not in orjson.dumps(after).decode()


def test_bad_room_audience_records_are_dead_lettered() -> None:
    h = Harness()
    run = asyncio.run
    run(h.feed("live-events", 0, [live("join", Harness.now_ms())]))
    run(h.feed(h.names.room_audience, 0, [b"{", b'[{"k": "what", "room_id": "r1"}]',
                                          b'[{"k": "next", "room_id": "r1", "next": "r9"}]',
                                          b'[{"k": "viewer", "room_id": "nowhere",'
                                          b' "user_id": "u1", "s": {}}]']))
    assert len(h.sent(h.names.dead_letter)) == 2
    assert h.rooms.pipeline.rooms["r1"].state.portrait.next_rooms.get("r9") == {"moves": 1.0}
    assert "nowhere" not in h.rooms.pipeline.rooms
