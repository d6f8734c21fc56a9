"""Purchase propensity and leave risk: online classifiers learned from delayed stream labels.

Two tasks share one shape: a dense feature row built straight from plain dicts (the user
profile view, the event being scored, the room's insight headline numbers; see
:mod:`online_models.propensity_features`), a classifier and a delayed-label queue:

* :class:`PurchasePropensity`: P(the user buys in this session, after this moment). Scored
  on product events; labelled positive by the user's next ``purchase``, negative when the
  session ends (no activity for ``session_gap_s`` of event time, 30 min like the profile).
* :class:`LeaveRisk`: P(the viewer leaves the room within ``horizon_s`` = 60 s). Scored on
  the viewer's live events; positive by a ``leave`` in time, negative when the horizon passes.

The per-event path is cheap: :meth:`~_DelayedTask.score` builds the row as a list, packs it
as float32 bytes, scores it with one dot product and keeps it in
:class:`~online_models.delayed_rows.DelayedRows` (rows in one ``bytearray``, no dict per
example). Learning is per mini-batch: :meth:`~_DelayedTask.tick` and ``observe`` only
release labelled examples; :meth:`~_DelayedTask.learn_pending` (the worker's commit, or
automatically every ``batch_size`` released examples) learns them with
:class:`~online_models.batch_logistic.BatchLogistic` (numpy; River's
``StandardScaler | LogisticRegression(AdaGrad)`` in vectorised steps). :meth:`score_many`
and :meth:`predict_many` score a list of events with one matrix product. River stays as the
reference (``model="river"``, ``"hoeffding"``, ``"auto"``), one example at a time.

Evaluation is prequential: the probability kept for the metrics is the one served when the
example was scored, before its label existed. By default the model learns an example at its
deadline whatever its label (positives are held until then, see :class:`DelayedLabels` for
why). Everything runs on event time (``ts`` of the events, never the wall clock), so a
replay gives the same model and the same figures. Memory is bounded: pending examples are
capped globally (oldest evicted and counted) and per key (new ones skipped and counted),
each ~300 bytes (a float32 row plus a few words). Tasks pickle (no lambdas inside), so a
snapshot restores them exactly; a snapshot of another ``FORMAT_VERSION`` is refused (the
model starts cold).

>>> task = PurchasePropensity(session_gap_s=60)
>>> context = {"profile": {"session": {"events": 3, "carts": 1}}, "event": {"type": "click"}}
>>> task.score("u1", context, ts=1_000)  # nothing learned yet
0.5
>>> task.observe("u1", "purchase", ts=5_000)  # labelled positive, learned at the deadline
0
>>> task.tick(now_ts=70_000)
1
>>> task.metrics()["examples"], task.metrics()["positives"]
(1, 1)
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from river import compose, linear_model, optim, preprocessing, tree

from online_models.batch_logistic import STEP_ROWS, BatchLogistic
from online_models.delayed_rows import DelayedRows
from online_models.propensity_features import (
    IN_ROOM_BUCKETS_MIN,
    LEAVE_FEATURES,
    LIFECYCLES,
    LIVE_EVENT_KINDS,
    PRICE_BANDS,
    PROFILE_TAGS,
    PURCHASE_EVENT_KINDS,
    PURCHASE_FEATURES,
    leave_features,
    leave_vector,
    purchase_features,
    purchase_vector,
)

__all__ = [
    "IN_ROOM_BUCKETS_MIN", "LEAVE_FEATURES", "LIFECYCLES", "LIVE_EVENT_KINDS", "PRICE_BANDS",
    "PROFILE_TAGS", "PURCHASE_EVENT_KINDS", "PURCHASE_FEATURES", "BinnedROCAUC",
    "CalibrationTable", "DelayedLabels", "DelayedRows", "LeaveRisk", "OnlineClassifier",
    "PrequentialMetrics", "PurchasePropensity", "RiverClassifier", "constant_baseline",
    "leave_features", "leave_vector", "purchase_features", "purchase_vector",
]

FORMAT_VERSION = 3         # 3: leave-risk engagement and pin-fit features (2: numpy rows)
CALIBRATION_BINS = 10
AUC_BINS = 2400            # logit bins of 0.01 over [-12, 12]: ties only within a bin
AUC_LOGIT_RANGE = 12.0
LOSS_EPS = 1e-15           # probabilities clipped in the log loss
SELECTION_WARMUP = 500     # labelled examples before "auto" may switch away from logistic
SELECTION_ALPHA = 0.002    # weight of one example in the exponentially weighted log loss
PROBA_FLOOR = 1e-4         # served probabilities stay within [floor, 1 - floor]
MAX_SCHEMAS = 256          # distinct feature-name sets stored compactly by DelayedLabels
BATCH_SIZE = 256           # released examples learned together (see learn_pending)

MODEL_KINDS = ("logistic", "hoeffding", "auto")   # of the River OnlineClassifier
TASK_MODELS = ("logistic", "river", "hoeffding", "auto")
OPTIMIZERS = ("adagrad", "sgd")


# ---------------------------------------------------------------------- metrics
def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


def _auc_bins(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1.0 - 1e-12)
    z = np.clip(np.log(p / (1.0 - p)), -AUC_LOGIT_RANGE, AUC_LOGIT_RANGE)
    bins = ((z + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE) * AUC_BINS).astype(np.int64)
    return np.minimum(bins, AUC_BINS - 1)


class BinnedROCAUC:
    """Streaming ROC AUC from score histograms on a fine logit grid.

    ``river.metrics.ROCAUC`` places its thresholds evenly on [0, 1]; with rare positives
    nearly every prediction lies below the first threshold and its estimate collapses toward
    0.5. Here positives and negatives are counted in :data:`AUC_BINS` bins of the logit, and
    the AUC is the Mann-Whitney statistic over the bins (pairs in one bin count one half), so
    it equals the exact AUC whenever no positive and negative share a 0.01-logit bin.
    O(1) per update (:meth:`update_many` for a batch), O(bins) per read.

    >>> auc = BinnedROCAUC()
    >>> for y, p in [(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)]:
    ...     auc.update(y, p)
    >>> auc.get()
    0.75
    >>> batch = BinnedROCAUC()
    >>> batch.update_many(np.array([False, False, True, True]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> batch.get()
    0.75
    """

    __slots__ = ("neg", "pos")

    def __init__(self) -> None:
        self.pos = np.zeros(AUC_BINS, dtype=np.int64)
        self.neg = np.zeros(AUC_BINS, dtype=np.int64)

    @staticmethod
    def _bin(p: float) -> int:
        z = min(max(_logit(p), -AUC_LOGIT_RANGE), AUC_LOGIT_RANGE)
        return min(AUC_BINS - 1, int((z + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE) * AUC_BINS))

    def update(self, y: bool, p: float) -> None:
        (self.pos if y else self.neg)[self._bin(p)] += 1

    def update_many(self, y: np.ndarray, p: np.ndarray) -> None:
        """Count a batch: ``y`` booleans, ``p`` probabilities."""
        bins = _auc_bins(p)
        y = np.asarray(y, dtype=bool)
        self.pos += np.bincount(bins[y], minlength=AUC_BINS)
        self.neg += np.bincount(bins[~y], minlength=AUC_BINS)

    def get(self) -> float:
        """AUC so far; 0.5 until both classes were seen."""
        positives, negatives = int(self.pos.sum()), int(self.neg.sum())
        if not positives or not negatives:
            return 0.5
        below = np.cumsum(self.neg) - self.neg  # negatives in lower bins
        wins = float(self.pos @ (below + 0.5 * self.neg))
        return wins / (positives * negatives)


class CalibrationTable:
    """Reliability table: :data:`CALIBRATION_BINS` equal-width bins of predicted p.

    >>> table = CalibrationTable()
    >>> for y, p in [(True, 0.95), (False, 0.05), (False, 0.05), (True, 0.55)]:
    ...     table.update(y, p)
    >>> [(row["count"], row["observed"]) for row in table.rows()]
    [(2, 0.0), (1, 1.0), (1, 1.0)]
    >>> round(table.ece(), 4)  # (0.1 + 0.45 + 0.05) / 4
    0.15
    """

    __slots__ = ("count", "positives", "sum_p")

    def __init__(self) -> None:
        self.count = [0] * CALIBRATION_BINS
        self.positives = [0] * CALIBRATION_BINS
        self.sum_p = [0.0] * CALIBRATION_BINS

    def update(self, y: bool, p: float) -> None:
        index = min(CALIBRATION_BINS - 1, max(0, int(p * CALIBRATION_BINS)))
        self.count[index] += 1
        self.positives[index] += bool(y)
        self.sum_p[index] += p

    def update_many(self, y: np.ndarray, p: np.ndarray) -> None:
        """Count a batch: ``y`` booleans, ``p`` probabilities."""
        p = np.asarray(p, dtype=np.float64)
        index = np.clip((p * CALIBRATION_BINS).astype(np.int64), 0, CALIBRATION_BINS - 1)
        count = np.bincount(index, minlength=CALIBRATION_BINS)
        positives = np.bincount(index, weights=np.asarray(y, dtype=np.float64),
                                minlength=CALIBRATION_BINS)
        sum_p = np.bincount(index, weights=p, minlength=CALIBRATION_BINS)
        for i in np.flatnonzero(count).tolist():
            self.count[i] += int(count[i])
            self.positives[i] += int(positives[i])
            self.sum_p[i] += float(sum_p[i])

    def rows(self) -> list[dict[str, float]]:
        """Non-empty bins: range, count, mean predicted p and observed positive rate."""
        out = []
        for index, count in enumerate(self.count):
            if count:
                out.append({"lo": index / CALIBRATION_BINS,
                            "hi": (index + 1) / CALIBRATION_BINS, "count": count,
                            "mean_p": round(self.sum_p[index] / count, 4),
                            "observed": round(self.positives[index] / count, 4)})
        return out

    def ece(self) -> float:
        """Expected calibration error: count-weighted mean of |mean p - observed rate|."""
        total = sum(self.count)
        if not total:
            return 0.0
        return sum(abs(self.sum_p[i] - self.positives[i]) for i in range(CALIBRATION_BINS)
                   ) / total


class PrequentialMetrics:
    """ROC AUC, log loss, Brier score and calibration of (label, probability served before
    the label was known) pairs, one at a time or a batch at a time.

    >>> m = PrequentialMetrics()
    >>> m.to_dict()["roc_auc"] is None
    True
    >>> m.update(True, 0.9); m.update(False, 0.2)
    >>> d = m.to_dict()
    >>> d["examples"], d["positives"], d["roc_auc"], d["log_loss"]
    (2, 1, 1.0, 0.1643)
    >>> b = PrequentialMetrics()
    >>> b.update_many(np.array([True, False]), np.array([0.9, 0.2]))
    >>> b.to_dict() == d
    True
    """

    __slots__ = ("auc", "brier", "calibration", "examples", "log_loss", "positives")

    def __init__(self) -> None:
        self.auc = BinnedROCAUC()
        self.calibration = CalibrationTable()
        self.examples = 0
        self.positives = 0
        self.log_loss = 0.0  # sum of -log p(label)
        self.brier = 0.0

    def update(self, y: bool, p: float) -> None:
        y = bool(y)
        self.examples += 1
        self.positives += y
        self.auc.update(y, p)
        clipped = min(max(p, LOSS_EPS), 1.0 - LOSS_EPS)
        self.log_loss -= math.log(clipped if y else 1.0 - clipped)
        self.calibration.update(y, p)
        self.brier += (p - y) ** 2

    def update_many(self, y: np.ndarray, p: np.ndarray) -> None:
        """:meth:`update` over a batch (``y`` booleans, ``p`` probabilities)."""
        y = np.asarray(y, dtype=bool)
        p = np.asarray(p, dtype=np.float64)
        if not len(y):
            return
        self.examples += len(y)
        self.positives += int(y.sum())
        self.auc.update_many(y, p)
        clipped = np.clip(p, LOSS_EPS, 1.0 - LOSS_EPS)
        self.log_loss -= float(np.log(np.where(y, clipped, 1.0 - clipped)).sum())
        self.calibration.update_many(y, p)
        self.brier += float(((p - y) ** 2).sum())

    def to_dict(self) -> dict[str, Any]:
        """The figures; scores are None before the first example (nothing to export)."""
        n = self.examples
        return {
            "examples": n,
            "positives": self.positives,
            "positive_rate": round(self.positives / n, 4) if n else None,
            "roc_auc": round(self.auc.get(), 4) if n else None,
            "log_loss": round(self.log_loss / n, 4) if n else None,
            "brier": round(self.brier / n, 4) if n else None,
            "ece": round(self.calibration.ece(), 4) if n else None,
            "calibration": self.calibration.rows(),
        }


def constant_baseline(positives: int, examples: int) -> dict[str, Any]:
    """Figures of the constant predictor at the observed base rate (hindsight).

    Its ROC AUC is 0.5 by construction, its log loss the binary entropy of the rate, and it
    is perfectly calibrated in aggregate.

    >>> constant_baseline(1, 4)["log_loss"]
    0.5623
    """
    rate = positives / examples if examples else 0.0
    clipped = min(max(rate, 1e-15), 1 - 1e-15)
    entropy = -(rate * math.log(clipped) + (1 - rate) * math.log(1 - clipped))
    return {"examples": examples, "positive_rate": round(rate, 4), "p": round(rate, 4),
            "roc_auc": 0.5, "log_loss": round(entropy, 4),
            "brier": round(rate * (1 - rate), 4), "ece": 0.0}


# ---------------------------------------------------------------------- classifier
def _logistic_pipeline(optimizer: str, learning_rate: float, l2: float) -> compose.Pipeline:
    step = optim.AdaGrad(learning_rate) if optimizer == "adagrad" else optim.SGD(learning_rate)
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=step, l2=l2)


def _hoeffding_tree(seed: int) -> tree.HoeffdingAdaptiveTreeClassifier:
    return tree.HoeffdingAdaptiveTreeClassifier(
        grace_period=200, max_depth=8, leaf_prediction="nba", seed=seed)


class OnlineClassifier:
    """Binary online classifier with prequential metrics tracked inside.

    Parameters
    ----------
    kind
        ``"logistic"``: ``StandardScaler | LogisticRegression``; ``"hoeffding"``:
        ``HoeffdingAdaptiveTreeClassifier``; ``"auto"``: both learn every example and the one
        with the lower exponentially weighted prequential log loss serves (logistic during
        the first :data:`SELECTION_WARMUP` examples).
    seed
        Seed of the tree's bootstrap sampling (the logistic pipeline is deterministic).
    optimizer, learning_rate, l2
        ``"adagrad"`` (default: per-feature steps suit the one-hot features, and on simulator
        traffic it was the least sensitive to ``learning_rate``) or ``"sgd"``, its step, and
        the L2 penalty of the logistic regression.
    name
        Prefix of :attr:`model_version`.

    Features are a plain ``dict`` of numbers; keys never seen before, or missing now, are
    fine (a missing feature contributes nothing to the logistic score).

    >>> clf = OnlineClassifier(learning_rate=0.1)
    >>> for i in range(400):
    ...     clf.learn_one({"signal": float(i % 2)}, y=bool(i % 2))
    >>> clf.predict_proba_one({"signal": 1.0}) > 0.8 > 0.2 > clf.predict_proba_one({"signal": 0.0})
    True
    >>> clf.predict_proba_one({"never_seen": 3.0}) < 1.0
    True
    """

    def __init__(self, kind: str = "logistic", *, seed: int = 0, optimizer: str = "adagrad",
                 learning_rate: float = 0.01, l2: float = 1e-4,
                 name: str = "classifier") -> None:
        if kind not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS}")
        self.kind = kind
        self.name = name
        self.candidates: dict[str, Any] = {}
        if kind in ("logistic", "auto"):
            self.candidates["logistic"] = _logistic_pipeline(optimizer, learning_rate, l2)
        if kind in ("hoeffding", "auto"):
            self.candidates["hoeffding"] = _hoeffding_tree(seed)
        self.active = next(iter(self.candidates))
        self.candidate_metrics = {name: PrequentialMetrics() for name in self.candidates}
        self.candidate_loss = dict.fromkeys(self.candidates, 0.0)
        self.served = PrequentialMetrics()
        self.learned = 0
        self.positives = 0

    @property
    def model_version(self) -> str:
        """Stable id of the model family and format (not of its learned weights)."""
        return f"{self.name}-v{FORMAT_VERSION}-{self.kind}"

    def _prior(self) -> float:
        return (self.positives + 1.0) / (self.learned + 2.0)

    def _candidate_proba(self, name: str, x: Mapping[str, float]) -> float:
        if not self.learned:
            return 0.5
        proba = self.candidates[name].predict_proba_one(x if type(x) is dict else dict(x))
        p = proba.get(True) if proba else None
        if p is None or p != p:  # a tree leaf with no class counts yet, or NaN
            p = self._prior()
        return min(max(float(p), PROBA_FLOOR), 1.0 - PROBA_FLOOR)

    def predict_proba_one(self, x: Mapping[str, float]) -> float:
        """P(y = True | x) from the serving model."""
        return self._candidate_proba(self.active, x)

    def learn_one(self, x: Mapping[str, float], y: bool, p: float | None = None) -> None:
        """Learn one labelled example.

        ``p`` is the probability served when the example was scored (delayed labels); the
        serving metrics use it. Without it, the current prediction is used (learned after).
        With several candidates, each is also scored on ``x`` before learning it (out of
        sample, though later than when served), and those scores choose the serving model.
        """
        y = bool(y)
        features = x if type(x) is dict else dict(x)
        if len(self.candidates) > 1:
            for name in self.candidates:
                candidate_p = self._candidate_proba(name, features)
                self.candidate_metrics[name].update(y, candidate_p)
                loss = -math.log(candidate_p if y else 1.0 - candidate_p)
                self.candidate_loss[name] += SELECTION_ALPHA * (loss - self.candidate_loss[name])
        self.served.update(y, self.predict_proba_one(features) if p is None else p)
        for model in self.candidates.values():
            model.learn_one(features, y)
        self.learned += 1
        self.positives += y
        if self.kind == "auto" and self.learned >= SELECTION_WARMUP:
            self.active = min(self.candidates, key=self.candidate_loss.__getitem__)

    def metrics(self) -> dict[str, Any]:
        """Prequential figures of the served predictions, plus one block per candidate."""
        out = self.served.to_dict()
        out["model_version"] = self.model_version
        out["active_model"] = self.active
        if len(self.candidates) > 1:
            # Scored when the label arrived, not when served: they compare the candidates
            # fairly but read better than the served figures (the model has learned the
            # examples labelled in between, often of the same user, room and minute).
            out["candidates_at_label_time"] = {
                name: {k: v for k, v in m.to_dict().items() if k != "calibration"}
                for name, m in self.candidate_metrics.items()}
        return out


# ---------------------------------------------------------------------- delayed labels
class _Pending:
    __slots__ = ("deadline", "key", "label", "names", "p", "ts", "values")

    def __init__(self, key: str, names: Any, values: Any, p: float, ts: int,
                 deadline: int) -> None:
        self.key = key
        self.names = names
        self.values = values
        self.p = p
        self.ts = ts
        self.deadline = deadline
        self.label = False


Example = tuple[dict[str, float], float, bool]
TimedExample = tuple[dict[str, float], float, bool, int]
RELEASE_MODES = ("outcome", "deadline")


class DelayedLabels:
    """Predictions waiting for their outcome, in event time.

    :meth:`open` stores the features and the probability served at ``ts`` with a deadline;
    :meth:`resolve` labels the key's examples scored at or before the outcome time (those
    whose deadline had passed by then are negative); :meth:`extend` moves the deadlines of
    a key's open examples (a session that goes on); :meth:`expire` returns the examples whose
    deadline passed before ``now_ts``.

    ``release`` says when a positive reaches the learner. ``"outcome"``: :meth:`resolve`
    returns it at once. ``"deadline"`` (default): it is held and :meth:`expire` returns it
    at its deadline with ``y=True``, like the negatives. Learning positives at once but
    negatives only at their timeout makes the learner see, at any moment, positives scored
    just now next to negatives scored one timeout ago; every feature that drifts with time
    (room age, growing histories) then looks predictive of the label and the scores swing.
    Holding positives keeps the learning order the scoring order (up to the deadline
    extensions), at the cost of learning positives later.

    Bounds: at most ``max_pending`` examples (the oldest is evicted, counted in
    ``evicted``) and ``max_per_key`` unlabelled ones per key; a key that is full, or whose
    newest example is younger than ``min_interval_ms``, does not open another one (counted
    in ``skipped``). Skipping depends only on the past, so it does not bias the labels.

    >>> labels = DelayedLabels(release="outcome")
    >>> labels.open("u1", {"a": 1.0}, 0.3, ts=1_000, deadline_ts=61_000)
    True
    >>> labels.open("u2", {"a": 0.0}, 0.1, ts=2_000, deadline_ts=62_000)
    True
    >>> labels.resolve("u1", True, ts=30_000)
    [({'a': 1.0}, 0.3, True)]
    >>> labels.expire(now_ts=62_001)
    [({'a': 0.0}, 0.1, False)]
    >>> held = DelayedLabels()  # release="deadline"
    >>> held.open("u1", {"a": 1.0}, 0.3, ts=1_000, deadline_ts=61_000)
    True
    >>> held.resolve("u1", True, ts=30_000), held.expire(now_ts=61_001)
    ([], [({'a': 1.0}, 0.3, True)])
    """

    def __init__(self, max_pending: int = 100_000, max_per_key: int = 32,
                 min_interval_ms: int = 0, release: str = "deadline") -> None:
        if max_pending < 1 or max_per_key < 1:
            raise ValueError("max_pending and max_per_key must be >= 1")
        if release not in RELEASE_MODES:
            raise ValueError(f"unknown release {release!r}; expected one of {RELEASE_MODES}")
        self.max_pending = max_pending
        self.max_per_key = max_per_key
        self.min_interval_ms = min_interval_ms
        self.release = release
        # insertion order = opening order. An OrderedDict, not a dict: evicting the oldest
        # with next(iter(dict)) walks over the deleted slots at the dict's front, so at
        # max_pending each eviction cost grew with time (3 -> 175 µs after 400k opens).
        self._pending: OrderedDict[int, _Pending] = OrderedDict()
        self._by_key: dict[str, list[int]] = {}   # unlabelled examples per key
        self._deadlines: list[tuple[int, int]] = []  # (deadline, seq), lazily updated
        self._schemas: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._seq = 0
        self.opened = 0
        self.positives = 0
        self.negatives = 0
        self.evicted = 0
        self.skipped = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_pending"] = OrderedDict(state["_pending"])  # snapshots from before the fix
        self.__dict__.update(state)

    def __len__(self) -> int:
        return len(self._pending)

    def pending_for(self, key: str) -> int:
        """Unlabelled examples of ``key``."""
        return len(self._by_key.get(key, ()))

    # -- compact storage: one shared name tuple per feature schema, values as doubles
    def _pack(self, x: Mapping[str, float]) -> tuple[Any, Any]:
        names = tuple(x)
        try:
            values = array("f", x.values())  # float32: half the memory, ample precision
        except TypeError:
            return None, dict(x)
        shared = self._schemas.get(names)
        if shared is None:
            if len(self._schemas) >= MAX_SCHEMAS:
                return None, dict(x)
            shared = self._schemas[names] = names
        return shared, values

    @staticmethod
    def _unpack(example: _Pending) -> dict[str, float]:
        if example.names is None:
            return dict(example.values)
        return dict(zip(example.names, example.values, strict=True))

    def _out(self, example: _Pending) -> TimedExample:
        if example.label:
            self.positives += 1
        else:
            self.negatives += 1
        return self._unpack(example), example.p, example.label, example.ts

    def open(self, key: str, x: Mapping[str, float], p: float, ts: int,
             deadline_ts: int) -> bool:
        """Keep a scored example until its outcome; False if skipped (key full or too soon)."""
        seqs = self._by_key.get(key)
        if seqs:
            newest = self._pending[seqs[-1]]
            if len(seqs) >= self.max_per_key or ts - newest.ts < self.min_interval_ms:
                self.skipped += 1
                return False
        if len(self._pending) >= self.max_pending:
            self._drop(next(iter(self._pending)))
            self.evicted += 1
        self._seq += 1
        names, values = self._pack(x)
        self._pending[self._seq] = _Pending(key, names, values, float(p), ts, deadline_ts)
        self._by_key.setdefault(key, []).append(self._seq)
        heapq.heappush(self._deadlines, (deadline_ts, self._seq))
        self.opened += 1
        return True

    def _unlink(self, seq: int, key: str) -> None:
        seqs = self._by_key.get(key)
        if seqs is not None and seq in seqs:
            seqs.remove(seq)
            if not seqs:
                del self._by_key[key]

    def _drop(self, seq: int) -> _Pending:
        example = self._pending.pop(seq)
        self._unlink(seq, example.key)
        return example

    def extend(self, key: str, ts: int, deadline_ts: int) -> int:
        """Move to ``deadline_ts`` the deadline of the key's examples still open at ``ts``."""
        moved = 0
        for seq in self._by_key.get(key, ()):
            example = self._pending[seq]
            if example.deadline >= ts and deadline_ts > example.deadline:
                example.deadline = deadline_ts  # its heap entry is refreshed when reached
                moved += 1
        return moved

    def resolve_timed(self, key: str, y: bool, ts: int) -> list[TimedExample]:
        """:meth:`resolve` with the scoring time of each example appended."""
        out: list[TimedExample] = []
        for seq in list(self._by_key.get(key, ())):
            example = self._pending[seq]
            if example.ts > ts:
                continue  # scored after the outcome (out-of-order events): still open
            example.label = bool(y) and ts <= example.deadline
            if self.release == "deadline" and example.label:
                self._unlink(seq, key)  # labelled, held until its deadline
            else:
                self._drop(seq)
                out.append(self._out(example))
        return out

    def resolve(self, key: str, y: bool, ts: int) -> list[Example]:
        """The outcome ``y`` happened at ``ts``: label the key's examples scored by then.

        Returns the examples released now (none of the positives with
        ``release="deadline"``). Examples scored after ``ts`` (out-of-order events) stay
        open; examples whose deadline had passed before ``ts`` are released as negatives.
        """
        return [(x, p, label) for x, p, label, _ in self.resolve_timed(key, y, ts)]

    def expire_timed(self, now_ts: int) -> list[TimedExample]:
        """:meth:`expire` with the scoring time of each example appended."""
        out: list[TimedExample] = []
        heap = self._deadlines
        while heap and heap[0][0] < now_ts:
            deadline, seq = heapq.heappop(heap)
            example = self._pending.get(seq)
            if example is None:
                continue  # released or evicted already
            if example.deadline != deadline:
                heapq.heappush(heap, (example.deadline, seq))  # extended meanwhile
                continue
            self._drop(seq)
            out.append(self._out(example))
        if len(heap) > 4 * len(self._pending) + 1024:  # stale entries of released examples
            self._deadlines = [(e.deadline, s) for s, e in self._pending.items()]
            heapq.heapify(self._deadlines)
        return out

    def expire(self, now_ts: int) -> list[Example]:
        """Examples whose deadline is before ``now_ts`` (event time): the unlabelled ones as
        negatives, the held positives (``release="deadline"``) as positives."""
        return [(x, p, label) for x, p, label, _ in self.expire_timed(now_ts)]

    def forget(self, matches: Callable[[str], bool]) -> int:
        """Drop every pending example whose key ``matches`` (labelled or not, never
        learned): erasure of a user. O(pending); returns how many were dropped."""
        doomed = [seq for seq, example in self._pending.items() if matches(example.key)]
        for seq in doomed:
            self._drop(seq)  # its deadline heap entry is skipped when reached
        return len(doomed)

    def stats(self) -> dict[str, int]:
        return {"pending": len(self._pending), "opened": self.opened,
                "released_positive": self.positives, "released_negative": self.negatives,
                "evicted": self.evicted, "skipped": self.skipped}


# ---------------------------------------------------------------------- River reference
class RiverClassifier:
    """:class:`OnlineClassifier` (River) behind the row interface of
    :class:`~online_models.batch_logistic.BatchLogistic`: rows are zipped with the feature
    names into dicts and learned one at a time. The reference model (``model="river"``, the
    former default, or ``"hoeffding"`` / ``"auto"``): same figures, ~100x the cost."""

    def __init__(self, kind: str, names: Sequence[str], *, seed: int, optimizer: str,
                 learning_rate: float, l2: float, name: str) -> None:
        self.kind = kind
        self.names = tuple(names)
        self.inner = OnlineClassifier("logistic" if kind == "river" else kind, seed=seed,
                                      optimizer=optimizer, learning_rate=learning_rate,
                                      l2=l2, name=name)

    @property
    def learned(self) -> int:
        return self.inner.learned

    @property
    def model_version(self) -> str:
        return f"{self.inner.name}-v{FORMAT_VERSION}-{self.kind}"

    def predict_one(self, row: Sequence[float]) -> float:
        return self.inner.predict_proba_one(dict(zip(self.names, row, strict=True)))

    def predict_packed(self, packed: bytes) -> float:
        return self.predict_one(np.frombuffer(packed, np.float32).tolist())

    def predict_many(self, rows: Any) -> np.ndarray:
        return np.array([self.predict_one(row) for row in np.asarray(rows).tolist()],
                        dtype=np.float64)

    def learn_many(self, rows: Any, y: Any, p: Any = None) -> None:
        served = [None] * len(y) if p is None else np.asarray(p).tolist()
        for row, label, prob in zip(np.asarray(rows).tolist(), np.asarray(y).tolist(),
                                    served, strict=True):
            self.inner.learn_one(dict(zip(self.names, row, strict=True)), label, prob)

    def info(self) -> dict[str, Any]:
        report = self.inner.metrics()
        out: dict[str, Any] = {"active_model": report["active_model"]}
        if "candidates_at_label_time" in report:
            out["candidates_at_label_time"] = report["candidates_at_label_time"]
        return out


# ---------------------------------------------------------------------- tasks
class _DelayedTask:
    """Feature vector + classifier + :class:`~online_models.delayed_rows.DelayedRows`.

    Scoring is per event (:meth:`score`, a few µs) or per batch (:meth:`score_many`,
    :meth:`predict_many`); learning is per mini-batch: released examples (labelled, or past
    their deadline) wait in ``labels`` and are learned together, by :meth:`learn_pending`
    or automatically once ``batch_size`` of them are waiting.
    """

    name = "task"
    feature_names: tuple[str, ...] = ()
    extends = False   # whether scoring extends the key's open deadlines (sessions)
    delay_ms = 0      # deadline = scoring time + delay_ms
    # A score that could not be kept as an example (the key is full or scored too recently)
    # serves the key's newest example's probability when that is at most this old, without
    # computing features: what the model learns is the same, and a chatty viewer or a long
    # browsing session stops paying for features nothing keeps. 0: always computed.
    reuse_ms = 10_000
    reused = 0        # scores served from the key's newest example (class default: old snapshots)

    def __init__(self, *, model: str, seed: int, optimizer: str, learning_rate: float,
                 l2: float, max_pending: int, max_per_key: int, min_interval_s: float,
                 release: str, warmup: int, batch_size: int, step_rows: int) -> None:
        if model not in TASK_MODELS:
            raise ValueError(f"unknown model {model!r}; expected one of {TASK_MODELS}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.format_version = FORMAT_VERSION
        self.classifier: BatchLogistic | RiverClassifier
        if model == "logistic":
            self.classifier = BatchLogistic(len(self.feature_names), optimizer=optimizer,
                                            learning_rate=learning_rate, l2=l2,
                                            step_rows=step_rows, name=self.name,
                                            version=FORMAT_VERSION)
        else:
            self.classifier = RiverClassifier(model, self.feature_names, seed=seed,
                                              optimizer=optimizer,
                                              learning_rate=learning_rate, l2=l2,
                                              name=self.name)
        self.labels = DelayedRows(len(self.feature_names), max_pending, max_per_key,
                                  int(min_interval_s * 1000), release)
        self.batch_size = batch_size
        self.scored = 0
        self.clock = 0                      # latest event time seen
        self.warmup = warmup
        self.warm_since: int | None = None  # event time the model had learned `warmup`
        self.served = PrequentialMetrics()  # every learned example, at its served p
        self.warm = PrequentialMetrics()    # examples scored from warm_since on

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("format_version") != FORMAT_VERSION:
            # a snapshot of another layout: refused, the worker starts this model cold
            raise ValueError(f"{self.name} snapshot of format {state.get('format_version')!r}"
                             f", this build reads {FORMAT_VERSION}")
        self.__dict__.update(state)

    @property
    def model_version(self) -> str:
        return self.classifier.model_version

    def vector(self, context: Mapping[str, Any]) -> list[float]:
        """The feature row of ``context`` (order: ``feature_names``)."""
        raise NotImplementedError

    def features(self, context: Mapping[str, Any]) -> dict[str, float]:
        """The features of ``context`` by name (reports, tests)."""
        return dict(zip(self.feature_names, self.vector(context), strict=True))


    # ------------------------------------------------------------------ scoring
    def score(self, key: str, context: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
              ts: int) -> float:
        """Predict for ``key`` at ``ts`` and keep the example until its label is known (when
        the key cannot keep another one, see ``reuse_ms``). ``context`` may be a function
        returning it: called only when the features are computed."""
        labels = self.labels
        if self.extends:  # a scored event is activity that moves the key's deadlines
            labels.extend(key, ts, ts + self.delay_ms)
        if self.reuse_ms:
            kept = labels.skipped_p(key, ts, self.reuse_ms)
            if kept is not None:
                self.scored += 1
                self.reused += 1
                if ts > self.clock:
                    self.clock = ts
                return kept
        if callable(context):
            context = context()
        packed = labels.pack(self.vector(context))
        p = self.classifier.predict_packed(packed)
        self.scored += 1
        if ts > self.clock:
            self.clock = ts
        labels.open(key, packed, p, ts, ts + self.delay_ms)
        return p

    def score_many(self, events: Iterable[tuple[str, Mapping[str, Any], int]]) -> np.ndarray:
        """:meth:`score` over ``(key, context, ts)`` events in order, with one matrix product
        for the batch; returns the probabilities (float64). Same probabilities as
        :meth:`score` one by one with ``reuse_ms = 0`` (nothing is learned in between), up
        to float rounding."""
        events = list(events)
        if not events:
            return np.zeros(0)
        rows = [self.vector(context) for _, context, _ in events]
        probabilities = self.classifier.predict_many(np.array(rows, dtype=np.float64))
        for (key, _, ts), row, p in zip(events, rows, probabilities.tolist(), strict=True):
            if self.extends:
                self.labels.extend(key, ts, ts + self.delay_ms)
            self.labels.open(key, row, p, ts, ts + self.delay_ms)
            if ts > self.clock:
                self.clock = ts
        self.scored += len(events)
        return probabilities

    def predict_many(self, contexts: Iterable[Mapping[str, Any]]) -> np.ndarray:
        """Probabilities of ``contexts`` (float64 array); nothing is kept or learned."""
        rows = [self.vector(context) for context in contexts]
        if not rows:
            return np.zeros(0)
        return self.classifier.predict_many(np.array(rows, dtype=np.float64))

    # ------------------------------------------------------------------ learning
    def _released(self, count: int) -> int:
        if self.labels.ready >= self.batch_size:
            self.learn_pending()
        return count

    def learn_pending(self) -> int:
        """Learn every released example now (one mini-batch); returns how many.

        Called automatically once ``batch_size`` examples wait; a worker also calls it when
        it commits, so what it learned is in the state it commits.
        """
        rows, y, p, scored_at = self.labels.take_ready()
        n = len(y)
        if not n:
            return 0
        self.served.update_many(y, p)
        if self.warm_since is not None:
            warm = scored_at >= self.warm_since
            self.warm.update_many(y[warm], p[warm])
        if isinstance(self.classifier, RiverClassifier):
            self.classifier.learn_many(rows, y, p)
        else:
            self.classifier.learn_many(rows, y)
        if self.warm_since is None and self.classifier.learned >= self.warmup:
            self.warm_since = self.clock
        return n

    def forget(self, matches: Callable[[str], bool]) -> int:
        """Drop the held examples (pending or released, not yet learned) of the keys that
        ``matches``; returns how many."""
        return self.labels.forget(matches)

    def holds(self, matches: Callable[[str], bool]) -> int:
        """Examples held (not yet learned) of the keys that ``matches``."""
        return self.labels.count(matches)

    def tick(self, now_ts: int) -> int:
        """Release the examples whose deadline passed before ``now_ts``; returns how many
        (learned with the next mini-batch)."""
        if now_ts > self.clock:
            self.clock = now_ts
        released = self.labels.expire(now_ts)
        return self._released(released) if released else 0

    def metrics(self) -> dict[str, Any]:
        """Prequential figures of the served scores (all, and after warm-up), label counts.

        Learns the released examples first (:meth:`learn_pending`), so the figures cover
        every labelled example."""
        self.learn_pending()
        out = self.served.to_dict()
        out["model_version"] = self.model_version
        out.update(self.classifier.info())
        out["scored"] = self.scored
        out["reused"] = self.reused
        out["labels"] = self.labels.stats()
        out["after_warmup"] = {"warmup_examples": self.warmup, "since_ts": self.warm_since,
                               **self.warm.to_dict()}
        return out


class PurchasePropensity(_DelayedTask):
    """P(purchase in this session, from now on), for key = user id.

    :meth:`score` on each product event (storefront view/click/add_to_cart, live
    product_click/add_to_cart) with a context read by :func:`purchase_features`.
    :meth:`observe` with ``"purchase"`` labels the user's open examples positive; any kind
    (the purchase too) is activity that keeps the session open: deadline = ``ts +
    session_gap_s``. :meth:`tick` releases the examples of sessions idle for
    ``session_gap_s`` to the learner (negatives, and positives held until then, see
    :class:`DelayedLabels`). ``warmup``: examples learned before ``after_warmup`` metrics
    start. ``model``: ``"logistic"`` (numpy, mini-batch; default) or the River references
    ``"river"``, ``"hoeffding"``, ``"auto"``.
    """

    name = "purchase_propensity"
    feature_names = PURCHASE_FEATURES

    def __init__(self, *, session_gap_s: float = 1800.0, model: str = "logistic",
                 seed: int = 0, optimizer: str = "adagrad", learning_rate: float = 0.01,
                 l2: float = 1e-4, max_pending: int = 200_000, max_per_key: int = 8,
                 min_interval_s: float = 0.0, release: str = "deadline",
                 warmup: int = 1000, batch_size: int = BATCH_SIZE,
                 step_rows: int = STEP_ROWS) -> None:
        super().__init__(model=model, seed=seed, optimizer=optimizer,
                         learning_rate=learning_rate, l2=l2,
                         max_pending=max_pending, max_per_key=max_per_key,
                         min_interval_s=min_interval_s, release=release, warmup=warmup,
                         batch_size=batch_size, step_rows=step_rows)
        self.session_gap_ms = self.delay_ms = int(session_gap_s * 1000)
        self.extends = True  # scoring is activity too: the session goes on

    def vector(self, context: Mapping[str, Any]) -> list[float]:
        return purchase_vector(context)

    def observe(self, key: str, outcome_kind: str, ts: int) -> int:
        """Fold an event of ``key``; returns how many examples were released (labelled)."""
        if ts > self.clock:
            self.clock = ts
        self.labels.extend(key, ts, ts + self.session_gap_ms)
        if outcome_kind == "purchase":
            released = self.labels.resolve(key, True, ts)
            return self._released(released) if released else 0
        return 0


class LeaveRisk(_DelayedTask):
    """P(the viewer leaves the room within ``horizon_s``), for key = ``f"{room}|{user}"``.

    :meth:`score` on the viewer's live events with a context read by :func:`leave_features`.
    :meth:`observe` with ``"leave"`` labels the key's examples scored within the horizon
    before it positive; other kinds change nothing. :meth:`tick` releases examples older
    than the horizon to the learner. A viewer who vanishes without a ``leave`` counts as
    staying.
    """

    name = "leave_risk"
    feature_names = LEAVE_FEATURES

    def __init__(self, *, horizon_s: float = 60.0, model: str = "logistic", seed: int = 0,
                 optimizer: str = "adagrad", learning_rate: float = 0.01, l2: float = 1e-4,
                 max_pending: int = 200_000, max_per_key: int = 8,
                 min_interval_s: float = 0.0, release: str = "deadline",
                 warmup: int = 1000, batch_size: int = BATCH_SIZE,
                 step_rows: int = STEP_ROWS) -> None:
        super().__init__(model=model, seed=seed, optimizer=optimizer,
                         learning_rate=learning_rate, l2=l2,
                         max_pending=max_pending, max_per_key=max_per_key,
                         min_interval_s=min_interval_s, release=release, warmup=warmup,
                         batch_size=batch_size, step_rows=step_rows)
        self.horizon_ms = self.delay_ms = int(horizon_s * 1000)

    def vector(self, context: Mapping[str, Any]) -> list[float]:
        return leave_vector(context)

    def observe(self, key: str, outcome_kind: str, ts: int) -> int:
        """Fold an event of ``key``; returns how many examples were released (labelled)."""
        if ts > self.clock:
            self.clock = ts
        if outcome_kind == "leave":
            released = self.labels.resolve(key, True, ts)
            return self._released(released) if released else 0
        return 0
