"""SQL of the business dashboards over the ClickHouse history (see streams/history_schema).

Each :class:`Query` is plain ClickHouse SQL that runs unchanged on ClickHouse 18.16 and on
current releases (no CTEs, no ``toStartOfInterval``, no newer-only functions). Placeholders:
``{db}`` (history database), ``{from_ms}`` and ``{to_ms}`` (time range, epoch milliseconds,
half-open). Grafana panels substitute their own range macros for them; :func:`render` fills
them in for any other client. Every query filters on ``day`` first (partition pruning) and
reads the tables whose rows may be duplicated with ``FINAL``, so a record stored twice
(after a crash) is counted once.

>>> sql = render(QUERIES["gmv_per_minute"], "livepulse", 0, 60_000)
>>> "livepulse.live_events FINAL" in sql and "{" not in sql
True
>>> sorted(QUERIES)[:3]
['anomalies', 'anomalies_per_hour', 'campaign_ctr_per_minute']
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.history_schema import LAYOUTS


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    title: str
    kind: str  # Grafana panel shape: "table", "timeseries" or "stat"
    sql: str
    description: str = ""


def _range(ts: str) -> str:
    """Partition pruning on ``day`` plus the exact range on the millisecond column ``ts``."""
    return (f"day >= toDate(toDateTime(intDiv({{from_ms}}, 1000), 'UTC')) "
            f"AND day <= toDate(toDateTime(intDiv({{to_ms}}, 1000), 'UTC')) "
            f"AND {ts} >= {{from_ms}} AND {ts} < {{to_ms}}")


_QUERIES = (
    Query("live_rooms", "Live rooms", "table", f"""
SELECT room_id, argMax(host_id, ts) AS host, argMax(viewers, ts) AS viewers_now,
       max(peak_viewers) AS peak, argMax(unique_viewers, ts) AS unique_viewers_total,
       argMax(orders, ts) AS orders_total, round(argMax(gmv, ts), 2) AS gmv_total,
       round(argMax(sentiment, ts), 3) AS mood, max(ts) AS last_ts
FROM {{db}}.room_insights
WHERE {_range("ts")}
GROUP BY room_id
HAVING argMax(live, ts) = 1
ORDER BY viewers_now DESC, room_id""",
          "Rooms whose latest insight in the range says live, with their latest headlines."),
    Query("viewers_per_minute", "Viewers by room", "timeseries", f"""
SELECT toStartOfMinute(time) AS t, room_id, max(viewers) AS room_viewers
FROM {{db}}.room_insights
WHERE {_range("ts")}
GROUP BY t, room_id
ORDER BY t, room_id""", "Concurrent viewers per room (highest in each minute)."),
    Query("viewers_total", "Viewers, all rooms", "timeseries", f"""
SELECT t, sum(room_viewers) AS viewers
FROM (
    SELECT toStartOfMinute(time) AS t, room_id, max(viewers) AS room_viewers
    FROM {{db}}.room_insights
    WHERE {_range("ts")}
    GROUP BY t, room_id
)
GROUP BY t
ORDER BY t""", "Concurrent viewers over all rooms (sum of each room's minute peak)."),
    Query("gmv_per_minute", "GMV", "timeseries", f"""
SELECT t, source, round(sum(value), 2) AS gmv, count() AS orders
FROM (
    SELECT toStartOfMinute(time) AS t, 'live' AS source, amount AS value
    FROM {{db}}.live_events FINAL
    WHERE type = 'purchase' AND {_range("ts")}
    UNION ALL
    SELECT toStartOfMinute(time) AS t, 'storefront' AS source,
           price * if(quantity = 0, 1, quantity) AS value
    FROM {{db}}.click_events FINAL
    WHERE type = 'purchase' AND {_range("ts")}
)
GROUP BY t, source
ORDER BY t, source""",
          "Gross merchandise value and orders per minute: live-room purchases (order value) "
          "and storefront purchases (price x quantity)."),
    Query("gmv_by_room", "GMV by room", "table", f"""
SELECT room_id, round(sum(amount), 2) AS gmv, count() AS orders,
       uniqExact(user_pid) AS buyers,
       round(if(count() = 0, 0, sum(amount) / count()), 2) AS avg_order_value
FROM {{db}}.live_events FINAL
WHERE type = 'purchase' AND {_range("ts")}
GROUP BY room_id
ORDER BY gmv DESC, room_id""", "Live-room GMV, orders, buyers and average order value."),
    Query("conversion_by_room", "Conversion by room", "table", f"""
SELECT room_id,
       uniqExactIf(user_pid, type = 'join') AS viewers,
       countIf(type = 'product_click') AS product_clicks,
       countIf(type = 'add_to_cart') AS add_to_carts,
       countIf(type = 'purchase') AS orders,
       round(if(product_clicks = 0, 0, add_to_carts / product_clicks), 4) AS click_to_cart,
       round(if(add_to_carts = 0, 0, orders / add_to_carts), 4) AS cart_to_order,
       round(if(viewers = 0, 0, uniqExactIf(user_pid, type = 'purchase') / viewers), 4)
           AS viewer_to_buyer
