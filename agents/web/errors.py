"""JSON errors for the whole web API: one aiohttp middleware on Faust's web app.

Faust views answer their own errors in JSON, but aiohttp answers unknown routes (404),
unsupported methods (405) and oversize bodies (413) in text, and a bug in a handler becomes
its plain-text 500. This middleware turns every 4xx/5xx that is not JSON into
``{"error": <machine name>, "status": N, "path": ...}`` and any unexpected exception into a
JSON 500 (logged with its traceback, counted in ``livepulse_agent_errors_total{agent="web"}``).
The JSON answer echoes the path to the caller; a log line names the path as
:func:`logged_path` does (a path may carry a user id: ``/api/users/{user_id}/...``).

>>> error_name(404), error_name(405), error_name(413)
('not_found', 'method_not_allowed', 'request_entity_too_large')
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from agents.redaction import redact_text

log = logging.getLogger("livepulse.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PATH_ECHO_CHARS = 200  # the path is echoed for debugging; a huge one is clipped
KEPT_HEADERS = frozenset({"allow", "retry-after"})  # of an error's headers, into its JSON
REQUEST_ID = web.RequestKey("request_id", str)  # set by agents.web.limits.request_ids
_USER_SEGMENT = re.compile(r"(/users/)[^/]+")


def redacted_path(path: str) -> str:
    """``path`` fit for a log line when no route matched it: the segment after ``/users/``
    (a user id) replaced by ``{user_id}``, e-mail addresses, phone numbers, links and
    @handles elsewhere redacted (:func:`agents.redaction.redact_text`), clipped.

    >>> redacted_path("/api/users/ann@example.com/profil")
    '/api/users/{user_id}/profil'
    >>> redacted_path("/api/rooms/r-1/x/+44 20 7946 0958")
    '/api/rooms/r-1/x/[phone]'
    """
    return redact_text(_USER_SEGMENT.sub(r"\1{user_id}", path))[:PATH_ECHO_CHARS]


def logged_path(request: web.Request) -> str:
    """What a log line names of ``request``'s path: the matched route's template
    (``/api/users/{user_id}/erasure``: no user id in the logs), else :func:`redacted_path`;
    never the query string (it may hold a token)."""
    resource = getattr(getattr(request.match_info, "route", None), "resource", None)
    canonical = getattr(resource, "canonical", None)
    return canonical[:PATH_ECHO_CHARS] if canonical else redacted_path(request.path)


def error_name(status: int) -> str:
    """A stable machine name for an HTTP status (``404`` -> ``not_found``)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        return "client_error" if status < 500 else "server_error"
    return "".join(c if c.isalnum() else "_" for c in phrase.lower()).strip("_").replace(
        "__", "_")


def json_error(status: int, request: web.Request, headers: Any = None,
               **extra: Any) -> web.Response:
    body = {"error": error_name(status), "status": status,
            "path": request.path[:PATH_ECHO_CHARS], **extra}
    kept = {k: v for k, v in (headers or {}).items() if k.lower() in KEPT_HEADERS}
    return web.Response(body=orjson.dumps(body), status=status,
                        content_type="application/json", headers=kept)


def _is_json(response: web.StreamResponse) -> bool:
    return (response.content_type or "").endswith("json")


def json_errors(errors: Any = None) -> Any:
    """The middleware; ``errors`` (a Prometheus counter child) counts unexpected errors."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own: 404 unknown route, 405, 413...
            if exc.status < 400:
                raise
            return json_error(exc.status, request, exc.headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("web handler failed on %s %s request_id=%s", request.method,
                          logged_path(request), request.get(REQUEST_ID, "-"))
            if errors is not None:
                errors.inc()
            return json_error(500, request, detail=type(exc).__name__)
        if response.status >= 400 and not response.prepared and not _is_json(response):
            return json_error(response.status, request, response.headers)
        return response

    return middleware


def install(web_app: web.Application, errors: Any = None) -> None:
    """Register the middleware outermost, so it also sees other middlewares' answers."""
    web_app.middlewares.insert(0, json_errors(errors))
