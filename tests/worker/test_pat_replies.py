"""The lane's pay-at-table decisions (worker/pat_replies.py), without Redis or a terminal."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest

from multipair import broker_schema as bs
from multipair.exceptions import CommandError
from multipair.spi import messages as m
from multipair.spi.pos import PayAtTableRequest
from multipair.store.profiles import PayAtTableConfig
from multipair.worker.pat_replies import (
    BILL_REQUESTS,
    TABLE_REQUESTS,
    Pending,
    bill_entry,
    bill_range,
    bill_reply,
    entry_field,
    payment_event,
    payment_field,
    payment_history,
    refusal,
    request_event,
    table_request,
    tables_reply,
    take,
)

LANE = "8a5e2dcc-bfa0-469f-95d7-eec778b08453"
AT = dt.datetime(2025, 1, 31, 9, 30, tzinfo=dt.UTC)
BY = AT + dt.timedelta(seconds=10)
BILL = Pending(
    request_id="r1", message_id="C1.4", request="get_bill_details", deadline=0, table_id="12"
)
TABLES = Pending(request_id="r2", message_id="C1.5", request="get_open_tables", deadline=0)


def _bill(**fields: object) -> bs.BillDetails:
    return bs.BillDetails(command_id="c1", request_id="r1", **fields)  # type: ignore[arg-type]


def test_the_profile_config_becomes_the_terminal_config() -> None:
    config = PayAtTableConfig(enabled=True, operator_ids=("7",), answer_timeout_ms=5000)
    assert (None, m.SetTableConfigRequest(pay_at_table_enabled=True, operator_id_list=("7",))) == (
        table_request(None),
        table_request(config),
    )


@pytest.mark.parametrize(
    ("request_id", "kinds", "answer"),
    [
        ("r1", BILL_REQUESTS, BILL),
        ("r2", TABLE_REQUESTS, TABLES),
        ("r9", BILL_REQUESTS, "unknown_request"),  # never asked, answered or expired
        ("r2", BILL_REQUESTS, "unknown_request"),  # bill_details for an open-tables request
        ("r1", TABLE_REQUESTS, "unknown_request"),
    ],
)
def test_an_answer_is_taken_only_for_a_pending_request_of_its_kind(
    request_id: str, kinds: frozenset[str], answer: object
) -> None:
    pending = {"r1": BILL, "r2": TABLES}
    try:
        got: object = take(pending, request_id, kinds, "bill_details")
    except CommandError as exc:
        got = exc.reason
    assert answer == got


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"bill_id": "b1", "total_cents": 5000, "outstanding_cents": 2000},
            m.BillDetailsReply(
                success=True,
                bill_id="b1",
                table_id="12",
                bill_total_amount=5000,
                bill_outstanding_amount=2000,
            ),
        ),
        (
            {"error": "INVALID_OPERATOR_ID"},
            m.BillDetailsReply(success=False, table_id="12", error_reason="INVALID_OPERATOR_ID"),
        ),
        (  # §7.23: a bill of 0 is no bill
            {"bill_id": "b1", "table_id": "T", "total_cents": 0, "outstanding_cents": 0},
            m.BillDetailsReply(
                success=False, bill_id="b1", table_id="T", error_reason="INVALID_TABLE_ID"
            ),
        ),
    ],
)
def test_bill_details_become_the_terminal_reply(
    fields: dict[str, object], expected: m.BillDetailsReply
) -> None:
    assert expected == bill_reply(_bill(**fields), BILL, ())


def test_open_tables_fill_their_defaults() -> None:
    command = bs.OpenTables(
        command_id="c2",
        request_id="r2",
        tables=({"table_id": "1"}, {"table_id": "2", "label": "Patio", "outstanding_cents": 9}),
    )
    assert (
        m.OpenTable(table_id="1", label="", bill_outstanding_amount=0),
        m.OpenTable(table_id="2", label="Patio", bill_outstanding_amount=9),
    ) == tables_reply(command).tables


def test_nobody_answering_gets_the_protocols_no() -> None:
    assert [
        (
            m.BillDetailsReply(success=False, table_id="12", error_reason="INVALID_TABLE_ID"),
            "INVALID_TABLE_ID",
        ),
        (m.OpenTablesReply(), ""),
    ] == [refusal(BILL), refusal(TABLES)]


def _payment(ref: str) -> PayAtTableRequest:
    data = {
        "bill_id": "b1",
        "table_id": "12",
        "operator_id": "7",
        "payment_type": "card",
        "payment_details": {"purchase_amount": 1000, "tip_amount": 100, "terminal_ref_id": ref},
    }
    message = m.PayAtTableMessage.parse("C1.6", "bill_payment", data)
    return PayAtTableRequest(message_id="C1.6", read=m.read_pay_at_table_request(message))


def test_a_payment_is_reported_and_stored_by_its_reference() -> None:
    event, pending = payment_event(LANE, AT, "r3", BY, _payment("t1"), duplicate=False)
    no_ref, _ = payment_event(LANE, AT, "r4", BY, _payment(""), duplicate=False)
    assert (1000, 100, "t1", "b1", "bill_payment", "t1", "~r4") == (
        event.amount_cents,
        event.tip_cents,
        event.terminal_ref_id,
        pending.bill_id,
        pending.request,
        payment_field(event),
        payment_field(no_ref),
    )


def test_history_is_the_bills_stored_payments_oldest_first() -> None:
    def stored(at: str, bill_id: str, kind: str) -> bytes:
        event, _ = payment_event(
            LANE, dt.datetime.fromisoformat(at), "r", BY, _payment(at), duplicate=False
        )
        body = orjson.loads(bs.event_to_json(event))
        return orjson.dumps({**body, "bill_id": bill_id, "payment_type": kind})

    values = [
        stored("2025-01-31T09:32:00+00:00", "b1", "cash"),
        stored("2025-01-31T09:31:00+00:00", "b1", "card"),
        stored("2025-01-31T09:30:00+00:00", "b2", "card"),
        b"not json",
        b'{"bill_id": "b1"}',
    ]
    history = payment_history(values, "b1")
    assert (["card", "cash"], "2025-01-31T09:31:00+00:00") == (
        [entry.payment_type for entry in history],
        history[0].payment_summary["terminal_ref_id"],
    )


def test_bill_and_tables_requests_are_published_and_kept_pending() -> None:
    bill = m.PayAtTableMessage.parse("C1.7", "get_bill_details", {"table_id": "12"})
    asked = PayAtTableRequest(message_id="C1.7", read=m.read_pay_at_table_request(bill))
    event, pending = request_event(LANE, AT, "r5", BY, asked)
    assert (bs.BillRequested, "12", BY, "C1.7", BY.timestamp()) == (
        type(event),
        getattr(event, "table_id", None),
        getattr(event, "answer_by", None),
        pending.message_id if pending else None,
        pending.deadline if pending else None,
    )


def test_a_bill_range_holds_exactly_that_bills_entries() -> None:
    """Bill ids that prefix one another, or hold the separator, never share entries."""
    entries = sorted(
        bill_entry(bill, field)
        for bill, field in [
            ("b1", "r1"),
            ("b1", "r2"),
            ("b10", "r3"),
            ("b", "1r4"),
            ("b1:", "r5"),
            ("", "r6"),
            ("é", "r7"),
        ]
    )

    def of(bill: str) -> list[str]:
        low, high = bill_range(bill)
        return [entry_field(e) for e in entries if low[1:] <= e < high[1:]]

    assert (["r1", "r2"], ["r3"], ["1r4"], ["r5"], ["r6"], ["r7"]) == (
        of("b1"),
        of("b10"),
        of("b"),
        of("b1:"),
        of(""),
        of("é"),
    )
