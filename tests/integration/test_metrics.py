"""``/metrics`` of a running worker follows Prometheus conventions and has every series the
dashboards and alert rules read.

Conventions checked on the scraped text: one ``livepulse_`` prefix, ``_total`` on counters
only, base units (seconds, bytes; no ms), latency histograms whose buckets resolve 1 ms to
5 s, help text everywhere, and bounded labels (no id-like label names, no ids that were
sent appearing as label values, a bounded number of series per family).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.admin import ensure_topics
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import BAD_RECORDS, good_live_events, produce
from tests.integration.test_serving import wait_for

pytestmark = pytest.mark.integration

NAME = re.compile(r"^livepulse_[a-z0-9]+(_[a-z0-9]+)*$")
NON_BASE_UNITS = re.compile(r"_(ms|milliseconds|millis|us|microseconds|minutes|hours|kb|mb|"
                            r"kilobytes|megabytes|percent)(_|$)")
ID_LABELS = {"user_id", "user", "room_id", "room", "event_id", "session_id", "item_id",
             "request_id", "anomaly_id", "user_pid", "host_id"}
MAX_SERIES_PER_FAMILY = 500
MAX_BUCKET_RATIO = 4.0  # neighbouring bounds between 1 ms and 5 s at most this far apart
BURST = 30_000  # live events produced at once: enough for the (batched) worker to lag a while

# What the dashboards and the alert rules read, with the type each must have.
EXPECTED = {
    "livepulse_events_in": "counter", "livepulse_events_out": "counter",
    "livepulse_dead_letters": "counter", "livepulse_agent_errors": "counter",
    "livepulse_end_to_end_latency_seconds": "histogram",
    "livepulse_agent_processing_seconds": "histogram",
    "livepulse_consumer_lag_records": "gauge", "livepulse_assigned_partitions": "gauge",
    "livepulse_table_keys": "gauge", "livepulse_rebalances": "counter",
    "livepulse_rebalancing": "gauge", "livepulse_rebalance_duration_seconds": "histogram",
    "livepulse_worker_info": "gauge", "livepulse_process_cpu_seconds": "counter",
    "livepulse_process_resident_memory_bytes": "gauge",
    "livepulse_process_start_time_seconds": "gauge",
    "livepulse_live_rooms": "gauge", "livepulse_room_viewers": "gauge",
    "livepulse_gmv": "counter", "livepulse_late_events": "counter",
    "livepulse_model_quality": "gauge", "livepulse_model_examples": "gauge",
    "livepulse_model_info": "gauge", "livepulse_model_state_entries": "gauge",
    "livepulse_model_state_capacity": "gauge", "livepulse_anomalies": "counter",
    "livepulse_anomalies_open": "gauge", "livepulse_triggers": "counter",
    "livepulse_trigger_conversions": "counter", "livepulse_campaign_uplift": "gauge",
    "livepulse_redis_writes": "counter", "livepulse_redis_flush_seconds": "histogram",
    "livepulse_redis_batch_keys": "histogram", "livepulse_redis_errors": "counter",
    "livepulse_redis_pending_keys": "gauge", "livepulse_redis_up": "gauge",
    "livepulse_redis_dropped_keys": "counter",
    "livepulse_event_loop_lag_seconds": "histogram", "livepulse_event_loop_stalls": "counter",
}


def scrape(web_url: str) -> str:
    with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read().decode()


def sample_sum(text: str, name: str, topic: str) -> float:
    """Sum of the samples of ``name`` labelled with ``topic``."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'topic="{topic}"' in line)


def has_samples(text: str, name: str) -> bool:
    return any(line.startswith(name) for line in text.splitlines())


def bucket_bounds(samples: list[Sample]) -> list[float]:
    return sorted({float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")
                   and s.labels["le"] != "+Inf"})


