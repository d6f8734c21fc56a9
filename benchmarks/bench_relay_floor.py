"""The floor under the engine: one hop through its batched path with no work in it.

    python -m benchmarks.bench_relay_floor [--broker tansu|kafka] [--rates 2000,5000,10000]
        [--warmup 3] [--duration 15] [--variant batched]

A relay worker (``benchmarks.relay_worker``; ``batched`` by default: each fetched partition's
records handed to a batch handler under Faust's consumer and re-sent through the output
batches, as the pipeline's handlers do) sits between the paced producer and the collector of
``bench_triggers`` on a local broker; per rate: send -> relayed copy consumed, p50 / p99 /
max, whether every record arrived, and the relay worker's and the broker's CPU in cores.
What an event costs here is what every event of the pipeline pays before the engine's own
Python runs. The worker takes the ``LIVEPULSE_*`` settings of the environment, with
``LIVEPULSE_BROKER_ENGINE`` set to ``--broker`` (its fetch defaults). The last line is JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import orjson

from benchmarks.bench_triggers import cpu_seconds, run_relay
from streams.broker import BROKER_ENGINES, local_broker

KEYS = ("input_rate", "expected_window", "received_window", "p50_ms", "p99_ms", "max_ms",
        "worker_cpu")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", choices=BROKER_ENGINES, default="tansu")
    parser.add_argument("--rates", default="2000,5000,10000", help="comma-separated events/s")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--variant", default="batched",
                        choices=("batched", "livepulse", "faust-default"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    os.environ["LIVEPULSE_BROKER_ENGINE"] = args.broker  # the relay worker's fetch defaults
    relay_args = argparse.Namespace(drain_timeout=60.0, warmup=args.warmup,
                                    duration=args.duration, seed=7, rooms=6, users=20_000,
                                    items=2_000, linger_ms=5)
    result: dict[str, Any] = {"broker": args.broker, "variant": args.variant,
                              "warmup_s": args.warmup, "duration_s": args.duration,
                              "rates": {}}
    with local_broker(args.broker) as broker:
        assert broker.process is not None
        for rate in (float(r) for r in args.rates.split(",") if r.strip()):
            broker_cpu, started = cpu_seconds(broker.process.pid), time.monotonic()
            run = run_relay(relay_args, broker.bootstrap, rate, args.variant)
            row = {key: run.get(key) for key in KEYS}
            row["complete"] = run.get("received_window") == run.get("expected_window")
            row["broker_cores"] = round((cpu_seconds(broker.process.pid) - broker_cpu)
                                        / (time.monotonic() - started), 2)
            result["rates"][str(int(rate))] = row
            print(f"{args.broker} {args.variant} {rate:,.0f}/s: p50 {row['p50_ms']} / p99 "
                  f"{row['p99_ms']} ms, worker {row['worker_cpu']} cores, broker "
                  f"{row['broker_cores']} cores (set-up included)", file=sys.stderr)
    print(orjson.dumps(result).decode(), flush=True)
    return result


if __name__ == "__main__":
    main()
