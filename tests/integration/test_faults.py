"""Fault injection with real processes: nothing lost, duplicates harmless.

* kill -9 of the only worker in the middle of a stream, restarted with an empty data dir;
* two workers in one group: one killed (the survivor takes over every partition and serves
  the dead worker's rooms and users), then restarted (partitions rebalance back).

The stream (live events keyed by room, clicks keyed by user, a few clicks sent twice as a
producer retry would) goes on at a steady pace through every fault. Afterwards every input
event is accounted for exactly: each room's counters (``/api/rooms/{id}``) and each user's
profile (``/api/users/{id}/profile``, routed to the worker owning the user) equal a reference
computed from what was produced.

Each test prints ``FAULT <name> events_in=… accounted=… duplicates=… recovery_s=…`` (shown
with ``pytest -s``); the times are measured and reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import free_port
from streams.ingest import now_ms
from streams.topics import TopicNames, topic_names
from tests.conftest import unique_settings
from tests.integration.test_serving import wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)

RATE = 150.0  # input events per second, live and clicks together
ROOMS = [f"room-{i}" for i in range(6)]
USERS = [f"u{i}" for i in range(40)]
LIVE_KINDS = {"join": 12, "comment": 18, "like": 30, "product_click": 10, "add_to_cart": 10,
              "purchase": 6, "gift": 4, "share": 3, "leave": 5, "product_pin": 2}
CLICK_KINDS = {"view": 50, "click": 25, "add_to_cart": 15, "purchase": 10}
# fast failure detection and short group joins on the embedded broker (EMBEDDED-BROKER.md)
FAULT_SETTINGS: dict[str, Any] = {"redis_url": "", "commit_interval_s": 0.5,
                                  "session_timeout_s": 6.0, "rebalance_timeout_s": 6.0,
                                  "heartbeat_interval_s": 1.0}


class PacedStream:
    """Live events and clicks produced at a steady pace from a thread, recording exactly
    what was sent. Every ``retry_every``-th click goes out twice (same event, new offset)."""

    def __init__(self, bootstrap: str, names: TopicNames, tag: str, *, rate: float = RATE,
                 retry_every: int = 0) -> None:
        self.bootstrap, self.names, self.tag = bootstrap, names, tag
        self.rate, self.retry_every = rate, retry_every
        self.sent: list[tuple[str, dict[str, Any]]] = []  # distinct events, in order
        self.retries = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paced-stream", daemon=True)

    def start(self) -> PacedStream:
        self._thread.start()
        return self

    def produced(self) -> int:
        return len(self.sent)

    def wait_produced(self, n: int, timeout: float = 120.0) -> None:
        wait_for(lambda: self.error is not None or self.produced() >= n, timeout=timeout,
                 what=f"{n} events produced")
        self._check()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        self._check()

    def _check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"producer failed: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as error:  # reported to the test by _check
            self.error = error

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2)
        await producer.start()
        rng = random.Random(8)
        tick, due, n = 0.05, 0.0, 0
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                due += self.rate * tick
                sending = []
                while due >= 1:
                    due -= 1
                    topic, key, body = self._event(rng, n)
                    value = orjson.dumps(body)
                    sending.append(await producer.send(topic, key=key, value=value))
                    if self.retry_every and topic == self.names.clicks \
                            and n % self.retry_every == 0:
                        sending.append(await producer.send(topic, key=key, value=value))
                        self.retries += 1
                    n += 1
                    self.sent.append((topic, body))
                await asyncio.gather(*sending)  # delivered before the next tick
                next_at += tick
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            await producer.flush()
        finally:
            await producer.stop()

    def _event(self, rng: random.Random, n: int) -> tuple[str, bytes, dict[str, Any]]:
        user = rng.choice(USERS)
        event_id = f"{self.tag}-{n}"
        if rng.random() < 0.3:
            kind = rng.choices(list(CLICK_KINDS), weights=list(CLICK_KINDS.values()))[0]
            body = {"event_id": event_id, "type": kind, "ts": now_ms(), "user_id": user,
                    "session_id": f"s-{user}", "item_id": f"item-{rng.randrange(30)}",
                    "price": 20.0, "quantity": 1}
            return self.names.clicks, user.encode(), body
        room = rng.choice(ROOMS)
        kind = rng.choices(list(LIVE_KINDS), weights=list(LIVE_KINDS.values()))[0]
        body = {"event_id": event_id, "type": kind, "ts": now_ms(), "room_id": room,
                "user_id": f"host-{room}" if kind == "product_pin" else user,
                "host_id": f"host-{room}"}
        if kind in ("product_click", "add_to_cart", "purchase", "product_pin"):
            body["item_id"] = f"item-{rng.randrange(30)}"
        if kind in ("purchase", "gift"):
            body["amount"] = 10.0
        if kind == "comment":
            body["text"] = "love it" if n % 2 else "too expensive"
        return self.names.live_events, room.encode(), body


def reference(sent: list[tuple[str, dict[str, Any]]], names: TopicNames
              ) -> tuple[dict[str, Counter[str]], dict[str, Counter[str]]]:
    """Per room (``events_total``, ``orders``, ``add_to_carts``) and per user (profile
    ``events``, ``orders``, ``likes``, ``comments``) what the input should give."""
    rooms: dict[str, Counter[str]] = {}
    users: dict[str, Counter[str]] = {}
    for topic, body in sent:
        kind = body["type"]
        if topic == names.live_events:
            room = rooms.setdefault(body["room_id"], Counter())
            room["events_total"] += 1
            room["orders"] += kind == "purchase"
            room["add_to_carts"] += kind == "add_to_cart"
            if kind == "product_pin":
                continue  # the host's act: not forwarded to a viewer profile
        user = users.setdefault(body["user_id"], Counter())
        user["events"] += 1
        user["orders"] += kind == "purchase"
        user["likes"] += kind == "like"
        user["comments"] += kind == "comment"
    return rooms, users


def fetch(url: str) -> tuple[int, Any]:
    """GET a JSON document; (0, None) while the worker is not answering at all."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return 0, None


