"""Output batches: a drain waits for what was added before it, not for what comes later."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.outputs import OutputBatches, OutputsLost


class Builder:
    def __init__(self) -> None:
        self.records: list[tuple[Any, Any]] = []

    def append(self, *, timestamp: Any, key: Any, value: Any, headers: Any = ()) -> object:
        self.records.append((key, value))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class SlowProducer:
    """Each batch takes a few loop turns to be taken (a broker round trip)."""

    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, int, list[Any]]] = []
        self.fail = fail

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, batch: Builder, topic: str, *, partition: int) -> Any:
        for _ in range(3):
            await asyncio.sleep(0)
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append((topic, partition, batch.records))
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def test_a_drain_does_not_chase_records_added_while_it_waits() -> None:
    producer = SlowProducer()
    out = OutputBatches(lambda: producer, partition_counts={"t": 1})

    async def scenario() -> int:
        for i in range(3):
            out.add("t", b"k", b"before-%d" % i, partition=0)
        adding = True

        async def keep_adding() -> None:  # a handler that never pauses
            i = 0
            while adding:
                out.add("t", b"k", b"after-%d" % i, partition=0)
                await out.flush()
                i += 1
                await asyncio.sleep(0)

        writer = asyncio.create_task(keep_adding())
        await asyncio.wait_for(out.drain(), timeout=5)  # returns though adds never stop
        handed = [v for _, _, records in producer.sent for _, v in records]
        adding = False
        await writer
        await out.drain()
        return handed.index(b"before-2")

    assert asyncio.run(scenario()) == 2  # everything added before the drain was handed


def test_a_failed_hand_over_fails_every_later_drain() -> None:
    out = OutputBatches(lambda: SlowProducer(fail=True), partition_counts={"t": 1})

    async def scenario() -> None:
        out.add("t", b"k", b"v", partition=0)
        with pytest.raises(ConnectionError):
            await out.drain()
        with pytest.raises(OutputsLost):  # offsets must never move past the lost record
            await out.drain()

    asyncio.run(scenario())
