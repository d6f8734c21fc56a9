"""Anomaly incidents: watchers sample metrics, a detector scores them, a tracker deduplicates.

Pure Python (no Faust): :mod:`agents.anomalies.agent` wires it into the worker.

* :class:`RoomWatch` samples every owned room once per **event-time** second (viewers,
  join / leave rate, comments, likes, gifts, carts, GMV per second, cart → order conversion)
  and feeds one :class:`~online_models.anomaly.AnomalyDetector` per (room, metric).
* :class:`UserWatch` keeps a bounded LRU of recently active (pseudonymous) users, sampled
  per second of each user's own event time: click rate over 10 s scored against the
  population of per-user rates (one detector), inter-click regularity (coefficient of
  variation of the intervals: bots are metronomic) and impossible sequences (a cart 100 ms
  after first seeing the item, actions in two rooms within 100 ms; 8 in a minute).
* :class:`SystemWatch` samples the worker's own numbers once per wall-clock second: input
  lag (processing time minus event time), dead-letter rate, output latency.
* :class:`IncidentTracker` turns per-sample scores into incidents: one open incident per
  scope at a time, opened after ``open_after`` consecutive samples scoring at least
  ``open_score``, resolved when every score stayed below ``close_score`` for ``quiet_s``
  (hysteresis). Each incident yields exactly one ``open`` and one ``resolved`` record
  (``anomaly.v1``) with the same ``anomaly_id``. User incidents **coalesce**: a user who
  would open one while a user incident of the same primary metric is open joins it (a bot
  flood of 50 accounts is one alert, named after the first bot, that resolves once no member
  has been anomalous for ``quiet_s``).

A detector score alone opens nothing: each metric also has a minimum effect size (a viewer
drop is at least half the audience within 15 s, a flood several times the room's usual
rate per viewer, ...). With a minute of history every new pattern is statistically
surprising (the first pin burst of a room, say); the effect size keeps those from paging
anyone, while the detector keeps small, usual wiggles out once history exists. Count
metrics are also scored by their Poisson tail against the usual level
(:func:`count_surprise`), which stays informative where a robust z-score of sparse counts
is degenerate (an inter-quartile range of zero).

>>> tracker = IncidentTracker(open_after=2, quiet_s=2.0)
>>> high = [Signal("leave_rate", 20.0, 0.1, 1.5, 0.99)]
>>> [r["status"] for t in range(4) for r in tracker.observe("room", "r1", high, t * 1000)]
['open']
>>> [r["status"] for t in range(4, 8) for r in tracker.observe("room", "r1", [], t * 1000)]
['resolved']
"""

from __future__ import annotations

import itertools
import math
import re
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.contracts import ANOMALY, Anomaly, as_dict, check_contract
from streams.ingest import now_ms as wall_ms

SCOPES = ("room", "user", "system")
SEVERITIES = ("info", "warning", "critical")


class Detector(Protocol):
    """What the watchers need from :class:`online_models.anomaly.AnomalyDetector`."""

    n_seen: int

    def score_one(self, x: dict[str, Any]) -> float: ...

    def learn_one(self, x: dict[str, Any]) -> None: ...

    def expected_range(self) -> tuple[float, float]: ...


DetectorFactory = Callable[[], Detector]
DETECTOR_WARMUP = 15  # samples (seconds) before a room or system metric may alarm


def default_detector() -> Detector:
    """The shared detector, sized for one live metric (a room has nine): no refractory
    damping (the tracker deduplicates), no daily/weekly profiles (a live session lasts hours,
    they need 1.5 days), shorter calibration memories. About 28 KB each instead of 90 KB."""
    from online_models.anomaly import AnomalyDetector

    return AnomalyDetector(seed=0, warmup=DETECTOR_WARMUP, refractory=0, errors=128,
                           history=300, blocks=64, seasonal=False)


# ---------------------------------------------------------------------- explanations
# metric: (English label, Chinese label, English unit, Chinese unit, number format)
METRICS: dict[str, tuple[str, str, str, str, str]] = {
    "viewers": ("viewers", "在线观众", "", " 人", "int"),
    "join_rate": ("joins", "进入", "/s", "/秒", "rate"),
    "leave_rate": ("leaves", "离开", "/s", "/秒", "rate"),
    "comment_rate": ("comments", "评论", "/s", "/秒", "rate"),
    "like_rate": ("likes", "点赞", "/s", "/秒", "rate"),
    "gift_rate": ("gifts", "礼物", "/s", "/秒", "rate"),
    "cart_rate": ("add-to-carts", "加购", "/s", "/秒", "rate"),
    "gmv_rate": ("GMV", "成交额", "/s", "/秒", "money"),
    "conversion": ("cart → order conversion", "加购→下单转化率", "", "", "pct"),
    "click_rate": ("clicks", "点击", "/s", "/秒", "rate"),
    "click_interval_cv": ("click-interval variation (CV)", "点击间隔变异系数", "", "", "dec2"),
    "impossible_sequences": ("impossible sequences in 60 s", "60 秒内不可能的操作序列", "", "",
                             "int"),
    "input_lag_ms": ("input lag", "输入延迟", " ms", " 毫秒", "int"),
    "dead_letter_rate": ("dead letters", "死信", "/s", "/秒", "rate"),
    "output_latency_ms": ("output latency", "输出延迟", " ms", " 毫秒", "int"),
}
SCOPE_NAMES = {"room": ("Room", "直播间"), "user": ("User", "用户"), "system": ("Worker", "引擎")}


def _fmt(value: float, kind: str) -> str:
    if kind == "int":
        return f"{value:.0f}"
    if kind == "pct":
        return f"{100 * value:.0f}%"
    if kind == "dec2":
        return f"{value:.2f}"
    if kind == "money":
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:.0f}"


def describe(metric: str, observed: float, low: float, high: float) -> tuple[str, str]:
    """One metric's reading against its expected band, in English and Chinese.

    >>> describe("leave_rate", 17.24, 0.1, 1.25)[0]
    'leaves 17.2/s (expected 0.1-1.2/s)'
    """
    en_label, zh_label, en_unit, zh_unit, kind = METRICS.get(metric, (metric, metric, "", "",
                                                                      "rate"))
    obs, lo, hi = _fmt(observed, kind), _fmt(max(0.0, low), kind), _fmt(max(0.0, high), kind)
    return (f"{en_label} {obs}{en_unit} (expected {lo}-{hi}{en_unit})",
            f"{zh_label} {obs}{zh_unit}（正常 {lo}-{hi}{zh_unit}）")


# ---------------------------------------------------------------------- incidents
@dataclass(frozen=True, slots=True)
class Signal:
    """One metric of one scope at one sample: its value, expected band and effective score
    (0 when the deviation is not material, see the module docstring)."""

    metric: str
    observed: float
    expected_low: float
    expected_high: float
    score: float


