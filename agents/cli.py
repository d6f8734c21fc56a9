"""The ``livepulse`` command line.

``livepulse demo``       broker + workers + simulator + web, all local (the quick start)
``livepulse worker``     a Faust worker for production (run many to scale out)
``livepulse simulate``   produce simulated live-commerce traffic
``livepulse replay F``   replay a JSONL file or a SessionId/ItemId/Time TSV into the clicks topic
``livepulse topics``     create or list topics on any broker
``livepulse schemas``    export (or check) the JSON Schemas of every contract
``livepulse broker``     run the embedded broker in the foreground and print its address
``livepulse eval X``     offline evaluation of a model (recsys, propensity, sentiment, nab)
``livepulse campaigns``  push, list or delete promo campaigns on the campaigns topic
``livepulse history``    ClickHouse history: run the sink alone, migrate, apply retention
``livepulse forget ID``  erase a user: worker state, Redis keys, ClickHouse rows (idempotent)
``livepulse bench``      full-pipeline benchmark (throughput, latency, memory, scaling, baselines)
``livepulse host-token`` print the token that opens one room's host page and room API
``livepulse secrets``    ``init``: write strong random tokens and keys to an env file (0600)

Without ``LIVEPULSE_KAFKA_URL`` every command that needs a broker starts the embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings, SettingsError
from streams.security import kafka_client_options


@contextlib.contextmanager
def broker_for(settings: Settings) -> Iterator[str]:
    """Yield a bootstrap address: the configured cluster, or a fresh local broker."""
    if not settings.embedded_broker:
        require_kafka(settings.bootstrap_servers)
        yield settings.bootstrap_servers
        return
    with start_local_broker(settings) as broker:
        print(f"livepulse: local broker ({broker.name}) at {broker.bootstrap}",
              file=sys.stderr, flush=True)
        yield broker.bootstrap


def require_kafka(bootstrap: str) -> None:
    """Fail with one line (the URL, the setting, the way out) when Kafka is unreachable."""
    from agents.preflight import StartupError, kafka_problem

    problem = kafka_problem(bootstrap)
    if problem:
        raise StartupError(problem)


def start_local_broker(settings: Settings, port: int | None = None,
                       log_path: Path | None = None) -> Any:
    """The local broker of ``LIVEPULSE_BROKER_ENGINE`` (not started yet)."""
    from streams.broker import local_broker

    return local_broker(settings.broker_engine, storage=settings.embedded_broker_storage,
                        binary=settings.broker_bin, port=port, log_path=log_path)


def _print_json(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from agents.demo import human_summary, run_demo

    overrides = {k: v for k, v in {
        "sim_rate": args.rate, "demo_workers": args.workers, "sim_rooms": args.rooms,
        "sim_seed": args.seed, "sim_bad_rate": args.bad_rate}.items() if v is not None}
    # a Redis of the demo's own unless the user named one: never someone's shared server
    summary = run_demo(settings.with_overrides(**overrides), args.duration,
                       private_redis="LIVEPULSE_REDIS_URL" not in os.environ)
    for line in human_summary(summary):  # stderr, with the progress lines: stdout ends in JSON
        print(line, file=sys.stderr, flush=True)
    _print_json(summary)
    return 0 if summary.get("events_out") else 1


def faust_log_level(level: str) -> str:
    """Faust's ``--loglevel`` for a (canonical) ``LIVEPULSE_LOG_LEVEL``.

    Faust offers ``CRIT``, but its logging set-up looks the name up in ``logging``, which
    knows only ``CRITICAL``: teach it the short name (records then show ``CRIT``).

    >>> faust_log_level("warn"), faust_log_level("crit"), logging.getLevelName("CRIT")
    ('WARN', 'CRIT', 50)
    """
    if level == "crit":
        logging.addLevelName(logging.CRITICAL, "CRIT")
    return level.upper()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from agents.preflight import StartupError, port_problem, store_warnings
    from agents.worker import build_engine
    from streams.admin import ensure_topics

    problem = port_problem(settings.web_host, settings.web_port)
    if problem:
        raise StartupError(problem)
    for warning in store_warnings(settings.redis_url, settings.clickhouse_url):
        print(f"livepulse: {warning}", file=sys.stderr, flush=True)
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        engine = build_engine(settings, bootstrap)
        sys.argv = ["livepulse", "worker", "--loglevel", faust_log_level(settings.log_level),
                    *args.faust_args]
        try:
            engine.app.main()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def parse_scenario(text: str) -> tuple[float, str, str | None, float]:
    """``AT:NAME[:ROOM[:DURATION]]`` -> (at_s, name, room or None, duration_s).

    >>> parse_scenario("30:viewer_drop"), parse_scenario("5:checkout_outage:room-1:20")
    ((30.0, 'viewer_drop', None, 10.0), (5.0, 'checkout_outage', 'room-1', 20.0))
    """
    at, name, room, span = [*text.split(":"), "", "", ""][:4]
    return float(at), name, room or None, float(span) if span else 10.0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import ensure_topics
    from streams.simulator import Simulator, run_simulation
    from streams.topics import topic_names

    scenarios = [parse_scenario(text) for text in args.scenario or []]
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        sim = Simulator(seed=args.seed if args.seed is not None else settings.sim_seed,
                        rooms=settings.sim_rooms, users=settings.sim_users,
                        items=settings.sim_items,
                        bad_rate=args.bad_rate if args.bad_rate is not None
                        else settings.sim_bad_rate)
        stats = asyncio.run(run_simulation(
            bootstrap, topic_names(settings), sim, rate=args.rate or settings.sim_rate,
            duration=args.duration, scenarios=scenarios,
            client_options=kafka_client_options(settings)))
    _print_json(stats.to_dict())
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import ensure_topics
    from streams.replay import detect_format, read_jsonl, read_sessions_tsv, replay
    from streams.topics import topic_names

    path = Path(args.file)
    fmt = args.format or detect_format(path)
    events = read_jsonl(path) if fmt == "jsonl" else read_sessions_tsv(path)
    names = topic_names(settings)
    topic = {"clicks": names.clicks, "live": names.live_events}[args.topic]
    key_field = "user_id" if args.topic == "clicks" else "room_id"
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        counts = asyncio.run(replay(bootstrap, topic, events, speedup=args.speedup,
                                    max_rate=args.max_rate, key_field=key_field,
                                    keep_time=args.keep_time,
                                    client_options=kafka_client_options(settings)))
    _print_json(counts)
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    """Exit 0 when every replayed record was consumed (dead letters included)."""
    from agents.backfill import run_backfill
    from streams.replay import detect_format, read_jsonl, read_sessions_tsv

    path = Path(args.file)
    fmt = args.format or detect_format(path)
    events = read_jsonl(path) if fmt == "jsonl" else read_sessions_tsv(path)
    if settings.embedded_broker:
        print("livepulse: no LIVEPULSE_KAFKA_URL: the backfill runs on a local broker and "
              "its outputs end with it", file=sys.stderr, flush=True)
    with broker_for(settings) as bootstrap:
        summary = run_backfill(settings, bootstrap, args.name, events, topic=args.topic,
                               max_rate=args.max_rate, speedup=args.speedup)
    _print_json(summary)
    return 0 if summary["complete"] and not summary["failed"] else 1


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import ensure_topics, list_topics

    with broker_for(settings) as bootstrap:
        created = asyncio.run(ensure_topics(settings, bootstrap)) if args.action == "create" \
            else []
        _print_json({"bootstrap": bootstrap, "created": created,
                     "topics": asyncio.run(list_topics(
                         bootstrap, kafka_client_options(settings)))})
    return 0


def cmd_schemas(args: argparse.Namespace, settings: Settings) -> int:
    from streams.schemas import check_schemas, write_schemas

    out = Path(args.out) if args.out else None
    if args.check:
        stale = check_schemas(out)
        for name in stale:
            print(f"stale or missing: {name}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(out):
        print(path)
    return 0


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.admin import ensure_topics

    if args.engine:
        settings = dataclasses.replace(settings, broker_engine=args.engine)
    broker = start_local_broker(settings, port=args.port)
    stop = False

    def on_signal(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with broker:
        asyncio.run(ensure_topics(settings, broker.bootstrap))
        print(broker.bootstrap, flush=True)
        while not stop and broker.process and broker.process.poll() is None:
            time.sleep(0.2)
    return 0


def cmd_campaigns(args: argparse.Namespace, settings: Settings) -> int:
    """push [FILE] (default LIVEPULSE_CAMPAIGNS_FILE) | list | delete ID."""
    from agents.promo.campaigns import CampaignBook, CampaignError, parse_campaigns
    from agents.promo.triggers import (
        book_with_topic,
        campaigns_path,
        describe,
        publish_campaigns,
        read_campaign_records,
    )
    from streams.admin import ensure_topics
    from streams.ingest import now_ms
    from streams.topics import topic_names

    topic = topic_names(settings).campaigns
    campaigns = []
    if args.action == "push":
        path = Path(args.target) if args.target else campaigns_path(settings)
        try:
            campaigns = parse_campaigns(path.read_text(encoding="utf-8"))
        except (OSError, CampaignError) as exc:
            print(f"livepulse: {path}: {exc}", file=sys.stderr)
            return 2
    elif args.action == "delete" and not args.target:
        print("livepulse: campaigns delete needs a campaign id", file=sys.stderr)
        return 2
    elif args.action == "list":
        try:
            defaults = CampaignBook.load(campaigns_path(settings))
        except (OSError, CampaignError) as exc:
            print(f"livepulse: {exc}", file=sys.stderr)
            return 2
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        client = kafka_client_options(settings)
        records = asyncio.run(read_campaign_records(bootstrap, topic, client_options=client))
        if args.action == "push":
            # A lower version would be ignored by the workers, yet survive compaction as the
            # key's latest record and take over after it: refuse it here.
            on_topic = book_with_topic(records)
            stale = [f"{c.id}: version {c.version} < {current.version} on the topic"
                     for c in campaigns if (current := on_topic.overrides.get(c.id))
                     and c.version < current.version]
            if stale:
                print("livepulse: raise `version` of: " + "; ".join(stale), file=sys.stderr)
                return 1
            asyncio.run(publish_campaigns(bootstrap, topic, [(c.id, c.record)
                                                             for c in campaigns], client))
            _print_json({"topic": topic, "pushed": [{"id": c.id, "version": c.version}
                                                    for c in campaigns]})
        elif args.action == "delete":
            asyncio.run(publish_campaigns(bootstrap, topic, [(args.target, None)], client))
            _print_json({"topic": topic, "deleted": args.target})
        else:
            book = book_with_topic(records, defaults)
            _print_json({"topic": topic, "campaigns": [
                describe(c, book.source_of(c.id), now_ms()) for c in book.campaigns()],
                "rejected": book.rejected})
    return 0


def cmd_forget(args: argparse.Namespace, settings: Settings) -> int:
    """Erase one user everywhere (see agents.forget); prints a JSON summary."""
    from agents.forget import forget
    from streams.admin import ensure_topics

    web_url = None if args.no_wait else (
        args.web or f"http://{settings.web_host}:{settings.web_port}")
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        summary = asyncio.run(forget(settings, bootstrap, args.user_id, web_url=web_url,
                                     timeout_s=args.timeout))
    _print_json(summary)
    return 0 if summary["ok"] else 1


def cmd_dead_letters(args: argparse.Namespace, settings: Settings) -> int:
    """``list`` dead letters (counts by reason and source, then the chosen ones) or
    ``redrive`` the chosen ones to their source topics (see streams.dead_letters)."""
    from streams.admin import ensure_topics
    from streams.dead_letters import (
        Selection,
        plan_redrive,
        read_ledger,
        read_letters,
        redrive,
        tally,
    )
    from streams.topics import topic_names

    names = topic_names(settings)
    selection = Selection(reasons=frozenset(args.reason), sources=frozenset(args.source),
                          ids=frozenset(args.id), since_ms=args.since_ms,
                          until_ms=args.until_ms)
    if args.action == "redrive" and selection.empty and not args.all:
        print("livepulse: dead-letters redrive needs a choice (--reason, --source, --id, "
              "--since-ms, --until-ms) or --all", file=sys.stderr)
        return 2
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        client = kafka_client_options(settings)
        letters = asyncio.run(read_letters(bootstrap, names.dead_letter, client_options=client,
                                           timeout_s=args.timeout))
        done = asyncio.run(read_ledger(bootstrap, names.dead_letter_redrives,
                                       client_options=client, timeout_s=args.timeout))
        chosen = [x for x in letters if selection.matches(x)]
        if args.action == "list":
            _print_json({"topic": names.dead_letter, "total": len(letters), **tally(letters),
                         "selected": len(chosen),
                         "letters": [x.summary() | {"redriven": x.id in done}
                                     for x in chosen[-args.limit:]]})
            return 0
        plan = plan_redrive(letters, selection, done, frozenset(names.inputs()))
        sent = 0 if args.dry_run else asyncio.run(redrive(
            bootstrap, plan.send, dead_letter_topic=names.dead_letter,
            ledger_topic=names.dead_letter_redrives, client_options=client))
        _print_json({"topic": names.dead_letter, "selected": len(chosen),
                     "dry_run": args.dry_run, "redriven": sent,
                     "would_redrive": len(plan.send) if args.dry_run else None,
                     "already_redriven": len(plan.already),
                     "refused": [{"id": x.id, "why": why} for x, why in plan.refused],
                     "to": tally(plan.send)["by_source"]})
    return 0


EVALUATIONS = {
    "recsys": ("online_models.evaluation.recsys", "main",
               "next-item HR@20/MRR@20 on a SessionId/ItemId/Time file (--train F --test F)"),
    "propensity": ("agents.eval_models", "main_propensity",
                   "purchase propensity and leave risk, prequential, on simulator traffic"),
    "sentiment": ("online_models.evaluation.sentiment", "main",
                  "comment sentiment accuracy on the shipped labelled sample"),
    "nab": ("online_models.evaluation.nab", "main",
            "anomaly detectors on the Numenta Anomaly Benchmark, leave-one-group-out and all "
            "files (--data DIR [--detector forecast,cad,ensemble] [--scores-out D])"),
}


def cmd_history(args: argparse.Namespace, settings: Settings) -> int:
    """ClickHouse history (needs LIVEPULSE_CLICKHOUSE_URL): ``run`` the sink without a
    worker (until SIGINT/SIGTERM), ``migrate`` the schema, or apply ``retention`` now."""
    from agents.sinks.clickhouse import ClickHouseWriter, run_standalone

    if not settings.clickhouse_url.strip():
        print("livepulse: set LIVEPULSE_CLICKHOUSE_URL", file=sys.stderr)
        return 2
    if args.action == "run":
        with broker_for(settings) as bootstrap:
            async def main() -> None:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                sink = await run_standalone(settings, bootstrap, stop)
                _print_json({"rows_stored": sink.stored_rows, "unstored": sink.buffered})

            asyncio.run(main())
        return 0
    from streams.topics import topic_names

    writer = ClickHouseWriter(settings.clickhouse_url, group=f"{settings.app_id}-clickhouse",
                              names=topic_names(settings),
                              retention_days=settings.clickhouse_retention_days)
    try:
        if args.action == "migrate":
            _print_json({"applied": writer.migrate(), "database": writer.database,
                         "server": ".".join(map(str, writer.server_version or ()))})
        else:
            _print_json({"dropped": [f"{t}/{p}" for t, p in writer.drop_expired()]})
    finally:
        writer.close()
    return 0


def cmd_host_token(args: argparse.Namespace, settings: Settings) -> int:
    """Print the host token of a room: it opens ``/rooms/ROOM?token=...`` and that room's
    API, nothing else (HMAC of the room id, see ``agents.web.auth``)."""
    from agents.web.auth import host_token

    key = settings.host_token_key or settings.api_token
    if not key:
        print("livepulse: set LIVEPULSE_HOST_TOKEN_KEY or LIVEPULSE_API_TOKEN", file=sys.stderr)
        return 2
    token = host_token(key, args.room_id)
    if args.url:
        base = args.url.rstrip("/")
        print(f"{base}/rooms/{urllib.parse.quote(args.room_id, safe='')}?token={token}")
    else:
        print(token)
    return 0


SECRET_VARIABLES = ("LIVEPULSE_API_TOKEN", "LIVEPULSE_HOST_TOKEN_KEY",
                    "LIVEPULSE_PSEUDONYM_KEY", "LIVEPULSE_SNAPSHOT_KEY")


def write_secrets_file(path: Path, force: bool = False) -> list[str]:
    """Write strong random secrets as ``NAME=value`` lines to a new file of mode 0600 (or
    replace it with ``force``); return the variable names. Values are never printed.

    >>> import stat, tempfile
    >>> target = Path(tempfile.mkdtemp()) / "livepulse.env"
    >>> write_secrets_file(target)[0], oct(stat.S_IMODE(target.stat().st_mode))
    ('LIVEPULSE_API_TOKEN', '0o600')
    """
    import secrets

    lines = ["# livepulse secrets (`livepulse secrets init`): keep private, mode 0600.",
             "# Changing LIVEPULSE_PSEUDONYM_KEY unlinks new history from old; changing",
             "# LIVEPULSE_SNAPSHOT_KEY makes the models start cold once."]
    lines += [f"{name}={secrets.token_urlsafe(48)}" for name in SECRET_VARIABLES]
    data = ("\n".join(lines) + "\n").encode()
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if force else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if force:
            os.replace(target, path)
    except BaseException:
        if force:
            target.unlink(missing_ok=True)
        raise
    return list(SECRET_VARIABLES)


def cmd_secrets(args: argparse.Namespace, settings: Settings | None) -> int:
    """``livepulse secrets init``: the file of strong secrets (runs without valid settings)."""
    path = Path(args.file)
    try:
        names = write_secrets_file(path, args.force)
    except FileExistsError:
        print(f"livepulse: {path} exists; keep it, or pass --force to replace it (a new "
              "pseudonym key unlinks new history from old)", file=sys.stderr)
        return 1
    sourced = str(path) if "/" in str(path) else f"./{path}"
    print(f"wrote {path} (mode 0600): {', '.join(names)}")
    print(f"use it: docker compose --env-file {path} up --build   "
          f"(or: set -a; . {sourced}; set +a)")
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    """Run one evaluation; it prints its result as one JSON object on the last line."""
    import importlib

    module_name, function, _ = EVALUATIONS[args.what]
    getattr(importlib.import_module(module_name), function)(args.eval_args)
    return 0


BENCH_MODULE = "benchmarks.bench_pipeline"
BENCH_INTERRUPT_WAIT_S = 60.0  # after Ctrl-C: the benchmark stops its broker and workers


def source_checkout() -> Path | None:
    """The source checkout this package runs from, if it has ``benchmarks/`` (the
    benchmarks are not installed with the package)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "benchmarks" / "bench_pipeline.py").is_file() else None


