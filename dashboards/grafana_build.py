"""The Grafana dashboards, as code: ``python -m dashboards.grafana_build [--check]``.

Writes ``dashboards/grafana/*.json`` (provisioned by ``config/grafana/``); ``--check`` exits
non-zero when the files differ from what this module builds (CI runs it, like
``livepulse schemas --check``). Four dashboards:

* **Ops** — throughput, dead letters, end-to-end latency and its SLO, consumer lag,
  rebalances, worker health, Redis and ClickHouse sinks (Prometheus);
* **Business** — live rooms, viewers, GMV, conversion, triggers and uplift (Prometheus, now)
  and the history panels of :mod:`dashboards.clickhouse_sql` (ClickHouse);
* **Models** — recommender and propensity quality over time, anomaly incidents;
* **Campaigns** — per campaign x variant: CTR, CVR, ROAS, uplift beside the before/after
  change, exposures and participation (Prometheus, the deployment-wide campaign gauges), and
  the ad-feedback history (ClickHouse).

Prometheus panels filter on the ``$instance`` variable (all workers by default); ClickHouse
panels run the queries of :data:`dashboards.clickhouse_sql.QUERIES` with ``{db}``,
``{from_ms}``, ``{to_ms}`` replaced by ``${db}``, ``${__from}``, ``${__to}`` (Grafana's range
in epoch milliseconds).

>>> boards = build()
>>> sorted(boards)  # doctest: +NORMALIZE_WHITESPACE
['livepulse-business.json', 'livepulse-campaigns.json', 'livepulse-models.json',
 'livepulse-ops.json']
>>> all(p["datasource"]["uid"] in (PROMETHEUS["uid"], CLICKHOUSE["uid"])
...     for b in boards.values() for p in panels_of(b))
True
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboards import GRAFANA_DIR
from dashboards.clickhouse_sql import QUERIES

PROMETHEUS = {"type": "prometheus", "uid": "livepulse-prometheus"}
CLICKHOUSE = {"type": "grafana-clickhouse-datasource", "uid": "livepulse-clickhouse"}
JOB = "livepulse"  # the scrape job of config/prometheus/prometheus.yml
SLO_SECONDS = "1.0"  # the latency SLO bucket (config/prometheus/livepulse-rules.yml)
INSTANCE = 'instance=~"$instance"'
RATE = "$__rate_interval"
# ClickHouse plugin (v4) result formats
CH_FORMAT = {"timeseries": 0, "table": 1, "stat": 1}
GRID_WIDTH = 24


def m(name: str, *matchers: str) -> str:
    """A selector of ``name`` on the selected workers plus ``matchers``.

    >>> m("livepulse_redis_up")
    'livepulse_redis_up{instance=~"$instance"}'
    >>> m("livepulse_events_in_total", 'type="purchase"')
    'livepulse_events_in_total{instance=~"$instance",type="purchase"}'
    """
    return f"{name}{{{','.join((INSTANCE, *matchers))}}}"


def eq(label: str, value: str) -> str:
    """An equality matcher: ``eq("type", "purchase")`` -> ``type="purchase"``."""
    return f'{label}="{value}"'


def rate(name: str, *matchers: str, window: str = RATE) -> str:
    return f"rate({m(name, *matchers)}[{window}])"


def quantile(q: float, histogram: str, by: str = "", *matchers: str) -> str:
    """``histogram_quantile`` of a ``*_seconds`` (or other) histogram, grouped by ``by``."""
    keep = ", ".join(x for x in ("le", by) if x)
    return (f"histogram_quantile({q}, sum by ({keep}) "
            f"({rate(histogram + '_bucket', *matchers)}))")


def or_zero(expr: str) -> str:
    """Series that exist only once something happened (errors): 0 until then."""
    return f"({expr}) or vector(0)"


@dataclass(frozen=True)
class Q:
    """One Prometheus query of a panel."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries, stat, table
    queries: Sequence[Q] = ()
    unit: str = "short"
    description: str = ""
    width: int = 8
    height: int = 8
    sql: str = ""  # name of a dashboards.clickhouse_sql query: a ClickHouse panel
    options: dict[str, Any] = field(default_factory=dict)


