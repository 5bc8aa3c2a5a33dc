"""The simulated terminal plays the terminal's side of pay at table (§7.23), over real websockets.

The control API makes the terminal start each request; a raw POS (websocket
+ the SPI crypto, :class:`~tests.simulator.helpers.RawPos`) reads it and
answers by hand, so the terminal side is tested against the wire itself,
not against the POS session's own pay-at-table code. Each story: the route
call runs as a task, the POS answers, the route's answer is checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from multipair.simulator import Simulator
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control, RawPos
from tests.spi_shared import load_fixture

SERIAL = "SIM-0001"
WAIT = {"timeout": 10}
PAYMENT_SUMMARY = [
    "account_type",
    "auth_code",
    "bank_date",
    "bank_time",
    "host_response_code",
    "host_response_text",
    "masked_pan",
    "purchase_amount",
    "rrn",
    "scheme_name",
    "terminal_id",
    "terminal_ref_id",
    "tip_amount",
    "surcharge_amount",
]
"""§7.1: the payment summary a POS keeps in a bill's payment history."""


def bill(bill_id: str, total: int, outstanding: int, table_id: str = "12") -> dict[str, Any]:
    return {
        "success": True,
        "bill_id": bill_id,
        "table_id": table_id,
        "bill_total_amount": total,
        "bill_outstanding_amount": outstanding,
        "bill_payment_history": [],
    }


@pytest.fixture
async def pos(sim: Simulator) -> AsyncIterator[RawPos]:
    """A raw POS resumed with the test keys, its connection ready (one ping answered)."""
    async with await RawPos.connect(sim.terminals[0].ws_url, secrets=KEYS) as client:
        assert "pong" == (await client.ping()).event
        yield client


async def ask_and_answer(
    control: Control,
    pos: RawPos,
    route: str,
    body: dict[str, Any],
    request_event: str,
    reply_event: str,
    reply: dict[str, Any],
) -> tuple[dict[str, Any], Any]:
    """Call a ``pat/`` route; the POS answers its request with ``reply`` under the same id.

    Returns the route's answer and the request as the POS received it.
    """
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, route, {**WAIT, **body}))
        asked = await pos.expect(request_event)
        await pos.send(reply_event, reply, msg_id=asked.id)
    return call.result(), asked


# ---------------------------------------------------------------- matching replies


async def test_a_bill_request_returns_the_reply_with_its_id(control: Control, pos: RawPos) -> None:
    body = {"table_id": "12", "operator_id": "7"}
    answer, asked = await ask_and_answer(
        control, pos, "pat/bill", body, "get_bill_details", "bill_details", bill("b-1", 5000, 5000)
    )
    assert {"table_id": "12", "operator_id": "7", "payment_flow_started": False} == asked.data
    assert (asked.id, asked.id) == (answer["request_id"], answer["reply"]["message_id"])
    assert {"event": "bill_details", "message_id": asked.id, "data": bill("b-1", 5000, 5000)} == (
        answer["reply"]
    )
    assert [] == answer["pat_pending"]


async def test_an_error_bill_is_returned_as_the_pos_sent_it(control: Control, pos: RawPos) -> None:
    error = {
        "success": False,
        "table_id": "99",
        "error_reason": "INVALID_TABLE_ID",
        "error_detail": "INVALID_TABLE_ID",
    }
    answer, _ = await ask_and_answer(
        control, pos, "pat/bill", {"table_id": "99"}, "get_bill_details", "bill_details", error
    )
    assert error == answer["reply"]["data"]


async def test_a_reply_with_another_id_is_ignored(control: Control, pos: RawPos) -> None:
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/bill", {**WAIT, "table_id": "12"}))
        asked = await pos.expect("get_bill_details")
        await pos.send("bill_details", bill("wrong", 1, 1), msg_id=f"{asked.id}x")
        await pos.send("open_tables", {"tables": []}, msg_id=asked.id)  # right id, wrong event
        await pos.send("bill_details", bill("right", 5000, 4000), msg_id=asked.id)
    assert "right" == call.result()["reply"]["data"]["bill_id"]


