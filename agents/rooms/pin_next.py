"""Pin next: a room's products ranked by the GMV the viewers present now would bring.

For item *i* (category *c*, brand *b*, price *p*, in stock) and the viewers *V* present::

    E[GMV_i] = p * [in stock] * sum_v  q_v * (EPS + cat_v(c) + 0.5 brand_v(b)) * fit_v(p)

* ``q_v``: the viewer's purchase propensity (the user pipeline's online model), or
  :data:`PRIOR_PROPENSITY` when the viewer has none yet;
* ``cat_v``/``brand_v``: the viewer's decayed category and brand affinities (the profile's
  top 3 of each) as shares of their total, so a viewer weighs at most 1.5;
* ``fit_v(p) = exp(-ln(p / avg_v)^2 / (2 PRICE_SIGMA^2))`` around the viewer's average unit
  price ``avg_v``, :data:`UNKNOWN_FIT` without one.

The top :data:`TOP_K` carry reasons in English and Chinese ("12 viewers into 美妆, price
fits 8"): the viewers whose top category is the item's, the viewers whose price fit is at
least :data:`FITS`, the viewers whose top brand is the item's.

Where the viewer facts come from (one owner per state)
-------------------------------------------------------
The user pipeline owns profiles and propensity scores, the room pipeline owns rooms; neither
reads the other's table. The user pipeline publishes a small per-viewer *interest* summary
(:func:`interest_summary`: top-3 category and brand shares, average price, propensity; ~150
bytes) into the ``viewer-interest`` global table, written by it alone, when a live event of
the viewer arrives and the summary is older than :data:`INTEREST_REFRESH_MS` of event time
or its top category changed (checked every :data:`INTEREST_MIN_GAP_MS`), written behind (one
changelog record per viewer and commit, ``agents.state.WriteBehindTable``): the mirror of
``room-headlines``, the room context the room pipeline publishes for the user pipeline.
Every worker holds the table, so the room pipeline reads the summaries of the viewers
present in its rooms without a request or a new topic; a room-keyed topic would have needed
the user pipeline to know room membership changes (leaves, time-outs) the room pipeline
already tracks. Viewers without consent get no summary (they count with the prior only).
Keeping only what the room pipeline sees of each viewer was the other choice: it misses the
storefront history and the propensity model.

No Faust here: :class:`PinNext` takes the catalog and summaries as mappings.

>>> catalog = {"i1": {"item_id": "i1", "category": "beauty", "brand": "Lumaki",
...                   "price": 129.9, "in_stock": True},
...            "i2": {"item_id": "i2", "category": "snacks", "brand": "Kiro",
...                   "price": 39.9, "in_stock": True}}
>>> fan = {"c": {"beauty": 1.0}, "b": {"Lumaki": 1.0}, "p": 120.0, "q": 0.3}
>>> top = rank([catalog["i1"], catalog["i2"]], [fan, fan])
>>> [row["item_id"] for row in top], top[0]["reason"]["en"]
(['i1', 'i2'], '2 viewers into beauty, price fits 2, 2 like Lumaki')
>>> top[0]["reason"]["zh"].startswith("2 位观众偏好美妆"), top[0]["reason"]["zh"][-12:]
(True, '2 位喜欢 Lumaki')
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

TOP_K = 3
EPS = 0.05                  # affinity of a viewer with none for the item: small, not zero
BRAND_WEIGHT = 0.5
PRICE_SIGMA = 0.7           # log-price tolerance: 2x the usual price fits 0.61
UNKNOWN_FIT = 0.5
PRIOR_PROPENSITY = 0.05
FITS = 0.6                  # a price "fits" a viewer at this fit or more (|ln ratio| < 0.7)
TOP_INTERESTS = 3
INTEREST_REFRESH_MS = 30_000  # a viewer's summary is republished this often at most ...
INTEREST_MIN_GAP_MS = 5_000   # ... or when its top category changes, checked this often
REFRESH_S = 5.0             # the room pipeline recomputes a room's list this often at most
CANDIDATES = 128            # the room's products considered: its item counter's capacity
PINS_KEPT = 32              # pinned items remembered per room
ROOMS_KEPT = 10_000

# the catalog's categories (streams.simulator.CATEGORIES) in Chinese, for the reasons
CATEGORY_ZH = {
    "beauty": "美妆", "skincare": "护肤", "womens_apparel": "女装", "mens_apparel": "男装",
    "shoes": "鞋靴", "bags": "箱包", "jewelry": "珠宝", "electronics": "数码",
    "phone_accessories": "手机配件", "home": "家居", "kitchen": "厨具", "snacks": "零食",
    "fresh_food": "生鲜", "baby": "母婴", "pets": "宠物", "sports": "运动", "toys": "玩具",
    "books": "图书", "health": "保健", "tea_coffee": "茶咖",
}


def _shares(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    top = sorted(((row["name"], float(row["score"])) for row in rows
                  if row.get("name") and float(row.get("score") or 0) > 0),
                 key=lambda kv: -kv[1])[:TOP_INTERESTS]
    total = sum(score for _, score in top)
    return {name: round(score / total, 3) for name, score in top} if total > 0 else {}


def interest_summary(view: Mapping[str, Any], scores: Mapping[str, float] | None,
                     ts: int) -> dict[str, Any]:
    """A viewer's summary for pin next from the profile's public view and model scores.

    >>> view = {"affinities": {"categories": [{"name": "beauty", "score": 3.0},
    ...                                       {"name": "snacks", "score": 1.0}],
    ...                        "brands": []}, "price": {"avg_price": 99.0}}
    >>> interest_summary(view, {"purchase_propensity": 0.21}, 5)
    {'c': {'beauty': 0.75, 'snacks': 0.25}, 'b': {}, 'p': 99.0, 'q': 0.21, 't': 5}
    """
    affinities = view.get("affinities") or {}
    price = (view.get("price") or {}).get("avg_price")
    q = (scores or {}).get("purchase_propensity")
    return {"c": _shares(affinities.get("categories") or ()),
            "b": _shares(affinities.get("brands") or ()),
            "p": float(price) if price else None,
            "q": round(float(q), 4) if q is not None else None,
            "t": ts}


def needs_refresh(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether ``new`` should replace the published ``old`` summary (write throttle)."""
    if not old:
        return True
    if new["t"] - old.get("t", 0) >= INTEREST_REFRESH_MS:
        return True
    return _top(new.get("c")) != _top(old.get("c"))


