"""Soak: one worker with the whole pipeline under steady simulator traffic for a long time.

    python -m benchmarks.soak [--broker tansu|kafka] [--minutes 30] [--rate 1200]
        [--warmup-minutes 10] [--retention-minutes 10] [--interval 10] [--users 10000]
        [--bootstrap HOST:PORT] [--redis URL | --redis ""] [--out benchmarks/RESULTS.md | ""]

One real ``livepulse worker`` (the bench's worker: every pipeline, the benchmark campaigns,
the Redis sink on a private ``redis-server`` unless ``--redis`` says otherwise) on a local
broker (``--broker``: the embedded Tansu, or Apache Kafka with ``--retention-minutes`` of
topic retention and one-minute segments so that retention acts during the run) or on
``--bootstrap``, fed paced simulator traffic by the producer process of
:mod:`benchmarks.bench_triggers` at ``--rate`` events/s (default 1,200: half the single-worker
maximum verified on Kafka by ``livepulse bench``, 2,490/s in ``benchmarks/RESULTS.md``).
Every ``--interval`` s it samples the worker's RSS (``VmRSS``), the consumer lag summed over
the input partitions (and with the internal ``user-activity`` hop), the events through the
whole pipeline, the user-profile keys, the ERROR / Traceback lines of the worker's log, and
the local broker's RSS and CPU.

After the warm-up (the first ``--warmup-minutes``) it reports RSS growth (last and max
post-warm-up sample against the first one), lag max / last, and the error count. At the end
it lets the worker drain, then accounts for every event and output: input events sent =
events through the pipeline (+ dead letters of live events and the hosts' product pins,
which never reach the user hop), and for each output topic, the records the worker counted
(``livepulse_events_out_total``) = the records in the topic's log. The bar: nothing lost,
every output accounted, RSS growth < 10 %, a bounded lag (the last post-warm-up input lag
under 10 s of traffic), no error.
The last stdout line is the JSON summary; a run of 5 minutes or more also writes
``benchmarks/results/soak-<date>.json`` and replaces the broker's soak section of ``--out``.
The machine the figures come from may be shared: the load average at start and end is in
the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from benchmarks.bench_pipeline import (
    PLANS,
    Context,
    Worker,
    by_label,
    done_topics,
    input_topics,
    lag_topics,
    launch,
    new_tag,
    proc_status_mb,
    replace_section,
    scrape,
    total,
    wait_assigned,
)
from benchmarks.bench_triggers import REPO, cpu_seconds, stop_process
from streams.broker import BROKER_ENGINES, _die_with_parent, local_broker
from streams.control import ControlTopicReader
from streams.topics import topic_names

SECTIONS = {"tansu": "## Soak on the embedded broker (Tansu)",
            "kafka": "## Soak on Apache Kafka"}
BROKER_NAMES = {"tansu": "the embedded broker (Tansu)", "kafka": "Apache Kafka 3.9 (KRaft)"}
SEGMENT_MS = 60_000  # Kafka deletes closed segments only: roll them every minute
ERROR_LINE = re.compile(r"\bERROR\b|Traceback")
MAX_RSS_GROWTH_PCT = 10.0
LAG_BOUND_S = 10.0  # the last post-warm-up input lag must be below this much traffic


@dataclasses.dataclass
class Options:
    minutes: float = 30.0
    rate: float = 1_200.0
    warmup_minutes: float = 10.0
    broker: str = "tansu"
    retention_minutes: float = 10.0  # topic retention (Kafka; Tansu has none)
    interval_s: float = 10.0
    users: int = 10_000
    linger_ms: int = 50  # simulator producer: bigger batches, fewer of them in the broker
    worker_linger_ms: int = 20  # LIVEPULSE_PRODUCER_LINGER_MS of the worker (default 1)
    rooms: int = 6
    items: int = 2_000
    seed: int = 7
    settings: tuple[tuple[str, str], ...] = ()  # worker settings (--set NAME=VALUE)


def error_lines(log: Path) -> list[str]:
    """The lines of a worker log that report an error (``ERROR`` level or a traceback)."""
    if not log.exists():
        return []
    return [line for line in log.read_text(errors="replace").splitlines()
            if ERROR_LINE.search(line)]


def take_sample(worker: Worker, started: float, broker_pid: int | None = None
                ) -> dict[str, Any] | None:
    """One sample of the worker, and of the embedded broker's process if given (None:
    /metrics unreachable)."""
    names = topic_names(worker.settings)
    snap = scrape(worker.web_url)
    if snap is None:
        return None
    profiles = next((v for n, labels, v in snap if n == "livepulse_table_keys"
                     and "user-profiles" in labels.get("table", "")), 0.0)
    return {"t_s": round(time.monotonic() - started, 1),
            "rss_mb": proc_status_mb(worker.process.pid, "VmRSS"),
            "lag_inputs": int(total(snap, "livepulse_consumer_lag_records",
                                    input_topics(names))),
            "lag_pipeline": int(total(snap, "livepulse_consumer_lag_records",
                                      lag_topics(names))),
            "processed": int(total(snap, "livepulse_events_in_total", done_topics(names))),
            "profiles": int(profiles), "errors": len(error_lines(worker.log)),
            "state": state_fill(snap),
            "load_1m": round(os.getloadavg()[0], 2),
            **({"broker_rss_mb": proc_status_mb(broker_pid, "VmRSS"),
                "broker_cpu_s": round(cpu_seconds(broker_pid), 1)} if broker_pid else {})}


def state_fill(snap: list[tuple[str, dict[str, str], float]]) -> dict[str, list[int]]:
    """``model/store`` -> [entries, cap] of the models' bounded stores in one scrape.

    >>> state_fill([("livepulse_model_state_entries", {"model": "r", "store": "s"}, 5.0),
    ...             ("livepulse_model_state_capacity", {"model": "r", "store": "s"}, 9.0)])
    {'r/s': [5, 9]}
    """
    out: dict[str, list[int]] = {}
    for n, labels, value in snap:
        if n in ("livepulse_model_state_entries", "livepulse_model_state_capacity"):
            pair = out.setdefault(f"{labels.get('model')}/{labels.get('store')}", [0, 0])
            pair[n.endswith("capacity")] = int(value)
    return out


def summarize(samples: list[dict[str, Any]], opts: Options) -> dict[str, Any]:
    """The soak's figures from its samples (post-warm-up: ``t_s >= warm-up``).

    >>> s = [{"t_s": t, "rss_mb": r, "lag_inputs": l, "processed": 0, "errors": 0}
    ...      for t, r, l in [(0, 50, 0), (10, 100, 9), (20, 104, 30), (30, 102, 4)]]
    >>> out = summarize(s, Options(rate=1, warmup_minutes=10 / 60, interval_s=10))
    >>> out["rss_growth_pct_last"], out["rss_growth_pct_max"], out["lag_max"], out["lag_last"]
    (2.0, 4.0, 30, 4)
    >>> out["lag_bounded"], out["passed"]
    (True, True)
    """
    warm = [s for s in samples if s["t_s"] >= opts.warmup_minutes * 60] or samples[-1:]
    first, last = warm[0], warm[-1]
    rss_max = max(s["rss_mb"] for s in warm)
    growth_last = round((last["rss_mb"] - first["rss_mb"]) / max(first["rss_mb"], 1e-6) * 100,
                        1)
    growth_max = round((rss_max - first["rss_mb"]) / max(first["rss_mb"], 1e-6) * 100, 1)
    lag_bound = int(LAG_BOUND_S * opts.rate)
    result = {
        "post_warmup_samples": len(warm), "rss_first_mb": first["rss_mb"],
        "rss_last_mb": last["rss_mb"], "rss_max_mb": rss_max,
        "rss_growth_pct_last": growth_last, "rss_growth_pct_max": growth_max,
        "lag_max": max(s["lag_inputs"] for s in warm), "lag_last": last["lag_inputs"],
        "lag_bound": lag_bound, "lag_bounded": last["lag_inputs"] < lag_bound,
        "errors": samples[-1]["errors"] if samples else 0,
        # stores still filling towards their caps after the warm-up grow RSS by design
        "state_first": first.get("state", {}), "state_last": last.get("state", {})}
    result["passed"] = (growth_last < MAX_RSS_GROWTH_PCT and result["lag_bounded"]
                        and result["errors"] == 0)
    return result


def broker_figures(samples: list[dict[str, Any]], opts: Options) -> dict[str, Any]:
    """RSS of the embedded broker (first / last post-warm-up sample) and its CPU use in
    cores over the whole run and over the last fifth ({} without broker samples)."""
    with_broker = [s for s in samples if "broker_cpu_s" in s]
    if len(with_broker) < 2:
        return {}
    warm = [s for s in with_broker if s["t_s"] >= opts.warmup_minutes * 60] or with_broker

    def cores(a: dict[str, Any], b: dict[str, Any]) -> float:
        return round((b["broker_cpu_s"] - a["broker_cpu_s"]) / max(b["t_s"] - a["t_s"], 1e-6), 2)

    tail = with_broker[-max(2, len(with_broker) // 5):]
    return {"rss_first_mb": warm[0]["broker_rss_mb"], "rss_last_mb": warm[-1]["broker_rss_mb"],
            "cpu_cores_mean": cores(with_broker[0], with_broker[-1]),
            "cpu_cores_last_fifth": cores(tail[0], tail[-1])}


def account_outputs(bootstrap: str, worker: Worker, attempts: int = 15) -> dict[str, Any]:
    """Whether each output topic holds exactly the records the worker counted for it.

    Timers keep producing after the traffic stops, so the log ends (read as a fetch reports
    them: right on Tansu too) are checked between two scrapes of the counter: counted
    before <= in the log <= counted after. A shortfall is an output lost between the worker
    and the broker; a surplus a duplicate or a record from elsewhere.
    """
    name = "livepulse_events_out_total"
    topics: dict[str, dict[str, int]] = {}
    for attempt in range(1, attempts + 1):
        before = by_label(scrape(worker.web_url), name, "topic")
        ends = asyncio.run(ControlTopicReader(bootstrap, sorted(before), default_partitions=0)
                           .log_ends())
        after = by_label(scrape(worker.web_url), name, "topic")
        topics = {topic: {"counted": count, "in_log": sum(
            end for tp, end in ends.items() if tp.topic == topic)}
            for topic, count in sorted(before.items())}
        if topics and all(t["counted"] <= t["in_log"] <= after.get(topic, t["counted"])
                          for topic, t in topics.items()):
            return {"accounted": True, "attempts": attempt, "topics": topics}
        time.sleep(1.0)
    return {"accounted": False, "attempts": attempts, "topics": topics}


@contextlib.contextmanager
def private_redis(url: str | None, workdir: Path) -> Iterator[str]:
    """``url`` as given, else a private redis-server for the run ("" when none can run)."""
    if url is not None:
        yield url
        return
    from agents.sinks.embedded_redis import RedisServer, redis_server_available

    if not redis_server_available():
        yield ""
        return
    with RedisServer(log_dir=workdir) as server:
        yield server.url


def soak(bootstrap: str, redis: str, opts: Options, workdir: Path,
         broker_pid: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run one soak on ``bootstrap``; the summary with every sample."""
    plan = dataclasses.replace(PLANS["smoke"], users=opts.users)
    overrides: dict[str, Any] = {"producer_linger_ms": opts.worker_linger_ms,
                                 "broker_engine": opts.broker}
    overrides.update(dict(opts.settings))
    if opts.broker == "kafka":
        overrides["topic_retention_ms"] = int(opts.retention_minutes * 60_000)
    ctx = Context(bootstrap=bootstrap, plan=plan, workdir=workdir, redis=redis,
                  clickhouse="", seed=opts.seed, rooms=opts.rooms, items=opts.items,
                  worker_overrides=overrides)
    tag = new_tag("soak")
    load_start = [round(x, 2) for x in os.getloadavg()]
    (worker,) = launch(ctx, tag)
    samples: list[dict[str, Any]] = []
    try:
        ready_s = wait_assigned([worker], 180)
        producer_opts = {"bootstrap": bootstrap, "rate": opts.rate, "warmup": 0.0,
                         "duration": opts.minutes * 60, "seed": opts.seed, "rooms": opts.rooms,
                         "users": opts.users, "items": opts.items,
                         "linger_ms": opts.linger_ms,
                         "prefix": tag, "expect": "pipeline"}
        producer = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_triggers", "produce",
             orjson.dumps(producer_opts).decode()], cwd=REPO, stdout=subprocess.PIPE,
            preexec_fn=_die_with_parent)
        started = time.monotonic()
        next_at = started
        while producer.poll() is None:
            sample = take_sample(worker, started, broker_pid)
            if sample is not None:
                samples.append(sample)
                if progress:
                    print("soak " + orjson.dumps(sample).decode(), file=sys.stderr, flush=True)
            if worker.process.poll() is not None:
                raise RuntimeError(f"worker exited during the soak:\n"
                                   f"{worker.log.read_text(errors='replace')[-3000:]}")
            next_at += opts.interval_s
            with contextlib.suppress(subprocess.TimeoutExpired):
                producer.wait(max(0.0, next_at - time.monotonic()))
        out, _ = producer.communicate()
        if producer.returncode != 0:
            raise RuntimeError(f"producer failed ({producer.returncode})")
        produced = orjson.loads(out.decode().strip().splitlines()[-1])
        ended = time.monotonic()
        final = take_sample(worker, started, broker_pid)  # at the producer's end, before any drain
        if final is not None:
            samples.append(final)
        names = topic_names(worker.settings)
        inputs = sum(n for stream, n in produced.get("sent_by_stream", {}).items()
                     if stream != "catalog")
        # a host's product pin changes the room only: it is not forwarded to the user hop
        pins = produced.get("sent_by_kind", {}).get("live:product_pin", 0)

        def through() -> int:
            """Input events through the pipeline, dead-lettered before the user hop, or
            product pins (folded by the room pipeline only)."""
            dead = by_label(scrape(worker.web_url), "livepulse_dead_letters_total", "topic")
            return ((drained["processed"] if drained else 0) + dead.get(names.live_events, 0)
                    + pins)

        drained = final
        while time.monotonic() - ended < 60 and drained is not None and (
                drained["lag_pipeline"] > 0 or through() < inputs):
            time.sleep(1.0)
            drained = take_sample(worker, started, broker_pid) or drained
        peak_rss = proc_status_mb(worker.process.pid, "VmHWM")
        outputs = account_outputs(bootstrap, worker)
        dead_letters = by_label(scrape(worker.web_url), "livepulse_dead_letters_total",
                                "topic")
        through_total = through()
    finally:
        stop_process(worker.process)
    if not samples:
        raise RuntimeError("no sample of the worker's metrics")
    errors = error_lines(worker.log)
    result: dict[str, Any] = {
        "minutes": opts.minutes, "rate": opts.rate, "warmup_minutes": opts.warmup_minutes,
        "interval_s": opts.interval_s, "users": opts.users, "redis": bool(redis),
        "linger_ms": opts.linger_ms, "worker_linger_ms": opts.worker_linger_ms,
        "worker_settings": dict(opts.settings),
        "ready_s": ready_s, "offered_events_per_s": produced["rate_window"],
        "sent": produced["sent_total"], "producer_failed": produced["failed"],
        "sent_by_stream": produced.get("sent_by_stream", {}),
        "processed": samples[-1]["processed"],
        "processed_after_drain": drained["processed"] if drained else None,
        "lag_after_drain": drained["lag_pipeline"] if drained else None,
        "profiles_first": samples[0]["profiles"], "profiles_last": samples[-1]["profiles"],
        "peak_rss_mb": peak_rss, "load_avg_start": load_start,
        "broker": broker_figures(samples, opts),
        "load_avg_end": [round(x, 2) for x in os.getloadavg()],
        **summarize(samples, opts), "error_lines": errors[:20], "samples": samples}
    result["errors"] = len(errors)
    result.update({"inputs_sent": inputs, "product_pins": pins, "dead_letters": dead_letters,
                   "lost": inputs - through_total, "outputs": outputs, "broker_engine": opts.broker,
                   "retention_minutes": opts.retention_minutes if opts.broker == "kafka"
                   else None})
    result["passed"] = (result["passed"] and result["errors"] == 0 and result["lost"] == 0
                        and produced["failed"] == 0 and outputs["accounted"])
    return result


