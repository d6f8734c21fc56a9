"""Next-item recommender at scale: learn one click + rank top-20 latency, and memory.

    python -m benchmarks.bench_recsys [--items 100000] [--sessions 1000000] [--measure 20000]
        [--k 20] [--seed 1] [--concurrent 64] [--max-sessions N] [--pickle]

A seeded generator produces storefront sessions over a catalog of ``--items`` items in
categories of contiguous ids (200 items each, one brand per 50 items, 2 % out of stock, all
given to ``set_item``): session lengths 1 + exponential (mean 5), first item Zipf-like
popular, each next click a re-view (20 %), a related item within +-20 ids of the same category
(60 %) or another popular item; 30 % of sessions belong to one of 200 k users; 3 % of clicks
are ``add_to_cart`` and 1 % ``purchase``. ``--concurrent`` sessions are open at once and
interleave, about 0.5 s of event time apart.

The model (:class:`online_models.recsys.HybridRecommender`, default caps unless overridden)
learns ``--sessions`` sessions as they are generated (``warm_learn_events_per_s`` counts
``learn_one`` time only); then ``--measure`` events of further sessions are timed, each one
``learn_one`` followed by one ``rank`` for the same session (a quarter of them inside a live
room with 30 room items), timed together with ``time.perf_counter_ns`` (wall clock: what a
caller waits) and ``time.thread_time_ns`` (CPU time of this thread: the same work without the
time the OS gave other processes; ``learn_rank_cpu_us``). The 1-minute load average before and
after the measured phase is reported next to the CPU count. CPython's cyclic GC is left on, as
in a worker; collections during the measured phase are counted.

The last stdout line is one JSON document: latency percentiles in microseconds (learn+rank,
rank alone, learn alone), warm-up throughput, RSS (VmRSS / VmHWM, MiB) and the model's
``stats()`` (sizes next to caps).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import pickle
import sys
import time
from collections.abc import Iterator
from random import Random
from typing import Any

import orjson

from online_models.recsys import HybridRecommender

CATEGORY_SIZE = 200
BRAND_SIZE = 50
USERS = 200_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed clock keeps runs reproducible
STEP_MS = 500


def rss_mib() -> dict[str, float]:
    """VmRSS and VmHWM of this process in MiB (Linux ``/proc/self/status``)."""
    out = {"rss": 0.0, "hwm": 0.0}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out["rss" if name == "VmRSS" else "hwm"] = round(int(value.split()[0]) / 1024, 1)
    return out


class SessionGenerator:
    """Seeded interleaved click sessions over a catalog of ``items`` items."""

    def __init__(self, items: int, seed: int, concurrent: int = 64) -> None:
        self.n_items = items
        self.rng = Random(seed)
        order = list(range(items))
        self.rng.shuffle(order)
        self.by_popularity = order  # earlier = more popular
        self.concurrent = concurrent
        self.started = 0  # sessions started so far (ids stay unique across calls)
        self.ts = T0

    def catalog(self) -> Iterator[tuple[str, dict[str, Any]]]:
        rng = Random(self.rng.random())
        for i in range(self.n_items):
            yield f"i{i}", {"category": f"c{i // CATEGORY_SIZE}", "brand": f"b{i // BRAND_SIZE}",
                            "price": round(5 + 200 * rng.random(), 2),
                            "in_stock": rng.random() >= 0.02}

    def _popular(self) -> int:
        u = self.rng.random()
        return self.by_popularity[int(self.n_items * u * u * u)]

    def _session(self) -> tuple[list[int], str | None]:
        rng = self.rng
        length = 1 + int(rng.expovariate(0.25))
        clicks = [self._popular()]
        while len(clicks) < length:
            u = rng.random()
            if u < 0.2:
                clicks.append(clicks[rng.randrange(len(clicks))])
            elif u < 0.8:
                current = clicks[-1]
                base = current - current % CATEGORY_SIZE
                size = min(CATEGORY_SIZE, self.n_items - base)
                clicks.append(base + (current - base + rng.randint(-20, 20)) % size)
            else:
                clicks.append(self._popular())
        user = f"u{rng.randrange(USERS)}" if rng.random() < 0.3 else None
        return clicks, user

    def events(self, sessions: int) -> Iterator[dict[str, Any]]:
        """Click events of ``sessions`` more sessions, ``concurrent`` of them interleaved."""
        rng = self.rng
        last = self.started + sessions
        open_sessions: list[list[Any]] = []  # [session id, clicks, next index, user]
        while self.started < last or open_sessions:
            while len(open_sessions) < self.concurrent and self.started < last:
                clicks, user = self._session()
                open_sessions.append([f"s{self.started}", clicks, 0, user])
                self.started += 1
            slot = rng.randrange(len(open_sessions))
            session = open_sessions[slot]
            session_id, clicks, index, user = session
            u = rng.random()
            kind = "purchase" if u < 0.01 else "add_to_cart" if u < 0.04 else "click"
            self.ts += rng.randrange(1, 2 * STEP_MS)
            yield {"session_id": session_id, "item_id": f"i{clicks[index]}", "ts": self.ts,
                   "user_id": user, "kind": kind}
            session[2] = index + 1
            if index + 1 == len(clicks):
                open_sessions[slot] = open_sessions[-1]
                open_sessions.pop()


def percentiles(values_ns: list[int]) -> dict[str, float]:
    """p50 / p99 / p99.9 / max in microseconds."""
    ordered = sorted(values_ns)
    if not ordered:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1000, 1)

    return {"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": at(1.0)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--sessions", type=int, default=1_000_000,
                   help="sessions generated and learned (the measured events included)")
    p.add_argument("--measure", type=int, default=20_000, help="timed learn+rank events")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--concurrent", type=int, default=64)
    p.add_argument("--max-sessions", type=int, help="model cap (default: the model's)")
    p.add_argument("--max-items", type=int, help="model cap (default: the model's)")
    p.add_argument("--params", type=orjson.loads, default=None,
                   help="other HybridRecommender keyword arguments as JSON")
    p.add_argument("--pickle", action="store_true", help="also time a pickle snapshot")
    p.add_argument("--progress", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)

    caps = {name: value for name, value in (("max_sessions", args.max_sessions),
                                             ("max_items", args.max_items)) if value}
    params = {**(args.params or {}), **caps}
    model = HybridRecommender(seed=args.seed, **params)
    generator = SessionGenerator(args.items, args.seed, args.concurrent)
    rss_start = rss_mib()
    for item_id, facts in generator.catalog():
        model.set_item(item_id, **facts)

    started = time.perf_counter()
    learn_s = 0.0
    warm_events = 0
    clock_s = time.perf_counter
    for event in generator.events(args.sessions):
        t0 = clock_s()
        model.learn_one(event)
        learn_s += clock_s() - t0
        warm_events += 1
        if args.progress and warm_events % 500_000 == 0:
            print(f"warm {warm_events} events {time.perf_counter() - started:.0f}s "
                  f"{rss_mib()}", file=sys.stderr, flush=True)
    warm_s = time.perf_counter() - started
    rss_warm = rss_mib()
    # the measured events come from further sessions, interleaved like the warm-up ones
    timed = list(itertools.islice(generator.events(args.measure), args.measure))

    rooms = [[f"i{generator._popular()}" for _ in range(30)] for _ in range(8)]
    both_ns: list[int] = []
    rank_ns: list[int] = []
    learn_ns: list[int] = []
    cpu_ns: list[int] = []
    gc_before = sum(s["collections"] for s in gc.get_stats())
    load_before = os.getloadavg()[0]
    clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    for n, event in enumerate(timed):
        context: dict[str, Any] = {"session_id": event["session_id"], "ts": event["ts"],
                                   "user_id": event["user_id"]}
        if n % 4 == 0:
            context["room_items"] = rooms[n % len(rooms)]
        c0 = cpu_clock()
        t0 = clock()
        model.learn_one(event)
        t1 = clock()
        top = model.rank(context, k=args.k)
        t2 = clock()
        cpu_ns.append(cpu_clock() - c0)
        learn_ns.append(t1 - t0)
        rank_ns.append(t2 - t1)
        both_ns.append(t2 - t0)
        if not top:
            raise RuntimeError(f"empty ranking for {context}")
    gc_during = sum(s["collections"] for s in gc.get_stats()) - gc_before

    result: dict[str, Any] = {
        "items": args.items,
        "sessions_seen": generator.started,
        "events_learned": model.events_learned,
        "measured_events": len(timed),
        "k": args.k,
        "seed": args.seed,
        "params": params,
        "warm_s": round(warm_s, 1),
        "warm_learn_events_per_s": round(warm_events / learn_s) if learn_s else 0,
        "learn_rank_us": percentiles(both_ns),
        "learn_rank_cpu_us": percentiles(cpu_ns),
        "rank_us": percentiles(rank_ns),
        "learn_us": percentiles(learn_ns),
        "gc_collections_during_measure": gc_during,
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2), os.cpu_count()],
        "rss_mib": {"start": rss_start["rss"], "after_warm": rss_warm["rss"],
                    "end": rss_mib()["rss"], "peak": rss_mib()["hwm"]},
        "model": model.stats(),
    }
    if args.pickle:
        t0 = time.perf_counter()
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        dump_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pickle.loads(blob)
        result["pickle"] = {"mib": round(len(blob) / 2**20, 1), "dump_s": round(dump_s, 2),
                            "load_s": round(time.perf_counter() - t0, 2)}
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
