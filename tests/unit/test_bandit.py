"""Campaign variants and the Thompson-sampling bandit: parsing, deterministic assignment over
the weights, the trigger's ``variant`` (contract), holdout kept, bandit weights (seeded,
floored, updated every N records), convergence on a clear winner with the simulated ad
system, and the report's per-variant rows (sent, CIs, probability of being best)."""

from __future__ import annotations

import asyncio
import heapq
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.promo.bandit import Bandits, floored, posteriors, probability_best
from agents.promo.campaigns import Campaign, CampaignBook, CampaignError, Decider, EventFacts
from agents.promo.feedback import CampaignReports
from agents.testing import Harness
from config.settings import Settings
from streams.ad_system import AdSystemModel, VariantTruth
from streams.contracts import PROMO_TRIGGER, check_contract, validate
from streams.ingest import now_ms

T0 = 1_900_000_000_000


def campaign(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "ab", "on": ["like"], "action": "coupon", "holdout": 0.1,
        "offer": {"code": "X", "discount_pct": 5},
        "variants": [{"id": "A", "copy": "Hurry!", "creative_id": "img-1"},
                     {"id": "B", "weight": 3, "offer": {"discount_pct": 10}}]}
    base.update(overrides)
    return base


def decide(decider: Decider, i: int, user: str | None = None,
           now: int | None = None) -> Any:
    user = user or f"u{i}"
    f = EventFacts(user, "like", T0 + i, f"e{i}", "lp.live-events", "live", room_id="r1")
    decision = decider.on_event(f, {"consent": True}, None, None, load_state=lambda: None,
                                spent=lambda _: 0.0, now_ms=now or T0 + i + 10)
    assert decision is not None
    return decision


# ------------------------------------------------------------------ parsing
def test_variants_parse_with_merged_offers() -> None:
    c = Campaign.from_dict(campaign())
    assert [v.id for v in c.variants] == ["A", "B"] and c.mode == "fixed"
    assert c.weights == (0.25, 0.75)
    assert c.variants[0].offer == {"code": "X", "discount_pct": 5, "copy": "Hurry!",
                                   "creative_id": "img-1"}
    assert c.variants[1].offer == {"code": "X", "discount_pct": 10}
    bandit = Campaign.from_dict(campaign(mode="bandit", objective="conversion",
                                         bandit={"update_every": 50, "min_weight": 0.05}))
    assert (bandit.mode, bandit.objective, bandit.bandit_every, bandit.min_weight) == (
        "bandit", "conversion", 50, 0.05)
    assert Campaign.from_dict(campaign(variants=None)).variants == ()


