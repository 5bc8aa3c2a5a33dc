"""Commands through ``AsyncClient`` against a real lane process and the simulator."""

from __future__ import annotations

import asyncio
import re
from contextlib import aclosing
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair import broker_schema as bs
from multipair.client import (
    AsyncClient,
    ClientError,
    CommandRejected,
    Outcome,
    OutcomeTimeout,
)
from multipair.simulator import Simulator
from tests.worker.helpers import LaneRig, make_rig


async def test_purchase_is_approved_with_progress_and_terminal_fields(
    client: AsyncClient, lane: LaneRig
) -> None:
    progress: list[bs.Event] = []
    outcome = await client.purchase(
        lane.instance_id, 1250, pos_ref_id="order-1", on_event=progress.append
    )
    assert ("success", True, "order-1", 1250, False, False) == (
        outcome.result,
        outcome.approved,
        outcome.pos_ref_id,
        outcome.amount_cents,
        outcome.recovered,
        outcome.repeated,
    )
    assert "000" == outcome.host_response_code
    assert outcome.customer_receipt
    assert outcome.command_id == outcome.event.command_id
    # Progress is every earlier event of this command, never the final answer.
    assert "command_accepted" == progress[0].type
    assert {outcome.command_id} == {e.command_id for e in progress}
    assert "transaction_completed" not in {e.type for e in progress}


async def test_declined_purchase_is_a_failed_outcome_not_an_error(
    client: AsyncClient, lane: LaneRig
) -> None:
    progress: list[bs.Event] = []
    outcome = await client.purchase(lane.instance_id, 1051, on_event=progress.append)
    assert ("failed", False, "51") == (
        outcome.result,
        outcome.approved,
        outcome.host_response_code,
    )
    assert outcome.pos_ref_id.startswith("mp-")
    assert 23 == len(outcome.pos_ref_id)
    assert ("command_accepted", outcome.command_id) == (progress[0].type, progress[0].command_id)


async def test_terminal_display_text_reaches_on_event_while_the_card_is_slow(
    client: AsyncClient, lane: LaneRig
) -> None:
    texts: list[str] = []

    def show(event: bs.Event) -> None:
        if isinstance(event, bs.TransactionUpdate) and event.display_text:
            texts.append(event.display_text)

    outcome = await client.purchase(lane.instance_id, 1054, on_event=show)
    assert "success" == outcome.result
    assert texts


async def test_refund_cashout_and_moto_complete(client: AsyncClient, lane: LaneRig) -> None:
    refund = await client.refund(lane.instance_id, 700, pos_ref_id="r-1")
    cashout = await client.cashout(lane.instance_id, 2000)
    moto = await client.moto_purchase(lane.instance_id, 1500, surcharge_cents=25)
    assert [("success", "refund"), ("success", "cashout"), ("success", "moto_purchase")] == [
        (o.result, o.event.tx_type) for o in (refund, cashout, moto)
    ]
    assert ("r-1", 700) == (refund.pos_ref_id, refund.amount_cents)


async def test_cancel_ends_a_purchase_the_customer_never_finishes(
    client: AsyncClient, lane: LaneRig
) -> None:
    purchase = asyncio.create_task(client.purchase(lane.instance_id, 1055, pos_ref_id="x-1"))
    await lane.wait_state(flow="transaction")  # the request went to the terminal
    # A control command answers at once, also during a transaction; its round
    # trip also lets the terminal start the purchase before the cancel comes.
    assert (await client.terminal_status(lane.instance_id)).success
    accepted = await client.cancel(lane.instance_id, pos_ref_id="x-1")
    outcome = await asyncio.wait_for(purchase, 30)
    assert ("command_accepted", "cancel") == (accepted.type, accepted.command_type)
    assert ("failed", "511") == (outcome.result, outcome.host_response_code)


async def test_get_transaction_looks_up_the_terminal(client: AsyncClient, lane: LaneRig) -> None:
    await client.purchase(lane.instance_id, 1234, pos_ref_id="g-1")
    found = await client.get_transaction(lane.instance_id, "g-1")
    missing = await client.get_transaction(lane.instance_id, "g-nope")
    assert ("transaction_lookup", True, "success", 1234) == (
        found.type,
        found.found,
        found.result,
        found.amount_cents,
    )
    assert (False, "POS_REF_ID_NOT_FOUND") == (missing.found, missing.error_reason)


async def test_settle_and_enquiry_return_the_settlement(client: AsyncClient, lane: LaneRig) -> None:
    await client.purchase(lane.instance_id, 1000)
    enquiry = await client.settlement_enquiry(lane.instance_id)
    settle = await client.settle(lane.instance_id)
    assert [(True, "success"), (False, "success")] == [
        (enquiry.enquiry, enquiry.result),
        (settle.enquiry, settle.result),
    ]
    assert settle.schemes