def _top(shares: Mapping[str, float] | None) -> str | None:
    return max(shares, key=lambda k: shares[k]) if shares else None


def price_fit(price: float, usual: float | None) -> float:
    """How well ``price`` fits a viewer whose usual unit price is ``usual`` (0..1].

    >>> price_fit(100.0, 100.0), round(price_fit(200.0, 100.0), 3), price_fit(9.9, None)
    (1.0, 0.612, 0.5)
    """
    if not usual or usual <= 0 or price <= 0:
        return UNKNOWN_FIT
    return math.exp(-math.log(price / usual) ** 2 / (2 * PRICE_SIGMA ** 2))


PRICE_BUCKET = 0.05  # viewers grouped by log usual price in steps of this (~5 % apart)


def rank(items: Iterable[Mapping[str, Any]], viewers: list[Mapping[str, Any]],
         k: int = TOP_K) -> list[dict[str, Any]]:
    """The ``k`` items of ``items`` (catalog dicts) with the highest expected GMV from
    ``viewers`` (summaries, :func:`interest_summary`), with reasons. Out-of-stock items
    and items without a price are left out.

    Viewers are first folded into groups of about the same usual price (log steps of
    :data:`PRICE_BUCKET`), with their propensity-weighted category and brand shares
    summed: the cost is viewers + items x groups, not viewers x items (a room of 2,000
    viewers and 160 products took ~0.6 s per ranking, the event loop blocked meanwhile).
    """
    groups: dict[int | None, list[Any]] = {}  # price group -> [n, Σq, Σq·cat, Σq·brand]
    into: dict[str, int] = {}
    fans: dict[str, int] = {}
    for viewer in viewers:
        cats, brands = viewer.get("c") or {}, viewer.get("b") or {}
        q = viewer.get("q")
        q = PRIOR_PROPENSITY if q is None else q
        usual = viewer.get("p")
        key = round(math.log(usual) / PRICE_BUCKET) if usual and usual > 0 else None
        group = groups.get(key)
        if group is None:
            group = groups[key] = [0, 0.0, {}, {}]
        group[0] += 1
        group[1] += q
        by_cat, by_brand = group[2], group[3]
        for name, share in cats.items():
            by_cat[name] = by_cat.get(name, 0.0) + q * share
        for name, share in brands.items():
            by_brand[name] = by_brand.get(name, 0.0) + q * share
        if cats:
            top = _top(cats)
            into[top] = into.get(top, 0) + 1  # type: ignore[index]
        if brands:
            top = _top(brands)
            fans[top] = fans.get(top, 0) + 1  # type: ignore[index]
    centres = [(None if key is None else math.exp(key * PRICE_BUCKET), group)
               for key, group in groups.items()]
    scored = []
    for item in items:
        price = float(item.get("price") or 0.0)
        if price <= 0 or not item.get("in_stock", True):
            continue
        category, brand = item.get("category"), item.get("brand")
        total = 0.0
        fits = 0
        for centre, (n, q_sum, by_cat, by_brand) in centres:
            fit = price_fit(price, centre)
            total += fit * (EPS * q_sum + by_cat.get(category, 0.0)
                            + BRAND_WEIGHT * by_brand.get(brand, 0.0))
            if fit >= FITS:
                fits += n
        scored.append((price * total, item, into.get(category, 0), fits,
                       fans.get(brand, 0) if brand is not None else 0))
    scored.sort(key=lambda row: (-row[0], row[1]["item_id"]))
    return [_row(*row) for row in scored[:k]]


