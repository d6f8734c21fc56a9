"""Web API and the host's live page, served by Faust's web server on every worker.

Handlers read what the agents own (tables, the room pipeline's live rooms); they never
recompute. ``/api/users/{id}`` is routed to the worker that owns the user's partition.
"""

from __future__ import annotations

from faust.web import Request, Response, View
from prometheus_client import generate_latest

from agents.engine import Engine
from dashboards import HOST_PAGE_DIR
from streams.contracts import ALL_CONTRACTS, json_schema

# aiohttp refuses a charset inside content_type; Prometheus text format is UTF-8 anyway.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"


def register(engine: Engine) -> None:
    app, metrics = engine.app, engine.metrics
    host_page = (HOST_PAGE_DIR / "index.html").read_text(encoding="utf-8")

    def assigned_partitions() -> int:
        try:
            return len(app.consumer.assignment())
        except Exception:
            return 0

    @app.page("/")
    class HostPage(View):
        async def get(self, request: Request) -> Response:
            return self.html(host_page)

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "assigned_partitions": assigned_partitions()})

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
            rooms = app.livepulse_rooms.latest()
            return self.json({"rooms": sorted(rooms.values(), key=lambda r: r["room_id"])})

    @app.page("/api/rooms/{room_id}")
    class Room(View):
        async def get(self, request: Request, room_id: str) -> Response:
            rooms = app.livepulse_rooms.latest()
            if room_id not in rooms:
                return self.json({"error": "not_found", "room_id": room_id}, status=404)
            return self.json(rooms[room_id])

    counts_table = app.livepulse_user_counts

    @app.page("/api/users/{user_id}")
    class User(View):
        @app.table_route(table=counts_table, match_info="user_id")
        async def get(self, request: Request, user_id: str) -> Response:
            counts = counts_table.get(user_id)
            if counts is None:
                return self.json({"error": "not_found", "user_id": user_id}, status=404)
            return self.json({"user_id": user_id, "counts": counts})

    @app.page("/api/schemas")
    class Schemas(View):
        async def get(self, request: Request) -> Response:
            return self.json({c.name: json_schema(c) for c in ALL_CONTRACTS})

    del HostPage, Health, Metrics, Stats, Rooms, Room, User, Schemas  # registered on the app
