"""Create and list topics on any Kafka-protocol broker (Apache Kafka, Redpanda, Tansu)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from config.settings import Settings
from streams.security import kafka_client_options
from streams.topics import TopicSpec, topic_names

METADATA_WAIT_S = 30.0


async def list_topics(bootstrap: str,
                      client_options: Mapping[str, Any] | None = None) -> list[str]:
    """``client_options``: TLS/SASL arguments (``streams.security.kafka_client_options``)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **(client_options or {}))
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def create_topics(bootstrap: str, specs: list[TopicSpec], *, partitions: int,
                        replication_factor: int, retention_ms: int,
                        client_options: Mapping[str, Any] | None = None) -> list[str]:
    """Create the missing topics; return the names that were created here. Returns once
    the broker's metadata lists every topic of ``specs`` (Apache Kafka answers CreateTopics
    before its metadata cache shows the topic)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000,
                                **(client_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        created = []
        for spec in (s for s in specs if s.name not in existing):
            topic = NewTopic(spec.name, num_partitions=partitions,
                             replication_factor=replication_factor,
                             topic_configs=spec.configs(retention_ms))
            # One call per topic: a concurrent creator must not fail the whole batch.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([topic])
                created.append(spec.name)
        wanted = {s.name for s in specs}
        deadline = time.monotonic() + METADATA_WAIT_S
        while created and not wanted <= set(await admin.list_topics()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"created topics not in the broker's metadata after "
                                   f"{METADATA_WAIT_S:.0f} s")
            await asyncio.sleep(0.05)
        return created
    finally:
        await admin.close()


async def ensure_topics(settings: Settings, bootstrap: str | None = None) -> list[str]:
    return await create_topics(
        bootstrap or settings.bootstrap_servers, topic_names(settings).specs(),
        partitions=settings.partitions, replication_factor=settings.replication_factor,
        retention_ms=settings.topic_retention_ms,
        client_options=kafka_client_options(settings),
    )
