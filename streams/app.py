"""The Faust app factory, with a low-latency Kafka transport.

Faust's aiokafka driver hard-codes a 1.5 s consumer fetch wait; on a quiet partition every
record then waits up to 1.5 s before the agent sees it. The ``lpkafka://`` transport is the
stock aiokafka transport with the fetch wait taken from the settings (default 10 ms).
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

import streams.codecs  # noqa: F401  (registers the orjson codec)
from config.settings import Settings

TRANSPORT_SCHEME = "lpkafka"
DEFAULT_FETCH_MAX_WAIT_MS = 10


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = getattr(self.app, "livepulse_settings", None)
        wait_ms = settings.fetch_max_wait_ms if settings else DEFAULT_FETCH_MAX_WAIT_MS
        # Read by aiokafka when it builds its Fetcher in start(), which happens later.
        consumer._fetch_max_wait_ms = wait_ms
        return consumer


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)


class LowLatencyTransport(faust_aiokafka.Transport):
    """aiokafka transport whose consumer fetch wait is configurable."""

    Consumer = _LowLatencyConsumer


drivers.TRANSPORTS.aliases[TRANSPORT_SCHEME] = f"{__name__}:LowLatencyTransport"


def broker_url(bootstrap: str) -> str:
    """``h1:9092,h2:9092`` -> ``lpkafka://h1:9092;lpkafka://h2:9092`` (Faust's list form)."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    return ";".join(f"{TRANSPORT_SCHEME}://{server}" for server in servers)


def create_app(settings: Settings, bootstrap: str | None = None, **overrides: Any) -> faust.App:
    """A configured Faust app; agents register themselves on it (see ``agents.engine``)."""
    bootstrap = bootstrap or settings.bootstrap_servers
    if not bootstrap:
        raise ValueError("no broker: set LIVEPULSE_KAFKA_URL or start the embedded broker")
    store = settings.store
    options: dict[str, Any] = {
        "broker": broker_url(bootstrap),
        "store": store,
        "datadir": settings.data_dir,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "value_serializer": "orjson",
        "key_serializer": "raw",
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "consumer_auto_offset_reset": "earliest",
        "producer_linger": settings.producer_linger_ms / 1000.0,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_rebalance_timeout": settings.rebalance_timeout_s,
        "broker_heartbeat_interval": settings.heartbeat_interval_s,
        # Do not wait for buffers to drain on rebalance: keeps joins and shutdowns short.
        "stream_wait_empty": False,
        "table_cleanup_interval": 30.0,
    }
    options.update(overrides)
    app = faust.App(settings.app_id, **options)
    app.livepulse_settings = settings  # read by the transport and by agents
    return app
