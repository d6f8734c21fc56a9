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
from array import array
from bisect import bisect_left, bisect_right, insort
from typing import Any

__all__ = ["AnomalyDetector", "engine_forecast"]

_SQRT2 = math.sqrt(2.0)
_LN10 = math.log(10.0)
_DAY = 86_400.0
_WEEK = 7 * _DAY
_MIN_ERRORS = 10   # errors a forecaster needs before it may score


def _value(x: dict[str, Any]) -> float | None:
    """``x["value"]`` as a finite float, or None (missing, non-numeric, NaN, infinite)."""
    try:
        value = x["value"]
        if type(value) is not float:
            value = float(value)
    except (KeyError, TypeError, ValueError):
        return None
    return value if -math.inf < value < math.inf else None


def _ts(x: dict[str, Any]) -> float | None:
    """``x["ts"]`` (epoch seconds) as a finite float in a sane range, or None."""
    ts = x.get("ts")
    if ts is None:
        return None
    if type(ts) is not float:
        try:
            ts = float(ts)
        except (TypeError, ValueError):
            return None
    return ts if -1e13 < ts < 1e13 else None   # finite, in a sane range


class _Rolling:
    """The last ``size`` values, in arrival order and sorted."""

    __slots__ = ("pos", "ring", "size", "sorted")

    def __init__(self, size: int) -> None:
        self.size = size
        # arrays of doubles: 8 bytes a value instead of a list slot and a float object (40)
        self.ring = array("d")
        self.sorted = array("d")
        self.pos = 0

    def add(self, value: float) -> None:
        _add(self, value)

    def __len__(self) -> int:
        return len(self.sorted)


def _add(rolling: _Rolling, value: float) -> None:
    """``rolling.add(value)`` as a function (one call less in the hot loops)."""
    ring = rolling.ring
    ordered = rolling.sorted
    if len(ring) < rolling.size:
        ring.append(value)
        insort(ordered, value)
        return
    pos = rolling.pos
    old = ring[pos]
    ring[pos] = value
    rolling.pos = pos + 1 if pos + 1 < rolling.size else 0
    i = bisect_left(ordered, old)
    # search only the side of the old value the new one sorts on; when it sorts where the
    # old one was (often), overwrite instead of two moves
    if old < value:
        j = bisect_right(ordered, value, i)
        if j == i + 1:
            ordered[i] = value
        else:
            del ordered[i]
            ordered.insert(j - 1, value)
    else:
        j = bisect_right(ordered, value, 0, i)
        if j == i:
            ordered[i] = value
        else:
            del ordered[i]
            ordered.insert(j, value)


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
        if n < 30:
            return math.erfc(r / (_SQRT2 * 1.5))
        # (a if a >= b else b) is max(a, b) without a call: this runs for every point
        upper = s[int(0.9 * n)]
        top = s[int(0.99 * n)] if n > 100 else s[n - 1]   # s[min(n - 1, int(0.99 * n))]
        empirical = (n - bisect_left(s, r)) / n
        if r <= upper:
            floor = 1.0 / n
        else:
            decay = (top - upper) / _LN10
            floor = 0.1 * math.exp(-(r - upper) / (decay if decay >= 1e-12 else 1e-12))
        p = empirical if empirical >= floor else floor
        if n < 200:
            p = max(p, math.erfc(r / (_SQRT2 * 1.5)))
        maxima = self.blocks.sorted
        m = len(maxima)
        if m >= 8:
            seen = (m - bisect_left(maxima, r) + (self.current >= r)) / ((m + 1) * self.block)
            if seen > p:
                p = seen
        return p