@pytest.mark.parametrize(("patch", "message"), [
    ({"variants": []}, "non-empty list"),
    ({"variants": "A,B"}, "must be a list"),  # the campaign.v1 contract says so first
    ({"variants": [{"id": "A"}, {"id": "A"}]}, "duplicate ids ['A']"),
    ({"variants": [{"id": "A", "weight": 0}]}, "positive number"),
    ({"variants": [{"id": "A", "weight": "2"}]}, "weight must be a number"),
    ({"variants": [{"id": "A", "wieght": 2}]}, "unknown keys ['wieght']"),
    ({"variants": [{"id": "default"}]}, "variants[0].id"),
    ({"variants": [{"id": "a b"}]}, "variants[0].id"),
    ({"variants": [{"id": "A", "offer": [1]}]}, "variants[0].offer"),
    ({"variants": [{"id": "A", "copy": ""}]}, "variants[0].copy"),
    ({"variants": [{"id": f"v{i}"} for i in range(9)]}, "more than 8 items"),
    ({"mode": "bandit", "variants": [{"id": "A"}]}, "at least two variants"),
    ({"mode": "greedy"}, "mode must be one of"),
    ({"mode": "bandit", "objective": "revenue"}, "objective must be one of"),
    ({"mode": "bandit", "bandit": {"update_every": 0}}, "update_every"),
    ({"mode": "bandit", "bandit": {"min_weight": 0.5}}, "min_weight"),
    ({"mode": "bandit", "bandit": {"every": 5}}, "bandit: a mapping"),
])
def test_bad_variant_definitions_are_refused(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(CampaignError) as err:
        Campaign.from_dict(campaign(**patch))
    assert message in str(err.value) and "campaign 'ab'" in str(err.value)


# ------------------------------------------------------------------ assignment
def test_assignment_is_deterministic_and_follows_the_weights() -> None:
    c = Campaign.from_dict(campaign())
    again = Campaign.from_dict(campaign())           # another worker, another run
    users = [f"user-{i}" for i in range(20_000)]
    chosen = [c.assign(u).id for u in users]
    assert chosen == [again.assign(u).id for u in users]
    assert abs(chosen.count("B") / len(users) - 0.75) < 0.015
    assert {c.assign(u, (0.0, 1.0)).id for u in users[:500]} == {"B"}
    # independent of the holdout hash: the treatment group keeps the 25/75 split
    held = Campaign.from_dict(campaign(holdout=0.5))
    treated = [u for u in users if not held.in_holdout(u)]
    share = sum(1 for u in treated if held.assign(u).id == "B") / len(treated)
    assert abs(share - 0.75) < 0.02


def test_trigger_carries_the_variant_and_its_offer_and_fits_the_contract() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(holdout=0.0))])
    decider = Decider(book, 1)
    triggers = [t for i in range(200) for t in decide(decider, i).triggers]
    assert len(triggers) == 200
    for trigger in triggers:
        check_contract(PROMO_TRIGGER, trigger)
        assert validate(PROMO_TRIGGER, trigger).variant == trigger["variant"]
        variant = book.get("ab").assign(trigger["user_id"])
        assert trigger["variant"] == variant.id and trigger["offer"] == variant.offer
    assert {t["variant"] for t in triggers} == {"A", "B"}
    plain = Decider(CampaignBook([Campaign.from_dict(campaign(variants=None))]), 1)
    sent = [t for i in range(50) for t in decide(plain, i).triggers]
    assert sent and all("variant" not in t and t["offer"]["discount_pct"] == 5 for t in sent)


def test_redelivery_resends_the_same_variant_after_the_weights_moved() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(holdout=0.0))])
    weights = [(1.0, 0.0)]
    decider = Decider(book, 1, lambda c: weights[0])
    user, facts = "u7", EventFacts("u7", "like", T0, "e1", "lp.live-events", "live")
    first = decider.on_event(facts, {"consent": True}, None, None, load_state=lambda: None,
                             spent=lambda _: 0.0, now_ms=T0 + 5)
    assert first is not None and first.triggers[0]["variant"] == "A"
    weights[0] = (0.0, 1.0)
    again = decider.on_event(facts, {"consent": True}, None, None,
                             load_state=lambda: first.state, spent=lambda _: 0.0,
                             now_ms=T0 + 9)
    assert again is not None and again.outcomes == [("ab", "duplicate")]
    assert again.resent[0]["variant"] == "A" and again.resent[0]["user_id"] == user


def test_holdout_is_kept_whatever_the_weights() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(mode="bandit", holdout=0.2))])
    held: dict[tuple[float, float], set[str]] = {}
    for weights in ((0.5, 0.5), (0.02, 0.98), (0.98, 0.02)):
        decider = Decider(book, 1, lambda c, w=weights: w)  # type: ignore[misc]
        out = set()
        for i in range(5000):
            d = decide(decider, i)
            if d.outcomes == [("ab", "holdout")]:
                assert d.triggers == [] and d.records[0]["group"] == "holdout"
                out.add(f"u{i}")
        held[weights] = out
    sets = list(held.values())
    assert sets[0] == sets[1] == sets[2]               # the same users, whatever the bandit
    assert abs(len(sets[0]) / 5000 - 0.2) < 0.02


# ------------------------------------------------------------------ bandit weights
def test_probability_best_and_floor() -> None:
    even = probability_best([(1, 1), (1, 1)], draws=20_000, seed=3)
    assert abs(even[0] - 0.5) < 0.02
    clear = probability_best([(1 + 10, 1 + 990), (1 + 60, 1 + 940)], draws=4000, seed=3)
    assert clear[1] > 0.999
    assert list(probability_best([(3, 9), (2, 5)], 1000, 42)) == list(
        probability_best([(3, 9), (2, 5)], 1000, 42))    # seeded
    assert floored([0.999, 0.001], 0.02) == pytest.approx((0.98, 0.02))
    assert floored([0.6, 0.3, 0.1], 0.02) == (0.6, 0.3, 0.1)


