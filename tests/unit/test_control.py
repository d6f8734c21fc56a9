"""The control topic reader (streams.control) against an in-memory stand-in of aiokafka's
consumer: positions, caught-up detection by fetch high watermark, reconnects, back-off."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

import streams.control as control
from streams.control import Backoff, ControlTopicReader

Log = dict[str, list[list[tuple[bytes | None, bytes | None]]]]


class FakeConsumer:
    """Just what the reader uses of ``AIOKafkaConsumer``, over ``log`` (topic -> partitions
    -> records). ``fail_fetch_at``: the n-th getmany raises; ``fail_start``: start raises."""

    def __init__(self, log: Log, kwargs: dict[str, Any], *, fail_start: bool = False,
                 fail_fetch_at: int | None = None, listed: set[str] | None = None) -> None:
        self.log, self.kwargs = log, kwargs
        self.fail_start, self.fail_fetch_at = fail_start, fail_fetch_at
        self.listed = set(log) if listed is None else listed  # topics in the metadata
        self.assigned: list[TopicPartition] = []
        self.pos: dict[TopicPartition, int] = {}
        self.high: dict[TopicPartition, int] = {}
        self.seeks: dict[TopicPartition, int] = {}
        self.fetches = 0
        self.started = self.stopped = False

    async def start(self) -> None:
        if self.fail_start:
            raise ConnectionError("no broker")
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return set(range(len(self.log[topic]))) if topic in self.listed else None

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.pos[tp] = self.seeks[tp] = offset

    async def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.pos[tp] = 0

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.high.get(tp)

    async def position(self, tp: TopicPartition) -> int:
        return self.pos[tp]

    async def getmany(self, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        self.fetches += 1
        if self.fail_fetch_at is not None and self.fetches >= self.fail_fetch_at:
            raise ConnectionError("fetch failed")
        out: dict[TopicPartition, list[Any]] = {}
        room = max_records if max_records is not None else 1 << 30
        for tp in self.assigned:
            records = self.log[tp.topic][tp.partition] if tp.partition < len(
                self.log.get(tp.topic, [])) else []
            self.high[tp] = len(records)  # every fetch response carries the high watermark
            take = records[self.pos[tp]: self.pos[tp] + room]
            if take:
                out[tp] = [ConsumerRecord(tp.topic, tp.partition, self.pos[tp] + i, 0, 0, k, v,
                                          None, 0, 0, ()) for i, (k, v) in enumerate(take)]
                self.pos[tp] += len(take)
                room -= len(take)
        if not out:
            await asyncio.sleep(0)
        return out


@pytest.fixture
def consumers(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Patch the reader's consumer class; ``plan`` lists the options of each new consumer
    (the last one repeats), ``made`` the consumers built."""

    class Factory:
        log: Log = {}
        plan: list[dict[str, Any]] = [{}]
        made: list[FakeConsumer] = []

        def __call__(self, **kwargs: Any) -> FakeConsumer:
            options = self.plan[min(len(self.made), len(self.plan) - 1)]
            self.made.append(FakeConsumer(self.log, kwargs, **options))
            return self.made[-1]

    factory = Factory()
    factory.made = []
    monkeypatch.setattr(control, "AIOKafkaConsumer", factory)
    return factory


def _records(n: int, prefix: str = "r") -> list[tuple[bytes | None, bytes | None]]:
    return [(f"k{i}".encode(), f"{prefix}{i}".encode()) for i in range(n)]


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(1.0, 30.0)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    backoff.reset()
    assert backoff.next() == 1.0
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


async def test_read_to_end_reads_every_partition_from_the_start(consumers: Any) -> None:
    consumers.log = {"campaigns": [_records(3, "a"), [], _records(2, "c")]}
    reader = ControlTopicReader("b:9092", "campaigns", client_options={"security_protocol":
                                                                       "SSL"})
    reader.positions[TopicPartition("campaigns", 0)] = 2  # saved: read on from there
    records = await reader.read_to_end(timeout=5)
    assert [r.value for r in records] == [b"a2", b"c0", b"c1"]
    consumer = consumers.made[0]
    assert consumer.kwargs["group_id"] is None and not consumer.kwargs["enable_auto_commit"]
    assert consumer.kwargs["security_protocol"] == "SSL"
    assert consumer.kwargs["fetch_max_wait_ms"] == 100
    assert consumer.seeks == {TopicPartition("campaigns", 0): 2}
    assert reader.positions == {TopicPartition("campaigns", 0): 3,
                                TopicPartition("campaigns", 2): 2}
    assert reader.caught_up.is_set() and consumer.stopped and not reader.started


