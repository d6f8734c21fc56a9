"""The Faust app factory, with a low-latency, batching Kafka transport.

Faust's aiokafka driver hard-codes a 1.5 s consumer fetch wait; on a quiet partition every
record then waits up to 1.5 s before the agent sees it. The ``lpkafka://`` transport is the
stock aiokafka transport with the fetch wait taken from the settings (default 10 ms), and a
consumer that

* hands the records of *hot* topics to a batch handler, one fetched partition's record list
  at a time, in offset order (:class:`WorkerHooks.batch_handlers`, see
  :meth:`_LowLatencyConsumer._drain_messages`): Faust's per-message path (event, conductor,
  stream, ack, sensors) costs ~270 µs of CPU per record here, a hand-off ~3 µs. Every other
  topic (changelogs during recovery, control topics, low-volume agents) keeps Faust's path;
* runs the worker's before-commit hooks before each offset commit, after fixing the offsets
  it will commit (see :meth:`_LowLatencyConsumer.commit`).

What the worker gives the transport (settings, hooks, handlers) is one :class:`WorkerHooks`
passed to :func:`create_app`: nothing is hung on the Faust app.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

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
# records per handle_batch call: bounds how long one call holds the event loop (~150 µs
# per event: ~40 ms), so other partitions, timers and the web wait no longer than that
MAX_BATCH = 256
MAX_RESEEKS = 5  # re-seeks of a partition whose first batch after a seek starts past it


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


class BatchHandler(Protocol):
    """Handles one fetched partition's records of a hot topic, in offset order."""

    async def handle_batch(self, tp: Any, records: list[Any]) -> None: ...


BeforeCommit = Callable[[], "Awaitable[None] | None"]


@dataclass
class WorkerHooks:
    """What a worker gives its Faust transport, passed to :func:`create_app` explicitly.

    ``batch_handlers``: topic -> handler of its record batches (a topic listed here must
    also be subscribed, e.g. by :func:`subscribe`). ``before_commit``: run before each
    offset commit, after the offsets are fixed (sync or async; write-behind state).
    ``after_batch``: called with the partition and last offset of each handled batch
    (read positions for the lag metric). ``bootstrap``: the brokers, for the true
    log-end probe (:func:`log_ends`). ``commit_gate``: under ``exactly_once``, held by a
    commit from fixing its offsets until its transactions are committed, and by each
    batch handler call (see :meth:`_LowLatencyConsumer.commit`). ``routed_sources``: the
    input topics whose partition p feeds partition p of the tables served through
    ``table_route``; until a new owner has read a handed-over partition of them up to the
    log end it found, a key missing from its table is "recovering", not unknown
    (:class:`streams.routing.OwnerRouter`).
    """

    settings: Settings | None = None
    bootstrap: str | None = None
    batch_handlers: dict[str, BatchHandler] = field(default_factory=dict)
    before_commit: list[BeforeCommit] = field(default_factory=list)
    after_batch: list[Callable[[Any, int], None]] = field(default_factory=list)
    commit_gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    routed_sources: tuple[str, ...] = ()


_HOOKS: weakref.WeakKeyDictionary[Any, WorkerHooks] = weakref.WeakKeyDictionary()
_NO_HOOKS = WorkerHooks()


def attach_hooks(app: Any, hooks: WorkerHooks) -> None:
    """Give ``app``'s transport ``hooks`` (done by :func:`create_app`)."""
    _HOOKS[app] = hooks


