"""A one-agent relay (input topic -> output topic) used by ``bench_relay_latency``.

    python -m benchmarks.relay_worker {faust-default|livepulse} BOOTSTRAP IN OUT WEB_PORT
"""

from __future__ import annotations

import sys
from typing import Any

import faust

from config.settings import Settings
from streams.app import create_app


def build(variant: str, bootstrap: str, web_port: int) -> faust.App:
    app_id = f"relay-{variant}"
    if variant == "faust-default":
        return faust.App(app_id, broker=f"kafka://{bootstrap}", web_port=web_port,
                         key_serializer="raw", value_serializer="raw")
    settings = Settings(kafka_url=bootstrap, app_id=app_id, web_port=web_port)
    return create_app(settings, key_serializer="raw", value_serializer="raw")


def main() -> None:
    variant, bootstrap, in_topic, out_topic, port = sys.argv[1:6]
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
