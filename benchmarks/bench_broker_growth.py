"""Produce -> consume latency as a partition fills up, on a local broker.

    python -m benchmarks.bench_broker_growth [--broker tansu|kafka] [--steps 100,2000,5000,10000]

One partition receives single-record batches (the shape a low-rate producer with a short
linger writes) until it holds each step's count; then a consumer at the end of the log
measures, for ``--probes`` records produced one at a time, the time from send to consumed,
and the broker's CPU while the consumer idles (long-poll fetches, nothing new). On Tansu's
memory storage a fetch that returns data walks every stored batch of the partition, so the
latency grows with what the partition holds; on Apache Kafka it stays flat. The last line
is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.bench_triggers import cpu_seconds
from streams.broker import BROKER_ENGINES, local_broker

TOPIC = "growth"


async def probe(bootstrap: str, broker_pid: int, steps: list[int], probes: int,
                idle_s: float) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    rows, stored = [], 0
    tp = TopicPartition(TOPIC, 0)
    try:
        for target in steps:
            while stored < target:  # one record per produce request: one stored batch each
                await (await producer.send(TOPIC, b"x" * 100, partition=0))
                stored += 1
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=10,
                                        enable_auto_commit=False)
            await consumer.start()
            try:
                consumer.assign([tp])
                consumer.seek(tp, stored)
                cpu0, t0 = cpu_seconds(broker_pid), time.perf_counter()
                while time.perf_counter() - t0 < idle_s:
                    await consumer.getmany(timeout_ms=20)
                idle_cpu = (cpu_seconds(broker_pid) - cpu0) / (time.perf_counter() - t0)
                relay, acks = [], []
                for _ in range(probes):
                    sent = time.perf_counter()
                    await (await producer.send(TOPIC, b"y", partition=0))
                    acks.append((time.perf_counter() - sent) * 1000)
                    stored += 1
                    while not await consumer.getmany(timeout_ms=100):
                        pass
                    relay.append((time.perf_counter() - sent) * 1000)
            finally:
                await consumer.stop()
            relay.sort()
            row = {"stored_batches": stored,
                   "relay_p50_ms": round(statistics.median(relay), 1),
                   "relay_max_ms": round(relay[-1], 1),
                   "produce_ack_p50_ms": round(statistics.median(acks), 2),
                   "idle_broker_cores": round(idle_cpu, 3)}
            print(orjson.dumps(row).decode(), flush=True)
            rows.append(row)
    finally:
        await producer.stop()
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=BROKER_ENGINES, default="tansu")
    parser.add_argument("--steps", default="100,2000,5000,10000",
                        help="stored batches at which to probe (ascending)")
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--idle-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    steps = sorted(int(s) for s in args.steps.split(","))
    with local_broker(args.broker) as broker:
        assert broker.process is not None
        rows = asyncio.run(probe(broker.bootstrap, broker.process.pid, steps, args.probes,
                                 args.idle_s))
    result = {"broker": args.broker, "steps": rows}
    print(orjson.dumps(result).decode(), flush=True)
    return result


if __name__ == "__main__":
    main()