async def test_read_to_end_needs_a_fetch_high_watermark(consumers: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No fetch response, no high watermark: never caught up (ListOffsets is not trusted)."""
    consumers.log = {"campaigns": [_records(1)]}
    monkeypatch.setattr(FakeConsumer, "highwater", lambda self, tp: None)
    reader = ControlTopicReader("b:9092", "campaigns", poll_ms=1)
    with pytest.raises(TimeoutError, match="campaigns"):
        await reader.read_to_end(timeout=0.05)
    assert not reader.caught_up.is_set() and consumers.made[0].stopped


async def test_partitions_default_when_the_metadata_does_not_list_the_topic(
        consumers: Any) -> None:
    consumers.log = {"erasure": [_records(1), _records(1)], "outputs": [_records(1)]}
    consumers.plan = [{"listed": set()}]
    reader = ControlTopicReader("b:9092", ["erasure"], default_partitions=2)
    assert len(await reader.read_to_end(timeout=5)) == 2
    skipped = ControlTopicReader("b:9092", ["outputs"], default_partitions=0)
    assert await skipped.read_to_end(timeout=5) == [] and skipped.partitions == []


async def test_follow_goes_on_from_its_positions_after_an_error(consumers: Any) -> None:
    consumers.log = {"campaigns": [_records(4, "c")], "attribution": [_records(3, "a")]}
    # the first consumer fails on its 3rd fetch, the next cannot connect, the third works
    consumers.plan = [{"fail_fetch_at": 3}, {"fail_start": True}, {}]
    seen: list[bytes] = []
    synced: list[int] = []
    reader = ControlTopicReader("b:9092", ["campaigns", "attribution"], max_records=2,
                                caught_up_topics=["campaigns"], backoff_s=0.001,
                                max_backoff_s=0.002)
    task = asyncio.create_task(reader.follow(lambda r: seen.append(r.value),
                                             on_caught_up=lambda: synced.append(len(seen))))
    await asyncio.wait_for(reader.caught_up.wait(), 5)
    while len(seen) < 7:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(seen) == sorted(v for topic in consumers.log.values()
                                  for part in topic for _, v in part)
    assert len(seen) == len(set(seen)) == 7  # each record once, none again after reconnects
    assert synced == [4]  # once, right after the last campaign record
    first, refused, third = consumers.made[:3]
    assert first.stopped and refused.stopped and third.stopped  # cancel disconnects too
    # campaigns were read (4 records, 2 per fetch) before the failure; attribution not yet
    assert third.seeks == {TopicPartition("campaigns", 0): 4}


async def test_a_failing_apply_gets_the_same_record_again(consumers: Any) -> None:
    consumers.log = {"erasure": [_records(3)]}
    calls: list[tuple[int, bytes]] = []

    def apply(record: ConsumerRecord[bytes, bytes]) -> None:
        calls.append((record.offset, record.value))
        if record.offset == 1 and sum(1 for o, _ in calls if o == 1) == 1:
            raise RuntimeError("bug")

    reader = ControlTopicReader("b:9092", "erasure", backoff_s=0.001, max_backoff_s=0.001)
    task = asyncio.create_task(reader.follow(apply))
    while len(calls) < 4:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [o for o, _ in calls] == [0, 1, 1, 2]
    assert consumers.made[1].seeks == {TopicPartition("erasure", 0): 1}


async def test_start_failure_disconnects_and_raises(consumers: Any) -> None:
    consumers.plan = [{"fail_start": True}]
    consumers.log = {"t": [[]]}
    reader = ControlTopicReader("b:9092", "t")
    with pytest.raises(ConnectionError):
        await reader.start()
    assert consumers.made[0].stopped and not reader.started


async def test_log_ends_takes_listoffsets_up_to_the_fetch_high_watermark(
        consumers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import streams.app

    consumers.log = {"a": [_records(5), _records(2)], "b": [_records(1)]}
    consumers.plan = [{"listed": {"a"}}]  # "b" unknown: no partitions, no end

    async def topics(self: FakeConsumer) -> set[str]:
        return self.listed

    async def end_offsets(self: FakeConsumer, tps: list[TopicPartition]) -> dict[Any, int]:
        return {tp: max(0, len(self.log[tp.topic][tp.partition]) - 1) for tp in tps}

    async def probe(bootstrap: str, reported: dict[Any, int], timeout_s: float = 5.0,
                    client_options: Any = None) -> dict[Any, int]:
        return {tp: end + 1 for tp, end in reported.items()}  # what a fetch would add

    monkeypatch.setattr(FakeConsumer, "topics", topics, raising=False)
    monkeypatch.setattr(FakeConsumer, "end_offsets", end_offsets, raising=False)
    monkeypatch.setattr(streams.app, "log_ends", probe)
    ends = await ControlTopicReader("b:9092", ["a", "b"]).log_ends()
    assert ends == {TopicPartition("a", 0): 5, TopicPartition("a", 1): 2}
    assert consumers.made[0].stopped