def assigned(worker: Any) -> int:
    status, body = fetch(f"{worker.web_url}/healthz")
    return body["assigned_partitions"] if status == 200 else 0


def room_counts(workers: list[Any], room: str) -> list[Counter[str]]:
    """The room's counters from every worker that has it (only its owner should)."""
    found = []
    for worker in workers:
        status, body = fetch(f"{worker.web_url}/api/rooms/{room}")
        if status == 200:
            found.append(Counter({k: body[k] for k in ("events_total", "orders",
                                                      "add_to_carts")}))
    return found


def user_counts(worker: Any, user: str) -> Counter[str] | None:
    status, body = fetch(f"{worker.web_url}/api/users/{user}/profile")
    if status != 200:
        return None
    return Counter({"events": body["events"], "orders": body["rfm"]["orders"],
                    "likes": body["live"]["likes"], "comments": body["live"]["comments"]})


def snapshot_counts(workers: list[Any], rooms: list[str], users: list[str]
                    ) -> tuple[dict[str, Counter[str]], dict[str, Counter[str] | None]]:
    room_view = {}
    for room in rooms:
        found = room_counts(workers, room)
        room_view[room] = found[0] if len(found) == 1 else Counter()
    return room_view, {user: next((found for w in workers
                                   if (found := user_counts(w, user)) is not None), None)
                       for user in users}


def metric_sum(worker: Any, name: str) -> float:
    status, _ = fetch(f"{worker.web_url}/healthz")
    if status != 200:
        return 0.0
    with urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