class _Profile:
    """Mean of (value - level) and mean absolute deviation per phase bin of a period (a day
    or a week)."""

    __slots__ = ("count", "current", "last_bin", "mean", "offset", "period", "spread", "width")

    def __init__(self, period: float, max_bins: int, step: float) -> None:
        self.period = period
        self.width = max(step, period / max_bins)
        bins = math.ceil(period / self.width)
        self.mean = array("d", bytes(8 * bins))
        self.spread = array("d", bytes(8 * bins))
        self.count = array("q", bytes(8 * bins))
        self.offset = 0.0
        self.current = (math.nan, 0)   # (ts, bin) of the point being scored
        self.last_bin = 0              # bin of the last point learnt

    def bin(self, ts: float) -> int:
        return int((ts % self.period) // self.width) % len(self.mean)

    def learn(self, b: int, value: float, rate: float) -> None:
        count = self.count[b]
        if count:
            residual = value - self.mean[b] - self.offset
            step = 1.0 / count   # max(1 / count, rate), without a call
            self.spread[b] += (step if step > rate else rate) * (abs(residual) - self.spread[b])
            self.offset += 0.1 * residual
        step = 1.0 / (count + 1)
        self.mean[b] += (step if step > rate else rate) * (value - self.offset - self.mean[b])
        self.count[b] = count + 1


class _Errors:
    """A forecaster's recent absolute errors (robust scale), long-run mean error, and the
    history of its z-scores (its own calibration)."""

    __slots__ = ("abs", "alpha", "mae", "n", "scaled", "tail")

    def __init__(self, size: int, alpha: float, tail: _Tail) -> None:
        self.abs = _Rolling(size)
        self.scaled: float | None = None   # scale() until the next error is added
        self.alpha = alpha
        self.mae = 0.0
        self.n = 0
        self.tail = tail

    def scale(self) -> float:
        scaled = self.scaled
        if scaled is None:
            s = self.abs.sorted
            n = len(s)
            scaled = self.scaled = max(1.4826 * s[n // 2], 0.304 * s[int(0.9 * n)], 1e-9)
        return scaled

    def learn(self, error: float) -> None:
        error = abs(error)
        self.abs.add(error)
        self.scaled = None
        self.n += 1
        self.mae = error if self.n == 1 else self.mae + self.alpha * (error - self.mae)


def _scale(err: _Errors) -> float:
    """``err.scale()`` as a function, the cached value without a call."""
    scaled = err.scaled
    if scaled is None:
        s = err.abs.sorted
        n = len(s)
        a, b = 1.4826 * s[n // 2], 0.304 * s[int(0.9 * n)]
        scaled = a if a >= b else b
        if scaled < 1e-9:   # max(a, b, 1e-9)
            scaled = 1e-9
        err.scaled = scaled
    return scaled


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
    periods
        Which profiles (``"daily"``, ``"weekly"``) when ``seasonal``.
    steps
        Also forecast last value + the profile's change between bins (the "step" variants).
    thin
        Forecasters not trusted for a point update their error scale and z-score history on
        one point in ``thin`` only (1: every point); cheaper, their ranking is unaffected.
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
                 bin_prior: float = 3.0, mae_alpha: float = 0.002,
                 periods: tuple[str, ...] = ("daily", "weekly"), steps: bool = True,
                 thin: int = 1, seed: int = 0) -> None:
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
        if not set(periods) <= {"daily", "weekly"}:
            raise ValueError(f"periods are 'daily' and / or 'weekly', not {periods!r}")
        self.periods = tuple(periods)
        self.steps = steps
        self.thin = max(1, int(thin))
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
        n = len(recent)
        if n >= 3:
            err = errors["median"]
            out["median"] = (recent[n // 2], _scale(err) if err.n >= _MIN_ERRORS else None)
        profiles = self._profiles
        if ts is None or not profiles:   # profiles exist only once a first ts was learnt
            return out
        since = ts - self._first_ts   # type: ignore[operator]
        for name, profile in profiles.items():
            period = profile.period
            if since < 1.5 * period:
                continue
            mean = profile.mean
            b = int((ts % period) // profile.width) % len(mean)   # profile.bin(ts)
            profile.current = (ts, b)
            count = profile.count[b]
            if not count:
                continue
            scale = None
            err = errors[name]
            if err.n >= _MIN_ERRORS:
                # the bin's own spread (noise often depends on the time of day), pulled
                # towards the forecaster's overall scale while the bin has seen few periods
                overall = _scale(err)
                spread = 1.2533 * profile.spread[b]   # mean absolute deviation -> sigma
                prior = self.bin_prior
                scale = ((count - 1) * spread + prior * overall) / (count - 1 + prior)
                if scale < 0.25 * overall:
                    scale = 0.25 * overall
            out[name] = (mean[b] + profile.offset, scale)
            if self.steps and self._last_ts is not None and self._last is not None:
                b0 = profile.last_bin   # the bin of self._last_ts
                if profile.count[b0]:
                    step = name + "_step"
                    ready = errors[step].n >= _MIN_ERRORS
                    out[step] = (self._last + mean[b] - mean[b0],
                                 errors[step].scale() if ready else None)
        return out

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
                    shapes = {"daily": (_DAY, 288), "weekly": (_WEEK, 336)}
                    self._profiles = {name: _Profile(*shapes[name], self._step)
                                      for name in self.periods}
        rate = self.season_rate
        for profile in self._profiles.values():
            current = profile.current
            b = current[1] if current[0] == ts else profile.bin(ts)
            # _Profile.learn inlined (every point, for each profile)
            counts, mean = profile.count, profile.mean
            count = counts[b]
            if count:
                residual = value - mean[b] - profile.offset
                step = 1.0 / count
                spread = profile.spread
                spread[b] += (step if step > rate else rate) * (abs(residual) - spread[b])
                profile.offset += 0.1 * residual
            step = 1.0 / (count + 1)
            mean[b] += (step if step > rate else rate) * (value - profile.offset - mean[b])
            counts[b] = count + 1
            profile.last_bin = b
        self._last_ts = ts

    def _evaluate(self, value: float, ts: float | None) -> tuple[Any, ...]:
        """(value, ts, forecasts, z-scores, raw score, trusted forecaster), cached so
        learning the point reuses the work."""
        cached = self._cached
        if cached is not None and cached[0] == value and cached[1] == ts:
            return cached
        forecasts = self._forecasts(ts)
        errors = self._errors
        zs: dict[str, float] = {}
        best, best_mae = None, math.inf
        for name, (forecast, scale) in forecasts.items():
            if scale is None:
                continue
            zs[name] = abs(value - forecast) / scale
            mae = errors[name].mae
            if mae < best_mae:
                best, best_mae = name, mae
        raw = 0.0
        if best is not None:
            p = errors[best].tail.p(zs[best])
            if p < 1.0:
                raw = -math.log10(p if p > 1e-300 else 1e-300) / 6.0
                if raw > 1.0:
                    raw = 1.0
        if self.spatial and raw >= self.spatial_gate and self._high > self._low:
            beyond = max(value - self._high, self._low - value) / (self._high - self._low)
            if beyond > 0.0:
                # a new extreme after n exchangeable points has probability 2 / (n + 1) (or
                # the rate new extremes have come at lately, if tracked and higher); each
                # ``spatial_decade`` of the range further out makes it ten times rarer
                base = max(2.0 / (self.n_seen + 1), self._extreme_rate)
                log_p = math.log10(base) - beyond / self.spatial_decade
                raw = max(raw, min(1.0, -log_p / 6.0))
        self._cached = cached = (value, ts, forecasts, zs, raw, best)
        return cached

    # ------------------------------------------------------------------ public API

    def score_one(self, x: dict[str, Any]) -> float:
        """Anomaly score of ``x`` in [0, 1], without learning it."""
        value = _value(x)
        if value is None:
            return 0.0
        return self._score_value(value, _ts(x))

    def _score_value(self, value: float, ts: float | None) -> float:
        """:meth:`score_one` of a parsed point (``_value``, ``_ts``)."""
        if self.n_seen < self.warmup:
            return 0.0
        raw = self._evaluate(value, ts)[4]
        if self._since_alarm < self.refractory and raw <= self._alarm_score + self.margin:
            raw *= self.damp
        return raw

    def learn_one(self, x: dict[str, Any]) -> None:
        """Learn ``x`` (call after :meth:`score_one` for prequential scores)."""
        value = _value(x)
        if value is not None:
            self._learn_value(value, _ts(x))

    def _learn_value(self, value: float, ts: float | None) -> None:
        """:meth:`learn_one` of a parsed point (``_value``, ``_ts``)."""
        cached = self._cached
        if cached is None or cached[0] != value or cached[1] != ts:
            cached = self._evaluate(value, ts)
        _, _, forecasts, zs, raw, best = cached
        n_seen = self.n_seen
        if n_seen >= self.warmup:
            if raw >= self.alarm and (self._since_alarm >= self.refractory
                                      or raw > self._alarm_score + self.margin):
                self._since_alarm, self._alarm_score = 0, raw
            else:
                self._since_alarm += 1
        # _Tail.add and _Errors.learn inlined (the hot loop: up to five forecasters a point)
        errors = self._errors
        # with ``thin`` > 1 the forecasters not trusted for this point learn their error
        # scale and z-score history on one point in ``thin`` (their ranking on every one)
        thin = self.thin > 1 and n_seen % self.thin
        for name, z in zs.items():
            if thin and name != best:
                continue
            tail = errors[name].tail
            _add(tail.history, z)
            if z > tail.current:
                tail.current = z
            tail.filled += 1
            if tail.filled == tail.block:
                _add(tail.blocks, tail.current)
                tail.current, tail.filled = 0.0, 0
        for name, (forecast, _) in forecasts.items():
            err = errors[name]
            error = abs(value - forecast)
            if not thin or name == best or err.n < _MIN_ERRORS:
                _add(err.abs, error)
                err.scaled = None
            err.n += 1
            err.mae = error if err.n == 1 else err.mae + err.alpha * (error - err.mae)
        if ts is not None:
            self._learn_time(value, ts)
        _add(self._recent, value)
        self._last = value
        low, high = self._low, self._high
        if self.extreme_alpha and n_seen >= self.warmup:
            extreme = value > high or value < low
            self._extreme_rate += self.extreme_alpha * (extreme - self._extreme_rate)
        if value < low:
            self._low = value
        if value > high:
            self._high = value
        self.n_seen = n_seen + 1
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


def engine_forecast(warmup: int = 15, seed: int = 0) -> AnomalyDetector:
    """The forecast detector as the engine's watches run it, sized for one live metric (a
    room has nine): no refractory damping (the incident tracker deduplicates), no daily or
    weekly profiles (a live session lasts hours, they need 1.5 days), shorter memories.

    >>> engine_forecast().size()["history"]
    (0, 300)
    """
    return AnomalyDetector(seed=seed, warmup=warmup, refractory=0, errors=128, history=300,
                           blocks=64, seasonal=False)
