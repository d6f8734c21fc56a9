"""Replay: file readers, format detection, time compression and paced producing."""

from __future__ import annotations

import asyncio
import gzip
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.settings import Settings
from streams import replay as replay_module
from streams.contracts import CLICK_EVENT, ClickEvent, validate
from streams.ingest import Rejection, Validator, now_ms
from streams.replay import (
    detect_format,
    read_events,
    read_jsonl,
    read_sessions_tsv,
    replay,
    retime,
)
from tests.conftest import SHARED, require
from tests.fakes import FakeProducer

YOOCHOOSE = SHARED / "datasets/recsys/yoochoose-100k/yoochoose-clicks-100k_train_tr.txt"


def write_tsv(path: Path, rows: list[str], header: str = "SessionId\tItemId\tTime") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


# ---------------------------------------------------------------------- JSON lines
def test_read_jsonl_yields_objects_and_raw_bytes_for_the_rest(tmp_path: Path) -> None:
    lines = [
        b'{"event_id": "e1", "type": "like", "ts": 1, "room_id": "r", "user_id": "u"}',
        b"",
        b"   ",
        b'{"event_id": ',
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"ok": "\xe6\x88\x91"}',
    ]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    out = list(read_jsonl(path))
    assert out == [
        orjson.loads(lines[0]), b'{"event_id":', b"[1, 2, 3]", b'"just a string"', {"ok": "我"},
    ]
    gz_path = tmp_path / "events.jsonl.gz"
    gz_path.write_bytes(gzip.compress(path.read_bytes()))
    assert list(read_jsonl(gz_path)) == out


def test_read_jsonl_keeps_undecodable_lines_raw(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "caf\xe9"}\n')
    assert list(read_jsonl(path)) == [b'{"text": "caf\xe9"}']


# ---------------------------------------------------------------------- sessions TSV
def test_read_sessions_tsv_converts_rows_to_click_events(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "clicks.txt", [
        "3\t214716935\t1396437466.94",
        "3\t214832672\t1396438212.318",
        "7\t214826835\t1396413533.104",
        "",
        "7\t214826715\t1396413545",
    ])
    events = list(read_sessions_tsv(path))
    assert [e["ts"] for e in events] == [1396413533104, 1396413545000, 1396437466940,
                                         1396438212318]
    assert events[0] == {
        "event_id": "clicks-4", "type": "click", "ts": 1396413533104, "user_id": "s7",
        "session_id": "7", "item_id": "214826835",
    }
    for event in events:
        record = validate(CLICK_EVENT, event)
        assert isinstance(record, ClickEvent) and record.type == "click"
    in_file_order = list(read_sessions_tsv(path, order="file"))
    assert [e["item_id"] for e in in_file_order] == ["214716935", "214832672", "214826835",
                                                     "214826715"]
    assert len({e["event_id"] for e in in_file_order}) == 4


def test_read_sessions_tsv_finds_columns_by_name(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "x.tsv", ["2014-04-01\t12.5\t99\t5"],
                     header="Day\tTime\tItemId\tSessionId")
    (event,) = read_sessions_tsv(path)
    assert (event["session_id"], event["item_id"], event["ts"]) == ("5", "99", 12_500)


@pytest.mark.parametrize("row", ["1\t2", "1\t2\tsoon", "\t2\t3.0", "1\t2\t-5"])
def test_read_sessions_tsv_names_the_bad_line(tmp_path: Path, row: str) -> None:
    path = write_tsv(tmp_path / "bad.tsv", ["1\t2\t3.0", row])
    with pytest.raises(ValueError, match=r"bad\.tsv:3"):
        list(read_sessions_tsv(path))


def test_read_sessions_tsv_requires_the_columns(tmp_path: Path) -> None:
    path = write_tsv(tmp_path / "nohdr.tsv", ["1\t2\t3.0"], header="a\tb\tc")
    with pytest.raises(ValueError, match="lacks column"):
        list(read_sessions_tsv(path))
    with pytest.raises(ValueError, match="order"):
        list(read_sessions_tsv(path, order="random"))  # type: ignore[arg-type]


def test_read_sessions_tsv_on_the_yoochoose_sample() -> None:
    require(YOOCHOOSE.exists(), f"dataset {YOOCHOOSE} (../shared beside the repo)")
    with YOOCHOOSE.open() as handle:
        rows = sum(1 for line in handle if line.strip()) - 1
    events = list(read_sessions_tsv(YOOCHOOSE))
    assert len(events) == rows > 50_000
    assert len({e["event_id"] for e in events}) == rows
    assert all(a["ts"] <= b["ts"] for a, b in pairwise(events))
    for event in events:
        validate(CLICK_EVENT, event)
    sessions = {e["session_id"] for e in events}
    assert 1000 < len(sessions) < rows
    assert detect_format(YOOCHOOSE) == "sessions-tsv"
    # Two years old: ingest only accepts it once replay stamps the send time.
    validator = Validator.from_settings(CLICK_EVENT, Settings())
    now = now_ms()
    assert validator.check(dict(events[0]), now).error_class == "ts_past"
    _, retimed = next(retime(events, speedup=60.0, start_ms=now))
    assert not isinstance(validator.check(retimed, now), Rejection)


