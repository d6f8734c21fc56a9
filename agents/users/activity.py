"""The ``user-activity`` hop in batches: live events re-keyed by user, one record per user
partition per handled input batch.

Every live event concerning a user travels from the room pipeline (keyed by room) to the
user pipeline (keyed by user). One Kafka record per event made that hop cost a produce, a
fetch and a pass through Faust's stream machinery per event. The room pipeline instead
groups the events of one handled ``live-events`` batch by the user's partition (the
partition Kafka's default murmur2 partitioner gives the ``user_id`` key, so it is the one
that owns the user's state) and sends each group as one record, a JSON array of live
events, with the batch's other outputs (``agents.rooms.pipeline.RoomHandler``). The user pipeline
splits a record back into events (:func:`unbatch`) and handles and guards each on its own.
Faust flushes the producer before it commits offsets, so nothing forwarded is lost.

Each forwarded event carries its position in ``live-events`` (:data:`SOURCE_FIELD`: partition
and offset, see :func:`forwarded`): a live event may be forwarded twice (the room pipeline
replays its input after a crash or a rebalance), and the user pipeline skips a position it
has folded in already (:meth:`agents.users.profile.UserProfile.is_duplicate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


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
