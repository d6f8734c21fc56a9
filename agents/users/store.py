"""The ``user-profiles`` table holding live :class:`~agents.users.profile.UserProfile` objects.

A profile is folded on every event of its user; turning it into a dict and back on each
event cost more than the fold itself. The table's memory store therefore holds the live
object, and the changelog record is its ``to_dict()`` form, written once per dirty key at
commit (the orjson codec serializes any object with ``to_dict``: ``streams.codecs``). A
profile recovered from the changelog (or read from a RocksDB store) arrives as a dict and
is turned into an object on first use; only the most recently used profiles stay live
objects (:class:`ProfileStore`), the others are held as JSON.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import orjson
from faust.stores.memory import Store as MemoryStore

from agents.state import WriteBehindTable
from agents.users.profile import UserProfile
from streams.codecs import dumps_kept

HOT_PROFILES = 50_000   # live objects kept; the others are held as their compact JSON


def as_profile(saved: Any) -> UserProfile | None:
    """The profile object of a table value (a live object, its dict or JSON form, or None).

    >>> p = UserProfile("u1")
    >>> as_profile(p) is p, as_profile(None), as_profile(p.to_dict()).user_id
    (True, None, 'u1')
    >>> as_profile(orjson.dumps(p.to_dict())).user_id
    'u1'
    """
    if saved is None or isinstance(saved, UserProfile):
        return saved
    if isinstance(saved, bytes | bytearray | memoryview):
        saved = orjson.loads(saved)
    return UserProfile.from_dict(saved)


class ProfileStore:
    """Profiles by user id over a write-behind table (one owner: the user pipeline).

    With a memory store the ``hot`` most recently used profiles are live objects and the
    others are held as their serialized JSON (a live profile takes ~1.8 KB of RAM, its JSON
    ~0.25 KB): a user who comes back costs one decode, a user evicted one encode.

    >>> from agents.testing import DictTable
    >>> store = ProfileStore(WriteBehindTable(DictTable("p")), hot=1)
    >>> store.set("a", UserProfile("a"), 0); store.set("b", UserProfile("b"), 0)
    >>> type(store.table.data["a"]).__name__, store.get("a").user_id
    ('bytes', 'a')
    >>> type(store.table.data["b"]).__name__  # "a" is live again, "b" compacted
    'bytes'
    """

    def __init__(self, state: WriteBehindTable, hot: int = HOT_PROFILES) -> None:
        self.state = state
        self.table = state.table
        self._data = state.table.data
        # a memory store keeps the object; a RocksDB store serializes what it is given
        self._keeps_objects = isinstance(self._data, dict | MemoryStore)
        self.hot = hot
        self._live: OrderedDict[str, None] = OrderedDict()

    def get(self, user: str) -> UserProfile | None:
        """The user's profile, None if this worker holds none."""
        saved = self._data.get(user)
        if saved is None:
            return None
        if isinstance(saved, UserProfile):
            if user in self._live:
                self._live.move_to_end(user)
            return saved
        profile = as_profile(saved)
        if self._keeps_objects:  # the same state as an object (no changelog record)
            self._data[user] = profile
            self._admit(user)
        return profile

    def set(self, user: str, profile: UserProfile, partition: int) -> None:
        """Mark ``profile`` changed (its changelog record goes out at the next commit)."""
        self.state.set(user, profile, partition)
        if self._keeps_objects and user not in self._live:
            self._admit(user)

    def delete(self, user: str, partition: int) -> bool:
        self._live.pop(user, None)
        return self.state.delete(user, partition)

    def flush(self) -> int:
        return self.state.flush()

    def _admit(self, user: str) -> None:
        live = self._live
        live[user] = None
        while len(live) > self.hot:
            cold, _ = live.popitem(last=False)
            profile = self._data.get(cold)
            if isinstance(profile, UserProfile):
                self._data[cold] = dumps_kept(profile.to_dict())

    async def compact_recovered(self, per_yield: int = 2_000) -> int:
        """Profiles recovered from the changelog arrive as dicts: hold them as JSON."""
        if not self._keeps_objects:
            return 0
        compacted = 0
        for user in [k for k, v in self._data.items() if isinstance(v, dict)]:
            value = self._data.get(user)
            if isinstance(value, dict):
                self._data[user] = dumps_kept(value)
                compacted += 1
                if compacted % per_yield == 0:
                    await asyncio.sleep(0)
        return compacted
