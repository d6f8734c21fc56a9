"""Scored examples waiting for their delayed label, stored as compact float32 rows.

:class:`DelayedRows` is the queue of :mod:`online_models.propensity`'s tasks: every scored
example is one float32 row (``4 * n_features`` bytes, packed with :mod:`struct`) in one
``bytearray`` (grown by doubling), plus a few machine words of metadata in ``array``
columns (probability served, scoring time, deadline, label, sequence number); no dict or
object per example. Released examples (labelled, or past their deadline) wait in a ready
list until :meth:`take_ready` hands them to the learner as one batch of arrays.

Semantics are those of :class:`online_models.propensity.DelayedLabels` (event time, deadline
extension, ``release="deadline"`` holding positives until their deadline, caps with the oldest
example evicted and a full key skipped); read its docstring for the reasons.

>>> q = DelayedRows(2, release="outcome")
>>> q.open("u1", [1.0, 0.0], 0.3, ts=1_000, deadline_ts=61_000)
True
>>> q.open("u2", [0.0, 1.0], 0.1, ts=2_000, deadline_ts=62_000)
True
>>> q.resolve("u1", True, ts=30_000), q.expire(now_ts=62_001), len(q), q.ready
(1, 1, 0, 2)
>>> X, y, p, ts = q.take_ready()
>>> X.tolist(), y.tolist(), p.tolist(), ts.tolist()
([[1.0, 0.0], [0.0, 1.0]], [True, False], [0.3, 0.1], [1000, 2000])
"""

from __future__ import annotations

import heapq
import struct
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

RELEASE_MODES = ("outcome", "deadline")
SLOT_BITS = 32               # heap and order entries pack (deadline or seq, slot) in one int
SLOT_MASK = (1 << SLOT_BITS) - 1
INITIAL_CAPACITY = 256


