"""RoomState: every insight group from hand-made event sequences (pure, no broker)."""

from __future__ import annotations

import itertools
from typing import Any

import jsonschema
import orjson
import pytest

from agents.rooms.state import (
    HISTORY_MINUTES,
    PANES_KEPT,
    VIEWER_HISTORY_S,
    VIEWER_STEP_S,
    RoomState,
)
from streams.contracts import ROOM_INSIGHT, LiveEvent, as_dict, check_contract, json_schema

T0 = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # a minute boundary
_ids = itertools.count()


def ev(kind: str, at_s: float, user: str = "u1", **kw: Any) -> LiveEvent:
    return LiveEvent(f"e{next(_ids)}", kind, T0 + int(at_s * 1000), "r1", user, **kw)


def fold(*events: LiveEvent, grace_ms: int = 10_000) -> RoomState:
    room = RoomState("r1", grace_ms)
    for e in events:
        room.apply(e)
    return room


SCHEMA = json_schema(ROOM_INSIGHT)


def insight(room: RoomState) -> dict[str, Any]:
    """The room's insight as it goes on the wire, checked against both forms of the contract."""
    body = orjson.loads(orjson.dumps(as_dict(room.insight(room.last_event_ts))))
    check_contract(ROOM_INSIGHT, body)
    jsonschema.validate(body, SCHEMA)
    return body


def test_presence_handles_duplicate_joins_missing_leaves_and_returns() -> None:
    room = fold(ev("join", 0, "a"), ev("join", 1, "a"), ev("leave", 2, "ghost"),
                ev("join", 3, "b"), ev("leave", 63, "b"), ev("join", 70, "b"),
                ev("like", 400, "c"))
    audience = insight(room)["audience"]
    assert audience["viewers"] == 3           # a (duplicate join), b (back), c (like, no join)
    assert audience["returning_viewers"] == 1 and audience["new_viewers"] == 2
    assert audience["median_watch_s"] == 60.0  # b's first session: 3 s -> 63 s
    room.expire_viewers(timeout_ms=300_000)    # a and b were silent since 1 s / 70 s
    after = insight(room)["audience"]
    assert after["viewers"] == 1 and after["returning_viewers"] == 0
    assert after["unique_viewers"] == 3 and after["peak_viewers"] == 3


def test_retention_is_share_still_watching_after_each_mark() -> None:
    room = fold(ev("join", 0, "a"), ev("join", 0, "b"), ev("leave", 30, "a"),
                ev("like", 130, "b"), ev("join", 125, "c"))
    retention = insight(room)["audience"]["retention"]
    assert retention["1m"] == 0.5      # a left after 30 s, b stayed; c joined too recently
    assert retention["5m"] == 0.0      # nobody joined 5 minutes before the watermark


def test_engagement_per_viewer_minute_and_top_viewers() -> None:
    events = [ev("join", 0, f"v{i}") for i in range(4)]
    events += [ev("comment", 10 + i, "v1", text="love it") for i in range(8)]
    events += [ev("gift", 30, "v2", amount=520.0), ev("like", 31, "v3")]
    engagement = insight(fold(*events))["engagement"]
    assert engagement["comments_per_viewer_min"] == pytest.approx(8 / 4, rel=0.01)
    assert engagement["gift_value_per_min"] == 520.0
    top = [(row["user_id"], row["comments"]) for row in engagement["top_viewers"]]
    assert top[0] == ("v2", 0) and top[1] == ("v1", 8)  # a 520 gift outweighs 8 comments


def test_mood_follows_comment_sentiment_and_keywords() -> None:
    happy = fold(*[ev("comment", i, f"u{i}", text="love this dress, great quality")
                   for i in range(6)])
    angry = fold(*[ev("comment", i, f"u{i}", text="质量很差 太贵了") for i in range(6)])
    assert insight(happy)["mood"]["sentiment"] > 0.2
    assert insight(angry)["mood"]["sentiment"] < -0.2
    assert "dress" in [k["word"] for k in insight(happy)["mood"]["keywords"]]
    codes = [s["code"] for s in insight(angry)["suggestions"]]
    assert "negative_mood" in codes


