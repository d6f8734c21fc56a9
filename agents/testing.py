"""An in-memory harness for the pipelines' batch handlers: no broker, no Faust worker.

The handlers of a worker (:class:`agents.rooms.pipeline.RoomHandler`,
:class:`agents.users.pipeline.UserHandler`) are built exactly as ``agents.worker`` builds them,
around an :class:`~agents.engine.Engine` whose Faust app is a stand-in: tables are dicts
(:class:`DictTable`, with the changelog records they would send), the producer records every
output batch (:class:`RecordingProducer`), and input records are made from plain values
(:func:`records`). A test feeds a record list to a handler, as the consumer would hand over one
fetched partition, and reads what came out.

>>> import asyncio, orjson
>>> h = Harness()
>>> event = {"event_id": "e1", "type": "join", "room_id": "r1", "user_id": "u1",
...          "ts": h.now_ms()}
>>> asyncio.run(h.feed("live-events", 0, [orjson.dumps(event), b"{bad"]))
>>> h.rooms.pipeline.rooms["r1"].state.viewers.keys() == {"u1"}
True
>>> [r["error_class"] for r in h.sent(h.names.dead_letter)]
['malformed_json']
>>> len(h.sent(h.names.user_activity, decode=True))  # the join, forwarded re-keyed by user
1
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson

from agents.anomalies.monitor import AnomalyMonitor
from agents.catalog import CatalogHandler
from agents.engine import Engine
from agents.models import ModelHost
from agents.promo.campaigns import CampaignBook
from agents.promo.triggers import PromoTriggers
from agents.rooms.pin_next import PinNext
from agents.rooms.pipeline import RoomHandler, RoomPipeline
from agents.state import WriteBehindTable
from agents.stats import EngineMetrics
from agents.users.audiences import PACKAGED_AUDIENCES, AudienceBook, Audiences
from agents.users.pipeline import UserHandler
from agents.users.store import ProfileStore
from config.settings import Settings
from streams.app import WorkerHooks
from streams.ingest import now_ms
from streams.outputs import partition_for
from streams.topics import TopicNames, topic_names


class DictTable(dict):  # type: ignore[type-arg]
    """A Faust table stand-in: a dict that records the changelog records sent for it."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name
        self.changelog: list[tuple[int | None, Any, Any]] = []

    @property
    def data(self) -> DictTable:
        return self

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       **_: Any) -> None:
        self.changelog.append((partition, key, value))


@dataclass
class Sent:
    topic: str
    partition: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes,
               headers: Any = ()) -> object:
        self.records.append((key, value, list(headers or [])))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class _Done:
    """An already delivered send."""

    def add_done_callback(self, callback: Any) -> None:
        pass


@dataclass
class RecordingProducer:
    """What the engine's output batches and Faust's producer are asked to send."""

    partitions: int = 4
    sent: list[Sent] = field(default_factory=list)

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> _Done:
        self.sent.extend(Sent(topic, partition, k, v, h) for k, v, h in batch.records)
        return _Done()

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(self.partitions))

    async def send(self, topic: str, key: bytes | None, value: bytes, partition: int | None,
                   timestamp: Any, headers: Any) -> _Done:
        if partition is None:
            partition = partition_for(key, self.partitions) if key else 0
        self.sent.append(Sent(topic, partition, key, value, list(headers or [])))
        return _Done()

    async def flush(self) -> None:
        pass

    def _ensure_producer(self) -> RecordingProducer:
        return self


