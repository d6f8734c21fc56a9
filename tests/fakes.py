"""In-memory stand-ins for tiny, fast tests (real-broker tests live in tests/integration)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class FakeProducer:
    """Stands in for AIOKafkaProducer: records (topic, key, value, monotonic time)."""

    last: FakeProducer | None = None

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.sent: list[tuple[str, bytes | None, bytes, float]] = []
        self.started = self.stopped = self.flushed = False
        FakeProducer.last = self

    async def start(self) -> None:
        self.started = True

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, time.monotonic()))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def flush(self) -> None:
        self.flushed = True

    async def stop(self) -> None:
        self.stopped = True
