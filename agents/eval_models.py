"""Prequential evaluation of the online models on simulated traffic (no broker, no Faust).

:func:`main_propensity` drives :class:`streams.simulator.Simulator` in simulated event time,
validates every record with the topic contracts (malformed ones are skipped and counted),
folds live and click events into one :class:`agents.users.profile.UserProfile` per user and one
:class:`agents.rooms.state.RoomState` per room, and runs the two delayed-label tasks of
:mod:`online_models.propensity`:

* purchase propensity, scored on every product event (storefront view/click/add_to_cart,
  live product_click/add_to_cart), labelled by the user's next purchase (live or storefront)
  or, negative, by ``--session-gap-s`` of inactivity;
* leave risk, scored on every live event of a (sampled) viewer, labelled by a ``leave``
  within ``--horizon-s`` or, negative, when the horizon passes.

The models learn in mini-batches: :meth:`learn_pending` runs every ``--learn-every-s`` of
event time (as a worker runs it at commit time) and inside ``tick``/``observe`` once
``--batch-size`` examples wait. Scoring stops after ``--minutes``; the simulation then runs
on, without scoring, for the session gap or horizon plus 10 s, so that almost every scored
example gets its label instead of being censored at the end (examples of sessions still
going on stay pending and are counted in ``labels.pending``). The room context of a score
is the room's insight as the engine would emit it: recomputed at most once a second of event
time.

The last stdout line is one JSON object: per model the prequential ROC AUC, log loss,
Brier score, ECE and calibration table of the served scores (all, and ``after_warmup``: the
examples scored once the model had learned 1000), the positive rate, the label bookkeeping,
the constant base-rate baseline of both (AUC 0.5, log loss = entropy of the rate: the
constant that knew the rate in hindsight) and the model's operations per second of model
time (scores plus learned examples). ``leave_risk.oracle`` is a ceiling, not a model: the
AUC of the simulator's own leave hazard (:meth:`streams.simulator.Simulator.leave_hazard`,
latent, never in a record) at the same scored events, labelled the same way.

Every figure here depends on the simulator: how viewers leave and users buy is its
documented hazard and intent model (:mod:`streams.simulator`), so the AUCs say the features
can recover that model's signal, not what real viewers do. Only the code paths (features,
labels, learning) are the engine's.

Run it: ``python -m agents.eval_models`` (40 simulated minutes, about 4 minutes on one core;
``--help`` for the knobs).

>>> out = main_propensity(["--minutes", "0.5", "--users", "2000", "--rate", "100",
...                        "--session-gap-s", "20", "--horizon-s", "20", "--quiet"])
... # doctest: +ELLIPSIS
{"simulation":{...}
>>> out["leave_risk"]["examples"] > 0, out["leave_risk"]["baseline"]["roc_auc"]
(True, 0.5)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import zlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import orjson

from agents.rooms.state import RoomState
from agents.users.profile import UserProfile
from online_models.propensity import (
    BinnedROCAUC,
    LeaveRisk,
    PurchasePropensity,
    constant_baseline,
)
from streams.contracts import (
    CATALOG_ITEM,
    CLICK_EVENT,
    LIVE_EVENT,
    ClickEvent,
    ContractError,
    LiveEvent,
    as_dict,
    validate,
)
from streams.simulator import Simulator

START_MS = 1_700_000_000_000
STEP_MS = 100                    # simulated time advanced per simulator call
TICK_MS = 1_000                  # label expiry and room-insight refresh period (event time)
VIEWER_TIMEOUT_MS = 300_000      # the engine's default LIVEPULSE_VIEWER_TIMEOUT_S
DRAIN_MARGIN_MS = 10_000        # sessions still going when scoring stops extend a little
PURCHASE_SCORED_LIVE = frozenset({"product_click", "add_to_cart"})
PURCHASE_SCORED_CLICKS = frozenset({"view", "click", "add_to_cart"})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livepulse eval propensity",
        description="Prequential purchase-propensity and leave-risk figures on simulated "
                    "traffic; the last line is one JSON object.")
    add = parser.add_argument
    add("--seed", type=int, default=7, help="simulator seed")
    add("--rooms", type=int, default=8)
    add("--users", type=int, default=100_000,
        help="user population (large enough that a user rarely returns within a session gap)")
    add("--items", type=int, default=2_000)
    add("--rate", type=float, default=300.0, help="events per simulated second")
    add("--minutes", type=float, default=40.0, help="simulated minutes with scoring")
    add("--max-viewers", type=int, default=300, help="simulator cap of viewers per room")
    add("--max-sessions", type=int, default=500,
        help="simulator cap of concurrent storefront sessions")
    add("--bad-rate", type=float, default=0.002, help="share of malformed records (skipped)")
    add("--model", choices=("logistic", "river", "hoeffding", "auto"), default="logistic",
        help="logistic: numpy, mini-batch (the default); river: the River StandardScaler | "
             "LogisticRegression reference (one example at a time); hoeffding, auto: River")
    add("--batch-size", type=int, default=256,
        help="released examples that trigger a mini-batch inside tick/observe")
    add("--step-rows", type=int, default=4,
        help="examples per vectorised gradient step of the numpy logistic (1: River's "
             "one-at-a-time updates)")
    add("--learn-every-s", type=float, default=1.0,
        help="event-time period of learn_pending() (the worker calls it at commit time); "
             "0: only when --batch-size examples wait")
    add("--optimizer", choices=("adagrad", "sgd"), default="adagrad")
    add("--learning-rate", type=float, default=0.01)
    add("--session-gap-s", type=float, default=300.0,
        help="inactivity that ends a purchase session. The profile and the model default "
             "use 1800; simulated sessions never pause for minutes, so 300 splits them the "
             "same way and the labels arrive 25 min sooner")
    add("--max-pending", type=int, default=200_000, help="cap of unlabelled examples per model")
    add("--horizon-s", type=float, default=60.0, help="leave-risk horizon")
    add("--release", choices=("deadline", "outcome"), default="deadline",
        help="when positives reach the learner (see online_models.propensity.DelayedLabels)")
    add("--leave-sample", type=float, default=1.0,
        help="share of (room, viewer) pairs scored for leave risk (hash sample)")
    add("--quiet", action="store_true", help="only the JSON line")
    return parser


class _Evaluation:
    """State of one run: profiles, rooms, viewer trackers, the two tasks and counters."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sim = Simulator(seed=args.seed, rooms=args.rooms, users=args.users,
                             items=args.items, bad_rate=args.bad_rate,
                             max_viewers_per_room=args.max_viewers,
                             max_click_sessions=args.max_sessions)
        common = {"model": args.model, "seed": args.seed, "release": args.release,
                  "optimizer": args.optimizer, "learning_rate": args.learning_rate,
                  "max_pending": args.max_pending, "batch_size": args.batch_size,
                  "step_rows": args.step_rows}
        self.purchase = PurchasePropensity(session_gap_s=args.session_gap_s, **common)
        self.leave = LeaveRisk(horizon_s=args.horizon_s, **common)
        self.catalog: dict[str, dict[str, Any]] = {
            item_id: record for item_id, record in self.sim.catalog_records(START_MS)}
        self.profiles: dict[str, UserProfile] = {}
        self.rooms: dict[str, RoomState] = {}
        self.insights: dict[str, tuple[int, dict[str, Any]]] = {}
        # "room|user" -> [joined_at, last_active_at, live events, returning]
        self.viewers: dict[str, list[int]] = {}
        self.seen_viewers: set[str] = set()
        self.leave_threshold = int(min(max(args.leave_sample, 0.0), 1.0) * 10_000)
        self.learn_every_ms = int(args.learn_every_s * 1000)
        self.next_learn = START_MS + self.learn_every_ms
        self.scoring = True
        self.watermark = START_MS
        self.events = {"live": 0, "clicks": 0, "catalog": 0, "skipped_bad": 0}
        self.oracle = _LeaveOracle(int(args.horizon_s * 1000))
        self.model_seconds = {"purchase_propensity": 0.0, "leave_risk": 0.0}

    # ------------------------------------------------------------------ context
    def _profile(self, user_id: str) -> UserProfile:
        profile = self.profiles.get(user_id)
        if profile is None:
            profile = self.profiles[user_id] = UserProfile(user_id)
        return profile

    def _room_insight(self, room_id: str, ts: int) -> dict[str, Any] | None:
        room = self.rooms.get(room_id)
        if room is None:
            return None
        cached = self.insights.get(room_id)
        if cached is not None and ts - cached[0] < TICK_MS:
            return cached[1]
        room.expire_viewers(VIEWER_TIMEOUT_MS)
        insight = as_dict(room.insight(ts))
        self.insights[room_id] = (ts, insight)
        return insight

    def _item_context(self, kind: str, item_id: str | None, source: str,
                      category: str | None = None, price: float | None = None
                      ) -> dict[str, Any]:
        info = self.catalog.get(item_id or "") or {}
        return {"type": kind, "item_id": item_id, "source": source,
                "category": category or info.get("category"),
                "price": price if price is not None else info.get("price")}

    def _pinned(self, room: RoomState) -> dict[str, Any] | None:
        """Catalog facts of the item pinned in ``room`` (what the viewer is shown)."""
        return self.catalog.get(room.pinned["item_id"]) if room.pinned else None

    def _sampled(self, key: str) -> bool:
        return zlib.crc32(key.encode()) % 10_000 < self.leave_threshold

    # ------------------------------------------------------------------ events
    def live(self, event: LiveEvent) -> None:
        kind, ts, user_id, room_id = event.type, event.ts, event.user_id, event.room_id
        room = self.rooms.get(room_id)
        if room is None:
            room = self.rooms[room_id] = RoomState(room_id)
        room.apply(event)
        if kind == "product_pin":
            return  # the host's act, not a viewer's
        profile = self._profile(user_id)
        profile.apply_live(event, self.catalog.get)
        key = f"{room_id}|{user_id}"
        started = time.perf_counter()
        self.purchase.observe(user_id, kind, ts)
        middle = time.perf_counter()
        self.leave.observe(key, kind, ts)
        if kind == "leave":
            self.oracle.leave(key, ts)
        self.model_seconds["purchase_propensity"] += middle - started
        self.model_seconds["leave_risk"] += time.perf_counter() - middle
        viewer = self.viewers.get(key)
        if kind == "leave":
            self.viewers.pop(key, None)
            return
        if viewer is None:
            viewer = self.viewers[key] = [ts, ts, 0, int(key in self.seen_viewers)]
            self.seen_viewers.add(key)
        if self.scoring:
            view = None
            if kind in PURCHASE_SCORED_LIVE:
                view = profile.view(ts)
                context = {"profile": view, "room": self._room_insight(room_id, ts),
                           "event": self._item_context(kind, event.item_id, "live")}
                started = time.perf_counter()
                self.purchase.score(user_id, context, ts)
                self.model_seconds["purchase_propensity"] += time.perf_counter() - started
            if self._sampled(key):
                context = {
                    "profile": view or profile.view(ts),
                    "room": self._room_insight(room_id, ts),
                    "event": {"type": kind, "ts": ts},
                    "viewer": {"joined_at": viewer[0], "last_active_at": viewer[1],
                               "events": viewer[2], "returning": bool(viewer[3]),
                               "pinned": self._pinned(room)},
                }
                started = time.perf_counter()
                self.leave.score(key, context, ts)
                self.model_seconds["leave_risk"] += time.perf_counter() - started
                self.oracle.score(key, ts, self.sim.leave_hazard(room_id, user_id, ts))
        viewer[1] = max(viewer[1], ts)
        viewer[2] += 1

    def click(self, event: ClickEvent) -> None:
        kind, ts, user_id = event.type, event.ts, event.user_id
        profile = self._profile(user_id)
        profile.apply_click(event, self.catalog.get)
        started = time.perf_counter()
        self.purchase.observe(user_id, kind, ts)
        self.model_seconds["purchase_propensity"] += time.perf_counter() - started
        if self.scoring and kind in PURCHASE_SCORED_CLICKS:
            room = self._room_insight(event.room_id, ts) if event.room_id else None
            context = {"profile": profile.view(ts), "room": room,
                       "event": self._item_context(kind, event.item_id, "clicks",
                                                   event.category, event.price)}
            started = time.perf_counter()
            self.purchase.score(user_id, context, ts)
            self.model_seconds["purchase_propensity"] += time.perf_counter() - started

    def tick(self) -> None:
        self.oracle.tick(self.watermark)
        started = time.perf_counter()
        self.purchase.tick(self.watermark)
        middle = time.perf_counter()
        self.leave.tick(self.watermark)
        self.model_seconds["purchase_propensity"] += middle - started
        self.model_seconds["leave_risk"] += time.perf_counter() - middle
        if self.learn_every_ms and self.watermark >= self.next_learn:
            self.next_learn = self.watermark + self.learn_every_ms
            started = time.perf_counter()
            self.purchase.learn_pending()
            middle = time.perf_counter()
            self.leave.learn_pending()
            self.model_seconds["purchase_propensity"] += middle - started
            self.model_seconds["leave_risk"] += time.perf_counter() - middle
        cutoff = self.watermark - VIEWER_TIMEOUT_MS  # viewers who never said goodbye
        if len(self.viewers) > 4 * self.args.max_viewers * self.args.rooms:
            for key in [k for k, v in self.viewers.items() if v[1] < cutoff]:
                del self.viewers[key]

    def record(self, stream: str, value: bytes) -> None:
        try:
            obj = orjson.loads(value)
            if stream == "catalog":
                item = validate(CATALOG_ITEM, obj)
                self.catalog[item.item_id] = as_dict(item)
            elif stream == "live":
                event = validate(LIVE_EVENT, obj)
            else:
                event = validate(CLICK_EVENT, obj)
        except (orjson.JSONDecodeError, ContractError):
            self.events["skipped_bad"] += 1
            return
        self.events[stream] += 1
        if stream == "catalog":
            return
        if event.ts > self.watermark:
            self.watermark = event.ts
        if stream == "live":
            self.live(event)
        else:
            self.click(event)


