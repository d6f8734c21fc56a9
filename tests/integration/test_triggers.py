"""Promo triggers with real workers on the real (embedded) broker.

* Triggers flow from live events through both pipelines; caps hold; the holdout is exactly
  the deterministic one and gets no trigger; an opted-out user (consent topic) gets nothing;
  purchases convert triggers; the API and metrics report it.
* A campaign pushed with ``livepulse campaigns push`` takes effect at run time (and a
  disabled version stops it); a worker killed before committing redelivers its input and
  the triggers come again with the same idempotency keys.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.promo.campaigns import CampaignBook
from streams.broker import free_port
from streams.contracts import ATTRIBUTION, PROMO_TRIGGER, check_contract
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import REPO, start_worker, unique_settings, wait_ready
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)

CART_CAMPAIGN = """
campaigns:
  - id: cart-live
    on: [add_to_cart]
    when:
      - {field: event.source, op: "==", value: live, reason: live_cart}
    action: coupon
    offer: {code: T1}
    caps: [{max: 2, per: 1h}]
    holdout: 0.5
    cost_per_trigger: 1.0
    attribution_window: 1h
"""
MARKER_CAMPAIGN = """
campaigns:
  - id: marker
    on: [follow]
    action: ad
    holdout: 0
"""
FLASH = """
campaigns:
  - id: flash
    version: {version}
    enabled: {enabled}
    on: [like]
    action: push
    holdout: 0
