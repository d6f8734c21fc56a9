"""Catalog: validates catalog records into a global table replicated to every worker.

Catalog records come in bursts (a shop loads or refreshes thousands of items at once), so
they take the batched path as the live events do: through Faust's per-message path a
2,000-item load held the event loop for ~0.5 s and every live event behind it waited.
"""

from __future__ import annotations

from typing import Any

from agents.engine import Engine
from agents.state import in_partition
from streams.app import subscribe
from streams.contracts import CATALOG_ITEM, as_dict
from streams.ingest import now_ms


class CatalogHandler:
    """``handle_batch``: each valid item into ``table`` (item id -> item), bad records to
    the dead-letter topic."""

    name = "catalog"

    def __init__(self, engine: Engine, table: Any) -> None:
        self.engine = engine
        self.table = table
        self.validator = engine.validator(CATALOG_ITEM)

    async def handle_batch(self, tp: Any, records: list[Any]) -> None:
        engine, topic, partition = self.engine, tp.topic, tp.partition
        received_at = now_ms()
        valid = 0
        with in_partition(partition, topic):  # the table's changelog partition
            for rec in records:
                try:
                    item = engine.decode_record(self.validator, topic, partition, rec,
                                                received_at)
                    if item is None:
                        continue
                    self.table[item.item_id] = as_dict(item)
                    valid += 1
                except Exception as exc:
                    engine.failed(self.name, topic, partition, rec.offset, rec.key, rec.value,
                                  exc)
        if valid:
            engine.metrics.count_in(topic, {"upsert": valid})
        await engine.flush()


def register(engine: Engine) -> Any:
    """The catalog handler and its global table (item id -> catalog item); the table is
    returned."""
    app = engine.app
    catalog = app.GlobalTable("catalog", default=None, partitions=engine.settings.partitions)
    handler = CatalogHandler(engine, catalog)
    engine.hooks.batch_handlers[engine.topics.catalog] = handler
    subscribe(app, engine.topic(engine.topics.catalog), handler.name)
    return catalog
