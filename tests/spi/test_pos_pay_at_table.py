"""Pay at table on the POS side (spi/pos/table.py): config, requests read strictly, replies.

Against the reference fixtures BillStatusRequest.json, BillPaymentWithCard.json and
BillDetailsResponse.json (../shared/spi/fixtures; skipped when absent).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from multipair.spi import messages as m
from multipair.spi import terminal as t
from multipair.spi.envelope import RejectReason, decode_frame
from multipair.spi.messages.pay_at_table import ReadPayAtTableRequest
from multipair.spi.pos import (
    BillPaymentRefused,
    FrameRejected,
    IgnoredMessage,
    PayAtTableRequest,
    PosSession,
    PosSessionEvent,
)
from tests.spi.helpers import KEYS, TEST_POS_INFO, VECTOR_EPOCH, terminal_frame
from tests.spi.test_sessions import Pair
from tests.spi_shared import load_fixture

NOW = VECTOR_EPOCH
ON = m.SetTableConfigRequest(
    pay_at_table_enabled=True,
    operator_id_enabled=True,
    tipping_enabled=True,
    pay_button_label="Pay at table",
    operator_id_list=("7", "12"),
)


def _messages(session: PosSession) -> list[dict[str, Any]]:
    """The frames the session queued, as their inner messages."""
    out = []
    for frame in session.data_to_send():
        got = decode_frame(frame, KEYS)
        out.append(json.loads(got.inner_text)["message"])  # type: ignore[union-attr]
    return out


def _ready(session: PosSession) -> list[dict[str, Any]]:
    """Connect and answer the first ping: the frames of ready-to-transact."""
    session.connection_made(NOW)
    (ping,) = _messages(session)
    session.receive_text(terminal_frame("pong", ping["id"], secrets=KEYS, conn_id="C1"), NOW)
    return _messages(session)


def _connected(config: m.SetTableConfigRequest | None = ON) -> PosSession:
    session = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=KEYS)
    session.set_table_config(config, NOW)
    _ready(session)
    session.events_received()
    return session


def _receive(session: PosSession, event: str, message_id: str, data: Any) -> list[PosSessionEvent]:
    session.receive_text(terminal_frame(event, message_id, data, secrets=KEYS, conn_id="C1"), NOW)
    return session.events_received()


def _fixture(name: str) -> dict[str, Any]:
    message: dict[str, Any] = load_fixture(name)["message"]
    return message


# --- the table config --------------------------------------------------------------------


def test_get_table_config_is_answered_off_until_pay_at_table_is_set_up() -> None:
    session = _connected(None)
    _receive(session, "get_table_config", "C1.5", None)
    assert [("C1.5", "set_table_config", {"pay_at_table_enabled": False})] == [
        (msg["id"], msg["event"], msg["data"]) for msg in _messages(session)
    ]


def test_get_table_config_is_answered_with_the_config_under_its_id() -> None:
    session = _connected()
    _receive(session, "get_table_config", "C1.6", None)
    (reply,) = _messages(session)
    assert ("C1.6", ON.to_data()) == (reply["id"], reply["data"])


def test_config_set_while_ready_is_pushed_at_once_with_a_patconf_id() -> None:
    session = _connected(None)
    pushed = session.set_table_config(ON, NOW)
    (msg,) = _messages(session)
    assert (pushed, True, "set_table_config", ON.to_data()) == (
        msg["id"],
        msg["id"].startswith("patconf"),
        msg["event"],
        msg["data"],
    )


def test_config_set_while_disconnected_is_kept_and_not_sent() -> None:
    session = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=KEYS)
    assert (None, ON) == (session.set_table_config(ON, NOW), session.table_config)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (ON, ["set_pos_info", "set_table_config", "get_terminal_configuration"]),
        (m.SetTableConfigRequest(), ["set_pos_info", "get_terminal_configuration"]),
        (None, ["set_pos_info", "get_terminal_configuration"]),
    ],
)
def test_an_enabled_config_is_pushed_at_every_ready_to_transact(
    config: m.SetTableConfigRequest | None, expected: list[str]
) -> None:
    session = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=KEYS)
    session.set_table_config(config, NOW)
    assert expected == [msg["event"] for msg in _ready(session)]


# --- requests, read strictly ---------------------------------------------------------------


def test_bill_request_of_the_fixture_is_handed_on_with_its_id() -> None:
    fixture = _fixture("BillStatusRequest.json")
    session = _connected()
    (event,) = _receive(session, fixture["event"], fixture["id"], fixture["data"])
    assert isinstance(event, PayAtTableRequest)
    assert ("C1.0", m.GetBillDetailsRequest(table_id="123456", operator_id="12345")) == (
        event.message_id,
        event.read.request,
    )


def test_bill_payment_of_the_fixture_carries_its_amounts_and_summary() -> None:
    fixture = _fixture("BillPaymentWithCard.json")
    session = _connected()
    (event,) = _receive(session, fixture["event"], fixture["id"], fixture["data"])
    assert isinstance(event, PayAtTableRequest)
    request = event.read.request
    assert isinstance(request, m.BillPaymentRequest)
    assert (
        "C1.2",
        ("2018-03-12T09:53:49.934", "123456", "12345", "card"),
        m.BillPaymentDetails(purchase_amount=1234, tip_amount=1234, terminal_ref_id="some string"),
        None,
        "............4351",
    ) == (
        event.message_id,
        (request.bill_id, request.table_id, request.operator_id, request.payment_type),
        event.read.details,
        event.read.payment_summary.get("expiry_date"),  # never kept: card data
        event.read.payment_summary["masked_pan"],
    )


def test_reply_with_the_bill_details_of_the_fixture_reuses_the_request_id() -> None:
    fixture = _fixture("BillDetailsResponse.json")
    session = _connected()
    _receive(session, "get_bill_details", fixture["id"], {"table_id": "123456"})
    reply = m.BillDetailsReply.from_data(fixture["data"])
    assert session.reply_bill_details(fixture["id"], reply, NOW)
    (msg,) = _messages(session)
    assert (fixture["id"], "bill_details", fixture["data"]) == (
        msg["id"],
        msg["event"],
        msg["data"],
    )


def test_open_tables_and_flow_end_are_handed_on() -> None:
    session = _connected()
    tables = _receive(session, "get_open_tables", "C1.7", {"operator_id": "7"})
    ended = _receive(
        session,
        "bill_payment_flow_ended",
        "C1.8",
        {
            "bill_id": "b1",
            "table_id": "12",
            "operator_id": "7",
            "bill_total_amount": 5000,
            "bill_outstanding_amount": "0",
            "card_total_count": 1,
            "card_total_amount": 5000,
        },
    )
    assert [
        PayAtTableRequest(
            message_id="C1.7",
            read=ReadPayAtTableRequest(request=m.GetOpenTablesRequest(operator_id="7")),
        ),
        PayAtTableRequest(
            message_id="C1.8",
            read=ReadPayAtTableRequest(
                request=m.BillPaymentFlowEndedRequest(
                    bill_id="b1",
                    table_id="12",
                    operator_id="7",
                    bill_total_amount=5000,
                    bill_outstanding_amount=0,
                    card_total_count=1,
                    card_total_amount=5000,
                )
            ),
        ),
    ] == [*tables, *ended]
    assert [] == _messages(session)  # the POS answers, not the session


_PAYMENT = {
    "bill_id": "b1",
    "table_id": "12",
    "operator_id": "7",
    "payment_type": "card",
    "payment_details": {"purchase_amount": 1000, "terminal_ref_id": "t1"},
}


@pytest.mark.parametrize(
    ("event", "data", "reply"),
    [
        ("get_bill_details", {"operator_id": "7"}, {"success": False}),
        ("get_bill_details", {"table_id": {"x": 1}}, {"success": False}),
        ("bill_payment", {**_PAYMENT, "payment_type": "cheque"}, {"success": False}),
        ("bill_payment", {**_PAYMENT, "payment_details": {"terminal_ref_id": "t"}}, {}),
        ("bill_payment", {**_PAYMENT, "payment_details": {"purchase_amount": -5}}, {}),
        ("bill_payment", {**_PAYMENT, "payment_details": "paid"}, {}),
        ("get_open_tables", {"operator_id": ["7"]}, {"tables": []}),
        ("bill_payment_flow_ended", {"bill_id": "b1"}, None),
    ],
)
def test_a_request_that_cannot_be_read_is_rejected_and_the_terminal_told_no(
    event: str, data: dict[str, Any], reply: dict[str, Any] | None
) -> None:
    session = _connected()
    rejected, *refused = _receive(session, event, "C1.9", data)
    assert isinstance(rejected, FrameRejected)
    # A bill payment also names itself, for the people who must book it (below).
    assert (event == "bill_payment") == bool(refused)
    assert (RejectReason.BAD_MESSAGE, True) == (rejected.reason, event in rejected.detail)
    sent = _messages(session)
    if reply is None:
        assert [] == sent
        return
    (msg,) = sent
    expected = reply or {"success": False}
    if expected.get("success") is False:
        expected = {
            "success": False,
            "error_reason": "INVALID_TABLE_ID",
            "error_detail": "INVALID_TABLE_ID",
        }
    assert ("C1.9", expected) == (msg["id"], msg["data"])


@pytest.mark.parametrize("config", [None, m.SetTableConfigRequest()])
def test_while_pay_at_table_is_off_the_terminal_is_told_no_at_once(
    config: m.SetTableConfigRequest | None,
) -> None:
    session = _connected(config)
    events = _receive(session, "get_bill_details", "C1.1", {"table_id": "12"})
    events += _receive(session, "get_open_tables", "C1.2", {})
    events += _receive(session, "bill_payment_flow_ended", "C1.3", {"bill_id": "b1"})
    assert [IgnoredMessage] * 3 == [type(e) for e in events]
    assert [("C1.1", "bill_details", False), ("C1.2", "open_tables", [])] == [
        (msg["id"], msg["event"], msg["data"].get("success", msg["data"].get("tables")))
        for msg in _messages(session)
    ]


# --- answers ---------------------------------------------------------------------------------


def test_flow_end_is_acknowledged_under_a_new_authad_id_only_while_connected() -> None:
    session = _connected()
    ack_id = session.ack_bill_flow_ended("b1", NOW)
    (msg,) = _messages(session)
    session.connection_lost(NOW)
    assert (True, ack_id, "bill_payment_flow_ended_ack", {"bill_id": "b1"}, None) == (
        str(ack_id).startswith("authad"),
        msg["id"],
        msg["event"],
        msg["data"],
        session.ack_bill_flow_ended("b1", NOW),
    )


def test_a_reply_without_a_connection_is_not_sent() -> None:
    session = _connected()
    session.connection_lost(NOW)
    assert (False, False) == (
        session.reply_bill_details(
            "C1.1", m.BillDetailsReply(success=False, error_reason="X"), NOW
        ),
        session.reply_open_tables("C1.2", m.OpenTablesReply(), NOW),
    )


# --- against the terminal session, in memory (tests/spi/test_sessions.py's Pair) ------------


def test_a_visit_between_the_two_sessions_in_memory() -> None:
    pair = Pair.paired()
    pair.pos.set_table_config(ON, pair.now)
    pair.pump()
    ask = m.GetBillDetailsRequest(table_id="12", operator_id="7")
    asked_id = pair.terminal.send_pay_at_table(ask, pair.now)
    pair.pump()
    (asked,) = [e for e in pair.pos_events if isinstance(e, PayAtTableRequest)]
    bill = m.BillDetailsReply(
        success=True,
        bill_id="b1",
        table_id="12",
        bill_total_amount=5000,
        bill_outstanding_amount=5000,
    )
    pair.pos.reply_bill_details(asked.message_id, bill, pair.now)
    pair.pump()
    end = m.BillPaymentFlowEndedRequest(
        bill_id="b1", table_id="12", bill_total_amount=5000, bill_outstanding_amount=0
    )
    pair.terminal.send_pay_at_table(end, pair.now)
    pair.pump()
    ended = [e for e in pair.pos_events if isinstance(e, PayAtTableRequest)][-1]
    pair.pos.ack_bill_flow_ended("b1", pair.now)
    pair.pump()
    answered = [e for e in pair.terminal_events if isinstance(e, t.PayAtTableAnswered)]
    assert (ON.to_data(), asked_id, ask, "bill_payment_flow_ended") == (
        pair.terminal.pay_at_table.table_config,
        asked.message_id,
        asked.read.request,
        ended.event,
    )
    assert [
        ("bill_details", bill.to_data()),
        ("bill_payment_flow_ended_ack", {"bill_id": "b1"}),
    ] == [(e.reply_event, e.data) for e in answered]


def test_the_catalogue_still_warms() -> None:
    """The lane template derives every exported message's codec at start (worker/__main__)."""
    m.warm()


