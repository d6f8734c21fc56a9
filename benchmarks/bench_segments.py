"""Online segments on simulator profiles: quality against the simulator's true user types,
stability per simulated hour, and the per-event cost of segments and audiences.

    python -m benchmarks.bench_segments [--seeds 1 2 3] [--users 4000] [--hours 6]
        [--rate 40] [--cost-events 20000] [--segments 8] [--stickiness 0.15]

Per seed, :class:`streams.simulator.Simulator` traffic (``--rate`` events per simulated
second for ``--hours``) is folded into :class:`agents.users.profile.UserProfile` objects
with the catalog facts, and every event goes through :meth:`Audiences.on_event` with the
packaged audiences, as in the user pipeline: a user's segment is (re)assigned at the first
event, then every 20 events or 10 min of event time. The segmenter is the production one
(:class:`online_models.segments.ProfileSegmenter`, 8 segments).

True user types: the simulator's latent traits, never in a record, split at their medians
into 2 x 2 x 2 = 8 types: activity ``a`` (how often they act), purchase intent ``z`` and
price level ``b`` (the log of the price they like over a category's median). The price
level leaves no trace the profile can see (its average price mixes categories whose medians
differ tenfold: correlation ~0.01 with every feature), so the figures are also given for
the 4 observable types (activity x intent, ``*_4``). Measured at the end, on users with at
least ``--min-events`` events:

* ``silhouette_segments``: mean silhouette (Rousseeuw) of the segments in the segmenter's
  standardised feature space (exact, on up to 3,000 users); ``silhouette_true_types``: the
  same points labelled by true type (how separable the types are from behaviour at all);
* ``ari`` and ``nmi``: adjusted Rand index and normalised mutual information between
  segments and true types (``river.metrics``); 0 is chance, 1 the types exactly;
* ``changed_per_hour``: share of users with a segment at two consecutive hour marks whose
  segment differs (median over the hour pairs after the first hour);
* cost: µs per event of the user pipeline on the in-memory harness (``agents.testing``,
  click events of 2,000 users in batches of 500, after 10,000 untimed ones) with segments
  and audiences off vs on, median of 3 runs, and µs per :meth:`Audiences.on_event` call
  alone (in the simulation).

Prints one JSON document: per seed and the medians over seeds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
from river import metrics

from agents.users.audiences import PACKAGED_AUDIENCES, AudienceBook, Audiences
from agents.users.profile import UserProfile
from online_models.segments import FEATURES, ProfileSegmenter, profile_features
from streams.contracts import CLICK_EVENT, LIVE_EVENT, to_record
from streams.simulator import Simulator

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR_MS = 3_600_000
SILHOUETTE_SAMPLE = 3_000
WARM_EVENTS = 10_000  # harness cost: events fed before the timed ones


def true_type(sim: Simulator, user: str, price_level: bool = True) -> int:
    """The user's type from the simulator's latent traits (median splits)."""
    traits = sim._traits(user)
    observable = 2 * (traits.activity > math.exp(-0.32)) + (traits.intent > 0)
    return 2 * observable + (traits.budget > 0) if price_level else observable


def silhouette(points: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (exact; a point alone in its cluster scores 0)."""
    squared = (points * points).sum(axis=1)
    distance = np.sqrt(np.maximum(squared[:, None] + squared[None, :]
                                  - 2.0 * points @ points.T, 0.0))
    clusters = np.unique(labels)
    if len(clusters) < 2:
        return 0.0
    mean_to = np.stack([distance[:, labels == c].mean(axis=1) for c in clusters], axis=1)
    sizes = np.array([(labels == c).sum() for c in clusters])
    own = np.searchsorted(clusters, labels)
    rows = np.arange(len(labels))
    a = mean_to[rows, own] * sizes[own] / np.maximum(sizes[own] - 1, 1)  # excludes itself
    others = mean_to.copy()
    others[rows, own] = np.inf
    b = others.min(axis=1)
    s = np.where(sizes[own] > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    sim = Simulator(seed=seed, rooms=8, users=args.users, items=800, bad_rate=0.0)
    catalog = dict(sim.catalog_records(START_MS))
    segmenter = ProfileSegmenter(n_segments=args.segments, stickiness=args.stickiness,
                                 seed=seed)
    audiences = Audiences(AudienceBook.load(PACKAGED_AUDIENCES), segmenter)
    profiles: dict[str, UserProfile] = {}
    per_tick = max(1, int(args.rate))
    hours: list[dict[str, int]] = []
    changes = 0
    events = 0
    spent = 0.0
    for second in range(int(args.hours * 3600)):
        now = START_MS + second * 1000
        for rec in sim.next_events(now, per_tick):
            if rec.stream == "catalog":
                body = orjson.loads(rec.value)
                catalog[body["item_id"]] = body
                continue
            body = orjson.loads(rec.value)
            record = to_record(LIVE_EVENT if rec.stream == "live" else CLICK_EVENT, body)
            if record.type == "product_pin":
                continue
            user = record.user_id
            profile = profiles.get(user)
            if profile is None:
                profile = profiles[user] = UserProfile(user)
            profile.apply(record, catalog.get)
            view = profile.view(profile.updated_at)
            started = time.perf_counter()
            changes += len(audiences.on_event(profile, view, None, record.event_id))
            spent += time.perf_counter() - started
            events += 1
        if (second + 1) % 3600 == 0:
            hours.append({u: p.segment for u, p in profiles.items() if p.segment is not None})
    changed = []
    for before, after in itertools.pairwise(hours):
        both = [u for u in before if u in after]
        if both:
            changed.append(sum(before[u] != after[u] for u in both) / len(both))
    # quality at the end, on users with enough events
    users = sorted(u for u, p in profiles.items() if p.events >= args.min_events
                   and p.segment is not None)
    users = users[:SILHOUETTE_SAMPLE]
    scaled = [segmenter._scaled(profile_features(profiles[u].view(profiles[u].updated_at)))
              for u in users]
    points = np.array([[z.get(f, 0.0) for f in FEATURES] for z in scaled])
    segments = np.array([profiles[u].segment for u in users])
    types = np.array([true_type(sim, u) for u in users])
    types4 = np.array([true_type(sim, u, price_level=False) for u in users])
    ari, nmi = metrics.AdjustedRand(), metrics.NormalizedMutualInfo()
    ari4, nmi4 = metrics.AdjustedRand(), metrics.NormalizedMutualInfo()
    for t, t4, s in zip(types, types4, segments, strict=True):
        ari.update(int(t), int(s))
        nmi.update(int(t), int(s))
        ari4.update(int(t4), int(s))
        nmi4.update(int(t4), int(s))
    return {
        "seed": seed, "events": events, "users": len(profiles), "scored_users": len(users),
        "silhouette_segments": round(silhouette(points, segments), 4),
        "silhouette_true_types": round(silhouette(points, types), 4),
        "silhouette_true_types_4": round(silhouette(points, types4), 4),
        "ari": round(float(ari.get()), 4), "nmi": round(float(nmi.get()), 4),
        "ari_4": round(float(ari4.get()), 4), "nmi_4": round(float(nmi4.get()), 4),
        "changed_per_hour": round(statistics.median(changed[1:] or changed), 4)
        if changed else None,
        "changed_by_hour": [round(c, 4) for c in changed],
        "audience_changes": changes,
        "on_event_us": round(spent / max(1, events) * 1e6, 2),
        "segments": [{"id": s["id"], "en": s["en"], "zh": s["zh"], "share": s["share"]}
                     for s in segmenter.describe_all()],
    }


def pipeline_cost(n_events: int) -> dict[str, float]:
    """µs per click event of the user pipeline (harness) with audiences off vs on, and the
    part of "on" spent in ``Audiences.on_event`` (timed inside the pipeline: the machine's
    noise between runs is larger than the difference)."""
    from agents.testing import Harness

    inside = [0.0]

    def once(enabled: bool) -> float:
        h = Harness()
        if not enabled:
            h.users.audiences = None
        else:
            audiences = h.users.audiences
            on_event = audiences.on_event

            def timed(*a: Any) -> list[dict[str, Any]]:
                started = time.perf_counter()
                try:
                    return on_event(*a)
                finally:
                    inside[0] += time.perf_counter() - started

            audiences.on_event = timed  # type: ignore[method-assign]
        rng = np.random.default_rng(1)
        users = [f"u{i}" for i in range(2_000)]
        bodies = [orjson.dumps({
            "event_id": f"c{i}", "type": "view" if i % 7 else "add_to_cart",
            "ts": Harness.now_ms(), "user_id": (u := users[int(rng.integers(len(users)))]),
            "session_id": f"s-{u}", "item_id": f"i{int(rng.integers(500))}",
            "price": 99.0}) for i in range(WARM_EVENTS + n_events)]
        # untimed warm-up: the segments seeded, every user seen (steady state)
        for first in range(0, WARM_EVENTS, 500):
            asyncio.run(h.feed("clicks", 0, bodies[first:first + 500]))
        inside[0] = 0.0
        started = time.perf_counter()
        for first in range(WARM_EVENTS, WARM_EVENTS + n_events, 500):
            asyncio.run(h.feed("clicks", 0, bodies[first:first + 500]))
        return (time.perf_counter() - started) / n_events * 1e6

    off, on, audiences_us = [], [], []
    for _ in range(3):
        off.append(once(False))
        on.append(once(True))
        audiences_us.append(inside[0] / n_events * 1e6)
    return {"off_us": round(statistics.median(off), 2), "on_us": round(statistics.median(on), 2),
            "audiences_us": round(statistics.median(audiences_us), 2)}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3],
                        help="simulation seeds (none: the cost measure only)")
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--hours", type=float, default=6.0)
    parser.add_argument("--rate", type=float, default=40.0,
                        help="events per simulated second")
    parser.add_argument("--min-events", type=int, default=5)
    parser.add_argument("--segments", type=int, default=8)
    parser.add_argument("--stickiness", type=float, default=0.15)
    parser.add_argument("--cost-events", type=int, default=20_000,
                        help="events per run of the harness cost measure (0: skip)")
    args = parser.parse_args(argv)
    runs = []
    for seed in args.seeds:
        runs.append(run_seed(seed, args))
        brief = {k: v for k, v in runs[-1].items() if k != "segments"}
        print(f"seed {seed}: {orjson.dumps(brief).decode()}", file=sys.stderr)
    keys = ("silhouette_segments", "silhouette_true_types", "silhouette_true_types_4", "ari",
            "nmi", "ari_4", "nmi_4", "changed_per_hour", "on_event_us")
    out: dict[str, Any] = {
        "config": {**vars(args), "cpu_count": os.cpu_count()},
        "median": {k: round(statistics.median(r[k] for r in runs if r[k] is not None), 4)
                   for k in keys} if runs else None,
        "runs": runs}
    if args.cost_events:
        out["pipeline_cost"] = pipeline_cost(args.cost_events)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return out


if __name__ == "__main__":
    main()