"""


def live_event(event_id: str, kind: str, room: str, user: str, ts: int,
               **extra: Any) -> tuple[str, bytes, bytes]:
    body = {"event_id": event_id, "type": kind, "ts": ts, "room_id": room, "user_id": user,
            **extra}
    return room, room.encode(), orjson.dumps(body)


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def metrics_text(web_url: str) -> str:
    with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def metric_value(web_url: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in metrics_text(web_url).splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agents.cli", *args], cwd=REPO,
                          env={**os.environ, **settings.to_env()}, capture_output=True,
                          text=True, timeout=120)


def test_triggers_caps_holdout_consent_and_attribution(broker: Any, worker_factory: Any,
                                                       tmp_path: Path) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(CART_CAMPAIGN)
    settings = unique_settings(tmp_path, broker, campaigns_file=str(campaigns_file))
    names = topic_names(settings)
    worker = worker_factory(settings)
    users = [f"user-{i}" for i in range(20)]
    campaign = CampaignBook.load(campaigns_file).get("cart-live")
    held = {u for u in users if campaign.in_holdout(u)}
    treated = [u for u in users if u not in held]
    assert held and treated

    consent = [(names.consent, b"quiet-1", orjson.dumps(
        {"user_id": "quiet-1", "consent": False, "ts": now_ms(), "source": "settings"})),
        (names.consent, b"other-key", orjson.dumps(   # wrong key: dead-lettered
            {"user_id": "quiet-2", "consent": False, "ts": now_ms()}))]
    asyncio.run(produce(broker.bootstrap, consent))
    wait_for(lambda: get_json(f"{worker.web_url}/api/users/quiet-1/profile")[1].get("consent")
             is False, what="opt-out folded into the profile")

    base = now_ms()
    records = []
    for n, user in enumerate([*users, "quiet-1"]):
        room = f"room-{n % 2}"
        for i in range(4):
            records.append(live_event(f"{user}-cart-{i}", "add_to_cart", room, user,
                                      base + i * 10, item_id="item-1"))
        records.append(live_event(f"{user}-buy", "purchase", room, user, base + 100,
                                  item_id="item-1", amount=30.0))
    # a producer retry: the same record again (same event_id, another offset)
    records.append(records[5 * users.index(treated[0])])
    asyncio.run(produce(broker.bootstrap, [(names.live_events, k, v) for _, k, v in records]))

    # the retry is skipped by its room (same event id): it must neither count nor re-trigger
    wait_for(lambda: metric_value(worker.web_url, "livepulse_duplicate_events_total",
                                  pipeline="room")
             == 1, timeout=60, what="the producer retry skipped by its room")
    # two triggers each (cap), one conversion each
    expected_records = 2 * len(users) + len(users)
    attribution = values(asyncio.run(read_topic(
        broker.bootstrap, names.attribution, until=lambda r: len(r) >= expected_records,
        timeout=60)))
    for record in attribution:
        check_contract(ATTRIBUTION, record)
    assert len(attribution) == expected_records, worker.log()[-3000:]
    assert len({r["record_id"] for r in attribution}) == expected_records  # no repeats
    trig = [r for r in attribution if r["kind"] == "trigger"]
    assert Counter(r["user_id"] for r in trig) == dict.fromkeys(users, 2)
    assert {r["user_id"] for r in trig if r["group"] == "holdout"} == held
    conversions = [r for r in attribution if r["kind"] == "conversion"]
    assert sorted(r["user_id"] for r in conversions) == sorted(users)
    assert all(r["value"] == 30.0 and r["trigger_ts"] == base + 10 for r in conversions)

    triggers = values(asyncio.run(read_topic(
        broker.bootstrap, names.promo_triggers, until=lambda r: len(r) >= 2 * len(treated),
        timeout=30)))
    assert len({t["idempotency_key"] for t in triggers}) == len(triggers)  # each sent once
    assert Counter(t["user_id"] for t in triggers) == dict.fromkeys(treated, 2)
    for t in triggers:
        check_contract(PROMO_TRIGGER, t)
        assert t["campaign_id"] == "cart-live" and t["reasons"] == ["live_cart"]
        assert t["source"]["topic"] == names.live_events and t["ts"] >= t["event_ts"]
        assert t["expires_at"] == t["event_ts"] + 15 * 60_000

    def report() -> dict[str, Any]:
        body = get_json(f"{worker.web_url}/api/campaigns/cart-live")[1]
        stats = body.get("stats", {})
        return body if stats.get("conversions", {}).get("treatment") == len(treated) and \
            stats.get("conversions", {}).get("holdout") == len(held) else {}

    body = wait_for(report, timeout=30, what="campaign figures in the API")
    stats = body["stats"]
    assert (stats["sent"], stats["holdout"]) == (2 * len(treated), 2 * len(held))
    assert stats["conversion_rate"] == {"treatment": 0.5, "holdout": 0.5}
    assert stats["uplift"] == 0.0 and stats["uplift_ci95"][0] < 0 < stats["uplift_ci95"][1]
    assert stats["cost"] == 2.0 * len(treated) and body["source"] == "file"
    assert get_json(f"{worker.web_url}/api/campaigns/nope")[0] == 404

    url = worker.web_url
    assert metric_value(url, "livepulse_triggers_total", outcome="sent") == 2 * len(treated)
    assert metric_value(url, "livepulse_triggers_total", outcome="holdout") == 2 * len(held)
    assert metric_value(url, "livepulse_triggers_total", outcome="capped") == 2 * len(users)
    assert metric_value(url, "livepulse_triggers_total", outcome="no_consent") == 4
    assert metric_value(url, "livepulse_triggers_total", outcome="duplicate") == 0
    assert metric_value(url, "livepulse_trigger_conversions_total") == len(users)
    wait_for(lambda: 'livepulse_campaign_uplift{campaign="cart-live"} 0.0' in metrics_text(url),
             timeout=15, what="uplift gauge")
    letters = values(asyncio.run(read_topic(broker.bootstrap, names.dead_letter,
                                            until=lambda r: len(r) >= 1, timeout=15)))
    assert [(d["source_topic"], d["error_class"]) for d in letters] == [
        (names.consent, "key_mismatch")]
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()


def test_runtime_campaigns_and_redelivery_keep_idempotency_keys(broker: Any, worker_factory: Any,
                                                                tmp_path: Path) -> None:
    campaigns_file = tmp_path / "campaigns.yaml"
    campaigns_file.write_text(MARKER_CAMPAIGN)
    # nothing committed before the kill below: the next worker gets the same input again
    settings = unique_settings(tmp_path, broker, campaigns_file=str(campaigns_file),
                               commit_interval_s=600.0)
    names = topic_names(settings)
    first = worker_factory(settings, "first")

    flash = tmp_path / "flash.yaml"
    flash.write_text(FLASH.format(version=1, enabled="true"))
    pushed = cli(settings, "campaigns", "push", str(flash))
    assert pushed.returncode == 0, pushed.stderr
    assert orjson.loads(pushed.stdout.splitlines()[-1])["pushed"] == [
        {"id": "flash", "version": 1}]
    wait_for(lambda: get_json(f"{first.web_url}/api/campaigns/flash")[1].get("source")
             == "topic", what="pushed campaign in force")

    base = now_ms()
    phase1 = [live_event(f"like-{i}", "like", "room-0", f"fan-{i}", base + i) for i in range(5)]
    phase1 += [live_event(f"follow-{i}", "follow", "room-1", f"fol-{i}", base + i)
               for i in range(3)]
    asyncio.run(produce(broker.bootstrap, [(names.live_events, k, v) for _, k, v in phase1]))
    before = values(asyncio.run(read_topic(broker.bootstrap, names.promo_triggers,
                                           until=lambda r: len(r) >= 8, timeout=60)))
    assert Counter(t["campaign_id"] for t in before) == {"flash": 5, "marker": 3}

    flash.write_text(FLASH.format(version=1, enabled="false"))
    same = cli(settings, "campaigns", "push", str(flash))  # same version: replaces
    assert same.returncode == 0, same.stderr
    flash.write_text(FLASH.format(version=2, enabled="false"))
    assert cli(settings, "campaigns", "push", str(flash)).returncode == 0
    flash.write_text(FLASH.format(version=1, enabled="true"))
    stale = cli(settings, "campaigns", "push", str(flash))
    assert stale.returncode == 1 and "raise `version`" in stale.stderr
    wait_for(lambda: get_json(f"{first.web_url}/api/campaigns/flash")[1].get("status")
             == "disabled", what="disabled version in force")
    listed = orjson.loads(cli(settings, "campaigns", "list").stdout.splitlines()[-1])
    assert {(c["id"], c["version"], c["status"]) for c in listed["campaigns"]} == {
        ("flash", 2, "disabled"), ("marker", 1, "active")}

    phase2 = [live_event(f"like-b{i}", "like", "room-0", f"fan-b{i}", base + 50 + i)
              for i in range(5)]
    phase2.append(live_event("follow-b", "follow", "room-0", "fol-b", base + 60))
    asyncio.run(produce(broker.bootstrap, [(names.live_events, k, v) for _, k, v in phase2]))
    after = values(asyncio.run(read_topic(
        broker.bootstrap, names.promo_triggers,
        until=lambda r: any(orjson.loads(x.value)["user_id"] == "fol-b" for x in r),
        timeout=60)))
    assert Counter(t["campaign_id"] for t in after) == {"flash": 5, "marker": 4}

    first.process.kill()  # no commit, no clean leave: at-least-once redelivery follows
    first.process.wait(10)
    second = start_worker(settings.with_overrides(web_port=free_port()), tmp_path / "second.log")
    try:
        wait_ready(second, timeout=180)
        markers = {t["idempotency_key"] for t in after if t["campaign_id"] == "marker"}

        def every_marker_twice(found: list[dict[str, Any]]) -> bool:
            seen = Counter(t["idempotency_key"] for t in found)
            return all(seen[key] >= 2 for key in markers)

        again = values(asyncio.run(read_topic(
            broker.bootstrap, names.promo_triggers,
            until=lambda recs: every_marker_twice(values(recs)), timeout=90)))
        assert every_marker_twice(again), second.log()[-3000:]
        originals = {t["idempotency_key"]: t for t in after}
        redelivered = Counter(t["idempotency_key"] for t in again) - Counter(list(originals))
        # flash is disabled now, so only the marker triggers come again, with the same keys
        # and the same content
        assert set(redelivered) == markers
        for t in again:
            original = originals[t["idempotency_key"]]
            assert {k: v for k, v in t.items() if k != "ts"} == {
                k: v for k, v in original.items() if k != "ts"}
        assert second.stop() == 0, second.log()[-3000:]
        assert not re.search(r"^Traceback", second.log(), re.MULTILINE)
    finally:
        if second.process.poll() is None:
            second.process.kill()