class DelayedRows:
    """Predictions waiting for their outcome, in event time, as rows of ``n_features``.

    :meth:`open` stores the row and the probability served at ``ts`` with a deadline;
    :meth:`resolve` labels the key's examples scored at or before the outcome time (those
    whose deadline had passed by then are negative); :meth:`extend` moves the deadlines of a
    key's open examples; :meth:`expire` releases the examples whose deadline passed before
    ``now_ts``. Both return how many examples they released to the ready list;
    :meth:`take_ready` empties it.

    Bounds: at most ``max_pending`` pending examples (the oldest opened is evicted, counted
    in ``evicted``) and ``max_per_key`` unlabelled ones per key; a key that is full, or whose
    newest example is younger than ``min_interval_ms``, does not open another one (counted in
    ``skipped``). The ready list is the caller's to bound (the tasks learn it every
    ``batch_size`` examples).
    """

    def __init__(self, n_features: int, max_pending: int = 100_000, max_per_key: int = 32,
                 min_interval_ms: int = 0, release: str = "deadline") -> None:
        if max_pending < 1 or max_per_key < 1 or n_features < 1:
            raise ValueError("n_features, max_pending and max_per_key must be >= 1")
        if release not in RELEASE_MODES:
            raise ValueError(f"unknown release {release!r}; expected one of {RELEASE_MODES}")
        self.n_features = n_features
        self.max_pending = max_pending
        self.max_per_key = max_per_key
        self.min_interval_ms = min_interval_ms
        self.release = release
        self._hold = release == "deadline"
        capacity = min(INITIAL_CAPACITY, max_pending)
        self.row_bytes = 4 * n_features
        self._rows = bytearray(capacity * self.row_bytes)   # float32 rows, native order
        self._packer = struct.Struct(f"={n_features}f")
        self._keys: list[str | None] = [None] * capacity   # None: a free slot
        self._p = array("d", bytes(8 * capacity))
        self._ts = array("q", bytes(8 * capacity))
        self._deadline = array("q", bytes(8 * capacity))
        self._seq = array("q", bytes(8 * capacity))        # > 0 while pending, else 0
        self._label = bytearray(capacity)
        self._free = list(range(capacity - 1, -1, -1))
        self._by_key: dict[str, list[int]] = {}   # unlabelled pending slots per key
        self._heap: list[int] = []                # deadline << SLOT_BITS | slot (lazy)
        self._order: deque[int] = deque()         # seq << SLOT_BITS | slot, opening order
        self._ready: list[int] = []               # released slots, not yet taken
        self._pending = 0
        self._last_seq = 0
        self.opened = 0
        self.positives = 0
        self.negatives = 0
        self.evicted = 0
        self.skipped = 0

    def __len__(self) -> int:
        """Pending examples (not yet released)."""
        return self._pending

    @property
    def ready(self) -> int:
        """Released examples waiting for :meth:`take_ready`."""
        return len(self._ready)

    @property
    def capacity(self) -> int:
        return len(self._keys)

    def pending_for(self, key: str) -> int:
        """Unlabelled examples of ``key``."""
        return len(self._by_key.get(key, ()))

    # ------------------------------------------------------------------ storage
    def _grow(self) -> None:
        old = self.capacity
        # +25 %, not x2: the spare slots are resident memory (a doubled queue of 45k
        # leave-risk examples held 20k empty 300-byte rows, ~40 % of its size)
        new = max(old + old // 4, INITIAL_CAPACITY)
        extra = new - old
        self._rows.extend(bytes(extra * self.row_bytes))
        self._keys.extend([None] * extra)
        for column in (self._p, self._ts, self._deadline, self._seq):
            column.extend(array(column.typecode, bytes(8 * extra)))
        self._label.extend(bytes(extra))
        self._free.extend(range(new - 1, old - 1, -1))

    def _unlink(self, slot: int, key: str) -> None:
        slots = self._by_key.get(key)
        if slots is not None and slot in slots:
            slots.remove(slot)
            if not slots:
                del self._by_key[key]

    def _free_slot(self, slot: int) -> None:
        self._keys[slot] = None
        self._free.append(slot)

    def _drop(self, slot: int) -> None:
        """Forget a pending example without releasing it."""
        key = self._keys[slot]
        if not self._label[slot] and key is not None:
            self._unlink(slot, key)
        self._seq[slot] = 0
        self._pending -= 1
        self._free_slot(slot)

    def _release(self, slot: int) -> None:
        """A pending example, already unlinked from its key, goes to the ready list."""
        if self._label[slot]:
            self.positives += 1
        else:
            self.negatives += 1
        self._seq[slot] = 0
        self._pending -= 1
        self._ready.append(slot)

    def _evict_oldest(self) -> None:
        order, seqs = self._order, self._seq
        while order:
            entry = order.popleft()
            slot = entry & SLOT_MASK
            if seqs[slot] == entry >> SLOT_BITS:
                self._drop(slot)
                self.evicted += 1
                return

    # ------------------------------------------------------------------ the queue
    def open(self, key: str, row: Sequence[float], p: float, ts: int,
             deadline_ts: int) -> bool:
        """Keep a scored example until its outcome; False if skipped (key full or too soon).

        ``row`` has ``n_features`` numbers (a list, an array), or is those already packed
        by :meth:`pack` (``bytes``); it is kept as float32.
        """
        slots = self._by_key.get(key)
        if slots:
            if (len(slots) >= self.max_per_key
                    or ts - self._ts[slots[-1]] < self.min_interval_ms):
                self.skipped += 1
                return False
            key = self._keys[slots[-1]]  # one string per key, not one per example
        if self._pending >= self.max_pending:
            self._evict_oldest()
        free = self._free
        if not free:
            self._grow()
        slot = free.pop()
        size = self.row_bytes
        start = slot * size
        if row.__class__ is not bytes:
            row = self._packer.pack(*row)
        elif len(row) != size:
            free.append(slot)
            raise ValueError(f"a packed row has {size} bytes, got {len(row)}")
        self._rows[start:start + size] = row
        deadline_ts = int(deadline_ts)
        seq = self._last_seq = self._last_seq + 1
        self._keys[slot] = key
        self._p[slot] = p
        self._ts[slot] = ts
        self._deadline[slot] = deadline_ts
        self._seq[slot] = seq
        self._label[slot] = 0
        if slots is None:
            self._by_key[key] = [slot]
        else:
            slots.append(slot)
        heapq.heappush(self._heap, deadline_ts << SLOT_BITS | slot)
        self._order.append(seq << SLOT_BITS | slot)
        self._pending += 1
        self.opened += 1
        return True

    def skipped_p(self, key: str, ts: int, max_age_ms: int) -> float | None:
        """When :meth:`open` would skip an example of ``key`` at ``ts`` (key full or too
        soon), the probability served for the key's newest open example, if that one was
        scored at most ``max_age_ms`` before ``ts`` (the skip is counted); else None.

        >>> q = DelayedRows(1, max_per_key=1)
        >>> q.open("u", [1.0], 0.25, ts=1_000, deadline_ts=9_000)
        True
        >>> q.skipped_p("u", 1_500, max_age_ms=1_000), q.skipped_p("u", 3_000, max_age_ms=1_000)
        (0.25, None)
        """
        slots = self._by_key.get(key)
        if not slots:
            return None
        newest = slots[-1]
        age = ts - self._ts[newest]
        if 0 <= age <= max_age_ms and (len(slots) >= self.max_per_key
                                       or age < self.min_interval_ms):
            self.skipped += 1
            return self._p[newest]
        return None

    def pack(self, row: Sequence[float]) -> bytes:
        """``row`` as the float32 bytes :meth:`open` stores (read them with
        ``np.frombuffer(packed, np.float32)``)."""
        return self._packer.pack(*row)

    def row(self, slot: int) -> np.ndarray:
        """A copy of the row stored in ``slot``."""
        start = slot * self.row_bytes
        return np.frombuffer(bytes(self._rows[start:start + self.row_bytes]), np.float32)

    def extend(self, key: str, ts: int, deadline_ts: int) -> int:
        """Move to ``deadline_ts`` the deadline of the key's examples still open at ``ts``."""
        slots = self._by_key.get(key)
        if not slots:
            return 0
        moved = 0
        deadlines = self._deadline
        for slot in slots:
            deadline = deadlines[slot]
            if deadline >= ts and deadline_ts > deadline:
                deadlines[slot] = deadline_ts  # its heap entry is refreshed when reached
                moved += 1
        return moved

    def resolve(self, key: str, y: bool, ts: int) -> int:
        """The outcome ``y`` happened at ``ts``: label the key's examples scored by then.

        Returns how many were released now (none of the positives with
        ``release="deadline"``: they are held until their deadline). Examples scored after
        ``ts`` (out-of-order events) stay open; examples whose deadline had passed before
        ``ts`` are released as negatives.
        """
        slots = self._by_key.get(key)
        if not slots:
            return 0
        released = 0
        keep: list[int] = []
        y = bool(y)
        for slot in slots:
            if self._ts[slot] > ts:
                keep.append(slot)  # scored after the outcome: still open
                continue
            label = y and ts <= self._deadline[slot]
            self._label[slot] = label
            if not (label and self._hold):
                self._release(slot)
                released += 1
        if keep:
            self._by_key[key] = keep
        else:
            del self._by_key[key]
        return released

    def expire(self, now_ts: int) -> int:
        """Release the examples whose deadline is before ``now_ts`` (event time): the
        unlabelled ones as negatives, the held positives as positives. Returns how many."""
        heap = self._heap
        if not heap or heap[0] >> SLOT_BITS >= now_ts:
            return 0
        deadlines, seqs, labels, keys = self._deadline, self._seq, self._label, self._keys
        released = 0
        while heap and heap[0] >> SLOT_BITS < now_ts:
            entry = heapq.heappop(heap)
            slot = entry & SLOT_MASK
            if not seqs[slot]:
                continue  # released, evicted or forgotten already
            deadline, current = entry >> SLOT_BITS, deadlines[slot]
            if current != deadline:
                if current > deadline:  # extended meanwhile
                    heapq.heappush(heap, current << SLOT_BITS | slot)
                continue
            if not labels[slot]:
                self._unlink(slot, keys[slot])  # type: ignore[arg-type]
            self._release(slot)
            released += 1
        if len(heap) > 4 * self._pending + 1024:  # stale entries of released examples
            self._compact()
        return released

    def _pending_slots(self) -> list[int]:
        seqs = self._seq
        return sorted((slot for slot in range(self.capacity) if seqs[slot]),
                      key=seqs.__getitem__)

    def _compact(self) -> None:
        slots = self._pending_slots()
        self._heap = [self._deadline[s] << SLOT_BITS | s for s in slots]
        heapq.heapify(self._heap)
        self._order = deque(self._seq[s] << SLOT_BITS | s for s in slots)

    def take_ready(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Hand over the released examples in release order and free their slots:
        ``(rows float32 (n, n_features), y bool (n,), p float64 (n,), scored_at int64 (n,))``.
        """
        ready, self._ready = self._ready, []
        if not ready:
            return (np.zeros((0, self.n_features), dtype=np.float32), np.zeros(0, dtype=bool),
                    np.zeros(0), np.zeros(0, dtype=np.int64))
        index = np.asarray(ready, dtype=np.intp)
        table = np.frombuffer(self._rows, dtype=np.float32).reshape(-1, self.n_features)
        rows = table[index]  # a copy: the bytearray may grow again once `table` is gone
        del table
        y = np.frombuffer(self._label, dtype=np.uint8)[index].astype(bool)
        p = np.frombuffer(self._p, dtype=np.float64)[index]
        ts = np.frombuffer(self._ts, dtype=np.int64)[index]
        for slot in ready:
            self._free_slot(slot)
        if len(self._order) > 4 * self._pending + 1024:
            self._compact()
        return rows, y, p, ts

    # ------------------------------------------------------------------ erasure
    def _matching(self, matches: Callable[[str], bool]) -> list[int]:
        verdicts: dict[str, bool] = {}
        found = []
        for slot, key in enumerate(self._keys):
            if key is None:
                continue
            verdict = verdicts.get(key)
            if verdict is None:
                verdict = verdicts[key] = bool(matches(key))
            if verdict:
                found.append(slot)
        return found

    def count(self, matches: Callable[[str], bool]) -> int:
        """Examples held (pending or released and not yet learned) whose key ``matches``."""
        return len(self._matching(matches))

    def forget(self, matches: Callable[[str], bool]) -> int:
        """Drop every example held whose key ``matches`` (pending, labelled or released and
        not yet learned; never learned): erasure of a user. O(capacity); returns how many."""
        doomed = self._matching(matches)
        gone_ready = set()
        for slot in doomed:
            if self._seq[slot]:
                self._drop(slot)  # its heap and order entries are skipped when reached
            else:
                gone_ready.add(slot)
                self._free_slot(slot)
        if gone_ready:
            self._ready = [slot for slot in self._ready if slot not in gone_ready]
        return len(doomed)

    def stats(self) -> dict[str, int]:
        return {"pending": self._pending, "ready": len(self._ready), "opened": self.opened,
                "released_positive": self.positives, "released_negative": self.negatives,
                "evicted": self.evicted, "skipped": self.skipped, "capacity": self.capacity}

    def nbytes(self) -> int:
        """Bytes of the row and metadata columns (not the per-key index, heap and order)."""
        return len(self._rows) + 8 * 4 * self.capacity + self.capacity * 9

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["_packer"]  # a struct.Struct does not pickle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._packer = struct.Struct(f"={self.n_features}f")
