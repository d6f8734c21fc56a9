"""Privacy with real processes: a worker on the embedded broker, Redis, ClickHouse 18.16.

* History, logs and metrics: events full of personal data (user ids that are e-mail
  addresses and phone numbers, session ids, comments and searches with phone numbers and
  e-mail addresses) go through a worker with the ClickHouse sink; no raw user id, session
  id, phone number or e-mail appears in any String column of any ClickHouse table, in the
  worker log or in ``/metrics``. A table created before the privacy migration has its raw
  text and session ids scrubbed by it.
* Consent: an opt-out through ``POST /api/users/{id}/consent`` and one through the consent
  topic reach the owning worker's profile (times printed: ``CONSENT api_s=… topic_s=…``);
  afterwards the user's recommendations are marked ``personalized: false`` and use no
  user-level signal, and no promo trigger is sent. Bad bodies get 400 JSON.
* Erasure: ``livepulse forget`` (the real CLI) removes the profile (the changelog's latest
  record for the key is a tombstone), session, model, trigger and anomaly state, Redis keys
  and ClickHouse rows of one user and keeps the others'; forgetting again, or an unknown
  user, succeeds; later events start a fresh profile; ``DELETE /api/users/{id}`` works too.
* An erasure requested over HTTP is tombstoned by the owning worker once durable (the
  request id in a header); a restarted worker re-applies nothing and still answers ``done``.
* Erasure survives a crash: the worker is killed with SIGKILL right after its erasure
  acknowledgement (the user's events sent just before the request still in flight) and
  restarted from the same data and snapshot folders; no snapshot file
  holds the user, the restarted worker holds nothing (footprint 0, profile 404, no ``mf``
  reason) and Redis and ClickHouse stay without the user while traffic goes on (printed:
  ``FORGET-KILL ack_durable_s=…``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from clickhouse_driver.errors import ServerException

from agents.privacy import pseudonymize
from agents.sinks.clickhouse import ClickHouseWriter
from agents.sinks.clickhouse_schema import (
    MIGRATIONS,
    MIGRATIONS_TABLE,
    TABLE_BY_NAME,
    TABLES,
    create_table_sql,
    parse_version,
    system_tables_sql,
)
from config.settings import Settings
from streams.ingest import now_ms
from streams.topics import topic_names
from tests.conftest import REPO, unique_settings
from tests.integration.test_clickhouse import database_url
from tests.integration.test_pipeline import produce, read_topic
from tests.integration.test_serving import get_json, redis_doc, wait_for

pytestmark = pytest.mark.integration
BROKERS = ("tansu", "kafka")  # correctness suites run on both brokers (see tests/conftest.py)

KEY = "privacy-test-key-7Kp2vQ9mZ4rT8wY1nB6cF3hJ5gD0sLa"
CART_CAMPAIGN = """
campaigns:
  - id: cart-offer
    on: [add_to_cart]
    action: coupon
    offer: {code: P1}
    holdout: 0
