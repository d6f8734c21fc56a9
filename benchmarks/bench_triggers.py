"""Promo-trigger latency under load: source event sent -> trigger consumed from the topic.

    python -m benchmarks.bench_triggers [--rates 1000,5000] [--warmup 10] [--duration 30]
        [--redis redis://127.0.0.1:6379/0 | --redis ""] [--bootstrap HOST:PORT]

Per rate, two runs on the same broker (the embedded Tansu broker unless ``--bootstrap``):

* ``triggers``: one real ``livepulse worker`` (ClickHouse off, Redis as given) with a
  benchmark campaigns file (:data:`CAMPAIGNS`: every live ``comment`` and every
  ``add_to_cart``, no caps, no budget, no holdout, so triggers flow continuously at a known
  share of the input). A producer process paces simulator traffic (live events + clicks +
  a trickle of catalog updates) at the rate and re-stamps each record at send: ``ts`` =
  wall clock, ``event_id`` ends with ``~<send time in µs>``. A consumer on manual
  assignment (fetch wait 10 ms) reads ``promo-triggers``; latency = time consumed minus the
  send time of the trigger's source event (``source.event_id``; ``event_ts`` agrees to 1 ms).
  Live events go through two pipelines (room -> ``user-activity`` -> user), clicks through
  one, so both are reported apart too.
* ``relay``: the broker round-trip floor at the same rate: the same producer traffic through
  ``benchmarks.relay_worker`` (the engine's batched path with no work in it: records
  re-sent as they come), every relayed record measured the same way.

Only events sent after the warm-up count. At the producer's end the benchmark records the
worker's input lag (``livepulse_consumer_lag_records`` summed) and how many expected
triggers had not arrived yet, then waits for the rest (``drain_s``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from config.settings import Settings
from streams.admin import create_topics, ensure_topics
from streams.broker import EmbeddedBroker, _die_with_parent, free_port
from streams.simulator import Simulator
from streams.topics import TopicSpec, topic_names

REPO = Path(__file__).resolve().parent.parent
TARGET_P99_MS = 50.0
PARTITIONS = 4  # the engine's default LIVEPULSE_PARTITIONS
TICK_S = 0.005
STAMP = "~"
RECOMMENDED_KINDS = {"view", "click", "add_to_cart", "purchase", "product_click"}
CAMPAIGNS = """
campaigns:
  - id: bench-live-comment
    on: [comment]
    when:
      - {field: event.source, op: "==", value: live, reason: live_comment}
    action: coupon
    offer: {code: BENCH}
    holdout: 0
    attribution_window: 10m
  - id: bench-cart
    on: [add_to_cart]
    when:
      - {field: event.item_id, op: exists, value: true, reason: cart}
    action: reminder
    offer: {code: CART}
    holdout: 0
    attribution_window: 10m