async def test_no_reply_is_a_504_and_the_terminal_stays_usable(
    control: Control, pos: RawPos
) -> None:
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(
            control.post(SERIAL, "pat/tables", {"operator_id": "7", "timeout": 0.3}, status=504)
        )
        asked = await pos.expect("get_open_tables")
    timed_out = call.result()
    assert (asked.id, "get_open_tables", {"operator_id": "7"}) == (
        timed_out["request_id"],
        timed_out["request"]["event"],
        timed_out["request"]["data"],
    )
    assert [] == (await control.get(SERIAL))["pat_pending"]
    # The late reply finds nothing waiting; the next request gets its own reply.
    await pos.send("open_tables", {"tables": [{"table_id": "late"}]}, msg_id=asked.id)
    tables = {"tables": [{"table_id": "12", "label": "Window", "bill_outstanding_amount": 2500}]}
    answer, again = await ask_and_answer(
        control, pos, "pat/tables", {"operator_id": "7"}, "get_open_tables", "open_tables", tables
    )
    assert again.id != asked.id
    assert tables == answer["reply"]["data"]


async def test_no_pos_connected_is_a_409(control: Control) -> None:
    answer = await control.post(SERIAL, "pat/bill", {"table_id": "12"}, status=409)
    assert "get_bill_details" in answer["error"]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("pat/bill", {"operator_id": "7"}),
        ("pat/pay", {"bill_id": "b", "table_id": "1", "amount_cents": 0}),
        ("pat/pay", {"bill_id": "b", "table_id": "1", "amount_cents": 100, "payment_type": "x"}),
        ("pat/tables", {"timeout": 0}),
        ("pat/session", {"table_id": "1", "payments": [{"amount_cents": "1"}]}),
        ("preauths", {"amount_cents": -5}),
    ],
)
async def test_bad_bodies_are_400(
    control: Control, pos: RawPos, route: str, body: dict[str, Any]
) -> None:
    assert "error" in await control.post(SERIAL, route, body, status=400)


# ---------------------------------------------------------------- payments


async def test_a_card_payment_is_a_purchase_through_the_bank(control: Control, pos: RawPos) -> None:
    body = {"bill_id": "b-1", "table_id": "12", "operator_id": "7", "amount_cents": 1500}
    answer, asked = await ask_and_answer(
        control,
        pos,
        "pat/pay",
        {**body, "tip_cents": 200},
        "bill_payment",
        "bill_details",
        bill("b-1", 5000, 3500),
    )
    assert asked.data is not None
    details = asked.data["payment_details"]
    assert ("b-1", "12", "7", "card") == (
        asked.data["bill_id"],
        asked.data["table_id"],
        asked.data["operator_id"],
        asked.data["payment_type"],
    )
    assert details == answer["payment_details"]
    assert (True, True, "000", 1500, 200, "PURCHASE") == (
        answer["sent"],
        details["success"],
        details["host_response_code"],
        details["purchase_amount"],
        details["tip_amount"],
        details["transaction_type"],
    )
    assert set() == set(PAYMENT_SUMMARY) - set(details)
    assert "pos_ref_id" not in details


async def test_card_payment_details_carry_every_field_of_the_fixture(
    control: Control, pos: RawPos
) -> None:
    fixture = load_fixture("BillPaymentWithCard.json")["message"]["data"]["payment_details"]
    body = {"bill_id": "b-1", "table_id": "12", "amount_cents": 1234, "tip_cents": 1234}
    answer, _ = await ask_and_answer(
        control, pos, "pat/pay", body, "bill_payment", "bill_details", bill("b-1", 5000, 3766)
    )
    details = answer["payment_details"]
    assert set() == set(fixture) - set(details)
    assert {k: type(v) for k, v in fixture.items()} == {k: type(details[k]) for k in fixture}


