"""Engine metrics: Prometheus series plus exact recent latency percentiles for summaries.

Names follow Prometheus conventions: one ``livepulse_`` prefix, base units, ``_total``
counters, and bounded labels only (topic names, contract types, error classes).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def observe_many(histogram: Any, values: list[float]) -> None:
    """``histogram.observe(v)`` for every value, with one increment per bucket touched
    (prometheus_client's own bucket search per value costs ~1.5 µs); falls back to
    ``observe`` when the histogram's internals are not the ones this was written for.

    >>> from prometheus_client import CollectorRegistry, Histogram
    >>> h = Histogram("h_seconds", "h", buckets=(0.1, 1.0), registry=CollectorRegistry())
    >>> observe_many(h, [0.05, 0.1, 0.5, 2.0])
    >>> [s.value for s in h.collect()[0].samples if s.name == "h_seconds_bucket"]
    [2.0, 3.0, 4.0]
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bucket with value <= bound
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
    total.inc(sum(values))


class LatencyRecorder:
    """The last ``capacity`` latencies (ms) in a ring buffer; exact percentiles over them.

    >>> rec = LatencyRecorder(capacity=4)
    >>> for v in (1, 2, 3, 4, 100):
    ...     rec.add(v)
    >>> rec.count, rec.percentile(50), rec.percentile(100)
    (5, 4.0, 100.0)
    """

    __slots__ = ("_buf", "_next", "capacity", "count")

    def __init__(self, capacity: int = 65_536) -> None:
        self.capacity = capacity
        self._buf = array("d")
        self._next = 0
        self.count = 0

    def add(self, value_ms: float) -> None:
        self.count += 1
        if len(self._buf) < self.capacity:
            self._buf.append(value_ms)
        else:
            self._buf[self._next] = value_ms
            self._next = (self._next + 1) % self.capacity

    def percentile(self, q: float) -> float | None:
        if not self._buf:
            return None
        ordered = sorted(self._buf)
        index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
        return float(ordered[index])

    def samples(self) -> list[float]:
        return self._buf.tolist()

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "p50": self.percentile(50), "p99": self.percentile(99),
                "max": self.percentile(100)}


