"""Pay at table: the published mx51 JavaScript client as the POS, the simulator as the terminal.

The harness (``js_harness.py``; how the library runs under Node:
``test_js_client.py``) enables pay at table before ``Start()``
(``spi.EnablePayAtTable()``, its ``PayAtTableConfig``) and overrides the
four callbacks ``SpiPayAtTable`` requires (``GetBillStatus``,
``BillPaymentReceived``, ``GetOpenTables`` — answered asynchronously, as
2.9 allows — and ``BillPaymentFlowEnded``), answering from a dict of bills
and keeping the "bill data" (payment history) the library hands it. The
test plays the waiter on the simulated terminal through its control API
(``/pat/config``, ``/pat/tables``, ``/pat/bill``, ``/pat/pay``, ``/pat/end``,
``/pat/session``; src/multipair/simulator/control.py) and checks both sides:
what the terminal got back (PROTOCOL.md §7.23, §13.14) and what the POS was told.

Also the library's two known pay-at-table quirks against the terminal: the
double ``bill_details`` after a payment for a bill the POS cannot find
(§11), and 2.9.13 leaving ``get_table_config`` unanswered when the
application never set pay at table up (§13.14).

The harness ends when the test is done driving: its last plan step waits
for a battery advice, which the test asks the terminal for at the end.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from multipair.simulator import Simulator
from tests.interop.js_harness import Event, HarnessRun, finished_tx, run_harness
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control

OPERATOR = "7"
CONFIG = {
    "PayAtTableEnabled": True,
    "OperatorIdEnabled": True,
    "SplitByAmountEnabled": True,
    "EqualSplitEnabled": True,
    "TippingEnabled": True,
    "SummaryReportEnabled": True,
    "TableRetrievalEnabled": True,
    "LabelPayButton": "PAY AT TABLE",
    "LabelOperatorId": "Waiter",
    "LabelTableId": "Table",
    "AllowedOperatorIds": [OPERATOR, "8"],
}
# What the library sends for CONFIG (PayAtTableConfig.ToMessage).
CONFIG_ON_THE_WIRE = {
    "pay_at_table_enabled": True,
    "operator_id_enabled": True,
    "split_by_amount_enabled": True,
    "equal_split_enabled": True,
    "tipping_enabled": True,
    "summary_report_enabled": True,
    "pay_button_label": "PAY AT TABLE",
    "operator_id_label": "Waiter",
    "table_id_label": "Table",
    "operator_id_list": [OPERATOR, "8"],
    "table_retrieval_enabled": True,
}
BILLS = {
    "12": {"bill_id": "B12", "total_cents": 10000, "outstanding_cents": 10000, "label": "Window"},
    "14": {"bill_id": "B14", "total_cents": 5000, "outstanding_cents": 5000, "label": "Patio"},
}


def reply_of(answer: dict[str, Any], event: str) -> dict[str, Any]:
    """The POS's reply in a control-API answer, checked to be ``event`` to the request's id."""
    reply = answer["reply"]
    assert event == reply["event"], answer
    assert answer["request_id"] == reply["message_id"], answer
    data: dict[str, Any] = reply["data"]
    return data


def bill(data: dict[str, Any]) -> tuple[Any, ...]:
    """success, bill id, table, total, outstanding and the history's (type, ref, amount, tip)."""
    history = [
        (
            entry["payment_type"],
            entry["payment_summary"]["terminal_ref_id"],
            entry["payment_summary"]["purchase_amount"],
            entry["payment_summary"]["tip_amount"],
        )
        for entry in data.get("bill_payment_history", [])
    ]
    return (
        data["success"],
        data.get("bill_id"),
        data.get("table_id"),
        data.get("bill_total_amount"),
        data.get("bill_outstanding_amount"),
        history,
    )