def test_funnel_top_items_and_pinned_uptake() -> None:
    room = fold(
        ev("product_click", 1, "a", item_id="i1"), ev("product_pin", 2, "host", item_id="i2"),
        ev("product_click", 3, "a", item_id="i2"), ev("product_click", 4, "b", item_id="i2"),
        ev("add_to_cart", 5, "a", item_id="i2"),
        ev("purchase", 6, "a", item_id="i2", amount=99.5),
        ev("add_to_cart", 7, "b", item_id="i1"),
    )
    commerce = insight(room)["commerce"]
    assert commerce["funnel"] == {"product_clicks": 3, "add_to_carts": 2, "purchases": 1,
                                  "click_to_cart": 0.6667, "cart_to_purchase": 0.5,
                                  "click_to_purchase": 0.3333}
    assert commerce["gmv"] == 99.5 and commerce["orders_per_min"] == 1
    assert commerce["top_items"][0] == {"item_id": "i2", "clicks": 2, "carts": 1,
                                        "purchases": 1, "gmv": 99.5}
    pinned = commerce["pinned"]
    assert (pinned["item_id"], pinned["clicks"], pinned["carts"], pinned["purchases"]) == \
        ("i2", 2, 1, 1)
    assert pinned["click_to_purchase"] == 0.5


def test_windows_on_event_time_with_grace_and_late_events() -> None:
    events = [ev("comment", 5, text="hi"), ev("like", 59)]                 # minute 0
    events += [ev("like", 61), ev("purchase", 62, item_id="i", amount=10.0)]  # minute 1
    events += [ev("like", 55)]                 # out of order, minute 0 still open: counted
    events += [ev("like", 185)]                # watermark 3:05 closes minutes 0..1 (grace 10 s)
    events += [ev("like", 100)]                # minute 1 closed: late, not in the windows
    room = fold(*events[:-1])
    assert room.apply(events[-1]) is True      # the caller is told, to count it in metrics
    windows = insight(room)["windows"]
    assert windows["late_events"] == 1
    last_minute = windows["tumbling_1m"]       # closed windows end at 2:00 (3:05 - 10 s grace)
    assert (last_minute["start"], last_minute["end"]) == (T0 + 60_000, T0 + 120_000)
    assert (last_minute["likes"], last_minute["orders"]) == (1, 1)
    five = windows["hopping_5m"]
    assert (five["comments"], five["likes"], five["orders"], five["gmv"]) == (1, 3, 1, 10.0)
    assert windows["current_1m"]["likes"] == 1
    assert insight(room)["likes_per_min"] >= 1       # totals keep the late event
    assert room.events_total == len(events)


def test_windows_stay_bounded_over_hours() -> None:
    room = fold(*[ev("like", minute * 60, f"u{minute}") for minute in range(180)])
    assert len(room.panes) <= PANES_KEPT
    hour = insight(room)["windows"]["hopping_1h"]
    assert hour["end"] - hour["start"] == 3_600_000 and hour["likes"] == 60


def test_suggestions_for_carts_without_orders_and_checkout_stall() -> None:
    events = [ev("join", 0, f"v{i}") for i in range(12)]
    events += [ev("add_to_cart", 1 + i, f"v{i}", item_id="i9") for i in range(8)]
    found = {s["code"]: s for s in insight(fold(*events))["suggestions"]}
    assert found["carts_not_converting"]["item_id"] == "i9"
    assert found["checkout_stalled"]["severity"] == "urgent"
    assert "优惠券" in found["carts_not_converting"]["zh"]
    assert insight(fold(*events))["suggestions"][0]["code"] == "checkout_stalled"


def test_suggests_an_interaction_when_viewers_drop() -> None:
    events = [ev("join", 1, f"v{i}") for i in range(40)]
    events += [ev("like", 60 + s, f"v{s % 40}") for s in range(0, 200, 5)]
    events += [ev("leave", 290, f"v{i}") for i in range(30)]
    codes = [s["code"] for s in insight(fold(*events))["suggestions"]]
    assert "viewer_drop" in codes


def test_snapshot_round_trip_gives_the_same_insight() -> None:
    events = [ev("join", 0, "a"), ev("comment", 2, "a", text="太好看了"),
              ev("product_pin", 3, "h", item_id="i1"), ev("add_to_cart", 4, "a", item_id="i1"),
              ev("purchase", 5, "a", item_id="i1", amount=12.5), ev("leave", 90, "a"),
              ev("join", 95, "b"), ev("like", 130, "b")]
    room = fold(*events)
    restored = RoomState.from_dict(orjson.loads(orjson.dumps(room.to_dict())))
    assert insight(restored) == insight(room)
    more = ev("purchase", 131, "b", item_id="i1", amount=1.0)
    room.apply(more)
    restored.apply(more)
    assert insight(restored) == insight(room)


