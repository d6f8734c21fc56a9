"""User pipeline: clicks (keyed by user) and re-keyed live activity -> online user profiles.

The ``user-profiles`` table (keyed by user id) is owned by this agent alone: one update per
event, folded by :meth:`agents.profile.UserProfile.apply` with catalog facts (category, brand,
price) from the ``catalog`` global table. Then the online models (:class:`ModelHost`) score,
learn and rank: every item event yields a top-K on ``recommendations``, and propensity and
leave-risk scores join the profile's public view, which is queued for Redis (``lp:user:{id}``;
the sink writes each key at most once per flush interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from agents import erasure
from agents.activity import source_of, unbatch
from agents.engine import RAW, Engine
from agents.models import ModelHost
from agents.profile import UserProfile
from agents.state import StateMetrics, WriteBehindTable, before_commit
from online_models.snapshot import SnapshotError
from streams.contracts import CLICK_EVENT, LIVE_EVENT, as_dict, to_record
from streams.ingest import Rejection, now_ms

log = logging.getLogger("livepulse.users")
EXPORT_INTERVAL_S = 5.0


def viewer_context(profile: UserProfile, room_id: str) -> dict[str, Any]:
    """The user's presence in ``room_id`` before the current event (leave-risk features)."""
    watching = profile.watch_room == room_id
    return {"joined_at": profile.watch_start if watching else None,
            "last_active_at": profile.watch_last if watching else None,
            "events": profile.session_events if watching else 0,
            "returning": room_id in profile.rooms and not watching}


def register(engine: Engine) -> None:
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    validator = engine.validator(CLICK_EVENT)
    profiles = app.Table("user-profiles", default=None, partitions=settings.partitions)
    app.livepulse_profiles = profiles
    # one changelog record per user per commit, not per event (see agents.state)
    state = WriteBehindTable(profiles, StateMetrics(metrics.registry))
    app.livepulse_profile_state = state
    before_commit(app).append(state.flush)
    catalog = app.livepulse_catalog
    headlines = app.livepulse_room_headlines
    models = ModelHost(settings, metrics)
    restored = models.restore()
    if restored:
        log.info("online models restored from snapshots: %s", sorted(restored))
    app.livepulse_models = models
    promo = app.livepulse_promo  # agents.triggers: campaign decisions and consent
    anomalies = getattr(app, "livepulse_anomalies", None)
    watch_user = anomalies.note_user if anomalies is not None else None
    eraser = erasure.register(engine, state, models)  # livepulse forget
    channel = app.topic(names.clicks, names.user_activity, names.consent, names.erasure,
                        partitions=settings.partitions, **RAW)
    duplicates = metrics.duplicates.labels("user")

    async def handle(message: Any) -> None:
        if message.topic == names.consent:
            await promo.on_consent(message, state)
            return
        if message.topic == names.erasure:
            await eraser.on_request(message)
            return
        if message.topic == names.user_activity:
            # Validated once at ingest by the room pipeline: trusted, typed again cheaply.
            record = to_record(LIVE_EVENT, message.body)
            metrics.events_in.labels(message.topic, record.type).inc()
        else:
            record = await engine.admit(validator, message)
            if record is None:
                return
        user = record.user_id
        saved = profiles.get(user)
        profile = UserProfile.from_dict(saved) if saved else UserProfile(user)
        position = input_position(message)
        if saved and profile.is_duplicate(record.event_id, *position):
            # Redelivered (at-least-once after a crash or rebalance): already in the
            # profile and the models, skipped. Only the promo decider sees it again: it
            # keys triggers by campaign, user and event id, so it re-sends the trigger it
            # sent for this event (the crash may have lost it) instead of a second one.
            duplicates.inc()
            room_id = getattr(record, "room_id", None)
            view = profile.view(profile.updated_at)
            scores = models.scores.get(user)
            if scores:
                view["scores"] = scores
            await promo.on_event(message, record, view,
                                 headlines.get(room_id) if room_id else None, None)
            return
        if watch_user is not None:  # agents.anomalies_agent: click floods, bots
            watch_user(record, live=message.topic == names.user_activity)
        previous_ts = profile.updated_at if profile.events else None
        room_id = getattr(record, "room_id", None)
        viewer = viewer_context(profile, room_id) if room_id else None
        profile.apply(record, catalog.get)
        if position[0] is not None:
            profile.advance(*position)
        state.set(user, profile.to_dict(), message.partition)
        # the profile's own clock: a late event must not produce a view from the past
        view = profile.view(profile.updated_at)
        room = headlines.get(room_id) if room_id else None
        item = catalog.get(record.item_id) if record.item_id else None
        recommendation = models.on_event(
            record, view, room, message.topic, (message.topic, message.partition,
                                                message.offset), item=item, viewer=viewer)
        scores = models.scores.get(user)
        if scores:
            view["scores"] = scores
        if engine.redis is not None:
            engine.redis.add("user", user, view)
        if recommendation is not None:
            await engine.send(names.recommendations, user,
                              orjson.dumps(as_dict(recommendation)))
            metrics.observe_latency(names.recommendations, max(0, now_ms() - record.ts))
        await promo.on_event(message, record, view, room, previous_ts)

    def input_position(message: Any) -> tuple[str | None, int | None]:
        """Where an event comes from, for duplicate detection: ``c<partition>`` and the
        offset for a click, the forwarded live-events position for live activity."""
        if message.topic == names.clicks:
            return f"c{message.partition}", message.offset
        found = source_of(message.body) if message.topic == names.user_activity else None
        return found if found is not None else (None, None)

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
        state.flush()  # the next owner recovers from the changelog: it must be complete
        await app.producer.flush()  # ...and hold nothing older after what it writes

    @app.timer(EXPORT_INTERVAL_S, name="model-metrics")
    async def export_model_metrics() -> None:
        models.export()

    @app.agent(channel, name="user-pipeline")
    async def user_pipeline(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            if message.topic != names.user_activity:
                await engine.guard("user-pipeline", message, handle, message)
                continue
            try:  # a batch of live events (agents.activity): each is handled and guarded
                parts = unbatch(message)
            except (ValueError, TypeError) as exc:
                await engine.reject(message, Rejection("internal", str(exc)[:300]), now_ms())
                continue
            for part in parts:
                await engine.guard("user-pipeline", part, handle, part)
