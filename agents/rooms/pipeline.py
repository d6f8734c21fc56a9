"""Room pipeline: live events (keyed by room) -> room state -> ``room-insights``.

One pass per event: validate (or dead-letter), fold into the room's :class:`RoomState`,
forward the event re-keyed by user to ``user-activity`` for the user pipeline. A timer emits
insights for rooms that changed (at most every ``insights_min_interval_ms``) and for every
live room at least every ``insights_max_interval_ms``.

Room state lives in the ``room-state`` table, written behind (``agents.state``): each room
changed since the last offset commit is serialized once, just before the commit (a room
state is a few KiB; writing it on every event would dominate the cost of the pipeline). So
the changelog covers every committed offset, and each room also stores the input offset of
the last event it folded in: after a crash or a rebalance the events redelivered from the
committed offset that are at or below it are skipped (counted in
``livepulse_duplicate_events_total{pipeline="room"}``), the others are folded in: every
event counts once. A skipped event is still forwarded to ``user-activity`` (its first copy
may have been lost with the crash): the user pipeline skips its position (partition and
offset, see ``agents.users.activity``) if it had it already. A producer retry -- an event whose
``event_id`` is among the room's last 1,024 (:data:`agents.rooms.state.RECENT_EVENT_IDS`), at
a new offset -- is skipped and counted the same way but not forwarded: its first copy was
(the room state and the forwards are committed together).

Erasure (``livepulse forget``): every worker follows the whole erasure topic (no consumer
group) and removes the user from every room it holds: the rooms in memory, the rooms of its
partitions only in the table (both written back at once) and, after each rebalance (rooms
recovered from the changelog) or when a room is loaded later, whatever erasures came after
the room's state was saved (each room stores the erasure-topic positions it has applied).
The next insight and Redis room document no longer name the user.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.engine import Engine
from agents.promo.triggers import bootstrap_of
from agents.recent_ids import id_hash
from agents.rooms.pin_next import REFRESH_S as PIN_NEXT_REFRESH_S
from agents.rooms.state import RoomState, mentions
from agents.state import WriteBehindTable, in_partition
from agents.users.activity import forwarded
from streams.app import subscribe
from streams.contracts import LIVE_EVENT, LiveEvent, as_dict
from streams.ingest import now_ms
from streams.outputs import partition_for
from streams.security import kafka_client_options

log = logging.getLogger("livepulse.rooms")

HEADLINE_S = 1.0
REDELIVERED = "redelivered"  # an offset already folded in: forwarded again (see above)
RETRY = "retry"              # the same event id at a new offset: not forwarded again
CONTROL_FETCH_WAIT_MS = 100  # erasures are control traffic: no busy polling
ROOM_ITEMS_IN_HEADLINE = 30
LATENCY_SAMPLES_PER_EMIT = 64
TIMER_INTERVAL_S = 0.05


@dataclass
class LiveRoom:
    """A room this worker owns right now, with its emission bookkeeping."""

    state: RoomState
    partition: int
    dirty: bool = True
    live: bool = True
    last_emit_wall: float = 0.0
    last_event_wall: float = field(default_factory=time.monotonic)
    unsaved: bool = False  # changed since its state was last written to the table
    pending_ts: list[int] = field(default_factory=list)
    pending_seen: int = 0
    last_insight: dict[str, Any] | None = None  # what was emitted last (served by the API)
    last_headline_wall: float = 0.0
    pin_next: list[dict[str, Any]] = field(default_factory=list)  # agents.rooms.pin_next
    pin_next_wall: float = float("-inf")

    def note_event(self, ts: int, rng: random.Random) -> None:
        """Keep a uniform sample of the event times folded in since the last emission."""
        self.pending_seen += 1
        if len(self.pending_ts) < LATENCY_SAMPLES_PER_EMIT:
            self.pending_ts.append(ts)
        else:
            slot = rng.randrange(self.pending_seen)
            if slot < LATENCY_SAMPLES_PER_EMIT:
                self.pending_ts[slot] = ts


class RoomPipeline:
    """The rooms one worker owns, and when each is due to emit (no Faust here)."""

    def __init__(self, min_interval_ms: int, max_interval_ms: int, viewer_timeout_s: float,
                 idle_timeout_s: float, grace_s: float = 10.0) -> None:
        self.rooms: dict[str, LiveRoom] = {}
        self.grace_ms = int(grace_s * 1000)
        self.min_interval = min_interval_ms / 1000.0
        self.max_interval = max_interval_ms / 1000.0
        self.viewer_timeout_ms = int(viewer_timeout_s * 1000)
        self.idle_timeout = idle_timeout_s
        self.rng = random.Random(0)
        # hooks: called with every folded event; the alerts of a room for its insight
        self.observers: list[Callable[[LiveEvent], None]] = []
        self.alerts: Callable[[str], list[dict[str, Any]]] | None = None
        # pin next of a room state (agents.rooms.pin_next.PinNext, set by the worker)
        self.pin_next: Callable[[RoomState], list[dict[str, Any]]] | None = None
        # erasure: id_hash(user) -> (erasure partition, offset) of its latest request, and
        # the next offset read per erasure partition
        self.erased: dict[int, tuple[int, int]] = {}
        self.erasure_positions: dict[int, int] = {}

    def room(self, room_id: str, partition: int, load: Any = None) -> LiveRoom:
        """The room ``room_id``, loaded with ``load(room_id)`` (its saved state) if new here."""
        room = self.rooms.get(room_id)
        if room is None:
            saved = load(room_id) if load else None
            state = RoomState.from_dict(saved) if saved else RoomState(room_id, self.grace_ms)
            room = self.rooms[room_id] = LiveRoom(state, partition)
            if self.catch_up_erasures(state):
                room.unsaved = True
        return room

    def catch_up_erasures(self, state: RoomState) -> int:
        """Remove from ``state`` the users erased since it was saved; return how many."""
        pending = {user for user, (part, offset) in self.erased.items()
                   if offset >= state.erasures.get(part, 0)}
        removed = 0
        if pending:
            for user in state.people():
                if id_hash(user) in pending:
                    removed += state.forget_user(user)
        state.erasures = dict(self.erasure_positions)
        return removed

    def sweep_erasures(self, saved: Callable[[], list[tuple[str, dict[str, Any], int]]]
                       ) -> int:
        """Load the saved rooms (``saved()``: room id, state, partition) that erasures read
        since they were saved apply to, and clean them; return how many changed (kept
        loaded, to be saved and emitted again)."""
        if not self.erased:
            return 0
        changed = 0
        for room_id, data, partition in saved():
            if room_id in self.rooms:
                continue
            applied = {int(k): v for k, v in (data.get("erasures") or {}).items()}
            if not any(offset >= applied.get(part, 0) for part, offset in self.erased.values()):
                continue
            room = self.room(room_id, partition, lambda _r, s=data: s)  # cleaned on load
            if room.unsaved:
                room.live = False
                changed += 1
            else:
                del self.rooms[room_id]  # named nobody erased: left in the table
        return changed

    def forget_user(self, user: str, partition: int, offset: int,
                    saved: Callable[[], list[tuple[str, dict[str, Any], int]]] | None = None,
                    ) -> list[LiveRoom]:
        """Erasure request ``offset`` of erasure ``partition``: remove ``user`` from every
        room held here -- in memory, and the saved states ``saved()`` lists as (room id,
        state, partition) when they name the user (loaded for that) -- and return the rooms
        changed (to be saved and emitted again)."""
        key = id_hash(user)
        self.erased[key] = (partition, offset)
        self.erasure_positions[partition] = max(self.erasure_positions.get(partition, 0),
                                                offset + 1)
        changed = []
        for room_id, state, room_partition in (saved() if saved else []):
            if room_id not in self.rooms and mentions(state, user):
                loaded = self.room(room_id, room_partition, lambda _r, s=state: s)
                loaded.live = False  # loaded for the erasure only (cleaned on load)
                changed.append(loaded)
        for room in self.rooms.values():
            if room.state.forget_user(user):
                room.dirty = room.unsaved = True
                room.last_insight = None  # the API builds a fresh one until the next emit
                changed.append(room)
            room.state.erasures[partition] = self.erasure_positions[partition]
        return changed

    def repeat(self, event: LiveEvent, partition: int, offset: int | None,
               load: Any = None) -> str | None:
        """Whether ``event`` (read at input ``offset``) is already folded into its room:
        :data:`REDELIVERED` (its offset is, after a crash or rebalance), :data:`RETRY` (an
        event with its id is, at another offset: the producer sent it twice) or None."""
        room = self.room(event.room_id, partition, load)
        state = room.state
        if offset is not None and state.already_applied(offset, partition):
            # saved again at the next commit: the changelog then holds what memory holds,
            # whatever became of the first record
            room.unsaved = True
            return REDELIVERED
        if state.is_retry(event.event_id):
            return RETRY
        return None

    def apply(self, event: LiveEvent, partition: int,
              load: Any = None, offset: int | None = None) -> tuple[LiveRoom, bool]:
        """Fold ``event`` (read at input ``offset``) into its room; also say whether it was
        late beyond the grace."""
        room = self.room(event.room_id, partition, load)
        late = room.state.apply(event, offset, partition)
        for observe in self.observers:
            observe(event)
        room.dirty = True
        room.unsaved = True
        room.live = True
        room.last_event_wall = time.monotonic()
        room.note_event(event.ts, self.rng)
        return room, late

    def due(self, wall: float) -> list[LiveRoom]:
        out = []
        for room in self.rooms.values():
            since = wall - room.last_emit_wall
            changed_due = room.dirty and since >= self.min_interval
            if changed_due or (room.live and since >= self.max_interval):
                out.append(room)
        return out

    def emit(self, room: LiveRoom, wall: float,
             emitted_at_ms: int) -> tuple[bytes, list[float]]:
        """The insight payload for ``room`` and the latencies (ms) of the events it reflects."""
        room.state.expire_viewers(self.viewer_timeout_ms)
        if wall - room.last_event_wall > self.idle_timeout:
            room.live = False
        alerts = self.alerts(room.state.room_id) if self.alerts is not None else None
        insight = as_dict(room.state.insight(emitted_at_ms, live=room.live, alerts=alerts))
        if self.pin_next is not None and wall - room.pin_next_wall >= PIN_NEXT_REFRESH_S:
            room.pin_next_wall = wall
            try:
                room.pin_next = self.pin_next(room.state)
            except Exception:  # a bad table entry: the insight goes out with the last list
                log.exception("pin next of room %s failed", room.state.room_id)
        insight["pin_next"] = room.pin_next
        latencies = [max(0.0, float(emitted_at_ms - ts)) for ts in room.pending_ts]
        room.pending_ts.clear()
        room.pending_seen = 0
        room.dirty = False
        room.last_emit_wall = wall
        room.last_insight = insight
        return orjson.dumps(insight), latencies

    def save(self, store: Callable[[str, dict[str, Any], int], None],
             partitions: set[int] | None = None) -> int:
        """``store(room_id, state, partition)`` for each room changed since its last save
        (only in ``partitions`` if given); return how many."""
        saved = 0
        for room_id, room in self.rooms.items():
            if room.unsaved and (partitions is None or room.partition in partitions):
                store(room_id, {**room.state.to_dict(), "partition": room.partition},
                      room.partition)
                room.unsaved = False
                saved += 1
        return saved

    def drop_partitions(self, partitions: set[int]) -> None:
        for room_id in [r for r, room in self.rooms.items() if room.partition in partitions]:
            del self.rooms[room_id]

    def insight_of(self, room_id: str) -> dict[str, Any] | None:
        """The last emitted insight of a room this worker owns (built now if none yet)."""
        room = self.rooms.get(room_id)
        if room is None:
            return None
        return room.last_insight or as_dict(room.state.insight(now_ms(), live=room.live))

    def history_of(self, room_id: str) -> dict[str, Any] | None:
        """:meth:`RoomState.history` of a room this worker owns, else None."""
        room = self.rooms.get(room_id)
        return None if room is None else room.state.history()

    def rooms_naming(self, user: str) -> int:
        """How many rooms held here name ``user`` (the erasure footprint)."""
        return sum(room.state.names(user) for room in self.rooms.values())

    def latest(self) -> dict[str, dict[str, Any]]:
        """:meth:`insight_of` for every room this worker owns."""
        return {rid: self.insight_of(rid) or {} for rid in self.rooms}


def headline(room: LiveRoom) -> dict[str, Any]:
    """The room context other pipelines read: the insight's headline numbers, the parts the
    propensity and leave-risk features use, and the room's items (for the room boost)."""
    insight = room.last_insight or {}
    items = [row["key"] for row in room.state.items.top(ROOM_ITEMS_IN_HEADLINE)]
    pinned = room.state.pinned
    if pinned is not None and pinned["item_id"] not in items:
        items.insert(0, pinned["item_id"])
    commerce = insight.get("commerce", {})
    audience = insight.get("audience", {})
    minute = (insight.get("windows") or {}).get("tumbling_1m") or {}
    return {
        **{key: insight.get(key, 0) for key in (
            "room_id", "ts", "viewers", "peak_viewers", "comments_per_min", "likes_per_min",
            "orders_per_min", "gmv_per_min")},
        "commerce": {"funnel": commerce.get("funnel", {}),
                     "pinned": {"item_id": pinned["item_id"], "pinned_at": pinned["pinned_at"]}
                     if pinned else None},
        "audience": {"avg_watch_s": audience.get("avg_watch_s", 0.0),
                     "retention": audience.get("retention", {})},
        "windows": {"tumbling_1m": {"joins": minute.get("joins", 0),
                                    "leaves": minute.get("leaves", 0)}},
        "mood": {"sentiment": insight.get("mood", {}).get("sentiment", 0.0)},
        "items": items,
    }