"""


def fires(stream: str, kind: str) -> bool:
    """Whether :data:`CAMPAIGNS` fires on an event (the share of input that triggers).

    >>> fires("live", "comment"), fires("clicks", "add_to_cart"), fires("live", "like")
    (True, True, False)
    """
    return (stream == "live" and kind == "comment") or kind == "add_to_cart"


def recommends(stream: str, kind: str) -> bool:
    """Whether an input event is an item event (the engine answers with a recommendation).

    >>> recommends("clicks", "view"), recommends("live", "product_click")
    (True, True)
    >>> recommends("live", "like"), recommends("clicks", "search")
    (False, False)
    """
    return stream != "catalog" and kind in RECOMMENDED_KINDS


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values).

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([], 0.99)
    (3.0, 0.0)
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def sent_us(event_id: str | None) -> int | None:
    """The send time (µs) stamped into an event id by the producer, if any.

    >>> sent_us("7-12~1800000000123456"), sent_us("7-12")
    (1800000000123456, None)
    """
    if not event_id or STAMP not in event_id:
        return None
    tail = event_id.rsplit(STAMP, 1)[1]
    return int(tail) if tail.isdigit() else None


def wall_us() -> int:
    return time.time_ns() // 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- producer process
async def produce(opts: dict[str, Any]) -> dict[str, Any]:
    """Paced simulator traffic, re-stamped at send (runs in its own process)."""
    rate, warmup, duration = opts["rate"], opts["warmup"], opts["duration"]
    sim = Simulator(seed=opts["seed"], rooms=opts["rooms"], users=opts["users"],
                    items=opts["items"], bad_rate=0.0)
    relay = opts.get("relay_topic")
    pipeline = opts.get("expect") == "pipeline"  # recommendations count as outputs too
    names = topic_names(Settings(topic_prefix=opts.get("prefix") or "livepulse"))
    topic_of = {"live": names.live_events, "clicks": names.clicks, "catalog": names.catalog}
    if relay:
        topic_of = dict.fromkeys(topic_of, relay)
    producer = AIOKafkaProducer(bootstrap_servers=opts["bootstrap"],
                                linger_ms=opts.get("linger_ms", 0))
    await producer.start()
    failed = 0

    def on_delivery(future: asyncio.Future[Any]) -> None:
        nonlocal failed
        if future.cancelled() or future.exception() is not None:
            failed += 1

    total = Counter[str]()
    kinds = Counter[str]()
    window = Counter[str]()
    expected_total = expected_window = 0
    first_us = last_us = 0
    try:
        if not relay:
            for item_id, value in sim.catalog_records(wall_us() // 1000):
                await producer.send(topic_of["catalog"], orjson.dumps(value),
                                    key=item_id.encode())
            await producer.flush()
        clock = time.monotonic
        start = clock()
        started_us = wall_us()
        end = warmup + duration
        sent = ticks = 0
        max_per_tick = max(1, int(rate * 0.1))
        while True:
            elapsed = clock() - start
            if elapsed >= end:
                break
            due = min(int(rate * elapsed) - sent, max_per_tick)
            if due > 0:
                in_window = elapsed >= warmup
                for rec in sim.next_events(wall_us() // 1000, due):
                    value, kind = rec.value, "catalog"
                    stamp = wall_us()
                    if rec.stream != "catalog":
                        body = orjson.loads(value)
                        kind = body["type"]
                        body["ts"] = stamp // 1000
                        body["event_id"] = f"{body['event_id']}{STAMP}{stamp}"
                        value = orjson.dumps(body)
                    future = await producer.send(topic_of[rec.stream], value,
                                                 key=rec.key.encode())
                    future.add_done_callback(on_delivery)
                    expected = (rec.stream != "catalog") if relay else (
                        fires(rec.stream, kind) or (pipeline and recommends(rec.stream, kind)))
                    total[rec.stream] += 1
                    kinds[f"{rec.stream}:{kind}"] += 1
                    expected_total += expected
                    if in_window:
                        window[f"{rec.stream}:{kind}"] += 1
                        expected_window += expected
                        first_us = first_us or stamp
                        last_us = stamp
                sent += due
            ticks = max(ticks + 1, int(elapsed / TICK_S))
            await asyncio.sleep(max(0.0, start + ticks * TICK_S - clock()))
        await producer.flush()
        await asyncio.sleep(0)  # delivery callbacks run on the next loop iteration
    finally:
        await producer.stop()
    in_window = sum(window.values())
    span_s = max(1e-6, (last_us - first_us) / 1e6)
    return {"started_us": started_us, "window_from_us": first_us, "window_to_us": last_us,
            "sent_total": sum(total.values()), "sent_by_stream": dict(total),
            "sent_by_kind": dict(kinds),
            "sent_window": in_window,
            "rate_window": round(in_window / span_s, 1), "expected_total": expected_total,
            "expected_window": expected_window, "failed": failed,
            "mix_window": dict(window.most_common())}


# ---------------------------------------------------------------------- measuring side
class Collector:
    """Consumes the measured topic(s) on manual assignment and keeps (sent, received) pairs."""

    from_end = False  # True: skip what the topics held before (earlier runs)
    # "read_committed" when the worker runs exactly_once: an output counts once its
    # transaction commits, as a transactional consumer downstream sees it
    isolation_level = "read_uncommitted"

    def __init__(self, bootstrap: str, topic: str | list[str], partitions: int) -> None:
        self.bootstrap, self.partitions = bootstrap, partitions
        self.topics = [topic] if isinstance(topic, str) else list(topic)
        self.seen: dict[str, tuple[int, int, int | None, str]] = {}
        self.stop = asyncio.Event()

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, fetch_max_wait_ms=10,
                                    enable_auto_commit=False, group_id=None,
                                    isolation_level=self.isolation_level)
        await consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
            consumer.assign(tps)
            await (consumer.seek_to_end if self.from_end else consumer.seek_to_beginning)(*tps)
            while not self.stop.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=20_000)
                received = wall_us()
                for records in batch.values():
                    for rec in records:
                        self.note(rec.value, received, rec.topic)
        finally:
            await consumer.stop()

    def note(self, value: bytes | None, received: int, topic: str = "") -> None:
        if not value:
            return
        body = orjson.loads(value)
        source = body.get("source")
        event_id = source.get("event_id") if isinstance(source, dict) else body.get("event_id")
        sent = sent_us(event_id)
        if sent is None or event_id in self.seen:
            return
        kind = source.get("topic", "") if isinstance(source, dict) else ""
        self.seen[event_id] = (sent, received, body.get("event_ts"), kind)


def lag_records(web_url: str) -> int | None:
    """Sum of ``livepulse_consumer_lag_records`` on a worker's /metrics (None: unreachable)."""
    try:
        with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("livepulse_consumer_lag_records{")))


