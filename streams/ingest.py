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

A key that occurs twice in the JSON object (``duplicate_key``) and a record whose message
key is not its entity id (``key_mismatch``: live events are keyed by ``room_id``) are
rejected too:

>>> v.decode(b'{"room_id":"a","room_id":"b"}', now_ms=6000).error_class
'duplicate_key'
>>> v.decode(b'{"event_id":"e","type":"like","ts":5000,"room_id":"r","user_id":"u"}',
...          now_ms=6000, key=b"other-room").error_class
'key_mismatch'
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from config.settings import Settings
from streams.contracts import (
    Contract,
    ContractError,
    DeadLetter,
    check_contract,
    to_record,
)

DEAD_LETTER_PAYLOAD_LIMIT = 4096

# Stable error classes (also the `reason` label of the dead-letter counter).
ERROR_CLASSES = (
    "oversize", "encoding", "malformed_json", "not_an_object", "missing_field", "wrong_type",
    "unknown_type", "out_of_range", "unsupported_version", "ts_future", "ts_past", "internal",
    "duplicate_key", "key_mismatch", "rate_limited",
)

# The field each input topic is keyed by (contract name -> field): a record whose message
# key differs is refused (``key_mismatch``), it sits on a partition whose worker does not
# hold that entity's state. Campaigns are applied by their key (``agents.promo``).
KEY_FIELDS = {"live-event": "room_id", "click-event": "user_id", "catalog-item": "item_id",
              "consent-event": "user_id", "erasure-request": "user_id",
              "ad-feedback": "user_id"}

_dumps = orjson.dumps
_QUOTED: dict[str, bytes] = {}  # '"name"' spellings of the keys seen (bounded below)
_QUOTED_MAX = 1024


