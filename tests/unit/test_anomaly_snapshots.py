"""Snapshots of the anomaly monitor's detectors (agents.anomalies.snapshots)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from agents.anomalies.monitor import AnomalyMonitor
from agents.anomalies.snapshots import NAME, DetectorSnapshots
from agents.anomalies.watches import (
    DetectorFactory,
    default_detector,
    fast_detector,
    forecast_detector,
)
from online_models.snapshot import SnapshotStore
from streams.contracts import LiveEvent
from tests.unit.test_anomalies import T0, SyntheticRoom

KEY = b"k" * 32


def hooked(room: SyntheticRoom, monitor: AnomalyMonitor) -> None:
    """Route the room's events to ``monitor`` (joins and leaves per second)."""
    original = getattr(room, "_original_event", room.event)
    room._original_event = original  # type: ignore[attr-defined]

    def event(kind: str, user: str, ts: int, **extra: Any) -> None:
        original(kind, user, ts, **extra)
        monitor.note_live(LiveEvent("x", kind, ts, "r1", user))

    room.event = event  # type: ignore[method-assign]


def drive(room: SyntheticRoom, seconds: range, monitor: AnomalyMonitor,
          **kwargs: Any) -> list[dict[str, Any]]:
    out = []
    for t in seconds:
        room.second(t, **kwargs)
        out += monitor.tick({"r1": room.state}, now_ms=T0 + t * 1000,
                            system={"dead_letters": 0.0, "events_in": 100.0 * t})
    return out


def warmed(tmp_path: Path, seconds: int = 300, factory: DetectorFactory = default_detector
           ) -> tuple[SyntheticRoom, AnomalyMonitor, DetectorSnapshots]:
    room = SyntheticRoom()
    monitor = AnomalyMonitor(system_id="w", clock=lambda: T0, detector_factory=factory)
    hooked(room, monitor)
    monitor.users.note("u1", "click", T0)
    assert drive(room, range(seconds), monitor) == []
    for rate in (1.0, 2.0, 1.5) * 20:
        monitor.users.population.learn_one({"value": rate})
    return room, monitor, DetectorSnapshots(SnapshotStore(tmp_path), KEY)


@pytest.mark.parametrize("factory", [forecast_detector, fast_detector])
def test_restored_detectors_score_the_next_points_exactly_as_before(
        tmp_path: Path, factory: DetectorFactory) -> None:
    _, before, snaps = warmed(tmp_path, factory=factory)
    assert snaps.save(before) > 0
    after = AnomalyMonitor(system_id="w", clock=lambda: T0, detector_factory=factory)
    restored = snaps.restore(after)
    assert restored["rooms"] == 1 and restored["file"].startswith(NAME)
    after.rooms._track("r1")   # the room is seen again
    pairs = [(before.rooms.tracks["r1"].detectors[m], after.rooms.tracks["r1"].detectors[m])
             for m in before.rooms.tracks["r1"].detectors]
    pairs += [(before.users.population, after.users.population)]
    pairs += [(before.system.detectors[m], after.system.detectors[m])
              for m in before.system.detectors]
    pairs = [(old, new) for old, new in pairs if old.n_seen]   # metrics never fed drop out
    assert len(pairs) >= 10
    for old, new in pairs:
        assert old is not new and old.n_seen == new.n_seen > 0
        base = old.expected_range()[1]
        scores = []
        for i in range(50):
            x = {"value": base * (1 + (i % 7) / 5) + (40 * base + 5 if i == 30 else 0.0),
                 "ts": T0 / 1000 + 300 + i}
            scores.append(old.score_one(x))
            assert new.score_one(x) == scores[-1]
            assert old.expected_range() == new.expected_range()
            old.learn_one(x)
            new.learn_one(x)
        assert scores[30] > 0.5   # the jump was scored (same by both)