def erased_user(key: bytes | None, value: bytes | None) -> str | None:
    """The user id of an erasure request (None: a tombstone, or not a request keyed by its
    user: :mod:`agents.users.erasure` refuses those).

    >>> erased_user(b"u1", b'{"user_id": "u1"}'), erased_user(b"u2", b'{"user_id": "u1"}')
    ('u1', None)
    >>> erased_user(b"u1", None), erased_user(b"u1", b"[1]"), erased_user(None, b"{")
    (None, None, None)
    """
    if value is None:
        return None
    try:
        user = orjson.loads(value).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    if not isinstance(user, str) or not user or (key is not None and key != user.encode()):
        return None
    return user


async def follow_topic(engine: Engine, topic: str,
                       apply: Callable[[int, int, bytes | None, bytes | None], None]) -> None:
    """Read every partition of ``topic`` from its start, then follow it for ever (no
    consumer group: every worker reads all of it), retrying on errors from where it was
    (:class:`streams.control.ControlTopicReader`)."""
    from streams.control import ControlTopicReader

    reader = ControlTopicReader(
        bootstrap_of(engine.app), topic, client_options=kafka_client_options(engine.settings),
        fetch_wait_ms=CONTROL_FETCH_WAIT_MS, default_partitions=engine.settings.partitions,
        poll_ms=500, max_records=500)
    await reader.follow(lambda rec: apply(rec.partition, rec.offset, rec.key, rec.value))


