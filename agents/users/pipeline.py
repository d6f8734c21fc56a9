"""User pipeline: clicks (keyed by user) and re-keyed live activity -> online user profiles.

The ``user-profiles`` table (keyed by user id) is owned by this agent alone: one update per
event, folded by :meth:`agents.users.profile.UserProfile.apply` with catalog facts (category,
brand, price) from the ``catalog`` global table. Then the online models (:class:`ModelHost`)
score, learn and rank: every item event yields a top-K on ``recommendations``, and propensity
and leave-risk scores join the profile's public view, which is queued for Redis
(``lp:user:{id}``; the sink writes each key at most once per flush interval). Segments and
audiences (:mod:`agents.users.audiences`) are decided before the promo decider runs, so
campaign conditions can read ``profile.segment`` and ``profile.audiences``; membership
changes go to ``audience-changes`` and to the Redis sets ``lp:audience:{id}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from agents.engine import RAW, Engine
from agents.models import ModelHost
from agents.privacy import pseudonym_key, pseudonymize
from agents.promo.triggers import bootstrap_of
from agents.rooms.pin_next import INTEREST_MIN_GAP_MS, interest_summary, needs_refresh
from agents.rooms.portrait import NEXT_ROOM_MS, viewer_summary
from agents.state import StateMetrics, WriteBehindTable, in_partition
from agents.users.activity import source_of, unbatch
from agents.users.audiences import PACKAGED_AUDIENCES, AudienceBook, AudienceError, Audiences
from agents.users.erasure import Eraser, ErasureFence
from agents.users.profile import WATCH_TIMEOUT_MS, UserProfile
from agents.users.store import ProfileStore
from online_models.snapshot import SnapshotError
from streams.app import subscribe
from streams.contracts import CLICK_EVENT, LIVE_EVENT, as_dict, to_record
from streams.control import ControlTopicReader
from streams.ingest import Rejection, now_ms
from streams.outputs import partition_for
from streams.security import kafka_client_options

if TYPE_CHECKING:
    from agents.anomalies.monitor import AnomalyMonitor
    from agents.promo.triggers import PromoTriggers

log = logging.getLogger("livepulse.users")
EXPORT_INTERVAL_S = 5.0


def viewer_context(profile: UserProfile, room_id: str) -> dict[str, Any]:
    """The user's presence in ``room_id`` before the current event (leave-risk features)."""
    watching = profile.watch_room == room_id
    return {"joined_at": profile.watch_start if watching else None,
            "last_active_at": profile.watch_last if watching else None,
            "events": profile.session_events if watching else 0,
            "returning": room_id in profile.rooms and not watching}


def came_from_room(profile: UserProfile, record: Any) -> str | None:
    """The room a viewer arriving in ``record.room_id`` left within
    :data:`agents.rooms.portrait.NEXT_ROOM_MS` (from the profile before the event), else
    None. A switch without a leave ends the old watch at the new event (or at its timeout);
    after a leave the watch is closed, and the user's last event (usually the leave, or
    storefront activity after it) stands for the leave time. A move is seen when the user
    pipeline gets the leave before the join: the two come from different rooms' partitions,
    so a join handled first (seconds apart) loses the move (never counts a wrong one).

    >>> p = UserProfile("u1")
    >>> from streams.contracts import LiveEvent
    >>> p.apply(LiveEvent("e1", "join", 0, "r1", "u1"))
    >>> p.apply(LiveEvent("e2", "leave", 10_000, "r1", "u1"))
    >>> came_from_room(p, LiveEvent("e3", "join", 70_000, "r2", "u1"))
    'r1'
    >>> came_from_room(p, LiveEvent("e3", "join", 400_000, "r2", "u1")) is None
    True
    """
    room_id, ts = record.room_id, record.ts
    if record.type == "leave" or profile.watch_room == room_id:
        return None
    if profile.watch_room is not None and ts < profile.watch_start:
        return None  # late: from before the watch going on (the profile ignores it too)
    if profile.watch_room is not None:
        previous = profile.watch_room
        left_at = min(ts, profile.watch_last + WATCH_TIMEOUT_MS)
    elif profile.rooms:
        previous, left_at = profile.rooms[-1], profile.updated_at
    else:
        return None
    if previous == room_id or not 0 <= ts - left_at <= NEXT_ROOM_MS:
        return None
    return previous