def hooks_of(app: Any) -> WorkerHooks:
    """The :class:`WorkerHooks` the app was created with (empty ones if none)."""
    try:
        return _HOOKS.get(app, _NO_HOOKS)
    except TypeError:  # an unhashable stand-in (tests)
        return _NO_HOOKS


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        if self.consumer.in_transaction and partitions:
            # Faust answers with the last stable offset cached from fetch responses: None
            # (read as -1) for a partition not fetched yet, stale for one fetched long ago.
            # Recovery then took every changelog for empty, and a worker holding a global
            # table's records crashed on a rebalance (persisted offset above a highwater of
            # -1: tests/integration/test_exactly_once.py). ListOffsets of a read_committed
            # consumer gives the current last stable offset.
            return await self._ensure_consumer().end_offsets(list(partitions))
        reported = await super()._highwaters(partitions)
        hooks = hooks_of(self.app)
        if not reported or not hooks.bootstrap:
            return reported
        options = kafka_client_options(hooks.settings) if hooks.settings else None
        return await log_ends(hooks.bootstrap, reported, client_options=options)

    async def seek_to_committed(self) -> Mapping[Any, int]:
        return await self.call_thread(self._seek_every_partition_to_committed)

    async def _seek_every_partition_to_committed(self) -> Mapping[Any, int]:
        """aiokafka's ``seek_to_committed``, plus the partitions it leaves alone.

        aiokafka seeks only partitions whose committed offset is above 0; one with none (or
        0) keeps its fetch position. Faust seeks to the committed offsets after a rebalance
        and again after it dropped fetched records because flow stopped: such a partition's
        dropped records were then never read again (the first events of a new partition,
        lost on a takeover on Apache Kafka: tests/integration/test_faults.py). Offset 0 is
        the start, and also where ``auto_offset_reset=earliest`` leads when nothing was
        committed: a log that no longer starts at 0 answers out of range, which aiokafka
        resets to the earliest offset. Table changelogs are left as aiokafka leaves them
        (Faust's recovery positions them).
        """
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        changelogs = self.app.tables.changelog_topics  # Faust keeps their positions itself
        for tp, offset in committed.items():
            if not offset and tp.topic not in changelogs:
                consumer.seek(tp, 0)
        return committed

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        settings = hooks_of(self.app).settings
        wait_ms = settings.fetch_max_wait_ms if settings else DEFAULT_FETCH_MAX_WAIT_MS
        # Read by aiokafka when it builds its Fetcher in start(), which happens later.
        consumer._fetch_max_wait_ms = wait_ms
        consumer._fetch_min_bytes = settings.consumer_fetch_min_bytes if settings else 1
        return consumer


