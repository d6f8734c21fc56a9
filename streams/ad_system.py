"""A simulated ad system: answers promo triggers with ``ad-feedback.v1`` records.

For the simulator and benchmarks: every trigger read from ``<prefix>.promo-triggers`` gets
the feedback a real ad system would send back, with realistic delays and probabilities and
a *known* true effect per variant, so a campaign report (``agents.promo.feedback``) can be
checked against the truth. The funnel of one trigger:

* ``delivered`` with probability ``p_deliver`` after ~0.5 s (exponential), on a channel
  drawn by ``channels`` weights;
* ``shown`` with probability ``p_show`` after ~5 s more;
* ``clicked`` with the variant's ``ctr`` (of shown) after ~10 s more, else ``dismissed``
  with probability ``p_dismiss``;
* ``converted`` with the variant's ``cvr`` (of clicked) after ~3 min more, with an order
  value drawn around ``order_value`` (log-normal).

The variant is the trigger's ``variant`` when the model knows it (a campaign with variants
chose it); otherwise it is assigned per user and campaign by a hash (deterministic, by
``weight``). The draws per trigger are seeded by its idempotency key, so a redelivered
trigger gets the same answers (and the same records: the engine deduplicates them).

>>> model = AdSystemModel()
>>> trigger = {"idempotency_key": "k1", "campaign_id": "c", "user_id": "u1", "ts": 1000}
>>> answers = model.respond(trigger)
>>> answers == model.respond(trigger)       # same trigger, same answers
True
>>> all(record["ts"] >= 1000 for record in answers)
True
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

log = logging.getLogger("livepulse.ad_system")


@dataclass(frozen=True, slots=True)
class VariantTruth:
    """The true behaviour of one variant: click rate of shown, conversion rate of clicked."""

    name: str
    ctr: float
    cvr: float = 0.10
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class AdSystemModel:
    """Probabilities and mean delays of the simulated ad system (see the module)."""

    variants: tuple[VariantTruth, ...] = (VariantTruth("A", 0.04), VariantTruth("B", 0.06))
    channels: tuple[tuple[str, float], ...] = (("push", 0.6), ("in_app", 0.4))
    p_deliver: float = 0.95
    p_show: float = 0.80
    p_dismiss: float = 0.30
    order_value: float = 80.0
    currency: str = "CNY"
    delay_s: Mapping[str, float] = field(default_factory=lambda: {
        "delivered": 0.5, "shown": 5.0, "clicked": 10.0, "dismissed": 8.0,
        "converted": 180.0})
    seed: int = 7

    def variant_of(self, user_id: str, campaign_id: str) -> VariantTruth:
        """The user's variant in the campaign (hash of both: same on every run)."""
        raw = f"{self.seed}\x1f{campaign_id}\x1f{user_id}".encode()
        u = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") / 2.0**64
        total = sum(v.weight for v in self.variants)
        edge = 0.0
        for variant in self.variants:
            edge += variant.weight / total
            if u < edge:
                return variant
        return self.variants[-1]

    def named(self, name: Any) -> VariantTruth | None:
        """The variant called ``name`` (None: no such variant)."""
        return next((v for v in self.variants if v.name == name), None)

    def truth(self) -> dict[str, dict[str, float]]:
        """True rates per variant: what a report should estimate."""
        return {v.name: {"ctr": v.ctr, "cvr": v.cvr} for v in self.variants}

    def respond(self, trigger: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The feedback records of one trigger, in time order (``ts``: when each happens)."""
        key, cid, user = trigger["idempotency_key"], trigger["campaign_id"], trigger["user_id"]
        rng = random.Random(f"{self.seed}:{key}")
        variant = self.named(trigger.get("variant")) or self.variant_of(user, cid)
        names, weights = zip(*self.channels, strict=True)
        channel = rng.choices(names, weights)[0]
        base = {"schema_version": 1, "idempotency_key": key, "campaign_id": cid,
                "user_id": user, "variant": variant.name, "channel": channel}
        out: list[dict[str, Any]] = []
        ts = int(trigger["ts"])

        def step(kind: str, **extra: Any) -> None:
            nonlocal ts
            ts += int(rng.expovariate(1.0 / self.delay_s[kind]) * 1000)
            out.append({**base, "type": kind, "ts": ts, **extra})

        if rng.random() >= self.p_deliver:
            return out
        step("delivered")
        if rng.random() >= self.p_show:
            return out
        step("shown")
        if rng.random() >= variant.ctr:
            if rng.random() < self.p_dismiss:
                step("dismissed")
            return out
        step("clicked")
        if rng.random() < variant.cvr:
            value = round(self.order_value * math.exp(rng.gauss(-0.125, 0.5)), 2)
            step("converted", order_id=f"o-{key[:16]}", value=value, currency=self.currency)
        return out


async def run(bootstrap: str, triggers_topic: str, feedback_topic: str,
              model: AdSystemModel | None = None, *, speed: float = 1.0,
              group_id: str = "livepulse-ad-system", from_beginning: bool = False,
              client_options: Mapping[str, Any] | None = None) -> None:
    """Answer every trigger of ``triggers_topic`` on ``feedback_topic`` for ever, each
    record sent when its delay has passed (delays divided by ``speed``) and stamped with
    the time it is sent. ``from_beginning``: a new group starts at the topic's beginning
    (else at its end)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    model = model or AdSystemModel()
    consumer = AIOKafkaConsumer(triggers_topic, bootstrap_servers=bootstrap,
                                group_id=group_id,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                **(client_options or {}))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                                **(client_options or {}))
    await consumer.start()
    await producer.start()
    due: list[tuple[float, int, dict[str, Any]]] = []  # (send at, seq, record)
    seq = 0
    loop = asyncio.get_running_loop()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            now = loop.time()
            for records in batches.values():
                for rec in records:
                    try:
                        trigger = orjson.loads(rec.value)
                        answers = model.respond(trigger)
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                        log.warning("trigger skipped: %s", exc)
                        continue
                    start = int(trigger["ts"])
                    for record in answers:
                        seq += 1
                        delay = (record["ts"] - start) / 1000 / speed
                        heapq.heappush(due, (now + delay, seq, record))
            while due and due[0][0] <= loop.time():
                _, _, record = heapq.heappop(due)
                record["ts"] = int(time.time() * 1000)  # sent now: stamped now
                await producer.send(feedback_topic, key=record["user_id"].encode(),
                                    value=orjson.dumps(record))
    finally:
        await consumer.stop()
        await producer.stop()


