"""Per-key count on the engine's own state path, like for like with the other baselines.

    python -m benchmarks.count_engine BOOTSTRAP TOPIC N RESULT_FILE

The app comes from :func:`streams.app.create_app` (livepulse's transport: 10 ms fetch
wait, 1 ms producer linger, the batch hand-off of hot topics, the pre-commit hook, the
log-end probe in recovery): the topic's records reach a batch handler as the record list
of one fetched partition, as the engine's pipelines get theirs, and the count lives in a
:class:`agents.state.WriteBehindTable`, the path the user pipeline's profiles take: the
value is set in the table at once and its changelog record is sent once per key per
commit, before the offsets. Values are decoded with orjson.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

import orjson

from agents.state import WriteBehindTable, in_partition
from benchmarks.baselines import worker_args, write_result
from benchmarks.count_faust import topic_partitions
from config.settings import Settings
from streams.app import WorkerHooks, create_app, subscribe
from streams.broker import free_port


def main() -> None:
    bootstrap, topic, events, result = worker_args()
    partitions = asyncio.run(topic_partitions(bootstrap, topic))
    settings = Settings(kafka_url=bootstrap, app_id=f"count-engine-{topic}",
                        data_dir=tempfile.mkdtemp(prefix="count-engine-"),
                        web_port=free_port(), partitions=partitions, log_level="warn")
    hooks = WorkerHooks()
    app = create_app(settings, bootstrap, hooks)
    source = app.topic(topic, key_serializer="raw", value_serializer="raw",
                       partitions=partitions)
    counts = WriteBehindTable(app.Table("counts", default=None, partitions=partitions))
    hooks.before_commit.append(counts.flush)
    state = {"processed": 0, "first_s": 0.0, "first_cpu": 0.0}
    data = counts.table.data
    loads = orjson.loads

    class Count:
        async def handle_batch(self, tp: Any, records: list[Any]) -> None:
            if not state["first_s"]:
                state["first_s"], state["first_cpu"] = time.time(), time.process_time()
            partition = tp.partition
            with in_partition(partition, tp.topic):
                for rec in records:
                    key = loads(rec.value)["user_id"]
                    counts.set(key, (data.get(key) or 0) + 1, partition)
            before = state["processed"]
            state["processed"] += len(records)
            if before < events <= state["processed"]:
                last_s, cpu_s = time.time(), time.process_time() - state["first_cpu"]
                write_result(result, processed=state["processed"], total=sum(data.values()),
                             keys=len(data), first_s=state["first_s"], last_s=last_s,
                             cpu_s=cpu_s)

    hooks.batch_handlers[topic] = Count()
    subscribe(app, source, "count")

    sys.argv = ["count-engine", "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
