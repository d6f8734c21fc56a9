"""Pin next on simulator traffic: the engine's suggestion vs the host's own pin (no broker).

    python -m benchmarks.bench_pin_next [--seeds 1,2,3] [--seconds 1200] [--rate 120]

The simulator's records (catalog, live events, storefront clicks) are folded through the
worker's own handlers on the in-memory harness (:class:`agents.testing.Harness`: room
pipeline, user pipeline with its profiles and propensity model, the ``viewer-interest``
table), ``--rate`` records per simulated second. At each host pin after ``--warmup-s``, just
before the pin is folded in, the room's pin next is computed as the worker would
(:class:`agents.rooms.pin_next.PinNext` on the room's state) and three items are scored
with the simulator's own purchase model, used here only as the oracle:

* the host's pin (the simulator's host draws it uniformly from the room's products),
* the engine's top suggestion,
* the best item of the room's product list by the oracle's expected GMV (a ceiling no
  engine reaches).

The oracle: while an item is pinned, a product click on it comes from viewer *v* of those
present with the simulator's pick weight ``w_v = min(a exp(0.6 z + 0.7 c - 0.4 m), 3)`` and
turns into a purchase with ``p_v = 0.23 2sigma(1.2 z) exp(0.5 c - 0.3 m) * 0.31
2sigma(1.2 z)`` (0 when out of stock); so the expected purchases per click on the item are
``sum w_v p_v / sum w_v``. The room's click rate does not depend on the item, so
purchases within N minutes of the pin per viewer present = (clicks on the pin in those N
minutes / viewers) x that figure: the ratio suggestion / host is the same for every N and
is what the figures compare. Expected GMV per click multiplies by the price.

Prints one JSON line: per seed the mean over pins of expected purchases and GMV per 100
clicks for each of the three, and the medians over seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections import defaultdict
from typing import Any

import orjson

from agents.testing import Harness
from streams.outputs import partition_for
from streams.simulator import Simulator

PARTITIONS = 4


def _two_sigmoid(x: float) -> float:
    return 2.0 / (1.0 + math.exp(-x))


def oracle(sim: Simulator, room_id: str, item_id: str) -> float:
    """Expected purchases per product click on ``item_id`` pinned in ``room_id`` now."""
    room = sim._room_by_id[room_id]
    index = sim._item_index[item_id]
    item = sim._items[index]
    if not item.in_stock:
        return 0.0
    log_price = sim._log_price(index)
    weights = buys = 0.0
    for viewer in room.audience.state.values():
        traits = viewer.traits
        c, m = traits.fit(item.category, log_price)
        w = min(traits.activity * math.exp(0.6 * traits.intent + 0.7 * c - 0.4 * m), 3.0)
        p = (0.23 * _two_sigmoid(1.2 * traits.intent) * math.exp(0.5 * c - 0.3 * m)
             * 0.31 * _two_sigmoid(1.2 * traits.intent))
        weights += w
        buys += w * p
    return buys / weights if weights else 0.0


async def run_seed(seed: int, seconds: int, rate: int, warmup_s: int, rooms: int, users: int,
                   items: int) -> dict[str, Any]:
    sim = Simulator(seed=seed, rooms=rooms, users=users, items=items, bad_rate=0.0)
    sim._item_index = {item.item_id: i for i, item in enumerate(sim._items)}  # type: ignore[attr-defined]
    h = Harness(partitions=PARTITIONS)
    start = h.now_ms() - (seconds + 120) * 1000
    await h.feed("catalog", 0, [orjson.dumps(body) for _, body in sim.catalog_records(start)])
    pipeline = h.rooms.pipeline
    price = {item.item_id: item.price for item in sim._items}
    picks: dict[str, list[float]] = defaultdict(list)
    gmv: dict[str, list[float]] = defaultdict(list)
    same = pins = 0
    for second in range(seconds):
        now = start + second * 1000
        batches: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for record in sim.next_events(now, rate):
            if record.stream == "live" and second >= warmup_s \
                    and orjson.loads(record.value)["type"] == "product_pin":
                # flush what came before, then score the engine's suggestion vs the pin
                for (topic, part), values in batches.items():
                    await h.feed(topic, part, values)
                batches.clear()
                await h.forward_activity()
                body = orjson.loads(record.value)
                room = pipeline.rooms.get(body["room_id"])
                if room is not None:
                    room.state.expire_viewers(pipeline.viewer_timeout_ms)
                    suggested = pipeline.pin_next(room.state)
                    if suggested:
                        room_id, host = body["room_id"], body["item_id"]
                        top = suggested[0]["item_id"]
                        best = max(sim.room_products(room_id),
                                   key=lambda i, r=room_id: oracle(sim, r, i) * price[i])
                        chosen = (("host", host), ("pin_next", top), ("oracle_best", best))
                        for name, item in chosen:
                            per_click = oracle(sim, room_id, item)
                            picks[name].append(100 * per_click)
                            gmv[name].append(100 * per_click * price[item])
                        pins += 1
                        same += top == host
            topic = {"live": "live-events", "clicks": "clicks", "catalog": "catalog"}[
                record.stream]
            batches[(topic, partition_for(record.key.encode(), PARTITIONS))].append(
                record.value)
        for (topic, part), values in batches.items():
            await h.feed(topic, part, values)
        await h.forward_activity()
    out: dict[str, Any] = {"seed": seed, "pins": pins, "suggestion_was_host_pin": same}
    for name in ("host", "pin_next", "oracle_best"):
        out[f"{name}_purchases_per_100_clicks"] = round(statistics.fmean(picks[name]), 3) \
            if picks[name] else None
        out[f"{name}_gmv_per_100_clicks"] = round(statistics.fmean(gmv[name]), 1) \
            if gmv[name] else None
    if picks["host"]:
        out["conversion_ratio"] = round(out["pin_next_purchases_per_100_clicks"]
                                        / out["host_purchases_per_100_clicks"], 3)
        out["gmv_ratio"] = round(out["pin_next_gmv_per_100_clicks"]
                                 / out["host_gmv_per_100_clicks"], 3)
    out["interests_published"] = len(h.interests)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--seconds", type=int, default=1200, help="simulated seconds per seed")
    parser.add_argument("--warmup-s", type=int, default=300,
                        help="pins before this are not scored (profiles still empty)")
    parser.add_argument("--rate", type=int, default=120, help="records per simulated second")
    parser.add_argument("--rooms", type=int, default=4)
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--items", type=int, default=400)
    opts = parser.parse_args()
    started = time.perf_counter()
    runs = [asyncio.run(run_seed(int(s), opts.seconds, opts.rate, opts.warmup_s, opts.rooms,
                                 opts.users, opts.items)) for s in opts.seeds.split(",")]
    medians = {key: statistics.median(run[key] for run in runs)
               for key in runs[0] if key != "seed" and runs[0][key] is not None}
    print(orjson.dumps({"bench": "pin_next", "options": vars(opts), "runs": runs,
                        "median": medians,
                        "wall_s": round(time.perf_counter() - started, 1)}).decode())


if __name__ == "__main__":
    main()