class RoomHandler:
    """The room pipeline: ``live-events`` record batches -> room state, forwards, headlines.

    Per batch (one input partition's records, in offset order): decode and validate each
    record (bad ones dead-lettered), skip redeliveries and producer retries, fold the rest
    into their rooms, and forward every viewer event re-keyed by user to ``user-activity``
    as one record per user partition and batch (a JSON array, see :mod:`agents.users.activity`).
    Counters are incremented once per batch. Room state is written at commit
    (:meth:`save`): each changed room once, with the input offsets it covers.
    """

    name = "room-pipeline"

    def __init__(self, engine: Engine, pipeline: RoomPipeline, state: WriteBehindTable,
                 headlines: Any) -> None:
        self.engine = engine
        self.pipeline = pipeline
        self.state = state
        self.headlines = headlines
        self.validator = engine.validator(LIVE_EVENT)
        self.activity_topic = engine.topics.user_activity
        self.audience_topic = engine.topics.room_audience
        self.user_partitions = engine.settings.partitions
        metrics = engine.metrics
        self.duplicates = metrics.duplicates.labels("room")
        self.processing = metrics.processing.labels(self.name)

    async def handle_batch(self, tp: Any, records: list[Any]) -> None:
        if tp.topic == self.audience_topic:
            await self.audience_batch(tp, records)
            return
        started = time.perf_counter()
        engine, topic, partition = self.engine, tp.topic, tp.partition
        counts: dict[str, int] = {}
        forwards: dict[int, list[bytes]] = {}
        late = 0
        with in_partition(partition, topic):
            received_at = now_ms()
            for rec in records:
                try:
                    late += self._handle(rec, topic, partition, received_at, counts, forwards)
                except Exception as exc:
                    engine.failed(self.name, topic, partition, rec.offset, rec.key, rec.value,
                                  exc)
            # inside the input partition's context: under exactly-once the forwards join
            # the transaction that commits these events' offsets (see Engine.transaction_of)
            for user_partition, bodies in forwards.items():
                engine.add_output(self.activity_topic, None, b"[" + b",".join(bodies) + b"]",
                                  partition=user_partition)
        engine.metrics.count_in(topic, counts)
        if late:
            engine.metrics.late_events.inc(late)
        await engine.flush()
        self.processing.observe((time.perf_counter() - started) / len(records))

    def _handle(self, rec: Any, topic: str, partition: int, received_at: int,
                counts: dict[str, int], forwards: dict[int, list[bytes]]) -> int:
        """One record of a batch; return 1 if it was late beyond the window grace."""
        record = self.engine.decode_record(self.validator, topic, partition, rec, received_at,
                                           quarantine=True)
        if record is None:
            return 0
        kind = record.type
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "purchase":
            self.engine.metrics.count_purchase(topic, record)
        pipeline, offset = self.pipeline, rec.offset
        repeat = pipeline.repeat(record, partition, offset, self.state.get)
        if repeat is not None:
            self.duplicates.inc()
            if repeat == REDELIVERED and kind != "product_pin":
                # its activity may not have gone out before the crash: again
                self._forward(record, partition, offset, forwards)
            return 0
        room, late = pipeline.apply(record, partition, self.state.get, offset)
        if kind != "product_pin":  # the host's act: no viewer profile to update
            self._forward(record, partition, offset, forwards)
        wall = time.monotonic()
        if room.last_insight is not None and wall - room.last_headline_wall >= HEADLINE_S:
            self.headlines[record.room_id] = headline(room)
            room.last_headline_wall = wall
        return int(late)

    def _forward(self, record: LiveEvent, partition: int, offset: int,
                 forwards: dict[int, list[bytes]]) -> None:
        user_partition = partition_for(record.user_id.encode(), self.user_partitions)
        body = forwarded(as_dict(record), partition, offset)
        bodies = forwards.get(user_partition)
        if bodies is None:
            forwards[user_partition] = [body]
        else:
            bodies.append(body)

    # ------------------------------------------------------------ audience portrait
    async def audience_batch(self, tp: Any, records: list[Any]) -> None:
        """``room-audience`` records (JSON arrays from the user pipeline, see
        :mod:`agents.rooms.portrait`): viewer summaries and next rooms into the rooms held
        here. A bad record is dead-lettered; a room with no state here is left alone."""
        for rec in records:
            try:
                items = orjson.loads(rec.value)
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise TypeError("a room-audience record is a JSON array of objects")
                for item in items:
                    self._audience(item, tp.partition)
            except Exception as exc:
                self.engine.failed(self.name, tp.topic, tp.partition, rec.offset, rec.key,
                                   rec.value, exc)
        await self.engine.flush()

    def _audience(self, item: dict[str, Any], partition: int) -> None:
        room_id, kind = item.get("room_id"), item.get("k")
        if not isinstance(room_id, str) or kind not in ("viewer", "next"):
            raise ValueError(f"not a room-audience item: {str(item)[:120]}")
        pipeline = self.pipeline
        room = pipeline.rooms.get(room_id)
        if room is None:
            if self.state.get(room_id) is None:
                return  # no event of this room folded in here: nothing to describe
            room = pipeline.room(room_id, partition, self.state.get)
        state = room.state
        if kind == "viewer":
            user, summary = item.get("user_id"), item.get("s")
            if not isinstance(user, str) or not isinstance(summary, dict):
                raise ValueError("a viewer summary needs user_id and s")
            changed = state.viewer_summary(user, summary)
        else:
            nxt = item.get("next")
            if not isinstance(nxt, str) or nxt == room_id:
                raise ValueError("a next-room item needs another room in next")
            state.portrait.moved(nxt)
            changed = True
        if changed:
            room.dirty = room.unsaved = True

    def save(self) -> None:
        """Before each commit (no await: see ``streams.app``): the changed rooms' state."""
        self.pipeline.save(self.state.set)
        self.state.flush()

    async def on_revoke(self, partitions: set[int]) -> None:
        """Revoked live-events partitions: their rooms saved (the next owner recovers the
        latest state) and dropped; the producer flushed before this worker rejoins (never
        an older record landing after the next owner's)."""
        self.pipeline.save(self.state.set, partitions)
        self.state.flush()
        self.pipeline.drop_partitions(partitions)
        await self.engine.outputs.drain()
        await self.engine.app.producer.flush()