# ------------------------------------------------------------------ CLI: livepulse ad-system
def add_command(sub: Any) -> None:
    """``livepulse ad-system``: answer the deployment's triggers (registered by agents.cli)."""
    parser = sub.add_parser("ad-system", help="simulate an ad system: answer promo triggers "
                            "with ad-feedback records (delivered, shown, clicked, ...)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="divide the simulated delays by this (default 1: real time)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="answer the triggers already on the topic too")
    parser.add_argument("--ctr", type=float, nargs=2, default=(0.04, 0.06),
                        metavar=("A", "B"), help="true CTR of variants A and B")
    parser.set_defaults(func=_cmd_ad_system)


def _cmd_ad_system(args: Any, settings: Any) -> int:
    from agents.cli import broker_for
    from streams.admin import ensure_topics
    from streams.security import kafka_client_options
    from streams.topics import topic_names

    names = topic_names(settings)
    model = AdSystemModel(variants=(VariantTruth("A", args.ctr[0]),
                                    VariantTruth("B", args.ctr[1])))
    with broker_for(settings) as bootstrap:
        asyncio.run(ensure_topics(settings, bootstrap))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(bootstrap, names.promo_triggers, names.ad_feedback, model,
                            speed=args.speed, from_beginning=args.from_beginning,
                            client_options=kafka_client_options(settings)))
    return 0
