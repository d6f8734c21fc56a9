"""Sketches: the heap-based Space-Saving counter evicts exactly as the scanning original."""

from __future__ import annotations

import random

import pytest

from agents.recent_ids import RecentIds, id_hash
from agents.rooms.sketches import BloomFilter, TopCounter


class ScanningTopCounter:
    """The original implementation (a scan of the rows per eviction), as the reference."""

    def __init__(self, fields: tuple[str, ...], capacity: int) -> None:
        self.fields = fields
        self.capacity = capacity
        self.rows: dict[str, list[float]] = {}

    def add(self, key: str, weight: float, field: str | None = None,
            amount: float = 1.0) -> None:
        row = self.rows.get(key)
        if row is None:
            base = 0.0
            if len(self.rows) >= self.capacity:
                lightest = min(self.rows, key=lambda k: self.rows[k][0])
                base = self.rows.pop(lightest)[0]
            row = self.rows[key] = [base] + [0.0] * len(self.fields)
        row[0] += weight
        if field is not None:
            row[1 + self.fields.index(field)] += amount


FIELDS = ("comments", "likes", "gifts")


@pytest.mark.parametrize("seed", range(8))
def test_heap_counter_evicts_exactly_like_the_scan(seed: int) -> None:
    rng = random.Random(seed)
    capacity = (1, 2, 8, 64)[seed % 4]
    fast, slow = TopCounter(FIELDS, capacity), ScanningTopCounter(FIELDS, capacity)
    keys = [f"u{i}" for i in range(rng.choice((5, 100, 2_000)))]
    for step in range(6_000):
        key = keys[min(int(rng.paretovariate(1.2)), len(keys)) - 1]
        # many ties (0.5 for a like) and zero-weight updates, as room traffic has
        weight = rng.choice((0.5, 0.5, 0.5, 3.0, 5.0, 0.0, 5.0 + rng.choice((0.1, 52.0))))
        field = rng.choice((*FIELDS, None))
        amount = rng.choice((1.0, 2.5))
        fast.add(key, weight, field, amount)
        slow.add(key, weight, field, amount)
        if step % 997 == 0:  # a snapshot round trip keeps the eviction order
            fast = TopCounter.from_dict(FIELDS, fast.to_dict(), capacity)
        if step % 1_499 == 0 and slow.rows:  # erasure of a counted key
            gone = next(iter(slow.rows))
            del slow.rows[gone]
            assert fast.discard(gone)
    assert list(fast.rows.items()) == list(slow.rows.items())
    assert fast.top(5) == TopCounter(FIELDS, capacity, dict(slow.rows)).top(5)


def test_heap_stays_bounded_and_rows_popped_from_outside_are_not_evicted_twice() -> None:
    top = TopCounter(("clicks",), capacity=4)
    for i in range(1_000):
        top.add(f"i{i % 6}", 1.0 + i % 3, "clicks")
        assert len(top.heap) <= 3 * 4 + 32
    assert len(top.rows) == 4
    lightest = min(top.rows, key=lambda k: top.rows[k][0])
    top.rows.pop(lightest)  # as older callers did (RoomState.forget_user)
    top.add("new", 1.0)
    assert len(top.rows) == 4 and "new" in top.rows


def test_nan_scores_still_evict() -> None:
    top = TopCounter(("gifts",), capacity=1)
    top.add("a", float("nan"))
    top.add("b", 1.0)
    assert list(top.rows) == ["b"]


def test_bloom_check_and_add_is_contains_then_add() -> None:
    fast, slow = BloomFilter(size_bits=1 << 10), BloomFilter(size_bits=1 << 10)
    rng = random.Random(3)
    for _ in range(2_000):
        value = f"u{rng.randrange(400)}"
        before = value in slow
        slow.add(value)
        assert fast.check_and_add(value) == before
    assert fast.bits == slow.bits


def test_recent_ids_asked_and_added_in_any_order() -> None:
    ids = RecentIds(capacity=8)
    recent: list[str] = []
    rng = random.Random(5)
    for _ in range(500):
        event_id = f"e{rng.randrange(20)}"
        probe = f"e{rng.randrange(20)}"
        assert (probe in ids) == (probe in recent)
        assert (event_id in ids) == (event_id in recent)
        assert ids.add(event_id) == (event_id not in recent)
        if event_id not in recent:
            recent = [*recent, event_id][-8:]
    assert list(RecentIds.from_text(ids.to_text(), capacity=8).ring) == [
        id_hash(e) for e in recent]
