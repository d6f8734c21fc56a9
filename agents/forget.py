"""``livepulse forget USER_ID``: the requester's side of erasure (see :mod:`agents.users.erasure`).

1. publish an erasure request on ``<prefix>.erasure`` (key user_id): the worker owning the
   user's partition forgets the user's profile, session, model, trigger and anomaly state
   and Redis copy;
2. wait for its acknowledgement: ``GET /api/users/{id}/footprint`` answering ``held: 0``,
   ``GET /api/users/{id}/profile`` 404 (Redis copy gone too), then
   ``GET /api/users/{id}/erasure`` answering ``done`` for this request: the erasure is
   durable (offsets committed, model snapshots rewritten; a crash no longer undoes it);
3. delete the Redis keys itself (``{ns}:user:{id}`` and the index entry), belt and braces;
4. with ``LIVEPULSE_CLICKHOUSE_URL`` set: wait until the history sink has stored what the
   history topics held (rows produced before the erasure would otherwise land after the
   delete), then delete every row with the user's pseudonym (mutations, waited for);
5. send a tombstone for the key on the erasure topic (compaction drops the request); the
   worker sent the same one once the erasure was durable (it does so whatever sent the
   request), this one is idempotent. With no worker to wait for (``--no-wait``) none is
   sent here: a tombstone before the erasure is durable would let a restart skip it.

Idempotent: an unknown or already forgotten user is a success (nothing found).
"""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from agents.privacy import pseudonym_key, pseudonymize
from config.settings import Settings
from streams.contracts import SCHEMA_VERSION
from streams.control import ControlTopicReader
from streams.ingest import now_ms
from streams.security import kafka_client_options
from streams.topics import topic_names


def erasure_record(user_id: str, source: str = "cli",
                   request_id: str | None = None) -> dict[str, Any]:
    """An ``erasure-request.v1`` record for ``user_id``."""
    return {"schema_version": SCHEMA_VERSION, "user_id": user_id, "ts": now_ms(),
            "request_id": request_id or uuid.uuid4().hex, "source": source}


async def publish(bootstrap: str, topic: str, key: str, value: bytes | None,
                  client: dict[str, Any] | None = None,
                  headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **(client or {}))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key.encode(), headers=headers)
    finally:
        await producer.stop()


def user_api(web_url: str, user_id: str, what: str, token: str = "",
             timeout_s: float = 2.0) -> tuple[int | None, Any]:
    """(HTTP status, JSON body) of ``/api/users/{id}/{what}`` (None: no answer); ``token``
    is the API token when the workers require one."""
    url = f"{web_url.rstrip('/')}/api/users/{urllib.parse.quote(user_id, safe='')}/{what}"
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), None
    except (OSError, ValueError):
        return None, None


def gone(web_url: str, user_id: str, token: str = "") -> bool:
    """The owning worker holds nothing about the user and the profile API answers 404
    (which also means the Redis copy is gone)."""
    status, body = user_api(web_url, user_id, "footprint", token)
    if status != 200 or not isinstance(body, dict) or body.get("held") != 0:
        return False
    return user_api(web_url, user_id, "profile", token)[0] == 404


def acknowledged(web_url: str, user_id: str, request_id: str, token: str = "") -> bool:
    """The worker's acknowledgement of request ``request_id``: the user is :func:`gone`
    and then the erasure API answers ``done`` for that request (durable: offsets
    committed, model snapshots rewritten). Checked in this order: the worker marks an
    erasure pending in the same step that applies it, so a state seen gone and then done
    cannot come from an earlier round."""
    if not gone(web_url, user_id, token):
        return False
    status, body = user_api(web_url, user_id, "erasure", token)
    return status == 200 and isinstance(body, dict) and body.get("state") == "done" \
        and body.get("request_id") == request_id


async def wait_acknowledged(web_url: str, user_id: str, request_id: str, timeout_s: float,
                            token: str = "") -> tuple[bool, float]:
    """Poll the worker API until it acknowledges; (acknowledged, seconds waited)."""
    started = time.monotonic()
    while True:
        if await asyncio.to_thread(acknowledged, web_url, user_id, request_id, token):
            return True, time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return False, time.monotonic() - started
        await asyncio.sleep(0.05)