# ---------------------------------------------------------------------- format detection
def test_detect_format(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.data"
    jsonl.write_text('\n{"type": "click"}\n')
    tsv = write_tsv(tmp_path / "b.txt", ["1\t2\t3"])
    odd_jsonl = tmp_path / "c.jsonl"
    odd_jsonl.write_text("not json at all\n")
    other = tmp_path / "d.csv"
    other.write_text("a,b,c\n1,2,3\n")
    assert detect_format(jsonl) == "jsonl"
    assert detect_format(tsv) == "sessions-tsv"
    assert detect_format(odd_jsonl) == "jsonl"
    with pytest.raises(ValueError, match="neither"):
        detect_format(other)
    assert list(read_events(jsonl)) == [{"type": "click"}]
    assert next(iter(read_events(tsv)))["type"] == "click"


# ---------------------------------------------------------------------- retime
def test_retime_divides_gaps_and_starts_at_start_ms() -> None:
    events: list[Any] = [
        {"ts": 1_000_000, "user_id": "a"},
        {"ts": 1_060_000, "user_id": "b"},
        b"raw line",
        {"ts": 1_000_000 + 3_600_000, "user_id": "c"},
    ]
    out = list(retime(events, speedup=60.0, start_ms=5_000))
    assert [due for due, _ in out] == [0.0, 1.0, 1.0, 60.0]
    assert [e["ts"] for _, e in out if isinstance(e, dict)] == [5_000, 6_000, 65_000]
    assert out[2][1] == b"raw line"
    assert events[0]["ts"] == 1_000_000  # input untouched


def test_retime_never_goes_back_in_time_and_handles_extremes() -> None:
    events = [{"ts": 10_000}, {"ts": 20_000}, {"ts": 15_000}, {"ts": "bad"}, {"ts": 30_000}]
    out = list(retime(events, speedup=2.0, start_ms=0))
    assert [due for due, _ in out] == [0.0, 5.0, 5.0, 5.0, 10.0]
    assert out[3][1] == {"ts": "bad"}
    instant = list(retime(events, speedup=math.inf, start_ms=7))
    assert {due for due, _ in instant} == {0.0}
    assert [e["ts"] for _, e in instant if isinstance(e["ts"], int)] == [7, 7, 7, 7]
    with pytest.raises(ValueError):
        list(retime(events, speedup=0.0, start_ms=0))


# ---------------------------------------------------------------------- replay (no broker)
@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    monkeypatch.setattr(replay_module, "AIOKafkaProducer", FakeProducer)
    return FakeProducer


def test_replay_paces_compressed_and_stamps_send_time(fake_producer: type[FakeProducer],
                                                      ) -> None:
    base = 1_396_000_000_000
    events: list[Any] = [
        {"event_id": "a", "type": "click", "ts": base, "user_id": "s1", "session_id": "1",
         "item_id": "9"},
        {"event_id": "b", "type": "click", "ts": base + 3_000, "user_id": "s2",
         "session_id": "2", "item_id": "8"},
        b"{broken",
        {"event_id": "c", "type": "click", "ts": base + 6_000, "session_id": "3",
         "item_id": "7"},
    ]
    before = now_ms()
    counts = asyncio.run(replay("127.0.0.1:1", "t.clicks", events, speedup=20.0))
    after = now_ms()
    producer = fake_producer.last
    assert producer is not None and producer.stopped
    assert counts["sent"] == 4 and counts["raw"] == 1 and counts["failed"] == 0
    assert [(topic, key) for topic, key, _, _ in producer.sent] == [
        ("t.clicks", b"s1"), ("t.clicks", b"s2"), ("t.clicks", None), ("t.clicks", None),
    ]
    assert producer.sent[2][2] == b"{broken"
    start = producer.sent[0][3]
    offsets = [sent_at - start for *_, sent_at in producer.sent]
    assert offsets[1] == pytest.approx(0.15, abs=0.05)
    assert offsets[3] == pytest.approx(0.30, abs=0.05)
    validator = Validator.from_settings(CLICK_EVENT, Settings())
    for _, _, value, _ in (producer.sent[0], producer.sent[1], producer.sent[3]):
        assert before <= orjson.loads(value)["ts"] <= after
    for _, _, value, _ in producer.sent[:2]:
        assert not isinstance(validator.decode(value, after), Rejection)
    assert events[0]["ts"] == base


def test_replay_max_rate_caps_bursts(fake_producer: type[FakeProducer]) -> None:
    events = [{"event_id": str(i), "ts": 0, "user_id": f"u{i % 3}"} for i in range(60)]
    counts = asyncio.run(replay("127.0.0.1:1", "t", events, speedup=1e9, max_rate=300.0))
    assert counts["sent"] == 60
    assert 0.17 <= counts["elapsed_s"] < 0.6
    producer = fake_producer.last
    assert producer is not None
    assert {key for _, key, _, _ in producer.sent} == {b"u0", b"u1", b"u2"}


def test_replay_uses_the_key_field(fake_producer: type[FakeProducer]) -> None:
    events = [{"event_id": "1", "ts": 5, "room_id": "room-9", "user_id": "u1"}]
    asyncio.run(replay("127.0.0.1:1", "t", events, key_field="room_id"))
    producer = fake_producer.last
    assert producer is not None and producer.sent[0][1] == b"room-9"