def ch(name: str, width: int = 12, unit: str = "short") -> Panel:
    """The ClickHouse panel of query ``name`` (title, shape and description from it)."""
    query = QUERIES[name]
    return Panel(query.title, query.kind, unit=unit, description=query.description,
                 width=width, sql=name)


def grafana_sql(name: str) -> str:
    """Query ``name``'s SQL with Grafana's variables for its placeholders.

    >>> sql = grafana_sql("gmv_per_minute")
    >>> "${db}.live_events FINAL" in sql and "${__to}" in sql and "{to_ms}" not in sql
    True
    """
    return QUERIES[name].sql.strip().format(db="${db}", from_ms="${__from}", to_ms="${__to}")


# ------------------------------------------------------------------ panels
def ops_rows() -> list[tuple[str, list[Panel]]]:
    inputs = 'topic!~".*user-activity"'  # internal re-keyed copy of live events
    latency = "livepulse_end_to_end_latency_seconds"
    return [
        ("Throughput", [
            Panel("Events in by topic", "timeseries", [Q(
                f"sum by (topic) ({rate('livepulse_events_in_total')})", "{{topic}}")],
                "ops", "Valid records consumed per second (user-activity: live events "
                "re-keyed by user for the user pipeline)."),
            Panel("Records out by topic", "timeseries", [Q(
                f"sum by (topic) ({rate('livepulse_events_out_total')})", "{{topic}}")],
                "ops", "Records produced per second to each output topic."),
            Panel("Dead letters by reason", "timeseries", [Q(
                f"sum by (reason) ({rate('livepulse_dead_letters_total')})", "{{reason}}")],
                "ops", "Rejected input records per second, by error class.", width=5),
            Panel("Dead-letter share", "stat", [Q(
                f"sum(increase({m('livepulse_dead_letters_total')}[$__range])) / "
                f"sum(increase({{__name__=~\"livepulse_(events_in|dead_letters)_total\","
                f"{INSTANCE},{inputs}}}[$__range]))")],
                "percentunit", "Share of the input records rejected over the time range "
                "(alert: above 1 % for 10 minutes).", width=3),
        ]),
        ("Latency", [
            Panel("End-to-end latency p50 / p99", "timeseries", [
                Q(quantile(0.5, latency, "topic"), "p50 {{topic}}"),
                Q(quantile(0.99, latency, "topic"), "p99 {{topic}}")],
                "s", "Input event time to output record produced, per output topic.",
                width=10),
            Panel("Within the 1 s SLO", "stat", [Q(
                f"sum by (topic) (increase({m(latency + '_bucket', eq('le', SLO_SECONDS))}"
                f"[$__range])) / sum by (topic) (increase({m(latency + '_count')}"
                f"[$__range]))", "{{topic}}")],
                "percentunit", "Share of output records produced within 1 s of their input "
                "event over the time range (SLO: 99 %).", width=4),
            Panel("SLO burn rate (1 h)", "timeseries", [Q(
                f"livepulse:e2e_latency_slo_errors:ratio_rate1h{{job=\"{JOB}\"}} / 0.01",
                "{{topic}}")],
                "short", "How fast the 1 % error budget burns (1 = exactly on budget; the "
                "fast-burn alert fires at 14.4 with the 5 m window agreeing).", width=5),
            Panel("Agent processing time p99", "timeseries", [Q(
                quantile(0.99, "livepulse_agent_processing_seconds", "agent"), "{{agent}}")],
                "s", "Time to process one input event, per agent.", width=5),
        ]),
        ("Kafka consumer", [
            Panel("Consumer lag by topic", "timeseries", [Q(
                f"sum by (topic) ({m('livepulse_consumer_lag_records')})", "{{topic}}")],
                "short", "Records not yet delivered to the workers' streams (log end from "
                "the last fetch minus the next offset to read).", width=9),
            Panel("Consumer lag by partition", "table", [Q(
                f"max by (instance, topic, partition) ({m('livepulse_consumer_lag_records')})")],
                "short", "Lag of every assigned partition now.", width=7),
            Panel("Rebalances", "timeseries", [
                Q(f"sum by (instance) (increase({m('livepulse_rebalances_total')}[{RATE}]))",
                  "{{instance}}"),
                Q(f"sum({m('livepulse_rebalancing')})", "rebalancing now")],
                "short", "Consumer group rebalances each worker took part in.", width=4),
            Panel("Assigned partitions", "stat", [Q(
                f"sum by (instance) ({m('livepulse_assigned_partitions')})", "{{instance}}")],
                "short", "Topic partitions (inputs, internal, changelogs) per worker.",
                width=4),
        ]),
        ("Workers", [
            Panel("Workers up", "stat", [Q(f"sum(up{{job=\"{JOB}\",{INSTANCE}}})")],
                  "short", "Workers Prometheus scraped successfully.", width=3),
            Panel("Uptime", "stat", [Q(
                f"time() - {m('livepulse_process_start_time_seconds')}", "{{instance}}")],
                "s", width=4),
            Panel("CPU", "timeseries", [Q(
                rate("livepulse_process_cpu_seconds_total"), "{{instance}}")],
                "percentunit", "CPU seconds per second of each worker process.", width=5),
            Panel("Resident memory", "timeseries", [Q(
                m("livepulse_process_resident_memory_bytes"), "{{instance}}")],
                "bytes", width=4),
            Panel("Table keys", "timeseries", [Q(
                f"sum by (table) ({m('livepulse_table_keys')})", "{{table}}")],
                "short", "Keys per Faust table over the selected workers.", width=4),
            Panel("Agent errors", "timeseries", [Q(or_zero(
                f"sum by (agent) ({rate('livepulse_agent_errors_total')})"), "{{agent}}")],
                "ops", "Unexpected errors while processing an event (the event is "
                "dead-lettered as internal).", width=4),
            Panel("Worker versions", "table", [Q(
                f"max by (instance, app_id, version, faust_version) "
                f"({m('livepulse_worker_info')})")], width=24, height=5),
        ]),
        ("Sinks", [
            Panel("Redis up", "stat", [Q(f"min({m('livepulse_redis_up')})")],
                  "short", "1 if every selected worker's last Redis write succeeded.",
                  width=3),
            Panel("Redis flush p50 / p99", "timeseries", [
                Q(quantile(0.5, "livepulse_redis_flush_seconds"), "p50"),
                Q(quantile(0.99, "livepulse_redis_flush_seconds"), "p99")], "s", width=5),
            Panel("Redis writes by kind", "timeseries", [Q(
                f"sum by (kind) ({rate('livepulse_redis_writes_total')})", "{{kind}}")],
                "ops", width=5),
            Panel("Redis pending keys, batch size p50", "timeseries", [
                Q(f"sum({m('livepulse_redis_pending_keys')})", "pending"),
                Q(quantile(0.5, "livepulse_redis_batch_keys"), "batch p50")], width=5),
            Panel("Redis errors, dropped keys", "timeseries", [
                Q(or_zero(f"sum by (operation) ({rate('livepulse_redis_errors_total')})"),
                  "errors {{operation}}"),
                Q(f"sum({rate('livepulse_redis_dropped_keys_total')})", "dropped")],
                "ops", width=6),
            Panel("ClickHouse up / paused", "stat", [
                Q(f"min({m('livepulse_clickhouse_up')})", "up"),
                Q(f"max({m('livepulse_clickhouse_paused')})", "paused")],
                "short", "History sink: last insert succeeded; fetching paused by a full "
                "buffer (backpressure).", width=3),
            Panel("ClickHouse insert p50 / p99", "timeseries", [
                Q(quantile(0.5, "livepulse_clickhouse_insert_seconds"), "p50"),
                Q(quantile(0.99, "livepulse_clickhouse_insert_seconds"), "p99")], "s",
                width=5),
            Panel("ClickHouse rows stored by table", "timeseries", [Q(
                f"sum by (table) ({rate('livepulse_clickhouse_rows_total')})", "{{table}}")],
                "ops", width=5),
            Panel("ClickHouse buffered rows, batch size p50", "timeseries", [
                Q(f"sum({m('livepulse_clickhouse_buffered_rows')})", "buffered"),
                Q(quantile(0.5, "livepulse_clickhouse_batch_rows"), "batch p50")], width=5),
            Panel("ClickHouse errors, duplicates", "timeseries", [
                Q(or_zero(f"sum by (operation) ({rate('livepulse_clickhouse_errors_total')})"),
                  "errors {{operation}}"),
                Q(or_zero(f"sum by (table) ({rate('livepulse_clickhouse_duplicates_total')})"),
                  "duplicates {{table}}")], "ops", width=6),
        ]),
    ]


