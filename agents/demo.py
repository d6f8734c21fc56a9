"""``livepulse demo``: broker, worker processes, simulator and observer in one process group.

The supervisor starts the embedded broker (unless ``LIVEPULSE_KAFKA_URL`` is set), creates
the topics, starts ``livepulse worker`` processes, drives the simulator (with scenarios and
a small share of deliberately bad events), counts what lands on the output topics, and at
the end prints one JSON summary line. Children are stopped in order (simulator, workers,
broker) on normal exit, on Ctrl-C and on errors; each child also dies with the supervisor
(``PR_SET_PDEATHSIG``), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka.structs import ConsumerRecord

from agents.preflight import StartupError, kafka_problem, port_problem, store_warnings
from agents.sinks.embedded_clickhouse import ClickHouseServer, clickhouse_server_available
from agents.sinks.embedded_redis import RedisServer, ping, redis_server_available
from agents.sinks.redis import RedisSink
from config.settings import Settings, redact_url
from streams.admin import ensure_topics
from streams.broker import BrokerProcess, _die_with_parent, local_broker
from streams.control import ControlTopicReader
from streams.security import kafka_client_options
from streams.simulator import SimStats, Simulator, run_simulation
from streams.topics import TopicNames, topic_names

log = logging.getLogger("livepulse.demo")

WORKER_READY_TIMEOUT_S = 120.0
WORKER_STOP_TIMEOUT_S = 45.0
KEPT_UP_DRAIN_S = 5.0  # inputs consumed this soon after the producer stopped: kept up
DRAIN_TIMEOUT_S = 20.0
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
INSIGHT_GROUPS = ("audience", "engagement", "mood", "commerce", "windows")
PROFILE_GROUPS = ("rfm", "affinities", "tags")


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen[bytes]
    web_url: str
    log_path: Path
    api_token: str = field(default="", repr=False)  # sent to the worker's API when set

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}


def start_worker(settings: Settings, bootstrap: str, index: int) -> WorkerProcess:
    port = settings.web_port + index
    data_dir = Path(settings.data_dir)
    log_path = data_dir / "logs" / f"worker-{index}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        **settings.to_env(),
        "LIVEPULSE_KAFKA_URL": bootstrap,
        "LIVEPULSE_WEB_PORT": str(port),
        "LIVEPULSE_DATA_DIR": str(data_dir / f"worker-{index}"),
    }
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"], env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    return WorkerProcess(index, process, f"http://{settings.web_host}:{port}", log_path,
                         settings.api_token)


def stop_workers(workers: list[WorkerProcess], timeout: float = WORKER_STOP_TIMEOUT_S) -> bool:
    """SIGTERM every worker, wait for all; kill stragglers. True if all stopped by themselves."""
    clean = True
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for worker in workers:
        try:
            worker.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            clean = False
            worker.process.kill()
            worker.process.wait(10)
    return clean


async def fetch_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            if resp.status == 200:
                return await resp.json()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    return None


async def wait_workers_ready(workers: list[WorkerProcess], timeout: float) -> None:
    """Until every worker holds partitions and has recovered their tables (so the first
    events are not measured waiting for a rebalance)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            for worker in workers:
                if worker.process.poll() is not None:
                    why = last_error(worker.log_path)
                    raise StartupError(f"worker {worker.index} exited with code "
                                       f"{worker.process.returncode}" + (f": {why}" if why else "")
                                       + f" (log: {worker.log_path})")
            states = [await fetch_json(session, f"{w.web_url}/healthz") for w in workers]
            if all(s and s.get("ready") for s in states):
                return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"workers not ready within {timeout:.0f} s")


def last_error(log_path: Path) -> str:
    """The reason a worker gave for stopping: its last ``livepulse: ...`` line, else the last
    line of its log (e.g. an exception's message).

    >>> import tempfile
    >>> log = Path(tempfile.mkdtemp()) / "w.log"
    >>> _ = log.write_text("INFO start\\nlivepulse: LIVEPULSE_WEB_PORT=1: in use\\n")
    >>> last_error(log), last_error(log.with_name("none.log"))
    ('LIVEPULSE_WEB_PORT=1: in use', '')
    """
    try:
        lines = log_path.read_text(errors="replace").splitlines()[-200:]
    except OSError:
        return ""
    lines = [line.strip() for line in lines if line.strip()]
    mine = [line for line in lines if line.startswith("livepulse: ")]
    return mine[-1].removeprefix("livepulse: ") if mine else (lines[-1] if lines else "")


