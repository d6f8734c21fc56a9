"""Worker health on ``/metrics``: consumer lag, table sizes, rebalances, live business gauges.

What the agents count themselves (events, dead letters, latency, sinks, models, triggers,
anomalies) lives in :mod:`agents.stats` and the sinks; this module adds what is read from
Faust and from the worker's state when Prometheus scrapes:

* ``livepulse_consumer_lag_records{topic,partition}``: for every assigned partition, the log
  end offset minus the next offset the worker's streams will read. The log end is the high
  watermark of the latest fetch response (``consumer.highwater``), not ListOffsets, which
  the embedded broker under-reports after batched produce; the next offset is the last
  offset delivered to a stream plus one (a sensor hook), or the committed offset when
  nothing was delivered since the last rebalance.
* ``livepulse_table_keys{table}``: keys per Faust table held by this worker (RocksDB
  tables: counted every ``LIVEPULSE_TABLE_COUNT_INTERVAL_S``, so a scrape never walks
  millions of keys).
* ``livepulse_rebalances_total``, ``livepulse_rebalance_duration_seconds``,
  ``livepulse_rebalancing``, ``livepulse_assigned_partitions``.
* ``livepulse_worker_info{app_id,version,faust_version}`` (value 1) and the process series
  (``livepulse_process_cpu_seconds_total``, ``..._resident_memory_bytes``,
  ``..._start_time_seconds``, ``..._open_fds``).
* ``livepulse_live_rooms`` and ``livepulse_room_viewers``: live rooms this worker owns and
  their viewers now (sums over workers give the platform's; room ids are never labels).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import faust
from faust.stores.memory import Store as MemoryStore
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agents.anomalies.incidents import SCOPES, SEVERITIES
from agents.engine import Engine
from agents.rooms.pipeline import RoomPipeline

REBALANCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0, 60.0, 120.0)
KEYS_PER_YIELD = 5000


class ConsumerSensor(faust.Sensor):
    """Faust sensor: the last offset delivered to a stream per partition, and rebalances.

    >>> from prometheus_client import CollectorRegistry
    >>> sensor = ConsumerSensor(CollectorRegistry())
    >>> state = sensor.on_rebalance_start(None)
    >>> sensor.on_rebalance_end(None, state)
    >>> sensor.rebalances._value.get(), sensor.rebalancing._value.get()
    (1.0, 0.0)
    """

    def __init__(self, registry: CollectorRegistry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.read: dict[Any, int] = {}
        self.rebalances = Counter(
            "livepulse_rebalances_total", "Consumer group rebalances this worker took part "
            "in (the first assignment included).", registry=registry)
        self.rebalancing = Gauge(
            "livepulse_rebalancing", "1 while a rebalance (with table recovery) is in "
            "progress on this worker, else 0.", registry=registry)
        self.rebalance_seconds = Histogram(
            "livepulse_rebalance_duration_seconds", "Time from a rebalance's start to the "
            "end of table recovery.", buckets=REBALANCE_BUCKETS, registry=registry)

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.read[tp] = offset

    def on_rebalance_start(self, app: Any) -> dict[str, float]:
        self.rebalances.inc()
        self.rebalancing.set(1)
        self.read.clear()  # partitions may move: positions come from commits until read again
        return {"started": time.monotonic()}

    def on_rebalance_end(self, app: Any, state: dict[str, float]) -> None:
        self.rebalancing.set(0)
        if state and "started" in state:
            self.rebalance_seconds.observe(time.monotonic() - state["started"])


def partition_lag(highwater: int | None, read: int | None, committed: int | None) -> int | None:
    """Records not yet delivered: log end minus the next offset to read (None: unknown).

    >>> partition_lag(120, 99, 90), partition_lag(120, None, 90), partition_lag(None, 5, 0)
    (20, 30, None)
    >>> partition_lag(0, None, None), partition_lag(7, None, None)
    (0, None)
    """
    if highwater is None:
        return None
    if read is not None:
        position = read + 1
    elif committed is not None:
        position = committed
    elif highwater == 0:
        return 0  # an empty partition has no lag whatever the position
    else:
        return None
    return max(0, highwater - position)


class TableSizes:
    """Keys per Faust table on this worker.

    A memory table is a dict: its size is read at every scrape. Any other store (RocksDB)
    is counted by walking its keys (RocksDB's ``estimate-num-keys`` counts every overwrite
    still in the memtable, tens of times too many for profiles) in :meth:`refresh`, run by a
    timer, which yields to the event loop every ``KEYS_PER_YIELD`` keys; a RocksDB iterator
    reads a consistent snapshot while the agents go on writing.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counted: dict[str, int] = {}

    def now(self) -> dict[str, int]:
        out = {}
        for name, table in self.app.tables.items():
            if isinstance(table.data, MemoryStore):
                out[name] = len(table.data)
            elif name in self.counted:
                out[name] = self.counted[name]
        return out

    async def refresh(self) -> None:
        for name, table in list(self.app.tables.items()):
            if isinstance(table.data, MemoryStore):
                continue
            n = 0
            try:
                for _ in table.data:
                    n += 1
                    if n % KEYS_PER_YIELD == 0:
                        await asyncio.sleep(0)
            except Exception:  # a rebalance closed the store: count it next time
                continue
            self.counted[name] = n


