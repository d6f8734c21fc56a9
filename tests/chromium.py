"""Drive Debian's headless Chromium over the Chrome DevTools Protocol (CDP).

No Selenium, no Playwright, nothing downloads a browser: the system ``chromium`` package
(``/usr/bin/chromium``, or ``$LIVEPULSE_CHROMIUM``) is started with a fresh profile and an
ephemeral debugging port, and one page is driven over its CDP websocket with aiohttp.

Usage (inside a coroutine)::

    async with Chromium(find_chromium(), failure_screenshot=tmp_path / "failure.png") as page:
        await page.navigate("http://127.0.0.1:6066/")
        await page.wait_for("document.querySelectorAll('a').length > 0")
        title = await page.evaluate("document.title")
        await page.screenshot(tmp_path / "page.png")

>>> find_chromium({"LIVEPULSE_CHROMIUM": "/nonexistent/chromium"}) is None
True
>>> js_string("it's")
'"it\\'s"'
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from streams.broker import _die_with_parent

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-sync", "--no-first-run",
    "--no-default-browser-check", "--mute-audio", "--hide-scrollbars",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
)


def find_chromium(environ: Mapping[str, str] | None = None) -> str | None:
    """The Chromium binary to use: ``$LIVEPULSE_CHROMIUM`` if set, else Debian's; None if absent."""
    environ = os.environ if environ is None else environ
    override = environ.get("LIVEPULSE_CHROMIUM")
    candidates = (override,) if override else CHROMIUM_CANDIDATES
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def js_string(text: str) -> str:
    """``text`` as a JavaScript string literal, to splice values into expressions safely."""
    return json.dumps(text)


class CdpError(RuntimeError):
    """A CDP command failed, or evaluated JavaScript threw."""


class Chromium:
    """One headless Chromium process with one page driven over CDP (an async context manager).

    ``failure_screenshot``: where to save a PNG of the page if the ``async with`` body raises.
    Uncaught page exceptions and console errors are collected in :attr:`page_errors`.
    """

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900,
                 timezone: str = "UTC", failure_screenshot: Path | None = None,
                 log_path: Path | None = None, start_timeout: float = 30.0) -> None:
        self.binary = binary
        self.width, self.height = width, height
        self.timezone = timezone
        self.failure_screenshot = failure_screenshot
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.page_errors: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._event_waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> Chromium:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc is not None and self.failure_screenshot is not None and self._ws is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.screenshot(self.failure_screenshot), 10)
                    exc.add_note(f"page screenshot: {self.failure_screenshot}")
        finally:
            await self.close()

    async def start(self) -> None:
        """Start the browser and attach to its first page."""
        self._profile = tempfile.mkdtemp(prefix="livepulse-chromium-")
        args = [self.binary, *CHROMIUM_FLAGS, "--remote-debugging-port=0",
                f"--user-data-dir={self._profile}", "--lang=en-US",
                f"--window-size={self.width},{self.height}", "about:blank"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        port = await self._debugging_port()
        self._http = aiohttp.ClientSession()
        page_ws = await self._page_websocket(port)
        self._ws = await self._http.ws_connect(page_ws, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        await self.send("Emulation.setTimezoneOverride", {"timezoneId": self.timezone})
        await self.set_viewport(self.width, self.height)

    async def _debugging_port(self) -> int:
        """Chromium writes its ephemeral port to DevToolsActivePort in the profile."""
        assert self._profile is not None and self.process is not None
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CdpError(f"chromium exited at start with code {self.process.returncode}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(marker.read_text().split()[0])
            await asyncio.sleep(0.05)
        raise CdpError(f"chromium did not open its debugging port in {self.start_timeout} s")

    async def _page_websocket(self, port: int) -> str:
        assert self._http is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, ValueError):
                async with self._http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    for target in await resp.json(content_type=None):
                        if target.get("type") == "page" and target.get("webSocketDebuggerUrl"):
                            return str(target["webSocketDebuggerUrl"])
            await asyncio.sleep(0.05)
        raise CdpError("chromium has no page target")

    async def close(self) -> None:
        """Close the connection, then stop the whole browser process group."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.send("Browser.close"), 3)
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._http is not None:
            await self._http.close()
        if self.process is not None:
            deadline = time.monotonic() + 5  # Browser.close lets it reap its own helpers
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            self._stop_process_group(self.process)
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
        self._ws = self._http = self._reader = self.process = None
        self._profile = None

    @staticmethod
    def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # the browser and its zygote/renderers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers that outlived it
        process.wait(5)

    # ------------------------------------------------------------------ protocol
    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(CdpError(f"{data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
                continue
            self._on_event(data.get("method", ""), data.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("CDP connection closed"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            description = details.get("exception", {}).get("description") or details.get("text")
            self.page_errors.append(f"exception: {description}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            text = " ".join(str(arg.get("value", arg.get("description", "")))
                            for arg in params.get("args", []))
            self.page_errors.append(f"console.error: {text}")
        for future in self._event_waiters.pop(method, []):
            if not future.done():
                future.set_result(params)

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   timeout: float = 30.0) -> dict[str, Any]:
        """Send one CDP command to the page and return its result."""
        if self._ws is None:
            raise CdpError("browser not started")
        message_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self._ws.send_str(json.dumps({"id": message_id, "method": method,
                                            "params": params or {}}))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(message_id, None)

    def expect_event(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """A future for the next ``method`` event (create it before triggering the event)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._event_waiters.setdefault(method, []).append(future)
        return future

    # ------------------------------------------------------------------ page helpers
    async def navigate(self, url: str, timeout: float = 30.0) -> None:
        """Open ``url`` and wait for its load event."""
        loaded = self.expect_event("Page.loadEventFired")
        result = await self.send("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(loaded, timeout)

    async def reload(self, timeout: float = 30.0) -> None:
        loaded = self.expect_event("Page.loadEventFired")
        await self.send("Page.reload", {"ignoreCache": True}, timeout)
        await asyncio.wait_for(loaded, timeout)

    async def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        """Evaluate JavaScript in the page and return its value (promises are awaited)."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True,
            "userGesture": True}, timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"JavaScript error in {expression[:80]!r}: {description}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0,
                       interval: float = 0.1) -> Any:
        """Poll ``expression`` until it is truthy and return its value; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = await self.evaluate(expression, timeout=max(1.0, timeout))
                if last:
                    return last
            except CdpError as error:  # e.g. the context was replaced by a navigation
                last = error
            if time.monotonic() >= deadline:
                raise TimeoutError(f"waited {timeout} s for {expression!r}; last value {last!r}")
            await asyncio.sleep(interval)

    async def set_viewport(self, width: int, height: int, *, mobile: bool = False,
                           scale: float = 1.0) -> None:
        """Emulate a window of ``width`` x ``height`` CSS pixels (``mobile``: phone rules)."""
        self.width, self.height = width, height
        await self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})
        await self.send("Emulation.setTouchEmulationEnabled", {"enabled": mobile})

    async def set_language(self, language: str) -> None:
        """Make ``navigator.language`` (and Accept-Language) report ``language``."""
        version = await self.send("Browser.getVersion")
        await self.send("Emulation.setUserAgentOverride", {
            "userAgent": version["userAgent"], "acceptLanguage": language})

    async def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scrollable page unless ``full_page`` is False)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": max(size["width"], self.width),
                              "height": size["height"], "scale": 1}
            params["captureBeyondViewport"] = True
        result = await self.send("Page.captureScreenshot", params, timeout=60)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path