class _LeaveOracle:
    """AUC of the simulator's latent leave hazard at the scored events: P(leave within the
    horizon) if the hazard stayed as it is, labelled like :class:`LeaveRisk` labels (a
    ``leave`` within the horizon after the score). A ceiling for features that only see
    behaviour; it reads simulator truth, so it is never a model."""

    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self.pending: dict[str, list[tuple[int, float]]] = {}
        self.queue: deque[tuple[int, str]] = deque()  # (deadline, key), in score order
        self.auc = BinnedROCAUC()
        self.examples = 0

    def score(self, key: str, ts: int, hazard_per_s: float) -> None:
        p = 1.0 - math.exp(-hazard_per_s * self.horizon_ms / 1000.0)
        self.pending.setdefault(key, []).append((ts, p))
        self.queue.append((ts + self.horizon_ms, key))

    def leave(self, key: str, ts: int) -> None:
        for scored_at, p in self.pending.pop(key, ()):
            self.auc.update(scored_at + self.horizon_ms >= ts, p)
            self.examples += 1

    def tick(self, now_ms: int) -> None:
        queue = self.queue
        while queue and queue[0][0] < now_ms:
            _, key = queue.popleft()
            rows = self.pending.get(key)
            if not rows:
                continue
            expired = 0  # rows are in score order: the horizon passed without a leave
            while expired < len(rows) and rows[expired][0] + self.horizon_ms < now_ms:
                self.auc.update(False, rows[expired][1])
                expired += 1
            self.examples += expired
            if expired == len(rows):
                del self.pending[key]
            elif expired:
                self.pending[key] = rows[expired:]

    def report(self) -> dict[str, Any]:
        return {"roc_auc": round(self.auc.get(), 4), "examples": self.examples,
                "note": "simulator truth (latent hazard), a ceiling: not a model"}