FROM {{db}}.live_events FINAL
WHERE {_range("ts")}
GROUP BY room_id
ORDER BY orders DESC, room_id""",
          "Live funnel per room: product click -> add to cart -> purchase, and the share of "
          "joining viewers who bought."),
    Query("storefront_conversion", "Storefront conversion", "timeseries", f"""
SELECT toStartOfHour(time) AS t,
       uniqExact(session_id) AS sessions,
       uniqExactIf(session_id, type = 'add_to_cart') AS sessions_with_cart,
       uniqExactIf(session_id, type = 'purchase') AS sessions_with_purchase,
       round(if(sessions = 0, 0, sessions_with_purchase / sessions), 4) AS conversion
FROM {{db}}.click_events FINAL
WHERE {_range("ts")}
GROUP BY t
ORDER BY t""", "Share of storefront sessions that put something in the cart / bought, "
          "per hour."),
    Query("triggers_by_campaign", "Triggers by campaign", "table", f"""
SELECT campaign_id, any(action) AS campaign_action, count() AS triggers,
       uniqExact(user_pid) AS users, max(campaign_version) AS latest_version,
       round(avg(ts - event_ts), 1) AS avg_decision_ms
FROM {{db}}.promo_triggers FINAL
WHERE {_range("event_ts")}
GROUP BY campaign_id
ORDER BY triggers DESC, campaign_id""",
          "Promo triggers sent per campaign, distinct users, decision latency."),
    Query("triggers_per_minute", "Triggers", "timeseries", f"""
SELECT toStartOfMinute(time) AS t, campaign_id, count() AS triggers
FROM {{db}}.promo_triggers FINAL
WHERE {_range("event_ts")}
GROUP BY t, campaign_id
ORDER BY t, campaign_id""", "Promo triggers sent per minute and campaign."),
    Query("uplift_by_campaign", "Uplift by campaign", "table", f"""
SELECT campaign_id,
       countIf(kind = 'trigger' AND exp_group = 'treatment') AS treated,
       countIf(kind = 'trigger' AND exp_group = 'holdout') AS held_out,
       countIf(kind = 'conversion' AND exp_group = 'treatment') AS treated_conversions,
       countIf(kind = 'conversion' AND exp_group = 'holdout') AS holdout_conversions,
       round(if(treated = 0, 0, treated_conversions / treated), 4) AS treated_rate,
       round(if(held_out = 0, 0, holdout_conversions / held_out), 4) AS holdout_rate,
       round(treated_rate - holdout_rate, 4) AS uplift,
       round(sumIf(cost, kind = 'trigger'), 2) AS cost,
       round(sumIf(value, kind = 'conversion' AND exp_group = 'treatment'), 2)
           AS treated_revenue
FROM {{db}}.attribution FINAL
WHERE {_range("trigger_ts")}
GROUP BY campaign_id
ORDER BY campaign_id""",
          "Experiment per campaign, cohorts by trigger time: conversion rate of users sent "
          "a trigger minus that of the held-out users (uplift), spend and revenue."),
    Query("campaign_variants", "Campaigns by variant and channel", "table", f"""
SELECT campaign_id, variant, channel,
       countIf(type = 'delivered') AS delivered, countIf(type = 'shown') AS exposures,
       uniqExactIf(user_pid, type = 'shown') AS users_shown,
       countIf(type = 'clicked') AS clicks,
       uniqExactIf(user_pid, type = 'clicked') AS users_clicked,
       countIf(type = 'converted') AS conversions,
       round(if(exposures = 0, 0, clicks / exposures), 4) AS ctr,
       round(if(clicks = 0, 0, conversions / clicks), 4) AS cvr,
       round(sumIf(value, type = 'converted'), 2) AS revenue
FROM {{db}}.ad_feedback FINAL
WHERE {_range("ts")}
GROUP BY campaign_id, variant, channel
ORDER BY campaign_id, variant, channel""",
          "Ad-system feedback per campaign x variant x channel: exposures (shown) and the "
          "distinct users shown / clicking (participation), CTR = clicks / exposures, "
          "CVR = conversions / clicks, revenue of the converted feedback."),
    Query("campaign_ctr_per_minute", "CTR by campaign and variant", "timeseries", f"""
SELECT toStartOfMinute(time) AS t, concat(campaign_id, ' ', variant) AS campaign_variant,
       round(if(countIf(type = 'shown') = 0, 0,
                countIf(type = 'clicked') / countIf(type = 'shown')), 4) AS ctr
FROM {{db}}.ad_feedback FINAL
WHERE {_range("ts")}
GROUP BY t, campaign_variant
ORDER BY t, campaign_variant""", "Clicks per exposure, per minute of feedback time."),
    Query("campaign_roas", "Campaign ROAS, uplift and before/after", "table", f"""
SELECT campaign_id, revenue, cost, round(if(cost = 0, 0, revenue / cost), 3) AS roas,
       treated_rate, holdout_rate, round(treated_rate - holdout_rate, 4) AS uplift,
       baseline_rate, round(treated_rate - baseline_rate, 4) AS before_after_change