async def delete_redis(settings: Settings, user_id: str) -> int:
    """Delete the user's serving keys; return how many keys existed."""
    import redis.asyncio as aioredis

    tls = ({"ssl_ca_certs": settings.redis_tls_ca_file}
           if settings.redis_tls_ca_file and settings.redis_url.startswith("rediss:") else {})
    client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=5, **tls)
    try:
        ns = settings.redis_namespace
        found = int(await client.delete(f"{ns}:user:{user_id}"))
        await client.zrem(f"{ns}:users:index", user_id)
        return found
    finally:
        await client.aclose()


async def history_ends(bootstrap: str, topics: list[str],
                       client: dict[str, Any] | None = None) -> dict[tuple[str, int], int]:
    """End offsets of every partition of ``topics`` now (the embedded broker under-reports
    ListOffsets, EMBEDDED-BROKER.md trap 1: :meth:`ControlTopicReader.log_ends` probes a
    fetch)."""
    ends = await ControlTopicReader(bootstrap, topics, client_options=client).log_ends()
    return {(tp.topic, tp.partition): end for tp, end in ends.items()}


def erase_history(settings: Settings, pid: str, ends: dict[tuple[str, int], int],
                  timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) for the sink to store up to ``ends``, then delete the user's rows."""
    from agents.sinks.clickhouse import ClickHouseWriter
    from agents.sinks.clickhouse_schema import PROGRESS_TABLE

    names = topic_names(settings)
    writer = ClickHouseWriter(settings.clickhouse_url, group=f"{settings.app_id}-clickhouse",
                              names=names)
    try:
        writer.migrate()
        deadline = time.monotonic() + timeout_s
        caught_up = False
        while not caught_up and time.monotonic() < deadline:
            stored = {(t, p): n for t, p, n in writer.execute(
                f"SELECT topic, partition, max(next_offset) FROM {writer.database}."
                f"{PROGRESS_TABLE} WHERE consumer_group = %(g)s GROUP BY topic, partition",
                {"g": writer.group})}
            caught_up = all(stored.get(tp, 0) >= end for tp, end in ends.items() if end > 0)
            if not caught_up:
                time.sleep(0.1)
        found = writer.erase_user(pid, timeout_s=timeout_s)
        left = writer.user_rows(pid)
        return {"rows_found": found, "rows_left": left, "sink_caught_up": caught_up,
                "partitions_checked": len(ends)}
    finally:
        writer.close()


async def forget(settings: Settings, bootstrap: str, user_id: str, *, web_url: str | None,
                 timeout_s: float = 30.0) -> dict[str, Any]:
    """The whole ``livepulse forget``; returns the JSON summary (``ok``: acknowledged and
    nothing left)."""
    names = topic_names(settings)
    record = erasure_record(user_id)
    started = time.monotonic()
    client = kafka_client_options(settings)
    await publish(bootstrap, names.erasure, user_id, orjson.dumps(record), client)
    summary: dict[str, Any] = {
        "user_pid": pseudonymize(user_id, pseudonym_key(settings)),
        "request_id": record["request_id"], "topic": names.erasure}
    acknowledged = True  # nothing to wait for without a worker URL
    if web_url:
        acknowledged, waited = await wait_acknowledged(
            web_url, user_id, record["request_id"], timeout_s, settings.api_token)
        summary["worker_ack"] = acknowledged
        summary["worker_ack_s"] = round(waited, 3)
    if settings.redis_url.strip():
        try:
            summary["redis_keys_deleted"] = await delete_redis(settings, user_id)
        except Exception as exc:  # the worker deleted its copy; this is the second pass
            summary["redis_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if settings.clickhouse_url.strip():
        from agents.sinks.clickhouse_schema import TABLES

        try:
            ends = await history_ends(bootstrap, [t.topic(names) for t in TABLES], client)
            summary["clickhouse"] = await asyncio.to_thread(
                erase_history, settings, summary["user_pid"], ends, timeout_s)
        except Exception as exc:  # reported, not raised: the summary says what is left
            summary["clickhouse"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}",
                                     "rows_left": None}
    if web_url and acknowledged:  # durable: let compaction drop the request (and raw id)
        from agents.users.erasure import completion_headers

        await publish(bootstrap, names.erasure, user_id, None, client,
                      completion_headers(record["request_id"]))
    summary["seconds"] = round(time.monotonic() - started, 3)
    summary["ok"] = acknowledged and summary.get("clickhouse", {}).get("rows_left", 0) == 0
    return summary
