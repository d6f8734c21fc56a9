"""Online user profile (agents.users.profile): RFM, decay, caps, tags, lifecycle, watch time,
size."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import orjson
import pytest

from agents.users import profile as profile_module
from agents.users.profile import (
    AFFINITY_HALF_LIFE_MS,
    DAY_MS,
    EVENT_KEY_CHARS,
    FREQUENCY_TIME_CONSTANT_MS,
    MAX_BRANDS,
    MAX_CATEGORIES,
    MAX_RECENT_ITEMS,
    MAX_RECENT_ROOMS,
    MAX_SOURCES,
    RECENT_EVENT_IDS,
    SESSION_GAP_MS,
    WATCH_TIMEOUT_MS,
    UserProfile,
    event_key,
    fold_profile,
)
from streams.contracts import ClickEvent, LiveEvent
from streams.simulator import Simulator

T0 = 1_700_000_000_000
MIN = 60_000
_ids = itertools.count()

CATALOG: dict[str, dict[str, Any]] = {
    "lip": {"item_id": "lip", "category": "beauty", "price": 129.9, "brand": "Lumaki",
            "tags": ["new"]},
    "cream": {"item_id": "cream", "category": "skincare", "price": 189.0, "brand": "Vaso",
              "tags": ["premium"]},
    "nuts": {"item_id": "nuts", "category": "snacks", "price": 19.9, "brand": "Kiro",
             "tags": ["discount", "bundle"]},
    "tv": {"item_id": "tv", "category": "electronics", "price": 3200.0, "brand": "Zomi",
           "tags": ["premium"]},
}


def live(kind: str, ts: int, room: str = "room-1", user: str = "u1", **kw: Any) -> LiveEvent:
    return LiveEvent(f"e{next(_ids)}", kind, ts, room, user, **kw)


def click(kind: str, ts: int, user: str = "u1", session: str = "s1", **kw: Any) -> ClickEvent:
    item = kw.get("item_id")
    if item in CATALOG and kind != "search":
        kw.setdefault("category", CATALOG[item]["category"])
        kw.setdefault("price", CATALOG[item]["price"])
    return ClickEvent(f"e{next(_ids)}", kind, ts, user, session, **kw)


def fold(events: list[LiveEvent | ClickEvent], user: str = "u1") -> UserProfile:
    profile = UserProfile(user)
    for event in events:
        profile.apply(event, CATALOG.get)
    return profile


# ---------------------------------------------------------------------- RFM
def test_rfm_after_purchases() -> None:
    p = fold([
        click("purchase", T0, item_id="lip", quantity=2),                 # 259.8
        live("purchase", T0 + 10 * MIN, item_id="cream", amount=378.0, quantity=2),
        click("view", T0 + 20 * MIN, item_id="nuts"),
        click("purchase", T0 + 30 * MIN, item_id="nuts"),                 # 19.9
        live("gift", T0 + 40 * MIN, amount=520.0),                        # not spend
    ])
    now = T0 + 60 * MIN
    rfm = p.view(now)["rfm"]
    assert rfm["orders"] == 3
    assert rfm["monetary"] == pytest.approx(259.8 + 378.0 + 19.9)
    assert rfm["recency_s"] == pytest.approx(30 * 60)
    expected_frequency = sum(math.exp(-(now - ts) / FREQUENCY_TIME_CONSTANT_MS)
                             for ts in (T0, T0 + 10 * MIN, T0 + 30 * MIN))
    assert rfm["frequency_30d"] == pytest.approx(expected_frequency, abs=0.02)
    assert (rfm["r_score"], rfm["f_score"], rfm["m_score"]) == (5, 3, 3)

    later = p.view(T0 + 45 * DAY_MS)["rfm"]  # 45 days on: recency 31-90 d, orders decayed
    assert later["r_score"] == 3
    assert later["frequency_30d"] == pytest.approx(3 * math.exp(-1.5), abs=0.02)
    assert later["f_score"] == 2
    assert later["monetary"] == rfm["monetary"]


def test_no_orders_means_lowest_rfm_scores() -> None:
    rfm = fold([click("view", T0, item_id="lip")]).view(T0)["rfm"]
    assert rfm["recency_s"] is None
    assert (rfm["orders"], rfm["monetary"]) == (0, 0.0)
    assert (rfm["r_score"], rfm["f_score"], rfm["m_score"]) == (1, 1, 1)


# ---------------------------------------------------------------------- decay
def test_affinity_halves_after_one_half_life() -> None:
    p = fold([click("add_to_cart", T0, item_id="lip", quantity=1)])
    first = p.view(T0)["affinities"]["categories"][0]
    assert first == {"name": "beauty", "score": 3.0}
    later = p.view(T0 + AFFINITY_HALF_LIFE_MS)["affinities"]["categories"][0]
    assert later["score"] == pytest.approx(1.5, abs=0.001)
    # folding a new event one half-life later decays the stored score too (lazy rebase)
    p.apply(click("view", T0 + AFFINITY_HALF_LIFE_MS, item_id="nuts"), CATALOG.get)
    assert p.categories["beauty"] == pytest.approx(1.5, abs=0.01)
    assert p.categories["snacks"] == pytest.approx(1.0, abs=0.01)
    brands = p.view(T0 + AFFINITY_HALF_LIFE_MS)["affinities"]["brands"]
    assert [b["name"] for b in brands] == ["Lumaki", "Kiro"]
    assert brands[0]["score"] == pytest.approx(1.5, abs=0.01)


def test_fully_decayed_entries_leave_the_map() -> None:
    p = fold([click("view", T0, item_id="lip")])
    p.apply(click("view", T0 + 10 * AFFINITY_HALF_LIFE_MS, item_id="nuts"), CATALOG.get)
    assert set(p.categories) == {"snacks"}  # 1 / 2**10 < 0.01: dropped


# ---------------------------------------------------------------------- caps
def test_every_list_and_map_is_capped() -> None:
    catalog = {f"i{n}": {"category": f"cat{n}", "brand": f"brand{n}", "price": 10.0 + n,
                         "tags": []} for n in range(60)}
    p = UserProfile("u1")
    for n in range(60):
        ts = T0 + n * 1000
        p.apply_click(click("view", ts, item_id=f"i{n}"), catalog.get)
        p.apply_live(live("join", ts, room=f"room-{n}"))
    assert len(p.categories) == MAX_CATEGORIES
    assert len(p.brands) == MAX_BRANDS
    assert len(p.recent_items) == MAX_RECENT_ITEMS
    assert len(p.rooms) == MAX_RECENT_ROOMS
    view = p.view(T0 + 60_000)
    assert view["session"]["recent_items"] == [f"i{n}" for n in range(59, 49, -1)]
    assert view["live"]["rooms_watched"] == 60
    assert view["live"]["recent_rooms"][0] == "room-59"
    assert len(view["affinities"]["categories"]) == 5
    assert "cat59" in p.categories  # a new interest always gets in


def test_rooms_watched_counts_distinct_rooms() -> None:
    p = fold([live("join", T0, room="room-1"), live("leave", T0 + MIN, room="room-1"),
              live("join", T0 + 2 * MIN, room="room-2"), live("join", T0 + 3 * MIN,
                                                              room="room-1")])
    assert p.view(T0 + 3 * MIN)["live"]["rooms_watched"] == 2


# ---------------------------------------------------------------------- tags
def tags_of(events: list[LiveEvent | ClickEvent], now: int) -> list[str]:
    return fold(events).view(now)["tags"]


def test_plain_new_user_has_only_the_new_tag() -> None:
    assert tags_of([click("view", T0, item_id="lip")], T0) == ["new"]
    assert tags_of([click("view", T0, item_id="lip")], T0 + 8 * DAY_MS) == []


def test_high_intent_cart_without_purchase() -> None:
    cart = [click("view", T0, item_id="lip"), click("add_to_cart", T0 + MIN, item_id="lip",
                                                   quantity=1)]
    assert "high_intent" in tags_of(cart, T0 + 2 * MIN)
    bought = [*cart, click("purchase", T0 + 2 * MIN, item_id="lip", quantity=1)]
    assert "high_intent" not in tags_of(bought, T0 + 3 * MIN)
    # the session is over after the gap: intent is gone
    assert "high_intent" not in tags_of(cart, T0 + MIN + SESSION_GAP_MS + 1)


def test_high_intent_repeated_views_of_one_item() -> None:
    views = [click("view", T0 + n * MIN, item_id="cream") for n in range(3)]
    assert "high_intent" in tags_of(views, T0 + 3 * MIN)
    assert "high_intent" not in tags_of(views[:2], T0 + 3 * MIN)
    spread = [click("view", T0, item_id="cream"), click("view", T0 + MIN, item_id="lip"),
              click("view", T0 + 2 * MIN, item_id="nuts")]
    assert "high_intent" not in tags_of(spread, T0 + 3 * MIN)
    bought = [*views, click("add_to_cart", T0 + 4 * MIN, item_id="cream", quantity=1),
              click("purchase", T0 + 5 * MIN, item_id="cream", quantity=1)]
    assert "high_intent" not in tags_of(bought, T0 + 6 * MIN)


def test_bargain_hunter_needs_deals_and_evidence() -> None:
    deals = [click("view", T0 + n * MIN, item_id="nuts") for n in range(8)]
    p = fold(deals)
    assert "bargain_hunter" in p.view(T0 + 8 * MIN)["tags"]
    assert p.view(T0 + 8 * MIN)["price"]["sensitivity"] > 0.7
    full_price = [click("view", T0 + n * MIN, item_id="cream") for n in range(8)]
    q = fold(full_price)
    assert "bargain_hunter" not in q.view(T0 + 8 * MIN)["tags"]
    assert q.view(T0 + 8 * MIN)["price"]["sensitivity"] < 0.15
    few = fold(deals[:2])  # too little evidence, even if all deals
    assert "bargain_hunter" not in few.view(T0 + 8 * MIN)["tags"]
    searches = [click("search", T0 + n * MIN, query=q) for n, q in
                enumerate(["coupon lipstick", "优惠券", "cheap sneakers", "打折 面霜", "sale",
                           "deal of the day"])]
    assert "bargain_hunter" in tags_of(searches, T0 + 7 * MIN)
    comments = [live("comment", T0 + n * MIN, text=t) for n, t in
                enumerate(["有优惠券吗", "太贵了吧", "how much?", "is there a discount code?",
                           "best deal today", "性价比超高"])]
    assert "bargain_hunter" in tags_of(comments, T0 + 7 * MIN)
    assert "bargain_hunter" not in tags_of(
        [live("comment", T0 + n * MIN, text="so pretty") for n in range(6)], T0 + 7 * MIN)


def test_loyal_buyer_and_big_spender() -> None:
    orders = [click("purchase", T0 + n * DAY_MS, item_id="lip", quantity=1) for n in range(3)]
    assert "loyal_buyer" in tags_of(orders, T0 + 3 * DAY_MS)
    assert "loyal_buyer" not in tags_of(orders[:2], T0 + 3 * DAY_MS)
    assert "loyal_buyer" not in tags_of(orders, T0 + 60 * DAY_MS)  # frequency decayed
    assert "big_spender" not in tags_of(orders, T0 + 3 * DAY_MS)
    assert "big_spender" in tags_of([click("purchase", T0, item_id="tv", quantity=1)], T0)
    assert "big_spender" not in tags_of([live("purchase", T0, item_id="tv", amount=2999.0)],
                                        T0)


def test_dormant_after_thirty_days() -> None:
    events = [click("view", T0, item_id="lip")]
    assert "dormant" in tags_of(events, T0 + 30 * DAY_MS)
    assert "dormant" not in tags_of(events, T0 + 29 * DAY_MS)


def test_gifter_and_engaged_viewer() -> None:
    assert "gifter" in tags_of([live("gift", T0 + n, amount=1.0) for n in range(3)], T0 + 10)
    assert "gifter" not in tags_of([live("gift", T0 + n, amount=5.0) for n in range(2)], T0 + 9)
    assert "gifter" in tags_of([live("gift", T0, amount=520.0)], T0)
    # 31 minutes in a room, active every 4 minutes, then a leave
    watch = [live("join", T0)] + [live("like", T0 + n * 4 * MIN) for n in range(1, 8)]
    watch.append(live("leave", T0 + 31 * MIN))
    assert "engaged_viewer" in tags_of(watch, T0 + 31 * MIN)
    assert "engaged_viewer" not in tags_of(watch[:3], T0 + 31 * MIN)
    chat = [live("comment", T0 + n * 1000, text="好喜欢") for n in range(10)]
    assert "engaged_viewer" in tags_of(chat, T0 + 10_000)
    assert "engaged_viewer" not in tags_of(chat[:9], T0 + 10_000)


# ---------------------------------------------------------------------- lifecycle
def test_lifecycle_transitions() -> None:
    p = UserProfile("u1")
    p.apply(click("view", T0, item_id="lip"), CATALOG.get)
    assert p.lifecycle(T0) == "new"
    assert p.lifecycle(T0 + 8 * DAY_MS) == "active"
    # four sessions in the second week: engaged
    for day in range(8, 12):
        p.apply(click("view", T0 + day * DAY_MS, item_id="lip"), CATALOG.get)
    assert p.lifecycle(T0 + 12 * DAY_MS) == "engaged"
    for day in range(12, 15):  # three orders within days: loyal
        p.apply(click("purchase", T0 + day * DAY_MS, item_id="cream", quantity=1),
                CATALOG.get)
    assert p.lifecycle(T0 + 15 * DAY_MS) == "loyal"
    assert p.lifecycle(T0 + (14 + 14) * DAY_MS) == "at_risk"  # 14 days idle
    assert p.lifecycle(T0 + (14 + 30) * DAY_MS) == "dormant"
    assert "dormant" in p.view(T0 + 44 * DAY_MS)["tags"]


def test_buyer_without_orders_for_sixty_days_is_at_risk() -> None:
    p = fold([click("purchase", T0, item_id="lip", quantity=1)])
    for day in range(1, 62, 5):  # keeps browsing, never buys again
        p.apply(click("view", T0 + day * DAY_MS, item_id="lip"), CATALOG.get)
    assert p.lifecycle(T0 + 59 * DAY_MS) != "at_risk"
    assert p.lifecycle(T0 + 61 * DAY_MS) == "at_risk"


# ---------------------------------------------------------------------- watch time
def test_watch_time_join_to_leave() -> None:
    p = fold([live("join", T0), live("comment", T0 + MIN, text="hi"),
              live("leave", T0 + 2 * MIN)])
    view = p.view(T0 + 10 * MIN)["live"]
    assert view["watch_time_s"] == 120.0
    assert view["current_room"] is None and view["comments"] == 1


def test_watch_time_with_missing_leave_times_out() -> None:
    p = fold([live("join", T0), live("like", T0 + MIN)])
    assert p.view(T0 + 2 * MIN)["live"]["current_room"] == "room-1"
    assert p.view(T0 + 2 * MIN)["session"]["in_room"] is True
    assert p.view(T0 + 2 * MIN)["live"]["watch_time_s"] == 120.0  # open watch, so far
    later = p.view(T0 + 60 * MIN)["live"]
    assert later["watch_time_s"] == (MIN + WATCH_TIMEOUT_MS) / 1000  # last activity + 300 s
    assert later["current_room"] is None
    # a join elsewhere much later closes the old watch at its timeout, not at the join
    p.apply(live("join", T0 + 90 * MIN, room="room-2"))
    p.apply(live("leave", T0 + 95 * MIN, room="room-2"))
    assert p.view(T0 + 96 * MIN)["live"]["watch_time_s"] == (MIN + WATCH_TIMEOUT_MS) / 1000 + 300
    assert p.view(T0 + 96 * MIN)["live"]["rooms_watched"] == 2


def test_watch_switching_rooms_closes_the_previous_one() -> None:
    p = fold([live("join", T0, room="a"), live("join", T0 + 100_000, room="b"),
              live("leave", T0 + 160_000, room="b")])
    assert p.view(T0 + 200_000)["live"]["watch_time_s"] == 160.0
    # a leave for a room the user is not watching changes nothing
    q = fold([live("join", T0, room="a"), live("leave", T0 + 1000, room="b")])
    assert q.view(T0 + 2000)["live"]["current_room"] == "a"


def test_silent_viewer_is_counted_like_the_room_pipeline_counts_it() -> None:
    # no activity after the join: gone after the viewer timeout, even if the leave is later
    p = fold([live("join", T0), live("leave", T0 + 20 * MIN)])
    assert p.view(T0 + 21 * MIN)["live"]["watch_time_s"] == WATCH_TIMEOUT_MS / 1000


def test_product_pin_is_the_hosts_act_and_ignored() -> None:
    p = fold([live("product_pin", T0, user="host-1", item_id="lip")], user="host-1")
    assert p.events == 0 and p.to_dict()["n"] == 0


# ---------------------------------------------------------------------- event time
def _session_events() -> list[LiveEvent | ClickEvent]:
    return [
        live("join", T0), click("view", T0 + 1000, item_id="lip"),
        live("product_click", T0 + 2000, item_id="cream"),
        live("add_to_cart", T0 + 3000, item_id="cream", quantity=1),
        click("search", T0 + 4000, query="coupon"),
        live("purchase", T0 + 5000, item_id="cream", amount=189.0, quantity=1),
        click("view", T0 + 2 * DAY_MS, item_id="nuts"),
        click("purchase", T0 + 2 * DAY_MS + 1000, item_id="nuts", quantity=3),
        live("gift", T0 + 2 * DAY_MS + 2000, amount=52.0),
    ]


def test_out_of_order_events_do_not_corrupt_the_profile() -> None:
    events = _session_events()
    ordered = fold(events)
    now = T0 + 3 * DAY_MS
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        p = fold(shuffled)
        assert p.updated_at == ordered.updated_at == T0 + 2 * DAY_MS + 2000
        assert p.first_seen == T0
        view, expected = p.view(now), ordered.view(now)
        assert view["rfm"]["orders"] == 2
        assert view["rfm"]["monetary"] == pytest.approx(expected["rfm"]["monetary"])
        assert view["rfm"]["recency_s"] == expected["rfm"]["recency_s"]
        assert view["rfm"]["frequency_30d"] == pytest.approx(expected["rfm"]["frequency_30d"],
                                                             abs=0.02)
        got = {a["name"]: a["score"] for a in view["affinities"]["categories"]}
        want = {a["name"]: a["score"] for a in expected["affinities"]["categories"]}
        assert got == pytest.approx(want, abs=0.02)
        assert view["live"]["gifts"] == 1 and view["live"]["gift_value"] == 52.0
        assert view["live"]["watch_time_s"] >= 0


def test_late_event_does_not_move_the_clock_back_or_open_a_session() -> None:
    p = fold([click("view", T0 + DAY_MS, item_id="lip", session="s2")])
    p.apply(click("add_to_cart", T0, item_id="cream", session="s1", quantity=1), CATALOG.get)
    view = p.view(T0 + DAY_MS)
    assert view["updated_at"] == T0 + DAY_MS
    assert view["session"]["id"] == "s2"
    assert view["session"]["recent_items"] == ["lip"] and view["session"]["carts"] == 0
    assert "high_intent" not in view["tags"]
    # but its weight still counts, decayed by its age
    assert p.categories["skincare"] == pytest.approx(3 * 2 ** (-1 / 7), abs=0.01)
    # a late join does not open a watch that would already be over
    p.apply(live("join", T0 + 1000))
    assert p.view(T0 + DAY_MS)["live"]["current_room"] is None
    assert p.view(T0 + DAY_MS)["live"]["watch_time_s"] == 0


# ---------------------------------------------------------------------- consent
def test_consent_defaults_true_and_newest_decision_wins() -> None:
    p = fold([click("view", T0, item_id="lip")])
    assert p.view(T0)["consent"] is True
    p.set_consent(False, T0 + 10)
    p.set_consent(True, T0 + 5)  # older decision arriving late: ignored
    assert p.view(T0)["consent"] is False
    assert UserProfile.from_dict(p.to_dict()).view(T0)["consent"] is False


# ---------------------------------------------------------------------- serialisation
def test_round_trip_gives_equal_views() -> None:
    p = fold([*_session_events(), live("join", T0 + 2 * DAY_MS + 3000, room="room-2"),
              live("comment", T0 + 2 * DAY_MS + 4000, room="room-2", text="有优惠券吗")])
    p.set_consent(False, T0)
    stored = p.to_dict()
    restored = UserProfile.from_dict(orjson.loads(orjson.dumps(stored)))
    assert restored.to_dict() == stored
    for now in (T0 + 2 * DAY_MS + 4000, T0 + 2 * DAY_MS + 10 * MIN, T0 + 40 * DAY_MS):
        assert restored.view(now) == p.view(now)
    assert UserProfile.from_dict(UserProfile("u9").to_dict()).view(T0) == \
        UserProfile("u9").view(T0)


def test_fold_profile_matches_the_object_path() -> None:
    events = _session_events()
    stored: dict[str, Any] | None = None
    for event in events:
        source = "live" if isinstance(event, LiveEvent) else "clicks"
        stored = fold_profile(stored, "u1", source, event, CATALOG.get)
    assert stored == fold(events).to_dict()
    with pytest.raises(ValueError, match="unknown source"):
        fold_profile(None, "u1", "catalog", events[0])


def test_serialized_heavy_user_fits_in_one_kib() -> None:
    sim = Simulator(seed=7, rooms=40, users=1_000_000, items=20_000)
    catalog = dict(sim.catalog_records(T0))
    item_ids = list(catalog)
    rng = random.Random(7)
    p = UserProfile("u999999")
    ts = T0
    live_kinds = ("join", "like", "comment", "gift", "product_click", "add_to_cart",
                  "purchase", "share", "leave")
    click_kinds = ("view", "click", "add_to_cart", "purchase", "search")
    for n in range(20_000):
        ts += rng.randint(1_000, 900_000)
        item = item_ids[rng.randrange(len(item_ids))]
        if rng.random() < 0.5:
            kind = rng.choice(live_kinds)
            p.apply_live(LiveEvent(f"7-{n}", kind, ts, f"room-{rng.randint(1, 40)}",
                                   "u999999", host_id="host-1", item_id=item,
                                   amount=1314.0, quantity=3, text="有优惠券吗",
                                   session_id=f"7-w{n}"), catalog.get)
        else:
            kind = rng.choice(click_kinds)
            p.apply_click(ClickEvent(f"7-{n}", kind, ts, "u999999", f"7-c{n // 15}",
                                     item_id=item, category=catalog[item]["category"],
                                     price=catalog[item]["price"], quantity=3,
                                     query="discount", room_id="room-1"), catalog.get)
    data = p.to_dict()
    assert len(data["cat"]) == MAX_CATEGORIES and len(data["br"]) == MAX_BRANDS
    assert data["o"] > 1000 and data["rn"] > 1000  # a really heavy history
    size = len(orjson.dumps(data))
    # plus the recent event ids (duplicate detection): a fixed 137 bytes once full
    assert len(data["ids"]) == RECENT_EVENT_IDS * EVENT_KEY_CHARS
    assert size <= 1024 + 140, size


def test_recent_event_ids_detect_redeliveries_and_survive_the_round_trip() -> None:
    p = UserProfile("u1")
    events = [ClickEvent(f"c{n}", "view", T0 + n, "u1", "s1", item_id="i1")
              for n in range(RECENT_EVENT_IDS + 5)]
    for event in events:
        assert not p.has_seen(event.event_id)
        p.apply(event, CATALOG.get)
    stored = orjson.loads(orjson.dumps(p.to_dict()))
    again = UserProfile.from_dict(stored)
    assert len(stored["ids"]) == RECENT_EVENT_IDS * EVENT_KEY_CHARS  # bounded
    assert all(again.has_seen(e.event_id) for e in events[-RECENT_EVENT_IDS:])
    assert not any(again.has_seen(e.event_id) for e in events[:5])  # the oldest fell out
    assert not again.has_seen("c-new")
    # a live event and a click with the same id are the same event (one idempotency key)
    again.apply_live(LiveEvent("shared-id", "like", T0 + 100, "room-1", "u1"))
    assert again.has_seen("shared-id")
    # product_pin is the host's act: never folded into a viewer profile, never remembered
    again.apply_live(LiveEvent("pin-1", "product_pin", T0 + 200, "room-1", "u1", item_id="i1"))
    assert not again.has_seen("pin-1")


def test_event_key_is_stable_and_a_match_must_be_aligned(monkeypatch: Any) -> None:
    assert event_key("e1") == event_key("e1") != event_key("e2")
    p = UserProfile("u1")
    p.recent_ids = "AAAABBBB" + "CCCCDDDD"
    monkeypatch.setattr(profile_module, "event_key", lambda _: "BBBBCCCC")
    assert not p.has_seen("x")  # only found across the boundary of two stored keys
    monkeypatch.setattr(profile_module, "event_key", lambda _: "CCCCDDDD")
    assert p.has_seen("x")


def test_input_positions_catch_every_redelivery_however_far_back() -> None:
    p = UserProfile("u1")
    for offset in range(100):  # far more events than the recent ids hold
        event = LiveEvent(f"e{offset}", "like", T0 + offset, "room-1", "u1")
        assert not p.is_duplicate(event.event_id, "l0", offset)
        p.apply(event)
        p.advance("l0", offset)
    again = UserProfile.from_dict(orjson.loads(orjson.dumps(p.to_dict())))
    assert again.sources == {"l0": 99}
    assert all(again.is_duplicate(f"e{o}", "l0", o) for o in range(100))  # replayed: skipped
    assert not again.is_duplicate("e100", "l0", 100)
    assert not again.is_duplicate("x", "l1", 0)  # another source has its own offsets
    again.advance("l0", 50)  # never moves back
    assert again.sources["l0"] == 99


def test_sources_are_bounded_and_keep_the_most_recently_advanced() -> None:
    p = UserProfile("u1")
    for n in range(MAX_SOURCES + 3):
        p.advance(f"l{n}", 10)
    p.advance("l3", 11)
    assert len(p.sources) == MAX_SOURCES
    assert list(p.sources)[-1] == "l3" and "l0" not in p.sources
    assert UserProfile.from_dict(p.to_dict()).sources == p.sources  # order kept


def test_event_key_and_dedup_with_ids_interleaved() -> None:
    """event_key remembers the last id it hashed; asking about other ids in between (and the
    empty id) still gives each its own key."""
    keys = {event_id: event_key(event_id) for event_id in ("a", "b", "", "a")}
    assert len(set(keys.values())) == 3 and all(len(k) == EVENT_KEY_CHARS for k in keys.values())
    assert event_key("b") == keys["b"] and event_key("") == keys[""] != ""
    p = UserProfile("u1")
    for i in range(40):
        assert not p.is_duplicate(f"e{i}", "l0", i)
        assert p.is_duplicate(f"e{i - 1}") == (i > 0)
        p.apply(LiveEvent(f"e{i}", "like", 1_000 + i, "room-1", "u1"))
        p.advance("l0", i)
        assert p.is_duplicate(f"e{i}") and p.is_duplicate("other", "l0", i)
    assert not p.is_duplicate(f"e{40 - RECENT_EVENT_IDS - 1}")  # forgotten by now


def test_advance_keeps_the_most_recent_sources() -> None:
    p = UserProfile("u1")
    for source in ("a", "b", "a", "a"):
        p.advance(source, 5)
    p.advance("a", 3)  # an older offset of the newest source changes nothing
    assert list(p.sources.items()) == [("b", 5), ("a", 5)]
    for i in range(MAX_SOURCES + 1):
        p.advance(f"s{i}", i)
    assert len(p.sources) == MAX_SOURCES and "b" not in p.sources