def register(engine: Engine) -> tuple[RoomHandler, Any]:
    """The room pipeline of ``engine``: its handler and the ``room-headlines`` global table
    (a few numbers per room other pipelines use as context)."""
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    # written behind: only changed rooms, once per commit, with the offset they cover
    state = WriteBehindTable(app.Table("room-state", default=None,
                                       partitions=settings.partitions), outputs=engine.outputs)
    # replicated to every worker, written by this pipeline alone
    headlines = app.GlobalTable("room-headlines", default=None, partitions=settings.partitions)
    pipeline = RoomPipeline(settings.insights_min_interval_ms, settings.insights_max_interval_ms,
                            settings.viewer_timeout_s, settings.room_idle_timeout_s,
                            settings.window_grace_s)
    handler = RoomHandler(engine, pipeline, state, headlines)
    live_topic = engine.topic(names.live_events)
    engine.topic(names.user_activity)  # declared: the user pipeline consumes it
    engine.hooks.batch_handlers[names.live_events] = handler
    engine.hooks.before_commit.append(handler.save)
    subscribe(app, live_topic, handler.name)
    # the portrait's viewer summaries: same partition count as live-events, so partition p
    # of both is assigned to the same worker (Faust's co-partitioned assignment)
    engine.hooks.batch_handlers[names.room_audience] = handler
    subscribe(app, engine.topic(names.room_audience), "room-audience")

    def saved_rooms() -> list[tuple[str, dict[str, Any], int]]:
        """The saved states of this worker's room partitions (with their partition)."""
        owned = {tp.partition for tp in app.assignor.assigned_actives()
                 if tp.topic == names.live_events}
        return [(room_id, saved, saved["partition"]) for room_id, saved in state.table.items()
                if isinstance(saved, dict) and saved.get("partition") in owned]

    def on_erasure(partition: int, offset: int, key: bytes | None,
                   value: bytes | None) -> None:
        """One erasure-topic record: forget its user in every room held here."""
        user = erased_user(key, value)
        if user is None:  # a tombstone, or a bad request (the user pipeline dead-letters it)
            pipeline.erasure_positions[partition] = offset + 1
            return
        engine.hot_keys.forget(user)  # every worker follows every erasure: here too
        try:
            changed = pipeline.forget_user(user, partition, offset, saved_rooms)
            if pipeline.save(state.set):
                state.flush()
        except Exception:  # logged and counted: retrying the record for ever would not help
            log.exception("erasure at %s[%d]@%d not applied to rooms", names.erasure,
                          partition, offset)
            metrics.agent_errors.labels("room-erasure").inc()
            return
        if changed:
            log.info("erasure: user removed from %d room(s)", len(changed))

    @app.on_rebalance_complete.connect
    async def clean_recovered_rooms(sender: Any, **_: Any) -> None:
        """Rooms recovered from the changelog: apply the erasures read meanwhile."""
        try:
            if pipeline.sweep_erasures(saved_rooms) and pipeline.save(state.set):
                state.flush()
        except Exception:  # never in the way of a rebalance; loaded rooms are cleaned anyway
            log.exception("erasures not applied to the recovered rooms")
            metrics.agent_errors.labels("room-erasure").inc()

    @app.task
    async def follow_erasures() -> None:
        await follow_topic(engine, names.erasure, on_erasure)

    @app.timer(TIMER_INTERVAL_S, name="room-insights-emitter")
    async def emit_insights() -> None:
        wall = time.monotonic()
        for room in pipeline.due(wall):
            emitted_at = now_ms()
            payload, latencies = pipeline.emit(room, wall, emitted_at)
            engine.add_output(names.room_insights, room.state.room_id, payload)
            if engine.redis is not None and room.last_insight is not None:
                engine.redis.add("room", room.state.room_id, room.last_insight)
            for latency in latencies:
                metrics.observe_latency(names.room_insights, latency)
        await engine.flush()

    @app.on_partitions_revoked.connect
    async def forget_revoked_rooms(sender: Any, revoked: set[Any], **_: Any) -> None:
        await handler.on_revoke({tp.partition for tp in revoked
                                 if tp.topic == names.live_events})

    return handler, headlines
