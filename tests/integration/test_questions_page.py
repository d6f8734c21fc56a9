"""The host page's "Questions from the chat" panel in a real headless Chromium.

No broker or worker: a small aiohttp server serves the real page and assets
(``dashboards/host``) and, as the room's insight, one built by a real :class:`RoomState`
from chat comments; the stream sends that insight as its first event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from agents.rooms.state import RoomState
from streams.contracts import LiveEvent, as_dict
from tests.chromium import Chromium, find_chromium

pytestmark = pytest.mark.integration

HOST_PAGE = Path(__file__).resolve().parents[2] / "dashboards" / "host"
GROUPS_JS = ("Array.from(document.querySelectorAll('#questions .q-group'), (el) => "
             "({topic: el.dataset.topic, count: +el.dataset.count, text: el.textContent}))")


def room_insight() -> dict:
    now = int(time.time() * 1000)
    ids = itertools.count()
    room = RoomState("r1")
    for offset, user, text in ((0, "u1", "多少钱?"), (1, "u2", "how much?"),
                               (2, "u3", "多少钱?"), (3, "u4", "包邮吗"),
                               (4, "u5", "<b>ship</b> to canada?"), (5, "u6", "太好看了吧?")):
        room.apply(LiveEvent(f"e{next(ids)}", "comment", now - 10_000 + offset * 1000, "r1",
                             user, host_id="h1", text=text))
    return orjson.loads(orjson.dumps(as_dict(room.insight(now))))


@contextlib.asynccontextmanager
async def page_server(insight: dict) -> AsyncIterator[str]:
    async def room_page(_: web.Request) -> web.Response:
        return web.Response(body=(HOST_PAGE / "room.html").read_bytes(),
                            content_type="text/html")

    async def static(request: web.Request) -> web.Response:
        path = HOST_PAGE / request.match_info["name"]
        kind = "text/css" if path.suffix == ".css" else "application/javascript"
        return web.Response(body=path.read_bytes(), content_type=kind)

    async def insights(_: web.Request) -> web.Response:
        return web.json_response(insight)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: insight\ndata: " + orjson.dumps(insight) + b"\n\n")
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await asyncio.sleep(60)
        return response

    app = web.Application()
    app.router.add_get("/rooms/r1", room_page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/rooms/r1/insights", insights)
    app.router.add_get("/api/rooms/r1/stream", stream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_questions_panel_shows_unanswered_topics_in_both_languages(
        tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium")
    insight = room_insight()
    expected = [(g["topic"], g["count"]) for g in insight["questions"]["unanswered"]]
    assert expected == [("price", 3), ("shipping", 2)]
    async with page_server(insight) as url, Chromium(
            binary, failure_screenshot=tmp_path / "failure.png",
            log_path=tmp_path / "chromium.log") as page:
        await page.navigate(f"{url}/rooms/r1")
        await page.wait_for("document.querySelectorAll('#questions .q-group').length > 0",
                            timeout=20)
        await page.evaluate("document.querySelector('button[data-lang=en]').click()")
        await asyncio.sleep(0.3)
        groups = await page.evaluate(GROUPS_JS)
        assert [(g["topic"], g["count"]) for g in groups] == expected
        assert "Price" in groups[0]["text"] and "×3" in groups[0]["text"]
        assert "how much?" in groups[0]["text"] and "多少钱?" in groups[0]["text"]
        assert "<b>ship</b> to canada?" in groups[1]["text"]   # shown as text, not markup
        assert await page.evaluate("document.querySelectorAll('#questions b').length") == 2
        title = await page.evaluate("document.querySelector('#questions-panel h2').textContent")
        assert "Questions from the chat" in title
        await page.screenshot(tmp_path / "questions-en.png")

        await page.evaluate("document.querySelector('button[data-lang=zh]').click()")
        await asyncio.sleep(0.3)
        groups = await page.evaluate(GROUPS_JS)
        assert "价格" in groups[0]["text"] and "发货物流" in groups[1]["text"]
        title = await page.evaluate("document.querySelector('#questions-panel h2').textContent")
        assert "观众提问" in title
        totals = await page.evaluate("document.querySelector('#questions .q-totals').textContent")
        assert "共 5 问" in totals and "待答 5" in totals
        await page.screenshot(tmp_path / "questions-zh.png")
        assert page.page_errors == []