"""
NON_PERSONAL_REASONS = {"session_knn", "covisit", "recent", "room", "trending", "popular",
                        "content"}


# ------------------------------------------------------------------ helpers
def settings_for(tmp_path: Path, broker: Any, clickhouse_url: str | None = None,
                 **overrides: Any) -> Settings:
    campaigns = tmp_path / "campaigns.yaml"
    campaigns.write_text(CART_CAMPAIGN)
    extra: dict[str, Any] = {"pseudonym_key": KEY, "campaigns_file": str(campaigns)}
    if clickhouse_url is not None:
        tag = f"p{os.getpid()}x{time.monotonic_ns() % 10**9}"
        extra.update(clickhouse_url=database_url(clickhouse_url, tag),
                     clickhouse_batch_interval_ms=200)
    return unique_settings(tmp_path, broker, **{**extra, **overrides})


def click(event_id: str, kind: str, user: str, session: str, ts: int,
          **extra: Any) -> dict[str, Any]:
    body = {"event_id": event_id, "type": kind, "ts": ts, "user_id": user,
            "session_id": session, **extra}
    if kind != "search":
        body.setdefault("item_id", "item-1")
    if kind == "purchase":
        body.setdefault("price", 20.0)
    return body


def live(event_id: str, kind: str, user: str, room: str, ts: int,
         **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "ts": ts, "room_id": room, "user_id": user,
            "host_id": f"host-{room}", **extra}


def send(settings: Settings, clicks: list[dict[str, Any]] = (),  # type: ignore[assignment]
         lives: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
    names = topic_names(settings)
    records = [(names.clicks, e["user_id"].encode(), orjson.dumps(e)) for e in clicks]
    records += [(names.live_events, e["room_id"].encode(), orjson.dumps(e)) for e in lives]
    asyncio.run(produce(settings.kafka_url, records))


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def user_url(worker: Any, user: str, what: str = "") -> str:
    quoted = urllib.parse.quote(user, safe="")
    return f"{worker.web_url}/api/users/{quoted}" + (f"/{what}" if what else "")


def read_values(settings: Settings, topic: str, until: Any, timeout: float = 30) -> list[Any]:
    return asyncio.run(read_topic(settings.kafka_url, topic, until=until, timeout=timeout))


def clickhouse(settings: Settings) -> ClickHouseWriter:
    return ClickHouseWriter(settings.clickhouse_url, group="privacy-test",
                            names=topic_names(settings))


def all_string_values(settings: Settings) -> dict[str, str]:
    """Every row of every table of the history database, as text per table."""
    writer = clickhouse(settings)
    try:
        tables = [t for (t,) in writer.execute(
            "SELECT name FROM system.tables WHERE database = %(db)s", {"db": writer.database})]
        return {t: repr(writer.execute(f"SELECT * FROM {writer.database}.{t}"))
                for t in tables}
    finally:
        writer.close()


def rows_naming(settings: Settings, needle: str) -> dict[str, int]:
    """Rows per table whose text contains ``needle`` (any column)."""
    return {t: text.count(needle) for t, text in all_string_values(settings).items()
            if needle in text}


def cli_forget(settings: Settings, user: str, web_url: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, "-m", "agents.cli", "forget", user, "--web", web_url,
         "--timeout", "60"], cwd=REPO, env={**os.environ, **settings.to_env()},
        capture_output=True, text=True, timeout=180)
    lines = done.stdout.strip().splitlines()
    assert lines, "\n".join(line for line in done.stderr.splitlines()
                             if not line.lstrip()[:1].isdigit())[-3000:]
    return done.returncode, json.loads(lines[-1])


# ------------------------------------------------------------------ history, logs, metrics
def test_no_raw_personal_data_in_history_logs_or_metrics(
        broker: Any, clickhouse_url: str, worker_factory: Any, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, broker, clickhouse_url)
    # a history database from before the privacy migration, with a raw row in it
    writer = clickhouse(settings)
    for sql in system_tables_sql(writer.database):
        writer.execute(sql)
    version = writer.execute("SELECT version()")[0][0]
    for table in TABLES:
        writer.execute(create_table_sql(table, writer.database, parse_version(version)))
    writer.execute(f"INSERT INTO {writer.database}.{MIGRATIONS_TABLE} (version, name, "
                   "server_version) VALUES", [(1, "history tables", version)])
    old = live("old-1", "comment", "old-user", "room-p", now_ms(),
               text="call old-user at 0301 555 8888, olduser@example.net",
               session_id="old-session-77")
    old_row = TABLE_BY_NAME["live_events"].row(old, lambda u: pseudonymize(u, KEY.encode()))
    raw_row = (*old_row[:9], old["text"], old["session_id"])  # what v1 stored
    writer.execute(TABLE_BY_NAME["live_events"].insert_sql(writer.database), [raw_row])
    writer.close()

    worker = worker_factory(settings)
    users = ["jane.doe@example.com", "+8613800138000", "user-7731"]
    sessions = {u: f"sess-{n}-{u[-4:]}" for n, u in enumerate(users)}
    phones = ["415-555-0132", "+44 20 7946 0958", "13912345678"]
    emails = ["jane@example.org", "li.wei@mail.example.cn"]
    base = now_ms()
    clicks, lives = [], []
    for n, user in enumerate(users):
        session = sessions[user]
        for i, kind in enumerate(("view", "click", "add_to_cart", "purchase")):
            clicks.append(click(f"c{n}-{i}", kind, user, session, base + i))
        clicks.append(click(f"c{n}-q", "search", user, session, base + 5,
                            query=f"gift for {emails[n % 2]} tel {phones[n]}"))
        lives += [live(f"l{n}-0", "join", user, "room-p", base, session_id=session),
                  live(f"l{n}-1", "comment", user, "room-p", base + 1, session_id=session,
                       text=f"I'm Jane Doe, call {phones[n]} or mail {emails[n % 2]} 😀"),
                  live(f"l{n}-2", "product_click", user, "room-p", base + 2, item_id="item-2",
                       session_id=session),
                  live(f"l{n}-3", "add_to_cart", user, "room-p", base + 3, item_id="item-2",
                       session_id=session)]
    send(settings, clicks, lives)

    def stored() -> dict[str, int] | None:
        writer = clickhouse(settings)
        try:
            counts = {t.name: writer.execute(
                f"SELECT count() FROM {writer.database}.{t.name} FINAL")[0][0] for t in TABLES}
        finally:
            writer.close()
        done = (counts["live_events"] == len(lives) + 1 and counts["click_events"] == len(clicks)
                and counts["recommendations"] >= len(users) and counts["promo_triggers"] > 0
                and counts["attribution"] > 0)
        return counts if done else None

    counts = wait_for(stored, timeout=90, what="history rows stored")
    print(f"\nPRIVACY history rows: {counts}")
    needles = [*users, *sessions.values(), *phones, *emails, "old-session-77",
               "olduser@example.net", "0301 555 8888", "4155550132", "7946 0958"]
    found = {needle: rows_naming(settings, needle) for needle in needles}
    assert not any(found.values()), found
    values = all_string_values(settings)
    assert "[phone]" in values["live_events"] and "[email]" in values["click_events"]
    assert pseudonymize(users[0], KEY.encode()) in values["click_events"]
    assert pseudonymize(sessions[users[0]], KEY.encode()) in values["click_events"]
    metrics = urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=5).read().decode()
    assert worker.stop() == 0
    log = worker.log()
    migrated = [line for line in log.splitlines() if "history schema migrated (" in line]
    assert migrated and f"v{MIGRATIONS[-1].version})" in migrated[0], migrated
    for needle in needles:
        assert needle not in metrics and needle not in log, needle


# ------------------------------------------------------------------ consent
def opt_out_time(worker: Any, user: str, started: float) -> float:
    """Seconds from ``started`` until the owning worker's profile shows consent false."""
    deadline = started + 30
    while time.monotonic() < deadline:
        status, body = get_json(user_url(worker, user, "profile"))
        if status == 200 and body.get("consent") is False:
            return time.monotonic() - started
        time.sleep(0.005)
    raise AssertionError(f"opt-out of {user} not applied within 30 s")