class WorkerCollector(Collector):
    """Gauges read from the running worker when Prometheus scrapes."""

    def __init__(self, engine: Engine, sensor: ConsumerSensor, sizes: TableSizes,
                 rooms: RoomPipeline | None) -> None:
        self.app = engine.app
        self.rooms = rooms
        self.sensor = sensor
        self.sizes = sizes

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        lag, assigned, tables, rooms, viewers = self._families()
        consumer: Any = None
        assignment: set[Any] = set()
        try:
            consumer = self.app.consumer
            assignment = consumer.assignment()
        except Exception:  # not started yet, or stopping
            pass
        assigned.add_metric([], len(assignment))
        # Faust's committed positions: seeded from the broker at assignment, then each commit
        committed = getattr(consumer, "_committed_offset", None) or {}
        for tp in sorted(assignment):
            try:
                highwater = consumer.highwater(tp)
            except Exception:  # moved away between assignment() and here
                continue
            n = partition_lag(highwater, self.sensor.read.get(tp), committed.get(tp))
            if n is not None:
                lag.add_metric([tp.topic, str(tp.partition)], n)
        for name, n in sorted(self.sizes.now().items()):
            tables.add_metric([name], n)
        pipeline = self.rooms
        live = [room for room in (pipeline.rooms.values() if pipeline else ()) if room.live]
        rooms.add_metric([], len(live))
        viewers.add_metric([], sum(len(room.state.viewers) for room in live))
        yield from (lag, assigned, tables, rooms, viewers)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "livepulse_consumer_lag_records", "Records in an assigned partition not yet "
                "delivered to this worker's streams (log end from the last fetch minus the "
                "next offset to read).", labels=["topic", "partition"]),
            GaugeMetricFamily(
                "livepulse_assigned_partitions", "Topic partitions assigned to this worker's "
                "consumer (inputs, internal topics and table changelogs)."),
            GaugeMetricFamily(
                "livepulse_table_keys", "Keys held per Faust table on this worker (RocksDB "
                "tables: as of the last periodic count).", labels=["table"]),
            GaugeMetricFamily(
                "livepulse_live_rooms", "Live rooms owned by this worker."),
            GaugeMetricFamily(
                "livepulse_room_viewers", "Viewers present now in the live rooms owned by "
                "this worker."),
        )


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def register(engine: Engine, rooms: RoomPipeline | None = None) -> ConsumerSensor:
    """Add the sensor, the scrape-time collector, worker info and process series to the
    engine's registry; give the bounded anomaly series their zero so rates start at 0."""
    disable_created_metrics()  # no `*_created` gauge per counter child: halves the series
    registry = engine.metrics.registry
    sensor = ConsumerSensor(registry)
    engine.app.sensors.add(sensor)
    engine.hooks.after_batch.append(sensor.read.__setitem__)  # batched topics' positions
    sizes = TableSizes(engine.app)
    registry.register(WorkerCollector(engine, sensor, sizes, rooms))

    @engine.app.timer(engine.settings.table_count_interval_s, name="table-key-count")
    async def count_table_keys() -> None:
        await sizes.refresh()
    ProcessCollector(namespace="livepulse", registry=registry)
    info = Gauge("livepulse_worker_info", "This worker's app id (consumer group) and "
                 "versions (value 1).", ["app_id", "version", "faust_version"],
                 registry=registry)
    info.labels(engine.settings.app_id, _version("livepulse"), _version("faust-streaming")).set(1)
    for scope in SCOPES:
        for severity in SEVERITIES:
            engine.metrics.anomalies.labels(scope, severity)
    return sensor
