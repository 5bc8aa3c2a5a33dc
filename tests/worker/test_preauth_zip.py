"""Preauthorisations, account verify and Zip through a real lane and the simulator (§7.16, §7.17).

Each runs with purchase-like guarantees: answered once, idempotent by
command_id and pos_ref_id, recovered (never re-sent) after a kill or a drop.
The simulator's bank keeps the preauthorisations' balances, so the
``balance_*`` fields of one outcome follow from the ones before it.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest

from tests.simulator.helpers import Control
from tests.worker.helpers import SERIAL, Body, LaneRig

TIMEOUT = 30.0


async def run(rig: LaneRig, command: Body) -> Body:
    """Send ``command``; the event that settles it."""
    return await rig.answer(await rig.send(command), TIMEOUT)


def pick(event: Body, *names: str) -> tuple[Any, ...]:
    return tuple(event.get(name) for name in names)


async def sent(control: Control, pos_ref_id: str) -> int:
    """How many times the terminal received a transaction request with ``pos_ref_id``."""
    counts: dict[str, int] = (await control.get(SERIAL))["transaction_requests"]
    return counts.get(pos_ref_id, 0)


async def open_preauth(rig: LaneRig, pos_ref_id: str, amount: int) -> str:
    opened = await run(
        rig, {"type": "preauth_open", "pos_ref_id": pos_ref_id, "amount_cents": amount}
    )
    assert "success" == opened["result"], opened
    preauth_id: str = opened["preauth_id"]
    return preauth_id


OUTCOME = (
    "type",
    "result",
    "tx_type",
    "transaction_type",
    "amount_cents",
    "balance_before_cents",
    "balance_after_cents",
)


# ---------------------------------------------------------------------------
# Each command end to end


async def test_a_preauth_is_opened_topped_up_partly_cancelled_extended_and_completed(
    lane: LaneRig, control: Control
) -> None:
    opened = await run(lane, {"type": "preauth_open", "pos_ref_id": "pa-1", "amount_cents": 10000})
    ok = ("transaction_completed", "success")
    assert (*ok, "preauth_open", "PRE-AUTH", 10000, 0, 10000) == pick(opened, *OUTCOME)
    preauth_id = opened["preauth_id"]
    assert preauth_id
    assert (False, "000") == (opened["recovered"], opened["host_response_code"])

    steps: list[tuple[Body, tuple[Any, ...]]] = [
        (
            {"type": "preauth_topup", "pos_ref_id": "pa-2", "amount_cents": 2000},
            ("preauth_topup", "TOPUP", 2000, 10000, 12000),
        ),
        (
            {"type": "preauth_partial_cancel", "pos_ref_id": "pa-3", "amount_cents": 500},
            ("preauth_partial_cancel", "CANCEL", 500, 12000, 11500),
        ),
        (
            {"type": "preauth_extend", "pos_ref_id": "pa-4"},
            ("preauth_extend", "PRE-AUTH EXT", 0, 11500, 11500),
        ),
        (
            {
                "type": "preauth_complete",
                "pos_ref_id": "pa-5",
                "amount_cents": 11500,
                "surcharge_cents": 115,
            },
            ("preauth_complete", "PCOMP", 11500, 11500, 0),
        ),
    ]
    for command, expected in steps:
        done = await run(lane, {**command, "preauth_id": preauth_id})
        assert (*ok, *expected) == pick(done, *OUTCOME), command["type"]
        assert preauth_id == done["preauth_id"]
    completed = lane.events.of_type("transaction_completed", pos_ref_id="pa-5")[0]
    assert 115 == completed["surcharge_cents"]
    for ref in ("pa-1", "pa-2", "pa-3", "pa-4", "pa-5"):
        assert 1 == await sent(control, ref)
        assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id=ref))


async def test_completing_a_completed_preauth_fails_with_the_terminals_reason(
    lane: LaneRig,
) -> None:
    preauth_id = await open_preauth(lane, "pd-1", 3000)
    complete = {"type": "preauth_complete", "preauth_id": preauth_id, "amount_cents": 3000}
    assert "success" == (await run(lane, {**complete, "pos_ref_id": "pd-2"}))["result"]

    again = await run(lane, {**complete, "pos_ref_id": "pd-3"})
    assert (
        "transaction_completed",
        "failed",
        "preauth_complete",
        "PRE_AUTH_ID_ALREADY_COMPLETED",
        preauth_id,
        None,
        None,
    ) == pick(
        again,
        "type",
        "result",
        "tx_type",
        "error_reason",
        "preauth_id",
        "balance_before_cents",
        "balance_after_cents",
    )
    assert preauth_id in again["error_detail"]


async def test_a_preauth_is_cancelled_releasing_its_whole_balance(lane: LaneRig) -> None:
    preauth_id = await open_preauth(lane, "pc-1", 5000)
    done = await run(
        lane, {"type": "preauth_cancel", "pos_ref_id": "pc-2", "preauth_id": preauth_id}
    )
    assert (
        "transaction_completed",
        "success",
        "preauth_cancel",
        "PRE-AUTH CANCEL",
        5000,
        5000,
        0,
    ) == pick(done, *OUTCOME)
    assert preauth_id == done["preauth_id"]


async def test_an_account_verify_checks_the_card_and_moves_no_money(lane: LaneRig) -> None:
    done = await run(lane, {"type": "account_verify", "pos_ref_id": "av-1"})
    assert (
        "transaction_completed",
        "success",
        "account_verify",
        "VERIFY",
        0,
        None,
        None,
    ) == pick(done, *OUTCOME)
    assert done["masked_pan"]
    assert (None, None) == (done.get("preauth_id"), done.get("zip_data"))


async def test_a_zip_purchase_and_its_refund_carry_zip_data(lane: LaneRig) -> None:
    bought = await run(
        lane,
        {
            "type": "zip_purchase",
            "pos_ref_id": "zp-1",
            "amount_cents": 4500,
            "store_code": "store-7",
            "description": "2 x coffee",
        },
    )
    assert ("transaction_completed", "success", "zip_purchase", 4500, "TRANS APPROVED") == pick(
        bought, "type", "result", "tx_type", "amount_cents", "host_response_text"
    )
    zip_data = bought["zip_data"]
    receipt = zip_data["receipt_number"]
    assert {"location_id": "1234", "receipt_number": receipt, "store_code": "store-7"} == zip_data
    assert (None, None) == (bought.get("masked_pan"), bought.get("preauth_id"))

    refunded = await run(
        lane,
        {
            "type": "zip_refund",
            "pos_ref_id": "zr-1",
            "amount_cents": 4500,
            "original_receipt_number": receipt,
        },
    )
    assert ("transaction_completed", "success", "zip_refund", 4500) == pick(
        refunded, "type", "result", "tx_type", "amount_cents"
    )
    assert receipt == refunded["zip_data"]["original_receipt_number"]
    assert {"location_id", "receipt_number", "original_receipt_number"} == set(refunded["zip_data"])


# ---------------------------------------------------------------------------
# Idempotency and refusals


async def test_a_repeated_command_id_is_answered_from_the_record(
    lane: LaneRig, control: Control
) -> None:
    preauth_id = await open_preauth(lane, "rp-1", 2000)
    body = {
        "type": "preauth_topup",
        "pos_ref_id": "rp-2",
        "preauth_id": preauth_id,
        "amount_cents": 700,
        "command_id": "cmd-topup",
    }
    await lane.send(dict(body))
    await lane.send(dict(body))
    await lane.wait_acknowledged()
    replay = await lane.events.wait_for(
        lambda b: b["type"] == "transaction_lookup" and b.get("command_id") == "cmd-topup"
    )
    assert ("success", "rp-2", "preauth_topup", preauth_id, 700, 2000, 2700) == pick(
        replay,
        "result",
        "pos_ref_id",
        "tx_type",
        "preauth_id",
        "amount_cents",
        "balance_before_cents",
        "balance_after_cents",
    )
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="rp-2"))
    assert 1 == await sent(control, "rp-2")


async def test_a_repeated_pos_ref_id_never_runs_twice(lane: LaneRig, control: Control) -> None:
    first = await lane.send({"type": "preauth_open", "pos_ref_id": "rr-1", "amount_cents": 1000})
    second = await lane.send({"type": "preauth_open", "pos_ref_id": "rr-1", "amount_cents": 9000})
    assert "success" == (await lane.answer(first, TIMEOUT))["result"]
    rejected = await lane.answer(second, TIMEOUT)
    assert ("command_rejected", "duplicate_pos_ref_id") == (rejected["type"], rejected["reason"])
    assert 1 == await sent(control, "rr-1")


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ({"type": "preauth_topup", "pos_ref_id": "bad-1", "amount_cents": 100}, "missing_field"),
        ({"type": "preauth_complete", "pos_ref_id": "bad-2", "amount_cents": 1}, "missing_field"),
        ({"type": "preauth_open", "pos_ref_id": "bad-3", "amount_cents": 0}, "invalid_value"),
        (
            {"type": "preauth_topup", "pos_ref_id": "bad-4", "preauth_id": "1", "amount_cents": 0},
            "invalid_value",
        ),
        ({"type": "zip_purchase", "pos_ref_id": "bad-5", "amount_cents": 100}, "missing_field"),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else v,
)
async def test_a_command_breaking_the_contract_is_refused_and_not_sent(
    lane: LaneRig, control: Control, command: Body, reason: str
) -> None:
    rejected = await run(lane, dict(command))
    assert ("command_rejected", reason) == (rejected["type"], rejected["reason"])
    assert 0 == await sent(control, command["pos_ref_id"])


# ---------------------------------------------------------------------------
# Recovery: never re-sent, the outcome learned once


ALL_KINDS = (
    "account_verify",
    "preauth_open",
    "preauth_topup",
    "preauth_partial_cancel",
    "preauth_extend",
    "preauth_cancel",
    "preauth_complete",
    "zip_purchase",
    "zip_refund",
)
"""Every command of the family: each is recovered after a crash or a drop, never re-sent."""


def command_of(kind: str, pos_ref_id: str, preauth_id: str) -> tuple[Body, int]:
    """A valid command of ``kind`` on an open preauth of 8000 cents, and its outcome's amount."""
    command: Body = {"type": kind, "pos_ref_id": pos_ref_id}
    amount = 1000
    if kind in ("account_verify", "preauth_extend"):
        amount = 0  # moves no money
    elif kind == "preauth_cancel":
        amount = 8000  # releases the whole preauth
    else:
        command["amount_cents"] = amount
    if kind.startswith("preauth_") and kind != "preauth_open":
        command["preauth_id"] = preauth_id
    if kind == "zip_purchase":
        command["store_code"] = "store-9"
    if kind == "zip_refund":
        command["original_receipt_number"] = "R-77"
    return command, amount


