"""The online models one worker drives: recommender, purchase propensity, leave risk.

:class:`ModelHost` is pure orchestration (no Faust): the user pipeline calls
:meth:`ModelHost.on_event` for every user event after the profile was updated. For an event
about an item it first scores the *previous* recommendation for the session (prequential
HR@20 / MRR@20: predict, then learn), learns the click, ranks the next top-K and returns the
``recommendation.v1`` record to emit. Propensity and leave-risk scores are kept per user for
the API and the campaigns.

Each worker holds one model replica trained on the users of the partitions it owns (item
statistics converge with traffic; a shared model-update topic is future work). Models are
snapshotted every ``LIVEPULSE_SNAPSHOT_INTERVAL_S`` and at shutdown to an HMAC-signed file
(:mod:`online_models.snapshot`) with the input offsets it covers, and restored at start.
An erasure rewrites them at once (:meth:`ModelHost.rewrite_snapshots`: every model saved
again, every older file deleted) before it is acknowledged (:mod:`agents.users.erasure`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from agents.rooms import state as room_state
from agents.stats import EngineMetrics
from config.settings import Settings
from online_models.propensity import PURCHASE_EVENT_KINDS, LeaveRisk, PurchasePropensity
from online_models.recsys import HybridRecommender
from online_models.segments import ProfileSegmenter
from online_models.snapshot import SnapshotError, SnapshotStore, load_newest, save_snapshot
from streams.contracts import ClickEvent, LiveEvent, Recommendation

log = logging.getLogger("livepulse.models")

ITEM_KINDS = {"view", "click", "add_to_cart", "purchase", "product_click"}
RECENT_RECS = 50_000      # sessions whose last recommendation is kept for prequential scoring
SCORES_KEPT = 100_000     # users whose latest propensity / leave-risk scores are kept
HR_WINDOW = 2_000         # prequential HR/MRR over the last N scored clicks
MODEL_NAMES = ("recommender", "propensity", "leave_risk", "sentiment", "segments")


def snapshot_dir(settings: Settings) -> Path:
    return Path(settings.snapshot_path)


LEGACY_KEY_FILE = ".key"  # before 0.x: the key sat beside the snapshots it signs


def snapshot_key(settings: Settings) -> bytes:
    """``LIVEPULSE_SNAPSHOT_KEY``, else the key file (``settings.snapshot_key_path``, outside
    the snapshot directory: settings refuse it inside), created random with mode 0600.

    A key an older version kept in ``<snapshot dir>/.key`` is moved to the key file once
    (WARNING), so existing snapshots still verify; with a key file already there it is deleted.
    """
    if settings.snapshot_key:
        return settings.snapshot_key.encode()
    path = Path(settings.snapshot_key_path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    legacy = snapshot_dir(settings) / LEGACY_KEY_FILE
    if legacy.is_file():
        if path.exists():
            log.warning("deleting the old snapshot key %s: the key is %s", legacy, path)
        else:
            log.warning("moving the snapshot key out of the snapshot directory: %s -> %s "
                        "(if others could read or write %s, delete %s to start with a new "
                        "key: models then start cold)", legacy, path, legacy.parent, path)
            with contextlib.suppress(FileNotFoundError):  # moved by another worker meanwhile
                _create_key_file(path, legacy.read_bytes().strip())
        legacy.unlink(missing_ok=True)
    if not path.exists():
        _create_key_file(path, secrets.token_urlsafe(48).encode())
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise SnapshotError(f"snapshot key file {path} holds under 32 bytes: replace it "
                            "(`livepulse secrets init`, LIVEPULSE_SNAPSHOT_KEY)")
    return key


def _create_key_file(path: Path, key: bytes) -> None:
    """Write ``key`` to ``path`` (mode 0600) unless it exists: whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # atomic; another worker on this data directory may win: theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _read_all(fd: int) -> bytes:
    """Everything written to a pipe until its writer closes it."""
    chunks = []
    while chunk := os.read(fd, 65_536):
        chunks.append(chunk)
    return b"".join(chunks)


