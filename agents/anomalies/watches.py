"""Anomaly watches: sample metrics once per second and score them with a detector.

Pure Python (no Faust); each sample is a list of :class:`~agents.anomalies.incidents.Signal`
for the :class:`~agents.anomalies.incidents.IncidentTracker`.

* :class:`RoomWatch` samples every owned room once per **event-time** second (viewers,
  join / leave rate, comments, likes, gifts, carts, GMV per second, cart → order conversion)
  and feeds one :class:`~online_models.anomaly.AnomalyDetector` per (room, metric).
* :class:`UserWatch` keeps a bounded LRU of recently active (pseudonymous) users, sampled
  per second of each user's own event time: click rate over 10 s scored against the
  population of per-user rates (one detector), inter-click regularity (coefficient of
  variation of the intervals: bots are metronomic) and impossible sequences (a cart 100 ms
  after first seeing the item, actions in two rooms within 100 ms; 8 in a minute).
* :class:`SystemWatch` samples the worker's own numbers once per wall-clock second: input
  lag (processing time minus event time), dead-letter rate, output latency.

A detector score alone opens nothing: each metric also has a minimum effect size (a viewer
drop is at least half the audience within 15 s, a flood several times the room's usual
rate per viewer, ...). With a minute of history every new pattern is statistically
surprising (the first pin burst of a room, say); the effect size keeps those from paging
anyone, while the detector keeps small, usual wiggles out once history exists. Count
metrics are also scored by their Poisson tail against the usual level
(:func:`count_surprise`), which stays informative where a robust z-score of sparse counts
is degenerate (an inter-quartile range of zero).
"""

from __future__ import annotations

import itertools
import math
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from agents.anomalies.incidents import Signal


class Detector(Protocol):
    """What the watchers need from :class:`online_models.anomaly.AnomalyDetector`."""

    n_seen: int

    def score_one(self, x: dict[str, Any]) -> float: ...

    def learn_one(self, x: dict[str, Any]) -> None: ...

    def expected_range(self) -> tuple[float, float]: ...


DetectorFactory = Callable[[], Detector]
DETECTOR_WARMUP = 15  # samples (seconds) before a room or system metric may alarm


def forecast_detector() -> Detector:
    """The forecast detector (``LIVEPULSE_ANOMALY_DETECTOR=forecast``), sized for one live
    metric (a room has nine): no refractory
    damping (the tracker deduplicates), no daily/weekly profiles (a live session lasts hours,
    they need 1.5 days), shorter calibration memories
    (:func:`online_models.anomaly.engine_forecast`). About 16 KB each."""
    from online_models.anomaly import engine_forecast

    return engine_forecast(warmup=DETECTOR_WARMUP)


def fast_detector() -> Detector:
    """:func:`online_models.anomaly_ensemble.fast_ensemble` (the forecast and contextual
    detectors, calibrated maximum) as ``livepulse eval nab --detector fast_engine`` scores
    it: no refractory damping (the tracker deduplicates; damping would hold the second of
    two samples below the open score). The default. About 100 KB each."""
    from online_models.anomaly_ensemble import fast_ensemble

    return fast_ensemble(warmup=DETECTOR_WARMUP, refractory=0)


DETECTORS: dict[str, DetectorFactory] = {"forecast": forecast_detector, "fast": fast_detector}
"""``LIVEPULSE_ANOMALY_DETECTOR`` values: the factory of every watch's detectors."""
DEFAULT_DETECTOR = "fast"
default_detector = DETECTORS[DEFAULT_DETECTOR]
"""Why ``fast``: scored as the engine alerts (``livepulse eval nab --incidents``), it is the
one at 65 or more leave-one-group-out (README, "The detectors and their NAB evaluation")."""


# ---------------------------------------------------------------------- shared helpers
class _Baseline:
    """Exponentially weighted mean of a metric for effect sizes.

    Samples join the mean ``delay`` samples late, so a flood that ramps up over the rate
    window is compared with the level before it began rather than chased; a sample that
    was a material deviation is learned ten times slower, so a sustained anomaly does not
    become normal in seconds but a lasting change is eventually accepted.

    >>> base = _Baseline(delay=2)
    >>> for v in (1.0, 1.0, 1.0, 9.0, 9.0):
    ...     base.update(v, material=False)
    >>> base.mean
    1.0
    """

    __slots__ = ("alpha", "mean", "n", "pending")

    def __init__(self, alpha: float = 2 / 21, delay: int = 10) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.n = 0
        self.pending: deque[tuple[float, bool]] = deque(maxlen=delay + 1)

    def update(self, value: float, material: bool) -> None:
        self.pending.append((value, material))
        if len(self.pending) < (self.pending.maxlen or 1):
            if self.n == 0:
                self.mean = self.pending[0][0]  # a first guess until samples mature
            return
        value, material = self.pending.popleft()
        self.n += 1
        # a plain running mean until 1 / alpha samples exist, exponential afterwards
        rate = max(self.alpha, 1.0 / self.n)
        self.mean += (rate / 10 if material and self.n > 1 else rate) * (value - self.mean)


