"""Seeded live-commerce traffic: live rooms, clickstream sessions, catalog and injected faults.

:class:`Simulator` is pure Python and deterministic for a seed: the same calls give the same
records. :func:`run_simulation` paces it into Kafka-protocol topics.

* Catalog: ~20 categories, brands, category-dependent lognormal prices, tags, stock.
* Live rooms: a host pinning products (each pin draws a burst of viewers and product clicks),
  viewers joining and leaving by the hazard below (~10 % never send ``leave``: they just go
  quiet), Chinese and English comments of both tones, likes, gifts, shares, follows and a
  product_click -> add_to_cart -> purchase funnel priced from the catalog.
* Users: latent traits drawn from a hash of (seed, user), the same in every room and
  session: two interest categories, a price level ``b`` (log of the price they like over a
  category's median, N(0, 0.5)), an activity ``a`` (lognormal, sigma 0.8: how often they act
  when watching) and a purchase intent ``z`` ~ N(0, 1). Nothing of them is in any record; a
  model sees them only through behaviour.
* Clickstream: sessions whose items follow Zipf popularity and a sparse item -> next-item
  graph inside latent item clusters, so next-item recommendation is learnable; searches lean
  to the user's interests.
* Faults: ``bad_rate`` of the live/click records are malformed, each labelled with the error
  class :class:`streams.ingest.Validator` gives it; :meth:`Simulator.inject` starts the
  :data:`SCENARIOS`.

Leaving is a hazard (per-second probability of leaving), checked for every viewer every
:data:`CHECK_MS` (10 s): the viewer leaves with probability ``1 - exp(-h * 10 s)`` where::

    h = H0 * (1 + tau / TAU_RISE) * exp(-1.2 e - 1.2 log(a) - 1.2 c + 0.8 m - 0.7 x)

* ``H0`` = 1/1200 s; ``tau``: time in the room, ``TAU_RISE`` = 120 s (the baseline hazard
  rises with time watched).
* ``e = clip(log((E + 1) / (E_room * (1 - exp(-tau / 60 s)) + 1)), -2, 2)``: the viewer's
  recent engagement against an average viewer who has watched as long. ``E`` is the
  viewer's own actions (likes, comments, gifts, shares, follows, product clicks, carts,
  purchases) decayed with a 60 s time constant, ``E_room`` the room's decayed actions per
  viewer. ``a``: the viewer's activity trait (lurkers leave sooner).
* ``c``: the pinned item's category is the viewer's first interest (1), second (0.5), else 0.
* ``m = min(|log(pinned price / category median) - b|, 2)``: the pinned price's misfit.
* ``x``: 1 while the room is in a pin burst (30-60 s after a pin), else 0.

Silent viewers (10 %) leave by the same hazard without a ``leave`` record; a viewer still
there after 2 h leaves. Rooms draw viewers interested in their themes more often. Who acts
is not uniform either: a viewer is picked for an action with weight ``a * (1 + c)`` and, for
a product click, ``a * exp(0.6 z + 0.7 c - 0.4 m)`` (both capped at 3). A product click
becomes a cart with probability ``0.23 * 2 sigma(1.2 z) * exp(0.5 c - 0.3 m)`` (``c``,
``m`` of the clicked item) and a cart a purchase with ``0.31 * 2 sigma(1.2 z)``; a
storefront session buys what it carts with ``0.29 * 2 sigma(1.5 z)`` and carts an item with
``0.066 * 2 sigma(0.8 z)``, 1.5x for an item of an interest category (``2 sigma(k z)`` has
mean 1; the constants keep the event mix within a few per cent of the earlier,
behaviour-blind simulator). :meth:`Simulator.leave_hazard` reads ``h`` (tests, an oracle
ceiling); no record carries it.

>>> sim = Simulator(seed=1, rooms=2, users=100, items=50, bad_rate=0.0)
>>> records = sim.next_events(1_700_000_000_000, 5)
>>> len(records), {r.stream for r in records} <= {"live", "clicks", "catalog"}
(5, True)
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
import zlib
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from statistics import NormalDist
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.ingest import now_ms as wall_clock_ms
from streams.topics import TopicNames

log = logging.getLogger(__name__)

STREAMS = ("live", "clicks", "catalog")
SCENARIOS = ("bot_click_flood", "viewer_drop", "gift_fraud_burst", "checkout_outage")
BAD_CLASSES = (
    "malformed_json", "encoding", "wrong_type", "missing_field", "unknown_type", "oversize",
    "out_of_range", "ts_future", "ts_past",
)

DAY_MS = 86_400_000
TS_JITTER_MS = 20
OVERSIZE_TEXT = "哈" * 24_000  # 72 000 UTF-8 bytes: over the default 64 KiB input limit

# (name, Chinese name, median price, product nouns)
CATEGORIES: tuple[tuple[str, str, float, tuple[str, ...]], ...] = (
    ("beauty", "美妆", 129.0, ("lipstick", "eyeshadow palette", "foundation")),
    ("skincare", "护肤", 189.0, ("serum", "face cream", "sunscreen")),
    ("womens_apparel", "女装", 159.0, ("dress", "knit sweater", "trench coat")),
    ("mens_apparel", "男装", 139.0, ("hoodie", "polo shirt", "jeans")),
    ("shoes", "鞋靴", 259.0, ("sneakers", "boots", "sandals")),
    ("bags", "箱包", 329.0, ("tote bag", "backpack", "crossbody bag")),
    ("jewelry", "珠宝", 459.0, ("necklace", "ring", "earrings")),
    ("electronics", "数码", 899.0, ("earbuds", "smartwatch", "tablet")),
    ("phone_accessories", "手机配件", 49.0, ("phone case", "charger", "power bank")),
    ("home", "家居", 119.0, ("throw pillow", "desk lamp", "storage box")),
    ("kitchen", "厨具", 149.0, ("air fryer", "knife set", "frying pan")),
    ("snacks", "零食", 39.0, ("nut mix", "dried mango", "spicy strips")),
    ("fresh_food", "生鲜", 69.0, ("cherries", "beef steak", "shrimp")),
    ("baby", "母婴", 159.0, ("diapers", "baby formula", "stroller")),
    ("pets", "宠物", 89.0, ("cat food", "dog leash", "pet bed")),
    ("sports", "运动", 199.0, ("yoga mat", "running shorts", "dumbbells")),
    ("toys", "玩具", 99.0, ("building blocks", "plush toy", "puzzle")),
    ("books", "图书", 45.0, ("novel", "cookbook", "picture book")),
    ("health", "保健", 139.0, ("vitamin C", "fish oil", "protein powder")),
    ("tea_coffee", "茶咖", 79.0, ("oolong tea", "coffee beans", "matcha")),
)
TAGS = (
    "new", "bestseller", "limited", "discount", "gift_idea", "eco", "imported",
    "live_exclusive", "bundle", "free_shipping", "premium", "budget",
)
STYLE_WORDS = ("classic", "pro", "mini", "plus", "lite", "2024 edition", "signature", "soft")
BRAND_SYLLABLES = ("lu", "ma", "ki", "ro", "va", "ne", "so", "ta", "mi", "zo", "xi", "ya", "fen",
                   "bo", "an", "qi")

COMMENTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("zh", "positive"): ("太好看了", "主播好美", "已下单!", "这个颜色绝了", "性价比超高",
                         "回购第三次了", "好喜欢", "质量真不错", "冲冲冲", "求链接"),
    ("zh", "negative"): ("质量很差", "太贵了吧", "上次买的坏了", "发货太慢", "和图片不一样",
                         "不值这个价"),
    ("zh", "neutral"): ("多少钱?", "有优惠券吗", "什么时候发货", "有别的颜色吗", "尺码偏大吗",
                        "主播身高多少"),
    ("en", "positive"): ("love this!", "so pretty", "just ordered!", "great quality",
                         "best deal today", "need this", "omg yes"),
    ("en", "negative"): ("too expensive", "quality looks cheap", "mine broke after a week",
                         "shipping is so slow", "not worth it"),
    ("en", "neutral"): ("how much?", "is there a discount code?", "does it come in black?",
                        "what size are you wearing?", "ship to Canada?"),
}
CHECKOUT_COMPLAINTS = ("付款失败", "下不了单", "支付一直转圈", "checkout is broken",
                       "payment keeps failing", "can't place my order!")
EMOJI = ("❤️", "🔥", "👍", "😂", "🙄", "😍")
GIFT_AMOUNTS = (1.0, 5.0, 10.0, 52.0, 99.0, 520.0, 1314.0)
GIFT_WEIGHTS = (0.45, 0.2, 0.15, 0.1, 0.06, 0.03, 0.01)
FRAUD_GIFT_AMOUNTS = (520.0, 1314.0, 3344.0, 5200.0)
UNKNOWN_TYPES = ("teleport", "superlike", "rage_quit", "LIKE")

# Engagement mix of a room (join/leave are decided before): normal vs. just after a pin.
ENGAGEMENT_TYPES = ("like", "comment", "gift", "share", "follow", "product_click")
ENGAGEMENT_WEIGHTS = (0.50, 0.16, 0.03, 0.02, 0.02, 0.05)
BURST_ENGAGEMENT_WEIGHTS = (0.42, 0.18, 0.03, 0.03, 0.03, 0.14)

# Timed work in the simulator's queue.
_PIN, _LEAVE, _CART, _BUY, _CHECK = range(5)  # _LEAVE: a scenario's forced leave

# The leave hazard (module docstring): h = H0 (1 + tau / TAU_RISE) exp(-B_ENGAGE e
# - B_ACTIVITY log a - B_FIT c + B_PRICE m - B_BURST x), checked every CHECK_MS.
CHECK_MS = 10_000
H0_PER_S = 1.0 / 1200.0
TAU_RISE_S = 120.0
ENGAGE_TAU_MS = 60_000
B_ENGAGE, B_ACTIVITY, B_FIT, B_PRICE, B_BURST = 1.2, 1.2, 1.2, 0.8, 0.7
MAX_WATCH_MS = 2 * 3_600_000
SILENT_SHARE = 0.1              # viewers who never send ``leave``
PICK_CAP = 3.0                  # weights of who acts are capped here (rejection sampling)
PICK_TRIES = 8

_MASK64 = (1 << 64) - 1
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class SimRecord:
    """One record to produce: ``stream`` in :data:`STREAMS`, ``bad`` = intended error class."""

    stream: str
    key: str
    value: bytes
    bad: str | None = None


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    """A scenario started by :meth:`Simulator.inject` (``room_id`` None: not room-bound)."""

    name: str
    room_id: str | None
    start_ms: int
    end_ms: int


def _cumulative(weights: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


def _pick(cum: list[float], u: float) -> int:
    """Index drawn from cumulative weights ``cum`` with a uniform ``u`` in [0, 1)."""
    index = bisect_right(cum, u * cum[-1])
    return index if index < len(cum) else len(cum) - 1


def _hash_unit(seed: int, key: int, slot: int) -> float:
    """A uniform in (0, 1) from (seed, key, slot): splitmix64's finaliser, no state."""
    z = (seed * 0x9E3779B97F4A7C15 + key * 0xBF58476D1CE4E5B9 + slot * 0x94D049BB133111EB
         + 0x632BE59BD9B4E019) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return ((z >> 11) + 0.5) / 9007199254740992.0


