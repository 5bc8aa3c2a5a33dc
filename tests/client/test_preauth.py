"""Preauthorisation, account verify and Zip through the client against a lane and the simulator.

The simulated bank keeps the preauthorisations it opened (their balances)
and decides by the cents of the main amount (multipair.simulator.rules):
.51 declined.
"""

from __future__ import annotations

import asyncio

import pytest

from multipair import broker_schema as bs
from multipair.client import AsyncClient, Client, ClientError, Outcome
from tests.worker.helpers import LaneRig


def _preauth(outcome: Outcome) -> tuple[object, ...]:
    """An outcome's result and preauthorisation facts, in the order tests compare them."""
    return (
        outcome.result,
        outcome.event.tx_type,
        outcome.transaction_type,
        outcome.amount_cents,
        outcome.balance_before_cents,
        outcome.balance_after_cents,
    )


async def test_a_preauth_is_opened_changed_and_completed_with_its_balances(
    client: AsyncClient, lane: LaneRig
) -> None:
    iid = lane.instance_id
    progress: list[bs.Event] = []
    opened = await client.preauth_open(iid, 10000, pos_ref_id="room-12", on_event=progress.append)
    pid = opened.preauth_id
    assert pid
    assert ("success", "preauth_open", "PRE-AUTH", 10000, 0, 10000) == _preauth(opened)
    assert ("room-12", True) == (opened.pos_ref_id, opened.approved)
    assert ("command_accepted", opened.command_id) == (progress[0].type, progress[0].command_id)

    topup = await client.preauth_topup(iid, pid, 5000)
    reduced = await client.preauth_partial_cancel(iid, pid, 2000)
    extended = await client.preauth_extend(iid, pid)
    completed = await client.preauth_complete(iid, pid, 12000, surcharge_cents=150)
    assert [
        ("success", "preauth_topup", "TOPUP", 5000, 10000, 15000),
        ("success", "preauth_partial_cancel", "CANCEL", 2000, 15000, 13000),
        ("success", "preauth_extend", "PRE-AUTH EXT", 0, 13000, 13000),
        ("success", "preauth_complete", "PCOMP", 12000, 12000, 0),
    ] == [_preauth(o) for o in (topup, reduced, extended, completed)]
    assert {pid} == {o.preauth_id for o in (topup, reduced, extended, completed)}
    assert 150 == completed.event.surcharge_cents
    # Each step is a transaction of its own: its own fresh pos_ref_id.
    assert 5 == len({o.pos_ref_id for o in (opened, topup, reduced, extended, completed)})

    again = await client.preauth_complete(iid, pid, 100)
    assert ("failed", "PRE_AUTH_ID_ALREADY_COMPLETED", pid) == (
        again.result,
        again.error_reason,
        again.preauth_id,
    )


async def test_a_cancelled_preauth_releases_its_whole_balance(
    client: AsyncClient, lane: LaneRig
) -> None:
    iid = lane.instance_id
    opened = await client.preauth_open(iid, 4000)
    assert opened.preauth_id is not None
    cancelled = await client.preauth_cancel(iid, opened.preauth_id)
    declined = await client.preauth_open(iid, 4051)
    assert ("success", "preauth_cancel", "PRE-AUTH CANCEL", 4000, 0) == (
        cancelled.result,
        cancelled.event.tx_type,
        cancelled.transaction_type,
        cancelled.balance_before_cents,
        cancelled.balance_after_cents,
    )
    assert ("failed", None, "51") == (
        declined.result,
        declined.preauth_id,
        declined.host_response_code,
    )


async def test_an_unknown_preauth_id_is_declined_by_the_terminal(
    client: AsyncClient, lane: LaneRig
) -> None:
    outcome = await client.preauth_topup(lane.instance_id, "99999999", 500)
    assert ("failed", "PRE_AUTH_ID_NOT_FOUND") == (outcome.result, outcome.error_reason)


async def test_account_verify_moves_no_money(client: AsyncClient, lane: LaneRig) -> None:
    outcome = await client.account_verify(lane.instance_id, pos_ref_id="verify-1")
    assert ("success", "account_verify", "VERIFY", "verify-1", 0) == (
        outcome.result,
        outcome.event.tx_type,
        outcome.transaction_type,
        outcome.pos_ref_id,
        outcome.amount_cents,
    )
    assert (None, None, None) == (
        outcome.preauth_id,
        outcome.balance_before_cents,
        outcome.balance_after_cents,
    )


