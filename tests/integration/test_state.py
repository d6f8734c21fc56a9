"""Write-behind profile state on the real broker: one changelog record per user per commit,
and a worker killed after a commit recovers every profile exactly from the changelog."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.broker import free_port
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import start_worker, unique_settings, wait_ready
from tests.integration.test_pipeline import produce
from tests.integration.test_serving import get_json, metric, wait_for

BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)
USERS = 40


def clicks(prefix: str, base_ts: int) -> list[tuple[str, bytes, bytes]]:
    """Per user ``u{i}``: i % 7 + 3 product views, so counts differ between users."""
    out = []
    for i in range(USERS):
        user = f"{prefix}-u{i}"
        for n in range(i % 7 + 3):
            body = {"event_id": f"{user}-{n}", "type": "view", "ts": base_ts + n,
                    "user_id": user, "session_id": f"s-{user}", "item_id": f"i{n % 5}"}
            out.append((user, user.encode(), orjson.dumps(body)))
    return out


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        total = 0
        for p in range(partitions):
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


def profile_events(web_url: str, user: str) -> int:
    status, body = get_json(f"{web_url}/api/users/{user}/profile")
    return body["events"] if status == 200 else -1


def test_profiles_coalesce_changelog_and_recover_exactly_after_kill(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker, commit_interval_s=0.5, redis_url="")
    names = topic_names(settings)
    records = clicks("wb", now_ms() - 60_000)
    expected = Counter(key for key, _, _ in records)
    first = worker_factory(settings, "first")
    asyncio.run(produce(broker.bootstrap, [(names.clicks, k.encode(), v)
                                           for k, _, v in records]))
    for user, count in expected.items():
        wait_for(lambda u=user, c=count: profile_events(first.web_url, u) == c,
                 timeout=60, what=f"profile of {user}")
    # every input offset committed: the changelog must then hold every profile's last value
    wait_for(lambda: asyncio.run(committed(broker.bootstrap, settings.app_id, names.clicks,
                                           settings.partitions)) == len(records),
             timeout=30, what="offsets committed")
    updates = metric(first.web_url, "livepulse_state_updates_total")
    sent = metric(first.web_url, "livepulse_state_changelog_records_total")
    assert updates == len(records)
    assert USERS <= sent < updates  # coalesced: at most one record per user per commit
    first.process.kill()  # no clean shutdown: what survives is what was committed
    first.process.wait(10)

    second = start_worker(settings.with_overrides(web_port=free_port(),
                                                  data_dir=str(tmp_path / "data-2")),
                          tmp_path / "second.log")
    try:
        wait_ready(second, timeout=180)
        for user, count in expected.items():  # recovered, not re-processed (all committed)
            wait_for(lambda u=user: profile_events(second.web_url, u) >= 0, timeout=120,
                     what=f"recovered profile of {user}")
            assert profile_events(second.web_url, user) == count, second.log()[-3000:]
        assert metric(second.web_url, "livepulse_state_updates_total") == 0
        assert second.stop() == 0, second.log()[-3000:]
    finally:
        if second.process.poll() is None:
            second.process.kill()