def request_ids(records: list[Any]) -> set[str]:
    return {orjson.loads(x.value)["request_id"] for x in records}


def opt_out_and_check(settings: Settings, worker: Any, via: str, user: str,
                      opted_out_so_far: int) -> float:
    """A consented user gets personalized recs and a trigger; after the opt-out (via the
    API or the topic) none of either. Returns the seconds until the profile showed it."""
    names = topic_names(settings)
    base, session = now_ms(), f"s-{via}"
    before = [click(f"{via}-pre-{i}", kind, user, session, base + i)
              for i, kind in enumerate(("view", "add_to_cart"))]
    send(settings, before)
    pre_ids = {e["event_id"] for e in before}
    recs = read_values(settings, names.recommendations, lambda r: pre_ids <= request_ids(r))
    assert all(orjson.loads(r.value)["personalized"] for r in recs
               if orjson.loads(r.value)["user_id"] == user)
    pre_cart = f"{via}-pre-1"
    read_values(settings, names.promo_triggers, lambda r: any(  # consented: a trigger
        orjson.loads(x.value)["source"]["event_id"] == pre_cart for x in r))

    started = time.monotonic()
    if via == "api":
        status, answer = http("POST", user_url(worker, user, "consent"),
                              b'{"consent": false, "source": "test"}')
        assert status == 202 and answer["accepted"] and answer["consent"] is False
    else:
        record = {"user_id": user, "consent": False, "ts": now_ms(), "source": "test"}
        asyncio.run(produce(settings.kafka_url,
                            [(names.consent, user.encode(), orjson.dumps(record))]))
    took = opt_out_time(worker, user, started)

    after = [click(f"{via}-post-{i}", kind, user, session, base + 10 + i)
             for i, kind in enumerate(("view", "add_to_cart", "add_to_cart"))]
    send(settings, after)
    post_ids = {e["event_id"] for e in after}
    recs = [orjson.loads(r.value) for r in read_values(
        settings, names.recommendations, lambda r: post_ids <= request_ids(r))]
    mine = [r for r in recs if r["request_id"] in post_ids]
    assert len(mine) == len(post_ids)
    for rec in mine:
        assert rec["personalized"] is False
        assert all(set(i["reasons"]) <= NON_PERSONAL_REASONS for i in rec["items"]), rec
    # the decisions for the carts after the opt-out were made: no_consent, no trigger
    wanted = 2 * opted_out_so_far
    wait_for(lambda: metric_sum(worker, "livepulse_triggers_total", 'outcome="no_consent"')
             >= wanted, timeout=30, what="no_consent decisions")
    triggers = [orjson.loads(r.value) for r in read_values(
        settings, names.promo_triggers, lambda r: False, timeout=1.0)]
    assert not [t for t in triggers if t["source"]["event_id"] in post_ids]
    assert [t["user_id"] for t in triggers if t["source"]["event_id"] == pre_cart] == [user]
    _, body = get_json(user_url(worker, user, "recommendations"))
    assert body["scores"] == {}
    return took