def pinned_offsets(consumer: Any, topics: Any = None) -> dict[Any, int]:
    """The offsets a commit may cover now: per partition, past the acked events (taken
    from Faust's ack bookkeeping, which forgets them: commit them or crash)."""
    return consumer._filter_committable_offsets(
        list(consumer._filter_tps_with_pending_acks(topics)))


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    # Private Faust API used here (pinned: faust-streaming 0.15.x, tested by
    # tests/unit/test_batch_consumer.py): _drain_messages, _wait_next_records, _read_offset,
    # _buffered_partitions, _new_offset, _filter_tps_with_pending_acks, perform_seek.

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _batch_done(self) -> dict[Any, int]:
        """Per hot partition: the last offset its batch handler finished."""
        done: dict[Any, int] | None = self.__dict__.get("_lp_batch_done")
        if done is None:
            done = self.__dict__["_lp_batch_done"] = {}
        return done

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        tps = set(super()._filter_tps_with_pending_acks(topics))
        tps.update(tp for tp in self._batch_done()
                   if topics is None or tp in topics or tp.topic in topics)
        return iter(tps)

    def _new_offset(self, tp: Any) -> int | None:
        done = self._batch_done().get(tp)
        if done is not None:
            return done + 1
        return super()._new_offset(tp)

    async def perform_seek(self) -> None:
        """Faust's seek to the committed offsets (after a rebalance's recovery, and when flow
        stopped); the first batch of each partition after it is checked to start there.

        A takeover on Apache Kafka lost room events (issue 16): after this seek, the first
        batch of a partition could start far past the committed offset (records fetched from
        the position before the rebalance), past records fetched and dropped when flow
        stopped; handled, it moved the read offset past them and the re-read skipped them.
        Such a batch is not handled: the partition is sought to the committed offset again
        (up to :data:`MAX_RESEEKS` times; then, e.g. when retention deleted those records,
        the batch is taken as it is)."""
        await super().perform_seek()
        self.__dict__["_lp_sought"] = dict.fromkeys(self.assignment(), 0)

    async def on_partitions_revoked(self, revoked: Any) -> None:
        done = self._batch_done()
        for tp in revoked:
            done.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover (integration)
        """Faust's drain loop, with hot topics handed over as record lists.

        Per fetched partition, in the order fetched: a hot topic's records (those past the
        read offset) go to its handler in one call, awaited before the next partition (per
        key order holds); then the committable offset moves past the last record (and the
        read offset to the next one to read, as a seek leaves it). The rest of a fetch is
        dropped when the consumer generation changed (a rebalance: the new owner re-reads
        it) or flow stopped. The stream-inbound time is
        stamped per batch (Faust's "stream stopped processing" check reads it). Other
        topics go through Faust's per-message callback, as in Faust's own loop.
        """
        hooks = hooks_of(self.app)
        handlers, after_batch = hooks.batch_handlers, hooks.after_batch
        if not handlers:
            await super()._drain_messages(fetcher)
            return
        callback = self.callback
        to_message = self._to_message
        read_offset = self._read_offset
        done = self._batch_done()
        monitor = self.app.monitor
        inbound = monitor.stream_inbound_time if monitor is not None else None
        consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        monotonic = time.monotonic
        settings = hooks.settings
        linger = settings.fetch_linger_ms / 1000 if settings else 0.0
        transactional, gate = bool(self.app.in_transaction), hooks.commit_gate
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_back()
                    continue
                generation = self.app.consumer_generation_id
                for tp, recs in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # rebalancing: the rest is re-read by the partition's owner
                    if active is not None and tp not in active \
                            and tp not in self._buffered_partitions:
                        continue
                    # Faust's read offset: the next offset to read after a seek (to the
                    # committed offset), the last one read after its per-message path
                    last = read_offset.get(tp)
                    if last is not None and recs[0].offset < last:
                        recs = [rec for rec in recs if rec.offset >= last]
                        if not recs:
                            continue
                    handler = handlers.get(tp.topic)
                    if handler is None:
                        await self._per_message(tp, recs, callback, to_message)
                        continue
                    sought = self.__dict__.get("_lp_sought")
                    if sought and tp in sought and not transactional:
                        if last is not None and recs[0].offset > last \
                                and sought[tp] < MAX_RESEEKS:
                            # the first batch after a seek starts past the offset sought:
                            # records fetched before it; re-read from there, skip nothing
                            sought[tp] += 1
                            await self.seek(tp, last)
                            continue
                        del sought[tp]
                    if monitor is not None:
                        monitor.track_tp_end_offset(tp, self.highwater(tp))
                    for start in range(0, len(recs), MAX_BATCH):
                        chunk = recs[start:start + MAX_BATCH]
                        if inbound is not None:
                            inbound[tp] = monotonic()
                        if transactional:
                            async with gate:  # not while a commit is under way
                                await handler.handle_batch(tp, chunk)
                        else:
                            await handler.handle_batch(tp, chunk)
                        if self.app.consumer_generation_id != generation:
                            break  # revoked meanwhile: offsets belong to the next owner
                        done[tp] = offset = chunk[-1].offset
                        read_offset[tp] = offset + 1
                        for on_batch in after_batch:
                            on_batch(tp, offset)
                if linger and sum(map(len, records.values())) < MAX_BATCH:
                    # A partition is fetched again as soon as its records were taken: taking
                    # a trickle at once costs a fetch request, a thread hand-off and handler
                    # calls per event or two. Waiting a little lets what arrives meanwhile
                    # come in one fetch (a full round goes on at once).
                    await asyncio.sleep(linger)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _per_message(self, tp: Any, recs: list[Any], callback: Any,
                           to_message: Any) -> None:
        """Faust's own per-message path for one partition's records (gaps recorded, as
        Faust does, so a compacted topic's offsets still commit)."""
        read_offset = self._read_offset
        acks_enabled = self.app.topics.acks_enabled_for(tp.topic)
        for rec in recs:
            last = read_offset.get(tp)
            if last and rec.offset - last > 1 and acks_enabled:
                await self._add_gap(tp, last + 1, rec.offset)
            await self.wait_first(callback(to_message(tp, rec)), self.suspend_flow.wait())
            read_offset[tp] = rec.offset

    async def _seek_back(self) -> None:
        """Flow stopped (rebalancing): back to the committed offsets, as Faust does."""
        try:
            await self.perform_seek()
        except Exception as exc:
            self.log.warning("seek back to committed offsets failed: %r", exc)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit with the worker's before-commit hooks run in the middle.

        The offsets to commit are fixed *before* the hooks run: they cover only events
        handled (acked, or finished by a batch handler) by then, whose state the hooks then
        send (write-behind changelogs). Handlers go on with events while an async hook
        awaits; were the offsets taken after the hooks (as ``super().commit`` would), they
        could cover events whose state no hook has sent yet, and a crash would lose them.
        State sent for those later events is harmless: it is ahead of the offsets, and the
        replay of an event already in the state is detected and skipped. Faust flushes the
        producer (outputs and changelogs) before it commits the offsets.
        """
        worker_hooks = hooks_of(self.app)
        hooks = worker_hooks.before_commit
        if not hooks or self.app.client_only:
            return await super().commit(topics, start_new_transaction)
        if self.app.in_transaction:
            # Exactly-once: a handler's output records join the transaction of its input
            # partition as they are sent; were handlers to run between the offsets being
            # fixed and the transaction's commit, the outputs of events past those offsets
            # would be committed too, and sent again when the events are re-read after a
            # crash. So no handler runs until the transactions are committed.
            async with worker_hooks.commit_gate:
                return await self._commit_with_hooks(hooks, topics, start_new_transaction)
        return await self._commit_with_hooks(hooks, topics, start_new_transaction)

    async def _commit_with_hooks(self, hooks: list[Any], topics: Any,
                                 start_new_transaction: bool) -> bool:
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


class QuietWorker(faust.Worker):
    """Faust's worker without its terminal spinner.

    At a log level of WARN or above Faust installs a spinner handler and sets the root
    logger to DEBUG, so every ``log.debug`` of every library (aiokafka writes several per
    fetch and produce request) builds a log record that the handlers then drop: ~20 % of
    a one-hop relay's CPU at 2,000 events/s. Without the spinner the root logger keeps the
    level asked for."""

    def on_setup_root_logger(self, logger: Any, level: int) -> None:
        self.spinner = None


class LowLatencyTransport(faust_aiokafka.Transport):
    """aiokafka transport whose consumer fetch wait is configurable."""

    Consumer = _LowLatencyConsumer


drivers.TRANSPORTS.aliases[TRANSPORT_SCHEME] = f"{__name__}:LowLatencyTransport"


def broker_url(bootstrap: str) -> str:
    """``h1:9092,h2:9092`` -> ``lpkafka://h1:9092;lpkafka://h2:9092`` (Faust's list form)."""
    servers = [s.strip() for s in bootstrap.split(",") if s.strip()]
    return ";".join(f"{TRANSPORT_SCHEME}://{server}" for server in servers)


