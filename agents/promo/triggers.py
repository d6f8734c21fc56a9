"""Promo triggers in the worker: decisions on the user pipeline, consent, runtime campaign
updates and attribution figures. The decisions themselves are :mod:`agents.promo.campaigns`.

* The user pipeline calls :meth:`PromoTriggers.on_event` after the profile and model update
  of every event: the decider runs (no I/O), triggers go to ``promo-triggers`` (key
  user_id), trigger and conversion records to ``attribution`` (key user_id). Per-user state
  (recent triggers: caps, attribution, redelivery) is the ``promo-state`` table keyed by
  user, the spend of each partition the ``promo-budget`` table keyed ``campaign|partition``:
  both are written from the user pipeline's events, so they move with its partitions.
* Consent records (``<prefix>.consent``, key user_id) come through the user pipeline's
  channel too (:meth:`PromoTriggers.on_consent`): the newest decision is folded into the
  profile; an opt-out also deletes the user's trigger history.
* Every worker reads *all* of ``<prefix>.campaigns`` and ``<prefix>.attribution`` with a
  :class:`streams.control.ControlTopicReader` (every partition from the beginning, no
  consumer group): the
  campaign book is the file's campaigns plus the topic's updates, and the experiment figures
  (``GET /api/campaigns``, ``livepulse_campaign_uplift``) cover every worker's triggers.
  It reads ``<prefix>.ad-feedback`` and ``<prefix>.promo-triggers`` the same way: the
  campaign reports (sent and feedback per variant) and the bandit weights
  (:mod:`agents.promo.bandit`) are the deployment's on every worker.
  The campaigns topic is read to its end once while the engine is built, before Faust
  starts (so a campaign disabled at run time does not fire again after a restart, and no
  agent ever waits for it: an agent that blocks during Faust's start-up recovery made the
  worker skip input on the embedded broker); the follower task goes on from there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

import config
from agents.promo.bandit import Bandits
from agents.promo.campaigns import (
    Campaign,
    CampaignBook,
    CampaignError,
    CampaignStats,
    Decider,
    EventFacts,
    audit_record,
)
from agents.promo.feedback import KINDS as FEEDBACK_KINDS
from agents.promo.feedback import CampaignReports
from agents.promo.feedback import register as register_feedback
from agents.state import WriteBehindTable
from agents.users.profile import UserProfile
from config.settings import Settings
from streams.codecs import dumps_kept
from streams.contracts import AD_FEEDBACK, CONSENT_EVENT, SCHEMA_VERSION
from streams.control import ControlTopicReader
from streams.ingest import Validator, now_ms
from streams.security import kafka_client_options

if TYPE_CHECKING:
    from agents.engine import Engine
    from agents.users.store import ProfileStore

log = logging.getLogger("livepulse.triggers")

PACKAGED_CAMPAIGNS = Path(config.__file__).resolve().parent / "campaigns.yaml"
LOAD_TIMEOUT_S = 15.0         # longest the start-up read of the campaigns topic may take
CONTROL_FETCH_WAIT_MS = 100   # campaigns / attribution are control traffic: no busy polling
UPLIFT_EXPORT_S = 5.0
NEVER_TOO_OLD_MS = 1 << 62    # a consent decision applies however old it is


def stored_state(saved: Any) -> dict[str, Any] | None:
    """A user's ``promo-state`` value: held as JSON bytes (a dict once recovered).

    >>> stored_state(b'{"v":1,"r":[]}'), stored_state({"v": 1, "r": []}), stored_state(None)
    ({'v': 1, 'r': []}, {'v': 1, 'r': []}, None)
    """
    if isinstance(saved, bytes | bytearray | memoryview):
        return orjson.loads(saved)
    return saved


def campaigns_path(settings: Settings) -> Path:
    return Path(settings.campaigns_file) if settings.campaigns_file else PACKAGED_CAMPAIGNS


def bootstrap_of(app: Any) -> str:
    """``host:port,...`` of the Faust app's brokers."""
    return ",".join(f"{url.host}:{url.port}" for url in app.conf.broker)