class _Window:
    """Mean of the last ``size`` values (prequential metrics over recent traffic)."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.total = 0

    def add(self, value: float) -> None:
        self.total += 1
        self.values.append(value)

    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


class ModelHost:
    def __init__(self, settings: Settings, metrics: EngineMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.k = settings.recs_top_k
        self.recommender = HybridRecommender(
            seed=settings.model_seed, max_sessions=settings.recs_max_sessions,
            max_items=settings.recs_max_items)
        self.propensity = PurchasePropensity(seed=settings.model_seed)
        self.leave_risk = LeaveRisk(seed=settings.model_seed)
        # online user segments (agents.users.audiences assigns them)
        self.segments = ProfileSegmenter(seed=settings.model_seed)
        self.recent_recs: OrderedDict[str, list[str]] = OrderedDict()
        # never more sessions' last recommendations than sessions the recommender remembers
        self.recent_recs_cap = min(RECENT_RECS, settings.recs_max_sessions)
        self.scores: OrderedDict[str, dict[str, float]] = OrderedDict()
        self.hits = _Window(HR_WINDOW)
        self.ranks = _Window(HR_WINDOW)
        self.learned = 0
        self.empty = 0  # recommendations emitted with no items (nothing to rank)
        self.offsets: dict[str, int] = {}
        self.restored: dict[str, Any] = {}
        self.store = SnapshotStore(snapshot_dir(settings))
        self.key = snapshot_key(settings)
        self.last_snapshot = time.monotonic()
        self._snapshot_child: int | None = None  # pid of a forked snapshot in flight
        # one snapshot writer at a time: the periodic one and an erasure's rewrite would race
        # for the same file sequence, and a pruned file could be written again after it
        self._snapshot_lock = asyncio.Lock()
        self.fork_seconds = 0.0

    # ------------------------------------------------------------------ events
    def on_event(self, record: LiveEvent | ClickEvent, profile_view: dict[str, Any],
                 room_context: dict[str, Any] | None, source: str,
                 offset: tuple[str, int, int] | None = None, *,
                 item: dict[str, Any] | None = None,
                 viewer: dict[str, Any] | None = None) -> Recommendation | None:
        """Score, learn and (for item events) rank; return the recommendation to emit.

        ``item`` holds catalog facts of the event's item (category, price), ``viewer`` the
        user's presence in the event's room (``joined_at``, ``last_active_at``, ``events``,
        ``returning``) for the leave-risk features.
        """
        if offset is not None:
            topic, partition, position = offset
            self.offsets[f"{topic}:{partition}"] = position
        user, ts, kind = record.user_id, record.ts, record.type
        room_id = getattr(record, "room_id", None)
        session = record.session_id or f"{user}@{room_id or 'shop'}"
        personal = bool(profile_view.get("consent", True))
        self._score_propensity(record, source, profile_view, room_context, item, viewer,
                               personal)
        if kind not in ITEM_KINDS or not record.item_id:
            return None
        self._score_previous(session, record.item_id)
        if item:  # catalog facts: category affinity and the out-of-stock filter
            self.recommender.set_item(record.item_id, category=item.get("category"),
                                      brand=item.get("brand"), price=item.get("price"),
                                      in_stock=bool(item.get("in_stock", True)))
        self.recommender.learn_one({
            "session_id": session, "item_id": record.item_id, "ts": ts,
            "user_id": user if personal else None, "kind": kind, "room_id": room_id})
        self.learned += 1
        return self._recommendation(record, session, profile_view, room_context, personal)

    def recommend_again(self, record: LiveEvent | ClickEvent, profile_view: dict[str, Any],
                        room_context: dict[str, Any] | None) -> Recommendation | None:
        """The recommendation for an item event that was already learned (redelivered after
        a crash or a rebalance, at-least-once): ranked again, nothing learned; the first one
        may have been lost with the crash, so it is sent again under the same
        ``request_id``."""
        if record.type not in ITEM_KINDS or not record.item_id:
            return None
        room_id = getattr(record, "room_id", None)
        session = record.session_id or f"{record.user_id}@{room_id or 'shop'}"
        return self._recommendation(record, session, profile_view, room_context,
                                    bool(profile_view.get("consent", True)))

    def _recommendation(self, record: LiveEvent | ClickEvent, session: str,
                        profile_view: dict[str, Any], room_context: dict[str, Any] | None,
                        personal: bool) -> Recommendation:
        user = record.user_id
        ranked = self.recommender.rank(self._rank_query(
            session, user, record.ts, profile_view, room_context, personal), k=self.k)
        self._remember(self.recent_recs, session, [r["item_id"] for r in ranked],
                       self.recent_recs_cap)
        if not ranked:  # still one per item event (the contract): an empty top-K
            self.empty += 1
            if self.metrics is not None:
                self.metrics.empty_recommendations.inc()
        return Recommendation(
            user_id=user, ts=int(time.time() * 1000), request_id=record.event_id,
            model_version=self.recommender.model_version, items=ranked,
            room_id=getattr(record, "room_id", None), personalized=personal)

    def forget(self, user: str, session_ids: Iterable[str] = ()) -> dict[str, int]:
        """Erase ``user`` from this replica: latest scores, the recommender's sessions of
        the user (learned with the user id or keyed ``user@room``) and their last top-K, the
        user's purchase filter and MF factors, the sessions in ``session_ids`` (the
        profile's: an opted-out user's sessions carry no user id), and pending delayed-label
        examples of both classifiers (keys ``user`` and ``room|user``). What the models
        *learned* from the user stays, folded into shared weights and item statistics (not
        per-user data)."""
        prefix, suffix = f"{user}@", f"|{user}"
        named = set(session_ids)
        for key in [k for k in self.recent_recs if k.startswith(prefix) or k in named]:
            del self.recent_recs[key]
        owned = [key for key, s in self.recommender._sessions.items()
                 if s.user_id == user or key.startswith(prefix) or key in named]
        for key in owned:
            self.recent_recs.pop(key, None)
        return {
            "scores": int(self.scores.pop(user, None) is not None),
            "sessions": self.recommender.forget_user(user, owned),
            "propensity_pending": self.propensity.forget(lambda key: key == user),
            "leave_risk_pending": self.leave_risk.forget(lambda key: key.endswith(suffix)),
        }

    def holds(self, user: str) -> dict[str, int]:
        """What this replica holds about ``user`` (tests and the erasure check)."""
        prefix, suffix = f"{user}@", f"|{user}"
        return {
            "scores": int(user in self.scores),
            "sessions": sum(1 for key, s in self.recommender._sessions.items()
                            if s.user_id == user or key.startswith(prefix)),
            "recent_recs": sum(1 for key in self.recent_recs if key.startswith(prefix)),
            "mf_factors": int(user in self.recommender._mf.u_latents),
            "purchase_filter": int(user in self.recommender._users),
            "propensity_pending": self.propensity.holds(lambda key: key == user),
            "leave_risk_pending": self.leave_risk.holds(lambda key: key.endswith(suffix)),
        }

    def recommend(self, user: str, profile_view: dict[str, Any] | None,
                  room_context: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """On-demand top-K for the user's current session (no learning)."""
        view = profile_view or {}
        session = (view.get("session") or {}).get("id") or f"{user}@shop"
        personal = bool(view.get("consent", True))
        return self.recommender.rank(self._rank_query(
            session, user, view.get("updated_at") or int(time.time() * 1000), view,
            room_context, personal), k=self.k)

    def _rank_query(self, session: str, user: str, ts: int, view: dict[str, Any],
                    room_context: dict[str, Any] | None, personal: bool) -> dict[str, Any]:
        query: dict[str, Any] = {"session_id": session, "ts": ts, "personal": personal,
                                 "room_items": (room_context or {}).get("items", [])}
        if personal:  # without consent: only non-personal signals (session, room, trending)
            query["user_id"] = user
            query["affinity"] = {c["name"]: c["score"]
                                 for c in view.get("affinities", {}).get("categories", [])}
        return query

    def _score_propensity(self, record: LiveEvent | ClickEvent, source: str,
                          view: dict[str, Any], room: dict[str, Any] | None,
                          item: dict[str, Any] | None, viewer: dict[str, Any] | None,
                          personal: bool) -> None:
        user, ts, kind = record.user_id, record.ts, record.type
        self.propensity.tick(ts)
        self.leave_risk.tick(ts)
        self.propensity.observe(user, kind, ts)
        scores: dict[str, float] = {}
        live = isinstance(record, LiveEvent)
        if live and record.room_id:
            watcher = f"{record.room_id}|{user}"
            self.leave_risk.observe(watcher, kind, ts)
            if kind != "leave":
                # contexts are built only when the task computes features (not when it
                # serves the key's newest score: see _DelayedTask.reuse_ms)
                scores["leave_risk"] = self.leave_risk.score(watcher, lambda: {
                    "viewer": viewer or {}, "event": {"type": kind, "ts": ts},
                    "profile": view, "room": room or {}}, ts)
        if kind in PURCHASE_EVENT_KINDS:
            def purchase_context() -> dict[str, Any]:
                facts = item or {}
                return {"profile": view, "room": room or {},
                        "event": {"type": kind, "item_id": record.item_id,
                                  "category": getattr(record, "category", None)
                                  or facts.get("category"),
                                  "price": getattr(record, "price", None) or facts.get("price"),
                                  "source": "live" if live else "clicks"}}
            scores["purchase_propensity"] = self.propensity.score(user, purchase_context, ts)
        if personal and scores:
            kept = dict(self.scores.get(user, {}))
            kept.update({name: round(value, 4) for name, value in scores.items()})
            self._remember(self.scores, user, kept, SCORES_KEPT)

    def _score_previous(self, session: str, item: str) -> None:
        previous = self.recent_recs.get(session)
        if previous is None:
            return
        position = previous.index(item) + 1 if item in previous else 0
        self.hits.add(1.0 if position else 0.0)
        self.ranks.add(1.0 / position if position else 0.0)

    @staticmethod
    def _remember(cache: OrderedDict[str, Any], key: str, value: Any, cap: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        if len(cache) > cap:
            cache.popitem(last=False)

    # ------------------------------------------------------------------ reporting
    def prequential(self) -> dict[str, Any]:
        return {
            "recommender": {"model_version": self.recommender.model_version,
                            "hr@20": self.hits.mean(), "mrr@20": self.ranks.mean(),
                            "scored": self.hits.total, "learned": self.learned,
                            "empty": self.empty,
                            **self.recommender.stats()},
            "propensity": self.propensity.metrics(),
            "leave_risk": self.leave_risk.metrics(),
            "sentiment": {"model_version": room_state._sentiment.model_version,
                          **room_state._sentiment.stats()},
            "segments": self.segments.stats(),
            "restored": self.restored,
        }

    def state_fill(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Entries and cap of each bounded per-session or per-example store, by (model,
        store): how far memory is from its ceiling (the soak and ops dashboards read it)."""
        rec = self.recommender.stats()
        return {
            ("recommender", "sessions"): (rec["sessions"], rec["max_sessions"]),
            ("recommender", "items"): (rec["items"], rec["max_items"]),
            ("recommender", "users"): (rec["users"], rec["max_users"]),
            ("recommender", "recent_recs"): (len(self.recent_recs), self.recent_recs_cap),
            ("propensity", "pending"): (len(self.propensity.labels),
                                        self.propensity.labels.max_pending),
            ("leave_risk", "pending"): (len(self.leave_risk.labels),
                                        self.leave_risk.labels.max_pending),
        }

    def export(self) -> None:
        """Copy the prequential figures and the state fill into the Prometheus gauges."""
        if self.metrics is None:
            return
        for (model, store), (entries, cap) in self.state_fill().items():
            self.metrics.model_state_entries.labels(model, store).set(entries)
            self.metrics.model_state_capacity.labels(model, store).set(cap)
        report = self.prequential()
        rec = report["recommender"]
        quality = self.metrics.model_quality
        for metric, value in (("hr_at_20", rec["hr@20"]), ("mrr_at_20", rec["mrr@20"])):
            if value is not None:
                quality.labels("recommender", metric).set(value)
        self.metrics.model_examples.labels("recommender").set(self.learned)
        sentiment = room_state._sentiment
        self.metrics.model_examples.labels("sentiment").set(sentiment.stats().get(
            "n_learned", 0))
        self.metrics.model_info.labels("sentiment", "ngram-sentiment-1").set(1)
        self.metrics.model_info.labels("recommender", self.recommender.model_version).set(1)
        for name in ("propensity", "leave_risk"):
            figures = report[name]
            for metric in ("roc_auc", "log_loss", "ece"):
                if figures.get(metric) is not None:
                    quality.labels(name, metric).set(figures[metric])
            if figures.get("examples") is not None:
                self.metrics.model_examples.labels(name).set(figures["examples"])
            version = getattr(getattr(self, name), "model_version", "1")
            self.metrics.model_info.labels(name, version).set(1)

    # ------------------------------------------------------------------ snapshots
    def _models(self) -> dict[str, Any]:
        # the comment-mood model is worker-wide (every room's RoomState reads it)
        return {"recommender": self.recommender, "propensity": self.propensity,
                "leave_risk": self.leave_risk, "sentiment": room_state._sentiment,
                "segments": self.segments}

    def snapshot(self) -> dict[str, int]:
        """Write every model's snapshot; return bytes written per model."""
        written = {}
        for name, model in self._models().items():
            blob = save_snapshot(model, None, key=self.key, model_name=name,
                                 version=getattr(model, "model_version", "1"),
                                 offsets=dict(self.offsets))
            self.store.save(name, blob)
            written[name] = len(blob)
        self.last_snapshot = time.monotonic()
        return written

    async def snapshot_forked(self) -> dict[str, int]:
        """:meth:`snapshot` in a forked child, while this process goes on handling events
        (one at a time: see :meth:`rewrite_snapshots`)."""
        async with self._snapshot_lock:
            return await self._snapshot_forked()

    async def rewrite_snapshots(self) -> dict[str, int]:
        """Erasure: snapshot every model now (forked, as :meth:`snapshot_forked`) and then
        delete every older snapshot file of those models, so that no file restorable at the
        next start predates the erasures applied before this call. Raises
        :class:`SnapshotError` when the snapshot failed (older files are then kept)."""
        async with self._snapshot_lock:
            written = await self._snapshot_forked()
            await asyncio.to_thread(self._prune_older)  # unlinks: off the event loop too
        return written

    def rewrite_snapshots_now(self) -> dict[str, int]:
        """:meth:`rewrite_snapshots` in this process (at start, before any event)."""
        written = self.snapshot()
        self._prune_older()
        return written

    def _prune_older(self) -> None:
        for name in MODEL_NAMES:
            for path in self.store.prune(name, keep=1):
                log.info("snapshot %s deleted (older than an erasure)", path.name)

    async def _snapshot_forked(self) -> dict[str, int]:
        """:meth:`snapshot` in a forked child, while this process goes on handling events.

        Pickling the recommender takes hundreds of milliseconds once it holds much state;
        done in the worker it would stall every stream for that long. ``fork`` gives the
        child a copy-on-write image of this instant (a consistent state, with the offsets it
        covers); the child only pickles, signs and writes files, then leaves with
        ``os._exit`` (no logging, no Faust, no sockets touched). Where ``fork`` is missing
        the snapshot is taken in-process.
        """
        if not hasattr(os, "fork"):
            return self.snapshot()
        read_end, write_end = os.pipe()
        forking = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read_end)
                os.write(write_end, orjson.dumps(self.snapshot()))
                code = 0
            finally:
                os._exit(code)
        self.fork_seconds = time.perf_counter() - forking  # how long the event loop waited
        os.close(write_end)
        self._snapshot_child = pid
        try:
            report = await asyncio.to_thread(_read_all, read_end)
            _, status = await asyncio.to_thread(os.waitpid, pid, 0)
        finally:
            os.close(read_end)
        self._snapshot_child = None
        if os.waitstatus_to_exitcode(status) != 0 or not report:
            raise SnapshotError(f"snapshot child failed (wait status {status})")
        self.last_snapshot = time.monotonic()
        return dict(orjson.loads(report))

    def wait_snapshot_child(self) -> None:
        """Let a forked snapshot in flight finish (before the final one, at shutdown: two
        writers would race for the same file sequence)."""
        pid, self._snapshot_child = self._snapshot_child, None
        if pid is not None:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def maybe_snapshot(self) -> dict[str, int] | None:
        if time.monotonic() - self.last_snapshot < self.settings.snapshot_interval_s:
            return None
        return self.snapshot()

    def restore(self) -> dict[str, Any]:
        """Load the newest snapshot of every model that verifies; each refused one (corrupt,
        forged, of another key) is logged and counted, and the next older one is tried."""
        for name in MODEL_NAMES:
            refusals: list[str] = []

            def refused(path: Path, error: SnapshotError, name: str = name,
                        refusals: list[str] = refusals) -> None:
                log.warning("refusing %s snapshot %s: %s", name, path.name, error)
                refusals.append(f"{path.name}: {error}")
                if self.metrics is not None:
                    self.metrics.snapshot_refused.labels(name, error.reason).inc()

            found = load_newest(self.store, name, key=self.key, refused=refused)
            if found is None:
                if refusals:
                    log.error("no %s snapshot verifies (%d refused): starting cold", name,
                              len(refusals))
                    self.restored[name] = {"refused": refusals[0], "refused_files": refusals}
                continue
            model, meta, path = found
            if name == "sentiment":
                room_state._sentiment = model
            else:
                setattr(self, name, model)
            self.restored[name] = {"created_at": meta.get("created_at"),
                                   "offsets": meta.get("offsets", {}), "file": path.name,
                                   "skipped_files": refusals}
        if "recommender" in self.restored and "refused" not in self.restored["recommender"]:
            self.learned = int(self.recommender.stats().get("events_learned", 0))
        return self.restored
