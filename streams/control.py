"""Control topic readers: small topics that every process reads *whole*.

Campaign updates, attribution records and erasure requests are read by every worker in full,
not split by a consumer group; the ``demo`` observer and ``livepulse forget`` read topics
the same way. :class:`ControlTopicReader` is that reader, once:

* a plain aiokafka consumer with no group (``group_id=None``) and no commits, manually
  assigned every partition of its topics (from the cluster metadata, or
  ``range(default_partitions)`` for a topic the metadata does not list yet);
* each partition starts at its saved position (:attr:`ControlTopicReader.positions`: the
  next offset to read, kept across reconnects and shared with the caller) or, when none is
  saved, at the beginning of the log;
* *caught up* means every partition of ``caught_up_topics`` was read up to the high
  watermark of its last fetch response. Not ListOffsets: the embedded broker (Tansu) answers
  it with the base offset of the last stored batch, short of the log end after batched
  produce (see ``streams.app.log_ends`` and ``EMBEDDED-BROKER.md``, trap 1);
* :meth:`ControlTopicReader.read_to_end` reads until caught up (or raises
  :class:`TimeoutError`); :meth:`ControlTopicReader.follow` reads for ever, calling
  ``apply`` on each record in order, and on an error closes the consumer, waits
  (:class:`Backoff`: exponential, capped, reset after a successful fetch) and goes on from
  the positions it had reached. A record is counted read only once ``apply`` returned: an
  ``apply`` that raises gets the same record again after the back-off.

>>> reader = ControlTopicReader("localhost:9092", ["campaigns", "attribution"],
...                             caught_up_topics=["campaigns"])
>>> reader.topics, reader.caught_up_topics, reader.caught_up.is_set()
(['campaigns', 'attribution'], ['campaigns'], False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

log = logging.getLogger("livepulse.control")

DEFAULT_FETCH_WAIT_MS = 100   # control traffic: no busy polling

Apply = Callable[[ConsumerRecord[Any, Any]], None]


class Backoff:
    """Exponential back-off delays, capped; :meth:`reset` after a success.

    >>> b = Backoff(0.5, 5.0)
    >>> [b.next() for _ in range(6)]
    [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, first: float = 0.5, cap: float = 5.0, factor: float = 2.0) -> None:
        if first <= 0 or cap < first or factor < 1:
            raise ValueError("need 0 < first <= cap and factor >= 1")
        self.first, self.cap, self.factor = first, cap, factor
        self.current = first

    def next(self) -> float:
        """The delay to wait now; the following one grows by ``factor`` up to ``cap``."""
        delay = self.current
        self.current = min(self.cap, self.current * self.factor)
        return delay

    def reset(self) -> None:
        self.current = self.first


async def partitions_of(consumer: Any, topics: Iterable[str],
                        default: int) -> list[TopicPartition]:
    """Every partition of each topic in fresh metadata from the brokers (a topic not
    listed: ``range(default)``), in order.

    A consumer without a subscription holds no topic metadata on Apache Kafka (its
    bootstrap request asks for none; Tansu answers with every topic), so
    ``partitions_for_topic`` alone answered None there and a reader took the default.
    """
    fetch = getattr(getattr(consumer, "_client", None), "fetch_all_metadata", None)
    cluster = await fetch() if fetch is not None else None
    out = []
    for topic in topics:
        found = (cluster.partitions_for_topic(topic) if cluster is not None else None) \
            or consumer.partitions_for_topic(topic)
        out.extend(TopicPartition(topic, p) for p in sorted(found or range(default)))
    return out


async def read_up_to_highwater(consumer: Any, tps: Iterable[TopicPartition]) -> bool:
    """Every partition of ``tps`` read up to the high watermark of its last fetch response
    (False while a partition has had no fetch response yet)."""
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or await consumer.position(tp) < high:
            return False
    return True