def test_consent_opt_out_via_api_and_topic_stops_personal_output(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, broker)
    worker = worker_factory(settings)

    # bad bodies: 400 with a JSON error, nothing produced
    consent_url = user_url(worker, "someone", "consent")
    for body, error in [(b"{not json", "malformed_json"), (b"[false]", "not_an_object"),
                        (b"{}", "missing_field"), (b'{"consent": "no"}', "wrong_type"),
                        (b"x" * 5000, "too_large")]:
        status, answer = http("POST", consent_url, body)
        assert (status, answer["error"]) == (400, error), (body[:20], answer)
    status, answer = http("POST", user_url(worker, "u" * 300, "consent"), b'{"consent": false}')
    assert status == 400 and answer["error"] == "out_of_range"

    times = {via: opt_out_and_check(settings, worker, via, f"consent-{via}-user", n)
             for n, via in enumerate(("api", "topic"), start=1)}
    print(f"\nCONSENT api_s={times['api']:.3f} topic_s={times['topic']:.3f}")
    assert worker.stop() == 0


def metric_sum(worker: Any, name: str, label: str) -> float:
    text = urllib.request.urlopen(f"{worker.web_url}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and label in line)


# ------------------------------------------------------------------ erasure
def changelog_latest(settings: Settings, table: str, key: str) -> tuple[bool, Any]:
    """(key seen, latest value) of ``key`` in a Faust table's changelog topic."""
    topic = f"{settings.app_id}-{table}-changelog"
    records = read_values(settings, topic, lambda r: False, timeout=2.0)
    mine = [r for r in records if r.key == orjson.dumps(key)]  # table keys are JSON
    return bool(mine), (mine[-1].value if mine else None)


def test_forget_removes_every_trace_of_one_user(
        broker: Any, clickhouse_url: str, worker_factory: Any, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, broker, clickhouse_url)
    names = topic_names(settings)
    worker = worker_factory(settings)
    gone, stays = "forget-me-1", "keep-me-2"
    base = now_ms()
    clicks, lives = [], []
    for user in (gone, stays):
        session = f"session-of-{user}"
        clicks += [click(f"{user}-c{i}", kind, user, session, base + i)
                   for i, kind in enumerate(("view", "click", "add_to_cart", "purchase",
                                             "view"))]
        lives += [live(f"{user}-l{i}", kind, user, "room-f", base + i, item_id="item-3")
                  for i, kind in enumerate(("join", "product_click", "add_to_cart", "like"))]
    send(settings, clicks, lives)
    pid = pseudonymize(gone, KEY.encode())
    r = redis.Redis.from_url(settings.redis_url)
    ns = settings.redis_namespace

    def present() -> bool:
        writer = clickhouse(settings)
        try:
            rows = {t: writer.execute(f"SELECT count() FROM {writer.database}.{t} "
                                      "WHERE user_pid = %(p)s", {"p": pid})[0][0]
                    for t in ("live_events", "click_events", "recommendations",
                              "promo_triggers")}
        except ServerException:
            return False  # the sink has not created the database yet
        finally:
            writer.close()
        footprint = get_json(user_url(worker, gone, "footprint"))[1]
        return (all(rows.values()) and r.exists(f"{ns}:user:{gone}") == 1
                and footprint["parts"]["profile"] == 1 and footprint["parts"]["sessions"] > 0
                and footprint["parts"]["scores"] == 1 and footprint["parts"]["trigger_state"]
                == 1 and get_json(user_url(worker, stays, "profile"))[0] == 200)

    wait_for(present, timeout=90, what="the user everywhere: profile, Redis, ClickHouse, models")

    def room_names(user: str) -> tuple[bool, bool]:
        """(room-f's insight API names ``user``, its Redis document does)"""
        api = get_json(f"{worker.web_url}/api/rooms/room-f")[1]
        doc = redis_doc(settings.redis_url, ns, "room", "room-f")
        return user in json.dumps(api), user in json.dumps(doc)

    wait_for(lambda: room_names(gone) == (True, True) == room_names(stays), timeout=30,
             what="both users as top viewers of room-f (API and Redis)")
    assert get_json(user_url(worker, gone, "footprint"))[1]["parts"]["rooms"] == 1
    wait_for(lambda: changelog_latest(settings, "user-profiles", gone)[1] is not None,
             timeout=30, what="the profile in its changelog (written behind, at commit)")

    code, summary = cli_forget(settings, gone, worker.web_url)
    print(f"\nFORGET {summary}")
    assert code == 0 and summary["ok"] and summary["worker_ack"], summary
    history = summary["clickhouse"]
    assert history["rows_found"] > 0 and history["rows_left"] == 0, history
    assert history["sink_caught_up"] and history["partitions_checked"] == 2 * len(TABLES)
    # nothing remains
    assert get_json(user_url(worker, gone, "profile"))[0] == 404
    footprint = get_json(user_url(worker, gone, "footprint"))[1]
    assert footprint["held"] == 0, footprint
    # gone from the room too (insight API, Redis room document); the other user stays
    wait_for(lambda: room_names(gone) == (False, False), timeout=30,
             what="room-f no longer naming the forgotten user")
    assert room_names(stays) == (True, True)
    wait_for(lambda: gone.encode() not in (changelog_latest(settings, "room-state",
                                                            "room-f")[1] or gone.encode()),
             timeout=30, what="room-f's saved state (changelog) without the user")
    assert stays.encode() in changelog_latest(settings, "room-state", "room-f")[1]
    assert [k for k in r.scan_iter(match=f"{ns}:*") if gone.encode() in k] == []
    assert r.zscore(f"{ns}:users:index", gone) is None
    assert rows_naming(settings, pid) == {} and rows_naming(settings, gone) == {}
    for table in ("user-profiles", "promo-state"):
        seen, latest = changelog_latest(settings, table, gone)
        assert seen and latest is None, table  # a tombstone: compaction drops the key
    erasure = read_values(settings, names.erasure, lambda rs: False, timeout=2.0)
    assert [x.value for x in erasure if x.key == gone.encode()][-1] is None
    # the other user is untouched
    assert get_json(user_url(worker, stays, "profile"))[0] == 200
    assert r.exists(f"{ns}:user:{stays}") == 1
    assert rows_naming(settings, pseudonymize(stays, KEY.encode()))
    # idempotent: again, and an unknown user
    code, again = cli_forget(settings, gone, worker.web_url)
    assert code == 0 and again["ok"] and again["clickhouse"]["rows_found"] == 0, again
    code, unknown = cli_forget(settings, "never-seen-user", worker.web_url)
    assert code == 0 and unknown["ok"], unknown
    print(f"FORGET again_s={again['seconds']} unknown_s={unknown['seconds']}")
    # later events start a fresh profile
    send(settings, [click("after-1", "view", gone, "new-session", now_ms())])
    profile = wait_for(lambda: get_json(user_url(worker, gone, "profile"))[1]
                       if get_json(user_url(worker, gone, "profile"))[0] == 200 else None,
                       timeout=30, what="a fresh profile")
    assert profile["session"]["events"] == 1 and profile["rfm"]["orders"] == 0
    # the HTTP erasure request does the worker's part too
    status, answer = http("DELETE", user_url(worker, gone))
    assert status == 202 and answer["accepted"] and answer["user_id"] == gone
    status, answer = http("DELETE", user_url(worker, "u" * 300))
    assert status == 400 and answer["error"] == "out_of_range"
    wait_for(lambda: get_json(user_url(worker, gone, "footprint"))[1]["held"] == 0
             and get_json(user_url(worker, gone, "profile"))[0] == 404, timeout=30,
             what="erasure via DELETE")
    assert worker.stop() == 0
    log = worker.log()
    assert gone not in log and f"erased user {pid}" in log


def test_an_erasure_requested_over_http_is_tombstoned_once_durable(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    """Issue 17: only the CLI tombstoned its request, so one sent by
    ``DELETE /api/users/{id}`` stayed live and every start re-applied it. Now the owning
    worker tombstones it once durable (the request id in a header); a restarted worker
    re-applies nothing and still acknowledges the request."""
    settings = settings_for(tmp_path, broker, commit_interval_s=0.5)
    names = topic_names(settings)
    first = worker_factory(settings, "first")
    gone = "erase-via-api-1"
    base = now_ms()
    send(settings, [click(f"{gone}-{i}", kind, gone, f"s-{gone}", base + i * 1000)
                    for i, kind in enumerate(["view", "click"] * 5)])
    wait_for(lambda: (a := get_json(user_url(first, gone, "footprint")))[0] == 200
             and a[1]["parts"]["profile"] == 1, timeout=60, what="the user's profile")
    status, answer = http("DELETE", user_url(first, gone))
    assert status == 202 and answer["source"] == "api", answer
    request_id = answer["request_id"]
    acked = wait_for(lambda: (s := get_json(user_url(first, gone, "erasure"))[1])
                     and s.get("state") == "done" and s, timeout=60,
                     what="the worker's acknowledgement of the HTTP erasure")
    assert acked["request_id"] == request_id

    def latest() -> Any:
        records = read_values(settings, names.erasure, lambda rs: any(
            r.key == gone.encode() and r.value is None for r in rs), timeout=30)
        return [r for r in records if r.key == gone.encode()][-1]

    tombstone = latest()
    assert tombstone.value is None  # the request is no longer live: compaction drops it
    assert [tuple(h) for h in tombstone.headers] == [("request-id", request_id.encode())]
    assert first.stop() == 0

    second = worker_factory(settings, "second")  # same folders and port
    footprint = wait_for(lambda: (a := get_json(user_url(second, gone, "footprint")))[0]
                         == 200 and a[1], timeout=60, what="the restarted worker")
    assert footprint["held"] == 0, footprint
    status_after = get_json(user_url(second, gone, "erasure"))[1]
    assert status_after["state"] == "done" and status_after["request_id"] == request_id
    assert latest().value is None  # the restart sent no new request
    assert second.stop() == 0
    log = second.log()
    assert "re-applied" not in log and gone not in log and gone not in first.log()
    print(f"\nFORGET-API tombstone headers={tombstone.headers} after_restart={status_after}")


def test_forget_while_the_worker_is_down_cleans_its_saved_rooms(
        broker: Any, worker_factory: Any, tmp_path: Path) -> None:
    """An erasure published while no worker runs: the next worker recovers the room from
    its changelog (empty data dir), reads the request and removes the user from the room's
    saved state, insight API and Redis document, without any new event for the room."""
    from agents.forget import erasure_record, publish
    from streams.broker import free_port

    settings = settings_for(tmp_path, broker)
    names = topic_names(settings)
    first = worker_factory(settings, "first")
    gone, stays, room = "forget-me-3", "keep-me-4", "room-r"
    base = now_ms()
    send(settings, lives=[live(f"{user}-{kind}", kind, user, room, base + i)
                          for user in (gone, stays) for i, kind in enumerate(("join", "like"))])
    ns = settings.redis_namespace

    def names_in_room(user: str, worker: Any) -> tuple[bool, bool, bool]:
        """(the insight API, the Redis room document, the saved state) name ``user``"""
        api = get_json(f"{worker.web_url}/api/rooms/{room}")[1]
        doc = redis_doc(settings.redis_url, ns, "room", room)
        saved = changelog_latest(settings, "room-state", room)[1] or b""
        return user in json.dumps(api), user in json.dumps(doc), user.encode() in saved

    wait_for(lambda: names_in_room(gone, first) == (True, True, True), timeout=30,
             what="the user in the room, its Redis document and its saved state")
    assert first.stop() == 0
    asyncio.run(publish(settings.kafka_url, names.erasure, gone,
                        orjson.dumps(erasure_record(gone, source="test"))))
    second = worker_factory(settings.with_overrides(
        web_port=free_port(), data_dir=str(tmp_path / "data-2")), "second")
    wait_for(lambda: names_in_room(gone, second) == (False, False, False), timeout=60,
             what="the room cleaned after recovery")
    assert names_in_room(stays, second) == (True, True, True)
    assert second.stop() == 0
    assert gone not in second.log()


def snapshots_holding(settings: Settings, user: str) -> tuple[list[str], int]:
    """The snapshot files (any model, any age) a worker could restore ``user`` from, and
    how many snapshot files there are in all."""
    from agents.models import MODEL_NAMES, ModelHost
    from online_models.snapshot import SnapshotError, load_snapshot

    store = ModelHost(settings).store
    holding, total = [], 0
    for name in MODEL_NAMES:
        for path in store.history(name):
            total += 1
            host = ModelHost(settings)
            try:
                model, _ = load_snapshot(path, key=host.key, expected_model=name)
            except SnapshotError:  # pruned or being replaced meanwhile
                continue
            if name != "sentiment":
                setattr(host, name, model)
            if any(host.holds(user).values()):
                holding.append(path.name)
    return holding, total


def test_forget_then_sigkill_and_restart_keeps_the_user_forgotten(
        broker: Any, clickhouse_url: str, worker_factory: Any, tmp_path: Path) -> None:
    """Issue 17: ``livepulse forget`` answered ok, the worker was killed with SIGKILL and
    restarted from a model snapshot taken before the erasure: the user was back in the
    models. Now the acknowledgement comes only once no snapshot holds the user, and a
    restart re-applies live requests before the first event; killed right after the
    acknowledgement, the restarted worker holds nothing, ranks nothing personal for the
    user, and neither Redis nor ClickHouse get the user back."""
    import random
    import signal

    settings = settings_for(tmp_path, broker, clickhouse_url, snapshot_interval_s=2.0,
                            snapshot_dir=str(tmp_path / "snapshots"),
                            snapshot_key="erasure-test-snapshot-key-0123456789abcdef",
                            commit_interval_s=0.5, session_timeout_s=6.0,
                            rebalance_timeout_s=6.0, heartbeat_interval_s=1.0)
    first = worker_factory(settings, "first")
    gone, others = "erase-me-1", ["keeps-1", "keeps-2", "keeps-3"]
    rnd = random.Random(17)
    base = now_ms()
    send(settings, [click(f"{user}-{i}", kind, user, f"s-{user}", base + i * 1000,
                          item_id=f"item-{rnd.randrange(12)}")
                    for user in (gone, *others)
                    for i, kind in enumerate(["view", "click"] * 20)])
    pid = pseudonymize(gone, KEY.encode())
    r = redis.Redis.from_url(settings.redis_url)
    ns = settings.redis_namespace

    def held_everywhere() -> bool:
        footprint = get_json(user_url(first, gone, "footprint"))[1] or {}
        parts = footprint.get("parts", {})
        writer = clickhouse(settings)
        try:
            rows = writer.execute(f"SELECT count() FROM {writer.database}.click_events "
                                  "WHERE user_pid = %(p)s", {"p": pid})[0][0]
        except ServerException:
            return False  # the sink has not created the database yet
        finally:
            writer.close()
        return (parts.get("mf_factors") == 1 and parts.get("profile") == 1 and rows >= 40
                and r.exists(f"{ns}:user:{gone}") == 1)

    wait_for(held_everywhere, timeout=90, what="the user in the models, Redis and ClickHouse")
    # a periodic snapshot taken now holds the user (what a restart restored before)
    wait_for(lambda: snapshots_holding(settings, gone)[0], timeout=30,
             what="a model snapshot holding the user")
    # more of the user's events, sent just before the request: some are still in flight
    # when the worker applies it (what CI once caught rebuilding the profile); they must
    # not bring the user back
    send(settings, [click(f"{gone}-late-{i}", "view", gone, f"s-{gone}", now_ms(),
                          item_id=f"item-{rnd.randrange(12)}") for i in range(300)])

    forget = subprocess.Popen(
        [sys.executable, "-m", "agents.cli", "forget", gone, "--web", first.web_url,
         "--timeout", "240"], cwd=REPO, env={**os.environ, **settings.to_env()},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        acked = wait_for(lambda: (s := get_json(user_url(first, gone, "erasure"))[1]) and
                         s.get("state") == "done" and s, timeout=60,
                         what="the worker's erasure acknowledgement")
        first.process.send_signal(signal.SIGKILL)  # right after the acknowledgement
        first.process.wait(10)
        ack_s = (acked["durable_at"] - acked["applied_at"]) / 1000
        # nothing restorable holds the user: the older snapshot files are gone
        holding, files = snapshots_holding(settings, gone)
        assert holding == [] and files >= 4, (holding, files)
        second = worker_factory(settings, "second")  # same data and snapshot folders, port
        out, err = forget.communicate(timeout=360)
    finally:
        if forget.poll() is None:
            forget.kill()
            forget.wait(10)
    summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"stderr": err[-3000:]}
    print(f"\nFORGET-KILL ack_durable_s={ack_s:.3f} summary={summary}")
    assert forget.returncode == 0 and summary["ok"] and summary["worker_ack"], (
        summary, {what: get_json(user_url(second, gone, what))
                  for what in ("footprint", "profile", "erasure")})
    assert summary["clickhouse"]["rows_left"] == 0, summary

    # the restarted worker: nothing held, nothing personal ranked, no profile (its answer
    # for the user's partition is 503 "recovering" until it has read that partition's input
    # up to the log end it found)
    footprint = wait_for(lambda: (a := get_json(user_url(second, gone, "footprint")))[0] == 200
                         and a[1], timeout=60, what="the restarted worker serving the user")
    assert footprint["held"] == 0, footprint
    assert get_json(user_url(second, gone, "profile"))[0] == 404
    recs = get_json(user_url(second, gone, "recommendations"))[1]
    assert recs["items"] and recs["scores"] == {}, recs
    assert all("mf" not in item["reasons"] for item in recs["items"]), recs
    # the others' model state survived the rewrite
    assert get_json(user_url(second, others[0], "footprint"))[1]["parts"]["mf_factors"] == 1

    # traffic goes on; the sink and the Redis writer run past the erasure: no resurrection
    later = [click(f"{user}-after", "view", user, f"s-{user}", now_ms()) for user in others]
    send(settings, later)

    def stored_later() -> bool:
        writer = clickhouse(settings)
        try:
            return writer.execute(f"SELECT count() FROM {writer.database}.click_events "
                                  "WHERE endsWith(event_id, '-after')")[0][0] == len(later)
        finally:
            writer.close()

    wait_for(stored_later, timeout=60, what="later events in ClickHouse")
    wait_for(lambda: r.exists(f"{ns}:user:{others[0]}") == 1, timeout=30,
             what="the other users' Redis copies written again")
    assert rows_naming(settings, pid) == {} and rows_naming(settings, gone) == {}
    assert r.exists(f"{ns}:user:{gone}") == 0 and r.zscore(f"{ns}:users:index", gone) is None
    names = topic_names(settings)
    mine = [orjson.loads(x.value) for x in read_values(
        settings, names.recommendations, lambda rs: False, timeout=2.0)]
    assert not [rec for rec in mine if rec["user_id"] == gone
                and rec["ts"] >= acked["applied_at"]]
    assert get_json(user_url(second, gone, "footprint"))[1]["held"] == 0
    assert second.stop() == 0, second.log()[-3000:]
    assert gone not in second.log() and gone not in first.log()
