"""HTTP limits (issue 17): half-open connections are closed, slow bodies get a 408, room
streams are capped per token (429), every answer carries a request id, and a JSON body that
names a key twice is refused.

The server is the aiohttp application Faust builds from the worker's settings
(``streams.app.create_app``), with the worker's middlewares, served on a real socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
from aiohttp import ClientSession, web

from agents.web import auth as web_auth
from agents.web import errors as web_errors
from agents.web import limits as web_limits
from agents.web.privacy import BadRequest, read_json_object
from agents.web.routes import room_stream
from config.settings import Settings
from streams.app import create_app

TOKEN = "t" * 40


def settings(**env: str) -> Settings:
    return Settings.from_env({"LIVEPULSE_KAFKA_URL": "kafka-1:9092", **env})


@asynccontextmanager
async def serve(conf: Settings, routes: Callable[[web.Application], None],
                tokens: bool = False) -> AsyncIterator[tuple[str, int]]:
    """The worker's web application for ``conf`` on 127.0.0.1 (an ephemeral port), with
    the middlewares in the worker's order (errors, auth, limits)."""
    app = create_app(conf)
    web_app = app.web.web_app
    web_errors.install(web_app)
    if tokens:
        web_app.middlewares.append(web_auth.access_middleware(conf))
    web_limits.install(web_app, conf)
    routes(web_app)
    runner = web.AppRunner(web_app, access_log=None)  # as Faust's aiohttp driver
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield host, port
    finally:
        await runner.cleanup()


async def _closed_after(reader: asyncio.StreamReader, deadline_s: float) -> float:
    """Seconds until the server closes the connection (EOF), reading and discarding."""
    started = time.monotonic()
    async with asyncio.timeout(deadline_s):
        while await reader.read(4096):
            pass
    return time.monotonic() - started


def test_half_open_requests_are_closed_at_the_header_timeout() -> None:
    timeout = 1.0

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def run() -> tuple[list[float], int]:
        conf = settings(LIVEPULSE_HTTP_HEADER_TIMEOUT_S=str(timeout))
        async with serve(conf, lambda a: a.router.add_get("/ok", ok)) as (host, port):
            conns = [await asyncio.open_connection(host, port) for _ in range(100)]
            for _, writer in conns:
                writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n")  # no blank line: half open
            await asyncio.gather(*(w.drain() for _, w in conns))

            async def trickle(writer: asyncio.StreamWriter) -> None:
                # slowloris: a header byte every 100 ms does not extend the deadline
                with_bytes = iter(b"X-Slow: " + b"a" * 1000)
                while not writer.is_closing():
                    writer.write(bytes([next(with_bytes)]))
                    await asyncio.sleep(0.1)

            trickles = [asyncio.create_task(trickle(w)) for _, w in conns[:20]]
            # a complete request still works meanwhile
            async with ClientSession() as session, session.get(
                    f"http://{host}:{port}/ok") as resp:
                status = resp.status
            took = await asyncio.gather(*(_closed_after(r, timeout + 5.0) for r, _ in conns))
            for task in trickles:
                task.cancel()
            for _, writer in conns:
                writer.close()
            return took, status

    took, status = asyncio.run(run())
    assert status == 200
    assert len(took) == 100 and all(0.5 * timeout <= t <= timeout + 3.0 for t in took), took


def test_a_slow_body_is_a_408_and_a_large_one_a_413() -> None:
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"bytes": len(await request.read())})

    async def run() -> tuple[float, bytes, int, dict[str, Any], int]:
        conf = settings(LIVEPULSE_HTTP_BODY_TIMEOUT_S="0.5")
        async with serve(conf, lambda a: a.router.add_post("/echo", echo)) as (host, port):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                         b'{"consent"')  # 10 of 100 bytes, then nothing
            await writer.drain()
            started = time.monotonic()
            async with asyncio.timeout(5.0):
                answer = await reader.read()  # until the server closes
            took = time.monotonic() - started
            writer.close()
            async with ClientSession() as session:
                async with session.post(f"http://{host}:{port}/echo",
                                        data=b"x" * (65 * 1024)) as resp:
                    big, big_body = resp.status, orjson.loads(await resp.read())
                async with session.post(f"http://{host}:{port}/echo", data=b"{}") as resp:
                    fine = resp.status
            return took, answer, big, big_body, fine

    took, answer, big, big_body, fine = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and 0.4 <= took <= 3.0
    assert orjson.loads(body)["error"] == "request_timeout"
    assert big == 413 and big_body["error"] == "request_entity_too_large"
    assert fine == 200


