"""Small bounded-memory sketches used by room and user state."""

from __future__ import annotations

import base64
import hashlib
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
