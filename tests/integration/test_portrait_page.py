"""The host page's "Who is watching" panel (insight group ``portrait``) in a real headless
Chromium, en and zh. No broker or worker: the page server of the questions-panel test serves
the real page with an insight built by a real :class:`RoomState`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest

from agents.rooms.state import RoomState
from streams.contracts import LiveEvent, as_dict
from tests.chromium import Chromium, find_chromium
from tests.integration.test_questions_page import page_server

pytestmark = pytest.mark.integration

ROWS_JS = ("Array.from(document.querySelectorAll('#portrait .p-row'), (el) => "
           "({key: el.dataset.key || el.dataset.room, text: el.textContent}))")


def room_insight() -> dict:
    now = int(time.time() * 1000)
    room = RoomState("r1")
    for i, user in enumerate(("u1", "u2", "u3")):
        room.apply(LiveEvent(f"e{i}", "join", now - 10_000 + i, "r1", user, host_id="h1"))
    room.viewer_summary("u1", {"l": "new", "t": ["bargain_hunter"], "c": "beauty",
                               "b": "Lumaki", "p": "mid", "i": "high"})
    room.viewer_summary("u2", {"l": "loyal", "t": [], "c": "beauty", "b": None,
                               "p": "premium", "i": "low"})
    room.apply(LiveEvent("e9", "purchase", now - 5_000, "r1", "u1", item_id="i1",
                         amount=30.0))
    room.apply(LiveEvent("e10", "follow", now - 4_000, "r1", "u2"))
    room.portrait.moved("r<2>")
    return orjson.loads(orjson.dumps(as_dict(room.insight(now))))


async def test_portrait_panel_in_both_languages(tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium")
    insight = room_insight()
    assert insight["portrait"]["profiled"] == 2
    async with page_server(insight) as url, Chromium(
            binary, failure_screenshot=tmp_path / "failure.png",
            log_path=tmp_path / "chromium.log") as page:
        await page.navigate(f"{url}/rooms/r1")
        await page.wait_for("document.querySelectorAll('#portrait .p-row').length > 0",
                            timeout=20)
        await page.evaluate("document.querySelector('button[data-lang=en]').click()")
        await asyncio.sleep(0.3)
        rows = {r["key"]: r["text"] for r in await page.evaluate(ROWS_JS)}
        assert "Bargain hunter" in rows["bargain_hunter"] and "Loyal" in rows["loyal"]
        assert rows["beauty"].endswith("2 · 100.0%") and "Mid" in rows["mid"]
        assert "r<2>" in rows["r<2>"]                       # a room id shown as text
        assert await page.evaluate("document.querySelector('#p-buyer-rate').textContent") \
            == "33.3%"
        assert await page.evaluate("document.querySelector('#p-follows').textContent") == "1"
        title = await page.evaluate("document.querySelector('#portrait-panel h2').textContent")
        assert "Who is watching" in title
        await page.screenshot(tmp_path / "portrait-en.png")

        await page.evaluate("document.querySelector('button[data-lang=zh]').click()")
        await asyncio.sleep(0.3)
        rows = {r["key"]: r["text"] for r in await page.evaluate(ROWS_JS)}
        assert "价格敏感" in rows["bargain_hunter"] and "中端" in rows["mid"]
        title = await page.evaluate("document.querySelector('#portrait-panel h2').textContent")
        assert "观众画像" in title
        await page.screenshot(tmp_path / "portrait-zh.png")
        assert page.page_errors == []
