"""The ClickHouse history sink against a real ClickHouse server (Debian's 18.16, started by
the ``clickhouse_url`` fixture) and the real embedded broker.

* migrations: accepted by the server, idempotent, recorded once;
* every table receives its rows, user ids pseudonymized, dead-letter-worthy records
  skipped, offsets committed; every dashboard query returns rows;
* a crash between storing and committing loses nothing: redelivered records are counted
  and skipped; rows stored twice (progress lost) are deduplicated by key (FINAL, OPTIMIZE);
* a sink process killed with SIGKILL mid-stream and restarted loses nothing;
* ClickHouse down: back-off, a bounded buffer with fetching paused, nothing committed,
  catch-up when it returns;
* retention drops day partitions older than N days;
* a user's ad-feedback rows are erased with the user and leave the campaign_metrics view;
* the engine (a real worker with Redis) writes its inputs and outputs to history.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from agents.privacy import pseudonymize
from agents.sinks.clickhouse import ClickHouseSink, ClickHouseWriter
from agents.sinks.clickhouse_schema import MIGRATIONS, TABLE_BY_NAME, TABLES, VIEWS
from agents.sinks.embedded_clickhouse import ClickHouseServer, clickhouse_server_available
from benchmarks.bench_clickhouse import HistoryWorkload, produce, table_of
from config.settings import Settings
from dashboards.clickhouse_sql import QUERIES, duplicates_sql, render
from streams.admin import ensure_topics
from streams.broker import _die_with_parent, free_port
from streams.control import partitions_of
from streams.simulator import Simulator, run_simulation
from streams.topics import TopicNames, topic_names
from tests.conftest import REPO, broker_engine, require, unique_settings
from tests.integration.test_serving import get_json, metric

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)

KEY = "history-test-key-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"


def database_url(base: str, name: str) -> str:
    """``base`` with its database replaced by ``name``."""
    return base.rsplit("/", 1)[0] + "/" + name


def sink_settings(tmp_path: Path, broker: Any, clickhouse: str, **overrides: Any) -> Settings:
    """Own topics, group and database per test."""
    tag = f"h{os.getpid()}x{time.monotonic_ns() % 10**9}"
    values: dict[str, Any] = {
        "kafka_url": broker.bootstrap, "topic_prefix": tag, "app_id": tag, "partitions": 2,
        "data_dir": str(tmp_path / "data"), "clickhouse_url": database_url(clickhouse, tag),
        "pseudonym_key": KEY, "clickhouse_batch_interval_ms": 200,
        "session_timeout_s": 6.0, "heartbeat_interval_s": 0.5, "rebalance_timeout_s": 4.0,
        "broker_engine": broker_engine(broker)}
    values.update(overrides)
    return Settings(**values)


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    writer = ClickHouseWriter(settings.clickhouse_url, group="q", names=topic_names(settings))
    try:
        return writer.execute(sql)
    finally:
        writer.close()


def table_counts(settings: Settings, final: bool = True) -> dict[str, int]:
    db = settings.clickhouse_url.rsplit("/", 1)[1]
    suffix = " FINAL" if final else ""
    return {t.name: query(settings, f"SELECT count() FROM {db}.{t.name}{suffix}")[0][0]
            for t in TABLES}


async def wait_until(check: Callable[[], bool], timeout: float = 60.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(sink: ClickHouseSink) -> AsyncIterator[ClickHouseSink]:
    task = asyncio.create_task(sink.run())
    try:
        await asyncio.wait_for(sink.started.wait(), 30)
        yield sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def committed_total(settings: Settings, group: str) -> int:
    """Sum of the group's committed offsets over every history topic partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_url, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for table in TABLES:
            for tp in await partitions_of(consumer, [table.topic(topic_names(settings))], 0):
                total += await consumer.committed(tp) or 0
        return total
    finally:
        await consumer.stop()


class CrashBeforeCommit(ClickHouseSink):
    """A sink whose process dies after each batch is stored, before its offsets are
    committed (the dangerous moment of at-least-once delivery)."""

    async def _commit(self, batch: Any) -> None:
        return None


def expected_counts(records: list[tuple[str, str, dict[str, Any]]]) -> dict[str, int]:
    counts = Counter(table_of(attribute) for attribute, _, _ in records)
    return {t.name: counts.get(t.name, 0) for t in TABLES}


def sample(sink: ClickHouseSink, name: str, **labels: str) -> float:
    return sink.metrics.registry.get_sample_value(name, labels) or 0.0