def _two_sigmoid(x: float) -> float:
    """``2 * sigmoid(x)``: mean 1 over a symmetric ``x``, so it rescales without drift."""
    return 2.0 / (1.0 + math.exp(-x))


def _shop_price(raw: float) -> float:
    """Round to a shop-like price: 128.9, 39.9, 1.9."""
    return round(max(2.0, round(raw)) - 0.1, 2)


class _Item:
    __slots__ = ("base_price", "brand", "category", "in_stock", "item_id", "price", "tags",
                 "title")

    def __init__(self, item_id: str, category: int, brand: str, price: float, in_stock: bool,
                 tags: list[str], title: str) -> None:
        self.item_id = item_id
        self.category = category
        self.brand = brand
        self.base_price = price
        self.price = price
        self.in_stock = in_stock
        self.tags = tags
        self.title = title


class _Traits:
    """A user's latent traits (module docstring): never in a record."""

    __slots__ = ("activity", "budget", "intent", "interest", "interest2")

    def __init__(self, interest: int, interest2: int, budget: float, activity: float,
                 intent: float) -> None:
        self.interest = interest
        self.interest2 = interest2
        self.budget = budget
        self.activity = activity
        self.intent = intent

    def fit(self, category: int, log_price: float) -> tuple[float, float]:
        """(c, m) of an item: interest fit and price misfit (module docstring)."""
        c = 1.0 if category == self.interest else 0.5 if category == self.interest2 else 0.0
        return c, min(abs(log_price - self.budget), 2.0)


class _Viewer:
    """One viewer's presence in one room."""

    __slots__ = ("engaged", "engaged_at", "joined_at", "pin_version", "session_id", "silent",
                 "traits", "weight", "weight_product")

    def __init__(self, session_id: str, joined_at: int, silent: bool, traits: _Traits) -> None:
        self.session_id = session_id
        self.joined_at = joined_at
        self.silent = silent
        self.traits = traits
        self.engaged = 0.0      # own actions, decayed with ENGAGE_TAU_MS
        self.engaged_at = joined_at
        self.pin_version = -1   # pin the cached weights were computed for
        self.weight = 1.0
        self.weight_product = 1.0


class _Audience:
    """Viewers present in a room: O(1) add, remove and uniform random pick."""

    __slots__ = ("ids", "position", "sessions", "state")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.position: dict[str, int] = {}
        self.sessions: dict[str, str] = {}
        self.state: dict[str, _Viewer] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, user_id: str, viewer: _Viewer) -> None:
        self.position[user_id] = len(self.ids)
        self.ids.append(user_id)
        self.sessions[user_id] = viewer.session_id
        self.state[user_id] = viewer

    def remove(self, user_id: str) -> None:
        index = self.position.pop(user_id)
        del self.sessions[user_id]
        del self.state[user_id]
        last = self.ids.pop()
        if index < len(self.ids):
            self.ids[index] = last
            self.position[last] = index


