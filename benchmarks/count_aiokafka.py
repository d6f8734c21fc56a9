"""Per-key count on a raw aiokafka consumer (the ceiling); see :mod:`benchmarks.baselines`.

    python -m benchmarks.count_aiokafka BOOTSTRAP TOPIC N RESULT_FILE
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks.baselines import worker_args, write_result


async def count(bootstrap: str, topic: str, events: int, result: Path) -> None:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                group_id=f"count-aiokafka-{topic}",
                                auto_offset_reset="earliest", fetch_max_wait_ms=10)
    await consumer.start()
    counts: dict[str, int] = {}
    processed = 0
    first_s = first_cpu = 0.0
    try:
        while processed < events:
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if batch and not first_s:
                first_s, first_cpu = time.time(), time.process_time()
            for records in batch.values():
                for record in records:
                    user = orjson.loads(record.value)["user_id"]
                    counts[user] = counts.get(user, 0) + 1
                processed += len(records)
        last_s, cpu_s = time.time(), time.process_time() - first_cpu
        write_result(result, processed=processed, total=sum(counts.values()),
                     keys=len(counts), first_s=first_s, last_s=last_s, cpu_s=cpu_s)
    finally:
        await consumer.stop()


def main() -> None:
    asyncio.run(count(*worker_args()))


if __name__ == "__main__":
    main()
