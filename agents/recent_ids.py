"""A bounded memory of the last event ids seen (producer retries: same id, new offset).

Ids are kept as 64-bit hashes (a false "seen" needs a collision among the ids kept: with
1,024 ids that is about 1 in 10**16 per event), in a ring (insertion order, the oldest
overwritten) plus a set for O(1) look-ups. Serialized as the ring's bytes in base64
(oldest first): 1,024 ids are 8 KiB raw, 10.9 KiB of text.

>>> ids = RecentIds(capacity=2)
>>> ids.add("e1"), ids.add("e1"), "e1" in ids
(True, False, True)
>>> _ = ids.add("e2"); _ = ids.add("e3")  # e1 is the oldest: forgotten
>>> "e1" in ids, "e2" in ids, "e3" in ids
(False, True, True)
>>> again = RecentIds.from_text(ids.to_text(), capacity=2)
>>> "e2" in again, "e3" in again, again.add("e4"), "e2" in again
(True, True, True, False)
"""

from __future__ import annotations

import base64
import hashlib
import sys
from array import array

DEFAULT_CAPACITY = 1024


def id_hash(event_id: str) -> int:
    """A stable 64-bit hash of an event id."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


class RecentIds:
    """The last ``capacity`` event ids added (as hashes); see the module docstring."""

    __slots__ = ("capacity", "last", "members", "next", "ring")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self.ring = array("Q")          # hashes in insertion order, circular once full
        self.next = 0                   # the slot overwritten next (the oldest) once full
        self.members: set[int] = set()
        # the last id hashed and its hash: a pipeline asks ``in`` and then adds the same id
        self.last = ("", id_hash(""))

    def _key(self, event_id: str) -> int:
        last_id, key = self.last
        if event_id != last_id:
            key = id_hash(event_id)
            self.last = (event_id, key)
        return key

    def __contains__(self, event_id: str) -> bool:
        return self._key(event_id) in self.members

    def __len__(self) -> int:
        return len(self.ring)

    def add(self, event_id: str) -> bool:
        """Remember ``event_id``; False if it was already among the recent ones."""
        key = self._key(event_id)
        if key in self.members:
            return False
        ring = self.ring
        if len(ring) < self.capacity:
            ring.append(key)
        else:
            self.members.discard(ring[self.next])
            ring[self.next] = key
            self.next = (self.next + 1) % self.capacity
        self.members.add(key)
        return True

    def to_text(self) -> str:
        ordered = self.ring[self.next:] + self.ring[:self.next]  # oldest first
        if sys.byteorder == "big":
            ordered.byteswap()  # stored little-endian whatever the machine
        return base64.b64encode(ordered.tobytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str, capacity: int = DEFAULT_CAPACITY) -> RecentIds:
        ids = cls(capacity)
        raw = base64.b64decode(text)
        ring = array("Q")
        ring.frombytes(raw[len(raw) - len(raw) // 8 * 8:])
        if sys.byteorder == "big":
            ring.byteswap()
        ids.ring = ring[-capacity:] if len(ring) > capacity else ring
        ids.members = set(ids.ring)
        return ids
