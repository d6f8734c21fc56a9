"""Online user profiles at scale: serialized size, fold throughput and RSS per Faust store.

    python -m benchmarks.bench_profiles [--users 1000000] [--events-per-user 6]
        [--store memory|rocksdb|both|all] [--partitions 4] [--seed 1] [--parallel]

Synthetic traffic: a seeded generator of realistic ``LiveEvent``/``ClickEvent`` records over
the simulator's catalog and rooms (``Simulator.catalog_records``, ``room_products``). The
simulator itself is too slow to reach a million distinct users (its viewers stay in rooms:
1 M events touch ~120 k users at ~70 k events/s). Each user gets a heavy-tailed number of
events (lognormal, mean ``--events-per-user``) in live-watch and storefront sessions spread
over 90 days; blocks of 2,000 users are interleaved in event time. Generation time is
reported apart from the fold and runs with the cyclic GC paused.

Each store runs in its own subprocess so RSS figures are independent. Events go through
the agent's path: ``store.get(user)`` -> :func:`agents.users.profile.fold_profile` ->
``store[user] = profile``, on the real Faust store classes (``faust.stores.memory.Store``
holds the dicts as they are; ``faust.stores.rocksdb.Store`` with the rocksdict driver
serialises them with the app's orjson codec), obtained from a minimal ``faust.App`` table
as the worker builds them; a stand-in current event gives the store its partition, as a
stream would. ``all`` adds ``memory-bytes``: the memory store holding orjson bytes (which
costs far more RSS than the bytes themselves: heap fragmentation from orjson's
over-allocated output buffers).

``gc_s`` is the time CPython's cyclic GC took during the fold (a worker pays it too: it grows
with the number of profile dicts a memory store holds).

Prints progress to stderr (``--progress``) and one JSON document as the last line of stdout.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import weakref
import zlib
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata
from random import Random
from typing import Any

import orjson

from agents.users.profile import UserProfile, fold_profile
from streams.contracts import ClickEvent, LiveEvent
from streams.simulator import COMMENTS, GIFT_AMOUNTS, GIFT_WEIGHTS, Simulator

T_END = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed clock keeps runs reproducible
WINDOW_MS = 90 * 86_400_000
BLOCK_USERS = 2_000
GAP_MEAN_MS = 25_000  # mean time between a user's events within a session
STORES = ("memory", "rocksdb", "memory-bytes")

LIVE_KINDS = ("like", "comment", "gift", "share", "follow", "product_click")
LIVE_KIND_WEIGHTS = (0.50, 0.16, 0.03, 0.02, 0.02, 0.10)
ALL_COMMENTS = tuple(text for texts in COMMENTS.values() for text in texts)


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, total = [], 0.0
    for weight in weights:
        total += weight
        out.append(total)
    return [c / total for c in out]


def rss_kib() -> dict[str, int]:
    """VmRSS and VmHWM of this process, KiB (Linux ``/proc/self/status``)."""
    out = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":", 1)
                out[name] = int(value.split()[0])
    return {"rss": out.get("VmRSS", 0), "hwm": out.get("VmHWM", 0)}


class TrafficGenerator:
    """Seeded, per-user live and click sessions over the simulator's catalog and rooms."""

    def __init__(self, seed: int, items: int, rooms: int) -> None:
        sim = Simulator(seed=seed, rooms=rooms, users=1000, items=items)
        self.catalog: dict[str, dict[str, Any]] = dict(sim.catalog_records(T_END - WINDOW_MS))
        rng = Random(seed)
        ranked = list(self.catalog)
        rng.shuffle(ranked)  # popularity order: earlier = more popular
        self.popular = ranked
        self.by_category: dict[str, list[str]] = {}
        for item_id in ranked:
            self.by_category.setdefault(self.catalog[item_id]["category"], []).append(item_id)
        self.categories = sorted(self.by_category)
        self.rooms = sim.room_ids
        self.room_items = {room: sim.room_products(room) for room in self.rooms}
        self.live_cum = _cumulative(LIVE_KIND_WEIGHTS)
        self.gift_cum = _cumulative(GIFT_WEIGHTS)
        self.seed = seed

    def _skewed(self, items: list[str], u: float) -> str:
        return items[int(len(items) * u * u * u)]  # cheap Zipf-like: head items dominate

    def block(self, first_user: int, count: int, events_per_user: float,
              ) -> tuple[list[str], list[tuple[str, LiveEvent | ClickEvent]]]:
        """Users ``first_user .. first_user+count-1`` and their events, sorted by time."""
        rng = Random(self.seed * 1_000_003 + first_user)
        mu = math.log(max(events_per_user, 1.0)) - 0.5  # lognormal(mu, 1) has mean e^(mu+.5)
        users, events = [], []
        for index in range(first_user, first_user + count):
            user = f"u{index}"
            users.append(user)
            budget = max(1, round(rng.lognormvariate(mu, 1.0)))
            self._user(rng, user, budget, events)
        events.sort(key=lambda pair: pair[1].ts)
        return users, events

    def _user(self, rng: Random, user: str, budget: int,
              out: list[tuple[str, LiveEvent | ClickEvent]]) -> None:
        rnd = rng.random
        first = T_END - int(WINDOW_MS * rnd())
        favourites = rng.sample(self.categories, rng.randint(1, 3))
        home_room = self.rooms[int(len(self.rooms) * rnd() * rnd())]
        serial = 0
        while budget > 0:
            length = min(budget, 1 + int(rng.expovariate(1 / 7.0)))
            budget -= length
            start = first + int((T_END - first) * rnd())
            serial += 1
            if rnd() < 0.6:
                room = home_room if rnd() < 0.7 else self.rooms[int(len(self.rooms) * rnd())]
                self._live_session(rng, user, f"{user}-w{serial}", room, start, length, out)
            else:
                self._click_session(rng, user, f"{user}-c{serial}", favourites, start, length,
                                    out)

    def _live_session(self, rng: Random, user: str, session: str, room: str, ts: int,
                      length: int, out: list[tuple[str, LiveEvent | ClickEvent]]) -> None:
        rnd = rng.random
        products = self.room_items[room]
        host = f"host-{room.rsplit('-', 1)[1]}"
        out.append(("live", LiveEvent(f"{session}-0", "join", ts, room, user, host_id=host,
                                      session_id=session)))
        pending: tuple[str, str, int] | None = None  # (next funnel step, item, quantity)
        for n in range(1, length):
            ts += int(rng.expovariate(1 / GAP_MEAN_MS))
            event_id = f"{session}-{n}"
            if n == length - 1 and rnd() < 0.9:  # ~10 % never say goodbye
                out.append(("live", LiveEvent(event_id, "leave", ts, room, user, host_id=host,
                                              session_id=session)))
                break
            if pending is not None:
                kind, item, quantity = pending
                pending = None
                if kind == "add_to_cart":
                    if rnd() < 0.42:
                        pending = ("purchase", item, quantity)
                    out.append(("live", LiveEvent(event_id, kind, ts, room, user, host_id=host,
                                                  item_id=item, quantity=quantity,
                                                  session_id=session)))
                else:
                    amount = round(self.catalog[item]["price"] * quantity, 2)
                    out.append(("live", LiveEvent(event_id, kind, ts, room, user, host_id=host,
                                                  item_id=item, quantity=quantity,
                                                  amount=amount, session_id=session)))
                continue
            kind = LIVE_KINDS[bisect.bisect_right(self.live_cum, rnd())]
            event = LiveEvent(event_id, kind, ts, room, user, host_id=host, session_id=session)
            if kind == "comment":
                event.text = ALL_COMMENTS[int(len(ALL_COMMENTS) * rnd())]
            elif kind == "gift":
                event.amount = GIFT_AMOUNTS[bisect.bisect_right(self.gift_cum, rnd())]
            elif kind == "product_click":
                event.item_id = products[int(len(products) * rnd() * rnd())]
                if rnd() < 0.28:
                    pending = ("add_to_cart", event.item_id, _quantity(rnd()))
            out.append(("live", event))

    def _click_session(self, rng: Random, user: str, session: str, favourites: list[str],
                       ts: int, length: int,
                       out: list[tuple[str, LiveEvent | ClickEvent]]) -> None:
        rnd = rng.random
        catalog = self.catalog
        room = self.rooms[int(len(self.rooms) * rnd())] if rnd() < 0.1 else None
        category = favourites[int(len(favourites) * rnd())]
        cart: list[tuple[str, int]] = []
        for n in range(length):
            event_id = f"{session}-{n}"
            u = rnd()
            if n == length - 1 and cart and rnd() < 0.35:
                item, quantity = cart.pop()
                record = catalog[item]
                out.append(("clicks", ClickEvent(
                    event_id, "purchase", ts, user, session, item_id=item,
                    category=record["category"], price=record["price"], quantity=quantity,
                    room_id=room)))
                break
            if (n == 0 and u < 0.32) or 0.07 <= u < 0.10:
                category = favourites[int(len(favourites) * rnd())] if rnd() < 0.8 else \
                    self.categories[int(len(self.categories) * rnd())]
                query = category.replace("_", " ") if rnd() < 0.9 else f"{category} discount"
                out.append(("clicks", ClickEvent(event_id, "search", ts, user, session,
                                                 query=query, room_id=room)))
            elif u < 0.07 and n > 0:
                item = self._skewed(self.by_category[category], rnd())
                quantity = _quantity(rnd())
                cart.append((item, quantity))
                out.append(("clicks", ClickEvent(
                    event_id, "add_to_cart", ts, user, session, item_id=item,
                    category=category, price=catalog[item]["price"], quantity=quantity,
                    room_id=room)))
            else:
                if rnd() < 0.75:
                    item = self._skewed(self.by_category[category], rnd())
                else:
                    item = self._skewed(self.popular, rnd())
                    category = catalog[item]["category"]
                record = catalog[item]
                out.append(("clicks", ClickEvent(
                    event_id, "view" if rnd() < 0.55 else "click", ts, user, session,
                    item_id=item, category=record["category"], price=record["price"],
                    room_id=room)))
            ts += int(rng.expovariate(1 / GAP_MEAN_MS))


