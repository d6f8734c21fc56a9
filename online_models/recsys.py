"""Next-item recommendations for live commerce, learned click by click (River style, numpy).

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
    A biased matrix factorisation (SGD, :class:`_MatrixFactorization`; item factors are rows
    of one numpy matrix) for the long-term taste of *known* users. To keep it cheap it learns
    only from events with a ``user_id``: every ``add_to_cart``/``purchase``
    and a seeded sample (``mf_click_rate``, default 10 %) of other clicks, each positive
    (y = 1) paired with one negative (y = 0) drawn from the popular items. At ranking time it
    only re-scores the candidates the other scorers produced (never the whole catalog, one
    matrix-vector product), as the predicted lift over the average interaction.
``room``
    In a live room the caller passes the room's product list (``room_items``); those items
    become candidates (even if the model never saw them) and get this bonus.

Every item that gets a kNN vote, a co-visitation share, a recent/room/content entry, or is
among the ``k`` most trending or popular items is a candidate; the kNN and co-visitation
scores are divided by their maximum over the candidates, so every scorer lies in ``[0, 1]``.
The blend is the weighted sum with :data:`DEFAULT_WEIGHTS`::

    session_knn 1.0   recent 1.5   covisit 0.2   trending 0.01   popular 0.005
    content 0.2       mf 0.1       room 0.5

The first five weights and the kNN / co-visitation shape parameters were tuned only on
validation folds carved out of the training file (``yoochoose-100k`` ``train_tr``: the last
15 % of sessions by start time, and the 15 % before them, each learned prequentially after
the sessions preceding it; objective mean HR@20 + MRR@20) by coordinate search, see
``benchmarks/tune_recsys.py``; within the noise of those folds (about 0.002) the cheaper or
more recency-minded value was kept. ``k_neighbours=70`` rather than 100 (0.001 lower on the
folds) keeps learn + rank under 1 ms at p99 at 100 k items (``benchmarks/bench_recsys.py``);
``sample_per_item=50`` rather than 100 (objective 1.0596 vs 1.0608 on the folds, inside their
noise) ranks in about three quarters of the time (``bench_recsys`` at 20 k items: rank p50
39 vs 52 µs, p99 101 vs 154 µs).
Content, MF and room weights cannot be fitted on anonymous click logs without catalog facts,
users or rooms: they are set by hand so that they re-order items within the session signal
rather than override it.

Business filters (always applied): items purchased in this session or by this user,
out-of-stock items (``set_item(..., in_stock=False)``) and the caller's ``exclude`` list are
never returned. Items already viewed in the session may be returned (see ``recent``); pass
them in ``exclude`` (or set the ``recent`` weight to 0) to suppress them.

How it stays cheap (``hybrid-2``): items and sessions are integer *slots* internally (one
dict look-up from the id string at the edge); per-item counts, catalog codes, session rows
(``max_session_len`` item slots each) and MF item factors are numpy arrays indexed by slot;
the inverted index and the co-visitation rows are per-item blocks of pooled numpy arrays
(arenas). Ranking is one compiled numba call over those arrays (two with catalog facts:
the content profile first), see :mod:`online_models._recsys_kernels`: the neighbour search
and votes, every component's entries summed per (candidate, component), the blend, the top
``k`` and their reason codes; only the ``k`` result dicts are built in Python. Extending a
session (co-visitation, postings, the row) is one compiled call as well. The kernels give
the same rankings as the earlier vectorised numpy version of ``hybrid-2`` (up to the order
of float sums) at about a sixth of the CPU time.

Memory is bounded by caps with least-recently-used eviction: ``max_sessions``, ``max_items``
(item state: counts, co-visitation row, inverted-index postings, catalog facts, MF factors),
``max_users`` (purchase filter and MF factors), ``max_session_len`` (items kept per session),
``max_postings_per_item``, ``max_covisit_per_item``. Decays use event time (``ts`` in ms),
never the wall clock, so a model is deterministic given its ``seed`` and input order, ties are
broken by item slot (first-seen order), and every attribute is plain data or numpy arrays, so
the model pickles (no lambdas or closures). An evicted item's slot is reused; co-visitation
rows of other items that still name it (old, decayed weights) then count for the newcomer.

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

import math
import operator
import random
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from online_models import _recsys_kernels as kernels

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
# the reason names of every code 81 a + 9 b + c (component indices a, b, c; 8 = none)
_REASONS = [tuple(COMPONENTS[i] for i in (code // 81, code // 9 % 9, code % 9) if i < 8)
            for code in range(9 ** 3)]
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

    __slots__ = ("array", "best", "cache", "entries", "keys", "size", "stale_after", "threshold")

    def __init__(self, size: int, stale_after: int = 64) -> None:
        self.size = size
        self.entries: dict[str, float] = {}
        self.threshold = 0.0
        self.best = 0.0   # largest value ever offered (an upper bound once items leave)
        # (n, offers left before it is recomputed, the top-n): a ranking changes slowly, so
        # :meth:`top` re-sorts at most every ``stale_after`` offers
        self.stale_after = stale_after
        self.cache: tuple[int, int, list[tuple[Any, float]]] = (0, 0, [])
        self.keys: list[Any] = []   # the keys of the cached top-n
        self.array = _EMPTY_SLOTS   # the same as an int64 array

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

    def top(self, n: int) -> list[tuple[Any, float]]:
        """The ``n`` largest entries (possibly up to ``stale_after`` offers old)."""
        cached_n, left, top = self.cache
        if cached_n != n or not left:
            top = _largest(self.entries.items(), n)
            self.cache = (n, self.stale_after, top)
            self.keys = [key for key, _ in top]
            self.array = np.array(self.keys, dtype=np.int64)
        return top

    def top_keys(self, n: int) -> list[Any]:
        """The keys of :meth:`top` (the same list object while the cache lasts: read only)."""
        self.top(n)
        return self.keys

    def top_array(self, n: int) -> np.ndarray:
        """:meth:`top_keys` as an int64 array (item slots; read only)."""
        self.top(n)
        return self.array

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.size, self.entries, self.threshold, self.best, self.stale_after,
                self.cache, self.keys)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        (self.size, self.entries, self.threshold, self.best, self.stale_after,
         self.cache, self.keys) = state
        self.array = np.array(self.keys, dtype=np.int64)


_EMPTY_SLOTS = np.empty(0, dtype=np.int64)
_EMPTY_VALUES = np.empty(0)
_VALUE = operator.itemgetter(1)
_SCORE = operator.itemgetter("score")


def _largest(pairs: Iterable[tuple[Any, float]], n: int) -> list[tuple[Any, float]]:
    """The ``n`` pairs with the largest second element, largest first (stable for ties)."""
    return sorted(pairs, key=_VALUE, reverse=True)[:n]


class _CovisitRow:
    """One co-visitation row of the first ``hybrid-2`` layout (kept to read its snapshots,
    see :meth:`HybridRecommender.__setstate__`): next-item slots and weights, a slot index.

    >>> row = _CovisitRow()
    >>> row.add(7, 1.0); row.add(9, 0.5); row.add(7, 1.0)
    >>> row.trim(1); list(row.targets), list(row.weights)
    ([7], [2.0])
    """

    __slots__ = ("index", "targets", "weights")

    def __init__(self) -> None:
        self.index: dict[int, int] = {}
        self.targets = array("i")
        self.weights = array("d")

    def __len__(self) -> int:
        return len(self.targets)

    def add(self, slot: int, value: float) -> None:
        position = self.index.get(slot)
        if position is None:
            self.index[slot] = len(self.targets)
            self.targets.append(slot)
            self.weights.append(value)
        else:
            self.weights[position] += value

    def trim(self, size: int) -> None:
        """Keep the ``size`` heaviest targets."""
        weights = np.frombuffer(self.weights, dtype=np.float64)
        kept = np.sort(np.argsort(-weights, kind="stable")[:size])
        self.targets = array("i", np.frombuffer(self.targets, dtype=np.int32)[kept].tobytes())
        self.weights = array("d", weights[kept].tobytes())
        self.index = {slot: n for n, slot in enumerate(self.targets)}

    def rescale(self, factor: float) -> None:
        self.weights = array("d", (np.frombuffer(self.weights) * factor).tobytes())

    def __getstate__(self) -> tuple[Any, ...]:
        return self.targets, self.weights

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.targets, self.weights = state
        self.index = {slot: n for n, slot in enumerate(self.targets)}


class _Session:
    """One session: its numpy row (``slot``), length, user and purchases (item ids)."""

    __slots__ = ("length", "purchased", "slot", "user_id")

    def __init__(self, slot: int, user_id: str | None) -> None:
        self.slot = slot
        self.length = 0
        self.user_id = user_id
        self.purchased: tuple[str, ...] = ()

    def __getstate__(self) -> tuple[Any, ...]:
        return self.slot, self.length, self.user_id, self.purchased

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.slot, self.length, self.user_id, self.purchased = state


class _MatrixFactorization:
    """Biased MF trained by SGD (``y ~ mean + b_u + b_i + p_u . q_i``), items in numpy rows.

    User factors are a dict (``u_latents``: user id -> vector, ``u_biases``); item factors are
    rows of one matrix indexed by the recommender's item slot, so scoring a candidate set is
    one gather and one matrix-vector product.

    >>> mf = _MatrixFactorization(n_factors=4, learning_rate=0.1, seed=0)
    >>> mf.ensure_items(8)
    >>> for _ in range(200):
    ...     mf.learn_one("u", 3, 1.0)
    ...     mf.learn_one("u", 5, 0.0)
    >>> bool(mf.scores("u", np.array([3, 5]))[0] > mf.scores("u", np.array([3, 5]))[1])
    True
    """

    def __init__(self, n_factors: int, learning_rate: float, seed: int,
                 l2: float = 0.001) -> None:
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2 = l2
        self.u_latents: dict[str, np.ndarray] = {}
        self.u_biases: dict[str, float] = {}
        self.q = np.zeros((0, n_factors))
        self.b = np.zeros(0)
        self.known = np.zeros(0, dtype=bool)
        self.n_items = 0
        self.mean = 0.0
        self.n = 0
        self._rng = np.random.default_rng(seed)

    def ensure_items(self, capacity: int) -> None:
        if capacity > len(self.b):
            grow = capacity - len(self.b)
            self.q = np.vstack([self.q, np.zeros((grow, self.n_factors))])
            self.b = np.concatenate([self.b, np.zeros(grow)])
            self.known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])

    def forget_item(self, slot: int) -> None:
        if self.known[slot]:
            self.known[slot] = False
            self.n_items -= 1
            self.b[slot] = 0.0

    def forget_user(self, user_id: str) -> None:
        self.u_latents.pop(user_id, None)
        self.u_biases.pop(user_id, None)

    def learn_one(self, user_id: str, slot: int, y: float) -> None:
        p = self.u_latents.get(user_id)
        if p is None:
            p = self.u_latents[user_id] = self._rng.normal(0.0, 0.1, self.n_factors)
            self.u_biases[user_id] = 0.0
        if not self.known[slot]:
            self.known[slot] = True
            self.n_items += 1
            self.q[slot] = self._rng.normal(0.0, 0.1, self.n_factors)
            self.b[slot] = 0.0
        self.n += 1
        self.mean += (y - self.mean) / self.n
        q = self.q[slot]
        bu = self.u_biases[user_id]
        bi = float(self.b[slot])
        err = y - (self.mean + bu + bi + float(p @ q))
        lr, l2 = self.learning_rate, self.l2
        self.u_biases[user_id] = bu + lr * (err - l2 * bu)
        self.b[slot] = bi + lr * (err - l2 * bi)
        p_old = p.copy()
        p += lr * (err * q - l2 * p)
        q += lr * (err * p_old - l2 * q)

    def scores(self, user_id: str, slots: np.ndarray) -> np.ndarray:
        """Predicted lift ``(y - mean) / (1 - mean)`` of each slot, clipped to [0, 1]
        (0 for items the MF never learned)."""
        p = self.u_latents[user_id]
        scale = 1.0 / (1.0 - self.mean) if self.mean < 1.0 else 1.0
        lift = (self.u_biases[user_id] + self.b[slots] + self.q[slots] @ p) * scale
        lift *= self.known[slots]
        return np.clip(lift, 0.0, 1.0)


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
        Content candidates (a fifth of it from each of the three preferred categories); size
        of the popularity lists (overall, trending, and half of it per category).
    mf_factors, mf_click_rate, mf_learning_rate
        MF size, share of non-cart clicks it learns from, SGD step.
    max_sessions, max_items, max_users
        LRU caps: sessions (with their postings), items (all item state), users (purchase
        filter and MF factors).
    max_session_len, max_postings_per_item, max_covisit_per_item, max_purchases_per_user
        Newest items kept per session; sessions kept per item in the inverted index (up to
        twice this between trims); next items kept per co-visitation row (up to 1.5 times
        this between trims); purchases remembered per user for the filter.
    seed
        Seed of the MF initialisation and of click sampling / negative draws.

    Internally items and sessions are integer *slots* (a ``dict`` from the id string, once
    per call); per-item numbers, session rows and MF item factors are numpy arrays indexed by
    slot, so ranking is one compiled call: O(``sample_per_item`` x ``knn_prefix`` +
    ``k_neighbours`` x ``max_session_len`` + candidates x ``k``) work. Learning an event is
    O(``covisit_window`` x ``max_covisit_per_item``) plus an amortised trim. Forward-decayed
    counts are rescaled once every 50 half-lives (an O(items) vector pass).

    >>> HybridRecommender(max_items=2).rank({"session_id": "new"})
    []
    """

    model_version = "hybrid-2"

    def __init__(
        self,
        *,
        weights: Mapping[str, float] | None = None,
        k_neighbours: int = 70,
        sample_per_item: int = 50,
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
        self.weights = {**DEFAULT_WEIGHTS, **(weights or {})}   # (a property)
        self.k_neighbours = k_neighbours
        self.sample_per_item = sample_per_item
        self.knn_prefix = knn_prefix
        self.position_decay = position_decay
        self.recent_decay = recent_decay
        self.after_weight = after_weight
        self.before_weight = before_weight
        self.distance_decay = distance_decay
        self.vote_window = vote_window
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
        # vote of a neighbour's column c when it is aligned on position p: _vote_table[p, c]
        length = max_session_len
        gap = np.arange(length)[None, :] - np.arange(length)[:, None]
        after = after_weight * distance_decay ** (np.abs(gap) - 1.0)
        before = before_weight * distance_decay ** (np.abs(gap) - 1.0)
        self._vote_table = np.where(
            gap == 0, 1.0, np.where(np.abs(gap) > vote_window, 0.0,
                                    np.where(gap > 0, after, before)))

        self._covisit_decay = _ForwardDecay(covisit_half_life_s)
        self._trending_decay = _ForwardDecay(trending_half_life_s)
        self._popular_decay = _ForwardDecay(popular_half_life_s)
        self._neighbour_decay = _ForwardDecay(neighbour_half_life_s)
        # items: id -> slot (also the LRU order); slot 0 is padding ("no item")
        self._items: OrderedDict[str, int] = OrderedDict()
        self._item_ids: list[str | None] = [None]
        self._free_items: list[int] = []
        # arenas (see online_models._recsys_kernels): slot -> sessions holding it, oldest
        # first (the inverted index); slot -> co-visited next slots and their weights
        self._post_pool = np.zeros(1024, dtype=np.int32)
        self._post_index = np.zeros((1, 3), dtype=np.int64)   # (start, length, capacity)
        self._post_meta = np.zeros(2, dtype=np.int64)   # (end, abandoned capacity)
        self._post_headroom = 2 * max_postings_per_item
        self._cov_targets = np.zeros(1024, dtype=np.int32)
        self._cov_weights = np.zeros(1024)
        self._cov_index = np.zeros((1, 3), dtype=np.int64)
        self._cov_meta = np.zeros(2, dtype=np.int64)
        self._cov_headroom = covisit_window * (max_covisit_per_item + max_covisit_per_item // 2
                                               + 1)
        self._price: dict[int, float] = {}
        self._popular = np.zeros(1)
        self._trending = np.zeros(1)
        self._covisit_total = np.zeros(1)
        self._in_stock = np.zeros(1, dtype=bool)   # slot 0 (padding) is never allowed
        self._category = np.full(1, -1, dtype=np.int32)   # code, -1 = unknown
        self._brand = np.full(1, -1, dtype=np.int32)
        self._item_mark = np.zeros(1, dtype=np.intp)       # scratch for de-duplication
        self._codes: dict[str, dict[str, int]] = {"category": {}, "brand": {}}
        self._names: dict[str, list[str]] = {"category": [], "brand": []}
        # sessions: key -> _Session (LRU order); rows of item slots, newest last
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._free_sessions: list[int] = []
        self._session_count = 0
        self._session_items = np.zeros((0, max_session_len), dtype=np.int32)
        self._session_weight = np.zeros(0)   # forward-decayed recency of its last event
        self._session_mark = np.zeros(0, dtype=np.intp)
        self._users: OrderedDict[str, dict[str, None]] = OrderedDict()  # user -> purchases
        self._popular_top = _TopList(top_list_size)
        self._trending_top = _TopList(top_list_size)
        self._category_top: dict[int, _TopList] = {}
        self._rng = random.Random(seed)
        self._mf = _MatrixFactorization(mf_factors, mf_learning_rate, seed)
        self._mf.ensure_items(1)
        self._last_ts = 0
        self.events_learned = 0
        self._new_scratch()
        self._compact_arenas()

    def _new_scratch(self) -> None:
        # candidate rows of a ranking (the kernel allocates bigger ones when needed)
        self._scratch_cand = np.zeros(2048, dtype=np.int64)
        self._scratch_matrix = np.zeros((2048, len(COMPONENTS)))

    def __getstate__(self) -> dict[str, Any]:
        state = {**self.__dict__, "_state_format": self.model_version}
        del state["_scratch_cand"], state["_scratch_matrix"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        found = state.pop("_state_format", None)
        if found != self.model_version:   # e.g. a hybrid-1 snapshot (string-keyed state)
            raise ValueError(f"recommender state {found!r} is not {self.model_version!r}")
        self.__dict__.update(state)
        if "_postings" in state:   # the first hybrid-2 layout: lists of per-item arrays
            self._arenas_from_lists(state)
        self._new_scratch()

    def _arenas_from_lists(self, state: dict[str, Any]) -> None:
        postings, covisit = self.__dict__.pop("_postings"), self.__dict__.pop("_covisit")
        self.__dict__.pop("_arange", None)
        n = len(self._popular)
        self._post_headroom = 2 * self.max_postings_per_item
        cap = self.max_covisit_per_item
        self._cov_headroom = self.covisit_window * (cap + cap // 2 + 1)
        lengths = [len(p or ()) for p in postings] + [0] * (n - len(postings))
        rows = [r if r is not None else _CovisitRow() for r in covisit]
        widths = [len(r) for r in rows] + [0] * (n - len(rows))
        self._post_index = _packed_index(lengths)
        self._cov_index = _packed_index(widths)
        self._post_pool = np.zeros(max(1024, int(self._post_index[:, 2].sum())), dtype=np.int32)
        self._cov_targets = np.zeros(max(1024, int(self._cov_index[:, 2].sum())),
                                     dtype=np.int32)
        self._cov_weights = np.zeros(len(self._cov_targets))
        for slot, (items, row) in enumerate(zip(postings, rows, strict=True)):
            start = int(self._post_index[slot, 0])
            self._post_pool[start:start + lengths[slot]] = items or ()
            start = int(self._cov_index[slot, 0])
            self._cov_targets[start:start + widths[slot]] = row.targets
            self._cov_weights[start:start + widths[slot]] = row.weights
        self._post_meta = np.array([int(self._post_index[:, 2].sum()), 0], dtype=np.int64)
        self._cov_meta = np.array([int(self._cov_index[:, 2].sum()), 0], dtype=np.int64)
        self._compact_arenas()

    def _compact_arenas(self) -> None:
        """Compact (and grow if half full) an arena whose free tail is below its headroom."""
        index, meta = self._post_index, self._post_meta
        if meta[0] + self._post_headroom > len(self._post_pool):
            size = max(1024, 2 * (int(index[:, 2].sum()) + self._post_headroom))
            pool = self._post_pool
            self._post_pool, _ = kernels.arena_compact(index, meta, size, pool, pool[:0])
        index, meta = self._cov_index, self._cov_meta
        if meta[0] + self._cov_headroom > len(self._cov_targets):
            size = max(1024, 2 * (int(index[:, 2].sum()) + self._cov_headroom))
            self._cov_targets, self._cov_weights = kernels.arena_compact(
                index, meta, size, self._cov_targets, self._cov_weights)

    def _postings_of(self, slot: int) -> list[int]:
        """The session rows in ``slot``'s postings, oldest first (for tests and tools)."""
        start, length, _ = self._post_index[slot].tolist()
        return self._post_pool[start:start + length].tolist()

    def _covisit_of(self, slot: int) -> dict[int, float]:
        """``slot``'s co-visitation row: next-item slot -> weight (for tests and tools)."""
        start, length, _ = self._cov_index[slot].tolist()
        return dict(zip(self._cov_targets[start:start + length].tolist(),
                        self._cov_weights[start:start + length].tolist(), strict=True))

    # ------------------------------------------------------------------ catalog

    def set_item(self, item_id: str, category: str | None = None, brand: str | None = None,
                 price: float | None = None, in_stock: bool = True) -> None:
        """Record catalog facts of an item (creates its state; counts as recently used).

        >>> model = HybridRecommender()
        >>> model.set_item("p1", category="shoes", in_stock=False)
        >>> model.stats()["items"]
        1
        """
        slot = self._touch_item(str(item_id))
        old_category = int(self._category[slot])
        new_category = self._code("category", category)
        self._category[slot] = new_category
        self._brand[slot] = self._code("brand", brand)
        self._in_stock[slot] = bool(in_stock)
        if price is None:
            self._price.pop(slot, None)
        else:
            self._price[slot] = float(price)
        if old_category >= 0 and old_category != new_category:
            top = self._category_top.get(old_category)
            if top is not None:
                top.discard(slot)
        if new_category >= 0:
            self._offer_category(slot, new_category)

    def _code(self, kind: str, name: str | None) -> int:
        if name is None:
            return -1
        codes = self._codes[kind]
        code = codes.get(name)
        if code is None:
            code = codes[name] = len(codes)
            self._names[kind].append(name)
        return code

    # ------------------------------------------------------------------ learning

    def learn_one(self, x: Mapping[str, Any]) -> None:
        """Learn one interaction ``{"session_id", "item_id", "ts", "user_id"?, "kind"?}``.

        Events without an item id only refresh the session.
        """
        ts = int(x.get("ts") or self._last_ts)
        if ts > self._last_ts:
            self._last_ts = ts
        session_id = x.get("session_id")
        user_id = x.get("user_id")
        item_id = x.get("item_id")
        kind = x.get("kind") or "click"
        session = self._touch_session(str(session_id), user_id, ts) if session_id else None
        if not item_id:
            return
        item_id = str(item_id)
        self.events_learned += 1
        slot = self._touch_item(item_id)
        self._count(slot, KIND_WEIGHTS.get(kind, 1.0), ts)
        if session is not None:
            self._extend_session(session, slot, ts)
            if kind == "purchase" and item_id not in session.purchased:
                session.purchased += (item_id,)
        if user_id:
            user_id = str(user_id)
            purchases = self._touch_user(user_id)
            if kind == "purchase":
                purchases[item_id] = None
                if len(purchases) > self.max_purchases_per_user:
                    del purchases[next(iter(purchases))]
            if kind in MF_KINDS or self._rng.random() < self.mf_click_rate:
                self._learn_mf(user_id, slot)

    def learn_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """:meth:`learn_one` for each event in order; returns how many were given."""
        n = 0
        learn = self.learn_one
        for event in events:
            learn(event)
            n += 1
        return n

    def _count(self, slot: int, weight: float, ts: int) -> None:
        boost, rescale = self._popular_decay.boost(ts)
        if rescale:
            self._rescale_counts("popular", self._popular_decay.factor)
        popular = self._popular[slot] = self._popular[slot] + weight * boost
        popular = float(popular)
        self._popular_top.offer(slot, popular)
        category = self._category[slot]
        if category >= 0:
            self._offer_category(slot, int(category), popular)
        boost, rescale = self._trending_decay.boost(ts)
        if rescale:
            self._rescale_counts("trending", self._trending_decay.factor)
        trending = self._trending[slot] = self._trending[slot] + weight * boost
        self._trending_top.offer(slot, float(trending))

    def _offer_category(self, slot: int, category: int, value: float | None = None) -> None:
        top = self._category_top.get(category)
        if top is None:
            top = self._category_top[category] = _TopList(self._popular_top.size // 2 or 1)
        top.offer(slot, float(self._popular[slot]) if value is None else value)

    def _rescale_counts(self, field: str, factor: float) -> None:
        if field == "popular":
            self._popular *= factor
            self._popular_top.rescale(factor)
            for top in self._category_top.values():
                top.rescale(factor)
        else:
            self._trending *= factor
            self._trending_top.rescale(factor)

    def _extend_session(self, session: _Session, slot: int, ts: int) -> None:
        number, length = session.slot, session.length
        if length and self._session_items[number, length - 1] == slot:
            return  # a repeat of the last click adds no transition
        boost, rescale = self._covisit_decay.boost(ts)
        if rescale:
            factor = self._covisit_decay.factor
            self._cov_weights *= factor
            self._covisit_total *= factor
        session.length, low = kernels.extend_session(
            self._session_items, number, length, slot, boost, self.covisit_window,
            self.max_covisit_per_item, self._post_pool, self._post_index, self._post_meta,
            self.max_postings_per_item, self._post_headroom, self._cov_targets,
            self._cov_weights, self._cov_index, self._cov_meta, self._covisit_total,
            self._cov_headroom)
        if low:
            self._compact_arenas()

    def _learn_mf(self, user_id: str, slot: int) -> None:
        mf = self._mf
        mf.learn_one(user_id, slot, 1.0)
        pool = self._popular_top.entries
        if pool:
            keys = list(pool)
            negative = keys[self._rng.randrange(len(keys))]
            if negative != slot:
                mf.learn_one(user_id, negative, 0.0)

    # ------------------------------------------------------------------ state with caps

    def _touch_item(self, item_id: str) -> int:
        items = self._items
        slot = items.get(item_id)
        if slot is not None:
            items.move_to_end(item_id)
            return slot
        if len(items) >= self.max_items:
            self._evict_item()
        if self._free_items:
            slot = self._free_items.pop()
            self._item_ids[slot] = item_id
        else:
            slot = len(self._item_ids)
            self._item_ids.append(item_id)
            if slot >= len(self._popular):
                self._grow_items(slot + 1)
        items[item_id] = slot
        return slot

    def _grow_items(self, needed: int) -> None:
        size = min(max(needed, 2 * len(self._popular)), self.max_items + 1)
        size = max(size, needed)
        grow = size - len(self._popular)
        self._popular = np.concatenate([self._popular, np.zeros(grow)])
        self._trending = np.concatenate([self._trending, np.zeros(grow)])
        self._covisit_total = np.concatenate([self._covisit_total, np.zeros(grow)])
        self._in_stock = np.concatenate([self._in_stock, np.ones(grow, dtype=bool)])
        self._category = np.concatenate([self._category, np.full(grow, -1, dtype=np.int32)])
        self._brand = np.concatenate([self._brand, np.full(grow, -1, dtype=np.int32)])
        self._item_mark = np.zeros(size, dtype=np.intp)
        self._post_index = np.vstack([self._post_index, np.zeros((grow, 3), dtype=np.int64)])
        self._cov_index = np.vstack([self._cov_index, np.zeros((grow, 3), dtype=np.int64)])
        self._mf.ensure_items(size)

    def _evict_item(self) -> None:
        _, slot = self._items.popitem(last=False)
        self._popular_top.discard(slot)
        self._trending_top.discard(slot)
        category = int(self._category[slot])
        if category >= 0:
            top = self._category_top.get(category)
            if top is not None:
                top.discard(slot)
                if not top.entries:
                    del self._category_top[category]
        # the slot is reused: nothing may keep pointing at it
        self._clear_item_slot(slot)

    def _clear_item_slot(self, slot: int) -> None:
        self._item_ids[slot] = None
        self._covisit_total[slot] = 0.0
        self._popular[slot] = self._trending[slot] = 0.0
        self._in_stock[slot] = True
        self._category[slot] = self._brand[slot] = -1
        self._price.pop(slot, None)
        self._mf.forget_item(slot)
        postings = self._postings_of(slot)
        if postings:
            # sessions still holding the slot lose it (their rows would vote for a stranger)
            numbers = np.unique(postings)
            rows = self._session_items[numbers]
            rows[rows == slot] = 0
            self._session_items[numbers] = rows
        for index, meta in ((self._post_index, self._post_meta),
                            (self._cov_index, self._cov_meta)):
            meta[1] += index[slot, 2]   # its blocks are abandoned
            index[slot] = 0
        self._free_items.append(slot)

    def _touch_session(self, session_id: str, user_id: Any, ts: int) -> _Session:
        sessions = self._sessions
        session = sessions.get(session_id)
        if session is None:
            if len(sessions) >= self.max_sessions:
                self._evict_session()
            if self._free_sessions:
                number = self._free_sessions.pop()
            else:
                number = self._session_count
                self._session_count += 1
                if number >= len(self._session_weight):
                    self._grow_sessions(number + 1)
            session = _Session(number, str(user_id) if user_id else None)
            sessions[session_id] = session
        else:
            sessions.move_to_end(session_id)
            if user_id and session.user_id is None:
                session.user_id = str(user_id)
        boost, rescale = self._neighbour_decay.boost(ts)
        if rescale:
            self._session_weight *= self._neighbour_decay.factor
        if boost > self._session_weight[session.slot]:
            self._session_weight[session.slot] = boost
        return session

    def _grow_sessions(self, needed: int) -> None:
        size = max(needed, min(max(1024, 2 * len(self._session_weight)), self.max_sessions))
        grow = size - len(self._session_weight)
        self._session_items = np.vstack(
            [self._session_items, np.zeros((grow, self.max_session_len), dtype=np.int32)])
        self._session_weight = np.concatenate([self._session_weight, np.zeros(grow)])
        self._session_mark = np.zeros(size, dtype=np.intp)

    def _evict_session(self) -> None:
        _, old = self._sessions.popitem(last=False)
        self._release_session(old)

    def _release_session(self, old: _Session) -> None:
        kernels.release_session(self._session_items, old.slot, old.length, self._post_pool,
                                self._post_index)
        self._session_weight[old.slot] = 0.0
        self._free_sessions.append(old.slot)

    def forget_user(self, user_id: str, session_ids: Iterable[str] = ()) -> int:
        """Erase one user: the sessions learned with ``user_id`` (and ``session_ids``),
        with their postings, the user's purchase filter and MF factors. Item statistics
        the user contributed to (popularity, co-visitation) are aggregates and stay.
        O(sessions); returns the sessions dropped."""
        named = set(session_ids)
        doomed = [key for key, session in self._sessions.items()
                  if session.user_id == user_id or key in named]
        for key in doomed:
            self._release_session(self._sessions.pop(key))
        self._users.pop(user_id, None)
        self._mf.forget_user(user_id)
        return len(doomed)

    def _touch_user(self, user_id: str) -> dict[str, None]:
        users = self._users
        purchases = users.get(user_id)
        if purchases is None:
            purchases = users[user_id] = {}
            if len(users) > self.max_users:
                old_user, _ = users.popitem(last=False)
                self._mf.forget_user(old_user)
        else:
            users.move_to_end(user_id)
        return purchases

    # ------------------------------------------------------------------ ranking

    def rank(self, x: Mapping[str, Any], k: int = 20) -> list[dict[str, Any]]:
        """Top-``k`` items for a session/user context, best first.

        ``x`` keys (all optional): ``session_id``, ``user_id``, ``ts`` (accepted, unused: the
        neighbour recency decay is stored forward-decayed, so it ranks the same at any
        time), ``room_items`` (the live room's products), ``exclude``,
        ``affinity`` ({category: score}), ``personal`` (False: no user-level signal, not
        even the user a session was learned with). Each result is
        ``{"item_id", "score", "reasons"}`` with up to three reason codes from
        :data:`COMPONENTS`, largest contribution first.
        """
        if k <= 0:
            return []
        session_id = x.get("session_id")
        session = self._sessions.get(str(session_id)) if session_id else None
        if x.get("personal", True):
            user_id = x.get("user_id") or (session.user_id if session is not None else None)
        else:  # opted out: nothing tied to the user (MF factors, purchase history)
            user_id = None
        number, length = (session.slot, session.length) if session is not None else (-1, 0)
        weights = self.weights
        unknown_room: list[str] = []
        room = _EMPTY_SLOTS
        if weights["room"] > 0 and x.get("room_items"):
            known = []
            for item_id in dict.fromkeys(str(i) for i in x["room_items"]):
                slot = self._items.get(item_id)
                if slot is None:
                    unknown_room.append(item_id)
                else:
                    known.append(slot)
            if known:
                room = np.array(known, dtype=np.int64)
        category_share = brand_share = _EMPTY_VALUES
        extra = _EMPTY_SLOTS
        if weights["content"] > 0 and (self._codes["category"] or self._codes["brand"]):
            category_share, brand_share, top = self._content_profile(
                number, length, x.get("affinity"))
            if len(top):
                extra = self._content_candidates(top.tolist())
        banned = self._banned(session, user_id, x.get("exclude"))
        banned_slots = _EMPTY_SLOTS
        if banned:
            unknown_room = [item_id for item_id in unknown_room if item_id not in banned]
            items = self._items
            banned_slots = np.array([items[i] for i in banned if i in items], dtype=np.int64)
        mf = self._mf
        p, bias = _EMPTY_VALUES, 0.0
        if user_id and weights["mf"] > 0:
            p = mf.u_latents.get(str(user_id), _EMPTY_VALUES)
            if len(p):
                bias = float(mf.u_biases[str(user_id)])
        slots, scores, codes = kernels.rank(
            self._session_items, number, length, self._weight_vector, k,
            self.knn_prefix, self.position_decay, self.sample_per_item, self.k_neighbours,
            self._vote_table, self._post_pool, self._post_index, self._session_weight,
            self._session_mark, self.covisit_prefix, self._cov_targets, self._cov_weights,
            self._cov_index, self._covisit_total, self.recent_decay, room, extra,
            self._trending_top.top_array(k), self._popular_top.top_array(k), banned_slots,
            self._item_mark, self._scratch_cand, self._scratch_matrix, self._trending,
            self._popular, float(self._trending_top.best), float(self._popular_top.best),
            self._in_stock, self._category, self._brand, category_share, brand_share,
            p, bias, mf.b, mf.q, mf.known, float(mf.mean))
        if not len(slots):
            return self._unknown_only(unknown_room, k)
        return self._results(slots, scores, codes, unknown_room, k)


    def rank_many(self, queries: Iterable[Mapping[str, Any]], k: int = 20,
                  ) -> list[list[dict[str, Any]]]:
        """:meth:`rank` for each query, in order (one result list per query)."""
        rank = self.rank
        return [rank(query, k) for query in queries]

    def predict_one(self, x: Mapping[str, Any]) -> str | None:
        """The single best next item (``None`` when nothing can be recommended)."""
        top = self.rank(x, k=1)
        return top[0]["item_id"] if top else None

    @property
    def weights(self) -> dict[str, float]:
        """Blend weights by component (assign a new dict to change them)."""
        return self._weights

    @weights.setter
    def weights(self, value: Mapping[str, float]) -> None:
        self._weights = {**DEFAULT_WEIGHTS, **value}
        self._weight_vector = np.array([self._weights[name] for name in COMPONENTS])

    def _results(self, slots: np.ndarray, scores: np.ndarray, codes: np.ndarray,
                 unknown_room: list[str], k: int) -> list[dict[str, Any]]:
        """Result dicts with reasons (coded ``81 a + 9 b + c``), built only for the returned
        items; room items the model never saw are merged in with the room bonus."""
        ids = self._item_ids
        # scores: rounded to 6 decimals by the kernel (what goes on the wire)
        out = [{"item_id": ids[slot], "score": score, "reasons": list(_REASONS[code])}
               for slot, score, code in zip(slots.tolist(), scores.tolist(), codes.tolist(),
                                            strict=True)]
        if unknown_room:
            bonus = round(self.weights["room"], 6)
            out.extend({"item_id": item_id, "score": bonus, "reasons": ["room"]}
                       for item_id in unknown_room)
            out.sort(key=_SCORE, reverse=True)
            del out[k:]
        return out


    def _unknown_only(self, unknown_room: list[str], k: int) -> list[dict[str, Any]]:
        bonus = round(self.weights["room"], 6)
        return [{"item_id": item_id, "score": bonus, "reasons": ["room"]}
                for item_id in unknown_room[:k]]

    def _banned(self, session: _Session | None, user_id: Any,
                exclude: Iterable[str] | None) -> set[str]:
        banned = {str(i) for i in exclude or ()}
        if session is not None:
            banned.update(session.purchased)
        if user_id:
            banned.update(self._users.get(str(user_id), ()))
        return banned

    def _content_profile(self, number: int, length: int,
                         affinity: Mapping[str, float] | None,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(category code -> share, brand code -> share, the three preferred categories)
        from the session and ``affinity``; empty arrays when there is no profile."""
        given_codes, given_shares = _EMPTY_SLOTS, _EMPTY_VALUES
        if affinity:
            codes = self._codes["category"]
            given = {codes[str(c)]: float(v) for c, v in affinity.items()
                     if float(v) > 0 and str(c) in codes}
            _share(given)
            if given:
                given_codes = np.array(list(given), dtype=np.int64)
                given_shares = np.array(list(given.values()))
        return kernels.content_profile(
            self._session_items, number, length, self.knn_prefix, self.position_decay,
            self._category, self._brand, len(self._codes["category"]),
            len(self._codes["brand"]), given_codes, given_shares)

    def _content_candidates(self, categories: list[int]) -> np.ndarray:
        """The most popular items of the preferred categories."""
        per_category = max(1, self.candidates_per_component // 5)
        tops = [top.top_array(per_category) for category in categories
                if (top := self._category_top.get(category)) is not None]
        if not tops:
            return _EMPTY_SLOTS
        return tops[0] if len(tops) == 1 else np.concatenate(tops)


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
        postings = self._post_index[:, 1]
        rows = self._cov_index[:, 1]
        return {
            "model_version": self.model_version,
            "events_learned": self.events_learned,
            "sessions": len(self._sessions),
            "max_sessions": self.max_sessions,
            "items": len(self._items),
            "max_items": self.max_items,
            "users": len(self._users),
            "max_users": self.max_users,
            "postings": int(postings.sum()),
            "max_postings_per_item": 2 * self.max_postings_per_item,
            "longest_postings": int(postings.max(initial=0)),
            "covisit_pairs": int(rows.sum()),
            "longest_covisit_row": int(rows.max(initial=0)),
            "max_covisit_per_item": self.max_covisit_per_item + self.max_covisit_per_item // 2,
            "longest_session": max((s.length for s in self._sessions.values()), default=0),
            "max_session_len": self.max_session_len,
            "mf_users": len(self._mf.u_latents),
            "mf_items": self._mf.n_items,
            "categories": len(self._category_top),
        }


def _packed_index(lengths: list[int]) -> np.ndarray:
    """Arena index rows (start, length, capacity) of blocks laid end to end."""
    index = np.zeros((len(lengths), 3), dtype=np.int64)
    index[:, 1] = lengths
    index[:, 2] = np.where(index[:, 1] > 0, np.maximum(index[:, 1], 4), 0)
    index[1:, 0] = np.cumsum(index[:-1, 2])
    return index


def _share(values: dict[Any, float]) -> None:
    total = sum(values.values())
    if total > 0:
        for key in values:
            values[key] /= total


def warm_up() -> float:
    """Load (or, on a fresh install, compile: ~15 s) the recommender's numba kernels now,
    not on the first ranked event; return the seconds it took."""
    import time

    started = time.perf_counter()
    kernels.warm_up()
    return time.perf_counter() - started