class _PerViewer:
    """A rate's usual level per viewer: the ratio of the exponentially weighted rate and
    audience (a ratio of means, so a room's first seconds with a handful of viewers do not
    dominate it)."""

    __slots__ = ("audience", "rate")

    def __init__(self, alpha: float = 2 / 61) -> None:
        # slower than other baselines: sparse counts (a few gifts a minute) need more history
        self.rate = _Baseline(alpha)
        self.audience = _Baseline(alpha)

    def update(self, rate: float, audience: float, material: bool) -> None:
        self.rate.update(rate, material)
        self.audience.update(audience, material)

    def expected(self, audience: float) -> float:
        """Usual rate for ``audience`` viewers."""
        return self.rate.mean / max(self.audience.mean, 1.0) * audience


def count_surprise(count: float, expected: float, *, upper: bool = True) -> float:
    """Poisson tail surprise of ``count`` events where ``expected`` were usual, on the
    detector's scale: ``-log10(p) / 6`` clipped to [0, 1] (1.0 = one in a million or rarer).

    Sparse per-second counts (gifts, leaves in a small room) often have an inter-quartile
    spread of zero, where a robust z-score says nothing; the Poisson tail does.

    >>> count_surprise(117, 6.0) == 1.0, count_surprise(8, 6.0) < 0.1
    (True, True)
    >>> count_surprise(0, 30.0, upper=False) == 1.0, count_surprise(25, 30.0, upper=False) < 0.1
    (True, True)
    """
    mu = max(expected, 0.5)
    c = max(0, round(count))

    def log_term(k: int) -> float:
        return -mu + k * math.log(mu) - math.lgamma(k + 1)

    if upper:
        if c <= mu:
            return 0.0
        # terms shrink at least geometrically (ratio mu / (k + 1)) above the mean
        log_p = log_term(c) - math.log1p(-mu / (c + 1))
    else:
        if c >= mu:
            return 0.0
        log_p = log_term(c) - math.log1p(-c / mu) if c > 0 else -mu
    return min(1.0, max(0.0, -log_p / math.log(10) / 6.0))


def _score(detector: Detector, value: float, ts: float | None) -> tuple[float, float, float]:
    """Prequential: the score and expected band of ``value``, then learn it."""
    x: dict[str, Any] = {"value": value}
    if ts is not None:
        x["ts"] = ts
    score = detector.score_one(x)
    low, high = detector.expected_range()
    detector.learn_one(x)
    return score, low, high


# ---------------------------------------------------------------------- rooms
ROOM_METRICS = ("viewers", "join_rate", "leave_rate", "comment_rate", "like_rate", "gift_rate",
                "cart_rate", "gmv_rate", "conversion")
_RATE_SOURCES = {"comment_rate": "comment", "like_rate": "like", "gift_rate": "gift",
                 "cart_rate": "add_to_cart"}
# Minimum effect of an upward flood: observed >= FLOOD_FACTOR x the room's usual rate.
FLOOD_FACTOR = {"comment_rate": 5.0, "like_rate": 5.0, "gift_rate": 4.0, "cart_rate": 8.0,
                "gmv_rate": 10.0, "join_rate": 3.0}
# events in the window before a flood can matter (gifts are money: fewer suffice)
FLOOD_MIN_COUNT = {"comment_rate": 20, "like_rate": 20, "gift_rate": 15, "cart_rate": 20,
                   "gmv_rate": 10, "join_rate": 20, "leave_rate": 10}