def business_rows() -> list[tuple[str, list[Panel]]]:
    live = 'topic=~".*live-events"'
    inputs = 'topic!~".*user-activity"'

    def live_rate(kind: str) -> str:
        return f"sum({rate('livepulse_events_in_total', live, eq('type', kind))})"

    return [
        ("Now (Prometheus)", [
            Panel("Live rooms", "stat", [Q(f"sum({m('livepulse_live_rooms')})")], width=4),
            Panel("Viewers now", "stat", [Q(f"sum({m('livepulse_room_viewers')})")], width=4),
            Panel("GMV", "stat", [Q(f"sum(increase({m('livepulse_gmv_total')}[$__range]))")],
                  "short", "Value of the purchases in the time range (live orders and "
                  "storefront purchases).", width=4),
            Panel("Orders", "stat", [Q(
                f"sum(increase({m('livepulse_events_in_total', inputs, eq('type', 'purchase'))}"
                f"[$__range]))")], "short", "Purchase events in the time range.", width=4),
            Panel("Uplift now, by campaign", "stat", [Q(
                f"max by (campaign) ({m('livepulse_campaign_uplift')})", "{{campaign}}")],
                "percentunit", "Conversion rate of triggered users minus that of the holdout "
                "(all workers' attribution).", width=8),
            Panel("GMV per minute", "timeseries", [Q(
                f"sum by (topic) ({rate('livepulse_gmv_total')}) * 60", "{{topic}}")],
                width=8),
            Panel("Viewers and live rooms", "timeseries", [
                Q(f"sum({m('livepulse_room_viewers')})", "viewers"),
                Q(f"sum({m('livepulse_live_rooms')})", "live rooms")], width=8),
            Panel("Live funnel conversion", "timeseries", [
                Q(f"{live_rate('add_to_cart')} / {live_rate('product_click')}",
                  "product click → cart"),
                Q(f"{live_rate('purchase')} / {live_rate('add_to_cart')}", "cart → order")],
                "percentunit", "Live rooms' funnel steps over the rate window.", width=8),
            Panel("Triggers per minute", "timeseries", [Q(
                f"sum by (campaign, outcome) ({rate('livepulse_triggers_total')}) * 60",
                "{{campaign}} {{outcome}}")],
                "short", "Trigger decisions by campaign and outcome (sent, holdout, capped, "
                "...).", width=12),
            Panel("Trigger conversions", "timeseries", [Q(
                f"sum by (campaign, group) (increase("
                f"{m('livepulse_trigger_conversions_total')}[{RATE}]))",
                "{{campaign}} {{group}}")],
                "short", "Purchases attributed to a trigger, treatment vs holdout.",
                width=12),
        ]),
        ("History (ClickHouse)", [
            ch("live_rooms", 24), ch("viewers_total"), ch("viewers_per_minute"),
            ch("gmv_per_minute"), ch("gmv_by_room"), ch("conversion_by_room", 24),
            ch("storefront_conversion"), ch("triggers_per_minute"),
            ch("triggers_by_campaign"), ch("uplift_by_campaign"),
        ]),
    ]


