"""An ensemble of streaming anomaly detectors on one calibrated scale.

Detectors score on different scales: :class:`~online_models.anomaly.AnomalyDetector` already
reports ``-log10(p) / 6`` for a tail probability ``p``, while the novelty of
:class:`~online_models.anomaly_cad.ContextAnomalyDetector` is a share of new contexts whose
meaning depends on the series. :class:`Calibrator` puts any score in [0, 1] on the first
scale: ``p`` is the share of the detector's own past scores (a decayed histogram) at least as
high, so a novelty that this series produces every few hundred points reads about 0.4, and one
never seen in 10 000 points at most 0.67. :class:`EnsembleDetector` combines its members'
calibrated scores by their maximum (default) or mean.

>>> det = EnsembleDetector(warmup=100)
>>> for i in range(3_000):
...     x = {"value": 10.0 + (i % 7) * 0.1, "ts": 1_700_000_000.0 + 60 * i}
...     _ = det.score_one(x)
...     det.learn_one(x)
>>> nxt = {"value": 10.4, "ts": 1_700_180_000.0}          # the cycle goes on
>>> det.score_one(nxt) < 0.1
True
>>> [round(s, 2) for s in det.member_scores(dict(nxt, value=10.3))]   # it breaks
[0.0, 0.58]
>>> det.score_one(dict(nxt, value=50.0))
1.0
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import Any

from online_models.anomaly import AnomalyDetector, _ts, _value
from online_models.anomaly_cad import ContextAnomalyDetector

__all__ = ["Calibrator", "EnsembleDetector", "fast_ensemble"]


class Calibrator:
    """Scores in [0, 1] mapped to ``-log10(p) / 6``, ``p`` the share of past scores at least
    as high (``(count + 1) / (total + 1)``, prequential: call :meth:`score` before
    :meth:`add`).

    Past scores are counted in ``bins`` equal bins (a Fenwick tree gives the tail count in
    O(log bins)); once ``cap`` scores are counted every count is halved, so memory is fixed
    and the distant past fades.

    >>> cal = Calibrator()
    >>> for i in range(1_000):
    ...     cal.add(0.9 if i % 100 == 0 else 0.1)
    >>> round(cal.score(0.1), 3), round(cal.score(0.9), 2), round(cal.score(1.0), 2)
    (0.0, 0.33, 0.5)
    >>> cal.score(0.0)
    0.0
    """

    __slots__ = ("bins", "cap", "counts", "total", "tree")

    def __init__(self, bins: int = 1024, cap: int = 20_000) -> None:
        self.bins = bins
        self.cap = cap
        self.counts = array("d", bytes(8 * bins))
        self.tree = array("d", bytes(8 * (bins + 1)))   # Fenwick tree, highest bin first
        self.total = 0.0

    def _index(self, score: float) -> int:
        """1-based Fenwick index: the highest bin first."""
        b = min(self.bins - 1, max(0, int(score * self.bins)))
        return self.bins - b

    def tail(self, score: float) -> float:
        """(Decayed) count of past scores in ``score``'s bin or above."""
        bins = self.bins
        b = int(score * bins)   # self._index(score), inlined
        i = bins - (0 if b < 0 else bins - 1 if b >= bins else b)
        total, tree = 0.0, self.tree
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    def score(self, score: float) -> float:
        """The calibrated score of ``score`` (0 for a score of 0 or less)."""
        if score <= 0.0:
            return 0.0
        bins = self.bins   # self.tail(score), inlined
        b = int(score * bins)
        i = bins - (0 if b < 0 else bins - 1 if b >= bins else b)
        tail, tree = 0.0, self.tree
        while i > 0:
            tail += tree[i]
            i -= i & -i
        calibrated = 0.0 - math.log10((tail + 1.0) / (self.total + 1.0)) / 6.0   # never -0.0
        return calibrated if calibrated < 1.0 else 1.0

    def add(self, score: float) -> None:
        """Count ``score``."""
        bins = self.bins
        b = int(score * bins)
        i = bins - (0 if b < 0 else bins - 1 if b >= bins else b)
        self.counts[self.bins - i] += 1.0
        self.total += 1.0
        tree, n = self.tree, self.bins
        while i <= n:
            tree[i] += 1.0
            i += i & -i
        if self.total >= self.cap:
            self.counts = array("d", (count / 2.0 for count in self.counts))
            self.total /= 2.0
            self.tree = array("d", bytes(8 * (n + 1)))
            tree = self.tree
            for b, count in enumerate(self.counts):
                j = n - b
                while j <= n:
                    tree[j] += count
                    j += j & -j

    def size(self) -> tuple[int, int]:
        return (self.bins, self.bins)


