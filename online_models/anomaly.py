"""Streaming anomaly detection for one numeric series (live-room metrics, NAB series).

:class:`AnomalyDetector` scores each point before learning it (prequential), keeps bounded
memory, and needs no training phase beyond a short warm-up. How it scores a point:

1. **Forecasters.** Several cheap forecasts of the value compete: the median of the recent
   window, and, once a series has ``ts`` and is 1.5 periods long, a daily and a weekly
   profile (mean per time-of-day / time-of-week bin plus a level offset) and their "step"
   variants (last value plus the profile's change between the two bins). The forecaster
   with the lowest long-run mean absolute error is trusted for the point.
2. **Surprise.** Its error becomes a z-score (against its recent absolute errors, or the
   profile bin's own spread, since noise often depends on the time of day), and the z-score
   a tail probability against that forecaster's own history of z-scores: the empirical
   share, an exponential tail beyond the 90th percentile, and a long memory of block maxima,
   so a kind of jump that recurs every few thousand points stops alarming. Until the history
   is long, a widened Gaussian reading of z is the floor (few false alarms on short series).
3. **Range.** A value beyond everything seen so far, which the forecaster also finds at
   least mildly unusual, is scored as the rare event it is: a new extreme after n points has
   probability 2 / (n + 1), ten times less per ``spatial_decade`` of the range beyond.
4. **Score.** ``-log10(p) / 6`` clipped to [0, 1]: 0.5 is about 1 in 1 000, 1.0 at most 1 in a
   million. After an alarm, scores that do not beat it by ``margin`` are damped for
   ``refractory`` points (incidents are deduplicated anyway; this keeps one alarm per event).

Per point the work is O(log n) searches plus small list moves; memory is fixed by the
constructor's sizes (see :meth:`AnomalyDetector.size`).

>>> det = AnomalyDetector(seed=0)
>>> for i in range(300):
...     x = {"value": 10.0 + (i % 7) * 0.1, "ts": 1_700_000_000.0 + 60 * i}
...     _ = det.score_one(x)
...     det.learn_one(x)
>>> det.score_one({"value": 10.3, "ts": 1_700_018_000.0}) < 0.2
True
>>> det.score_one({"value": 50.0, "ts": 1_700_018_000.0}) > 0.8
True
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from typing import Any

__all__ = ["AnomalyDetector"]

_SQRT2 = math.sqrt(2.0)
_LN10 = math.log(10.0)
_DAY = 86_400.0
_WEEK = 7 * _DAY
_MIN_ERRORS = 10   # errors a forecaster needs before it may score


def _value(x: dict[str, Any]) -> float | None:
    """``x["value"]`` as a finite float, or None (missing, non-numeric, NaN, infinite)."""
    try:
        value = float(x["value"])
    except (KeyError, TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _ts(x: dict[str, Any]) -> float | None:
    """``x["ts"]`` (epoch seconds) as a finite float in a sane range, or None."""
    ts = x.get("ts")
    if ts is None:
        return None
    try:
        ts = float(ts)
    except (TypeError, ValueError):
        return None
    return ts if math.isfinite(ts) and abs(ts) < 1e13 else None


class _Rolling:
    """The last ``size`` values, in arrival order and sorted."""

    __slots__ = ("pos", "ring", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        self.ring: list[float] = []
        self.sorted: list[float] = []
        self.pos = 0

    def add(self, value: float) -> None:
        if len(self.ring) < self.size:
            self.ring.append(value)
        else:
            old = self.ring[self.pos]
            self.ring[self.pos] = value
            self.pos = (self.pos + 1) % self.size
            del self.sorted[bisect_left(self.sorted, old)]
        insort(self.sorted, value)

    def __len__(self) -> int:
        return len(self.sorted)


class _Tail:
    """P(surprise >= r) for this series, from its own history of surprises."""

    __slots__ = ("block", "blocks", "current", "filled", "history")

    def __init__(self, size: int, block: int, blocks: int) -> None:
        self.history = _Rolling(size)
        self.block = block
        self.blocks = _Rolling(blocks)   # maxima of consecutive blocks: a long, cheap memory
        self.current = 0.0
        self.filled = 0

    def add(self, r: float) -> None:
        self.history.add(r)
        if r > self.current:
            self.current = r
        self.filled += 1
        if self.filled == self.block:
            self.blocks.add(self.current)
            self.current, self.filled = 0.0, 0

    def p(self, r: float) -> float:
        s = self.history.sorted
        n = len(s)
        # a Gaussian z with a widened scale: all there is early on, a floor until the
        # history is long enough to trust its own tail
        prior = math.erfc(r / (_SQRT2 * 1.5))
        if n < 30:
            return prior
        upper = s[int(0.9 * n)]
        top = s[min(n - 1, int(0.99 * n))]
        empirical = (n - bisect_left(s, r)) / n
        if r <= upper:
            p = max(empirical, 1.0 / n)
        else:
            decay = max((top - upper) / _LN10, 1e-12)
            p = max(empirical, 0.1 * math.exp(-(r - upper) / decay))
        if n < 200:
            p = max(p, prior)
        maxima = self.blocks.sorted
        if len(maxima) >= 8:
            seen = len(maxima) - bisect_left(maxima, r) + (self.current >= r)
            p = max(p, seen / ((len(maxima) + 1) * self.block))
        return p


class _Profile:
    """Mean of (value - level) and mean absolute deviation per phase bin of a period (a day
    or a week)."""

    __slots__ = ("count", "mean", "offset", "period", "spread", "width")

    def __init__(self, period: float, max_bins: int, step: float) -> None:
        self.period = period
        self.width = max(step, period / max_bins)
        bins = math.ceil(period / self.width)
        self.mean = [0.0] * bins
        self.spread = [0.0] * bins
        self.count = [0] * bins
        self.offset = 0.0

    def bin(self, ts: float) -> int:
        return int((ts % self.period) // self.width) % len(self.mean)

    def learn(self, b: int, value: float, rate: float) -> None:
        count = self.count[b]
        if count:
            residual = value - self.mean[b] - self.offset
            self.spread[b] += max(1.0 / count, rate) * (abs(residual) - self.spread[b])
            self.offset += 0.1 * residual
        self.mean[b] += max(1.0 / (count + 1), rate) * (value - self.offset - self.mean[b])
        self.count[b] = count + 1


class _Errors:
    """A forecaster's recent absolute errors (robust scale), long-run mean error, and the
    history of its z-scores (its own calibration)."""

    __slots__ = ("abs", "alpha", "mae", "n", "tail")

    def __init__(self, size: int, alpha: float, tail: _Tail) -> None:
        self.abs = _Rolling(size)
        self.alpha = alpha
        self.mae = 0.0
        self.n = 0
        self.tail = tail

    def scale(self) -> float:
        s = self.abs.sorted
        n = len(s)
        return max(1.4826 * s[n // 2], 0.304 * s[int(0.9 * n)], 1e-9)

    def learn(self, error: float) -> None:
        error = abs(error)
        self.abs.add(error)
        self.n += 1
        self.mae = error if self.n == 1 else self.mae + self.alpha * (error - self.mae)


class AnomalyDetector:
    """Online anomaly score in [0, 1] for a numeric stream (see the module docstring).

    Parameters
    ----------
    window
        Points in the recent window (median forecaster, expected range).
    errors
        Recent absolute errors kept per forecaster for its robust scale.
    history
        Recent z-scores kept per forecaster to calibrate its tail probabilities.
    block, blocks
        Long memory of z-scores: the maxima of ``blocks`` blocks of ``block`` points.
    warmup
        Points learned before scores may be non-zero.
    refractory
        Points after an alarm during which scores that do not beat it are damped.
    alarm
        Score that counts as an alarm (0.5: about 1 in 1 000).
    margin
        How much a later score must beat the last alarm to escape damping.
    damp
        Factor applied to damped scores.
    spatial
        Score values beyond the range seen so far (see the module docstring).
    spatial_decade
        Share of the seen range beyond it that makes a new extreme ten times rarer.
    spatial_gate
        Score the forecaster must give a new extreme before the range rule applies.
    extreme_alpha
        Rate of the running frequency of new extremes; 0 (default) assumes exchangeable
        points, about 0.01 suits trending metrics (extremes that keep coming stop alarming).
    seasonal
        Use daily / weekly profiles when points carry ``ts``.
    season_rate
        Learning rate of a profile bin once it has seen a few periods.
    bin_prior
        Pseudo-count pulling a profile bin's spread towards the forecaster's overall one.
    mae_alpha
        Rate of the long-run mean absolute error that ranks the forecasters.
    seed
        Accepted for a uniform model interface; the detector has no randomness.

    Examples
    --------
    >>> det = AnomalyDetector(warmup=20)
    >>> scores = []
    >>> for v in [5.0, 5.2, 4.9, 5.1, 5.0, 5.3, 4.8] * 6 + [9.0]:
    ...     scores.append(det.score_one({"value": v}))
    ...     det.learn_one({"value": v})
    >>> max(scores[:-1]) < 0.5 < scores[-1]
    True
    >>> low, high = det.expected_range()
    >>> 4.0 < low < 5.0 < high < 6.0
    True
    """

    def __init__(self, *, window: int = 64, errors: int = 512, history: int = 1000,
                 block: int = 32, blocks: int = 256, warmup: int = 20, refractory: int = 100,
                 alarm: float = 0.5, margin: float = 0.2, damp: float = 0.5,
                 spatial: bool = True, spatial_decade: float = 0.25, spatial_gate: float = 0.2,
                 extreme_alpha: float = 0.0, seasonal: bool = True, season_rate: float = 0.2,
                 bin_prior: float = 3.0, mae_alpha: float = 0.002, seed: int = 0) -> None:
        self.window = window
        self.errors = errors
        self.history = history
        self.block = block
        self.blocks = blocks
        self.warmup = warmup
        self.refractory = refractory
        self.alarm = alarm
        self.margin = margin
        self.damp = damp
        self.spatial = spatial
        self.spatial_decade = spatial_decade
        self.spatial_gate = spatial_gate
        self.extreme_alpha = extreme_alpha
        self.seasonal = seasonal
        self.season_rate = season_rate
        self.bin_prior = bin_prior
        self.mae_alpha = mae_alpha
        self.seed = seed
        self.n_seen = 0
        self._recent = _Rolling(window)
        self._forecasters = ("median", "daily", "daily_step", "weekly", "weekly_step")
        self._errors = {name: _Errors(errors, mae_alpha, _Tail(history, block, blocks))
                        for name in self._forecasters}
        self._profiles: dict[str, _Profile] = {}
        self._deltas: list[float] = []
        self._step: float | None = None     # sampling interval, once known
        self._first_ts: float | None = None
        self._last_ts: float | None = None
        self._last: float | None = None
        self._low = math.inf
        self._high = -math.inf
        self._extreme_rate = 0.0
        self._since_alarm = refractory
        self._alarm_score = 0.0
        self._cached: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ internals

    def _forecasts(self, ts: float | None) -> dict[str, tuple[float, float | None]]:
        """``{forecaster: (forecast, error scale)}``; the scale is None while the forecaster
        has too few errors to score (it still learns)."""
        out: dict[str, tuple[float, float | None]] = {}
        errors = self._errors
        recent = self._recent.sorted
        if len(recent) >= 3:
            ready = errors["median"].n >= _MIN_ERRORS
            out["median"] = (recent[len(recent) // 2],
                             errors["median"].scale() if ready else None)
        if ts is None or not self._profiles or self._first_ts is None:
            return out
        for name, profile in self._profiles.items():
            if ts - self._first_ts < 1.5 * profile.period:
                continue
            b = profile.bin(ts)
            count = profile.count[b]
            if not count:
                continue
            scale = None
            if errors[name].n >= _MIN_ERRORS:
                # the bin's own spread (noise often depends on the time of day), pulled
                # towards the forecaster's overall scale while the bin has seen few periods
                overall = errors[name].scale()
                spread = 1.2533 * profile.spread[b]   # mean absolute deviation -> sigma
                scale = max(((count - 1) * spread + self.bin_prior * overall)
                            / (count - 1 + self.bin_prior), 0.25 * overall)
            out[name] = (profile.mean[b] + profile.offset, scale)
            if self._last_ts is not None and self._last is not None:
                b0 = profile.bin(self._last_ts)
                if profile.count[b0]:
                    step = name + "_step"
                    ready = errors[step].n >= _MIN_ERRORS
                    out[step] = (self._last + profile.mean[b] - profile.mean[b0],
                                 errors[step].scale() if ready else None)
        return out

    def _evaluate(self, value: float, ts: float | None) -> tuple[Any, ...]:
        """(key, forecasts, z-scores, raw score), cached so learn_one reuses the work."""
        key = (value, ts)
        cached = self._cached
        if cached is not None and cached[0] == key:
            return cached
        forecasts = self._forecasts(ts)
        zs: dict[str, float] = {}
        best, best_mae = None, math.inf
        for name, (forecast, scale) in forecasts.items():
            if scale is None:
                continue
            zs[name] = abs(value - forecast) / scale
            mae = self._errors[name].mae
            if mae < best_mae:
                best, best_mae = name, mae
        raw = 0.0
        if best is not None:
            p = self._errors[best].tail.p(zs[best])
            if p < 1.0:
                raw = min(1.0, -math.log10(max(p, 1e-300)) / 6.0)
        if self.spatial and raw >= self.spatial_gate and self._high > self._low:
            beyond = max(value - self._high, self._low - value) / (self._high - self._low)
            if beyond > 0.0:
                # a new extreme after n exchangeable points has probability 2 / (n + 1) (or
                # the rate new extremes have come at lately, if tracked and higher); each
                # ``spatial_decade`` of the range further out makes it ten times rarer
                base = max(2.0 / (self.n_seen + 1), self._extreme_rate)
                log_p = math.log10(base) - beyond / self.spatial_decade
                raw = max(raw, min(1.0, -log_p / 6.0))
        self._cached = (key, forecasts, zs, raw)
        return self._cached

    def _learn_time(self, value: float, ts: float) -> None:
        if self._first_ts is None:
            self._first_ts = ts
        if self._step is None and self._last_ts is not None:
            if ts > self._last_ts:
                self._deltas.append(ts - self._last_ts)
            if len(self._deltas) >= 10:
                self._deltas.sort()
                self._step = self._deltas[len(self._deltas) // 2]
                self._deltas = []
                if self.seasonal:
                    self._profiles = {"daily": _Profile(_DAY, 288, self._step),
                                      "weekly": _Profile(_WEEK, 336, self._step)}
        for profile in self._profiles.values():
            profile.learn(profile.bin(ts), value, self.season_rate)
        self._last_ts = ts

    # ------------------------------------------------------------------ public API

    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of ``x`` in [0, 1], without learning it."""
        value = _value(x)
        if value is None or self.n_seen < self.warmup:
            return 0.0
        raw = self._evaluate(value, _ts(x))[3]
        if self._since_alarm < self.refractory and raw <= self._alarm_score + self.margin:
            raw *= self.damp
        return raw

    def learn_one(self, x: dict[str, Any]) -> None:
        """Learn ``x`` (call after :meth:`score_one` for prequential scores)."""
        value = _value(x)
        if value is None:
            return
        ts = _ts(x)
        _, forecasts, zs, raw = self._evaluate(value, ts)
        if self.n_seen >= self.warmup:
            if raw >= self.alarm and (self._since_alarm >= self.refractory
                                      or raw > self._alarm_score + self.margin):
                self._since_alarm, self._alarm_score = 0, raw
            else:
                self._since_alarm += 1
        for name, z in zs.items():
            self._errors[name].tail.add(z)
        for name, (forecast, _) in forecasts.items():
            self._errors[name].learn(value - forecast)
        if ts is not None:
            self._learn_time(value, ts)
        self._recent.add(value)
        self._last = value
        if self.extreme_alpha and self.n_seen >= self.warmup:
            extreme = value > self._high or value < self._low
            self._extreme_rate += self.extreme_alpha * (extreme - self._extreme_rate)
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        self.n_seen += 1
        self._cached = None

    def expected_range(self) -> tuple[float, float]:
        """Band ``(low, high)`` the next value is expected in: the trusted forecast ± 3 error
        scales (the recent median ± 3 spreads before any forecaster is ready)."""
        recent = self._recent.sorted
        if not recent:
            return (0.0, 0.0)
        ts = None
        if self._last_ts is not None and self._step is not None:
            ts = self._last_ts + self._step
        forecasts: dict[str, tuple[float, float]] = {}
        for name, (forecast, scale) in self._forecasts(ts).items():
            if scale is not None:
                forecasts[name] = (forecast, scale)
        if not forecasts:
            n = len(recent)
            median = recent[n // 2]
            spread = 3.0 * (recent[(3 * n) // 4] - recent[n // 4]) / 1.349
            return (median - spread, median + spread)
        best = min(forecasts, key=lambda name: self._errors[name].mae)
        forecast, scale = forecasts[best]
        return (forecast - 3.0 * scale, forecast + 3.0 * scale)

    def size(self) -> dict[str, tuple[int, int]]:
        """``{structure: (items stored, cap)}``; every cap is fixed at construction."""
        profile_bins = sum(len(profile.mean) for profile in self._profiles.values())
        return {
            "recent": (len(self._recent), self.window),
            "errors": (max(len(errors.abs) for errors in self._errors.values()), self.errors),
            "history": (max(len(e.tail.history) for e in self._errors.values()), self.history),
            "block_maxima": (max(len(e.tail.blocks) for e in self._errors.values()),
                             self.blocks),
            "profile_bins": (profile_bins, 288 + 336),
        }
