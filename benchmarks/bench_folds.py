"""Per-event cost of the pure state folds: room state (+ anomaly notes) and live user profiles.

    python -m benchmarks.bench_folds [--events 30000] [--rate 2000] [--repeats 5] [--seed 7]

Replays simulator traffic (seed 7, 6 rooms, 100,000 users, 2,000 items, like
``livepulse bench``), generated and decoded to typed records once, through the per-event
state work of the two pipelines without Kafka or Faust:

* rooms: :meth:`RoomState.already_applied` + :meth:`RoomState.is_retry` (``room.repeat``),
  :meth:`RoomState.apply` (``room.apply``, also broken down per event type) and
  :meth:`AnomalyMonitor.note_live` (``room.note``);
* users (live events, except pins, forwarded as the room pipeline does, and clicks): a
  :class:`UserProfile` kept live in memory per user, :meth:`UserProfile.is_duplicate`
  (``user.is_duplicate``), :meth:`AnomalyMonitor.note_user` (``user.note``),
  :meth:`UserProfile.apply` + :meth:`UserProfile.advance` (``user.apply``) and
  :meth:`UserProfile.view` (``user.view``). ``user.to_dict`` (what a commit pays per dirty
  key) and ``user.from_dict`` are timed apart, once per event, for reference.

Each repeat starts from empty state (and a fresh room sentiment model), folds the first
``--warmup`` share of the events untimed and times each call with ``perf_counter_ns`` over
the rest (the cyclic GC stays on; the input records are frozen out of it). Prints µs per
event (per event of the stage's pipeline) per stage, the median (and
the minimum) of the repeats, and one JSON document as the last line.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

import orjson

from agents.anomalies.monitor import AnomalyMonitor
from agents.rooms import state as room_state_module
from agents.rooms.state import RoomState
from agents.users.profile import UserProfile
from online_models.sentiment import NgramSentiment
from streams.contracts import CLICK_EVENT, LIVE_EVENT, to_record
from streams.simulator import Simulator

PARTITIONS = 4
FIXED_NOW_MS = 1_767_225_600_000  # 2026-01-01: a fixed clock keeps runs reproducible


def generate(n: int, rate: float, seed: int) -> tuple[list[tuple[bool, Any]], dict[str, Any]]:
    """``n`` typed records (``(is_live, record)``) and the catalog they refer to."""
    sim = Simulator(seed=seed, rooms=6, users=100_000, items=2_000, bad_rate=0.0)
    start = FIXED_NOW_MS - int(n / rate * 1000) - 2000
    catalog: dict[str, Any] = dict(sim.catalog_records(start))
    out: list[tuple[bool, Any]] = []
    now = start
    step_ms = max(1, int(100 / rate * 1000))
    while len(out) < n:
        for r in sim.next_events(now, 100):
            if r.stream == "catalog":
                catalog[r.key] = orjson.loads(r.value)
            elif r.stream == "live":
                out.append((True, to_record(LIVE_EVENT, orjson.loads(r.value))))
            else:
                out.append((False, to_record(CLICK_EVENT, orjson.loads(r.value))))
        now += step_ms
    return out[:n], catalog


def run_once(records: list[tuple[bool, Any]], catalog: dict[str, Any],
             warmup: int) -> tuple[dict[str, float], dict[str, int]]:
    """Fold ``records`` into fresh state; (ns per stage, events per pipeline) after warm-up."""
    if hasattr(room_state_module, "_sentiment"):
        room_state_module._sentiment = NgramSentiment()
    rooms: dict[str, RoomState] = {}
    profiles: dict[str, UserProfile] = {}
    monitor = AnomalyMonitor(system_id="bench", clock=lambda: FIXED_NOW_MS)
    lookup = catalog.get
    ns: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    pc = time.perf_counter_ns

    def user_side(record: Any, source: str, offset: int, live: bool, timed: bool) -> None:
        user = record.user_id
        profile = profiles.get(user)
        t0 = pc()
        if profile is None:
            profile = profiles[user] = UserProfile(user)
        elif profile.is_duplicate(record.event_id, source, offset):
            return
        t1 = pc()
        monitor.note_user(record, live=live)
        t2 = pc()
        profile.apply(record, lookup)
        profile.advance(source, offset)
        t3 = pc()
        profile.view(profile.updated_at)
        t4 = pc()
        if not timed:
            return
        saved = profile.to_dict()
        t5 = pc()
        UserProfile.from_dict(saved)
        t6 = pc()
        ns["user.is_duplicate"] += t1 - t0
        ns["user.note"] += t2 - t1
        ns["user.apply"] += t3 - t2
        ns["user.view"] += t4 - t3
        ns["user.to_dict"] += t5 - t4
        ns["user.from_dict"] += t6 - t5
        counts["user"] += 1

    for i, (live, record) in enumerate(records):
        timed = i >= warmup
        partition = i % PARTITIONS
        if live:
            room = rooms.get(record.room_id)
            if room is None:
                room = rooms[record.room_id] = RoomState(record.room_id)
            t0 = pc()
            if room.already_applied(i, partition) or room.is_retry(record.event_id):
                continue
            t1 = pc()
            room.apply(record, i, partition)
            t2 = pc()
            monitor.note_live(record)
            t3 = pc()
            if timed:
                ns["room.repeat"] += t1 - t0
                ns["room.apply"] += t2 - t1
                ns["room.note"] += t3 - t2
                ns[f"room.apply[{record.type}]"] += t2 - t1
                counts[f"room.apply[{record.type}]"] += 1
                counts["room"] += 1
            if record.type != "product_pin":
                user_side(record, f"l{partition}", i, True, timed)
        else:
            user_side(record, f"c{partition}", i, False, timed)
    return ns, counts


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events per second")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=0.3, help="untimed share of events")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    records, catalog = generate(args.events, args.rate, args.seed)
    n_live = sum(live for live, _ in records)
    print(f"generated {len(records)} events ({n_live} live) in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    gc.collect()
    gc.freeze()  # the replayed input is not the worker's: keep it out of the cyclic GC's scans
    warmup = int(len(records) * args.warmup)
    per_repeat: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = {}
    for _ in range(args.repeats):
        gc.collect()
        ns, counts = run_once(records, catalog, warmup)
        for stage, total in ns.items():
            pipeline = stage.split(".")[0] if "[" not in stage else stage
            per_repeat[stage].append(total / 1e3 / max(1, counts[pipeline]))
        per_repeat["room.total"].append(
            sum(ns[s] for s in ("room.repeat", "room.apply", "room.note"))
            / 1e3 / max(1, counts["room"]))
        per_repeat["user.dedup+apply"].append(
            sum(ns[s] for s in ("user.is_duplicate", "user.apply")) / 1e3 / max(1, counts["user"]))
        per_repeat["user.total(live object)"].append(
            sum(ns[s] for s in ("user.is_duplicate", "user.note", "user.apply", "user.view"))
            / 1e3 / max(1, counts["user"]))
    result = {stage: round(statistics.median(values), 2)
              for stage, values in sorted(per_repeat.items())}
    best = {stage: round(min(values), 2) for stage, values in sorted(per_repeat.items())}
    print(f"{'stage':32s} {'median':>8s} {'min':>8s}  µs/event over {args.repeats} repeats "
          f"({counts.get('room', 0)} room, {counts.get('user', 0)} user events timed)")
    for stage, value in result.items():
        count = counts.get(stage)
        extra = f"  ({count} events)" if count else ""
        print(f"{stage:32s} {value:8.2f} {best[stage]:8.2f}{extra}")
    document = {"benchmark": "bench_folds", "events": len(records), "live": n_live,
                "rate": args.rate, "seed": args.seed, "repeats": args.repeats,
                "warmup": warmup, "us_per_event": result, "us_per_event_min": best}
    print(orjson.dumps(document).decode())
    return document


if __name__ == "__main__":
    main()