def check_family_fields(kind: str, done: Body, preauth_id: str) -> None:
    """The fields that make the outcome of ``kind`` usable, beyond result and amount."""
    if kind == "preauth_open":
        assert (0, 1000) == pick(done, "balance_before_cents", "balance_after_cents")
        assert done["preauth_id"] not in (None, preauth_id)
    elif kind == "preauth_topup":
        assert (preauth_id, 8000, 9000) == pick(
            done, "preauth_id", "balance_before_cents", "balance_after_cents"
        )
    elif kind.startswith("preauth_"):
        assert preauth_id == done["preauth_id"]
    elif kind.startswith("zip_"):
        assert done["zip_data"]["receipt_number"]
    else:
        assert "VERIFY" == done["transaction_type"]


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_kill_9_after_the_request_was_sent_recovers_the_outcome_once(
    rig: LaneRig, control: Control, kind: str
) -> None:
    await rig.process.start()
    await rig.wait_state(status="paired_connected")
    preauth_id = await open_preauth(rig, "kb-0", 8000)
    await rig.process.stop()

    await rig.process.start(failpoints="lane.after_send")
    command, amount = command_of(kind, "kb-1", preauth_id)
    command_id = await rig.send(command)
    assert -signal.SIGKILL == await rig.process.wait_exit()  # the request went out, then died

    await rig.process.start()  # the supervisor's restart, without the failpoint
    done = await rig.answer(command_id, TIMEOUT)
    assert ("transaction_completed", "success", True, kind, amount) == pick(
        done, "type", "result", "recovered", "tx_type", "amount_cents"
    )
    check_family_fields(kind, done, preauth_id)
    await rig.wait_acknowledged()
    assert 1 == len(rig.events.of_type("transaction_completed", pos_ref_id="kb-1"))
    assert 1 == await sent(control, "kb-1")


