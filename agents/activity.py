"""The ``user-activity`` hop in batches: live events re-keyed by user, one record per user
partition per few milliseconds.

Every live event concerning a user travels from the room pipeline (keyed by room) to the
user pipeline (keyed by user). One Kafka record per event made that hop cost a produce, a
fetch and a pass through Faust's stream machinery per event. The room pipeline instead
appends each event to the batch of the user's partition (the partition Kafka's default
murmur2 partitioner gives the ``user_id`` key, so it is the one that owns the user's state)
and sends a batch as one record, a JSON array of live events, when it holds
``max_batch`` events or ``linger_s`` after its first event. The user pipeline splits a batch
back into events (:func:`unbatch`) and handles and guards each on its own.

Nothing held is lost: :meth:`ActivityBatcher.flush` runs before every offset commit of the
room pipeline's input (``agents.state.before_commit``), and Faust flushes the producer
before it commits.

Each forwarded event carries its position in ``live-events`` (:data:`SOURCE_FIELD`: partition
and offset, see :func:`forwarded`): a live event may be forwarded twice (the room pipeline
replays its input after a crash or a rebalance), and the user pipeline skips a position it
has folded in already (:meth:`agents.profile.UserProfile.is_duplicate`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka.partitioner import murmur2

if TYPE_CHECKING:
    from agents.engine import Engine


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2, as the Java client) picks.

    >>> partition_for(b"user-1", 4) == partition_for(b"user-1", 4)
    True
    >>> sorted({partition_for(f"u{i}".encode(), 4) for i in range(100)})
    [0, 1, 2, 3]
    """
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(slots=True)
class ActivityMessage:
    """One live event out of a ``user-activity`` batch, shaped like a Faust message."""

    topic: str
    partition: int
    offset: int
    body: dict[str, Any]

    @property
    def key(self) -> bytes:
        return str(self.body.get("user_id", "")).encode()

    @property
    def value(self) -> bytes:  # only needed to dead-letter it
        return orjson.dumps(self.body)


SOURCE_FIELD = "lp_src"  # [live-events partition, offset] of a forwarded event


def forwarded(body: dict[str, Any], partition: int, offset: int) -> bytes:
    """One live event encoded for a batch, with its input position.

    >>> forwarded({"event_id": "e1"}, 2, 17)
    b'{"event_id":"e1","lp_src":[2,17]}'
    """
    return orjson.dumps({**body, SOURCE_FIELD: [partition, offset]})


def source_of(body: dict[str, Any]) -> tuple[str, int] | None:
    """The source name and offset of a forwarded event (None if it carries none).

    >>> source_of({"lp_src": [2, 17]}), source_of({}), source_of({"lp_src": "x"})
    (('l2', 17), None, None)
    """
    position = body.get(SOURCE_FIELD)
    if (isinstance(position, list) and len(position) == 2
            and all(type(n) is int and n >= 0 for n in position)):
        return f"l{position[0]}", position[1]
    return None


def unbatch(message: Any) -> list[ActivityMessage]:
    """The events of one ``user-activity`` record (a JSON array; a single object also works).

    >>> from types import SimpleNamespace
    >>> batch = SimpleNamespace(topic="t", partition=1, offset=7,
    ...                         value=b'[{"user_id": "a"}, {"user_id": "b"}]')
    >>> [(m.key, m.partition, m.offset) for m in unbatch(batch)]
    [(b'a', 1, 7), (b'b', 1, 7)]

    Raises ``ValueError`` (``orjson.JSONDecodeError``) or ``TypeError`` for anything else.
    """
    decoded = orjson.loads(message.value)
    bodies = decoded if isinstance(decoded, list) else [decoded]
    if not all(isinstance(body, dict) for body in bodies):
        raise TypeError("a user-activity record holds live events (JSON objects)")
    return [ActivityMessage(message.topic, message.partition, message.offset, body)
            for body in bodies]


class ActivityBatcher:
    """Per-partition batches of encoded live events for the ``user-activity`` topic."""

    def __init__(self, engine: Engine, *, max_batch: int = 256, linger_s: float = 0.002) -> None:
        self.engine = engine
        self.topic = engine.topics.user_activity
        self.partitions = engine.settings.partitions
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._pending: dict[int, list[bytes]] = {}
        self._started = asyncio.Event()

    async def add(self, user_id: str, body: bytes) -> None:
        """Hold one encoded live event; send its partition's batch when full."""
        partition = partition_for(user_id.encode(), self.partitions)
        batch = self._pending.setdefault(partition, [])
        batch.append(body)
        self._started.set()
        if len(batch) >= self.max_batch:
            await self._send(partition)

    async def flush(self) -> None:
        """Send every batch held (before offsets are committed, on revoke and at stop)."""
        for partition in list(self._pending):
            await self._send(partition)

    async def _send(self, partition: int) -> None:
        batch = self._pending.pop(partition, None)
        if batch:
            await self.engine.send(self.topic, None, b"[" + b",".join(batch) + b"]",
                                   partition=partition)

    async def run(self) -> None:
        """Send what is held ``linger_s`` after the first event of a quiet spell."""
        try:
            while True:
                await self._started.wait()
                await asyncio.sleep(self.linger_s)
                self._started.clear()
                await self.flush()
        except asyncio.CancelledError:
            await self.flush()
            raise