async def test_a_declined_card_is_not_reported_to_the_pos(control: Control, pos: RawPos) -> None:
    body = {**WAIT, "bill_id": "b-1", "table_id": "12", "amount_cents": 1051}
    declined = await control.post(SERIAL, "pat/pay", body)
    assert (False, None, False, "51") == (
        declined["sent"],
        declined["reply"],
        declined["payment_details"]["success"],
        declined["payment_details"]["host_response_code"],
    )
    # The next thing the POS hears is the next request, not the declined payment.
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/tables", WAIT))
        first = await pos.recv()
        await pos.send("open_tables", {"tables": []}, msg_id=first.id)
    assert "get_open_tables" == first.event
    assert "open_tables" == call.result()["reply"]["event"]


async def test_a_partly_approved_card_reports_the_approved_amount(
    control: Control, pos: RawPos
) -> None:
    body = {"bill_id": "b-1", "table_id": "12", "amount_cents": 2056}
    answer, asked = await ask_and_answer(
        control, pos, "pat/pay", body, "bill_payment", "bill_details", bill("b-1", 5000, 3972)
    )
    assert ("002", 1028) == (
        answer["payment_details"]["host_response_code"],
        asked.get("payment_details")["purchase_amount"],
    )


async def test_repeat_resends_the_same_payment(control: Control, pos: RawPos) -> None:
    body = {"bill_id": "b-1", "table_id": "12", "operator_id": "7", "amount_cents": 1000}
    first, sent = await ask_and_answer(
        control, pos, "pat/pay", body, "bill_payment", "bill_details", bill("b-1", 5000, 4000)
    )
    again, resent = await ask_and_answer(
        control,
        pos,
        "pat/pay",
        {"repeat": True},
        "bill_payment",
        "bill_details",
        bill("b-1", 5000, 4000),
    )
    assert sent.id != resent.id
    assert sent.data == resent.data
    assert (
        first["payment_details"]["terminal_ref_id"] == again["payment_details"]["terminal_ref_id"]
    )


async def test_repeat_without_a_payment_is_a_409(control: Control, pos: RawPos) -> None:
    await control.post(SERIAL, "pat/pay", {"repeat": True}, status=409)


async def test_end_reports_the_flow_totals_and_waits_for_the_ack(
    control: Control, pos: RawPos
) -> None:
    where = {"bill_id": "b-1", "table_id": "12", "operator_id": "7"}
    await ask_and_answer(
        control,
        pos,
        "pat/bill",
        {"table_id": "12", "operator_id": "7"},
        "get_bill_details",
        "bill_details",
        bill("b-1", 5000, 5000),
    )
    await ask_and_answer(
        control,
        pos,
        "pat/pay",
        {**where, "amount_cents": 1000},
        "bill_payment",
        "bill_details",
        bill("b-1", 5000, 4000),
    )
    await ask_and_answer(
        control,
        pos,
        "pat/pay",
        {**where, "payment_type": "cash", "amount_cents": 500},
        "bill_payment",
        "bill_details",
        bill("b-1", 5000, 3500),
    )
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/end", {**WAIT, **where}))
        ended = await pos.expect("bill_payment_flow_ended")
        await pos.send("bill_payment_flow_ended_ack", {"bill_id": "b-2"}, msg_id="authad1")
        await pos.send("bill_payment_flow_ended_ack", {"bill_id": "b-1"}, msg_id="authad2")
    assert {
        "bill_id": "b-1",
        "bill_outstanding_amount": 3500,
        "bill_total_amount": 5000,
        "operator_id": "7",
        "table_id": "12",
        "card_total_count": 1,
        "card_total_amount": 1000,
        "cash_total_count": 1,
        "cash_total_amount": 500,
    } == ended.data
    answer = call.result()
    assert (ended.id, "authad2", {"bill_id": "b-1"}) == (
        answer["request_id"],
        answer["reply"]["message_id"],
        answer["reply"]["data"],
    )


async def test_end_without_an_ack_is_a_504(control: Control, pos: RawPos) -> None:
    body = {"bill_id": "b-1", "table_id": "12", "timeout": 0.3}
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/end", body, status=504))
        await pos.expect("bill_payment_flow_ended")
    assert "bill_payment_flow_ended" == call.result()["request"]["event"]