@pytest.mark.parametrize("kind", ALL_KINDS)
async def test_a_drop_mid_flow_is_recovered_never_resent(
    lane: LaneRig, control: Control, kind: str
) -> None:
    preauth_id = await open_preauth(lane, "df-0", 8000)
    await control.post(SERIAL, "drop", {"at": "after_request_received"})
    command, amount = command_of(kind, "df-1", preauth_id)
    done = await run(lane, command)
    assert ("success", True, kind, amount) == pick(
        done, "result", "recovered", "tx_type", "amount_cents"
    )
    check_family_fields(kind, done, preauth_id)
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="df-1"))
    assert 1 == await sent(control, "df-1")


@pytest.mark.parametrize("step", ["after_request_received", "after_result_before_send"])
async def test_a_drop_mid_completion_is_recovered_never_resent(
    lane: LaneRig, control: Control, step: str
) -> None:
    preauth_id = await open_preauth(lane, "dc-0", 6000)
    await control.post(SERIAL, "drop", {"at": step})
    done = await run(
        lane,
        {
            "type": "preauth_complete",
            "pos_ref_id": "dc-1",
            "preauth_id": preauth_id,
            "amount_cents": 6000,
        },
    )
    assert ("success", True, "PCOMP", preauth_id, 6000, 6000, 0) == pick(
        done,
        "result",
        "recovered",
        "transaction_type",
        "preauth_id",
        "amount_cents",
        "balance_before_cents",
        "balance_after_cents",
    )
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="dc-1"))
    assert 1 == await sent(control, "dc-1")
    assert 2 <= (await control.get(SERIAL))["counters"]["connections_total"]


