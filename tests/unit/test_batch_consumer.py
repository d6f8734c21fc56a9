"""The batching consumer (streams.app) against the Faust version it is pinned to: the
private API it overrides still exists, and its drain loop hands hot partitions over as
ordered record lists, bounded, dropping the rest of a fetch after a rebalance."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from importlib import metadata
from types import MethodType, SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer

from streams.app import MAX_BATCH, WorkerHooks, _LowLatencyConsumer, attach_hooks


def test_faust_version_is_the_pinned_minor() -> None:
    assert metadata.version("faust-streaming").startswith("0.15.")


@pytest.mark.parametrize("name", [
    "_drain_messages", "_wait_next_records", "_new_offset", "_filter_tps_with_pending_acks",
    "_filter_committable_offsets", "perform_seek", "_add_gap", "on_partitions_revoked",
    "_handle_attached", "_commit_offsets", "maybe_wait_for_commit_to_finish"])
def test_private_faust_api_used_by_the_subclass_exists(name: str) -> None:
    assert inspect.iscoroutinefunction(getattr(FaustConsumer, name)) or callable(
        getattr(FaustConsumer, name))


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class Rec:
    offset: int


class Flag:
    def __init__(self) -> None:
        self.set_ = False

    def is_set(self) -> bool:
        return self.set_

    async def wait(self) -> None:
        await asyncio.sleep(3600)


class FakeApp:
    client_only = False
    in_transaction = False

    def __init__(self) -> None:
        self.consumer_generation_id = 1
        self.monitor = SimpleNamespace(stream_inbound_time={},
                                       track_tp_end_offset=lambda tp, hw: None)
        self.should_stop = False


class Handler:
    def __init__(self, app: FakeApp, rebalance_after: int | None = None) -> None:
        self.app = app
        self.calls: list[tuple[TP, list[int]]] = []
        self.rebalance_after = rebalance_after

    async def handle_batch(self, tp: TP, records: list[Rec]) -> None:
        self.calls.append((tp, [r.offset for r in records]))
        if self.rebalance_after is not None and len(self.calls) == self.rebalance_after:
            self.app.consumer_generation_id += 1


def fake_consumer(fetches: list[dict[TP, list[Rec]]], handlers: dict[str, Any],
                  app: FakeApp, settings: Any = None) -> Any:
    """Just what the drain loop touches of Faust's consumer."""
    fake = SimpleNamespace()
    fake.app = app
    attach_hooks(app, WorkerHooks(batch_handlers=handlers, settings=settings))
    fake._stopped = Flag()
    fake.flow_active = True
    fake.should_stop = False
    fake._read_offset = {}
    fake._buffered_partitions = set()
    fake.transport = SimpleNamespace(app=app)
    fake.consumer_stopped_errors = ()
    fake.highwater = lambda tp: 0
    fake.per_message: list[tuple[TP, int]] = []
    pending = list(fetches)

    async def wait_next(timeout: float) -> tuple[dict[TP, list[Rec]], None]:
        if not pending:
            fake._stopped.set_ = True
            return {}, None
        return pending.pop(0), None

    async def per_message(tp: TP, recs: list[Rec], callback: Any, to_message: Any) -> None:
        fake.per_message.extend((tp, r.offset) for r in recs)
        for r in recs:
            fake._read_offset[tp] = r.offset

    fake._wait_next_records = wait_next
    fake._per_message = per_message
    fake.callback = None
    fake._to_message = None
    fake.__dict__["_lp_batch_done"] = {}
    fake._batch_done = MethodType(_LowLatencyConsumer._batch_done, fake)
    fake._new_offset = MethodType(_LowLatencyConsumer._new_offset, fake)
    return fake


def drain(fake: Any) -> None:
    asyncio.run(_LowLatencyConsumer._drain_messages(fake, SimpleNamespace(_stopped=Flag())))


def test_hot_partitions_are_handed_over_in_order_and_their_offsets_committable() -> None:
    app = FakeApp()
    handler = Handler(app)
    hot0, hot1, cold = TP("live", 0), TP("live", 1), TP("consent", 0)
    fake = fake_consumer([{hot0: [Rec(0), Rec(1)], cold: [Rec(5)], hot1: [Rec(7)]},
                          {hot0: [Rec(1), Rec(2)]}],  # offset 1 again: refetched, skipped
                         {"live": handler}, app)
    fake._read_offset[hot1] = 7  # after a seek to the committed offset 7: read from 7 on
    drain(fake)
    assert handler.calls == [(hot0, [0, 1]), (hot1, [7]), (hot0, [2])]
    assert fake.per_message == [(cold, 5)]
    assert fake._new_offset(hot0) == 3 and fake._new_offset(hot1) == 8
    assert set(app.monitor.stream_inbound_time) == {hot0, hot1}


def test_a_big_fetch_is_handed_over_in_bounded_batches() -> None:
    app = FakeApp()
    handler = Handler(app)
    tp = TP("live", 0)
    fake = fake_consumer([{tp: [Rec(i) for i in range(MAX_BATCH + 5)]}], {"live": handler}, app)
    drain(fake)
    assert [len(offsets) for _, offsets in handler.calls] == [MAX_BATCH, 5]
    assert fake._new_offset(tp) == MAX_BATCH + 5


