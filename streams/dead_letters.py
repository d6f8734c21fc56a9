"""Dead letters for operators: list them by reason and source; redrive chosen ones.

Every rejected input record is on ``<prefix>.dead-letter`` with its source coordinates,
its reason and its payload (``streams.ingest.dead_letter``). After a fix (a contract bug,
a worker bug behind ``internal`` rejections, an upstream producer corrected), an operator
lists the letters, picks some and *redrives* them: each payload is re-published with its
original key to its source topic, where the workers validate it again like any input.

Redrive is idempotent: each letter redriven is recorded on the compacted ledger topic
``<prefix>.dead-letter-redrives`` (key: the letter's id ``<partition>:<offset>``), written
after its payload was delivered, and letters already in the ledger are skipped. Re-driving
the same selection twice therefore re-publishes nothing the second time. A payload that
is rejected again becomes a new dead letter with new coordinates; it is redriven only if
chosen again. Letters whose payload was truncated (over 4 KiB) cannot be restored and are
refused, as are letters of a topic that is not one of the engine's inputs.

>>> from streams.ingest import Rejection, dead_letter
>>> body, _ = dead_letter(b'{"event_id":"e"}', Rejection("internal", "boom"),
...                       topic="lp.clicks", partition=1, offset=42, received_at=1_000)
>>> letter = parse_letter(0, 7, b"u1", body)
>>> letter.id, letter.payload, letter.redrivable(frozenset({"lp.clicks"}))
('0:7', b'{"event_id":"e"}', None)
>>> Selection(reasons=frozenset({"ts_past"})).matches(letter)
False
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.contracts import DEAD_LETTER, ContractError, DeadLetter, validate
from streams.control import ControlTopicReader
from streams.ingest import now_ms

REDRIVE_HEADER = "lp-redriven-from"


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter: where it sits on the dead-letter topic, its record (the
    ``dead-letter`` contract) and the original payload bytes."""

    partition: int  # on the dead-letter topic
    offset: int
    key: bytes | None  # the source record's key
    record: DeadLetter
    payload: bytes | None  # the original bytes; None when truncated

    @property
    def id(self) -> str:
        """``<partition>:<offset>`` on the dead-letter topic (the ledger's key)."""
        return f"{self.partition}:{self.offset}"

    @property
    def source_topic(self) -> str:
        return self.record.source_topic

    @property
    def error_class(self) -> str:
        return self.record.error_class

    @property
    def received_at(self) -> int:
        return self.record.received_at

    def redrivable(self, inputs: frozenset[str]) -> str | None:
        """None when the letter can be redriven, else why not."""
        if self.source_topic not in inputs:
            return f"source {self.source_topic} is not an input topic of this prefix"
        if self.payload is None:
            return (f"payload of {self.record.payload_bytes} bytes was truncated to 4 KiB in "
                    "the dead letter: the original cannot be restored")
        return None

    def summary(self, preview: int = 120) -> dict[str, Any]:
        r = self.record
        text = (self.payload or b"").decode("utf-8", "replace")
        return {"id": self.id, "received_at": r.received_at,
                "source": f"{r.source_topic}[{r.source_partition}]@{r.source_offset}",
                "error_class": r.error_class, "reason": r.reason,
                "key": (self.key or b"").decode("utf-8", "replace"),
                "payload_bytes": r.payload_bytes,
                "payload": text[:preview] + ("…" if len(text) > preview else "")}


def parse_letter(partition: int, offset: int, key: bytes | None,
                 value: bytes | None) -> Letter | None:
    """The :class:`Letter` of one dead-letter record (None: not a dead letter body).

    >>> body = orjson.dumps({"source_topic": "t", "source_partition": 0, "source_offset": 3,
    ...     "error_class": "wrong_type", "reason": "r", "received_at": 5, "payload": "e30=",
    ...     "payload_encoding": "base64", "payload_bytes": 2, "schema_version": 1})
    >>> parse_letter(0, 1, None, body).payload
    b'{}'
    >>> parse_letter(0, 2, None, b"nonsense") is None
    True
    """
    try:
        record = validate(DEAD_LETTER, orjson.loads(value or b""))
        if record.payload_encoding == "base64":
            payload: bytes | None = base64.b64decode(record.payload, validate=True)
        else:
            payload = record.payload.encode("utf-8")
    except (orjson.JSONDecodeError, ContractError, TypeError, ValueError, binascii.Error):
        return None
    if payload is not None and len(payload) != record.payload_bytes:
        payload = None  # truncated: only a prefix was kept
    return Letter(partition, offset, key, record, payload)


