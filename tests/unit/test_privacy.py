"""Privacy without services: text redaction, history rows, and what erasure and opt-out
remove from the models and the anomaly watch."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.anomalies.incidents import IncidentTracker, Signal
from agents.anomalies.monitor import AnomalyMonitor
from agents.models import MODEL_NAMES, ModelHost
from agents.privacy import pseudonymize
from agents.redaction import redact_text
from agents.sinks.clickhouse_schema import TABLE_BY_NAME, TABLES, erase_user_sql
from agents.web.privacy import BadRequest, consent_record
from config.settings import Settings
from online_models.propensity import DelayedLabels
from online_models.recsys import HybridRecommender
from streams.contracts import ClickEvent, LiveEvent

KEY = b"unit-key"


@pytest.mark.parametrize(("text", "expected"), [
    ("write to anna.li@example.com please", "write to [email] please"),
    ("ANNA_LI+shop@mail.example.co.uk", "[email]"),
    ("call me +1 (415) 555-0132", "call me [phone]"),
    ("call me 415-555-0132 or 415.555.0132", "call me [phone] or [phone]"),
    ("手机 13800138000 谢谢", "手机 [phone] 谢谢"),
    ("+86 138 0013 8000", "[phone]"),
    ("+44 20 7946 0958!", "[phone]!"),
    ("0049 30 1234567", "[phone]"),
    ("look https://evil.example/x?u=1, now", "look [url], now"),
    ("www.shop.cn/item/9 and shop.example.com", "[url] and [url]"),
    ("thanks @mary_j and @王小明", "thanks [mention] and [mention]"),
    # not personal data: must survive
    ("size 42, 3 for 99.90 (2 left)", "size 42, 3 for 99.90 (2 left)"),
    ("order 2024-03-01 at 12:30, code 1234567", "order 2024-03-01 at 12:30, code 1234567"),
    ("太好看了 love it 👍", "太好看了 love it 👍"),
    ("price 1999.00 yuan, #20240301", "price 1999.00 yuan, #20240301"),
    ("", ""),
])
def test_redaction_replaces_contact_data_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # idempotent: a migration may run it again


def test_history_rows_hold_pseudonyms_and_redacted_text() -> None:
    def pid(value: str) -> str:
        return pseudonymize(value, KEY)

    live = {"event_id": "e1", "type": "comment", "ts": 1, "room_id": "r1", "user_id": "alice",
            "text": "I'm Alice, alice@example.com, +1 415 555 0132", "session_id": "sess-alice"}
    row = dict(zip(TABLE_BY_NAME["live_events"].column_names,
                   TABLE_BY_NAME["live_events"].row(live, pid), strict=True))
    assert row["user_pid"] == pid("alice") and row["session_id"] == pid("sess-alice")
    assert row["text"] == "I'm Alice, [email], [phone]"
    click = {"event_id": "e2", "type": "search", "ts": 1, "user_id": "bob",
             "session_id": "sess-bob", "query": "gift for bob@example.org"}
    row = dict(zip(TABLE_BY_NAME["click_events"].column_names,
                   TABLE_BY_NAME["click_events"].row(click, pid), strict=True))
    assert (row["user_pid"], row["session_id"], row["query"]) == (
        pid("bob"), pid("sess-bob"), "gift for [email]")
    no_session = TABLE_BY_NAME["live_events"].row({**live, "session_id": None}, pid)
    assert no_session[-1] == ""


def test_erasure_sql_covers_every_table_that_holds_users() -> None:
    sql = erase_user_sql("lp")
    user_tables = [t.name for t in TABLES if "user_pid" in t.column_names]
    assert set(user_tables) == {"live_events", "click_events", "recommendations",
                                "promo_triggers", "attribution", "ad_feedback"}
    for name in user_tables:
        assert f"ALTER TABLE lp.{name} DELETE WHERE user_pid = %(pid)s" in sql
    assert any("lp.anomalies DELETE" in s for s in sql)
    assert any("lp.anomalies UPDATE explanation" in s for s in sql)


def models(tmp_path: Path) -> ModelHost:
    return ModelHost(Settings(data_dir=str(tmp_path), snapshot_key="k", recs_top_k=5))


def test_model_host_forgets_a_user_and_keeps_the_others(tmp_path: Path) -> None:
    host = models(tmp_path)
    base = 1_700_000_000_000
    for user in ("gone", "stays"):
        for i, kind in enumerate(("view", "add_to_cart", "purchase", "view")):
            event = ClickEvent(f"{user}{i}", kind, base + i * 1000, user, f"s-{user}",
                               item_id=f"item-{i}", price=10.0 if kind == "purchase" else None)
            host.on_event(event, {"consent": True}, None, "clicks")
        live = LiveEvent(f"{user}-l", "product_click", base + 9000, "room-1", user,
                         item_id="item-9")
        host.on_event(live, {"consent": True}, None, "user-activity", viewer={})
    before = host.holds("gone")
    assert before["scores"] and before["sessions"] >= 2 and before["propensity_pending"]
    assert before["leave_risk_pending"] and before["purchase_filter"]
    forgotten = host.forget("gone", ["s-gone"])
    assert forgotten["sessions"] >= 2
    assert not any(host.holds("gone").values())
    assert host.holds("stays")["scores"] and host.holds("stays")["sessions"] >= 2
    assert host.forget("gone") == dict.fromkeys(forgotten, 0)  # idempotent


def test_opted_out_ranking_ignores_the_user_a_session_was_learned_with() -> None:
    rec = HybridRecommender(seed=1)
    for i, item in enumerate(("a", "b", "c")):
        rec.learn_one({"session_id": "s1", "item_id": item, "ts": 1000 + i, "user_id": "u1",
                       "kind": "purchase"})
    for i, item in enumerate(("d", "e")):  # another session of the same user, and others'
        rec.learn_one({"session_id": "s2", "item_id": item, "ts": 2000 + i, "user_id": "u1",
                       "kind": "view"})
        rec.learn_one({"session_id": "s3", "item_id": item, "ts": 2000 + i, "kind": "view"})
    personal = rec.rank({"session_id": "s2"}, k=10)
    anonymous = rec.rank({"session_id": "s2", "personal": False}, k=10)
    # personal: the user's purchases are filtered out; opted out: nothing user-level applies
    assert {r["item_id"] for r in anonymous} >= {"a", "b", "c"}
    assert not {"a", "b", "c"} & {r["item_id"] for r in personal}
    assert rec.forget_user("u1") == 2 and rec.forget_user("u1") == 0


def test_delayed_labels_forget_pending_and_held_examples() -> None:
    labels = DelayedLabels()  # release="deadline": labelled positives are held
    labels.open("u1", {"a": 1.0}, 0.3, ts=1_000, deadline_ts=61_000)
    labels.open("r|u1", {"a": 1.0}, 0.3, ts=1_000, deadline_ts=61_000)
    labels.open("u2", {"a": 0.0}, 0.1, ts=2_000, deadline_ts=62_000)
    labels.resolve("u1", True, ts=5_000)  # held until its deadline
    assert labels.forget(lambda key: key == "u1" or key.endswith("|u1")) == 2
    assert [x for x, _, _ in labels.expire(now_ts=70_000)] == [{"a": 0.0}]


def test_anomaly_watch_forgets_a_user_and_their_incidents() -> None:
    monitor = AnomalyMonitor(tracker=IncidentTracker(confirm_s=1.0, quiet_s=60))
    hot = [Signal("clicks_per_s", 0.999, 50.0, 0.0, 1.0)]
    for user in ("bot-1", "bot-2"):
        monitor.users.note(user, "click", 1_000)
        monitor.tracker.observe("user", user, hot, 2_000)
    assert monitor.holds_user("bot-1") and monitor.holds_user("bot-2")
    monitor.forget_user("bot-1")
    assert not monitor.holds_user("bot-1")
    assert "bot-1" not in str(monitor.snapshot("user"))
    assert monitor.users.users.get("bot-2") is not None


def test_consent_request_bodies_are_checked_against_the_contract() -> None:
    record = consent_record("u1", {"consent": False})
    assert (record["user_id"], record["consent"], record["source"]) == ("u1", False, "api")
    for user, body, error in [("u1", {}, "missing_field"),
                              ("u1", {"consent": "no"}, "wrong_type"),
                              ("u1", {"consent": False, "source": 5}, "wrong_type"),
                              ("u" * 300, {"consent": False}, "out_of_range"),
                              ("bad\udc80id", {"consent": False}, "bad_encoding")]:
        with pytest.raises(BadRequest) as caught:
            consent_record(user, body)
        assert caught.value.error == error, (user[:8], body)


# ------------------------------------------------------------------ erasure survives restarts
SNAPSHOT_KEY = "unit-snapshot-key-0123456789abcdef"


def erasure_harness(data_dir: Path) -> tuple[Any, Any]:
    """A worker's pipelines in memory (agents.testing.Harness) with its eraser; a second
    harness on the same ``data_dir`` is the same worker restarted (models restored from
    the snapshots there)."""
    from agents.testing import Harness
    from agents.users.erasure import Eraser

    settings = Settings(kafka_url="memory", data_dir=str(data_dir), partitions=2, redis_url="",
                        clickhouse_url="", snapshot_key=SNAPSHOT_KEY,
                        pseudonym_key="unit-pseudonym-key-0123456789abcdef")
    h = Harness(settings)
    h.models.restore()  # as agents.users.pipeline.register does at start
    eraser = Eraser(h.engine, h.profiles, h.models, h.promo, h.anomalies)
    h.users.fence = eraser.fence  # as register does
    return h, eraser


def feed_users(h: Any, users: list[str], tag: str = "") -> None:
    rnd = random.Random(7)
    base = h.now_ms()
    for user in users:
        events = [orjson.dumps({"event_id": f"{user}{tag}-{i}", "type": kind,
                                "ts": base + i * 1000,
                                "user_id": user, "session_id": f"s-{user}",
                                "item_id": f"item-{rnd.randrange(12)}"})
                  for i, kind in enumerate(["view", "click"] * 20)]
        asyncio.run(h.feed("clicks", 0, events, keys=[user.encode()] * len(events)))


def erasure_records(h: Any, entries: list[tuple[str, bytes | None]]) -> list[Any]:
    """Erasure-topic records (key, value; None: the CLI's tombstone) at offsets 0, 1, ..."""
    from agents.testing import records

    return records(h.names.erasure, 0, [value for _, value in entries],
                   keys=[key.encode() for key, _ in entries])


def request(user: str) -> bytes:
    from agents.forget import erasure_record

    return orjson.dumps(erasure_record(user, source="test", request_id=f"req-{user}"))


def personal_reasons(h: Any, user: str) -> set[str]:
    """Reasons of the top-K the API would rank now for ``user`` (no profile: erased)."""
    return {r for item in h.models.recommend(user, None) for r in item["reasons"]} & {"mf"}


def snapshot_files(h: Any) -> dict[str, int]:
    return {name: len(h.models.store.history(name)) for name in MODEL_NAMES}


def test_an_erasure_is_acknowledged_only_once_no_snapshot_holds_the_user(
        tmp_path: Path) -> None:
    h, eraser = erasure_harness(tmp_path)
    feed_users(h, ["gone", "u1", "u2", "u3"])
    h.models.snapshot()
    h.models.snapshot()  # two older snapshots of each model, both holding the user
    assert personal_reasons(h, "gone") == {"mf"}
    (message,) = erasure_records(h, [("gone", request("gone"))])

    async def erase_then_make_durable() -> tuple[dict[str, Any], int]:
        await eraser.on_request(message)
        pending = eraser.status("gone")
        return pending, await eraser.make_durable()

    pending, durable = asyncio.run(erase_then_make_durable())
    assert pending["state"] == "pending"  # applied in memory: not acknowledged yet
    assert durable == 1
    status = eraser.status("gone")
    assert status["state"] == "done" and status["request_id"] == "req-gone"
    assert status["durable_at"] >= status["applied_at"]
    assert eraser.status("never-seen") == {"user_id": "never-seen", "state": "none"}
    assert snapshot_files(h) == dict.fromkeys(MODEL_NAMES, 1)  # older files deleted
    # what a restart would restore: nothing of the user, the others kept
    restarted, _ = erasure_harness(tmp_path)
    assert not any(restarted.models.holds("gone").values())
    assert restarted.models.holds("u1")["mf_factors"] == 1
    assert personal_reasons(restarted, "gone") == set()
    assert asyncio.run(eraser.make_durable()) == 0  # nothing pending: no round


def test_a_restart_reapplies_live_erasures_to_models_restored_from_older_snapshots(
        tmp_path: Path) -> None:
    h, eraser = erasure_harness(tmp_path)
    feed_users(h, ["gone", "done-before", "u1", "u2"])
    h.models.snapshot()  # taken before the erasures
    asyncio.run(eraser.on_request(erasure_records(h, [("gone", request("gone"))])[0]))
    assert not any(h.models.holds("gone").values())
    # killed here: the erasure was applied in memory only, the snapshots still hold the user

    restarted, reeraser = erasure_harness(tmp_path)
    assert restarted.models.holds("gone")["mf_factors"] == 1  # what issue 17 found
    assert personal_reasons(restarted, "gone") == {"mf"}
    topic = erasure_records(restarted, [
        ("gone", request("gone")),
        ("done-before", request("done-before")), ("done-before", None),  # completed
        ("u2", request("u1")),       # key is not the user: never applied
        ("u1", b"{not json"),
    ])
    assert reeraser.restart(topic) == 1
    assert not any(restarted.models.holds("gone").values())
    assert personal_reasons(restarted, "gone") == set()
    for kept in ("done-before", "u1", "u2"):
        assert restarted.models.holds(kept)["mf_factors"] == 1, kept
    assert reeraser.status("gone")["state"] == "done"
    assert snapshot_files(restarted) == dict.fromkeys(MODEL_NAMES, 1)
    again, _ = erasure_harness(tmp_path)  # and a second restart restores no trace of it
    assert not any(again.models.holds("gone").values())
    assert again.models.holds("u1")["mf_factors"] == 1


def test_a_worker_that_cannot_read_the_erasure_topic_at_start_refuses_to_run(
        tmp_path: Path) -> None:
    from streams.broker import free_port

    _, eraser = erasure_harness(tmp_path)
    with pytest.raises(RuntimeError, match="cannot read the erasure topic"):
        eraser.load(f"127.0.0.1:{free_port()}", timeout_s=1.0)  # nothing listens there


def tombstones_sent(h: Any) -> list[Any]:
    """The erasure-topic records the worker sent, as records a restart would read."""
    from agents.testing import Record

    return [Record(sent.topic, sent.partition, 100 + i, sent.key, sent.value, h.now_ms(),
                   sent.headers)
            for i, sent in enumerate(s for s in h.iter_sent() if s.topic == h.names.erasure)]


def test_every_durable_erasure_is_tombstoned_by_its_owner_whatever_its_origin(
        tmp_path: Path) -> None:
    """Issue 17: only the CLI tombstoned its request, so one sent by
    ``DELETE /api/users/{id}`` stayed live and every start re-applied it for ever, also to
    the user come back since. Now the owning worker tombstones every request once durable
    (request id in a header), and a restart reads it as done."""
    from agents.forget import erasure_record
    from agents.testing import records

    h, eraser = erasure_harness(tmp_path)
    feed_users(h, ["via-api", "via-cli", "u1"])
    h.models.snapshot()
    sent_by = {"via-api": "api", "via-cli": "cli"}
    requests = [(user, orjson.dumps(erasure_record(user, source=origin,
                                                   request_id=f"req-{user}")))
                for user, origin in sent_by.items()]
    messages = records(h.names.erasure, 1, [v for _, v in requests],
                       keys=[u.encode() for u, _ in requests])

    async def erase() -> list[Any]:
        for message in messages:
            await eraser.on_request(message)
        before = tombstones_sent(h)  # applied in memory only: nothing tombstoned yet
        assert await eraser.make_durable() == 2
        return before

    assert asyncio.run(erase()) == []
    sent = tombstones_sent(h)
    assert sorted((r.key, r.value, r.partition, r.headers) for r in sent) == [
        (user.encode(), None, 1, [("request-id", f"req-{user}".encode())])
        for user in sorted(sent_by)]
    assert eraser.to_complete == {}  # no raw id kept once sent
    assert eraser.completed._value.get() == 2
    assert asyncio.run(eraser.make_durable()) == 0 and len(tombstones_sent(h)) == 2

    # the API user comes back; a snapshot holds the new state; the worker restarts
    feed_users(h, ["via-api"], tag="-back")
    assert h.models.holds("via-api")["mf_factors"] == 1
    h.models.snapshot()
    restarted, reeraser = erasure_harness(tmp_path)
    assert reeraser.restart([*messages, *sent]) == 0  # nothing live: nothing re-applied
    assert restarted.models.holds("via-api")["mf_factors"] == 1  # the new state is kept
    assert not any(restarted.models.holds("via-cli").values())
    for user in sent_by:  # the acknowledgement stays true after the restart
        status = reeraser.status(user)
        assert status["state"] == "done" and status["request_id"] == f"req-{user}", status
    assert reeraser.status("u1")["state"] == "none"


def test_a_tombstone_the_broker_does_not_take_is_sent_again(tmp_path: Path) -> None:
    h, eraser = erasure_harness(tmp_path)
    feed_users(h, ["gone"])
    (message,) = erasure_records(h, [("gone", request("gone"))])
    send, calls = h.producer.send, []

    async def refuse_first(topic: str, *args: Any) -> Any:
        calls.append(topic)
        if len(calls) == 1:
            raise ConnectionError("broker away")
        return await send(topic, *args)

    h.producer.send = refuse_first  # type: ignore[method-assign]

    async def erase() -> int:
        await eraser.on_request(message)
        with pytest.raises(ConnectionError):
            await eraser.make_durable()
        assert eraser.status("gone")["state"] == "done"  # durable: acknowledged already
        assert list(eraser.to_complete) == ["gone"] and tombstones_sent(h) == []
        return await eraser.make_durable()  # the retried round: no new round, the tombstone

    assert asyncio.run(erase()) == 0
    assert [(r.key, r.value) for r in tombstones_sent(h)] == [(b"gone", None)]
    assert eraser.to_complete == {} and eraser.rounds.labels("ok")._value.get() == 1


def click_values(user: str, tag: str, ts: int, count: int = 4) -> list[bytes]:
    return [orjson.dumps({"event_id": f"{user}{tag}-{i}", "type": "view", "ts": ts + i,
                          "user_id": user, "session_id": f"s-{user}{tag}",
                          "item_id": "item-1"}) for i in range(count)]


def test_events_that_predate_an_erasure_but_are_read_after_it_do_not_bring_the_user_back(
        tmp_path: Path) -> None:
    """CI found it: the erasure is applied by the control agent while the user's clicks,
    sent before the request, were still in flight on the clicks agent; they rebuilt the
    profile (and its Redis copy) after the acknowledgement. Events whose event time or
    arrival predates the request are now dropped (counted); later ones start afresh, on
    this worker and on one restarted from the erasure topic."""
    h, eraser = erasure_harness(tmp_path)
    before = h.now_ms() - 5_000
    asyncio.run(h.feed("clicks", 0, click_values("gone", "-a", before)))
    (message,) = erasure_records(h, [("gone", request("gone"))])
    message.timestamp = h.now_ms()
    asyncio.run(eraser.on_request(message))
    assert h.profiles.get("gone") is None
    # in flight: happened before the request; and arrived before it, dated in the future
    asyncio.run(h.feed("clicks", 0, click_values("gone", "-b", before + 100)))
    asyncio.run(h.feed("clicks", 0, click_values("gone", "-c", h.now_ms() + 60_000),
                       timestamp=message.timestamp - 1))
    asyncio.run(h.feed("clicks", 0, click_values("keeps", "-a", before)))  # not fenced
    assert h.profiles.get("gone") is None and h.profiles.get("keeps") is not None
    assert eraser.fence.dropped == 8
    assert eraser.fence.counter._value.get() == 8
    # after the request: a fresh profile
    after = h.now_ms() + 1_000
    asyncio.run(h.feed("clicks", 0, click_values("gone", "-d", after, count=1),
                       timestamp=after))
    assert h.profiles.get("gone").events == 1

    # a restart re-reads the topic (request and the owner's tombstone): fenced again
    restarted, reeraser = erasure_harness(tmp_path)
    tombstone = erasure_records(restarted, [("gone", None)])[0]
    tombstone.headers, tombstone.timestamp = [("request-id", b"req-gone")], h.now_ms() + 500
    assert reeraser.restart([message, tombstone]) == 0
    asyncio.run(restarted.feed("clicks", 0, click_values("gone", "-b", before + 100),
                               timestamp=message.timestamp - 1))
    assert restarted.profiles.get("gone") is None and reeraser.fence.dropped == 4
    assert reeraser.status("gone")["state"] == "done"
