"""History tables in ClickHouse: their DDL, migrations, record-to-row mapping and retention.

One table per topic the history sink reads (see :data:`TABLES`; their layout, shared with
the dashboards, is :mod:`streams.history_schema`): the inputs
``live_events`` and ``click_events`` (user and session ids pseudonymized, see
:mod:`agents.privacy`; comment text and search queries redacted, see
:mod:`agents.redaction`) and
the engine's outputs ``room_insights``, ``recommendations``, ``promo_triggers``,
``attribution``, ``anomalies`` and the ad systems' ``ad_feedback`` (user ids pseudonymized),
plus the view ``campaign_metrics`` over ``ad_feedback`` (:func:`views_sql`). Every table

* is a ``ReplacingMergeTree`` whose ``ORDER BY`` is the record's own key (``event_id``,
  ``request_id``, ``idempotency_key``, ``record_id``, (``anomaly_id``, ``status``), or
  (``room_id``, ``ts``) for insights), so a record stored twice is one row after merges and
  in ``SELECT ... FINAL``;
* carries ``time`` (``DateTime('UTC')``) and ``day`` (``Date``) computed by the server from
  the record's epoch-millisecond time (a time that is the same for every redelivery of the
  record, so duplicates land in the same partition), and is partitioned by
  ``toYYYYMMDD(day)``: retention drops whole days (``ALTER TABLE ... DROP PARTITION``).

The DDL sticks to what ClickHouse 18.16 (Debian's ``clickhouse-server``) understands --
no ``DateTime64``, ``TTL``, ``async_insert`` -- and uses ``LowCardinality(String)`` for
the low-cardinality columns only when the server is 20.1 or newer (:func:`create_table_sql`).
Migrations are idempotent (``CREATE ... IF NOT EXISTS``) and recorded in
``schema_migrations``; :func:`migration_statements` lists them for a server version. Data
migrations (mutations such as migration 2, which empties the raw text and session ids of
rows stored before it) run once: :func:`data_migration_statements`. Erasure of one user:
:func:`erase_user_sql`.

>>> [t.name for t in TABLES]  # doctest: +NORMALIZE_WHITESPACE
['live_events', 'click_events', 'room_insights', 'recommendations', 'promo_triggers',
 'attribution', 'anomalies', 'ad_feedback']
>>> retention_cutoff(dt.date(2024, 3, 31), days=31)  # today and the 30 days before
20240301
>>> expired_partitions(["20240229", "20240301", "20240330"], 20240301)
['20240229']
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from agents.anomalies.incidents import member_ids
from agents.redaction import redact_text
from streams.history_schema import ENUM, LAYOUTS, TableLayout

MIGRATIONS_TABLE = "schema_migrations"
PROGRESS_TABLE = "sink_progress"
LOW_CARDINALITY_SINCE = (20, 1)  # older servers: plain String (18.16 has it only as experimental)

Row = tuple[Any, ...]
Pseudonymize = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class HistoryTable(TableLayout):
    """One history table: its layout (:class:`streams.history_schema.TableLayout`) and its
    row mapper.

    ``row(record, pseudonymize)`` turns one record checked against ``contract`` (a dict as
    on the wire) into the values of ``columns``, in order.
    """

    row: Callable[[Mapping[str, Any], Pseudonymize], Row]

    @classmethod
    def of(cls, layout: TableLayout,
           row: Callable[[Mapping[str, Any], Pseudonymize], Row]) -> HistoryTable:
        return cls(**{f.name: getattr(layout, f.name) for f in fields(TableLayout)}, row=row)


def column_type(kind: str, server: tuple[int, ...]) -> str:
    """The type to create on ``server`` (``ENUM`` -> ``LowCardinality(String)`` if supported).

    >>> column_type(ENUM, (18, 16, 1)), column_type(ENUM, (24, 8)), column_type("UInt8", (18,))
    ('String', 'LowCardinality(String)', 'UInt8')
    """
    if kind != ENUM:
        return kind
    return "LowCardinality(String)" if server >= LOW_CARDINALITY_SINCE else "String"


def create_table_sql(table: HistoryTable, database: str, server: tuple[int, ...]) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of one history table for a server version."""
    columns = [f"    {c.name} {column_type(c.type, server)}" for c in table.columns]
    seconds = f"intDiv({table.time_ms}, 1000)"
    columns.append(f"    time DateTime('UTC') DEFAULT toDateTime({seconds}, 'UTC')")
    columns.append(f"    day Date DEFAULT toDate(toDateTime({seconds}, 'UTC'))")
    body = ",\n".join(columns)
    return (f"CREATE TABLE IF NOT EXISTS {database}.{table.name} (\n{body}\n) "
            f"ENGINE = ReplacingMergeTree PARTITION BY toYYYYMMDD(day) "
            f"ORDER BY ({', '.join(table.order_by)})")


