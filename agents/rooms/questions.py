"""The chat's unanswered questions of one room, grouped by topic (pure, bounded, erasable).

Each viewer comment :func:`online_models.questions.classify` reads as a question joins its
topic's open group: a count, the event times of its first and last question and the last
:data:`EXAMPLES` distinct texts (redacted like history text: :func:`agents.redaction.redact_text`,
cut to :data:`MAX_TEXT` characters) with their authors. A group is **answered** -- its
questions counted as answered, the group emptied -- when, at or after its last question,

* the host comments (``user_id == host_id``) on its topic (:func:`online_models.questions.topic_of`
  of the host's text: "XL 偏大一码" answers size, "今天下单明天发" shipping, a topic-less
  remark answers ``other``), or
* the host pins an item: the item card shows price, stock and the item's variants and sizes,
  so a pin answers :data:`PIN_ANSWERS`.

An answer whose event time is before some of the group's questions (events out of order)
keeps the examples asked after it as the group. Groups with no new question for
:data:`STALE_MS` of event time are dropped (the host moved on; counted in ``expired``).
Memory: at most 8 groups of :data:`EXAMPLES` examples each.

Erasure: the examples keep their authors' ids only so that :meth:`QuestionBoard.forget_user`
can drop what a user wrote; counts and times name nobody and stay.

>>> board = QuestionBoard()
>>> for ts, user, text in ((1_000, "u1", "多少钱?"), (2_000, "u2", "how much?"),
...                        (3_000, "u3", "有优惠券吗"), (4_000, "u1", "love it")):
...     board.comment(user, text, ts, host_id="h1")
>>> [(g["topic"], g["count"], g["examples"]) for g in board.view(5_000)["unanswered"]]
[('price', 2, ['how much?', '多少钱?']), ('discount', 1, ['有优惠券吗'])]
>>> board.pinned(6_000)  # the pinned item's card shows its price
>>> board.comment("h1", "领券立减 20 元", 7_000, host_id="h1")
>>> board.view(8_000)["unanswered"], board.view(8_000)["answered"]
([], 3)
"""

from __future__ import annotations

from typing import Any

from agents.redaction import redact_text
from online_models.questions import TOPICS, classify, topic_of

EXAMPLES = 2
MAX_TEXT = 140
TOP_GROUPS = 5
STALE_MS = 10 * 60_000
PIN_ANSWERS = ("price", "stock", "variant", "size")
_COUNT, _FIRST, _LAST, _EXAMPLES = range(4)


class QuestionBoard:
    """Open question groups by topic, and how many questions were asked/answered/expired."""

    __slots__ = ("answered", "answered_at", "asked", "expired", "groups")

    def __init__(self) -> None:
        # topic -> [count, first ts, last ts, [[user, text, ts], ...] newest first]
        self.groups: dict[str, list[Any]] = {}
        self.answered_at: dict[str, int] = {}   # topic -> event time of its latest answer
        self.asked = 0
        self.answered = 0
        self.expired = 0

    # ------------------------------------------------------------------ folding
    def comment(self, user: str, text: str, ts: int, host_id: str | None = None) -> None:
        """Fold one comment: a host's answers its topic, a viewer's question joins its group."""
        if host_id is not None and user == host_id:
            self._answer(topic_of(text), ts)
            return
        topic = classify(text)
        if topic is None:
            return
        self.asked += 1
        if ts <= self.answered_at.get(topic, -1):
            self.answered += 1   # asked before an answer already given (arrived late)
            return
        self._expire(ts)
        shown = redact_text(text.strip())[:MAX_TEXT]
        group = self.groups.get(topic)
        if group is None:
            self.groups[topic] = [1, ts, ts, [[user, shown, ts]]]
            return
        group[_COUNT] += 1
        group[_FIRST] = min(group[_FIRST], ts)
        group[_LAST] = max(group[_LAST], ts)
        examples = [e for e in group[_EXAMPLES] if e[1] != shown]  # distinct texts
        examples.append([user, shown, ts])
        examples.sort(key=lambda e: -e[2])
        group[_EXAMPLES] = examples[:EXAMPLES]

    def pinned(self, ts: int) -> None:
        """The host pinned an item at ``ts``: its card answers :data:`PIN_ANSWERS`."""
        for topic in PIN_ANSWERS:
            self._answer(topic, ts)

    def _answer(self, topic: str, ts: int) -> None:
        if ts > self.answered_at.get(topic, -1):
            self.answered_at[topic] = ts
        group = self.groups.get(topic)
        if group is None or group[_FIRST] > ts:
            return  # nothing asked before this answer
        later = [e for e in group[_EXAMPLES] if e[2] > ts]
        if not later or group[_LAST] <= ts:
            self.answered += group[_COUNT]
            del self.groups[topic]
            return
        # out of order: the questions known to come after the answer stay open
        self.answered += max(group[_COUNT] - len(later), 0)
        group[:] = [len(later), min(e[2] for e in later), group[_LAST], later]

    def _expire(self, now_ts: int) -> None:
        for topic in [t for t, g in self.groups.items() if g[_LAST] < now_ts - STALE_MS]:
            self.expired += self.groups.pop(topic)[_COUNT]

    # ------------------------------------------------------------------ erasure
    def authors(self) -> set[str]:
        """The users whose words are kept (the examples' authors)."""
        return {e[0] for g in self.groups.values() for e in g[_EXAMPLES]}

    def names(self, user: str) -> bool:
        return any(e[0] == user for g in self.groups.values() for e in g[_EXAMPLES])

    def forget_user(self, user: str) -> bool:
        """Drop the examples ``user`` wrote; True if there were any (counts stay)."""
        named = False
        for group in self.groups.values():
            kept = [e for e in group[_EXAMPLES] if e[0] != user]
            if len(kept) != len(group[_EXAMPLES]):
                group[_EXAMPLES] = kept
                named = True
        return named

    # ------------------------------------------------------------------ reading
    def view(self, watermark: int) -> dict[str, Any]:
        """The insight's ``questions`` group at event time ``watermark``."""
        live = {t: g for t, g in self.groups.items() if g[_LAST] >= watermark - STALE_MS}
        top = sorted(live.items(), key=lambda kv: (-kv[1][_COUNT], -kv[1][_LAST],
                                                   TOPICS.index(kv[0])))[:TOP_GROUPS]
        return {
            "asked": self.asked,
            "answered": self.answered,
            "open": sum(g[_COUNT] for g in live.values()),
            "stale_after_s": STALE_MS // 1000,
            "unanswered": [{"topic": topic, "count": g[_COUNT], "first_seen": g[_FIRST],
                            "last_seen": g[_LAST], "examples": [e[1] for e in g[_EXAMPLES]]}
                           for topic, g in top],
        }

    # ------------------------------------------------------------------ snapshot
    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "answered_at": self.answered_at, "asked": self.asked,
                "answered": self.answered, "expired": self.expired}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuestionBoard:
        board = cls()
        board.groups = {t: [g[0], g[1], g[2], [list(e) for e in g[3]][:EXAMPLES]]
                        for t, g in (data.get("groups") or {}).items() if t in TOPICS}
        board.answered_at = dict(data.get("answered_at") or {})
        board.asked = data.get("asked", 0)
        board.answered = data.get("answered", 0)
        board.expired = data.get("expired", 0)
        return board


def saved_names(saved: dict[str, Any] | None, user: str) -> bool:
    """True if a saved board (:meth:`QuestionBoard.to_dict`) keeps words of ``user``."""
    groups = (saved or {}).get("groups") or {}
    return any(e[0] == user for g in groups.values() for e in g[3])