class EngineMetrics:
    """All series of one engine, in its own registry (tests may build several engines)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter(
            "livepulse_events_in_total", "Valid events consumed, by topic and event type.",
            ["topic", "type"], registry=r)
        self.model_quality = Gauge(
            "livepulse_model_quality", "Prequential quality of an online model over recent "
            "traffic (hr_at_20, mrr_at_20, roc_auc, log_loss, ece).", ["model", "metric"],
            registry=r)
        self.model_examples = Gauge(
            "livepulse_model_examples", "Examples an online model has learned from.",
            ["model"], registry=r)
        self.model_state_entries = Gauge(
            "livepulse_model_state_entries", "Entries held in a bounded store of an online "
            "model (e.g. recommender sessions, pending delayed labels).", ["model", "store"],
            registry=r)
        self.model_state_capacity = Gauge(
            "livepulse_model_state_capacity", "The cap of that store: memory stops growing "
            "when entries reach it (the oldest are evicted).", ["model", "store"], registry=r)
        self.model_info = Gauge(
            "livepulse_model_info", "Version of each online model (value 1).",
            ["model", "version"], registry=r)
        self.empty_recommendations = Counter(
            "livepulse_recommendations_empty_total", "Recommendations emitted with no items: "
            "the recommender knew no item it may show the user (a cold model: only the "
            "user's own or out-of-stock items).", registry=r)
        self.late_events = Counter(
            "livepulse_late_events_total", "Events that arrived after their insight window "
            "closed (kept in the running totals, not in the windows).", registry=r)
        self.events_out = Counter(
            "livepulse_events_out_total", "Records produced to output topics.", ["topic"],
            registry=r)
        self.dead_letters = Counter(
            "livepulse_dead_letters_total", "Rejected input records, by source topic and "
            "error class.", ["topic", "reason"], registry=r)
        self.agent_errors = Counter(
            "livepulse_agent_errors_total", "Unexpected errors caught while processing an "
            "event (the event is dead-lettered with error class `internal`).", ["agent"],
            registry=r)
        self.latency = Histogram(
            "livepulse_end_to_end_latency_seconds", "Input event time to output produced.",
            ["topic"], buckets=LATENCY_BUCKETS, registry=r)
        self.snapshot_seconds = Histogram(
            "livepulse_model_snapshot_seconds", "Time to snapshot the online models (in a "
            "forked child: the event loop waits only for the fork).",
            buckets=LATENCY_BUCKETS, registry=r)
        self.snapshot_refused = Counter(
            "livepulse_snapshot_refused_total", "Model snapshot files refused at restore "
            "(the next older one is tried), by model and reason.", ["model", "reason"],
            registry=r)
        self.processing = Histogram(
            "livepulse_agent_processing_seconds", "Time to process one input event (batched "
            "pipelines: each handled batch's time per event, observed once per batch).",
            ["agent"], buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
                                0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=r)
        self.gmv = Counter(
            "livepulse_gmv_total", "Gross merchandise value of valid purchase events (live: "
            "the order amount; storefront: price x quantity), by input topic.", ["topic"],
            registry=r)
        # campaign ids are bounded by the campaign book (agents.promo.campaigns.MAX_CAMPAIGNS)
        self.triggers = Counter(
            "livepulse_triggers_total", "Promo trigger decisions of this worker by campaign "
            "and outcome (sent, holdout, capped, budget, quiet_hours, expired, not_started, "
            "stale, no_consent, duplicate).", ["campaign", "outcome"], registry=r)
        self.trigger_conversions = Counter(
            "livepulse_trigger_conversions_total", "Purchases this worker attributed to a "
            "trigger, by campaign and group (treatment, holdout, baseline).", ["campaign", "group"],
            registry=r)
        self.campaign_uplift = Gauge(
            "livepulse_campaign_uplift", "Conversion rate of sent triggers minus that of the "
            "holdout, from all workers' attribution records (same on every worker: do not "
            "sum).", ["campaign"], registry=r)
        # bounded labels: campaigns from the book (unknown ones as "_other"), at most
        # agents.promo.feedback.MAX_VARIANTS / MAX_CHANNELS per campaign (the rest "_other")
        self.ad_feedback = Counter(
            "livepulse_ad_feedback_total", "Ad-system feedback records this worker accepted "
            "(deduplicated), by campaign, variant, channel and type (delivered, shown, "
            "clicked, dismissed, converted).", ["campaign", "variant", "channel", "type"],
            registry=r)
        self.ad_revenue = Counter(
            "livepulse_ad_revenue_total", "Order value of the converted feedback this worker "
            "accepted, by campaign, variant and channel (currencies summed as sent).",
            ["campaign", "variant", "channel"], registry=r)
        # Deployment-wide campaign figures, folded by every worker from the whole triggers,
        # feedback and attribution topics (same on every worker: take max, do not sum);
        # labels bounded as livepulse_ad_feedback_total's (agents.promo.triggers exports).
        self.campaign_events = Gauge(
            "livepulse_campaign_events", "Triggers sent and ad-system feedback records "
            "(deduplicated) of each campaign, by variant and kind (sent, delivered, shown, "
            "clicked, dismissed, converted).", ["campaign", "variant", "kind"], registry=r)
        self.campaign_users = Gauge(
            "livepulse_campaign_users", "Distinct users of each campaign variant by kind: "
            "shown (reach), clicked, converted (exact up to 10,000, then HyperLogLog).",
            ["campaign", "variant", "kind"], registry=r)
        self.campaign_revenue = Gauge(
            "livepulse_campaign_revenue", "Order value of the converted feedback of each "
            "campaign variant (currency units, as sent).", ["campaign", "variant"], registry=r)
        self.campaign_cost = Gauge(
            "livepulse_campaign_cost", "Cost of the triggers sent per campaign variant "
            "(triggers x cost_per_trigger, currency units).", ["campaign", "variant"],
            registry=r)
        self.campaign_conversion_rate = Gauge(
            "livepulse_campaign_conversion_rate", "Conversion rate per trigger of each "
            "campaign's cohorts: treatment, holdout, and baseline (the target audience in the "
            "window before starts_at).", ["campaign", "group"], registry=r)
        self.anomalies = Counter(
            "livepulse_anomalies_total", "Anomaly incidents opened by this worker, by scope "
            "(room, user, system) and severity at opening.", ["scope", "severity"], registry=r)
        self.anomalies_open = Gauge(
            "livepulse_anomalies_open", "Anomaly incidents open now on this worker, by scope.",
            ["scope"], registry=r)
        self.duplicates = Counter(
            "livepulse_duplicate_events_total", "Redelivered input events detected and skipped "
            "(at-least-once delivery after a crash or rebalance), by pipeline: room (input "
            "offset at or below the room's last applied one) or user (event id among the "
            "profile's recent ones).", ["pipeline"], registry=r)
        for pipeline in ("room", "user"):
            self.duplicates.labels(pipeline)  # exported at 0 from the start
        self.recorders: dict[str, LatencyRecorder] = {}
        self._latency: dict[str, Any] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # per-event counts and latencies, applied once per handled batch (flush_batch)
        self._pending_counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._pending_latency: dict[str, list[float]] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (``labels()`` costs ~3 µs a call)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def count_in(self, topic: str, counts: dict[str, int]) -> None:
        """Add a handled batch's valid events, by type, to ``livepulse_events_in_total``."""
        events_in = self.events_in
        for kind, n in counts.items():
            self.child(events_in, topic, kind).inc(n)

    def count_purchase(self, topic: str, record: Any) -> None:
        """Add a valid purchase's value to ``livepulse_gmv_total``."""
        amount = getattr(record, "amount", None)
        if amount is None:
            amount = (getattr(record, "price", None) or 0.0) * (
                getattr(record, "quantity", None) or 1)
        self.child(self.gmv, topic).inc(max(0.0, float(amount)))

    def count(self, metric: Any, *labels: str, n: float = 1.0) -> None:
        """Add ``n`` to ``metric{labels}`` at the next :meth:`flush_batch` (per-event
        counts: one increment per batch, not per event)."""
        key = (metric, labels)
        pending = self._pending_counts
        pending[key] = pending.get(key, 0.0) + n

    def observe_latency(self, topic: str, latency_ms: float) -> None:
        """Record one output's event -> output latency (applied at :meth:`flush_batch`)."""
        pending = self._pending_latency.get(topic)
        if pending is None:
            pending = self._pending_latency[topic] = []
        pending.append(latency_ms)

    def flush_batch(self) -> None:
        """Apply the counts and latencies held since the last call (handlers call it at the
        end of each batch; whatever another path left pending goes with the next one)."""
        if self._pending_counts:
            pending, self._pending_counts = self._pending_counts, {}
            for (metric, labels), n in pending.items():
                self.child(metric, *labels).inc(n)
        for topic, values in self._pending_latency.items():
            if not values:
                continue
            recorder = self.recorders.get(topic)
            if recorder is None:
                recorder = self.recorders[topic] = LatencyRecorder()
                self._latency[topic] = self.latency.labels(topic)
            for value in values:
                recorder.add(value)
            observe_many(self._latency[topic], [value / 1000.0 for value in values])
            values.clear()

    def latency_samples(self) -> dict[str, list[float]]:
        return {topic: recorder.samples() for topic, recorder in self.recorders.items()}

    def snapshot(self) -> dict[str, Any]:
        """Counter totals and latency percentiles as plain JSON-ready dicts."""
        events_in: dict[str, dict[str, float]] = {}
        events_out: dict[str, float] = {}
        dead: dict[str, dict[str, float]] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                labels = sample.labels
                if family.name == "livepulse_events_in":
                    events_in.setdefault(labels["topic"], {})[labels["type"]] = sample.value
                elif family.name == "livepulse_events_out":
                    events_out[labels["topic"]] = sample.value
                elif family.name == "livepulse_dead_letters":
                    dead.setdefault(labels["topic"], {})[labels["reason"]] = sample.value
        return {
            "events_in": {t: int(sum(v.values())) for t, v in events_in.items()},
            "events_in_by_type": {t: {k: int(n) for k, n in v.items()}
                                  for t, v in events_in.items()},
            "events_out": {t: int(n) for t, n in events_out.items()},
            "dead_letters": int(sum(sum(v.values()) for v in dead.values())),
            "dead_letters_by_reason": _merge_reasons(dead),
            "dead_letters_by_topic": {t: int(sum(v.values())) for t, v in dead.items()},
            "latency_ms": {t: r.summary() for t, r in self.recorders.items()},
        }


def _merge_reasons(dead: dict[str, dict[str, float]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for reasons in dead.values():
        for reason, n in reasons.items():
            merged[reason] = merged.get(reason, 0) + int(n)
    return merged
