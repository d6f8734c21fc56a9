"""RedisSink against a real Redis: layout, batching, TTL, outages and catch-up.

Uses ``LIVEPULSE_TEST_REDIS_URL`` when set, else a private ``redis-server``; the outage tests
always need the private server (they kill, pause and restart it).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from agents.sinks.embedded_redis import REDIS_SERVER_BIN, RedisServer, redis_server_available
from agents.sinks.redis import RedisSink, RedisSinkMetrics
from tests.conftest import require

pytestmark = pytest.mark.integration

DOC = {"a": 1, "b": 2.5, "c": "x", "d": {"k": [1]}, "e": True}
SinkFactory = Callable[..., RedisSink]


def profile(i: int, version: int = 0) -> dict[str, Any]:
    """A user-profile-sized document: 20 fields of mixed types."""
    return {
        "user_id": f"u{i}", "version": version, "events": i * 7, "views": i % 50,
        "clicks": i % 13, "carts": i % 5, "orders": i % 3, "gmv": round(i * 1.37, 2),
        "avg_order_value": 12.5 + i % 40, "last_seen_ms": 1_700_000_000_000 + i,
        "first_seen_ms": 1_690_000_000_000 + i, "segment": ("new", "active", "whale")[i % 3],
        "country": "DE", "device": "ios" if i % 2 else "android", "propensity": 0.01 * (i % 100),
        "churn_risk": 0.5, "vip": i % 10 == 0, "top_categories": ["shoes", "bags", "hats"],
        "category_counts": {"shoes": i % 9, "bags": i % 4}, "rooms_watched": i % 17,
    }


def sample(metrics: RedisSinkMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def redis_target() -> Iterator[tuple[str, bool]]:
    """(url, private): the test Redis, and whether it is a private server of this module."""
    external = os.environ.get("LIVEPULSE_TEST_REDIS_URL")
    if external:
        yield external, False
        return
    require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
    with RedisServer() as server:
        yield server.url, True


@pytest.fixture
def private_redis(tmp_path: Any) -> Iterator[RedisServer]:
    """A server of this test alone, which the test may kill, pause and restart."""
    require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
    server = RedisServer(log_dir=tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def namespace() -> str:
    return f"lpt{os.getpid()}x{time.monotonic_ns()}"


@pytest.fixture
async def raw(redis_target: tuple[str, bool]) -> AsyncIterator[aioredis.Redis]:
    """A plain client for looking at what the sink wrote."""
    client = aioredis.Redis.from_url(redis_target[0], decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def make_sink(redis_target: tuple[str, bool], namespace: str) -> AsyncIterator[SinkFactory]:
    made: list[RedisSink] = []

    def factory(url: str | None = None, **options: Any) -> RedisSink:
        options = {"ttl_s": 60, "namespace": namespace,
                   "metrics": RedisSinkMetrics(CollectorRegistry()), **options}
        sink = RedisSink(url or redis_target[0], **options)
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        await sink.stop()
    client = aioredis.Redis.from_url(redis_target[0])  # leave a shared Redis as it was
    keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start:start + 1000])
    await client.aclose()


async def test_round_trip_layout_and_ttl(make_sink: SinkFactory, raw: aioredis.Redis,
                                         namespace: str) -> None:
    sink = make_sink(ttl_s=120)
    sink.add("user", "u1", DOC)
    sink.add("user", "u2", {"name": "Bo", "score": "42"})
    sink.add("room", "r1", {"viewers": 10, "live": True})
    assert sink.pending == 3
    assert await sink.flush() == 3
    assert sink.pending == 0 and sink.up

    assert await sink.read("user", "u1") == DOC
    assert await sink.read("user", "u2") == {"name": "Bo", "score": "42"}
    assert await sink.read("user", "nobody") is None
    assert await sink.read_many("user", ["u1", "nobody", "u2"]) == {
        "u1": DOC, "u2": {"name": "Bo", "score": "42"}}
    assert await sink.read_many("user", []) == {}
    assert sorted(await sink.index("user")) == ["u1", "u2"]
    assert await sink.index("room") == ["r1"]

    # namespaced keys holding plain text other readers can use; TTL on every key
    assert await raw.hgetall(f"{namespace}:user:u1") == {
        "a": "1", "b": "2.5", "c": "x", "d": '{"k":[1]}', "e": "true"}
    assert await raw.hget(f"{namespace}:user:u2", "score") == '"42"'  # a string, not a number
    assert sorted(await raw.keys(f"{namespace}:*")) == sorted(
        f"{namespace}:{k}" for k in ("user:u1", "user:u2", "room:r1", "users:index",
                                     "rooms:index"))
    for key in await raw.keys(f"{namespace}:*"):
        assert 0 < await raw.ttl(key) <= 120


async def test_ttl_per_kind(make_sink: SinkFactory, raw: aioredis.Redis,
                            namespace: str) -> None:
    sink = make_sink(ttl_s={"room": 30, "user": 600})
    sink.add("user", "u1", {"a": 1})
    sink.add("room", "r1", {"viewers": 3})
    await sink.flush()
    assert 0 < await raw.ttl(f"{namespace}:room:r1") <= 30
    assert 30 < await raw.ttl(f"{namespace}:user:u1") <= 600
    assert 0 < await raw.ttl(f"{namespace}:rooms:index") <= 30
    assert await sink.index("room") == ["r1"] and await sink.index("user") == ["u1"]


async def test_at_most_one_write_per_key_per_flush(make_sink: SinkFactory, raw: aioredis.Redis,
                                                   redis_target: tuple[str, bool]) -> None:
    sink = make_sink()
    hset_calls_before = (await raw.info("commandstats")).get("cmdstat_hset", {}).get("calls", 0)
    for version in range(100):
        sink.add("user", "u1", {"version": version})
    assert sink.pending == 1
    assert await sink.flush() == 1
    assert sample(sink.metrics, "livepulse_redis_writes_total", kind="user") == 1
    assert sample(sink.metrics, "livepulse_redis_batch_keys_sum") == 1
    assert await sink.read("user", "u1") == {"version": 99}
    if redis_target[1]:  # a shared external Redis may see other writers
        hset_calls = (await raw.info("commandstats"))["cmdstat_hset"]["calls"]
        assert hset_calls - hset_calls_before == 1
    assert await sink.flush() == 0  # nothing changed: nothing written
    assert sample(sink.metrics, "livepulse_redis_writes_total", kind="user") == 1


async def test_batches_and_metrics(make_sink: SinkFactory) -> None:
    sink = make_sink(batch_size=100)
    for i in range(1234):
        sink.add("room" if i % 2 else "user", str(i), {"i": i})
    assert sink.metrics.pending_keys.collect()[0].samples[0].value == 1234
    assert await sink.flush() == 1234
    assert sample(sink.metrics, "livepulse_redis_writes_total", kind="user") == 617
    assert sample(sink.metrics, "livepulse_redis_writes_total", kind="room") == 617
    assert sample(sink.metrics, "livepulse_redis_flush_seconds_count") == 1
    assert sample(sink.metrics, "livepulse_redis_pending_keys") == 0
    assert sample(sink.metrics, "livepulse_redis_up") == 1
    assert len(await sink.index("room")) == 617
    found = await sink.read_many("user", [str(i) for i in range(0, 1234, 2)])
    assert found == {str(i): {"i": i} for i in range(0, 1234, 2)}


async def test_rewrite_replaces_the_whole_hash(make_sink: SinkFactory) -> None:
    sink = make_sink()
    sink.add("user", "u1", {"a": 1, "b": 2})
    await sink.flush()
    sink.add("user", "u1", {"a": 3})
    await sink.flush()
    assert await sink.read("user", "u1") == {"a": 3}
    sink.add("user", "u1", {})  # empty document: delete
    await sink.flush()
    assert await sink.read("user", "u1") is None
    assert await sink.index("user") == []


async def test_full_buffer_drops_the_oldest_update(make_sink: SinkFactory,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    sink = make_sink(max_pending=3)
    for name in ("k1", "k2", "k3"):
        sink.add("user", name, {"v": 1})
    sink.add("user", "k1", {"v": 2})  # updating a pending key drops nothing, makes it newest
    assert sample(sink.metrics, "livepulse_redis_dropped_keys_total") == 0
    with caplog.at_level(logging.WARNING, logger="agents.sinks.redis"):
        sink.add("user", "k4", {"v": 1})  # k2 is now the least recently updated
        sink.add("user", "k5", {"v": 1})  # then k3
    assert sink.pending == 3
    assert sample(sink.metrics, "livepulse_redis_dropped_keys_total") == 2
    assert ["buffer full" in r.getMessage() for r in caplog.records] == [True]
    assert await sink.flush() == 3
    assert sorted(await sink.read_many("user", ["k1", "k2", "k3", "k4", "k5"])) == [
        "k1", "k4", "k5"]
    assert await sink.read("user", "k1") == {"v": 2}


async def test_index_entries_expire_with_the_ttl(make_sink: SinkFactory, raw: aioredis.Redis,
                                                 namespace: str) -> None:
    sink = make_sink(ttl_s=1)
    sink.add("room", "r1", {"viewers": 1})
    await sink.flush()
    assert await sink.index("room") == ["r1"]
    await asyncio.sleep(1.3)
    assert await sink.index("room") == []
    assert await sink.read("room", "r1") is None  # the hash expired with the same TTL
    sink.add("room", "r2", {"viewers": 2})
    await sink.flush()
    assert await raw.zrange(f"{namespace}:rooms:index", 0, -1) == ["r2"]  # r1 trimmed


async def test_outage_keeps_pending_then_catches_up(
        private_redis: RedisServer, make_sink: SinkFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agents.sinks.redis")
    sink = make_sink(private_redis.url, flush_interval_s=0.05, timeout_s=0.5,
                     max_backoff_s=0.5)
    await sink.start()
    assert sink.up and sample(sink.metrics, "livepulse_redis_up") == 1
    sink.add("room", "r0", {"viewers": 1})
    await wait_for(lambda: sink.pending == 0)

    private_redis.kill()
    for i in range(50):
        sink.add("user", f"u{i}", {"version": 0})
    assert await sink.flush() == 0  # does not raise
    assert not sink.up and sink.pending == 50
    for i in range(0, 50, 2):
        sink.add("user", f"u{i}", {"version": 1, "extra": "x"})  # newer values win
    assert await sink.flush() == 0
    assert sink.pending == 50
    assert sample(sink.metrics, "livepulse_redis_up") == 0
    assert sample(sink.metrics, "livepulse_redis_errors_total", operation="flush") >= 2
    assert await sink.read("user", "u1") is None
    assert await sink.read_many("user", ["u1"]) == {}
    assert await sink.index("user") == []
    assert sample(sink.metrics, "livepulse_redis_errors_total", operation="read") == 1
    await asyncio.sleep(0.3)  # the run loop keeps retrying meanwhile

    private_redis.start()  # same port, empty (no persistence)
    await wait_for(lambda: sink.up and sink.pending == 0)
    check = make_sink(private_redis.url)
    stored = await check.read_many("user", [f"u{i}" for i in range(50)])
    assert stored == {f"u{i}": ({"version": 1, "extra": "x"} if i % 2 == 0 else {"version": 0})
                      for i in range(50)}
    client = aioredis.Redis.from_url(private_redis.url)
    ttls = [await client.ttl(check.key("user", f"u{i}")) for i in range(50)]
    await client.aclose()
    assert all(ttl > 0 for ttl in ttls)
    assert sorted(await check.index("user")) == sorted(f"u{i}" for i in range(50))

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in messages if level == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0]  # once per outage
    assert any(level == logging.INFO and "caught up 50 keys" in m for level, m in messages)


async def test_hung_redis_times_out_and_newer_value_wins(private_redis: RedisServer,
                                                         make_sink: SinkFactory) -> None:
    sink = make_sink(private_redis.url, timeout_s=0.5)
    sink.add("user", "u1", {"version": 0})
    await sink.flush()
    private_redis.pause()
    try:
        sink.add("user", "u1", {"version": 1})
        in_flight = asyncio.create_task(sink.flush())
        await asyncio.sleep(0.1)
        sink.add("user", "u1", {"version": 2})  # arrives while version 1 is being written
        started = time.monotonic()
        assert await in_flight == 0
        assert time.monotonic() - started < 2.0
        assert not sink.up and sink.pending == 1
    finally:
        private_redis.resume()
    assert await sink.flush() == 1
    assert await sink.read("user", "u1") == {"version": 2}


async def test_cancelled_flush_loses_nothing(private_redis: RedisServer,
                                             make_sink: SinkFactory) -> None:
    sink = make_sink(private_redis.url, timeout_s=5, batch_size=10)
    await sink.flush()  # connect first
    private_redis.pause()
    try:
        for i in range(25):
            sink.add("user", f"u{i}", {"i": i})
        in_flight = asyncio.create_task(sink.flush())
        await asyncio.sleep(0.2)
        in_flight.cancel()
        with pytest.raises(asyncio.CancelledError):
            await in_flight
        assert sink.pending == 25
    finally:
        private_redis.resume()
    assert await sink.flush() == 25
    assert len(await sink.read_many("user", [f"u{i}" for i in range(25)])) == 25


async def test_stop_makes_a_final_flush(make_sink: SinkFactory) -> None:
    sink = make_sink(flush_interval_s=60)
    await sink.start()
    sink.add("room", "r1", {"viewers": 3})
    await sink.stop()
    assert sink.pending == 0
    assert await make_sink().read("room", "r1") == {"viewers": 3}


async def test_flush_throughput_10k_profiles(make_sink: SinkFactory,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    sink = make_sink()
    await sink.flush()
    started = time.perf_counter()
    for i in range(10_000):
        sink.add("user", f"u{i}", profile(i))
    added = time.perf_counter()
    assert await sink.flush() == 10_000
    flushed = time.perf_counter()
    assert await sink.read("user", "u9999") == profile(9999)
    with capsys.disabled():
        print(f"\nredis sink: add {10_000 / (added - started):,.0f} keys/s, "
              f"flush {10_000 / (flushed - added):,.0f} keys/s (20-field hashes)")


def test_add_rejects_what_cannot_be_stored_at_the_call_site() -> None:
    sink = RedisSink("redis://127.0.0.1:1/0", ttl_s=60)  # add() never connects
    with pytest.raises(TypeError):
        sink.add("user", "u1", {"when": object()})
    with pytest.raises(TypeError):
        sink.add("user", "u1", {"name": "\ud800"})  # lone surrogate: not UTF-8
    with pytest.raises(ValueError, match="kind"):
        sink.add("us:er", "u1", {"a": 1})
    assert sink.pending == 0
