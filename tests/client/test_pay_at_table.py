"""``serve_pay_at_table`` and ``set_table_config`` against a real lane, the simulator playing the
terminal's side of pay at table (its control API's ``pat/*`` routes), and what the terminal got."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
import structlog

from multipair.broker_schema.events import BillFlowEnded, BillPaymentReported, BillRequestExpired
from multipair.broker_schema.pat_commands import BILL_ERRORS
from multipair.client import (
    AsyncClient,
    Bill,
    BillError,
    Client,
    ClientError,
    LaneNotFound,
    OpenTable,
    Served,
)
from multipair.client.pay_at_table import BillAnswer
from tests.poll import poll_until
from tests.simulator.helpers import Control
from tests.worker.helpers import SERIAL, LaneRig


class Restaurant:
    """A POS: one bill per table, payments booked as they come; every call recorded."""

    def __init__(self) -> None:
        self.bills = {"12": [8450, 8450], "14": [12000, 7000]}
        self.calls: list[tuple[Any, ...]] = []
        self.ended: list[BillFlowEnded] = []
        self.fail_next = False

    def _bill(self, table_id: str) -> Bill:
        total, outstanding = self.bills[table_id]
        return Bill(bill_id=f"B-{table_id}", total_cents=total, outstanding_cents=outstanding)

    async def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> BillAnswer:
        self.calls.append(("get_bill", table_id, operator_id, bill_id, payment_flow_started))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the kitchen printer is on fire")
        if operator_id != "7":
            return BillError.INVALID_OPERATOR_ID
        if table_id not in self.bills:
            return BillError.INVALID_TABLE_ID
        return self._bill(table_id)

    def get_open_tables(self, operator_id: str) -> list[OpenTable]:
        self.calls.append(("get_open_tables", operator_id))
        return [
            OpenTable(table_id=table, label=f"Table {table}", outstanding_cents=outstanding)
            for table, (_, outstanding) in self.bills.items()
        ]

    def on_payment(self, report: BillPaymentReported) -> BillAnswer:
        self.calls.append(("on_payment", report.bill_id, report.amount_cents, report.duplicate))
        table = report.table_id
        self.bills[table][1] = max(0, self.bills[table][1] - report.amount_cents)
        return self._bill(table)

    async def on_flow_ended(self, event: BillFlowEnded) -> None:
        self.ended.append(event)


@asynccontextmanager
async def serving(
    client: AsyncClient, lane: LaneRig, handler: Any, served: list[Served] | None = None
) -> AsyncIterator[asyncio.Task[None]]:
    """Pay at table switched on for the lane, and ``handler`` serving it while inside."""
    await client.set_table_config(lane.instance_id, enabled=True)
    task = asyncio.create_task(
        client.serve_pay_at_table(
            lane.instance_id,
            handler,
            since=await client.last_event_id(lane.instance_id),  # no request after it is missed
            on_served=None if served is None else served.append,
        )
    )
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _reply(result: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = result["reply"]
    return reply


async def test_a_bill_request_is_answered_with_the_handlers_bill(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    served: list[Served] = []
    async with serving(client, lane, pos, served):
        result = await control.post(SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7"})
    reply = _reply(result)
    assert "bill_details" == reply["event"]
    data = reply["data"]
    assert (True, "B-12", "12", 8450, 8450) == (
        data["success"],
        data["bill_id"],
        data["table_id"],
        data["bill_total_amount"],
        data["bill_outstanding_amount"],
    )
    assert [("get_bill", "12", "7", "", False)] == pos.calls
    assert ["bill_requested"] == [s.event.type for s in served]
    assert Bill(bill_id="B-12", total_cents=8450, outstanding_cents=8450) == served[0].answer


async def test_a_bill_error_reaches_the_terminal_as_the_protocols_error(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    async with serving(client, lane, pos):
        stranger = await control.post(SERIAL, "pat/bill", {"table_id": "12", "operator_id": "8"})
        no_table = await control.post(SERIAL, "pat/bill", {"table_id": "99", "operator_id": "7"})
    answers = [
        (_reply(r)["data"]["success"], _reply(r)["data"].get("error_reason"))
        for r in (stranger, no_table)
    ]
    assert [(False, "INVALID_OPERATOR_ID"), (False, "INVALID_TABLE_ID")] == answers


async def test_a_handler_that_raises_is_logged_answered_with_an_error_and_serving_goes_on(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    pos.fail_next = True
    served: list[Served] = []
    with structlog.testing.capture_logs() as logs:
        async with serving(client, lane, pos, served):
            failed = await control.post(SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7"})
            after = await control.post(SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7"})
    assert (False, "INVALID_TABLE_ID") == (
        _reply(failed)["data"]["success"],
        _reply(failed)["data"]["error_reason"],
    )
    assert True is _reply(after)["data"]["success"]
    assert "RuntimeError: the kitchen printer is on fire" == served[0].failure
    assert (BillError.INVALID_TABLE_ID, None) == (served[0].answer, served[1].failure)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [("bill_requested", lane.instance_id)] == [
        (e["event_type"], e["instance_id"]) for e in errors
    ]


async def test_open_tables_are_answered_with_the_handlers_list(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    async with serving(client, lane, pos):
        result = await control.post(SERIAL, "pat/tables", {"operator_id": "7"})
    reply = _reply(result)
    assert "open_tables" == reply["event"]
    assert [
        {"table_id": "12", "label": "Table 12", "bill_outstanding_amount": 8450},
        {"table_id": "14", "label": "Table 14", "bill_outstanding_amount": 7000},
    ] == reply["data"]["tables"]
    assert [("get_open_tables", "7")] == pos.calls


async def test_a_session_books_each_payment_and_ends_with_the_flows_totals(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    served: list[Served] = []
    async with serving(client, lane, pos, served):
        result = await control.post(
            SERIAL,
            "pat/session",
            {
                "table_id": "12",
                "operator_id": "7",
                "payments": [
                    {"payment_type": "card", "amount_cents": 4000},
                    {"payment_type": "cash", "amount_cents": 1000},
                ],
            },
        )
        await poll_until(lambda: pos.ended or None, "on_flow_ended called")
    steps = result["replies"]
    outstanding = [s["reply"]["data"].get("bill_outstanding_amount") for s in steps[:3]]
    assert [8450, 4450, 3450] == outstanding
    assert [("on_payment", "B-12", 4000, False), ("on_payment", "B-12", 1000, False)] == [
        c for c in pos.calls if c[0] == "on_payment"
    ]
    # The lane fills the payment history from the payments it saw.
    history = steps[2]["reply"]["data"]["bill_payment_history"]
    assert ["card", "cash"] == [h["payment_type"] for h in history]
    ended = pos.ended[0]
    assert ("B-12", 1, 4000, 1, 1000) == (
        ended.bill_id,
        ended.card_total_count,
        ended.card_total_cents,
        ended.cash_total_count,
        ended.cash_total_cents,
    )
    assert [
        "bill_requested",
        "bill_payment_reported",
        "bill_payment_reported",
        "bill_flow_ended",
    ] == [s.event.type for s in served]


async def test_a_repeated_payment_is_answered_with_the_current_bill_and_not_booked_again(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = Restaurant()
    async with serving(client, lane, pos):
        paid = await control.post(
            SERIAL,
            "pat/pay",
            {
                "bill_id": "B-14",
                "table_id": "14",
                "operator_id": "7",
                "payment_type": "card",
                "amount_cents": 2000,
            },
        )
        again = await control.post(SERIAL, "pat/pay", {"repeat": True})
    assert [5000, 5000] == [_reply(r)["data"]["bill_outstanding_amount"] for r in (paid, again)]
    assert [("on_payment", "B-14", 2000, False), ("get_bill", "14", "7", "B-14", True)] == [
        c for c in pos.calls if c[0] in ("on_payment", "get_bill")
    ]


async def test_set_table_config_keeps_it_in_the_profile_and_tells_the_terminal(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    accepted = await client.set_table_config(
        lane.instance_id,
        enabled=True,
        tipping_enabled=True,
        operator_ids=["7", "12"],
        pay_button_label="Pay here",
        answer_timeout_ms=5000,
    )
    assert "set_table_config" == accepted.command_type
    pat = (await client.get_lane(lane.instance_id)).pat
    assert pat is not None
    assert (True, True, False, ("7", "12"), "Pay here", 5000) == (
        pat.enabled,
        pat.tipping_enabled,
        pat.split_by_amount_enabled,
        pat.operator_ids,
        pat.pay_button_label,
        pat.answer_timeout_ms,
    )

    async def told() -> dict[str, Any] | None:
        config: dict[str, Any] | None = (await control.get(SERIAL)).get("table_config")
        return config if config and config.get("pay_button_label") == "Pay here" else None

    config = await poll_until(told, "the terminal got the table config")
    assert (True, True, ["7", "12"]) == (
        config["pay_at_table_enabled"],
        config["tipping_enabled"],
        config["operator_id_list"],
    )


async def test_set_table_config_refuses_bad_values_before_sending(
    client: AsyncClient, lane: LaneRig
) -> None:
    reasons = []
    for options in ({}, {"answer_timeout_ms": 500}, {"operator_ids": ["has space ok", ""]}):
        with pytest.raises(ClientError) as caught:
            await client.set_table_config(lane.instance_id, **options)
        reasons.append(caught.value.reason)
    assert ["invalid_value", "invalid_value", "invalid_value"] == reasons


class SlowRestaurant(Restaurant):
    """Answers a bill only once the lane has given up on the request (``expired`` is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.expired = asyncio.Event()

    async def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> BillAnswer:
        await self.expired.wait()
        return await super().get_bill(
            table_id, operator_id, bill_id, payment_flow_started=payment_flow_started
        )


async def test_an_answer_after_answer_by_is_refused_logged_and_serving_goes_on(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    pos = SlowRestaurant()
    await client.set_table_config(lane.instance_id, answer_timeout_ms=1000)

    async def watch() -> None:
        async for _, event in client.events(lane.instance_id):
            if event.type == "bill_request_expired":
                pos.expired.set()

    watcher = asyncio.create_task(watch())
    served: list[Served] = []
    try:
        with structlog.testing.capture_logs() as logs:
            async with serving(client, lane, pos, served):
                late = await control.post(
                    SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7"}
                )

                def refused() -> list[MutableMapping[str, Any]] | None:
                    found = [
                        e for e in logs if e["event"] == "pay at table: answer refused by the lane"
                    ]
                    return found or None

                found = await poll_until(refused, "the late answer's refusal logged")
                # Serving goes on: the next request is answered (pos.expired stays set).
                after = await control.post(
                    SERIAL, "pat/bill", {"table_id": "14", "operator_id": "7"}
                )
    finally:
        watcher.cancel()
    # The lane answered the terminal itself when answer_by passed.
    assert (False, "INVALID_TABLE_ID") == (
        _reply(late)["data"]["success"],
        _reply(late)["data"]["error_reason"],
    )
    assert ("unknown_request", served[0].command_id) == (found[0]["reason"], found[0]["command_id"])
    assert (True, "B-14") == (_reply(after)["data"]["success"], _reply(after)["data"]["bill_id"])
    expired = [s.event for s in served if isinstance(s.event, BillRequestExpired)]
    assert ["get_bill_details"] == [e.request for e in expired]


async def test_serving_rides_out_its_redis_connections_being_cut(
    client: AsyncClient, lane: LaneRig, control: Control, redis: aioredis.Redis
) -> None:
    pos = Restaurant()
    async with serving(client, lane, pos) as task:
        before = await control.post(SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7"})
        # Every other connection goes: the server's XREAD among them (and the lane's).
        await redis.client_kill_filter(_type="normal", skipme=True)
        after = await control.post(SERIAL, "pat/bill", {"table_id": "14", "operator_id": "7"})
        assert not task.done()
    assert ["B-12", "B-14"] == [_reply(r)["data"]["bill_id"] for r in (before, after)]


async def test_serving_an_unknown_lane_is_lane_not_found(client: AsyncClient) -> None:
    with pytest.raises(LaneNotFound):
        await client.serve_pay_at_table("0b0e3a52-3d1c-4c3e-9a53-4f2d0c9b1a11", Restaurant())


class SyncRestaurant:
    """The sync client's handler: plain methods (they run in worker threads)."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def get_bill(
        self, table_id: str, operator_id: str, bill_id: str, *, payment_flow_started: bool
    ) -> BillAnswer:
        self.threads.add(threading.current_thread().name)
        return Bill(bill_id="B-S", total_cents=500, outstanding_cents=500)

    def get_open_tables(self, operator_id: str) -> list[OpenTable]:
        return []


async def test_the_sync_client_serves_until_stop_is_set(
    lane: LaneRig, control: Control, redis_url: str, key_prefix: str
) -> None:
    pos = SyncRestaurant()
    stop = threading.Event()
    served: list[Served] = []
    with Client(redis_url, prefix=key_prefix) as mp:
        # Blocking calls leave the test's loop (the simulator runs on it) in a thread.
        await asyncio.to_thread(mp.set_table_config, lane.instance_id, enabled=True)
        serving_thread = threading.Thread(
            target=mp.serve_pay_at_table,
            args=(lane.instance_id, pos),
            kwargs={
                "stop": stop,
                "on_served": served.append,
                "since": await asyncio.to_thread(mp.last_event_id, lane.instance_id),
            },
        )
        serving_thread.start()
        try:
            result = await control.post(SERIAL, "pat/bill", {"table_id": "3", "operator_id": "7"})
        finally:
            stop.set()
            await asyncio.to_thread(serving_thread.join)
    assert ("B-S", 500) == (
        _reply(result)["data"]["bill_id"],
        _reply(result)["data"]["bill_total_amount"],
    )
    assert 1 == len(served)
    assert "MainThread" not in pos.threads


def test_the_bill_errors_are_the_contracts() -> None:
    assert BILL_ERRORS == tuple(BillError)


class FlakyRestaurant(Restaurant):
    """A POS whose first ``on_payment`` fails before booking anything (its database blinked)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_payment = True

    def on_payment(self, report: BillPaymentReported) -> BillAnswer:
        if self.fail_payment:
            self.fail_payment = False
            self.calls.append(("on_payment failed", report.bill_id, report.duplicate))
            raise RuntimeError("the database is away")
        return super().on_payment(report)


async def test_a_payment_on_payment_failed_to_book_is_booked_when_the_terminal_repeats_it(
    client: AsyncClient, lane: LaneRig, control: Control
) -> None:
    """The terminal was told the payment failed and sends it again; the lane marks the repeat
    ``duplicate`` (it was reported), but nothing booked it: the card money must not go unbooked."""
    pos = FlakyRestaurant()
    async with serving(client, lane, pos):
        failed = await control.post(
            SERIAL,
            "pat/pay",
            {
                "bill_id": "B-14",
                "table_id": "14",
                "operator_id": "7",
                "payment_type": "card",
                "amount_cents": 2000,
            },
        )
        again = await control.post(SERIAL, "pat/pay", {"repeat": True})
        third = await control.post(SERIAL, "pat/pay", {"repeat": True})
    assert [(False, None), (True, 5000), (True, 5000)] == [
        (_reply(r)["data"]["success"], _reply(r)["data"].get("bill_outstanding_amount"))
        for r in (failed, again, third)
    ]
    assert [
        ("on_payment failed", "B-14", False),
        ("on_payment", "B-14", 2000, True),  # booked once, at the first repeat
        ("get_bill", "14", "7", "B-14", True),  # the next repeat: booked already
    ] == [c for c in pos.calls if c[0] != "get_open_tables"]
