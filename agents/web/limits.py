"""HTTP limits of the web server: read timeouts, a body cap, SSE streams per token, request ids.

* **Header-read timeout** (``LIVEPULSE_HTTP_HEADER_TIMEOUT_S``): aiohttp's keep-alive timer
  runs from the moment a connection is made (and again after each response) and closes the
  connection if no complete request head arrived by then, however slowly bytes trickle in.
  ``streams.app.web_application_options`` sets it (and the body cap) on the aiohttp
  application Faust creates.
* **Body-read timeout** (``LIVEPULSE_HTTP_BODY_TIMEOUT_S``) and cap (64 KiB,
  ``streams.app.WEB_MAX_BODY_BYTES``): the :func:`read_bodies` middleware reads a request's
  body before its handler runs (the handler's ``request.read()`` then returns it); a body
  that does not arrive in time is a ``408`` and the connection is closed, a larger one a
  ``413``.
* **Concurrent SSE streams** (``LIVEPULSE_SSE_MAX_STREAMS_PER_TOKEN``): :class:`StreamSlots`
  counts open room streams per bearer token (per client address when the API is open);
  beyond the cap a new stream is refused with ``429``.
* **Request ids**: :func:`request_ids` takes a sane ``X-Request-Id`` from the client or makes
  one, echoes it on every response (also streamed ones) and writes it into the access log
  line (``livepulse.web.access``: DEBUG for answers below 400, INFO for 4xx, WARNING for
  5xx; the route template, not the path: no user id in the logs) and into the error log
  line of a failed handler (``agents.web.errors``). Faust forwards a request to the worker
  owning its key with its headers: both workers log the same id.

Every refusal is JSON like the other errors (``agents.web.errors``).

>>> request_id_of("req-1.2_3:x"), len(request_id_of("bad id\\n")), len(request_id_of(""))
('req-1.2_3:x', 32, 32)
>>> slots = StreamSlots(limit=1)
>>> slots.acquire("t"), slots.acquire("t"), slots.acquire("other")
(True, False, True)
>>> slots.release("t"); slots.acquire("t"), slots.open("t")
(True, 1)
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from agents.web.auth import request_token
from agents.web.errors import REQUEST_ID, json_error, logged_path

log = logging.getLogger("livepulse.web.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def request_id_of(given: str | None) -> str:
    """``given`` if it is a sane id (1-128 of ``A-Za-z0-9._:/+=-``), else a new one."""
    if given and _SANE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def route_of(request: web.Request) -> str:
    """What an access line names: :func:`agents.web.errors.logged_path` (the matched
    route's template, else the path with user ids and contact details redacted)."""
    return logged_path(request)


def request_ids() -> Any:
    """The middleware giving each request its id (outermost: it sees every answer)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request[REQUEST_ID] = request_id_of(request.headers.get(REQUEST_ID_HEADER))
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            level = (logging.DEBUG if status < 400 else logging.INFO if status < 500
                     else logging.WARNING)
            if log.isEnabledFor(level):
                log.log(level, "%s %s %d %.1f ms request_id=%s", request.method,
                        route_of(request), status, (time.perf_counter() - started) * 1000,
                        rid)

    return middleware


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers[REQUEST_ID_HEADER] = rid


def read_bodies(timeout_s: float) -> Any:
    """The middleware reading each request body within ``timeout_s`` (408 otherwise)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.body_exists:
            try:
                async with asyncio.timeout(timeout_s):
                    await request.read()  # kept by aiohttp: the handler's read() returns it
            except TimeoutError:
                response = json_error(408, request, detail=f"the request body did not "
                                      f"arrive within {timeout_s:g} s")
                response.force_close()
                return response
        return await handler(request)

    return middleware


class StreamSlots:
    """Open streams per holder, at most ``limit`` each (0: no limit). The holder is the
    request's bearer token when the API requires tokens (only valid ones reach a handler),
    else the client's address (an open API's ``?token=`` means nothing: no way around)."""

    def __init__(self, limit: int, by_token: bool = True) -> None:
        self.limit = limit
        self.by_token = by_token
        self._open: dict[str, int] = {}

    def holder(self, request: web.Request) -> str:
        token = request_token(request) if self.by_token else ""
        return f"token:{token}" if token else f"addr:{request.remote}"

    def acquire(self, holder: str) -> bool:
        held = self._open.get(holder, 0)
        if self.limit and held >= self.limit:
            return False
        self._open[holder] = held + 1
        return True

    def release(self, holder: str) -> None:
        held = self._open.get(holder, 0) - 1
        if held > 0:
            self._open[holder] = held
        else:
            self._open.pop(holder, None)

    def open(self, holder: str) -> int:
        return self._open.get(holder, 0)


def too_many_streams(request: web.Request, limit: int) -> web.Response:
    """``429`` JSON for a stream beyond the cap."""
    return json_error(429, request, {"Retry-After": "5"},
                      detail=f"at most {limit} concurrent streams per token", limit=limit)


def install(web_app: web.Application, settings: Any) -> None:
    """Request ids outermost (before ``agents.web.errors``), body reads innermost (after the
    access check: an unauthenticated body is never read by a handler). Call after the
    errors and auth middlewares are installed."""
    web_app.middlewares.insert(0, request_ids())
    web_app.middlewares.append(read_bodies(max(0.1, settings.http_body_timeout_s)))
    web_app.on_response_prepare.append(_echo_request_id)
