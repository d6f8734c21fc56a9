"""Write-behind tables (agents.state) sending their changelog through the output batches:
one record per dirty key at flush, encoded with the table's own serializers (what Faust's
recovery reads), tombstones in order with the writes around them."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import faust
import orjson

from agents.state import WriteBehindTable
from agents.testing import RecordingProducer
from agents.users.profile import UserProfile
from streams.outputs import OutputBatches


def fake_table(serializer: str = "json") -> Any:
    app = faust.App("write-behind-test", value_serializer="json")
    table = SimpleNamespace(name="t", data={}, key_serializer="json",
                            value_serializer=serializer, app=app,
                            changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-changelog"))
    return table


def test_one_changelog_record_per_dirty_key_at_flush_with_the_tables_serializers() -> None:
    producer = RecordingProducer()
    outputs = OutputBatches(lambda: producer)
    state = WriteBehindTable(fake_table(), outputs=outputs)
    for n in range(3):
        state.set("u1", {"n": n}, 2)
    state.set("u2", {"n": 9}, 1)
    assert outputs.held == 0  # nothing before the flush
    assert state.flush() == 2
    asyncio.run(outputs.drain())
    sent = {(s.partition, s.key, orjson.loads(s.value)["n"]) for s in producer.sent}
    assert sent == {(2, b'"u1"', 2), (1, b'"u2"', 9)}
    assert {s.topic for s in producer.sent} == {"t-changelog"}


def test_a_deleted_key_gets_a_tombstone_after_its_earlier_writes() -> None:
    producer = RecordingProducer()
    outputs = OutputBatches(lambda: producer)
    state = WriteBehindTable(fake_table(), outputs=outputs)
    state.set("u1", {"n": 1}, 0)
    state.flush()
    assert state.delete("u1", 0)
    state.set("u2", {"n": 2}, 0)
    state.flush()
    asyncio.run(outputs.drain())
    assert [(s.key, s.value and orjson.loads(s.value)) for s in producer.sent] == [
        (b'"u1"', {"n": 1}), (b'"u1"', None), (b'"u2"', {"n": 2})]


def test_live_profile_objects_are_written_as_their_dict() -> None:
    producer = RecordingProducer()
    outputs = OutputBatches(lambda: producer)
    state = WriteBehindTable(fake_table("orjson"), outputs=outputs)
    profile = UserProfile("u1")
    state.set("u1", profile, 0)
    state.flush()
    asyncio.run(outputs.drain())
    restored = UserProfile.from_dict(orjson.loads(producer.sent[0].value))
    assert restored.to_dict() == profile.to_dict()


class SlowProducer(RecordingProducer):
    """Each batch waits for ``gate``: a broker round trip that has not come back yet."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.batches: list[list[bytes]] = []

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
        await self.gate.wait()
        self.batches.append([value for _, value, _ in batch.records])
        return await super().send_batch(batch, topic, partition=partition)


def test_flush_does_not_wait_for_a_slow_broker_and_keeps_order() -> None:
    async def run() -> SlowProducer:
        producer = SlowProducer()
        outputs = OutputBatches(lambda: producer, partition_counts={"t": 1})
        outputs.add("t", b"k", b"1", partition=0)
        await asyncio.wait_for(outputs.flush(), 1)  # returns at once: the pump waits
        outputs.add("t", b"k", b"2", partition=0)
        outputs.add("t", b"k", b"3", partition=0)
        await asyncio.wait_for(outputs.flush(), 1)
        assert producer.sent == []
        producer.gate.set()
        await asyncio.wait_for(outputs.drain(), 1)
        return producer

    producer = asyncio.run(run())
    assert producer.batches == [[b"1"], [b"2", b"3"]]  # what came meanwhile: one batch
    assert [s.value for s in producer.sent] == [b"1", b"2", b"3"]


def test_a_failed_hand_over_is_raised_by_the_next_drain() -> None:
    class Broken(RecordingProducer):
        async def send_batch(self, batch: Any, topic: str, *, partition: int) -> Any:
            raise RuntimeError("broker gone")

    async def run() -> None:
        outputs = OutputBatches(lambda: Broken(), partition_counts={"t": 1})
        outputs.add("t", b"k", b"1", partition=0)
        await outputs.flush()
        await outputs.drain()

    try:
        asyncio.run(run())
    except RuntimeError as error:
        assert "broker gone" in str(error)
    else:
        raise AssertionError("the failure was swallowed")