class UserHandler:
    """The user pipeline: ``clicks`` and ``user-activity`` record batches -> profiles,
    models, recommendations and promo triggers.

    Per batch (one input partition's records, in offset order): clicks are decoded and
    validated (bad ones dead-lettered), a ``user-activity`` record is a batch of live events
    validated once at ingest by the room pipeline. Each event is folded into its user's live
    profile (redeliveries skipped by their input position), then the models score, learn
    and rank, and the promo decider runs; every output joins the batch's per-partition
    output batches, sent once at its end. Profiles changed are written to the changelog at
    commit, once per user. A bug on one event dead-letters that event only.
    """

    name = "user-pipeline"

    def __init__(self, engine: Engine, profiles: ProfileStore, catalog: Any, headlines: Any,
                 models: ModelHost, promo: PromoTriggers,
                 watch_user: Callable[..., Any] | None = None, interests: Any = None,
                 audiences: Audiences | None = None) -> None:
        self.engine = engine
        self.audiences = audiences  # segments and audiences (None: off)
        # viewer-interest global table (agents.rooms.pin_next): written by this pipeline only
        self.interests = interests
        self.profiles = profiles
        self.catalog = catalog
        self.headlines = headlines
        self.models = models
        self.promo = promo
        self.watch_user = watch_user
        self.names = engine.topics
        self.validator = engine.validator(CLICK_EVENT)
        metrics = engine.metrics
        self.duplicates = metrics.duplicates.labels("user")
        self.processing = metrics.processing.labels(self.name)
        # room-audience outputs of the batch being handled: room partition -> items
        self.audience: dict[int, list[bytes]] = {}
        # Outputs of a redelivered event are sent again at-least-once (the crash may have
        # lost them). Not under exactly-once: a redelivery there follows a rebalance that
        # kept the partition, whose open transaction (holding the first outputs) Faust
        # keeps and commits; after a crash the restored state is that of the offsets.
        self.resend = engine.settings.processing_guarantee != "exactly_once"
        # events of erased users that predate the erasure (set by the eraser)
        self.fence: ErasureFence | None = None

    async def handle_batch(self, tp: Any, records: list[Any]) -> None:
        started = time.perf_counter()
        engine, topic, partition = self.engine, tp.topic, tp.partition
        counts: dict[str, int] = {}
        live = topic == self.names.user_activity
        handled = 0
        fence = self.fence if self.fence else None  # empty: no per-event check
        with in_partition(partition, topic):
            received_at = now_ms()
            for rec in records:
                if live:
                    handled += self._live_batch(rec, topic, partition, counts)
                    continue
                handled += 1
                try:
                    record = engine.decode_record(self.validator, topic, partition, rec,
                                                  received_at, quarantine=True)
                    if record is None:
                        continue
                    counts[record.type] = counts.get(record.type, 0) + 1
                    if record.type == "purchase":
                        engine.metrics.count_purchase(topic, record)
                    if fence is not None and fence.covers(record.user_id, record.ts,
                                                          rec.timestamp):
                        continue
                    self._event(record, False, partition, f"c{partition}", rec.offset,
                                rec.offset)
                except Exception as exc:
                    engine.failed(self.name, topic, partition, rec.offset, rec.key, rec.value,
                                  exc)
            # in the input partition's context: the transaction of these events' offsets
            for room_partition, items in self.audience.items():
                engine.add_output(self.names.room_audience, None,
                                  b"[" + b",".join(items) + b"]", partition=room_partition)
        self.audience = {}
        engine.metrics.count_in(topic, counts)
        await engine.flush()
        if handled:
            self.processing.observe((time.perf_counter() - started) / handled)

    def _live_batch(self, rec: Any, topic: str, partition: int,
                    counts: dict[str, int]) -> int:
        """The live events of one ``user-activity`` record; return how many."""
        engine = self.engine
        try:
            parts = unbatch(rec)
        except (ValueError, TypeError) as exc:
            engine.reject_record(topic, partition, rec.offset, rec.key, rec.value,
                                 Rejection("internal", str(exc)[:300]), now_ms())
            return 1
        fence = self.fence if self.fence else None
        for part in parts:
            try:
                # Validated once at ingest by the room pipeline: trusted, typed again cheaply.
                record = to_record(LIVE_EVENT, part.body)
                counts[record.type] = counts.get(record.type, 0) + 1
                if fence is not None and fence.covers(record.user_id, record.ts,
                                                      rec.timestamp):
                    continue
                source = source_of(part.body) or (None, None)
                self._event(record, True, partition, *source, rec.offset)
            except Exception as exc:
                engine.failed(self.name, topic, partition, rec.offset, part.key, part.value,
                              exc)
        return len(parts)

    def _event(self, record: Any, live: bool, partition: int, source: str | None,
               offset: int | None, input_offset: int) -> None:
        """One user event: profile, models, outputs, promo decision. ``source`` and
        ``offset``: where the event entered the engine (redelivery check)."""
        user = record.user_id
        profile = self.profiles.get(user)
        known = profile is not None
        if profile is None:
            profile = UserProfile(user)
        room_id = getattr(record, "room_id", None)
        if known and profile.is_duplicate(record.event_id, source, offset):
            # Redelivered (after a crash or rebalance): already in the profile and the
            # models, not folded in again. At-least-once its outputs go out again (the crash
            # may have lost them): the recommendation, ranked again under the same
            # request_id, and the trigger the promo decider stored for it (keyed by
            # campaign, user and event id: the same one, not a second).
            self.duplicates.inc()
            # written again at the next commit: the changelog then holds what memory holds,
            # whatever became of the first record
            self.profiles.set(user, profile, partition)
            if not self.resend:
                return
            view = profile.view(profile.updated_at)
            scores = self.models.scores.get(user)
            if scores:
                view["scores"] = scores
            room = self.headlines.get(room_id) if room_id else None
            self._emit(self.models.recommend_again(record, view, room), record)
            self.promo.on_event(live, partition, record, view, room, None)
            return
        if self.watch_user is not None:  # agents.anomalies.agent: click floods, bots
            self.watch_user(record, live=live)
        previous_ts = profile.updated_at if profile.events else None
        viewer = viewer_context(profile, room_id) if room_id else None
        came_from = came_from_room(profile, record) if live and room_id else None
        catalog_get = self.catalog.get
        profile.apply(record, catalog_get)
        if source is not None:
            profile.advance(source, offset)
        self.profiles.set(user, profile, partition)
        # the profile's own clock: a late event must not produce a view from the past
        view = profile.view(profile.updated_at)
        room = self.headlines.get(room_id) if room_id else None
        if viewer is not None and room:  # the item the viewer is shown: leave-risk pin fit
            pinned = (room.get("commerce") or {}).get("pinned") or {}
            viewer["pinned"] = catalog_get(pinned["item_id"]) if pinned.get("item_id") else None
        item = catalog_get(record.item_id) if record.item_id else None
        topic = self.names.user_activity if live else self.names.clicks
        recommendation = self.models.on_event(
            record, view, room, topic, (topic, partition, input_offset), item=item,
            viewer=viewer)
        scores = self.models.scores.get(user)
        if live and room_id:
            self._portrait(record, source, view, scores, viewer, came_from)
        if scores:
            view["scores"] = scores
        if self.audiences is not None:
            changes = self.audiences.on_event(profile, view, scores, record.event_id)
            if changes:
                self.emit_changes(changes)
        if live and self.interests is not None and profile.consent:
            published = self.interests.get(user)
            # built at most every INTEREST_MIN_GAP_MS of the viewer's events once it names
            # a category (a viewer's first interest is published at once)
            if (published is None or not published.get("c")
                    or record.ts - published.get("t", 0) >= INTEREST_MIN_GAP_MS):
                summary = interest_summary(view, scores, record.ts)
                if needs_refresh(published, summary):
                    self.interests.set(user, summary, partition)
        engine = self.engine
        if engine.redis is not None:
            engine.redis.add("user", user, view)
        self._emit(recommendation, record)
        self.promo.on_event(live, partition, record, view, room, previous_ts)

    def _emit(self, recommendation: Any, record: Any) -> None:
        if recommendation is not None:
            engine = self.engine
            engine.add_output(self.names.recommendations, record.user_id,
                              orjson.dumps(as_dict(recommendation)))
            engine.metrics.observe_latency(self.names.recommendations,
                                           max(0, now_ms() - record.ts))


    def emit_changes(self, changes: list[dict[str, Any]]) -> None:
        """Audience membership changes: to ``audience-changes`` (with the batch's outputs)
        and to the members' Redis sets."""
        engine, topic = self.engine, self.names.audience_changes
        redis = engine.redis
        for change in changes:
            engine.add_output(topic, change["user_id"], orjson.dumps(change))
            if redis is not None:
                redis.set_member("audience", change["audience_id"], change["user_id"],
                                 change["type"] == "enter")

    def _portrait(self, record: Any, source: str | None, view: dict[str, Any],
                  scores: dict[str, float] | None, viewer: dict[str, Any] | None,
                  came_from: str | None) -> None:
        """The room's audience portrait (:mod:`agents.rooms.portrait`): the viewer's summary
        to their room when they arrive or do something that moves their intent, and the
        room they came from (within 5 min) to that room."""
        room_id, kind = record.room_id, record.type
        partitions = self.engine.settings.partitions
        arrived = viewer is not None and viewer["joined_at"] is None
        if kind != "leave" and (arrived or kind in ("product_click", "add_to_cart",
                                                    "purchase")):
            # the room's own input partition (where its state is), else its key's
            part = int(source[1:]) if source and source[0] == "l" else partition_for(
                room_id.encode(), partitions)
            item = {"k": "viewer", "room_id": room_id, "user_id": record.user_id,
                    "ts": record.ts, "s": viewer_summary(view, scores)}
            self.audience.setdefault(part, []).append(orjson.dumps(item))
        if came_from is not None:
            item = {"k": "next", "room_id": came_from, "next": room_id, "ts": record.ts}
            self.audience.setdefault(partition_for(came_from.encode(), partitions),
                                     []).append(orjson.dumps(item))

    async def on_revoke(self) -> None:
        """The next owner recovers from the changelog: it must be complete, and hold
        nothing older after what it writes."""
        self.profiles.flush()
        await self.engine.outputs.drain()
        await self.engine.app.producer.flush()