def test_redelivered_offsets_are_skipped_after_a_restart_from_the_saved_state() -> None:
    """A crash replays input from the committed offset over a state saved later: the events
    at or below the saved room's last offset are redeliveries, the rest are new."""
    from agents.rooms.pipeline import RoomPipeline

    events = [ev("like", n) for n in range(10)]
    live = RoomPipeline(100, 1000, 300.0, 600.0)
    for offset, event in enumerate(events[:7]):
        live.apply(event, partition=1, offset=offset)
    saved: dict[str, tuple[dict[str, Any], int]] = {}
    assert live.save(lambda key, state, part: saved.__setitem__(key, (state, part))) == 1
    assert live.save(lambda *_: None) == 0  # unchanged since: nothing to write
    stored = orjson.loads(orjson.dumps(saved["r1"][0]))
    assert saved["r1"][1] == 1 and stored["offsets"] == {"1": 6}

    restarted = RoomPipeline(100, 1000, 300.0, 600.0)
    skipped = 0
    for offset, event in enumerate(events):
        if offset < 4:
            continue  # committed before the crash: never redelivered
        room = restarted.room(event.room_id, 1, lambda _: stored)
        if room.state.already_applied(offset, 1):
            skipped += 1
            continue
        restarted.apply(event, 1, offset=offset)
    assert skipped == 3  # offsets 4..6
    assert restarted.rooms["r1"].state.events_total == len(events)  # each counted once
    assert restarted.rooms["r1"].state.offsets == {1: 9}


def test_save_can_be_limited_to_revoked_partitions() -> None:
    from agents.rooms.pipeline import RoomPipeline

    rooms = RoomPipeline(100, 1000, 300.0, 600.0)
    rooms.apply(LiveEvent("a", "like", T0, "r1", "u1"), partition=0, offset=0)
    rooms.apply(LiveEvent("b", "like", T0, "r2", "u1"), partition=1, offset=0)
    written: list[tuple[str, int]] = []
    assert rooms.save(lambda key, _, part: written.append((key, part)), {1}) == 1
    assert written == [("r2", 1)]
    assert rooms.save(lambda key, _, part: written.append((key, part))) == 1  # r1 still due


# ---------------------------------------------------------------------- producer retries
def test_producer_retries_are_skipped_by_event_id_and_not_forwarded_again() -> None:
    """The same event sent twice (same id, new offset) counts once; a redelivered offset
    is told apart (that one is forwarded again, a retry is not)."""
    from agents.rooms.pipeline import REDELIVERED, RETRY, RoomPipeline

    rooms = RoomPipeline(100, 1000, 300.0, 600.0)
    events = [ev("like", 0), ev("comment", 1, text="nice"), ev("add_to_cart", 2, item_id="i1"),
              ev("purchase", 3, item_id="i1", amount=25.0)]
    sent = [*events, events[3], events[0], events[3]]  # three retries at new offsets
    outcomes = []
    for offset, event in enumerate(sent):
        outcome = rooms.repeat(event, 0, offset)
        outcomes.append(outcome)
        if outcome is None:
            rooms.apply(event, 0, offset=offset)
    assert outcomes == [None] * 4 + [RETRY] * 3
    assert rooms.repeat(events[1], 0, 2) == REDELIVERED  # an offset already folded in
    body = insight(rooms.rooms["r1"].state)
    assert body["events_total"] == 4 and body["orders"] == 1 and body["gmv"] == 25.0
    assert body["likes_per_min"] == 1 and body["commerce"]["funnel"]["add_to_carts"] == 1


