"""Ingest validation: every way an input can be bad has its error class and reason."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import orjson
import pytest

from config.settings import Settings
from streams.contracts import (
    DEAD_LETTER,
    LIVE_EVENT,
    DeadLetter,
    LiveEvent,
    check_contract,
    to_record,
)
from streams.ingest import ERROR_CLASSES, RATE_LIMITED, Rejection, Validator, dead_letter

NOW = 1_800_000_000_000


@pytest.fixture
def validator() -> Validator:
    return Validator.from_settings(LIVE_EVENT, Settings())


def event(**patch: object) -> bytes:
    base = {"event_id": "e", "type": "gift", "ts": NOW, "room_id": "r", "user_id": "u",
            "amount": 5}
    base.update(patch)
    return orjson.dumps(base)


@pytest.mark.parametrize(
    ("raw", "error_class"),
    [
        (b"{", "malformed_json"),
        (b"", "malformed_json"),
        (None, "malformed_json"),
        (b'{"a": "\xff"}', "encoding"),
        (b"42", "not_an_object"),
        (event(ts=NOW + 3_600_000), "ts_future"),
        (event(ts=NOW - 30 * 86_400_000), "ts_past"),
        (event(amount=-0.01), "out_of_range"),
        (event(type="teleport"), "unknown_type"),
        (event(user_id=None), "missing_field"),
        (event(room_id=7), "wrong_type"),
        (event(text="x" * 70_000), "oversize"),
    ],
)
def test_rejections(validator: Validator, raw: bytes | None, error_class: str) -> None:
    result = validator.decode(raw, NOW)
    assert isinstance(result, Rejection)
    assert result.error_class == error_class
    assert result.error_class in ERROR_CLASSES  # the documented, stable set
    assert result.reason


def test_good_event_becomes_a_record(validator: Validator) -> None:
    rec = validator.decode(event(), NOW)
    assert isinstance(rec, LiveEvent) and rec.amount == 5


def test_size_limit_is_configurable() -> None:
    small = Validator.from_settings(LIVE_EVENT, Settings(max_event_bytes=256))
    assert small.decode(event(text="y" * 300), NOW).error_class == "oversize"
    assert isinstance(small.decode(event(), NOW), LiveEvent)


def test_dead_letter_keeps_payload_and_source() -> None:
    body, headers = dead_letter(b"\xff\xfe", Rejection("encoding", "bad bytes"), topic="t",
                                partition=3, offset=42, received_at=NOW)
    letter = orjson.loads(body)
    assert letter["payload_encoding"] == "base64"
    assert base64.b64decode(letter["payload"]) == b"\xff\xfe"
    assert headers["lp-source-partition"] == b"3" and headers["lp-source-offset"] == b"42"
    assert headers["lp-error-class"] == b"encoding" and headers["lp-reason"] == b"bad bytes"
    big, _ = dead_letter(b"a" * 10_000, Rejection("oversize", "big"), topic="t", partition=0,
                         offset=0, received_at=NOW)
    assert orjson.loads(big)["payload_bytes"] == 10_000
    assert len(orjson.loads(big)["payload"]) == 4096
    # built without the dataclass: still exactly the contract's record, in its field order
    assert list(letter) == [f.name for f in dataclasses.fields(DeadLetter)]
    assert to_record(DEAD_LETTER, check_contract(DEAD_LETTER, letter)) == DeadLetter(**letter)


def test_the_quarantine_is_asked_after_parsing_and_only_with_a_user_and_ts() -> None:
    asked: list[tuple[str, int]] = []

    def refuse(user: str, ts: int) -> bool:
        asked.append((user, ts))
        return False

    validator = Validator.from_settings(LIVE_EVENT, Settings())
    assert validator.decode(event(), NOW, admit=refuse) is RATE_LIMITED
    assert asked == [("u", NOW)]
    assert validator.decode(b'{"user_id": 5, "ts": 1}', NOW, admit=refuse).error_class in (
        "missing_field", "wrong_type")  # not a user event: validated as usual
    assert isinstance(validator.decode(event(), NOW, admit=lambda u, t: True), LiveEvent)


# --- duplicate keys and keys that are not the record's entity id (issue 17)

@pytest.mark.parametrize("raw", [
    b'{"event_id":"e","type":"like","ts":1,"room_id":"a","room_id":"b","user_id":"u"}',
    b'{"event_id": "e", "type": "like", "ts": 1, "room_id": "a", "user_id": "u", '
    b'"room_id": "a"}',  # same value twice, spaced (not orjson's spelling)
    b'{"event_id":"e","type":"like","ts":1,"room_id":"a","\\u0072oom_id":"b","user_id":"u"}',
    b'{"event_id":"e","type":"like","ts":1,"room_id":"a","user_id":"u","x":{"k":1,"k":2}}',
])
def test_duplicate_keys_are_rejected_at_any_depth(validator: Validator, raw: bytes) -> None:
    result = validator.decode(raw, NOW)
    assert isinstance(result, Rejection) and result.error_class == "duplicate_key"
    assert result.error_class in ERROR_CLASSES and "occurs twice" in result.reason


@pytest.mark.parametrize("raw", [
    event(),                                           # orjson's own spelling: step 1
    event(text="a comment").replace(b'":', b'": '),    # spaced, flat: step 2
    event(text='says "room_id": here'),                # a key's name inside a value: step 3
    event(text="caf\u00e9").replace("é".encode(), b"\\u00e9"),  # an escape: step 3
])
def test_unique_keys_pass_whatever_the_spelling(validator: Validator, raw: bytes) -> None:
    assert isinstance(validator.decode(raw, NOW), LiveEvent)


SPELLINGS = [
    event(), event(text="a comment").replace(b'":', b'": '),
    event(text='says "room_id": here'), event(text="caf\u00e9").replace("é".encode(), b"\\u00e9"),
    b'{"event_id": "e", "type": "like", "ts": 1, "room_id": "a", "user_id": "u", '
    b'"room_id": "a"}',
    b'{"event_id":"e","type":"like","ts":1,"room_id":"a","\\u0072oom_id":"b","user_id":"u"}',
    b'{"a":' + b'[' * 300 + b']' * 300 + b'}',  # deeper than orjson dumps: step 2
]


def test_an_object_is_dumped_once_per_decode_whatever_its_spelling(
        validator: Validator, monkeypatch: pytest.MonkeyPatch) -> None:
    """``decode`` compares ``raw`` with orjson's spelling inline (step 1 of
    ``duplicate_key``); a record spelled otherwise goes on with steps 2 and 3 without
    being dumped again, and every verdict is ``duplicate_key``'s."""
    from streams import ingest

    dumped: list[int] = []
    real = ingest._dumps

    def counting(obj: object) -> bytes:
        if isinstance(obj, dict):
            dumped.append(1)
        return real(obj)

    for raw in SPELLINGS:
        obj = orjson.loads(raw)
        expected = ingest.duplicate_key(raw, obj)
        monkeypatch.setattr(ingest, "_dumps", counting)
        dumped.clear()
        result = validator.decode(raw, NOW)
        monkeypatch.setattr(ingest, "_dumps", real)
        assert len(dumped) == 1, raw
        assert (isinstance(result, Rejection) and result.error_class == "duplicate_key") \
            == (expected is not None), raw
        try:
            respelled = real(obj) != raw
        except orjson.JSONEncodeError:
            respelled = True
        if respelled:
            assert ingest.duplicate_key_respelled(raw, obj) == expected, raw


