"""ClickHouse history sink: the engine's inputs and outputs, stored in batches, nothing lost.

The sink is a Kafka consumer of its own (group ``<LIVEPULSE_APP_ID>-clickhouse``, manual
commits) that reads the topics of :data:`agents.sinks.clickhouse_schema.TABLES` -- the raw
``live-events`` and ``clicks`` and the output topics -- and writes one history table per
topic. It runs inside every worker when ``LIVEPULSE_CLICKHOUSE_URL`` is set (workers split
its partitions like the engine's), or alone as ``livepulse history run``.

Flow (per partition, quix-streams style): each fetched record is checked against its
contract (raw inputs get the engine's full ingest validation; records the engine
dead-lettered are skipped and counted), mapped to a row with user ids pseudonymized, and
:meth:`SinkBuffer.add`-ed to its partition's buffer. A flush takes the whole buffer once it
holds ``batch_rows`` rows or its oldest record waited ``batch_interval_s``, and, in a worker
thread (``clickhouse-driver`` is synchronous; the event loop never blocks on it):

1. runs the idempotent migrations once (``CREATE ... IF NOT EXISTS``, ``schema_migrations``);
2. drops rows at offsets already stored (``sink_progress`` says so: a crash hit between
   storing and committing) -- counted in ``livepulse_clickhouse_duplicates_total``;
3. inserts one statement per table, then the new next offsets into ``sink_progress``;
4. then, back on the loop, commits those offsets to Kafka.

Fetching goes on while a flush runs (one flush at a time). A failed flush puts its rows back
in front, and the next attempt waits with exponential back-off (jittered, up to
``max_backoff_s``). The buffer is bounded: at ``max_buffered_rows`` (including the flush in
flight) every assigned partition is paused, so the consumer keeps its group membership but
fetches nothing until a flush succeeds (backpressure; nothing is dropped). Offsets are
committed only after their rows are stored, so a crash loses nothing: the records after the
last commit are read again, and those already stored are recognised by offset (step 2) or,
if the crash hit between steps 3's statements, deduplicated by the table's key
(``ReplacingMergeTree``; ``SELECT ... FINAL``). On a rebalance the sink flushes what it
holds and commits before giving its partitions up (or, if ClickHouse is down, drops its
buffer: the next owner reads those records again).

Retention: at start and every ``retention_check_s``, day partitions older than
``retention_days`` are dropped from every history table (``ALTER TABLE ... DROP PARTITION``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import functools
import logging
import random
import time
import urllib.parse
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from clickhouse_driver import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agents.privacy import pseudonym_key, pseudonymize
from agents.sinks.clickhouse_schema import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    PROGRESS_TABLE,
    TABLE_BY_NAME,
    TABLES,
    HistoryTable,
    Row,
    data_migration_statements,
    erase_user_sql,
    expired_partitions,
    migration_statements,
    parse_version,
    retention_cutoff,
    user_rows_sql,
)
from config.settings import Settings, redact_url
from streams.contracts import ContractError, as_dict, check_contract
from streams.control import Backoff
from streams.ingest import Rejection, Validator, now_ms
from streams.security import kafka_client_options
from streams.topics import TopicNames, topic_names

if TYPE_CHECKING:
    from agents.engine import Engine

log = logging.getLogger("livepulse.clickhouse")
PAUSE_LOG_INTERVAL_S = 30.0  # a buffer that fills and drains again is logged this often


class _QuietConnectFailures(logging.Filter):
    """clickhouse-driver logs every failed connection attempt as a WARNING with a full
    traceback; the sink logs an outage once (and its end), so these only show at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith("Failed to connect")):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


logging.getLogger("clickhouse_driver.connection").addFilter(_QuietConnectFailures())

INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_ROW_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000,
                     250_000)
TP = tuple[str, int]  # (topic, partition)
# ClickHouse server error codes of refused credentials: 192 UNKNOWN_USER, 193 WRONG_PASSWORD,
# 194 REQUIRED_PASSWORD, 516 AUTHENTICATION_FAILED (servers since 21.x).
AUTH_ERROR_CODES = frozenset({192, 193, 194, 516})