def _simulate(run: _Evaluation, until_ms: int, now_ms: int, per_step: float) -> int:
    carry = 0.0
    next_tick = now_ms + TICK_MS
    while now_ms < until_ms:
        now_ms += STEP_MS
        carry += per_step
        count = int(carry)
        carry -= count
        if count:
            for record in run.sim.next_events(now_ms, count):
                if record.bad is not None:
                    run.events["skipped_bad"] += 1
                    continue
                run.record(record.stream, record.value)
        if now_ms >= next_tick:
            next_tick += TICK_MS
            run.tick()
    return now_ms


def _report(task: PurchasePropensity | LeaveRisk, seconds: float) -> dict[str, Any]:
    out = task.metrics()
    out["baseline"] = constant_baseline(out["positives"], out["examples"])
    warm = out.get("after_warmup")
    if warm:
        warm["baseline"] = constant_baseline(warm["positives"], warm["examples"])
    operations = task.scored + out["examples"]
    out["model_ops_per_s"] = round(operations / seconds, 1) if seconds > 0 else 0.0
    out["model_us_per_scored_event"] = round(seconds * 1e6 / task.scored, 2) if task.scored \
        else None  # all the model's time (learning too) over the scored events
    return out


def evaluate_propensity(args: argparse.Namespace) -> dict[str, Any]:
    """Run the simulation described by ``args`` (see :func:`_parser`) and return the report."""
    run = _Evaluation(args)
    wall = time.perf_counter()
    per_step = args.rate * STEP_MS / 1000.0
    score_until = START_MS + int(args.minutes * 60_000)
    now = _simulate(run, score_until, START_MS, per_step)
    run.scoring = False
    drain_ms = int(max(args.session_gap_s, args.horizon_s) * 1000) + DRAIN_MARGIN_MS
    now = _simulate(run, score_until + drain_ms, now, per_step)
    elapsed = time.perf_counter() - wall
    total = sum(v for k, v in run.events.items() if k != "skipped_bad")
    return {
        "simulation": {
            "seed": args.seed, "rooms": args.rooms, "users": args.users, "items": args.items,
            "rate": args.rate, "scored_minutes": args.minutes,
            "drain_minutes": round(drain_ms / 60_000, 2), "events": dict(run.events),
            "profiles": len(run.profiles), "model": args.model, "optimizer": args.optimizer,
            "learning_rate": args.learning_rate, "batch_size": args.batch_size,
            "step_rows": args.step_rows, "learn_every_s": args.learn_every_s,
            "session_gap_s": args.session_gap_s, "horizon_s": args.horizon_s,
            "leave_sample": args.leave_sample, "release": args.release,
        },
        "purchase_propensity": _report(run.purchase, run.model_seconds["purchase_propensity"]),
        "leave_risk": {**_report(run.leave, run.model_seconds["leave_risk"]),
                       "oracle": run.oracle.report()},
        "elapsed_s": round(elapsed, 2),
        "events_per_s": round(total / elapsed, 1) if elapsed > 0 else 0.0,
    }


