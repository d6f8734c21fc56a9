"""A one-hop relay (input topic -> output topic): the floor under the engine's latency.

    python -m benchmarks.relay_worker {faust-default|livepulse|batched} BOOTSTRAP IN OUT WEB_PORT

``faust-default`` and ``livepulse``: one Faust agent, per message (Faust's defaults, or the
engine's transport settings; ``bench_relay_latency``). ``batched``: the engine's own batched
path with no work in it: the input partition's records handed to a batch handler under
Faust's consumer, re-sent through the output batches, the batches drained before each
commit, as the pipeline's handlers do. What that costs is what every event of the pipeline
pays before the engine's own Python runs.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import faust

from config.settings import Settings
from streams.app import WorkerHooks, create_app, subscribe
from streams.outputs import OutputBatches


class Relay:
    """Batch handler: each record of the batch re-sent to ``out_topic``, then one flush."""

    def __init__(self, outputs: OutputBatches, out_topic: str) -> None:
        self.outputs, self.out_topic = outputs, out_topic

    async def handle_batch(self, tp: Any, records: list[Any]) -> None:
        add, out = self.outputs.add, self.out_topic
        for rec in records:
            add(out, rec.key, rec.value)
        await self.outputs.flush()


def batched(bootstrap: str, in_topic: str, out_topic: str, web_port: int) -> faust.App:
    # the worker's LIVEPULSE_* settings (fetch sizes, linger) apply, as in a worker
    settings = Settings.from_env({**os.environ, "LIVEPULSE_KAFKA_URL": bootstrap,
                                  "LIVEPULSE_APP_ID": "relay-batched",
                                  "LIVEPULSE_WEB_PORT": str(web_port)})
    hooks = WorkerHooks()
    app = create_app(settings, hooks=hooks, key_serializer="raw", value_serializer="raw")
    outputs = OutputBatches(app.producer._ensure_producer)
    hooks.batch_handlers[in_topic] = Relay(outputs, out_topic)
    hooks.before_commit.append(outputs.drain)
    subscribe(app, app.topic(in_topic, key_serializer="raw", value_serializer="raw"), "relay")
    return app


def build(variant: str, bootstrap: str, web_port: int) -> faust.App:
    app_id = f"relay-{variant}"
    if variant == "faust-default":
        return faust.App(app_id, broker=f"kafka://{bootstrap}", web_port=web_port,
                         key_serializer="raw", value_serializer="raw")
    settings = Settings(kafka_url=bootstrap, app_id=app_id, web_port=web_port)
    return create_app(settings, key_serializer="raw", value_serializer="raw")


def main() -> None:
    variant, bootstrap, in_topic, out_topic, port = sys.argv[1:6]
    if variant == "batched":
        app = batched(bootstrap, in_topic, out_topic, int(port))
        sys.argv = ["relay", "worker", "--loglevel", "warn"]
        app.main()
        return
    app = build(variant, bootstrap, int(port))
    source = app.topic(in_topic, key_serializer="raw", value_serializer="raw")
    sink = app.topic(out_topic, key_serializer="raw", value_serializer="raw")

    @app.agent(source)
    async def relay(stream: Any) -> None:
        async for value in stream:
            await sink.send(value=value)

    sys.argv = ["relay", "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