def test_a_rebalance_drops_the_rest_of_the_fetch_and_its_offsets() -> None:
    app = FakeApp()
    handler = Handler(app, rebalance_after=1)
    tp0, tp1 = TP("live", 0), TP("live", 1)
    fake = fake_consumer([{tp0: [Rec(0)], tp1: [Rec(0)]}], {"live": handler}, app)
    drain(fake)
    assert handler.calls == [(tp0, [0])]  # tp1 belongs to the next owner now
    assert fake._batch_done() == {}  # nothing committable from the revoked generation


def test_a_small_round_lingers_before_the_next_fetch_a_full_one_does_not(
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = FakeApp()
    handler = Handler(app)
    tp = TP("live", 0)
    small = {tp: [Rec(0), Rec(1)]}
    full = {tp: [Rec(i) for i in range(2, 2 + MAX_BATCH)]}
    fake = fake_consumer([small, full], {"live": handler}, app,
                         settings=SimpleNamespace(fetch_linger_ms=5.0))
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    drain(fake)
    assert [d for d in slept if d] == [0.005]  # after the 2-record round only
    assert [len(offsets) for _, offsets in handler.calls] == [2, MAX_BATCH]


class FakeKafkaConsumer:
    """aiokafka's seek_to_committed as it behaves: only offsets above 0 are sought."""

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.committed = committed
        self.sought: dict[Any, int] = {}

    async def seek_to_committed(self) -> dict[Any, int | None]:
        self.sought.update({tp: o for tp, o in self.committed.items() if o and o > 0})
        return dict(self.committed)

    def seek(self, tp: Any, offset: int) -> None:
        self.sought[tp] = offset


def test_seek_to_committed_also_moves_partitions_with_no_or_zero_commit() -> None:
    """A partition with nothing committed must go back to its start after a rebalance:
    aiokafka leaves its fetch position, and records fetched and dropped meanwhile were lost
    (the first events of a partition, on Apache Kafka). Changelogs are left to Faust."""
    from streams.app import _LowLatencyConsumerThread

    new, started, moved, log = (TP("in", 0), TP("in", 1), TP("in", 2),
                                TP("app-room-state-changelog", 0))
    fake = FakeKafkaConsumer({new: None, started: 0, moved: 17, log: None})
    thread = SimpleNamespace(
        _ensure_consumer=lambda: fake,
        app=SimpleNamespace(tables=SimpleNamespace(changelog_topics={log.topic})))
    seek = MethodType(_LowLatencyConsumerThread._seek_every_partition_to_committed, thread)
    committed = asyncio.run(seek())
    assert committed == {new: None, started: 0, moved: 17, log: None}
    assert fake.sought == {new: 0, started: 0, moved: 17}


def test_under_exactly_once_no_handler_runs_while_a_commit_holds_the_gate() -> None:
    """A commit fixes its offsets, then commits the transactions the outputs joined: a
    handler running in between would put outputs of later events into them."""
    from streams.app import hooks_of

    app = FakeApp()
    app.in_transaction = True  # type: ignore[misc]
    tp = TP("live", 0)
    order: list[str] = []

    class Recording(Handler):
        async def handle_batch(self, tp: TP, records: list[Rec]) -> None:
            order.append(f"handled {records[0].offset}")
            await super().handle_batch(tp, records)

    fake = fake_consumer([{tp: [Rec(0)]}, {tp: [Rec(1)]}], {"live": Recording(app)}, app)
    gate = hooks_of(app).commit_gate

    async def run() -> None:
        async def commit() -> None:
            async with gate:  # as _LowLatencyConsumer.commit does under exactly_once
                order.append("commit starts")
                await asyncio.sleep(0.05)
                order.append("commit ends")

        await gate.acquire()  # a commit began before the first fetch was handed over
        loop = asyncio.create_task(_LowLatencyConsumer._drain_messages(
            fake, SimpleNamespace(_stopped=Flag())))
        await asyncio.sleep(0.02)
        order.append("gate released")
        gate.release()
        await asyncio.sleep(0)
        await commit()
        await loop

    asyncio.run(run())
    assert order[0] == "gate released"  # nothing was handled while the first commit ran
    start, end = order.index("commit starts"), order.index("commit ends")
    assert not [x for x in order[start:end] if x.startswith("handled")], order
    assert {"handled 0", "handled 1"} <= set(order)


def test_a_first_batch_past_the_sought_offset_is_not_handled_but_read_again() -> None:
    """After a seek to the committed offset (157), a batch starting at 298 holds records
    fetched before it: handled, the re-read would skip 157..297 (issue 16)."""
    app = FakeApp()
    handler = Handler(app)
    tp = TP("t.live-events", 0)
    fake = fake_consumer([{tp: [Rec(298), Rec(299)]}, {tp: [Rec(157), Rec(158)]},
                          {tp: [Rec(159)]}], {"t.live-events": handler}, app)
    fake._read_offset[tp] = 157
    fake.__dict__["_lp_sought"] = {tp: 0}
    sought: list[tuple[TP, int]] = []

    async def seek(partition: TP, offset: int) -> None:
        sought.append((partition, offset))
        fake._read_offset[partition] = offset

    fake.seek = seek
    drain(fake)
    assert sought == [(tp, 157)]
    assert handler.calls == [(tp, [157, 158]), (tp, [159])]
