"""Per-key count on the engine's own state path, like for like with the other baselines.

    python -m benchmarks.count_engine BOOTSTRAP TOPIC N RESULT_FILE

The app comes from :func:`streams.app.create_app` (livepulse's transport: 10 ms fetch
wait, 1 ms producer linger, the pre-commit hook, the log-end probe in recovery) and the
count lives in a :class:`agents.state.WriteBehindTable`, the path the user pipeline's
profiles take: the value is set in the table at once and its changelog record is sent
once per key per commit, before the offsets. Values are decoded with orjson.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from typing import Any

import orjson

from agents.state import WriteBehindTable, before_commit
from benchmarks.baselines import worker_args, write_result
from benchmarks.count_faust import topic_partitions
from config.settings import Settings
from streams.app import create_app
from streams.broker import free_port


def main() -> None:
    bootstrap, topic, events, result = worker_args()
    partitions = asyncio.run(topic_partitions(bootstrap, topic))
    settings = Settings(kafka_url=bootstrap, app_id=f"count-engine-{topic}",
                        data_dir=tempfile.mkdtemp(prefix="count-engine-"),
                        web_port=free_port(), partitions=partitions, log_level="warn")
    app = create_app(settings, bootstrap)
    source = app.topic(topic, key_serializer="raw", value_serializer="raw",
                       partitions=partitions)
    counts = WriteBehindTable(app.Table("counts", default=None, partitions=partitions))
    before_commit(app).append(counts.flush)
    state = {"processed": 0, "first_s": 0.0, "first_cpu": 0.0}

    @app.agent(source)
    async def count(stream: Any) -> None:
        async for event in stream.events():
            if not state["first_s"]:
                state["first_s"], state["first_cpu"] = time.time(), time.process_time()
            key = orjson.loads(event.value)["user_id"]
            counts.set(key, (counts.get(key) or 0) + 1, event.message.partition)
            state["processed"] += 1
            if state["processed"] == events:
                last_s, cpu_s = time.time(), time.process_time() - state["first_cpu"]
                data = counts.table.data
                write_result(result, processed=events, total=sum(data.values()),
                             keys=len(data), first_s=state["first_s"], last_s=last_s,
                             cpu_s=cpu_s)

    sys.argv = ["count-engine", "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
