"""Ad-system feedback on the real (embedded) broker: a worker's triggers answered by the
simulated ad system (``streams.ad_system.run``), the feedback validated, deduplicated and
folded; ``GET /api/campaigns/{id}/report`` equals a reference computed from the feedback
the ad system sent, and the metrics count it."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.promo.campaigns import CampaignBook
from streams import ad_system
from streams.ad_system import AdSystemModel, VariantTruth
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, wait_for
from tests.integration.test_triggers import live_event, metric_value

pytestmark = pytest.mark.integration

CAMPAIGN = """
campaigns:
  - id: cart-fb
    on: [add_to_cart]
    action: coupon
    offer: {code: FB1}
    caps: [{max: 1, per: 1h}]
    holdout: 0.2
    cost_per_trigger: 0.5
"""


def test_feedback_flow_report_matches_the_ad_systems_truth(broker: Any, worker_factory: Any,
                                                           tmp_path: Path) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(CAMPAIGN)
    settings = unique_settings(tmp_path, broker, campaigns_file=str(campaigns_file))
    names = topic_names(settings)
    worker = worker_factory(settings)
    campaign = CampaignBook.load(campaigns_file).get("cart-fb")
    users = [f"fb-{i}" for i in range(150)]
    treated = [u for u in users if not campaign.in_holdout(u)]
    base = now_ms()
    asyncio.run(produce(broker.bootstrap, [
        (names.live_events, key, value) for _, key, value in (
            live_event(f"{u}-cart", "add_to_cart", f"room-{n % 3}", u, base + n,
                       item_id="item-1") for n, u in enumerate(users))]))
    triggers = [orjson.loads(r.value) for r in asyncio.run(read_topic(
        broker.bootstrap, names.promo_triggers, until=lambda r: len(r) >= len(treated),
        timeout=60))]
    assert sorted(t["user_id"] for t in triggers) == sorted(treated)

    model = AdSystemModel(variants=(VariantTruth("A", 0.25, cvr=0.4),
                                    VariantTruth("B", 0.5, cvr=0.4)))
    expected = sum(len(model.respond(t)) for t in triggers)

    async def answer() -> list[Any]:
        task = asyncio.create_task(ad_system.run(
            broker.bootstrap, names.promo_triggers, names.ad_feedback, model, speed=300.0,
            group_id=f"ad-system-{settings.topic_prefix}", from_beginning=True))
        try:
            return await read_topic(broker.bootstrap, names.ad_feedback,
                                    until=lambda r: len(r) >= expected or task.done(),
                                    timeout=90)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    sent = [orjson.loads(r.value) for r in asyncio.run(answer())]
    assert len(sent) == expected
    # redeliveries (counted once) and a broken record (dead-lettered)
    extra = [(names.ad_feedback, f["user_id"].encode(), orjson.dumps(f)) for f in sent[:15]]
    bad = {**sent[0], "type": "converted"}          # no order_id / value / currency
    extra.append((names.ad_feedback, sent[0]["user_id"].encode(), orjson.dumps(bad)))
    asyncio.run(produce(broker.bootstrap, extra))

    kinds = Counter(f["type"] for f in sent)
    revenue = round(sum(f["value"] for f in sent if f["type"] == "converted"), 2)
    url = f"{worker.web_url}/api/campaigns/cart-fb/report"

    def folded() -> dict[str, Any] | None:
        status, body = get_json(url)
        if status != 200 or body["totals"]["delivered"] + body["totals"]["dismissed"] \
                < kinds["delivered"] + kinds["dismissed"]:
            return None
        return body if body["totals"]["shown"] >= kinds["shown"] \
            and body["experiment"]["sent"] >= len(treated) else None

    report = wait_for(folded, timeout=60, what="the report folding every feedback record")
    totals = report["totals"]
    for kind in ("delivered", "shown", "clicked", "dismissed", "converted"):
        assert totals[kind] == kinds[kind], kind
    assert totals["revenue"] == revenue
    assert totals["sent"] == len(treated) and totals["cost"] == 0.5 * len(treated)
    assert report["experiment"]["holdout"] == len(users) - len(treated)
    for row in report["rows"]:
        mine = [f for f in sent if (f["variant"], f["channel"]) == (row["variant"],
                                                                    row["channel"])]
        shown = sum(f["type"] == "shown" for f in mine)
        clicked = sum(f["type"] == "clicked" for f in mine)
        assert row["ctr"] == (round(clicked / shown, 6) if shown else None), row
        assert row["cost"] == round(0.5 * sum(f["type"] == "delivered" for f in mine), 2)
    assert get_json(f"{worker.web_url}/api/campaigns/none/report")[0] == 404

    letters = [orjson.loads(r.value) for r in asyncio.run(read_topic(
        broker.bootstrap, names.dead_letter,
        until=lambda r: any(orjson.loads(x.value)["source_topic"] == names.ad_feedback
                            for x in r), timeout=30))]
    mine = [x for x in letters if x["source_topic"] == names.ad_feedback]
    assert [x["error_class"] for x in mine] == ["missing_field"]
    wait_for(lambda: metric_value(worker.web_url, "livepulse_ad_feedback_total",
                                  campaign="cart-fb") == len(sent),
             timeout=30, what="every accepted record counted once")
    assert metric_value(worker.web_url, "livepulse_ad_feedback_total", campaign="cart-fb",
                        type="shown") == kinds["shown"]


BANDIT = """
campaigns:
  - id: ab
    on: [add_to_cart]
    action: coupon
    offer: {code: SAVE5}
    caps: [{max: 1, per: 1h}]
    holdout: 0.2
    cost_per_trigger: 0.5
    mode: bandit
    objective: click
    bandit: {update_every: 20}
    variants:
      - {id: A, copy: "Still thinking?"}
      - {id: B, offer: {code: SAVE10}}