def settle_and_compare(workers: list[Any], names: TopicNames, stream: PacedStream,
                       timeout: float = 120.0) -> tuple[int, int, list[str]]:
    """Wait until every room and user reached the reference (or time is up); return
    (events in, events accounted, mismatches)."""
    expected_rooms, expected_users = reference(stream.sent, names)

    def counts() -> tuple[dict[str, Counter[str]], dict[str, Counter[str] | None]]:
        return snapshot_counts(workers, list(expected_rooms), list(expected_users))

    def reached() -> bool:
        rooms, users = counts()
        return all(rooms[r]["events_total"] >= c["events_total"]
                   for r, c in expected_rooms.items()) and all(
            (users[u] or Counter())["events"] >= c["events"] for u, c in expected_users.items())

    with contextlib.suppress(AssertionError):  # reported as mismatches below
        wait_for(reached, timeout=timeout, what="every event counted")
    time.sleep(1.5)  # anything counted twice would show up by now
    rooms, users = counts()
    problems = []
    live_per_user: Counter[str] = Counter()
    for topic, body in stream.sent:
        if topic == names.live_events and body["type"] != "product_pin":
            live_per_user[body["user_id"]] += 1
    accounted = 0
    for room, want in expected_rooms.items():
        found = room_counts(workers, room)
        if len(found) != 1 or found[0] != want:
            problems.append(f"room {room}: expected {dict(want)}, workers have "
                            f"{[dict(f) for f in found]}")
        accounted += min(rooms[room]["events_total"], want["events_total"])
    for user, want in expected_users.items():
        got = users[user] or Counter()
        if got != want:
            problems.append(f"user {user}: expected {dict(want)}, got {dict(got)}")
        # clicks are accounted by the profile: its events minus the live ones (rooms)
        accounted += max(0, min(got["events"], want["events"]) - live_per_user[user])
    return len(stream.sent), accounted, problems


def test_kill9_mid_stream_loses_nothing_and_models_resume(broker: Any, worker_factory: Any,
                                                          tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker, **FAULT_SETTINGS,
                               snapshot_dir=str(tmp_path / "snapshots"),
                               snapshot_key_file=str(tmp_path / "keys" / "snapshot.key"),
                               snapshot_interval_s=1.0)  # both workers: one folder, one key
    names = topic_names(settings)
    first = worker_factory(settings, "first")
    stream = PacedStream(broker.bootstrap, names, "k9", retry_every=40).start()
    try:
        stream.wait_produced(int(RATE * 8))
        learned = wait_for(lambda: (fetch(f"{first.web_url}/api/models")[1] or {}).get(
            "recommender", {}).get("learned"), what="the recommender learning")
        time.sleep(1.5)  # at least one model snapshot since
        rooms_before, _ = snapshot_counts([first], ROOMS, [])
        first.process.kill()  # SIGKILL in the middle of the stream: nothing flushed
        first.process.wait(10)
        killed_at = time.monotonic()
        second = worker_factory(settings.with_overrides(
            web_port=free_port(), data_dir=str(tmp_path / "data-2")), "second")
        ready_s = time.monotonic() - killed_at
        models = fetch(f"{second.web_url}/api/models")[1]
        wait_for(lambda: all(
            (c := room_counts([second], r)) and c[0]["events_total"] >= rooms_before[r][
                "events_total"] for r in ROOMS), timeout=90, what="room counts back")
        recovery_s = time.monotonic() - killed_at
        stream.wait_produced(stream.produced() + int(RATE * 4))  # the stream goes on
    finally:
        stream.stop()
    events_in, accounted, problems = settle_and_compare([second], names, stream)
    duplicates = metric_sum(second, "livepulse_duplicate_events_total")
    print(f"\nFAULT kill9 events_in={events_in} accounted={accounted} "
          f"duplicates={duplicates:.0f} recovery_s={recovery_s:.1f} ready_s={ready_s:.1f} "
          f"producer_retries={stream.retries} learned_before_kill={learned} "
          f"learned_at_restart={models['recommender']['learned']}")
    assert not problems, "\n".join(problems[:20]) + second.log()[-3000:]
    assert accounted == events_in
    # the models resumed from their snapshots, not cold
    assert {"recommender", "propensity", "leave_risk", "sentiment"} <= set(models["restored"])
    assert not any("refused" in r for r in models["restored"].values())
    assert models["recommender"]["learned"] > 0
    # the producer retries reached the profiles and were skipped (duplicates are counted)
    assert metric_sum(second, 'livepulse_duplicate_events_total{pipeline="user"}') >= 1
    assert "Traceback" not in second.log(), second.log()[-3000:]
    assert second.stop() == 0, second.log()[-3000:]


