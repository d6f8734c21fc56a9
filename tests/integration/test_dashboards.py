"""Every Prometheus panel of every dashboard answers, on a real Prometheus scraping a real
worker under simulated load.

A worker (embedded broker, Redis, ClickHouse history, a campaign with two variants and
without quiet hours so triggers and conversions happen at any time of day, and one starting
during the test, so its target audience forms a baseline cohort first) takes simulator
traffic, and the simulated ad system (streams.ad_system, delays sped up) answers its
triggers with feedback; Debian's
``prometheus`` scrapes it every second with ``config/prometheus/livepulse-rules.yml``
loaded. Each panel query, with Grafana's variables substituted as Grafana would
(``$__rate_interval``, ``$__range``, ``$instance`` = All), goes through ``/api/v1/query``
and must return at least one sample with a number (not NaN); every metric it names must
be declared on the worker's ``/metrics``, so an ``... or vector(0)`` cannot hide a typo;
the rules must evaluate without errors. The Campaigns dashboard's ClickHouse queries return
rows from the history the worker stored (every ClickHouse query also answers on the
synthetic workload of tests/integration/test_clickhouse.py), and the second campaign's
audience before its start is recorded as the baseline cohort.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from agents.sinks.clickhouse import ClickHouseWriter
from dashboards.clickhouse_sql import QUERIES, render
from dashboards.grafana_build import JOB, PROMETHEUS, build, panels_of
from streams.ad_system import AdSystemModel, VariantTruth
from streams.ad_system import run as run_ad_system
from streams.broker import _die_with_parent, free_port
from streams.simulator import Simulator, run_simulation
from streams.topics import topic_names
from tests.conftest import REPO, require, unique_settings
from tests.integration.test_clickhouse import database_url
from tests.integration.test_metrics import scrape

pytestmark = pytest.mark.integration

RULES = REPO / "config" / "prometheus" / "livepulse-rules.yml"
SCRAPE_S = 1
# Grafana's values for a 1 s scrape interval and a short time range
VARIABLES = {"$__rate_interval": "10s", "$__range": "2m", "$instance": ".*"}
LOAD_S = 120.0  # stopped as soon as every query answered
ANSWER_TIMEOUT_S = 150.0  # leave-risk AUC needs its 60 s label horizon first
TEST_CAMPAIGNS = """
campaigns:
  - id: dash-coupon
    version: 1
    name: Coupon on any live product interest (dashboard test)
    on: [product_click, add_to_cart]
    when:
      - {field: event.source, op: "==", value: live}
    action: coupon
    offer: {code: DASH5, discount_pct: 5}
    offer_ttl: 15m
    cost_per_trigger: 0.1
    caps:
      - {max: 1, per: 1h}
    holdout: 0.5
    attribution_window: 2h
    variants:
      - {id: A, copy: "5 % off now"}
      - {id: B, copy: "Your 5 % coupon"}
  - id: dash-later
    version: 1
    name: Starts during the test (its audience before the start is the baseline cohort)
    on: [product_click, add_to_cart]
    action: reminder
    offer: {text: "still thinking?"}
    cost_per_trigger: 0.05
    holdout: 0.5
    attribution_window: 2h
    starts_at: "{starts_at}"
    baseline_window: 1h
