"""The layout of the ClickHouse history tables: one per topic the history sink stores.

Names, source topics, contracts, columns, keys (``ORDER BY``) and time columns, and nothing
that needs the engine: the history sink (:mod:`agents.sinks.clickhouse_schema`) adds each table's
record-to-row mapper (pseudonyms, redaction), the dashboards (:mod:`dashboards`) read the
names and keys here. Column types may be :data:`ENUM`, which the sink creates as
``LowCardinality(String)`` where the server supports it.

>>> [t.name for t in LAYOUTS]  # doctest: +NORMALIZE_WHITESPACE
['live_events', 'click_events', 'room_insights', 'recommendations', 'promo_triggers',
 'attribution', 'anomalies', 'ad_feedback']
>>> LAYOUT_BY_NAME["room_insights"].order_by, cols("a String, b Array(String)")[1].type
(('room_id', 'ts'), 'Array(String)')
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from streams.contracts import (
    AD_FEEDBACK,
    ANOMALY,
    ATTRIBUTION,
    CLICK_EVENT,
    LIVE_EVENT,
    PROMO_TRIGGER,
    RECOMMENDATION,
    ROOM_INSIGHT,
    Contract,
)
from streams.topics import TopicNames

# Marker in column types: LowCardinality(String) where supported, else String.
ENUM = "Enum-ish String"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str


def cols(spec: str) -> tuple[Column, ...]:
    """``"a String, b UInt64"`` -> columns (types may contain spaces but not commas)."""
    out = []
    for part in spec.split(","):
        name, _, kind = part.strip().partition(" ")
        out.append(Column(name, kind.strip()))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """One history table's layout: which topic fills it and with what columns and key.

    ``time_ms`` is the record field the server turns into ``time`` and ``day``.
    ``raw_input``: the topic is an engine input, whose records get the engine's full ingest
    validation (time bounds too).
    """

    name: str
    topic: Callable[[TopicNames], str]
    contract: Contract
    raw_input: bool
    columns: tuple[Column, ...]
    order_by: tuple[str, ...]
    time_ms: str
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def insert_sql(self, database: str) -> str:
        return (f"INSERT INTO {database}.{self.name} ({', '.join(self.column_names)}) "
                "VALUES")


LAYOUTS: tuple[TableLayout, ...] = (
    TableLayout(
        "live_events", lambda n: n.live_events, LIVE_EVENT, True,
        cols(f"event_id String, type {ENUM}, ts UInt64, room_id {ENUM}, user_pid String, "
             f"host_id {ENUM}, item_id String, amount Float64, quantity UInt32, text String, "
             "session_id String"),
        ("room_id", "ts", "event_id"), "ts",
        "Live-room events (valid ones: what the engine admitted); user and session ids "
        "pseudonymized, comment text redacted (agents.redaction)."),
    TableLayout(
        "click_events", lambda n: n.clicks, CLICK_EVENT, True,
        cols(f"event_id String, type {ENUM}, ts UInt64, user_pid String, session_id String, "
             f"item_id String, category {ENUM}, price Float64, quantity UInt32, query String, "
             f"room_id {ENUM}"),
        ("type", "ts", "event_id"), "ts",
        "Clickstream events (valid ones); user and session ids pseudonymized, search "
        "queries redacted (agents.redaction)."),
    TableLayout(
        "room_insights", lambda n: n.room_insights, ROOM_INSIGHT, False,
        cols(f"room_id {ENUM}, host_id {ENUM}, ts UInt64, live UInt8, viewers UInt32, "
             "unique_viewers UInt32, peak_viewers UInt32, events_total UInt64, "
             "comments_per_min Float64, likes_per_min Float64, gifts_per_min Float64, "
             "shares_per_min Float64, product_clicks UInt64, add_to_carts UInt64, "
             "orders UInt64, gmv Float64, gmv_per_min Float64, orders_per_min Float64, "
             "last_event_ts UInt64, new_viewers UInt32, returning_viewers UInt32, "
             "avg_watch_s Float64, sentiment Float64, positive_share Float64, "
             "negative_share Float64, click_to_purchase Float64, late_events UInt64, "
             "suggestions Array(String), alerts Array(String), top_items String"),
        ("room_id", "ts"), "ts",
        "Room insight headlines as emitted (suggestion codes, alert metrics, top items as "
        "JSON; top viewers are left out: they name users)."),
    TableLayout(
        "recommendations", lambda n: n.recommendations, RECOMMENDATION, False,
        cols(f"request_id String, user_pid String, ts UInt64, model_version {ENUM}, "
             f"room_id {ENUM}, item_ids Array(String), scores Array(Float64), "
             "reasons Array(String)"),
        ("user_pid", "request_id"), "ts",
        "Recommendations served: ranked item ids, scores, reason codes (comma-joined per item)."),
    TableLayout(
        "promo_triggers", lambda n: n.promo_triggers, PROMO_TRIGGER, False,
        cols(f"idempotency_key String, campaign_id {ENUM}, campaign_version UInt32, "
             f"user_pid String, action {ENUM}, offer String, reasons Array(String), "
             "score_names Array(String), score_values Array(Float64), event_ts UInt64, "
             f"ts UInt64, expires_at UInt64, room_id {ENUM}, item_id String, "
             f"source_topic {ENUM}, source_event_id String, source_type {ENUM}"),
        ("campaign_id", "idempotency_key"), "event_ts",
        "Promo triggers sent (offer as JSON); time = the triggering event's time."),
    TableLayout(
        "attribution", lambda n: n.attribution, ATTRIBUTION, False,
        cols(f"record_id String, kind {ENUM}, exp_group {ENUM}, campaign_id {ENUM}, "
             "campaign_version UInt32, user_pid String, trigger_key String, "
             f"trigger_ts UInt64, ts UInt64, cost Float64, room_id {ENUM}, value Float64, "
             "purchase_event_id String, purchase_ts UInt64"),
        ("campaign_id", "record_id"), "trigger_ts",
        "Trigger experiment records (trigger / conversion, treatment / holdout); time = the "
        "trigger's event time, so a conversion is counted in its trigger's cohort."),
    TableLayout(
        "anomalies", lambda n: n.anomalies, ANOMALY, False,
        cols(f"anomaly_id String, status {ENUM}, scope {ENUM}, scope_id String, "
             f"metric {ENUM}, observed Float64, expected_low Float64, expected_high Float64, "
             f"score Float64, severity {ENUM}, explanation String, first_seen UInt64, "
             "last_seen UInt64, ts UInt64"),
        ("scope", "metric", "anomaly_id", "status"), "first_seen",
        "Anomaly incidents, one row when opened and one when resolved; user scopes "
        "pseudonymized (also inside anomaly_id and explanation); time = first seen."),
    TableLayout(
        "ad_feedback", lambda n: n.ad_feedback, AD_FEEDBACK, True,
        cols(f"idempotency_key String, type {ENUM}, campaign_id {ENUM}, variant {ENUM}, "
             f"channel {ENUM}, user_pid String, ts UInt64, order_id String, value Float64, "
             f"currency {ENUM}"),
        ("campaign_id", "idempotency_key", "type"), "ts",
        "Ad-system feedback (valid ones: what the engine admitted), one row per trigger and "
        "type (the contract's deduplication key); user ids pseudonymized."),
)
LAYOUT_BY_NAME = {t.name: t for t in LAYOUTS}