# ------------------------------------------------------------------ schema
def test_migrations_are_accepted_by_the_server_and_idempotent(
        clickhouse_url: str, tmp_path: Path) -> None:
    url = database_url(clickhouse_url, f"mig{os.getpid()}x{time.monotonic_ns() % 10**6}")
    first = ClickHouseWriter(url, group="g", names=TopicNames("m"))
    assert first.migrate() == [m.version for m in MIGRATIONS]
    shapes = first.execute(
        "SELECT table, name, type FROM system.columns WHERE database = %(db)s "
        "ORDER BY table, name", {"db": first.database})
    second = ClickHouseWriter(url, group="g", names=TopicNames("m"))  # another process
    assert second.migrate() == []
    assert second.migrate() == []
    assert second.execute(
        "SELECT table, name, type FROM system.columns WHERE database = %(db)s "
        "ORDER BY table, name", {"db": first.database}) == shapes
    assert second.execute(f"SELECT version, count() FROM {first.database}.schema_migrations "
                          "GROUP BY version ORDER BY version") == [
        (m.version, 1) for m in MIGRATIONS]
    tables = {t for t, _, _ in shapes}
    assert tables == {t.name for t in TABLES} | {"schema_migrations", "sink_progress",
                                                 *VIEWS}
    print(f"\nClickHouse server {second.server_version}: {len(tables)} tables")
    first.close()
    second.close()


# ------------------------------------------------------------------ the sink
async def test_every_table_gets_its_rows_and_every_dashboard_query_answers(
        broker: Any, clickhouse_url: str, tmp_path: Path) -> None:
    settings = sink_settings(tmp_path, broker, clickhouse_url)
    names = topic_names(settings)
    await ensure_topics(settings, broker.bootstrap)
    workload = HistoryWorkload(seed=5)
    records = list(workload.records(4000))
    await produce(broker.bootstrap, names, records)
    bad = [(names.live_events, b'{"event_id":'), (names.clicks, b'{"type": "view"}'),
           (names.recommendations, b"[1]")]
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    for topic, value in bad:
        await producer.send_and_wait(topic, value, key=b"k")
    await producer.stop()

    sink = ClickHouseSink(settings, broker.bootstrap)
    async with running(sink):
        await wait_until(lambda: sink.stored_rows >= len(records), what="all rows stored")
        await wait_until(lambda: sample(sink, "livepulse_clickhouse_skipped_records_total",
                                        topic=names.recommendations,
                                        reason="not_an_object") == 1, what="bad skipped")
    assert sink.stored_rows == len(records)
    assert sample(sink, "livepulse_clickhouse_skipped_records_total",
                  topic=names.live_events, reason="malformed_json") == 1
    assert sample(sink, "livepulse_clickhouse_skipped_records_total",
                  topic=names.clicks, reason="missing_field") == 1
    expected = expected_counts(records)
    assert all(expected.values())
    assert table_counts(settings, final=False) == expected == table_counts(settings)
    for table in TABLES:
        assert sample(sink, "livepulse_clickhouse_rows_total", table=table.name) == \
            expected[table.name]
    assert await committed_total(settings, sink.group) == len(records) + len(bad)
    db = sink.writer.database
    # pseudonyms: the same HMAC as agents.privacy, never the user id itself
    users = {r["user_id"] for a, _, r in records if a == "clicks"}
    stored = {p for (p,) in query(settings, f"SELECT DISTINCT user_pid FROM {db}.click_events")}
    assert stored == {pseudonymize(u, KEY.encode()) for u in users}
    assert not query(settings, f"SELECT count() FROM {db}.anomalies WHERE scope = 'user' AND "
                     "(match(scope_id, '^u[0-9]+$') OR match(explanation, ' u[0-9]+:'))")[0][0]
    # the business dashboards' SQL, as Grafana will run it
    to_ms = workload.ts_ms + 1
    for q in QUERIES.values():
        rows = query(settings, render(q, db, to_ms - 3_600_000, to_ms))
        assert rows, f"dashboard query {q.name} returned no rows"
    live = query(settings, render(QUERIES["live_rooms"], db, to_ms - 3_600_000, to_ms))
    assert {r[0] for r in live} <= set(workload.rooms) and live


