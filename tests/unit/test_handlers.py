"""The room and user pipelines' batch handlers on the in-memory harness (agents.testing):
one record list in, state and output batches out, no broker."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents.engine import Engine
from agents.state import current_partition, in_partition
from agents.stats import EngineMetrics
from agents.testing import Harness
from config.settings import Settings
from streams.topics import topic_names

_ids = itertools.count()


def live(kind: str, room: str = "r1", user: str = "u1", **extra: Any) -> bytes:
    return orjson.dumps({"event_id": f"e{next(_ids)}", "type": kind, "ts": Harness.now_ms(),
                         "room_id": room, "user_id": user, **extra})


def click(kind: str, user: str = "u1", item: str | None = "i1", **extra: Any) -> bytes:
    body = {"event_id": f"c{next(_ids)}", "type": kind, "ts": Harness.now_ms(),
            "user_id": user, "session_id": f"s-{user}", **extra}
    if item is not None:
        body["item_id"] = item
    return orjson.dumps(body)


def counted(h: Harness, family: str, **labels: str) -> float:
    value = h.engine.metrics.registry.get_sample_value(family, labels)
    return value or 0.0


@pytest.fixture
def h() -> Harness:
    return Harness()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_room_batch_folds_good_events_and_dead_letters_bad_ones(h: Harness) -> None:
    run(h.feed("live-events", 0, [live("join"), b"not json", live("like"),
                                  live("join", user="u2"), live("oops")]))
    room = h.rooms.pipeline.rooms["r1"]
    assert set(room.state.viewers) == {"u1", "u2"}
    dead = h.sent(h.names.dead_letter)
    assert [d["error_class"] for d in dead] == ["malformed_json", "unknown_type"]
    topic = h.names.live_events
    assert counted(h, "livepulse_events_in_total", topic=topic, type="join") == 2
    assert counted(h, "livepulse_events_in_total", topic=topic, type="like") == 1
    forwarded = h.sent(h.names.user_activity)
    assert sorted(e["user_id"] for e in forwarded) == ["u1", "u1", "u2"]
    # one user-activity record per user partition and batch
    raw = [s for s in h.iter_sent() if s.topic == h.names.user_activity]
    assert len({s.partition for s in raw}) == len(raw)


def test_room_redelivery_is_skipped_counted_and_forwarded_again(h: Harness) -> None:
    batch = [live("join"), live("like")]
    run(h.feed("live-events", 0, batch))
    h.commit()  # the room is saved with the offsets it covers
    h._next_offset.clear()  # the same offsets again, as after a crash
    run(h.feed("live-events", 0, batch))
    assert counted(h, "livepulse_duplicate_events_total", pipeline="room") == 2
    assert h.rooms.pipeline.rooms["r1"].state.to_dict() is not None
    assert len(h.sent(h.names.user_activity)) == 4  # forwarded again, skipped by users
    saved = len(h.tables["room-state"].changelog)
    h.commit()  # saved again: its first changelog record may have been aborted
    assert [key for _, key, _ in h.tables["room-state"].changelog[saved:]] == ["r1"]
    run(h.forward_activity())
    assert counted(h, "livepulse_duplicate_events_total", pipeline="user") == 2


def test_user_batch_updates_profiles_and_emits_recommendations(h: Harness) -> None:
    run(h.feed("clicks", 1, [click("view", item="i1"), click("view", item="i2"),
                             click("view", user="u2", item="i1"), click("view", item="i3"),
                             b"{}"]))
    profile = h.profiles.get("u1")
    assert profile is not None and profile.events == 3
    recs = h.sent(h.names.recommendations)
    assert len(recs) >= 2 and all(r["user_id"] in {"u1", "u2"} for r in recs)
    assert [d["error_class"] for d in h.sent(h.names.dead_letter)] == ["missing_field"]
    assert counted(h, "livepulse_events_in_total", topic=h.names.clicks, type="view") == 4


def test_an_item_event_with_nothing_to_rank_still_gets_its_recommendation(
        h: Harness) -> None:
    """One recommendation per item event (the contract), also from a cold model: a purchase
    as the first item event learned ranks nothing (the bought item is filtered), and its
    record went missing from exactly-once CI runs. It carries an empty top-K, counted."""
    run(h.feed("clicks", 0, [click("purchase", item="i1", price=20.0, quantity=1)]))
    (rec,) = h.sent(h.names.recommendations)
    assert rec["items"] == [] and rec["user_id"] == "u1"
    assert counted(h, "livepulse_recommendations_empty_total") == 1
    run(h.feed("clicks", 0, [click("view", user="u2", item="i2")]))
    assert [r["items"] != [] for r in h.sent(h.names.recommendations)] == [False, True]
    assert counted(h, "livepulse_recommendations_empty_total") == 1


def test_a_redelivered_item_event_sends_its_recommendation_again(h: Harness) -> None:
    # Under exactly-once a redelivered event's first outputs were aborted with its
    # transaction; at-least-once may have lost them in the crash: same request id again.
    batch = [click("view", item="i1"), click("view", item="i2"), click("view", item="i3")]
    run(h.feed("clicks", 1, batch))
    first = [r["request_id"] for r in h.sent(h.names.recommendations)]
    learned = h.models.learned
    h._next_offset.clear()  # the same offsets again, as after a rebalance
    run(h.feed("clicks", 1, batch))
    again = [r["request_id"] for r in h.sent(h.names.recommendations)][len(first):]
    assert first and again == first
    assert h.models.learned == learned  # ranked again, not learned twice
    assert h.profiles.get("u1").events == 3
    assert counted(h, "livepulse_duplicate_events_total", pipeline="user") == 3
    # and the profile's changelog record is written again (it may have been aborted)
    table = h.tables["user-profiles"]
    h.commit()
    before = len(table.changelog)
    h._next_offset.clear()
    run(h.feed("clicks", 1, batch))
    h.commit()
    assert [key for _, key, _ in table.changelog[before:]] == ["u1"]


def test_live_activity_reaches_the_user_pipeline_through_the_hop(h: Harness) -> None:
    run(h.feed("live-events", 2, [live("join", user="u9"), live("comment", user="u9",
                                                                text="love it")]))
    assert run(h.forward_activity()) >= 1
    profile = h.profiles.get("u9")
    assert profile is not None and profile.events == 2
    assert profile.watch_room == "r1"


def test_a_bug_on_one_event_dead_letters_that_event_only(h: Harness,
                                                          monkeypatch: Any) -> None:
    original = h.models.on_event

    def flaky(record: Any, *args: Any, **kwargs: Any) -> Any:
        if record.user_id == "bad":
            raise RuntimeError("boom")
        return original(record, *args, **kwargs)

    monkeypatch.setattr(h.models, "on_event", flaky)
    run(h.feed("clicks", 0, [click("view", user="a"), click("view", user="bad"),
                             click("view", user="b")]))
    dead = h.sent(h.names.dead_letter)
    assert [d["error_class"] for d in dead] == ["internal"]
    assert h.profiles.get("a") is not None and h.profiles.get("b") is not None
    assert counted(h, "livepulse_agent_errors_total", agent="user-pipeline") == 1


def test_changelog_once_per_dirty_key_at_commit(h: Harness) -> None:
    run(h.feed("clicks", 0, [click("view", user="u1", item=f"i{i}") for i in range(5)]
               + [click("view", user="u2")]))
    table = h.tables["user-profiles"]
    assert table.changelog == []  # nothing before the commit
    h.commit()
    assert sorted(key for _, key, _ in table.changelog) == ["u1", "u2"]
    h.commit()
    assert len(table.changelog) == 2  # nothing changed since


def test_outputs_of_a_batch_go_out_as_one_producer_batch_per_partition(h: Harness) -> None:
    run(h.feed("clicks", 0, [click("view", user=f"u{i}", item="i1") for i in range(40)]))
    recs = [s for s in h.iter_sent() if s.topic == h.names.recommendations]
    assert len(recs) >= 30
    by_partition: dict[int, int] = {}
    for sent in recs:
        by_partition[sent.partition] = by_partition.get(sent.partition, 0) + 1
    assert len(by_partition) > 1  # keyed by user: Kafka's partitioner spreads them


def item(item_id: str, **extra: Any) -> bytes:
    return orjson.dumps({"item_id": item_id, "ts": Harness.now_ms(), "category": "c1",
                         "price": 9.5, "in_stock": True, **extra})


def test_catalog_batch_fills_the_table_and_dead_letters_bad_items(h: Harness) -> None:
    run(h.feed("catalog", 1, [item("i1"), item("i2", price=-1), b"{", item("i3"),
                              item("i1", in_stock=False)]))
    assert sorted(h.catalog) == ["i1", "i3"]
    assert h.catalog["i1"]["in_stock"] is False  # the later record of a key wins
    assert [d["error_class"] for d in h.sent(h.names.dead_letter)] == [
        "out_of_range", "malformed_json"]
    assert counted(h, "livepulse_events_in_total", topic=h.names.catalog, type="upsert") == 3


def test_every_output_of_a_batch_is_added_in_its_input_partition(h: Harness,
                                                                 monkeypatch: Any) -> None:
    # Under exactly-once an output joins the transaction of the partition current when it is
    # added (Engine.transaction_of); one added after the handler left its input partition
    # went into another partition's transaction, which commits apart from these offsets.
    seen: list[tuple[str, Any]] = []
    add = h.engine.outputs.add

    def spy(topic: str, *args: Any, **kwargs: Any) -> None:
        seen.append((topic, current_partition()))
        add(topic, *args, **kwargs)

    monkeypatch.setattr(h.engine.outputs, "add", spy)
    run(h.feed("live-events", 2, [live("join", user=f"v{i}") for i in range(8)]
               + [live("product_click", user=f"v{i}", item_id="i1") for i in range(8)]))
    forwards = [at for topic, at in seen if topic == h.names.user_activity]
    assert len(forwards) > 1 and set(forwards) == {(h.names.live_events, 2)}
    seen.clear()
    run(h.forward_activity())
    assert {topic for topic, _ in seen} >= {h.names.room_audience, h.names.recommendations}
    assert all(at is not None and at[0] == h.names.user_activity for _, at in seen)


def test_outside_a_handler_only_changelogs_name_their_transaction() -> None:
    producers = {"app-0-0": object(), "app-0-1": object()}
    app = SimpleNamespace(
        producer=SimpleNamespace(_transaction_producers=producers),
        conf=SimpleNamespace(id="app"),
        assignor=SimpleNamespace(group_for_topic=lambda topic: 0))
    settings = Settings(kafka_url="memory", redis_url="", clickhouse_url="", partitions=2,
                        processing_guarantee="exactly_once")
    engine = Engine(app=app, settings=settings, topics=topic_names(settings),  # type: ignore[arg-type]
                    metrics=EngineMetrics())
    with in_partition(1, "live-events"):
        assert engine.transaction_of("user-activity", 0) == "app-0-1"  # the input's
    assert engine.transaction_of("user-activity", 0) is None          # a timer's output
    assert engine.transaction_of("app-user-profiles-changelog", 1) == "app-0-1"  # a flush
    assert engine.transaction_of("app-user-profiles-changelog", None) is None
