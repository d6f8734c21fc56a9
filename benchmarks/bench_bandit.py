"""A/B/n variants with a Thompson-sampling bandit against a fixed split, on the simulated ad
system (known true CTR per variant), in process (no broker).

``python -m benchmarks.bench_bandit [--seeds S] [--exposures 1000 5000 20000]
[--ctr 0.04 0.06] [--objective click|conversion] [--rate 20] [--every 100]``

Per seed, one new user per event reaches a campaign with one variant per ``--ctr`` value
(equal configured weights, holdout 10 %): the :class:`agents.promo.campaigns.Decider`
decides (holdout, variant), :class:`streams.ad_system.AdSystemModel` answers each trigger,
and its feedback records are folded by :class:`agents.promo.feedback.CampaignReports` when
their simulated time has come (``--rate`` events per second: a ``shown`` arrives ~5 s, i.e.
~100 triggers, after its trigger), which updates :class:`agents.promo.bandit.Bandits`. The
same run is made with ``mode: fixed`` (the configured equal split). Printed per checkpoint
(exposures = ``shown`` records, counted when the ad system decides them): the share of
exposures that went to the best variant, the expected regret (sum over exposures of the
best variant's objective rate per exposure - the shown variant's) of the bandit and of the
fixed split, and the holdout share, as medians over the seeds.
"""

from __future__ import annotations

import argparse
import heapq
import statistics
from typing import Any

from agents.promo.bandit import Bandits
from agents.promo.campaigns import CampaignBook, Decider, EventFacts
from agents.promo.feedback import CampaignReports
from streams.ad_system import AdSystemModel, VariantTruth


def campaign_yaml(n_variants: int, mode: str, objective: str, every: int) -> str:
    variants = ", ".join(f"{{id: {chr(65 + i)}, copy: copy-{i}}}" for i in range(n_variants))
    return (f"campaigns:\n  - id: bench\n    on: [like]\n    action: ad\n    holdout: 0.1\n"
            f"    mode: {mode}\n    objective: {objective}\n    bandit: {{update_every: {every}}}\n"
            f"    variants: [{variants}]\n")


def run(seed: int, ctrs: list[float], mode: str, objective: str, checkpoints: list[int],
        rate: float, every: int) -> dict[str, Any]:
    book = CampaignBook.from_yaml(campaign_yaml(len(ctrs), mode, objective, every))
    reports = CampaignReports()
    bandits = Bandits(book.get, reports.variant_counts)
    reports.listeners.append(bandits.on_feedback)
    decider = Decider(book, 1, bandits.weights)
    model = AdSystemModel(variants=tuple(VariantTruth(chr(65 + i), c)
                                         for i, c in enumerate(ctrs)), seed=seed)
    rates = {v.name: (v.ctr if objective == "click" else v.ctr * v.cvr)
             for v in model.variants}
    best = max(rates, key=rates.__getitem__)
    due: list[tuple[int, int, dict[str, Any]]] = []
    shown = {name: 0 for name in rates}
    exposures, regret, events, held_out, seq = 0, 0.0, 0, 0, 0
    clock = 1_700_000_000_000
    step_ms = 1000.0 / rate
    marks = sorted(checkpoints)
    out: dict[str, Any] = {}
    while marks:
        events += 1
        clock = 1_700_000_000_000 + int(events * step_ms)
        while due and due[0][0] <= clock:
            reports.add_raw(heapq.heappop(due)[2])
        facts = EventFacts(f"s{seed}-u{events}", "like", clock, f"e{events}",
                           "lp.live-events", "live", room_id="r1")
        decision = decider.on_event(facts, {"consent": True}, None, None,
                                    load_state=lambda: None, spent=lambda _: 0.0,
                                    now_ms=clock)
        assert decision is not None
        held_out += sum(1 for _, outcome in decision.outcomes if outcome == "holdout")
        for trigger in decision.triggers:
            for record in model.respond(trigger):
                seq += 1
                heapq.heappush(due, (record["ts"], seq, record))
                if record["type"] == "shown":
                    shown[record["variant"]] += 1
                    exposures += 1
                    regret += rates[best] - rates[record["variant"]]
                    if exposures == marks[0]:
                        marks.pop(0)
                        out[exposures] = {"best_share": shown[best] / exposures,
                                          "regret": regret,
                                          "best_weight": bandits.weights(
                                              book.get("bench"))[ord(best) - 65]}
    out["holdout_share"] = held_out / events
    out["updates"] = bandits.updates
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=7)
    parser.add_argument("--exposures", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--ctr", type=float, nargs="+", default=[0.04, 0.06])
    parser.add_argument("--objective", choices=("click", "conversion"), default="click")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="events per simulated second (sets the feedback delay)")
    parser.add_argument("--every", type=int, default=100,
                        help="bandit.update_every (feedback records between updates)")
    args = parser.parse_args()
    results = {mode: [run(seed, args.ctr, mode, args.objective, args.exposures, args.rate,
                          args.every) for seed in range(args.seeds)]
               for mode in ("bandit", "fixed")}
    print(f"true CTR per variant {args.ctr} (best {chr(65 + args.ctr.index(max(args.ctr)))}), "
          f"objective {args.objective}, {args.seeds} seeds, medians; update every "
          f"{args.every} feedback records, {args.rate:g} events/s")
    for n in sorted(args.exposures):
        b = [r[n] for r in results["bandit"]]
        f = [r[n] for r in results["fixed"]]
        rb = statistics.median(x["regret"] for x in b)
        rf = statistics.median(x["regret"] for x in f)
        print(f"after {n:>6} exposures: best-variant share bandit "
              f"{statistics.median(x['best_share'] for x in b):.3f} (fixed "
              f"{statistics.median(x['best_share'] for x in f):.3f}); expected "
              f"{args.objective} regret bandit {rb:.1f} vs fixed {rf:.1f} "
              f"({1 - rb / rf:.0%} less); best's weight now "
              f"{statistics.median(x['best_weight'] for x in b):.3f}")
    print(f"holdout share of events: bandit "
          f"{statistics.median(r['holdout_share'] for r in results['bandit']):.3f}, fixed "
          f"{statistics.median(r['holdout_share'] for r in results['fixed']):.3f}; weight "
          f"updates per run (median) "
          f"{statistics.median(r['updates'] for r in results['bandit']):.0f}")


if __name__ == "__main__":
    main()