def convention_problems(text: str, sent_ids: set[str]) -> list[str]:
    """Every way the exposition breaks the conventions (empty: none)."""
    problems = []
    for family in text_string_to_metric_families(text):
        name, kind = family.name, family.type
        if not NAME.match(name):
            problems.append(f"{name}: not livepulse_ snake case")
        if name.startswith("livepulse_livepulse") or NON_BASE_UNITS.search(name):
            problems.append(f"{name}: double prefix or non-base unit")
        if name.endswith("_created"):
            problems.append(f"{name}: _created series exposed")
        if not family.documentation.strip():
            problems.append(f"{name}: no help text")
        for sample in family.samples:
            if kind == "counter" and not sample.name.endswith("_total"):
                problems.append(f"{sample.name}: counter sample without _total")
            if kind != "counter" and sample.name.endswith("_total"):
                problems.append(f"{sample.name}: {kind} named _total")
            for label, value in sample.labels.items():
                if label in ID_LABELS:
                    problems.append(f"{name}: id label {label}")
                if value in sent_ids:
                    problems.append(f"{name}: id {value!r} as the value of {label}")
        series = {tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                  for s in family.samples}
        if len(series) > MAX_SERIES_PER_FAMILY:
            problems.append(f"{name}: {len(series)} series")
        if kind == "histogram" and name.endswith("_seconds"):
            bounds = bucket_bounds(family.samples)
            if not bounds or bounds[0] > 0.001 or bounds[-1] < 5.0:
                problems.append(f"{name}: buckets {bounds} do not cover 1 ms to 5 s")
            inner = [b for b in bounds if 0.001 <= b <= 5.0]
            if any(hi / lo > MAX_BUCKET_RATIO for lo, hi in itertools.pairwise(inner)):
                problems.append(f"{name}: buckets {inner} too coarse")
    return problems


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_metrics_follow_the_conventions_and_cover_what_dashboards_read(
        broker: Any, worker_factory: Any, tmp_path: Path, store: str) -> None:
    # the burst is 11 users sending ~2,700 events each at one instant: a flood the hot-key
    # quarantine would dead-letter (tests/unit/test_quarantine.py); here every event counts
    settings = unique_settings(tmp_path, broker, store=store, table_count_interval_s=1.0,
                               hot_key_rate=0.0)
    names = topic_names(settings)
    events = good_live_events(BURST)
    records = [(names.live_events, e["room_id"].encode(), orjson.dumps(e)) for e in events]
    records += [(names.live_events, b"room-0", raw) for raw, _ in BAD_RECORDS]
    # the burst is waiting before the worker starts, so its lag is seen while it works it
    # off (produced while the worker ran, it kept up with the producer: lag 0 at every
    # scrape in a CI run)
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce(broker.bootstrap, records))
    worker = worker_factory(settings)

    # lag while the burst is worked off: never more than what is not consumed yet, > 0 at
    # first, 0 at the end
    lags: list[float] = []
    partial: list[float] = []  # lag seen while part of the burst was not consumed yet

    def settled() -> str | None:
        try:
            text = scrape(worker.web_url)
        except TimeoutError:  # the worker busy with the burst on a loaded machine: again
            return None
        lag = sample_sum(text, "livepulse_consumer_lag_records", names.live_events)
        consumed = (sample_sum(text, "livepulse_events_in_total", names.live_events)
                    + sample_sum(text, "livepulse_dead_letters_total", names.live_events))
        assert lag + consumed <= len(records)
        lags.append(lag)
        if 0 < consumed < len(records):  # consuming (its lag measured), not done
            partial.append(lag)
        wanted = ("livepulse_end_to_end_latency_seconds_bucket", "livepulse_gmv_total",
                  "livepulse_table_keys", "livepulse_redis_flush_seconds_bucket")
        done = consumed == len(records) and lag == 0
        return text if done and all(has_samples(text, w) for w in wanted) else None

    text = wait_for(settled, timeout=90, what="the burst consumed, lag 0, series on /metrics")
    # On a loaded machine every scrape during the burst may time out (the worker busy with
    # it): the lag can then only be checked at the end. Seen mid-burst, it was above 0.
    assert not partial or max(partial) > 0, (partial, lags)
    sent_ids = {v for e in events for k, v in e.items() if k.endswith("_id")}
    assert convention_problems(text, sent_ids) == []

    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert {n: types.get(n) for n in EXPECTED} == EXPECTED
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    purchases = sum(e["amount"] for e in events if e["type"] == "purchase")
    assert purchases > 0
    assert values[("livepulse_gmv_total", (("topic", names.live_events),))] == purchases
    lag = {labels: v for (n, labels), v in values.items()
           if n == "livepulse_consumer_lag_records"}
    assert {dict(labels)["topic"] for labels in lag} >= {names.live_events}
    assert all(v >= 0 for v in lag.values())
    assert values[("livepulse_rebalances_total", ())] >= 1
    assert values[("livepulse_rebalancing", ())] == 0
    assert values[("livepulse_assigned_partitions", ())] >= settings.partitions
    assert values[("livepulse_live_rooms", ())] == len({e["room_id"] for e in events})

    def table_keys() -> dict[str, float] | None:  # RocksDB: counted every second
        found = {}
        for family in text_string_to_metric_families(scrape(worker.web_url)):
            if family.name == "livepulse_table_keys":
                found = {s.labels["table"]: s.value for s in family.samples}
        wanted = {"room-state": len({e["room_id"] for e in events}),
                  "user-profiles": len({e["user_id"] for e in events})}
        return found if all(found.get(t) == n for t, n in wanted.items()) else None

    assert set(wait_for(table_keys, timeout=60, what="keys per table")) >= {
        "room-state", "room-headlines", "user-profiles", "catalog"}
    assert worker.stop() == 0, worker.log()[-3000:]
