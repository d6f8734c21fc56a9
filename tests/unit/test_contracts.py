"""Contracts: the exported JSON Schemas are the code's, and both agree on what is valid."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts import (
    ALL_CONTRACTS,
    CATALOG_ITEM,
    CLICK_EVENT,
    CONSENT_EVENT,
    LIVE_EVENT,
    PROMO_TRIGGER,
    ContractError,
    check_contract,
    json_schema,
    schema_filename,
    validate,
)
from streams.schemas import SCHEMA_DIR, check_schemas, render

GOOD_LIVE = {"event_id": "e1", "type": "purchase", "ts": 1_700_000_000_000, "room_id": "r1",
             "user_id": "u1", "item_id": "i1", "amount": 19.9, "quantity": 1}
GOOD_CLICK = {"event_id": "c1", "type": "view", "ts": 1_700_000_000_000, "user_id": "u1",
              "session_id": "s1", "item_id": "i1", "category": "shoes", "price": 9.5}
GOOD_ITEM = {"item_id": "i1", "ts": 1_700_000_000_000, "category": "shoes", "price": 9.5,
             "in_stock": True, "brand": "b", "tags": ["x", "y"]}
GOOD_CONSENT = {"user_id": "u1", "consent": False, "ts": 1_700_000_000_000, "source": "app"}
GOOD_TRIGGER = {"schema_version": 1, "idempotency_key": "k", "campaign_id": "c",
                "campaign_version": 1, "user_id": "u1", "action": "coupon", "offer": {},
                "reasons": ["r"], "scores": {"leave_risk": 0.7}, "event_ts": 1,
                "source": {"topic": "t", "event_id": "e", "type": "like"}, "ts": 2,
                "expires_at": 3}


def test_exported_schema_files_match_the_code() -> None:
    assert check_schemas() == []
    for contract in ALL_CONTRACTS:
        on_disk = orjson.loads((SCHEMA_DIR / schema_filename(contract)).read_bytes())
        assert on_disk == json_schema(contract)
        assert render(on_disk) == (SCHEMA_DIR / schema_filename(contract)).read_bytes()


@pytest.mark.parametrize("contract", ALL_CONTRACTS, ids=lambda c: c.name)
def test_exported_schemas_are_valid_json_schema(contract: Any) -> None:
    jsonschema.Draft202012Validator.check_schema(json_schema(contract))


def test_every_live_type_needs_its_fields() -> None:
    for kind, needed in LIVE_EVENT.required_by_type.items():
        event = {**GOOD_LIVE, "type": kind, "text": "hi"}
        check_contract(LIVE_EVENT, event)
        for name in needed:
            broken = {k: v for k, v in event.items() if k != name}
            with pytest.raises(ContractError) as err:
                check_contract(LIVE_EVENT, broken)
            assert err.value.error_class == "missing_field"


@pytest.mark.parametrize(
    ("patch", "error_class"),
    [
        ({"ts": "now"}, "wrong_type"),
        ({"ts": 1.5}, "wrong_type"),
        ({"ts": True}, "wrong_type"),
        ({"amount": -1}, "out_of_range"),
        ({"amount": "3"}, "wrong_type"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": 3}, "wrong_type"),
        ({"room_id": "r" * 200}, "out_of_range"),
        ({"schema_version": 99}, "unsupported_version"),
        ({"quantity": 0}, "out_of_range"),
    ],
)
def test_static_rules(patch: dict[str, Any], error_class: str) -> None:
    with pytest.raises(ContractError) as err:
        check_contract(LIVE_EVENT, {**GOOD_LIVE, **patch})
    assert err.value.error_class == error_class
    assert err.value.reason


def test_records_are_typed_and_ignore_unknown_fields() -> None:
    rec = validate(CLICK_EVENT, {**GOOD_CLICK, "extra": {"nested": 1}})
    assert rec.item_id == "i1" and rec.price == 9.5 and not hasattr(rec, "extra")
    item = validate(CATALOG_ITEM, GOOD_ITEM)
    assert item.tags == ["x", "y"] and item.in_stock is True


# The runtime validator and the exported schema must agree on every input.
values = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**13), st.floats(-5, 1e6),
                   st.text(max_size=5), st.lists(st.text(max_size=3), max_size=3))


def mutations(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from([*base.keys(), "type", "schema_version", "text", "amount", "tags"])
    return st.lists(st.tuples(keys, values | st.just("__drop__")), max_size=4).map(
        lambda edits: _apply(base, edits))


def _apply(base: dict[str, Any], edits: list[tuple[str, Any]]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in edits:
        if value == "__drop__":
            out.pop(key, None)
        elif value is not None:
            out[key] = value
    return out


@pytest.mark.parametrize(("contract", "base"), [(LIVE_EVENT, GOOD_LIVE), (CLICK_EVENT, GOOD_CLICK),
                                                (CATALOG_ITEM, GOOD_ITEM),
                                                (CONSENT_EVENT, GOOD_CONSENT)],
                         ids=["live", "click", "catalog", "consent"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_validator_agrees_with_exported_schema(contract: Any, base: dict[str, Any],
                                               data: st.DataObject) -> None:
    event = data.draw(mutations(base))
    schema = jsonschema.Draft202012Validator(json_schema(contract))
    schema_ok = schema.is_valid(event)
    try:
        check_contract(contract, event)
        code_ok = True
    except ContractError:
        code_ok = False
    assert code_ok == schema_ok, (event, list(schema.iter_errors(event)))


@pytest.mark.parametrize("scores", [{}, {"a": 1, "b": 0.5}, {"a": "high"}, {"a": True},
                                    {"a": None}, {"a": [1]}, [], "x"])
def test_number_maps_agree_with_the_exported_schema(scores: Any) -> None:
    trigger = {**GOOD_TRIGGER, "scores": scores}
    schema_ok = jsonschema.Draft202012Validator(json_schema(PROMO_TRIGGER)).is_valid(trigger)
    try:
        check_contract(PROMO_TRIGGER, trigger)
        code_ok = True
    except ContractError:
        code_ok = False
    assert code_ok == schema_ok == (isinstance(scores, dict) and all(
        type(v) in (int, float) for v in scores.values()))
