"""Redis serving sink: latest user profiles and room insights as hashes with a TTL.

Key layout (``namespace`` defaults to ``lp``; ``kind`` is e.g. ``user`` or ``room``):

- ``lp:{kind}:{id}`` -- a hash holding the latest document of that entity, one field per
  top-level field. Every write replaces the whole hash (``DEL``, ``HSET``, ``EXPIRE``), so a
  field removed from the document disappears; the key expires ``ttl_s`` seconds after its
  last write.
- ``lp:{kind}s:index`` -- a sorted set of the ids of that kind, score = time of the last write
  (epoch ms, writer's clock). Entries older than ``ttl_s`` are trimmed on every write
  (``ZREMRANGEBYSCORE``) and ignored on read, and the set itself expires ``ttl_s`` after the
  last write. Any worker can list the live rooms from it.
- ``lp:{kind}:{id}`` as a plain set (:meth:`RedisSink.set_member`): e.g.
  ``lp:audience:{audience id}``, the ids of the audience's members (``SADD``/``SREM``,
  pipelined at each flush before the hashes; no TTL: an exit removes a member).

Writes are batched: :meth:`RedisSink.add` only records the latest document per key in
memory (no I/O), and :meth:`RedisSink.flush` (every ``flush_interval_s`` from
:meth:`RedisSink.run`) writes the pending keys in batches of ``batch_size``, so a key is
written at most once per flush however often it changed. A batch is one ``EVALSHA`` of a
small Lua script (:data:`WRITE_SCRIPT`) that runs those commands for every key of the batch
and updates the indexes. A script runs atomically, like ``MULTI``/``EXEC``, so readers never
see a deleted, half-written or TTL-less hash. It replaces a ``MULTI`` pipeline because
packing ~25 arguments per key in redis-py's pure-Python encoder cost the worker's event
loop ~40 ms of CPU per 500 keys: the script takes one JSON argument per batch instead, and
is 3-4x faster end to end. Scripts need all keys on one server, so Redis Cluster is not
supported.

Values are stored as text that other readers can use directly: a string as itself, an int
or float as its decimal literal (``NaN``, ``Infinity``, ``-Infinity`` for non-finite
floats), a bool as ``true``/``false``, ``None`` as ``null``, a dict or list (or any other
orjson-serialisable value) as compact JSON. A string that would read back as something else
(``"42"``, ``"true"``, ``"[1]"``, ``'"x"'``) is stored JSON-quoted instead, so
:func:`decode_value` is an exact inverse for top-level values. Inside JSON, the usual JSON
limits hold: non-string dict keys become strings and non-finite floats become ``null``.

Failure behaviour: Redis being unavailable never stops stream processing and never raises
to the caller. A failed flush keeps the unwritten keys pending (a newer ``add`` for the same
key wins over the failed older value), sets ``livepulse_redis_up`` to 0, counts
``livepulse_redis_errors_total{operation="flush"}`` and logs one WARNING per outage. The run
loop retries with exponential back-off (up to ``max_backoff_s``), and the first fully
successful flush logs one INFO with the outage length and how many keys it caught up. A hung
server counts as down after ``timeout_s``. Pending keys are bounded by ``max_pending``:
beyond it the least recently updated key is dropped, counted in
``livepulse_redis_dropped_keys_total`` and logged (WARNING at the first drop, the total at
the next successful flush). Reads (:meth:`RedisSink.read`, ``read_many``, ``index``) return
``None`` / empty while Redis is down, and see only what has been flushed, not what is still
pending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config.settings import redact_url

log = logging.getLogger(__name__)

FLUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_KEY_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 50_000, 200_000)
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
# First characters of every text that decode_value turns into a non-string.
_NON_STRING_START = frozenset('{["-0123456789tfnNI \t\n\r')
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def decode_value(raw: str | bytes) -> Any:
    """The Python value of one stored hash field (inverse of :func:`encode_value`).

    >>> [decode_value(t) for t in ("x", "42", "2.5", "true", "null", '{"k":[1]}', '"42"')]
    ['x', 42, 2.5, True, None, {'k': [1]}, '42']
    >>> decode_value(b"-Infinity"), decode_value(b"123456789012345678901234567890")
    (-inf, 123456789012345678901234567890)
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        return _NON_FINITE.get(text, text)
    if type(value) is float and raw.lstrip(b"-" if isinstance(raw, bytes) else "-").isdigit():
        return int(raw)  # orjson reads integers beyond 64 bits as floats
    return value


