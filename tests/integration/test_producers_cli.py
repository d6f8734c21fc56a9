"""`livepulse simulate` and `livepulse replay` against the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from streams.broker import EmbeddedBroker
from streams.control import partitions_of
from tests.conftest import REPO, SHARED, require

pytestmark = pytest.mark.integration


async def count_records(bootstrap: str, topic: str, expected: int = 0,
                        timeout_s: float = 90.0) -> int:
    """Records in ``topic``, read from the start (fetch high water, not ListOffsets: see
    README): until ``expected`` have come and then 1 s without more (so extras count too),
    or ``timeout_s`` (a loaded embedded broker can pause a fetch for seconds)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        total = 0
        partitions = await partitions_of(consumer, [topic], 0)  # fresh metadata: Kafka too
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = sum(len(v) for v in batch.values())
            total += got
            if got:
                last = time.monotonic()
            elif total >= expected and time.monotonic() - last >= 1.0:
                break
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
    produced = stats["produced"]
    live = asyncio.run(count_records(broker.bootstrap, "simcli.live-events", produced["live"]))
    clicks = asyncio.run(count_records(broker.bootstrap, "simcli.clicks", produced["clicks"]))
    catalog = asyncio.run(count_records(broker.bootstrap, "simcli.catalog", produced["catalog"]))
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
    assert asyncio.run(count_records(broker.bootstrap, "replaycli.clicks", 800)) == 800