class ControlTopicReader:
    """Reads every partition of ``topics`` without a consumer group; see the module doc.

    Parameters
    ----------
    bootstrap, client_options
        Brokers (``host:port,...``) and the security keyword arguments of aiokafka clients
        (``streams.security.kafka_client_options(settings)``).
    topics
        One topic or several, read together (records of different partitions interleave).
    fetch_wait_ms
        The consumer's ``fetch_max_wait_ms``: how long the broker holds a fetch for data.
    default_partitions
        Partition count assumed for a topic the metadata does not list (0: skip it).
    caught_up_topics
        Topics whose end defines "caught up" (default: all of ``topics``).
    poll_ms, max_records
        ``getmany`` timeout and record limit per fetch (``None``: no limit).
    backoff_s, max_backoff_s
        First and longest wait before :meth:`follow` reconnects after an error.
    name
        For log messages (default: the topics).
    """

    def __init__(self, bootstrap: str, topics: str | Iterable[str], *,
                 client_options: Mapping[str, Any] | None = None,
                 fetch_wait_ms: int = DEFAULT_FETCH_WAIT_MS, default_partitions: int = 1,
                 caught_up_topics: Iterable[str] | None = None, poll_ms: int = 500,
                 max_records: int | None = 500, backoff_s: float = 0.5,
                 max_backoff_s: float = 5.0, name: str | None = None) -> None:
        self.bootstrap = bootstrap
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.client_options = dict(client_options or {})
        self.fetch_wait_ms = fetch_wait_ms
        self.default_partitions = default_partitions
        self.caught_up_topics = (list(caught_up_topics) if caught_up_topics is not None
                                 else list(self.topics))
        self.poll_ms = poll_ms
        self.max_records = max_records
        self.backoff = Backoff(backoff_s, max_backoff_s)
        self.name = name or "/".join(self.topics)
        self.positions: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self.partitions: list[TopicPartition] = []      # assigned by the last start()
        self.caught_up = asyncio.Event()  # set once caught up; stays set
        self._consumer: AIOKafkaConsumer | None = None

    # ------------------------------------------------------------------ connection
    @property
    def started(self) -> bool:
        return self._consumer is not None

    async def start(self) -> None:
        """Connect, assign every partition and seek to the saved positions (no-op when
        started). Raises when the brokers cannot be reached."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            fetch_max_wait_ms=self.fetch_wait_ms, **self.client_options)
        try:
            await consumer.start()
            tps = await partitions_of(consumer, self.topics, self.default_partitions)
            consumer.assign(tps)
            for tp in tps:
                if tp in self.positions:
                    consumer.seek(tp, self.positions[tp])
                else:
                    await consumer.seek_to_beginning(tp)
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        self._consumer, self.partitions = consumer, tps

    async def stop(self) -> None:
        """Disconnect (positions are kept: a later start goes on from them)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()

    # ------------------------------------------------------------------ reading
    async def poll(self, apply: Apply) -> int:
        """One fetch: ``apply`` each record in order, then advance its position; return
        how many records there were."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("ControlTopicReader.poll before start()")
        batch = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.max_records)
        count = 0
        for tp, records in batch.items():
            for record in records:
                apply(record)
                self.positions[tp] = record.offset + 1
            count += len(records)
        return count

    async def check_caught_up(self) -> bool:
        """Whether every partition of ``caught_up_topics`` is read to the high watermark
        of its last fetch response; sets :attr:`caught_up` when it is."""
        if self.caught_up.is_set():
            return True
        consumer = self._consumer
        if consumer is None:
            return False
        wanted = set(self.caught_up_topics)
        if not await read_up_to_highwater(
                consumer, [tp for tp in self.partitions if tp.topic in wanted]):
            return False
        self.caught_up.set()
        return True

    async def read_to_end(self, timeout: float) -> list[ConsumerRecord[Any, Any]]:
        """Every record from the saved positions (or the beginning) until caught up, then
        disconnect; raises :class:`TimeoutError` after ``timeout`` seconds (no retries).
        Caught up is checked after a fetch that returned nothing."""
        records: list[ConsumerRecord[Any, Any]] = []
        await self.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if not await self.poll(records.append) and await self.check_caught_up():
                    return records
            raise TimeoutError(f"could not read {self.name} to its end in {timeout:.0f} s")
        finally:
            await self.stop()

    async def follow(self, apply: Apply,
                     on_caught_up: Callable[[], None] | None = None) -> None:
        """Read for ever (until cancelled), ``apply`` every record in order, and call
        ``on_caught_up`` once, the first time the reader is caught up. On an error: log,
        disconnect, back off, reconnect at the positions reached."""
        try:
            while True:
                try:
                    await self.start()
                    while True:
                        await self.poll(apply)
                        self.backoff.reset()
                        if not self.caught_up.is_set() and await self.check_caught_up() \
                                and on_caught_up is not None:
                            on_caught_up()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    delay = self.backoff.next()
                    log.exception("following %s failed; retrying in %.1f s", self.name, delay)
                    await self.stop()
                    await asyncio.sleep(delay)
        finally:
            await self.stop()

    async def log_ends(self, timeout_s: float = 5.0) -> dict[TopicPartition, int]:
        """The end offset of every partition of the topics now (fresh metadata; a topic it
        does not list has none), as a fetch reports it: ListOffsets, then raised to the
        high watermark of a fetch (``streams.app.log_ends``)."""
        from streams.app import log_ends  # Faust is imported there: only when asked

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                    enable_auto_commit=False, **self.client_options)
        await consumer.start()
        try:
            tps = await partitions_of(consumer, self.topics, 0)
            reported = await consumer.end_offsets(tps) if tps else {}
        finally:
            await consumer.stop()
        if not reported:
            return {}
        return await log_ends(self.bootstrap, reported, timeout_s=timeout_s,
                              client_options=self.client_options or None)
