"""Promo campaigns, pure core: parsing, conditions, gates, caps, budget, holdout, consent,
redelivery, attribution and the experiment figures."""

from __future__ import annotations

import random
from typing import Any

import pytest
from scipy.stats import binomtest

from agents.promo.campaigns import (
    MAX_ENTRIES_PER_USER,
    Campaign,
    CampaignBook,
    CampaignError,
    CampaignStats,
    Decider,
    Decision,
    EventFacts,
    compile_condition,
    idempotency_key,
    newcombe_interval,
    parse_campaigns,
    wilson_interval,
)
from agents.promo.triggers import PACKAGED_CAMPAIGNS
from streams.contracts import ATTRIBUTION, CAMPAIGN, PROMO_TRIGGER, check_contract

T0 = 1_900_000_000_000          # 2030-03-17T17:46:40Z
HOUR = 3_600_000
VIEW = {"consent": True, "session": {"carts": 0, "purchases": 0}, "lifecycle": "new",
        "live": {"rooms_watched": 1, "comments": 4}, "tags": ["new", "high_intent"]}


def campaign(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "c1", "on": ["add_to_cart"], "action": "coupon",
                            "holdout": 0.0, "offer": {"code": "X"}}
    base.update(overrides)
    return base


def facts(i: int = 0, *, user: str = "u1", kind: str = "add_to_cart", ts: int = T0,
          partition: int = 0, **extra: Any) -> EventFacts:
    return EventFacts(user, kind, ts, f"e{i}", "lp.live-events", "live", room_id="r1",
                      item_id="i1", partition=partition, **extra)


class Harness:
    """The decider plus the stores the worker keeps (per-user state, per-partition spend)."""

    def __init__(self, *defs: dict[str, Any], partitions: int = 1) -> None:
        self.book = CampaignBook([Campaign.from_dict(d) for d in defs])
        self.decider = Decider(self.book, partitions)
        self.state: dict[str, Any] = {}
        self.spent: dict[str, float] = {}

    def run(self, f: EventFacts, view: dict[str, Any] | None = None,
            scores: dict[str, float] | None = None, now: int | None = None) -> Decision:
        decision = self.decider.on_event(
            f, view or VIEW, {"viewers": 10}, scores,
            load_state=lambda: self.state.get(f.user_id),
            spent=lambda cid: self.spent.get(f"{cid}|{f.partition}", 0.0),
            now_ms=now if now is not None else f.ts + 10)
        assert decision is not None
        if decision.state is not None:
            self.state[f.user_id] = decision.state
        for cid, total in decision.spent.items():
            self.spent[f"{cid}|{f.partition}"] = total
        return decision


# ------------------------------------------------------------------ parsing
def test_shipped_campaigns_load_and_fit_the_contract() -> None:
    book = CampaignBook.load(PACKAGED_CAMPAIGNS)
    ids = {c.id for c in book.campaigns()}
    assert ids == {"save-the-sale", "cart-reminder", "first-time-follow", "welcome-back"}
    for c in book.campaigns():
        check_contract(CAMPAIGN, dict(c.record))
        assert c.holdout == 0.1 and c.caps and c.budget and c.cost > 0
        assert Campaign.from_dict(c.record).record == c.record  # the topic form round-trips


@pytest.mark.parametrize(("patch", "message"), [
    ({"on": ["dance"]}, "on"),
    ({"on": ["product_pin"]}, "on"),
    ({"cap": [{"max": 1, "per": "1h"}]}, "unknown keys"),
    ({"caps": [{"max": 1, "per": 3600}]}, "caps"),
    ({"caps": [{"max": 1, "per": "1 hour"}]}, "duration"),
    ({"holdout": 1.5}, "holdout"),
    ({"quiet_hours": {"start": 1320, "end": "08:00"}}, "quiet_hours"),
    ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "equal"),
    ({"quiet_hours": {"start": "22:00", "end": "08:00", "utc_offset": "8"}}, "offset"),
    ({"expires_at": "2030-01-01T00:00:00"}, "UTC offset"),
    ({"starts_at": "2030-01-02T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"}, "after"),
    ({"when": [{"field": "user.x", "op": "==", "value": 1}]}, "namespace"),
    ({"when": [{"field": "scores.x", "op": "=~", "value": 1}]}, "op must be one of"),
    ({"when": [{"field": "scores.x", "op": ">=", "value": "high"}]}, "number"),
    ({"when": [{"field": "scores.x", "op": "in", "value": []}]}, "non-empty"),
    ({"when": [{"any": [{"any": []}]}]}, "does not nest"),
    ({"id": "has space"}, "id"),
    ({"version": 0}, "version"),
    ({"schema_version": 2}, "schema_version"),
])
def test_bad_definitions_are_refused_with_a_reason(patch: dict[str, Any], message: str) -> None:
    with pytest.raises(CampaignError, match=message):
        Campaign.from_dict(campaign(**patch))