def test_a_restored_room_catches_a_flood_a_cold_one_misses(tmp_path: Path) -> None:
    room, before, snaps = warmed(tmp_path, seconds=120)
    snaps.save(before)
    # restart: the room's state survives (its changelog), the monitor is new
    cold = AnomalyMonitor(system_id="w", clock=lambda: T0)
    warm = AnomalyMonitor(system_id="w", clock=lambda: T0)
    snaps.restore(warm)
    records: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    for t in range(120, 140):
        gifts = 8 if t >= 125 else 0
        room.second(t, gifts=gifts)
        for name, monitor in (("cold", cold), ("warm", warm)):
            records[name] += monitor.tick({"r1": room.state}, now_ms=T0 + t * 1000)
    assert [(r["status"], r["metric"]) for r in records["warm"]] == [("open", "gift_rate")]
    assert records["cold"] == []   # still warming up


def test_no_user_id_is_saved(tmp_path: Path) -> None:
    _, monitor, snaps = warmed(tmp_path, seconds=30)
    monitor.users.note("user-secret-42", "click", T0 + 1000)
    snaps.save(monitor)
    blob = snaps.store.latest(NAME)
    assert blob is not None and b"user-secret-42" not in blob and b"\x8c\x02u1" not in blob
    assert b"\x8c\x02r1" in blob  # pickled strings: "r1" kept, "u1" not


def test_a_forged_or_foreign_snapshot_starts_cold(tmp_path: Path) -> None:
    _, monitor, snaps = warmed(tmp_path, seconds=30)
    snaps.save(monitor)
    reasons: list[str] = []
    other = DetectorSnapshots(SnapshotStore(tmp_path), b"x" * 32, refused=reasons.append)
    fresh = AnomalyMonitor(system_id="w")
    assert other.restore(fresh) == {} and reasons == ["signature"]
    assert fresh.system.n == 0 and fresh.rooms.restored == {}
    # a verified snapshot of another layout is refused too, and an older good one used
    snaps.store.save(NAME, __import__("online_models.snapshot").snapshot.save_snapshot(
        {"rooms": 1}, None, key=KEY, model_name=NAME, version="0"))
    reasons.clear()
    snaps.refused = reasons.append
    assert snaps.restore(fresh)["samples"] == monitor.system.n and reasons == ["payload"]


@pytest.mark.asyncio
async def test_a_forked_save_is_restorable(tmp_path: Path) -> None:
    _, monitor, snaps = warmed(tmp_path, seconds=30)
    written = await snaps.save_forked(monitor)
    blob = snaps.store.latest(NAME)
    assert blob is not None and written == len(blob)
    fresh = AnomalyMonitor(system_id="w")
    assert snaps.restore(fresh)["samples"] == monitor.system.n
    fresh.rooms._track("r1")
    assert pickle.dumps(fresh.learned_state()) == pickle.dumps(monitor.learned_state())


def test_a_snapshot_of_the_other_detector_starts_cold(tmp_path: Path) -> None:
    """LIVEPULSE_ANOMALY_DETECTOR changed between runs: the other kind's detectors are not
    restored (they would keep running unseen), the watches start cold."""
    _, monitor, snaps = warmed(tmp_path, seconds=30, factory=forecast_detector)
    snaps.save(monitor)
    reasons: list[str] = []
    snaps.refused = reasons.append
    fast = AnomalyMonitor(system_id="w", detector_factory=fast_detector)
    assert snaps.restore(fast) == {} and reasons == ["payload"]
    assert fast.system.n == 0 and fast.rooms.restored == {}
    again = AnomalyMonitor(system_id="w", detector_factory=forecast_detector)
    assert snaps.restore(again)["samples"] == monitor.system.n


def test_a_snapshot_from_before_the_kind_field_holds_forecast_detectors(
        tmp_path: Path) -> None:
    _, monitor, _ = warmed(tmp_path, seconds=30, factory=forecast_detector)
    state = monitor.learned_state()
    for legacy in ({k: v for k, v in state.items() if k != "detector"},
                   {**state, "detector": "default_detector"}):
        forecast = AnomalyMonitor(system_id="w", detector_factory=forecast_detector)
        forecast.restore_learned(legacy)
        assert forecast.system.n == monitor.system.n
        with pytest.raises(ValueError, match="forecast_detector"):
            AnomalyMonitor(system_id="w").restore_learned(legacy)