@dataclass(slots=True)
class Incident:
    """An open (or just resolved) incident of one scope."""

    anomaly_id: str
    scope: str
    scope_id: str
    metric: str                  # primary: the highest-scoring metric when it opened
    observed: float              # primary metric at its peak score
    expected_low: float
    expected_high: float
    score: float                 # peak score of the primary metric
    severity: str
    first_seen: int
    last_seen: int
    opened_at: int               # sample time at which it opened
    related: dict[str, float] = field(default_factory=dict)  # other metrics -> peak score
    current: Signal | None = None  # latest reading of the primary metric
    quiet_since: int | None = None
    resolved_at: int | None = None
    explanation: str = ""
    explanation_zh: str = ""
    # coalesced scopes (users): the first MAX_LISTED members in joining order, and how many
    members: list[str] = field(default_factory=list)
    n_members: int = 1


def severity_of(score: float, duration_s: float, critical_after_s: float = 30.0) -> str:
    """``critical`` for a near-certain anomaly that lasts, ``warning`` for a strong one,
    ``info`` otherwise.

    >>> severity_of(0.92, 2), severity_of(0.99, 2), severity_of(0.995, 45)
    ('info', 'warning', 'critical')
    """
    if score >= 0.99 and duration_s >= critical_after_s:
        return "critical"
    if score >= 0.97:
        return "warning"
    return "info"


@dataclass(slots=True)
class _Scope:
    streak: int = 0
    streak_start: int = 0
    incident: Incident | None = None  # shared by the members of a coalesced incident
    quiet_since: int | None = None    # this scope's own quiet period (members resolve together)


MAX_LISTED = 20     # members an incident remembers by id (the count is exact)
NAMED_IN_TEXT = 3   # members an explanation names


