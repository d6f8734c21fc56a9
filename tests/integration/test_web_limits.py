"""HTTP and input edges on a real worker (issue 17): half-open connections closed at the
header timeout, room streams capped per token, request ids echoed, a JSON body naming a key
twice refused, and on the topics duplicate keys and keys that are not the entity id
dead-lettered (counted by reason) while the good events are counted in their room.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.integration.test_pipeline import live, produce, read_topic
from tests.integration.test_privacy import http
from tests.integration.test_serving import get_json, wait_for

pytestmark = pytest.mark.integration


async def _half_open(host: str, port: int, n: int, deadline_s: float) -> list[float]:
    """Open ``n`` connections sending an incomplete request head; seconds until each is
    closed by the server."""
    conns = [await asyncio.open_connection(host, port) for _ in range(n)]
    for _, writer in conns:
        writer.write(b"GET /api/rooms HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()

    async def closed(reader: asyncio.StreamReader) -> float:
        async with asyncio.timeout(deadline_s):
            while await reader.read(4096):
                pass
        return time.monotonic() - started

    try:
        return await asyncio.gather(*(closed(r) for r, _ in conns))
    finally:
        for _, writer in conns:
            writer.close()


async def _streams(url: str, n: int) -> list[tuple[int, Any]]:
    """Open ``n`` streams of one room at once (same client, no token); status and the
    first line or JSON body of each."""
    out: list[tuple[int, Any]] = []
    async with aiohttp.ClientSession() as session:
        held = []
        for _ in range(n):
            resp = await session.get(url)
            if resp.status == 200:
                out.append((200, await resp.content.readline()))
                held.append(resp)
            else:
                out.append((resp.status, await resp.json()))
                resp.release()
        for resp in held:
            resp.close()
    return out


def test_http_limits_and_ambiguous_input_on_a_worker(broker: Any, worker_factory: Any,
                                                      tmp_path: Path) -> None:
    settings = unique_settings(tmp_path, broker, http_header_timeout_s=1.0,
                               sse_max_streams_per_token=2, redis_url="")
    names = topic_names(settings)
    worker = worker_factory(settings)
    url = worker.web_url

    # half-open requests are closed at the header timeout, the API still answers
    took = asyncio.run(_half_open(settings.web_host, settings.web_port, 50, 10.0))
    assert all(0.5 <= t <= 4.0 for t in took), took

    # topics: a live event naming room_id twice, one keyed by another room: dead letters
    good = [live(i, "join", "room-a", f"u{i}") for i in range(3)]
    twice = orjson.dumps(live(10, "join", "room-a", "u10"))[:-1] + b',"room_id":"room-b"}'
    records = [(names.live_events, b"room-a", orjson.dumps(e)) for e in good]
    records += [(names.live_events, b"room-a", twice),
                (names.live_events, b"room-z", orjson.dumps(live(11, "join", "room-a", "u11")))]
    asyncio.run(produce(broker.bootstrap, records))
    letters = [orjson.loads(r.value) for r in asyncio.run(read_topic(
        broker.bootstrap, names.dead_letter, until=lambda r: len(r) >= 2, timeout=60))]
    assert sorted(d["error_class"] for d in letters) == ["duplicate_key", "key_mismatch"]
    insight = wait_for(lambda: (r := get_json(f"{url}/api/rooms/room-a"))[0] == 200
                       and r[1]["events_total"] == 3 and r[1], timeout=60, what="room-a")
    assert insight["room_id"] == "room-a"
    assert get_json(f"{url}/api/rooms/room-b")[0] == 404
    stats = get_json(f"{url}/api/stats")[1]
    assert stats["dead_letters_by_reason"] == {"duplicate_key": 1, "key_mismatch": 1}

    # room streams: two at once per client, the third is a 429
    answers = asyncio.run(_streams(f"{url}/api/rooms/room-a/stream", 3))
    assert [a[0] for a in answers] == [200, 200, 429], answers
    assert answers[0][1] == b"event: insight\n"
    assert answers[2][1]["error"] == "too_many_requests" and answers[2][1]["limit"] == 2

    # request ids: echoed (sane) or made
    async def ids() -> list[str]:
        async with aiohttp.ClientSession() as session:
            out = []
            for given in ("trace-42", "no spaces please"):
                async with session.get(f"{url}/api/rooms",
                                       headers={"X-Request-Id": given}) as resp:
                    out.append(resp.headers["X-Request-Id"])
            return out

    echoed, made = asyncio.run(ids())
    assert echoed == "trace-42" and len(made) == 32

    # the API: a body naming a key twice is a 400, nothing is produced
    status, body = http("POST", f"{url}/api/users/u1/consent",
                        b'{"consent": false, "consent": true}')
    assert (status, body["error"]) == (400, "duplicate_key")
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
