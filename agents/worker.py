"""One worker, wired explicitly: tables, topics, handlers, sinks, web and timers.

``build_engine(settings)`` is the single place that builds a worker; ``livepulse worker``
runs it, tests build it too. Each pipeline gets what it uses as arguments (no attributes
hung on the Faust app); the batch handlers and commit hooks reach the Faust transport
through the :class:`~streams.app.WorkerHooks` the app is created with.

Order matters only where one part reads another's object: the catalog and the room
pipeline first (their global tables are the user pipeline's context), the anomaly monitor
on the room pipeline, the promo triggers before the user pipeline (the decider runs there),
then the web views over all of them.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from typing import Any

from agents import catalog, loop_watch, observability
from agents.anomalies.agent import register as register_anomalies
from agents.anomalies.monitor import AnomalyMonitor
from agents.engine import Engine
from agents.models import ModelHost
from agents.promo.triggers import PromoTriggers
from agents.promo.triggers import register as register_promo
from agents.rooms.pin_next import PinNext
from agents.rooms.pipeline import RoomHandler
from agents.rooms.pipeline import register as register_rooms
from agents.sinks.redis import RedisSink, RedisSinkMetrics
from agents.stats import EngineMetrics
from agents.users.erasure import Eraser
from agents.users.pipeline import UserHandler
from agents.users.pipeline import register as register_users
from agents.web.privacy import register as register_privacy_api
from agents.web.routes import register as register_web
from config.settings import Settings
from online_models import recsys, text
from streams.app import WorkerHooks, create_app
from streams.topics import topic_names

log = logging.getLogger("livepulse.worker")


@dataclass
class Worker:
    """Everything one worker runs, as its parts (the web views and tests read them)."""

    engine: Engine
    catalog: Any
    rooms: RoomHandler
    headlines: Any
    users: UserHandler
    models: ModelHost
    promo: PromoTriggers
    anomalies: AnomalyMonitor
    eraser: Eraser
    clickhouse: Any = None

    @property
    def app(self) -> Any:
        return self.engine.app


def build_redis_sink(settings: Settings, metrics: EngineMetrics) -> RedisSink | None:
    if not settings.redis_url.strip():
        return None
    return RedisSink(
        settings.redis_url,
        ttl_s={"room": settings.redis_room_ttl_s, "user": settings.redis_profile_ttl_s},
        flush_interval_s=settings.redis_flush_interval_ms / 1000,
        max_pending=settings.redis_max_pending,
        namespace=settings.redis_namespace,
        metrics=RedisSinkMetrics(metrics.registry),
        ssl_ca_certs=settings.redis_tls_ca_file or None,
    )


def build_worker(settings: Settings, bootstrap: str | None = None) -> Worker:
    """Build the Faust app and every pipeline of one worker."""
    took = recsys.warm_up()  # compiled kernels ready before the first event
    text.warm_up()  # the Chinese word dictionary of comment keywords (~1 s)
    log.info("recommender kernels ready in %.1f s", took)
    hooks = WorkerHooks()
    app = create_app(settings, bootstrap, hooks)
    metrics = EngineMetrics()
    engine = Engine(app=app, settings=settings, topics=topic_names(settings), metrics=metrics,
                    hooks=hooks, redis=build_redis_sink(settings, metrics))
    if engine.redis is not None:
        sink = engine.redis

        @app.task
        async def serve_to_redis() -> None:
            await sink.run()  # flushes once more when Faust cancels it at shutdown

    items = catalog.register(engine)
    room_handler, headlines = register_rooms(engine)
    anomalies = register_anomalies(engine, room_handler.pipeline)
    promo = register_promo(engine)
    user_handler, models, eraser = register_users(engine, items, headlines, promo, anomalies)
    # pin next: the room pipeline reads the catalog and the user pipeline's viewer summaries
    pin_next = room_handler.pipeline.pin_next = PinNext(items, user_handler.interests)
    room_handler.pipeline.observers.append(pin_next.observe)
    worker = Worker(engine=engine, catalog=items, rooms=room_handler, headlines=headlines,
                    users=user_handler, models=models, promo=promo, anomalies=anomalies,
                    eraser=eraser)
    register_web(worker)
    register_privacy_api(worker)  # consent API (erasure: DELETE /api/users/{id} in web)
    observability.register(engine, room_handler.pipeline)  # lag, table sizes, rebalances
    loop_watch.register(app, metrics.registry, settings.loop_stall_ms)
    # last before each commit: what the hooks above wrote (changelogs) to the producer;
    # Faust then flushes the producer and commits the offsets fixed before the hooks ran
    hooks.before_commit.append(engine.outputs.drain)
    freeze_heap_after_recovery(app)
    if settings.clickhouse_url.strip():
        from agents.sinks import clickhouse as clickhouse_sink

        # history: its own consumer group, see the module
        worker.clickhouse = clickhouse_sink.register(engine)
    return worker


def freeze_heap_after_recovery(app: Any) -> None:
    """After each rebalance (tables recovered), move the heap to the permanent generation.

    Recovered tables and models are hundreds of thousands of long-lived objects; every
    full collection walked them all again (tens of ms, a latency spike each time).
    ``gc.freeze`` leaves them out of later collections (objects freed by reference count
    are still freed; only cycles among frozen objects stay until the next freeze).
    """

    @app.on_rebalance_complete.connect
    async def freeze_heap(sender: Any, **_: Any) -> None:
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.info("heap frozen after recovery: %d objects, %.0f ms", gc.get_freeze_count(),
                 (time.perf_counter() - started) * 1000)


def build_engine(settings: Settings, bootstrap: str | None = None) -> Engine:
    """The engine of a fully wired worker (``build_worker(...).engine``)."""
    return build_worker(settings, bootstrap).engine
