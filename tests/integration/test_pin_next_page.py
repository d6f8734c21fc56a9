"""The host page's "Pin next" panel in a real headless Chromium (no broker, no worker): the
page and assets of ``dashboards/host`` served with an insight whose ``pin_next`` comes from
the real ranking (:func:`agents.rooms.pin_next.rank`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agents.rooms.pin_next import rank
from tests.chromium import Chromium, find_chromium
from tests.integration.test_questions_page import page_server, room_insight

pytestmark = pytest.mark.integration

ROWS_JS = ("Array.from(document.querySelectorAll('#pin-next .pn-row'), (el) => "
           "({item: el.dataset.item, text: el.textContent}))")


async def test_pin_next_panel_shows_the_top_items_with_reasons_in_both_languages(
        tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip("no Chromium")
    items = [{"item_id": "lip", "category": "beauty", "price": 129.9, "brand": "Lumaki",
              "in_stock": True, "title": "Lumaki lipstick <red>"},
             {"item_id": "nuts", "category": "snacks", "price": 39.9, "in_stock": True}]
    viewers = [{"c": {"beauty": 1.0}, "p": 120.0, "q": 0.3}] * 12
    insight = {**room_insight(), "pin_next": rank(items, viewers)}
    async with page_server(insight) as url, Chromium(
            binary, failure_screenshot=tmp_path / "failure.png",
            log_path=tmp_path / "chromium.log") as page:
        await page.navigate(f"{url}/rooms/r1")
        await page.wait_for("document.querySelectorAll('#pin-next .pn-row').length > 0",
                            timeout=20)
        await page.evaluate("document.querySelector('button[data-lang=en]').click()")
        await asyncio.sleep(0.3)
        rows = await page.evaluate(ROWS_JS)
        assert [row["item"] for row in rows] == ["lip", "nuts"]
        assert "Lumaki lipstick <red>" in rows[0]["text"]  # the title, as text
        assert "12 viewers into beauty, price fits 12" in rows[0]["text"]
        assert "129.90" in rows[0]["text"]
        title = await page.evaluate("document.querySelector('#pin-next-panel h2').textContent")
        assert "Pin next" in title
        await page.screenshot(tmp_path / "pin-next-en.png")
        await page.evaluate("document.querySelector('button[data-lang=zh]').click()")
        await asyncio.sleep(0.3)
        rows = await page.evaluate(ROWS_JS)
        assert "12 位观众偏好美妆" in rows[0]["text"]
        title = await page.evaluate("document.querySelector('#pin-next-panel h2').textContent")
        assert "下一个置顶" in title
        await page.screenshot(tmp_path / "pin-next-zh.png")
        assert page.page_errors == []