class PromoTriggers:
    """The worker side of the promo triggers (one per engine)."""

    def __init__(self, engine: Engine, book: CampaignBook, state: WriteBehindTable,
                 budget: WriteBehindTable) -> None:
        self.engine = engine
        self.names = engine.topics
        self.book = book
        self.stats = CampaignStats()
        self.feedback = CampaignReports(known=lambda cid: book.get(cid) is not None)
        self.bandits = Bandits(lambda cid: self.book.get(cid), self.feedback.variant_counts)
        self.feedback.listeners.append(self.bandits.on_feedback)
        self.decider = Decider(book, engine.settings.partitions, self.bandits.weights)
        self.feedback_validator = engine.validator(AD_FEEDBACK)
        self.state = state      # write-behind table: user -> {"v", "r": [recent triggers]}
        self.budget = budget    # write-behind table: "campaign|partition" -> spent
        self.synced = False     # the campaigns topic was read to its end at least once
        self.consent_validator = Validator(
            CONSENT_EVENT, max_bytes=engine.settings.max_event_bytes,
            max_future_skew_ms=int(engine.settings.max_future_skew_s * 1000),
            max_age_ms=NEVER_TOO_OLD_MS)
        self.positions: dict[TopicPartition, int] = {}
        # the campaign gauge series exported last time: (gauge, labels) -> child
        self._exported: dict[tuple[Any, tuple[str, ...]], Any] = {}

    # ------------------------------------------------------------------ user pipeline
    def on_event(self, live: bool, partition: int, record: Any, view: dict[str, Any],
                 room: dict[str, Any] | None, previous_ts: int | None) -> None:
        """Decide for one user event (after its profile and model update); its outputs
        join the batch being handled (``engine.add_output``). ``live``: the event came
        through the ``user-activity`` hop (a live-room event), else a click."""
        kind = record.type
        if kind == "purchase":
            value = record.amount if live else (record.price or 0.0) * (record.quantity or 1)
        elif not self.book.listening(kind):
            return  # no campaign listens, no conversion to attribute: nothing to decide
        else:
            value = None
        user = record.user_id
        facts = EventFacts(
            user_id=user, type=kind, ts=record.ts, event_id=record.event_id,
            source_topic=self.names.live_events if live else self.names.clicks,
            source="live" if live else "clicks", room_id=getattr(record, "room_id", None),
            item_id=record.item_id, value=value, partition=partition, previous_ts=previous_ts)
        decision = self.decider.on_event(
            facts, view, room, view.get("scores"),
            load_state=lambda: stored_state(self.state.get(user)),
            spent=lambda cid: self.budget.get(f"{cid}|{partition}") or 0.0, now_ms=now_ms())
        if decision is None:
            return
        metrics, engine = self.engine.metrics, self.engine
        for cid, outcome in decision.outcomes:
            metrics.count(metrics.triggers, cid, outcome)
        for cid, group in decision.conversions:
            metrics.count(metrics.trigger_conversions, cid, group)
        if decision.triggers:
            latency = max(0, now_ms() - record.ts)
            for trigger in decision.triggers:
                engine.add_output(self.names.promo_triggers, user, orjson.dumps(trigger))
                metrics.observe_latency(self.names.promo_triggers, latency)
        for trigger in decision.resent:
            engine.add_output(self.names.promo_triggers, user, orjson.dumps(trigger))
        for out in decision.records:
            engine.add_output(self.names.attribution, user, orjson.dumps(out))
        if decision.state is not None:
            if decision.state["r"]:
                # held as JSON (a user's few trigger entries as dicts took ~2.7 KB)
                self.state.set(user, dumps_kept(decision.state), partition)
            elif self.state.get(user) is not None:
                self.state.delete(user, partition)
        for cid, total in decision.spent.items():
            self.budget.set(f"{cid}|{partition}", round(total, 6), partition)

    def audit(self, user_id: str, key: str) -> dict[str, Any] | None:
        """The audit record of the user's trigger ``key`` held by this worker (the owner of
        the user's partition), None if not held (``agents.promo.campaigns.audit_record``)."""
        found = audit_record(stored_state(self.state.get(user_id)), key)
        return {"user_id": user_id, **found} if found is not None else None

    async def on_consent(self, message: Any, profiles: ProfileStore) -> UserProfile | None:
        """Fold one consent record into the user's profile (the user pipeline owns it);
        return the profile (None: the record was dead-lettered)."""
        record = await self.engine.admit(self.consent_validator, message, key_is_user=True)
        if record is None:
            return None
        user = record.user_id
        profile = profiles.get(user) or UserProfile(user)
        profile.set_consent(record.consent, record.ts)
        profiles.set(user, profile, message.partition)
        if not profile.consent and self.state.get(user) is not None:
            # opted out: no trigger history kept, no attribution
            self.state.delete(user, message.partition)
        if self.engine.redis is not None and profile.events:
            self.engine.redis.add("user", user, profile.view(profile.updated_at))
        return profile

    # ------------------------------------------------------------------ control topics
    def load(self, bootstrap: str) -> None:
        """Read the campaigns topic to its end now (blocking; in a thread of its own, so it
        works whether or not an event loop runs here). On failure the file's campaigns
        apply until the follower task catches up."""
        topic = self.names.campaigns
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(asyncio.run, read_campaign_records(
                bootstrap, topic, timeout=LOAD_TIMEOUT_S, positions=self.positions,
                client_options=kafka_client_options(self.engine.settings)))
            try:
                records = future.result(LOAD_TIMEOUT_S + 5)
            except Exception as exc:
                log.warning("could not read %s at start (%s); using the campaigns file until "
                            "the topic is caught up", topic, exc)
                self.positions.clear()
                return
        for key, value in records:
            self.apply_campaign(key, value)
        self.synced = True
        log.info("campaigns in force: %s", [f"{c.id}@v{c.version}"
                                            for c in self.book.campaigns()])

    def apply_campaign(self, name: str | None, value: bytes | None) -> str:
        """Apply one campaigns-topic record; a bad one is logged and listed, never raised."""
        try:
            body = orjson.loads(value) if value is not None else None
            outcome = self.book.apply(name, body)
        except (orjson.JSONDecodeError, CampaignError) as exc:
            reason = f"invalid JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) \
                else str(exc)
            self.book.rejected[name or "?"] = reason
            log.error("campaign record %r refused: %s", name, reason)
            return "rejected"
        except Exception as exc:  # a bug must not make the follower retry this record for ever
            log.exception("campaign record %r could not be applied", name)
            self.book.rejected[name or "?"] = f"internal: {type(exc).__name__}: {exc}"[:300]
            self.engine.metrics.agent_errors.labels("campaigns").inc()
            return "rejected"
        log.info("campaign %s: %s", name, outcome)
        return outcome

    async def follow(self, bootstrap: str) -> None:
        """Follow the campaigns and attribution topics for ever (retrying on errors, from
        the positions reached, those of :meth:`load` first)."""
        reader = ControlTopicReader(
            bootstrap, [self.names.campaigns, self.names.attribution, self.names.ad_feedback,
                        self.names.promo_triggers],
            client_options=kafka_client_options(self.engine.settings),
            fetch_wait_ms=CONTROL_FETCH_WAIT_MS,
            default_partitions=self.engine.settings.partitions,
            caught_up_topics=[self.names.campaigns], poll_ms=500, max_records=2000,
            name="the campaigns/attribution topics")
        reader.positions = self.positions
        await reader.follow(self._apply_control, on_caught_up=self._synced)

    def _apply_control(self, rec: ConsumerRecord[bytes, bytes]) -> None:
        if rec.topic == self.names.campaigns:
            self.apply_campaign(_key(rec.key), rec.value)
        elif rec.value is None:
            return
        elif rec.topic == self.names.ad_feedback:  # the invalid: dead-lettered by the handler
            self.feedback.add_message(self.feedback_validator, rec.value, rec.key,
                                      rec.timestamp if rec.timestamp > 0 else now_ms())
        elif rec.topic == self.names.promo_triggers:  # sent per variant (our own output)
            with contextlib.suppress(orjson.JSONDecodeError):
                self.feedback.add_trigger(orjson.loads(rec.value))
        else:
            with contextlib.suppress(orjson.JSONDecodeError):
                self.stats.add(orjson.loads(rec.value))

    def _synced(self) -> None:
        """The campaigns topic is read to its end (the first time since the start)."""
        if not self.synced:
            self.synced = True
            log.info("campaigns in force: %s", [
                f"{c.id}@v{c.version}" for c in self.book.campaigns()])

    def export_uplift(self) -> None:
        """Set the deployment-wide campaign gauges (uplift, cohort conversion rates, and per
        variant: events by kind, distinct users, revenue, cost); series of campaigns or
        variants no longer reported are removed."""
        metrics = self.engine.metrics
        fresh: dict[tuple[Any, tuple[str, ...]], Any] = {}

        children = self._exported

        def put(gauge: Any, value: float, *labels: str) -> None:
            key = (gauge, labels)
            child = children.get(key)
            if child is None:
                child = gauge.labels(*labels)
            child.set(value)
            fresh[key] = child

        for campaign in self.book.campaigns():
            cid = campaign.id
            stats = self.stats.report(cid)
            if stats["uplift"] is not None:
                put(metrics.campaign_uplift, stats["uplift"], cid)
            rates = {**stats["conversion_rate"],
                     "baseline": stats["before_after"]["before"]["conversion_rate"]}
            for group, rate in rates.items():
                if rate is not None:
                    put(metrics.campaign_conversion_rate, rate, cid, group)
            for variant, counts in self.feedback.variant_counts(cid).items():
                for kind in ("sent", *FEEDBACK_KINDS):
                    put(metrics.campaign_events, counts.get(kind, 0), cid, variant, kind)
                for kind, n in zip(("shown", "clicked", "converted"),
                                   self.feedback.participation(cid, variant).values(),
                                   strict=True):
                    put(metrics.campaign_users, n, cid, variant, kind)
                put(metrics.campaign_revenue, round(counts.get("revenue", 0.0), 2), cid,
                    variant)
                put(metrics.campaign_cost, round(counts.get("sent", 0) * campaign.cost, 2),
                    cid, variant)
        for gauge, labels in children.keys() - fresh.keys():
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)
        self._exported = fresh

    # ------------------------------------------------------------------ reporting
    def report(self, at_ms: int) -> dict[str, Any]:
        """``GET /api/campaigns``: every campaign in force with its experiment figures."""
        return {"ts": at_ms, "synced": self.synced,
                "campaigns": [describe(c, self.book.source_of(c.id), at_ms,
                                       self.stats.report(c.id))
                              for c in self.book.campaigns()],
                "rejected": dict(self.book.rejected)}

    def campaign_report(self, campaign_id: str, at_ms: int) -> dict[str, Any] | None:
        """``GET /api/campaigns/{id}/report``: per variant x channel feedback figures and the
        experiment's (None: no such campaign in force)."""
        campaign = self.book.get(campaign_id)
        if campaign is None:
            return None
        bandit = self.bandits.describe(campaign) if campaign.variants else None
        stats = self.stats.report(campaign_id)
        view = stats.pop("before_after")
        window = None
        if campaign.starts_at is not None and campaign.baseline_window_ms:
            window = [campaign.starts_at - campaign.baseline_window_ms, campaign.starts_at]
        return {"ts": at_ms, "synced": self.synced, "mode": campaign.mode,
                "objective": campaign.objective if campaign.mode == "bandit" else None,
                **self.feedback.report(campaign_id, stats, campaign.cost, bandit),
                "before_after": {"starts_at": campaign.starts_at, "baseline_window": window,
                                 **view}}