class ClickHouseSinkMetrics:
    """Prometheus series of the history sink, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.rows = Counter(
            "livepulse_clickhouse_rows_total", "Rows stored in ClickHouse, by table.",
            ["table"], registry=r)
        self.insert_seconds = Histogram(
            "livepulse_clickhouse_insert_seconds", "Duration of one INSERT statement.",
            buckets=INSERT_BUCKETS, registry=r)
        self.batch_rows = Histogram(
            "livepulse_clickhouse_batch_rows", "Rows in one INSERT statement (one table).",
            buckets=BATCH_ROW_BUCKETS, registry=r)
        self.errors = Counter(
            "livepulse_clickhouse_errors_total", "Failed ClickHouse or commit operations "
            "(flush, commit, retention).", ["operation"], registry=r)
        self.duplicates = Counter(
            "livepulse_clickhouse_duplicates_total", "Records read again after a crash or "
            "rebalance whose rows were already stored (skipped), by table.", ["table"],
            registry=r)
        self.skipped = Counter(
            "livepulse_clickhouse_skipped_records_total", "Records not stored because they "
            "break their contract (the engine dead-lettered them), by topic and reason.",
            ["topic", "reason"], registry=r)
        self.buffered_rows = Gauge(
            "livepulse_clickhouse_buffered_rows", "Rows held in memory, not yet stored "
            "(including the flush in flight).", registry=r)
        self.up = Gauge(
            "livepulse_clickhouse_up", "1 if the last ClickHouse flush succeeded, else 0.",
            registry=r)
        self.paused = Gauge(
            "livepulse_clickhouse_paused", "1 while fetching is paused because the buffer is "
            "full (backpressure).", registry=r)
        self.pauses = Counter(
            "livepulse_clickhouse_pauses_total", "Times fetching was paused because the "
            "buffer was full (backpressure).", registry=r)
        self.partitions_dropped = Counter(
            "livepulse_clickhouse_partitions_dropped_total", "Day partitions dropped by "
            "retention.", registry=r)


# ------------------------------------------------------------------ buffering (no I/O)
@dataclass(slots=True)
class PartitionBuffer:
    """Rows of one topic partition, in offset order, and the offset to commit after them."""

    rows: list[Row] = field(default_factory=list)
    offsets: array = field(default_factory=lambda: array("q"))
    next_offset: int = -1

    def extend(self, newer: PartitionBuffer) -> None:
        self.rows.extend(newer.rows)
        self.offsets.extend(newer.offsets)
        self.next_offset = max(self.next_offset, newer.next_offset)


Batch = dict[TP, PartitionBuffer]


class SinkBuffer:
    """Per-partition buffers of rows waiting to be stored; a flush takes all of them.

    >>> buf = SinkBuffer()
    >>> buf.add(("t", 0), 5, ("a",), now=10.0); buf.add(("t", 0), 6, None, now=10.5)
    >>> buf.rows, buf.due(now=10.9, batch_rows=2, interval_s=1.0), buf.due(11.0, 2, 1.0)
    (1, False, True)
    >>> batch = buf.take()
    >>> buf.rows, batch[("t", 0)].rows, batch[("t", 0)].next_offset
    (0, [('a',)], 7)
    >>> buf.add(("t", 0), 7, ("b",), now=12.0); buf.requeue(batch)
    >>> buf.parts[("t", 0)].rows, list(buf.parts[("t", 0)].offsets), buf.rows
    ([('a',), ('b',)], [5, 7], 2)
    """

    __slots__ = ("first_at", "parts", "rows")

    def __init__(self) -> None:
        self.parts: Batch = {}
        self.rows = 0
        self.first_at: float | None = None  # when the oldest held record was added

    def add(self, tp: TP, offset: int, row: Row | None, now: float) -> None:
        """Hold one record: its row (None: nothing to store, only the offset to commit)."""
        part = self.parts.get(tp)
        if part is None:
            part = self.parts[tp] = PartitionBuffer()
        if row is not None:
            part.rows.append(row)
            part.offsets.append(offset)
            self.rows += 1
        part.next_offset = offset + 1
        if self.first_at is None:
            self.first_at = now

    def due(self, now: float, batch_rows: int, interval_s: float) -> bool:
        """True when a flush should start: enough rows, or the oldest record waited long
        enough (also when it has no row: its offset still needs committing)."""
        if self.rows >= batch_rows:
            return True
        return self.first_at is not None and now - self.first_at >= interval_s

    def take(self) -> Batch:
        batch, self.parts, self.rows, self.first_at = self.parts, {}, 0, None
        return batch

    def requeue(self, batch: Batch, now: float | None = None) -> None:
        """Put a batch that could not be stored back in front of what came since."""
        newer = self.parts
        self.parts = batch
        for tp, part in newer.items():
            if tp in batch:
                batch[tp].extend(part)
            else:
                batch[tp] = part
        self.rows = sum(len(p.rows) for p in batch.values())
        if batch and self.first_at is None:
            self.first_at = time.monotonic() if now is None else now

    def drop(self) -> int:
        """Forget everything held (partitions revoked); return the rows dropped."""
        rows = self.rows
        self.take()
        return rows


# ------------------------------------------------------------------ the ClickHouse side
@dataclass
class StoreResult:
    rows: dict[str, int]              # table -> rows inserted
    duplicates: dict[str, int]        # table -> rows skipped (already stored)
    statements: list[tuple[int, float]]  # (rows, seconds) of each INSERT
    dropped_partitions: list[tuple[str, str]] = field(default_factory=list)


def client_for(url: str, timeout_s: float = 10.0) -> tuple[Client, str]:
    """A ``clickhouse-driver`` client for ``url`` connected to ``default``, and the
    history database named by the URL path (``livepulse`` if none).

    >>> client, database = client_for("clickhouse://u:p@ch:9000/hist?client_name=lp")
    >>> database, list(client.connection.hosts), client.connection.database
    ('hist', [('ch', 9000)], 'default')
    """
    parts = urllib.parse.urlsplit(url)
    database = parts.path.strip("/") or "livepulse"
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name must be letters, digits and '_': {database!r}")
    # Connect to `default`: the history database may not exist yet (migrations create it).
    base = urllib.parse.urlunsplit(parts._replace(path="/default"))
    client = Client.from_url(base)
    client.connection.connect_timeout = timeout_s
    client.connection.send_receive_timeout = timeout_s
    client.connection.sync_request_timeout = timeout_s
    return client, database


class ClickHouseWriter:
    """Synchronous ClickHouse side of the sink: migrations, inserts, progress, retention.

    Not thread-safe: the sink runs one call at a time, in a worker thread.
    """

    def __init__(self, url: str, *, group: str, names: TopicNames, retention_days: int = 0,
                 timeout_s: float = 10.0) -> None:
        self.url = url
        self.client, self.database = client_for(url, timeout_s)
        self.group = group
        self.retention_days = retention_days
        self.tables: dict[str, HistoryTable] = {t.topic(names): t for t in TABLES}
        self.server_version: tuple[int, ...] | None = None
        self.migrated = False
        self.stored: dict[TP, int] = {}  # next offset known stored, per partition

    def execute(self, sql: str, params: Any = None, **kw: Any) -> Any:
        return self.client.execute(sql, params, **kw)

    def migrate(self) -> list[int]:
        """Create the database and tables if missing; return the migrations applied now."""
        version_text = self.execute("SELECT version()")[0][0]
        self.server_version = parse_version(version_text)
        for sql in migration_statements(self.database, self.server_version):
            self.execute(sql)
        done = {v for (v,) in self.execute(
            f"SELECT version FROM {self.database}.{MIGRATIONS_TABLE}")}
        data = data_migration_statements(self.database, self.server_version, done)
        for sql in data:
            self.execute(sql)
        if data:  # rewriting big old tables may take a while: it goes on in the background
            try:
                self.wait_mutations(timeout_s=30.0)
            except TimeoutError:
                log.warning("ClickHouse data migration still running after 30 s (mutations "
                            "go on in the background; see system.mutations)")
        applied = [m.version for m in MIGRATIONS if m.version not in done]
        if applied:
            self.execute(
                f"INSERT INTO {self.database}.{MIGRATIONS_TABLE} (version, name, "
                "server_version) VALUES",
                [(m.version, m.name, version_text) for m in MIGRATIONS if m.version in applied])
            log.info("ClickHouse %s: history schema migrated (%s) in database %s",
                     version_text, ", ".join(f"v{v}" for v in applied), self.database)
        self.migrated = True
        return applied

    def wait_mutations(self, timeout_s: float = 120.0) -> None:
        """Wait until every mutation (``ALTER ... UPDATE/DELETE``) of the history tables is
        done (18.16 has no ``mutations_sync``); TimeoutError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        tables = tuple(t.name for t in TABLES)
        while self.execute("SELECT count() FROM system.mutations WHERE database = %(db)s "
                           "AND table IN %(tables)s AND is_done = 0",
                           {"db": self.database, "tables": tables})[0][0]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ClickHouse mutations not done within {timeout_s} s")
            time.sleep(0.05)

    def erase_user(self, pid: str, timeout_s: float = 120.0) -> int:
        """Delete every history row of the user with pseudonym ``pid`` (and the pseudonym
        where other rows name it); wait for the mutations; return the rows found before."""
        if not self.migrated:
            self.migrate()
        found = self.user_rows(pid)
        for sql in erase_user_sql(self.database):
            self.execute(sql, {"pid": pid})
        self.wait_mutations(timeout_s)
        return found

    def user_rows(self, pid: str) -> int:
        """Rows of the user with pseudonym ``pid`` in every history table."""
        return sum(self.execute(sql, {"pid": pid})[0][0]
                   for sql in user_rows_sql(self.database).values())

    def load_stored(self, tps: Iterable[TP]) -> None:
        """Read which offsets of ``tps`` are stored (by any sink of this group)."""
        wanted = set(tps)
        if not wanted:
            return
        for tp in wanted:
            self.stored.pop(tp, None)
        rows = self.execute(
            f"SELECT topic, partition, max(next_offset) FROM {self.database}.{PROGRESS_TABLE} "
            "WHERE consumer_group = %(group)s AND topic IN %(topics)s GROUP BY topic, partition",
            {"group": self.group, "topics": tuple(sorted({t for t, _ in wanted}))})
        for topic, partition, next_offset in rows:
            if (topic, partition) in wanted:
                self.stored[(topic, partition)] = next_offset

    def store(self, batch: Batch, fresh: set[TP], retain: bool = False) -> StoreResult:
        """Store a batch: migrations (once), duplicate filter, inserts, progress.

        ``fresh``: partitions assigned since their stored offsets were last read.
        """
        if not self.migrated:
            self.migrate()
        self.load_stored(fresh)
        per_table: dict[str, list[Row]] = collections.defaultdict(list)
        duplicates: dict[str, int] = collections.defaultdict(int)
        for tp, part in batch.items():
            table = self.tables[tp[0]].name
            floor = self.stored.get(tp, 0)
            if part.offsets and part.offsets[0] < floor:
                keep = [row for row, off in zip(part.rows, part.offsets, strict=True)
                        if off >= floor]
                duplicates[table] += len(part.rows) - len(keep)
                per_table[table].extend(keep)
            else:
                per_table[table].extend(part.rows)
        statements = []
        for table_name, rows in per_table.items():
            if rows:
                statements.append((len(rows), self.insert(table_name, rows)))
        progress = [(self.group, topic, partition, part.next_offset)
                    for (topic, partition), part in batch.items()
                    if part.next_offset > self.stored.get((topic, partition), 0)]
        if progress:
            self.execute(f"INSERT INTO {self.database}.{PROGRESS_TABLE} "
                         "(consumer_group, topic, partition, next_offset) VALUES", progress)
            for _group, topic, partition, next_offset in progress:
                self.stored[(topic, partition)] = next_offset
        result = StoreResult({t: len(r) for t, r in per_table.items() if r}, dict(duplicates),
                             statements)
        if retain:
            result.dropped_partitions = self.drop_expired()
        return result

    def insert(self, table_name: str, rows: list[Row]) -> float:
        """One INSERT of ``rows`` into a history table; return its duration in seconds."""
        table = TABLE_BY_NAME[table_name]
        started = time.perf_counter()
        self.execute(table.insert_sql(self.database), rows, types_check=False)
        return time.perf_counter() - started

    def drop_expired(self, today: dt.date | None = None) -> list[tuple[str, str]]:
        """Drop the day partitions older than ``retention_days`` (0: keep everything)."""
        if self.retention_days <= 0:
            return []
        if not self.migrated:
            self.migrate()
        cutoff = retention_cutoff(today or dt.datetime.now(dt.UTC).date(), self.retention_days)
        dropped = []
        for table in TABLES:
            partitions = [p for (p,) in self.execute(
                "SELECT DISTINCT partition FROM system.parts WHERE database = %(db)s AND "
                "table = %(table)s AND active", {"db": self.database, "table": table.name})]
            for partition in expired_partitions(partitions, cutoff):
                self.execute(f"ALTER TABLE {self.database}.{table.name} DROP PARTITION "
                             f"{int(partition)}")
                dropped.append((table.name, partition))
        if dropped:
            log.info("ClickHouse retention (%d days): dropped %d day partitions: %s",
                     self.retention_days, len(dropped),
                     ", ".join(f"{t}/{p}" for t, p in dropped[:20]))
        return dropped

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()


