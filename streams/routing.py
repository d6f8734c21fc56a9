"""Faust's request router (``table_route``), made to find the worker that really owns a key.

Faust's :class:`faust.app.router.Router` picks a key's partition by hashing the key as the
*table's changelog* serializes it. A table without a ``key_type`` serializes keys as JSON,
so user ``u1`` is hashed as ``"u1"`` (with the quotes). Every keyed topic of livepulse is
produced with the raw id as key (``key_serializer="raw"``, Kafka's default murmur2
partitioner, see :func:`streams.outputs.partition_for`), and a table keeps each key in the
partition of the event that wrote it. The two hashes agree for about one key in
``partitions``: with two workers about half the users were sent to the worker that does not
hold them, which answered ``404`` (or a stale Redis copy). :class:`OwnerRouter` hashes the
raw key bytes instead, the way the data is partitioned.

It also answers a truthful ``503`` instead of a false ``404`` while no live owner is known:

* ``not_owner_yet``: the last assignment names no worker for the key's partition (a
  rebalance is under way);
* ``recovering``: this worker owns the partition but its tables are still being recovered
  from the changelogs (or a rebalance is in progress) and the key is not there yet;
* ``catching_up``: the partition was handed over to this worker and it has not yet re-read
  its sources (``routed_sources`` of :class:`streams.app.WorkerHooks`) up to the log end it
  found there, and the key is not there yet: a previous owner killed before its offset
  commit had served users from records whose state the changelog does not hold until this
  worker has processed them again (the transient 404s of a takeover, issue 16);
* ``owner_unreachable``: the owner named by the assignment does not answer (killed, and the
  group has not noticed yet).

Each carries ``Retry-After: 1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
from faust.app.router import Router
from faust.exceptions import SameNode
from faust.types import TP
from faust.types.core import K
from faust.types.web import Request, Response, Web
from yarl import URL

from streams.app import hooks_of
from streams.outputs import partition_for

log = logging.getLogger("livepulse.routing")
HOP_TIMEOUT_S = 10.0  # one routed request; an owner slower than this is reported unreachable
UNREACHABLE_LOG_EVERY_S = 10.0
ROUTED_HEADER = "X-Livepulse-Routed-By"  # set on a forwarded request: never forwarded again


def raw_key(key: K) -> bytes:
    """The key as the producers wrote it (``str`` -> UTF-8, as ``key_serializer="raw"``).

    >>> raw_key("u1"), raw_key(b"u1")
    (b'u1', b'u1')
    """
    if isinstance(key, bytes):
        return key
    return str(key).encode()


class OwnerRouter(Router):
    """``app.router`` (Faust's ``Router`` setting) routing by the raw key's partition."""

    _last_unreachable_log = 0.0
    _generation: int | None = None
    _handover_ends: dict[TP, int]
    _caught_up: set[int]

    def key_store(self, table_name: str, key: K) -> URL:
        """The URL of the worker owning ``key``'s partition (KeyError: none known)."""
        topic = self._get_table_topic(self._get_table(table_name))
        return self._assignor.key_store(topic, raw_key(key))

    async def route_req(self, table_name: str, key: K, web: Web,
                        request: Request) -> Response:
        """Forward ``request`` to the owner; raise SameNode when that is this worker."""
        try:
            dest_url = self.key_store(table_name, key)
        except KeyError:
            return unavailable(web, "not_owner_yet", key)
        if request.headers.get(ROUTED_HEADER) and not self._is_self(dest_url):
            # sent here by a worker whose assignment names this one: never sent on again
            if key in self._get_table(table_name):
                raise SameNode()
            return unavailable(web, "not_owner_yet", key)
        try:
            return await asyncio.wait_for(self._route_req(dest_url, web, request),
                                          HOP_TIMEOUT_S)
        except SameNode:
            if key in self._get_table(table_name):
                raise
            if self._still_loading():
                return unavailable(web, "recovering", key)
            if self._catching_up(key):
                return unavailable(web, "catching_up", key)
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            now = time.monotonic()
            if now - self._last_unreachable_log >= UNREACHABLE_LOG_EVERY_S:
                self._last_unreachable_log = now
                log.warning("owner %s of %r unreachable: %r", dest_url, key, error)
            return unavailable(web, "owner_unreachable", key, owner=str(dest_url))

    async def _route_req(self, dest_url: URL, web: Web, request: Request) -> Response:
        """Faust's hop, marked so that the receiver never forwards it again: two workers
        whose assignments disagree for a moment (a rebalance) would pass it back and forth."""
        if self._is_self(dest_url):
            raise SameNode()
        host, port = self._urlident(dest_url)
        headers = {**request.headers, ROUTED_HEADER: str(self.app.conf.canonical_url)}
        routed_url = request.url.with_host(host).with_port(int(port))
        async with self.app.http_client.request(method=request.method, headers=headers,
                                                url=routed_url) as response:
            return web.text(await response.text(), content_type=response.content_type,
                            status=response.status)

    def _is_self(self, url: URL) -> bool:
        return self._urlident(url) == self._urlident(self.app.conf.canonical_url)

    def _still_loading(self) -> bool:
        app: Any = self.app
        return bool(getattr(app, "in_recovery", False) or getattr(app, "rebalancing", False))

    def _catching_up(self, key: K) -> bool:
        """Whether the partition of ``key`` (owned here) is not yet read up to the handover
        end in every routed source: the first log end seen after the assignment, which
        covers whatever the previous owner had read. Once reached, the partition stays
        caught up until the next rebalance (later lag is new traffic: unknown keys in it
        are truly unknown)."""
        app: Any = self.app
        hooks = hooks_of(app)
        if not hooks.routed_sources:
            return False
        generation = app.consumer_generation_id
        if generation != self._generation:
            self._generation, self._handover_ends, self._caught_up = generation, {}, set()
        partitions = hooks.settings.partitions if hooks.settings else app.conf.topic_partitions
        partition = partition_for(raw_key(key), partitions)
        if partition in self._caught_up:
            return False
        try:
            consumer = app.consumer
            assignment = consumer.assignment()
            for topic in hooks.routed_sources:
                tp = TP(topic, partition)
                if tp not in assignment:
                    continue
                end = self._handover_ends.get(tp)
                if end is None:
                    end = consumer.highwater(tp)
                    if end is None:  # no fetch answered yet
                        return True
                    self._handover_ends[tp] = end
                if (consumer._read_offset.get(tp) or 0) < end:
                    return True
        except Exception:  # the consumer is stopping or restarting: nothing to tell
            return False
        self._caught_up.add(partition)
        return False


def unavailable(web: Web, error: str, key: K, **extra: Any) -> Response:
    body = {"error": error, "key": key if isinstance(key, str) else raw_key(key).decode(
        errors="replace"), **extra}
    return web.json(body, status=503, headers={"Retry-After": "1"})