def test_recent_ids_are_bounded_and_survive_a_snapshot() -> None:
    from agents.rooms.state import RECENT_EVENT_IDS

    room = RoomState("r1")
    events = [ev("like", n / 100) for n in range(RECENT_EVENT_IDS + 10)]
    for offset, event in enumerate(events):
        room.apply(event, offset)
    assert len(room.recent_ids) == RECENT_EVENT_IDS
    assert not room.is_retry(events[9].event_id)  # the oldest ones are forgotten
    assert all(room.is_retry(e.event_id) for e in events[10:])
    saved = orjson.loads(orjson.dumps(room.to_dict()))
    assert len(saved["recent_ids"]) == 4 * -(-RECENT_EVENT_IDS * 8 // 3)  # base64 of 8 KiB
    restored = RoomState.from_dict(saved)
    assert all(restored.is_retry(e.event_id) for e in events[10:])
    assert not restored.is_retry(events[9].event_id) and not restored.is_retry("new")
    restored.apply(ev("like", 20), 9999)  # evicts the oldest kept: events[10]
    assert not restored.is_retry(events[10].event_id) and restored.is_retry(events[11].event_id)
    old = {k: v for k, v in saved.items() if k not in ("recent_ids", "erasures")}
    assert not RoomState.from_dict(old).is_retry(events[-1].event_id)  # an older snapshot


# ---------------------------------------------------------------------- erasure
def _names(body: dict[str, Any], user: str) -> bool:
    return user in orjson.dumps(body).decode()


def test_forget_user_removes_viewer_top_viewer_and_host() -> None:
    room = fold(ev("join", 0, "host-1", host_id="host-1"), ev("join", 1, "gone-user"),
                *[ev("comment", 2 + n, "gone-user", text="hi") for n in range(5)],
                ev("like", 3, "stays"))
    before = insight(room)
    assert _names(before, "gone-user") and before["viewers"] == 3
    assert room.forget_user("gone-user") and room.forget_user("host-1")
    after = insight(room)
    assert not _names(after, "gone-user") and not _names(after, "host-1")
    assert after["viewers"] == 1 and after["events_total"] == before["events_total"]
    assert [v["user_id"] for v in after["engagement"]["top_viewers"]] == ["stays"]
    assert not room.forget_user("gone-user")


def test_erasure_reaches_rooms_in_memory_saved_and_loaded_later() -> None:
    """In memory: removed at once; saved only: loaded, removed and saved; saved before the
    erasure and loaded after it: removed on load; a user back after the erasure stays."""
    from agents.rooms.pipeline import RoomPipeline

    def event(room: str, user: str, at_s: float) -> LiveEvent:
        return LiveEvent(f"e{next(_ids)}", "comment", T0 + int(at_s * 1000), room, user,
                         text="hello")

    first = RoomPipeline(100, 1000, 300.0, 600.0)
    for room_id in ("r-mem", "r-saved", "r-later"):
        first.apply(event(room_id, "gone", 1), 0, offset=0)
        first.apply(event(room_id, "stays", 2), 0, offset=1)
    table: dict[str, dict[str, Any]] = {}
    first.save(lambda key, state, part: table.__setitem__(key, orjson.loads(orjson.dumps(
        {**state, "partition": part}))))

    worker = RoomPipeline(100, 1000, 300.0, 600.0)
    worker.room("r-mem", 0, table.get)
    changed = worker.forget_user("gone", partition=2, offset=7, saved=lambda: [
        (k, v, v["partition"]) for k, v in table.items() if k == "r-saved"])
    assert sorted(r.state.room_id for r in changed) == ["r-mem", "r-saved"]
    assert {r.state.room_id for r in worker.rooms.values()} == {"r-mem", "r-saved"}
    assert not worker.rooms["r-saved"].live  # loaded for the erasure only
    assert worker.save(lambda key, state, part: table.__setitem__(key, state)) == 2
    for room_id in ("r-mem", "r-saved"):
        assert "gone" not in orjson.dumps(table[room_id]).decode()
        assert table[room_id]["erasures"] == {"2": 8}
    later = worker.room("r-later", 0, table.get)  # saved before the erasure
    assert not later.state.names("gone") and later.state.names("stays") and later.unsaved
    assert not _names(worker.insight_of("r-later") or {}, "gone")

    worker.apply(event("r-mem", "gone", 5), 0, offset=2)  # back after the erasure
    worker.save(lambda key, state, part: table.__setitem__(key, state))
    restarted = RoomPipeline(100, 1000, 300.0, 600.0)
    restarted.forget_user("gone", partition=2, offset=7)  # the topic read from its start
    assert restarted.room("r-mem", 0, table.get).state.names("gone")
    assert restarted.rooms_naming("gone") == 1


def test_comment_keywords_leave_out_contact_details() -> None:
    room = fold(*[ev("comment", n, text=text) for n, text in enumerate((
        "great dress, mail me jane.doe@example.com",
        "call 138 0013 8000 about the dress",
        "@li_wei look at this dress https://shop.example/p?id=9",
        "dress quality bad, wechat me +44 20 7946 0958"))])
    words = [k["word"] for k in insight(room)["mood"]["keywords"]]
    assert "dress" in words
    text = " ".join(words)
    for leak in ("jane", "example", "li_wei", "138", "0013", "7946", "shop", "email",
                 "phone", "mention", "url"):
        assert leak not in text, (leak, words)


def test_sweep_cleans_saved_rooms_behind_the_erasures_read() -> None:
    """After a rebalance: saved rooms that erasures read since apply to are cleaned, the
    others stay in the table only."""
    from agents.rooms.pipeline import RoomPipeline

    first = RoomPipeline(100, 1000, 300.0, 600.0)
    for room_id, user in (("r-a", "gone"), ("r-b", "stays")):
        first.apply(LiveEvent(f"x-{room_id}", "like", T0, room_id, user), 0, offset=0)
    table: dict[str, Any] = {}
    first.save(lambda key, state, part: table.__setitem__(key, {**state, "partition": part}))
    worker = RoomPipeline(100, 1000, 300.0, 600.0)
    assert worker.sweep_erasures(lambda: []) == 0
    worker.forget_user("gone", partition=0, offset=3)  # read before the rooms were assigned
    listed = [(k, v, v["partition"]) for k, v in table.items()]
    assert worker.sweep_erasures(lambda: listed) == 1
    assert set(worker.rooms) == {"r-a"} and not worker.rooms["r-a"].state.names("gone")
    assert worker.save(lambda key, state, part: table.__setitem__(key, state)) == 1
    assert table["r-a"]["erasures"] == {"0": 4} and "gone" not in orjson.dumps(table).decode()


def test_redelivery_is_judged_per_input_partition() -> None:
    """Events of one room keyed otherwise (or not at all) arrive on other partitions: an
    offset already seen on one partition says nothing about another partition's offsets."""
    room = RoomState("r1")
    room.apply(ev("like", 0), offset=50, partition=0)
    assert room.already_applied(50, 0) and room.already_applied(3, 0)
    assert not room.already_applied(3, 1)  # was wrongly skipped when one offset was kept
    room.apply(ev("like", 1), offset=3, partition=1)
    restored = RoomState.from_dict(orjson.loads(orjson.dumps(room.to_dict())))
    assert restored.offsets == {0: 50, 1: 3} and restored.events_total == 2


# ---------------------------------------------------------------------- chart history
def test_history_is_bounded_and_covers_ten_minutes_of_viewers_and_an_hour_of_sales() -> None:
    room = RoomState("r1")
    t0 = 1_700_000_000_000 - 1_700_000_000_000 % 60_000
    for n, second in enumerate(range(0, 2 * 3600, 2)):  # 2 h: a join / 2 s, an order / min
        ts = t0 + second * 1000
        room.apply(LiveEvent(f"j{n}", "join", ts, "r1", f"u{n}"))
        if second % 60 == 0:
            room.apply(LiveEvent(f"p{n}", "purchase", ts, "r1", f"u{n}", item_id="i1",
                                 amount=10.0))
        assert len(room.viewer_history) <= VIEWER_HISTORY_S // VIEWER_STEP_S + 1
    history = room.history()
    viewers, sales = history["viewers"], history["sales"]
    assert len(viewers) == VIEWER_HISTORY_S // VIEWER_STEP_S + 1
    steps = [t for t, _ in viewers]
    assert steps == sorted(steps) and {b - a for a, b in itertools.pairwise(steps)} == {10_000}
    assert steps[-1] == room.last_event_ts // 10_000 * 10_000
    assert viewers[-1][1] == len(room.viewers) and viewers[0][1] < viewers[-1][1]
    assert len(sales) == HISTORY_MINUTES + 1            # the last hour and the open minute
    assert sales[-1][0] == room.last_event_ts // 60_000 * 60_000
    assert all(orders == 1 and gmv == 10.0 for _, orders, gmv in sales)


def test_history_fills_quiet_minutes_with_zeros_and_survives_a_snapshot() -> None:
    room = fold(ev("join", 1, "a"), ev("purchase", 2, "a", item_id="i1", amount=5.5),
                ev("join", 185, "b"))
    history = room.history()
    starts = [row[0] for row in history["sales"]]
    assert starts == [T0, T0 + 60_000, T0 + 120_000, T0 + 180_000]
    assert history["sales"][0][1:] == [1, 5.5]
    assert [row[1:] for row in history["sales"][1:]] == [[0, 0.0]] * 3
    assert history["viewers"] == [[T0, 1], [T0 + 180_000, 2]]
    restored = RoomState.from_dict(orjson.loads(orjson.dumps(room.to_dict())))
    assert restored.history() == history
    restored.apply(ev("join", 191, "c"))
    assert restored.history()["viewers"][-1] == [T0 + 190_000, 3]
    assert RoomState("empty").history()["viewers"] == []
