"""Event contracts: defined once here, validated at ingest, exported as JSON Schema.

A contract is a list of :class:`FieldSpec` plus, for typed events, the extra fields each
event ``type`` requires. The same specs drive :func:`validate` (runtime, at ingest) and
:func:`json_schema` (the files under ``streams/schemas/`` that producers and ad systems use).

>>> rec = validate(LIVE_EVENT, {"event_id": "e1", "type": "like", "ts": 1_700_000_000_000,
...                             "room_id": "r1", "user_id": "u1"})
>>> rec.type, rec.room_id
('like', 'r1')
>>> validate(LIVE_EVENT, {"event_id": "e2", "type": "purchase", "ts": 1, "room_id": "r1",
...                       "user_id": "u1", "item_id": "i1", "amount": -3})
Traceback (most recent call last):
...
streams.contracts.ContractError: out_of_range: amount must be >= 0, got -3
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
SUPPORTED_INPUT_VERSIONS = (1,)

STRING, INTEGER, NUMBER, BOOLEAN, STRING_LIST, OBJECT_LIST, OBJECT = (
    "string", "integer", "number", "boolean", "string_list", "object_list", "object",
)
NUMBER_MAP = "number_map"  # an object whose values are all numbers (e.g. model scores)
# Numbers beyond +-2**53 are refused: not exactly representable in a double (RFC 8259
# interoperability), and sums of such values overflow to inf, which JSON cannot carry.
MAX_NUMBER = 2**53 - 1
# Counts and versions stored as UInt32 in the ClickHouse history (agents/sinks/clickhouse_schema):
# a larger one made every insert of its batch fail, and the sink retry it for ever.
MAX_UINT32 = 2**32 - 1


class ContractError(ValueError):
    """An event breaks its contract. ``error_class`` is a short, stable machine name."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: str
    description: str
    required: bool = False
    minimum: float | None = None
    max_length: int | None = None
    enum: tuple[str, ...] | None = None
    items: tuple[FieldSpec, ...] | None = None  # fields of OBJECT / OBJECT_LIST elements
    max_items: int | None = None
    nullable: bool = False  # JSON null is a value (output contracts: "not yet known")
    maximum: float | None = None  # default MAX_NUMBER for numbers


@dataclass(frozen=True, slots=True)
class Contract:
    name: str
    title: str
    description: str
    fields: tuple[FieldSpec, ...]
    record: type
    required_by_type: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    version: int = SCHEMA_VERSION


def _f(name: str, kind: str, description: str, **kw: Any) -> FieldSpec:
    return FieldSpec(name, kind, description, **kw)


ID_LEN = 128
_VERSION_IN = _f("schema_version", INTEGER, "Contract version; absent means the current one.",
                 minimum=1)
_VERSION_OUT = _f("schema_version", INTEGER, "Contract version.", required=True, minimum=1)
_EVENT_ID = _f("event_id", STRING, "Producer-assigned unique id (idempotency key).",
               required=True, max_length=ID_LEN)
_TS = _f("ts", INTEGER, "Event time, epoch milliseconds. Rejected when too far in the future "
         "(LIVEPULSE_MAX_FUTURE_SKEW_S) or past (LIVEPULSE_MAX_EVENT_AGE_S).",
         required=True, minimum=0)


# ------------------------------------------------------------------ records (typed events)
@dataclass(slots=True)
class LiveEvent:
    event_id: str
    type: str
    ts: int
    room_id: str
    user_id: str
    host_id: str | None = None
    item_id: str | None = None
    amount: float | None = None
    quantity: int | None = None
    text: str | None = None
    session_id: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class ClickEvent:
    event_id: str
    type: str
    ts: int
    user_id: str
    session_id: str
    item_id: str | None = None
    category: str | None = None
    price: float | None = None
    quantity: int | None = None
    query: str | None = None
    room_id: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class CatalogItem:
    item_id: str
    ts: int
    category: str
    price: float
    in_stock: bool
    brand: str | None = None
    title: str | None = None
    tags: list[str] | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class RoomInsight:
    room_id: str
    ts: int
    viewers: int
    unique_viewers: int
    peak_viewers: int
    events_total: int
    comments_per_min: float
    likes_per_min: float
    gifts_per_min: float
    shares_per_min: float
    product_clicks: int
    add_to_carts: int
    orders: int
    gmv: float
    gmv_per_min: float
    orders_per_min: float
    last_event_ts: int
    live: bool
    audience: dict[str, Any]
    engagement: dict[str, Any]
    mood: dict[str, Any]
    commerce: dict[str, Any]
    windows: dict[str, Any]
    suggestions: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    questions: dict[str, Any]
    host_id: str | None = None
    portrait: dict[str, Any] | None = None  # agents.rooms.portrait
    # pin next (agents.rooms.pin_next): set by the room pipeline when it emits
    pin_next: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class Recommendation:
    user_id: str
    ts: int
    request_id: str
    model_version: str
    items: list[dict[str, Any]]
    room_id: str | None = None
    personalized: bool = True
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class PromoTrigger:
    idempotency_key: str
    campaign_id: str
    campaign_version: int
    user_id: str
    action: str
    offer: dict[str, Any]
    reasons: list[str]
    scores: dict[str, float]
    event_ts: int
    source: dict[str, Any]
    ts: int
    expires_at: int
    room_id: str | None = None
    item_id: str | None = None
    variant: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class CampaignRecord:
    id: str
    version: int
    on: list[str]
    action: str
    enabled: bool | None = None
    name: str | None = None
    description: str | None = None
    when: list[dict[str, Any]] | None = None
    offer: dict[str, Any] | None = None
    offer_ttl: str | None = None
    cost_per_trigger: float | None = None
    budget: float | None = None
    caps: list[dict[str, Any]] | None = None
    quiet_hours: dict[str, Any] | None = None
    holdout: float | None = None
    attribution_window: str | None = None
    starts_at: str | None = None
    expires_at: str | None = None
    variants: list[dict[str, Any]] | None = None
    mode: str | None = None
    objective: str | None = None
    bandit: dict[str, Any] | None = None
    allow_personalised_pricing: bool | None = None
    justification: str | None = None
    baseline_window: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class ConsentEvent:
    user_id: str
    consent: bool
    ts: int
    source: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class ErasureRequest:
    user_id: str
    ts: int
    request_id: str | None = None
    source: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class Attribution:
    record_id: str
    kind: str
    group: str
    campaign_id: str
    campaign_version: int
    user_id: str
    trigger_key: str
    trigger_ts: int
    ts: int
    cost: float
    room_id: str | None = None
    value: float | None = None
    purchase_event_id: str | None = None
    purchase_ts: int | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class AdFeedback:
    type: str
    idempotency_key: str
    campaign_id: str
    user_id: str
    channel: str
    ts: int
    variant: str = "default"
    order_id: str | None = None
    value: float | None = None
    currency: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class AudienceRecord:
    id: str
    version: int
    when: list[dict[str, Any]]
    enabled: bool | None = None
    name: str | None = None
    description: str | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class AudienceChange:
    change_id: str
    type: str
    audience_id: str
    audience_version: int
    user_id: str
    ts: int
    reason: str
    segment: int | None = None
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class Anomaly:
    anomaly_id: str
    status: str
    scope: str
    scope_id: str
    metric: str
    observed: float
    expected_low: float
    expected_high: float
    score: float
    severity: str
    explanation: str
    first_seen: int
    last_seen: int
    ts: int
    schema_version: int = SCHEMA_VERSION


