"""The ``user-profiles`` table holding live :class:`~agents.users.profile.UserProfile` objects.

A profile is folded on every event of its user; turning it into a dict and back on each
event cost more than the fold itself. The table's memory store therefore holds the live
object, and the changelog record is its ``to_dict()`` form, written once per dirty key at
commit (the orjson codec serializes any object with ``to_dict``: ``streams.codecs``). A
profile recovered from the changelog (or read from a RocksDB store) arrives as a dict and
is turned into an object on first use.
"""

from __future__ import annotations

from typing import Any

from faust.stores.memory import Store as MemoryStore

from agents.state import WriteBehindTable
from agents.users.profile import UserProfile


def as_profile(saved: Any) -> UserProfile | None:
    """The profile object of a table value (a live object, its dict form, or None).

    >>> p = UserProfile("u1")
    >>> as_profile(p) is p, as_profile(None), as_profile(p.to_dict()).user_id
    (True, None, 'u1')
    """
    if saved is None or isinstance(saved, UserProfile):
        return saved
    return UserProfile.from_dict(saved)


class ProfileStore:
    """Profiles by user id over a write-behind table (one owner: the user pipeline)."""

    def __init__(self, state: WriteBehindTable) -> None:
        self.state = state
        self.table = state.table
        self._data = state.table.data
        # a memory store keeps the object; a RocksDB store serializes what it is given
        self._keeps_objects = isinstance(self._data, dict | MemoryStore)

    def get(self, user: str) -> UserProfile | None:
        """The user's profile, None if this worker holds none."""
        saved = self._data.get(user)
        if saved is None or isinstance(saved, UserProfile):
            return saved
        profile = UserProfile.from_dict(saved)
        if self._keeps_objects:  # the same state as an object (no changelog record)
            self._data[user] = profile
        return profile

    def set(self, user: str, profile: UserProfile, partition: int) -> None:
        """Mark ``profile`` changed (its changelog record goes out at the next commit)."""
        self.state.set(user, profile, partition)

    def delete(self, user: str, partition: int) -> bool:
        return self.state.delete(user, partition)

    def flush(self) -> int:
        return self.state.flush()
