"""Dense feature vectors of purchase propensity and leave risk, built straight into a list.

The per-event path of :mod:`online_models.propensity` scores one event in a few
microseconds, so the features are a flat ``list[float]`` in the fixed order of
:data:`PURCHASE_FEATURES` / :data:`LEAVE_FEATURES` (no per-event dict of names): numbers are
read with type fast paths (a float or an int is used as is, anything else goes through
:func:`_num`), one-hot groups are a template copy and one index write. The dict forms
:func:`purchase_features` and :func:`leave_features` zip the same values with the names
(tests, reports, the River reference models).

>>> vector = purchase_vector({"event": {"type": "add_to_cart", "price": 99.0}})
>>> len(vector) == len(PURCHASE_FEATURES), vector[PURCHASE_INDEX["ev_add_to_cart"]]
(True, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

LIFECYCLES = ("new", "active", "engaged", "loyal", "at_risk", "dormant")
PROFILE_TAGS = ("new", "high_intent", "bargain_hunter", "loyal_buyer", "dormant",
                "big_spender", "gifter", "engaged_viewer")
PRICE_BANDS = ("budget", "mid", "premium", "luxury")
PURCHASE_EVENT_KINDS = ("view", "click", "search", "product_click", "add_to_cart")
IN_ROOM_BUCKETS_MIN = ((0.0, 1.0), (1.0, 3.0), (3.0, 10.0), (10.0, math.inf))
LIVE_EVENT_KINDS = ("join", "comment", "like", "gift", "share", "follow", "product_click",
                    "add_to_cart", "purchase")

PROFILE_FEATURES = (
    "rfm_orders", "rfm_monetary", "rfm_frequency_30d", "rfm_recency_days", "rfm_has_order",
    "rfm_r_score", "rfm_f_score", "rfm_m_score", "price_sensitivity", "price_avg",
    *(f"price_band_{name}" for name in PRICE_BANDS),
    "sess_events", "sess_dwell_min", "sess_carts", "sess_purchases", "sess_open_cart",
    "sess_items", "sess_in_room", "live_watch_min", "live_rooms", "live_comments",
    "live_likes", "live_gifts", "live_gift_value",
    *(f"tag_{tag}" for tag in PROFILE_TAGS),
    *(f"life_{stage}" for stage in LIFECYCLES),
)
ROOM_FEATURES = ("room_present", "room_viewers", "room_comments_pm", "room_likes_pm",
                 "room_orders_pm", "room_gmv_pm", "room_click_to_cart",
                 "room_cart_to_purchase", "room_sentiment")
PURCHASE_FEATURES = (
    *PROFILE_FEATURES,
    *(f"ev_{name}" for name in PURCHASE_EVENT_KINDS),
    "ev_live", "item_price", "item_price_vs_usual", "item_category_affinity",
    "item_top_category", *ROOM_FEATURES, "item_is_pinned", "item_price_misfit",
)
VIEWER_FIT_FEATURES = (
    "v_in_room_lin", "v_events_per_min", "v_engage_vs_room", "room_pin_fresh",
    "pin_affinity", "pin_top_category", "pin_price_known", "pin_price_vs_usual",
    "pin_price_misfit",
)
LEAVE_FEATURES = (
    "v_in_room_min", *(f"v_in_room_{i}" for i in range(len(IN_ROOM_BUCKETS_MIN))),
    "v_idle_s", "v_events", "v_returning",
    *(f"ev_{name}" for name in LIVE_EVENT_KINDS),
    *PROFILE_FEATURES, *ROOM_FEATURES,
    "room_viewers_vs_peak", "room_avg_watch_min", "room_retention_1m", "room_retention_5m",
    "room_leaves_1m", "room_joins_1m", "room_pin_age_min",
    # engagement against the room's, and the pinned item against the viewer's tastes
    *VIEWER_FIT_FEATURES,
)
PURCHASE_INDEX = {name: i for i, name in enumerate(PURCHASE_FEATURES)}
LEAVE_INDEX = {name: i for i, name in enumerate(LEAVE_FEATURES)}

# one-hot groups: offset of the group's first slot inside the profile block
_BAND_AT = {name: 10 + i for i, name in enumerate(PRICE_BANDS)}
_TAG_AT = {tag: 27 + i for i, tag in enumerate(PROFILE_TAGS)}
_LIFE_AT = {stage: 35 + i for i, stage in enumerate(LIFECYCLES)}
_PURCHASE_EV_AT = {name: i for i, name in enumerate(PURCHASE_EVENT_KINDS)}
_LIVE_EV_AT = {name: i for i, name in enumerate(LIVE_EVENT_KINDS)}
assert PROFILE_FEATURES[10] == "price_band_budget" and PROFILE_FEATURES[27] == "tag_new"
assert PROFILE_FEATURES[35] == "life_new" and len(PROFILE_FEATURES) == 41

_EMPTY: Mapping[str, Any] = {}  # shared, never written
_INF = math.inf
_log1p_f = math.log1p
_log = math.log


def _num(value: Any) -> float:
    """A finite float, or 0.0 for None, NaN, infinities and anything not a number."""
    if value.__class__ is float:
        return value if value - value == 0.0 else 0.0  # NaN and infinities fail this
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if number - number == 0.0 else 0.0


def _lg(value: Any) -> float:
    """``log1p(max(0, value))`` of a finite number; 0.0 for anything else."""
    cls = value.__class__
    if cls is float:
        return _log1p_f(value) if 0.0 < value < _INF else 0.0
    if cls is int:
        return _log1p_f(value) if 0 < value < 1 << 53 else 0.0
    if value is None:
        return 0.0
    number = _num(value)
    return _log1p_f(number) if number > 0.0 else 0.0


def _unit(value: Any) -> float:
    """``value`` clipped to [0, 1] (0.0 when not a finite number)."""
    cls = value.__class__
    if cls is not float and cls is not int:
        value = _num(value)
    return 0.0 if not value > 0.0 else (1.0 if value >= 1.0 else float(value))


def _sec(context: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = context.get(name)
    if value.__class__ is dict or isinstance(value, Mapping):
        return value
    return _EMPTY


def _rfm_score(value: Any) -> float:
    if value.__class__ is int and 1 <= value <= 5:
        return (value - 1) / 4.0
    number = _num(value) or 1.0
    return (min(max(number, 1.0), 5.0) - 1.0) / 4.0


def _is_map(value: Any) -> bool:
    return value.__class__ is dict or isinstance(value, Mapping)


# The helpers above are complete; the blocks below inline their common case (an int or a
# float that needs no cleaning) and call them only for anything else: a call costs as much as
# the work here, and a profile block makes ~30 of them per event.
def _profile_block(profile: Mapping[str, Any]) -> list[float]:
    """The 41 profile features (:data:`PROFILE_FEATURES`) as a new list."""
    if not profile:
        return [0.0] * 41
    rfm, price = _sec(profile, "rfm"), _sec(profile, "price")
    session, live = _sec(profile, "session"), _sec(profile, "live")
    log1p, lg, big = _log1p_f, _lg, _INF
    v = rfm.get("orders")
    orders = (log1p(v) if v > 0 else 0.0) if v.__class__ is int and v < big else lg(v)
    v = rfm.get("monetary")
    monetary = log1p(v) if v.__class__ is float and 0.0 < v < big else lg(v)
    v = rfm.get("frequency_30d")
    frequency = log1p(v) if v.__class__ is float and 0.0 < v < big else lg(v)
    v = rfm.get("recency_s")
    recency = 0.0 if v is None else lg(_num(v) / 86_400.0)
    r, f, m = rfm.get("r_score"), rfm.get("f_score"), rfm.get("m_score")
    v = price.get("sensitivity")
    sensitivity = v if v.__class__ is float and 0.0 <= v <= 1.0 else _unit(v)
    v = price.get("avg_price")
    avg_price = log1p(v) if v.__class__ is float and 0.0 < v < big else lg(v)
    v = session.get("carts")
    carts = v if v.__class__ is int else _num(v)
    v = session.get("purchases")
    purchases = v if v.__class__ is int else _num(v)
    v = session.get("events")
    events = (log1p(v) if v > 0 else 0.0) if v.__class__ is int and v < big else lg(v)
    v = session.get("dwell_s")
    dwell = log1p(v / 60.0) if v.__class__ is float and 0.0 < v < big else lg(_num(v) / 60.0)
    recent = session.get("recent_items")
    v = live.get("watch_time_s")
    watch = log1p(v / 60.0) if v.__class__ is float and 0.0 < v < big else lg(_num(v) / 60.0)
    counts = []
    for v in (live.get("rooms_watched"), live.get("comments"), live.get("likes"),
              live.get("gifts")):
        counts.append((log1p(v) if v > 0 else 0.0) if v.__class__ is int and v < big
                      else lg(v))
    v = live.get("gift_value")
    gift_value = log1p(v) if v.__class__ is float and 0.0 < v < big else lg(v)
    block = [
        orders, monetary, frequency, recency, 1.0 if orders > 0.0 else 0.0,
        (r - 1) / 4.0 if r.__class__ is int and 1 <= r <= 5 else _rfm_score(r),
        (f - 1) / 4.0 if f.__class__ is int and 1 <= f <= 5 else _rfm_score(f),
        (m - 1) / 4.0 if m.__class__ is int and 1 <= m <= 5 else _rfm_score(m),
        sensitivity, avg_price,
        0.0, 0.0, 0.0, 0.0,
        events, dwell,
        (log1p(carts) if carts > 0 else 0.0) if carts < big else 0.0,
        (log1p(purchases) if purchases > 0 else 0.0) if purchases < big else 0.0,
        1.0 if carts > purchases else 0.0,
        _lg(len(recent)) if recent and hasattr(recent, "__len__") else 0.0,
        1.0 if session.get("in_room") else 0.0,
        watch, *counts, gift_value,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ]
    band = price.get("band")
    if band.__class__ is str and band in _BAND_AT:
        block[_BAND_AT[band]] = 1.0
    tags = profile.get("tags")
    if tags:
        try:
            for tag in tags:
                if tag.__class__ is str and tag in _TAG_AT:
                    block[_TAG_AT[tag]] = 1.0
        except TypeError:
            pass
    lifecycle = profile.get("lifecycle")
    if lifecycle.__class__ is str and lifecycle in _LIFE_AT:
        block[_LIFE_AT[lifecycle]] = 1.0
    return block


_LAST_PROFILE: list[Any] = [None, None, None]  # view dict, its fingerprint, its block


def _profile_cached(profile: Mapping[str, Any]) -> list[float]:
    """:func:`_profile_block` of a profile view, reused for the same view dict.

    Purchase propensity and leave risk score one event with one view: the second reads the
    first one's block. Only views that carry ``updated_at`` (those of
    :meth:`agents.users.profile.UserProfile.view`) are reused, and only while the dict, its
    ``updated_at`` and ``events`` are the same. The caller must not mutate the list."""
    stamp = profile.get("updated_at") if profile else None
    if stamp is None:
        return _profile_block(profile)
    last = _LAST_PROFILE
    fingerprint = (stamp, profile.get("events"))
    if last[0] is profile and last[1] == fingerprint:
        return last[2]
    block = _profile_block(profile)
    last[0], last[1], last[2] = profile, fingerprint, block
    return block


class _RoomParts:
    """What the features read from one room insight, computed once per insight dict."""

    __slots__ = ("actions_per_viewer_min", "block", "fingerprint", "leave", "pinned_at",
                 "pinned_item", "room")

    def __init__(self, room: Mapping[str, Any]) -> None:
        self.room = room  # held: its id() cannot be reused while cached
        self.fingerprint = _fingerprint(room)
        commerce = _sec(room, "commerce")
        funnel = _sec(commerce, "funnel")
        pinned = _sec(commerce, "pinned")
        sentiment = _num(_sec(room, "mood").get("sentiment"))
        viewers = _num(room.get("viewers"))
        self.block = [
            1.0, _lg(viewers), _lg(room.get("comments_per_min")),
            _lg(room.get("likes_per_min")), _lg(room.get("orders_per_min")),
            _lg(room.get("gmv_per_min")), _unit(funnel.get("click_to_cart")),
            _unit(funnel.get("cart_to_purchase")), min(max(sentiment, -1.0), 1.0),
        ]
        audience = _sec(room, "audience")
        retention = _sec(audience, "retention")
        last_minute = _sec(_sec(room, "windows"), "tumbling_1m")
        peak = _num(room.get("peak_viewers"))
        per_viewer = max(viewers, 1.0)
        self.actions_per_viewer_min = max(0.0, _num(room.get("likes_per_min"))
                                          + _num(room.get("comments_per_min"))) / per_viewer
        self.leave = [
            min(viewers / peak, 1.0) if peak > 0 else 0.0,
            _lg(_num(audience.get("avg_watch_s")) / 60.0),
            _unit(retention.get("1m")), _unit(retention.get("5m")),
            min(_num(last_minute.get("leaves")) / per_viewer, 5.0),
            min(_num(last_minute.get("joins")) / per_viewer, 5.0),
        ]
        self.pinned_item = pinned.get("item_id")
        at = pinned.get("pinned_at")
        self.pinned_at = None if at is None else _num(at)


def _fingerprint(room: Mapping[str, Any]) -> tuple[Any, ...]:
    return (room.get("ts"), room.get("viewers"), room.get("gmv_per_min"),
            room.get("comments_per_min"))


_ROOMS: dict[int, _RoomParts] = {}
ROOM_CACHE_SIZE = 512


def _room_parts(room: Mapping[str, Any]) -> _RoomParts:
    """The room's features, cached per insight dict.

    An insight is a snapshot the engine replaces, never edits; the cache is keyed by the
    dict's identity (the dict is held, so the id is not reused) and checked against a few of
    its numbers, so an insight edited in place in those is recomputed."""
    parts = _ROOMS.get(id(room))
    if parts is not None and parts.room is room and parts.fingerprint == _fingerprint(room):
        return parts
    if len(_ROOMS) >= ROOM_CACHE_SIZE:
        _ROOMS.clear()
    parts = _ROOMS[id(room)] = _RoomParts(room)
    return parts


def purchase_vector(context: Mapping[str, Any]) -> list[float]:
    """:data:`PURCHASE_FEATURES` of ``context`` (see :func:`purchase_features`) in order."""
    profile = _sec(context, "profile")
    event = _sec(context, "event")
    room = _sec(context, "room")
    out = _profile_cached(profile).copy()
    kinds = [0.0, 0.0, 0.0, 0.0, 0.0]
    kind = event.get("type")
    if kind.__class__ is str and kind in _PURCHASE_EV_AT:
        kinds[_PURCHASE_EV_AT[kind]] = 1.0
    out += kinds
    v = event.get("price")
    item_price = v if v.__class__ is float and v - v == 0.0 else _num(v)
    avg_price = _num(_sec(profile, "price").get("avg_price")) if profile else 0.0
    if item_price > 0 and avg_price > 0:
        vs_usual = _log(item_price / avg_price)
        vs_usual = -3.0 if vs_usual < -3.0 else (3.0 if vs_usual > 3.0 else vs_usual)
    else:
        vs_usual = 0.0
    categories = _sec(profile, "affinities").get("categories") if profile else None
    category = event.get("category")
    affinity = 0.0
    top = 0.0
    if categories:
        try:
            for row in categories:
                if _is_map(row) and row.get("name") == category:
                    affinity = _lg(row.get("score"))
                    break
            first = categories[0]
            top = 1.0 if _is_map(first) and first.get("name") == category else 0.0
        except (TypeError, KeyError, IndexError):
            pass
    out += (1.0 if event.get("source") == "live" else 0.0,
            _log1p_f(item_price) if item_price > 0.0 else 0.0, vs_usual, affinity, top)
    if room:
        parts = _room_parts(room)
        out += parts.block
        item_id = event.get("item_id")
        out.append(1.0 if item_id and parts.pinned_item == item_id else 0.0)
    else:
        out += (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    out.append(-vs_usual if vs_usual < 0.0 else vs_usual)  # far from the usual price either way
    return out


def leave_vector(context: Mapping[str, Any]) -> list[float]:
    """:data:`LEAVE_FEATURES` of ``context`` (see :func:`leave_features`) in order."""
    viewer = _sec(context, "viewer")
    event = _sec(context, "event")
    room = _sec(context, "room")
    v = event.get("ts")
    ts = v if v.__class__ is int else _num(v)
    joined = viewer.get("joined_at")
    last = viewer.get("last_active_at")
    out = [0.0] * 17
    if joined is not None:
        in_room_min = (ts - (joined if joined.__class__ is int else _num(joined))) / 60_000.0
        if in_room_min < 0.0:
            in_room_min = 0.0
        out[0] = _log1p_f(in_room_min)
        # leaving is not monotone in time watched (few leave at once, most after minutes)
        out[1 if in_room_min < 1.0 else 2 if in_room_min < 3.0 else
            3 if in_room_min < 10.0 else 4] = 1.0
    if last is not None:
        idle = (ts - (last if last.__class__ is int else _num(last))) / 1000.0
        out[5] = _log1p_f(idle) if 0.0 < idle < _INF else 0.0
    v = viewer.get("events")
    out[6] = (_log1p_f(v) if v > 0 else 0.0) if v.__class__ is int and v < _INF else _lg(v)
    out[7] = 1.0 if viewer.get("returning") else 0.0
    kind = event.get("type")
    if kind.__class__ is str and kind in _LIVE_EV_AT:
        out[8 + _LIVE_EV_AT[kind]] = 1.0
    profile = _sec(context, "profile")
    out += _profile_cached(profile)
    fit = [0.0] * 9
    in_room = (ts - _num(joined)) / 60_000.0 if joined is not None else -1.0
    events = _num(v) if v is not None else 0.0
    if in_room >= 0.0:
        fit[0] = min(in_room, 30.0) / 10.0  # the hazard rises with time in the room
        fit[1] = _log1p_f(events / max(in_room, 0.25)) if events > 0.0 else 0.0
    _pin_fit(profile, _sec(viewer, "pinned"), fit)
    if not room:
        out += (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
                0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        out += fit
        return out
    parts = _room_parts(room)
    out += parts.block
    out += parts.leave
    pinned_at = parts.pinned_at
    pin_age = (ts - pinned_at) / 60_000.0 if pinned_at is not None and ts else -1.0
    out.append(_lg(pin_age) if pin_age >= 0.0 else 0.0)
    if in_room >= 0.0:
        # the viewer's actions against an average viewer's over the same time (likes and
        # comments are ~70 % of what viewers do)
        expected = parts.actions_per_viewer_min * in_room / 0.7
        ratio = _log((events + 1.0) / (expected + 1.0))
        fit[2] = -3.0 if ratio < -3.0 else (3.0 if ratio > 3.0 else ratio)
    fit[3] = 1.0 if 0.0 <= pin_age < 1.0 else 0.0
    out += fit
    return out


def _pin_fit(profile: Mapping[str, Any], pinned: Mapping[str, Any], fit: list[float]) -> None:
    """Write the pinned item's fit to the profile into ``fit[4:9]``: the affinity of its
    category, whether that is the top category, and its price against the usual one."""
    if not pinned or not profile:
        return
    category = pinned.get("category")
    categories = _sec(profile, "affinities").get("categories")
    if category is not None and categories:
        try:
            for row in categories:
                if _is_map(row) and row.get("name") == category:
                    fit[4] = _lg(row.get("score"))
                    break
            first = categories[0]
            fit[5] = 1.0 if _is_map(first) and first.get("name") == category else 0.0
        except (TypeError, KeyError, IndexError):
            pass
    price = _num(pinned.get("price"))
    usual = _num(_sec(profile, "price").get("avg_price"))
    if price > 0.0 and usual > 0.0:
        ratio = _log(price / usual)
        ratio = -3.0 if ratio < -3.0 else (3.0 if ratio > 3.0 else ratio)
        fit[6], fit[7], fit[8] = 1.0, ratio, abs(ratio)


def purchase_features(context: Mapping[str, Any]) -> dict[str, float]:
    """Features of :class:`~online_models.propensity.PurchasePropensity` by name; every value
    numeric and bounded.

    ``context`` keys (each optional; missing parts read as zero):

    * ``profile``: :meth:`agents.users.profile.UserProfile.view` at the event time. Used:
      ``rfm.{orders, monetary, frequency_30d, recency_s, r_score, f_score, m_score}``,
      ``price.{sensitivity, avg_price, band}``,
      ``session.{events, dwell_s, carts, purchases, recent_items, in_room}``,
      ``live.{watch_time_s, rooms_watched, comments, likes, gifts, gift_value}``,
      ``affinities.categories`` (names and scores), ``tags``, ``lifecycle``.
    * ``event``: the event being scored, ``{type, item_id, category, price, source}``
      (``type`` in :data:`PURCHASE_EVENT_KINDS`, ``source`` ``"live"`` or ``"clicks"``;
      ``category`` and ``price`` from the event or the catalog). The price enters as is,
      against the profile's ``avg_price`` (``item_price_vs_usual``, log ratio) and as that
      ratio's absolute value (``item_price_misfit``).
    * ``room``: the room's latest insight (the ``room-insights`` JSON) when the event comes
      from a live room. Used: ``viewers``, ``comments_per_min``, ``likes_per_min``,
      ``orders_per_min``, ``gmv_per_min``, ``commerce.funnel.{click_to_cart,
      cart_to_purchase}``, ``commerce.pinned.item_id``, ``mood.sentiment``.

    Counts enter as ``log1p``, scores in [0, 1] as they are, categories one-hot.

    >>> f = purchase_features({"event": {"type": "add_to_cart", "price": 99.0}})
    >>> f["ev_add_to_cart"], f["ev_view"], round(f["item_price"], 3), f["room_present"]
    (1.0, 0.0, 4.605, 0.0)
    """
    return dict(zip(PURCHASE_FEATURES, purchase_vector(context), strict=True))


def leave_features(context: Mapping[str, Any]) -> dict[str, float]:
    """Features of :class:`~online_models.propensity.LeaveRisk` by name; every value numeric
    and bounded.

    ``context`` keys (each optional):

    * ``viewer``: this viewer in this room, ``{joined_at, last_active_at, events,
      returning, pinned}`` (ms event times of the join and of the activity before this
      event, live events so far in the room, whether they had watched this room before, and
      the catalog facts ``{category, price}`` of the item pinned in the room now). Time in
      the room enters as ``log1p`` minutes, linearly (capped at 30) and as one-hot buckets
      :data:`IN_ROOM_BUCKETS_MIN`; the viewer's events per minute, also against the room's
      likes and comments per viewer over the same time (``v_engage_vs_room``).
    * ``event``: ``{type, ts}`` of the live event being scored (``type`` in
      :data:`LIVE_EVENT_KINDS`).
    * ``profile``: as for :func:`purchase_features`; ``affinities.categories`` and
      ``price.avg_price`` are read against the pinned item (``pin_affinity``,
      ``pin_top_category``, ``pin_price_vs_usual`` and its absolute value
      ``pin_price_misfit``).
    * ``room``: the room's latest insight. Used: the fields of :func:`purchase_features`
      plus ``peak_viewers``, ``audience.{avg_watch_s, retention.1m, retention.5m}``,
      ``windows.tumbling_1m.{joins, leaves}``, ``commerce.pinned.pinned_at`` (its age, and
      ``room_pin_fresh`` under a minute).

    Every input is something the engine holds (profile, room insight, catalog); nothing
    reads a simulator's latent state.

    >>> f = leave_features({"viewer": {"joined_at": 0, "last_active_at": 50_000, "events": 3},
    ...                     "event": {"type": "comment", "ts": 60_000}})
    >>> round(f["v_in_room_min"], 3), round(f["v_idle_s"], 3), f["ev_comment"]
    (0.693, 2.398, 1.0)
    """
    return dict(zip(LEAVE_FEATURES, leave_vector(context), strict=True))

