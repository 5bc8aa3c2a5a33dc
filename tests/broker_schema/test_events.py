"""Events: every type round-trips; readers ignore what they do not know."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import orjson
import pytest

from multipair.broker_schema import (
    EVENT_TYPES,
    CommandRejected,
    Event,
    StatusChanged,
    TransactionCompleted,
    decode_event,
    encode_event,
    event_from_json,
    event_to_json,
)
from multipair.broker_schema._fields import Kind
from multipair.exceptions import CommandError
from tests.broker_schema.helpers import LANE, NOW, entry

AT = dt.datetime(2025, 1, 31, 9, 30, 0, 250_000, tzinfo=dt.UTC)

_SAMPLE_BY_KIND: dict[Kind, Any] = {
    Kind.STR: "text",
    Kind.INT: 42,
    Kind.BOOL: True,
    Kind.TIME: AT,
    Kind.OBJECT: {"a": "1"},
    Kind.OBJECT_LIST: ({"scheme_name": "VISA", "total_value": "1250"},),
    Kind.STR_LIST: ("a", "b"),
}


def _full_event(cls: type[Event]) -> Event:
    """An event of ``cls`` with every field set to a non-default sample value."""
    values: dict[str, Any] = {}
    for spec in cls.wire_fields:
        values[spec.name] = _SAMPLE_BY_KIND[spec.kind]
    values.update(instance_id=LANE, at=AT, command_id="c1")
    return cls(**values)


def _minimal_event(cls: type[Event]) -> Event:
    values: dict[str, Any] = {"instance_id": LANE, "at": AT}
    for spec in cls.wire_fields:
        if spec.required and spec.name not in values:
            values[spec.name] = _SAMPLE_BY_KIND[spec.kind]
    return cls(**values)


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_event_with_every_field_round_trips(kind: str) -> None:
    event = _full_event(EVENT_TYPES[kind])
    assert event == decode_event(encode_event(event))


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_event_with_only_required_fields_round_trips(kind: str) -> None:
    event = _minimal_event(EVENT_TYPES[kind])
    assert event == decode_event(encode_event(event))


def test_event_body_has_common_fields_first_and_nulls_written() -> None:
    event = StatusChanged(instance_id=LANE, at=AT, status="unpaired", flow="idle")
    body = orjson.loads(encode_event(event)["body"])
    assert {
        "type": "status_changed",
        "instance_id": LANE,
        "at": "2025-01-31T09:30:00.250Z",
        "command_id": None,
        "status": "unpaired",
        "flow": "idle",
    } == body
    assert ["type", "instance_id", "at", "command_id"] == list(body)[:4]


def test_event_time_is_kept_in_utc_to_the_millisecond() -> None:
    sydney = dt.timezone(dt.timedelta(hours=11))
    at = dt.datetime(2025, 1, 31, 20, 30, 0, 250_999, tzinfo=sydney)
    event = StatusChanged(instance_id=LANE.upper(), at=at, status="unpaired", flow="idle")
    assert (AT, LANE) == (event.at, event.instance_id)


def test_reader_ignores_fields_it_does_not_know() -> None:
    body = orjson.loads(event_to_json(_minimal_event(StatusChanged)))
    body["battery_mood"] = "sunny"
    assert _minimal_event(StatusChanged) == decode_event(entry(body))


def test_unknown_event_type_is_reported_so_a_reader_can_skip_it() -> None:
    body = {"type": "bill_payment", "instance_id": LANE, "at": "2025-01-31T09:30:00.000Z"}
    with pytest.raises(CommandError) as caught:
        decode_event(entry(body))
    assert "unknown_type" == caught.value.reason


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"at": None}, "wrong_type"),
        ({"at": "yesterday"}, "invalid_value"),
        ({"instance_id": "lane-1"}, "invalid_instance_id"),
        ({"status": 3}, "wrong_type"),
        ({"flow": ...}, "missing_field"),
    ],
)
def test_malformed_event_is_refused_with_its_reason(change: dict[str, Any], expected: str) -> None:
    body = orjson.loads(event_to_json(_minimal_event(StatusChanged)))
    body.update(change)
    body = {k: v for k, v in body.items() if v is not ...}
    with pytest.raises(CommandError) as caught:
        decode_event(entry(body))
    assert expected == caught.value.reason


def test_transaction_outcome_json_rebuilds_the_published_event() -> None:
    event = TransactionCompleted(
        instance_id=LANE,
        at=AT,
        command_id="c1",
        result="success",
        pos_ref_id="order-17",
        tx_type="purchase",
        amount_cents=1250,
        host_response_code="000",
        host_response_text="APPROVED",
        masked_pan="............1111",
        customer_receipt="EFTPOS FROM BANK\r\nPURCHASE $12.50\r\n",
        recovered=True,
    )
    assert event == event_from_json(event_to_json(event))


def test_rejection_event_carries_reason_detail_and_entry_id() -> None:
    event = CommandRejected(
        instance_id=LANE,
        at=NOW,
        command_id="c1",
        reason="wrong_type",
        detail="amount_cents must be an integer number of cents, got 12.5",
        command_type="purchase",
        entry_id="1718000000000-0",
    )
    assert event == decode_event(encode_event(event))


def test_every_event_has_the_common_fields_first() -> None:
    for cls in EVENT_TYPES.values():
        assert ["instance_id", "at", "command_id"] == [s.name for s in cls.wire_fields[:3]]


def test_events_grow_only_by_fields_with_defaults() -> None:
    # Only fields present since v1's first release may be required; any new one needs a default.
    required = {
        kind: sorted(s.name for s in cls.wire_fields if s.required)
        for kind, cls in EVENT_TYPES.items()
    }
    assert {
        "auth_code_required": ["at", "instance_id"],
        "battery": ["at", "battery_level", "instance_id"],
        "command_accepted": ["at", "command_type", "instance_id"],
        "command_rejected": ["at", "detail", "instance_id", "reason"],
        "error": ["at", "detail", "instance_id", "reason"],
        "lane_crashed": ["at", "instance_id"],
        "lane_started": ["at", "host", "instance_id", "pid"],
        "lane_stopped": ["at", "instance_id"],
        "pairing": ["at", "instance_id", "state"],
        "printing": ["at", "instance_id", "success"],
        "settlement": ["at", "instance_id", "result"],
        "signature_required": ["at", "instance_id"],
        "status_changed": ["at", "flow", "instance_id", "status"],
        "terminal_configuration": ["at", "instance_id"],
        "terminal_status": ["at", "instance_id"],
        "transaction_completed": ["at", "instance_id", "result"],
        "transaction_lookup": ["at", "instance_id", "result"],
        "transaction_update": ["at", "instance_id"],
        # pay at table: required from their first release on
        "bill_requested": [
            "answer_by",
            "at",
            "instance_id",
            "operator_id",
            "request_id",
            "table_id",
        ],
        "open_tables_requested": ["answer_by", "at", "instance_id", "operator_id", "request_id"],
        "bill_payment_reported": [
            "amount_cents",
            "answer_by",
            "at",
            "bill_id",
            "instance_id",
            "operator_id",
            "payment_type",
            "request_id",
            "table_id",
        ],
        "bill_flow_ended": [
            "at",
            "bill_id",
            "bill_outstanding_cents",
            "bill_total_cents",
            "instance_id",
            "operator_id",
            "request_id",
            "table_id",
        ],
        "bill_request_expired": ["at", "error_sent", "instance_id", "request", "request_id"],
    } == required


def test_events_are_frozen() -> None:
    event = _minimal_event(StatusChanged)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.at = AT  # type: ignore[misc]
