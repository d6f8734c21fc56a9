"""User pipeline: clicks (keyed by user) and re-keyed live activity -> online user profiles.

The ``user-profiles`` table (keyed by user id) is owned by this agent alone: one update per
event, folded by :meth:`agents.profile.UserProfile.apply` with catalog facts (category, brand,
price) from the ``catalog`` global table. Every update also queues the profile's public view
for Redis (``lp:user:{id}``); the sink writes each key at most once per flush interval.
"""

from __future__ import annotations

from typing import Any

import orjson

from agents.engine import RAW, Engine
from agents.profile import UserProfile
from streams.contracts import CLICK_EVENT, LIVE_EVENT, to_record


def register(engine: Engine) -> None:
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    validator = engine.validator(CLICK_EVENT)
    profiles = app.Table("user-profiles", default=None, partitions=settings.partitions)
    app.livepulse_profiles = profiles
    catalog = app.livepulse_catalog
    channel = app.topic(names.clicks, names.user_activity, partitions=settings.partitions,
                        **RAW)

    async def handle(event: Any) -> None:
        message = event.message
        if message.topic == names.user_activity:
            # Validated once at ingest by the room pipeline: trusted, typed again cheaply.
            record = to_record(LIVE_EVENT, orjson.loads(message.value))
            metrics.events_in.labels(message.topic, record.type).inc()
        else:
            record = await engine.admit(validator, message)
            if record is None:
                return
        user = record.user_id
        saved = profiles.get(user)
        profile = UserProfile.from_dict(saved) if saved else UserProfile(user)
        profile.apply(record, catalog.get)
        profiles[user] = profile.to_dict()
        if engine.redis is not None:
            # the profile's own clock: a late event must not produce a view from the past
            engine.redis.add("user", user, profile.view(profile.updated_at))

    @app.agent(channel, name="user-pipeline")
    async def user_pipeline(stream: Any) -> None:
        async for event in stream.events():
            await engine.guarded("user-pipeline", event, handle)
