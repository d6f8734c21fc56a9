"""Hot-key quarantine: a per-key event-rate limit in event time.

A single user sending thousands of events per second (a script, a replayed log, a broken
client) would otherwise hold its whole input partition: every other user and room on it
waits behind the flood. :class:`KeyRateLimiter` is a token bucket per key (a user id):
``burst`` events at once, then ``rate`` per second of the events' own time (``ts``), so the
decision does not depend on how fast the worker happens to read (a backlog replayed at full
speed is not a flood) and is the same when the events are read again. Events beyond the
limit are refused; the pipelines dead-letter them with the reason ``rate_limited``.

Bounded memory: at most ``max_keys`` buckets; beyond that the oldest-created bucket is
dropped (its key starts again with a full bucket: one more burst, never a wrong refusal).

>>> limiter = KeyRateLimiter(rate=2.0, burst=3)
>>> [limiter.admit("u1", 1_000) for _ in range(5)]
[True, True, True, False, False]
>>> limiter.admit("u1", 1_500), limiter.admit("u2", 1_000)  # half a second: one token
(True, True)
>>> limiter.admit("u1", 1_400)  # an older timestamp refills nothing
False
"""

from __future__ import annotations


class KeyRateLimiter:
    """Token bucket per key in event time (see the module docstring).

    Parameters
    ----------
    rate
        Sustained events per second of event time a key may send; 0 disables the limit.
    burst
        Events a key may send at once (the bucket's size), at least 1.
    max_keys
        Buckets kept at most (oldest-created dropped first).
    """

    __slots__ = ("buckets", "burst", "max_keys", "per_ms")

    def __init__(self, rate: float, burst: int, max_keys: int = 200_000) -> None:
        if rate < 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be >= 0, burst and max_keys >= 1")
        self.per_ms = rate / 1000.0
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> [tokens left, newest event time seen (ms)]; a list: updated in place
        self.buckets: dict[str, list[float]] = {}

    @property
    def enabled(self) -> bool:
        return self.per_ms > 0

    def admit(self, key: str, ts_ms: int) -> bool:
        """Whether the event of ``key`` at ``ts_ms`` is within the key's rate."""
        if not self.per_ms:
            return True
        bucket = self.buckets.get(key)
        if bucket is None:
            buckets = self.buckets
            if len(buckets) >= self.max_keys:
                del buckets[next(iter(buckets))]
            buckets[key] = [self.burst - 1.0, ts_ms]
            return True
        tokens, last = bucket
        if ts_ms > last:
            tokens = min(self.burst, tokens + (ts_ms - last) * self.per_ms)
            bucket[1] = ts_ms
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def forget(self, key: str) -> bool:
        """Drop ``key``'s bucket (erasure); whether one was held."""
        return self.buckets.pop(key, None) is not None

    def __len__(self) -> int:
        return len(self.buckets)