def bench_argv(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The ``benchmarks.bench_pipeline`` arguments of a ``livepulse bench`` command line.

    >>> args = build_parser().parse_args(["bench", "--quick", "--events", "100000"])
    >>> bench_argv(args, Settings.from_env({}))
    ['--quick', '--broker', 'tansu', '--events', '100000']
    """
    argv = ["--out", str(Path(args.out).resolve())] if args.out else []
    bootstrap = args.bootstrap or ("" if settings.embedded_broker else settings.bootstrap_servers)
    argv += ["--bootstrap", bootstrap] if bootstrap else []
    argv += ["--clickhouse", args.clickhouse] if args.clickhouse else []
    argv += [flag for flag, on in (("--quick", args.quick), ("--scaling", args.scaling)) if on]
    argv += ["--broker", args.broker or settings.broker_engine]
    for flag, value in (("--events", args.events), ("--sustain", args.sustain),
                        ("--rates", args.rates)):
        argv += [flag, str(value)] if value is not None else []
    for item in args.set:
        argv += ["--set", item]
    return argv


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``python -m benchmarks.bench_pipeline`` of the source checkout in a child process;
    it prints its result as one JSON object on the last line."""
    checkout = source_checkout()
    if checkout is None:
        print("livepulse: bench needs a source checkout of livepulse (benchmarks/ next to "
              f"{Path(__file__).resolve().parent}); run it from a clone of the repository",
              file=sys.stderr)
        return 2
    argv = bench_argv(args, settings)
    path = os.pathsep.join(p for p in (str(checkout), os.environ.get("PYTHONPATH", "")) if p)
    process = subprocess.Popen([sys.executable, "-m", BENCH_MODULE, *argv], cwd=checkout,
                               env={**os.environ, "PYTHONPATH": path})
    try:
        return process.wait()
    except KeyboardInterrupt:  # the child got the Ctrl-C too: let it clean up, then go
        try:
            process.wait(BENCH_INTERRUPT_WAIT_S)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        return 130


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help already names it (options
    whose default comes from a setting say which one) or it is a flag or a list."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS) \
                or (not action.option_strings and action.nargs != argparse.OPTIONAL):
            return text
        return f"{text} (default: %(default)s)"


def from_setting(name: str) -> str:
    """``LIVEPULSE_<NAME>, <its default>``: where an option without a value takes it from.

    >>> from_setting("sim_rate")
    'LIVEPULSE_SIM_RATE, 300.0'
    """
    from config.settings import env_name

    return f"{env_name(name)}, {getattr(Settings(), name)}"


def version() -> str:
    """The installed package's version (``livepulse --version``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("livepulse")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from agents.preflight import StartupError
    from streams.tail import tail
    from streams.topics import topic_names

    if settings.embedded_broker:  # a fresh embedded broker would hold nothing to show
        raise StartupError("tail reads a running cluster: set LIVEPULSE_KAFKA_URL (`livepulse "
                           "demo` prints the command with it)")
    require_kafka(settings.bootstrap_servers)
    # a short name (promo-triggers) gets LIVEPULSE_TOPIC_PREFIX; other names are used as-is
    short = getattr(topic_names(settings), args.topic.replace("-", "_"), None)
    topic = short if isinstance(short, str) and args.topic != "prefix" else args.topic
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(tail(settings.bootstrap_servers, topic, print, limit=args.max,
                         from_beginning=args.from_beginning,
                         client_options=kafka_client_options(settings)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="livepulse", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"livepulse {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run broker, workers, simulator and web locally")
    demo.add_argument("--duration", type=float, default=None,
                      help="seconds to run, then stop and summarise (default: until Ctrl-C)")
    demo.add_argument("--rate", type=float, default=None,
                      help=f"simulated events/s (default: {from_setting('sim_rate')})")
    demo.add_argument("--workers", type=int, default=None,
                      help=f"worker processes (default: {from_setting('demo_workers')})")
    demo.add_argument("--rooms", type=int, default=None,
                      help=f"simulated rooms (default: {from_setting('sim_rooms')})")
    demo.add_argument("--seed", type=int, default=None,
                      help=f"simulator seed (default: {from_setting('sim_seed')})")
    demo.add_argument("--bad-rate", type=float, default=None,
                      help="share of deliberately malformed events (default: "
                      f"{from_setting('sim_bad_rate')})")
    demo.set_defaults(func=cmd_demo)

    worker = sub.add_parser("worker", help="run a Faust worker (extra args go to Faust)")
    worker.add_argument("faust_args", nargs=argparse.REMAINDER,
                        help="arguments passed on to Faust's worker command (default: none)")
    worker.set_defaults(func=cmd_worker)

    sim = sub.add_parser("simulate", help="produce simulated traffic")
    sim.add_argument("--rate", type=float, default=None,
                     help=f"events/s (default: {from_setting('sim_rate')})")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds to produce")
    sim.add_argument("--seed", type=int, default=None,
                     help=f"random seed (default: {from_setting('sim_seed')})")
    sim.add_argument("--bad-rate", type=float, default=None,
                     help="share of deliberately malformed events (default: "
                     f"{from_setting('sim_bad_rate')})")
    sim.add_argument("--scenario", action="append",
                     help="AT_SECONDS:NAME[:ROOM[:DURATION_S]], e.g. 30:viewer_drop:room-0:20 "
                     "(repeatable; default: none)")
    sim.set_defaults(func=cmd_simulate)

    rep = sub.add_parser("replay", help="replay a JSONL or SessionId/ItemId/Time TSV file")
    rep.add_argument("file", help="JSONL events or a SessionId/ItemId/Time TSV")
    rep.add_argument("--format", choices=["jsonl", "sessions-tsv"], default=None,
                     help="file format (default: from the file's first line)")
    rep.add_argument("--topic", choices=["clicks", "live"], default="clicks",
                     help="input topic to fill")
    rep.add_argument("--speedup", type=float, default=60.0, help="time compression factor")
    rep.add_argument("--max-rate", type=float, default=None,
                     help="cap in events/s (default: none)")
    rep.add_argument("--keep-time", action="store_true",
                     help="keep each event's recorded ts (a worker with a lifted "
                          "LIVEPULSE_MAX_EVENT_AGE_S must read it; see `backfill`)")
    rep.set_defaults(func=cmd_replay)

    back = sub.add_parser("backfill", help="re-process a recorded file with its original "
                          "event times into topics, group and state of their own")
    back.add_argument("file", help="JSONL events or a SessionId/ItemId/Time TSV")
    back.add_argument("--name", required=True,
                      help="the backfill's name: topics <prefix>-backfill-NAME.*, app id "
                           "<app id>-backfill-NAME")
    back.add_argument("--format", choices=["jsonl", "sessions-tsv"], default=None,
                      help="file format (default: from the file's first line)")
    back.add_argument("--topic", choices=["clicks", "live"], default="clicks",
                      help="input topic of the recording")
    back.add_argument("--max-rate", type=float, default=None,
                      help="cap in events/s (default: none)")
    back.add_argument("--speedup", type=float, default=float("inf"),
                      help="pace by the recorded gaps divided by this (default: no pacing)")
    back.set_defaults(func=cmd_backfill)

    topics = sub.add_parser("topics", help="create or list topics")
    topics.add_argument("action", choices=["create", "list"], nargs="?", default="list",
                        help="create the engine's topics (then list), or only list")
    topics.set_defaults(func=cmd_topics)

    schemas = sub.add_parser("schemas", help="export JSON Schemas of the contracts")
    schemas.add_argument("--out", default=None, help="directory (default: streams/schemas)")
    schemas.add_argument("--check", action="store_true", help="fail if files are stale")
    schemas.set_defaults(func=cmd_schemas)

    broker = sub.add_parser("broker", help="run a local broker in the foreground and print "
                            "its address (tansu: embedded; kafka: Apache Kafka KRaft)")
    broker.add_argument("--port", type=int, default=None,
                        help="port to listen on (default: a free loopback port)")
    broker.add_argument("--engine", choices=["tansu", "kafka"], default=None,
                        help="default: LIVEPULSE_BROKER_ENGINE (tansu)")
    broker.set_defaults(func=cmd_broker)

    campaigns = sub.add_parser(
        "campaigns", help="push [FILE], list or delete ID: promo campaigns on the topic")
    campaigns.add_argument("action", choices=["push", "list", "delete"],
                           help="push a file, list the campaigns, or delete one")
    campaigns.add_argument("target", nargs="?", default=None,
                           help="push: YAML file (default LIVEPULSE_CAMPAIGNS_FILE); "
                                "delete: campaign id")
    campaigns.set_defaults(func=cmd_campaigns)

    history = sub.add_parser(
        "history", help="ClickHouse history: run the sink alone, migrate, apply retention")
    history.add_argument("action", choices=["run", "migrate", "retention"],
                         help="run the sink without a worker, migrate the schema, or drop "
                         "expired partitions now")
    history.set_defaults(func=cmd_history)

    evaluate = sub.add_parser(
        "eval", help="offline model evaluation; `livepulse eval WHAT --help` for options",
        description="\n".join(f"{name}: {doc}" for name, (_, _, doc) in EVALUATIONS.items()))
    evaluate.add_argument("what", choices=sorted(EVALUATIONS), help="the evaluation")
    evaluate.add_argument("eval_args", nargs=argparse.REMAINDER,
                          help="its options (default: none; `--help` lists them)")
    evaluate.set_defaults(func=cmd_eval)

    forget = sub.add_parser(
        "forget", help="erase a user: profile, session and model state, Redis, ClickHouse")
    forget.add_argument("user_id", help="the user id as the input events carry it")
    forget.add_argument("--web", default=None, help="a worker's base URL for the "
                        "acknowledgement (default http://LIVEPULSE_WEB_HOST:LIVEPULSE_WEB_PORT)")
    forget.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the worker and ClickHouse (default 30)")
    forget.add_argument("--no-wait", action="store_true",
                        help="do not wait for the worker's acknowledgement")
    forget.set_defaults(func=cmd_forget)

    letters = sub.add_parser(
        "dead-letters", help="list dead letters by reason and source, or redrive chosen "
        "ones to their source topics after a fix (idempotent)")
    letters.add_argument("action", choices=("list", "redrive"),
                         help="list (counts, then the chosen letters) or redrive the chosen")
    letters.add_argument("--reason", action="append", default=[], metavar="CLASS",
                         help="error class, e.g. internal or wrong_type (repeatable; default: all)")
    letters.add_argument("--source", action="append", default=[], metavar="TOPIC",
                         help="source topic, full name or suffix, e.g. clicks (repeatable; "
                         "default: all)")
    letters.add_argument("--id", action="append", default=[], metavar="PARTITION:OFFSET",
                         help="one dead letter, as `list` shows it (repeatable; default: all)")
    letters.add_argument("--since-ms", type=int, default=None,
                         help="rejected at or after this epoch ms (default: no bound)")
    letters.add_argument("--until-ms", type=int, default=None,
                         help="rejected at or before this epoch ms (default: no bound)")
    letters.add_argument("--limit", type=int, default=50,
                         help="list: show the newest N selected letters (default: 50)")
    letters.add_argument("--all", action="store_true", help="redrive: every letter")
    letters.add_argument("--dry-run", action="store_true",
                         help="redrive: say what would be sent, send nothing")
    letters.add_argument("--timeout", type=float, default=30.0,
                         help="seconds to read the topics to their end (default: 30)")
    letters.set_defaults(func=cmd_dead_letters)

    bench = sub.add_parser("bench", help="full-pipeline benchmark (a source checkout)")
    bench.add_argument("--quick", action="store_true", help="under 5 minutes, prints JSON only")
    bench.add_argument("--scaling", action="store_true", help="also 1 vs 2 workers (quick run)")
    bench.add_argument("--out", default=None,
                       help="RESULTS.md whose section to replace (default benchmarks/RESULTS.md)")
    bench.add_argument("--bootstrap", default=None,
                       help="HOST:PORT of a broker (default: LIVEPULSE_KAFKA_URL, else embedded)")
    bench.add_argument("--clickhouse", default=None,
                       help="ClickHouse URL: history sink on (default: off)")
    bench.add_argument("--broker", choices=["tansu", "kafka"], default=None,
                       help="local broker without --bootstrap (default: "
                       "LIVEPULSE_BROKER_ENGINE, tansu)")
    bench.add_argument("--events", type=int, default=None,
                       help="backlog size of the drain phase (default: the benchmark's plan)")
    bench.add_argument("--sustain", type=float, default=None,
                       help="seconds of the paced verification phase (default: the plan's)")
    bench.add_argument("--rates", default=None,
                       help='latency rates, comma-separated events/s or "max80" '
                       "(default: the plan's)")
    bench.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                       help="a setting of every benchmark worker (repeatable; default: none), e.g. "
                       "fetch_min_bytes=65536")
    bench.set_defaults(func=cmd_bench)

    tail_cmd = sub.add_parser("tail", help="print a topic's records as JSON lines")
    tail_cmd.add_argument("topic", help="e.g. promo-triggers (LIVEPULSE_TOPIC_PREFIX added) "
                          "or a full topic name")
    tail_cmd.add_argument("--from-beginning", action="store_true",
                          help="start at the oldest record (default: only new ones)")
    tail_cmd.add_argument("--max", type=int, default=0,
                          help="stop after this many records (default: 0, until Ctrl-C)")
    tail_cmd.set_defaults(func=cmd_tail)

    token = sub.add_parser("host-token", help="print the token of one room's host page")
    token.add_argument("room_id", help="the room the token opens")
    token.add_argument("--url", default=None,
                       help="web base URL (e.g. https://live.example.com): print the page link "
                       "(default: print the token only)")
    token.set_defaults(func=cmd_host_token)

    secrets_cmd = sub.add_parser("secrets", help="write strong random secrets to an env file")
    secrets_cmd.add_argument("action", choices=["init"], help="write a new secrets file")
    secrets_cmd.add_argument("--file", default="livepulse.env",
                             help="env file to create, mode 0600 (default: livepulse.env)")
    secrets_cmd.add_argument("--force", action="store_true", help="replace an existing file")
    secrets_cmd.set_defaults(func=cmd_secrets, settings_free=True)
    from streams import ad_system  # livepulse ad-system: the simulated ad system

    ad_system.add_command(sub)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    from aiokafka.errors import KafkaConnectionError

    from agents.preflight import StartupError
    from config.settings import unknown_env

    args = build_parser().parse_args(argv)
    for warning in unknown_env():
        print(f"livepulse: warning: {warning}", file=sys.stderr)
    settings: Settings | None = None
    if not getattr(args, "settings_free", False):  # e.g. `secrets init`: fixes bad settings
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            print(f"livepulse: {exc}", file=sys.stderr)
            return 2
    logging.basicConfig(level=settings.log_level_number if settings else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    try:
        return int(args.func(args, settings) or 0)
    except StartupError as exc:
        print(f"livepulse: {exc}", file=sys.stderr)
        return 2
    except KafkaConnectionError as exc:  # reachable, yet no Kafka answered (the probe passed)
        where = settings.bootstrap_servers if settings and not settings.embedded_broker \
            else "the local broker"
        print(f"livepulse: Kafka at {where} (LIVEPULSE_KAFKA_URL) did not answer: {exc}. Is "
              "it a Kafka broker, with the security settings it expects "
              "(LIVEPULSE_KAFKA_SECURITY_PROTOCOL)?", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
