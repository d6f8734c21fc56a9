"""`livepulse dead-letters`: list rejected input by reason and source, redrive it after a
fix, and redrive nothing twice (a real worker and the CLI on both brokers)."""

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

from config.settings import Settings
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import REPO, unique_settings
from tests.integration.test_pipeline import produce
from tests.integration.test_producers_cli import count_records
from tests.integration.test_serving import get_json, wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)


def dead_letters(settings: Settings, *args: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "agents.cli", "dead-letters", *args],
                         cwd=REPO, env={**os.environ, **settings.to_env()},
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def search(n: int, user: str, query: str) -> dict[str, Any]:
    return {"event_id": f"dl-{user}-{n}", "type": "search", "ts": now_ms(), "user_id": user,
            "session_id": f"s-{user}", "query": query}


def events_of(worker: Any, user: str) -> int:
    status, body = get_json(f"{worker.web_url}/api/users/{user}/profile")
    return body["events"] if status == 200 else 0


def test_oversize_events_redriven_after_the_limit_is_raised_and_only_once(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    # a limit too small for one of the three searches: it is dead-lettered, whole (< 4 KiB)
    strict = unique_settings(tmp_path, broker, max_event_bytes=300)
    topic = topic_names(strict).clicks
    worker = worker_factory(strict, "strict")
    records = [search(0, "dl-u", "shoes"), search(1, "dl-u", "x" * 400),
               search(2, "dl-u", "boots")]
    asyncio.run(produce(broker.bootstrap, [(topic, b"dl-u", orjson.dumps(r)) for r in records]))
    wait_for(lambda: events_of(worker, "dl-u") == 2, timeout=60, what="two good events")
    listed = wait_for(lambda: (x := dead_letters(strict, "list", "--reason", "oversize"))
                      ["selected"] == 1 and x, timeout=60, what="the oversize dead letter")
    letter = listed["letters"][0]
    assert listed["by_reason"] == {"oversize": 1}
    assert listed["by_source"] == {topic: 1}
    assert letter["source"].startswith(f"{topic}[") and not letter["redriven"]
    assert dead_letters(strict, "list", "--reason", "wrong_type")["selected"] == 0
    assert worker.stop() == 0, worker.log()[-3000:]

    # the fix: a larger limit; the same group and state go on
    fixed = strict.with_overrides(max_event_bytes=65536)
    worker = worker_factory(fixed, "fixed")
    dry = dead_letters(fixed, "redrive", "--reason", "oversize", "--dry-run")
    assert (dry["would_redrive"], dry["redriven"]) == (1, 0)
    first = dead_letters(fixed, "redrive", "--reason", "oversize")
    assert (first["redriven"], first["already_redriven"], first["refused"]) == (1, 0, [])
    wait_for(lambda: events_of(worker, "dl-u") == 3, timeout=60,
             what="the redriven event in the profile")

    again = dead_letters(fixed, "redrive", "--reason", "oversize")
    assert (again["redriven"], again["already_redriven"]) == (0, 1)
    assert asyncio.run(count_records(broker.bootstrap, topic)) == 4  # 3 sent + 1 redriven
    assert dead_letters(fixed, "list")["letters"][0]["redriven"] is True
    assert worker.stop() == 0, worker.log()[-3000:]


def test_redrive_without_a_choice_is_refused(broker: Any, tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker)
    out = subprocess.run([sys.executable, "-m", "agents.cli", "dead-letters", "redrive"],
                         cwd=REPO, env={**os.environ, **settings.to_env()},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--all" in out.stderr