class OutputObserver:
    """Counts records on the output topics, independent of the workers' own counters, and
    keeps the anomaly incidents (``keep_topic``) for the summary."""

    def __init__(self, bootstrap: str, topics: list[str], keep_topic: str | None = None,
                 keep_max: int = 10_000, client_options: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options or {}
        self.topics = topics
        self.counts: dict[str, int] = dict.fromkeys(topics, 0)
        self.keep_topic = keep_topic
        self.keep_max = keep_max
        self.kept: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._reader = ControlTopicReader(
            bootstrap, topics, client_options=self.client_options, fetch_wait_ms=50,
            default_partitions=0, poll_ms=200, max_records=5000, name="the output topics")

    async def start(self) -> None:
        """Connect (raises when the broker cannot be reached), then count in a task."""
        await self._reader.start()
        self._task = asyncio.create_task(self._reader.follow(self._count))

    def _count(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self.counts[record.topic] += 1
        if record.topic == self.keep_topic and record.value is not None \
                and len(self.kept) < self.keep_max:
            with contextlib.suppress(ValueError):
                self.kept.append(json.loads(record.value))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._reader.stop()


SCENARIO_CYCLE_S = 120.0  # an open-ended demo injects the four scenarios every 2 minutes
OPEN_ENDED_HORIZON_S = 7 * 24 * 3600.0


def demo_scenarios(duration: float | None,
                   room_ids: list[str]) -> list[tuple[float, str, str | None, float]]:
    """Anomalous episodes spread over the run, so every later detector has something to see;
    an open-ended run (``duration`` None) repeats them every ``SCENARIO_CYCLE_S``, each cycle
    in other rooms, so alerts keep appearing.

    >>> [(at, name, room) for at, name, room, _ in demo_scenarios(None, ["r0", "r1", "r2"])[:6]]
    ... # doctest: +NORMALIZE_WHITESPACE
    [(36.0, 'bot_click_flood', None), (54.0, 'viewer_drop', 'r1'),
     (72.0, 'gift_fraud_burst', 'r0'), (90.0, 'checkout_outage', 'r0'),
     (156.0, 'bot_click_flood', None), (174.0, 'viewer_drop', 'r2')]
    """
    if duration is None and room_ids:
        cycles = int(OPEN_ENDED_HORIZON_S // SCENARIO_CYCLE_S)
        return [(cycle * SCENARIO_CYCLE_S + at, name, room, span)
                for cycle in range(cycles)
                for at, name, room, span in demo_scenarios(
                    SCENARIO_CYCLE_S, room_ids[cycle % len(room_ids):]
                    + room_ids[:cycle % len(room_ids)])]
    if duration is None or duration < 20 or not room_ids:
        return []
    span = max(3.0, duration * 0.08)
    first, second = room_ids[0], room_ids[min(1, len(room_ids) - 1)]
    return [
        (duration * 0.30, "bot_click_flood", None, span),
        (duration * 0.45, "viewer_drop", second, span),
        (duration * 0.60, "gift_fraud_burst", first, span),
        (duration * 0.75, "checkout_outage", first, span),
    ]


SCENARIO_SCOPES = {"bot_click_flood": "user", "viewer_drop": "room",
                   "gift_fraud_burst": "room", "checkout_outage": "room"}
SCENARIO_MATCH_S = 30.0  # an incident first seen this long after a scenario ended is not its


def summarize_anomalies(records: list[dict[str, Any]],
                        scenarios: list[dict[str, Any]]) -> dict[str, Any]:
    """Incidents seen on the anomalies topic: opened / resolved per ``scope/metric``, each
    incident once, and which incidents each injected scenario produced (same scope and
    room, first seen while it ran or shortly after).

    >>> rec = {"anomaly_id": "room:r1:5", "scope": "room", "scope_id": "r1",
    ...        "metric": "leave_rate", "severity": "warning", "first_seen": 5_000,
    ...        "last_seen": 9_000}
    >>> out = summarize_anomalies(
    ...     [{**rec, "status": "open"}, {**rec, "status": "resolved"}],
    ...     [{"name": "viewer_drop", "room_id": "r1", "start_ms": 4_000, "end_ms": 8_000}])
    >>> out["opened"], out["resolved"], out["scenarios"][0]["incidents"]
    ({'room/leave_rate': 1}, {'room/leave_rate': 1}, 1)
    """
    incidents: dict[str, dict[str, Any]] = {}
    opened: dict[str, int] = {}
    resolved: dict[str, int] = {}
    for record in records:
        key = f"{record['scope']}/{record['metric']}"
        tally = opened if record["status"] == "open" else resolved
        tally[key] = tally.get(key, 0) + 1
        seen = incidents.setdefault(record["anomaly_id"], {
            "anomaly_id": record["anomaly_id"], "scope": record["scope"],
            "scope_id": record["scope_id"], "metric": record["metric"],
            "first_seen": record["first_seen"], "opened": 0, "resolved": 0})
        seen[record["status"] if record["status"] == "resolved" else "opened"] += 1
        seen["severity"] = record["severity"]
        seen["duration_s"] = round((record["last_seen"] - record["first_seen"]) / 1000, 1)
        if record["status"] == "resolved":
            seen["explanation"] = record.get("explanation", "")
    per_scenario = []
    for run in scenarios:
        scope = SCENARIO_SCOPES.get(run["name"])
        mine = [i for i in incidents.values() if i["scope"] == scope
                and (run.get("room_id") is None or i["scope_id"] == run["room_id"])
                and run["start_ms"] - 2_000 <= i["first_seen"]
                <= run["end_ms"] + SCENARIO_MATCH_S * 1000]
        per_scenario.append({
            "name": run["name"], "room_id": run.get("room_id"), "incidents": len(mine),
            "resolved": sum(1 for i in mine if i["resolved"]),
            "scope_ids": sorted(i["scope_id"] for i in mine),
            "metrics": sorted({i["metric"] for i in mine})})
    listed = sorted(incidents.values(), key=lambda i: i["first_seen"])
    return {"opened": opened, "resolved": resolved,
            "open_at_end": sum(1 for i in incidents.values() if not i["resolved"]),
            "scenarios": per_scenario, "incidents": listed[:50]}


def merge_stats(stats: list[dict[str, Any]], inputs: list[str]) -> dict[str, Any]:
    events_in: dict[str, int] = dict.fromkeys(inputs, 0)
    reasons: dict[str, int] = {}
    dead = 0
    latencies: dict[str, list[float]] = {}
    for s in stats:
        for topic, n in s.get("events_in", {}).items():
            if topic in events_in:
                events_in[topic] += n
        dead += s.get("dead_letters", 0)
        for reason, n in s.get("dead_letters_by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
        for topic, samples in s.get("latency_samples_ms", {}).items():
            latencies.setdefault(topic, []).extend(samples)
    latency = {t: _percentiles(v) for t, v in latencies.items()}
    return {"events_in": events_in, "dead_letters": dead, "dead_letters_by_reason": reasons,
            "latency_ms": latency}


def _percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)

    return {"count": len(ordered), "p50": pick(0.50), "p99": pick(0.99), "max": pick(1.0)}


PROGRESS_INTERVAL_S = 5.0


def progress_line(elapsed_s: float, sent: int, processed: int, outputs: int,
                  p99_ms: float | None, incidents_open: int, incidents: int,
                  rate_in: float, rate_out: float) -> str:
    """One line of the demo's progress (stderr, every ``PROGRESS_INTERVAL_S``).

    >>> print(progress_line(15.2, 4512, 4498, 9012, 38.4, 1, 2, 300.4, 299.0)
    ...       .replace(" · ", "\\n  "))
    livepulse demo: 15 s
      sent 4,512 (300/s)
      processed 4,498 (299/s)
      lag 14
      p99 38 ms
      outputs 9,012
      incidents 1 open, 2 seen
    """
    p99 = f"{p99_ms:.0f} ms" if p99_ms is not None else "-"
    return (f"livepulse demo: {elapsed_s:.0f} s · sent {sent:,} ({rate_in:.0f}/s) · processed "
            f"{processed:,} ({rate_out:.0f}/s) · lag {max(0, sent - processed):,} · p99 {p99} "
            f"· outputs {outputs:,} · incidents {incidents_open} open, {incidents} seen")


def incident_counts(records: list[dict[str, Any]]) -> tuple[int, int]:
    """(open now, seen) incidents among the anomaly records observed so far.

    >>> incident_counts([{"anomaly_id": "a", "status": "open"}, {"anomaly_id": "b",
    ...                  "status": "open"}, {"anomaly_id": "a", "status": "resolved"}])
    (1, 2)
    """
    last = {r["anomaly_id"]: r["status"] for r in records}
    return sum(status != "resolved" for status in last.values()), len(last)


async def report_progress(workers: list[WorkerProcess], sim_stats: SimStats,
                          observer: OutputObserver, names: TopicNames,
                          interval_s: float = PROGRESS_INTERVAL_S) -> None:
    """Print a progress line every ``interval_s`` until cancelled."""
    inputs = set(names.inputs())
    started = time.monotonic()
    last_t, last_sent, last_done = started, 0, 0
    while True:
        await asyncio.sleep(interval_s)
        stats = await _collect(workers)
        now = time.monotonic()
        done = sum(consumed(s, inputs) for s in stats)
        p99s = [p for s in stats
                if (p := s.get("latency_ms", {}).get(names.room_insights, {}).get("p99"))
                is not None]
        span = max(now - last_t, 1e-6)
        print(progress_line(now - started, sim_stats.total, done,
                            sum(observer.counts.values()), max(p99s) if p99s else None,
                            *incident_counts(observer.kept),
                            (sim_stats.total - last_sent) / span, (done - last_done) / span),
              file=sys.stderr, flush=True)
        last_t, last_sent, last_done = now, sim_stats.total, done


async def drive(settings: Settings, bootstrap: str, workers: list[WorkerProcess],
                names: TopicNames, duration: float | None,
                stop: asyncio.Event) -> dict[str, Any]:
    await wait_workers_ready(workers, WORKER_READY_TIMEOUT_S)
    client_options = kafka_client_options(settings)
    observer = OutputObserver(bootstrap, names.outputs(), keep_topic=names.anomalies,
                              client_options=client_options)
    await observer.start()
    sim = Simulator(seed=settings.sim_seed, rooms=settings.sim_rooms, users=settings.sim_users,
                    items=settings.sim_items, bad_rate=settings.sim_bad_rate)
    scenarios = demo_scenarios(duration, sim.room_ids)
    print(f"livepulse demo: broker {bootstrap} · {len(workers)} worker(s)", flush=True)
    for w in workers:
        print(f"  host page   {w.web_url}/        (live rooms; /rooms/<id> for one room)",
              flush=True)
        print(f"  JSON API    {w.web_url}/api/rooms · /api/rooms/<id>/insights · "
              f"/api/users/<id>/profile · /api/stats", flush=True)
        print(f"  anomalies   {w.web_url}/api/anomalies (open and recently resolved)",
              flush=True)
        print(f"  metrics     {w.web_url}/metrics", flush=True)
    print(f"  kafka       {bootstrap} (bootstrap address); promo triggers as they fire:",
          flush=True)
    print(f"              LIVEPULSE_KAFKA_URL={bootstrap} livepulse tail {names.promo_triggers}",
          flush=True)
    if settings.redis_url.strip():
        print(f"  redis       {redact_url(settings.redis_url)} (keys "
              f"{settings.redis_namespace}:room:<id>, {settings.redis_namespace}:user:<id>)",
              flush=True)
    if scenarios:
        every = f" every {SCENARIO_CYCLE_S:.0f} s" if duration is None else ""
        print(f"  scenarios   {', '.join(name for _, name, _, _ in scenarios[:4])}{every}, "
              f"from {scenarios[0][0]:.0f} s (alerts on /api/anomalies)", flush=True)
    print(f"  logs        {Path(settings.data_dir) / 'logs'}", flush=True)
    if settings.api_token:
        print("  access      bearer token required: LIVEPULSE_API_TOKEN (pages: ?token=...); "
              "a room's host link: livepulse host-token ROOM --url URL", flush=True)
    sim_stats = SimStats()
    progress = asyncio.create_task(report_progress(workers, sim_stats, observer, names))
    try:
        await run_simulation(
            bootstrap, names, sim, rate=settings.sim_rate, duration=duration or 1e9, stop=stop,
            scenarios=scenarios, client_options=client_options, stats=sim_stats)
        produced = sim_stats.to_dict()
        stats, drained = await _drain(workers, produced["total"], names)
        progress.cancel()
        # let the last changed rooms emit once more after the final events
        await asyncio.sleep(settings.insights_max_interval_ms / 1000.0 + 0.3)
        stats = await _collect(workers) or stats
        serving = await check_serving(settings, workers)
        history = await check_history(settings, stats, names)
    finally:
        progress.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await progress
        await observer.stop()
    merged = merge_stats(stats, names.inputs())
    anomalies = summarize_anomalies(observer.kept, produced.get("scenarios", []))
    return {"produced": produced, "observed_out": observer.counts, "serving": serving,
            "anomalies": anomalies, "history": history, "drain": drained, **merged}


async def check_history(settings: Settings, stats: list[dict[str, Any]],
                        names: TopicNames) -> dict[str, Any]:
    """Rows per ClickHouse history table once the raw events the workers admitted are all
    stored (waits up to 15 s for the sinks' last batches)."""
    if not settings.clickhouse_url.strip():
        return {}
    from agents.sinks.clickhouse import history_counts

    admitted = sum(n for s in stats for t, n in s.get("events_in", {}).items()
                   if t in (names.live_events, names.clicks))
    counts: dict[str, int] = {}
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            counts = await asyncio.to_thread(history_counts, settings.clickhouse_url)
        if counts.get("live_events", 0) + counts.get("click_events", 0) >= admitted:
            break
        await asyncio.sleep(0.5)
    return {"rows": counts, "raw_events_admitted": admitted}


def start_local_clickhouse(settings: Settings) -> ClickHouseServer | None:
    """Start a private clickhouse-server when LIVEPULSE_CLICKHOUSE_URL points here and
    nothing answers on its native port (data under ``<data dir>/clickhouse``)."""
    url = urllib.parse.urlparse(settings.clickhouse_url.strip())
    if not url.hostname or url.hostname not in LOCAL_HOSTS:
        return None
    port = url.port or 9000
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return None  # something answers there: use it
    if not clickhouse_server_available():
        print(f"livepulse demo: nothing answers at {redact_url(settings.clickhouse_url)} and "
              "clickhouse-server is not installed: no history", flush=True)
        return None
    server = ClickHouseServer(tcp_port=port, base_dir=Path(settings.data_dir) / "clickhouse")
    server.start()
    return server


def start_private_redis(settings: Settings) -> RedisServer | None:
    """The demo's own redis-server on a free loopback port (None: not installed, then the
    workers serve alone)."""
    if not redis_server_available():
        print("livepulse demo: redis-server is not installed: serving from the workers only "
              "(set LIVEPULSE_REDIS_URL to use a Redis of yours)", flush=True)
        return None
    logs = Path(settings.data_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = RedisServer(log_dir=logs)
    server.start()
    return server


def start_local_redis(settings: Settings) -> RedisServer | None:
    """Start a private redis-server when the URL points here and nothing answers there."""
    url = urllib.parse.urlparse(settings.redis_url.strip())
    if not url.hostname:
        return None
    port = url.port or 6379
    tls = url.scheme == "rediss"
    if url.hostname not in LOCAL_HOSTS or ping(port, password=url.password, tls=tls) or tls:
        return None
    if not redis_server_available():
        print(f"livepulse demo: nothing answers at {redact_url(settings.redis_url)} and "
              "redis-server is "
              "not installed: serving from the workers only", flush=True)
        return None
    server = RedisServer(port=port, log_dir=Path(settings.data_dir) / "logs",
                         password=url.password)
    server.start()
    return server


def _nonzero(value: Any) -> bool:
    """True if a group carries at least one non-zero number somewhere inside it."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, dict):
        return any(_nonzero(v) for v in value.values())
    if isinstance(value, list):
        return any(_nonzero(v) for v in value)
    return False


async def check_serving(settings: Settings, workers: list[WorkerProcess]) -> dict[str, Any]:
    """What a host and an ad system would see now: the rooms API, one active user's
    profile, and whether Redis holds the same documents."""
    web = workers[0].web_url
    async with aiohttp.ClientSession(headers=workers[0].headers()) as session:
        rooms = (await fetch_json(session, f"{web}/api/rooms") or {}).get("rooms", [])
        user = next((v["user_id"] for r in rooms for v in r["engagement"]["top_viewers"]),
                    None)
        profile = None
        if user is not None:
            profile = await fetch_json(session, f"{web}/api/users/{user}/profile")
    out: dict[str, Any] = {
        "rooms_listed": len(rooms),
        "rooms_with_all_groups_nonzero": sum(
            all(_nonzero(r.get(g)) for g in INSIGHT_GROUPS) for r in rooms),
        "rooms_with_suggestions": sum(bool(r.get("suggestions")) for r in rooms),
        "profile_user": user,
        "profile_groups_present": [g for g in PROFILE_GROUPS if profile and profile.get(g)],
    }
    if settings.redis_url.strip():
        sink = RedisSink(settings.redis_url, ttl_s=60, namespace=settings.redis_namespace,
                         ssl_ca_certs=settings.redis_tls_ca_file or None)
        try:
            in_redis = await sink.read_many("room", [r["room_id"] for r in rooms])
            out["redis_rooms"] = len(in_redis)
            out["redis_profile_matches_api"] = bool(
                user and profile and (await sink.read("user", user) or {}).get("rfm")
                == profile.get("rfm"))
            out["redis_up"] = sink.up or bool(in_redis)
        finally:
            await sink.stop()
    return out


async def _collect(workers: list[WorkerProcess]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(headers=workers[0].headers() if workers else {}) \
            as session:
        found = [await fetch_json(session, f"{w.web_url}/api/stats?samples=1") for w in workers]
    return [s for s in found if s]


def consumed(stats: dict[str, Any], inputs: set[str]) -> int:
    """Input records a worker has consumed: handled or dead-lettered.

    >>> consumed({"events_in": {"a": 5, "hop": 9}, "dead_letters_by_topic": {"a": 1}}, {"a"})
    6
    """
    return (sum(n for t, n in stats.get("events_in", {}).items() if t in inputs)
            + sum(n for t, n in stats.get("dead_letters_by_topic", {}).items() if t in inputs))


async def _drain(workers: list[WorkerProcess], produced_total: int,
                 names: TopicNames) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Wait until the workers have consumed every produced record (good or bad); return
    their stats and how the drain went: records consumed, seconds it took after the
    producer stopped (a worker that keeps up drains in well under a second)."""
    started = time.monotonic()
    deadline = started + DRAIN_TIMEOUT_S
    stats: list[dict[str, Any]] = []
    inputs = set(names.inputs())
    seen = 0
    while time.monotonic() < deadline:
        stats = await _collect(workers)
        seen = sum(consumed(s, inputs) for s in stats)
        if seen >= produced_total:
            break
        await asyncio.sleep(0.25)
    drain_s = time.monotonic() - started
    return stats, {"produced": produced_total, "consumed": seen,
                   "drain_s": round(drain_s, 2),
                   "kept_up": seen >= produced_total and drain_s <= KEPT_UP_DRAIN_S}


def run_demo(settings: Settings, duration: float | None,
             private_redis: bool = False) -> dict[str, Any]:
    """Run the whole demo; return the summary (also printed by the CLI as the last line).

    ``private_redis``: serve into a redis-server of the demo's own on a free port (the CLI
    asks for it unless ``LIVEPULSE_REDIS_URL`` is set), never a shared one on this machine.
    """
    names = topic_names(settings)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    broker: BrokerProcess | None = None
    redis: RedisServer | None = None
    clickhouse: ClickHouseServer | None = None
    workers: list[WorkerProcess] = []
    clean = False
    summary: dict[str, Any] = {}
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    def request_stop(*_: Any) -> None:
        loop.call_soon_threadsafe(stop.set)

    for index in range(settings.demo_workers):  # before anything starts: one clear line
        problem = port_problem(settings.web_host, settings.web_port + index)
        if problem:
            raise StartupError(problem + (" (demo worker i listens on LIVEPULSE_WEB_PORT + i)"
                                          if index else ""))
    if not settings.embedded_broker:
        problem = kafka_problem(settings.bootstrap_servers)
        if problem:
            raise StartupError(problem)
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.embedded_broker:
            broker = local_broker(settings.broker_engine,
                                  storage=settings.embedded_broker_storage,
                                  binary=settings.broker_bin,
                                  log_path=Path(settings.data_dir) / "logs" / "broker.log")
            (Path(settings.data_dir) / "logs").mkdir(parents=True, exist_ok=True)
            bootstrap = broker.start()
        else:
            bootstrap = settings.bootstrap_servers
        loop.run_until_complete(ensure_topics(settings, bootstrap))
        if private_redis:
            redis = start_private_redis(settings)
            settings = settings.with_overrides(redis_url=redis.url if redis else "")
        else:
            redis = start_local_redis(settings)
        if settings.clickhouse_url.strip():
            from agents.privacy import pseudonym_key

            clickhouse = start_local_clickhouse(settings)
            # every worker writes one history: one pseudonym key for all of them
            settings = settings.with_overrides(pseudonym_key=pseudonym_key(settings).decode())
        for warning in store_warnings(settings.redis_url, settings.clickhouse_url):
            print(f"livepulse demo: {warning}", flush=True)  # the workers start regardless
        workers = [start_worker(settings, bootstrap, i) for i in range(settings.demo_workers)]
        summary = loop.run_until_complete(
            drive(settings, bootstrap, workers, names, duration, stop))
    finally:
        clean = stop_workers(workers)
        if broker:
            broker.stop()
        if redis:
            redis.stop()
        if clickhouse:
            clickhouse.stop()
        loop.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    latency = summary.get("latency_ms", {}).get(names.room_insights, {})
    produced = summary.get("produced", {})
    return {
        "duration_s": round(time.monotonic() - started, 1),
        "broker": f"local-{settings.broker_engine}" if broker else bootstrap,
        "workers": settings.demo_workers,
        "events_in": summary.get("events_in", {}),
        "events_out": summary.get("observed_out", {}),
        "dead_letters": summary.get("dead_letters", 0),
        "dead_letters_by_reason": summary.get("dead_letters_by_reason", {}),
        "bad_injected": sum(produced.get("bad", {}).values()),
        "produced": produced.get("produced", {}),
        "scenarios": [s["name"] for s in produced.get("scenarios", [])],
        "latency_ms": summary.get("latency_ms", {}),
        "e2e_latency_p50_ms": latency.get("p50"),
        "e2e_latency_p99_ms": latency.get("p99"),
        "p99_objective_ms": settings.demo_p99_objective_ms,
        # did the engine keep up with the simulator? (every input consumed, and quickly)
        "kept_up": summary.get("drain", {}).get("kept_up"),
        "lag_at_end": max(0, summary.get("drain", {}).get("produced", 0)
                          - summary.get("drain", {}).get("consumed", 0)),
        "redis": redact_url(settings.redis_url) if settings.redis_url.strip() else None,
        "drain": summary.get("drain", {}),
        "serving": summary.get("serving", {}),
        "anomalies": summary.get("anomalies", {}),
        "history": summary.get("history", {}),
        "clean_shutdown": clean,
    }


def human_summary(summary: dict[str, Any]) -> list[str]:
    """A few plain lines on how the demo went, printed before its JSON line; the first says
    whether the worker kept up, and a ``WARNING`` line says when it fell behind or its p99
    latency missed the objective (``p99_objective_ms``).

    >>> ok = {"duration_s": 25.4, "produced": {"live": 6000, "clicks": 1500, "catalog": 20},
    ...       "drain": {"produced": 7520, "consumed": 7520, "drain_s": 0.3, "kept_up": True},
    ...       "lag_at_end": 0, "e2e_latency_p50_ms": 12.0, "e2e_latency_p99_ms": 48.5,
    ...       "dead_letters": 15, "bad_injected": 15, "scenarios": ["viewer_drop"],
    ...       "anomalies": {"opened": {"room/leave_rate": 2}}, "clean_shutdown": True}
    >>> print("\\n".join(human_summary(ok)))
    livepulse demo: 25.4 s, 7,520 events sent, all processed (lag 0 at the end, drained in 0.3 s)
      latency p50 12 ms, p99 48 ms (input event -> room insight)
      dead letters 15 (bad events injected: 15); incidents opened 2 (scenarios injected: 1)
      every process stopped cleanly
    >>> print(human_summary({**ok, "p99_objective_ms": 40.0})[2])
      WARNING: p99 48 ms is above the objective of 40 ms (LIVEPULSE_DEMO_P99_OBJECTIVE_MS): \
lower --rate, add --workers or see the README's Troubleshooting
    >>> behind = {**ok, "drain": {"produced": 7520, "consumed": 6000, "drain_s": 20.0,
    ...           "kept_up": False}, "lag_at_end": 1520}
    >>> print(human_summary(behind)[0])  # doctest: +ELLIPSIS
    livepulse demo: WARNING: the worker fell behind: 1,520 of 7,520 events not processed ...
    """
    drain = summary.get("drain") or {}
    sent = drain.get("produced", sum((summary.get("produced") or {}).values()))
    lag = summary.get("lag_at_end", 0)
    took = f"{summary.get('duration_s', 0):.1f} s"
    if not drain:
        lines = [f"livepulse demo: stopped after {took} before the simulator ran"]
    elif drain.get("kept_up"):
        lines = [f"livepulse demo: {took}, {sent:,} events sent, all processed (lag 0 at the "
                 f"end, drained in {drain.get('drain_s', 0):.1f} s)"]
    else:
        lines = [f"livepulse demo: WARNING: the worker fell behind: {lag:,} of {sent:,} events "
                 f"not processed {drain.get('drain_s', 0):.0f} s after the simulator stopped "
                 f"(lag {lag:,} at the end; latency and outputs understate the load). Lower "
                 "--rate or add --workers"
                 if lag else
                 f"livepulse demo: WARNING: the worker fell behind: it needed "
                 f"{drain.get('drain_s', 0):.1f} s after the simulator stopped to process "
                 f"all {sent:,} events (lag 0 only at the end). Lower --rate or add --workers"]
    p50, p99 = summary.get("e2e_latency_p50_ms"), summary.get("e2e_latency_p99_ms")
    if p99 is not None:
        lines.append(f"  latency p50 {p50:.0f} ms, p99 {p99:.0f} ms (input event -> room "
                     "insight)")
        objective = summary.get("p99_objective_ms")
        if objective is not None and p99 > objective:
            lines.append(f"  WARNING: p99 {p99:.0f} ms is above the objective of "
                         f"{objective:.0f} ms (LIVEPULSE_DEMO_P99_OBJECTIVE_MS): lower --rate, "
                         "add --workers or see the README's Troubleshooting")
    opened = sum((summary.get("anomalies") or {}).get("opened", {}).values())
    lines.append(f"  dead letters {summary.get('dead_letters', 0):,} (bad events injected: "
                 f"{summary.get('bad_injected', 0):,}); incidents opened {opened} (scenarios "
                 f"injected: {len(summary.get('scenarios') or [])})")
    lines.append("  every process stopped cleanly" if summary.get("clean_shutdown")
                 else "  WARNING: some process had to be killed at shutdown (see the logs)")
    return lines
