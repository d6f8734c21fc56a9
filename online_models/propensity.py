"""Purchase propensity and leave risk: online classifiers learned from delayed stream labels.

Two tasks share one shape: a feature builder over plain dicts (the user profile view, the
event being scored, the room's insight headline numbers), an :class:`OnlineClassifier` (a
River pipeline: standard scaling then logistic regression, or an adaptive Hoeffding tree, or
both with the better one serving) and :class:`DelayedLabels`, which keeps every prediction
with its features until the stream tells the outcome:

* :class:`PurchasePropensity`: P(the user buys in this session, after this moment). Scored
  on product events; labelled positive by the user's next ``purchase``, negative when the
  session ends (no activity for ``session_gap_s`` of event time, 30 min like the profile).
* :class:`LeaveRisk`: P(the viewer leaves the room within ``horizon_s`` = 60 s). Scored on
  the viewer's live events; positive by a ``leave`` in time, negative when the horizon passes.

Evaluation is prequential: the probability kept for the metrics is the one served when the
example was scored, before its label existed. By default the model learns an example at its
deadline whatever its label (positives are held until then, see :class:`DelayedLabels` for
why). Everything runs on event time (``ts`` of the events, never the wall clock), so a
replay gives the same model and the same figures. Memory is bounded: pending examples are
capped globally (oldest evicted and counted) and per key (new ones skipped and counted).
Tasks and classifiers pickle (no lambdas inside), so a snapshot restores them exactly.

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
from collections.abc import Callable, Mapping
from typing import Any

from river import compose, linear_model, metrics, optim, preprocessing, tree

FORMAT_VERSION = 1
CALIBRATION_BINS = 10
AUC_BINS = 2400            # logit bins of 0.01 over [-12, 12]: ties only within a bin
AUC_LOGIT_RANGE = 12.0
SELECTION_WARMUP = 500     # labelled examples before "auto" may switch away from logistic
SELECTION_ALPHA = 0.002    # weight of one example in the exponentially weighted log loss
PROBA_FLOOR = 1e-4         # served probabilities stay within [floor, 1 - floor]
MAX_SCHEMAS = 256          # distinct feature-name sets stored compactly by DelayedLabels

MODEL_KINDS = ("logistic", "hoeffding", "auto")
OPTIMIZERS = ("adagrad", "sgd")
LIFECYCLES = ("new", "active", "engaged", "loyal", "at_risk", "dormant")
PROFILE_TAGS = ("new", "high_intent", "bargain_hunter", "loyal_buyer", "dormant",
                "big_spender", "gifter", "engaged_viewer")
PRICE_BANDS = ("budget", "mid", "premium", "luxury")
PURCHASE_EVENT_KINDS = ("view", "click", "search", "product_click", "add_to_cart")
IN_ROOM_BUCKETS_MIN = ((0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, math.inf))
LIVE_EVENT_KINDS = ("join", "comment", "like", "gift", "share", "follow", "product_click",
                    "add_to_cart", "purchase")


# ---------------------------------------------------------------------- metrics
def _logit(p: float) -> float:
    p = min(max(p, 1e-12), 1.0 - 1e-12)
    return math.log(p / (1.0 - p))


class BinnedROCAUC:
    """Streaming ROC AUC from score histograms on a fine logit grid.

    ``river.metrics.ROCAUC`` places its thresholds evenly on [0, 1]; with rare positives
    nearly every prediction lies below the first threshold and its estimate collapses toward
    0.5. Here positives and negatives are counted in :data:`AUC_BINS` bins of the logit, and
    the AUC is the Mann-Whitney statistic over the bins (pairs in one bin count one half), so
    it equals the exact AUC whenever no positive and negative share a 0.01-logit bin.
    O(1) per update, O(bins) per read.

    >>> auc = BinnedROCAUC()
    >>> for y, p in [(False, 0.1), (False, 0.4), (True, 0.35), (True, 0.8)]:
    ...     auc.update(y, p)
    >>> auc.get()
    0.75
    """

    __slots__ = ("neg", "pos")

    def __init__(self) -> None:
        self.pos = array("q", bytes(8 * AUC_BINS))
        self.neg = array("q", bytes(8 * AUC_BINS))

    @staticmethod
    def _bin(p: float) -> int:
        z = min(max(_logit(p), -AUC_LOGIT_RANGE), AUC_LOGIT_RANGE)
        return min(AUC_BINS - 1, int((z + AUC_LOGIT_RANGE) / (2 * AUC_LOGIT_RANGE) * AUC_BINS))

    def update(self, y: bool, p: float) -> None:
        (self.pos if y else self.neg)[self._bin(p)] += 1

    def get(self) -> float:
        """AUC so far; 0.5 until both classes were seen."""
        positives, negatives = sum(self.pos), sum(self.neg)
        if not positives or not negatives:
            return 0.5
        below = 0
        wins = 0.0
        for pos, neg in zip(self.pos, self.neg, strict=True):
            wins += pos * (below + 0.5 * neg)
            below += neg
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
    """ROC AUC, log loss (``river.metrics.LogLoss``), Brier score and calibration of
    (label, probability served before the label was known) pairs.

    >>> m = PrequentialMetrics()
    >>> m.to_dict()["roc_auc"] is None
    True
    >>> m.update(True, 0.9); m.update(False, 0.2)
    >>> d = m.to_dict()
    >>> d["examples"], d["positives"], d["roc_auc"], d["log_loss"]
    (2, 1, 1.0, 0.1643)
    """

    __slots__ = ("auc", "brier", "calibration", "examples", "log_loss", "positives")

    def __init__(self) -> None:
        self.auc = BinnedROCAUC()
        self.log_loss = metrics.LogLoss()
        self.calibration = CalibrationTable()
        self.examples = 0
        self.positives = 0
        self.brier = 0.0

    def update(self, y: bool, p: float) -> None:
        y = bool(y)
        self.examples += 1
        self.positives += y
        self.auc.update(y, p)
        self.log_loss.update(y, p)
        self.calibration.update(y, p)
        self.brier += (p - y) ** 2

    def to_dict(self) -> dict[str, Any]:
        """The figures; scores are None before the first example (nothing to export)."""
        n = self.examples
        return {
            "examples": n,
            "positives": self.positives,
            "positive_rate": round(self.positives / n, 4) if n else None,
            "roc_auc": round(self.auc.get(), 4) if n else None,
            "log_loss": round(self.log_loss.get(), 4) if n else None,
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


# ---------------------------------------------------------------------- features
def _num(value: Any) -> float:
    """A finite float, or 0.0 for None, NaN, infinities and anything not a number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number - number == 0.0 else 0.0  # NaN and infinities fail this


