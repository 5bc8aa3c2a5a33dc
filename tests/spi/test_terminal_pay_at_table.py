"""The terminal's pay-at-table memory (spi/terminal/pay_at_table.py): what a reply is matched to.

Pure: messages in, matches out, no session, no clock (§7.23, STYLE.md 16).
"""

from __future__ import annotations

from typing import Any

import pytest

from multipair.exceptions import InvalidRequest
from multipair.spi import messages as m
from multipair.spi.envelope import Message
from multipair.spi.terminal import PayAtTable
from multipair.spi.terminal.pay_at_table import Matched, Unmatched
from tests.spi_shared import load_fixture

BILL: dict[str, Any] = {
    "success": True,
    "bill_id": "b-1",
    "table_id": "12",
    "bill_total_amount": 5000,
    "bill_outstanding_amount": 5000,
    "bill_payment_history": [],
}


def reply(event: str, message_id: str, data: dict[str, Any] | None) -> Message:
    return Message(id=message_id, event=event, data=data)


def desk_with(*requests: tuple[str, m.TerminalPayAtTableRequest]) -> PayAtTable:
    desk = PayAtTable()
    for message_id, request in requests:
        desk.sent(message_id, request, 1.0)
    return desk


def test_a_reply_with_the_request_id_and_event_matches_once() -> None:
    desk = desk_with(("C1.0", m.GetBillDetailsRequest(table_id="12")))
    got = desk.receive(reply("bill_details", "C1.0", BILL))
    assert isinstance(got, Matched)
    assert got.pending is not None
    assert ("C1.0", "get_bill_details", BILL) == (
        got.pending.message_id,
        got.pending.event,
        got.data,
    )
    assert () == desk.pending
    # The JS "missing return" (§11) may answer twice: the second finds nothing.
    assert isinstance(desk.receive(reply("bill_details", "C1.0", BILL)), Unmatched)


@pytest.mark.parametrize(
    ("event", "message_id", "data"),
    [
        ("bill_details", "C1.1", BILL),  # another id
        ("open_tables", "C1.0", {"tables": []}),  # the id, but not what the request expects
        ("bill_details", "C1.0", {"bill_id": "b-1"}),  # unreadable: no success
    ],
)
def test_replies_that_do_not_answer_the_request_leave_it_pending(
    event: str, message_id: str, data: dict[str, Any]
) -> None:
    desk = desk_with(("C1.0", m.GetBillDetailsRequest(table_id="12")))
    assert isinstance(desk.receive(reply(event, message_id, data)), Unmatched)
    assert ["C1.0"] == [p.message_id for p in desk.pending]


def test_an_abandoned_request_ignores_its_late_reply() -> None:
    desk = desk_with(("C1.0", m.GetOpenTablesRequest(operator_id="7")))
    assert True is desk.abandon("C1.0")
    assert False is desk.abandon("C1.0")
    assert isinstance(desk.receive(reply("open_tables", "C1.0", {"tables": []})), Unmatched)


def test_the_flow_ended_ack_is_matched_by_bill_id_under_a_new_id() -> None:
    ended = m.BillPaymentFlowEndedRequest(
        bill_id="b-1", bill_outstanding_amount=0, bill_total_amount=5000, table_id="12"
    )
    desk = desk_with(("C1.3", ended))
    ack = "bill_payment_flow_ended_ack"
    assert isinstance(desk.receive(reply(ack, "authad1", {"bill_id": "b-2"})), Unmatched)
    got = desk.receive(reply(ack, "authad2", {"bill_id": "b-1"}))
    assert isinstance(got, Matched)
    assert got.pending is not None
    assert "C1.3" == got.pending.message_id


def config(desk: PayAtTable) -> dict[str, Any] | None:
    """The desk's table config, read afresh (mypy would keep an earlier narrowing)."""
    return desk.table_config


def test_the_last_table_config_is_kept_pushed_or_answered() -> None:
    desk = desk_with(("C1.0", m.GetTableConfigRequest()))
    assert None is config(desk)
    pushed = {"pay_at_table_enabled": True, "pay_button_label": "Pay"}
    got = desk.receive(reply("set_table_config", "patconf1", pushed))
    assert isinstance(got, Matched)
    assert (None, pushed) == (got.pending, config(desk))
    answered = desk.receive(reply("set_table_config", "C1.0", {"pay_at_table_enabled": False}))
    assert isinstance(answered, Matched)
    assert answered.pending is not None
    assert {"pay_at_table_enabled": False} == config(desk)
    # A config the catalogue cannot read changes nothing.
    assert isinstance(desk.receive(reply("set_table_config", "patconf2", {})), Unmatched)
    assert {"pay_at_table_enabled": False} == config(desk)


def test_terminal_requests_write_the_fixture_shapes() -> None:
    assert {"table_id": "123456", "operator_id": "12345", "payment_flow_started": False} == (
        m.GetBillDetailsRequest(table_id="123456", operator_id="12345").to_data()
    )
    assert None is m.GetTableConfigRequest().to_data()
    payment = m.BillPaymentRequest(
        bill_id="b", table_id="1", payment_type="cash", payment_details={"terminal_ref_id": "r"}
    )
    assert ["bill_id", "operator_id", "payment_type", "table_id", "payment_details"] == list(
        payment.to_data() or {}
    )
    assert "r" == payment.terminal_ref_id
    with pytest.raises(InvalidRequest):
        m.BillPaymentRequest(bill_id="b", table_id="1", payment_type="cheque")


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("BillPaymentWithCard.json", m.BillPaymentRequest),
        ("BillStatusRequest.json", m.GetBillDetailsRequest),
    ],
)
def test_the_fixtures_read_back_and_write_again_unchanged(
    name: str, cls: type[m.TerminalPayAtTableRequest]
) -> None:
    data = load_fixture(name)["message"]["data"]
    request = cls.from_data(data)
    written = request.to_data() or {}
    assert {k: written[k] for k in data} == data