def register(engine: Engine, catalog: Any, headlines: Any, promo: PromoTriggers,
             anomalies: AnomalyMonitor | None) -> tuple[UserHandler, ModelHost, Eraser]:
    """The user pipeline of ``engine``: its handler, the models it drives and the eraser
    of per-user state (``livepulse forget``)."""
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    table = app.Table("user-profiles", default=None, partitions=settings.partitions)
    # orjson: the table holds live UserProfile objects, serialized by their to_dict()
    # (set before the changelog topic, built on first use, takes the serializer)
    table.value_serializer = "orjson"
    # one changelog record per user per commit, not per event (see agents.state)
    profiles = ProfileStore(WriteBehindTable(table, StateMetrics(metrics.registry),
                                             outputs=engine.outputs))
    engine.hooks.before_commit.append(profiles.flush)
    models = ModelHost(settings, metrics)
    restored = models.restore()
    if restored:
        log.info("online models restored from snapshots: %s", sorted(restored))
    eraser = Eraser(engine, profiles, models, promo, anomalies)  # livepulse forget
    # erasures since the snapshots were taken: applied before the first event is handled
    eraser.load(bootstrap_of(app))
    # per-viewer interest summaries the room pipeline ranks pin next with
    # written behind like the profiles: one changelog record per viewer and commit, through
    # the output batches (Faust's per-write send cost ~50 % more CPU per event, bench --quick)
    interests = WriteBehindTable(app.GlobalTable("viewer-interest", default=None,
                                                 partitions=settings.partitions),
                                 outputs=engine.outputs)
    engine.hooks.before_commit.append(interests.flush)
    eraser.interests = interests
    key = pseudonym_key(settings)
    book = AudienceBook.load(settings.audiences_file or PACKAGED_AUDIENCES)
    audiences = Audiences(book, lambda: models.segments, lambda user: pseudonymize(user, key))
    eraser.audiences = audiences
    handler = UserHandler(engine, profiles, catalog, headlines, models, promo,
                          anomalies.note_user if anomalies is not None else None, interests,
                          audiences)
    handler.fence = eraser.fence
    for name in (names.clicks, names.user_activity):
        engine.hooks.batch_handlers[name] = handler
    engine.hooks.routed_sources = (names.clicks, names.user_activity)  # profile routes
    subscribe(app, app.topic(names.clicks, names.user_activity,
                             partitions=settings.partitions, **RAW), handler.name)
    control = app.topic(names.consent, names.erasure, partitions=settings.partitions, **RAW)

    async def handle_control(message: Any) -> None:
        if message.topic == names.consent:
            profile = await promo.on_consent(message, profiles)
            if profile is not None and not profile.consent:
                models.scores.pop(profile.user_id, None)  # personal scores no longer kept
                exits = audiences.on_consent(profile, profile.consent_ts)
                if exits:  # in no audience any more
                    profiles.set(profile.user_id, profile, message.partition)
                    handler.emit_changes(exits)
                    if engine.redis is not None:
                        engine.redis.add("user", profile.user_id,
                                         profile.view(profile.updated_at))
                    await engine.outputs.flush()
                if interests.get(profile.user_id) is not None:
                    interests.delete(profile.user_id, partition_for(
                        profile.user_id.encode(), settings.partitions))
        else:
            await eraser.on_request(message)

    @app.agent(control, name="user-control")
    async def user_control(stream: Any) -> None:
        """Consent and erasure records (low volume: Faust's per-message path)."""
        async for event in stream.events():
            await engine.guard("user-pipeline", event.message, handle_control,
                               event.message)

    @app.task
    async def follow_audiences() -> None:
        """Runtime audience definitions (every partition of the compacted topic, from the
        beginning, on every worker)."""
        reader = ControlTopicReader(
            bootstrap_of(app), names.audiences, client_options=kafka_client_options(settings),
            fetch_wait_ms=100, default_partitions=settings.partitions, poll_ms=500,
            name="the audiences topic")

        def apply(rec: Any) -> None:
            name = rec.key.decode("utf-8", "replace") if rec.key else None
            try:
                body = orjson.loads(rec.value) if rec.value is not None else None
                log.info("audience %s: %s", name, book.apply(name, body))
            except (orjson.JSONDecodeError, AudienceError) as exc:
                book.rejected[name or "?"] = str(exc)[:300]
                log.error("audience record %r refused: %s", name, exc)
            except Exception as exc:  # a bug must not make the follower retry it for ever
                log.exception("audience record %r could not be applied", name)
                book.rejected[name or "?"] = f"internal: {type(exc).__name__}: {exc}"[:300]
                engine.metrics.agent_errors.labels("audiences").inc()

        await reader.follow(apply)

    @app.task
    async def make_erasures_durable() -> None:
        """The erasure acknowledgement waits for this: offsets committed, snapshots
        rewritten (agents.users.erasure)."""
        await eraser.run()

    @app.task
    async def forget_erased_users_in_models() -> None:
        await eraser.follow(bootstrap_of(app))

    @app.task
    async def snapshot_models() -> None:
        """Snapshot the models every interval and once more when the worker stops."""
        try:
            while True:
                await asyncio.sleep(settings.snapshot_interval_s)
                started = time.perf_counter()
                try:
                    written = await models.snapshot_forked()  # off the event loop
                except SnapshotError as error:
                    log.warning("model snapshot failed: %s (the next one is retried)", error)
                    continue
                took = time.perf_counter() - started
                metrics.snapshot_seconds.observe(took)
                log.info("models snapshotted in %.0f ms (%d bytes; forked child, the fork "
                         "took %.1f ms)", took * 1000, sum(written.values()),
                         models.fork_seconds * 1000)
        except asyncio.CancelledError:
            models.wait_snapshot_child()
            models.snapshot()
            raise

    @app.on_partitions_revoked.connect
    async def flush_profiles(sender: Any, revoked: set[Any], **_: Any) -> None:
        await handler.on_revoke()

    @app.on_rebalance_complete.connect
    async def compact_profiles(sender: Any, **_: Any) -> None:
        compacted = await profiles.compact_recovered()
        if compacted:
            log.info("%d recovered profiles held as JSON", compacted)

    @app.timer(EXPORT_INTERVAL_S, name="model-metrics")
    async def export_model_metrics() -> None:
        models.export()

    return handler, models, eraser
