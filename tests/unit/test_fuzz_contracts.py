"""Property-based fuzzing of ingest and the pure folds (issue 8, bad input).

* ``Validator.decode`` never raises: any bytes become a typed record or a Rejection with a
  stable error class and a reason, and that rejection always makes an encodable dead letter.
* Every valid document of every input contract (derived from its FieldSpecs) is accepted.
* RoomState / UserProfile fold any valid events, in any order, with duplicates, without
  raising; what they emit meets the output contract and their stored form round-trips.
* A broken campaign record is refused with CampaignError, never another exception.
* Every valid live event and click maps to a ClickHouse history row its columns can hold.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agents.promo.campaigns import CampaignBook, CampaignError
from agents.promo.triggers import describe
from agents.rooms.state import RoomState
from agents.sinks.clickhouse_schema import TABLES, HistoryTable
from agents.users.profile import UserProfile
from config.settings import Settings
from streams.contracts import (
    CAMPAIGN,
    CATALOG_ITEM,
    CLICK_EVENT,
    CONSENT_EVENT,
    DEAD_LETTER,
    INPUT_CONTRACTS,
    LIVE_EVENT,
    ROOM_INSIGHT,
    Contract,
    as_dict,
    check_contract,
)
from streams.ingest import ERROR_CLASSES, Rejection, Validator, dead_letter
from tests.fuzzing import GOOD_CAMPAIGN, mutated, mutated_campaign, raw_junk, valid_event

NOW = 1_800_000_000_000
LIMITS = Settings()
MAX_AGE_MS = int(LIMITS.max_event_age_s * 1000)
MAX_SKEW_MS = int(LIMITS.max_future_skew_s * 1000)
FUZZ = settings(max_examples=120, deadline=None)
FOLDS = settings(max_examples=50, deadline=None)  # each example folds up to ~40 events
CONTRACTS = pytest.mark.parametrize("contract", INPUT_CONTRACTS, ids=lambda c: c.name)


def validator(contract: Contract) -> Validator:
    return Validator.from_settings(contract, LIMITS)


def check_outcome(contract: Contract, raw: bytes | None, result: Any) -> None:
    """A record of the contract, or a rejection that makes a well-formed dead letter."""
    if not isinstance(result, Rejection):
        assert isinstance(result, contract.record)
        orjson.dumps(as_dict(result))  # a typed record is always encodable again
        return
    assert result.error_class in ERROR_CLASSES
    assert result.reason.strip()
    body, headers = dead_letter(raw, result, topic="t.live-events", partition=1, offset=7,
                                received_at=NOW)
    letter = check_contract(DEAD_LETTER, orjson.loads(body))
    assert letter["error_class"] == result.error_class and letter["reason"] == result.reason
    payload = letter["payload"].encode() if letter["payload_encoding"] == "utf-8" \
        else base64.b64decode(letter["payload"])
    assert payload == (raw or b"")[:4096]
    assert letter["payload_bytes"] == len(raw or b"")
    assert all(isinstance(v, bytes) for v in headers.values())
    assert headers["lp-error-class"] == result.error_class.encode()
    assert headers["lp-reason"] and headers["lp-source-offset"] == b"7"


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_valid_events_are_accepted(contract: Contract, data: st.DataObject) -> None:
    doc = data.draw(valid_event(contract, NOW, MAX_AGE_MS, MAX_SKEW_MS))
    raw = orjson.dumps(doc)
    result = validator(contract).decode(raw, NOW)
    assert isinstance(result, contract.record), (doc, result)
    check_outcome(contract, raw, result)


@CONTRACTS
@FUZZ
@given(data=st.data())
def test_mutated_events_never_raise(contract: Contract, data: st.DataObject) -> None:
    doc = data.draw(valid_event(contract, NOW, MAX_AGE_MS, MAX_SKEW_MS))
    bad = data.draw(mutated(doc, contract))
    raw = orjson.dumps(bad)
    check_outcome(contract, raw, validator(contract).decode(raw, NOW))


@CONTRACTS
@FUZZ
@given(raw=raw_junk())
@example(raw=None)
@example(raw=b'{"a": "\\ud800"}')
def test_junk_bytes_are_rejected(contract: Contract, raw: bytes | None) -> None:
    result = validator(contract).decode(raw, NOW)
    assert isinstance(result, Rejection)
    check_outcome(contract, raw, result)


# ------------------------------------------------------------------ folds
def records(contract: Contract, n: int) -> st.SearchStrategy[list[Any]]:
    """Up to ``n`` valid records, any order, some repeated verbatim (redelivery)."""
    check = validator(contract)
    one = valid_event(contract, NOW, MAX_AGE_MS, MAX_SKEW_MS).map(
        lambda doc: check.decode(orjson.dumps(money_capped(doc)), NOW))
    return st.lists(one, min_size=1, max_size=n).flatmap(
        lambda recs: st.lists(st.sampled_from(recs), min_size=len(recs),
                              max_size=len(recs) + 5).map(lambda dup: recs + dup)).flatmap(
        st.permutations)


def money_capped(doc: dict[str, Any]) -> dict[str, Any]:
    """Amounts up to 1e12, so sums of a few stay in the outputs' +-2**53 range
    (test_largest_accepted_amounts_fold_and_round_trip covers the largest ones)."""
    return {k: min(v, 1e12) if k in ("amount", "price") else v for k, v in doc.items()}


def roundtrip(stored: dict[str, Any]) -> dict[str, Any]:
    return orjson.loads(orjson.dumps(stored))  # what a table changelog / Redis gives back


@FOLDS
@given(events=records(LIVE_EVENT, 12), room_id=st.sampled_from(["r", "房间-\u202e\U0001f600"]))
def test_room_state_folds_any_events(events: list[Any], room_id: str) -> None:
    room = RoomState(room_id)
    for event in events:
        event.room_id = room_id
        room.apply(event)
        room.expire_viewers(60_000)
        insight = as_dict(room.insight(NOW, live=True))
        check_contract(ROOM_INSIGHT, orjson.loads(orjson.dumps(insight)))
    stored = roundtrip(room.to_dict())
    again = RoomState.from_dict(stored)
    assert roundtrip(again.to_dict()) == stored
    assert again.insight(NOW).events_total == room.events_total == len(events)


@FOLDS
@given(live=records(LIVE_EVENT, 8), clicks=records(CLICK_EVENT, 8),
       items=records(CATALOG_ITEM, 4), consent=records(CONSENT_EVENT, 3),
       data=st.data())
def test_user_profile_folds_any_events(live: list[Any], clicks: list[Any], items: list[Any],
                                       consent: list[Any], data: st.DataObject) -> None:
    user = "u-\u200f\U0001f600"
    catalog = {item.item_id: as_dict(item) for item in items}
    events = data.draw(st.permutations(live + clicks))
    for i, item_id in enumerate(catalog):  # some events are about catalogued items
        if i < len(events) and events[i].item_id is not None:
            events[i].item_id = item_id
    profile = UserProfile(user)
    for i, event in enumerate(events):
        event.user_id = user
        profile = UserProfile.from_dict(roundtrip(profile.to_dict()))
        profile.apply(event, catalog.get)
        if i < len(consent):
            profile.set_consent(consent[i].consent, consent[i].ts)
        orjson.dumps(profile.view(profile.updated_at))
    # product_pin is the host's act, not the viewer's: not in the viewer's profile
    assert profile.events == sum(1 for e in events if e.type != "product_pin")
    stored = roundtrip(profile.to_dict())
    assert roundtrip(UserProfile.from_dict(stored).to_dict()) == stored


# ------------------------------------------------------------------ regressions
@given(amount=st.one_of(st.floats(2.0**53, 1.7e308), st.integers(2**53, 2**64 - 1)))
@example(amount=1.7e308)  # found by the fold test: two such gifts summed to inf, stored as
# null, and every later event of the room failed to restore its state (TypeError)
@example(amount=2**64 - 1)
@settings(max_examples=30, deadline=None)
def test_numbers_beyond_2_53_are_rejected(amount: float) -> None:
    raw = orjson.dumps({"event_id": "e", "type": "gift", "ts": NOW, "room_id": "r",
                        "user_id": "u", "amount": amount})
    result = validator(LIVE_EVENT).decode(raw, NOW)
    assert isinstance(result, Rejection) and result.error_class == "out_of_range"
    check_outcome(LIVE_EVENT, raw, result)


def test_largest_accepted_amounts_fold_and_round_trip() -> None:
    check = validator(LIVE_EVENT)
    room, profile = RoomState("r"), UserProfile("u")
    for i in range(200):
        kind = ("gift", "purchase")[i % 2]
        rec = check.decode(orjson.dumps({
            "event_id": f"e{i}", "type": kind, "ts": NOW + i, "room_id": "r", "user_id": "u",
            "item_id": "i", "amount": 2**53 - 1, "quantity": 2**32 - 1}), NOW)
        assert not isinstance(rec, Rejection), rec
        room.apply(rec)
        profile.apply(rec)
        room = RoomState.from_dict(roundtrip(room.to_dict()))
        profile = UserProfile.from_dict(roundtrip(profile.to_dict()))
    insight = orjson.loads(orjson.dumps(as_dict(room.insight(NOW))))
    assert insight["gmv"] == pytest.approx(100 * (2**53 - 1))
    orjson.dumps(profile.view(NOW))


def test_good_campaign_is_accepted() -> None:
    book = CampaignBook()
    assert book.apply("fz-camp", GOOD_CAMPAIGN) == "applied"


def test_contract_without_event_time_is_validated() -> None:
    """Found by test_valid_events_are_accepted[campaign]: Validator.check read obj["ts"]
    unconditionally and raised KeyError for the campaign contract (it has no ts)."""
    raw = b'{"id": "c", "version": 1, "on": ["like"], "action": "coupon"}'
    result = validator(CAMPAIGN).decode(raw, NOW)
    assert type(result).__name__ == "CampaignRecord"
    # then by the ts mutation: an extra "ts" (a string) was compared with now (TypeError)
    raw = b'{"id": "c", "version": 1, "on": ["like"], "action": "coupon", "ts": "1"}'
    assert type(validator(CAMPAIGN).decode(raw, NOW)).__name__ == "CampaignRecord"


@FUZZ
@given(doc=mutated_campaign(), key=st.sampled_from([None, "fz-camp", "other"]))
# found by the integration corpus: float(None) raised TypeError out of Campaign.from_dict, and
# the campaigns follower of every worker retried that record for ever
@example(doc={**GOOD_CAMPAIGN, "cost_per_trigger": None}, key="fz-camp")
@example(doc={**GOOD_CAMPAIGN, "holdout": None}, key=None)
def test_campaign_book_refuses_bad_definitions_cleanly(doc: dict[str, Any],
                                                       key: str | None) -> None:
    """A broken campaign record is refused with CampaignError (listed in ``rejected``),
    never another exception: the campaigns follower would retry the record for ever."""
    book = CampaignBook()
    try:
        book.apply(key, doc)
    except CampaignError as exc:
        assert str(exc) and book.rejected
    for campaign in book.campaigns():
        describe(campaign, "topic", NOW)


# ------------------------------------------------------------------ ClickHouse history rows
INT_RANGES = {"UInt8": 2**8, "UInt16": 2**16, "UInt32": 2**32, "UInt64": 2**64}
RAW_TABLES = [t for t in TABLES if t.raw_input]


def fits(kind: str, value: Any) -> bool:
    """Whether ``value`` is what clickhouse-driver can write to a column of ``kind``."""
    if kind in INT_RANGES:
        return type(value) is int and 0 <= value < INT_RANGES[kind]
    if kind == "Float64":
        return type(value) is float and value == value and abs(value) != float("inf")
    if kind.startswith("Array("):
        return isinstance(value, list) and all(fits(kind[6:-1], v) for v in value)
    return isinstance(value, str)  # String, LowCardinality(String)


@pytest.mark.parametrize("table", RAW_TABLES, ids=lambda t: t.name)
@FUZZ
@given(data=st.data())
# found by this test: a valid quantity of 2**40 could not be packed into the UInt32 column,
# the whole batch's insert failed and the history sink retried it for ever
@example(data=None)
def test_valid_inputs_fit_their_clickhouse_columns(table: HistoryTable,
                                                  data: st.DataObject | None) -> None:
    contract = table.contract
    if data is None:
        if "quantity" not in table.column_names:
            return  # the explicit example is an event's quantity
        doc = {"event_id": "e", "type": "purchase", "ts": NOW, "room_id": "r", "user_id": "u",
               "session_id": "s", "item_id": "i", "amount": 1, "price": 1, "quantity": 2**40}
        result = validator(contract).decode(orjson.dumps(doc), NOW)
        assert isinstance(result, Rejection) and result.error_class == "out_of_range"
        return
    doc = data.draw(valid_event(contract, NOW, MAX_AGE_MS, MAX_SKEW_MS))
    record = validator(contract).decode(orjson.dumps(doc), NOW)
    row = table.row(as_dict(record), lambda user: "pid-" + user)
    assert len(row) == len(table.columns)
    for column, value in zip(table.columns, row, strict=True):
        assert fits(column.type.replace("LowCardinality(String)", "String"), value), (
            column, value)