def encode_value(value: Any) -> str:
    """The text stored for one field; ``decode_value(encode_value(v)) == v`` at top level.

    >>> [encode_value(v) for v in ("x", 42, 2.5, True, None, {"k": [1]}, "42", float("nan"))]
    ['x', '42', '2.5', 'true', 'null', '{"k":[1]}', '"42"', 'NaN']
    >>> sample = ["", "true", "007", " 1", "NaN", '"q"', -0.0, 1e20, 2**70, [], {"a": None}]
    >>> all(decode_value(encode_value(v)) == v for v in sample)
    True
    """
    if isinstance(value, str):
        text = str.__str__(value)
        if not text or text[0] not in _NON_STRING_START or decode_value(text) == text:
            return text
        return orjson.dumps(text).decode()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        number = float(value)
        if math.isfinite(number):
            return repr(number)
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


def encode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """A document as the hash Redis stores (field name -> text).

    >>> encode_fields({"a": 1, "b": 2.5, "c": "x", "d": {"k": [1]}, "e": True})
    {'a': '1', 'b': '2.5', 'c': 'x', 'd': '{"k":[1]}', 'e': 'true'}
    """
    return {str(name): encode_value(value) for name, value in fields.items()}


def decode_fields(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, Any]:
    """A stored hash back as a document; exact inverse of :func:`encode_fields`.

    >>> doc = {"a": 1, "b": 2.5, "c": "x", "d": {"k": [1]}, "e": True}
    >>> decode_fields({k.encode(): v.encode() for k, v in encode_fields(doc).items()}) == doc
    True
    """
    return {(name.decode("utf-8", "replace") if isinstance(name, bytes) else name):
            decode_value(value) for name, value in raw.items()}


def _auth_hint(error: BaseException) -> str:
    """A pointer to the credentials when Redis refused them (AUTH failed or required)."""
    refused = isinstance(error, (redis_errors.AuthenticationError,
                                 redis_errors.AuthorizationError)) or "NOAUTH" in str(error)
    return (" -- authentication failed: check the user and password in LIVEPULSE_REDIS_URL"
            if refused else "")


