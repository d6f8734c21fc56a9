"""Baselines for the per-key stateful count: how fast other stacks drain the same backlog.

    python -m benchmarks.baselines [--events 200000] [--runs 1] [--names aiokafka,faust]
        [--bootstrap HOST:PORT]

Workload: ``events`` simulator-like click events (orjson, keyed by ``user_id``, exactly
``events // 10`` distinct users, each seen ``KEY_RATIO`` times in a shuffled order) produced
as a backlog into a fresh topic with ``partitions`` partitions (explicit ``retention.ms`` /
``retention.bytes`` configs, see :meth:`streams.topics.TopicSpec.configs`) *before* any
worker starts. Then each baseline runs in its own process, one after the other, with its
own consumer group on that topic, from the earliest offset, and counts events per user.

Throughput = events / (wall time of the last record processed - that of the first), as the
worker reports it: group joins, topic creation and state recovery are not measured. The
machine is shared and noisy, so each entry also has ``events_per_cpu_s`` (events per CPU
second the worker spent in that window) and the CLI reports load averages.
Correctness: the sum of the per-key counts *read back from the worker's state* must be
``events`` and the number of keys ``events // 10``; otherwise the entry gets an ``error``.

Baselines (:data:`BASELINES`); each is ``python -m MODULE BOOTSTRAP TOPIC N RESULT_FILE``:

* ``aiokafka`` (:mod:`benchmarks.count_aiokafka`): raw ``AIOKafkaConsumer`` in a group,
  ``getmany(max_records=10_000)``, fetch wait 10 ms, ``orjson.loads`` per value, a dict of
  counts. The ceiling.
* ``faust`` (:mod:`benchmarks.count_faust`): the textbook Faust app, ``kafka://`` broker,
  memory store, one agent doing ``table[event["user_id"]] += 1`` on a ``Table(default=int)``.
  Processing settings are Faust's defaults. Changed, and why:
  ``broker_session_timeout=8``, ``broker_rebalance_timeout=6``, ``broker_heartbeat_interval=1``
  (the group join on the embedded broker waits about the rebalance timeout: 30-60 s with
  defaults; the join is outside the measured window anyway); the table's ``partitions`` =
  the topic's (Faust's default 8 would raise ``PartitionsMismatch`` on a 4-partition topic);
  a free ``web_port`` (runs must not clash on 6066).
* ``quix`` (:mod:`benchmarks.count_quix`): a Quix Streams ``Application`` with its RocksDB
  state, ``sdf.apply(count, stateful=True)``, stopped by ``app.run(count=N)``. Changed:
  ``auto_offset_reset="earliest"`` (Quix defaults to ``latest`` and would skip the backlog)
  and ``loglevel="WARNING"``. Quix needs ``retention.ms`` and ``retention.bytes``
  in DescribeConfigs for every topic it derives internal topics from; Tansu describes only
  the configs a topic was created with, so the input topic is created with both, and Quix
  then creates its changelog topic with both too.
* ``engine`` (``benchmarks/count_engine.py``, written separately): run when the file exists,
  left out of the results when it does not.

Each worker runs in an empty temporary directory (its working directory), so Faust's
``datadir`` and Quix's ``state`` directory keep their relative defaults and vanish after.

Worker contract: consume ``TOPIC`` from the beginning in a group of its own, count per key,
and once ``N`` records are processed write ``RESULT_FILE`` (atomically, see
:func:`write_result`): ``{"processed", "sum", "keys", "first_s", "last_s", "cpu_s",
"rss_mb"}``
(``first_s``/``last_s``: ``time.time()`` at the first and last record processed; ``sum``
and ``keys``: read back from the state). The worker may then exit or keep running: the
runner kills it (a clean Faust leave takes 20-35 s on the embedded broker).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.bench_triggers import stop_process
from streams.admin import create_topics
from streams.broker import EmbeddedBroker, _die_with_parent
from streams.topics import TopicSpec

REPO = Path(__file__).resolve().parent.parent
PARTITIONS = 4
KEY_RATIO = 10  # events per distinct key
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
RETENTION_MS = 3_600_000
STOP_GRACE_S = 3.0


@dataclass(frozen=True, slots=True)
class Baseline:
    """One baseline: a worker module run as ``python -m MODULE BOOTSTRAP TOPIC N RESULT``."""

    name: str
    module: str
    optional: bool = False  # skipped (not an error) when its script does not exist

    @property
    def script(self) -> Path:
        return REPO.joinpath(*self.module.split(".")).with_suffix(".py")

    def command(self, bootstrap: str, topic: str, events: int, result: Path) -> list[str]:
        return [sys.executable, "-m", self.module, bootstrap, topic, str(events), str(result)]


BASELINES: tuple[Baseline, ...] = (
    Baseline("aiokafka", "benchmarks.count_aiokafka"),
    Baseline("faust", "benchmarks.count_faust"),
    Baseline("quix", "benchmarks.count_quix"),
    Baseline("engine", "benchmarks.count_engine", optional=True),
)


def available(names: list[str] | None = None) -> list[Baseline]:
    """The baselines to run: ``names`` (all by default), optional ones only if present.

    >>> [b.name for b in available(["aiokafka", "quix"])]
    ['aiokafka', 'quix']
    """
    chosen = [b for b in BASELINES if names is None or b.name in names]
    unknown = set(names or ()) - {b.name for b in BASELINES}
    if unknown:
        raise ValueError(f"unknown baselines: {sorted(unknown)}")
    return [b for b in chosen if not b.optional or b.script.exists()]


# ---------------------------------------------------------------------- worker side
def vm_hwm_mb(pid: int) -> float:
    """Peak RSS (``VmHWM``) of a live process in MB; 0 once it is gone.

    Not ``ru_maxrss``: Linux carries that over fork and exec, so a worker would report the
    runner's peak.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def worker_args(argv: list[str] | None = None) -> tuple[str, str, int, Path]:
    """``BOOTSTRAP TOPIC N RESULT_FILE`` of a worker's command line.

    >>> worker_args(["h:1", "t", "30", "/tmp/r.json"])
    ('h:1', 't', 30, PosixPath('/tmp/r.json'))
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 4:
        raise SystemExit("usage: BOOTSTRAP TOPIC N RESULT_FILE")
    return argv[0], argv[1], int(argv[2]), Path(argv[3])




def write_result(path: Path, *, processed: int, total: int, keys: int, first_s: float,
                 last_s: float, cpu_s: float | None = None) -> None:
    """Write a worker's result atomically (the runner polls for the file).

    ``cpu_s``: the process's CPU time (all threads, ``time.process_time()``) between the
    first and the last record: steadier than wall time on a shared machine.
    """
    body = {"processed": processed, "sum": total, "keys": keys, "first_s": first_s,
            "last_s": last_s, "cpu_s": cpu_s, "rss_mb": vm_hwm_mb(os.getpid())}
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(body))
    os.replace(tmp, path)


# ---------------------------------------------------------------------- runner side
def make_events(events: int, seed: int = 7) -> tuple[list[tuple[bytes, bytes]], int]:
    """``events`` (key, value) records over exactly ``max(1, events // KEY_RATIO)`` users.

    >>> records, keys = make_events(50)
    >>> len(records), keys, len({k for k, _ in records})
    (50, 5, 5)
    >>> sorted(orjson.loads(records[0][1]))
    ['event_id', 'item_id', 'price', 'session_id', 'ts', 'type', 'user_id']
    """
    rng = Random(seed)
    keys = max(1, events // KEY_RATIO)
    users = [i % keys for i in range(events)]
    rng.shuffle(users)
    ts = 1_700_000_000_000
    records = []
    for i, user in enumerate(users):
        user_id = f"u{user}"
        value = {"event_id": f"b-{i}", "type": EVENT_TYPES[rng.randrange(4)], "ts": ts + i,
                 "user_id": user_id, "session_id": f"s{user}", "item_id": f"i{rng.randrange(2000)}",
                 "price": round(rng.uniform(5, 500), 1)}
        # The copy: each bytes object orjson returns keeps a ~4 KiB allocation (200k
        # records would hold 800 MB in the runner).
        records.append((user_id.encode(), bytes(memoryview(orjson.dumps(value)))))
    return records, keys


async def produce_backlog(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]],
                          partitions: int) -> float:
    """Create ``topic`` and produce ``records`` into it; return the produce rate (records/s)."""
    spec = TopicSpec(topic, "user_id", "input", "baseline backlog")
    await create_topics(bootstrap, [spec], partitions=partitions, replication_factor=1,
                        retention_ms=RETENTION_MS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_batch_size=256 * 1024)
    await producer.start()
    try:
        failed = 0

        def delivered(future: asyncio.Future[Any]) -> None:
            nonlocal failed
            failed += future.cancelled() or future.exception() is not None

        started = time.monotonic()
        for key, value in records:
            (await producer.send(topic, value, key=key)).add_done_callback(delivered)
        await producer.flush()
        await asyncio.sleep(0)  # done callbacks run on the next loop iteration
        if failed:
            raise RuntimeError(f"{failed} of {len(records)} backlog records not delivered")
        return round(len(records) / max(1e-6, time.monotonic() - started), 1)
    finally:
        await producer.stop()


def tail(path: Path, chars: int = 1500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def run_baseline(baseline: Baseline, bootstrap: str, topic: str, events: int, keys: int,
                 workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Run one worker to completion and turn its result file into figures (or an error)."""
    result_path = workdir / f"{baseline.name}.json"
    log_path = workdir / f"{baseline.name}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            baseline.command(bootstrap, topic, events, result_path), cwd=workdir,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
    hwm = 0.0
    started = time.monotonic()
    try:
        deadline = started + timeout_s
        while not result_path.exists():
            hwm = max(hwm, vm_hwm_mb(process.pid))
            if process.poll() is not None and not result_path.exists():
                return {"error": f"exited with code {process.returncode} before counting "
                                 f"{events} events: {tail(log_path)}"}
            if time.monotonic() > deadline:
                return {"error": f"timeout after {timeout_s:.0f} s: {tail(log_path)}"}
            time.sleep(0.05)
        hwm = max(hwm, vm_hwm_mb(process.pid))
        wall_s = time.monotonic() - started
    finally:
        stop_process(process, STOP_GRACE_S)  # its result is already written
    body = orjson.loads(result_path.read_bytes())
    seconds = max(1e-6, body["last_s"] - body["first_s"])
    out: dict[str, Any] = {
        "events_per_s": round(body["sum"] / seconds, 1), "events": body["sum"],
        "keys": body["keys"], "processed": body["processed"], "seconds": round(seconds, 3),
        "rss_mb": max(hwm, float(body.get("rss_mb") or 0.0)),
        "wall_s": round(wall_s, 2)}
    if body.get("cpu_s"):
        out["cpu_s"] = round(body["cpu_s"], 3)
        out["events_per_cpu_s"] = round(body["sum"] / max(1e-6, body["cpu_s"]), 1)
    if (body["sum"], body["keys"], body["processed"]) != (events, keys, events):
        out["error"] = (f"wrong count: processed {body['processed']}, per-key counts sum to "
                        f"{body['sum']} over {body['keys']} keys; expected {events} over {keys}")
    return out


def default_timeout(events: int) -> float:
    """Startup allowance plus the backlog at 1,000 events/s (Faust does ~5,000 here)."""
    return 120.0 + events / 1000.0


def measure_baselines(bootstrap: str, events: int, partitions: int = PARTITIONS,
                      names: list[str] | None = None, *,
                      timeout_s: float | None = None) -> dict[str, dict[str, Any]]:
    """Produce one backlog of ``events`` and drain it with each baseline in turn.

    Returns ``{name: {"events_per_s", "events", "keys", "processed", "seconds", "rss_mb",
    "wall_s"}}`` (``wall_s``: process start to result, joins and startup included)
    (plus ``"error"`` when a baseline failed, timed out or counted wrong: never raises for
    a baseline). ``engine`` is included only when ``benchmarks/count_engine.py`` exists.
    """
    chosen = available(names)
    topic = f"bl{os.getpid()}x{time.monotonic_ns() % 10**9}-events"
    records, keys = make_events(events)
    asyncio.run(produce_backlog(bootstrap, topic, records, partitions))
    del records
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        for baseline in chosen:
            workdir = Path(tmp) / baseline.name
            workdir.mkdir()
            try:
                results[baseline.name] = run_baseline(
                    baseline, bootstrap, topic, events, keys, workdir,
                    timeout_s or default_timeout(events))
            except Exception as exc:  # a baseline reports, never crashes the harness
                results[baseline.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return results


def median_run(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per baseline, the run with the median rate, plus every run's rate.

    >>> median_run([{"a": {"events_per_s": 3}}, {"a": {"events_per_s": 1}},
    ...             {"a": {"error": "x"}}])
    {'a': {'events_per_s': 3, 'runs_events_per_s': [3, 1], 'failed_runs': 1}}
    """
    merged: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(n for run in runs for n in run):
        ok = [run[name] for run in runs if name in run and "error" not in run[name]]
        if not ok:
            merged[name] = next(run[name] for run in runs if name in run)
            continue
        rates = [r["events_per_s"] for r in ok]
        middle = statistics.median_high(rates)
        merged[name] = {**next(r for r in ok if r["events_per_s"] == middle),
                        "runs_events_per_s": rates, "failed_runs": len(runs) - len(ok)}
    return merged


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [f"{'baseline':<10} {'events/s':>12} {'ev/cpu-s':>10} {'events':>9} {'keys':>7} "
             f"{'seconds':>8} {'rss MB':>7}"]
    for name, r in results.items():
        if "error" in r and "events_per_s" not in r:
            lines.append(f"{name:<10} error: {r['error'][:200]}")
            continue
        lines.append(f"{name:<10} {r['events_per_s']:>12,.0f} "
                     f"{r.get('events_per_cpu_s', 0):>10,.0f} {r['events']:>9} {r['keys']:>7} "
                     f"{r['seconds']:>8.2f} {r['rss_mb']:>7.0f}"
                     + (f"  ERROR {r['error']}" if "error" in r else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    parser.add_argument("--runs", type=int, default=1, help="repeat; report the median")
    parser.add_argument("--names", default="", help="comma-separated (default: all)")
    parser.add_argument("--timeout", type=float, default=0.0, help="per baseline, seconds")
    parser.add_argument("--bootstrap", default="", help="an existing broker (default: embedded)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in args.names.split(",") if n.strip()] or None
    load_start = [round(x, 2) for x in os.getloadavg()]

    def measure(bootstrap: str) -> list[dict[str, dict[str, Any]]]:
        runs = []
        for i in range(args.runs):
            run = measure_baselines(bootstrap, args.events, args.partitions, names,
                                    timeout_s=args.timeout or None)
            print(f"run {i + 1}/{args.runs}\n{table(run)}", flush=True)
            runs.append(run)
        return runs

    if args.bootstrap:
        runs = measure(args.bootstrap)
    else:
        with EmbeddedBroker() as broker:
            runs = measure(broker.bootstrap)
    summary: dict[str, Any] = {"events": args.events, "keys": max(1, args.events // KEY_RATIO),
                               "partitions": args.partitions, "runs": args.runs,
                               "load_avg_start": load_start,
                               "load_avg_end": [round(x, 2) for x in os.getloadavg()],
                               "baselines": median_run(runs)}
    if args.runs > 1:
        print(f"median of {args.runs} runs\n{table(summary['baselines'])}")
    print(orjson.dumps(summary).decode(), flush=True)
    return summary


if __name__ == "__main__":
    main()