def test_yaml_reads_on_as_a_key_and_times_as_timestamps() -> None:
    (c,) = parse_campaigns("""
campaigns:
  - id: y
    on: [join]
    action: ad
    expires_at: 2030-01-01T00:00:00+08:00
    quiet_hours: {start: "22:00", end: "06:30", utc_offset: "+08:00"}
""")
    assert c.on == {"join"} and c.record["expires_at"] == "2030-01-01T00:00:00+08:00"
    assert c.expires_at == 1893427200000 and c.quiet == (1320, 390, 8 * HOUR)
    with pytest.raises(CampaignError, match="duplicate"):
        parse_campaigns("campaigns: [{id: a, 'on': [join], action: x},"
                        " {id: a, 'on': [join], action: x}]")


# ------------------------------------------------------------------ conditions
CTX = {"event": {"type": "like", "source": "live"}, "profile": VIEW,
       "session": {"open_carts": 2, "gap_s": None}, "room": {"viewers": 30},
       "scores": {"leave_risk": 0.7, "flag": True}}


@pytest.mark.parametrize(("cond", "holds"), [
    ({"field": "scores.leave_risk", "op": ">=", "value": 0.7}, True),
    ({"field": "scores.leave_risk", "op": ">", "value": 0.7}, False),
    ({"field": "scores.leave_risk", "op": "<", "value": 1}, True),
    ({"field": "scores.missing", "op": "<", "value": 1}, False),     # missing: false
    ({"field": "scores.flag", "op": ">=", "value": 0}, False),       # booleans are no numbers
    ({"field": "session.gap_s", "op": ">=", "value": 0}, False),     # null: false
    ({"field": "session.gap_s", "op": "exists", "value": False}, True),
    ({"field": "room.viewers", "op": "<=", "value": 30}, True),
    ({"field": "event.source", "op": "==", "value": "live"}, True),
    ({"field": "event.source", "op": "!=", "value": "live"}, False),
    ({"field": "profile.missing", "op": "!=", "value": "live"}, False),
    ({"field": "profile.lifecycle", "op": "in", "value": ["new", "active"]}, True),
    ({"field": "profile.lifecycle", "op": "not_in", "value": ["new"]}, False),
    ({"field": "profile.tags", "op": "contains", "value": "high_intent"}, True),
    ({"field": "profile.tags", "op": "not_contains", "value": "dormant"}, True),
    ({"field": "profile.live.comments", "op": ">=", "value": 3}, True),
    ({"field": "profile.live.comments.deeper", "op": "exists", "value": True}, False),
])
def test_condition_operators(cond: dict[str, Any], holds: bool) -> None:
    assert (compile_condition(cond, "t")(CTX) is not None) is holds


def test_all_conditions_must_hold_and_report_their_reasons() -> None:
    c = Campaign.from_dict(campaign(when=[
        {"field": "scores.leave_risk", "op": ">=", "value": 0.5, "reason": "leaving"},
        {"field": "event.source", "op": "==", "value": "live"},
        {"reason": "engaged", "any": [
            {"field": "profile.live.likes", "op": ">=", "value": 10},
            {"field": "profile.live.comments", "op": ">=", "value": 3}]},
        {"any": [{"field": "room.viewers", "op": ">", "value": 100, "reason": "big_room"},
                 {"field": "room.viewers", "op": ">", "value": 20, "reason": "busy_room"}]},
    ]))
    assert c.match(CTX) == ["leaving", "engaged", "busy_room"]
    assert c.match({**CTX, "scores": {"leave_risk": 0.1}}) is None


# ------------------------------------------------------------------ gates
def test_frequency_caps_count_both_groups_per_window() -> None:
    h = Harness(campaign(caps=[{"max": 2, "per": "1h"}, {"max": 3, "per": "1d"}]))
    outcomes = [h.run(facts(i, ts=T0 + i * 60_000)).outcomes[0][1] for i in range(5)]
    assert outcomes == ["sent", "sent", "capped", "capped", "capped"]
    later = h.run(facts(10, ts=T0 + 2 * HOUR)).outcomes[0][1]   # hour cap has room again
    last = h.run(facts(11, ts=T0 + 3 * HOUR)).outcomes[0][1]    # the day cap has not
    assert (later, last) == ("sent", "capped")
    held = Harness(campaign(holdout=1.0, caps=[{"max": 1, "per": "1h"}]))
    assert [held.run(facts(i, ts=T0 + i)).outcomes[0][1] for i in range(2)] == [
        "holdout", "capped"]


