"""Small bounded-memory sketches used by room and user state."""

from __future__ import annotations

import base64
import hashlib
import heapq
import math


class HyperLogLog:
    """Approximate distinct count in 2**p bytes (p=10: 1 KiB, ~3.3 % standard error).

    >>> hll = HyperLogLog()
    >>> for i in range(10_000):
    ...     hll.add(f"user-{i}")
    >>> abs(hll.count() - 10_000) < 1_000
    True
    >>> HyperLogLog.from_text(hll.to_text()).count() == hll.count()
    True
    """

    __slots__ = ("p", "registers")

    def __init__(self, p: int = 10, registers: bytearray | None = None) -> None:
        self.p = p
        self.registers = registers if registers is not None else bytearray(1 << p)

    def add(self, value: str) -> None:
        h = int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")
        index = h >> (64 - self.p)
        rest = (h << self.p) & ((1 << 64) - 1)
        rank = 64 - self.p + 1 if rest == 0 else (64 - rest.bit_length()) + 1
        if rank > self.registers[index]:
            self.registers[index] = rank

    def count(self) -> int:
        m = len(self.registers)
        alpha = 0.7213 / (1 + 1.079 / m)
        estimate = alpha * m * m / sum(2.0 ** -r for r in self.registers)
        zeros = self.registers.count(0)
        if estimate <= 2.5 * m and zeros:
            estimate = m * math.log(m / zeros)  # linear counting for small cardinalities
        return round(estimate)

    def to_text(self) -> str:
        return base64.b64encode(bytes(self.registers)).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> HyperLogLog:
        registers = bytearray(base64.b64decode(text))
        return cls(p=len(registers).bit_length() - 1, registers=registers)