def _summary_line(name: str, report: Mapping[str, Any]) -> str:
    """Headline figures and the after-warm-up reliability table (bins of served p with at
    least 100 examples: mean p -> observed rate).

    >>> row = {"lo": 0.1, "hi": 0.2, "count": 500, "mean_p": 0.15, "observed": 0.16}
    >>> warm = {"examples": 500, "roc_auc": 0.7, "log_loss": 0.4, "ece": 0.01,
    ...         "positive_rate": 0.16, "calibration": [row], "baseline": {"log_loss": 0.44}}
    >>> text = _summary_line("m", {"examples": 600, "positive_rate": 0.16, "roc_auc": 0.68,
    ...     "log_loss": 0.42, "ece": 0.02, "baseline": {"log_loss": 0.44},
    ...     "after_warmup": warm})
    >>> print(text.split("; ")[1])
    after warm-up (500): AUC 0.7 log loss 0.4 (base rate 0.44) ECE 0.01
      reliability after warm-up: [0.1,0.2) n=500 0.150->0.160
    """
    base, warm = report["baseline"], report["after_warmup"]
    warm_base = (warm.get("baseline") or {}).get("log_loss")
    line = (f"{name}: examples {report['examples']} positive rate {report['positive_rate']} "
            f"AUC {report['roc_auc']} log loss {report['log_loss']} "
            f"(base rate {base['log_loss']}) ECE {report['ece']}; after warm-up "
            f"({warm['examples']}): AUC {warm['roc_auc']} log loss {warm['log_loss']} "
            f"(base rate {warm_base}) ECE {warm['ece']}")
    bins = [f"[{row['lo']:.1f},{row['hi']:.1f}) n={row['count']} "
            f"{row['mean_p']:.3f}->{row['observed']:.3f}"
            for row in warm.get("calibration", ()) if row["count"] >= 100]
    if bins:
        line += "\n  reliability after warm-up: " + "; ".join(bins)
    oracle = report.get("oracle")
    if oracle:
        line += (f"\n  oracle (simulator's latent hazard, a ceiling): AUC {oracle['roc_auc']}"
                 f" on {oracle['examples']} scored events")
    return line


def main_propensity(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry: run, print a short summary to stderr and the JSON report as the last line."""
    args = _parser().parse_args(argv)
    report = evaluate_propensity(args)
    if not args.quiet:
        for name in ("purchase_propensity", "leave_risk"):
            print(_summary_line(name, report[name]), file=sys.stderr)
    sys.stdout.write(orjson.dumps(report).decode() + "\n")
    sys.stdout.flush()
    return report


if __name__ == "__main__":
    main_propensity()