class Waiter:
    """The test's hands on the terminal: each step is one control-API call, kept for the checks."""

    def __init__(self, control: Control, serial: str) -> None:
        self.control = control
        self.serial = serial
        self.seen: dict[str, dict[str, Any]] = {}

    async def do(self, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = await self.control.post(self.serial, path, {"timeout": 10, **body})
        self.seen[name] = answer
        return answer

    async def visit(self) -> None:
        """Everything a waiter does on the terminal in this test, in order."""
        table = {"table_id": "12", "operator_id": OPERATOR}
        await self.do("tables", "pat/tables", {"operator_id": OPERATOR})
        await self.do("config", "pat/config", {})
        await self.do("bill", "pat/bill", {**table, "payment_flow_started": True})
        await self.do("no such table", "pat/bill", {"table_id": "99", "operator_id": OPERATOR})
        pay = {**table, "bill_id": "B12", "payment_type": "card"}
        await self.do("first card", "pat/pay", {**pay, "amount_cents": 4000, "tip_cents": 500})
        await self.do("first card again", "pat/pay", {"repeat": True})
        await self.do("second card", "pat/pay", {**pay, "amount_cents": 6000})
        await self.do("end", "pat/end", {**table, "bill_id": "B12"})
        payments = [
            {"payment_type": "card", "amount_cents": 2000},
            {"payment_type": "cash", "amount_cents": 1000},
        ]
        await self.do(
            "session", "pat/session", {"table_id": "14", "operator_id": "8", "payments": payments}
        )
        await self.do("tables after", "pat/tables", {"operator_id": OPERATOR})


async def test_js_client_serves_a_pay_at_table_session_from_its_bills(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    waiter = Waiter(control, terminal.serial)
    driving: list[asyncio.Task[None]] = []

    async def drive() -> None:
        try:
            await waiter.visit()
        finally:  # lets the harness finish either way (its last wait)
            await control.post(terminal.serial, "battery", {"level": 80})

    async def on_event(event: Event) -> None:
        # Ready to transact: the library has pushed its table config by now.
        if event["type"] == "first_pong" and not driving:
            driving.append(asyncio.create_task(drive()))

    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "wait_event", "type": "battery"},
        {"do": "bills"},
    ]
    setup = json.dumps({"config": CONFIG, "bills": BILLS})
    run = await run_harness(
        node, terminal, plan, keys=KEYS, on_event=on_event, extra=("--pay-at-table", setup)
    )
    assert 1 == len(driving), run.explain("the POS never became ready")
    await driving[0]  # raises what went wrong on the terminal's side
    run.assert_clean()
    seen = waiter.seen

    check_table_config(seen, run)
    check_open_tables(seen, run)
    check_bill_12(seen, run)
    check_bill_14(seen, run)

    # The POS's own books at the end.
    books = run.one("bills")["bills"]
    assert (0, 2000) == (books["12"]["outstanding_cents"], books["14"]["outstanding_cents"])
    assert 0 == terminal.snapshot()["counters"]["frames_rejected"]


def check_table_config(seen: dict[str, dict[str, Any]], run: HarnessRun) -> None:
    # Pushed at ready-to-transact, before anything the terminal asked: the
    # state after the first exchange (same connection, frames in order) has it.
    assert CONFIG_ON_THE_WIRE == seen["tables"]["table_config"], run.explain("no push")
    # And the answer to the terminal's get_table_config, under its id.
    assert CONFIG_ON_THE_WIRE == reply_of(seen["config"], "set_table_config")
    assert CONFIG_ON_THE_WIRE == seen["config"]["table_config"]


def check_open_tables(seen: dict[str, dict[str, Any]], run: HarnessRun) -> None:
    assert {
        "tables": [
            {"table_id": "12", "label": "Window", "bill_outstanding_amount": 10000},
            {"table_id": "14", "label": "Patio", "bill_outstanding_amount": 5000},
        ]
    } == reply_of(seen["tables"], "open_tables")
    assert {"tables": [{"table_id": "14", "label": "Patio", "bill_outstanding_amount": 2000}]} == (
        reply_of(seen["tables after"], "open_tables")
    )
    asked = run.of("pat_get_open_tables")
    assert [(OPERATOR, ["12", "14"]), (OPERATOR, ["14"])] == [
        (e["operator_id"], e["tables"]) for e in asked
    ]


