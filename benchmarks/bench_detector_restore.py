"""Warm-up a worker restart avoids by restoring the anomaly detectors' snapshot.

    python -m benchmarks.bench_detector_restore [--before 300]

A synthetic room (200 viewers, likes at 5 % of the audience per second, a few leaves and
joins) is watched for ``--before`` seconds; the worker then restarts: the room's state
survives (its changelog) and the :class:`~agents.anomalies.monitor.AnomalyMonitor` is either
new (``cold``) or restored from the detector snapshot (``restored``,
:mod:`agents.anomalies.snapshots`). A gift flood (8 gifts/s) or a viewer drop (35 % leave per
second for 5 s) starts ``d`` seconds after the restart; for each ``d`` the row says when an
incident opened (seconds after the flood began) or ``null`` if none did within 20 s;
``first_open_s`` is the earliest opening counted from the restart (how long the watch is
blind) and ``missed_delays`` the delays never caught. The last stdout line is one JSON
document.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections.abc import Sequence
from typing import Any

from agents.anomalies.monitor import AnomalyMonitor
from agents.anomalies.snapshots import DetectorSnapshots
from agents.rooms.state import RoomState
from online_models.snapshot import SnapshotStore
from streams.contracts import LiveEvent

T0 = 1_700_000_000_000
DELAYS = (0, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180)


class Room:
    """A steady room of 200 viewers fed second by second to whichever monitor is current."""

    def __init__(self, seed: int = 1) -> None:
        self.state = RoomState("r1")
        self.rng = random.Random(seed)
        self.present: list[str] = []
        self.n = 0
        self.monitors: list[AnomalyMonitor] = []
        for _ in range(200):
            self.join(T0)

    def event(self, kind: str, user: str, ts: int, **extra: Any) -> None:
        self.n += 1
        event = LiveEvent(f"e{self.n}", kind, ts, "r1", user, **extra)
        self.state.apply(event)
        for monitor in self.monitors:
            monitor.note_live(event)

    def join(self, ts: int) -> None:
        self.n += 1
        user = f"u{self.n}"
        self.present.append(user)
        self.event("join", user, ts)

    def second(self, t: int, *, gifts: int = 0, leave_share: float = 0.003) -> int:
        ts, rng = T0 + t * 1000, self.rng
        for _ in range(max(0, round(rng.gauss(len(self.present) * 0.05, 2)))):
            if self.present:
                self.event("like", rng.choice(self.present), ts + rng.randrange(1000))
        for _ in range(gifts):
            self.event("gift", "fraud", ts + rng.randrange(1000), amount=520.0)
        for user in [u for u in self.present if rng.random() < leave_share]:
            self.present.remove(user)
            self.event("leave", user, ts + rng.randrange(1000))
        while len(self.present) < 200 and rng.random() < 0.7 and leave_share < 0.05:
            self.join(ts + rng.randrange(1000))
        return ts


def opening(before: int, delay: int, scenario: str, restored: bool) -> int | None:
    """Seconds from the scenario's start to its incident, None if none within 20 s."""
    room = Room()
    monitor = AnomalyMonitor(system_id="w", clock=lambda: T0)
    room.monitors = [monitor]
    for t in range(before):
        monitor.tick({"r1": room.state}, now_ms=room.second(t))
    with tempfile.TemporaryDirectory() as directory:
        snaps = DetectorSnapshots(SnapshotStore(directory), b"k" * 32)
        snaps.save(monitor)
        monitor = AnomalyMonitor(system_id="w", clock=lambda: T0)   # the restart
        if restored:
            snaps.restore(monitor)
    room.monitors = [monitor]
    start = before + delay
    for t in range(before, start + 20):
        active = start <= t < start + (5 if scenario == "viewer_drop" else 20)
        ts = room.second(t, gifts=8 if active and scenario == "gift_flood" else 0,
                         leave_share=0.35 if active and scenario == "viewer_drop" else 0.003)
        records = monitor.tick({"r1": room.state}, now_ms=ts)
        if any(r["status"] == "open" for r in records):
            return t - start if t >= start else -1   # -1: a false alarm before it
    return None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=int, default=300)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"before_s": args.before}
    for scenario in ("gift_flood", "viewer_drop"):
        rows = {}
        for mode in ("cold", "restored"):
            rows[mode] = {d: opening(args.before, d, scenario, mode == "restored")
                          for d in DELAYS}
            opened = [d + at for d, at in rows[mode].items() if at is not None and at >= 0]
            rows[f"{mode}_first_open_s"] = min(opened, default=None)
            rows[f"{mode}_missed_delays"] = [d for d, at in rows[mode].items() if at is None]
            print(f"{scenario:<12} {mode:<9} opens after (s) by delay since restart: "
                  f"{rows[mode]}  earliest opening {rows[f'{mode}_first_open_s']} s after the "
                  f"restart, missed at delays {rows[f'{mode}_missed_delays']}")
        result[scenario] = rows
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