def system_tables_sql(database: str) -> list[str]:
    """The migrations ledger and the sink's stored-offsets table (both tiny)."""
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE IF NOT EXISTS {database}.{MIGRATIONS_TABLE} (version UInt32, "
        "name String, server_version String, applied_at DateTime DEFAULT now()) "
        "ENGINE = ReplacingMergeTree ORDER BY version",
        # next_offset: every record of (topic, partition) below it is stored in history
        f"CREATE TABLE IF NOT EXISTS {database}.{PROGRESS_TABLE} (consumer_group String, "
        "topic String, partition UInt32, next_offset UInt64, updated_at DateTime DEFAULT "
        "now()) ENGINE = ReplacingMergeTree(next_offset) "
        "ORDER BY (consumer_group, topic, partition)",
    ]


# ------------------------------------------------------------------ record -> row
def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _f(value: Any) -> float:
    return 0.0 if value is None else float(value)


def _i(value: Any) -> int:
    return 0 if value is None else int(value)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode() if value is not None else ""


def _pid_or_empty(value: Any, pid: Pseudonymize) -> str:
    """A session id links a person's events: stored as its pseudonym (same key as users)."""
    return pid(str(value)) if value else ""


def _live_event(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    return (r["event_id"], r["type"], r["ts"], r["room_id"], pid(r["user_id"]),
            _s(r.get("host_id")), _s(r.get("item_id")), _f(r.get("amount")),
            _i(r.get("quantity")), redact_text(_s(r.get("text"))),
            _pid_or_empty(r.get("session_id"), pid))


def _click_event(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    return (r["event_id"], r["type"], r["ts"], pid(r["user_id"]),
            _pid_or_empty(r["session_id"], pid), _s(r.get("item_id")), _s(r.get("category")),
            _f(r.get("price")), _i(r.get("quantity")), redact_text(_s(r.get("query"))),
            _s(r.get("room_id")))


def _room_insight(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    audience, mood, commerce = r["audience"], r["mood"], r["commerce"]
    return (r["room_id"], _s(r.get("host_id")), r["ts"], int(bool(r["live"])), r["viewers"],
            r["unique_viewers"], r["peak_viewers"], r["events_total"],
            _f(r["comments_per_min"]), _f(r["likes_per_min"]), _f(r["gifts_per_min"]),
            _f(r["shares_per_min"]), r["product_clicks"], r["add_to_carts"], r["orders"],
            _f(r["gmv"]), _f(r["gmv_per_min"]), _f(r["orders_per_min"]), r["last_event_ts"],
            round(_f(audience.get("new_viewers"))), round(_f(audience.get("returning_viewers"))),
            _f(audience.get("avg_watch_s")), _f(mood.get("sentiment")),
            _f(mood.get("positive_share")), _f(mood.get("negative_share")),
            _f(commerce.get("funnel", {}).get("click_to_purchase")),
            _i(r["windows"].get("late_events")),
            [_s(s.get("code")) for s in r["suggestions"]],
            [_s(a.get("metric")) for a in r["alerts"]], _json(commerce.get("top_items")))


def _recommendation(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    items = r["items"]
    return (r["request_id"], pid(r["user_id"]), r["ts"], r["model_version"],
            _s(r.get("room_id")), [i["item_id"] for i in items],
            [_f(i["score"]) for i in items], [",".join(i["reasons"]) for i in items])


def _promo_trigger(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    scores = r["scores"]
    source = r["source"]
    return (r["idempotency_key"], r["campaign_id"], r["campaign_version"], pid(r["user_id"]),
            r["action"], _json(r["offer"]), list(r["reasons"]), list(scores),
            [_f(v) for v in scores.values()], r["event_ts"], r["ts"], r["expires_at"],
            _s(r.get("room_id")), _s(r.get("item_id")), _s(source.get("topic")),
            _s(source.get("event_id")), _s(source.get("type")))


def _attribution(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    return (r["record_id"], r["kind"], r["group"], r["campaign_id"], r["campaign_version"],
            pid(r["user_id"]), r["trigger_key"], r["trigger_ts"], r["ts"], _f(r["cost"]),
            _s(r.get("room_id")), _f(r.get("value")), _s(r.get("purchase_event_id")),
            _i(r.get("purchase_ts")))


def _anomaly(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    scope_id, anomaly_id, explanation = r["scope_id"], r["anomaly_id"], r["explanation"]
    if r["scope"] == "user":  # the user id also appears inside the id and the text
        pseudonym = pid(scope_id)
        anomaly_id = anomaly_id.replace(scope_id, pseudonym)
        # a coalesced incident (a bot flood) names a few other members too
        for user_id in dict.fromkeys([scope_id, *member_ids(explanation)]):
            explanation = re.sub(rf"(?<![\w-]){re.escape(user_id)}(?![\w-])", pid(user_id),
                                 explanation)
        scope_id = pseudonym
    return (anomaly_id, r["status"], r["scope"], scope_id, r["metric"], _f(r["observed"]),
            _f(r["expected_low"]), _f(r["expected_high"]), _f(r["score"]), r["severity"],
            explanation, r["first_seen"], r["last_seen"], r["ts"])


def _ad_feedback(r: Mapping[str, Any], pid: Pseudonymize) -> Row:
    return (r["idempotency_key"], r["type"], r["campaign_id"], r.get("variant") or "default",
            r["channel"], pid(r["user_id"]), r["ts"], _s(r.get("order_id")),
            _f(r.get("value")), _s(r.get("currency")))


ROW_MAPPERS: dict[str, Callable[[Mapping[str, Any], Pseudonymize], Row]] = {
    "live_events": _live_event, "click_events": _click_event, "room_insights": _room_insight,
    "recommendations": _recommendation, "promo_triggers": _promo_trigger,
    "attribution": _attribution, "anomalies": _anomaly, "ad_feedback": _ad_feedback,
}
TABLES: tuple[HistoryTable, ...] = tuple(HistoryTable.of(layout, ROW_MAPPERS[layout.name])
                                         for layout in LAYOUTS)
TABLE_BY_NAME = {t.name: t for t in TABLES}


# ------------------------------------------------------------------ migrations
@dataclass(frozen=True, slots=True)
class Migration:
    """``rerun``: DDL run at every start (idempotent, ``IF NOT EXISTS``); otherwise a data
    migration (a mutation) run once, when ``schema_migrations`` does not list it yet."""

    version: int
    name: str
    statements: Callable[[str, tuple[int, ...]], list[str]]  # (database, server) -> SQL
    rerun: bool = True


def scrub_raw_text_sql(database: str, server: tuple[int, ...]) -> list[str]:
    """Migration 2: rows stored before it hold raw session ids, comment text and search
    queries. Pseudonymizing needs the key and redaction needs Python, so those rows lose
    them (set to ''); rows stored since are pseudonymized and redacted by the sink.
    ``ALTER ... UPDATE`` (a mutation) exists since ClickHouse 18.12."""
    return [
        f"ALTER TABLE {database}.live_events UPDATE text = '', session_id = '' "
        "WHERE text != '' OR session_id != ''",
        f"ALTER TABLE {database}.click_events UPDATE query = '', session_id = '' "
        "WHERE query != '' OR session_id != ''",
    ]


# Views: no rows of their own (erasure and retention act on the tables they read).
VIEWS = ("campaign_metrics",)


def views_sql(database: str, server: tuple[int, ...]) -> list[str]:
    """Migration 3: ``campaign_metrics``, per day x campaign x variant x channel: feedback
    counts, exposures (``shown``) and participation (distinct users shown, clicking,
    converting), CTR (clicked / shown), CVR (converted / clicked) and revenue, each
    (trigger, type) counted once (``FINAL``). Filter on ``day`` to prune partitions.

    >>> "uniqExactIf(user_pid, type = 'shown') AS reach" in views_sql("lp", (18, 16))[0]
    True
    """
    return [f"""CREATE VIEW IF NOT EXISTS {database}.campaign_metrics AS
SELECT day, campaign_id, variant, channel,
       countIf(type = 'delivered') AS delivered, countIf(type = 'shown') AS shown,
       countIf(type = 'clicked') AS clicked, countIf(type = 'dismissed') AS dismissed,
       countIf(type = 'converted') AS converted,
       uniqExactIf(user_pid, type = 'shown') AS reach,
       uniqExactIf(user_pid, type = 'clicked') AS clickers,
       uniqExactIf(user_pid, type = 'converted') AS buyers,
       if(shown = 0, 0, clicked / shown) AS ctr,
       if(clicked = 0, 0, converted / clicked) AS cvr,
       sumIf(value, type = 'converted') AS revenue
FROM {database}.ad_feedback FINAL
GROUP BY day, campaign_id, variant, channel"""]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "history tables",
              lambda db, server: [create_table_sql(t, db, server) for t in TABLES]),
    Migration(2, "privacy: drop raw session ids, comment text and queries of older rows",
              scrub_raw_text_sql, rerun=False),
    Migration(3, "campaign_metrics view over ad_feedback", views_sql),
)


def migration_statements(database: str, server: tuple[int, ...]) -> list[str]:
    """Every DDL statement of every migration, in order (all idempotent, run at each
    start); the once-only data migrations are :func:`data_migration_statements`."""
    return [*system_tables_sql(database),
            *(sql for m in MIGRATIONS if m.rerun for sql in m.statements(database, server))]


def data_migration_statements(database: str, server: tuple[int, ...],
                              done: set[int]) -> list[str]:
    """The statements of the data migrations not in ``done`` (applied versions)."""
    return [sql for m in MIGRATIONS if not m.rerun and m.version not in done
            for sql in m.statements(database, server)]


# ------------------------------------------------------------------ erasure
def user_rows_sql(database: str) -> dict[str, str]:
    """Per table holding users: ``SELECT count()`` of one user's rows (parameter ``pid``)."""
    out = {t.name: f"SELECT count() FROM {database}.{t.name} WHERE user_pid = %(pid)s"
           for t in TABLES if "user_pid" in t.column_names}
    out["anomalies"] = (f"SELECT count() FROM {database}.anomalies WHERE scope = 'user' AND "
                        "(scope_id = %(pid)s OR position(explanation, %(pid)s) > 0)")
    return out


def erase_user_sql(database: str) -> list[str]:
    """Mutations removing one user's rows (parameter ``pid``: the user's pseudonym) from
    every history table: rows keyed by ``user_pid``, user-scope anomalies of the user, and
    the pseudonym where a coalesced incident's explanation names it among other users."""
    out = [f"ALTER TABLE {database}.{t.name} DELETE WHERE user_pid = %(pid)s"
           for t in TABLES if "user_pid" in t.column_names]
    out.append(f"ALTER TABLE {database}.anomalies DELETE WHERE scope = 'user' AND "
               "(scope_id = %(pid)s OR position(anomaly_id, %(pid)s) > 0)")
    out.append(f"ALTER TABLE {database}.anomalies UPDATE explanation = "
               "replaceAll(explanation, %(pid)s, '[erased]') "
               "WHERE position(explanation, %(pid)s) > 0")
    return out


def parse_version(text: str) -> tuple[int, ...]:
    """``'18.16.1'`` -> ``(18, 16, 1)``; non-numeric tails are ignored.

    >>> parse_version("18.16.1"), parse_version("24.8.4.13"), parse_version("26.9.2.1-x")
    ((18, 16, 1), (24, 8, 4, 13), (26, 9, 2, 1))
    """
    parts = []
    for piece in text.split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


# ------------------------------------------------------------------ retention
def retention_cutoff(today: dt.date, days: int) -> int:
    """The oldest ``toYYYYMMDD(day)`` partition kept when keeping ``days`` days."""
    first_kept = today - dt.timedelta(days=days - 1)
    return first_kept.year * 10_000 + first_kept.month * 100 + first_kept.day


def expired_partitions(partitions: list[str], cutoff: int) -> list[str]:
    """Partition ids (``YYYYMMDD``) older than ``cutoff``."""
    return sorted(p for p in partitions if p.isdigit() and int(p) < cutoff)
