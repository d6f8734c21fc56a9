"""Serving with real workers, a real broker and a real redis-server.

* Redis down: stream processing and the Kafka outputs go on, the outage shows in /healthz
  and /metrics, and Redis catches up with the newest documents when it is back.
* Two workers: either one answers for any room and any user.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.sinks.embedded_redis import REDIS_SERVER_BIN, RedisServer, redis_server_available
from agents.sinks.redis import RedisSink
from streams.broker import free_port
from streams.topics import topic_names
from tests.conftest import require, unique_settings
from tests.integration.test_pipeline import good_live_events, live, produce

pytestmark = pytest.mark.integration


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(check: Any, timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def redis_doc(url: str, namespace: str, kind: str, key: str) -> dict[str, Any] | None:
    async def read() -> dict[str, Any] | None:
        sink = RedisSink(url, ttl_s=60, namespace=namespace)
        try:
            return await sink.read(kind, key)
        finally:
            await sink.stop()
    return asyncio.run(read())


def metric(web_url: str, name: str) -> float:
    with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def send_live(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    asyncio.run(produce(bootstrap, [(topic, e["room_id"].encode(), orjson.dumps(e))
                                    for e in events]))


def test_redis_outage_does_not_stop_processing_and_redis_catches_up(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    require(redis_server_available(), f"redis-server binary ({REDIS_SERVER_BIN})")
    with RedisServer(log_dir=tmp_path) as redis:
        settings = unique_settings(tmp_path, broker, redis_url=redis.url,
                                   redis_flush_interval_ms=100)
        names = topic_names(settings)
        worker = worker_factory(settings)
        ns = settings.redis_namespace

        first = good_live_events(60)
        send_live(broker.bootstrap, names.live_events, first)
        per_room = Counter(e["room_id"] for e in first)
        wait_for(lambda: all((redis_doc(redis.url, ns, "room", room) or {}).get("events_total")
                             == n for room, n in per_room.items()), what="rooms in Redis")

        redis.kill()
        second = [live(1000 + i, "like", "room-0", f"late-{i}") for i in range(40)]
        send_live(broker.bootstrap, names.live_events, second)
        expected = per_room["room-0"] + len(second)
        # processing goes on: the worker's own view and the Kafka output move forward
        wait_for(lambda: get_json(f"{worker.web_url}/api/rooms/room-0/insights")[1]
                 .get("events_total") == expected, what="insights while Redis is down")
        wait_for(lambda: get_json(f"{worker.web_url}/healthz")[1]["redis_up"] is False,
                 what="/healthz redis_up false")
        assert metric(worker.web_url, "livepulse_redis_up") == 0
        assert metric(worker.web_url, "livepulse_redis_errors_total") > 0
        assert metric(worker.web_url, "livepulse_redis_pending_keys") > 0

        redis.start()  # same port, empty server: everything pending must be written again
        wait_for(lambda: (redis_doc(redis.url, ns, "room", "room-0") or {})
                 .get("events_total") == expected, timeout=30, what="Redis caught up")
        profile = wait_for(lambda: redis_doc(redis.url, ns, "user", "late-39"),
                           what="profile in Redis after the outage")
        assert profile["events"] == 1 and profile["live"]["likes"] == 1
        assert metric(worker.web_url, "livepulse_redis_up") == 1
        assert worker.stop() == 0, worker.log()[-3000:]
        log = worker.log()
        assert "Traceback" not in log
        assert "Redis" in log  # the outage and the recovery are logged


def test_any_worker_answers_for_any_room_and_user(broker: Any, worker_factory: Any,
                                                  tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker, partitions=4)
    names = topic_names(settings)
    first = worker_factory(settings, "w1")
    second = worker_factory(settings.with_overrides(web_port=free_port()), "w2")
    events = good_live_events(200)
    send_live(broker.bootstrap, names.live_events, events)
    rooms = sorted({e["room_id"] for e in events})
    users = sorted({e["user_id"] for e in events})

    def both_see_everything() -> bool:
        return all(sorted(r["room_id"] for r in get_json(f"{w.web_url}/api/rooms")[1]["rooms"])
                   == rooms for w in (first, second))

    wait_for(both_see_everything, timeout=90, what="both workers list every room")
    for w in (first, second):
        for room in rooms:
            status, body = get_json(f"{w.web_url}/api/rooms/{room}/insights")
            assert status == 200 and body["room_id"] == room and "audience" in body
            assert isinstance(body["pin_next"], list)  # agents.rooms.pin_next, wired
        for user in users:  # the user pipeline is one topic hop behind the rooms
            status, body = wait_for(lambda u=user, w=w: (
                found if (found := get_json(f"{w.web_url}/api/users/{u}/profile"))[0] == 200
                else None), timeout=30, what=f"profile of {user}")
            assert body["user_id"] == user and body["events"] > 0
        assert get_json(f"{w.web_url}/api/rooms/no-such-room/insights") == (
            404, {"error": "not_found", "room_id": "no-such-room"})
        assert get_json(f"{w.web_url}/api/users/nobody/profile")[0] == 404