"""
# every stage of the funnel answers within seconds (ad_system delays / AD_SPEED)
AD_MODEL = AdSystemModel(variants=(VariantTruth("A", 0.5, 0.6), VariantTruth("B", 0.3, 0.4)),
                         p_show=0.9)
AD_SPEED = 30.0
METRIC_NAME = re.compile(r"\b(livepulse_[a-z0-9_]+)\b")


def substitute(expr: str) -> str:
    """``expr`` with the dashboard variables replaced, longest names first.

    >>> substitute('rate(x{instance=~"$instance"}[$__rate_interval])')
    'rate(x{instance=~".*"}[10s])'
    """
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, expr
    return expr


def prometheus_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard, panel title, query) for every Prometheus target of every dashboard."""
    for board in build().values():
        for panel in panels_of(board):
            for target in panel["targets"]:
                if target["datasource"]["uid"] == PROMETHEUS["uid"]:
                    yield board["uid"], panel["title"], substitute(target["expr"])


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def has_number(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


def declared_metrics(text: str) -> set[str]:
    """Sample names a scrape of ``/metrics`` can contain (counters with ``_total``,
    histograms with ``_bucket``/``_sum``/``_count``)."""
    names = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    require(binary is not None, "prometheus binary (Debian package prometheus)")
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                            "static_configs": [{"targets": [target]}]}]}))
    port = free_port()
    log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [str(binary), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return process, base
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("prometheus not ready in 30 s")


def test_every_prometheus_panel_answers_under_load(
        broker: Any, clickhouse_url: str, worker_factory: Any, tmp_path: Path) -> None:
    require(shutil.which("prometheus") is not None,
            "prometheus binary (Debian package prometheus)")
    campaigns = tmp_path / "campaigns.yaml"
    starts_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=40)
    campaigns.write_text(TEST_CAMPAIGNS.replace("{starts_at}", starts_at.isoformat()))
    tag = f"g{os.getpid()}x{time.monotonic_ns() % 10**9}"
    settings = unique_settings(
        tmp_path, broker, clickhouse_url=database_url(clickhouse_url, tag),
        pseudonym_key="dashboards-0123456789abcdefghijkl", clickhouse_batch_interval_ms=200,
        campaigns_file=str(campaigns))
    worker = worker_factory(settings)
    prometheus, base = start_prometheus(tmp_path, f"{settings.web_host}:{settings.web_port}")
    sim = Simulator(seed=3, rooms=4, users=400, items=150, bad_rate=0.01)
    outcome: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    names = topic_names(settings)

    async def traffic() -> Any:
        ads = asyncio.create_task(run_ad_system(
            broker.bootstrap, names.promo_triggers, names.ad_feedback, AD_MODEL,
            speed=AD_SPEED, group_id=f"{settings.app_id}-ads", from_beginning=True))
        try:
            return await run_simulation(broker.bootstrap, names, sim, rate=150.0,
                                        duration=LOAD_S, stop=stop)
        finally:
            ads.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ads

    def load() -> None:
        outcome["stats"] = loop.run_until_complete(traffic())

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    try:
        queries = list(prometheus_queries())
        declared = declared_metrics(scrape(worker.web_url))
        undeclared = {(title, name) for _, title, expr in queries
                      for name in METRIC_NAME.findall(expr) if name not in declared}
        assert undeclared == set()

        waiting = set(queries)
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while waiting and time.monotonic() < deadline:
            time.sleep(3)
            waiting = {q for q in waiting if not has_number(query(base, q[2]))}
        assert sorted(waiting) == [], f"{len(waiting)} of {len(queries)} queries without data"

        targets = get(f"{base}/api/v1/targets")["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        groups = get(f"{base}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        expected = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
        assert len(rules) == len(expected) and all(r["health"] == "ok" for r in rules), rules

        # the Campaigns dashboard's ClickHouse SQL on the history this worker stored
        history = ClickHouseWriter(settings.clickhouse_url, group="q", names=names)
        try:
            sql = [q for name, q in QUERIES.items() if name.startswith("campaign_")]
            empty = [q.name for q in sql]
            deadline = time.monotonic() + 60
            while empty and time.monotonic() < deadline:
                to_ms = int(time.time() * 1000) + 1
                empty = [q.name for q in sql if not history.execute(
                    render(q, history.database, to_ms - 3_600_000, to_ms))]
                time.sleep(0 if not empty else 2)
            assert empty == [], f"campaign queries without rows: {empty}"
            db = history.database
            groups = dict(history.execute(
                f"SELECT exp_group, count() FROM {db}.attribution FINAL WHERE campaign_id = "
                "'dash-later' AND kind = 'trigger' GROUP BY exp_group"))
            shown = history.execute(f"SELECT count(), uniqExact(user_pid) FROM {db}.ad_feedback "
                                    "FINAL WHERE type = 'shown'")[0]
        finally:
            history.close()
        assert groups.get("baseline", 0) > 0, groups  # the audience before starts_at
        report = get(f"{worker.web_url}/api/campaigns/dash-coupon/report")
        later = get(f"{worker.web_url}/api/campaigns/dash-later/report")
        print(f"\nCAMPAIGNS attribution groups of dash-later {groups}; ClickHouse shown "
              f"{shown}\nCAMPAIGNS dash-coupon variants " + json.dumps(
                  [{k: v for k, v in row.items() if not k.endswith("ci95")}
                   for row in report["variants"]])
              + "\nCAMPAIGNS dash-later before_after " + json.dumps(later["before_after"]))
        assert later["before_after"]["before"]["triggers"] > 0
        assert {r["variant"] for r in report["variants"]} == {"A", "B"}
        assert all(r["users_shown"] > 0 for r in report["variants"])
    finally:
        prometheus.terminate()
        prometheus.wait(30)
        loop.call_soon_threadsafe(stop.set)
        loader.join(60)
        loop.close()
    assert outcome["stats"].failed == 0
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
