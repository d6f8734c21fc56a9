"""Next-item recommendations for live commerce, learned click by click (River style, pure Python).

:class:`HybridRecommender` blends eight scorers over a bounded candidate set:

``session_knn``
    Session-kNN over recent sessions, V-SKNN/STAN-like: the current session's items weighted
    by recency of position (``position_decay ** d``), the most recent sessions sharing them
    found through an item -> sessions inverted index (capped per item, newest first; fewer
    sessions are read for older items), similarity = sum of the shared items' weights times
    a recency decay of the neighbour session; the best ``k_neighbours`` vote for their items,
    weighted by how far each item sits from the shared item in the neighbour session.
``covisit``
    Item-to-next-item co-visitation ("clicked b within the next ``covisit_window`` clicks
    after a", weight ``1/distance``), time-decayed (half-life ``covisit_half_life_s``), as a
    conditional share per source item, summed over the session's last items.
``recent``
    The session's own items, the last one first (``recent_decay ** d``): re-viewing an item is
    the single most frequent next click in click logs (27 % of YooChoose next clicks repeat
    the previous item).
``content``
    Category and brand affinity from the catalog facts given to :meth:`set_item`: the
    session's own categories/brands (recency weighted) plus the caller's ``affinity``
    ({category: score}, e.g. from the user profile). Also brings the most popular items of the
    preferred categories in as candidates.
``trending`` / ``popular``
    Decayed event counts with a short (``trending_half_life_s``) and a long
    (``popular_half_life_s``) half-life; carts and purchases count more than views. They score
    every candidate, and alone serve cold start (unknown session and user, new items).
``mf``
    A River :class:`river.reco.BiasedMF` for the long-term taste of *known* users. To keep it
    cheap it learns only from events with a ``user_id``: every ``add_to_cart``/``purchase``
    and a seeded sample (``mf_click_rate``, default 10 %) of other clicks, each positive
    (y = 1) paired with one negative (y = 0) drawn from the popular items. At ranking time it
    only re-scores the candidates the other scorers produced (never the whole catalog), as
    the predicted lift over the average interaction.
``room``
    In a live room the caller passes the room's product list (``room_items``); those items
    become candidates (even if the model never saw them) and get this bonus.

The kNN and co-visitation scores keep their ``candidates_per_component`` best items and are
divided by their maximum; every scorer lies in ``[0, 1]``. The blend is the weighted sum with
:data:`DEFAULT_WEIGHTS`::

    session_knn 1.0   recent 1.5   covisit 0.2   trending 0.01   popular 0.005
    content 0.2       mf 0.1       room 0.5

The first five weights and the kNN / co-visitation shape parameters were tuned only on
validation folds carved out of the training file (``yoochoose-100k`` ``train_tr``: the last
15 % of sessions by start time, and the 15 % before them, each learned prequentially after
the sessions preceding it; objective mean HR@20 + MRR@20) by coordinate search, see
``benchmarks/tune_recsys.py``; within the noise of those folds (about 0.002) the cheaper or
more recency-minded value was kept. ``k_neighbours=70`` rather than 100 (0.001 lower on the
folds) keeps learn + rank under 1 ms at p99 at 100 k items (``benchmarks/bench_recsys.py``).
Content, MF and room weights cannot be fitted on anonymous click logs without catalog facts,
users or rooms: they are set by hand so that they re-order items within the session signal
rather than override it.

Business filters (always applied): items purchased in this session or by this user,
out-of-stock items (``set_item(..., in_stock=False)``) and the caller's ``exclude`` list are
never returned. Items already viewed in the session may be returned (see ``recent``); pass
them in ``exclude`` (or set the ``recent`` weight to 0) to suppress them.

Memory is bounded by caps with least-recently-used eviction: ``max_sessions``, ``max_items``
(item state: counts, co-visitation row, inverted-index postings, catalog facts, MF factors),
``max_users`` (purchase filter and MF factors), ``max_session_len`` (items kept per session),
``max_postings_per_item``, ``max_covisit_per_item``. Decays use event time (``ts`` in ms),
never the wall clock, so a model is deterministic given its ``seed`` and input order, ties are
broken by item id, and every attribute is plain data or a River object, so the model pickles
(no lambdas or closures).

>>> model = HybridRecommender(seed=1)
>>> for n in range(30):
...     model.learn_one({"session_id": f"s{n}", "item_id": "phone", "ts": 1_000 * n})
...     model.learn_one({"session_id": f"s{n}", "item_id": "case", "ts": 1_000 * n + 10})
>>> model.learn_one({"session_id": "me", "item_id": "phone", "ts": 40_000})
>>> top = model.rank({"session_id": "me", "ts": 40_001}, k=2)
>>> [(r["item_id"], r["reasons"]) for r in top]
[('phone', ['recent', 'session_knn']), ('case', ['session_knn', 'covisit'])]
>>> model.predict_one({"session_id": "me", "exclude": ["phone"]})
'case'
"""

