"""History sink without servers: buffering, record mapping, pseudonymization, DDL shapes,
retention arithmetic, URL handling, and the DDL plus dashboard SQL on current ClickHouse
(chdb, in process). The sink against real servers: tests/integration/test_clickhouse.py."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from agents.privacy import pseudonym_key, pseudonymize
from agents.sinks.clickhouse import ClickHouseSink, RecordDecoder, SinkBuffer, client_for
from agents.sinks.clickhouse_schema import (
    MIGRATIONS,
    TABLE_BY_NAME,
    TABLES,
    create_table_sql,
    expired_partitions,
    migration_statements,
    retention_cutoff,
)
from benchmarks.bench_clickhouse import HistoryWorkload, table_of
from config.settings import Settings, SettingsError
from dashboards.clickhouse_sql import QUERIES, duplicates_sql, render
from streams.ingest import now_ms

KEY = b"test-key"
SETTINGS = Settings(pseudonym_key=KEY.decode())


def decoded(n: int = 400, **kw: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """(table, row) of ``n`` workload records, decoded as the sink does."""
    decoder = RecordDecoder(SETTINGS, KEY)
    out = []
    for attribute, _key, record in HistoryWorkload(seed=3, **kw).records(n):
        table = TABLE_BY_NAME[table_of(attribute)]
        row = decoder.row(table, orjson.dumps(record))
        assert not isinstance(row, str), (table.name, row, record)
        out.append((table.name, row))
    return out


# ------------------------------------------------------------------ buffer
def test_buffer_holds_rows_per_partition_and_flushes_by_size_or_age() -> None:
    buf = SinkBuffer()
    for offset in range(5):
        buf.add(("t", 0), offset, (offset,), now=100.0)
    buf.add(("t", 1), 9, None, now=100.2)  # a skipped record: only its offset counts
    assert buf.rows == 5
    assert not buf.due(now=100.5, batch_rows=6, interval_s=1.0)
    assert buf.due(now=100.5, batch_rows=5, interval_s=1.0)       # size
    assert buf.due(now=101.0, batch_rows=6, interval_s=1.0)       # age of the oldest record
    batch = buf.take()
    assert buf.rows == 0 and buf.first_at is None and not buf.due(1e9, 1, 1.0)
    assert batch[("t", 0)].next_offset == 5 and list(batch[("t", 0)].offsets) == [0, 1, 2, 3, 4]
    assert batch[("t", 1)].rows == [] and batch[("t", 1)].next_offset == 10


def test_a_buffer_of_skipped_records_is_still_due_so_their_offsets_get_committed() -> None:
    buf = SinkBuffer()
    buf.add(("t", 0), 0, None, now=5.0)
    assert buf.rows == 0 and buf.due(now=6.0, batch_rows=1000, interval_s=1.0)


def test_requeued_batch_goes_back_in_front_of_newer_rows() -> None:
    buf = SinkBuffer()
    buf.add(("t", 0), 0, ("a",), now=0.0)
    buf.add(("t", 1), 0, ("x",), now=0.0)
    failed = buf.take()
    buf.add(("t", 0), 1, ("b",), now=1.0)
    buf.add(("t", 2), 0, ("y",), now=1.0)
    buf.requeue(failed, now=2.0)
    assert buf.parts[("t", 0)].rows == [("a",), ("b",)]
    assert list(buf.parts[("t", 0)].offsets) == [0, 1] and buf.parts[("t", 0)].next_offset == 2
    assert set(buf.parts) == {("t", 0), ("t", 1), ("t", 2)} and buf.rows == 4
    assert buf.drop() == 4 and buf.rows == 0 and not buf.parts


# ------------------------------------------------------------------ decoding and rows
def test_every_table_gets_rows_of_its_column_count() -> None:
    rows = decoded(2000)
    seen = {name for name, _ in rows}
    assert seen == {t.name for t in TABLES}
    for name, row in rows:
        assert len(row) == len(TABLE_BY_NAME[name].columns), name


def test_user_ids_are_pseudonymized_everywhere() -> None:
    rows = decoded(3000)
    for name, row in rows:
        columns = TABLE_BY_NAME[name].column_names
        values = dict(zip(columns, row, strict=True))
        if "user_pid" in values:
            assert len(values["user_pid"]) == 32 and not values["user_pid"].startswith("u")
        text = orjson.dumps(values).decode()
        assert not any(f'"u{i}"' in text for i in range(5000)), (name, text)


def test_user_anomalies_are_pseudonymized_in_id_and_explanation() -> None:
    decoder = RecordDecoder(SETTINGS, KEY)
    table = TABLE_BY_NAME["anomalies"]
    record = {"schema_version": 1, "anomaly_id": "user:u42:1000", "status": "open",
              "scope": "user", "scope_id": "u42", "metric": "click_rate", "observed": 9.0,
              "expected_low": 0.0, "expected_high": 1.0, "score": 0.9, "severity": "info",
              "explanation": "User u42: clicks 9/s; like u420, not u42-b.", "first_seen": 1000,
              "last_seen": 2000, "ts": 2000}
    row = dict(zip(table.column_names, decoder.row(table, orjson.dumps(record)), strict=True))
    pid = pseudonymize("u42", KEY)
    assert row["scope_id"] == pid and row["anomaly_id"] == f"user:{pid}:1000"
    assert row["explanation"] == f"User {pid}: clicks 9/s; like u420, not u42-b."
    flood = {**record, "status": "resolved", "explanation": (
        "Resolved after 9 s. Users u42, bot-7, u43 and 2 more (5 in all): clicks back to 1/s.")}
    row = dict(zip(table.column_names, decoder.row(table, orjson.dumps(flood)), strict=True))
    assert row["explanation"] == (
        f"Resolved after 9 s. Users {pid}, {pseudonymize('bot-7', KEY)}, "
        f"{pseudonymize('u43', KEY)} and 2 more (5 in all): clicks back to 1/s.")
    room = {**record, "scope": "room", "scope_id": "r1", "anomaly_id": "room:r1:1000"}
    assert decoder.row(table, orjson.dumps(room))[3] == "r1"  # rooms are not people


@pytest.mark.parametrize(("table", "value", "reason"), [
    ("live_events", b'{"event_id":', "malformed_json"),
    ("live_events", b'{"event_id":"e","type":"like","ts":1,"room_id":"r"}', "missing_field"),
    ("live_events", b'{"event_id":"e","type":"like","ts":1,"room_id":"r","user_id":"u"}',
     "ts_past"),
    ("click_events", None, "malformed_json"),
    ("recommendations", None, "tombstone"),
    ("recommendations", b"[1]", "not_an_object"),
    ("attribution", b'{"record_id": "x"}', "missing_field"),
])
def test_records_breaking_their_contract_are_skipped_with_a_reason(
        table: str, value: bytes | None, reason: str) -> None:
    assert RecordDecoder(SETTINGS, KEY).row(TABLE_BY_NAME[table], value) == reason


def test_inputs_the_workers_refuse_are_not_history() -> None:
    decoder, table = RecordDecoder(SETTINGS, KEY), TABLE_BY_NAME["live_events"]
    good = {"event_id": "e", "type": "like", "ts": now_ms(), "room_id": "r", "user_id": "u"}
    assert not isinstance(decoder.row(table, orjson.dumps(good), b"r"), str)
    assert decoder.row(table, orjson.dumps(good), b"other-room") == "key_mismatch"
    twice = orjson.dumps(good)[:-1] + b',"user_id":"v"}'
    assert decoder.row(table, twice, b"r") == "duplicate_key"


def test_pseudonyms_are_stable_keyed_and_the_key_file_is_shared(tmp_path: Path) -> None:
    assert pseudonymize("u1", KEY) == pseudonymize("u1", KEY) != pseudonymize("u1", b"x")
    settings = Settings(data_dir=str(tmp_path))
    first = pseudonym_key(settings)
    assert len(first) == 64 and pseudonym_key(settings) == first
    assert oct(os.stat(tmp_path / ".pseudonym-key").st_mode & 0o777) == "0o600"
    assert pseudonym_key(Settings(data_dir=str(tmp_path), pseudonym_key="k")) == b"k"


# ------------------------------------------------------------------ DDL, retention, URLs
def test_ddl_uses_only_old_types_on_18_16_and_low_cardinality_on_current() -> None:
    old = "\n".join(migration_statements("lp", (18, 16, 1)))
    new = "\n".join(migration_statements("lp", (24, 8)))
    for forbidden in ("LowCardinality", "DateTime64", "TTL", "JSON", "Map("):
        assert forbidden not in old
    assert "LowCardinality(String)" in new
    assert old.count("CREATE TABLE IF NOT EXISTS") == len(TABLES) + 2
    sql = create_table_sql(TABLE_BY_NAME["promo_triggers"], "lp", (18, 16, 1))
    assert "toDateTime(intDiv(event_ts, 1000), 'UTC')" in sql  # redeliveries: same partition
    assert "ORDER BY (campaign_id, idempotency_key)" in sql
    assert [m.version for m in MIGRATIONS] == sorted({m.version for m in MIGRATIONS})


def test_retention_keeps_exactly_the_last_n_days() -> None:
    cutoff = retention_cutoff(dt.date(2024, 3, 1), days=2)
    assert cutoff == 20240229
    assert expired_partitions(["20240227", "20240228", "20240229", "20240301", "tuple()"],
                              cutoff) == ["20240227", "20240228"]


def test_client_url_handling() -> None:
    client, database = client_for("clickhouse://default:@127.0.0.1:9000")
    assert database == "livepulse" and client.connection.database == "default"
    with pytest.raises(ValueError):
        client_for("clickhouse://h:9000/bad;name")


def test_batch_settings_are_checked() -> None:
    with pytest.raises(SettingsError):
        Settings.from_env({"LIVEPULSE_CLICKHOUSE_BATCH_ROWS": "0"})
    with pytest.raises(SettingsError):
        Settings.from_env({"LIVEPULSE_CLICKHOUSE_BATCH_ROWS": "500",
                           "LIVEPULSE_CLICKHOUSE_MAX_BUFFERED_ROWS": "100"})
    with pytest.raises(ValueError):
        ClickHouseSink(Settings(clickhouse_url="clickhouse://h/x", pseudonym_key="k",
                                clickhouse_batch_interval_ms=0), "127.0.0.1:1")


# ------------------------------------------------------------------ current ClickHouse (chdb)
@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    session_module = pytest.importorskip("chdb.session", reason="chdb (dev dependency)")
    session = session_module.Session(str(tmp_path_factory.mktemp("chdb")))
    yield session
    session.close()


def _version(session: Any) -> tuple[int, ...]:
    from agents.sinks.clickhouse_schema import parse_version

    return parse_version(str(session.query("SELECT version()", "CSV")).strip().strip('"'))


def test_ddl_and_dashboard_sql_run_on_current_clickhouse(chdb_session: Any) -> None:
    version = _version(chdb_session)
    assert version >= (24,)
    for _ in range(2):  # migrations are idempotent
        for sql in migration_statements("lp", version):
            chdb_session.query(sql)
    lowcard = str(chdb_session.query(
        "SELECT type FROM system.columns WHERE database = 'lp' AND table = 'live_events' "
        "AND name = 'room_id'", "CSV"))
    assert "LowCardinality(String)" in lowcard
    rows = decoded(3000)
    for _ in range(2):  # the same rows twice: FINAL must count them once
        for table in TABLES:
            mine = [r for name, r in rows if name == table.name]
            lines = b"\n".join(orjson.dumps(dict(zip(table.column_names, r, strict=True)))
                               for r in mine)
            chdb_session.query(f"{table.insert_sql('lp')[:-len('VALUES')]}FORMAT JSONEachRow "
                               f"{lines.decode()}")
    counts = {}
    for table in TABLES:
        result = str(chdb_session.query(f"SELECT count() FROM lp.{table.name} FINAL", "CSV"))
        counts[table.name] = int(result.strip())
    assert counts == {t.name: sum(1 for name, _ in rows if name == t.name) for t in TABLES}
    to_ms = HistoryWorkload(seed=3).ts_ms + 1
    for query in QUERIES.values():
        out = str(chdb_session.query(render(query, "lp", to_ms - 3_600_000, to_ms), "CSV"))
        assert out.strip(), f"{query.name} returned no rows on chdb {version}"
    dup = str(chdb_session.query(duplicates_sql("lp"), "CSV"))
    assert len(dup.strip().splitlines()) == len(TABLES)
