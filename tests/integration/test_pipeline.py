"""The real worker on the real (embedded) broker: events in, insights and dead letters out."""

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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.contracts import DEAD_LETTER, ROOM_INSIGHT, check_contract
from streams.control import partitions_of
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)


def live(i: int, kind: str, room: str, user: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"ev-{i}", "type": kind, "ts": now_ms(), "room_id": room,
            "user_id": user, "host_id": f"host-{room}", **extra}


def good_live_events(n: int) -> list[dict[str, Any]]:
    kinds = ["join", "like", "comment", "product_click", "add_to_cart", "purchase", "gift",
             "share", "follow", "leave"]
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        extra: dict[str, Any] = {}
        if kind == "comment":
            extra["text"] = "太好看了 love it" if i % 2 else "too expensive 质量差"
        if kind in ("product_click", "add_to_cart", "purchase"):
            extra["item_id"] = f"item-{i % 5}"
        if kind in ("purchase", "gift"):
            extra["amount"] = 10.0
        out.append(live(i, kind, f"room-{i % 3}", f"user-{i % 11}", **extra))
    return out


BAD_RECORDS: list[tuple[bytes, str]] = [
    (b'{"event_id": "x", "type": ', "malformed_json"),
    (b"\xff\xfe\x00garbage", "encoding"),
    (b"[1, 2, 3]", "not_an_object"),
    (orjson.dumps({"event_id": "b1", "type": "like", "ts": "yesterday", "room_id": "room-0",
                   "user_id": "u"}), "wrong_type"),
    (orjson.dumps({"event_id": "b2", "type": "like", "room_id": "room-0", "user_id": "u"}),
     "missing_field"),
    (orjson.dumps({"event_id": "b3", "type": "dance", "ts": 1, "room_id": "room-0",
                   "user_id": "u"}), "unknown_type"),
    (orjson.dumps({"event_id": "b4", "type": "comment", "ts": 1, "room_id": "room-0",
                   "user_id": "u", "text": "x" * 70_000}), "oversize"),
    (orjson.dumps({"event_id": "b5", "type": "purchase", "ts": 1, "room_id": "room-0",
                   "user_id": "u", "item_id": "i", "amount": -5}), "out_of_range"),
    (b"FUTURE", "ts_future"),
    (b"PAST", "ts_past"),
]


def materialize(raw: bytes) -> bytes:
    if raw == b"FUTURE":
        return orjson.dumps(live(9001, "like", "room-0", "u", ts=0) | {"ts": now_ms() + 86_400_000})
    if raw == b"PAST":
        return orjson.dumps(live(9002, "like", "room-0", "u") | {"ts": now_ms() - 30 * 86_400_000})
    return raw


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, *, until: Any, timeout: float) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                fetch_max_wait_ms=50)
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = await partitions_of(consumer, [topic], 0)  # fresh metadata: Kafka too
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