class SecondBuckets:
    """Per-second sums over a sliding window of event time (default 60 s).

    >>> w = SecondBuckets()
    >>> w.add(1_000, 1.0); w.add(30_000, 2.0); w.add(70_500, 4.0)
    >>> w.total(now_ms=70_500)   # the event at 1 s fell out of the last 60 s
    6.0
    """

    __slots__ = ("buckets", "window_s")

    def __init__(self, window_s: int = 60, buckets: dict[int, float] | None = None) -> None:
        self.window_s = window_s
        self.buckets: dict[int, float] = buckets if buckets is not None else {}

    def add(self, ts_ms: int, value: float = 1.0) -> None:
        second = ts_ms // 1000
        self.buckets[second] = self.buckets.get(second, 0.0) + value
        if len(self.buckets) > 2 * self.window_s:
            self.evict(ts_ms)

    def evict(self, now_ms: int) -> None:
        oldest = now_ms // 1000 - self.window_s
        for second in [s for s in self.buckets if s <= oldest]:
            del self.buckets[second]

    def total(self, now_ms: int) -> float:
        oldest = now_ms // 1000 - self.window_s
        return sum(v for s, v in self.buckets.items() if oldest < s <= now_ms // 1000)

    def to_dict(self) -> dict[str, float]:
        return {str(k): v for k, v in self.buckets.items()}

    @classmethod
    def from_dict(cls, data: dict[str, float], window_s: int = 60) -> SecondBuckets:
        return cls(window_s, {int(k): float(v) for k, v in data.items()})


class BloomFilter:
    """Set membership with false positives only, in ``bits / 8`` bytes (default 8 KiB).

    With 65,536 bits and 4 hashes the false-positive rate stays under 1 % up to ~6,800
    members and under 5 % up to ~12,000.

    >>> seen = BloomFilter()
    >>> seen.add("u1")
    >>> "u1" in seen, "u2" in seen
    (True, False)
    >>> "u1" in BloomFilter.from_text(seen.to_text())
    True
    """

    __slots__ = ("bits", "hashes")

    def __init__(self, size_bits: int = 1 << 16, hashes: int = 4,
                 bits: bytearray | None = None) -> None:
        self.bits = bits if bits is not None else bytearray(size_bits // 8)
        self.hashes = hashes

    def _positions(self, value: str) -> list[int]:
        digest = hashlib.blake2b(value.encode(), digest_size=16).digest()
        h1 = int.from_bytes(digest[:8], "little")
        h2 = int.from_bytes(digest[8:], "little") | 1
        size = len(self.bits) * 8
        return [(h1 + i * h2) % size for i in range(self.hashes)]

    def add(self, value: str) -> None:
        for pos in self._positions(value):
            self.bits[pos >> 3] |= 1 << (pos & 7)

    def check_and_add(self, value: str) -> bool:
        """Add ``value``; whether it was (probably) in already: ``in`` then :meth:`add`,
        hashing once.

        >>> seen = BloomFilter()
        >>> seen.check_and_add("u1"), seen.check_and_add("u1")
        (False, True)
        """
        bits, was_in = self.bits, True
        for pos in self._positions(value):
            byte, mask = pos >> 3, 1 << (pos & 7)
            if not bits[byte] & mask:
                was_in = False
                bits[byte] |= mask
        return was_in

    def __contains__(self, value: str) -> bool:
        return all(self.bits[pos >> 3] & (1 << (pos & 7)) for pos in self._positions(value))

    def to_text(self) -> str:
        return base64.b64encode(bytes(self.bits)).decode("ascii")

    @classmethod
    def from_text(cls, text: str, hashes: int = 4) -> BloomFilter:
        return cls(hashes=hashes, bits=bytearray(base64.b64decode(text)))


class TopCounter:
    """Heaviest keys by a weighted score in bounded memory (Space-Saving).

    Each key carries a score and a few named counts. When full, the lightest key is evicted
    (of equally light ones, the earliest inserted) and the newcomer inherits its score, so a
    returning heavy hitter is never under-counted (scores over-estimate by at most the
    evicted minimum).

    The lightest key comes from a min-heap of ``(score, insertion number, key)`` with lazy
    deletion: a score change pushes an entry, stale entries (an older score, a key gone or
    inserted again since) are dropped when they reach the top, and the heap is rebuilt from
    the rows once it holds about three entries per row. ``add`` is O(log capacity) amortised
    and never scans the rows. Change ``rows`` only through :meth:`add` and :meth:`discard`
    (a row popped from outside is harmless; one inserted from outside is only seen once the
    heap is rebuilt).

    >>> top = TopCounter(("carts", "purchases"), capacity=2)
    >>> top.add("i1", 1.0, "carts"); top.add("i1", 3.0, "purchases"); top.add("i2", 1.0, "carts")
    >>> top.add("i3", 1.0, "carts")          # evicts i2, the lightest
    >>> [(row["key"], row["score"]) for row in top.top(2)]
    [('i1', 4.0), ('i3', 2.0)]
    >>> top.discard("i1"), top.discard("i1"), list(top.to_dict())
    (True, False, ['i3'])
    """

    __slots__ = ("capacity", "fields", "heap", "index", "order", "rows", "serial")

    def __init__(self, fields: tuple[str, ...], capacity: int = 64,
                 rows: dict[str, list[float]] | None = None) -> None:
        self.fields = fields
        self.capacity = capacity
        self.index = {field: 1 + i for i, field in enumerate(fields)}
        self.rows: dict[str, list[float]] = rows if rows is not None else {}
        # key -> insertion number: of equally light keys the earliest inserted goes, as
        # ``min`` over the rows (in dict order) would pick
        self.order: dict[str, int] = {}
        self.heap: list[tuple[float, int, str]] = []  # (score, insertion number, key)
        self.serial = 0
        self._rebuild()

    def _rebuild(self) -> None:
        """The heap (and insertion numbers) from the rows, in their dict order."""
        order, serial = self.order, self.serial
        numbers = {}
        for key in self.rows:
            number = order.get(key)
            if number is None:
                number, serial = serial, serial + 1
            numbers[key] = number
        self.order, self.serial = numbers, serial
        self.heap = [(row[0], numbers[key], key) for key, row in self.rows.items()]
        heapq.heapify(self.heap)

    def _pop_lightest(self) -> list[float]:
        """Remove the lightest key; its row."""
        rows = self.rows
        for _ in range(2):
            heap, order = self.heap, self.order
            while heap:
                score, number, key = heapq.heappop(heap)
                row = rows.get(key)
                if row is not None and row[0] == score and order.get(key) == number:
                    del rows[key], order[key]
                    return row
            self._rebuild()  # rows added or changed from outside: start over from them
        lightest = min(rows, key=lambda k: rows[k][0])  # NaN scores: no heap order
        self.order.pop(lightest, None)
        return rows.pop(lightest)

    def add(self, key: str, weight: float, field: str | None = None,
            amount: float = 1.0) -> None:
        rows = self.rows
        row = rows.get(key)
        if row is None:
            base = self._pop_lightest()[0] if len(rows) >= self.capacity else 0.0
            row = rows[key] = [base + weight] + [0.0] * len(self.fields)
            number = self.order[key] = self.serial
            self.serial = number + 1
            heapq.heappush(self.heap, (row[0], number, key))
        elif weight:
            row[0] += weight
            number = self.order.get(key)
            if number is None:
                self._rebuild()
            else:
                heapq.heappush(self.heap, (row[0], number, key))
        if field is not None:
            row[self.index[field]] += amount
        if len(self.heap) > 3 * self.capacity + 32:
            self._rebuild()

    def discard(self, key: str) -> bool:
        """Forget ``key``; True if it was counted."""
        if self.rows.pop(key, None) is None:
            return False
        self.order.pop(key, None)
        return True

    def get(self, key: str) -> dict[str, float] | None:
        row = self.rows.get(key)
        return None if row is None else dict(zip(self.fields, row[1:], strict=True))

    def top(self, n: int) -> list[dict[str, float | str]]:
        best = sorted(self.rows.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
        return [{"key": key, "score": row[0], **dict(zip(self.fields, row[1:], strict=True))}
                for key, row in best]

    def to_dict(self) -> dict[str, list[float]]:
        return self.rows

    @classmethod
    def from_dict(cls, fields: tuple[str, ...], data: dict[str, list[float]],
                  capacity: int = 64) -> TopCounter:
        return cls(fields, capacity, {k: list(v) for k, v in data.items()})