def check_bill_12(seen: dict[str, dict[str, Any]], run: HarnessRun) -> None:
    assert (True, "B12", "12", 10000, 10000, []) == bill(reply_of(seen["bill"], "bill_details"))
    missing = reply_of(seen["no such table"], "bill_details")
    assert {
        "success": False,
        "table_id": "99",
        "error_reason": "INVALID_TABLE_ID",
        "error_detail": "INVALID_TABLE_ID",
    } == missing

    first = seen["first card"]
    first_ref = first["payment_details"]["terminal_ref_id"]
    assert (True, "000") == (
        first["payment_details"]["success"],
        first["payment_details"]["host_response_code"],
    )
    # The tip is the customer's extra: the bill goes down by the purchase amount.
    paid_once = (True, "B12", "12", 10000, 6000, [("card", first_ref, 4000, 500)])
    assert paid_once == bill(reply_of(first, "bill_details"))
    # The terminal reported the same payment again (same terminal_ref_id): the
    # library found it in the bill data and answered the bill as it stands.
    again = seen["first card again"]
    assert first_ref == again["payment_details"]["terminal_ref_id"]
    assert paid_once == bill(reply_of(again, "bill_details"))
    second = seen["second card"]
    second_ref = second["payment_details"]["terminal_ref_id"]
    assert second_ref != first_ref
    assert (
        True,
        "B12",
        "12",
        10000,
        0,
        [("card", first_ref, 4000, 500), ("card", second_ref, 6000, 0)],
    ) == bill(reply_of(second, "bill_details"))
    assert {"bill_id": "B12"} == reply_of_ack(seen["end"])

    # The POS's side: asked for the bill by table (the library passes no bill
    # id for get_bill_details), told of two payments, not three, then the end.
    asks = [e for e in run.of("pat_get_bill") if e["table_id"] == "12"]
    assert ("", OPERATOR, True, True) == (
        asks[0]["bill_id"],
        asks[0]["operator_id"],
        asks[0]["payment_flow_started"],
        asks[0]["found"],
    )
    told = [e for e in run.of("pat_payment") if e["bill_id"] == "B12"]
    assert [("card", 4000, 500, first_ref, 1), ("card", 6000, 0, second_ref, 2)] == [
        (
            e["payment_type"],
            e["purchase_amount"],
            e["tip_amount"],
            e["terminal_ref_id"],
            e["history_entries"],
        )
        for e in told
    ]
    ended = [e for e in run.of("pat_flow_ended") if e["bill_id"] == "B12"]
    assert [("12", OPERATOR, 10000, 0, 2, 10000, 0, 0)] == [
        (
            e["table_id"],
            e["operator_id"],
            e["bill_total_amount"],
            e["bill_outstanding_amount"],
            e["card_total_count"],
            e["card_total_amount"],
            e["cash_total_count"],
            e["cash_total_amount"],
        )
        for e in ended
    ]


def reply_of_ack(answer: dict[str, Any]) -> dict[str, Any]:
    """The flow-ended ack: a new message of the POS's (``authad…`` id), matched by bill id."""
    reply = answer["reply"]
    assert "bill_payment_flow_ended_ack" == reply["event"], answer
    assert reply["message_id"].startswith("authad"), answer
    data: dict[str, Any] = reply["data"]
    return data


def check_bill_14(seen: dict[str, dict[str, Any]], run: HarnessRun) -> None:
    steps = seen["session"]["replies"]
    assert 4 == len(steps), steps
    opened, card, cash, end = steps
    assert (True, "B14", "14", 5000, 5000, []) == bill(opened["reply"]["data"])
    card_ref = card["payment_details"]["terminal_ref_id"]
    cash_ref = cash["payment_details"]["terminal_ref_id"]
    assert (True, "B14", "14", 5000, 3000, [("card", card_ref, 2000, 0)]) == bill(
        card["reply"]["data"]
    )
    assert (
        True,
        "B14",
        "14",
        5000,
        2000,
        [("card", card_ref, 2000, 0), ("cash", cash_ref, 1000, 0)],
    ) == bill(cash["reply"]["data"])
    assert ("bill_payment_flow_ended_ack", {"bill_id": "B14"}) == (
        end["reply"]["event"],
        end["reply"]["data"],
    )
    ended = [e for e in run.of("pat_flow_ended") if e["bill_id"] == "B14"]
    assert [("14", "8", 5000, 2000, 1, 2000, 1, 1000)] == [
        (
            e["table_id"],
            e["operator_id"],
            e["bill_total_amount"],
            e["bill_outstanding_amount"],
            e["card_total_count"],
            e["card_total_amount"],
            e["cash_total_count"],
            e["cash_total_amount"],
        )
        for e in ended
    ]
    assert ["CARD", "CASH"] == [
        e["payment_type"].upper() for e in run.of("pat_payment") if e["bill_id"] == "B14"
    ]


