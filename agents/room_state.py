"""Live counters of one room: pure state, updated one event at a time (no Faust here).

Event-time semantics: per-minute rates are taken over the 60 s before the newest event
time seen in the room (its watermark), so replays and late events give the same numbers.

>>> room = RoomState("r1")
>>> room.apply(LiveEvent("e1", "join", 1_000, "r1", "u1", host_id="h1"))
>>> room.apply(LiveEvent("e2", "purchase", 2_000, "r1", "u1", item_id="i1", amount=30.0))
>>> ins = room.insight(now_ms=2_500)
>>> ins.viewers, ins.orders, ins.gmv, ins.host_id
(1, 1, 30.0, 'h1')
"""

from __future__ import annotations

from typing import Any

from agents.sketches import HyperLogLog, SecondBuckets
from streams.contracts import LiveEvent, RoomInsight

RATE_KINDS = ("comment", "like", "gift", "share", "purchase")
MAX_TRACKED_VIEWERS = 200_000


class RoomState:
    __slots__ = (
        "add_to_carts", "events_total", "gmv", "gmv_rate", "host_id", "last_event_ts",
        "orders", "peak_viewers", "product_clicks", "rates", "room_id", "unique", "viewers",
    )

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.host_id: str | None = None
        self.viewers: dict[str, int] = {}  # user -> last activity (event time)
        self.unique = HyperLogLog()
        self.peak_viewers = 0
        self.events_total = 0
        self.product_clicks = 0
        self.add_to_carts = 0
        self.orders = 0
        self.gmv = 0.0
        self.last_event_ts = 0
        self.rates = {kind: SecondBuckets() for kind in RATE_KINDS}
        self.gmv_rate = SecondBuckets()

    def apply(self, event: LiveEvent) -> None:
        self.events_total += 1
        if event.host_id:
            self.host_id = event.host_id
        ts = event.ts
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        kind = event.type
        user = event.user_id
        if kind == "leave":
            self.viewers.pop(user, None)  # a leave without a join is harmless
        elif kind != "product_pin":  # the host pinning is not a viewer
            if user not in self.viewers:
                self.unique.add(user)
                if len(self.viewers) >= MAX_TRACKED_VIEWERS:
                    self._evict_oldest_viewer()
            # a duplicate join, or activity without a join, refreshes presence
            self.viewers[user] = max(ts, self.viewers.get(user, 0))
            if len(self.viewers) > self.peak_viewers:
                self.peak_viewers = len(self.viewers)
        if kind in self.rates:
            self.rates[kind].add(ts)
        if kind == "product_click":
            self.product_clicks += 1
        elif kind == "add_to_cart":
            self.add_to_carts += 1
        elif kind == "purchase":
            self.orders += 1
            amount = event.amount or 0.0
            self.gmv += amount
            self.gmv_rate.add(ts, amount)

    def _evict_oldest_viewer(self) -> None:
        oldest = min(self.viewers, key=self.viewers.__getitem__)
        del self.viewers[oldest]

    def expire_viewers(self, timeout_ms: int) -> int:
        """Drop viewers silent for ``timeout_ms`` of event time (missing leaves)."""
        cutoff = self.last_event_ts - timeout_ms
        gone = [u for u, seen in self.viewers.items() if seen < cutoff]
        for user in gone:
            del self.viewers[user]
        return len(gone)

    def insight(self, now_ms: int, *, live: bool = True) -> RoomInsight:
        wm = self.last_event_ts
        return RoomInsight(
            room_id=self.room_id,
            host_id=self.host_id,
            ts=now_ms,
            viewers=len(self.viewers),
            unique_viewers=max(self.unique.count(), 0),
            peak_viewers=self.peak_viewers,
            events_total=self.events_total,
            comments_per_min=self.rates["comment"].total(wm),
            likes_per_min=self.rates["like"].total(wm),
            gifts_per_min=self.rates["gift"].total(wm),
            shares_per_min=self.rates["share"].total(wm),
            product_clicks=self.product_clicks,
            add_to_carts=self.add_to_carts,
            orders=self.orders,
            gmv=round(self.gmv, 2),
            gmv_per_min=round(self.gmv_rate.total(wm), 2),
            orders_per_min=self.rates["purchase"].total(wm),
            last_event_ts=wm,
            live=live,
        )

    # ------------------------------------------------------------- snapshot
    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id, "host_id": self.host_id, "viewers": self.viewers,
            "unique": self.unique.to_text(), "peak_viewers": self.peak_viewers,
            "events_total": self.events_total, "product_clicks": self.product_clicks,
            "add_to_carts": self.add_to_carts, "orders": self.orders, "gmv": self.gmv,
            "last_event_ts": self.last_event_ts,
            "rates": {k: v.to_dict() for k, v in self.rates.items()},
            "gmv_rate": self.gmv_rate.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomState:
        room = cls(data["room_id"])
        room.host_id = data.get("host_id")
        room.viewers = dict(data.get("viewers", {}))
        room.unique = HyperLogLog.from_text(data["unique"]) if data.get("unique") else \
            HyperLogLog()
        room.peak_viewers = data.get("peak_viewers", 0)
        room.events_total = data.get("events_total", 0)
        room.product_clicks = data.get("product_clicks", 0)
        room.add_to_carts = data.get("add_to_carts", 0)
        room.orders = data.get("orders", 0)
        room.gmv = data.get("gmv", 0.0)
        room.last_event_ts = data.get("last_event_ts", 0)
        for kind, buckets in data.get("rates", {}).items():
            if kind in room.rates:
                room.rates[kind] = SecondBuckets.from_dict(buckets)
        room.gmv_rate = SecondBuckets.from_dict(data.get("gmv_rate", {}))
        return room