def test_quiet_hours_use_event_time_in_the_campaign_offset() -> None:
    h = Harness(campaign(quiet_hours={"start": "22:00", "end": "08:00",
                                      "utc_offset": "+08:00"}))
    day = 1_893_427_200_000  # 2030-01-01T00:00+08:00
    at = {f"{hh:02d}:{mm:02d}": day + (hh * 60 + mm) * 60_000
          for hh, mm in [(7, 59), (8, 0), (21, 59), (22, 0), (23, 30), (3, 0)]}
    got = {label: h.run(facts(i, ts=ts, user=f"u{i}"), now=ts).outcomes[0][1]
           for i, (label, ts) in enumerate(at.items())}
    assert got == {"07:59": "quiet_hours", "08:00": "sent", "21:59": "sent",
                   "22:00": "quiet_hours", "23:30": "quiet_hours", "03:00": "quiet_hours"}


def test_start_and_expiry_on_event_time_and_stale_triggers() -> None:
    h = Harness(campaign(starts_at="2030-03-17T17:00:00Z", expires_at="2030-03-17T18:00:00Z",
                         offer_ttl="15m"))
    start, end = T0 - 2_800_000, T0 + 800_000  # T0 is 17:46:40Z
    assert h.run(facts(1, ts=start - 1, user="a")).outcomes == [("c1", "not_started")]
    assert h.run(facts(2, ts=end, user="b")).outcomes == [("c1", "expired")]
    sent = h.run(facts(3, ts=end - 60_000, user="c"))
    assert sent.triggers[0]["expires_at"] == end  # the campaign's end caps the offer's ttl
    replayed = h.run(facts(4, ts=T0, user="d"), now=T0 + 16 * 60_000)  # ttl passed already
    assert replayed.outcomes == [("c1", "stale")] and not replayed.triggers


def test_budget_is_split_across_partitions_and_the_holdout_spends_nothing() -> None:
    h = Harness(campaign(budget=10, cost_per_trigger=2.0), partitions=2)  # 5 per partition
    p0 = [h.run(facts(i, user=f"u{i}", partition=0)).outcomes[0][1] for i in range(4)]
    p1 = [h.run(facts(10 + i, user=f"v{i}", partition=1)).outcomes[0][1] for i in range(2)]
    assert p0 == ["sent", "sent", "budget", "budget"] and p1 == ["sent", "sent"]
    assert h.spent == {"c1|0": 4.0, "c1|1": 4.0}
    held = Harness(campaign(budget=1, cost_per_trigger=2.0, holdout=1.0))
    assert held.run(facts(1)).outcomes == [("c1", "budget")]  # the holdout mirrors the rules
    free = Harness(campaign(budget=1, cost_per_trigger=0.5, holdout=1.0))
    assert free.run(facts(1)).outcomes == [("c1", "holdout")] and free.spent == {}


# ------------------------------------------------------------------ holdout
def test_holdout_is_deterministic_about_ten_percent_and_monotonic() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    default = {k: v for k, v in campaign().items() if k != "holdout"}
    ten = Campaign.from_dict(default)
    assert ten.holdout == 0.1
    held = {u for u in users if ten.in_holdout(u)}
    again = Campaign.from_dict({**default, "version": 7, "when": []})
    assert held == {u for u in users if again.in_holdout(u)}  # same on every worker and run
    low, high = binomtest(len(held), len(users), 0.1).proportion_ci(0.9999)
    assert low <= 0.1 <= high, len(held)
    wider = Campaign.from_dict(campaign(holdout=0.2))
    assert held <= {u for u in users if wider.in_holdout(u)}  # raising the share keeps them
    other = Campaign.from_dict({**default, "id": "c2"})
    overlap = sum(1 for u in held if other.in_holdout(u)) / len(held)
    assert 0.05 < overlap < 0.15  # independent across campaigns


# ------------------------------------------------------------------ consent, redelivery
def test_opted_out_users_are_never_evaluated() -> None:
    h = Harness(campaign())

    def no_state() -> None:
        raise AssertionError("state loaded for an opted-out user")

    d = h.decider.on_event(facts(1), {**VIEW, "consent": False}, None, {"leave_risk": 1.0},
                           load_state=no_state, spent=lambda c: 0.0, now_ms=T0)
    assert d is not None and d.outcomes == [("c1", "no_consent")]
    assert not d.triggers and not d.records and d.state is None


