"""The history sink's backpressure without servers: pause at the buffer bound, resume below
it, every pause counted, the log rate-limited (a catch-up pauses once per batch)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from agents.sinks import clickhouse as clickhouse_sink
from agents.sinks.clickhouse import ClickHouseSink
from config.settings import Settings


class FakeConsumer:
    """The four consumer calls the backpressure uses."""

    def __init__(self) -> None:
        self.assigned = {("t", 0), ("t", 1)}
        self.paused_tps: set[Any] = set()

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def pause(self, *tps: Any) -> None:
        self.paused_tps |= set(tps)

    def resume(self, *tps: Any) -> None:
        self.paused_tps -= set(tps)

    def paused(self) -> set[Any]:
        return set(self.paused_tps)


def sample(sink: ClickHouseSink, name: str) -> float:
    return sink.metrics.registry.get_sample_value(name) or 0.0


def test_full_buffer_pauses_every_partition_counts_and_logs_at_most_every_30_s(
        caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(clickhouse_url="clickhouse://default:@127.0.0.1:1/hist",
                        clickhouse_batch_rows=5, clickhouse_max_buffered_rows=10)
    sink = ClickHouseSink(settings, "127.0.0.1:1")  # no I/O until run()
    consumer = sink.consumer = FakeConsumer()  # type: ignore[assignment]
    for offset in range(10):
        sink.buffer.add(("t", 0), offset, ("row",), now=0.0)
    with caplog.at_level(logging.DEBUG, logger="livepulse.clickhouse"):
        for _ in range(5):  # a catch-up: full, drained by a batch, full again...
            sink._set_paused(True)
            assert consumer.paused_tps == consumer.assigned and sink.paused
            assert sample(sink, "livepulse_clickhouse_paused") == 1
            sink._set_paused(False)
            assert consumer.paused_tps == set() and not sink.paused
        sink._pause_logged_at -= clickhouse_sink.PAUSE_LOG_INTERVAL_S
        sink._set_paused(True)
    assert sample(sink, "livepulse_clickhouse_pauses_total") == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "ClickHouse sink buffer full (10 rows): fetching paused until a batch is stored "
        "(backpressure; paused 1 times since the last message)",
        "ClickHouse sink buffer full (10 rows): fetching paused until a batch is stored "
        "(backpressure; paused 5 times since the last message)"]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == ["ClickHouse sink fetching again (10 rows buffered)"]


def test_driver_connection_tracebacks_stay_out_of_the_log(
        caplog: pytest.LogCaptureFixture) -> None:
    driver = logging.getLogger("clickhouse_driver.connection")
    with caplog.at_level(logging.INFO):
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError:
            driver.warning("Failed to connect to %s:%s", "127.0.0.1", 9000, exc_info=True)
        driver.warning("something else")
    assert [r.getMessage() for r in caplog.records if r.name == driver.name] == [
        "something else"]
