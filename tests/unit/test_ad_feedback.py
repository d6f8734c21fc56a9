"""Ad-system feedback: the ``ad-feedback.v1`` contract, the worker's batch handler
(validation, dead letters, dedupe, counters), the per campaign x variant x channel report and
the simulated ad system's known truth."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.promo.campaigns import wilson_interval
from agents.promo.feedback import (
    OTHER,
    CampaignReports,
    Deduper,
    DistinctUsers,
    ExactBudget,
    FeedbackHandler,
    LabelCap,
)
from agents.sinks.clickhouse_schema import TABLE_BY_NAME, erase_user_sql
from agents.testing import Harness, records
from config.settings import Settings
from streams.ad_system import AdSystemModel, VariantTruth
from streams.contracts import AD_FEEDBACK, ContractError, as_dict, validate
from streams.ingest import now_ms


def feedback(kind: str, key: str = "k1", *, campaign: str = "cart", user: str = "u1",
             channel: str = "push", **extra: Any) -> dict[str, Any]:
    body = {"type": kind, "idempotency_key": key, "campaign_id": campaign, "user_id": user,
            "channel": channel, "ts": now_ms(), **extra}
    if kind == "converted":
        body.setdefault("order_id", "o1")
        body.setdefault("value", 40.0)
        body.setdefault("currency", "CNY")
    return body


# ------------------------------------------------------------------ contract
@pytest.mark.parametrize("kind", ["delivered", "shown", "clicked", "dismissed", "converted"])
def test_every_kind_validates_with_variant_defaulting(kind: str) -> None:
    record = validate(AD_FEEDBACK, feedback(kind))
    assert (record.type, record.variant, record.channel) == (kind, "default", "push")


@pytest.mark.parametrize(("patch", "error_class"), [
    ({"type": "opened"}, "unknown_type"),
    ({"type": "converted", "value": None}, "missing_field"),
    ({"type": "converted", "currency": None}, "missing_field"),
    ({"type": "converted", "value": -1.0}, "out_of_range"),
    ({"channel": None}, "missing_field"),
    ({"idempotency_key": 7}, "wrong_type"),
    ({"schema_version": 2}, "unsupported_version"),
])
def test_bad_feedback_is_refused(patch: dict[str, Any], error_class: str) -> None:
    body = feedback(patch.get("type", "clicked"))
    body.update(patch)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(ContractError) as err:
        validate(AD_FEEDBACK, body)
    assert err.value.error_class == error_class


# ------------------------------------------------------------------ dedupe, caps
def test_deduper_memory_is_bounded() -> None:
    d = Deduper(1000)
    assert all(d.first(f"k{i}") for i in range(5000))
    assert len(d) == 1000
    assert not d.first("k4999") and d.first("k0")   # recent remembered, old forgotten


def test_label_caps_per_campaign() -> None:
    cap = LabelCap(max_variants=2, max_channels=1)
    assert [cap("c", v, "push")[0] for v in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]
    assert cap("c", "a", "sms") == ("a", OTHER)
    assert cap("d", "z", "sms") == ("z", "sms")     # caps are per campaign


# ------------------------------------------------------------------ handler
def test_handler_dead_letters_dedupes_and_counts() -> None:
    h = Harness()
    handler = FeedbackHandler(h.engine, known=lambda cid: cid == "cart")
    topic = h.names.ad_feedback
    good = [feedback("delivered"), feedback("shown"), feedback("clicked"),
            feedback("clicked"),                                  # duplicate
            feedback("converted", value=25.5),
            feedback("shown", key="k2", campaign="nope", variant="B")]
    bad = [b"{not json", orjson.dumps(feedback("converted", currency=None) | {"currency": 1}),
           orjson.dumps(feedback("shown", user="u2"))]            # key is u1: key_mismatch
    values = [orjson.dumps(b) for b in good] + bad
    batch = SimpleNamespace(topic=topic, partition=0)
    asyncio.run(handler.handle_batch(batch, records(topic, 0, values,
                                                    keys=[b"u1"] * len(values))))
    asyncio.run(h.engine.outputs.drain())
    letters = h.sent(h.names.dead_letter)
    assert sorted(x["error_class"] for x in letters) == ["key_mismatch", "malformed_json",
                                                         "wrong_type"]
    assert all(x["source_topic"] == topic for x in letters)
    assert (handler.accepted, handler.duplicates) == (5, 1)
    reg = h.engine.metrics.registry

    def got(kind: str, campaign: str = "cart", variant: str = "default") -> float:
        return reg.get_sample_value("livepulse_ad_feedback_total", {
            "campaign": campaign, "variant": variant, "channel": "push", "type": kind}) or 0
    assert [got(k) for k in ("delivered", "shown", "clicked", "converted")] == [1, 1, 1, 1]
    assert got("shown", campaign=OTHER, variant="B") == 1      # unknown campaign: bounded
    assert reg.get_sample_value("livepulse_ad_revenue_total", {
        "campaign": "cart", "variant": "default", "channel": "push"}) == 25.5


# ------------------------------------------------------------------ report folding
def test_report_folds_rows_and_totals() -> None:
    reports = CampaignReports(known=lambda cid: cid == "cart")
    for i in range(10):
        for kind in ("delivered", "shown"):
            assert reports.add_raw(feedback(kind, f"k{i}", variant="A" if i < 5 else "B"))
    for i in (0, 5, 6):
        reports.add_raw(feedback("clicked", f"k{i}", variant="A" if i < 5 else "B"))
    reports.add_raw(feedback("converted", "k5", variant="B", value=100.0))
    assert not reports.add_raw(feedback("converted", "k5", variant="B", value=100.0))
    assert not reports.add_raw(feedback("shown", "x", campaign="other"))
    assert not reports.add_raw({"type": "shown"})
    assert (reports.duplicates, reports.unknown, reports.invalid) == (1, 1, 1)
    experiment = {"sent": 12, "holdout": 3, "cost": 6.0, "uplift": 0.1,
                  "uplift_ci95": [-0.2, 0.4]}
    report = reports.report("cart", experiment, cost_per_trigger=0.5)
    rows = {r["variant"]: r for r in report["rows"]}
    assert rows["A"]["ctr"] == 0.2 and rows["B"]["ctr"] == 0.4
    assert rows["B"]["cvr"] == 0.5 and rows["B"]["revenue"] == 100.0
    assert rows["B"]["cost"] == 2.5 and rows["B"]["roas"] == 40.0   # 5 delivered x 0.5
    assert rows["A"]["roas"] == 0.0 and rows["A"]["cvr"] == 0.0
    low, high = rows["B"]["ctr_ci95"]
    assert low < 0.4 < high
    totals = report["totals"]
    assert (totals["sent"], totals["delivered"], totals["shown"], totals["clicked"],
            totals["converted"]) == (12, 10, 10, 3, 1)
    assert totals["cost"] == 6.0 and totals["roas"] == round(100 / 6, 6)
    assert report["experiment"]["uplift_ci95"] == [-0.2, 0.4]


# ------------------------------------------------------------------ end to end (harness)
CAMPAIGNS = """
campaigns:
  - id: cart
    on: [add_to_cart]
    action: coupon
    offer: {code: SAVE5}
    holdout: 0.2
    cost_per_trigger: 0.5
    caps: [{max: 1, per: 1h}]
