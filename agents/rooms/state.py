"""Live state of one room: pure, updated one event at a time (no Faust here).

Everything is on **event time**: the room's watermark is the newest event time it has seen,
and "the last minute" means the 60 s before the watermark, so a replay gives the same
numbers as the live run. Memory is bounded whatever the traffic: viewer presence is capped,
distinct viewers are a HyperLogLog, "seen before" is a Bloom filter, per-user and per-item
tallies are Space-Saving counters, and windows keep at most 62 one-minute panes.

>>> room = RoomState("r1")
>>> for event in (
...     LiveEvent("e1", "join", 60_000, "r1", "u1", host_id="h1"),
...     LiveEvent("e2", "product_pin", 61_000, "r1", "h1", item_id="i1"),
...     LiveEvent("e3", "add_to_cart", 62_000, "r1", "u1", item_id="i1"),
...     LiveEvent("e4", "purchase", 63_000, "r1", "u1", item_id="i1", amount=30.0),
... ):
...     late = room.apply(event)
>>> ins = room.insight(now_ms=63_500)
>>> ins.viewers, ins.orders, ins.gmv, ins.commerce["pinned"]["purchases"]
(1, 1, 30.0, 1)
>>> ins.commerce["funnel"]["cart_to_purchase"]
1.0
"""

from __future__ import annotations

import re
import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from agents.recent_ids import RecentIds
from agents.redaction import EMAIL, MENTION, PHONE, URL, redact_text
from agents.rooms.portrait import AudiencePortrait
from agents.rooms.questions import QuestionBoard, saved_names
from agents.rooms.sketches import BloomFilter, HyperLogLog, SecondBuckets, TopCounter
from online_models.sentiment import MoodWindow, NgramSentiment
from online_models.text import keywords
from streams.contracts import LiveEvent, RoomInsight

RATE_KINDS = ("comment", "like", "gift", "share", "purchase", "add_to_cart")
MAX_TRACKED_VIEWERS = 200_000
WATCH_SAMPLES = 512            # completed watch sessions kept for watch-time statistics
RETENTION_MARKS_S = (60, 300, 900)
MINUTE_MS = 60_000
PANES_KEPT = 62                # one hour of one-minute panes plus the open one and a spare
PANE_FIELDS = ("joins", "leaves", "comments", "likes", "shares", "gifts", "product_clicks",
               "add_to_carts", "orders", "gmv")
_PANE_INDEX = {
    "join": 0, "leave": 1, "comment": 2, "like": 3, "share": 4, "gift": 5,
    "product_click": 6, "add_to_cart": 7, "purchase": 8,
}
ITEM_FIELDS = ("clicks", "carts", "purchases", "gmv")
VIEWER_FIELDS = ("comments", "likes", "gifts")
# Engagement weight of one action when ranking viewers (a gift also adds its value / 10).
ENGAGEMENT_WEIGHTS = {"comment": 3.0, "like": 0.5, "share": 5.0, "gift": 5.0, "follow": 4.0}
_VIEWER_FIELD = {kind: kind + "s" for kind in ENGAGEMENT_WEIGHTS if kind + "s" in VIEWER_FIELDS}
# commerce event -> (items field, weight when ranking the room's items: carts and purchases
# weigh more than clicks)
_ITEM_FIELD = {"product_click": ("clicks", 1.0), "add_to_cart": ("carts", 3.0),
               "purchase": ("purchases", 10.0)}
TOP_N = 5
# Chart history served with the room (GET /api/rooms/{id}/history): viewers every 10 s for
# the last 10 minutes (61 samples at most, kept in the state); orders and GMV per minute for
# the last hour come from the one-minute panes.
VIEWER_STEP_S = 10
VIEWER_HISTORY_S = 600
HISTORY_MINUTES = 60
# Event ids remembered per room (producer retries: the same event at a new offset). A retry
# comes within seconds, i.e. within the room's last few hundred events.
RECENT_EVENT_IDS = 1024
_PLACEHOLDERS = re.compile("|".join(re.escape(p) for p in (EMAIL, PHONE, URL, MENTION)))

_sentiment = NgramSentiment()


def _ratio(num: float, den: float) -> float:
    return round(num / den, 4) if den > 0 else 0.0