class IncidentTracker:
    """One open incident per (scope, scope_id), with hysteresis; see the module docstring.

    Parameters
    ----------
    open_score, close_score
        A sample counts as anomalous at ``open_score`` or more; an open incident stays
        open while some metric of its scope scores ``close_score`` or more.
    open_after
        Consecutive anomalous samples before an incident opens.
    quiet_s
        Seconds (of the scope's sample clock) every score must stay below ``close_score``
        before the incident resolves.
    max_scopes
        Scopes tracked at once (streaks and open incidents); beyond it the least recently
        observed is dropped, its incident resolved. Quiet scopes cost nothing.
    max_resolved
        Recently resolved incidents kept for the API and the host page.
    coalesce
        Scopes whose concurrent incidents merge: a scope id that would open an incident
        while one of the same scope is open with a primary metric this scope id also finds
        anomalous joins it as a member instead (no record). The incident keeps its
        ``scope_id`` and ``anomaly_id`` (the first member), reports the peak reading of any
        member, and resolves once every member stayed quiet for ``quiet_s``.
    clock
        Emission time of records (epoch ms), wall clock by default.
    """

    def __init__(self, *, open_score: float = 0.9, close_score: float = 0.5,
                 open_after: int = 2, quiet_s: float = 5.0, critical_after_s: float = 30.0,
                 max_scopes: int = 10_000, max_resolved: int = 200,
                 coalesce: Iterable[str] = ("user",),
                 clock: Callable[[], int] = wall_ms) -> None:
        if not 0.0 <= close_score <= open_score <= 1.0:
            raise ValueError("need 0 <= close_score <= open_score <= 1")
        self.open_score = open_score
        self.close_score = close_score
        self.open_after = max(1, open_after)
        self.quiet_ms = int(quiet_s * 1000)
        self.critical_after_s = critical_after_s
        self.max_scopes = max_scopes
        self.clock = clock
        self.scopes: OrderedDict[tuple[str, str], _Scope] = OrderedDict()
        self.resolved: deque[Incident] = deque(maxlen=max_resolved)
        self.opened_total: dict[tuple[str, str], int] = {}  # (scope, severity) -> count
        self.coalesce = frozenset(coalesce)
        # open coalescing incidents: anomaly_id -> (incident, scope ids still tracked)
        self.groups: dict[str, tuple[Incident, set[str]]] = {}

    # ------------------------------------------------------------------ updates
    def observe(self, scope: str, scope_id: str, signals: Sequence[Signal],
                ts: int) -> list[dict[str, Any]]:
        """Fold one sample of a scope (all its metrics at time ``ts``, epoch ms); return the
        records to emit (an ``open``, a ``resolved``, or nothing)."""
        key = (scope, scope_id)
        state = self.scopes.get(key)
        top = max(signals, key=lambda s: s.score, default=None)
        top_score = top.score if top is not None else 0.0
        if state is None:
            if top_score < self.open_score:
                return []  # nothing to remember about a quiet scope
            state = self.scopes[key] = _Scope()
        self.scopes.move_to_end(key)
        out: list[dict[str, Any]] = []
        incident = state.incident
        if incident is None:
            if top_score >= self.open_score:
                if state.streak == 0:
                    state.streak_start = ts
                state.streak += 1
                if state.streak >= self.open_after:
                    assert top is not None
                    group = self._group_for(scope, top, signals)
                    if group is None:
                        out.append(self._open(state, scope, scope_id, top, signals, ts))
                    else:
                        self._join(group, state, scope_id, signals, ts)
            else:
                del self.scopes[key]
        else:
            self._update(incident, signals, ts)
            if top_score >= self.close_score:
                state.quiet_since = incident.quiet_since = None
                incident.last_seen = max(incident.last_seen, ts)
            elif state.quiet_since is None:
                state.quiet_since = ts
            if self._quiet(key, incident, ts):
                out.append(self._resolve(key, incident, ts))
        out.extend(self._evict())
        return out

    def _group_for(self, scope: str, top: Signal,
                   signals: Sequence[Signal]) -> Incident | None:
        """The open incident of a coalescing ``scope`` a new anomaly joins, if any: the
        earliest whose primary metric is this sample's top metric or another of its
        anomalous metrics (one bot may tick faster, another more regularly)."""
        if scope not in self.coalesce:
            return None
        hot = {s.metric for s in signals if s.score >= self.open_score}
        candidates = [i for i, _ in self.groups.values() if i.scope == scope]
        for incident in candidates:
            if incident.metric == top.metric:
                return incident
        return next((i for i in candidates if i.metric in hot), None)

    def _join(self, incident: Incident, state: _Scope, scope_id: str,
              signals: Sequence[Signal], ts: int) -> None:
        state.incident = incident
        state.streak = 0
        state.quiet_since = None
        self.groups[incident.anomaly_id][1].add(scope_id)
        incident.n_members += 1
        if len(incident.members) < MAX_LISTED:
            incident.members.append(scope_id)
        incident.quiet_since = None
        incident.last_seen = max(incident.last_seen, ts)
        self._update(incident, signals, ts)

    def _quiet(self, key: tuple[str, str], incident: Incident, ts: int) -> bool:
        """Has every scope of ``incident`` stayed quiet for ``quiet_s`` at ``ts``?"""
        group = self.groups.get(incident.anomaly_id)
        keys = [(key[0], m) for m in group[1]] if group is not None else [key]
        since = [self.scopes[k].quiet_since if k in self.scopes else ts for k in keys]
        if any(s is None for s in since):
            return False
        latest = max(s for s in since if s is not None)
        incident.quiet_since = latest
        return ts - latest >= self.quiet_ms

    def close(self, scope: str, scope_id: str, ts: int, reason: str = "",
              reason_zh: str = "") -> list[dict[str, Any]]:
        """Stop tracking a scope (room idle, partition moved): resolve its open incident."""
        state = self.scopes.get((scope, scope_id))
        if state is None:
            return []
        if state.incident is None:
            del self.scopes[(scope, scope_id)]
            return []
        return [self._resolve((scope, scope_id), state.incident, max(ts, state.incident.last_seen),
                              reason, reason_zh)]

    def _open(self, state: _Scope, scope: str, scope_id: str, top: Signal,
              signals: Sequence[Signal], ts: int) -> dict[str, Any]:
        first_seen = state.streak_start
        incident = Incident(
            anomaly_id=f"{scope}:{scope_id}:{first_seen}", scope=scope, scope_id=scope_id,
            metric=top.metric, observed=top.observed, expected_low=top.expected_low,
            expected_high=top.expected_high, score=top.score, severity="info",
            first_seen=first_seen, last_seen=ts, opened_at=ts, current=top,
            members=[scope_id])
        for signal in signals:
            if signal.metric != top.metric and signal.score >= self.open_score:
                incident.related[signal.metric] = signal.score
        incident.severity = severity_of(top.score, (ts - first_seen) / 1000,
                                        self.critical_after_s)
        state.incident = incident
        state.streak = 0
        state.quiet_since = None
        if scope in self.coalesce:
            self.groups[incident.anomaly_id] = (incident, {scope_id})
        counted = (scope, incident.severity)
        self.opened_total[counted] = self.opened_total.get(counted, 0) + 1
        incident.explanation, incident.explanation_zh = self._explain_open(incident)
        return self._record(incident, "open")

    def _update(self, incident: Incident, signals: Sequence[Signal], ts: int) -> None:
        incident.current = None  # until the primary metric shows up in this sample
        for signal in signals:
            if signal.metric == incident.metric:
                incident.current = signal
                if signal.score > incident.score or (
                        signal.score == incident.score
                        and _outside(signal) > _outside_band(incident)):
                    incident.score = signal.score
                    incident.observed = signal.observed
                    incident.expected_low = signal.expected_low
                    incident.expected_high = signal.expected_high
            elif signal.score >= self.open_score:
                incident.related[signal.metric] = max(signal.score,
                                                      incident.related.get(signal.metric, 0.0))
        if len(incident.related) > len(METRICS):  # unknown metric names: keep it bounded
            for metric in sorted(incident.related)[len(METRICS):]:
                del incident.related[metric]
        severity = severity_of(incident.score, (ts - incident.first_seen) / 1000,
                               self.critical_after_s)
        if SEVERITIES.index(severity) > SEVERITIES.index(incident.severity):
            incident.severity = severity

    def _resolve(self, key: tuple[str, str], incident: Incident, ts: int, reason: str = "",
                 reason_zh: str = "") -> dict[str, Any]:
        incident.resolved_at = ts
        incident.explanation, incident.explanation_zh = self._explain_resolved(
            incident, reason, reason_zh)
        group = self.groups.pop(incident.anomaly_id, None)
        for member in group[1] if group is not None else (key[1],):
            self.scopes.pop((key[0], member), None)
        self.resolved.append(incident)
        return self._record(incident, "resolved")

    def _evict(self) -> list[dict[str, Any]]:
        out = []
        while len(self.scopes) > self.max_scopes:
            key, state = next(iter(self.scopes.items()))
            group = (self.groups.get(state.incident.anomaly_id)
                     if state.incident is not None else None)
            if state.incident is None or (group is not None and len(group[1]) > 1):
                del self.scopes[key]  # a member of a group others keep open leaves it
                if group is not None:
                    group[1].discard(key[1])
            else:
                out.append(self._resolve(key, state.incident, state.incident.last_seen,
                                         "no longer tracked (too many scopes)",
                                         "不再跟踪（范围过多）"))
        return out

    # ------------------------------------------------------------------ records
    @staticmethod
    def _explain_open(incident: Incident) -> tuple[str, str]:
        en, zh = describe(incident.metric, incident.observed, incident.expected_low,
                          incident.expected_high)
        who_en, who_zh = _who(incident)
        text_en = f"{who_en}: {en}"
        text_zh = f"{who_zh}：{zh}"
        if incident.related:
            others = sorted(incident.related, key=lambda m: -incident.related[m])
            text_en += "; also unusual: " + ", ".join(METRICS.get(m, (m,))[0] for m in others)
            text_zh += "；同时异常：" + "、".join(METRICS.get(m, (m, m))[1] for m in others)
        return text_en + ".", text_zh + "。"

    @staticmethod
    def _explain_resolved(incident: Incident, reason: str, reason_zh: str) -> tuple[str, str]:
        assert incident.resolved_at is not None
        seconds = max(0, (incident.last_seen - incident.first_seen) // 1000)
        label_en, label_zh, unit_en, unit_zh, kind = METRICS.get(
            incident.metric, (incident.metric, incident.metric, "", "", "rate"))
        peak = _fmt(incident.observed, kind)
        who_en, who_zh = _who(incident)
        text_en = f"Resolved after {seconds} s. {who_en}: "
        text_zh = f"已恢复（持续 {seconds} 秒）。{who_zh}："
        now = incident.current
        if reason:
            text_en += reason
            text_zh += reason_zh or reason
        elif now is not None:  # against the band the incident was judged by
            en, zh = describe(incident.metric, now.observed, incident.expected_low,
                              incident.expected_high)
            text_en += f"{label_en} back to {en[len(label_en) + 1:]}"
            text_zh += f"{label_zh}回到 {zh[len(label_zh) + 1:]}"
        else:
            text_en += f"{label_en} back to normal"
            text_zh += f"{label_zh}恢复正常"
        text_en += f"; worst {peak}{unit_en}"
        text_zh += f"；最异常时 {peak}{unit_zh}"
        if incident.related:
            others = sorted(incident.related, key=lambda m: -incident.related[m])
            text_en += "; also unusual: " + ", ".join(METRICS.get(m, (m,))[0] for m in others)
            text_zh += "；同时异常：" + "、".join(METRICS.get(m, (m, m))[1] for m in others)
        return text_en + ".", text_zh + "。"

    def _record(self, incident: Incident, status: str) -> dict[str, Any]:
        record = as_dict(Anomaly(
            anomaly_id=incident.anomaly_id, status=status, scope=incident.scope,
            scope_id=incident.scope_id, metric=incident.metric,
            observed=_finite(incident.observed),
            expected_low=_finite(min(incident.expected_low, incident.expected_high)),
            expected_high=_finite(max(incident.expected_low, incident.expected_high)),
            score=_finite(min(1.0, max(0.0, incident.score))), severity=incident.severity,
            explanation=incident.explanation, first_seen=incident.first_seen,
            last_seen=incident.last_seen, ts=self.clock()))
        return check_contract(ANOMALY, record)

    # ------------------------------------------------------------------ reading
    def open_incidents(self, scope: str | None = None) -> list[Incident]:
        found = {id(s.incident): s.incident for (sc, _), s in self.scopes.items()
                 if s.incident is not None and (scope is None or sc == scope)}
        return list(found.values())  # members of a coalesced incident share it

    def forget(self, scope: str, scope_id: str) -> int:
        """Erase one scope id (a forgotten user): its streak, the incidents it opened
        (dropped without a ``resolved`` record: emitting one would name it again; their
        other members start over), and its id wherever another incident lists or names it.
        O(scopes + resolved); returns the incidents dropped."""
        key = (scope, scope_id)
        state = self.scopes.pop(key, None)
        doomed = {id(i): i for i in self.resolved if i.scope == scope and i.scope_id == scope_id}
        if state is not None and state.incident is not None \
                and state.incident.scope_id == scope_id:
            doomed[id(state.incident)] = state.incident
        for other in self.scopes.values():
            if other.incident is not None and id(other.incident) in doomed:
                other.incident, other.streak, other.quiet_since = None, 0, None
        for anomaly_id in [a for a, (i, _) in self.groups.items() if id(i) in doomed]:
            del self.groups[anomaly_id]
        for _incident, members in self.groups.values():
            members.discard(scope_id)
        kept = [i for i in self.resolved if id(i) not in doomed]
        self.resolved.clear()
        self.resolved.extend(kept)
        named = re.compile(rf"(?<![\w-]){re.escape(scope_id)}(?![\w-])")
        for incident in [*kept, *(s.incident for s in self.scopes.values() if s.incident)]:
            if scope_id in incident.members:
                incident.members.remove(scope_id)
                incident.explanation = named.sub("[erased]", incident.explanation)
                incident.explanation_zh = named.sub("[erased]", incident.explanation_zh)
        return len(doomed)

    def active(self, scope: str) -> set[str]:
        """Scope ids with a streak or an open incident (watchers keep sampling them)."""
        return {sid for (sc, sid) in self.scopes if sc == scope}

    def n_open(self, scope: str) -> int:
        return len(self.open_incidents(scope))

    def alerts(self, scope: str, scope_id: str, since: int) -> list[dict[str, Any]]:
        """Open incidents of one scope, then those resolved at or after ``since``, newest
        first, as host-page alerts (``en`` / ``zh`` texts, status, numbers)."""
        out = []
        state = self.scopes.get((scope, scope_id))
        if state is not None and state.incident is not None:
            out.append(_alert(state.incident, "open"))  # a member sees its group's incident
        for incident in reversed(self.resolved):
            if (incident.scope == scope and incident.scope_id == scope_id
                    and (incident.resolved_at or 0) >= since):
                out.append(_alert(incident, "resolved"))
        return out


def _who(incident: Incident) -> tuple[str, str]:
    """Who an explanation is about: the scope id, or for a coalesced incident of several
    members their count and the first few (``member_ids`` reads them back).

    >>> i = Incident("user:b1:0", "user", "b1", "click_rate", 9.0, 0.0, 1.0, 0.99, "info",
    ...              0, 0, 0, members=["b1", "b2", "b3", "b4"], n_members=5)
    >>> _who(i)[0]
    'Users b1, b2, b3 and 2 more (5 in all)'
    """
    en_scope, zh_scope = SCOPE_NAMES.get(incident.scope, (incident.scope, incident.scope))
    if incident.n_members <= 1:
        return f"{en_scope} {incident.scope_id}", f"{zh_scope} {incident.scope_id}"
    named = ", ".join(incident.members[:NAMED_IN_TEXT])
    more = incident.n_members - min(NAMED_IN_TEXT, len(incident.members))
    rest_en = f" and {more} more" if more else ""
    rest_zh = " 等" if more else ""
    return (f"{en_scope}s {named}{rest_en} ({incident.n_members} in all)",
            f"{zh_scope} {named}{rest_zh}（共 {incident.n_members} 个）")


_MEMBERS = re.compile(r"^(?:Resolved after \d+ s\. )?\w+s (.+?)(?: and \d+ more)? \(\d+ in all\):")


def member_ids(explanation: str) -> list[str]:
    """The members a coalesced incident's (English) explanation names, for sinks that
    rewrite user ids (:mod:`agents.sinks.clickhouse_schema` pseudonymizes them); none for an
    incident of a single scope id (its ``scope_id`` is the one named).

    >>> member_ids("Resolved after 9 s. Users b1, b2, b3 and 2 more (5 in all): clicks ...")
    ['b1', 'b2', 'b3']
    >>> member_ids("User b1: clicks 9.0/s (expected 0.1-1.0/s).")
    []
    """
    match = _MEMBERS.match(explanation)
    return match.group(1).split(", ") if match else []


def _outside(signal: Signal) -> float:
    """How far a reading lies outside its expected band (0 inside)."""
    return max(0.0, signal.observed - signal.expected_high,
               signal.expected_low - signal.observed)


def _outside_band(incident: Incident) -> float:
    return _outside(Signal(incident.metric, incident.observed, incident.expected_low,
                           incident.expected_high, incident.score))


def _finite(value: float) -> float:
    return round(float(value), 4) if math.isfinite(value) else 0.0


def _alert(incident: Incident, status: str) -> dict[str, Any]:
    if status == "open":
        en, zh = IncidentTracker._explain_open(incident)
        if incident.current is not None:
            now_en, now_zh = describe(incident.metric, incident.current.observed,
                                      incident.current.expected_low,
                                      incident.current.expected_high)
            en += f" Now: {now_en}."
            zh += f"当前：{now_zh}。"
    else:
        en, zh = incident.explanation, incident.explanation_zh
    return {"metric": incident.metric, "severity": incident.severity, "explanation": en,
            "ts": incident.resolved_at if status == "resolved" else incident.last_seen,
            "status": status, "anomaly_id": incident.anomaly_id, "scope": incident.scope,
            "scope_id": incident.scope_id,
            "observed": _finite(incident.observed),
            "expected_low": _finite(incident.expected_low),
            "expected_high": _finite(incident.expected_high),
            "score": _finite(incident.score), "first_seen": incident.first_seen,
            "last_seen": incident.last_seen, "en": en, "zh": zh,
            **({"members": list(incident.members), "n_members": incident.n_members}
               if incident.scope == "user" else {})}


# ---------------------------------------------------------------------- shared helpers
class _Baseline:
    """Exponentially weighted mean of a metric for effect sizes.

    Samples join the mean ``delay`` samples late, so a flood that ramps up over the rate
    window is compared with the level before it began rather than chased; a sample that
    was a material deviation is learned ten times slower, so a sustained anomaly does not
    become normal in seconds but a lasting change is eventually accepted.

    >>> base = _Baseline(delay=2)
    >>> for v in (1.0, 1.0, 1.0, 9.0, 9.0):
    ...     base.update(v, material=False)
    >>> base.mean
    1.0
    """

    __slots__ = ("alpha", "mean", "n", "pending")

    def __init__(self, alpha: float = 2 / 21, delay: int = 10) -> None:
        self.alpha = alpha
        self.mean = 0.0
        self.n = 0
        self.pending: deque[tuple[float, bool]] = deque(maxlen=delay + 1)

    def update(self, value: float, material: bool) -> None:
        self.pending.append((value, material))
        if len(self.pending) < (self.pending.maxlen or 1):
            if self.n == 0:
                self.mean = self.pending[0][0]  # a first guess until samples mature
            return
        value, material = self.pending.popleft()
        self.n += 1
        # a plain running mean until 1 / alpha samples exist, exponential afterwards
        rate = max(self.alpha, 1.0 / self.n)
        self.mean += (rate / 10 if material and self.n > 1 else rate) * (value - self.mean)


class _PerViewer:
    """A rate's usual level per viewer: the ratio of the exponentially weighted rate and
    audience (a ratio of means, so a room's first seconds with a handful of viewers do not
    dominate it)."""

    __slots__ = ("audience", "rate")

    def __init__(self, alpha: float = 2 / 61) -> None:
        # slower than other baselines: sparse counts (a few gifts a minute) need more history
        self.rate = _Baseline(alpha)
        self.audience = _Baseline(alpha)

    def update(self, rate: float, audience: float, material: bool) -> None:
        self.rate.update(rate, material)
        self.audience.update(audience, material)

    def expected(self, audience: float) -> float:
        """Usual rate for ``audience`` viewers."""
        return self.rate.mean / max(self.audience.mean, 1.0) * audience


def count_surprise(count: float, expected: float, *, upper: bool = True) -> float:
    """Poisson tail surprise of ``count`` events where ``expected`` were usual, on the
    detector's scale: ``-log10(p) / 6`` clipped to [0, 1] (1.0 = one in a million or rarer).

    Sparse per-second counts (gifts, leaves in a small room) often have an inter-quartile
    spread of zero, where a robust z-score says nothing; the Poisson tail does.

    >>> count_surprise(117, 6.0) == 1.0, count_surprise(8, 6.0) < 0.1
    (True, True)
    >>> count_surprise(0, 30.0, upper=False) == 1.0, count_surprise(25, 30.0, upper=False) < 0.1
    (True, True)
    """
    mu = max(expected, 0.5)
    c = max(0, round(count))

    def log_term(k: int) -> float:
        return -mu + k * math.log(mu) - math.lgamma(k + 1)

    if upper:
        if c <= mu:
            return 0.0
        # terms shrink at least geometrically (ratio mu / (k + 1)) above the mean
        log_p = log_term(c) - math.log1p(-mu / (c + 1))
    else:
        if c >= mu:
            return 0.0
        log_p = log_term(c) - math.log1p(-c / mu) if c > 0 else -mu
    return min(1.0, max(0.0, -log_p / math.log(10) / 6.0))


def _score(detector: Detector, value: float, ts: float | None) -> tuple[float, float, float]:
    """Prequential: the score and expected band of ``value``, then learn it."""
    x: dict[str, Any] = {"value": value}
    if ts is not None:
        x["ts"] = ts
    score = detector.score_one(x)
    low, high = detector.expected_range()
    detector.learn_one(x)
    return score, low, high


# ---------------------------------------------------------------------- rooms
ROOM_METRICS = ("viewers", "join_rate", "leave_rate", "comment_rate", "like_rate", "gift_rate",
                "cart_rate", "gmv_rate", "conversion")
_RATE_SOURCES = {"comment_rate": "comment", "like_rate": "like", "gift_rate": "gift",
                 "cart_rate": "add_to_cart"}
# Minimum effect of an upward flood: observed >= FLOOD_FACTOR x the room's usual rate.
FLOOD_FACTOR = {"comment_rate": 5.0, "like_rate": 5.0, "gift_rate": 4.0, "cart_rate": 8.0,
                "gmv_rate": 10.0, "join_rate": 3.0}
# events in the window before a flood can matter (gifts are money: fewer suffice)
FLOOD_MIN_COUNT = {"comment_rate": 20, "like_rate": 20, "gift_rate": 15, "cart_rate": 20,
                   "gmv_rate": 10, "join_rate": 20, "leave_rate": 10}
MATURE_SAMPLES = 10         # samples in a usual level before floods against it can matter
# a room's opening minute sets its sales level, and everyone joins at its start
SETTLE_S = {"cart_rate": 60, "gmv_rate": 120, "join_rate": 60}
VIEWER_DROP_SHARE = 0.5     # viewers down by half vs the max of the last DROP_HORIZON_S
VIEWER_DROP_MIN = 10
DROP_HORIZON_S = 15
LEAVE_SHARE = 0.5           # leaves in the window >= half the viewers at its start
JOIN_FLOOD_SHARE = 1.0      # joins in the window >= the viewers at its start
CONVERSION_DROP_SHARE = 0.25


class RoomSource(Protocol):
    """The parts of :class:`agents.rooms.state.RoomState` the room watch reads."""

    last_event_ts: int
    viewers: dict[str, list[int]]
    viewer_samples: dict[int, int]
    rates: dict[str, Any]     # kind -> SecondBuckets (event-time per-second sums)
    gmv_rate: Any


class _RoomTrack:
    __slots__ = ("baselines", "counts", "detectors", "first_second", "last_viewers", "n",
                 "next_second", "per_viewer", "viewers")

    def __init__(self) -> None:
        self.counts: dict[int, list[int]] = {}   # second -> [joins, leaves] (event time)
        self.viewers: deque[tuple[int, int]] = deque(maxlen=64)   # (second, viewers)
        self.last_viewers = 0
        self.next_second: int | None = None
        self.first_second: int | None = None
        self.detectors: dict[str, Detector] = {}
        self.baselines: dict[str, _Baseline] = {}
        self.per_viewer: dict[str, _PerViewer] = {}
        self.n = 0


class RoomWatch:
    """Per-room, per-second metrics on event time, each scored by its own detector.

    A second is sampled once it is ``lag_s`` behind the room's watermark (late events
    within the lag still count); rates are means over the last ``window_s`` seconds.
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, lag_s: int = 2, warmup: int = DETECTOR_WARMUP,
                 max_rooms: int = 2_000, max_catchup_s: int = 30) -> None:
        self.factory = detector_factory
        self.window_s = window_s
        self.lag_s = lag_s
        self.warmup = warmup
        self.max_rooms = max_rooms
        self.max_catchup_s = max_catchup_s
        self.tracks: OrderedDict[str, _RoomTrack] = OrderedDict()

    def _track(self, room_id: str) -> _RoomTrack | None:
        track = self.tracks.get(room_id)
        if track is None:
            if len(self.tracks) >= self.max_rooms:
                return None  # bounded: rooms beyond the cap are not watched
            track = self.tracks[room_id] = _RoomTrack()
        return track

    def note(self, room_id: str, kind: str, ts: int) -> None:
        """Count a join or leave (the per-second series RoomState does not keep)."""
        if kind not in ("join", "leave"):
            return
        track = self._track(room_id)
        if track is None:
            return
        second = ts // 1000
        row = track.counts.get(second)
        if row is None:
            row = track.counts[second] = [0, 0]
            if len(track.counts) > 4 * self.window_s:
                newest = max(track.counts)
                for old in [s for s in track.counts if s < newest - 2 * self.window_s]:
                    del track.counts[old]
        row[kind == "leave"] += 1

    def forget(self, room_id: str) -> None:
        self.tracks.pop(room_id, None)

    def sample(self, room_id: str, room: RoomSource) -> list[tuple[int, list[Signal]]]:
        """Signals for every second of ``room`` completed since the last call."""
        track = self._track(room_id)
        if track is None or room.last_event_ts <= 0:
            return []
        self.tracks.move_to_end(room_id)
        last = room.last_event_ts // 1000 - self.lag_s
        if track.next_second is None or last - track.next_second > self.max_catchup_s:
            track.next_second = last  # first sight, or a long gap: start from now
        out = []
        while track.next_second <= last:
            second = track.next_second
            out.append((second * 1000, self._signals(track, room, second)))
            track.next_second = second + 1
        return out

    def _signals(self, track: _RoomTrack, room: RoomSource, second: int) -> list[Signal]:
        if track.first_second is None:
            track.first_second = second
        # a room's first seconds have partial windows: rates are over the seconds seen
        w = min(self.window_s, second - track.first_second + 1)
        viewers = room.viewer_samples.get(second, track.last_viewers)
        track.last_viewers = viewers
        track.viewers.append((second, viewers))
        recent = [v for s, v in track.viewers if s >= second - DROP_HORIZON_S]
        in_window = [v for s, v in track.viewers if s > second - w]
        watched = sum(in_window) / len(in_window)  # mean audience over the window
        audience = max(1.0, watched)
        at_start = next((v for s, v in track.viewers if s >= second - w), viewers)
        span = range(second - w + 1, second + 1)
        joins = sum(track.counts.get(s, (0, 0))[0] for s in span)
        leaves = sum(track.counts.get(s, (0, 0))[1] for s in span)
        counts = {m: sum(room.rates[k].buckets.get(s, 0.0) for s in span)
                  for m, k in _RATE_SOURCES.items()}
        counts["orders"] = sum(room.rates["purchase"].buckets.get(s, 0.0) for s in span)
        gmv = sum(room.gmv_rate.buckets.get(s, 0.0) for s in span)
        minute = range(second - 59, second + 1)
        carts_60 = sum(room.rates["add_to_cart"].buckets.get(s, 0.0) for s in minute)
        orders_60 = sum(room.rates["purchase"].buckets.get(s, 0.0) for s in minute)
        values: dict[str, float] = {"viewers": float(viewers), "join_rate": joins / w,
                                    "leave_rate": leaves / w, "gmv_rate": gmv / w}
        values.update({m: counts[m] / w for m in _RATE_SOURCES})
        if carts_60 >= 1:
            values["conversion"] = orders_60 / carts_60
        track.n += 1
        warm = track.n > self.warmup
        # engagement and sales scale with the audience: their usual level is per viewer
        per_viewer = {m: self._per_viewer(track, m) for m in (*_RATE_SOURCES, "orders", "gmv")}
        signals = []
        for metric, value in values.items():
            detector = track.detectors.get(metric)
            if detector is None:
                detector = track.detectors[metric] = self.factory()
            score, low, high = _score(detector, value, float(second))
            if metric in per_viewer or metric == "gmv_rate":
                source = "orders" if metric == "gmv_rate" else metric
                count = counts[source]
                expected = per_viewer[source].expected(audience) * w
                if metric == "gmv_rate":  # many more orders, and much more money
                    material = (count >= FLOOD_MIN_COUNT[metric]
                                and count >= 3 * expected + 5 * math.sqrt(expected + 1)
                                and value >= FLOOD_FACTOR[metric]
                                * per_viewer["gmv"].expected(audience))
                    if watched >= 1:
                        per_viewer["gmv"].update(value, audience, material)
                        per_viewer["orders"].update(count / w, audience, material)
                else:
                    material = (count >= FLOOD_MIN_COUNT[metric]
                                and count >= FLOOD_FACTOR[metric] * expected
                                and count >= expected + 5 * math.sqrt(expected + 1))
                    if watched >= 1:
                        per_viewer[metric].update(value, audience, material)
                score = max(score, count_surprise(count, expected))
                # the usual level needs history of its own; sales start after clicks
                material = (material and per_viewer[source].rate.n >= MATURE_SAMPLES
                            and second - track.first_second >= SETTLE_S.get(metric, 0))
            else:
                baseline = self._baseline(track, metric)
                usual = baseline.mean
                if metric == "viewers":
                    peak = max(recent)
                    material = peak - viewers >= max(VIEWER_DROP_MIN, VIEWER_DROP_SHARE * peak)
                elif metric == "leave_rate":
                    material = leaves >= max(FLOOD_MIN_COUNT[metric], LEAVE_SHARE * at_start)
                    score = max(score, count_surprise(leaves, usual * w))
                elif metric == "join_rate":
                    # a room's opening is everyone joining at once: floods count once settled
                    material = (second - track.first_second >= SETTLE_S["join_rate"]
                                and joins >= max(FLOOD_MIN_COUNT[metric],
                                                 JOIN_FLOOD_SHARE * at_start,
                                                 FLOOD_FACTOR["join_rate"] * usual * w))
                    score = max(score, count_surprise(joins, usual * w))
                else:  # conversion
                    material = (carts_60 >= FLOOD_MIN_COUNT["cart_rate"] and usual >= 0.1
                                and value <= CONVERSION_DROP_SHARE * usual)
                baseline.update(value, material)
            signals.append(Signal(metric, value, low, high, score if material and warm else 0.0))
        return signals

    @staticmethod
    def _baseline(track: _RoomTrack, metric: str) -> _Baseline:
        baseline = track.baselines.get(metric)
        if baseline is None:
            baseline = track.baselines[metric] = _Baseline()
        return baseline

    @staticmethod
    def _per_viewer(track: _RoomTrack, metric: str) -> _PerViewer:
        usual = track.per_viewer.get(metric)
        if usual is None:
            usual = track.per_viewer[metric] = _PerViewer()
        return usual


# ---------------------------------------------------------------------- users
CLICK_KINDS = frozenset(("view", "click", "search", "add_to_cart", "purchase", "product_click"))
LIVE_ACTIONS = frozenset(("comment", "gift", "share", "follow", "product_click", "add_to_cart",
                          "purchase"))
HUMAN_MIN_MS = 100          # faster than this after seeing an item / switching room: a script
MIN_FLOOD_RATE = 8.0        # clicks/s sustained over the window before a rate can matter
MIN_INTERVALS = 10          # intervals before the regularity can matter
REGULAR_MIN_RATE = 1.0      # ... and at least this many clicks/s
IMPOSSIBLE_MIN = 8          # impossible sequences in 60 s before they matter
USER_ACTIVE_S = 5           # a user silent this long scores 0 (the flood stopped)


def _append_capped(values: list[int], value: int, cap: int) -> None:
    values.append(value)
    if len(values) > cap:
        del values[0]


class _UserTrack:
    __slots__ = ("impossible", "items", "last_ts", "next_second", "room", "room_ts", "times")

    def __init__(self) -> None:
        # plain lists and dict, trimmed by hand: most users have a handful of events, and
        # deques / OrderedDicts cost about a kilobyte each even when nearly empty
        self.times = array("q")                            # click-like event times (<= 160)
        self.impossible: list[int] = []                    # (<= 32)
        self.items: dict[str, int] = {}                    # item -> first seen (recent 16)
        self.room: str | None = None
        self.room_ts = 0
        self.last_ts = 0
        self.next_second: int | None = None              # first second not yet sampled


class UserWatch:
    """Bounded per-user click statistics; see the module docstring.

    ``note`` is O(1) per event; ``sample`` scores the users active since the last call
    (plus those with a streak or an open incident) at the watch's watermark minus ``lag_s``.
    The population detector learns at most ``population_sample`` per-user rates per call.
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, lag_s: int = 2, max_users: int = 100_000,
                 population_sample: int = 200) -> None:
        self.window_ms = window_s * 1000
        self.lag_ms = lag_s * 1000
        self.max_users = max_users
        self.population_sample = population_sample
        self.population = detector_factory()
        self.usual = _Baseline(alpha=0.01)  # mean per-user rate of active users
        self.users: OrderedDict[str, _UserTrack] = OrderedDict()
        self.dirty: set[str] = set()
        self.watermark = 0

    def note(self, user_id: str, kind: str, ts: int, *, item_id: str | None = None,
             room_id: str | None = None, live: bool = False) -> None:
        track = self.users.get(user_id)
        if track is None:
            track = self.users[user_id] = _UserTrack()
            if len(self.users) > self.max_users:
                self.users.popitem(last=False)
        else:
            self.users.move_to_end(user_id)
        self.dirty.add(user_id)
        if ts > self.watermark:
            self.watermark = ts
        if ts > track.last_ts:
            track.last_ts = ts
        if kind in CLICK_KINDS:
            track.times.append(ts)
            if len(track.times) > 160:
                del track.times[:-128]
        if item_id is not None:
            seen = track.items.get(item_id)
            if kind in ("add_to_cart", "purchase"):
                if seen is not None and 0 <= ts - seen < HUMAN_MIN_MS:
                    _append_capped(track.impossible, ts, 32)
            elif seen is None:
                track.items[item_id] = ts
                if len(track.items) > 16:
                    del track.items[next(iter(track.items))]
        if live and room_id is not None and kind in LIVE_ACTIONS:
            if (track.room is not None and track.room != room_id
                    and abs(ts - track.room_ts) < HUMAN_MIN_MS):
                _append_capped(track.impossible, ts, 32)
            track.room, track.room_ts = room_id, ts

    def sample(self, also: Iterable[str] = ()) -> list[tuple[str, int, list[Signal]]]:
        """(user, time, signals) per event-time second completed since the last call, for
        the users with events in it and those in ``also`` (a streak or an open incident).

        Each user is sampled on its own seconds (like rooms), so two anomalous samples
        mean two seconds of that user's traffic, however unevenly partitions are consumed.
        Seconds are complete ``lag_s`` behind the watermark (newest event of any user).
        """
        now = self.watermark - self.lag_ms
        if now <= 0:
            return []
        hot = set(also)
        pending, self.dirty = self.dirty, set()
        done = now // 1000                     # seconds before this one are complete
        rates: dict[str, float] = {}
        out = []
        for user_id in sorted(pending | hot):
            track = self.users.get(user_id)
            if track is None:
                out.append((user_id, now, []))   # evicted: its incident goes quiet
                continue
            first = track.next_second
            if first is None:
                first = min(track.times[0] if track.times else track.last_ts,
                            track.last_ts) // 1000
            first = max(first, done - self.window_ms // 1000)  # bounded catch-up
            if track.last_ts // 1000 >= done:
                self.dirty.add(user_id)          # events within the lag: sample them later
            track.next_second = max(first, done)
            watched = user_id in hot or (len(track.times) > MIN_INTERVALS
                                         or len(track.impossible) >= IMPOSSIBLE_MIN)
            for second in range(first, done):
                at = second * 1000 + 999
                if not watched:
                    break                        # nothing this user did can matter yet
                rate = sum(1 for t in track.times
                           if at - self.window_ms < t <= at) * 1000 / self.window_ms
                out.append((user_id, at, self._signals(track, at, rate)))
            if track.times:
                at = min(now, track.last_ts)
                rates[user_id] = sum(1 for t in track.times
                                     if at - self.window_ms < t <= at) * 1000 / self.window_ms
        # the population baseline learns after scoring (prequential), from a bounded sample
        ids = sorted(rates)
        for user_id in ids[:: max(1, len(ids) // self.population_sample)][
                : self.population_sample]:
            if rates[user_id] > 0:
                self.population.learn_one({"value": rates[user_id]})
                self.usual.update(rates[user_id], rates[user_id] >= MIN_FLOOD_RATE)
        return out

    def _signals(self, track: _UserTrack, now: int, rate: float) -> list[Signal]:
        if now - track.last_ts > USER_ACTIVE_S * 1000:
            return []                            # silent since: the flood stopped
        signals = []
        if rate >= MIN_FLOOD_RATE:
            score = self.population.score_one({"value": rate})
            low, high = self.population.expected_range()
            window_s = self.window_ms / 1000
            score = max(score, count_surprise(rate * window_s, self.usual.mean * window_s))
            signals.append(Signal("click_rate", rate, low, high, score))
        recent = [t for t in track.times if now - 3 * self.window_ms < t <= now][-33:]
        if len(recent) > MIN_INTERVALS and rate >= REGULAR_MIN_RATE:
            gaps = [b - a for a, b in itertools.pairwise(recent)]
            mean = sum(gaps) / len(gaps)
            if mean > 0:
                cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
                # humans click in bursts (exponential gaps: CV about 1); scripts tick
                signals.append(Signal("click_interval_cv", cv, 0.5, 1.5,
                                      max(0.0, 1.0 - cv)))
        impossible = sum(1 for t in track.impossible if now - 60_000 < t <= now)
        if impossible >= IMPOSSIBLE_MIN:
            signals.append(Signal("impossible_sequences", float(impossible), 0.0, 1.0,
                                  min(1.0, 0.9 + 0.02 * (impossible - IMPOSSIBLE_MIN))))
        return signals


# ---------------------------------------------------------------------- system
SYSTEM_METRICS = ("input_lag_ms", "dead_letter_rate", "output_latency_ms")
LAG_MIN_MS = 1_000          # input lag must exceed 1 s and 3x its usual level
LATENCY_MIN_MS = 1_000      # output latency must exceed 1 s and 2x its usual level
DEAD_SHARE = 0.05           # dead letters >= 5 % of input over the window
DEAD_MIN = 20


class SystemWatch:
    """The worker's own numbers once per second (wall clock), one detector each.

    Input lag is fed per event (:meth:`note_lag`); dead letters, inputs and output latency
    are cumulative counters read at each :meth:`sample` (deltas over ``window_s``).
    """

    def __init__(self, detector_factory: DetectorFactory = default_detector, *,
                 window_s: int = 10, warmup: int = DETECTOR_WARMUP) -> None:
        self.window_s = window_s
        self.warmup = warmup
        self.detectors = {m: detector_factory() for m in SYSTEM_METRICS}
        self.baselines = {m: _Baseline() for m in SYSTEM_METRICS}
        self.counters: deque[tuple[float, float, float, float]] = deque(maxlen=window_s + 1)
        self.lag_sum = 0.0
        self.lag_n = 0
        self.n = 0

    def note_lag(self, lag_ms: float) -> None:
        self.lag_sum += lag_ms
        self.lag_n += 1

    def sample(self, now_ms: int, *, dead_letters: float = 0.0, events_in: float = 0.0,
               latency_sum_s: float = 0.0, latency_count: float = 0.0) -> list[Signal]:
        """Signals from the lag noted since the last call and the cumulative counters."""
        self.counters.append((dead_letters, events_in, latency_sum_s, latency_count))
        first = self.counters[0]
        span = max(1, len(self.counters) - 1)
        dead = dead_letters - first[0]
        inputs = events_in - first[1]
        latency_n = latency_count - first[3]
        values: dict[str, float] = {"dead_letter_rate": dead / span}
        if self.lag_n:
            values["input_lag_ms"] = self.lag_sum / self.lag_n
        if latency_n > 0:
            values["output_latency_ms"] = 1000 * (latency_sum_s - first[2]) / latency_n
        self.lag_sum, self.lag_n = 0.0, 0
        self.n += 1
        signals = []
        for metric, value in values.items():
            score, low, high = _score(self.detectors[metric], value, now_ms / 1000)
            baseline = self.baselines[metric]
            usual = baseline.mean
            if metric == "input_lag_ms":
                material = value >= max(LAG_MIN_MS, 3 * usual)
            elif metric == "output_latency_ms":
                material = value >= max(LATENCY_MIN_MS, 2 * usual)
            else:
                material = dead >= DEAD_MIN and dead >= DEAD_SHARE * (dead + inputs)
            baseline.update(value, material)
            effective = score if material and self.n > self.warmup else 0.0
            signals.append(Signal(metric, value, low, high, effective))
        return signals


# ---------------------------------------------------------------------- all together
class AnomalyMonitor:
    """The three watches and one tracker: what one worker runs once per second.

    >>> monitor = AnomalyMonitor(system_id="w1")
    >>> monitor.tick({}, now_ms=1_000)
    []
    """

    def __init__(self, *, system_id: str = "engine",
                 detector_factory: DetectorFactory = default_detector,
                 tracker: IncidentTracker | None = None, resolved_alert_s: float = 120.0,
                 clock: Callable[[], int] = wall_ms, max_users: int = 100_000,
                 max_rooms: int = 2_000) -> None:
        self.system_id = system_id
        self.clock = clock
        self.tracker = tracker or IncidentTracker(clock=clock)
        self.rooms = RoomWatch(detector_factory, max_rooms=max_rooms)
        self.users = UserWatch(detector_factory, max_users=max_users)
        self.system = SystemWatch(detector_factory)
        self.resolved_alert_ms = int(resolved_alert_s * 1000)
        self.room_clock: dict[str, int] = {}  # room -> last sampled second (ms), for alerts

    # ------------------------------------------------------------------ per event
    def note_live(self, event: Any) -> None:
        """A validated live event in the room pipeline (joins, leaves, input lag)."""
        self.rooms.note(event.room_id, event.type, event.ts)
        self.system.note_lag(self.clock() - event.ts)

    def note_user(self, record: Any, *, live: bool) -> None:
        """A live or click event in the user pipeline."""
        self.users.note(record.user_id, record.type, record.ts,
                        item_id=getattr(record, "item_id", None),
                        room_id=getattr(record, "room_id", None), live=live)
        if not live:
            self.system.note_lag(self.clock() - record.ts)

    def forget_user(self, user_id: str) -> int:
        """Erase a user (``livepulse forget``): per-user click statistics and incidents."""
        self.users.users.pop(user_id, None)
        self.users.dirty.discard(user_id)
        return self.tracker.forget("user", user_id)

    def holds_user(self, user_id: str) -> bool:
        """True while any per-user state or incident of this worker names ``user_id``."""
        tracker = self.tracker
        incidents = [*tracker.resolved, *(s.incident for s in tracker.scopes.values()
                                          if s.incident is not None)]
        return (user_id in self.users.users or ("user", user_id) in tracker.scopes
                or any(i.scope_id == user_id or user_id in i.members for i in incidents))

    # ------------------------------------------------------------------ per second
    def tick(self, rooms: Mapping[str, RoomSource], *, now_ms: int | None = None,
             system: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
        """Sample the rooms (this worker's live rooms), the users and the system; return
        the incident records to emit. Rooms no longer given are forgotten (resolved)."""
        now = self.clock() if now_ms is None else now_ms
        records: list[dict[str, Any]] = []
        tracker = self.tracker
        for room_id in [r for r in self.rooms.tracks if r not in rooms]:
            self.rooms.forget(room_id)
            self.room_clock.pop(room_id, None)
            records += tracker.close("room", room_id, now, "no longer watched here (room "
                                     "idle or moved to another worker)",
                                     "本节点不再监控（直播间空闲或已迁移）")
        for room_id, room in rooms.items():
            for ts, signals in self.rooms.sample(room_id, room):
                self.room_clock[room_id] = ts
                records += tracker.observe("room", room_id, signals, ts)
        for user_id, ts, signals in self.users.sample(tracker.active("user")):
            records += tracker.observe("user", user_id, signals, ts)
        if system is not None:
            signals = self.system.sample(now, **system)
            records += tracker.observe("system", self.system_id, signals, now)
        return records

    def room_alerts(self, room_id: str) -> list[dict[str, Any]]:
        """Open and recently resolved incidents of a room (its ``alerts`` insight group)."""
        clock = self.room_clock.get(room_id)
        if clock is None:
            return []
        return self.tracker.alerts("room", room_id, clock - self.resolved_alert_ms)

    def snapshot(self, scope: str | None = None, limit: int = 100) -> dict[str, Any]:
        """Open and recently resolved incidents (``GET /api/anomalies``)."""
        tracker = self.tracker
        open_now = [_alert(i, "open") for i in tracker.open_incidents(scope)]
        resolved = [_alert(i, "resolved") for i in reversed(tracker.resolved)
                    if scope is None or i.scope == scope][:limit]
        opened: dict[str, int] = {}
        for (sc, _severity), n in tracker.opened_total.items():
            opened[sc] = opened.get(sc, 0) + n
        return {"open": open_now[:limit], "resolved": resolved,
                "open_by_scope": {s: tracker.n_open(s) for s in SCOPES},
                "opened_by_scope": opened}