# ------------------------------------------------------------------ decoding
class RecordDecoder:
    """Raw record bytes -> row of its history table, or a skip reason."""

    def __init__(self, settings: Settings, key: bytes, cache_size: int = 65_536) -> None:
        self.validators = {t.name: Validator.from_settings(t.contract, settings)
                           for t in TABLES if t.raw_input}
        self.pseudonymize: Callable[[str], str] = functools.lru_cache(cache_size)(
            functools.partial(pseudonymize, key=key))

    def row(self, table: HistoryTable, value: bytes | None,
            key: bytes | None = None) -> Row | str:
        """The row, or the reason (an error class) why the record is not stored (an input
        record keyed otherwise than by its entity id too: the workers refused it)."""
        if table.raw_input:
            record = self.validators[table.name].decode(value, now_ms(), key)
            if isinstance(record, Rejection):
                return record.error_class
            try:  # an error's text could quote the record: it must not reach a log
                return table.row(as_dict(record), self.pseudonymize)
            except (KeyError, TypeError, ValueError, AttributeError):
                return "internal"
        if value is None:
            return "tombstone"
        try:
            doc = check_contract(table.contract, orjson.loads(value))
            return table.row(doc, self.pseudonymize)
        except orjson.JSONDecodeError:
            return "malformed_json"
        except ContractError as exc:
            return exc.error_class
        except (KeyError, TypeError, ValueError, AttributeError):
            return "internal"