def test_two_workers_one_killed_survivor_takes_over_then_rebalances_back(
        broker: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # A clean-clone CI run (2026-12-07) lost 5 room events here on Kafka (4 rooms short,
    # every profile complete): after a takeover's seek the first batch of a partition could
    # start past the committed offset. Fixed in streams/app.py (perform_seek); 10 of 10
    # loaded runs passed on both brokers (issue 16).
    settings = unique_settings(tmp_path, broker, **FAULT_SETTINGS, partitions=4)
    names = topic_names(settings)
    survivor = worker_factory(settings, "survivor")
    everything = assigned(survivor)  # alone: every partition of the group
    victim_settings = settings.with_overrides(web_port=free_port(),
                                              data_dir=str(tmp_path / "data-victim"))
    started = time.monotonic()
    victim = worker_factory(victim_settings, "victim")
    wait_for(lambda: 0 < assigned(survivor) < everything and assigned(victim) > 0,
             timeout=120, what="partitions split between the two workers")
    split_s = time.monotonic() - started
    stream = PacedStream(broker.bootstrap, names, "rb").start()
    workers = [survivor, victim]
    try:
        stream.wait_produced(int(RATE * 8))
        rooms_before, users_before = snapshot_counts(workers, ROOMS, USERS)
        victim_rooms = [r for r in ROOMS if room_counts([victim], r)]
        victim.process.kill()
        victim.process.wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: assigned(survivor) == everything, timeout=120,
                 what="the survivor owning every partition")
        takeover_s = time.monotonic() - killed_at

        def serves_everything() -> bool:
            rooms, users = snapshot_counts([survivor], ROOMS, USERS)
            return all(rooms[r]["events_total"] >= rooms_before[r]["events_total"]
                       for r in ROOMS) and all(
                users[u] is not None and users[u]["events"] >= (before or Counter())["events"]
                for u, before in users_before.items())

        wait_for(serves_everything, timeout=120, what="the survivor serving every room/user")
        serving_s = time.monotonic() - killed_at
        restarted_at = time.monotonic()
        # the same host and port (its URL, which routes profile requests), a fresh data dir
        restarted = worker_factory(victim_settings.with_overrides(
            data_dir=str(tmp_path / "data-victim-2")), "restarted")
        workers = [survivor, restarted]
        wait_for(lambda: 0 < assigned(survivor) < everything and assigned(restarted) > 0,
                 timeout=120, what="partitions rebalanced back")
        rebalance_back_s = time.monotonic() - restarted_at
        stream.wait_produced(stream.produced() + int(RATE * 4))
    finally:
        stream.stop()
    events_in, accounted, problems = settle_and_compare(workers, names, stream)
    duplicates = sum(metric_sum(w, "livepulse_duplicate_events_total") for w in workers)
    print(f"\nFAULT kill_one_of_two events_in={events_in} accounted={accounted} "
          f"duplicates={duplicates:.0f} recovery_s={takeover_s:.1f} serving_s={serving_s:.1f} "
          f"rebalance_back_s={rebalance_back_s:.1f} first_split_s={split_s:.1f} "
          f"victim_rooms={len(victim_rooms)}")
    logs = survivor.log()[-2000:] + restarted.log()[-2000:]
    assert not problems, "\n".join(problems[:20]) + logs
    assert accounted == events_in
    assert victim_rooms, "the killed worker owned no room: nothing was taken over"
    for worker in workers:
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