def test_key_must_be_the_entity_id(validator: Validator) -> None:
    assert isinstance(validator.decode(event(), NOW, b"r"), LiveEvent)
    assert isinstance(validator.decode(event(), NOW, "r"), LiveEvent)  # str keys too
    for key in (None, b""):  # unkeyed (and redriven unkeyed) records: not checked
        assert isinstance(validator.decode(event(), NOW, key), LiveEvent)
    mismatch = validator.decode(event(), NOW, b"other-room")
    assert isinstance(mismatch, Rejection) and mismatch.error_class == "key_mismatch"
    assert "room_id" in mismatch.reason
    # a broken record is reported for what is broken, not for its key
    assert validator.decode(event(room_id=None), NOW, b"r").error_class == "missing_field"
    assert validator.decode(event(ts=NOW - 30 * 86_400_000), NOW, b"x").error_class == "ts_past"


def test_topics_dead_letter_and_count_duplicates_and_mismatched_keys() -> None:
    """Through the real room and user handlers (in-memory engine): the rejected records are
    dead letters with their reason, counted by reason; the good ones are handled."""
    from agents.testing import Harness

    h = Harness()
    now = h.now_ms()
    live = {"event_id": "e1", "type": "join", "room_id": "r1", "user_id": "u1", "ts": now}
    two_rooms = (b'{"event_id":"e2","type":"join","room_id":"r1","user_id":"u2","ts":%d,'
                 b'"room_id":"r2"}' % now)
    asyncio.run(h.feed("live-events", 0, [orjson.dumps(live), two_rooms,
                                          orjson.dumps({**live, "event_id": "e3"})],
                       keys=[b"r1", b"r1", b"r9"]))
    click = {"event_id": "c1", "type": "view", "user_id": "u1", "session_id": "s1",
             "item_id": "i1", "ts": now}
    asyncio.run(h.feed("clicks", 0, [orjson.dumps(click),
                                     orjson.dumps({**click, "event_id": "c2"})],
                       keys=[b"u1", b"u2"]))
    letters = h.sent(h.names.dead_letter)
    assert [(d["source_topic"], d["source_offset"], d["error_class"]) for d in letters] == [
        (h.names.live_events, 1, "duplicate_key"), (h.names.live_events, 2, "key_mismatch"),
        (h.names.clicks, 1, "key_mismatch")]
    # counted like every other reason
    assert h.engine.metrics.snapshot()["dead_letters_by_reason"] == {"duplicate_key": 1,
                                                                     "key_mismatch": 2}
    assert set(h.rooms.pipeline.rooms["r1"].state.viewers.keys()) == {"u1"}
    assert "r2" not in h.rooms.pipeline.rooms


def test_deep_nesting_beyond_the_exact_parser_never_raises(validator: Validator) -> None:
    deep = b'{"k": ' * 1000 + b"1" + b"}" * 1000  # orjson parses it, json.loads cannot
    raw = event()[:-1] + b', "extra": ' + deep + b"}"
    assert isinstance(validator.decode(raw, NOW), LiveEvent)  # an ignored field: no verdict
