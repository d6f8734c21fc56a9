"""Web API and the host's live page, served by Faust's web server on every worker.

Handlers read what the agents own (the room pipeline's last emitted insights, the profile
table, the Redis serving copy); they never recompute. Any worker answers for any key:

* a room this worker owns is answered from memory; any other room from Redis
  (``lp:room:{id}``, written by its owner at most every flush interval);
* a profile request is routed by Faust to the worker owning the user's partition
  (``table_route`` with :class:`streams.routing.OwnerRouter`: ``503`` while no live owner
  is known); the owner answers from its table, or from the Redis copy.

Unknown ids get ``404 {"error": "not_found", ...}``.

``/api/rooms/{id}/history`` (what the host's charts show on open) is answered by the room's
owner, from memory or its saved state (``table_route`` on the ``room-state`` table);
``/api/rooms/{id}/items?ids=`` reads titles from the ``catalog`` global table every worker
holds. The host pages carry ``LIVEPULSE_CURRENCY`` in a ``<meta name="livepulse-currency">``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web as aiohttp_web
from faust.web import Request, Response, View
from prometheus_client import generate_latest

from agents.anomalies.incidents import SCOPES
from agents.rooms.state import RoomState
from agents.web import auth as web_auth
from agents.web import errors as web_errors
from agents.web import limits as web_limits
from dashboards import HOST_PAGE_DIR
from streams.contracts import ALL_CONTRACTS, json_schema
from streams.ingest import now_ms

if TYPE_CHECKING:
    from agents.worker import Worker

# aiohttp refuses a charset inside content_type; Prometheus text format is UTF-8 anyway.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"
SSE_POLL_S = 0.1          # how often a stream checks for a newer insight
SSE_KEEPALIVE_S = 1.0     # a comment line at least this often keeps proxies from timing out
MAX_ITEM_IDS = 50          # ids per /api/rooms/{id}/items request
ITEM_FIELDS = ("title", "brand", "category", "price", "in_stock")
STATIC_TYPES = {".css": "text/css", ".js": "application/javascript", ".svg": "image/svg+xml",
                ".html": "text/html", ".png": "image/png"}


def _not_found(view: View, kind: str, key: str) -> Response:
    return view.json({"error": "not_found", kind: key}, status=404)


def item_facts(catalog: Any, raw_ids: str, currency: str) -> dict[str, Any]:
    """Catalog facts (:data:`ITEM_FIELDS` and ``currency``) of the comma-separated ids (at
    most :data:`MAX_ITEM_IDS`); an id not in the catalog is left out (the page shows it).

    >>> item_facts({"i1": {"item_id": "i1", "title": "Silk scarf", "price": 99.0}}, "i1,i9",
    ...            "CNY")
    {'i1': {'title': 'Silk scarf', 'price': 99.0, 'currency': 'CNY'}}
    """
    out: dict[str, Any] = {}
    for item_id in dict.fromkeys(raw_ids.split(",")[:MAX_ITEM_IDS]):
        found = catalog.get(item_id.strip()) if item_id.strip() else None
        if isinstance(found, dict):
            facts = {k: found[k] for k in ITEM_FIELDS if found.get(k) is not None}
            out[item_id.strip()] = {**facts, "currency": found.get("currency") or currency}
    return out


async def room_stream(request: Any, room_id: str, streams: web_limits.StreamSlots,
                      insight: Callable[[str], Awaitable[dict[str, Any] | None]],
                      stopping: Callable[[], bool]) -> aiohttp_web.StreamResponse:
    """The room's SSE stream (``404`` for an unknown room, ``429`` beyond the holder's
    concurrent streams). ``request`` is aiohttp's (Faust's aiohttp driver passes it)."""
    holder = streams.holder(request)
    if not streams.acquire(holder):
        return web_limits.too_many_streams(request, streams.limit)
    try:
        first = await insight(room_id)
        if first is None:
            return aiohttp_web.json_response({"error": "not_found", "room_id": room_id},
                                             status=404)
        response = aiohttp_web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no"})
        await response.prepare(request)
        last_ts, last_write = -1, time.monotonic()
        current: dict[str, Any] | None = first
        try:
            while not stopping():  # open streams end when the worker stops
                if current is not None and current["ts"] != last_ts:
                    last_ts = current["ts"]
                    await response.write(b"event: insight\ndata: " + orjson.dumps(current)
                                         + b"\n\n")
                    last_write = time.monotonic()
                elif time.monotonic() - last_write >= SSE_KEEPALIVE_S:
                    await response.write(b":keepalive\n\n")
                    last_write = time.monotonic()
                await asyncio.sleep(SSE_POLL_S)
                current = await insight(room_id)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response
    finally:
        streams.release(holder)


def register(worker: Worker) -> None:
    engine = worker.engine
    app, metrics = engine.app, engine.metrics
    web_errors.install(app.web.web_app, metrics.agent_errors.labels("web"))  # JSON 4xx/5xx
    currency = engine.settings.currency
    pages = {p.name: p.read_bytes().replace(b"{{currency}}", currency.encode())
             for p in HOST_PAGE_DIR.iterdir() if p.is_file() and p.suffix in STATIC_TYPES}
    rooms = worker.rooms.pipeline
    room_states = worker.rooms.state  # saved room states (agents.state.WriteBehindTable)
    catalog = worker.catalog
    profiles = worker.users.profiles
    web_auth.install(app, engine.settings)  # bearer tokens when LIVEPULSE_API_TOKEN is set
    # request ids, body-read timeout; the header timeout is set where Faust makes the app
    web_limits.install(app.web.web_app, engine.settings)
    streams = web_limits.StreamSlots(engine.settings.sse_max_streams_per_token,
                                     by_token=bool(engine.settings.api_token))

    def assigned_partitions() -> int:
        try:
            return len(app.consumer.assignment())
        except Exception:
            return 0

    async def room_insight(room_id: str) -> dict[str, Any] | None:
        found = rooms.insight_of(room_id)
        if found is None and engine.redis is not None:
            found = await engine.redis.read("room", room_id)
        return found

    @app.page("/")
    class IndexPage(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(pages["index.html"], content_type="text/html")

    @app.page("/rooms/{room_id}")
    class RoomPage(View):
        async def get(self, request: Request, room_id: str) -> Response:
            return self.bytes(pages["room.html"], content_type="text/html")

    @app.page("/static/{name}")
    class Static(View):
        async def get(self, request: Request, name: str) -> Response:
            body = pages.get(name)
            if body is None:
                return _not_found(self, "file", name)
            suffix = name[name.rfind("."):]
            return self.bytes(body, content_type=STATIC_TYPES[suffix])

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            redis_up = None if engine.redis is None else engine.redis.up
            assigned = assigned_partitions()
            # ready: holds partitions and their tables are recovered (events flow now)
            ready = bool(assigned) and not app.rebalancing and not app.in_recovery
            return self.json({"status": "ok", "assigned_partitions": assigned,
                              "ready": ready, "redis_up": redis_up})

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(metrics.registry),
                              content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/api/stats")
    class Stats(View):
        async def get(self, request: Request) -> Response:
            body = {**metrics.snapshot(), "assigned_partitions": assigned_partitions()}
            if request.query.get("samples"):
                body["latency_samples_ms"] = metrics.latency_samples()
            return self.json(body)

    @app.page("/api/rooms")
    class Rooms(View):
        async def get(self, request: Request) -> Response:
            found = dict(rooms.latest())
            if engine.redis is not None:
                others = [r for r in await engine.redis.index("room") if r not in found]
                found.update(await engine.redis.read_many("room", others))
            include_idle = request.query.get("all") in ("1", "true")
            listed = [r for r in found.values() if include_idle or r.get("live")]
            return self.json({"rooms": sorted(listed, key=lambda r: r["room_id"]),
                              "currency": currency})

    @app.page("/api/rooms/{room_id}/insights")
    class RoomInsights(View):
        async def get(self, request: Request, room_id: str) -> Response:
            found = await room_insight(room_id)
            return self.json(found) if found is not None else _not_found(self, "room_id",
                                                                          room_id)

    @app.page("/api/rooms/{room_id}/history")
    class RoomHistory(View):
        """Chart history (:meth:`agents.rooms.state.RoomState.history`), from the owner."""

        @app.table_route(table=room_states.table, match_info="room_id")
        async def get(self, request: Request, room_id: str) -> Response:
            found = rooms.history_of(room_id)
            if found is None:
                saved = room_states.get(room_id)
                if saved is None:
                    return _not_found(self, "room_id", room_id)
                found = RoomState.from_dict(saved).history()
            return self.json({**found, "currency": currency})

    @app.page("/api/rooms/{room_id}/items")
    class RoomItems(View):
        """Catalog titles of the items a room's page shows (``?ids=i1,i2``)."""

        async def get(self, request: Request, room_id: str) -> Response:
            return self.json({"currency": currency, "items": item_facts(
                catalog, request.query.get("ids", ""), currency)})

    @app.page("/api/rooms/{room_id}")
    class Room(View):  # short alias of /insights
        async def get(self, request: Request, room_id: str) -> Response:
            found = await room_insight(room_id)
            return self.json(found) if found is not None else _not_found(self, "room_id",
                                                                          room_id)

    @app.page("/api/rooms/{room_id}/stream")
    class RoomStream(View):
        """Server-Sent Events: ``event: insight`` whenever a newer insight exists."""

        async def get(self, request: Request, room_id: str) -> Any:
            return await room_stream(request, room_id, streams, room_insight,
                                     lambda: bool(app.should_stop))

    async def local_profile(user_id: str) -> dict[str, Any] | None:
        saved = profiles.get(user_id)
        if saved is None:
            return None
        return saved.view(now_ms())

    @app.page("/api/users/{user_id}/profile")
    class Profile(View):
        @app.table_route(table=profiles.table, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            found = await local_profile(user_id)
            if found is None and engine.redis is not None:
                found = await engine.redis.read("user", user_id)
            return self.json(found) if found is not None else _not_found(self, "user_id",
                                                                          user_id)

    models = worker.models
    headlines = worker.headlines

    @app.page("/api/users/{user_id}/recommendations")
    class Recommendations(View):
        """Top-K for the user's current session, ranked now by the owning worker's model."""

        @app.table_route(table=profiles.table, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            view = await local_profile(user_id)
            room_id = request.query.get("room_id") or (
                (view or {}).get("live", {}).get("current_room"))
            room = headlines.get(room_id) if room_id else None
            items = models.recommend(user_id, view, room)
            return self.json({
                "user_id": user_id, "ts": now_ms(), "known_user": view is not None,
                "model_version": models.recommender.model_version, "room_id": room_id,
                "items": items, "scores": models.scores.get(user_id, {})})

    @app.page("/api/models")
    class Models(View):
        async def get(self, request: Request) -> Response:
            return self.json(models.prequential())

    @app.page("/api/users/{user_id}")
    class User(View):  # short alias of /profile
        @app.table_route(table=profiles.table, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            found = await local_profile(user_id)
            return self.json(found) if found is not None else _not_found(self, "user_id",
                                                                          user_id)

        async def delete(self, request: Request, user_id: str) -> Response:
            """Erasure request (agents.web.privacy); 202 once the broker has it."""
            from agents.web.privacy import erasure_response

            return await erasure_response(self, engine, user_id)

    promo = worker.promo

    @app.page("/api/campaigns")
    class Campaigns(View):
        """Campaigns in force with their experiment figures (all workers' triggers)."""

        async def get(self, request: Request) -> Response:
            return self.json(promo.report(now_ms()))

    @app.page("/api/campaigns/{campaign_id}")
    class CampaignView(View):
        async def get(self, request: Request, campaign_id: str) -> Response:
            found = [c for c in promo.report(now_ms())["campaigns"] if c["id"] == campaign_id]
            return self.json(found[0]) if found else _not_found(self, "campaign_id",
                                                                campaign_id)

    @app.page("/api/campaigns/{campaign_id}/report")
    class CampaignReport(View):
        """Per variant x channel feedback figures (CTR, CVR, revenue, cost, ROAS) and the
        experiment's uplift vs holdout with its 95 % CI (``agents.promo.feedback``)."""

        async def get(self, request: Request, campaign_id: str) -> Response:
            found = promo.campaign_report(campaign_id, now_ms())
            return self.json(found) if found is not None else _not_found(
                self, "campaign_id", campaign_id)

    audiences = worker.users.audiences

    @app.page("/api/audiences")
    class AudienceList(View):
        """Audiences in force with their size among this worker's users, and the online
        segments with their en/zh descriptions (agents.users.audiences)."""

        async def get(self, request: Request) -> Response:
            if audiences is None:
                return self.json({"ts": now_ms(), "audiences": [], "segments": []})
            return self.json(audiences.report(now_ms()))

    @app.page("/api/audiences/{audience_id}")
    class AudienceView(View):
        """One audience: size, composition by segment, a sample of pseudonymous ids."""

        async def get(self, request: Request, audience_id: str) -> Response:
            found = audiences.report_one(audience_id, now_ms()) if audiences else None
            return self.json(found) if found is not None else _not_found(
                self, "audience_id", audience_id)

    @app.page("/api/users/{user_id}/triggers/{key}/audit")
    class TriggerAudit(View):
        """The audit record of one trigger decision (admin token; the trigger history is
        keyed by user, so the owning worker answers): rule, inputs, holdout and variant."""

        @app.table_route(table=profiles.table, match_info="user_id")
        async def get(self, request: Request, user_id: str, key: str) -> Response:
            found = promo.audit(user_id, key)
            return self.json(found) if found is not None else _not_found(
                self, "idempotency_key", key)

    anomalies = worker.anomalies

    @app.page("/api/anomalies")
    class Anomalies(View):
        """This worker's open and recently resolved incidents (``?scope=room|user|system``)."""

        async def get(self, request: Request) -> Response:
            scope = request.query.get("scope") or None
            if scope is not None and scope not in SCOPES:
                return self.json({"error": "bad_scope", "scope": scope,
                                  "expected": list(SCOPES)}, status=400)
            return self.json(anomalies.snapshot(scope))

    @app.page("/api/schemas")
    class Schemas(View):
        async def get(self, request: Request) -> Response:
            return self.json({c.name: json_schema(c) for c in ALL_CONTRACTS})

    del (IndexPage, RoomPage, Static, Health, Metrics, Stats, Rooms, RoomInsights, Room,
         RoomHistory, RoomItems,
         RoomStream, Profile, Recommendations, Models, User, Campaigns, CampaignView,
         Anomalies, Schemas)  # registered on the app