async def test_a_session_runs_bill_payments_and_end_in_order(control: Control, pos: RawPos) -> None:
    body = {
        **WAIT,
        "table_id": "12",
        "operator_id": "7",
        "payments": [
            {"payment_type": "card", "amount_cents": 2000},
            {"payment_type": "cash", "amount_cents": 1000},
        ],
    }
    seen: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/session", body))
        asked = await pos.expect("get_bill_details")
        assert True is asked.get("payment_flow_started")
        await pos.send("bill_details", bill("b-9", 3000, 3000), msg_id=asked.id)
        for outstanding in (1000, 0):
            paid = await pos.expect("bill_payment")
            seen.append(str(paid.get("payment_type")))
            await pos.send("bill_details", bill("b-9", 3000, outstanding), msg_id=paid.id)
        ended = await pos.expect("bill_payment_flow_ended")
        await pos.send("bill_payment_flow_ended_ack", {"bill_id": "b-9"}, msg_id="authad7")
    steps = call.result()["replies"]
    assert ["card", "cash"] == seen
    assert ["bill_details", "bill_details", "bill_details", "bill_payment_flow_ended_ack"] == [
        step["reply"]["event"] for step in steps
    ]
    assert (0, 2000, 1000) == (
        ended.get("bill_outstanding_amount"),
        ended.get("card_total_amount"),
        ended.get("cash_total_amount"),
    )


async def test_a_session_stops_after_an_error_bill(control: Control, pos: RawPos) -> None:
    error = {
        "success": False,
        "error_reason": "INVALID_TABLE_ID",
        "error_detail": "INVALID_TABLE_ID",
    }
    body = {**WAIT, "table_id": "99", "payments": [{"amount_cents": 1000}]}
    async with asyncio.TaskGroup() as tasks:
        call = tasks.create_task(control.post(SERIAL, "pat/session", body))
        asked = await pos.expect("get_bill_details")
        await pos.send("bill_details", error, msg_id=asked.id)
    assert [error] == [step["reply"]["data"] for step in call.result()["replies"]]


# ---------------------------------------------------------------- table config and preauths


async def test_a_pushed_table_config_shows_in_the_state(control: Control, pos: RawPos) -> None:
    assert None is (await control.get(SERIAL))["table_config"]
    config = {
        "pay_at_table_enabled": True,
        "operator_id_enabled": True,
        "split_by_amount_enabled": True,
        "equal_split_enabled": False,
        "tipping_enabled": True,
        "summary_report_enabled": False,
        "pay_button_label": "Pay",
        "operator_id_label": "Waiter",
        "table_id_label": "Table",
        "operator_id_list": ["7", "8"],
        "table_retrieval_enabled": True,
    }
    await pos.send("set_table_config", config, msg_id="patconf1")

    async def shown() -> Any:
        return (await control.get(SERIAL))["table_config"]

    assert config == await poll_until(shown, "the pushed table config in the state")


async def test_get_table_config_keeps_the_answer(control: Control, pos: RawPos) -> None:
    answer, asked = await ask_and_answer(
        control,
        pos,
        "pat/config",
        {},
        "get_table_config",
        "set_table_config",
        {"pay_at_table_enabled": False},
    )
    assert (None, {"pay_at_table_enabled": False}) == (asked.data, answer["table_config"])


async def test_a_preauth_opened_through_control_can_be_topped_up_by_the_pos(
    control: Control, pos: RawPos
) -> None:
    opened = await control.post(SERIAL, "preauths", {"amount_cents": 5000})
    pid = opened["preauth_id"]
    assert {"balance": 5000, "open": True} == opened["preauths"][pid]
    topped = await pos.request(
        "preauth_topup",
        {"pos_ref_id": "top-1", "preauth_id": pid, "topup_amount": 1000},
        "preauth_topup_response",
    )
    assert (True, pid, 5000, 6000) == (
        topped.get("success"),
        topped.get("preauth_id"),
        topped.get("existing_preauth_amount"),
        topped.get("balance_amount"),
    )
    assert {"balance": 6000, "open": True} == (await control.get(SERIAL))["preauths"][pid]