def describe(campaign: Campaign, source: str, at_ms: int,
             stats: dict[str, Any] | None = None) -> dict[str, Any]:
    out = {"id": campaign.id, "version": campaign.version, "source": source,
           "status": campaign.status(at_ms), "name": campaign.record.get("name"),
           "on": sorted(campaign.on), "action": campaign.action, "holdout": campaign.holdout,
           "budget": campaign.budget, "cost_per_trigger": campaign.cost}
    if campaign.variants:
        out["variants"] = [v.id for v in campaign.variants]
        out["mode"] = campaign.mode
    if stats is not None:
        out["stats"] = stats
    return out


def register(engine: Engine) -> PromoTriggers:
    app, settings = engine.app, engine.settings
    book = CampaignBook.load(campaigns_path(settings))
    # written behind: once per user (campaign) and commit, with the outputs' batches
    state = WriteBehindTable(app.Table("promo-state", default=None,
                                       partitions=settings.partitions), outputs=engine.outputs)
    budget = WriteBehindTable(app.Table("promo-budget", default=None,
                                        partitions=settings.partitions), outputs=engine.outputs)
    engine.hooks.before_commit.extend((state.flush, budget.flush))
    promo = PromoTriggers(engine, book, state, budget)
    register_feedback(engine, known=lambda cid: promo.book.get(cid) is not None)
    promo.load(bootstrap_of(app))

    @app.task
    async def follow_campaigns_and_attribution() -> None:
        await promo.follow(bootstrap_of(app))

    @app.timer(UPLIFT_EXPORT_S, name="campaign-uplift")
    async def export_uplift() -> None:
        promo.export_uplift()

    return promo


