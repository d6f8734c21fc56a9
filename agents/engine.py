"""The engine: one Faust app with every agent registered, plus what the agents share.

``build_engine(settings)`` is the single place that wires topics, tables, agents and web
views; ``livepulse worker`` runs it, tests build it too.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from agents.redis_sink import RedisSink, RedisSinkMetrics
from agents.stats import EngineMetrics
from config.settings import Settings
from streams.app import create_app
from streams.contracts import Contract
from streams.ingest import Rejection, Validator, dead_letter, now_ms
from streams.topics import TopicNames, topic_names

log = logging.getLogger("livepulse.engine")

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


@dataclass
class Engine:
    app: faust.App
    settings: Settings
    topics: TopicNames
    metrics: EngineMetrics
    faust_topics: dict[str, faust.TopicT] = field(default_factory=dict)
    redis: RedisSink | None = None  # serving copy of profiles and room insights
    _out_counters: dict[str, Any] = field(default_factory=dict)

    def topic(self, name: str) -> faust.TopicT:
        """The Faust topic for ``name`` (raw bytes in and out: we decode ourselves)."""
        found = self.faust_topics.get(name)
        if found is None:
            found = self.faust_topics[name] = self.app.topic(
                name, partitions=self.settings.partitions, **RAW)
        return found

    async def send(self, topic: str, key: str | bytes | None, value: bytes,
                   headers: dict[str, bytes] | None = None,
                   partition: int | None = None) -> None:
        """Produce one output record (partitioned by key, as Kafka's default) and count it.

        Straight to the app's producer: the record is already bytes, and Faust's topic
        layer (codecs, sensors, message futures) costs more than the send itself.
        """
        raw_key = key.encode() if isinstance(key, str) else key
        delivery = await self.app.producer.send(
            topic, raw_key, value, partition, None, list(headers.items()) if headers else None)
        delivery.add_done_callback(self._delivered)
        self._out_counter(topic).inc()

    def _out_counter(self, topic: str) -> Any:
        counter = self._out_counters.get(topic)
        if counter is None:
            counter = self._out_counters[topic] = self.metrics.events_out.labels(topic)
        return counter

    def _delivered(self, delivery: Any) -> None:
        if not delivery.cancelled() and delivery.exception() is not None:
            self.metrics.agent_errors.labels("producer").inc()
            log.warning("output record not delivered: %s", delivery.exception())

    async def reject(self, message: Any, rejection: Rejection, received_at: int) -> None:
        body, headers = dead_letter(
            message.value, rejection, topic=message.topic, partition=message.partition,
            offset=message.offset, received_at=received_at)
        key = message.key if isinstance(message.key, bytes) else b""
        await self.send(self.topics.dead_letter, key, body, headers)
        self.metrics.dead_letters.labels(message.topic, rejection.error_class).inc()

    def validator(self, contract: Contract) -> Validator:
        return Validator.from_settings(contract, self.settings)

    async def admit(self, validator: Validator, message: Any, key_is_user: bool = False) -> Any:
        """The typed record of a consumed message, or None after dead-lettering it.

        ``key_is_user``: the message key must be the record's ``user_id`` (a record keyed
        otherwise lands on a partition whose worker does not hold the user's state).
        """
        received_at = now_ms()
        result = validator.decode(message.value, received_at)
        if not isinstance(result, Rejection) and key_is_user:
            key = message.key.decode("utf-8", "replace") if isinstance(message.key, bytes) \
                else message.key
            if key is not None and key != result.user_id:
                result = Rejection("out_of_range", "message key is not the user_id")
        if isinstance(result, Rejection):
            await self.reject(message, result, received_at)
            return None
        kind = getattr(result, "type", "upsert")
        self.metrics.events_in.labels(message.topic, kind).inc()
        if kind == "purchase":
            self.metrics.count_purchase(message.topic, result)
        return result

    async def guarded(self, agent: str, event: Any,
                      handle: Callable[[Any], Awaitable[None]]) -> None:
        """Run ``handle(event)``; a bug never kills the agent: the event is dead-lettered."""
        await self.guard(agent, event.message, handle, event)

    async def guard(self, agent: str, message: Any, handle: Callable[[Any], Awaitable[None]],
                    arg: Any) -> None:
        """Run ``handle(arg)`` for ``message``; on a bug, dead-letter ``message`` instead."""
        started = time.perf_counter()
        try:
            await handle(arg)
        except Exception as exc:
            # The traceback's frames, not its message: an exception's text may quote the
            # event (a user id, a comment); the dead letter keeps it for the record.
            log.error("%s failed on %s[%s]@%s: %s (message withheld: may hold personal "
                      "data)\n%s", agent, message.topic, message.partition, message.offset,
                      type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)))
            self.metrics.agent_errors.labels(agent).inc()
            await self.reject(message, Rejection("internal", f"{type(exc).__name__}: "
                                                 f"{exc}"[:300]), now_ms())
        self.metrics.processing.labels(agent).observe(time.perf_counter() - started)


def build_redis_sink(settings: Settings, metrics: EngineMetrics) -> RedisSink | None:
    if not settings.redis_url.strip():
        return None
    return RedisSink(
        settings.redis_url,
        ttl_s={"room": settings.redis_room_ttl_s, "user": settings.redis_profile_ttl_s},
        flush_interval_s=settings.redis_flush_interval_ms / 1000,
        max_pending=settings.redis_max_pending,
        namespace=settings.redis_namespace,
        metrics=RedisSinkMetrics(metrics.registry),
        ssl_ca_certs=settings.redis_tls_ca_file or None,
    )


def build_engine(settings: Settings, bootstrap: str | None = None) -> Engine:
    from agents import anomalies_agent, catalog, observability, rooms, triggers, users, web
    from agents.privacy_web import register as register_privacy_api

    app = create_app(settings, bootstrap)
    metrics = EngineMetrics()
    engine = Engine(app=app, settings=settings, topics=topic_names(settings), metrics=metrics,
                    redis=build_redis_sink(settings, metrics))
    if engine.redis is not None:
        sink = engine.redis

        @app.task
        async def serve_to_redis() -> None:
            await sink.run()  # flushes once more when Faust cancels it at shutdown
    catalog.register(engine)
    rooms.register(engine)
    anomalies_agent.register(engine)  # hooks into rooms; users and web read it
    triggers.register(engine)  # before users: its hook and tables
    users.register(engine)
    web.register(engine)
    register_privacy_api(engine)  # consent API (erasure: DELETE /api/users/{id} in web)
    observability.register(engine)  # lag, table sizes, rebalances, worker info on /metrics
    if settings.clickhouse_url.strip():
        from agents import clickhouse_sink

        clickhouse_sink.register(engine)  # history: its own consumer group, see the module
    return engine
