"""Audience portrait of a room: who is watching now, who buys, who follows, where leavers go.

Design (one owner per state). Profile facts (lifecycle, tags, affinities, price band) live in
the user pipeline, keyed by user; the room pipeline, keyed by room, sees live events only.
So the **user pipeline** derives a compact summary of each viewer from the profile it has
just updated (:func:`viewer_summary`: lifecycle, up to 3 tags, top category and brand, price
band and a purchase-intent bucket from the propensity score) and sends it, only when it
changed, to the room's partition of the internal ``room-audience`` topic, with the batch's
other outputs (:data:`AUDIENCE_FIELD` records, one JSON array per partition and batch). The
same hop says where a leaving viewer went: a join into room B within :data:`NEXT_ROOM_MS` of
the viewer's last activity after leaving room A (or a switch without a leave) is sent to A
as a ``next`` record. The **room pipeline** folds these into this :class:`AudiencePortrait`
(held by :class:`agents.rooms.state.RoomState`), next to what it derives from the events
themselves: new vs returning (the room's seen-before filter), distinct buyers (a
HyperLogLog, for the viewer -> buyer rate) and follows per minute.

Bounded memory: summaries are kept for present viewers only (dropped when the session ends;
the room caps its viewers), counts are per value of small vocabularies, the next rooms are a
64-room Space-Saving counter and follows keep 10 one-minute buckets. Erasure: a summary is
keyed by user id, and :meth:`AudiencePortrait.forget` drops it (``RoomState.forget_user``
calls it); everything else holds no user id.

>>> p = AudiencePortrait()
>>> p.set("u1", {"l": "new", "t": ["bargain_hunter"], "c": "beauty", "b": "Lumaki",
...              "p": "mid", "i": "high"})
>>> p.set("u2", {"l": "loyal", "t": [], "c": "beauty", "b": None, "p": None, "i": "low"})
>>> p.event("purchase", "u1", 61_000)
>>> p.event("follow", "u2", 62_000)
>>> p.moved("r2")
>>> v = p.view(viewers=2, returning=1, unique_viewers=2, now_ms=62_000)
>>> v["segments"]["lifecycle"], v["intent"]["high"], v["top_categories"]
([{'key': 'loyal', 'count': 1, 'share': 0.5}, {'key': 'new', 'count': 1, 'share': 0.5}], 1, \
[{'key': 'beauty', 'count': 2, 'share': 1.0}])
>>> v["viewer_to_buyer"], v["follows"]["per_min"], v["next_rooms"]
({'buyers': 1, 'viewers': 2, 'rate': 0.5}, 1, [{'room_id': 'r2', 'count': 1, 'share': 1.0}])
>>> p.drop("u1"); p.view(1, 0, 2, 62_000)["profiled"]
1
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from agents.rooms.sketches import HyperLogLog, TopCounter

AUDIENCE_FIELD = "k"          # record kind in a room-audience batch: "viewer" or "next"
NEXT_ROOM_MS = 300_000        # a join this soon after leaving counts as "went next to"
INTENT_BUCKETS = ("high", "medium", "low", "unknown")
# purchase-propensity score -> bucket: >= 0.3 high, >= 0.1 medium, else low
INTENT_LIMITS = ((0.3, "high"), (0.1, "medium"))
TOP_KEYS = 5
NEXT_ROOMS_KEPT = 64
FOLLOW_MINUTES = 10
MAX_TAGS = 3
MINUTE_MS = 60_000
_DIMS = ("l", "t", "c", "b", "p", "i")  # lifecycle, tags, category, brand, band, intent


def intent_bucket(score: float | None) -> str:
    """The purchase-intent bucket of a propensity score (None: not scored yet).

    >>> intent_bucket(0.5), intent_bucket(0.12), intent_bucket(0.01), intent_bucket(None)
    ('high', 'medium', 'low', 'unknown')
    """
    if score is None:
        return "unknown"
    for limit, name in INTENT_LIMITS:
        if score >= limit:
            return name
    return "low"


def viewer_summary(view: dict[str, Any], scores: dict[str, float] | None) -> dict[str, Any]:
    """The compact summary of a viewer the room keeps, from a profile's public view
    (:meth:`agents.users.profile.UserProfile.view`) and the user's model scores.

    >>> viewer_summary({"lifecycle": "new", "tags": ["a", "b", "c", "d"],
    ...                 "affinities": {"categories": [{"name": "beauty", "score": 1.0}],
    ...                                "brands": []}, "price": {"band": "mid"}},
    ...                {"purchase_propensity": 0.2})
    {'l': 'new', 't': ['a', 'b', 'c'], 'c': 'beauty', 'b': None, 'p': 'mid', 'i': 'medium'}
    """
    affinities = view.get("affinities") or {}
    categories = affinities.get("categories") or []
    brands = affinities.get("brands") or []
    return {
        "l": view.get("lifecycle"),
        "t": list(view.get("tags") or [])[:MAX_TAGS],
        "c": categories[0]["name"] if categories else None,
        "b": brands[0]["name"] if brands else None,
        "p": (view.get("price") or {}).get("band"),
        "i": intent_bucket((scores or {}).get("purchase_propensity")),
    }


def _values(summary: dict[str, Any], dim: str) -> list[str]:
    value = summary.get(dim)
    if dim == "t":
        return [t for t in value or [] if isinstance(t, str)]
    return [value] if isinstance(value, str) else []


def _rows(counts: Counter[str], total: int, n: int = TOP_KEYS) -> list[dict[str, Any]]:
    best = sorted(((-c, k) for k, c in counts.items() if c > 0))[:n]
    return [{"key": k, "count": -c, "share": round(-c / total, 4) if total else 0.0}
            for c, k in best]


class AudiencePortrait:
    """Summaries of the viewers present, buyers, follows and next rooms of one room."""

    __slots__ = ("buyers", "counts", "follows", "next_rooms", "summaries")

    def __init__(self) -> None:
        self.summaries: dict[str, dict[str, Any]] = {}   # present viewer -> summary
        self.counts: dict[str, Counter[str]] = {dim: Counter() for dim in _DIMS}
        self.buyers = HyperLogLog()
        self.follows: dict[int, int] = {}                 # minute start -> follows
        self.next_rooms = TopCounter(("moves",), capacity=NEXT_ROOMS_KEPT)

    def _count(self, summary: dict[str, Any], sign: int) -> None:
        for dim in _DIMS:
            counts = self.counts[dim]
            for value in _values(summary, dim):
                counts[value] += sign
                if counts[value] <= 0:
                    del counts[value]

    def set(self, user: str, summary: dict[str, Any]) -> None:
        """The summary of a viewer present now (replaces theirs)."""
        old = self.summaries.get(user)
        if old is not None:
            self._count(old, -1)
        clean = {dim: summary.get(dim) for dim in _DIMS}
        self.summaries[user] = clean
        self._count(clean, 1)

    def drop(self, user: str) -> None:
        """The viewer's session ended: their summary goes."""
        old = self.summaries.pop(user, None)
        if old is not None:
            self._count(old, -1)

    forget = drop  # erasure: the summary is the only place this names the user

    def event(self, kind: str, user: str, ts: int) -> None:
        """A live event of the room (buyers and follows are counted here)."""
        if kind == "purchase":
            self.buyers.add(user)
        elif kind == "follow":
            minute = ts - ts % MINUTE_MS
            self.follows[minute] = self.follows.get(minute, 0) + 1
            if len(self.follows) > FOLLOW_MINUTES:
                del self.follows[min(self.follows)]

    def moved(self, next_room: str) -> None:
        """A viewer who left joined ``next_room`` within :data:`NEXT_ROOM_MS`."""
        self.next_rooms.add(next_room, 1.0, "moves")

    def view(self, viewers: int, returning: int, unique_viewers: int,
             now_ms: int) -> dict[str, Any]:
        """The portrait as served in the room insight (``portrait``)."""
        profiled = len(self.summaries)
        counts = self.counts
        intent = {bucket: counts["i"].get(bucket, 0) for bucket in INTENT_BUCKETS}
        intent["unknown"] += max(0, viewers - profiled)  # present, no summary yet
        buyers = min(self.buyers.count(), unique_viewers) if unique_viewers else 0
        current = now_ms - now_ms % MINUTE_MS
        by_minute = [{"minute": m, "follows": self.follows.get(m, 0)}
                     for m in range(current - (FOLLOW_MINUTES - 1) * MINUTE_MS,
                                    current + MINUTE_MS, MINUTE_MS) if m >= 0]
        moves = self.next_rooms.top(3)
        moved = sum(int(row[1]) for row in self.next_rooms.rows.values())
        return {
            "profiled": profiled,
            "segments": {"lifecycle": _rows(counts["l"], profiled, 6),
                         "tags": _rows(counts["t"], profiled)},
            "intent": intent,
            "new_vs_returning": {"new": max(0, viewers - returning), "returning": returning},
            "top_categories": _rows(counts["c"], profiled),
            "top_brands": _rows(counts["b"], profiled),
            "price_bands": _rows(counts["p"], profiled, 4),
            "viewer_to_buyer": {"buyers": buyers, "viewers": unique_viewers,
                                "rate": round(buyers / unique_viewers, 4)
                                if unique_viewers else 0.0},
            "follows": {"per_min": self.follows.get(current, 0),
                        "prev_min": self.follows.get(current - MINUTE_MS, 0),
                        "by_minute": by_minute},
            "next_rooms": [{"room_id": row["key"], "count": int(row["moves"]),
                            "share": round(row["moves"] / moved, 4) if moved else 0.0}
                           for row in moves],
        }

    def to_dict(self) -> dict[str, Any]:
        # summaries as value lists in _DIMS order (no repeated keys: a big room holds many)
        return {"summaries": {u: [s[d] for d in _DIMS] for u, s in self.summaries.items()},
                "buyers": self.buyers.to_text(),
                "follows": {str(k): v for k, v in self.follows.items()},
                "next_rooms": self.next_rooms.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AudiencePortrait:
        portrait = cls()
        if not data:
            return portrait
        for user, summary in (data.get("summaries") or {}).items():
            if isinstance(summary, list) and len(summary) == len(_DIMS):
                portrait.set(user, dict(zip(_DIMS, summary, strict=True)))
        if data.get("buyers"):
            portrait.buyers = HyperLogLog.from_text(data["buyers"])
        portrait.follows = {int(k): v for k, v in (data.get("follows") or {}).items()}
        portrait.next_rooms = TopCounter.from_dict(("moves",), data.get("next_rooms") or {},
                                                   capacity=NEXT_ROOMS_KEPT)
        return portrait
