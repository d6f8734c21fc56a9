"""Relay latency on the embedded broker: Faust defaults vs livepulse's transport settings.

    python -m benchmarks.bench_relay_latency [--events 600] [--rate 200]

Each variant runs the same one-agent relay worker (``benchmarks.relay_worker``); a producer
stamps each record with its send time and a consumer (fetch wait 10 ms) measures the time
until the relayed copy arrives. Prints one JSON line with p50/p99 per variant and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import create_topics
from streams.broker import EmbeddedBroker, free_port
from streams.topics import TopicSpec

VARIANTS = ("faust-default", "livepulse")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


async def measure(bootstrap: str, in_topic: str, out_topic: str, events: int,
                  rate: float) -> list[float]:
    # No consumer group: a manual assignment avoids the broker's slow group joins.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    partition = TopicPartition(out_topic, 0)
    consumer.assign([partition])
    await consumer.seek_to_end(partition)
    await producer.start()
    latencies: list[float] = []
    try:
        # warm up until the relay answers (its group join can take a while on Tansu)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            await producer.send_and_wait(in_topic, orjson.dumps({"warmup": True}))
            got = await consumer.getmany(timeout_ms=500)
            if got:
                break
        await asyncio.sleep(1.0)
        await consumer.getmany(timeout_ms=200)

        async def receive() -> None:
            while len(latencies) < events:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter_ns()
                for records in batch.values():
                    for rec in records:
                        body = orjson.loads(rec.value)
                        if "sent" in body:
                            latencies.append((now - body["sent"]) / 1e6)

        receiver = asyncio.create_task(receive())
        interval = 1.0 / rate
        start = time.perf_counter()
        for i in range(events):
            await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
            await producer.send(in_topic, orjson.dumps({"sent": time.perf_counter_ns()}))
        await asyncio.wait_for(receiver, timeout=120)
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def run_variant(variant: str, bootstrap: str, events: int, rate: float) -> dict[str, Any]:
    in_topic, out_topic = f"relay-{variant}-in", f"relay-{variant}-out"
    specs = [TopicSpec(in_topic, "-", "input", ""), TopicSpec(out_topic, "-", "output", "")]
    asyncio.run(create_topics(bootstrap, specs, partitions=1, replication_factor=1,
                              retention_ms=3_600_000))
    worker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.relay_worker", variant, bootstrap, in_topic,
         out_topic, str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        latencies = asyncio.run(measure(bootstrap, in_topic, out_topic, events, rate))
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "count": len(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=600)
    parser.add_argument("--rate", type=float, default=200.0)
    args = parser.parse_args()
    results: dict[str, Any] = {"events": args.events, "rate": args.rate}
    with EmbeddedBroker() as broker:
        for variant in VARIANTS:
            results[variant] = run_variant(variant, broker.bootstrap, args.events, args.rate)
    results["p50_ratio_default_to_livepulse"] = round(
        results["faust-default"]["p50_ms"] / max(results["livepulse"]["p50_ms"], 1e-6), 1)
    print(orjson.dumps(results).decode())


if __name__ == "__main__":
    main()
