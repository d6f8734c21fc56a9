"""Online models in the real worker: recommendations on the topic and the API, prequential
metrics, and a restart that resumes from the signed snapshot (and refuses a tampered one)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.models import snapshot_dir
from streams.contracts import RECOMMENDATION, check_contract
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, metric, wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)


def session_clicks(sessions: int, length: int) -> list[dict[str, Any]]:
    """Sessions walking short item chains, so co-visitation has something to learn."""
    out = []
    start = now_ms() - 60_000
    for s in range(sessions):
        for step in range(length):
            item = f"item-{(s % 7) * 10 + step}"
            out.append({"event_id": f"c{s}-{step}", "type": "click", "ts": start + s * 10 + step,
                        "user_id": f"user-{s % 25}", "session_id": f"sess-{s}",
                        "item_id": item, "category": f"cat-{s % 3}", "price": 20.0 + step})
    return out


def test_recommendations_flow_and_restart_resumes_from_snapshot(broker: Any, worker_factory: Any,
                                                                tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker, snapshot_interval_s=1.0)
    names = topic_names(settings)
    worker = worker_factory(settings, "first")
    clicks = session_clicks(60, 5)
    asyncio.run(produce(broker.bootstrap, [(names.clicks, c["user_id"].encode(), orjson.dumps(c))
                                           for c in clicks]))
    recs = asyncio.run(read_topic(broker.bootstrap, names.recommendations,
                                  until=lambda r: len(r) >= len(clicks), timeout=60))
    assert len(recs) == len(clicks)  # one top-K per item event
    for rec in recs[-20:]:
        body = check_contract(RECOMMENDATION, orjson.loads(rec.value))
        assert 0 < len(body["items"]) <= settings.recs_top_k
        assert all(item["reasons"] for item in body["items"])
    def learned_everything() -> dict[str, Any] | None:
        report = get_json(f"{worker.web_url}/api/models")[1]
        return report if report["recommender"]["learned"] == len(clicks) else None

    report = wait_for(learned_everything, what="every click learned")
    assert report["recommender"]["hr@20"] is not None and report["recommender"]["hr@20"] > 0
    status, on_demand = get_json(f"{worker.web_url}/api/users/user-3/recommendations")
    assert status == 200 and on_demand["items"] and on_demand["known_user"]
    wait_for(lambda: metric(worker.web_url, "livepulse_model_examples") > 0, what="metrics")
    assert worker.stop() == 0, worker.log()[-3000:]  # the shutdown writes a final snapshot

    again = worker_factory(settings, "second")
    restored = get_json(f"{again.web_url}/api/models")[1]
    assert "recommender" in restored["restored"], again.log()[-3000:]
    assert restored["recommender"]["learned"] == len(clicks)  # not cold: nothing new arrived
    assert restored["restored"]["recommender"]["offsets"]
    def warm_recommendations() -> dict[str, Any] | None:
        # 503 while the restarted worker still recovers the user's partition: wait
        status, body = get_json(f"{again.web_url}/api/users/user-3/recommendations")
        return body if status == 200 else None

    warm = wait_for(warm_recommendations, what="recommendations served after the restart")
    assert warm["items"]
    assert again.stop() == 0

    for path in snapshot_dir(settings).rglob("*"):
        if path.is_file() and "recommender" in path.name:
            blob = bytearray(path.read_bytes())
            blob[len(blob) // 2] ^= 0xFF  # flip one bit in the middle of the payload
            path.write_bytes(bytes(blob))
    third = worker_factory(settings, "third")
    refused = get_json(f"{third.web_url}/api/models")[1]["restored"]["recommender"]
    assert "refused" in refused
    assert "refusing recommender snapshot" in third.log()
    assert third.stop() == 0
