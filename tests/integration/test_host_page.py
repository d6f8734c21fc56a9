"""The host's live page in a real headless Chromium, against a real worker fed by the simulator.

Screenshots of the room page at 375 px in English and Chinese are kept in
``$LIVEPULSE_TEST_ARTEFACTS`` (default ``tests/artefacts/``, not in git).

One worker and one ``livepulse simulate`` run per module; each test drives its own Chromium
over CDP (``tests/chromium.py``). The page marks every number it shows with
``data-field`` (JSON path in the room insight), ``data-value`` (raw value) and
``data-format``; the tests compare those with ``window.livepulseLast`` and the JSON API.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import EmbeddedBroker, _die_with_parent
from streams.contracts import LiveEvent, as_dict
from streams.topics import topic_names
from tests.chromium import Chromium, find_chromium, js_string
from tests.conftest import REPO, WorkerHandle, require, start_worker, unique_settings, wait_ready

pytestmark = pytest.mark.integration

MISSING = "\u2013"  # en dash: what the page shows for a missing value
CURRENCY_SIGN = "\u00a5"  # the default LIVEPULSE_CURRENCY, CNY
ARTEFACTS = Path(os.environ.get("LIVEPULSE_TEST_ARTEFACTS") or REPO / "tests" / "artefacts")
CJK = re.compile(r"[\u4e00-\u9fff]")
# Always shown on the room page once the first insight arrived.
REQUIRED_FIELDS = (
    "viewers", "ts", "events_total", "orders", "audience.unique_viewers",
    "audience.peak_viewers", "commerce.gmv", "commerce.gmv_per_min", "mood.sentiment",
    "commerce.funnel.product_clicks", "commerce.funnel.add_to_carts",
    "commerce.funnel.purchases", "commerce.funnel.click_to_cart",
)
# Only grow while a room is live: what the page shows is at most what the API says later.
MONOTONIC_FIELDS = (
    "events_total", "orders", "product_clicks", "add_to_carts", "peak_viewers",
    "commerce.gmv", "commerce.funnel.product_clicks", "commerce.funnel.add_to_carts",
    "commerce.funnel.purchases", "audience.peak_viewers",
)
FIELDS_JS = """Array.from(ROOT.querySelectorAll('[data-field]'), (el) => ({
  field: el.dataset.field, value: el.hasAttribute('data-value') ? el.dataset.value : null,
  text: el.textContent, format: el.dataset.format || 'int'}))"""
ROOM_SNAPSHOT_JS = ("({updates: window.livepulseUpdates, last: window.livepulseLast, "
                    f"fields: {FIELDS_JS.replace('ROOT', 'document')}}})")
INDEX_SNAPSHOT_JS = (
    "({polls: window.livepulsePolls, rooms: window.livepulseRooms, cards: Array.from("
    "document.querySelectorAll('a.room-card'), (card) => ({room: card.dataset.room, "
    f"href: card.getAttribute('href'), fields: {FIELDS_JS.replace('ROOT', 'card')}}}))}})")
LABELS_JS = ("Array.from(document.querySelectorAll('[data-i18n]'), (el) => el.textContent)"
             ".filter((text) => text.trim())")
NEXT_FRAME_JS = "new Promise((done) => requestAnimationFrame(() => done(true)))"


# ---------------------------------------------------------------------- formats
def js_fixed(value: float, digits: int) -> str:
    """JavaScript's ``Number.prototype.toFixed`` (exact binary value, ties away from zero).

    >>> js_fixed(0.125, 2), js_fixed(1.005, 2), js_fixed(6.25, 1), js_fixed(-0.0, 2)
    ('0.13', '1.00', '6.3', '0.00')
    """
    if value == 0:
        value = 0.0  # (-0).toFixed() has no sign
    quantum = Decimal(1).scaleb(-digits)
    return str(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def displayed(value: float, fmt: str) -> str:
    """The text the page shows for ``value`` in format ``fmt`` (see dashboards/host/livepulse.js).

    >>> [displayed(v, f) for v, f in [(1234, "int"), (1234.5, "money"), (0.0625, "pct"),
    ...  (3.0, "rate"), (3.25, "rate"), (0.371, "dec2"), (-0.1, "signed"), (0.32, "signed"),
    ...  (45.4, "dur"), (192.5, "dur"), (3_661_000, "time")]]
    ['1234', '¥1234.50', '6.3%', '3', '3.3', '0.37', '-0.10', '+0.32', '45s', '3m 13s', '01:01:01']
    """
    if fmt == "int":
        return str(int(value)) if float(value).is_integer() else str(math.floor(value + 0.5))
    if fmt == "money":
        return ("-" if value < 0 else "") + CURRENCY_SIGN + js_fixed(abs(value), 2)
    if fmt == "dec2":
        return js_fixed(value, 2)
    if fmt == "pct":
        return js_fixed(value * 100, 1) + "%"
    if fmt == "rate":
        return str(int(value)) if float(value).is_integer() else js_fixed(value, 1)
    if fmt == "signed":
        return ("+" if value > 0 else "-" if value < 0 else "") + js_fixed(abs(value), 2)
    if fmt == "dur":
        total = math.floor(value + 0.5)
        return f"{total}s" if total < 60 else f"{total // 60}m {total % 60}s"
    if fmt == "time":  # the browser runs with its timezone set to UTC
        return time.strftime("%H:%M:%S", time.gmtime(int(value) // 1000))
    raise AssertionError(f"unknown data-format {fmt!r}")


def resolve(data: Any, path: str) -> Any:
    """The value at a dotted JSON path (list indexes allowed), or None.

    >>> resolve({"a": {"b": [{"c": 3}]}}, "a.b.0.c"), resolve({"a": None}, "a.b")
    (3, None)
    """
    current = data
    for part in path.split("."):
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def field_mismatches(fields: list[dict[str, Any]], data: dict[str, Any]) -> list[str]:
    """Every displayed field that does not show exactly ``data`` (raw value and text)."""
    problems = []
    for shown in fields:
        expected = resolve(data, shown["field"])
        if not is_number(expected):
            if shown["value"] is not None or shown["text"] != MISSING:
                problems.append(f"{shown['field']}: shows {shown} for {expected!r}")
            continue
        if shown["value"] is None or float(shown["value"]) != float(expected):
            problems.append(f"{shown['field']}: data-value {shown['value']!r} != {expected!r}")
        if shown["text"] != displayed(expected, shown["format"]):
            problems.append(f"{shown['field']}: text {shown['text']!r} != "
                            f"{displayed(expected, shown['format'])!r} ({shown['format']})")
    return problems


def values(fields: list[dict[str, Any]]) -> dict[str, float]:
    return {f["field"]: float(f["value"]) for f in fields if f["value"] is not None}


# ---------------------------------------------------------------------- engine + browser
@dataclass
class LiveEngine:
    worker: WorkerHandle
    simulator: subprocess.Popen[bytes]
    url: str
    chromium: str
    tmp: Path


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        assert resp.status == 200, f"GET {url}: {resp.status} {await resp.text()}"
        return await resp.json()


def wait_for_live_rooms(url: str, engine_logs: list[Path], timeout: float = 90.0) -> None:
    async def poll() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                rooms = (await get_json(f"{url}/api/rooms"))["rooms"]
                if sum(1 for r in rooms if r.get("live")) >= 2:
                    return
            await asyncio.sleep(0.5)
        logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in engine_logs if p.exists())
        raise AssertionError(f"no live rooms at {url}/api/rooms after {timeout} s\n{logs}")

    asyncio.run(poll())


@pytest.fixture(scope="module")
def chromium_binary() -> str:
    binary = find_chromium()
    require(binary is not None, "Chromium (apt-get install chromium) or $LIVEPULSE_CHROMIUM")
    assert binary is not None
    return binary


@pytest.fixture(scope="module")
def live_engine(broker: EmbeddedBroker, chromium_binary: str,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveEngine]:
    tmp = tmp_path_factory.mktemp("host-page")
    settings = unique_settings(tmp, broker)
    worker = start_worker(settings, tmp / "worker.log")
    simulator: subprocess.Popen[bytes] | None = None
    try:
        wait_ready(worker)
        with open(tmp / "simulator.log", "ab") as log:
            simulator = subprocess.Popen(
                [sys.executable, "-m", "agents.cli", "simulate", "--rate", "200",
                 "--duration", "900", "--seed", "5"],
                cwd=REPO, env={**os.environ, **settings.to_env()}, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        wait_for_live_rooms(worker.web_url, [tmp / "worker.log", tmp / "simulator.log"])
        engine = LiveEngine(worker, simulator, worker.web_url, chromium_binary, tmp)
        yield engine
        worker = engine.worker  # a test may have replaced it
    finally:
        if simulator is not None:
            simulator.terminate()
            try:
                simulator.wait(20)
            except subprocess.TimeoutExpired:
                simulator.kill()
                simulator.wait(10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.stop()


def browser(engine: LiveEngine, tmp_path: Path, **options: Any) -> Chromium:
    return Chromium(engine.chromium, failure_screenshot=tmp_path / "failure.png",
                    log_path=tmp_path / "chromium.log", **options)


async def open_room(page: Chromium, engine: LiveEngine, updates: int = 2) -> str:
    rooms = (await get_json(f"{engine.url}/api/rooms"))["rooms"]
    room_id = next(r["room_id"] for r in rooms if r.get("live"))
    await page.navigate(f"{engine.url}/rooms/{room_id}")
    await page.wait_for(f"window.livepulseUpdates >= {updates}", timeout=30)
    return str(room_id)


# ---------------------------------------------------------------------- tests
async def test_index_lists_live_rooms_and_links_to_them(live_engine: LiveEngine,
                                                        tmp_path: Path) -> None:
    async with browser(live_engine, tmp_path) as page:
        await page.navigate(f"{live_engine.url}/")
        await page.wait_for("window.livepulsePolls >= 2 && "
                            "document.querySelectorAll('a.room-card').length > 0", timeout=30)
        first = await page.evaluate(INDEX_SNAPSHOT_JS)
        api_ids = {r["room_id"] for r in (await get_json(f"{live_engine.url}/api/rooms"))["rooms"]}

        shown = {card["room"]: card for card in first["cards"]}
        assert shown, "no room cards"
        assert set(shown) <= api_ids | {r["room_id"] for r in first["rooms"]}
        rendered = {r["room_id"]: r for r in first["rooms"]}
        assert set(shown) == set(rendered)
        for room_id, card in shown.items():
            assert card["href"] == f"/rooms/{room_id}"
            assert field_mismatches(card["fields"], rendered[room_id]) == []
            assert {"viewers", "commerce.gmv", "mood.sentiment"} <= set(values(card["fields"]))

        # the numbers follow the engine: some card changes within a few polls
        before = {room: values(card["fields"]) for room, card in shown.items()}
        changed: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            now = await page.evaluate(INDEX_SNAPSHOT_JS)
            after = {card["room"]: values(card["fields"]) for card in now["cards"]}
            changed = [room for room in before if room in after and after[room] != before[room]]
            if changed and now["polls"] > first["polls"]:
                break
        assert changed, f"no room card changed in 20 s: {before}"

        # a user clicks a room and lands on its live page
        target = sorted(shown)[0]
        await page.evaluate(f"document.querySelector('a.room-card[data-room={js_string(target)}]')"
                            ".click()")
        await page.wait_for(f"location.pathname === {js_string('/rooms/' + target)} && "
                            "window.livepulseUpdates >= 1", timeout=30)
        assert await page.evaluate("window.livepulseLast.room_id") == target
        assert page.page_errors == []


async def test_room_page_numbers_are_live_and_match_the_api(live_engine: LiveEngine,
                                                            tmp_path: Path) -> None:
    api = f"{live_engine.url}/api/rooms"
    async with browser(live_engine, tmp_path) as page:
        room_id = await open_room(page, live_engine)
        start = time.monotonic()
        first = await page.evaluate(ROOM_SNAPSHOT_JS)
        later_api = await get_json(f"{api}/{room_id}/insights")

        # every number shown is exactly the last insight received, formatted as documented
        assert first["last"]["room_id"] == room_id
        assert field_mismatches(first["fields"], first["last"]) == []
        shown = values(first["fields"])
        missing = [name for name in REQUIRED_FIELDS if name not in shown]
        assert missing == [], f"fields not shown: {missing}"
        # the page is current: its insight is close to what the API says now (and to now)
        assert abs(later_api["ts"] - first["last"]["ts"]) <= 3000
        assert time.time() * 1000 - first["last"]["ts"] < 5000
        for name in MONOTONIC_FIELDS:
            page_value, api_value = resolve(first["last"], name), resolve(later_api, name)
            assert page_value is not None and api_value is not None, name
            assert page_value <= api_value, f"{name}: page {page_value} > API {api_value}"

        # exact agreement: the page and the API at the same insight (same ts) show the same
        for _attempt in range(40):
            current = await get_json(f"{api}/{room_id}/insights")
            snap = await page.wait_for(
                f"window.livepulseLast.ts >= {current['ts']} && {ROOM_SNAPSHOT_JS}", timeout=10)
            if snap["last"]["ts"] == current["ts"]:
                break
        else:
            raise AssertionError("the page never showed the insight the API returned")
        assert field_mismatches(snap["fields"], current) == []
        assert snap["last"] == current

        # numbers change over time: more updates, a newer ts, more events, viewers move
        await asyncio.sleep(max(0.0, 3.0 - (time.monotonic() - start)))
        second = await page.evaluate(ROOM_SNAPSHOT_JS)
        elapsed = time.monotonic() - start
        assert second["updates"] - first["updates"] >= int(elapsed), "fewer than 1 update/s"
        assert values(second["fields"])["ts"] > shown["ts"]
        assert values(second["fields"])["events_total"] > shown["events_total"]
        assert field_mismatches(second["fields"], second["last"]) == []
        await page.wait_for(
            f"document.querySelector('[data-field=viewers]').dataset.value !== "
            f"{js_string(str(first['last']['viewers']))}", timeout=30)
        points = await page.evaluate(
            "document.querySelector('#viewers-chart polyline').getAttribute('points')"
            ".trim().split(/\\s+/).length")
        assert points >= 2
        assert await page.evaluate("document.getElementById('conn').dataset.state") == "live"
        assert page.page_errors == []


async def test_room_page_speaks_chinese_and_english(live_engine: LiveEngine,
                                                    tmp_path: Path) -> None:
    async with browser(live_engine, tmp_path) as page:
        await open_room(page, live_engine, updates=1)
        assert await page.evaluate("document.documentElement.lang") == "en"
        english = await page.evaluate(LABELS_JS)
        assert english and not [label for label in english if CJK.search(label)]

        switched = await page.evaluate(
            "document.querySelector('button[data-lang=zh]').click(), "
            f"({{labels: {LABELS_JS}, lang: document.documentElement.lang, "
            "suggestions: document.getElementById('suggestions').textContent, "
            "expected: (window.livepulseLast.suggestions || []).map((s) => s.item_id ? "
            "s.zh.split(s.item_id).join(window.livepulseItemName(s.item_id)) : s.zh)})")
        assert switched["lang"] == "zh-CN"
        assert [label for label in switched["labels"] if not CJK.search(label)] == []
        for text in switched["expected"]:
            assert text in switched["suggestions"]

        await page.reload()  # the choice is remembered
        await page.wait_for("window.livepulseUpdates >= 1", timeout=30)
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"

        await page.evaluate("document.querySelector('button[data-lang=en]').click()")
        assert not [label for label in await page.evaluate(LABELS_JS) if CJK.search(label)]

        # a first visit from a Chinese browser starts in Chinese
        await page.evaluate("localStorage.clear()")
        await page.set_language("zh-CN")
        await page.reload()
        await page.wait_for("window.livepulseUpdates >= 1", timeout=30)
        assert await page.evaluate("navigator.language") == "zh-CN"
        assert await page.evaluate("document.documentElement.lang") == "zh-CN"
        assert page.page_errors == []


async def test_pages_fit_a_phone(live_engine: LiveEngine, tmp_path: Path) -> None:
    overflow_js = ("({page: document.documentElement.scrollWidth, cut: Array.from("
                   "document.querySelectorAll(SELECTOR), (el) => [el.dataset.field, "
                   "el.getBoundingClientRect().right, el.scrollWidth - el.clientWidth])"
                   ".filter(([, right, hidden]) => right > 376 || hidden > 1)})")
    async with browser(live_engine, tmp_path) as page:
        await open_room(page, live_engine)
        await asyncio.sleep(2)  # a little chart history
        await page.screenshot(tmp_path / "room-1280.png")
        await page.set_viewport(375, 800, mobile=True, scale=2)
        await page.evaluate(NEXT_FRAME_JS)
        for lang in ("en", "zh"):
            await page.evaluate(f"document.querySelector('button[data-lang={lang}]').click()")
            await page.evaluate(NEXT_FRAME_JS)
            fit = await page.evaluate(overflow_js.replace("SELECTOR", "'.kpi [data-field]'"))
            assert fit["page"] <= 376, f"room page is {fit['page']} px wide at 375 ({lang})"
            assert fit["cut"] == [], f"numbers cut off at 375 px ({lang}): {fit['cut']}"
        await page.screenshot(tmp_path / "room-375.png", full_page=False)

        await page.navigate(f"{live_engine.url}/")
        await page.wait_for("document.querySelectorAll('a.room-card').length > 0", timeout=30)
        fit = await page.evaluate(overflow_js.replace("SELECTOR", "'.room-card [data-field]'"))
        assert fit["page"] <= 376, f"index is {fit['page']} px wide at 375"
        assert fit["cut"] == [], f"numbers cut off at 375 px: {fit['cut']}"
        await page.screenshot(tmp_path / "index-375.png", full_page=False)
        assert page.page_errors == []


HISTORY_ROOM = "room-mid-show"
HISTORY_ITEM = "i3"   # in the simulator's catalog: the page shows its title


async def produce_past_show(engine: LiveEngine, minutes: int = 65) -> int:
    """A show that started ``minutes`` ago, all of it produced now: a viewer joins every
    10 s of event time (one in three leaves a minute later), an order of
    :data:`HISTORY_ITEM` every minute; the newest event is now. Returns the newest ``ts``."""
    settings = engine.worker.settings
    topic = topic_names(settings).live_events
    end = int(time.time() * 1000)
    start = end - minutes * 60_000
    events = [LiveEvent("h-pin", "product_pin", start, HISTORY_ROOM, "host-h",
                        host_id="host-h", item_id=HISTORY_ITEM)]
    for n, ts in enumerate(range(start, end + 1, 10_000)):
        events.append(LiveEvent(f"h-j{n}", "join", ts, HISTORY_ROOM, f"hv{n}"))
        if n % 3 == 0 and ts + 60_000 <= end:
            events.append(LiveEvent(f"h-l{n}", "leave", ts + 60_000, HISTORY_ROOM, f"hv{n}"))
        if n % 6 == 0:
            events.append(LiveEvent(f"h-p{n}", "purchase", ts + 1, HISTORY_ROOM, f"hv{n}",
                                    item_id=HISTORY_ITEM, amount=99.0 + n % 5, quantity=1))
    events.sort(key=lambda e: e.ts)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_url, linger_ms=5)
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, orjson.dumps(as_dict(event)), key=HISTORY_ROOM.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return events[-1].ts


CHART_POINTS_JS = (
    "Object.fromEntries(['viewers-chart', 'gmv-chart', 'orders-chart'].map((id) => [id, "
    "((document.querySelector('#' + id + ' polyline') || {getAttribute: () => ''})"
    ".getAttribute('points') || '').trim().split(/\\s+/).filter(Boolean).length]))")


async def test_room_opened_mid_show_draws_its_history(live_engine: LiveEngine,
                                                       tmp_path: Path) -> None:
    """Opened an hour into a show, the charts hold 10 min of viewers and the hour's orders and
    GMV at once; amounts carry the currency, items their catalog titles; once no event
    comes for 15 s a banner says so and the header stops saying "Live"."""
    newest = await produce_past_show(live_engine)
    api = f"{live_engine.url}/api/rooms/{HISTORY_ROOM}"

    async def history_ready() -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                found = await get_json(f"{api}/history")
                if found["last_event_ts"] >= newest:
                    return found  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, "the room's history never reached the end"
            await asyncio.sleep(0.5)

    served = await history_ready()
    assert served["currency"] == "CNY"
    viewer_times = [t for t, _ in served["viewers"]]
    assert viewer_times[-1] - viewer_times[0] >= 10 * 60_000
    assert len(served["sales"]) == 61 and sum(row[1] for row in served["sales"]) >= 55
    titles = (await get_json(f"{api}/items?ids={HISTORY_ITEM}"))["items"]
    title = titles[HISTORY_ITEM]["title"]
    assert title and title != HISTORY_ITEM

    async with browser(live_engine, tmp_path) as page:
        await page.navigate(f"{live_engine.url}/rooms/{HISTORY_ROOM}")
        # the first insight and the history: the charts are full before the stream adds a point
        await page.wait_for("window.livepulseHistory !== null && window.livepulseLast !== null",
                            timeout=30)
        opened = await page.evaluate(
            f"({{updates: window.livepulseUpdates, points: {CHART_POINTS_JS}, "
            "waiting: !document.getElementById('viewers-empty').hidden, "
            "history: window.livepulseHistory})")
        assert opened["waiting"] is False, "the page says 'Waiting for data' mid-show"
        assert opened["history"]["viewers"] == served["viewers"] or \
            opened["history"]["last_event_ts"] >= served["last_event_ts"]
        assert opened["points"]["viewers-chart"] >= 55, opened
        assert opened["points"]["gmv-chart"] >= 60 and opened["points"]["orders-chart"] >= 60

        # amounts carry the currency; the item shows its catalog title, the id on hover
        await page.wait_for("document.querySelector('#top-items .item') && "
                            f"document.querySelector('#top-items .item').textContent === "
                            f"{js_string(title)}", timeout=20)
        gmv = await page.evaluate("document.querySelector('.kpi [data-field=\"commerce.gmv\"]')"
                                  ".textContent")
        assert gmv.startswith(CURRENCY_SIGN), gmv
        assert await page.evaluate("document.querySelector('#top-items .item').title") == \
            HISTORY_ITEM
        assert title in await page.evaluate("document.getElementById('pinned').textContent")

        # Chinese and English at 375 px, charts full; screenshots kept
        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        await page.set_viewport(375, 1400, mobile=True, scale=2)
        for lang in ("en", "zh"):
            await page.evaluate(f"document.querySelector('button[data-lang={lang}]').click()")
            await page.evaluate(NEXT_FRAME_JS)
            labels = await page.evaluate(LABELS_JS)
            if lang == "zh":
                assert [label for label in labels if not CJK.search(label)] == []
            else:
                assert not [label for label in labels if CJK.search(label)]
            assert await page.evaluate("document.documentElement.scrollWidth") <= 376
            points = await page.evaluate(CHART_POINTS_JS)
            assert min(points.values()) >= 55, points
            await page.screenshot(ARTEFACTS / f"room-mid-show-375-{lang}.png", full_page=True)

        # no new event: after 15 s the page says how old its numbers are, not "Live"
        state = await page.wait_for(
            "document.getElementById('conn').dataset.state === 'stale' && "
            "!document.getElementById('stale-banner').hidden && "
            "document.getElementById('conn-text').textContent", timeout=45)
        assert "实时" not in state and "Live" not in state
        assert page.page_errors == []


async def test_unknown_room_says_it_is_not_live(live_engine: LiveEngine, tmp_path: Path) -> None:
    async with browser(live_engine, tmp_path) as page:
        await page.navigate(f"{live_engine.url}/rooms/no-such-room")
        await page.wait_for("document.getElementById('conn').dataset.state === 'not_found' && "
                            "!document.getElementById('banner').hidden", timeout=20)
        assert await page.evaluate("window.livepulseUpdates") == 0
        assert page.page_errors == []


async def test_room_page_reconnects_after_the_engine_restarts(live_engine: LiveEngine,
                                                              tmp_path: Path) -> None:
    """Runs last in this module: it replaces the module's worker with a new one."""
    state_js = "document.getElementById('conn').dataset.state"
    async with browser(live_engine, tmp_path) as page:
        room_id = await open_room(page, live_engine)
        assert await page.evaluate(state_js) == "live"
        old = live_engine.worker
        await asyncio.to_thread(old.stop)
        down = await page.wait_for(f"{state_js} !== 'live' && {state_js}", timeout=30)
        assert down in ("offline", "reconnecting")
        before = await page.evaluate("({ts: window.livepulseLast.ts, "
                                     "updates: window.livepulseUpdates})")

        # same settings, so the same port: the page finds the engine again by itself
        live_engine.worker = await asyncio.to_thread(start_worker, old.settings,
                                                     tmp_path / "worker-restarted.log")
        await asyncio.to_thread(wait_ready, live_engine.worker)
        await page.wait_for(f"{state_js} === 'live' && window.livepulseUpdates > "
                            f"{before['updates']} && window.livepulseLast.ts > {before['ts']}",
                            timeout=120)
        snap = await page.evaluate(ROOM_SNAPSHOT_JS)
        assert snap["last"]["room_id"] == room_id
        assert field_mismatches(snap["fields"], snap["last"]) == []