def test_idempotency_key_is_stable_and_a_redelivery_counts_nothing_twice() -> None:
    h = Harness(campaign(budget=100, cost_per_trigger=1.0))
    first = h.run(facts(1))
    key = first.triggers[0]["idempotency_key"]
    assert key == idempotency_key("c1", "u1", "lp.live-events", "e1")
    # the same event again (another partition/offset after a re-key): same trigger, no spend
    again = h.run(facts(1, partition=0), now=T0 + 999)
    assert again.outcomes == [("c1", "duplicate")] and not again.triggers
    assert again.resent == first.triggers and again.records == first.records
    assert h.spent == {"c1|0": 1.0} and len(h.state["u1"]["r"]) == 1
    other = h.run(facts(2))
    assert other.triggers[0]["idempotency_key"] != key
    assert idempotency_key("c2", "u1", "lp.live-events", "e1") != key


def test_triggers_and_records_fit_their_contracts() -> None:
    h = Harness(campaign(when=[{"field": "scores.leave_risk", "op": ">", "value": 0.5,
                                "reason": "leaving"}]))
    d = h.run(facts(1), scores={"leave_risk": 0.8, "purchase_propensity": 0.6})
    trigger = d.triggers[0]
    check_contract(PROMO_TRIGGER, trigger)
    assert trigger["reasons"] == ["leaving"] and trigger["scores"]["leave_risk"] == 0.8
    assert trigger["source"] == {"topic": "lp.live-events", "event_id": "e1",
                                 "type": "add_to_cart"}
    assert trigger["event_ts"] == T0 and trigger["expires_at"] == T0 + 15 * 60_000
    assert trigger["room_id"] == "r1" and trigger["offer"] == {"code": "X"}
    for record in d.records:
        check_contract(ATTRIBUTION, record)


# ------------------------------------------------------------------ attribution
def test_a_purchase_converts_the_latest_trigger_once_within_the_window() -> None:
    h = Harness(campaign(attribution_window="1h"),
                campaign(id="c2", holdout=1.0, attribution_window="1h"))
    h.run(facts(1, ts=T0))
    h.run(facts(2, ts=T0 + 60_000))
    buy = facts(3, kind="purchase", ts=T0 + 120_000, value=50.0)
    d = h.run(buy)
    conversions = [r for r in d.records if r["kind"] == "conversion"]
    assert sorted((r["campaign_id"], r["group"], r["trigger_ts"]) for r in conversions) == [
        ("c1", "treatment", T0 + 60_000), ("c2", "holdout", T0 + 60_000)]
    assert d.conversions == [("c1", "treatment"), ("c2", "holdout")]
    for r in conversions:
        check_contract(ATTRIBUTION, r)
        assert r["value"] == 50.0 and r["purchase_event_id"] == "e3"
    redelivered = h.run(buy)  # same records again (same ids), nothing counted twice
    assert {r["record_id"] for r in redelivered.records} == {r["record_id"]
                                                             for r in conversions}
    assert redelivered.conversions == []
    second = h.run(facts(4, kind="purchase", ts=T0 + 180_000, value=5.0))
    assert [r["trigger_ts"] for r in second.records] == [T0, T0]  # the older trigger, once
    assert h.run(facts(5, kind="purchase", ts=T0 + 240_000)).records == []  # all converted
    h.run(facts(6, user="u2", ts=T0))
    late = h.run(facts(7, user="u2", kind="purchase", ts=T0 + HOUR + 1, value=5.0))
    assert late.records == [] and late.conversions == []  # outside the window


def test_baseline_cohort_before_the_start_feeds_the_before_after_view() -> None:
    """Users matching the conditions in baseline_window before starts_at are recorded (no
    trigger, no cost) under the same caps; their purchases convert them; after the start
    the caps count only real triggers; the view sets the change beside the uplift."""
    start = T0 + 2 * HOUR
    h = Harness(campaign(starts_at="2030-03-17T19:46:40Z", baseline_window="1h",
                         caps=[{"max": 1, "per": "1h"}], attribution_window="1h",
                         cost_per_trigger=0.5, holdout=0.5))
    assert Campaign.from_dict(campaign()).baseline_window_ms == 0  # no start, no baseline
    early = h.run(facts(1, ts=start - HOUR - 1))   # before the window: nothing remembered
    assert early.outcomes == [("c1", "not_started")] and early.records == []
    first = h.run(facts(2, ts=start - 30 * 60_000))
    assert first.outcomes == [("c1", "not_started")] and first.triggers == []
    (record,) = first.records
    check_contract(ATTRIBUTION, record)
    assert (record["group"], record["kind"], record["cost"]) == ("baseline", "trigger", 0.0)
    assert h.run(facts(3, ts=start - 20 * 60_000)).records == []  # capped, as a trigger
    bought = h.run(facts(4, kind="purchase", ts=start - 10 * 60_000, value=20.0))
    assert bought.conversions == [("c1", "baseline")]
    assert bought.records[0]["group"] == "baseline"
    # after the start the baseline entry (20 min old) does not use up the cap
    users = [f"v{i}" for i in range(40)]
    during = [h.run(facts(10 + i, user=u, ts=start + 1)) for i, u in enumerate(users)]
    assert h.run(facts(5, ts=start + 1)).outcomes[0][1] in ("sent", "holdout")
    stats = CampaignStats()
    for d in (early, first, bought, *during):
        for r in d.records:
            stats.add(r)
    view = stats.report("c1")["before_after"]
    assert view["before"] == {"triggers": 1, "conversions": 1, "conversion_rate": 1.0,
                              "ci95": view["before"]["ci95"]}
    sent = stats.report("c1")["sent"]
    assert view["during"]["triggers"] == sent and view["change"] == -1.0
    assert view["holdout_uplift"] == 0.0 and view["drift"] == -1.0
    assert stats.report("c1")["holdout"] == 40 - sent  # the baseline is neither group