def test_a_bill_payment_while_pay_at_table_is_off_names_the_payment_it_refused() -> None:
    session = _connected(None)
    data = {
        "bill_id": "b1",
        "table_id": "12",
        "operator_id": "7",
        "payment_type": "card",
        "payment_details": {"terminal_ref_id": "T-77", "purchase_amount": 1500, "rrn": "x"},
    }
    (event,) = _receive(session, "bill_payment", "C1.4", data)
    assert isinstance(event, BillPaymentRefused)
    assert "pay at table is not enabled" == event.why
    assert "bill_id='b1'" in event.payment
    assert "terminal_ref_id='T-77'" in event.payment
    assert "purchase_amount=1500" in event.payment
    assert "rrn" not in event.payment  # names the payment, no card data
    (msg,) = _messages(session)
    assert ("C1.4", False) == (msg["id"], msg["data"]["success"])


def test_an_unreadable_bill_payment_names_the_payment_it_refused() -> None:
    """Money may have moved on the terminal: as loud as a payment while pay at table is off
    (the lane publishes it as error ``bill_payment_refused``), not only a frame counted."""
    session = _connected()
    data = {**_PAYMENT, "payment_type": "CARD"}
    data["payment_details"] = {"terminal_ref_id": "T-78", "purchase_amount": 1500, "rrn": "x"}
    rejected, refused = _receive(session, "bill_payment", "C1.4", data)
    assert isinstance(rejected, FrameRejected)
    assert isinstance(refused, BillPaymentRefused)
    assert (True, True, True) == (
        "payment_type" in refused.why,
        "terminal_ref_id='T-78'" in refused.payment,
        "purchase_amount=1500" in refused.payment,
    )


