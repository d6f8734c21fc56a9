"""Audit records of trigger decisions (issue 20 item 5): produced through the real user
pipeline (agents.testing.Harness), kept with the trigger history, erased with the user."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from agents.forget import erasure_record
from agents.promo.campaigns import MAX_ENTRIES_PER_USER
from agents.promo.triggers import stored_state
from agents.testing import Harness, records
from agents.users.erasure import Eraser
from config.settings import Settings

CAMPAIGNS = """
campaigns:
  - id: browse-nudge
    version: 3
    on: [click]
    when:
      - {field: event.source, op: "==", value: clicks}
      - {field: session.events, op: ">=", value: 2, reason: browsing}
      - reason: engaged
        any:
          - {field: profile.live.likes, op: ">=", value: 10}
          - {field: session.events, op: ">=", value: 1}
    action: coupon
    offer: {code: NUDGE, discount_pct: 5}
    holdout: %s
    variants:
      - {id: A, weight: 1}
      - {id: B, weight: 3, offer: {discount_pct: 8}}
"""


def harness(tmp_path: Path, holdout: float = 0.0) -> Harness:
    path = tmp_path / f"campaigns-{holdout}.yaml"
    path.write_text(CAMPAIGNS % holdout, encoding="utf-8")
    return Harness(Settings(kafka_url="memory", data_dir=str(tmp_path), partitions=2,
                            redis_url="", clickhouse_url="", campaigns_file=str(path),
                            snapshot_key="unit-snapshot-key-0123456789abcdef",
                            pseudonym_key="unit-pseudonym-key-0123456789abcdef"))


def feed(h: Harness, user: str, n: int) -> None:
    base = h.now_ms()
    events = [orjson.dumps({"event_id": f"{user}-{i}", "type": "click", "ts": base + i,
                            "user_id": user, "session_id": f"s-{user}",
                            "item_id": f"item-{i % 5}"}) for i in range(n)]
    asyncio.run(h.feed("clicks", 0, events, keys=[user.encode()] * n))


def sent(h: Harness, user: str) -> list[dict[str, Any]]:
    return [t for t in h.sent(h.names.promo_triggers) if t["user_id"] == user]


def test_every_sent_trigger_has_its_audit_record(tmp_path: Path) -> None:
    h = harness(tmp_path)
    feed(h, "ann", 3)
    triggers = sent(h, "ann")
    assert len(triggers) == 2  # the 2nd and 3rd clicks: session.events >= 2
    for trigger in triggers:
        audit = h.promo.audit("ann", trigger["idempotency_key"])
        assert audit is not None
        assert audit["campaign_id"] == "browse-nudge" and audit["campaign_version"] == 3
        assert audit["group"] == "treatment" and audit["reasons"] == ["browsing", "engaged"]
        assert audit["event"]["event_id"] == trigger["source"]["event_id"]
        # every leaf condition with the input it read and whether it held
        conditions = {(c[0], c[2]): c for c in audit["conditions"]}
        assert conditions[("event.source", "clicks")][3:] == ["clicks", True]
        assert conditions[("profile.live.likes", 10)][3:] == [0, False]
        events = conditions[("session.events", 2)][3]
        assert events >= 2 and conditions[("session.events", 2)][4] is True
        # holdout and variant draws explain the group and the variant
        assert audit["holdout"] == {"share": 0.0, "draw": audit["holdout"]["draw"],
                                    "held_out": False}
        variant = audit["variant"]
        assert variant["id"] == trigger["variant"]
        assert variant["weights"] == [0.25, 0.75]
        assert (variant["draw"] < 0.25) == (variant["id"] == "A")
        assert audit["offer"] == trigger["offer"]
    assert h.promo.audit("ann", "no-such-key") is None
    assert h.promo.audit("bob", triggers[0]["idempotency_key"]) is None


def test_held_out_decisions_are_audited_too(tmp_path: Path) -> None:
    h = harness(tmp_path, holdout=1.0)
    feed(h, "ann", 2)
    assert sent(h, "ann") == []
    (entry,) = stored_state(h.promo.state.get("ann"))["r"]
    audit = h.promo.audit("ann", entry["k"])
    assert audit["group"] == "holdout" and audit["offer"] is None and "variant" not in audit
    assert audit["holdout"]["held_out"] is True
    assert audit["holdout"]["draw"] < audit["holdout"]["share"] == 1.0


def test_audit_is_bounded_like_the_trigger_history(tmp_path: Path) -> None:
    h = harness(tmp_path)
    feed(h, "ann", MAX_ENTRIES_PER_USER + 20)
    triggers = sent(h, "ann")
    assert len(triggers) == MAX_ENTRIES_PER_USER + 19
    kept = stored_state(h.promo.state.get("ann"))["r"]
    assert len(kept) == MAX_ENTRIES_PER_USER
    assert h.promo.audit("ann", triggers[0]["idempotency_key"]) is None    # pruned with it
    assert h.promo.audit("ann", triggers[-1]["idempotency_key"]) is not None


def test_audit_is_erased_with_the_user(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.models.restore()
    eraser = Eraser(h.engine, h.profiles, h.models, h.promo, h.anomalies)
    feed(h, "gone", 3)
    feed(h, "kept", 3)
    gone, kept = sent(h, "gone")[0], sent(h, "kept")[0]
    assert h.promo.audit("gone", gone["idempotency_key"]) is not None
    request = orjson.dumps(erasure_record("gone", source="test", request_id="req-gone"))
    (message,) = records(h.names.erasure, 0, [request], keys=[b"gone"])
    asyncio.run(eraser.on_request(message))
    assert h.promo.audit("gone", gone["idempotency_key"]) is None
    assert h.promo.state.get("gone") is None
    assert h.promo.audit("kept", kept["idempotency_key"]) is not None
