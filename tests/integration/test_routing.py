"""Profile routing with two workers and a worker restart: real workers, no Redis fallback.

Two workers share one consumer group (4 partitions); one is killed with SIGKILL and started
again on the same web port. Before the fault, and again once the group has settled after the
rejoin, every user's profile must be served (``200`` with the right event count) by BOTH
workers: ``table_route`` sends each request to the worker that owns the user's partition
(:mod:`streams.routing`), and nothing else (no Redis copy) can answer for it. From the kill
to the end a poller asks both workers for every user all the time: while no live owner is
known the answer is ``503`` (``owner_unreachable``, ``not_owner_yet``, ``recovering``,
``catching_up``), never a false ``404``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.broker import free_port
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_faults import FAULT_SETTINGS, assigned
from tests.integration.test_pipeline import produce
from tests.integration.test_serving import wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)

USERS = [f"ru{i}" for i in range(24)]


def clicks(tag: str, per_user: dict[str, int], topic: str) -> list[tuple[str, bytes, bytes]]:
    """``per_user[u]`` view events for each user, keyed by user id as every producer does."""
    records = []
    for user, count in per_user.items():
        for n in range(count):
            body = {"event_id": f"{tag}-{user}-{n}", "type": "view", "ts": now_ms(),
                    "user_id": user, "session_id": f"s-{user}", "item_id": f"item-{n % 7}",
                    "price": 10.0, "quantity": 1}
            records.append((topic, user.encode(), orjson.dumps(body)))
    return records


def answer(url: str) -> tuple[int, Any]:
    """Status and JSON body of a GET, error answers included; (0, None) if nobody answers."""
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read())
        except ValueError:
            return error.code, None
    except (OSError, ValueError):
        return 0, None


def wrong_answers(workers: list[Any], expected: dict[str, int]) -> list[str]:
    """Every (worker, user) whose profile is not served with the expected event count."""
    wrong = []
    for index, worker in enumerate(workers):
        for user, want in expected.items():
            status, body = answer(f"{worker.web_url}/api/users/{user}/profile")
            events = body.get("events") if status == 200 else body
            if (status, events) != (200, want):
                wrong.append(f"worker {index} user {user}: {status} {events} (expected {want})")
    return wrong


def settle(workers: list[Any], expected: dict[str, int], what: str) -> None:
    """Wait (bounded) until :func:`wrong_answers` is empty; fail with what was still wrong."""
    wrong: list[str] = []

    def served() -> bool:
        wrong[:] = wrong_answers(workers, expected)
        return not wrong

    try:
        wait_for(served, timeout=90, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}: {wrong[:20]}") from None


class Poller:
    """Asks every worker in ``workers`` for every user's profile, over and over, from a
    thread; counts the answers as ``200``, ``404``, ``503 <error>``, ``0`` (no answer)."""

    def __init__(self, workers: list[Any]) -> None:
        self.workers = workers
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="profile-poller", daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        while not self._stop.is_set():
            for worker in list(self.workers):
                for user in USERS:
                    status, body = answer(f"{worker.web_url}/api/users/{user}/profile")
                    error = (body or {}).get("error") if status >= 400 else None
                    self.seen[f"{status} {error}" if error and status != 404 else
                              str(status)] += 1
            time.sleep(0.05)


def test_every_profile_served_by_both_workers_after_a_killed_worker_rejoins(
        broker: Any, worker_factory: Any, tmp_path: Path
) -> None:
    # It failed intermittently on both brokers (transient 404s during a takeover: 1 of 11
    # runs on Kafka, 2 of 11 on Tansu): survivors now answer 503 catching_up there
    # (streams/routing.py); 10 of 10 loaded runs passed on both brokers (issue 16).
    settings = unique_settings(tmp_path, broker, **FAULT_SETTINGS, partitions=4)
    topic = topic_names(settings).clicks
    survivor = worker_factory(settings, "survivor")
    everything = assigned(survivor)
    victim_settings = settings.with_overrides(web_port=free_port(),
                                              data_dir=str(tmp_path / "data-victim"))
    victim = worker_factory(victim_settings, "victim")
    wait_for(lambda: 0 < assigned(survivor) < everything and assigned(victim) > 0,
             timeout=120, what="partitions split between the two workers")
    expected = {user: 3 + i % 4 for i, user in enumerate(USERS)}
    asyncio.run(produce(broker.bootstrap, clicks("a", expected, topic)))
    settle([survivor, victim], expected, "every profile served by both workers before the fault")

    with Poller([survivor]) as poller:
        victim.process.kill()
        victim.process.wait(10)
        wait_for(lambda: assigned(survivor) == everything, timeout=120,
                 what="the survivor owning every partition")
        settle([survivor], expected, "the survivor serving every profile")
        restarted_at = time.monotonic()
        # the same host and port as the killed worker, a fresh data dir
        restarted = worker_factory(victim_settings.with_overrides(
            data_dir=str(tmp_path / "data-victim-2")), "restarted")
        poller.workers.append(restarted)
        wait_for(lambda: 0 < assigned(survivor) < everything and assigned(restarted) > 0,
                 timeout=120, what="partitions rebalanced back")
        more = {user: 2 for user in USERS}
        asyncio.run(produce(broker.bootstrap, clicks("b", more, topic)))
        expected = {user: count + more[user] for user, count in expected.items()}
        workers = [survivor, restarted]
        settle(workers, expected, "every profile served by both workers after the rejoin")
        settled_s = time.monotonic() - restarted_at
    print(f"\nROUTING settled_s={settled_s:.1f} answers={dict(poller.seen)}")
    # a known user is never a 404: while nobody can answer for it the status says so
    assert poller.seen["404"] == 0, dict(poller.seen)
    assert poller.seen["200"] > 0
    for worker in workers:
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