from __future__ import annotations

import contextlib
import math
import operator
import random
import sys
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from river import optim, reco

COMPONENTS = ("session_knn", "covisit", "recent", "content", "trending", "popular", "mf",
              "room")
"""Scorer names, also the reason codes a recommendation carries."""

DEFAULT_WEIGHTS: dict[str, float] = {
    "session_knn": 1.0,
    "covisit": 0.2,
    "recent": 1.5,
    "content": 0.2,
    "trending": 0.01,
    "popular": 0.005,
    "mf": 0.1,
    "room": 0.5,
}
"""Blend weights (see the module docstring for how they were chosen)."""

KIND_WEIGHTS: dict[str, float] = {"add_to_cart": 3.0, "purchase": 5.0}
"""Popularity weight of an event kind; any other kind (view, click, product_click) counts 1."""

MF_KINDS = frozenset(("add_to_cart", "purchase"))
"""Kinds the MF always learns from (other kinds are sampled with ``mf_click_rate``)."""

MAX_REASONS = 3
_LN2 = math.log(2.0)
_RESCALE_EXPONENT = 50.0   # forward-decay landmarks move once boosts reach e**50


class _ForwardDecay:
    """Exponential time decay by *forward decay*: store ``v * 2**((t - landmark) / half_life)``.

    Values stored this way keep their order as time passes, so sums and top-N lists never need
    to be touched by the clock; only when the boost factor grows large does :meth:`boost`
    signal (``True``) that every stored value must be multiplied by :attr:`factor` once.

    >>> decay = _ForwardDecay(half_life_s=1.0)
    >>> a, _ = decay.boost(0)
    >>> b, _ = decay.boost(1_000)
    >>> round(b / a, 6)
    2.0
    """

    __slots__ = ("factor", "landmark_ms", "rate_per_ms")

    def __init__(self, half_life_s: float) -> None:
        self.rate_per_ms = _LN2 / (half_life_s * 1000.0)
        self.landmark_ms: int | None = None
        self.factor = 1.0

    def boost(self, ts: int) -> tuple[float, bool]:
        """(multiplier of a unit event at ``ts``, whether stored values must be rescaled)."""
        if self.landmark_ms is None:
            self.landmark_ms = ts
        exponent = (ts - self.landmark_ms) * self.rate_per_ms
        if exponent > _RESCALE_EXPONENT:
            self.factor = math.exp(-exponent)
            self.landmark_ms = ts
            return 1.0, True
        return math.exp(exponent), False

    def __getstate__(self) -> tuple[float, int | None, float]:
        return self.rate_per_ms, self.landmark_ms, self.factor

    def __setstate__(self, state: tuple[float, int | None, float]) -> None:
        self.rate_per_ms, self.landmark_ms, self.factor = state


