"""`livepulse backfill`: a recording older than the age bound re-processed with its own event
times, into topics, group and state of its own (a real worker and the CLI on both brokers)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.backfill import backfill_settings
from streams.admin import list_topics
from streams.contracts import CLICK_EVENT
from streams.ingest import Validator, now_ms
from streams.topics import topic_names
from tests.conftest import REPO, unique_settings
from tests.integration.test_pipeline import read_topic
from tests.integration.test_producers_cli import count_records

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)
DAY_MS = 86_400_000


def test_month_old_recording_is_backfilled_with_its_own_times(broker: Any,
                                                             tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker)
    recorded_at = now_ms() - 30 * DAY_MS  # far past the default age bound (7 days)
    events = [{"event_id": f"bf-{i}", "type": "view", "ts": recorded_at + i * 1000,
               "user_id": f"bf-u{i % 3}", "session_id": f"bf-s{i % 3}", "item_id": f"i{i % 5}"}
              for i in range(30)]
    stale = Validator.from_settings(CLICK_EVENT, settings).decode(orjson.dumps(events[0]),
                                                                 now_ms())
    assert getattr(stale, "error_class", None) == "ts_past"  # what a normal worker would do
    recording = tmp_path / "recorded.jsonl"
    recording.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\nnot json\n")

    out = subprocess.run([sys.executable, "-m", "agents.cli", "backfill", str(recording),
                          "--name", "t1"], cwd=REPO, env={**os.environ, **settings.to_env()},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["sent"], summary["failed"], summary["consumed"]) == (31, 0, 31), summary
    assert summary["complete"] and summary["dead_letters_by_reason"] == {"malformed_json": 1}

    own = topic_names(backfill_settings(settings, "t1"))
    assert summary["topic_prefix"] == own.prefix
    recommendations = asyncio.run(read_topic(broker.bootstrap, own.recommendations,
                                             until=lambda r: len(r) >= 30, timeout=60))
    bodies = [orjson.loads(r.value) for r in recommendations]
    assert sorted(b["request_id"] for b in bodies) == sorted(e["event_id"] for e in events)
    assert asyncio.run(count_records(broker.bootstrap, own.clicks)) == 31
    # production's topics were not even created
    created = asyncio.run(list_topics(broker.bootstrap))
    assert not [t for t in created if t.startswith(f"{settings.topic_prefix}.")]


def test_live_recording_backfill_waits_for_the_user_hop(broker: Any, tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker)
    recorded_at = now_ms() - 10 * DAY_MS
    kinds = ["join", "like", "comment", "product_pin", "like"]
    events = [{"event_id": f"bl-{i}", "type": kinds[i % 5], "ts": recorded_at + i * 500,
               "room_id": f"bl-r{i % 2}", "user_id": f"bl-u{i % 4}", "text": "多少钱?",
               "item_id": "i1"} for i in range(20)]
    recording = tmp_path / "live.jsonl"
    recording.write_bytes(b"\n".join(orjson.dumps(e) for e in events))

    out = subprocess.run([sys.executable, "-m", "agents.cli", "backfill", str(recording),
                          "--name", "live", "--topic", "live"], cwd=REPO,
                         env={**os.environ, **settings.to_env()}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["sent"], summary["consumed"], summary["complete"]) == (20, 20, True)
    assert summary["dead_letters_by_reason"] == {}
    own = topic_names(backfill_settings(settings, "live"))
    # every event but the 4 product pins reached the user pipeline, with its recorded time
    forwarded = asyncio.run(read_topic(broker.bootstrap, own.user_activity,
                                       until=lambda r: sum(len(orjson.loads(x.value))
                                                           for x in r) >= 16, timeout=60))
    times = sorted(e["ts"] for r in forwarded for e in orjson.loads(r.value))
    assert times == sorted(e["ts"] for e in events if e["type"] != "product_pin")