class _Room:
    __slots__ = ("audience", "burst_until", "drop_until", "engaged", "engaged_at", "host_id",
                 "outage_until", "pin_category", "pin_log_price", "pin_version", "pinned",
                 "popularity", "products", "room_id", "target", "themes", "zh_share")

    def __init__(self, room_id: str, host_id: str, products: list[int], popularity: float,
                 target: int, zh_share: float, themes: frozenset[int]) -> None:
        self.room_id = room_id
        self.themes = themes
        self.engaged = 0.0      # all viewers' actions, decayed with ENGAGE_TAU_MS
        self.engaged_at = 0
        self.pin_category = -1
        self.pin_log_price = 0.0
        self.pin_version = 0
        self.host_id = host_id
        self.products = products
        self.popularity = popularity
        self.target = target
        self.zh_share = zh_share
        self.pinned = products[0]
        self.audience = _Audience()
        self.burst_until = 0
        self.drop_until = 0
        self.outage_until = 0

    def target_viewers(self, now_ms: int) -> float:
        target = float(self.target)
        if now_ms < self.burst_until:
            target *= 1.8
        if now_ms < self.drop_until:
            target *= 0.1
        return target


class _ClickSession:
    __slots__ = ("buys", "cart", "cart_rate", "interests", "item", "room_id",
                 "search_category", "session_id", "steps_left", "user_id")

    def __init__(self, user_id: str, session_id: str, steps_left: int, buys: bool,
                 room_id: str | None, cart_rate: float = 0.07,
                 interests: tuple[int, ...] = ()) -> None:
        self.user_id = user_id
        self.cart_rate = cart_rate
        self.interests = interests
        self.session_id = session_id
        self.steps_left = steps_left
        self.buys = buys
        self.room_id = room_id
        self.item = -1
        self.search_category = -1
        self.cart: list[tuple[int, int]] = []


class _Emitter:
    """A scenario actor on its own fixed schedule (bots, fraudsters), outside any audience."""

    __slots__ = ("cursor", "done", "end_ms", "interval_ms", "jitter_ms", "kind", "next_at",
                 "room", "session_id", "started", "user_id")

    def __init__(self, kind: str, user_id: str, session_id: str, room: _Room | None,
                 next_at: int, interval_ms: int, jitter_ms: int, end_ms: int,
                 cursor: int) -> None:
        self.kind = kind
        self.user_id = user_id
        self.session_id = session_id
        self.room = room
        self.next_at = next_at
        self.interval_ms = interval_ms
        self.jitter_ms = jitter_ms
        self.end_ms = end_ms
        self.cursor = cursor
        self.started = False
        self.done = False


# (stream, key, value dict) before encoding
_Event = tuple[str, str, dict[str, Any]]


