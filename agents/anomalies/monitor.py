"""The anomaly monitor: the three watches and one incident tracker of a worker.

Pure Python (no Faust): :mod:`agents.anomalies.agent` wires it into the worker, which
notes every event (:meth:`AnomalyMonitor.note_live`, :meth:`AnomalyMonitor.note_user`) and
ticks it once per second (:meth:`AnomalyMonitor.tick`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from agents.anomalies.incidents import SCOPES, IncidentTracker, alert_record
from agents.anomalies.watches import (
    DetectorFactory,
    RoomSource,
    RoomWatch,
    SystemWatch,
    UserWatch,
    default_detector,
)
from streams.ingest import now_ms as wall_ms


class AnomalyMonitor:
    """The three watches and one tracker: what one worker runs once per second.

    >>> monitor = AnomalyMonitor(system_id="w1")
    >>> monitor.tick({}, now_ms=1_000)
    []
    """

    def __init__(self, *, system_id: str = "engine",
                 detector_factory: DetectorFactory = default_detector,
                 tracker: IncidentTracker | None = None, resolved_alert_s: float = 120.0,
                 clock: Callable[[], int] = wall_ms, max_users: int = 100_000,
                 max_rooms: int = 2_000) -> None:
        self.system_id = system_id
        self.clock = clock
        self.tracker = tracker or IncidentTracker(clock=clock)
        self.rooms = RoomWatch(detector_factory, max_rooms=max_rooms)
        self.users = UserWatch(detector_factory, max_users=max_users)
        self.system = SystemWatch(detector_factory)
        self.resolved_alert_ms = int(resolved_alert_s * 1000)
        self.room_clock: dict[str, int] = {}  # room -> last sampled second (ms), for alerts

    # ------------------------------------------------------------------ per event
    def note_live(self, event: Any) -> None:
        """A validated live event in the room pipeline (joins, leaves, input lag)."""
        self.rooms.note(event.room_id, event.type, event.ts)
        self.system.note_lag(self.clock() - event.ts)

    def note_user(self, record: Any, *, live: bool) -> None:
        """A live or click event in the user pipeline."""
        self.users.note(record.user_id, record.type, record.ts,
                        item_id=getattr(record, "item_id", None),
                        room_id=getattr(record, "room_id", None), live=live)
        if not live:
            self.system.note_lag(self.clock() - record.ts)

    def note_rate_limited(self, user_id: str, ts: int) -> None:
        """An event of ``user_id`` refused by the hot-key quarantine: a user incident."""
        self.users.note_limited(user_id, ts)

    def forget_user(self, user_id: str) -> int:
        """Erase a user (``livepulse forget``): per-user click statistics and incidents."""
        self.users.users.pop(user_id, None)
        self.users.dirty.discard(user_id)
        return self.tracker.forget("user", user_id)

    def holds_user(self, user_id: str) -> bool:
        """True while any per-user state or incident of this worker names ``user_id``."""
        tracker = self.tracker
        incidents = [*tracker.resolved, *(s.incident for s in tracker.scopes.values()
                                          if s.incident is not None)]
        return (user_id in self.users.users or ("user", user_id) in tracker.scopes
                or any(i.scope_id == user_id or user_id in i.members for i in incidents))

    # ------------------------------------------------------------------ snapshots
    def learned_state(self) -> dict[str, Any]:
        """What the detectors have learned (rooms', the users' population's and the
        system's detectors and usual levels), for a snapshot
        (:mod:`agents.anomalies.snapshots`). Holds no user id: per-user tracks and
        incidents are left out, so an erasure never has to rewrite it."""
        return {"rooms": self.rooms.learned_state(), "population": self.users.learned_state(),
                "system": self.system.learned_state(), "detector": self.detector_kind}

    @property
    def detector_kind(self) -> str:
        """The detector factory's name (a snapshot of another kind is not restored)."""
        return getattr(self.rooms.factory, "__name__", "")

    def restore_learned(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`learned_state` (before the first tick); raises ValueError,
        changing nothing, when ``state`` is not of that layout."""
        try:
            ok = (isinstance(state["rooms"], dict)
                  and all(len(t) == 5 for t in state["rooms"].values())
                  and len(state["population"]) == 2 and len(state["system"]) == 3)
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a detector state: {error!r}") from error
        if not ok:
            raise ValueError("not a detector state")
        # snapshots older than the kind field held forecast detectors, later "default_detector"
        kind = state.get("detector", "forecast_detector")
        kind = "forecast_detector" if kind == "default_detector" else kind
        if kind != self.detector_kind:
            raise ValueError(f"detectors of {kind!r}, this monitor runs {self.detector_kind!r}")
        self.rooms.restore_learned(state["rooms"])
        self.users.restore_learned(state["population"])
        self.system.restore_learned(state["system"])

    # ------------------------------------------------------------------ per second
    def tick(self, rooms: Mapping[str, RoomSource], *, now_ms: int | None = None,
             system: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
        """Sample the rooms (this worker's live rooms), the users and the system; return
        the incident records to emit. Rooms no longer given are forgotten (resolved)."""
        now = self.clock() if now_ms is None else now_ms
        records: list[dict[str, Any]] = []
        tracker = self.tracker
        for room_id in [r for r in self.rooms.tracks if r not in rooms]:
            self.rooms.forget(room_id)
            self.room_clock.pop(room_id, None)
            records += tracker.close("room", room_id, now, "no longer watched here (room "
                                     "idle or moved to another worker)",
                                     "本节点不再监控（直播间空闲或已迁移）")
        for room_id, room in rooms.items():
            for ts, signals in self.rooms.sample(room_id, room):
                self.room_clock[room_id] = ts
                records += tracker.observe("room", room_id, signals, ts)
        for user_id, ts, signals in self.users.sample(tracker.active("user")):
            records += tracker.observe("user", user_id, signals, ts)
        if system is not None:
            signals = self.system.sample(now, **system)
            records += tracker.observe("system", self.system_id, signals, now)
        return records

    def room_alerts(self, room_id: str) -> list[dict[str, Any]]:
        """Open and recently resolved incidents of a room (its ``alerts`` insight group)."""
        clock = self.room_clock.get(room_id)
        if clock is None:
            return []
        return self.tracker.alerts("room", room_id, clock - self.resolved_alert_ms)

    def snapshot(self, scope: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Open and recently resolved incidents (``GET /api/anomalies``)."""
        tracker = self.tracker
        open_now = [alert_record(i, "open") for i in tracker.open_incidents(scope)]
        resolved = [alert_record(i, "resolved") for i in reversed(tracker.resolved)
                    if scope is None or i.scope == scope][:limit]
        opened: dict[str, int] = {}
        for (sc, _severity), n in tracker.opened_total.items():
            opened[sc] = opened.get(sc, 0) + n
        return {"open": open_now[:limit], "resolved": resolved,
                "open_by_scope": {s: tracker.n_open(s) for s in SCOPES},
                "opened_by_scope": opened}