def _quantity(u: float) -> int:
    return 1 if u < 0.75 else 2 if u < 0.93 else 3


# ---------------------------------------------------------------------- Faust stores
class _Message:
    __slots__ = ("partition",)

    def __init__(self, partition: int) -> None:
        self.partition = partition


class _Event:
    """Stand-in for the stream event the store reads its partition from."""

    __slots__ = ("__weakref__", "message")

    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


def open_store(kind: str, workdir: str, partitions: int) -> tuple[Any, Callable[[str], None],
                                                                    dict[str, Any]]:
    """The real Faust table store for ``kind``; a function selecting a key's partition."""
    import faust
    from faust.streams import _current_event

    import streams.codecs  # noqa: F401  (registers the orjson codec, as the worker does)

    url = "rocksdb://" if kind == "rocksdb" else "memory://"
    app = faust.App("bench-profiles", broker="memory://", store=url, datadir=workdir,
                    value_serializer="orjson", key_serializer="raw")
    table = app.Table("user-profiles", default=None, partitions=partitions)
    store = table.data
    events = [_Event(p) for p in range(partitions)]
    refs = [weakref.ref(e) for e in events]
    set_event = _current_event.set

    def select(key: str) -> None:
        set_event(refs[zlib.crc32(key.encode()) % partitions])

    info: dict[str, Any] = {"store_class": f"{type(store).__module__}.{type(store).__name__}",
                            "partitions": partitions}
    info["faust_version"] = faust.__version__
    if kind == "rocksdb":
        options = store.rocksdb_options
        info.update({
            "driver": "rocksdict" if store.use_rocksdict else "python-rocksdb",
            "rocksdict_version": metadata.version("rocksdict"),
            "write_buffer_size": options.write_buffer_size,
            "max_write_buffer_number": options.max_write_buffer_number,
            "block_cache_size": options.block_cache_size,
        })
    store._bench_keepalive = events  # the weakrefs must stay alive
    return store, select, info