class EnsembleDetector:
    """Maximum (or mean) of calibrated member scores, in [0, 1].

    Parameters
    ----------
    members
        ``(detector, calibrate)`` pairs; ``calibrate`` says whether the detector's scores go
        through a :class:`Calibrator` (False for scores already on the ``-log10(p) / 6``
        scale). Default: :class:`~online_models.anomaly.AnomalyDetector` as is and a
        calibrated :class:`~online_models.anomaly_cad.ContextAnomalyDetector` without rest
        period, both with ``warmup``.
    combine
        ``"max"`` or ``"mean"``.
    warmup
        Points before any score may be non-zero (used by the default members).
    cap
        Scores a calibrator counts before halving its counts.
    bins
        Bins of a calibrator's histogram (the contextual detector's novelties, with contexts
        up to 4, are multiples of 1/24, so 256 resolve them all).
    seed
        Passed to the default members.

    Examples
    --------
    >>> det = EnsembleDetector(warmup=20)
    >>> scores = []
    >>> for v in [5.0, 5.2, 4.9, 5.1, 5.0, 5.3, 4.8] * 30 + [9.0]:
    ...     scores.append(det.score_one({"value": v}))
    ...     det.learn_one({"value": v})
    >>> max(scores[:-1]) < 0.5 < scores[-1]
    True
    >>> sorted(det.size())[:3]
    ['0.block_maxima', '0.errors', '0.history']
    """

    _parsed = False   # (class default: instances pickled before the attribute existed)

    def __init__(self, members: Sequence[tuple[Any, bool]] | None = None, *,
                 combine: str = "max", warmup: int = 20, cap: int = 20_000,
                 bins: int = 1024, seed: int = 0) -> None:
        if combine not in ("max", "mean"):
            raise ValueError(f"combine must be 'max' or 'mean', not {combine!r}")
        if members is None:
            members = [(AnomalyDetector(warmup=warmup, seed=seed), False),
                       (ContextAnomalyDetector(warmup=warmup, rest=0, seed=seed), True)]
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = [detector for detector, _ in members]
        self.calibrators = [Calibrator(bins=bins, cap=cap) if calibrate else None
                            for _, calibrate in members]
        self.combine = combine
        self.warmup = warmup
        self.seed = seed
        self._cached: tuple[Any, ...] | None = None
        # every member takes a parsed point (``_score_value`` / ``_learn_value``, as the
        # detectors of this package do): parse it once, not once per member and call
        self._parsed = all(hasattr(member, "_score_value") and hasattr(member, "_learn_value")
                           for member in self.members)

    @property
    def n_seen(self) -> int:
        """Points learnt (by the first member)."""
        return int(self.members[0].n_seen)

    def _raw(self, x: dict[str, Any]) -> list[float]:
        key = (x.get("value"), x.get("ts"))
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached[1]
        raw = [member.score_one(x) for member in self.members]
        self._cached = (key, raw)
        return raw

    def _raw_parsed(self, x: dict[str, Any]) -> tuple[Any, ...]:
        """``(raw value, raw ts, value, ts, member scores)`` of ``x`` for members with
        ``_score_value`` (``value`` None: not a valid point), cached for :meth:`learn_one`."""
        given, given_ts = x.get("value"), x.get("ts")
        cached = self._cached
        if cached is not None and cached[0] == given and cached[1] == given_ts:
            return cached
        value = _value(x)
        if value is None:
            self._cached = cached = (given, given_ts, None, None, None)
            return cached
        ts = _ts(x)
        raw = [member._score_value(value, ts) for member in self.members]
        self._cached = cached = (given, given_ts, value, ts, raw)
        return cached

    def member_scores(self, x: dict[str, Any]) -> list[float]:
        """Each member's calibrated score of ``x``."""
        return [raw if calibrator is None else calibrator.score(raw)
                for raw, calibrator in zip(self._raw(x), self.calibrators, strict=True)]

    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of ``x`` in [0, 1], without learning it."""
        if self.combine == "max":   # the hot path, without an intermediate list
            if self._parsed:   # the point is parsed once for every member
                value = _value(x)
                if value is None:
                    return 0.0
                ts = _ts(x)
                raws = [member._score_value(value, ts) for member in self.members]
                self._cached = (x.get("value"), x.get("ts"), value, ts, raws)
                best = 0.0
                calibrators = self.calibrators
                for i, raw in enumerate(raws):   # (cheaper than zip with strict=True)
                    calibrator = calibrators[i]
                    if calibrator is not None:
                        if raw <= 0.0:
                            continue
                        raw = calibrator.score(raw)
                    if raw > best:
                        best = raw
                return best
            raws = self._raw(x)
            best = 0.0
            for raw, calibrator in zip(raws, self.calibrators, strict=True):
                score = raw if calibrator is None else calibrator.score(raw)
                if score > best:
                    best = score
            return best
        scores = self.member_scores(x)
        return sum(scores) / len(scores)

    def learn_one(self, x: dict[str, Any]) -> None:
        """Learn ``x`` (call after :meth:`score_one` for prequential scores)."""
        if self._parsed:
            cached = self._cached
            if cached is None or cached[0] != x.get("value") or cached[1] != x.get("ts"):
                cached = self._raw_parsed(x)
            _, _, value, ts, raws = cached
            if value is not None:
                calibrators = self.calibrators
                for i, member in enumerate(self.members):
                    calibrator = calibrators[i]
                    if calibrator is not None and member.n_seen >= member.warmup:
                        calibrator.add(raws[i])
                    member._learn_value(value, ts)
            self._cached = None
            return
        raw = self._raw(x)
        valid = None
        for member, calibrator, score in zip(self.members, self.calibrators, raw, strict=True):
            if calibrator is not None and member.n_seen >= member.warmup:
                if valid is None:
                    valid = _value(x) is not None
                if valid:
                    calibrator.add(score)
            member.learn_one(x)
        self._cached = None

    def expected_range(self) -> tuple[float, float]:
        """The first member's expected range."""
        return self.members[0].expected_range()

    def size(self) -> dict[str, tuple[int, int]]:
        """``{member.structure: (items stored, cap)}``, plus each calibrator's bins."""
        out: dict[str, tuple[int, int]] = {}
        for index, (member, calibrator) in enumerate(zip(self.members, self.calibrators,
                                                         strict=True)):
            for name, value in member.size().items():
                out[f"{index}.{name}"] = value
            if calibrator is not None:
                out[f"{index}.calibrator_bins"] = calibrator.size()
        return out


def fast_ensemble(warmup: int = 20, seed: int = 0, refractory: int = 100) -> EnsembleDetector:
    """The ensemble sized for speed (``livepulse eval nab --detector fast``; the engine's
    detector with ``refractory=0``): the forecast member without the "step" forecasters,
    500 z-scores of history, and its untrusted forecasters learning their scales on one
    point in 16; a contextual member with contexts of up to 3 points and at most 256 pairs;
    256 calibrator bins.

    >>> det = fast_ensemble(warmup=20)
    >>> for v in [5.0, 5.2, 4.9, 5.1, 5.0, 5.3, 4.8] * 30:
    ...     _ = det.score_one({"value": v})
    ...     det.learn_one({"value": v})
    >>> det.score_one({"value": 5.1}) < 0.5 < det.score_one({"value": 9.0})
    True
    """
    return EnsembleDetector(
        [(AnomalyDetector(warmup=warmup, seed=seed, refractory=refractory, steps=False,
                          history=500, thin=16), False),
         (ContextAnomalyDetector(warmup=warmup, rest=0, depth=3, capacity=256, seed=seed),
          True)],
        warmup=warmup, bins=256, seed=seed)