FROM (
    SELECT campaign_id, round(sumIf(value, type = 'converted'), 2) AS revenue
    FROM {{db}}.ad_feedback FINAL
    WHERE {_range("ts")}
    GROUP BY campaign_id
) AS feedback ANY LEFT JOIN (
    SELECT campaign_id, round(sumIf(cost, kind = 'trigger'), 2) AS cost,
           round(if(countIf(kind = 'trigger' AND exp_group = 'treatment') = 0, 0,
                    countIf(kind = 'conversion' AND exp_group = 'treatment')
                    / countIf(kind = 'trigger' AND exp_group = 'treatment')), 4)
               AS treated_rate,
           round(if(countIf(kind = 'trigger' AND exp_group = 'holdout') = 0, 0,
                    countIf(kind = 'conversion' AND exp_group = 'holdout')
                    / countIf(kind = 'trigger' AND exp_group = 'holdout')), 4)
               AS holdout_rate,
           round(if(countIf(kind = 'trigger' AND exp_group = 'baseline') = 0, 0,
                    countIf(kind = 'conversion' AND exp_group = 'baseline')
                    / countIf(kind = 'trigger' AND exp_group = 'baseline')), 4)
               AS baseline_rate
    FROM {{db}}.attribution FINAL
    WHERE {_range("trigger_ts")}
    GROUP BY campaign_id
) AS experiment USING campaign_id
ORDER BY campaign_id""",
          "Revenue of the converted feedback over the cost of the triggers sent (ROAS); "
          "conversion rates of treated, held-out and pre-campaign (baseline: the target "
          "audience before starts_at) cohorts; uplift (treated - holdout) beside the "
          "naive before/after change (treated - baseline)."),
    Query("campaign_metrics_daily", "Campaign metrics by day", "table", """
SELECT day, campaign_id, variant, sum(shown) AS exposures, sum(reach) AS users_shown,
       sum(clicked) AS clicks, sum(converted) AS conversions,
       round(if(exposures = 0, 0, clicks / exposures), 4) AS ctr,
       round(sum(revenue), 2) AS revenue
FROM {db}.campaign_metrics
WHERE day >= toDate(toDateTime(intDiv({from_ms}, 1000), 'UTC'))
  AND day <= toDate(toDateTime(intDiv({to_ms}, 1000), 'UTC'))
GROUP BY day, campaign_id, variant
ORDER BY day DESC, campaign_id, variant""",
          "The campaign_metrics view (per day; users_shown sums each channel's distinct "
          "users)."),
    Query("anomalies", "Anomaly incidents", "table", f"""
SELECT anomaly_id, any(scope) AS incident_scope, any(scope_id) AS incident_scope_id,
       any(metric) AS incident_metric, argMax(severity, ts) AS latest_severity,
       min(first_seen) AS started_ms, maxIf(ts, status = 'resolved') AS resolved_ms,
       round((max(last_seen) - min(first_seen)) / 1000, 1) AS duration_s,
       max(score) AS peak_score, argMax(explanation, ts) AS latest_explanation
FROM {{db}}.anomalies FINAL
WHERE {_range("first_seen")}
GROUP BY anomaly_id
ORDER BY started_ms DESC
LIMIT 500""", "Incidents first seen in the range (resolved_ms 0: still open)."),
    Query("anomalies_per_hour", "Incidents", "timeseries", f"""
SELECT toStartOfHour(time) AS t, scope, metric, count() AS incidents
FROM {{db}}.anomalies FINAL
WHERE status = 'open' AND {_range("first_seen")}
GROUP BY t, scope, metric
ORDER BY t, scope, metric""", "Incidents opened per hour, by scope and metric."),
    Query("recommendations_served", "Recommendations served", "stat", f"""
SELECT count() AS served, uniqExact(user_pid) AS users,
       round(avg(length(item_ids)), 1) AS avg_items
FROM {{db}}.recommendations FINAL
WHERE {_range("ts")}""", "Recommendations served in the range, users reached, list length."),
)
QUERIES: dict[str, Query] = {q.name: q for q in _QUERIES}


def render(query: Query, database: str, from_ms: int, to_ms: int) -> str:
    """The query's SQL with its placeholders filled in (integers and a checked name only)."""
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name must be letters, digits and '_': {database!r}")
    return query.sql.strip().format(db=database, from_ms=int(from_ms), to_ms=int(to_ms))


def duplicates_sql(database: str) -> str:
    """Rows stored, distinct keys and not yet merged duplicates of every history table.

    >>> "uniqExact(room_id, ts)" in duplicates_sql("livepulse")
    True
    """
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name must be letters, digits and '_': {database!r}")
    parts = [f"SELECT '{t.name}' AS table_name, count() AS rows, "
             f"uniqExact({', '.join(t.order_by)}) AS distinct_keys, "
             f"count() - uniqExact({', '.join(t.order_by)}) AS duplicates "
             f"FROM {database}.{t.name}" for t in LAYOUTS]
    return "\nUNION ALL\n".join(parts)