MATURE_SAMPLES = 10         # samples in a usual level before floods against it can matter
# a room's opening minute sets its sales level, and everyone joins at its start
SETTLE_S = {"cart_rate": 60, "gmv_rate": 120, "join_rate": 60}
VIEWER_DROP_SHARE = 0.5     # viewers down by half vs the max of the last DROP_HORIZON_S
VIEWER_DROP_MIN = 10
DROP_HORIZON_S = 15
LEAVE_SHARE = 0.5           # leaves in the window >= half the viewers at its start
JOIN_FLOOD_SHARE = 1.0      # joins in the window >= the viewers at its start
CONVERSION_DROP_SHARE = 0.25


class RoomSource(Protocol):
    """The parts of :class:`agents.rooms.state.RoomState` the room watch reads."""

    last_event_ts: int
    viewers: dict[str, list[int]]
    viewer_samples: dict[int, int]
    rates: dict[str, Any]     # kind -> SecondBuckets (event-time per-second sums)
    gmv_rate: Any


class _RoomTrack:
    __slots__ = ("baselines", "counts", "detectors", "first_second", "last_viewers", "n",
                 "next_second", "per_viewer", "viewers")

    def __init__(self) -> None:
        self.counts: dict[int, list[int]] = {}   # second -> [joins, leaves] (event time)
        self.viewers: deque[tuple[int, int]] = deque(maxlen=64)   # (second, viewers)
        self.last_viewers = 0
        self.next_second: int | None = None
        self.first_second: int | None = None
        self.detectors: dict[str, Detector] = {}
        self.baselines: dict[str, _Baseline] = {}
        self.per_viewer: dict[str, _PerViewer] = {}
        self.n = 0


