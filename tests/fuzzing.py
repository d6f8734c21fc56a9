"""Hypothesis strategies for the input contracts: valid events derived from the contracts'
FieldSpecs (a field added to a contract is fuzzed without touching this module) and the
ways a producer can get them wrong. Shared by the unit and integration fuzz tests."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from streams.contracts import (
    BOOLEAN,
    CAMPAIGN,
    INTEGER,
    NUMBER,
    NUMBER_MAP,
    OBJECT,
    OBJECT_LIST,
    STRING,
    STRING_LIST,
    Contract,
    FieldSpec,
)

# Unicode a producer may legitimately send: NUL, RTL/LTR marks and overrides, zero-width
# joiners, combining marks, emoji (astral plane), CJK; no lone surrogates (not valid UTF-8).
EDGE_CHARS = ["\x00", "\u200f", "\u202e", "\u200d", "\u0301", "\u0338", "\ufeff", "\U0001f600",
              "\U0001f469\u200d\U0001f4bb", "太", "\u0645", "\uffff", "\n", '"', "\\", "%"]
TEXT_CHARS = st.characters(blacklist_categories=("Cs",))
MAX_SAFE = 2**53 - 1  # the largest number the validator accepts (streams.contracts)


def text(max_size: int) -> st.SearchStrategy[str]:
    """Any valid-UTF-8 text up to ``max_size`` chars, often with edge characters, and
    sometimes exactly ``max_size`` long."""
    short = st.lists(st.one_of(st.sampled_from(EDGE_CHARS), TEXT_CHARS.map(str)),
                     max_size=min(max_size, 12)).map("".join).filter(
                         lambda s: len(s) <= max_size)
    full = st.sampled_from(["x", "é", "太", "\U0001f600"]).map(lambda c: c * max_size)
    return st.one_of(short, short, short, full)


def value_for(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """A valid value for one field."""
    if spec.enum is not None:
        return st.sampled_from(spec.enum)
    kind = spec.kind
    low = spec.minimum if spec.minimum is not None else -MAX_SAFE
    high = int(spec.maximum) if spec.maximum is not None else MAX_SAFE
    if kind == STRING:
        return text(spec.max_length or 64)
    if kind == INTEGER:
        whole = st.integers(int(low), high)
        return st.one_of(whole, whole.filter(lambda v: abs(v) < 2**52).map(float))
    if kind == NUMBER:
        return st.one_of(st.integers(int(low), high),
                         st.floats(low, high, allow_nan=False, allow_infinity=False))
    if kind == BOOLEAN:
        return st.booleans()
    if kind == STRING_LIST:
        return st.lists(text(spec.max_length or 64), max_size=min(spec.max_items or 5, 5))
    if kind == OBJECT:
        return object_for(spec.items or ())
    if kind == OBJECT_LIST:
        return st.lists(object_for(spec.items or ()), max_size=min(spec.max_items or 3, 3))
    if kind == NUMBER_MAP:
        return st.dictionaries(text(16), st.floats(-1e6, 1e6), max_size=3)
    raise AssertionError(kind)  # pragma: no cover


def object_for(specs: tuple[FieldSpec, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {s.name: value_for(s) for s in specs if s.required},
        optional={s.name: value_for(s) for s in specs if not s.required})


def valid_event(contract: Contract, now_ms: int, max_age_ms: int,
                max_skew_ms: int) -> st.SearchStrategy[dict[str, Any]]:
    """A document the contract and the ingest time bounds accept (``ts`` in the window)."""
    fields = {s.name: s for s in contract.fields}
    ts = st.integers(max(0, now_ms - max_age_ms + 1000), now_ms + max_skew_ms - 1000)
    overrides: dict[str, st.SearchStrategy[Any]] = {
        "ts": ts, "schema_version": st.integers(1, contract.version)}

    def build(kind: str | None) -> st.SearchStrategy[dict[str, Any]]:
        needed = set(contract.required_by_type.get(kind, ())) if kind else set()
        required = {n: overrides.get(n, value_for(s)) for n, s in fields.items()
                    if s.required or n in needed}
        optional = {n: overrides.get(n, value_for(s)) for n, s in fields.items()
                    if n not in required}
        if kind is not None:
            required["type"] = st.just(kind)
        extra = st.dictionaries(st.sampled_from(["extra", "x-trace", "\U0001f600"]),
                                st.integers(-2**63, 2**64 - 1) | st.text(max_size=5),
                                max_size=1)
        return st.tuples(st.fixed_dictionaries(required, optional=optional), extra).map(
            lambda parts: {**parts[1], **parts[0]})

    if contract.required_by_type:
        return st.sampled_from(sorted(contract.required_by_type)).flatmap(build)
    return build(None)


# ------------------------------------------------------------------ bad input
WRONG_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(),
    st.text(max_size=5), st.lists(st.integers(-9, 9), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "2**63", "", "\x00"]),
)
EXTREME_NUMBERS = st.sampled_from([0, -1, -(2**63), 2**63, 2**64 - 1, 2**53, 1.5, -0.0,
                                   1e308, -1e308, 5e-324])


# Event times no validator may accept, whatever "now" is (and non-numbers that look like one).
TS_EXTREMES = st.sampled_from([0, -1, -(2**63), 2**63 - 1, 2**63, 2**64 - 1, 1.5, 1e18,
                               253_402_300_800_000, "1700000000000", "NaN", "Infinity",
                               "-Infinity", "", None, True, [1], {"$date": 1}])


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"n": value}
    return value


def _set(doc: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**doc, key: value}


def mutated(doc: dict[str, Any], contract: Contract) -> st.SearchStrategy[dict[str, Any]]:
    """``doc`` with one field dropped, nulled or replaced by a wrong or extreme value."""
    names = [s.name for s in contract.fields] + ["type"] * bool(contract.required_by_type)
    key = st.sampled_from(names)
    return st.one_of(
        TS_EXTREMES.map(lambda v: _set(doc, "ts", v)),
        key.map(lambda k: {n: v for n, v in doc.items() if n != k}),
        st.tuples(key, WRONG_VALUES).map(lambda kv: _set(doc, *kv)),
        st.tuples(key, EXTREME_NUMBERS).map(lambda kv: _set(doc, *kv)),
        st.tuples(key, st.integers(1, 200)).map(lambda kv: _set(doc, kv[0], nested(kv[1]))),
        st.tuples(key, st.integers(129, 70_000)).map(lambda kv: _set(doc, kv[0],
                                                                     "\U0001f600" * kv[1])),
    )


def raw_junk() -> st.SearchStrategy[bytes]:
    """Bytes that are not a JSON object: random bytes, broken UTF-8, lone surrogates, deep
    nesting, JSON scalars, NaN/Infinity literals, huge documents."""
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from([b"", b"null", b"[]", b"0", b'"x"', b"NaN", b"Infinity", b"{",
                         b'{"ts": NaN}', b'{"ts": 1e400}',
                         b'{"ts": 123456789012345678901234567890}', b'{"a": "\\ud800"}',
                         b"\xef\xbb\xbf{}", b"\xc0\xaf", b"\xed\xa0\x80", b"{" * 5000,
                         b"[" * 1100 + b"]" * 1100, b"\x00" * 10]),
        st.integers(1025, 3000).map(lambda d: b'{"n":' * d + b"1" + b"}" * d),
        st.integers(65 * 1024, 70 * 1024).map(lambda n: b'{"pad": "' + b"a" * n + b'"}'),
    )


# A campaign every CampaignBook accepts (agents/promo/campaigns.py rules beyond the contract).
GOOD_CAMPAIGN: dict[str, Any] = {
    "id": "fz-camp", "version": 1, "name": "fuzz", "on": ["purchase", "like"],
    "when": [{"field": "event.source", "op": "==", "value": "live", "reason": "live"},
             {"any": [{"field": "profile.rfm.orders", "op": ">=", "value": 1},
                      {"field": "event.type", "op": "in", "value": ["like", "share"]}]}],
    "action": "coupon", "offer": {"code": "FZ", "discount_pct": 5}, "offer_ttl": "15m",
    "cost_per_trigger": 1.0, "budget": 100, "caps": [{"max": 1, "per": "1h"}],
    "quiet_hours": {"start": "02:00", "end": "03:00", "utc_offset": "+08:00"},
    "holdout": 0.1, "attribution_window": "2h", "starts_at": "2020-01-01T00:00:00+00:00",
    "expires_at": "2099-01-01T00:00:00+00:00", "enabled": True,
}


def mutated_campaign() -> st.SearchStrategy[dict[str, Any]]:
    """GOOD_CAMPAIGN with a top-level or nested field broken."""
    nested_keys = st.sampled_from([("when", 0, "op"), ("when", 0, "value"), ("when", 1, "any"),
                                   ("caps", 0, "per"), ("caps", 0, "max"),
                                   ("quiet_hours", "start"), ("quiet_hours", "utc_offset")])

    def poke(path_value: tuple[tuple[Any, ...], Any]) -> dict[str, Any]:
        path, value = path_value
        doc = orjson.loads(orjson.dumps(GOOD_CAMPAIGN))  # a deep copy
        target = doc
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        return doc

    return st.one_of(mutated(GOOD_CAMPAIGN, CAMPAIGN),
                     st.tuples(nested_keys, st.one_of(WRONG_VALUES, EXTREME_NUMBERS)).map(poke))
