"""User pipeline: clicks (keyed by user) and re-keyed live activity -> per-user counts.

The ``user-event-counts`` table is the seed of the online profile: one update per event,
owned by this agent alone. The user pipeline's later stages (profile, recommender,
propensity, campaigns) hang off :func:`register`'s ``handle``.
"""

from __future__ import annotations

from typing import Any

import orjson

from agents.engine import RAW, Engine
from streams.contracts import CLICK_EVENT, LIVE_EVENT, to_record


def fold_counts(counts: dict[str, Any] | None, source: str, kind: str, ts: int) -> dict[str, Any]:
    """Add one event to a user's counts.

    >>> c = fold_counts(None, "clicks", "view", 10)
    >>> fold_counts(c, "live", "comment", 5)
    {'total': 2, 'by_type': {'clicks.view': 1, 'live.comment': 1}, 'first_ts': 5, 'last_ts': 10}
    """
    if counts is None:
        counts = {"total": 0, "by_type": {}, "first_ts": ts, "last_ts": ts}
    counts["total"] += 1
    key = f"{source}.{kind}"
    counts["by_type"][key] = counts["by_type"].get(key, 0) + 1
    counts["first_ts"] = min(counts["first_ts"], ts)
    counts["last_ts"] = max(counts["last_ts"], ts)
    return counts


def register(engine: Engine) -> None:
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    validator = engine.validator(CLICK_EVENT)
    counts_table = app.Table("user-event-counts", default=None, partitions=settings.partitions)
    app.livepulse_user_counts = counts_table
    channel = app.topic(names.clicks, names.user_activity, partitions=settings.partitions,
                        **RAW)

    async def handle(event: Any) -> None:
        message = event.message
        if message.topic == names.user_activity:
            # Validated once at ingest by the room pipeline: trusted, typed again cheaply.
            record = to_record(LIVE_EVENT, orjson.loads(message.value))
            metrics.events_in.labels(message.topic, record.type).inc()
            source = "live"
        else:
            record = await engine.admit(validator, message)
            if record is None:
                return
            source = "clicks"
        user = record.user_id
        counts_table[user] = fold_counts(counts_table.get(user), source, record.type, record.ts)

    @app.agent(channel, name="user-pipeline")
    async def user_pipeline(stream: Any) -> None:
        async for event in stream.events():
            await engine.guarded("user-pipeline", event, handle)
