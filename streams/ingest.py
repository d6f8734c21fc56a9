"""Decode and validate raw input records; turn rejects into dead letters.

Validation happens once, at ingest: size, UTF-8, JSON, the contract's static rules, then
the time bounds that depend on "now". The result is a typed record or a :class:`Rejection`.

>>> from streams.contracts import LIVE_EVENT
>>> v = Validator(LIVE_EVENT, max_bytes=1024, max_future_skew_ms=1000, max_age_ms=10_000)
>>> v.decode(b'{"event_id":"e","type":"like","ts":5000,"room_id":"r","user_id":"u"}', now_ms=6000)
LiveEvent(event_id='e', type='like', ts=5000, room_id='r', user_id='u', host_id=None, \
item_id=None, amount=None, quantity=None, text=None, session_id=None, schema_version=1)
>>> v.decode(b'{"event_id":', now_ms=6000).error_class
'malformed_json'
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import orjson

from config.settings import Settings
from streams.contracts import (
    Contract,
    ContractError,
    DeadLetter,
    as_dict,
    check_contract,
    to_record,
)

DEAD_LETTER_PAYLOAD_LIMIT = 4096

# Stable error classes (also the `reason` label of the dead-letter counter).
ERROR_CLASSES = (
    "oversize", "encoding", "malformed_json", "not_an_object", "missing_field", "wrong_type",
    "unknown_type", "out_of_range", "unsupported_version", "ts_future", "ts_past", "internal",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    error_class: str
    reason: str


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Validator:
    """Bytes -> typed record, or a :class:`Rejection` naming why not. Never raises."""

    __slots__ = ("contract", "max_age_ms", "max_bytes", "max_future_skew_ms", "timed")

    def __init__(self, contract: Contract, *, max_bytes: int, max_future_skew_ms: int,
                 max_age_ms: int) -> None:
        self.contract = contract
        self.max_bytes = max_bytes
        self.max_future_skew_ms = max_future_skew_ms
        self.max_age_ms = max_age_ms
        # campaign definitions carry no event time: no time bounds (an extra "ts" is ignored)
        self.timed = any(spec.name == "ts" for spec in contract.fields)

    @classmethod
    def from_settings(cls, contract: Contract, settings: Settings) -> Validator:
        return cls(
            contract,
            max_bytes=settings.max_event_bytes,
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
            max_age_ms=int(settings.max_event_age_s * 1000),
        )

    def decode(self, raw: bytes | None, now_ms: int) -> Any:
        if raw is None:
            return Rejection("malformed_json", "empty record (null value)")
        if len(raw) > self.max_bytes:
            return Rejection("oversize", f"payload is {len(raw)} bytes, limit {self.max_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            # orjson rejects invalid UTF-8 with a JSONDecodeError too: tell the two apart.
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as uexc:
                return Rejection("encoding", f"payload is not valid UTF-8: {uexc.reason} at "
                                 f"byte {uexc.start}")
            return Rejection("malformed_json", f"invalid JSON: {exc}")
        return self.check(obj, now_ms)

    def check(self, obj: Any, now_ms: int) -> Any:
        try:
            check_contract(self.contract, obj)
        except ContractError as exc:
            return Rejection(exc.error_class, exc.reason)
        if not self.timed:
            return to_record(self.contract, obj)
        ts = obj["ts"]
        if ts > now_ms + self.max_future_skew_ms:
            return Rejection("ts_future", f"ts {ts} is {(ts - now_ms) / 1000:.1f} s in the "
                             f"future (limit {self.max_future_skew_ms / 1000:g} s)")
        if ts < now_ms - self.max_age_ms:
            return Rejection("ts_past", f"ts {ts} is {(now_ms - ts) / 1000:.1f} s old "
                             f"(limit {self.max_age_ms / 1000:g} s)")
        return to_record(self.contract, obj)


def dead_letter(raw: bytes | None, rejection: Rejection, *, topic: str, partition: int,
                offset: int, received_at: int) -> tuple[bytes, dict[str, bytes]]:
    """The dead-letter body (JSON bytes) and headers for a rejected record."""
    payload = raw or b""
    clipped = payload[:DEAD_LETTER_PAYLOAD_LIMIT]
    try:
        text, encoding = clipped.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(clipped).decode("ascii"), "base64"
    letter = DeadLetter(
        source_topic=topic, source_partition=partition, source_offset=offset,
        error_class=rejection.error_class, reason=rejection.reason, received_at=received_at,
        payload=text, payload_encoding=encoding, payload_bytes=len(payload),
    )
    headers = {
        "lp-source-topic": topic.encode(),
        "lp-source-partition": str(partition).encode(),
        "lp-source-offset": str(offset).encode(),
        "lp-error-class": rejection.error_class.encode(),
        "lp-reason": rejection.reason.encode("utf-8", "replace")[:512],
    }
    return orjson.dumps(as_dict(letter)), headers