def test_state_is_pruned_by_age_and_count() -> None:
    h = Harness(campaign(attribution_window="1h"))
    for i in range(MAX_ENTRIES_PER_USER + 5):
        h.run(facts(i, ts=T0 + i))
    assert len(h.state["u1"]["r"]) == MAX_ENTRIES_PER_USER
    h.run(facts(999, ts=T0 + 2 * HOUR))
    assert [e["t"] for e in h.state["u1"]["r"]] == [T0 + 2 * HOUR]


# ------------------------------------------------------------------ book
def test_book_versions_tombstones_and_rejects() -> None:
    book = CampaignBook([Campaign.from_dict(campaign(version=3))])
    assert book.apply("c1", campaign(version=2)) == "stale"
    assert book.apply("c1", campaign(version=3, on=["like"])) == "applied"  # ties: topic
    assert [c.id for c in book.listening("like")] == ["c1"] and not book.listening(
        "add_to_cart")
    assert book.apply("c1", campaign(version=4, enabled=False)) == "applied"
    assert book.listening("add_to_cart") == () and book.source_of("c1") == "topic"
    assert book.apply("c1", None) == "removed"
    assert book.get("c1").version == 3 and book.source_of("c1") == "file"
    with pytest.raises(CampaignError, match="differs"):
        book.apply("other", campaign(id="c9"))
    with pytest.raises(CampaignError):
        book.apply("c5", campaign(id="c5", on=[]))
    assert set(book.rejected) == {"other", "c5"}
    assert book.apply("c5", campaign(id="c5")) == "applied" and "c5" not in book.rejected


# ------------------------------------------------------------------ experiment figures
def test_wilson_and_newcombe_intervals() -> None:
    for k, n in [(0, 10), (3, 17), (56, 70), (500, 1000)]:
        ref = binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)
    # Newcombe (1998), example (a): 56/70 vs 48/80, method 10
    assert newcombe_interval(56, 70, 48, 80) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert newcombe_interval(1, 10, 0, 0) is None


def test_uplift_from_decider_records_covers_the_true_effect() -> None:
    rng = random.Random(3)
    h = Harness(campaign(holdout=0.5, cost_per_trigger=0.5, attribution_window="1h"))
    stats = CampaignStats()
    truth = {"treatment": 0.30, "holdout": 0.20}
    for i in range(4000):
        user = f"u{i}"
        d = h.run(facts(i, user=user))
        for record in d.records:
            stats.add(record)
        group = d.records[0]["group"]
        if rng.random() < truth[group]:
            for record in h.run(facts(100_000 + i, user=user, kind="purchase",
                                      ts=T0 + 60_000, value=20.0)).records:
                assert stats.add(record)
                assert not stats.add(record)  # a redelivered record is not counted again
    r = stats.report("c1")
    assert r["sent"] + r["holdout"] == 4000 and abs(r["sent"] - 2000) < 200
    low, high = r["uplift_ci95"]
    assert low < 0.10 < high and low > 0  # covers the true uplift, and excludes zero
    assert r["cost"] == pytest.approx(0.5 * r["sent"])
    assert r["incremental_conversions"] == pytest.approx(r["uplift"] * r["sent"], rel=1e-4)
    assert r["revenue"]["treatment"] == pytest.approx(20.0 * r["conversions"]["treatment"])
    empty = CampaignStats().report("nothing")
    assert empty["uplift"] is None and empty["uplift_ci95"] is None and empty["sent"] == 0
