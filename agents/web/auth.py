"""Access control of the web API and host pages: bearer tokens, checked by one middleware.

When ``LIVEPULSE_API_TOKEN`` is set (required when the web server binds beyond loopback,
see ``Settings.check_security``), every request needs a token, sent as
``Authorization: Bearer <token>`` or as ``?token=<token>`` (page links and ``EventSource``,
which cannot send headers):

* the API token (admin) opens everything;
* a room's host token opens that room's page and room API only: ``/rooms/{id}``,
  ``/api/rooms/{id}``, ``/api/rooms/{id}/insights``, ``/api/rooms/{id}/stream``,
  ``/api/rooms/{id}/history`` and ``/api/rooms/{id}/items``. Host
  tokens are ``HMAC-SHA256(LIVEPULSE_HOST_TOKEN_KEY or the API token, room id)``, so no
  token table exists: ``livepulse host-token ROOM`` prints one, and changing the key
  revokes them all;
* ``/healthz`` and the page assets under ``/static/`` are open; ``/metrics`` is open only
  with ``LIVEPULSE_METRICS_PUBLIC=true`` (Prometheus can send a bearer token).

No token: ``401 {"error": "unauthorized"}``; a token that does not open the path: ``403``
with the same body. Tokens are compared in constant time and never logged. Without an API
token (loopback bind) the middleware is not installed: the demo stays open.

>>> host_token("key", "room-1") == host_token("key", "room-1") != host_token("key", "room-2")
True
>>> room_of("/api/rooms/r%201/stream"), room_of("/rooms/r1"), room_of("/api/rooms")
('r 1', 'r1', None)
>>> room_of("/rooms/r1/insights"), room_of("/api/rooms/r1/other")
(None, None)
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable

from aiohttp import web

from config.settings import Settings

log = logging.getLogger("livepulse.web_auth")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz"})
OPEN_PREFIXES = ("/static/",)
# Paths a room's host token opens (the room id is the group, still URL-encoded).
ROOM_PATHS = (re.compile(r"^/rooms/([^/]+)/?$"),
              re.compile(r"^/api/rooms/([^/]+)(?:/insights|/stream|/history|/items)?/?$"))


def host_token(key: str, room_id: str) -> str:
    """The token that opens ``room_id``'s page and room API (hex HMAC-SHA256, 128 bits)."""
    digest = hmac.new(key.encode(), b"livepulse-host:" + room_id.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def room_of(path: str) -> str | None:
    """The room id of a path that a host token may open, else None."""
    for pattern in ROOM_PATHS:
        found = pattern.match(path)
        if found is not None:
            return urllib.parse.unquote(found.group(1))
    return None


def request_token(request: web.Request) -> str:
    """The bearer token of a request (header first, then ``?token=``); empty if none."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.query.get("token", "")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refuse(status: int, detail: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="livepulse"'} if status == 401 else None
    return web.json_response({"error": "unauthorized", "detail": detail}, status=status,
                             headers=headers)


def access_middleware(settings: Settings) -> Callable[[web.Request, Handler],
                                                      Awaitable[web.StreamResponse]]:
    """The aiohttp middleware enforcing the rules of the module docstring."""
    api_token = settings.api_token
    host_key = settings.host_token_key or api_token
    metrics_public = settings.metrics_public

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if (path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
                or (metrics_public and path == "/metrics")):
            return await handler(request)
        given = request_token(request)
        if not given:
            return _refuse(401, "send Authorization: Bearer <token>")
        if _same(given, api_token):
            return await handler(request)
        room = room_of(request.raw_path.split("?", 1)[0])
        if room is not None and _same(given, host_token(host_key, room)):
            return await handler(request)
        return _refuse(403, "this token does not open this path")

    return check_access


def install(app: object, settings: Settings) -> bool:
    """Add the access middleware to the Faust app's aiohttp application when the settings
    ask for tokens; True if installed."""
    if not settings.api_token:
        return False
    web_app = app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(access_middleware(settings))
    log.info("web API requires a bearer token (/metrics %s)",
             "open" if settings.metrics_public else "protected")
    return True
