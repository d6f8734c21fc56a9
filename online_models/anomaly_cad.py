"""Contextual anomaly detection (in the spirit of CAD OSE) for one numeric series.

Built from the published description of the Contextual Anomaly Detector (Smirnov, NAB's
"CAD OSE"): a series is turned into a stream of discrete *facts*, the detector learns which
*contexts* (recent facts) are followed by which facts, and a point is anomalous in
proportion to how much of what it brings is new: contexts it was never seen after, and
contexts that predicted something else. This module's version:

1. **Facts.** Each value is quantised into levels of width ``range / levels``, the range
   being the one seen during the warm-up (widened a little); values beyond it get levels of
   their own (outside ``0 .. levels - 1``), so a new extreme is a new fact.
2. **Contexts.** The left contexts of a point are the suffixes of the last ``depth`` levels
   (the last level, the last two, ...). Every (context, next level) pair seen is counted
   in one bounded table.
3. **Novelty.** Of the contexts seen before, the share whose continuation never was this
   level (failed predictions), averaged with the share of all ``depth`` (context, level)
   pairs that are new: a value in 0..1.
4. **Rest.** A novelty that does not beat the highest of the previous ``rest`` points is
   reported as 0, so an event alarms once at its start rather than along its whole length.

Memory: one table of at most ``capacity`` pairs (the oldest quarter is dropped when it is
full), and ``depth`` levels. Scores are deterministic (no randomness).

>>> det = ContextAnomalyDetector(warmup=50)
>>> scores = []
>>> for i in range(600):
...     x = {"value": float(i % 10), "ts": 60.0 * i}
...     scores.append(det.score_one(x))
...     det.learn_one(x)
>>> max(scores[300:])
0.0
>>> det.score_one({"value": 55.0, "ts": 36_000.0}) > 0.9
True
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from online_models.anomaly import _value

__all__ = ["ContextAnomalyDetector"]


class ContextAnomalyDetector:
    """Novelty of quantised contexts, a score in [0, 1] (see the module docstring).

    Parameters
    ----------
    levels
        Quantisation levels across the warm-up range (CAD OSE's default of 3 bits: 8).
    depth
        Longest context, in points.
    capacity
        Most (context, level) pairs kept, and most contexts.
    warmup
        Points learned before scores may be non-zero; their range fixes the level width
        (they are kept until then, and learnt on those levels).
    rest
        Points whose highest novelty a new one must beat to be reported (0: report all).
    widen
        Share of the warm-up range added on each side before it is cut into levels.
    seed
        Accepted for a uniform model interface; there is no randomness.

    Examples
    --------
    >>> det = ContextAnomalyDetector(warmup=20)
    >>> for v in [1.0, 2.0, 3.0, 2.0] * 30:
    ...     _ = det.score_one({"value": v})
    ...     det.learn_one({"value": v})
    >>> det.score_one({"value": 1.0}), det.score_one({"value": 3.0}) > 0.5
    (0.0, True)
    >>> det.novelty({"value": 1.0}), det.novelty({"value": 40.0})
    (0.0, 1.0)
    """

    def __init__(self, *, levels: int = 8, depth: int = 4, capacity: int = 50_000,
                 warmup: int = 100, rest: int = 20, widen: float = 0.1, seed: int = 0) -> None:
        if levels < 1 or depth < 1 or capacity < 4 * depth:
            raise ValueError("levels and depth must be >= 1 and capacity >= 4 * depth")
        self.levels = levels
        self.depth = depth
        self.capacity = capacity
        self.warmup = warmup
        self.rest = rest
        self.widen = widen
        self.seed = seed
        self.n_seen = 0
        self._low = math.inf
        self._high = -math.inf
        self._origin: float | None = None   # lower edge of level 0, once fixed
        self._width = 1.0
        # contexts ending at the last point, shortest first, as packed ints (see _digit)
        self._recent: list[int] = []
        self._pairs: dict[int, int] = {}
        self._contexts: dict[int, int] = {}
        self._history: deque[float] = deque(maxlen=max(rest, 1))
        self._warm: list[float] = []   # the warm-up's values (at most ``warmup``)
        self._cached: tuple[float, float, int, list[int]] | None = None

    # ------------------------------------------------------------------ internals

    def _fix_levels(self) -> None:
        scale = max(abs(self._high), abs(self._low), 1e-12)
        span = max(self._high - self._low, 1e-6 * scale)
        self._origin = self._low - self.widen * span
        self._width = span * (1.0 + 2.0 * self.widen) / self.levels

    def _level(self, value: float) -> int:
        assert self._origin is not None
        position = (value - self._origin) / self._width
        return math.floor(min(max(position, -1e15), 1e15))   # finite even for 1e300

    def _novelty(self, value: float) -> float:
        return self._keys(value)[1]

    def _keys(self, value: float) -> tuple[float, float, int, list[int]]:
        """(value, novelty, level digit, (context, level) pair keys), cached so that
        learning the value reuses the work."""
        cached = self._cached
        if cached is not None and cached[0] == value:
            return cached
        # _digit(self._level(value)) inlined
        position = (value - self._origin) / self._width   # type: ignore[operator]
        level = math.floor(-1e15 if position < -1e15 else 1e15 if position > 1e15
                           else position)
        digit = (-_EDGE if level < -_EDGE else _EDGE if level > _EDGE else level) + _EDGE + 1
        pairs, contexts = self._pairs, self._contexts
        predicted = failed = 0
        recent = self._recent
        new = self.depth - len(recent)   # longer than the history: new by definition
        keys = [context * _BASE + digit for context in recent]
        for i, pair in enumerate(keys):   # (zip with strict=True costs more, per call)
            seen = pair in pairs
            if recent[i] in contexts:
                predicted += 1
                failed += not seen
            new += not seen
        novelty = 0.5 * (failed / predicted if predicted else 1.0) + 0.5 * new / self.depth
        self._cached = cached = (value, novelty, digit, keys)
        return cached

    def _learn_level(self, digit: int, keys: list[int] | None = None) -> None:
        pairs, contexts = self._pairs, self._contexts
        recent = self._recent
        if keys is None:
            keys = [context * _BASE + digit for context in recent]
        for i, pair in enumerate(keys):
            pairs[pair] = pairs.get(pair, 0) + 1
            context = recent[i]
            contexts[context] = contexts.get(context, 0) + 1
        capacity = self.capacity
        if len(pairs) > capacity:
            _shrink(pairs)
        if len(contexts) > capacity:
            _shrink(contexts)
        # a (context, level) pair is the next point's context one level longer
        keys.insert(0, digit)
        if len(keys) > self.depth:
            keys.pop()
        self._recent = keys

    # ------------------------------------------------------------------ public API

    def novelty(self, x: dict[str, Any]) -> float:
        """Raw novelty of ``x`` in [0, 1] (no rest period), 0 during the warm-up."""
        value = _value(x)
        if value is None or self._origin is None:
            return 0.0
        return self._novelty(value)

    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of ``x`` in [0, 1], without learning it."""
        value = _value(x)
        if value is None:
            return 0.0
        return self._score_value(value, None)

    def _score_value(self, value: float, ts: float | None) -> float:
        """:meth:`score_one` of a parsed value (``ts`` is not used)."""
        if self._origin is None:
            return 0.0
        novelty = self._keys(value)[1]
        if self.rest and self._history and novelty <= max(self._history):
            return 0.0
        return novelty

    def learn_one(self, x: dict[str, Any]) -> None:
        """Learn ``x`` (call after :meth:`score_one` for prequential scores)."""
        value = _value(x)
        if value is not None:
            self._learn_value(value, None)

    def _learn_value(self, value: float, ts: float | None) -> None:
        """:meth:`learn_one` of a parsed value (``ts`` is not used)."""
        if self._origin is not None:
            cached = self._cached
            if cached is None or cached[0] != value:
                cached = self._keys(value)
            _, novelty, digit, keys = cached
            if self.rest:
                self._history.append(novelty)
            self._learn_level(digit, keys)
        if value < self._low:
            self._low = value
        if value > self._high:
            self._high = value
        self.n_seen += 1
        if self._origin is None:
            self._warm.append(value)
            if self.n_seen >= self.warmup:
                self._fix_levels()
                warm, self._warm = self._warm, []
                for old in warm:
                    self._learn_level(_digit(self._level(old)))
        self._cached = None

    def expected_range(self) -> tuple[float, float]:
        """Values on the levels seen after the last level (the warm-up range before)."""
        if self._high < self._low:
            return (0.0, 0.0)
        if self._origin is None or not self._recent:
            return (self._low, self._high)
        last = self._recent[0]
        nexts = [level for level in range(-self.levels, 2 * self.levels)
                 if last * _BASE + _digit(level) in self._pairs]
        if not nexts:
            return (self._low, self._high)
        return (self._origin + min(nexts) * self._width,
                self._origin + (max(nexts) + 1) * self._width)

    def size(self) -> dict[str, tuple[int, int]]:
        """``{structure: (items stored, cap)}``; every cap is fixed at construction."""
        return {"pairs": (len(self._pairs), self.capacity),
                "contexts": (len(self._contexts), self.capacity),
                "warmup_values": (len(self._warm), self.warmup)}


_BASE = 4096
_EDGE = _BASE // 2 - 1


def _digit(level: int) -> int:
    """``level`` as a base-4096 digit in 1..4095 (levels beyond +-2047 share the extreme
    digits), so a sequence of levels packs into one int: most recent level lowest."""
    return min(max(level, -_EDGE), _EDGE) + _EDGE + 1


def _shrink(table: dict[int, int]) -> None:
    """Drop the oldest quarter of ``table`` (insertion order)."""
    for key in list(table)[: len(table) // 4]:
        del table[key]
