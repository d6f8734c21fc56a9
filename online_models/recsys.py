"""Next-item recommendations for live commerce, learned click by click (River style, pure Python).

:class:`HybridRecommender` blends eight scorers over a bounded candidate set:

``session_knn``
    Session-kNN over recent sessions, V-SKNN/STAN-like: the current session's items weighted
    by recency of position, the most recent sessions sharing them found through an
    item -> sessions inverted index (capped per item, newest first), similarity = sum of the
    shared items' weights, times a recency decay of the neighbour session; the best
    ``k_neighbours`` vote for their items, weighted by how close each item sits to the shared
    item in the neighbour session (items *after* it count more).
``covisit``
    Item-to-next-item co-visitation ("viewed b within the next ``covisit_window`` clicks after
    a"), time-decayed (half-life ``covisit_half_life_s``), as a conditional share per source
    item, summed over the session's last items with recency weights.
``content``
    Category and brand affinity from the catalog facts given to :meth:`set_item`: the
    session's own categories/brands (recency weighted) plus the caller's ``affinity``
    ({category: score}, e.g. from the user profile). Also brings the most popular items of the
    preferred categories in as candidates.
``trending`` / ``popular``
    Decayed event counts with a short (``trending_half_life_s``) and a long
    (``popular_half_life_s``) half-life; purchases and carts count more than views. They rank
    everything else too, and alone serve cold start (unknown session and user, new items).
``mf``
    A River :class:`river.reco.BiasedMF` for long-term taste of *known* users. To keep it
    cheap it learns only from events with a ``user_id``: every ``add_to_cart``/``purchase``
    and a seeded sample (``mf_click_rate``) of clicks/views, each positive paired with one
    negative drawn from the popular items. At ranking time it only re-scores the candidate
    set the other scorers produced (never the whole catalog).
``room``
    In a live room the caller passes the room's product list (``room_items``); those items
    become candidates and get this bonus.

Each scorer's values are divided by their maximum over the candidates (so each lies in
``[0, 1]``) and blended with :data:`DEFAULT_WEIGHTS`::

    session_knn 1.0   covisit 0.4   content 0.2   trending 0.03   popular 0.02
    mf 0.1            room 0.5

The weights and the kNN shape parameters were tuned only on a validation split carved out of
the training data (the last 15 % of ``yoochoose-100k`` ``train_tr`` sessions by start time,
learned prequentially after the first 85 %); see ``benchmarks/tune_recsys.py``. Content, MF
and room weights cannot be learned from click logs without catalog facts or users and are set
by hand so that they re-order within the session signal rather than override it.

Business filters (always applied): items purchased in this session or by this user,
out-of-stock items (``set_item(..., in_stock=False)``) and the caller's ``exclude`` list are
never returned. Items already viewed in the session may be returned (re-viewing is the single
most frequent next click in click logs); pass them in ``exclude`` to suppress them.

Memory is bounded by caps with least-recently-used eviction: ``max_sessions``, ``max_items``
(item state: counts, co-visitation row, inverted-index postings, catalog facts, MF factors),
``max_users`` (purchase filter and MF factors), ``max_session_len`` (items kept per session),
``max_postings_per_item``, ``max_covisit_per_item``. Decays use event time (``ts`` in ms),
never the wall clock, so a model is deterministic given its ``seed`` and input order. Every
attribute is plain data or a River object, so the model pickles (no lambdas or closures).

>>> model = HybridRecommender(seed=1)
>>> for n in range(30):
...     model.learn_one({"session_id": f"s{n}", "item_id": "phone", "ts": 1_000 * n})
...     model.learn_one({"session_id": f"s{n}", "item_id": "case", "ts": 1_000 * n + 10})
>>> model.learn_one({"session_id": "me", "item_id": "phone", "ts": 40_000})
>>> top = model.rank({"session_id": "me", "ts": 40_001}, k=2)
>>> [r["item_id"] for r in top]
['case', 'phone']
>>> top[0]["reasons"][:2]
['session_knn', 'covisit']
>>> model.predict_one({"session_id": "me", "exclude": ["case"]})
'phone'
"""

from __future__ import annotations

import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from river import optim, reco

COMPONENTS = ("session_knn", "covisit", "recent", "content", "trending", "popular", "mf",
              "room")
"""Scorer names, also the reason codes a recommendation carries."""

