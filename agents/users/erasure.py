"""Erasure (``livepulse forget USER_ID``): forget one user everywhere the engine keeps them.

The request travels on the compacted input topic ``<prefix>.erasure`` (key user_id,
contract ``erasure-request.v1``), so the worker that owns the user's partition -- the only
one holding the user's state -- applies it on the user pipeline (:meth:`Eraser.on_request`,
in the control agent: beside the user's events, not in order with them, so events of the
user that predate the request but are read after it -- in flight, or read again after a
restart -- are dropped and counted by the :class:`ErasureFence`):

* profile: removed from the ``user-profiles`` table with a changelog tombstone (the
  compacted changelog's latest record for the key is null; a restart recovers nothing);
* trigger history: ``promo-state`` entry deleted (a tombstone too);
* online models (:meth:`agents.models.ModelHost.forget`): latest scores, the user's
  recommender sessions, purchase filter and MF factors, pending delayed labels;
* anomaly watch (:meth:`agents.anomalies.monitor.AnomalyMonitor.forget_user`): per-user click
  statistics and the user's incidents;
* Redis: ``{ns}:user:{id}`` deleted and the id removed from ``{ns}:users:index``.

The acknowledgement means durable. After applying requests in memory the worker makes them
durable in one round for all of them (:meth:`Eraser.make_durable`, a task off the event
path): it commits the input offsets (the profile and trigger tombstones reach their
changelogs, and no event of the user read before the erasure is read again after a crash),
then rewrites the model snapshots (every model saved again in a forked child, then every
older snapshot file deleted). Only then does ``GET /api/users/{id}/erasure`` answer
``{"state": "done", "request_id": ...}``, and the owning worker then sends a tombstone for
the key on the erasure topic (header ``request-id``: the request it completes), whatever sent
the request (the CLI, ``DELETE /api/users/{id}``, another system): compaction then drops
the request (and with it the raw user id) from the topic, and no later start re-applies it.
The CLI waits for ``done`` and for the footprint to be 0 and the profile to answer 404
(Redis copy gone too), then deletes the user's ClickHouse rows and Redis keys itself (belt
and braces) and sends the same tombstone (idempotent).

A crash before that round ends loses nothing: the request stays on the topic until it is
tombstoned, and at start, after the models are restored from their snapshots and before
the worker handles any event (:meth:`Eraser.load`, while the worker is built), the worker
reads the whole erasure topic and applies every live request (latest record of its key not
a tombstone) to the restored models, then rewrites their snapshots. A tombstone read there
(or later, while following) answers ``done`` for its request id when this worker has no
state of its own for the user: the acknowledgement stays true across a restart (for the
hour a durable state is kept). Every worker also follows
the topic (:meth:`Eraser.follow`) and forgets the user in its model replica, which may hold
users of partitions it owned before a rebalance.

Events of the user made and sent after the request start a fresh profile (defaults: consent
true, no history): erasure is not a block list. A user who also wants no personalization sends a
consent opt-out again. Records already emitted to output topics stay until those topics'
retention deletes them; aggregates the user contributed to (room counts, item popularity,
model weights) are not per-user data and stay.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Histogram

from agents.models import MODEL_NAMES
from agents.privacy import pseudonym_key, pseudonymize
from streams.contracts import ERASURE_REQUEST
from streams.ingest import Rejection, Validator, now_ms
from streams.security import kafka_client_options

if TYPE_CHECKING:
    from aiokafka import TopicPartition

    from agents.anomalies.monitor import AnomalyMonitor
    from agents.engine import Engine
    from agents.models import ModelHost
    from agents.promo.triggers import PromoTriggers
    from agents.users.store import ProfileStore

log = logging.getLogger("livepulse.erasure")

NEVER_TOO_OLD_MS = 1 << 62  # an erasure request applies however old it is
LOAD_TIMEOUT_S = 30.0       # longest the start-up read of the erasure topic may take
CONTROL_FETCH_WAIT_MS = 100
STATUS_KEPT = 10_000        # erasure states kept for the acknowledgement API
STATUS_TTL_MS = 3_600_000   # a durable erasure's state is answered for an hour
COMPLETE_TIMEOUT_S = 10.0   # longest wait for the broker to take a completion tombstone
LINGER_S = 0.05             # requests arriving together share one durability round
RETRY_S = (0.5, 5.0)        # first and longest wait before a failed round is tried again
REQUEST_ID_HEADER = "request-id"  # on a tombstone: the request it completes


@dataclass
class _Status:
    request_id: str | None
    seq: int                # the log's sequence number when it was applied
    applied_at: int
    durable_at: int | None = None


class ErasureLog:
    """Per user (by pseudonym: no raw id kept), the latest erasure applied by this worker
    and whether it is durable yet; the acknowledgement API reads it.

    >>> log = ErasureLog(b"k" * 32)
    >>> log.status("u1")["state"]
    'none'
    >>> log.applied("u1", "r1"); (log.status("u1")["state"], log.pending())
    ('pending', 1)
    >>> upto = log.seq; log.applied("u2", "r2"); log.durable(upto)
    1
    >>> log.status("u1")["state"], log.status("u1")["request_id"], log.status("u2")["state"]
    ('done', 'r1', 'pending')
    """

    def __init__(self, key: bytes, kept: int = STATUS_KEPT,
                 ttl_ms: int = STATUS_TTL_MS) -> None:
        self.key = key
        self.kept = kept
        self.ttl_ms = ttl_ms
        self.seq = 0
        self._entries: OrderedDict[str, _Status] = OrderedDict()

    def applied(self, user: str, request_id: str | None) -> None:
        """``user`` was just forgotten in memory for ``request_id`` (pending until a
        durability round that starts after this call ends)."""
        self.seq += 1
        pid = pseudonymize(user, self.key)
        self._entries[pid] = _Status(request_id, self.seq, now_ms())
        self._entries.move_to_end(pid)
        while len(self._entries) > self.kept:
            self._entries.popitem(last=False)

    def completed(self, user: str, request_id: str, at: int) -> bool:
        """A tombstone on the erasure topic says request ``request_id`` of ``user`` was
        made durable at ``at`` (epoch ms) by its owner: answer ``done`` for it, unless this
        log already has a state of its own for the user (never overridden: a pending one
        is this worker's round still to run) or ``at`` is older than the kept hour; return
        whether it was recorded.

        >>> log = ErasureLog(b"k" * 32)
        >>> log.completed("u1", "r1", now_ms()), log.status("u1")["state"]
        (True, 'done')
        >>> log.applied("u2", "r2"); log.completed("u2", "r2", now_ms())
        False
        >>> log.status("u2")["state"], log.completed("u3", "r3", now_ms() - 2 * STATUS_TTL_MS)
        ('pending', False)
        """
        pid = pseudonymize(user, self.key)
        if pid in self._entries or now_ms() - at > self.ttl_ms:
            return False
        self.seq += 1
        self._entries[pid] = _Status(request_id, self.seq, at, at)
        while len(self._entries) > self.kept:
            self._entries.popitem(last=False)
        return True

    def pending(self) -> int:
        return sum(1 for entry in self._entries.values() if entry.durable_at is None)

    def durable(self, upto: int) -> int:
        """Mark durable every erasure applied up to sequence number ``upto``; return how
        many were pending."""
        when, count = now_ms(), 0
        for entry in self._entries.values():
            if entry.durable_at is None and entry.seq <= upto:
                entry.durable_at, count = when, count + 1
        expired = [pid for pid, entry in self._entries.items()
                   if entry.durable_at is not None and when - entry.durable_at > self.ttl_ms]
        for pid in expired:
            del self._entries[pid]
        return count

    def status(self, user: str) -> dict[str, Any]:
        """``{"state": "none" | "pending" | "done", "request_id", "applied_at",
        "durable_at"}`` (times in epoch ms)."""
        entry = self._entries.get(pseudonymize(user, self.key))
        if entry is None:
            return {"state": "none"}
        return {"state": "pending" if entry.durable_at is None else "done",
                "request_id": entry.request_id, "applied_at": entry.applied_at,
                "durable_at": entry.durable_at}


def live_requests(records: Iterable[Any]) -> list[Any]:
    """The requests still live in erasure-topic ``records`` (read in order): per key, the
    latest record, unless it is a tombstone (the request was completed).

    >>> from types import SimpleNamespace as R
    >>> rs = [R(key=b"a", value=b"1"), R(key=b"b", value=b"2"), R(key=b"a", value=None),
    ...       R(key=b"c", value=b"3"), R(key=b"c", value=b"4")]
    >>> [r.value for r in live_requests(rs)]
    [b'2', b'4']
    """
    latest: dict[Any, Any] = {}
    for record in records:
        latest.pop(record.key, None)
        latest[record.key] = record
    return [record for record in latest.values() if record.value is not None]


def completions(records: Iterable[Any]) -> list[tuple[str, str, int]]:
    """``(user id, request id, timestamp)`` of every key of erasure-topic ``records`` whose
    latest record is a tombstone naming the request it completes (header ``request-id``).

    >>> from types import SimpleNamespace as R
    >>> done = [("request-id", b"r1")]
    >>> rs = [R(key=b"a", value=b"1", headers=[], timestamp=1),
    ...       R(key=b"a", value=None, headers=done, timestamp=2),
    ...       R(key=b"b", value=None, headers=[], timestamp=3),      # no header: skipped
    ...       R(key=b"c", value=None, headers=done, timestamp=4),
    ...       R(key=b"c", value=b"2", headers=[], timestamp=5)]      # asked again: live
    >>> completions(rs)
    [('a', 'r1', 2)]
    """
    latest: dict[Any, Any] = {}
    for record in records:
        latest[record.key] = record
    found = []
    for key, record in latest.items():
        if record.value is not None or not isinstance(key, bytes):
            continue
        request_id = dict(getattr(record, "headers", None) or ()).get(REQUEST_ID_HEADER)
        if request_id:
            found.append((key.decode("utf-8", "replace"),
                          bytes(request_id).decode("utf-8", "replace"),
                          int(getattr(record, "timestamp", 0) or 0)))
    return found


class ErasureFence:
    """Events of erased users that predate their erasure but are read after it: the user
    pipeline drops them (counted), so that events in flight when a request is applied, or
    read again after a restart, do not bring the user back.

    An event is covered when its event time or its arrival (its input record's timestamp)
    is no later than the request's time; events after it start a fresh profile. Entries
    are kept by the process's salted string hash, not the raw id, for an hour.

    >>> fence, asked = ErasureFence(), now_ms()
    >>> fence.add("u1", asked)
    >>> fence.covers("u1", asked - 100, asked + 9), fence.covers("u1", asked + 9, 0)
    (True, False)
    >>> fence.covers("u1", asked + 9, asked - 1), fence.covers("u2", 0, 0), fence.dropped
    (True, False, 2)
    """

    def __init__(self, kept: int = STATUS_KEPT, ttl_ms: int = STATUS_TTL_MS,
                 counter: Counter | None = None) -> None:
        self.kept = kept
        self.ttl_ms = ttl_ms
        self.counter = counter
        self.dropped = 0
        self._upto: OrderedDict[int, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._upto)

    def add(self, user: str, upto_ms: int) -> None:
        """``user`` was erased by a request made at ``upto_ms`` (epoch ms); a fence never
        moves back."""
        key = hash(user)
        self._upto[key] = max(upto_ms, self._upto.pop(key, upto_ms))
        oldest = now_ms() - self.ttl_ms
        while self._upto and (len(self._upto) > self.kept
                              or next(iter(self._upto.values())) < oldest):
            self._upto.popitem(last=False)

    def covers(self, user: str, event_ts: int, arrived_ms: int) -> bool:
        """Whether the event (event time ``event_ts``, input record timestamp
        ``arrived_ms``; 0 or less: unknown) predates an erasure of ``user``; counted."""
        upto = self._upto.get(hash(user))
        if upto is None or (event_ts > upto and not 0 < arrived_ms <= upto):
            return False
        self.dropped += 1
        if self.counter is not None:
            self.counter.inc()
        return True


def requested_at(request_ts: int, message: Any) -> int:
    """When an erasure was requested: the later of the request's own ``ts`` and its
    record's timestamp (epoch ms)."""
    return max(request_ts, int(getattr(message, "timestamp", 0) or 0))


def completion_headers(request_id: str | None) -> list[tuple[str, bytes]]:
    """The headers of the tombstone completing request ``request_id``."""
    return [(REQUEST_ID_HEADER, request_id.encode())] if request_id else []


class Eraser:
    """Applies erasure requests on the user pipeline of the worker owning the user, and
    makes them durable before acknowledging them (see the module doc)."""

    def __init__(self, engine: Engine, profiles: ProfileStore, models: ModelHost,
                 promo: PromoTriggers, anomalies: AnomalyMonitor | None = None) -> None:
        self.engine = engine
        self.profiles = profiles
        self.models = models
        self.promo = promo
        self.anomalies = anomalies
        self.interests: Any = None  # the viewer-interest table (agents.rooms.pin_next)
        self.audiences: Any = None  # agents.users.audiences.Audiences (membership index)
        settings = engine.settings
        self.key = pseudonym_key(settings)
        self.validator = Validator(
            ERASURE_REQUEST, max_bytes=settings.max_event_bytes,
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
            max_age_ms=NEVER_TOO_OLD_MS)
        self.log = ErasureLog(self.key)
        self.positions: dict[TopicPartition, int] = {}  # erasure topic, read by load/follow
        # erasures applied by this worker as the user's owner, to tombstone once durable:
        # raw user id -> (log sequence number, erasure partition, request id); held only
        # until the tombstone is sent (the one place a raw id is kept)
        self.to_complete: dict[str, tuple[int, int, str | None]] = {}
        self._wake = asyncio.Event()
        registry = engine.metrics.registry
        self.erased = Counter(
            "livepulse_erasures_total", "Erasure requests applied (users forgotten), by "
            "whether the worker held a profile for the user.", ["found"], registry=registry)
        self.rounds = Counter(
            "livepulse_erasure_durability_rounds_total", "Rounds making applied erasures "
            "durable (offsets committed, model snapshots rewritten), by outcome.",
            ["outcome"], registry=registry)
        self.round_seconds = Histogram(
            "livepulse_erasure_durability_seconds", "Duration of one successful durability "
            "round (commit and snapshot rewrite).", registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                     10.0, 30.0))
        self.completed = Counter(
            "livepulse_erasure_completions_total", "Durable erasure requests tombstoned on "
            "the erasure topic by their owning worker (compaction then drops them).",
            registry=registry)
        self.fence = ErasureFence(counter=Counter(
            "livepulse_erasure_fenced_events_total", "Events of erased users dropped by the "
            "user pipeline because they predate the erasure (read after it was applied: in "
            "flight, or read again after a restart).", registry=registry))

    async def on_request(self, message: Any) -> None:
        """Forget the user of one erasure record; a tombstone (request done) is skipped."""
        if message.value is None:
            return  # the CLI's "done" marker: compaction removes the request
        engine = self.engine
        record = await engine.admit(self.validator, message, key_is_user=True)
        if record is None:
            return
        user = record.user_id
        # first: the outputs flush below lets the user's in-flight events run meanwhile
        self.fence.add(user, requested_at(record.ts, message))
        saved = self.profiles.get(user)
        member_of = saved.audiences if saved is not None else ()
        summary = self.forget(user, message.partition)
        if self.audiences is not None and member_of:  # downstream audiences drop the user
            for change in self.audiences.erased(user, member_of, record.ts):
                engine.add_output(engine.topics.audience_changes, user, orjson.dumps(change))
            await engine.outputs.flush()
        self.log.applied(user, record.request_id)
        self.to_complete[user] = (self.log.seq, message.partition, record.request_id)
        self._wake.set()
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
        if self.interests is not None and self.interests.get(user) is not None:
            self.interests.delete(user, partition)  # a tombstone on its changelog
            summary["viewer_interest"] = 1
        if self.audiences is not None:
            summary["audience_index"] = self.audiences.forget(user)
        if engine.redis is not None:
            engine.redis.add("user", user, {})  # empty document: DEL + index ZREM
            for audience_id in saved.audiences if saved is not None else ():
                engine.redis.set_member("audience", audience_id, user, False)
        return summary

    # ------------------------------------------------------------------ durability
    def status(self, user: str) -> dict[str, Any]:
        """The acknowledgement: ``state`` ``done`` once this worker's erasure of ``user``
        is durable (:class:`ErasureLog`)."""
        return {"user_id": user, **self.log.status(user)}

    async def commit(self) -> None:
        """Commit the input offsets now (a commit that pins them after this call), and
        flush the producer: the changelog tombstones written by the before-commit hooks
        are on the brokers. Without a Faust consumer (the in-memory harness): nothing."""
        app = self.engine.app
        consumer = getattr(app, "consumer", None)
        if consumer is None:
            return
        await consumer.maybe_wait_for_commit_to_finish()  # it may have pinned them earlier
        await consumer.commit()
        await app.producer.flush()

    async def make_durable(self) -> int:
        """One durability round for every erasure applied before it started: commit, then
        rewrite the model snapshots, then tombstone the requests this worker applied as
        owner (:meth:`complete`); return how many became durable (0: none pending)."""
        upto = self.log.seq
        done = 0
        if self.log.pending():
            started = time.perf_counter()
            await self.commit()
            await self.models.rewrite_snapshots()
            done = self.log.durable(upto)
            took = time.perf_counter() - started
            self.round_seconds.observe(took)
            self.rounds.labels("ok").inc()
            log.info("%d erasure(s) durable in %.0f ms (offsets committed, snapshots "
                     "rewritten)", done, took * 1000)
        await self.complete(upto)
        return done

    async def complete(self, upto: int) -> int:
        """Send the tombstone of every request this worker applied as the user's owner up
        to log sequence number ``upto`` (durable by then), each to its request's partition
        with the request id in a header, and wait until the broker has them; return how
        many were sent. Compaction drops the requests: no start re-applies them. A failure
        raises (the caller's round is retried); the requests stay listed until sent."""
        due = [(user, entry) for user, entry in self.to_complete.items() if entry[0] <= upto]
        if not due:
            return 0
        producer = self.engine.app.producer
        topic = self.engine.topics.erasure
        for user, (_, partition, request_id) in due:
            delivery = await producer.send(topic, user.encode(), None, partition, None,
                                           completion_headers(request_id))
            if inspect.isawaitable(delivery):
                await asyncio.wait_for(delivery, COMPLETE_TIMEOUT_S)
        for user, entry in due:
            if self.to_complete.get(user) == entry:  # not asked again meanwhile
                del self.to_complete[user]
        self.completed.inc(len(due))
        return len(due)

    async def run(self) -> None:
        """The durability task: a round whenever erasures were applied; a failed round is
        logged, counted and tried again (backing off) -- meanwhile nothing is acknowledged
        (a round that failed only on its tombstones has acknowledged; they are resent)."""
        delay = RETRY_S[0]
        while True:
            await self._wake.wait()
            await asyncio.sleep(LINGER_S)
            self._wake.clear()
            try:
                await self.make_durable()
                delay = RETRY_S[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.rounds.labels("failed").inc()
                log.error("erasures not made durable yet (%s: %s); retrying in %.1f s",
                          type(exc).__name__, str(exc)[:200], delay)
                await asyncio.sleep(delay)
                delay = min(RETRY_S[1], delay * 2)
                self._wake.set()

    # ------------------------------------------------------------------ restart
    def replay(self, records: Iterable[Any]) -> int:
        """Apply the live requests among erasure-topic ``records`` to the models (restored
        from snapshots that may predate them); return how many users were forgotten. The
        tables are not touched: they are recovered later, from changelogs that hold the
        tombstones of every acknowledged erasure (an unacknowledged one is read again by
        :meth:`on_request`, its offset not being committed)."""
        applied = 0
        for record in live_requests(records):
            request = self.validator.decode(record.value, now_ms())
            key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) \
                else record.key
            if isinstance(request, Rejection) or (key is not None and key != request.user_id):
                continue  # never applied: the user pipeline dead-letters it
            self.models.forget(request.user_id)
            if self.anomalies is not None:
                self.anomalies.forget_user(request.user_id)
            self.log.applied(request.user_id, request.request_id)
            self.fence.add(request.user_id, requested_at(request.ts, record))
            applied += 1
        return applied

    def load(self, bootstrap: str, timeout_s: float = LOAD_TIMEOUT_S) -> int:
        """At start, before any event: read the whole erasure topic (blocking, in a thread
        of its own), :meth:`replay` it and, if any request is live, rewrite the model
        snapshots; return how many requests were re-applied. Raises when the topic cannot
        be read: a worker that cannot tell whom to forget does not start."""
        from streams.control import ControlTopicReader

        reader = ControlTopicReader(
            bootstrap, self.engine.topics.erasure,
            client_options=kafka_client_options(self.engine.settings),
            fetch_wait_ms=CONTROL_FETCH_WAIT_MS, default_partitions=0, poll_ms=200,
            max_records=None, name="erasure (start)")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(asyncio.run, reader.read_to_end(timeout_s))
            try:
                records = future.result(timeout_s + 5)
            except Exception as exc:
                raise RuntimeError(f"cannot read the erasure topic at start ({exc}): "
                                   "refusing to run models that may hold erased users") from exc
        self.positions.update(reader.positions)
        return self.restart(records)

    def restart(self, records: Iterable[Any]) -> int:
        """:meth:`replay` the erasure-topic ``records`` and, if any request was live,
        rewrite the model snapshots now (no event is handled yet) and mark those erasures
        durable; return how many were re-applied. Completed requests (tombstones naming
        their request) answer ``done`` (:meth:`ErasureLog.completed`)."""
        records = list(records)
        asked = {record.key: requested_at(0, record) for record in records
                 if record.value is not None and isinstance(record.key, bytes)}
        for user, request_id, at in completions(records):
            self.log.completed(user, request_id, at)
            self.fence.add(user, asked.get(user.encode(), at))
        applied = self.replay(records)
        if not applied:
            return 0
        store = self.models.store
        if any(store.history(name) for name in MODEL_NAMES):  # else nothing to rewrite
            self.models.rewrite_snapshots_now()
        self.log.durable(self.log.seq)
        log.info("%d live erasure request(s) re-applied to the restored models; snapshots "
                 "rewritten", applied)
        return applied

    async def follow(self, bootstrap: str) -> None:
        """Every worker: follow the erasure topic from where :meth:`load` stopped and forget
        each requested user in this worker's model replica (it may hold users of partitions
        it no longer owns); a replica that held something gets a durability round."""
        from streams.control import ControlTopicReader

        reader = ControlTopicReader(
            bootstrap, self.engine.topics.erasure,
            client_options=kafka_client_options(self.engine.settings),
            fetch_wait_ms=CONTROL_FETCH_WAIT_MS,
            default_partitions=self.engine.settings.partitions, name="erasure (models)")
        reader.positions = self.positions

        def apply(record: Any) -> None:
            if record.value is None:
                for user, request_id, at in completions([record]):
                    self.log.completed(user, request_id, at)
                return
            request = self.validator.decode(record.value, now_ms())
            if isinstance(request, Rejection) or (
                    record.key is not None and record.key != request.user_id.encode()):
                return  # as the user pipeline's admit: a key must be the user id
            self.fence.add(request.user_id, requested_at(request.ts, record))
            held = self.models.forget(request.user_id)
            if any(held.values()):
                self.log.applied(request.user_id, request.request_id)
                self._wake.set()

        await reader.follow(apply)