class GcClock:
    """Time spent in CPython's cyclic garbage collector (a ``gc.callbacks`` hook)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full_collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.full_collections += info["generation"] == 2


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # compaction removes files as we walk
                total += os.path.getsize(os.path.join(root, name))
    return total


def _percentile(sorted_values: Sequence[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_store(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fold every user's events through one Faust store; sizes, throughput, RSS."""
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-profiles-")
    os.makedirs(workdir, exist_ok=True)
    try:
        generator = TrafficGenerator(args.seed, args.items, args.rooms)
        store, select, info = open_store(kind, workdir, args.partitions)
        catalog = generator.catalog.get
        gc.collect()
        rss_start = rss_kib()
        as_bytes = kind == "memory-bytes"
        dumps, loads = orjson.dumps, orjson.loads
        sizes = array("I")
        lifecycles: Counter[str] = Counter()
        tags: Counter[str] = Counter()
        sample_every = max(1, args.users // 10_000)
        events_total = 0
        gen_s = fold_s = 0.0
        gc_clock = GcClock()
        gc.callbacks.append(gc_clock)
        started = time.perf_counter()
        for first in range(0, args.users, BLOCK_USERS):
            count = min(BLOCK_USERS, args.users - first)
            t0 = time.perf_counter()
            gc.disable()  # traffic generation is not the worker's work: keep its GC out
            try:
                users, events = generator.block(first, count, args.events_per_user)
            finally:
                gc.enable()
            t1 = time.perf_counter()
            get = store.get
            for source, record in events:
                user = record.user_id
                select(user)
                stored = get(user)
                if as_bytes and stored is not None:
                    stored = loads(stored)
                profile = fold_profile(stored, user, source, record, catalog)
                store[user] = dumps(profile) if as_bytes else profile
            t2 = time.perf_counter()
            gen_s += t1 - t0
            fold_s += t2 - t1
            events_total += len(events)
            for n, user in enumerate(users):
                select(user)
                value = store[user]
                sizes.append(len(value) if as_bytes else len(dumps(value)))
                if (first + n) % sample_every == 0:
                    view = UserProfile.from_dict(loads(value) if as_bytes else value).view(T_END)
                    lifecycles[view["lifecycle"]] += 1
                    tags.update(view["tags"])
            if args.progress and (first // BLOCK_USERS) % 50 == 0:
                print(f"[{kind}] {first + count:,} users, {events_total:,} events, "
                      f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        gc.callbacks.remove(gc_clock)
        del events, users
        gc.collect()
        rss_loaded = rss_kib()
        rng = Random(args.seed)
        reads = min(args.users, 100_000)
        t0 = time.perf_counter()
        for _ in range(reads):
            user = f"u{rng.randrange(args.users)}"
            select(user)
            store[user]
        read_s = time.perf_counter() - t0
        rss_read = rss_kib()
        ordered = sorted(sizes)
        users_n = len(sizes)
        result: dict[str, Any] = {
            "store": kind,
            **info,
            "users": users_n,
            "events": events_total,
            "events_per_user": round(events_total / max(users_n, 1), 2),
            "generate_s": round(gen_s, 1),
            "fold_s": round(fold_s, 1),
            "fold_events_per_s": round(events_total / fold_s) if fold_s else 0,
            "fold_us_per_event": round(fold_s / max(events_total, 1) * 1e6, 2),
            "gc_s": round(gc_clock.seconds, 1),
            "gc_full_collections": gc_clock.full_collections,
            "random_reads_per_s": round(reads / read_s) if read_s else 0,
            "profile_bytes": {
                "avg": round(sum(sizes) / max(users_n, 1), 1),
                "p50": _percentile(ordered, 0.50),
                "p99": _percentile(ordered, 0.99),
                "max": ordered[-1] if ordered else 0,
                "over_1024": len(ordered) - bisect.bisect_right(ordered, 1024),
            },
            "rss_mib": {
                "start": round(rss_start["rss"] / 1024, 1),
                "after_load": round(rss_loaded["rss"] / 1024, 1),
                "after_random_reads": round(rss_read["rss"] / 1024, 1),
                "peak": round(rss_read["hwm"] / 1024, 1),
                "held_per_user_bytes": round(
                    (rss_read["rss"] - rss_start["rss"]) * 1024 / max(users_n, 1)),
            },
            "lifecycle_sample": dict(lifecycles.most_common()),
            "tags_sample": dict(tags.most_common()),
            "sample_users": sum(lifecycles.values()),
            "wall_s": round(time.perf_counter() - started, 1),
        }
        if kind == "rocksdb":
            result["disk_mib"] = round(_dir_bytes(workdir) / 2**20, 1)
        return result
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------- apply cost
def apply_cost(args: argparse.Namespace, users: int) -> dict[str, Any]:
    """Per-event cost of the same events: objects kept in memory vs. dict load/fold/dump."""
    generator = TrafficGenerator(args.seed, args.items, args.rooms)
    catalog = generator.catalog.get
    pairs: list[tuple[str, LiveEvent | ClickEvent]] = []
    for first in range(0, users, BLOCK_USERS):
        pairs += generator.block(first, min(BLOCK_USERS, users - first),
                                 args.events_per_user)[1]
    n = len(pairs)

    def objects() -> dict[str, UserProfile]:
        profiles: dict[str, UserProfile] = {}
        for _, record in pairs:
            profile = profiles.get(record.user_id)
            if profile is None:
                profile = profiles[record.user_id] = UserProfile(record.user_id)
            profile.apply(record, catalog)
        return profiles

    def dicts() -> None:
        table: dict[str, dict[str, Any]] = {}
        for source, record in pairs:
            user = record.user_id
            table[user] = fold_profile(table.get(user), user, source, record, catalog)

    def dicts_orjson() -> None:
        table: dict[str, bytes] = {}
        for source, record in pairs:
            user = record.user_id
            raw = table.get(user)
            table[user] = orjson.dumps(fold_profile(orjson.loads(raw) if raw else None, user,
                                                    source, record, catalog))

    timings = {}
    for name, fn in (("object_apply", objects), ("dict_fold", dicts),
                     ("dict_fold_orjson", dicts_orjson)):
        best = math.inf
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        timings[name] = best
    profiles = objects()
    t0 = time.perf_counter()
    for profile in profiles.values():
        orjson.dumps(profile.to_dict())
    dump_s = time.perf_counter() - t0
    return {
        "events": n,
        "users": len(profiles),
        "object_apply_us": round(timings["object_apply"] / n * 1e6, 2),
        "dict_fold_us": round(timings["dict_fold"] / n * 1e6, 2),
        "dict_fold_orjson_us": round(timings["dict_fold_orjson"] / n * 1e6, 2),
        "dump_us_per_profile": round(dump_s / max(len(profiles), 1) * 1e6, 2),
        "speedup_object_vs_dict": round(timings["dict_fold"] / timings["object_apply"], 2),
    }


# ---------------------------------------------------------------------- main
def _rocksdict_available() -> bool:
    try:
        import rocksdict  # noqa: F401
    except ImportError:
        return False
    return True


def _child_argv(args: argparse.Namespace, store: str) -> list[str]:
    argv = [sys.executable, "-m", "benchmarks.bench_profiles", "--child", "--store", store,
            "--users", str(args.users), "--events-per-user", str(args.events_per_user),
            "--seed", str(args.seed), "--items", str(args.items), "--rooms", str(args.rooms),
            "--partitions", str(args.partitions)]
    if args.progress:
        argv.append("--progress")
    return argv


def _run_children(args: argparse.Namespace, stores: Sequence[str]) -> dict[str, Any]:
    """One subprocess per store (sequential unless ``--parallel``); their JSON results."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results: dict[str, Any] = {}
    batches = [list(stores)] if args.parallel else [[store] for store in stores]
    for batch in batches:
        procs = {store: subprocess.Popen(_child_argv(args, store), cwd=root,
                                         stdout=subprocess.PIPE) for store in batch}
        for store, proc in procs.items():
            out, _ = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"{store} benchmark failed with exit code {proc.returncode}")
            results[store] = orjson.loads(out.decode().strip().splitlines()[-1])
    return results


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=float, default=6.0,
                        help="mean events per user (lognormal, heavy-tailed)")
    parser.add_argument("--store", default="both", choices=(*STORES, "both", "all"),
                        help="both = memory + rocksdb; all adds memory-bytes")
    parser.add_argument("--partitions", type=int, default=4,
                        help="table partitions owned by the worker (one RocksDB each)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--cost-users", type=int, default=20_000,
                        help="users whose events time object vs. dict folding")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="RocksDB directory (default: temp)")
    parser.add_argument("--parallel", action="store_true",
                        help="run the store subprocesses at the same time (faster, noisier)")
    parser.add_argument("--progress", action="store_true", help="progress on stderr")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        result = run_store(args.store, args)
        print(orjson.dumps(result).decode(), flush=True)
        return result
    started = time.perf_counter()
    if args.store == "both":
        stores = ["memory", "rocksdb"]
    elif args.store == "all":
        stores = list(STORES)
    else:
        stores = [args.store]
    skipped = []
    if "rocksdb" in stores and not _rocksdict_available():
        stores.remove("rocksdb")
        skipped.append("rocksdb (pip install rocksdict, or the package's [rocksdb] extra)")
    results = _run_children(args, stores)
    summary: dict[str, Any] = {
        "users": args.users,
        "events_per_user_mean": args.events_per_user,
        "seed": args.seed,
        "parallel": args.parallel,
        "stores": results,
        "skipped": skipped,
        "apply_cost": apply_cost(args, min(args.users, args.cost_users)),
    }
    first = next(iter(results.values()), None)
    if first is not None:
        summary["profile_bytes"] = first["profile_bytes"]
    summary["total_s"] = round(time.perf_counter() - started, 1)
    print(orjson.dumps(summary).decode(), flush=True)
    return summary


if __name__ == "__main__":
    main()
