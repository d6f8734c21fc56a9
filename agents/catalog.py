"""Catalog agent: validates catalog records into a global table replicated to every worker."""

from __future__ import annotations

from typing import Any

from agents.engine import Engine
from streams.contracts import CATALOG_ITEM, as_dict


def register(engine: Engine) -> Any:
    """The catalog agent and its global table (item id -> catalog item), returned."""
    app = engine.app
    validator = engine.validator(CATALOG_ITEM)
    catalog = app.GlobalTable("catalog", default=None, partitions=engine.settings.partitions)

    async def handle(event: Any) -> None:
        item = await engine.admit(validator, event.message)
        if item is not None:
            catalog[item.item_id] = as_dict(item)

    @app.agent(engine.topic(engine.topics.catalog), name="catalog")
    async def catalog_agent(stream: Any) -> None:
        async for event in stream.events():
            await engine.guarded("catalog", event, handle)

    return catalog
