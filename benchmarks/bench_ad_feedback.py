"""Ad-system feedback: the report's figures against the simulated ad system's truth, and
the cost of folding feedback.

``python -m benchmarks.bench_ad_feedback [--triggers N] [--repeat R]`` answers N synthetic
triggers with :class:`streams.ad_system.AdSystemModel` (true CTR 4 % for variant A, 6 % for
B; CVR 10 %), then prints per variant the reported CTR and CVR with their 95 % intervals
beside the truth, and the median time per record of :meth:`CampaignReports.add_raw` (the
follower's fold) and :meth:`FeedbackHandler.handle_batch` (validation, dedupe, counters) over
R runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from types import SimpleNamespace
from typing import Any

import orjson

from agents.promo.campaigns import wilson_interval
from agents.promo.feedback import CampaignReports, FeedbackHandler
from agents.testing import Harness, records
from streams.ad_system import AdSystemModel


def answers(n: int, model: AdSystemModel) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        trigger = {"idempotency_key": f"k{i:08d}", "campaign_id": "bench",
                   "user_id": f"u{i}", "ts": now}
        for record in model.respond(trigger):
            record["ts"] = now
            out.append(record)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    model = AdSystemModel()
    feedback = answers(args.triggers, model)
    raw = [orjson.dumps(r) for r in feedback]

    fold_us, handle_us = [], []
    report: dict[str, Any] = {}
    for _ in range(args.repeat):
        reports = CampaignReports()
        started = time.perf_counter()
        for value in raw:
            reports.add_raw(orjson.loads(value))
        fold_us.append((time.perf_counter() - started) / len(raw) * 1e6)
        report = reports.report("bench", {"sent": args.triggers, "cost": 0.0}, 0.0)

        h = Harness()
        handler = FeedbackHandler(h.engine)
        tp = SimpleNamespace(topic=h.names.ad_feedback, partition=0)
        batches = [records(tp.topic, 0, raw[i:i + 500], i,
                           keys=[r["user_id"].encode() for r in feedback[i:i + 500]])
                   for i in range(0, len(raw), 500)]
        loop = asyncio.new_event_loop()
        started = time.perf_counter()
        for batch in batches:
            loop.run_until_complete(handler.handle_batch(tp, batch))
        handle_us.append((time.perf_counter() - started) / len(raw) * 1e6)
        loop.close()

    truth = model.truth()
    per: dict[str, dict[str, int]] = {}
    for row in report["rows"]:
        p = per.setdefault(row["variant"], {"shown": 0, "clicked": 0, "converted": 0})
        for k in p:
            p[k] += row[k]
    print(f"triggers {args.triggers}, feedback records {len(raw)}")
    for variant, p in sorted(per.items()):
        ctr_lo, ctr_hi = wilson_interval(p["clicked"], p["shown"])
        cvr_lo, cvr_hi = wilson_interval(p["converted"], p["clicked"])
        print(f"variant {variant}: shown {p['shown']}, clicked {p['clicked']}, "
              f"CTR {p['clicked'] / p['shown']:.4f} [{ctr_lo:.4f}, {ctr_hi:.4f}] "
              f"(true {truth[variant]['ctr']}), CVR {p['converted'] / p['clicked']:.4f} "
              f"[{cvr_lo:.4f}, {cvr_hi:.4f}] (true {truth[variant]['cvr']})")
    print(f"fold (CampaignReports.add_raw, parse included): median "
          f"{statistics.median(fold_us):.2f} us/record")
    print(f"handler (validate, dedupe, counters): median "
          f"{statistics.median(handle_us):.2f} us/record")


if __name__ == "__main__":
    main()
