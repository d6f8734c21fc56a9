"""Audiences with a real worker on the real (embedded) broker: a file audience and one
defined at run time on the audiences topic; enter/exit records on audience-changes follow
the conditions and consent; /api/audiences answers; Redis holds the members' sets."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from streams.contracts import AUDIENCE_CHANGE, check_contract
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, wait_for

pytestmark = pytest.mark.integration

AUDIENCES = """
audiences:
  - id: gift-givers
    when:
      - {field: profile.tags, op: contains, value: gifter}
"""
LIKERS = {"id": "likers", "version": 1, "name": "Likers",
          "when": [{"field": "profile.live.likes", "op": ">=", "value": 2}]}


def live(event_id: str, kind: str, user: str, ts: int, **extra: Any) -> tuple[str, bytes,
                                                                               bytes]:
    body = {"event_id": event_id, "type": kind, "ts": ts, "room_id": "room-1",
            "user_id": user, **extra}
    return "", b"room-1", orjson.dumps(body)


def test_audience_changes_follow_conditions_and_consent(broker: Any, worker_factory: Any,
                                                        tmp_path: Path) -> None:
    audiences_file = tmp_path / "audiences.yaml"
    audiences_file.write_text(AUDIENCES)
    settings = unique_settings(tmp_path, broker, audiences_file=str(audiences_file))
    names = topic_names(settings)
    worker = worker_factory(settings)
    url = worker.web_url
    # an audience defined at run time, and a user who opted out before any event
    asyncio.run(produce(broker.bootstrap, [
        (names.audiences, b"likers", orjson.dumps(LIKERS)),
        (names.consent, b"quiet", orjson.dumps({"user_id": "quiet", "consent": False,
                                                 "ts": now_ms()}))]))
    wait_for(lambda: {a["id"]: a["source"] for a in get_json(f"{url}/api/audiences")[1].get(
        "audiences", [])} == {"gift-givers": "file", "likers": "topic"},
        what="the runtime audience read from the topic")
    wait_for(lambda: get_json(f"{url}/api/users/quiet/profile")[1].get("consent") is False,
             what="the opt-out folded in")

    base = now_ms()
    events = [live("j1", "join", "giver", base), live("j2", "join", "quiet", base),
              live("j3", "join", "liker", base), live("l1", "like", "liker", base + 1),
              live("l2", "like", "liker", base + 2)]
    for i in range(3):
        events += [live(f"g{i}", "gift", "giver", base + 10 + i, amount=52.0),
                   live(f"q{i}", "gift", "quiet", base + 10 + i, amount=52.0)]
    asyncio.run(produce(broker.bootstrap, [(names.live_events, k, v) for _, k, v in events]))

    records = asyncio.run(read_topic(broker.bootstrap, names.audience_changes,
                                     until=lambda r: len(r) >= 2, timeout=60))
    changes = [orjson.loads(r.value) for r in records]
    for change in changes:
        check_contract(AUDIENCE_CHANGE, change)
    assert sorted((c["type"], c["audience_id"], c["user_id"], c["reason"])
                  for c in changes) == [("enter", "gift-givers", "giver", "conditions"),
                                        ("enter", "likers", "liker", "conditions")], \
        worker.log()[-3000:]
    assert all(r.key == orjson.loads(r.value)["user_id"].encode() for r in records)

    status, body = get_json(f"{url}/api/audiences/gift-givers")
    assert status == 200 and body["size"] == 1, body
    assert len(body["sample"]) == 1 and re.fullmatch(r"[0-9a-f]{32}", body["sample"][0])
    assert body["sample"][0] != "giver" and sum(c["members"] for c in body["composition"]) == 1
    assert get_json(f"{url}/api/audiences/nope")[0] == 404
    profile = get_json(f"{url}/api/users/giver/profile")[1]
    # a handful of profiles: the segments are still warming up (256 profiles seed them)
    assert profile["audiences"] == ["gift-givers"] and profile["segment"] is None
    assert get_json(f"{url}/api/audiences")[1]["segments"] == []

    client = redis.Redis.from_url(settings.redis_url)
    key = f"{settings.redis_namespace}:audience:gift-givers"
    wait_for(lambda: client.smembers(key) == {b"giver"}, timeout=15, what="the Redis set")

    # the giver opts out: an exit record, the set empties, the API counts nobody
    asyncio.run(produce(broker.bootstrap, [(names.consent, b"giver", orjson.dumps(
        {"user_id": "giver", "consent": False, "ts": now_ms()}))]))
    records = asyncio.run(read_topic(broker.bootstrap, names.audience_changes,
                                     until=lambda r: len(r) >= 3, timeout=60))
    last = orjson.loads(records[-1].value)
    assert (last["type"], last["audience_id"], last["user_id"], last["reason"]) == (
        "exit", "gift-givers", "giver", "consent")
    wait_for(lambda: client.smembers(key) == set(), timeout=15, what="the member removed")
    assert get_json(f"{url}/api/audiences/gift-givers")[1]["size"] == 0
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
