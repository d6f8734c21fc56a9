"""Prequential evaluation of the next-item recommenders on session click logs.

    python -m online_models.evaluation.recsys --train TRAIN [--test TEST] [--k 20]
        [--model hybrid|sknn|covisit] [--format auto|tsv|diginetica]
        [--valid-fraction F] [--split-days N] [--min-item-count N] [--weights JSON]

Protocol: every training event is learned in time order; then the test events are streamed in
time order and, for each event whose session already had an event in the test stream, the
model ranks top-``k`` *before* learning the event (prequential: the 2nd click of a session is
predicted from the 1st, the 3rd from the first two, ...). Sessions are anonymous in these logs
(no user id), except Diginetica rows with a ``userId``.

Inputs
------
``tsv``
    ``SessionId<TAB>ItemId<TAB>Time`` (YOOCHOOSE as preprocessed for GRU4Rec). A header row is
    optional (columns are found by name when present); ``Time`` is epoch seconds (float),
    epoch milliseconds (values above 10**11) or an ISO-8601 date-time.
``diginetica``
    The CIKM Cup 2016 ``train-item-views`` file: ``sessionId;userId;itemId;timeframe;eventdate``
    (``userId`` ``NA`` = anonymous). An event's time is ``eventdate`` (midnight UTC) plus
    ``timeframe`` milliseconds. With no ``--test`` the file is split by time: sessions that
    start in the last ``--split-days`` days (default 7) are the test stream.

``--valid-fraction F`` carves the last ``F`` of the *training* sessions (by start time) out as
the test stream and never reads ``--test``: this is the split weights are tuned on.
``--min-item-count N`` drops, before splitting, items seen fewer than N times and then
sessions left with fewer than two events (the usual Diginetica preprocessing uses N = 5).

Printed measures (the last stdout line is one JSON object)
----------------------------------------------------------
``hr@k`` / ``mrr@k``
    Share of predicted events whose next item is in the top-k; mean reciprocal rank (0 when
    not in the top-k).
``coverage@k``
    Distinct items ever recommended / distinct items in train and test.
``novelty``
    Mean self-information ``-log2 p(i)`` of recommended items, ``p(i)`` = share of training
    sessions containing ``i`` (add-one smoothed; higher = less obvious items).
``intra_list_diversity``
    Mean pairwise dissimilarity inside a top-k list. The logs carry no categories, so the
    dissimilarity of two items is ``1 - cosine`` of their training-session co-occurrence
    (``|S_i & S_j| / sqrt(|S_i| |S_j|)``): 0 for items always viewed together, 1 for items
    never viewed in the same session. Measured on up to ``--ild-lists`` lists spread evenly
    over the stream.
``events_per_s`` / ``p99_ms`` / ``p50_ms`` / ``rank_us_mean``
    Test events per second of model time (rank + learn); the 99th and 50th percentiles of one
    ``rank`` call in milliseconds, and its mean in microseconds (wall clock).

Baselines (``--model``): ``covisit`` is plain last-item co-occurrence (count of "b clicked right
after a", no decay); ``sknn`` is a plain session-kNN (the last 10 session items weigh the same,
the 100 most recent sessions holding each are the sample, the 100 sharing most items vote, each
of their items counts the same, no recency). Both use popularity only to break ties. ``hybrid``
is :class:`online_models.recsys.HybridRecommender` with its defaults. ``--params`` passes other
keyword arguments to the model (e.g. ``'{"k_neighbours": 50}'``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from online_models.recsys import COMPONENTS, HybridRecommender

Event = tuple[int, str, str, str | None]  # (ts ms, session id, item id, user id)
MODELS = ("hybrid", "sknn", "covisit")
DAY_MS = 86_400_000

BASELINE_TIEBREAK = 1e-4   # popularity only orders items the baseline scores equally


def build_model(name: str, *, seed: int = 0, weights: dict[str, float] | None = None,
                **params: Any) -> HybridRecommender:
    """The named model: ``hybrid`` (defaults) or one of the plain baselines.

    >>> build_model("covisit").weights["session_knn"]
    0.0
    """
    if name == "hybrid":
        return HybridRecommender(seed=seed, weights=weights, **params)
    off = dict.fromkeys(COMPONENTS, 0.0)
    if name == "covisit":
        plain = {"covisit_window": 1, "covisit_prefix": 1, "covisit_half_life_s": math.inf,
                 "popular_half_life_s": math.inf, "max_covisit_per_item": 10_000}
        return HybridRecommender(
            seed=seed, weights={**off, "covisit": 1.0, "popular": BASELINE_TIEBREAK},
            **{**plain, **params})
    if name == "sknn":
        plain = {"k_neighbours": 100, "position_decay": 1.0, "neighbour_half_life_s": math.inf,
                 "after_weight": 1.0, "before_weight": 1.0, "distance_decay": 1.0,
                 "vote_window": 20, "popular_half_life_s": math.inf}
        return HybridRecommender(
            seed=seed, weights={**off, "session_knn": 1.0, "popular": BASELINE_TIEBREAK},
            **{**plain, **params})
    raise ValueError(f"unknown model {name!r}; choose from {MODELS}")


# ---------------------------------------------------------------------- reading


def parse_time_ms(text: str) -> int:
    """Epoch seconds, epoch milliseconds or ISO-8601 (naive = UTC) as epoch milliseconds.

    >>> parse_time_ms("1396437466.94"), parse_time_ms("1396437466940")
    (1396437466940, 1396437466940)
    >>> parse_time_ms("2014-04-02T11:17:46.940Z")
    1396437466940
    """
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"bad time {text!r}")
    return round(value) if value > 1e11 else round(value * 1000)


def read_tsv(path: str | Path) -> list[Event]:
    """Events of a ``SessionId/ItemId/Time`` TSV (header optional), in file order."""
    events: list[Event] = []
    with open(path, encoding="utf-8") as lines:
        columns = (0, 1, 2)
        for line_no, raw in enumerate(lines, start=1):
            line = raw.rstrip("\r\n")
            if not line:
                continue
            cells = line.split("\t")
            if line_no == 1 and "SessionId" in cells:
                try:
                    columns = tuple(cells.index(c) for c in ("SessionId", "ItemId", "Time"))
                except ValueError:
                    raise ValueError(f"{path}: header lacks SessionId/ItemId/Time: {cells}"
                                     ) from None
                continue
            try:
                session, item, when = (cells[c] for c in columns)
                events.append((parse_time_ms(when), session.strip(), item.strip(), None))
            except (IndexError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: bad row {line[:80]!r}: {exc}") from None
    return events


def read_diginetica(path: str | Path) -> list[Event]:
    """Events of a Diginetica ``sessionId;userId;itemId;timeframe;eventdate`` file."""
    events: list[Event] = []
    day_ms: dict[str, int] = {}
    with open(path, encoding="utf-8") as lines:
        for line_no, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or (line_no == 1 and line.lower().startswith("session")):
                continue
            try:
                session, user, item, timeframe, date = line.split(";")[:5]
                if date not in day_ms:
                    day_ms[date] = parse_time_ms(date)
                ts = day_ms[date] + int(timeframe)
            except ValueError as exc:
                raise ValueError(f"{path}:{line_no}: bad row {line[:80]!r}: {exc}") from None
            events.append((ts, session, item, None if user in ("", "NA") else user))
    return events


def detect_format(path: str | Path) -> str:
    """``"diginetica"`` when the first line is ``;``-separated, else ``"tsv"``."""
    with open(path, encoding="utf-8") as lines:
        first = lines.readline()
    return "diginetica" if first.count(";") >= 4 and "\t" not in first else "tsv"


def read_events(path: str | Path, fmt: str = "auto") -> list[Event]:
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "tsv":
        return read_tsv(path)
    if fmt == "diginetica":
        return read_diginetica(path)
    raise ValueError(f"unknown format {fmt!r}")


def time_ordered(events: Iterable[Event]) -> list[Event]:
    """Sorted by time; ties keep file order (so a session's same-second clicks stay put)."""
    return sorted(events, key=lambda event: event[0])


def session_starts(events: Iterable[Event]) -> dict[str, int]:
    starts: dict[str, int] = {}
    for ts, session, _, _ in events:
        if ts < starts.get(session, ts + 1):
            starts[session] = ts
    return starts


def split_last_sessions(events: list[Event], fraction: float) -> tuple[list[Event], list[Event]]:
    """(earlier, later): the last ``fraction`` of sessions by start time go to ``later``.

    >>> ev = [(1, "a", "x", None), (2, "b", "y", None), (3, "a", "z", None)]
    >>> [len(part) for part in split_last_sessions(ev, 0.5)]
    [2, 1]
    """
    starts = session_starts(events)
    ordered = sorted(starts, key=lambda s: (starts[s], s))
    later = set(ordered[len(ordered) - round(len(ordered) * fraction):])
    return ([e for e in events if e[1] not in later], [e for e in events if e[1] in later])


def split_last_days(events: list[Event], days: float) -> tuple[list[Event], list[Event]]:
    """(earlier, later): sessions starting in the last ``days`` days go to ``later``."""
    starts = session_starts(events)
    cut = max(starts.values()) - days * DAY_MS
    later = {s for s, start in starts.items() if start > cut}
    return ([e for e in events if e[1] not in later], [e for e in events if e[1] in later])


def filter_support(events: list[Event], min_item_count: int) -> list[Event]:
    """Drop items seen fewer than ``min_item_count`` times, then sessions of one event."""
    if min_item_count <= 1:
        return events
    counts: dict[str, int] = {}
    for event in events:
        counts[event[2]] = counts.get(event[2], 0) + 1
    kept = [e for e in events if counts[e[2]] >= min_item_count]
    lengths: dict[str, int] = {}
    for event in kept:
        lengths[event[1]] = lengths.get(event[1], 0) + 1
    return [e for e in kept if lengths[e[1]] >= 2]


# ---------------------------------------------------------------------- measures


class CoOccurrence:
    """Training-session co-occurrence, for novelty and the diversity of a list."""

    def __init__(self, events: Iterable[Event]) -> None:
        sessions_of: dict[str, set[str]] = {}
        for _, session, item, _ in events:
            sessions_of.setdefault(item, set()).add(session)
        self.sessions_of = sessions_of
        self.n_sessions = len({s for members in sessions_of.values() for s in members})

    def self_information(self, item: str) -> float:
        share = (len(self.sessions_of.get(item, ())) + 1) / (self.n_sessions + 1)
        return -math.log2(share)

    def dissimilarity(self, a: str, b: str) -> float:
        sa, sb = self.sessions_of.get(a), self.sessions_of.get(b)
        if not sa or not sb:
            return 1.0
        if len(sa) > len(sb):
            sa, sb = sb, sa
        shared = sum(1 for s in sa if s in sb)
        return 1.0 - shared / math.sqrt(len(sa) * len(sb))

    def diversity(self, items: Sequence[str]) -> float | None:
        pairs = [(a, b) for n, a in enumerate(items) for b in items[n + 1:]]
        if not pairs:
            return None
        return sum(self.dissimilarity(a, b) for a, b in pairs) / len(pairs)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def evaluate(model: HybridRecommender, train: list[Event], test: list[Event], *, k: int = 20,
             ild_lists: int = 2000) -> dict[str, Any]:
    """Learn ``train``, then stream ``test`` prequentially; returns the measures."""
    train, test = time_ordered(train), time_ordered(test)
    started = time.perf_counter()
    for ts, session, item, user in train:
        model.learn_one({"session_id": session, "item_id": item, "ts": ts, "user_id": user,
                         "kind": "click"})
    train_s = time.perf_counter() - started

    co = CoOccurrence(train)
    catalog = {e[2] for e in train} | {e[2] for e in test}
    seen_sessions: set[str] = set()
    n_targets = _count_targets(test)
    ild_every = max(1, n_targets // max(1, ild_lists))

    hits = 0
    reciprocal = 0.0
    predictions = 0
    recommended: set[str] = set()
    self_info_sum, self_info_n = 0.0, 0
    diversity_sum, diversity_n = 0.0, 0
    rank_ms: list[float] = []
    model_s = 0.0
    for ts, session, item, user in test:
        if session in seen_sessions:
            t0 = time.perf_counter()
            top = model.rank({"session_id": session, "user_id": user, "ts": ts}, k=k)
            elapsed = time.perf_counter() - t0
            model_s += elapsed
            rank_ms.append(elapsed * 1000)
            ids = [r["item_id"] for r in top]
            if item in ids:
                hits += 1
                reciprocal += 1.0 / (ids.index(item) + 1)
            recommended.update(ids)
            self_info_sum += sum(co.self_information(i) for i in ids)
            self_info_n += len(ids)
            if predictions % ild_every == 0:
                diversity = co.diversity(ids)
                if diversity is not None:
                    diversity_sum += diversity
                    diversity_n += 1
            predictions += 1
        seen_sessions.add(session)
        t0 = time.perf_counter()
        model.learn_one({"session_id": session, "item_id": item, "ts": ts, "user_id": user,
                         "kind": "click"})
        model_s += time.perf_counter() - t0

    def ratio(a: float, b: float) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        f"hr@{k}": ratio(hits, predictions),
        f"mrr@{k}": ratio(reciprocal, predictions),
        f"coverage@{k}": ratio(len(recommended), len(catalog)),
        "novelty": ratio(self_info_sum, self_info_n),
        "intra_list_diversity": ratio(diversity_sum, diversity_n),
        "events_per_s": round(len(test) / model_s) if model_s else 0,
        "p99_ms": round(percentile(rank_ms, 0.99), 3),
        "p50_ms": round(percentile(rank_ms, 0.50), 3),
        "rank_us_mean": round(1000 * sum(rank_ms) / len(rank_ms), 1) if rank_ms else 0.0,
        "model": "",
        "model_version": model.model_version,
        "train_events": len(train),
        "test_events": len(test),
        "predictions": predictions,
        "train_events_per_s": round(len(train) / train_s) if train_s else 0,
        "items": len(catalog),
    }


def _count_targets(test: list[Event]) -> int:
    seen: set[str] = set()
    targets = 0
    for _, session, _, _ in test:
        if session in seen:
            targets += 1
        seen.add(session)
    return targets


# ---------------------------------------------------------------------- command line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="livepulse eval recsys", description=__doc__.split("\n")[0])
    p.add_argument("--train", required=True, help="training file")
    p.add_argument("--test", help="test file (omit with --valid-fraction or --split-days)")
    p.add_argument("--k", type=int, default=20, help="list length (default 20)")
    p.add_argument("--model", choices=MODELS, default="hybrid")
    p.add_argument("--format", choices=("auto", "tsv", "diginetica"), default="auto")
    p.add_argument("--valid-fraction", type=float,
                   help="evaluate on the last F of the training sessions instead of --test")
    p.add_argument("--split-days", type=float,
                   help="without --test: the sessions of the last N days are the test stream "
                        "(default 7 for a Diginetica file)")
    p.add_argument("--min-item-count", type=int, default=1,
                   help="drop items seen fewer than N times, then 1-event sessions")
    p.add_argument("--weights", type=orjson.loads, default=None,
                   help='blend weights as JSON, e.g. \'{"covisit": 0.5}\' (hybrid only)')
    p.add_argument("--params", type=orjson.loads, default=None,
                   help="other HybridRecommender keyword arguments as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ild-lists", type=int, default=2000,
                   help="lists sampled for intra_list_diversity")
    return p


def load_split(args: argparse.Namespace) -> tuple[list[Event], list[Event], str]:
    """(train, test, description of the split) from the parsed arguments."""
    train = read_events(args.train, args.format)
    fmt = detect_format(args.train) if args.format == "auto" else args.format
    if args.valid_fraction:
        train = filter_support(train, args.min_item_count)
        train, test = split_last_sessions(train, args.valid_fraction)
        return train, test, f"last {args.valid_fraction:g} of train sessions by start time"
    if args.test:
        test = read_events(args.test, args.format)
        if args.min_item_count > 1:
            both = filter_support(train + test, args.min_item_count)
            in_test = {e[1] for e in test}
            train = [e for e in both if e[1] not in in_test]
            test = [e for e in both if e[1] in in_test]
        return train, test, "train file -> test file"
    days = args.split_days if args.split_days is not None else (7.0 if fmt == "diginetica"
                                                                else None)
    if days is None:
        raise SystemExit("give --test, --valid-fraction or --split-days")
    train = filter_support(train, args.min_item_count)
    train, test = split_last_days(train, days)
    return train, test, f"sessions starting in the last {days:g} days"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one evaluation; prints progress to stderr and the JSON result as the last line."""
    args = parser().parse_args(argv)
    if args.weights and args.model != "hybrid":
        raise SystemExit("--weights applies to --model hybrid only")
    train, test, split = load_split(args)
    model = build_model(args.model, seed=args.seed, weights=args.weights, **(args.params or {}))
    print(f"eval recsys: {args.model}, {len(train)} train / {len(test)} test events ({split})",
          file=sys.stderr)
    result = evaluate(model, train, test, k=args.k, ild_lists=args.ild_lists)
    result["model"] = args.model
    result["split"] = split
    if args.min_item_count > 1:
        result["min_item_count"] = args.min_item_count
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return result


if __name__ == "__main__":
    main()
