"""Pin next (agents.rooms.pin_next): the pure ranking, and a room's insight on the harness
after viewers with known affinities join."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import jsonschema
import orjson

from agents.rooms.pin_next import (
    INTEREST_REFRESH_MS,
    PRIOR_PROPENSITY,
    TOP_K,
    interest_summary,
    needs_refresh,
    price_fit,
    rank,
)
from agents.testing import Harness
from streams.contracts import ROOM_INSIGHT, check_contract, json_schema

_ids = itertools.count()
FANS = 10


def catalog_item(item_id: str, category: str, price: float, brand: str = "Acme",
                 in_stock: bool = True) -> dict[str, Any]:
    return {"item_id": item_id, "category": category, "price": price, "brand": brand,
            "in_stock": in_stock, "title": f"{category} {item_id}"}


def viewer(cats: dict[str, float], price: float | None = None, q: float | None = 0.2,
           brands: dict[str, float] | None = None) -> dict[str, Any]:
    return {"c": cats, "b": brands or {}, "p": price, "q": q, "t": 0}


def test_rank_follows_the_audience_category_and_price() -> None:
    items = [catalog_item("lip", "beauty", 129.0), catalog_item("nuts", "snacks", 39.0),
             catalog_item("serum", "skincare", 189.0)]
    audience = [viewer({"beauty": 1.0}, 120.0)] * 8 + [viewer({"snacks": 1.0}, 40.0)] * 2
    top = rank(items, audience)
    assert [row["item_id"] for row in top] == ["lip", "nuts", "serum"]
    assert top[0]["viewers_into"] == 8 and top[0]["price_fits"] == 8
    assert top[0]["reason"]["en"] == "8 viewers into beauty, price fits 8"
    assert "美妆" in top[0]["reason"]["zh"] and "8" in top[0]["reason"]["zh"]
    # the same fans, now all snack lovers: the ranking turns
    flipped = rank(items, [viewer({"snacks": 1.0}, 40.0)] * 10)
    assert flipped[0]["item_id"] == "nuts"


def test_rank_leaves_out_sold_out_items_and_keeps_top_k() -> None:
    items = [catalog_item(f"i{n}", "beauty", 100.0 + n) for n in range(6)]
    items.append(catalog_item("gone", "beauty", 110.0, in_stock=False))
    top = rank(items, [viewer({"beauty": 1.0}, 110.0)])
    assert len(top) == TOP_K and "gone" not in {row["item_id"] for row in top}


def test_price_fit_prefers_the_viewers_price_and_propensity_scales() -> None:
    cheap, dear = catalog_item("a", "bags", 60.0), catalog_item("b", "bags", 600.0)
    thrifty = [viewer({"bags": 1.0}, 55.0)] * 3
    assert rank([cheap, dear], thrifty)[0]["item_id"] == "a"
    assert price_fit(600.0, 55.0) < 0.01 < price_fit(60.0, 55.0)
    keen, idle = viewer({"bags": 1.0}, 60.0, q=0.8), viewer({"bags": 1.0}, 60.0, q=0.1)
    assert rank([cheap], [keen])[0]["expected_gmv"] == 8 * rank([cheap], [idle])[0][
        "expected_gmv"]
    # no summary at all: the prior propensity, a small affinity, a neutral price fit
    assert rank([cheap], [{}])[0]["expected_gmv"] > 0
    assert rank([cheap], [viewer({}, q=None)])[0]["expected_gmv"] == rank([cheap], [{}])[0][
        "expected_gmv"] and PRIOR_PROPENSITY > 0


def test_brand_fans_count_and_lift() -> None:
    a = catalog_item("a", "shoes", 200.0, brand="Zoka")
    b = catalog_item("b", "shoes", 200.0, brand="Mira")
    fans = [viewer({"shoes": 1.0}, 200.0, brands={"Mira": 1.0})] * 4
    top = rank([a, b], fans)
    assert top[0]["item_id"] == "b" and top[0]["brand_fans"] == 4
    assert top[0]["reason"]["en"].endswith("4 like Mira")


def test_interest_summary_and_its_write_throttle() -> None:
    view = {"affinities": {"categories": [{"name": "toys", "score": 1.0},
                                          {"name": "books", "score": 3.0}],
                           "brands": [{"name": "Kiro", "score": 2.0}]},
            "price": {"avg_price": None}}
    first = interest_summary(view, None, 1_000)
    assert first == {"c": {"books": 0.75, "toys": 0.25}, "b": {"Kiro": 1.0}, "p": None,
                     "q": None, "t": 1_000}
    assert needs_refresh(None, first)
    assert not needs_refresh(first, {**first, "t": 1_000 + INTEREST_REFRESH_MS - 1})
    assert needs_refresh(first, {**first, "t": 1_000 + INTEREST_REFRESH_MS})
    assert needs_refresh(first, {**first, "c": {"toys": 1.0}, "t": 1_001})  # top changed


# ---------------------------------------------------------------- on the harness

def live(kind: str, user: str, room: str = "r1", **extra: Any) -> bytes:
    return orjson.dumps({"event_id": f"pe{next(_ids)}", "type": kind, "ts": Harness.now_ms(),
                         "room_id": room, "user_id": user, **extra})


def click(kind: str, user: str, item: str) -> bytes:
    return orjson.dumps({"event_id": f"pc{next(_ids)}", "type": kind, "ts": Harness.now_ms(),
                         "user_id": user, "session_id": f"s-{user}", "item_id": item})


def test_room_insight_carries_pin_next_after_viewers_with_known_affinities_join() -> None:
    h = Harness()

    async def scenario() -> dict[str, Any]:
        specs = (("lip", "beauty", 129.9, "Lumaki"), ("nuts", "snacks", 39.9, "Kiro"),
                 ("tv", "electronics", 899.0, "Vano"))
        await h.feed("catalog", 0, [orjson.dumps({**catalog_item(*spec), "ts": h.now_ms()})
                                    for spec in specs])
        fans = [f"u{n}" for n in range(FANS)]
        # storefront history: beauty fans at about the lipstick's price
        for user in fans:
            await h.feed("clicks", 0, [click("view", user, "lip"), click("click", user, "lip"),
                                       click("add_to_cart", user, "lip")])
        # the host pins the lipstick, then the snacks; one viewer clicks the TV; the fans join
        await h.feed("live-events", 0, [live("product_pin", "host", item_id="lip"),
                                        live("product_pin", "host", item_id="nuts"),
                                        live("join", "u99"),
                                        live("product_click", "u99", item_id="tv"),
                                        *[live("join", user) for user in fans]])
        await h.forward_activity()
        pipeline = h.rooms.pipeline
        payload, _ = pipeline.emit(pipeline.rooms["r1"], time.monotonic(), h.now_ms())
        return orjson.loads(payload)

    insight = asyncio.run(scenario())
    assert set(h.interests.table) == {f"u{n}" for n in range(FANS)} | {"u99"}
    assert h.interests.get("u0")["c"] == {"beauty": 1.0}
    top = insight["pin_next"]
    assert top[0]["item_id"] == "lip"
    assert top[0]["viewers_into"] == FANS and top[0]["price_fits"] == FANS
    assert top[0]["reason"]["en"].startswith("10 viewers into beauty, price fits 10")
    assert top[0]["reason"]["zh"].startswith("10 位观众偏好美妆")
    # the one TV fan's 899 comes second, ahead of the snacks nobody here is into
    assert [row["item_id"] for row in top] == ["lip", "tv", "nuts"]
    assert top[1]["reason"]["en"].startswith("1 viewer into electronics")
    # the contract accepts it, and the API serves the emitted insight
    check_contract(ROOM_INSIGHT, insight)
    jsonschema.Draft202012Validator(json_schema(ROOM_INSIGHT)).validate(insight)
    assert h.rooms.pipeline.insight_of("r1")["pin_next"] == top


def test_erasure_removes_the_viewer_summary_and_no_consent_publishes_none() -> None:
    from agents.users.erasure import Eraser

    h = Harness()
    eraser = Eraser(h.engine, h.profiles, h.models, h.promo, h.anomalies)
    eraser.interests = h.interests  # as agents.users.pipeline.register wires it
    asyncio.run(h.feed("live-events", 0, [live("join", "gone"), live("join", "kept")]))
    asyncio.run(h.forward_activity())
    assert {"gone", "kept"} <= set(h.interests.table)
    assert eraser.forget("gone", 0)["viewer_interest"] == 1
    assert "gone" not in h.interests.table and "kept" in h.interests.table
    assert h.interests.get("gone") is None
    # a viewer who withdrew consent: no summary written (counted with the prior only)
    h.profiles.get("kept").set_consent(False, h.now_ms())
    h.interests.delete("kept", 0)
    asyncio.run(h.feed("live-events", 0, [live("like", "kept")]))
    asyncio.run(h.forward_activity())
    assert "kept" not in h.interests.table