def _bill(table_id: str) -> m.BillDetailsReply:
    return m.BillDetailsReply(
        success=True,
        bill_id=f"b-{table_id}",
        table_id=table_id,
        bill_total_amount=100,
        bill_outstanding_amount=100,
    )


def test_a_request_of_a_lost_connection_is_never_answered_on_the_next_one() -> None:
    """The terminal's ids may come back on a new connection (plain numbers, §2.5): a late
    answer to the old request must not reach the new one, which asks about another table."""
    session = _connected()
    _receive(session, "get_bill_details", "5", {"table_id": "12"})
    _receive(session, "get_open_tables", "6", {})
    session.connection_lost(NOW)
    _ready(session)
    session.events_received()
    (new,) = _receive(session, "get_bill_details", "5", {"table_id": "14"})
    assert isinstance(new, PayAtTableRequest)
    assert (False, False) == (
        session.reply_bill_details("6", _bill("12"), NOW),  # asked before the drop
        session.reply_open_tables("6", m.OpenTablesReply(), NOW),
    )
    assert True is session.reply_bill_details("5", _bill("14"), NOW)
    assert [("5", "14")] == [(msg["id"], msg["data"]["table_id"]) for msg in _messages(session)]


def test_a_request_is_answered_once_and_only_by_its_kind_of_reply() -> None:
    session = _connected()
    _receive(session, "get_bill_details", "C1.1", {"table_id": "12"})
    _receive(session, "get_open_tables", "C1.2", {})
    assert (False, False, True, False, True) == (
        session.reply_open_tables("C1.1", m.OpenTablesReply(), NOW),  # a bill request
        session.reply_bill_details("C1.2", _bill("12"), NOW),  # an open-tables request
        session.reply_bill_details("C1.1", _bill("12"), NOW),
        session.reply_bill_details("C1.1", _bill("12"), NOW),  # answered already
        session.reply_open_tables("C1.2", m.OpenTablesReply(), NOW),
    )
    assert [("C1.1", "bill_details"), ("C1.2", "open_tables")] == [
        (msg["id"], msg["event"]) for msg in _messages(session)
    ]


@pytest.mark.parametrize("event", ["bill_payment", "get_bill_details", "get_table_config"])
def test_before_pairing_no_pay_at_table_message_is_believed(event: str) -> None:
    """Without keys nothing is authenticated: a forged payment must not be reported (or
    stored, which would make the real one a duplicate), and nothing is answered."""
    session = PosSession(pos_id="POS1", pos_info=TEST_POS_INFO, secrets=None)
    session.set_table_config(ON, NOW)
    session.connection_made(NOW)
    session.data_to_send()
    data = {**_PAYMENT, "payment_details": {"terminal_ref_id": "T-1", "purchase_amount": 100}}
    session.receive_text(terminal_frame(event, "C1.1", data, secrets=None), NOW)
    (rejected,) = session.events_received()
    assert isinstance(rejected, FrameRejected)
    assert (RejectReason.NO_SECRETS, []) == (rejected.reason, session.data_to_send())