async def test_crash_between_storing_and_committing_loses_nothing_and_counts_duplicates(
        broker: Any, clickhouse_url: str, tmp_path: Path) -> None:
    settings = sink_settings(tmp_path, broker, clickhouse_url)
    names = topic_names(settings)
    await ensure_topics(settings, broker.bootstrap)
    first = list(HistoryWorkload(seed=6, prefix="a").records(1500))
    await produce(broker.bootstrap, names, first)
    sink = CrashBeforeCommit(settings, broker.bootstrap)
    async with running(sink):
        await wait_until(lambda: sink.stored_rows >= len(first), what="first rows stored")
    assert await committed_total(settings, sink.group) == 0  # stored, never committed
    second = list(HistoryWorkload(seed=7, prefix="b").records(500))
    await produce(broker.bootstrap, names, second)

    again = ClickHouseSink(settings, broker.bootstrap)
    async with running(again):
        await wait_until(lambda: again.stored_rows >= len(second), what="new rows stored")
    duplicates = {t.name: sample(again, "livepulse_clickhouse_duplicates_total", table=t.name)
                  for t in TABLES}
    assert duplicates == {k: float(v) for k, v in expected_counts(first).items()}
    assert again.stored_rows == len(second)  # the redelivered ones were skipped
    total = expected_counts(first + second)
    assert table_counts(settings, final=False) == total == table_counts(settings)
    assert await committed_total(settings, again.group) == len(first) + len(second)

    # A crash after the rows but before their progress record: simulated by a sink whose
    # group has no progress at all. Every row is stored twice; the key deduplicates them.
    db = again.writer.database
    for table in TABLES:  # keep the duplicates visible until we look
        query(settings, f"SYSTEM STOP MERGES {db}.{table.name}")
    other = ClickHouseSink(settings, broker.bootstrap, group=f"{settings.app_id}-other")
    async with running(other):
        await wait_until(lambda: other.stored_rows >= len(first) + len(second),
                         what="rows stored again")
    report = {name: dups for name, _rows, _distinct, dups in query(settings, duplicates_sql(db))}
    assert report == total  # every row once more...
    assert table_counts(settings) == total  # ...and FINAL counts each key once
    for table in TABLES:
        query(settings, f"SYSTEM START MERGES {db}.{table.name}")
        query(settings, f"OPTIMIZE TABLE {db}.{table.name} FINAL")
    assert table_counts(settings, final=False) == total  # merged: duplicates gone for good


def test_a_sink_killed_mid_stream_loses_nothing(broker: Any, clickhouse_url: str,
                                                 tmp_path: Path) -> None:
    settings = sink_settings(tmp_path, broker, clickhouse_url, clickhouse_batch_rows=100,
                             clickhouse_batch_interval_ms=50)
    names = topic_names(settings)
    asyncio.run(ensure_topics(settings, broker.bootstrap))
    env = {**os.environ, **settings.to_env()}
    log_path = tmp_path / "sink.log"

    def start() -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "agents.cli", "history", "run"], cwd=REPO, env=env,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)

    records = list(HistoryWorkload(seed=8).records(12_000))
    chunks = [records[i:i + 1000] for i in range(0, len(records), 1000)]
    process = start()
    db = settings.clickhouse_url.rsplit("/", 1)[1]
    try:
        asyncio.run(produce(broker.bootstrap, names, chunks[0]))
        deadline = time.monotonic() + 90
        while True:  # wait for the first stored rows, then kill in the middle of the stream
            with contextlib.suppress(Exception):
                if query(settings, f"SELECT count() FROM {db}.live_events")[0][0]:
                    break
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.1)

        async def stream_and_kill() -> None:
            for i, chunk in enumerate(chunks[1:]):
                await produce(broker.bootstrap, names, chunk)
                if i == 4:
                    process.kill()
                await asyncio.sleep(0.05)

        asyncio.run(stream_and_kill())
        process.wait(10)
        process = start()
        expected = expected_counts(records)
        deadline = time.monotonic() + 120
        while table_counts(settings) != expected:
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, (table_counts(settings), expected,
                                                 log_path.read_text()[-3000:])
            time.sleep(0.25)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
    stored = table_counts(settings, final=False)
    assert all(stored[name] >= n for name, n in expected.items())  # maybe twice, never lost
    print("\nkilled sink log tail:\n" + "\n".join(
        line for line in log_path.read_text().splitlines() if "clickhouse" in line)[-1500:])


