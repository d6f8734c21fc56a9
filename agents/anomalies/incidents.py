"""Anomaly incidents: per-sample scores in, deduplicated ``anomaly.v1`` records out.

Pure Python (no Faust). :class:`IncidentTracker` turns per-sample scores (the
:class:`Signal` lists of :mod:`agents.anomalies.watches`) into incidents: one open incident
per scope at a time, opened once samples scoring at least ``open_score`` have lasted
``confirm_s`` seconds (each sample stands for the ``sample_s`` after it), resolved when
every score stayed below ``close_score`` for ``quiet_s``
(hysteresis). Each incident yields exactly one ``open`` and one ``resolved`` record
(``anomaly.v1``) with the same ``anomaly_id``. User incidents **coalesce**: a user who
would open one while a user incident of the same primary metric is open joins it (a bot
flood of 50 accounts is one alert, named after the first bot, that resolves once no member
has been anomalous for ``quiet_s``). Severities and the English / Chinese explanations of
the records are here too.

>>> tracker = IncidentTracker(confirm_s=2.0, quiet_s=2.0)
>>> high = [Signal("leave_rate", 20.0, 0.1, 1.5, 0.99)]
>>> [r["status"] for t in range(4) for r in tracker.observe("room", "r1", high, t * 1000)]
['open']
>>> [r["status"] for t in range(4, 8) for r in tracker.observe("room", "r1", [], t * 1000)]
['resolved']
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.contracts import ANOMALY, Anomaly, as_dict, check_contract
from streams.ingest import now_ms as wall_ms

SCOPES = ("room", "user", "system")
SEVERITIES = ("info", "warning", "critical")


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
    "rate_limited": ("events over the rate limit (quarantined)", "超出速率限制的事件（已隔离）",
                     "/s", "/秒", "rate"),
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
    (0 when the deviation is not material, see :mod:`agents.anomalies.watches`)."""

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
    streak_start: int | None = None  # first sample of the anomalous streak in progress
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
    confirm_s, sample_s
        An incident opens once consecutive anomalous samples span ``confirm_s`` seconds,
        a sample standing for the ``sample_s`` seconds after it (the watchers sample once a
        second: two samples; a source sampled every 5 minutes: its first anomalous sample).
        Time, not a count, so a one-second blip opens nothing at any sampling rate.
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
                 confirm_s: float = 2.0, sample_s: float = 1.0, quiet_s: float = 5.0,
                 critical_after_s: float = 30.0,
                 max_scopes: int = 10_000, max_resolved: int = 200,
                 coalesce: Iterable[str] = ("user",),
                 clock: Callable[[], int] = wall_ms) -> None:
        if not 0.0 <= close_score <= open_score <= 1.0:
            raise ValueError("need 0 <= close_score <= open_score <= 1")
        self.open_score = open_score
        self.close_score = close_score
        self.confirm_ms = int(confirm_s * 1000)
        self.sample_ms = int(sample_s * 1000)
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
                if state.streak_start is None:
                    state.streak_start = ts
                if ts - state.streak_start + self.sample_ms >= self.confirm_ms:
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
        state.streak_start = None
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
        first_seen = state.streak_start if state.streak_start is not None else ts
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
        state.streak_start = None
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
                other.incident, other.streak_start, other.quiet_since = None, None, None
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
            out.append(alert_record(state.incident, "open"))  # a member sees its group's incident
        for incident in reversed(self.resolved):
            if (incident.scope == scope and incident.scope_id == scope_id
                    and (incident.resolved_at or 0) >= since):
                out.append(alert_record(incident, "resolved"))
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


def alert_record(incident: Incident, status: str) -> dict[str, Any]:
    """The ``open`` or ``resolved`` record of an incident (``anomaly.v1`` plus ``en``/``zh``)."""
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