@dataclass
class Record:
    """A consumer record as the batching consumer hands it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def records(topic: str, partition: int, values: Iterable[bytes | None],
            first_offset: int = 0, keys: Iterable[bytes | None] | None = None) -> list[Record]:
    """Consumer records of ``values`` at consecutive offsets from ``first_offset``."""
    values = list(values)
    key_list = list(keys) if keys is not None else [None] * len(values)
    return [Record(topic, partition, first_offset + i, key, value)
            for i, (key, value) in enumerate(zip(key_list, values, strict=True))]


class Harness:
    """A worker's room and user pipelines over dict tables and a recording producer.

    ``feed(topic, partition, values)`` hands one record batch to the handler of ``topic``
    (``"live-events"``, ``"clicks"``, ``"user-activity"`` or ``"catalog"``, or a full topic
    name), with
    offsets continuing per partition; ``sent(topic)`` lists what went out.
    """

    def __init__(self, settings: Settings | None = None, partitions: int = 4) -> None:
        self.settings = settings or Settings(
            kafka_url="memory", data_dir=tempfile.mkdtemp(prefix="lp-harness-"),
            partitions=partitions, redis_url="", clickhouse_url="")
        self.names: TopicNames = topic_names(self.settings)
        self.producer = RecordingProducer(partitions=self.settings.partitions)
        self.tables: dict[str, DictTable] = {}
        app = SimpleNamespace(producer=self.producer, topic=lambda *a, **k: None)
        self.engine = Engine(app=app, settings=self.settings, topics=self.names,  # type: ignore[arg-type]
                             metrics=EngineMetrics(), hooks=WorkerHooks())
        self.catalog = self.table("catalog")
        self.items = CatalogHandler(self.engine, self.catalog)
        self.headlines = self.table("room-headlines")
        s = self.settings
        pipeline = RoomPipeline(s.insights_min_interval_ms, s.insights_max_interval_ms,
                                s.viewer_timeout_s, s.room_idle_timeout_s, s.window_grace_s)
        self.rooms = RoomHandler(self.engine, pipeline, WriteBehindTable(self.table("room-state")),
                                 self.headlines)
        self.anomalies = AnomalyMonitor(system_id="harness")
        pipeline.observers.append(self.anomalies.note_live)
        self.engine.on_rate_limited.append(self.anomalies.note_rate_limited)
        self.promo = PromoTriggers(self.engine, CampaignBook.load(_campaigns(s)),
                                   WriteBehindTable(self.table("promo-state")),
                                   WriteBehindTable(self.table("promo-budget")))
        self.models = ModelHost(s, self.engine.metrics)
        self.profiles = ProfileStore(WriteBehindTable(self.table("user-profiles")))
        self.interests = WriteBehindTable(self.table("viewer-interest"))  # pin next
        self.audiences = Audiences(  # segments and audiences (pseudonyms: the id reversed)
            AudienceBook.load(s.audiences_file or PACKAGED_AUDIENCES),
            lambda: self.models.segments, lambda user: user[::-1])
        self.users = UserHandler(self.engine, self.profiles, self.catalog, self.headlines,
                                 self.models, self.promo, self.anomalies.note_user,
                                 self.interests, self.audiences)
        pipeline.pin_next = pin_next = PinNext(self.catalog, self.interests)
        pipeline.observers.append(pin_next.observe)
        self._next_offset: dict[tuple[str, int], int] = {}

    def table(self, name: str) -> DictTable:
        found = self.tables.get(name)
        if found is None:
            found = self.tables[name] = DictTable(name)
        return found

    @staticmethod
    def now_ms() -> int:
        return now_ms()

    def topic(self, name: str) -> str:
        short = {"live-events": self.names.live_events, "clicks": self.names.clicks,
                 "user-activity": self.names.user_activity, "catalog": self.names.catalog}
        return short.get(name, name)

    def handler(self, topic: str) -> RoomHandler | UserHandler | CatalogHandler:
        if topic == self.names.catalog:
            return self.items
        if topic in (self.names.live_events, self.names.room_audience):
            return self.rooms
        return self.users

    async def feed(self, topic: str, partition: int, values: Iterable[bytes | None],
                   keys: Iterable[bytes | None] | None = None, timestamp: int = 0) -> None:
        """Hand ``values`` to the topic's handler as one fetched batch of ``partition``
        (record ``timestamp``: when the broker took them, epoch ms; 0: unknown)."""
        topic = self.topic(topic)
        values = list(values)
        first = self._next_offset.get((topic, partition), 0)
        self._next_offset[(topic, partition)] = first + len(values)
        batch = records(topic, partition, values, first, keys)
        for record in batch:
            record.timestamp = timestamp
        await self.handler(topic).handle_batch(SimpleNamespace(topic=topic,
                                                               partition=partition), batch)
        await self.engine.outputs.drain()

    async def forward_activity(self) -> int:
        """Feed the ``user-activity`` records sent so far (not fed yet) to the user
        pipeline, as the next worker hop would; return how many records."""
        fed = getattr(self, "_activity_fed", 0)
        pending = [s for s in self.producer.sent if s.topic == self.names.user_activity]
        for sent in pending[fed:]:
            await self.feed(self.names.user_activity, sent.partition, [sent.value])
        self._activity_fed = len(pending)
        return len(pending) - fed

    async def forward_audience(self) -> int:
        """Feed the ``room-audience`` records sent so far (not fed yet) to the room
        pipeline (the audience portrait's hop back); return how many records."""
        fed = getattr(self, "_audience_fed", 0)
        pending = [s for s in self.producer.sent if s.topic == self.names.room_audience]
        for sent in pending[fed:]:
            await self.feed(self.names.room_audience, sent.partition, [sent.value])
        self._audience_fed = len(pending)
        return len(pending) - fed

    def commit(self) -> None:
        """What the before-commit hooks do: changed rooms and profiles to the changelog."""
        self.rooms.save()
        self.profiles.flush()
        self.promo.state.flush()
        self.promo.budget.flush()

    def sent(self, topic: str, decode: bool = True) -> list[Any]:
        """The values sent to ``topic`` (decoded from JSON unless ``decode`` is false;
        a ``user-activity`` record is a list of events: flattened)."""
        topic = self.topic(topic)
        out: list[Any] = []
        for record in self.producer.sent:
            if record.topic != topic:
                continue
            if not decode:
                out.append(record.value)
                continue
            value = orjson.loads(record.value)
            out.extend(value if topic == self.names.user_activity else [value])
        return out

    def iter_sent(self) -> Iterator[Sent]:
        return iter(self.producer.sent)


def _campaigns(settings: Settings) -> Any:
    from agents.promo.triggers import campaigns_path

    return campaigns_path(settings)