class _TopList:
    """Approximate top-N of monotonically increasing values (forward-decayed counts).

    Keeps up to ``2 * size`` entries; when full, prunes back to the best ``size`` and raises
    the entry threshold to the smallest kept value. Values only grow, so an item that falls
    out can come back when it overtakes the threshold.
    """

    __slots__ = ("best", "cache", "entries", "size", "stale_after", "threshold")

    def __init__(self, size: int, stale_after: int = 64) -> None:
        self.size = size
        self.entries: dict[str, float] = {}
        self.threshold = 0.0
        self.best = 0.0   # largest value ever offered (an upper bound once items leave)
        # (n, offers left before it is recomputed, the top-n): a ranking changes slowly, so
        # :meth:`top` re-sorts at most every ``stale_after`` offers
        self.stale_after = stale_after
        self.cache: tuple[int, int, list[tuple[str, float]]] = (0, 0, [])

    def offer(self, item: str, value: float) -> None:
        n, left, top = self.cache
        if left:
            self.cache = (n, left - 1, top)
        entries = self.entries
        if item in entries or value > self.threshold:
            entries[item] = value
            if value > self.best:
                self.best = value
            if len(entries) > 2 * self.size:
                kept = _largest(entries.items(), self.size)
                self.entries = dict(kept)
                self.threshold = kept[-1][1]

    def discard(self, item: str) -> None:
        self.entries.pop(item, None)
        self.cache = (0, 0, [])

    def rescale(self, factor: float) -> None:
        self.entries = {item: value * factor for item, value in self.entries.items()}
        self.threshold *= factor
        self.best *= factor
        self.cache = (0, 0, [])

    def top(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` largest entries (possibly up to ``stale_after`` offers old)."""
        cached_n, left, top = self.cache
        if cached_n != n or not left:
            top = _largest(self.entries.items(), n)
            self.cache = (n, self.stale_after, top)
        return top

    def __getstate__(self) -> tuple[Any, ...]:
        return self.size, self.entries, self.threshold, self.best, self.stale_after, self.cache

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.size, self.entries, self.threshold, self.best, self.stale_after,
         self.cache) = state


_VALUE = operator.itemgetter(1)
_FIRST = operator.itemgetter(0)
_SCORE_THEN_ID = operator.itemgetter(1, 0)   # ties broken by item id: same order everywhere


def _largest(pairs: Iterable[tuple[Any, float]], n: int) -> list[tuple[Any, float]]:
    """The ``n`` pairs with the largest second element, largest first (stable for ties)."""
    return sorted(pairs, key=_VALUE, reverse=True)[:n]


class _Item:
    """Everything kept per item (one LRU entry)."""

    __slots__ = ("brand", "category", "covisit", "covisit_total", "in_stock", "popular",
                 "postings", "price", "trending")

    def __init__(self) -> None:
        self.popular = 0.0
        self.trending = 0.0
        self.covisit: dict[str, float] = {}   # next item -> forward-decayed weight
        self.covisit_total = 0.0
        self.postings: list[int] = []         # numbers of sessions holding it, oldest first
        self.category: str | None = None
        self.brand: str | None = None
        self.price: float | None = None
        self.in_stock = True

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


class _Session:
    """One session: its recent items (consecutive repeats collapsed) and purchases."""

    __slots__ = ("items", "last_ts", "number", "purchased", "user_id")

    def __init__(self, number: int, user_id: str | None) -> None:
        self.number = number
        self.user_id = user_id
        self.items: list[str] = []
        self.purchased: dict[str, None] = {}
        self.last_ts = 0

    def __getstate__(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


class HybridRecommender:
    """Session-aware hybrid next-item recommender (see the module docstring).

    Parameters
    ----------
    weights
        Blend weights by component name; missing names take :data:`DEFAULT_WEIGHTS`.
    k_neighbours
        Neighbour sessions that vote (V-SKNN ``k``).
    sample_per_item
        Most recent sessions read from the last item's postings (the V-SKNN sample); an item
        ``d`` clicks back reads ``sample_per_item * position_decay ** d`` (at least 8).
    knn_prefix
        Last items of the current session used to find neighbours.
    position_decay
        Weight of the current session's item ``d`` clicks back: ``position_decay ** d``.
    recent_decay
        ``recent`` score of the item ``d`` clicks back: ``recent_decay ** d``.
    neighbour_half_life_s
        Recency decay of a neighbour session (by its last event time).
    after_weight, before_weight, distance_decay, vote_window
        In a neighbour session an item ``d`` (<= ``vote_window``) positions after the shared
        item votes ``after_weight * distance_decay ** (d - 1)``, one before it
        ``before_weight * ...``; the shared item itself votes 1.
    covisit_window, covisit_half_life_s, covisit_prefix
        Co-visitation counts ``b`` up to ``covisit_window`` clicks after ``a`` (weight
        ``1/d``), decays them with the half-life, and scores from the last ``covisit_prefix``
        session items.
    trending_half_life_s, popular_half_life_s
        Half-lives of the trending and popularity counts.
    candidates_per_component, top_list_size
        Best items kept from the kNN and co-visitation scores; size of the popularity lists
        (overall, trending, and half of it per category).
    mf_factors, mf_click_rate, mf_learning_rate
        BiasedMF size, share of non-cart clicks it learns from, SGD step.
    max_sessions, max_items, max_users
        LRU caps: sessions (with their postings), items (all item state), users (purchase
        filter and MF factors).
    max_session_len, max_postings_per_item, max_covisit_per_item, max_purchases_per_user
        Newest items kept per session; sessions kept per item in the inverted index (up to
        twice this between trims); next items kept per co-visitation row (up to 1.5 times
        this between trims); purchases remembered per user for the filter.
    seed
        Seed of the MF initialisation and of click sampling / negative draws.

    Ranking costs O(``k_neighbours`` x ``vote_window`` + candidates); learning an event
    is O(``covisit_window``) plus an amortised trim. Forward-decayed counts are rescaled once
    every 50 half-lives (an O(items) pass: every ~2 days of event time for trending).

    >>> HybridRecommender(max_items=2).rank({"session_id": "new"})
    []
    """

    model_version = "hybrid-1"

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        k_neighbours: int = 70,
        sample_per_item: int = 100,
        knn_prefix: int = 10,
        position_decay: float = 0.4,
        recent_decay: float = 0.3,
        neighbour_half_life_s: float = 7 * 86_400.0,
        after_weight: float = 0.6,
        before_weight: float = 0.8,
        distance_decay: float = 0.7,
        vote_window: int = 8,
        covisit_window: int = 5,
        covisit_half_life_s: float = 3 * 86_400.0,
        covisit_prefix: int = 3,
        trending_half_life_s: float = 3_600.0,
        popular_half_life_s: float = 7 * 86_400.0,
        candidates_per_component: int = 25,
        top_list_size: int = 100,
        mf_factors: int = 16,
        mf_click_rate: float = 0.1,
        mf_learning_rate: float = 0.05,
        max_sessions: int = 200_000,
        max_items: int = 200_000,
        max_users: int = 200_000,
        max_session_len: int = 20,
        max_postings_per_item: int = 200,
        max_covisit_per_item: int = 50,
        max_purchases_per_user: int = 50,
        seed: int = 0,
    ) -> None:
        unknown = set(weights or ()) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown weight(s) {sorted(unknown)}; known: {COMPONENTS}")
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}
        self.k_neighbours = k_neighbours
        self.sample_per_item = sample_per_item
        self.knn_prefix = knn_prefix
        self.position_decay = position_decay
        self.recent_decay = recent_decay
        self.neighbour_rate_per_ms = _LN2 / (neighbour_half_life_s * 1000.0)
        self.after_weight = after_weight
        self.before_weight = before_weight
        self.distance_decay = distance_decay
        self.vote_window = vote_window
        # vote weights in a neighbour session: [the shared item, 1 after it, 2 after, ...] and
        # [1 before it, 2 before, ...]
        gaps = range(1, max_session_len + 1)
        self._after_weights = [1.0] + [after_weight * distance_decay ** (g - 1) for g in gaps]
        self._before_weights = [before_weight * distance_decay ** (g - 1) for g in gaps]
        self.covisit_window = covisit_window
        self.covisit_prefix = covisit_prefix
        self.candidates_per_component = candidates_per_component
        self.mf_click_rate = mf_click_rate
        self.max_sessions = max_sessions
        self.max_items = max_items
        self.max_users = max_users
        self.max_session_len = max_session_len
        self.max_postings_per_item = max_postings_per_item
        self.max_covisit_per_item = max_covisit_per_item
        self.max_purchases_per_user = max_purchases_per_user
        self.seed = seed

        self._covisit_decay = _ForwardDecay(covisit_half_life_s)
        self._trending_decay = _ForwardDecay(trending_half_life_s)
        self._popular_decay = _ForwardDecay(popular_half_life_s)
        self._items: OrderedDict[str, _Item] = OrderedDict()
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._session_by_number: dict[int, _Session] = {}
        self._next_session_number = 0
        self._users: OrderedDict[str, dict[str, None]] = OrderedDict()  # user -> purchases
        self._popular_top = _TopList(top_list_size)
        self._trending_top = _TopList(top_list_size)
        self._category_top: dict[str, _TopList] = {}
        self._rng = random.Random(seed)
        self._mf = reco.BiasedMF(
            n_factors=mf_factors,
            bias_optimizer=optim.SGD(mf_learning_rate),
            latent_optimizer=optim.SGD(mf_learning_rate),
            l2_bias=0.001,
            l2_latent=0.001,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self._last_ts = 0
        self.events_learned = 0

    # ------------------------------------------------------------------ catalog

    def set_item(self, item_id: str, category: str | None = None, brand: str | None = None,
                 price: float | None = None, in_stock: bool = True) -> None:
        """Record catalog facts of an item (creates its state; counts as recently used).

        >>> model = HybridRecommender()
        >>> model.set_item("p1", category="shoes", in_stock=False)
        >>> model.stats()["items"]
        1
        """
        item_id = sys.intern(str(item_id))
        item = self._touch_item(item_id)
        old_category = item.category
        item.category, item.brand, item.price, item.in_stock = category, brand, price, in_stock
        if old_category is not None and old_category != category:
            top = self._category_top.get(old_category)
            if top is not None:
                top.discard(item_id)
        if category is not None:
            self._offer_category(item_id, item)

    # ------------------------------------------------------------------ learning

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Learn one interaction ``{"session_id", "item_id", "ts", "user_id"?, "kind"?}``.

        Events without an item id only refresh the session.
        """
        ts = int(x.get("ts") or self._last_ts)
        self._last_ts = max(self._last_ts, ts)
        session_id = x.get("session_id")
        user_id = x.get("user_id")
        item_id = x.get("item_id")
        kind = x.get("kind") or "click"
        session = self._touch_session(str(session_id), user_id, ts) if session_id else None
        if not item_id:
            return
        # one shared string per item id: the co-visitation rows and sessions hold millions of
        # references, and identical objects compare and hash fastest
        item_id = sys.intern(str(item_id))
        self.events_learned += 1
        item = self._touch_item(item_id)
        weight = KIND_WEIGHTS.get(kind, 1.0)
        self._count(item_id, item, weight, ts)
        if session is not None:
            self._extend_session(session, item_id, item, ts)
            if kind == "purchase":
                session.purchased[item_id] = None
        if user_id:
            user_id = str(user_id)
            purchases = self._touch_user(user_id)
            if kind == "purchase":
                purchases[item_id] = None
                if len(purchases) > self.max_purchases_per_user:
                    del purchases[next(iter(purchases))]
            if kind in MF_KINDS or self._rng.random() < self.mf_click_rate:
                self._learn_mf(user_id, item_id)

    def _count(self, item_id: str, item: _Item, weight: float, ts: int) -> None:
        boost, rescale = self._popular_decay.boost(ts)
        if rescale:
            self._rescale_counts("popular", self._popular_decay.factor)
        item.popular += weight * boost
        self._popular_top.offer(item_id, item.popular)
        if item.category is not None:
            self._offer_category(item_id, item)
        boost, rescale = self._trending_decay.boost(ts)
        if rescale:
            self._rescale_counts("trending", self._trending_decay.factor)
        item.trending += weight * boost
        self._trending_top.offer(item_id, item.trending)

    def _offer_category(self, item_id: str, item: _Item) -> None:
        top = self._category_top.get(item.category)  # type: ignore[arg-type]
        if top is None:
            top = self._category_top[item.category] = _TopList(  # type: ignore[index]
                self._popular_top.size // 2 or 1)
        top.offer(item_id, item.popular)

    def _rescale_counts(self, field: str, factor: float) -> None:
        for item in self._items.values():
            setattr(item, field, getattr(item, field) * factor)
        if field == "popular":
            self._popular_top.rescale(factor)
            for top in self._category_top.values():
                top.rescale(factor)
        else:
            self._trending_top.rescale(factor)

    def _extend_session(self, session: _Session, item_id: str, item: _Item, ts: int) -> None:
        items = session.items
        if items and items[-1] == item_id:
            return  # a repeat of the last click adds no transition
        boost, rescale = self._covisit_decay.boost(ts)
        if rescale:
            factor = self._covisit_decay.factor
            for other in self._items.values():
                other.covisit = {b: v * factor for b, v in other.covisit.items()}
                other.covisit_total *= factor
        cap = self.max_covisit_per_item
        for distance in range(1, min(self.covisit_window, len(items)) + 1):
            source = self._items.get(items[-distance])
            if source is None or items[-distance] == item_id:
                continue
            add = boost / distance
            row = source.covisit
            row[item_id] = row.get(item_id, 0.0) + add
            source.covisit_total += add
            if len(row) > cap + cap // 2:
                source.covisit = dict(_largest(row.items(), cap))
        if item_id not in items:
            postings = item.postings
            postings.append(session.number)
            if len(postings) > 2 * self.max_postings_per_item:
                del postings[: len(postings) - self.max_postings_per_item]
        items.append(item_id)
        if len(items) > self.max_session_len:
            dropped = items.pop(0)
            if dropped not in items:  # postings list exactly the sessions holding an item
                old = self._items.get(dropped)
                if old is not None:
                    with contextlib.suppress(ValueError):
                        old.postings.remove(session.number)

    def _learn_mf(self, user_id: str, item_id: str) -> None:
        mf = self._mf
        mf.learn_one(user_id, item_id, 1.0)
        pool = self._popular_top.entries
        if pool:
            keys = list(pool)
            negative = keys[self._rng.randrange(len(keys))]
            if negative != item_id:
                mf.learn_one(user_id, negative, 0.0)

    # ------------------------------------------------------------------ state with caps

    def _touch_item(self, item_id: str) -> _Item:
        items = self._items
        item = items.get(item_id)
        if item is None:
            item = items[item_id] = _Item()
            if len(items) > self.max_items:
                self._evict_item()
        else:
            items.move_to_end(item_id)
        return item

    def _evict_item(self) -> None:
        old_id, old = self._items.popitem(last=False)
        self._popular_top.discard(old_id)
        self._trending_top.discard(old_id)
        if old.category is not None:
            top = self._category_top.get(old.category)
            if top is not None:
                top.discard(old_id)
                if not top.entries:
                    del self._category_top[old.category]
        self._mf.i_latents.pop(old_id, None)
        self._mf.i_biases.pop(old_id, None)

    def _touch_session(self, session_id: str, user_id: Any, ts: int) -> _Session:
        sessions = self._sessions
        session = sessions.get(session_id)
        if session is None:
            session = _Session(self._next_session_number, str(user_id) if user_id else None)
            self._next_session_number += 1
            sessions[session_id] = session
            self._session_by_number[session.number] = session
            if len(sessions) > self.max_sessions:
                self._evict_session()
        else:
            sessions.move_to_end(session_id)
            if user_id and session.user_id is None:
                session.user_id = str(user_id)
        session.last_ts = max(session.last_ts, ts)
        return session

    def _evict_session(self) -> None:
        _, old = self._sessions.popitem(last=False)
        del self._session_by_number[old.number]
        # drop its postings (an old session sits near the front of each list: a short search)
        items = self._items
        for item_id in dict.fromkeys(old.items):
            item = items.get(item_id)
            if item is not None:
                with contextlib.suppress(ValueError):
                    item.postings.remove(old.number)

    def forget_user(self, user_id: str, session_ids: Iterable[str] = ()) -> int:
        """Erase one user: the sessions learned with ``user_id`` (and ``session_ids``),
        with their postings, the user's purchase filter and MF factors. Item statistics
        the user contributed to (popularity, co-visitation) are aggregates and stay.
        O(sessions); returns the sessions dropped."""
        named = set(session_ids)
        doomed = [key for key, session in self._sessions.items()
                  if session.user_id == user_id or key in named]
        for key in doomed:
            self._drop_session(key)
        self._users.pop(user_id, None)
        self._mf.u_latents.pop(user_id, None)
        self._mf.u_biases.pop(user_id, None)
        return len(doomed)

    def _drop_session(self, key: str) -> None:
        old = self._sessions.pop(key)
        self._session_by_number.pop(old.number, None)
        for item_id in dict.fromkeys(old.items):
            item = self._items.get(item_id)
            if item is not None:
                with contextlib.suppress(ValueError):
                    item.postings.remove(old.number)

    def _touch_user(self, user_id: str) -> dict[str, None]:
        users = self._users
        purchases = users.get(user_id)
        if purchases is None:
            purchases = users[user_id] = {}
            if len(users) > self.max_users:
                old_user, _ = users.popitem(last=False)
                self._mf.u_latents.pop(old_user, None)
                self._mf.u_biases.pop(old_user, None)
        else:
            users.move_to_end(user_id)
        return purchases

    # ------------------------------------------------------------------ ranking

    def rank(self, x: Mapping[str, Any], k: int = 20) -> list[dict[str, Any]]:
        """Top-``k`` items for a session/user context, best first.

        ``x`` keys (all optional): ``session_id``, ``user_id``, ``ts`` (ms; default: the
        latest event time seen), ``room_items`` (the live room's products), ``exclude``,
        ``affinity`` ({category: score}), ``personal`` (False: no user-level signal, not
        even the user a session was learned with). Each result is
        ``{"item_id", "score", "reasons"}`` with up to three reason codes from
        :data:`COMPONENTS`, largest contribution first.
        """
        ts = int(x.get("ts") or self._last_ts)
        session_id = x.get("session_id")
        session = self._sessions.get(str(session_id)) if session_id else None
        if x.get("personal", True):
            user_id = x.get("user_id") or (session.user_id if session is not None else None)
        else:  # opted out: nothing tied to the user (MF factors, purchase history)
            user_id = None
        prefix = session.items if session is not None else []
        limit = self.candidates_per_component
        weights = self.weights
        items = self._items

        scores: dict[str, dict[str, float]] = {}
        if prefix and weights["session_knn"] > 0:
            scores["session_knn"] = _top_normalised(self._knn_scores(session, ts), limit)
        if prefix and weights["covisit"] > 0:
            scores["covisit"] = _top_normalised(self._covisit_scores(prefix), limit)
        if prefix and weights["recent"] > 0:
            scores["recent"] = self._recent_scores(prefix)
        room_items = [str(i) for i in x.get("room_items") or ()]
        if room_items and weights["room"] > 0:
            scores["room"] = dict.fromkeys(room_items, 1.0)
        content = self._content_profile(prefix, x.get("affinity"))
        if content is not None and weights["content"] > 0:
            scores["content"] = self._content_candidates(content[0])

        candidates: dict[str, Any] = {}
        for component_scores in scores.values():
            candidates.update(component_scores)
        # popular items fill short lists (alone they serve cold start); they still score
        # every candidate below
        trending_top, popular_top = self._trending_top, self._popular_top
        for top in (trending_top, popular_top):
            if len(candidates) < 2 * k:
                candidates.update(top.top(k))

        # filter, and start every allowed candidate at its (weighted) popularity
        banned = self._banned(session, user_id, x.get("exclude"))
        room = scores.get("room", {})
        trending_w = weights["trending"] / trending_top.best if trending_top.best > 0 else 0.0
        popular_w = weights["popular"] / popular_top.best if popular_top.best > 0 else 0.0
        blended: dict[str, float] = {}
        allowed: dict[str, _Item] = {}
        for item_id in candidates:
            if item_id in banned:
                continue
            item = items.get(item_id)
            if item is None:
                if item_id in room:  # an unknown item is recommended only when a room lists it
                    blended[item_id] = 0.0
            elif item.in_stock:
                allowed[item_id] = item
                blended[item_id] = trending_w * item.trending + popular_w * item.popular
        if not blended:
            return []

        if content is not None and weights["content"] > 0:
            scores["content"] = self._content_scores(allowed, *content)
        if user_id and weights["mf"] > 0 and str(user_id) in self._mf.u_latents:
            scores["mf"] = self._mf_scores(str(user_id), allowed)
        for name, component_scores in scores.items():
            weight = weights[name]
            for item_id, value in component_scores.items():
                if item_id in blended:
                    blended[item_id] += weight * value

        out = []
        for item_id, score in sorted(blended.items(), key=_SCORE_THEN_ID, reverse=True)[:k]:
            item = allowed.get(item_id)
            contributions = [] if item is None else [
                (trending_w * item.trending, "trending"), (popular_w * item.popular, "popular")]
            for name, component_scores in scores.items():
                value = component_scores.get(item_id)
                if value:
                    contributions.append((weights[name] * value, name))
            contributions.sort(reverse=True)
            reasons = [name for value, name in contributions[:MAX_REASONS]
                       if value > 0 and value >= 0.1 * score]
            out.append({"item_id": item_id, "score": round(score, 6), "reasons": reasons})
        return out

    def predict_one(self, x: Mapping[str, Any]) -> str | None:
        """The single best next item (``None`` when nothing can be recommended)."""
        top = self.rank(x, k=1)
        return top[0]["item_id"] if top else None

    def _banned(self, session: _Session | None, user_id: Any,
                exclude: Iterable[str] | None) -> set[str]:
        banned = {str(i) for i in exclude or ()}
        if session is not None:
            banned.update(session.purchased)
        if user_id:
            banned.update(self._users.get(str(user_id), ()))
        return banned

    def _knn_scores(self, session: _Session, ts: int) -> dict[str, float]:
        prefix = session.items[-self.knn_prefix:]
        own = session.number
        # weight of each current item: its most recent position wins
        current: dict[str, float] = {}
        decay = self.position_decay
        weight = 1.0
        for item_id in reversed(prefix):
            if item_id not in current:
                current[item_id] = weight
            weight *= decay
        similarity: dict[int, float] = {}
        # the shared item a neighbour is aligned on: the current session's most recent one,
        # i.e. the first that reaches it (``current`` runs from the most recent item back)
        anchors: dict[int, str] = {}
        by_number = self._session_by_number
        sample = self.sample_per_item
        items = self._items
        for item_id, w in current.items():
            item = items.get(item_id)
            if item is None:
                continue
            # older items weigh less, so fewer of their sessions are read
            for number in item.postings[-1: -max(8, int(sample * w)) - 1: -1]:
                if number in similarity:
                    similarity[number] += w
                elif number != own and number in by_number:
                    similarity[number] = w
                    anchors[number] = item_id
        if not similarity:
            return {}
        rate = self.neighbour_rate_per_ms
        neighbours = []
        pool = self.k_neighbours + self.k_neighbours // 2
        ranked = (similarity.items() if len(similarity) <= pool
                  else _largest(similarity.items(), pool))
        for number, sim in ranked:
            neighbour = by_number[number]
            age = ts - neighbour.last_ts
            if age > 0 and rate:
                sim *= math.exp(-age * rate)
            neighbours.append((sim, neighbour.items, anchors[number]))
        if len(neighbours) > self.k_neighbours:
            neighbours = sorted(neighbours, key=_FIRST, reverse=True)[: self.k_neighbours]
        after, before = self._after_weights, self._before_weights
        window = self.vote_window
        scores: defaultdict[str, float] = defaultdict(float)
        for sim, n_items, anchor_item in neighbours:
            try:
                anchor = n_items.index(anchor_item)
            except ValueError:  # trimmed off the front of a long session
                anchor = 0
            # the weight lists are longer than any slice: zip stops at the slice's end
            for item_id, weight in zip(n_items[anchor: anchor + window + 1], after,
                                       strict=False):
                scores[item_id] += sim * weight
            if anchor:
                earlier = reversed(n_items[max(0, anchor - window): anchor])
                for item_id, weight in zip(earlier, before, strict=False):
                    scores[item_id] += sim * weight
        return scores

    def _recent_scores(self, prefix: list[str]) -> dict[str, float]:
        """The session's own items: 1 for the last one, ``recent_decay ** d`` d clicks back."""
        scores: dict[str, float] = {}
        weight = 1.0
        for item_id in reversed(prefix):
            if item_id not in scores:
                scores[item_id] = weight
            weight *= self.recent_decay
        return scores

    def _covisit_scores(self, prefix: list[str]) -> dict[str, float]:
        scores: dict[str, float] = {}
        weight = 1.0
        items = self._items
        for item_id in prefix[-1: -self.covisit_prefix - 1: -1]:
            item = items.get(item_id)
            if item is not None and item.covisit_total > 0:
                scale = weight / item.covisit_total
                for other, value in item.covisit.items():
                    scores[other] = scores.get(other, 0.0) + value * scale
            weight *= self.position_decay
        return scores

    def _content_profile(self, prefix: list[str], affinity: Mapping[str, float] | None,
                         ) -> tuple[dict[str, float], dict[str, float]] | None:
        """(category -> share, brand -> share) from the session's items and ``affinity``."""
        categories: dict[str, float] = {}
        brands: dict[str, float] = {}
        weight = 1.0
        items = self._items
        for item_id in reversed(prefix[-self.knn_prefix:]):
            item = items.get(item_id)
            if item is not None:
                if item.category is not None:
                    categories[item.category] = categories.get(item.category, 0.0) + weight
                if item.brand is not None:
                    brands[item.brand] = brands.get(item.brand, 0.0) + weight
            weight *= self.position_decay
        _share(categories)
        if affinity:
            given = {str(c): float(v) for c, v in affinity.items() if float(v) > 0}
            _share(given)
            for category, share in given.items():
                categories[category] = categories.get(category, 0.0) + share
        if not categories and not brands:
            return None
        _share(categories)
        _share(brands)
        return categories, brands

    def _content_candidates(self, categories: dict[str, float]) -> dict[str, float]:
        out: dict[str, float] = {}
        per_category = max(1, self.candidates_per_component // 5)
        for category, _ in _largest(categories.items(), 3):
            top = self._category_top.get(category)
            if top is not None:
                out.update(dict.fromkeys((i for i, _ in top.top(per_category)), 0.0))
        return out

    def _content_scores(self, candidates: Mapping[str, _Item], categories: dict[str, float],
                        brands: dict[str, float]) -> dict[str, float]:
        """Category share plus half the brand share, divided by the best candidate's."""
        raw: dict[str, float] = {}
        category_share, brand_share = categories.get, brands.get
        for item_id, item in candidates.items():
            value = category_share(item.category, 0.0) + 0.5 * brand_share(item.brand, 0.0)
            if value > 0:
                raw[item_id] = value
        return _normalised(raw)

    def _mf_scores(self, user_id: str, candidates: Iterable[str]) -> dict[str, float]:
        """Predicted lift over the average interaction, ``(y - mean) / (1 - mean)`` in [0, 1]."""
        mf = self._mf
        user_vector = mf.u_latents[user_id]
        base = mf.u_biases.get(user_id, 0.0)
        mean = mf.global_mean.get()
        scale = 1.0 / (1.0 - mean) if mean < 1.0 else 1.0
        i_latents, i_biases = mf.i_latents, mf.i_biases
        known = [item_id for item_id in candidates if item_id in i_latents]
        if not known:
            return {}
        lifts = np.array([i_latents[item_id] for item_id in known]) @ user_vector
        out = {}
        for item_id, dot in zip(known, lifts.tolist(), strict=True):
            lift = (base + i_biases.get(item_id, 0.0) + dot) * scale
            if lift > 0:
                out[item_id] = min(1.0, lift)
        return out

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Sizes of the bounded structures next to their hard bounds.

        ``max_postings_per_item`` and ``max_covisit_per_item`` here are the bounds the lists
        never exceed (twice and 1.5 times the constructor's caps: the slack between trims).
        Walks every item and session, O(size): for monitoring, not for the hot path.

        >>> model = HybridRecommender(max_sessions=1)
        >>> for n in range(3):
        ...     model.learn_one({"session_id": f"s{n}", "item_id": "a", "ts": n})
        >>> s = model.stats()
        >>> s["sessions"], s["max_sessions"], s["events_learned"]
        (1, 1, 3)
        """
        items = self._items.values()
        return {
            "model_version": self.model_version,
            "events_learned": self.events_learned,
            "sessions": len(self._sessions),
            "max_sessions": self.max_sessions,
            "items": len(self._items),
            "max_items": self.max_items,
            "users": len(self._users),
            "max_users": self.max_users,
            "postings": sum(len(i.postings) for i in items),
            "max_postings_per_item": 2 * self.max_postings_per_item,
            "longest_postings": max((len(i.postings) for i in items), default=0),
            "covisit_pairs": sum(len(i.covisit) for i in items),
            "longest_covisit_row": max((len(i.covisit) for i in items), default=0),
            "max_covisit_per_item": self.max_covisit_per_item + self.max_covisit_per_item // 2,
            "longest_session": max((len(s.items) for s in self._sessions.values()), default=0),
            "max_session_len": self.max_session_len,
            "mf_users": len(self._mf.u_latents),
            "mf_items": len(self._mf.i_latents),
            "categories": len(self._category_top),
        }


def _share(values: dict[str, float]) -> None:
    total = sum(values.values())
    if total > 0:
        for key in values:
            values[key] /= total


def _normalised(values: dict[str, float]) -> dict[str, float]:
    if not values:
        return values
    best = max(values.values())
    if best <= 0:
        return {}
    return {key: value / best for key, value in values.items()}


def _top_normalised(values: dict[str, float], limit: int) -> dict[str, float]:
    """The ``limit`` largest values, divided by the largest."""
    if len(values) > limit:
        values = dict(_largest(values.items(), limit))
    return _normalised(values)
