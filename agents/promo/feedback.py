"""Ad-system feedback (``ad-feedback.v1``) and campaign reports.

Ad systems answer promo triggers with feedback records on ``<prefix>.ad-feedback`` (key
user_id): ``delivered``, ``shown``, ``clicked``, ``dismissed``, ``converted`` (order id,
value, currency), each naming the trigger's idempotency key, campaign, variant (default
``"default"``) and channel.

* :class:`FeedbackHandler` (the worker's batch handler of the topic, consumer group): each
  record validated (bad ones dead-lettered with their reason, counted), deduplicated by
  (idempotency key, type), counted in ``livepulse_ad_feedback_total`` and
  ``livepulse_ad_revenue_total`` (this worker's partitions: Prometheus sums the workers).
* :class:`CampaignReports` folds the whole topic (every worker reads every partition with
  the campaigns/attribution follower, ``agents.promo.triggers``), so any worker's
  ``GET /api/campaigns/{id}/report`` covers the deployment: per campaign x variant x
  channel counts and rates beside the experiment figures of the attribution records
  (:class:`agents.promo.campaigns.CampaignStats`: sent, holdout, uplift with its 95 % CI).

Labels stay bounded: campaigns come from the campaign book (at most ``MAX_CAMPAIGNS``;
feedback naming another campaign is counted under ``_other`` and not reported), and each
campaign keeps the first ``MAX_VARIANTS`` variants and ``MAX_CHANNELS`` channels it sees by
name; later ones are folded into ``_other``.

>>> reports = CampaignReports()
>>> base = {"idempotency_key": "k1", "campaign_id": "c", "user_id": "u", "channel": "push",
...         "ts": 1}
>>> [reports.add_raw({**base, "type": t}) for t in ("delivered", "shown", "clicked", "shown")]
[True, True, True, False]
>>> _ = reports.add_raw({**base, "type": "converted", "order_id": "o1", "value": 30.0,
...                      "currency": "CNY"})
>>> row = reports.report("c", {"sent": 1, "cost": 0.5}, 0.5)["rows"][0]
>>> row["variant"], row["channel"], row["ctr"], row["cvr"], row["revenue"], row["roas"]
('default', 'push', 1.0, 1.0, 30.0, 60.0)
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.promo.campaigns import wilson_interval
from agents.rooms.sketches import HyperLogLog
from streams.app import subscribe
from streams.contracts import AD_FEEDBACK, AdFeedback, ContractError, validate
from streams.ingest import Rejection, Validator, now_ms

if TYPE_CHECKING:
    from agents.engine import Engine

KINDS = ("delivered", "shown", "clicked", "dismissed", "converted")
# distinct users per row and stage: reach (shown), clickers (clicked), buyers (converted)
PARTICIPATION = {"shown": "users_shown", "clicked": "users_clicked",
                 "converted": "users_converted"}
EXACT_USERS = 10_000   # per row and stage: exact below, HyperLogLog above
EXACT_BUDGET = 200_000  # exact user hashes held by all rows of a report (~30 MB)
_SALT = os.urandom(16)
MAX_VARIANTS = 8      # per campaign: label values of livepulse_ad_feedback_total
MAX_CHANNELS = 8      # per campaign
OTHER = "_other"
DEDUPE_KEYS = 200_000  # (idempotency key, type) pairs remembered (~15 MB)


class Deduper:
    """Remembers the last ``capacity`` keys (64-bit hashes, first in first out).

    >>> d = Deduper(2)
    >>> [d.first(k) for k in ("a", "b", "a", "c", "a")]   # "a" forgotten once "c" came
    [True, True, False, True, True]
    """

    def __init__(self, capacity: int = DEDUPE_KEYS) -> None:
        self.capacity = max(1, capacity)
        self._seen: set[int] = set()
        self._order: deque[int] = deque()

    def first(self, key: str) -> bool:
        """True the first time ``key`` is seen (within the memory), else False."""
        h = hash(key)
        if h in self._seen:
            return False
        self._seen.add(h)
        self._order.append(h)
        if len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())
        return True

    def __len__(self) -> int:
        return len(self._seen)


def dedupe_key(record: AdFeedback) -> str:
    return f"{record.idempotency_key}\x1f{record.type}"


def user_hash(user_id: str) -> int:
    """A salted 64-bit hash, not the id: nothing held names a user outside this process."""
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8,
                                          key=_SALT).digest(), "big")


class ExactBudget:
    """How many user hashes all exact :class:`DistinctUsers` of a report may still hold."""

    __slots__ = ("left",)

    def __init__(self, size: int = EXACT_BUDGET) -> None:
        self.left = size


class DistinctUsers:
    """Distinct users of one report row and stage: exact (a set of salted 64-bit hashes) up
    to ``exact_up_to`` users while the shared ``budget`` lasts, then a HyperLogLog (2 KiB,
    ~2.3 % standard error) of the same hashes.

    >>> d = DistinctUsers(exact_up_to=3)
    >>> for u in ("a", "b", "a", "c"):
    ...     d.add(u)
    >>> d.count(), d.exact
    (3, True)
    >>> for i in range(2000):
    ...     d.add(f"u{i}")
    >>> d.add("a")   # seen while exact: the same hash in the sketch, not counted again
    >>> d.exact, abs(d.count() - 2003) < 100
    (False, True)
    """

    __slots__ = ("_budget", "_counted", "_hll", "_seen", "exact_up_to")

    def __init__(self, exact_up_to: int = EXACT_USERS,
                 budget: ExactBudget | None = None) -> None:
        self.exact_up_to = exact_up_to
        self._budget = budget or ExactBudget()
        self._seen: set[int] | None = set()
        self._hll: HyperLogLog | None = None
        self._counted: int | None = None  # the sketch's estimate, until it changes

    @property
    def exact(self) -> bool:
        return self._hll is None

    def add(self, user_id: str) -> None:
        self.add_hash(user_hash(user_id))

    def add_hash(self, h: int) -> None:
        """Add a user by :func:`user_hash` (computed once for the rows a record counts in)."""
        seen = self._seen
        if seen is not None:
            if h in seen:
                return
            if len(seen) < self.exact_up_to and self._budget.left > 0:
                seen.add(h)
                self._budget.left -= 1
                return
            self._hll = HyperLogLog(p=11)
            for old in seen:
                self._hll.add(str(old))
            self._budget.left += len(seen)
            self._seen = None
        assert self._hll is not None
        self._hll.add(str(h))
        self._counted = None

    def count(self) -> int:
        if self._hll is None:
            assert self._seen is not None
            return len(self._seen)
        if self._counted is None:
            self._counted = hll_estimate(self._hll.registers)
        return self._counted


def hll_estimate(registers: bytearray) -> int:
    """:meth:`agents.rooms.sketches.HyperLogLog.count`, vectorised (a 2 KiB sketch: ~20 µs
    instead of ~0.4 ms; the campaign gauges count every variant's sketches every 5 s).

    >>> hll = HyperLogLog(p=11)
    >>> for i in range(5000):
    ...     hll.add(str(i))
    >>> hll_estimate(hll.registers) == hll.count()
    True
    """
    regs = np.frombuffer(bytes(registers), dtype=np.uint8)
    m = len(regs)
    alpha = 0.7213 / (1 + 1.079 / m)
    estimate = alpha * m * m / float(np.ldexp(1.0, -regs.astype(np.int32)).sum())
    zeros = int(m - np.count_nonzero(regs))
    if estimate <= 2.5 * m and zeros:
        estimate = m * math.log(m / zeros)
    return round(estimate)


class LabelCap:
    """Per campaign, the first ``max_variants`` variants and ``max_channels`` channels keep
    their names; later ones become ``_other``.

    >>> cap = LabelCap(max_variants=1, max_channels=2)
    >>> cap("c", "a", "push"), cap("c", "b", "sms"), cap("c", "a", "email")
    (('a', 'push'), ('_other', 'sms'), ('a', '_other'))
    """

    def __init__(self, max_variants: int = MAX_VARIANTS, max_channels: int = MAX_CHANNELS):
        self.max_variants, self.max_channels = max_variants, max_channels
        self._variants: dict[str, set[str]] = {}
        self._channels: dict[str, set[str]] = {}

    @staticmethod
    def _capped(known: dict[str, set[str]], cid: str, name: str, limit: int) -> str:
        names = known.setdefault(cid, set())
        if name in names:
            return name
        if len(names) < limit:
            names.add(name)
            return name
        return OTHER

    def variant(self, cid: str, name: str) -> str:
        return self._capped(self._variants, cid, name, self.max_variants)

    def __call__(self, cid: str, variant: str, channel: str) -> tuple[str, str]:
        return (self._capped(self._variants, cid, variant, self.max_variants),
                self._capped(self._channels, cid, channel, self.max_channels))


def _ratio(num: float, den: float) -> float | None:
    return round(num / den, 6) if den else None


def _ci(successes: int, n: int) -> list[float] | None:
    if n <= 0:
        return None
    low, high = wilson_interval(min(successes, n), n)
    return [round(low, 6), round(high, 6)]


def figures(counts: Mapping[str, float], cost: float) -> dict[str, Any]:
    """Counts, rates (with Wilson 95 % intervals), revenue, cost and ROAS of one row.

    >>> f = figures({"delivered": 100, "shown": 80, "clicked": 4, "dismissed": 10,
    ...              "converted": 1, "revenue": 25.0}, cost=10.0)
    >>> f["ctr"], f["cvr"], f["roas"], f["cost_per_conversion"]
    (0.05, 0.25, 2.5, 10.0)
    """
    shown, clicked = int(counts.get("shown", 0)), int(counts.get("clicked", 0))
    converted, revenue = int(counts.get("converted", 0)), float(counts.get("revenue", 0.0))
    out: dict[str, Any] = {kind: int(counts.get(kind, 0)) for kind in KINDS}
    for name in PARTICIPATION.values():
        if name in counts:
            out[name] = int(counts[name])
    if "users_shown" in out:
        out["exposures_per_user"] = _ratio(shown, out["users_shown"])
    out.update({
        "ctr": _ratio(clicked, shown), "ctr_ci95": _ci(clicked, shown),
        "cvr": _ratio(converted, clicked), "cvr_ci95": _ci(converted, clicked),
        "revenue": round(revenue, 2), "cost": round(cost, 2),
        "roas": _ratio(revenue, cost),
        "cost_per_conversion": round(cost / converted, 2) if converted and cost else None,
    })
    return out


class CampaignReports:
    """Feedback folded per campaign x (variant, channel), deduplicated by (idempotency key,
    type) over the last ``dedupe`` pairs. ``known(campaign_id)`` says whether a campaign
    may be reported (default: every one; the worker passes its campaign book)."""

    def __init__(self, dedupe: int = DEDUPE_KEYS,
                 known: Callable[[str], bool] | None = None,
                 cap: LabelCap | None = None) -> None:
        self.rows: dict[str, dict[tuple[str, str], dict[str, float]]] = {}
        # campaign -> (variant, channel) -> stage -> distinct users (see PARTICIPATION)
        self.users: dict[str, dict[tuple[str, str], dict[str, DistinctUsers]]] = {}
        self.variant_users: dict[str, dict[str, dict[str, DistinctUsers]]] = {}
        self.campaign_users: dict[str, dict[str, dict[str, DistinctUsers]]] = {}
        self.exact_budget = ExactBudget()
        self.sent: dict[str, dict[str, int]] = {}   # campaign -> variant -> triggers sent
        self.deduper = Deduper(dedupe)
        self.sent_deduper = Deduper(dedupe)
        # called with the campaign id after each record folded (e.g. Bandits.on_feedback)
        self.listeners: list[Callable[[str], None]] = []
        self.known = known or (lambda _: True)
        self.cap = cap or LabelCap()
        self.duplicates = 0
        self.unknown = 0      # records of campaigns not in the book
        self.invalid = 0      # records the follower skipped (the handler dead-letters them)

    def add(self, record: AdFeedback) -> bool:
        """Fold one validated record; False if it was seen before or is not reported."""
        if not self.deduper.first(dedupe_key(record)):
            self.duplicates += 1
            return False
        cid = record.campaign_id
        if not self.known(cid):
            self.unknown += 1
            return False
        labels = self.cap(cid, record.variant, record.channel)
        row = self.rows.setdefault(cid, {}).get(labels)
        if row is None:
            row = self.rows[cid][labels] = dict.fromkeys((*KINDS, "revenue"), 0.0)
        row[record.type] += 1
        if record.type == "converted":
            row["revenue"] += record.value or 0.0
        if record.type in PARTICIPATION:
            h = user_hash(record.user_id)
            for holder, key in ((self.users.setdefault(cid, {}), labels),
                                (self.variant_users.setdefault(cid, {}), labels[0]),
                                (self.campaign_users.setdefault(cid, {}), "")):
                stages = holder.get(key)
                if stages is None:
                    stages = holder[key] = {}
                seen = stages.get(record.type)
                if seen is None:
                    seen = stages[record.type] = DistinctUsers(budget=self.exact_budget)
                seen.add_hash(h)
        for listener in self.listeners:
            listener(cid)
        return True

    def add_trigger(self, trigger: Any) -> bool:
        """Fold one promo trigger (as read from the triggers topic): ``sent`` per variant,
        deduplicated by idempotency key. False if seen before or unusable."""
        if not isinstance(trigger, dict):
            return False
        key, cid = trigger.get("idempotency_key"), trigger.get("campaign_id")
        variant = trigger.get("variant") or "default"
        if not isinstance(key, str) or not isinstance(cid, str) or not isinstance(
                variant, str) or not self.known(cid):
            return False
        if not self.sent_deduper.first(key):
            return False
        name = self.cap.variant(cid, variant)
        per = self.sent.setdefault(cid, {})
        per[name] = per.get(name, 0) + 1
        return True

    def variant_counts(self, campaign_id: str) -> dict[str, dict[str, float]]:
        """Per variant (all channels): sent and the feedback counts.

        >>> r = CampaignReports()
        >>> _ = r.add_trigger({"idempotency_key": "k", "campaign_id": "c", "variant": "A"})
        >>> _ = r.add_raw({"type": "shown", "idempotency_key": "k", "campaign_id": "c",
        ...                "user_id": "u", "channel": "push", "ts": 1, "variant": "A"})
        >>> r.variant_counts("c")["A"]["sent"], r.variant_counts("c")["A"]["shown"]
        (1, 1.0)
        """
        out: dict[str, dict[str, float]] = {}
        for (variant, _), counts in self.rows.get(campaign_id, {}).items():
            into = out.setdefault(variant, dict.fromkeys((*KINDS, "revenue"), 0.0))
            for name, n in counts.items():
                into[name] += n
        for variant, n in self.sent.get(campaign_id, {}).items():
            out.setdefault(variant, dict.fromkeys((*KINDS, "revenue"), 0.0))["sent"] = n
        for counts in out.values():
            counts.setdefault("sent", 0)
        return out

    def participation(self, campaign_id: str, variant: str | None = None,
                      channel: str | None = None) -> dict[str, int]:
        """Distinct users shown / clicking / converting of one variant (all channels when
        ``channel`` is None; the whole campaign when ``variant`` is None too), keyed as in
        :data:`PARTICIPATION`."""
        if variant is None:
            stages = self.campaign_users.get(campaign_id, {}).get("", {})
        elif channel is None:
            stages = self.variant_users.get(campaign_id, {}).get(variant, {})
        else:
            stages = self.users.get(campaign_id, {}).get((variant, channel), {})
        return {name: stages[stage].count() if stage in stages else 0
                for stage, name in PARTICIPATION.items()}

    def add_message(self, validator: Validator, value: bytes | None, key: bytes | None,
                    at_ms: int) -> bool:
        """Fold one record as read from the topic, validated as the handler validates it,
        time bounds taken at ``at_ms`` (its broker timestamp: the same decision on every
        re-read after a restart)."""
        found = validator.decode(value, at_ms, key)
        if isinstance(found, Rejection):
            self.invalid += 1
            return False
        return self.add(found)

    def add_raw(self, obj: Any) -> bool:
        """Validate a decoded record, then :meth:`add`; an invalid one is only counted."""
        try:
            record = validate(AD_FEEDBACK, obj)
        except ContractError:
            self.invalid += 1
            return False
        return self.add(record)

    def report(self, campaign_id: str, experiment: Mapping[str, Any],
               cost_per_trigger: float,
               bandit: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """The campaign's report: ``experiment`` is its ``CampaignStats.report`` (sent,
        holdout, conversions, uplift with its 95 % CI, cost of the triggers sent);
        ``bandit``: per variant its current weight and probability of being the best
        (:meth:`agents.promo.bandit.Bandits.describe`), joined to the ``variants`` rows."""
        rows = self.rows.get(campaign_id, {})
        total = dict.fromkeys((*KINDS, "revenue"), 0.0)
        listed = []
        for (variant, channel), counts in sorted(rows.items()):
            for name, n in counts.items():
                total[name] += n
            listed.append({"variant": variant, "channel": channel, **figures(
                {**counts, **self.participation(campaign_id, variant, channel)},
                cost_per_trigger * counts["delivered"])})
        totals = {"sent": int(experiment.get("sent") or 0),
                  **figures({**total, **self.participation(campaign_id)},
                            float(experiment.get("cost") or 0.0))}
        variants = []
        for variant, counts in sorted(self.variant_counts(campaign_id).items()):
            shown = int(counts["shown"])
            row = {"variant": variant, "sent": int(counts["sent"]),
                   **figures({**counts, **self.participation(campaign_id, variant)},
                             cost_per_trigger * counts["sent"]),
                   "conversions_per_shown": _ratio(counts["converted"], shown),
                   "conversions_per_shown_ci95": _ci(int(counts["converted"]), shown)}
            row.update((bandit or {}).get(variant, {}))
            variants.append(row)
        return {"campaign_id": campaign_id, "cost_per_trigger": cost_per_trigger,
                "totals": totals, "rows": listed, "variants": variants,
                "experiment": dict(experiment),
                "label_caps": {"variants": self.cap.max_variants,
                               "channels": self.cap.max_channels}}


class FeedbackHandler:
    """``handle_batch`` of ``<prefix>.ad-feedback``: validate (dead-letter the bad),
    deduplicate, count per campaign x variant x channel x type."""

    name = "ad-feedback"

    def __init__(self, engine: Engine, known: Callable[[str], bool] | None = None,
                 dedupe: int = DEDUPE_KEYS) -> None:
        self.engine = engine
        self.validator = engine.validator(AD_FEEDBACK)
        self.deduper = Deduper(dedupe)
        self.known = known or (lambda _: True)
        self.cap = LabelCap()
        self.accepted = 0
        self.duplicates = 0

    async def handle_batch(self, tp: Any, records: list[Any]) -> None:
        engine, topic, partition = self.engine, tp.topic, tp.partition
        metrics = engine.metrics
        received_at = now_ms()
        counts: dict[str, int] = {}
        for rec in records:
            try:
                fb = engine.decode_record(self.validator, topic, partition, rec, received_at)
                if fb is None:
                    continue
                if not self.deduper.first(dedupe_key(fb)):
                    self.duplicates += 1
                    continue
                self.accepted += 1
                counts[fb.type] = counts.get(fb.type, 0) + 1
                cid = fb.campaign_id if self.known(fb.campaign_id) else OTHER
                variant, channel = self.cap(cid, fb.variant, fb.channel)
                metrics.count(metrics.ad_feedback, cid, variant, channel, fb.type)
                if fb.type == "converted" and fb.value:
                    metrics.count(metrics.ad_revenue, cid, variant, channel, n=fb.value)
            except Exception as exc:
                engine.failed(self.name, topic, partition, rec.offset, rec.key, rec.value, exc)
        if counts:
            metrics.count_in(topic, counts)
        await engine.flush()


def register(engine: Engine, known: Callable[[str], bool] | None = None) -> FeedbackHandler:
    """The feedback handler, subscribed through Faust as the catalog's is."""
    handler = FeedbackHandler(engine, known)
    engine.hooks.batch_handlers[engine.topics.ad_feedback] = handler
    subscribe(engine.app, engine.topic(engine.topics.ad_feedback), handler.name)
    return handler
