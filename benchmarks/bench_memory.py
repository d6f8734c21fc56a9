"""RSS cost per user of every per-user state a worker keeps, structure by structure.

    python -m benchmarks.bench_memory [--users 200000] [--events-per-user 6]
        [--structures profile_object,profile_dict,...] [--parallel 1] [--campaigns FILE]

Traffic: :class:`benchmarks.bench_profiles.TrafficGenerator` (simulator catalog and rooms,
heavy-tailed events per user in live-watch and storefront sessions), blocks of 2,000 users
generated on the fly (a block's events are dropped after use, so they cost no lasting RSS).

Each structure runs in a **fresh subprocess** and is filled through the real classes' public
methods only; its cost is the growth of the process's ``VmRSS`` (after ``gc.collect()``)
from just before the first event to after the last, minus the growth of the ``driver``
run (same traffic and per-block work, nothing kept): bytes per user = that difference /
users. ``marginal`` is the same for the second half of the users only (fixed costs such as
item statistics excluded). Structures (:data:`STRUCTURES`):

* ``profile_object``: ``{user: UserProfile}`` live objects (``apply`` + ``advance``).
* ``profile_dict``: ``{user: profile.to_dict()}``, what the ``user-profiles`` memory table
  holds today (``from_dict`` -> ``apply`` -> ``advance`` -> ``to_dict`` per event).
* ``promo_state``: ``{user: state}`` of :class:`agents.promo.campaigns.Decider` (the
  ``promo-state`` table: recent triggers) with the bench campaigns of ``bench_triggers``.
* ``recommender``: :class:`online_models.recsys.HybridRecommender` after ``set_item`` for
  the catalog (before the baseline) and ``learn_one`` for every item event, with
  ``max_sessions`` / ``max_users`` raised to hold every user (the worker's default caps
  are noted in the output).
* ``propensity_pending`` / ``leave_risk_pending``: :class:`PurchasePropensity` /
  :class:`LeaveRisk` ``observe`` + ``score`` as :class:`agents.models.ModelHost` calls
  them, without ``tick`` (also in ``model_host``/``all``): every user's session is open,
  the peak when all users are active at once (``--tick`` expires them on event time, as
  the worker does; the generated traffic spans 90 days, so then few stay pending);
  ``max_pending`` raised to hold them all.
* ``model_host``: :meth:`ModelHost.on_event` for every event (recommender, both
  classifiers and the ``recent_recs`` / ``scores`` caches, caps raised); ``model_caches``
  is derived: ``model_host`` - ``recommender`` - both pending rows. The recommender's
  ``rank`` (stateless, ~1-3 ms a call) is replaced by :class:`StubRank` returning
  ``recs_top_k`` existing item ids unless ``--real-rank``.
* ``all``: ``profile_dict`` + ``promo_state`` + ``model_host`` in one process, as a
  worker holds them: the **total** compared with the target.

Prints a table (bytes/user per structure, total, target) and one JSON object as the last
line of stdout. Time at 200k users on a busy 2-core machine: 2-8 min per row, ~25 min for
``model_host`` and ``all`` each (the classifiers' scoring and the profile views per event);
``--parallel 2`` halves the wall time where cores allow.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from streams.codecs import dumps_kept

TARGET_BYTES_PER_USER = 2_048
BLOCK_USERS = 2_000
PARTITIONS = 4
RAISED = 10**9  # "no cap"
# (name, needs a profile view per event, description)
STRUCTURES: dict[str, str] = {
    "driver": "traffic, block-local profiles and their views only (baseline of view rows)",
    "driver_plain": "traffic only (baseline of the rows without views)",
    "profile_object": "UserProfile live objects",
    "profile_dict": "UserProfile.to_dict() values (memory table form before issue 15)",
    "profile_store": "the engine's ProfileStore: recently used profiles live, others as JSON",
    "promo_state": "promo-state values (Decider: recent triggers)",
    "recommender": "HybridRecommender sessions, purchase filter, MF factors",
    "propensity_pending": "PurchasePropensity pending delayed labels",
    "leave_risk_pending": "LeaveRisk pending delayed labels",
    "model_host": "ModelHost.on_event: models + recent_recs + scores caches",
    "all": "profile_dict + promo_state + model_host in one worker-like process",
}
DEFAULT_STRUCTURES = tuple(n for n in STRUCTURES if not n.startswith("driver"))
PARTS = ("profile_store", "promo_state", "model_host")  # what "all" holds


def rss_bytes() -> int:
    """VmRSS of this process in bytes (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _partition(key: str) -> int:
    return zlib.crc32(key.encode()) % PARTITIONS


# ---------------------------------------------------------------------- structures
class Holder:
    """One structure under test: ``feed`` every event (with its block-local context)."""

    views = False  # needs the user's profile view before ``feed``

    def __init__(self, args: argparse.Namespace, catalog: dict[str, Any], workdir: str) -> None:
        self.args, self.catalog, self.workdir = args, catalog, workdir

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        """Fold one event in."""

    def info(self) -> dict[str, Any]:
        """Counts and caps worth reporting (after the run)."""
        return {}


class Context:
    """Per-event context the driver builds: the user's block-local profile and its view,
    the input position (``c<p>``/``l<p>`` and an offset, as the user pipeline advances)."""

    __slots__ = ("offsets", "position", "previous_ts", "profile", "view", "viewer")

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.profile: Any = None
        self.view: dict[str, Any] = {}
        self.viewer: dict[str, Any] | None = None
        self.previous_ts: int | None = None
        self.position: tuple[str, int] = ("c0", 0)

    def advance(self, source: str, record: Any) -> None:
        """The input position of ``record``: clicks by user partition, live by room's."""
        key = record.user_id if source == "clicks" else record.room_id or ""
        name = f"{'c' if source == 'clicks' else 'l'}{_partition(key)}"
        offset = self.offsets.get(name, -1) + 1
        self.offsets[name] = offset
        self.position = (name, offset)


def fold(profile: Any, record: Any, catalog: Callable[[str], Any], position: tuple[str, int]
         ) -> None:
    """The user pipeline's fold: ``apply`` then ``advance`` (when the class has it)."""
    profile.apply(record, catalog)
    advance = getattr(profile, "advance", None)
    if advance is not None:
        advance(*position)


class ProfileObjects(Holder):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from agents.users.profile import UserProfile

        self.cls, self.table = UserProfile, {}

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        user = record.user_id
        profile = self.table.get(user)
        if profile is None:
            profile = self.table[user] = self.cls(user)
        fold(profile, record, self.catalog.get, ctx.position)

    def info(self) -> dict[str, Any]:
        return {"keys": len(self.table)}


class ProfileDicts(ProfileObjects):
    def feed(self, source: str, record: Any, ctx: Context) -> None:
        user = record.user_id
        saved = self.table.get(user)
        profile = self.cls.from_dict(saved) if saved else self.cls(user)
        fold(profile, record, self.catalog.get, ctx.position)
        self.table[user] = profile.to_dict()


class _NoChangelog(dict):  # type: ignore[type-arg]
    """A memory table stand-in whose changelog goes nowhere."""

    name = "user-profiles"

    @property
    def data(self) -> dict[str, Any]:
        return self

    def send_changelog(self, *_: Any, **__: Any) -> None:
        pass


class ProfileStoreHeld(ProfileObjects):
    """The user pipeline's own store: live objects for the most recent users, JSON else."""

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from agents.state import WriteBehindTable
        from agents.users.store import ProfileStore

        self.store = ProfileStore(WriteBehindTable(_NoChangelog()))
        self.table = self.store.table
        self.fed = 0

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        user = record.user_id
        profile = self.store.get(user) or self.cls(user)
        fold(profile, record, self.catalog.get, ctx.position)
        self.store.set(user, profile, 0)
        self.fed += 1
        if self.fed % 5_000 == 0:
            self.store.flush()  # as a commit does: the dirty set is emptied

    def info(self) -> dict[str, Any]:
        return {"keys": len(self.table), "live_objects": len(self.store._live),
                "hot_cap": self.store.hot}


class PromoState(Holder):
    views = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from agents.promo.campaigns import CampaignBook, Decider, EventFacts
        from agents.promo.triggers import stored_state
        self.stored_state = stored_state

        if self.args.campaigns:
            book = CampaignBook.load(self.args.campaigns)
        else:
            from benchmarks.bench_triggers import CAMPAIGNS

            book = CampaignBook.from_yaml(CAMPAIGNS)
        self.decider, self.facts = Decider(book, PARTITIONS), EventFacts
        self.table: dict[str, Any] = {}
        self.spent: dict[str, float] = {}
        self.triggers = 0

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        user, kind, live = record.user_id, record.type, source == "live"
        value = None
        if kind == "purchase":
            value = record.amount if live else (record.price or 0.0) * (record.quantity or 1)
        facts = self.facts(
            user_id=user, type=kind, ts=record.ts, event_id=record.event_id,
            source_topic="livepulse.live-events" if live else "livepulse.clicks",
            source="live" if live else "clicks", room_id=getattr(record, "room_id", None),
            item_id=record.item_id, value=value, partition=_partition(user),
            previous_ts=ctx.previous_ts)
        decision = self.decider.on_event(
            facts, ctx.view, None, ctx.view.get("scores"),
            load_state=lambda: self.stored_state(self.table.get(user)),
            spent=lambda cid: self.spent.get(cid, 0.0), now_ms=record.ts)
        if decision is None:
            return
        self.triggers += len(decision.triggers)
        for cid, spent in decision.spent.items():
            self.spent[cid] = spent
        if decision.state is not None:
            if decision.state.get("r"):
                self.table[user] = dumps_kept(decision.state)  # as agents.promo.triggers does
            else:
                self.table.pop(user, None)

    def info(self) -> dict[str, Any]:
        return {"keys": len(self.table), "triggers": self.triggers}


def _catalog_items(holder: Holder, recommender: Any) -> None:
    for item_id, facts in holder.catalog.items():
        recommender.set_item(item_id, category=facts.get("category"), brand=facts.get("brand"),
                             price=facts.get("price"), in_stock=bool(facts.get("in_stock", True)))


ITEM_KINDS = {"view", "click", "add_to_cart", "purchase", "product_click"}


class Recommender(Holder):
    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from online_models.recsys import HybridRecommender

        params = inspect.signature(HybridRecommender).parameters
        self.defaults = {k: params[k].default for k in ("max_sessions", "max_users",
                                                         "max_items") if k in params}
        self.model = HybridRecommender(seed=7, **dict.fromkeys(self.defaults, RAISED))
        _catalog_items(self, self.model)
        self.learned = 0

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        if record.type not in ITEM_KINDS or not record.item_id:
            return
        self.model.learn_one({"session_id": record.session_id, "item_id": record.item_id,
                              "ts": record.ts, "user_id": record.user_id, "kind": record.type,
                              "room_id": getattr(record, "room_id", None)})
        self.learned += 1

    def info(self) -> dict[str, Any]:
        stats = self.model.stats() if hasattr(self.model, "stats") else {}
        return {"learned": self.learned, "default_caps": self.defaults,
                "stats": {k: v for k, v in stats.items() if isinstance(v, int | float)}}


def _task_defaults(cls: Any) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    return {k: params[k].default for k in ("max_pending", "max_per_key") if k in params}


class Pending(Holder):
    """A delayed-label task fed as :meth:`ModelHost.on_event` feeds it (no ``tick``)."""

    views = True
    kind = "propensity"

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        from online_models import propensity

        cls = propensity.PurchasePropensity if self.kind == "propensity" else \
            propensity.LeaveRisk
        self.purchase_kinds = propensity.PURCHASE_EVENT_KINDS
        self.defaults = _task_defaults(cls)
        raised = {"max_pending": RAISED} if "max_pending" in self.defaults else {}
        self.task = cls(seed=7, **raised)

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        user, kind, ts = record.user_id, record.type, record.ts
        if self.args.tick:
            self.task.tick(ts)
        if self.kind == "propensity":
            self.task.observe(user, kind, ts)
            if kind in self.purchase_kinds:
                facts = (self.catalog.get(record.item_id) or {}) if record.item_id else {}
                self.task.score(user, {"profile": ctx.view, "room": {}, "event": {
                    "type": kind, "item_id": record.item_id,
                    "category": getattr(record, "category", None) or facts.get("category"),
                    "price": getattr(record, "price", None) or facts.get("price"),
                    "source": source}}, ts)
        elif source == "live" and record.room_id:
            watcher = f"{record.room_id}|{user}"
            self.task.observe(watcher, kind, ts)
            if kind != "leave":
                self.task.score(watcher, {"viewer": ctx.viewer or {},
                                          "event": {"type": kind, "ts": ts},
                                          "profile": ctx.view, "room": {}}, ts)

    def info(self) -> dict[str, Any]:
        labels = getattr(self.task, "labels", None)
        return {"pending": len(labels) if labels is not None else None,
                "default_caps": self.defaults}


class LeavePending(Pending):
    kind = "leave_risk"


def _no_tick(now_ts: int) -> int:
    return 0


class StubRank:
    """Stand-in for ``HybridRecommender.rank`` (which keeps no state but costs ~1-3 ms a
    call here): ``k`` existing item ids per query, so ``recent_recs`` holds lists shaped
    like the real ones (references to item ids the catalog already holds)."""

    def __init__(self, items: list[str]) -> None:
        self.items = items

    def __call__(self, x: dict[str, Any], k: int = 20) -> list[dict[str, Any]]:
        start = zlib.crc32(str(x.get("session_id")).encode()) % max(1, len(self.items) - k)
        return [{"item_id": item, "score": 1.0 / (n + 1), "reasons": ["stub"]}
                for n, item in enumerate(self.items[start:start + k])]


class ModelHostHolder(Holder):
    views = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        import agents.models as models
        from config.settings import Settings
        from online_models.propensity import LeaveRisk, PurchasePropensity
        from online_models.recsys import HybridRecommender

        self.caps = {name: getattr(models, name) for name in ("RECENT_RECS", "SCORES_KEPT")
                     if hasattr(models, name)}
        for name in self.caps:  # module-level LRU caps: raised to hold every user
            setattr(models, name, RAISED)
        settings = Settings(data_dir=os.path.join(self.workdir, "data"),
                            recs_max_sessions=RAISED, recs_max_items=RAISED)
        self.host = models.ModelHost(settings)
        # caps the settings do not reach (max_users, max_pending): uncapped replacements
        params = inspect.signature(HybridRecommender).parameters
        raised = {k: RAISED for k in ("max_sessions", "max_users", "max_items") if k in params}
        self.host.recommender = HybridRecommender(seed=settings.model_seed, **raised)
        _catalog_items(self, self.host.recommender)  # as the recommender row: not per user
        for attr, cls in (("propensity", PurchasePropensity), ("leave_risk", LeaveRisk)):
            if "max_pending" in _task_defaults(cls):
                setattr(self.host, attr, cls(seed=settings.model_seed, max_pending=RAISED))
        if not self.args.tick:  # as the pending rows: no label expires (sessions all open)
            for task in (self.host.propensity, self.host.leave_risk):
                task.tick = _no_tick  # type: ignore[method-assign]
        if not self.args.real_rank:
            self.host.recommender.rank = StubRank(list(self.catalog))  # type: ignore[method-assign]
        self.recommendations = 0

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        item = self.catalog.get(record.item_id) if record.item_id else None
        out = self.host.on_event(record, ctx.view, None,
                                 "livepulse.user-activity" if source == "live"
                                 else "livepulse.clicks", (ctx.position[0], 0,
                                                           ctx.position[1]),
                                 item=item, viewer=ctx.viewer)
        self.recommendations += out is not None
        scores = getattr(self.host, "scores", {}).get(record.user_id)
        if scores:
            ctx.view["scores"] = scores

    def info(self) -> dict[str, Any]:
        host = self.host
        return {"recommendations": self.recommendations, "default_caps": self.caps,
                "recent_recs": len(getattr(host, "recent_recs", ())),
                "scores": len(getattr(host, "scores", ()))}


class ViewDriver(Holder):
    views = True


class Everything(Holder):
    """A worker's per-user state together: profile table, promo state, model host."""

    views = True

    def __init__(self, *a: Any) -> None:
        super().__init__(*a)
        self.profiles = ProfileStoreHeld(*a)
        self.host = ModelHostHolder(*a)
        self.promo = PromoState(*a)

    def feed(self, source: str, record: Any, ctx: Context) -> None:
        self.profiles.feed(source, record, ctx)
        self.host.feed(source, record, ctx)  # adds the scores to the view, as users.py does
        self.promo.feed(source, record, ctx)

    def info(self) -> dict[str, Any]:
        return {"profile_store": self.profiles.info(), "model_host": self.host.info(),
                "promo_state": self.promo.info()}


HOLDERS: dict[str, type[Holder]] = {
    "driver": ViewDriver, "driver_plain": Holder, "profile_object": ProfileObjects,
    "profile_dict": ProfileDicts, "profile_store": ProfileStoreHeld,
    "promo_state": PromoState, "recommender": Recommender, "propensity_pending": Pending,
    "leave_risk_pending": LeavePending, "model_host": ModelHostHolder, "all": Everything,
}


# ---------------------------------------------------------------------- one structure
def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Fill structure ``name`` with ``args.users`` users' traffic in this process."""
    from agents.users.pipeline import viewer_context
    from agents.users.profile import UserProfile
    from benchmarks.bench_profiles import TrafficGenerator

    generator = TrafficGenerator(args.seed, args.items, args.rooms)
    catalog = generator.catalog
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as workdir:
        holder = HOLDERS[name](args, catalog, workdir)
        views = type(holder).views
        ctx = Context()
        gc.collect()
        rss_start = rss_bytes()
        rss_half, half = 0, args.users // 2
        events = 0
        started = time.perf_counter()
        for first in range(0, args.users, BLOCK_USERS):
            if first >= half and not rss_half:
                gc.collect()
                rss_half = rss_bytes()
            count = min(BLOCK_USERS, args.users - first)
            _, block = generator.block(first, count, args.events_per_user)
            local: dict[str, Any] = {}  # this block's users' profiles (the views' source)
            for source, record in block:
                ctx.advance(source, record)
                if views:
                    user = record.user_id
                    profile = local.get(user)
                    if profile is None:
                        profile = local[user] = UserProfile(user)
                    ctx.previous_ts = profile.updated_at if profile.events else None
                    room = getattr(record, "room_id", None)
                    ctx.viewer = viewer_context(profile, room) if room else None
                    fold(profile, record, catalog.get, ctx.position)
                    ctx.view = profile.view(profile.updated_at)
                holder.feed(source, record, ctx)
            events += len(block)
            del block, local
            if args.progress and (first // BLOCK_USERS) % 25 == 0:
                print(f"[{name}] {first + count:,} users, {events:,} events, "
                      f"{time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        gc.collect()
        rss_end = rss_bytes()
        return {"structure": name, "users": args.users, "events": events,
                "seconds": round(seconds, 1),
                "rss_start_mb": round(rss_start / 2**20, 1),
                "rss_end_mb": round(rss_end / 2**20, 1),
                "growth_bytes": rss_end - rss_start,
                "growth_second_half_bytes": rss_end - (rss_half or rss_start),
                "users_second_half": args.users - (half if rss_half else 0),
                "info": holder.info()}


def spawn(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """``run_one(name)`` in a fresh interpreter; its JSON result (or an error)."""
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--one", name,
               "--users", str(args.users), "--events-per-user", str(args.events_per_user),
               "--seed", str(args.seed), "--items", str(args.items), "--rooms",
               str(args.rooms)]
    if args.campaigns:
        command += ["--campaigns", args.campaigns]
    command += [flag for flag, on in (("--progress", args.progress),
                                      ("--real-rank", args.real_rank),
                                      ("--tick", args.tick)) if on]
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.run(command, capture_output=True, text=True, cwd=repo, env=env)
    if args.progress:
        sys.stderr.write(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"structure": name, "error": (proc.stderr or proc.stdout)[-1500:]}
    return orjson.loads(lines[-1])


# ---------------------------------------------------------------------- summary
def baseline_of(name: str) -> str:
    """The driver run whose growth is subtracted from structure ``name``'s (same per-event
    work: with or without profile views).

    >>> baseline_of("recommender"), baseline_of("promo_state")
    ('driver_plain', 'driver')
    """
    return "driver" if HOLDERS[name].views else "driver_plain"


def per_user(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Bytes per user of each structure net of its driver's growth (average and marginal).

    >>> runs = {"driver_plain": {"growth_bytes": 100, "growth_second_half_bytes": 50,
    ...                          "users": 10, "users_second_half": 5},
    ...         "recommender": {"growth_bytes": 1100, "growth_second_half_bytes": 550,
    ...                         "users": 10, "users_second_half": 5}}
    >>> per_user(runs)["recommender"]
    {'bytes_per_user': 100.0, 'marginal_bytes_per_user': 100.0}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, run in runs.items():
        if name.startswith("driver") or "error" in run:
            continue
        base = runs.get(baseline_of(name), {})
        if "error" in base:
            base = {}
        users, half = max(1, run["users"]), max(1, run["users_second_half"])
        out[name] = {
            "bytes_per_user": round((run["growth_bytes"] - base.get("growth_bytes", 0))
                                    / users, 1),
            "marginal_bytes_per_user": round(
                (run["growth_second_half_bytes"] - base.get("growth_second_half_bytes", 0))
                / half, 1)}
    parts = ("recommender", "propensity_pending", "leave_risk_pending")
    if "model_host" in out and all(p in out for p in parts):
        out["model_caches"] = {
            key: round(out["model_host"][key] - sum(out[p][key] for p in parts), 1)
            for key in ("bytes_per_user", "marginal_bytes_per_user")}
    return out


def summarise(runs: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON document: per-structure figures, total, target."""
    figures = per_user(runs)
    if "all" in figures:
        total, method = figures["all"]["bytes_per_user"], "measured (all in one process)"
    else:
        present = [p for p in PARTS if p in figures]
        total = round(sum(figures[p]["bytes_per_user"] for p in present), 1) if present \
            else None
        method = f"sum of {', '.join(present)}"
    parts_sum = [p for p in PARTS if p in figures]
    return {
        "users": args.users, "events_per_user": args.events_per_user, "items": args.items,
        "rooms": args.rooms, "method": "VmRSS growth after gc.collect() in a fresh subprocess "
        "per structure, minus the driver run's growth, / users",
        "bytes_per_user": {k: v["bytes_per_user"] for k, v in figures.items()},
        "marginal_bytes_per_user": {k: v["marginal_bytes_per_user"]
                                    for k, v in figures.items()},
        "total_bytes_per_user": total, "total_method": method,
        "sum_of_parts_bytes_per_user": round(sum(figures[p]["bytes_per_user"]
                                                 for p in parts_sum), 1) if parts_sum else None,
        "target_bytes_per_user": TARGET_BYTES_PER_USER,
        "target_met": total is not None and total <= TARGET_BYTES_PER_USER,
        "runs": runs}


def table(summary: dict[str, Any]) -> str:
    """The printed table: bytes/user (average, marginal), what each run held, the total."""
    runs = summary["runs"]
    lines = [f"per-user state at {summary['users']:,} users (~{summary['events_per_user']} "
             "events each); RSS growth net of the driver run",
             f"{'structure':<20} {'B/user':>8} {'marginal':>9} {'s':>6}  what / caps"]
    for name, value in summary["bytes_per_user"].items():
        run = runs.get(name, {})
        note = STRUCTURES.get(name, "derived: model_host - recommender - pending rows")
        caps = run.get("info", {}).get("default_caps")
        lines.append(f"{name:<20} {value:>8,.0f} "
                     f"{summary['marginal_bytes_per_user'][name]:>9,.0f} "
                     f"{run.get('seconds', 0):>6}  {note}"
                     + (f" (worker caps {caps}, raised here)" if caps else ""))
    for name, run in runs.items():
        if "error" in run:
            lines.append(f"{name:<20} error: {run['error'][-300:]}")
    drivers = [f"{name} {run['growth_bytes'] / max(1, run['users']):,.0f}" for name, run
               in runs.items() if name.startswith("driver") and "error" not in run]
    if drivers:
        lines.append(f"(driver growth subtracted, B/user: {', '.join(drivers)})")
    total = summary["total_bytes_per_user"]
    lines.append(f"{'TOTAL':<20} {total if total is None else f'{total:>8,.0f}'}  "
                 f"[{summary['total_method']}] target <= {TARGET_BYTES_PER_USER:,} B/user: "
                 f"{'met' if summary['target_met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--events-per-user", type=float, default=6.0)
    parser.add_argument("--structures", default=",".join(DEFAULT_STRUCTURES),
                        help="comma-separated (their driver baselines run too)")
    parser.add_argument("--parallel", type=int, default=1, help="subprocesses at once")
    parser.add_argument("--campaigns", default="", help="campaigns YAML (default: bench's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--tick", action="store_true",
                        help="expire delayed labels on event time as the worker does (the "
                        "traffic spans 90 days: few stay pending); default: none expire")
    parser.add_argument("--real-rank", action="store_true",
                        help="model_host/all: call the real rank (slow) instead of a stub")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.one:
        result = run_one(args.one, args)
        print(orjson.dumps(result).decode(), flush=True)
        return result
    names = [n.strip() for n in args.structures.split(",") if n.strip()]
    unknown = set(names) - set(HOLDERS)
    if unknown:
        parser.error(f"unknown structures {sorted(unknown)}; known: {list(HOLDERS)}")
    drivers = sorted({baseline_of(n) for n in names if not n.startswith("driver")})
    names = [*drivers, *(n for n in names if not n.startswith("driver"))]
    with ThreadPoolExecutor(max(1, args.parallel)) as pool:
        results = list(pool.map(lambda n: spawn(n, args), names))
    summary = summarise(dict(zip(names, results, strict=True)), args)
    print(table(summary), flush=True)
    print(orjson.dumps(summary).decode(), flush=True)
    return summary


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
