"""The audience portrait on the real worker and (embedded) broker: viewers join, buy, follow
and leave for another room; the room's insight carries their portrait (the summaries made
the room -> user-activity -> user pipeline -> room-audience -> room round trip)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.contracts import ROOM_INSIGHT, check_contract
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import latest_by_room, produce, read_topic

pytestmark = pytest.mark.integration


def test_room_insight_carries_the_audience_portrait(broker, worker_factory, tmp_path: Path):
    settings = unique_settings(tmp_path, broker)
    names = topic_names(settings)
    worker = worker_factory(settings)
    t = now_ms()
    catalog = {"item_id": "i1", "ts": t, "category": "beauty", "price": 129.9,
               "in_stock": True, "brand": "Lumaki"}
    events: list[dict[str, Any]] = []

    def live(kind: str, room: str, user: str, dt: int, **extra: Any) -> None:
        events.append({"event_id": f"pe{dt}-{user}-{kind}", "type": kind, "ts": t + dt,
                       "room_id": room, "user_id": user, **extra})

    for i, user in enumerate(("u1", "u2", "u3")):
        live("join", "room-a", user, i)
    live("product_click", "room-a", "u1", 1_000, item_id="i1")
    live("purchase", "room-a", "u1", 2_000, item_id="i1", amount=129.9)
    live("follow", "room-a", "u2", 3_000)
    live("leave", "room-a", "u3", 4_000)
    asyncio.run(produce(broker.bootstrap, [(names.catalog, b"i1", orjson.dumps(catalog))]))
    asyncio.run(asyncio.sleep(1.0))  # the catalog first: the click's category comes from it
    asyncio.run(produce(broker.bootstrap, [(names.live_events, e["room_id"].encode(),
                                            orjson.dumps(e)) for e in events]))

    def profiled(recs: list[Any]) -> bool:
        portrait = latest_by_room(recs).get("room-a", {}).get("portrait") or {}
        return portrait.get("profiled") == 2

    # u3 joins room-b once room-a's events made the round trip (seconds later, as a viewer
    # would: a join handled before the leave loses the move, see came_from_room)
    asyncio.run(read_topic(broker.bootstrap, names.room_insights, until=profiled, timeout=60))
    events.clear()
    live("join", "room-b", "u3", 5_000)
    asyncio.run(produce(broker.bootstrap, [(names.live_events, b"room-b",
                                            orjson.dumps(events[0]))]))

    def done(recs: list[Any]) -> bool:
        portrait = latest_by_room(recs).get("room-a", {}).get("portrait") or {}
        return portrait.get("profiled") == 2 and bool(portrait.get("next_rooms")) \
            and bool(portrait.get("top_categories"))

    insights = asyncio.run(read_topic(broker.bootstrap, names.room_insights, until=done,
                                      timeout=60))
    room_a = latest_by_room(insights)["room-a"]
    check_contract(ROOM_INSIGHT, room_a)
    portrait = room_a["portrait"]
    assert portrait["profiled"] == 2, worker.log()[-3000:]
    assert portrait["next_rooms"] == [{"room_id": "room-b", "count": 1, "share": 1.0}]
    assert portrait["top_categories"][0]["key"] == "beauty"
    assert portrait["viewer_to_buyer"]["buyers"] == 1
    assert portrait["follows"]["per_min"] + portrait["follows"]["prev_min"] == 1
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()


def test_portrait_fills_on_both_of_two_workers(broker, worker_factory, tmp_path: Path):
    """Two workers split the partitions: a viewer's summary crosses from the worker holding
    the user (user pipeline) to the one holding the room (``room-audience`` partition p goes
    with ``live-events`` partition p), and every room's portrait counts its viewers."""
    from streams.broker import free_port
    from streams.outputs import partition_for
    from tests.integration.test_faults import assigned
    from tests.integration.test_serving import wait_for

    settings = unique_settings(tmp_path, broker, partitions=4)
    names = topic_names(settings)
    first = worker_factory(settings, "first")
    everything = assigned(first)
    second = worker_factory(settings.with_overrides(
        web_port=free_port(), data_dir=str(tmp_path / "data-2")), "second")
    wait_for(lambda: 0 < assigned(first) < everything and assigned(second) > 0,
             timeout=120, what="partitions split between the two workers")
    rooms = [f"room-{i}" for i in range(8)]
    t = now_ms()
    events = [{"event_id": f"pp-{room}-{u}", "type": "join", "ts": t + i, "room_id": room,
               "user_id": f"{room}-viewer-{u}"}
              for i, (room, u) in enumerate((r, u) for r in rooms for u in range(3))]
    asyncio.run(produce(broker.bootstrap, [(names.live_events, e["room_id"].encode(),
                                            orjson.dumps(e)) for e in events]))

    def complete(recs: list[Any]) -> bool:
        latest = latest_by_room(recs)
        return all((latest.get(r, {}).get("portrait") or {}).get("profiled") == 3
                   for r in rooms)

    insights = latest_by_room(asyncio.run(read_topic(
        broker.bootstrap, names.room_insights, until=complete, timeout=90)))
    assert all(insights[r]["portrait"]["profiled"] == 3 for r in rooms)
    # rooms and viewers on every partition, so on both workers (each holds some)
    assert {partition_for(r.encode(), 4) for r in rooms} == {0, 1, 2, 3}
    assert {partition_for(e["user_id"].encode(), 4) for e in events} == {0, 1, 2, 3}
    assert 0 < assigned(first) < everything and assigned(second) > 0
    for worker in (first, second):
        assert "Traceback" not in worker.log(), worker.log()[-3000:]