"""


def _control(h: Harness, topic: str, value: bytes) -> None:
    """Hand one record to the campaigns/attribution/feedback follower, as it reads it."""
    h.promo._apply_control(SimpleNamespace(topic=topic, key=None, value=value,
                                           timestamp=now_ms()))


def test_triggers_feedback_report_end_to_end() -> None:
    """Real triggers from the user pipeline, answered by the simulated ad system; the
    report's figures equal those computed from the feedback the ad system sent."""
    path = Path(tempfile.mkdtemp(prefix="lp-fb-")) / "campaigns.yaml"
    path.write_text(CAMPAIGNS)
    h = Harness(Settings(kafka_url="memory", data_dir=str(path.parent), partitions=2,
                         redis_url="", clickhouse_url="", campaigns_file=str(path)))
    users = [f"u{i}" for i in range(300)]
    events = [orjson.dumps({"event_id": f"e{i}", "type": "add_to_cart", "ts": now_ms(),
                            "user_id": u, "session_id": f"s{u}", "item_id": "i1",
                            "price": 10.0}) for i, u in enumerate(users)]
    asyncio.run(h.feed("clicks", 0, events))
    triggers = h.sent(h.names.promo_triggers)
    attribution = h.sent(h.names.attribution, decode=False)
    assert 200 < len(triggers) < 280            # 300 users, 20 % held out
    for value in attribution:
        _control(h, h.names.attribution, value)
    model = AdSystemModel(variants=(VariantTruth("A", 0.3, cvr=0.5),
                                    VariantTruth("B", 0.6, cvr=0.5)))
    answers = [a for t in triggers for a in model.respond(t)]
    for answer in answers:      # sent when due, stamped then (as streams.ad_system.run does)
        answer["ts"] = now_ms()
    handler = FeedbackHandler(h.engine, known=lambda cid: h.promo.book.get(cid) is not None)
    values = [orjson.dumps(a) for a in answers]
    values += values[:20]                       # redelivered: counted once
    asyncio.run(handler.handle_batch(
        SimpleNamespace(topic=h.names.ad_feedback, partition=0),
        records(h.names.ad_feedback, 0, values,
                keys=[orjson.loads(v)["user_id"].encode() for v in values])))
    for value in values:
        _control(h, h.names.ad_feedback, value)
    assert handler.duplicates == 20 and h.promo.feedback.duplicates == 20
    assert h.sent(h.names.dead_letter) == []
    stale = {**answers[0], "idempotency_key": "old", "ts": now_ms() - 400 * 86_400_000}
    _control(h, h.names.ad_feedback, orjson.dumps(stale))   # too old: as the handler decides
    _control(h, h.names.ad_feedback, b"{broken")
    assert h.promo.feedback.invalid == 2
    report = h.promo.campaign_report("cart", now_ms())
    assert report is not None and h.promo.campaign_report("nope", now_ms()) is None
    totals = report["totals"]
    assert totals["sent"] == len(triggers)
    assert totals["cost"] == round(0.5 * len(triggers), 2)
    assert report["experiment"]["holdout"] == 300 - len(triggers)
    for kind in ("delivered", "shown", "clicked", "dismissed", "converted"):
        assert totals[kind] == sum(1 for a in answers if a["type"] == kind)
    revenue = sum(a["value"] for a in answers if a["type"] == "converted")
    assert totals["revenue"] == round(revenue, 2)
    for row in report["rows"]:
        mine = [a for a in answers if (a["variant"], a["channel"]) == (row["variant"],
                                                                      row["channel"])]
        shown = sum(1 for a in mine if a["type"] == "shown")
        clicked = sum(1 for a in mine if a["type"] == "clicked")
        assert row["ctr"] == round(clicked / shown, 6)
        for stage in ("shown", "clicked", "converted"):
            assert row[f"users_{stage}"] == len({a["user_id"] for a in mine
                                                 if a["type"] == stage})
    assert {r["channel"] for r in report["rows"]} == {"push", "in_app"}
    # the deployment-wide gauges carry the report's per-variant figures
    h.promo.export_uplift()
    registry = h.engine.metrics.registry
    assert {v["variant"] for v in report["variants"]} == {"A", "B"}
    for v in report["variants"]:
        labels = {"campaign": "cart", "variant": v["variant"]}
        for kind in ("sent", "shown", "clicked", "converted"):
            assert registry.get_sample_value(
                "livepulse_campaign_events", {**labels, "kind": kind}) == v[kind]
        for stage in ("shown", "clicked", "converted"):
            assert registry.get_sample_value(
                "livepulse_campaign_users", {**labels, "kind": stage}) == v[f"users_{stage}"]
        assert registry.get_sample_value("livepulse_campaign_cost", labels) == v["cost"]
        assert registry.get_sample_value("livepulse_campaign_revenue", labels) == v["revenue"]
    assert registry.get_sample_value("livepulse_campaign_conversion_rate", {
        "campaign": "cart", "group": "treatment"}) == \
        report["experiment"]["conversion_rate"]["treatment"]
    # a campaign no longer in the book loses its series at the next export
    h.promo.book = type(h.promo.book)()
    h.promo.export_uplift()
    assert registry.get_sample_value("livepulse_campaign_events", {
        "campaign": "cart", "variant": "A", "kind": "sent"}) is None