@dataclass(slots=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    error_class: str
    reason: str
    received_at: int
    payload: str
    payload_encoding: str
    payload_bytes: int
    schema_version: int = SCHEMA_VERSION


# ------------------------------------------------------------------ contracts
LIVE_EVENT = Contract(
    name="live-event",
    title="Live-room event",
    description="One action in a live-commerce room. Topic <prefix>.live-events, key room_id.",
    record=LiveEvent,
    fields=(
        _VERSION_IN, _EVENT_ID,
        _f("type", STRING, "What happened.", required=True),
        _TS,
        _f("room_id", STRING, "Live room id (message key).", required=True, max_length=ID_LEN),
        _f("user_id", STRING, "Acting user (for product_pin: the host).",
           required=True, max_length=ID_LEN),
        _f("host_id", STRING, "Host of the room.", max_length=ID_LEN),
        _f("item_id", STRING, "Product concerned.", max_length=ID_LEN),
        _f("amount", NUMBER, "Money: gift value or order value (purchase), >= 0.", minimum=0),
        _f("quantity", INTEGER, "Units in a cart or order, 1 .. 2^32 - 1.", minimum=1,
           maximum=MAX_UINT32),
        _f("text", STRING, "Comment text (any language, UTF-8).", max_length=2000),
        _f("session_id", STRING, "Viewer's watch session.", max_length=ID_LEN),
    ),
    required_by_type={
        "join": (), "leave": (), "like": (), "share": (), "follow": (),
        "comment": ("text",),
        "gift": ("amount",),
        "product_pin": ("item_id",),
        "product_click": ("item_id",),
        "add_to_cart": ("item_id",),
        "purchase": ("item_id", "amount"),
    },
)

CLICK_EVENT = Contract(
    name="click-event",
    title="Clickstream event",
    description="A shopper's click on the storefront. Topic <prefix>.clicks, key user_id.",
    record=ClickEvent,
    fields=(
        _VERSION_IN, _EVENT_ID,
        _f("type", STRING, "What happened.", required=True),
        _TS,
        _f("user_id", STRING, "Shopper (message key).", required=True, max_length=ID_LEN),
        _f("session_id", STRING, "Browsing session.", required=True, max_length=ID_LEN),
        _f("item_id", STRING, "Product concerned.", max_length=ID_LEN),
        _f("category", STRING, "Product category.", max_length=ID_LEN),
        _f("price", NUMBER, "Unit price, >= 0.", minimum=0),
        _f("quantity", INTEGER, "Units, 1 .. 2^32 - 1.", minimum=1, maximum=MAX_UINT32),
        _f("query", STRING, "Search text.", max_length=500),
        _f("room_id", STRING, "Live room the click came from, if any.", max_length=ID_LEN),
    ),
    required_by_type={
        "view": ("item_id",), "click": ("item_id",), "add_to_cart": ("item_id",),
        "purchase": ("item_id", "price"), "search": ("query",),
    },
)

CATALOG_ITEM = Contract(
    name="catalog-item",
    title="Catalog item",
    description="Latest state of a product. Compacted topic <prefix>.catalog, key item_id.",
    record=CatalogItem,
    fields=(
        _VERSION_IN,
        _f("item_id", STRING, "Product id (message key).", required=True, max_length=ID_LEN),
        _TS,
        _f("category", STRING, "Category.", required=True, max_length=ID_LEN),
        _f("price", NUMBER, "Price, >= 0.", required=True, minimum=0),
        _f("in_stock", BOOLEAN, "Whether it can be bought now.", required=True),
        _f("brand", STRING, "Brand.", max_length=ID_LEN),
        _f("title", STRING, "Display title.", max_length=500),
        _f("tags", STRING_LIST, "Free tags.", max_items=50, max_length=64),
    ),
)

_NN = {"minimum": 0}


def _counts(*names: str, description: str = "") -> tuple[FieldSpec, ...]:
    return tuple(_f(n, NUMBER, f"{n.replace('_', ' ').capitalize()}{description}.",
                    required=True, **_NN) for n in names)


_AUDIENCE = (
    *_counts("viewers", "unique_viewers", "peak_viewers", "new_viewers", "returning_viewers"),
    _f("unique_method", STRING, "How distinct viewers are counted: 'hyperloglog' (p=10, "
       "about 3 % standard error).", required=True),
    _f("avg_watch_s", NUMBER, "Mean watch time of the last 512 finished sessions.",
       required=True, **_NN),
    _f("median_watch_s", NUMBER, "Median of the same.", required=True, **_NN),
    _f("retention", OBJECT, "Share of viewers who joined at least 1/5/15 min ago and stayed "
       "that long.", required=True, items=_counts("1m", "5m", "15m")),
)
_TOP_VIEWER = (
    _f("user_id", STRING, "Viewer.", required=True),
    *_counts("score", "comments", "likes", "gifts"),
)
_ENGAGEMENT = (
    *_counts("comments_per_viewer_min", "likes_per_viewer_min", "shares_per_viewer_min",
             "gifts_per_viewer_min", "gift_value_per_min"),
    _f("top_viewers", OBJECT_LIST, "Most engaged viewers (weighted comments, likes, shares, "
       "gifts).", required=True, items=_TOP_VIEWER, max_items=5),
)
_KEYWORD = (_f("word", STRING, "Keyword.", required=True), *_counts("count"))
_MOOD = (
    _f("sentiment", NUMBER, "Mean comment sentiment in [-1, 1].", required=True),
    *_counts("positive_share", "negative_share", "comments", "window_s"),
    _f("keywords", OBJECT_LIST, "Top recent keywords.", required=True, items=_KEYWORD,
       max_items=10),
)
_FUNNEL = _counts("product_clicks", "add_to_carts", "purchases", "click_to_cart",
                  "cart_to_purchase", "click_to_purchase")
_ITEM_ROW = (_f("item_id", STRING, "Product.", required=True),
             *_counts("clicks", "carts", "purchases", "gmv"))
_PINNED = (
    _f("item_id", STRING, "Pinned product.", required=True),
    _f("pinned_at", INTEGER, "Event time of the pin, epoch ms.", required=True, **_NN),
    *_counts("clicks", "carts", "purchases", "gmv", "click_to_purchase",
             description=" since the pin"),
)
_COMMERCE = (
    _f("funnel", OBJECT, "Product click -> add-to-cart -> purchase, since the room started.",
       required=True, items=_FUNNEL),
    *_counts("gmv", "gmv_per_min", "orders_per_min"),
    _f("top_items", OBJECT_LIST, "Items with the most purchases, carts and clicks.",
       required=True, items=_ITEM_ROW, max_items=5),
    _f("pinned", OBJECT, "The item the host pinned last and its uptake, or null.",
       required=True, items=_PINNED, nullable=True),
)
_WINDOW = (
    _f("start", INTEGER, "Window start (inclusive), event time ms.", required=True, **_NN),
    _f("end", INTEGER, "Window end (exclusive), event time ms.", required=True, **_NN),
    *_counts("joins", "leaves", "comments", "likes", "shares", "gifts", "product_clicks",
             "add_to_carts", "orders", "gmv"),
)
_WINDOWS = (
    _f("grace_s", NUMBER, "A window closes this long after its end (event time).",
       required=True, **_NN),
    _f("late_events", INTEGER, "Events that arrived after their window closed (kept in the "
       "totals, not in the windows).", required=True, **_NN),
    _f("current_1m", OBJECT, "The open minute.", required=True, items=_WINDOW),
    _f("tumbling_1m", OBJECT, "Last closed minute (null until one closed).", required=True,
       items=_WINDOW, nullable=True),
    _f("hopping_5m", OBJECT, "Last 5 closed minutes (hop: 1 min).", required=True,
       items=_WINDOW, nullable=True),
    _f("hopping_1h", OBJECT, "Last 60 closed minutes (hop: 1 min).", required=True,
       items=_WINDOW, nullable=True),
)
_SUGGESTION = (
    _f("code", STRING, "Stable machine name of the rule.", required=True),
    _f("severity", STRING, "How soon to act.", required=True, enum=("info", "warn", "urgent")),
    _f("en", STRING, "Text in English.", required=True),
    _f("zh", STRING, "Text in Chinese.", required=True),
    _f("item_id", STRING, "Product concerned."),
)
_ALERT = (
    _f("metric", STRING, "Metric.", required=True),
    _f("severity", STRING, "Severity.", required=True),
    _f("explanation", STRING, "Human explanation.", required=True),
    _f("ts", INTEGER, "Epoch ms.", required=True, **_NN),
)
_QUESTION_GROUP = (
    _f("topic", STRING, "What the questions are about.", required=True,
       enum=("price", "size", "shipping", "stock", "variant", "material", "discount", "other")),
    _f("count", INTEGER, "Unanswered questions on the topic.", required=True, minimum=1),
    _f("first_seen", INTEGER, "Event time of the first of them, epoch ms.", required=True, **_NN),
    _f("last_seen", INTEGER, "Event time of the last of them, epoch ms.", required=True, **_NN),
    _f("examples", STRING_LIST, "The last (at most 2) distinct texts asked, redacted "
       "(e-mail, phone, link, @mention replaced).", required=True, max_items=2,
       max_length=140),
)
_QUESTIONS = (
    *_counts("asked", "answered", "open"),
    _f("stale_after_s", NUMBER, "A topic with no new question for this long (event time) "
       "leaves the list.", required=True, **_NN),
    _f("unanswered", OBJECT_LIST, "Topics with the most unanswered questions, most first. A "
       "question is answered by a later host comment on its topic, or, for price, stock, "
       "variant and size, by a later product pin.", required=True, items=_QUESTION_GROUP,
       max_items=5),
)
# Audience portrait (agents.rooms.portrait): who the present viewers are.
_PORTRAIT_ROW = (
    _f("key", STRING, "Lifecycle stage, tag, category, brand or price band.", required=True),
    _f("count", INTEGER, "Present viewers with it.", required=True, minimum=1),
    _f("share", NUMBER, "Of the profiled present viewers.", required=True, **_NN),
)
_PORTRAIT_NEXT = (
    _f("room_id", STRING, "Room joined next.", required=True),
    _f("count", INTEGER, "Leavers who joined it within 5 min.", required=True, minimum=1),
    _f("share", NUMBER, "Of the leavers followed to another room.", required=True, **_NN),
)
_PORTRAIT = (
    _f("profiled", INTEGER, "Present viewers whose profile summary arrived (the rows below "
       "count these).", required=True, **_NN),
    _f("segments", OBJECT, "Segment mix of the present viewers.", required=True, items=(
        _f("lifecycle", OBJECT_LIST, "Lifecycle stages, most first.", required=True,
           items=_PORTRAIT_ROW, max_items=6),
        _f("tags", OBJECT_LIST, "Profile tags, most first.", required=True,
           items=_PORTRAIT_ROW, max_items=5))),
    _f("intent", OBJECT, "Present viewers per purchase-intent bucket (propensity >= 0.3 "
       "high, >= 0.1 medium, else low; unknown: not scored or not profiled yet).",
       required=True, items=_counts("high", "medium", "low", "unknown")),
    _f("new_vs_returning", OBJECT, "Present viewers first here vs seen here before.",
       required=True, items=_counts("new", "returning")),
    _f("top_categories", OBJECT_LIST, "Top category affinity of present viewers.",
       required=True, items=_PORTRAIT_ROW, max_items=5),
    _f("top_brands", OBJECT_LIST, "Top brand affinity of present viewers.", required=True,
       items=_PORTRAIT_ROW, max_items=5),
    _f("price_bands", OBJECT_LIST, "Price bands of present viewers.", required=True,
       items=_PORTRAIT_ROW, max_items=4),
    _f("viewer_to_buyer", OBJECT, "Distinct buyers over distinct viewers since the start "
       "(both HyperLogLog).", required=True,
       items=(*_counts("buyers", "viewers"), _f("rate", NUMBER, "buyers / viewers.",
                                                 required=True, **_NN))),
    _f("follows", OBJECT, "Follows per minute (event time).", required=True, items=(
        *_counts("per_min", "prev_min"),
        _f("by_minute", OBJECT_LIST, "The last 10 minutes, oldest first.", required=True,
           max_items=10, items=_counts("minute", "follows")))),
    _f("next_rooms", OBJECT_LIST, "Where leaving viewers went: rooms joined within 5 min of "
       "leaving, top 3.", required=True, items=_PORTRAIT_NEXT, max_items=3),
)
_PIN_NEXT = (
    _f("item_id", STRING, "Product to pin.", required=True),
    _f("title", STRING, "Catalog title.", nullable=True),
    _f("category", STRING, "Catalog category.", required=True),
    _f("brand", STRING, "Catalog brand.", nullable=True),
    _f("price", NUMBER, "Catalog price.", required=True, **_NN),
    _f("expected_gmv", NUMBER, "Sum over the viewers present of purchase propensity x "
       "category/brand affinity x price fit, times the price (a ranking score).",
       required=True, **_NN),
    _f("viewers_into", INTEGER, "Viewers present whose top category is the item's.",
       required=True, **_NN),
    _f("price_fits", INTEGER, "Viewers present the price fits (fit >= 0.6).", required=True,
       **_NN),
    _f("brand_fans", INTEGER, "Viewers present whose top brand is the item's.",
       required=True, **_NN),
    _f("reason", OBJECT, "Why, in English and Chinese.", required=True, items=(
        _f("en", STRING, "Text in English.", required=True),
        _f("zh", STRING, "Text in Chinese.", required=True))),
)
ROOM_INSIGHT = Contract(
    name="room-insight",
    title="Room insight",
    description="Live counters of a room. Topic <prefix>.room-insights, key room_id. Emitted "
                "when the room changed (at most every LIVEPULSE_INSIGHTS_MIN_INTERVAL_MS) and "
                "at least every LIVEPULSE_INSIGHTS_MAX_INTERVAL_MS while the room is live.",
    record=RoomInsight,
    fields=(
        _VERSION_OUT,
        _f("room_id", STRING, "Room.", required=True),
        _f("host_id", STRING, "Host of the room, when known."),
        _f("ts", INTEGER, "Emission time, epoch ms.", required=True, **_NN),
        _f("viewers", INTEGER, "Viewers in the room now.", required=True, **_NN),
        _f("unique_viewers", INTEGER, "Distinct viewers since the room started.",
           required=True, **_NN),
        _f("peak_viewers", INTEGER, "Highest concurrent viewers.", required=True, **_NN),
        _f("events_total", INTEGER, "Events processed for the room.", required=True, **_NN),
        _f("comments_per_min", NUMBER, "Comments in the last 60 s of event time.",
           required=True, **_NN),
        _f("likes_per_min", NUMBER, "Likes in the last 60 s.", required=True, **_NN),
        _f("gifts_per_min", NUMBER, "Gifts in the last 60 s.", required=True, **_NN),
        _f("shares_per_min", NUMBER, "Shares in the last 60 s.", required=True, **_NN),
        _f("product_clicks", INTEGER, "Product clicks since start.", required=True, **_NN),
        _f("add_to_carts", INTEGER, "Add-to-carts since start.", required=True, **_NN),
        _f("orders", INTEGER, "Purchases since start.", required=True, **_NN),
        _f("gmv", NUMBER, "Gross merchandise value since start.", required=True, **_NN),
        _f("gmv_per_min", NUMBER, "GMV in the last 60 s.", required=True, **_NN),
        _f("orders_per_min", NUMBER, "Purchases in the last 60 s.", required=True, **_NN),
        _f("last_event_ts", INTEGER, "Event time of the newest event folded in.",
           required=True, **_NN),
        _f("live", BOOLEAN, "False once the room went idle.", required=True),
        _f("audience", OBJECT, "Who is watching.", required=True, items=_AUDIENCE),
        _f("engagement", OBJECT, "Interaction per viewer-minute (last 60 s).", required=True,
           items=_ENGAGEMENT),
        _f("mood", OBJECT, "Comment mood over the last `window_s` of event time.",
           required=True, items=_MOOD),
        _f("commerce", OBJECT, "Funnel, GMV, top items, pinned item uptake.", required=True,
           items=_COMMERCE),
        _f("windows", OBJECT, "Event-time windows with a grace period for late events.",
           required=True, items=_WINDOWS),
        _f("suggestions", OBJECT_LIST, "What the host could do now, most urgent first.",
           required=True, items=_SUGGESTION),
        _f("alerts", OBJECT_LIST, "Open anomaly alerts for the room.", required=True,
           items=_ALERT),
        _f("questions", OBJECT, "Questions from the chat (zh and en), grouped by topic. Always "
           "sent; optional so that insights of engines older than this group stay valid.",
           items=_QUESTIONS),
        _f("portrait", OBJECT, "Audience portrait of the present viewers (segments, intent, "
           "price bands, buyers, follows, next rooms). Optional for older engines.",
           items=_PORTRAIT),
        _f("pin_next", OBJECT_LIST, "The room's products with the highest expected GMV from "
           "the viewers present now, best first (agents.rooms.pin_next), refreshed at least "
           "every 10 s. Optional: insights of older engines lack it.", items=_PIN_NEXT,
           max_items=3),
    ),
)

_REC_ITEM = (
    _f("item_id", STRING, "Recommended product.", required=True),
    _f("score", NUMBER, "Blend score (higher is better).", required=True),
    _f("reasons", STRING_LIST, "Reason codes (e.g. covisit, session_knn, trending).",
       required=True),
)
RECOMMENDATION = Contract(
    name="recommendation",
    title="Recommendation",
    description="A user's next-item top-K. Topic <prefix>.recommendations, key user_id.",
    record=Recommendation,
    fields=(
        _VERSION_OUT,
        _f("user_id", STRING, "User.", required=True),
        _f("ts", INTEGER, "Emission time, epoch ms.", required=True, **_NN),
        _f("request_id", STRING, "Unique id; the event id that caused it.", required=True),
        _f("model_version", STRING, "Model that ranked.", required=True),
        _f("items", OBJECT_LIST, "Ranked items, best first (empty when the model knows no "
           "item it may show the user).", required=True, items=_REC_ITEM),
        _f("room_id", STRING, "Live room context, if any."),
        _f("personalized", BOOLEAN, "False: ranked from non-personal signals only (session, "
           "room, trending, popular items), because the user opted out (consent false)."),
    ),
)

_TRIGGER_SOURCE = (
    _f("topic", STRING, "Input topic of the event (live events: <prefix>.live-events).",
       required=True),
    _f("event_id", STRING, "The event's producer-assigned id.", required=True),
    _f("type", STRING, "The event's type.", required=True),
)
PROMO_TRIGGER = Contract(
    name="promo-trigger",
    title="Promo trigger",
    description="An offer to show one user now. Topic <prefix>.promo-triggers, key user_id. "
                "Delivery is at-least-once: deduplicate by idempotency_key, drop after "
                "expires_at. Held-out users (the experiment's control group) get no trigger "
                "here; they are recorded on <prefix>.attribution.",
    record=PromoTrigger,
    fields=(
        _VERSION_OUT,
        _f("idempotency_key", STRING, "Same value for every redelivery of this trigger: hash "
           "of campaign, user, source topic and source event id.", required=True),
        _f("campaign_id", STRING, "Campaign that fired.", required=True),
        _f("campaign_version", INTEGER, "Version of the campaign definition that fired.",
           required=True, minimum=1, maximum=MAX_UINT32),
        _f("user_id", STRING, "Target user (message key).", required=True),
        _f("action", STRING, "What the ad system should do (campaign-defined, e.g. coupon, "
           "reminder, follow_incentive, welcome_offer).", required=True),
        _f("offer", OBJECT, "The campaign's offer as configured (e.g. code, discount, text).",
           required=True),
        _f("reasons", STRING_LIST, "Reason codes of the conditions that held.",
           required=True),
        _f("scores", NUMBER_MAP, "Model scores at decision time (purchase_propensity, "
           "leave_risk when known).", required=True),
        _f("event_ts", INTEGER, "Event time of the event that satisfied the conditions, "
           "epoch ms (latency = ts - event_ts).", required=True, **_NN),
        _f("source", OBJECT, "The event that satisfied the conditions.", required=True,
           items=_TRIGGER_SOURCE),
        _f("ts", INTEGER, "Decision time, epoch ms.", required=True, **_NN),
        _f("expires_at", INTEGER, "Act before this time (epoch ms) or drop it.",
           required=True, **_NN),
        _f("room_id", STRING, "Live room the user is in, if any."),
        _f("item_id", STRING, "Product of the event, if any."),
        _f("variant", STRING, "Campaign variant chosen for this user (campaigns with "
           "variants only): show its offer as given, and name it in the feedback.",
           max_length=64),
    ),
)

_CONDITION = (
    _f("field", STRING, "namespace.path: event.*, profile.*, session.*, room.*, scores.*."),
    _f("op", STRING, "Comparison.", enum=("==", "!=", "<", "<=", ">", ">=", "in", "not_in",
                                          "contains", "not_contains", "exists")),
    _f("reason", STRING, "Reason code reported in triggers when the condition holds."),
    _f("any", OBJECT_LIST, "Alternatives: holds when one of these conditions holds."),
)
_CAP = (
    _f("max", INTEGER, "At most this many triggers per user...", required=True, minimum=1),
    _f("per", STRING, "...within this duration (e.g. 1h, 1d).", required=True),
)
_QUIET = (
    _f("start", STRING, "Local time HH:MM when quiet hours begin.", required=True),
    _f("end", STRING, "Local time HH:MM when they end (may be past midnight).",
       required=True),
    _f("utc_offset", STRING, "Campaign time zone as +HH:MM (default +00:00)."),
)
_VARIANT = (
    _f("id", STRING, "Variant id (letters, digits, '_', '-', '.'; not 'default'), named by "
       "its triggers and their feedback.", required=True, max_length=64),
    _f("weight", NUMBER, "Share of the treated users (relative, default 1); a bandit's "
       "starting weight.", minimum=0),
    _f("copy", STRING, "Copy text shown (goes into the variant's offer)."),
    _f("creative_id", STRING, "Creative shown (goes into the variant's offer)."),
    _f("offer", OBJECT, "Keys overriding the campaign's offer for this variant."),
)
_BANDIT = (
    _f("update_every", INTEGER, "Feedback records of the campaign between weight updates "
       "(default 100).", minimum=1),
    _f("min_weight", NUMBER, "Floor of every variant's weight (default 0.02).", minimum=0),
)
CAMPAIGN = Contract(
    name="campaign",
    title="Promo campaign",
    description="A campaign definition. Compacted topic <prefix>.campaigns, key id; a null "
                "value (tombstone) removes the runtime definition (the campaigns file's one, "
                "if any, applies again). Semantics: README, Promo triggers.",
    record=CampaignRecord,
    fields=(
        _VERSION_IN,
        _f("id", STRING, "Campaign id (message key): letters, digits, '_', '-', '.'.",
           required=True, max_length=64),
        _f("version", INTEGER, "Definition version (1 .. 2^32 - 1); a lower version than the "
           "one in force is ignored.", required=True, minimum=1, maximum=MAX_UINT32),
        _f("on", STRING_LIST, "Event types that can fire it (live or click types).",
           required=True, max_items=20),
        _f("action", STRING, "What the ad system should do.", required=True, max_length=64),
        _f("enabled", BOOLEAN, "False: the campaign never fires (default true)."),
        _f("name", STRING, "Display name.", max_length=200),
        _f("description", STRING, "Free text.", max_length=2000),
        _f("when", OBJECT_LIST, "Conditions, all of which must hold.", items=_CONDITION,
           max_items=32),
        _f("offer", OBJECT, "Offer passed through to triggers."),
        _f("offer_ttl", STRING, "Trigger lifetime after its event (e.g. 15m)."),
        _f("cost_per_trigger", NUMBER, "Cost charged to the budget per trigger sent.",
           minimum=0),
        _f("budget", NUMBER, "Total budget (absent: unlimited).", minimum=0),
        _f("caps", OBJECT_LIST, "Per-user frequency caps.", items=_CAP, max_items=8),
        _f("quiet_hours", OBJECT, "No triggers in this local time range.", items=_QUIET),
        _f("holdout", NUMBER, "Share of users held out (control group), 0..1 (default 0.1).",
           minimum=0),
        _f("attribution_window", STRING, "Purchases this long after a trigger convert it."),
        _f("starts_at", STRING, "ISO 8601 time with offset; no triggers before."),
        _f("expires_at", STRING, "ISO 8601 time with offset; no triggers from then on."),
        _f("variants", OBJECT_LIST, "Creative/copy/offer variants, assigned per user by a "
           "hash on the weights (at most 8).", items=_VARIANT, max_items=8),
        _f("mode", STRING, "fixed (configured weights) or bandit (Thompson sampling on the "
           "objective; needs two variants; the holdout is always kept).",
           enum=("fixed", "bandit")),
        _f("objective", STRING, "Bandit objective per exposure (default click).",
           enum=("click", "conversion")),
        _f("bandit", OBJECT, "Bandit knobs.", items=_BANDIT),
        _f("allow_personalised_pricing", BOOLEAN, "True: the campaign may condition on price "
           "sensitivity or spend level with a money offer (refused otherwise); needs a "
           "justification."),
        _f("justification", STRING, "Why personalised pricing is allowed (10 to 500 "
           "characters).", max_length=500),
        _f("baseline_window", STRING, "With starts_at: users matching the conditions this "
           "long before the start form the baseline cohort of the before/after view "
           "(default 7d)."),
    ),
)

CONSENT_EVENT = Contract(
    name="consent-event",
    title="Consent event",
    description="A user's marketing consent. Compacted topic <prefix>.consent, key user_id. "
                "The newest decision (by ts) wins; without consent no personalized trigger "
                "is sent.",
    record=ConsentEvent,
    fields=(
        _VERSION_IN,
        _f("user_id", STRING, "User (message key).", required=True, max_length=ID_LEN),
        _f("consent", BOOLEAN, "True: personalized offers allowed.", required=True),
        _f("ts", INTEGER, "Time of the decision, epoch ms (never too old to apply).",
           required=True, minimum=0),
        _f("source", STRING, "Where the decision was made (e.g. app_settings).",
           max_length=ID_LEN),
    ),
)

ERASURE_REQUEST = Contract(
    name="erasure-request",
    title="Erasure request",
    description="Forget one user (right to erasure). Compacted topic <prefix>.erasure, key "
                "user_id. The worker owning the user's partition deletes the profile (a "
                "changelog tombstone), session, model, trigger and anomaly state and the Redis "
                "copy; `livepulse forget` also deletes the ClickHouse rows and then sends a "
                "null value (tombstone) for the key, so compaction drops the request too. "
                "Idempotent: forgetting an unknown or forgotten user does nothing.",
    record=ErasureRequest,
    fields=(
        _VERSION_IN,
        _f("user_id", STRING, "User to forget (message key).", required=True,
           max_length=ID_LEN),
        _f("ts", INTEGER, "Time of the request, epoch ms (never too old to apply).",
           required=True, minimum=0),
        _f("request_id", STRING, "Id of the request, for the requester's records.",
           max_length=ID_LEN),
        _f("source", STRING, "Who asked (e.g. cli, api).", max_length=ID_LEN),
    ),
)

ATTRIBUTION = Contract(
    name="attribution",
    title="Trigger attribution",
    description="Experiment records of the promo triggers. Topic <prefix>.attribution, key "
                "user_id: one `trigger` record per trigger sent (group treatment) or held out "
                "(group holdout) or, in the baseline window before a campaign's starts_at, "
                "per would-be trigger (group baseline), one `conversion` record when a later "
                "purchase by the user within the campaign's attribution window converts it "
                "(at most once per trigger). Deduplicate by record_id.",
    record=Attribution,
    fields=(
        _VERSION_OUT,
        _f("record_id", STRING, "Unique and stable across redelivery.", required=True),
        _f("kind", STRING, "Record kind.", required=True, enum=("trigger", "conversion")),
        _f("group", STRING, "Experiment group (baseline: the target audience before the "
           "campaign started).", required=True, enum=("treatment", "holdout", "baseline")),
        _f("campaign_id", STRING, "Campaign.", required=True),
        _f("campaign_version", INTEGER, "Campaign version that fired.", required=True,
           minimum=1, maximum=MAX_UINT32),
        _f("user_id", STRING, "User.", required=True),
        _f("trigger_key", STRING, "idempotency_key of the trigger (would-have-been key for "
           "the holdout).", required=True),
        _f("trigger_ts", INTEGER, "Event time of the trigger's event, epoch ms.",
           required=True, **_NN),
        _f("ts", INTEGER, "When the record was made, epoch ms.", required=True, **_NN),
        _f("cost", NUMBER, "Budget spent (trigger records of the treatment group; else 0).",
           required=True, **_NN),
        _f("room_id", STRING, "Live room of the trigger, if any."),
        _f("value", NUMBER, "Conversion: order value.", **_NN),
        _f("purchase_event_id", STRING, "Conversion: the purchase event's id."),
        _f("purchase_ts", INTEGER, "Conversion: the purchase's event time, epoch ms.", **_NN),
    ),
)

AD_FEEDBACK = Contract(
    name="ad-feedback",
    title="Ad feedback",
    description="What an ad system did with a promo trigger. Topic <prefix>.ad-feedback, "
                "key user_id. One record per trigger and type: delivered, shown, clicked, "
                "dismissed, converted (with order_id, value, currency). Records are "
                "deduplicated by (idempotency_key, type): resending one is harmless.",
    record=AdFeedback,
    fields=(
        _VERSION_IN,
        _f("type", STRING, "What happened to the trigger.", required=True),
        _f("idempotency_key", STRING, "The trigger's idempotency_key.", required=True,
           max_length=ID_LEN),
        _f("campaign_id", STRING, "The trigger's campaign_id.", required=True, max_length=64),
        _f("user_id", STRING, "The trigger's user_id (message key).", required=True,
           max_length=ID_LEN),
        _f("channel", STRING, "Where the ad system acted (e.g. push, in_app, sms, email).",
           required=True, max_length=32),
        _f("variant", STRING, "Creative or copy variant shown (default \"default\").",
           max_length=64),
        _f("ts", INTEGER, "When it happened, epoch ms.", required=True, minimum=0),
        _f("order_id", STRING, "converted: the order's id.", max_length=ID_LEN),
        _f("value", NUMBER, "converted: the order's value, >= 0.", minimum=0),
        _f("currency", STRING, "converted: ISO 4217 code of value (e.g. CNY).",
           max_length=3),
    ),
    required_by_type={
        "delivered": (), "shown": (), "clicked": (), "dismissed": (),
        "converted": ("order_id", "value", "currency"),
    },
)

AUDIENCE = Contract(
    name="audience",
    title="Audience definition",
    description="An audience: the users whose profile, segment and scores meet every "
                "condition. Compacted topic <prefix>.audiences, key id; a null value removes "
                "the runtime definition (the audiences file's one, if any, applies again). "
                "Conditions read profile.* (the profile view, including profile.segment and "
                "profile.tags) and scores.*. Semantics: README, Segments and audiences.",
    record=AudienceRecord,
    fields=(
        _VERSION_IN,
        _f("id", STRING, "Audience id (message key): letters, digits, '_', '-', '.'.",
           required=True, max_length=64),
        _f("version", INTEGER, "Definition version; a lower version than the one in force is "
           "ignored.", required=True, minimum=1, maximum=MAX_UINT32),
        _f("when", OBJECT_LIST, "Conditions, all of which must hold.", required=True,
           items=_CONDITION, max_items=32),
        _f("enabled", BOOLEAN, "False: nobody is in it (members exit; default true)."),
        _f("name", STRING, "Display name.", max_length=200),
        _f("description", STRING, "Free text.", max_length=2000),
    ),
)

AUDIENCE_CHANGE = Contract(
    name="audience-change",
    title="Audience membership change",
    description="A user entered or left an audience. Topic <prefix>.audience-changes, key "
                "user_id. Per (audience, user) the records alternate enter, exit, enter...; "
                "a redelivered event repeats the same change_id (deduplicate by it). An "
                "opted-out user (consent false) leaves every audience (reason consent).",
    record=AudienceChange,
    fields=(
        _VERSION_OUT,
        _f("change_id", STRING, "Unique and stable across redelivery.", required=True),
        _f("type", STRING, "Membership change.", required=True, enum=("enter", "exit")),
        _f("audience_id", STRING, "Audience.", required=True, max_length=64),
        _f("audience_version", INTEGER, "Definition version that decided it (0: the audience "
           "was removed).", required=True, minimum=0, maximum=MAX_UINT32),
        _f("user_id", STRING, "User (message key).", required=True, max_length=ID_LEN),
        _f("ts", INTEGER, "Event time of the change (the user's event), epoch ms.",
           required=True, **_NN),
        _f("reason", STRING, "Why: the conditions now hold or no longer do, the user opted "
           "out, the audience was removed or disabled, or the user was erased.",
           required=True, enum=("conditions", "consent", "removed", "erased")),
        _f("segment", INTEGER, "The user's online segment then (null: none yet).",
           nullable=True, **_NN),
    ),
)

ANOMALY = Contract(
    name="anomaly",
    title="Anomaly incident",
    description="An incident opened or resolved. Topic <prefix>.anomalies, key scope_id.",
    record=Anomaly,
    fields=(
        _VERSION_OUT,
        _f("anomaly_id", STRING, "Incident id (same for open and resolved).", required=True),
        _f("status", STRING, "Lifecycle.", required=True, enum=("open", "resolved")),
        _f("scope", STRING, "What is watched.", required=True, enum=("room", "user", "system")),
        _f("scope_id", STRING, "Room id, pseudonymous user id or component. A user "
           "incident that coalesced several users (a bot flood) is named after the first "
           "one flagged; its explanation gives the count and names a few.", required=True),
        _f("metric", STRING, "Metric name.", required=True),
        _f("observed", NUMBER, "Observed value.", required=True),
        _f("expected_low", NUMBER, "Lower end of the expected range.", required=True),
        _f("expected_high", NUMBER, "Upper end of the expected range.", required=True),
        _f("score", NUMBER, "Anomaly score in [0, 1].", required=True, minimum=0),
        _f("severity", STRING, "Severity.", required=True,
           enum=("info", "warning", "critical")),
        _f("explanation", STRING, "Human explanation.", required=True),
        _f("first_seen", INTEGER, "Epoch ms.", required=True, **_NN),
        _f("last_seen", INTEGER, "Epoch ms.", required=True, **_NN),
        _f("ts", INTEGER, "Emission time, epoch ms.", required=True, **_NN),
    ),
)

DEAD_LETTER = Contract(
    name="dead-letter",
    title="Dead letter",
    description="Rejected input. Topic <prefix>.dead-letter, same key as the source record. "
                "Headers repeat the source and the reason: lp-source-topic, "
                "lp-source-partition, lp-source-offset, lp-error-class, lp-reason.",
    record=DeadLetter,
    fields=(
        _VERSION_OUT,
        _f("source_topic", STRING, "Topic the record came from.", required=True),
        _f("source_partition", INTEGER, "Its partition.", required=True, **_NN),
        _f("source_offset", INTEGER, "Its offset.", required=True, **_NN),
        _f("error_class", STRING, "Machine name of the error.", required=True),
        _f("reason", STRING, "Readable reason.", required=True),
        _f("received_at", INTEGER, "When the engine rejected it, epoch ms.", required=True),
        _f("payload", STRING, "Original payload (truncated to 4 KiB).", required=True),
        _f("payload_encoding", STRING, "How `payload` is encoded.", required=True,
           enum=("utf-8", "base64")),
        _f("payload_bytes", INTEGER, "Size of the original payload.", required=True, **_NN),
    ),
)

INPUT_CONTRACTS = (LIVE_EVENT, CLICK_EVENT, CATALOG_ITEM, CAMPAIGN, CONSENT_EVENT,
                   ERASURE_REQUEST, AD_FEEDBACK, AUDIENCE)
OUTPUT_CONTRACTS = (ROOM_INSIGHT, RECOMMENDATION, PROMO_TRIGGER, ATTRIBUTION, ANOMALY,
                    DEAD_LETTER, AUDIENCE_CHANGE)
ALL_CONTRACTS = INPUT_CONTRACTS + OUTPUT_CONTRACTS


# ------------------------------------------------------------------ validation
def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_value(spec: FieldSpec, value: Any, path: str) -> None:
    kind = spec.kind
    if kind == STRING:
        if type(value) is not str:
            raise ContractError("wrong_type", f"{path} must be a string, got {_type_name(value)}")
        if spec.max_length is not None and len(value) > spec.max_length:
            raise ContractError("out_of_range", f"{path} longer than {spec.max_length} chars")
        if spec.enum is not None and value not in spec.enum:
            raise ContractError("out_of_range", f"{path} must be one of {list(spec.enum)}")
        return
    if kind in (INTEGER, NUMBER):
        if type(value) is int:
            pass
        elif kind == INTEGER and type(value) is float and value.is_integer():
            pass  # JSON Schema counts 5.0 as an integer; _check_fields normalises it to 5
        elif kind == NUMBER and type(value) is float:
            if value != value or value in (float("inf"), float("-inf")):
                raise ContractError("out_of_range", f"{path} must be finite")
        else:
            want = "an integer" if kind == INTEGER else "a number"
            raise ContractError("wrong_type", f"{path} must be {want}, got {_type_name(value)}")
        if spec.minimum is not None and value < spec.minimum:
            raise ContractError(
                "out_of_range", f"{path} must be >= {spec.minimum:g}, got {value}"
            )
        upper = MAX_NUMBER if spec.maximum is None else spec.maximum
        if not -MAX_NUMBER <= value <= upper:
            bounds = "+-(2**53 - 1)" if spec.maximum is None else f"<= {upper:g}"
            raise ContractError("out_of_range", f"{path} must be {bounds}, got {value:.6g}")
        return
    if kind == BOOLEAN:
        if type(value) is not bool:
            raise ContractError("wrong_type", f"{path} must be a boolean, got {_type_name(value)}")
        return
    if kind == STRING_LIST:
        if type(value) is not list:
            raise ContractError("wrong_type", f"{path} must be a list, got {_type_name(value)}")
        if spec.max_items is not None and len(value) > spec.max_items:
            raise ContractError("out_of_range", f"{path} has more than {spec.max_items} items")
        for i, item in enumerate(value):
            if type(item) is not str:
                raise ContractError("wrong_type", f"{path}[{i}] must be a string")
            if spec.max_length is not None and len(item) > spec.max_length:
                raise ContractError("out_of_range", f"{path}[{i}] longer than {spec.max_length}")
        return
    if kind == OBJECT_LIST:
        if type(value) is not list:
            raise ContractError("wrong_type", f"{path} must be a list, got {_type_name(value)}")
        if spec.max_items is not None and len(value) > spec.max_items:
            raise ContractError("out_of_range", f"{path} has more than {spec.max_items} items")
        for i, item in enumerate(value):
            if type(item) is not dict:
                raise ContractError("wrong_type", f"{path}[{i}] must be an object")
            _check_fields(spec.items or (), item, f"{path}[{i}].")
        return
    if kind == OBJECT:
        if type(value) is not dict:
            raise ContractError("wrong_type", f"{path} must be an object, got "
                                f"{_type_name(value)}")
        _check_fields(spec.items or (), value, f"{path}.")
        return
    if kind == NUMBER_MAP:
        if type(value) is not dict:
            raise ContractError("wrong_type", f"{path} must be an object, got "
                                f"{_type_name(value)}")
        for name, number in value.items():
            if type(number) not in (int, float) or number != number or number in (
                    float("inf"), float("-inf")):
                raise ContractError("wrong_type", f"{path}.{name} must be a finite number")
        return
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover


def _check_fields(specs: tuple[FieldSpec, ...], obj: dict[str, Any], prefix: str = "") -> None:
    for spec in specs:
        value = obj.get(spec.name)
        if value is None:
            if spec.required and not (spec.nullable and spec.name in obj):
                raise ContractError("missing_field", f"{prefix}{spec.name} is required")
            continue
        _check_value(spec, value, prefix + spec.name)
        if spec.kind == INTEGER and type(value) is float:
            obj[spec.name] = int(value)


def check_contract(contract: Contract, obj: Any) -> dict[str, Any]:
    """Check ``obj`` against the contract's static rules; return it (a dict) or raise."""
    if type(obj) is not dict:
        raise ContractError("not_an_object", f"top level must be a JSON object, got "
                            f"{_type_name(obj)}")
    version = obj.get("schema_version")
    if type(version) in (int, float) and version > contract.version:
        raise ContractError(
            "unsupported_version",
            f"schema_version {version!r} not supported (this engine speaks <= {contract.version})",
        )
    if contract.required_by_type:
        kind = obj.get("type")
        if kind is None:
            raise ContractError("missing_field", "type is required")
        if type(kind) is not str:
            raise ContractError("wrong_type", f"type must be a string, got {_type_name(kind)}")
        extra = contract.required_by_type.get(kind)
        if extra is None:
            raise ContractError(
                "unknown_type", f"unknown {contract.name} type {kind[:40]!r}; expected one of "
                f"{sorted(contract.required_by_type)}"
            )
        for name in extra:
            if obj.get(name) is None:
                raise ContractError("missing_field", f"{name} is required for type {kind!r}")
    _check_fields(contract.fields, obj)
    return obj


_RECORD_FIELDS: dict[type, tuple[str, ...]] = {}
_RECORD_NAMES: dict[type, frozenset[str]] = {}


def _record_fields(record: type) -> tuple[str, ...]:
    names = _RECORD_FIELDS.get(record)
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(record))
        _RECORD_FIELDS[record] = names
    return names


