"""Keyed state with write-behind changelogs: one changelog record per key per commit.

A Faust table sends one changelog record per assignment. The user pipeline updates a
profile on every event, so most of those records are overwritten a moment later by the
same user's next event. :class:`WriteBehindTable` stores each value in the table at once
(reads, the web API and ``table_route`` see it) but holds the changelog record of a key
until the next offset commit, when only the latest value of each key written since the
last commit is sent. The engine's consumer (``streams.app``) runs :meth:`flush` before
every commit (``WorkerHooks.before_commit``), and Faust flushes the producer before it
commits offsets, so the changelog always covers every offset committed: recovery
guarantees are those of a plain table (at-least-once; a crash replays the uncommitted
input over the last flushed state).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

from faust import streams as faust_streams
from prometheus_client import CollectorRegistry, Counter

from streams.outputs import OutputBatches


class StateMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.updates = Counter(
            "livepulse_state_updates_total", "Keyed state updates, by table.", ["table"],
            registry=registry)
        self.changelog = Counter(
            "livepulse_state_changelog_records_total",
            "Changelog records sent by write-behind tables (one per key per commit), by table.",
            ["table"], registry=registry)


class WriteBehindTable:
    """A Faust table whose changelog writes are coalesced per key until the next commit.

    ``partition`` is the source event's partition, which is also the key's changelog
    partition (co-partitioned). ``set`` may also run outside stream iteration (a
    before-commit hook): the store is then told the partition (see :func:`in_partition`).
    """

    def __init__(self, table: Any, metrics: StateMetrics | None = None,
                 outputs: OutputBatches | None = None) -> None:
        self.table = table
        self.name: str = table.name
        # with ``outputs``: changelog records join the output batches (one producer batch
        # per partition; the commit awaits ``outputs.drain``), encoded with the table's
        # own serializers so Faust's recovery reads them as its own
        self.outputs = outputs
        self._dirty: dict[Any, tuple[int, Any]] = {}
        self._updates = metrics.updates.labels(self.name) if metrics else None
        self._changelog = metrics.changelog.labels(self.name) if metrics else None

    def get(self, key: Any, default: Any = None) -> Any:
        return self.table.get(key, default)

    def set(self, key: Any, value: Any, partition: int) -> None:
        event = faust_streams.current_event()
        if event is not None and event.message.partition == partition:
            self.table.data[key] = value  # no changelog record yet: see flush()
        else:
            with in_partition(partition):
                self.table.data[key] = value
        self._dirty[key] = (partition, value)
        if self._updates is not None:
            self._updates.inc()

    def delete(self, key: Any, partition: int) -> bool:
        """Remove ``key`` now, with a changelog tombstone sent at once (erasure: the key
        must be gone from the changelog's compacted state too); True if it was held."""
        self._dirty.pop(key, None)
        held = key in self.table.data
        if held:
            del self.table.data[key]
        if self.outputs is not None:  # in order with the writes batched before it
            table = self.table
            self.outputs.add(table.changelog_topic.get_topic_name(),
                             table.app.serializers.dumps_key(
                                 None, key, serializer=table.key_serializer),
                             None, partition=partition)
        else:
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        if self._changelog is not None:
            self._changelog.inc()
        return held

    def flush(self) -> int:
        """Send one changelog record per key written since the last flush; return the count."""
        dirty, self._dirty = self._dirty, {}
        if self.outputs is not None and dirty:
            self._to_outputs(dirty)
        else:
            send = self.table.send_changelog
            for key, (partition, value) in dirty.items():
                send(partition, key, value)
        if self._changelog is not None and dirty:
            self._changelog.inc(len(dirty))
        return len(dirty)

    def _to_outputs(self, dirty: dict[Any, tuple[int, Any]]) -> None:
        table = self.table
        topic = table.changelog_topic.get_topic_name()
        serializers = table.app.serializers
        key_serializer, value_serializer = table.key_serializer, table.value_serializer
        add = self.outputs.add  # type: ignore[union-attr]
        for key, (partition, value) in dirty.items():
            add(topic, serializers.dumps_key(None, key, serializer=key_serializer),
                serializers.dumps_value(None, value, serializer=value_serializer),
                partition=partition)


def current_partition() -> tuple[str, int] | None:
    """(topic, partition) of the event being handled (Faust's stream iteration or
    :func:`in_partition`), or None outside one (timers, commit hooks) or without a topic."""
    ref = faust_streams._current_event.get(None)
    event = ref() if ref is not None else None
    message = getattr(event, "message", None)
    topic = getattr(message, "topic", "")
    return (topic, message.partition) if topic else None


@contextmanager
def in_partition(partition: int, topic: str = "") -> Iterator[None]:
    """Make Faust's tables and stores see an event of ``topic`` / ``partition`` as the
    current one.

    A RocksDB store picks the partition's database from the current event, and a table
    assignment sends its changelog record to the current event's partition, so a write
    outside Faust's stream iteration (a batch handler, a commit hook) has none.
    """
    stand_in = SimpleNamespace(message=SimpleNamespace(partition=partition, topic=topic))
    token = faust_streams._current_event.set(lambda: stand_in)
    try:
        yield
    finally:
        faust_streams._current_event.reset(token)