def poll_json(url: str, done: Any, timeout: float = 30.0) -> Any:
    """GET ``url`` until ``done(body)``; the user pipeline is one topic hop behind rooms."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as error:
            if error.code != 404:  # 404: not there yet (the hop is behind)
                raise
        else:
            if done(body):
                break
        time.sleep(0.2)
    return body


def latest_by_room(records: list[Any]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        value = orjson.loads(rec.value)
        latest[value["room_id"]] = value
    return latest


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_good_events_processed_and_bad_ones_dead_lettered(broker, worker_factory, tmp_path: Path,
                                                          store: str):
    settings = unique_settings(tmp_path, broker, store=store)
    names = topic_names(settings)
    worker = worker_factory(settings)

    good = good_live_events(300)
    # five minutes late: its window has closed, so it is counted as late, not lost
    good.append(live(7000, "like", "room-0", "user-late") | {"ts": now_ms() - 300_000})
    records: list[tuple[str, bytes, bytes]] = []
    bad_iter = iter(BAD_RECORDS)
    for i, event in enumerate(good):  # bad records interleaved between good ones
        records.append((names.live_events, event["room_id"].encode(), orjson.dumps(event)))
        if i % 30 == 15:
            raw, _ = next(bad_iter)
            records.append((names.live_events, b"room-0", materialize(raw)))
    clicks = [{"event_id": f"c{i}", "type": "view", "ts": now_ms(), "user_id": "user-1",
               "session_id": "s1", "item_id": f"item-{i % 4}"} for i in range(40)]
    records += [(names.clicks, b"user-1", orjson.dumps(c)) for c in clicks]
    records.append((names.clicks, b"user-1", b'{"event_id": "c-bad", "type": "view"}'))
    asyncio.run(produce(broker.bootstrap, records))

    expected_per_room = Counter(e["room_id"] for e in good)

    def complete(recs: list[Any]) -> bool:
        latest = latest_by_room(recs)
        return all(latest.get(room, {}).get("events_total") == n
                   for room, n in expected_per_room.items())

    insights = asyncio.run(read_topic(broker.bootstrap, names.room_insights, until=complete,
                                      timeout=60))
    latest = latest_by_room(insights)
    for room, n in expected_per_room.items():
        assert latest[room]["events_total"] == n, worker.log()[-3000:]
    for rec in insights:
        check_contract(ROOM_INSIGHT, orjson.loads(rec.value))
    purchases = sum(1 for e in good if e["type"] == "purchase")
    assert sum(r["orders"] for r in latest.values()) == purchases
    assert sum(r["gmv"] for r in latest.values()) == pytest.approx(10.0 * purchases)

    expected_bad = len(BAD_RECORDS) + 1
    letters = asyncio.run(read_topic(broker.bootstrap, names.dead_letter,
                                     until=lambda r: len(r) >= expected_bad, timeout=30))
    assert len(letters) == expected_bad
    classes = Counter()
    for rec in letters:
        headers = {k: v.decode() for k, v in rec.headers}
        body = check_contract(DEAD_LETTER, orjson.loads(rec.value))
        assert headers["lp-source-topic"] in (names.live_events, names.clicks)
        assert int(headers["lp-source-offset"]) == body["source_offset"] >= 0
        assert int(headers["lp-source-partition"]) == body["source_partition"]
        assert headers["lp-error-class"] == body["error_class"]
        assert headers["lp-reason"]
        classes[body["error_class"]] += 1
    assert classes == Counter([cls for _, cls in BAD_RECORDS] + ["missing_field"])

    with urllib.request.urlopen(f"{worker.web_url}/api/stats") as resp:
        stats = json.load(resp)
    assert stats["dead_letters"] == expected_bad
    assert stats["events_in"][names.live_events] == len(good)
    assert stats["events_in"][names.clicks] == len(clicks)
    live_for_user1 = sum(1 for e in good if e["user_id"] == "user-1")
    profile = poll_json(f"{worker.web_url}/api/users/user-1/profile",
                        lambda p: p["events"] >= len(clicks) + live_for_user1)
    assert profile["events"] == len(clicks) + live_for_user1
    assert profile["session"]["recent_items"]
    with urllib.request.urlopen(f"{worker.web_url}/metrics") as resp:
        metrics_text = resp.read().decode()
    assert "livepulse_dead_letters_total" in metrics_text
    assert latest["room-0"]["windows"]["late_events"] == 1
    assert "livepulse_late_events_total 1.0" in metrics_text

    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()


def test_producer_retries_count_once_in_their_room(broker, worker_factory, tmp_path: Path):
    """Every event of a room sent again (same event_id, new offset, as a producer retry
    does): the room's counters are those of the distinct events, each retry is counted in
    ``livepulse_duplicate_events_total{pipeline="room"}`` and reaches no profile twice."""
    from tests.integration.test_serving import wait_for  # it imports this module

    settings = unique_settings(tmp_path, broker)
    names = topic_names(settings)
    worker = worker_factory(settings)
    events = [event for event in good_live_events(120) if event["room_id"] == "room-0"]
    sent = []
    for i, event in enumerate(events):  # a retry right after its event or a little later
        sent.append(event)
        if i % 3 == 0:
            sent.append(event)
        if i % 3 == 1 and i >= 4:
            sent.append(events[i - 3])
    asyncio.run(produce(broker.bootstrap, [
        (names.live_events, b"room-0", orjson.dumps(e)) for e in sent]))
    duplicates = len(sent) - len(events)

    def room_insight() -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"{worker.web_url}/api/rooms/room-0") as resp:
                body = json.load(resp)
        except urllib.error.HTTPError:
            return None  # not seen yet
        return body if body["events_total"] >= len(events) else None

    insight = wait_for(room_insight, timeout=60, what="every event of room-0")
    kinds = Counter(e["type"] for e in events)
    assert insight["events_total"] == len(events), worker.log()[-3000:]
    assert insight["orders"] == kinds["purchase"]
    assert insight["gmv"] == pytest.approx(10.0 * kinds["purchase"])
    assert insight["product_clicks"] == kinds["product_click"]
    assert insight["add_to_carts"] == kinds["add_to_cart"]
    current = insight["windows"]["current_1m"]
    assert (current["likes"], current["comments"]) == (kinds["like"], kinds["comment"])

    def metric() -> float:
        with urllib.request.urlopen(f"{worker.web_url}/metrics") as resp:
            text = resp.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("livepulse_duplicate_events_total{")
                   and 'pipeline="room"' in line)

    deadline = time.monotonic() + 30
    while metric() < duplicates and time.monotonic() < deadline:
        time.sleep(0.2)
    assert metric() == duplicates  # the user pipeline saw each event once: none skipped there
    user_dups = sum(float(line.rsplit(" ", 1)[1]) for line in urllib.request.urlopen(
        f"{worker.web_url}/metrics").read().decode().splitlines()
        if line.startswith("livepulse_duplicate_events_total{") and 'pipeline="user"' in line)
    assert user_dups == 0
    user = events[0]["user_id"]
    mine = sum(1 for e in events if e["user_id"] == user and e["type"] != "product_pin")
    profile = poll_json(f"{worker.web_url}/api/users/{user}/profile",
                        lambda p: p.get("events", 0) >= mine)
    assert profile["events"] == mine
    print(f"\nRETRIES sent={len(sent)} distinct={len(events)} skipped={duplicates}")
    assert worker.stop() == 0, worker.log()[-3000:]