def test_participation_counts_distinct_users_per_row_variant_and_campaign() -> None:
    reports = CampaignReports()
    base = {"campaign_id": "c", "ts": 1, "type": "shown"}
    for key, user, variant, channel in (("k1", "u1", "A", "push"), ("k2", "u1", "A", "push"),
                                        ("k3", "u1", "A", "sms"), ("k4", "u2", "A", "push"),
                                        ("k5", "u3", "B", "push")):
        assert reports.add_raw({**base, "idempotency_key": key, "user_id": user,
                                "variant": variant, "channel": channel})
    assert reports.add_raw({**base, "type": "clicked", "idempotency_key": "k1",
                            "user_id": "u1", "variant": "A", "channel": "push"})
    report = reports.report("c", {"sent": 5}, 1.0)
    rows = {(r["variant"], r["channel"]): r for r in report["rows"]}
    assert (rows["A", "push"]["shown"], rows["A", "push"]["users_shown"]) == (3, 2)
    assert rows["A", "push"]["exposures_per_user"] == 1.5
    assert (rows["A", "push"]["users_clicked"], rows["A", "sms"]["users_clicked"]) == (1, 0)
    variants = {v["variant"]: v for v in report["variants"]}
    assert (variants["A"]["shown"], variants["A"]["users_shown"]) == (4, 2)
    assert variants["B"]["users_shown"] == 1
    assert (report["totals"]["shown"], report["totals"]["users_shown"]) == (5, 3)


