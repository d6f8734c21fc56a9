"""Per-stage CPU of the engine's own work per event, on the batched handlers, no broker.

    python -m benchmarks.bench_stages [--events 30000] [--batch 200] [--repeats 3]

Simulator traffic (live events and clicks at the simulator's mix, 0.2 % bad records) goes
through the real :class:`~agents.rooms.pipeline.RoomHandler` and
:class:`~agents.users.pipeline.UserHandler` on the in-memory harness (:mod:`agents.testing`):
live-event batches to the room pipeline, its ``user-activity`` records to the user pipeline,
click batches to the user pipeline, as one worker's consumer would hand them over (records of
one partition per call). What Kafka and Faust cost is not here (see ``livepulse bench``): this
is the budget the engine's own Python spends per input event.

Prints the CPU µs per input event of the whole path (median of ``--repeats`` fresh runs,
the first half of each run as warm-up), then a cProfile of one more run charged to stages
(each stage's cumulative time of its entry functions, as a share of the profiled total,
times the unprofiled µs/event), and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time
from collections import defaultdict
from typing import Any

import orjson

from agents.testing import Harness
from streams.ingest import now_ms
from streams.outputs import partition_for
from streams.simulator import Simulator

PARTITIONS = 4

# stage -> (file suffix, function name) entry points; cumulative time, outermost first
STAGES: dict[str, list[tuple[str, str]]] = {
    "validate (decode + contract)": [("streams/ingest.py", "decode")],
    "room fold + anomaly notes": [("agents/rooms/pipeline.py", "apply"),
                                  ("agents/rooms/pipeline.py", "repeat")],
    "forward to user-activity (encode)": [("agents/users/activity.py", "forwarded")],
    "user-activity decode": [("agents/users/activity.py", "unbatch"),
                             ("streams/contracts.py", "to_record")],
    "profile (dedup + apply + advance)": [("agents/users/profile.py", "apply"),
                                          ("agents/users/profile.py", "is_duplicate"),
                                          ("agents/users/profile.py", "advance")],
    "profile view": [("agents/users/profile.py", "view")],
    "user anomaly notes": [("agents/anomalies/monitor.py", "note_user")],
    "propensity + leave risk": [("agents/models.py", "_score_propensity")],
    "recommender learn": [("online_models/recsys.py", "learn_one")],
    "recommender rank": [("online_models/recsys.py", "rank")],
    "promo decide": [("agents/promo/triggers.py", "on_event")],
    "outputs (encode + batch send)": [("agents/engine.py", "add_output"),
                                      ("streams/outputs.py", "flush")],
    "metrics": [("prometheus_client/metrics.py", "inc"),
                ("prometheus_client/metrics.py", "observe"),
                ("agents/stats.py", "observe_latency")],
}


def traffic(events: int, seed: int = 7) -> tuple[list[tuple[str, dict[str, Any]]],
                                                   list[list[Any]]]:
    """The catalog and ``events`` simulator records in batches of 200 (5k events/s of
    event time, ending now)."""
    sim = Simulator(seed=seed, rooms=8, users=max(2_000, events // 4), items=5_000,
                    bad_rate=0.002)
    start = now_ms() - (events // 200) * 40 - 1_000
    batches = [sim.next_events(start + i * 40, 200) for i in range(events // 200)]
    return sim.catalog_records(start), batches


def run(catalog: list[tuple[str, dict[str, Any]]], batches: list[list[Any]],
        batch_size: int) -> tuple[Harness, float, int]:
    """Feed everything; return the harness, CPU seconds of the second half, its events."""
    h = Harness(partitions=PARTITIONS)
    for item_id, item in catalog:
        h.catalog[item_id] = item
    half = len(batches) // 2
    cpu_start, counted = 0.0, 0

    async def feed() -> None:
        nonlocal cpu_start, counted
        for i, batch in enumerate(batches):
            if i == half:
                cpu_start = time.process_time()
            if i >= half:
                counted += sum(1 for r in batch if r.stream != "catalog")
            by_partition: dict[tuple[str, int], list[bytes]] = defaultdict(list)
            for rec in batch:
                if rec.stream == "catalog":
                    continue
                topic = "live-events" if rec.stream == "live" else "clicks"
                part = partition_for(rec.key.encode(), PARTITIONS)
                by_partition[(topic, part)].append(rec.value)
            for (topic, part), values in sorted(by_partition.items()):
                for start in range(0, len(values), batch_size):
                    await h.feed(topic, part, values[start:start + batch_size])
            await h.forward_activity()
            if i % 50 == 0:
                h.commit()
                h.producer.sent.clear()
                h._activity_fed = 0

    asyncio.run(feed())
    return h, time.process_time() - cpu_start, counted


def stage_shares(profile: pstats.Stats) -> dict[str, float]:
    stats = profile.stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())  # the outermost cumulative time
    shares: dict[str, float] = {}
    for stage, entries in STAGES.items():
        cumulative = 0.0
        for (file, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
            if any(file.endswith(suffix) and func == name for suffix, name in entries):
                cumulative += ct
        shares[stage] = cumulative / total if total else 0.0
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=200, help="records per handler call")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    catalog, batches = traffic(args.events)
    per_event = []
    for _ in range(args.repeats):
        _, cpu_s, counted = run(catalog, batches, args.batch)
        per_event.append(cpu_s * 1e6 / counted)
    us = statistics.median(per_event)
    profiler = cProfile.Profile()
    profiler.enable()
    run(catalog, batches, args.batch)
    profiler.disable()
    shares = stage_shares(pstats.Stats(profiler))
    print(f"events {args.events}, batch {args.batch}: CPU µs/event (median of "
          f"{args.repeats}, second half of each run) {us:.1f} "
          f"[{', '.join(f'{v:.1f}' for v in per_event)}] -> {1e6 / us:,.0f} events/s/core")
    print("| stage | share of profiled time | µs/event |")
    print("|---|---|---|")
    for stage, share in sorted(shares.items(), key=lambda kv: -kv[1]):
        print(f"| {stage} | {share * 100:.1f} % | {share * us:.1f} |")
    rest = max(0.0, 1.0 - sum(shares.values()))
    print(f"| other (glue, loops, harness) | {rest * 100:.1f} % | {rest * us:.1f} |")
    print(orjson.dumps({"cpu_us_per_event": round(us, 2), "runs": per_event,
                        "stages_us": {k: round(v * us, 2) for k, v in shares.items()}}).decode())


if __name__ == "__main__":
    main()
