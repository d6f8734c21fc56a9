"""Per-key count the textbook Faust way (defaults, memory store); see
:mod:`benchmarks.baselines` for the few settings changed (group-join timeouts only).

    python -m benchmarks.count_faust BOOTSTRAP TOPIC N RESULT_FILE
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from benchmarks.baselines import worker_args, write_result
from streams.broker import free_port


async def topic_partitions(bootstrap: str, topic: str) -> int:
    # the producer waits for the topic's metadata (a consumer's topics() refresh does not
    # update what partitions_for_topic reads on Apache Kafka: it answered 0)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        return len(await producer.partitions_for(topic))
    finally:
        await producer.stop()


def main() -> None:
    bootstrap, topic, events, result = worker_args()
    partitions = asyncio.run(topic_partitions(bootstrap, topic))
    app = faust.App(
        f"count-faust-{topic}", broker=f"kafka://{bootstrap}", web_port=free_port(),
        # Join timeouts only: group joins on the embedded broker wait ~ the rebalance timeout.
        broker_session_timeout=8.0, broker_rebalance_timeout=6.0, broker_heartbeat_interval=1.0,
    )
    source = app.topic(topic)
    counts = app.Table("counts", default=int, partitions=partitions)
    state = {"processed": 0, "first_s": 0.0, "first_cpu": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream:
            if not state["first_s"]:
                state["first_s"], state["first_cpu"] = time.time(), time.process_time()
            counts[event["user_id"]] += 1
            state["processed"] += 1
            if state["processed"] == events:
                last_s, cpu_s = time.time(), time.process_time() - state["first_cpu"]
                write_result(result, processed=events, total=sum(counts.values()),
                             keys=len(counts), first_s=state["first_s"], last_s=last_s,
                             cpu_s=cpu_s)

    sys.argv = ["count-faust", "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