WEB_MAX_BODY_BYTES = 64 * 1024  # aiohttp's client_max_size: a larger request body is a 413


def web_application_options(settings: Settings) -> dict[str, Any]:
    """Options of the web server's aiohttp application (Faust's ``web_application_options``):
    the body cap, and the header-read timeout as the protocol's keep-alive timeout (aiohttp
    closes a connection whose request head is incomplete when it fires, however slowly
    bytes trickle in). A body a handler left unread is drained for at most the body timeout
    before the connection closes. The rest of the limits: ``agents.web.limits``.

    >>> web_application_options(Settings())["handler_args"]["keepalive_timeout"]
    10.0
    """
    return {"client_max_size": WEB_MAX_BODY_BYTES,
            "handler_args": {"keepalive_timeout": max(0.1, settings.http_header_timeout_s),
                             "lingering_time": max(0.1, settings.http_body_timeout_s)}}


def create_app(settings: Settings, bootstrap: str | None = None,
               hooks: WorkerHooks | None = None, **overrides: Any) -> faust.App:
    """A configured Faust app for ``hooks`` (the worker's handlers and commit hooks; see
    ``agents.worker``)."""
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
        # header-read timeout (aiohttp's keep-alive timer) and body cap: agents.web.limits
        "web_application_options": web_application_options(settings),
        "consumer_auto_offset_reset": "earliest",
        "producer_linger": settings.producer_linger_ms / 1000.0,
        "producer_max_batch_size": settings.producer_max_batch_bytes,
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
        "Worker": "streams.app:QuietWorker",
    }
    options.update(overrides)
    app = faust.App(settings.app_id, **options)
    hooks = hooks or WorkerHooks()
    hooks.settings, hooks.bootstrap = settings, bootstrap
    attach_hooks(app, hooks)
    return app


def subscribe(app: faust.App, topic: Any, name: str) -> None:
    """Subscribe ``topic`` through Faust (consumer group, assignment, rebalance) for a
    batch handler: an agent that never sees a message (the consumer hands the topic's
    records to the handler in ``hooks.batch_handlers``)."""

    async def subscribed(stream: Any) -> None:
        async for _ in stream:  # pragma: no cover (the batching consumer takes them all)
            pass

    subscribed.__name__ = name.replace("-", "_")
    app.agent(topic, name=name)(subscribed)