def to_record(contract: Contract, obj: Mapping[str, Any]) -> Any:
    """Build the typed record from an already checked dict (unknown keys are ignored)."""
    names = _RECORD_NAMES.get(contract.record)
    if names is None:
        names = _RECORD_NAMES[contract.record] = frozenset(_record_fields(contract.record))
    values = {name: value for name, value in obj.items()
              if value is not None and name in names}
    values["schema_version"] = contract.version
    return contract.record(**values)


def validate(contract: Contract, obj: Any) -> Any:
    """Static contract check, then the typed record. Raises :class:`ContractError`."""
    return to_record(contract, check_contract(contract, obj))


def as_dict(record: Any) -> dict[str, Any]:
    """A record as a plain dict without ``None`` fields (what goes on the wire)."""
    return {name: value for name in _record_fields(type(record))
            if (value := getattr(record, name)) is not None}


# ------------------------------------------------------------------ JSON Schema export
def _schema_for(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.description}
    if spec.kind in (STRING, INTEGER, NUMBER, BOOLEAN):
        out["type"] = spec.kind
    if spec.kind == STRING and spec.max_length is not None:
        out["maxLength"] = spec.max_length
    if spec.enum is not None:
        out["enum"] = list(spec.enum)
    if spec.minimum is not None:
        out["minimum"] = int(spec.minimum) if spec.kind == INTEGER else spec.minimum
    if spec.kind in (INTEGER, NUMBER):
        out.setdefault("minimum", -MAX_NUMBER)
        out["maximum"] = MAX_NUMBER if spec.maximum is None else spec.maximum
    if spec.kind == STRING_LIST:
        out["type"] = "array"
        item: dict[str, Any] = {"type": "string"}
        if spec.max_length is not None:
            item["maxLength"] = spec.max_length
        out["items"] = item
        if spec.max_items is not None:
            out["maxItems"] = spec.max_items
    if spec.kind == OBJECT_LIST:
        out["type"] = "array"
        out["items"] = _object_schema(spec.items or ())
        if spec.max_items is not None:
            out["maxItems"] = spec.max_items
    if spec.kind == OBJECT:
        out.update(_object_schema(spec.items or ()))
    if spec.kind == NUMBER_MAP:
        out.update({"type": "object", "additionalProperties": {"type": "number"}})
    if spec.nullable:
        out["type"] = [out["type"], "null"]
    return out


def _object_schema(specs: tuple[FieldSpec, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {s.name: _schema_for(s) for s in specs},
        "required": [s.name for s in specs if s.required],
        "additionalProperties": True,
    }


def json_schema(contract: Contract) -> dict[str, Any]:
    """The contract as a JSON Schema (draft 2020-12) document."""
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:livepulse:schema:{contract.name}:v{contract.version}",
        "title": contract.title,
        "description": contract.description,
        **_object_schema(contract.fields),
    }
    version = schema["properties"]["schema_version"]
    version["maximum"] = contract.version
    if contract.required_by_type:
        schema["properties"]["type"]["enum"] = list(contract.required_by_type)
        schema["allOf"] = [
            {
                "if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                "then": {"required": list(extra)},
            }
            for kind, extra in contract.required_by_type.items()
            if extra
        ]
    return schema


def schema_filename(contract: Contract) -> str:
    return f"{contract.name}.v{contract.version}.json"
