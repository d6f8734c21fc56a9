"""History sink throughput: Kafka topics -> ClickHouseSink -> real ClickHouse.

Produces a mixed workload (raw live events and clicks, room insights, recommendations, promo
triggers, attribution, anomalies, ad feedback: every history table) to the embedded broker
(or ``LIVEPULSE_KAFKA_URL``), then starts a fresh sink and times how long it takes until
every row is stored and committed. Reports rows/s end to end (fetch, validation,
pseudonymization, INSERT, offset commit), the INSERT statements' row counts and durations
(p50/p99), and a writer-only figure (INSERTs of prepared rows, no Kafka) per batch size.
Uses a private ``clickhouse-server`` (Debian's 18.16 here) unless ``--clickhouse-url`` is given.

    .venv/bin/python -m benchmarks.bench_clickhouse --records 200000     # drain a backlog
    .venv/bin/python -m benchmarks.bench_clickhouse --records 200000 --batch-rows 10000
    .venv/bin/python -m benchmarks.bench_clickhouse --rate 5000 --duration 20  # live traffic

Backlog mode (default) produces every record first and times the sink draining them: its
maximum rate. Live mode (``--rate``) starts the sink first and produces at a steady rate,
so the batches are what the batch settings make of live traffic; it also reports the
catch-up time after the last record was produced.

Prints one JSON object (last line).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from agents.sinks.clickhouse import ClickHouseSink, ClickHouseWriter, RecordDecoder
from agents.sinks.clickhouse_schema import TABLES
from agents.sinks.embedded_clickhouse import ClickHouseServer
from config.settings import Settings
from streams.admin import ensure_topics
from streams.broker import EmbeddedBroker
from streams.topics import TopicNames, topic_names

# Share of each topic in the workload (roughly a live-commerce day: raw events dominate).
MIX = (("live_events", 0.50), ("clicks", 0.28), ("room_insights", 0.04),
       ("recommendations", 0.12), ("promo_triggers", 0.025), ("attribution", 0.025),
       ("anomalies", 0.01), ("ad_feedback", 0.02))
LIVE_TYPES = ("join", "leave", "comment", "like", "gift", "share", "follow", "product_click",
              "add_to_cart", "purchase")
CLICK_TYPES = ("view", "click", "search", "add_to_cart", "purchase")


class HistoryWorkload:
    """Contract-valid records for every history topic (deterministic for a seed).

    ``records(n)`` yields ``(topic attribute, key, record dict)``; ``ts_ms`` anchors the
    times (records are spread over the preceding ``span_s`` seconds).
    """

    def __init__(self, seed: int = 0, rooms: int = 6, users: int = 5000,
                 ts_ms: int | None = None, span_s: float = 600.0, prefix: str = "") -> None:
        self.rng = random.Random(seed)
        self.rooms = [f"room-{i}" for i in range(rooms)]
        self.users = users
        self.ts_ms = ts_ms or int(time.time() * 1000)
        self.span_ms = int(span_s * 1000)
        self.prefix = prefix  # makes ids unique across workloads sharing one database
        self._insight_templates: dict[str, dict[str, Any]] = {}

    def _ts(self, i: int, n: int) -> int:
        return self.ts_ms - self.span_ms + (self.span_ms * i) // max(1, n)

    def records(self, n: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
        topics, weights = zip(*MIX, strict=True)
        kinds = self.rng.choices(topics, weights, k=n)
        for i, kind in enumerate(kinds):
            yield getattr(self, kind)(i, self._ts(i, n))

    def user(self) -> str:
        return f"u{self.rng.randrange(self.users)}"

    def live_events(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        kind = self.rng.choice(LIVE_TYPES)
        room = self.rng.choice(self.rooms)
        rec: dict[str, Any] = {"event_id": f"{self.prefix}le{i}", "type": kind, "ts": ts,
                               "room_id": room, "user_id": self.user(),
                               "host_id": f"host-{room}", "session_id": f"ws{i % 997}"}
        if kind == "comment":
            rec["text"] = self.rng.choice(("太好看了", "price?", "love it", "买了"))
        elif kind == "gift":
            rec["amount"] = round(self.rng.uniform(1, 50), 2)
        elif kind in ("product_click", "add_to_cart", "purchase"):
            rec["item_id"] = f"i{self.rng.randrange(2000)}"
            if kind == "purchase":
                rec["amount"] = round(self.rng.uniform(5, 300), 2)
                rec["quantity"] = self.rng.randint(1, 3)
        return "live_events", room, rec

    def clicks(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        kind = self.rng.choice(CLICK_TYPES)
        user = self.user()
        rec: dict[str, Any] = {"event_id": f"{self.prefix}ce{i}", "type": kind, "ts": ts,
                               "user_id": user,
                               "session_id": f"cs-{self.rng.randrange(self.users * 3)}"}
        if kind == "search":
            rec["query"] = self.rng.choice(("shoes", "红色 连衣裙", "bag"))
        else:
            rec["item_id"] = f"i{self.rng.randrange(2000)}"
            rec["category"] = f"cat{self.rng.randrange(20)}"
            if kind == "purchase":
                rec["price"] = round(self.rng.uniform(5, 300), 2)
        return "clicks", user, rec

    def room_insights(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        room = self.rng.choice(self.rooms)
        doc = dict(self._insight_template(room))
        doc.update(ts=ts, last_event_ts=ts, viewers=self.rng.randrange(50, 500),
                   orders=i, gmv=round(i * 3.5, 2))
        return "room_insights", room, doc

    def _insight_template(self, room: str) -> dict[str, Any]:
        found = self._insight_templates.get(room)
        if found is None:
            from agents.rooms.state import RoomState
            from streams.contracts import LiveEvent, as_dict

            state = RoomState(room, 10_000)
            t0 = self.ts_ms - self.span_ms
            for j in range(40):
                kind = ("join", "comment", "product_click", "add_to_cart", "purchase")[j % 5]
                extra: dict[str, Any] = {"text": "好看"} if kind == "comment" else {}
                if kind in ("product_click", "add_to_cart", "purchase"):
                    extra["item_id"] = f"i{j % 7}"
                if kind == "purchase":
                    extra["amount"] = 20.0
                state.apply(LiveEvent(f"{room}-w{j}", kind, t0 + j * 500, room, f"u{j}",
                                      host_id=f"host-{room}", **extra))
            found = orjson.loads(orjson.dumps(as_dict(state.insight(state.last_event_ts))))
            self._insight_templates[room] = found
        return found

    def recommendations(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        user = self.user()
        items = [{"item_id": f"i{self.rng.randrange(2000)}", "score": round(1 - k / 20, 3),
                  "reasons": ["covisit", "session_knn"] if k % 2 else ["trending"]}
                 for k in range(20)]
        return "recommendations", user, {
            "schema_version": 1, "user_id": user, "ts": ts, "request_id": f"{self.prefix}rq{i}",
            "model_version": "hybrid-1", "items": items, "room_id": self.rng.choice(self.rooms)}

    def promo_triggers(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        user = self.user()
        campaign = self.rng.choice(("cart_rescue", "welcome", "vip_follow"))
        return "promo_triggers", user, {
            "schema_version": 1, "idempotency_key": f"{self.prefix}tk{i}",
            "campaign_id": campaign, "campaign_version": 1, "user_id": user,
            "action": "coupon", "offer": {"code": "SAVE10", "discount": 0.1},
            "reasons": ["cart_abandoned", "high_propensity"],
            "scores": {"purchase_propensity": round(self.rng.random(), 3), "leave_risk": 0.2},
            "event_ts": ts - 5, "source": {"topic": "livepulse.live-events",
                                           "event_id": f"le{i}", "type": "add_to_cart"},
            "ts": ts, "expires_at": ts + 900_000, "room_id": self.rng.choice(self.rooms),
            "item_id": f"i{self.rng.randrange(2000)}"}

    def attribution(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        user = self.user()
        group = "holdout" if self.rng.random() < 0.1 else "treatment"
        kind = "conversion" if self.rng.random() < 0.3 else "trigger"
        rec: dict[str, Any] = {
            "schema_version": 1, "record_id": f"{self.prefix}ar{i}", "kind": kind,
            "group": group, "campaign_id": self.rng.choice(("cart_rescue", "welcome")),
            "campaign_version": 1, "user_id": user, "trigger_key": f"tk{i}",
            "trigger_ts": ts - 60_000, "ts": ts,
            "cost": 0.5 if kind == "trigger" and group == "treatment" else 0.0}
        if kind == "conversion":
            rec.update(value=round(self.rng.uniform(10, 200), 2),
                       purchase_event_id=f"le{i}", purchase_ts=ts)
        return "attribution", user, rec

    def anomalies(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        scope = self.rng.choice(("room", "user", "system"))
        scope_id = {"room": self.rng.choice(self.rooms), "user": self.user(),
                    "system": "worker"}[scope]
        status = "resolved" if i % 2 else "open"
        first = ts - 30_000
        return "anomalies", scope_id, {
            "schema_version": 1, "anomaly_id": f"{scope}:{scope_id}:{first}:{self.prefix}{i}",
            "status": status, "scope": scope, "scope_id": scope_id, "metric": "click_rate",
            "observed": 40.0, "expected_low": 1.0, "expected_high": 5.0, "score": 0.99,
            "severity": "warning",
            "explanation": f"{scope.capitalize()} {scope_id}: click rate 40/s (expected 1-5).",
            "first_seen": first, "last_seen": ts, "ts": ts}


    def ad_feedback(self, i: int, ts: int) -> tuple[str, str, dict[str, Any]]:
        user = self.user()
        kind = self.rng.choice(("delivered", "shown", "shown", "clicked", "dismissed",
                                "converted"))
        rec: dict[str, Any] = {
            "schema_version": 1, "type": kind, "idempotency_key": f"{self.prefix}tk{i}",
            "campaign_id": self.rng.choice(("cart_rescue", "welcome")), "user_id": user,
            "channel": self.rng.choice(("push", "in_app")),
            "variant": self.rng.choice(("a", "b")), "ts": ts}
        if kind == "converted":
            rec.update(order_id=f"o{i}", value=round(self.rng.uniform(10, 200), 2),
                       currency="CNY")
        return "ad_feedback", user, rec


def table_of(attribute: str) -> str:
    """History table of a workload topic attribute (``clicks`` -> ``click_events``)."""
    names = TopicNames("x")
    topic = getattr(names, attribute)
    return next(t.name for t in TABLES if t.topic(names) == topic)


async def produce(bootstrap: str, names: TopicNames,
                  records: list[tuple[str, str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    try:
        pending = []
        for attribute, key, record in records:
            pending.append(await producer.send(getattr(names, attribute), orjson.dumps(record),
                                               key=key.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def paced(bootstrap: str, names: TopicNames, records: list[tuple[str, str, Any]],
                rate: float) -> float:
    """Produce ``records`` at ``rate`` per second; return when the last one was sent."""
    started = time.monotonic()
    sent = 0
    while sent < len(records):
        due = min(len(records), int((time.monotonic() - started) * rate) + 1)
        if due > sent:
            await produce(bootstrap, names, records[sent:due])
            sent = due
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def sink_run(settings: Settings, bootstrap: str, expected_rows: int,
                   timeout_s: float, live: tuple[TopicNames, list[Any], float] | None = None,
                   ) -> dict[str, Any]:
    sink = ClickHouseSink(settings, bootstrap)
    task = asyncio.create_task(sink.run())
    await sink.started.wait()
    first = None
    producer = None
    if live is not None:
        await sink.migrated.wait()
        await asyncio.sleep(max(1.0, settings.rebalance_timeout_s))  # group joined
        first = time.perf_counter()
        producer = asyncio.create_task(paced(bootstrap, *live))
    deadline = time.monotonic() + timeout_s
    while sink.stored_rows < expected_rows and time.monotonic() < deadline:
        if task.done():
            task.result()
        if first is None and sink.buffered:
            first = time.perf_counter()  # first records fetched (group joined)
        await asyncio.sleep(0.01)
    done = time.perf_counter()
    last_sent = await producer if producer is not None else None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    statements = list(sink.statements)
    sizes = [float(rows) for rows, _ in statements]
    seconds = [s for _, s in statements]
    elapsed = done - (first or done)
    return {
        "rows_stored": sink.stored_rows, "seconds": round(elapsed, 3),
        "rows_per_s": round(sink.stored_rows / elapsed) if elapsed > 0 else None,
        "inserts": len(statements),
        "insert_rows_p50": _pct(sizes, 0.5) if sizes else None,
        "insert_rows_p99": _pct(sizes, 0.99) if sizes else None,
        "insert_rows_mean": round(statistics.fmean(sizes), 1) if sizes else None,
        "insert_rows_max": max(sizes) if sizes else None,
        "insert_ms_p50": round(_pct(seconds, 0.5) * 1000, 2) if seconds else None,
        "insert_ms_p99": round(_pct(seconds, 0.99) * 1000, 2) if seconds else None,
        "catch_up_after_last_produced_s": round(done - last_sent, 3) if last_sent else None,
    }


def writer_only(url: str, records: list[tuple[str, str, dict[str, Any]]],
                batch_sizes: list[int], settings: Settings) -> list[dict[str, Any]]:
    """INSERT throughput of prepared live-event rows (no Kafka, no decoding) per batch size."""
    decoder = RecordDecoder(settings, b"bench-key")
    table = next(t for t in TABLES if t.name == "live_events")
    rows = [decoder.row(table, orjson.dumps(r)) for a, _, r in records if a == "live_events"]
    rows = [r for r in rows if not isinstance(r, str)]
    writer = ClickHouseWriter(url, group="bench-writer", names=TopicNames("bench"))
    writer.migrate()
    out = []
    for size in batch_sizes:
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        durations = [writer.insert("live_events", chunk) for chunk in chunks]
        total = sum(durations)
        out.append({"batch_rows": size, "inserts": len(chunks),
                    "rows_per_s": round(len(rows) / total),
                    "insert_ms_p50": round(_pct(durations, 0.5) * 1000, 2),
                    "insert_ms_p99": round(_pct(durations, 0.99) * 1000, 2)})
    writer.close()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rate", type=float, default=None,
                        help="live mode: records/s produced while the sink runs")
    parser.add_argument("--duration", type=float, default=20.0, help="live mode: seconds")
    parser.add_argument("--batch-rows", type=int, default=None,
                        help="LIVEPULSE_CLICKHOUSE_BATCH_ROWS (default: the setting's)")
    parser.add_argument("--batch-interval-ms", type=int, default=None)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--clickhouse-url", default=None)
    parser.add_argument("--writer-batches", default="1000,10000,100000")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    server = None
    url = args.clickhouse_url
    if url is None:
        server = ClickHouseServer()
        url = server.start()
    base = Settings.from_env()
    broker = EmbeddedBroker() if base.embedded_broker else None
    bootstrap = broker.start() if broker else base.bootstrap_servers
    tag = f"bench{os.getpid()}"
    overrides: dict[str, Any] = {"topic_prefix": tag, "app_id": tag,
                                 "partitions": args.partitions, "clickhouse_url": url,
                                 "pseudonym_key": "bench-key-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa",
                                 "clickhouse_max_buffered_rows": max(
                                     100_000, args.batch_rows or 0)}
    if args.batch_rows:
        overrides["clickhouse_batch_rows"] = args.batch_rows
    if args.batch_interval_ms:
        overrides["clickhouse_batch_interval_ms"] = args.batch_interval_ms
    settings = base.with_overrides(**overrides)
    try:
        names = topic_names(settings)
        count = int(args.rate * args.duration) if args.rate else args.records
        records = list(HistoryWorkload(seed=1, span_s=max(600.0, args.duration)).records(count))
        asyncio.run(ensure_topics(settings, bootstrap))
        produce_s = None
        if args.rate:
            result = asyncio.run(sink_run(settings, bootstrap, len(records), args.timeout,
                                          live=(names, records, args.rate)))
        else:
            t0 = time.perf_counter()
            asyncio.run(produce(bootstrap, names, records))
            produce_s = round(time.perf_counter() - t0, 2)
            result = asyncio.run(sink_run(settings, bootstrap, len(records), args.timeout))
        writer = writer_only(url, records,
                             [int(b) for b in args.writer_batches.split(",") if b], settings)
        writer_server = ClickHouseWriter(url, group="x", names=names)
        version = writer_server.execute("SELECT version()")[0][0]
        writer_server.close()
    finally:
        if broker:
            broker.stop()
        if server:
            server.cleanup()
    summary = {
        "benchmark": "clickhouse_sink", "mode": f"live {args.rate:g}/s" if args.rate
        else "backlog", "records": len(records),
        "mix": dict(MIX), "partitions": args.partitions,
        "batch_rows_setting": settings.clickhouse_batch_rows,
        "batch_interval_ms_setting": settings.clickhouse_batch_interval_ms,
        "clickhouse": version, "broker": "embedded-tansu" if broker else bootstrap,
        "produce_s": produce_s, "sink": result, "writer_only_live_events": writer,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