class RoomWatch:
    """Per-room, per-second metrics on event time, each scored by its own detector.

    A second is sampled once it is ``lag_s`` behind the room's watermark (late events
    within the lag still count); rates are means over the last ``window_s`` seconds.
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, lag_s: int = 2, warmup: int = DETECTOR_WARMUP,
                 max_rooms: int = 2_000, max_catchup_s: int = 30) -> None:
        self.factory = detector_factory
        self.window_s = window_s
        self.lag_s = lag_s
        self.warmup = warmup
        self.max_rooms = max_rooms
        self.max_catchup_s = max_catchup_s
        self.tracks: OrderedDict[str, _RoomTrack] = OrderedDict()
        self.restored: dict[str, tuple[Any, ...]] = {}   # from a snapshot, not yet seen

    def _track(self, room_id: str) -> _RoomTrack | None:
        track = self.tracks.get(room_id)
        if track is None:
            if len(self.tracks) >= self.max_rooms:
                return None  # bounded: rooms beyond the cap are not watched
            track = self.tracks[room_id] = _RoomTrack()
            learned = self.restored.pop(room_id, None) if self.restored else None
            if learned is not None:
                (track.detectors, track.baselines, track.per_viewer, track.n,
                 track.first_second) = learned
        return track

    def note(self, room_id: str, kind: str, ts: int) -> None:
        """Count a join or leave (the per-second series RoomState does not keep)."""
        if kind not in ("join", "leave"):
            return
        track = self._track(room_id)
        if track is None:
            return
        second = ts // 1000
        row = track.counts.get(second)
        if row is None:
            row = track.counts[second] = [0, 0]
            if len(track.counts) > 4 * self.window_s:
                newest = max(track.counts)
                for old in [s for s in track.counts if s < newest - 2 * self.window_s]:
                    del track.counts[old]
        row[kind == "leave"] += 1

    def forget(self, room_id: str) -> None:
        self.tracks.pop(room_id, None)

    def learned_state(self) -> dict[str, tuple[Any, ...]]:
        """What each room's watch has learned (detectors, usual levels, samples seen, first
        second), for a snapshot; room ids only, no user ids."""
        return {room_id: (t.detectors, t.baselines, t.per_viewer, t.n, t.first_second)
                for room_id, t in self.tracks.items()}

    def restore_learned(self, state: dict[str, tuple[Any, ...]]) -> None:
        """Resume rooms from :meth:`learned_state`: a room seen again starts warm (its
        sampling position and join / leave counts start afresh). Held until the room is
        next sampled, at most ``max_rooms``."""
        self.restored = dict(itertools.islice(state.items(), self.max_rooms))

    def sample(self, room_id: str, room: RoomSource) -> list[tuple[int, list[Signal]]]:
        """Signals for every second of ``room`` completed since the last call."""
        track = self._track(room_id)
        if track is None or room.last_event_ts <= 0:
            return []
        self.tracks.move_to_end(room_id)
        last = room.last_event_ts // 1000 - self.lag_s
        if track.next_second is None or last - track.next_second > self.max_catchup_s:
            track.next_second = last  # first sight, or a long gap: start from now
        out = []
        while track.next_second <= last:
            second = track.next_second
            out.append((second * 1000, self._signals(track, room, second)))
            track.next_second = second + 1
        return out

    def _signals(self, track: _RoomTrack, room: RoomSource, second: int) -> list[Signal]:
        if track.first_second is None:
            track.first_second = second
        # a room's first seconds have partial windows: rates are over the seconds seen
        w = min(self.window_s, second - track.first_second + 1)
        viewers = room.viewer_samples.get(second, track.last_viewers)
        track.last_viewers = viewers
        track.viewers.append((second, viewers))
        recent = [v for s, v in track.viewers if s >= second - DROP_HORIZON_S]
        in_window = [v for s, v in track.viewers if s > second - w]
        watched = sum(in_window) / len(in_window)  # mean audience over the window
        audience = max(1.0, watched)
        at_start = next((v for s, v in track.viewers if s >= second - w), viewers)
        span = range(second - w + 1, second + 1)
        joins = sum(track.counts.get(s, (0, 0))[0] for s in span)
        leaves = sum(track.counts.get(s, (0, 0))[1] for s in span)
        counts = {m: sum(room.rates[k].buckets.get(s, 0.0) for s in span)
                  for m, k in _RATE_SOURCES.items()}
        counts["orders"] = sum(room.rates["purchase"].buckets.get(s, 0.0) for s in span)
        gmv = sum(room.gmv_rate.buckets.get(s, 0.0) for s in span)
        minute = range(second - 59, second + 1)
        carts_60 = sum(room.rates["add_to_cart"].buckets.get(s, 0.0) for s in minute)
        orders_60 = sum(room.rates["purchase"].buckets.get(s, 0.0) for s in minute)
        values: dict[str, float] = {"viewers": float(viewers), "join_rate": joins / w,
                                    "leave_rate": leaves / w, "gmv_rate": gmv / w}
        values.update({m: counts[m] / w for m in _RATE_SOURCES})
        if carts_60 >= 1:
            values["conversion"] = orders_60 / carts_60
        track.n += 1
        warm = track.n > self.warmup
        # engagement and sales scale with the audience: their usual level is per viewer
        per_viewer = {m: self._per_viewer(track, m) for m in (*_RATE_SOURCES, "orders", "gmv")}
        signals = []
        for metric, value in values.items():
            detector = track.detectors.get(metric)
            if detector is None:
                detector = track.detectors[metric] = self.factory()
            score, low, high = _score(detector, value, float(second))
            if metric in per_viewer or metric == "gmv_rate":
                source = "orders" if metric == "gmv_rate" else metric
                count = counts[source]
                expected = per_viewer[source].expected(audience) * w
                if metric == "gmv_rate":  # many more orders, and much more money
                    material = (count >= FLOOD_MIN_COUNT[metric]
                                and count >= 3 * expected + 5 * math.sqrt(expected + 1)
                                and value >= FLOOD_FACTOR[metric]
                                * per_viewer["gmv"].expected(audience))
                    if watched >= 1:
                        per_viewer["gmv"].update(value, audience, material)
                        per_viewer["orders"].update(count / w, audience, material)
                else:
                    material = (count >= FLOOD_MIN_COUNT[metric]
                                and count >= FLOOD_FACTOR[metric] * expected
                                and count >= expected + 5 * math.sqrt(expected + 1))
                    if watched >= 1:
                        per_viewer[metric].update(value, audience, material)
                score = max(score, count_surprise(count, expected))
                # the usual level needs history of its own; sales start after clicks
                material = (material and per_viewer[source].rate.n >= MATURE_SAMPLES
                            and second - track.first_second >= SETTLE_S.get(metric, 0))
            else:
                baseline = self._baseline(track, metric)
                usual = baseline.mean
                if metric == "viewers":
                    peak = max(recent)
                    material = peak - viewers >= max(VIEWER_DROP_MIN, VIEWER_DROP_SHARE * peak)
                elif metric == "leave_rate":
                    material = leaves >= max(FLOOD_MIN_COUNT[metric], LEAVE_SHARE * at_start)
                    score = max(score, count_surprise(leaves, usual * w))
                elif metric == "join_rate":
                    # a room's opening is everyone joining at once: floods count once settled
                    material = (second - track.first_second >= SETTLE_S["join_rate"]
                                and joins >= max(FLOOD_MIN_COUNT[metric],
                                                 JOIN_FLOOD_SHARE * at_start,
                                                 FLOOD_FACTOR["join_rate"] * usual * w))
                    score = max(score, count_surprise(joins, usual * w))
                else:  # conversion
                    material = (carts_60 >= FLOOD_MIN_COUNT["cart_rate"] and usual >= 0.1
                                and value <= CONVERSION_DROP_SHARE * usual)
                baseline.update(value, material)
            signals.append(Signal(metric, value, low, high, score if material and warm else 0.0))
        return signals

    @staticmethod
    def _baseline(track: _RoomTrack, metric: str) -> _Baseline:
        baseline = track.baselines.get(metric)
        if baseline is None:
            baseline = track.baselines[metric] = _Baseline()
        return baseline

    @staticmethod
    def _per_viewer(track: _RoomTrack, metric: str) -> _PerViewer:
        usual = track.per_viewer.get(metric)
        if usual is None:
            usual = track.per_viewer[metric] = _PerViewer()
        return usual


# ---------------------------------------------------------------------- users
CLICK_KINDS = frozenset(("view", "click", "search", "add_to_cart", "purchase", "product_click"))
LIVE_ACTIONS = frozenset(("comment", "gift", "share", "follow", "product_click", "add_to_cart",
                          "purchase"))
HUMAN_MIN_MS = 100          # faster than this after seeing an item / switching room: a script
MIN_FLOOD_RATE = 8.0        # clicks/s sustained over the window before a rate can matter
MIN_INTERVALS = 10          # intervals before the regularity can matter
REGULAR_MIN_RATE = 1.0      # ... and at least this many clicks/s
IMPOSSIBLE_MIN = 8          # impossible sequences in 60 s before they matter
USER_ACTIVE_S = 5           # a user silent this long scores 0 (the flood stopped)
LIMITED_SECONDS = 16        # seconds of rate-limited counts kept per user


def _append_capped(values: list[int], value: int, cap: int) -> None:
    values.append(value)
    if len(values) > cap:
        del values[0]


class _UserTrack:
    __slots__ = ("impossible", "items", "last_ts", "limited", "next_second", "room", "room_ts",
                 "times")

    def __init__(self) -> None:
        # plain lists and dict, trimmed by hand: most users have a handful of events, and
        # deques / OrderedDicts cost about a kilobyte each even when nearly empty
        self.times = array("q")                            # click-like event times (<= 160)
        self.impossible: list[int] = []                    # (<= 32)
        self.items: dict[str, int] = {}                    # item -> first seen (recent 16)
        self.room: str | None = None
        self.room_ts = 0
        self.last_ts = 0
        self.next_second: int | None = None              # first second not yet sampled
        self.limited: dict[int, int] | None = None       # second -> events over the rate


class UserWatch:
    """Bounded per-user click statistics; see the module docstring.

    ``note`` is O(1) per event; ``sample`` scores the users active since the last call
    (plus those with a streak or an open incident) at the watch's watermark minus ``lag_s``.
    The population detector learns at most ``population_sample`` per-user rates per call.
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, lag_s: int = 2, max_users: int = 100_000,
                 population_sample: int = 200) -> None:
        self.window_ms = window_s * 1000
        self.lag_ms = lag_s * 1000
        self.max_users = max_users
        self.population_sample = population_sample
        self.population = detector_factory()
        self.usual = _Baseline(alpha=0.01)  # mean per-user rate of active users
        self.users: OrderedDict[str, _UserTrack] = OrderedDict()
        self.dirty: set[str] = set()
        self.watermark = 0

    def learned_state(self) -> tuple[Any, Any]:
        """The population detector and usual per-user rate, for a snapshot: rates only, no
        user ids (per-user tracks are never snapshotted, so an erasure need not rewrite it)."""
        return (self.population, self.usual)

    def restore_learned(self, state: tuple[Any, Any]) -> None:
        self.population, self.usual = state

    def note(self, user_id: str, kind: str, ts: int, *, item_id: str | None = None,
             room_id: str | None = None, live: bool = False) -> None:
        track = self.users.get(user_id)
        if track is None:
            track = self.users[user_id] = _UserTrack()
            if len(self.users) > self.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user_id)
        self.dirty.add(user_id)
        if ts > self.watermark:
            self.watermark = ts
        if ts > track.last_ts:
            track.last_ts = ts
        if kind in CLICK_KINDS:
            track.times.append(ts)
            if len(track.times) > 160:
                del track.times[:-128]
        if item_id is not None:
            seen = track.items.get(item_id)
            if kind in ("add_to_cart", "purchase"):
                if seen is not None and 0 <= ts - seen < HUMAN_MIN_MS:
                    _append_capped(track.impossible, ts, 32)
            elif seen is None:
                track.items[item_id] = ts
                if len(track.items) > 16:
                    del track.items[next(iter(track.items))]
        if live and room_id is not None and kind in LIVE_ACTIONS:
            if (track.room is not None and track.room != room_id
                    and abs(ts - track.room_ts) < HUMAN_MIN_MS):
                _append_capped(track.impossible, ts, 32)
            track.room, track.room_ts = room_id, ts

    def note_limited(self, user_id: str, ts: int) -> None:
        """An event of ``user_id`` at ``ts`` refused by the hot-key quarantine
        (:mod:`streams.quarantine`): a ``rate_limited`` signal for its second."""
        track = self.users.get(user_id)
        if track is None:
            track = self.users[user_id] = _UserTrack()
            if len(self.users) > self.max_users:
                self.users.popitem(last=False)
        self.dirty.add(user_id)
        if ts > self.watermark:
            self.watermark = ts
        if ts > track.last_ts:
            track.last_ts = ts
        second = ts // 1000
        limited = track.limited
        if limited is None:
            limited = track.limited = {}
        limited[second] = limited.get(second, 0) + 1
        if len(limited) > LIMITED_SECONDS:
            del limited[min(limited)]

    def sample(self, also: Iterable[str] = ()) -> list[tuple[str, int, list[Signal]]]:
        """(user, time, signals) per event-time second completed since the last call, for
        the users with events in it and those in ``also`` (a streak or an open incident).

        Each user is sampled on its own seconds (like rooms), so two anomalous samples
        mean two seconds of that user's traffic, however unevenly partitions are consumed.
        Seconds are complete ``lag_s`` behind the watermark (newest event of any user).
        """
        now = self.watermark - self.lag_ms
        if now <= 0:
            return []
        hot = set(also)
        pending, self.dirty = self.dirty, set()
        done = now // 1000                     # seconds before this one are complete
        rates: dict[str, float] = {}
        out = []
        for user_id in sorted(pending | hot):
            track = self.users.get(user_id)
            if track is None:
                out.append((user_id, now, []))   # evicted: its incident goes quiet
                continue
            first = track.next_second
            if first is None:
                first = min(track.times[0] if track.times else track.last_ts,
                            track.last_ts) // 1000
                if track.limited:
                    first = min(first, min(track.limited))
            first = max(first, done - self.window_ms // 1000)  # bounded catch-up
            if track.last_ts // 1000 >= done:
                self.dirty.add(user_id)          # events within the lag: sample them later
            track.next_second = max(first, done)
            watched = user_id in hot or (len(track.times) > MIN_INTERVALS
                                         or len(track.impossible) >= IMPOSSIBLE_MIN
                                         or bool(track.limited))
            for second in range(first, done):
                at = second * 1000 + 999
                if not watched:
                    break                        # nothing this user did can matter yet
                rate = sum(1 for t in track.times
                           if at - self.window_ms < t <= at) * 1000 / self.window_ms
                out.append((user_id, at, self._signals(track, at, rate)))
            if track.times:
                at = min(now, track.last_ts)
                rates[user_id] = sum(1 for t in track.times
                                     if at - self.window_ms < t <= at) * 1000 / self.window_ms
        # the population baseline learns after scoring (prequential), from a bounded sample
        ids = sorted(rates)
        for user_id in ids[:: max(1, len(ids) // self.population_sample)][
                : self.population_sample]:
            if rates[user_id] > 0:
                self.population.learn_one({"value": rates[user_id]})
                self.usual.update(rates[user_id], rates[user_id] >= MIN_FLOOD_RATE)
        return out

    def _signals(self, track: _UserTrack, now: int, rate: float) -> list[Signal]:
        if now - track.last_ts > USER_ACTIVE_S * 1000:
            return []                            # silent since: the flood stopped
        signals = []
        if rate >= MIN_FLOOD_RATE:
            score = self.population.score_one({"value": rate})
            low, high = self.population.expected_range()
            window_s = self.window_ms / 1000
            score = max(score, count_surprise(rate * window_s, self.usual.mean * window_s))
            signals.append(Signal("click_rate", rate, low, high, score))
        recent = [t for t in track.times if now - 3 * self.window_ms < t <= now][-33:]
        if len(recent) > MIN_INTERVALS and rate >= REGULAR_MIN_RATE:
            gaps = [b - a for a, b in itertools.pairwise(recent)]
            mean = sum(gaps) / len(gaps)
            if mean > 0:
                cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
                # humans click in bursts (exponential gaps: CV about 1); scripts tick
                signals.append(Signal("click_interval_cv", cv, 0.5, 1.5,
                                      max(0.0, 1.0 - cv)))
        if track.limited:
            over = track.limited.get(now // 1000, 0)
            if over:
                # refused by the quarantine: certain, no detector needed
                signals.insert(0, Signal("rate_limited", float(over), 0.0, 0.0, 1.0))  # tops ties
        impossible = sum(1 for t in track.impossible if now - 60_000 < t <= now)
        if impossible >= IMPOSSIBLE_MIN:
            signals.append(Signal("impossible_sequences", float(impossible), 0.0, 1.0,
                                  min(1.0, 0.9 + 0.02 * (impossible - IMPOSSIBLE_MIN))))
        return signals


# ---------------------------------------------------------------------- system
SYSTEM_METRICS = ("input_lag_ms", "dead_letter_rate", "output_latency_ms")
LAG_MIN_MS = 1_000          # input lag must exceed 1 s and 3x its usual level
LATENCY_MIN_MS = 1_000      # output latency must exceed 1 s and 2x its usual level
DEAD_SHARE = 0.05           # dead letters >= 5 % of input over the window
DEAD_MIN = 20


class SystemWatch:
    """The worker's own numbers once per second (wall clock), one detector each.

    Input lag is fed per event (:meth:`note_lag`); dead letters, inputs and output latency
    are cumulative counters read at each :meth:`sample` (deltas over ``window_s``).
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, warmup: int = DETECTOR_WARMUP) -> None:
        self.window_s = window_s
        self.warmup = warmup
        self.detectors = {m: detector_factory() for m in SYSTEM_METRICS}
        self.baselines = {m: _Baseline() for m in SYSTEM_METRICS}
        self.counters: deque[tuple[float, float, float, float]] = deque(maxlen=window_s + 1)
        self.lag_sum = 0.0
        self.lag_n = 0
        self.n = 0

    def learned_state(self) -> tuple[Any, ...]:
        """Detectors, usual levels and samples seen, for a snapshot."""
        return (self.detectors, self.baselines, self.n)

    def restore_learned(self, state: tuple[Any, ...]) -> None:
        self.detectors, self.baselines, self.n = state

    def note_lag(self, lag_ms: float) -> None:
        self.lag_sum += lag_ms
        self.lag_n += 1

    def sample(self, now_ms: int, *, dead_letters: float = 0.0, events_in: float = 0.0,
               latency_sum_s: float = 0.0, latency_count: float = 0.0) -> list[Signal]:
        """Signals from the lag noted since the last call and the cumulative counters."""
        self.counters.append((dead_letters, events_in, latency_sum_s, latency_count))
        first = self.counters[0]
        span = max(1, len(self.counters) - 1)
        dead = dead_letters - first[0]
        inputs = events_in - first[1]
        latency_n = latency_count - first[3]
        values: dict[str, float] = {"dead_letter_rate": dead / span}
        if self.lag_n:
            values["input_lag_ms"] = self.lag_sum / self.lag_n
        if latency_n > 0:
            values["output_latency_ms"] = 1000 * (latency_sum_s - first[2]) / latency_n
        self.lag_sum, self.lag_n = 0.0, 0
        self.n += 1
        signals = []
        for metric, value in values.items():
            score, low, high = _score(self.detectors[metric], value, now_ms / 1000)
            baseline = self.baselines[metric]
            usual = baseline.mean
            if metric == "input_lag_ms":
                material = value >= max(LAG_MIN_MS, 3 * usual)
            elif metric == "output_latency_ms":
                material = value >= max(LATENCY_MIN_MS, 2 * usual)
            else:
                material = dead >= DEAD_MIN and dead >= DEAD_SHARE * (dead + inputs)
            baseline.update(value, material)
            effective = score if material and self.n > self.warmup else 0.0
            signals.append(Signal(metric, value, low, high, effective))
        return signals
