"""HTTP side of consent and erasure: requests are produced to the input topics, keyed by
user, so that the worker owning the user's partition applies them (any worker accepts).

* ``POST /api/users/{user_id}/consent`` with ``{"consent": false}`` (optional ``source``)
  -> a ``consent-event.v1`` record on ``<prefix>.consent``; ``202 {"accepted": true, ...}``
  once the broker has it. Bad bodies: ``400 {"error": ..., "reason": ...}`` (a key named
  twice, such as ``{"consent": false, "consent": true}``: ``duplicate_key``); a broker that
  does not take the record: ``503``.
* ``GET /api/users/{user_id}/footprint`` -> counts of what the owning worker holds about
  the user (profile, trigger state, model state, anomaly state): 0 after erasure.
* ``GET /api/users/{user_id}/erasure`` -> ``{"state": "none" | "pending" | "done",
  "request_id", ...}``: ``done`` once the owning worker's erasure is durable (the
  acknowledgement ``livepulse forget`` waits for).
* ``DELETE /api/users/{user_id}`` -> an ``erasure-request.v1`` record on
  ``<prefix>.erasure``; ``202``. The owning worker tombstones it once the erasure is
  durable, as for any request. (``livepulse forget`` also deletes ClickHouse rows and
  waits for the worker; see :mod:`agents.forget`.)
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from faust.web import Request, Response, View

from streams.contracts import CONSENT_EVENT, ERASURE_REQUEST, ContractError, check_contract
from streams.ingest import duplicate_key, now_ms

if TYPE_CHECKING:
    from agents.engine import Engine
    from agents.worker import Worker

MAX_BODY_BYTES = 4096
DELIVERY_TIMEOUT_S = 10.0


class BadRequest(ValueError):
    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


async def read_json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object (at most :data:`MAX_BODY_BYTES`)."""
    declared = request.content_length  # aiohttp's request (Faust passes it through)
    if declared is not None and declared > MAX_BODY_BYTES:
        raise BadRequest("too_large", f"body over {MAX_BODY_BYTES} bytes")
    body = await request.read()  # bounded in size and time (agents.web.limits)
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest("too_large", f"body over {MAX_BODY_BYTES} bytes")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("malformed_json", str(exc)[:200]) from None
    if not isinstance(doc, dict):
        raise BadRequest("not_an_object", "the body must be a JSON object")
    dup = duplicate_key(body, doc)
    if dup is not None:  # JSON parsers keep the last silently: ambiguous, refused
        raise BadRequest("duplicate_key", f"key {dup[:60]!r} occurs twice in the body")
    return doc


class Unavailable(RuntimeError):
    """The broker did not take the record (503: the client may retry)."""


async def produce(engine: Engine, topic: str, user_id: str, record: dict[str, Any]) -> None:
    """Send one record keyed by user and wait until the broker has it."""
    try:
        delivery = await engine.app.producer.send(topic, user_id.encode(),
                                                  orjson.dumps(record), None, None, None)
        await asyncio.wait_for(delivery, DELIVERY_TIMEOUT_S)
    except Exception as exc:  # any producer failure: the request was not accepted
        raise Unavailable(type(exc).__name__) from None


def unavailable(view: View, error: Unavailable) -> Response:
    return view.json({"error": "unavailable", "reason": f"broker did not take the record "
                      f"({error})"}, status=503)


def check_user_id(user_id: str) -> None:
    """A path's user id must be valid UTF-8 text (it becomes the record's key)."""
    try:
        user_id.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("bad_encoding", "user id is not valid UTF-8") from None


def consent_record(user_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """The consent record of a request body; BadRequest if it breaks the contract."""
    check_user_id(user_id)
    if "consent" not in body:
        raise BadRequest("missing_field", "consent (true or false) is required")
    record = {"user_id": user_id, "consent": body["consent"], "ts": now_ms(),
              "source": body.get("source", "api")}
    try:
        check_contract(CONSENT_EVENT, record)
    except ContractError as exc:
        raise BadRequest(exc.error_class, str(exc)[:200]) from None
    return record


async def request_erasure(engine: Engine, user_id: str, source: str = "api") -> dict[str, Any]:
    """Produce an erasure request for ``user_id``; return the record sent (BadRequest if
    the id breaks the contract, e.g. too long)."""
    from agents.forget import erasure_record

    check_user_id(user_id)
    record = erasure_record(user_id, source=source)
    try:
        check_contract(ERASURE_REQUEST, record)
    except ContractError as exc:
        raise BadRequest(exc.error_class, str(exc)[:200]) from None
    await produce(engine, engine.topics.erasure, user_id, record)
    return record


async def erasure_response(view: View, engine: Engine, user_id: str) -> Response:
    """``DELETE /api/users/{id}``: 202 with the request sent, or 400 JSON."""
    try:
        record = await request_erasure(engine, user_id)
    except BadRequest as bad:
        return view.json({"error": bad.error, "reason": bad.reason}, status=400)
    except Unavailable as error:
        return unavailable(view, error)
    return view.json({"accepted": True, "topic": engine.topics.erasure, **record}, status=202)


def register(worker: Worker) -> None:
    engine = worker.engine
    app = engine.app

    @app.page("/api/users/{user_id}/consent")
    class Consent(View):
        async def post(self, request: Request, user_id: str) -> Response:
            try:
                record = consent_record(user_id, await read_json_object(request))
            except BadRequest as bad:
                return self.json({"error": bad.error, "reason": bad.reason}, status=400)
            try:
                await produce(engine, engine.topics.consent, user_id, record)
            except Unavailable as error:
                return unavailable(self, error)
            return self.json({"accepted": True, "topic": engine.topics.consent, **record},
                             status=202)

    profiles = worker.users.profiles.table

    @app.page("/api/users/{user_id}/footprint")
    class Footprint(View):
        """What the owning worker holds about a user, as counts (no data): the erasure
        audit. ``held`` is 0 once the user is forgotten (or was never seen)."""

        @app.table_route(table=profiles, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            return self.json(footprint(worker, user_id))

    @app.page("/api/users/{user_id}/erasure")
    class Erasure(View):
        """The erasure acknowledgement of the owning worker: ``state`` ``done`` (with the
        ``request_id``) once its erasure of the user is durable -- offsets committed and
        model snapshots rewritten -- ``pending`` before, ``none`` if it applied none
        (agents.users.erasure)."""

        @app.table_route(table=profiles, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            return self.json(worker.eraser.status(user_id))

    del Consent, Footprint, Erasure  # registered on the app


def footprint(worker: Worker, user_id: str) -> dict[str, Any]:
    """Counts of the per-user state this worker holds about ``user_id``."""
    parts: dict[str, int] = {
        "profile": int(worker.users.profiles.get(user_id) is not None),
        "trigger_state": int(worker.promo.state.get(user_id) is not None),
        **worker.models.holds(user_id)}
    if worker.anomalies is not None:
        parts["anomaly_state"] = int(worker.anomalies.holds_user(user_id))
    # the rooms this worker holds (rooms follow every erasure)
    parts["rooms"] = worker.rooms.pipeline.rooms_naming(user_id)
    parts["rate_limit"] = int(user_id in worker.engine.hot_keys.buckets)  # hot-key quarantine
    return {"user_id": user_id, "held": sum(parts.values()), "parts": parts}
