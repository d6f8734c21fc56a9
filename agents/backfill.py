"""Backfill: re-process a recorded stream with its original event times.

    livepulse backfill FILE --name NAME [--topic clicks|live] [--format jsonl|sessions-tsv]
        [--max-rate EVENTS_PER_S] [--speedup X]

Replays ``FILE`` with every event's recorded ``ts`` (:func:`streams.replay.replay` with
``keep_time``) into topics of its own and runs one worker on them, so that state is rebuilt
and outputs are produced as the engine would have produced them, for backtests and for
rebuilding state. Production is untouched: the backfill has its own topic prefix
(``<LIVEPULSE_TOPIC_PREFIX>-backfill-NAME``), app id (consumer group and table changelogs),
data directory (model snapshots), Redis namespace, and no ClickHouse history.

The worker of a backfill accepts events of any age: the ``ts_past`` rule
(``LIVEPULSE_MAX_EVENT_AGE_S``, a week by default) would dead-letter a recording older than
that; every other validation rule holds. Event time drives what is folded per event
(profiles, room counters, sessions, model examples and their labels); timers (room insights,
anomaly watches) run on the worker's wall clock, so their windows are the backfill's
minutes, not the recording's.

When every replayed record has been consumed (and the internal user hop has caught up),
the worker is stopped and the summary printed: records sent, consumed, dead letters by
reason, outputs per topic; the output topics stay for the backtest to read.

>>> s = backfill_settings(Settings(), "may-1")
>>> s.topic_prefix, s.app_id, s.redis_namespace, s.clickhouse_url
('livepulse-backfill-may-1', 'livepulse-backfill-may-1', 'lp-backfill-may-1', '')
>>> s.max_event_age_s >= 100 * 365 * 24 * 3600
True
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from agents.demo import (
    WORKER_READY_TIMEOUT_S,
    WorkerProcess,
    consumed,
    fetch_json,
    start_worker,
    stop_workers,
    wait_workers_ready,
)
from config.settings import Settings
from streams.broker import free_port
from streams.replay import Event, replay
from streams.security import kafka_client_options
from streams.topics import topic_names

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
ANY_AGE_S = 100 * 365 * 24 * 3600.0  # a recording of any age is accepted
STALL_S = 60.0  # no record consumed for this long: the backfill gives up


def backfill_settings(settings: Settings, name: str) -> Settings:
    """``settings`` for the backfill ``name``: its own topics, group, state and keys."""
    if not NAME.fullmatch(name):
        raise ValueError(f"backfill name {name!r}: lower-case letters, digits and '-', "
                         "at most 40")
    tag = f"backfill-{name}"
    return settings.with_overrides(
        topic_prefix=f"{settings.topic_prefix}-{tag}", app_id=f"{settings.app_id}-{tag}",
        max_event_age_s=ANY_AGE_S, data_dir=str(Path(settings.data_dir) / tag),
        redis_namespace=f"{settings.redis_namespace}-{tag}", clickhouse_url="",
        web_port=free_port(settings.web_host))


def hop_caught_up(stats: dict[str, Any], live: str, hop: str) -> bool:
    """Whether the user pipeline has handled every live event the room pipeline forwarded
    to it: all but the hosts' product pins, which change the room only. (A producer retry
    the room pipeline skipped is not forwarded either: then this waits for the stall.)

    >>> stats = {"events_in": {"live": 5, "ua": 3},
    ...          "events_in_by_type": {"live": {"like": 4, "product_pin": 1}}}
    >>> hop_caught_up(stats, "live", "ua")
    False
    >>> hop_caught_up({**stats, "events_in": {"live": 5, "ua": 4}}, "live", "ua")
    True
    """
    events_in = stats.get("events_in", {})
    pins = stats.get("events_in_by_type", {}).get(live, {}).get("product_pin", 0)
    return events_in.get(hop, 0) >= events_in.get(live, 0) - pins


async def wait_processed(worker: WorkerProcess, sent: int, inputs: set[str], live: str,
                         hop: str, stall_s: float = STALL_S) -> tuple[dict[str, Any], bool]:
    """Poll the worker's stats until it has consumed ``sent`` input records and the hop
    has caught up; (last stats, complete). Gives up after ``stall_s`` without progress."""
    stats: dict[str, Any] = {}
    progress, progress_at = -1, time.monotonic()
    async with aiohttp.ClientSession(headers=worker.headers()) as session:
        while time.monotonic() - progress_at < stall_s:
            if worker.process.poll() is not None:
                raise RuntimeError(f"the backfill worker exited with code "
                                   f"{worker.process.returncode}; see {worker.log_path}")
            stats = await fetch_json(session, f"{worker.web_url}/api/stats") or stats
            seen = consumed(stats, inputs) + stats.get("events_in", {}).get(hop, 0)
            if consumed(stats, inputs) >= sent and hop_caught_up(stats, live, hop):
                return stats, True
            if seen > progress:
                progress, progress_at = seen, time.monotonic()
            await asyncio.sleep(0.5)
    return stats, False


def run_backfill(settings: Settings, bootstrap: str, name: str, events: Iterable[Event], *,
                 topic: str = "clicks", max_rate: float | None = None,
                 speedup: float = float("inf")) -> dict[str, Any]:
    """Replay ``events`` with their own times into backfill ``name`` on ``bootstrap`` and
    process them with one worker; the summary."""
    from streams.admin import ensure_topics

    own = backfill_settings(settings, name).with_overrides(kafka_url=bootstrap)
    names = topic_names(own)
    target = {"clicks": names.clicks, "live": names.live_events}[topic]
    asyncio.run(ensure_topics(own, bootstrap))
    worker = start_worker(own, bootstrap, 0)
    try:
        asyncio.run(wait_workers_ready([worker], WORKER_READY_TIMEOUT_S))
        started = time.monotonic()
        counts = asyncio.run(replay(
            bootstrap, target, events, speedup=speedup, max_rate=max_rate, keep_time=True,
            key_field="user_id" if topic == "clicks" else "room_id",
            client_options=kafka_client_options(own)))
        stats, complete = asyncio.run(wait_processed(
            worker, counts["sent"] - counts["failed"], set(names.inputs()),
            names.live_events, names.user_activity))
        elapsed = time.monotonic() - started
    finally:
        stop_workers([worker])
    inputs = set(names.inputs())
    return {
        "name": name, "topic_prefix": own.topic_prefix, "app_id": own.app_id,
        "sent": counts["sent"], "failed": counts["failed"],
        "consumed": consumed(stats, inputs), "complete": complete,
        "elapsed_s": round(elapsed, 1),
        "events_per_s": round(consumed(stats, inputs) / elapsed, 1) if elapsed > 0 else 0.0,
        "dead_letters_by_reason": stats.get("dead_letters_by_reason", {}),
        "events_out": stats.get("events_out", {}), "worker_log": str(worker.log_path)}
