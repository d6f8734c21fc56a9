"""Online user profile: pure, bounded state folded one live or click event at a time.

No Faust here: the user pipeline loads a profile dict from its table, calls
:func:`fold_profile` and stores the dict back. Everything runs on **event time** (``ts`` of
the events, never the wall clock), so a replay gives the same profile; late events are folded
in where they belong (decayed by their age, never moving the clock back).

Public JSON (:meth:`UserProfile.view`, served by the HTTP API and Redis)
------------------------------------------------------------------------
``user_id``, ``updated_at`` (newest event time, ms), ``consent`` (bool; default True, set by
:meth:`UserProfile.set_consent`, consumers must not target users without it) and:

* ``rfm``: ``recency_s`` (seconds since the last order, null without one), ``frequency_30d``
  (orders decayed with a 30-day time constant: a steady *r* orders/day reads about 30 *r*),
  ``monetary`` (total spend: live order values plus click ``price * quantity``), ``orders``,
  ``r_score``/``f_score``/``m_score`` in 1..5 from the fixed thresholds :data:`R_SCORE_MAX_DAYS`,
  :data:`F_SCORE_MIN` and :data:`M_SCORE_MIN`.
* ``affinities``: top 5 ``categories`` and ``brands`` as ``[{"name", "score"}]``; a score adds
  the event weight (:data:`ITEM_WEIGHTS`: view/click 1, cart 3, purchase 5) and halves every
  7 days (:data:`AFFINITY_HALF_LIFE_MS`).
* ``price``: ``avg_price`` (intent-weighted, decayed mean unit price of items interacted
  with), ``band`` from it (:data:`PRICE_BANDS`: budget < 60 <= mid < 200 <= premium < 600 <=
  luxury; null before any price), ``sensitivity`` in 0..1: the decayed share of deal signals
  (items the catalog tags ``discount``/``budget``, searches and comments with deal or price
  words, :data:`DEAL_WORDS`) among price-observable interactions (items with catalog tags,
  searches, deal comments), shrunk toward 0.25 by 4 pseudo-observations.
* ``session``: the current activity session across both streams (a gap of more than 30 min
  of event time starts a new one): ``id`` (first ``session_id`` seen in it), ``started_at``,
  ``recent_items`` (last 10 distinct items, most recent first), ``events``, ``dwell_s``
  (first to latest event), ``carts``, ``purchases``, ``in_room``, ``active``.
* ``live``: ``rooms_watched`` (distinct rooms: exact up to 6; a room evicted from the recent
  list counts again when revisited), ``recent_rooms``, ``watch_time_s`` (join to leave; a
  missing leave ends the watch 300 s after the viewer's last activity in the room, the
  engine's ``LIVEPULSE_VIEWER_TIMEOUT_S`` default; activity in another room ends it too),
  ``comments``, ``likes``, ``gifts``, ``gift_value``, ``current_room``.
* ``tags`` and ``lifecycle``: rules in :meth:`UserProfile.tags` and
  :meth:`UserProfile.lifecycle`.
* ``segment`` (online segment id, null before one is assigned or without consent) and
  ``audiences`` (ids of the audiences the user is in): set by :mod:`agents.users.audiences`.

Stored form (:meth:`UserProfile.to_dict`, the table value)
----------------------------------------------------------
Short keys; zero/empty values are left out. Decayed quantities are stored as their value at
the reference time ``ref`` (forward decay: an event at ``ts`` adds ``weight * growth(ts -
ref)``; ``ref`` moves forward, decaying everything, at most once an hour of event time), so
all entries of a map compare directly and eviction drops the truly smallest. Floats are
rounded at update time (:data:`SCORE_DECIMALS`, money 2 decimals), which makes the dict
round trip exact. Times marked *age* are stored as ``t`` minus the time (ms; 0 is left out),
shorter than epoch milliseconds.

====== ===================================  ====== ====================================
key    meaning                              key    meaning
====== ===================================  ====== ====================================
v      format version                       sid    session id
u      user id                              ss/sl  session start / latest event (age)
t      newest event time (ms)               sn     events in the session
fs     first event time (age)               sc/sp  carts / purchases in the session
ref    decay reference time (age)           ri     {item: views since bought}, <= 10
n      events folded                        wr     room being watched (open watch)
cs/cst consent (only if False) / time (ms)  ws/wl  watch start / last activity (age)
o/m    orders / total spend                 wt     closed watch time (ms)
lo     last order time (age)                rm     recent distinct rooms, <= 6
of     decayed orders (30-day constant)     rn     distinct rooms watched
sx/sf  sessions / decayed sessions          cm/lk  comments / likes
cat/br {category|brand: score}, <= 12       gn/gv  gifts / gift value
pw/ps  price weight / weighted price sum    dw/de  deal signals / price evidence
src    {source: input offset}, <= 8     ids    recent event ids (hashes), <= 16
sg/sgt segment / when assigned (age)      au     audience ids the user is in
====== ===================================  ====== ====================================

Idempotency: the pipeline asks :meth:`UserProfile.is_duplicate` before folding an event in,
and skips it if

* its input position is at or below the last one folded in from the same source
  (``src``: a source is one partition of one input; the pipeline names them, see
  :meth:`UserProfile.advance`). Events of one source arrive in offset order, so this
  catches every redelivery after a crash or a rebalance, however long the outage was;
* or its ``event_id`` (the contracts' idempotency key) is among the last
  :data:`RECENT_EVENT_IDS` folded in (``ids``: :func:`event_key` hashes, 48 bits), which
  catches the same event sent twice at two positions (a producer retry).

Size: with ids of simulator length (``u123456``, ``i4321``, ``room-12``) a profile stays under
1 KiB of orjson whatever the history (every list and map is capped), plus about 140 bytes
for ``ids`` and ``src``; ids up to the contract's 128 characters could make one larger.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from streams.contracts import ClickEvent, LiveEvent

CatalogLookup = Callable[[str], Mapping[str, Any] | None]

FORMAT_VERSION = 1
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

AFFINITY_HALF_LIFE_MS = 7 * DAY_MS
FREQUENCY_TIME_CONSTANT_MS = 30 * DAY_MS
_AFFINITY_RATE = math.log(2.0) / AFFINITY_HALF_LIFE_MS
_FREQUENCY_RATE = 1.0 / FREQUENCY_TIME_CONSTANT_MS
REBASE_EVERY_MS = HOUR_MS
SESSION_GAP_MS = 30 * MINUTE_MS
WATCH_TIMEOUT_MS = 300_000

MAX_CATEGORIES = 12
MAX_BRANDS = 12
MAX_RECENT_ITEMS = 10
MAX_RECENT_ROOMS = 6
TOP_AFFINITIES = 5
SCORE_DECIMALS = 2  # stored scores and weights are rounded to this at update time
MIN_SCORE = 0.01  # decayed map entries below this are dropped
RECENT_EVENT_IDS = 16  # event-id hashes kept per profile (an event sent twice)
MAX_SOURCES = 8  # input positions kept per profile (the most recently advanced sources)
EVENT_KEY_CHARS = 8  # one event_key: 48 bits in URL-safe base64

ITEM_WEIGHTS = {"view": 1.0, "click": 1.0, "product_click": 1.0, "add_to_cart": 3.0,
                "purchase": 5.0}
DEAL_TAGS = frozenset({"discount", "budget"})
DEAL_WORDS = ("coupon", "discount", "deal", "sale", "cheap", "promo", "code", "expensive",
              "how much", "price", "优惠", "券", "便宜", "折", "贵", "多少钱", "划算", "性价比",
              "特价", "秒杀")
SENSITIVITY_PRIOR = 0.25
SENSITIVITY_PRIOR_WEIGHT = 4.0

# Score = 1 + number of thresholds passed.
R_SCORE_MAX_DAYS = (180.0, 90.0, 30.0, 7.0)  # days since the last order at most
F_SCORE_MIN = (0.25, 1.5, 3.0, 6.0)  # frequency_30d at least
M_SCORE_MIN = (1.0, 300.0, 1000.0, 3000.0)  # monetary at least
PRICE_BANDS = ((60.0, "budget"), (200.0, "mid"), (600.0, "premium"))  # else "luxury"

NEW_USER_MS = 7 * DAY_MS
DORMANT_MS = 30 * DAY_MS
AT_RISK_INACTIVE_MS = 14 * DAY_MS
AT_RISK_NO_ORDER_MS = 60 * DAY_MS
RECENT_ORDER_MS = 30 * DAY_MS
HIGH_INTENT_ITEM_INTERACTIONS = 3
BARGAIN_MIN_SENSITIVITY = 0.5
BARGAIN_MIN_EVIDENCE = 5.0
LOYAL_MIN_ORDERS = 3
LOYAL_MIN_FREQUENCY = 2.0
BIG_SPENDER_MIN_SPEND = 3000.0
GIFTER_MIN_GIFTS = 3
GIFTER_MIN_VALUE = 100.0
ENGAGED_VIEWER_MIN_WATCH_S = 1800.0
ENGAGED_VIEWER_MIN_COMMENTS = 10
ENGAGED_MIN_SESSIONS = 4.0  # decayed sessions, 30-day constant

_VIEW_KINDS = frozenset({"view", "click", "product_click"})
_LIVE_SOURCES = ("live",)
_CLICK_SOURCES = ("clicks", "click")


_URL_SAFE = bytes.maketrans(b"+/", b"-_")
# The last event id hashed and its key: the pipeline asks is_duplicate, then folds the event.
_last_key = ("", "")


def event_key(event_id: str) -> str:
    """A short, stable hash of an event id (48 bits, 8 URL-safe base64 characters).

    >>> event_key("e1"), len(event_key("x" * 128))
    ('_LMgnF0J', 8)
    """
    global _last_key
    last_id, key = _last_key
    if event_id != last_id or not key:
        digest = hashlib.blake2b(event_id.encode(), digest_size=6).digest()
        key = binascii.b2a_base64(digest, newline=False).translate(_URL_SAFE).decode()
        _last_key = (event_id, key)
    return key


def _score(value: float, thresholds: tuple[float, ...]) -> int:
    score = 1
    for threshold in thresholds:
        if value >= threshold:
            score += 1
    return score


_DEAL_WORDS = re.compile("|".join(map(re.escape, DEAL_WORDS)))


def _has_deal_words(text: str | None) -> bool:
    if not text:
        return False
    return _DEAL_WORDS.search(text.lower()) is not None


def _bump(scores: dict[str, float], key: str, amount: float, cap: int) -> None:
    """Add to a capped score map; past the cap, drop the smallest other entry.

    Dropping another entry (not the newcomer) lets a fresh interest in even when the map is
    full of old, larger scores; those decay and leave in turn.
    """
    scores[key] = round(scores.get(key, 0.0) + amount, SCORE_DECIMALS)
    if len(scores) > cap:
        smallest = min((k for k in scores if k != key), key=scores.__getitem__)
        del scores[smallest]


def _decay_map(scores: dict[str, float], factor: float) -> dict[str, float]:
    return {k: s for k, v in scores.items()
            if (s := round(v * factor, SCORE_DECIMALS)) >= MIN_SCORE}


class UserProfile:
    """One user's online profile; see the module docstring for the rules and keys.

    >>> p = UserProfile("u1")
    >>> catalog = {"i1": {"item_id": "i1", "category": "beauty", "price": 129.9,
    ...                   "brand": "Lumaki", "tags": ["discount"]}}.get
    >>> p.apply_live(LiveEvent("e1", "join", 1_000, "room-1", "u1"))
    >>> p.apply_live(LiveEvent("e2", "product_click", 2_000, "room-1", "u1", item_id="i1"),
    ...              catalog)
    >>> p.apply_click(ClickEvent("e3", "purchase", 3_000, "u1", "s1", item_id="i1",
    ...                          price=129.9, quantity=2), catalog)
    >>> p.apply_live(LiveEvent("e4", "leave", 62_000, "room-1", "u1"))
    >>> v = p.view(now_ms=62_000)
    >>> v["rfm"]["orders"], v["rfm"]["monetary"], v["affinities"]["categories"][0]["name"]
    (1, 259.8, 'beauty')
    >>> v["live"]["watch_time_s"], v["session"]["recent_items"], v["lifecycle"]
    (61.0, ['i1'], 'new')
    >>> UserProfile.from_dict(p.to_dict()).view(62_000) == v
    True
    """

    __slots__ = (
        "audiences", "brands", "categories", "comments", "consent", "consent_ts",
        "deal_evidence", "deal_weight", "events", "first_seen", "gift_value", "gifts",
        "last_order_ts", "likes", "monetary", "order_freq", "orders", "price_sum",
        "price_weight", "recent_ids", "recent_items", "ref", "rooms", "rooms_count", "segment",
        "segment_ts", "session_carts", "session_events", "session_freq", "session_id",
        "session_last", "session_purchases", "session_start", "sessions", "sources",
        "updated_at", "user_id", "watch_last", "watch_ms", "watch_room", "watch_start",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.updated_at = 0
        self.first_seen = 0
        self.ref = 0
        self.events = 0
        self.consent = True
        self.consent_ts = 0
        self.orders = 0
        self.monetary = 0.0
        self.last_order_ts = 0
        self.order_freq = 0.0
        self.sessions = 0
        self.session_freq = 0.0
        self.categories: dict[str, float] = {}
        self.brands: dict[str, float] = {}
        self.price_weight = 0.0
        self.price_sum = 0.0
        self.deal_weight = 0.0
        self.deal_evidence = 0.0
        self.session_id: str | None = None
        self.session_start = 0
        self.session_last = 0
        self.session_events = 0
        self.session_carts = 0
        self.session_purchases = 0
        self.recent_items: dict[str, int] = {}
        self.watch_room: str | None = None
        self.watch_start = 0
        self.watch_last = 0
        self.watch_ms = 0
        self.rooms: list[str] = []
        self.rooms_count = 0
        self.comments = 0
        self.likes = 0
        self.gifts = 0
        self.gift_value = 0.0
        self.recent_ids = ""  # event_key of the last RECENT_EVENT_IDS events, oldest first
        self.sources: dict[str, int] = {}  # source -> input offset of its last event here
        self.segment: int | None = None  # agents.users.audiences
        self.segment_ts = 0
        self.audiences: tuple[str, ...] = ()

    # ------------------------------------------------------------------ folding events
    def is_duplicate(self, event_id: str, source: str | None = None,
                     offset: int | None = None) -> bool:
        """True if this event is already folded in: its input ``offset`` in ``source`` is
        at or below the last one folded in from there, or its id is a recent one.

        >>> p = UserProfile("u1")
        >>> p.apply_live(LiveEvent("e1", "like", 1_000, "room-1", "u1"))
        >>> p.advance("l0", 41)
        >>> p.is_duplicate("e0", "l0", 40), p.is_duplicate("e2", "l0", 42)
        (True, False)
        >>> p.is_duplicate("e1", "l1", 7), p.is_duplicate("e2", "l1", 7)
        (True, False)
        """
        if source is not None and offset is not None and offset <= self.sources.get(source,
                                                                                     -1):
            return True
        return self.has_seen(event_id)

    def advance(self, source: str, offset: int) -> None:
        """Record that the event at ``offset`` of ``source`` is folded in."""
        sources = self.sources
        if sources and next(reversed(sources)) == source:  # already the most recent one
            if offset > sources[source]:
                sources[source] = offset
            return
        sources[source] = max(sources.pop(source, -1), offset)  # now the most recent one
        if len(sources) > MAX_SOURCES:
            del sources[next(iter(sources))]  # the least recently advanced one

    def has_seen(self, event_id: str) -> bool:
        """True if the event ``event_id`` is among the last ones folded in (a redelivery).

        >>> p = UserProfile("u1")
        >>> p.apply_live(LiveEvent("e1", "like", 1_000, "room-1", "u1"))
        >>> p.has_seen("e1"), p.has_seen("e2")
        (True, False)
        """
        key, ids = event_key(event_id), self.recent_ids
        at = ids.find(key)
        while at >= 0 and at % EVENT_KEY_CHARS:  # a match across two keys is no match
            at = ids.find(key, at + 1)
        return at >= 0

    def _remember(self, event_id: str) -> None:
        ids = self.recent_ids + event_key(event_id)
        self.recent_ids = ids[-RECENT_EVENT_IDS * EVENT_KEY_CHARS:]

    def apply(self, event: LiveEvent | ClickEvent, catalog: CatalogLookup | None = None) -> None:
        """Fold a live or click event (dispatch on its record type)."""
        if isinstance(event, LiveEvent):
            self.apply_live(event, catalog)
        else:
            self.apply_click(event, catalog)

    def apply_live(self, event: LiveEvent, catalog: CatalogLookup | None = None) -> None:
        """Fold one live-room event. ``product_pin`` is the host's act, not the viewer's."""
        kind = event.type
        if kind == "product_pin":
            return
        ts = event.ts
        self._remember(event.event_id)
        self._touch(ts)
        in_session = self._session(ts, event.session_id)
        self._watch(kind, event.room_id, ts)
        if kind == "like":
            self.likes += 1
        elif kind == "comment":
            self.comments += 1
            if _has_deal_words(event.text):
                self._deal_signal(ts, True)
        elif kind == "gift":
            self.gifts += 1
            self.gift_value = round(self.gift_value + (event.amount or 0.0), 2)
        elif kind in ITEM_WEIGHTS and event.item_id:
            item_id = event.item_id
            info = catalog(item_id) if catalog is not None else None
            unit_price = info.get("price") if info else None
            if kind == "purchase":
                quantity = event.quantity or 1
                amount = event.amount
                if amount is None:
                    amount = (unit_price or 0.0) * quantity
                if amount > 0:
                    unit_price = amount / quantity
                self._order(amount, ts, in_session)
            self._item(kind, item_id, info.get("category") if info else None,
                       info.get("brand") if info else None, unit_price,
                       info.get("tags") if info else None, ts, in_session)

    def apply_click(self, event: ClickEvent, catalog: CatalogLookup | None = None) -> None:
        """Fold one storefront click; brand and tags (and missing category/price) come from
        the catalog."""
        kind = event.type
        ts = event.ts
        self._remember(event.event_id)
        self._touch(ts)
        in_session = self._session(ts, event.session_id)
        if event.room_id is not None and event.room_id == self.watch_room \
                and ts >= self.watch_start:
            self.watch_last = max(self.watch_last, ts)  # shopping from the room = activity
        if kind == "search":
            self._deal_signal(ts, _has_deal_words(event.query))
            return
        item_id = event.item_id
        if not item_id or kind not in ITEM_WEIGHTS:
            return
        info = catalog(item_id) if catalog is not None else None
        category = event.category or (info.get("category") if info else None)
        unit_price = event.price if event.price is not None else (
            info.get("price") if info else None)
        if kind == "purchase":
            self._order((unit_price or 0.0) * (event.quantity or 1), ts, in_session)
        self._item(kind, item_id, category, info.get("brand") if info else None, unit_price,
                   info.get("tags") if info else None, ts, in_session)

    def set_consent(self, consent: bool, ts: int) -> None:
        """Record the user's consent; the newest decision (by ``ts``) wins."""
        if ts >= self.consent_ts:
            self.consent = bool(consent)
            self.consent_ts = ts

    # ------------------------------------------------------------------ internals
    def _touch(self, ts: int) -> None:
        if self.events == 0:
            self.first_seen = self.updated_at = self.ref = ts
        else:
            if ts > self.updated_at:
                self.updated_at = ts
            if ts < self.first_seen:
                self.first_seen = ts
            if ts - self.ref > REBASE_EVERY_MS:
                self._rebase(ts)
        self.events += 1
        if self.watch_room is not None and ts > self.watch_last + WATCH_TIMEOUT_MS:
            self._close_watch(self.watch_last + WATCH_TIMEOUT_MS)  # the leave never came

    def _rebase(self, ts: int) -> None:
        elapsed = ts - self.ref
        affinity = math.exp(-_AFFINITY_RATE * elapsed)
        frequency = math.exp(-_FREQUENCY_RATE * elapsed)
        self.categories = _decay_map(self.categories, affinity)
        self.brands = _decay_map(self.brands, affinity)
        self.price_weight = round(self.price_weight * affinity, SCORE_DECIMALS)
        self.price_sum = round(self.price_sum * affinity, 2)
        self.deal_weight = round(self.deal_weight * affinity, SCORE_DECIMALS)
        self.deal_evidence = round(self.deal_evidence * affinity, SCORE_DECIMALS)
        self.order_freq = round(self.order_freq * frequency, SCORE_DECIMALS)
        self.session_freq = round(self.session_freq * frequency, SCORE_DECIMALS)
        self.ref = ts

    def _session(self, ts: int, session_id: str | None) -> bool:
        """Place the event in the current session; False for a late event of an older one."""
        if self.session_events == 0 or ts > self.session_last + SESSION_GAP_MS:
            self.session_id = session_id
            self.session_start = self.session_last = ts
            self.session_events = self.session_carts = self.session_purchases = 0
            self.recent_items = {}
            self.sessions += 1
            self.session_freq = round(
                self.session_freq + math.exp(_FREQUENCY_RATE * (ts - self.ref)), SCORE_DECIMALS)
        elif ts < self.session_start - SESSION_GAP_MS:
            return False
        else:
            if ts < self.session_start:
                self.session_start = ts
            elif ts > self.session_last:
                self.session_last = ts
            if self.session_id is None:
                self.session_id = session_id
        self.session_events += 1
        return True

    def _watch(self, kind: str, room_id: str, ts: int) -> None:
        room = self.watch_room
        if room is not None:
            if ts < self.watch_start:
                return  # late event from before this watch: counters only
            if room == room_id:
                if kind == "leave":
                    self._close_watch(ts)
                elif ts > self.watch_last:
                    self.watch_last = ts
                return
            if kind == "leave":
                return  # leaving another room says nothing about this one
            self._close_watch(min(ts, self.watch_last + WATCH_TIMEOUT_MS))
        if kind == "leave" or ts < self.updated_at - WATCH_TIMEOUT_MS:
            return  # a leave opens nothing; a watch that would already be over neither
        self.watch_room = room_id
        self.watch_start = self.watch_last = ts
        rooms = self.rooms
        if room_id in rooms:
            rooms.remove(room_id)
        else:
            self.rooms_count += 1
            if len(rooms) >= MAX_RECENT_ROOMS:
                del rooms[0]
        rooms.append(room_id)

    def _close_watch(self, end_ms: int) -> None:
        self.watch_ms += max(0, end_ms - self.watch_start)
        self.watch_room = None
        self.watch_start = self.watch_last = 0

    def _order(self, amount: float, ts: int, in_session: bool) -> None:
        self.orders += 1
        self.monetary = round(self.monetary + amount, 2)
        if ts > self.last_order_ts:
            self.last_order_ts = ts
        self.order_freq = round(self.order_freq + math.exp(_FREQUENCY_RATE * (ts - self.ref)),
                                SCORE_DECIMALS)
        if in_session:
            self.session_purchases += 1

    def _item(self, kind: str, item_id: str, category: str | None, brand: str | None,
              unit_price: float | None, tags: Any, ts: int, in_session: bool) -> None:
        growth = math.exp(_AFFINITY_RATE * (ts - self.ref))
        weight = ITEM_WEIGHTS[kind] * growth
        if category:
            _bump(self.categories, category, weight, MAX_CATEGORIES)
        if brand:
            _bump(self.brands, brand, weight, MAX_BRANDS)
        if unit_price is not None and unit_price > 0:
            self.price_weight = round(self.price_weight + weight, SCORE_DECIMALS)
            self.price_sum = round(self.price_sum + weight * unit_price, 2)
        if tags is not None:
            is_deal = not DEAL_TAGS.isdisjoint(tags)
            self.deal_evidence = round(self.deal_evidence + growth, SCORE_DECIMALS)
            if is_deal:
                self.deal_weight = round(self.deal_weight + growth, SCORE_DECIMALS)
        if in_session:
            if kind == "add_to_cart":
                self.session_carts += 1
            recent = self.recent_items
            views = recent.pop(item_id, 0)
            if kind in _VIEW_KINDS:
                views += 1
            elif kind == "purchase":
                views = 0  # bought: the looking is over
            recent[item_id] = views  # re-inserted: now the most recent
            if len(recent) > MAX_RECENT_ITEMS:
                del recent[next(iter(recent))]

    def _deal_signal(self, ts: int, is_deal: bool) -> None:
        growth = math.exp(_AFFINITY_RATE * (ts - self.ref))
        self.deal_evidence = round(self.deal_evidence + growth, SCORE_DECIMALS)
        if is_deal:
            self.deal_weight = round(self.deal_weight + growth, SCORE_DECIMALS)

    # ------------------------------------------------------------------ derived values
    def _affinity_factor(self, now_ms: int) -> float:
        return math.exp(-_AFFINITY_RATE * max(0, now_ms - self.ref))

    def _frequency_factor(self, now_ms: int) -> float:
        return math.exp(-_FREQUENCY_RATE * max(0, now_ms - self.ref))

    def frequency_30d(self, now_ms: int) -> float:
        """Orders decayed with a 30-day time constant, at ``now_ms``."""
        return self.order_freq * self._frequency_factor(now_ms)

    def sensitivity(self, now_ms: int) -> float:
        """Price sensitivity in [0, 1]: decayed deal share, shrunk toward the prior."""
        return self._sensitivity(self._affinity_factor(now_ms))

    def _sensitivity(self, factor: float) -> float:
        return (self.deal_weight * factor + SENSITIVITY_PRIOR * SENSITIVITY_PRIOR_WEIGHT) / (
            self.deal_evidence * factor + SENSITIVITY_PRIOR_WEIGHT)

    def watch_time_ms(self, now_ms: int) -> int:
        """Closed watches plus the open one up to ``now_ms`` (at most its timeout)."""
        total = self.watch_ms
        if self.watch_room is not None:
            end = min(now_ms, self.watch_last + WATCH_TIMEOUT_MS)
            total += max(0, end - self.watch_start)
        return total

    def current_room(self, now_ms: int) -> str | None:
        """Room being watched at ``now_ms``: open and active within the watch timeout."""
        if self.watch_room is not None and now_ms <= self.watch_last + WATCH_TIMEOUT_MS:
            return self.watch_room
        return None

    def _item_intent(self) -> int:
        return max(self.recent_items.values(), default=0)

    def _session_active(self, now_ms: int) -> bool:
        return self.session_events > 0 and now_ms <= self.session_last + SESSION_GAP_MS

    def tags(self, now_ms: int) -> list[str]:
        """Rule-based tags at ``now_ms`` (thresholds are the module constants).

        * ``new``: first seen less than 7 days ago.
        * ``high_intent``: in an active session, more carts than purchases, or 3+
          views/clicks of one item not bought since.
        * ``bargain_hunter``: sensitivity >= 0.5 on >= 5 decayed price observations.
        * ``loyal_buyer``: >= 3 orders and frequency_30d >= 2.
        * ``dormant``: no event for 30 days.
        * ``big_spender``: total spend >= 3000.
        * ``gifter``: >= 3 gifts or gift value >= 100.
        * ``engaged_viewer``: >= 30 min watched or >= 10 comments.
        """
        return self._tags(now_ms, self._affinity_factor(now_ms), self.frequency_30d(now_ms),
                          self.watch_time_ms(now_ms))

    def _tags(self, now_ms: int, affinity: float, frequency: float,
              watch_ms: int) -> list[str]:
        """:meth:`tags` given the affinity decay factor, frequency_30d and the watch time
        at ``now_ms`` (computed once per :meth:`view`)."""
        out: list[str] = []
        if now_ms - self.first_seen < NEW_USER_MS:
            out.append("new")
        if self._session_active(now_ms) and (
                self.session_carts > self.session_purchases
                or self._item_intent() >= HIGH_INTENT_ITEM_INTERACTIONS):
            out.append("high_intent")
        if (self.deal_evidence * affinity >= BARGAIN_MIN_EVIDENCE
                and self._sensitivity(affinity) >= BARGAIN_MIN_SENSITIVITY):
            out.append("bargain_hunter")
        if self.orders >= LOYAL_MIN_ORDERS and frequency >= LOYAL_MIN_FREQUENCY:
            out.append("loyal_buyer")
        if now_ms - self.updated_at >= DORMANT_MS:
            out.append("dormant")
        if self.monetary >= BIG_SPENDER_MIN_SPEND:
            out.append("big_spender")
        if self.gifts >= GIFTER_MIN_GIFTS or self.gift_value >= GIFTER_MIN_VALUE:
            out.append("gifter")
        if (watch_ms >= ENGAGED_VIEWER_MIN_WATCH_S * 1000
                or self.comments >= ENGAGED_VIEWER_MIN_COMMENTS):
            out.append("engaged_viewer")
        return out

    def _is_loyal(self, now_ms: int) -> bool:
        return (self.orders >= LOYAL_MIN_ORDERS
                and self.frequency_30d(now_ms) >= LOYAL_MIN_FREQUENCY)

    def _is_engaged_viewer(self, now_ms: int) -> bool:
        return (self.watch_time_ms(now_ms) >= ENGAGED_VIEWER_MIN_WATCH_S * 1000
                or self.comments >= ENGAGED_VIEWER_MIN_COMMENTS)

    def lifecycle(self, now_ms: int) -> str:
        """Lifecycle stage at ``now_ms``; the first rule that holds wins.

        1. ``dormant``: no event for 30 days.
        2. ``at_risk``: no event for 14 days, or a buyer without an order for 60 days.
        3. ``new``: first seen less than 7 days ago.
        4. ``loyal``: the ``loyal_buyer`` rule.
        5. ``engaged``: >= 4 decayed sessions (30-day constant), an order in the last 30
           days, or the ``engaged_viewer`` rule.
        6. ``active``: otherwise.
        """
        return self._lifecycle(now_ms, self._frequency_factor(now_ms),
                               self.watch_time_ms(now_ms))

    def _lifecycle(self, now_ms: int, frequency_factor: float, watch_ms: int) -> str:
        """:meth:`lifecycle` given the 30-day decay factor and the watch time at ``now_ms``."""
        idle = now_ms - self.updated_at
        if idle >= DORMANT_MS:
            return "dormant"
        if idle >= AT_RISK_INACTIVE_MS or (
                self.orders and now_ms - self.last_order_ts >= AT_RISK_NO_ORDER_MS):
            return "at_risk"
        if now_ms - self.first_seen < NEW_USER_MS:
            return "new"
        if (self.orders >= LOYAL_MIN_ORDERS
                and self.order_freq * frequency_factor >= LOYAL_MIN_FREQUENCY):
            return "loyal"
        if (self.session_freq * frequency_factor >= ENGAGED_MIN_SESSIONS
                or (self.orders and now_ms - self.last_order_ts < RECENT_ORDER_MS)
                or watch_ms >= ENGAGED_VIEWER_MIN_WATCH_S * 1000
                or self.comments >= ENGAGED_VIEWER_MIN_COMMENTS):
            return "engaged"
        return "active"

    def view(self, now_ms: int) -> dict[str, Any]:
        """The public JSON of the profile at ``now_ms`` (documented in the module)."""
        # every decay factor and derived figure once (tags and lifecycle share them)
        affinity = self._affinity_factor(now_ms)
        frequency_factor = self._frequency_factor(now_ms)
        frequency = self.order_freq * frequency_factor
        watch_ms = self.watch_time_ms(now_ms)
        r_score = 1
        recency_s = None
        if self.orders:
            recency_s = max(0, now_ms - self.last_order_ts) / 1000.0
            recency_days = recency_s / 86_400.0
            for days in R_SCORE_MAX_DAYS:
                if recency_days <= days:
                    r_score += 1
        avg_price = band = None
        if self.price_weight > 0:
            avg_price = self.price_sum / self.price_weight
            band = "luxury"
            for limit, name in PRICE_BANDS:
                if avg_price < limit:
                    band = name
                    break
        room = self.current_room(now_ms)
        return {
            "user_id": self.user_id,
            "updated_at": self.updated_at,
            "events": self.events,
            "consent": self.consent,
            "rfm": {
                "recency_s": recency_s,
                "frequency_30d": round(frequency, 3),
                "monetary": self.monetary,
                "orders": self.orders,
                "r_score": r_score,
                "f_score": _score(frequency, F_SCORE_MIN),
                "m_score": _score(self.monetary, M_SCORE_MIN),
            },
            "affinities": {
                "categories": _top(self.categories, affinity),
                "brands": _top(self.brands, affinity),
            },
            "price": {
                "band": band,
                "avg_price": round(avg_price, 2) if avg_price is not None else None,
                "sensitivity": round(self._sensitivity(affinity), 3),
            },
            "session": {
                "id": self.session_id,
                "started_at": self.session_start if self.session_events else None,
                "recent_items": list(reversed(self.recent_items)),
                "events": self.session_events,
                "dwell_s": (self.session_last - self.session_start) / 1000.0,
                "carts": self.session_carts,
                "purchases": self.session_purchases,
                "in_room": room is not None,
                "active": self._session_active(now_ms),
            },
            "live": {
                "rooms_watched": self.rooms_count,
                "recent_rooms": list(reversed(self.rooms)),
                "watch_time_s": watch_ms / 1000.0,
                "comments": self.comments,
                "likes": self.likes,
                "gifts": self.gifts,
                "gift_value": self.gift_value,
                "current_room": room,
            },
            "tags": self._tags(now_ms, affinity, frequency, watch_ms),
            "lifecycle": self._lifecycle(now_ms, frequency_factor, watch_ms),
            "segment": self.segment,
            "audiences": list(self.audiences),
        }

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Compact, JSON-ready stored form (keys in the module docstring; zeros left out)."""
        # Spelled out field by field: this runs once per event on the table path.
        t = self.updated_at
        out: dict[str, Any] = {"v": FORMAT_VERSION, "u": self.user_id, "t": t,
                               "n": self.events}
        if t != self.first_seen:
            out["fs"] = t - self.first_seen  # ages: shorter than epoch times
        if t != self.ref:
            out["ref"] = t - self.ref
        if not self.consent:
            out["cs"] = False
        if self.consent_ts:
            out["cst"] = self.consent_ts
        if self.orders:
            out["o"] = self.orders
            out["m"] = self.monetary
            if t != self.last_order_ts:
                out["lo"] = t - self.last_order_ts
        if self.order_freq:
            out["of"] = self.order_freq
        if self.sessions:
            out["sx"] = self.sessions
        if self.session_freq:
            out["sf"] = self.session_freq
        if self.categories:
            out["cat"] = self.categories
        if self.brands:
            out["br"] = self.brands
        if self.price_weight:
            out["pw"] = self.price_weight
        if self.price_sum:
            out["ps"] = self.price_sum
        if self.deal_weight:
            out["dw"] = self.deal_weight
        if self.deal_evidence:
            out["de"] = self.deal_evidence
        if self.session_events:
            if self.session_id is not None:
                out["sid"] = self.session_id
            if t != self.session_start:
                out["ss"] = t - self.session_start
            if t != self.session_last:
                out["sl"] = t - self.session_last
            out["sn"] = self.session_events
            if self.session_carts:
                out["sc"] = self.session_carts
            if self.session_purchases:
                out["sp"] = self.session_purchases
            if self.recent_items:
                out["ri"] = self.recent_items
        if self.watch_room is not None:
            out["wr"] = self.watch_room
            if t != self.watch_start:
                out["ws"] = t - self.watch_start
            if t != self.watch_last:
                out["wl"] = t - self.watch_last
        if self.watch_ms:
            out["wt"] = self.watch_ms
        if self.rooms:
            out["rm"] = self.rooms
            out["rn"] = self.rooms_count
        if self.comments:
            out["cm"] = self.comments
        if self.likes:
            out["lk"] = self.likes
        if self.gifts:
            out["gn"] = self.gifts
            out["gv"] = self.gift_value
        if self.recent_ids:
            out["ids"] = self.recent_ids
        if self.sources:
            out["src"] = self.sources
        if self.segment is not None:
            out["sg"] = self.segment
            out["sgt"] = t - self.segment_ts
        if self.audiences:
            out["au"] = list(self.audiences)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UserProfile:
        """Rebuild a profile from :meth:`to_dict` output (missing keys are zero/empty)."""
        get = data.get
        version = get("v", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"profile format {version} is newer than {FORMAT_VERSION}")
        p = cls.__new__(cls)  # every slot is set below: skips __init__'s defaults
        p.user_id = data["u"]
        t = p.updated_at = get("t", 0)
        p.events = get("n", 0)
        p.first_seen = t - get("fs", 0)
        p.ref = t - get("ref", 0)
        p.consent = get("cs", True)
        p.consent_ts = get("cst", 0)
        p.orders = orders = get("o", 0)
        p.monetary = get("m", 0.0)
        p.last_order_ts = t - get("lo", 0) if orders else 0
        p.order_freq = get("of", 0.0)
        p.sessions = get("sx", 0)
        p.session_freq = get("sf", 0.0)
        p.categories = dict(get("cat", ()))
        p.brands = dict(get("br", ()))
        p.price_weight = get("pw", 0.0)
        p.price_sum = get("ps", 0.0)
        p.deal_weight = get("dw", 0.0)
        p.deal_evidence = get("de", 0.0)
        p.session_id = get("sid")
        p.session_events = session_events = get("sn", 0)
        p.session_start = t - get("ss", 0) if session_events else 0
        p.session_last = t - get("sl", 0) if session_events else 0
        p.session_carts = get("sc", 0)
        p.session_purchases = get("sp", 0)
        p.recent_items = dict(get("ri", ()))
        p.watch_room = watch_room = get("wr")
        p.watch_start = t - get("ws", 0) if watch_room is not None else 0
        p.watch_last = t - get("wl", 0) if watch_room is not None else 0
        p.watch_ms = get("wt", 0)
        p.rooms = list(get("rm", ()))
        p.rooms_count = get("rn", 0)
        p.comments = get("cm", 0)
        p.likes = get("lk", 0)
        p.gifts = get("gn", 0)
        p.gift_value = get("gv", 0.0)
        p.recent_ids = get("ids", "")
        p.sources = dict(get("src", ()))
        p.segment = segment = get("sg")
        p.segment_ts = t - get("sgt", 0) if segment is not None else 0
        p.audiences = tuple(get("au", ()))
        return p


def _top(scores: Mapping[str, float], factor: float) -> list[dict[str, Any]]:
    if not scores:
        return []
    best = sorted([(-score, name) for name, score in scores.items()])[:TOP_AFFINITIES]
    return [{"name": name, "score": round(-negated * factor, 3)} for negated, name in best]


def fold_profile(profile: Mapping[str, Any] | None, user_id: str, source: str,
                 record: LiveEvent | ClickEvent,
                 catalog: CatalogLookup | None = None) -> dict[str, Any]:
    """Load a stored profile (or start one), fold ``record`` in, return the stored form.

    ``source`` is ``"live"`` or ``"clicks"`` (the user pipeline's names).

    >>> d = fold_profile(None, "u1", "clicks",
    ...                  ClickEvent("e1", "view", 5_000, "u1", "s1", item_id="i9",
    ...                             category="books", price=45.0))
    >>> d["n"], d["cat"], UserProfile.from_dict(d).view(5_000)["price"]["band"]
    (1, {'books': 1.0}, 'budget')
    """
    p = UserProfile.from_dict(profile) if profile else UserProfile(user_id)
    if source in _LIVE_SOURCES:
        p.apply_live(record, catalog)  # type: ignore[arg-type]
    elif source in _CLICK_SOURCES:
        p.apply_click(record, catalog)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown source {source!r}; expected 'live' or 'clicks'")
    return p.to_dict()
