"""The event-loop watch: lag observed per tick, a blocked loop reported once with its stack."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import CollectorRegistry

from agents.loop_watch import LoopWatch


def blocking_step(registry: CollectorRegistry) -> None:
    """The stall under test: holds the loop as slow handler code would, until the watch
    has reported it (a loaded machine may schedule the watch thread late), then 150 ms
    more (so the next tick is well over 100 ms late)."""
    deadline = time.monotonic() + 20
    while not registry.get_sample_value("livepulse_event_loop_stalls_total") \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.15)


def test_a_blocked_loop_is_counted_and_logged_with_its_stack(
        caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    watch = LoopWatch(registry, stall_ms=100)

    async def scenario() -> None:
        task = asyncio.create_task(watch.run())
        while registry.get_sample_value("livepulse_event_loop_lag_seconds_count") in (None, 0):
            await asyncio.sleep(0.005)  # until the first tick was observed
        blocking_step(registry)
        deadline = time.monotonic() + 10
        while registry.get_sample_value("livepulse_event_loop_lag_seconds_bucket",
                                        {"le": "0.1"}) == registry.get_sample_value(
                "livepulse_event_loop_lag_seconds_count") and time.monotonic() < deadline:
            await asyncio.sleep(0.005)  # until the late tick is observed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    with caplog.at_level(logging.WARNING, logger="livepulse.loop"):
        asyncio.run(scenario())
    # >= : a loaded machine may hold the loop once more on its own
    assert registry.get_sample_value("livepulse_event_loop_stalls_total") >= 1
    count = registry.get_sample_value("livepulse_event_loop_lag_seconds_count")
    within = registry.get_sample_value("livepulse_event_loop_lag_seconds_bucket", {"le": "0.1"})
    assert count - within >= 1  # the tick after the block came > 100 ms late
    reports = [r.getMessage() for r in caplog.records if "event loop held" in r.getMessage()]
    assert any("blocking_step" in report for report in reports)


def test_stall_reports_can_be_switched_off() -> None:
    assert LoopWatch(None, stall_ms=0).stall_s is None