def _log1p(value: Any) -> float:
    return math.log1p(max(0.0, _num(value)))


def _section(context: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = context.get(name)
    return value if isinstance(value, Mapping) else {}


def _profile_features(profile: Mapping[str, Any], out: dict[str, float]) -> None:
    rfm = _section(profile, "rfm")
    price = _section(profile, "price")
    session = _section(profile, "session")
    live = _section(profile, "live")
    orders = _num(rfm.get("orders"))
    out["rfm_orders"] = _log1p(orders)
    out["rfm_monetary"] = _log1p(rfm.get("monetary"))
    out["rfm_frequency_30d"] = _log1p(rfm.get("frequency_30d"))
    recency_s = rfm.get("recency_s")
    out["rfm_recency_days"] = _log1p(_num(recency_s) / 86_400.0) if recency_s is not None \
        else 0.0
    out["rfm_has_order"] = float(orders > 0)
    for score in ("r_score", "f_score", "m_score"):
        out[f"rfm_{score}"] = (min(max(_num(rfm.get(score)) or 1.0, 1.0), 5.0) - 1.0) / 4.0
    out["price_sensitivity"] = min(max(_num(price.get("sensitivity")), 0.0), 1.0)
    out["price_avg"] = _log1p(price.get("avg_price"))
    band = price.get("band")
    for name in PRICE_BANDS:
        out[f"price_band_{name}"] = float(band == name)
    carts, purchases = _num(session.get("carts")), _num(session.get("purchases"))
    out["sess_events"] = _log1p(session.get("events"))
    out["sess_dwell_min"] = _log1p(_num(session.get("dwell_s")) / 60.0)
    out["sess_carts"] = _log1p(carts)
    out["sess_purchases"] = _log1p(purchases)
    out["sess_open_cart"] = float(carts > purchases)
    out["sess_items"] = _log1p(len(session.get("recent_items") or ()))
    out["sess_in_room"] = float(bool(session.get("in_room")))
    out["live_watch_min"] = _log1p(_num(live.get("watch_time_s")) / 60.0)
    out["live_rooms"] = _log1p(live.get("rooms_watched"))
    out["live_comments"] = _log1p(live.get("comments"))
    out["live_likes"] = _log1p(live.get("likes"))
    out["live_gifts"] = _log1p(live.get("gifts"))
    out["live_gift_value"] = _log1p(live.get("gift_value"))
    tags = set(profile.get("tags") or ())
    for tag in PROFILE_TAGS:
        out[f"tag_{tag}"] = float(tag in tags)
    lifecycle = profile.get("lifecycle")
    for stage in LIFECYCLES:
        out[f"life_{stage}"] = float(lifecycle == stage)


def _room_features(room: Mapping[str, Any], out: dict[str, float]) -> None:
    funnel = _section(_section(room, "commerce"), "funnel")
    out["room_present"] = float(bool(room))
    out["room_viewers"] = _log1p(room.get("viewers"))
    out["room_comments_pm"] = _log1p(room.get("comments_per_min"))
    out["room_likes_pm"] = _log1p(room.get("likes_per_min"))
    out["room_orders_pm"] = _log1p(room.get("orders_per_min"))
    out["room_gmv_pm"] = _log1p(room.get("gmv_per_min"))
    out["room_click_to_cart"] = min(max(_num(funnel.get("click_to_cart")), 0.0), 1.0)
    out["room_cart_to_purchase"] = min(max(_num(funnel.get("cart_to_purchase")), 0.0), 1.0)
    out["room_sentiment"] = min(max(_num(_section(room, "mood").get("sentiment")), -1.0), 1.0)


def purchase_features(context: Mapping[str, Any]) -> dict[str, float]:
    """Features of :class:`PurchasePropensity`; every value numeric and bounded.

    ``context`` keys (each optional; missing parts read as zero):

    * ``profile``: :meth:`agents.users.profile.UserProfile.view` at the event time. Used:
      ``rfm.{orders, monetary, frequency_30d, recency_s, r_score, f_score, m_score}``,
      ``price.{sensitivity, avg_price, band}``,
      ``session.{events, dwell_s, carts, purchases, recent_items, in_room}``,
      ``live.{watch_time_s, rooms_watched, comments, likes, gifts, gift_value}``,
      ``affinities.categories`` (names and scores), ``tags``, ``lifecycle``.
    * ``event``: the event being scored, ``{type, item_id, category, price, source}``
      (``type`` in :data:`PURCHASE_EVENT_KINDS`, ``source`` ``"live"`` or ``"clicks"``;
      ``category`` and ``price`` from the event or the catalog).
    * ``room``: the room's latest insight (the ``room-insights`` JSON) when the event comes
      from a live room. Used: ``viewers``, ``comments_per_min``, ``likes_per_min``,
      ``orders_per_min``, ``gmv_per_min``, ``commerce.funnel.{click_to_cart,
      cart_to_purchase}``, ``commerce.pinned.item_id``, ``mood.sentiment``.

    Counts enter as ``log1p``, scores in [0, 1] as they are, categories one-hot.

    >>> f = purchase_features({"event": {"type": "add_to_cart", "price": 99.0}})
    >>> f["ev_add_to_cart"], f["ev_view"], round(f["item_price"], 3), f["room_present"]
    (1.0, 0.0, 4.605, 0.0)
    """
    profile = _section(context, "profile")
    event = _section(context, "event")
    room = _section(context, "room")
    out: dict[str, float] = {}
    _profile_features(profile, out)
    kind = event.get("type")
    for name in PURCHASE_EVENT_KINDS:
        out[f"ev_{name}"] = float(kind == name)
    out["ev_live"] = float(event.get("source") == "live")
    item_price = _num(event.get("price"))
    avg_price = _num(_section(profile, "price").get("avg_price"))
    out["item_price"] = _log1p(item_price)
    out["item_price_vs_usual"] = (min(max(math.log(item_price / avg_price), -3.0), 3.0)
                                  if item_price > 0 and avg_price > 0 else 0.0)
    categories = _section(profile, "affinities").get("categories") or ()
    category = event.get("category")
    score = next((_num(row.get("score")) for row in categories
                  if isinstance(row, Mapping) and row.get("name") == category), 0.0)
    out["item_category_affinity"] = _log1p(score)
    out["item_top_category"] = float(bool(categories) and isinstance(categories[0], Mapping)
                                     and categories[0].get("name") == category)
    _room_features(room, out)
    pinned = _section(_section(room, "commerce"), "pinned")
    out["item_is_pinned"] = float(bool(event.get("item_id"))
                                  and pinned.get("item_id") == event.get("item_id"))
    return out


def leave_features(context: Mapping[str, Any]) -> dict[str, float]:
    """Features of :class:`LeaveRisk`; every value numeric and bounded.

    ``context`` keys (each optional):

    * ``viewer``: this viewer in this room, ``{joined_at, last_active_at, events,
      returning}`` (ms event times of the join and of the activity before this event, live
      events so far in the room, whether they had watched this room before). Time in the
      room enters as ``log1p`` minutes and as one-hot buckets :data:`IN_ROOM_BUCKETS_MIN`.
    * ``event``: ``{type, ts}`` of the live event being scored (``type`` in
      :data:`LIVE_EVENT_KINDS`).
    * ``profile``: as for :func:`purchase_features`, except ``affinities``.
    * ``room``: the room's latest insight. Used: the fields of :func:`purchase_features`
      plus ``peak_viewers``, ``audience.{avg_watch_s, retention.1m, retention.5m}``,
      ``windows.tumbling_1m.{joins, leaves}``, ``commerce.pinned.pinned_at``.

    >>> f = leave_features({"viewer": {"joined_at": 0, "last_active_at": 50_000, "events": 3},
    ...                     "event": {"type": "comment", "ts": 60_000}})
    >>> round(f["v_in_room_min"], 3), round(f["v_idle_s"], 3), f["ev_comment"]
    (0.693, 2.398, 1.0)
    """
    viewer = _section(context, "viewer")
    event = _section(context, "event")
    room = _section(context, "room")
    profile = _section(context, "profile")
    out: dict[str, float] = {}
    ts = _num(event.get("ts"))
    joined = viewer.get("joined_at")
    last = viewer.get("last_active_at")
    in_room_min = max(0.0, (ts - _num(joined)) / 60_000.0) if joined is not None else 0.0
    out["v_in_room_min"] = math.log1p(in_room_min)
    # leaving is not monotone in time watched (few leave at once, most after minutes)
    for index, (low, high) in enumerate(IN_ROOM_BUCKETS_MIN):
        out[f"v_in_room_{index}"] = float(joined is not None and low <= in_room_min < high)
    out["v_idle_s"] = _log1p((ts - _num(last)) / 1000.0) if last is not None else 0.0
    out["v_events"] = _log1p(viewer.get("events"))
    out["v_returning"] = float(bool(viewer.get("returning")))
    kind = event.get("type")
    for name in LIVE_EVENT_KINDS:
        out[f"ev_{name}"] = float(kind == name)
    _profile_features(profile, out)
    _room_features(room, out)
    audience = _section(room, "audience")
    retention = _section(audience, "retention")
    last_minute = _section(_section(room, "windows"), "tumbling_1m")
    viewers = _num(room.get("viewers"))
    peak = _num(room.get("peak_viewers"))
    out["room_viewers_vs_peak"] = min(viewers / peak, 1.0) if peak > 0 else 0.0
    out["room_avg_watch_min"] = _log1p(_num(audience.get("avg_watch_s")) / 60.0)
    out["room_retention_1m"] = min(max(_num(retention.get("1m")), 0.0), 1.0)
    out["room_retention_5m"] = min(max(_num(retention.get("5m")), 0.0), 1.0)
    out["room_leaves_1m"] = min(_num(last_minute.get("leaves")) / max(viewers, 1.0), 5.0)
    out["room_joins_1m"] = min(_num(last_minute.get("joins")) / max(viewers, 1.0), 5.0)
    pinned_at = _section(_section(room, "commerce"), "pinned").get("pinned_at")
    out["room_pin_age_min"] = _log1p((ts - _num(pinned_at)) / 60_000.0) \
        if pinned_at is not None and ts else 0.0
    return out


# ---------------------------------------------------------------------- tasks
class _DelayedTask:
    """Feature builder + :class:`OnlineClassifier` + :class:`DelayedLabels`."""

    name = "task"

    def __init__(self, *, model: str, seed: int, optimizer: str, learning_rate: float,
                 l2: float, max_pending: int, max_per_key: int, min_interval_s: float,
                 release: str, warmup: int) -> None:
        self.classifier = OnlineClassifier(model, seed=seed, optimizer=optimizer,
                                           learning_rate=learning_rate, l2=l2, name=self.name)
        self.labels = DelayedLabels(max_pending, max_per_key, int(min_interval_s * 1000),
                                    release)
        self.scored = 0
        self.warmup = warmup
        self.warm_since: int | None = None  # event time the model had learned `warmup`
        self.warm = PrequentialMetrics()    # examples scored from then on

    @property
    def model_version(self) -> str:
        return self.classifier.model_version

    def features(self, context: Mapping[str, Any]) -> dict[str, float]:
        raise NotImplementedError

    def _deadline(self, ts: int) -> int:
        raise NotImplementedError

    def score(self, key: str, context: Mapping[str, Any], ts: int) -> float:
        """Predict for ``key`` at ``ts`` and keep the example until its label is known."""
        x = self.features(context)
        p = self.classifier.predict_proba_one(x)
        self.scored += 1
        self.labels.open(key, x, p, ts, self._deadline(ts))
        return p

    def _learn(self, examples: list[TimedExample], now_ts: int) -> int:
        for x, p, y, scored_at in examples:
            if self.warm_since is not None and scored_at >= self.warm_since:
                self.warm.update(y, p)
            self.classifier.learn_one(x, y, p)
        if self.warm_since is None and self.classifier.learned >= self.warmup:
            self.warm_since = now_ts
        return len(examples)

    def forget(self, matches: Callable[[str], bool]) -> int:
        """Drop the pending (delayed-label) examples of the keys that ``matches``."""
        return self.labels.forget(matches)

    def tick(self, now_ts: int) -> int:
        """Learn the examples whose deadline passed before ``now_ts``; returns how many."""
        return self._learn(self.labels.expire_timed(now_ts), now_ts)

    def metrics(self) -> dict[str, Any]:
        """Prequential figures of the served scores (all, and after warm-up), label counts."""
        out = self.classifier.metrics()
        out["scored"] = self.scored
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
    start.
    """

    name = "purchase_propensity"

    def __init__(self, *, session_gap_s: float = 1800.0, model: str = "logistic",
                 seed: int = 0, optimizer: str = "adagrad", learning_rate: float = 0.01,
                 l2: float = 1e-4, max_pending: int = 200_000, max_per_key: int = 8,
                 min_interval_s: float = 0.0, release: str = "deadline",
                 warmup: int = 1000) -> None:
        super().__init__(model=model, seed=seed, optimizer=optimizer,
                         learning_rate=learning_rate, l2=l2,
                         max_pending=max_pending, max_per_key=max_per_key,
                         min_interval_s=min_interval_s, release=release, warmup=warmup)
        self.session_gap_ms = int(session_gap_s * 1000)

    def features(self, context: Mapping[str, Any]) -> dict[str, float]:
        return purchase_features(context)

    def _deadline(self, ts: int) -> int:
        return ts + self.session_gap_ms

    def score(self, key: str, context: Mapping[str, Any], ts: int) -> float:
        self.labels.extend(key, ts, self._deadline(ts))  # scoring is activity too
        return super().score(key, context, ts)

    def observe(self, key: str, outcome_kind: str, ts: int) -> int:
        """Fold an event of ``key``; returns how many examples were learned now."""
        self.labels.extend(key, ts, self._deadline(ts))
        if outcome_kind == "purchase":
            return self._learn(self.labels.resolve_timed(key, True, ts), ts)
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

    def __init__(self, *, horizon_s: float = 60.0, model: str = "logistic", seed: int = 0,
                 optimizer: str = "adagrad", learning_rate: float = 0.01, l2: float = 1e-4,
                 max_pending: int = 200_000, max_per_key: int = 8,
                 min_interval_s: float = 0.0, release: str = "deadline",
                 warmup: int = 1000) -> None:
        super().__init__(model=model, seed=seed, optimizer=optimizer,
                         learning_rate=learning_rate, l2=l2,
                         max_pending=max_pending, max_per_key=max_per_key,
                         min_interval_s=min_interval_s, release=release, warmup=warmup)
        self.horizon_ms = int(horizon_s * 1000)

    def features(self, context: Mapping[str, Any]) -> dict[str, float]:
        return leave_features(context)

    def _deadline(self, ts: int) -> int:
        return ts + self.horizon_ms

    def observe(self, key: str, outcome_kind: str, ts: int) -> int:
        """Fold an event of ``key``; returns how many examples were learned now."""
        if outcome_kind == "leave":
            return self._learn(self.labels.resolve_timed(key, True, ts), ts)
        return 0