async def test_clickhouse_down_backs_off_bounds_the_buffer_and_catches_up(
        broker: Any, tmp_path: Path) -> None:
    require(clickhouse_server_available(), "clickhouse-server binary")
    server = ClickHouseServer(base_dir=tmp_path / "clickhouse")
    server.start()
    try:
        settings = sink_settings(tmp_path, broker, server.url, clickhouse_batch_rows=100,
                                 clickhouse_batch_interval_ms=100,
                                 clickhouse_max_buffered_rows=500)
        names = topic_names(settings)
        await ensure_topics(settings, broker.bootstrap)
        before = list(HistoryWorkload(seed=9, prefix="a").records(300))
        during = list(HistoryWorkload(seed=10, prefix="b").records(3000))
        await produce(broker.bootstrap, names, before)
        sink = ClickHouseSink(settings, broker.bootstrap, max_backoff_s=2.0)
        async with running(sink):
            await wait_until(lambda: sink.stored_rows >= len(before), what="rows before")
            await wait_until(lambda: sink._job is None)
            committed_before = await committed_total(settings, sink.group)
            server.kill()
            await produce(broker.bootstrap, names, during)
            await wait_until(lambda: sink.paused, what="fetching paused (buffer full)")
            down_at = time.monotonic()
            peak = 0
            while time.monotonic() - down_at < 6.0:
                peak = max(peak, sink.buffered)
                await asyncio.sleep(0.02)
            errors = sample(sink, "livepulse_clickhouse_errors_total", operation="flush")
            assert peak <= settings.clickhouse_max_buffered_rows
            assert sink.paused and not sink.up
            assert sample(sink, "livepulse_clickhouse_up") == 0
            assert sample(sink, "livepulse_clickhouse_paused") == 1
            # back-off: 0.5 s doubling to the 2 s cap, not one attempt per 100 ms poll
            assert 2 <= errors <= 12, errors
            assert await committed_total(settings, sink.group) == committed_before
            server.start()
            await wait_until(lambda: sink.stored_rows >= len(before) + len(during),
                             timeout=60, what="caught up")
            await wait_until(lambda: not sink.paused and sink.up, what="resumed")
        assert table_counts(settings, final=False) == expected_counts(before + during)
        assert await committed_total(settings, sink.group) == len(before) + len(during)
    finally:
        server.cleanup()


def test_retention_drops_day_partitions_older_than_n_days(clickhouse_url: str) -> None:
    url = database_url(clickhouse_url, f"ret{os.getpid()}x{time.monotonic_ns() % 10**6}")
    writer = ClickHouseWriter(url, group="g", names=TopicNames("r"), retention_days=3)
    writer.migrate()
    today = dt.datetime.now(dt.UTC).date()
    table = TABLE_BY_NAME["live_events"]
    rows = []
    for age in (40, 10, 3, 2, 1, 0):
        day = dt.datetime.combine(today - dt.timedelta(days=age), dt.time(12), dt.UTC)
        record = {"event_id": f"e{age}", "type": "like", "ts": int(day.timestamp() * 1000),
                  "room_id": "r1", "user_id": "u1"}
        rows.append(table.row(record, lambda u: u))
    writer.insert("live_events", rows)
    days = f"SELECT DISTINCT day FROM {writer.database}.live_events ORDER BY day"
    assert len(writer.execute(days)) == 6
    dropped = writer.drop_expired(today)
    kept = [d for (d,) in writer.execute(days)]
    assert kept == [today - dt.timedelta(days=a) for a in (2, 1, 0)]
    assert sorted(p for _, p in dropped) == sorted(
        (today - dt.timedelta(days=a)).strftime("%Y%m%d") for a in (40, 10, 3))
    assert writer.drop_expired(today) == []  # nothing more to drop
    writer.close()


def test_ad_feedback_rows_are_erased_with_the_user_and_leave_the_view(
        clickhouse_url: str) -> None:
    url = database_url(clickhouse_url, f"fb{os.getpid()}x{time.monotonic_ns() % 10**6}")
    writer = ClickHouseWriter(url, group="g", names=TopicNames("f"))
    writer.migrate()
    table = TABLE_BY_NAME["ad_feedback"]
    ts = int(time.time() * 1000)
    pid = {u: pseudonymize(u, KEY.encode()) for u in ("u1", "u2")}
    rows = [table.row({"type": kind, "idempotency_key": f"k-{user}", "campaign_id": "c",
                       "variant": "A", "channel": "push", "user_id": user, "ts": ts + i},
                      lambda u: pid[u])
            for user in ("u1", "u2") for i, kind in enumerate(("delivered", "shown", "clicked"))]
    writer.insert("ad_feedback", rows)
    writer.insert("ad_feedback", rows[:2])  # stored twice (a crash): one row after FINAL
    view = f"SELECT shown, reach, clickers, ctr FROM {writer.database}.campaign_metrics"
    assert writer.execute(view) == [(2, 2, 2, 1.0)]
    assert writer.erase_user(pid["u1"]) == 5
    assert writer.user_rows(pid["u1"]) == 0 and writer.user_rows(pid["u2"]) == 3
    assert writer.execute(view) == [(1, 1, 1, 1.0)]
    writer.close()


