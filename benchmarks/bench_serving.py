"""Profile read latency for the rest of the engine and for ad systems (target: < 1 ms).

Writes ``--users`` realistic profiles through the real :class:`RedisSink`, then times random
single-profile reads, side by side:

* ``redis_hgetall``: one raw ``HGETALL lp:user:{id}`` (what any Redis client does);
* ``redis_sink_read``: the same plus decoding every field back to JSON types;
* ``in_process_view``: what a worker owning the user does (table dict -> ``view()``).

Uses ``--redis-url`` or starts a private redis-server. Prints one JSON object as the last line.

    python -m benchmarks.bench_serving --users 20000 --reads 5000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from agents.sinks.embedded_redis import RedisServer
from agents.sinks.redis import RedisSink
from agents.users.profile import UserProfile
from streams.contracts import ClickEvent, LiveEvent
from streams.simulator import Simulator

NOW = 1_790_000_000_000


def build_profiles(users: int, seed: int) -> dict[str, dict[str, Any]]:
    """Stored profiles after a few dozen realistic live and click events each."""
    sim = Simulator(seed=seed, rooms=10, users=1000, items=2000)
    catalog = {key: value for key, value in sim.catalog_records(NOW)}
    items = list(catalog)
    rng = random.Random(seed)
    stored = {}
    for u in range(users):
        profile = UserProfile(f"user-{u}")
        ts = NOW - rng.randrange(30 * 86_400_000)
        for step in range(rng.randrange(5, 40)):
            ts += rng.randrange(1_000, 60_000)
            item = rng.choice(items)
            if step % 3:
                kind = rng.choice(("view", "view", "click", "add_to_cart", "purchase"))
                profile.apply(ClickEvent(f"c{u}-{step}", kind, ts, profile.user_id, "s1",
                                         item_id=item, price=catalog[item]["price"]),
                              catalog.get)
            else:
                kind = rng.choice(("join", "comment", "like", "gift", "leave"))
                profile.apply(LiveEvent(f"l{u}-{step}", kind, ts, "room-1", profile.user_id,
                                        text="love it" if kind == "comment" else None,
                                        amount=10.0 if kind == "gift" else None), catalog.get)
        stored[profile.user_id] = profile.to_dict()
    return stored


def summary_us(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50_us": round(statistics.median(ordered) * 1e6, 1),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1] * 1e6, 1),
            "mean_us": round(statistics.fmean(ordered) * 1e6, 1)}


async def run(url: str, users: int, reads: int, seed: int) -> dict[str, Any]:
    stored = build_profiles(users, seed)
    sink = RedisSink(url, ttl_s=3600, namespace="lpbench")
    for user, saved in stored.items():
        sink.add("user", user, UserProfile.from_dict(saved).view(NOW))
    await sink.flush()
    raw = aioredis.Redis.from_url(url)
    rng = random.Random(seed + 1)
    picks = [f"user-{rng.randrange(users)}" for _ in range(reads)]
    timings: dict[str, list[float]] = {"redis_hgetall": [], "redis_sink_read": [],
                                       "in_process_view": []}
    try:
        for user in picks:
            started = time.perf_counter()
            await raw.hgetall(sink.key("user", user))
            timings["redis_hgetall"].append(time.perf_counter() - started)
            started = time.perf_counter()
            await sink.read("user", user)
            timings["redis_sink_read"].append(time.perf_counter() - started)
            started = time.perf_counter()
            UserProfile.from_dict(stored[user]).view(NOW)
            timings["in_process_view"].append(time.perf_counter() - started)
        sizes = [len(orjson.dumps(saved)) for saved in stored.values()]
        result: dict[str, Any] = {
            "users": users, "reads": reads,
            "stored_profile_bytes_avg": round(statistics.fmean(sizes), 1),
            **{name: summary_us(samples) for name, samples in timings.items()},
        }
    finally:
        keys = [key async for key in raw.scan_iter(match="lpbench:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await raw.delete(*keys[start:start + 1000])
        await raw.aclose()
        await sink.stop()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--reads", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--redis-url", default="", help="default: a private redis-server")
    args = parser.parse_args(argv)
    server = None if args.redis_url else RedisServer()
    url = args.redis_url or server.start()  # type: ignore[union-attr]
    try:
        result = asyncio.run(run(url, args.users, args.reads, args.seed))
    finally:
        if server is not None:
            server.stop()
    print(orjson.dumps(result).decode())
    return result


if __name__ == "__main__":
    main()
