"""Dead-letter parsing, selection and the redrive plan (pure logic of streams.dead_letters)."""

from __future__ import annotations

import orjson

from streams.dead_letters import Letter, Selection, parse_letter, plan_redrive, tally
from streams.ingest import Rejection, dead_letter

INPUTS = frozenset({"lp.clicks", "lp.live-events"})


def letter_of(raw: bytes, error: str = "internal", topic: str = "lp.clicks",
              offset: int = 0, received_at: int = 1_000) -> Letter:
    body, _headers = dead_letter(raw, Rejection(error, "why"), topic=topic, partition=1,
                                 offset=40 + offset, received_at=received_at)
    parsed = parse_letter(0, offset, b"u1", body)
    assert parsed is not None
    return parsed


def test_the_engine_s_own_dead_letters_round_trip_to_the_original_bytes() -> None:
    text = '{"event_id":"e1","note":"世界"}'.encode()
    assert letter_of(text).payload == text
    binary = b"\xff\xfe not utf-8"
    assert letter_of(binary, "encoding").payload == binary  # base64 in the letter


def test_a_truncated_payload_cannot_be_redriven() -> None:
    big = letter_of(b"x" * 5000, "oversize")
    assert big.payload is None and big.record.payload_bytes == 5000
    assert "truncated" in (big.redrivable(INPUTS) or "")


def test_selection_by_reason_source_suffix_id_and_time() -> None:
    a = letter_of(b"{}", "internal", "lp.clicks", 0, 1_000)
    b = letter_of(b"{}", "wrong_type", "lp.live-events", 1, 2_000)
    pick = lambda sel: [x.id for x in (a, b) if sel.matches(x)]  # noqa: E731
    assert pick(Selection()) == ["0:0", "0:1"]
    assert pick(Selection(reasons=frozenset({"wrong_type"}))) == ["0:1"]
    assert pick(Selection(sources=frozenset({"clicks"}))) == ["0:0"]
    assert pick(Selection(sources=frozenset({"lp.live-events"}))) == ["0:1"]
    assert pick(Selection(ids=frozenset({"0:1"}))) == ["0:1"]
    assert pick(Selection(since_ms=1_500)) == ["0:1"]
    assert pick(Selection(until_ms=1_500)) == ["0:0"]
    assert Selection().empty and not Selection(since_ms=0).empty


def test_plan_skips_the_ledger_and_refuses_internal_topics() -> None:
    sendable = letter_of(b"{}", offset=0)
    internal = letter_of(b"[]", topic="lp.user-activity", offset=1)
    done = letter_of(b"{}", offset=2)
    plan = plan_redrive([sendable, internal, done], Selection(), {done.id}, INPUTS)
    assert [x.id for x in plan.send] == [sendable.id]
    assert [x.id for x in plan.already] == [done.id]
    assert [(x.id, "not an input topic" in why) for x, why in plan.refused] == [
        (internal.id, True)]


def test_non_letters_are_skipped_and_tallied_letters_counted() -> None:
    assert parse_letter(0, 0, None, None) is None
    assert parse_letter(0, 0, None, orjson.dumps({"payload": "x"})) is None
    letters = [letter_of(b"{}", "internal"), letter_of(b"{}", "internal", offset=1),
               letter_of(b"{}", "ts_past", "lp.live-events", 2)]
    assert tally(letters) == {"by_reason": {"internal": 2, "ts_past": 1},
                              "by_source": {"lp.clicks": 2, "lp.live-events": 1}}
    summary = letters[0].summary()
    assert summary["source"] == "lp.clicks[1]@40" and summary["key"] == "u1"
