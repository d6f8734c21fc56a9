"""Online user segments: sequential k-means (``river.cluster.KMeans``) over standardised
profile features, with a human description of each segment made from its centroid.

:func:`profile_features` turns a profile's public view (``agents.users.profile``) into
eleven numbers: spend, orders, 30-day order frequency, typical price, price sensitivity,
watch time, comments, likes, gift value, rooms watched and activity (events folded). Counts
and money are ``log1p``-compressed (heavy tails), then standardised online
(``river.preprocessing.StandardScaler``) and clipped to +-:data:`Z_CLIP` so that one whale
cannot pull a centroid to itself. A missing price (no priced item yet) is left out: the
distance then reads it as the mean.

:class:`ProfileSegmenter` buffers the first ``warmup`` profiles, seeds ``n_segments``
centroids from them by k-means++ and a few Lloyd passes (deterministic for a seed: river's
random start leaves centroids that never win), then hands them to ``river.cluster.KMeans``,
which moves the nearest centroid ``halflife`` of the way to each new point (a constant
step: old behaviour is forgotten geometrically). Segment ids are the centroid indexes, so
they stay put while the centroids drift. Memory is fixed: ``n_segments`` centroids of eleven
numbers, the scaler's eleven means and variances, and the warm-up buffer (emptied once).

Descriptions (:meth:`ProfileSegmenter.describe`) read the centroid in standard deviations:
up to two adjectives from spend, price level and price sensitivity (``high-spend``,
``premium``, ``deal-seeking`` ...) before a noun from the strongest behaviour (``gift
givers``, ``buyers``, ``commenters``, ``long-stay viewers`` ...), in English and Chinese,
e.g. ``high-spend gift givers`` / ``高消费送礼用户``.

>>> import random
>>> rng = random.Random(3)
>>> def view(spend, gifts):
...     return {"events": 30, "rfm": {"monetary": spend, "orders": rng.randint(1, 3)},
...             "live": {"gift_value": gifts, "gifts": 4 if gifts else 0}}
>>> seg = ProfileSegmenter(n_segments=2, warmup=40, seed=1)
>>> for _ in range(200):
...     _ = seg.learn_predict_one(profile_features(view(rng.uniform(2000, 4000),
...                                                     rng.uniform(300, 900))))
...     _ = seg.learn_predict_one(profile_features(view(rng.uniform(0, 50), 0.0)))
>>> big = seg.predict_one(profile_features(view(3000.0, 500.0)))
>>> big != seg.predict_one(profile_features(view(0.0, 0.0)))
True
>>> seg.describe(big)["en"], seg.describe(big)["zh"], seg.describe(1 - big)["en"]
('high-spend gift givers', '高消费送礼用户', 'low-spend average users')
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from typing import Any

from river import cluster, preprocessing

MODEL_VERSION = "segments-kmeans-1"
FEATURES = ("spend", "orders", "frequency", "price", "deal", "watch", "comments", "likes",
            "gifts", "rooms", "activity")
Z_CLIP = 3.0
STRONG = 0.5        # |z| of a centroid coordinate that earns a word in its description
LLOYD_PASSES = 5    # over the warm-up buffer when seeding the centroids
RELABEL_EVERY = 256  # learned points between description refreshes

# feature -> (high en, high zh, low en, low zh): adjectives before the noun
_ADJECTIVES = {
    "spend": ("high-spend", "高消费", "low-spend", "低消费"),
    "price": ("premium", "偏好高价", "budget", "偏好低价"),
    "deal": ("deal-seeking", "爱优惠", "price-insensitive", "不看价格"),
}
# feature -> (en, zh): the noun of the strongest behaviour above the mean
_NOUNS = {
    "gifts": ("gift givers", "送礼"),
    "orders": ("buyers", "购买"),
    "frequency": ("repeat buyers", "复购"),
    "comments": ("commenters", "爱评论"),
    "watch": ("long-stay viewers", "长时观看"),
    "likes": ("likers", "爱点赞"),
    "rooms": ("room hoppers", "多直播间"),
    "activity": ("regulars", "活跃"),
}
_QUIET = ("occasional browsers", "偶尔浏览")
_AVERAGE = ("average users", "普通")


_NUMBERS = (int, float)
_LOG1P = math.log1p


def _number(value: Any) -> float | None:
    if type(value) not in _NUMBERS or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def profile_features(view: Mapping[str, Any]) -> dict[str, float]:
    """The segmentation features of a profile view (missing or odd values left out).

    >>> profile_features({"events": 9, "rfm": {"monetary": 99.0, "orders": 1},
    ...                   "price": {"avg_price": None, "sensitivity": 0.25}})["spend"]
    4.605170185988092
    """
    rfm, price, live = view.get("rfm"), view.get("price"), view.get("live")
    rfm = rfm if isinstance(rfm, dict) else {}
    price = price if isinstance(price, dict) else {}
    live = live if isinstance(live, dict) else {}
    watch = live.get("watch_time_s")
    avg_price = price.get("avg_price")
    raw = (("spend", rfm.get("monetary")), ("orders", rfm.get("orders")),
           ("frequency", rfm.get("frequency_30d")),
           ("price", avg_price if avg_price else None),  # 0: no real price seen
           ("watch", watch / 60.0 if type(watch) in _NUMBERS else None),
           ("comments", live.get("comments")), ("likes", live.get("likes")),
           ("gifts", live.get("gift_value")), ("rooms", live.get("rooms_watched")),
           ("activity", view.get("events")))
    out: dict[str, float] = {}
    for name, value in raw:
        if type(value) in _NUMBERS and value >= 0 and value < math.inf:  # not NaN either
            out[name] = _LOG1P(value)
    deal = _number(price.get("sensitivity"))
    if deal is not None:
        out["deal"] = min(deal, 1.0)
    return out


class ProfileSegmenter:
    """Sequential k-means segments of profiles (see the module docstring).

    Parameters
    ----------
    n_segments
        Number of segments (centroids).
    halflife
        Share of the way the nearest centroid moves to each learned point.
    warmup
        Profiles buffered before the centroids are seeded (no segment before that).
    seed
        Seed of the k-means++ start.
    """

    model_version = MODEL_VERSION

    def __init__(self, n_segments: int = 8, halflife: float = 0.002, warmup: int = 256,
                 seed: int = 0, stickiness: float = 0.15) -> None:
        if n_segments < 2 or warmup < n_segments or not 0 < halflife <= 1:
            raise ValueError("need n_segments >= 2, warmup >= n_segments, 0 < halflife <= 1")
        self.n_segments = n_segments
        self.halflife = halflife
        self.warmup = warmup
        self.seed = seed
        self.stickiness = stickiness
        self.scaler = preprocessing.StandardScaler()
        self.kmeans: cluster.KMeans | None = None
        self.buffer: list[dict[str, float]] = []
        self.weights = [0.0] * n_segments  # decayed count of points assigned per segment
        self.learned = 0
        self._labels: dict[int, tuple[str, str]] = {}
        self._labelled_at = -1

    # ------------------------------------------------------------------ learning
    def _scaled(self, x: Mapping[str, float]) -> dict[str, float]:
        z = self.scaler.transform_one(dict(x))
        return {k: max(-Z_CLIP, min(Z_CLIP, v)) for k, v in z.items() if k in FEATURES}

    def learn_one(self, x: Mapping[str, float]) -> None:
        self.learn_predict_one(x)

    def learn_predict_one(self, x: Mapping[str, float],
                          current: int | None = None) -> int | None:
        """Learn one profile's features; its segment (None while warming up). A profile
        in segment ``current`` stays there unless another centroid is nearer by more than
        ``stickiness`` of the distance to its own (hysteresis: a profile on a border does
        not flip back and forth as the centroids drift)."""
        x = {k: float(v) for k, v in x.items() if k in FEATURES and math.isfinite(v)}
        self.scaler.learn_one(x)
        self.learned += 1
        if self.kmeans is None:
            self.buffer.append(x)
            if len(self.buffer) >= self.warmup:
                self._seed()
            return None if self.kmeans is None else self.predict_one(x)
        z = self._scaled(x)
        segment = self.kmeans.learn_predict_one(z)
        if current is not None and current != segment and current in self.kmeans.centers:
            own = self._distance(current, z)
            if self._distance(segment, z) > (1.0 - self.stickiness) ** 2 * own:
                segment = current
        decay = 1.0 - self.halflife
        self.weights = [w * decay for w in self.weights]
        self.weights[segment] += 1.0
        return segment

    def _distance(self, segment: int, z: Mapping[str, float]) -> float:
        """Squared distance of scaled features ``z`` to the segment's centroid."""
        center = self.kmeans.centers[segment]  # type: ignore[union-attr]
        return sum((center[f] - z.get(f, 0.0)) ** 2 for f in FEATURES)

    def predict_one(self, x: Mapping[str, float]) -> int | None:
        """The segment of a profile's features (None before the centroids exist)."""
        if self.kmeans is None:
            return None
        z = self._scaled({k: v for k, v in x.items() if k in FEATURES
                          and type(v) in (int, float) and math.isfinite(v)})
        best, best_distance = 0, math.inf
        for index, center in self.kmeans.centers.items():  # index order: ties to the lowest
            distance = sum((center[f] - z.get(f, 0.0)) ** 2 for f in FEATURES)
            if distance < best_distance:
                best, best_distance = index, distance
        return best

    def _seed(self) -> None:
        """k-means++ on the (standardised) warm-up buffer, then a few Lloyd passes."""
        rng = random.Random(self.seed)
        points = [[self._scaled(x).get(f, 0.0) for f in FEATURES] for x in self.buffer]

        def dist(a: list[float], b: list[float]) -> float:
            return sum((p - q) ** 2 for p, q in zip(a, b, strict=True))

        centers = [points[rng.randrange(len(points))]]
        while len(centers) < self.n_segments:
            nearest = [min(dist(p, c) for c in centers) for p in points]
            total = sum(nearest)
            if total <= 0:  # fewer distinct points than segments: repeat one
                centers.append(points[rng.randrange(len(points))])
                continue
            u, edge = rng.random() * total, 0.0
            for p, d in zip(points, nearest, strict=True):
                edge += d
                if edge >= u:
                    centers.append(p)
                    break
            else:
                centers.append(points[-1])
        for _ in range(LLOYD_PASSES):
            sums = [[0.0] * len(FEATURES) for _ in centers]
            counts = [0] * len(centers)
            for p in points:
                j = min(range(len(centers)), key=lambda i, p=p: dist(p, centers[i]))
                counts[j] += 1
                sums[j] = [s + v for s, v in zip(sums[j], p, strict=True)]
            centers = [[s / counts[j] for s in sums[j]] if counts[j] else centers[j]
                       for j in range(len(centers))]
        kmeans = cluster.KMeans(n_clusters=self.n_segments, halflife=self.halflife,
                                seed=self.seed)
        for j, center in enumerate(centers):
            kmeans.centers[j].clear()
            kmeans.centers[j].update(zip(FEATURES, center, strict=True))
        self.kmeans = kmeans
        self.buffer = []

    # ------------------------------------------------------------------ descriptions
    def centroid(self, segment: int) -> dict[str, float]:
        """The segment's centroid in standard deviations from the mean, by feature."""
        if self.kmeans is None or segment not in self.kmeans.centers:
            return {}
        center = self.kmeans.centers[segment]
        return {f: round(center[f], 3) for f in FEATURES}

    def _label(self, segment: int) -> tuple[str, str]:
        z = self.centroid(segment)
        adjectives = sorted(((abs(z[f]), f) for f in _ADJECTIVES if abs(z[f]) >= STRONG),
                            reverse=True)[:2]
        en_adj = [_ADJECTIVES[f][0 if z[f] > 0 else 2] for _, f in adjectives]
        zh_adj = [_ADJECTIVES[f][1 if z[f] > 0 else 3] for _, f in adjectives]
        behaviours = sorted(((z[f], f) for f in _NOUNS if z[f] >= STRONG), reverse=True)
        if behaviours:
            noun = _NOUNS[behaviours[0][1]]
        elif all(z[f] <= -STRONG / 2 for f in ("activity", "watch")):
            noun = _QUIET
        else:
            noun = _AVERAGE
        return " ".join([*en_adj, noun[0]]), "".join([*zh_adj, noun[1], "用户"])

    def labels(self) -> dict[int, tuple[str, str]]:
        """``(en, zh)`` of every segment, refreshed every :data:`RELABEL_EVERY` points
        (twins get a ``#id`` suffix so that no two segments read alike)."""
        if self.kmeans is None:
            return {}
        if self._labelled_at < 0 or self.learned - self._labelled_at >= RELABEL_EVERY:
            raw = {s: self._label(s) for s in sorted(self.kmeans.centers)}
            seen: dict[str, int] = {}
            for en, _ in raw.values():
                seen[en] = seen.get(en, 0) + 1
            self._labels = {s: ((f"{en} #{s}", f"{zh} #{s}") if seen[en] > 1 else (en, zh))
                            for s, (en, zh) in raw.items()}
            self._labelled_at = self.learned
        return self._labels

    def describe(self, segment: int) -> dict[str, Any]:
        """``{"id", "en", "zh", "share", "centroid"}`` of one segment (``share``: its part
        of the recently learned points)."""
        en, zh = self.labels().get(segment, (None, None))
        total = sum(self.weights)
        return {"id": segment, "en": en, "zh": zh,
                "share": round(self.weights[segment] / total, 4) if total and 0 <= segment
                < self.n_segments else None,
                "centroid": self.centroid(segment)}

    def describe_all(self) -> list[dict[str, Any]]:
        return [self.describe(s) for s in range(self.n_segments)] if self.kmeans else []

    def size(self) -> dict[str, tuple[int, int]]:
        """Entries held and their caps: centroid coordinates, warm-up buffer, scaled
        features (the conformance suite's memory bound)."""
        coordinates = sum(len(c) for c in self.kmeans.centers.values()) if self.kmeans else 0
        return {"centroids": (coordinates, self.n_segments * len(FEATURES)),
                "buffer": (len(self.buffer), self.warmup),
                "features": (len(self.scaler.counts), len(FEATURES))}

    def stats(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "learned": self.learned,
                "ready": self.kmeans is not None, "segments": self.n_segments}