DEFAULT_WEIGHTS: dict[str, float] = {
    "session_knn": 1.0,
    "covisit": 0.2,
    "recent": 1.0,
    "content": 0.2,
    "trending": 0.01,
    "popular": 0.0,
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

    __slots__ = ("entries", "size", "threshold")

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: dict[str, float] = {}
        self.threshold = 0.0

    def offer(self, item: str, value: float) -> None:
        entries = self.entries
        if item in entries or value > self.threshold:
            entries[item] = value
            if len(entries) > 2 * self.size:
                kept = heapq.nlargest(self.size, entries.items(), key=_value)
                self.entries = dict(kept)
                self.threshold = kept[-1][1]

    def discard(self, item: str) -> None:
        self.entries.pop(item, None)

    def rescale(self, factor: float) -> None:
        self.entries = {item: value * factor for item, value in self.entries.items()}
        self.threshold *= factor

    def top(self, n: int) -> list[tuple[str, float]]:
        return heapq.nlargest(n, self.entries.items(), key=_value)

    def __getstate__(self) -> tuple[int, dict[str, float], float]:
        return self.size, self.entries, self.threshold

    def __setstate__(self, state: tuple[int, dict[str, float], float]) -> None:
        self.size, self.entries, self.threshold = state


def _value(pair: tuple[str, float]) -> float:
    return pair[1]


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


def _score_then_id(pair: tuple[str, float]) -> tuple[float, str]:
    return pair[1], pair[0]


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
        Most recent sessions read from each current item's postings (the V-SKNN sample).
    knn_prefix
        Last items of the current session used to find neighbours.
    position_decay
        Weight of the current session's item ``d`` clicks back: ``position_decay ** d``.
    neighbour_half_life_s
        Recency decay of a neighbour session (by its last event time).
    after_weight, before_weight, distance_decay
        In a neighbour session an item ``d`` positions after the shared item weighs
        ``after_weight * distance_decay ** (d - 1)``, one before it ``before_weight * ...``;
        the shared item itself weighs 1.
    covisit_window, covisit_half_life_s, covisit_prefix
        Co-visitation counts ``b`` up to ``covisit_window`` clicks after ``a`` (weight
        ``1/d``), decays them with the half-life, and scores from the last ``covisit_prefix``
        session items.
    trending_half_life_s, popular_half_life_s
        Half-lives of the trending and popularity counts.
    mf_factors, mf_click_rate, mf_learning_rate
        BiasedMF size, share of clicks/views it learns from, SGD step.
    max_sessions, max_items, max_users, max_session_len, max_postings_per_item,
    max_covisit_per_item
        Memory caps (LRU eviction for sessions, items and users; newest kept in lists).
    seed
        Seed of the MF initialisation and of click sampling / negative draws.

    >>> HybridRecommender(max_items=2).rank({"session_id": "new"})
    []
    """

    model_version = "hybrid-1"

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        k_neighbours: int = 100,
        sample_per_item: int = 100,
        knn_prefix: int = 10,
        position_decay: float = 0.4,
        recent_decay: float = 0.3,
        neighbour_half_life_s: float = 7 * 86_400.0,
        after_weight: float = 0.6,
        before_weight: float = 0.8,
        distance_decay: float = 0.7,
        covisit_window: int = 5,
        covisit_half_life_s: float = 3 * 86_400.0,
        covisit_prefix: int = 3,
        trending_half_life_s: float = 3_600.0,
        popular_half_life_s: float = 7 * 86_400.0,
        candidates_per_component: int = 100,
        top_list_size: int = 100,
        mf_factors: int = 16,
        mf_click_rate: float = 0.1,
        mf_learning_rate: float = 0.05,
        max_sessions: int = 200_000,
        max_items: int = 200_000,
        max_users: int = 200_000,
        max_session_len: int = 20,
        max_postings_per_item: int = 500,
        max_covisit_per_item: int = 100,
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
        item_id = str(item_id)
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
                source.covisit = dict(heapq.nlargest(cap, row.items(), key=_value))
        if item_id not in items:
            postings = item.postings
            postings.append(session.number)
            if len(postings) > 2 * self.max_postings_per_item:
                del postings[: len(postings) - self.max_postings_per_item]
        items.append(item_id)
        if len(items) > self.max_session_len:
            del items[0]

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
                _, old = sessions.popitem(last=False)
                del self._session_by_number[old.number]
        else:
            sessions.move_to_end(session_id)
            if user_id and session.user_id is None:
                session.user_id = str(user_id)
        session.last_ts = max(session.last_ts, ts)
        return session

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
        ``affinity`` ({category: score}). Each result is
        ``{"item_id", "score", "reasons"}`` with up to three reason codes from
        :data:`COMPONENTS`, largest contribution first.
        """
        ts = int(x.get("ts") or self._last_ts)
        session_id = x.get("session_id")
        session = self._sessions.get(str(session_id)) if session_id else None
        user_id = x.get("user_id") or (session.user_id if session is not None else None)
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

        candidates: dict[str, None] = {}
        for component_scores in scores.values():
            candidates.update(dict.fromkeys(component_scores))
        for top in (self._trending_top, self._popular_top):
            if len(candidates) >= k + limit:
                break
            candidates.update(dict.fromkeys(i for i, _ in top.top(limit)))

        banned = self._banned(session, user_id, x.get("exclude"))
        room = scores.get("room", {})
        allowed: dict[str, None] = {}
        for item_id in candidates:
            if item_id in banned:
                continue
            item = items.get(item_id)
            # an unknown item is only recommended when the room lists it
            if item.in_stock if item is not None else item_id in room:
                allowed[item_id] = None
        candidates = allowed
        if not candidates:
            return []

        if content is not None and weights["content"] > 0:
            scores["content"] = self._content_scores(candidates, *content)
        for name, top in (("trending", self._trending_top), ("popular", self._popular_top)):
            if weights[name] > 0 and top.entries:
                best = max(top.entries.values())
                field = name
                scores[name] = {i: getattr(items[i], field) / best for i in candidates
                                if i in items and getattr(items[i], field) > 0}
        if user_id and weights["mf"] > 0 and str(user_id) in self._mf.u_latents:
            scores["mf"] = self._mf_scores(str(user_id), candidates)

        blended: dict[str, float] = dict.fromkeys(candidates, 0.0)
        for name, component_scores in scores.items():
            weight = weights[name]
            for item_id, value in component_scores.items():
                if item_id in blended:
                    blended[item_id] += weight * value
        best = heapq.nlargest(k, blended.items(), key=_score_then_id)
        out = []
        for item_id, score in best:
            contributions = [(weights[name] * s[item_id], name) for name, s in scores.items()
                             if item_id in s and s[item_id] > 0]
            contributions.sort(reverse=True)
            reasons = [name for value, name in contributions[:MAX_REASONS]
                       if value >= 0.1 * score]
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
        sample = self.sample_per_item
        items = self._items
        for item_id, w in current.items():
            item = items.get(item_id)
            if item is None:
                continue
            postings = item.postings
            for number in postings[-1: -sample - 1: -1]:
                if number != own:
                    similarity[number] = similarity.get(number, 0.0) + w
        if not similarity:
            return {}
        by_number = self._session_by_number
        rate = self.neighbour_rate_per_ms
        neighbours = []
        for number, sim in heapq.nlargest(self.k_neighbours * 2, similarity.items(),
                                          key=_value):
            neighbour = by_number.get(number)
            if neighbour is None:
                continue
            age = ts - neighbour.last_ts
            if age > 0:
                sim *= math.exp(-age * rate)
            neighbours.append((sim, neighbour))
        if len(neighbours) > self.k_neighbours:
            neighbours = heapq.nlargest(self.k_neighbours, neighbours, key=_first)
        after_w, before_w, dist = self.after_weight, self.before_weight, self.distance_decay
        scores: dict[str, float] = {}
        for sim, neighbour in neighbours:
            n_items = neighbour.items
            anchor, anchor_w = -1, 0.0
            for pos, item_id in enumerate(n_items):
                w = current.get(item_id, 0.0)
                if w >= anchor_w:
                    anchor, anchor_w = pos, w
            for pos, item_id in enumerate(n_items):
                gap = pos - anchor
                if gap > 0:
                    w = after_w * dist ** (gap - 1)
                elif gap < 0:
                    w = before_w * dist ** (-gap - 1)
                else:
                    w = 1.0
                scores[item_id] = scores.get(item_id, 0.0) + sim * w
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
        for category, _ in heapq.nlargest(3, categories.items(), key=_value):
            top = self._category_top.get(category)
            if top is not None:
                out.update(dict.fromkeys((i for i, _ in top.top(per_category)), 0.0))
        return out

    def _content_scores(self, candidates: Iterable[str], categories: dict[str, float],
                        brands: dict[str, float]) -> dict[str, float]:
        items = self._items
        raw: dict[str, float] = {}
        for item_id in candidates:
            item = items.get(item_id)
            if item is None:
                continue
            value = categories.get(item.category, 0.0) if item.category is not None else 0.0
            if item.brand is not None:
                value += 0.5 * brands.get(item.brand, 0.0)
            if value > 0:
                raw[item_id] = value
        return _normalised(raw)

    def _mf_scores(self, user_id: str, candidates: Iterable[str]) -> dict[str, float]:
        mf = self._mf
        user_vector = mf.u_latents[user_id]
        user_bias = mf.u_biases.get(user_id, 0.0)
        i_latents, i_biases = mf.i_latents, mf.i_biases
        raw = {}
        for item_id in candidates:
            vector = i_latents.get(item_id)
            if vector is not None:
                raw[item_id] = float(user_bias + i_biases.get(item_id, 0.0)
                                     + user_vector.dot(vector))
        if not raw:
            return {}
        low, high = min(raw.values()), max(raw.values())
        span = high - low
        if span <= 0:
            return {}
        return {i: (v - low) / span for i, v in raw.items()}

    # ------------------------------------------------------------------ introspection

    def stats(self) -> dict[str, Any]:
        """Sizes of the bounded structures next to their caps.

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
        values = dict(heapq.nlargest(limit, values.items(), key=_value))
    return _normalised(values)