def models_rows() -> list[tuple[str, list[Panel]]]:
    quality = "livepulse_model_quality"
    recs = 'topic=~".*recommendations"'
    return [
        ("Recommendations", [
            Panel("Recommender HR@20 / MRR@20", "timeseries", [Q(
                m(quality, 'model="recommender"'), "{{instance}} {{metric}}")],
                "percentunit", "Prequential: was the next clicked item in the top 20 served "
                "before it (hit rate), and at which rank (mean reciprocal rank).", width=9),
            Panel("Recommendations served", "timeseries", [Q(
                f"sum({rate('livepulse_events_out_total', recs)})", "per second")],
                "ops", width=5),
            Panel("Recommendation latency p99", "timeseries", [Q(
                quantile(0.99, "livepulse_end_to_end_latency_seconds", "", recs), "p99")],
                "s", "Input event to recommendation produced.", width=5),
            ch("recommendations_served", 5),
        ]),
        ("Propensity", [
            Panel("ROC AUC", "timeseries", [Q(
                m(quality, 'model=~"propensity|leave_risk"', 'metric="roc_auc"'),
                "{{instance}} {{model}}")], "short",
                "Prequential ROC AUC of the served purchase-propensity and leave-risk "
                "scores (labels arrive with delay).", width=8),
            Panel("Log loss and calibration error", "timeseries", [Q(
                m(quality, 'model=~"propensity|leave_risk"', 'metric=~"log_loss|ece"'),
                "{{instance}} {{model}} {{metric}}")], width=8),
            Panel("Examples learned", "timeseries", [Q(
                f"sum by (model) ({m('livepulse_model_examples')})", "{{model}}")], width=8),
            Panel("Model versions", "table", [Q(
                f"max by (instance, model, version) ({m('livepulse_model_info')})")],
                width=12, height=6),
            Panel("Model state fill (entries / cap)", "timeseries", [Q(
                f"max by (instance, model, store) ({m('livepulse_model_state_entries')}) / "
                f"max by (instance, model, store) ({m('livepulse_model_state_capacity')})",
                "{{instance}} {{model}} {{store}}")], "percentunit",
                "How full each bounded store of the online models is: worker memory grows "
                "until a store reaches its cap, then the oldest entries are evicted.",
                width=12, height=6),
        ]),
        ("Anomalies", [
            Panel("Incidents opened by severity", "timeseries", [Q(
                f"sum by (severity) (increase({m('livepulse_anomalies_total')}[{RATE}]))",
                "{{severity}}")], width=8),
            Panel("Incidents opened by scope", "timeseries", [Q(
                f"sum by (scope) (increase({m('livepulse_anomalies_total')}[{RATE}]))",
                "{{scope}}")], width=8),
            Panel("Open incidents", "stat", [Q(
                f"sum by (scope) ({m('livepulse_anomalies_open')})", "{{scope}}")], width=8),
            ch("anomalies", 24), ch("anomalies_per_hour", 24),
        ]),
    ]


