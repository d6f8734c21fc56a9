"""Anomaly incidents on simulator traffic, replayed in simulated time (no broker).

    python -m benchmarks.bench_incidents [--seeds 7,8,9] [--normal-s 1800] [--rate 300]
        [--detector forecast|ensemble|fast]

The simulator's records go through the same pure parts the worker runs (``RoomState``,
:class:`agents.anomalies.monitor.AnomalyMonitor`), one sample per second. Two figures:

* **false alarms**: incidents opened on normal traffic (pin bursts included), per scope and
  per simulated hour, over ``--normal-s`` seconds for each seed;
* **detection**: for each scenario (injected at 40 s into a 90 s run, like the demo's
  30-75 % placement), how many incidents of the matching scope opened and resolved,
  seconds from injection to open and from injection to resolved.

``--detector ensemble`` runs every watch on
:class:`~online_models.anomaly_ensemble.EnsembleDetector`: the engine's detector
(:func:`agents.anomalies.watches.forecast_detector`) and a calibrated
:class:`~online_models.anomaly_cad.ContextAnomalyDetector`, maximum of the two.

``--detector fast``: :func:`agents.anomalies.watches.fast_detector`
(``LIVEPULSE_ANOMALY_DETECTOR=fast``).

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from agents.anomalies.monitor import AnomalyMonitor
from agents.anomalies.watches import (
    DEFAULT_DETECTOR,
    DETECTOR_WARMUP,
    DetectorFactory,
    default_detector,
    fast_detector,
    forecast_detector,
)
from agents.rooms.state import RoomState
from online_models.anomaly_cad import ContextAnomalyDetector
from online_models.anomaly_ensemble import EnsembleDetector
from streams.contracts import CLICK_EVENT, LIVE_EVENT, validate
from streams.simulator import Simulator

START_MS = 1_700_000_000_000
VIEWER_TIMEOUT_MS = 300_000
TICK_MS = 10


def replay(*, seed: int, seconds: float, rate: float = 300.0, rooms: int = 6,
           users: int = 5000, items: int = 2000,
           scenarios: Sequence[tuple[float, str, str | None, float]] = (),
           detector_factory: DetectorFactory = default_detector,
           start_ms: int = START_MS) -> tuple[list[dict[str, Any]], AnomalyMonitor, Simulator]:
    """Drive the simulator for ``seconds`` of simulated time through room state and the
    anomaly monitor; return the incident records, the monitor and the simulator.

    Scenarios are ``(at_seconds, name, room_id, duration_s)`` like ``run_simulation``'s.
    """
    sim = Simulator(seed=seed, rooms=rooms, users=users, items=items, bad_rate=0.0)
    now = [start_ms]
    monitor = AnomalyMonitor(system_id="replay", detector_factory=detector_factory,
                             clock=lambda: now[0])
    states: dict[str, RoomState] = {}
    pending = sorted(scenarios, key=lambda s: s[0])
    records: list[dict[str, Any]] = []
    sent = 0
    ticks = int(seconds * 1000 / TICK_MS)
    for tick in range(1, ticks + 1):
        elapsed_ms = tick * TICK_MS
        now[0] = start_ms + elapsed_ms
        while pending and pending[0][0] * 1000 <= elapsed_ms:
            _, name, room_id, length_s = pending.pop(0)
            sim.inject(name, room_id, length_s, now[0])
        due = int(rate * elapsed_ms / 1000) - sent
        if due > 0:
            for record in sim.next_events(now[0], due):
                if record.stream == "live":
                    event = validate(LIVE_EVENT, orjson.loads(record.value))
                    state = states.get(event.room_id)
                    if state is None:
                        state = states[event.room_id] = RoomState(event.room_id)
                    state.apply(event)
                    monitor.note_live(event)
                    if event.type != "product_pin":
                        monitor.note_user(event, live=True)
                elif record.stream == "clicks":
                    monitor.note_user(validate(CLICK_EVENT, orjson.loads(record.value)),
                                      live=False)
            sent += due
        if elapsed_ms % 1000 == 0:
            for state in states.values():
                state.expire_viewers(VIEWER_TIMEOUT_MS)
            records += monitor.tick(states, now_ms=now[0], system={})
    return records, monitor, sim


ENGINE_CAPACITY = 512   # (context, level) pairs of one live metric: about 60 KB in all
ENGINE_BINS = 256


def ensemble_detector() -> EnsembleDetector:
    """The engine's detector and a contextual one (small table: one live metric)."""
    return EnsembleDetector(
        [(forecast_detector(), False),
         (ContextAnomalyDetector(warmup=DETECTOR_WARMUP, rest=0, capacity=ENGINE_CAPACITY),
          True)],
        warmup=DETECTOR_WARMUP, bins=ENGINE_BINS)