# ------------------------------------------------------------------ CLI helpers
async def read_campaign_records(
        bootstrap: str, topic: str, timeout: float = 15.0,
        positions: dict[TopicPartition, int] | None = None,
        client_options: Mapping[str, Any] | None = None,
) -> list[tuple[str | None, bytes | None]]:
    """Every record of the campaigns topic up to its end: (key, raw value or None). The
    next offset of each partition goes to ``positions`` when given (the read itself always
    starts at the beginning)."""
    reader = ControlTopicReader(bootstrap, topic, client_options=client_options,
                                fetch_wait_ms=CONTROL_FETCH_WAIT_MS, default_partitions=1,
                                poll_ms=200, max_records=None)
    try:
        records = await reader.read_to_end(timeout)
    finally:
        if positions is not None:
            positions.update(reader.positions)
    return [(_key(rec.key), rec.value) for rec in records]


def book_with_topic(records: Iterable[tuple[str | None, bytes | None]],
                    book: CampaignBook | None = None) -> CampaignBook:
    """``book`` (default: empty) after the campaigns-topic ``records``, as a worker sees it."""
    book = book if book is not None else CampaignBook()
    for key, value in records:
        with contextlib.suppress(CampaignError, orjson.JSONDecodeError):
            book.apply(key, orjson.loads(value) if value is not None else None)
    return book


def _key(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", "replace") if raw else None


async def publish_campaigns(bootstrap: str, topic: str,
                            records: list[tuple[str, dict[str, Any] | None]],
                            client_options: Mapping[str, Any] | None = None) -> None:
    """Produce campaign records (None = tombstone), keyed by campaign id."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                **(client_options or {}))
    await producer.start()
    try:
        for key, value in records:
            body = orjson.dumps({**value, "schema_version": SCHEMA_VERSION}) \
                if value is not None else None
            await producer.send_and_wait(topic, key=key.encode(), value=body)
    finally:
        await producer.stop()
