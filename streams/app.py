"""The Faust app factory, with a low-latency Kafka transport.

Faust's aiokafka driver hard-codes a 1.5 s consumer fetch wait; on a quiet partition every
record then waits up to 1.5 s before the agent sees it. The ``lpkafka://`` transport is the
stock aiokafka transport with the fetch wait taken from the settings (default 10 ms), and a
consumer that runs the app's ``livepulse_before_commit`` hooks before each offset commit
(after fixing the offsets it will commit: see ``_LowLatencyConsumer.commit``).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.exceptions import ProducerSendError
from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.utils.futures import notify

import streams.codecs  # noqa: F401  (registers the orjson codec)
from config.settings import Settings
from streams.logfilter import quiet_kafka_client_logs
from streams.security import faust_credentials, kafka_client_options

TRANSPORT_SCHEME = "lpkafka"
DEFAULT_FETCH_MAX_WAIT_MS = 10


async def log_ends(bootstrap: str, reported: Mapping[Any, int],
                   timeout_s: float = 5.0,
                   client_options: Mapping[str, Any] | None = None) -> dict[Any, int]:
    """End offsets as a fetch reports them (its high watermark), never below ``reported``.

    Some brokers (the embedded Tansu, see ../shared/EMBEDDED-BROKER.md) answer ListOffsets
    (latest) with the base offset of the last stored batch, not the log end; Faust's table
    recovery would then stop short of the changelog's last batch. A fetch at the reported
    end sees the true high watermark. On Apache Kafka the two agree and nothing changes.
    """
    by_key = {(tp.topic, tp.partition): tp for tp in reported}
    ends = dict(reported)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=10,
                             **(client_options or {}))
    await probe.start()
    try:
        pending = {TopicPartition(t, p) for t, p in by_key}
        probe.assign(list(pending))
        for tp in pending:
            probe.seek(tp, max(0, reported[by_key[(tp.topic, tp.partition)]]))
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            await probe.getmany(*pending, timeout_ms=100, max_records=1)
            for tp in list(pending):
                highwater = probe.highwater(tp)
                if highwater is not None:
                    key = by_key[(tp.topic, tp.partition)]
                    ends[key] = max(ends[key], highwater)
                    pending.discard(tp)
    finally:
        await probe.stop()
    return ends


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        reported = await super()._highwaters(partitions)
        bootstrap = getattr(self.app, "livepulse_bootstrap", None)
        if not reported or not bootstrap or self.consumer.in_transaction:
            return reported
        settings = getattr(self.app, "livepulse_settings", None)
        options = kafka_client_options(settings) if settings else None
        return await log_ends(bootstrap, reported, client_options=options)

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = getattr(self.app, "livepulse_settings", None)
        wait_ms = settings.fetch_max_wait_ms if settings else DEFAULT_FETCH_MAX_WAIT_MS
        # Read by aiokafka when it builds its Fetcher in start(), which happens later.
        consumer._fetch_max_wait_ms = wait_ms
        return consumer


def pinned_offsets(consumer: Any, topics: Any = None) -> dict[Any, int]:
    """The offsets a commit may cover now: per partition, past the acked events (taken
    from Faust's ack bookkeeping, which forgets them: commit them or crash)."""
    return consumer._filter_committable_offsets(
        list(consumer._filter_tps_with_pending_acks(topics)))


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit with the ``livepulse_before_commit`` hooks run in the middle.

        The offsets to commit are fixed *before* the hooks run: they cover only events
        handled (acked) by then, whose state the hooks then send (write-behind changelogs,
        held ``user-activity`` batches). The agents go on handling events while an async
        hook awaits; were the offsets taken after the hooks (as ``super().commit`` would),
        they could cover events whose state no hook has sent yet, and a crash would lose
        them. State sent for those later events is harmless: it is ahead of the offsets,
        and the replay of an event already in the state is detected and skipped.
        Faust flushes the producer before it commits the offsets.
        """
        hooks = getattr(self.app, "livepulse_before_commit", ())
        if not hooks or self.app.client_only:
            return await super().commit(topics, start_new_transaction)
        if await self.maybe_wait_for_commit_to_finish():
            return False  # another commit ran meanwhile (Faust's own rule)
        self._commit_fut = asyncio.Future()
        try:
            sensor_state = self.app.sensors.on_commit_initiated(self)
            offsets = pinned_offsets(self, topics)  # no await before this line
            for hook in hooks:
                pending = hook()
                if inspect.isawaitable(pending):
                    await pending
            did_commit = False
            if offsets:
                try:
                    await self._handle_attached(offsets)
                except ProducerSendError as exc:
                    await self.crash(exc)
                else:
                    did_commit = await self._commit_offsets(
                        offsets, start_new_transaction=start_new_transaction)
            self.app.sensors.on_commit_completed(self, sensor_state)
            return did_commit
        finally:
            fut, self._commit_fut = self._commit_fut, None
            notify(fut)


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
    quiet_kafka_client_logs()  # a broker outage: one line per kind of error per 10 s
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
        # TLS/SASL for Faust's producer, consumer and topic creation (streams.security).
        "broker_credentials": faust_credentials(settings),
        "processing_guarantee": settings.processing_guarantee,
        # table_route by the raw key's partition, as the data is partitioned (streams.routing)
        "Router": "streams.routing:OwnerRouter",
    }
    options.update(overrides)
    app = faust.App(settings.app_id, **options)
    app.livepulse_settings = settings  # read by the transport and by agents
    app.livepulse_bootstrap = bootstrap  # the transport's log-end probe (log_ends)
    return app