def test_bandit_updates_every_n_records_deterministically() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(
        mode="bandit", bandit={"update_every": 10}, variants=[{"id": "A"}, {"id": "B"}]))])
    counts = {"A": {"shown": 400, "clicked": 8}, "B": {"shown": 400, "clicked": 40}}
    one, two = (Bandits(book.get, lambda _: counts) for _ in range(2))
    c = book.get("ab")
    for _ in range(9):
        one.on_feedback("ab")
    assert one.weights(c) == (0.5, 0.5) and one.updates == 0     # configured until then
    one.on_feedback("ab")
    assert one.updates == 1 and one.weights(c) == pytest.approx((0.02, 0.98))
    two.update(c)
    assert two.weights(c) == one.weights(c)                       # same counts, same weights
    assert posteriors(c, counts) == [(9.0, 393.0), (41.0, 361.0)]
    # a new version with other variants starts from its configured weights again
    book.apply("ab", {**c.record, "version": 2,
                      "variants": [{"id": "A"}, {"id": "C", "weight": 3}]})
    assert one.weights(book.get("ab")) == (0.25, 0.75)
    fixed = Campaign.from_dict(campaign())
    assert one.weights(fixed) == fixed.weights                    # not a bandit: configured


def simulate(book: CampaignBook, model: AdSystemModel, users: int, lag: int = 100
             ) -> tuple[list[str], CampaignReports, Bandits, Decider]:
    """Triggers for ``users`` new users, the ad system's feedback folded ``lag`` triggers
    late (as it arrives seconds later); returns the variant of every exposure in order."""
    reports = CampaignReports()
    bandits = Bandits(book.get, reports.variant_counts)
    reports.listeners.append(bandits.on_feedback)
    decider = Decider(book, 1, bandits.weights)
    due: list[tuple[int, int, dict[str, Any]]] = []
    exposures: list[str] = []
    seq = 0
    for i in range(users):
        while due and due[0][0] <= i:
            reports.add_raw(heapq.heappop(due)[2])
        for trigger in decide(decider, i, now=T0 + i + 10).triggers:
            reports.add_trigger(trigger)
            for record in model.respond(trigger):
                record["ts"] = now_ms()
                seq += 1
                heapq.heappush(due, (i + lag, seq, record))
                if record["type"] == "shown":
                    exposures.append(record["variant"])
    for _, _, record in due:
        reports.add_raw(record)
    return exposures, reports, bandits, decider


def test_bandit_converges_on_a_clear_winner_and_reports_it() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(
        mode="bandit", variants=[{"id": "A"}, {"id": "B"}], bandit={"update_every": 50}))])
    model = AdSystemModel(variants=(VariantTruth("A", 0.02), VariantTruth("B", 0.12)))
    exposures, reports, bandits, _ = simulate(book, model, 4000)
    late = exposures[len(exposures) * 2 // 3:]
    assert late.count("B") / len(late) > 0.9
    assert bandits.weights(book.get("ab"))[1] >= 0.95
    report = reports.report("ab", {"sent": 0}, 0.0, bandits.describe(book.get("ab")))
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["B"]["p_best"] > 0.99 and rows["A"]["p_best"] < 0.01
    assert rows["B"]["weight"] >= 0.95
    assert rows["A"]["sent"] + rows["B"]["sent"] == sum(
        n for n in reports.sent["ab"].values())
    assert rows["B"]["sent"] > 3 * rows["A"]["sent"]
    low, high = rows["B"]["ctr_ci95"]
    assert low <= 0.12 <= high
    # the same feedback folded again in the same order gives the same weights
    again, _, bandits2, _ = simulate(book, model, 4000)
    assert again == exposures and bandits2.weights(book.get("ab")) == bandits.weights(
        book.get("ab"))


def test_fixed_split_stays_put() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(variants=[{"id": "A"}, {"id": "B"}]))])
    model = AdSystemModel(variants=(VariantTruth("A", 0.02), VariantTruth("B", 0.12)))
    exposures, _, bandits, _ = simulate(book, model, 3000)
    assert abs(exposures.count("B") / len(exposures) - 0.5) < 0.05 and bandits.updates == 0


