"""What every pipeline of a worker shares: the Faust app, settings, topic names, metrics,
the output batches and the dead-letter path. ``agents.worker.build_engine`` wires the
pipelines around one :class:`Engine`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust

from agents.sinks.redis import RedisSink
from agents.state import current_partition
from agents.stats import EngineMetrics
from config.settings import Settings
from streams.app import WorkerHooks
from streams.contracts import Contract
from streams.ingest import RATE_LIMITED, Rejection, Validator, dead_letter, now_ms
from streams.outputs import OutputBatches
from streams.quarantine import KeyRateLimiter
from streams.topics import TopicNames

CHANGELOG_SUFFIX = "-changelog"  # Faust names a table's changelog <app>-<table>-changelog

log = logging.getLogger("livepulse.engine")

RAW = {"key_serializer": "raw", "value_serializer": "raw"}


@dataclass
class Engine:
    app: faust.App
    settings: Settings
    topics: TopicNames
    metrics: EngineMetrics
    hooks: WorkerHooks = field(default_factory=WorkerHooks)
    faust_topics: dict[str, faust.TopicT] = field(default_factory=dict)
    redis: RedisSink | None = None  # serving copy of profiles and room insights
    _out_counters: dict[str, Any] = field(default_factory=dict)
    outputs: OutputBatches = field(init=False)
    # hot-key quarantine: one bucket per user over every input this worker reads, and who
    # hears of each refused event (the anomaly monitor opens a user incident)
    hot_keys: KeyRateLimiter = field(init=False)
    on_rate_limited: list[Callable[[str, int], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        transactional = self.settings.processing_guarantee == "exactly_once"
        producer = self.app.producer
        self.outputs = OutputBatches(
            (lambda: producer) if transactional else producer._ensure_producer,
            transactional=transactional, transaction_of=self.transaction_of,
            on_sent=lambda topic, n: self._out_counter(topic).inc(n),
            on_error=lambda exc: self.metrics.agent_errors.labels("producer").inc())
        self.hot_keys = KeyRateLimiter(self.settings.hot_key_rate, self.settings.hot_key_burst)

    def transaction_of(self, topic: str, partition: int | None) -> str | None:
        """Under ``exactly_once``: the Kafka transaction an output record joins, that of the
        input partition being handled (Faust keeps one transactional producer per active
        partition, ``<app id>-<group>-<partition>``). Outside a handler (a commit hook
        writing changelogs, which names the partition) the table's partition is the input
        partition of the same number (co-partitioned). None: no such transaction here
        (timers' outputs), the record is sent outside transactions.

        Any other record added outside a handler's partition context is sent outside
        transactions too, never in the transaction of its *output* partition's number: that
        one commits apart from the input offsets the record belongs to, and a crash between
        the two commits lost room events forwarded to the user pipeline (test_exactly_once
        under load), the room's offsets committed and the forward aborted."""
        producers = getattr(self.app.producer, "_transaction_producers", None) or {}
        current = current_partition()
        if current is not None:
            topic, partition = current
        elif partition is None or not topic.endswith(CHANGELOG_SUFFIX):
            return None
        prefix = f"{self.app.conf.id}-"
        try:
            wanted = f"{prefix}{self.app.assignor.group_for_topic(topic)}-{partition}"
        except KeyError:  # a changelog: the one active partition of that number
            ends = [t for t in producers if t.startswith(prefix) and t.endswith(f"-{partition}")]
            return ends[0] if len(ends) == 1 else None
        return wanted if wanted in producers else None

    def add_output(self, topic: str, key: str | bytes | None, value: bytes, *,
                   partition: int | None = None,
                   headers: dict[str, bytes] | None = None) -> None:
        """Hold one output record for the batch being handled (sent by ``outputs.flush``)."""
        raw_key = key.encode() if isinstance(key, str) else key
        self.outputs.add(topic, raw_key, value, partition=partition,
                         headers=list(headers.items()) if headers else None)

    def reject_record(self, topic: str, partition: int, offset: int, key: Any,
                      value: bytes | None, rejection: Rejection, received_at: int) -> None:
        """Dead-letter one input record of a batch (held with the batch's outputs)."""
        body, headers = dead_letter(value, rejection, topic=topic, partition=partition,
                                    offset=offset, received_at=received_at)
        # A flood's dead letters all share its key: spread over the dead-letter partitions
        # by source offset, they go out in parallel instead of one partition's batches in
        # a row, with every other output of the batch waiting behind them.
        spread = (offset % self.settings.partitions
                  if rejection is RATE_LIMITED else None)
        self.add_output(self.topics.dead_letter, key if isinstance(key, bytes) else b"",
                        body, headers=headers, partition=spread)
        self.metrics.count(self.metrics.dead_letters, topic, rejection.error_class)

    def decode_record(self, validator: Validator, topic: str, partition: int, rec: Any,
                      received_at: int, quarantine: bool = False) -> Any:
        """The typed record of one input record of a batch, or None after dead-lettering
        it (held with the batch's outputs). The record key must be its entity id
        (``key_mismatch``, see ``streams.ingest.KEY_FIELDS``). ``quarantine``: user events
        pass the hot-key quarantine (``rate_limited``) first."""
        admit = self.admit_user_event if quarantine and self.hot_keys.enabled else None
        record = validator.decode(rec.value, received_at, rec.key, admit)
        if isinstance(record, Rejection):
            self.reject_record(topic, partition, rec.offset, rec.key, rec.value, record,
                               received_at)
            return None
        return record

    def admit_user_event(self, user: str, ts: int) -> bool:
        """The hot-key quarantine (:mod:`streams.quarantine`): whether ``user``'s event at
        ``ts`` is within its rate; a refusal is told to :attr:`on_rate_limited`."""
        if self.hot_keys.admit(user, ts):
            return True
        for observe in self.on_rate_limited:
            observe(user, ts)
        return False

    def failed(self, agent: str, topic: str, partition: int, offset: int, key: Any,
               value: bytes | None, exc: BaseException) -> None:
        """A bug while handling one record of a batch: logged, counted, dead-lettered."""
        # The traceback's frames, not its message: an exception's text may quote the
        # event (a user id, a comment); the dead letter keeps it for the record.
        log.error("%s failed on %s[%s]@%s: %s (message withheld: may hold personal data)"
                  "\n%s", agent, topic, partition, offset, type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)))
        self.metrics.agent_errors.labels(agent).inc()
        self.reject_record(topic, partition, offset, key, value,
                           Rejection("internal", f"{type(exc).__name__}: {exc}"[:300]),
                           now_ms())

    def topic(self, name: str) -> faust.TopicT:
        """The Faust topic for ``name`` (raw bytes in and out: we decode ourselves)."""
        found = self.faust_topics.get(name)
        if found is None:
            found = self.faust_topics[name] = self.app.topic(
                name, partitions=self.settings.partitions, **RAW)
        return found

    async def flush(self) -> None:
        """End of a handled batch (or a timer's round): its per-event metrics applied once,
        its outputs handed to the producer in the background."""
        self.metrics.flush_batch()
        await self.outputs.flush()

    def _out_counter(self, topic: str) -> Any:
        counter = self._out_counters.get(topic)
        if counter is None:
            counter = self._out_counters[topic] = self.metrics.events_out.labels(topic)
        return counter

    async def reject(self, message: Any, rejection: Rejection, received_at: int) -> None:
        body, headers = dead_letter(
            message.value, rejection, topic=message.topic, partition=message.partition,
            offset=message.offset, received_at=received_at)
        key = message.key if isinstance(message.key, bytes) else b""
        self.add_output(self.topics.dead_letter, key, body, headers=headers)
        await self.outputs.flush()  # with the batch outputs: delivered before the commit
        self.metrics.dead_letters.labels(message.topic, rejection.error_class).inc()

    def validator(self, contract: Contract) -> Validator:
        return Validator.from_settings(contract, self.settings)

    async def admit(self, validator: Validator, message: Any, key_is_user: bool = False) -> Any:
        """The typed record of a consumed message, or None after dead-lettering it.

        The message key must be the record's entity id (``key_mismatch``: a record keyed
        otherwise lands on a partition whose worker does not hold that entity's state); the
        validator checks it for every input contract, ``key_is_user`` is kept for callers.
        """
        received_at = now_ms()
        result = validator.decode(message.value, received_at, message.key)
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
