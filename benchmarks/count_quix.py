"""Per-key count on Quix Streams with its RocksDB state; see :mod:`benchmarks.baselines`.

    python -m benchmarks.count_quix BOOTSTRAP TOPIC N RESULT_FILE
"""

from __future__ import annotations

import time
from typing import Any

from quixstreams import Application
from quixstreams.state import State

from benchmarks.baselines import worker_args, write_result


def main() -> None:
    bootstrap, topic, events, result = worker_args()
    # auto_offset_reset: Quix defaults to "latest" and would skip the backlog.
    app = Application(broker_address=bootstrap, consumer_group=f"count-quix-{topic}",
                      auto_offset_reset="earliest", loglevel="WARNING")
    sdf = app.dataframe(app.topic(topic, key_deserializer="str", value_deserializer="json"))
    latest: dict[str, int] = {}  # the state's count per key after its last update
    progress = {"processed": 0, "first_s": 0.0, "last_s": 0.0, "first_cpu": 0.0,
                "last_cpu": 0.0}

    def count(value: dict[str, Any], state: State) -> int:
        if not progress["first_s"]:
            progress["first_s"], progress["first_cpu"] = time.time(), time.process_time()
        total = state.get("count", 0) + 1
        state.set("count", total)
        latest[value["user_id"]] = total
        progress["processed"] += 1
        progress["last_s"] = time.time()
        if progress["processed"] == events:
            progress["last_cpu"] = time.process_time()
        return total

    sdf = sdf.apply(count, stateful=True)
    app.run(count=events, collect=False)
    write_result(result, processed=progress["processed"], total=sum(latest.values()),
                 keys=len(latest), first_s=progress["first_s"], last_s=progress["last_s"],
                 cpu_s=progress["last_cpu"] - progress["first_cpu"] or None)


if __name__ == "__main__":
    main()
