"""agents.web.errors: every error of the web app is JSON; a handler bug is a counted 500."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from agents.web.errors import install


async def _requests(calls: list[tuple[str, str]]) -> tuple[list[tuple[int, str, Any]], float]:
    errors = Counter("errors", "test", registry=CollectorRegistry())

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def teapot(request: web.Request) -> web.Response:
        return web.Response(text="short and stout", status=418)

    app = web.Application()
    install(app, errors)
    app.router.add_get("/ok", ok)
    app.router.add_get("/boom", boom)
    app.router.add_get("/teapot", teapot)
    async with TestClient(TestServer(app)) as client:
        out = []
        for method, path in calls:
            resp = await client.request(method, path)
            body = await resp.read()
            out.append((resp.status, resp.content_type, orjson.loads(body)))
    return out, errors._value.get()


def test_errors_are_json_and_bugs_are_counted() -> None:
    answers, counted = asyncio.run(_requests([
        ("GET", "/ok"), ("GET", "/nowhere/%F0%9F%98%80"), ("DELETE", "/ok"), ("GET", "/boom"),
        ("GET", "/teapot")]))
    assert answers[0] == (200, "application/json", {"ok": True})
    status, kind, body = answers[1]
    assert (status, kind, body["error"], body["status"]) == (404, "application/json",
                                                             "not_found", 404)
    assert body["path"] == "/nowhere/\U0001f600"
    assert answers[2][0] == 405 and answers[2][2]["error"] == "method_not_allowed"
    assert answers[3][0] == 500 and answers[3][2] == {
        "error": "internal_server_error", "status": 500, "path": "/boom",
        "detail": "RuntimeError"}
    assert answers[4][0] == 418 and answers[4][2]["error"] == "i_m_a_teapot"
    assert counted == 1


def test_failure_and_access_lines_name_no_user_id(caplog: Any) -> None:
    """A path may carry a user id (``/api/users/<id>/...``): the failure line names the
    route's template, the access line of an unmatched path the path with the id replaced;
    the JSON answer, returned to the caller only, still echoes the path."""
    import logging

    from agents.web.limits import request_ids

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    async def run() -> list[Any]:
        app = web.Application()
        install(app)
        app.middlewares.insert(0, request_ids())
        app.router.add_get("/api/users/{user_id}/boom", boom)
        async with TestClient(TestServer(app)) as client:
            out = []
            for path in ("/api/users/ann%40example.com/boom", "/api/users/bob-77/nothing",
                         "/api/rooms/r1/call-me-on-+44%2020%207946%200958"):
                resp = await client.get(path)
                out.append((resp.status, orjson.loads(await resp.read())))
            return out

    with caplog.at_level(logging.INFO, logger="livepulse.web"):
        answers = asyncio.run(run())
    assert [status for status, _ in answers] == [500, 404, 404]
    assert answers[0][1]["path"] == "/api/users/ann@example.com/boom"  # the caller's own
    logged = "\n".join(r.getMessage() for r in caplog.records)
    failure = [r.getMessage() for r in caplog.records if r.name == "livepulse.web"]
    assert failure == ["web handler failed on GET /api/users/{user_id}/boom request_id="
                       + failure[0].rsplit("=", 1)[1]]
    assert "GET /api/users/{user_id}/nothing 404" in logged
    assert "GET /api/rooms/r1/call-me-on-[phone] 404" in logged
    for personal in ("ann", "example.com", "bob-77", "7946"):
        assert personal not in logged, personal