class RedisSinkMetrics:
    """Prometheus series of the Redis sink, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        r = registry
        self.writes = Counter(
            "livepulse_redis_writes_total", "Keys written to Redis, by key namespace (kind).",
            ["kind"], registry=r)
        self.flush_seconds = Histogram(
            "livepulse_redis_flush_seconds", "Duration of one flush that had keys to write.",
            buckets=FLUSH_BUCKETS, registry=r)
        self.batch_keys = Histogram(
            "livepulse_redis_batch_keys", "Keys pending at the start of a flush.",
            buckets=BATCH_KEY_BUCKETS, registry=r)
        self.errors = Counter(
            "livepulse_redis_errors_total", "Failed Redis operations (flush, read, ...).",
            ["operation"], registry=r)
        self.pending_keys = Gauge(
            "livepulse_redis_pending_keys", "Keys waiting to be written (incl. in flight).",
            registry=r)
        self.up = Gauge(
            "livepulse_redis_up", "1 if the last Redis write (or probe) succeeded, else 0.",
            registry=r)
        self.dropped_keys = Counter(
            "livepulse_redis_dropped_keys_total", "Pending keys dropped unwritten because "
            "the pending buffer was full (oldest update first).", registry=r)


_Pending = tuple[str, str, bytes]  # kind, id, JSON object of the encoded fields (b"{}": delete)

# One call writes a whole batch, atomically (a script runs alone, like MULTI/EXEC), with the
# same commands per key. KEYS: the batch's hash keys, then one index key per kind in it.
# ARGV: now_ms, JSON [[index slot (1-based), id, {field: text}, ttl_s], ...],
# JSON [[cutoff_ms, ttl_s] per index slot].
WRITE_SCRIPT = """
local now = ARGV[1]
local docs = cjson.decode(ARGV[2])
local indexes = cjson.decode(ARGV[3])
local n = #docs
for i = 1, n do
  local key, doc = KEYS[i], docs[i]
  local index, id, ttl = KEYS[n + doc[1]], doc[2], doc[4]
  redis.call('DEL', key)
  local args = {}
  for field, text in pairs(doc[3]) do
    args[#args + 1] = field
    args[#args + 1] = text
  end
  if #args > 0 then
    for first = 1, #args, 1000 do  -- unpack() is limited by the Lua C stack
      redis.call('HSET', key, unpack(args, first, math.min(first + 999, #args)))
    end
    redis.call('EXPIRE', key, ttl)
    redis.call('ZADD', index, now, id)
  else
    redis.call('ZREM', index, id)
  end
end
for j = n + 1, #KEYS do
  local cutoff, ttl = indexes[j - n][1], indexes[j - n][2]
  redis.call('ZREMRANGEBYSCORE', KEYS[j], '-inf', '(' .. string.format('%d', cutoff))
  redis.call('EXPIRE', KEYS[j], ttl)
end
return n
"""


class RedisSink:
    """Latest documents per key, written to Redis in atomic batches.

    ``add`` is synchronous and never does I/O; ``flush`` (or the ``run`` loop started by
    ``start``) writes. See the module docstring for the key layout and failure behaviour.
    ``timeout_s`` bounds every socket operation (a hung Redis counts as down), and
    ``max_backoff_s`` caps the retry interval of ``run`` while Redis is down. One batch
    blocks Redis while its script runs (~10 ms for 500 profile-sized keys measured), so keep
    ``batch_size`` in the hundreds. A ``metrics`` object serves one sink (its pending gauge
    reads that sink).
    """

    def __init__(self, url: str, *, ttl_s: int | Mapping[str, int], flush_interval_s: float = 0.2,
                 batch_size: int = 500, max_pending: int = 200_000,
                 metrics: RedisSinkMetrics | None = None, namespace: str = "lp",
                 timeout_s: float = 2.0, max_backoff_s: float = 5.0,
                 ssl_ca_certs: str | None = None) -> None:
        ttls = dict(ttl_s) if isinstance(ttl_s, Mapping) else {}
        self.ttl_s = int(ttl_s) if not isinstance(ttl_s, Mapping) else max(ttls.values())
        if (min([self.ttl_s, *ttls.values()]) < 1 or batch_size < 1 or max_pending < 1
                or flush_interval_s <= 0):
            raise ValueError("ttl_s, batch_size, max_pending and flush_interval_s must be > 0")
        self.ttls = {kind: int(ttl) for kind, ttl in ttls.items()}  # per kind; else ttl_s
        self.url = url
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.namespace = namespace
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics or RedisSinkMetrics(CollectorRegistry())
        self.metrics.pending_keys.set_function(lambda: self.pending)
        self.metrics.up.set(0)
        # AUTH and TLS come with the URL (`redis://user:password@`, `rediss://`); a
        # `rediss://` server is verified against `ssl_ca_certs` (default: system CAs).
        tls = {"ssl_ca_certs": ssl_ca_certs} if ssl_ca_certs and url.startswith("rediss:") \
            else {}
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0), **tls)  # run() owns retries and back-off
        self._write_script = self._client.register_script(WRITE_SCRIPT)  # reloads on NOSCRIPT
        self._pending: collections.OrderedDict[str, _Pending] = collections.OrderedDict()
        self._in_flight = 0
        self._flush_lock = asyncio.Lock()
        self._up: bool | None = None  # None: never talked to Redis yet
        self._recovered_from: bool | None = True  # state before the last recovery, until logged
        self._down_since = 0.0
        self._dropped_unreported = 0
        self._task: asyncio.Task[None] | None = None
        # set memberships to write: (set key, member) -> present (the latest change wins)
        self._members: collections.OrderedDict[tuple[str, str], bool] = \
            collections.OrderedDict()

    # ---- state -------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        """True once a write or probe succeeded and none has failed since."""
        return bool(self._up)

    @property
    def pending(self) -> int:
        """Keys (and set memberships) not yet written, including those of a flush in
        progress."""
        return len(self._pending) + self._in_flight + len(self._members)

    def key(self, kind: str, key_id: str) -> str:
        """The Redis key of one entity, e.g. ``lp:user:u1``."""
        return f"{self.namespace}:{kind}:{key_id}"

    def index_key(self, kind: str) -> str:
        """The sorted set listing the live ids of ``kind``, e.g. ``lp:rooms:index``."""
        return f"{self.namespace}:{kind}s:index"

    # ---- writing -----------------------------------------------------------------------
    def add(self, kind: str, key_id: str, fields: Mapping[str, Any]) -> None:
        """Record the latest document of ``kind``/``key_id``; empty ``fields`` deletes it.

        Encodes now, so later mutation of ``fields`` has no effect and a value that cannot
        be stored (not JSON-serialisable, or a string with lone surrogates) raises
        ``TypeError`` here, at the caller, never in a flush. O(number of fields), no I/O.
        """
        if not kind or ":" in kind:
            raise ValueError(f"kind must be non-empty and contain no ':': {kind!r}")
        redis_key = f"{self.namespace}:{kind}:{key_id}"
        entry = (kind, str(key_id), orjson.dumps(encode_fields(fields)))
        pending = self._pending
        if redis_key in pending:
            pending[redis_key] = entry
            pending.move_to_end(redis_key)
            return
        pending[redis_key] = entry
        if len(pending) > self.max_pending:
            self._drop_oldest(len(pending) - self.max_pending)

    def set_member(self, kind: str, key_id: str, member: str, present: bool) -> None:
        """Add ``member`` to (or remove it from) the set ``lp:{kind}:{key_id}`` at the next
        flush; no I/O. Bounded like the hashes (``max_pending``: the oldest change drops).

        >>> sink = RedisSink("redis://localhost:1", ttl_s=60)
        >>> sink.set_member("audience", "vip", "u1", True)
        >>> sink.set_member("audience", "vip", "u1", False); dict(sink._members)
        {('lp:audience:vip', 'u1'): False}
        """
        if not kind or ":" in kind:
            raise ValueError(f"kind must be non-empty and contain no ':': {kind!r}")
        entry = (f"{self.namespace}:{kind}:{key_id}", str(member))
        members = self._members
        members.pop(entry, None)
        members[entry] = present
        if len(members) > self.max_pending:
            members.popitem(last=False)
            self.metrics.dropped_keys.inc()

    async def _flush_members(self) -> None:
        """Write the pending set memberships in one pipeline; on failure keep them pending
        (a newer change of the same member wins) and raise."""
        if not self._members:
            return
        batch, self._members = self._members, collections.OrderedDict()
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for (key, member), present in batch.items():
                    if present:
                        pipe.sadd(key, member)
                    else:
                        pipe.srem(key, member)
                await pipe.execute()
        except BaseException:
            batch.update(self._members)
            self._members = batch
            raise
        self.metrics.writes.labels("set_member").inc(len(batch))

    def _drop_oldest(self, count: int) -> None:
        for _ in range(count):
            _dropped_key, (kind, _id, _doc) = self._pending.popitem(last=False)
            if self._dropped_unreported == 0:  # the kind only: a key names a user
                log.warning("Redis sink buffer full (%d keys): dropping the oldest pending "
                            "updates, first a %s key", self.max_pending, kind)
            self._dropped_unreported += 1
        self.metrics.dropped_keys.inc(count)

    async def flush(self) -> int:
        """Write every pending key; return how many were written. Never raises on errors.

        Each batch of ``batch_size`` keys is one ``EVALSHA`` of :data:`WRITE_SCRIPT`. On the
        first failing batch the flush stops; that batch and the rest stay pending.
        """
        async with self._flush_lock:
            try:
                await self._flush_members()
            except Exception as error:  # Redis must never stop the stream
                self._mark_down("flush", error)
                return 0
            if not self._pending:
                if self._up is not True:
                    await self._probe()
                return 0
            batch = self._pending
            self._pending = collections.OrderedDict()
            self._in_flight = len(batch)
            self.metrics.batch_keys.observe(len(batch))
            started = time.perf_counter()
            items = iter(list(batch.items()))
            written = 0
            chunk: list[tuple[str, _Pending]] = []
            try:
                while chunk := list(itertools.islice(items, self.batch_size)):
                    try:
                        await self._write_chunk(chunk)
                    except Exception as error:  # Redis must never stop the stream
                        self._in_flight = 0
                        self._requeue(chunk + list(items))
                        self._mark_down("flush", error)
                        return written
                    written += len(chunk)
                    self._in_flight -= len(chunk)
                    self._mark_up()
            except BaseException:  # cancelled mid-flush: nothing may be lost
                self._in_flight = 0
                self._requeue(chunk + list(items))
                raise
            finally:
                self._in_flight = 0
                self.metrics.flush_seconds.observe(time.perf_counter() - started)
            self._report(written)
            return written

    async def _write_chunk(self, chunk: list[tuple[str, _Pending]]) -> None:
        now_ms = int(time.time() * 1000)
        index_slots: dict[str, int] = {}  # kind -> position of its index key after the hashes
        keys: list[str] = []
        docs: list[bytes] = []
        for redis_key, (kind, key_id, document) in chunk:
            slot = index_slots.setdefault(kind, len(index_slots) + 1)
            keys.append(redis_key)
            docs.append(b"[%d,%b,%b,%d]" % (slot, orjson.dumps(key_id), document,
                                             self.ttl_for(kind)))
        keys.extend(self.index_key(kind) for kind in index_slots)
        indexes = [[now_ms - self.ttl_for(kind) * 1000, self.ttl_for(kind)]
                   for kind in index_slots]
        await self._write_script(keys=keys, args=[
            now_ms, b"[" + b",".join(docs) + b"]", orjson.dumps(indexes)])
        counts = collections.Counter(kind for _, (kind, _, _) in chunk)
        for kind, count in counts.items():
            self.metrics.writes.labels(kind).inc(count)

    def _requeue(self, unwritten: list[tuple[str, _Pending]]) -> None:
        """Put unwritten keys back as the oldest pending ones, unless added again since."""
        newer = self._pending
        merged = collections.OrderedDict(item for item in unwritten if item[0] not in newer)
        merged.update(newer)
        self._pending = merged
        if len(merged) > self.max_pending:
            self._drop_oldest(len(merged) - self.max_pending)

    async def _probe(self) -> None:
        try:
            await self._client.ping()
        except Exception as error:
            self._mark_down("ping", error)
        else:
            self._mark_up()
            self._report(0)

    # ---- up/down bookkeeping -------------------------------------------------------------
    def _mark_down(self, operation: str, error: BaseException) -> None:
        self.metrics.errors.labels(operation).inc()
        if self._up is False:
            log.debug("Redis still unavailable (%s): %r", operation, error)
            return
        self._up = False
        self._down_since = time.monotonic()
        self.metrics.up.set(0)
        log.warning("Redis at %s unavailable (%s failed: %s: %s)%s; keeping %d keys pending "
                    "and retrying", redact_url(self.url), operation, type(error).__name__,
                    error, _auth_hint(error), self.pending)

    def _mark_up(self) -> None:
        if self._up is True:
            return
        self._recovered_from = self._up
        self._up = True
        self.metrics.up.set(1)

    def _report(self, written: int) -> None:
        """After a fully successful flush or probe: log a recovery and unreported drops."""
        was, self._recovered_from = self._recovered_from, True
        dropped, self._dropped_unreported = self._dropped_unreported, 0
        if was is None:
            log.info("Redis at %s connected", redact_url(self.url))
        if was is False:
            log.info("Redis at %s back after %.1f s: caught up %d keys (%d dropped while "
                     "down)", redact_url(self.url), time.monotonic() - self._down_since,
                     written, dropped)
        elif dropped:
            log.warning("Redis sink dropped %d pending keys (buffer of %d full)", dropped,
                        self.max_pending)

    # ---- background loop ---------------------------------------------------------------
    async def run(self) -> None:
        """Flush every ``flush_interval_s``; back off exponentially while Redis is down.

        On cancellation, makes one final flush attempt, then re-raises.
        """
        failures = 0
        try:
            while True:
                delay = self.flush_interval_s
                if failures:  # jitter spreads the retries of many workers
                    delay = min(self.max_backoff_s, delay * 2**failures) * random.uniform(0.8, 1)
                await asyncio.sleep(delay)
                await self.flush()
                failures = min(failures + 1, 30) if self._up is False else 0
        except asyncio.CancelledError:
            await self.flush()
            raise

    async def start(self) -> None:
        """Probe Redis (logging whether it is up) and start :meth:`run` in the background."""
        if self._task is not None:
            return
        await self.flush()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="redis-sink")

    async def stop(self) -> None:
        """Stop the loop after a final flush attempt, then close the connections."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.pending and self._up is not False:  # loop never ran, or was never started
            await self.flush()
        if self.pending:
            log.warning("Redis sink stopped with %d keys unwritten", self.pending)
        with contextlib.suppress(Exception):
            await self._client.aclose()

    # ---- reading -----------------------------------------------------------------------
    async def read(self, kind: str, key_id: str) -> dict[str, Any] | None:
        """The stored document, or None if it does not exist or Redis is unavailable."""
        try:
            raw = await self._client.hgetall(self.key(kind, key_id))
        except Exception as error:
            self._read_failed("read", error)
            return None
        return decode_fields(raw) if raw else None

    async def read_many(self, kind: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The stored documents of ``ids`` that exist (one pipelined round trip)."""
        if not ids:
            return {}
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.hgetall(self.key(kind, key_id))
                results = await pipe.execute()
        except Exception as error:
            self._read_failed("read_many", error)
            return {}
        return {key_id: decode_fields(raw) for key_id, raw in zip(ids, results, strict=True)
                if raw}

    def ttl_for(self, kind: str) -> int:
        """Seconds a ``kind`` key lives after its last write."""
        return self.ttls.get(kind, self.ttl_s)

    async def index(self, kind: str) -> list[str]:
        """Ids of ``kind`` written within its TTL, most recently written first."""
        cutoff_ms = int(time.time() * 1000) - self.ttl_for(kind) * 1000
        try:
            ids = await self._client.zrevrangebyscore(self.index_key(kind), "+inf",
                                                      f"({cutoff_ms}")
        except Exception as error:
            self._read_failed("index", error)
            return []
        return [i.decode("utf-8", "replace") if isinstance(i, bytes) else i for i in ids]

    def _read_failed(self, operation: str, error: BaseException) -> None:
        self.metrics.errors.labels(operation).inc()
        log.debug("Redis %s failed: %r", operation, error)
