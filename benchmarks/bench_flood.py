"""Hot-key flood: other users' and rooms' latency while one user floods one room.

One real worker on a local broker takes simulator traffic at ``--rate`` events/s. After a
warm-up and a baseline window, one user sends ``--flood`` live events (product clicks,
comments, likes) into one busy room within ``--flood-s`` seconds. Every background event is
stamped at send; its first output (a recommendation or a promo trigger) is timed at
arrival, and the event is put in one group by where it waits:

* ``same_room_partition``: live events of rooms on the flooded room's input partition;
* ``same_user_partition``: other events of users on the flooder's user partition;
* ``elsewhere``: the rest.

Each group's p50 / p99 in the flood window (flood start to ``--tail-s`` after its end) is
compared with the same group in the baseline window just before, once with the hot-key
quarantine on (the default settings) and once off (``hot_key_rate=0``), in one run. Target
(issue 17): with the quarantine, p99 of the first two groups during the flood <= 2x baseline.

    python -m benchmarks.bench_flood [--broker kafka] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.bench_pipeline import (
    PLANS,
    Context,
    OutputCollector,
    by_label,
    fold_profile,
    launch,
    py_spy,
    replace_section,
    scrape,
    stamp,
    stop_all,
    wait_assigned,
)
from benchmarks.bench_triggers import (
    PARTITIONS,
    REPO,
    cpu_seconds,
    fires,
    percentile,
    recommends,
    wall_us,
)
from streams.broker import BROKER_ENGINES, local_broker
from streams.outputs import partition_for
from streams.simulator import Simulator
from streams.topics import topic_names

SECTION = "## Hot-key flood (python -m benchmarks.bench_flood)"
GROUPS = ("same_room_partition", "same_user_partition", "elsewhere")
FLOODER = "flooder-1"
FLOOD_KINDS = ("product_click", "comment", "like")
TICK_S = 0.01


@dataclasses.dataclass(frozen=True)
class Options:
    rate: float = 500.0
    flood: int = 50_000
    flood_s: float = 5.0
    warmup_s: float = 15.0
    baseline_s: float = 20.0
    tail_s: float = 15.0
    drain_s: float = 90.0
    rooms: int = 12
    users: int = 20_000
    items: int = 2_000
    seed: int = 11


def group_of(stream: str, key: str, user: str | None, room_partition: int,
             user_partition: int) -> str:
    """Where an event waits if the flood holds a partition (see the module docstring).

    >>> group_of("live", "r1", "u1", partition_for(b"r1", 4), -1)
    'same_room_partition'
    >>> group_of("clicks", "u1", "u1", -1, partition_for(b"u1", 4))
    'same_user_partition'
    """
    if stream == "live" and partition_for(key.encode(), PARTITIONS) == room_partition:
        return GROUPS[0]
    if user is not None and partition_for(user.encode(), PARTITIONS) == user_partition:
        return GROUPS[1]
    return GROUPS[2]


def flood_record(i: int, room: str, items: list[str], now_ms: int) -> bytes:
    kind = FLOOD_KINDS[i % len(FLOOD_KINDS)]
    body: dict[str, Any] = {"event_id": f"flood-{i}", "type": kind, "room_id": room,
                            "user_id": FLOODER, "session_id": "flood-s", "ts": now_ms}
    if kind == "product_click":
        body["item_id"] = items[i % len(items)]
    elif kind == "comment":
        body["text"] = "多少钱? how much?"
    return orjson.dumps(body)


async def produce(ctx: Context, opts: Options, names: Any, sent: dict[str, tuple[str, str]],
                  marks: dict[str, Any], pids: dict[str, int]) -> None:
    """Background traffic for the whole run and the flood in its middle. ``sent``: event id
    -> (group, phase); ``marks``: phase boundaries (µs) and the CPU (cores) of ``pids``
    (name -> process) in the baseline and flood windows."""
    sim = Simulator(seed=opts.seed, rooms=opts.rooms, users=opts.users, items=opts.items,
                    bad_rate=0.0)
    room = sim.room_ids[0]
    room_partition = partition_for(room.encode(), PARTITIONS)
    user_partition = partition_for(FLOODER.encode(), PARTITIONS)
    topic_of = {"live": names.live_events, "clicks": names.clicks, "catalog": names.catalog}
    producer = AIOKafkaProducer(bootstrap_servers=ctx.bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        for item_id, value in sim.catalog_records(wall_us() // 1000):
            await producer.send(names.catalog, orjson.dumps(value), key=item_id.encode())
        await producer.flush()
        started = time.monotonic()
        flood_at = opts.warmup_s + opts.baseline_s
        end_at = flood_at + opts.flood_s + opts.tail_s
        marks["baseline_us"] = wall_us() + int(opts.warmup_s * 1e6)
        flood_task = None
        owed = 0.0
        cpu: dict[str, tuple[float, dict[str, float]]] = {}

        def note_cpu(mark: str) -> None:
            cpu[mark] = (time.monotonic(), {name: cpu_seconds(pid) for name, pid in
                                            pids.items()})

        while (elapsed := time.monotonic() - started) < end_at:
            if "baseline" not in cpu and elapsed >= opts.warmup_s:
                note_cpu("baseline")
            if flood_task is None and elapsed >= flood_at:
                note_cpu("flood")
                marks["flood_us"] = wall_us()
                spec = {"bootstrap": ctx.bootstrap, "topic": names.live_events, "room": room,
                        "items": sim.room_products(room) or sim.item_ids[:50],
                        "n": opts.flood, "seconds": opts.flood_s}
                flood_task = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "benchmarks.bench_flood", "--send-flood",
                    orjson.dumps(spec).decode(), cwd=REPO, stdout=asyncio.subprocess.PIPE)
            owed += opts.rate * TICK_S
            n, owed = int(owed), owed - int(owed)
            for rec in sim.next_events(wall_us() // 1000, n) if n else ():
                if rec.stream == "catalog":
                    continue
                value, kind = stamp(rec.value)
                body = orjson.loads(value)
                if not (recommends(rec.stream, kind) or fires(rec.stream, kind)):
                    await producer.send(topic_of[rec.stream], value, key=rec.key.encode())
                    continue  # no output to time
                phase = ("warmup" if elapsed < opts.warmup_s else
                         "baseline" if elapsed < flood_at else "flood")
                sent[body["event_id"]] = (group_of(rec.stream, rec.key, body.get("user_id"),
                                                   room_partition, user_partition), phase)
                await producer.send(topic_of[rec.stream], value, key=rec.key.encode())
            await asyncio.sleep(TICK_S)
        marks["end_us"] = wall_us()
        note_cpu("end")
        for window, (start, stop) in {"baseline": ("baseline", "flood"),
                                      "flood": ("flood", "end")}.items():
            (t0, c0), (t1, c1) = cpu[start], cpu[stop]
            marks[f"cores_{window}"] = {name: round((c1[name] - c0[name]) / (t1 - t0), 2)
                                        for name in pids}
        if flood_task is not None:
            out, _ = await flood_task.communicate()
            marks.update(orjson.loads(out.decode().strip().splitlines()[-1]))
        await producer.flush()
    finally:
        await producer.stop()


async def send_flood(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec["n"]`` live events from one user into ``spec["room"]`` over ``spec["seconds"]``
    (run in a process of its own: the flood's CPU must not delay the measuring loop)."""
    room, items, n = spec["room"], spec["items"], spec["n"]
    partition = partition_for(room.encode(), PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=spec["bootstrap"], linger_ms=5,
                                max_batch_size=1024 * 1024)
    await producer.start()
    try:
        chunks = max(1, int(spec["seconds"] / 0.05))
        per_chunk = -(-n // chunks)
        started_us, started = wall_us(), time.monotonic()
        i = 0
        for chunk in range(chunks):
            batch = producer.create_batch()
            now = wall_us() // 1000
            for _ in range(min(per_chunk, n - i)):
                value = flood_record(i, room, items, now)
                if batch.append(key=room.encode(), value=value, timestamp=None) is None:
                    await producer.send_batch(batch, spec["topic"], partition=partition)
                    batch = producer.create_batch()
                    batch.append(key=room.encode(), value=value, timestamp=None)
                i += 1
            await producer.send_batch(batch, spec["topic"], partition=partition)
            await asyncio.sleep(max(0.0, started + (chunk + 1) * 0.05 - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return {"flood_sent": i, "flood_send_s": round((wall_us() - started_us) / 1e6, 2)}


def summarise(sent: dict[str, tuple[str, str]], seen: dict[str, Any]) -> dict[str, Any]:
    """p50/p99 per phase and group over events that had an output; outputs missing."""
    lat: dict[tuple[str, str], list[float]] = {}
    for event_id, (group, phase) in sent.items():
        if phase == "warmup" or event_id not in seen:
            continue
        sent_us_, received_us, _, _ = seen[event_id]
        lat.setdefault((phase, group), []).append((received_us - sent_us_) / 1000)
    out: dict[str, Any] = {}
    for phase in ("baseline", "flood"):
        for group in GROUPS:
            values = lat.get((phase, group), [])
            out.setdefault(phase, {})[group] = {
                "count": len(values), "p50_ms": percentile(values, 0.5),
                "p99_ms": percentile(values, 0.99),
                "max_ms": round(max(values), 1) if values else 0.0}
    for group in GROUPS:
        base, during = out["baseline"][group]["p99_ms"], out["flood"][group]["p99_ms"]
        out.setdefault("p99_ratio", {})[group] = round(during / base, 2) if base else None
    return out


async def profile_flood(pid: int, marks: dict[str, Any], path: Path, seconds: int) -> None:
    """py-spy the worker for ``seconds`` from the flood's start (raw stacks to ``path``)."""
    while "flood_us" not in marks:
        await asyncio.sleep(0.05)
    spy = await asyncio.create_subprocess_exec(
        py_spy(), "record", "--pid", str(pid), "--nonblocking", "--rate", "200",
        "--duration", str(seconds), "--format", "raw", "--output", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await spy.wait()


def run_config(ctx: Context, opts: Options, quarantine: bool,
               profile: bool = False) -> dict[str, Any]:
    """One worker, one timeline (warm-up, baseline, flood, tail), summarised; ``profile``:
    the worker's stages during the flood (py-spy) too."""
    overrides = dict(ctx.worker_overrides)
    if not quarantine:
        overrides["hot_key_rate"] = 0
    cfg = dataclasses.replace(ctx, worker_overrides=overrides)
    tag = f"flood{'q' if quarantine else 'x'}{time.monotonic_ns() % 10**9}"
    workers = launch(cfg, tag)
    try:
        wait_assigned(workers, 180)
        worker = workers[0]
        names = topic_names(worker.settings)

        async def go() -> dict[str, Any]:
            collector = OutputCollector(ctx.bootstrap, [names.recommendations,
                                                        names.promo_triggers], wall_us())
            consume = asyncio.create_task(collector.run())
            sent: dict[str, tuple[str, str]] = {}
            marks: dict[str, Any] = {}
            pids = {"worker": worker.process.pid}
            if ctx.broker_pid:
                pids["broker"] = ctx.broker_pid
            spy_path = ctx.workdir / f"{tag}.spy"
            spy = (asyncio.create_task(profile_flood(worker.process.pid, marks, spy_path,
                                                     int(opts.flood_s + 5)))
                   if profile and py_spy() else None)
            await produce(ctx, opts, names, sent, marks, pids)
            if spy is not None:
                await spy
            deadline = time.monotonic() + opts.drain_s
            last, last_change = -1, time.monotonic()
            while time.monotonic() < deadline and time.monotonic() - last_change < 10:
                if len(collector.seen) != last:
                    last, last_change = len(collector.seen), time.monotonic()
                await asyncio.sleep(0.5)
            collector.stop.set()
            await consume
            result = summarise(sent, collector.seen)
            if spy is not None and spy_path.exists():
                result["profile"] = fold_profile(spy_path)
            result["flood_sent"] = marks.get("flood_sent", 0)
            result["flood_send_s"] = marks.get("flood_send_s")
            result["cores"] = {"baseline": marks["cores_baseline"],
                               "flood": marks["cores_flood"]}
            result["background_sent"] = sum(1 for _, p in sent.values() if p != "warmup")
            result["background_without_output"] = sum(
                1 for e, (_, p) in sent.items() if p != "warmup" and e not in collector.seen)
            return result

        result = asyncio.run(go())
        samples = scrape(worker.web_url)
        result["dead_letters"] = by_label(samples, "livepulse_dead_letters_total",
                                          "reason").get("rate_limited", 0)
        result["user_incidents_opened"] = sum(
            int(v) for n, labels, v in samples or ()
            if n == "livepulse_anomalies_total" and labels.get("scope") == "user")
        result["quarantine"] = quarantine
        return result
    finally:
        stop_all(workers)


def render(results: dict[str, Any], command: str) -> str:
    lines = [SECTION, "", f"Command: `{command}` (broker: {results['broker']}, background "
             f"{results['options']['rate']:g} events/s, flood {results['options']['flood']:,} "
             f"events from one user into one room in {results['options']['flood_s']:g} s). "
             "First output (recommendation or promo trigger) of each background event, "
             "send to arrival; p99 in the flood window (flood start to "
             f"{results['options']['tail_s']:g} s after it) vs the baseline window before.",
             "", "| quarantine | group | baseline p50 / p99 ms | flood p50 / p99 ms | p99 "
             "ratio | events (flood window) |", "|---|---|---|---|---|---|"]
    for run in results["runs"]:
        for group in GROUPS:
            b, f = run["baseline"][group], run["flood"][group]
            lines.append(f"| {'on' if run['quarantine'] else 'off'} | {group} | "
                         f"{b['p50_ms']:g} / {b['p99_ms']:g} | {f['p50_ms']:g} / "
                         f"{f['p99_ms']:g} | {run['p99_ratio'][group]} | {f['count']} |")
    lines.append("")
    for run in results["runs"]:
        lines.append(f"- quarantine {'on' if run['quarantine'] else 'off'}: flood "
                     f"{run['flood_sent']:,} events sent in {run['flood_send_s']} s, "
                     f"{run['dead_letters']:,} dead-lettered `rate_limited`, "
                     f"{run['user_incidents_opened']} user incident(s) opened; timed "
                     f"background events (item events, comments) without an output by the "
                     f"end: {run['background_without_output']} of {run['background_sent']} "
                     "(promo triggers are capped per user: some comments have none); CPU "
                     f"(cores) baseline {run['cores']['baseline']}, flood window "
                     f"{run['cores']['flood']}.")
    on = next((r for r in results["runs"] if r["quarantine"]), None)
    if on is not None:
        worst = max((on["p99_ratio"][g] or 0.0) for g in GROUPS[:2])
        lines.append(f"- Target (same-partition p99 during the flood <= 2x baseline): "
                     f"{'met' if worst <= 2.0 else 'NOT met'} (worst ratio {worst}).")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=BROKER_ENGINES, default="tansu")
    parser.add_argument("--rate", type=float, default=Options.rate,
                        help="background events/s")
    parser.add_argument("--flood", type=int, default=Options.flood, help="flood events")
    parser.add_argument("--flood-s", type=float, default=Options.flood_s,
                        help="seconds the flood is sent over")
    parser.add_argument("--baseline-s", type=float, default=Options.baseline_s)
    parser.add_argument("--only", choices=("on", "off"), default="",
                        help="run one configuration only (default both)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the worker during the flood (stage shares, top frames)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (keeps it runnable)")
    parser.add_argument("--write", action="store_true",
                        help="replace this benchmark's section of benchmarks/RESULTS.md")
    parser.add_argument("--send-flood", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.send_flood:  # the flood's own process (see produce)
        sent = asyncio.run(send_flood(orjson.loads(args.send_flood)))
        print(orjson.dumps(sent).decode(), flush=True)
        return sent
    opts = Options(rate=args.rate, flood=args.flood, flood_s=args.flood_s,
                   baseline_s=args.baseline_s)
    if args.smoke:
        opts = dataclasses.replace(opts, rate=100, flood=3_000, flood_s=3.0, warmup_s=4,
                                   baseline_s=4, tail_s=3, drain_s=30)
    configs = [c for c in (True, False) if not args.only or c == (args.only == "on")]
    with tempfile.TemporaryDirectory(prefix="bench-flood-") as tmp, contextlib.ExitStack() as st:
        broker = st.enter_context(local_broker(args.broker, log_path=Path(tmp) / "broker.log"))
        ctx = Context(bootstrap=broker.bootstrap, plan=PLANS["smoke"], workdir=Path(tmp),
                      redis="", clickhouse="", rooms=opts.rooms, items=opts.items,
                      worker_overrides={"broker_engine": args.broker},
                      broker_pid=broker.process.pid if broker.process else None)
        runs = [run_config(ctx, opts, quarantine, args.profile) for quarantine in configs]
    results = {"broker": args.broker, "options": dataclasses.asdict(opts), "runs": runs}
    command = "python -m benchmarks.bench_flood" + "".join(f" {a}" for a in argv or [])
    if args.write:
        replace_section(REPO / "benchmarks" / "RESULTS.md", render(results, command), SECTION)
    print(render(results, command))
    print(orjson.dumps(results).decode(), flush=True)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
