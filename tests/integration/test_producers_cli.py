"""`livepulse simulate` and `livepulse replay` against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from streams.broker import EmbeddedBroker
from streams.control import partitions_of
from tests.conftest import REPO, SHARED, require

pytestmark = pytest.mark.integration


async def count_records(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        total = 0
        partitions = await partitions_of(consumer, [topic], 0)  # fresh metadata: Kafka too
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        idle = 0
        while idle < 5:  # read to the end (fetch high water, not ListOffsets: see README)
            batch = await consumer.getmany(timeout_ms=200)
            got = sum(len(v) for v in batch.values())
            total += got
            idle = 0 if got else idle + 1
        return total
    finally:
        await consumer.stop()


def run_cli(args: list[str], broker: EmbeddedBroker, prefix: str) -> dict:
    env = {**os.environ, "LIVEPULSE_KAFKA_URL": broker.bootstrap,
           "LIVEPULSE_TOPIC_PREFIX": prefix}
    out = subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_simulate_fills_the_input_topics(broker: EmbeddedBroker) -> None:
    stats = run_cli(["simulate", "--rate", "400", "--duration", "3", "--seed", "3"], broker,
                    "simcli")
    live = asyncio.run(count_records(broker.bootstrap, "simcli.live-events"))
    clicks = asyncio.run(count_records(broker.bootstrap, "simcli.clicks"))
    catalog = asyncio.run(count_records(broker.bootstrap, "simcli.catalog"))
    assert live == stats["produced"]["live"] > 0
    assert clicks == stats["produced"]["clicks"] > 0
    assert catalog == stats["produced"]["catalog"] > 0


def test_replay_yoochoose_into_clicks(broker: EmbeddedBroker, tmp_path: Path) -> None:
    source = SHARED / "datasets/recsys/yoochoose-100k/yoochoose-clicks-100k_train_valid.txt"
    require(source.exists(), f"dataset {source}")
    sample = tmp_path / "sample.tsv"
    sample.write_text("".join(source.open().readlines()[:801]))
    counts = run_cli(["replay", str(sample), "--speedup", "100000", "--max-rate", "4000"],
                     broker, "replaycli")
    assert counts["sent"] == 800
    assert asyncio.run(count_records(broker.bootstrap, "replaycli.clicks")) == 800
