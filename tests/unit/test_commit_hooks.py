"""The engine consumer's commit (streams.app): offsets are fixed before the before-commit
hooks run, so events handled while an async hook awaits are left for the next commit."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.app import WorkerHooks, _LowLatencyConsumer, attach_hooks


class FakeApp:
    client_only = False
    in_transaction = False
    sensors = SimpleNamespace(on_commit_initiated=lambda c: None,
                              on_commit_completed=lambda c, s: None)


class FakeConsumer:
    """Just what ``_LowLatencyConsumer.commit`` touches of Faust's consumer."""

    _commit_with_hooks = _LowLatencyConsumer._commit_with_hooks

    def __init__(self, hooks: list[Any]) -> None:
        self.acked = [0, 1, 2]  # offsets of handled events on one partition
        self.committed: list[dict[str, int]] = []
        self.app = FakeApp()
        attach_hooks(self.app, WorkerHooks(before_commit=hooks))
        self._commit_fut: asyncio.Future[Any] | None = None

    async def maybe_wait_for_commit_to_finish(self) -> bool:
        return False

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> list[str]:
        return ["tp0"] if self.acked else []

    def _filter_committable_offsets(self, tps: list[str]) -> dict[str, int]:
        if not tps:
            return {}
        offsets = {"tp0": max(self.acked) + 1}
        self.acked = []  # Faust forgets what it hands out
        return offsets

    async def _handle_attached(self, offsets: dict[str, int]) -> None:
        return None

    async def _commit_offsets(self, offsets: dict[str, int],
                              start_new_transaction: bool = True) -> bool:
        self.committed.append(dict(offsets))
        return True


def test_events_handled_during_an_async_hook_are_not_committed_with_it() -> None:
    flushed: list[int] = []  # state sent by the hooks: acked offsets covered at that time
    consumer: FakeConsumer

    async def slow_flush() -> None:
        await asyncio.sleep(0)
        consumer.acked.append(3)  # the agent handled one more event meanwhile...

    def flush_state() -> None:
        flushed.append(3)  # ...whose state the sync hook sends too (ahead: harmless)

    consumer = FakeConsumer([slow_flush, flush_state])

    async def run() -> None:
        assert await _LowLatencyConsumer.commit(consumer)  # type: ignore[arg-type]
        assert consumer.committed == [{"tp0": 3}]  # not 4: fixed before the hooks ran
        assert consumer._commit_fut is None
        assert await _LowLatencyConsumer.commit(consumer)  # type: ignore[arg-type]
        assert consumer.committed[-1] == {"tp0": 4}  # the next commit covers it

    asyncio.run(run())
    assert flushed == [3, 3]


def test_nothing_acked_still_runs_the_hooks() -> None:
    calls: list[str] = []
    consumer = FakeConsumer([lambda: calls.append("hook")])
    consumer.acked = []
    assert not asyncio.run(_LowLatencyConsumer.commit(consumer))  # type: ignore[arg-type]
    assert calls == ["hook"] and consumer.committed == []
