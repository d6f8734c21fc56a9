"""Anomaly incidents with a real worker on the real (embedded) broker.

The simulator runs in this process at the demo's default rate, with a bot click flood and
a viewer drop injected through ``run_simulation`` (the producer path ``livepulse demo``
uses). On ``livepulse.anomalies`` the flood (1-3 bots, coalesced) and the dropped room must
each yield exactly one ``open`` and one ``resolved`` record, contract-valid, and the normal
traffic around them (other rooms, human users, the worker itself) none.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from agents.anomalies.incidents import member_ids
from streams.contracts import ANOMALY, check_contract, json_schema
from streams.simulator import Simulator, run_simulation
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import read_topic

pytestmark = pytest.mark.integration

DURATION_S = 90.0
BOT_AT_S, DROP_AT_S, SPAN_S = 25.0, 45.0, 8.0
DROP_ROOM = "room-2"


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_bot_flood_and_viewer_drop_each_yield_one_incident_and_normal_traffic_none(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker)
    names = topic_names(settings)
    worker = worker_factory(settings)
    sim = Simulator(seed=7, rooms=6, users=5000, items=2000, bad_rate=0.0)
    stats = asyncio.run(run_simulation(
        broker.bootstrap, names, sim, rate=300.0, duration=DURATION_S,
        scenarios=[(BOT_AT_S, "bot_click_flood", None, SPAN_S),
                   (DROP_AT_S, "viewer_drop", DROP_ROOM, SPAN_S)]))
    assert stats.failed == 0
    bot_run, drop_run = stats.scenarios

    def settled(records: list[Any]) -> bool:
        statuses: dict[str, list[str]] = {}
        for rec in records:
            body = orjson.loads(rec.value)
            statuses.setdefault(body["anomaly_id"], []).append(body["status"])
        rooms = {i.split(":")[1] for i in statuses if i.startswith("room:")}
        bots = {i for i in statuses if i.startswith("user:bot-")}
        return (DROP_ROOM in rooms and bool(bots)
                and all(s.count("resolved") for s in statuses.values()))

    raw = asyncio.run(read_topic(broker.bootstrap, names.anomalies, until=settled, timeout=60))
    schema = json_schema(ANOMALY)
    records = []
    for rec in raw:
        body = orjson.loads(rec.value)
        check_contract(ANOMALY, body)
        jsonschema.validate(body, schema)
        assert rec.key.decode() == body["scope_id"]
        records.append(body)
    log = worker.log()
    by_id: dict[str, list[dict[str, Any]]] = {}
    for body in records:
        by_id.setdefault(body["anomaly_id"], []).append(body)
    summary = {i: [(r["status"], r["metric"]) for r in rs] for i, rs in by_id.items()}

    # exactly one open and one resolved record per incident
    assert all([r["status"] for r in rs] == ["open", "resolved"] for rs in by_id.values()), summary
    incidents = [rs[0] for rs in by_id.values()]
    rooms = [i for i in incidents if i["scope"] == "room"]
    users = [i for i in incidents if i["scope"] == "user"]
    # the viewer drop: one incident of the dropped room, first seen while it ran
    assert [i["scope_id"] for i in rooms] == [DROP_ROOM], summary
    assert drop_run.start_ms - 2_000 <= rooms[0]["first_seen"] <= drop_run.end_ms, summary
    assert rooms[0]["metric"] in ("leave_rate", "viewers")
    # the bot flood (the simulator starts 1-3 bots): one incident, named after a bot; its
    # resolved record names every bot that joined it and no human
    assert len(users) == 1 and users[0]["scope_id"].startswith("bot-"), summary
    assert bot_run.start_ms - 2_000 <= users[0]["first_seen"] <= bot_run.end_ms, summary
    flood = by_id[users[0]["anomaly_id"]][-1]
    assert all(m.startswith("bot-") for m in member_ids(flood["explanation"])), flood
    # the worker itself and every other room and user: nothing
    assert not [i for i in incidents if i["scope"] == "system"], summary

    # the same incidents are served by the API, the room's insight and the metrics
    served = get_json(f"{worker.web_url}/api/anomalies")
    assert served["open"] == []
    assert {a["anomaly_id"] for a in served["resolved"]} == set(by_id)
    alerts = get_json(f"{worker.web_url}/api/rooms/{DROP_ROOM}/insights")["alerts"]
    assert [(a["status"], a["anomaly_id"]) for a in alerts] == [
        ("resolved", rooms[0]["anomaly_id"])]
    assert alerts[0]["en"].startswith("Resolved after") and alerts[0]["zh"].startswith("已恢复")
    with urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    opened = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("livepulse_anomalies_total{"))
    assert opened == len(by_id)
    assert 'livepulse_anomalies_open{scope="room"} 0.0' in metrics
    only_rooms = get_json(f"{worker.web_url}/api/anomalies?scope=room")["resolved"]
    assert [a["anomaly_id"] for a in only_rooms] == [rooms[0]["anomaly_id"]]
    assert worker.stop() == 0, log[-3000:]
    assert "Traceback" not in worker.log()