# ------------------------------------------------------------------ the engine
def test_the_engine_writes_its_inputs_and_outputs_to_history(
        broker: Any, clickhouse_url: str, worker_factory: Any, tmp_path: Path) -> None:
    tag = f"e{os.getpid()}x{time.monotonic_ns() % 10**9}"
    settings = unique_settings(tmp_path, broker, clickhouse_url=database_url(clickhouse_url,
                                                                              tag),
                               pseudonym_key=KEY, clickhouse_batch_interval_ms=200,
                               web_port=free_port())
    names = topic_names(settings)
    worker = worker_factory(settings)
    sim = Simulator(seed=11, rooms=4, users=800, items=300, bad_rate=0.01)
    stats = asyncio.run(run_simulation(broker.bootstrap, names, sim, rate=250.0, duration=8.0))
    assert stats.failed == 0

    def engine_admitted() -> dict[str, int]:
        _, body = get_json(f"{worker.web_url}/api/stats")
        return body["events_in"]

    deadline = time.monotonic() + 90
    while True:
        admitted = engine_admitted()
        counts = table_counts(settings)
        done = (counts["live_events"] == admitted.get(names.live_events, -1)
                and counts["click_events"] == admitted.get(names.clicks, -1)
                and sum(admitted.get(t, 0) for t in (names.live_events, names.clicks))
                == stats.total - stats.produced.get("catalog", 0) - sum(stats.bad.values())
                and counts["room_insights"] > 0 and counts["recommendations"] > 0)
        if done:
            break
        assert time.monotonic() < deadline, (counts, admitted, stats.to_dict(),
                                             worker.log()[-3000:])
        time.sleep(0.5)
    assert metric(worker.web_url, "livepulse_clickhouse_up") == 1
    assert metric(worker.web_url, "livepulse_clickhouse_rows_total") >= sum(counts.values())
    assert worker.stop() == 0
    log = worker.log()
    assert "history schema migrated" in log and "Traceback" not in log


def test_the_benchmark_runs_and_stores_every_record() -> None:
    require(clickhouse_server_available(), "clickhouse-server binary")
    from benchmarks.bench_clickhouse import main

    summary = main(["--records", "3000", "--writer-batches", "500"])
    assert summary["sink"]["rows_stored"] == 3000 and summary["sink"]["inserts"] >= len(TABLES)
    assert summary["writer_only_live_events"][0]["inserts"] >= 1


async def test_two_sinks_split_the_partitions_and_hand_over_on_rebalance(
        broker: Any, clickhouse_url: str, tmp_path: Path) -> None:
    settings = sink_settings(tmp_path, broker, clickhouse_url, partitions=4)
    names = topic_names(settings)
    await ensure_topics(settings, broker.bootstrap)
    first = list(HistoryWorkload(seed=12, prefix="a").records(2000))
    second = list(HistoryWorkload(seed=13, prefix="b").records(2000))
    await produce(broker.bootstrap, names, first)
    one, two = (ClickHouseSink(settings, broker.bootstrap) for _ in range(2))
    async with running(one):
        await wait_until(lambda: one.stored_rows >= len(first), what="first sink stored")
        async with running(two):  # joins: the group rebalances, `one` hands partitions over
            def split() -> bool:  # both hold partitions, none twice (a settled generation)
                if one.consumer is None or two.consumer is None:
                    return False
                mine, theirs = set(one.consumer.assignment()), set(two.consumer.assignment())
                return bool(mine and theirs and not mine & theirs)

            await wait_until(split, timeout=120, what="partitions split between the sinks")
            await produce(broker.bootstrap, names, second)
            # Rows become visible at the INSERT, a flush is accounted for (stored_rows) a
            # moment later: wait for both, or the newcomer's last flush is missed.
            await wait_until(lambda: table_counts(settings) == expected_counts(first + second)
                             and one.stored_rows + two.stored_rows >= len(first + second),
                             timeout=60, what="all rows stored and accounted by the pair")
            assert two.stored_rows > 0 and one.consumer is not None
            mine = set(one.consumer.assignment())
            theirs = set(two.consumer.assignment())
            assert mine and theirs and not mine & theirs
    assert await committed_total(settings, one.group) == len(first) + len(second)
