"""The request router hashes a table key the way the data is partitioned (streams.routing).

The real two-worker behaviour is tested in tests/integration/test_routing.py; this pins the
cause: Faust's router hashes the table's JSON changelog key, livepulse's the raw id.
"""

from __future__ import annotations

from typing import Any

from faust.app.router import Router
from faust.types import TP

from config.settings import Settings
from streams.app import WorkerHooks, attach_hooks, create_app
from streams.outputs import partition_for
from streams.routing import OwnerRouter

PARTITIONS = 4


def hashed_key(router_class: type[Router], key: str) -> bytes:
    """The bytes ``router_class`` hashes to find the owner of ``key`` in a profile table."""
    app = create_app(Settings.from_env({"LIVEPULSE_KAFKA_URL": "kafka-1:9092"}))
    app.Table("user-profiles", default=None, partitions=PARTITIONS)
    seen: list[bytes] = []

    def key_store(topic: str, key_bytes: bytes) -> Any:
        seen.append(key_bytes)
        return "http://owner:6066"

    router = router_class(app)
    router._assignor.key_store = key_store  # type: ignore[method-assign]
    router.key_store("user-profiles", key)
    return seen[0]


def test_the_app_routes_with_the_owner_router() -> None:
    app = create_app(Settings.from_env({"LIVEPULSE_KAFKA_URL": "kafka-1:9092"}))
    assert isinstance(app.router, OwnerRouter)


def test_owner_router_hashes_the_raw_id_faust_hashes_json() -> None:
    assert hashed_key(OwnerRouter, "u0") == b"u0"
    assert hashed_key(Router, "u0") == b'"u0"'  # the changelog's JSON key: the old bug
    # ... which names another partition than the one holding the user for most ids
    moved = sum(partition_for(f"u{i}".encode(), PARTITIONS)
                != partition_for(f'"u{i}"'.encode(), PARTITIONS) for i in range(100))
    assert moved > 50


class FakeConsumer:
    def __init__(self, assigned: set[TP]) -> None:
        self.assigned = assigned
        self.highwaters: dict[TP, int] = {}
        self._read_offset: dict[TP, int | None] = {}

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer
        self.consumer_generation_id = 1


def test_a_handed_over_partition_is_catching_up_until_read_to_the_end_it_found() -> None:
    key = "u7"
    partition = partition_for(key.encode(), PARTITIONS)
    clicks, hop = TP("clicks", partition), TP("user-activity", partition)
    consumer = FakeConsumer({clicks, hop})
    app = FakeApp(consumer)
    attach_hooks(app, WorkerHooks(settings=Settings(partitions=PARTITIONS),
                                  routed_sources=("clicks", "user-activity")))
    router = OwnerRouter.__new__(OwnerRouter)
    router.app = app  # type: ignore[assignment]

    assert router._catching_up(key)  # no fetch answered yet: the end is unknown
    consumer.highwaters.update({clicks: 40, hop: 0})
    consumer._read_offset[clicks] = 25  # the committed offset: 15 records to re-read
    assert router._catching_up(key)
    consumer.highwaters[clicks] = 55  # new traffic does not move the handover end (40)
    consumer._read_offset[clicks] = 40
    assert not router._catching_up(key)
    consumer._read_offset[clicks] = 41
    consumer.highwaters[clicks] = 90  # lag again, but the partition stays caught up
    assert not router._catching_up(key)
    app.consumer_generation_id = 2  # a rebalance: handed over again
    assert router._catching_up(key)
    assert not router._catching_up(next(f"u{i}" for i in range(50) if partition_for(
        f"u{i}".encode(), PARTITIONS) != partition))  # not assigned here: nothing to tell
