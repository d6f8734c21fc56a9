"""The request router hashes a table key the way the data is partitioned (streams.routing).

The real two-worker behaviour is tested in tests/integration/test_routing.py; this pins the
cause: Faust's router hashes the table's JSON changelog key, livepulse's the raw id.
"""

from __future__ import annotations

from typing import Any

from faust.app.router import Router

from config.settings import Settings
from streams.app import create_app
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