def section_heading(engine: str, settings: dict[str, str]) -> str:
    """The RESULTS.md heading of a soak: its own section when worker settings were changed,
    so a soak with the defaults keeps its figures.

    >>> section_heading("kafka", {"recs_max_sessions": "20000"})
    '## Soak with recs_max_sessions=20000 on Apache Kafka'
    """
    if not settings:
        return SECTIONS[engine]
    changed = ", ".join(f"{k}={v}" for k, v in sorted(settings.items()))
    return SECTIONS[engine].replace("## Soak on", f"## Soak with {changed} on", 1)


def fill_line(first: dict[str, list[int]], last: dict[str, list[int]]) -> str:
    """The stores whose entries changed after the warm-up, as ``store a -> b (cap)``.

    >>> fill_line({"r/s": [5, 9], "r/i": [3, 9]}, {"r/s": [8, 9], "r/i": [3, 9]})
    'r/s 5 -> 8 (9)'
    """
    moved = [f"{name} {first.get(name, [0, 0])[0]:,} -> {entries:,} ({cap:,})"
             for name, (entries, cap) in sorted(last.items())
             if first.get(name, [0, 0])[0] != entries]
    return ", ".join(moved) or "none moved"


def render_markdown(result: dict[str, Any], command: str) -> str:
    """The RESULTS.md section of one soak."""
    day = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    r = result
    b = r.get("broker") or {}
    engine = r.get("broker_engine", "tansu")
    verdict = "met" if r["passed"] else "NOT met"
    outputs = r.get("outputs") or {}
    counted = sum(t["counted"] for t in outputs.get("topics", {}).values())
    in_log = sum(t["in_log"] for t in outputs.get("topics", {}).values())
    accounted = "all accounted" if outputs.get("accounted") else "**NOT accounted**"
    retention = (f"topic retention {r['retention_minutes']:g} min with 1-min segments"
                 if r.get("retention_minutes") else "no retention (the broker has none)")
    lines = [
        f"{section_heading(engine, r.get('worker_settings') or {})} ({day})", "",
        f"`{command}` -- one worker with the whole pipeline (bench campaigns, Redis sink: "
        f"{'on' if r['redis'] else 'off'}, no ClickHouse) on {BROKER_NAMES[engine]}, "
        f"{retention}; {r['minutes']:g} min of simulator traffic at {r['rate']:g} events/s "
        f"(offered {r['offered_events_per_s']:,.0f}/s), {r['users']:,} simulated users, "
        f"sampled every {r['interval_s']:g} s; the first {r['warmup_minutes']:g} min are "
        f"warm-up. Producer linger: simulator {r.get('linger_ms')} ms, worker "
        f"(`LIVEPULSE_PRODUCER_LINGER_MS`) {r.get('worker_linger_ms')} ms.", "",
        "| figure | value |", "|---|---|",
        f"| input events sent / through the pipeline after drain (+ dead letters, + product "
        f"pins: room only) / lost | {r['inputs_sent']:,} / {(r['processed_after_drain'] or 0):,}"
        f" (+ {sum(r['dead_letters'].values()):,}, + {r.get('product_pins', 0):,}) / "
        f"**{r['lost']:,}** |",
        f"| outputs counted by the worker / records in the output topics' logs | "
        f"{counted:,} / {in_log:,} ({accounted}, {len(outputs.get('topics', {}))} topics) |",
        f"| RSS after warm-up: first / last / max (MB) | {r['rss_first_mb']} / "
        f"{r['rss_last_mb']} / {r['rss_max_mb']} |",
        f"| RSS growth after warm-up: last / max | {r['rss_growth_pct_last']} % / "
        f"{r['rss_growth_pct_max']} % (bar < {MAX_RSS_GROWTH_PCT:g} %) |",
        f"| models' bounded stores after warm-up, first -> last (cap) | "
        f"{fill_line(r.get('state_first', {}), r.get('state_last', {}))} |",
        f"| peak RSS (VmHWM) | {r['peak_rss_mb']} MB |",
        f"| user profiles at first / last sample | {r['profiles_first']:,} / "
        f"{r['profiles_last']:,} |",
        f"| input lag after warm-up: max / last (records) | {r['lag_max']:,} / "
        f"{r['lag_last']:,} (bound {r['lag_bound']:,} = {LAG_BOUND_S:g} s of traffic) |",
        f"| ERROR / Traceback lines in the worker log | {r['errors']} |",
        f"| broker: RSS after warm-up first / last, CPU cores mean / last fifth | "
        f"{b.get('rss_first_mb')} / {b.get('rss_last_mb')} MB, {b.get('cpu_cores_mean')} / "
        f"{b.get('cpu_cores_last_fifth')} |",
        f"| load average (1/5/15 min) start / end | {r['load_avg_start']} / "
        f"{r['load_avg_end']} |", "",
        f"The bar (nothing lost, every output accounted, RSS growth < 10 % after warm-up, lag "
        f"bounded, no error): **{verdict}**.", ""]
    if r.get("json_path"):
        lines += [f"Raw figures, every sample: `{r['json_path']}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the options, run, write the results (long runs), print the JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Options()
    parser.add_argument("--minutes", type=float, default=defaults.minutes)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="events/s")
    parser.add_argument("--warmup-minutes", type=float, default=defaults.warmup_minutes)
    parser.add_argument("--interval", type=float, default=defaults.interval_s,
                        help="seconds between samples")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument("--linger-ms", type=int, default=defaults.linger_ms,
                        help="linger of the simulator's producer")
    parser.add_argument("--worker-linger-ms", type=int, default=defaults.worker_linger_ms,
                        help="LIVEPULSE_PRODUCER_LINGER_MS of the worker")
    parser.add_argument("--broker", choices=BROKER_ENGINES, default=defaults.broker,
                        help="the local broker to start (default: the embedded Tansu)")
    parser.add_argument("--retention-minutes", type=float, default=defaults.retention_minutes,
                        help="topic retention on Kafka (Tansu has none)")
    parser.add_argument("--bootstrap", default="", help="an existing broker (default: a "
                        "local one, see --broker)")
    parser.add_argument("--redis", default=None,
                        help='Redis sink URL ("" = off; default: a private redis-server)')
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a worker setting (repeatable), e.g. recs_max_sessions=20000 to "
                        "fill the recommender's session memory within the warm-up")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS.md"),
                        help='RESULTS.md to update (runs of 5 min or more; "" = none)')
    args = parser.parse_args(argv)
    opts = Options(minutes=args.minutes, rate=args.rate, warmup_minutes=args.warmup_minutes,
                   interval_s=args.interval, users=args.users, linger_ms=args.linger_ms,
                   worker_linger_ms=args.worker_linger_ms, broker=args.broker,
                   retention_minutes=args.retention_minutes,
                   settings=tuple(tuple(item.split("=", 1)) for item in args.set))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        workdir = Path(tmp)
        with private_redis(args.redis, workdir) as redis:
            if args.bootstrap:
                result = soak(args.bootstrap, redis, opts, workdir)
            else:
                with local_broker(args.broker, log_path=workdir / "broker.log",
                                  kafka_properties={"log.roll.ms": str(SEGMENT_MS)}) as broker:
                    pid = broker.process.pid if broker.process else None
                    result = soak(broker.bootstrap, redis, opts, workdir, pid)
    shown = [a for i, a in enumerate(argv) if not a.startswith("--bootstrap")
             and not (i and argv[i - 1] == "--bootstrap")]
    command = result["command"] = " ".join(["python -m benchmarks.soak", *shown])
    if args.out and opts.minutes >= 5:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
        out_json = REPO / "benchmarks" / "results" / f"soak-{stamp}.json"
        out_json.parent.mkdir(parents=True, exist_ok=True)
        result["json_path"] = str(out_json.relative_to(REPO))
        out_json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        replace_section(Path(args.out), render_markdown(result, command),
                        section_heading(args.broker, dict(opts.settings)))
    print(orjson.dumps({k: v for k, v in result.items() if k != "samples"}).decode(),
          flush=True)
    return result


if __name__ == "__main__":
    main()