def _row(gmv: float, item: Mapping[str, Any], into: int, fits: int,
         fans: int) -> dict[str, Any]:
    category = item.get("category") or "?"
    brand = item.get("brand")
    en = f"{into} viewer{'' if into == 1 else 's'} into {category}, price fits {fits}"
    zh = f"{into} 位观众偏好{CATEGORY_ZH.get(category, category)}，价格合适 {fits} 位"
    if fans and brand:
        en += f", {fans} like {brand}"
        zh += f"，{fans} 位喜欢 {brand}"
    return {"item_id": item["item_id"], "title": item.get("title"), "category": category,
            "brand": brand, "price": round(float(item["price"]), 2),
            "expected_gmv": round(gmv, 2), "viewers_into": into, "price_fits": fits,
            "brand_fans": fans, "reason": {"en": en, "zh": zh}}


class PinNext:
    """Pin next of a room state from the ``catalog`` and ``viewer-interest`` tables (any
    mappings with ``get``): the room's products are the items its events named (its item
    counter, the pinned item) and the items pinned in it lately (:meth:`observe`, a room
    pipeline observer: the last :data:`PINS_KEPT` per room, in memory only -- after a
    restart the list fills again with the next pins)."""

    def __init__(self, catalog: Any, interests: Any, k: int = TOP_K) -> None:
        self.catalog = catalog
        self.interests = interests
        self.k = k
        self.pins: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()

    def observe(self, event: Any) -> None:
        """Remember a ``product_pin``'s item for its room."""
        if event.type != "product_pin" or not event.item_id:
            return
        pins = self.pins.get(event.room_id)
        if pins is None:
            pins = self.pins[event.room_id] = OrderedDict()
            if len(self.pins) > ROOMS_KEPT:
                self.pins.popitem(last=False)
        self.pins.move_to_end(event.room_id)
        pins[event.item_id] = None
        pins.move_to_end(event.item_id)
        if len(pins) > PINS_KEPT:
            pins.popitem(last=False)

    def __call__(self, state: Any) -> list[dict[str, Any]]:
        ids = [row["key"] for row in state.items.top(CANDIDATES)]
        known = set(ids)
        pinned = [state.pinned["item_id"]] if state.pinned is not None else []
        for item_id in [*pinned, *self.pins.get(state.room_id, ())]:
            if item_id not in known:
                known.add(item_id)
                ids.append(item_id)
        get = self.catalog.get
        items = [found for found in map(get, ids) if isinstance(found, Mapping)]
        interest = self.interests.get
        viewers = [found for found in map(interest, state.viewers)
                   if isinstance(found, Mapping)]
        # viewers without a summary yet (new, or no consent) count with the prior only
        viewers += [{}] * (len(state.viewers) - len(viewers))
        return rank(items, viewers, self.k)