async def test_js_client_answers_a_payment_for_a_bill_it_cannot_find_twice(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # PROTOCOL.md §11 (unchanged in 2.9.13, §13.14): when the POS cannot find
    # the bill of a bill_payment, the library sends the error bill_details and
    # carries on anyway: the POS is told of the payment and a second error
    # bill_details goes out under the same id. The terminal takes the first,
    # ignores the second (nothing is pending under that id any more), and
    # carries on.
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    waiter = Waiter(control, terminal.serial)
    driving: list[asyncio.Task[None]] = []

    async def drive() -> None:
        try:
            pay = {"bill_id": "GONE", "table_id": "99", "operator_id": OPERATOR}
            await waiter.do("lost bill", "pat/pay", {**pay, "amount_cents": 1500})
            request_id = waiter.seen["lost bill"]["request_id"]
            await poll_until(
                lambda: (
                    [
                        line
                        for line in logs
                        if line["event"] == "unexpected_message"
                        and line["message_id"] == request_id
                    ]
                    or None
                ),
                "the terminal's note of the second bill_details",
            )
            await waiter.do("bill", "pat/bill", {"table_id": "12", "operator_id": OPERATOR})
        finally:
            await control.post(terminal.serial, "battery", {"level": 80})

    async def on_event(event: Event) -> None:
        if event["type"] == "first_pong" and not driving:
            driving.append(asyncio.create_task(drive()))

    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "wait_event", "type": "battery"},
    ]
    setup = json.dumps({"config": CONFIG, "bills": BILLS})
    with capture_logs() as logs:
        run = await run_harness(
            node, terminal, plan, keys=KEYS, on_event=on_event, extra=("--pay-at-table", setup)
        )
        assert 1 == len(driving), run.explain("the POS never became ready")
        await driving[0]
    run.assert_clean()

    lost = waiter.seen["lost bill"]
    assert {
        "success": False,
        "table_id": "99",
        "error_reason": "INVALID_TABLE_ID",
        "error_detail": "INVALID_TABLE_ID",
    } == reply_of(lost, "bill_details")
    assert lost["payment_details"]["success"] is True  # the card was charged all the same
    second = [
        line
        for line in logs
        if line["event"] == "unexpected_message" and line["message_id"] == lost["request_id"]
    ]
    assert [("bill_details", "answers no pending pay-at-table request")] == [
        (line["spi_event"], line["reason"]) for line in second
    ]
    # The POS was told of the payment (found: false), and booked nothing.
    told = run.one("pat_payment")
    assert ("GONE", 1500, False) == (told["bill_id"], told["purchase_amount"], told["found"])
    # The terminal carries on with the next table.
    assert (True, "B12", "12", 10000, 10000, []) == bill(
        reply_of(waiter.seen["bill"], "bill_details")
    )


async def test_js_client_without_pay_at_table_leaves_get_table_config_unanswered(
    node: str, paired_sim: Simulator, http: aiohttp.ClientSession
) -> None:
    # The 2.9.13 regression (PROTOCOL.md §13.14): a POS application that never
    # called EnablePayAtTable/DisablePayAtTable throws on get_table_config and
    # sends nothing. The terminal's wait ends by its own timeout (504) and it
    # goes on; so does the POS.
    terminal = paired_sim.terminals[0]
    control = Control(http, paired_sim.control_url)
    driving: list[asyncio.Task[dict[str, Any]]] = []

    async def drive() -> dict[str, Any]:
        try:
            return await control.post(terminal.serial, "pat/config", {"timeout": 1.5}, status=504)
        finally:
            await control.post(terminal.serial, "battery", {"level": 80})

    async def on_event(event: Event) -> None:
        if event["type"] == "first_pong" and not driving:
            driving.append(asyncio.create_task(drive()))

    plan: list[dict[str, Any]] = [
        {"do": "wait_status", "status": "PairedConnected"},
        {"do": "wait_event", "type": "battery"},
        {"do": "purchase", "ref": "after-table-config", "cents": 1000},
    ]
    run = await run_harness(node, terminal, plan, keys=KEYS, on_event=on_event)
    assert 1 == len(driving), run.explain("the POS never became ready")
    unanswered = await driving[0]

    assert "get_table_config" == unanswered["request"]["event"]
    assert "set_table_config" in unanswered["error"]
    thrown = run.of("uncaught")
    assert 1 == len(thrown), run.explain("expected the library to throw once")
    assert "_handleGetTableConfig" in thrown[0]["error"]
    assert (0, "done") == (run.returncode, run.events[-1]["type"]), run.explain("unfinished")
    tx = finished_tx(run, "after-table-config")
    assert ("Success", "000") == (tx["success"], tx["response"]["host_response_code"])
    state = await control.get(terminal.serial)
    assert state["table_config"] is None
