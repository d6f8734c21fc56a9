"""`livepulse tail` against the real broker: the records of a topic as JSON lines."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker
from tests.conftest import REPO

pytestmark = pytest.mark.integration


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key, partition=0)
    finally:
        await producer.stop()


def test_tail_prints_a_short_named_topic_as_json_lines(broker: EmbeddedBroker) -> None:
    env = {**os.environ, "LIVEPULSE_KAFKA_URL": broker.bootstrap,
           "LIVEPULSE_TOPIC_PREFIX": "tailcli"}
    subprocess.run([sys.executable, "-m", "agents.cli", "topics", "create"], cwd=REPO,
                   env=env, capture_output=True, timeout=120, check=True)
    asyncio.run(produce(broker.bootstrap, "tailcli.promo-triggers",
                        [(b"u1", b'{"user_id": "u1", "score": 0.9}'), (b"u2", b"not json")]))
    out = subprocess.run([sys.executable, "-m", "agents.cli", "tail", "promo-triggers",
                          "--from-beginning", "--max", "2"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["topic"], r["key"], r["value"]) for r in lines] == [
        ("tailcli.promo-triggers", "u1", {"user_id": "u1", "score": 0.9}),
        ("tailcli.promo-triggers", "u2", "not json")]
    assert [r["offset"] for r in lines] == [0, 1]
