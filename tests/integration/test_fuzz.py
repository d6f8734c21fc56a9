"""A fuzzed corpus through a real worker on the real broker (issue 8, bad input).

A few hundred messages per input topic, drawn deterministically from the strategies of
tests/fuzzing.py: valid events (any Unicode, out-of-order timestamps, null keys) interleaved
with broken ones (random bytes, wrong types, extremes, deep nesting, oversize, huge keys) and
verbatim duplicates. Then: the worker is alive and never hit an internal error; every bad
record is on the dead-letter topic, identified by source topic/partition/offset, with the
error class the validator gives locally and a reason, and nothing else is; every good record
is processed (room counters, profile event counts, consent, catalog and consent counters,
campaigns in force and refused)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from agents.promo.campaigns import CampaignBook, CampaignError
from streams.contracts import (
    CATALOG_ITEM,
    CLICK_EVENT,
    CONSENT_EVENT,
    DEAD_LETTER,
    LIVE_EVENT,
    Contract,
    check_contract,
)
from streams.ingest import Rejection, Validator, now_ms
from streams.topics import topic_names
from tests.conftest import unique_settings
from tests.fuzzing import GOOD_CAMPAIGN, mutated, mutated_campaign, raw_junk, valid_event
from tests.integration.test_clickhouse import database_url, table_counts
from tests.integration.test_pipeline import latest_by_room, poll_json, read_topic
from tests.integration.test_serving import get_json

pytestmark = pytest.mark.integration

GOOD_PER_TOPIC = 150
BAD_PER_TOPIC = 100
DUPLICATES_PER_TOPIC = 15
ROOMS = ["fz-room", "房间-\u202e\U0001f600", "r\u0301\u200d"]
USERS = ["fz-user", "用户-\u200f\U0001f469\u200d\U0001f4bb", "u%2F\u0000x"]
DUP_ROOM, DUP_USER = "fz-dup-room", "fz-dup-user"
HUGE_KEY = b"k" * 10_000
MONEY_CAP = 1e9
KEY_MISMATCHES = 5  # sums of a few hundred stay exact enough to compare


@dataclass
class Msg:
    topic: str
    key: bytes | None
    value: bytes | None
    kind: str                    # good, bad, dup
    error_class: str | None = None
    record: Any = None


def draw_many(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` values of ``strategy``, the same on every run (hypothesis, derandomized)."""
    out: list[Any] = []

    @settings(max_examples=n, derandomize=True, database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


class Corpus:
    """The messages, what the worker must make of each, and the expected totals."""

    def __init__(self, settings_: Any, now: int) -> None:
        self.names = topic_names(settings_)
        self.now = now
        self.rng = random.Random(8)
        self.settings = settings_
        self.msgs: list[Msg] = []
        self.window = (now - 86_400_000, now + 60_000)  # well inside the ingest bounds

    def validator(self, contract: Contract) -> Validator:
        if contract is CONSENT_EVENT:  # agents.promo.triggers: a consent decision never expires
            return Validator(CONSENT_EVENT, max_bytes=self.settings.max_event_bytes,
                             max_future_skew_ms=int(self.settings.max_future_skew_s * 1000),
                             max_age_ms=1 << 62)
        return Validator.from_settings(contract, self.settings)

    def docs(self, contract: Contract, n: int) -> list[dict[str, Any]]:
        strategy = valid_event(contract, self.now, self.now - self.window[0],
                               self.window[1] - self.now)
        return draw_many(strategy, n)

    def add_topic(self, topic: str, contract: Contract, ids: Any, key_of: str) -> None:
        check = self.validator(contract)
        docs = self.docs(contract, GOOD_PER_TOPIC + DUPLICATES_PER_TOPIC)
        for i, doc in enumerate(docs):
            duplicate = i >= GOOD_PER_TOPIC
            ids(doc, i, duplicate)
            raw = dumps(doc)
            record = check.decode(raw, self.now)
            assert not isinstance(record, Rejection), (doc, record)
            key = doc[key_of].encode() if self.rng.random() > 0.1 or contract is CONSENT_EVENT \
                else None
            self.msgs.append(Msg(topic, key, raw, "dup" if duplicate else "good",
                                 record=record))
            if duplicate:  # redelivered verbatim (same event_id)
                self.msgs.append(Msg(topic, key, raw, "dup", record=record))
        self.add_bad(topic, contract, check, docs[0])

    def add_bad(self, topic: str, contract: Contract, check: Validator,
                base: dict[str, Any]) -> None:
        candidates = draw_many(st.one_of(mutated(base, contract).map(dumps), raw_junk(),
                                         st.none()), BAD_PER_TOPIC * 2)
        bad = 0
        for raw in candidates:
            result = check.decode(raw, self.now)
            if not isinstance(result, Rejection):
                continue  # still valid: not a bad record (and its ids are not unique)
            if self._near_time_bound(raw):
                continue
            key = self.rng.choice([None, HUGE_KEY, b"", "\U0001f600".encode(), b"\xff\xfe",
                                   base.get("user_id", "k").encode()])
            self.msgs.append(Msg(topic, key, raw, "bad", result.error_class))
            bad += 1
            if bad == BAD_PER_TOPIC:
                break

    def _near_time_bound(self, raw: bytes | None) -> bool:
        """A ts within 10 min of a validation bound could be judged differently later."""
        try:
            ts = orjson.loads(raw or b"").get("ts")
        except (orjson.JSONDecodeError, AttributeError):
            return False
        if type(ts) not in (int, float):
            return False
        age, skew = self.settings.max_event_age_s * 1000, self.settings.max_future_skew_s * 1000
        return any(abs(ts - bound) < 600_000 for bound in (self.now - age, self.now + skew))

    def add_consent_key_mismatch(self) -> None:
        for i in range(KEY_MISMATCHES):
            doc = {"user_id": USERS[i % len(USERS)], "consent": False, "ts": self.now}
            self.msgs.append(Msg(self.names.consent, b"someone-else", dumps(doc), "bad",
                                 "key_mismatch"))

    def add_campaigns(self) -> list[str]:
        good = []
        for i in range(3):
            doc = {**GOOD_CAMPAIGN, "id": f"fz-camp-{i}", "enabled": i != 2}
            good.append(doc["id"])
            self.msgs.append(Msg(self.names.campaigns, doc["id"].encode(), dumps(doc), "good"))
        refused = 0
        for i, raw in enumerate(draw_many(st.one_of(mutated_campaign().map(dumps), raw_junk()),
                                          2 * BAD_PER_TOPIC)):
            key = f"fz-bad-camp-{i}"
            try:
                CampaignBook().apply(key, orjson.loads(raw))
                continue  # accepted: not a bad record
            except (CampaignError, orjson.JSONDecodeError):
                pass
            self.msgs.append(Msg(self.names.campaigns, key.encode(), raw, "bad"))
            refused += 1
            if refused == BAD_PER_TOPIC:
                break
        return good


def build_corpus(settings_: Any) -> tuple[Corpus, list[str]]:
    corpus = Corpus(settings_, now_ms())
    names, rng = corpus.names, corpus.rng

    def live_ids(doc: dict[str, Any], i: int, dup: bool) -> None:
        doc["event_id"] = f"fz-live-{i}"
        doc["room_id"] = DUP_ROOM if dup else rng.choice(ROOMS)
        doc["user_id"] = DUP_USER if dup else rng.choice(USERS)

    def click_ids(doc: dict[str, Any], i: int, dup: bool) -> None:
        doc["event_id"] = f"fz-click-{i}"
        doc["user_id"] = DUP_USER if dup else rng.choice(USERS)

    def item_ids(doc: dict[str, Any], i: int, dup: bool) -> None:
        doc["item_id"] = f"fz-item-{i}"

    def consent_ids(doc: dict[str, Any], i: int, dup: bool) -> None:
        doc["user_id"] = DUP_USER if dup else rng.choice(USERS)
        doc["ts"] = corpus.now - 10 * i - 1  # distinct: the newest decision wins

    corpus.add_topic(names.live_events, LIVE_EVENT, live_ids, "room_id")
    corpus.add_topic(names.clicks, CLICK_EVENT, click_ids, "user_id")
    corpus.add_topic(names.catalog, CATALOG_ITEM, item_ids, "item_id")
    corpus.add_topic(names.consent, CONSENT_EVENT, consent_ids, "user_id")
    corpus.add_consent_key_mismatch()
    good_campaigns = corpus.add_campaigns()
    rng.shuffle(corpus.msgs)
    return corpus, good_campaigns


async def produce_all(bootstrap: str, msgs: list[Msg]) -> list[tuple[int, int]]:
    """Produce every message; its (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        futures = [await producer.send(m.topic, key=m.key, value=m.value) for m in msgs]
        await producer.flush()
        return [(meta.partition, meta.offset) for meta in [await f for f in futures]]
    finally:
        await producer.stop()


def metrics_text(web_url: str) -> str:
    with urllib.request.urlopen(f"{web_url}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_fuzzed_corpus_on_a_real_worker(broker, clickhouse_url: str, worker_factory,
                                        tmp_path: Path):
    settings_ = unique_settings(tmp_path, broker, pseudonym_key="fuzz-key-0123456789abcdefghijklm",
                                clickhouse_batch_interval_ms=200)
    settings_ = dataclasses.replace(settings_, clickhouse_url=database_url(
        clickhouse_url, settings_.topic_prefix))  # a database of its own
    names = topic_names(settings_)
    worker = worker_factory(settings_)
    started = time.monotonic()
    corpus, good_campaigns = build_corpus(settings_)
    built = time.monotonic()
    placed = asyncio.run(produce_all(broker.bootstrap, corpus.msgs))
    produced = time.monotonic()
    by_kind = Counter((m.topic.rsplit(".", 1)[-1], m.kind) for m in corpus.msgs)
    classes = Counter(m.error_class for m in corpus.msgs if m.kind == "bad")
    print(f"corpus: {sorted(by_kind.items())}; bad: {sorted(classes.items(), key=str)}; "
          f"built in {built - started:.1f} s, produced in {produced - built:.1f} s")

    # ---- dead letters: exactly the bad records of the validated topics, each identified
    expected = {(m.topic, p, o): m.error_class for m, (p, o) in zip(corpus.msgs, placed,
                                                                    strict=True)
                if m.kind == "bad" and m.topic != names.campaigns}
    letters = asyncio.run(read_topic(broker.bootstrap, names.dead_letter,
                                     until=lambda r: len(r) >= len(expected), timeout=120))
    found: dict[tuple[str, int, int], str] = {}
    for rec in letters:
        headers = {k: v.decode("utf-8", "replace") for k, v in rec.headers}
        body = check_contract(DEAD_LETTER, orjson.loads(rec.value))
        where = (headers["lp-source-topic"], int(headers["lp-source-partition"]),
                 int(headers["lp-source-offset"]))
        assert where == (body["source_topic"], body["source_partition"], body["source_offset"])
        assert headers["lp-error-class"] == body["error_class"]
        assert headers["lp-reason"].strip() and body["reason"].strip()
        found[where] = body["error_class"]
    assert "internal" not in found.values(), worker.log()[-3000:]
    assert set(found) - set(expected) == set(), "good records dead-lettered"
    assert set(expected) - set(found) == set(), "bad records not dead-lettered"
    assert found == expected
    assert len(letters) == len(expected)  # each exactly once

    # ---- good records processed
    live = [m.record for m in corpus.msgs if m.kind == "good" and m.topic == names.live_events]
    per_room = Counter(r.room_id for r in live)

    def rooms_done(recs: list[Any]) -> bool:
        latest = latest_by_room(recs)
        return all(latest.get(room, {}).get("events_total") == n for room, n in per_room.items())

    insights = asyncio.run(read_topic(broker.bootstrap, names.room_insights, until=rooms_done,
                                      timeout=120))
    latest = latest_by_room(insights)
    for room, n in per_room.items():
        assert latest[room]["events_total"] == n, (room, worker.log()[-3000:])
    assert latest[DUP_ROOM]["events_total"] >= DUPLICATES_PER_TOPIC  # counted once or twice

    clicks = [m.record for m in corpus.msgs if m.kind == "good" and m.topic == names.clicks]
    consent = [m.record for m in corpus.msgs if m.kind == "good" and m.topic == names.consent]
    for user in USERS:
        want = sum(1 for r in live if r.user_id == user and r.type != "product_pin") + sum(
            1 for r in clicks if r.user_id == user)
        decisions = [r for r in consent if r.user_id == user]
        url = f"{worker.web_url}/api/users/{urllib.parse.quote(user, safe='')}/profile"
        profile = poll_json(url, lambda p, want=want: p.get("events") == want, timeout=60)
        assert profile["events"] == want, (user, profile)
        assert profile["user_id"] == user
        if decisions:
            assert profile["consent"] == max(decisions, key=lambda r: r.ts).consent

    for user in USERS:  # the API serves these odd ids too
        quoted = urllib.parse.quote(user, safe="")
        for path in (f"/api/users/{quoted}", f"/api/users/{quoted}/recommendations"):
            status, body = get_json(worker.web_url + path)
            assert status == 200 and body["user_id"] == user, (path, status, body)
    for room in per_room:
        status, body = get_json(f"{worker.web_url}/api/rooms/"
                                f"{urllib.parse.quote(room, safe='')}/insights")
        assert status == 200 and body["room_id"] == room, (room, status, body)

    status, stats = get_json(f"{worker.web_url}/api/stats")
    assert status == 200
    for topic in (names.live_events, names.clicks, names.catalog, names.consent):
        good = by_kind[(topic.rsplit(".", 1)[-1], "good")]
        dups = by_kind[(topic.rsplit(".", 1)[-1], "dup")]
        # a consent record keyed by another id is refused before it is counted as in
        assert good + dups // 2 <= stats["events_in"].get(topic, 0) <= good + dups, topic
    assert stats["dead_letters"] == len(expected)

    status, campaigns = get_json(f"{worker.web_url}/api/campaigns")
    in_force = {c["id"]: c for c in campaigns["campaigns"]}
    for cid in good_campaigns:
        assert in_force[cid]["source"] == "topic"
    refused = {m.key.decode() for m in corpus.msgs if m.kind == "bad"
               and m.topic == names.campaigns}
    assert refused <= set(campaigns["rejected"]), refused - set(campaigns["rejected"])

    # ---- the history has every good live event and click (duplicates stored once)
    for table, topic in (("live_events", names.live_events), ("click_events", names.clicks)):
        want = len({m.record.event_id for m in corpus.msgs
                    if m.topic == topic and m.kind != "bad"})
        deadline = time.monotonic() + 90
        while (stored := table_counts(settings_)[table]) != want:
            assert time.monotonic() < deadline, (table, stored, want, worker.log()[-3000:])
            time.sleep(0.5)

    # ---- alive, healthy, no internal error anywhere
    assert worker.process.poll() is None, worker.log()[-3000:]
    status, health = get_json(f"{worker.web_url}/healthz")
    assert status == 200 and health["status"] == "ok"
    errors = [line for line in metrics_text(worker.web_url).splitlines()
              if line.startswith("livepulse_agent_errors_total{") and float(line.split()[-1])]
    assert errors == [], errors
    print(f"processed and checked in {time.monotonic() - produced:.1f} s; "
          f"{len(expected)} dead letters, {sum(per_room.values())} live events in "
          f"{len(per_room)} rooms")
    assert worker.stop() == 0, worker.log()[-3000:]
    assert "Traceback" not in worker.log()