def campaigns_rows() -> list[tuple[str, list[Panel]]]:
    by = "campaign, variant"

    def events(kind: str) -> str:
        return f"max by ({by}) ({m('livepulse_campaign_events', eq('kind', kind))})"

    def users(kind: str) -> str:
        return f"max by ({by}) ({m('livepulse_campaign_users', eq('kind', kind))})"

    legend = "{{campaign}} {{variant}}"
    return [
        ("Per variant (Prometheus)", [
            Panel("CTR", "timeseries", [Q(f"{events('clicked')} / ({events('shown')} > 0)",
                                          legend)],
                  "percentunit", "Clicks per exposure (shown), all feedback so far.", width=6),
            Panel("CVR", "timeseries", [Q(
                f"{events('converted')} / ({events('clicked')} > 0)", legend)],
                "percentunit", "Conversions per click.", width=6),
            Panel("ROAS", "timeseries", [Q(
                f"max by ({by}) ({m('livepulse_campaign_revenue')}) / "
                f"(max by ({by}) ({m('livepulse_campaign_cost')}) > 0)", legend)],
                "short", "Revenue of the converted feedback over the cost of the triggers "
                "sent (cost_per_trigger x sent).", width=6),
            Panel("Exposures and users shown", "timeseries", [
                Q(events("shown"), "exposures " + legend),
                Q(users("shown"), "users " + legend)],
                "short", "Exposures (shown feedback) and distinct users shown (reach).",
                width=6),
            Panel("Participation", "table", [Q(
                f"max by ({by}, kind) ({m('livepulse_campaign_users')})")],
                "short", "Distinct users shown, clicking and converting per variant.",
                width=8),
            Panel("Funnel per variant", "table", [Q(
                f"max by ({by}, kind) ({m('livepulse_campaign_events')})")],
                "short", "Triggers sent and feedback records by kind.", width=8),
            Panel("Feedback per second", "timeseries", [Q(
                f"sum by ({by}, type) ({rate('livepulse_ad_feedback_total')})",
                "{{campaign}} {{variant}} {{type}}")],
                "ops", "Feedback records the workers accept, by type.", width=8),
        ]),
        ("Effect (Prometheus)", [
            Panel("Uplift vs holdout", "timeseries", [Q(
                f"max by (campaign) ({m('livepulse_campaign_uplift')})", "{{campaign}}")],
                "percentunit", "Conversion rate of triggered users minus the holdout's.",
                width=8),
            Panel("Conversion rate by cohort", "timeseries", [Q(
                f"max by (campaign, group) ({m('livepulse_campaign_conversion_rate')})",
                "{{campaign}} {{group}}")],
                "percentunit", "Treatment, holdout and baseline (the target audience in the "
                "window before starts_at): before/after = treatment - baseline, beside the "
                "holdout's uplift.", width=8),
            Panel("Revenue and cost", "timeseries", [
                Q(f"max by ({by}) ({m('livepulse_campaign_revenue')})", "revenue " + legend),
                Q(f"max by ({by}) ({m('livepulse_campaign_cost')})", "cost " + legend)],
                "short", width=8),
        ]),
        ("History (ClickHouse)", [
            ch("campaign_variants", 24), ch("campaign_ctr_per_minute"), ch("campaign_roas"),
            ch("campaign_metrics_daily", 24),
        ]),
    ]