def test_ad_feedback_history_row_is_pseudonymized_and_erasable() -> None:
    table = TABLE_BY_NAME["ad_feedback"]
    record = validate(AD_FEEDBACK, feedback("converted", order_id="o1", value=12.5,
                                            currency="CNY"))
    row = dict(zip(table.column_names, table.row(as_dict(record), lambda u: "pid-" + u),
                   strict=True))
    assert row["user_pid"] == "pid-u1" and "u1" not in {row["idempotency_key"],
                                                        row["order_id"]}
    assert (row["type"], row["variant"], row["value"], row["currency"]) == (
        "converted", "default", 12.5, "CNY")
    assert "ALTER TABLE lp.ad_feedback DELETE WHERE user_pid = %(pid)s" in erase_user_sql("lp")


def test_report_ctr_covers_the_true_ctr() -> None:
    """20,000 triggers answered with a true CTR of 4 % (A) and 6 % (B): each variant's
    reported CTR interval covers its truth, and the intervals separate the two."""
    model = AdSystemModel()
    reports = CampaignReports()
    for i in range(20_000):
        trigger = {"idempotency_key": f"k{i}", "campaign_id": "c", "user_id": f"u{i}",
                   "ts": 1_900_000_000_000 + i}
        for answer in model.respond(trigger):
            reports.add_raw(answer)
    report = reports.report("c", {"sent": 20_000, "cost": 0.0}, 0.0)
    by_variant: dict[str, list[int]] = {}
    for row in report["rows"]:
        shown_clicked = by_variant.setdefault(row["variant"], [0, 0])
        shown_clicked[0] += row["shown"]
        shown_clicked[1] += row["clicked"]
    intervals = {v: wilson_interval(c, s) for v, (s, c) in by_variant.items()}
    truth = model.truth()
    for variant, (low, high) in intervals.items():
        assert low <= truth[variant]["ctr"] <= high, (variant, low, high)
    assert intervals["A"][1] < intervals["B"][0]
    for row in report["rows"]:
        low, high = row["ctr_ci95"]
        assert low <= truth[row["variant"]]["ctr"] <= high, row


def test_distinct_users_share_a_bounded_exact_budget() -> None:
    budget = ExactBudget(100)
    rows = [DistinctUsers(exact_up_to=80, budget=budget) for _ in range(3)]
    for row in rows:
        for i in range(60):
            row.add(f"u{i}")
            row.add(f"u{i}")          # a repeat is never counted or held twice
    # 100 hashes exact at most: the first row holds 60; the others spill into sketches
    # when the budget runs out (and give their hashes back)
    assert [r.exact for r in rows] == [True, False, False] and budget.left == 40
    assert rows[0].count() == 60
    assert all(abs(r.count() - 60) <= 3 for r in rows[1:])
    for i in range(60, 200):
        rows[0].add(f"u{i}")          # beyond exact_up_to: a sketch, its hashes given back
    assert not rows[0].exact and budget.left == 100
    assert abs(rows[0].count() - 200) <= 10
