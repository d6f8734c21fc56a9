"""``livepulse tail TOPIC``: print a topic's records as JSON lines (no consumer group, so it
commits nothing and disturbs no one).

>>> print(record_line("lp.promo-triggers", 0, 7, b"u1", b'{"score": 0.9}'))
{"topic":"lp.promo-triggers","partition":0,"offset":7,"key":"u1","value":{"score":0.9}}
>>> print(record_line("t", 1, 2, None, b"not json"))
{"topic":"t","partition":1,"offset":2,"key":null,"value":"not json"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer


def record_line(topic: str, partition: int, offset: int, key: bytes | None,
                value: bytes | None) -> str:
    """One record as a JSON line; a value that is not JSON is shown as text."""
    try:
        body: Any = None if value is None else orjson.loads(value)
    except orjson.JSONDecodeError:
        body = value.decode("utf-8", "replace") if value is not None else None
    return orjson.dumps({"topic": topic, "partition": partition, "offset": offset,
                         "key": key.decode("utf-8", "replace") if key is not None else None,
                         "value": body}).decode()


async def tail(bootstrap: str, topic: str, emit: Callable[[str], None], *,
               from_beginning: bool = False, limit: int = 0,
               client_options: dict[str, Any] | None = None) -> int:
    """Call ``emit`` with each new record's line (all of them with ``from_beginning``) until
    ``limit`` records (0: until cancelled); return how many were emitted."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", **(client_options or {}))
    await consumer.start()
    seen = 0
    try:
        async for record in consumer:
            emit(record_line(record.topic, record.partition, record.offset, record.key,
                             record.value))
            seen += 1
            if seen == limit:
                break
    finally:
        await consumer.stop()
    return seen
