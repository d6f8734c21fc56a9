"""Topic names, keys and configs: every topic the engine reads or writes, in one place.

>>> names = TopicNames("livepulse")
>>> names.live_events, names.dead_letter
('livepulse.live-events', 'livepulse.dead-letter')
"""

from __future__ import annotations

from dataclasses import dataclass, field

from config.settings import Settings

_SUFFIXES = {
    "live_events": "live-events",
    "clicks": "clicks",
    "catalog": "catalog",
    "campaigns": "campaigns",
    "consent": "consent",
    "erasure": "erasure",
    "ad_feedback": "ad-feedback",
    "room_insights": "room-insights",
    "recommendations": "recommendations",
    "promo_triggers": "promo-triggers",
    "attribution": "attribution",
    "anomalies": "anomalies",
    "dead_letter": "dead-letter",
    "user_activity": "user-activity",
    "room_audience": "room-audience",
    "dead_letter_redrives": "dead-letter-redrives",
    "audiences": "audiences",
    "audience_changes": "audience-changes",
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    key: str
    role: str  # "input", "output" or "internal"
    description: str
    compacted: bool = False

    def configs(self, retention_ms: int) -> dict[str, str]:
        # Explicit retention configs: some Kafka-protocol brokers (Tansu) describe only the
        # configs a topic was created with, and clients such as Quix Streams require them.
        if self.compacted:
            return {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}
        return {
            "cleanup.policy": "delete",
            "retention.ms": str(retention_ms),
            "retention.bytes": "-1",
        }


@dataclass(frozen=True, slots=True)
class TopicNames:
    """The prefixed name of every topic (plain attributes: read per event)."""

    prefix: str
    # inputs
    live_events: str = field(init=False)
    clicks: str = field(init=False)
    catalog: str = field(init=False)
    campaigns: str = field(init=False)
    consent: str = field(init=False)
    erasure: str = field(init=False)
    ad_feedback: str = field(init=False)
    # outputs
    room_insights: str = field(init=False)
    recommendations: str = field(init=False)
    promo_triggers: str = field(init=False)
    attribution: str = field(init=False)
    anomalies: str = field(init=False)
    dead_letter: str = field(init=False)
    # internal: validated live events re-keyed by user for the user pipeline
    user_activity: str = field(init=False)
    # internal: viewer summaries and next rooms for the audience portrait (user -> room)
    room_audience: str = field(init=False)
    # internal: the dead letters already redriven (``livepulse dead-letters redrive``)
    dead_letter_redrives: str = field(init=False)
    # audiences: definitions (input, compacted) and membership changes (output)
    audiences: str = field(init=False)
    audience_changes: str = field(init=False)

    def __post_init__(self) -> None:
        for attr, suffix in _SUFFIXES.items():
            object.__setattr__(self, attr, self._name(suffix))

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}" if self.prefix else suffix

    def specs(self) -> list[TopicSpec]:
        return [
            TopicSpec(self.live_events, "room_id", "input",
                      "Live-room activity: join, leave, comment, like, gift, share, follow, "
                      "product_pin, product_click, add_to_cart, purchase."),
            TopicSpec(self.clicks, "user_id", "input",
                      "Clickstream: view, click, search, add_to_cart, purchase."),
            TopicSpec(self.catalog, "item_id", "input",
                      "Catalog items (latest value per item).", compacted=True),
            TopicSpec(self.campaigns, "campaign id", "input",
                      "Promo campaign definitions (latest per campaign; null removes).",
                      compacted=True),
            TopicSpec(self.consent, "user_id", "input",
                      "Users' marketing consent (latest per user).", compacted=True),
            TopicSpec(self.erasure, "user_id", "input",
                      "Erasure requests (forget a user; null when done).", compacted=True),
            TopicSpec(self.ad_feedback, "user_id", "input",
                      "Ad systems' feedback on promo triggers: delivered, shown, clicked, "
                      "dismissed, converted."),
            TopicSpec(self.room_insights, "room_id", "output",
                      "Live room counters, emitted at least once per second per live room."),
            TopicSpec(self.recommendations, "user_id", "output",
                      "Next-item recommendations (top-K with scores and reasons)."),
            TopicSpec(self.promo_triggers, "user_id", "output",
                      "Promo triggers for ad systems (campaign offers for one user)."),
            TopicSpec(self.attribution, "user_id", "output",
                      "Trigger experiment records: triggers sent or held out, conversions."),
            TopicSpec(self.anomalies, "scope_id", "output",
                      "Anomaly incidents (opened and resolved)."),
            TopicSpec(self.dead_letter, "source key", "output",
                      "Rejected input with its reason in headers and body."),
            TopicSpec(self.user_activity, "user_id", "internal",
                      "Validated live events re-keyed by user (room pipeline -> user pipeline)."),
            TopicSpec(self.room_audience, "room_id", "internal",
                      "Viewer summaries and next rooms for the rooms' audience portraits "
                      "(user pipeline -> room pipeline, the room's live-events partition)."),
            TopicSpec(self.dead_letter_redrives, "dead letter partition:offset", "internal",
                      "Dead letters already redriven to their source topic (the ledger that "
                      "makes `livepulse dead-letters redrive` idempotent).", compacted=True),
            TopicSpec(self.audiences, "audience id", "input",
                      "Audience definitions (latest per audience; null removes).",
                      compacted=True),
            TopicSpec(self.audience_changes, "user_id", "output",
                      "Audience membership changes (enter/exit) for ad systems to sync."),
        ]

    def inputs(self) -> list[str]:
        return [s.name for s in self.specs() if s.role == "input"]

    def outputs(self) -> list[str]:
        return [s.name for s in self.specs() if s.role == "output"]


def topic_names(settings: Settings) -> TopicNames:
    return TopicNames(settings.topic_prefix)
