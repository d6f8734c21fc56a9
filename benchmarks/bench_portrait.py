"""Cost of the audience portrait (``agents.rooms.portrait``): the extra hop's traffic and the
room's work.

    python -m benchmarks.bench_portrait [--events 20000] [--repeats 5]

1. Simulator traffic (its live events, catalog first) through the in-memory harness
   (:class:`agents.testing.Harness`: room pipeline -> ``user-activity`` -> user pipeline ->
   ``room-audience`` -> room pipeline) in batches of 500 per partition: ``room-audience``
   items and records per live event, and the share of present viewers the rooms hold a
   summary of at the end.
   Also the saved room states' size (JSON) per present viewer and the portrait's share.
2. The room's side with :mod:`timeit`: :meth:`AudiencePortrait.set` of one summary, and
   :meth:`AudiencePortrait.view` (once per insight) with 1,000 and 100,000 viewers present.

Prints medians of ``--repeats`` runs, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import timeit
from collections import defaultdict

import orjson

from agents.rooms.portrait import AudiencePortrait
from agents.testing import Harness
from streams.ingest import now_ms
from streams.outputs import partition_for
from streams.simulator import Simulator

BATCH = 500
LIFECYCLES = ("new", "active", "engaged", "loyal", "at_risk", "dormant")
TAGS = ("bargain_hunter", "big_spender", "high_intent", "engaged_viewer", "gifter")


def hop(events: int) -> dict[str, float]:
    h = Harness()
    sim = Simulator(seed=7, rooms=8, users=5_000, items=400, live_share=1.0,
                    catalog_update_share=0.0)
    t = now_ms()
    catalog = sim.catalog_records(t)
    asyncio.run(h.feed("catalog", 0, [orjson.dumps(v) for _, v in catalog],
                       keys=[k.encode() for k, _ in catalog]))
    parts = h.settings.partitions
    live = 0
    step = 0
    while live < events:
        by_part: dict[int, list[bytes]] = defaultdict(list)
        for rec in sim.next_events(t + step * 1_000, BATCH):
            if rec.stream == "live" and rec.bad is None:
                by_part[partition_for(rec.key.encode(), parts)].append(rec.value)
                live += 1
        step += 1
        for part, values in by_part.items():
            asyncio.run(h.feed("live-events", part, values))
        asyncio.run(h.forward_activity())
        asyncio.run(h.forward_audience())
    raw = [s for s in h.iter_sent() if s.topic == h.names.room_audience]
    items = sum(len(orjson.loads(s.value)) for s in raw)
    rooms = h.rooms.pipeline.rooms.values()
    present = sum(len(r.state.viewers) for r in rooms)
    profiled = sum(len(r.state.portrait.summaries) for r in rooms)
    moves = sum(sum(int(v[1]) for v in r.state.portrait.next_rooms.rows.values())
                for r in rooms)
    state_bytes = sum(len(orjson.dumps(r.state.to_dict())) for r in rooms)
    portrait_bytes = sum(len(orjson.dumps(r.state.portrait.to_dict())) for r in rooms)
    return {"live_events": live, "audience_items_per_live_event": round(items / live, 3),
            "audience_records_per_live_event": round(len(raw) / live, 4),
            "audience_bytes_per_live_event": round(sum(len(s.value) for s in raw) / live, 1),
            "present_viewers": present, "profiled_share": round(profiled / present, 3)
            if present else 0.0, "moves": moves,
            "room_state_bytes_per_present_viewer": round(state_bytes / max(present, 1), 1),
            "portrait_share_of_room_state": round(portrait_bytes / state_bytes, 3)}


def filled(viewers: int) -> AudiencePortrait:
    p = AudiencePortrait()
    for i in range(viewers):
        p.set(f"u{i}", {"l": LIFECYCLES[i % 6], "t": [TAGS[i % 5], TAGS[i % 3]],
                        "c": f"cat{i % 12}", "b": f"brand{i % 40}",
                        "p": ("budget", "mid", "premium", "luxury")[i % 4],
                        "i": ("high", "medium", "low", "unknown")[i % 4]})
    return p


def micro(repeats: int) -> dict[str, float]:
    out = {}
    p = filled(1_000)
    summary = {"l": "new", "t": ["gifter"], "c": "cat1", "b": "brand1", "p": "mid", "i": "low"}
    n = 20_000
    runs = timeit.repeat(lambda: p.set("u1", summary), number=n, repeat=repeats)
    out["set_us"] = round(statistics.median(runs) / n * 1e6, 2)
    for viewers in (1_000, 100_000):
        p = filled(viewers)
        runs = timeit.repeat(lambda p=p, v=viewers: p.view(v, v // 3, v * 2, 600_000),
                             number=200, repeat=repeats)
        out[f"view_{viewers}_us"] = round(statistics.median(runs) / 200 * 1e6, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    result = {**hop(args.events), **micro(args.repeats)}
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