class Simulator:
    """Deterministic live-commerce traffic generator.

    Parameters
    ----------
    seed, rooms, users, items
        Random seed, live rooms, user population and catalog size.
    bad_rate
        Fraction of live/click records deliberately malformed.
    live_share
        Fraction of the regular traffic that is live-room events (the rest: clickstream).
    catalog_update_share
        Fraction of records that are catalog updates (price changes, stock flips).
    max_viewers_per_room, max_click_sessions
        Memory bounds on concurrent viewers per room and open click sessions.
    id_prefix
        Prefix of event and session ids (default: the seed).
    """

    def __init__(self, *, seed: int, rooms: int, users: int, items: int, bad_rate: float = 0.0,
                 live_share: float = 0.65, catalog_update_share: float = 0.002,
                 max_viewers_per_room: int = 5000, max_click_sessions: int = 5000,
                 id_prefix: str | None = None) -> None:
        if rooms < 1 or users < 1 or items < 1:
            raise ValueError("rooms, users and items must be >= 1")
        if not 0.0 <= bad_rate <= 1.0:
            raise ValueError("bad_rate must be within [0, 1]")
        self.seed = seed
        self.users = users
        self.bad_rate = bad_rate
        self.live_share = live_share
        self.catalog_update_share = catalog_update_share
        self.max_viewers_per_room = max(1, max_viewers_per_room)
        self.id_prefix = str(seed) if id_prefix is None else id_prefix
        self._rng = Random(seed)
        self._counter = 0
        self._queue: list[tuple[int, int, int, _Room, str, str, int, int]] = []
        self._queued_funnel = 0
        self._max_queued_funnel = 20 * self.max_viewers_per_room
        self._emitters: list[_Emitter] = []
        self._scenarios: list[ScenarioRun] = []
        self._global_outage_until = 0
        self._clock_started = False
        self._build_catalog(items)
        self._build_covisitation()
        self._build_rooms(rooms)
        self._sessions: list[_ClickSession] = []
        self._session_target = max(1, min(max_click_sessions, max(20, users // 20)))

    # ------------------------------------------------------------------ construction
    def _build_catalog(self, count: int) -> None:
        rng = self._rng
        category_cum = _cumulative([rng.lognormvariate(0.0, 0.6) for _ in CATEGORIES])
        brands = [
            [(rng.choice(BRAND_SYLLABLES) + rng.choice(BRAND_SYLLABLES)
              + rng.choice(BRAND_SYLLABLES)).capitalize() for _ in range(rng.randint(4, 10))]
            for _ in CATEGORIES
        ]
        self._items: list[_Item] = []
        for index in range(count):
            category = _pick(category_cum, rng.random())
            _, _, median, nouns = CATEGORIES[category]
            brand = rng.choice(brands[category])
            price = _shop_price(median * rng.lognormvariate(0.0, 0.55))
            tags = rng.sample(TAGS, rng.randint(1, 3))
            title = f"{brand} {rng.choice(nouns)} {rng.choice(STYLE_WORDS)}"
            self._items.append(_Item(f"i{index}", category, brand, price,
                                     rng.random() >= 0.04, tags, title))
        # Zipf popularity over a random order of the items.
        ranks = list(range(count))
        rng.shuffle(ranks)
        self._popularity = [1.0 / (rank + 1) ** 0.9 for rank in ranks]
        self._popularity_cum = _cumulative(self._popularity)
        self._category_items: dict[int, list[int]] = {}
        for index, item in enumerate(self._items):
            self._category_items.setdefault(item.category, []).append(index)
        self._category_cum = {
            c: _cumulative([self._popularity[i] for i in members])
            for c, members in self._category_items.items()
        }
        # users' interests follow the catalog's category mix
        self._interest_categories = sorted(self._category_items)
        self._interest_cum = _cumulative(
            [len(self._category_items[c]) for c in self._interest_categories])

    def _weighted_sample(self, candidates: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` distinct candidates, popular ones more likely and first."""
        rng, popularity = self._rng, self._popularity
        keyed = sorted(((math.log(1.0 - rng.random()) / popularity[c], c) for c in candidates),
                       reverse=True)
        return [c for _, c in keyed[:k]]

    def _build_covisitation(self) -> None:
        """Latent clusters inside categories and a sparse item -> next-item graph."""
        rng = self._rng
        clusters: list[list[int]] = []
        cluster_category: list[int] = []
        for category, members in self._category_items.items():
            shuffled = list(members)
            rng.shuffle(shuffled)
            start = 0
            while start < len(shuffled):
                size = rng.randint(6, 20)
                clusters.append(shuffled[start:start + size])
                cluster_category.append(category)
                start += size
        self._cluster_of = [0] * len(self._items)
        for cluster_index, members in enumerate(clusters):
            for item in members:
                self._cluster_of[item] = cluster_index
        self._cluster_members = clusters
        self._cluster_cum = [_cumulative([self._popularity[i] for i in m]) for m in clusters]
        # Each cluster has a complementary cluster (phone -> phone case), elsewhere if possible.
        complement = []
        for cluster_index, category in enumerate(cluster_category):
            chosen = cluster_index
            for _ in range(20):  # rejection sampling: one category means no other cluster
                candidate = rng.randrange(len(clusters))
                if cluster_category[candidate] != category:
                    chosen = candidate
                    break
            complement.append(chosen)
        self._next_items: list[list[int]] = []
        self._next_cum: list[list[float]] = []
        for item, cluster_index in enumerate(self._cluster_of):
            same = [i for i in clusters[cluster_index] if i != item]
            near = self._weighted_sample(same, rng.randint(3, 8))
            far_pool = [i for i in clusters[complement[cluster_index]] if i != item]
            far = self._weighted_sample(far_pool, rng.randint(1, 2))
            neighbours = near + [i for i in far if i not in near]
            weights = [1.0 / (p + 1) for p in range(len(near))]
            weights += [0.3 / (q + 1) for q in range(len(neighbours) - len(near))]
            self._next_items.append(neighbours)
            self._next_cum.append(_cumulative(weights) if weights else [])

    def _build_rooms(self, count: int) -> None:
        rng = self._rng
        categories = sorted(self._category_items)
        popularity = [rng.lognormvariate(0.0, 0.7) for _ in range(count)]
        total_popularity = sum(popularity)
        self._rooms: list[_Room] = []
        for index in range(count):
            themes = rng.sample(categories, min(len(categories), rng.randint(1, 3)))
            wanted = min(len(self._items), rng.randint(10, 30))
            themed = [i for c in themes for i in self._category_items[c]]
            products = self._weighted_sample(themed, wanted)
            if len(products) < wanted:
                taken = set(products)
                rest = [i for i in range(len(self._items)) if i not in taken]
                products += self._weighted_sample(rest, wanted - len(products))
            target = round(0.2 * self.users * popularity[index] / total_popularity)
            target = max(5, min(self.max_viewers_per_room, target))
            room = _Room(f"room-{index + 1}", f"host-{index + 1}", products,
                         popularity[index], target, rng.uniform(0.4, 0.9), frozenset(themes))
            self._set_pin(room, products[0])
            self._rooms.append(room)
        self._room_by_id = {room.room_id: room for room in self._rooms}

    # ------------------------------------------------------------------ latent user traits
    def _traits(self, user_id: str) -> _Traits:
        """The latent traits of ``user_id``: a pure function of the seed and the id."""
        digits = user_id[1:]
        key = int(digits) if digits.isdigit() else zlib.crc32(user_id.encode()) + (1 << 40)
        seed = self.seed

        def unit(slot: int) -> float:
            return _hash_unit(seed, key, slot)

        categories, cum = self._interest_categories, self._interest_cum
        normal = _NORMAL.inv_cdf
        return _Traits(categories[_pick(cum, unit(0))], categories[_pick(cum, unit(1))],
                       0.5 * normal(unit(2)), math.exp(0.8 * normal(unit(3)) - 0.32),
                       normal(unit(4)))

    def _log_price(self, item_index: int) -> float:
        item = self._items[item_index]
        return math.log(item.price / CATEGORIES[item.category][2])

    def _set_pin(self, room: _Room, item_index: int) -> None:
        room.pinned = item_index
        room.pin_category = self._items[item_index].category
        room.pin_log_price = self._log_price(item_index)
        room.pin_version += 1

    def _weights(self, room: _Room, viewer: _Viewer) -> None:
        """Refresh ``viewer``'s pick weights for the room's current pin (cached per pin)."""
        if viewer.pin_version != room.pin_version:
            traits = viewer.traits
            c, m = traits.fit(room.pin_category, room.pin_log_price)
            viewer.weight = traits.activity * (1.0 + c)
            viewer.weight_product = traits.activity * math.exp(
                0.6 * traits.intent + 0.7 * c - 0.4 * m)
            viewer.pin_version = room.pin_version

    def _pick_viewer(self, room: _Room, product: bool) -> str:
        """A viewer of ``room`` drawn with the pick weights (rejection sampling)."""
        audience = room.audience
        ids, state, rnd = audience.ids, audience.state, self._rng.random
        count, version = len(ids), room.pin_version
        user_id = ids[int(rnd() * count)]
        for _ in range(PICK_TRIES):
            viewer = state[user_id]
            if viewer.pin_version != version:
                self._weights(room, viewer)
            if rnd() * PICK_CAP < (viewer.weight_product if product else viewer.weight):
                break
            user_id = ids[int(rnd() * count)]
        return user_id

    def _engage(self, room: _Room, user_id: str, now_ms: int) -> None:
        """Count one action of ``user_id`` in ``room`` (the hazard's engagement term)."""
        viewer = room.audience.state.get(user_id)
        if viewer is None:
            return
        # decayed only when the clock moved: one next_events call shares its now_ms
        elapsed = now_ms - viewer.engaged_at
        if elapsed > 0:
            viewer.engaged = viewer.engaged * math.exp(-elapsed / ENGAGE_TAU_MS) + 1.0
            viewer.engaged_at = now_ms
        else:
            viewer.engaged += 1.0
        elapsed = now_ms - room.engaged_at
        if elapsed > 0:
            room.engaged = room.engaged * math.exp(-elapsed / ENGAGE_TAU_MS) + 1.0
            room.engaged_at = now_ms
        else:
            room.engaged += 1.0

    def leave_hazard(self, room_id: str, user_id: str, now_ms: int) -> float:
        """The per-second leave hazard of a viewer now (module docstring); 0.0 if absent."""
        room = self._room_by_id[room_id]
        viewer = room.audience.state.get(user_id)
        return 0.0 if viewer is None else self._hazard(room, viewer, now_ms)

    def _hazard(self, room: _Room, viewer: _Viewer, now_ms: int) -> float:
        tau_ms = max(0, now_ms - viewer.joined_at)
        own = viewer.engaged * math.exp(min(0, viewer.engaged_at - now_ms) / ENGAGE_TAU_MS)
        per_viewer = room.engaged * math.exp(
            min(0, room.engaged_at - now_ms) / ENGAGE_TAU_MS) / max(1, len(room.audience))
        expected = per_viewer * (1.0 - math.exp(-tau_ms / ENGAGE_TAU_MS))
        e = min(2.0, max(-2.0, math.log((own + 1.0) / (expected + 1.0))))
        c, m = viewer.traits.fit(room.pin_category, room.pin_log_price)
        x = 1.0 if now_ms < room.burst_until else 0.0
        return H0_PER_S * (1.0 + tau_ms / 1000.0 / TAU_RISE_S) * math.exp(
            -B_ENGAGE * e - B_ACTIVITY * math.log(viewer.traits.activity) - B_FIT * c
            + B_PRICE * m - B_BURST * x)

    # ------------------------------------------------------------------ public views
    @property
    def room_ids(self) -> list[str]:
        return [room.room_id for room in self._rooms]

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self._items]

    @property
    def active_scenarios(self) -> list[ScenarioRun]:
        return list(self._scenarios)

    def viewer_count(self, room_id: str) -> int:
        """Viewers currently in ``room_id``."""
        return len(self._room_by_id[room_id].audience)

    def room_products(self, room_id: str) -> list[str]:
        return [self._items[i].item_id for i in self._room_by_id[room_id].products]

    def open_click_sessions(self) -> int:
        return len(self._sessions)

    def queued_work(self) -> int:
        """Timed actions waiting (scheduled leaves, carts, purchases, pins)."""
        return len(self._queue)

    def catalog_record(self, item_index: int, now_ms: int) -> dict[str, Any]:
        item = self._items[item_index]
        return {
            "item_id": item.item_id, "ts": now_ms, "category": CATEGORIES[item.category][0],
            "price": item.price, "in_stock": item.in_stock, "brand": item.brand,
            "title": item.title, "tags": list(item.tags),
        }

    def catalog_records(self, now_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """The whole catalog as (item_id, catalog-item dict) pairs."""
        return [(item.item_id, self.catalog_record(index, now_ms))
                for index, item in enumerate(self._items)]

    # ------------------------------------------------------------------ generation
    def next_events(self, now_ms: int, n: int) -> list[SimRecord]:
        """Exactly ``n`` records at wall time ``now_ms`` (no ``ts`` after ``now_ms``).

        Scenario actors and timed work (leaves, funnel steps, pins) come first, then regular
        traffic: ``live_share`` live events, the rest clicks, a trickle of catalog updates.
        """
        self._start_clock(now_ms)
        out: list[SimRecord] = []
        if self._scenarios:
            self._scenarios = [s for s in self._scenarios if s.end_ms > now_ms]
        if self._emitters:
            self._run_emitters(now_ms, n, out)
        if self._queue:
            self._run_queue(now_ms, n, out)
        rnd = self._rng.random
        live_share = self.live_share
        catalog_share = self.catalog_update_share
        finish = self._finish
        room_cum = _cumulative([r.popularity * (20 + len(r.audience)) for r in self._rooms])
        while len(out) < n:
            u = rnd()
            if u < catalog_share:
                event = self._catalog_update(now_ms)
            elif u < catalog_share + live_share * (1.0 - catalog_share):
                event = self._live_event(self._rooms[_pick(room_cum, rnd())], now_ms)
            else:
                event = self._click_event(now_ms)
            if event is not None:
                out.append(finish(event, now_ms))
        return out

    def _start_clock(self, now_ms: int) -> None:
        if self._clock_started:
            return
        self._clock_started = True
        for room in self._rooms:
            self._schedule(now_ms + int(self._rng.uniform(2_000, 30_000)), _PIN, room)

    def _next_id(self) -> str:
        self._counter += 1
        return f"{self.id_prefix}-{self._counter}"

    def _ts(self, now_ms: int) -> int:
        return max(0, now_ms - int(self._rng.random() * TS_JITTER_MS))

    def _schedule(self, due_ms: int, kind: int, room: _Room, user_id: str = "",
                  session_id: str = "", item: int = -1, quantity: int = 0) -> None:
        self._counter += 1  # doubles as the heap tie-breaker: never compares rooms
        heapq.heappush(self._queue, (due_ms, self._counter, kind, room, user_id, session_id,
                                     item, quantity))

    def _finish(self, event: _Event, now_ms: int) -> SimRecord:
        stream, key, body = event
        if self.bad_rate and stream != "catalog" and self._rng.random() < self.bad_rate:
            value, bad = self._corrupt(stream, body, now_ms)
            return SimRecord(stream, key, value, bad)
        return SimRecord(stream, key, orjson.dumps(body), None)

    # ------------------------------------------------------------------ timed work
    def _run_queue(self, now_ms: int, n: int, out: list[SimRecord]) -> None:
        queue = self._queue
        while queue and queue[0][0] <= now_ms and len(out) < n:
            due, _, kind, room, user_id, session_id, item, quantity = heapq.heappop(queue)
            event: _Event | None = None
            if kind == _CHECK:
                event = self._check(room, user_id, session_id, due, now_ms)
            elif kind == _PIN:
                event = self._pin(room, now_ms)
            elif kind == _LEAVE:
                if room.audience.sessions.get(user_id) == session_id:
                    room.audience.remove(user_id)
                    event = self._live(room, "leave", user_id, session_id, self._ts(now_ms))
            else:
                self._queued_funnel -= 1
                if kind == _CART:
                    event = self._live_cart(room, user_id, session_id, item, quantity, now_ms)
                    self._engage(room, user_id, now_ms)
                else:
                    event = self._live_purchase(room, user_id, session_id, item, quantity,
                                                now_ms)
                    self._engage(room, user_id, now_ms)
            if event is not None:
                out.append(self._finish(event, now_ms))

    def _check(self, room: _Room, user_id: str, session_id: str, due: int,
               now_ms: int) -> _Event | None:
        """A hazard check of one viewer: leave now, or check again in CHECK_MS."""
        viewer = room.audience.state.get(user_id)
        if viewer is None or viewer.session_id != session_id:
            return None  # left already (a viewer drop), or a later visit's check runs
        p_leave = 1.0 - math.exp(-self._hazard(room, viewer, now_ms) * CHECK_MS / 1000.0)
        if self._rng.random() >= p_leave and now_ms - viewer.joined_at < MAX_WATCH_MS:
            self._schedule(max(due + CHECK_MS, now_ms + 1), _CHECK, room, user_id, session_id)
            return None
        room.audience.remove(user_id)
        if viewer.silent:
            return None
        return self._live(room, "leave", user_id, session_id, self._ts(now_ms))

    def _run_emitters(self, now_ms: int, n: int, out: list[SimRecord]) -> None:
        rng = self._rng
        for emitter in self._emitters:
            # A stalled caller must not get minutes of catch-up at once.
            emitter.next_at = max(emitter.next_at, now_ms - 2_000)
            while len(out) < n and not emitter.done:
                if emitter.next_at < emitter.end_ms:
                    if emitter.next_at > now_ms:
                        break
                    out.append(self._finish(self._emit(emitter, emitter.next_at), now_ms))
                    jitter = int(rng.random() * emitter.jitter_ms) if emitter.jitter_ms else 0
                    emitter.next_at += emitter.interval_ms + jitter
                elif emitter.room is not None and emitter.kind == "gift":
                    if emitter.end_ms > now_ms:
                        break
                    event = self._live(emitter.room, "leave", emitter.user_id,
                                       emitter.session_id, emitter.end_ms)
                    out.append(self._finish(event, now_ms))
                    emitter.done = True
                else:
                    emitter.done = True
        self._emitters = [e for e in self._emitters if not e.done]

    def _emit(self, emitter: _Emitter, ts: int) -> _Event:
        if emitter.kind == "bot":
            # Scrapers walk the catalog in id order at a fixed cadence.
            item_index = emitter.cursor % len(self._items)
            emitter.cursor += 1
            item = self._items[item_index]
            body: dict[str, Any] = {
                "event_id": self._next_id(), "type": "click", "ts": ts,
                "user_id": emitter.user_id, "session_id": emitter.session_id,
                "item_id": item.item_id, "category": CATEGORIES[item.category][0],
                "price": item.price,
            }
            if emitter.room is not None:
                body["room_id"] = emitter.room.room_id
            return "clicks", emitter.user_id, body
        room = emitter.room
        assert room is not None
        if not emitter.started:
            emitter.started = True
            return self._live(room, "join", emitter.user_id, emitter.session_id, ts)
        event = self._live(room, "gift", emitter.user_id, emitter.session_id, ts)
        event[2]["amount"] = self._rng.choice(FRAUD_GIFT_AMOUNTS)
        return event

    # ------------------------------------------------------------------ live rooms
    def _live(self, room: _Room, kind: str, user_id: str, session_id: str,
              ts: int) -> _Event:
        body = {
            "event_id": self._next_id(), "type": kind, "ts": ts, "room_id": room.room_id,
            "user_id": user_id, "host_id": room.host_id, "session_id": session_id,
        }
        return "live", room.room_id, body

    def _pin(self, room: _Room, now_ms: int) -> _Event:
        rng = self._rng
        self._set_pin(room, rng.choice(room.products))
        room.burst_until = now_ms + int(rng.uniform(30_000, 60_000))
        self._schedule(now_ms + int(rng.expovariate(1.0 / 90_000)) + 20_000, _PIN, room)
        event = self._live(room, "product_pin", room.host_id, f"host-{room.room_id}",
                           self._ts(now_ms))
        event[2]["item_id"] = self._items[room.pinned].item_id
        return event

    def _join(self, room: _Room, now_ms: int) -> _Event | None:
        rng = self._rng
        audience = room.audience
        if len(audience) >= self.max_viewers_per_room:
            return None
        themes = room.themes
        for _ in range(4):  # rooms draw viewers interested in their themes more often
            user_id = f"u{rng.randrange(self.users)}"
            if user_id in audience.sessions:
                continue
            traits = self._traits(user_id)
            if traits.interest in themes or traits.interest2 in themes or rng.random() < 0.35:
                break
        else:
            return None
        self._counter += 1
        session_id = f"{self.id_prefix}-w{self._counter}"
        silent = rng.random() < SILENT_SHARE
        audience.add(user_id, _Viewer(session_id, now_ms, silent, traits))
        # the first check at a random phase: checks of one room do not fall in step
        self._schedule(now_ms + 1 + int(rng.random() * CHECK_MS), _CHECK, room, user_id,
                       session_id)
        return self._live(room, "join", user_id, session_id, self._ts(now_ms))

    def _live_event(self, room: _Room, now_ms: int) -> _Event | None:
        rng = self._rng
        rnd = rng.random
        audience = room.audience
        viewers = len(audience)
        target = room.target_viewers(now_ms)
        if viewers == 0 or rnd() < 0.01 + 0.35 * max(0.0, 1.0 - viewers / target):
            event = self._join(room, now_ms)
            if event is not None or viewers == 0:
                return event
        weights = BURST_CUM if now_ms < room.burst_until else NORMAL_CUM
        kind = ENGAGEMENT_TYPES[_pick(weights, rnd())]
        user_id = self._pick_viewer(room, kind == "product_click")
        session_id = audience.sessions[user_id]
        self._engage(room, user_id, now_ms)
        event = self._live(room, kind, user_id, session_id, self._ts(now_ms))
        body = event[2]
        if kind == "comment":
            body["text"] = self._comment(room, now_ms)
        elif kind == "gift":
            body["amount"] = GIFT_AMOUNTS[_pick(GIFT_CUM, rnd())]
        elif kind == "product_click":
            item = room.pinned if rnd() < 0.7 else room.products[int(rnd() * len(room.products))]
            body["item_id"] = self._items[item].item_id
            traits = audience.state[user_id].traits
            c, m = traits.fit(self._items[item].category, self._log_price(item))
            p_cart = 0.23 * _two_sigmoid(1.2 * traits.intent) * math.exp(0.5 * c - 0.3 * m)
            if rnd() < p_cart and self._queued_funnel < self._max_queued_funnel:
                self._queued_funnel += 1
                delay = int(rng.lognormvariate(math.log(8_000), 0.7))
                self._schedule(now_ms + delay, _CART, room, user_id, session_id, item,
                               self._quantity())
        return event

    def _quantity(self) -> int:
        u = self._rng.random()
        return 1 if u < 0.75 else 2 if u < 0.93 else 3

    def _comment(self, room: _Room, now_ms: int) -> str:
        rng = self._rng
        language = "zh" if rng.random() < room.zh_share else "en"
        if self._checkout_down(room, now_ms) and rng.random() < 0.4:
            text = rng.choice(CHECKOUT_COMPLAINTS)
        else:
            u = rng.random()
            tone = "positive" if u < 0.55 else "neutral" if u < 0.85 else "negative"
            text = rng.choice(COMMENTS[language, tone])
        if rng.random() < 0.2:
            text += rng.choice(EMOJI)
        return text

    def _checkout_down(self, room: _Room | None, now_ms: int) -> bool:
        if now_ms < self._global_outage_until:
            return True
        return room is not None and now_ms < room.outage_until

    def _live_cart(self, room: _Room, user_id: str, session_id: str, item: int,
                   quantity: int, now_ms: int) -> _Event:
        rng = self._rng
        event = self._live(room, "add_to_cart", user_id, session_id, self._ts(now_ms))
        event[2]["item_id"] = self._items[item].item_id
        event[2]["quantity"] = quantity
        viewer = room.audience.state.get(user_id)
        traits = viewer.traits if viewer is not None else self._traits(user_id)
        p_buy = 0.31 * _two_sigmoid(1.2 * traits.intent)
        if rng.random() < p_buy and self._queued_funnel < self._max_queued_funnel:
            self._queued_funnel += 1
            delay = int(rng.lognormvariate(math.log(20_000), 0.8))
            self._schedule(now_ms + delay, _BUY, room, user_id, session_id, item, quantity)
        return event

    def _live_purchase(self, room: _Room, user_id: str, session_id: str, item: int,
                       quantity: int, now_ms: int) -> _Event | None:
        if self._checkout_down(room, now_ms):
            if self._rng.random() < 0.5:  # the failed buyer complains
                event = self._live(room, "comment", user_id, session_id, self._ts(now_ms))
                event[2]["text"] = self._rng.choice(CHECKOUT_COMPLAINTS)
                return event
            return None
        product = self._items[item]
        if not product.in_stock:
            return None
        event = self._live(room, "purchase", user_id, session_id, self._ts(now_ms))
        body = event[2]
        body["item_id"] = product.item_id
        body["quantity"] = quantity
        body["amount"] = round(product.price * quantity, 2)
        return event

    # ------------------------------------------------------------------ clickstream
    def _click(self, session: _ClickSession, kind: str, item_index: int,
               now_ms: int) -> _Event:
        item = self._items[item_index]
        body: dict[str, Any] = {
            "event_id": self._next_id(), "type": kind, "ts": self._ts(now_ms),
            "user_id": session.user_id, "session_id": session.session_id,
            "item_id": item.item_id, "category": CATEGORIES[item.category][0],
            "price": item.price,
        }
        if session.room_id is not None:
            body["room_id"] = session.room_id
        return "clicks", session.user_id, body

    def _next_item(self, current: int) -> int:
        rnd = self._rng.random
        u = rnd()
        neighbours = self._next_items[current]
        if u < 0.75 and neighbours:
            return neighbours[_pick(self._next_cum[current], rnd())]
        if u < 0.88:
            cluster = self._cluster_of[current]
            return self._cluster_members[cluster][_pick(self._cluster_cum[cluster], rnd())]
        return _pick(self._popularity_cum, rnd())

    def _search(self, session: _ClickSession, category: int, now_ms: int) -> _Event:
        rng = self._rng
        name, name_zh, _, nouns = CATEGORIES[category]
        sample = self._items[rng.choice(self._category_items[category])]
        query = rng.choice((name.replace("_", " "), name_zh, sample.brand, rng.choice(nouns),
                            f"{sample.brand} {rng.choice(nouns)}"))
        session.item = -1
        session.search_category = category
        body: dict[str, Any] = {
            "event_id": self._next_id(), "type": "search", "ts": self._ts(now_ms),
            "user_id": session.user_id, "session_id": session.session_id, "query": query,
        }
        if session.room_id is not None:
            body["room_id"] = session.room_id
        return "clicks", session.user_id, body

    def _click_event(self, now_ms: int) -> _Event | None:
        sessions = self._sessions
        rnd = self._rng.random
        if len(sessions) < self._session_target and (not sessions or rnd() < 0.15):
            return self._start_session(now_ms)
        index = int(rnd() * len(sessions))
        session = sessions[index]
        if session.steps_left <= 0:
            if session.cart and session.buys:
                return self._click_purchase(session, now_ms)
            last = sessions.pop()
            if index < len(sessions):
                sessions[index] = last
            return None
        session.steps_left -= 1
        if session.item < 0:  # just searched: open a popular result of that category
            category = session.search_category
            members = self._category_items[category]
            session.item = members[_pick(self._category_cum[category], rnd())]
            return self._click(session, "click", session.item, now_ms)
        item = self._items[session.item]
        p_cart = session.cart_rate * (1.5 if item.category in session.interests else 1.0)
        if rnd() < p_cart and item.in_stock:
            quantity = self._quantity()
            session.cart.append((session.item, quantity))
            event = self._click(session, "add_to_cart", session.item, now_ms)
            event[2]["quantity"] = quantity
            return event
        u = rnd()
        if u < 0.032:
            return self._search(session, item.category, now_ms)
        if u < 0.048 and session.cart and session.buys:
            return self._click_purchase(session, now_ms)
        session.item = self._next_item(session.item)
        return self._click(session, "view" if rnd() < 0.55 else "click", session.item, now_ms)

    def _start_session(self, now_ms: int) -> _Event:
        rng = self._rng
        user_id = f"u{rng.randrange(self.users)}"
        self._counter += 1
        steps = 2 + int(rng.expovariate(1.0 / 9.0))
        u = rng.random()
        room = self._rooms[int(rng.random() * len(self._rooms))] if u < 0.1 else None
        traits = self._traits(user_id)
        buys = rng.random() < 0.29 * _two_sigmoid(1.5 * traits.intent)
        session = _ClickSession(user_id, f"{self.id_prefix}-c{self._counter}", steps,
                                buys, room.room_id if room else None,
                                0.066 * _two_sigmoid(0.8 * traits.intent),
                                (traits.interest, traits.interest2))
        self._sessions.append(session)
        if room is not None:  # came from the live room: lands on the pinned product
            session.item = room.pinned
            return self._click(session, "click", session.item, now_ms)
        if u < 0.32:
            if rng.random() < 0.5:  # searches lean to the user's interests
                category = traits.interest if rng.random() < 0.7 else traits.interest2
            else:
                category = self._items[_pick(self._popularity_cum, rng.random())].category
            return self._search(session, category, now_ms)
        session.item = _pick(self._popularity_cum, rng.random())
        return self._click(session, "view", session.item, now_ms)

    def _click_purchase(self, session: _ClickSession, now_ms: int) -> _Event | None:
        item_index, quantity = session.cart.pop()
        room = self._room_by_id.get(session.room_id) if session.room_id else None
        if self._checkout_down(room, now_ms) or not self._items[item_index].in_stock:
            return None
        event = self._click(session, "purchase", item_index, now_ms)
        event[2]["quantity"] = quantity
        return event

    # ------------------------------------------------------------------ catalog updates
    def _catalog_update(self, now_ms: int) -> _Event:
        rng = self._rng
        index = _pick(self._popularity_cum, rng.random())
        item = self._items[index]
        if not item.in_stock:
            item.in_stock = True
        elif rng.random() < 0.05:
            item.in_stock = False
        else:  # live flash sales and their end
            item.price = _shop_price(item.base_price * rng.uniform(0.7, 1.05))
        return "catalog", item.item_id, self.catalog_record(index, self._ts(now_ms))

    # ------------------------------------------------------------------ faults
    def _corrupt(self, stream: str, body: dict[str, Any], now_ms: int) -> tuple[bytes, str]:
        """Break a good event; return the bytes and the error class ingest must report."""
        rng = self._rng
        bad = BAD_CLASSES[int(rng.random() * len(BAD_CLASSES))]
        broken = dict(body)
        text_field = "text" if stream == "live" else "query"
        if bad == "malformed_json":
            data = orjson.dumps(broken)
            variant = rng.random()
            if variant < 0.4:
                return data[:-1], bad  # truncated: lost closing brace
            if variant < 0.7:
                return data + b"}", bad
            return data.replace(b'":', b'"', 1), bad
        if bad == "encoding":
            broken[text_field] = "@@LATIN1@@"
            return orjson.dumps(broken).replace(b"@@LATIN1@@", b"caf\xe9 cr\xe8me"), bad
        if bad == "wrong_type":
            broken["ts"] = str(broken["ts"])
        elif bad == "missing_field":
            required = ("event_id", "user_id", "room_id") if stream == "live" else (
                "event_id", "user_id", "session_id")
            del broken[rng.choice(required)]
        elif bad == "unknown_type":
            broken["type"] = rng.choice(UNKNOWN_TYPES)
        elif bad == "oversize":
            broken[text_field] = OVERSIZE_TEXT
        elif bad == "out_of_range":
            item = self._items[int(rng.random() * len(self._items))]
            broken["type"] = "purchase"
            broken.setdefault("item_id", item.item_id)
            broken["quantity"] = 1
            if stream == "live":
                broken["amount"] = -item.price
            else:
                broken["price"] = -item.price
        elif bad == "ts_future":
            broken["ts"] = now_ms + DAY_MS
        else:
            broken["ts"] = now_ms - 30 * DAY_MS
        return orjson.dumps(broken), bad

    # ------------------------------------------------------------------ scenarios
    def inject(self, name: str, room_id: str | None, duration_s: float,
               now_ms: int) -> ScenarioRun:
        """Start scenario ``name`` for ``duration_s`` seconds from ``now_ms``.

        ``room_id`` None picks a random room for ``viewer_drop`` and ``gift_fraud_burst``,
        means "the whole shop" for ``checkout_outage`` and "storefront" (no room tag) for
        ``bot_click_flood``.
        """
        if name not in SCENARIOS:
            raise ValueError(f"unknown scenario {name!r}; expected one of {SCENARIOS}")
        if duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if room_id is not None and room_id not in self._room_by_id:
            raise ValueError(f"unknown room {room_id!r}")
        self._start_clock(now_ms)
        rng = self._rng
        end_ms = now_ms + int(duration_s * 1000)
        room = self._room_by_id[room_id] if room_id is not None else None
        if room is None and name in ("viewer_drop", "gift_fraud_burst"):
            room = self._rooms[_pick(_cumulative([r.popularity for r in self._rooms]),
                                     rng.random())]
        if name == "checkout_outage":
            if room is None:
                self._global_outage_until = max(self._global_outage_until, end_ms)
            else:
                room.outage_until = max(room.outage_until, end_ms)
        elif name == "viewer_drop":
            assert room is not None
            room.drop_until = max(room.drop_until, end_ms)
            spread_ms = int(min(duration_s, 15.0) * 1000)
            for user_id in list(room.audience.ids):
                if rng.random() < 0.85:
                    self._schedule(now_ms + int(rng.random() * spread_ms), _LEAVE, room,
                                   user_id, room.audience.sessions[user_id])
        elif name == "gift_fraud_burst":
            assert room is not None
            for offset in range(rng.randint(2, 4)):
                self._counter += 1
                user_id = f"nu-{self.id_prefix}-{self._counter}"
                self._emitters.append(_Emitter(
                    "gift", user_id, f"{self.id_prefix}-w{self._counter}", room,
                    now_ms + offset * 137, 250, 150, end_ms, 0))
        else:
            start_item = int(rng.random() * len(self._items))
            for _ in range(rng.randint(1, 3)):
                self._counter += 1
                self._emitters.append(_Emitter(
                    "bot", f"bot-{self.id_prefix}-{self._counter}",
                    f"{self.id_prefix}-b{self._counter}", room, now_ms, 100, 0, end_ms,
                    start_item))
        run = ScenarioRun(name, room.room_id if room else None, now_ms, end_ms)
        self._scenarios.append(run)
        return run


NORMAL_CUM = _cumulative(ENGAGEMENT_WEIGHTS)
BURST_CUM = _cumulative(BURST_ENGAGEMENT_WEIGHTS)
GIFT_CUM = _cumulative(GIFT_WEIGHTS)


# ---------------------------------------------------------------------- producing to Kafka
@dataclass(slots=True)
class SimStats:
    """What :func:`run_simulation` produced."""

    produced: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))
    bad: dict[str, int] = field(default_factory=dict)
    total: int = 0
    elapsed_s: float = 0.0
    failed: int = 0
    scenarios: list[ScenarioRun] = field(default_factory=list)

    def count(self, record: SimRecord) -> None:
        self.produced[record.stream] = self.produced.get(record.stream, 0) + 1
        self.total += 1
        if record.bad is not None:
            self.bad[record.bad] = self.bad.get(record.bad, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "produced": dict(self.produced),
            "bad": dict(self.bad),
            "total": self.total,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate": round(self.total / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
            "failed": self.failed,
            "scenarios": [
                {"name": s.name, "room_id": s.room_id, "start_ms": s.start_ms,
                 "end_ms": s.end_ms}
                for s in self.scenarios
            ],
        }


TICK_S = 0.01


async def run_simulation(bootstrap: str, topics: TopicNames, sim: Simulator, *, rate: float,
                         duration: float | None, stop: asyncio.Event | None = None,
                         scenarios: Sequence[tuple[float, str, str | None, float]] = (),
                         client_options: Mapping[str, Any] | None = None,
                         stats: SimStats | None = None) -> SimStats:
    """Produce the catalog, then ``rate`` events/s until ``duration`` s passed or ``stop`` set.

    Scenarios are ``(at_seconds, name, room_id, duration_s)``. Pacing follows the monotonic
    clock from the start (``rate * elapsed`` records due), so slow ticks catch up instead of
    drifting; one tick sends at most 0.1 s worth, each record stamped with the time it was
    due (a backlog is not a burst in event time).
    ``stats`` (filled as records are sent) lets a caller watch the progress.
    """
    if rate <= 0:
        raise ValueError("rate must be > 0")
    topic_of = {"live": topics.live_events, "clicks": topics.clicks, "catalog": topics.catalog}
    stats = SimStats() if stats is None else stats
    pending = sorted(scenarios, key=lambda s: s[0])
    max_per_tick = max(1, int(rate * 0.1))

    def on_delivery(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            stats.failed += 1

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                **(client_options or {}))  # TLS/SASL: streams.security
    await producer.start()
    started = time.monotonic()
    try:
        snapshot_ms = wall_clock_ms()
        for item_id, value in sim.catalog_records(snapshot_ms):
            future = await producer.send(topics.catalog, orjson.dumps(value),
                                         key=item_id.encode())
            future.add_done_callback(on_delivery)
            stats.produced["catalog"] += 1
            stats.total += 1
        clock = time.monotonic
        start, start_wall = clock(), wall_clock_ms()
        per_tick = max(1, int(rate * TICK_S))
        sent = 0
        ticks = 0
        stopped = False

        async def send(record: SimRecord) -> None:
            future = await producer.send(topic_of[record.stream], record.value,
                                         key=record.key.encode())
            future.add_done_callback(on_delivery)
            stats.count(record)

        while True:
            elapsed = clock() - start
            if stop is not None and stop.is_set():
                stopped = True
                break
            if duration is not None and elapsed >= duration:
                break
            while pending and pending[0][0] <= elapsed:
                _, name, room_id, length_s = pending.pop(0)
                run = sim.inject(name, room_id, length_s, wall_clock_ms())
                stats.scenarios.append(run)
                log.info("scenario %s started in %s for %.0f s", name, run.room_id, length_s)
            due = min(int(rate * elapsed) - sent, max_per_tick)
            if due > 0:
                now_wall = wall_clock_ms()
                for first in range(0, due, per_tick):
                    n = min(per_tick, due - first)
                    # stamped when they were due: after a stall the backlog goes out with
                    # the times its events happened, not all at "now" (a burst in event
                    # time that detectors rightly see as a spike)
                    due_at = min(now_wall, start_wall + int((sent + first + n) * 1000 / rate))
                    for record in sim.next_events(due_at, n):
                        await send(record)
                sent += due
            ticks = max(ticks + 1, int(elapsed / TICK_S))
            await asyncio.sleep(max(0.0, start + ticks * TICK_S - clock()))
        if duration is not None and not stopped:  # top up the last partial tick
            remaining = min(int(rate * duration) - sent, max_per_tick)
            if remaining > 0:
                for record in sim.next_events(wall_clock_ms(), remaining):
                    await send(record)
        await producer.flush()
        await asyncio.sleep(0)  # delivery callbacks run on the next loop iteration
    finally:
        stats.elapsed_s = time.monotonic() - started
        await producer.stop()
    return stats