DASHBOARDS = {
    "livepulse-ops": ("livepulse · Ops", "Throughput, latency, lag, workers and sinks.",
                      ops_rows, False),
    "livepulse-business": ("livepulse · Business", "Live rooms, viewers, GMV, conversion, "
                           "promo triggers and uplift: now (Prometheus) and history "
                           "(ClickHouse).", business_rows, True),
    "livepulse-models": ("livepulse · Models", "Recommendation and propensity quality, "
                         "anomaly incidents.", models_rows, True),
    "livepulse-campaigns": ("livepulse · Campaigns", "Per campaign and variant: CTR, CVR, "
                            "ROAS, uplift and before/after, exposures and participation.",
                            campaigns_rows, True),
}


# ------------------------------------------------------------------ JSON
def _prom_target(query: Q, ref: str, instant: bool) -> dict[str, Any]:
    target: dict[str, Any] = {"refId": ref, "datasource": PROMETHEUS, "expr": query.expr,
                              "legendFormat": query.legend or "__auto", "range": not instant,
                              "instant": instant}
    if instant:
        target["format"] = "table"
    return target


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    if panel.sql:
        datasource = CLICKHOUSE
        targets = [{"refId": "A", "datasource": CLICKHOUSE, "editorType": "sql",
                    "queryType": "timeseries" if panel.kind == "timeseries" else "table",
                    "format": CH_FORMAT[panel.kind], "rawSql": grafana_sql(panel.sql)}]
    else:
        datasource = PROMETHEUS
        targets = [_prom_target(q, chr(ord("A") + i), panel.kind == "table")
                   for i, q in enumerate(panel.queries)]
    options: dict[str, Any] = {
        "timeseries": {"legend": {"displayMode": "list", "placement": "bottom",
                                  "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}},
        "stat": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                 "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "table": {"showHeader": True, "cellHeight": "sm"},
    }[panel.kind]
    options.update(panel.options)
    out: dict[str, Any] = {
        "id": panel_id, "type": panel.kind, "title": panel.title,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "datasource": datasource, "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": options,
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "table" and not panel.sql:
        out["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True}}}]
    return out


def _variables(with_db: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{
        "name": "instance", "label": "worker", "type": "query", "datasource": PROMETHEUS,
        "query": {"query": f"label_values(livepulse_worker_info{{job=\"{JOB}\"}}, instance)",
                  "refId": "instance"},
        "definition": f"label_values(livepulse_worker_info{{job=\"{JOB}\"}}, instance)",
        "refresh": 2, "includeAll": True, "multi": True, "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "sort": 1}]
    if with_db:
        out.append({"name": "db", "label": "ClickHouse database", "type": "textbox",
                    "query": "livepulse", "current": {"text": "livepulse",
                                                      "value": "livepulse"}})
    return out


def dashboard(uid: str) -> dict[str, Any]:
    """The Grafana JSON model of dashboard ``uid`` (a key of :data:`DASHBOARDS`)."""
    title, description, rows, with_db = DASHBOARDS[uid]
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row_title, row_panels in rows():
        panels.append({"id": next_id, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}, "panels": []})
        next_id, y = next_id + 1, y + 1
        x, line_height = 0, 0
        for panel in row_panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel_json(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "id": None, "uid": uid, "title": title, "description": description,
        "tags": ["livepulse"], "timezone": "browser", "editable": True, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"}, "fiscalYearStartMonth": 0, "links": [],
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": _variables(with_db)},
        "panels": panels,
    }


def build() -> dict[str, dict[str, Any]]:
    """File name -> dashboard JSON model, for every dashboard."""
    return {f"{uid}.json": dashboard(uid) for uid in DASHBOARDS}


def panels_of(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The visualisation panels of a dashboard (rows left out)."""
    for panel in board["panels"]:
        if panel["type"] != "row":
            yield panel
        yield from panel.get("panels", [])


def render(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def differences(directory: Path = GRAFANA_DIR) -> list[str]:
    """Files in ``directory`` that are missing, stale or not built by this module."""
    built = build()
    out = [name for name, board in built.items()
           if not (directory / name).exists()
           or (directory / name).read_text(encoding="utf-8") != render(board)]
    out += [p.name for p in directory.glob("*.json") if p.name not in built]
    return sorted(out)


def write(directory: Path = GRAFANA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, board in build().items():
        path = directory / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.grafana_build",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if dashboards/grafana/*.json differ from the code")
    args = parser.parse_args(argv)
    if args.check:
        stale = differences()
        for name in stale:
            print(f"stale: dashboards/grafana/{name} (run python -m dashboards.grafana_build)",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in write():
        board = json.loads(path.read_text(encoding="utf-8"))
        print(f"{path}: {sum(1 for _ in panels_of(board))} panels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
