"""Replay recorded events into the broker, time-compressed.

Two input formats:

* ``jsonl``: one JSON event per line (optionally gzipped). Lines that are not JSON objects
  are passed on as raw ``bytes`` so that ingest dead-letters them like any bad input.
* ``sessions-tsv``: the tab-separated ``SessionId  ItemId  Time`` format of session-based
  recommendation data sets (YOOCHOOSE/RecSys 2015 preprocessed for GRU4Rec), ``Time`` in
  epoch seconds. Rows become ``click`` events.

Replay keeps the recorded gaps divided by ``speedup`` and stamps each event with the wall
clock at send time, so ingest's time bounds accept years-old data. With ``keep_time`` the
events keep their recorded ``ts`` (a backfill: :mod:`agents.backfill` runs the worker that
accepts them).

>>> events = [{"ts": 1_000, "user_id": "a"}, {"ts": 61_000, "user_id": "b"}]
>>> [(due, e["ts"]) for due, e in retime(events, speedup=60.0, start_ms=5_000)]
[(0.0, 5000), (1.0, 6000)]
>>> [(due, e["ts"]) for due, e in retime(events, speedup=60.0, start_ms=5_000, keep_time=True)]
[(0.0, 1000), (1.0, 61000)]
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

import orjson
from aiokafka import AIOKafkaProducer

from streams.ingest import now_ms as wall_clock_ms

Format = Literal["jsonl", "sessions-tsv"]
Event = dict[str, Any] | bytes

SESSION_COLUMNS = ("SessionId", "ItemId", "Time")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def _open(path: str | Path) -> IO[bytes]:
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def read_jsonl(path: str | Path) -> Iterator[Event]:
    """Events of a JSON-lines file: dicts, or the raw line (bytes) when it is not an object."""
    with _open(path) as lines:
        for line in lines:
            stripped = line.strip()
            if not stripped:
                continue
            try:
                obj = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                yield stripped
                continue
            yield obj if type(obj) is dict else stripped


def read_sessions_tsv(path: str | Path, *, order: Literal["time", "file"] = "time",
                      ) -> Iterator[dict[str, Any]]:
    """Click events from a ``SessionId<TAB>ItemId<TAB>Time`` file with a header row.

    Parameters
    ----------
    path
        The TSV file (``.gz`` allowed). Extra columns are ignored.
    order
        ``"time"`` (default) sorts all rows by time, as a replay needs: such files are
        usually grouped by session. ``"file"`` streams rows in file order, in constant memory.

    Raises
    ------
    ValueError
        On a missing column or a row that does not parse (message names the line).
    """
    rows = _session_rows(path)
    if order == "time":
        rows = iter(sorted(rows, key=lambda row: row[3]))
    elif order != "file":
        raise ValueError(f"order must be 'time' or 'file', got {order!r}")
    prefix = Path(path).name.split(".")[0][:64]
    for line_no, session, item, ts in rows:
        yield {
            "event_id": f"{prefix}-{line_no}",
            "type": "click",
            "ts": ts,
            "user_id": f"s{session}",
            "session_id": session,
            "item_id": item,
        }


def _session_rows(path: str | Path) -> Iterator[tuple[int, str, str, int]]:
    """(line number, session id, item id, ts in ms) per data row."""
    with _open(path) as lines:
        header = lines.readline().decode("utf-8").rstrip("\r\n").split("\t")
        missing = [c for c in SESSION_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {missing}; got {header}")
        session_col, item_col, time_col = (header.index(c) for c in SESSION_COLUMNS)
        width = max(session_col, item_col, time_col) + 1
        for line_no, raw in enumerate(lines, start=2):
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line:
                continue
            cells = line.split("\t")
            try:
                if len(cells) < width:
                    raise ValueError(f"expected >= {width} columns")
                session, item = cells[session_col].strip(), cells[item_col].strip()
                seconds = float(cells[time_col])
                if not session or not item or not seconds >= 0:
                    raise ValueError("empty id or negative/NaN time")
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: bad row {line[:80]!r}: {exc}") from None
            yield line_no, session, item, round(seconds * 1000)


def detect_format(path: str | Path) -> Format:
    """``"jsonl"`` or ``"sessions-tsv"``, from the first non-blank line, else the suffix."""
    with _open(path) as lines:
        for raw in lines:
            line = raw.strip()
            if not line:
                continue
            if line.startswith(b"{"):
                return "jsonl"
            cells = line.decode("utf-8", "replace").split("\t")
            if all(column in cells for column in SESSION_COLUMNS):
                return "sessions-tsv"
            break
    suffixes = Path(path).suffixes
    if any(s in _JSONL_SUFFIXES for s in suffixes):
        return "jsonl"
    raise ValueError(f"{path}: neither JSON lines nor a SessionId/ItemId/Time TSV")


def read_events(path: str | Path) -> Iterator[Event]:
    """Events of a file in either format (see :func:`detect_format`)."""
    if detect_format(path) == "jsonl":
        return read_jsonl(path)
    return read_sessions_tsv(path)


def retime(events: Iterable[Event], *, speedup: float, start_ms: int,
           keep_time: bool = False) -> Iterator[tuple[float, Event]]:
    """Compress time: yield ``(due_offset_s, event)`` with gaps divided by ``speedup``.

    The first timed event is due at 0 and gets ``ts = start_ms``; later ones keep their
    distance to it divided by ``speedup`` (``inf``: all at once). ``keep_time``: every
    event keeps its own ``ts`` (only the pacing is compressed). Dicts are copied, never
    changed in place. Events without an integer ``ts`` (raw bytes, broken dicts) and events
    older than their predecessor are due with the previous one: offsets never go back.
    """
    if not speedup > 0:
        raise ValueError("speedup must be > 0")
    first_ts: int | None = None
    offset_ms = 0.0
    for event in events:
        ts = event.get("ts") if isinstance(event, dict) else None
        if type(ts) is not int:
            yield offset_ms / 1000.0, event
            continue
        if first_ts is None:
            first_ts = ts
        offset_ms = max(offset_ms, (ts - first_ts) / speedup)
        yield offset_ms / 1000.0, (dict(event) if keep_time
                                   else {**event, "ts": start_ms + int(offset_ms)})


def _key(event: dict[str, Any], key_field: str) -> bytes | None:
    value = event.get(key_field)
    return None if value is None else str(value).encode()


async def replay(bootstrap: str, topic: str, events: Iterable[Event], *,
                 speedup: float = 60.0, max_rate: float | None = None,
                 key_field: str = "user_id", keep_time: bool = False,
                 client_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Produce ``events`` to ``topic`` at the recorded pace divided by ``speedup``.

    Each dict's ``ts`` is set to the wall clock when it is sent (``keep_time``: left as
    recorded); raw ``bytes`` go out unchanged and without a key. ``max_rate`` (events/s)
    caps bursts. Returns counts: ``sent``, ``raw``, ``failed``, ``elapsed_s`` and ``rate``.
    """
    if max_rate is not None and max_rate <= 0:
        raise ValueError("max_rate must be > 0")
    min_gap_s = 1.0 / max_rate if max_rate else 0.0
    counts = {"sent": 0, "raw": 0, "failed": 0}

    def on_delivery(future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            counts["failed"] += 1

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                **(client_options or {}))  # TLS/SASL: streams.security
    await producer.start()
    clock = time.monotonic
    start = clock()
    try:
        next_free_s = 0.0
        for due_s, event in retime(events, speedup=speedup, start_ms=wall_clock_ms(),
                                   keep_time=keep_time):
            send_at = max(due_s, next_free_s)
            next_free_s = send_at + min_gap_s
            wait = start + send_at - clock()
            if wait > 0.002:  # below that, sleeping costs more than it paces
                await asyncio.sleep(wait)
            elif counts["sent"] % 1000 == 999:
                await asyncio.sleep(0)  # let the producer's sender task run
            if isinstance(event, bytes):
                value, key = event, None
                counts["raw"] += 1
            else:
                if not keep_time:
                    event["ts"] = wall_clock_ms()
                value, key = orjson.dumps(event), _key(event, key_field)
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(on_delivery)
            counts["sent"] += 1
        await producer.flush()
        await asyncio.sleep(0)  # delivery callbacks run on the next loop iteration
    finally:
        elapsed = clock() - start
        await producer.stop()
    return {**counts, "elapsed_s": round(elapsed, 3),
            "rate": round(counts["sent"] / elapsed, 1) if elapsed > 0 else 0.0}
