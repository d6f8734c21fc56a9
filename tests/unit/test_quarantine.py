"""Hot-key quarantine: the limiter alone, then a flood through the in-memory harness."""

from __future__ import annotations

import asyncio
import tempfile

import orjson
import pytest

from agents.testing import Harness
from config.settings import Settings
from streams.quarantine import KeyRateLimiter


def test_limiter_refills_in_event_time_only() -> None:
    limiter = KeyRateLimiter(rate=10.0, burst=5)
    assert all(limiter.admit("u", 0) for _ in range(5))
    assert not limiter.admit("u", 0)
    assert limiter.admit("u", 100)  # 0.1 s of event time: one token
    assert not limiter.admit("u", 100)
    assert not limiter.admit("u", 50)  # going back in time refills nothing
    assert [limiter.admit("u", 10_000) for _ in range(6)] == [True] * 5 + [False]  # capped


def test_limiter_is_bounded_and_forgets() -> None:
    limiter = KeyRateLimiter(rate=1.0, burst=1, max_keys=3)
    for user in ("a", "b", "c", "d"):
        limiter.admit(user, 0)
    assert len(limiter) == 3 and "a" not in limiter.buckets
    assert limiter.forget("d") and not limiter.forget("d")


def test_rate_zero_disables() -> None:
    limiter = KeyRateLimiter(rate=0.0, burst=1)
    assert all(limiter.admit("u", 0) for _ in range(1000))
    assert len(limiter) == 0


@pytest.mark.parametrize("bad", [dict(rate=-1.0, burst=1), dict(rate=1.0, burst=0)])
def test_limiter_refuses_bad_parameters(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        KeyRateLimiter(**bad)  # type: ignore[arg-type]


def _harness(rate: float = 20.0, burst: int = 30) -> Harness:
    return Harness(Settings(kafka_url="memory", data_dir=tempfile.mkdtemp(prefix="lp-q-"),
                            partitions=1, redis_url="", clickhouse_url="",
                            hot_key_rate=rate, hot_key_burst=burst))


def _live(i: int, user: str, room: str, ts: int, kind: str = "like") -> bytes:
    return orjson.dumps({"event_id": f"{user}-{i}", "type": kind, "room_id": room,
                         "user_id": user, "ts": ts})


def test_flooding_user_is_dead_lettered_while_its_partition_flows() -> None:
    h = _harness()
    now = h.now_ms()
    flood = [_live(i, "hot", "r1", now) for i in range(1000)]
    others = [_live(i, f"u{i}", "r2" if i % 2 else "r1", now, "join") for i in range(50)]
    batch = flood[:500] + others + flood[500:]
    asyncio.run(h.feed("live-events", 0, batch))
    letters = h.sent(h.names.dead_letter)
    assert len(letters) == 1000 - 30  # the burst passes, the rest is quarantined
    assert {letter["error_class"] for letter in letters} == {"rate_limited"}
    forwarded = h.sent(h.names.user_activity)
    assert sum(1 for e in forwarded if e["user_id"] != "hot") == 50  # every other event
    assert sum(1 for e in forwarded if e["user_id"] == "hot") == 30
    viewers = h.rooms.pipeline.rooms["r1"].state.viewers
    assert {f"u{i}" for i in range(0, 50, 2)} <= viewers.keys()  # the joins of r1, none lost
    dead = h.engine.metrics.dead_letters.labels(h.names.live_events, "rate_limited")
    assert dead._value.get() == 970


def test_clicks_are_quarantined_too_and_the_user_gets_an_incident() -> None:
    h = _harness(rate=5.0, burst=5)
    start = h.now_ms() - 20_000
    clicks = [orjson.dumps({"event_id": f"c{i}", "type": "view", "user_id": "bot",
                            "session_id": "s1", "item_id": "i1", "ts": start + i * 10})
              for i in range(1500)]
    asyncio.run(h.feed("clicks", 0, clicks))
    letters = h.sent(h.names.dead_letter)
    assert len(letters) > 1400 and letters[0]["error_class"] == "rate_limited"
    assert h.profiles.get("bot").events < 100
    # later traffic moves the watch's event-time clock past the flood's seconds
    asyncio.run(h.feed("clicks", 0, [orjson.dumps(
        {"event_id": "late", "type": "view", "user_id": "calm", "session_id": "s2",
         "item_id": "i1", "ts": start + 17_000})]))
    records = []
    for _ in range(3):
        records += h.anomalies.tick({})
    opened = [r for r in records if r["status"] == "open" and r["scope"] == "user"]
    assert [r["scope_id"] for r in opened] == ["bot"]
    assert opened[0]["metric"] == "rate_limited"


def test_erasure_forgets_the_bucket() -> None:
    h = _harness()
    asyncio.run(h.feed("live-events", 0, [_live(0, "u1", "r1", h.now_ms())]))
    assert "u1" in h.engine.hot_keys.buckets
    assert h.engine.hot_keys.forget("u1")