@dataclass(frozen=True, slots=True)
class Selection:
    """Which letters an operator means; empty fields match everything.

    ``sources`` match the source topic's full name or its suffix after the prefix
    (``clicks``); ``since_ms``/``until_ms`` bound ``received_at``.
    """

    reasons: frozenset[str] = frozenset()
    sources: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None

    def matches(self, letter: Letter) -> bool:
        if self.reasons and letter.error_class not in self.reasons:
            return False
        if self.sources and letter.source_topic not in self.sources \
                and letter.source_topic.rsplit(".", 1)[-1] not in self.sources:
            return False
        if self.ids and letter.id not in self.ids:
            return False
        if self.since_ms is not None and letter.received_at < self.since_ms:
            return False
        return self.until_ms is None or letter.received_at <= self.until_ms

    @property
    def empty(self) -> bool:
        return not (self.reasons or self.sources or self.ids or self.since_ms is not None
                    or self.until_ms is not None)


@dataclass
class RedrivePlan:
    """What a redrive of a selection would do."""

    send: list[Letter] = field(default_factory=list)
    already: list[Letter] = field(default_factory=list)  # in the ledger: skipped
    refused: list[tuple[Letter, str]] = field(default_factory=list)


def plan_redrive(letters: Iterable[Letter], selection: Selection, done: Iterable[str],
                 inputs: frozenset[str]) -> RedrivePlan:
    """Split the selected letters into to send, already redriven and refused (why).

    >>> record = DeadLetter("p.clicks", 0, 9, "internal", "x", 5, "{}", "utf-8", 2)
    >>> a = Letter(0, 1, b"k", record, b"{}")
    >>> b = Letter(0, 2, b"k", record, None)
    >>> plan = plan_redrive([a, b], Selection(), {"0:1"}, frozenset({"p.clicks"}))
    >>> [x.id for x in plan.send], [x.id for x in plan.already], len(plan.refused)
    ([], ['0:1'], 1)
    """
    done = set(done)
    plan = RedrivePlan()
    for letter in letters:
        if not selection.matches(letter):
            continue
        if letter.id in done:
            plan.already.append(letter)
        elif (why := letter.redrivable(inputs)) is not None:
            plan.refused.append((letter, why))
        else:
            plan.send.append(letter)
    return plan


def tally(letters: Iterable[Letter]) -> dict[str, dict[str, int]]:
    """Counts by reason and by source topic."""
    by_reason: dict[str, int] = {}
    by_source: dict[str, int] = {}
    for letter in letters:
        by_reason[letter.error_class] = by_reason.get(letter.error_class, 0) + 1
        by_source[letter.source_topic] = by_source.get(letter.source_topic, 0) + 1
    return {"by_reason": dict(sorted(by_reason.items())),
            "by_source": dict(sorted(by_source.items()))}


async def read_letters(bootstrap: str, topic: str, *, client_options: Mapping[str, Any],
                       timeout_s: float = 30.0) -> list[Letter]:
    """Every dead letter on ``topic`` now, in partition and offset order (records that are
    not dead-letter bodies are left out)."""
    reader = ControlTopicReader(bootstrap, topic, client_options=client_options,
                                default_partitions=0, name="dead letters")
    records = await reader.read_to_end(timeout_s)
    letters = (parse_letter(r.partition, r.offset, r.key, r.value) for r in records)
    return sorted((x for x in letters if x is not None), key=lambda x: (x.partition, x.offset))


async def read_ledger(bootstrap: str, topic: str, *, client_options: Mapping[str, Any],
                      timeout_s: float = 30.0) -> set[str]:
    """Ids of the letters already redriven (the ledger's keys with a value)."""
    reader = ControlTopicReader(bootstrap, topic, client_options=client_options,
                                default_partitions=0, name="redrive ledger")
    done: set[str] = set()
    for record in await reader.read_to_end(timeout_s):
        key = (record.key or b"").decode("utf-8", "replace")
        if record.value is None:
            done.discard(key)
        else:
            done.add(key)
    return done


async def redrive(bootstrap: str, letters: list[Letter], *, dead_letter_topic: str,
                  ledger_topic: str, client_options: Mapping[str, Any]) -> int:
    """Re-publish each letter's payload to its source topic with its key, then record it
    in the ledger (after the payloads were delivered: a crash in between can only
    re-publish, never lose). Returns how many were sent."""
    if not letters:
        return 0
    # not idempotent: the embedded broker answers idempotent produce requests with errors
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **client_options)
    await producer.start()
    try:
        at = now_ms()
        for letter in letters:
            origin = f"{dead_letter_topic}:{letter.id}".encode()
            await producer.send(letter.source_topic, key=letter.key, value=letter.payload,
                                headers=[(REDRIVE_HEADER, origin)])
        await producer.flush()
        for letter in letters:
            entry = {"redriven_at": at, "to": letter.source_topic,
                     "error_class": letter.error_class}
            await producer.send(ledger_topic, key=letter.id.encode(),
                                value=orjson.dumps(entry))
        await producer.flush()
    finally:
        await producer.stop()
    return len(letters)
