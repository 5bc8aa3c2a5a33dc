"""Pay at table end to end: a real lane, real Redis, the simulator's terminal, a POS through Redis.

The terminal side is driven through the simulator's control API (``/pat/...``);
the POS is :class:`Waiter`, a task that answers the lane's pay-at-table events
from a dict of open bills by sending ``bill_details`` / ``open_tables`` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.embedded import RedisServer
from multipair.redis_conn import as_text
from multipair.simulator import Simulator
from multipair.worker.pat_replies import bill_entry
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control
from tests.worker.helpers import SERIAL, Body, EventReader, LaneRig, make_rig

TIMEOUT_S = 20.0
"""How long the simulated terminal waits for a reply (the control API's ``timeout``)."""


@dataclass
class Bill:
    bill_id: str
    total_cents: int
    outstanding_cents: int


@dataclass
class Waiter:
    """A POS backend: answers ``bill_requested``, ``bill_payment_reported`` and
    ``open_tables_requested`` from ``bills`` (table_id -> Bill), as a real one would."""

    lane: LaneRig
    bills: dict[str, Bill]
    answered: list[str] = field(default_factory=list)
    """The request_ids answered, in order."""
    booked: list[Body] = field(default_factory=list)
    """Payments booked (duplicates are not)."""

    def _bill_answer(self, request_id: str, table_id: str) -> Body:
        bill = self.bills.get(table_id)
        if bill is None:
            return {"type": "bill_details", "request_id": request_id, "error": "INVALID_TABLE_ID"}
        return {
            "type": "bill_details",
            "request_id": request_id,
            "bill_id": bill.bill_id,
            "table_id": table_id,
            "total_cents": bill.total_cents,
            "outstanding_cents": bill.outstanding_cents,
        }

    async def handle(self, event: Body) -> None:
        kind = event["type"]
        if kind == "bill_requested":
            body = self._bill_answer(event["request_id"], event["table_id"])
        elif kind == "bill_payment_reported":
            bill = self.bills.get(event["table_id"])
            if bill is not None and not event["duplicate"]:
                bill.outstanding_cents -= event["amount_cents"]
                self.booked.append(event)
            body = self._bill_answer(event["request_id"], event["table_id"])
        elif kind == "open_tables_requested":
            body = {
                "type": "open_tables",
                "request_id": event["request_id"],
                "tables": [
                    {"table_id": t, "label": f"Table {t}", "outstanding_cents": b.outstanding_cents}
                    for t, b in self.bills.items()
                    if b.outstanding_cents > 0
                ],
            }
        else:
            return
        await self.lane.send(body)
        self.answered.append(event["request_id"])

    async def run(self, stop: asyncio.Event) -> None:
        reader = EventReader(self.lane.redis, self.lane.keys.events(self.lane.instance_id))
        while not stop.is_set():
            for event in await reader.poll(200):
                await self.handle(event)


@contextlib.asynccontextmanager
async def serving(waiter: Waiter) -> AsyncIterator[Waiter]:
    """``waiter`` serving the lane's events in a task; stopped between two reads, not
    cancelled in one (a blocking read cut short can leave its pooled connection behind)."""
    stop = asyncio.Event()
    task = asyncio.create_task(waiter.run(stop))
    try:
        yield waiter
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _set_table_config(lane: LaneRig, **options: Any) -> None:
    command_id = await lane.send({"type": "set_table_config", **options})
    await lane.events.wait_for(
        lambda b: b.get("command_id") == command_id and b["type"] == "command_accepted"
    )


@pytest.fixture
async def pat_lane(lane: LaneRig) -> LaneRig:
    """The lane, with pay at table enabled."""
    await _set_table_config(lane, enabled=True, tipping_enabled=True, operator_ids=["7"])
    return lane


async def _payments_stored(lane: LaneRig) -> dict[str, Body]:
    raw: Any = await lane.redis.hgetall(lane.keys.pat_payments(lane.instance_id))
    return {k.decode(): orjson.loads(v) for k, v in raw.items()}


# ---------------------------------------------------------------------------


async def test_set_table_config_reaches_the_terminal(lane: LaneRig, control: Control) -> None:
    await _set_table_config(
        lane, enabled=True, pay_button_label="Pay here", operator_ids=["7", "12"]
    )

    async def pushed() -> dict[str, Any] | None:
        config: dict[str, Any] | None = (await control.get(SERIAL))["table_config"]
        return config if config and config.get("pay_button_label") == "Pay here" else None

    config = await poll_until(pushed, "the pushed table config")
    profile = await lane.profiles.get(lane.instance_id)
    assert (True, ["7", "12"], "Pay here") == (
        config["pay_at_table_enabled"],
        config["operator_id_list"],
        profile.pat.pay_button_label if profile.pat else None,
    )
    asked = await control.post(SERIAL, "pat/config", {"timeout": TIMEOUT_S})
    assert config == asked["reply"]["data"]  # get_table_config gets the same config


async def test_a_pos_answers_a_whole_visit_from_its_bills_through_redis(
    pat_lane: LaneRig, control: Control
) -> None:
    waiter = Waiter(pat_lane, {"12": Bill("bill-12", 5000, 5000)})
    async with serving(waiter):
        tables = await control.post(
            SERIAL, "pat/tables", {"operator_id": "7", "timeout": TIMEOUT_S}
        )
        visit = await control.post(
            SERIAL,
            "pat/session",
            {
                "table_id": "12",
                "operator_id": "7",
                "payments": [
                    {"payment_type": "card", "amount_cents": 3000, "tip_cents": 200},
                    {"payment_type": "cash", "amount_cents": 2000},
                ],
                "timeout": TIMEOUT_S,
            },
        )
        ended = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_flow_ended")
    assert [{"table_id": "12", "label": "Table 12", "bill_outstanding_amount": 5000}] == tables[
        "reply"
    ]["data"]["tables"]
    bill, card, cash, end = visit["replies"]
    assert (True, "bill-12", 5000, 5000, []) == (
        bill["reply"]["data"]["success"],
        bill["reply"]["data"]["bill_id"],
        bill["reply"]["data"]["bill_total_amount"],
        bill["reply"]["data"]["bill_outstanding_amount"],
        bill["reply"]["data"]["bill_payment_history"],
    )
    after_cash = cash["reply"]["data"]
    assert (0, ["card", "cash"]) == (
        after_cash["bill_outstanding_amount"],
        [p["payment_type"] for p in after_cash["bill_payment_history"]],
    )
    card_summary = after_cash["bill_payment_history"][0]["payment_summary"]
    assert (
        card["payment_details"]["terminal_ref_id"],
        3000,
        200,
    ) == (
        card_summary["terminal_ref_id"],
        card_summary["purchase_amount"],
        card_summary["tip_amount"],
    )
    assert "expiry_date" not in card_summary
    assert "bill_payment_flow_ended_ack" == end["reply"]["event"]
    assert ("bill-12", 5000, 0, 1, 3000, 1, 2000) == (
        ended["bill_id"],
        ended["bill_total_cents"],
        ended["bill_outstanding_cents"],
        ended["card_total_count"],
        ended["card_total_cents"],
        ended["cash_total_count"],
        ended["cash_total_cents"],
    )
    reported = pat_lane.events.of_type("bill_payment_reported")
    assert [(3000, 200, False), (2000, 0, False)] == [
        (e["amount_cents"], e["tip_cents"], e["duplicate"]) for e in reported
    ]
    assert 2 == len(await _payments_stored(pat_lane))
    requested = pat_lane.events.of_type("bill_requested")[0]
    assert (True, "12", "7") == (
        requested["answer_by"] > requested["at"],
        requested["table_id"],
        requested["operator_id"],
    )


async def test_a_repeated_payment_is_reported_once_and_then_as_a_duplicate(
    pat_lane: LaneRig, control: Control
) -> None:
    waiter = Waiter(pat_lane, {"4": Bill("bill-4", 4000, 4000)})
    pay = {"bill_id": "bill-4", "table_id": "4", "operator_id": "7", "timeout": TIMEOUT_S}
    async with serving(waiter):
        first = await control.post(
            SERIAL, "pat/pay", {**pay, "payment_type": "card", "amount_cents": 1500}
        )
        again = await control.post(SERIAL, "pat/pay", {**pay, "repeat": True})
    ref = first["payment_details"]["terminal_ref_id"]
    await pat_lane.events.wait_for(
        lambda b: b["type"] == "bill_payment_reported" and b["duplicate"]
    )
    reported = pat_lane.events.of_type("bill_payment_reported")
    assert [(ref, False), (ref, True)] == [(e["terminal_ref_id"], e["duplicate"]) for e in reported]
    assert (1, 2500, 2500, 1) == (
        len(waiter.booked),
        first["reply"]["data"]["bill_outstanding_amount"],
        again["reply"]["data"]["bill_outstanding_amount"],
        len(again["reply"]["data"]["bill_payment_history"]),
    )
    stored = await _payments_stored(pat_lane)
    assert ([ref], reported[0]["request_id"]) == (list(stored), stored[ref]["request_id"])


async def test_a_late_answer_is_refused_after_the_terminal_was_told_no(
    pat_lane: LaneRig, control: Control
) -> None:
    await _set_table_config(pat_lane, answer_timeout_ms=1000)
    told = await control.post(
        SERIAL, "pat/bill", {"table_id": "9", "operator_id": "7", "timeout": TIMEOUT_S}
    )
    expired = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_request_expired")
    requested = pat_lane.events.of_type("bill_requested")[0]
    assert ({"success": False, "table_id": "9", "error_reason": "INVALID_TABLE_ID"}) == {
        k: told["reply"]["data"].get(k) for k in ("success", "table_id", "error_reason")
    }
    assert (requested["request_id"], "get_bill_details", "INVALID_TABLE_ID") == (
        expired["request_id"],
        expired["request"],
        expired["error_sent"],
    )
    late = await pat_lane.send(
        {
            "type": "bill_details",
            "request_id": requested["request_id"],
            "bill_id": "bill-9",
            "total_cents": 100,
            "outstanding_cents": 100,
        }
    )
    rejected = await pat_lane.answer(late)
    assert ("command_rejected", "unknown_request") == (rejected["type"], rejected["reason"])


async def test_open_tables_unanswered_gets_an_empty_list(
    pat_lane: LaneRig, control: Control
) -> None:
    await _set_table_config(pat_lane, answer_timeout_ms=1000)
    told = await control.post(SERIAL, "pat/tables", {"operator_id": "7", "timeout": TIMEOUT_S})
    expired = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_request_expired")
    assert ([], "get_open_tables", "") == (
        told["reply"]["data"]["tables"],
        expired["request"],
        expired["error_sent"],
    )


async def test_an_unknown_request_id_is_refused(pat_lane: LaneRig) -> None:
    command_id = await pat_lane.send(
        {"type": "open_tables", "request_id": "never-asked", "tables": []}
    )
    rejected = await pat_lane.answer(command_id)
    assert ("command_rejected", "unknown_request") == (rejected["type"], rejected["reason"])


async def test_a_bill_request_while_a_purchase_runs_is_still_answered(
    pat_lane: LaneRig, control: Control
) -> None:
    purchase = await pat_lane.send(
        {"type": "purchase", "pos_ref_id": "sig-1", "amount_cents": 1052}  # waits for a signature
    )
    await pat_lane.events.wait_for(lambda b: b["type"] == "signature_required")
    waiter = Waiter(pat_lane, {"3": Bill("bill-3", 900, 900)})
    async with serving(waiter):
        told = await control.post(
            SERIAL, "pat/bill", {"table_id": "3", "operator_id": "7", "timeout": TIMEOUT_S}
        )
    assert (True, "bill-3", 900) == (
        told["reply"]["data"]["success"],
        told["reply"]["data"]["bill_id"],
        told["reply"]["data"]["bill_outstanding_amount"],
    )
    assert "transaction" == (await pat_lane.state())["flow"]  # the purchase still runs
    await pat_lane.send({"type": "signature_accept", "pos_ref_id": "sig-1"})
    done = await pat_lane.answer(purchase)
    assert "success" == done["result"]


async def test_a_payment_repeated_to_a_restarted_lane_is_still_a_duplicate(
    pat_lane: LaneRig, control: Control
) -> None:
    """The dedupe is Redis's (pat:payments), not the lane process's memory."""
    waiter = Waiter(pat_lane, {"5": Bill("bill-5", 3000, 3000)})
    pay = {"bill_id": "bill-5", "table_id": "5", "operator_id": "7", "timeout": TIMEOUT_S}
    async with serving(waiter):
        await control.post(SERIAL, "pat/pay", {**pay, "payment_type": "cash", "amount_cents": 1000})
        await pat_lane.process.stop()
        await pat_lane.events.poll(0)
        mark = pat_lane.events.mark()
        await pat_lane.process.start()
        await pat_lane.events.wait_for(
            lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected",
            after=mark,
        )
        again = await control.post(SERIAL, "pat/pay", {**pay, "repeat": True})
    duplicate = await pat_lane.events.wait_for(
        lambda b: b["type"] == "bill_payment_reported" and b["duplicate"]
    )
    assert (1, 2000, ["cash"]) == (
        len(waiter.booked),
        again["reply"]["data"]["bill_outstanding_amount"],
        [p["payment_type"] for p in again["reply"]["data"]["bill_payment_history"]],
    )
    assert waiter.booked[0]["terminal_ref_id"] == duplicate["terminal_ref_id"]


async def test_a_payment_during_a_redis_outage_is_reported_once_redis_is_back(
    tmp_path: Path, key_prefix: str, sim: Simulator, control: Control
) -> None:
    """The lane rides the outage out: the payment's event and record wait in the round, the
    terminal's request stays pending, and the POS's answer reaches the terminal afterwards."""
    server = RedisServer(
        data_dir=tmp_path / "redis", appendonly=True, extra_args=("--appendfsync", "always")
    )
    server.start()
    client = aioredis.Redis.from_url(server.url)
    rig = await make_rig(
        client, server.url, key_prefix, tmp_path, address=sim.terminals[0].ws_url, secrets=KEYS
    )
    try:
        await rig.process.start()
        await rig.wait_state(status="paired_connected")
        await _set_table_config(rig, enabled=True)
        await client.aclose()
        server.kill()  # kill -9, while the lane is idle
        pay = asyncio.create_task(
            control.post(
                SERIAL,
                "pat/pay",
                {
                    "bill_id": "bill-8",
                    "table_id": "8",
                    "operator_id": "7",
                    "payment_type": "card",
                    "amount_cents": 800,
                    "timeout": TIMEOUT_S,
                },
            )
        )

        async def sent_while_away() -> bool:
            state = await control.get(SERIAL)
            return bool(state["pat_pending"]) and "Redis away" in rig.process.logs()

        await poll_until(sent_while_away, "the payment sent to the lane while Redis is away")
        server.start()  # back, from its AOF, on the same port
        rig.redis = aioredis.Redis.from_url(server.url)
        rig.events.redis = rig.redis
        waiter = Waiter(rig, {"8": Bill("bill-8", 800, 800)})
        async with serving(waiter):
            paid = await pay
        assert (True, 0) == (
            paid["reply"]["data"]["success"],
            paid["reply"]["data"]["bill_outstanding_amount"],
        )
        reported = await rig.events.wait_for(lambda b: b["type"] == "bill_payment_reported")
        assert [False] == [e["duplicate"] for e in rig.events.of_type("bill_payment_reported")]
        assert "bill-8" == reported["bill_id"]
        assert [paid["payment_details"]["terminal_ref_id"]] == list(await _payments_stored(rig))
        assert rig.process.proc is not None
        assert rig.process.proc.returncode is None  # the outage did not end the lane
        logs = rig.process.logs()
        assert logs.index("Redis back") < logs.index("pay at table: payment reported")
    finally:
        await rig.process.kill()
        await rig.redis.aclose()
        server.stop()


CARD_ON_B9: Final = {
    "bill_id": "b9",
    "table_id": "9",
    "operator_id": "7",
    "payment_type": "card",
    "amount_cents": 2500,
    "timeout": TIMEOUT_S,
}
"""A $25 card payment on bill b9 the lane must refuse (pay at table off)."""


async def test_a_card_payment_while_pay_at_table_is_off_is_refused_and_reported(
    lane: LaneRig, control: Control
) -> None:
    """Money may have moved on the terminal: the POS and the logs must hear of it too."""
    paid = await control.post(SERIAL, "pat/pay", CARD_ON_B9)
    error = await lane.events.wait_for(lambda b: b["type"] == "error")
    terminal_ref_id = paid["payment_details"]["terminal_ref_id"]
    assert (False, "INVALID_TABLE_ID", "bill_payment_refused", "terminal") == (
        paid["reply"]["data"]["success"],
        paid["reply"]["data"]["error_reason"],
        error["reason"],
        error["source"],
    )
    assert f"terminal_ref_id={terminal_ref_id!r}" in error["detail"]
    assert "purchase_amount=2500" in error["detail"]


async def test_an_answer_to_a_request_of_a_dropped_link_never_reaches_the_next_link(
    pat_lane: LaneRig, control: Control
) -> None:
    """The terminal stopped waiting when its link dropped, and its message ids may come back
    on the next link (§2.5): the late answer is refused ``terminal_unavailable`` and nothing
    is sent under the old id, where it could answer a new request about another table."""
    await _set_table_config(pat_lane, answer_timeout_ms=60000)  # no expiry in this test
    asking = asyncio.create_task(
        control.post(
            SERIAL, "pat/bill", {"table_id": "12", "operator_id": "7", "timeout": 20}, status=504
        )
    )
    requested = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_requested")
    mark = pat_lane.events.mark()
    await control.post(SERIAL, "drop", {})
    await pat_lane.events.wait_for(
        lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected", after=mark
    )
    late = await pat_lane.send(
        {
            "type": "bill_details",
            "request_id": requested["request_id"],
            "bill_id": "bill-12",
            "total_cents": 100,
            "outstanding_cents": 100,
        }
    )
    rejected = await pat_lane.answer(late)
    asking.cancel()
    with contextlib.suppress(asyncio.CancelledError, AssertionError):
        await asking
    pending = (await control.get(SERIAL))["pat_pending"]
    assert ("command_rejected", "terminal_unavailable") == (rejected["type"], rejected["reason"])
    assert 1 == len(pending)  # the terminal's request was never answered


async def test_a_refused_bill_payment_is_not_blamed_on_the_purchase_that_runs(
    lane: LaneRig, control: Control
) -> None:
    """The terminal's bill payment has nothing to do with the running purchase: its error
    carries no command_id, so a POS does not take it for news of its purchase."""
    purchase = await lane.send(
        {"type": "purchase", "pos_ref_id": "sig-2", "amount_cents": 1052}  # waits for a signature
    )
    await lane.events.wait_for(lambda b: b["type"] == "signature_required")
    await control.post(SERIAL, "pat/pay", CARD_ON_B9)
    error = await lane.events.wait_for(lambda b: b["type"] == "error")
    await lane.send({"type": "signature_accept", "pos_ref_id": "sig-2"})
    done = await lane.answer(purchase)
    assert ("bill_payment_refused", None, "success") == (
        error["reason"],
        error["command_id"],
        done["result"],
    )


def _bill_requested(table_id: str) -> Callable[[Body], bool]:
    return lambda b: b["type"] == "bill_requested" and b["table_id"] == table_id


async def test_requests_falling_due_while_redis_is_away_are_refused_on_time(
    tmp_path: Path, key_prefix: str, sim: Simulator, control: Control
) -> None:
    """The terminal's "no" needs no Redis: two requests that fall due during an outage are
    both refused at their deadline, and their bill_request_expired follow, in order, once
    Redis is back (the first one's event waiting for Redis must not hold up the second)."""
    server = RedisServer(
        data_dir=tmp_path / "redis", appendonly=True, extra_args=("--appendfsync", "always")
    )
    server.start()
    client = aioredis.Redis.from_url(server.url)
    rig = await make_rig(
        client, server.url, key_prefix, tmp_path, address=sim.terminals[0].ws_url, secrets=KEYS
    )
    asks: list[asyncio.Task[Body]] = []
    try:
        await rig.process.start()
        await rig.wait_state(status="paired_connected")
        await _set_table_config(rig, enabled=True, answer_timeout_ms=5000)
        requested = []
        for table in ("1", "2"):
            asks.append(
                asyncio.create_task(
                    control.post(
                        SERIAL,
                        "pat/bill",
                        {"table_id": table, "operator_id": "7", "timeout": TIMEOUT_S},
                    )
                )
            )
            requested.append(await rig.events.wait_for(_bill_requested(table)))
        await client.aclose()
        server.kill()  # before either falls due (5 s)
        told = [await ask for ask in asks]  # both refused while Redis is still away
        assert [("1", False, "INVALID_TABLE_ID"), ("2", False, "INVALID_TABLE_ID")] == [
            (
                t["reply"]["data"]["table_id"],
                t["reply"]["data"]["success"],
                t["reply"]["data"]["error_reason"],
            )
            for t in told
        ]
        server.start()
        rig.redis = aioredis.Redis.from_url(server.url)
        rig.events.redis = rig.redis
        await rig.events.wait_for(
            lambda b: (
                b["type"] == "bill_request_expired"
                and b["request_id"] == requested[1]["request_id"]
            )
        )
        expired = rig.events.of_type("bill_request_expired")
        assert [(r["request_id"], "INVALID_TABLE_ID") for r in requested] == [
            (e["request_id"], e["error_sent"]) for e in expired
        ]
        assert rig.process.proc is not None
        assert rig.process.proc.returncode is None
    finally:
        for ask in asks:
            ask.cancel()
        await asyncio.gather(*asks, return_exceptions=True)
        await rig.process.kill()
        await rig.redis.aclose()
        server.stop()


async def test_a_request_expiring_with_its_link_dropped_says_nothing_was_sent(
    pat_lane: LaneRig, control: Control
) -> None:
    """The link dropped before the deadline: no reply could go out, and the event says so."""
    await _set_table_config(pat_lane, answer_timeout_ms=5000)
    asking = asyncio.create_task(
        control.post(
            SERIAL, "pat/bill", {"table_id": "6", "operator_id": "7", "timeout": 20}, status=504
        )
    )
    requested = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_requested")
    mark = pat_lane.events.mark()
    await control.post(SERIAL, "drop", {})
    await pat_lane.events.wait_for(
        lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected", after=mark
    )
    expired = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_request_expired")
    asking.cancel()
    with contextlib.suppress(asyncio.CancelledError, AssertionError):
        await asking
    assert (requested["request_id"], "get_bill_details", "") == (
        expired["request_id"],
        expired["request"],
        expired["error_sent"],
    )


async def test_a_bill_history_holds_only_its_bill_and_payments_past_retention_are_pruned(
    redis: aioredis.Redis,
    redis_url: str,
    key_prefix: str,
    tmp_path: Path,
    sim: Simulator,
    control: Control,
) -> None:
    """pat:payments is bounded: each payment stored prunes those stored more than
    MULTIPAIR_PAT_RETENTION_S ago (from all three keys), and a bill's history is read
    through its own entries in pat:bills, never the other bills' payments."""
    rig = await make_rig(
        redis,
        redis_url,
        key_prefix,
        tmp_path,
        address=sim.terminals[0].ws_url,
        secrets=KEYS,
        env={"MULTIPAIR_PAT_RETENTION_S": "60"},
    )
    try:
        await rig.process.start()
        await rig.wait_state(status="paired_connected")
        await _set_table_config(rig, enabled=True)
        iid = rig.instance_id
        keys = (
            rig.keys.pat_payments(iid),
            rig.keys.pat_payment_times(iid),
            rig.keys.pat_bills(iid),
        )
        now_ms = int(time.time() * 1000)
        for ref, age_ms in (("old-ref", 120_000), ("young-ref", 30_000)):  # as stored earlier
            at = dt.datetime.fromtimestamp((now_ms - age_ms) / 1000, dt.UTC)
            seeded = bs.BillPaymentReported(
                instance_id=iid,
                at=at,
                request_id=f"seed-{ref}",
                answer_by=at,
                bill_id="bill-2",
                table_id="2",
                operator_id="7",
                payment_type="card",
                amount_cents=100,
                tip_cents=0,
                surcharge_cents=0,
                terminal_ref_id=ref,
                duplicate=False,
                payment_summary={"terminal_ref_id": ref},
            )
            entry = bill_entry("bill-2", ref)
            await redis.hset(keys[0], ref, bs.event_to_json(seeded))
            await redis.zadd(keys[1], {entry: now_ms - age_ms})
            await redis.zadd(keys[2], {entry: 0})
        waiter = Waiter(rig, {"1": Bill("bill-1", 1000, 1000), "2": Bill("bill-2", 1000, 1000)})
        pay = {"operator_id": "7", "payment_type": "card", "timeout": TIMEOUT_S}
        async with serving(waiter):
            other = await control.post(
                SERIAL,
                "pat/pay",
                {**pay, "bill_id": "bill-1", "table_id": "1", "amount_cents": 300},
            )
            paid = await control.post(
                SERIAL,
                "pat/pay",
                {**pay, "bill_id": "bill-2", "table_id": "2", "amount_cents": 400},
            )
        other_ref = other["payment_details"]["terminal_ref_id"]
        paid_ref = paid["payment_details"]["terminal_ref_id"]
        history = paid["reply"]["data"]["bill_payment_history"]
        assert ["young-ref", paid_ref] == [h["payment_summary"]["terminal_ref_id"] for h in history]
        kept = {"young-ref": "bill-2", other_ref: "bill-1", paid_ref: "bill-2"}
        stored_refs = sorted(as_text(k) for k in await redis.hkeys(keys[0]))
        by_time = sorted(await redis.zrange(keys[1], 0, -1))
        by_bill = sorted(await redis.zrange(keys[2], 0, -1))
        assert (sorted(kept), *[sorted(bill_entry(b, r) for r, b in kept.items())] * 2) == (
            stored_refs,
            by_time,
            by_bill,
        )
        await rig.process.stop()
        assert await rig.profiles.delete(iid)
        assert 0 == await redis.exists(*keys)  # removing the lane removes them all
    finally:
        await rig.process.kill()


async def test_a_lane_killed_while_a_payment_waits_for_the_pos_loses_and_doubles_nothing(
    pat_lane: LaneRig, control: Control
) -> None:
    """kill -9 after the terminal reported a card payment, before the POS answered: the
    payment stays reported and stored once; an answer to the dead process's request is
    refused; the terminal's repeat is a duplicate, the POS books the payment once, and the
    bill the terminal gets back holds it once."""
    pay = {
        "bill_id": "bill-8",
        "table_id": "8",
        "operator_id": "7",
        "payment_type": "card",
        "amount_cents": 1500,
    }
    paying = asyncio.create_task(control.post(SERIAL, "pat/pay", {**pay, "timeout": 3}, 504))
    reported = await pat_lane.events.wait_for(lambda b: b["type"] == "bill_payment_reported")
    await pat_lane.process.kill()
    await paying  # the link went with the lane: the terminal got no answer

    mark = pat_lane.events.mark()
    await pat_lane.process.start()
    await pat_lane.events.wait_for(
        lambda b: b["type"] == "status_changed" and b["status"] == "paired_connected",
        after=mark,
    )
    late = await pat_lane.send(
        {
            "type": "bill_details",
            "request_id": reported["request_id"],
            "bill_id": "bill-8",
            "total_cents": 3000,
            "outstanding_cents": 1500,
        }
    )
    rejected = await pat_lane.answer(late)
    # A POS that catches up from the stream's start: it books the first report
    # (its answer is refused too: that request died with the lane), not the repeat.
    waiter = Waiter(pat_lane, {"8": Bill("bill-8", 3000, 3000)})
    async with serving(waiter):
        again = await control.post(SERIAL, "pat/pay", {**pay, "repeat": True, "timeout": TIMEOUT_S})
    repeat = await pat_lane.events.wait_for(
        lambda b: b["type"] == "bill_payment_reported" and b["duplicate"], after=mark
    )
    data = again["reply"]["data"]
    assert ("command_rejected", "unknown_request") == (rejected["type"], rejected["reason"])
    assert (reported["terminal_ref_id"], [reported["terminal_ref_id"]], True, 1500) == (
        repeat["terminal_ref_id"],
        [b["terminal_ref_id"] for b in waiter.booked],
        data["success"],
        data["bill_outstanding_amount"],
    )
    assert [reported["terminal_ref_id"]] == [
        p["payment_summary"]["terminal_ref_id"] for p in data["bill_payment_history"]
    ]
    assert [reported["terminal_ref_id"]] == list(await _payments_stored(pat_lane))