def test_room_streams_are_capped_per_token() -> None:
    conf = settings(LIVEPULSE_API_TOKEN=TOKEN, LIVEPULSE_SSE_MAX_STREAMS_PER_TOKEN="2")
    slots = web_limits.StreamSlots(conf.sse_max_streams_per_token, by_token=True)
    stopping = asyncio.Event()

    async def insight(room_id: str) -> dict[str, Any] | None:
        return {"room_id": room_id, "ts": 1} if room_id == "r1" else None

    async def stream(request: web.Request) -> web.StreamResponse:
        return await room_stream(request, request.match_info["room_id"], slots, insight,
                                 stopping.is_set)

    def routes(web_app: web.Application) -> None:
        web_app.router.add_get("/api/rooms/{room_id}/stream", stream)

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serve(conf, routes, tokens=True) as (host, port), ClientSession() as s:
            url = f"http://{host}:{port}/api/rooms/r1/stream"
            admin = {"Authorization": f"Bearer {TOKEN}"}
            async with s.get(url.replace("r1", "r2"), headers=admin) as missing:
                out["missing"] = missing.status, slots.open(f"token:{TOKEN}")  # none kept
            held = []
            for _ in range(2):
                resp = await s.get(url, headers=admin)
                assert resp.status == 200
                out.setdefault("first", await resp.content.readline())
                held.append(resp)
            async with s.get(url, headers=admin) as third:
                out["third"] = (third.status, third.headers.get("Retry-After"),
                                orjson.loads(await third.read()))
            host_token = web_auth.host_token(TOKEN, "r1")
            async with s.get(f"{url}?token={host_token}") as other:
                out["other_token"] = other.status  # another token has its own slots
            held[0].close()  # a client goes away: its slot is freed (next write fails)
            async with asyncio.timeout(10.0):
                while slots.open(f"token:{TOKEN}") != 1:
                    await asyncio.sleep(0.05)
            async with s.get(url, headers=admin) as again:
                out["again"] = again.status
                stopping.set()  # streams end with the worker
                await again.read()
            held[1].close()
        return out

    out = asyncio.run(run())
    assert out["first"] == b"event: insight\n"
    status, retry_after, body = out["third"]
    assert (status, retry_after) == (429, "5")
    assert body["error"] == "too_many_requests" and body["status"] == 429
    assert body["limit"] == 2 and body["path"] == "/api/rooms/r1/stream"
    assert (out["other_token"], out["missing"], out["again"]) == (200, (404, 0), 200)


def test_request_ids_are_echoed_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def sse(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b":hello\n\n")
        return response

    def routes(web_app: web.Application) -> None:
        web_app.router.add_get("/ok", ok)
        web_app.router.add_get("/boom", boom)
        web_app.router.add_get("/sse", sse)
        web_app.router.add_get("/users/{user_id}", ok)

    async def run() -> list[tuple[int, str]]:
        out = []
        async with serve(settings(), routes) as (host, port), ClientSession() as s:
            for path, given in (("/ok", "abc-123"), ("/ok", "bad id\t<script>"),
                                ("/boom", "boom-1"), ("/nowhere", None), ("/sse", "s-1"),
                                ("/users/alice?token=secret", "u-1")):
                headers = {"X-Request-Id": given} if given else {}
                async with s.get(f"http://{host}:{port}{path}", headers=headers) as resp:
                    await resp.read()
                    out.append((resp.status, resp.headers.get("X-Request-Id", "")))
        return out

    with caplog.at_level(logging.DEBUG, logger="livepulse"):
        out = asyncio.run(run())
    assert out[0] == (200, "abc-123")
    assert out[1][0] == 200 and len(out[1][1]) == 32 and out[1][1].isalnum()  # replaced
    assert out[2] == (500, "boom-1")
    assert out[3][0] == 404 and len(out[3][1]) == 32
    assert out[4] == (200, "s-1")  # a streamed answer too
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("GET /ok 200 ") and m.endswith("request_id=abc-123")
               for m in lines)
    assert any(m.startswith("GET /boom 500 ") and m.endswith("request_id=boom-1")
               for m in lines)
    failed = [r for r in caplog.records if r.name == "livepulse.web"]
    assert failed and failed[0].getMessage().endswith("request_id=boom-1")
    assert not any("<script>" in m for m in lines)
    # the route, not the path: neither the user id nor the query reaches the log
    assert any(m.startswith("GET /users/{user_id} 200 ") for m in lines)
    assert not any("alice" in m or "secret" in m for m in lines)


@pytest.mark.parametrize(("body", "error"), [
    (b'{"consent": false, "consent": true}', "duplicate_key"),
    (b'{"consent":false,"source":"a","source":"b"}', "duplicate_key"),
    (b'{"\\u0063onsent": false, "consent": true}', "duplicate_key"),
    (b'{"consent": false, "source": "consent"}', None),
])
def test_json_bodies_naming_a_key_twice_are_refused(body: bytes, error: str | None) -> None:
    """The consent API's body reader (every JSON body of the API goes through it)."""

    async def consent(request: web.Request) -> web.Response:
        try:
            doc = await read_json_object(request)
        except BadRequest as bad:
            return web.json_response({"error": bad.error, "reason": bad.reason}, status=400)
        return web.json_response(doc)

    async def run() -> tuple[int, dict[str, Any]]:
        def routes(web_app: web.Application) -> None:
            web_app.router.add_post("/c", consent)

        async with serve(settings(), routes) as (h, p), ClientSession() as s, \
                s.post(f"http://{h}:{p}/c", data=body) as resp:
            return resp.status, orjson.loads(await resp.read())

    status, answer = asyncio.run(run())
    if error is None:
        assert (status, answer) == (200, {"consent": False, "source": "consent"})
    else:
        assert status == 400 and answer["error"] == error and "twice" in answer["reason"]


def test_without_tokens_streams_count_per_client_address() -> None:
    """An open API (loopback demo): a made-up ``?token=`` does not buy more streams."""
    slots = web_limits.StreamSlots(1, by_token=False)

    async def insight(room_id: str) -> dict[str, Any] | None:
        return {"room_id": room_id, "ts": 1}

    async def stream(request: web.Request) -> web.StreamResponse:
        return await room_stream(request, "r1", slots, insight, lambda: False)

    async def run() -> list[int]:
        def routes(web_app: web.Application) -> None:
            web_app.router.add_get("/s", stream)

        async with serve(settings(), routes) as (host, port), ClientSession() as s:
            first = await s.get(f"http://{host}:{port}/s?token=a")
            async with s.get(f"http://{host}:{port}/s?token=b") as second:
                statuses = [first.status, second.status]
            first.close()
            return statuses

    assert asyncio.run(run()) == [200, 429]