async def test_terminal_status_reports_the_battery(client: AsyncClient, lane: LaneRig) -> None:
    status = await client.terminal_status(lane.instance_id)
    assert (True, True) == (status.success, status.battery_level is not None)


async def test_a_refused_command_raises_command_rejected_with_the_reason(
    client: AsyncClient, lane: LaneRig
) -> None:
    await client.purchase(lane.instance_id, 1000, pos_ref_id="dup-1")
    with pytest.raises(CommandRejected) as caught:
        await client.purchase(lane.instance_id, 999, pos_ref_id="dup-1")
    assert ("duplicate_pos_ref_id", "command_rejected") == (
        caught.value.reason,
        caught.value.event.type,
    )
    assert "dup-1" in caught.value.detail


async def test_a_repeated_command_is_answered_from_the_record_as_an_outcome(
    client: AsyncClient, lane: LaneRig
) -> None:
    command = bs.Purchase(command_id="cmd-twice", pos_ref_id="twice-1", amount_cents=1000)
    first = await client.send_and_wait(lane.instance_id, command)
    again = await client.send_and_wait(lane.instance_id, command)
    assert ("transaction_completed", "transaction_lookup") == (first.type, again.type)
    assert isinstance(again, bs.TransactionLookup)
    outcome = Outcome.from_event(again, command_id="cmd-twice", pos_ref_id="twice-1")
    assert ("success", True, "twice-1", "cmd-twice", 1000) == (
        outcome.result,
        outcome.repeated,
        outcome.pos_ref_id,
        outcome.command_id,
        outcome.amount_cents,
    )


async def test_no_lane_process_means_outcome_timeout_and_the_command_waits(
    client: AsyncClient, rig: LaneRig
) -> None:
    with pytest.raises(OutcomeTimeout) as caught:
        await client.purchase(rig.instance_id, 1000, pos_ref_id="later-1", timeout=0.3)
    assert "timeout" == caught.value.reason
    # The outcome is unknown, not failed: the command waits in the stream and
    # runs once a lane process serves the lane.
    assert 1 == await rig.redis.xlen(rig.keys.commands(rig.instance_id))
    await rig.process.start()
    completed: list[bs.TransactionCompleted] = []
    async with aclosing(client.events(rig.instance_id, since="0")) as follow:
        async for _, event in follow:
            if isinstance(event, bs.TransactionCompleted):
                completed.append(event)
                break
    assert [("later-1", "success")] == [(e.pos_ref_id, e.result) for e in completed]


async def test_money_must_be_integer_cents_and_nothing_is_sent_otherwise(
    client: AsyncClient, rig: LaneRig
) -> None:
    reasons = []
    for amount in (12.5, 1250.0, True, "1250", 0):
        with pytest.raises(ClientError) as caught:
            await client.purchase(rig.instance_id, amount)  # type: ignore[arg-type]
        reasons.append(caught.value.reason)
    assert ["wrong_type"] * 4 + ["invalid_value"] == reasons
    assert 0 == await rig.redis.xlen(rig.keys.commands(rig.instance_id))


async def test_pair_with_confirm_pairs_an_unpaired_terminal(
    client: AsyncClient, redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with Simulator(1, state_dir=tmp_path / "sim") as sim:  # unpaired, terminal says yes
        rig = await make_rig(
            redis, redis_url, key_prefix, tmp_path, address=sim.terminals[0].ws_url
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="unpaired")
            with pytest.raises(CommandRejected) as caught:
                await client.purchase(rig.instance_id, 500)
            assert "not_allowed" == caught.value.reason

            seen: list[bs.Event] = []
            paired = await client.pair(rig.instance_id, confirm=True, on_event=seen.append)
            codes = [e.confirmation_code for e in seen if isinstance(e, bs.Pairing)]
            assert ("pairing", "succeeded") == (paired.type, paired.state)
            assert sim.terminals[0].session.confirmation_code in codes
            await rig.wait_state(status="paired_connected")
            outcome = await client.purchase(rig.instance_id, 500)
            assert "success" == outcome.result
        finally:
            await rig.process.kill()


async def test_pair_refused_by_the_confirm_callback_fails(
    client: AsyncClient, redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    async with Simulator(1, state_dir=tmp_path / "sim") as sim:
        rig = await make_rig(
            redis, redis_url, key_prefix, tmp_path, address=sim.terminals[0].ws_url
        )
        await rig.process.start()
        try:
            await rig.wait_state(status="unpaired")
            shown: list[str] = []

            async def operator_says_no(code: str) -> bool:
                shown.append(code)
                return False

            with pytest.raises(ClientError) as caught:
                await client.pair(rig.instance_id, confirm=operator_says_no)
            assert "pairing_failed" == caught.value.reason
            assert 1 == len(shown)
            assert re.fullmatch("[0-9A-F]{6}", shown[0])
            await rig.wait_state(status="unpaired", flow="idle")
        finally:
            await rig.process.kill()