class RoomState:
    """Counters, sketches and windows of one live room; see the module docstring."""

    __slots__ = (
        "add_to_carts", "erasures", "events_total", "gift_value", "gmv", "gmv_rate", "grace_ms",
        "host_id", "items", "last_event_ts", "late_events", "mood", "offsets", "orders",
        "panes", "peak_viewers", "pinned", "portrait", "product_clicks", "questions", "rates",
        "recent_ids",
        "returning", "room_id", "seen", "top_viewers", "unique", "viewer_history",
        "viewer_samples", "viewers", "watch",
    )

    def __init__(self, room_id: str, grace_ms: int = 10_000) -> None:
        self.room_id = room_id
        self.grace_ms = grace_ms
        self.host_id: str | None = None
        # user -> [joined at, last seen, 1 if they had watched this room before]
        self.viewers: dict[str, list[int]] = {}
        self.unique = HyperLogLog()
        self.seen = BloomFilter()
        self.returning = 0           # viewers present now who had been here before
        self.peak_viewers = 0
        self.events_total = 0
        self.product_clicks = 0
        self.add_to_carts = 0
        self.orders = 0
        self.gmv = 0.0
        self.gift_value = SecondBuckets()
        self.last_event_ts = 0
        self.late_events = 0
        self.rates = {kind: SecondBuckets() for kind in RATE_KINDS}
        self.gmv_rate = SecondBuckets()
        self.viewer_samples: dict[int, int] = {}     # second -> viewers then (last 5 min)
        # 10-s step start (s) -> viewers at the step's last event, oldest first (last 10 min)
        self.viewer_history: dict[int, int] = {}
        self.watch: deque[tuple[int, int]] = deque(maxlen=WATCH_SAMPLES)  # (joined, secs)
        self.top_viewers = TopCounter(VIEWER_FIELDS, capacity=64)
        self.items = TopCounter(ITEM_FIELDS, capacity=128)
        self.pinned: dict[str, Any] | None = None
        self.mood = MoodWindow()
        self.questions = QuestionBoard()           # the chat's unanswered questions
        self.panes: dict[int, list[float]] = {}      # minute start -> PANE_FIELDS counts
        # input partition -> offset of the last event folded in from it. A room normally
        # lives in one partition (key = room id), but events keyed otherwise (or not at all)
        # land elsewhere: a redelivered event is one at or below its own partition's offset.
        self.offsets: dict[int, int] = {}
        self.recent_ids = RecentIds(RECENT_EVENT_IDS)  # ids of the last events folded in
        # erasure-topic partition -> next offset whose user is already removed from here
        self.erasures: dict[int, int] = {}
        # who the present viewers are (summaries from the user pipeline), buyers, follows,
        # where leavers go: agents.rooms.portrait
        self.portrait = AudiencePortrait()

    def is_retry(self, event_id: str) -> bool:
        """True if an event with this id is among the last :data:`RECENT_EVENT_IDS` folded
        in (a producer retry: the same event again, at a new offset).

        >>> room = RoomState("r1")
        >>> _ = room.apply(LiveEvent("e1", "like", 1_000, "r1", "u1"), offset=0)
        >>> room.is_retry("e1"), room.is_retry("e2")
        (True, False)
        """
        return event_id in self.recent_ids

    def already_applied(self, offset: int, partition: int = 0) -> bool:
        """True if the input event at ``offset`` of ``partition`` is already folded in (a
        redelivery).

        >>> room = RoomState("r1")
        >>> room.already_applied(0)
        False
        >>> _ = room.apply(LiveEvent("e1", "like", 1_000, "r1", "u1"), offset=0)
        >>> room.already_applied(0), room.already_applied(1), room.already_applied(0, 1)
        (True, False, False)
        """
        return offset <= self.offsets.get(partition, -1)

    # ------------------------------------------------------------------ folding
    def apply(self, event: LiveEvent, offset: int | None = None, partition: int = 0) -> bool:
        """Fold one event (read at input ``offset`` of ``partition``, if known); True if it
        came after its window closed (late beyond grace)."""
        if offset is not None and offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset
        self.recent_ids.add(event.event_id)
        self.events_total += 1
        if event.host_id:
            self.host_id = event.host_id
        ts = event.ts
        if ts > self.last_event_ts:
            self.last_event_ts = ts
        kind = event.type
        user = event.user_id
        if kind == "leave":
            self._leave(user, ts)
        elif kind != "product_pin":  # the host pinning is not a viewer
            viewer = self.viewers.get(user)
            if viewer is None:
                self._arrive(user, ts)
            else:
                if ts < viewer[0]:
                    viewer[0] = ts  # out of order: an earlier event moves the join
                if ts > viewer[1]:
                    viewer[1] = ts
        rate = self.rates.get(kind)
        if rate is not None:
            rate.add(ts)
        late = self._to_pane(kind, ts, event.amount or 0.0)
        weight = ENGAGEMENT_WEIGHTS.get(kind)
        if weight is not None:
            if kind == "gift":
                weight += (event.amount or 0.0) / 10
            self.top_viewers.add(user, weight, _VIEWER_FIELD.get(kind))
        if kind == "purchase" or kind == "follow":
            self.portrait.event(kind, user, ts)
        if kind == "gift":
            self.gift_value.add(ts, event.amount or 0.0)
        elif kind == "comment" and event.text:
            text = event.text
            self.mood.add(ts, _sentiment.predict_one(text), _comment_words(text))
            _sentiment.learn_weak(text)   # after predicting: prequential self-training
            self.questions.comment(user, text, ts, self.host_id)
        elif kind == "product_pin" and event.item_id:
            if self.pinned is None or ts >= self.pinned["pinned_at"]:
                self.pinned = {"item_id": event.item_id, "pinned_at": ts, "clicks": 0,
                               "carts": 0, "purchases": 0, "gmv": 0.0}
            self.questions.pinned(ts)
        elif kind in ("product_click", "add_to_cart", "purchase") and event.item_id:
            self._commerce(kind, event)
        self._sample_viewers(ts)
        return late

    def _present(self, user: str, ts: int) -> None:
        """A join, or any activity: the user is watching (duplicate joins are harmless)."""
        viewer = self.viewers.get(user)
        if viewer is None:
            self._arrive(user, ts)
        else:
            if ts < viewer[0]:
                viewer[0] = ts  # out of order: an earlier event moves the join
            if ts > viewer[1]:
                viewer[1] = ts

    def _arrive(self, user: str, ts: int) -> None:
        """A viewer not present so far."""
        viewers = self.viewers
        if len(viewers) >= MAX_TRACKED_VIEWERS:
            self._end_session(min(viewers, key=lambda u: viewers[u][1]))
        self.unique.add(user)
        came_back = self.seen.check_and_add(user)
        self.returning += came_back
        viewers[user] = [ts, ts, int(came_back)]
        if len(viewers) > self.peak_viewers:
            self.peak_viewers = len(viewers)

    def _leave(self, user: str, ts: int) -> None:
        viewer = self.viewers.get(user)
        if viewer is not None:  # a leave without a join is harmless
            viewer[1] = max(viewer[1], ts)
            self._end_session(user)

    def _end_session(self, user: str) -> None:
        joined, last, came_back = self.viewers.pop(user)
        self.returning -= came_back
        self.portrait.drop(user)
        self.watch.append((joined, (last - joined) // 1000))

    def _commerce(self, kind: str, event: LiveEvent) -> None:
        item = event.item_id or ""
        amount = event.amount or 0.0
        field, weight = _ITEM_FIELD[kind]
        self.items.add(item, weight, field)
        if kind == "product_click":
            self.product_clicks += 1
        elif kind == "add_to_cart":
            self.add_to_carts += 1
        else:
            self.orders += 1
            self.gmv += amount
            self.gmv_rate.add(event.ts, amount)
            self.items.add(item, 0.0, "gmv", amount)
        pinned = self.pinned
        if pinned is not None and pinned["item_id"] == item and event.ts >= pinned["pinned_at"]:
            pinned[field] += 1
            if kind == "purchase":
                pinned["gmv"] += amount

    def _to_pane(self, kind: str, ts: int, amount: float) -> bool:
        index = _PANE_INDEX.get(kind)
        if index is None:
            return False
        start = ts - ts % MINUTE_MS
        if start + MINUTE_MS + self.grace_ms <= self.last_event_ts:
            self.late_events += 1  # its window has closed: counted, kept out of the windows
            return True
        pane = self.panes.get(start)
        if pane is None:
            pane = self.panes[start] = [0.0] * len(PANE_FIELDS)
            if len(self.panes) > PANES_KEPT:
                del self.panes[min(self.panes)]
        pane[index] += 1
        if kind == "purchase":
            pane[9] += amount
        return False

    def _sample_viewers(self, ts: int) -> None:
        second = ts // 1000
        self.viewer_samples[second] = len(self.viewers)
        if len(self.viewer_samples) > 360:  # the rules look back 5 minutes at most
            oldest = self.last_event_ts // 1000 - 300
            for s in [s for s in self.viewer_samples if s < oldest]:
                del self.viewer_samples[s]
        # on the watermark (not the event's own time): the count is the room's now, and steps
        # come in order, so the oldest is the first key
        history = self.viewer_history
        history[self.last_event_ts // 1000 // VIEWER_STEP_S * VIEWER_STEP_S] = len(self.viewers)
        if len(history) > VIEWER_HISTORY_S // VIEWER_STEP_S + 1:
            del history[next(iter(history))]

    def people(self) -> set[str]:
        """Every user id this room's state names (present and top viewers, the host, the
        authors of the example questions)."""
        named = (set(self.viewers) | set(self.top_viewers.rows) | self.questions.authors()
                 | set(self.portrait.summaries))
        if self.host_id:
            named.add(self.host_id)
        return named

    def names(self, user: str) -> bool:
        """True if ``user`` is among :meth:`people` (without building it)."""
        return (user in self.viewers or user in self.top_viewers.rows or self.host_id == user
                or self.questions.names(user) or user in self.portrait.summaries)

    def viewer_summary(self, user: str, summary: dict[str, Any]) -> bool:
        """The user pipeline's summary of ``user`` (:mod:`agents.rooms.portrait`), kept
        while they are present; True if kept."""
        if user not in self.viewers:
            return False  # left (or never joined here) before the summary came back
        self.portrait.set(user, summary)
        return True

    def forget_user(self, user: str) -> bool:
        """Erasure: remove ``user`` from the viewers present, the top viewers, the host and
        the example questions they wrote; True if the room named them. Aggregates (counts,
        the distinct-viewer sketch, the seen-before filter, finished watch times) hold no
        user id and stay.

        >>> room = RoomState("r1")
        >>> _ = room.apply(LiveEvent("e1", "comment", 1_000, "r1", "u1", text="hi"))
        >>> room.forget_user("u1"), room.people(), room.forget_user("u1")
        (True, set(), False)
        """
        named = False
        if user in self.viewers:
            self._end_session(user)
            named = True
        if self.top_viewers.discard(user):
            named = True
        if self.host_id == user:
            self.host_id = None
            named = True
        if self.questions.forget_user(user):
            named = True
        if user in self.portrait.summaries:
            self.portrait.forget(user)
            named = True
        return named

    def expire_viewers(self, timeout_ms: int) -> int:
        """End sessions silent for ``timeout_ms`` of event time (missing leaves)."""
        cutoff = self.last_event_ts - timeout_ms
        gone = [u for u, viewer in self.viewers.items() if viewer[1] < cutoff]
        for user in gone:
            self._end_session(user)
        return len(gone)

    # ------------------------------------------------------------------ reading
    def _avg_viewers(self, since_s: int, until_s: int) -> float:
        values = [v for s, v in self.viewer_samples.items() if since_s < s <= until_s]
        return sum(values) / len(values) if values else float(len(self.viewers))

    def _audience(self) -> dict[str, Any]:
        wm = self.last_event_ts
        durations = [secs for _, secs in self.watch]
        retention = {}
        for mark in RETENTION_MARKS_S:
            started_before = wm - mark * 1000
            done = [secs >= mark for joined, secs in self.watch if joined <= started_before]
            ongoing = [True for v in self.viewers.values() if v[0] <= started_before]
            eligible = len(done) + len(ongoing)
            retention[f"{mark // 60}m"] = _ratio(sum(done) + len(ongoing), eligible)
        viewers = len(self.viewers)
        return {
            "viewers": viewers,
            "unique_viewers": max(self.unique.count(), 0),
            "unique_method": "hyperloglog",
            "peak_viewers": self.peak_viewers,
            "new_viewers": viewers - self.returning,
            "returning_viewers": self.returning,
            "avg_watch_s": round(statistics.fmean(durations), 1) if durations else 0.0,
            "median_watch_s": float(statistics.median(durations)) if durations else 0.0,
            "retention": retention,
        }

    def _engagement(self) -> dict[str, Any]:
        wm = self.last_event_ts
        viewers = max(self._avg_viewers(wm // 1000 - 60, wm // 1000), 1.0)
        per_vm = {f"{k}s_per_viewer_min": _ratio(self.rates[k].total(wm), viewers)
                  for k in ("comment", "like", "share", "gift")}
        top = [{"user_id": row.pop("key"), **row, "score": round(float(row["score"]), 1)}
               for row in self.top_viewers.top(TOP_N)]
        return {**per_vm, "gift_value_per_min": round(self.gift_value.total(wm), 2),
                "top_viewers": top}

    def _commerce_view(self) -> dict[str, Any]:
        wm = self.last_event_ts
        pinned = None
        if self.pinned is not None:
            pinned = {**self.pinned, "gmv": round(self.pinned["gmv"], 2),
                      "click_to_purchase": _ratio(self.pinned["purchases"],
                                                  self.pinned["clicks"])}
        top_items = [{"item_id": row.pop("key"), **{k: row[k] for k in ITEM_FIELDS}}
                     for row in self.items.top(TOP_N)]
        for row in top_items:
            row["gmv"] = round(row["gmv"], 2)
            for k in ("clicks", "carts", "purchases"):
                row[k] = int(row[k])
        return {
            "funnel": {
                "product_clicks": self.product_clicks, "add_to_carts": self.add_to_carts,
                "purchases": self.orders,
                "click_to_cart": _ratio(self.add_to_carts, self.product_clicks),
                "cart_to_purchase": _ratio(self.orders, self.add_to_carts),
                "click_to_purchase": _ratio(self.orders, self.product_clicks),
            },
            "gmv": round(self.gmv, 2),
            "gmv_per_min": round(self.gmv_rate.total(wm), 2),
            "orders_per_min": self.rates["purchase"].total(wm),
            "top_items": top_items,
            "pinned": pinned,
        }

    def _window(self, start: int, end: int) -> dict[str, Any]:
        totals = [0.0] * len(PANE_FIELDS)
        for pane_start, pane in self.panes.items():
            if start <= pane_start < end:
                totals = [a + b for a, b in zip(totals, pane, strict=True)]
        out: dict[str, Any] = {"start": start, "end": end}
        for name, value in zip(PANE_FIELDS, totals, strict=True):
            out[name] = round(value, 2) if name == "gmv" else int(value)
        return out

    def _windows(self) -> dict[str, Any]:
        wm = self.last_event_ts
        current = wm - wm % MINUTE_MS
        closed_end = (wm - self.grace_ms) - (wm - self.grace_ms) % MINUTE_MS
        first = min(self.panes) if self.panes else current

        def closed(span_min: int) -> dict[str, Any] | None:
            if closed_end <= first:
                return None
            return self._window(closed_end - span_min * MINUTE_MS, closed_end)

        return {
            "grace_s": self.grace_ms / 1000,
            "late_events": self.late_events,
            "current_1m": self._window(current, current + MINUTE_MS),
            "tumbling_1m": closed(1),
            "hopping_5m": closed(5),
            "hopping_1h": closed(60),
        }

    def history(self) -> dict[str, Any]:
        """What the host's charts show on open: ``viewers`` as ``[step start ms, viewers]``
        every :data:`VIEWER_STEP_S` over the last :data:`VIEWER_HISTORY_S`, and ``sales`` as
        ``[minute start ms, orders, gmv]`` for each minute of the last
        :data:`HISTORY_MINUTES` (and the open one) since the room's first, zeros included.

        >>> room = RoomState("r1")
        >>> for i, kind in enumerate(("join", "join", "purchase", "leave")):
        ...     _ = room.apply(LiveEvent(f"e{i}", kind, 55_000 + i * 5_000, "r1", f"u{i % 2}",
        ...                              amount=20.0 if kind == "purchase" else None))
        >>> h = room.history()
        >>> h["viewers"], h["sales"]
        ([[50000, 1], [60000, 2], [70000, 1]], [[0, 0, 0.0], [60000, 1, 20.0]])
        """
        wm = self.last_event_ts
        if not wm:
            return {"room_id": self.room_id, "last_event_ts": 0, "viewer_step_s": VIEWER_STEP_S,
                    "viewers": [], "sales": []}
        since = wm // 1000 - VIEWER_HISTORY_S - VIEWER_STEP_S  # steps ending in the span
        viewers = [[s * 1000, n] for s, n in self.viewer_history.items() if s > since]
        current = wm - wm % MINUTE_MS
        first = max(min(self.panes, default=current), current - HISTORY_MINUTES * MINUTE_MS)
        sales = []
        for start in range(first, current + MINUTE_MS, MINUTE_MS):
            pane = self.panes.get(start)
            sales.append([start, int(pane[8]), round(pane[9], 2)] if pane else [start, 0, 0.0])
        return {"room_id": self.room_id, "last_event_ts": wm, "viewer_step_s": VIEWER_STEP_S,
                "viewers": viewers, "sales": sales}

    def insight(self, now_ms: int, *, live: bool = True,
                alerts: list[dict[str, Any]] | None = None) -> RoomInsight:
        wm = self.last_event_ts
        audience = self._audience()
        engagement = self._engagement()
        commerce = self._commerce_view()
        mood = self.mood.summary(wm)
        windows = self._windows()
        return RoomInsight(
            room_id=self.room_id,
            host_id=self.host_id,
            ts=now_ms,
            viewers=audience["viewers"],
            unique_viewers=audience["unique_viewers"],
            peak_viewers=self.peak_viewers,
            events_total=self.events_total,
            comments_per_min=self.rates["comment"].total(wm),
            likes_per_min=self.rates["like"].total(wm),
            gifts_per_min=self.rates["gift"].total(wm),
            shares_per_min=self.rates["share"].total(wm),
            product_clicks=self.product_clicks,
            add_to_carts=self.add_to_carts,
            orders=self.orders,
            gmv=commerce["gmv"],
            gmv_per_min=commerce["gmv_per_min"],
            orders_per_min=commerce["orders_per_min"],
            last_event_ts=wm,
            live=live,
            audience=audience,
            engagement=engagement,
            mood=mood,
            commerce=commerce,
            windows=windows,
            suggestions=suggest(self, audience, engagement, mood, commerce),
            alerts=alerts or [],
            questions=self.questions.view(wm),
            portrait=self.portrait.view(audience["viewers"], self.returning,
                                        audience["unique_viewers"], wm),
        )

    # ------------------------------------------------------------------ snapshot
    def to_dict(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id, "grace_ms": self.grace_ms, "host_id": self.host_id,
            "viewers": self.viewers, "unique": self.unique.to_text(),
            "seen": self.seen.to_text(), "returning": self.returning,
            "peak_viewers": self.peak_viewers, "events_total": self.events_total,
            "product_clicks": self.product_clicks, "add_to_carts": self.add_to_carts,
            "orders": self.orders, "gmv": self.gmv, "last_event_ts": self.last_event_ts,
            "late_events": self.late_events,
            "rates": {k: v.to_dict() for k, v in self.rates.items()},
            "gmv_rate": self.gmv_rate.to_dict(), "gift_value": self.gift_value.to_dict(),
            "viewer_samples": {str(k): v for k, v in self.viewer_samples.items()},
            "viewer_history": {str(k): v for k, v in self.viewer_history.items()},
            "watch": list(self.watch), "top_viewers": self.top_viewers.to_dict(),
            "items": self.items.to_dict(), "pinned": self.pinned, "mood": self.mood.to_dict(),
            "questions": self.questions.to_dict(),
            "panes": {str(k): v for k, v in self.panes.items()},
            "offsets": {str(k): v for k, v in self.offsets.items()},
            "recent_ids": self.recent_ids.to_text(),
            "erasures": {str(k): v for k, v in self.erasures.items()},
            "portrait": self.portrait.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomState:
        room = cls(data["room_id"], data.get("grace_ms", 10_000))
        room.host_id = data.get("host_id")
        room.viewers = {u: list(v) for u, v in data.get("viewers", {}).items()
                        if isinstance(v, list)}
        if data.get("unique"):
            room.unique = HyperLogLog.from_text(data["unique"])
        if data.get("seen"):
            room.seen = BloomFilter.from_text(data["seen"])
        room.returning = sum(v[2] for v in room.viewers.values())
        room.peak_viewers = data.get("peak_viewers", 0)
        room.events_total = data.get("events_total", 0)
        room.product_clicks = data.get("product_clicks", 0)
        room.add_to_carts = data.get("add_to_carts", 0)
        room.orders = data.get("orders", 0)
        room.gmv = data.get("gmv", 0.0)
        room.last_event_ts = data.get("last_event_ts", 0)
        room.late_events = data.get("late_events", 0)
        for kind, buckets in data.get("rates", {}).items():
            if kind in room.rates:
                room.rates[kind] = SecondBuckets.from_dict(buckets)
        room.gmv_rate = SecondBuckets.from_dict(data.get("gmv_rate", {}))
        room.gift_value = SecondBuckets.from_dict(data.get("gift_value", {}))
        room.viewer_samples = {int(k): v for k, v in data.get("viewer_samples", {}).items()}
        room.viewer_history = dict(sorted(
            (int(k), v) for k, v in data.get("viewer_history", {}).items()))
        room.watch.extend(tuple(w) for w in data.get("watch", []))
        room.top_viewers = TopCounter.from_dict(VIEWER_FIELDS, data.get("top_viewers", {}))
        room.items = TopCounter.from_dict(ITEM_FIELDS, data.get("items", {}), capacity=128)
        room.pinned = data.get("pinned")
        if data.get("mood"):
            room.mood = MoodWindow.from_dict(data["mood"])
        if data.get("questions"):
            room.questions = QuestionBoard.from_dict(data["questions"])
        room.panes = {int(k): list(v) for k, v in data.get("panes", {}).items()}
        room.offsets = {int(k): v for k, v in data.get("offsets", {}).items()}
        if data.get("recent_ids"):
            room.recent_ids = RecentIds.from_text(data["recent_ids"], RECENT_EVENT_IDS)
        room.erasures = {int(k): v for k, v in data.get("erasures", {}).items()}
        room.portrait = AudiencePortrait.from_dict(data.get("portrait"))
        return room


def comment_keywords(text: str) -> list[str]:
    """:func:`keywords` of a comment with e-mail addresses, phone numbers, links and
    @mentions left out (the keywords are shown on the host's page).

    >>> comment_keywords("love it, mail jane.doe@example.com or call +1 415 555 0132 @li_wei")
    ['love', 'mail', 'call']
    """
    return keywords(_PLACEHOLDERS.sub(" ", redact_text(text)))


_WORDS_CACHED = 4096   # distinct comment texts whose keywords are kept (repeats are common)
_words_cache: dict[str, tuple[str, ...]] = {}


def _comment_words(text: str) -> tuple[str, ...]:
    """:func:`comment_keywords`, remembered for the last :data:`_WORDS_CACHED` texts."""
    words = _words_cache.get(text)
    if words is None:
        if len(_words_cache) >= _WORDS_CACHED:
            del _words_cache[next(iter(_words_cache))]  # the oldest entry
        words = _words_cache[text] = tuple(comment_keywords(text))
    return words


def mentions(saved: dict[str, Any], user: str) -> bool:
    """True if a saved room state (:meth:`RoomState.to_dict`) names ``user`` (checked
    without loading it)."""
    return (user in saved.get("viewers", {}) or user in saved.get("top_viewers", {})
            or saved.get("host_id") == user or saved_names(saved.get("questions"), user)
            or user in ((saved.get("portrait") or {}).get("summaries") or {}))


# ---------------------------------------------------------------------- suggestions
Suggestion = dict[str, Any]
Rule = Callable[[RoomState, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]],
                list[Suggestion]]


def _suggestion(code: str, severity: str, en: str, zh: str, **extra: Any) -> Suggestion:
    return {"code": code, "severity": severity, "en": en, "zh": zh, **extra}


def _carts_without_orders(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                          mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    out = []
    for item in commerce["top_items"]:
        if item["carts"] >= 5 and item["purchases"] <= 0.1 * item["carts"]:
            out.append(_suggestion(
                "carts_not_converting", "warn",
                f"{item['carts']} carts but {item['purchases']} orders for {item['item_id']}: "
                "mention the coupon or a time-limited price.",
                f"{item['item_id']} 加购 {item['carts']} 次仅成交 {item['purchases']} 单："
                "提一下优惠券或限时价。", item_id=item["item_id"]))
    return out[:2]


def _checkout_stalled(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                      mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    carts_last_min = room.rates["add_to_cart"].total(room.last_event_ts)
    if carts_last_min >= 5 and commerce["orders_per_min"] == 0:
        return [_suggestion(
            "checkout_stalled", "urgent",
            f"{int(carts_last_min)} carts in the last minute and no orders: check that "
            "checkout works and tell viewers.",
            f"最近一分钟加购 {int(carts_last_min)} 次却没有订单：检查支付是否正常并告知观众。")]
    return []


def _viewer_drop(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                 mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    now_s = room.last_event_ts // 1000
    before = room._avg_viewers(now_s - 300, now_s - 60)
    viewers = audience["viewers"]
    if before >= 10 and viewers < 0.7 * before:
        drop = 1 - viewers / before
        return [_suggestion(
            "viewer_drop", "warn",
            f"Viewers down {drop:.0%} from the last 5 minutes: start an interaction "
            "(lucky draw, Q&A, flash deal).",
            f"观众比前 5 分钟下降 {drop:.0%}：开始互动（抽奖、问答、秒杀）。")]
    return []


def _negative_mood(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                   mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    if mood["comments"] >= 5 and mood["sentiment"] <= -0.2:
        words = "、".join(k["word"] for k in mood["keywords"][:3])
        return [_suggestion(
            "negative_mood", "warn",
            f"Comment mood is negative ({mood['sentiment']:+.2f}); address the concerns: {words}.",
            f"评论情绪偏负面（{mood['sentiment']:+.2f}）：回应观众关心的问题：{words}。")]
    return []


def _quiet_room(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    if audience["viewers"] >= 20 and engagement["comments_per_viewer_min"] < 0.02:
        return [_suggestion(
            "low_engagement", "info",
            "Few comments for this many viewers: ask the room a question.",
            "观众多但评论少：向直播间提个问题。")]
    return []


def _pinned_uptake(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
                   mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    pinned = commerce["pinned"]
    if pinned is None:
        return []
    age_s = (room.last_event_ts - pinned["pinned_at"]) / 1000
    viewers = max(audience["viewers"], 1)
    if age_s >= 60 and pinned["clicks"] < 0.02 * viewers:
        return [_suggestion(
            "pinned_item_ignored", "info",
            f"Pinned {pinned['item_id']} gets little attention: demo it or pin another item.",
            f"置顶商品 {pinned['item_id']} 关注度低：现场展示或换一个置顶。",
            item_id=pinned["item_id"])]
    if pinned["purchases"] >= 5 and pinned["click_to_purchase"] >= 0.2:
        return [_suggestion(
            "pinned_item_hot", "info",
            f"Pinned {pinned['item_id']} is selling well: push urgency (stock, countdown).",
            f"置顶商品 {pinned['item_id']} 卖得好：强调库存和倒计时。", item_id=pinned["item_id"])]
    return []


SUGGESTION_RULES: tuple[Rule, ...] = (
    _checkout_stalled, _viewer_drop, _carts_without_orders, _negative_mood, _pinned_uptake,
    _quiet_room,
)
_SEVERITY_ORDER = {"urgent": 0, "warn": 1, "info": 2}


def suggest(room: RoomState, audience: dict[str, Any], engagement: dict[str, Any],
            mood: dict[str, Any], commerce: dict[str, Any]) -> list[Suggestion]:
    """What the host could do now, most urgent first (rules over the room's numbers)."""
    found = [s for rule in SUGGESTION_RULES
             for s in rule(room, audience, engagement, mood, commerce)]
    return sorted(found, key=lambda s: _SEVERITY_ORDER[s["severity"]])
