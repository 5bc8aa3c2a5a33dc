"""Pay at table in the contract: set_table_config, bill_details, open_tables and their events."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest

from multipair.broker_schema import Keys, Reason, decode_command, decode_event, encode_event
from multipair.broker_schema.commands import CommandKind
from multipair.broker_schema.events import BillPaymentReported, BillRequested
from multipair.broker_schema.pat_commands import BillDetails, OpenTables, SetTableConfig
from multipair.exceptions import CommandError
from tests.broker_schema.helpers import LANE, NOW, entry


def _decode(body: dict[str, Any]) -> Any:
    return decode_command(entry({"command_id": "c1", **body}), now=NOW)


def _reason(body: dict[str, Any]) -> str:
    with pytest.raises(CommandError) as caught:
        _decode(body)
    return caught.value.reason


def test_kinds_are_as_agreed() -> None:
    assert (CommandKind.TRANSACTION, False, CommandKind.CONTROL, CommandKind.CONTROL) == (
        SetTableConfig.kind,
        SetTableConfig.records_tx,
        BillDetails.kind,
        OpenTables.kind,
    )


def test_set_table_config_reads_a_list_of_strings_back_as_a_tuple() -> None:
    command = _decode({"type": "set_table_config", "operator_ids": ["7", "12"]})
    assert (("7", "12"), None) == (command.operator_ids, command.enabled)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, Reason.INVALID_VALUE),  # at least one option
        ({"operator_ids": "7"}, Reason.WRONG_TYPE),
        ({"operator_ids": ["7", 12]}, Reason.WRONG_TYPE),
        ({"operator_ids": [""]}, Reason.INVALID_VALUE),
        ({"operator_ids": ["x" * 33]}, Reason.INVALID_VALUE),
        ({"operator_ids": [str(i) for i in range(101)]}, Reason.INVALID_VALUE),
        ({"pay_button_label": "x" * 65}, Reason.INVALID_VALUE),
        ({"table_id_label": "a\nb"}, Reason.INVALID_VALUE),
        ({"answer_timeout_ms": 999}, Reason.INVALID_VALUE),
        ({"answer_timeout_ms": 60_001}, Reason.INVALID_VALUE),
        ({"answer_timeout_ms": 5000.0}, Reason.WRONG_TYPE),
        ({"enabled": 1}, Reason.WRONG_TYPE),
        ({"colour": "red"}, Reason.UNKNOWN_FIELD),
    ],
)
def test_set_table_config_is_refused_naming_its_rule(body: dict[str, Any], reason: str) -> None:
    assert reason == _reason({"type": "set_table_config", **body})


def test_bill_details_carries_either_a_bill_or_an_error() -> None:
    bill = _decode(
        {
            "type": "bill_details",
            "request_id": "r1",
            "bill_id": "b1",
            "total_cents": 5000,
            "outstanding_cents": 0,
        }
    )
    error = _decode({"type": "bill_details", "request_id": "r1", "error": "INVALID_BILL_ID"})
    assert (("b1", 5000, 0, None), ("INVALID_BILL_ID", None)) == (
        (bill.bill_id, bill.total_cents, bill.outstanding_cents, bill.error),
        (error.error, error.total_cents),
    )


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"bill_id": "b1", "total_cents": 5000}, Reason.INVALID_VALUE),
        ({"total_cents": 5000, "outstanding_cents": 0}, Reason.INVALID_VALUE),
        ({"error": "INVALID_TABLE_ID", "total_cents": 1}, Reason.INVALID_VALUE),
        ({"error": "NO_SUCH_THING"}, Reason.INVALID_VALUE),
        ({"bill_id": "b1", "total_cents": -1, "outstanding_cents": 0}, Reason.INVALID_VALUE),
        ({"bill_id": "", "total_cents": 1, "outstanding_cents": 0}, Reason.INVALID_VALUE),
        ({"request_id": None, "error": "INVALID_TABLE_ID"}, Reason.MISSING_FIELD),
        ({"request_id": "", "error": "INVALID_TABLE_ID"}, Reason.INVALID_VALUE),
    ],
)
def test_bad_bill_details_are_refused(body: dict[str, Any], reason: str) -> None:
    body = {"request_id": "r1", **body}
    if body["request_id"] is None:
        del body["request_id"]
    assert reason == _reason({"type": "bill_details", **body})


def test_open_tables_may_be_empty_and_items_have_defaults() -> None:
    empty = _decode({"type": "open_tables", "request_id": "r2", "tables": []})
    one = _decode({"type": "open_tables", "request_id": "r2", "tables": [{"table_id": "12"}]})
    assert ((), ({"table_id": "12"},)) == (empty.tables, one.tables)


@pytest.mark.parametrize(
    ("tables", "reason"),
    [
        ("12", Reason.WRONG_TYPE),
        (["12"], Reason.WRONG_TYPE),
        ([{"label": "x"}], Reason.INVALID_VALUE),
        ([{"table_id": ""}], Reason.INVALID_VALUE),
        ([{"table_id": "1", "outstanding_cents": "5"}], Reason.INVALID_VALUE),
        ([{"table_id": "1", "outstanding_cents": -5}], Reason.INVALID_VALUE),
        ([{"table_id": "1", "outstanding_cents": True}], Reason.INVALID_VALUE),
        ([{"table_id": "1", "label": 3}], Reason.INVALID_VALUE),
        ([{"table_id": "1", "seats": 3}], Reason.INVALID_VALUE),
    ],
)
def test_bad_open_tables_are_refused(tables: Any, reason: str) -> None:
    assert reason == _reason({"type": "open_tables", "request_id": "r2", "tables": tables})


def test_open_tables_needs_its_list() -> None:
    assert Reason.MISSING_FIELD == _reason({"type": "open_tables", "request_id": "r2"})


def test_pay_at_table_events_round_trip_with_their_deadline() -> None:
    at = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)
    events = [
        BillRequested(
            instance_id=LANE,
            at=at,
            request_id="7",
            answer_by=at + dt.timedelta(seconds=10),
            table_id="12",
            operator_id="op",
        ),
        BillPaymentReported(
            instance_id=LANE,
            at=at,
            request_id="8",
            answer_by=at,
            bill_id="b1",
            table_id="12",
            operator_id="op",
            payment_type="card",
            amount_cents=1000,
            terminal_ref_id="t1",
            payment_summary={"rrn": "1"},
        ),
    ]
    assert events == [decode_event(encode_event(e)) for e in events]
    body = orjson.loads(encode_event(events[0])["body"])
    assert ("2025-01-31T09:30:10.000Z", "", False) == (
        body["answer_by"],
        body["bill_id"],
        body["payment_flow_started"],
    )


def test_bill_payments_key_shares_the_lane_slot() -> None:
    assert f"mp:lane:{{{LANE}}}:pat:payments" == Keys().pat_payments(LANE)
    assert Keys().pat_payments(LANE) in Keys().lane_fixed_keys(LANE)
