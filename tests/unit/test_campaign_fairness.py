"""The fairness guard (issue 20 item 5): discriminatory campaigns are refused at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.promo.campaigns import Campaign, CampaignBook, CampaignError

ROOT = Path(__file__).resolve().parents[2]


def campaign(**extra: Any) -> dict[str, Any]:
    return {"id": "c", "on": ["like"], "action": "coupon", **extra}


def cond(field: str, op: str = ">=", value: Any = 0.5) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value}


@pytest.mark.parametrize(("spec", "named"), [
    (campaign(when=[cond("profile.price.sensitivity")], offer={"discount_pct": 10}),
     "profile.price.sensitivity"),
    (campaign(when=[cond("profile.rfm.monetary", ">=", 3000)], offer={"value": 5}),
     "profile.rfm.monetary"),
    (campaign(when=[cond("profile.price.band", "in", ["luxury", "premium"])],
              offer={"price": 99}), "profile.price.band"),
    (campaign(when=[cond("profile.tags", "contains", "big_spender")],
              offer={"discount_pct": 5}), "profile.tags"),
    (campaign(when=[{"any": [cond("profile.live.likes", ">=", 3),
                             cond("profile.tags", "contains", "bargain_hunter")]}],
              offer={"discount_pct": 5}), "profile.tags"),
    # the discount sits in a variant only: still a price that depends on spend
    (campaign(when=[cond("profile.rfm.m_score", ">=", 4)], offer={"code": "X"},
              variants=[{"id": "A"}, {"id": "B", "offer": {"discount_pct": 20}}]),
     "profile.rfm.m_score"),
    # protected attributes: refused whatever the offer (targeting alone)
    (campaign(when=[cond("profile.gender", "==", "f")]), "protected attribute (gender)"),
    (campaign(when=[cond("profile.demographics.age", "<", 25)], offer={"text_en": "hi"}),
     "protected attribute (age)"),
    (campaign(when=[cond("event.location", "==", "Shanghai")], offer={"discount_pct": 5}),
     "protected attribute (location)"),
])
def test_refused_with_reason(spec: dict[str, Any], named: str) -> None:
    with pytest.raises(CampaignError) as info:
        Campaign.from_dict(spec)
    message = str(info.value)
    assert named in message and "allow_personalised_pricing" in message
    assert message.startswith("campaign 'c'.when: ")


@pytest.mark.parametrize("spec", [
    # spend fields without any money in the offer: a reminder is no price
    campaign(when=[cond("profile.rfm.monetary", ">=", 3000)], offer={"text_en": "thanks"}),
    # a discount on behaviour that is not price sensitivity or spend level
    campaign(when=[cond("scores.leave_risk"), cond("profile.rfm.orders", ">=", 1),
                   cond("profile.tags", "contains", "loyal_buyer")],
             offer={"discount_pct": 10}),
    # variants with different discounts, assigned by a hash of the user, not by spend
    campaign(variants=[{"id": "A", "offer": {"discount_pct": 5}},
                       {"id": "B", "offer": {"discount_pct": 10}}]),
])
def test_non_discriminatory_campaigns_load(spec: dict[str, Any]) -> None:
    assert Campaign.from_dict(spec).id == "c"


def test_explicitly_allowed_with_a_justification() -> None:
    spec = campaign(when=[cond("profile.price.sensitivity")], offer={"discount_pct": 10},
                    allow_personalised_pricing=True,
                    justification="Student discount scheme approved by legal, ticket 42")
    loaded = Campaign.from_dict(spec)
    assert loaded.record["allow_personalised_pricing"] is True
    # the flag without a justification is refused, and so is a non-boolean flag
    del spec["justification"]
    with pytest.raises(CampaignError, match=r"\.justification: allow_personalised"):
        Campaign.from_dict(spec)
    with pytest.raises(CampaignError,
                       match=r"allow_personalised_pricing(: expected true| must be a boolean)"):
        Campaign.from_dict({**spec, "allow_personalised_pricing": "yes",
                            "justification": "a long enough reason"})


def test_runtime_record_refused_and_reason_kept() -> None:
    book = CampaignBook.from_yaml("campaigns: [{id: a, on: [like], action: ad}]")
    bad = campaign(id="b", when=[cond("profile.price.avg_price", ">=", 600)],
                   offer={"discount_pct": 30})
    with pytest.raises(CampaignError):
        book.apply("b", bad)
    assert "profile.price.avg_price" in book.rejected["b"]
    assert book.get("b") is None


def test_shipped_campaigns_still_load() -> None:
    book = CampaignBook.load(ROOT / "config" / "campaigns.yaml")
    assert {c.id for c in book.campaigns()} == {
        "save-the-sale", "cart-reminder", "first-time-follow", "welcome-back"}