def wait_healthy(web_url: str, process: subprocess.Popen[bytes], log: Path,
                 timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{web_url}/healthz", timeout=2) as resp:
                if orjson.loads(resp.read()).get("assigned_partitions", 0) > 0:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"worker not ready in {timeout} s:\n{log.read_text()[-3000:]}")


async def wait_relay(bootstrap: str, in_topic: str, collector: Collector,
                     timeout: float = 120.0) -> None:
    """Probe the relay until a record comes back (its group join can take a while)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            probe = f"probe-{n}{STAMP}{wall_us()}"
            await producer.send_and_wait(in_topic, orjson.dumps({"event_id": probe}))
            for _ in range(10):
                await asyncio.sleep(0.05)
                if probe in collector.seen:
                    return
        raise RuntimeError("the relay worker did not answer")
    finally:
        await producer.stop()


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM, then kill: a clean Faust leave takes 20-35 s on the embedded broker."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


async def drive(collector: Collector, opts: dict[str, Any], worker: subprocess.Popen[bytes],
                web_url: str | None, drain_timeout: float,
                profile: list[str] | None = None, stall_s: float = 15.0) -> dict[str, Any]:
    """Run the producer process (and ``profile``, a sampling profiler command, beside it),
    note the state at its end, drain, and summarise."""
    consume = asyncio.create_task(collector.run())
    if opts.get("relay_topic"):
        await wait_relay(opts["bootstrap"], opts["relay_topic"], collector)
    cpu_before, wall_before = cpu_seconds(worker.pid), time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bench_triggers", "produce", orjson.dumps(opts).decode(),
        cwd=REPO, stdout=asyncio.subprocess.PIPE)
    spy = await asyncio.create_subprocess_exec(
        *profile, stdout=asyncio.subprocess.DEVNULL) if profile else None  # JSON stays last
    out, _ = await proc.communicate()
    if spy is not None:
        await spy.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"producer failed ({proc.returncode})")
    produced = orjson.loads(out.decode().strip().splitlines()[-1])
    ended_us = wall_us()
    worker_cpu = (cpu_seconds(worker.pid) - cpu_before) / (time.monotonic() - wall_before)
    lag = await asyncio.to_thread(lag_records, web_url) if web_url else None
    probes = sum(1 for key in collector.seen if key.startswith("probe-"))
    expected = produced["expected_total"] + probes
    backlog = expected - len(collector.seen)
    deadline = time.monotonic() + drain_timeout
    last_count, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = len(collector.seen)
        if count != last_count:
            last_count, last_change = count, time.monotonic()
        if count >= expected or time.monotonic() - last_change > stall_s:
            break
        await asyncio.sleep(0.1)
    collector.stop.set()
    await consume
    lo, hi = produced["window_from_us"], produced["window_to_us"]
    rows = [v for v in collector.seen.values() if lo <= v[0] <= hi]
    latencies = [(r - s) / 1000 for s, r, _, _ in rows]
    arrivals = [r for _, r, _, _ in collector.seen.values() if r >= ended_us]
    result: dict[str, Any] = {
        "input_rate": produced["rate_window"], "sent_window": produced["sent_window"],
        "expected_window": produced["expected_window"], "received_window": len(rows),
        **summary(latencies), "producer_failed": produced["failed"],
        "backlog_at_end": max(0, backlog), "lag_records_at_end": lag,
        "drain_s": round((max(arrivals) - ended_us) / 1e6, 2) if arrivals else 0.0,
        "worker_cpu": round(worker_cpu, 2), "started_us": produced["started_us"],
        "ended_us": ended_us}
    if not opts.get("relay_topic"):
        by_source: dict[str, list[float]] = {}
        for s, r, _, topic in rows:
            by_source.setdefault(topic.rsplit(".", 1)[-1], []).append((r - s) / 1000)
        result["by_source"] = {k: summary(v) for k, v in sorted(by_source.items())}
        skew = [abs((s // 1000) - ts) for s, _, ts, _ in rows if ts is not None]
        result["event_ts_max_skew_ms"] = max(skew) if skew else None
        result["mix_window"] = produced["mix_window"]
    return result


def summary(latencies: list[float]) -> dict[str, Any]:
    return {"count": len(latencies), "p50_ms": percentile(latencies, 0.5),
            "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99),
            "max_ms": round(max(latencies), 2) if latencies else 0.0}


def base_opts(args: argparse.Namespace, bootstrap: str, rate: float) -> dict[str, Any]:
    return {"bootstrap": bootstrap, "rate": rate, "warmup": args.warmup,
            "duration": args.duration, "seed": args.seed, "rooms": args.rooms,
            "users": args.users, "items": args.items, "linger_ms": args.linger_ms}


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A real ``livepulse worker`` process with ``settings``, output appended to ``log``.

    ``LIVEPULSE_BENCH_WORKER_REPO`` runs the worker from another checkout (``-m`` imports
    from the working directory first): two engine versions measured by one harness.
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agents.cli", "worker"],
            cwd=os.environ.get("LIVEPULSE_BENCH_WORKER_REPO") or REPO,
            env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def run_triggers(args: argparse.Namespace, bootstrap: str, rate: float,
                 workdir: Path) -> dict[str, Any]:
    tag = f"bt{os.getpid()}x{time.monotonic_ns() % 10**9}"
    campaigns = workdir / "campaigns.yaml"
    campaigns.write_text(CAMPAIGNS)
    settings = Settings(
        kafka_url=bootstrap, topic_prefix=tag, app_id=tag, data_dir=str(workdir / tag),
        web_port=free_port(), partitions=PARTITIONS, redis_url=args.redis, redis_namespace=tag,
        clickhouse_url="", campaigns_file=str(campaigns), log_level="warn")
    asyncio.run(ensure_topics(settings))
    log = workdir / f"{tag}.log"
    web_url = f"http://{settings.web_host}:{settings.web_port}"
    worker = start_worker(settings, log)
    try:
        wait_healthy(web_url, worker, log)
        collector = Collector(bootstrap, topic_names(settings).promo_triggers, PARTITIONS)
        opts = {**base_opts(args, bootstrap, rate), "prefix": tag}
        profile = None
        if args.profile:
            Path(args.profile).mkdir(parents=True, exist_ok=True)
            profile = [args.py_spy, "record", "--pid", str(worker.pid), "--nonblocking",
                       "--duration", str(int(args.warmup + args.duration)), "--format", "raw",
                       "--output", str(Path(args.profile) / f"worker-{int(rate)}.txt")]
        return asyncio.run(drive(collector, opts, worker, web_url, args.drain_timeout,
                                 profile))
    finally:
        stop_process(worker)


def run_relay(args: argparse.Namespace, bootstrap: str, rate: float,
              variant: str = "batched") -> dict[str, Any]:
    """The one-hop floor at ``rate``: a relay worker (``benchmarks.relay_worker``
    ``variant``; ``batched``, the engine's batched path with no work) between the same
    producer and collector as the measured worker."""
    tag = f"br{os.getpid()}x{time.monotonic_ns() % 10**9}"
    in_topic, out_topic = f"{tag}-in", f"{tag}-out"
    specs = [TopicSpec(in_topic, "-", "input", ""), TopicSpec(out_topic, "-", "output", "")]
    asyncio.run(create_topics(bootstrap, specs, partitions=PARTITIONS, replication_factor=1,
                              retention_ms=3_600_000))
    worker = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.relay_worker", variant, bootstrap, in_topic,
         out_topic, str(free_port())], cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    try:
        collector = Collector(bootstrap, out_topic, PARTITIONS)
        opts = {**base_opts(args, bootstrap, rate), "relay_topic": in_topic}
        return asyncio.run(drive(collector, opts, worker, None, args.drain_timeout))
    finally:
        stop_process(worker)


def measure_all(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    results: dict[str, Any] = {
        "target_p99_ms": TARGET_P99_MS, "warmup_s": args.warmup, "duration_s": args.duration,
        "partitions": PARTITIONS, "redis": bool(args.redis.strip()),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()], "rates": {}}
    with tempfile.TemporaryDirectory(prefix="bench-triggers-") as tmp:
        for rate in rates:
            relay = run_relay(args, bootstrap, rate)
            triggers = run_triggers(args, bootstrap, rate, Path(tmp))
            results["rates"][str(int(rate))] = {
                "triggers": triggers, "relay": relay,
                "p50_ratio": round(triggers["p50_ms"] / max(relay["p50_ms"], 1e-6), 2),
                "p99_ratio": round(triggers["p99_ms"] / max(relay["p99_ms"], 1e-6), 2),
                "target_met": 0 < triggers["p99_ms"] <= TARGET_P99_MS
                and triggers["received_window"] == triggers["expected_window"]}
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["produce"]:
        result = asyncio.run(produce(orjson.loads(argv[1])))
        print(orjson.dumps(result).decode(), flush=True)
        return result
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,5000", help="comma-separated events/s")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help='"" = off')
    parser.add_argument("--bootstrap", default="", help="an existing broker (default: embedded)")
    parser.add_argument("--profile", default="", help="directory: py-spy the trigger worker")
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary for --profile")
    parser.add_argument("--linger-ms", type=int, default=5,
                        help="the producer's linger (the simulator uses 5 ms)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rooms", type=int, default=6)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    args = parser.parse_args(argv)
    if args.bootstrap:
        results = measure_all(args, args.bootstrap)
    else:
        with EmbeddedBroker() as broker:
            results = measure_all(args, broker.bootstrap)
    print(orjson.dumps(results).decode(), flush=True)
    return results


if __name__ == "__main__":
    main()