async def test_a_zip_purchase_and_its_refund_carry_zip_data(
    client: AsyncClient, lane: LaneRig
) -> None:
    iid = lane.instance_id
    bought = await client.zip_purchase(iid, 3000, store_code="store-7", description="2 lamps")
    assert ("success", "zip_purchase", 3000) == (
        bought.result,
        bought.event.tx_type,
        bought.amount_cents,
    )
    assert bought.zip_data is not None
    receipt = bought.zip_data["receipt_number"]
    assert ("store-7", True) == (bought.zip_data["store_code"], bool(receipt))
    assert bought.zip_data["location_id"]

    refunded = await client.zip_refund(iid, 1000, original_receipt_number=receipt)
    assert ("success", "zip_refund", 1000) == (
        refunded.result,
        refunded.event.tx_type,
        refunded.amount_cents,
    )
    assert refunded.zip_data is not None
    assert receipt == refunded.zip_data["original_receipt_number"]


async def test_a_repeated_preauth_command_is_answered_from_the_record_with_its_fields(
    client: AsyncClient, lane: LaneRig
) -> None:
    command = bs.PreauthOpen(command_id="cmd-hold", pos_ref_id="hold-1", amount_cents=2500)
    first = await client.send_and_wait(lane.instance_id, command)
    again = await client.send_and_wait(lane.instance_id, command)
    assert ("transaction_completed", "transaction_lookup") == (first.type, again.type)
    assert isinstance(first, bs.TransactionCompleted)
    assert isinstance(again, bs.TransactionLookup)
    outcome = Outcome.from_event(again, command_id="cmd-hold", pos_ref_id="hold-1")
    assert (True, first.preauth_id, "PRE-AUTH", 0, 2500) == (
        outcome.repeated,
        outcome.preauth_id,
        outcome.transaction_type,
        outcome.balance_before_cents,
        outcome.balance_after_cents,
    )


async def test_bad_preauth_and_zip_fields_are_refused_before_anything_is_sent(
    client: AsyncClient, rig: LaneRig
) -> None:
    iid = rig.instance_id
    calls = [
        client.preauth_topup(iid, "", 100),
        client.preauth_cancel(iid, "has space"),
        client.preauth_complete(iid, "1576", 0),
        client.preauth_open(iid, 12.5),  # type: ignore[arg-type]
        client.zip_purchase(iid, 100, store_code=""),
        client.zip_refund(iid, 100, original_receipt_number=""),
    ]
    reasons = []
    for call in calls:
        with pytest.raises(ClientError) as caught:
            await call
        reasons.append(caught.value.reason)
    assert ["invalid_value"] * 3 + ["wrong_type"] + ["invalid_value"] * 2 == reasons
    assert 0 == await rig.redis.xlen(rig.keys.commands(iid))


async def test_the_sync_client_opens_and_completes_a_preauth(
    redis_url: str, key_prefix: str, lane: LaneRig
) -> None:
    # The simulator runs on this test's loop, so the blocking client runs on a thread.
    def hotel_desk() -> list[tuple[object, ...]]:
        with Client(redis_url, prefix=key_prefix) as mp:
            opened = mp.preauth_open(lane.instance_id, 20000)
            assert opened.preauth_id is not None
            topup = mp.preauth_topup(lane.instance_id, opened.preauth_id, 1000)
            done = mp.preauth_complete(lane.instance_id, opened.preauth_id, 18000)
            verify = mp.account_verify(lane.instance_id)
            bought = mp.zip_purchase(lane.instance_id, 500, store_code="s-1")
        return [_preauth(o) for o in (opened, topup, done, verify, bought)]

    assert [
        ("success", "preauth_open", "PRE-AUTH", 20000, 0, 20000),
        ("success", "preauth_topup", "TOPUP", 1000, 20000, 21000),
        ("success", "preauth_complete", "PCOMP", 18000, 18000, 0),
        ("success", "account_verify", "VERIFY", 0, None, None),
        ("success", "zip_purchase", None, 500, None, None),
    ] == await asyncio.to_thread(hotel_desk)
