"""Ingest validation: every way an input can be bad has its error class and reason."""

from __future__ import annotations

import base64

import orjson
import pytest

from config.settings import Settings
from streams.contracts import LIVE_EVENT, LiveEvent
from streams.ingest import ERROR_CLASSES, Rejection, Validator, dead_letter

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