"""


def test_bandit_moves_exposures_to_the_better_variant(broker: Any, worker_factory: Any,
                                                     tmp_path: Path) -> None:
    """The whole loop on a broker: triggers → the ad system's feedback (B's true CTR ten times
    A's) → the worker's posteriors → later triggers go mostly to B, the holdout kept."""
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(BANDIT)
    settings = unique_settings(tmp_path, broker, campaigns_file=str(campaigns_file))
    names = topic_names(settings)
    worker = worker_factory(settings)
    campaign = CampaignBook.load(campaigns_file).get("ab")
    model = AdSystemModel(variants=(VariantTruth("A", 0.05), VariantTruth("B", 0.5)))

    def wave(tag: str, n: int) -> list[dict[str, Any]]:
        users = [f"{tag}-{i}" for i in range(n)]
        treated = [u for u in users if not campaign.in_holdout(u)]
        base = now_ms()
        asyncio.run(produce(broker.bootstrap, [
            (names.live_events, key, value) for _, key, value in (
                live_event(f"{u}-cart", "add_to_cart", f"room-{k % 3}", u, base + k,
                           item_id="item-1") for k, u in enumerate(users))]))
        mine = set(treated)
        return [t for t in (orjson.loads(r.value) for r in asyncio.run(read_topic(
            broker.bootstrap, names.promo_triggers,
            until=lambda r: sum(orjson.loads(x.value)["user_id"] in mine for x in r)
            >= len(treated), timeout=60))) if t["user_id"] in mine]

    async def answer(triggers: list[dict[str, Any]]) -> None:
        answers = [(names.ad_feedback, a["user_id"].encode(), orjson.dumps(a))
                   for t in triggers for a in model.respond(t)]
        await produce(broker.bootstrap, answers)

    first = wave("w1", 200)
    asyncio.run(answer(first))
    url = f"{worker.web_url}/api/campaigns/ab/report"
    shown = sum(a["type"] == "shown" for t in first for a in model.respond(t))
    wait_for(lambda: (get_json(url)[1] or {}).get("totals", {}).get("shown", 0) >= shown,
             timeout=60, what="the first wave's feedback folded")
    report = get_json(url)[1]
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["B"]["p_best"] > 0.95 and rows["B"]["weight"] > 0.8, rows
    second = wave("w2", 200)
    share_first = sum(t["variant"] == "B" for t in first) / len(first)
    share_second = sum(t["variant"] == "B" for t in second) / len(second)
    print(f"\nbandit share to B: first wave {share_first:.2f}, second {share_second:.2f}")
    assert 0.3 < share_first < 0.7 and share_second > 0.8
    # the holdout is the campaign's, whatever the weights
    assert {t["user_id"] for t in second} == {
        f"w2-{i}" for i in range(200) if not campaign.in_holdout(f"w2-{i}")}
