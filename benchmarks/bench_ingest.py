"""Ingest validation throughput, side by side with its baseline (orjson parse only).

    python -m benchmarks.bench_ingest [--events 200000] [--repeats 5]

Prints one JSON line: events/s (median of repeats) for the baseline and for
``Validator.decode`` on simulated traffic (with its message key: the duplicate-key and
key-mismatch checks included), and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import orjson

from config.settings import Settings
from streams.contracts import CLICK_EVENT, LIVE_EVENT
from streams.ingest import Validator, now_ms
from streams.simulator import Simulator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sim = Simulator(seed=1, rooms=8, users=20_000, items=5_000, bad_rate=0.0)
    now = now_ms()
    records = [r for r in sim.next_events(now, args.events) if r.stream in ("live", "clicks")]
    settings = Settings()
    validators = {"live": Validator.from_settings(LIVE_EVENT, settings),
                  "clicks": Validator.from_settings(CLICK_EVENT, settings)}
    pairs = [(validators[r.stream], r.value, r.key.encode()) for r in records]

    def baseline() -> None:
        for _, raw, _ in pairs:
            orjson.loads(raw)

    def validate() -> None:
        for validator, raw, key in pairs:
            validator.decode(raw, now, key)

    results = {}
    for name, fn in (("orjson_parse_only", baseline), ("validate", validate)):
        rates = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            fn()
            rates.append(len(pairs) / (time.perf_counter() - started))
        results[name] = round(statistics.median(rates))
    results["ratio_validate_to_parse"] = round(results["validate"] / results["orjson_parse_only"],
                                               3)
    results["events"] = len(pairs)
    print(orjson.dumps(results).decode())


if __name__ == "__main__":
    main()