class DuplicateKey(ValueError):
    """A JSON object names one key twice (JSON parsers keep the last silently)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key[:60]!r} occurs twice in one object")
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return found


def loads_unique(raw: bytes | str) -> Any:
    """Parse JSON like :func:`json.loads`; :class:`DuplicateKey` if any object, at any
    depth, names a key twice (the slow, exact check: ~10 µs for a 150-byte event).

    >>> loads_unique(b'{"a": {"b": 1, "b": 2}}')
    Traceback (most recent call last):
    ...
    streams.ingest.DuplicateKey: key 'b' occurs twice in one object
    """
    return json.loads(raw, object_pairs_hook=_unique_pairs)


def duplicate_key(raw: bytes, obj: dict[str, Any]) -> str | None:
    r"""The key named twice in ``raw`` (a JSON object whose ``orjson.loads`` is ``obj``), or
    None. Exact at any depth, and cheap for the usual input:

    1. ``raw`` is byte-equal to ``orjson.dumps(obj)`` (what orjson producers such as the
       simulator, replay and backfill write): a dict has no duplicates, done (~0.25 µs);
    2. a flat object (one ``{``) without ``\u``/``\/`` escapes, so that each key has a
       single spelling: each key's quoted spelling occurs once in ``raw``, done (~2 µs);
    3. else the exact parse :func:`loads_unique` (~10 µs).

    >>> duplicate_key(b'{"a":1,"b":2}', {"a": 1, "b": 2}) is None
    True
    >>> duplicate_key(b'{"a": 1, "b": "a"}', {"a": 1, "b": "a"}) is None  # step 3
    True
    >>> duplicate_key(b'{"a": 1, "a": 2}', {"a": 2})
    'a'
    >>> duplicate_key(b'{"\\u0061":1,"a":2}', {"a": 2})  # spelled differently, same key
    'a'
    >>> duplicate_key(b'{"o":{"b":1,"b":2}}', {"o": {"b": 2}})  # nested
    'b'
    """
    try:
        if _dumps(obj) == raw:
            return None
    except orjson.JSONEncodeError:
        pass  # e.g. an integer beyond 64 bits: the exact parse below decides
    return duplicate_key_respelled(raw, obj)


def duplicate_key_respelled(raw: bytes, obj: dict[str, Any]) -> str | None:
    r"""Steps 2 and 3 of :func:`duplicate_key`, for a ``raw`` already known not to be
    byte-equal to ``orjson.dumps(obj)`` (:meth:`Validator.decode` compares inline, so that
    the usual input costs no call): the same answer without dumping ``obj`` again.

    >>> duplicate_key_respelled(b'{"a": 1, "b": 2}', {"a": 1, "b": 2}) is None  # step 2
    True
    >>> duplicate_key_respelled(b'{"a": 1, "a": 2}', {"a": 2})
    'a'
    """
    if raw.count(b"{") == 1 and b"\\u" not in raw and b"\\/" not in raw:
        for key in obj:
            quoted = _QUOTED.get(key)
            if quoted is None:
                quoted = orjson.dumps(key)
                if len(_QUOTED) < _QUOTED_MAX:
                    _QUOTED[key] = quoted
            if raw.count(quoted) > 1:
                break
        else:
            return None
    try:
        loads_unique(raw)
    except DuplicateKey as dup:
        return dup.key
    except (ValueError, RecursionError):  # orjson took it, json does not: no verdict
        return None
    return None


@dataclass(frozen=True, slots=True)
class Rejection:
    error_class: str
    reason: str


DEAD_LETTER_VERSION: int = DeadLetter.__dataclass_fields__["schema_version"].default
# Refused by the hot-key quarantine (streams.quarantine), checked right after parsing: a
# flood's excess costs a parse and a dead letter, not a full validation.
RATE_LIMITED = Rejection("rate_limited", "user over its event rate: quarantined "
                         "(LIVEPULSE_HOT_KEY_RATE / LIVEPULSE_HOT_KEY_BURST)")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Validator:
    """Bytes -> typed record, or a :class:`Rejection` naming why not. Never raises."""

    __slots__ = ("contract", "key_field", "max_age_ms", "max_bytes", "max_future_skew_ms",
                 "timed")

    def __init__(self, contract: Contract, *, max_bytes: int, max_future_skew_ms: int,
                 max_age_ms: int) -> None:
        self.contract = contract
        self.key_field = KEY_FIELDS.get(contract.name)
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

    def decode(self, raw: bytes | None, now_ms: int, key: bytes | str | None = None,
               admit: Callable[[str, int], bool] | None = None) -> Any:
        """The typed record of ``raw`` or a :class:`Rejection`. ``key``: the message key,
        checked against the contract's key field (:data:`KEY_FIELDS`); None or empty (an
        unkeyed record, or one redriven from a dead letter of an unkeyed record) is not
        checked. ``admit(user_id, ts)``: the hot-key quarantine, asked right after parsing
        (:data:`RATE_LIMITED` when it refuses)."""
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
        if type(obj) is dict:
            try:
                same = _dumps(obj) == raw  # step 1 of duplicate_key, inline: the usual case
            except orjson.JSONEncodeError:
                same = False
            dup = None if same else duplicate_key_respelled(raw, obj)
            if dup is not None:
                return Rejection("duplicate_key", f"key {dup[:60]!r} occurs twice in one "
                                 "object")
            if admit is not None:
                user, ts = obj.get("user_id"), obj.get("ts")
                if type(user) is str and type(ts) is int and not admit(user, ts):
                    return RATE_LIMITED
        return self.check(obj, now_ms, key)

    def check(self, obj: Any, now_ms: int, key: bytes | str | None = None) -> Any:
        try:
            check_contract(self.contract, obj)
        except ContractError as exc:
            return Rejection(exc.error_class, exc.reason)
        if self.timed:
            ts = obj["ts"]
            if ts > now_ms + self.max_future_skew_ms:
                return Rejection("ts_future", f"ts {ts} is {(ts - now_ms) / 1000:.1f} s in "
                                 f"the future (limit {self.max_future_skew_ms / 1000:g} s)")
            if ts < now_ms - self.max_age_ms:
                return Rejection("ts_past", f"ts {ts} is {(now_ms - ts) / 1000:.1f} s old "
                                 f"(limit {self.max_age_ms / 1000:g} s)")
        # last: a record broken in itself is reported for that, whatever its key
        if key and self.key_field is not None:
            entity = obj[self.key_field]
            if (entity.encode() if type(key) is bytes else entity) != key:
                return Rejection("key_mismatch", f"message key is not the record's "
                                 f"{self.key_field}")
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
    # the DeadLetter record's fields, in its order, built directly (no dataclass round
    # trip): a flood of rate-limited events makes this path hot
    letter = {
        "source_topic": topic, "source_partition": partition, "source_offset": offset,
        "error_class": rejection.error_class, "reason": rejection.reason,
        "received_at": received_at, "payload": text, "payload_encoding": encoding,
        "payload_bytes": len(payload), "schema_version": DEAD_LETTER_VERSION,
    }
    headers = {
        "lp-source-topic": topic.encode(),
        "lp-source-partition": str(partition).encode(),
        "lp-source-offset": str(offset).encode(),
        "lp-error-class": rejection.error_class.encode(),
        "lp-reason": rejection.reason.encode("utf-8", "replace")[:512],
    }
    return orjson.dumps(letter), headers