async def test_get_transaction_of_a_preauth_reports_its_preauth_fields(lane: LaneRig) -> None:
    """Without a record to name the command, the terminal's transaction_type picks the row."""
    preauth_id = await open_preauth(lane, "gt-1", 2500)
    found = await run(lane, {"type": "get_transaction", "pos_ref_id": "gt-1"})
    assert ("transaction_lookup", True, "success", "PRE-AUTH", preauth_id, 2500, 0, 2500) == pick(
        found,
        "type",
        "found",
        "result",
        "transaction_type",
        "preauth_id",
        "amount_cents",
        "balance_before_cents",
        "balance_after_cents",
    )


async def test_the_terminals_batch_counts_a_preauth_once_completed_and_no_zip(
    lane: LaneRig,
) -> None:
    """What jobs.settlement.our_totals counts from the records is what the terminal counts."""
    preauth_id = await open_preauth(lane, "sb-1", 1000)
    await run(
        lane,
        {
            "type": "preauth_complete",
            "pos_ref_id": "sb-2",
            "preauth_id": preauth_id,
            "amount_cents": 1000,
            "surcharge_cents": 10,
        },
    )
    await run(
        lane, {"type": "zip_purchase", "pos_ref_id": "sb-3", "amount_cents": 500, "store_code": "s"}
    )
    totals = await run(lane, {"type": "settlement_enquiry"})
    assert ("settlement", "success", 1, 1010) == pick(
        totals, "type", "result", "accumulated_total_count", "accumulated_total_value_cents"
    )
