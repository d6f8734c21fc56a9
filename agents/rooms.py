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
offset, see ``agents.activity``) if it had it already.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.activity import ActivityBatcher, forwarded
from agents.engine import Engine
from agents.room_state import RoomState
from agents.state import WriteBehindTable, before_commit
from streams.contracts import LIVE_EVENT, LiveEvent, as_dict
from streams.ingest import now_ms

HEADLINE_S = 1.0
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

    def room(self, room_id: str, partition: int, load: Any = None) -> LiveRoom:
        """The room ``room_id``, loaded with ``load(room_id)`` (its saved state) if new here."""
        room = self.rooms.get(room_id)
        if room is None:
            saved = load(room_id) if load else None
            state = RoomState.from_dict(saved) if saved else RoomState(room_id, self.grace_ms)
            room = self.rooms[room_id] = LiveRoom(state, partition)
        return room

    def apply(self, event: LiveEvent, partition: int,
              load: Any = None, offset: int | None = None) -> tuple[LiveRoom, bool]:
        """Fold ``event`` (read at input ``offset``) into its room; also say whether it was
        late beyond the grace."""
        room = self.room(event.room_id, partition, load)
        late = room.state.apply(event, offset)
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
                store(room_id, room.state.to_dict(), room.partition)
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


def register(engine: Engine) -> None:
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    validator = engine.validator(LIVE_EVENT)
    # written behind: only changed rooms, once per commit, with the offset they cover
    state = WriteBehindTable(app.Table("room-state", default=None,
                                       partitions=settings.partitions))
    # A few numbers per room that other pipelines use as context (the recommender's room
    # boost, leave risk): replicated to every worker, written by this agent alone.
    headlines = app.GlobalTable("room-headlines", default=None, partitions=settings.partitions)
    app.livepulse_room_headlines = headlines
    pipeline = RoomPipeline(settings.insights_min_interval_ms, settings.insights_max_interval_ms,
                            settings.viewer_timeout_s, settings.room_idle_timeout_s,
                            settings.window_grace_s)
    app.livepulse_rooms = pipeline
    live_topic = engine.topic(names.live_events)
    engine.topic(names.user_activity)  # declared: the user pipeline consumes it
    activity = ActivityBatcher(engine)  # live events re-keyed by user, in batches
    before_commit(app).append(activity.flush)

    def save_rooms() -> None:
        """Before each commit (no await: see ``streams.app``): the changed rooms' state."""
        pipeline.save(state.set)
        state.flush()

    before_commit(app).append(save_rooms)
    duplicates = metrics.duplicates.labels("room")

    async def handle(event: Any) -> None:
        message = event.message
        record = await engine.admit(validator, message)
        if record is None:
            return
        room = pipeline.room(record.room_id, message.partition, state.get)
        if room.state.already_applied(message.offset):  # redelivered after a crash/rebalance
            duplicates.inc()
            if record.type != "product_pin":  # its activity may not have gone out: again
                await activity.add(record.user_id, forwarded(
                    as_dict(record), message.partition, message.offset))
            return
        room, late = pipeline.apply(record, message.partition, state.get, message.offset)
        if late:
            metrics.late_events.inc()
        if record.type != "product_pin":  # the host's act: no viewer profile to update
            await activity.add(record.user_id, forwarded(
                as_dict(record), message.partition, message.offset))
        wall = time.monotonic()
        if room.last_insight is not None and wall - room.last_headline_wall >= HEADLINE_S:
            headlines[record.room_id] = headline(room)
            room.last_headline_wall = wall

    @app.task
    async def send_user_activity() -> None:
        await activity.run()  # flushes once more when Faust cancels it at shutdown

    @app.agent(live_topic, name="room-pipeline")
    async def room_pipeline(stream: Any) -> None:
        async for event in stream.events():
            await engine.guarded("room-pipeline", event, handle)

    @app.timer(TIMER_INTERVAL_S, name="room-insights-emitter")
    async def emit_insights() -> None:
        wall = time.monotonic()
        for room in pipeline.due(wall):
            emitted_at = now_ms()
            payload, latencies = pipeline.emit(room, wall, emitted_at)
            await engine.send(names.room_insights, room.state.room_id, payload)
            if engine.redis is not None and room.last_insight is not None:
                engine.redis.add("room", room.state.room_id, room.last_insight)
            for latency in latencies:
                metrics.observe_latency(names.room_insights, latency)

    @app.on_partitions_revoked.connect
    async def forget_revoked_rooms(sender: Any, revoked: set[Any], **_: Any) -> None:
        await activity.flush()
        partitions = {tp.partition for tp in revoked if tp.topic == names.live_events}
        pipeline.save(state.set, partitions)  # the next owner recovers the latest state
        state.flush()
        pipeline.drop_partitions(partitions)
        # delivered before this worker rejoins: the next owner recovers these states and
        # its forwards come after these (never an older record landing after its own)
        await app.producer.flush()