# ------------------------------------------------------------------ the sink
class _Listener(ConsumerRebalanceListener):
    def __init__(self, sink: ClickHouseSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.sink._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink._on_assigned(assigned)


class ClickHouseSink:
    """Consumes the history topics and stores them in ClickHouse; see the module docstring.

    ``run()`` is the whole life of the sink (Faust app task or ``livepulse history run``);
    cancel it to stop: it finishes the flush in flight, makes one last flush of what it
    holds (unless ClickHouse is down), commits, and leaves the group.
    """

    def __init__(self, settings: Settings, bootstrap: str, *,
                 metrics: ClickHouseSinkMetrics | None = None, group: str | None = None,
                 poll_ms: int = 100, max_backoff_s: float = 30.0,
                 retention_check_s: float = 3600.0) -> None:
        if settings.clickhouse_batch_interval_ms <= 0:
            raise ValueError("LIVEPULSE_CLICKHOUSE_BATCH_INTERVAL_MS must be > 0")
        self.settings = settings
        self.bootstrap = bootstrap
        self.names = topic_names(settings)
        self.group = group or f"{settings.app_id}-clickhouse"
        self.batch_rows = settings.clickhouse_batch_rows
        self.interval_s = settings.clickhouse_batch_interval_ms / 1000
        self.max_buffered = settings.clickhouse_max_buffered_rows
        self.poll_ms = poll_ms
        self.max_backoff_s = max_backoff_s
        self.retention_check_s = retention_check_s
        self.metrics = metrics or ClickHouseSinkMetrics(CollectorRegistry())
        self.writer = ClickHouseWriter(settings.clickhouse_url, group=self.group,
                                       names=self.names,
                                       retention_days=settings.clickhouse_retention_days)
        self.tables = self.writer.tables
        self.decoder = RecordDecoder(settings, pseudonym_key(settings))
        self.buffer = SinkBuffer()
        self.metrics.buffered_rows.set_function(lambda: self.buffered)
        self.metrics.up.set(0)
        self.consumer: AIOKafkaConsumer | None = None
        self.stored_rows = 0
        self.statements: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=100_000)  # (rows, seconds) of recent INSERTs, for benchmarks and tests
        self.started = asyncio.Event()   # consumer started and subscribed
        self.migrated = asyncio.Event()  # schema in place (first successful flush)
        self._inflight: Batch | None = None
        self._inflight_rows = 0
        self._job: asyncio.Task[StoreResult] | None = None
        self._fresh: set[TP] = set()     # assigned; their stored offsets not read yet
        self._job_fresh: set[TP] = set()  # read by the flush in flight
        self._paused = False
        self._pause_logged_at = -PAUSE_LOG_INTERVAL_S
        self._pauses_unlogged = 0
        self._pause_logged = False  # the current pause was logged: log its end too
        self._failures = 0
        self._retry_at = 0.0
        self._next_retention = 0.0
        self._up: bool | None = None
        self._down_since = 0.0

    @classmethod
    def from_engine(cls, engine: Engine) -> ClickHouseSink:
        bootstrap = ",".join(f"{u.host}:{u.port}" for u in engine.app.conf.broker)
        return cls(engine.settings, bootstrap,
                   metrics=ClickHouseSinkMetrics(engine.metrics.registry))

    # ---- state -------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Rows held, not yet stored (including the flush in flight)."""
        return self.buffer.rows + self._inflight_rows

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def up(self) -> bool:
        return bool(self._up)

    def topics(self) -> list[str]:
        return list(self.tables)

    # ---- main loop ---------------------------------------------------------------------
    async def run(self) -> None:
        """Consume and store until cancelled; a failing consumer is restarted (back-off)."""
        backoff = Backoff(1.0, 30.0)  # not reset: a consumer failing again waits longer
        try:
            while True:
                try:
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    delay = backoff.next()
                    log.exception("ClickHouse sink consumer failed; restarting in %.0f s",
                                  delay)
                    await asyncio.sleep(delay)
        finally:
            await asyncio.to_thread(self.writer.close)

    async def _consume(self) -> None:
        consumer = self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=self.poll_ms,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            rebalance_timeout_ms=int(self.settings.rebalance_timeout_s * 1000),
            heartbeat_interval_ms=int(self.settings.heartbeat_interval_s * 1000),
            max_poll_interval_ms=300_000, **kafka_client_options(self.settings))
        await consumer.start()
        try:
            consumer.subscribe(self.topics(), listener=_Listener(self))
            self.started.set()
            if not self.migrated.is_set():
                self._start_job({}, retain=True)  # migrations (and retention) at start
            while True:
                await self._step()
        except asyncio.CancelledError:
            await self._shutdown()
            raise
        except Exception:
            await self._drain_job()
            self.buffer.drop()  # positions restart from the last commit with a new consumer
            self._fresh.clear()
            raise
        finally:
            self.consumer = None
            self._paused = False
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _step(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        room = self.max_buffered - self.buffered
        self._set_paused(room <= 0)
        records = await consumer.getmany(timeout_ms=self.poll_ms,
                                         max_records=max(1, min(room, 10_000)))
        now = time.monotonic()
        for tp, batch in records.items():
            table = self.tables[tp.topic]
            key = (tp.topic, tp.partition)
            for record in batch:
                row = self.decoder.row(table, record.value, record.key)
                if isinstance(row, str):
                    self.metrics.skipped.labels(tp.topic, row).inc()
                    self.buffer.add(key, record.offset, None, now)
                else:
                    self.buffer.add(key, record.offset, row, now)
        await self._pump(now)

    def _set_paused(self, full: bool) -> None:
        consumer = self.consumer
        if consumer is None or full == self._paused:
            return
        assigned = consumer.assignment()
        # While catching up the buffer fills and drains once per batch: log at most every
        # PAUSE_LOG_INTERVAL_S, with how often it paused meanwhile (the metrics see each).
        now = time.monotonic()
        if full:
            consumer.pause(*assigned)
            self.metrics.pauses.inc()
            self._pauses_unlogged += 1
            self._pause_logged = now - self._pause_logged_at >= PAUSE_LOG_INTERVAL_S
            if self._pause_logged:
                log.warning("ClickHouse sink buffer full (%d rows): fetching paused until a "
                            "batch is stored (backpressure; paused %d times since the last "
                            "message)", self.buffered, self._pauses_unlogged)
                self._pause_logged_at, self._pauses_unlogged = now, 0
        else:
            consumer.resume(*consumer.paused())
            (log.info if self._pause_logged else log.debug)(
                "ClickHouse sink fetching again (%d rows buffered)", self.buffered)
        self._paused = full
        self.metrics.paused.set(int(full))

    async def _pump(self, now: float) -> None:
        """Finish a completed flush; start the next one when due."""
        if self._job is not None and self._job.done():
            await self._finish_job()
        if self._job is not None or now < self._retry_at:
            return
        retain = self.settings.clickhouse_retention_days > 0 and now >= self._next_retention
        if self.buffer.due(now, self.batch_rows, self.interval_s) or retain:
            self._start_job(self.buffer.take(), retain)

    def _start_job(self, batch: Batch, retain: bool = False) -> None:
        self._inflight = batch
        self._inflight_rows = sum(len(p.rows) for p in batch.values())
        fresh, self._fresh = self._fresh, set()
        self._job_fresh = fresh
        if retain:
            self._next_retention = time.monotonic() + self.retention_check_s
        self._job = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.writer.store, batch, fresh, retain), name="clickhouse-flush")

    async def _finish_job(self) -> None:
        """Account for the flush that just ended: commit its offsets, or keep its rows."""
        job, batch, self._job = self._job, self._inflight or {}, None
        assert job is not None
        self._inflight, self._inflight_rows = None, 0
        try:
            result = job.result()
        except Exception as error:
            self._fresh |= self._job_fresh  # their stored offsets are still to be read
            self.buffer.requeue(batch)
            self._failed("flush", error)
            return
        for table, rows in result.rows.items():
            self.metrics.rows.labels(table).inc(rows)
        for table, count in result.duplicates.items():
            self.metrics.duplicates.labels(table).inc(count)
            log.info("ClickHouse sink: %d %s rows were already stored (read again after a "
                     "restart or rebalance): skipped", count, table)
        for rows, seconds in result.statements:
            self.metrics.batch_rows.observe(rows)
            self.metrics.insert_seconds.observe(seconds)
            self.statements.append((rows, seconds))
        self.metrics.partitions_dropped.inc(len(result.dropped_partitions))
        stored = sum(result.rows.values())
        self.stored_rows += stored
        self.migrated.set()
        self._recovered(stored)
        await self._commit(batch)

    async def _commit(self, batch: Batch) -> None:
        consumer = self.consumer
        if consumer is None or not batch:
            return
        assigned = consumer.assignment()
        offsets = {TopicPartition(t, p): OffsetAndMetadata(part.next_offset, "")
                   for (t, p), part in batch.items()
                   if TopicPartition(t, p) in assigned and part.next_offset >= 0}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as error:  # stored and recorded in sink_progress: nothing is lost
            self.metrics.errors.labels("commit").inc()
            log.warning("ClickHouse sink: offset commit failed (%s: %s); the rows are stored "
                        "and will be recognised if read again", type(error).__name__, error)

    def _failed(self, operation: str, error: BaseException) -> None:
        self.metrics.errors.labels(operation).inc()
        self._failures = min(self._failures + 1, 30)
        delay = min(self.max_backoff_s, 0.25 * 2 ** self._failures) * random.uniform(0.8, 1.0)
        self._retry_at = time.monotonic() + delay
        if self._up is False:
            log.debug("ClickHouse still unavailable: %r (retry in %.1f s)", error, delay)
            return
        self._up = False
        self._down_since = time.monotonic()
        self.metrics.up.set(0)
        refused = getattr(error, "code", None) in AUTH_ERROR_CODES
        log.warning("ClickHouse at %s unavailable (%s failed: %s: %s)%s; holding %d rows, "
                    "retrying with back-off", redact_url(self.settings.clickhouse_url),
                    operation, type(error).__name__, str(error).split("\n")[0][:300],
                    " -- authentication failed: check the user and password in "
                    "LIVEPULSE_CLICKHOUSE_URL" if refused else "", self.buffered)

    def _recovered(self, stored: int) -> None:
        was, self._up = self._up, True
        self._failures = 0
        self._retry_at = 0.0
        self.metrics.up.set(1)
        if was is None:
            log.info("ClickHouse at %s connected (server %s)",
                     redact_url(self.settings.clickhouse_url),
                     ".".join(map(str, self.writer.server_version or ())))
        elif was is False:
            log.info("ClickHouse at %s back after %.1f s: stored %d held rows",
                     redact_url(self.settings.clickhouse_url),
                     time.monotonic() - self._down_since, stored)

    # ---- rebalances and shutdown ---------------------------------------------------------
    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._fresh |= {(tp.topic, tp.partition) for tp in assigned}
        self._paused = False  # a new assignment starts unpaused
        self.metrics.paused.set(0)

    async def _drain_job(self) -> None:
        """Wait for the flush in flight (if any) and account for it."""
        job = self._job
        if job is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.shield(job)
        if self._job is job:  # the main loop may have accounted for it meanwhile
            await self._finish_job()

    async def _flush_now(self) -> None:
        """One flush of everything held (after the one in flight), waited for."""
        await self._drain_job()
        if self.buffer.parts:
            self._start_job(self.buffer.take())
            await self._drain_job()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Store and commit what we hold before the partitions go; else forget it."""
        await self._drain_job()
        if self.buffer.parts and self._up is not False:
            await self._flush_now()
        if self.buffer.parts:
            dropped = self.buffer.drop()
            log.warning("ClickHouse sink: partitions revoked while ClickHouse is down: %d "
                        "unstored rows left to the next owner (re-read from the last commit)",
                        dropped)
        self._fresh.clear()

    async def _shutdown(self) -> None:
        await self._drain_job()
        if self.buffer.parts and self._up:
            await self._flush_now()
        if self.buffered:
            log.warning("ClickHouse sink stopped with %d rows unstored (not committed: they "
                        "are read again at the next start)", self.buffered)


def register(engine: Engine) -> ClickHouseSink | None:
    """Run the history sink in this worker when ``LIVEPULSE_CLICKHOUSE_URL`` is set."""
    if not engine.settings.clickhouse_url.strip():
        return None
    sink = ClickHouseSink.from_engine(engine)

    @engine.app.task
    async def write_history() -> None:
        await sink.run()  # final flush and commit when Faust cancels it at shutdown

    return sink


async def run_standalone(settings: Settings, bootstrap: str,
                         stop: asyncio.Event | None = None) -> ClickHouseSink:
    """``livepulse history run``: the sink alone, until ``stop`` is set (or SIGTERM)."""
    sink = ClickHouseSink(settings, bootstrap)
    task = asyncio.create_task(sink.run())
    waiter = asyncio.create_task((stop or asyncio.Event()).wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if task.done():
        task.result()  # run() only ends by raising
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return sink


def history_counts(url: str) -> dict[str, int]:
    """Rows per history table at ``url``, each key once (``FINAL``)."""
    client, database = client_for(url)
    try:
        return {t.name: client.execute(f"SELECT count() FROM {database}.{t.name} FINAL")[0][0]
                for t in TABLES}
    finally:
        client.disconnect()
