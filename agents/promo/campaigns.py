"""Promo campaigns: definitions, per-event decisions and attribution (pure: no Faust, no I/O).

A campaign is a dict (YAML in ``config/campaigns.yaml``, or a record on the compacted
``<prefix>.campaigns`` topic, both in the ``campaign.v1`` contract) parsed once into a
:class:`Campaign` whose conditions are compiled to closures. :class:`CampaignBook` holds the
file's campaigns plus the topic's updates and indexes them by event type, so an event costs
one dict lookup plus the campaigns listening to its type. :class:`Decider` makes the
decisions of one event, :class:`CampaignStats` folds the attribution records into
per-campaign experiment figures. The worker (``agents.promo.triggers``) does the I/O.

Conditions read a context of five namespaces (:func:`build_context`):

* ``event``: ``type``, ``source`` (``live`` or ``clicks``), ``room_id``, ``item_id``,
  ``value`` (order value of a purchase), ``ts``;
* ``profile``: the profile's public view after the event (``agents.users.profile``), e.g.
  ``profile.lifecycle``, ``profile.tags``, ``profile.live.rooms_watched``, the online
  segment ``profile.segment`` and the audiences ``profile.audiences`` (a list: ``contains``;
  :mod:`agents.users.audiences`);
* ``session``: ``profile.session`` plus ``open_carts`` (carts minus purchases in the session)
  and ``gap_s`` (seconds since the user's previous event; null on a first event);
* ``room``: the room's headline (``agents.rooms.pipeline.headline``) for the event's room;
* ``scores``: ``purchase_propensity`` and ``leave_risk`` when known.

A missing (or null) field makes every comparison false except ``exists: false``.

>>> book = CampaignBook.from_yaml('''
... campaigns:
...   - id: cart-reminder
...     on: [leave]
...     when:
...       - {field: session.open_carts, op: ">=", value: 1, reason: cart_open}
...     action: reminder
...     holdout: 0
...     caps: [{max: 1, per: 1h}]
... ''')
>>> decider = Decider(book, partitions=1)
>>> facts = EventFacts("u1", "leave", 1_000_000, "e1", "lp.live-events", "live", room_id="r1")
>>> view = {"consent": True, "session": {"carts": 1, "purchases": 0}}
>>> d = decider.on_event(facts, view, None, None, load_state=lambda: None,
...                      spent=lambda c: 0.0, now_ms=1_000_100)
>>> d.outcomes, d.triggers[0]["reasons"], d.triggers[0]["action"]
([('cart-reminder', 'sent')], ['cart_open'], 'reminder')
>>> again = decider.on_event(facts, view, None, None, load_state=lambda: d.state,
...                          spent=lambda c: 0.0, now_ms=1_000_200)
>>> again.outcomes, again.resent[0] == d.triggers[0]   # redelivery: same trigger, same key
([('cart-reminder', 'duplicate')], True)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from streams.contracts import CAMPAIGN, CLICK_EVENT, LIVE_EVENT, ContractError, check_contract

NAMESPACES = ("event", "profile", "session", "room", "scores")
# product_pin is the host's act: it never reaches the user pipeline
EVENT_TYPES = frozenset((set(LIVE_EVENT.required_by_type) | set(CLICK_EVENT.required_by_type))
                        - {"product_pin"})
OUTCOMES = ("sent", "holdout", "capped", "budget", "quiet_hours", "expired", "not_started",
            "stale", "no_consent", "duplicate")
DEFAULT_HOLDOUT = 0.10
DEFAULT_OFFER_TTL = "15m"
DEFAULT_ATTRIBUTION_WINDOW = "24h"
DEFAULT_BASELINE_WINDOW = "7d"   # before starts_at: the target audience's baseline cohort
GROUPS = {"t": "treatment", "h": "holdout", "b": "baseline"}  # entry "g" -> record group
MAX_CAMPAIGNS = 200          # campaign ids are metric labels: keep them bounded
MAX_ENTRIES_PER_USER = 50    # recent triggers kept per user (caps, attribution, redelivery)
STATE_VERSION = 1
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_NUMBERS = (int, float)
_Z95 = 1.959963984540054


class CampaignError(ValueError):
    """A campaign definition that cannot be used (the message says where and why)."""


# ------------------------------------------------------------------ parsing helpers
def parse_duration(text: Any, where: str) -> int:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"1d"``, ``"250ms"`` -> milliseconds.

    >>> parse_duration("15m", "x"), parse_duration("1.5h", "x")
    (900000, 5400000)
    """
    match = _DURATION.match(text) if isinstance(text, str) else None
    if not match or float(match.group(1)) <= 0:
        raise CampaignError(f"{where}: expected a positive duration such as 90s, 15m, 2h or "
                            f"1d, got {text!r}")
    return int(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_time(value: Any, where: str) -> int:
    """An ISO 8601 time with a UTC offset (or a YAML timestamp) -> epoch milliseconds.

    >>> parse_time("2030-01-01T00:00:00+08:00", "x")
    1893427200000
    """
    moment = value
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            moment = None
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None:
        raise CampaignError(f"{where}: expected an ISO 8601 time with a UTC offset, e.g. "
                            f"2030-01-01T00:00:00+08:00, got {value!r}")
    return int(moment.timestamp() * 1000)


def _clock_minutes(value: Any, where: str) -> int:
    match = _CLOCK.match(value) if isinstance(value, str) else None
    if not match:
        raise CampaignError(f"{where}: expected a quoted local time \"HH:MM\", got {value!r}")
    return int(match.group(1)) * 60 + int(match.group(2))


def _offset_ms(value: Any, where: str) -> int:
    match = _OFFSET.match(value) if isinstance(value, str) else None
    if not match or int(match.group(2)) > 14 or int(match.group(3)) > 59:
        raise CampaignError(f"{where}: expected a quoted UTC offset \"+HH:MM\", got {value!r}")
    sign = -1 if match.group(1) == "-" else 1
    return sign * (int(match.group(2)) * 60 + int(match.group(3))) * 60_000


def _unit_hash(text: str) -> float:
    """A uniform number in [0, 1) from ``text`` (same on every worker, every run)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def idempotency_key(campaign_id: str, user_id: str, source_topic: str, event_id: str) -> str:
    """The trigger's key: the same for every redelivery or reprocessing of its event.

    >>> idempotency_key("c", "u", "lp.clicks", "e1") == idempotency_key("c", "u", "lp.clicks",
    ...                                                                   "e1")
    True
    """
    raw = "\x1f".join((campaign_id, user_id, source_topic, event_id)).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


# ------------------------------------------------------------------ conditions
Test = Callable[[Mapping[str, Any]], str | None]  # None: fails; else its reason code ("": none)


def _getter(field_path: str, where: str) -> Callable[[Mapping[str, Any]], Any]:
    parts = field_path.split(".") if isinstance(field_path, str) else []
    if len(parts) < 2 or parts[0] not in NAMESPACES or not all(parts):
        raise CampaignError(f"{where}.field: expected namespace.path with a namespace in "
                            f"{list(NAMESPACES)}, got {field_path!r}")
    namespace, rest = parts[0], tuple(parts[1:])
    if len(rest) == 1:
        key = rest[0]

        def get_one(ctx: Mapping[str, Any]) -> Any:
            found = ctx[namespace]
            return found.get(key) if isinstance(found, dict) else None
        return get_one

    def get_path(ctx: Mapping[str, Any]) -> Any:
        found = ctx[namespace]
        for part in rest:
            if not isinstance(found, dict):
                return None
            found = found.get(part)
        return found
    return get_path


def _predicate(op: Any, value: Any, where: str) -> Callable[[Any], bool]:
    if op in ("<", "<=", ">", ">="):
        if type(value) not in _NUMBERS:
            raise CampaignError(f"{where}.value: {op} needs a number, got {value!r}")
        v = value
        return {"<": lambda x: type(x) in _NUMBERS and x < v,
                "<=": lambda x: type(x) in _NUMBERS and x <= v,
                ">": lambda x: type(x) in _NUMBERS and x > v,
                ">=": lambda x: type(x) in _NUMBERS and x >= v}[op]
    if op in ("==", "!="):
        if isinstance(value, (dict, list)) or value is None:
            raise CampaignError(f"{where}.value: {op} needs a string, number or boolean")
        if op == "==":
            return lambda x: x is not None and x == value
        return lambda x: x is not None and x != value
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or any(
                isinstance(v, (dict, list)) or v is None for v in value):
            raise CampaignError(f"{where}.value: {op} needs a non-empty list of scalars")
        options = frozenset(value)
        if op == "in":
            return lambda x: isinstance(x, (str, int, float)) and x in options
        return lambda x: isinstance(x, (str, int, float)) and x not in options
    if op in ("contains", "not_contains"):
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise CampaignError(f"{where}.value: {op} needs a string or number")
        if op == "contains":
            return lambda x: isinstance(x, (list, str)) and value in x
        return lambda x: isinstance(x, (list, str)) and value not in x
    if op == "exists":
        if type(value) is not bool:
            raise CampaignError(f"{where}.value: exists needs true or false")
        return lambda x: (x is not None) is value
    raise CampaignError(f"{where}.op: unknown op {op!r}; expected one of ==, !=, <, <=, >, >=, "
                        "in, not_in, contains, not_contains, exists")


def _reason(spec: Mapping[str, Any], where: str) -> str:
    reason = spec.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 64:
        raise CampaignError(f"{where}.reason: expected a short string")
    return reason


def compile_condition(spec: Any, where: str, *, nested: bool = False) -> Test:
    """One condition (``field``/``op``/``value``/``reason``, or ``any: [...]``) -> a test
    returning ``None`` when it fails, else its reason code.

    >>> test = compile_condition({"field": "scores.leave_risk", "op": ">=", "value": 0.5,
    ...                           "reason": "leaving"}, "when[0]")
    >>> test({"scores": {"leave_risk": 0.7}}), test({"scores": {}})
    ('leaving', None)
    """
    if not isinstance(spec, Mapping):
        raise CampaignError(f"{where}: expected a mapping")
    known = {"field", "op", "value", "reason", "any"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise CampaignError(f"{where}: unknown keys {unknown}")
    reason = _reason(spec, where)
    if "any" in spec:
        if nested or set(spec) - {"any", "reason"}:
            raise CampaignError(f"{where}: `any` stands alone (with an optional reason) and "
                                "does not nest")
        options = spec["any"]
        if not isinstance(options, list) or not options:
            raise CampaignError(f"{where}.any: expected a non-empty list of conditions")
        tests = tuple(compile_condition(o, f"{where}.any[{i}]", nested=True)
                      for i, o in enumerate(options))

        def any_of(ctx: Mapping[str, Any]) -> str | None:
            for test in tests:
                found = test(ctx)
                if found is not None:
                    return reason or found
            return None
        return any_of
    if "op" not in spec or "value" not in spec:
        raise CampaignError(f"{where}: needs field, op and value")
    get = _getter(spec.get("field"), where)
    holds = _predicate(spec["op"], spec["value"], where)

    def test(ctx: Mapping[str, Any]) -> str | None:
        return reason if holds(get(ctx)) else None
    return test


# ------------------------------------------------------------------ campaigns
_FIELDS = {"schema_version", "id", "version", "enabled", "name", "description", "on", "when",
           "action", "offer", "offer_ttl", "cost_per_trigger", "budget", "caps",
           "quiet_hours", "holdout", "attribution_window", "starts_at", "expires_at",
           "variants", "mode", "objective", "bandit", "allow_personalised_pricing",
           "justification", "baseline_window"}
MAX_VARIANTS = 8              # as agents.promo.feedback.MAX_VARIANTS: variants are labels
MODES = ("fixed", "bandit")
OBJECTIVES = ("click", "conversion")
DEFAULT_BANDIT_EVERY = 100    # feedback records of the campaign between weight updates
DEFAULT_MIN_WEIGHT = 0.02     # a bandit never starves a variant below this share
_VARIANT_FIELDS = {"id", "weight", "copy", "creative_id", "offer"}


@dataclass(frozen=True, slots=True)
class Variant:
    """One creative/copy/offer variant of a campaign: ``offer`` is what its triggers carry
    (the campaign's offer, updated by the variant's own ``offer`` and its ``copy`` and
    ``creative_id`` when given)."""

    id: str
    weight: float
    offer: dict[str, Any]


def _parse_variants(raw: Any, offer: Mapping[str, Any], where: str) -> tuple[Variant, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise CampaignError(f"{where}.variants: expected a non-empty list")
    if len(raw) > MAX_VARIANTS:
        raise CampaignError(f"{where}.variants: at most {MAX_VARIANTS} variants")
    out: list[Variant] = []
    for i, spec in enumerate(raw):
        at = f"{where}.variants[{i}]"
        if not isinstance(spec, Mapping):
            raise CampaignError(f"{at}: expected a mapping")
        unknown = sorted(set(spec) - _VARIANT_FIELDS)
        if unknown:
            raise CampaignError(f"{at}: unknown keys {unknown}")
        vid = spec.get("id")
        if not isinstance(vid, str) or not _ID.match(vid) or vid == "default":
            raise CampaignError(f"{at}.id: letters, digits, '_', '-', '.' (not 'default'), "
                                f"got {vid!r}")
        weight = spec.get("weight", 1.0)
        if type(weight) not in _NUMBERS or not 0 < weight < math.inf:
            raise CampaignError(f"{at}.weight: expected a positive number, got {weight!r}")
        extra = spec.get("offer") or {}
        if not isinstance(extra, Mapping):
            raise CampaignError(f"{at}.offer: expected a mapping")
        merged = {**offer, **extra}
        for name in ("copy", "creative_id"):
            if name in spec:
                if not isinstance(spec[name], str) or not spec[name]:
                    raise CampaignError(f"{at}.{name}: expected a non-empty string")
                merged[name] = spec[name]
        out.append(Variant(vid, float(weight), merged))
    ids = [v.id for v in out]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise CampaignError(f"{where}.variants: duplicate ids {twice}")
    return tuple(out)


# ------------------------------------------------------------------ fairness guard
# Fields that measure what a user is willing or able to pay (agents.users.profile's view);
# the online segment is clustered on spend, price level and sensitivity among others.
PRICE_FIELDS = frozenset({
    "profile.price", "profile.price.avg_price", "profile.price.band",
    "profile.price.sensitivity", "profile.rfm.monetary", "profile.rfm.m_score",
    "profile.live.gift_value", "profile.segment",
    # an audience is conditions that may select on spend (and may be redefined at run
    # time, after the campaign was checked): a money offer through one is checked as such
    "profile.audiences"})
# Profile tags derived from them (UserProfile.tags): spend level or price sensitivity.
PRICE_TAGS = frozenset({"bargain_hunter", "big_spender", "gifter"})
# Protected attributes: a condition on a field with one of these names (any namespace, any
# depth) is refused. The profile holds none today; the list keeps a future field out.
PROTECTED_NAMES = frozenset({
    "age", "age_band", "birth_year", "birthday", "date_of_birth", "gender", "sex",
    "ethnicity", "race", "nationality", "religion", "health", "disability", "pregnancy",
    "sexual_orientation", "marital_status", "political_opinion", "union_membership",
    "location", "city", "region", "province", "postcode", "zip", "geo", "ip"})
# Offer keys that carry a price or a money amount (a name containing one of these words).
MONEY_WORDS = ("discount", "price", "amount", "value", "cashback", "spend", "rebate")


def condition_fields(spec: Any) -> list[tuple[str, Any]]:
    """``(field, value)`` of every condition of a ``when`` list (``any`` flattened).

    >>> condition_fields([{"field": "a.b", "op": "==", "value": 1},
    ...                   {"any": [{"field": "c.d", "op": ">", "value": 2}]}])
    [('a.b', 1), ('c.d', 2)]
    """
    out: list[tuple[str, Any]] = []
    for item in spec or ():
        if isinstance(item, Mapping):
            if "any" in item:
                out.extend(condition_fields(item["any"]))
            elif isinstance(item.get("field"), str):
                out.append((item["field"], item.get("value")))
    return out


def money_keys(offer: Mapping[str, Any]) -> list[str]:
    """The offer's keys that carry a price or money amount (:data:`MONEY_WORDS`).

    >>> money_keys({"code": "STAY10", "discount_pct": 10, "min_spend": 99, "text_en": "hi"})
    ['discount_pct', 'min_spend']
    """
    return sorted(k for k in offer if isinstance(k, str)
                  and any(word in k.lower() for word in MONEY_WORDS))


def fairness_problem(record: Mapping[str, Any], variants: tuple[Variant, ...],
                     where: str) -> str | None:
    """Why the campaign would price or target discriminatorily (None: it does not).

    A campaign is refused when a ``when`` condition (or one inside an ``any``)

    * reads a protected attribute (a path part in :data:`PROTECTED_NAMES`), whatever the
      offer: targeting on it is discriminatory by itself; or
    * reads price sensitivity or spend level (:data:`PRICE_FIELDS`, or ``profile.tags``
      compared with a tag of :data:`PRICE_TAGS`) while its offer, or any variant's offer,
      carries a price or money amount (:func:`money_keys`): the discount would then depend
      on what the user is thought willing to pay. Variants whose amounts differ fall under
      the same rule (assignment alone is a hash of the user, not a judgement of them).

    >>> fairness_problem({"when": [{"field": "profile.price.sensitivity", "op": ">=",
    ...                             "value": 0.5}], "offer": {"discount_pct": 10}}, (), "c")[:85]
    'c.when: profile.price.sensitivity (price sensitivity or spend level) selects who gets'
    """
    fields = condition_fields(record.get("when"))
    for name, _ in fields:
        hit = sorted(set(name.lower().split(".")) & PROTECTED_NAMES)
        if hit:
            return (f"{where}.when: {name} is a protected attribute ({hit[0]}); campaigns may "
                    "not select on it unless allow_personalised_pricing: true with a "
                    "justification")
    money = set(money_keys(record.get("offer") or {}))
    for variant in variants:
        money |= set(money_keys(variant.offer))
    if not money:
        return None
    for name, value in fields:
        values = value if isinstance(value, list) else [value]
        if name in PRICE_FIELDS or any(name.startswith(f + ".") for f in PRICE_FIELDS) or (
                name == "profile.tags" and PRICE_TAGS.intersection(
                    v for v in values if isinstance(v, str))):
            return (f"{where}.when: {name} (price sensitivity or spend level) selects who "
                    f"gets the offer's {sorted(money)}; set allow_personalised_pricing: true "
                    "with a justification to allow it")
    return None


def _check_fairness(record: Mapping[str, Any], variants: tuple[Variant, ...],
                    where: str) -> bool:
    """Raise for a discriminatory campaign not marked as allowed; True if it is marked."""
    allowed = record.get("allow_personalised_pricing", False)
    if type(allowed) is not bool:
        raise CampaignError(f"{where}.allow_personalised_pricing: expected true or false")
    justification = record.get("justification")
    if allowed:
        if not isinstance(justification, str) or not 10 <= len(justification.strip()) <= 500:
            raise CampaignError(f"{where}.justification: allow_personalised_pricing needs a "
                                "justification of 10 to 500 characters")
        return True
    problem = fairness_problem(record, variants, where)
    if problem:
        raise CampaignError(problem)
    return False


def _parse_bandit(record: Mapping[str, Any], variants: tuple[Variant, ...],
                  where: str) -> tuple[str, str, int, float]:
    mode = record.get("mode", "fixed")
    if mode not in MODES:
        raise CampaignError(f"{where}.mode: expected one of {list(MODES)}, got {mode!r}")
    objective = record.get("objective", "click")
    if objective not in OBJECTIVES:
        raise CampaignError(f"{where}.objective: expected one of {list(OBJECTIVES)}, got "
                            f"{objective!r}")
    if mode == "bandit" and len(variants) < 2:
        raise CampaignError(f"{where}.mode: bandit needs at least two variants")
    knobs = record.get("bandit") or {}
    if not isinstance(knobs, Mapping) or set(knobs) - {"update_every", "min_weight"}:
        raise CampaignError(f"{where}.bandit: a mapping of update_every and min_weight")
    every = knobs.get("update_every", DEFAULT_BANDIT_EVERY)
    if type(every) is not int or every < 1:
        raise CampaignError(f"{where}.bandit.update_every: expected an integer >= 1 (feedback "
                            f"records), got {every!r}")
    floor = knobs.get("min_weight", DEFAULT_MIN_WEIGHT)
    if type(floor) not in _NUMBERS or not 0 <= floor < 1 / max(1, len(variants)):
        raise CampaignError(f"{where}.bandit.min_weight: expected a share in [0, 1/variants), "
                            f"got {floor!r}")
    return mode, objective, every, float(floor)


@dataclass(frozen=True, slots=True, eq=False)
class Campaign:
    """A parsed, validated campaign (build it with :meth:`from_dict`)."""

    id: str
    version: int
    record: dict[str, Any]          # canonical definition: what goes on the campaigns topic
    enabled: bool
    on: frozenset[str]
    action: str
    offer: dict[str, Any]
    offer_ttl_ms: int
    cost: float
    budget: float | None
    caps: tuple[tuple[int, int], ...]       # (max triggers, per window ms)
    quiet: tuple[int, int, int] | None      # (start minute, end minute, UTC offset ms)
    holdout: float
    attribution_window_ms: int
    starts_at: int | None
    expires_at: int | None
    tests: tuple[Test, ...] = field(repr=False)
    variants: tuple[Variant, ...] = ()
    mode: str = "fixed"                     # fixed weights, or "bandit" (Thompson sampling)
    objective: str = "click"                # bandit: clicked or converted per shown
    bandit_every: int = DEFAULT_BANDIT_EVERY
    min_weight: float = DEFAULT_MIN_WEIGHT
    baseline_window_ms: int = 0             # before starts_at: baseline cohort (0: none)
    # every leaf condition (``any`` flattened) as (field, op, value, getter, test): the audit
    audited: tuple[tuple[str, Any, Any, Callable[[Mapping[str, Any]], Any], Test], ...] = \
        field(default=(), repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Campaign:
        """Validate ``data`` (contract ``campaign.v1`` plus the rules below) and compile it.

        Unknown keys are refused (a typo such as ``cap:`` must not silently drop a cap).
        """
        if not isinstance(data, Mapping):
            raise CampaignError("a campaign must be a mapping")
        # null means absent, as in every contract (a null cost_per_trigger was a TypeError)
        record = {k: (v.isoformat() if isinstance(v, dt.datetime) else v)
                  for k, v in data.items() if v is not None}
        record.setdefault("version", 1)
        name = record.get("id")
        where = f"campaign {name!r}" if isinstance(name, str) else "campaign"
        unknown = sorted(set(record) - _FIELDS)
        if unknown:
            raise CampaignError(f"{where}: unknown keys {unknown}")
        try:
            check_contract(CAMPAIGN, record)
        except ContractError as exc:
            raise CampaignError(f"{where}: {exc.reason}") from None
        if not _ID.match(record["id"]):
            raise CampaignError(f"{where}: id may only hold letters, digits, '_', '-', '.'")
        kinds = set(record["on"])
        if not kinds or not kinds <= EVENT_TYPES:
            raise CampaignError(f"{where}.on: expected event types from "
                                f"{sorted(EVENT_TYPES)}, got {sorted(kinds - EVENT_TYPES)}")
        tests = tuple(compile_condition(c, f"{where}.when[{i}]")
                      for i, c in enumerate(record.get("when") or ()))
        holdout = float(record.get("holdout", DEFAULT_HOLDOUT))
        if not 0.0 <= holdout <= 1.0:
            raise CampaignError(f"{where}.holdout: expected a share in [0, 1], got {holdout}")
        caps = tuple((int(c["max"]), parse_duration(c["per"], f"{where}.caps[{i}].per"))
                     for i, c in enumerate(record.get("caps") or ()))
        quiet = None
        if record.get("quiet_hours") is not None:
            q = record["quiet_hours"]
            quiet = (_clock_minutes(q["start"], f"{where}.quiet_hours.start"),
                     _clock_minutes(q["end"], f"{where}.quiet_hours.end"),
                     _offset_ms(q.get("utc_offset", "+00:00"), f"{where}.quiet_hours"
                                ".utc_offset"))
            if quiet[0] == quiet[1]:
                raise CampaignError(f"{where}.quiet_hours: start and end are equal")
        starts = parse_time(record["starts_at"], f"{where}.starts_at") \
            if record.get("starts_at") is not None else None
        expires = parse_time(record["expires_at"], f"{where}.expires_at") \
            if record.get("expires_at") is not None else None
        if starts is not None and expires is not None and expires <= starts:
            raise CampaignError(f"{where}: expires_at must be after starts_at")
        offer = dict(record.get("offer") or {})
        variants = _parse_variants(record.get("variants"), offer, where)
        mode, objective, every, floor = _parse_bandit(record, variants, where)
        _check_fairness(record, variants, where)
        return cls(
            id=record["id"], version=int(record["version"]), record=record,
            enabled=bool(record.get("enabled", True)), on=frozenset(kinds),
            action=record["action"], offer=offer,
            offer_ttl_ms=parse_duration(record.get("offer_ttl", DEFAULT_OFFER_TTL),
                                        f"{where}.offer_ttl"),
            cost=float(record.get("cost_per_trigger", 0.0)),
            budget=float(record["budget"]) if record.get("budget") is not None else None,
            caps=caps, quiet=quiet, holdout=holdout,
            attribution_window_ms=parse_duration(
                record.get("attribution_window", DEFAULT_ATTRIBUTION_WINDOW),
                f"{where}.attribution_window"),
            starts_at=starts, expires_at=expires, tests=tests, variants=variants, mode=mode,
            objective=objective, bandit_every=every, min_weight=floor,
            baseline_window_ms=parse_duration(
                record.get("baseline_window", DEFAULT_BASELINE_WINDOW),
                f"{where}.baseline_window") if starts is not None else 0,
            audited=_audited(record.get("when"), where))

    def match(self, ctx: Mapping[str, Any]) -> list[str] | None:
        """The reason codes when every condition holds, else None."""
        reasons = []
        for test in self.tests:
            found = test(ctx)
            if found is None:
                return None
            if found:
                reasons.append(found)
        return reasons

    def audit_conditions(self, ctx: Mapping[str, Any]) -> list[list[Any]]:
        """Every leaf condition as ``[field, op, value, input, held]``: what the user's
        context held for it when the campaign fired (the audit record)."""
        return [[name, op, value, _bounded(get(ctx)), test(ctx) is not None]
                for name, op, value, get, test in self.audited]

    def in_baseline(self, ts: int) -> bool:
        """True for event times in the window before ``starts_at`` whose matching users
        form the baseline cohort (the before/after view).

        >>> c = Campaign.from_dict({"id": "c", "on": ["like"], "action": "ad",
        ...     "starts_at": "2024-01-08T00:00:00+00:00", "baseline_window": "1d"})
        >>> c.in_baseline(c.starts_at - 1), c.in_baseline(c.starts_at - 86_400_001)
        (True, False)
        """
        return (self.starts_at is not None and self.baseline_window_ms > 0
                and self.starts_at - self.baseline_window_ms <= ts < self.starts_at)

    def gate(self, ts: int) -> str | None:
        """Why the campaign cannot fire at event time ``ts`` (None: it can)."""
        if self.starts_at is not None and ts < self.starts_at:
            return "not_started"
        if self.expires_at is not None and ts >= self.expires_at:
            return "expired"
        if self.quiet is not None:
            start, end, offset = self.quiet
            minute = ((ts + offset) // 60_000) % 1440
            inside = start <= minute < end if start < end else (minute >= start
                                                                 or minute < end)
            if inside:
                return "quiet_hours"
        return None

    def in_holdout(self, user_id: str) -> bool:
        """Deterministic per (campaign, user): the same answer on every worker and run; a
        larger share keeps everyone already held out."""
        return self.holdout_draw(user_id) < self.holdout

    def holdout_draw(self, user_id: str) -> float:
        """The user's uniform draw in [0, 1): held out when below ``holdout``."""
        return _unit_hash(f"{self.id}\x1f{user_id}")

    def variant_draw(self, user_id: str) -> float:
        """The user's uniform draw in [0, 1) placed on the variants' cumulative weights."""
        return _unit_hash(f"{self.id}\x1fvariant\x1f{user_id}")

    @property
    def weights(self) -> tuple[float, ...]:
        """The configured weights of the variants, normalised (empty: no variants)."""
        total = sum(v.weight for v in self.variants)
        return tuple(v.weight / total for v in self.variants)

    def assign(self, user_id: str, weights: Iterable[float] | None = None) -> Variant | None:
        """The user's variant: a hash of (campaign, user), independent of the holdout's,
        placed on the cumulative ``weights`` (default: the configured ones). The same user
        gets the same variant as long as the weights do not change.

        >>> c = Campaign.from_dict({"id": "c", "on": ["like"], "action": "ad",
        ...     "variants": [{"id": "A"}, {"id": "B", "offer": {"discount_pct": 5}}]})
        >>> c.assign("u1") == c.assign("u1"), c.assign("u1", (0.0, 1.0)).offer
        (True, {'discount_pct': 5})
        """
        if not self.variants:
            return None
        u = self.variant_draw(user_id)
        edge = 0.0
        for variant, weight in zip(self.variants, weights or self.weights, strict=True):
            edge += weight
            if u < edge:
                return variant
        return self.variants[-1]

    @property
    def keep_ms(self) -> int:
        """How long a trigger of this campaign must be remembered (caps and attribution)."""
        return max([self.attribution_window_ms, *(per for _, per in self.caps)])

    def status(self, now_ms: int) -> str:
        if not self.enabled:
            return "disabled"
        if self.starts_at is not None and now_ms < self.starts_at:
            return "scheduled"
        if self.expires_at is not None and now_ms >= self.expires_at:
            return "expired"
        return "active"


def _bounded(value: Any) -> Any:
    """An input value as the audit keeps it: scalars as they are, lists cut to 20 items,
    strings to 200 characters, a mapping by its size (no copy of a whole profile part)."""
    if isinstance(value, str):
        return value[:200]
    if isinstance(value, list):
        return [_bounded(v) for v in value[:20]]
    if isinstance(value, Mapping):
        return {"mapping_keys": len(value)}
    return value


def _audited(spec: Any, where: str) -> tuple[tuple[str, Any, Any, Callable[[Mapping[str, Any]],
                                                                      Any], Test], ...]:
    out = []
    for i, item in enumerate(spec or ()):
        at = f"{where}.when[{i}]"
        for leaf in item.get("any", [item]):
            out.append((leaf["field"], leaf["op"], leaf["value"], _getter(leaf["field"], at),
                        compile_condition({**leaf, "reason": "x"}, at, nested=True)))
    return tuple(out)


def parse_campaigns(text: str) -> list[Campaign]:
    """Campaigns from YAML text: a mapping with a ``campaigns`` list."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise CampaignError(f"invalid YAML: {exc}") from None
    items = doc.get("campaigns") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise CampaignError("expected a mapping with a `campaigns` list")
    # YAML 1.1 reads an unquoted `on:` key as the boolean true
    campaigns = [Campaign.from_dict({("on" if k is True else k): v for k, v in item.items()}
                                    if isinstance(item, dict) else item) for item in items]
    ids = [c.id for c in campaigns]
    duplicated = sorted({i for i in ids if ids.count(i) > 1})
    if duplicated:
        raise CampaignError(f"duplicate campaign ids: {duplicated}")
    if len(campaigns) > MAX_CAMPAIGNS:
        raise CampaignError(f"at most {MAX_CAMPAIGNS} campaigns")
    return campaigns


class DefinitionBook:
    """Definitions in force by id: a file's (``defaults``), overridden by a compacted topic
    (``overrides``); the rules of :class:`CampaignBook`, shared by
    :class:`agents.users.audiences.AudienceBook`. A subclass names its ``parse`` (a record
    to a definition with ``id`` and ``version``), ``error``, ``limit`` and ``noun``, and
    rebuilds its indexes in ``_rebuild``."""

    parse: Callable[[Mapping[str, Any]], Any]
    error: type[Exception] = ValueError
    limit = 0
    noun = "definitions"
    defaults: dict[str, Any]
    overrides: dict[str, Any]
    rejected: dict[str, str]   # record key -> why its last record was refused

    def _rebuild(self) -> None:
        raise NotImplementedError

    def apply(self, key: str | None, value: Mapping[str, Any] | None) -> str:
        """Apply one topic record: ``applied``, ``stale``, ``removed`` or ``ignored``;
        raises ``error`` for a record that cannot be used."""
        if value is None:
            if key is None:
                raise self.error("tombstone without a key")
            self.rejected.pop(key, None)
            removed = self.overrides.pop(key, None)
            self._rebuild()
            return "removed" if removed else "ignored"
        try:
            found = type(self).parse(value)
            if key is not None and key != found.id:
                raise self.error(f"record key {key!r} differs from its id {found.id!r}")
            current = self.get(found.id)
            if current is None and len(self.definitions()) >= self.limit:
                raise self.error(f"at most {self.limit} {self.noun}")
        except self.error as exc:
            named = value.get("id") if isinstance(value, Mapping) else None
            self.rejected[key or str(named)] = str(exc)
            raise
        self.rejected.pop(found.id, None)
        if current is not None and found.version < current.version:
            return "stale"
        self.overrides[found.id] = found
        self._rebuild()
        return "applied"

    def get(self, definition_id: str) -> Any:
        found = self.overrides.get(definition_id)
        return found if found is not None else self.defaults.get(definition_id)

    def source_of(self, definition_id: str) -> str:
        return "topic" if definition_id in self.overrides else "file"

    def definitions(self) -> list[Any]:
        ids = sorted(set(self.defaults) | set(self.overrides))
        return [d for d in (self.get(i) for i in ids) if d is not None]


class CampaignBook(DefinitionBook):
    """The campaigns in force: the file's, overridden by the campaigns topic.

    A topic record replaces the campaign of its id unless its ``version`` is lower than the
    one in force (a stale producer cannot roll a campaign back); a tombstone removes the
    topic's definition, so the file's one (if any) applies again. To stop a campaign for
    good, push it with ``enabled: false``.

    >>> book = CampaignBook.from_yaml("campaigns: [{id: a, on: [like], action: ad}]")
    >>> book.apply("a", {"id": "a", "version": 2, "on": ["like"], "action": "ad",
    ...                  "enabled": False})
    'applied'
    >>> book.apply("a", {"id": "a", "version": 1, "on": ["like"], "action": "ad"})
    'stale'
    >>> book.get("a").enabled, book.source_of("a"), book.apply("a", None), book.get("a").version
    (False, 'topic', 'removed', 1)
    """

    parse = Campaign.from_dict
    error = CampaignError
    limit = MAX_CAMPAIGNS
    noun = "campaigns"

    def __init__(self, defaults: Iterable[Campaign] = ()) -> None:
        self.defaults = {c.id: c for c in defaults}
        self.overrides: dict[str, Campaign] = {}
        self.rejected: dict[str, str] = {}   # record key -> why its last record was refused
        self.generation = 0
        self._index: dict[str, tuple[Campaign, ...]] = {}
        self._rebuild()

    @classmethod
    def from_yaml(cls, text: str) -> CampaignBook:
        return cls(parse_campaigns(text))

    @classmethod
    def load(cls, path: str | Path) -> CampaignBook:
        try:
            return cls.from_yaml(Path(path).read_text(encoding="utf-8"))
        except CampaignError as exc:
            raise CampaignError(f"{path}: {exc}") from None

    def _rebuild(self) -> None:
        index: dict[str, list[Campaign]] = {}
        for campaign in self.campaigns():
            if campaign.enabled:
                for kind in campaign.on:
                    index.setdefault(kind, []).append(campaign)
        self._index = {kind: tuple(found) for kind, found in index.items()}
        self.generation += 1

    def campaigns(self) -> list[Campaign]:
        return self.definitions()

    def listening(self, event_type: str) -> tuple[Campaign, ...]:
        """The enabled campaigns that an event of ``event_type`` can fire."""
        return self._index.get(event_type, ())


# ------------------------------------------------------------------ decisions
@dataclass(slots=True)
class EventFacts:
    """What the decider needs to know about the event besides the profile and room."""

    user_id: str
    type: str
    ts: int
    event_id: str
    source_topic: str            # the input topic the event was produced to
    source: str                  # "live" or "clicks"
    room_id: str | None = None
    item_id: str | None = None
    value: float | None = None   # purchase: order value
    partition: int = 0
    previous_ts: int | None = None  # the user's newest event time before this event


@dataclass(slots=True)
class Decision:
    """What one event decided; the worker sends, counts and stores it."""

    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (campaign, outcome)
    triggers: list[dict[str, Any]] = field(default_factory=list)   # new: promo-triggers
    resent: list[dict[str, Any]] = field(default_factory=list)     # redelivered: same keys
    records: list[dict[str, Any]] = field(default_factory=list)    # attribution topic
    conversions: list[tuple[str, str]] = field(default_factory=list)  # (campaign, group)
    state: dict[str, Any] | None = None   # the user's new state (None: unchanged)
    spent: dict[str, float] = field(default_factory=dict)  # campaign -> this partition's total


def build_context(facts: EventFacts, view: Mapping[str, Any],
                  room: Mapping[str, Any] | None,
                  scores: Mapping[str, Any] | None) -> dict[str, Any]:
    """The namespaces conditions read (see the module docstring)."""
    session = view.get("session") or {}
    carts, bought = session.get("carts") or 0, session.get("purchases") or 0
    gap = (facts.ts - facts.previous_ts) / 1000.0 if facts.previous_ts is not None else None
    return {
        "event": {"type": facts.type, "source": facts.source, "room_id": facts.room_id,
                  "item_id": facts.item_id, "value": facts.value, "ts": facts.ts},
        "profile": view,
        "session": {**session, "open_carts": max(0, carts - bought), "gap_s": gap},
        "room": room or {},
        "scores": scores or {},
    }


def _attribution(entry: Mapping[str, Any], user_id: str, kind: str, ts: int,
                 **extra: Any) -> dict[str, Any]:
    record = {"schema_version": 1,
              "record_id": entry["k"] if kind == "trigger" else f"{entry['k']}:conversion",
              "kind": kind, "group": GROUPS.get(entry["g"], "treatment"),
              "campaign_id": entry["c"], "campaign_version": entry["v"], "user_id": user_id,
              "trigger_key": entry["k"], "trigger_ts": entry["t"], "ts": ts,
              "cost": entry.get("x", 0.0) if kind == "trigger" else 0.0}
    if entry.get("m"):
        record["room_id"] = entry["m"]
    record.update(extra)
    return record


class Decider:
    """Per-event campaign decisions: O(campaigns listening to the event's type), no I/O.

    Per campaign whose conditions hold: consent (checked first, before any condition) ->
    redelivery (a known idempotency key re-emits the stored trigger, nothing is counted
    twice) -> start/expiry and quiet hours on event time -> per-user frequency caps ->
    trigger already expired on the wall clock (``stale``) -> budget -> deterministic holdout
    -> sent. Held-out users go through the same caps and budget checks, so both groups see
    the same rules; only the send (and its cost) differs. A sent trigger of a campaign with
    variants carries the user's variant (:meth:`Campaign.assign` on ``weights(campaign)``:
    a bandit's current weights, see :mod:`agents.promo.bandit`) and that variant's offer.

    **Budget split.** Each worker owns a share of the user partitions; a campaign's budget
    is split evenly across the ``partitions`` (the worker stores what each owned partition
    has spent, in a table that moves with the partition). A campaign never overspends
    (up to one trigger's cost per partition on a redelivery after a crash) and may
    underspend when traffic is uneven across partitions.
    """

    def __init__(self, book: CampaignBook, partitions: int,
                 weights: Callable[[Campaign], tuple[float, ...]] | None = None) -> None:
        self.book = book
        self.partitions = max(1, partitions)
        # the variants' current weights (a bandit's, agents.promo.bandit); default: configured
        self.weights = weights or (lambda campaign: campaign.weights)

    def on_event(self, facts: EventFacts, view: Mapping[str, Any],
                 room: Mapping[str, Any] | None, scores: Mapping[str, Any] | None, *,
                 load_state: Callable[[], Mapping[str, Any] | None],
                 spent: Callable[[str], float], now_ms: int) -> Decision | None:
        """Decide for one event; None when no campaign listens and it is no purchase.

        ``load_state`` returns the user's stored state (or None); it is only called when a
        campaign's conditions hold or the event is a purchase. ``spent(campaign_id)`` is
        what the event's partition has spent on the campaign so far.
        """
        campaigns = self.book.listening(facts.type)
        purchase = facts.type == "purchase"
        if not campaigns and not purchase:
            return None
        decision = Decision()
        consent = bool(view.get("consent", True))
        if not consent:
            decision.outcomes = [(c.id, "no_consent") for c in campaigns]
            return decision
        entries: list[dict[str, Any]] | None = None
        changed = False

        def loaded() -> list[dict[str, Any]]:
            nonlocal entries
            if entries is None:
                state = load_state()
                entries = [dict(e) for e in (state or {}).get("r", ())]
            return entries

        if purchase:
            changed = self._attribute(facts, loaded(), decision, now_ms)
        ctx = build_context(facts, view, room, scores) if campaigns else None
        for campaign in campaigns:
            reasons = campaign.match(ctx)  # type: ignore[arg-type]
            if reasons is not None:
                changed |= self._decide(campaign, reasons, facts, scores, loaded(), spent,
                                        decision, now_ms, ctx)
        if changed and entries is not None:
            decision.state = self._pruned(entries, facts.ts)
        return decision

    def _decide(self, campaign: Campaign, reasons: list[str], facts: EventFacts,
                scores: Mapping[str, Any] | None, entries: list[dict[str, Any]],
                spent: Callable[[str], float], decision: Decision, now_ms: int,
                ctx: Mapping[str, Any] | None = None) -> bool:
        cid, user, ts = campaign.id, facts.user_id, facts.ts
        key = idempotency_key(cid, user, facts.source_topic, facts.event_id)
        for entry in entries:
            if entry["k"] == key:  # redelivered or reprocessed event: same trigger again
                decision.outcomes.append((cid, "duplicate"))
                if "p" in entry:
                    decision.resent.append(entry["p"])
                decision.records.append(_attribution(entry, user, "trigger", entry["d"]))
                return False
        outcome = campaign.gate(ts)
        baseline = outcome == "not_started" and campaign.in_baseline(ts)
        if outcome is None or baseline:
            # the baseline cohort goes through the same caps, counted among its own entries
            for limit, per in campaign.caps:
                if sum(1 for e in entries if e["c"] == cid and e["t"] > ts - per
                       and (e["g"] == "b") == baseline) >= limit:
                    if baseline:  # a capped baseline entry is simply not remembered
                        baseline = False
                    else:
                        outcome = "capped"
                    break
        if baseline:  # would have been decided had the campaign started: remember it
            decision.outcomes.append((cid, "not_started"))
            entry = {"k": key, "c": cid, "v": campaign.version, "g": "b", "t": ts, "d": now_ms,
                     "w": ts + campaign.attribution_window_ms, "u": ts + campaign.keep_ms}
            if facts.room_id:
                entry["m"] = facts.room_id
            decision.records.append(_attribution(entry, user, "trigger", now_ms))
            entries.append(entry)
            return True
        expires_at = ts + campaign.offer_ttl_ms
        if campaign.expires_at is not None:
            expires_at = min(expires_at, campaign.expires_at)
        if outcome is None and expires_at <= now_ms:
            outcome = "stale"
        total = decision.spent.get(cid)
        if total is None:
            total = spent(cid)
        if outcome is None and campaign.budget is not None and (
                total + campaign.cost > campaign.budget / self.partitions + 1e-9):
            outcome = "budget"
        if outcome is not None:
            decision.outcomes.append((cid, outcome))
            return False
        held_out = campaign.in_holdout(user)
        entry: dict[str, Any] = {"k": key, "c": cid, "v": campaign.version,
                                 "g": "h" if held_out else "t", "t": ts, "d": now_ms,
                                 "w": ts + campaign.attribution_window_ms,
                                 "u": ts + campaign.keep_ms}
        if facts.room_id:
            entry["m"] = facts.room_id
        audit: dict[str, Any] = {
            "event": {"topic": facts.source_topic, "event_id": facts.event_id,
                      "type": facts.type, "ts": ts},
            "conditions": campaign.audit_conditions(ctx) if ctx is not None else [],
            "reasons": reasons,
            "holdout": {"share": campaign.holdout, "draw": round(campaign.holdout_draw(user), 6),
                        "held_out": held_out}}
        entry["a"] = audit
        if not held_out:
            trigger: dict[str, Any] = {
                "schema_version": 1, "idempotency_key": key, "campaign_id": cid,
                "campaign_version": campaign.version, "user_id": user,
                "action": campaign.action, "offer": campaign.offer, "reasons": reasons,
                "scores": {k: v for k, v in (scores or {}).items() if type(v) in _NUMBERS},
                "event_ts": ts, "source": {"topic": facts.source_topic,
                                           "event_id": facts.event_id, "type": facts.type},
                "ts": now_ms, "expires_at": expires_at}
            if facts.room_id:
                trigger["room_id"] = facts.room_id
            if facts.item_id:
                trigger["item_id"] = facts.item_id
            variant = campaign.assign(user, self.weights(campaign))
            if variant is not None:
                trigger["variant"], trigger["offer"] = variant.id, variant.offer
                audit["variant"] = {
                    "id": variant.id, "draw": round(campaign.variant_draw(user), 6),
                    "weights": [round(w, 6) for w in self.weights(campaign)]}
            entry["p"] = trigger
            entry["x"] = campaign.cost
            decision.triggers.append(trigger)
            decision.spent[cid] = total + campaign.cost
        decision.outcomes.append((cid, "holdout" if held_out else "sent"))
        decision.records.append(_attribution(entry, user, "trigger", now_ms))
        entries.append(entry)
        return True

    @staticmethod
    def _attribute(facts: EventFacts, entries: list[dict[str, Any]], decision: Decision,
                   now_ms: int) -> bool:
        """A purchase converts, per campaign, the user's latest unconverted trigger (sent or
        held out) whose event came before it and whose window still covers it."""
        done: set[str] = set()   # campaigns this purchase converted already (redelivery)
        latest: dict[str, dict[str, Any]] = {}
        for entry in entries:
            if entry.get("cv") == facts.event_id:  # the same purchase again: same record
                done.add(entry["c"])
                decision.records.append(_attribution(
                    entry, facts.user_id, "conversion", now_ms, value=facts.value or 0.0,
                    purchase_event_id=facts.event_id, purchase_ts=facts.ts))
            elif "cv" not in entry and entry["t"] < facts.ts <= entry["w"]:
                best = latest.get(entry["c"])
                if best is None or entry["t"] > best["t"]:
                    latest[entry["c"]] = entry
        changed = False
        for campaign_id, entry in latest.items():
            if campaign_id in done:
                continue
            entry["cv"] = facts.event_id
            changed = True
            decision.conversions.append((entry["c"], GROUPS.get(entry["g"], "treatment")))
            decision.records.append(_attribution(
                entry, facts.user_id, "conversion", now_ms, value=facts.value or 0.0,
                purchase_event_id=facts.event_id, purchase_ts=facts.ts))
        return changed

    @staticmethod
    def _pruned(entries: list[dict[str, Any]], ts: int) -> dict[str, Any]:
        kept = [e for e in entries if e["u"] >= ts]
        if len(kept) > MAX_ENTRIES_PER_USER:
            kept = sorted(kept, key=lambda e: e["t"])[-MAX_ENTRIES_PER_USER:]
        return {"v": STATE_VERSION, "r": kept}


def audit_record(state: Mapping[str, Any] | None, key: str) -> dict[str, Any] | None:
    """The audit record of trigger ``key`` in a user's ``promo-state`` value (None: not
    held, e.g. pruned with the history or erased with the user): the campaign and version
    that fired, the event, every condition with the input it read, the reasons, the
    holdout draw and share, the variant with its draw and weights, and the offer sent.

    >>> audit_record({"v": 1, "r": [{"k": "x", "c": "c", "v": 2, "g": "h", "t": 5, "d": 6,
    ...     "a": {"reasons": ["r"]}}]}, "x")["campaign_version"], audit_record(None, "x")
    (2, None)
    """
    for entry in (state or {}).get("r", ()):
        if entry.get("k") == key:
            sent = entry.get("p")
            return {"idempotency_key": key, "campaign_id": entry["c"],
                    "campaign_version": entry["v"],
                    "group": GROUPS.get(entry["g"], "treatment"),
                    "event_ts": entry["t"], "decided_at": entry["d"],
                    "kept_until": entry.get("u"), **entry.get("a", {}),
                    "action": sent.get("action") if sent else None,
                    "offer": sent.get("offer") if sent else None}
    return None


# ------------------------------------------------------------------ experiment figures
def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    >>> [round(x, 4) for x in wilson_interval(56, 70)]
    [0.6918, 0.877]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_interval(c1: int, n1: int, c2: int, n2: int,
                      z: float = _Z95) -> tuple[float, float] | None:
    """95 % interval of ``c1/n1 - c2/n2`` by Newcombe's hybrid score method (method 10 of
    Newcombe 1998, from two Wilson intervals): good coverage with small counts and rates
    near 0, where the Wald interval fails. None when a group is empty.

    >>> [round(x, 4) for x in newcombe_interval(56, 70, 48, 80)]  # Newcombe's example
    [0.0524, 0.3339]
    """
    if n1 <= 0 or n2 <= 0:
        return None
    p1, p2 = c1 / n1, c2 / n2
    l1, u1 = wilson_interval(c1, n1, z)
    l2, u2 = wilson_interval(c2, n2, z)
    d = p1 - p2
    return (d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


_STATS_KEYS = ("sent", "holdout", "baseline", "conv_t", "conv_h", "conv_b", "value_t",
               "value_h", "value_b", "cost")
_GROUP_SUFFIX = {"treatment": "t", "holdout": "h", "baseline": "b"}
_TRIGGERS_OF = {"t": "sent", "h": "holdout", "b": "baseline"}


def before_after(n_b: int, k_b: int, n_t: int, k_t: int, n_h: int, k_h: int
                 ) -> dict[str, Any]:
    """The before/after view beside the holdout estimate: conversion rate per (would-be)
    trigger of the target audience in the window before the campaign started (``before``:
    baseline cohort, ``n_b`` entries, ``k_b`` converted) and of the treated users during it;
    ``change`` = during - before (what a before/after comparison credits to the campaign),
    ``holdout_uplift`` = treated - held out (the experiment's estimate), ``drift`` = held out
    - before (how much the rate moved without the campaign: the before/after bias).

    >>> v = before_after(200, 10, 400, 40, 100, 8)
    >>> v["before"]["conversion_rate"], v["during"]["conversion_rate"], v["change"]
    (0.05, 0.1, 0.05)
    >>> v["holdout_uplift"], v["drift"], before_after(0, 0, 5, 1, 0, 0)["change"]
    (0.02, 0.03, None)
    """
    rate_b = k_b / n_b if n_b else None
    rate_t = k_t / n_t if n_t else None
    rate_h = k_h / n_h if n_h else None
    change = rate_t - rate_b if rate_t is not None and rate_b is not None else None
    interval = newcombe_interval(k_t, n_t, k_b, n_b)
    return {
        "before": {"triggers": n_b, "conversions": k_b, "conversion_rate": _round(rate_b),
                   "ci95": [_round(x) for x in wilson_interval(k_b, n_b)] if n_b else None},
        "during": {"triggers": n_t, "conversions": k_t, "conversion_rate": _round(rate_t),
                   "ci95": [_round(x) for x in wilson_interval(k_t, n_t)] if n_t else None},
        "change": _round(change),
        "change_ci95": [_round(interval[0]), _round(interval[1])] if interval else None,
        "holdout_uplift": _round(rate_t - rate_h) if rate_t is not None and rate_h is not None
        else None,
        "drift": _round(rate_h - rate_b) if rate_h is not None and rate_b is not None
        else None,
    }


class CampaignStats:
    """Per-campaign experiment figures folded from attribution records (every worker folds
    all of them, so any worker reports the whole deployment). Records are deduplicated by
    ``record_id`` over the last ``dedupe`` ids (redeliveries are close in the log).

    >>> stats = CampaignStats()
    >>> base = {"campaign_id": "c", "kind": "trigger", "cost": 1.0}
    >>> for i in range(4):
    ...     _ = stats.add({**base, "record_id": f"t{i}", "group": "treatment"})
    >>> _ = stats.add({**base, "record_id": "h0", "group": "holdout", "cost": 0.0})
    >>> _ = stats.add({**base, "record_id": "t0:c", "kind": "conversion", "group": "treatment",
    ...                "value": 30.0})
    >>> stats.add({**base, "record_id": "t0:c", "kind": "conversion", "group": "treatment"})
    False
    >>> r = stats.report("c")
    >>> r["sent"], r["holdout"], r["conversion_rate"], r["uplift"], r["cost"]
    (4, 1, {'treatment': 0.25, 'holdout': 0.0}, 0.25, 4.0)
    """

    def __init__(self, dedupe: int = 200_000) -> None:
        self.counts: dict[str, dict[str, float]] = {}
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._dedupe = dedupe

    def add(self, record: Mapping[str, Any]) -> bool:
        """Fold one attribution record; False if it was seen before (or is unusable)."""
        rid, cid = record.get("record_id"), record.get("campaign_id")
        if not isinstance(rid, str) or not isinstance(cid, str) or rid in self._seen:
            return False
        self._seen.add(rid)
        self._order.append(rid)
        if len(self._order) > self._dedupe:
            self._seen.discard(self._order.popleft())
        c = self.counts.setdefault(cid, dict.fromkeys(_STATS_KEYS, 0.0))
        suffix = _GROUP_SUFFIX.get(record.get("group"), "h")  # type: ignore[arg-type]
        if record.get("kind") == "conversion":
            c["conv_" + suffix] += 1
            c["value_" + suffix] += float(record.get("value") or 0.0)
        else:
            c[_TRIGGERS_OF[suffix]] += 1
            c["cost"] += float(record.get("cost") or 0.0)
        return True

    def report(self, campaign_id: str) -> dict[str, Any]:
        c = self.counts.get(campaign_id) or dict.fromkeys(_STATS_KEYS, 0.0)
        n_t, n_h = int(c["sent"]), int(c["holdout"])
        k_t, k_h = int(c["conv_t"]), int(c["conv_h"])
        rate_t = k_t / n_t if n_t else None
        rate_h = k_h / n_h if n_h else None
        uplift = rate_t - rate_h if rate_t is not None and rate_h is not None else None
        interval = newcombe_interval(k_t, n_t, k_h, n_h)
        incremental = uplift * n_t if uplift is not None else None
        return {
            "sent": n_t, "holdout": n_h,
            "conversions": {"treatment": k_t, "holdout": k_h},
            "conversion_rate": {"treatment": _round(rate_t), "holdout": _round(rate_h)},
            "uplift": _round(uplift),
            "uplift_ci95": [_round(interval[0]), _round(interval[1])] if interval else None,
            "relative_uplift": _round(uplift / rate_h) if uplift is not None and rate_h
            else None,
            "incremental_conversions": _round(incremental),
            "cost": round(c["cost"], 2),
            "cost_per_incremental_conversion": round(c["cost"] / incremental, 2)
            if incremental and incremental > 0 else None,
            "revenue": {"treatment": round(c["value_t"], 2), "holdout": round(c["value_h"], 2)},
            "before_after": before_after(int(c["baseline"]), int(c["conv_b"]), n_t, k_t, n_h,
                                         k_h),
        }


def _round(value: float | None) -> float | None:
    return round(value, 6) if value is not None else None
