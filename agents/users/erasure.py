"""Erasure (``livepulse forget USER_ID``): forget one user everywhere the engine keeps them.

The request travels on the compacted input topic ``<prefix>.erasure`` (key user_id,
contract ``erasure-request.v1``), so the worker that owns the user's partition -- the only
one holding the user's state -- applies it, in order with the user's events, on the user
pipeline (:meth:`Eraser.on_request`):

* profile: removed from the ``user-profiles`` table with a changelog tombstone (the
  compacted changelog's latest record for the key is null; a restart recovers nothing);
* trigger history: ``promo-state`` entry deleted (a tombstone too);
* online models (:meth:`agents.models.ModelHost.forget`): latest scores, the user's
  recommender sessions, purchase filter and MF factors, pending delayed labels;
* anomaly watch (:meth:`agents.anomalies.monitor.AnomalyMonitor.forget_user`): per-user click
  statistics and the user's incidents;
* Redis: ``{ns}:user:{id}`` deleted and the id removed from ``{ns}:users:index``.

Then ``GET /api/users/{id}/profile`` answers 404: the CLI's acknowledgement. The CLI also
deletes the user's ClickHouse rows and Redis keys itself (belt and braces) and finally sends
a tombstone for the key on the erasure topic, which the worker skips: compaction then drops
the request (and with it the raw user id) from the topic.

Events of the user that arrive later start a fresh profile (defaults: consent true, no
history): erasure is not a block list. A user who also wants no personalization sends a
consent opt-out again. Records already emitted to output topics stay until those topics'
retention deletes them; aggregates the user contributed to (room counts, item popularity,
model weights) are not per-user data and stay.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from agents.privacy import pseudonym_key, pseudonymize
from streams.contracts import ERASURE_REQUEST
from streams.ingest import Validator

if TYPE_CHECKING:
    from agents.anomalies.monitor import AnomalyMonitor
    from agents.engine import Engine
    from agents.models import ModelHost
    from agents.promo.triggers import PromoTriggers
    from agents.users.store import ProfileStore

log = logging.getLogger("livepulse.erasure")

NEVER_TOO_OLD_MS = 1 << 62  # an erasure request applies however old it is


class Eraser:
    """Applies erasure requests on the user pipeline of the worker owning the user."""

    def __init__(self, engine: Engine, profiles: ProfileStore, models: ModelHost,
                 promo: PromoTriggers, anomalies: AnomalyMonitor | None = None) -> None:
        self.engine = engine
        self.profiles = profiles
        self.models = models
        self.promo = promo
        self.anomalies = anomalies
        settings = engine.settings
        self.key = pseudonym_key(settings)
        self.validator = Validator(
            ERASURE_REQUEST, max_bytes=settings.max_event_bytes,
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
            max_age_ms=NEVER_TOO_OLD_MS)
        self.erased = Counter(
            "livepulse_erasures_total", "Erasure requests applied (users forgotten), by "
            "whether the worker held a profile for the user.", ["found"],
            registry=engine.metrics.registry)

    async def on_request(self, message: Any) -> None:
        """Forget the user of one erasure record; a tombstone (request done) is skipped."""
        if message.value is None:
            return  # the CLI's "done" marker: compaction removes the request
        engine = self.engine
        record = await engine.admit(self.validator, message, key_is_user=True)
        if record is None:
            return
        user = record.user_id
        summary = self.forget(user, message.partition)
        self.erased.labels(str(summary["profile"] > 0).lower()).inc()
        log.info("erased user %s (pseudonym): %s", pseudonymize(user, self.key), summary)

    def forget(self, user: str, partition: int) -> dict[str, int]:
        """Remove every piece of per-user state this worker holds; return what it found."""
        engine = self.engine
        saved = self.profiles.get(user)
        sessions = [saved.session_id] if saved is not None and saved.session_id else []
        summary = {"profile": int(self.profiles.delete(user, partition))}
        promo_state = self.promo.state
        summary["trigger_state"] = int(promo_state.get(user) is not None)
        if summary["trigger_state"]:
            promo_state.delete(user, partition)
        summary.update(self.models.forget(user, sessions))
        if self.anomalies is not None:
            summary["anomaly_incidents"] = self.anomalies.forget_user(user)
        if engine.redis is not None:
            engine.redis.add("user", user, {})  # empty document: DEL + index ZREM
        return summary
