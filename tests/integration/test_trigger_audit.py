"""The fairness guard and the trigger audit with a real worker on the real broker
(issue 20 item 5): a discriminatory campaign is refused (CLI and topic record, with its
reason), and every trigger's audit record is served by the owning worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, wait_for
from tests.integration.test_triggers import cli, live_event, values

pytestmark = pytest.mark.integration

CAMPAIGN = """
campaigns:
  - id: cart-audit
    version: 2
    on: [add_to_cart]
    when:
      - {field: event.source, op: "==", value: live, reason: live_cart}
      - {field: session.open_carts, op: ">=", value: 1, reason: cart_open}
    action: coupon
    offer: {code: T1, discount_pct: 5}
    holdout: 0
    variants: [{id: A}, {id: B, offer: {discount_pct: 7}}]
"""
UNFAIR = """
campaigns:
  - id: rich-discount
    on: [like]
    when:
      - {field: profile.rfm.monetary, op: ">=", value: 3000}
    action: coupon
    offer: {discount_pct: 30}
"""


def test_guard_refuses_and_audit_is_served(broker: Any, worker_factory: Any,
                                           tmp_path: Path) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(CAMPAIGN)
    settings = unique_settings(tmp_path, broker, campaigns_file=str(campaigns_file))
    names = topic_names(settings)
    worker = worker_factory(settings)

    unfair = tmp_path / "unfair.yaml"
    unfair.write_text(UNFAIR)
    pushed = cli(settings, "campaigns", "push", str(unfair))
    assert pushed.returncode != 0
    assert "profile.rfm.monetary (price sensitivity or spend level)" in (
        pushed.stdout + pushed.stderr)
    # the same definition produced straight to the topic: refused by the worker, reason kept
    record = {"id": "rich-discount", "version": 1, "on": ["like"], "action": "coupon",
              "when": [{"field": "profile.rfm.monetary", "op": ">=", "value": 3000}],
              "offer": {"discount_pct": 30}}
    asyncio.run(produce(broker.bootstrap, [(names.campaigns, b"rich-discount",
                                            orjson.dumps(record))]))
    rejected = wait_for(lambda: get_json(f"{worker.web_url}/api/campaigns")[1]
                        .get("rejected", {}).get("rich-discount"), timeout=30,
                        what="the unfair topic record rejected")
    assert "allow_personalised_pricing" in rejected
    assert get_json(f"{worker.web_url}/api/campaigns/rich-discount")[0] == 404

    base = now_ms()
    users = [f"user-{i}" for i in range(6)]
    events = [live_event(f"{u}-cart", "add_to_cart", "room-1", u, base, item_id="item-1")
              for u in users]
    asyncio.run(produce(broker.bootstrap, [(names.live_events, k, v) for _, k, v in events]))
    triggers = values(asyncio.run(read_topic(
        broker.bootstrap, names.promo_triggers, until=lambda r: len(r) >= len(users),
        timeout=60)))
    assert sorted(t["user_id"] for t in triggers) == users
    for trigger in triggers:
        user, key = trigger["user_id"], trigger["idempotency_key"]
        status, audit = get_json(f"{worker.web_url}/api/users/{user}/triggers/{key}/audit")
        assert status == 200, audit
        assert (audit["user_id"], audit["campaign_id"], audit["campaign_version"]) == (
            user, "cart-audit", 2)
        assert audit["reasons"] == ["live_cart", "cart_open"]
        assert audit["conditions"] == [["event.source", "==", "live", "live", True],
                                       ["session.open_carts", ">=", 1, 1, True]]
        assert audit["variant"]["id"] == trigger["variant"]
        assert audit["offer"] == trigger["offer"]
        assert audit["holdout"]["held_out"] is False
    status, body = get_json(f"{worker.web_url}/api/users/user-0/triggers/nope/audit")
    assert status == 404 and body == {"error": "not_found", "idempotency_key": "nope"}
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