FACTORIES: dict[str, DetectorFactory] = {"forecast": forecast_detector,
                                         "ensemble": ensemble_detector,
                                         "fast": fast_detector}


def opened(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == "open"]


def false_alarms(seeds: Sequence[int], seconds: float, rate: float,
                 factory: DetectorFactory = default_detector) -> dict[str, Any]:
    per_scope: Counter[str] = Counter()
    examples = []
    started = time.perf_counter()
    for seed in seeds:
        records, _, _ = replay(seed=seed, seconds=seconds, rate=rate,
                               detector_factory=factory)
        for record in opened(records):
            per_scope[record["scope"]] += 1
            if len(examples) < 5:
                examples.append({k: record[k] for k in ("scope", "scope_id", "metric",
                                                        "observed", "explanation")})
    hours = len(seeds) * seconds / 3600
    return {"seeds": list(seeds), "simulated_s_per_seed": seconds, "rate": rate,
            "incidents": sum(per_scope.values()), "by_scope": dict(per_scope),
            "per_simulated_hour": round(sum(per_scope.values()) / hours, 3),
            "examples": examples, "wall_s": round(time.perf_counter() - started, 1)}


SCENARIO_SCOPE = {"bot_click_flood": "user", "viewer_drop": "room", "gift_fraud_burst": "room",
                  "checkout_outage": "room"}


def detection(seeds: Sequence[int], rate: float, span_s: float = 8.0,
              factory: DetectorFactory = default_detector) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, scope in SCENARIO_SCOPE.items():
        rows = []
        for seed in seeds:
            at = 40.0
            room = "room-2" if name == "viewer_drop" else "room-1"
            records, _, _ = replay(seed=seed, seconds=90.0, rate=rate,
                                     scenarios=[(at, name, None if name == "bot_click_flood"
                                                 else room, span_s)],
                                     detector_factory=factory)
            start = START_MS + int(at * 1000)
            mine = [r for r in records if r["scope"] == scope]
            if name == "bot_click_flood":
                mine = [r for r in mine if r["scope_id"].startswith("bot-")]
            elif scope == "room":
                mine = [r for r in mine if r["scope_id"] == room]
            opens = opened(mine)
            resolved = [r for r in mine if r["status"] == "resolved"]
            rows.append({
                "seed": seed, "opened": len(opens), "resolved": len(resolved),
                "metrics": sorted({r["metric"] for r in opens}),
                "other_incidents": len(opened(records)) - len(opens),
                "open_after_s": [round((r["ts"] - start) / 1000, 1) for r in opens],
                "resolved_after_s": [round((r["ts"] - start) / 1000, 1) for r in resolved],
            })
        out[name] = rows
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="7,8,9")
    parser.add_argument("--normal-s", type=float, default=1800.0)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--detector", choices=sorted(FACTORIES), default=DEFAULT_DETECTOR)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    factory = FACTORIES[args.detector]
    result = {"detector": args.detector,
              "false_alarms": false_alarms(seeds, args.normal_s, args.rate, factory),
              "detection": detection(seeds, args.rate, factory=factory)}
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
