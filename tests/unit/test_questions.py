"""Questions from the chat: the detector, the per-room board, the room insight and erasure."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import jsonschema
import orjson
import pytest

from agents.rooms.questions import EXAMPLES, MAX_TEXT, STALE_MS, QuestionBoard
from agents.rooms.state import RoomState, mentions
from agents.testing import Harness
from benchmarks.eval_questions import load, score
from online_models.questions import TOPICS, classify, is_question, topic_of
from streams.contracts import ROOM_INSIGHT, LiveEvent, as_dict, check_contract, json_schema

T0 = 1_700_000_040_000
_ids = itertools.count()


def comment(at_s: float, user: str, text: str, **kw: Any) -> LiveEvent:
    return LiveEvent(f"q{next(_ids)}", "comment", T0 + int(at_s * 1000), "r1", user,
                     host_id="h1", text=text, **kw)


def pin(at_s: float, item: str = "i1") -> LiveEvent:
    return LiveEvent(f"q{next(_ids)}", "product_pin", T0 + int(at_s * 1000), "r1", "h1",
                     host_id="h1", item_id=item)


def questions_of(room: RoomState) -> dict[str, Any]:
    body = orjson.loads(orjson.dumps(as_dict(room.insight(room.last_event_ts))))
    check_contract(ROOM_INSIGHT, body)
    jsonschema.validate(body, json_schema(ROOM_INSIGHT))
    return body["questions"]


# ---------------------------------------------------------------------- detector
@pytest.mark.parametrize(("text", "topic"), [
    ("多少钱?", "price"), ("这个价格是到手价吗", "price"), ("how much for two?", "price"),
    ("尺码偏大吗", "size"), ("what size for 5'4 130lbs?", "size"),
    ("什么时候发货", "shipping"), ("do you ship to the uk", "shipping"),
    ("还有货吗", "stock"), ("is the green still available?", "stock"),
    ("有别的颜色吗", "variant"), ("does it come in black?", "variant"),
    ("是纯棉的吗", "material"), ("is it real leather?", "material"),
    ("有优惠券吗", "discount"), ("can I stack coupons?", "discount"),
    ("主播几点下播", "other"), ("can you show the back?", "other"),
])
def test_questions_get_their_topic(text: str, topic: str) -> None:
    assert classify(text) == topic


@pytest.mark.parametrize("text", [
    "太好看了吧？", "这也太美了吧", "怎么这么好看", "有没有人一起", "谁能拒绝这个颜色",
    "好美呢", "太贵了吧", "求链接", "已下单!", "how cute is that?!", "who cares?",
    "what a deal!", "can't wait", "isn't it gorgeous?", "love this!", "", "   ", "🔥🔥",
])
def test_exclamations_and_chatter_are_not_questions(text: str) -> None:
    assert not is_question(text) and classify(text) is None


def test_host_statements_have_topics_too() -> None:
    assert topic_of("今天下单明天发顺丰") == "shipping"
    assert topic_of("XL 偏大一码, 选小一号") == "size"
    assert topic_of("the black one is back in stock") == "stock"
    assert topic_of("thanks for coming") == "other"


def test_contract_topics_are_the_classifier_topics() -> None:
    spec = next(f for f in ROOM_INSIGHT.fields if f.name == "questions")
    unanswered = next(f for f in spec.items or () if f.name == "unanswered")
    topic = next(f for f in unanswered.items or () if f.name == "topic")
    assert set(topic.enum or ()) == set(TOPICS)
    older = as_dict(RoomState("r1").insight(T0))
    del older["questions"]   # an insight from an engine before this group: still valid
    check_contract(ROOM_INSIGHT, older)
    jsonschema.validate(orjson.loads(orjson.dumps(older)), json_schema(ROOM_INSIGHT))


def test_labelled_sample_is_large_mixed_and_scored() -> None:
    rows = load()
    assert len(rows) >= 300
    assert {r.split for r in rows} == {"dev", "test"}
    assert {r.topic for r in rows if r.question} == set(TOPICS)
    assert sum(not r.question for r in rows) >= 100
    assert sum(any("\u4e00" <= c <= "\u9fff" for c in r.text) for r in rows) >= 150
    held_out = score([r for r in rows if r.split == "test"])
    # floors well under the figures quoted in the README (held out: P 0.98, R 1.0, topic 0.88)
    assert held_out["precision"] >= 0.9 and held_out["recall"] >= 0.9
    assert held_out["topic_accuracy_detected"] >= 0.8


# ---------------------------------------------------------------------- board
def test_board_groups_by_topic_keeps_two_examples_and_orders_by_count() -> None:
    board = QuestionBoard()
    asks = [("u1", "多少钱?"), ("u2", "how much?"), ("u3", "多少钱?"), ("u4", "多少米"),
            ("u5", "包邮吗"), ("u6", "有没有黑色"), ("u7", "有黑色吗"), ("u8", "好看")]
    for i, (user, text) in enumerate(asks):
        board.comment(user, text, T0 + i * 1000, host_id="h1")
    view = board.view(T0 + 10_000)
    assert [(g["topic"], g["count"]) for g in view["unanswered"]] == [
        ("price", 4), ("variant", 2), ("shipping", 1)]
    price = view["unanswered"][0]
    assert price["examples"] == ["多少米", "多少钱?"]      # newest first, distinct
    assert price["first_seen"] == T0 and price["last_seen"] == T0 + 3000
    assert view["asked"] == 7 and view["open"] == 7 and view["answered"] == 0


def test_board_is_bounded_and_shows_top_five() -> None:
    board = QuestionBoard()
    texts = ["多少钱", "尺码偏大吗", "什么时候发货", "还有货吗", "有别的颜色吗", "是纯棉的吗",
             "有优惠券吗", "主播几点下播"]
    for i in range(5000):
        board.comment(f"u{i}", f"{texts[i % len(texts)]} {'x' * (i % 300)}?", T0 + i,
                      host_id="h1")
    assert len(board.groups) == len(TOPICS)
    assert all(len(g[3]) <= EXAMPLES for g in board.groups.values())
    assert all(len(e[1]) <= MAX_TEXT for g in board.groups.values() for e in g[3])
    assert len(board.view(T0 + 5000)["unanswered"]) == 5
    assert len(orjson.dumps(board.to_dict())) < 8_000


def test_host_comment_and_pin_answer_their_topics_only() -> None:
    room = RoomState("r1")
    for event in (comment(0, "u1", "多少钱?"), comment(1, "u2", "包邮吗"),
                  comment(2, "u3", "有优惠券吗"), comment(3, "u4", "能机洗吗")):
        room.apply(event)
    assert questions_of(room)["open"] == 4
    room.apply(pin(4))                               # the card shows the price
    room.apply(comment(5, "h1", "全国包邮, 今天下单明天发"))  # the host answers shipping
    left = questions_of(room)
    assert [g["topic"] for g in left["unanswered"]] == ["material", "discount"]  # newest first
    assert left["answered"] == 2 and left["open"] == 2
    room.apply(comment(6, "u5", "多少钱?"))          # asked again after the answer: open
    room.apply(comment(3.5, "u6", "how much?"))      # late, asked before the pin: answered
    after = questions_of(room)
    assert [g["count"] for g in after["unanswered"] if g["topic"] == "price"] == [1]
    assert after["answered"] == 3 and after["asked"] == 6


def test_stale_topics_leave_the_list() -> None:
    room = RoomState("r1")
    room.apply(comment(0, "u1", "尺码偏大吗"))
    room.apply(comment(STALE_MS / 1000 + 1, "u2", "包邮吗"))
    assert [g["topic"] for g in questions_of(room)["unanswered"]] == ["shipping"]


def test_erasure_removes_the_examples_a_user_wrote() -> None:
    room = RoomState("r1")
    room.apply(comment(0, "u1", "多少钱? call +1 415 555 0132"))
    room.apply(comment(1, "u2", "how much?"))
    room.apply(LiveEvent("l1", "leave", T0 + 2000, "r1", "u1", host_id="h1"))
    shown = questions_of(room)["unanswered"][0]["examples"]
    assert shown == ["how much?", "多少钱? call [phone]"]   # redacted like history text
    assert room.names("u1") and "u1" in room.people() and mentions(room.to_dict(), "u1")
    assert room.forget_user("u1")
    assert not room.names("u1") and not mentions(room.to_dict(), "u1")
    left = questions_of(room)["unanswered"][0]
    assert left["examples"] == ["how much?"] and left["count"] == 2   # counts name nobody
    again = RoomState.from_dict(orjson.loads(orjson.dumps(room.to_dict())))
    assert again.insight(room.last_event_ts).questions == room.insight(
        room.last_event_ts).questions


# ---------------------------------------------------------------------- pipeline
def test_comments_through_the_room_handler_reach_the_insight_and_erasure() -> None:
    h = Harness()
    now = int(time.time() * 1000)

    def live(kind: str, user: str, offset_ms: int, **extra: Any) -> bytes:
        return orjson.dumps({"event_id": f"h{next(_ids)}", "type": kind, "ts": now + offset_ms,
                             "room_id": "r1", "user_id": user, "host_id": "h1", **extra})

    batch = [live("join", "u1", 0), live("comment", "u1", 1, text="什么时候发货?"),
             live("comment", "u2", 2, text="ship to canada?"),
             live("comment", "u3", 3, text="太好看了吧?"),
             live("comment", "u4", 4, text="有没有优惠券")]
    asyncio.run(h.feed("live-events", 0, batch))
    pipeline = h.rooms.pipeline
    room = pipeline.rooms["r1"]
    payload, _ = pipeline.emit(room, time.monotonic(), now + 10)
    questions = orjson.loads(payload)["questions"]
    assert [(g["topic"], g["count"]) for g in questions["unanswered"]] == [
        ("shipping", 2), ("discount", 1)]
    assert questions["unanswered"][0]["examples"] == ["ship to canada?", "什么时候发货?"]
    assert pipeline.rooms_naming("u2") == 1
    pipeline.forget_user("u2", partition=0, offset=0)
    fresh = pipeline.insight_of("r1") or {}
    assert fresh["questions"]["unanswered"][0]["examples"] == ["什么时候发货?"]
    assert pipeline.rooms_naming("u2") == 0
    asyncio.run(h.feed("live-events", 0, [live("comment", "h1", 20, text="明天顺丰发货")]))
    payload, _ = pipeline.emit(room, time.monotonic(), now + 30)
    assert [g["topic"] for g in orjson.loads(payload)["questions"]["unanswered"]] == [
        "discount"]