# ------------------------------------------------------------------ ad system, worker
def test_ad_system_uses_the_triggers_variant() -> None:
    model = AdSystemModel(variants=(VariantTruth("A", 0.0), VariantTruth("B", 1.0)))
    shown = 0
    for i in range(50):   # B's true CTR is 1: every exposure is clicked, whatever the hash
        trigger = {"idempotency_key": f"k{i}", "campaign_id": "c", "user_id": f"u{i}",
                   "ts": T0, "variant": "B"}
        answers = model.respond(trigger)
        assert all(a["variant"] == "B" for a in answers)
        kinds = [a["type"] for a in answers]
        shown += "shown" in kinds
        assert ("shown" in kinds) == ("clicked" in kinds)
    assert shown > 20
    unknown = {"idempotency_key": "k", "campaign_id": "c", "user_id": "u1", "ts": T0,
               "variant": "Z"}
    assert {a["variant"] for a in model.respond(unknown)} <= {"A", "B"}


CAMPAIGNS = """
campaigns:
  - id: ab
    on: [add_to_cart]
    action: coupon
    offer: {code: SAVE5}
    holdout: 0.2
    cost_per_trigger: 0.5
    mode: bandit
    objective: click
    bandit: {update_every: 20}
    variants:
      - {id: A, copy: "Still thinking?"}
      - {id: B, offer: {code: SAVE10}}
"""


def test_worker_counts_sent_per_variant_and_reports_the_bandit() -> None:
    path = Path(tempfile.mkdtemp(prefix="lp-bandit-")) / "campaigns.yaml"
    path.write_text(CAMPAIGNS)
    h = Harness(Settings(kafka_url="memory", data_dir=str(path.parent), partitions=2,
                         redis_url="", clickhouse_url="", campaigns_file=str(path)))
    events = [orjson.dumps({"event_id": f"e{i}", "type": "add_to_cart", "ts": now_ms(),
                            "user_id": f"u{i}", "session_id": f"s{i}", "item_id": "i1",
                            "price": 10.0}) for i in range(300)]
    asyncio.run(h.feed("clicks", 0, events))
    triggers = h.sent(h.names.promo_triggers)
    assert 200 < len(triggers) < 280 and {t["variant"] for t in triggers} == {"A", "B"}

    def control(topic: str, value: bytes) -> None:
        h.promo._apply_control(SimpleNamespace(topic=topic, key=None, value=value,
                                               timestamp=now_ms()))
    for value in h.sent(h.names.promo_triggers, decode=False) * 2:   # redelivered: once
        control(h.names.promo_triggers, value)
    for value in h.sent(h.names.attribution, decode=False):
        control(h.names.attribution, value)
    model = AdSystemModel(variants=(VariantTruth("A", 0.05), VariantTruth("B", 0.5)))
    for trigger in triggers:
        for answer in model.respond(trigger):
            answer["ts"] = now_ms()
            control(h.names.ad_feedback, orjson.dumps(answer))
    report = h.promo.campaign_report("ab", now_ms())
    assert report is not None and (report["mode"], report["objective"]) == ("bandit", "click")
    rows = {r["variant"]: r for r in report["variants"]}
    for name in ("A", "B"):
        assert rows[name]["sent"] == sum(1 for t in triggers if t["variant"] == name)
        assert 0.0 <= rows[name]["p_best"] <= 1.0 and rows[name]["weight"] > 0
    assert rows["B"]["p_best"] > 0.99 and h.promo.bandits.updates > 0
    assert report["totals"]["sent"] == len(triggers)
    assert report["experiment"]["holdout"] == 300 - len(triggers)
    # the next triggers follow the moved weights
    assert h.promo.bandits.weights(h.promo.book.get("ab"))[1] > 0.9
