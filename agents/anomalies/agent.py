"""Anomaly incidents in the worker: ``livepulse.anomalies`` (key ``scope_id``).

Wiring of the pure :class:`agents.anomalies.monitor.AnomalyMonitor` into one worker:

* the room pipeline calls :meth:`~agents.anomalies.monitor.AnomalyMonitor.note_live` for every
  validated live event (joins and leaves per second, input lag) and asks
  :meth:`~agents.anomalies.monitor.AnomalyMonitor.room_alerts` for each insight's ``alerts``;
* the user pipeline calls :meth:`~agents.anomalies.monitor.AnomalyMonitor.note_user` for every
  click and live event it folds;
* a 1 s timer samples this worker's live rooms, its active users and its own numbers
  (input lag, dead letters, output latency), produces the incident records and keeps
  ``livepulse_anomalies_total`` / ``livepulse_anomalies_open`` current.

Each worker watches the rooms and users of its partitions; a room that goes idle or moves
to another worker has its open incident resolved here (the new owner starts afresh).

The detectors' learned state (rooms, the users' population, the system; no user ids) is
snapshotted with the models' key and directory (every minute or the models' interval if
longer, and at stop) and restored at start
(:mod:`agents.anomalies.snapshots`), so a restarted worker does not re-warm them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Any

import orjson

from agents.anomalies.incidents import SCOPES
from agents.anomalies.monitor import AnomalyMonitor
from agents.anomalies.snapshots import NAME, DetectorSnapshots
from agents.anomalies.watches import DETECTORS
from agents.engine import Engine
from agents.models import snapshot_dir, snapshot_key
from agents.rooms.pipeline import RoomPipeline
from agents.stats import EngineMetrics
from online_models.snapshot import SnapshotError, SnapshotStore

log = logging.getLogger(__name__)

TICK_S = 1.0
# detector snapshots at most this often: 2 000 rooms' detectors pickle to about 180 MB (and
# a minute's staleness costs nothing: the detectors are not warmed by a minute)
DETECTOR_SNAPSHOT_MIN_S = 60.0


def system_numbers(metrics: EngineMetrics, inputs: Iterable[str]) -> dict[str, float]:
    """Cumulative dead letters, valid input events and output latency (sum, count) of
    this worker, read from its Prometheus registry."""
    wanted = set(inputs)
    out = {"dead_letters": 0.0, "events_in": 0.0, "latency_sum_s": 0.0, "latency_count": 0.0}
    for family in metrics.registry.collect():
        if family.name == "livepulse_dead_letters":
            out["dead_letters"] += sum(s.value for s in family.samples
                                       if s.name.endswith("_total"))
        elif family.name == "livepulse_events_in":
            out["events_in"] += sum(s.value for s in family.samples
                                    if s.name.endswith("_total") and s.labels["topic"] in wanted)
        elif family.name == "livepulse_end_to_end_latency_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    out["latency_sum_s"] += sample.value
                elif sample.name.endswith("_count"):
                    out["latency_count"] += sample.value
    return out


def register(engine: Engine, pipeline: RoomPipeline) -> AnomalyMonitor:
    """Create this worker's monitor and hook it into the room pipeline (the user pipeline
    and the web are given it by ``agents.worker``)."""
    app, settings, names, metrics = engine.app, engine.settings, engine.topics, engine.metrics
    monitor = AnomalyMonitor(
        system_id=f"{settings.app_id}@{socket.gethostname()}:{settings.web_port}",
        detector_factory=DETECTORS[settings.anomaly_detector])
    pipeline.observers.append(monitor.note_live)
    engine.on_rate_limited.append(monitor.note_rate_limited)
    pipeline.alerts = monitor.room_alerts
    inputs = names.inputs()
    snapshots = DetectorSnapshots(
        SnapshotStore(snapshot_dir(settings)), snapshot_key(settings),
        refused=lambda reason: metrics.snapshot_refused.labels(NAME, reason).inc())
    restored = snapshots.restore(monitor)
    if restored:
        log.info("anomaly detectors restored from %s (%d rooms): no re-warming",
                 restored["file"], restored["rooms"])

    @app.task
    async def snapshot_detectors() -> None:
        """Snapshot the detectors every model-snapshot interval (at least a minute) and
        once more at stop."""
        try:
            while True:
                await asyncio.sleep(max(settings.snapshot_interval_s, DETECTOR_SNAPSHOT_MIN_S))
                try:
                    await snapshots.save_forked(monitor)  # off the event loop
                except (OSError, SnapshotError) as error:
                    log.warning("anomaly detector snapshot failed: %s (retried next time)",
                                error)
        except asyncio.CancelledError:
            snapshots.wait_child()
            snapshots.save(monitor)
            raise

    @app.timer(TICK_S, name="anomaly-watch")
    async def watch_anomalies() -> None:
        rooms = {room_id: room.state for room_id, room in pipeline.rooms.items() if room.live}
        records = monitor.tick(rooms, system=system_numbers(metrics, inputs))
        await publish(records)

    async def publish(records: list[dict[str, Any]]) -> None:
        for record in records:
            engine.add_output(names.anomalies, record["scope_id"], orjson.dumps(record))
            if record["status"] == "open":
                metrics.anomalies.labels(record["scope"], record["severity"]).inc()
            room = pipeline.rooms.get(record["scope_id"]) if record["scope"] == "room" else None
            if room is not None:
                room.dirty = True  # its insight shows the alert change at the next emission
        for scope in SCOPES:
            metrics.anomalies_open.labels(scope).set(monitor.tracker.n_open(scope))
        await engine.flush()

    return monitor
