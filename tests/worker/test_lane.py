"""One lane end to end: real lane process, real Redis, the simulator as the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from multipair.simulator import Simulator
from tests.poll import poll_until
from tests.simulator.helpers import KEYS, Control
from tests.worker.helpers import SERIAL, LaneRig, make_rig


async def test_purchase_is_approved_and_published_with_the_terminal_fields(lane: LaneRig) -> None:
    command_id = await lane.send(
        {"type": "purchase", "pos_ref_id": "order-1", "amount_cents": 1250}
    )
    done = await lane.answer(command_id)
    assert ("transaction_completed", "success", "order-1", 1250, False) == (
        done["type"],
        done["result"],
        done["pos_ref_id"],
        done["amount_cents"],
        done["recovered"],
    )
    assert "000" == done["host_response_code"]
    assert done["customer_receipt"]
    assert lane.events.of_type("command_accepted", command_id=command_id)
    await lane.wait_acknowledged()  # acknowledged after the outcome was published
    record = await lane.txs.get(lane.instance_id, "order-1")
    assert record is not None
    assert ("completed", "success") == (str(record.state), str(record.result))


# ---------------------------------------------------------------------------
# Every command produces its documented events


async def test_refund_cashout_and_moto_complete(lane: LaneRig) -> None:
    for body, amount_field in (
        ({"type": "refund", "pos_ref_id": "r-1", "amount_cents": 700}, "amount_cents"),
        ({"type": "cashout", "pos_ref_id": "c-1", "amount_cents": 2000}, "cashout_cents"),
        ({"type": "moto_purchase", "pos_ref_id": "m-1", "amount_cents": 1500}, "amount_cents"),
    ):
        command_id = await lane.send(dict(body))
        done = await lane.answer(command_id)
        assert ("transaction_completed", "success", body["amount_cents"]) == (
            done["type"],
            done["result"],
            done[amount_field],
        ), done


async def test_declined_purchase_is_failed_with_the_host_response(lane: LaneRig) -> None:
    done = await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "d-1", "amount_cents": 1051})
    )
    assert ("failed", "51") == (done["result"], done["host_response_code"])


async def test_cancel_stops_a_purchase_the_customer_never_finishes(lane: LaneRig) -> None:
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "x-1", "amount_cents": 1055})
    await lane.events.wait_for(
        lambda b: b["type"] == "command_accepted" and b.get("command_id") == command_id
    )
    await lane.wait_state(flow="transaction")
    cancel_id = await lane.send({"type": "cancel", "pos_ref_id": "x-1"})
    await lane.events.wait_for(
        lambda b: b.get("command_id") == cancel_id and b["type"] == "command_accepted"
    )
    done = await lane.answer(command_id)
    assert ("failed", "511") == (done["result"], done["host_response_code"])


@pytest.mark.parametrize(("accept", "result"), [(True, "success"), (False, "failed")])
async def test_signature_step_through_commands(lane: LaneRig, accept: bool, result: str) -> None:
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "s-1", "amount_cents": 1052})
    required = await lane.events.wait_for(lambda b: b["type"] == "signature_required")
    assert ("s-1", command_id) == (required["pos_ref_id"], required["command_id"])
    assert required["merchant_receipt"]
    await lane.send(
        {"type": "signature_accept" if accept else "signature_decline", "pos_ref_id": "s-1"}
    )
    done = await lane.answer(command_id)
    assert result == done["result"]


async def test_phone_auth_code_through_commands(lane: LaneRig) -> None:
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "a-1", "amount_cents": 1053})
    required = await lane.events.wait_for(lambda b: b["type"] == "auth_code_required")
    assert required["phone_number"]
    await lane.send({"type": "auth_code", "pos_ref_id": "a-1", "auth_code": "AB1234"})
    done = await lane.answer(command_id)
    assert ("success", "AB1234") == (done["result"], done["auth_code"])


async def test_progress_messages_are_published(lane: LaneRig) -> None:
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "p-1", "amount_cents": 1054})
    await lane.answer(command_id)
    texts = [
        b["display_text"] for b in lane.events.of_type("transaction_update", command_id=command_id)
    ]
    assert texts


async def test_settle_and_settlement_enquiry_publish_settlement(lane: LaneRig) -> None:
    await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "st-1", "amount_cents": 1000})
    )
    enquiry = await lane.answer(await lane.send({"type": "settlement_enquiry"}))
    settle = await lane.answer(await lane.send({"type": "settle"}))
    assert ("settlement", True, "success") == (
        enquiry["type"],
        enquiry["enquiry"],
        enquiry["result"],
    )
    assert ("settlement", False, "success") == (settle["type"], settle["enquiry"], settle["result"])
    assert settle["schemes"]


async def test_get_transaction_and_last_transaction_look_up_the_terminal(lane: LaneRig) -> None:
    await lane.answer(
        await lane.send({"type": "purchase", "pos_ref_id": "g-1", "amount_cents": 1234})
    )
    found = await lane.answer(await lane.send({"type": "get_transaction", "pos_ref_id": "g-1"}))
    missing = await lane.answer(
        await lane.send({"type": "get_transaction", "pos_ref_id": "g-nope"})
    )
    last = await lane.answer(await lane.send({"type": "get_last_transaction"}))
    assert ("transaction_lookup", True, "success", 1234) == (
        found["type"],
        found["found"],
        found["result"],
        found["amount_cents"],
    )
    assert (False, "POS_REF_ID_NOT_FOUND") == (missing["found"], missing["error_reason"])
    assert (True, "g-1") == (last["found"], last["pos_ref_id"])
    # A lookup never counts as a second outcome.
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="g-1"))


async def test_terminal_status_and_configuration_answer_at_once(lane: LaneRig) -> None:
    status = await lane.answer(await lane.send({"type": "terminal_status"}))
    config = await lane.answer(await lane.send({"type": "terminal_configuration"}))
    assert ("terminal_status", True) == (status["type"], status["battery_level"] is not None)
    assert (SERIAL, True) == (config["serial_number"], bool(config["terminal_model"]))


async def test_status_request_acts_while_a_transaction_runs(lane: LaneRig) -> None:
    purchase_id = await lane.send({"type": "purchase", "pos_ref_id": "b-1", "amount_cents": 1055})
    await lane.wait_state(flow="transaction")
    status = await lane.answer(await lane.send({"type": "terminal_status"}))
    assert "terminal_status" == status["type"]
    await lane.send({"type": "cancel"})
    assert "failed" == (await lane.answer(purchase_id))["result"]


# ---------------------------------------------------------------------------
# Idempotency


async def test_the_same_command_twice_runs_one_transaction(lane: LaneRig, control: Control) -> None:
    body = {
        "type": "purchase",
        "pos_ref_id": "dup-1",
        "amount_cents": 1000,
        "command_id": "cmd-dup",
    }
    await lane.send(dict(body))
    await lane.send(dict(body))
    await lane.wait_acknowledged()
    replay = await lane.events.wait_for(
        lambda b: b["type"] == "transaction_lookup" and b.get("command_id") == "cmd-dup"
    )
    assert ("success", "dup-1") == (replay["result"], replay["pos_ref_id"])
    assert 1 == len(lane.events.of_type("transaction_completed", pos_ref_id="dup-1"))
    assert 1 == (await control.get(SERIAL))["purchase_requests"]["dup-1"]


async def test_a_second_command_with_the_same_pos_ref_id_is_refused(
    lane: LaneRig, control: Control
) -> None:
    first = await lane.send({"type": "purchase", "pos_ref_id": "dup-2", "amount_cents": 1000})
    second = await lane.send({"type": "purchase", "pos_ref_id": "dup-2", "amount_cents": 9999})
    assert "success" == (await lane.answer(first))["result"]
    rejected = await lane.answer(second)
    assert ("command_rejected", "duplicate_pos_ref_id") == (rejected["type"], rejected["reason"])
    assert 1 == (await control.get(SERIAL))["purchase_requests"]["dup-2"]


async def test_an_expired_command_is_rejected_not_run(lane: LaneRig, control: Control) -> None:
    rejected = await lane.answer(
        await lane.send(
            {
                "type": "purchase",
                "pos_ref_id": "late-1",
                "amount_cents": 100,
                "expires_at": "2020-01-01T00:00:00Z",
            }
        )
    )
    assert ("command_rejected", "expired") == (rejected["type"], rejected["reason"])
    assert "late-1" not in (await control.get(SERIAL))["purchase_requests"]


async def test_state_hash_and_heartbeat_are_kept_current(lane: LaneRig) -> None:
    state = await lane.state()
    assert ("paired_connected", "idle", "test-host") == (
        state["status"],
        state["flow"],
        state["host"],
    )
    assert lane.process.proc is not None
    assert str(lane.process.proc.pid) == state["pid"]
    first = state["heartbeat_at"]

    async def moved() -> bool:
        if (await lane.state())["heartbeat_at"] != first:
            return True
        await lane.events.poll(200)  # the pace: reads the events meanwhile
        return False

    await poll_until(moved, "the heartbeat moved", 10, interval=0)  # written every 2 s
    statuses = [(b["status"], b["flow"]) for b in lane.events.of_type("status_changed")]
    assert ("paired_connected", "idle") in statuses


async def test_a_command_id_reused_for_another_transaction_is_refused(
    lane: LaneRig, control: Control
) -> None:
    first = await lane.send(
        {"type": "purchase", "pos_ref_id": "cid-1", "amount_cents": 100, "command_id": "cid"}
    )
    assert "success" == (await lane.answer(first))["result"]
    await lane.send(
        {"type": "purchase", "pos_ref_id": "cid-2", "amount_cents": 100, "command_id": "cid"}
    )
    rejected = await lane.events.wait_for(
        lambda b: b["type"] == "command_rejected" and b.get("command_id") == "cid"
    )
    assert "duplicate_command_id" == rejected["reason"]
    assert "cid-2" not in (await control.get(SERIAL))["purchase_requests"]


async def test_a_purchase_for_an_unreachable_terminal_is_refused_not_held(
    redis: aioredis.Redis, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    import datetime as dt

    rig = await make_rig(
        redis, redis_url, key_prefix, tmp_path, address="ws://127.0.0.1:9", secrets=KEYS
    )
    await rig.process.start()
    try:
        await rig.wait_state(status="paired_connecting")
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).isoformat()
        command_id = await rig.send(
            {"type": "purchase", "pos_ref_id": "off-1", "amount_cents": 100, "expires_at": expires}
        )
        rejected = await rig.answer(command_id)
        assert ("command_rejected", "terminal_unavailable") == (
            rejected["type"],
            rejected["reason"],
        )
        assert await rig.txs.get(rig.instance_id, "off-1") is None  # no record: free to retry
    finally:
        await rig.process.kill()


async def test_a_reversal_of_a_recorded_purchase_reverses_it_and_leaves_its_record(
    lane: LaneRig, sim: Simulator
) -> None:
    """A reversal names the purchase it reverses (§7.15) and keeps no record of its own."""
    purchase = await lane.send({"type": "purchase", "pos_ref_id": "order-9", "amount_cents": 500})
    assert "success" == (await lane.answer(purchase))["result"]

    reversal = await lane.send({"type": "reversal", "pos_ref_id": "order-9"})
    done = await lane.answer(reversal)

    assert ("transaction_completed", "success", "order-9", "reversal") == (
        done["type"],
        done["result"],
        done["pos_ref_id"],
        done["tx_type"],
    )
    record = await lane.txs.get(lane.instance_id, "order-9")
    assert record is not None
    assert ("purchase", "completed", "success") == (
        record.tx_type,
        str(record.state),
        str(record.result),
    )
    stats = sim.terminals[0].stats  # the purchase and the reversal, each sent once
    assert (2, 1) == (stats.transaction_requests["order-9"], stats.purchase_requests["order-9"])
    await lane.wait_acknowledged()
    assert 0 == await lane.pending()


async def test_a_refused_write_of_the_lane_ends_it_with_the_command_still_pending(
    lane: LaneRig,
) -> None:
    """Never taken for a bad command: the lane stops, its successor recovers the outcome."""
    command_id = await lane.send({"type": "purchase", "pos_ref_id": "s-9", "amount_cents": 1052})
    await lane.events.wait_for(lambda b: b["type"] == "signature_required")
    await lane.redis.delete(lane.keys.tx(lane.instance_id, "s-9"))  # the record is gone
    await lane.send({"type": "signature_accept", "pos_ref_id": "s-9"})

    assert 1 == await lane.process.wait_exit()
    assert "the lane's own write was refused" in lane.process.logs()
    await lane.events.poll(0)
    assert [] == [
        b["type"]
        for b in lane.events.seen
        if b.get("command_id") == command_id
        and b["type"] in ("transaction_completed", "command_rejected")
    ]
    assert 1 == await lane.pending()  # the purchase's entry: not acknowledged
